/*
 * Flow control over loopback sockets: the write watermarks and on_writable_changed, an
 * echo server under a client that sends without reading, write_buffer_limit,
 * pause/resume_read, idle/read/write timeouts (engine options and per-conn setters, and
 * UINT64_MAX as "never"),
 * max_connections, half-close with and without allow_half_open, cgnet_conn_shutdown_write,
 * a graceful stop with queued output, and EMFILE on accept (in a forked child).
 *
 * Callbacks run on loop threads: they record into atomics and TU_CHECK; the test thread
 * asserts afterwards. Every wait is bounded; under sanitizers time bounds are scaled by
 * TU_SLOW and payloads cut by TU_PAYLOAD_DIV.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/proc.h"
#include "support/support.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define SEED_SRV 0x5e12ull
#define SEED_CLI 0xc11eull
/* Scheduling slack allowed after a deadline (the wheel ticks every 1 ms). */
#define SLACK_MS ((uint64_t)50 * TU_SLOW)
#define MAX_SLOTS 16

/* ---- shared state ------------------------------------------------------------------- */

/* One test runs at a time; its callbacks share this. Atomics: written on loop threads,
 * read by the test thread. Plain fields: set before the engine starts, or loop-only. */
static struct flow {
  size_t high, low, total, chunk, limit;
  int mode;
  atomic_size_t written; /* bytes the server's writer handed to cgnet_conn_write */
  atomic_size_t max_out; /* largest cgnet_conn_outbound_buffered seen */
  atomic_size_t read;    /* bytes the server received */
  atomic_size_t bad;     /* received bytes that did not match the pattern */
  atomic_size_t queued;  /* a test-specific outbound snapshot */
  atomic_int down, up;   /* on_writable_changed(0) / (1) */
  atomic_int api_unwritable;
  atomic_int done;
  atomic_int overflow;
  atomic_int read_closed;
  atomic_int timer_fired;
  atomic_int pause_after;
  atomic_int resumed;
  atomic_int traffic;
  atomic_int wrong_order; /* on_writable_changed did not alternate */
  int last_writable;      /* loop thread only */
  cgnet_conn *conn;       /* loop thread only: the conn tasks act on */
  /* Per-slot timeout settings and times (slot = tracker slot index = accept order). */
  struct {
    uint64_t idle, read, write; /* per-conn overrides set in on_open (0: none) */
    int set_idle;               /* apply idle even when 0 (disable) */
    size_t queue;               /* bytes to queue in on_open */
  } cfg[MAX_SLOTS];
  _Atomic uint64_t open_ms[MAX_SLOTS], close_ms[MAX_SLOTS];
} F;

static tu_tracker *trk;

/* A failed test leaves its tracker behind (its engine is stopped by tu_teardown). */
static void free_tracker(void) {
  tu_tracker_free(trk);
  trk = NULL;
}

static int group_teardown(void **state) {
  (void)state;
  free_tracker();
  return 0;
}

static void flow_reset(void) {
  free_tracker();
  memset(&F, 0, sizeof(F));
  F.last_writable = 1;
  trk = tu_tracker_new();
}

static void note_out(cgnet_conn *c) {
  size_t out = cgnet_conn_outbound_buffered(c);
  size_t m = atomic_load(&F.max_out);
  while (out > m && !atomic_compare_exchange_weak(&F.max_out, &m, out)) {
  }
}

/* Queue `len` bytes of the server pattern continuing at F.written. 0 or the write code. */
static int write_pattern(cgnet_conn *c, size_t len) {
  uint8_t *buf = malloc(len);
  TU_CHECK(buf != NULL);
  if (!buf) return CGNET_ENOMEM;
  size_t off = atomic_load(&F.written);
  tu_pattern_fill(buf, len, SEED_SRV, off);
  int rc = cgnet_conn_write(c, buf, len);
  free(buf);
  if (rc == 0) atomic_store(&F.written, off + len);
  note_out(c);
  return rc;
}

static cgnet_action track_open(cgnet_conn *c) {
  tu_slot *s = tu_tracker_open(c);
  TU_CHECK(s != NULL);
  if (s && s->index < MAX_SLOTS) atomic_store(&F.open_ms[s->index], tu_now_ms());
  return CGNET_NONE;
}

static cgnet_action track_close(cgnet_conn *c, int reason) {
  /* Record before tu_tracker_close counts the close: the test thread waits for that
   * count and then reads these (under TSan it once read close_ms still 0). */
  tu_slot *s = tu_slot_of(c);
  if (s && s->index < MAX_SLOTS) atomic_store(&F.close_ms[s->index], tu_now_ms());
  if (s) atomic_store(&s->bytes, atomic_load(&F.read)); /* -> bytes_at_close */
  (void)tu_tracker_close(c, reason);
  return CGNET_NONE;
}

static void track_shutdown(cgnet_engine *eng) {
  atomic_fetch_add(&tu_tracker_of_engine(eng)->shutdowns, 1);
}

/* Echo, counting bytes and the largest outbound queue seen. */
static cgnet_action echo_traffic(cgnet_conn *c) {
  atomic_fetch_add(&F.traffic, 1);
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  atomic_fetch_add(&F.read, n);
  if (n) TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  note_out(c);
  return CGNET_NONE;
}

static void count_writable(cgnet_conn *c, int writable) {
  (void)c;
  atomic_fetch_add(writable ? &F.up : &F.down, 1);
}

static cgnet_handler base_handler(void) {
  cgnet_handler h = {.ud = trk,
                     .on_open = track_open,
                     .on_close = track_close,
                     .on_shutdown = track_shutdown};
  return h;
}

/* Wait until `n` conns closed, or fail. */
static void wait_closes(int n, int timeout_ms) {
  if (!tu_wait_atomic_ge(&trk->closes, n, timeout_ms))
    fail_msg("only %d of %d conns closed within %d ms", atomic_load(&trk->closes), n,
             timeout_ms);
}

static void wait_opens(int n) {
  if (!tu_wait_atomic_ge(&trk->opens, n, TU_TIMEOUT_MS))
    fail_msg("only %d of %d conns opened", atomic_load(&trk->opens), n);
}

static int slot_reason(int i) {
  return atomic_load(&trk->slots[i].reason);
}

static void assert_reason(int slot, int want) {
  int r = slot_reason(slot);
  if (r != want)
    fail_msg("conn %d closed with %d (%s), want %s", slot, r, cgnet_err_name(r),
             cgnet_err_name(want));
}

/* The close of `slot` happened in [lo, hi] (ms, monotonic). */
static void assert_closed_within(int slot, uint64_t lo, uint64_t hi) {
  uint64_t t = atomic_load(&F.close_ms[slot]);
  if (t < lo || t > hi)
    fail_msg("conn %d closed at %+lld ms from the earliest allowed deadline, allowed "
             "[0, %+lld]",
             slot, (long long)t - (long long)lo, (long long)hi - (long long)lo);
}

static void stop_and_free(tu_server *srv) {
  assert_rc(tu_server_stop(srv, 0), 0);
  tu_tracker_free(trk);
  trk = NULL;
}

/* Recv and verify `len` bytes of the server pattern at `offset`. */
/* Start srv with h and o, and connect one client to it (its fd). */
static int start_and_connect(tu_server *srv, cgnet_handler *h, cgnet_options *o) {
  assert_rc(tu_server_start(srv, h, o), 0);
  int fd = tu_connect4(srv->port);
  assert_true(fd >= 0);
  return fd;
}

static void recv_pattern(int fd, size_t len, size_t offset, uint64_t seed) {
  uint8_t *buf = malloc(len ? len : 1);
  assert_non_null(buf);
  size_t got = 0;
  int rc = tu_recv_exact(fd, buf, len, TU_TIMEOUT_MS, &got);
  if (rc != 0) {
    free(buf);
    fail_msg("recv %zu bytes: rc %d after %zu", len, rc, got);
  }
  size_t bad = tu_pattern_mismatches(buf, len, seed, offset);
  free(buf);
  if (bad) fail_msg("%zu of %zu received bytes differ from the pattern", bad, len);
}

/* No byte arrives on fd within ms. */
static void assert_quiet(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r = poll(&p, 1, ms);
  if (r > 0) {
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    if (n != 0 || errno == 0) fail_msg("unexpected readiness on the client (recv %zd)", n);
  }
}

/* ---- backpressure: the server writes while writable -------------------------------- */

static void bp_pump(cgnet_conn *c) {
  while (cgnet_conn_writable(c) && atomic_load(&F.written) < F.total) {
    size_t w = atomic_load(&F.written);
    size_t n = F.total - w < F.chunk ? F.total - w : F.chunk;
    int rc = write_pattern(c, n);
    TU_CHECK_EQ(rc, 0);
    if (rc) break;
  }
  if (!cgnet_conn_writable(c)) atomic_fetch_add(&F.api_unwritable, 1);
}

static cgnet_action bp_open(cgnet_conn *c) {
  track_open(c);
  bp_pump(c);
  return CGNET_NONE;
}

static void bp_writable(cgnet_conn *c, int w) {
  if (w == F.last_writable) atomic_fetch_add(&F.wrong_order, 1);
  F.last_writable = w;
  size_t out = cgnet_conn_outbound_buffered(c);
  if (!w) {
    atomic_fetch_add(&F.down, 1);
    TU_CHECK(!cgnet_conn_writable(c));
    TU_CHECK(out >= F.high);
  } else {
    atomic_fetch_add(&F.up, 1);
    TU_CHECK(cgnet_conn_writable(c));
    TU_CHECK(out <= F.low);
    bp_pump(c);
  }
}

typedef struct bp_cfg {
  size_t high, low; /* 0: defaults */
  int et;
} bp_cfg;

static void test_backpressure(void **state) {
  const bp_cfg *cfg = *state;
  flow_reset();
  F.high = cfg->high ? cfg->high : 64 * KiB;
  F.low = cfg->low ? cfg->low : F.high / 2;
  F.chunk = 16 * KiB;
  F.total = 8 * MiB / TU_PAYLOAD_DIV;
  cgnet_handler h = base_handler();
  h.on_open = bp_open;
  h.on_writable_changed = bp_writable;
  cgnet_options o = {.write_high_watermark = cfg->high,
                     .write_low_watermark = cfg->low,
                     .edge_triggered = cfg->et,
                     .socket_send_buffer = 64 * 1024};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fd = tu_connect_bufs(srv.port, 0, 64 * 1024, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);

  /* The client does not read: the server must stop at the high watermark. */
  if (!tu_wait_atomic_ge(&F.down, 1, TU_TIMEOUT_MS))
    fail_msg("on_writable_changed(0) never came");
  /* The writer parks: what it has written stops changing (for 100 ms; on a slow or
   * loaded machine the kernel may still take a last write after the first down), and
   * stays far below what it has to send. */
  size_t w1 = atomic_load(&F.written), w2 = SIZE_MAX;
  for (uint64_t end = tu_now_ms() + TU_TIMEOUT_MS; w1 != w2 && tu_now_ms() < end;) {
    w1 = atomic_load(&F.written);
    tu_sleep_ms(100);
    w2 = atomic_load(&F.written);
  }
  assert_int_equal(w1, w2);
  assert_true(w2 < F.total);
  assert_true(atomic_load(&F.api_unwritable) >= 1);
  /* The kernel may take more after the first flush (so up may have fired already), but
   * the writer is now parked on the high watermark. */
  assert_int_equal(atomic_load(&F.down), atomic_load(&F.up) + 1);
  if (atomic_load(&F.max_out) > F.high + F.chunk)
    fail_msg("outbound reached %zu > high %zu + one write %zu", atomic_load(&F.max_out),
             F.high, F.chunk);

  /* Now it reads everything: on_writable_changed(1) resumes the writer. */
  recv_pattern(fd, F.total, 0, SEED_SRV);
  assert_true(atomic_load(&F.up) >= 1);
  assert_int_equal(atomic_load(&F.written), F.total);
  assert_int_equal(atomic_load(&F.wrong_order), 0);
  if (atomic_load(&F.max_out) > F.high + F.chunk)
    fail_msg("outbound reached %zu > high %zu + one write %zu", atomic_load(&F.max_out),
             F.high, F.chunk);
  print_message("writable changes: %d down, %d up; max outbound %zu\n",
                atomic_load(&F.down), atomic_load(&F.up), atomic_load(&F.max_out));
  close(fd);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- an echo server under a client that does not read ------------------------------- */

static void test_echo_no_read(void **state) {
  const int et = *(const int *)*state;
  flow_reset();
  const size_t total = (TU_TSAN ? 16 : 32) * MiB;
  /* Reads take no more than the room below the high watermark, so an echo never queues
   * past it (it was high watermark + one whole read before). */
  const size_t bound = 64 * KiB;
  cgnet_handler h = base_handler();
  h.on_traffic = echo_traffic;
  h.on_writable_changed = count_writable;
  cgnet_options o = {.edge_triggered = et};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);

  uint8_t *tx = malloc(total), *rx = malloc(total);
  assert_non_null(tx);
  assert_non_null(rx);
  tu_pattern_fill(tx, total, SEED_CLI, 0);
  int fd = tu_connect_bufs(srv.port, 256 * 1024, 256 * 1024, 1, TU_TIMEOUT_MS);
  assert_true(fd >= 0);

  /* Phase 1: send without reading until the pipeline is full (no progress for a while). */
  size_t sent = 0;
  int stalled = 0;
  uint64_t deadline = tu_now_ms() + TU_TIMEOUT_MS;
  while (sent < total && tu_now_ms() < deadline) {
    size_t n = total - sent > 256 * KiB ? 256 * KiB : total - sent;
    ssize_t k = send(fd, tx + sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      sent += (size_t)k;
      continue;
    }
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      fail_msg("send: %s", strerror(errno));
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 500 * (TU_TSAN ? 2 : 1)) == 0) {
      stalled = 1;
      break;
    }
  }
  if (!stalled)
    fail_msg("the client sent all %zu bytes without reading: no backpressure", sent);
  size_t r1 = atomic_load(&F.read);
  tu_sleep_ms(200);
  size_t r2 = atomic_load(&F.read);
  assert_int_equal(r1, r2); /* the server stopped reading */
  assert_true(r2 <= sent);
  assert_true(atomic_load(&F.down) >= 1);
  if (atomic_load(&F.max_out) > bound)
    fail_msg("server outbound reached %zu > %zu", atomic_load(&F.max_out), bound);
  print_message("stalled after %zu bytes sent, %zu read by the server, max outbound %zu\n",
                sent, r2, atomic_load(&F.max_out));

  /* Phase 2: read and send the rest; everything echoes back intact. */
  tu_echo_client cl = {
      .fd = fd, .tx = tx, .tx_len = total, .tx_off = sent, .rx = rx, .rx_len = total};
  assert_rc(tu_echo_drive(&cl, 1, TU_TIMEOUT_MS), 0);
  size_t d = tu_first_diff(tx, rx, total);
  if (d != SIZE_MAX) fail_msg("echo differs at byte %zu of %zu", d, total);
  assert_true(atomic_load(&F.up) >= 1);
  if (atomic_load(&F.max_out) > bound)
    fail_msg("server outbound reached %zu > %zu", atomic_load(&F.max_out), bound);
  close(fd);
  free(tx);
  free(rx);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- write_buffer_limit ---------------------------------------------------------------
 */

#define LIM_CHUNK (32 * KiB)

static cgnet_action limit_open(cgnet_conn *c) {
  track_open(c);
  const size_t limit = F.limit;
  /* Larger than the limit with an empty queue: the socket takes what it can at once and
   * the rest, which then fits under the limit, is queued. */
  TU_CHECK_EQ(write_pattern(c, limit + 1), 0);
  size_t rest = cgnet_conn_outbound_buffered(c);
  TU_CHECK(rest > 0 && rest <= limit);

  /* Fill until refused; every refusal leaves the queue as it was. */
  for (int i = 0; i < 4096; i++) {
    size_t before = cgnet_conn_outbound_buffered(c);
    int rc = write_pattern(c, LIM_CHUNK);
    if (rc == CGNET_EOVERFLOW) {
      atomic_fetch_add(&F.overflow, 1);
      TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), before);
      break;
    }
    TU_CHECK_EQ(rc, 0);
    if (rc) break;
  }
  size_t q = cgnet_conn_outbound_buffered(c);
  atomic_store(&F.queued, q);
  TU_CHECK(q <= limit);
  /* Exactly up to the limit is fine; one byte more is not, whole or gathered. */
  if (q < limit) TU_CHECK_EQ(write_pattern(c, limit - q), 0);
  TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), limit);
  uint8_t one = 1;
  TU_CHECK_EQ(cgnet_conn_write(c, &one, 1), CGNET_EOVERFLOW);
  struct iovec iov[2] = {{&one, 1}, {&one, 1}};
  TU_CHECK_EQ(cgnet_conn_writev(c, iov, 2), CGNET_EOVERFLOW);
  TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), limit);
  TU_CHECK(cgnet_conn_writable(c)); /* the watermark is off */
  atomic_store(&F.done, 1);
  return CGNET_NONE;
}

/* A write whose unsent rest does not fit the limit either: the socket took part of it,
 * so the conn closes with CGNET_EOVERFLOW; the peer gets exactly that part, then EOF. */
static cgnet_action limit_partial_open(cgnet_conn *c) {
  track_open(c);
  int rc = write_pattern(c, 4 * F.limit); /* F.written stays 0: it failed */
  TU_CHECK_EQ(rc, CGNET_EOVERFLOW);
  TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), 0);
  TU_CHECK_EQ(cgnet_conn_write(c, "x", 1), CGNET_ECLOSED); /* closing */
  atomic_store(&F.done, 1);
  return CGNET_NONE;
}

/* A server with a 256 KiB write_buffer_limit, no watermark and small socket buffers on
 * both sides, running `open` as on_open; a connected client's fd once open has run. */
static int start_limit_server(tu_server *srv, cgnet_action (*open)(cgnet_conn *)) {
  flow_reset();
  F.limit = 256 * KiB;
  cgnet_handler h = base_handler();
  h.on_open = open;
  h.on_writable_changed = count_writable;
  cgnet_options o = {.write_buffer_limit = F.limit,
                     .write_high_watermark = CGNET_UNLIMITED,
                     .socket_send_buffer = 8192};
  assert_rc(tu_server_start(srv, &h, &o), 0);
  int fd = tu_connect_bufs(srv->port, 0, 8192, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);
  assert_true(tu_wait_atomic_eq(&F.done, 1, TU_TIMEOUT_MS));
  return fd;
}

static void test_write_limit_partial(void **state) {
  (void)state;
  tu_server srv;
  int fd = start_limit_server(&srv, limit_partial_open);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_reason(0, CGNET_EOVERFLOW);
  /* The part the socket took is the pattern's prefix, and nothing follows it. */
  size_t got = 0;
  uint8_t *buf = malloc(4 * F.limit);
  assert_non_null(buf);
  struct timeval tv = {.tv_sec = TU_TIMEOUT_MS / 1000}; /* the recv loop ends regardless */
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  for (;;) {
    ssize_t n = recv(fd, buf + got, 4 * F.limit - got, 0);
    if (n <= 0) break;
    got += (size_t)n;
  }
  assert_true(got > 0 && got < 4 * F.limit - F.limit);
  assert_int_equal(tu_pattern_mismatches(buf, got, SEED_SRV, 0), 0);
  free(buf);
  close(fd);
  assert_no_check_failures();
  stop_and_free(&srv);
}

static void test_write_buffer_limit(void **state) {
  (void)state;
  tu_server srv;
  int fd = start_limit_server(&srv, limit_open);
  assert_int_equal(atomic_load(&F.overflow), 1);
  size_t q = atomic_load(&F.queued);
  if (q <= F.limit - LIM_CHUNK || q > F.limit)
    fail_msg("refused with %zu queued; want (%zu, %zu]", q, F.limit - LIM_CHUNK, F.limit);
  /* Everything accepted arrives, in order, and nothing refused leaks out. */
  size_t accepted = atomic_load(&F.written);
  recv_pattern(fd, accepted, 0, SEED_SRV);
  assert_quiet(fd, 100);
  assert_int_equal(atomic_load(&F.down), 0);
  print_message("limit %zu: %zu bytes accepted, refused with %zu queued\n", F.limit,
                accepted, q);
  close(fd);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- pause_read / resume_read ----------------------------------------------------------
 */

static cgnet_action pause_open(cgnet_conn *c) {
  track_open(c);
  F.conn = c;
  TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
  if (F.total) {
    TU_CHECK_EQ(write_pattern(c, F.total), 0);
    TU_CHECK(!cgnet_conn_writable(c));
  }
  return CGNET_NONE;
}

static cgnet_action pause_traffic(cgnet_conn *c) {
  echo_traffic(c);
  if (atomic_exchange(&F.pause_after, 0)) TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
  return CGNET_NONE;
}

static cgnet_action count_traffic(cgnet_conn *c) {
  atomic_fetch_add(&F.traffic, 1);
  atomic_fetch_add(&F.read, cgnet_conn_discard(c, SIZE_MAX));
  return CGNET_NONE;
}

static void resume_task(cgnet_loop *loop, void *ud) {
  (void)loop;
  (void)ud;
  TU_CHECK(F.conn != NULL);
  if (F.conn) TU_CHECK_EQ(cgnet_conn_resume_read(F.conn), 0);
  atomic_fetch_add(&F.resumed, 1);
}

static void resume_now(tu_server *srv) {
  int before = atomic_load(&F.resumed);
  assert_rc(cgnet_loop_execute(cgnet_engine_loop(srv->eng, 0), resume_task, NULL), 0);
  assert_true(tu_wait_atomic_ge(&F.resumed, before + 1, TU_TIMEOUT_MS));
}

static void send_str(int fd, const char *s) {
  assert_rc(tu_send_all(fd, s, strlen(s), TU_TIMEOUT_MS), 0);
}

static void expect_str(int fd, const char *s) {
  char buf[64];
  size_t n = strlen(s);
  assert_true(n < sizeof(buf));
  assert_rc(tu_recv_exact(fd, buf, n, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(buf, s, n);
}

static void test_pause_resume(void **state) {
  const int et = *(const int *)*state;
  flow_reset();
  cgnet_handler h = base_handler();
  h.on_open = pause_open;
  h.on_traffic = pause_traffic;
  cgnet_options o = {.edge_triggered = et};
  tu_server srv;
  int fd = start_and_connect(&srv, &h, &o);
  wait_opens(1);

  /* Paused from on_open: nothing is delivered. */
  send_str(fd, "abc");
  tu_sleep_ms(150);
  assert_int_equal(atomic_load(&F.read), 0);
  assert_int_equal(atomic_load(&F.traffic), 0);
  resume_now(&srv);
  expect_str(fd, "abc");
  assert_int_equal(atomic_load(&F.read), 3);

  /* Paused from on_traffic: the next bytes wait for resume. */
  atomic_store(&F.pause_after, 1);
  send_str(fd, "d");
  expect_str(fd, "d");
  send_str(fd, "efg");
  tu_sleep_ms(150);
  assert_int_equal(atomic_load(&F.read), 4);
  resume_now(&srv);
  expect_str(fd, "efg");
  assert_int_equal(atomic_load(&F.read), 7);

  close(fd);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_reason(0, CGNET_EOF);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* A user pause outlives the automatic one: draining below the low watermark does not
 * resume reading while the user has it paused. */
static void test_pause_outlives_watermark(void **state) {
  const int et = *(const int *)*state;
  flow_reset();
  F.total = 1 * MiB;
  cgnet_handler h = base_handler();
  h.on_open = pause_open;
  h.on_traffic = count_traffic;
  h.on_writable_changed = count_writable;
  cgnet_options o = {.edge_triggered = et, .socket_send_buffer = 16 * 1024};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fd = tu_connect_bufs(srv.port, 0, 32 * 1024, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);
  wait_opens(1);
  send_str(fd, "x");
  assert_true(tu_wait_atomic_ge(&F.down, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(100);
  assert_int_equal(atomic_load(&F.down), 1);
  assert_int_equal(atomic_load(&F.read), 0);

  recv_pattern(fd, F.total, 0, SEED_SRV);
  assert_true(tu_wait_atomic_ge(&F.up, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(150);
  assert_int_equal(atomic_load(&F.read), 0); /* still paused by the user */
  resume_now(&srv);
  uint64_t end = tu_now_ms() + TU_TIMEOUT_MS;
  while (atomic_load(&F.read) < 1 && tu_now_ms() < end)
    tu_sleep_ms(2);
  assert_int_equal(atomic_load(&F.read), 1);
  close(fd);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- interest changes within one turn -------------------------------------------------
 */

/* Reading paused and resumed in one callback, then the echo (and pause_after's pause). */
static cgnet_action flip_traffic(cgnet_conn *c) {
  TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
  TU_CHECK_EQ(cgnet_conn_resume_read(c), 0);
  return pause_traffic(c);
}

static cgnet_action remember_open(cgnet_conn *c) {
  F.conn = c; /* for resume_task */
  return track_open(c);
}

static _Atomic uint64_t iu_value;
static atomic_int iu_read;

static void read_updates_task(cgnet_loop *loop, void *ud) {
  (void)ud;
  cgnet_loop_stats st;
  cgnet_loop_get_stats(loop, &st);
  atomic_store(&iu_value, st.interest_updates);
  atomic_fetch_add(&iu_read, 1);
}

/* The loop's count of interest updates, read by a task on the loop: the task runs in a
 * turn after the one that echoed the last reply, whose counters are published by then. */
static uint64_t interest_updates(tu_server *srv) {
  int before = atomic_load(&iu_read);
  assert_rc(cgnet_loop_execute(cgnet_engine_loop(srv->eng, 0), read_updates_task, NULL), 0);
  assert_true(tu_wait_atomic_ge(&iu_read, before + 1, TU_TIMEOUT_MS));
  return atomic_load(&iu_value);
}

/* With epoll, a change undone within the loop's turn never reaches the poller: 200
 * echoes, each pausing and resuming reading and queueing output that the flush sends,
 * cost no interest update (2 each if every change were made at once). io_uring makes
 * the change at once (its requests cost no syscall; they go with the next wait). A pause
 * that outlives the turn reaches either backend, one update each way (epoll: stop and
 * start reading; io_uring: a poll for a hang-up while the receive is stopped, removed at
 * the resume), and the bytes sent meanwhile come after the resume. */
static void test_interest_same_turn(void **state) {
  (void)state;
  flow_reset();
  cgnet_handler h = base_handler();
  h.on_open = remember_open;
  h.on_traffic = flip_traffic;
  cgnet_options o = {0};
  tu_server srv;
  int fd = start_and_connect(&srv, &h, &o);
  wait_opens(1);
  send_str(fd, "a");
  expect_str(fd, "a");
  uint64_t before = interest_updates(&srv);
  for (int i = 0; i < 200; i++) {
    send_str(fd, "x");
    expect_str(fd, "x");
  }
  uint64_t after = interest_updates(&srv);
  int epoll = cgnet_engine_backend(srv.eng) == CGNET_BACKEND_EPOLL;
  if (epoll) assert_true(after - before < 10);
  assert_int_equal(atomic_load(&F.read), 201);

  atomic_store(&F.pause_after, 1);
  send_str(fd, "p");
  expect_str(fd, "p");
  /* (On io_uring each delivery's own pause and resume are two more.) */
  uint64_t paused = interest_updates(&srv);
  assert_true(paused >= after + 1);
  if (epoll) assert_true(paused == after + 1);
  send_str(fd, "q");
  tu_sleep_ms(100);
  assert_int_equal(atomic_load(&F.read), 202); /* paused: "q" waits */
  resume_now(&srv);
  expect_str(fd, "q");
  uint64_t resumed = interest_updates(&srv);
  assert_true(resumed >= paused + 1);
  if (epoll) assert_true(resumed == paused + 1);

  close(fd);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- timeouts ----------------------------------------------------------------------- */

static cgnet_action to_open(cgnet_conn *c) {
  tu_slot *s = tu_tracker_open(c);
  TU_CHECK(s != NULL);
  if (!s || s->index >= MAX_SLOTS) return CGNET_NONE;
  int i = s->index;
  atomic_store(&F.open_ms[i], tu_now_ms());
  if (F.cfg[i].idle || F.cfg[i].set_idle)
    TU_CHECK_EQ(cgnet_conn_set_idle_timeout(c, F.cfg[i].idle), 0);
  if (F.cfg[i].read) TU_CHECK_EQ(cgnet_conn_set_read_timeout(c, F.cfg[i].read), 0);
  if (F.cfg[i].write) TU_CHECK_EQ(cgnet_conn_set_write_timeout(c, F.cfg[i].write), 0);
  if (F.cfg[i].queue) TU_CHECK_EQ(write_pattern(c, F.cfg[i].queue), 0);
  return CGNET_NONE;
}

static cgnet_action drip(cgnet_timer *t, void *ud) {
  (void)ud;
  atomic_fetch_add(&F.timer_fired, 1);
  TU_CHECK_EQ(cgnet_conn_write(cgnet_timer_conn(t), "w", 1), 0);
  return CGNET_NONE;
}

static cgnet_action drip_open(cgnet_conn *c) {
  to_open(c);
  cgnet_timer *t = cgnet_conn_timer_new(c, drip, NULL);
  TU_CHECK(t != NULL);
  if (t) TU_CHECK_EQ(cgnet_timer_start(t, 40, 40), 0);
  return CGNET_NONE;
}

static void start_timeout_server(tu_server *srv, cgnet_handler *h, cgnet_options *o) {
  if (h->on_open == track_open) h->on_open = to_open;
  if (!h->on_traffic) h->on_traffic = echo_traffic;
  assert_rc(tu_server_start(srv, h, o), 0);
}

/* Idle timeout on a conn that never sends. `quiet`: the server has been idle for longer
 * than the timeout before the client connects. */
static void test_idle_timeout(void **state) {
  const int quiet = *(const int *)*state;
  const uint64_t to = 200;
  flow_reset();
  cgnet_handler h = base_handler();
  cgnet_options o = {.idle_timeout_ms = to};
  tu_server srv;
  start_timeout_server(&srv, &h, &o);
  if (quiet) tu_sleep_ms(2 * to);
  uint64_t t0 = tu_now_ms();
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  wait_closes(1, (int)(to * 10 * TU_SLOW));
  assert_reason(0, CGNET_ETIMEDOUT);
  assert_closed_within(0, t0 + to, atomic_load(&F.open_ms[0]) + to + SLACK_MS);
  assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  close(fd);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* Activity pushes the deadline: bytes every 50 ms keep a 200 ms idle (or read) timeout
 * from firing; it fires 200 ms after the last byte. */
static void test_timeout_activity(void **state) {
  const int read_kind = *(const int *)*state;
  const uint64_t to = 200;
  flow_reset();
  cgnet_handler h = base_handler();
  cgnet_options o = {0};
  if (read_kind)
    o.read_timeout_ms = to;
  else
    o.idle_timeout_ms = to;
  tu_server srv;
  start_timeout_server(&srv, &h, &o);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  wait_opens(1);
  uint64_t last_send = 0, last_recv = 0;
  for (int i = 0; i < 12; i++) {
    tu_sleep_ms(50);
    last_send = tu_now_ms();
    send_str(fd, "k");
    expect_str(fd, "k");
    last_recv = tu_now_ms();
    if (atomic_load(&trk->closes) != 0)
      fail_msg("closed after %d pings 50 ms apart with a %llu ms timeout", i + 1,
               (unsigned long long)to);
  }
  wait_closes(1, (int)(to * 10 * TU_SLOW));
  assert_reason(0, CGNET_ETIMEDOUT);
  assert_closed_within(0, last_send + to, last_recv + to + SLACK_MS);
  close(fd);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* The server writes every 40 ms, the client never sends: the read timeout still fires. */
static void test_read_timeout_ignores_writes(void **state) {
  (void)state;
  const uint64_t to = 200;
  flow_reset();
  cgnet_handler h = base_handler();
  h.on_open = drip_open;
  cgnet_options o = {.read_timeout_ms = to};
  tu_server srv;
  start_timeout_server(&srv, &h, &o);
  uint64_t t0 = tu_now_ms();
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  size_t extra = 0;
  assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, &extra), 0);
  assert_true(extra >= 2);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_reason(0, CGNET_ETIMEDOUT);
  assert_closed_within(0, t0 + to, atomic_load(&F.open_ms[0]) + to + SLACK_MS);
  close(fd);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* Write timeout: A never reads with output queued (closed), B has nothing queued (kept),
 * C reads slowly but steadily (kept). */
static void test_write_timeout(void **state) {
  (void)state;
  const uint64_t to = 200;
  flow_reset();
  F.cfg[0].queue = 2 * MiB;
  F.cfg[2].queue = 2 * MiB;
  cgnet_handler h = base_handler();
  cgnet_options o = {.write_timeout_ms = to, .socket_send_buffer = 16 * 1024};
  tu_server srv;
  start_timeout_server(&srv, &h, &o);
  uint64_t t0 = tu_now_ms();
  int a = tu_connect_bufs(srv.port, 0, 16 * 1024, 0, TU_TIMEOUT_MS);
  assert_true(a >= 0);
  wait_opens(1);
  int b = tu_connect4(srv.port);
  assert_true(b >= 0);
  wait_opens(2);
  int c = tu_connect_bufs(srv.port, 0, 256 * 1024, 0, TU_TIMEOUT_MS);
  assert_true(c >= 0);
  wait_opens(3);
  /* C: 64 KiB every 50 ms for ~1 s. The second 2 MiB stream continues where A's ended. */
  size_t c_off = 0;
  uint8_t *buf = malloc(64 * KiB);
  assert_non_null(buf);
  for (int i = 0; i < 20; i++) {
    tu_sleep_ms(50);
    assert_rc(tu_recv_exact(c, buf, 64 * KiB, TU_TIMEOUT_MS, NULL), 0);
    assert_int_equal(tu_pattern_mismatches(buf, 64 * KiB, SEED_SRV, 2 * MiB + c_off), 0);
    c_off += 64 * KiB;
  }
  free(buf);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_int_equal(atomic_load(&trk->closes), 1);
  assert_reason(0, CGNET_ETIMEDOUT);
  /* The write timeout counts from the queue's last progress, which comes a little after
   * the open while the kernel buffers fill (seen: 56 ms after a 50 ms slack). */
  assert_closed_within(0, t0 + to,
                       atomic_load(&F.open_ms[0]) + to + SLACK_MS + 100 * TU_SLOW);
  recv_pattern(c, 2 * MiB - c_off, 2 * MiB + c_off, SEED_SRV);
  tu_sleep_ms(2 * to);
  assert_int_equal(atomic_load(&trk->closes), 1); /* B and C are still open */
  close(a);
  close(b);
  close(c);
  wait_closes(3, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* Per-conn setters override the engine's options. Engine: idle 300 ms. */
static void test_timeout_overrides(void **state) {
  (void)state;
  flow_reset();
  F.cfg[0].set_idle = 1; /* idle 0: never */
  F.cfg[1].idle = 600;
  /* slot 2: the engine's 300 */
  F.cfg[3].read = 100;
  F.cfg[4].write = 150;
  F.cfg[4].queue = 2 * MiB;
  const uint64_t want[5] = {0, 600, 300, 100, 150};
  const int nconn = 5;
  cgnet_handler h = base_handler();
  cgnet_options o = {.idle_timeout_ms = 300, .socket_send_buffer = 16 * 1024};
  tu_server srv;
  start_timeout_server(&srv, &h, &o);
  int fds[5];
  uint64_t t0[5];
  for (int i = 0; i < nconn; i++) {
    t0[i] = tu_now_ms();
    fds[i] = tu_connect_bufs(srv.port, 0, 16 * 1024, 0, TU_TIMEOUT_MS);
    assert_true(fds[i] >= 0);
    wait_opens(i + 1);
  }
  wait_closes(4, (int)(3000 * TU_SLOW));
  tu_sleep_ms(300);
  for (int i = 1; i < nconn; i++) {
    if (atomic_load(&trk->slots[i].closes) != 1) fail_msg("conn %d did not close", i);
    assert_reason(i, CGNET_ETIMEDOUT);
    /* The write timeout counts from the queue's last progress, which comes a little
     * after the open while the kernel buffers fill (seen: 55 ms after a 50 ms slack). */
    uint64_t late = i == 4 ? 100 * TU_SLOW : 0;
    assert_closed_within(i, t0[i] + want[i],
                         atomic_load(&F.open_ms[i]) + want[i] + SLACK_MS + late);
  }
  assert_int_equal(atomic_load(&trk->slots[0].closes), 0); /* idle turned off */
  for (int i = 0; i < nconn; i++)
    close(fds[i]);
  wait_closes(nconn, TU_TIMEOUT_MS);
  assert_reason(0, CGNET_EOF);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* UINT64_MAX (or any huge value) is "never" for every timeout, from the options and from
 * the per-conn setters: now + timeout saturates instead of wrapping around to a deadline
 * already past. Conn 0 has the engine's options; conn 1 its own settings and queued
 * output that waits (the write timeout is armed) until the client reads it. */
static void test_never_timeouts(void **state) {
  (void)state;
  flow_reset();
  F.cfg[1].idle = UINT64_MAX - 5;
  F.cfg[1].read = UINT64_MAX;
  F.cfg[1].write = UINT64_MAX / 2 + 1;
  F.cfg[1].queue = 1 * MiB;
  cgnet_handler h = base_handler();
  cgnet_options o = {.idle_timeout_ms = UINT64_MAX,
                     .read_timeout_ms = UINT64_MAX,
                     .write_timeout_ms = UINT64_MAX,
                     .socket_send_buffer = 16 * 1024};
  tu_server srv;
  start_timeout_server(&srv, &h, &o);
  int fd[2];
  for (int i = 0; i < 2; i++) {
    fd[i] = tu_connect_bufs(srv.port, 0, 16 * 1024, 0, TU_TIMEOUT_MS);
    assert_true(fd[i] >= 0);
    wait_opens(i + 1);
  }
  tu_sleep_ms(150); /* conn 1's output sits queued */
  recv_pattern(fd[1], 1 * MiB, 0, SEED_SRV);
  for (int round = 0; round < 6; round++) {
    tu_sleep_ms(50);
    for (int i = 0; i < 2; i++) {
      send_str(fd[i], "k");
      expect_str(fd[i], "k");
    }
    if (atomic_load(&trk->closes) != 0)
      fail_msg("a conn with UINT64_MAX timeouts closed (conn 0: %s, conn 1: %s)",
               cgnet_err_name(slot_reason(0)), cgnet_err_name(slot_reason(1)));
  }
  for (int i = 0; i < 2; i++)
    close(fd[i]);
  wait_closes(2, TU_TIMEOUT_MS);
  assert_reason(0, CGNET_EOF);
  assert_reason(1, CGNET_EOF);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- max_connections ------------------------------------------------------------------
 */

#define MC_MAX 50
#define MC_EXTRA 20
#define MC_THREADS 5
#define MC_PER ((MC_MAX + MC_EXTRA) / MC_THREADS)

typedef struct mc_job {
  int port;
  pthread_barrier_t *bar;
  int fds[MC_PER];
  int result[MC_PER]; /* 1 served, 0 rejected, -1 connect failed, -2 other */
} mc_job;

static void *mc_main(void *arg) {
  mc_job *j = arg;
  for (int i = 0; i < MC_PER; i++)
    j->fds[i] = tu_connect4(j->port);
  pthread_barrier_wait(j->bar);
  for (int i = 0; i < MC_PER; i++) {
    if (j->fds[i] < 0) {
      j->result[i] = -1;
      continue;
    }
    char b = 'p';
    int rc = tu_send_all(j->fds[i], &b, 1, 2000 * TU_SLOW);
    if (rc == 0) rc = tu_recv_exact(j->fds[i], &b, 1, 3000 * TU_SLOW, NULL);
    if (rc == 0 && b == 'p')
      j->result[i] = 1;
    else if (rc == TU_EEOF || rc == -ECONNRESET || rc == -EPIPE)
      j->result[i] = 0;
    else
      j->result[i] = -2;
  }
  return NULL;
}

static void echo_check(int fd, size_t len, uint64_t seed) {
  uint8_t *tx = malloc(len), *rx = malloc(len);
  assert_non_null(tx);
  assert_non_null(rx);
  tu_pattern_fill(tx, len, seed, 0);
  assert_rc(tu_send_all(fd, tx, len, TU_TIMEOUT_MS), 0);
  assert_rc(tu_recv_exact(fd, rx, len, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(tx, rx, len);
  free(tx);
  free(rx);
}

static void test_max_connections(void **state) {
  (void)state;
  flow_reset();
  cgnet_handler h = base_handler();
  h.on_traffic = echo_traffic;
  cgnet_options o = {
      .max_connections = MC_MAX, .num_loops = 2, .log_level = CGNET_LOG_ERROR};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, MC_THREADS);
  mc_job jobs[MC_THREADS];
  pthread_t th[MC_THREADS];
  for (int t = 0; t < MC_THREADS; t++) {
    memset(&jobs[t], 0, sizeof(jobs[t]));
    jobs[t].port = srv.port;
    jobs[t].bar = &bar;
    assert_int_equal(pthread_create(&th[t], NULL, mc_main, &jobs[t]), 0);
  }
  for (int t = 0; t < MC_THREADS; t++)
    pthread_join(th[t], NULL);
  pthread_barrier_destroy(&bar);

  int served = 0, rejected = 0, odd = 0;
  int kept[MC_MAX + MC_EXTRA];
  int nkept = 0;
  for (int t = 0; t < MC_THREADS; t++)
    for (int i = 0; i < MC_PER; i++) {
      int r = jobs[t].result[i];
      if (r == 1) {
        served++;
        kept[nkept++] = jobs[t].fds[i];
      } else {
        if (r == 0)
          rejected++;
        else
          odd++;
        if (jobs[t].fds[i] >= 0) close(jobs[t].fds[i]);
      }
    }
  if (served != MC_MAX || rejected != MC_EXTRA || odd != 0)
    fail_msg("served %d rejected %d other %d; want %d / %d / 0", served, rejected, odd,
             MC_MAX, MC_EXTRA);
  assert_int_equal(cgnet_engine_rejected_connections(srv.eng), MC_EXTRA);
  assert_int_equal(atomic_load(&trk->opens), MC_MAX);
  assert_int_equal(cgnet_engine_count_connections(srv.eng), MC_MAX);

  /* The existing conns keep echoing. */
  for (int i = 0; i < nkept; i++)
    echo_check(kept[i], 1024, (uint64_t)i);
  /* Room again after some leave: new clients are served, nothing more is rejected. */
  for (int i = 0; i < 5; i++)
    close(kept[--nkept]);
  assert_true(tu_wait_conns(srv.eng, MC_MAX - 5, TU_TIMEOUT_MS));
  for (int i = 0; i < 5; i++) {
    kept[nkept] = tu_connect4(srv.port);
    assert_true(kept[nkept] >= 0);
    echo_check(kept[nkept], 1024, 1000u + (uint64_t)i);
    nkept++;
  }
  assert_int_equal(cgnet_engine_rejected_connections(srv.eng), MC_EXTRA);
  assert_int_equal(atomic_load(&trk->opens), MC_MAX + 5);
  for (int i = 0; i < nkept; i++)
    close(kept[i]);
  assert_true(tu_wait_conns(srv.eng, 0, TU_TIMEOUT_MS));
  wait_closes(MC_MAX + 5, TU_TIMEOUT_MS);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- half-close ------------------------------------------------------------------------
 */

enum {
  HC_SHUTDOWN, /* allow_half_open: on_read_closed writes 1 MiB, cgnet_conn_shutdown_write */
  HC_LATER,    /* allow_half_open: a timer 50 ms later writes 1 MiB and shuts down */
  HC_CLOSE,    /* allow_half_open: on_read_closed writes 1 KiB and returns CLOSE */
  HC_NONE_LEVEL, /* no half-open: the reply goes out from on_traffic; FIN closes */
  HC_NONE_EDGE,
};

#define HC_REQ (100 * KiB)

static size_t hc_reply_len(int mode) {
  return (mode == HC_SHUTDOWN || mode == HC_LATER) ? 1 * MiB : 1 * KiB;
}

static cgnet_action hc_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  size_t off = atomic_fetch_add(&F.read, n);
  atomic_fetch_add(&F.bad, tu_pattern_mismatches(p, n, SEED_CLI, off));
  if ((F.mode == HC_NONE_LEVEL || F.mode == HC_NONE_EDGE) && off + n == HC_REQ)
    TU_CHECK_EQ(write_pattern(c, hc_reply_len(F.mode)), 0);
  return CGNET_NONE;
}

static cgnet_action hc_later(cgnet_timer *t, void *ud) {
  (void)ud;
  cgnet_conn *c = cgnet_timer_conn(t);
  atomic_fetch_add(&F.timer_fired, 1);
  TU_CHECK_EQ(write_pattern(c, hc_reply_len(F.mode)), 0);
  TU_CHECK_EQ(cgnet_conn_shutdown_write(c), 0);
  return CGNET_NONE;
}

static cgnet_action hc_read_closed(cgnet_conn *c) {
  atomic_fetch_add(&F.read_closed, 1);
  TU_CHECK_EQ(atomic_load(&F.read), HC_REQ); /* every byte came before the FIN */
  switch (F.mode) {
  case HC_SHUTDOWN:
    TU_CHECK_EQ(write_pattern(c, hc_reply_len(F.mode)), 0);
    TU_CHECK_EQ(cgnet_conn_shutdown_write(c), 0);
    return CGNET_NONE;
  case HC_LATER: {
    cgnet_timer *t = cgnet_conn_timer_new(c, hc_later, NULL);
    TU_CHECK(t != NULL);
    if (t) TU_CHECK_EQ(cgnet_timer_start(t, 50, 0), 0);
    return CGNET_NONE;
  }
  case HC_CLOSE:
    TU_CHECK_EQ(write_pattern(c, hc_reply_len(F.mode)), 0);
    return CGNET_CLOSE;
  default:
    TU_CHECK(!"on_read_closed without allow_half_open");
    return CGNET_NONE;
  }
}

static void test_half_close(void **state) {
  const int mode = *(const int *)*state;
  flow_reset();
  F.mode = mode;
  cgnet_handler h = base_handler();
  h.on_traffic = hc_traffic;
  h.on_read_closed = hc_read_closed;
  cgnet_options o = {.allow_half_open = mode <= HC_CLOSE,
                     .edge_triggered = mode == HC_NONE_EDGE};
  tu_server srv;
  int fd = start_and_connect(&srv, &h, &o);
  uint8_t *req = malloc(HC_REQ);
  assert_non_null(req);
  tu_pattern_fill(req, HC_REQ, SEED_CLI, 0);
  assert_rc(tu_send_all(fd, req, HC_REQ, TU_TIMEOUT_MS), 0);
  free(req);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  uint64_t t_fin = tu_now_ms();

  recv_pattern(fd, hc_reply_len(mode), 0, SEED_SRV);
  assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_int_equal(atomic_load(&F.read), HC_REQ);
  assert_int_equal(atomic_load(&F.bad), 0);
  assert_int_equal(atomic_load(&trk->slots[0].bytes_at_close), HC_REQ);
  if (mode <= HC_CLOSE) {
    assert_int_equal(atomic_load(&F.read_closed), 1);
    assert_reason(0, mode == HC_CLOSE ? CGNET_ELOCALCLOSE : CGNET_EOF);
  } else {
    assert_int_equal(atomic_load(&F.read_closed), 0);
    assert_reason(0, CGNET_EOF);
  }
  if (mode == HC_LATER) {
    assert_int_equal(atomic_load(&F.timer_fired), 1);
    assert_true(atomic_load(&F.close_ms[0]) >= t_fin + 50);
  }
  close(fd);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- cgnet_conn_shutdown_write ----------------------------------------------------------
 */

#define SW_OUT (1 * MiB)

static cgnet_action sw_open(cgnet_conn *c) {
  track_open(c);
  TU_CHECK_EQ(write_pattern(c, SW_OUT), 0);
  TU_CHECK_EQ(cgnet_conn_shutdown_write(c), 0);
  TU_CHECK_EQ(cgnet_conn_shutdown_write(c), 0); /* again: harmless */
  TU_CHECK_EQ(cgnet_conn_write(c, "x", 1), CGNET_EPIPE);
  return CGNET_NONE;
}

static cgnet_action sw_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  size_t off = atomic_fetch_add(&F.read, n);
  atomic_fetch_add(&F.bad, tu_pattern_mismatches(p, n, SEED_CLI, off));
  TU_CHECK_EQ(cgnet_conn_write(c, "x", 1), CGNET_EPIPE);
  return CGNET_NONE;
}

static void test_shutdown_write(void **state) {
  const int half_open = *(const int *)*state;
  flow_reset();
  cgnet_handler h = base_handler();
  h.on_open = sw_open;
  h.on_traffic = sw_traffic;
  h.on_read_closed = NULL;
  cgnet_options o = {.allow_half_open = half_open};
  tu_server srv;
  int fd = start_and_connect(&srv, &h, &o);
  const size_t first = 64 * KiB, second = 192 * KiB;
  uint8_t *tx = malloc(first + second);
  assert_non_null(tx);
  tu_pattern_fill(tx, first + second, SEED_CLI, 0);
  assert_rc(tu_send_all(fd, tx, first, TU_TIMEOUT_MS), 0); /* before reading */
  recv_pattern(fd, SW_OUT, 0, SEED_SRV);
  assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  /* Our half is still open: the server keeps reading. */
  assert_rc(tu_send_all(fd, tx + first, second, TU_TIMEOUT_MS), 0);
  free(tx);
  uint64_t end = tu_now_ms() + TU_TIMEOUT_MS;
  while (atomic_load(&F.read) < first + second && tu_now_ms() < end)
    tu_sleep_ms(2);
  assert_int_equal(atomic_load(&F.read), first + second);
  assert_int_equal(atomic_load(&F.bad), 0);
  assert_int_equal(atomic_load(&trk->closes), 0);
  close(fd);
  wait_closes(1, TU_TIMEOUT_MS);
  assert_reason(0, CGNET_EOF);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* Paused reading plus our FIN, then the peer closes: the hang-up must end the conn
 * (level mode would otherwise report EPOLLHUP on every turn of a busy loop). */
static cgnet_action paused_fin_open(cgnet_conn *c) {
  track_open(c);
  TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
  TU_CHECK_EQ(cgnet_conn_shutdown_write(c), 0);
  return CGNET_NONE;
}

static void test_paused_hangup_closes(void **state) {
  (void)state;
  flow_reset();
  cgnet_handler h = base_handler();
  h.on_open = paused_fin_open;
  cgnet_options o = {0};
  tu_server srv;
  int fd = start_and_connect(&srv, &h, &o);
  assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0); /* the server's FIN */
  close(fd);
  wait_closes(1, 2000 * TU_SLOW);
  assert_reason(0, CGNET_EOF);
  assert_no_check_failures();
  stop_and_free(&srv);
}

/* ---- graceful stop with queued output
 * ---------------------------------------------------- */

typedef struct stopper {
  cgnet_engine *eng;
  uint64_t timeout_ms;
  uint64_t elapsed_ms;
  atomic_int done;
} stopper;

static void *stopper_main(void *arg) {
  stopper *s = arg;
  uint64_t t0 = tu_now_ms();
  cgnet_engine_stop(s->eng, s->timeout_ms);
  s->elapsed_ms = tu_now_ms() - t0;
  atomic_store(&s->done, 1);
  return NULL;
}

static cgnet_action gs_open(cgnet_conn *c) {
  track_open(c);
  for (size_t off = 0; off < F.total; off += 1 * MiB)
    TU_CHECK_EQ(write_pattern(c, 1 * MiB), 0);
  atomic_store(&F.queued, cgnet_conn_outbound_buffered(c));
  atomic_store(&F.done, 1);
  return CGNET_NONE;
}

static void noop_task(cgnet_loop *loop, void *ud) {
  (void)loop;
  (void)ud;
}

/* Block until the engine reports it is stopping (cgnet_loop_execute refuses work). */
static void wait_stopping(cgnet_engine *eng) {
  uint64_t end = tu_now_ms() + TU_TIMEOUT_MS;
  while (cgnet_loop_execute(cgnet_engine_loop(eng, 0), noop_task, NULL) !=
         CGNET_ESHUTDOWN) {
    if (tu_now_ms() > end) fail_msg("the engine never started stopping");
    tu_sleep_ms(1);
  }
}

/* state 0: a 10 s flush timeout, ample; 1: 300 ms, too short; 2: UINT64_MAX, "never",
 * which must wait for the drain like an ample one (not wrap to a deadline already past). */
static void test_graceful_stop(void **state) {
  const int mode = *(const int *)*state;
  const int too_short = mode == 1;
  flow_reset();
  F.total = 8 * MiB / TU_PAYLOAD_DIV;
  cgnet_handler h = base_handler();
  h.on_open = gs_open;
  cgnet_options o = {.write_buffer_limit = 16 * MiB, .socket_send_buffer = 64 * 1024};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fd = tu_connect_bufs(srv.port, 0, 64 * 1024, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);
  assert_true(tu_wait_atomic_eq(&F.done, 1, TU_TIMEOUT_MS));
  assert_true(atomic_load(&F.queued) > F.total / 2);

  stopper st = {.eng = srv.eng,
                .timeout_ms = mode == 2   ? UINT64_MAX
                              : too_short ? 300
                                          : 10000};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, stopper_main, &st), 0);
  wait_stopping(srv.eng);
  if (!too_short) {
    /* A slow reader: 32 KiB every 2 ms. Every byte arrives, then EOF. */
    uint8_t *buf = malloc(32 * KiB);
    assert_non_null(buf);
    size_t off = 0;
    while (off < F.total) {
      size_t n = F.total - off < 32 * KiB ? F.total - off : 32 * KiB;
      size_t got = 0;
      int rc = tu_recv_exact(fd, buf, n, TU_TIMEOUT_MS, &got);
      if (rc != 0) fail_msg("recv at %zu of %zu: rc %d", off + got, F.total, rc);
      assert_int_equal(tu_pattern_mismatches(buf, n, SEED_SRV, off), 0);
      off += n;
      tu_sleep_ms(2);
    }
    free(buf);
    assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  }
  uint64_t end = tu_now_ms() + TU_TIMEOUT_MS;
  while (!atomic_load(&st.done) && tu_now_ms() < end)
    tu_sleep_ms(2);
  if (!atomic_load(&st.done)) fail_msg("cgnet_engine_stop did not return");
  pthread_join(th, NULL);
  print_message("stop(%llu) returned after %llu ms\n", (unsigned long long)st.timeout_ms,
                (unsigned long long)st.elapsed_ms);
  if (too_short) {
    if (st.elapsed_ms + 10 < st.timeout_ms || st.elapsed_ms > st.timeout_ms + 500 * TU_SLOW)
      fail_msg("stop(%llu) took %llu ms", (unsigned long long)st.timeout_ms,
               (unsigned long long)st.elapsed_ms);
  } else {
    assert_true(st.elapsed_ms < st.timeout_ms);
  }
  assert_int_equal(atomic_load(&trk->closes), 1);
  assert_reason(0, CGNET_ESHUTDOWN);
  assert_int_equal(atomic_load(&trk->shutdowns), 1);
  assert_rc(tu_server_wait(&srv, TU_TIMEOUT_MS), 0);
  close(fd);
  assert_no_check_failures();
  tu_tracker_free(trk);
  trk = NULL;
}

/* ---- EMFILE on accept (in a child process) ----------------------------------------------
 */

#define EM_HOLD 6
static pid_t em_child = -1;

static cgnet_action em_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n) (void)cgnet_conn_write(c, p, n);
  return CGNET_NONE;
}

/* The child: an echo server that may hold only a few descriptors more than it has. */
static void em_child_main(int wfd, int rfd) {
  /* Compact the descriptor table (the parent's may have holes): pipes at 3 and 4. */
  int w = fcntl(wfd, F_DUPFD_CLOEXEC, 100), r = fcntl(rfd, F_DUPFD_CLOEXEC, 100);
  if (w < 0 || r < 0 || dup2(w, 3) != 3 || dup2(r, 4) != 4) _exit(9);
  close_range(5, ~0u, 0);
  wfd = 3;
  rfd = 4;
  cgnet_handler h = {.on_traffic = em_traffic};
  cgnet_options o = {.num_loops = 1, .log_level = CGNET_LOG_ERROR};
  const char *addr[] = {"tcp://127.0.0.1:0"};
  cgnet_engine *eng = NULL;
  if (cgnet_engine_start(&h, addr, 1, &o, &eng) != 0) _exit(10);
  int open_now = tu_count_fds(), maxfd = tu_max_fd();
  long limit = tu_set_nofile(maxfd + 1 + EM_HOLD);
  if (open_now < 0 || maxfd < 0 || limit != maxfd + 1 + EM_HOLD) _exit(11);
  int info[2] = {cgnet_engine_listen_port(eng, 0), (int)(limit - open_now)};
  if (write(wfd, info, sizeof(info)) != (ssize_t)sizeof(info)) _exit(12);
  char cmd;
  while (read(rfd, &cmd, 1) < 0 && errno == EINTR) {
  }
  tu_set_nofile(4096);
  if (cgnet_engine_stop(eng, 0) != 0) _exit(13);
  if (cgnet_engine_wait(eng) != 0) _exit(14);
  cgnet_engine_free(eng);
  _exit(0);
}

static int em_teardown(void **state) {
  if (em_child > 0) {
    kill(em_child, SIGKILL);
    waitpid(em_child, NULL, 0);
    em_child = -1;
  }
  return tu_teardown(state);
}

/* One echo round trip: 1 served, 0 closed by the server, <0 other error. */
static int em_ping(int fd) {
  char b = 'e';
  int rc = tu_send_all(fd, &b, 1, 2000 * TU_SLOW);
  if (rc == -EPIPE || rc == -ECONNRESET) return 0;
  if (rc) return rc;
  rc = tu_recv_exact(fd, &b, 1, 2000 * TU_SLOW, NULL);
  if (rc == 0) return b == 'e' ? 1 : -EIO;
  if (rc == TU_EEOF || rc == -ECONNRESET) return 0;
  return rc;
}

static void test_emfile(void **state) {
  (void)state;
  int up[2], down[2];
  assert_int_equal(pipe2(up, O_CLOEXEC), 0);
  assert_int_equal(pipe2(down, O_CLOEXEC), 0);
  fflush(NULL);
  em_child = fork();
  assert_true(em_child >= 0);
  if (em_child == 0) {
    close(up[0]);
    close(down[1]);
    em_child_main(up[1], down[0]);
  }
  close(up[1]);
  close(down[0]);
  int info[2] = {0, 0};
  struct pollfd p = {.fd = up[0], .events = POLLIN};
  assert_true(poll(&p, 1, TU_TIMEOUT_MS) == 1);
  assert_int_equal(read(up[0], info, sizeof(info)), (ssize_t)sizeof(info));
  const int port = info[0], cap = info[1];
  print_message("child %d: port %d, room for %d conns\n", (int)em_child, port, cap);
  assert_true(port > 0);
  assert_true(cap >= EM_HOLD && cap <= EM_HOLD + 3);

  /* Fill the server up: every one of these is served. */
  int held[EM_HOLD + 16];
  for (int i = 0; i < cap; i++) {
    held[i] = tu_connect4(port);
    assert_true(held[i] >= 0);
    if (em_ping(held[i]) != 1) fail_msg("client %d of %d not served", i + 1, cap);
  }

  /* Clients keep coming for ~1 s: each is closed by the server, which stays calm. */
  long cpu0 = tu_cpu_ms(em_child);
  uint64_t t0 = tu_now_ms();
  int attempts = 0, shed = 0;
  while (tu_now_ms() - t0 < 1000) {
    int fd = tu_connect4(port);
    assert_true(fd >= 0);
    attempts++;
    size_t extra = 0;
    int rc = tu_expect_eof(fd, 1000 * TU_SLOW, &extra);
    if ((rc == 0 || rc == -ECONNRESET) && extra == 0) shed++;
    close(fd);
    tu_sleep_ms(10);
  }
  long cpu1 = tu_cpu_ms(em_child);
  uint64_t wall = tu_now_ms() - t0;
  print_message("EMFILE: %d/%d extra clients shed; server CPU %ld ms over %llu ms\n", shed,
                attempts, cpu1 - cpu0, (unsigned long long)wall);
  assert_true(attempts >= 10);
  assert_int_equal(shed, attempts);
  assert_true(cpu0 >= 0 && cpu1 >= 0);
  if (cpu1 - cpu0 >= 300)
    fail_msg("server used %ld ms of CPU in ~1 s while out of fds", cpu1 - cpu0);

  /* The held ones still work; after two leave, new clients are served again. */
  for (int i = 0; i < cap; i++)
    assert_int_equal(em_ping(held[i]), 1);
  close(held[cap - 1]);
  close(held[cap - 2]);
  int served = 0;
  uint64_t end = tu_now_ms() + 5000 * TU_SLOW;
  int fresh[2] = {-1, -1};
  while (served < 2 && tu_now_ms() < end) {
    int fd = tu_connect4(port);
    assert_true(fd >= 0);
    int r = em_ping(fd);
    if (r == 1) {
      fresh[served++] = fd;
    } else {
      close(fd);
      tu_sleep_ms(20);
    }
  }
  assert_int_equal(served, 2);
  for (int i = 0; i < cap - 2; i++)
    assert_int_equal(em_ping(held[i]), 1);
  for (int i = 0; i < cap - 2; i++)
    close(held[i]);
  close(fresh[0]);
  close(fresh[1]);

  assert_int_equal(write(down[1], "q", 1), 1);
  int status = -1;
  end = tu_now_ms() + TU_TIMEOUT_MS;
  pid_t r;
  while ((r = waitpid(em_child, &status, WNOHANG)) == 0 && tu_now_ms() < end)
    tu_sleep_ms(5);
  assert_int_equal(r, em_child);
  em_child = -1;
  close(up[0]);
  close(down[1]);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("child server ended with status 0x%x", status);
}

/* ---- registry
 * ------------------------------------------------------------------------------ */

static const bp_cfg bp_default = {0, 0, 0};
static const bp_cfg bp_custom_edge = {256 * 1024, 32 * 1024, 1};
static const int zero = 0, one = 1, two = 2;
static const int hc_modes[] = {HC_SHUTDOWN, HC_LATER, HC_CLOSE, HC_NONE_LEVEL,
                               HC_NONE_EDGE};

#define TS(name, f, st)                                                                    \
  { name, f, tu_setup, tu_teardown, (void *)(st) }

int main(void) {
  tu_apply_test_filter(); /* e.g. CGNET_TEST_FILTER=timeout */
  const struct CMUnitTest tests[] = {
      TS("backpressure/default/level", test_backpressure, &bp_default),
      TS("backpressure/256k-32k/edge", test_backpressure, &bp_custom_edge),
      TS("echo_no_read/level", test_echo_no_read, &zero),
      TS("echo_no_read/edge", test_echo_no_read, &one),
      TS("write_buffer_limit", test_write_buffer_limit, NULL),
      TS("write_limit_partial", test_write_limit_partial, NULL),
      TS("pause_resume/level", test_pause_resume, &zero),
      TS("pause_resume/edge", test_pause_resume, &one),
      TS("pause_outlives_watermark/level", test_pause_outlives_watermark, &zero),
      TS("pause_outlives_watermark/edge", test_pause_outlives_watermark, &one),
      TS("interest_same_turn", test_interest_same_turn, NULL),
      TS("idle_timeout/fresh", test_idle_timeout, &zero),
      TS("idle_timeout/after_quiet", test_idle_timeout, &one),
      TS("timeout_activity/idle", test_timeout_activity, &zero),
      TS("timeout_activity/read", test_timeout_activity, &one),
      TS("read_timeout_ignores_writes", test_read_timeout_ignores_writes, NULL),
      TS("write_timeout", test_write_timeout, NULL),
      TS("timeout_overrides", test_timeout_overrides, NULL),
      TS("never_timeouts", test_never_timeouts, NULL),
      TS("max_connections", test_max_connections, NULL),
      TS("half_close/shutdown_write", test_half_close, &hc_modes[0]),
      TS("half_close/reply_later", test_half_close, &hc_modes[1]),
      TS("half_close/close_action", test_half_close, &hc_modes[2]),
      TS("half_close/off/level", test_half_close, &hc_modes[3]),
      TS("half_close/off/edge", test_half_close, &hc_modes[4]),
      TS("shutdown_write/plain", test_shutdown_write, &zero),
      TS("shutdown_write/half_open", test_shutdown_write, &one),
      TS("paused_hangup_closes", test_paused_hangup_closes, NULL),
      TS("graceful_stop/drains", test_graceful_stop, &zero),
      TS("graceful_stop/timeout", test_graceful_stop, &one),
      TS("graceful_stop/never", test_graceful_stop, &two),
      {"emfile", test_emfile, tu_setup, em_teardown, NULL},
  };
  return cmocka_run_group_tests_name("test_flow", tests, NULL, group_teardown);
}
