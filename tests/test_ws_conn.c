/*
 * WebSocket conns through a real server on 127.0.0.1, driven by a client written here
 * (masked frames built by hand, split at random byte boundaries, random fragmentation):
 * the handshake (the RFC's sample key, trickled byte by byte, refused, 400/426/431,
 * subprotocols, plain HTTP sharing the listener, the handshake timeout), echo of
 * thousands of random messages with pings in between, every protocol error with its
 * close code (and the server alive afterwards), the close handshake both ways and its
 * timeout, streaming, async sends from another thread, server pings, and
 * permessage-deflate on and off (a deflate bomb closes with 1009). Then pausing inside
 * on_ws_message, streamed sends (UTF-8 checked piece by piece, compressed as one message,
 * checked by Python too), 1001 on the engine's stop and on cgnet_client_free, and
 * wss:// (cgnet's client and Python's against a tls:// server, and a certificate for
 * the wrong host).
 *
 * cgnet-test-timeout: 300
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#ifdef CGNET_HAVE_ZLIB /* the build has zlib: the test client compresses with it */
#include <zlib.h>
#define HAVE_ZLIB_H 1
#endif

#include "cgnet.h"
#include "cgnet_tls.h"
#include "cgnet_ws.h"
#include "support/proc.h"
#include "support/support.h"
#include "support/tls_certs.h"
#include "ws_deflate.h"
#include "ws_handshake.h"

#define KiB 1024

/* ---- server side --------------------------------------------------------------------- */

static struct {
  atomic_int opens, closes, last_code, pongs, async_done, async_status;
  atomic_int handshakes, http_requests;
  atomic_int flood_sent, flood_err, unwritable, writable; /* test_backpressure */
  atomic_int paused, resumed, while_paused;               /* test_pause_in_message */
  pthread_mutex_t mu; /* guards last_reason: conns of two loops close at once */
  char last_reason[128];
  _Atomic(cgnet_conn *) ref; /* a reference taken in on_ws_open (test_async) */
} S;

/* The reason of the last on_ws_close, into buf. */
static const char *last_reason(char *buf, size_t cap) {
  pthread_mutex_lock(&S.mu);
  snprintf(buf, cap, "%s", S.last_reason);
  pthread_mutex_unlock(&S.mu);
  return buf;
}

static void reset_state(void) {
  atomic_store(&S.opens, 0);
  atomic_store(&S.closes, 0);
  atomic_store(&S.last_code, 0);
  atomic_store(&S.pongs, 0);
  atomic_store(&S.async_done, 0);
  atomic_store(&S.async_status, 1);
  atomic_store(&S.handshakes, 0);
  atomic_store(&S.http_requests, 0);
  atomic_store(&S.flood_sent, 0);
  atomic_store(&S.flood_err, 0);
  atomic_store(&S.unwritable, 0);
  atomic_store(&S.writable, 0);
  atomic_store(&S.ref, NULL);
  atomic_store(&S.paused, 0);
  atomic_store(&S.resumed, 0);
  atomic_store(&S.while_paused, 0);
  tu_checks_reset();
}

static int ws_handshake(cgnet_conn *c, const cgnet_ws_request *req, const char **protocol) {
  (void)c;
  atomic_fetch_add(&S.handshakes, 1);
  size_t len;
  const char *path = cgnet_ws_request_path(req, &len);
  if (len == 10 && memcmp(path, "/forbidden", 10) == 0) return 403;
  if (len == 6 && memcmp(path, "/bogus", 6) == 0) *protocol = "never-offered";
  if (len == 7 && memcmp(path, "/second", 7) == 0 &&
      cgnet_ws_request_protocol_count(req) > 1)
    *protocol = "chat.v1"; /* the client's second choice, not the server's first */
  return 0;
}

static cgnet_action ws_open(cgnet_conn *c) {
  atomic_fetch_add(&S.opens, 1);
  TU_CHECK(cgnet_ws_userdata(c) == &S);
  cgnet_ws_set_context(c, &S.opens);
  if (atomic_load(&S.ref) == NULL) atomic_store(&S.ref, cgnet_conn_ref(c));
  return CGNET_NONE;
}

static int is_cmd(const uint8_t *d, size_t n, const char *cmd) {
  return n == strlen(cmd) && memcmp(d, cmd, n) == 0;
}

/* The text "stream-big" is streamed back in 997-byte pieces, which cut characters. */
#define BIG_LINES 2000
static size_t big_text(char *out, size_t cap) {
  size_t n = 0;
  for (int i = 0; i < BIG_LINES && n < cap; i++)
    n += (size_t)snprintf(out + n, cap - n, "line %d: h\u00e9llo w\u00f6rld \u20ac\n", i);
  return n < cap ? n : cap;
}

static cgnet_action resume_later(cgnet_timer *t, void *ud) {
  (void)t;
  cgnet_conn *c = ud;
  atomic_store(&S.paused, 0);
  atomic_fetch_add(&S.resumed, 1);
  TU_CHECK_EQ(cgnet_conn_resume_read(c), 0);
  return CGNET_NONE;
}

/* Streamed sends: text checked piece by piece, compressed when deflate is agreed.
 * Returns 1 if the message was one of these commands. */
static int stream_commands(cgnet_conn *c, const uint8_t *d, size_t n) {
  if (is_cmd(d, n, "stream-utf8")) {
    TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_TEXT), 0);
    TU_CHECK_EQ(cgnet_ws_send_piece(c, "h\xc3", 2), 0); /* ends inside a character */
    TU_CHECK_EQ(cgnet_ws_send_end(c), CGNET_EINVAL);    /* ... so it cannot end here */
    TU_CHECK_EQ(cgnet_ws_send_piece(c, "\xff", 1), CGNET_EINVAL);
    TU_CHECK_EQ(cgnet_ws_send_piece(c, "\xa9\xed\xa0\x80", 4),
                CGNET_EINVAL); /* surrogate */
    TU_CHECK_EQ(cgnet_ws_send_piece(c, "\xa9llo", 4), 0);
    TU_CHECK_EQ(cgnet_ws_send_end(c), 0);
  } else if (is_cmd(d, n, "stream-big")) {
    static char text[BIG_LINES * 40];
    size_t len = big_text(text, sizeof text);
    TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_TEXT), 0);
    for (size_t off = 0; off < len; off += 997)
      TU_CHECK_EQ(cgnet_ws_send_piece(c, text + off, len - off < 997 ? len - off : 997), 0);
    TU_CHECK_EQ(cgnet_ws_send_end(c), 0);
  } else if (is_cmd(d, n, "stream-empty")) {
    TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_BINARY), 0);
    TU_CHECK_EQ(cgnet_ws_send_end(c), 0);
  } else {
    return 0;
  }
  return 1;
}

/* Echo, except for a few commands the tests send as text. */
static cgnet_action ws_message(cgnet_conn *c, cgnet_ws_opcode op, const uint8_t *d,
                               size_t n) {
  TU_CHECK(cgnet_ws_context(c) == &S.opens);
  if (atomic_load(&S.paused)) atomic_fetch_add(&S.while_paused, 1);
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "pause-me")) {
    /* No message may come until the timer resumes reading. */
    TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
    atomic_store(&S.paused, 1);
    cgnet_timer *t = cgnet_conn_timer_new(c, resume_later, c);
    TU_CHECK(t != NULL);
    if (t) TU_CHECK_EQ(cgnet_timer_start(t, 300, 0), 0);
    return CGNET_NONE;
  }
  if (op == CGNET_WS_TEXT && stream_commands(c, d, n)) return CGNET_NONE;
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "close-me")) {
    TU_CHECK_EQ(cgnet_ws_close(c, 1000, "bye"), 0);
    TU_CHECK_EQ(cgnet_ws_close(c, 1000, "again"), CGNET_EALREADY);
    TU_CHECK_EQ(cgnet_ws_send_text(c, "x", 1), CGNET_ECLOSED);
    return CGNET_NONE;
  }
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "action-close")) return CGNET_CLOSE;
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "ping-me")) {
    TU_CHECK_EQ(cgnet_ws_send_ping(c, "abc", 3), 0);
    uint8_t big[126] = {0};
    TU_CHECK_EQ(cgnet_ws_send_ping(c, big, sizeof big), CGNET_EINVAL);
    return CGNET_NONE;
  }
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "stream-me")) {
    TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_BINARY), 0);
    TU_CHECK_EQ(cgnet_ws_send_text(c, "no", 2), CGNET_EBUSY);
    TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_TEXT), CGNET_EBUSY);
    TU_CHECK_EQ(cgnet_ws_send_piece(c, "abc", 3), 0);
    TU_CHECK_EQ(cgnet_ws_send_ping(c, "p", 1), 0); /* a control frame between pieces */
    TU_CHECK_EQ(cgnet_ws_send_piece(c, "defg", 4), 0);
    TU_CHECK_EQ(cgnet_ws_send_end(c), 0);
    TU_CHECK_EQ(cgnet_ws_send_end(c), CGNET_EINVAL);
    return CGNET_NONE;
  }
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "flood")) {
    /* 32 x 64 KiB to a peer that does not read: the output limit stops it. */
    static uint8_t chunk[64 * 1024];
    for (int i = 0; i < 32; i++) {
      memset(chunk, i, sizeof chunk);
      int rc = cgnet_ws_send_binary(c, chunk, sizeof chunk);
      if (rc != 0) {
        atomic_store(&S.flood_err, rc);
        break;
      }
      atomic_fetch_add(&S.flood_sent, 1);
    }
    return CGNET_NONE;
  }
  if (op == CGNET_WS_TEXT && is_cmd(d, n, "bad-utf8-out"))
    TU_CHECK_EQ(cgnet_ws_send_text(c, "\xff", 1), CGNET_EINVAL);
  int rc = op == CGNET_WS_TEXT ? cgnet_ws_send_text(c, (const char *)d, n)
                               : cgnet_ws_send_binary(c, d, n);
  TU_CHECK_EQ(rc, 0);
  return CGNET_NONE;
}

static cgnet_action ws_pong(cgnet_conn *c, const uint8_t *d, size_t n) {
  atomic_fetch_add(&S.pongs, 1);
  char reply[64];
  int len = snprintf(reply, sizeof reply, "pong:%.*s", (int)n, (const char *)d);
  TU_CHECK_EQ(cgnet_ws_send_text(c, reply, (size_t)len), 0);
  return CGNET_NONE;
}

static void ws_close(cgnet_conn *c, int code, const char *reason) {
  TU_CHECK(cgnet_ws_context(c) == &S.opens);
  pthread_mutex_lock(&S.mu);
  snprintf(S.last_reason, sizeof S.last_reason, "%s", reason);
  atomic_store(&S.last_code, code);
  pthread_mutex_unlock(&S.mu);
  atomic_fetch_add(&S.closes, 1);
}

static cgnet_action http_request(cgnet_conn *c, const cgnet_ws_request *req) {
  atomic_fetch_add(&S.http_requests, 1);
  size_t plen, blen;
  const char *path = cgnet_ws_request_path(req, &plen);
  cgnet_ws_request_body(req, &blen);
  char resp[256];
  int n =
      snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%.*s:%zu",
               (int)plen + 1 + (blen > 9 ? 2 : 1), (int)plen, path, blen);
  cgnet_conn_write(c, resp, (size_t)n);
  return CGNET_NONE;
}

static void ws_writable(cgnet_conn *c, int writable) {
  TU_CHECK(cgnet_ws_context(c) == &S.opens);
  atomic_fetch_add(writable ? &S.writable : &S.unwritable, 1);
}

static const cgnet_ws_handler HANDLER = {
    .ud = &S,
    .on_ws_handshake = ws_handshake,
    .on_ws_open = ws_open,
    .on_ws_message = ws_message,
    .on_ws_pong = ws_pong,
    .on_ws_close = ws_close,
    .on_ws_writable_changed = ws_writable,
};

typedef struct server {
  tu_server s;
  cgnet_ws_server *ws;
} server;

static void start_with(server *sv, const cgnet_ws_handler *h, const cgnet_ws_options *wo,
                       const cgnet_options *o) {
  reset_state();
  assert_int_equal(cgnet_ws_server_new(h, wo, &sv->ws), 0);
  cgnet_handler eh;
  cgnet_ws_server_handler(sv->ws, &eh);
  assert_int_equal(tu_server_start(&sv->s, &eh, o), 0);
  assert_ptr_equal(cgnet_engine_userdata(sv->s.eng), sv->ws);
  assert_ptr_equal(cgnet_ws_server_userdata(sv->ws), &S);
}

static void start(server *sv, const cgnet_ws_options *wo) {
  start_with(sv, &HANDLER, wo, NULL);
}

static void stop(server *sv) {
  cgnet_conn *ref = atomic_exchange(&S.ref, NULL);
  if (ref) cgnet_conn_unref(ref);
  assert_int_equal(tu_server_stop(&sv->s, 1000), 0);
  cgnet_ws_server_free(sv->ws);
  assert_no_check_failures();
}

/* ---- the test client -------------------------------------------------------------------
 */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

/* Send buf in pieces cut at random byte boundaries. */
static void send_split(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len) {
    size_t n = (rnd() % 4 == 0) ? 1 + rnd() % 7 : 1 + rnd() % (len < 4096 ? len : 4096);
    if (n > len) n = len;
    assert_int_equal(tu_send_all(fd, p, n, TU_TIMEOUT_MS), 0);
    p += n;
    len -= n;
  }
}

/* One masked client frame (header and payload), returned in *out (caller frees). */
static size_t build_frame(uint8_t **out, int fin, uint8_t rsv, uint8_t op, const void *data,
                          size_t len) {
  uint8_t *f = malloc(len + 14);
  assert_non_null(f);
  size_t n = 0;
  f[n++] = (uint8_t)((fin ? 0x80 : 0) | rsv | op);
  if (len < 126) {
    f[n++] = (uint8_t)(0x80 | len);
  } else if (len <= 0xffff) {
    f[n++] = 0x80 | 126;
    f[n++] = (uint8_t)(len >> 8);
    f[n++] = (uint8_t)len;
  } else {
    f[n++] = 0x80 | 127;
    for (int s = 56; s >= 0; s -= 8)
      f[n++] = (uint8_t)((uint64_t)len >> s);
  }
  uint8_t key[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()};
  memcpy(f + n, key, 4);
  n += 4;
  for (size_t i = 0; i < len; i++)
    f[n + i] = ((const uint8_t *)data)[i] ^ key[i & 3];
  *out = f;
  return n + len;
}

static void send_frame(int fd, int fin, uint8_t op, const void *data, size_t len) {
  uint8_t *f;
  size_t n = build_frame(&f, fin, 0, op, data, len);
  send_split(fd, f, n);
  free(f);
}

static void send_raw(int fd, const void *data, size_t len) {
  assert_int_equal(tu_send_all(fd, data, len, TU_TIMEOUT_MS), 0);
}

typedef struct frame {
  int fin, rsv, op;
  uint8_t *data;
  size_t len;
} frame;

/* Read one server frame (which must be unmasked); 0, or TU_EEOF / an error. */
static int read_frame(int fd, frame *f) {
  uint8_t h[8];
  int rc = tu_recv_exact(fd, h, 2, TU_TIMEOUT_MS, NULL);
  if (rc != 0) return rc;
  f->fin = h[0] >> 7;
  f->rsv = h[0] & 0x70;
  f->op = h[0] & 0x0f;
  assert_int_equal(h[1] & 0x80, 0);
  uint64_t len = h[1] & 0x7f;
  size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
  if (ext) {
    assert_int_equal(tu_recv_exact(fd, h, ext, TU_TIMEOUT_MS, NULL), 0);
    len = 0;
    for (size_t i = 0; i < ext; i++)
      len = len << 8 | h[i];
  }
  f->len = (size_t)len;
  f->data = malloc(f->len + 1);
  assert_non_null(f->data);
  if (f->len) assert_int_equal(tu_recv_exact(fd, f->data, f->len, TU_TIMEOUT_MS, NULL), 0);
  return 0;
}

/* Read the HTTP response head (up to the blank line) into buf. */
static size_t read_head(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    if (tu_recv_exact(fd, buf + n, 1, TU_TIMEOUT_MS, NULL) != 0) break;
    n++;
    if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0) break;
  }
  buf[n] = '\0';
  return n;
}

static const char OFFER[] =
    "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; "
    "server_no_context_takeover\r\n";

static const char RFC_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char RFC_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static int request(char *out, size_t cap, const char *path, const char *extra) {
  return snprintf(out, cap,
                  "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n%s\r\n",
                  path, RFC_KEY, extra ? extra : "");
}

/* Connect and upgrade; the response head goes to head (if given). */
static int ws_connect_ex(int port, const char *path, const char *extra, char *head,
                         size_t cap) {
  int fd = tu_connect4(port);
  assert_true(fd >= 0);
  char req[1024], buf[2048];
  int n = request(req, sizeof req, path, extra);
  send_split(fd, req, (size_t)n);
  read_head(fd, buf, sizeof buf);
  assert_non_null(strstr(buf, "HTTP/1.1 101 "));
  assert_non_null(strstr(buf, RFC_ACCEPT));
  if (head) snprintf(head, cap, "%s", buf);
  return fd;
}

static int ws_connect(int port) {
  return ws_connect_ex(port, "/", NULL, NULL, 0);
}

/* The next frame must be a close with `code`, then the stream must end. */
static void expect_close(int fd, int code) {
  frame f;
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x8);
  assert_true(f.len >= 2);
  assert_int_equal(f.data[0] << 8 | f.data[1], code);
  free(f.data);
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
}

/* Echo one message and check it. */
static void echo_once(int fd, uint8_t op, const void *data, size_t len) {
  send_frame(fd, 1, op, data, len);
  frame f;
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, op);
  assert_int_equal(f.fin, 1);
  assert_int_equal(f.len, len);
  assert_memory_equal(f.data, data, len);
  free(f.data);
}

static void expect_alive(int port) {
  int fd = ws_connect(port);
  echo_once(fd, 1, "alive", 5);
  close(fd);
}

/* The client closes: 1000, echoed; the server's on_ws_close sees 1000. */
static void client_close(int fd) {
  send_frame(fd, 1, 0x8, "\x03\xe8ok", 4);
  expect_close(fd, 1000);
  close(fd);
}

/* ---- tests: handshake ---------------------------------------------------------------- */

static void test_handshake_and_close(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = ws_connect(sv.s.port);
  echo_once(fd, 1, "hello", 5);
  echo_once(fd, 2, "", 0);
  client_close(fd);
  assert_true(tu_wait_atomic_eq(&S.closes, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 1000);
  char why[128];
  assert_string_equal(last_reason(why, sizeof why), "ok");
  stop(&sv);
}

static void test_handshake_trickled(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = tu_connect4(sv.s.port);
  char req[1024], head[2048];
  int n = request(req, sizeof req, "/", NULL);
  for (int i = 0; i < n; i++) {
    send_raw(fd, req + i, 1);
    if (i % 16 == 0) tu_sleep_ms(1);
  }
  read_head(fd, head, sizeof head);
  assert_non_null(strstr(head, "HTTP/1.1 101 "));
  assert_non_null(strstr(head, RFC_ACCEPT));
  /* A frame trickled byte by byte too. */
  uint8_t *f;
  size_t fl = build_frame(&f, 1, 0, 1, "trickle", 7);
  for (size_t i = 0; i < fl; i++)
    send_raw(fd, f + i, 1);
  free(f);
  frame r;
  assert_int_equal(read_frame(fd, &r), 0);
  assert_int_equal(r.len, 7);
  assert_memory_equal(r.data, "trickle", 7);
  free(r.data);
  client_close(fd);
  stop(&sv);
}

/* Send a raw request; expect `status` and the end of the stream. */
static void expect_refused(int port, const char *req, size_t len, const char *status) {
  int fd = tu_connect4(port);
  assert_true(fd >= 0);
  send_raw(fd, req, len);
  char head[2048];
  read_head(fd, head, sizeof head);
  if (!strstr(head, status)) fail_msg("expected %s, got: %s", status, head);
  size_t extra;
  int rc = tu_expect_eof(fd, TU_TIMEOUT_MS, &extra);
  assert_true(rc == 0 || rc == -ECONNRESET);
  close(fd);
}

static void test_bad_handshakes(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int port = sv.s.port;
  const char *no_key = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
  expect_refused(port, no_key, strlen(no_key), "HTTP/1.1 400 ");
  const char *v12 =
      "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 12\r\n\r\n";
  expect_refused(port, v12, strlen(v12), "HTTP/1.1 426 ");
  const char *post =
      "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n";
  expect_refused(port, post, strlen(post), "HTTP/1.1 400 ");
  const char *bare_lf = "GET / HTTP/1.1\nHost: a\n\n";
  expect_refused(port, bare_lf, strlen(bare_lf), "HTTP/1.1 400 ");
  /* Plain HTTP without on_http_request: 426. */
  const char *plain = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  expect_refused(port, plain, strlen(plain), "HTTP/1.1 426 ");
  /* An oversized head: 431 (sent in full before reading, so the server sees it all). */
  size_t big = 12 * KiB;
  char *huge = malloc(big + 64);
  assert_non_null(huge);
  int n = snprintf(huge, 64, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
  memset(huge + n, 'a', big);
  expect_refused(port, huge, (size_t)n + big, "HTTP/1.1 431 ");
  free(huge);
  /* The user refuses: 403; names a protocol never offered: 500. */
  char req[1024];
  n = request(req, sizeof req, "/forbidden", NULL);
  expect_refused(port, req, (size_t)n, "HTTP/1.1 403 ");
  n = request(req, sizeof req, "/bogus", "Sec-WebSocket-Protocol: a\r\n");
  expect_refused(port, req, (size_t)n, "HTTP/1.1 500 ");
  assert_int_equal(atomic_load(&S.opens), 0);
  expect_alive(port);
  stop(&sv);
}

static void test_subprotocols(void **state) {
  (void)state;
  server sv;
  const char *protos[] = {"chat.v2", "chat.v1"};
  cgnet_ws_options wo = {.subprotocols = protos, .nsubprotocols = 2};
  start(&sv, &wo);
  char head[2048];
  int fd = ws_connect_ex(sv.s.port, "/", "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n",
                         head, sizeof head);
  assert_non_null(strstr(head, "Sec-WebSocket-Protocol: chat.v2\r\n"));
  close(fd);
  fd = ws_connect_ex(sv.s.port, "/second", "Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n",
                     head, sizeof head);
  assert_non_null(strstr(head, "Sec-WebSocket-Protocol: chat.v1\r\n"));
  close(fd);
  fd =
      ws_connect_ex(sv.s.port, "/", "Sec-WebSocket-Protocol: other\r\n", head, sizeof head);
  assert_null(strstr(head, "Sec-WebSocket-Protocol"));
  close(fd);
  stop(&sv);
  cgnet_ws_server *bad;
  const char *empty[] = {""};
  cgnet_ws_options wb = {.subprotocols = empty, .nsubprotocols = 1};
  assert_int_equal(cgnet_ws_server_new(&HANDLER, &wb, &bad), CGNET_EINVAL);
  cgnet_ws_options wf = {.max_frame = 2 * KiB, .max_message = KiB};
  assert_int_equal(cgnet_ws_server_new(&HANDLER, &wf, &bad), CGNET_EINVAL);
  /* No practical limit at all (with deflate offered: its allowance must not wrap). */
  cgnet_ws_options huge = {.max_message = SIZE_MAX};
  start(&sv, &huge);
  fd = ws_connect_ex(sv.s.port, "/", OFFER, NULL, 0);
  echo_once(fd, 2, "unbounded", 9);
  client_close(fd);
  stop(&sv);
}

static void test_plain_http_shares_listener(void **state) {
  (void)state;
  server sv;
  cgnet_ws_handler h = HANDLER;
  h.on_http_request = http_request;
  start_with(&sv, &h, NULL, NULL);
  int fd = tu_connect4(sv.s.port);
  const char *r1 = "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"
                   "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789";
  send_split(fd, r1, strlen(r1));
  char head[2048], body[64];
  read_head(fd, head, sizeof head);
  assert_non_null(strstr(head, "200 OK"));
  assert_int_equal(tu_recv_exact(fd, body, 13, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(body, "/index.html:0", 13);
  read_head(fd, head, sizeof head);
  assert_int_equal(tu_recv_exact(fd, body, 8, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(body, "/form:10", 8);
  /* Then an upgrade on the same conn. */
  char req[1024];
  int n = request(req, sizeof req, "/", NULL);
  send_split(fd, req, (size_t)n);
  read_head(fd, head, sizeof head);
  assert_non_null(strstr(head, "HTTP/1.1 101 "));
  echo_once(fd, 1, "after http", 10);
  client_close(fd);
  assert_int_equal(atomic_load(&S.http_requests), 2);
  /* Chunked bodies are not taken; bodies over max_message neither. */
  const char *chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  expect_refused(sv.s.port, chunked, strlen(chunked), "HTTP/1.1 501 ");
  const char *huge = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n";
  expect_refused(sv.s.port, huge, strlen(huge), "HTTP/1.1 413 ");
  stop(&sv);
}

static void test_handshake_timeout(void **state) {
  (void)state;
  server sv;
  cgnet_ws_options wo = {.handshake_timeout_ms = 200};
  start(&sv, &wo);
  int fd = tu_connect4(sv.s.port);
  send_raw(fd, "GET / HTTP/1.1\r\n", 16);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  assert_true(tu_now_ms() - t0 >= 150);
  close(fd);
  stop(&sv);
}

/* ---- tests: messages ----------------------------------------------------------------- */

/* A valid UTF-8 text of exactly len bytes (ASCII with 2-, 3- and 4-byte characters). */
static void fill_text(uint8_t *p, size_t len) {
  static const char *chars[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "z"};
  size_t i = 0;
  while (i < len) {
    const char *ch = chars[rnd() % 5];
    size_t n = strlen(ch);
    if (n > len - i) ch = "b", n = 1;
    memcpy(p + i, ch, n);
    i += n;
  }
}

/* Send one message as random fragments, with pings between some; returns the pings. */
static int send_fragmented(int fd, uint8_t op, const uint8_t *data, size_t len) {
  int pings = 0;
  size_t off = 0;
  int first = 1;
  do {
    size_t n = len - off;
    if (rnd() % 2 && n > 1) n = rnd() % n;
    int fin = off + n == len;
    send_frame(fd, fin, first ? op : 0, data + off, n);
    first = 0;
    off += n;
    if (!fin && rnd() % 4 == 0) {
      send_frame(fd, 1, 0x9, "pi", 2);
      pings++;
    }
  } while (off < len);
  return pings;
}

static size_t random_size(void) {
  switch (rnd() % 8) {
  case 0:
    return 0;
  case 1:
    return 126 + rnd() % 200;
  case 2:
    return 60 * KiB + rnd() % (16 * KiB); /* around the 16-bit length boundary */
  case 3:
    return rnd() % (200 * KiB);
  default:
    return rnd() % 200;
  }
}

static void test_echo_random(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = ws_connect(sv.s.port);
  uint8_t *buf = malloc(256 * KiB);
  assert_non_null(buf);
  const int count = 2000 / TU_PAYLOAD_DIV;
  uint64_t deadline = tu_now_ms() + TU_TIMEOUT_MS;
  for (int i = 0; i < count && tu_now_ms() < deadline; i++) {
    uint8_t op = rnd() % 2 ? 1 : 2;
    size_t len = random_size();
    if (op == 1)
      fill_text(buf, len);
    else
      tu_pattern_fill(buf, len, (uint64_t)i, 0);
    int pings = send_fragmented(fd, op, buf, len);
    for (int p = 0; p < pings; p++) {
      frame f;
      assert_int_equal(read_frame(fd, &f), 0);
      assert_int_equal(f.op, 0xa);
      assert_int_equal(f.len, 2);
      assert_memory_equal(f.data, "pi", 2);
      free(f.data);
    }
    frame f;
    assert_int_equal(read_frame(fd, &f), 0);
    assert_int_equal(f.op, op);
    assert_int_equal(f.fin, 1);
    assert_int_equal(f.len, len);
    if (len) assert_memory_equal(f.data, buf, len);
    free(f.data);
  }
  free(buf);
  client_close(fd);
  stop(&sv);
}

/* ---- tests: protocol errors ---------------------------------------------------------- */

/* Send raw bytes on a new WebSocket; expect a close with `code`, the stream's end, and
 * on_ws_close with the same code. */
static void expect_failure(int port, const void *bytes, size_t len, int code) {
  int before = atomic_load(&S.closes);
  int fd = ws_connect(port);
  /* In one send: the server fails at the first bad byte and closes, so bytes sent after
   * that would be refused (EPIPE) or turn the close into a reset. */
  send_raw(fd, bytes, len);
  expect_close(fd, code);
  close(fd);
  assert_true(tu_wait_atomic_eq(&S.closes, before + 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), code);
}

static void expect_frame_failure(int port, int fin, uint8_t op, const void *data,
                                 size_t len, int code) {
  uint8_t *f;
  size_t n = build_frame(&f, fin, 0, op, data, len);
  expect_failure(port, f, n, code);
  free(f);
}

static void test_protocol_errors(void **state) {
  (void)state;
  server sv;
  cgnet_ws_options wo = {.max_message = 64 * KiB, .max_frame = 32 * KiB};
  start(&sv, &wo);
  int port = sv.s.port;
  /* Unmasked client frame. */
  expect_failure(port, "\x81\x02hi", 4, 1002);
  /* Invalid UTF-8: in one frame, across fragments, in a close reason. */
  expect_frame_failure(port, 1, 1, "ok\xc0\xaf", 4, 1007);
  {
    uint8_t *a, *b;
    size_t na = build_frame(&a, 0, 0, 1, "abc\xe2\x82", 5);
    size_t nb = build_frame(&b, 1, 0, 0, "\x41", 1); /* not a continuation byte */
    uint8_t both[64];
    memcpy(both, a, na);
    memcpy(both + na, b, nb);
    expect_failure(port, both, na + nb, 1007);
    free(a);
    free(b);
  }
  expect_frame_failure(port, 1, 1, "\xe2\x82", 2, 1007); /* ends inside a character */
  expect_frame_failure(port, 1, 0x8, "\x03\xe8\xff", 3, 1007);
  /* A 2^63 length. */
  expect_failure(port, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14,
                 1002);
  /* A ping with 126 bytes; a fragmented ping; a close with a 1-byte payload. */
  uint8_t big[126] = {0};
  expect_frame_failure(port, 1, 0x9, big, sizeof big, 1002);
  expect_frame_failure(port, 0, 0x9, "x", 1, 1002);
  expect_frame_failure(port, 1, 0x8, "x", 1, 1002);
  expect_frame_failure(port, 1, 0x8, "\x03\xed", 2, 1002); /* code 1005 may not be sent */
  /* Continuation with nothing to continue; reserved bits; an unknown opcode. */
  expect_frame_failure(port, 1, 0, "x", 1, 1002);
  expect_frame_failure(port, 1, 0x3, "x", 1, 1002);
  {
    uint8_t *f;
    size_t n = build_frame(&f, 1, 0x40, 1, "x", 1); /* RSV1 without deflate */
    expect_failure(port, f, n, 1002);
    free(f);
  }
  /* Too big: a frame over max_frame; a message whose frames add up past max_message
   * (judged on the header: the payload need not be sent). */
  expect_failure(port, "\x82\xfe\x9c\x40\x00\x00\x00\x00", 8, 1009); /* 40000 bytes */
  {
    uint8_t *payload = calloc(1, 30 * KiB);
    uint8_t *a, *b, *c;
    size_t na = build_frame(&a, 0, 0, 2, payload, 30 * KiB);
    size_t nb = build_frame(&b, 0, 0, 0, payload, 30 * KiB);
    size_t nc = build_frame(&c, 1, 0, 0, payload, 30 * KiB);
    /* The third frame's header alone (8 bytes) fails it: nothing is left unsent. */
    (void)nc;
    uint8_t *all = malloc(na + nb + 8);
    memcpy(all, a, na);
    memcpy(all + na, b, nb);
    memcpy(all + na + nb, c, 8);
    expect_failure(port, all, na + nb + 8, 1009);
    /* Two frames of 30 KiB (60 KiB) are a valid message. */
    int fd = ws_connect(port);
    send_raw(fd, a, na);
    uint8_t *d;
    size_t nd = build_frame(&d, 1, 0, 0, payload, 30 * KiB);
    send_raw(fd, d, nd);
    frame r;
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.len, 60 * KiB);
    free(r.data);
    client_close(fd);
    free(payload), free(a), free(b), free(c), free(d), free(all);
  }
  expect_alive(port);
  stop(&sv);
}

/* ---- tests: closing ------------------------------------------------------------------ */

static void test_close_timeout(void **state) {
  (void)state;
  server sv;
  cgnet_ws_options wo = {.close_timeout_ms = 300};
  start(&sv, &wo);
  int fd = ws_connect(sv.s.port);
  uint64_t t0 = tu_now_ms();
  send_frame(fd, 1, 1, "close-me", 8);
  frame f;
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x8);
  assert_int_equal(f.len, 5);
  assert_memory_equal(f.data,
                      "\x03\xe8"
                      "bye",
                      5);
  free(f.data);
  /* Data after the server's close is dropped, not echoed; the conn ends at the timeout. */
  send_frame(fd, 1, 1, "ignored", 7);
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  assert_true(tu_now_ms() - t0 >= 250);
  assert_true(tu_wait_atomic_eq(&S.closes, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 1006);
  close(fd);
  /* When the peer answers, the conn ends at once with the peer's code. */
  fd = ws_connect(sv.s.port);
  send_frame(fd, 1, 1, "action-close", 12); /* CLOSE from on_ws_message: 1000 */
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x8);
  assert_int_equal(f.data[0] << 8 | f.data[1], 1000);
  free(f.data);
  t0 = tu_now_ms();
  send_frame(fd, 1, 0x8,
             "\x0f\xa0"
             "done",
             6); /* 4000 */
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  assert_true(tu_now_ms() - t0 < 250 * TU_SLOW);
  close(fd);
  assert_true(tu_wait_atomic_eq(&S.closes, 2, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 4000);
  char why[128];
  assert_string_equal(last_reason(why, sizeof why), "done");
  /* A close without a code is echoed without one; on_ws_close sees 1005. */
  fd = ws_connect(sv.s.port);
  send_frame(fd, 1, 0x8, NULL, 0);
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x8);
  assert_int_equal(f.len, 0);
  free(f.data);
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  close(fd);
  assert_true(tu_wait_atomic_eq(&S.closes, 3, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 1005);
  /* After failing a conn the server sends its FIN and drops what still comes; a peer
   * that keeps its side open is cut off at the close timeout. */
  fd = ws_connect(sv.s.port);
  t0 = tu_now_ms();
  send_raw(fd, "\x81\x02hi", 4);
  expect_close(fd, 1002);
  send_raw(fd, "more bytes after the end", 24);
  assert_true(tu_wait_atomic_eq(&S.closes, 4, TU_TIMEOUT_MS));
  assert_true(tu_now_ms() - t0 >= 250);
  assert_int_equal(atomic_load(&S.last_code), 1002);
  close(fd);
  /* A peer that vanishes: 1006. */
  fd = ws_connect(sv.s.port);
  close(fd);
  assert_true(tu_wait_atomic_eq(&S.closes, 5, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 1006);
  stop(&sv);
}

/* ---- tests: sending ------------------------------------------------------------------ */

static void test_stream_and_ping(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = ws_connect(sv.s.port);
  send_frame(fd, 1, 1, "stream-me", 9);
  frame f;
  int expect[][3] = {{0, 2, 3}, {1, 9, 1}, {0, 0, 4}, {1, 0, 0}}; /* fin, op, len */
  for (int i = 0; i < 4; i++) {
    assert_int_equal(read_frame(fd, &f), 0);
    assert_int_equal(f.fin, expect[i][0]);
    assert_int_equal(f.op, expect[i][1]);
    assert_int_equal(f.len, (size_t)expect[i][2]);
    free(f.data);
  }
  send_frame(fd, 1, 1, "ping-me", 7);
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x9);
  assert_memory_equal(f.data, "abc", 3);
  free(f.data);
  send_frame(fd, 1, 0xa, "abc", 3);
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 1);
  assert_int_equal(f.len, 8);
  assert_memory_equal(f.data, "pong:abc", 8);
  free(f.data);
  echo_once(fd, 1, "bad-utf8-out", 12);
  client_close(fd);
  assert_int_equal(atomic_load(&S.pongs), 1);
  stop(&sv);
}

static void async_done(cgnet_conn *c, int status, void *ud) {
  (void)c;
  (void)ud;
  atomic_store(&S.async_status, status);
  atomic_fetch_add(&S.async_done, 1);
}

typedef struct async_arg {
  cgnet_conn *c;
  int n;
} async_arg;

static void *async_sender(void *p) {
  async_arg *a = p;
  for (int i = 0; i < a->n; i++) {
    char msg[32];
    int len = snprintf(msg, sizeof msg, "async %d", i);
    TU_CHECK_EQ(
        cgnet_ws_async_send(a->c, CGNET_WS_TEXT, msg, (size_t)len, async_done, NULL), 0);
  }
  TU_CHECK_EQ(cgnet_ws_async_close(a->c, 3001, "from a thread", async_done, NULL), 0);
  return NULL;
}

static void test_async(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = ws_connect(sv.s.port);
  assert_true(tu_wait_atomic_eq(&S.opens, 1, TU_TIMEOUT_MS));
  async_arg a = {atomic_load(&S.ref), 100};
  assert_int_equal(tu_run_bounded(async_sender, &a, TU_TIMEOUT_MS), 0);
  for (int i = 0; i < a.n; i++) {
    frame f;
    char want[32];
    int len = snprintf(want, sizeof want, "async %d", i);
    assert_int_equal(read_frame(fd, &f), 0);
    assert_int_equal(f.op, 1);
    assert_int_equal(f.len, (size_t)len);
    assert_memory_equal(f.data, want, (size_t)len);
    free(f.data);
  }
  frame f;
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x8);
  assert_int_equal(f.data[0] << 8 | f.data[1], 3001);
  free(f.data);
  send_frame(fd, 1, 0x8, "\x0b\xb9", 2);
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  close(fd);
  assert_true(tu_wait_atomic_eq(&S.async_done, a.n + 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.async_status), 0);
  assert_true(tu_wait_atomic_eq(&S.closes, 1, TU_TIMEOUT_MS));
  /* On a closed conn: refused at once. */
  assert_int_equal(cgnet_ws_async_send(a.c, CGNET_WS_TEXT, "x", 1, NULL, NULL),
                   CGNET_ECLOSED);
  assert_int_equal(cgnet_ws_async_send(a.c, 7, "x", 1, NULL, NULL), CGNET_EINVAL);
  stop(&sv);
}

/* The engine's flow control applies to WebSocket sends as to raw writes. */
static void test_backpressure(void **state) {
  (void)state;
  server sv;
  cgnet_options o = {.write_high_watermark = 128 * KiB,
                     .write_buffer_limit = 1024 * KiB,
                     .socket_send_buffer = 64 * KiB};
  start_with(&sv, &HANDLER, NULL, &o);
  int fd = ws_connect(sv.s.port);
  send_frame(fd, 1, 1, "flood", 5);
  assert_true(tu_wait_atomic_eq(&S.flood_err, CGNET_EOVERFLOW, TU_TIMEOUT_MS));
  int sent = atomic_load(&S.flood_sent);
  assert_true(sent > 0 && sent < 32);
  assert_true(atomic_load(&S.unwritable) >= 1);
  for (int i = 0; i < sent; i++) {
    frame f;
    assert_int_equal(read_frame(fd, &f), 0);
    assert_int_equal(f.op, 2);
    assert_int_equal(f.len, 64 * KiB);
    assert_int_equal(f.data[0], i);
    assert_int_equal(f.data[f.len - 1], i);
    free(f.data);
  }
  assert_true(tu_wait_atomic_ge(&S.writable, 1, TU_TIMEOUT_MS));
  echo_once(fd, 1, "still open", 10);
  client_close(fd);
  stop(&sv);
}

/* Sends from a worker pool's threads: every message arrives once, whole. */
typedef struct pool_send {
  cgnet_conn *c;
  int i;
} pool_send;

static void pool_task(void *ud) {
  pool_send *ps = ud;
  char msg[32];
  int len = snprintf(msg, sizeof msg, "pool %d", ps->i);
  TU_CHECK_EQ(
      cgnet_ws_async_send(ps->c, CGNET_WS_BINARY, msg, (size_t)len, async_done, NULL), 0);
}

static void test_pool_sends(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = ws_connect(sv.s.port);
  assert_true(tu_wait_atomic_eq(&S.opens, 1, TU_TIMEOUT_MS));
  cgnet_pool *pool;
  cgnet_pool_options po = {.max_threads = 4};
  assert_int_equal(cgnet_pool_new(&po, &pool), 0);
  enum { N = 64 };
  pool_send ps[N];
  for (int i = 0; i < N; i++) {
    ps[i] = (pool_send){atomic_load(&S.ref), i};
    assert_int_equal(cgnet_pool_submit(pool, pool_task, &ps[i]), 0);
  }
  assert_int_equal(cgnet_pool_release(pool, CGNET_POOL_DRAIN, UINT64_MAX), 0);
  int seen[N] = {0};
  for (int k = 0; k < N; k++) {
    frame f;
    assert_int_equal(read_frame(fd, &f), 0);
    assert_int_equal(f.op, 2);
    f.data[f.len] = '\0';
    int i = -1;
    assert_int_equal(sscanf((char *)f.data, "pool %d", &i), 1);
    assert_true(i >= 0 && i < N);
    seen[i]++;
    free(f.data);
  }
  for (int i = 0; i < N; i++)
    assert_int_equal(seen[i], 1);
  assert_true(tu_wait_atomic_eq(&S.async_done, N, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.async_status), 0);
  client_close(fd);
  stop(&sv);
}

/* The engine's idle timeout closes a quiet WebSocket like any conn: 1006. */
static void test_idle_timeout(void **state) {
  (void)state;
  server sv;
  cgnet_options o = {.idle_timeout_ms = 200};
  start_with(&sv, &HANDLER, NULL, &o);
  int fd = ws_connect(sv.s.port);
  echo_once(fd, 1, "before", 6);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  assert_true(tu_now_ms() - t0 >= 150);
  assert_true(tu_wait_atomic_eq(&S.closes, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 1006);
  close(fd);
  stop(&sv);
}

/* ---- tests: permessage-deflate
 * ----------------------------------------------------------- */

#ifdef HAVE_ZLIB_H
/* Raw deflate of a whole message with the sync-flush tail stripped (RFC 7692). */
static size_t deflate_msg(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
  size_t len = cap - z.avail_out;
  deflateEnd(&z);
  assert_true(len >= 4);
  return len - 4;
}

static size_t inflate_msg(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(inflateInit2(&z, -15), Z_OK);
  uint8_t *buf = malloc(n + 4);
  memcpy(buf, in, n);
  memcpy(buf + n, "\x00\x00\xff\xff", 4);
  z.next_in = buf;
  z.avail_in = (uInt)(n + 4);
  z.next_out = out;
  z.avail_out = (uInt)cap;
  int rc = inflate(&z, Z_SYNC_FLUSH);
  assert_true(rc == Z_OK || rc == Z_STREAM_END);
  size_t len = cap - z.avail_out;
  inflateEnd(&z);
  free(buf);
  return len;
}
#endif

static void test_deflate(void **state) {
  (void)state;
#ifndef HAVE_ZLIB_H
  /* Built without zlib: a good offer is declined, and that is all there is to test. */
  server sv;
  start(&sv, NULL);
  char head[2048];
  int fd = ws_connect_ex(sv.s.port, "/", OFFER, head, sizeof head);
  assert_null(strstr(head, "permessage-deflate"));
  echo_once(fd, 1, "plain", 5);
  client_close(fd);
  stop(&sv);
  print_message("built without zlib: checked only that deflate is never agreed to\n");
#else
  if (!cgnet__ws_deflate_available()) skip();
  server sv;
  cgnet_ws_options wo = {.max_message = 64 * KiB};
  start(&sv, &wo);
  char head[2048];
  int fd = ws_connect_ex(sv.s.port, "/", OFFER, head, sizeof head);
  assert_non_null(strstr(head, "permessage-deflate"));
  /* A compressed text message, fragmented; the echo comes back compressed. */
  uint8_t msg[4000], z[8000], back[8000];
  memset(msg, 'a', 2000); /* compressible */
  fill_text(msg + 2000, sizeof msg - 2000);
  size_t zn = deflate_msg(msg, sizeof msg, z, sizeof z);
  assert_true(zn < sizeof msg);
  uint8_t *f1, *f2;
  size_t n1 = build_frame(&f1, 0, 0x40, 1, z, zn / 2);
  size_t n2 = build_frame(&f2, 1, 0, 0, z + zn / 2, zn - zn / 2);
  send_split(fd, f1, n1);
  send_split(fd, f2, n2);
  free(f1), free(f2);
  frame f;
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 1);
  assert_int_equal(f.rsv, 0x40);
  assert_true(f.len < sizeof msg);
  assert_int_equal(inflate_msg(f.data, f.len, back, sizeof back), sizeof msg);
  assert_memory_equal(back, msg, sizeof msg);
  free(f.data);
  /* A short message goes out plain. */
  echo_once(fd, 2, "tiny", 4);
  /* Incompressible bytes of exactly the maximum grow when compressed: still taken. */
  {
    size_t n = 64 * KiB;
    uint8_t *rand_msg = malloc(n), *zr = malloc(2 * n), *out = malloc(n + 16);
    tu_pattern_fill(rand_msg, n, 7, 0);
    size_t zrn = deflate_msg(rand_msg, n, zr, 2 * n);
    assert_true(zrn > n);
    n1 = build_frame(&f1, 1, 0x40, 2, zr, zrn);
    send_split(fd, f1, n1);
    free(f1);
    assert_int_equal(read_frame(fd, &f), 0);
    assert_int_equal(f.op, 2);
    assert_int_equal(f.rsv, 0x40);
    assert_int_equal(inflate_msg(f.data, f.len, out, n + 16), n);
    assert_memory_equal(out, rand_msg, n);
    free(f.data);
    free(rand_msg), free(zr), free(out);
  }
  client_close(fd);
  /* That allowance is for compressed messages only: an uncompressed one over the
   * maximum still fails with 1009 on a conn that agreed to deflate. */
  {
    size_t n = 64 * KiB + 100;
    uint8_t *plain = calloc(1, n);
    fd = ws_connect_ex(sv.s.port, "/", OFFER, NULL, 0);
    n1 = build_frame(&f1, 1, 0, 2, plain, n);
    send_raw(fd, f1, n1);
    free(f1);
    free(plain);
    expect_close(fd, 1009);
    close(fd);
  }
  stop(&sv);
  /* The same for one frame over max_frame (within the allowance for compression). */
  {
    cgnet_ws_options wf = {.max_message = 64 * KiB, .max_frame = 32 * KiB};
    start(&sv, &wf);
    size_t n = 33 * KiB;
    uint8_t *plain = calloc(1, n);
    fd = ws_connect_ex(sv.s.port, "/", OFFER, NULL, 0);
    n1 = build_frame(&f1, 1, 0, 2, plain, n);
    send_raw(fd, f1, n1);
    free(f1);
    free(plain);
    expect_close(fd, 1009);
    close(fd);
  }
  /* A bomb: 10 MiB of zeros in a few KiB closes with 1009 at 64 KiB. */
  size_t bomb_len = 10 * 1024 * KiB;
  uint8_t *zeros = calloc(1, bomb_len);
  uint8_t *zb = malloc(bomb_len / 100);
  assert_non_null(zeros);
  assert_non_null(zb);
  size_t bn = deflate_msg(zeros, bomb_len, zb, bomb_len / 100);
  free(zeros);
  fd = ws_connect_ex(sv.s.port, "/", OFFER, NULL, 0);
  uint8_t *bf;
  size_t bfn = build_frame(&bf, 1, 0x40, 2, zb, bn);
  send_raw(fd, bf, bfn);
  expect_close(fd, 1009);
  close(fd);
  free(bf);
  free(zb);
  /* Compressed invalid UTF-8: 1007. */
  fd = ws_connect_ex(sv.s.port, "/", OFFER, NULL, 0);
  zn = deflate_msg((const uint8_t *)"abc\xff", 4, z, sizeof z);
  n1 = build_frame(&f1, 1, 0x40, 1, z, zn);
  send_raw(fd, f1, n1);
  free(f1);
  expect_close(fd, 1007);
  close(fd);
  stop(&sv);
  /* Deflate off: the offer is declined and RSV1 is a protocol error. */
  cgnet_ws_options off = {.deflate = CGNET_OFF};
  start(&sv, &off);
  fd = ws_connect_ex(sv.s.port, "/", OFFER, head, sizeof head);
  assert_null(strstr(head, "permessage-deflate"));
  n1 = build_frame(&f1, 1, 0x40, 1, z, zn);
  send_raw(fd, f1, n1);
  free(f1);
  expect_close(fd, 1002);
  close(fd);
  stop(&sv);
#endif
}

/* Many clients at once on two loops, each echoing a few hundred messages. */
typedef struct client_arg {
  int port, n;
  atomic_int *ok;
} client_arg;

static void *many_client(void *p) {
  client_arg *a = p;
  int fd = tu_connect4(a->port);
  if (fd < 0) return NULL;
  char req[1024], head[2048];
  int n = request(req, sizeof req, "/", NULL);
  if (tu_send_all(fd, req, (size_t)n, TU_TIMEOUT_MS) != 0) goto out;
  size_t h = 0;
  while (h < 4 || memcmp(head + h - 4, "\r\n\r\n", 4) != 0) {
    if (h + 1 >= sizeof head || tu_recv_exact(fd, head + h, 1, TU_TIMEOUT_MS, NULL) != 0)
      goto out;
    h++;
  }
  for (int i = 0; i < a->n; i++) {
    uint8_t msg[300], hdr[2], back[300];
    size_t len = (size_t)(i * 7) % sizeof msg;
    tu_pattern_fill(msg, len, (uint64_t)i, 0);
    uint8_t frame_buf[320] = {0x82, (uint8_t)(0x80 | (len < 126 ? len : 126))};
    size_t off = 2;
    if (len >= 126) {
      frame_buf[off++] = (uint8_t)(len >> 8);
      frame_buf[off++] = (uint8_t)len;
    }
    memcpy(frame_buf + off, "\0\0\0\0", 4); /* a zero mask */
    memcpy(frame_buf + off + 4, msg, len);
    if (tu_send_all(fd, frame_buf, off + 4 + len, TU_TIMEOUT_MS) != 0) goto out;
    if (tu_recv_exact(fd, hdr, 2, TU_TIMEOUT_MS, NULL) != 0) goto out;
    size_t got = hdr[1] & 0x7f;
    if (got == 126) {
      if (tu_recv_exact(fd, hdr, 2, TU_TIMEOUT_MS, NULL) != 0) goto out;
      got = (size_t)(hdr[0] << 8 | hdr[1]);
    }
    if (got != len || (len && tu_recv_exact(fd, back, len, TU_TIMEOUT_MS, NULL) != 0))
      goto out;
    if (memcmp(back, msg, len) != 0) goto out;
  }
  atomic_fetch_add(a->ok, 1);
out:
  close(fd);
  return NULL;
}

static void test_many_clients(void **state) {
  (void)state;
  server sv;
  cgnet_options o = {.num_loops = 2};
  start_with(&sv, &HANDLER, NULL, &o);
  enum { N = 16 };
  pthread_t th[N];
  atomic_int ok = 0;
  client_arg a = {sv.s.port, 300 / TU_PAYLOAD_DIV, &ok};
  for (int i = 0; i < N; i++)
    assert_int_equal(pthread_create(&th[i], NULL, many_client, &a), 0);
  for (int i = 0; i < N; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&ok), N);
  assert_true(tu_wait_atomic_eq(&S.closes, N, TU_TIMEOUT_MS));
  stop(&sv);
}

/* The WebSocket calls on a conn the layer does not serve answer, and touch nothing. */
static cgnet_action raw_open(cgnet_conn *c) {
  static int mine;
  cgnet_conn_set_context(c, &mine);
  TU_CHECK_EQ(cgnet_ws_send_text(c, "x", 1), CGNET_ECLOSED);
  TU_CHECK_EQ(cgnet_ws_send_binary(c, "x", 1), CGNET_ECLOSED);
  TU_CHECK_EQ(cgnet_ws_send_ping(c, "x", 1), CGNET_ECLOSED);
  TU_CHECK_EQ(cgnet_ws_close(c, 1000, NULL), CGNET_ECLOSED);
  TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_TEXT), CGNET_ECLOSED);
  TU_CHECK(cgnet_ws_context(c) == NULL);
  TU_CHECK(cgnet_ws_userdata(c) == NULL);
  TU_CHECK(cgnet_ws_subprotocol(c) == NULL);
  TU_CHECK_EQ(cgnet_ws_deflate_enabled(c), 0);
  cgnet_ws_set_context(c, NULL);
  TU_CHECK(cgnet_conn_context(c) == &mine);
  atomic_fetch_add(&S.opens, 1);
  return CGNET_CLOSE;
}

static void test_not_a_ws_conn(void **state) {
  (void)state;
  reset_state();
  tu_server s;
  cgnet_handler h = {.on_open = raw_open};
  assert_int_equal(tu_server_start(&s, &h, NULL), 0);
  int fd = tu_connect4(s.port);
  assert_true(tu_wait_atomic_eq(&S.opens, 1, TU_TIMEOUT_MS));
  close(fd);
  assert_int_equal(tu_server_stop(&s, 1000), 0);
  assert_no_check_failures();
}

/* ---- tests: pausing inside on_ws_message ----------------------------------------------
 */

/* "pause-me" pauses reading in on_ws_message; the three messages that arrived with it stay
 * buffered until a timer resumes 300 ms later, then come in order. */
static void test_pause_in_message(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  int fd = ws_connect(sv.s.port);
  const char *msgs[] = {"pause-me", "one", "two", "three"};
  uint8_t all[256];
  size_t n = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t *f;
    size_t len = build_frame(&f, 1, 0, 1, msgs[i], strlen(msgs[i]));
    memcpy(all + n, f, len);
    n += len;
    free(f);
  }
  uint64_t t0 = tu_now_ms();
  send_raw(fd, all, n); /* one write: they arrive together */
  for (int i = 1; i < 4; i++) {
    frame f;
    assert_int_equal(read_frame(fd, &f), 0);
    if (i == 1) assert_true(tu_now_ms() - t0 >= 250);
    assert_int_equal(f.op, 1);
    assert_int_equal(f.len, strlen(msgs[i]));
    assert_memory_equal(f.data, msgs[i], f.len);
    free(f.data);
  }
  assert_int_equal(atomic_load(&S.resumed), 1);
  assert_int_equal(atomic_load(&S.while_paused), 0);
  echo_once(fd, 1, "after", 5);
  client_close(fd);
  stop(&sv);
}

/* ---- tests: streamed sends ------------------------------------------------------------
 */

/* Read frames up to the one with FIN; their payloads concatenated into *out (caller
 * frees), the first frame's RSV bits and opcode into *rsv and *op. Returns the frames. */
static int read_message(int fd, uint8_t **out, size_t *len, int *rsv, int *op) {
  size_t cap = 0;
  int frames = 0;
  *out = NULL;
  *len = 0;
  for (;;) {
    frame f;
    assert_int_equal(read_frame(fd, &f), 0);
    if (frames == 0) {
      *rsv = f.rsv;
      *op = f.op;
    } else {
      assert_int_equal(f.op, 0);
      assert_int_equal(f.rsv, 0);
    }
    frames++;
    if (*len + f.len + 1 > cap) {
      cap = (*len + f.len + 1) * 2;
      *out = realloc(*out, cap);
      assert_non_null(*out);
    }
    if (f.len) memcpy(*out + *len, f.data, f.len);
    *len += f.len;
    int fin = f.fin;
    free(f.data);
    if (fin) return frames;
  }
}

static void test_stream_utf8_and_deflate(void **state) {
  (void)state;
  server sv;
  start(&sv, NULL);
  /* Text pieces are validated one by one: only valid ones go out. */
  int fd = ws_connect(sv.s.port);
  send_frame(fd, 1, 1, "stream-utf8", 11);
  uint8_t *msg;
  size_t len;
  int rsv, op;
  assert_int_equal(read_message(fd, &msg, &len, &rsv, &op), 3);
  assert_int_equal(op, 1);
  assert_int_equal(rsv, 0);
  assert_int_equal(len, 6);
  assert_memory_equal(msg, "h\xc3\xa9llo", 6);
  free(msg);
  client_close(fd);
#ifdef HAVE_ZLIB_H
  /* With permessage-deflate agreed the stream is one compressed message: RSV1 on its
   * first frame only, and the frames' payloads together inflate to the text. */
  fd = ws_connect_ex(sv.s.port, "/", OFFER, NULL, 0);
  send_frame(fd, 1, 1, "stream-big", 10);
  static char want[BIG_LINES * 40];
  size_t want_len = big_text(want, sizeof want);
  int frames = read_message(fd, &msg, &len, &rsv, &op);
  assert_true(frames > 2);
  assert_int_equal(op, 1);
  assert_int_equal(rsv, 0x40);
  assert_true(len < want_len / 4); /* it was compressed */
  uint8_t *back = malloc(want_len + 64);
  assert_non_null(back);
  assert_int_equal(inflate_msg(msg, len, back, want_len + 64), want_len);
  assert_memory_equal(back, want, want_len);
  free(back);
  free(msg);
  /* An empty streamed message compresses to the single 0x00 byte. */
  send_frame(fd, 1, 1, "stream-empty", 12);
  assert_int_equal(read_message(fd, &msg, &len, &rsv, &op), 1);
  assert_int_equal(op, 2);
  assert_int_equal(rsv, 0x40);
  assert_int_equal(len, 1);
  assert_int_equal(msg[0], 0);
  free(msg);
  client_close(fd);
#endif
  stop(&sv);
}

/* ---- tests: the engine's stop ---------------------------------------------------------
 */

typedef struct stopper {
  cgnet_engine *eng;
  uint64_t timeout_ms, took_ms;
} stopper;

static void *stop_engine(void *p) {
  stopper *st = p;
  uint64_t t0 = tu_now_ms();
  cgnet_engine_stop(st->eng, st->timeout_ms);
  st->took_ms = tu_now_ms() - t0;
  return NULL;
}

static void expect_going_away(int fd) {
  frame f;
  assert_int_equal(read_frame(fd, &f), 0);
  assert_int_equal(f.op, 0x8);
  assert_int_equal(f.len, 2 + strlen("going away"));
  assert_int_equal(f.data[0] << 8 | f.data[1], 1001);
  assert_memory_equal(f.data + 2, "going away", f.len - 2);
  free(f.data);
}

/* cgnet_engine_stop sends every open WebSocket a close frame with 1001 and lets the close
 * handshake finish within the stop's timeout: a peer that answers ends it at once; one
 * that does not is closed at the timeout. Either way on_ws_close reports 1001. */
static void test_stop_sends_going_away(void **state) {
  (void)state;
  char reason[128];
  for (int answer = 1; answer >= 0; answer--) {
    server sv;
    start(&sv, NULL);
    int fd = ws_connect(sv.s.port);
    echo_once(fd, 1, "open", 4);
    int idle = ws_connect(sv.s.port); /* a second one, which will be as polite */
    stopper st = {.eng = sv.s.eng, .timeout_ms = answer ? 5000 : 300};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_engine, &st), 0);
    expect_going_away(fd);
    expect_going_away(idle);
    if (answer) {
      send_frame(fd, 1, 0x8, "\x03\xe9", 2);
      send_frame(idle, 1, 0x8, "\x03\xe9", 2);
      assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
      assert_int_equal(tu_expect_eof(idle, TU_TIMEOUT_MS, NULL), 0);
      close(fd); /* our FIN ends each close handshake */
      close(idle);
    } else {
      /* No answer: the stop's deadline ends the conns (a FIN or a reset). */
      int rc = tu_expect_eof(fd, TU_TIMEOUT_MS, NULL);
      assert_true(rc == 0 || rc == -ECONNRESET);
    }
    pthread_join(th, NULL);
    if (answer)
      assert_true(st.took_ms < 2500); /* the handshakes ended it, not the timeout */
    else
      assert_true(st.took_ms >= 250);
    assert_int_equal(atomic_load(&S.closes), 2);
    assert_int_equal(atomic_load(&S.last_code), 1001);
    assert_string_equal(last_reason(reason, sizeof reason), answer ? "" : "going away");
    if (!answer) {
      close(fd);
      close(idle);
    }
    stop(&sv);
  }
}

/* ---- tests: the client side -----------------------------------------------------------
 */

/* The dialing side: sends `total` messages of random sizes one at a time, checks each
 * echo, then closes with 1000. Runs on the client's loop thread; results in atomics. */
static struct {
  atomic_int opened, echoed, closed, close_code, bad;
  int total;
  char reason[128]; /* written before `closed` is set */
  char protocol[32];
  int deflate;
  uint8_t *expect;
  size_t expect_len;
  uint64_t rng;
} C;

static uint32_t crnd(void) {
  C.rng ^= C.rng << 13;
  C.rng ^= C.rng >> 7;
  C.rng ^= C.rng << 17;
  return (uint32_t)(C.rng >> 16);
}

static void client_send_next(cgnet_conn *c) {
  size_t len = crnd() % 3 == 0 ? crnd() % (100 * KiB) : crnd() % 300;
  uint8_t *buf = realloc(C.expect, len + 1);
  TU_CHECK(buf != NULL);
  C.expect = buf;
  C.expect_len = len;
  if (crnd() % 2) {
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)('a' + (i * 7 + len) % 26);
    TU_CHECK_EQ(cgnet_ws_send_text(c, (const char *)buf, len), 0);
  } else {
    tu_pattern_fill(buf, len, len, 0);
    TU_CHECK_EQ(cgnet_ws_send_binary(c, buf, len), 0);
  }
}

static cgnet_action cl_open(cgnet_conn *c) {
  TU_CHECK(cgnet_ws_context(c) == &C);
  const char *p = cgnet_ws_subprotocol(c);
  snprintf(C.protocol, sizeof C.protocol, "%s", p ? p : "");
  C.deflate = cgnet_ws_deflate_enabled(c);
  atomic_store(&C.opened, 1);
  client_send_next(c);
  return CGNET_NONE;
}

static cgnet_action cl_message(cgnet_conn *c, cgnet_ws_opcode op, const uint8_t *d,
                               size_t n) {
  (void)op;
  if (n != C.expect_len || (n && memcmp(d, C.expect, n) != 0)) atomic_fetch_add(&C.bad, 1);
  if (atomic_fetch_add(&C.echoed, 1) + 1 < C.total)
    client_send_next(c);
  else
    TU_CHECK_EQ(cgnet_ws_close(c, 1000, "all done"), 0);
  return CGNET_NONE;
}

static void cl_close(cgnet_conn *c, int code, const char *reason) {
  TU_CHECK(cgnet_ws_context(c) == &C);
  snprintf(C.reason, sizeof C.reason, "%s", reason);
  atomic_store(&C.close_code, code);
  atomic_store(&C.closed, 1);
}

static const cgnet_ws_handler CLIENT_HANDLER = {
    .on_ws_open = cl_open,
    .on_ws_message = cl_message,
    .on_ws_close = cl_close,
};

static void reset_client(int total) {
  atomic_store(&C.opened, 0);
  atomic_store(&C.echoed, 0);
  atomic_store(&C.closed, 0);
  atomic_store(&C.close_code, 0);
  atomic_store(&C.bad, 0);
  C.total = total;
  C.rng = 0x1234567887654321ull;
}

/* Dial url with a fresh client (with options copts, NULL for none); wait for
 * on_ws_close. */
static void dial_and_wait_with(const cgnet_options *copts, const cgnet_ws_options *wo,
                               const char *url, const cgnet_ws_dial_options *dopts,
                               int expect_rc) {
  cgnet_ws_server *wc;
  assert_int_equal(cgnet_ws_server_new(&CLIENT_HANDLER, wo, &wc), 0);
  cgnet_handler h;
  cgnet_ws_server_handler(wc, &h);
  cgnet_client *cl;
  assert_int_equal(cgnet_client_new(&h, copts, &cl), 0);
  int rc = cgnet_ws_dial(cl, wc, url, dopts, &C, NULL);
  assert_int_equal(rc, expect_rc);
  if (rc == 0) assert_true(tu_wait_atomic_eq(&C.closed, 1, TU_TIMEOUT_MS));
  assert_int_equal(cgnet_client_free(cl, 1000), 0);
  cgnet_ws_server_free(wc);
}

static void dial_and_wait(const cgnet_ws_options *wo, const char *url,
                          const cgnet_ws_dial_options *dopts, int expect_rc) {
  dial_and_wait_with(NULL, wo, url, dopts, expect_rc);
}

static void test_client_dial(void **state) {
  (void)state;
  server sv;
  const char *protos[] = {"chat.v1"};
  cgnet_ws_options so = {.subprotocols = protos, .nsubprotocols = 1};
  start(&sv, &so);
  char url[128];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/some/path?x=1", sv.s.port);
  const char *offer[] = {"chat.v2", "chat.v1"};
  cgnet_ws_dial_options dopts = {.subprotocols = offer,
                                 .nsubprotocols = 2,
                                 .origin = "http://localhost",
                                 .timeout_ms = 5000};
  /* With deflate (both sides default), then without. */
  for (int pass = 0; pass < 2; pass++) {
    reset_client(300 / TU_PAYLOAD_DIV);
    cgnet_ws_options co = {.deflate = pass ? CGNET_OFF : CGNET_DEFAULT};
    dial_and_wait(&co, url, &dopts, 0);
    assert_int_equal(atomic_load(&C.opened), 1);
    assert_int_equal(atomic_load(&C.echoed), C.total);
    assert_int_equal(atomic_load(&C.bad), 0);
    assert_int_equal(atomic_load(&C.close_code), 1000);
    assert_string_equal(C.reason, ""); /* the server echoes the code alone */
    assert_string_equal(C.protocol, "chat.v1");
    assert_int_equal(C.deflate, pass == 0 && cgnet__ws_deflate_available());
  }
  /* Refused by the server's handshake callback: no open, 1006 with the status. */
  reset_client(1);
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/forbidden", sv.s.port);
  dial_and_wait(NULL, url, NULL, 0);
  assert_int_equal(atomic_load(&C.opened), 0);
  assert_int_equal(atomic_load(&C.close_code), 1006);
  assert_non_null(strstr(C.reason, "403"));
  stop(&sv);
  /* Nobody listening: 1006 with the connect error. */
  int port;
  int lfd = tu_listen_any(&port);
  close(lfd);
  reset_client(1);
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
  dial_and_wait(NULL, url, NULL, 0);
  assert_int_equal(atomic_load(&C.opened), 0);
  assert_int_equal(atomic_load(&C.close_code), 1006);
  assert_string_equal(C.reason, cgnet_strerror(CGNET_ECONNREFUSED));
  /* A server that never answers the upgrade: the handshake timeout. */
  lfd = tu_listen_any(&port);
  reset_client(1);
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
  cgnet_ws_options quick = {.handshake_timeout_ms = 200};
  dial_and_wait(&quick, url, NULL, 0);
  assert_int_equal(atomic_load(&C.close_code), 1006);
  assert_string_equal(C.reason, "handshake timed out");
  close(lfd);
  /* Malformed URLs. */
  dial_and_wait(NULL, "http://127.0.0.1:1/", NULL, CGNET_EBADSCHEME);
  dial_and_wait(NULL, "ws:///path", NULL, CGNET_EBADADDR);
  dial_and_wait(NULL, "ws://user@host:1/", NULL, CGNET_EBADADDR);
  dial_and_wait(NULL, "ws://host:1/a b", NULL, CGNET_EBADADDR);
}

/* ---- tests: the client against Python's websockets server ------------------------------
 */

extern char **environ;

/* Start argv (found in PATH) with its stdout on a pipe (and its stderr dropped if
 * `quiet`); read its first line. Returns the pid, or -1. */
static pid_t spawn_reading_line(const char *const *argv, char *line, size_t cap,
                                int quiet) {
  int pipefd[2];
  if (pipe(pipefd) < 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  if (quiet) posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (rc != 0) {
    close(pipefd[0]);
    return -1;
  }
  size_t n = 0;
  char ch;
  while (n + 1 < cap && read(pipefd[0], &ch, 1) == 1 && ch != '\n')
    line[n++] = ch;
  line[n] = '\0';
  close(pipefd[0]);
  return pid;
}

/* An echo server in Python's websockets on a free port, printed first; argv[1] says
 * whether it accepts permessage-deflate. */
static const char PY_SERVER[] =
    "import asyncio, sys, websockets\n"
    "async def echo(ws):\n"
    "    async for m in ws:\n"
    "        await ws.send(m)\n"
    "async def main():\n"
    "    comp = 'deflate' if sys.argv[1] == 'deflate' else None\n"
    "    async with websockets.serve(echo, '127.0.0.1', 0, compression=comp,\n"
    "                                subprotocols=['chat.v1'], max_size=None) as srv:\n"
    "        print(srv.sockets[0].getsockname()[1], flush=True)\n"
    "        await asyncio.Future()\n"
    "asyncio.run(main())\n";

static void test_client_against_python(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped: no python3 with the websockets module "
                    "(Debian: python3-websockets; scripts/deps.sh installs it)\n");
    skip();
  }
  for (int pass = 0; pass < 2; pass++) {
    const char *mode = pass == 0 ? "deflate" : "plain";
    const char *argv[] = {python, "-c", PY_SERVER, mode, NULL};
    char line[32];
    pid_t pid = spawn_reading_line(argv, line, sizeof line, 0);
    assert_true(pid > 0);
    int port = atoi(line);
    if (port <= 0) {
      (void)tu_stop_process(pid, 5000);
      fail_msg("python server printed '%s'", line);
    }
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
    const char *offer[] = {"chat.v1"};
    cgnet_ws_dial_options dopts = {.subprotocols = offer, .nsubprotocols = 1};
    reset_client(200 / TU_PAYLOAD_DIV);
    dial_and_wait(NULL, url, &dopts, 0);
    (void)tu_stop_process(pid, 5000); /* SIGTERM ends it; its status says nothing */
    assert_int_equal(atomic_load(&C.opened), 1);
    assert_int_equal(atomic_load(&C.echoed), C.total);
    assert_int_equal(atomic_load(&C.bad), 0);
    assert_int_equal(atomic_load(&C.close_code), 1000);
    assert_string_equal(C.protocol, "chat.v1");
    assert_int_equal(C.deflate, pass == 0 && cgnet__ws_deflate_available());
  }
}

/* A dialed conn streams the big text (masked, and compressed where agreed) in pieces cut
 * inside characters; the server reassembles, inflates and validates it, and echoes it
 * whole. */
static char stream_text[BIG_LINES * 40];
static size_t stream_text_len;

static cgnet_action st_open(cgnet_conn *c) {
  C.deflate = cgnet_ws_deflate_enabled(c);
  atomic_store(&C.opened, 1);
  TU_CHECK_EQ(cgnet_ws_send_begin(c, CGNET_WS_TEXT), 0);
  for (size_t off = 0; off < stream_text_len; off += 501) {
    size_t n = stream_text_len - off < 501 ? stream_text_len - off : 501;
    TU_CHECK_EQ(cgnet_ws_send_piece(c, stream_text + off, n), 0);
  }
  TU_CHECK_EQ(cgnet_ws_send_piece(c, "\xf0\x9f", 2), 0); /* half of an emoji */
  TU_CHECK_EQ(cgnet_ws_send_end(c), CGNET_EINVAL);
  TU_CHECK_EQ(cgnet_ws_send_piece(c, "\x98\x80", 2), 0);
  TU_CHECK_EQ(cgnet_ws_send_end(c), 0);
  return CGNET_NONE;
}

static cgnet_action st_message(cgnet_conn *c, cgnet_ws_opcode op, const uint8_t *d,
                               size_t n) {
  if (op != CGNET_WS_TEXT || n != stream_text_len + 4 ||
      memcmp(d, stream_text, stream_text_len) != 0 ||
      memcmp(d + stream_text_len, "\xf0\x9f\x98\x80", 4) != 0)
    atomic_fetch_add(&C.bad, 1);
  atomic_fetch_add(&C.echoed, 1);
  TU_CHECK_EQ(cgnet_ws_close(c, 1000, NULL), 0);
  return CGNET_NONE;
}

static const cgnet_ws_handler STREAM_CLIENT = {
    .on_ws_open = st_open,
    .on_ws_message = st_message,
    .on_ws_close = cl_close,
};

static void test_client_streams(void **state) {
  (void)state;
  stream_text_len = big_text(stream_text, sizeof stream_text);
  server sv;
  start(&sv, NULL);
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", sv.s.port);
  for (int pass = 0; pass < 2; pass++) {
    reset_client(1);
    cgnet_ws_options wo = {.deflate = pass ? CGNET_OFF : CGNET_DEFAULT};
    cgnet_ws_server *wc;
    assert_int_equal(cgnet_ws_server_new(&STREAM_CLIENT, &wo, &wc), 0);
    cgnet_handler h;
    cgnet_ws_server_handler(wc, &h);
    cgnet_client *cl;
    assert_int_equal(cgnet_client_new(&h, NULL, &cl), 0);
    assert_int_equal(cgnet_ws_dial(cl, wc, url, NULL, &C, NULL), 0);
    assert_true(tu_wait_atomic_eq(&C.closed, 1, TU_TIMEOUT_MS));
    assert_int_equal(cgnet_client_free(cl, 1000), 0);
    cgnet_ws_server_free(wc);
    assert_int_equal(atomic_load(&C.echoed), 1);
    assert_int_equal(atomic_load(&C.bad), 0);
    assert_int_equal(atomic_load(&C.close_code), 1000);
    assert_int_equal(C.deflate, pass == 0 && cgnet__ws_deflate_available());
  }
  stop(&sv);
}

/* A client being freed says goodbye the same way, in the middle of its echoes: the
 * server hears 1001 and echoes it. */
static void test_client_free_sends_going_away(void **state) {
  (void)state;
  char reason[128];
  server sv;
  start(&sv, NULL);
  reset_client(1 << 30);
  cgnet_ws_server *wc;
  assert_int_equal(cgnet_ws_server_new(&CLIENT_HANDLER, NULL, &wc), 0);
  cgnet_handler h;
  cgnet_ws_server_handler(wc, &h);
  cgnet_client *cl;
  assert_int_equal(cgnet_client_new(&h, NULL, &cl), 0);
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", sv.s.port);
  assert_int_equal(cgnet_ws_dial(cl, wc, url, NULL, &C, NULL), 0);
  assert_true(tu_wait_atomic_ge(&C.echoed, 3, TU_TIMEOUT_MS));
  assert_int_equal(cgnet_client_free(cl, 5000), 0);
  cgnet_ws_server_free(wc);
  assert_int_equal(atomic_load(&C.closed), 1);
  assert_int_equal(atomic_load(&C.close_code), 1001); /* the server's echo */
  assert_int_equal(atomic_load(&C.bad), 0);
  assert_true(tu_wait_atomic_eq(&S.closes, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.last_code), 1001);
  assert_string_equal(last_reason(reason, sizeof reason), "going away");
  stop(&sv);
}

/* ---- tests: wss:// ---------------------------------------------------------------------
 */

#ifdef CGNET_HAVE_TLS
/* Python's websockets over wss:// (argv[1] the port, argv[2] the CA file): "pause-me"
 * and three messages sent back to back; the echoes come in order, after the pause.
 * Prints "ok". */
static const char PY_WSS_PAUSE[] =
    "import asyncio, ssl, sys, time, websockets\n"
    "async def main(port, ca):\n"
    "    ctx = ssl.create_default_context(cafile=ca)\n"
    "    async with websockets.connect('wss://127.0.0.1:%s/' % port, ssl=ctx) as ws:\n"
    "        t0 = time.monotonic()\n"
    "        for m in ['pause-me', 'one', 'two', 'three']:\n"
    "            await ws.send(m)\n"
    "        for m in ['one', 'two', 'three']:\n"
    "            got = await asyncio.wait_for(ws.recv(), 10)\n"
    "            assert got == m, (got, m)\n"
    "            assert time.monotonic() - t0 >= 0.25, time.monotonic() - t0\n"
    "    print('ok', flush=True)\n"
    "asyncio.run(main(sys.argv[1], sys.argv[2]))\n";

/* Pausing inside on_ws_message on a TLS conn, whose session may hold decrypted bytes. */
static void wss_pause_python(int port, const char *dir) {
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped (the Python part): no python3 with the websockets module\n");
    return;
  }
  char port_s[16], ca[128], line[64];
  snprintf(port_s, sizeof port_s, "%d", port);
  snprintf(ca, sizeof ca, "%s/ca.pem", dir);
  const char *argv[] = {python, "-c", PY_WSS_PAUSE, port_s, ca, NULL};
  atomic_store(&S.resumed, 0);
  pid_t pid = spawn_reading_line(argv, line, sizeof line, 0);
  assert_true(pid > 0);
  int rc = tu_wait_exit(pid, 60000 * TU_SLOW);
  if (rc != 0 || strcmp(line, "ok") != 0)
    fail_msg("python wss client: exit %d, printed \"%s\"", rc, line);
  assert_int_equal(atomic_load(&S.resumed), 1);
  assert_int_equal(atomic_load(&S.while_paused), 0);
}

static cgnet_tls_ctx *tls_ctx(const cgnet_tls_options *o) {
  cgnet_tls_ctx *ctx;
  char msg[256];
  int rc = cgnet_tls_ctx_new(o, &ctx, msg, sizeof msg);
  if (rc) fail_msg("cgnet_tls_ctx_new: %s: %s", cgnet_err_name(rc), msg);
  return ctx;
}

/* A ws server on tls://127.0.0.1:0 with the certificate `pem`. */
static void start_wss(server *sv, const tu_pem *pem) {
  reset_state();
  cgnet_tls_cert cert = {.chain = {.data = pem->cert}, .key = {.data = pem->key}};
  cgnet_tls_options so = {.role = CGNET_TLS_SERVER, .certs = &cert, .ncerts = 1};
  cgnet_options o = {.tls = tls_ctx(&so)};
  assert_int_equal(cgnet_ws_server_new(&HANDLER, NULL, &sv->ws), 0);
  cgnet_handler eh;
  cgnet_ws_server_handler(sv->ws, &eh);
  const char *addrs[] = {"tls://127.0.0.1:0"};
  assert_int_equal(tu_server_start_at(&sv->s, &eh, addrs, 1, &o), 0);
  cgnet_tls_ctx_free(o.tls);
}

/* cgnet's wss client against its wss server (deflate on and off), verifying the server
 * against the test CA, and a Python client pausing the server inside on_ws_message;
 * then a server whose certificate names another host: the dial ends with 1006 and the
 * TLS verify error. */
static void test_wss(void **state) {
  (void)state;
  tu_tls_certs certs;
  assert_int_equal(tu_tls_certs_make(&certs), 0);
  cgnet_tls_options co = {.role = CGNET_TLS_CLIENT, .ca = {.data = certs.ca.cert}};
  cgnet_options copts = {.tls = tls_ctx(&co)};
  server sv;
  start_wss(&sv, &certs.server);
  char url[128];
  snprintf(url, sizeof url, "wss://127.0.0.1:%d/secure?x=1", sv.s.port);
  for (int pass = 0; pass < 2; pass++) {
    reset_client(100 / TU_PAYLOAD_DIV);
    cgnet_ws_options wo = {.deflate = pass ? CGNET_OFF : CGNET_DEFAULT};
    dial_and_wait_with(&copts, &wo, url, NULL, 0);
    assert_int_equal(atomic_load(&C.opened), 1);
    assert_int_equal(atomic_load(&C.echoed), C.total);
    assert_int_equal(atomic_load(&C.bad), 0);
    assert_int_equal(atomic_load(&C.close_code), 1000);
    assert_int_equal(C.deflate, pass == 0 && cgnet__ws_deflate_available());
  }
  assert_true(tu_wait_atomic_eq(&S.closes, 2, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&S.opens), 2);
  wss_pause_python(sv.s.port, certs.dir);
  stop(&sv);

  start_wss(&sv, &certs.wrong_host);
  reset_client(1);
  snprintf(url, sizeof url, "wss://127.0.0.1:%d/", sv.s.port);
  dial_and_wait_with(&copts, NULL, url, NULL, 0);
  assert_int_equal(atomic_load(&C.opened), 0);
  assert_int_equal(atomic_load(&C.close_code), 1006);
  const char *verify = cgnet_strerror(CGNET_ETLSVERIFY);
  if (strncmp(C.reason, verify, strlen(verify)) != 0 || strlen(C.reason) <= strlen(verify))
    fail_msg("reason \"%s\"", C.reason);
  assert_int_equal(atomic_load(&S.opens), 0);
  stop(&sv);
  cgnet_tls_ctx_free(copts.tls);
  tu_tls_certs_free(&certs);
}
#else
static void test_wss(void **state) {
  (void)state;
  assert_int_equal(cgnet_tls_available(), 0);
  fprintf(stderr, "skipped: built without TLS\n");
  skip();
}
#endif

/* ---- tests: a streamed message as Python's websockets sees it --------------------------
 */

/* argv[1] the port. Over websockets (deflate offered) the streamed text must arrive
 * whole and equal; over a raw socket that offers deflate, its first frame must have
 * RSV1 and the payloads must inflate (zlib, raw, with the tail appended) to the text. */
static const char PY_STREAM[] =
    "import asyncio, base64, os, socket, sys, zlib, websockets\n"
    "port = int(sys.argv[1])\n"
    "want = ''.join('line %d: h\\u00e9llo w\\u00f6rld \\u20ac\\n' % i for i in "
    "range(2000))\n"
    "async def lib():\n"
    "    async with websockets.connect('ws://127.0.0.1:%d/' % port, max_size=None,\n"
    "                                  compression='deflate') as ws:\n"
    "        ext = ws.response_headers.get('Sec-WebSocket-Extensions') or ''\n"
    "        assert 'permessage-deflate' in ext, ext\n"
    "        await ws.send('stream-big')\n"
    "        got = await ws.recv()\n"
    "        assert got == want, (len(got), len(want))\n"
    "asyncio.run(lib())\n"
    "s = socket.create_connection(('127.0.0.1', port), timeout=20)\n"
    "key = base64.b64encode(os.urandom(16)).decode()\n"
    "s.sendall(('GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n'\n"
    "           'Connection: Upgrade\\r\\nSec-WebSocket-Key: %s\\r\\n'\n"
    "           'Sec-WebSocket-Version: 13\\r\\n'\n"
    "           'Sec-WebSocket-Extensions: permessage-deflate\\r\\n\\r\\n' % "
    "key).encode())\n"
    "buf = b''\n"
    "while b'\\r\\n\\r\\n' not in buf:\n"
    "    buf += s.recv(4096)\n"
    "head, buf = buf.split(b'\\r\\n\\r\\n', 1)\n"
    "assert b' 101 ' in head and b'permessage-deflate' in head, head\n"
    "m = os.urandom(4)\n"
    "p = b'stream-big'\n"
    "s.sendall(bytes([0x81, 0x80 | len(p)]) + m + bytes(b ^ m[i % 4] for i, b in "
    "enumerate(p)))\n"
    "def need(n):\n"
    "    global buf\n"
    "    while len(buf) < n:\n"
    "        d = s.recv(65536)\n"
    "        assert d, 'eof'\n"
    "        buf += d\n"
    "    r, buf = buf[:n], buf[n:]\n"
    "    return r\n"
    "payload, first, frames = b'', None, 0\n"
    "while True:\n"
    "    h = need(2)\n"
    "    n = h[1] & 0x7f\n"
    "    if n == 126: n = int.from_bytes(need(2), 'big')\n"
    "    elif n == 127: n = int.from_bytes(need(8), 'big')\n"
    "    if first is None: first = h[0]\n"
    "    else: assert h[0] & 0x7f == 0, hex(h[0])\n"
    "    payload += need(n)\n"
    "    frames += 1\n"
    "    if h[0] & 0x80: break\n"
    "assert first & 0x40, 'no RSV1 on the first frame'\n"
    "assert first & 0x0f == 1, first\n"
    "text = zlib.decompressobj(-15).decompress(payload + b'\\x00\\x00\\xff\\xff')\n"
    "assert text.decode('utf-8') == want\n"
    "assert len(payload) < len(text) // 4, (len(payload), len(text))\n"
    "print('ok %d frames, %d -> %d bytes' % (frames, len(text), len(payload)), "
    "flush=True)\n";

static void test_stream_python_client(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped: no python3 with the websockets module "
                    "(Debian: python3-websockets; scripts/deps.sh installs it)\n");
    skip();
  }
  if (!cgnet__ws_deflate_available()) {
    fprintf(stderr, "skipped: built without zlib (no permessage-deflate)\n");
    skip();
  }
  server sv;
  start(&sv, NULL);
  char port_s[16], line[128];
  snprintf(port_s, sizeof port_s, "%d", sv.s.port);
  const char *argv[] = {python, "-c", PY_STREAM, port_s, NULL};
  pid_t pid = spawn_reading_line(argv, line, sizeof line, 0);
  assert_true(pid > 0);
  int rc = tu_wait_exit(pid, 60000 * TU_SLOW);
  if (rc != 0 || strncmp(line, "ok ", 3) != 0)
    fail_msg("python client: exit %d, printed \"%s\"", rc, line);
  print_message("python client: %s\n", line); /* the frames and the compression */
  stop(&sv);
}

int main(void) {
  tu_apply_test_filter();
  pthread_mutex_init(&S.mu, NULL);
#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)
  const struct CMUnitTest tests[] = {
      T(test_handshake_and_close),
      T(test_handshake_trickled),
      T(test_bad_handshakes),
      T(test_subprotocols),
      T(test_plain_http_shares_listener),
      T(test_handshake_timeout),
      T(test_echo_random),
      T(test_protocol_errors),
      T(test_close_timeout),
      T(test_stream_and_ping),
      T(test_async),
      T(test_backpressure),
      T(test_pool_sends),
      T(test_idle_timeout),
      T(test_deflate),
      T(test_many_clients),
      T(test_not_a_ws_conn),
      T(test_client_dial),
      T(test_client_against_python),
      T(test_pause_in_message),
      T(test_stream_utf8_and_deflate),
      T(test_stop_sends_going_away),
      T(test_wss),
      T(test_stream_python_client),
      T(test_client_streams),
      T(test_client_free_sends_going_away),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
