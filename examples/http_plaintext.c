/*
 * http_plaintext — an HTTP/1.1 server in the TechEmpower "plaintext" style, fit to face
 * real clients (curl, ab -k, wrk pipelined, browsers) and a hostile network.
 *
 *   build/examples/http_plaintext [ADDR] [--loops N] [--reuseport] [--header-timeout-ms MS]
 *                                 [--idle-timeout-ms MS] [--max-conns N] [--max-body BYTES]
 *                                 [--backend epoll|io_uring|auto]
 *
 * What it answers:
 *  - GET or HEAD /plaintext: 200 "Hello, World!" (text/plain); HEAD gets the headers only;
 *    a query string is ignored ("/plaintext?x=1" is /plaintext);
 *  - another method of RFC 9110 (POST, PUT, ...) on /plaintext: 405 with "Allow: GET,
 * HEAD";
 *  - any other path: 404; a method cgnet does not know (methods are case-sensitive, so
 *    "get" is one): 501;
 *  - a malformed request: 400; a body larger than --max-body: 413; a head over 8 KiB
 *    (including a line that never ends): 431; a transfer coding other than chunked: 501;
 *    a head not complete within --header-timeout-ms: 408. These close the conn.
 * Every response has Server and Date headers. The request parser (http_parser.c) says
 * exactly what it accepts; bodies (Content-Length or chunked) are skipped as they arrive,
 * never buffered whole.
 *
 * Persistence: HTTP/1.1 conns stay open unless the request says "Connection: close";
 * HTTP/1.0 conns close unless it says "Connection: keep-alive", and then the response
 * says "Connection: keep-alive" too. A response after which the conn closes says
 * "Connection: close"; the server then sends FIN and drains what the client still sends
 * for up to a second before closing (so the client reads the response instead of a
 * reset). An open conn with no byte in either direction for --idle-timeout-ms closes.
 * At most --max-conns conns are open (default: the descriptor limit less a margin);
 * more are closed at once.
 *
 * Speed: requests are parsed in place with no allocation; every response to one
 * pipelined batch is queued on the conn and leaves in one write when the loop flushes.
 * Each loop keeps its own copies of the responses with the Date header, rebuilt when the
 * second changes, so answering is one memcpy per request.
 *
 * SIGINT or SIGTERM stops it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cgnet.h"
#include "cgnet_tls.h"
#include "http_parser.h"

#define MAX_HEAD_BYTES (8 * 1024)
#define LINGER_MS 1000

static const char USAGE[] =
    "usage: http_plaintext [ADDR] [--loops N] [--reuseport] [--header-timeout-ms MS]\n"
    "                      [--idle-timeout-ms MS] [--max-conns N] [--max-body BYTES]\n"
    "                      [--backend epoll|io_uring|auto] [--cert FILE --key FILE]\n"
    "  ADDR                  tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, unix:///PATH,\n"
    "                        unix://@NAME, or tls://HOST:PORT (HTTPS, ALPN http/1.1;\n"
    "                        also tls4://, tls6://) (default tcp://127.0.0.1:8080; port\n"
    "                        0: a free one)\n"
    "  --cert FILE           the server certificate chain (PEM), for tls://\n"
    "  --key FILE            its private key (PEM)\n"
    "  --loops N             event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --multicore           the same as --loops 0\n"
    "  --reuseport           one SO_REUSEPORT listener per loop\n"
    "  --header-timeout-ms MS  close a conn whose request head is not complete MS after\n"
    "                        it began (or after connect, for the first) with 408\n"
    "                        (default 10000)\n"
    "  --idle-timeout-ms MS  close a conn with no traffic for MS (default 60000; 0: "
    "never)\n"
    "  --max-conns N         open conns at most (default: RLIMIT_NOFILE less a margin)\n"
    "  --max-body BYTES      largest request body, skipped unread (default 8388608)\n"
    "  --backend B           the kernel interface: epoll, io_uring or auto (default;\n"
    "                        the environment variable CGNET_BACKEND overrides it)\n"
    "GET or HEAD /plaintext answers \"Hello, World!\"; see the top of\n"
    "examples/http_plaintext.c for every other answer.\n";

/* ---- responses ----------------------------------------------------------------------- */

typedef enum resp_kind {
  RSP_OK,
  RSP_NOT_FOUND,
  RSP_NOT_ALLOWED,
  RSP_NOT_IMPLEMENTED,
  RSP_BAD_REQUEST,
  RSP_TIMEOUT,
  RSP_TOO_LARGE,
  RSP_HEADERS_TOO_LARGE,
  RSP_KINDS
} resp_kind;

static const struct {
  const char *status; /* status code and reason */
  const char *body;
  const char *extra; /* more header lines */
} RESP[RSP_KINDS] = {
    [RSP_OK] = {"200 OK", "Hello, World!", ""},
    [RSP_NOT_FOUND] = {"404 Not Found", "Not Found", ""},
    [RSP_NOT_ALLOWED] = {"405 Method Not Allowed", "Method Not Allowed",
                         "Allow: GET, HEAD\r\n"},
    [RSP_NOT_IMPLEMENTED] = {"501 Not Implemented", "Not Implemented", ""},
    [RSP_BAD_REQUEST] = {"400 Bad Request", "Bad Request", ""},
    [RSP_TIMEOUT] = {"408 Request Timeout", "Request Timeout", ""},
    [RSP_TOO_LARGE] = {"413 Content Too Large", "Content Too Large", ""},
    [RSP_HEADERS_TOO_LARGE] = {"431 Request Header Fields Too Large",
                               "Request Header Fields Too Large", ""},
};

/* How the response speaks of the conn's future. */
typedef enum conn_mode {
  M_DEFAULT,    /* HTTP/1.1 staying open: no Connection header */
  M_KEEP_ALIVE, /* HTTP/1.0 staying open: "Connection: keep-alive" */
  M_CLOSE,      /* closing after it: "Connection: close" */
  M_MODES
} conn_mode;

typedef struct response {
  size_t len;
  char bytes[256];
} response;

/* Per-loop responses, rebuilt when the second changes. Only that loop touches it. */
typedef struct loop_state {
  time_t date_sec;
  response r[RSP_KINDS][M_MODES][2]; /* [kind][mode][0: with body, 1: HEAD] */
} loop_state;

static loop_state *g_states; /* one per loop, made in on_boot */
static http_limits g_limits = {.max_head = MAX_HEAD_BYTES, .max_body = 8u << 20};
static uint64_t g_header_timeout_ms = 10000;

static void build_responses(loop_state *s, time_t now) {
  static const char *const conn_line[M_MODES] = {"", "Connection: keep-alive\r\n",
                                                 "Connection: close\r\n"};
  struct tm tm;
  char date[64];
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  for (int k = 0; k < RSP_KINDS; k++)
    for (int m = 0; m < M_MODES; m++) {
      response *full = &s->r[k][m][0], *head = &s->r[k][m][1];
      size_t body_len = strlen(RESP[k].body);
      int n = snprintf(full->bytes, sizeof full->bytes,
                       "HTTP/1.1 %s\r\nServer: cgnet\r\nContent-Type: text/plain\r\n"
                       "Content-Length: %zu\r\nDate: %s\r\n%s%s\r\n%s",
                       RESP[k].status, body_len, date, RESP[k].extra, conn_line[m],
                       RESP[k].body);
      full->len = n > 0 && (size_t)n < sizeof full->bytes ? (size_t)n : 0;
      head->len = full->len ? full->len - body_len : 0;
      memcpy(head->bytes, full->bytes, head->len);
    }
  s->date_sec = now;
}

static loop_state *state_of(cgnet_conn *c) {
  loop_state *s = &g_states[cgnet_loop_index(cgnet_conn_loop(c))];
  time_t now = time(NULL); /* vDSO: no syscall; one per wake-up, not per request */
  if (now != s->date_sec) build_responses(s, now);
  return s;
}

static cgnet_action on_boot(cgnet_engine *eng) {
  g_states = calloc((size_t)cgnet_engine_num_loops(eng), sizeof *g_states);
  if (!g_states) {
    fprintf(stderr, "http_plaintext: out of memory\n");
    return CGNET_SHUTDOWN;
  }
  return CGNET_NONE;
}

/* ---- conns --------------------------------------------------------------------------- */

typedef enum phase {
  PH_HEAD,   /* reading a request head (or waiting for one) */
  PH_BODY,   /* skipping a request body; the response goes out when it ends */
  PH_LINGER, /* answered and sent FIN: discard input until the client closes */
} phase;

typedef struct http_conn {
  phase phase;
  cgnet_timer *timer; /* header timeout (PH_HEAD), linger (PH_LINGER) */
  http_body_kind body;
  uint64_t body_left; /* HTTP_BODY_LENGTH */
  http_chunked chunked;
  resp_kind pending; /* the response to send once the body has been skipped */
  conn_mode pending_mode;
  int pending_head;
} http_conn;

/* Queue the response and, if it ends the conn, send FIN and linger. */
static cgnet_action respond(cgnet_conn *c, http_conn *hc, loop_state *s, resp_kind k,
                            conn_mode m, int head) {
  const response *r = &s->r[k][m][head];
  if (cgnet_conn_write(c, r->bytes, r->len) != 0) return CGNET_CLOSE;
  if (m != M_CLOSE) return CGNET_NONE;
  /* The FIN follows the queued responses. Reading goes on (discarding) so that what the
   * client sent meanwhile does not turn our close into a reset that destroys the
   * response before it reads it; the timer bounds how long. */
  hc->phase = PH_LINGER;
  if (cgnet_conn_shutdown_write(c) != 0) return CGNET_CLOSE;
  cgnet_timer_start(hc->timer, LINGER_MS, 0);
  return CGNET_NONE;
}

static resp_kind error_kind(http_result st) {
  switch (st) {
  case HTTP_CONTENT_TOO_LARGE:
    return RSP_TOO_LARGE;
  case HTTP_HEADERS_TOO_LARGE:
    return RSP_HEADERS_TOO_LARGE;
  case HTTP_NOT_IMPLEMENTED:
    return RSP_NOT_IMPLEMENTED;
  default:
    return RSP_BAD_REQUEST;
  }
}

static resp_kind route(const http_request *r) {
  if (r->method == HTTP_OTHER) return RSP_NOT_IMPLEMENTED;
  if (r->path_len == 10 && memcmp(r->path, "/plaintext", 10) == 0)
    return r->method == HTTP_GET || r->method == HTTP_HEAD ? RSP_OK : RSP_NOT_ALLOWED;
  return RSP_NOT_FOUND;
}

static http_result skip_body(http_conn *hc, const char *p, size_t n, size_t *used) {
  if (hc->body == HTTP_BODY_LENGTH) {
    size_t k = n < hc->body_left ? n : (size_t)hc->body_left;
    hc->body_left -= k;
    *used = k;
    return hc->body_left ? HTTP_INCOMPLETE : HTTP_OK;
  }
  return http_chunked_skip(&hc->chunked, p, n, g_limits.max_body, used);
}

/* Serve every complete request in buf[*off, len); *off ends past what was used. */
static cgnet_action serve(cgnet_conn *c, http_conn *hc, loop_state *s, const char *buf,
                          size_t len, size_t *off) {
  for (;;) {
    if (hc->phase == PH_BODY) {
      size_t used = 0;
      http_result st = skip_body(hc, buf + *off, len - *off, &used);
      *off += used;
      if (st == HTTP_INCOMPLETE) return CGNET_NONE;
      if (st != HTTP_OK) return respond(c, hc, s, error_kind(st), M_CLOSE, 0);
      hc->phase = PH_HEAD;
      cgnet_action a = respond(c, hc, s, hc->pending, hc->pending_mode, hc->pending_head);
      if (a != CGNET_NONE || hc->phase != PH_HEAD) return a;
    }
    if (*off == len) return CGNET_NONE;
    http_request r;
    http_result st = http_parse_request(buf + *off, len - *off, &g_limits, &r);
    if (st == HTTP_INCOMPLETE) return CGNET_NONE;
    if (st != HTTP_OK) return respond(c, hc, s, error_kind(st), M_CLOSE, 0);
    *off += r.head_len;
    resp_kind k = route(&r);
    conn_mode m = !r.keep_alive ? M_CLOSE : r.minor_version == 0 ? M_KEEP_ALIVE : M_DEFAULT;
    int head = r.method == HTTP_HEAD;
    if (r.body != HTTP_BODY_NONE) { /* answer once the body is gone: order is kept */
      hc->phase = PH_BODY;
      hc->body = r.body;
      hc->body_left = r.content_length;
      http_chunked_init(&hc->chunked);
      hc->pending = k;
      hc->pending_mode = m;
      hc->pending_head = head;
      continue;
    }
    cgnet_action a = respond(c, hc, s, k, m, head);
    if (a != CGNET_NONE || hc->phase != PH_HEAD) return a;
  }
}

static cgnet_action on_traffic(cgnet_conn *c) {
  http_conn *hc = cgnet_conn_context(c);
  const uint8_t *data;
  size_t len = cgnet_conn_peek(c, 0, &data), off = 0;
  if (!hc) return CGNET_CLOSE;
  if (hc->phase == PH_LINGER) {
    cgnet_conn_discard(c, len);
    return CGNET_NONE;
  }
  cgnet_action a = serve(c, hc, state_of(c), (const char *)data, len, &off);
  cgnet_conn_discard(c, hc->phase == PH_LINGER ? len : off);
  /* The header timeout runs while part of a head is buffered (or since connect, for
   * the first request) and is not restarted by more bytes of the same head, so a client
   * trickling a head byte by byte is still cut off. A body in progress and a conn
   * between requests fall under the idle timeout instead. */
  if (hc->phase == PH_HEAD && off < len) {
    if (!cgnet_timer_active(hc->timer))
      cgnet_timer_start(hc->timer, g_header_timeout_ms, 0);
  } else if (hc->phase != PH_LINGER && cgnet_timer_active(hc->timer)) {
    cgnet_timer_stop(hc->timer);
  }
  return a;
}

/* The header timeout or the linger time ran out. */
static cgnet_action on_timer(cgnet_timer *t, void *ud) {
  http_conn *hc = ud;
  cgnet_conn *c = cgnet_timer_conn(t);
  if (hc->phase == PH_HEAD && cgnet_conn_inbound_buffered(c) > 0) {
    cgnet_action a = respond(c, hc, state_of(c), RSP_TIMEOUT, M_CLOSE, 0);
    cgnet_conn_discard(c, cgnet_conn_inbound_buffered(c));
    return a;
  }
  return CGNET_CLOSE; /* nothing sent yet, or lingered long enough */
}

static cgnet_action on_open(cgnet_conn *c) {
  http_conn *hc = calloc(1, sizeof *hc);
  if (!hc) return CGNET_CLOSE;
  hc->timer = cgnet_conn_timer_new(c, on_timer, hc);
  if (!hc->timer) {
    free(hc);
    return CGNET_CLOSE;
  }
  cgnet_conn_set_context(c, hc);
  cgnet_timer_start(hc->timer, g_header_timeout_ms, 0); /* for the first request */
  return CGNET_NONE;
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  (void)reason;
  free(cgnet_conn_context(c)); /* the timer goes with the conn */
  return CGNET_NONE;
}

/* ---- main ---------------------------------------------------------------------------- */

/* Room for what is not a conn: stdio, each loop's epoll, eventfd and timer descriptors,
 * listeners, and what the system libraries open. */
static size_t default_max_conns(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 0;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  rlim_t margin = 64 + 4 * (rlim_t)(cpus > 0 ? cpus : 1);
  return rl.rlim_cur > 2 * margin ? (size_t)(rl.rlim_cur - margin)
                                  : (size_t)rl.rlim_cur / 2;
}

int main(int argc, char **argv) {
  const char *addr = "tcp://127.0.0.1:8080";
  cgnet_options o = {.idle_timeout_ms = 60000};
  ex_args a;
  ex_args_init(&a, "http_plaintext", USAGE, argc, argv);
  int have_addr = 0;
  /* Over TLS it says which protocol it speaks (ALPN), so that a client offering h2 and
   * http/1.1 (h2load, browsers) knows to use HTTP/1.1. */
  static const char *const alpn[] = {"http/1.1", NULL};
  ex_tls tls = {.alpn = alpn};
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_tls_arg(&a, arg, &tls)) {
      continue;
    } else if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, &o);
    } else if (ex_is(arg, "--backend")) {
      ex_backend(&a, arg, &o);
    } else if (ex_is(arg, "--multicore")) {
      o.num_loops = 0;
      o.multicore = 1;
    } else if (ex_is(arg, "--reuseport")) {
      o.reuse_port = 1;
    } else if (ex_is(arg, "--header-timeout-ms")) {
      g_header_timeout_ms = ex_u64(&a, arg, 1, 3600000);
    } else if (ex_is(arg, "--idle-timeout-ms")) {
      o.idle_timeout_ms = ex_u64(&a, arg, 0, 86400000);
    } else if (ex_is(arg, "--max-conns")) {
      o.max_connections = (size_t)ex_u64(&a, arg, 1, 100000000);
    } else if (ex_is(arg, "--max-body")) {
      g_limits.max_body = ex_u64(&a, arg, 0, UINT64_MAX - 1);
    } else if (!ex_address_arg(arg, &addr, &have_addr)) {
      ex_unknown(&a, arg);
    }
  }
  ex_check_addr(&a, "listen address", addr, EX_ADDR_TCP | EX_ADDR_UNIX | EX_ADDR_TLS,
                EX_LISTEN, "HTTP/1.1 needs a stream");
  ex_tls_server(&a, &tls, &addr, 1, &o);
  if (!o.max_connections) o.max_connections = default_max_conns();

  sigset_t set;
  ex_block_stop_signals(&set);
  cgnet_handler h = {.on_boot = on_boot,
                     .on_open = on_open,
                     .on_traffic = on_traffic,
                     .on_close = on_close};
  cgnet_engine *eng;
  int err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  cgnet_tls_ctx_free(o.tls); /* the engine holds its own */
  if (err) {
    fprintf(stderr, "http_plaintext: %s: %s\n", addr, cgnet_strerror(err));
    return 1;
  }
  if (!g_states) { /* on_boot failed and stopped the engine */
    cgnet_engine_wait(eng);
    cgnet_engine_free(eng);
    return 1;
  }
  ex_print_listening("http_plaintext", eng, &addr, NULL);
  int sig;
  sigwait(&set, &sig);
  cgnet_engine_stop(eng, 1000);
  err = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  free(g_states);
  return err ? 1 : 0;
}
