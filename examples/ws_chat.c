/*
 * ws_chat — a chat room over WebSocket: every text message a member sends goes to every
 * member, on every loop. GET / serves a small HTML page that joins the room; the
 * WebSocket lives at /ws (any other path gets 404).
 *
 *   build/examples/ws_chat [ADDR] [--loops N] [--backend epoll|io_uring|auto] [--quiet]
 *                          [--cert FILE --key FILE]
 *
 * ADDR as for ws_echo (default tcp://127.0.0.1:9002). Open http://127.0.0.1:9002/ in two
 * browser tabs and talk (over tls://, open https://...: the page then joins over wss://).
 *
 * How a message reaches every loop: each loop keeps the list of its own members, touched
 * only by its thread. A message is copied once into a reference-counted block; the loop
 * that received it sends it to its members at once and hands the block to every other
 * loop with cgnet_loop_execute, where that loop's thread sends it to its members. No lock
 * is taken per member or per message. A member that does not read is cut off when its
 * output reaches the engine's write_buffer_limit (the send fails: it is closed with
 * 1008), so one slow member never holds the room's memory.
 */
#include <cgnet.h>
#include <cgnet_tls.h>
#include <cgnet_ws.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

#define MAX_LOOPS EX_MAX_LOOPS

static int quiet;

/* A member of the room: the conn and its place in its loop's list. */
typedef struct member {
  cgnet_conn *c;
  struct member *prev, *next;
} member;

/* Each loop's members, touched only on that loop's thread. */
static member *members[MAX_LOOPS];

/* One message on its way to every loop. */
typedef struct message {
  atomic_int refs;
  size_t len;
  char text[];
} message;

static void message_unref(message *m) {
  if (atomic_fetch_sub(&m->refs, 1) == 1) free(m);
}

/* Send m to every member of the calling loop. */
static void send_to_loop(int loop, const message *m) {
  for (member *p = members[loop], *next; p; p = next) {
    /* A send that fails may have closed the conn at once, and on_ws_close freed p: take
     * what is needed from p first. The conn itself stays valid until the loop's turn
     * ends. */
    next = p->next;
    cgnet_conn *c = p->c;
    if (cgnet_ws_send_text(c, m->text, m->len) != 0)
      cgnet_ws_close(c, CGNET_WS_CLOSE_POLICY, "too slow");
  }
}

static void deliver_task(cgnet_loop *loop, void *ud) {
  message *m = ud;
  send_to_loop(cgnet_loop_index(loop), m);
  message_unref(m);
}

static void broadcast(cgnet_conn *from, const uint8_t *text, size_t len) {
  cgnet_engine *eng = cgnet_conn_engine(from);
  int nloops = cgnet_engine_num_loops(eng);
  message *m = malloc(sizeof *m + len);
  if (!m) return;
  atomic_init(&m->refs, nloops);
  m->len = len;
  memcpy(m->text, text, len);
  int here = cgnet_loop_index(cgnet_conn_loop(from));
  for (int i = 0; i < nloops; i++) {
    if (i == here) continue;
    if (cgnet_loop_execute(cgnet_engine_loop(eng, i), deliver_task, m) != 0)
      message_unref(m); /* stopping: that loop will not run it */
  }
  send_to_loop(here, m);
  message_unref(m);
}

/* ---- WebSocket callbacks ------------------------------------------------------------- */

static int on_ws_handshake(cgnet_conn *c, const cgnet_ws_request *req, const char **proto) {
  (void)c;
  (void)proto;
  size_t len;
  const char *path = cgnet_ws_request_path(req, &len);
  return len == 3 && memcmp(path, "/ws", 3) == 0 ? 0 : 404;
}

static cgnet_action on_ws_open(cgnet_conn *c) {
  member *m = calloc(1, sizeof *m);
  if (!m) return CGNET_CLOSE;
  int loop = cgnet_loop_index(cgnet_conn_loop(c));
  m->c = c;
  m->next = members[loop];
  if (m->next) m->next->prev = m;
  members[loop] = m;
  cgnet_ws_set_context(c, m);
  if (!quiet) fprintf(stderr, "ws_chat: join  %s\n", cgnet_conn_remote_addr_string(c));
  return CGNET_NONE;
}

static cgnet_action on_ws_message(cgnet_conn *c, cgnet_ws_opcode op, const uint8_t *data,
                                  size_t len) {
  if (op != CGNET_WS_TEXT) return CGNET_NONE; /* a chat is text */
  broadcast(c, data, len);
  return CGNET_NONE;
}

static void on_ws_close(cgnet_conn *c, int code, const char *reason) {
  member *m = cgnet_ws_context(c);
  if (!m) return;
  int loop = cgnet_loop_index(cgnet_conn_loop(c));
  if (m->prev)
    m->prev->next = m->next;
  else
    members[loop] = m->next;
  if (m->next) m->next->prev = m->prev;
  free(m);
  if (!quiet)
    fprintf(stderr, "ws_chat: leave %s (%d%s%s)\n", cgnet_conn_remote_addr_string(c), code,
            reason[0] ? " " : "", reason);
}

/* ---- the page ----------------------------------------------------------------------- */

static const char PAGE[] =
    "<!doctype html>\n"
    "<html><head><meta charset=\"utf-8\"><title>cgnet chat</title></head>\n"
    "<body>\n"
    "<h1>cgnet chat</h1>\n"
    "<pre id=\"log\" style=\"height:20em;overflow:auto;border:1px solid #888\"></pre>\n"
    "<form id=\"f\"><input id=\"msg\" autocomplete=\"off\" size=\"60\" autofocus>"
    "<button>send</button></form>\n"
    "<script>\n"
    "const log = document.getElementById('log');\n"
    "const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') +\n"
    "                        location.host + '/ws');\n"
    "function show(t) { log.textContent += t + '\\n'; log.scrollTop = 1e9; }\n"
    "ws.onopen = () => show('[joined]');\n"
    "ws.onclose = (e) => show('[left: ' + e.code + ']');\n"
    "ws.onmessage = (e) => show(e.data);\n"
    "document.getElementById('f').onsubmit = (e) => {\n"
    "  e.preventDefault();\n"
    "  const m = document.getElementById('msg');\n"
    "  if (m.value) ws.send(m.value);\n"
    "  m.value = '';\n"
    "};\n"
    "</script>\n"
    "</body></html>\n";

static cgnet_action on_http_request(cgnet_conn *c, const cgnet_ws_request *req) {
  size_t len, mlen;
  const char *path = cgnet_ws_request_path(req, &len);
  const char *method = cgnet_ws_request_method(req, &mlen);
  int get = mlen == 3 && memcmp(method, "GET", 3) == 0;
  int root = len == 1 && path[0] == '/';
  char head[256];
  const char *body = root && get ? PAGE : "not found\n";
  size_t blen = strlen(body);
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                   root && get ? "200 OK" : "404 Not Found",
                   root && get ? "text/html; charset=utf-8" : "text/plain", blen);
  struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, blen}};
  return cgnet_conn_writev(c, iov, 2) == 0 ? CGNET_NONE : CGNET_CLOSE;
}

/* ---- main --------------------------------------------------------------------------- */

static const char USAGE[] =
    "usage: ws_chat [ADDR] [--loops N] [--backend epoll|io_uring|auto] [--quiet]\n"
    "               [--cert FILE --key FILE]\n"
    "  ADDR         tcp://HOST:PORT, tcp4://..., tcp6://[::1]:PORT, unix:///PATH,\n"
    "               unix://@NAME or tls://HOST:PORT (https:// and wss://; needs --cert\n"
    "               and --key) (default tcp://127.0.0.1:9002; port 0: a free one)\n"
    "  --loops N    event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --backend B  epoll, io_uring or auto (default; CGNET_BACKEND overrides it)\n"
    "  --quiet      no line per member joining or leaving\n"
    "  --cert FILE  the server certificate chain (PEM) for a tls:// address\n"
    "  --key FILE   its private key (PEM)\n";

static const char *parse_args(int argc, char **argv, cgnet_options *opts) {
  ex_args a;
  ex_args_init(&a, "ws_chat", USAGE, argc, argv);
  const char *addr = "tcp://127.0.0.1:9002";
  int have_addr = 0;
  ex_tls tls = {0};
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_tls_arg(&a, arg, &tls)) {
      continue;
    } else if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, opts);
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
  const char *addr = parse_args(argc, argv, &opts);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, NULL);

  const cgnet_ws_handler wsh = {
      .on_ws_handshake = on_ws_handshake,
      .on_http_request = on_http_request,
      .on_ws_open = on_ws_open,
      .on_ws_message = on_ws_message,
      .on_ws_close = on_ws_close,
  };
  cgnet_ws_server *ws;
  int err = cgnet_ws_server_new(&wsh, NULL, &ws);
  if (err != 0) {
    fprintf(stderr, "ws_chat: %s\n", cgnet_strerror(err));
    return 1;
  }
  cgnet_handler handler;
  cgnet_ws_server_handler(ws, &handler);
  cgnet_engine *engine;
  err = cgnet_engine_start(&handler, &addr, 1, &opts, &engine);
  cgnet_tls_ctx_free(opts.tls); /* the engine holds its own */
  if (err != 0) {
    fprintf(stderr, "ws_chat: cannot start on %s: %s\n", addr, cgnet_strerror(err));
    cgnet_ws_server_free(ws);
    return 1;
  }
  ex_print_listening("ws_chat", engine, &addr, NULL);

  /* Runs until a signal, taken here with sigwait (cgnet_engine_stop is not
   * async-signal-safe). */
  int sig = 0;
  sigwait(&signals, &sig);
  cgnet_engine_stop(engine, 1000);
  cgnet_engine_wait(engine);
  cgnet_engine_free(engine);
  cgnet_ws_server_free(ws);
  return 0;
}
