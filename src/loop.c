/*
 * Event loops: one thread each, with its own backend, read buffer, buffer pool, task
 * queue and wake-up. A loop accepts on the listeners it owns (loop 0, or every loop with
 * reuse_port), runs its conns' callbacks, and flushes their output before it sleeps.
 *
 * One turn of a loop:
 *   wait for readiness -> dispatch every result (accept, read, write, tasks)
 *   -> edge-mode reads that ran out of budget -> ticker -> stop deadline
 *   -> flush every conn with pending output -> free conns closed during the turn.
 */
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

#define READY_BATCH 256
/* Connections accepted per listener wake-up before other work gets a turn. */
#define ACCEPT_BATCH 64
/* At most one EMFILE/ENFILE or max_connections log line per this many ms per loop. */
#define LIMIT_LOG_INTERVAL_MS 1000
/* Out of descriptors with no spare to shed with: listen again after this long. */
#define ACCEPT_RETRY_MS 100

_Thread_local cgnet_loop *cgnet__tls_loop __attribute__((tls_model("initial-exec")));

/* ---- cross-thread tasks ------------------------------------------------------------- */

/*
 * Producers push, then signal the wake-up only if none is already pending, so a burst
 * of submissions costs one signal (one eventfd write with epoll) and one loop wake-up.
 * The loop clears wake_pending after draining the wake-up and before draining the
 * queue, so a push that lands after the drain started raises a fresh wake-up instead
 * of being missed.
 */
void cgnet__loop_wake(cgnet_loop *loop) {
  /* Store-then-load on both sides (push, then read the flag; clear the flag, then look
   * at the queue): only sequentially consistent operations forbid both sides missing
   * each other's store. The push's exchange and this one are seq_cst (fences are not
   * supported under TSan). */
  if (atomic_exchange_explicit(&loop->wake_pending, 1, memory_order_seq_cst)) return;
  atomic_fetch_add_explicit(&loop->wakeups, 1, memory_order_relaxed);
  loop->backend.ops->wake_signal(&loop->backend, &loop->wake);
}

void cgnet__loop_post(cgnet_loop *loop, cgnet__task *t) {
  cgnet__mpsc_push(&loop->tasks, &t->node);
  cgnet__loop_wake(loop);
}

static cgnet__task *pop_task(cgnet_loop *loop) {
  for (;;) {
    int busy;
    cgnet__mpsc_node *n = cgnet__mpsc_pop(&loop->tasks, &busy);
    if (n) {
      /* Only this thread writes it; atomic so stats can be read from anywhere. */
      atomic_store_explicit(&loop->tasks_run,
                            atomic_load_explicit(&loop->tasks_run, memory_order_relaxed) +
                                1,
                            memory_order_relaxed);
      return cgnet__container_of(n, cgnet__task, node);
    }
    if (!busy) return NULL;
    sched_yield(); /* a producer is between its two stores; it finishes in nanoseconds */
  }
}

static void begin_stop(cgnet_loop *loop);

static void on_wake(cgnet_loop *loop) {
  loop->backend.ops->wake_drain(&loop->backend, &loop->wake);
  (void)atomic_exchange_explicit(&loop->wake_pending, 0, memory_order_seq_cst);
  (void)atomic_load_explicit(&loop->tasks.head, memory_order_seq_cst);
  cgnet__task *t;
  while ((t = pop_task(loop)) != NULL)
    t->run(loop, t);
  if (!loop->stopping &&
      atomic_load_explicit(&loop->eng->state, memory_order_acquire) == CGNET__STOPPING)
    begin_stop(loop);
}

/* ---- accepting ----------------------------------------------------------------------- */

typedef struct handoff_task {
  cgnet__task t;
  cgnet_loop *target;
  int fd;
  bool tls; /* from a tls:// listener */
  socklen_t len;
  struct sockaddr_storage ss;
} handoff_task;

static void handoff_run(cgnet_loop *loop, cgnet__task *t) {
  handoff_task *h = (handoff_task *)t;
  cgnet__conn_open(loop, h->fd, (struct sockaddr *)&h->ss, h->len, h->tls);
  free(h);
}

static void forget_dispatched(cgnet_loop *target) {
  atomic_fetch_sub_explicit(&target->nconns, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&target->eng->nconns, 1, memory_order_relaxed);
}

/* The target loop exited before adopting the socket (engine teardown). */
static void handoff_drop(cgnet__task *t) {
  handoff_task *h = (handoff_task *)t;
  forget_dispatched(h->target);
  close(h->fd);
  free(h);
}

static cgnet_loop *pick_loop(cgnet_loop *self, const struct sockaddr *sa, socklen_t len) {
  cgnet_engine *eng = self->eng;
  /* A Unix listener is never per-loop (no SO_REUSEPORT): balance its conns. */
  if (eng->nloops == 1 || (eng->o.reuse_port && sa->sa_family != AF_UNIX)) return self;
  return &eng->loops[cgnet__lb_pick(&eng->lb, sa, len)];
}

/* Over max_connections: close at once; existing conns are untouched. */
static void reject(cgnet_loop *loop, int fd) {
  static _Thread_local uint64_t last_log;
  uint64_t n = atomic_fetch_add_explicit(&loop->eng->rejected, 1, memory_order_relaxed) + 1;
  close(fd);
  if (loop->now_ms - last_log >= LIMIT_LOG_INTERVAL_MS || last_log == 0) {
    last_log = loop->now_ms;
    cgnet__log(loop->eng, CGNET_LOG_WARN,
               "max_connections (%zu) reached: new connection closed (%llu so far)",
               loop->eng->o.max_connections, (unsigned long long)n);
  }
}

/* Give an accepted socket to its loop: directly when that is this loop, else as a task. */
static void dispatch_accepted(cgnet_loop *self, const cgnet__listener *l, int fd,
                              struct sockaddr_storage *ss, socklen_t len) {
  bool tls = self->eng->addrs[l->index].tls;
  cgnet_engine *eng = self->eng;
  /* Counted now, not on arrival, so least-conn and the limit see conns in flight. The
   * add-then-check keeps max_connections exact with several accepting loops. */
  size_t open_before = atomic_fetch_add_explicit(&eng->nconns, 1, memory_order_relaxed);
  if (eng->o.max_connections && open_before >= eng->o.max_connections) {
    atomic_fetch_sub_explicit(&eng->nconns, 1, memory_order_relaxed);
    reject(self, fd);
    return;
  }
  cgnet__apply_conn_options(fd, ss->ss_family, &eng->o);
  cgnet_loop *target = pick_loop(self, (struct sockaddr *)ss, len);
  atomic_fetch_add_explicit(&target->nconns, 1, memory_order_relaxed);
  if (target == self) {
    cgnet__conn_open(self, fd, (struct sockaddr *)ss, len, tls);
    return;
  }
  handoff_task *h = malloc(sizeof *h);
  if (!h) {
    cgnet__log(eng, CGNET_LOG_ERROR, "out of memory handing off a conn");
    forget_dispatched(target);
    close(fd);
    return;
  }
  h->t.run = handoff_run;
  h->t.drop = handoff_drop;
  h->target = target;
  h->fd = fd;
  h->tls = tls;
  h->len = len;
  memcpy(&h->ss, ss, sizeof *ss);
  cgnet__loop_post(target, &h->t);
}

/* Accepting: epoll watches the listener and accepts in batches on readiness; a
 * completion backend runs a multishot accept whose results come one by one. */
static int start_accepting(cgnet_loop *loop, cgnet__listener *l) {
  if (cgnet__backend_completion(&loop->backend) && !l->fd_starved)
    return loop->backend.ops->accept_start(&loop->backend, &l->io);
  return cgnet__backend_watch(&loop->backend, &l->io, CGNET__POLL_READ);
}

static void stop_accepting(cgnet_loop *loop, cgnet__listener *l) {
  if (cgnet__backend_completion(&loop->backend) && !l->fd_starved)
    loop->backend.ops->accept_stop(&loop->backend, &l->io);
  else
    cgnet__backend_unwatch(&loop->backend, &l->io);
}

/* No spare descriptor to shed with: stop watching the listener for a while rather than
 * spin on a readable listener whose accept() keeps failing. */
static void pause_listener(cgnet_loop *loop, cgnet__listener *l) {
  if (cgnet__tnode_active(&l->retry)) return;
  l->paused = true;
  stop_accepting(loop, l);
  cgnet__wheel_add(&loop->wheel, &l->retry, cgnet__deadline(loop->now_ms, ACCEPT_RETRY_MS));
}

static void on_listener_retry(cgnet__tnode *n) {
  cgnet__listener *l = cgnet__container_of(n, cgnet__listener, retry);
  cgnet_loop *loop = l->loop;
  if (l->io.fd < 0 || loop->stopping) return;
  if (loop->reserve_fd < 0) loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  l->paused = false;
  if (start_accepting(loop, l) < 0)
    cgnet__wheel_add(&loop->wheel, &l->retry,
                     cgnet__deadline(loop->now_ms, ACCEPT_RETRY_MS));
}

/*
 * Out of descriptors: the pending connection would make the listener readable forever
 * (a busy loop). Free the spare descriptor, accept the connection and close it at once,
 * so the peer sees a clean close instead of hanging, then take the spare back.
 */
static void shed_one(cgnet_loop *loop, cgnet__listener *l, int err) {
  static _Thread_local uint64_t last_log;
  if (loop->now_ms - last_log >= LIMIT_LOG_INTERVAL_MS || last_log == 0) {
    last_log = loop->now_ms;
    cgnet__log(loop->eng, CGNET_LOG_WARN, "accept: %s; shedding new connections",
               cgnet_strerror(err));
  }
  if (loop->reserve_fd >= 0) {
    close(loop->reserve_fd);
    (void)cgnet__sys_accept_shed(l->io.fd);
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (loop->reserve_fd < 0) pause_listener(loop, l);
}

/* The accepted sockets go to their loops first, then the error that ended the batch (at
 * most the last entry) is handled. */
static void on_listener_ready(cgnet_loop *loop, cgnet__listener *l) {
  cgnet__accepted batch[ACCEPT_BATCH];
  int n = cgnet__sys_accept(l->io.fd, batch, ACCEPT_BATCH);
  bool starved = false;
  for (int i = 0; i < n; i++) {
    int fd = batch[i].fd;
    if (fd >= 0) {
      dispatch_accepted(loop, l, fd, &batch[i].addr, batch[i].len);
    } else if (fd == -EMFILE || fd == -ENFILE) {
      starved = true;
      shed_one(loop, l, fd);
    } else {
      cgnet__log(loop->eng, CGNET_LOG_ERROR, "accept: %s", cgnet_strerror(fd));
    }
  }
  /* A completion backend accepting by readiness while out of descriptors: one went
   * through, so its accept operation can run again. */
  if (l->fd_starved && n > 0 && !starved && !l->paused) {
    cgnet__backend_unwatch(&loop->backend, &l->io);
    l->fd_starved = false;
    (void)start_accepting(loop, l);
  }
}

/* Completion backend out of descriptors: accept by readiness (see fd_starved). */
static void starve_listener(cgnet_loop *loop, cgnet__listener *l, bool accept_armed) {
  if (l->fd_starved) return;
  if (accept_armed) stop_accepting(loop, l);
  l->fd_starved = true;
  if (!l->paused) (void)start_accepting(loop, l);
}

/* One accepted socket from a completion backend; its peer's address is asked for (the
 * multishot accept has no per-connection address buffer). When the accept ended (an
 * error, or the kernel stopped it), it starts again unless the listener is paused. */
static void on_listener_result(cgnet_loop *loop, cgnet__listener *l,
                               const cgnet__result *r) {
  if (l->io.fd < 0 || loop->stopping) {
    if (r->res >= 0) close(r->res);
    return;
  }
  if (r->res >= 0 && (unsigned long)r->res >= cgnet__sys_nofile_limit()) {
    /* The kernel's multishot accept keeps the descriptor limit of when it was started:
     * past today's limit this is the EMFILE accept4 would have given. Close it (the
     * shed) and start the accept again under the limit in force. */
    close(r->res);
    shed_one(loop, l, -EMFILE);
    starve_listener(loop, l, r->more);
  } else if (r->res >= 0) {
    cgnet__accepted a;
    if (cgnet__sys_peer_name(r->res, &a.addr, &a.len) == 0)
      dispatch_accepted(loop, l, r->res, &a.addr, a.len);
    else
      close(r->res); /* reset before we saw it */
  } else if (r->res == -EMFILE || r->res == -ENFILE) {
    shed_one(loop, l, r->res);
    starve_listener(loop, l, r->more);
  } else if (r->res != -ECANCELED && r->res != -ECONNABORTED && r->res != -EPROTO &&
             r->res != -EINTR) {
    cgnet__log(loop->eng, CGNET_LOG_ERROR, "accept: %s", cgnet_strerror(r->res));
  }
  if (!r->more && !l->paused && !l->fd_starved && l->io.fd >= 0 && !loop->stopping)
    (void)start_accepting(loop, l);
}

/* ---- stopping ------------------------------------------------------------------------ */

static void close_listeners(cgnet_loop *loop) {
  for (size_t i = 0; i < loop->nlisteners; i++) {
    cgnet__listener *l = loop->listeners[i];
    if (!l || l->io.fd < 0) continue;
    cgnet__wheel_del(&loop->wheel, &l->retry);
    if (loop->backend.ops && cgnet__backend_completion(&loop->backend)) {
      /* Cancels the accept (or the poll) and closes; the completions still owed are
       * awaited before the loop exits (drain_operations). */
      loop->backend.ops->release(&loop->backend, &l->io);
    } else {
      if (loop->backend.ops) stop_accepting(loop, l);
      close(l->io.fd);
    }
    l->io.fd = -1;
    if (l->unix_file)
      cgnet__unix_unlink(&loop->eng->addrs[l->index], l->unix_dev, l->unix_ino);
  }
}

/* Apply fn to every conn, robust against fn (or on_close) closing other conns. */
void cgnet__loop_for_each_conn(cgnet_loop *loop, void (*fn)(cgnet_conn *c, void *ud),
                               void *ud) {
  cgnet__list todo;
  cgnet__list_init(&todo);
  if (!cgnet__list_empty(&loop->conns)) {
    todo.next = loop->conns.next;
    todo.prev = loop->conns.prev;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    cgnet__list_init(&loop->conns);
  }
  while (!cgnet__list_empty(&todo)) {
    cgnet_conn *c = cgnet__container_of(cgnet__list_first(&todo), cgnet_conn, node);
    cgnet__list_remove(&c->node);
    cgnet__list_insert_tail(&loop->conns, &c->node);
    fn(c, ud);
  }
}

static void begin_stop_conn(cgnet_conn *c, void *ud) {
  (void)ud;
  cgnet__conn_begin_stop(c);
}

static void begin_stop(cgnet_loop *loop) {
  loop->stopping = true;
  loop->stop_deadline_ms =
      cgnet__deadline(loop->now_ms, atomic_load_explicit(&loop->eng->stop_timeout_ms,
                                                         memory_order_relaxed));
  close_listeners(loop);
  cgnet__loop_stop_udp(loop);
  cgnet__loop_for_each_conn(loop, begin_stop_conn, NULL);
}

static void close_for_shutdown(cgnet_conn *c, void *ud) {
  (void)ud;
  cgnet__conn_close_now(c, CGNET_ESHUTDOWN);
}

/* ---- the loop ------------------------------------------------------------------------ */

/* A completion: a listener's accept, or one of a stream conn's operations. */
static void dispatch_completion(cgnet_loop *loop, const cgnet__result *r) {
  cgnet__io *io = r->io;
  if (io->kind == CGNET__KIND_LISTENER)
    on_listener_result(loop, (cgnet__listener *)io, r);
  else
    cgnet__conn_on_completion((cgnet_conn *)io, r);
}

static void dispatch(cgnet_loop *loop, const cgnet__result *r) {
  cgnet__io *io = r->io;
  if (cgnet__unlikely(r->type != CGNET__RES_READY)) {
    dispatch_completion(loop, r);
    return;
  }
  switch (io->kind) {
  case CGNET__KIND_CONN: {
    cgnet_conn *c = (cgnet_conn *)io;
    if (!cgnet__conn_closed(c)) cgnet__conn_on_ready(c, r->flags);
    break;
  }
  case CGNET__KIND_LISTENER:
    if (io->fd >= 0 && !loop->stopping) on_listener_ready(loop, (cgnet__listener *)io);
    break;
  case CGNET__KIND_WAKE:
    on_wake(loop);
    break;
  case CGNET__KIND_UDP:
    cgnet__udp_on_ready((cgnet__udp *)io, r->flags);
    break;
  }
}

static void continue_reads(cgnet_loop *loop) {
  /* Take the current list: conns that run out of budget again wait for the next turn. */
  size_t n = 0;
  for (cgnet__list *p = loop->pending_read.next; p != &loop->pending_read; p = p->next)
    n++;
  while (n-- > 0 && !cgnet__list_empty(&loop->pending_read)) {
    cgnet_conn *c =
        cgnet__container_of(cgnet__list_first(&loop->pending_read), cgnet_conn, read_node);
    cgnet__conn_continue_read(c);
  }
}

/* The ticker is a node on loop 0's wheel; the next delay counts from the tick's end. */
static void on_tick_node(cgnet__tnode *n) {
  cgnet_loop *loop = cgnet__container_of(n, cgnet_loop, tick_node);
  cgnet_engine *eng = loop->eng;
  if (loop->stopping) return;
  uint64_t delay = 1000;
  cgnet_action a = eng->h.on_tick(eng, &delay);
  uint64_t now = cgnet__now_ms();
  if (now < loop->wheel.now) now = loop->wheel.now;
  if (a == CGNET_SHUTDOWN) {
    cgnet__engine_request_stop(eng, CGNET__ACTION_STOP_TIMEOUT_MS, 0);
    return;
  }
  cgnet__wheel_add(&loop->wheel, n, cgnet__deadline(now, delay));
}

/* Before the loop sleeps: every conn's output, and the epoll interest changes of the
 * turn. */
static void flush_all(cgnet_loop *loop) {
  loop->final_flush = true;
  while (!cgnet__list_empty(&loop->pending_out)) {
    cgnet_conn *c =
        cgnet__container_of(cgnet__list_first(&loop->pending_out), cgnet_conn, out_node);
    cgnet__conn_flush_pending(c); /* unlinks c; on_pre_write may queue others */
  }
  loop->final_flush = false;
  cgnet__loop_flush_udp(loop);
}

static void sweep_graveyard(cgnet_loop *loop) {
  while (!cgnet__list_empty(&loop->graveyard))
    cgnet__conn_free(
        cgnet__container_of(cgnet__list_first(&loop->graveyard), cgnet_conn, node));
  if (cgnet__unlikely(!cgnet__list_empty(&loop->zombies))) cgnet__loop_reap_zombies(loop);
}

/* Closed conns whose operations have all completed are freed (two-phase close). */
void cgnet__loop_reap_zombies(cgnet_loop *loop) {
  cgnet__list *p = loop->zombies.next;
  while (p != &loop->zombies) {
    cgnet_conn *c = cgnet__container_of(p, cgnet_conn, node);
    p = p->next;
    if (cgnet__io_idle(&c->io) && !cgnet__conn_has(c, CGNET__CF_LINGER))
      cgnet__conn_reap(c);
  }
}

/* Copy the backend's counters where any thread may read them. */
static void publish_backend_stats(cgnet_loop *loop) {
  cgnet__backend_stats st;
  loop->backend.ops->get_stats(&loop->backend, &st);
  atomic_store_explicit(&loop->enters, st.enters, memory_order_relaxed);
  atomic_store_explicit(&loop->completions, st.completions, memory_order_relaxed);
  atomic_store_explicit(&loop->recv_nobufs, st.recv_nobufs, memory_order_relaxed);
  atomic_store_explicit(&loop->cq_overflows, st.cq_overflows, memory_order_relaxed);
  atomic_store_explicit(&loop->stale, st.stale, memory_order_relaxed);
  atomic_store_explicit(&loop->watches, st.watches, memory_order_relaxed);
}

/* Buffers cached for a burst go back to malloc about a second after it ends. */
#define POOL_TRIM_PERIOD_MS 1000
/* Chunks the pool gives back to malloc (when a class is full, or idle at a trim) stay
 * resident in malloc's free lists; once this much has been given back, malloc_trim hands
 * the free pages to the kernel, at most once per trim period, so RSS follows what the
 * conns really hold. */
#define POOL_TRIM_RELEASE_MIN (1024 * 1024)

static void trim_pool(cgnet_loop *loop) {
  if (cgnet__likely(loop->now_ms < loop->pool_trim_ms)) return;
  loop->pool_trim_ms = loop->now_ms + POOL_TRIM_PERIOD_MS;
  (void)cgnet__bufpool_trim(&loop->pool);
  if (loop->pool.released >= POOL_TRIM_RELEASE_MIN) {
    loop->pool.released = 0;
    malloc_trim(0);
  }
}

static int next_timeout(const cgnet_loop *loop) {
  if (!cgnet__list_empty(&loop->pending_read) || !cgnet__list_empty(&loop->pending_out) ||
      !cgnet__list_empty(&loop->pending_udp))
    return 0;
  uint64_t deadline = cgnet__wheel_next_due(&loop->wheel);
  if (loop->stopping && loop->stop_deadline_ms < deadline)
    deadline = loop->stop_deadline_ms;
  if (deadline == UINT64_MAX) return -1;
  if (deadline <= loop->now_ms) return 0;
  uint64_t ms = deadline - loop->now_ms;
  return ms > 60000 ? 60000 : (int)ms;
}

static void run(cgnet_loop *loop) {
  cgnet__result ready[READY_BATCH];
  while (!(loop->stopping && cgnet__list_empty(&loop->conns))) {
    int n = cgnet__backend_wait(&loop->backend, ready, READY_BATCH, next_timeout(loop));
    loop->now_ms = cgnet__now_ms();
    loop->tls_handshakes = 0;
    if (cgnet__unlikely(n < 0)) {
      cgnet__log(loop->eng, CGNET_LOG_ERROR, "poller wait: %s", cgnet_strerror(n));
      cgnet__engine_request_stop(loop->eng, 0, n);
      if (!loop->stopping) begin_stop(loop);
      loop->stop_deadline_ms = loop->now_ms;
    }
    for (int i = 0; i < n; i++)
      dispatch(loop, &ready[i]);
    continue_reads(loop);
    cgnet__wheel_advance(&loop->wheel, loop->now_ms);
    if (loop->stopping && loop->now_ms >= loop->stop_deadline_ms)
      cgnet__loop_for_each_conn(loop, close_for_shutdown, NULL);
    flush_all(loop);
    sweep_graveyard(loop);
    trim_pool(loop);
    publish_backend_stats(loop);
  }
}

/* A listener's cancelled accept still holds its socket (the address stays bound). */
static bool accepts_in_flight(const cgnet_loop *loop) {
  for (size_t i = 0; i < loop->nlisteners; i++)
    if (loop->listeners[i] && !cgnet__io_idle(&loop->listeners[i]->io)) return true;
  return false;
}

/* The conns are closed; a completion backend still owes the completions of their
 * cancelled operations, whose memory is freed only when they arrive, and of the
 * listeners' accepts, which keep the listening sockets open until then (so that once
 * cgnet_engine_stop returns, the addresses are free again). Bounded: a cancel completes
 * within a turn or two. */
static void drain_operations(cgnet_loop *loop) {
  if (!cgnet__backend_completion(&loop->backend)) return;
  cgnet__result results[READY_BATCH];
  for (cgnet__list *p = loop->zombies.next; p != &loop->zombies; p = p->next)
    cgnet__conn_end_linger(cgnet__container_of(p, cgnet_conn, node));
  /* At least one turn: closes queued by the last turn go to the kernel now, not when
   * the engine is freed. */
  for (int turn = 0; turn == 0 || (turn < 100 && (!cgnet__list_empty(&loop->zombies) ||
                                                  accepts_in_flight(loop)));
       turn++) {
    int n = cgnet__backend_wait(&loop->backend, results, READY_BATCH, turn == 0 ? 0 : 10);
    for (int i = 0; i < n; i++) {
      if (results[i].type == CGNET__RES_RECV)
        loop->backend.ops->recv_done(&loop->backend, &results[i]);
    }
    cgnet__loop_reap_zombies(loop);
  }
}

static void pin_to_cpu(cgnet_loop *loop) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu <= 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET((size_t)(loop->index % ncpu), &set);
  int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (err)
    cgnet__log(loop->eng, CGNET_LOG_WARN, "loop %d: cannot pin to a CPU: %s", loop->index,
               cgnet_strerror(-err));
}

static void *loop_main(void *arg) {
  cgnet_loop *loop = arg;
  cgnet__tls_loop = loop;
  if (loop->backend.ops->start) {
    int err = loop->backend.ops->start(&loop->backend);
    if (err) {
      cgnet__log(loop->eng, CGNET_LOG_ERROR, "loop %d: %s backend: %s", loop->index,
                 loop->backend.ops->name, cgnet_strerror(err));
      cgnet__engine_request_stop(loop->eng, 0, err);
    }
  }
  if (loop->eng->o.cpu_affinity) pin_to_cpu(loop);
  loop->now_ms = cgnet__now_ms();
  cgnet__wheel_advance(&loop->wheel, loop->now_ms);
  cgnet_engine *eng = loop->eng;
  if (loop->index == 0 && eng->o.ticker && eng->h.on_tick) /* first tick right away */
    cgnet__wheel_add(&loop->wheel, &loop->tick_node, loop->now_ms);
  if (atomic_load_explicit(&eng->state, memory_order_acquire) == CGNET__STOPPING)
    begin_stop(loop);
  run(loop);
  /* Tasks that arrived during the last turn still run here, on the loop (conn tasks find
   * their conns closed); only ones posted after this point are dropped at teardown. */
  cgnet__task *t;
  while ((t = pop_task(loop)) != NULL)
    t->run(loop, t);
  sweep_graveyard(loop);
  drain_operations(loop);
  cgnet__engine_loop_exited(loop->eng);
  return NULL;
}

int cgnet__loop_start(cgnet_loop *loop) {
  int err = pthread_create(&loop->thread, NULL, loop_main, loop);
  if (err) return -err;
  loop->thread_started = true;
  return 0;
}

/* ---- construction -------------------------------------------------------------------- */

int cgnet__loop_init(cgnet_loop *loop, cgnet_engine *eng, int index) {
  loop->eng = eng;
  loop->index = index;
  loop->backend.fd = -1;
  loop->wake.fd = -1;
  loop->wake.kind = CGNET__KIND_WAKE;
  loop->reserve_fd = -1;
  cgnet__mpsc_init(&loop->tasks);
  cgnet__bufpool_init(&loop->pool);
  cgnet__list_init(&loop->conns);
  cgnet__list_init(&loop->graveyard);
  cgnet__list_init(&loop->zombies);
  cgnet__list_init(&loop->pending_out);
  cgnet__list_init(&loop->pending_read);
  cgnet__list_init(&loop->timers);
  cgnet__list_init(&loop->pending_udp);
  cgnet__wheel_init(&loop->wheel, cgnet__now_ms());
  cgnet__tnode_init(&loop->tick_node, on_tick_node);
  atomic_init(&loop->wake_pending, 0);
  atomic_init(&loop->wakeups, 0);
  atomic_init(&loop->tasks_run, 0);
  atomic_init(&loop->nconns, 0);

  loop->backend.ops = eng->backend_ops;
  cgnet__backend_config cfg = {.recv_buffers = eng->o.recv_buffers,
                               .recv_buffer_len = (unsigned)eng->o.recv_buffer_size};
  int err = loop->backend.ops->init(&loop->backend, &cfg);
  if (err) loop->backend.ops = NULL; /* nothing to close */
  if (err) return err;
  err = loop->backend.ops->wake_open(&loop->backend, &loop->wake);
  if (err) return err;
  loop->rbuf_cap = eng->o.read_buffer_cap;
  loop->rbuf = malloc(loop->rbuf_cap);
  if (!loop->rbuf) return CGNET_ENOMEM;
  loop->listeners = calloc(eng->naddrs ? eng->naddrs : 1, sizeof *loop->listeners);
  if (!loop->listeners) return CGNET_ENOMEM;
  loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return 0;
}

/* Adopt a listening socket (before the loop thread starts). */
int cgnet__loop_add_listener(cgnet_loop *loop, size_t index, int fd) {
  cgnet__listener *l = calloc(1, sizeof *l);
  if (!l) return CGNET_ENOMEM;
  l->io.fd = fd;
  l->io.kind = CGNET__KIND_LISTENER;
  l->index = index;
  l->loop = loop;
  cgnet__tnode_init(&l->retry, on_listener_retry);
  loop->listeners[loop->nlisteners++] = l;
  return start_accepting(loop, l);
}

void cgnet__loop_destroy(cgnet_loop *loop) {
  if (loop->listeners) {
    close_listeners(loop);
    for (size_t i = 0; i < loop->nlisteners; i++)
      free(loop->listeners[i]);
    free(loop->listeners);
  }
  cgnet__loop_free_udp(loop);
  /* Conns left here never ran (the loop did not start): close them quietly. */
  while (!cgnet__list_empty(&loop->conns)) {
    cgnet_conn *c = cgnet__container_of(cgnet__list_first(&loop->conns), cgnet_conn, node);
    cgnet__conn_close_now(c, CGNET_ESHUTDOWN);
  }
  cgnet__loop_free_sessions(loop);
  sweep_graveyard(loop);
  /* Zombies left (the loop never ran, or its drain gave up): the ring is closed below,
   * which ends their operations; their memory goes after that. */
  cgnet__loop_free_timers(loop);
  cgnet__task *t;
  int busy;
  cgnet__mpsc_node *n;
  while ((n = cgnet__mpsc_pop(&loop->tasks, &busy)) != NULL || busy) {
    if (!n) continue;
    t = cgnet__container_of(n, cgnet__task, node);
    t->drop(t);
  }
  if (loop->backend.ops) {
    loop->backend.ops->wake_close(&loop->backend, &loop->wake);
    loop->backend.ops->close(&loop->backend);
  }
  while (!cgnet__list_empty(&loop->zombies))
    cgnet__conn_reap(
        cgnet__container_of(cgnet__list_first(&loop->zombies), cgnet_conn, node));
  if (loop->reserve_fd >= 0) close(loop->reserve_fd);
  free(loop->rbuf);
  free(loop->tls_scratch);
  cgnet__bufpool_destroy(&loop->pool);
}

/* ---- user tasks ---------------------------------------------------------------------- */

typedef struct exec_task {
  cgnet__task t;
  cgnet_loop_fn fn;
  void *ud;
} exec_task;

static void exec_run(cgnet_loop *loop, cgnet__task *t) {
  exec_task *e = (exec_task *)t;
  cgnet_loop_fn fn = e->fn;
  void *ud = e->ud;
  free(e);
  fn(loop, ud);
}

static void exec_drop(cgnet__task *t) {
  free(t);
}

int cgnet_loop_execute(cgnet_loop *loop, cgnet_loop_fn fn, void *ud) {
  if (!loop || !fn) return CGNET_EINVAL;
  if (atomic_load_explicit(&loop->eng->state, memory_order_acquire) != CGNET__RUNNING)
    return CGNET_ESHUTDOWN;
  exec_task *e = malloc(sizeof *e);
  if (!e) return CGNET_ENOMEM;
  e->t.run = exec_run;
  e->t.drop = exec_drop;
  e->fn = fn;
  e->ud = ud;
  cgnet__loop_post(loop, &e->t);
  return 0;
}

/* ---- public accessors ---------------------------------------------------------------- */

int cgnet_loop_index(const cgnet_loop *loop) {
  return loop->index;
}
cgnet_engine *cgnet_loop_engine(const cgnet_loop *loop) {
  return loop->eng;
}
size_t cgnet_loop_count_connections(const cgnet_loop *loop) {
  return atomic_load_explicit(&loop->nconns, memory_order_relaxed);
}
int cgnet_loop_is_current(const cgnet_loop *loop) {
  return cgnet__tls_loop == loop;
}

void cgnet_loop_get_stats(const cgnet_loop *loop, cgnet_loop_stats *out) {
  out->wakeups = atomic_load_explicit(&loop->wakeups, memory_order_relaxed);
  out->tasks = atomic_load_explicit(&loop->tasks_run, memory_order_relaxed);
  out->enters = atomic_load_explicit(&loop->enters, memory_order_relaxed);
  out->completions = atomic_load_explicit(&loop->completions, memory_order_relaxed);
  out->recv_nobufs = atomic_load_explicit(&loop->recv_nobufs, memory_order_relaxed);
  out->cq_overflows = atomic_load_explicit(&loop->cq_overflows, memory_order_relaxed);
  out->stale_completions = atomic_load_explicit(&loop->stale, memory_order_relaxed);
  out->interest_updates = atomic_load_explicit(&loop->watches, memory_order_relaxed);
  out->tls_handshakes = atomic_load_explicit(&loop->tls_started, memory_order_relaxed);
  out->tls_handshakes_turn_max =
      atomic_load_explicit(&loop->tls_turn_max, memory_order_relaxed);
}
