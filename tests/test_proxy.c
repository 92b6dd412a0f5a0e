/*
 * examples/proxy, run as a process in front of an in-process cgnet echo server: bytes
 * through many concurrent pairs, half-close, a backend that refuses, and the proxy's
 * memory while a client stops reading.
 *
 * tests/long/test_long_proxy.c includes this file with PROXY_LONG set: the full
 * 100 MiB through each of 20 conns (make test-long); here each conn carries 4 MiB (less
 * under TSan) so the three sanitizer builds stay quick.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/proc.h"
#include "support/support.h"

#ifndef PROXY_LONG
#define PROXY_LONG 0
#endif
#define PAIRS 20
#define BYTES_PER_CONN (PROXY_LONG ? (size_t)100 << 20 : ((size_t)4 << 20) / TU_PAYLOAD_DIV)

static struct {
  cgnet_engine *backend; /* not a tu_server: it outlives each test's teardown */
  pid_t proxy;
  int port;
} G;

static cgnet_action echo_traffic(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n && cgnet_conn_write(c, p, n) != 0) return CGNET_CLOSE;
  return CGNET_NONE;
}

/* The proxy in front of BACKEND_PORT, with one more flag when `extra` is not NULL; its
 * listening port goes to *port. */
static pid_t start_proxy_with(int backend_port, const char *extra, int *port) {
  char backend[64], line[256];
  snprintf(backend, sizeof backend, "tcp://127.0.0.1:%d", backend_port);
  const char *args[] = {"tcp://127.0.0.1:0", backend, "--loops", "2",
                        "--quiet",           extra,   NULL};
  pid_t pid = tu_spawn_example("proxy", args, line, sizeof line);
  *port = pid > 0 ? tu_port_after(line, "listening on ") : -1;
  return pid;
}

static pid_t start_proxy(int backend_port, int *port) {
  return start_proxy_with(backend_port, NULL, port);
}

static int group_setup(void **state) {
  (void)state;
  tu_raise_nofile(4096);
  cgnet_handler h = {.on_traffic = echo_traffic};
  cgnet_options o = {.num_loops = 2, .allow_half_open = 0};
  const char *addr = "tcp://127.0.0.1:0";
  if (cgnet_engine_start(&h, &addr, 1, &o, &G.backend) != 0) return -1;
  G.proxy = start_proxy(cgnet_engine_listen_port(G.backend, 0), &G.port);
  return G.proxy > 0 && G.port > 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  /* The proxy exits 0 on SIGTERM; a sanitizer report would make it exit non-zero. */
  int status = tu_stop_process(G.proxy, 10000 * TU_SLOW);
  if (G.backend) {
    cgnet_engine_stop(G.backend, 0);
    cgnet_engine_wait(G.backend);
    cgnet_engine_free(G.backend);
  }
  if (status != 0) fprintf(stderr, "proxy exited with status %d\n", status);
  return status == 0 ? 0 : -1;
}

/* PAIRS conns at once to the proxy on `port`, each sending BYTES_PER_CONN of its own
 * pattern and checking every byte that comes back through proxy -> echo -> proxy. */
static void many_pairs_through(int port) {
  tu_echo_client cl[PAIRS];
  memset(cl, 0, sizeof cl);
  for (int i = 0; i < PAIRS; i++) {
    cl[i].fd = tu_connect4(port);
    assert_true(cl[i].fd >= 0);
    cl[i].tx_len = cl[i].rx_len = BYTES_PER_CONN;
    cl[i].seed = 0x9000 + (uint64_t)i;
  }
  uint64_t t0 = tu_now_ms();
  int rc = tu_echo_drive(cl, PAIRS, (PROXY_LONG ? 600000 : 60000) * TU_SLOW);
  uint64_t ms = tu_now_ms() - t0;
  size_t bad = 0, got = 0;
  for (int i = 0; i < PAIRS; i++) {
    bad += cl[i].bad;
    got += cl[i].rx_off;
    close(cl[i].fd);
  }
  fprintf(stderr, "  %d x %zu bytes through the proxy in %llu ms (%.0f MB/s each way)\n",
          PAIRS, (size_t)BYTES_PER_CONN, (unsigned long long)ms,
          ms ? (double)got / 1e3 / (double)ms : 0.0);
  assert_rc(rc, 0);
  assert_int_equal(got, (size_t)PAIRS * BYTES_PER_CONN);
  assert_int_equal(bad, 0);
}

static void test_many_pairs(void **state) {
  (void)state;
  many_pairs_through(G.port);
}

/* Send pattern `seed` on non-blocking fd, never reading, until nothing has moved for
 * 1 s (the pipe is full end to end) or 10 s passed. What was sent. */
static size_t send_until_stalled(int fd, uint64_t seed) {
  static uint8_t chunk[65536];
  size_t sent = 0;
  uint64_t start = tu_now_ms(), last_progress = start;
  while (tu_now_ms() - last_progress < 1000u * TU_SLOW &&
         tu_now_ms() - start < 10000u * TU_SLOW) {
    struct pollfd pf = {.fd = fd, .events = POLLOUT};
    if (poll(&pf, 1, 100) <= 0) continue;
    tu_pattern_fill(chunk, sizeof chunk, seed, sent);
    ssize_t n = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += (size_t)n;
      last_progress = tu_now_ms();
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      break;
    }
  }
  return sent;
}

/* One conn to the proxy on `port` sends without reading until nothing moves for a
 * second (every buffer on the path is full and every side has paused its reading),
 * then reads it all back, checking every byte: each paused side must resume and read
 * again, or the drain stalls and fails. */
static void stall_then_drain(int port) {
  int fd = tu_connect4(port);
  assert_true(fd >= 0);
  tu_set_nonblock(fd, 1);
  size_t sent = send_until_stalled(fd, 11);
  tu_set_nonblock(fd, 0);
  static uint8_t chunk[65536], want[65536];
  size_t got = 0, bad = 0;
  while (got < sent) {
    size_t n = sent - got < sizeof chunk ? sent - got : sizeof chunk, part = 0;
    int rc = tu_recv_exact(fd, chunk, n, 10000 * TU_SLOW, &part);
    tu_pattern_fill(want, part, 11, got);
    bad += memcmp(chunk, want, part) != 0;
    got += part;
    if (rc != 0) break;
  }
  fprintf(stderr, "  %zu KiB sent before the stall, %zu KiB drained\n", sent >> 10,
          got >> 10);
  close(fd);
  assert_true(sent > 0);
  assert_int_equal(got, sent);
  assert_int_equal(bad, 0);
}

static void test_stall_then_drain(void **state) {
  (void)state;
  stall_then_drain(G.port);
}

/* The same two tests through a proxy on edge-triggered epoll (--et), where pausing and
 * resuming a side changes no interest: reading must restart by itself on resume. */
static void test_edge_triggered(void **state) {
  (void)state;
  int port = -1;
  pid_t pid = start_proxy_with(cgnet_engine_listen_port(G.backend, 0), "--et", &port);
  assert_true(pid > 0);
  assert_true(port > 0);
  many_pairs_through(port);
  stall_then_drain(port);
  assert_int_equal(tu_stop_process(pid, 10000 * TU_SLOW), 0);
}

/* A FIN from the client reaches the backend after the data; the echoes come back, then
 * the client sees EOF. */
static void test_half_close(void **state) {
  (void)state;
  enum { LEN = 100000 };
  uint8_t *tx = malloc(LEN), *rx = malloc(LEN);
  assert_non_null(tx);
  assert_non_null(rx);
  tu_pattern_fill(tx, LEN, 77, 0);
  int fd = tu_connect4(G.port);
  assert_true(fd >= 0);
  assert_rc(tu_send_all(fd, tx, LEN, 5000 * TU_SLOW), 0);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  size_t got = 0;
  assert_rc(tu_recv_exact(fd, rx, LEN, 5000 * TU_SLOW, &got), 0);
  assert_int_equal(tu_first_diff(tx, rx, LEN), SIZE_MAX);
  assert_rc(tu_expect_eof(fd, 5000 * TU_SLOW, NULL), 0);
  close(fd);
  free(tx);
  free(rx);
}

/* A backend that refuses: the client's conn is closed promptly. */
static void test_backend_refused(void **state) {
  (void)state;
  int free_port = 0;
  int lfd = tu_listen_any(&free_port);
  assert_true(lfd >= 0);
  close(lfd); /* nobody listens there now */
  int port = -1;
  pid_t pid = start_proxy(free_port, &port);
  assert_true(pid > 0);
  assert_true(port > 0);
  int fd = tu_connect4(port);
  assert_true(fd >= 0);
  int rc = tu_expect_eof(fd, 5000 * TU_SLOW, NULL);
  close(fd);
  assert_int_equal(tu_stop_process(pid, 10000 * TU_SLOW), 0);
  assert_rc(rc, 0);
}

/* A client that sends as fast as it can and never reads: backpressure stops it, and the
 * proxy does not buffer what the client keeps offering. */
static void test_client_never_reads(void **state) {
  (void)state;
  int fd = tu_connect4(G.port);
  assert_true(fd >= 0);
  tu_set_nonblock(fd, 1);
  long rss_before = tu_rss_kb_of(G.proxy);
  assert_true(rss_before > 0);
  size_t sent = send_until_stalled(fd, 5);
  long rss_after = tu_rss_kb_of(G.proxy);
  fprintf(stderr, "  client stalled after %zu KiB; proxy RSS %ld -> %ld KiB\n", sent >> 10,
          rss_before, rss_after);
  close(fd);
  /* What the client got rid of sits in kernel socket buffers along the path (a few MiB
   * on loopback) plus about one high watermark per conn in each process; far from the
   * 10 s x line rate it would have sent without backpressure. On io_uring each of the
   * proxy's two loops (its dials stay on the loop that made them) also has 4 MiB of
   * receive buffers, resident once the kernel has filled them, and bytes streaming
   * through fill them all. */
  const char *backend = getenv("CGNET_BACKEND");
  long uring_extra = backend && strcmp(backend, "io_uring") == 0 ? 2 * 4 * 1024 : 0;
  assert_true(sent < ((size_t)64 << 20));
  assert_true(rss_after - rss_before < 8 * 1024 + uring_extra);
}

/* examples/client through the proxy: its own check of every echoed byte, and its exit
 * status and summary line. */
static void test_client_example(void **state) {
  (void)state;
  char addr[64], line[256];
  snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", G.port);
  const char *args[] = {addr, "--conns", "8", "--bytes", "300000", "--loops", "2", NULL};
  pid_t pid = tu_spawn_example("client", args, line, sizeof line); /* its one line */
  assert_true(pid > 0);
  fprintf(stderr, "  %s\n", line);
  assert_int_equal(tu_wait_exit(pid, 60000 * TU_SLOW), 0);
  assert_non_null(
      strstr(line, "8/8 conns echoed 300000 bytes each, 0 bad bytes, 0 errors"));
}

#define T(name, f)                                                                         \
  { name, f, tu_setup, tu_teardown, NULL }

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      T("many_pairs", test_many_pairs),
      T("stall_then_drain", test_stall_then_drain),
      T("edge_triggered", test_edge_triggered),
      T("half_close", test_half_close),
      T("backend_refused", test_backend_refused),
      T("client_never_reads", test_client_never_reads),
      T("client_example", test_client_example),
  };
  return cmocka_run_group_tests_name(PROXY_LONG ? "test_long_proxy" : "test_proxy", tests,
                                     group_setup, group_teardown);
}
