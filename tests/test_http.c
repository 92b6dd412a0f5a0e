/*
 * Tests for examples/http_plaintext: the pipelined HTTP/1.1 server used by the benchmark.
 * Each test starts the real binary on 127.0.0.1:0 (its first stdout line names the port)
 * and talks to it over loopback sockets.
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

typedef struct server {
  pid_t pid;
  int port;
} server;

static server g_srv;

static int start_server(void **state) {
  (void)state;
  const char *args[] = {"tcp://127.0.0.1:0", "--loops", "2", NULL};
  char line[256];
  g_srv.pid = tu_spawn_example("http_plaintext", args, line, sizeof line);
  if (g_srv.pid < 0) return -1;
  g_srv.port = tu_port_after(line, "port ");
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
  const char req[] = "POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
                     "GET / HTTP/"
                     "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(tu_send_all(fd, req, sizeof req - 1, TU_TIMEOUT_MS), 0);
  char buf[4096];
  read_some(fd, buf, sizeof buf, 300);
  assert_int_equal(count(buf, "HTTP/1.1 200 OK"), 1);
  assert_int_equal(count(buf, "HTTP/1.1 404 Not Found"), 1);
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

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(plaintext_response),
      cmocka_unit_test(pipelined_batch_in_one_go),
      cmocka_unit_test(split_request_waits_for_rest),
      cmocka_unit_test(body_is_skipped),
      cmocka_unit_test(not_found),
      cmocka_unit_test(malformed_gets_400_and_close),
      cmocka_unit_test(oversized_headers_get_431),
      cmocka_unit_test(connection_close_is_honoured),
  };
  return cmocka_run_group_tests(tests, start_server, stop_server);
}
