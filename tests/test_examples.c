/*
 * The examples' command lines (examples/args.c): every example binary is run with bad
 * flags, bad values and addresses it cannot serve, and must exit 2 with a line on stderr
 * naming the flag or address at fault; --help must print the usage on stdout and exit 0.
 * Then a few things only a running example shows: the listening line of Unix addresses,
 * codec_echo with frames larger than the default output limit, udp_sessions' per-peer
 * counts (answered on the loop and from workers) and idle expiry, ws_echo against
 * WebSocket clients written elsewhere (Python's websockets, Node's ws, curl's upgrade
 * request), over ws:// and wss://, its 1001 to open WebSockets when it is stopped,
 * ws_chat's page and broadcast (the page also run by headless Chromium), and
 * http_plaintext over TLS under curl, h2load and wrk.
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

#include "support/dgram.h"
#include "support/proc.h"
#include "support/support.h"
#include "ws_deflate.h"

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

static const char *const EXAMPLES[] = {"echo",         "echo_pool", "codec_echo",
                                       "proxy",        "client",    "http_plaintext",
                                       "udp_sessions", "ws_echo",   "ws_chat"};

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
  expect_usage_error("ws_echo", A("udp://127.0.0.1:0"), A("'udp://127.0.0.1:0'"));
  expect_usage_error("ws_echo", A("--max-message", "0"), A("--max-message", "'0'"));
  expect_usage_error("ws_echo", A("--max-message", "1073741825"), A("--max-message"));
  expect_usage_error("client", A("udp://127.0.0.1:9"), A("'udp://127.0.0.1:9'"));
  expect_usage_error("proxy", A("udp://127.0.0.1:0", "tcp://127.0.0.1:9"),
                     A("listen address", "'udp://127.0.0.1:0'"));
  expect_usage_error("proxy", A("tcp://127.0.0.1:0", "udp6://[::1]:9"),
                     A("backend address", "'udp6://[::1]:9'"));
  expect_usage_error("udp_sessions", A("tcp://127.0.0.1:0"), A("'tcp://127.0.0.1:0'"));
  expect_usage_error("udp_sessions", A("--async"), A("missing ADDR"));
  expect_usage_error("udp_sessions", A("udp://127.0.0.1:0", "--idle-ms", "0"),
                     A("--idle-ms", "'0'"));
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

static void ws_echo_with(const char *python, const char *const *args, const char *want,
                         const char *ca);
static void ws_echo_going_away(const char *python, const char *const *args, const char *ca);

/* ws_echo on tls:// with --cert/--key against Python's websockets over wss:// (the test
 * CA verifying it): the echoes, 1009, and 1001 when it is stopped. */
static void ws_echo_wss_python_client(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped: no python3 with the websockets module "
                    "(Debian: python3-websockets; scripts/deps.sh installs it)\n");
    skip();
  }
  tu_tls_certs certs;
  assert_int_equal(tu_tls_certs_make(&certs), 0);
  char cert[160], key[160], ca[160];
  snprintf(cert, sizeof cert, "%s/server.pem", certs.dir);
  snprintf(key, sizeof key, "%s/server.key", certs.dir);
  snprintf(ca, sizeof ca, "%s/ca.pem", certs.dir);
  ws_echo_with(python,
               A("tls://127.0.0.1:0", "--quiet", "--max-message", "100000", "--cert", cert,
                 "--key", key),
               cgnet__ws_deflate_available() ? "deflate" : "plain", ca);
  ws_echo_going_away(python,
                     A("tls://127.0.0.1:0", "--quiet", "--cert", cert, "--key", key), ca);
  tu_tls_certs_free(&certs);
}

static int run_program(const char *const *argv, int timeout_ms, run_result *r);

/* Whether `probe` (a shell command) succeeds; when not, says which tool is missing, for
 * the caller to skip. */
static int have_tool_or_skip(const char *tool, const char *probe) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "%s >/dev/null 2>&1", probe);
  if (system(cmd) == 0) return 1;
  print_message("skipped: %s not found\n", tool);
  return 0;
}

/* http_plaintext on tls://127.0.0.1:0 with the test CA's localhost certificate; its
 * port into *port. */
static pid_t start_https_example(const tu_tls_certs *certs, int *port) {
  char cert[160], key[160], line[256];
  snprintf(cert, sizeof cert, "%s/server.pem", certs->dir);
  snprintf(key, sizeof key, "%s/server.key", certs->dir);
  pid_t pid = tu_spawn_example("http_plaintext",
                               A("tls://127.0.0.1:0", "--cert", cert, "--key", key), line,
                               sizeof line);
  assert_true(pid > 0);
  *port = tu_port_after(line, "listening on ");
  assert_true(*port > 0);
  return pid;
}

/* A load tool's run against the HTTPS example: the certificates, the example's process,
 * the URL of its /plaintext and room for the tool's output. */
typedef struct https_run {
  tu_tls_certs certs;
  pid_t pid;
  char url[96];
  run_result *r;
} https_run;

static void https_run_begin(https_run *h) {
  assert_int_equal(tu_tls_certs_make(&h->certs), 0);
  int port = 0;
  h->pid = start_https_example(&h->certs, &port);
  snprintf(h->url, sizeof h->url, "https://127.0.0.1:%d/plaintext", port);
  h->r = malloc(sizeof *h->r);
  assert_non_null(h->r);
}

static void https_run_end(https_run *h) {
  free(h->r);
  assert_int_equal(tu_stop_process(h->pid, 10000), 0);
  tu_tls_certs_free(&h->certs);
}

/* h2load over HTTPS, HTTP/1.1 chosen by ALPN: with --h1 (it offers http/1.1 only) and
 * without (it offers h2 first; the example's ALPN answers http/1.1). Every request
 * succeeds. */
static void https_example_under_h2load(void **state) {
  (void)state;
  if (!have_tool_or_skip("h2load", "command -v h2load")) skip();
  https_run h;
  https_run_begin(&h);
  const char *url = h.url;
  run_result *r = h.r;
  for (int h1 = 1; h1 >= 0; h1--) {
    const char *argv[] = {"h2load", "-n", "2000", "-c", "10", "-m", "4", url, NULL, NULL};
    if (h1) argv[7] = "--h1", argv[8] = url;
    assert_int_equal(run_program(argv, 30000 * TU_SLOW, r), 0);
    if (r->status != 0 || !strstr(r->out, "2000 succeeded, 0 failed, 0 errored") ||
        !strstr(r->out, "Application protocol: http/1.1") ||
        strstr(r->out, "No protocol negotiated") ||
        !strstr(r->out, "status codes: 2000 2xx"))
      fail_msg("h2load%s: exit %d: %s%s", h1 ? " --h1" : "", r->status, r->out, r->err);
  }
  https_run_end(&h);
}

/* wrk over HTTPS for one second: requests are answered, no socket error, no non-2xx. */
static void https_example_under_wrk(void **state) {
  (void)state;
  if (!have_tool_or_skip("wrk", "command -v wrk")) skip();
  https_run h;
  https_run_begin(&h);
  run_result *r = h.r;
  const char *argv[] = {"wrk", "-t1", "-c10", "-d1s", h.url, NULL};
  assert_int_equal(run_program(argv, 30000 * TU_SLOW, r), 0);
  const char *at = strstr(r->out, " requests in ");
  long n = 0;
  if (at) {
    while (at > r->out && at[-1] >= '0' && at[-1] <= '9')
      at--;
    n = strtol(at, NULL, 10);
  }
  if (r->status != 0 || n <= 0 || strstr(r->out, "Socket errors") ||
      strstr(r->out, "Non-2xx"))
    fail_msg("wrk: exit %d, %ld requests: %s%s", r->status, n, r->out, r->err);
  https_run_end(&h);
}
#else
static void https_example_answers_curl(void **state) {
  (void)state;
  print_message("built without TLS: skipping the HTTPS example test\n");
  skip();
}
static void ws_echo_wss_python_client(void **state) {
  (void)state;
  print_message("built without TLS: skipping the wss:// example test\n");
  skip();
}
static void https_example_under_h2load(void **state) {
  (void)state;
  print_message("built without TLS: skipping the HTTPS example test\n");
  skip();
}
static void https_example_under_wrk(void **state) {
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

/* Run a program found in PATH (or by its path) until it exits (at most timeout_ms), its
 * stdout and stderr in r. Returns 0, or -1 if it could not be started. */
static int run_program(const char *const *argv, int timeout_ms, run_result *r) {
  char out[64], err[64];
  snprintf(out, sizeof out, "/tmp/cgnet-test-examples-%d.out", (int)getpid());
  snprintf(err, sizeof err, "/tmp/cgnet-test-examples-%d.err", (int)getpid());
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  r->status = tu_wait_exit(pid, timeout_ms);
  read_file(out, r->out, sizeof r->out);
  read_file(err, r->err, sizeof r->err);
  unlink(out);
  unlink(err);
  return 0;
}

/* The client side, in Python's websockets: argv[1] the port, argv[2] "deflate" or
 * "plain" (what the server must have agreed to), argv[3] (optional) a CA file: then it
 * connects with wss:// and verifies the server against that CA. Echoes of every length
 * class as text and binary, a fragmented message, a ping; then a message over the
 * server's 100000 byte maximum must close the conn with 1009. Prints "ok" at the end. */
static const char PY_CLIENT[] =
    "import asyncio, os, ssl, sys, websockets\n"
    "async def main(port, want):\n"
    "    tls = len(sys.argv) > 3\n"
    "    url = '%s://127.0.0.1:%s/any/path?q=1' % ('wss' if tls else 'ws', port)\n"
    "    ctx = ssl.create_default_context(cafile=sys.argv[3]) if tls else None\n"
    "    async with websockets.connect(url, max_size=None, ssl=ctx) as ws:\n"
    "        ext = ws.response_headers.get('Sec-WebSocket-Extensions') or ''\n"
    "        assert ('permessage-deflate' in ext) == (want == 'deflate'), ext\n"
    "        for n in [0, 1, 125, 126, 127, 65535, 65536, 99999]:\n"
    "            b = os.urandom(n)\n"
    "            await ws.send(b)\n"
    "            r = await ws.recv()\n"
    "            assert r == b, n\n"
    "            t = ('a\\u00e9\\u20ac\\U0001f600' * n)[:n // 3]\n"
    "            await ws.send(t)\n"
    "            r = await ws.recv()\n"
    "            assert isinstance(r, str) and r == t, n\n"
    "        await ws.send(iter([b'ab', b'cd', b'ef']))\n"
    "        assert await ws.recv() == b'abcdef'\n"
    "        pong = await ws.ping(b'hi')\n"
    "        await asyncio.wait_for(pong, 10)\n"
    "    assert ws.close_code == 1000, ws.close_code\n"
    "    async with websockets.connect(url, max_size=None, ssl=ctx) as ws:\n"
    "        try:\n"
    "            await ws.send(os.urandom(100001))\n"
    "            await asyncio.wait_for(ws.recv(), 10)\n"
    "            raise SystemExit('no close for an oversized message')\n"
    "        except websockets.ConnectionClosed:\n"
    "            pass\n"
    "    assert ws.close_code == 1009, ws.close_code\n"
    "    print('ok')\n"
    "asyncio.run(main(sys.argv[1], sys.argv[2]))\n";

/* ws_echo with `args` against PY_CLIENT (over wss:// when `ca` is a CA file). */
static void ws_echo_with(const char *python, const char *const *args, const char *want,
                         const char *ca) {
  char line[256];
  pid_t pid = tu_spawn_example("ws_echo", args, line, sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  assert_true(port > 0);
  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", port);
  run_result r;
  const char *const *argv = ca ? A(python, "-c", PY_CLIENT, port_s, want, ca)
                               : A(python, "-c", PY_CLIENT, port_s, want);
  assert_int_equal(run_program(argv, 60000 * TU_SLOW, &r), 0);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (r.status != 0 || strcmp(r.out, "ok\n") != 0)
    fail_msg("python client (%s): exit %d\nstdout: %s\nstderr: %s", want, r.status, r.out,
             r.err);
}

/* ws_echo against Python's websockets, with permessage-deflate and without. */
static void ws_echo_python_client(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped: no python3 with the websockets module "
                    "(Debian: python3-websockets; scripts/deps.sh installs it)\n");
    skip();
  }
  /* Without zlib in the build the extension is never agreed to. */
  ws_echo_with(python, A("tcp://127.0.0.1:0", "--quiet", "--max-message", "100000"),
               cgnet__ws_deflate_available() ? "deflate" : "plain", NULL);
  ws_echo_with(python,
               A("tcp://127.0.0.1:0", "--quiet", "--max-message", "100000", "--no-deflate"),
               "plain", NULL);
}

/* A Python websockets client (argv[1] the port, argv[2] ws_echo's pid, argv[3] optional:
 * a CA file, for wss://) echoes one message, then sends ws_echo SIGTERM: the stop must
 * reach it as a close frame with 1001 "going away". Prints "ok". */
static const char PY_GOING_AWAY[] =
    "import asyncio, os, signal, ssl, sys, websockets\n"
    "async def main(port, pid):\n"
    "    tls = len(sys.argv) > 3\n"
    "    url = '%s://127.0.0.1:%s/' % ('wss' if tls else 'ws', port)\n"
    "    ctx = ssl.create_default_context(cafile=sys.argv[3]) if tls else None\n"
    "    async with websockets.connect(url, ssl=ctx) as ws:\n"
    "        await ws.send('hi')\n"
    "        assert await asyncio.wait_for(ws.recv(), 10) == 'hi'\n"
    "        os.kill(pid, signal.SIGTERM)\n"
    "        try:\n"
    "            await asyncio.wait_for(ws.recv(), 10)\n"
    "            raise SystemExit('a message instead of the close')\n"
    "        except websockets.ConnectionClosed:\n"
    "            pass\n"
    "    assert ws.close_code == 1001, ws.close_code\n"
    "    assert ws.close_reason == 'going away', ws.close_reason\n"
    "    print('ok')\n"
    "asyncio.run(main(sys.argv[1], int(sys.argv[2])))\n";

/* ws_echo (args) stopped by SIGTERM while PY_GOING_AWAY is connected; it must exit 0. */
static void ws_echo_going_away(const char *python, const char *const *args,
                               const char *ca) {
  char line[256];
  pid_t pid = tu_spawn_example("ws_echo", args, line, sizeof line);
  assert_true(pid > 0);
  char port_s[16], pid_s[16];
  snprintf(port_s, sizeof port_s, "%d", tu_port_after(line, "listening on "));
  snprintf(pid_s, sizeof pid_s, "%d", (int)pid);
  run_result r;
  const char *const *argv = ca ? A(python, "-c", PY_GOING_AWAY, port_s, pid_s, ca)
                               : A(python, "-c", PY_GOING_AWAY, port_s, pid_s);
  assert_int_equal(run_program(argv, 60000 * TU_SLOW, &r), 0);
  int st = tu_wait_exit(pid, 10000 * TU_SLOW); /* the client's SIGTERM stops it */
  if (r.status != 0 || strcmp(r.out, "ok\n") != 0)
    fail_msg("python client: exit %d\nstdout: %s\nstderr: %s", r.status, r.out, r.err);
  assert_int_equal(st, 0);
}

/* SIGTERM to ws_echo: its open WebSockets get 1001. */
static void ws_echo_stop_sends_1001(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped: no python3 with the websockets module "
                    "(Debian: python3-websockets; scripts/deps.sh installs it)\n");
    skip();
  }
  ws_echo_going_away(python, A("tcp://127.0.0.1:0", "--quiet"), NULL);
}

/* Members of ws_chat in Python: argv[1] the port. GET / must be the page; /other is
 * refused; then 4 members join (on both loops), each says one line, and every member
 * must hear all 4 lines. Prints "ok". */
static const char PY_CHAT[] =
    "import asyncio, sys, urllib.request, websockets\n"
    "async def main(port):\n"
    "    page = urllib.request.urlopen('http://127.0.0.1:%s/' % port, timeout=10).read()\n"
    "    assert b'new WebSocket' in page, page[:100]\n"
    "    try:\n"
    "        await websockets.connect('ws://127.0.0.1:%s/other' % port)\n"
    "        raise SystemExit('upgrade on /other accepted')\n"
    "    except websockets.InvalidStatusCode as e:\n"
    "        assert e.status_code == 404, e.status_code\n"
    "    url = 'ws://127.0.0.1:%s/ws' % port\n"
    "    members = [await websockets.connect(url) for _ in range(4)]\n"
    "    await asyncio.sleep(0.2)\n"
    "    for i, m in enumerate(members):\n"
    "        await m.send('line %d' % i)\n"
    "    for m in members:\n"
    "        heard = set()\n"
    "        while len(heard) < 4:\n"
    "            heard.add(await asyncio.wait_for(m.recv(), 10))\n"
    "        assert heard == {'line %d' % i for i in range(4)}, heard\n"
    "    for m in members:\n"
    "        await m.close()\n"
    "    print('ok')\n"
    "asyncio.run(main(sys.argv[1]))\n";

/* ws_chat: the page, the 404, and a broadcast reaching members on every loop. */
static void ws_chat_python_members(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  if (!python) {
    fprintf(stderr, "skipped: no python3 with the websockets module "
                    "(Debian: python3-websockets; scripts/deps.sh installs it)\n");
    skip();
  }
  char line[256];
  pid_t pid = tu_spawn_example("ws_chat", A("tcp://127.0.0.1:0", "--quiet", "--loops", "2"),
                               line, sizeof line);
  assert_true(pid > 0);
  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", tu_port_after(line, "listening on "));
  run_result r;
  assert_int_equal(run_program(A(python, "-c", PY_CHAT, port_s), 60000 * TU_SLOW, &r), 0);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (r.status != 0 || strcmp(r.out, "ok\n") != 0)
    fail_msg("python members: exit %d\nstdout: %s\nstderr: %s", r.status, r.out, r.err);
}

/* ws_chat's page in headless Chromium, driven over the DevTools protocol by Python
 * (argv[1] the browser, argv[2] the port): the page's script must join (its log shows
 * "[joined]"), its form must send a line that a Python member hears, and a line the
 * member sends must appear in the page's log. Prints "ok". */
static const char PY_BROWSER[] =
    "import asyncio, json, os, shutil, subprocess, sys, tempfile, urllib.request, "
    "websockets\n"
    "async def cdp_eval(cdp, expr, ids=[0]):\n"
    "    ids[0] += 1\n"
    "    await cdp.send(json.dumps({'id': ids[0], 'method': 'Runtime.evaluate',\n"
    "                               'params': {'expression': expr, 'returnByValue': "
    "True}}))\n"
    "    while True:\n"
    "        r = json.loads(await cdp.recv())\n"
    "        if r.get('id') == ids[0]:\n"
    "            return r['result']['result'].get('value')\n"
    "async def wait_log(cdp, text, secs=20):\n"
    "    for _ in range(secs * 10):\n"
    "        log = await cdp_eval(cdp, \"document.getElementById('log').textContent\")\n"
    "        if log and text in log:\n"
    "            return log\n"
    "        await asyncio.sleep(0.1)\n"
    "    raise SystemExit('the page never showed %r: %r' % (text, log))\n"
    "async def main(chromium, port):\n"
    "    prof = tempfile.mkdtemp(prefix='cgnet-chromium-')\n"
    "    br = subprocess.Popen([chromium, '--headless', '--no-sandbox', '--disable-gpu',\n"
    "                           '--no-first-run', '--user-data-dir=' + prof,\n"
    "                           '--remote-debugging-port=0',\n"
    "                           'http://127.0.0.1:%s/' % port],\n"
    "                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "    try:\n"
    "        dt = None\n"
    "        for _ in range(300):\n"
    "            try:\n"
    "                dt = open(os.path.join(prof, "
    "'DevToolsActivePort')).read().split()[0]\n"
    "                break\n"
    "            except (OSError, IndexError):\n"
    "                await asyncio.sleep(0.1)\n"
    "        assert dt, 'chromium wrote no DevToolsActivePort'\n"
    "        async with websockets.connect('ws://127.0.0.1:%s/ws' % port) as member:\n"
    "            page = None\n"
    "            for _ in range(100):\n"
    "                targets = "
    "json.load(urllib.request.urlopen('http://127.0.0.1:%s/json/list' % dt, timeout=10))\n"
    "                page = next((t for t in targets if t.get('type') == 'page' and\n"
    "                             t.get('url', '').startswith('http://127.0.0.1:%s/' % "
    "port)), None)\n"
    "                if page: break\n"
    "                await asyncio.sleep(0.1)\n"
    "            assert page, targets\n"
    "            async with websockets.connect(page['webSocketDebuggerUrl'], "
    "max_size=None) as cdp:\n"
    "                await wait_log(cdp, '[joined]')\n"
    "                await cdp_eval(cdp, \"document.getElementById('msg').value = 'hello "
    "from chromium';\"\n"
    "                                    \"document.getElementById('f').requestSubmit(); "
    "1\")\n"
    "                got = await asyncio.wait_for(member.recv(), 20)\n"
    "                assert got == 'hello from chromium', got\n"
    "                await member.send('hello from python')\n"
    "                await wait_log(cdp, 'hello from python')\n"
    "        print('ok', flush=True)\n"
    "    finally:\n"
    "        br.terminate()\n"
    "        try: br.wait(10)\n"
    "        except subprocess.TimeoutExpired: br.kill(); br.wait()\n"
    "        shutil.rmtree(prof, ignore_errors=True)\n"
    "asyncio.run(main(sys.argv[1], sys.argv[2]))\n";

/* The first of the usual names of Chromium found in PATH, or NULL. */
static const char *find_chromium(void) {
  static const char *const names[] = {"chromium", "chromium-browser", "google-chrome"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char cmd[96];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", names[i]);
    if (system(cmd) == 0) return names[i];
  }
  return NULL;
}

static void ws_chat_chromium_page(void **state) {
  (void)state;
  const char *python = tu_python_with("websockets");
  const char *chromium = find_chromium();
  if (!python || !chromium) {
    fprintf(stderr, "skipped: %s\n",
            !python ? "no python3 with the websockets module"
                    : "no chromium, chromium-browser or google-chrome in PATH");
    skip();
  }
  char line[256];
  pid_t pid =
      tu_spawn_example("ws_chat", A("tcp://127.0.0.1:0", "--quiet"), line, sizeof line);
  assert_true(pid > 0);
  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", tu_port_after(line, "listening on "));
  run_result r;
  assert_int_equal(
      run_program(A(python, "-c", PY_BROWSER, chromium, port_s), 90000 * TU_SLOW, &r), 0);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (r.status != 0 || strcmp(r.out, "ok\n") != 0)
    fail_msg("chromium page: exit %d\nstdout: %s\nstderr: %s", r.status, r.out, r.err);
}

/* The client side in Node's `ws` package (found by require, else in npm's global
 * root): argv[1] the port. Echoes text and binary of several sizes, with the extension
 * offered, then closes with 1000; exits 77 if `ws` is not installed. Prints "ok". */
static const char NODE_CLIENT[] =
    "let WebSocket;\n"
    "try { WebSocket = require('ws'); } catch (e) {\n"
    "  try {\n"
    "    const root = require('child_process').execSync('npm root -g').toString().trim();\n"
    "    WebSocket = require(require('path').join(root, 'ws'));\n"
    "  } catch (e2) { process.exit(77); }\n"
    "}\n"
    "const crypto = require('crypto');\n"
    "const ws = new WebSocket('ws://127.0.0.1:' + process.argv[1] + '/node',\n"
    "                         { perMessageDeflate: true });\n"
    "const sizes = [0, 1, 125, 126, 65535, 65536, 99999];\n"
    "let i = 0, sent;\n"
    "function next() {\n"
    "  if (i == 2 * sizes.length) { ws.close(1000, 'bye'); return; }\n"
    "  const n = sizes[i >> 1];\n"
    "  sent = (i & 1) ? 'x\\u00e9\\u20ac'.repeat(n).slice(0, n >> 1)\n"
    "                 : crypto.randomBytes(n);\n"
    "  i++;\n"
    "  ws.send(sent);\n"
    "}\n"
    "ws.on('open', () => {\n"
    "  if (!ws.extensions.includes('permessage-deflate') && process.argv[2] == 'deflate')\n"
    "    { console.log('no deflate: ' + ws.extensions); process.exit(1); }\n"
    "  next();\n"
    "});\n"
    "ws.on('message', (data, isBinary) => {\n"
    "  const ok = isBinary ? Buffer.isBuffer(sent) && data.equals(sent)\n"
    "                      : typeof sent == 'string' && data.toString() == sent;\n"
    "  if (!ok) { console.log('bad echo at ' + i); process.exit(1); }\n"
    "  next();\n"
    "});\n"
    "ws.on('close', (code) => {\n"
    "  if (code != 1000 || i != 2 * sizes.length) { console.log('close ' + code); "
    "process.exit(1); }\n"
    "  console.log('ok');\n"
    "});\n"
    "ws.on('error', (e) => { console.log('error ' + e); process.exit(1); });\n"
    "setTimeout(() => { console.log('timeout'); process.exit(1); }, 30000).unref();\n";

/* ws_echo against Node's ws (skipped where node or the package is missing). */
static void ws_echo_node_client(void **state) {
  (void)state;
  char line[256];
  pid_t pid =
      tu_spawn_example("ws_echo", A("tcp://127.0.0.1:0", "--quiet"), line, sizeof line);
  assert_true(pid > 0);
  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", tu_port_after(line, "listening on "));
  run_result r;
  const char *want = cgnet__ws_deflate_available() ? "deflate" : "plain";
  int rc = run_program(A("node", "-e", NODE_CLIENT, port_s, want), 60000 * TU_SLOW, &r);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (rc != 0 || r.status == 77) {
    fprintf(stderr, "skipped: %s\n",
            rc != 0 ? "no node in PATH" : "no node 'ws' package (npm install -g ws)");
    skip();
  }
  if (r.status != 0 || strcmp(r.out, "ok\n") != 0)
    fail_msg("node client: exit %d\nstdout: %s\nstderr: %s", r.status, r.out, r.err);
}

/* curl's upgrade request: the 101 with the accept value RFC 6455 gives for its sample
 * key. curl then waits on the open conn until its --max-time. */
static void ws_echo_curl_upgrade(void **state) {
  (void)state;
  char line[256];
  pid_t pid =
      tu_spawn_example("ws_echo", A("tcp://127.0.0.1:0", "--quiet"), line, sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  assert_true(port > 0);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/chat", port);
  run_result r;
  int rc = run_program(A("curl", "-s", "-i", "-N", "--http1.1", "--max-time", "2", "-H",
                         "Connection: Upgrade", "-H", "Upgrade: websocket", "-H",
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "-H",
                         "Sec-WebSocket-Version: 13", url),
                       20000, &r);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (rc != 0) {
    fprintf(stderr, "skipped: no curl in PATH\n");
    skip();
  }
  if (!strstr(r.out, "HTTP/1.1 101 Switching Protocols\r\n") ||
      !strstr(r.out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
    fail_msg("curl got:\n%s", r.out);
  /* Without the upgrade headers: 426. */
  pid = tu_spawn_example("ws_echo", A("tcp://127.0.0.1:0", "--quiet"), line, sizeof line);
  assert_true(pid > 0);
  port = tu_port_after(line, "listening on ");
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  assert_int_equal(run_program(A("curl", "-s", "-i", "--max-time", "5", url), 20000, &r),
                   0);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  if (!strstr(r.out, "HTTP/1.1 426 ")) fail_msg("curl got:\n%s", r.out);
}

/* Send msg from fd, expect exactly want back. */
static void expect_reply(int fd, const char *msg, const char *want) {
  char buf[256];
  assert_true(send(fd, msg, strlen(msg), 0) >= 0);
  int n = tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW);
  if (n < 0) fail_msg("'%s': no reply (%d)", msg, n);
  buf[n] = '\0';
  assert_string_equal(buf, want);
}

/* Two peers interleaved: each reply carries its own peer's count and the bytes as sent;
 * a peer silent past --idle-ms starts again from 1. */
static void run_udp_sessions(const char *const *args) {
  char line[256];
  pid_t pid = tu_spawn_example("udp_sessions", args, line, sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  assert_true(port > 0);
  int a = tu_udp_socket(AF_INET, port), b = tu_udp_socket(AF_INET, port);
  assert_true(a >= 0 && b >= 0);
  expect_reply(a, "hello", "1 hello");
  expect_reply(b, "hi there", "1 hi there");
  expect_reply(a, "again", "2 again");
  expect_reply(a, "", "3 ");
  expect_reply(b, "x y  z", "2 x y  z");
  tu_sleep_ms(900 * TU_SLOW); /* past --idle-ms */
  expect_reply(a, "back", "1 back");
  close(a);
  close(b);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
}

/* The examples take a udp address's options ("?sessions=1"); cgnet checks them. */
static void echo_takes_udp_options(void **state) {
  (void)state;
  char line[256];
  pid_t pid = tu_spawn_example("echo", A("udp://127.0.0.1:0?sessions=1", "--quiet"), line,
                               sizeof line);
  assert_true(pid > 0);
  int port = tu_port_after(line, "listening on ");
  assert_true(port > 0);
  int fd = tu_udp_socket(AF_INET, port);
  assert_true(fd >= 0);
  expect_reply(fd, "echo me", "echo me");
  close(fd);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  run_result r;
  run("echo", A("udp://127.0.0.1:0?color=red"), &r);
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.err, cgnet_strerror(CGNET_EBADOPTION)));
  expect_usage_error("echo", A("tcp://127.0.0.1:0?sessions=1"),
                     A("'tcp://127.0.0.1:0?sessions=1'"));
}

static void udp_sessions_counts_per_peer(void **state) {
  (void)state;
  char idle[32];
  snprintf(idle, sizeof idle, "%d", 300 * TU_SLOW);
  run_udp_sessions(A("udp://127.0.0.1:0", "--idle-ms", idle));
  run_udp_sessions(A("udp://127.0.0.1:0", "--loops", "2", "--idle-ms", idle, "--async"));
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
      cmocka_unit_test(udp_sessions_counts_per_peer),
      cmocka_unit_test(echo_takes_udp_options),
      cmocka_unit_test(ws_echo_python_client),
      cmocka_unit_test(ws_echo_node_client),
      cmocka_unit_test(ws_chat_python_members),
      cmocka_unit_test(ws_echo_curl_upgrade),
      cmocka_unit_test(tls_flags_are_checked),
      cmocka_unit_test(https_example_answers_curl),
      cmocka_unit_test(ws_echo_stop_sends_1001),
      cmocka_unit_test(ws_echo_wss_python_client),
      cmocka_unit_test(ws_chat_chromium_page),
      cmocka_unit_test(https_example_under_h2load),
      cmocka_unit_test(https_example_under_wrk),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
