/*
 * ws_echo — a WebSocket echo server: every message comes back as it came (text as text,
 * binary as binary), on any path; pings are answered by cgnet.
 *
 *   build/examples/ws_echo [ADDR] [--loops N] [--max-message BYTES] [--no-deflate]
 *                          [--backend epoll|io_uring|auto] [--quiet]
 *                          [--cert FILE --key FILE]
 *
 * ADDR is tcp://HOST:PORT, tcp4://, tcp6://, unix:// or tls:// (wss://, with --cert and
 * --key) (default tcp://127.0.0.1:9001; port 0 picks a free port, named on the first
 * stdout line: "ws_echo: listening on tcp://127.0.0.1:41234 (1 loop, epoll)").
 *
 * Try it:  build/examples/ws_echo &
 *          python3 -m websockets ws://127.0.0.1:9001/
 * SIGINT or SIGTERM stops it: every open WebSocket is sent a close frame with 1001
 * (going away) and given up to a second to finish its close handshake.
 */
#include <cgnet.h>
#include <cgnet_tls.h>
#include <cgnet_ws.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "args.h"

static int quiet; /* --quiet: no line per WebSocket */

static cgnet_action on_ws_open(cgnet_conn *c) {
  if (!quiet) fprintf(stderr, "ws_echo: open  %s\n", cgnet_conn_remote_addr_string(c));
  return CGNET_NONE;
}

/* Send the message back as it came; a send that fails (the peer does not read and the
 * output limit is reached) ends the WebSocket. */
static cgnet_action on_ws_message(cgnet_conn *c, cgnet_ws_opcode op, const uint8_t *data,
                                  size_t len) {
  int rc = op == CGNET_WS_TEXT ? cgnet_ws_send_text(c, (const char *)data, len)
                               : cgnet_ws_send_binary(c, data, len);
  return rc == 0 ? CGNET_NONE : CGNET_CLOSE;
}

static void on_ws_close(cgnet_conn *c, int code, const char *reason) {
  if (!quiet)
    fprintf(stderr, "ws_echo: close %s (%d%s%s)\n", cgnet_conn_remote_addr_string(c), code,
            reason[0] ? " " : "", reason);
}

static const char USAGE[] =
    "usage: ws_echo [ADDR] [--loops N] [--max-message BYTES] [--no-deflate]\n"
    "               [--backend epoll|io_uring|auto] [--quiet] [--cert FILE --key FILE]\n"
    "  ADDR             tcp://HOST:PORT, tcp4://..., tcp6://[::1]:PORT, unix:///PATH,\n"
    "                   unix://@NAME or tls://HOST:PORT (wss://; needs --cert and --key)\n"
    "                   (default tcp://127.0.0.1:9001; port 0: a free one)\n"
    "  --loops N        event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --max-message B  largest message accepted, 1..1073741824 bytes (default 1 MiB);\n"
    "                   a larger one closes the WebSocket with 1009\n"
    "  --no-deflate     decline permessage-deflate\n"
    "  --backend B      epoll, io_uring or auto (default; CGNET_BACKEND overrides it)\n"
    "  --quiet          no line per WebSocket\n"
    "  --cert FILE      the server certificate chain (PEM) for a tls:// address\n"
    "  --key FILE       its private key (PEM)\n";

static const char *parse_args(int argc, char **argv, cgnet_options *opts,
                              cgnet_ws_options *ws) {
  ex_args a;
  ex_args_init(&a, "ws_echo", USAGE, argc, argv);
  const char *addr = "tcp://127.0.0.1:9001";
  int have_addr = 0;
  ex_tls tls = {0};
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_tls_arg(&a, arg, &tls)) {
      continue;
    } else if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, opts);
    } else if (ex_is(arg, "--max-message")) {
      ws->max_message = (size_t)ex_u64(&a, arg, 1, (uint64_t)1 << 30);
    } else if (ex_is(arg, "--no-deflate")) {
      ws->deflate = CGNET_OFF;
    } else if (ex_is(arg, "--backend")) {
      ex_backend(&a, arg, opts);
    } else if (ex_is(arg, "--quiet")) {
      quiet = 1;
    } else if (ex_address_arg(arg, &addr, &have_addr)) {
      ex_check_addr(&a, "address", addr, EX_ADDR_TCP | EX_ADDR_UNIX | EX_ADDR_TLS,
                    EX_LISTEN, "WebSocket runs over streams");
    } else {
      ex_unknown(&a, arg);
    }
  }
  ex_tls_server(&a, &tls, &addr, 1, opts);
  return addr;
}

int main(int argc, char **argv) {
  cgnet_options opts = {0};
  cgnet_ws_options ws_opts = {0};
  const char *addr = parse_args(argc, argv, &opts, &ws_opts);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, NULL);

  const cgnet_ws_handler wsh = {
      .on_ws_open = on_ws_open,
      .on_ws_message = on_ws_message,
      .on_ws_close = on_ws_close,
  };
  cgnet_ws_server *ws;
  int err = cgnet_ws_server_new(&wsh, &ws_opts, &ws);
  if (err != 0) {
    fprintf(stderr, "ws_echo: %s\n", cgnet_strerror(err));
    return 1;
  }
  cgnet_handler handler;
  cgnet_ws_server_handler(ws, &handler);
  cgnet_engine *eng;
  err = cgnet_engine_start(&handler, &addr, 1, &opts, &eng);
  cgnet_tls_ctx_free(opts.tls); /* the engine holds its own */
  if (err != 0) {
    fprintf(stderr, "ws_echo: cannot start on %s: %s\n", addr, cgnet_strerror(err));
    cgnet_ws_server_free(ws);
    return 1;
  }
  ex_print_listening("ws_echo", eng, &addr, NULL);

  /* No callback stops the engine, so it runs until a signal (cgnet_engine_stop is not
   * async-signal-safe: the signal is taken here with sigwait, not in a handler). */
  int sig = 0;
  sigwait(&signals, &sig);
  cgnet_engine_stop(eng, 1000);
  cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  cgnet_ws_server_free(ws);
  return 0;
}
