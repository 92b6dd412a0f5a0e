/*
 * libFuzzer target: the HTTP/1.x request parser of examples/http_parser.c. Input: [cut]
 * [limits] then a byte stream, served as examples/http_plaintext does: parse a head,
 * skip its body (Content-Length or chunked), repeat until the stream needs more bytes or
 * an error ends it. It aborts when an invariant breaks:
 *
 *  - every parse looks only at its input (the stream lives in a buffer of exactly its
 *    length, so ASan catches a read past it); head_len and the skipped bytes stay within
 *    what was given; a parsed request's method, target and path lie inside its head, the
 *    path is a prefix of the target, the method matches its token;
 *  - the result is OK, INCOMPLETE or one of the four error statuses;
 *  - the stream fed in two pieces (split where the input says) gives the same requests
 *    and the same ending as fed whole: a prefix of a head parses as INCOMPLETE or as the
 *    whole does, and a chunked body skipped piecewise ends where it ends whole.
 * limits bit 0-1 pick max_head (64, 512, 8192, 1), bits 2-3 max_body (0, 10, 1 MiB,
 * UINT64_MAX - 1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parser.h"

#include "fuzz_check.h"

typedef struct trace {
  uint64_t hash;
  size_t requests;
  int end; /* HTTP_INCOMPLETE, or the error that ended the stream */
} trace;

static void fold(trace *t, uint64_t v) {
  t->hash = (t->hash ^ v) * 0x100000001b3ull;
}

static int known_result(http_result r) {
  return r == HTTP_OK || r == HTTP_INCOMPLETE || r == HTTP_BAD_REQUEST ||
         r == HTTP_CONTENT_TOO_LARGE || r == HTTP_HEADERS_TOO_LARGE ||
         r == HTTP_NOT_IMPLEMENTED;
}

static void check_request(const char *head, const http_request *r) {
  const char *end = head + r->head_len;
  FZ_CHECK(r->method_str >= head && r->method_str + r->method_len <= end);
  FZ_CHECK(r->method_len > 0 && r->target_len > 0 && r->target[0] == '/');
  FZ_CHECK(r->target >= head && r->target + r->target_len <= end);
  FZ_CHECK(r->path == r->target && r->path_len <= r->target_len);
  FZ_CHECK(memchr(r->path, '?', r->path_len) == NULL);
  FZ_CHECK(r->minor_version == 0 || r->minor_version == 1);
  FZ_CHECK(r->method != HTTP_GET ||
           (r->method_len == 3 && !memcmp(r->method_str, "GET", 3)));
  FZ_CHECK(r->body != HTTP_BODY_LENGTH || r->content_length > 0);
  FZ_CHECK(r->head_len >= 4 && !memcmp(end - 4, "\r\n\r\n", 4));
}

/* Serve stream[0, n) as bytes arrive in two deliveries: the first `cut` bytes, then the
 * rest. Between deliveries only what the server keeps is kept: the unparsed tail (a
 * partial head, copied into a fresh buffer of its exact size) and the body state. */
static trace serve(const uint8_t *stream, size_t n, size_t cut, const http_limits *lim) {
  trace t = {0xcbf29ce484222325ull, 0, HTTP_INCOMPLETE};
  int in_body = 0;
  http_body_kind kind = HTTP_BODY_NONE;
  uint64_t left = 0;
  http_chunked ch;
  size_t have = 0; /* bytes of the stream delivered so far */
  size_t pos = 0;  /* bytes of it consumed */
  for (int delivery = 0; delivery < 2; delivery++) {
    have = delivery == 0 ? cut : n;
    size_t len = have - pos;
    char *buf = malloc(len ? len : 1); /* exactly what is pending: reads past it trap */
    FZ_CHECK(buf != NULL);
    memcpy(buf, stream + pos, len);
    size_t off = 0;
    for (;;) {
      if (in_body) {
        size_t used = 0;
        http_result st;
        if (kind == HTTP_BODY_LENGTH) {
          used = len - off < left ? len - off : (size_t)left;
          left -= used;
          st = left ? HTTP_INCOMPLETE : HTTP_OK;
        } else {
          st = http_chunked_skip(&ch, buf + off, len - off, lim->max_body, &used);
          FZ_CHECK(known_result(st));
          FZ_CHECK(used <= len - off);
          FZ_CHECK(st != HTTP_INCOMPLETE || used == len - off);
          FZ_CHECK(ch.total <= lim->max_body);
        }
        off += used;
        if (st == HTTP_INCOMPLETE) break;
        if (st != HTTP_OK) {
          t.end = st;
          free(buf);
          return t;
        }
        fold(&t, 0xb0d7u + off + pos);
        in_body = 0;
      }
      if (off == len) break;
      http_request r;
      http_result st = http_parse_request(buf + off, len - off, lim, &r);
      FZ_CHECK(known_result(st));
      if (st == HTTP_INCOMPLETE) {
        FZ_CHECK(len - off < lim->max_head);
        break;
      }
      if (st != HTTP_OK) {
        t.end = st;
        free(buf);
        return t;
      }
      FZ_CHECK(r.head_len <= len - off && r.head_len <= lim->max_head);
      check_request(buf + off, &r);
      t.requests++;
      fold(&t, pos + off);
      fold(&t, r.head_len);
      fold(&t, (uint64_t)r.method << 8 | (uint64_t)r.body << 4 | (uint64_t)r.keep_alive);
      fold(&t, r.content_length);
      fold(&t, (uint64_t)(r.path - (buf + off)) << 32 | r.path_len);
      off += r.head_len;
      if (r.body != HTTP_BODY_NONE) {
        in_body = 1;
        kind = r.body;
        left = r.content_length;
        http_chunked_init(&ch);
      }
    }
    pos += off;
    free(buf);
  }
  return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 2) return 0;
  static const size_t heads[] = {64, 512, 8192, 1};
  static const uint64_t bodies[] = {0, 10, 1 << 20, UINT64_MAX - 1};
  http_limits lim = {.max_head = heads[d[1] & 3], .max_body = bodies[(d[1] >> 2) & 3]};
  const uint8_t *stream = d + 2;
  size_t len = n - 2;
  size_t cut = len ? d[0] % (len + 1) : 0;
  if (len > 255 && d[0] == 0xff) cut = len / 2; /* reach cuts past 255 too */
  trace whole = serve(stream, len, len, &lim);
  trace split = serve(stream, len, cut, &lim);
  FZ_CHECK(whole.requests == split.requests);
  FZ_CHECK(whole.hash == split.hash);
  FZ_CHECK(whole.end == split.end);
  return 0;
}
