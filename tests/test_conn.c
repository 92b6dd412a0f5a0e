/*
 * The connection API from inside callbacks, over real loopback sockets: reading
 * (peek/next/discard/read/inbound_buffered, bytes kept across calls), writing (writev,
 * flush, outbound_buffered), addresses, socket controls and the engine's socket defaults,
 * cgnet_conn_close, loop/engine handles, and cgnet_format_addr.
 *
 * Checks inside callbacks use TU_CHECK (they run on loop threads); the test thread
 * asserts that none failed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

/* ---- shared
 * ------------------------------------------------------------------------------ */

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

static cgnet_handler base_handler(tu_tracker *t) {
  cgnet_handler h = {.ud = t,
                     .on_open = track_on_open,
                     .on_close = track_on_close,
                     .on_shutdown = track_on_shutdown};
  return h;
}

/* Finish a test: stop the engine, then every conn must have closed once. */
static void finish(tu_server *srv, tu_tracker *t, int nconns) {
  assert_rc(tu_server_stop(srv, 1000), 0);
  assert_int_equal(atomic_load(&t->opens), nconns);
  assert_true(tu_tracker_all_closed_once(t));
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_no_check_failures();
  tu_tracker_free(t);
}

static void expect_reply(int fd, const char *want) {
  size_t n = strlen(want);
  char buf[256];
  assert_true(n < sizeof(buf));
  size_t got = 0;
  int rc = tu_recv_exact(fd, buf, n, TU_TIMEOUT_MS, &got);
  if (rc != 0) fail_msg("waiting for \"%s\": rc %d after %zu bytes", want, rc, got);
  if (memcmp(buf, want, n) != 0) fail_msg("got \"%.*s\", want \"%s\"", (int)n, buf, want);
}

/* Nothing arrives within ms. */
static void expect_silence(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r = poll(&p, 1, ms);
  if (r != 0) fail_msg("unexpected data (or close) from the server");
}

/* The client sends "ping" and checks that it comes back. */
static void echo_ping(int fd) {
  assert_rc(tu_send_all(fd, "ping", 4, TU_TIMEOUT_MS), 0);
  expect_reply(fd, "ping");
}

static int get_int_opt(int fd, int level, int name) {
  int v = -12345;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, name, &v, &len) < 0) return -12345;
  return v;
}

/* ---- peek / next / discard / read / inbound_buffered
 * ------------------------------------------ */

static const char MSG16[] = "0123456789ABCDEF";

static cgnet_action read_api_on_traffic(cgnet_conn *c) {
  if (cgnet_conn_inbound_buffered(c) < 16) return CGNET_NONE;
  const uint8_t *p = NULL;
  char buf[64];
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 16);

  TU_CHECK_EQ(cgnet_conn_peek(c, 4, &p), 4); /* peek does not consume */
  TU_CHECK(p && memcmp(p, "0123", 4) == 0);
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 16);
  TU_CHECK_EQ(cgnet_conn_peek(c, 0, &p), 16); /* 0: everything */
  TU_CHECK(p && memcmp(p, MSG16, 16) == 0);
  TU_CHECK_EQ(cgnet_conn_peek(c, 100, &p), 16); /* capped at what is buffered */
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 16);

  TU_CHECK_EQ(cgnet_conn_next(c, 4, &p), 4); /* next consumes */
  TU_CHECK(p && memcmp(p, "0123", 4) == 0);
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 12);
  TU_CHECK_EQ(cgnet_conn_peek(c, 1, &p), 1);
  TU_CHECK(p && p[0] == '4');

  TU_CHECK_EQ(cgnet_conn_discard(c, 2), 2); /* drops "45" */
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 10);
  TU_CHECK_EQ(cgnet_conn_peek(c, 1, &p), 1);
  TU_CHECK(p && p[0] == '6');

  TU_CHECK_EQ(cgnet_conn_read(c, buf, 0), 0);
  TU_CHECK_EQ(cgnet_conn_read(c, buf, 3), 3); /* "678" */
  TU_CHECK(memcmp(buf, "678", 3) == 0);
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 7);
  TU_CHECK_EQ(cgnet_conn_read(c, buf, sizeof(buf)), 7); /* the rest */
  TU_CHECK(memcmp(buf, "9ABCDEF", 7) == 0);
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 0);

  TU_CHECK_EQ(cgnet_conn_discard(c, 5), 0); /* empty: nothing to take */
  TU_CHECK_EQ(cgnet_conn_next(c, 3, &p), 0);
  TU_CHECK_EQ(cgnet_conn_peek(c, 0, &p), 0);
  TU_CHECK_EQ(cgnet_conn_read(c, buf, sizeof(buf)), 0);
  TU_CHECK_EQ(cgnet_conn_write(c, "ok\n", 3), 0);
  return CGNET_NONE;
}

static void run_read_api(int et) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_traffic = read_api_on_traffic;
  cgnet_options o = {.edge_triggered = et};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  for (int round = 0; round < 3; round++) { /* the conn's buffer is reused afterwards */
    assert_rc(tu_send_all(fd, MSG16, 16, TU_TIMEOUT_MS), 0);
    expect_reply(fd, "ok\n");
  }
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
}

static void test_read_api_level(void **state) {
  (void)state;
  run_read_api(0);
}

static void test_read_api_edge(void **state) {
  (void)state;
  run_read_api(1);
}

/* ---- bytes left unconsumed stay for the next on_traffic
 * ---------------------------------------- */

static cgnet_action partial_on_traffic(cgnet_conn *c) {
  tu_slot *s = tu_slot_of(c);
  TU_CHECK(s != NULL);
  if (!s) return CGNET_CLOSE;
  size_t buffered = cgnet_conn_inbound_buffered(c);
  atomic_fetch_add(&s->traffic, 1);
  /* Each call sees everything so far: more than the call before. */
  TU_CHECK(buffered > atomic_load(&s->bytes));
  atomic_store(&s->bytes, buffered);
  if (buffered < 10) return CGNET_NONE; /* wait for the whole message */
  char msg[10];
  TU_CHECK_EQ(cgnet_conn_read(c, msg, sizeof(msg)), 10);
  TU_CHECK_EQ(cgnet_conn_write(c, msg, sizeof(msg)), 0);
  atomic_store(&s->bytes, 0);
  return CGNET_NONE;
}

static void run_partial(int et) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_traffic = partial_on_traffic;
  cgnet_options o = {.edge_triggered = et, .num_loops = 2};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  const char *parts[] = {"abc", "defg", "hij"};
  for (int i = 0; i < 3; i++) {
    assert_rc(tu_send_all(fd, parts[i], strlen(parts[i]), TU_TIMEOUT_MS), 0);
    if (i < 2) expect_silence(fd, 50 * TU_SLOW); /* not a byte back before 10 arrived */
  }
  expect_reply(fd, "abcdefghij");
  /* The same again, so the consumed message is really gone. */
  for (int i = 0; i < 3; i++) {
    assert_rc(tu_send_all(fd, parts[i], strlen(parts[i]), TU_TIMEOUT_MS), 0);
    if (i < 2) expect_silence(fd, 30 * TU_SLOW);
  }
  expect_reply(fd, "abcdefghij");
  /* Several calls per message: the bytes really waited in the conn's buffer. */
  if (atomic_load(&t->slots[0].traffic) < 4)
    fail_msg("on_traffic ran %d times for two 3-part messages",
             atomic_load(&t->slots[0].traffic));
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&t->slots[0].reason), CGNET_EOF);
  finish(&srv, t, 1);
}

static void test_partial_level(void **state) {
  (void)state;
  run_partial(0);
}

static void test_partial_edge(void **state) {
  (void)state;
  run_partial(1);
}

/* ---- writev
 * -------------------------------------------------------------------------------- */

#define WV_N 150 /* more iovecs than one writev syscall takes from cgnet (64) */
#define WV_SEED 9

typedef struct wv_data {
  uint8_t *stream;
  size_t len;
  struct iovec iov[WV_N];
} wv_data;

static cgnet_action writev_on_traffic(cgnet_conn *c) {
  wv_data *d = tu_tracker_of_conn(c)->user;
  uint8_t cmd;
  while (cgnet_conn_read(c, &cmd, 1) == 1) {
    if (cmd == '1') {
      struct iovec iov[] = {{(void *)"alpha-", 6},
                            {(void *)"beta-", 5},
                            {(void *)"", 0},
                            {(void *)"gamma\n", 6}};
      TU_CHECK_EQ(cgnet_conn_writev(c, iov, 4), 0);
    } else if (cmd == '2') {
      TU_CHECK_EQ(cgnet_conn_writev(c, d->iov, WV_N), 0);
    } else if (cmd == '3') { /* writev after plain writes keeps the order */
      struct iovec iov[] = {{(void *)"B", 1}, {(void *)"C", 1}};
      TU_CHECK_EQ(cgnet_conn_write(c, "A", 1), 0);
      TU_CHECK_EQ(cgnet_conn_writev(c, iov, 2), 0);
      TU_CHECK_EQ(cgnet_conn_write(c, "D\n", 2), 0);
    }
  }
  return CGNET_NONE;
}

static void test_writev(void **state) {
  (void)state;
  wv_data *d = calloc(1, sizeof(*d));
  assert_non_null(d);
  /* Slices of one pattern stream: tiny, empty and large (60 KiB) pieces mixed. */
  size_t off = 0;
  for (int i = 0; i < WV_N; i++) {
    size_t n = (size_t)((i * 37) % 1000);
    if (i % 25 == 0) n += 60000 / TU_PAYLOAD_DIV;
    if (i % 7 == 0) n = 0;
    d->iov[i].iov_len = n;
    off += n;
  }
  d->len = off;
  d->stream = malloc(d->len);
  tu_pattern_fill(d->stream, d->len, WV_SEED, 0);
  off = 0;
  for (int i = 0; i < WV_N; i++) {
    d->iov[i].iov_base = d->stream + off;
    off += d->iov[i].iov_len;
  }

  tu_tracker *t = tu_tracker_new();
  t->user = d;
  cgnet_handler h = base_handler(t);
  h.on_traffic = writev_on_traffic;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_rc(tu_send_all(fd, "1", 1, TU_TIMEOUT_MS), 0);
  expect_reply(fd, "alpha-beta-gamma\n");
  assert_rc(tu_send_all(fd, "2", 1, TU_TIMEOUT_MS), 0);
  uint8_t *rx = malloc(d->len);
  assert_rc(tu_recv_exact(fd, rx, d->len, TU_TIMEOUT_MS, NULL), 0);
  size_t diff = tu_first_diff(rx, d->stream, d->len);
  if (diff != SIZE_MAX) fail_msg("writev stream differs at %zu of %zu", diff, d->len);
  assert_rc(tu_send_all(fd, "3", 1, TU_TIMEOUT_MS), 0);
  expect_reply(fd, "ABCD\n");
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
  free(rx);
  free(d->stream);
  free(d);
}

/* ---- flush and outbound_buffered
 * ------------------------------------------------------------- */

/* Well past what the peer's receive window takes while it does not read (not scaled
 * down under TSan: it must overflow the socket to test the queue). */
#define BIG_OUT ((size_t)2 << 20)
static atomic_size_t big_out_queued;

static cgnet_action flush_on_traffic(cgnet_conn *c) {
  uint8_t cmd;
  while (cgnet_conn_read(c, &cmd, 1) == 1) {
    if (cmd == '1') {
      TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), 0);
      TU_CHECK_EQ(cgnet_conn_write(c, "0123456789", 10), 0);
      TU_CHECK_EQ(cgnet_conn_outbound_buffered(c),
                  10); /* small writes wait for the flush */
      TU_CHECK_EQ(cgnet_conn_flush(c), 0);
      TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), 0); /* the socket took all of it */
      TU_CHECK_EQ(cgnet_conn_flush(c), 0);             /* nothing left: harmless */
    } else if (cmd == '2') {
      /* More than the socket can hold while the peer does not read. */
      TU_CHECK_EQ(cgnet_conn_set_send_buffer(c, 4096), 0);
      uint8_t *big = malloc(BIG_OUT);
      tu_pattern_fill(big, BIG_OUT, 5, 0);
      TU_CHECK_EQ(cgnet_conn_write(c, big, BIG_OUT), 0);
      free(big); /* the data was copied */
      size_t q = cgnet_conn_outbound_buffered(c);
      atomic_store(&big_out_queued, q);
      TU_CHECK(q > 0 && q <= BIG_OUT);
      TU_CHECK_EQ(cgnet_conn_flush(c), 0);
      TU_CHECK(cgnet_conn_outbound_buffered(c) <= q);
      TU_CHECK_EQ(cgnet_conn_set_send_buffer(c, 1 << 20), 0); /* drain at full speed */
    } else if (cmd == '3') {
      TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), 0); /* all delivered by now */
      TU_CHECK_EQ(cgnet_conn_write(c, "k", 1), 0);
    }
  }
  return CGNET_NONE;
}

static void test_flush_and_outbound(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_traffic = flush_on_traffic;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_rc(tu_send_all(fd, "1", 1, TU_TIMEOUT_MS), 0);
  expect_reply(fd, "0123456789");
  assert_rc(tu_send_all(fd, "2", 1, TU_TIMEOUT_MS), 0);
  tu_sleep_ms(50); /* let the server fill the socket before we drain it */
  uint8_t *rx = malloc(BIG_OUT);
  assert_rc(tu_recv_exact(fd, rx, BIG_OUT, TU_TIMEOUT_MS, NULL), 0);
  assert_int_equal(tu_pattern_mismatches(rx, BIG_OUT, 5, 0), 0);
  assert_true(atomic_load(&big_out_queued) > 0);
  assert_rc(tu_send_all(fd, "3", 1, TU_TIMEOUT_MS), 0);
  expect_reply(fd, "k");
  close(fd);
  free(rx);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
}

/* ---- addresses
 * --------------------------------------------------------------------------------- */

typedef struct seen_addrs {
  char local[64], remote[64];
  struct sockaddr_storage lsa, rsa;
  socklen_t llen, rlen;
  int fd, fd_port;
} seen_addrs;

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static seen_addrs seen;      /* guarded by seen_mu */
static atomic_int seen_done; /* set once `seen` is filled */

static cgnet_action addr_on_open(cgnet_conn *c) {
  track_on_open(c);
  pthread_mutex_lock(&seen_mu);
  const char *l = cgnet_conn_local_addr_string(c), *r = cgnet_conn_remote_addr_string(c);
  snprintf(seen.local, sizeof(seen.local), "%s", l ? l : "(null)");
  snprintf(seen.remote, sizeof(seen.remote), "%s", r ? r : "(null)");
  socklen_t ll = 0, rl = 0;
  const struct sockaddr *lsa = cgnet_conn_local_addr(c, &ll);
  const struct sockaddr *rsa = cgnet_conn_remote_addr(c, &rl);
  TU_CHECK(lsa != NULL && rsa != NULL);
  TU_CHECK(ll <= sizeof(seen.lsa) && rl <= sizeof(seen.rsa));
  if (lsa && ll <= sizeof(seen.lsa)) memcpy(&seen.lsa, lsa, ll);
  if (rsa && rl <= sizeof(seen.rsa)) memcpy(&seen.rsa, rsa, rl);
  seen.llen = ll;
  seen.rlen = rl;
  seen.fd = cgnet_conn_fd(c);
  seen.fd_port = tu_local_port(seen.fd); /* the fd is the real socket */
  /* The string forms are stable across calls. */
  l = cgnet_conn_local_addr_string(c);
  TU_CHECK(l && strcmp(l, seen.local) == 0);
  pthread_mutex_unlock(&seen_mu);
  atomic_store(&seen_done, 1);
  return CGNET_NONE;
}

static int sa_port(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return -1;
}

static void run_addresses(int family) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_open = addr_on_open;
  const char *addr[] = {family == AF_INET ? "tcp://127.0.0.1:0" : "tcp6://[::1]:0"};
  tu_server srv;
  atomic_store(&seen_done, 0);
  assert_rc(tu_server_start_at(&srv, &h, addr, 1, NULL), 0);
  int fd = tu_connect(family, srv.port, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);
  int cport = tu_local_port(fd);
  assert_true(tu_wait_atomic_eq(&seen_done, 1, TU_TIMEOUT_MS));

  char want_l[64], want_r[64];
  const char *host = family == AF_INET ? "127.0.0.1" : "[::1]";
  snprintf(want_l, sizeof(want_l), "%s:%d", host, srv.port);
  snprintf(want_r, sizeof(want_r), "%s:%d", host, cport);
  pthread_mutex_lock(&seen_mu);
  seen_addrs s = seen; /* copy out under the lock */
  pthread_mutex_unlock(&seen_mu);
  assert_string_equal(s.local, want_l);
  assert_string_equal(s.remote, want_r);
  assert_true(s.fd > 0);
  assert_int_equal(s.fd_port, srv.port);
  assert_int_equal(s.lsa.ss_family, family);
  assert_int_equal(s.rsa.ss_family, family);
  size_t want_len =
      family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  assert_int_equal(s.llen, want_len);
  assert_int_equal(s.rlen, want_len);
  assert_int_equal(sa_port(&s.lsa), srv.port);
  assert_int_equal(sa_port(&s.rsa), cport);
  if (family == AF_INET) {
    assert_int_equal(ntohl(((struct sockaddr_in *)&s.lsa)->sin_addr.s_addr),
                     INADDR_LOOPBACK);
    assert_int_equal(ntohl(((struct sockaddr_in *)&s.rsa)->sin_addr.s_addr),
                     INADDR_LOOPBACK);
  } else {
    assert_memory_equal(&((struct sockaddr_in6 *)&s.lsa)->sin6_addr, &in6addr_loopback, 16);
    assert_memory_equal(&((struct sockaddr_in6 *)&s.rsa)->sin6_addr, &in6addr_loopback, 16);
  }
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
}

static void test_addresses_v4(void **state) {
  (void)state;
  run_addresses(AF_INET);
}

static void test_addresses_v6(void **state) {
  (void)state;
  if (!tu_have_ipv6_loopback()) {
    fprintf(stderr, "note: ::1 unavailable, skipping\n");
    skip();
  }
  run_addresses(AF_INET6);
}

/* ---- socket controls
 * --------------------------------------------------------------------------- */

static atomic_int controls_done;

static cgnet_action controls_on_open(cgnet_conn *c) {
  track_on_open(c);
  int fd = cgnet_conn_fd(c);
  TU_CHECK(fd > 0);

  TU_CHECK_EQ(cgnet_conn_set_nodelay(c, 1), 0);
  TU_CHECK(get_int_opt(fd, IPPROTO_TCP, TCP_NODELAY) != 0);
  TU_CHECK_EQ(cgnet_conn_set_nodelay(c, 0), 0);
  TU_CHECK_EQ(get_int_opt(fd, IPPROTO_TCP, TCP_NODELAY), 0);
  TU_CHECK_EQ(cgnet_conn_set_nodelay(c, 1), 0);
  TU_CHECK(get_int_opt(fd, IPPROTO_TCP, TCP_NODELAY) != 0);

  TU_CHECK_EQ(cgnet_conn_set_keepalive(c, 7, 3, 4), 0);
  TU_CHECK(get_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE) != 0);
  TU_CHECK_EQ(get_int_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), 7);
  TU_CHECK_EQ(get_int_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), 3);
  TU_CHECK_EQ(get_int_opt(fd, IPPROTO_TCP, TCP_KEEPCNT), 4);
  TU_CHECK_EQ(cgnet_conn_set_keepalive(c, 0, 0, 0), 0); /* off */
  TU_CHECK_EQ(get_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);

  struct linger lg;
  socklen_t len = sizeof(lg);
  TU_CHECK_EQ(cgnet_conn_set_linger(c, 5), 0);
  TU_CHECK(getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && lg.l_onoff &&
           lg.l_linger == 5);
  TU_CHECK_EQ(cgnet_conn_set_linger(c, 0), 0);
  len = sizeof(lg);
  TU_CHECK(getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && lg.l_onoff &&
           lg.l_linger == 0);
  TU_CHECK_EQ(cgnet_conn_set_linger(c, -1), 0);
  len = sizeof(lg);
  TU_CHECK(getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && !lg.l_onoff);

  /* The kernel doubles buffer sizes (for its bookkeeping). */
  TU_CHECK_EQ(cgnet_conn_set_recv_buffer(c, 65536), 0);
  TU_CHECK(get_int_opt(fd, SOL_SOCKET, SO_RCVBUF) >= 65536);
  TU_CHECK_EQ(cgnet_conn_set_send_buffer(c, 65536), 0);
  TU_CHECK(get_int_opt(fd, SOL_SOCKET, SO_SNDBUF) >= 65536);
  TU_CHECK_EQ(cgnet_conn_set_recv_buffer(c, 8192), 0);
  TU_CHECK(get_int_opt(fd, SOL_SOCKET, SO_RCVBUF) < 65536);

  TU_CHECK_EQ(cgnet_conn_write(c, "ok\n", 3), 0);
  atomic_store(&controls_done, 1);
  return CGNET_NONE;
}

static void test_socket_controls(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_open = controls_on_open;
  atomic_store(&controls_done, 0);
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  expect_reply(fd, "ok\n");
  assert_true(atomic_load(&controls_done));
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
}

/* ---- socket defaults from the options
 * ---------------------------------------------------------- */

typedef struct sockopts_seen {
  atomic_int done, nodelay, keepalive, idle, intvl, cnt, linger_on, linger_s, rcvbuf,
      sndbuf;
} sockopts_seen;

static sockopts_seen sos;

static cgnet_action defaults_on_open(cgnet_conn *c) {
  track_on_open(c);
  int fd = cgnet_conn_fd(c);
  atomic_store(&sos.nodelay, get_int_opt(fd, IPPROTO_TCP, TCP_NODELAY) != 0);
  atomic_store(&sos.keepalive, get_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE) != 0);
  atomic_store(&sos.idle, get_int_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE));
  atomic_store(&sos.intvl, get_int_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL));
  atomic_store(&sos.cnt, get_int_opt(fd, IPPROTO_TCP, TCP_KEEPCNT));
  struct linger lg = {0, 0};
  socklen_t len = sizeof(lg);
  TU_CHECK(getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0);
  atomic_store(&sos.linger_on, lg.l_onoff != 0);
  atomic_store(&sos.linger_s, lg.l_linger);
  atomic_store(&sos.rcvbuf, get_int_opt(fd, SOL_SOCKET, SO_RCVBUF));
  atomic_store(&sos.sndbuf, get_int_opt(fd, SOL_SOCKET, SO_SNDBUF));
  atomic_store(&sos.done, 1);
  return CGNET_NONE;
}

/* Start an engine with `o`, connect once, and fill `sos` from the accepted socket. */
static void observe_defaults(const cgnet_options *o) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_open = defaults_on_open;
  atomic_store(&sos.done, 0);
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, o), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_true(tu_wait_atomic_eq(&sos.done, 1, TU_TIMEOUT_MS));
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
}

static void test_socket_defaults(void **state) {
  (void)state;
  cgnet_options o;

  memset(&o, 0, sizeof(o)); /* all defaults: Nagle off, no keep-alive, no linger */
  observe_defaults(&o);
  assert_int_equal(atomic_load(&sos.nodelay), 1);
  assert_int_equal(atomic_load(&sos.keepalive), 0);
  assert_int_equal(atomic_load(&sos.linger_on), 0);

  memset(&o, 0, sizeof(o));
  o.tcp_nodelay = CGNET_OFF;
  o.tcp_keepalive = 30;
  observe_defaults(&o);
  assert_int_equal(atomic_load(&sos.nodelay), 0);
  assert_int_equal(atomic_load(&sos.keepalive), 1);
  assert_int_equal(atomic_load(&sos.idle), 30);
  assert_int_equal(atomic_load(&sos.intvl), 30); /* default interval: the idle time */

  memset(&o, 0, sizeof(o));
  o.tcp_nodelay = CGNET_ON;
  o.tcp_keepalive = 20;
  o.tcp_keepalive_interval = 5;
  o.tcp_keepalive_count = 3;
  o.linger = 7;
  o.socket_recv_buffer = 32768;
  o.socket_send_buffer = 49152;
  observe_defaults(&o);
  assert_int_equal(atomic_load(&sos.nodelay), 1);
  assert_int_equal(atomic_load(&sos.keepalive), 1);
  assert_int_equal(atomic_load(&sos.idle), 20);
  assert_int_equal(atomic_load(&sos.intvl), 5);
  assert_int_equal(atomic_load(&sos.cnt), 3);
  assert_int_equal(atomic_load(&sos.linger_on), 1);
  assert_int_equal(atomic_load(&sos.linger_s), 7);
  assert_true(atomic_load(&sos.rcvbuf) >= 32768);
  assert_true(atomic_load(&sos.sndbuf) >= 49152);

  memset(&o, 0, sizeof(o));
  o.linger = CGNET_LINGER_RESET;
  observe_defaults(&o);
  assert_int_equal(atomic_load(&sos.linger_on), 1);
  assert_int_equal(atomic_load(&sos.linger_s), 0);
}

/* ---- cgnet_conn_close from on_traffic
 * ---------------------------------------------------------- */

static atomic_int close_write_rc = 0;

static cgnet_action close_on_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_peek(c, 0, &p);
  if (n < 3) return CGNET_NONE;
  TU_CHECK(memcmp(p, "bye", 3) == 0);
  cgnet_conn_discard(c, n);
  TU_CHECK_EQ(cgnet_conn_write(c, "goodbye\n", 8), 0);
  TU_CHECK_EQ(cgnet_conn_close(c), 0);
  /* Closing: further writes are refused. */
  TU_CHECK_EQ(cgnet_conn_write(c, "x", 1), CGNET_ECLOSED);
  struct iovec iov = {(void *)"y", 1};
  TU_CHECK_EQ(cgnet_conn_writev(c, &iov, 1), CGNET_ECLOSED);
  return CGNET_NONE;
}

static cgnet_action close_on_close(cgnet_conn *c, int reason) {
  atomic_store(&close_write_rc, cgnet_conn_write(c, "z", 1));
  return track_on_close(c, reason);
}

static void test_conn_close(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_traffic = close_on_traffic;
  h.on_close = close_on_close;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  for (int k = 0; k < 3; k++) {
    int fd = tu_connect4(srv.port);
    assert_true(fd >= 0);
    assert_rc(tu_send_all(fd, "bye", 3, TU_TIMEOUT_MS), 0);
    expect_reply(fd, "goodbye\n"); /* written before the close: delivered */
    size_t extra = 0;
    assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, &extra), 0); /* then EOF, nothing after */
    assert_int_equal(extra, 0);
    close(fd);
    assert_true(tu_wait_atomic_ge(&t->closes, k + 1, TU_TIMEOUT_MS));
    assert_int_equal(atomic_load(&t->slots[k].reason), CGNET_ELOCALCLOSE);
    assert_int_equal(atomic_load(&close_write_rc), CGNET_ECLOSED);
  }
  assert_true(tu_wait_conns(srv.eng, 0, TU_TIMEOUT_MS));
  finish(&srv, t, 3);
}

/* ---- on_pre_write before a direct write ------------------------------------------- */

/* A large write with nothing queued goes straight to the socket, after on_pre_write. What
 * on_pre_write writes then must go first, and the large write follow it whole: the peer
 * reads "P" and then the pattern, never the two interleaved. */
#define PW_BIG (256 * 1024)
static atomic_int pw_calls;

static void pw_pre_write(cgnet_conn *c) {
  if (atomic_fetch_add(&pw_calls, 1) == 0) TU_CHECK_EQ(cgnet_conn_write(c, "P", 1), 0);
}

static cgnet_action pw_open(cgnet_conn *c) {
  track_on_open(c);
  uint8_t *big = malloc(PW_BIG);
  TU_CHECK(big != NULL);
  if (!big) return CGNET_CLOSE;
  tu_pattern_fill(big, PW_BIG, 77, 0);
  TU_CHECK_EQ(cgnet_conn_write(c, big, PW_BIG), 0);
  free(big);
  return CGNET_NONE;
}

static void test_pre_write_before_direct(void **state) {
  (void)state;
  atomic_store(&pw_calls, 0);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_open = pw_open;
  h.on_pre_write = pw_pre_write;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  uint8_t *got = malloc(PW_BIG + 1);
  assert_non_null(got);
  size_t n = 0;
  assert_rc(tu_recv_exact(fd, got, PW_BIG + 1, TU_TIMEOUT_MS, &n), 0);
  assert_int_equal(got[0], 'P');
  assert_int_equal(tu_pattern_mismatches(got + 1, PW_BIG, 77, 0), 0);
  free(got);
  close(fd);
  assert_true(tu_wait_atomic_ge(&t->closes, 1, TU_TIMEOUT_MS));
  finish(&srv, t, 1);
}

/* ---- loop-only calls from the wrong thread ------------------------------------------ */

/* Two loops; each conn keeps a reference in `wt_conns`. The test thread, and a task on
 * the other loop, call every conn-changing loop-only function: each returns
 * CGNET_EWRONGTHREAD and changes nothing, so the conn still echoes afterwards. */
static _Atomic(cgnet_conn *) wt_conns[2];
static atomic_int wt_other_loop_errors, wt_other_loop_calls;

static int both_wt_conns_kept(void *arg) {
  (void)arg;
  return atomic_load(&wt_conns[0]) != NULL && atomic_load(&wt_conns[1]) != NULL;
}

static cgnet_action wt_on_open(cgnet_conn *c) {
  track_on_open(c);
  for (int i = 0; i < 2; i++) {
    cgnet_conn *none = NULL;
    if (atomic_compare_exchange_strong(&wt_conns[i], &none, c)) {
      cgnet_conn_ref(c);
      break;
    }
  }
  return CGNET_NONE;
}

static cgnet_action wt_on_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  return CGNET_NONE;
}

/* Every guarded call on c; returns how many did not answer CGNET_EWRONGTHREAD. */
static int wrong_thread_calls(cgnet_conn *c) {
  struct iovec iov = {.iov_base = "x", .iov_len = 1};
  int rcs[] = {
      cgnet_conn_write(c, "x", 1),        cgnet_conn_writev(c, &iov, 1),
      cgnet_conn_write_frame(c, "x", 1),  cgnet_conn_flush(c),
      cgnet_conn_shutdown_write(c),       cgnet_conn_pause_read(c),
      cgnet_conn_resume_read(c),          cgnet_conn_set_codec(c, NULL),
      cgnet_conn_set_idle_timeout(c, 1),  cgnet_conn_set_read_timeout(c, 1),
      cgnet_conn_set_write_timeout(c, 1), cgnet_conn_close(c),
  };
  int bad = 0;
  for (size_t i = 0; i < sizeof rcs / sizeof rcs[0]; i++)
    if (rcs[i] != CGNET_EWRONGTHREAD) bad++;
  return bad;
}

static void wt_on_other_loop(cgnet_loop *loop, void *ud) {
  cgnet_conn *c = ud;
  TU_CHECK(cgnet_conn_loop(c) != loop);
  atomic_fetch_add(&wt_other_loop_errors, wrong_thread_calls(c));
  atomic_fetch_add(&wt_other_loop_calls, 1);
}

static void test_wrong_thread(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_open = wt_on_open;
  h.on_traffic = wt_on_traffic;
  cgnet_options o = {.num_loops = 2, .lb = CGNET_LB_ROUND_ROBIN};
  atomic_store(&wt_conns[0], NULL);
  atomic_store(&wt_conns[1], NULL);
  atomic_store(&wt_other_loop_errors, 0);
  atomic_store(&wt_other_loop_calls, 0);
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  int fds[2];
  for (int i = 0; i < 2; i++) {
    fds[i] = tu_connect4(srv.port);
    assert_true(fds[i] >= 0);
  }
  /* on_open counts the open first and keeps the conn after: wait for the conns. */
  assert_true(tu_wait_until(both_wt_conns_kept, NULL, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&t->opens), 2);
  for (int i = 0; i < 2; i++) {
    cgnet_conn *c = atomic_load(&wt_conns[i]);
    assert_non_null(c);
    assert_int_equal(wrong_thread_calls(c), 0); /* the test thread: no loop at all */
    /* The other loop's thread. */
    cgnet_loop *other =
        cgnet_engine_loop(srv.eng, 1 - cgnet_loop_index(cgnet_conn_loop(c)));
    assert_rc(cgnet_loop_execute(other, wt_on_other_loop, c), 0);
  }
  assert_true(tu_wait_atomic_ge(&wt_other_loop_calls, 2, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&wt_other_loop_errors), 0);
  for (int i = 0; i < 2; i++) { /* nothing changed: no close, no FIN, reading on */
    assert_rc(tu_send_all(fds[i], "ping", 4, TU_TIMEOUT_MS), 0);
    expect_reply(fds[i], "ping");
    assert_false(cgnet_conn_is_closed(atomic_load(&wt_conns[i])));
    close(fds[i]);
  }
  assert_true(tu_wait_atomic_ge(&t->closes, 2, TU_TIMEOUT_MS));
  for (int i = 0; i < 2; i++)
    cgnet_conn_unref(atomic_load(&wt_conns[i]));
  finish(&srv, t, 2);
}

/* ---- loop and engine handles
 * ------------------------------------------------------------------- */

#define HANDLE_LOOPS 3
#define HANDLE_CLIENTS 6
static _Atomic(cgnet_engine *) handle_engine_seen;

static void check_handles(cgnet_conn *c, int in_traffic) {
  cgnet_loop *loop = cgnet_conn_loop(c);
  cgnet_engine *eng = cgnet_conn_engine(c);
  TU_CHECK(loop != NULL && eng != NULL);
  if (!loop || !eng) return;
  atomic_store(&handle_engine_seen, eng);
  TU_CHECK(cgnet_loop_is_current(loop));
  TU_CHECK(cgnet_loop_engine(loop) == eng);
  TU_CHECK_EQ(cgnet_engine_num_loops(eng), HANDLE_LOOPS);
  int idx = cgnet_loop_index(loop);
  TU_CHECK(idx >= 0 && idx < HANDLE_LOOPS);
  TU_CHECK(cgnet_engine_loop(eng, idx) == loop);
  for (int i = 0; i < HANDLE_LOOPS; i++)
    if (i != idx) TU_CHECK(!cgnet_loop_is_current(cgnet_engine_loop(eng, i)));
  TU_CHECK(cgnet_engine_userdata(eng) == tu_tracker_of_conn(c));
  if (in_traffic) TU_CHECK(cgnet_loop_count_connections(loop) >= 1);
}

static cgnet_action handles_on_open(cgnet_conn *c) {
  track_on_open(c);
  check_handles(c, 0);
  return CGNET_NONE;
}

static cgnet_action handles_on_traffic(cgnet_conn *c) {
  check_handles(c, 1);
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  return CGNET_NONE;
}

static cgnet_action handles_on_close(cgnet_conn *c, int reason) {
  check_handles(c, 0);
  return track_on_close(c, reason);
}

static void handles_on_pre_write(cgnet_conn *c) {
  atomic_fetch_add(&tu_tracker_of_conn(c)->prewrites, 1);
  check_handles(c, 0);
}

static void test_handles(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = base_handler(t);
  h.on_open = handles_on_open;
  h.on_traffic = handles_on_traffic;
  h.on_close = handles_on_close;
  h.on_pre_write = handles_on_pre_write;
  cgnet_options o = {.num_loops = HANDLE_LOOPS};
  atomic_store(&handle_engine_seen, NULL);
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  assert_int_equal(cgnet_engine_num_loops(srv.eng), HANDLE_LOOPS);
  for (int i = 0; i < HANDLE_LOOPS; i++) {
    cgnet_loop *loop = cgnet_engine_loop(srv.eng, i);
    assert_non_null(loop);
    assert_int_equal(cgnet_loop_index(loop), i);
    assert_ptr_equal(cgnet_loop_engine(loop), srv.eng);
    assert_false(cgnet_loop_is_current(loop)); /* the test thread is no loop */
  }
  int fds[HANDLE_CLIENTS];
  for (int i = 0; i < HANDLE_CLIENTS; i++) {
    fds[i] = tu_connect4(srv.port);
    assert_true(fds[i] >= 0);
    echo_ping(fds[i]);
  }
  assert_true(tu_wait_atomic_ge(&t->opens, HANDLE_CLIENTS, TU_TIMEOUT_MS));
  size_t per_loop_total = 0;
  for (int i = 0; i < HANDLE_LOOPS; i++)
    per_loop_total += cgnet_loop_count_connections(cgnet_engine_loop(srv.eng, i));
  assert_int_equal(per_loop_total, HANDLE_CLIENTS);
  assert_int_equal(cgnet_engine_count_connections(srv.eng), HANDLE_CLIENTS);
  for (int i = 0; i < HANDLE_CLIENTS; i++)
    close(fds[i]);
  assert_true(tu_wait_atomic_ge(&t->closes, HANDLE_CLIENTS, TU_TIMEOUT_MS));
  assert_ptr_equal(atomic_load(&handle_engine_seen), srv.eng);
  assert_true(atomic_load(&t->prewrites) > 0);
  finish(&srv, t, HANDLE_CLIENTS);
}

/* ---- cgnet_format_addr
 * ------------------------------------------------------------------------- */

static void test_format_addr(void **state) {
  (void)state;
  char buf[64];
  struct sockaddr_in s4;
  memset(&s4, 0, sizeof(s4));
  s4.sin_family = AF_INET;
  s4.sin_port = htons(8080);
  assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr), 1);
  int n = cgnet_format_addr((struct sockaddr *)&s4, sizeof(s4), buf, sizeof(buf));
  assert_int_equal(n, (int)strlen("127.0.0.1:8080"));
  assert_string_equal(buf, "127.0.0.1:8080");

  s4.sin_port = htons(0);
  assert_int_equal(inet_pton(AF_INET, "10.20.30.40", &s4.sin_addr), 1);
  n = cgnet_format_addr((struct sockaddr *)&s4, sizeof(s4), buf, sizeof(buf));
  assert_string_equal(buf, "10.20.30.40:0");
  assert_int_equal(n, 13);

  struct sockaddr_in6 s6;
  memset(&s6, 0, sizeof(s6));
  s6.sin6_family = AF_INET6;
  s6.sin6_port = htons(443);
  s6.sin6_addr = in6addr_loopback;
  n = cgnet_format_addr((struct sockaddr *)&s6, sizeof(s6), buf, sizeof(buf));
  assert_string_equal(buf, "[::1]:443");
  assert_int_equal(n, 9);

  s6.sin6_port = htons(65535);
  assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr), 1);
  n = cgnet_format_addr((struct sockaddr *)&s6, sizeof(s6), buf, sizeof(buf));
  assert_string_equal(buf, "[2001:db8::1]:65535");
  assert_int_equal(n, (int)strlen(buf));

  /* Too small a buffer is an error, not a silent truncation. */
  char tiny[8];
  s4.sin_port = htons(8080);
  assert_true(cgnet_format_addr((struct sockaddr *)&s4, sizeof(s4), tiny, sizeof(tiny)) <
              0);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)
  const struct CMUnitTest tests[] = {
      T(test_read_api_level),
      T(test_read_api_edge),
      T(test_partial_level),
      T(test_partial_edge),
      T(test_writev),
      T(test_flush_and_outbound),
      T(test_addresses_v4),
      T(test_addresses_v6),
      T(test_socket_controls),
      T(test_socket_defaults),
      T(test_conn_close),
      T(test_wrong_thread),
      T(test_pre_write_before_direct),
      T(test_handles),
      T(test_format_addr),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
