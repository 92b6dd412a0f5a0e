/*
 * echo — the smallest cgnet server: every byte a client sends comes straight back, and
 * every UDP datagram goes back to its sender as one datagram.
 *
 *   build/examples/echo [ADDR...] [--loops N | --multicore] [--reuseport]
 *                       [--lb rr|lc|hash] [--et] [--quiet]
 *
 * ADDR is any scheme, any mix: tcp://, tcp4://, tcp6://, udp://, udp4://, udp6://,
 * unix:///path or unix://@abstract (default tcp://127.0.0.1:9000):
 *
 *   build/examples/echo udp://127.0.0.1:9001 unix:///tmp/echo.sock tcp://127.0.0.1:9000
 *
 * Port 0 lets the kernel pick a free port; the first line on stdout says which one, so
 * a script can read it:
 *
 *   echo: listening on tcp://127.0.0.1:41234 (2 loops)
 *
 * SIGINT or SIGTERM stops it gracefully (queued echoes get up to a second to go out).
 * Try it:  build/examples/echo &  then  nc 127.0.0.1 9000
 */
#include <cgnet.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void usage(FILE *f) {
  fprintf(
      f, "usage: echo [ADDR...] [--loops N | --multicore] [--reuseport]\n"
         "            [--lb rr|lc|hash] [--et] [--quiet]\n"
         "  ADDR         tcp://HOST:PORT, tcp4://..., tcp6://[::1]:PORT, udp://HOST:PORT,\n"
         "               udp4://..., udp6://..., unix:///PATH, unix://@NAME (any mix;\n"
         "               default tcp://127.0.0.1:9000; port 0 picks a free port)\n"
         "  --loops N    N event loops (default 1)\n"
         "  --multicore  one event loop per CPU\n"
         "  --reuseport  one SO_REUSEPORT listener per loop\n"
         "  --lb ALG     hand new conns to loops round-robin (rr, default), to the\n"
         "               least loaded (lc) or by a hash of the peer address (hash)\n"
         "  --et         edge-triggered epoll\n"
         "  --quiet      no line per connection\n");
}

#define MAX_ADDRS 16

/* Parse argv into opts and addrs (room for MAX_ADDRS). -1: bad usage. */
static int parse_args(int argc, char **argv, cgnet_options *opts, const char **addrs,
                      size_t *naddrs) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--loops") == 0 && i + 1 < argc) {
      char *end;
      long n = strtol(argv[++i], &end, 10);
      if (*end != '\0' || n < 1 || n > 1024) return -1;
      opts->num_loops = (int)n;
    } else if (strcmp(a, "--multicore") == 0) {
      opts->multicore = 1;
    } else if (strcmp(a, "--reuseport") == 0) {
      opts->reuse_port = 1;
    } else if (strcmp(a, "--lb") == 0 && i + 1 < argc) {
      const char *lb = argv[++i];
      if (strcmp(lb, "rr") == 0)
        opts->lb = CGNET_LB_ROUND_ROBIN;
      else if (strcmp(lb, "lc") == 0)
        opts->lb = CGNET_LB_LEAST_CONN;
      else if (strcmp(lb, "hash") == 0)
        opts->lb = CGNET_LB_SOURCE_HASH;
      else
        return -1;
    } else if (strcmp(a, "--et") == 0) {
      opts->edge_triggered = 1;
    } else if (strcmp(a, "--quiet") == 0) {
      quiet = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (a[0] == '-') {
      return -1; /* unknown option, or one missing its value */
    } else if (*naddrs < MAX_ADDRS) {
      addrs[(*naddrs)++] = a;
    } else {
      return -1; /* too many addresses */
    }
  }
  if (opts->num_loops > 0 && opts->multicore) return -1; /* pick one */
  if (*naddrs == 0) addrs[(*naddrs)++] = "tcp://127.0.0.1:9000";
  return 0;
}

/* "echo: listening on tcp://127.0.0.1:41234 (2 loops)", with the ports actually bound.
 * The scheme is the one the user gave (up to "://"). */
static void print_listening(cgnet_engine *eng, const char *const *addrs) {
  printf("echo: listening on");
  for (size_t i = 0; i < cgnet_engine_num_listeners(eng); i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[128] = "?";
    if (cgnet_engine_listen_addr(eng, i, (struct sockaddr *)&ss, &len) == 0)
      cgnet_format_addr((struct sockaddr *)&ss, len, host, sizeof host);
    const char *sep = strstr(addrs[i], "://");
    int scheme = sep ? (int)(sep - addrs[i]) : 3;
    printf("%s %.*s://%s", i ? "," : "", scheme, sep ? addrs[i] : "tcp", host);
  }
  int loops = cgnet_engine_num_loops(eng);
  printf(" (%d loop%s)\n", loops, loops == 1 ? "" : "s");
  fflush(stdout); /* a script may be waiting for this line on a pipe */
}

int main(int argc, char **argv) {
  cgnet_options opts = {0}; /* all-zero: cgnet's defaults */
  const char *addrs[MAX_ADDRS];
  size_t naddrs = 0;
  if (parse_args(argc, argv, &opts, addrs, &naddrs) != 0) {
    usage(stderr);
    return 2;
  }

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
  if (err != 0) {
    fprintf(stderr, "echo: cannot start: %s\n", cgnet_strerror(err));
    return 1;
  }
  print_listening(stopper.eng, addrs);

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
