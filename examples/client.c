/*
 * client — connect N clients to an echo server and check every echoed byte.
 *
 *   build/examples/client ADDR [--conns N] [--bytes B] [--loops N] [--timeout MS]
 *                         [--ca FILE | --insecure]
 *
 *   build/examples/echo tcp://127.0.0.1:9000 &
 *   build/examples/client tcp://127.0.0.1:9000 --conns 10 --bytes 1048576 --loops 2
 *
 * Each conn sends B bytes of a pattern of its own, written as the socket takes them
 * (more is queued whenever the conn's output drains below the low watermark, the
 * on_writable_changed callback), and checks that the same bytes come back in order.
 * It closes once all B have returned. The last line says what happened, and the exit
 * status is 0 only if every conn got every byte back intact:
 *
 *   client: 10/10 conns echoed 1048576 bytes each, 0 bad bytes, 0 errors (123.4 MB/s)
 *
 * ADDR is a stream address (tcp://, tcp4://, tcp6://, tls://, unix://); udp:// is
 * refused at start: the check assumes every byte arrives, in order, which datagrams do
 * not promise. A tls:// server is verified against the system's CAs, or --ca FILE;
 * --insecure skips the check (for a self-signed test server only):
 *
 *   build/examples/echo tls://127.0.0.1:9443 --cert cert.pem --key key.pem &
 *   build/examples/client tls://localhost:9443 --ca cert.pem
 */
#include <cgnet.h>
#include <cgnet_tls.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"

#define CHUNK (64 * 1024)

typedef struct session {
  int id;
  size_t sent, received, bad;
  int done;   /* every byte came back */
  int reason; /* on_close's reason */
} session;

static size_t g_bytes = 1 << 20;
static atomic_int g_closed;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

/* Byte i of session id's pattern. */
static uint8_t pattern(int id, size_t i) {
  return (uint8_t)((i * 31u) ^ (i >> 8) ^ (unsigned)id * 7u);
}

/* Queue more of the payload while the conn welcomes writes. */
static void send_more(cgnet_conn *c, session *s) {
  uint8_t buf[CHUNK];
  while (s->sent < g_bytes && cgnet_conn_writable(c)) {
    size_t n = g_bytes - s->sent < CHUNK ? g_bytes - s->sent : CHUNK;
    for (size_t i = 0; i < n; i++)
      buf[i] = pattern(s->id, s->sent + i);
    if (cgnet_conn_write(c, buf, n) != 0) return;
    s->sent += n;
  }
}

static cgnet_action on_open(cgnet_conn *c) {
  send_more(c, cgnet_conn_context(c));
  return CGNET_NONE;
}

static void on_writable_changed(cgnet_conn *c, int writable) {
  if (writable) send_more(c, cgnet_conn_context(c));
}

static cgnet_action on_traffic(cgnet_conn *c) {
  session *s = cgnet_conn_context(c);
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  for (size_t i = 0; i < n; i++)
    if (p[i] != pattern(s->id, s->received + i)) s->bad++;
  s->received += n;
  if (s->received >= g_bytes) {
    s->done = 1;
    return CGNET_CLOSE;
  }
  send_more(c, s);
  return CGNET_NONE;
}

/* A tls:// dial whose handshake failed: say why (on_close follows with the code). */
static void on_tls_error(cgnet_conn *c, int code, const char *reason) {
  session *s = cgnet_conn_context(c);
  fprintf(stderr, "client: conn %d: TLS handshake failed: %s (%s)\n", s->id, reason,
          cgnet_err_name(code));
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  session *s = cgnet_conn_context(c);
  s->reason = reason;
  if (!s->done)
    fprintf(stderr, "client: conn %d closed after %zu/%zu bytes: %s\n", s->id, s->received,
            g_bytes, cgnet_strerror(reason));
  pthread_mutex_lock(&g_mu);
  atomic_fetch_add(&g_closed, 1);
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
  return CGNET_NONE;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until n conns have closed or the deadline passes; returns how many closed. */
static int wait_closed(int n, double deadline) {
  pthread_mutex_lock(&g_mu);
  while (atomic_load(&g_closed) < n && now_s() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&g_cv, &g_mu, &ts);
  }
  int closed = atomic_load(&g_closed);
  pthread_mutex_unlock(&g_mu);
  return closed;
}

static const char USAGE[] =
    "usage: client ADDR [--conns N] [--bytes B] [--loops N] [--timeout MS]\n"
    "              [--ca FILE | --insecure]\n"
    "  ADDR          the echo server: tcp://HOST:PORT, tcp6://[::1]:PORT, "
    "tls://HOST:PORT,\n"
    "                unix:///PATH or unix://@NAME (not udp://: the check needs every\n"
    "                byte in order)\n"
    "  --ca FILE     tls://: trust the CAs in FILE (PEM) instead of the system's\n"
    "  --insecure    tls://: do not verify the server (self-signed tests only)\n"
    "  --conns N     concurrent conns, 1..100000 (default 10)\n"
    "  --bytes B     bytes each conn sends and expects back, 1..2^40 (default 1048576)\n"
    "  --loops N     client event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --timeout MS  give up after this long, 1..86400000 (default 30000)\n";

int main(int argc, char **argv) {
  const char *addr = NULL;
  long conns = 10, timeout_ms = 30000;
  cgnet_options o = {0};
  ex_args a;
  ex_args_init(&a, "client", USAGE, argc, argv);
  ex_tls tls = {0};
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_tls_arg(&a, arg, &tls) && !tls.cert && !tls.key)
      continue;
    else if (tls.cert || tls.key)
      ex_usage_error(&a, "--cert and --key are for servers");
    else if (ex_is(arg, "--conns"))
      conns = (long)ex_u64(&a, arg, 1, 100000);
    else if (ex_is(arg, "--bytes"))
      g_bytes = (size_t)ex_u64(&a, arg, 1, (uint64_t)1 << 40);
    else if (ex_is(arg, "--loops"))
      ex_loops(&a, arg, &o);
    else if (ex_is(arg, "--timeout"))
      timeout_ms = (long)ex_u64(&a, arg, 1, 86400000);
    else if (arg[0] != '-' && !addr)
      addr = arg;
    else
      ex_unknown(&a, arg);
  }
  if (!addr) ex_usage_error(&a, "the server's ADDR is required");
  ex_check_addr(&a, "server address", addr, EX_ADDR_TCP | EX_ADDR_UNIX | EX_ADDR_TLS,
                EX_DIAL, "the check needs every byte, in order");
  if (tls.ca && tls.insecure) ex_usage_error(&a, "--ca and --insecure exclude each other");
  ex_tls_client(&tls, "client", &o);

  session *sessions = calloc((size_t)conns, sizeof *sessions);
  cgnet_handler h = {.on_open = on_open,
                     .on_traffic = on_traffic,
                     .on_close = on_close,
                     .on_writable_changed = on_writable_changed,
                     .on_tls_error = on_tls_error};
  cgnet_client *cl;
  int err = sessions ? cgnet_client_new(&h, &o, &cl) : CGNET_ENOMEM;
  cgnet_tls_ctx_free(o.tls); /* the client holds its own */
  if (err) {
    fprintf(stderr, "client: %s\n", cgnet_strerror(err));
    return 1;
  }

  double t0 = now_s();
  int dialed = 0, errors = 0;
  for (long i = 0; i < conns; i++) {
    sessions[i].id = (int)i;
    err = cgnet_client_dial(cl, addr, (uint64_t)timeout_ms, &sessions[i], NULL);
    if (err) {
      fprintf(stderr, "client: dial %s: %s\n", addr, cgnet_strerror(err));
      errors++;
      break;
    }
    dialed++;
  }
  int closed = wait_closed(dialed, t0 + (double)timeout_ms / 1000.0);
  double secs = now_s() - t0;
  cgnet_client_free(cl, 0); /* closes whatever is left; on_close has run for all */

  int ok = 0;
  size_t bad = 0;
  for (int i = 0; i < dialed; i++) {
    bad += sessions[i].bad;
    if (sessions[i].done && sessions[i].bad == 0)
      ok++;
    else if (!sessions[i].done)
      errors++;
  }
  if (closed < dialed) fprintf(stderr, "client: timed out after %.1f s\n", secs);
  printf(
      "client: %d/%ld conns echoed %zu bytes each, %zu bad bytes, %d errors (%.1f MB/s)\n",
      ok, conns, g_bytes, bad, errors,
      secs > 0 ? (double)ok * (double)g_bytes * 2 / secs / 1e6 : 0.0);
  free(sessions);
  return ok == conns ? 0 : 1;
}
