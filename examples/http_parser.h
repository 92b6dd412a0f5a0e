/*
 * http_parser — HTTP/1.0 and HTTP/1.1 request heads, parsed in place, plus an incremental
 * skipper for chunked request bodies. No allocation and no copy: a parsed request points
 * into the caller's buffer. Used by examples/http_plaintext and fuzz/fuzz_http.c.
 *
 * The parser is stateless: hand it everything buffered from the start of a request; it
 * answers HTTP_INCOMPLETE until the head is complete, and the answer for a prefix is
 * either HTTP_INCOMPLETE or the answer for the whole (a request split anywhere parses the
 * same). It decides on complete lines only, and only on the first max_head bytes.
 *
 * What it accepts, strictly (anything else is HTTP_BAD_REQUEST):
 *  - empty lines (CRLF) before the request line are skipped (they count toward max_head);
 *  - request line: METHOD SP TARGET SP HTTP/1.0|HTTP/1.1 CRLF, single spaces; METHOD is
 *    a token, compared case-sensitively ("get" is not GET); TARGET is origin-form (starts
 *    with "/", no control bytes, space or DEL); `path` is TARGET up to a '?';
 *  - header lines: NAME ":" OWS VALUE OWS CRLF, NAME a token (no space before ':'), VALUE
 *    without control bytes other than HTAB (a NUL or a lone CR is refused); no obs-fold;
 *    every line ends in CRLF (a bare LF is refused);
 *  - Content-Length: digits only; repeated with the same value is fine, a different one
 *    is refused; larger than max_body is HTTP_CONTENT_TOO_LARGE;
 *  - Transfer-Encoding: only "chunked" (any case) is served; a list ending in chunked
 *    (another coding first) is HTTP_NOT_IMPLEMENTED; one not ending in chunked, a second
 *    Transfer-Encoding line, Transfer-Encoding with Content-Length, or Transfer-Encoding
 *    in an HTTP/1.0 request is refused (no guessing at a body's framing: that is how
 *    requests get smuggled);
 *  - Connection: a comma-separated list of tokens, matched case-insensitively as whole
 *    tokens: "close" ends the conn after the response; "keep-alive" keeps an HTTP/1.0
 *    conn open (HTTP/1.1 conns stay open unless "close").
 * Host is not required. A head not complete within max_head bytes is
 * HTTP_HEADERS_TOO_LARGE.
 *
 * Any thread; no shared state.
 */
#ifndef CGNET_EXAMPLES_HTTP_PARSER_H
#define CGNET_EXAMPLES_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

/* Results. The errors are the HTTP status a server answers with. */
typedef enum http_result {
  HTTP_OK = 0,         /* complete (a head, or a chunked body) */
  HTTP_INCOMPLETE = 1, /* more bytes needed */
  HTTP_BAD_REQUEST = 400,
  HTTP_CONTENT_TOO_LARGE = 413,
  HTTP_HEADERS_TOO_LARGE = 431,
  HTTP_NOT_IMPLEMENTED = 501, /* a transfer coding other than chunked */
} http_result;

/* The methods of RFC 9110 (and PATCH); any other token is HTTP_OTHER. */
typedef enum http_method {
  HTTP_GET,
  HTTP_HEAD,
  HTTP_POST,
  HTTP_PUT,
  HTTP_DELETE,
  HTTP_CONNECT,
  HTTP_OPTIONS,
  HTTP_TRACE,
  HTTP_PATCH,
  HTTP_OTHER,
} http_method;

typedef enum http_body_kind {
  HTTP_BODY_NONE,
  HTTP_BODY_LENGTH,  /* content_length bytes follow the head */
  HTTP_BODY_CHUNKED, /* skip with http_chunked_skip */
} http_body_kind;

typedef struct http_limits {
  size_t max_head;   /* bytes from the start of the buffer to the end of the head */
  uint64_t max_body; /* largest Content-Length (and chunked total) accepted */
} http_limits;

typedef struct http_request {
  http_method method;
  const char *method_str; /* the method token as sent */
  size_t method_len;
  const char *target; /* the request target as sent */
  size_t target_len;
  const char *path; /* the target without its query ("?..."); points into target */
  size_t path_len;
  int minor_version; /* 0: HTTP/1.0, 1: HTTP/1.1 */
  int keep_alive;    /* the conn may stay open after the response */
  http_body_kind body;
  uint64_t content_length; /* HTTP_BODY_LENGTH only */
  size_t head_len;         /* bytes of the head, leading empty lines and final CRLF
                              included: the body (if any) starts there */
} http_request;

/* Parse the request head at the start of buf[0, len). HTTP_OK fills *req (pointers into
 * buf); otherwise *req is unspecified. */
http_result http_parse_request(const char *buf, size_t len, const http_limits *lim,
                               http_request *req);

/* State of a chunked body being skipped (RFC 9112 7.1): chunk sizes in hex, chunk
 * extensions and trailer lines are read and thrown away; each such line may be at most
 * HTTP_CHUNK_LINE_MAX bytes. */
#define HTTP_CHUNK_LINE_MAX 4096
typedef struct http_chunked {
  int state;
  uint64_t left;  /* bytes of the current chunk's data still to skip */
  uint64_t total; /* data bytes so far (bounded by max_body) */
  size_t line;    /* bytes of the current size / extension / trailer line */
  int digits;     /* hex digits of the current chunk size */
} http_chunked;

void http_chunked_init(http_chunked *c);

/* Skip chunked body bytes from buf[0, len): *used gets how many belong to the body (all
 * of len unless it ended). HTTP_OK: the body ended (last chunk and trailers) after *used
 * bytes; HTTP_INCOMPLETE: all of len was body, more is needed; HTTP_BAD_REQUEST or
 * HTTP_CONTENT_TOO_LARGE: malformed or too big. Feeding a body in any number of pieces
 * gives the same result as feeding it whole. */
http_result http_chunked_skip(http_chunked *c, const char *buf, size_t len,
                              uint64_t max_body, size_t *used);

#endif
