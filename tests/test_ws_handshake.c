/* Tests for the WebSocket opening handshake: src/sha1.c and src/base64.c against their
 * standards' vectors, and src/ws_handshake.c (request and response heads, both sides). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"
#include "cgnet.h"
#include "sha1.h"
#include "ws_handshake.h"

/* ---- SHA-1 (FIPS 180 examples) and base64 (RFC 4648 section 10) -------------------- */

static void hex(const uint8_t *d, size_t n, char *out) {
  for (size_t i = 0; i < n; i++)
    sprintf(out + 2 * i, "%02x", d[i]);
}

static void sha1_vectors(void **state) {
  (void)state;
  static const struct {
    const char *in, *want;
  } v[] = {
      {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
      {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklm"
       "nopqrlmnopqrsmnopqrstnopqrstu",
       "a49b2446a02c645bf419f995b67091253a04a259"},
  };
  uint8_t d[CGNET__SHA1_LEN];
  char h[41];
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    size_t n = strlen(v[i].in);
    cgnet__sha1_local(v[i].in, n, d);
    hex(d, sizeof d, h);
    assert_string_equal(h, v[i].want);
    cgnet__sha1(v[i].in, n, d);
    hex(d, sizeof d, h);
    assert_string_equal(h, v[i].want);
    /* Fed in two pieces, split anywhere. */
    for (size_t k = 0; k <= n; k++) {
      cgnet__sha1_ctx c;
      cgnet__sha1_init(&c);
      cgnet__sha1_update(&c, v[i].in, k);
      cgnet__sha1_update(&c, v[i].in + k, n - k);
      cgnet__sha1_final(&c, d);
      hex(d, sizeof d, h);
      assert_string_equal(h, v[i].want);
    }
  }
  /* One million 'a', in uneven pieces. */
  static char a[1000];
  memset(a, 'a', sizeof a);
  cgnet__sha1_ctx c;
  cgnet__sha1_init(&c);
  for (size_t done = 0, step = 1; done < 1000000; done += step, step = step % 997 + 1) {
    if (done + step > 1000000) step = 1000000 - done;
    cgnet__sha1_update(&c, a, step);
  }
  cgnet__sha1_final(&c, d);
  hex(d, sizeof d, h);
  assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

/* Every length around the padding boundary (55, 56, 63, 64 bytes): one-shot and
 * byte-at-a-time agree. */
static void sha1_block_boundaries(void **state) {
  (void)state;
  uint8_t msg[200];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i * 13 + 5);
  for (size_t n = 0; n <= sizeof msg; n++) {
    uint8_t whole[CGNET__SHA1_LEN], bytes[CGNET__SHA1_LEN];
    cgnet__sha1_local(msg, n, whole);
    cgnet__sha1_ctx c;
    cgnet__sha1_init(&c);
    for (size_t i = 0; i < n; i++)
      cgnet__sha1_update(&c, msg + i, 1);
    cgnet__sha1_final(&c, bytes);
    assert_memory_equal(whole, bytes, sizeof whole);
  }
  /* Known: 64 'a's. */
  uint8_t d[CGNET__SHA1_LEN];
  char h[41];
  char a64[64];
  memset(a64, 'a', sizeof a64);
  cgnet__sha1_local(a64, 64, d);
  hex(d, sizeof d, h);
  assert_string_equal(h, "0098ba824b5c16427bd7a1122a5a442a25ec644d");
}

static void base64_vectors(void **state) {
  (void)state;
  static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; i++) {
    char out[16];
    size_t n = strlen(plain[i]);
    assert_int_equal(cgnet__base64_encode((const uint8_t *)plain[i], n, out),
                     strlen(coded[i]));
    assert_int_equal(cgnet__base64_encoded_len(n), strlen(coded[i]));
    assert_string_equal(out, coded[i]);
    uint8_t back[16];
    assert_int_equal(cgnet__base64_decode(coded[i], strlen(coded[i]), back, sizeof back),
                     (long)n);
    assert_memory_equal(back, plain[i], n);
  }
  static const char *const bad[] = {
      "Zh==", "Zm9=", "Zg=", "Z===", "Zm9v!A==", "Zg==Zg==", "=Zg=", "Zm 9", "Zm9vYg=a"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t out[16];
    assert_int_equal(cgnet__base64_decode(bad[i], strlen(bad[i]), out, sizeof out), -1);
  }
  uint8_t small[2];
  assert_int_equal(cgnet__base64_decode("Zm9v", 4, small, sizeof small), -1);
}

/* RFC 6455 section 1.3's example. */
static void accept_value_rfc_example(void **state) {
  (void)state;
  char out[CGNET__WS_ACCEPT_LEN + 1];
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
  cgnet__ws_accept_value(key, strlen(key), out);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- server: requests -------------------------------------------------------------- */

static const char RFC_REQUEST[] = "GET /chat?room=1 HTTP/1.1\r\n"
                                  "Host: server.example.com\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Origin: http://example.com\r\n"
                                  "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "\r\n";

static int parse(const char *s, size_t n, size_t max_head, cgnet__ws_request *r) {
  size_t resume = 0;
  return cgnet__ws_parse_request(s, n, max_head, &resume, r);
}

static int str_is(cgnet__ws_str s, const char *want) {
  return s.ptr && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static void request_rfc_example(void **state) {
  (void)state;
  cgnet__ws_request r;
  size_t n = sizeof RFC_REQUEST - 1;
  /* Trailing bytes (a first frame) are not part of the head. */
  char *buf = malloc(n + 3);
  assert_non_null(buf);
  memcpy(buf, RFC_REQUEST, n);
  memcpy(buf + n, "\x81\x80x", 3);
  assert_int_equal(parse(buf, n + 3, 0, &r), 1);
  assert_int_equal(r.head.head_len, n);
  assert_true(str_is(r.method, "GET"));
  assert_true(str_is(r.target, "/chat?room=1"));
  assert_true(str_is(r.path, "/chat"));
  assert_int_equal(r.minor_version, 1);
  assert_true(str_is(r.host, "server.example.com"));
  assert_true(str_is(r.key, "dGhlIHNhbXBsZSBub25jZQ=="));
  assert_true(str_is(r.version, "13"));
  assert_true(str_is(r.origin, "http://example.com"));
  assert_int_equal(r.head.nprotocols, 2);
  assert_true(str_is(r.head.protocols[0], "chat"));
  assert_true(str_is(r.head.protocols[1], "superchat"));
  assert_true(cgnet__ws_is_upgrade(&r));
  assert_int_equal(r.head.nfields, 7);
  assert_true(str_is(r.head.fields[6].name, "Sec-WebSocket-Version"));
  const char *why = NULL;
  assert_int_equal(cgnet__ws_check_request(&r, &why), 0);

  char out[512];
  long len = cgnet__ws_build_response(out, sizeof out, r.key, "chat", NULL);
  const char *want = "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: chat\r\n"
                     "\r\n";
  assert_int_equal(len, (long)strlen(want));
  assert_memory_equal(out, want, strlen(want));
  assert_int_equal(cgnet__ws_build_response(out, (size_t)len, r.key, "chat", NULL),
                   CGNET_ENOBUFS);
  assert_int_equal(cgnet__ws_build_response(out, sizeof out, r.key, "a\r\nX: y", NULL),
                   CGNET_EINVAL);
  free(buf);
}

/* A prefix parses as "need more" or as the whole does; with `resume` kept across the
 * pieces, as a server would keep it. */
static void request_split_at_every_byte(void **state) {
  (void)state;
  size_t n = sizeof RFC_REQUEST - 1;
  for (size_t k = 0; k < n; k++) {
    cgnet__ws_request r;
    size_t resume = 0;
    char *piece = malloc(k + 1); /* exact size: a read past the bytes that came traps */
    assert_non_null(piece);
    memcpy(piece, RFC_REQUEST, k);
    assert_int_equal(cgnet__ws_parse_request(piece, k, 0, &resume, &r), 0);
    free(piece);
    assert_int_equal(cgnet__ws_parse_request(RFC_REQUEST, n, 0, &resume, &r), 1);
    assert_int_equal(r.head.head_len, n);
  }
  /* Byte by byte with one resume value. */
  cgnet__ws_request r;
  size_t resume = 0;
  for (size_t k = 0; k < n; k++)
    assert_int_equal(cgnet__ws_parse_request(RFC_REQUEST, k, 0, &resume, &r), 0);
  assert_int_equal(cgnet__ws_parse_request(RFC_REQUEST, n, 0, &resume, &r), 1);
}

static void request_limits(void **state) {
  (void)state;
  cgnet__ws_request r;
  size_t n = sizeof RFC_REQUEST - 1;
  assert_int_equal(parse(RFC_REQUEST, n, n, &r), 1);
  assert_int_equal(parse(RFC_REQUEST, n, n - 1, &r), 431);
  assert_int_equal(parse(RFC_REQUEST, n - 1, n - 1, &r), 431);
  /* An endless head stops at 8 KiB by default. */
  size_t big = 9000;
  char *buf = malloc(big);
  assert_non_null(buf);
  memset(buf, 'a', big);
  memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
  assert_int_equal(parse(buf, CGNET__WS_DEFAULT_MAX_HEAD - 1, 0, &r), 0);
  assert_int_equal(parse(buf, CGNET__WS_DEFAULT_MAX_HEAD, 0, &r), 431);
  assert_int_equal(parse(buf, big, 0, &r), 431);
  /* Too many header lines. */
  size_t at = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
  for (int i = 0; i <= CGNET__WS_MAX_HEADERS; i++)
    at += (size_t)sprintf(buf + at, "X-%d: y\r\n", i);
  at += (size_t)sprintf(buf + at, "\r\n");
  assert_int_equal(parse(buf, at, 0, &r), 431);
  free(buf);
}

static void request_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "GET / HTTP/1.1\n\n",
      "GET / HTTP/1.1\r\nHost: x\n\r\n",
      "\r\nGET / HTTP/1.1\r\n\r\n",
      "GET  / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1 \r\n\r\n",
      "GET x HTTP/1.1\r\n\r\n",
      "GET / HTTP/2.0\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\n: x\r\n\r\n",
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
      "GET /\r HTTP/1.1\r\n\r\n",
      "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: a\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a b\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a/b\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: ;x\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a; =1\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a; b=\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a; b=\"1\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a; b=\"\\1\"\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a; b=\"1 2\"\r\n\r\n",
      "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a b\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cgnet__ws_request r;
    int rc = parse(bad[i], strlen(bad[i]), 0, &r);
    if (rc != 400) fail_msg("case %zu: got %d, want 400", i, rc);
  }
  /* A NUL inside a value. */
  const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
  cgnet__ws_request r;
  assert_int_equal(parse(nul, sizeof nul - 1, 0, &r), 400);
}

/* Replace (or drop, with NULL) the header line starting with `name` in the RFC's request,
 * or add `line` when name is NULL. */
static size_t variant(char *out, const char *name, const char *line) {
  const char *src = RFC_REQUEST;
  size_t at = 0;
  const char *p = src;
  while (*p) {
    const char *eol = strstr(p, "\r\n") + 2;
    int blank = eol - p == 2;
    if (blank && !name && line) at += (size_t)sprintf(out + at, "%s\r\n", line);
    if (name && strncmp(p, name, strlen(name)) == 0) {
      if (line) at += (size_t)sprintf(out + at, "%s\r\n", line);
    } else {
      memcpy(out + at, p, (size_t)(eol - p));
      at += (size_t)(eol - p);
    }
    p = eol;
  }
  out[at] = '\0';
  return at;
}

static int check_variant(const char *name, const char *line) {
  char buf[1024];
  size_t n = variant(buf, name, line);
  cgnet__ws_request r;
  int rc = parse(buf, n, 0, &r);
  if (rc != 1) return rc;
  const char *why = NULL;
  rc = cgnet__ws_check_request(&r, &why);
  if (rc) assert_non_null(why);
  return rc;
}

static void request_checks(void **state) {
  (void)state;
  assert_int_equal(check_variant("GET", "POST /chat HTTP/1.1"), 400);
  assert_int_equal(check_variant("GET", "get /chat HTTP/1.1"), 400);
  assert_int_equal(check_variant("GET", "GET /chat HTTP/1.0"), 400);
  assert_int_equal(check_variant("Host", NULL), 400);
  assert_int_equal(check_variant("Host", "Host:"), 400);
  assert_int_equal(check_variant("Upgrade", NULL), 400);
  assert_int_equal(check_variant("Upgrade", "Upgrade: h2c"), 400);
  assert_int_equal(check_variant("Upgrade", "Upgrade: WebSocket"), 0);
  assert_int_equal(check_variant("Upgrade", "Upgrade: h2c, websocket"), 0);
  assert_int_equal(check_variant("Connection", NULL), 400);
  assert_int_equal(check_variant("Connection", "Connection: keep-alive"), 400);
  assert_int_equal(check_variant("Connection", "Connection: keep-alive, UPGRADE"), 0);
  assert_int_equal(check_variant("Connection", "Connection: upgraded"), 400);
  assert_int_equal(check_variant("Sec-WebSocket-Version", NULL), 426);
  assert_int_equal(check_variant("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"), 426);
  assert_int_equal(check_variant("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8"),
                   426);
  assert_int_equal(check_variant("Sec-WebSocket-Key", NULL), 400);
  assert_int_equal(check_variant("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhl"), 400);
  /* 24 characters that decode to 17 bytes cannot be; 15 bytes, or bad padding bits. */
  assert_int_equal(
      check_variant("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR=="),
      400);
  assert_int_equal(
      check_variant("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j"), 400);
  assert_int_equal(
      check_variant("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=!"),
      400);
  assert_int_equal(check_variant(NULL, "Content-Length: 5"), 400);
  assert_int_equal(check_variant(NULL, "Content-Length: 0"), 0);
  assert_int_equal(check_variant(NULL, "Transfer-Encoding: chunked"), 400);
  /* Not an upgrade at all: a plain HTTP request parses and says so. */
  cgnet__ws_request r;
  const char *plain = "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(parse(plain, strlen(plain), 0, &r), 1);
  assert_false(cgnet__ws_is_upgrade(&r));
  assert_int_equal(cgnet__ws_check_request(&r, NULL), 400);
}

static void request_extensions(void **state) {
  (void)state;
  char buf[1024];
  size_t n =
      variant(buf, NULL,
              "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, "
              "permessage-deflate ; server_max_window_bits = \"10\" ;"
              "server_no_context_takeover\r\n"
              "Sec-WebSocket-Extensions: x-foo,,");
  cgnet__ws_request r;
  assert_int_equal(parse(buf, n, 0, &r), 1);
  assert_int_equal(r.head.nextensions, 3);
  const cgnet__ws_ext *x = r.head.extensions;
  assert_true(str_is(x[0].name, "permessage-deflate"));
  assert_int_equal(x[0].nparams, 1);
  assert_true(str_is(x[0].params[0].name, "client_max_window_bits"));
  assert_null(x[0].params[0].value.ptr);
  assert_true(str_is(x[1].name, "permessage-deflate"));
  assert_int_equal(x[1].nparams, 2);
  assert_true(str_is(x[1].params[0].name, "server_max_window_bits"));
  assert_true(str_is(x[1].params[0].value, "10"));
  assert_true(str_is(x[1].params[1].name, "server_no_context_takeover"));
  assert_true(str_is(x[2].name, "x-foo"));
  assert_int_equal(x[2].nparams, 0);
  assert_int_equal(cgnet__ws_check_request(&r, NULL), 0);
  /* Protocols on two lines add up. */
  n = variant(buf, NULL, "Sec-WebSocket-Protocol: v2.chat");
  assert_int_equal(parse(buf, n, 0, &r), 1);
  assert_int_equal(r.head.nprotocols, 3);
  assert_true(str_is(r.head.protocols[2], "v2.chat"));
}

static void error_responses(void **state) {
  (void)state;
  char out[512];
  long n = cgnet__ws_build_error(out, sizeof out, 426, NULL);
  const char *want = "HTTP/1.1 426 Upgrade Required\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: 16\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "Upgrade Required";
  assert_int_equal(n, (long)strlen(want));
  assert_memory_equal(out, want, strlen(want));
  n = cgnet__ws_build_error(out, sizeof out, 400, "bad key\n");
  assert_true(n > 0);
  out[n] = '\0';
  assert_non_null(strstr(out, "HTTP/1.1 400 Bad Request\r\n"));
  assert_null(strstr(out, "Sec-WebSocket-Version"));
  assert_non_null(strstr(out, "Content-Length: 8\r\n"));
  assert_string_equal(out + n - 12, "\r\n\r\nbad key\n");
  n = cgnet__ws_build_error(out, sizeof out, 431, NULL);
  out[n] = '\0';
  assert_non_null(strstr(out, "431 Request Header Fields Too Large"));
  n = cgnet__ws_build_error(out, sizeof out, 403, "no");
  out[n] = '\0';
  assert_non_null(strstr(out, "403 Forbidden"));
  assert_int_equal(cgnet__ws_build_error(out, sizeof out, 200, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_error(out, 10, 400, NULL), CGNET_ENOBUFS);
}

/* ---- client: request out, response back -------------------------------------------- */

static void client_round_trip(void **state) {
  (void)state;
  uint8_t rnd[16];
  for (int i = 0; i < 16; i++)
    rnd[i] = (uint8_t)(i * 17 + 3);
  char key[CGNET__WS_KEY_LEN + 1];
  cgnet__ws_make_key(rnd, key);
  assert_int_equal(strlen(key), CGNET__WS_KEY_LEN);
  cgnet__ws_client_request creq = {.host = "127.0.0.1:9000",
                                   .path = "/feed?x=1",
                                   .origin = "http://127.0.0.1",
                                   .protocols = "v1, v2",
                                   .extensions =
                                       "permessage-deflate; client_max_window_bits"};
  char req[1024];
  long n = cgnet__ws_build_request(req, sizeof req, &creq, key);
  assert_true(n > 0);

  /* The server side takes it. */
  cgnet__ws_request r;
  assert_int_equal(parse(req, (size_t)n, 0, &r), 1);
  assert_int_equal(cgnet__ws_check_request(&r, NULL), 0);
  assert_true(str_is(r.path, "/feed"));
  assert_true(str_is(r.key, key));
  assert_int_equal(r.head.nprotocols, 2);
  assert_int_equal(r.head.nextensions, 1);
  char resp[512];
  long m = cgnet__ws_build_response(resp, sizeof resp, r.key, "v2", "permessage-deflate");
  assert_true(m > 0);

  /* The client checks the answer. */
  const char *protos[] = {"v1", "v2"};
  const char *exts[] = {"permessage-deflate"};
  cgnet__ws_response s;
  size_t resume = 0;
  for (long k = 0; k < m; k++)
    assert_int_equal(cgnet__ws_parse_response(resp, (size_t)k, 0, &resume, &s), 0);
  assert_int_equal(cgnet__ws_parse_response(resp, (size_t)m, 0, &resume, &s), 1);
  assert_int_equal(s.status, 101);
  assert_int_equal(s.head.head_len, (size_t)m);
  const char *why = NULL;
  assert_int_equal(cgnet__ws_check_response(&s, key, protos, 2, exts, 1, &why), 0);
  /* A different key, or offers that do not include what came back, fail. */
  char other[CGNET__WS_KEY_LEN + 1];
  rnd[0] ^= 1;
  cgnet__ws_make_key(rnd, other);
  assert_int_equal(cgnet__ws_check_response(&s, other, protos, 2, exts, 1, &why),
                   CGNET_ECODEC);
  assert_non_null(strstr(why, "Accept"));
  assert_int_equal(cgnet__ws_check_response(&s, key, protos, 1, exts, 1, &why),
                   CGNET_ECODEC);
  assert_int_equal(cgnet__ws_check_response(&s, key, protos, 2, exts, 0, &why),
                   CGNET_ECODEC);

  /* Bad client requests are refused before anything is written. */
  cgnet__ws_client_request bad = creq;
  bad.path = "nopath";
  assert_int_equal(cgnet__ws_build_request(req, sizeof req, &bad, key), CGNET_EINVAL);
  bad = creq;
  bad.host = "a\r\nX-Injected: 1";
  assert_int_equal(cgnet__ws_build_request(req, sizeof req, &bad, key), CGNET_EINVAL);
  bad = creq;
  bad.path = "/caf\xc3\xa9";
  assert_int_equal(cgnet__ws_build_request(req, sizeof req, &bad, key), CGNET_EINVAL);
  bad = creq;
  bad.path = "/a b";
  assert_int_equal(cgnet__ws_build_request(req, sizeof req, &bad, key), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_request(req, 20, &creq, key), CGNET_ENOBUFS);
}

static int check_response_text(const char *text, const char *key) {
  cgnet__ws_response s;
  size_t resume = 0;
  int rc = cgnet__ws_parse_response(text, strlen(text), 0, &resume, &s);
  if (rc != 1) return rc;
  const char *protos[] = {"v1", "v2"};
  const char *exts[] = {"permessage-deflate"};
  return cgnet__ws_check_response(&s, key, protos, 2, exts, 1, NULL);
}

static void client_bad_responses(void **state) {
  (void)state;
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
#define OK_HEAD                                                                            \
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"      \
  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
  assert_int_equal(check_response_text(OK_HEAD "\r\n", key), 0);
  assert_int_equal(check_response_text(OK_HEAD "Sec-WebSocket-Protocol: v1\r\n\r\n", key),
                   0);
  assert_int_equal(check_response_text("HTTP/1.1 101\r\nUpgrade: websocket\r\n"
                                       "Connection: upgrade\r\nSec-WebSocket-Accept: "
                                       "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                                       key),
                   0);
  static const char *const bad[] = {
      "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOa=\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Protocol: v3\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Protocol: v1, v2\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Protocol: v1\r\nSec-WebSocket-Protocol: v1\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Protocol:\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Extensions: x-other\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n\r\n",
      OK_HEAD "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      "HTTP/1.1 10 Switching\r\n\r\n",
      "HTTP/1.1 1011\r\n\r\n",
      "HTTP/1.1 101 Switching\n\r\n",
      "HTTP/3 101 x\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = check_response_text(bad[i], key);
    if (rc != CGNET_ECODEC) fail_msg("case %zu: got %d", i, rc);
  }
#undef OK_HEAD
  /* A response head that never ends. */
  char big[CGNET__WS_DEFAULT_MAX_HEAD + 10];
  memset(big, 'x', sizeof big);
  memcpy(big, "HTTP/1.1 101 x\r\nX: ", 19);
  cgnet__ws_response s;
  size_t resume = 0;
  assert_int_equal(cgnet__ws_parse_response(big, sizeof big, 0, &resume, &s),
                   CGNET_EMSGSIZE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sha1_vectors),         cmocka_unit_test(sha1_block_boundaries),
      cmocka_unit_test(base64_vectors),       cmocka_unit_test(accept_value_rfc_example),
      cmocka_unit_test(request_rfc_example),  cmocka_unit_test(request_split_at_every_byte),
      cmocka_unit_test(request_limits),       cmocka_unit_test(request_malformed),
      cmocka_unit_test(request_checks),       cmocka_unit_test(request_extensions),
      cmocka_unit_test(error_responses),      cmocka_unit_test(client_round_trip),
      cmocka_unit_test(client_bad_responses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
