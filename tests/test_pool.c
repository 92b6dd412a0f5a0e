/*
 * Tests for src/pool.c: the worker pool (gnet's ants). Every task runs exactly once;
 * queue bounds (EBUSY, submit_wait); counters at known points; min_threads, idle expiry,
 * max_threads and tune; release DRAIN / CANCEL / from a worker / after release / with a
 * timeout (the pool then frees itself: LeakSanitizer checks that at exit).
 *
 * Tasks run on pool workers: they record into atomics and TU_CHECK, and the test thread
 * asserts afterwards. Tasks that must stay busy block on a gate the test opens.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/support.h"

#define WAIT_MS (5000 * TU_SLOW) /* bound for "this should happen soon" */

/* ---- gate: tasks block until the test opens it --------------------------------------- */

typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
  atomic_int entered, left;
} gate;

static void gate_init(gate *g) {
  memset(g, 0, sizeof(*g));
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
}

static void gate_destroy(gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

static void gate_open(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Task: wait for the gate (bounded, so a broken test cannot hang a worker forever). */
static void gate_task(void *ud) {
  gate *g = ud;
  atomic_fetch_add(&g->entered, 1);
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += TU_TIMEOUT_MS / 1000;
  pthread_mutex_lock(&g->mu);
  int err = 0;
  while (!g->open && err != ETIMEDOUT)
    err = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
  pthread_mutex_unlock(&g->mu);
  TU_CHECK(g->open || !"gate never opened");
  atomic_fetch_add(&g->left, 1);
}

static void gate_open_fn(void *ud) {
  gate_open(ud);
}

typedef struct delayed_open {
  gate *g;
  unsigned ms;
} delayed_open;

static void *delayed_open_main(void *arg) {
  delayed_open *d = arg;
  tu_sleep_ms(d->ms);
  gate_open(d->g);
  return NULL;
}

/* ---- counting tasks ------------------------------------------------------------------ */

static void count_task(void *ud) {
  atomic_fetch_add((atomic_int *)ud, 1);
}

static void must_not_run(void *ud) {
  (void)ud;
  TU_CHECK(!"a cancelled task's fn ran");
}

/* Concurrency probe: each task tracks how many tasks run at once. */
typedef struct conc {
  atomic_int cur, max_seen, done;
  unsigned sleep_ms;
} conc;

static void conc_task(void *ud) {
  conc *c = ud;
  int now = atomic_fetch_add(&c->cur, 1) + 1;
  int seen = atomic_load(&c->max_seen);
  while (now > seen && !atomic_compare_exchange_weak(&c->max_seen, &seen, now)) {
  }
  tu_sleep_ms(c->sleep_ms);
  atomic_fetch_sub(&c->cur, 1);
  atomic_fetch_add(&c->done, 1);
}

/* ---- wait helpers -------------------------------------------------------------------- */

typedef struct pool_want {
  cgnet_pool *p;
  size_t (*get)(const cgnet_pool *);
  size_t want;
} pool_want;

static int pool_want_pred(void *arg) {
  pool_want *w = arg;
  return w->get(w->p) == w->want;
}

static int wait_pool(cgnet_pool *p, size_t (*get)(const cgnet_pool *), size_t want,
                     int timeout_ms) {
  pool_want w = {p, get, want};
  return tu_wait_until(pool_want_pred, &w, timeout_ms);
}

static int pool_idle_pred(void *arg) {
  cgnet_pool *p = arg;
  return cgnet_pool_running(p) == 0 && cgnet_pool_waiting(p) == 0;
}

static cgnet_pool *new_pool(int min, int max, size_t queue, uint64_t expiry_ms) {
  cgnet_pool_options o = {.min_threads = min,
                          .max_threads = max,
                          .queue_capacity = queue,
                          .idle_expiry_ms = expiry_ms};
  cgnet_pool *p = NULL;
  int rc = cgnet_pool_new(&o, &p);
  assert_rc(rc, 0);
  assert_non_null(p);
  return p;
}

/* ---- every task exactly once --------------------------------------------------------- */

#define NTASKS 10000
#define NSUBMITTERS 8

typedef struct once_ctx {
  cgnet_pool *p;
  atomic_int *hits;
  int first, n;
  atomic_int busy; /* EBUSY seen (retried) */
  atomic_int errors;
} once_ctx;

static void *once_submitter(void *arg) {
  once_ctx *c = arg;
  for (int i = c->first; i < c->first + c->n; i++) {
    int rc;
    /* Alternate the three entry points; retry plain submit on a full queue. */
    if (i % 3 == 0) {
      rc = cgnet_pool_submit_wait(c->p, count_task, &c->hits[i], UINT64_MAX);
    } else {
      while ((rc = i % 3 == 1 ? cgnet_pool_submit(c->p, count_task, &c->hits[i])
                              : cgnet_pool_submit_ex(c->p, count_task, count_task,
                                                     &c->hits[i])) == CGNET_EBUSY) {
        atomic_fetch_add(&c->busy, 1);
        sched_yield();
      }
    }
    if (rc != 0) atomic_fetch_add(&c->errors, 1);
  }
  return NULL;
}

static void test_every_task_once(void **state) {
  (void)state;
  static atomic_int hits[NTASKS];
  for (int i = 0; i < NTASKS; i++)
    atomic_init(&hits[i], 0);
  cgnet_pool *p = new_pool(0, 8, 256, 0);
  once_ctx ctx[NSUBMITTERS];
  pthread_t th[NSUBMITTERS];
  for (int t = 0; t < NSUBMITTERS; t++) {
    ctx[t] = (once_ctx){.p = p,
                        .hits = hits,
                        .first = t * (NTASKS / NSUBMITTERS),
                        .n = NTASKS / NSUBMITTERS};
    assert_int_equal(pthread_create(&th[t], NULL, once_submitter, &ctx[t]), 0);
  }
  for (int t = 0; t < NSUBMITTERS; t++)
    pthread_join(th[t], NULL);
  for (int t = 0; t < NSUBMITTERS; t++)
    assert_int_equal(atomic_load(&ctx[t].errors), 0);
  assert_true(cgnet_pool_threads(p) <= 8);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  for (int i = 0; i < NTASKS; i++) {
    if (atomic_load(&hits[i]) != 1)
      fail_msg("task %d ran %d times", i, atomic_load(&hits[i]));
  }
  assert_no_check_failures();
}

/* ---- queue bounds -------------------------------------------------------------------- */

static void test_queue_full_ebusy(void **state) {
  (void)state;
  gate g;
  gate_init(&g);
  atomic_int ran = 0;
  cgnet_pool *p = new_pool(0, 1, 2, 0);
  assert_rc(cgnet_pool_submit(p, gate_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 1, WAIT_MS));
  assert_rc(cgnet_pool_submit(p, count_task, &ran), 0);
  assert_rc(cgnet_pool_submit_ex(p, count_task, NULL, &ran), 0);
  assert_int_equal(cgnet_pool_waiting(p), 2);
  assert_rc(cgnet_pool_submit(p, count_task, &ran), CGNET_EBUSY);
  assert_rc(cgnet_pool_submit_ex(p, count_task, count_task, &ran), CGNET_EBUSY);
  assert_rc(cgnet_pool_submit(p, NULL, &ran), CGNET_EINVAL);
  assert_int_equal(cgnet_pool_waiting(p), 2);
  gate_open(&g);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  assert_int_equal(atomic_load(&ran), 2);
  assert_int_equal(atomic_load(&g.left), 1);
  gate_destroy(&g);
  assert_no_check_failures();
}

static void test_submit_wait(void **state) {
  (void)state;
  gate g;
  gate_init(&g);
  atomic_int ran = 0;
  cgnet_pool *p = new_pool(0, 1, 1, 0);
  assert_rc(cgnet_pool_submit(p, gate_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 1, WAIT_MS));
  assert_rc(cgnet_pool_submit_wait(p, count_task, &ran, 0), 0); /* room: no wait */
  assert_int_equal(cgnet_pool_waiting(p), 1);

  /* Full: timeout 0 fails at once, a short timeout fails after about that long. */
  uint64_t t0 = tu_now_ms();
  assert_rc(cgnet_pool_submit_wait(p, count_task, &ran, 0), CGNET_ETIMEDOUT);
  assert_true(tu_now_ms() - t0 < 50 * TU_SLOW);
  t0 = tu_now_ms();
  assert_rc(cgnet_pool_submit_wait(p, count_task, &ran, 100), CGNET_ETIMEDOUT);
  uint64_t el = tu_now_ms() - t0;
  assert_true(el >= 95);
  assert_true(el < 100 + 500 * TU_SLOW);

  /* Room comes 100 ms later (the gate opens, the queued task starts): success. */
  delayed_open d = {&g, 100};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, delayed_open_main, &d), 0);
  t0 = tu_now_ms();
  assert_rc(cgnet_pool_submit_wait(p, count_task, &ran, (uint64_t)WAIT_MS), 0);
  el = tu_now_ms() - t0;
  assert_true(el >= 80);
  assert_true(el < (uint64_t)WAIT_MS);
  pthread_join(th, NULL);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  assert_int_equal(atomic_load(&ran), 2);
  gate_destroy(&g);
  assert_no_check_failures();
}

/* ---- counters, min_threads, expiry, max_threads, tune -------------------------------- */

static void test_counters(void **state) {
  (void)state;
  gate g;
  gate_init(&g);
  cgnet_pool *p = new_pool(0, 4, 16, 0);
  assert_int_equal(cgnet_pool_running(p), 0);
  assert_int_equal(cgnet_pool_waiting(p), 0);
  assert_int_equal(cgnet_pool_capacity(p), 4);
  assert_int_equal(cgnet_pool_threads(p), 0); /* lazy: nothing started yet */
  for (int i = 0; i < 6; i++)
    assert_rc(cgnet_pool_submit(p, gate_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 4, WAIT_MS));
  assert_true(tu_wait_atomic_eq(&g.entered, 4, WAIT_MS));
  assert_int_equal(cgnet_pool_waiting(p), 2);
  assert_int_equal(cgnet_pool_threads(p), 4);
  assert_int_equal(cgnet_pool_capacity(p), 4);
  tu_sleep_ms(20); /* nothing else starts while all are busy */
  assert_int_equal(cgnet_pool_running(p), 4);
  assert_int_equal(atomic_load(&g.entered), 4);
  gate_open(&g);
  assert_true(tu_wait_until(pool_idle_pred, p, WAIT_MS));
  assert_true(tu_wait_atomic_eq(&g.left, 6, WAIT_MS));
  assert_int_equal(cgnet_pool_threads(p), 4); /* idle, default expiry 10 s */
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  gate_destroy(&g);
  assert_no_check_failures();
}

static void test_min_threads(void **state) {
  (void)state;
  cgnet_pool *p = new_pool(3, 5, 0, 30);
  assert_int_equal(cgnet_pool_threads(p), 3); /* started by cgnet_pool_new */
  assert_int_equal(cgnet_pool_capacity(p), 5);
  tu_sleep_ms(150); /* five expiry periods: min_threads stay */
  assert_int_equal(cgnet_pool_threads(p), 3);
  atomic_int ran = 0;
  for (int i = 0; i < 3; i++)
    assert_rc(cgnet_pool_submit(p, count_task, &ran), 0);
  assert_true(tu_wait_atomic_eq(&ran, 3, WAIT_MS));
  assert_int_equal(cgnet_pool_threads(p), 3); /* idle workers took them */
  /* timeout 0 with only idle workers: nothing runs, so release succeeds. */
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, 0), 0);
}

static void test_idle_expiry(void **state) {
  (void)state;
  enum { EXPIRY = 100 };
  gate g;
  gate_init(&g);
  cgnet_pool *p = new_pool(1, 6, 0, EXPIRY);
  for (int i = 0; i < 6; i++)
    assert_rc(cgnet_pool_submit(p, gate_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 6, WAIT_MS));
  assert_int_equal(cgnet_pool_threads(p), 6);
  uint64_t t0 = tu_now_ms();
  gate_open(&g); /* the workers turn idle after this */
  assert_true(tu_wait_until(pool_idle_pred, p, WAIT_MS));
  assert_true(wait_pool(p, cgnet_pool_threads, 1, 2 * EXPIRY * TU_SLOW + 200));
  uint64_t el = tu_now_ms() - t0;
  assert_true(el >= EXPIRY - 1); /* they did wait idle_expiry_ms first */
  tu_sleep_ms(2 * EXPIRY);
  assert_int_equal(cgnet_pool_threads(p), 1); /* never below min */
  /* The pool grows again on demand. */
  atomic_int ran = 0;
  for (int i = 0; i < 4; i++)
    assert_rc(cgnet_pool_submit(p, count_task, &ran), 0);
  assert_true(tu_wait_atomic_eq(&ran, 4, WAIT_MS));
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  gate_destroy(&g);
  assert_no_check_failures();
}

typedef struct burst_ctx {
  cgnet_pool *p;
  conc *c;
  int n;
  atomic_int errors;
} burst_ctx;

static void *burst_submitter(void *arg) {
  burst_ctx *b = arg;
  for (int i = 0; i < b->n; i++)
    if (cgnet_pool_submit_wait(b->p, conc_task, b->c, UINT64_MAX) != 0)
      atomic_fetch_add(&b->errors, 1);
  return NULL;
}

static void test_max_threads(void **state) {
  (void)state;
  enum { MAX = 3, PER = 50, NSUB = 4 };
  conc c = {.sleep_ms = 1};
  cgnet_pool *p = new_pool(0, MAX, 8, 0);
  burst_ctx b = {.p = p, .c = &c, .n = PER};
  pthread_t th[NSUB];
  for (int i = 0; i < NSUB; i++)
    assert_int_equal(pthread_create(&th[i], NULL, burst_submitter, &b), 0);
  size_t max_threads_seen = 0;
  while (atomic_load(&c.done) < NSUB * PER) {
    size_t t = cgnet_pool_threads(p);
    if (t > max_threads_seen) max_threads_seen = t;
    tu_sleep_ms(1);
  }
  for (int i = 0; i < NSUB; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&b.errors), 0);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  assert_int_equal(atomic_load(&c.done), NSUB * PER);
  assert_true(atomic_load(&c.max_seen) <= MAX);
  assert_int_equal(atomic_load(&c.max_seen), MAX); /* and the pool did use them all */
  assert_true(max_threads_seen <= MAX);
}

static void test_tune(void **state) {
  (void)state;
  gate g;
  gate_init(&g);
  cgnet_pool *p = new_pool(0, 2, 100, 0);
  assert_rc(cgnet_pool_tune(p, 0), CGNET_EINVAL);
  assert_rc(cgnet_pool_tune(p, -1), CGNET_EINVAL);
  assert_rc(cgnet_pool_tune(p, 4097), CGNET_EINVAL);
  for (int i = 0; i < 6; i++)
    assert_rc(cgnet_pool_submit(p, gate_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 2, WAIT_MS));
  assert_int_equal(cgnet_pool_waiting(p), 4);

  /* Up, with tasks waiting: workers start right away. */
  assert_rc(cgnet_pool_tune(p, 4), 0);
  assert_int_equal(cgnet_pool_capacity(p), 4);
  assert_true(wait_pool(p, cgnet_pool_running, 4, WAIT_MS));
  assert_int_equal(cgnet_pool_threads(p), 4);
  assert_int_equal(cgnet_pool_waiting(p), 2);

  /* Down while all are busy: they finish their task, then the surplus leaves. */
  assert_rc(cgnet_pool_tune(p, 1), 0);
  assert_int_equal(cgnet_pool_capacity(p), 1);
  assert_int_equal(cgnet_pool_threads(p), 4);
  gate_open(&g);
  assert_true(tu_wait_atomic_eq(&g.left, 6, WAIT_MS));
  assert_true(wait_pool(p, cgnet_pool_threads, 1, WAIT_MS));

  /* At 1, tasks run one at a time. */
  conc c1 = {.sleep_ms = 2};
  for (int i = 0; i < 10; i++)
    assert_rc(cgnet_pool_submit(p, conc_task, &c1), 0);
  assert_true(tu_wait_atomic_eq(&c1.done, 10, WAIT_MS));
  assert_int_equal(atomic_load(&c1.max_seen), 1);
  assert_int_equal(cgnet_pool_threads(p), 1);

  /* Up again with an empty queue: workers start on demand. */
  assert_rc(cgnet_pool_tune(p, 3), 0);
  assert_int_equal(cgnet_pool_threads(p), 1);
  conc c3 = {.sleep_ms = 10};
  for (int i = 0; i < 30; i++)
    assert_rc(cgnet_pool_submit(p, conc_task, &c3), 0);
  assert_true(tu_wait_atomic_eq(&c3.done, 30, WAIT_MS));
  assert_int_equal(atomic_load(&c3.max_seen), 3);
  assert_int_equal(cgnet_pool_threads(p), 3);

  /* Down with idle workers: they leave at once, not after idle_expiry_ms (10 s). */
  assert_rc(cgnet_pool_tune(p, 2), 0);
  assert_true(wait_pool(p, cgnet_pool_threads, 2, 1000 * TU_SLOW));
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  gate_destroy(&g);
  assert_no_check_failures();
}

/* ---- release ------------------------------------------------------------------------- */

static void test_release_drain(void **state) {
  (void)state;
  gate g;
  gate_init(&g);
  atomic_int ran = 0, cancelled = 0;
  cgnet_pool *p = new_pool(0, 2, 100, 0);
  for (int i = 0; i < 2; i++)
    assert_rc(cgnet_pool_submit(p, gate_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 2, WAIT_MS));
  for (int i = 0; i < 48; i++)
    assert_rc(cgnet_pool_submit_ex(p, count_task, count_task, i % 2 ? &ran : &cancelled),
              0);
  assert_int_equal(cgnet_pool_waiting(p), 48);
  delayed_open d = {&g, 50};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, delayed_open_main, &d), 0);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, (uint64_t)WAIT_MS), 0);
  /* Every queued task ran its fn (both counters are fn and cancel; no cancel runs). */
  assert_int_equal(atomic_load(&ran) + atomic_load(&cancelled), 48);
  assert_int_equal(atomic_load(&g.left), 2);
  pthread_join(th, NULL);
  gate_destroy(&g);
  assert_no_check_failures();
}

static void test_release_cancel(void **state) {
  (void)state;
  gate g;
  gate_init(&g);
  atomic_int ran = 0, cancelled = 0;
  cgnet_pool *p = new_pool(0, 1, 16, 0);
  assert_rc(cgnet_pool_submit_ex(p, gate_task, count_task, &g), 0);
  assert_true(wait_pool(p, cgnet_pool_running, 1, WAIT_MS));
  /* fn counts `ran` (no cancel), or must not run (cancel counts `cancelled`). */
  for (int i = 0; i < 5; i++) {
    assert_rc(cgnet_pool_submit_ex(p, count_task, NULL, &ran), 0);
    assert_rc(cgnet_pool_submit_ex(p, must_not_run, count_task, &cancelled), 0);
  }
  assert_rc(cgnet_pool_submit(p, must_not_run, NULL), 0); /* no cancel: just dropped */
  /* The last cancel opens the gate, so the running task ends only after the cancels. */
  assert_rc(cgnet_pool_submit_ex(p, must_not_run, gate_open_fn, &g), 0);
  assert_int_equal(cgnet_pool_waiting(p), 12);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_CANCEL, (uint64_t)WAIT_MS), 0);
  assert_int_equal(atomic_load(&ran), 0);       /* no queued fn ran */
  assert_int_equal(atomic_load(&cancelled), 5); /* every cancel did */
  assert_int_equal(atomic_load(&g.left), 1);    /* the running task finished */
  gate_destroy(&g);
  assert_no_check_failures();
}

/* A task that blocks on a gate, then uses its pool after release began. */
typedef struct late_ctx {
  cgnet_pool *p;
  gate g;
  atomic_int rc_release, rc_submit, rc_submit_ex, rc_submit_wait, rc_tune, done;
  atomic_int wait_go, rc_blocked_wait, blocked_done;
} late_ctx;

static void late_task(void *ud) {
  late_ctx *c = ud;
  /* On its own worker, release refuses (it would wait for itself). */
  atomic_store(&c->rc_release, cgnet_pool_release(c->p, CGNET_POOL_DRAIN, UINT64_MAX));
  gate_task(&c->g);
  atomic_store(&c->rc_submit, cgnet_pool_submit(c->p, count_task, &c->done));
  atomic_store(&c->rc_submit_ex, cgnet_pool_submit_ex(c->p, count_task, NULL, &c->done));
  atomic_store(&c->rc_submit_wait,
               cgnet_pool_submit_wait(c->p, count_task, &c->done, UINT64_MAX));
  atomic_store(&c->rc_tune, cgnet_pool_tune(c->p, 8));
}

/* Waits for the test's go, then blocks in submit_wait on a full queue. */
static void blocked_wait_task(void *ud) {
  late_ctx *c = ud;
  tu_wait_atomic_eq(&c->wait_go, 1, TU_TIMEOUT_MS);
  atomic_store(&c->rc_blocked_wait,
               cgnet_pool_submit_wait(c->p, count_task, &c->done, UINT64_MAX));
  atomic_store(&c->blocked_done, 1);
}

static void test_after_release(void **state) {
  (void)state;
  late_ctx c;
  memset(&c, 0, sizeof(c));
  gate_init(&c.g);
  c.p = new_pool(0, 2, 1, 0);
  assert_rc(cgnet_pool_submit(c.p, late_task, &c), 0);
  assert_true(wait_pool(c.p, cgnet_pool_running, 1, WAIT_MS)); /* queue (1) empty again */
  assert_rc(cgnet_pool_submit(c.p, blocked_wait_task, &c), 0);
  assert_true(wait_pool(c.p, cgnet_pool_running, 2, WAIT_MS));
  assert_true(tu_wait_atomic_eq(&c.g.entered, 1, WAIT_MS));
  assert_rc(atomic_load(&c.rc_release), CGNET_EWRONGTHREAD);
  /* Fill the queue; its cancel opens the gate once release has begun. */
  assert_rc(cgnet_pool_submit_ex(c.p, must_not_run, gate_open_fn, &c.g), 0);
  atomic_store(&c.wait_go, 1);
  tu_sleep_ms(30); /* let blocked_wait_task block in submit_wait (not required) */
  assert_int_equal(atomic_load(&c.blocked_done), 0);
  assert_rc(cgnet_pool_release(c.p, CGNET_POOL_CANCEL, (uint64_t)WAIT_MS), 0);
  assert_rc(atomic_load(&c.rc_submit), CGNET_ESHUTDOWN);
  assert_rc(atomic_load(&c.rc_submit_ex), CGNET_ESHUTDOWN);
  assert_rc(atomic_load(&c.rc_submit_wait), CGNET_ESHUTDOWN);
  assert_rc(atomic_load(&c.rc_tune), CGNET_ESHUTDOWN);
  assert_rc(atomic_load(&c.rc_blocked_wait), CGNET_ESHUTDOWN); /* woken by release */
  assert_int_equal(atomic_load(&c.done), 0);
  gate_destroy(&c.g);
  assert_no_check_failures();
}

typedef struct slow_ctx {
  atomic_int started, finished;
} slow_ctx;

static void slow_task(void *ud) {
  slow_ctx *s = ud;
  atomic_fetch_add(&s->started, 1);
  tu_sleep_ms(300);
  atomic_fetch_add(&s->finished, 1);
}

static void test_release_timeout(void **state) {
  (void)state;
  static slow_ctx s; /* outlives the test's frame: the pool finishes in the background */
  static atomic_int ran;
  atomic_store(&s.started, 0);
  atomic_store(&s.finished, 0);
  atomic_store(&ran, 0);
  cgnet_pool *p = new_pool(1, 1, 4, 0);
  assert_rc(cgnet_pool_submit(p, slow_task, &s), 0);
  assert_rc(cgnet_pool_submit(p, count_task, &ran), 0); /* queued behind it */
  assert_true(tu_wait_atomic_eq(&s.started, 1, WAIT_MS));
  uint64_t t0 = tu_now_ms();
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, 50), CGNET_ETIMEDOUT);
  uint64_t el = tu_now_ms() - t0;
  assert_true(el >= 49);
  assert_true(el < 50 + 150 * TU_SLOW); /* long before the task ends (300 ms) */
  p = NULL;                             /* must not be used any more */
  /* DRAIN goes on in the background; the last worker frees the pool. */
  assert_true(tu_wait_atomic_eq(&ran, 1, WAIT_MS));
  assert_int_equal(atomic_load(&s.finished), 1);
  tu_sleep_ms(600); /* let the worker free the pool and exit before LSan looks */
}

/* ---- options ------------------------------------------------------------------------- */

static void test_invalid_options(void **state) {
  (void)state;
  static const cgnet_pool_options bad[] = {
      {.min_threads = -1},   {.max_threads = -1},
      {.max_threads = 4097}, {.min_threads = 5, .max_threads = 3},
      {.min_threads = 4097},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    cgnet_pool *p = (cgnet_pool *)&p; /* must be reset to NULL */
    assert_rc(cgnet_pool_new(&bad[i], &p), CGNET_EINVAL);
    assert_null(p);
  }
  assert_rc(cgnet_pool_new(NULL, NULL), CGNET_EINVAL);

  /* NULL and all-zero options mean the defaults: 4 x CPUs, nothing started. */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  cgnet_pool *p = NULL;
  assert_rc(cgnet_pool_new(NULL, &p), 0);
  assert_int_equal(cgnet_pool_capacity(p), (size_t)(4 * cpus));
  assert_int_equal(cgnet_pool_threads(p), 0);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, 0), 0);
  cgnet_pool_options zero = {0};
  assert_rc(cgnet_pool_new(&zero, &p), 0);
  assert_int_equal(cgnet_pool_capacity(p), (size_t)(4 * cpus));
  assert_rc(cgnet_pool_release(p, CGNET_POOL_CANCEL, UINT64_MAX), 0);
  /* Boundaries that are valid. */
  cgnet_pool_options edge = {.min_threads = 1, .max_threads = 1, .queue_capacity = 1};
  assert_rc(cgnet_pool_new(&edge, &p), 0);
  assert_int_equal(cgnet_pool_threads(p), 1);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  edge = (cgnet_pool_options){.max_threads = 4096};
  assert_rc(cgnet_pool_new(&edge, &p), 0);
  assert_int_equal(cgnet_pool_capacity(p), 4096);
  assert_rc(cgnet_pool_release(p, CGNET_POOL_DRAIN, UINT64_MAX), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_every_task_once), T(test_queue_full_ebusy),
      T(test_submit_wait),     T(test_counters),
      T(test_min_threads),     T(test_idle_expiry),
      T(test_max_threads),     T(test_tune),
      T(test_release_drain),   T(test_release_cancel),
      T(test_after_release),   T(test_release_timeout),
      T(test_invalid_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
