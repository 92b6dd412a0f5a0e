/*
 * Lifecycle property test: random sequences of conn operations, from a seed, checked
 * against the invariants every conn owes its user.
 *
 * One run: an echo server engine (tcp and unix listeners, one loop, plus an attached
 * "echo client" that serves the far ends of enrolled socketpairs) and the client under
 * test (its own loop, or attached to the server's engine: the seed decides). A seeded
 * PRNG on the client's loop thread issues operations from inside callbacks (on_open,
 * on_traffic, on_close of any conn, conn timers, loop timers, a 1 ms driver timer) and
 * worker threads, each with its own seeded PRNG, issue the any-thread calls at the same
 * time: dial (tcp, unix, refused, missing path), enroll (socketpair, connected TCP),
 * write, writev, async write, async close, wake, pause/resume_read, close,
 * shutdown_write, conn timer start/stop/free, loop timers, idle timeouts, ref/unref,
 * and in some runs an early engine stop (SHUTDOWN action or cgnet_engine_stop).
 *
 * Invariants:
 *  - no crash, no sanitizer report;
 *  - a dialed or enrolled conn gets on_close exactly once, even if it never opened;
 *    on_open at most once and before it; no on_traffic outside open..close;
 *  - every byte the client reads is the next byte it queued on that conn (echo), and a
 *    conn still open when the operations stop gets back every byte it sent;
 *  - stop and free return within a bound, and no descriptor leaks.
 *
 * The seed is printed for each run; CGNET_LIFECYCLE_SEED=<n> replays one run,
 * CGNET_LIFECYCLE_THREADS=0 leaves out the worker threads (then a run is as
 * deterministic as the kernel's timing allows), CGNET_LIFECYCLE_BUDGET_MS changes the
 * wall-clock budget of the whole test (default 15 s).
 *
 * cgnet-test-timeout: 240
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/support.h"

#define MAX_RECS 128               /* conns created per run */
#define MAX_SENT (48 * 1024)       /* bytes a conn may queue in one run */
#define MAX_THREADS 3              /* worker threads */
#define LOOP_OPS 500               /* operations the loop thread issues per run */
#define THREAD_OPS 200             /* operations each worker issues per run */
#define MAX_LOOP_TIMERS 6          /* loop timers alive at once */
#define REC_MAGIC 0x11fec7c1u      /* a rec's magic: the conn's context is ours */
#define SETTLE_MS (8000 * TU_SLOW) /* after the operations: conns settle within this */
#define FREE_MS (10000 * TU_SLOW)  /* client / engine stop and free return within this */
#define DEFAULT_BUDGET_MS 15000

/* ---- the seeded PRNG (xorshift64*) ----------------------------------------------------
 */

static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545f4914f6cdd1dull;
}

static unsigned below(uint64_t *s, unsigned n) {
  return n ? (unsigned)(rnd(s) % n) : 0;
}

static uint64_t seed_state(uint64_t seed, uint64_t stream) {
  uint64_t s = (seed + 1) * 0x9e3779b97f4a7c15ull ^ (stream * 0xbf58476d1ce4e5b9ull);
  return s ? s : 1;
}

/* ---- one created conn ------------------------------------------------------------------
 */

typedef enum rec_kind {
  K_DIAL_TCP,
  K_DIAL_UNIX,
  K_DIAL_REFUSED,
  K_DIAL_MISSING,
  K_ENROLL_PAIR,
  K_ENROLL_TCP,
} rec_kind;

static const char *const kind_names[] = {"dial tcp",     "dial unix",   "dial refused",
                                         "dial missing", "enroll pair", "enroll tcp"};

/*
 * A conn the run created, and its context. `conn` is the reference the creator got from
 * dial/enroll; the run holds it until the end, so every thread may make any-thread calls
 * on it. The loop-thread fields are touched only on the client's loop (or, after the
 * loops are gone, by the test thread).
 */
typedef struct rec {
  unsigned magic;
  int id;
  rec_kind kind;
  _Atomic(cgnet_conn *) conn; /* published once the create call returned */
  atomic_int created;         /* the create call returned 0 */
  atomic_int opens, closes, reason;
  atomic_size_t sent_len, recv_len; /* queued on the loop / read back */
  atomic_size_t reserved;           /* sent_len + async writes in flight */
  /* loop thread */
  cgnet_conn *loop_conn; /* known on the loop: the creator was the loop, or a callback */
  bool open_seen, closed_seen, shut_wr, paused;
  cgnet_timer *timer;
  uint8_t *sent; /* MAX_SENT bytes: the stream the echo must give back */
} rec;

enum { PH_RUN = 0, PH_QUIESCE = 1 };

/* Everything one run shares; one run at a time. */
static struct run {
  uint64_t seed;
  bool attached;   /* the client runs on the server engine's loop */
  bool allow_stop; /* an early engine stop may be generated */
  bool edge;       /* edge-triggered loops */
  bool late_unref; /* own mode: drop the references after cgnet_client_free */
  int nthreads;
  uint64_t deadline_ms; /* the operations end at this time */

  tu_server srv;
  cgnet_client *echo_cl; /* on the server: far ends of enrolled socketpairs */
  cgnet_client *cl;      /* the client under test */
  cgnet_engine *cl_eng;  /* its engine (own or the server's) */
  char dir[64], tcp_addr[64], unix_addr[128], refused_addr[64], missing_addr[128];
  int port;

  atomic_int phase;
  atomic_int stopped;   /* an early stop was issued */
  atomic_int loop_busy; /* loop ops left (the loop thread's budget) */
  atomic_int srv_opens, srv_closes_opened, srv_bad;
  atomic_int quiesced; /* the quiesce task ran */

  /* loop thread only */
  uint64_t loop_rng, srv_rng;
  int loop_ops_left;
  bool want_shutdown; /* the current callback returns SHUTDOWN */
  cgnet_timer *ltimers[MAX_LOOP_TIMERS];
  cgnet_timer *driver;

  atomic_int nrecs;
  rec *recs; /* MAX_RECS */
} R;

static uint64_t budget_ms_total = DEFAULT_BUDGET_MS;

/* ---- recs ---------------------------------------------------------------------------- */

static rec *new_rec(rec_kind kind) {
  int i = atomic_fetch_add(&R.nrecs, 1);
  if (i >= MAX_RECS) {
    atomic_store(&R.nrecs, MAX_RECS);
    return NULL;
  }
  rec *r = &R.recs[i];
  r->kind = kind;
  return r;
}

static int rec_count(void) {
  int n = atomic_load(&R.nrecs);
  return n > MAX_RECS ? MAX_RECS : n;
}

static rec *rec_of(cgnet_conn *c) {
  rec *r = cgnet_conn_context(c);
  if (!r || r->magic != REC_MAGIC) {
    TU_CHECK(!"a client conn's context is not a rec");
    return NULL;
  }
  if (!r->loop_conn) r->loop_conn = c;
  TU_CHECK(r->loop_conn == c);
  return r;
}

/* Reserve room for len more bytes of r's stream (any thread). */
static bool reserve(rec *r, size_t len) {
  size_t before = atomic_fetch_add(&r->reserved, len);
  if (before + len <= MAX_SENT) return true;
  atomic_fetch_sub(&r->reserved, len);
  return false;
}

/* Loop thread: `len` bytes were queued on r's conn; they must come back in this order. */
static void log_sent(rec *r, const uint8_t *p, size_t len) {
  size_t at = atomic_load(&r->sent_len);
  TU_CHECK(at + len <= MAX_SENT);
  if (at + len > MAX_SENT) return;
  memcpy(r->sent + at, p, len);
  atomic_store(&r->sent_len, at + len);
}

/* Loop thread: bytes read back on r's conn; each must be the next one queued. */
static void check_echo(rec *r, const uint8_t *p, size_t n) {
  size_t at = atomic_load(&r->recv_len), sent = atomic_load(&r->sent_len);
  if (at + n > sent) {
    fprintf(stderr, "lifecycle seed %#llx: rec %d (%s) read %zu bytes at %zu, sent %zu\n",
            (unsigned long long)R.seed, r->id, kind_names[r->kind], n, at, sent);
    TU_CHECK(!"read more bytes than were sent");
    n = sent - at;
  }
  size_t diff = tu_first_diff(p, r->sent + at, n);
  if (diff != SIZE_MAX) {
    fprintf(stderr,
            "lifecycle seed %#llx: rec %d (%s) byte %zu differs from what was sent\n",
            (unsigned long long)R.seed, r->id, kind_names[r->kind], at + diff);
    TU_CHECK(!"echoed bytes differ from the bytes sent");
  }
  atomic_store(&r->recv_len, at + n);
}

/* ---- the echo server (and the echo client for socketpair far ends) ----------------------
 */

static int opened_mark;

static cgnet_action srv_open(cgnet_conn *c) {
  atomic_fetch_add(&R.srv_opens, 1);
  cgnet_conn_set_context(c, &opened_mark);
  return CGNET_NONE;
}

/* Echo everything; now and then (before the quiesce) close, so peers see EOFs too. */
static cgnet_action srv_traffic(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n && cgnet_conn_write(c, p, n) != 0) return CGNET_CLOSE;
  if (atomic_load(&R.phase) == PH_RUN && below(&R.srv_rng, 150) == 0) return CGNET_CLOSE;
  return CGNET_NONE;
}

static cgnet_action srv_close(cgnet_conn *c, int reason) {
  (void)reason;
  if (cgnet_conn_context(c) == &opened_mark) {
    atomic_fetch_add(&R.srv_closes_opened, 1);
    cgnet_conn_set_context(c, NULL);
  } else if (cgnet_conn_context(c) != NULL) {
    atomic_fetch_add(&R.srv_bad, 1);
  }
  return CGNET_NONE;
}

static const cgnet_handler srv_handler = {
    .on_open = srv_open, .on_traffic = srv_traffic, .on_close = srv_close};

/* ---- creating conns (any thread) -------------------------------------------------------
 */

static bool on_client_loop(void) {
  return cgnet_loop_is_current(cgnet_engine_loop(R.cl_eng, 0));
}

/* Publish a created conn: its reference becomes the run's. */
static void publish(rec *r, int rc, cgnet_conn *c) {
  if (rc != 0) {
    TU_CHECK(c == NULL);
    return;
  }
  TU_CHECK(c != NULL);
  atomic_store(&r->created, 1);
  atomic_store(&r->conn, c);
  if (on_client_loop() && !r->loop_conn) r->loop_conn = c;
}

static rec *dial_one(uint64_t *rng, rec_kind kind) {
  rec *r = new_rec(kind);
  if (!r) return NULL;
  const char *addr = kind == K_DIAL_TCP       ? R.tcp_addr
                     : kind == K_DIAL_UNIX    ? R.unix_addr
                     : kind == K_DIAL_REFUSED ? R.refused_addr
                                              : R.missing_addr;
  uint64_t timeout = below(rng, 4) == 0 ? 0 : 2000 * TU_SLOW;
  cgnet_conn *c = NULL;
  int rc = cgnet_client_dial(R.cl, addr, timeout, r, &c);
  TU_CHECK(rc == 0 || rc == CGNET_ESHUTDOWN);
  publish(r, rc, c);
  return rc == 0 ? r : NULL;
}

/* A blocking connect to the echo server over loopback (the handshake completes in the
 * kernel, so this is quick even on a loop thread), or -1. */
static int connect_tcp(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)R.port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static rec *enroll_one(rec_kind kind) {
  int fds[2];
  if (kind == K_ENROLL_PAIR) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return NULL;
    int rc = cgnet_client_enroll(R.echo_cl, fds[1], NULL, NULL); /* owns fds[1] now */
    TU_CHECK(rc == 0 || rc == CGNET_ESHUTDOWN);
  } else if ((fds[0] = connect_tcp()) < 0) {
    return NULL;
  }
  rec *r = new_rec(kind);
  if (!r) {
    close(fds[0]);
    return NULL;
  }
  cgnet_conn *c = NULL;
  int rc = cgnet_client_enroll(R.cl, fds[0], r, &c); /* owns fds[0] now */
  TU_CHECK(rc == 0 || rc == CGNET_ESHUTDOWN);
  publish(r, rc, c);
  return rc == 0 ? r : NULL;
}

static rec *create_one(uint64_t *rng) {
  unsigned k = below(rng, 16);
  if (k < 5) return dial_one(rng, K_DIAL_TCP);
  if (k < 9) return dial_one(rng, K_DIAL_UNIX);
  if (k == 9) return dial_one(rng, below(rng, 2) ? K_DIAL_REFUSED : K_DIAL_MISSING);
  if (k < 14) return enroll_one(K_ENROLL_PAIR);
  return enroll_one(K_ENROLL_TCP);
}

/* ---- async writes (any thread) ------------------------------------------------------- */

typedef struct wjob {
  rec *r;
  size_t len;
  uint64_t seed;
} wjob;

/* Runs on the loop right after the write was queued (status 0), or with the error. */
static void async_done(cgnet_conn *c, int status, void *ud) {
  wjob *w = ud;
  if (status == 0) {
    TU_CHECK(cgnet_loop_is_current(cgnet_conn_loop(c)));
    uint8_t *buf = malloc(w->len);
    if (buf) {
      tu_pattern_fill(buf, w->len, w->seed, 0);
      log_sent(w->r, buf, w->len);
      free(buf);
    }
  } else {
    TU_CHECK(status == CGNET_ECLOSED || status == CGNET_ECANCELED || status == CGNET_EPIPE);
    atomic_fetch_sub(&w->r->reserved, w->len);
  }
  free(w);
}

static size_t pick_len(uint64_t *rng) {
  unsigned k = below(rng, 32);
  if (k == 0) return 16384 + below(rng, 4096); /* a direct write past the queue */
  if (k < 4) return 1 + below(rng, 4096);
  return 1 + below(rng, 300);
}

static void async_write(uint64_t *rng, rec *r, bool vectored) {
  cgnet_conn *c = atomic_load(&r->conn);
  size_t len = pick_len(rng);
  if (!c || !reserve(r, len)) return;
  wjob *w = malloc(sizeof *w);
  uint8_t *buf = malloc(len);
  if (!w || !buf) {
    free(w);
    free(buf);
    return;
  }
  w->r = r;
  w->len = len;
  w->seed = rnd(rng);
  tu_pattern_fill(buf, len, w->seed, 0);
  int rc;
  if (vectored) {
    size_t cut = below(rng, (unsigned)len + 1);
    struct iovec iov[2] = {{buf, cut}, {buf + cut, len - cut}};
    rc = cgnet_conn_async_writev(c, iov, 2, async_done, w);
  } else {
    rc = cgnet_conn_async_write(c, buf, len, async_done, w);
  }
  free(buf);
  if (rc != 0) {
    TU_CHECK(rc == CGNET_ECLOSED);
    atomic_fetch_sub(&r->reserved, len);
    free(w);
  }
}

static void close_done(cgnet_conn *c, int reason, void *ud) {
  (void)c;
  (void)ud;
  TU_CHECK(reason == CGNET_ELOCALCLOSE || reason == CGNET_ECLOSED ||
           reason == CGNET_ECANCELED);
}

/* ---- loop-thread operations ------------------------------------------------------------
 */

static void loop_ops(int n);

/* A random rec whose conn the loop knows and that has not closed; open ones only unless
 * `any`. NULL if the tries find none. */
static rec *pick_rec(bool any) {
  int n = rec_count();
  for (int tries = 0; n > 0 && tries < 8; tries++) {
    rec *r = &R.recs[below(&R.loop_rng, (unsigned)n)];
    if (r->loop_conn && !r->closed_seen && (any || r->open_seen)) return r;
  }
  return NULL;
}

static cgnet_action conn_timer_fn(cgnet_timer *t, void *ud) {
  rec *r = ud;
  TU_CHECK(cgnet_timer_conn(t) == r->loop_conn);
  TU_CHECK(r->open_seen && !r->closed_seen);
  loop_ops(1 + (int)below(&R.loop_rng, 2));
  if (r->closed_seen) return CGNET_NONE;
  if (below(&R.loop_rng, 3) == 0 && r->timer == t) { /* a conn timer may free itself */
    cgnet_timer_free(t);
    r->timer = NULL;
  }
  return below(&R.loop_rng, 20) == 0 ? CGNET_CLOSE : CGNET_NONE;
}

static cgnet_action loop_timer_fn(cgnet_timer *t, void *ud) {
  int slot = (int)(intptr_t)ud;
  TU_CHECK(R.ltimers[slot] == t);
  loop_ops((int)below(&R.loop_rng, 3));
  if (R.ltimers[slot] == t && below(&R.loop_rng, 4) == 0) {
    cgnet_timer_free(t);
    R.ltimers[slot] = NULL;
  }
  return CGNET_NONE;
}

static void op_conn_timer(rec *r) {
  if (!r->timer) {
    r->timer = cgnet_conn_timer_new(r->loop_conn, conn_timer_fn, r);
    TU_CHECK(r->timer != NULL);
    if (!r->timer) return;
  }
  switch (below(&R.loop_rng, 4)) {
  case 0:
  case 1:
    TU_CHECK_EQ(cgnet_timer_start(r->timer, below(&R.loop_rng, 20),
                                  below(&R.loop_rng, 2) ? 1 + below(&R.loop_rng, 10) : 0),
                0);
    break;
  case 2:
    TU_CHECK_EQ(cgnet_timer_stop(r->timer), 0);
    TU_CHECK(!cgnet_timer_active(r->timer));
    break;
  default:
    cgnet_timer_free(r->timer);
    r->timer = NULL;
  }
}

static void op_loop_timer(void) {
  int slot = (int)below(&R.loop_rng, MAX_LOOP_TIMERS);
  cgnet_timer *t = R.ltimers[slot];
  if (!t) {
    t = cgnet_timer_new(cgnet_engine_loop(R.cl_eng, 0), loop_timer_fn,
                        (void *)(intptr_t)slot);
    TU_CHECK(t != NULL);
    if (!t) return;
    R.ltimers[slot] = t;
    cgnet_timer_start(t, below(&R.loop_rng, 15), below(&R.loop_rng, 3) * 3);
    return;
  }
  switch (below(&R.loop_rng, 3)) {
  case 0:
    cgnet_timer_stop(t);
    break;
  case 1:
    cgnet_timer_start(t, below(&R.loop_rng, 15), 0);
    break;
  default:
    cgnet_timer_free(t);
    R.ltimers[slot] = NULL;
  }
}

static void op_write(rec *r, bool vectored) {
  size_t len = pick_len(&R.loop_rng);
  if (!reserve(r, len)) return;
  uint8_t *buf = malloc(len);
  if (!buf) {
    atomic_fetch_sub(&r->reserved, len);
    return;
  }
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t)rnd(&R.loop_rng);
  int rc;
  if (vectored) {
    size_t a = below(&R.loop_rng, (unsigned)len + 1);
    size_t b = below(&R.loop_rng, (unsigned)(len - a) + 1);
    struct iovec iov[3] = {{buf, a}, {buf + a, b}, {buf + a + b, len - a - b}};
    rc = cgnet_conn_writev(r->loop_conn, iov, 3);
  } else {
    rc = cgnet_conn_write(r->loop_conn, buf, len);
  }
  if (rc == 0) {
    log_sent(r, buf, len);
  } else {
    TU_CHECK(rc == CGNET_ECLOSED || rc == CGNET_EPIPE);
    atomic_fetch_sub(&r->reserved, len);
  }
  free(buf);
}

/* The early stop of some runs: the engine the client runs on. */
static void op_stop(void) {
  if (!R.allow_stop || below(&R.loop_rng, 40) != 0) return;
  atomic_store(&R.stopped, 1);
  if (below(&R.loop_rng, 2))
    R.want_shutdown = true; /* the callback's action */
  else
    cgnet_engine_stop(R.cl_eng, below(&R.loop_rng, 50)); /* only requests it here */
}

/* Close the conn just created on this loop, before its first task ran on the loop. */
static void maybe_close_at_once(rec *r) {
  if (!r || !r->loop_conn || below(&R.loop_rng, 4) != 0) return;
  TU_CHECK_EQ(cgnet_conn_close(r->loop_conn), 0);
}

static void one_loop_op(void) {
  unsigned k = below(&R.loop_rng, 72);
  if (k < 7) {
    maybe_close_at_once(create_one(&R.loop_rng));
    return;
  }
  if (k < 12) {
    op_loop_timer();
    return;
  }
  if (k == 12) {
    op_stop();
    return;
  }
  rec *r = pick_rec(k < 17); /* closes may hit conns that have not opened yet */
  if (!r) return;
  cgnet_conn *c = r->loop_conn;
  if (k < 17) {
    int rc = cgnet_conn_close(c);
    TU_CHECK(rc == 0 || rc == CGNET_ECLOSED);
  } else if (k < 33) {
    op_write(r, false);
  } else if (k < 40) {
    op_write(r, true);
  } else if (k < 44) {
    async_write(&R.loop_rng, r, below(&R.loop_rng, 2));
  } else if (k < 48) {
    TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
    r->paused = true;
  } else if (k < 53) {
    TU_CHECK_EQ(cgnet_conn_resume_read(c), 0);
    r->paused = false;
  } else if (k == 53) {
    int rc = cgnet_conn_shutdown_write(c);
    TU_CHECK(rc == 0 || rc == CGNET_ECLOSED);
    if (rc == 0) r->shut_wr = true;
  } else if (k < 58) {
    op_conn_timer(r);
  } else if (k < 61) {
    TU_CHECK_EQ(cgnet_conn_set_idle_timeout(
                    c, below(&R.loop_rng, 3) ? 0 : 5 + below(&R.loop_rng, 100)),
                0);
  } else if (k < 65) {
    int rc = cgnet_conn_wake(c);
    TU_CHECK(rc == 0 || rc == CGNET_ECLOSED);
  } else if (k < 67) {
    cgnet_conn_unref(cgnet_conn_ref(c));
  } else {
    (void)cgnet_conn_flush(c);
  }
}

/* Issue up to n operations on the loop thread, while the run's budget lasts. */
static void loop_ops(int n) {
  for (int i = 0; i < n; i++) {
    if (atomic_load(&R.phase) != PH_RUN || R.loop_ops_left <= 0) return;
    if (tu_now_ms() >= R.deadline_ms) R.loop_ops_left = 0;
    if (--R.loop_ops_left <= 0) atomic_store(&R.loop_busy, 0);
    one_loop_op();
  }
}

static cgnet_action action_of_callback(void) {
  if (!R.want_shutdown) return CGNET_NONE;
  R.want_shutdown = false;
  return CGNET_SHUTDOWN;
}

/* ---- the client's callbacks ------------------------------------------------------------
 */

static cgnet_action cl_open(cgnet_conn *c) {
  rec *r = rec_of(c);
  if (!r) return CGNET_NONE;
  atomic_fetch_add(&r->opens, 1);
  TU_CHECK(!r->open_seen && !r->closed_seen);
  r->open_seen = true;
  loop_ops((int)below(&R.loop_rng, 3));
  return action_of_callback();
}

static cgnet_action cl_traffic(cgnet_conn *c) {
  rec *r = rec_of(c);
  if (!r) return CGNET_NONE;
  TU_CHECK(r->open_seen && !r->closed_seen);
  size_t avail = cgnet_conn_inbound_buffered(c);
  size_t want = avail;
  if (atomic_load(&R.phase) == PH_RUN && below(&R.loop_rng, 8) == 0) want = avail / 2;
  /* want 0: a wake with nothing buffered, or half of one byte; take nothing (next() with
   * n 0 would take everything). */
  if (want) {
    const uint8_t *p;
    size_t n = cgnet_conn_next(c, want, &p);
    check_echo(r, p, n);
  }
  loop_ops((int)below(&R.loop_rng, 2));
  return action_of_callback();
}

static cgnet_action cl_close(cgnet_conn *c, int reason) {
  rec *r = rec_of(c);
  if (!r) return CGNET_NONE;
  if (atomic_fetch_add(&r->closes, 1) != 0) TU_CHECK(!"on_close ran twice for one conn");
  atomic_store(&r->reason, reason);
  TU_CHECK(!r->closed_seen);
  TU_CHECK(reason != 0);
  r->closed_seen = true;
  r->timer = NULL; /* freed with the conn */
  loop_ops((int)below(&R.loop_rng, 3));
  return action_of_callback();
}

static const cgnet_handler cl_handler = {
    .on_open = cl_open, .on_traffic = cl_traffic, .on_close = cl_close};

/* ---- tasks on the client's loop ---------------------------------------------------------
 */

static cgnet_action driver_fn(cgnet_timer *t, void *ud) {
  (void)t;
  (void)ud;
  loop_ops(1);
  return action_of_callback();
}

static void start_task(cgnet_loop *loop, void *ud) {
  (void)ud;
  R.driver = cgnet_timer_new(loop, driver_fn, NULL);
  TU_CHECK(R.driver != NULL);
  if (R.driver) cgnet_timer_start(R.driver, 1, 1);
}

static void ops_task(cgnet_loop *loop, void *ud) {
  (void)loop;
  loop_ops((int)(intptr_t)ud);
}

/* The operations are over: let every open conn drain (resume, no idle timeout, a wake for
 * bytes left unread) so that its echo can complete. */
static void quiesce_task(cgnet_loop *loop, void *ud) {
  (void)loop;
  (void)ud;
  if (R.driver) cgnet_timer_free(R.driver);
  R.driver = NULL;
  for (int i = 0; i < MAX_LOOP_TIMERS; i++)
    if (R.ltimers[i]) {
      cgnet_timer_free(R.ltimers[i]);
      R.ltimers[i] = NULL;
    }
  int n = rec_count();
  for (int i = 0; i < n; i++) {
    rec *r = &R.recs[i];
    if (!r->loop_conn || !r->open_seen || r->closed_seen) continue;
    if (r->timer) cgnet_timer_stop(r->timer);
    TU_CHECK_EQ(cgnet_conn_set_idle_timeout(r->loop_conn, 0), 0);
    TU_CHECK_EQ(cgnet_conn_resume_read(r->loop_conn), 0);
    r->paused = false;
    int rc = cgnet_conn_wake(r->loop_conn);
    TU_CHECK(rc == 0 || rc == CGNET_ECLOSED);
  }
  atomic_store(&R.quiesced, 1);
}

/* ---- worker threads ---------------------------------------------------------------------
 */

typedef struct worker {
  pthread_t th;
  int index;
  uint64_t rng;
  cgnet_conn *held[4]; /* extra references it took */
} worker;

static rec *pick_published(uint64_t *rng, cgnet_conn **c) {
  int n = rec_count();
  for (int tries = 0; n > 0 && tries < 8; tries++) {
    rec *r = &R.recs[below(rng, (unsigned)n)];
    if ((*c = atomic_load(&r->conn)) != NULL) return r;
  }
  return NULL;
}

static void worker_ref_op(worker *w, cgnet_conn *c) {
  int slot = (int)below(&w->rng, 4);
  if (w->held[slot]) {
    cgnet_conn_unref(w->held[slot]);
    w->held[slot] = NULL;
  } else {
    w->held[slot] = cgnet_conn_ref(c); /* the run holds one: any thread may add more */
  }
}

/* Stop from a worker: blocks until the engine has stopped (not a loop thread). */
static void worker_stop(worker *w) {
  if (!R.allow_stop || below(&w->rng, 30) != 0) return;
  atomic_store(&R.stopped, 1);
  cgnet_engine_stop(R.cl_eng, below(&w->rng, 50));
}

static void worker_op(worker *w) {
  unsigned k = below(&w->rng, 64);
  if (k < 6) {
    (void)create_one(&w->rng);
    return;
  }
  if (k < 11) {
    int rc = cgnet_loop_execute(cgnet_engine_loop(R.cl_eng, 0), ops_task,
                                (void *)(intptr_t)(1 + below(&w->rng, 3)));
    TU_CHECK(rc == 0 || rc == CGNET_ESHUTDOWN);
    return;
  }
  if (k == 11) {
    worker_stop(w);
    return;
  }
  cgnet_conn *c;
  rec *r = pick_published(&w->rng, &c);
  if (!r) return;
  int rc = 0;
  if (k < 30) {
    async_write(&w->rng, r, k >= 24);
  } else if (k < 33) {
    rc = cgnet_conn_async_close(c, below(&w->rng, 2) ? close_done : NULL, NULL);
  } else if (k < 42) {
    rc = cgnet_conn_wake(c);
  } else if (k < 50) {
    worker_ref_op(w, c);
  } else {
    TU_CHECK(cgnet_conn_client(c) == R.cl);
    TU_CHECK(cgnet_conn_loop(c) == cgnet_engine_loop(R.cl_eng, 0));
    (void)cgnet_conn_is_closed(c);
  }
  TU_CHECK(rc == 0 || rc == CGNET_ECLOSED);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  for (int i = 0; i < THREAD_OPS && atomic_load(&R.phase) == PH_RUN; i++) {
    if (tu_now_ms() >= R.deadline_ms) break;
    worker_op(w);
    if (below(&w->rng, 4) == 0) usleep(below(&w->rng, 400));
  }
  for (int i = 0; i < 4; i++)
    if (w->held[i]) cgnet_conn_unref(w->held[i]);
  return NULL;
}

/* During the final stop: any-thread calls on conns that are closing or gone. */
typedef struct racer {
  pthread_t th;
  uint64_t rng;
  atomic_int stop;
} racer;

static void *racer_main(void *arg) {
  racer *x = arg;
  for (int i = 0; i < 2000 && !atomic_load(&x->stop); i++) {
    cgnet_conn *c;
    rec *r = pick_published(&x->rng, &c);
    if (!r) break;
    int rc = 0;
    switch (below(&x->rng, 4)) {
    case 0:
      async_write(&x->rng, r, false);
      break;
    case 1:
      rc = cgnet_conn_async_close(c, close_done, NULL);
      break;
    case 2:
      rc = cgnet_conn_wake(c);
      break;
    default:
      cgnet_conn_unref(cgnet_conn_ref(c));
    }
    TU_CHECK(rc == 0 || rc == CGNET_ECLOSED);
    if (below(&x->rng, 8) == 0) usleep(100);
  }
  return NULL;
}

/* ---- one run ------------------------------------------------------------------------- */

static void run_setup(uint64_t seed, uint64_t run_budget_ms) {
  rec *recs = R.recs;
  memset(&R, 0, sizeof R);
  R.recs = recs;
  for (int i = 0; i < MAX_RECS; i++) {
    uint8_t *sent = R.recs[i].sent;
    memset(&R.recs[i], 0, sizeof R.recs[i]);
    R.recs[i].sent = sent;
    R.recs[i].magic = REC_MAGIC;
    R.recs[i].id = i;
  }
  R.seed = seed;
  uint64_t cfg = seed_state(seed, 0);
  R.attached = below(&cfg, 3) == 0;
  R.edge = below(&cfg, 2) == 0;
  R.allow_stop = below(&cfg, 4) == 0;
  R.late_unref = below(&cfg, 2) == 0;
  R.loop_rng = seed_state(seed, 1);
  R.srv_rng = seed_state(seed, 2);
  R.loop_ops_left = LOOP_OPS;
  atomic_store(&R.loop_busy, 1);
  R.deadline_ms = tu_now_ms() + run_budget_ms;
  const char *env = getenv("CGNET_LIFECYCLE_THREADS");
  R.nthreads = env ? atoi(env) : 2;
  if (R.nthreads < 0) R.nthreads = 0;
  if (R.nthreads > MAX_THREADS) R.nthreads = MAX_THREADS;
}

static void start_engines(void) {
  snprintf(R.dir, sizeof R.dir, "/tmp/cgnet-lifecycle-XXXXXX");
  assert_non_null(mkdtemp(R.dir));
  char listen_unix[128];
  snprintf(listen_unix, sizeof listen_unix, "unix://%s/echo.sock", R.dir);
  snprintf(R.unix_addr, sizeof R.unix_addr, "%s", listen_unix);
  snprintf(R.missing_addr, sizeof R.missing_addr, "unix://%s/missing.sock", R.dir);
  const char *addrs[] = {"tcp://127.0.0.1:0", listen_unix};
  cgnet_options so = {.num_loops = 1, .edge_triggered = R.edge};
  assert_rc(tu_server_start_at(&R.srv, &srv_handler, addrs, 2, &so), 0);
  R.port = R.srv.port;
  snprintf(R.tcp_addr, sizeof R.tcp_addr, "tcp://127.0.0.1:%d", R.port);

  int lport = 0, lfd = tu_listen_any(&lport); /* a port nobody listens on once closed */
  assert_true(lfd >= 0);
  close(lfd);
  snprintf(R.refused_addr, sizeof R.refused_addr, "tcp://127.0.0.1:%d", lport);

  assert_rc(cgnet_client_new_on(R.srv.eng, &srv_handler, NULL, &R.echo_cl), 0);
  if (R.attached) {
    assert_rc(cgnet_client_new_on(R.srv.eng, &cl_handler, NULL, &R.cl), 0);
  } else {
    cgnet_options co = {.num_loops = 1, .edge_triggered = R.edge};
    assert_rc(cgnet_client_new(&cl_handler, &co, &R.cl), 0);
  }
  R.cl_eng = cgnet_client_engine(R.cl);
  assert_rc(cgnet_loop_execute(cgnet_engine_loop(R.cl_eng, 0), start_task, NULL), 0);
}

static int loop_idle(void *arg) {
  (void)arg;
  return atomic_load(&R.loop_busy) == 0 || atomic_load(&R.stopped) ||
         tu_now_ms() >= R.deadline_ms;
}

static int quiesced(void *arg) {
  (void)arg;
  return atomic_load(&R.quiesced);
}

/* Every created conn has closed, or (no early stop) is open with its echo complete. */
static bool rec_settled(rec *r) {
  if (!atomic_load(&r->created)) return true;
  if (atomic_load(&r->closes) > 0) return true;
  if (atomic_load(&R.stopped)) return false;
  return atomic_load(&r->opens) == 1 &&
         atomic_load(&r->recv_len) == atomic_load(&r->sent_len) &&
         atomic_load(&r->reserved) == atomic_load(&r->sent_len);
}

static int all_settled(void *arg) {
  (void)arg;
  int n = rec_count();
  for (int i = 0; i < n; i++)
    if (!rec_settled(&R.recs[i])) return 0;
  return 1;
}

static void report_unsettled(void) {
  int n = rec_count();
  for (int i = 0; i < n; i++) {
    rec *r = &R.recs[i];
    if (rec_settled(r)) continue;
    fprintf(stderr,
            "lifecycle seed %#llx: rec %d (%s) did not settle: opens %d closes %d sent %zu "
            "recv %zu reserved %zu\n",
            (unsigned long long)R.seed, i, kind_names[r->kind], atomic_load(&r->opens),
            atomic_load(&r->closes), atomic_load(&r->sent_len), atomic_load(&r->recv_len),
            atomic_load(&r->reserved));
  }
}

typedef struct free_job {
  cgnet_client *cl;
  uint64_t timeout_ms;
} free_job;

static void *free_client_thread(void *arg) {
  free_job *j = arg;
  cgnet_client_free(j->cl, j->timeout_ms);
  free(j);
  return NULL;
}

/* cgnet_client_free within FREE_MS, or fail the test. */
static void free_client_bounded(cgnet_client *cl, uint64_t timeout_ms) {
  free_job *j = malloc(sizeof *j);
  assert_non_null(j);
  j->cl = cl;
  j->timeout_ms = timeout_ms;
  if (tu_run_bounded(free_client_thread, j, FREE_MS) != 0)
    fail_msg("lifecycle seed %#llx: cgnet_client_free did not return within %d ms",
             (unsigned long long)R.seed, FREE_MS);
}

typedef struct stop_job {
  cgnet_engine *eng;
  uint64_t timeout_ms;
} stop_job;

static void *stop_thread(void *arg) {
  stop_job *j = arg;
  cgnet_engine_stop(j->eng, j->timeout_ms);
  return NULL;
}

/* Join a thread within FREE_MS, or fail the test. */
static void join_bounded(pthread_t th, const char *what) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += FREE_MS / 1000;
  if (pthread_timedjoin_np(th, NULL, &ts) != 0)
    fail_msg("lifecycle seed %#llx: %s did not return within %d ms",
             (unsigned long long)R.seed, what, FREE_MS);
}

static void unref_all(void) {
  int n = rec_count();
  for (int i = 0; i < n; i++) {
    cgnet_conn *c = atomic_exchange(&R.recs[i].conn, NULL);
    if (c) cgnet_conn_unref(c);
  }
}

/* The final stop, with any-thread calls racing it: the client's own engine is stopped
 * from another thread (the calls stop before its free, which frees the engine); an
 * attached client is freed while the calls go on, and in some runs while another thread
 * stops the engine. */
static void final_stop(void) {
  uint64_t rng = seed_state(R.seed, 99);
  racer x = {.rng = seed_state(R.seed, 98)};
  atomic_init(&x.stop, 0);
  assert_int_equal(pthread_create(&x.th, NULL, racer_main, &x), 0);
  stop_job sj = {.eng = R.cl_eng, .timeout_ms = below(&rng, 3) * 50};
  pthread_t st;
  bool stopper = !R.attached || below(&rng, 3) == 0;
  if (stopper) assert_int_equal(pthread_create(&st, NULL, stop_thread, &sj), 0);
  if (R.attached) free_client_bounded(R.cl, below(&rng, 2) * 100);
  if (stopper) join_bounded(st, "cgnet_engine_stop");
  atomic_store(&x.stop, 1);
  join_bounded(x.th, "the racing thread");

  if (R.attached) {
    unref_all(); /* before the engine is freed */
  } else if (R.late_unref) {
    free_client_bounded(R.cl, below(&rng, 2) * 100);
    unref_all(); /* references of a freed client's conns never dangle */
  } else {
    unref_all();
    free_client_bounded(R.cl, below(&rng, 2) * 100);
  }
  R.cl = NULL;
  free_client_bounded(R.echo_cl, 100);
  R.echo_cl = NULL;
  if (tu_server_stop(&R.srv, 100) == -ETIMEDOUT)
    fail_msg("lifecycle seed %#llx: the server engine did not stop",
             (unsigned long long)R.seed);
}

static void check_recs(void) {
  int n = rec_count(), created = 0, opened = 0, checked = 0;
  for (int i = 0; i < n; i++) {
    rec *r = &R.recs[i];
    if (!atomic_load(&r->created)) continue;
    created++;
    int opens = atomic_load(&r->opens), closes = atomic_load(&r->closes);
    opened += opens;
    if (closes != 1 || opens > 1)
      fprintf(stderr,
              "lifecycle seed %#llx: rec %d (%s): opens %d, closes %d (reason %s)\n",
              (unsigned long long)R.seed, i, kind_names[r->kind], opens, closes,
              cgnet_err_name(atomic_load(&r->reason)));
    TU_CHECK_EQ(closes, 1);
    TU_CHECK(opens <= 1);
    TU_CHECK(atomic_load(&r->recv_len) <= atomic_load(&r->sent_len));
    if (atomic_load(&r->sent_len) && atomic_load(&r->recv_len) == atomic_load(&r->sent_len))
      checked++;
  }
  printf("lifecycle seed %#llx: %d conns (%d opened), %d echoed in full%s\n",
         (unsigned long long)R.seed, created, opened, checked,
         atomic_load(&R.stopped) ? ", stopped early" : "");
  TU_CHECK_EQ(atomic_load(&R.srv_opens), atomic_load(&R.srv_closes_opened));
  TU_CHECK_EQ(atomic_load(&R.srv_bad), 0);
}

static void run_one(uint64_t seed, uint64_t run_budget_ms) {
  run_setup(seed, run_budget_ms);
  printf("lifecycle: seed %#llx (%s client, %s, %d threads%s; replay with "
         "CGNET_LIFECYCLE_SEED=%#llx)\n",
         (unsigned long long)seed, R.attached ? "attached" : "own-loop",
         R.edge ? "edge" : "level", R.nthreads, R.allow_stop ? ", early stop" : "",
         (unsigned long long)seed);
  fflush(stdout);
  int fds_before = tu_count_fds();
  start_engines();

  worker workers[MAX_THREADS];
  for (int i = 0; i < R.nthreads; i++) {
    workers[i] = (worker){.index = i, .rng = seed_state(seed, 10 + (uint64_t)i)};
    assert_int_equal(pthread_create(&workers[i].th, NULL, worker_main, &workers[i]), 0);
  }
  for (int i = 0; i < R.nthreads; i++)
    pthread_join(workers[i].th, NULL);
  (void)tu_wait_until(loop_idle, NULL, (int)run_budget_ms + 1000);
  atomic_store(&R.phase, PH_QUIESCE);

  if (!atomic_load(&R.stopped) &&
      cgnet_loop_execute(cgnet_engine_loop(R.cl_eng, 0), quiesce_task, NULL) == 0)
    (void)tu_wait_until(quiesced, NULL, SETTLE_MS);
  if (!tu_wait_until(all_settled, NULL, SETTLE_MS)) {
    report_unsettled();
    TU_CHECK(!"a conn neither closed nor echoed what it sent");
  }
  final_stop();
  check_recs();
  char path[128];
  snprintf(path, sizeof path, "%s/echo.sock", R.dir);
  unlink(path); /* normally removed by the engine already */
  rmdir(R.dir);
  int fds_after = tu_count_fds();
  if (fds_after != fds_before)
    fprintf(stderr, "lifecycle seed %#llx: %d descriptors before, %d after\n",
            (unsigned long long)seed, fds_before, fds_after);
  TU_CHECK_EQ(fds_after, fds_before);
  int failed = tu_checks_failed();
  if (failed)
    fail_msg(
        "lifecycle seed %#llx: %d check(s) failed (replay: CGNET_LIFECYCLE_SEED=%#llx)",
        (unsigned long long)seed, failed, (unsigned long long)seed);
}

/* ---- the test
 * ---------------------------------------------------------------------------- */

static const uint64_t fixed_seeds[] = {1, 2, 3, 0x5eed, 0xc0ffee, 0xdeadbeef, 42, 7777};
#define NFIXED (sizeof fixed_seeds / sizeof fixed_seeds[0])

static void test_random_sequences(void **state) {
  (void)state;
  const char *env = getenv("CGNET_LIFECYCLE_BUDGET_MS");
  if (env && atoll(env) > 0) budget_ms_total = (uint64_t)atoll(env);
  env = getenv("CGNET_LIFECYCLE_SEED");
  if (env && *env) {
    run_one(strtoull(env, NULL, 0), budget_ms_total);
    return;
  }
  uint64_t start = tu_now_ms();
  uint64_t per_run = budget_ms_total / (NFIXED + 1);
  for (size_t i = 0; i < NFIXED; i++)
    run_one(fixed_seeds[i], per_run);
  uint64_t spent = tu_now_ms() - start;
  uint64_t left = spent < budget_ms_total ? budget_ms_total - spent : 0;
  run_one((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32),
          left > per_run ? left : per_run);
}

int main(void) {
  tu_apply_test_filter();
  tu_raise_nofile(4096);
  R.recs = calloc(MAX_RECS, sizeof *R.recs);
  if (!R.recs) return 1;
  for (int i = 0; i < MAX_RECS; i++) {
    R.recs[i].sent = malloc(MAX_SENT);
    if (!R.recs[i].sent) return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_random_sequences, tu_setup, tu_teardown),
  };
  int rc = cmocka_run_group_tests_name("test_lifecycle", tests, NULL, NULL);
  for (int i = 0; i < MAX_RECS; i++)
    free(R.recs[i].sent);
  free(R.recs);
  return rc;
}
