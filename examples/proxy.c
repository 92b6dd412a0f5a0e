/*
 * proxy — a TCP proxy: every client connection gets its own backend connection, and
 * bytes flow both ways with backpressure.
 *
 *   build/examples/proxy LISTEN_ADDR BACKEND_ADDR [--loops N] [--quiet] [--et]
 *                        [--cert FILE --key FILE] [--ca FILE | --insecure]
 *
 * Both addresses are stream addresses: tcp://, tcp4://, tcp6://, tls:// or unix://. udp://
 * is refused at start on either side (a datagram has no conn to pair with a backend conn,
 * and a stream cannot be cut back into the sender's datagrams). The backend address is
 * checked when the proxy starts (scheme, host syntax, port 1..65535); a host name in it
 * is resolved at each dial.
 *
 *   build/examples/echo tcp://127.0.0.1:9000 &
 *   build/examples/proxy tcp://127.0.0.1:8000 tcp://127.0.0.1:9000 --loops 2
 *
 * The first line on stdout names the port actually bound (LISTEN_ADDR may use port 0):
 *
 *   proxy: listening on tcp://127.0.0.1:8000 (2 loops, backend tcp://127.0.0.1:9000)
 *
 * How it works. The server's on_open dials the backend through a client that runs on
 * the server's own loops; a dial made on a loop thread stays on that loop, so the two
 * conns of a pair share one thread and forward to each other with plain calls, no locks.
 * Backpressure: when one side's queued output passes its high watermark, the other side
 * stops reading (cgnet_conn_pause_read) until it drains below the low watermark
 * (on_writable_changed), so a client that never reads costs the proxy at most about one
 * high watermark per direction, however much the backend sends. A FIN is passed on as
 * a FIN after the queued bytes (half-close); an error on one side closes the other.
 *
 * TLS. A tls:// LISTEN_ADDR (with --cert and --key) terminates TLS in front of a plain
 * backend; a tls:// BACKEND_ADDR is dialed over TLS, verified against the system's CAs
 * or --ca FILE (--insecure: not at all):
 *
 *   build/examples/proxy tls://127.0.0.1:8443 tcp://127.0.0.1:9000 --cert c.pem --key k.pem
 *
 * SIGINT or SIGTERM stops it.
 */
#include <cgnet.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cgnet_tls.h"

/* Both conns of a pair point at it (their context); freed when both have closed. */
typedef struct pair {
  cgnet_conn *front; /* the client's conn, accepted by the server */
  cgnet_conn *back;  /* our conn to the backend; NULL until dialed and after its close */
  int sides;         /* conns of the pair not yet closed */
} pair;

static cgnet_client *g_backends;
static const char *g_backend_addr;
static cgnet_options g_opts = {.allow_half_open = 1};
/* The backend client's: the same, with its own TLS context (set in main). */
static cgnet_options g_back_opts;
static int g_quiet;

/* The other conn of c's pair; NULL when it is gone, or when c has no pair (front_open
 * failed before making one). */
static cgnet_conn *peer_of(cgnet_conn *c) {
  pair *p = cgnet_conn_context(c);
  if (!p) return NULL;
  return c == p->front ? p->back : p->front;
}

/* ---- callbacks shared by both sides -------------------------------------------------- */

/* Forward what arrived to the other side; stop reading while the other side is full. */
static cgnet_action on_traffic(cgnet_conn *c) {
  cgnet_conn *peer = peer_of(c);
  const uint8_t *data;
  size_t n = cgnet_conn_next(c, 0, &data);
  if (!peer) return CGNET_CLOSE; /* the other side is gone */
  if (n && cgnet_conn_write(peer, data, n) != 0) return CGNET_CLOSE;
  if (!cgnet_conn_writable(peer)) cgnet_conn_pause_read(c);
  return CGNET_NONE;
}

/* c's output crossed a watermark: the side that feeds it pauses or resumes. */
static void on_writable_changed(cgnet_conn *c, int writable) {
  cgnet_conn *peer = peer_of(c);
  if (!peer) return;
  if (writable)
    cgnet_conn_resume_read(peer);
  else
    cgnet_conn_pause_read(peer);
}

/* c's peer sent FIN: pass it on once what c sent before it has been written. */
static cgnet_action on_read_closed(cgnet_conn *c) {
  cgnet_conn *peer = peer_of(c);
  if (!peer || cgnet_conn_shutdown_write(peer) != 0) return CGNET_CLOSE;
  return CGNET_NONE;
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  pair *p = cgnet_conn_context(c);
  if (!p) return CGNET_NONE; /* front_open could not make a pair */
  cgnet_conn *peer = peer_of(c);
  int is_front = c == p->front;
  if (is_front)
    p->front = NULL;
  else
    p->back = NULL;
  if (peer) {
    /* A clean end (both directions finished) lets the other side finish writing and
     * then send its FIN; anything else ends it at once. */
    if (reason == CGNET_EOF)
      (void)cgnet_conn_shutdown_write(peer);
    else
      (void)cgnet_conn_close(peer);
  }
  if (!g_quiet && reason != CGNET_EOF && reason != CGNET_ESHUTDOWN &&
      reason != CGNET_ELOCALCLOSE)
    fprintf(stderr, "proxy: %s side closed: %s\n", is_front ? "client" : "backend",
            cgnet_strerror(reason));
  if (--p->sides == 0) free(p);
  return CGNET_NONE;
}

/* ---- the client side (server conns) ---------------------------------------------------
 */

static cgnet_action front_open(cgnet_conn *c) {
  pair *p = calloc(1, sizeof *p);
  if (!p) return CGNET_CLOSE;
  p->front = c;
  p->sides = 1;
  cgnet_conn_set_context(c, p);
  cgnet_conn *back;
  int err = cgnet_client_dial(g_backends, g_backend_addr, 5000, p, &back);
  if (err) {
    if (!g_quiet) fprintf(stderr, "proxy: dial: %s\n", cgnet_strerror(err));
    return CGNET_CLOSE; /* on_close frees p */
  }
  /* Same loop as c (we are on its thread), so the pointer is ours to use until its
   * on_close; the reference is not needed. */
  cgnet_conn_unref(back);
  p->back = back;
  p->sides = 2;
  cgnet_conn_pause_read(c); /* nowhere to forward to until the backend answers */
  return CGNET_NONE;
}

/* ---- the backend side (client conns) --------------------------------------------------
 */

static cgnet_action back_open(cgnet_conn *c) {
  pair *p = cgnet_conn_context(c);
  if (p->front) cgnet_conn_resume_read(p->front);
  return CGNET_NONE;
}

/* The engine is bound and its loops are about to start: make the backend client on
 * them now, so it exists before the first on_open. */
static cgnet_handler g_back_handler;
static cgnet_action on_boot(cgnet_engine *eng) {
  int err = cgnet_client_new_on(eng, &g_back_handler, &g_back_opts, &g_backends);
  if (err) {
    fprintf(stderr, "proxy: client: %s\n", cgnet_strerror(err));
    return CGNET_SHUTDOWN;
  }
  return CGNET_NONE;
}

/* ---- main ------------------------------------------------------------------------------
 */

static const char USAGE[] =
    "usage: proxy LISTEN_ADDR BACKEND_ADDR [--loops N] [--quiet]\n"
    "  LISTEN_ADDR  where clients connect: tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT,\n"
    "               unix:///PATH or unix://@NAME (port 0: a free one)\n"
    "  BACKEND_ADDR where each client's bytes go: the same forms, with a port\n"
    "               (udp:// is refused on either side: the proxy pairs streams)\n"
    "  --loops N    event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --quiet      no line when a conn closes with an error\n"
    "  --et         edge-triggered epoll (no epoll_ctl when a side pauses or resumes)\n"
    "  --cert FILE  a tls:// LISTEN_ADDR's certificate chain (PEM); --key FILE its key\n"
    "  --ca FILE    a tls:// BACKEND_ADDR is verified against these CAs (PEM; default:\n"
    "               the system's); --insecure: not verified\n"
    "  e.g. proxy tcp://127.0.0.1:8000 tcp://127.0.0.1:9000 --loops 2\n";

int main(int argc, char **argv) {
  cgnet_options *o = &g_opts;
  const char *addrs[2];
  int naddrs = 0;
  ex_args a;
  ex_args_init(&a, "proxy", USAGE, argc, argv);
  ex_tls tls = {0};
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_tls_arg(&a, arg, &tls))
      continue;
    else if (ex_is(arg, "--loops"))
      ex_loops(&a, arg, o);
    else if (ex_is(arg, "--quiet"))
      g_quiet = 1;
    else if (ex_is(arg, "--et"))
      o->edge_triggered = 1;
    else if (arg[0] != '-' && naddrs < 2)
      addrs[naddrs++] = arg;
    else
      ex_unknown(&a, arg);
  }
  if (naddrs != 2) ex_usage_error(&a, "needs LISTEN_ADDR and BACKEND_ADDR");
  static const char why[] = "the proxy pairs stream conns";
  const int streams = EX_ADDR_TCP | EX_ADDR_UNIX | EX_ADDR_TLS;
  ex_check_addr(&a, "listen address", addrs[0], streams, EX_LISTEN, why);
  ex_check_addr(&a, "backend address", addrs[1], streams, EX_DIAL, why);
  ex_tls_server(&a, &tls, &addrs[0], 1, o);
  g_back_opts = *o;
  g_back_opts.tls = NULL; /* the backend client's own, if any */
  ex_tls_client(&tls, "proxy", &g_back_opts);
  g_backend_addr = addrs[1];

  sigset_t set;
  ex_block_stop_signals(&set); /* every thread started below inherits the mask */

  cgnet_handler front = {.on_boot = on_boot,
                         .on_open = front_open,
                         .on_traffic = on_traffic,
                         .on_close = on_close,
                         .on_writable_changed = on_writable_changed,
                         .on_read_closed = on_read_closed};
  g_back_handler = front;
  g_back_handler.on_boot = NULL;
  g_back_handler.on_open = back_open;

  cgnet_engine *eng;
  int err = cgnet_engine_start(&front, &addrs[0], 1, o, &eng);
  cgnet_tls_ctx_free(o->tls); /* the engine and the client hold their own */
  cgnet_tls_ctx_free(g_back_opts.tls);
  if (err) {
    fprintf(stderr, "proxy: %s: %s\n", addrs[0], cgnet_strerror(err));
    if (g_backends) cgnet_client_free(g_backends, 0); /* the client before its engine */
    if (eng) cgnet_engine_free(eng);
    return 1;
  }
  if (!g_backends) { /* on_boot failed and stopped the engine */
    cgnet_engine_wait(eng);
    cgnet_engine_free(eng);
    return 1;
  }
  char backend[300];
  snprintf(backend, sizeof backend, "backend %s", g_backend_addr);
  ex_print_listening("proxy", eng, addrs, backend);

  int sig;
  sigwait(&set, &sig);
  cgnet_engine_stop(eng, 1000); /* closes both sides of every pair */
  err = cgnet_engine_wait(eng);
  cgnet_client_free(g_backends, 0);
  cgnet_engine_free(eng);
  return err ? 1 : 0;
}
