/*
 * http_plaintext — a pipelined HTTP/1.1 server in the TechEmpower "plaintext" style.
 *
 *   build/examples/http_plaintext [ADDR] [--loops N | --multicore] [--reuseport]
 *
 * GET (or HEAD) /plaintext answers "Hello, World!" as text/plain with Server and Date
 * headers; any other path gets 404. Requests are parsed for real: the request line, the
 * headers (Content-Length bodies are skipped, Connection: close is honoured, HTTP/1.0
 * closes unless it asks for keep-alive), a request split across reads waits for the rest,
 * a malformed request gets 400 and the conn closes, headers over 8 KiB get 431.
 *
 * Every response to one pipelined batch is queued on the conn and leaves in one write
 * when the loop flushes (cgnet writes before it sleeps). Each loop keeps its own copy of
 * the responses with the Date header, refreshed once a second by a loop timer, so the hot
 * path is one memcpy per request.
 */
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cgnet.h"

#define MAX_HEADER_BYTES (8 * 1024)
#define MAX_BODY_BYTES (1024 * 1024)
#define MAX_LOOPS 1024

/* Per-loop responses, rebuilt each second with a fresh Date. Only that loop touches it. */
typedef struct loop_state {
  char date[40]; /* "Wed, 25 Nov 2026 17:20:00 GMT" */
  char ok[256];
  size_t ok_len;
  char ok_head[256]; /* for HEAD: the same headers, no body */
  size_t ok_head_len;
  char not_found[256];
  size_t not_found_len;
} loop_state;

static loop_state g_states[MAX_LOOPS];

static void build_responses(loop_state *s) {
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  static const char body[] = "Hello, World!";
  int n = snprintf(s->ok, sizeof s->ok,
                   "HTTP/1.1 200 OK\r\nServer: cgnet\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\nDate: %s\r\n\r\n%s",
                   sizeof body - 1, s->date, body);
  s->ok_len = (size_t)n;
  s->ok_head_len = s->ok_len - (sizeof body - 1);
  memcpy(s->ok_head, s->ok, s->ok_head_len);
  n = snprintf(s->not_found, sizeof s->not_found,
               "HTTP/1.1 404 Not Found\r\nServer: cgnet\r\nContent-Type: text/plain\r\n"
               "Content-Length: 9\r\nDate: %s\r\n\r\nNot Found",
               s->date);
  s->not_found_len = (size_t)n;
}

static cgnet_action refresh_date(cgnet_timer *t, void *ud) {
  (void)t;
  build_responses(ud);
  return CGNET_NONE;
}

/* Runs on each loop once at start: its own responses and its own 1 s timer. */
static void setup_loop(cgnet_loop *loop, void *ud) {
  loop_state *s = ud;
  build_responses(s);
  cgnet_timer *t = cgnet_timer_new(loop, refresh_date, s);
  if (t) cgnet_timer_start(t, 1000, 1000);
}

static cgnet_action on_boot(cgnet_engine *eng) {
  int n = cgnet_engine_num_loops(eng);
  for (int i = 0; i < n && i < MAX_LOOPS; i++)
    cgnet_loop_execute(cgnet_engine_loop(eng, i), setup_loop, &g_states[i]);
  return CGNET_NONE;
}

/* ---- request parsing ----------------------------------------------------------------- */

typedef enum {
  REQ_INCOMPLETE,
  REQ_OK,
  REQ_BAD,
  REQ_TOO_LARGE,
  REQ_BODY_TOO_LARGE
} req_status;

typedef struct request {
  const char *path;
  size_t path_len;
  int is_head;
  int keep_alive;
  size_t total_len; /* request line + headers + body */
} request;

/* RFC 9110 tchar, as a table: the parser looks up every byte of every method and
 * header name, so this must cost one load, not a strchr. */
static const uint8_t TCHAR[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int token_char(int c) {
  return TCHAR[c & 0xff];
}

static int name_is(const char *p, size_t len, const char *name) {
  return strlen(name) == len && strncasecmp(p, name, len) == 0;
}

/* Does a comma-separated header value contain `token` (case-insensitive)? */
static int value_has(const char *v, size_t len, const char *token) {
  size_t tl = strlen(token);
  for (size_t i = 0; i + tl <= len; i++)
    if (strncasecmp(v + i, token, tl) == 0) return 1;
  return 0;
}

static req_status parse_request_line(const char *p, size_t len, request *r, int *minor) {
  const char *sp1 = memchr(p, ' ', len);
  if (!sp1 || sp1 == p) return REQ_BAD;
  for (const char *m = p; m < sp1; m++)
    if (!token_char((unsigned char)*m)) return REQ_BAD;
  const char *path = sp1 + 1;
  const char *sp2 = memchr(path, ' ', len - (size_t)(path - p));
  if (!sp2 || sp2 == path || *path != '/') return REQ_BAD;
  const char *ver = sp2 + 1;
  size_t vlen = len - (size_t)(ver - p);
  if (vlen != 8 || memcmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '0' && ver[7] != '1'))
    return REQ_BAD;
  *minor = ver[7] - '0';
  r->is_head = (sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0);
  r->path = path;
  r->path_len = (size_t)(sp2 - path);
  return REQ_OK;
}

static req_status parse_content_length(const char *v, size_t len, size_t *out) {
  if (len == 0) return REQ_BAD;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (!isdigit((unsigned char)v[i])) return REQ_BAD;
    n = n * 10 + (size_t)(v[i] - '0');
    if (n > MAX_BODY_BYTES) return REQ_BODY_TOO_LARGE;
  }
  *out = n;
  return REQ_OK;
}

/* The next line of the head: [p, *eol) without its CRLF. REQ_INCOMPLETE when no LF has
 * arrived yet, REQ_BAD for a bare LF. */
static req_status next_line(const char *p, const char *end, const char **eol) {
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (!nl) return REQ_INCOMPLETE;
  if (nl == p || nl[-1] != '\r') return REQ_BAD;
  *eol = nl - 1;
  return REQ_OK;
}

/* One header line [p, eol): check the name, act on the three headers that matter. */
static req_status parse_header(const char *p, const char *eol, request *r, size_t *body,
                               int *have_length) {
  const char *colon = p;
  while (colon < eol && TCHAR[(unsigned char)*colon])
    colon++;
  if (colon == p || colon == eol || *colon != ':') return REQ_BAD;
  const char *v = colon + 1, *ve = eol;
  while (v < ve && (*v == ' ' || *v == '\t'))
    v++;
  while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
    ve--;
  size_t nlen = (size_t)(colon - p), vlen = (size_t)(ve - v);
  switch (p[0] | 0x20) { /* cheap first-letter filter before the full comparisons */
  case 'c':
    if (name_is(p, nlen, "content-length")) {
      size_t n;
      req_status st = parse_content_length(v, vlen, &n);
      if (st != REQ_OK) return st;
      if (*have_length && n != *body) return REQ_BAD; /* conflicting lengths */
      *body = n;
      *have_length = 1;
    } else if (name_is(p, nlen, "connection")) {
      if (value_has(v, vlen, "close")) r->keep_alive = 0;
      if (value_has(v, vlen, "keep-alive")) r->keep_alive = 1;
    }
    break;
  case 't':
    if (name_is(p, nlen, "transfer-encoding"))
      return REQ_BAD; /* no chunked request bodies here: refuse rather than misframe */
    break;
  }
  return REQ_OK;
}

/* Parse one request at the start of buf, line by line in one pass. */
static req_status parse_request(const char *buf, size_t len, request *r) {
  const char *end = buf + (len < MAX_HEADER_BYTES + 2 ? len : MAX_HEADER_BYTES + 2);
  req_status incomplete = len > MAX_HEADER_BYTES ? REQ_TOO_LARGE : REQ_INCOMPLETE;
  const char *eol;
  req_status st = next_line(buf, end, &eol);
  if (st != REQ_OK) return st == REQ_INCOMPLETE ? incomplete : st;
  int minor;
  if ((st = parse_request_line(buf, (size_t)(eol - buf), r, &minor)) != REQ_OK) return st;
  r->keep_alive = minor == 1;
  size_t body = 0;
  int have_length = 0;
  for (const char *p = eol + 2;; p = eol + 2) {
    st = next_line(p, end, &eol);
    if (st != REQ_OK) return st == REQ_INCOMPLETE ? incomplete : st;
    if (eol == p) { /* the empty line ends the head */
      r->total_len = (size_t)(eol + 2 - buf) + body;
      return len < r->total_len ? REQ_INCOMPLETE : REQ_OK;
    }
    if ((st = parse_header(p, eol, r, &body, &have_length)) != REQ_OK) return st;
  }
}

/* ---- the server ---------------------------------------------------------------------- */

static void reply_error(cgnet_conn *c, const char *status) {
  char buf[256];
  int n = snprintf(buf, sizeof buf,
                   "HTTP/1.1 %s\r\nServer: cgnet\r\nContent-Length: 0\r\n"
                   "Connection: close\r\n\r\n",
                   status);
  cgnet_conn_write(c, buf, (size_t)n);
}

static cgnet_action on_traffic(cgnet_conn *c) {
  loop_state *s = &g_states[cgnet_loop_index(cgnet_conn_loop(c)) % MAX_LOOPS];
  const uint8_t *data;
  size_t len = cgnet_conn_peek(c, 0, &data), off = 0;
  while (off < len) {
    request r;
    req_status st = parse_request((const char *)data + off, len - off, &r);
    if (st == REQ_INCOMPLETE) break;
    if (st != REQ_OK) {
      reply_error(c, st == REQ_TOO_LARGE        ? "431 Request Header Fields Too Large"
                     : st == REQ_BODY_TOO_LARGE ? "413 Content Too Large"
                                                : "400 Bad Request");
      cgnet_conn_discard(c, len);
      return CGNET_CLOSE;
    }
    off += r.total_len;
    if (r.path_len == 10 && memcmp(r.path, "/plaintext", 10) == 0)
      cgnet_conn_write(c, r.is_head ? s->ok_head : s->ok,
                       r.is_head ? s->ok_head_len : s->ok_len);
    else
      cgnet_conn_write(c, s->not_found, s->not_found_len);
    if (!r.keep_alive) {
      cgnet_conn_discard(c, len);
      return CGNET_CLOSE; /* queued responses are flushed before the close */
    }
  }
  cgnet_conn_discard(c, off);
  return CGNET_NONE;
}

/* ---- main ---------------------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr, "usage: http_plaintext [ADDR] [--loops N | --multicore] [--reuseport]\n"
                  "  ADDR defaults to tcp://127.0.0.1:8080\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *addr = "tcp://127.0.0.1:8080";
  cgnet_options o = {0};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--loops") == 0 && i + 1 < argc) {
      o.num_loops = atoi(argv[++i]);
      if (o.num_loops < 1 || o.num_loops > MAX_LOOPS) usage();
    } else if (strcmp(argv[i], "--multicore") == 0) {
      o.multicore = 1;
    } else if (strcmp(argv[i], "--reuseport") == 0) {
      o.reuse_port = 1;
    } else if (argv[i][0] != '-') {
      addr = argv[i];
    } else {
      usage();
    }
  }
  /* Stop gracefully on SIGINT/SIGTERM: a thread waits for them and calls stop. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  cgnet_handler h = {.on_boot = on_boot, .on_traffic = on_traffic};
  cgnet_engine *eng;
  int err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "http_plaintext: %s: %s\n", addr, cgnet_strerror(err));
    return 1;
  }
  printf("http_plaintext: listening on port %d (%d loops)\n",
         cgnet_engine_listen_port(eng, 0), cgnet_engine_num_loops(eng));
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  cgnet_engine_stop(eng, 1000);
  err = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  return err ? 1 : 0;
}
