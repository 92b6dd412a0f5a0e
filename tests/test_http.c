/*
 * Tests for examples/http_plaintext: the pipelined HTTP/1.1 server used by the benchmark.
 * The group starts the real binary on 127.0.0.1:0 (its first stdout line names the port)
 * with a short header timeout, and each test talks to it over loopback sockets. Responses
 * are compared byte for byte, with the Date value (always 29 characters) masked.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
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

#include "support/proc.h"
#include "support/support.h"

/* Short, so the test of it is quick; long enough for the other tests' pauses. */
#define HEADER_TIMEOUT_MS 1500
#define HEADER_TIMEOUT_MS_STR "1500"

typedef struct server {
  pid_t pid;
  int port;
} server;

static server g_srv;

static int start_server(void **state) {
  (void)state;
  const char *args[] = {"tcp://127.0.0.1:0",   "--loops", "2", "--header-timeout-ms",
                        HEADER_TIMEOUT_MS_STR, NULL};
  char line[256];
  g_srv.pid = tu_spawn_example("http_plaintext", args, line, sizeof line);
  if (g_srv.pid < 0) return -1;
  g_srv.port = tu_port_after(line, "listening on ");
  return g_srv.port > 0 ? 0 : -1;
}

static int stop_server(void **state) {
  (void)state;
  return tu_stop_process(g_srv.pid, 5000) == 0 ? 0 : -1;
}

/* Read until the peer closes or `want` complete responses ("\r\n\r\n" + body) arrived. */
static size_t read_some(int fd, char *buf, size_t cap, int timeout_ms) {
  size_t got = 0;
  uint64_t end = tu_now_ms() + (uint64_t)timeout_ms;
  tu_set_nonblock(fd, 1);
  while (got + 1 < cap && tu_now_ms() < end) {
    ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0) break;
    if (errno != EAGAIN) break;
    tu_sleep_ms(2);
  }
  buf[got] = '\0';
  return got;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

static int connect_srv(void) {
  int fd = tu_connect4(g_srv.port);
  assert_true(fd >= 0);
  return fd;
}

static const char GET[] = "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";

static void plaintext_response(void **state) {
  (void)state;
  int fd = connect_srv();
  assert_int_equal(tu_send_all(fd, GET, sizeof GET - 1, TU_TIMEOUT_MS), 0);
  char buf[4096];
  read_some(fd, buf, sizeof buf, 300);
  assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(buf, "Content-Type: text/plain\r\n"));
  assert_non_null(strstr(buf, "Content-Length: 13\r\n"));
  assert_non_null(strstr(buf, "Server: cgnet\r\n"));
  assert_non_null(strstr(buf, "Date: "));
  assert_non_null(strstr(buf, " GMT\r\n"));
  assert_non_null(strstr(buf, "\r\n\r\nHello, World!"));
  close(fd);
}

static void pipelined_batch_in_one_go(void **state) {
  (void)state;
  int fd = connect_srv();
  char req[16 * sizeof GET];
  size_t len = 0;
  for (int i = 0; i < 16; i++) {
    memcpy(req + len, GET, sizeof GET - 1);
    len += sizeof GET - 1;
  }
  assert_int_equal(tu_send_all(fd, req, len, TU_TIMEOUT_MS), 0);
  char buf[16384];
  read_some(fd, buf, sizeof buf, 300);
  assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 16);
  assert_int_equal(count(buf, "Hello, World!"), 16);
  close(fd);
}

static void split_request_waits_for_rest(void **state) {
  (void)state;
  int fd = connect_srv();
  const char *parts[] = {"GET /plain", "text HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"};
  char buf[4096];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(tu_send_all(fd, parts[i], strlen(parts[i]), TU_TIMEOUT_MS), 0);
    assert_int_equal(read_some(fd, buf, sizeof buf, 50), 0); /* nothing yet */
  }
  assert_int_equal(tu_send_all(fd, parts[3], strlen(parts[3]), TU_TIMEOUT_MS), 0);
  read_some(fd, buf, sizeof buf, 300);
  assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 1);
  close(fd);
}

static void body_is_skipped(void **state) {
  (void)state;
  int fd = connect_srv();
  const char req[] = "POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
                     "GET / HTTP/"
                     "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(tu_send_all(fd, req, sizeof req - 1, TU_TIMEOUT_MS), 0);
  char buf[4096];
  read_some(fd, buf, sizeof buf, 300);
  assert_int_equal(count(buf, "HTTP/1.1 404 Not Found"), 1);
  assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 1);
  assert_null(strstr(buf, "400"));
  close(fd);
}

static void not_found(void **state) {
  (void)state;
  int fd = connect_srv();
  const char req[] = "GET /other HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(tu_send_all(fd, req, sizeof req - 1, TU_TIMEOUT_MS), 0);
  char buf[4096];
  read_some(fd, buf, sizeof buf, 300);
  assert_non_null(strstr(buf, "HTTP/1.1 404 Not Found\r\n"));
  close(fd);
}

/* A response, then the server closes: read_some returns at EOF well before its timeout. */
static void expect_status_then_close(const char *req, size_t len, const char *status) {
  int fd = connect_srv();
  assert_int_equal(tu_send_all(fd, req, len, TU_TIMEOUT_MS), 0);
  char buf[4096];
  uint64_t t0 = tu_now_ms();
  read_some(fd, buf, sizeof buf, 3000);
  assert_true(tu_now_ms() - t0 < 2500); /* closed by the server, not timed out */
  assert_non_null(strstr(buf, status));
  close(fd);
}

static void malformed_gets_400_and_close(void **state) {
  (void)state;
  static const char *bad[] = {
      "GARBAGE\r\n\r\n",
      "GET /plaintext\r\n\r\n",
      "GET plaintext HTTP/1.1\r\n\r\n",
      "GET /plaintext HTTP/2.0\r\n\r\n",
      "GET /plaintext HTTP/1.1\r\nNoColonHere\r\n\r\n",
      "GET /plaintext HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
      "GET /plaintext HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_status_then_close(bad[i], strlen(bad[i]), "HTTP/1.1 400 Bad Request");
}

static void oversized_headers_get_431(void **state) {
  (void)state;
  size_t len = 9000;
  char *req = malloc(len + 64);
  assert_non_null(req);
  int n = sprintf(req, "GET /plaintext HTTP/1.1\r\nX-Big: ");
  memset(req + n, 'a', len - (size_t)n);
  expect_status_then_close(req, len, "HTTP/1.1 431");
  free(req);
}

static void connection_close_is_honoured(void **state) {
  (void)state;
  const char req[] = "GET /plaintext HTTP/1.1\r\nConnection: close\r\n\r\n"
                     "GET /plaintext HTTP/1.1\r\n\r\n";
  int fd = connect_srv();
  assert_int_equal(tu_send_all(fd, req, sizeof req - 1, TU_TIMEOUT_MS), 0);
  char buf[4096];
  uint64_t t0 = tu_now_ms();
  read_some(fd, buf, sizeof buf, 3000);
  assert_true(tu_now_ms() - t0 < 2500);
  assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 1); /* nothing after the close */
  close(fd);
  /* HTTP/1.0 closes by default, keeps alive on request. */
  const char r10[] = "GET /plaintext HTTP/1.0\r\n\r\n";
  expect_status_then_close(r10, sizeof r10 - 1, "HTTP/1.1 200 OK");
  fd = connect_srv();
  const char r10ka[] = "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  assert_int_equal(tu_send_all(fd, r10ka, sizeof r10ka - 1, TU_TIMEOUT_MS), 0);
  assert_int_equal(tu_send_all(fd, r10ka, sizeof r10ka - 1, TU_TIMEOUT_MS), 0);
  read_some(fd, buf, sizeof buf, 300);
  assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 2);
  close(fd);
}

/* ---- exact responses ---------------------------------------------------------------- */

/* Response templates: "@DATE@" stands for the 29-character Date value. */
#define HDRS(status, len)                                                                  \
  "HTTP/1.1 " status "\r\nServer: cgnet\r\nContent-Type: text/plain\r\n"                   \
  "Content-Length: " len "\r\nDate: @DATE@\r\n"
#define OK_11 HDRS("200 OK", "13") "\r\nHello, World!"
#define OK_10_KA HDRS("200 OK", "13") "Connection: keep-alive\r\n\r\nHello, World!"
#define OK_CLOSE HDRS("200 OK", "13") "Connection: close\r\n\r\nHello, World!"
#define NOT_FOUND HDRS("404 Not Found", "9") "\r\nNot Found"
#define ERR(status, len, body) HDRS(status, len) "Connection: close\r\n\r\n" body

static const size_t DATE_LEN = 29; /* "Wed, 02 Dec 2026 07:24:22 GMT" */

static size_t expected_len(const char *tmpl) {
  return strlen(tmpl) + count(tmpl, "@DATE@") * (DATE_LEN - 6);
}

/* Read exactly the bytes `tmpl` stands for (or fail), and compare them with the Date
 * values masked; each Date must look like an IMF-fixdate. */
static void expect_response(int fd, const char *tmpl) {
  size_t want = expected_len(tmpl);
  char got[4096];
  assert_true(want < sizeof got);
  size_t n = 0;
  int rc = tu_recv_exact(fd, got, want, 5000 * TU_SLOW, &n);
  if (rc != 0) fail_msg("wanted %zu bytes of\n%s\ngot %zu (rc %d)", want, tmpl, n, rc);
  got[want] = '\0';
  char masked[4096];
  size_t o = 0;
  for (const char *p = got; *p;) {
    if (strncmp(p, "Date: ", 6) == 0) {
      assert_memory_equal(p + 6 + DATE_LEN - 4, " GMT", 4);
      assert_true(p[6 + 3] == ',' && p[6 + 4] == ' ');
      o += (size_t)sprintf(masked + o, "Date: @DATE@");
      p += 6 + DATE_LEN;
    } else {
      masked[o++] = *p++;
    }
  }
  masked[o] = '\0';
  if (strcmp(masked, tmpl) != 0) fail_msg("got\n%s\nwant\n%s", masked, tmpl);
}

/* Every send of a test shares one deadline, so a server that stops reading fails the
 * test in bounded time however many sends it makes. */
static uint64_t g_deadline;

static int reset_deadline(void **state) {
  (void)state;
  g_deadline = 0;
  return 0;
}

static void send_str(int fd, const char *s, size_t len) {
  uint64_t now = tu_now_ms();
  if (!g_deadline) g_deadline = now + 60000 * TU_SLOW;
  int left = now < g_deadline ? (int)(g_deadline - now) : 1;
  assert_int_equal(tu_send_all(fd, s, len, left), 0);
}
#define SEND(fd, lit) send_str(fd, lit, sizeof lit - 1)

/* The server closed its side after what was read (orderly FIN, nothing more). */
static void expect_closed(int fd) {
  assert_rc(tu_expect_eof(fd, 5000 * TU_SLOW, NULL), 0);
}

/* The conn is still open: another request gets its answer. */
static void expect_still_open(int fd) {
  SEND(fd, "GET /plaintext HTTP/1.1\r\n\r\n");
  expect_response(fd, OK_11);
}

static void http10_keep_alive_stays_open(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "GET /plaintext HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  expect_response(fd, OK_10_KA);
  SEND(fd, "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  expect_response(fd, OK_10_KA);
  SEND(fd, "GET /plaintext HTTP/1.0\r\n\r\n"); /* no keep-alive: the last one */
  expect_response(fd, OK_CLOSE);
  expect_closed(fd);
  close(fd);
}

static void connection_close_says_so(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "GET /plaintext HTTP/1.1\r\nConnection: close\r\n\r\n");
  expect_response(fd, OK_CLOSE);
  expect_closed(fd);
  close(fd);
}

static void date_on_error_responses(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "GARBAGE\r\n\r\n");
  expect_response(fd, ERR("400 Bad Request", "11", "Bad Request"));
  expect_closed(fd);
  close(fd);

  fd = connect_srv();
  SEND(fd, "POST /plaintext HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
  expect_response(fd, ERR("413 Content Too Large", "17", "Content Too Large"));
  expect_closed(fd);
  close(fd);

  fd = connect_srv();
  char big[9000];
  int n = sprintf(big, "GET /plaintext HTTP/1.1\r\nX-Big: ");
  memset(big + n, 'a', sizeof big - (size_t)n);
  send_str(fd, big, sizeof big);
  expect_response(fd, ERR("431 Request Header Fields Too Large", "31",
                          "Request Header Fields Too Large"));
  expect_closed(fd);
  close(fd);
}

static void leading_empty_lines_ignored(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "\r\n\r\nGET /plaintext HTTP/1.1\r\n\r\n\r\nGET /nope HTTP/1.1\r\n\r\n");
  expect_response(fd, OK_11);
  expect_response(fd, NOT_FOUND);
  expect_still_open(fd);
  close(fd);
}

static void connection_tokens_are_whole_words(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "GET /plaintext HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\n\r\n");
  expect_response(fd, OK_10_KA);
  SEND(fd, "GET /plaintext HTTP/1.1\r\nConnection: xclose\r\n\r\n");
  expect_response(fd, OK_11); /* "xclose" is not "close" */
  SEND(fd, "GET /plaintext HTTP/1.1\r\nConnection: closed, keep-alivex\r\n\r\n");
  expect_response(fd, OK_11);
  expect_still_open(fd);
  SEND(fd, "GET /plaintext HTTP/1.1\r\nConnection: Upgrade ,\tCLOSE \r\n\r\n");
  expect_response(fd, OK_CLOSE);
  expect_closed(fd);
  close(fd);
}

static void nul_byte_is_400(void **state) {
  (void)state;
  static const char req[] = "GET /plaintext HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
  int fd = connect_srv();
  send_str(fd, req, sizeof req - 1);
  expect_response(fd, ERR("400 Bad Request", "11", "Bad Request"));
  expect_closed(fd);
  close(fd);
}

static void query_string_reaches_path(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "GET /plaintext?x=1&y=/z HTTP/1.1\r\n\r\nGET /plaintext? HTTP/1.1\r\n\r\n");
  expect_response(fd, OK_11);
  expect_response(fd, OK_11);
  close(fd);
}

static void lowercase_method_is_501(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "get /plaintext HTTP/1.1\r\n\r\n");
  expect_response(fd, HDRS("501 Not Implemented", "15") "\r\nNot Implemented");
  expect_still_open(fd); /* the request was well framed: no reason to close */
  close(fd);
}

static void post_to_get_path_is_405(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "POST /plaintext HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  expect_response(fd, HDRS("405 Method Not Allowed", "18") "Allow: GET, HEAD\r\n\r\n"
                                                           "Method Not Allowed");
  expect_still_open(fd);
  close(fd);
}

static void head_gets_headers_only(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "HEAD /plaintext HTTP/1.1\r\n\r\nGET /plaintext HTTP/1.1\r\n\r\n");
  expect_response(fd, HDRS("200 OK", "13") "\r\n");
  expect_response(fd, OK_11); /* right after the HEAD's blank line: no body between */
  close(fd);
}

/* 1 MiB of body in 64 KiB pieces with pauses, then a pipelined request. */
static void big_body_in_pieces_is_skipped(void **state) {
  (void)state;
  enum { BODY = 1 << 20, PIECE = 64 << 10 };
  int fd = connect_srv();
  SEND(fd, "POST /plaintext/x HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n");
  static char piece[PIECE];
  memset(piece, 'b', sizeof piece);
  for (int i = 0; i < BODY / PIECE; i++) {
    send_str(fd, piece, sizeof piece);
    if (i % 4 == 0) tu_sleep_ms(5);
  }
  SEND(fd, "GET /plaintext HTTP/1.1\r\n\r\n");
  expect_response(fd, NOT_FOUND);
  expect_response(fd, OK_11);
  close(fd);
}

/* Many conns, each in the middle of a 1 MiB body: the server's memory does not hold
 * the bodies (they are discarded as they arrive). */
static void bodies_are_not_buffered(void **state) {
  (void)state;
  enum { CONNS = 64, BODY = 1 << 20, PIECE = 64 << 10 };
  int fds[CONNS];
  long before = tu_rss_kb_of(g_srv.pid);
  assert_true(before > 0);
  static char piece[PIECE];
  memset(piece, 'b', sizeof piece);
  for (int i = 0; i < CONNS; i++) {
    fds[i] = connect_srv();
    SEND(fds[i], "POST /x HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n");
    for (int k = 0; k < BODY / PIECE; k++)
      send_str(fds[i], piece, sizeof piece);
  }
  /* Every conn answered a request sent after its body: all bytes went through. */
  for (int i = 0; i < CONNS; i++) {
    for (int k = 0; k < BODY / PIECE; k++)
      send_str(fds[i], piece, sizeof piece);
    SEND(fds[i], "GET /plaintext HTTP/1.1\r\n\r\n");
  }
  long peak = tu_rss_kb_of(g_srv.pid);
  for (int i = 0; i < CONNS; i++) {
    expect_response(fds[i], NOT_FOUND);
    expect_response(fds[i], OK_11);
    close(fds[i]);
  }
  fprintf(stderr, "  server RSS %ld -> %ld KiB with %d x 2 MiB bodies\n", before, peak,
          CONNS);
  assert_true(peak - before < 32 * 1024); /* far below the 128 MiB of bodies */
}

static void chunked_body_is_skipped(void **state) {
  (void)state;
  int fd = connect_srv();
  SEND(fd, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: t\r\n\r\n"
           "GET /plaintext HTTP/1.1\r\n\r\n");
  expect_response(fd, NOT_FOUND);
  expect_response(fd, OK_11);
  close(fd);
}

static void ambiguous_framing_is_refused(void **state) {
  (void)state;
  static const char *bad[] = {
      "POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      "POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "POST /x HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
      "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET /x HTTP/1.1\r\n Folded: header\r\n\r\n",
      "GET /x HTTP/1.1\nHost: x\n\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int fd = connect_srv();
    send_str(fd, bad[i], strlen(bad[i]));
    expect_response(fd, ERR("400 Bad Request", "11", "Bad Request"));
    expect_closed(fd);
    close(fd);
  }
  int fd = connect_srv();
  SEND(fd, "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  expect_response(fd, ERR("501 Not Implemented", "15", "Not Implemented"));
  expect_closed(fd);
  close(fd);
}

/* A head that never completes is answered 408 and closed after the header timeout,
 * even while bytes keep trickling in. */
static void incomplete_head_times_out(void **state) {
  (void)state;
  int fd = connect_srv();
  uint64_t t0 = tu_now_ms();
  SEND(fd, "GET /plaintext HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < 5; i++) {
    tu_sleep_ms(100);
    SEND(fd, "X: y\r\n");
  }
  expect_response(fd, ERR("408 Request Timeout", "15", "Request Timeout"));
  uint64_t took = tu_now_ms() - t0;
  expect_closed(fd);
  close(fd);
  fprintf(stderr, "  408 after %llu ms (header timeout %d ms)\n", (unsigned long long)took,
          HEADER_TIMEOUT_MS);
  assert_true(took >= HEADER_TIMEOUT_MS - 50);
  /* A conn that sends nothing at all is closed too, without a response. */
  fd = connect_srv();
  expect_closed(fd);
  close(fd);
}

/* Bytes without any line end: 431 as soon as they pass the head limit, not a wait for
 * the header timeout (which would answer 408). */
static void long_line_without_lf_is_431(void **state) {
  (void)state;
  int fd = connect_srv();
  char junk[9000];
  memset(junk, 'a', sizeof junk);
  send_str(fd, junk, sizeof junk);
  expect_response(fd, ERR("431 Request Header Fields Too Large", "31",
                          "Request Header Fields Too Large"));
  expect_closed(fd);
  close(fd);
}

/* A keep-alive conn with nothing to do is closed after --idle-timeout-ms. */
static void idle_conn_times_out(void **state) {
  (void)state;
  const char *args[] = {"tcp://127.0.0.1:0", "--idle-timeout-ms", "300", NULL};
  char line[256];
  pid_t pid = tu_spawn_example("http_plaintext", args, line, sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  int fd = tu_connect4(port);
  assert_true(fd >= 0);
  SEND(fd, "GET /plaintext HTTP/1.1\r\n\r\n");
  expect_response(fd, OK_11);
  uint64_t t0 = tu_now_ms();
  expect_closed(fd);
  assert_true(tu_now_ms() - t0 >= 250);
  close(fd);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
}

#define T(f) cmocka_unit_test_setup(f, reset_deadline)

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      T(plaintext_response),
      T(pipelined_batch_in_one_go),
      T(split_request_waits_for_rest),
      T(body_is_skipped),
      T(not_found),
      T(malformed_gets_400_and_close),
      T(oversized_headers_get_431),
      T(connection_close_is_honoured),
      T(http10_keep_alive_stays_open),
      T(connection_close_says_so),
      T(date_on_error_responses),
      T(leading_empty_lines_ignored),
      T(connection_tokens_are_whole_words),
      T(nul_byte_is_400),
      T(query_string_reaches_path),
      T(lowercase_method_is_501),
      T(post_to_get_path_is_405),
      T(head_gets_headers_only),
      T(big_body_in_pieces_is_skipped),
      T(bodies_are_not_buffered),
      T(chunked_body_is_skipped),
      T(ambiguous_framing_is_refused),
      T(incomplete_head_times_out),
      T(long_line_without_lf_is_431),
      T(idle_conn_times_out),
  };
  return cmocka_run_group_tests(tests, start_server, stop_server);
}
