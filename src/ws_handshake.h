/*
 * The WebSocket opening handshake (RFC 6455 section 4): the server side parses an
 * HTTP/1.1 upgrade request and builds the 101 response or an error response; the client
 * side builds the request and checks the 101 response. Pure: parsed heads point into the
 * caller's buffer (no copy, no allocation); any thread.
 *
 * Parsing is stateless and incremental: hand the parser everything received since the
 * start of the head; it answers 0 ("need more") until the blank line that ends the head
 * has arrived, and the answer for a prefix is either 0 or the answer for the whole. A
 * bare LF fails at once (it could never end a head). `resume` (start it at 0, keep it
 * between calls) lets a head that dribbles in be scanned once, not once per piece.
 *
 * Syntax accepted (anything else is 400): start line with single spaces; header lines
 * NAME ":" OWS VALUE OWS CRLF, NAME a token, VALUE without control bytes but HTAB; no
 * obs-fold; no empty line before the start line. A head longer than max_head, or with
 * more than CGNET__WS_MAX_HEADERS header lines, is 431.
 */
#ifndef CGNET_WS_HANDSHAKE_H
#define CGNET_WS_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#define CGNET__WS_DEFAULT_MAX_HEAD 8192
#define CGNET__WS_MAX_HEADERS 64
#define CGNET__WS_MAX_PROTOCOLS 16
#define CGNET__WS_MAX_EXTENSIONS 8
#define CGNET__WS_MAX_EXT_PARAMS 8
#define CGNET__WS_KEY_LEN 24    /* base64 of 16 bytes */
#define CGNET__WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* A view into the parsed buffer (ptr NULL when absent). */
typedef struct cgnet__ws_str {
  const char *ptr;
  size_t len;
} cgnet__ws_str;

typedef struct cgnet__ws_field {
  cgnet__ws_str name, value; /* value without surrounding whitespace */
} cgnet__ws_field;

typedef struct cgnet__ws_ext_param {
  cgnet__ws_str name;
  cgnet__ws_str value; /* a quoted value without its quotes; ptr NULL: no value */
} cgnet__ws_ext_param;

/* One extension of a Sec-WebSocket-Extensions list, with its parameters. */
typedef struct cgnet__ws_ext {
  cgnet__ws_str name;
  cgnet__ws_ext_param params[CGNET__WS_MAX_EXT_PARAMS];
  size_t nparams;
} cgnet__ws_ext;

/* What both a request and a response carry. */
typedef struct cgnet__ws_head {
  size_t head_len; /* bytes up to and including the blank line */
  cgnet__ws_field fields[CGNET__WS_MAX_HEADERS];
  size_t nfields;
  int upgrade_websocket;  /* Upgrade lists "websocket" (any case) */
  int connection_upgrade; /* Connection lists "upgrade" (any case) */
  cgnet__ws_str protocols[CGNET__WS_MAX_PROTOCOLS]; /* Sec-WebSocket-Protocol, all lines */
  size_t nprotocols;
  size_t protocol_lines;
  cgnet__ws_ext extensions[CGNET__WS_MAX_EXTENSIONS]; /* Sec-WebSocket-Extensions */
  size_t nextensions;
} cgnet__ws_head;

typedef struct cgnet__ws_request {
  cgnet__ws_head head;
  cgnet__ws_str method, target, path; /* path: target up to '?' */
  int minor_version;                  /* HTTP/1.x */
  cgnet__ws_str host, key, version, origin;
  int has_body; /* Content-Length other than 0, or Transfer-Encoding */
} cgnet__ws_request;

typedef struct cgnet__ws_response {
  cgnet__ws_head head;
  int status;
  int minor_version;
  cgnet__ws_str reason, accept;
} cgnet__ws_response;

/* Parse a request head from buf[0, len) (max_head 0: CGNET__WS_DEFAULT_MAX_HEAD).
 * Returns 1 (parsed: r describes it), 0 (need more) or the HTTP status to answer: 400
 * (malformed) or 431 (too large). Any request parses; cgnet__ws_check_request says
 * whether it is a valid WebSocket upgrade. */
int cgnet__ws_parse_request(const char *buf, size_t len, size_t max_head, size_t *resume,
                            cgnet__ws_request *r);

/* 1 if the request asks for a WebSocket upgrade at all (Upgrade: websocket): a server
 * sharing a listener with plain HTTP routes on it. */
static inline int cgnet__ws_is_upgrade(const cgnet__ws_request *r) {
  return r->head.upgrade_websocket;
}

/* Check a parsed request against RFC 6455 section 4.2.1. Returns 0 if it is a valid
 * upgrade, else the status to answer: 400 (not GET, not HTTP/1.1, no single Host, no
 * Upgrade: websocket or Connection: upgrade, a key that is not 16 bytes in base64, a
 * body) or 426 (Sec-WebSocket-Version missing or not 13); *why says which. */
int cgnet__ws_check_request(const cgnet__ws_request *r, const char **why);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + the RFC's GUID)), NUL-terminated. */
void cgnet__ws_accept_value(const char *key, size_t key_len,
                            char out[CGNET__WS_ACCEPT_LEN + 1]);

/* The 101 response for a request's key; protocol and extensions (the chosen subprotocol,
 * the accepted extensions' response value) NULL or "" to leave the header out. Returns
 * the length written to out, CGNET_ENOBUFS if cap is too small, CGNET_EINVAL if a value
 * holds a control byte. */
long cgnet__ws_build_response(char *out, size_t cap, cgnet__ws_str key,
                              const char *protocol, const char *extensions);

/* An error response (status 400-599) with `body` as text/plain (NULL: the reason
 * phrase) and Connection: close; a 426 also says Sec-WebSocket-Version: 13. Returns the
 * length, CGNET_ENOBUFS or CGNET_EINVAL. */
long cgnet__ws_build_error(char *out, size_t cap, int status, const char *body);

/* Client side. */

/* The request's Sec-WebSocket-Key from 16 bytes of the caller's randomness. */
void cgnet__ws_make_key(const uint8_t random16[16], char key[CGNET__WS_KEY_LEN + 1]);

typedef struct cgnet__ws_client_request {
  const char *host;       /* Host header value, e.g. "example.com:8080" (required) */
  const char *path;       /* request target, starting with '/' (required) */
  const char *origin;     /* NULL: none */
  const char *protocols;  /* Sec-WebSocket-Protocol value, e.g. "chat, superchat" */
  const char *extensions; /* Sec-WebSocket-Extensions value */
} cgnet__ws_client_request;

/* The request head. Returns the length, CGNET_ENOBUFS, or CGNET_EINVAL (missing host or
 * path, a path not starting with '/', a value holding a control byte). */
long cgnet__ws_build_request(char *out, size_t cap, const cgnet__ws_client_request *req,
                             const char key[CGNET__WS_KEY_LEN + 1]);

/* Parse a response head: 1, 0 (need more), CGNET_ECODEC (malformed) or CGNET_EMSGSIZE
 * (larger than max_head; 0: CGNET__WS_DEFAULT_MAX_HEAD). Bytes after head_len are the
 * first frames. */
int cgnet__ws_parse_response(const char *buf, size_t len, size_t max_head, size_t *resume,
                             cgnet__ws_response *r);

/* Check a parsed response to a request that sent `key` and offered the subprotocols and
 * extension names given: status 101, Upgrade: websocket, Connection: upgrade, the accept
 * value, at most one subprotocol and only one that was offered, only offered extensions
 * and each at most once. Returns 0, or CGNET_ECODEC with *why saying which. */
int cgnet__ws_check_response(const cgnet__ws_response *r, const char *key,
                             const char *const *protocols, size_t nprotocols,
                             const char *const *extensions, size_t nextensions,
                             const char **why);

/* Case-insensitive comparison of a view with a NUL-terminated string. */
int cgnet__ws_str_ieq(cgnet__ws_str s, const char *lit);

#endif
