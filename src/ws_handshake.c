/* The WebSocket opening handshake: request and response heads (see ws_handshake.h). */
#include "ws_handshake.h"

#include <stdio.h>
#include <string.h>

#include "base64.h"
#include "cgnet.h"
#include "sha1.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- character classes and small helpers ------------------------------------------ */

static int is_tchar(unsigned char c) {
  if (c >= 'a' && c <= 'z') return 1;
  if (c >= 'A' && c <= 'Z') return 1;
  if (c >= '0' && c <= '9') return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(char c) {
  return c == ' ' || c == '\t';
}

/* A request-target byte: visible ASCII (RFC 3986 has no raw bytes past 0x7e). */
static int is_target_char(unsigned char c) {
  return c > 0x20 && c < 0x7f;
}

/* A header value byte: visible, obs-text, space or tab. */
static int is_value_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

int cgnet__ws_str_ieq(cgnet__ws_str s, const char *lit) {
  size_t n = strlen(lit);
  if (!s.ptr || s.len != n) return 0;
  for (size_t i = 0; i < n; i++)
    if (lower(s.ptr[i]) != lower(lit[i])) return 0;
  return 1;
}

static int views_ieq(cgnet__ws_str a, cgnet__ws_str b) {
  if (a.len != b.len) return 0;
  for (size_t i = 0; i < a.len; i++)
    if (lower(a.ptr[i]) != lower(b.ptr[i])) return 0;
  return 1;
}

static cgnet__ws_str trim(const char *p, const char *end) {
  while (p < end && is_ows(*p))
    p++;
  while (end > p && is_ows(end[-1]))
    end--;
  return (cgnet__ws_str){p, (size_t)(end - p)};
}

/* ---- the head's end ---------------------------------------------------------------- */

/* Find the blank line ending the head in buf[0, len). Returns 1 with *head_len set, 0
 * (need more), 400 (a bare LF, or an empty first line) or 431 (too long). */
static int find_head_end(const char *buf, size_t len, size_t max_head, size_t *resume,
                         size_t *head_len) {
  if (max_head == 0) max_head = CGNET__WS_DEFAULT_MAX_HEAD;
  size_t limit = len < max_head ? len : max_head;
  if (limit >= 1 && (buf[0] == '\r' || buf[0] == '\n')) return 400;
  size_t i = *resume;
  while (i < limit) {
    const char *lf = memchr(buf + i, '\n', limit - i);
    if (!lf) break;
    size_t at = (size_t)(lf - buf);
    if (at == 0 || buf[at - 1] != '\r') return 400;
    if (at >= 3 && buf[at - 2] == '\n' && buf[at - 3] == '\r') {
      *head_len = at + 1;
      return 1;
    }
    i = at + 1;
  }
  /* Every LF before `limit` has been checked; the next call looks only past it (the
   * checks look back at the bytes before an LF, which stay in the buffer). */
  *resume = limit;
  return len >= max_head ? 431 : 0;
}

/* ---- lists ------------------------------------------------------------------------- */

/* Next element of a comma-separated list in [*p, end), trimmed (may be empty). Returns
 * 0 at the end of the list. */
static int next_element(const char **p, const char *end, cgnet__ws_str *out) {
  if (*p > end) return 0;
  const char *comma = memchr(*p, ',', (size_t)(end - *p));
  const char *stop = comma ? comma : end;
  *out = trim(*p, stop);
  *p = comma ? comma + 1 : end + 1;
  return 1;
}

static int list_has(cgnet__ws_str value, const char *token) {
  const char *p = value.ptr, *end = value.ptr + value.len;
  cgnet__ws_str e;
  while (next_element(&p, end, &e))
    if (cgnet__ws_str_ieq(e, token)) return 1;
  return 0;
}

static int all_tchars(cgnet__ws_str s) {
  if (s.len == 0) return 0;
  for (size_t i = 0; i < s.len; i++)
    if (!is_tchar((unsigned char)s.ptr[i])) return 0;
  return 1;
}

/* Sec-WebSocket-Protocol: a list of tokens; empty elements are skipped. */
static int add_protocols(cgnet__ws_head *h, cgnet__ws_str value) {
  const char *p = value.ptr, *end = value.ptr + value.len;
  cgnet__ws_str e;
  h->protocol_lines++;
  while (next_element(&p, end, &e)) {
    if (e.len == 0) continue;
    if (!all_tchars(e) || h->nprotocols == CGNET__WS_MAX_PROTOCOLS) return -1;
    h->protocols[h->nprotocols++] = e;
  }
  return 0;
}

static const char *skip_ows(const char *p, const char *end) {
  while (p < end && is_ows(*p))
    p++;
  return p;
}

static const char *scan_token(const char *p, const char *end) {
  while (p < end && is_tchar((unsigned char)*p))
    p++;
  return p;
}

/* A parameter value: a token, or a quoted string without escapes. */
static const char *scan_param_value(const char *p, const char *end, cgnet__ws_str *v) {
  if (p < end && *p == '"') {
    const char *q = p + 1;
    while (q < end && *q != '"' && *q != '\\' && is_value_char((unsigned char)*q))
      q++;
    if (q >= end || *q != '"') return NULL;
    *v = (cgnet__ws_str){p + 1, (size_t)(q - p - 1)};
    return q + 1;
  }
  const char *q = scan_token(p, end);
  if (q == p) return NULL;
  *v = (cgnet__ws_str){p, (size_t)(q - p)};
  return q;
}

/* One extension: token *( ";" token [ "=" value ] ). Returns where it ends, or NULL. */
static const char *parse_extension(const char *p, const char *end, cgnet__ws_ext *x) {
  memset(x, 0, sizeof *x);
  p = skip_ows(p, end);
  const char *q = scan_token(p, end);
  if (q == p) return NULL;
  x->name = (cgnet__ws_str){p, (size_t)(q - p)};
  p = skip_ows(q, end);
  while (p < end && *p == ';') {
    p = skip_ows(p + 1, end);
    q = scan_token(p, end);
    if (q == p || x->nparams == CGNET__WS_MAX_EXT_PARAMS) return NULL;
    cgnet__ws_ext_param *prm = &x->params[x->nparams++];
    prm->name = (cgnet__ws_str){p, (size_t)(q - p)};
    p = skip_ows(q, end);
    if (p < end && *p == '=') {
      p = scan_param_value(skip_ows(p + 1, end), end, &prm->value);
      if (!p) return NULL;
      if (prm->value.len == 0 || !all_tchars(prm->value)) return NULL;
      p = skip_ows(p, end);
    }
  }
  return p;
}

/* Sec-WebSocket-Extensions: 1#extension; empty elements are skipped. */
static int add_extensions(cgnet__ws_head *h, cgnet__ws_str value) {
  const char *p = value.ptr, *end = value.ptr + value.len;
  for (;;) {
    p = skip_ows(p, end);
    if (p < end && *p == ',') {
      p++;
      continue;
    }
    if (p >= end) return 0;
    if (h->nextensions == CGNET__WS_MAX_EXTENSIONS) return -1;
    p = parse_extension(p, end, &h->extensions[h->nextensions]);
    if (!p || (p < end && *p != ',')) return -1;
    h->nextensions++;
  }
}

/* ---- header lines ------------------------------------------------------------------ */

/* Parse one header line [p, eol) (eol at its CR) into a field. */
static int parse_field(const char *p, const char *eol, cgnet__ws_field *f) {
  const char *colon = scan_token(p, eol);
  if (colon == p || colon == eol || *colon != ':') return -1;
  for (const char *c = colon + 1; c < eol; c++)
    if (!is_value_char((unsigned char)*c)) return -1;
  f->name = (cgnet__ws_str){p, (size_t)(colon - p)};
  f->value = trim(colon + 1, eol);
  return 0;
}

/* The fields every head interprets. Returns 0 or -1 (a malformed list). */
static int note_common(cgnet__ws_head *h, const cgnet__ws_field *f) {
  if (cgnet__ws_str_ieq(f->name, "upgrade")) {
    if (list_has(f->value, "websocket")) h->upgrade_websocket = 1;
  } else if (cgnet__ws_str_ieq(f->name, "connection")) {
    if (list_has(f->value, "upgrade")) h->connection_upgrade = 1;
  } else if (cgnet__ws_str_ieq(f->name, "sec-websocket-protocol")) {
    return add_protocols(h, f->value);
  } else if (cgnet__ws_str_ieq(f->name, "sec-websocket-extensions")) {
    return add_extensions(h, f->value);
  }
  return 0;
}

/* Parse the header lines in [p, end) (end: the blank line's CR). fn sees each field.
 * Returns 0, 400 or 431. */
static int parse_fields(cgnet__ws_head *h, const char *p, const char *end,
                        int (*note)(void *, const cgnet__ws_field *), void *arg) {
  while (p < end) {
    const char *eol = memchr(p, '\r', (size_t)(end - p) + 1);
    if (!eol || eol[1] != '\n') return 400; /* a lone CR */
    if (h->nfields == CGNET__WS_MAX_HEADERS) return 431;
    cgnet__ws_field *f = &h->fields[h->nfields];
    if (parse_field(p, eol, f) != 0) return 400;
    h->nfields++;
    if (note_common(h, f) != 0 || note(arg, f) != 0) return 400;
    p = eol + 2;
  }
  return 0;
}

/* "HTTP/1.x" at p: the minor version, or -1. */
static int http_version(const char *p, size_t n) {
  if (n != 8 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9') return -1;
  return p[7] - '0';
}

/* ---- requests ---------------------------------------------------------------------- */

/* Set a single-valued field; a second occurrence is an error. */
static int set_once(cgnet__ws_str *slot, cgnet__ws_str value) {
  if (slot->ptr) return -1;
  *slot = value;
  return 0;
}

static int note_request(void *arg, const cgnet__ws_field *f) {
  cgnet__ws_request *r = arg;
  if (cgnet__ws_str_ieq(f->name, "host")) return set_once(&r->host, f->value);
  if (cgnet__ws_str_ieq(f->name, "sec-websocket-key")) return set_once(&r->key, f->value);
  if (cgnet__ws_str_ieq(f->name, "sec-websocket-version"))
    return set_once(&r->version, f->value);
  if (cgnet__ws_str_ieq(f->name, "origin")) return set_once(&r->origin, f->value);
  if (cgnet__ws_str_ieq(f->name, "transfer-encoding")) r->has_body = 1;
  if (cgnet__ws_str_ieq(f->name, "content-length")) {
    for (size_t i = 0; i < f->value.len; i++)
      if (f->value.ptr[i] != '0') r->has_body = 1; /* a non-digit counts as a body too */
  }
  return 0;
}

/* METHOD SP TARGET SP HTTP/1.x, in [p, eol). */
static int parse_request_line(cgnet__ws_request *r, const char *p, const char *eol) {
  const char *sp1 = scan_token(p, eol);
  if (sp1 == p || sp1 == eol || *sp1 != ' ') return -1;
  const char *t = sp1 + 1, *sp2 = t;
  while (sp2 < eol && is_target_char((unsigned char)*sp2))
    sp2++;
  if (sp2 == t || sp2 == eol || *sp2 != ' ' || *t != '/') return -1;
  r->minor_version = http_version(sp2 + 1, (size_t)(eol - sp2 - 1));
  if (r->minor_version < 0) return -1;
  r->method = (cgnet__ws_str){p, (size_t)(sp1 - p)};
  r->target = (cgnet__ws_str){t, (size_t)(sp2 - t)};
  const char *q = memchr(t, '?', r->target.len);
  r->path = (cgnet__ws_str){t, q ? (size_t)(q - t) : r->target.len};
  return 0;
}

int cgnet__ws_parse_request(const char *buf, size_t len, size_t max_head, size_t *resume,
                            cgnet__ws_request *r) {
  size_t head_len = 0;
  int rc = find_head_end(buf, len, max_head, resume, &head_len);
  if (rc != 1) return rc;
  memset(r, 0, sizeof *r);
  r->head.head_len = head_len;
  const char *end = buf + head_len - 2;
  const char *eol = memchr(buf, '\r', head_len);
  if (eol[1] != '\n' || parse_request_line(r, buf, eol) != 0) return 400;
  rc = parse_fields(&r->head, eol + 2, end, note_request, r);
  return rc ? rc : 1;
}

static int key_ok(cgnet__ws_str key) {
  uint8_t raw[16];
  return key.len == CGNET__WS_KEY_LEN &&
         cgnet__base64_decode(key.ptr, key.len, raw, sizeof raw) == 16;
}

int cgnet__ws_check_request(const cgnet__ws_request *r, const char **why) {
  static const char *const reasons[] = {"method is not GET",
                                        "not HTTP/1.1",
                                        "no Host header",
                                        "no Upgrade: websocket",
                                        "no Connection: upgrade",
                                        "Sec-WebSocket-Version is not 13",
                                        "Sec-WebSocket-Key is not 16 bytes in base64",
                                        "a request body"};
  int fault = -1;
  if (!(r->method.len == 3 && memcmp(r->method.ptr, "GET", 3) == 0))
    fault = 0;
  else if (r->minor_version < 1)
    fault = 1;
  else if (!r->host.ptr || r->host.len == 0)
    fault = 2;
  else if (!r->head.upgrade_websocket)
    fault = 3;
  else if (!r->head.connection_upgrade)
    fault = 4;
  else if (!(r->version.len == 2 && memcmp(r->version.ptr, "13", 2) == 0))
    fault = 5;
  else if (!key_ok(r->key))
    fault = 6;
  else if (r->has_body)
    fault = 7;
  if (fault < 0) return 0;
  if (why) *why = reasons[fault];
  return fault == 5 ? 426 : 400;
}

/* ---- responses the server sends ---------------------------------------------------- */

void cgnet__ws_accept_value(const char *key, size_t key_len,
                            char out[CGNET__WS_ACCEPT_LEN + 1]) {
  uint8_t digest[CGNET__SHA1_LEN];
  char buf[128];
  if (key_len > sizeof buf - sizeof WS_GUID) key_len = sizeof buf - sizeof WS_GUID;
  memcpy(buf, key, key_len);
  memcpy(buf + key_len, WS_GUID, sizeof WS_GUID - 1);
  cgnet__sha1(buf, key_len + sizeof WS_GUID - 1, digest);
  cgnet__base64_encode(digest, sizeof digest, out);
}

/* No control byte that could end a header line early (CR, LF, NUL, ...). */
static int clean_value(const char *s) {
  for (; s && *s; s++)
    if (!is_value_char((unsigned char)*s)) return 0;
  return 1;
}

/* snprintf's result as a length, or CGNET_ENOBUFS if it did not fit. */
static long fitted(int n, size_t cap) {
  if (n < 0) return CGNET_EINVAL;
  return (size_t)n < cap ? (long)n : CGNET_ENOBUFS;
}

long cgnet__ws_build_response(char *out, size_t cap, cgnet__ws_str key,
                              const char *protocol, const char *extensions) {
  if (!clean_value(protocol) || !clean_value(extensions)) return CGNET_EINVAL;
  char accept[CGNET__WS_ACCEPT_LEN + 1];
  cgnet__ws_accept_value(key.ptr, key.len, accept);
  int has_p = protocol && *protocol, has_x = extensions && *extensions;
  int n = snprintf(out, cap,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n"
                   "%s%s%s%s%s%s\r\n",
                   accept, has_p ? "Sec-WebSocket-Protocol: " : "", has_p ? protocol : "",
                   has_p ? "\r\n" : "", has_x ? "Sec-WebSocket-Extensions: " : "",
                   has_x ? extensions : "", has_x ? "\r\n" : "");
  return fitted(n, cap);
}

static const char *reason_phrase(int status) {
  switch (status) {
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return status < 500 ? "Client Error" : "Server Error";
  }
}

long cgnet__ws_build_error(char *out, size_t cap, int status, const char *body) {
  if (status < 400 || status > 599) return CGNET_EINVAL;
  const char *phrase = reason_phrase(status);
  if (!body) body = phrase;
  int n = snprintf(out, cap,
                   "HTTP/1.1 %d %s\r\n"
                   "%s"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n"
                   "Connection: close\r\n"
                   "\r\n"
                   "%s",
                   status, phrase, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "",
                   strlen(body), body);
  return fitted(n, cap);
}

/* ---- the client side --------------------------------------------------------------- */

void cgnet__ws_make_key(const uint8_t random16[16], char key[CGNET__WS_KEY_LEN + 1]) {
  cgnet__base64_encode(random16, 16, key);
}

long cgnet__ws_build_request(char *out, size_t cap, const cgnet__ws_client_request *req,
                             const char key[CGNET__WS_KEY_LEN + 1]) {
  if (!req->host || !*req->host || !req->path || req->path[0] != '/') return CGNET_EINVAL;
  for (const char *c = req->path; *c; c++)
    if (!is_target_char((unsigned char)*c)) return CGNET_EINVAL;
  if (!clean_value(req->host) || !clean_value(req->origin) ||
      !clean_value(req->protocols) || !clean_value(req->extensions))
    return CGNET_EINVAL;
  int has_o = req->origin && *req->origin, has_p = req->protocols && *req->protocols;
  int has_x = req->extensions && *req->extensions;
  int n = snprintf(out, cap,
                   "GET %s HTTP/1.1\r\n"
                   "Host: %s\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "%s%s%s%s%s%s%s%s%s\r\n",
                   req->path, req->host, key, has_o ? "Origin: " : "",
                   has_o ? req->origin : "", has_o ? "\r\n" : "",
                   has_p ? "Sec-WebSocket-Protocol: " : "", has_p ? req->protocols : "",
                   has_p ? "\r\n" : "", has_x ? "Sec-WebSocket-Extensions: " : "",
                   has_x ? req->extensions : "", has_x ? "\r\n" : "");
  return fitted(n, cap);
}

static int note_response(void *arg, const cgnet__ws_field *f) {
  cgnet__ws_response *r = arg;
  if (cgnet__ws_str_ieq(f->name, "sec-websocket-accept"))
    return set_once(&r->accept, f->value);
  return 0;
}

/* HTTP/1.x SP 3DIGIT [SP reason], in [p, eol). */
static int parse_status_line(cgnet__ws_response *r, const char *p, const char *eol) {
  size_t n = (size_t)(eol - p);
  if (n < 12 || p[8] != ' ') return -1;
  r->minor_version = http_version(p, 8);
  if (r->minor_version < 0) return -1;
  for (int i = 9; i < 12; i++)
    if (p[i] < '0' || p[i] > '9') return -1;
  r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (n > 12 && p[12] != ' ') return -1;
  for (const char *c = p + 12; c < eol; c++)
    if (!is_value_char((unsigned char)*c)) return -1;
  r->reason = n > 12 ? (cgnet__ws_str){p + 13, n - 13} : (cgnet__ws_str){p + 12, 0};
  return 0;
}

int cgnet__ws_parse_response(const char *buf, size_t len, size_t max_head, size_t *resume,
                             cgnet__ws_response *r) {
  size_t head_len = 0;
  int rc = find_head_end(buf, len, max_head, resume, &head_len);
  if (rc == 431) return CGNET_EMSGSIZE;
  if (rc != 1) return rc == 0 ? 0 : CGNET_ECODEC;
  memset(r, 0, sizeof *r);
  r->head.head_len = head_len;
  const char *eol = memchr(buf, '\r', head_len);
  if (eol[1] != '\n' || parse_status_line(r, buf, eol) != 0) return CGNET_ECODEC;
  rc = parse_fields(&r->head, eol + 2, buf + head_len - 2, note_response, r);
  if (rc == 431) return CGNET_EMSGSIZE;
  return rc ? CGNET_ECODEC : 1;
}

static int offered(cgnet__ws_str s, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (cgnet__ws_str_ieq(s, list[i])) return 1;
  return 0;
}

static const char *response_fault(const cgnet__ws_response *r, const char *key,
                                  const char *const *protocols, size_t nprotocols,
                                  const char *const *extensions, size_t nextensions) {
  const cgnet__ws_head *h = &r->head;
  if (r->status != 101) return "status is not 101";
  if (!h->upgrade_websocket) return "no Upgrade: websocket";
  if (!h->connection_upgrade) return "no Connection: upgrade";
  char want[CGNET__WS_ACCEPT_LEN + 1];
  cgnet__ws_accept_value(key, strlen(key), want);
  if (r->accept.len != CGNET__WS_ACCEPT_LEN ||
      memcmp(r->accept.ptr, want, CGNET__WS_ACCEPT_LEN) != 0)
    return "Sec-WebSocket-Accept does not match the key";
  if (h->protocol_lines > 1 || h->nprotocols > 1) return "more than one subprotocol";
  if (h->nprotocols == 1 && !offered(h->protocols[0], protocols, nprotocols))
    return "a subprotocol that was not offered";
  if (h->protocol_lines == 1 && h->nprotocols == 0) return "an empty subprotocol";
  for (size_t i = 0; i < h->nextensions; i++) {
    if (!offered(h->extensions[i].name, extensions, nextensions))
      return "an extension that was not offered";
    for (size_t j = 0; j < i; j++)
      if (views_ieq(h->extensions[j].name, h->extensions[i].name))
        return "an extension accepted twice";
  }
  return NULL;
}

int cgnet__ws_check_response(const cgnet__ws_response *r, const char *key,
                             const char *const *protocols, size_t nprotocols,
                             const char *const *extensions, size_t nextensions,
                             const char **why) {
  const char *fault =
      response_fault(r, key, protocols, nprotocols, extensions, nextensions);
  if (!fault) return 0;
  if (why) *why = fault;
  return CGNET_ECODEC;
}
