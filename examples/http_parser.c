/* HTTP/1.x request heads and chunked bodies (see http_parser.h). */
#include "http_parser.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 tchar, as a table: the parser looks up every byte of every method and header
 * name, so this must cost one load, not a strchr. */
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

static inline int is_tchar(char c) {
  return TCHAR[(unsigned char)c];
}

/* A request-target byte: visible ASCII or >= 0x80 (no control byte, space or DEL). */
static inline int is_target_char(char c) {
  unsigned char u = (unsigned char)c;
  return u > 0x20 && u != 0x7f;
}

/* A field-value byte: HTAB, SP, visible ASCII, >= 0x80 (no NUL, CR, LF, other controls
 * or DEL). */
static inline int is_value_char(char c) {
  unsigned char u = (unsigned char)c;
  return (u >= 0x20 && u != 0x7f) || u == '\t';
}

/* ---- eight bytes at a time -------------------------------------------------------------
 *
 * Targets and header values are most of a request's bytes, and almost all of them are
 * plain visible ASCII. These look at eight bytes per step and leave the bytes that need a
 * closer look (a control byte, DEL, a space, '?') to the byte loops after them.
 */

#define SWAR_ONES 0x0101010101010101ULL
#define SWAR_HIGHS 0x8080808080808080ULL

static inline uint64_t load8(const char *p) {
  uint64_t x;
  memcpy(&x, p, sizeof x);
  return x;
}

/* Non-zero if some byte of x is below n (n <= 0x80). */
static inline uint64_t any_below(uint64_t x, unsigned n) {
  return (x - SWAR_ONES * n) & ~x & SWAR_HIGHS;
}

/* Non-zero if some byte of x is b. */
static inline uint64_t any_equal(uint64_t x, unsigned char b) {
  return any_below(x ^ (SWAR_ONES * b), 1);
}

/* The first byte of [p, end) that may not be a plain value byte (below 0x20 or DEL), or
 * a byte before it: the caller's byte loop decides. */
static const char *skip_value_bytes(const char *p, const char *end) {
  while (end - p >= 8) {
    uint64_t x = load8(p);
    if (any_below(x, 0x20) | any_equal(x, 0x7f)) break;
    p += 8;
  }
  return p;
}

/* Likewise for a request target, which also ends at a space and notes a '?'. */
static const char *skip_target_bytes(const char *p, const char *end) {
  while (end - p >= 8) {
    uint64_t x = load8(p);
    if (any_below(x, 0x21) | any_equal(x, 0x7f) | any_equal(x, '?')) break;
    p += 8;
  }
  return p;
}

/* ---- small helpers --------------------------------------------------------------------
 */

static int equals_nocase(const char *p, size_t len, const char *lit) {
  return strlen(lit) == len && strncasecmp(p, lit, len) == 0;
}

static int is_ows(char c) {
  return c == ' ' || c == '\t';
}

/* The next comma-separated element of the list [*p, end), trimmed of OWS; advances *p
 * past it. Returns 0 when the list is exhausted. Empty elements come back empty. */
static int next_element(const char **p, const char *end, const char **e, size_t *elen) {
  if (*p > end) return 0;
  const char *s = *p, *comma = memchr(s, ',', (size_t)(end - s));
  const char *stop = comma ? comma : end;
  *p = comma ? comma + 1 : end + 1;
  while (s < stop && is_ows(*s))
    s++;
  while (stop > s && is_ows(stop[-1]))
    stop--;
  *e = s;
  *elen = (size_t)(stop - s);
  return 1;
}

static http_method method_of(const char *m, size_t len) {
  static const struct {
    const char *name;
    http_method id;
  } known[] = {
      {"GET", HTTP_GET},         {"HEAD", HTTP_HEAD},     {"POST", HTTP_POST},
      {"PUT", HTTP_PUT},         {"DELETE", HTTP_DELETE}, {"CONNECT", HTTP_CONNECT},
      {"OPTIONS", HTTP_OPTIONS}, {"TRACE", HTTP_TRACE},   {"PATCH", HTTP_PATCH},
  };
  if (len == 3 && memcmp(m, "GET", 3) == 0) return HTTP_GET; /* the common case first */
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strlen(known[i].name) == len && memcmp(m, known[i].name, len) == 0)
      return known[i].id;
  return HTTP_OTHER;
}

/* ---- the head -------------------------------------------------------------------------
 */

/* What the headers said, gathered while the lines are read. */
typedef struct head_state {
  int have_length, have_te, chunked;
  int conn_close, conn_keep_alive;
  uint64_t length;
} head_state;

/* The next line [p, *eol) ending in CRLF before `end`. HTTP_INCOMPLETE when no LF has
 * arrived, HTTP_BAD_REQUEST for a bare LF. */
static http_result next_line(const char *p, const char *end, const char **eol) {
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (!nl) return HTTP_INCOMPLETE;
  if (nl == p || nl[-1] != '\r') return HTTP_BAD_REQUEST;
  *eol = nl - 1;
  return HTTP_OK;
}

static http_result parse_request_line(const char *p, const char *eol, http_request *r) {
  const char *m = p;
  while (p < eol && is_tchar(*p))
    p++;
  if (p == m || p == eol || *p != ' ') return HTTP_BAD_REQUEST;
  r->method_str = m;
  r->method_len = (size_t)(p - m);
  r->method = method_of(m, r->method_len);
  const char *t = ++p;
  const char *query = NULL;
  p = skip_target_bytes(p, eol);
  while (p < eol && is_target_char(*p)) {
    if (*p == '?' && !query) query = p;
    p++;
  }
  if (p == t || *t != '/' || p == eol || *p != ' ') return HTTP_BAD_REQUEST;
  r->target = t;
  r->target_len = (size_t)(p - t);
  r->path = t;
  r->path_len = (size_t)((query ? query : p) - t);
  p++;
  if (eol - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
    return HTTP_BAD_REQUEST;
  r->minor_version = p[7] - '0';
  return HTTP_OK;
}

static http_result on_content_length(const char *v, size_t len, const http_limits *lim,
                                     head_state *h) {
  if (len == 0) return HTTP_BAD_REQUEST;
  uint64_t n = 0;
  int huge = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return HTTP_BAD_REQUEST;
    if (n > (UINT64_MAX - 9) / 10)
      huge = 1; /* keep checking the digits; the value is past any limit */
    else
      n = n * 10 + (uint64_t)(v[i] - '0');
  }
  if (huge) n = UINT64_MAX;
  if (h->have_length && n != h->length) return HTTP_BAD_REQUEST;
  if (n > lim->max_body) return HTTP_CONTENT_TOO_LARGE;
  h->have_length = 1;
  h->length = n;
  return HTTP_OK;
}

static http_result on_transfer_encoding(const char *v, size_t len, head_state *h) {
  if (h->have_te) return HTTP_BAD_REQUEST; /* a second line: refuse, do not combine */
  h->have_te = 1;
  const char *p = v, *end = v + len, *e, *last = NULL;
  size_t elen, last_len = 0, codings = 0;
  while (next_element(&p, end, &e, &elen)) {
    if (elen == 0) continue;
    last = e;
    last_len = elen;
    codings++;
  }
  if (!last || !equals_nocase(last, last_len, "chunked")) return HTTP_BAD_REQUEST;
  if (codings > 1) return HTTP_NOT_IMPLEMENTED; /* e.g. "gzip, chunked" */
  h->chunked = 1;
  return HTTP_OK;
}

static void on_connection(const char *v, size_t len, head_state *h) {
  const char *p = v, *end = v + len, *e;
  size_t elen;
  while (next_element(&p, end, &e, &elen)) {
    if (equals_nocase(e, elen, "close")) h->conn_close = 1;
    if (equals_nocase(e, elen, "keep-alive")) h->conn_keep_alive = 1;
  }
}

/* One header line [p, eol): check its syntax, act on the headers that matter here. */
static http_result parse_header(const char *p, const char *eol, const http_limits *lim,
                                head_state *h) {
  const char *name = p;
  while (p < eol && is_tchar(*p))
    p++;
  if (p == name || p == eol || *p != ':') return HTTP_BAD_REQUEST;
  size_t nlen = (size_t)(p - name);
  const char *v = p + 1;
  for (const char *q = skip_value_bytes(v, eol); q < eol; q++)
    if (!is_value_char(*q)) return HTTP_BAD_REQUEST;
  const char *ve = eol;
  while (v < ve && is_ows(*v))
    v++;
  while (ve > v && is_ows(ve[-1]))
    ve--;
  size_t vlen = (size_t)(ve - v);
  switch (name[0] | 0x20) { /* a cheap first-letter filter before the comparisons */
  case 'c':
    if (equals_nocase(name, nlen, "content-length"))
      return on_content_length(v, vlen, lim, h);
    if (equals_nocase(name, nlen, "connection")) on_connection(v, vlen, h);
    break;
  case 't':
    if (equals_nocase(name, nlen, "transfer-encoding"))
      return on_transfer_encoding(v, vlen, h);
    break;
  }
  return HTTP_OK;
}

/* The head is complete: settle framing and persistence. */
static http_result finish_head(const head_state *h, http_request *r) {
  if (h->have_te && (h->have_length || r->minor_version == 0)) return HTTP_BAD_REQUEST;
  r->body = h->chunked                        ? HTTP_BODY_CHUNKED
            : h->have_length && h->length > 0 ? HTTP_BODY_LENGTH
                                              : HTTP_BODY_NONE;
  r->content_length = h->have_length ? h->length : 0;
  r->keep_alive = !h->conn_close && (r->minor_version == 1 || h->conn_keep_alive);
  return HTTP_OK;
}

http_result http_parse_request(const char *buf, size_t len, const http_limits *lim,
                               http_request *req) {
  /* Only the first max_head bytes are looked at; not finding the head's end in them is
   * "too large" once they have all arrived. */
  size_t window = len < lim->max_head ? len : lim->max_head;
  const char *p = buf, *end = buf + window;
  http_result short_of_end =
      len >= lim->max_head ? HTTP_HEADERS_TOO_LARGE : HTTP_INCOMPLETE;
  while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
    p += 2; /* empty lines before the request line */
  const char *eol;
  http_result st = next_line(p, end, &eol);
  if (st != HTTP_OK) return st == HTTP_INCOMPLETE ? short_of_end : st;
  if ((st = parse_request_line(p, eol, req)) != HTTP_OK) return st;
  head_state h = {0};
  for (p = eol + 2;; p = eol + 2) {
    st = next_line(p, end, &eol);
    if (st != HTTP_OK) return st == HTTP_INCOMPLETE ? short_of_end : st;
    if (eol == p) break;                     /* the empty line ends the head */
    if (is_ows(*p)) return HTTP_BAD_REQUEST; /* obs-fold, or space before a name */
    if ((st = parse_header(p, eol, lim, &h)) != HTTP_OK) return st;
  }
  req->head_len = (size_t)(eol + 2 - buf);
  return finish_head(&h, req);
}

/* ---- chunked bodies -------------------------------------------------------------------
 */

enum {
  CH_SIZE,        /* hex digits of a chunk size */
  CH_EXT,         /* after the size: extensions up to CR */
  CH_SIZE_LF,     /* the LF ending the size line */
  CH_DATA,        /* chunk data */
  CH_DATA_CR,     /* CRLF after the data */
  CH_DATA_LF,     /* */
  CH_TRAILER,     /* start of a trailer line, or of the final CRLF */
  CH_TRAILER_TXT, /* a trailer line up to CR */
  CH_TRAILER_LF,  /* the LF ending a trailer line */
  CH_END_LF,      /* the LF of the final CRLF */
  CH_DONE,
};

void http_chunked_init(http_chunked *c) {
  memset(c, 0, sizeof *c);
  c->state = CH_SIZE;
}

static int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* One byte of a size, extension or trailer line (never chunk data). */
static http_result chunk_byte(http_chunked *c, char ch, uint64_t max_body) {
  if (c->state != CH_DATA_CR && c->state != CH_DATA_LF && ++c->line > HTTP_CHUNK_LINE_MAX)
    return HTTP_BAD_REQUEST;
  switch (c->state) {
  case CH_SIZE: {
    int d = hex_value(ch);
    if (d >= 0) {
      if (++c->digits > 16) return HTTP_BAD_REQUEST; /* more than 64 bits */
      c->left = c->left << 4 | (uint64_t)d;
      return HTTP_OK;
    }
    if (c->digits == 0) return HTTP_BAD_REQUEST;
    if (c->left > max_body - c->total) return HTTP_CONTENT_TOO_LARGE;
    if (ch == '\r') {
      c->state = CH_SIZE_LF;
    } else if (ch == ';' || is_ows(ch)) {
      c->state = CH_EXT;
    } else {
      return HTTP_BAD_REQUEST;
    }
    return HTTP_OK;
  }
  case CH_EXT:
  case CH_TRAILER_TXT:
    if (ch == '\r')
      c->state = c->state == CH_EXT ? CH_SIZE_LF : CH_TRAILER_LF;
    else if (!is_value_char(ch))
      return HTTP_BAD_REQUEST;
    return HTTP_OK;
  case CH_SIZE_LF:
    if (ch != '\n') return HTTP_BAD_REQUEST;
    c->line = 0;
    c->total += c->left;
    c->state = c->left ? CH_DATA : CH_TRAILER;
    return HTTP_OK;
  case CH_DATA_CR:
    if (ch != '\r') return HTTP_BAD_REQUEST;
    c->state = CH_DATA_LF;
    return HTTP_OK;
  case CH_DATA_LF:
    if (ch != '\n') return HTTP_BAD_REQUEST;
    c->state = CH_SIZE;
    c->digits = 0;
    c->line = 0;
    c->left = 0;
    return HTTP_OK;
  case CH_TRAILER:
    if (ch == '\r') {
      c->state = CH_END_LF;
    } else if (is_tchar(ch)) {
      c->state = CH_TRAILER_TXT;
    } else {
      return HTTP_BAD_REQUEST;
    }
    return HTTP_OK;
  case CH_TRAILER_LF:
    if (ch != '\n') return HTTP_BAD_REQUEST;
    c->line = 0;
    c->state = CH_TRAILER;
    return HTTP_OK;
  case CH_END_LF:
    if (ch != '\n') return HTTP_BAD_REQUEST;
    c->state = CH_DONE;
    return HTTP_OK;
  }
  return HTTP_BAD_REQUEST;
}

http_result http_chunked_skip(http_chunked *c, const char *buf, size_t len,
                              uint64_t max_body, size_t *used) {
  size_t i = 0;
  while (i < len && c->state != CH_DONE) {
    if (c->state == CH_DATA) { /* the bulk: skipped without looking at it */
      size_t n = len - i < c->left ? len - i : (size_t)c->left;
      i += n;
      c->left -= n;
      if (c->left == 0) c->state = CH_DATA_CR;
      continue;
    }
    http_result st = chunk_byte(c, buf[i++], max_body);
    if (st != HTTP_OK) {
      *used = i;
      return st;
    }
  }
  *used = i;
  return c->state == CH_DONE ? HTTP_OK : HTTP_INCOMPLETE;
}
