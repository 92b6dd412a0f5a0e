/*
 * udp_sessions — a per-peer counter over UDP sessions.
 *
 *   build/examples/udp_sessions ADDR [--loops N] [--idle-ms N] [--async]
 *
 * ADDR is a udp address (udp://, udp4://, udp6://). With sessions on, each remote peer
 * gets a conn of its own, opened by its first datagram; its context here is the number
 * of datagrams it has sent in this session. Every datagram is answered with that number
 * (counting this one), one space, then the datagram's bytes unchanged:
 *
 *   $ echo -n hello | nc -u -w1 127.0.0.1 9001     ->  1 hello
 *
 * --idle-ms N closes a peer's session after N ms of silence (its next datagram starts
 * again from 1). --async answers from a worker thread: on_traffic counts, copies the
 * datagram and hands it with a reference on the session to cgnet's worker pool, and the
 * worker answers with cgnet_conn_async_write (CGNET_ECLOSED if the session has closed
 * meanwhile, which is fine).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cgnet.h"

#define MAX_DATAGRAM 65536
#define MAX_HEAD 24 /* a 64-bit count in decimal and the space */

/* A session's context. */
typedef struct peer {
  uint64_t count;
} peer;

/* A reply being made on a worker. */
typedef struct job {
  cgnet_conn *c; /* a reference, dropped when the job is done */
  size_t len;
  uint8_t reply[]; /* "<count> <datagram>" */
} job;

static cgnet_pool *g_pool; /* --async only */

/* "<count> " then the datagram into out (room for MAX_HEAD + len). Its length. */
static size_t make_reply(uint8_t *out, uint64_t count, const uint8_t *data, size_t len) {
  int head = snprintf((char *)out, MAX_HEAD, "%llu ", (unsigned long long)count);
  if (len) memcpy(out + head, data, len);
  return (size_t)head + len;
}

/* Runs on a worker thread. */
static void work(void *ud) {
  job *j = ud;
  cgnet_conn_async_write(j->c, j->reply, j->len, NULL, NULL); /* ECLOSED if gone: fine */
  cgnet_conn_unref(j->c);
  free(j);
}

/* The job never ran (the pool shut down first). */
static void drop(void *ud) {
  job *j = ud;
  cgnet_conn_unref(j->c);
  free(j);
}

static cgnet_action on_open(cgnet_conn *c) {
  peer *p = calloc(1, sizeof *p);
  if (!p) return CGNET_CLOSE;
  cgnet_conn_set_context(c, p);
  return CGNET_NONE;
}

/* The counting happens here, on the loop, in the order the datagrams came; only the
 * answer moves to a worker with --async. */
static cgnet_action on_traffic(cgnet_conn *c) {
  peer *p = cgnet_conn_context(c);
  const uint8_t *data;
  size_t len = cgnet_conn_next(c, 0, &data);
  p->count++;
  if (!g_pool) {
    static _Thread_local uint8_t out[MAX_HEAD + MAX_DATAGRAM];
    (void)cgnet_conn_write(c, out, make_reply(out, p->count, data, len));
    return CGNET_NONE;
  }
  job *j = malloc(sizeof *j + MAX_HEAD + len);
  if (!j) return CGNET_CLOSE;
  j->len = make_reply(j->reply, p->count, data, len);
  j->c = cgnet_conn_ref(c);
  if (cgnet_pool_submit_ex(g_pool, work, drop, j) != 0) drop(j); /* full: shed it */
  return CGNET_NONE;
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  free(cgnet_conn_context(c));
  cgnet_conn_set_context(c, NULL);
  if (ex_close_is_error(reason) && reason != CGNET_ETIMEDOUT)
    fprintf(stderr, "udp_sessions: closed %s: %s\n", cgnet_conn_remote_addr_string(c),
            cgnet_strerror(reason));
  return CGNET_NONE;
}

static const char USAGE[] =
    "usage: udp_sessions ADDR [--loops N] [--idle-ms N] [--async]\n"
    "  ADDR         udp://HOST:PORT, udp4://, udp6://[::1]:PORT (port 0: a free one)\n"
    "  --loops N    event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --idle-ms N  close a peer's session after N ms of silence, 1..86400000\n"
    "               (default: never)\n"
    "  --async      answer from a worker thread through the session handle\n";

int main(int argc, char **argv) {
  const char *addr = NULL;
  cgnet_options o = {.udp_sessions = 1};
  int async = 0;
  ex_args a;
  ex_args_init(&a, "udp_sessions", USAGE, argc, argv);
  int have_addr = 0;
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, &o);
    } else if (ex_is(arg, "--idle-ms")) {
      o.idle_timeout_ms = ex_u64(&a, arg, 1, 86400000);
    } else if (ex_is(arg, "--async")) {
      async = 1;
    } else if (!ex_address_arg(arg, &addr, &have_addr)) {
      ex_unknown(&a, arg);
    }
  }
  if (!addr) ex_usage_error(&a, "missing ADDR (a udp:// address)");
  ex_check_addr(&a, "listen address", addr, EX_ADDR_UDP, EX_LISTEN,
                "udp_sessions serves datagrams only");
  if (async) {
    int err = cgnet_pool_new(NULL, &g_pool);
    if (err) {
      fprintf(stderr, "udp_sessions: pool: %s\n", cgnet_strerror(err));
      return 1;
    }
  }
  sigset_t set;
  ex_block_stop_signals(&set); /* every thread started below inherits the mask */

  cgnet_handler h = {.on_open = on_open, .on_traffic = on_traffic, .on_close = on_close};
  cgnet_engine *eng;
  int err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "udp_sessions: %s: %s\n", addr, cgnet_strerror(err));
    if (g_pool) cgnet_pool_release(g_pool, CGNET_POOL_CANCEL, UINT64_MAX);
    return 1;
  }
  ex_print_listening("udp_sessions", eng, &addr, async ? "sessions, async" : "sessions");
  int sig;
  sigwait(&set, &sig);
  /* Workers first (their references must be gone before the engine is freed). */
  if (g_pool) cgnet_pool_release(g_pool, CGNET_POOL_CANCEL, 1000);
  cgnet_engine_stop(eng, 1000);
  err = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  return err ? 1 : 0;
}
