/*
 * echo_pool — an echo server whose handler blocks (gnet's second example).
 *
 *   build/examples/echo_pool [ADDR] [--loops N] [--workers N] [--delay MS]
 *
 * ADDR is a stream address (tcp://, tcp4://, tcp6://, unix://; default
 * tcp://127.0.0.1:9000). udp:// is refused at start: a datagram conn lives only during
 * its on_traffic call, so a worker could never answer it later.
 *
 * Blocking work must never run on an event loop, so on_traffic copies the bytes, hands
 * them to a worker pool and returns at once; the worker sleeps (standing in for a slow
 * database or disk), then answers with cgnet_conn_async_write. The worker holds a
 * reference on the conn, so if the client has gone meanwhile the write just reports
 * CGNET_ECLOSED.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cgnet.h"

typedef struct job {
  cgnet_conn *c; /* a reference, dropped when the job is done */
  size_t len;
  uint8_t data[];
} job;

static cgnet_pool *g_pool;
static unsigned g_delay_ms = 1000;

static void sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Runs on a worker thread. */
static void work(void *ud) {
  job *j = ud;
  sleep_ms(g_delay_ms);
  cgnet_conn_async_write(j->c, j->data, j->len, NULL, NULL); /* ECLOSED if gone: fine */
  cgnet_conn_unref(j->c);
  free(j);
}

/* The job was never run (the pool shut down first). */
static void drop(void *ud) {
  job *j = ud;
  cgnet_conn_unref(j->c);
  free(j);
}

static cgnet_action on_traffic(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  job *j = malloc(sizeof *j + n);
  if (!j) return CGNET_CLOSE;
  memcpy(j->data, p, n); /* p is only valid during this callback */
  j->len = n;
  j->c = cgnet_conn_ref(c);
  if (cgnet_pool_submit_ex(g_pool, work, drop, j) != 0) {
    drop(j); /* queue full: shed load by closing rather than blocking the loop */
    return CGNET_CLOSE;
  }
  return CGNET_NONE;
}

/* A conn that ends with an error gets a line: a silent close is a mystery to a user. */
static cgnet_action on_close(cgnet_conn *c, int reason) {
  if (ex_close_is_error(reason))
    fprintf(stderr, "echo_pool: closed %s: %s\n", cgnet_conn_remote_addr_string(c),
            cgnet_strerror(reason));
  return CGNET_NONE;
}

static const char USAGE[] =
    "usage: echo_pool [ADDR] [--loops N] [--workers N] [--delay MS]\n"
    "  ADDR         tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, unix:///PATH or\n"
    "               unix://@NAME (default tcp://127.0.0.1:9000; port 0: a free one);\n"
    "               not udp:// (a worker cannot answer a datagram later)\n"
    "  --loops N    event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --workers N  worker threads at most, 1..4096 (default 4 per CPU)\n"
    "  --delay MS   how long each reply sleeps in a worker, 0..3600000 (default 1000)\n";

int main(int argc, char **argv) {
  const char *addr = "tcp://127.0.0.1:9000";
  cgnet_options o = {0};
  cgnet_pool_options po = {0};
  ex_args a;
  ex_args_init(&a, "echo_pool", USAGE, argc, argv);
  int have_addr = 0;
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, &o);
    } else if (ex_is(arg, "--workers")) {
      po.max_threads = (int)ex_u64(&a, arg, 1, 4096);
    } else if (ex_is(arg, "--delay")) {
      g_delay_ms = (unsigned)ex_u64(&a, arg, 0, 3600000);
    } else if (!ex_address_arg(arg, &addr, &have_addr)) {
      ex_unknown(&a, arg);
    }
  }
  ex_check_addr(&a, "listen address", addr, EX_ADDR_TCP | EX_ADDR_UNIX, EX_LISTEN,
                "a worker cannot answer a datagram after its on_traffic returned");
  int err = cgnet_pool_new(&po, &g_pool);
  if (err) {
    fprintf(stderr, "echo_pool: pool: %s\n", cgnet_strerror(err));
    return 1;
  }
  sigset_t set;
  ex_block_stop_signals(&set); /* every thread started below inherits the mask */

  cgnet_handler h = {.on_traffic = on_traffic, .on_close = on_close};
  cgnet_engine *eng;
  err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "echo_pool: %s: %s\n", addr, cgnet_strerror(err));
    cgnet_pool_release(g_pool, CGNET_POOL_CANCEL, UINT64_MAX);
    return 1;
  }
  char workers[64];
  snprintf(workers, sizeof workers, "%zu workers max", cgnet_pool_capacity(g_pool));
  ex_print_listening("echo_pool", eng, &addr, workers);
  int sig;
  sigwait(&set, &sig);
  /* Workers first (their references must be gone before the engine is freed), then the
   * engine. Replies still sleeping in workers are cancelled. */
  cgnet_pool_release(g_pool, CGNET_POOL_CANCEL, g_delay_ms + 1000);
  cgnet_engine_stop(eng, 1000);
  err = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  return err ? 1 : 0;
}
