/*
 * echo_pool — an echo server whose handler blocks (gnet's second example).
 *
 *   build/examples/echo_pool [ADDR] [--loops N] [--workers N] [--delay MS]
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

static void usage(void) {
  fprintf(stderr, "usage: echo_pool [ADDR] [--loops N] [--workers N] [--delay MS]\n"
                  "  ADDR defaults to tcp://127.0.0.1:9000\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *addr = "tcp://127.0.0.1:9000";
  cgnet_options o = {0};
  cgnet_pool_options po = {0};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--loops") == 0 && i + 1 < argc)
      o.num_loops = atoi(argv[++i]);
    else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
      po.max_threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--delay") == 0 && i + 1 < argc)
      g_delay_ms = (unsigned)atoi(argv[++i]);
    else if (argv[i][0] != '-')
      addr = argv[i];
    else
      usage();
  }
  int err = cgnet_pool_new(&po, &g_pool);
  if (err) {
    fprintf(stderr, "echo_pool: pool: %s\n", cgnet_strerror(err));
    return 1;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread started below inherits this */

  cgnet_handler h = {.on_traffic = on_traffic};
  cgnet_engine *eng;
  err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "echo_pool: %s: %s\n", addr, cgnet_strerror(err));
    cgnet_pool_release(g_pool, CGNET_POOL_CANCEL, UINT64_MAX);
    return 1;
  }
  printf("echo_pool: listening on port %d (%d loops, %zu workers max)\n",
         cgnet_engine_listen_port(eng, 0), cgnet_engine_num_loops(eng),
         cgnet_pool_capacity(g_pool));
  fflush(stdout);
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
