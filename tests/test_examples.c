/*
 * The examples' command lines (examples/args.c): every example binary is run with bad
 * flags, bad values and addresses it cannot serve, and must exit 2 with a line on stderr
 * naming the flag or address at fault; --help must print the usage on stdout and exit 0.
 * Then a few things only a running example shows: the listening line of Unix addresses,
 * and codec_echo with frames larger than the default output limit.
 */
#include <errno.h>
#include <fcntl.h>
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

extern char **environ;

typedef struct run_result {
  int status; /* exit status, or -1 (killed, or died from a signal) */
  char out[8192];
  char err[8192];
} run_result;

static void read_file(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "re");
  size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
  buf[n] = '\0';
  if (f) fclose(f);
}

/* Run $CGNET_EXAMPLES_DIR/NAME with the NULL-terminated args until it exits (at most
 * 10 s), its stdout and stderr in files. */
static void run(const char *name, const char *const *args, run_result *r) {
  const char *dir = getenv("CGNET_EXAMPLES_DIR");
  char path[1024], out[64], err[64];
  snprintf(path, sizeof path, "%s/%s", dir ? dir : "examples", name);
  snprintf(out, sizeof out, "/tmp/cgnet-test-examples-%d.out", (int)getpid());
  snprintf(err, sizeof err, "/tmp/cgnet-test-examples-%d.err", (int)getpid());
  char *argv[32];
  int argc = 0;
  argv[argc++] = path;
  for (; args[argc - 1] && argc < 31; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid;
  int rc = posix_spawn(&pid, path, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) fail_msg("cannot start %s: %s", path, strerror(rc));
  r->status = tu_wait_exit(pid, 10000 * TU_SLOW);
  read_file(out, r->out, sizeof r->out);
  read_file(err, r->err, sizeof r->err);
  unlink(out);
  unlink(err);
}

/* NAME ARGS... must exit 2, print nothing on stdout, and name every one of `names` on
 * stderr. */
static void expect_usage_error(const char *name, const char *const *args,
                               const char *const *names) {
  run_result r;
  run(name, args, &r);
  if (r.status != 2)
    fail_msg("%s %s: exit %d, want 2; stderr: %s", name, args[0], r.status, r.err);
  assert_string_equal(r.out, "");
  for (; *names; names++)
    if (!strstr(r.err, *names))
      fail_msg("%s %s: stderr does not name '%s':\n%s", name, args[0], *names, r.err);
}

#define A(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *const EXAMPLES[] = {"echo",  "echo_pool",      "codec_echo",
                                       "proxy", "http_plaintext", "client"};

static void help_prints_usage_and_exits_0(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof EXAMPLES / sizeof EXAMPLES[0]; i++) {
    run_result r;
    run(EXAMPLES[i], A("--help"), &r);
    assert_int_equal(r.status, 0);
    char want[64];
    snprintf(want, sizeof want, "usage: %s ", EXAMPLES[i]);
    if (strncmp(r.out, want, strlen(want)) != 0)
      fail_msg("%s --help: %s", EXAMPLES[i], r.out);
    assert_non_null(strstr(r.out, "--loops N"));
    assert_non_null(strstr(r.out, "0 for one per CPU")); /* the same meaning everywhere */
    assert_string_equal(r.err, "");
  }
}

static void unknown_option_is_named(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof EXAMPLES / sizeof EXAMPLES[0]; i++)
    expect_usage_error(EXAMPLES[i], A("--no-such-flag"), A("'--no-such-flag'"));
}

static void bad_loops_is_named(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof EXAMPLES / sizeof EXAMPLES[0]; i++) {
    expect_usage_error(EXAMPLES[i], A("--loops", "-1"), A("--loops", "'-1'"));
    expect_usage_error(EXAMPLES[i], A("--loops", "1025"), A("--loops", "'1025'"));
    expect_usage_error(EXAMPLES[i], A("--loops", "2x"), A("--loops", "'2x'"));
    expect_usage_error(EXAMPLES[i], A("--loops"), A("--loops"));
  }
}

static void negative_and_overflowing_numbers_are_refused(void **state) {
  (void)state;
  expect_usage_error("codec_echo", A("--codec", "fixed:-3"), A("--codec", "fixed:-3"));
  expect_usage_error("codec_echo", A("--codec", "fixed:18446744073709551617"),
                     A("--codec", "fixed:18446744073709551617"));
  expect_usage_error("codec_echo", A("--codec", "lenfield:5"), A("--codec", "lenfield:5"));
  expect_usage_error("codec_echo", A("--codec", "line", "--max", "-5"), A("--max", "'-5'"));
  expect_usage_error("codec_echo", A("--codec", "line", "--max", " 5"), A("--max", "' 5'"));
  expect_usage_error("echo_pool", A("--delay", "-5"), A("--delay", "'-5'"));
  expect_usage_error("echo_pool", A("--workers", "0"), A("--workers", "'0'"));
  expect_usage_error("client", A("tcp://127.0.0.1:9", "--bytes", "-1"),
                     A("--bytes", "'-1'"));
  expect_usage_error("client", A("tcp://127.0.0.1:9", "--conns", "+3"),
                     A("--conns", "'+3'"));
  expect_usage_error("client", A("tcp://127.0.0.1:9", "--timeout", "99999999999999999999"),
                     A("--timeout"));
  expect_usage_error("http_plaintext", A("--header-timeout-ms", "-1"),
                     A("--header-timeout-ms", "'-1'"));
  expect_usage_error("http_plaintext", A("--max-conns", "0"), A("--max-conns", "'0'"));
  expect_usage_error("echo", A("--lb", "random"), A("--lb", "'random'"));
}

static void unsupported_addresses_are_refused(void **state) {
  (void)state;
  expect_usage_error("echo_pool", A("udp://127.0.0.1:0"), A("'udp://127.0.0.1:0'"));
  expect_usage_error("codec_echo", A("udp://127.0.0.1:0", "--codec", "line"),
                     A("'udp://127.0.0.1:0'"));
  expect_usage_error("http_plaintext", A("udp://127.0.0.1:0"), A("'udp://127.0.0.1:0'"));
  expect_usage_error("client", A("udp://127.0.0.1:9"), A("'udp://127.0.0.1:9'"));
  expect_usage_error("proxy", A("udp://127.0.0.1:0", "tcp://127.0.0.1:9"),
                     A("listen address", "'udp://127.0.0.1:0'"));
  expect_usage_error("proxy", A("tcp://127.0.0.1:0", "udp6://[::1]:9"),
                     A("backend address", "'udp6://[::1]:9'"));
}

static void malformed_addresses_are_refused(void **state) {
  (void)state;
  static const char *const bad_backends[] = {
      "tcp://127.0.0.1",   /* no port */
      "tcp://127.0.0.1:0", /* port 0 cannot be dialed */
      "tcp://:9000",       /* no host to dial */
      "tcp://127.0.0.1:99999", "bogus://x:1", "127.0.0.1:9000",
      "tcp://[::1:9",          "tcp://::1:9", /* IPv6 without brackets */
      "tcp4://[::1]:9",                       /* family mismatch */
      "tcp://300.1.1.1:9",     "tcp://a b:9", "unix://",
  };
  for (size_t i = 0; i < sizeof bad_backends / sizeof bad_backends[0]; i++) {
    char quoted[128];
    snprintf(quoted, sizeof quoted, "'%s'", bad_backends[i]);
    expect_usage_error("proxy", A("tcp://127.0.0.1:0", bad_backends[i]),
                       A("backend address", quoted));
  }
  expect_usage_error("echo", A("tcp://127.0.0.1:x"), A("'tcp://127.0.0.1:x'"));
  expect_usage_error("echo", A("sctp://127.0.0.1:1"), A("'sctp://127.0.0.1:1'"));
}

/* The listening line names Unix addresses as they are dialed, and says "1 loop". */
static void listening_line_names_unix_addresses(void **state) {
  (void)state;
  char path[128], addr_path[160], abstract[96], line[512];
  snprintf(path, sizeof path, "/tmp/cgnet-test-examples-%d.sock", (int)getpid());
  snprintf(addr_path, sizeof addr_path, "unix://%s", path);
  snprintf(abstract, sizeof abstract, "unix://@cgnet-test-examples-%d", (int)getpid());
  pid_t pid =
      tu_spawn_example("echo", A(addr_path, abstract, "--quiet"), line, sizeof line);
  assert_true(pid > 0);
  /* The line names the backend: the one CGNET_BACKEND asks for (AUTO runs epoll). */
  const char *env = getenv("CGNET_BACKEND");
  const char *backend = env && strcmp(env, "io_uring") == 0 ? "io_uring" : "epoll";
  char want[512];
  snprintf(want, sizeof want, "echo: listening on %s, %s (1 loop, %s)", addr_path, abstract,
           backend);
  assert_string_equal(line, want);
  assert_int_equal(tu_stop_process(pid, 10000), 0);

  pid = tu_spawn_example("http_plaintext", A(abstract), line, sizeof line);
  assert_true(pid > 0);
  snprintf(want, sizeof want, "http_plaintext: listening on %s (1 loop, %s)", abstract,
           backend);
  assert_string_equal(line, want);
  assert_int_equal(tu_stop_process(pid, 10000), 0);

  pid = tu_spawn_example("echo_pool", A(abstract, "--workers", "2"), line, sizeof line);
  assert_true(pid > 0);
  snprintf(want, sizeof want, "echo_pool: listening on %s (1 loop, %s, 2 workers max)",
           abstract, backend);
  assert_string_equal(line, want);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
}

/* A tls:// address needs a certificate and key; they need a tls:// address. */
static void tls_flags_are_checked(void **state) {
  (void)state;
  expect_usage_error("echo", A("tls://127.0.0.1:0"), A("--cert"));
  expect_usage_error("http_plaintext", A("tls://127.0.0.1:0", "--cert", "c.pem"),
                     A("--key"));
  expect_usage_error("echo", A("tcp://127.0.0.1:0", "--cert", "c.pem", "--key", "k.pem"),
                     A("tls://"));
}

#ifdef CGNET_HAVE_TLS
#include "support/tls_certs.h"

/* A shell command's output into out, and its exit status (-1: killed). */
static int run_shell(const char *cmd, char *out, size_t cap) {
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* http_plaintext over TLS answers curl, which verifies it against the test CA; echo over
 * TLS answers openssl s_client and the client example. */
static void https_example_answers_curl(void **state) {
  (void)state;
  if (system("curl --version >/dev/null 2>&1") != 0 ||
      system("openssl version >/dev/null 2>&1") != 0) {
    print_message("curl or the openssl CLI not found: skipping the HTTPS example test\n");
    skip();
  }
  tu_tls_certs certs;
  assert_int_equal(tu_tls_certs_make(&certs), 0);
  char cert[160], key[160], cmd[768], line[256], out[512];
  snprintf(cert, sizeof cert, "%s/server.pem", certs.dir);
  snprintf(key, sizeof key, "%s/server.key", certs.dir);
  pid_t pid = tu_spawn_example("http_plaintext",
                               A("tls://127.0.0.1:0", "--cert", cert, "--key", key), line,
                               sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  assert_true(port > 0);
  snprintf(cmd, sizeof cmd,
           "timeout %d curl -sS --cacert %s/ca.pem https://127.0.0.1:%d/plaintext 2>&1",
           20 * TU_SLOW, certs.dir, port);
  int rc = run_shell(cmd, out, sizeof out);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (rc != 0 || strcmp(out, "Hello, World!") != 0)
    fail_msg("curl exit %d, printed \"%s\"", rc, out);

  pid = tu_spawn_example("echo",
                         A("tls://127.0.0.1:0", "--cert", cert, "--key", key, "--quiet"),
                         line, sizeof line);
  assert_true(pid > 0);
  port = tu_port_after(line, "listening on ");
  snprintf(
      cmd, sizeof cmd,
      "(echo hello over tls; sleep %d) | timeout %d openssl s_client -quiet -no_ign_eof "
      "-connect 127.0.0.1:%d -CAfile %s/ca.pem -verify_return_error 2>/dev/null",
      TU_SLOW, 20 * TU_SLOW, port, certs.dir);
  rc = run_shell(cmd, out, sizeof out);
  if (!strstr(out, "hello over tls")) fail_msg("s_client exit %d, printed \"%s\"", rc, out);
  /* The client example dials it over TLS, verifying it against the CA. */
  snprintf(
      cmd, sizeof cmd,
      "timeout %d %s/client tls://localhost:%d --ca %s/ca.pem --conns 4 --bytes 100000",
      20 * TU_SLOW, getenv("CGNET_EXAMPLES_DIR"), port, certs.dir);
  rc = run_shell(cmd, out, sizeof out);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (rc != 0 || !strstr(out, "4/4 conns echoed"))
    fail_msg("client exit %d: \"%s\"", rc, out);
  tu_tls_certs_free(&certs);
}
#else
static void https_example_answers_curl(void **state) {
  (void)state;
  print_message("built without TLS: skipping the HTTPS example test\n");
  skip();
}
#endif

/* A fixed frame larger than the default 8 MiB output limit is echoed whole. */
static void codec_echo_big_fixed_frames(void **state) {
  (void)state;
  enum { FRAME = 16 << 20 };
  char line[256];
  pid_t pid = tu_spawn_example(
      "codec_echo", A("tcp://127.0.0.1:0", "--codec", "fixed:16777216"), line, sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  assert_true(port > 0);
  tu_echo_client cl = {.fd = tu_connect4(port), .seed = 42};
  assert_true(cl.fd >= 0);
  cl.tx_len = cl.rx_len = 2 * (size_t)FRAME;
  int rc = tu_echo_drive(&cl, 1, 60000 * TU_SLOW);
  close(cl.fd);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  assert_rc(rc, 0);
  assert_int_equal(cl.rx_off, 2 * (size_t)FRAME);
  assert_int_equal(cl.bad, 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(help_prints_usage_and_exits_0),
      cmocka_unit_test(unknown_option_is_named),
      cmocka_unit_test(bad_loops_is_named),
      cmocka_unit_test(negative_and_overflowing_numbers_are_refused),
      cmocka_unit_test(unsupported_addresses_are_refused),
      cmocka_unit_test(malformed_addresses_are_refused),
      cmocka_unit_test(listening_line_names_unix_addresses),
      cmocka_unit_test(codec_echo_big_fixed_frames),
      cmocka_unit_test(tls_flags_are_checked),
      cmocka_unit_test(https_example_answers_curl),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
