/* Tests for src/ws_deflate.c: permessage-deflate negotiation (RFC 7692 section 7.1) and
 * message compression with bounded inflation. The (de)compression tests skip in a build
 * without zlib, where the test instead checks that nothing is ever negotiated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cgnet.h"
#include "ws_deflate.h"
#include "ws_handshake.h"

/* ---- helpers ------------------------------------------------------------------------- */

/* Parse `value` as a request's Sec-WebSocket-Extensions; r keeps views into buf. */
static void parse_offers(const char *value, char *buf, size_t cap, cgnet__ws_request *r) {
  int n = snprintf(
      buf, cap, "GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: %s\r\n\r\n", value);
  assert_true(n > 0 && (size_t)n < cap);
  size_t resume = 0;
  assert_int_equal(cgnet__ws_parse_request(buf, (size_t)n, 0, &resume, r), 1);
}

/* Negotiate offers `value` under cfg: the response value, or "" when declined. */
static const char *negotiate(const char *value, const cgnet__ws_deflate_config *cfg,
                             cgnet__ws_deflate_params *agreed) {
  static char out[256];
  char buf[1024];
  cgnet__ws_request r;
  parse_offers(value, buf, sizeof buf, &r);
  int rc = cgnet__ws_deflate_negotiate(r.head.extensions, r.head.nextensions, cfg, agreed,
                                       out, sizeof out);
  assert_true(rc == 0 || rc == 1);
  return rc == 1 ? out : "";
}

typedef struct sink_buf {
  uint8_t *b;
  size_t len, cap;
  size_t calls, biggest;
} sink_buf;

static int collect(void *arg, const uint8_t *p, size_t n) {
  sink_buf *s = arg;
  assert_true(n > 0 && n <= CGNET__WS_INFLATE_CHUNK);
  if (s->len + n > s->cap) {
    s->cap = (s->len + n) * 2;
    s->b = realloc(s->b, s->cap);
    assert_non_null(s->b);
  }
  memcpy(s->b + s->len, p, n);
  s->len += n;
  s->calls++;
  if (n > s->biggest) s->biggest = n;
  return 0;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

static const cgnet__ws_deflate_config DEFAULTS = {0};

#define NEED_ZLIB()                                                                        \
  do {                                                                                     \
    if (!cgnet__ws_deflate_available()) {                                                  \
      print_message("skipped: this build has no zlib (CGNET_WITH_ZLIB)\n");                \
      skip();                                                                              \
    }                                                                                      \
  } while (0)

/* ---- negotiation --------------------------------------------------------------------- */

static void server_negotiation(void **state) {
  (void)state;
  if (!cgnet__ws_deflate_available()) {
    /* Built without zlib: a perfectly good offer is declined, and no offer is made. */
    cgnet__ws_deflate_params a;
    char out[128];
    assert_string_equal(negotiate("permessage-deflate", &DEFAULTS, &a), "");
    assert_int_equal(cgnet__ws_deflate_offer(&DEFAULTS, out, sizeof out), 0);
    print_message("built without zlib: checked only that deflate is never negotiated\n");
    return;
  }
  static const struct {
    const char *offer;
    cgnet__ws_deflate_config cfg;
    const char *response; /* "" declined */
    uint8_t snct, cnct, smwb, cmwb;
  } cases[] = {
      {"permessage-deflate", {0}, "permessage-deflate", 0, 0, 15, 15},
      {"PerMessage-Deflate", {0}, "permessage-deflate", 0, 0, 15, 15},
      {"permessage-deflate; client_max_window_bits",
       {0},
       "permessage-deflate",
       0,
       0,
       15,
       15},
      {"permessage-deflate; client_max_window_bits",
       {.peer_max_window_bits = 10},
       "permessage-deflate; client_max_window_bits=10",
       0,
       0,
       15,
       10},
      {"permessage-deflate; client_max_window_bits=12",
       {0},
       "permessage-deflate; client_max_window_bits=12",
       0,
       0,
       15,
       12},
      {"permessage-deflate; client_max_window_bits=12",
       {.peer_max_window_bits = 10},
       "permessage-deflate; client_max_window_bits=10",
       0,
       0,
       15,
       10},
      {"permessage-deflate; client_max_window_bits=9",
       {.peer_max_window_bits = 10},
       "permessage-deflate; client_max_window_bits=9",
       0,
       0,
       15,
       9},
      /* The client window may not be named unless the client allowed it. */
      {"permessage-deflate",
       {.peer_max_window_bits = 10},
       "permessage-deflate",
       0,
       0,
       15,
       15},
      {"permessage-deflate; server_max_window_bits=10",
       {0},
       "permessage-deflate; server_max_window_bits=10",
       0,
       0,
       10,
       15},
      {"permessage-deflate; server_max_window_bits=\"12\"",
       {.max_window_bits = 11},
       "permessage-deflate; server_max_window_bits=11",
       0,
       0,
       11,
       15},
      {"permessage-deflate; server_no_context_takeover",
       {0},
       "permessage-deflate; server_no_context_takeover",
       1,
       0,
       15,
       15},
      {"permessage-deflate; client_no_context_takeover",
       {0},
       "permessage-deflate; client_no_context_takeover",
       0,
       1,
       15,
       15},
      {"permessage-deflate",
       {.no_context_takeover = 1},
       "permessage-deflate; server_no_context_takeover",
       1,
       0,
       15,
       15},
      {"x-foo, permessage-deflate; server_max_window_bits=8, permessage-deflate",
       {0},
       "permessage-deflate",
       0,
       0,
       15,
       15},
      /* Declined: an 8-bit server window, unknown, repeated or malformed parameters. */
      {"permessage-deflate; server_max_window_bits=8", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; server_max_window_bits", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; server_max_window_bits=7", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; server_max_window_bits=16", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; server_max_window_bits=08", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; client_max_window_bits=abc", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; client_max_window_bits=1", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; foo", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; server_no_context_takeover=1", {0}, "", 0, 0, 0, 0},
      {"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
       {0},
       "",
       0,
       0,
       0,
       0},
      {"permessage-deflate; client_max_window_bits; client_max_window_bits=10",
       {0},
       "",
       0,
       0,
       0,
       0},
      {"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
       {0},
       "",
       0,
       0,
       0,
       0},
      {"x-other", {0}, "", 0, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cgnet__ws_deflate_params a = {0};
    const char *got = negotiate(cases[i].offer, &cases[i].cfg, &a);
    if (strcmp(got, cases[i].response) != 0)
      fail_msg("case %zu: got '%s', want '%s'", i, got, cases[i].response);
    if (!*got) continue;
    assert_int_equal(a.server_no_context_takeover, cases[i].snct);
    assert_int_equal(a.client_no_context_takeover, cases[i].cnct);
    assert_int_equal(a.server_max_window_bits, cases[i].smwb);
    assert_int_equal(a.client_max_window_bits, cases[i].cmwb);
  }
  /* A response that does not fit. */
  char buf[1024], out[8];
  cgnet__ws_request r;
  cgnet__ws_deflate_params a;
  parse_offers("permessage-deflate", buf, sizeof buf, &r);
  assert_int_equal(
      cgnet__ws_deflate_negotiate(r.head.extensions, 1, &DEFAULTS, &a, out, sizeof out),
      CGNET_ENOBUFS);
}

/* The client's offer, the server's answer, and the client's check agree. */
static void client_negotiation(void **state) {
  (void)state;
  NEED_ZLIB();
  cgnet__ws_deflate_config ccfg = {.peer_max_window_bits = 12, .no_context_takeover = 1};
  char offer[128];
  long n = cgnet__ws_deflate_offer(&ccfg, offer, sizeof offer);
  assert_true(n > 0);
  assert_string_equal(offer, "permessage-deflate; client_max_window_bits; "
                             "server_max_window_bits=12; client_no_context_takeover");
  cgnet__ws_deflate_config scfg = {.peer_max_window_bits = 11};
  cgnet__ws_deflate_params server, client;
  char response[256];
  strcpy(response, negotiate(offer, &scfg, &server));
  assert_string_equal(response, "permessage-deflate; client_no_context_takeover; "
                                "server_max_window_bits=12; client_max_window_bits=11");
  char buf[1024];
  cgnet__ws_request r; /* the response value, parsed with the same list parser */
  parse_offers(response, buf, sizeof buf, &r);
  assert_int_equal(cgnet__ws_deflate_accept(&r.head.extensions[0], &ccfg, &client), 0);
  assert_memory_equal(&client, &server, sizeof client);
  assert_int_equal(cgnet__ws_deflate_offer(&ccfg, offer, 10), CGNET_ENOBUFS);

  /* Responses the client must refuse. */
  static const char *const bad[] = {
      "permessage-deflate; client_max_window_bits=8",
      "permessage-deflate; client_max_window_bits",
      "permessage-deflate; server_max_window_bits=13",
      "permessage-deflate; server_max_window_bits",
      "permessage-deflate", /* the server window asked for, not granted */
      "permessage-deflate; mystery",
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      "x-other",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    parse_offers(bad[i], buf, sizeof buf, &r);
    if (cgnet__ws_deflate_accept(&r.head.extensions[0], &ccfg, &client) != CGNET_ECODEC)
      fail_msg("accepted '%s'", bad[i]);
  }
}

/* ---- compression --------------------------------------------------------------------- */

/* RFC 7692 section 7.2.3's examples, inflated. */
static void rfc_examples(void **state) {
  (void)state;
  NEED_ZLIB();
  cgnet__ws_deflate_params p = {0, 0, 15, 15};
  static const struct {
    const char *bytes;
    size_t len;
  } ex[] = {
      {"\xf2\x48\xcd\xc9\xc9\x07\x00", 7},                          /* 7.2.3.1 */
      {"\xf2\x00\x11\x00\x00", 5},                                  /* 7.2.3.2 */
      {"\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00", 11},         /* 7.2.3.3 */
      {"\xf3\x48\xcd\xc9\xc9\x07\x00\x00", 8},                      /* 7.2.3.4 */
      {"\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00", 13}, /* 7.2.3.5 */
  };
  /* One decompressor for all: 7.2.3.2 refers back to the message before it. */
  cgnet__ws_deflate *client = cgnet__ws_deflate_new(CGNET__WS_CLIENT, &p, &DEFAULTS);
  assert_non_null(client);
  for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
    sink_buf s = {0};
    assert_int_equal(cgnet__ws_inflate(client, (const uint8_t *)ex[i].bytes, ex[i].len, 1,
                                       0, collect, &s),
                     0);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.b, "Hello", 5);
    free(s.b);
  }
  /* The compressor reproduces 7.2.3.1 and, taking over its context, 7.2.3.2. */
  cgnet__ws_deflate *server = cgnet__ws_deflate_new(CGNET__WS_SERVER, &p, &DEFAULTS);
  assert_non_null(server);
  uint8_t out[64];
  size_t n;
  assert_int_equal(
      cgnet__ws_deflate_message(server, (const uint8_t *)"Hello", 5, out, sizeof out, &n),
      0);
  assert_int_equal(n, 7);
  assert_memory_equal(out, ex[0].bytes, 7);
  assert_int_equal(
      cgnet__ws_deflate_message(server, (const uint8_t *)"Hello", 5, out, sizeof out, &n),
      0);
  assert_int_equal(n, 5);
  assert_memory_equal(out, ex[1].bytes, 5);
  /* An empty message is a single 0x00 byte. */
  assert_int_equal(cgnet__ws_deflate_message(server, NULL, 0, out, sizeof out, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(out[0], 0x00);
  assert_int_equal(
      cgnet__ws_deflate_message(server, (const uint8_t *)"Hello", 5, out, 4, &n),
      CGNET_ENOBUFS);
  cgnet__ws_deflate_free(server);
  cgnet__ws_deflate_free(client);
}

static void fill(uint8_t *p, size_t n, int compressible) {
  static const char *const words[] = {"socket ", "frame ", "loop ", "message ", "deflate "};
  size_t i = 0;
  while (i < n) {
    if (!compressible) {
      p[i++] = (uint8_t)rnd();
      continue;
    }
    const char *w = words[rnd() % 5];
    for (; *w && i < n; w++)
      p[i++] = (uint8_t)*w;
  }
}

/* Send `count` random messages from one side to the other under params p, the
 * compressed payload delivered to the inflater in random pieces. */
static void round_trips(const cgnet__ws_deflate_params *p,
                        const cgnet__ws_deflate_config *cfg, int count) {
  cgnet__ws_deflate *server = cgnet__ws_deflate_new(CGNET__WS_SERVER, p, cfg);
  cgnet__ws_deflate *client = cgnet__ws_deflate_new(CGNET__WS_CLIENT, p, cfg);
  assert_non_null(server);
  assert_non_null(client);
  for (int m = 0; m < count; m++) {
    size_t n = rnd() % 8 == 0 ? rnd() % 300000 : rnd() % 2000;
    uint8_t *msg = malloc(n + 1);
    size_t cap = cgnet__ws_deflate_bound(n);
    uint8_t *wire = malloc(cap);
    assert_non_null(msg);
    assert_non_null(wire);
    fill(msg, n, rnd() % 4 != 0);
    int to_client = rnd() & 1;
    cgnet__ws_deflate *tx = to_client ? server : client, *rx = to_client ? client : server;
    size_t wlen;
    assert_int_equal(cgnet__ws_deflate_message(tx, msg, n, wire, cap, &wlen), 0);
    sink_buf s = {0};
    size_t at = 0;
    while (at < wlen) {
      size_t piece = rnd() % 3 == 0 ? wlen - at : rnd() % (wlen - at + 1);
      assert_int_equal(cgnet__ws_inflate(rx, wire + at, piece, 0, n, collect, &s), 0);
      at += piece;
    }
    assert_int_equal(cgnet__ws_inflate(rx, NULL, 0, 1, n, collect, &s), 0);
    assert_int_equal(s.len, n);
    if (n) assert_memory_equal(s.b, msg, n);
    free(s.b);
    free(wire);
    free(msg);
  }
  cgnet__ws_deflate_free(server);
  cgnet__ws_deflate_free(client);
}

static void random_round_trips(void **state) {
  (void)state;
  NEED_ZLIB();
  static const cgnet__ws_deflate_params params[] = {
      {0, 0, 15, 15}, {1, 1, 15, 15}, {1, 0, 9, 10}, {0, 1, 10, 9},
      {0, 0, 12, 8},  {0, 0, 0, 0}, /* all-zero: no parameters, both windows 15 */
  };
  static const cgnet__ws_deflate_config cfgs[] = {
      {0},
      {.no_context_takeover = 1},
      {.max_window_bits = 9, .mem_level = 1, .level = 1},
  };
  for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++)
      round_trips(&params[i], &cfgs[c], 25);
}

/* With context takeover a repeated message costs next to nothing; without it, it costs
 * the same every time (and a decompressor that resets still reads it). */
static void context_takeover(void **state) {
  (void)state;
  NEED_ZLIB();
  uint8_t msg[4000];
  fill(msg, sizeof msg, 0); /* incompressible on its own */
  uint8_t out[2][8000];
  size_t n[2];
  for (int takeover = 0; takeover < 2; takeover++) {
    cgnet__ws_deflate_params p = {!takeover, !takeover, 15, 15};
    cgnet__ws_deflate *server = cgnet__ws_deflate_new(CGNET__WS_SERVER, &p, &DEFAULTS);
    cgnet__ws_deflate *client = cgnet__ws_deflate_new(CGNET__WS_CLIENT, &p, &DEFAULTS);
    assert_non_null(server);
    assert_non_null(client);
    for (int k = 0; k < 2; k++) {
      assert_int_equal(
          cgnet__ws_deflate_message(server, msg, sizeof msg, out[k], sizeof out[k], &n[k]),
          0);
      sink_buf s = {0};
      assert_int_equal(cgnet__ws_inflate(client, out[k], n[k], 1, 0, collect, &s), 0);
      assert_int_equal(s.len, sizeof msg);
      assert_memory_equal(s.b, msg, sizeof msg);
      free(s.b);
    }
    if (takeover) {
      assert_true(n[1] < 100);
      assert_true(n[0] > 3000);
    } else {
      assert_int_equal(n[0], n[1]);
      assert_memory_equal(out[0], out[1], n[0]);
    }
    cgnet__ws_deflate_free(server);
    cgnet__ws_deflate_free(client);
  }
  /* A compressor that took its context over, read by a decompressor that resets (it was
   * told the peer would not take over): the second message refers to the first, so it
   * fails as corrupt (or inflates to the wrong bytes) rather than crash. */
  cgnet__ws_deflate_params lie = {0, 1, 15, 15};
  cgnet__ws_deflate_params truth = {0, 0, 15, 15};
  cgnet__ws_deflate *server = cgnet__ws_deflate_new(CGNET__WS_SERVER, &lie, &DEFAULTS);
  cgnet__ws_deflate *client = cgnet__ws_deflate_new(CGNET__WS_CLIENT, &truth, &DEFAULTS);
  sink_buf s = {0};
  size_t m;
  assert_int_equal(cgnet__ws_deflate_message(client, msg, sizeof msg, out[0], 8000, &m), 0);
  assert_int_equal(cgnet__ws_inflate(server, out[0], m, 1, 0, collect, &s), 0);
  assert_int_equal(cgnet__ws_deflate_message(client, msg, sizeof msg, out[1], 8000, &m), 0);
  s.len = 0;
  int rc = cgnet__ws_inflate(server, out[1], m, 1, 0, collect, &s);
  assert_true(rc == CGNET_ECODEC || s.len != sizeof msg || memcmp(s.b, msg, s.len) != 0);
  free(s.b);
  cgnet__ws_deflate_free(server);
  cgnet__ws_deflate_free(client);
}

/* ---- bounded inflation --------------------------------------------------------------- */

static void bomb_is_bounded(void **state) {
  (void)state;
  NEED_ZLIB();
  enum { BOMB = 32 << 20, LIMIT = 64 << 10 };
  cgnet__ws_deflate_params p = {0, 0, 15, 15};
  cgnet__ws_deflate *client = cgnet__ws_deflate_new(CGNET__WS_CLIENT, &p, &DEFAULTS);
  cgnet__ws_deflate *server = cgnet__ws_deflate_new(CGNET__WS_SERVER, &p, &DEFAULTS);
  assert_non_null(client);
  assert_non_null(server);
  uint8_t *zeros = calloc(1, BOMB);
  size_t cap = cgnet__ws_deflate_bound(BOMB);
  uint8_t *bomb = malloc(cap);
  assert_non_null(zeros);
  assert_non_null(bomb);
  size_t n;
  assert_int_equal(cgnet__ws_deflate_message(client, zeros, BOMB, bomb, cap, &n), 0);
  free(zeros);
  assert_true(n < BOMB / 500); /* 32 MiB in a few tens of KiB */
  /* What the decompressor holds once it has read a message (zlib allocates the window
   * on first use). */
  sink_buf s = {0};
  assert_int_equal(cgnet__ws_inflate(server,
                                     (const uint8_t *)"\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 1,
                                     LIMIT, collect, &s),
                   0);
  s.len = 0;
  size_t before = cgnet__ws_deflate_memory(server);
  assert_true(before > 0);
  /* Delivered in pieces, as a frame parser would: the error comes as soon as the output
   * passes the limit, long before the input is used up. */
  int rc = 0;
  size_t at = 0;
  while (rc == 0 && at < n) {
    size_t piece = n - at < 1000 ? n - at : 1000;
    rc = cgnet__ws_inflate(server, bomb + at, piece, at + piece == n, LIMIT, collect, &s);
    at += piece;
  }
  assert_int_equal(rc, CGNET_EMSGSIZE);
  assert_true(at < n / 4);
  assert_true(s.len <= LIMIT);
  assert_true(s.biggest <= CGNET__WS_INFLATE_CHUNK);
  /* Nothing grew: the bomb cost one chunk of output at a time, in the object's own. */
  assert_int_equal(cgnet__ws_deflate_memory(server), before);
  free(s.b);
  free(bomb);
  cgnet__ws_deflate_free(server);
  cgnet__ws_deflate_free(client);
}

/* The limit is exact: max_message bytes pass, one more fails. */
static void limit_is_exact(void **state) {
  (void)state;
  NEED_ZLIB();
  cgnet__ws_deflate_params p = {1, 1, 15, 15};
  uint8_t msg[5000], out[6000];
  fill(msg, sizeof msg, 1);
  for (size_t limit = sizeof msg - 1; limit <= sizeof msg; limit++) {
    cgnet__ws_deflate *a = cgnet__ws_deflate_new(CGNET__WS_CLIENT, &p, &DEFAULTS);
    cgnet__ws_deflate *b = cgnet__ws_deflate_new(CGNET__WS_SERVER, &p, &DEFAULTS);
    size_t n;
    assert_int_equal(cgnet__ws_deflate_message(a, msg, sizeof msg, out, sizeof out, &n), 0);
    sink_buf s = {0};
    int rc = cgnet__ws_inflate(b, out, n, 1, limit, collect, &s);
    assert_int_equal(rc, limit < sizeof msg ? CGNET_EMSGSIZE : 0);
    assert_true(s.len <= limit);
    free(s.b);
    cgnet__ws_deflate_free(a);
    cgnet__ws_deflate_free(b);
  }
}

static int refuse(void *arg, const uint8_t *p, size_t n) {
  (void)arg;
  (void)p;
  (void)n;
  return CGNET_ECANCELED;
}

static void corrupt_input(void **state) {
  (void)state;
  NEED_ZLIB();
  cgnet__ws_deflate_params p = {0, 0, 15, 15};
  static const struct {
    const char *b;
    size_t n;
  } bad[] = {
      {"\xff\xff\xff\xff", 4},     /* block type 3 */
      {"\x00\x05\x00\x00\x00", 5}, /* stored length and its complement disagree */
      {"\xf2\x48\xcd\xc9\xc9\x07\x00\x01\x02\x03", 10},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cgnet__ws_deflate *z = cgnet__ws_deflate_new(CGNET__WS_SERVER, &p, &DEFAULTS);
    sink_buf s = {0};
    int rc = cgnet__ws_inflate(z, (const uint8_t *)bad[i].b, bad[i].n, 1, 0, collect, &s);
    if (rc != CGNET_ECODEC) fail_msg("case %zu: %d", i, rc);
    free(s.b);
    cgnet__ws_deflate_free(z);
  }
  /* A sink's error stops the inflation and comes back. */
  cgnet__ws_deflate *z = cgnet__ws_deflate_new(CGNET__WS_SERVER, &p, &DEFAULTS);
  assert_int_equal(cgnet__ws_inflate(z, (const uint8_t *)"\xf2\x48\xcd\xc9\xc9\x07\x00", 7,
                                     1, 0, refuse, NULL),
                   CGNET_ECANCELED);
  cgnet__ws_deflate_free(z);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(server_negotiation), cmocka_unit_test(client_negotiation),
      cmocka_unit_test(rfc_examples),       cmocka_unit_test(random_round_trips),
      cmocka_unit_test(context_takeover),   cmocka_unit_test(bomb_is_bounded),
      cmocka_unit_test(limit_is_exact),     cmocka_unit_test(corrupt_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
