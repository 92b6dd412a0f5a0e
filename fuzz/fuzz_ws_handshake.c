/*
 * libFuzzer target: the WebSocket handshake parsers (src/ws_handshake.c) and the
 * permessage-deflate negotiation (src/ws_deflate.c). Input: [mode] [cut] then a head.
 * mode bit 0: parse it as a request (server side) or as a response (client side); bits
 * 1-2 pick max_head (8192, 64, 512, 1). It aborts when an invariant breaks:
 *
 *  - the result is 1, 0 or a known error (400/431 for requests; CGNET_ECODEC or
 *    CGNET_EMSGSIZE for responses); a parsed head is no longer than its input or
 *    max_head and ends in CRLF CRLF; every view (method, target, path, fields, protocols,
 *    extensions and their parameters) lies inside it; the path is a prefix of the target;
 *  - a prefix of the input (at the cut, then the whole with the same `resume`, as a
 *    server keeps it) answers 0 or what the whole answers;
 *  - a request that checks out gets a 101 (with the first subprotocol offered and the
 *    negotiated permessage-deflate response, if any) that the client side parses and
 *    accepts, the deflate parameters agreeing on both sides (unless the request offered
 *    an 8-bit client window, which a zlib client refuses);
 *  - a refused request gets a 400 or 426 response that builds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"
#include "ws_deflate.h"
#include "ws_handshake.h"

#include "fuzz_check.h"

static void check_view(cgnet__ws_str s, const char *head, size_t head_len) {
  if (!s.ptr) {
    FZ_CHECK(s.len == 0);
    return;
  }
  FZ_CHECK(s.ptr >= head && s.ptr + s.len <= head + head_len);
}

static void check_head(const cgnet__ws_head *h, const char *buf, size_t len, size_t max) {
  FZ_CHECK(h->head_len >= 4 && h->head_len <= len && h->head_len <= max);
  FZ_CHECK(!memcmp(buf + h->head_len - 4, "\r\n\r\n", 4));
  FZ_CHECK(h->nfields <= CGNET__WS_MAX_HEADERS);
  FZ_CHECK(h->nprotocols <= CGNET__WS_MAX_PROTOCOLS);
  FZ_CHECK(h->nextensions <= CGNET__WS_MAX_EXTENSIONS);
  for (size_t i = 0; i < h->nfields; i++) {
    check_view(h->fields[i].name, buf, h->head_len);
    check_view(h->fields[i].value, buf, h->head_len);
    FZ_CHECK(h->fields[i].name.len > 0);
  }
  for (size_t i = 0; i < h->nprotocols; i++) {
    check_view(h->protocols[i], buf, h->head_len);
    FZ_CHECK(h->protocols[i].len > 0);
  }
  for (size_t i = 0; i < h->nextensions; i++) {
    const cgnet__ws_ext *x = &h->extensions[i];
    check_view(x->name, buf, h->head_len);
    FZ_CHECK(x->nparams <= CGNET__WS_MAX_EXT_PARAMS);
    for (size_t k = 0; k < x->nparams; k++) {
      check_view(x->params[k].name, buf, h->head_len);
      check_view(x->params[k].value, buf, h->head_len);
    }
  }
}

/* The server answers a good request; the client side must accept the answer. */
static void answer_and_verify(const cgnet__ws_request *r) {
  char key[CGNET__WS_KEY_LEN + 1];
  memcpy(key, r->key.ptr, CGNET__WS_KEY_LEN);
  key[CGNET__WS_KEY_LEN] = '\0';
  char proto[256] = "";
  if (r->head.nprotocols && r->head.protocols[0].len < sizeof proto) {
    memcpy(proto, r->head.protocols[0].ptr, r->head.protocols[0].len);
    proto[r->head.protocols[0].len] = '\0';
  }
  cgnet__ws_deflate_config cfg = {0};
  cgnet__ws_deflate_params server;
  char ext[256] = "";
  int neg = cgnet__ws_deflate_negotiate(r->head.extensions, r->head.nextensions, &cfg,
                                        &server, ext, sizeof ext);
  FZ_CHECK(neg == 0 || neg == 1);
  if (neg == 0) ext[0] = '\0';
  char resp[1024];
  long n = cgnet__ws_build_response(resp, sizeof resp, r->key, proto, ext);
  FZ_CHECK(n > 0);
  cgnet__ws_response s;
  size_t resume = 0;
  FZ_CHECK(cgnet__ws_parse_response(resp, (size_t)n, 0, &resume, &s) == 1);
  FZ_CHECK(s.head.head_len == (size_t)n);
  const char *protos[] = {proto};
  const char *exts[] = {"permessage-deflate"};
  const char *why = NULL;
  FZ_CHECK(cgnet__ws_check_response(&s, key, protos, proto[0] ? 1 : 0, exts, 1, &why) == 0);
  FZ_CHECK(s.head.nextensions == (size_t)neg);
  if (neg) {
    /* A client that offered an 8-bit window of its own is answered with it, which this
     * (zlib) client side could not honour; any other answer it takes as the server
     * meant it. */
    cgnet__ws_deflate_params client;
    int acc = cgnet__ws_deflate_accept(&s.head.extensions[0], &cfg, &client);
    if (server.client_max_window_bits == 8) {
      FZ_CHECK(acc == CGNET_ECODEC);
    } else {
      FZ_CHECK(acc == 0);
      FZ_CHECK(!memcmp(&client, &server, sizeof client));
    }
  }
}

static int parse_request(const char *buf, size_t len, size_t max, size_t cut) {
  cgnet__ws_request r;
  size_t resume = 0;
  int first = cgnet__ws_parse_request(buf, cut, max, &resume, &r);
  int whole = cgnet__ws_parse_request(buf, len, max, &resume, &r);
  FZ_CHECK(whole == 1 || whole == 0 || whole == 400 || whole == 431);
  FZ_CHECK(first == 0 || first == whole);
  if (whole != 1) return whole;
  check_head(&r.head, buf, len, max);
  check_view(r.method, buf, r.head.head_len);
  check_view(r.target, buf, r.head.head_len);
  FZ_CHECK(r.path.ptr == r.target.ptr && r.path.len <= r.target.len);
  FZ_CHECK(r.target.len > 0 && r.target.ptr[0] == '/');
  check_view(r.host, buf, r.head.head_len);
  check_view(r.key, buf, r.head.head_len);
  check_view(r.version, buf, r.head.head_len);
  check_view(r.origin, buf, r.head.head_len);
  const char *why = NULL;
  int status = cgnet__ws_check_request(&r, &why);
  FZ_CHECK(status == 0 || status == 400 || status == 426);
  if (status == 0) {
    FZ_CHECK(cgnet__ws_is_upgrade(&r));
    answer_and_verify(&r);
  } else {
    FZ_CHECK(why != NULL);
    char err[512];
    FZ_CHECK(cgnet__ws_build_error(err, sizeof err, status, why) > 0);
  }
  return whole;
}

static void parse_response(const char *buf, size_t len, size_t max, size_t cut) {
  cgnet__ws_response s;
  size_t resume = 0;
  int first = cgnet__ws_parse_response(buf, cut, max, &resume, &s);
  int whole = cgnet__ws_parse_response(buf, len, max, &resume, &s);
  FZ_CHECK(whole == 1 || whole == 0 || whole == CGNET_ECODEC || whole == CGNET_EMSGSIZE);
  FZ_CHECK(first == 0 || first == whole);
  if (whole != 1) return;
  check_head(&s.head, buf, len, max);
  FZ_CHECK(s.status >= 0 && s.status <= 999);
  check_view(s.reason, buf, s.head.head_len);
  check_view(s.accept, buf, s.head.head_len);
  const char *protos[] = {"chat"};
  const char *exts[] = {"permessage-deflate"};
  const char *why = NULL;
  int rc =
      cgnet__ws_check_response(&s, "dGhlIHNhbXBsZSBub25jZQ==", protos, 1, exts, 1, &why);
  FZ_CHECK(rc == 0 || (rc == CGNET_ECODEC && why != NULL));
  cgnet__ws_deflate_config cfg = {.peer_max_window_bits = 12};
  for (size_t i = 0; i < s.head.nextensions; i++) {
    cgnet__ws_deflate_params p;
    if (cgnet__ws_deflate_accept(&s.head.extensions[i], &cfg, &p) == 0) {
      FZ_CHECK(p.server_max_window_bits >= 8 && p.server_max_window_bits <= 12);
      FZ_CHECK(p.client_max_window_bits >= 9 && p.client_max_window_bits <= 15);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 2) return 0;
  static const size_t heads[] = {8192, 64, 512, 1};
  size_t max = heads[(d[0] >> 1) & 3];
  size_t len = n - 2;
  char *buf = malloc(len ? len : 1); /* exactly the input: reads past it trap */
  FZ_CHECK(buf != NULL);
  memcpy(buf, d + 2, len);
  size_t cut = len ? d[1] % (len + 1) : 0;
  if (len > 255 && d[1] == 0xff) cut = len / 2;
  if (d[0] & 1)
    parse_response(buf, len, max, cut);
  else
    parse_request(buf, len, max, cut);
  free(buf);
  return 0;
}
