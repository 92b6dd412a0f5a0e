/*
 * Integration tests of the core engine over real loopback sockets: echo equality across
 * loop counts, trigger modes and load balancers; every action from every callback;
 * on_boot (a SHUTDOWN or a stop from it); a stop from a loop thread; the ticker; stopping
 * with clients connected (no fd leak); half-close delivery; close reasons; address and
 * option errors; several listeners; on_pre_write.
 *
 * Callbacks run on loop threads: they record into atomics (tu_tracker) and TU_CHECK, and
 * the test thread asserts afterwards.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/support.h"

static const char GREETING[] = "hello\n";
#define GREET_LEN (sizeof(GREETING) - 1)

#define NCLIENTS 10
/* 1 MiB per client; half under TSan (it is fast enough for more than TU_PAYLOAD_DIV). */
#define ECHO_BYTES ((size_t)(1u << 20) / (TU_TSAN ? 2 : 1))

/* ---- shared callbacks ------------------------------------------------------------------
 */

static cgnet_action greet_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  TU_CHECK(cgnet_loop_is_current(cgnet_conn_loop(c)));
  TU_CHECK_EQ(cgnet_conn_write(c, GREETING, GREET_LEN), 0);
  return CGNET_NONE;
}

static cgnet_action track_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  return CGNET_NONE;
}

static cgnet_action track_on_close(cgnet_conn *c, int reason) {
  tu_tracker_close(c, reason);
  return CGNET_NONE;
}

static void track_on_shutdown(cgnet_engine *eng) {
  atomic_fetch_add(&tu_tracker_of_engine(eng)->shutdowns, 1);
}

static void track_on_pre_write(cgnet_conn *c) {
  tu_tracker *t = tu_tracker_of_conn(c);
  atomic_fetch_add(&t->prewrites, 1);
  if (cgnet_conn_outbound_buffered(c) > 0) atomic_fetch_add(&t->prewrite_pending, 1);
}

static cgnet_handler echo_handler(tu_tracker *t) {
  cgnet_handler h = {.ud = t,
                     .on_open = greet_on_open,
                     .on_traffic = tu_echo_tracked,
                     .on_close = track_on_close,
                     .on_shutdown = track_on_shutdown,
                     .on_pre_write = track_on_pre_write};
  return h;
}

/* Fail unless the tracker saw exactly `n` conns, each opened and closed once. */
static void assert_tracker_clean(tu_tracker *t, int n) {
  if (atomic_load(&t->opens) != n || atomic_load(&t->closes) != n)
    fail_msg("opens=%d closes=%d, want %d each", atomic_load(&t->opens),
             atomic_load(&t->closes), n);
  assert_int_equal(atomic_load(&t->bad_ctx), 0);
  assert_int_equal(atomic_load(&t->double_close), 0);
  assert_true(tu_tracker_all_closed_once(t));
}

/* Every closed slot has `reason`. */
static void assert_all_reasons(tu_tracker *t, int n, int reason) {
  for (int i = 0; i < n; i++) {
    int r = atomic_load(&t->slots[i].reason);
    if (r != reason)
      fail_msg("conn %d closed with %d (%s), want %s", i, r, cgnet_err_name(r),
               cgnet_err_name(reason));
  }
}

/* ---- echo equality ----------------------------------------------------------------------
 */

typedef struct echo_cfg {
  int loops, et, reuse_port;
  cgnet_lb lb;
} echo_cfg;

static void test_echo(void **state) {
  const echo_cfg *cfg = *state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  cgnet_options o = {.num_loops = cfg->loops,
                     .edge_triggered = cfg->et,
                     .lb = cfg->lb,
                     .reuse_port = cfg->reuse_port};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  assert_true(srv.port > 0);
  assert_int_equal(cgnet_engine_num_loops(srv.eng), cfg->loops);
  assert_int_equal(cgnet_engine_num_listeners(srv.eng), 1);
  assert_ptr_equal(cgnet_engine_userdata(srv.eng), t);

  const size_t len = ECHO_BYTES, first = 4096;
  tu_echo_client cl[NCLIENTS];
  uint8_t *tx[NCLIENTS], *rx[NCLIENTS];
  for (int i = 0; i < NCLIENTS; i++) {
    tx[i] = malloc(len);
    rx[i] = malloc(GREET_LEN + len);
    assert_non_null(tx[i]);
    assert_non_null(rx[i]);
    tu_pattern_fill(tx[i], len, (uint64_t)(1000 * cfg->loops + 100 * cfg->et + i), 0);
    int fd = tu_connect4(srv.port);
    assert_true(fd >= 0);
    /* Send at once, then read: the greeting must come before any echoed byte. Clients
     * are added one at a time so that the balancers' choices are deterministic. */
    assert_rc(tu_send_all(fd, tx[i], first, TU_TIMEOUT_MS), 0);
    assert_rc(tu_recv_exact(fd, rx[i], GREET_LEN, TU_TIMEOUT_MS, NULL), 0);
    assert_memory_equal(rx[i], GREETING, GREET_LEN);
    cl[i] = (tu_echo_client){.fd = fd,
                             .tx = tx[i],
                             .tx_len = len,
                             .tx_off = first,
                             .rx = rx[i],
                             .rx_len = GREET_LEN + len,
                             .rx_off = GREET_LEN};
  }
  assert_int_equal(cgnet_engine_count_connections(srv.eng), NCLIENTS);

  int rc = tu_echo_drive(cl, NCLIENTS, TU_TIMEOUT_MS);
  for (int i = 0; i < NCLIENTS && rc != 0; i++)
    if (cl[i].err || cl[i].rx_off < cl[i].rx_len)
      fprintf(stderr, "client %d: err %d, sent %zu/%zu, received %zu/%zu\n", i, cl[i].err,
              cl[i].tx_off, cl[i].tx_len, cl[i].rx_off, cl[i].rx_len);
  assert_rc(rc, 0);
  for (int i = 0; i < NCLIENTS; i++) {
    size_t d = tu_first_diff(rx[i] + GREET_LEN, tx[i], len);
    if (d != SIZE_MAX) fail_msg("client %d: echo differs at byte %zu of %zu", i, d, len);
  }

  /* Placement: every conn on a real loop; rr and least-conn spread them evenly. */
  int per_loop[8] = {0};
  for (int i = 0; i < NCLIENTS; i++) {
    int l = atomic_load(&t->slots[i].loop);
    assert_in_range(l, 0, cfg->loops - 1);
    per_loop[l]++;
  }
  if (cfg->loops > 1 && !cfg->reuse_port && cfg->lb != CGNET_LB_SOURCE_HASH) {
    int lo = NCLIENTS, hi = 0;
    for (int l = 0; l < cfg->loops; l++) {
      lo = per_loop[l] < lo ? per_loop[l] : lo;
      hi = per_loop[l] > hi ? per_loop[l] : hi;
    }
    if (hi - lo > 1)
      fail_msg("lb %d put %d..%d conns per loop (want a spread of at most 1)", cfg->lb, lo,
               hi);
  }

  for (int i = 0; i < NCLIENTS; i++)
    close(cl[i].fd);
  if (!tu_wait_conns(srv.eng, 0, TU_TIMEOUT_MS))
    fail_msg("count_connections stuck at %zu", cgnet_engine_count_connections(srv.eng));
  assert_true(tu_wait_atomic_ge(&t->closes, NCLIENTS, TU_TIMEOUT_MS));
  assert_tracker_clean(t, NCLIENTS);
  assert_all_reasons(t, NCLIENTS, CGNET_EOF);
  assert_true(atomic_load(&t->prewrites) > 0);
  assert_true(atomic_load(&t->prewrite_pending) > 0);

  assert_rc(tu_server_stop(&srv, 1000), 0);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_no_check_failures();
  for (int i = 0; i < NCLIENTS; i++) {
    free(tx[i]);
    free(rx[i]);
  }
  tu_tracker_free(t);
}

/* ---- actions from callbacks -------------------------------------------------------------
 */

typedef enum site { AT_OPEN, AT_TRAFFIC, AT_TICK, AT_CLOSE } site;

typedef struct action_cfg {
  site where;
  cgnet_action act;
} action_cfg;

static const action_cfg *cfg_of(tu_tracker *t) {
  return t->user;
}

static cgnet_action act_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  const action_cfg *cfg = cfg_of(tu_tracker_of_conn(c));
  return cfg->where == AT_OPEN ? cfg->act : CGNET_NONE;
}

static cgnet_action act_on_traffic(cgnet_conn *c) {
  tu_echo_tracked(c);
  const action_cfg *cfg = cfg_of(tu_tracker_of_conn(c));
  return cfg->where == AT_TRAFFIC ? cfg->act : CGNET_NONE;
}

static cgnet_action act_on_tick(cgnet_engine *eng, uint64_t *next_delay_ms) {
  tu_tracker *t = tu_tracker_of_engine(eng);
  int n = atomic_fetch_add(&t->ticks, 1) + 1;
  *next_delay_ms = 10;
  const action_cfg *cfg = cfg_of(t);
  if (cfg->where != AT_TICK) return CGNET_NONE;
  if (cfg->act == CGNET_CLOSE) return CGNET_CLOSE; /* ignored: ticks go on */
  /* SHUTDOWN once a client is connected, so a live conn sees the stop. */
  return (n >= 3 && atomic_load(&t->opens) >= 1) ? cfg->act : CGNET_NONE;
}

static cgnet_action act_on_close(cgnet_conn *c, int reason) {
  tu_tracker_close(c, reason);
  const action_cfg *cfg = cfg_of(tu_tracker_of_conn(c));
  return cfg->where == AT_CLOSE ? cfg->act : CGNET_NONE;
}

/* The client sends "ping" and checks that it comes back. */
static void assert_ping(int fd) {
  char buf[4];
  assert_rc(tu_send_all(fd, "ping", 4, TU_TIMEOUT_MS), 0);
  assert_rc(tu_recv_exact(fd, buf, 4, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(buf, "ping", 4);
}

/* EOF (or a reset, when the server closed with unread input). With allow_data, bytes
 * before the EOF are fine. */
static void assert_eof(int fd, int allow_data) {
  size_t extra = 0;
  int r = tu_expect_eof(fd, TU_TIMEOUT_MS, &extra);
  if (r != 0 && r != -ECONNRESET) fail_msg("expected EOF, got %d", r);
  if (extra > 0 && !allow_data) fail_msg("%zu unexpected bytes before EOF", extra);
}

/* What each case expects: conns served, on_close calls before any stop, each reason. */
typedef struct action_expect {
  int nconns, closes_before_stop;
  int reason[2];
} action_expect;

static action_expect expect_for(const action_cfg *cfg) {
  int sd = cfg->act == CGNET_SHUTDOWN;
  switch (cfg->where) {
  case AT_OPEN:
    return sd ? (action_expect){1, 0, {CGNET_ESHUTDOWN, 0}}
              : (action_expect){2, 2, {CGNET_ELOCALCLOSE, CGNET_ELOCALCLOSE}};
  case AT_TRAFFIC:
    return sd ? (action_expect){2, 0, {CGNET_ESHUTDOWN, CGNET_ESHUTDOWN}}
              : (action_expect){2, 2, {CGNET_ELOCALCLOSE, CGNET_ELOCALCLOSE}};
  case AT_TICK:
    return (action_expect){1, 0, {CGNET_ESHUTDOWN, 0}};
  case AT_CLOSE:
  default:
    return (action_expect){2, 1, {CGNET_EOF, CGNET_ESHUTDOWN}};
  }
}

static void test_action(void **state) {
  const action_cfg *cfg = *state;
  const action_expect ex = expect_for(cfg);
  const int stops_itself = cfg->act == CGNET_SHUTDOWN;
  tu_tracker *t = tu_tracker_new();
  t->user = (void *)cfg;
  cgnet_handler h = {.ud = t,
                     .on_open = act_on_open,
                     .on_traffic = act_on_traffic,
                     .on_close = act_on_close,
                     .on_shutdown = track_on_shutdown};
  if (cfg->where == AT_TICK) h.on_tick = act_on_tick;
  cgnet_options o = {.num_loops = 2, .ticker = cfg->where == AT_TICK};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int a = tu_connect4(srv.port), b = -1;
  assert_true(a >= 0);
  const int a_port = tu_local_port(a);
  int b_port = -1;

  switch (cfg->where) {
  case AT_OPEN:
    assert_eof(a, 0);
    if (!stops_itself) { /* every conn is closed at once; the engine keeps serving */
      b = tu_connect4(srv.port);
      assert_true(b >= 0);
      assert_eof(b, 0);
    }
    break;
  case AT_TRAFFIC:
    if (stops_itself) {
      b = tu_connect4(srv.port); /* an idle bystander is closed by the stop too */
      assert_true(b >= 0);
      assert_true(tu_wait_atomic_ge(&t->opens, 2, TU_TIMEOUT_MS));
      assert_rc(tu_send_all(a, "ping", 4, TU_TIMEOUT_MS), 0);
      assert_eof(a, 1);
      assert_eof(b, 0);
    } else {
      assert_ping(a); /* written before the CLOSE: it still goes out */
      assert_eof(a, 0);
      b = tu_connect4(srv.port);
      assert_true(b >= 0);
      assert_ping(b);
      assert_eof(b, 0);
    }
    break;
  case AT_TICK:
    assert_true(tu_wait_atomic_ge(&t->opens, 1, TU_TIMEOUT_MS));
    if (stops_itself) {
      assert_eof(a, 0);
    } else { /* CLOSE from on_tick is ignored: ticks and traffic go on */
      int base = atomic_load(&t->ticks);
      assert_true(tu_wait_atomic_ge(&t->ticks, base + 3, TU_TIMEOUT_MS));
      assert_ping(a);
    }
    break;
  case AT_CLOSE:
    b = tu_connect4(srv.port);
    assert_true(b >= 0);
    b_port = tu_local_port(b);
    assert_true(tu_wait_atomic_ge(&t->opens, 2, TU_TIMEOUT_MS));
    close(a); /* on_close(a, EOF) returns the action */
    a = -1;
    if (stops_itself) {
      assert_eof(b, 0);
    } else { /* ignored: b is still served */
      assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
      assert_ping(b);
    }
    break;
  }

  if (stops_itself) {
    assert_true(tu_wait_atomic_ge(&t->shutdowns, 1, TU_TIMEOUT_MS));
    assert_rc(tu_server_wait(&srv, TU_TIMEOUT_MS), 0);
  } else {
    if (!tu_wait_atomic_ge(&t->closes, ex.closes_before_stop, TU_TIMEOUT_MS))
      fail_msg("closes=%d before the stop, want %d", atomic_load(&t->closes),
               ex.closes_before_stop);
    assert_int_equal(atomic_load(&t->closes), ex.closes_before_stop);
    assert_int_equal(atomic_load(&t->shutdowns), 0);
    assert_rc(tu_server_stop(&srv, 1000), 0);
    /* A client still connected when the engine stopped sees EOF. */
    if (cfg->where == AT_TICK) assert_eof(a, 0);
    if (cfg->where == AT_CLOSE) assert_eof(b, 0);
  }
  if (a >= 0) close(a);
  if (b >= 0) close(b);

  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_tracker_clean(t, ex.nconns);
  for (int i = 0; i < ex.nconns; i++) {
    /* Conns on different loops may open in either order: find a and b by port. */
    tu_slot *s = &t->slots[i];
    if (cfg->where == AT_CLOSE) s = tu_tracker_find_port(t, i == 0 ? a_port : b_port);
    assert_non_null(s);
    int r = atomic_load(&s->reason);
    if (r != ex.reason[i])
      fail_msg("conn %d closed with %d (%s), want %s", i, r, cgnet_err_name(r),
               cgnet_err_name(ex.reason[i]));
  }
  if (cfg->where == AT_TICK) assert_true(atomic_load(&t->ticks) >= 3);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- on_boot
 * ------------------------------------------------------------------------------ */

static pthread_t boot_expected_thread;
static atomic_int boot_on_right_thread;
static atomic_int boot_port;

static cgnet_action boot_shutdown(cgnet_engine *eng) {
  tu_tracker *t = tu_tracker_of_engine(eng);
  atomic_fetch_add(&t->boots, 1);
  atomic_store(&boot_on_right_thread, pthread_equal(pthread_self(), boot_expected_thread));
  atomic_store(&boot_port, cgnet_engine_listen_port(eng, 0));
  return CGNET_SHUTDOWN;
}

static void test_boot_shutdown(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  h.on_boot = boot_shutdown;
  boot_expected_thread = pthread_self();
  atomic_store(&boot_on_right_thread, 0);
  tu_server srv;
  cgnet_options o = {.num_loops = 2};
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  assert_rc(tu_server_wait(&srv, TU_TIMEOUT_MS), 0);
  assert_int_equal(atomic_load(&t->boots), 1);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_int_equal(atomic_load(&t->opens), 0);
  assert_true(atomic_load(&boot_on_right_thread));
  assert_true(atomic_load(&boot_port) > 0);
  /* The listener is gone: nobody is served. */
  int fd = tu_connect(AF_INET, atomic_load(&boot_port), 0, 2000);
  if (fd >= 0) {
    close(fd);
    fail_msg("connected to a stopped engine's port");
  }
  assert_no_check_failures();
  tu_tracker_free(t);
}

typedef struct run_job {
  const cgnet_handler *h;
  const cgnet_options *o;
  int rc;
  uint64_t elapsed_ms;
} run_job;

static void *run_thread(void *arg) {
  run_job *j = arg;
  const char *addr[] = {"tcp://127.0.0.1:0"};
  uint64_t t0 = tu_now_ms();
  j->rc = cgnet_run(j->h, addr, 1, j->o);
  j->elapsed_ms = tu_now_ms() - t0;
  return NULL;
}

static void test_boot_shutdown_run(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  h.on_boot = boot_shutdown;
  run_job *j = calloc(1, sizeof(*j)); /* outlives an abandoned thread */
  j->h = &h;
  j->rc = 1;
  assert_rc(tu_run_bounded(run_thread, j, TU_TIMEOUT_MS), 0);
  assert_rc(j->rc, 0);
  assert_int_equal(atomic_load(&t->boots), 1);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_int_equal(atomic_load(&t->opens), 0);
  free(j);
  tu_tracker_free(t);
}

/* cgnet_engine_stop from on_boot: on_boot runs on the thread that called start, before
 * any loop thread exists, so the stop must only be requested there (waiting would wait
 * for loops that have not started). The engine then stops cleanly by itself. */
static atomic_int boot_stop_rc, boot_wait_rc;

static cgnet_action boot_stop(cgnet_engine *eng) {
  tu_tracker *t = tu_tracker_of_engine(eng);
  atomic_fetch_add(&t->boots, 1);
  atomic_store(&boot_stop_rc, cgnet_engine_stop(eng, 0));
  atomic_store(&boot_wait_rc, cgnet_engine_wait(eng)); /* would wait for itself */
  return CGNET_NONE;
}

typedef struct start_job {
  const cgnet_handler *h;
  const cgnet_options *o;
  int start_rc, wait_rc;
} start_job;

static void *start_wait_free_thread(void *arg) {
  start_job *j = arg;
  const char *addr[] = {"tcp://127.0.0.1:0"};
  cgnet_engine *eng = NULL;
  j->start_rc = cgnet_engine_start(j->h, addr, 1, j->o, &eng);
  if (eng) {
    j->wait_rc = cgnet_engine_wait(eng);
    cgnet_engine_free(eng);
  }
  return NULL;
}

static void test_boot_stop(void **state) {
  (void)state;
  int fds_before = tu_count_fds();
  for (int use_run = 0; use_run <= 1; use_run++) {
    tu_tracker *t = tu_tracker_new();
    cgnet_handler h = echo_handler(t);
    h.on_boot = boot_stop;
    cgnet_options o = {.num_loops = 2};
    atomic_store(&boot_stop_rc, 1);
    atomic_store(&boot_wait_rc, 1);
    int rc;
    if (use_run) {
      run_job *j = calloc(1, sizeof(*j)); /* outlives an abandoned thread */
      *j = (run_job){.h = &h, .o = &o, .rc = 1};
      if (tu_run_bounded(run_thread, j, TU_TIMEOUT_MS) != 0)
        fail_msg("cgnet_run with a stop from on_boot did not return");
      rc = j->rc;
      free(j);
    } else {
      start_job *j = calloc(1, sizeof(*j));
      *j = (start_job){.h = &h, .o = &o, .start_rc = 1, .wait_rc = 1};
      if (tu_run_bounded(start_wait_free_thread, j, TU_TIMEOUT_MS) != 0)
        fail_msg("start/wait with a stop from on_boot did not return");
      assert_rc(j->start_rc, 0);
      rc = j->wait_rc;
      free(j);
    }
    assert_rc(rc, 0);
    assert_rc(atomic_load(&boot_stop_rc), 0);
    assert_rc(atomic_load(&boot_wait_rc), CGNET_EWRONGTHREAD);
    assert_int_equal(atomic_load(&t->boots), 1);
    assert_int_equal(atomic_load(&t->shutdowns), 1);
    assert_int_equal(atomic_load(&t->opens), 0);
    tu_tracker_free(t);
  }
  assert_int_equal(tu_count_fds(), fds_before);
  assert_no_check_failures();
}

/* cgnet_engine_stop from a loop thread requests the stop and returns: it must not wait
 * for its own loop to exit. */
static atomic_int open_stop_rc;

static cgnet_action stop_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  atomic_store(&open_stop_rc, cgnet_engine_stop(cgnet_conn_engine(c), 0));
  return CGNET_NONE;
}

static void test_stop_from_loop(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  h.on_open = stop_on_open;
  atomic_store(&open_stop_rc, 1);
  tu_server srv;
  cgnet_options o = {.num_loops = 2};
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_rc(tu_server_wait(&srv, TU_TIMEOUT_MS), 0);
  close(fd);
  assert_rc(atomic_load(&open_stop_rc), 0);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_tracker_clean(t, 1);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- ticker
 * --------------------------------------------------------------------------------- */

#define NTICKS 25
static _Atomic uint64_t tick_first_us, tick_last_us;

static cgnet_action tick25(cgnet_engine *eng, uint64_t *next_delay_ms) {
  tu_tracker *t = tu_tracker_of_engine(eng);
  TU_CHECK(cgnet_loop_is_current(cgnet_engine_loop(eng, 0)));
  int n = atomic_fetch_add(&t->ticks, 1) + 1;
  if (n == 1) atomic_store(&tick_first_us, tu_now_us());
  *next_delay_ms = 10;
  if (n >= NTICKS) {
    if (n == NTICKS) atomic_store(&tick_last_us, tu_now_us());
    return CGNET_SHUTDOWN;
  }
  return CGNET_NONE;
}

static void test_ticker(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {.ud = t, .on_tick = tick25, .on_shutdown = track_on_shutdown};
  cgnet_options o = {.num_loops = 2, .ticker = 1};
  run_job *j = calloc(1, sizeof(*j));
  j->h = &h;
  j->o = &o;
  j->rc = 1;
  assert_rc(tu_run_bounded(run_thread, j, TU_TIMEOUT_MS), 0);
  assert_rc(j->rc, 0);
  assert_int_equal(atomic_load(&t->ticks), NTICKS);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  uint64_t span_ms = (atomic_load(&tick_last_us) - atomic_load(&tick_first_us)) / 1000;
  /* 24 delays of 10 ms between the first and the last tick. */
  if (j->elapsed_ms < 240 || span_ms < 230)
    fail_msg("ticker too fast: run %llu ms, ticks span %llu ms",
             (unsigned long long)j->elapsed_ms, (unsigned long long)span_ms);
  if (j->elapsed_ms > 5000u * TU_SLOW)
    fail_msg("ticker too slow: run %llu ms", (unsigned long long)j->elapsed_ms);
  assert_no_check_failures();
  free(j);
  tu_tracker_free(t);
}

/* A tick that asks for its next one in UINT64_MAX ms ("never") gets no second tick: the
 * loop's now + delay saturates instead of wrapping around to a time already past. */
static cgnet_action tick_never(cgnet_engine *eng, uint64_t *next_delay_ms) {
  atomic_fetch_add(&tu_tracker_of_engine(eng)->ticks, 1);
  *next_delay_ms = UINT64_MAX;
  return CGNET_NONE;
}

static void test_ticker_never(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {.ud = t, .on_tick = tick_never, .on_shutdown = track_on_shutdown};
  cgnet_options o = {.ticker = 1};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  assert_true(tu_wait_atomic_ge(&t->ticks, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(200);
  assert_int_equal(atomic_load(&t->ticks), 1);
  assert_rc(tu_server_stop(&srv, 0), 0);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  tu_tracker_free(t);
}

/* ---- stop from another thread with clients connected
 * ---------------------------------------- */

#define NSTOP 100

static void test_stop_with_clients(void **state) {
  (void)state;
  assert_true(tu_raise_nofile(20000) >= 4 * NSTOP);
  int fds_before = tu_count_fds();
  assert_true(fds_before > 0);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  cgnet_options o = {.num_loops = 4};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fds[NSTOP];
  for (int i = 0; i < NSTOP; i++) {
    fds[i] = tu_connect4(srv.port);
    assert_true(fds[i] >= 0);
  }
  if (!tu_wait_conns(srv.eng, NSTOP, TU_TIMEOUT_MS))
    fail_msg("only %zu of %d conns", cgnet_engine_count_connections(srv.eng), NSTOP);
  assert_true(tu_wait_atomic_ge(&t->opens, NSTOP, TU_TIMEOUT_MS));

  assert_rc(tu_server_stop(&srv, 1000), 0);
  int eofs = 0, resets = 0;
  for (int i = 0; i < NSTOP; i++) {
    char g[GREET_LEN];
    assert_rc(tu_recv_exact(fds[i], g, GREET_LEN, TU_TIMEOUT_MS, NULL), 0);
    int r = tu_expect_eof(fds[i], TU_TIMEOUT_MS, NULL);
    if (r == 0)
      eofs++;
    else if (r == -ECONNRESET)
      resets++;
    else
      fail_msg("client %d: expected EOF, got %d", i, r);
    close(fds[i]);
  }
  assert_int_equal(eofs + resets, NSTOP);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_tracker_clean(t, NSTOP);
  assert_int_equal(tu_tracker_count_reason(t, CGNET_ESHUTDOWN), NSTOP);
  int fds_after = tu_count_fds();
  if (fds_after != fds_before)
    fail_msg("fd leak: %d open before, %d after", fds_before, fds_after);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- a peer that sends and closes at once
 * ----------------------------------------------------- */

/* Stream: 4-byte big-endian length L, then L pattern bytes of seed L. The server checks
 * the bytes as they come and writes nothing (so the client's close is a clean FIN). */
static cgnet_action sink_on_traffic(cgnet_conn *c) {
  tu_slot *s = tu_slot_of(c);
  TU_CHECK(s != NULL);
  if (!s) return CGNET_CLOSE;
  atomic_fetch_add(&s->traffic, 1);
  if (atomic_load(&s->expect) == 0) {
    if (cgnet_conn_inbound_buffered(c) < 4) return CGNET_NONE; /* keep the partial header */
    uint8_t hdr[4];
    TU_CHECK_EQ(cgnet_conn_read(c, hdr, 4), 4);
    size_t len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    atomic_store(&s->expect, len + 1);
  }
  size_t len = atomic_load(&s->expect) - 1;
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  size_t off = atomic_load(&s->bytes);
  atomic_fetch_add(&s->bad, tu_pattern_mismatches(p, n, len, off));
  atomic_store(&s->bytes, off + n);
  return CGNET_NONE;
}

static void run_send_and_close(int et) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {.ud = t,
                     .on_open = track_on_open,
                     .on_traffic = sink_on_traffic,
                     .on_close = track_on_close,
                     .on_shutdown = track_on_shutdown};
  cgnet_options o = {.num_loops = 2, .edge_triggered = et};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  const size_t sizes[] = {0, 1, 1000, 65536, 300000, ECHO_BYTES};
  const int n = (int)(sizeof(sizes) / sizeof(sizes[0]));
  for (int i = 0; i < n; i++) {
    uint8_t *buf = malloc(4 + sizes[i]);
    assert_non_null(buf);
    uint32_t be = htonl((uint32_t)sizes[i]);
    memcpy(buf, &be, 4);
    tu_pattern_fill(buf + 4, sizes[i], sizes[i], 0);
    int fd = tu_connect4(srv.port);
    assert_true(fd >= 0);
    assert_rc(tu_send_all(fd, buf, 4 + sizes[i], TU_TIMEOUT_MS), 0);
    close(fd);
    free(buf);
  }
  if (!tu_wait_atomic_ge(&t->closes, n, TU_TIMEOUT_MS))
    fail_msg("on_close ran %d times, want %d", atomic_load(&t->closes), n);
  assert_tracker_clean(t, n);
  int seen[6] = {0};
  for (int i = 0; i < n; i++) {
    tu_slot *s = &t->slots[i];
    size_t exp = atomic_load(&s->expect);
    if (exp == 0) fail_msg("conn %d: header never reached on_traffic", i);
    size_t len = exp - 1;
    int k = -1;
    for (int j = 0; j < n; j++)
      if (sizes[j] == len) k = j;
    assert_true(k >= 0);
    seen[k]++;
    if (atomic_load(&s->bytes_at_close) != len)
      fail_msg("conn of %zu bytes: on_traffic saw %zu before on_close", len,
               atomic_load(&s->bytes_at_close));
    assert_int_equal(atomic_load(&s->bad), 0);
    int r = atomic_load(&s->reason);
    if (r != CGNET_EOF)
      fail_msg("conn of %zu bytes closed with %s", len, cgnet_err_name(r));
  }
  for (int j = 0; j < n; j++)
    assert_int_equal(seen[j], 1);
  assert_rc(tu_server_stop(&srv, 1000), 0);
  assert_no_check_failures();
  tu_tracker_free(t);
}

static void test_send_and_close_level(void **state) {
  (void)state;
  run_send_and_close(0);
}

static void test_send_and_close_edge(void **state) {
  (void)state;
  run_send_and_close(1);
}

/* ---- context and close reasons
 * ------------------------------------------------------------------ */

static cgnet_action reason_on_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_peek(c, 0, &p);
  if (n == 5 && memcmp(p, "close", 5) == 0) {
    cgnet_conn_discard(c, n);
    return CGNET_CLOSE;
  }
  return tu_echo_tracked(c);
}

static void wait_closed(tu_tracker *t, int slot, int want_reason) {
  if (!tu_wait_atomic_ge(&t->slots[slot].closes, 1, TU_TIMEOUT_MS))
    fail_msg("conn %d: on_close did not run", slot);
  int r = atomic_load(&t->slots[slot].reason);
  if (r != want_reason)
    fail_msg("conn %d closed with %d (%s), want %s", slot, r, cgnet_err_name(r),
             cgnet_err_name(want_reason));
}

static void test_close_reasons(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {.ud = t,
                     .on_open = track_on_open,
                     .on_traffic = reason_on_traffic,
                     .on_close = track_on_close,
                     .on_shutdown = track_on_shutdown};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int slot = 0;

  /* Peer closes: CGNET_EOF. */
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_ping(fd);
  close(fd);
  wait_closed(t, slot++, CGNET_EOF);

  /* The server's CLOSE action: CGNET_ELOCALCLOSE, and the client sees EOF. */
  fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_ping(fd);
  assert_rc(tu_send_all(fd, "close", 5, TU_TIMEOUT_MS), 0);
  assert_eof(fd, 0);
  close(fd);
  wait_closed(t, slot++, CGNET_ELOCALCLOSE);

  /* Reset by the peer while the server waits to read: CGNET_ECONNRESET. The exchange
   * first makes sure the server has nothing unread and the client nothing unsent. */
  for (int k = 0; k < 3; k++) {
    fd = tu_connect4(srv.port);
    assert_true(fd >= 0);
    assert_ping(fd);
    tu_close_reset(fd);
    wait_closed(t, slot++, CGNET_ECONNRESET);
  }

  assert_rc(tu_server_stop(&srv, 1000), 0);
  assert_tracker_clean(t, slot);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- malformed addresses and invalid options
 * ------------------------------------------------------ */

static const cgnet_handler plain_handler = {.on_traffic = tu_echo_tracked};

static void test_bad_addresses(void **state) {
  (void)state;
  static const struct {
    const char *addr;
    int want;
  } cases[] = {
      {"tcp:/x", CGNET_EBADSCHEME},
      {"udpx://1.2.3.4:1", CGNET_EBADSCHEME},
      {"", CGNET_EBADSCHEME},
      {"127.0.0.1:80", CGNET_EBADSCHEME},
      {"tcp://127.0.0.1", CGNET_EBADPORT},
      {"tcp://127.0.0.1:", CGNET_EBADPORT},
      {"tcp://127.0.0.1:65536", CGNET_EBADPORT},
      {"tcp://127.0.0.1:8x", CGNET_EBADPORT},
      {"tcp4://[::1]:1", CGNET_EADDRFAMILY},
      {"tcp6://127.0.0.1:1", CGNET_EADDRFAMILY},
      {"tcp://[::1:1", CGNET_EBADADDR},
      {"tcp://::1:80", CGNET_EBADADDR},
  };
  int fds_before = tu_count_fds();
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    cgnet_engine *eng = NULL;
    const char *addr[] = {cases[i].addr};
    int rc = cgnet_engine_start(&plain_handler, addr, 1, NULL, &eng);
    if (rc != cases[i].want)
      fail_msg("\"%s\": got %d (%s), want %s", cases[i].addr, rc, cgnet_err_name(rc),
               cgnet_err_name(cases[i].want));
    assert_null(eng);
  }
  /* A good address followed by a bad one: the first listener must not leak. */
  {
    cgnet_engine *eng = NULL;
    const char *addr[] = {"tcp://127.0.0.1:0", "tcp:/x"};
    assert_rc(cgnet_engine_start(&plain_handler, addr, 2, NULL, &eng), CGNET_EBADSCHEME);
    assert_null(eng);
  }
  /* No addresses at all. */
  {
    cgnet_engine *eng = NULL;
    const char *addr[] = {"tcp://127.0.0.1:0"};
    assert_rc(cgnet_engine_start(&plain_handler, NULL, 0, NULL, &eng), CGNET_EINVAL);
    assert_rc(cgnet_engine_start(&plain_handler, NULL, 1, NULL, &eng), CGNET_EINVAL);
    assert_rc(cgnet_engine_start(&plain_handler, addr, 0, NULL, &eng), CGNET_EINVAL);
    assert_null(eng);
  }
  assert_int_equal(tu_count_fds(), fds_before);
}

static void test_bad_options(void **state) {
  (void)state;
  cgnet_options bad[6];
  memset(bad, 0, sizeof(bad));
  bad[0].num_loops = -1;
  bad[1].num_loops = 5000;
  bad[2].lb = (cgnet_lb)7;
  bad[3].read_buffer_cap = 1;
  bad[4].write_buffer_cap = 100;
  bad[5].read_buffer_cap = 511;
  const char *names[] = {
      "num_loops=-1",      "num_loops=5000",       "lb=7",
      "read_buffer_cap=1", "write_buffer_cap=100", "read_buffer_cap=511"};
  const char *addr[] = {"tcp://127.0.0.1:0"};
  int fds_before = tu_count_fds();
  for (int i = 0; i < 6; i++) {
    cgnet_engine *eng = NULL;
    int rc = cgnet_engine_start(&plain_handler, addr, 1, &bad[i], &eng);
    if (rc != CGNET_EINVAL)
      fail_msg("%s: got %d (%s), want CGNET_EINVAL", names[i], rc, cgnet_err_name(rc));
    assert_null(eng);
  }
  assert_int_equal(tu_count_fds(), fds_before);

  /* The smallest accepted sizes work. */
  cgnet_options ok = {.read_buffer_cap = 512, .write_buffer_cap = 4096};
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &ok), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  size_t len = 200000;
  uint8_t *tx = malloc(len), *rx = malloc(GREET_LEN + len);
  tu_pattern_fill(tx, len, 77, 0);
  tu_echo_client cl = {
      .fd = fd, .tx = tx, .tx_len = len, .rx = rx, .rx_len = GREET_LEN + len};
  assert_rc(tu_echo_drive(&cl, 1, TU_TIMEOUT_MS), 0);
  assert_memory_equal(rx, GREETING, GREET_LEN);
  assert_true(tu_first_diff(rx + GREET_LEN, tx, len) == SIZE_MAX);
  close(fd);
  assert_rc(tu_server_stop(&srv, 1000), 0);
  free(tx);
  free(rx);
  assert_no_check_failures();
  tu_tracker_free(t);
  assert_int_equal(tu_count_fds(), fds_before);
}

static void test_addr_in_use(void **state) {
  (void)state;
  int port = -1;
  int lfd = tu_listen_any(&port);
  assert_true(lfd >= 0);
  assert_true(port > 0);
  char addr_s[64];
  snprintf(addr_s, sizeof(addr_s), "tcp://127.0.0.1:%d", port);
  const char *addr[] = {addr_s};
  int fds_before = tu_count_fds();
  cgnet_engine *eng = NULL;
  assert_rc(cgnet_engine_start(&plain_handler, addr, 1, NULL, &eng), CGNET_EADDRINUSE);
  assert_null(eng);
  cgnet_options o = {.num_loops = 2, .reuse_port = 1};
  assert_rc(cgnet_engine_start(&plain_handler, addr, 1, &o, &eng), CGNET_EADDRINUSE);
  assert_null(eng);
  assert_int_equal(tu_count_fds(), fds_before);
  close(lfd);
}

/* ---- several listeners
 * -------------------------------------------------------------------------- */

static cgnet_action addr_greet_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  const char *local = cgnet_conn_local_addr_string(c);
  TU_CHECK(local != NULL);
  if (local) {
    TU_CHECK_EQ(cgnet_conn_write(c, local, strlen(local)), 0);
    TU_CHECK_EQ(cgnet_conn_write(c, "\n", 1), 0);
  }
  return CGNET_NONE;
}

static void echo_via(int family, int port, const char *expect_greeting) {
  int fd = tu_connect(family, port, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);
  size_t glen = strlen(expect_greeting), len = 65536;
  uint8_t *tx = malloc(len), *rx = malloc(glen + len);
  tu_pattern_fill(tx, len, (uint64_t)family, 0);
  tu_echo_client cl = {.fd = fd, .tx = tx, .tx_len = len, .rx = rx, .rx_len = glen + len};
  assert_rc(tu_echo_drive(&cl, 1, TU_TIMEOUT_MS), 0);
  if (memcmp(rx, expect_greeting, glen) != 0)
    fail_msg("greeting \"%.*s\", want \"%s\"", (int)glen, (const char *)rx,
             expect_greeting);
  assert_true(tu_first_diff(rx + glen, tx, len) == SIZE_MAX);
  close(fd);
  free(tx);
  free(rx);
}

static void test_two_listeners(void **state) {
  (void)state;
  int v6 = tu_have_ipv6_loopback();
  if (!v6) fprintf(stderr, "note: ::1 unavailable, skipping the tcp6 listener\n");
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  h.on_open = addr_greet_on_open;
  const char *addrs[] = {"tcp://127.0.0.1:0", "tcp6://[::1]:0"};
  size_t n = v6 ? 2 : 1;
  cgnet_options o = {.num_loops = 2};
  tu_server srv;
  assert_rc(tu_server_start_at(&srv, &h, addrs, n, &o), 0);
  assert_int_equal(cgnet_engine_num_listeners(srv.eng), n);
  assert_true(cgnet_engine_listen_port(srv.eng, n) < 0);

  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  assert_rc(cgnet_engine_listen_addr(srv.eng, 0, (struct sockaddr *)&ss, &sl), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  assert_int_equal(sl, sizeof(struct sockaddr_in));
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  assert_int_equal(ntohl(s4->sin_addr.s_addr), INADDR_LOOPBACK);
  assert_int_equal(ntohs(s4->sin_port), srv.port);

  char g[64];
  snprintf(g, sizeof(g), "127.0.0.1:%d\n", srv.port);
  echo_via(AF_INET, srv.port, g);
  if (v6) {
    int p6 = cgnet_engine_listen_port(srv.eng, 1);
    assert_true(p6 > 0);
    sl = sizeof(ss);
    assert_rc(cgnet_engine_listen_addr(srv.eng, 1, (struct sockaddr *)&ss, &sl), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    assert_memory_equal(&s6->sin6_addr, &in6addr_loopback, sizeof(struct in6_addr));
    assert_int_equal(ntohs(s6->sin6_port), p6);
    snprintf(g, sizeof(g), "[::1]:%d\n", p6);
    echo_via(AF_INET6, p6, g);
  }
  assert_true(tu_wait_atomic_ge(&t->closes, (int)n, TU_TIMEOUT_MS));
  assert_rc(tu_server_stop(&srv, 1000), 0);
  assert_tracker_clean(t, (int)n);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- registry
 * ------------------------------------------------------------------------------------ */

static const echo_cfg echo_cfgs[] = {
    {1, 0, 0, CGNET_LB_ROUND_ROBIN}, {1, 0, 0, CGNET_LB_LEAST_CONN},
    {1, 0, 0, CGNET_LB_SOURCE_HASH}, {1, 0, 1, CGNET_LB_ROUND_ROBIN},
    {1, 1, 0, CGNET_LB_ROUND_ROBIN}, {1, 1, 0, CGNET_LB_LEAST_CONN},
    {1, 1, 0, CGNET_LB_SOURCE_HASH}, {1, 1, 1, CGNET_LB_ROUND_ROBIN},
    {4, 0, 0, CGNET_LB_ROUND_ROBIN}, {4, 0, 0, CGNET_LB_LEAST_CONN},
    {4, 0, 0, CGNET_LB_SOURCE_HASH}, {4, 0, 1, CGNET_LB_ROUND_ROBIN},
    {4, 1, 0, CGNET_LB_ROUND_ROBIN}, {4, 1, 0, CGNET_LB_LEAST_CONN},
    {4, 1, 0, CGNET_LB_SOURCE_HASH}, {4, 1, 1, CGNET_LB_ROUND_ROBIN},
};
#define NECHO (sizeof(echo_cfgs) / sizeof(echo_cfgs[0]))

static const action_cfg action_cfgs[] = {
    {AT_OPEN, CGNET_CLOSE},       {AT_OPEN, CGNET_SHUTDOWN},  {AT_TRAFFIC, CGNET_CLOSE},
    {AT_TRAFFIC, CGNET_SHUTDOWN}, {AT_TICK, CGNET_CLOSE},     {AT_TICK, CGNET_SHUTDOWN},
    {AT_CLOSE, CGNET_CLOSE},      {AT_CLOSE, CGNET_SHUTDOWN},
};
#define NACTION (sizeof(action_cfgs) / sizeof(action_cfgs[0]))

static char echo_names[NECHO][64];
static char action_names[NACTION][64];

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)

int main(void) {
  tu_apply_test_filter();
  static const char *lbs[] = {"rr", "lc", "hash"};
  static const char *sites[] = {"on_open", "on_traffic", "on_tick", "on_close"};
  struct CMUnitTest tests[NECHO + NACTION + 16];
  size_t n = 0;
  for (size_t i = 0; i < NECHO; i++) {
    const echo_cfg *c = &echo_cfgs[i];
    snprintf(echo_names[i], sizeof(echo_names[i]), "echo/loops=%d/%s/%s", c->loops,
             c->et ? "edge" : "level", c->reuse_port ? "reuse_port" : lbs[c->lb]);
    tests[n++] =
        (struct CMUnitTest){echo_names[i], test_echo, tu_setup, tu_teardown, (void *)c};
  }
  for (size_t i = 0; i < NACTION; i++) {
    const action_cfg *c = &action_cfgs[i];
    snprintf(action_names[i], sizeof(action_names[i]), "action/%s/%s", sites[c->where],
             c->act == CGNET_CLOSE ? "CLOSE" : "SHUTDOWN");
    tests[n++] =
        (struct CMUnitTest){action_names[i], test_action, tu_setup, tu_teardown, (void *)c};
  }
  const struct CMUnitTest rest[] = {
      T(test_boot_shutdown),
      T(test_boot_shutdown_run),
      T(test_boot_stop),
      T(test_stop_from_loop),
      T(test_ticker),
      T(test_ticker_never),
      T(test_stop_with_clients),
      T(test_send_and_close_level),
      T(test_send_and_close_edge),
      T(test_close_reasons),
      T(test_bad_addresses),
      T(test_bad_options),
      T(test_addr_in_use),
      T(test_two_listeners),
  };
  for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++)
    tests[n++] = rest[i];
  return _cmocka_run_group_tests("test_engine", tests, n, NULL, NULL);
}
