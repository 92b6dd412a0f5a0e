/*
 * Worker pool: threads that run blocking tasks off the event loops (gnet's ants).
 *
 * One mutex guards everything; tasks are coarse (they block on disk, a database, a
 * sleep), so a lock per submit costs nothing next to the task. The queue is a ring
 * buffer of {fn, cancel, ud} allocated once at queue_capacity: submit never allocates.
 *
 * Workers are detached threads. They start lazily: a submit starts one when the queued
 * tasks outnumber the workers that will pick them up (idle ones plus ones just started)
 * and threads < max. An idle worker waits on work_cv with a CLOCK_MONOTONIC deadline and
 * exits after idle_expiry_ms if threads > min_threads. A worker also exits when threads
 * > max_threads (after tune lowered it), so the pool shrinks one finished task at a time.
 *
 * Invariant (under mu): waiting > 0 implies threads > 0. A queued task always has a
 * worker that will run it: an idle worker only expires with an empty queue, a surplus
 * worker only exits while threads > max >= 1, and a submit that cannot start the first
 * worker takes its task back out.
 *
 * Release sets `shutdown`, wakes everyone, cancels the queue (CANCEL) or lets the workers
 * drain it (DRAIN), and waits on done_cv for threads == 0. If the deadline passes with a
 * task still running it sets `orphaned` and returns; the last worker to exit frees the
 * pool. Because the workers are detached, nothing is left to join.
 *
 * The counters read by the const getters are atomics, written only under mu, so a
 * getter sees a value that was exact at some instant.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cgnet.h"

#define POOL_MAX_THREADS 4096
#define POOL_DEFAULT_QUEUE 4096
#define POOL_DEFAULT_EXPIRY_MS 10000

typedef struct pool_task {
  cgnet_pool_fn fn;
  cgnet_pool_fn cancel;
  void *ud;
} pool_task;

struct cgnet_pool {
  pthread_mutex_t mu;
  pthread_cond_t work_cv; /* workers: a task, shutdown, or a lower max */
  pthread_cond_t room_cv; /* submit_wait: a slot freed, or shutdown */
  pthread_cond_t done_cv; /* release: the last worker exited */

  pool_task *q; /* ring of qcap slots; `waiting` of them from qhead */
  size_t qcap, qhead;

  int min_threads;
  uint64_t expiry_ms;

  /* Under mu only. */
  size_t idle;         /* workers waiting on work_cv */
  size_t starting;     /* created, not yet in their loop: each will take a task */
  size_t room_waiters; /* submit_wait callers blocked on room_cv */
  int shutdown;        /* release began: submits fail with CGNET_ESHUTDOWN */
  int cancel_mode;     /* release mode was CGNET_POOL_CANCEL */
  int orphaned;        /* release timed out: the last worker frees the pool */

  /* Written under mu, read lock-free by the getters. */
  atomic_size_t running, waiting, threads, max_threads;
};

/* The pool whose worker this thread is (NULL on other threads): release refuses to run
 * on its own worker, which would wait for itself. */
static _Thread_local cgnet_pool *tls_pool;

/* ---- small helpers ------------------------------------------------------------------- */

static size_t ld(const atomic_size_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}
static void st(atomic_size_t *a, size_t v) {
  atomic_store_explicit(a, v, memory_order_relaxed);
}

/* Absolute CLOCK_MONOTONIC deadline `ms` from now. 0 if it does not fit (treat as
 * "forever"). */
static int deadline_in(uint64_t ms, struct timespec *ts) {
  if (ms > (uint64_t)INT32_MAX * 1000u) return 0; /* ~68 years: forever */
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(ms / 1000u);
  ts->tv_nsec += (long)(ms % 1000u) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
  return 1;
}

static int init_cond_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t a;
  if (pthread_condattr_init(&a) != 0) return -1;
  int err = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  if (err == 0) err = pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
  return err == 0 ? 0 : -1;
}

static void pool_free(cgnet_pool *p) {
  pthread_cond_destroy(&p->done_cv);
  pthread_cond_destroy(&p->room_cv);
  pthread_cond_destroy(&p->work_cv);
  pthread_mutex_destroy(&p->mu);
  free(p->q);
  free(p);
}

/* ---- queue (under mu) ---------------------------------------------------------------- */

static void q_push(cgnet_pool *p, pool_task t) {
  size_t n = ld(&p->waiting);
  p->q[(p->qhead + n) % p->qcap] = t;
  st(&p->waiting, n + 1);
}

static pool_task q_pop(cgnet_pool *p) {
  pool_task t = p->q[p->qhead];
  p->qhead = (p->qhead + 1) % p->qcap;
  st(&p->waiting, ld(&p->waiting) - 1);
  if (p->room_waiters) pthread_cond_signal(&p->room_cv);
  return t;
}

/* Take back the task just pushed (the newest). */
static void q_unpush(cgnet_pool *p) {
  st(&p->waiting, ld(&p->waiting) - 1);
}

/* ---- workers ------------------------------------------------------------------------- */

/* Called with mu held by a worker that is leaving. Returns 1 if the caller must free the
 * pool (after unlocking): release timed out earlier and this was the last worker. */
static int worker_leave(cgnet_pool *p) {
  size_t n = ld(&p->threads) - 1;
  st(&p->threads, n);
  if (n > 0 || !p->shutdown) return 0;
  if (p->orphaned) return 1;
  pthread_cond_signal(&p->done_cv);
  return 0;
}

/* Wait (mu held) until there is work, a reason to leave, or the idle deadline. Returns 1
 * if the worker should expire. */
static int worker_idle(cgnet_pool *p) {
  struct timespec dl;
  int timed = deadline_in(p->expiry_ms, &dl);
  int expired = 0;
  p->idle++;
  while (ld(&p->waiting) == 0 && !p->shutdown && ld(&p->threads) <= ld(&p->max_threads)) {
    int err = timed ? pthread_cond_timedwait(&p->work_cv, &p->mu, &dl)
                    : pthread_cond_wait(&p->work_cv, &p->mu);
    if (err == ETIMEDOUT) {
      expired = 1;
      break;
    }
  }
  p->idle--;
  return expired && ld(&p->waiting) == 0 && ld(&p->threads) > (size_t)p->min_threads;
}

static void *worker_main(void *arg) {
  cgnet_pool *p = arg;
  tls_pool = p;
  pthread_mutex_lock(&p->mu);
  p->starting--;
  for (;;) {
    if (p->shutdown && p->cancel_mode) break;         /* release cancels the queue itself */
    if (ld(&p->threads) > ld(&p->max_threads)) break; /* tune lowered max: surplus */
    if (ld(&p->waiting) > 0) {
      pool_task t = q_pop(p);
      st(&p->running, ld(&p->running) + 1);
      pthread_mutex_unlock(&p->mu);
      t.fn(t.ud);
      pthread_mutex_lock(&p->mu);
      st(&p->running, ld(&p->running) - 1);
      continue;
    }
    if (p->shutdown) break; /* drained */
    if (worker_idle(p)) break;
  }
  int free_it = worker_leave(p);
  pthread_mutex_unlock(&p->mu);
  tls_pool = NULL;
  if (free_it) pool_free(p);
  return NULL;
}

/* Start one worker (mu held, threads < max). 0 or a negative CGNET_E* code. */
static int spawn_worker(cgnet_pool *p) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return CGNET_ENOMEM;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t tid;
  int err = pthread_create(&tid, &attr, worker_main, p);
  pthread_attr_destroy(&attr);
  if (err != 0) return err == EAGAIN ? CGNET_EAGAIN : CGNET_ENOMEM;
  st(&p->threads, ld(&p->threads) + 1);
  p->starting++;
  return 0;
}

/* Start workers (mu held) while queued tasks outnumber the workers about to take them
 * and the pool is below max. */
static int spawn_for_queue(cgnet_pool *p) {
  int err = 0;
  while (ld(&p->waiting) > p->idle + p->starting && ld(&p->threads) < ld(&p->max_threads)) {
    err = spawn_worker(p);
    if (err) break;
  }
  return err;
}

/* ---- public API ---------------------------------------------------------------------- */

static int default_max_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  if (n > POOL_MAX_THREADS / 4) n = POOL_MAX_THREADS / 4;
  return (int)n * 4;
}

int cgnet_pool_new(const cgnet_pool_options *opts, cgnet_pool **out) {
  if (!out) return CGNET_EINVAL;
  *out = NULL;
  cgnet_pool_options o = {0};
  if (opts) o = *opts;
  if (o.min_threads < 0 || o.max_threads < 0 || o.max_threads > POOL_MAX_THREADS ||
      o.min_threads > POOL_MAX_THREADS)
    return CGNET_EINVAL;
  if (o.max_threads == 0) {
    o.max_threads = default_max_threads();
    if (o.max_threads < o.min_threads) o.max_threads = o.min_threads;
  }
  if (o.min_threads > o.max_threads) return CGNET_EINVAL;
  if (o.queue_capacity == 0) o.queue_capacity = POOL_DEFAULT_QUEUE;
  if (o.idle_expiry_ms == 0) o.idle_expiry_ms = POOL_DEFAULT_EXPIRY_MS;

  cgnet_pool *p = calloc(1, sizeof(*p));
  if (!p) return CGNET_ENOMEM;
  p->q = calloc(o.queue_capacity, sizeof(pool_task));
  if (!p->q) {
    free(p);
    return CGNET_ENOMEM;
  }
  if (pthread_mutex_init(&p->mu, NULL) != 0) goto fail_mu;
  if (init_cond_monotonic(&p->work_cv) != 0) goto fail_work;
  if (init_cond_monotonic(&p->room_cv) != 0) goto fail_room;
  if (init_cond_monotonic(&p->done_cv) != 0) goto fail_done;
  p->qcap = o.queue_capacity;
  p->min_threads = o.min_threads;
  p->expiry_ms = o.idle_expiry_ms;
  st(&p->max_threads, (size_t)o.max_threads);

  pthread_mutex_lock(&p->mu);
  int err = 0;
  for (int i = 0; i < o.min_threads && !err; i++)
    err = spawn_worker(p);
  pthread_mutex_unlock(&p->mu);
  if (err) {
    cgnet_pool_release(p, CGNET_POOL_CANCEL, UINT64_MAX);
    return CGNET_ENOMEM;
  }
  *out = p;
  return 0;

fail_done:
  pthread_cond_destroy(&p->room_cv);
fail_room:
  pthread_cond_destroy(&p->work_cv);
fail_work:
  pthread_mutex_destroy(&p->mu);
fail_mu:
  free(p->q);
  free(p);
  return CGNET_ENOMEM;
}

/* Queue a task (mu held, room available) and make sure a worker will take it. */
static int enqueue(cgnet_pool *p, pool_task t) {
  q_push(p, t);
  if (p->idle > 0 && ld(&p->waiting) <= p->idle + p->starting) {
    pthread_cond_signal(&p->work_cv);
    return 0;
  }
  int err = spawn_for_queue(p);
  if (err && ld(&p->threads) == 0) {
    q_unpush(p); /* nobody would ever run it */
    return err;
  }
  /* Could not start another worker (at max, or thread creation failed): a busy or
   * idle worker takes the task later. */
  if (p->idle > 0) pthread_cond_signal(&p->work_cv);
  return 0;
}

/* Submit with an optional wait for room. `forever` ignores dl. */
static int submit(cgnet_pool *p, pool_task t, int wait, int forever,
                  const struct timespec *dl) {
  if (!p || !t.fn) return CGNET_EINVAL;
  pthread_mutex_lock(&p->mu);
  int err = 0;
  while (!p->shutdown && ld(&p->waiting) == p->qcap) {
    if (!wait) {
      err = CGNET_EBUSY;
      break;
    }
    p->room_waiters++;
    int rc = forever ? pthread_cond_wait(&p->room_cv, &p->mu)
                     : pthread_cond_timedwait(&p->room_cv, &p->mu, dl);
    p->room_waiters--;
    if (rc == ETIMEDOUT && !p->shutdown && ld(&p->waiting) == p->qcap) {
      err = CGNET_ETIMEDOUT;
      break;
    }
  }
  if (p->shutdown)
    err = CGNET_ESHUTDOWN;
  else if (!err)
    err = enqueue(p, t);
  pthread_mutex_unlock(&p->mu);
  return err;
}

int cgnet_pool_submit(cgnet_pool *p, cgnet_pool_fn fn, void *ud) {
  return submit(p, (pool_task){fn, NULL, ud}, 0, 0, NULL);
}

int cgnet_pool_submit_ex(cgnet_pool *p, cgnet_pool_fn fn, cgnet_pool_fn cancel, void *ud) {
  return submit(p, (pool_task){fn, cancel, ud}, 0, 0, NULL);
}

int cgnet_pool_submit_wait(cgnet_pool *p, cgnet_pool_fn fn, void *ud, uint64_t timeout_ms) {
  struct timespec dl = {0};
  int forever = timeout_ms == UINT64_MAX || !deadline_in(timeout_ms, &dl);
  int err = submit(p, (pool_task){fn, NULL, ud}, timeout_ms != 0, forever, &dl);
  return err == CGNET_EBUSY ? CGNET_ETIMEDOUT : err; /* timeout 0: no room "in time" */
}

size_t cgnet_pool_running(const cgnet_pool *p) {
  return p ? ld(&p->running) : 0;
}
size_t cgnet_pool_waiting(const cgnet_pool *p) {
  return p ? ld(&p->waiting) : 0;
}
size_t cgnet_pool_capacity(const cgnet_pool *p) {
  return p ? ld(&p->max_threads) : 0;
}
size_t cgnet_pool_threads(const cgnet_pool *p) {
  return p ? ld(&p->threads) : 0;
}

int cgnet_pool_tune(cgnet_pool *p, int max_threads) {
  if (!p || max_threads < 1 || max_threads > POOL_MAX_THREADS) return CGNET_EINVAL;
  pthread_mutex_lock(&p->mu);
  int err = 0;
  if (p->shutdown) {
    err = CGNET_ESHUTDOWN;
  } else {
    size_t old = ld(&p->max_threads);
    st(&p->max_threads, (size_t)max_threads);
    if ((size_t)max_threads < old && ld(&p->threads) > (size_t)max_threads)
      pthread_cond_broadcast(&p->work_cv); /* idle surplus workers leave now */
    else if ((size_t)max_threads > old)
      spawn_for_queue(p); /* best effort: busy workers still drain the queue */
  }
  pthread_mutex_unlock(&p->mu);
  return err;
}

/* Run the cancel function of every queued task (mu held on entry and exit; dropped
 * around each call). Workers do not touch the queue once cancel_mode is set. */
static void cancel_queued(cgnet_pool *p) {
  while (ld(&p->waiting) > 0) {
    pool_task t = q_pop(p);
    if (!t.cancel) continue;
    pthread_mutex_unlock(&p->mu);
    t.cancel(t.ud);
    pthread_mutex_lock(&p->mu);
  }
}

int cgnet_pool_release(cgnet_pool *p, cgnet_pool_release_mode mode, uint64_t timeout_ms) {
  if (!p || (mode != CGNET_POOL_DRAIN && mode != CGNET_POOL_CANCEL)) return CGNET_EINVAL;
  if (tls_pool == p) return CGNET_EWRONGTHREAD;
  struct timespec dl;
  int forever = timeout_ms == UINT64_MAX || !deadline_in(timeout_ms, &dl);

  pthread_mutex_lock(&p->mu);
  p->shutdown = 1;
  p->cancel_mode = mode == CGNET_POOL_CANCEL;
  pthread_cond_broadcast(&p->work_cv);
  pthread_cond_broadcast(&p->room_cv);
  if (p->cancel_mode) cancel_queued(p);

  /* Time out only while user work is pending; idle workers are merely on their way out
   * (no user code left to run) and are always waited for. */
  while (ld(&p->threads) > 0) {
    int busy = ld(&p->running) > 0 || ld(&p->waiting) > 0;
    if (forever || !busy) {
      pthread_cond_wait(&p->done_cv, &p->mu);
    } else if (pthread_cond_timedwait(&p->done_cv, &p->mu, &dl) == ETIMEDOUT &&
               ld(&p->threads) > 0 && (ld(&p->running) > 0 || ld(&p->waiting) > 0)) {
      p->orphaned = 1; /* the last worker frees the pool */
      pthread_mutex_unlock(&p->mu);
      return CGNET_ETIMEDOUT;
    }
  }
  pthread_mutex_unlock(&p->mu);
  pool_free(p);
  return 0;
}
