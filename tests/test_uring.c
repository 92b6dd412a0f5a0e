/*
 * The io_uring backend's own cases, each with exact bytes checked: receives that find
 * the buffer ring empty (ENOBUFS), pause and close with receives in flight, closes racing
 * completions, a completion-queue overflow, and the fallback to epoll (and the error when
 * io_uring is demanded) where io_uring_setup is denied by a seccomp filter.
 *
 * cgnet-test-backend: io_uring
 * (run once, through run_on_backend io_uring, which skips it where io_uring cannot run)
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"
#include "cgnet.h"
#include "support/support.h"

/* ---- an echo server whose stats and callbacks the tests look at ------------------------
 */

static struct {
  atomic_int opens, closes, traffic_while_paused, paused_now;
  atomic_int close_after;    /* > 0: close a conn after it has echoed this many bytes */
  atomic_int pause_every;    /* > 0: pause after each this many bytes, resume 5 ms later */
  atomic_size_t max_traffic; /* the most bytes one on_traffic saw */
} U;

static void reset(void) {
  memset(&U, 0, sizeof U);
  tu_checks_reset();
}

typedef struct per_conn {
  size_t echoed, since_pause;
  int paused;
  cgnet_timer *resume; /* fires 5 ms after a pause */
} per_conn;

static cgnet_action resume_later(cgnet_timer *t, void *ud) {
  cgnet_conn *c = ud;
  (void)t;
  per_conn *p = cgnet_conn_context(c);
  p->paused = 0;
  atomic_fetch_sub(&U.paused_now, 1);
  TU_CHECK_EQ(cgnet_conn_resume_read(c), 0);
  return CGNET_NONE;
}

static cgnet_action u_open(cgnet_conn *c) {
  per_conn *p = calloc(1, sizeof *p);
  TU_CHECK(p != NULL);
  cgnet_conn_set_context(c, p);
  p->resume = cgnet_conn_timer_new(c, resume_later, c);
  TU_CHECK(p->resume != NULL);
  atomic_fetch_add(&U.opens, 1);
  return CGNET_NONE;
}

static cgnet_action u_close(cgnet_conn *c, int reason) {
  (void)reason;
  free(cgnet_conn_context(c));
  atomic_fetch_add(&U.closes, 1);
  return CGNET_NONE;
}

static cgnet_action u_traffic(cgnet_conn *c) {
  per_conn *p = cgnet_conn_context(c);
  if (p->paused) atomic_fetch_add(&U.traffic_while_paused, 1);
  const uint8_t *d;
  size_t n = cgnet_conn_next(c, 0, &d);
  if (n) TU_CHECK_EQ(cgnet_conn_write(c, d, n), 0);
  if (n > atomic_load(&U.max_traffic)) atomic_store(&U.max_traffic, n);
  p->echoed += n;
  p->since_pause += n;
  int every = atomic_load(&U.pause_every), after = atomic_load(&U.close_after);
  if (after > 0 && p->echoed >= (size_t)after) return CGNET_CLOSE;
  if (every > 0 && p->since_pause >= (size_t)every) {
    p->since_pause = 0;
    p->paused = 1;
    atomic_fetch_add(&U.paused_now, 1);
    TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
    TU_CHECK_EQ(cgnet_timer_start(p->resume, 5, 0), 0);
  }
  return CGNET_NONE;
}

static cgnet_handler echo_handler(void) {
  return (cgnet_handler){.on_open = u_open, .on_close = u_close, .on_traffic = u_traffic};
}

static uint64_t loop_stat(cgnet_engine *eng, size_t field_offset) {
  uint64_t sum = 0;
  for (int i = 0; i < cgnet_engine_num_loops(eng); i++) {
    cgnet_loop_stats st;
    cgnet_loop_get_stats(cgnet_engine_loop(eng, i), &st);
    sum += *(const uint64_t *)(const void *)((const char *)&st + field_offset);
  }
  return sum;
}
#define LOOP_STAT(eng, field) loop_stat(eng, offsetof(cgnet_loop_stats, field))

/* n clients, each sending `bytes` of its own pattern and reading the echo back. */
static void echo_clients(int port, int n, size_t bytes) {
  tu_echo_client *cl = calloc((size_t)n, sizeof *cl);
  assert_non_null(cl);
  for (int i = 0; i < n; i++) {
    cl[i].fd = tu_connect4(port);
    assert_true(cl[i].fd >= 0);
    cl[i].tx_len = cl[i].rx_len = bytes;
    cl[i].seed = 0x5eed0000u + (uint64_t)i;
  }
  int rc = tu_echo_drive(cl, n, TU_TIMEOUT_MS * 2);
  size_t bad = 0;
  for (int i = 0; i < n; i++) {
    bad += cl[i].bad;
    if (cl[i].err || cl[i].rx_off != bytes)
      fprintf(stderr, "client %d: err %d, received %zu of %zu\n", i, cl[i].err,
              cl[i].rx_off, bytes);
    close(cl[i].fd);
  }
  free(cl);
  assert_rc(rc, 0);
  assert_int_equal(bad, 0);
}

static void start(tu_server *srv, cgnet_options *o) {
  cgnet_handler h = echo_handler();
  o->backend = CGNET_BACKEND_IO_URING;
  assert_rc(tu_server_start(srv, &h, o), 0);
  assert_int_equal(cgnet_engine_backend(srv->eng), CGNET_BACKEND_IO_URING);
}

static void finish(tu_server *srv) {
  assert_rc(tu_server_stop(srv, 2000), 0);
  assert_int_equal(atomic_load(&U.opens), atomic_load(&U.closes));
  assert_int_equal(tu_checks_failed(), 0);
}

/* ---- the cases ------------------------------------------------------------------------
 */

/* Four 512-byte buffers for the whole loop and hundreds of conns sending at once: most
 * receives find the ring empty and wait for buffers to come back. Every byte arrives,
 * in order. */
static void test_tiny_buffer_ring(void **state) {
  (void)state;
  reset();
  const int conns = TU_TSAN ? 100 : 1000;
  tu_raise_nofile(2 * conns + 64);
  tu_server srv;
  cgnet_options o = {.recv_buffers = 4, .recv_buffer_size = 512};
  start(&srv, &o);
  echo_clients(srv.port, conns, TU_TSAN ? 8192 : 32768);
  uint64_t nobufs = LOOP_STAT(srv.eng, recv_nobufs);
  print_message("%d conns over 4 x 512 B buffers: %llu receives stopped for buffers\n",
                conns, (unsigned long long)nobufs);
  assert_true(nobufs > 0);
  assert_true(LOOP_STAT(srv.eng, completions) > 0);
  assert_true(LOOP_STAT(srv.eng, enters) > 0);
  finish(&srv);
}

/* The same with each receive taking a buffer of its own, as on kernels before 6.12. */
static void test_tiny_buffer_ring_whole_buffers(void **state) {
#ifdef CGNET_HAVE_IO_URING
  cgnet__uring_test_whole_buffers = 1;
  test_tiny_buffer_ring(state);
  cgnet__uring_test_whole_buffers = 0;
#else
  (void)state;
#endif
}

/* With the default buffers, where the kernel consumes them incrementally: a streaming
 * conn receives more than 16 KiB (the size of a whole buffer before 6.12) at once, as
 * epoll's 64 KiB reads do, and every byte is echoed in order. */
static void test_incremental_buffers(void **state) {
  (void)state;
#ifdef CGNET_HAVE_IO_URING
  if (!cgnet__uring_incremental_supported()) {
    print_message("skipped: this kernel cannot consume provided buffers incrementally "
                  "(before 6.12)\n");
    skip();
  }
#endif
  reset();
  tu_server srv;
  cgnet_options o = {0};
  start(&srv, &o);
  echo_clients(srv.port, 4, 8 * 1024 * 1024);
  size_t most = atomic_load(&U.max_traffic);
  print_message("largest single delivery: %zu bytes\n", most);
  assert_true(most > 16 * 1024);
  finish(&srv);
}

/* Each conn pauses after every 16 KiB and resumes 5 ms later, while its client keeps
 * sending: receives in flight at the pause complete after it, and their bytes wait for
 * the resume. No callback runs while paused; the echo is exact. */
static void test_pause_resume_in_flight(void **state) {
  (void)state;
  reset();
  atomic_store(&U.pause_every, 16 * 1024);
  tu_server srv;
  cgnet_options o = {0};
  start(&srv, &o);
  echo_clients(srv.port, 8, (TU_TSAN ? 1 : 4) * 1024 * 1024);
  assert_int_equal(atomic_load(&U.traffic_while_paused), 0);
  finish(&srv);
}

static void test_pause_resume_whole_buffers(void **state) {
#ifdef CGNET_HAVE_IO_URING
  cgnet__uring_test_whole_buffers = 1;
  test_pause_resume_in_flight(state);
  cgnet__uring_test_whole_buffers = 0;
#else
  (void)state;
#endif
}

/* Rings set up as on kernels before 6.1 (COOP_TASKRUN, no DEFER_TASKRUN: completions
 * are posted whenever the loop thread enters the kernel, not only when it waits): the
 * blast over a tiny ring, pause/resume in flight and plain echo all stay exact. */
static void test_coop_taskrun(void **state) {
#ifdef CGNET_HAVE_IO_URING
  cgnet__uring_test_coop_taskrun = 1;
  test_tiny_buffer_ring(state);
  test_pause_resume_in_flight(state);
  reset();
  tu_server srv;
  cgnet_options o = {.num_loops = 2};
  start(&srv, &o);
  echo_clients(srv.port, 100, 256 * 1024);
  finish(&srv);
  cgnet__uring_test_coop_taskrun = 0;
#else
  (void)state;
#endif
}

/* ---- wake-ups ----------------------------------------------------------------------- */

static atomic_int ran_on_loop;

static void count_run(cgnet_loop *loop, void *ud) {
  (void)ud;
  TU_CHECK(cgnet_loop_is_current(loop));
  atomic_fetch_add(&ran_on_loop, 1);
}

/* Posted from on_boot: the ring is not enabled yet, so the kernel refuses a ring
 * message and the signal falls back to the eventfd. */
static cgnet_action post_from_boot(cgnet_engine *eng) {
  TU_CHECK_EQ(cgnet_loop_execute(cgnet_engine_loop(eng, 0), count_run, NULL), 0);
  return CGNET_NONE;
}

/* Bursts of loop_execute from this thread, one wake-up each, until all ran. */
static void execute_bursts(cgnet_engine *eng, int bursts) {
  cgnet_loop *loop = cgnet_engine_loop(eng, 0);
  for (int b = 0; b < bursts; b++) {
    int before = atomic_load(&ran_on_loop);
    for (int i = 0; i < 10; i++)
      assert_rc(cgnet_loop_execute(loop, count_run, NULL), 0);
    assert_true(tu_wait_atomic_eq(&ran_on_loop, before + 10, TU_TIMEOUT_MS));
  }
}

static void run_wake_paths(const char *wake_env) {
  reset();
  atomic_store(&ran_on_loop, 0);
  if (wake_env)
    setenv("CGNET_URING_WAKE", wake_env, 1);
  else
    unsetenv("CGNET_URING_WAKE");
  cgnet_handler h = echo_handler();
  h.on_boot = post_from_boot;
  cgnet_options o = {.backend = CGNET_BACKEND_IO_URING};
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  assert_true(tu_wait_atomic_eq(&ran_on_loop, 1, TU_TIMEOUT_MS)); /* the one from on_boot */
  cgnet_loop_stats st0, st1;
  cgnet_loop_get_stats(cgnet_engine_loop(srv.eng, 0), &st0);
  execute_bursts(srv.eng, 200);
  cgnet_loop_get_stats(cgnet_engine_loop(srv.eng, 0), &st1);
  uint64_t signals = st1.wakeups - st0.wakeups;
  print_message("wake-ups (%s): 200 bursts of 10 posts, %llu signals\n",
                wake_env ? wake_env : "default", (unsigned long long)signals);
  assert_true(signals >= 1 && signals <= 2000);
  echo_clients(srv.port, 4, 64 * 1024); /* the loop still serves its conns */
  finish(&srv);
  unsetenv("CGNET_URING_WAKE");
}

/* Wake-ups by ring message (where the kernel has them) and by eventfd
 * (CGNET_URING_WAKE=eventfd): posts from another thread and from on_boot all run. */
static void test_wake_paths(void **state) {
  (void)state;
  run_wake_paths(NULL);
  run_wake_paths("eventfd");
}

/* Conns close themselves mid-stream with receives and sends in flight: their late
 * completions are dropped (counted as stale) and never touch freed memory (ASan). */
static void test_close_races_completions(void **state) {
  (void)state;
  reset();
  atomic_store(&U.close_after, 200 * 1000);
  tu_server srv;
  cgnet_options o = {.num_loops = 2};
  start(&srv, &o);
  const int n = 50;
  tu_echo_client cl[50];
  for (int i = 0; i < n; i++) {
    cl[i] = (tu_echo_client){.fd = tu_connect4(srv.port), .seed = (uint64_t)i};
    assert_true(cl[i].fd >= 0);
    cl[i].tx_len = cl[i].rx_len = 4 * 1024 * 1024; /* far more than the server takes */
  }
  /* The driver returns at the first client that ends (EOF or reset): drive the rest
   * again until every one has ended. */
  for (int round = 0; round < n; round++) {
    tu_echo_client live[50];
    int nlive = 0, idx[50];
    for (int i = 0; i < n; i++)
      if (cl[i].err == 0) idx[nlive] = i, live[nlive++] = cl[i];
    if (nlive == 0) break;
    (void)tu_echo_drive(live, nlive, TU_TIMEOUT_MS);
    for (int k = 0; k < nlive; k++)
      cl[idx[k]] = live[k];
  }
  size_t bad = 0;
  for (int i = 0; i < n; i++) {
    bad += cl[i].bad; /* what did come back is the echo, byte for byte */
    assert_true(cl[i].err != 0);
    assert_true(cl[i].rx_off >= 200 * 1000 - 64 * 1024);
    close(cl[i].fd);
  }
  assert_int_equal(bad, 0);
  assert_true(tu_wait_atomic_eq(&U.closes, n, TU_TIMEOUT_MS));
  print_message("%llu stale completions dropped\n",
                (unsigned long long)LOOP_STAT(srv.eng, stale_completions));
  finish(&srv);
}

/* A completion queue of 4 entries under 64 busy conns with multishot receives: it
 * overflows, the kernel keeps
 * the completions (NODROP), the overflow is counted, and every byte is echoed. */
static void test_cq_overflow(void **state) {
  (void)state;
  reset();
#ifdef CGNET_HAVE_IO_URING
  cgnet__uring_test_cq_entries = 4;
#endif
  tu_server srv;
  /* Multishot receives (no read backpressure): each posts completions for as long as
   * data and buffers last, many more per wait than 16. */
  cgnet_options o = {.read_backpressure = CGNET_OFF};
  start(&srv, &o);
#ifdef CGNET_HAVE_IO_URING
  cgnet__uring_test_cq_entries = 0;
#endif
  echo_clients(srv.port, 64, 262144);
  uint64_t overflows = LOOP_STAT(srv.eng, cq_overflows);
  print_message("completion queue of 4: %llu overflows seen\n",
                (unsigned long long)overflows);
  assert_true(overflows > 0);
  finish(&srv);
}

/* ---- io_uring denied: a child process with a seccomp filter ----------------------------
 */

/* io_uring_setup fails with EPERM, as under a container's default seccomp profile. */
static int deny_io_uring_setup(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static cgnet_action plain_echo(cgnet_conn *c) {
  const uint8_t *d;
  size_t n = cgnet_conn_next(c, 0, &d);
  if (n) (void)cgnet_conn_write(c, d, n);
  return CGNET_NONE;
}

/* The child's checks, one exit status each. */
static int denied_child(void) {
  if (deny_io_uring_setup() != 0) return 10;
  if (cgnet_backend_supported(CGNET_BACKEND_IO_URING) != CGNET_EPERM) return 11;
  if (cgnet_backend_supported(CGNET_BACKEND_EPOLL) != 0) return 12;
  unsetenv("CGNET_BACKEND");
  cgnet_handler h = {.on_traffic = plain_echo};
  const char *addr[] = {"tcp://127.0.0.1:0"};
  cgnet_engine *eng = NULL;
  cgnet_options demand = {.backend = CGNET_BACKEND_IO_URING, .log_level = CGNET_LOG_OFF};
  if (cgnet_engine_start(&h, addr, 1, &demand, &eng) != CGNET_EUNSUPPORTED) return 13;
  if (eng != NULL) return 14;
  cgnet_options aut = {.backend = CGNET_BACKEND_AUTO, .log_level = CGNET_LOG_OFF};
  if (cgnet_engine_start(&h, addr, 1, &aut, &eng) != 0) return 15;
  if (cgnet_engine_backend(eng) != CGNET_BACKEND_EPOLL) return 16;
  int fd = tu_connect4(cgnet_engine_listen_port(eng, 0));
  char buf[5] = {0};
  if (fd < 0 || tu_send_all(fd, "hello", 5, 5000) != 0 ||
      tu_recv_exact(fd, buf, 5, 5000, NULL) != 0 || memcmp(buf, "hello", 5) != 0)
    return 17;
  close(fd);
  if (cgnet_engine_stop(eng, 1000) != 0) return 18;
  cgnet_engine_free(eng);
  return 0;
}

/* The child is this program again (exec'd, so that it starts with one thread: the
 * sanitizers do not allow threads in the child of a threaded fork), told by the
 * environment to run denied_child. */
#define DENIED_CHILD_ENV "CGNET_TEST_URING_DENIED_CHILD"

static void test_denied_falls_back(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv(DENIED_CHILD_ENV, "1", 1);
    char *argv[] = {"test_uring", NULL};
    execv("/proc/self/exe", argv);
    _exit(99);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) != 0)
    fail_msg("denied child: check %d failed", WEXITSTATUS(status));
}

int main(void) {
  if (getenv(DENIED_CHILD_ENV)) return denied_child();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tiny_buffer_ring),
      cmocka_unit_test(test_tiny_buffer_ring_whole_buffers),
      cmocka_unit_test(test_incremental_buffers),
      cmocka_unit_test(test_pause_resume_in_flight),
      cmocka_unit_test(test_pause_resume_whole_buffers),
      cmocka_unit_test(test_coop_taskrun),
      cmocka_unit_test(test_wake_paths),
      cmocka_unit_test(test_close_races_completions),
      cmocka_unit_test(test_cq_overflow),
      cmocka_unit_test(test_denied_falls_back),
  };
  return cmocka_run_group_tests_name("test_uring", tests, NULL, NULL);
}
