/*
 * echo — the smallest cgnet server: every byte a client sends comes straight back, and
 * every UDP datagram goes back to its sender as one datagram.
 *
 *   build/examples/echo [ADDR...] [--loops N] [--reuseport] [--lb rr|lc|hash] [--et]
 *                       [--backend epoll|io_uring|auto] [--stats]
 *                       [--quiet] [--cert FILE --key FILE]
 *
 * ADDR is any scheme, any mix: tcp://, tcp4://, tcp6://, udp://, udp4://, udp6://,
 * tls://, tls4://, tls6:// (TLS, with --cert and --key), unix:///path or
 * unix://@abstract (default tcp://127.0.0.1:9000):
 *
 *   build/examples/echo udp://127.0.0.1:9001 unix:///tmp/echo.sock tcp://127.0.0.1:9000
 *
 * Port 0 lets the kernel pick a free port; the first line on stdout says which one, so
 * a script can read it:
 *
 *   echo: listening on tcp://127.0.0.1:41234 (2 loops, epoll)
 *
 * SIGINT or SIGTERM stops it gracefully (queued echoes get up to a second to go out).
 * Try it:  build/examples/echo &  then  nc 127.0.0.1 9000
 * Over TLS: build/examples/echo tls://127.0.0.1:9443 --cert cert.pem --key key.pem &
 *           then  openssl s_client -connect 127.0.0.1:9443 -CAfile cert.pem
 */
#include <cgnet.h>
#include <cgnet_tls.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

static int quiet; /* --quiet: no line per connection */

/* The peer's address; a Unix client usually has none (it did not bind a path). */
static const char *peer(cgnet_conn *c) {
  const char *r = cgnet_conn_remote_addr_string(c);
  return r[0] ? r : "unix peer";
}

/* A client connected. Runs on the loop thread that now owns the connection. */
static cgnet_action on_open(cgnet_conn *c) {
  if (!quiet) fprintf(stderr, "echo: open  %s\n", peer(c));
  return CGNET_NONE;
}

/* Bytes arrived: take everything buffered and write it back. cgnet_conn_next consumes
 * the bytes and points into cgnet's buffer (valid until we return); cgnet_conn_write
 * copies them into the outbound queue, which cgnet flushes before the loop sleeps.
 * For UDP, c is the datagram (its remote address is the sender) and the write is one
 * datagram back to the sender; an empty datagram is echoed too. */
static cgnet_action on_traffic(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (cgnet_conn_is_datagram(c)) {
    (void)cgnet_conn_write(c, p, n); /* a dropped datagram is UDP's normal life */
    return CGNET_NONE;
  }
  if (n > 0 && cgnet_conn_write(c, p, n) != 0) return CGNET_CLOSE;
  return CGNET_NONE;
}

/* The connection is gone; `reason` says why (CGNET_EOF: the client hung up). */
static cgnet_action on_close(cgnet_conn *c, int reason) {
  if (!quiet) fprintf(stderr, "echo: close %s (%s)\n", peer(c), cgnet_strerror(reason));
  return CGNET_NONE;
}

/*
 * Signals. A signal handler may only call async-signal-safe functions, and
 * cgnet_engine_stop is not one. So main blocks SIGINT and SIGTERM in every thread (the
 * loop threads inherit the mask), and this thread waits for them with sigwait and stops
 * the engine from ordinary thread context.
 */
struct stopper {
  cgnet_engine *eng;
  sigset_t signals;
  atomic_int engine_done; /* set by main when the engine stopped by itself */
};

static void *stop_on_signal(void *arg) {
  struct stopper *s = arg;
  int sig = 0;
  sigwait(&s->signals, &sig);
  if (atomic_load(&s->engine_done)) return NULL; /* main woke us up to exit */
  if (!quiet) fprintf(stderr, "echo: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  cgnet_engine_stop(s->eng, 1000); /* blocks until every loop has exited */
  return NULL;
}

static int print_stats;

/* One line with the loops' counters added up (--stats; bench/run.sh reads it). */
static void report_stats(cgnet_engine *eng) {
  cgnet_loop_stats sum = {0};
  for (int i = 0; i < cgnet_engine_num_loops(eng); i++) {
    cgnet_loop_stats st;
    cgnet_loop_get_stats(cgnet_engine_loop(eng, i), &st);
    sum.wakeups += st.wakeups;
    sum.tasks += st.tasks;
    sum.enters += st.enters;
    sum.completions += st.completions;
    sum.recv_nobufs += st.recv_nobufs;
    sum.cq_overflows += st.cq_overflows;
    sum.stale_completions += st.stale_completions;
    sum.interest_updates += st.interest_updates;
  }
  printf("echo: stats: wakeups=%llu tasks=%llu enters=%llu completions=%llu "
         "recv_nobufs=%llu cq_overflows=%llu stale=%llu interest_updates=%llu\n",
         (unsigned long long)sum.wakeups, (unsigned long long)sum.tasks,
         (unsigned long long)sum.enters, (unsigned long long)sum.completions,
         (unsigned long long)sum.recv_nobufs, (unsigned long long)sum.cq_overflows,
         (unsigned long long)sum.stale_completions,
         (unsigned long long)sum.interest_updates);
  fflush(stdout);
}

static const char USAGE[] =
    "usage: echo [ADDR...] [--loops N] [--reuseport] [--lb rr|lc|hash] [--et] [--quiet]\n"
    "            [--backend epoll|io_uring|auto] [--stats] [--cert FILE --key FILE]\n"
    "            [--recv-buffers N] [--recv-buffer-size BYTES]\n"
    "  ADDR         tcp://HOST:PORT, tcp4://..., tcp6://[::1]:PORT, udp://HOST:PORT,\n"
    "               udp4://..., udp6://..., tls://HOST:PORT, tls4://..., tls6://...,\n"
    "               unix:///PATH, unix://@NAME (any mix, up to 16; default\n"
    "               tcp://127.0.0.1:9000; port 0 picks a free port)\n"
    "  --cert FILE  the server certificate chain (PEM) for tls:// addresses\n"
    "  --key FILE   its private key (PEM)\n"
    "  --loops N    event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --multicore  the same as --loops 0\n"
    "  --reuseport  one SO_REUSEPORT listener per loop\n"
    "  --lb ALG     hand new conns to loops round-robin (rr, default), to the\n"
    "               least loaded (lc) or by a hash of the peer address (hash)\n"
    "  --et         edge-triggered epoll\n"
    "  --backend B  the kernel interface: epoll, io_uring or auto (default; the\n"
    "               environment variable CGNET_BACKEND overrides it)\n"
    "  --recv-buffers N, --recv-buffer-size BYTES\n"
    "               io_uring: receive buffers per loop (a power of two) and their\n"
    "               size (default: cgnet's, 256 x 16 KiB)\n"
    "  --quiet      no line per connection\n"
    "  --stats      at exit, print the loops' counters (wake-ups, tasks, and with\n"
    "               io_uring the enters and completions)\n";

#define MAX_ADDRS 16

/* Parse argv into opts and addrs (room for MAX_ADDRS); a usage error exits. */
static void parse_args(int argc, char **argv, cgnet_options *opts, const char **addrs,
                       size_t *naddrs) {
  ex_args a;
  ex_tls tls = {0};
  ex_args_init(&a, "echo", USAGE, argc, argv);
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_tls_arg(&a, arg, &tls)) {
      continue;
    } else if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, opts);
    } else if (ex_is(arg, "--multicore")) {
      opts->num_loops = 0;
      opts->multicore = 1;
    } else if (ex_is(arg, "--reuseport")) {
      opts->reuse_port = 1;
    } else if (ex_is(arg, "--lb")) {
      const char *lb = ex_value(&a, arg);
      if (strcmp(lb, "rr") == 0)
        opts->lb = CGNET_LB_ROUND_ROBIN;
      else if (strcmp(lb, "lc") == 0)
        opts->lb = CGNET_LB_LEAST_CONN;
      else if (strcmp(lb, "hash") == 0)
        opts->lb = CGNET_LB_SOURCE_HASH;
      else
        ex_usage_error(&a, "--lb '%s': want rr, lc or hash", lb);
    } else if (ex_is(arg, "--backend")) {
      ex_backend(&a, arg, opts);
    } else if (ex_is(arg, "--recv-buffers")) {
      opts->recv_buffers = (unsigned)ex_u64(&a, arg, 1, 32768);
    } else if (ex_is(arg, "--recv-buffer-size")) {
      opts->recv_buffer_size = (size_t)ex_u64(&a, arg, 512, (uint64_t)1 << 30);
    } else if (ex_is(arg, "--et")) {
      opts->edge_triggered = 1;
    } else if (ex_is(arg, "--stats")) {
      print_stats = 1;
    } else if (ex_is(arg, "--quiet")) {
      quiet = 1;
    } else if (arg[0] == '-') {
      ex_unknown(&a, arg);
    } else if (*naddrs < MAX_ADDRS) {
      ex_check_addr(&a, "address", arg,
                    EX_ADDR_TCP | EX_ADDR_UDP | EX_ADDR_UNIX | EX_ADDR_TLS, EX_LISTEN,
                    NULL);
      addrs[(*naddrs)++] = arg;
    } else {
      ex_usage_error(&a, "more than %d addresses", MAX_ADDRS);
    }
  }
  if (*naddrs == 0) addrs[(*naddrs)++] = "tcp://127.0.0.1:9000";
  ex_tls_server(&a, &tls, addrs, *naddrs, opts);
}

int main(int argc, char **argv) {
  cgnet_options opts = {0}; /* all-zero: cgnet's defaults */
  const char *addrs[MAX_ADDRS];
  size_t naddrs = 0;
  parse_args(argc, argv, &opts, addrs, &naddrs);

  /* Block the signals before any thread exists, so every thread inherits the mask. */
  struct stopper stopper = {0};
  sigemptyset(&stopper.signals);
  sigaddset(&stopper.signals, SIGINT);
  sigaddset(&stopper.signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stopper.signals, NULL);

  cgnet_handler handler = {
      .on_open = on_open,
      .on_traffic = on_traffic,
      .on_close = on_close,
  };
  int err = cgnet_engine_start(&handler, addrs, naddrs, &opts, &stopper.eng);
  cgnet_tls_ctx_free(opts.tls); /* the engine holds its own */
  if (err != 0) {
    fprintf(stderr, "echo: cannot start: %s\n", cgnet_strerror(err));
    return 1;
  }
  ex_print_listening("echo", stopper.eng, addrs, NULL);

  pthread_t stopper_thread;
  if (pthread_create(&stopper_thread, NULL, stop_on_signal, &stopper) != 0) {
    fprintf(stderr, "echo: cannot start the signal thread\n");
    cgnet_engine_stop(stopper.eng, 0);
    cgnet_engine_wait(stopper.eng);
    cgnet_engine_free(stopper.eng);
    return 1;
  }

  /* Serve until a signal (or an error) stops the engine. */
  err = cgnet_engine_wait(stopper.eng);
  if (print_stats) report_stats(stopper.eng);

  /* If the engine stopped on its own, the stopper is still in sigwait: wake it. Either
   * way join it before freeing the engine it points to. */
  atomic_store(&stopper.engine_done, 1);
  pthread_kill(stopper_thread, SIGTERM);
  pthread_join(stopper_thread, NULL);
  cgnet_engine_free(stopper.eng);
  if (err != 0) {
    fprintf(stderr, "echo: stopped with an error: %s\n", cgnet_strerror(err));
    return 1;
  }
  return 0;
}
