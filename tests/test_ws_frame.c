/* Tests for src/ws_frame.c: the RFC 6455 frame parser and encoders. Streams are fed the
 * way a conn would feed them: whatever arrived, with the unconsumed tail kept and the
 * next bytes appended; most cases are also fed split at every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cgnet.h"
#include "ws_frame.h"

/* ---- a stream and what the parser made of it -------------------------------------- */

typedef struct wire {
  uint8_t *b;
  size_t len, cap;
} wire;

static void wire_put(wire *w, const void *p, size_t n) {
  if (w->len + n > w->cap) {
    w->cap = (w->len + n) * 2 + 64;
    w->b = realloc(w->b, w->cap);
    assert_non_null(w->b);
  }
  if (n) memcpy(w->b + w->len, p, n);
  w->len += n;
}

/* Append a frame; key NULL: unmasked. */
static void put_frame(wire *w, int fin, uint8_t rsv, uint8_t op, const void *payload,
                      size_t n, const uint8_t *key) {
  uint8_t h[CGNET__WS_MAX_HEADER];
  size_t hl = cgnet__ws_encode_header(h, fin, rsv, op, n, key);
  wire_put(w, h, hl);
  size_t at = w->len;
  wire_put(w, payload, n);
  if (key) cgnet__ws_mask(w->b + at, w->b + at, n, key, 0);
}

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Everything the parser reported, as text, plus the assembled messages. */
typedef struct outcome {
  wire log;    /* one line per event */
  wire msgs;   /* every message's bytes, each preceded by its opcode and length */
  wire cur;    /* the message being assembled */
  int error;   /* close code of ERROR, 0 if none */
  int closed;  /* a CLOSE event was seen */
  size_t left; /* bytes left unconsumed at the end */
} outcome;

static void log_line(outcome *o, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  wire_put(&o->log, line, (size_t)n);
}

static void outcome_free(outcome *o) {
  free(o->log.b);
  free(o->msgs.b);
  free(o->cur.b);
}

static void record(outcome *o, const cgnet__ws_event *ev) {
  switch (ev->type) {
  case CGNET__WS_EV_DATA:
    assert_true(ev->opcode == CGNET__WS_OP_TEXT || ev->opcode == CGNET__WS_OP_BINARY);
    if (ev->first) assert_int_equal(o->cur.len, 0);
    wire_put(&o->cur, ev->data, ev->len);
    if (ev->last) {
      log_line(o, "msg %u %zu%s\n", ev->opcode, o->cur.len, ev->compressed ? " z" : "");
      uint8_t tag[9] = {ev->opcode};
      memcpy(tag + 1, &o->cur.len, sizeof(size_t) < 8 ? sizeof(size_t) : 8);
      wire_put(&o->msgs, tag, sizeof tag);
      wire_put(&o->msgs, o->cur.b, o->cur.len);
      o->cur.len = 0;
    }
    break;
  case CGNET__WS_EV_PING:
  case CGNET__WS_EV_PONG:
    log_line(o, "%s %.*s\n", ev->type == CGNET__WS_EV_PING ? "ping" : "pong", (int)ev->len,
             (const char *)ev->data);
    break;
  case CGNET__WS_EV_CLOSE:
    log_line(o, "close %u %.*s\n", ev->close_code, (int)ev->len, (const char *)ev->data);
    o->closed = 1;
    break;
  case CGNET__WS_EV_ERROR:
    assert_non_null(ev->reason);
    log_line(o, "error %u\n", ev->close_code);
    o->error = ev->close_code;
    break;
  default:
    fail_msg("unexpected event %d", ev->type);
  }
}

/* Feed stream[0, n) in the pieces cuts[] gives, as a conn would: pending bytes kept
 * between deliveries. The parser only ever sees bytes that have arrived. */
static outcome feed(const cgnet__ws_config *cfg, const uint8_t *stream, size_t n,
                    const size_t *cuts, size_t ncuts) {
  outcome o = {0};
  cgnet__ws_parser p;
  cgnet__ws_parser_init(&p, cfg);
  wire pending = {0};
  size_t at = 0;
  for (size_t c = 0; c <= ncuts && !o.error; c++) {
    size_t end = c < ncuts ? cuts[c] : n;
    /* A fresh exact-size copy: a read past what arrived is caught by ASan. */
    uint8_t *buf = malloc(pending.len + (end - at) + 1);
    assert_non_null(buf);
    if (pending.len) memcpy(buf, pending.b, pending.len);
    memcpy(buf + pending.len, stream + at, end - at);
    size_t len = pending.len + (end - at), pos = 0;
    at = end;
    for (int guard = 0; guard < 100000; guard++) {
      cgnet__ws_event ev;
      size_t used = cgnet__ws_parse(&p, buf + pos, len - pos, &ev);
      assert_true(used <= len - pos);
      pos += used;
      if (ev.type == CGNET__WS_EV_NONE) break;
      record(&o, &ev);
      if (ev.type == CGNET__WS_EV_ERROR) {
        /* Sticky: a second call reports the same and consumes nothing. */
        cgnet__ws_event again;
        assert_int_equal(cgnet__ws_parse(&p, buf + pos, len - pos, &again), 0);
        assert_int_equal(again.type, CGNET__WS_EV_ERROR);
        assert_int_equal(again.close_code, ev.close_code);
        break;
      }
    }
    pending.len = 0;
    wire_put(&pending, buf + pos, len - pos);
    free(buf);
  }
  o.left = pending.len;
  free(pending.b);
  return o;
}

static outcome feed_whole(const cgnet__ws_config *cfg, const wire *w) {
  return feed(cfg, w->b, w->len, NULL, 0);
}

static void assert_same(const outcome *a, const outcome *b) {
  assert_int_equal(a->log.len, b->log.len);
  if (a->log.len) assert_memory_equal(a->log.b, b->log.b, a->log.len);
  assert_int_equal(a->msgs.len, b->msgs.len);
  if (a->msgs.len) assert_memory_equal(a->msgs.b, b->msgs.b, a->msgs.len);
  assert_int_equal(a->error, b->error);
}

/* The stream gives the same events fed whole, split at every byte, and byte by byte. */
static outcome feed_all_ways(const cgnet__ws_config *cfg, const wire *w) {
  outcome whole = feed_whole(cfg, w);
  for (size_t k = 0; k <= w->len; k++) {
    outcome split = feed(cfg, w->b, w->len, &k, 1);
    assert_same(&whole, &split);
    outcome_free(&split);
  }
  if (w->len > 1) {
    size_t *cuts = malloc(w->len * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t k = 0; k + 1 < w->len; k++)
      cuts[k] = k + 1;
    outcome bytewise = feed(cfg, w->b, w->len, cuts, w->len - 1);
    assert_same(&whole, &bytewise);
    outcome_free(&bytewise);
    free(cuts);
  }
  return whole;
}

static const cgnet__ws_config SERVER = {.role = CGNET__WS_SERVER};
static const cgnet__ws_config CLIENT = {.role = CGNET__WS_CLIENT};

static void assert_log(const outcome *o, const char *want) {
  size_t n = strlen(want);
  if (o->log.len != n || (n && memcmp(o->log.b, want, n) != 0))
    fail_msg("log:\n%.*s\nwant:\n%s", (int)o->log.len, (const char *)o->log.b, want);
}

/* Parse `bytes` (one stream) in the role given, all ways, and compare the log. */
static void expect(const cgnet__ws_config *cfg, const void *bytes, size_t n,
                   const char *want) {
  wire w = {0};
  wire_put(&w, bytes, n);
  outcome o = feed_all_ways(cfg, &w);
  assert_log(&o, want);
  outcome_free(&o);
  free(w.b);
}

#define EXPECT(cfg, lit, want) expect(cfg, lit, sizeof(lit) - 1, want)

/* ---- RFC 6455 section 5.7, byte for byte ----------------------------------------- */

static void rfc_examples_parse(void **state) {
  (void)state;
  EXPECT(&CLIENT, "\x81\x05\x48\x65\x6c\x6c\x6f", "msg 1 5\n");
  EXPECT(&SERVER, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", "msg 1 5\n");
  EXPECT(&CLIENT, "\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f", "msg 1 5\n");
  EXPECT(&CLIENT, "\x89\x05\x48\x65\x6c\x6c\x6f", "ping Hello\n");
  EXPECT(&SERVER, "\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", "pong Hello\n");

  /* The masked "Hello" unmasks in place to the text. */
  uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  cgnet__ws_parser p;
  cgnet__ws_event ev;
  cgnet__ws_parser_init(&p, &SERVER);
  assert_int_equal(cgnet__ws_parse(&p, masked, sizeof masked, &ev), sizeof masked);
  assert_int_equal(ev.type, CGNET__WS_EV_DATA);
  assert_true(ev.first && ev.last);
  assert_ptr_equal(ev.data, masked + 6);
  assert_memory_equal(ev.data, "Hello", 5);
}

static void rfc_examples_encode(void **state) {
  (void)state;
  wire w = {0};
  put_frame(&w, 1, 0, CGNET__WS_OP_TEXT, "Hello", 5, NULL);
  assert_memory_equal(w.b, "\x81\x05\x48\x65\x6c\x6c\x6f", 7);
  w.len = 0;
  put_frame(&w, 1, 0, CGNET__WS_OP_TEXT, "Hello", 5, KEY);
  assert_memory_equal(w.b, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
  w.len = 0;
  put_frame(&w, 0, 0, CGNET__WS_OP_TEXT, "Hel", 3, NULL);
  put_frame(&w, 1, 0, CGNET__WS_OP_CONTINUATION, "lo", 2, NULL);
  assert_memory_equal(w.b, "\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f", 9);
  w.len = 0;
  put_frame(&w, 1, 0, CGNET__WS_OP_PONG, "Hello", 5, KEY);
  assert_memory_equal(w.b, "\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);

  uint8_t h[CGNET__WS_MAX_HEADER];
  assert_int_equal(cgnet__ws_encode_header(h, 1, 0, CGNET__WS_OP_BINARY, 256, NULL), 4);
  assert_memory_equal(h, "\x82\x7e\x01\x00", 4);
  assert_int_equal(cgnet__ws_encode_header(h, 1, 0, CGNET__WS_OP_BINARY, 65536, NULL), 10);
  assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
  free(w.b);
}

/* The 256-byte and 64 KiB binary examples, parsed. */
static void rfc_examples_long(void **state) {
  (void)state;
  size_t sizes[] = {256, 65536};
  for (size_t i = 0; i < 2; i++) {
    wire w = {0};
    uint8_t *payload = malloc(sizes[i]);
    assert_non_null(payload);
    for (size_t k = 0; k < sizes[i]; k++)
      payload[k] = (uint8_t)(k * 7 + 1);
    put_frame(&w, 1, 0, CGNET__WS_OP_BINARY, payload, sizes[i], NULL);
    outcome o = feed_whole(&CLIENT, &w);
    assert_int_equal(o.error, 0);
    assert_int_equal(o.msgs.len, 9 + sizes[i]);
    assert_memory_equal(o.msgs.b + 9, payload, sizes[i]);
    outcome_free(&o);
    free(payload);
    free(w.b);
  }
}

/* ---- length forms ----------------------------------------------------------------- */

static void length_forms_at_boundaries(void **state) {
  (void)state;
  static const struct {
    uint64_t len;
    size_t header; /* unmasked */
  } forms[] = {
      {0, 2},     {1, 2},      {125, 2},    {126, 4},         {127, 4},
      {65535, 4}, {65536, 10}, {65537, 10}, {1ull << 32, 10}, {(1ull << 63) - 1, 10}};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    uint8_t h[CGNET__WS_MAX_HEADER];
    for (int masked = 0; masked < 2; masked++) {
      size_t hl = cgnet__ws_encode_header(h, 1, 0, CGNET__WS_OP_BINARY, forms[i].len,
                                          masked ? KEY : NULL);
      assert_int_equal(hl, forms[i].header + 4 * (size_t)masked);
      cgnet__ws_header d;
      for (size_t k = 0; k < hl; k++)
        assert_int_equal(cgnet__ws_decode_header(h, k, &d), 0); /* not yet whole */
      assert_int_equal(cgnet__ws_decode_header(h, hl, &d), hl);
      assert_true(d.payload_len == forms[i].len);
      assert_int_equal(d.masked, masked);
      if (masked) assert_memory_equal(d.mask, KEY, 4);

      /* The parser takes the header (nothing of a partial one) and waits for payload. */
      cgnet__ws_parser p;
      cgnet__ws_event ev;
      cgnet__ws_parser_init(&p, masked ? &SERVER : &CLIENT);
      for (size_t k = 0; k < hl; k++) {
        assert_int_equal(cgnet__ws_parse(&p, h, k, &ev), 0);
        assert_int_equal(ev.type, CGNET__WS_EV_NONE);
      }
      size_t used = cgnet__ws_parse(&p, h, hl, &ev);
      assert_int_equal(used, hl);
      assert_int_equal(ev.type, forms[i].len ? CGNET__WS_EV_NONE : CGNET__WS_EV_DATA);
    }
  }
}

static void length_hostile_forms(void **state) {
  (void)state;
  /* 2^63: the top bit of a 64-bit length must be 0. */
  EXPECT(&CLIENT, "\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", "error 1002\n");
  EXPECT(&CLIENT, "\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff", "error 1002\n");
  /* Non-minimal forms. */
  EXPECT(&CLIENT, "\x82\x7e\x00\x7d", "error 1002\n");
  EXPECT(&CLIENT, "\x82\x7e\x00\x00", "error 1002\n");
  EXPECT(&CLIENT, "\x82\x7f\x00\x00\x00\x00\x00\x00\xff\xff", "error 1002\n");
  EXPECT(&CLIENT, "\x82\x7f\x00\x00\x00\x00\x00\x00\x00\x05hello", "error 1002\n");
  /* The smallest of each form is fine. */
  wire w = {0};
  uint8_t big[126] = {0};
  put_frame(&w, 1, 0, CGNET__WS_OP_BINARY, big, 126, NULL);
  outcome o = feed_whole(&CLIENT, &w);
  assert_log(&o, "msg 2 126\n");
  outcome_free(&o);
  free(w.b);
}

/* ---- control frames, fragmentation ------------------------------------------------ */

static void fragments_with_interleaved_control(void **state) {
  (void)state;
  wire w = {0};
  put_frame(&w, 0, 0, CGNET__WS_OP_TEXT, "frag", 4, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_PING, "p1", 2, KEY);
  put_frame(&w, 0, 0, CGNET__WS_OP_CONTINUATION, "", 0, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_PONG, "p2", 2, KEY);
  put_frame(&w, 0, 0, CGNET__WS_OP_CONTINUATION, "ment", 4, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_PING, "", 0, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_CONTINUATION, "ed", 2, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_BINARY, "\x00\xff", 2, KEY);
  put_frame(&w, 0, 0, CGNET__WS_OP_BINARY, "", 0, KEY); /* empty fragmented message */
  put_frame(&w, 1, 0, CGNET__WS_OP_CONTINUATION, "", 0, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_TEXT, "", 0, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_CLOSE,
            "\x03\xe8"
            "bye",
            5, KEY);
  put_frame(&w, 1, 0, CGNET__WS_OP_TEXT, "after close", 11, KEY);
  outcome o = feed_all_ways(&SERVER, &w);
  assert_log(&o, "ping p1\npong p2\nping \nmsg 1 10\nmsg 2 2\nmsg 2 0\nmsg 1 0\n"
                 "close 1000 bye\n");
  assert_memory_equal(o.msgs.b + 9, "fragmented", 10);
  assert_int_equal(o.left, 0); /* bytes after the close are consumed and ignored */
  outcome_free(&o);
  free(w.b);
}

static void hostile_frames(void **state) {
  (void)state;
  /* Unmasked frame from a client; masked frame from a server. */
  EXPECT(&SERVER, "\x81\x05Hello", "error 1002\n");
  EXPECT(&CLIENT, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", "error 1002\n");
  /* Fragmented control frames. */
  EXPECT(&CLIENT, "\x09\x02hi", "error 1002\n");
  EXPECT(&CLIENT, "\x08\x02\x03\xe8", "error 1002\n");
  EXPECT(&CLIENT, "\x0a\x00", "error 1002\n");
  /* A ping of 126 bytes (the 16-bit form) and of 2^16. */
  EXPECT(&CLIENT, "\x89\x7e\x00\x7e", "error 1002\n");
  EXPECT(&CLIENT, "\x89\x7f\x00\x00\x00\x00\x00\x01\x00\x00", "error 1002\n");
  /* RSV bits without an extension; RSV2/RSV3 always. */
  EXPECT(&CLIENT, "\xc1\x01x", "error 1002\n");
  EXPECT(&CLIENT, "\xa1\x01x", "error 1002\n");
  EXPECT(&CLIENT, "\x91\x01x", "error 1002\n");
  EXPECT(&CLIENT, "\xf1\x01x", "error 1002\n");
  /* Unknown opcodes, data (3-7) and control (B-F). */
  for (uint8_t op = 3; op <= 0xf; op++) {
    if (op >= 8 && op <= 0xa) continue;
    uint8_t f[2] = {(uint8_t)(0x80 | op), 0};
    expect(&CLIENT, f, 2, "error 1002\n");
  }
  /* Continuation without a start; a new message inside a fragmented one. */
  EXPECT(&CLIENT, "\x80\x01x", "error 1002\n");
  EXPECT(&CLIENT, "\x00\x01x", "error 1002\n");
  EXPECT(&CLIENT, "\x01\x01x\x81\x01y", "error 1002\n");
  EXPECT(&CLIENT, "\x02\x01x\x82\x01y", "error 1002\n");
  EXPECT(&CLIENT, "\x01\x01x\x82\x01y", "error 1002\n");
  /* ... and after a message completes, continuation is again out of place. */
  EXPECT(&CLIENT, "\x01\x01x\x80\x01y\x80\x01z", "msg 1 2\nerror 1002\n");
  /* A well-formed message before a bad frame is still reported. */
  EXPECT(&CLIENT, "\x81\x02ok\x89\x7e\x00\x7e", "msg 1 2\nerror 1002\n");
}

/* A frame fails as soon as its first two bytes show the fault, before the rest. */
static void fails_before_the_rest_arrives(void **state) {
  (void)state;
  cgnet__ws_parser p;
  cgnet__ws_event ev;
  cgnet__ws_parser_init(&p, &SERVER);
  uint8_t b[2] = {0x81, 0x7f}; /* unmasked, 64-bit length not yet here */
  assert_int_equal(cgnet__ws_parse(&p, b, 2, &ev), 0);
  assert_int_equal(ev.type, CGNET__WS_EV_ERROR);
  assert_int_equal(ev.close_code, 1002);
}

static void rsv1_with_deflate_negotiated(void **state) {
  (void)state;
  cgnet__ws_config cfg = {.role = CGNET__WS_CLIENT, .allow_rsv1 = 1};
  EXPECT(&cfg, "\xc1\x02zz", "msg 1 2 z\n");
  EXPECT(&cfg, "\x42\x01z\x80\x01z", "msg 2 2 z\n");
  /* RSV1 on a continuation or control frame is still wrong. */
  EXPECT(&cfg, "\x41\x01z\xc0\x01z", "error 1002\n");
  EXPECT(&cfg, "\xc9\x00", "error 1002\n");
  /* A compressed text message is not UTF-8-checked here (it is checked inflated). */
  EXPECT(&cfg, "\xc1\x02\xff\xfe", "msg 1 2 z\n");
}

/* ---- close frames ----------------------------------------------------------------- */

static void close_codes_every_value(void **state) {
  (void)state;
  for (unsigned code = 0; code <= 0xffff; code++) {
    uint8_t f[4] = {0x88, 0x02, (uint8_t)(code >> 8), (uint8_t)code};
    int valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                (code >= 3000 && code <= 4999);
    assert_int_equal(cgnet__ws_close_code_valid(code), valid);
    cgnet__ws_parser p;
    cgnet__ws_event ev;
    cgnet__ws_parser_init(&p, &CLIENT);
    size_t used = cgnet__ws_parse(&p, f, 4, &ev);
    if (valid) {
      assert_int_equal(used, 4);
      assert_int_equal(ev.type, CGNET__WS_EV_CLOSE);
      assert_int_equal(ev.close_code, code);
      assert_int_equal(ev.len, 0);
    } else {
      assert_int_equal(ev.type, CGNET__WS_EV_ERROR);
      assert_int_equal(ev.close_code, 1002);
    }
  }
}

static void close_payload_paths(void **state) {
  (void)state;
  EXPECT(&CLIENT, "\x88\x00", "close 1005 \n");
  EXPECT(&CLIENT, "\x88\x01\x03", "error 1002\n");
  EXPECT(&CLIENT, "\x88\x02\x03\xe8", "close 1000 \n");
  EXPECT(&CLIENT, "\x88\x07\x0f\xa0going", "close 4000 going\n");
  EXPECT(&CLIENT, "\x88\x04\x03\xe8\xce\xba", "close 1000 \xce\xba\n");
  /* Named invalid codes. */
  EXPECT(&CLIENT, "\x88\x02\x03\xed", "error 1002\n"); /* 1005 */
  EXPECT(&CLIENT, "\x88\x02\x03\xee", "error 1002\n"); /* 1006 */
  EXPECT(&CLIENT, "\x88\x02\x03\xf7", "error 1002\n"); /* 1015 */
  EXPECT(&CLIENT, "\x88\x02\x03\xec", "error 1002\n"); /* 1004 */
  EXPECT(&CLIENT, "\x88\x02\x03\xe7", "error 1002\n"); /* 999 */
  EXPECT(&CLIENT, "\x88\x02\x00\x00", "error 1002\n"); /* 0 */
  EXPECT(&CLIENT, "\x88\x02\x13\x88", "error 1002\n"); /* 5000 */
  /* Invalid UTF-8 in the reason: a surrogate, a truncated character, a stray byte. */
  EXPECT(&CLIENT, "\x88\x05\x03\xe8\xed\xa0\x80", "error 1007\n");
  EXPECT(&CLIENT, "\x88\x05\x03\xe8\xce\xba\xe1", "error 1007\n");
  EXPECT(&CLIENT, "\x88\x03\x03\xe8\x80", "error 1007\n");
  /* A masked close from a client, split at every byte. */
  wire w = {0};
  put_frame(&w, 1, 0, CGNET__WS_OP_CLOSE,
            "\x03\xe9"
            "away",
            6, KEY);
  outcome o = feed_all_ways(&SERVER, &w);
  assert_log(&o, "close 1001 away\n");
  outcome_free(&o);
  free(w.b);
}

static void close_builder(void **state) {
  (void)state;
  uint8_t f[CGNET__WS_MAX_CONTROL_FRAME];
  assert_int_equal(cgnet__ws_build_close(f, 0, NULL, 0, NULL), 2);
  assert_memory_equal(f, "\x88\x00", 2);
  assert_int_equal(cgnet__ws_build_close(f, 1000, "ok", 2, NULL), 6);
  assert_memory_equal(f, "\x88\x04\x03\xe8ok", 6);
  long n = cgnet__ws_build_close(f, 1001, "away", 4, KEY);
  assert_int_equal(n, 12);
  outcome o = feed(&SERVER, f, (size_t)n, NULL, 0);
  assert_log(&o, "close 1001 away\n");
  outcome_free(&o);
  char reason[CGNET__WS_MAX_CLOSE_REASON + 1];
  memset(reason, 'r', sizeof reason);
  assert_int_equal(cgnet__ws_build_close(f, 1000, reason, sizeof reason - 1, NULL),
                   2 + 125);
  assert_int_equal(cgnet__ws_build_close(f, 1000, reason, sizeof reason, NULL),
                   CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_close(f, 1005, NULL, 0, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_close(f, 1006, NULL, 0, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_close(f, 1015, NULL, 0, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_close(f, 999, NULL, 0, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_close(f, 0, "x", 1, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet__ws_build_close(f, 1000, "\xc0\xaf", 2, NULL), CGNET_EINVAL);
}

/* ---- text messages and UTF-8 ------------------------------------------------------ */

static void text_utf8_across_fragments(void **state) {
  (void)state;
  /* "kosme" split inside a character, across two and then three frames. */
  EXPECT(&CLIENT, "\x01\x03\xce\xba\xe1\x80\x08\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
         "msg 1 11\n");
  EXPECT(&CLIENT, "\x01\x01\xf0\x00\x02\x90\x80\x80\x01\x80", "msg 1 4\n");
  /* Invalid in the first fragment: fails before the message ends. */
  EXPECT(&CLIENT, "\x01\x02\xc0\xaf", "error 1007\n");
  EXPECT(&CLIENT,
         "\x01\x03"
         "ab\xff\x80\x01x",
         "error 1007\n");
  /* Invalid only across the boundary: a lead byte, then a non-continuation. */
  EXPECT(&CLIENT,
         "\x01\x01\xce\x80\x01"
         "A",
         "error 1007\n");
  EXPECT(&CLIENT, "\x01\x01\xed\x00\x01\xa0\x80\x01\x80", "error 1007\n");
  /* A message that ends inside a character. */
  EXPECT(&CLIENT, "\x81\x01\xce", "error 1007\n");
  EXPECT(&CLIENT, "\x01\x01\xce\x80\x00", "error 1007\n");
  /* A ping between the halves of a character is fine. */
  EXPECT(&CLIENT, "\x01\x01\xce\x89\x00\x80\x01\xba", "ping \nmsg 1 2\n");
  /* Binary messages carry any bytes. */
  EXPECT(&CLIENT, "\x82\x02\xc0\xaf", "msg 2 2\n");
  /* Fail fast: the parser reports the error for the piece holding the bad byte even
   * though the frame's payload is still incomplete. */
  cgnet__ws_parser p;
  cgnet__ws_event ev;
  cgnet__ws_parser_init(&p, &CLIENT);
  uint8_t b[] = {0x81, 0x7e, 0x10, 0x00, 'o', 'k', 0xff};
  size_t used = cgnet__ws_parse(&p, b, 6, &ev);
  assert_int_equal(ev.type, CGNET__WS_EV_DATA);
  assert_int_equal(used, 6);
  used = cgnet__ws_parse(&p, b + 6, 1, &ev);
  assert_int_equal(ev.type, CGNET__WS_EV_ERROR);
  assert_int_equal(ev.close_code, 1007);
}

/* ---- limits ------------------------------------------------------------------------ */

static void frame_and_message_limits(void **state) {
  (void)state;
  cgnet__ws_config cfg = {.role = CGNET__WS_CLIENT, .max_frame = 4, .max_message = 6};
  EXPECT(&cfg,
         "\x82\x04"
         "abcd",
         "msg 2 4\n");
  EXPECT(&cfg,
         "\x82\x05"
         "abcde",
         "error 1009\n");
  EXPECT(&cfg,
         "\x02\x03"
         "abc\x80\x03"
         "def",
         "msg 2 6\n");
  EXPECT(&cfg,
         "\x02\x03"
         "abc\x00\x03"
         "def\x80\x01g",
         "error 1009\n");
  /* The limit is checked on the header, before any payload arrives. */
  EXPECT(&cfg, "\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x00", "error 1009\n");
  /* Control frames have their own limit (125) and do not count. */
  EXPECT(&cfg,
         "\x02\x03"
         "abc\x89\x07pingpin\x80\x03"
         "def",
         "ping pingpin\nmsg 2 6\n");
  /* A new message starts from zero. */
  EXPECT(&cfg,
         "\x82\x04"
         "abcd\x82\x04"
         "efgh",
         "msg 2 4\nmsg 2 4\n");
  cgnet__ws_config msg_only = {.role = CGNET__WS_CLIENT, .max_message = 3};
  EXPECT(&msg_only,
         "\x82\x04"
         "abcd",
         "error 1009\n");
  /* Unlimited: a 2^63 - 1 header is taken (and its payload awaited). */
  EXPECT(&CLIENT, "\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff", "");
}

/* ---- masking ---------------------------------------------------------------------- */

static void mask_offset_carried(void **state) {
  (void)state;
  uint8_t src[100], whole[100], pieces[100];
  for (size_t i = 0; i < sizeof src; i++)
    src[i] = (uint8_t)(i * 31 + 7);
  cgnet__ws_mask(whole, src, sizeof src, KEY, 0);
  for (size_t i = 0; i < sizeof src; i++)
    assert_int_equal(whole[i], src[i] ^ KEY[i & 3]);
  for (size_t a = 0; a <= sizeof src; a++) {
    for (size_t b = a; b <= sizeof src; b += 7) {
      size_t off = cgnet__ws_mask(pieces, src, a, KEY, 0);
      off = cgnet__ws_mask(pieces + a, src + a, b - a, KEY, off);
      off = cgnet__ws_mask(pieces + b, src + b, sizeof src - b, KEY, off);
      assert_int_equal(off, sizeof src & 3);
      assert_memory_equal(pieces, whole, sizeof src);
    }
  }
  /* In place, from an odd offset. */
  memcpy(pieces, src, sizeof src);
  cgnet__ws_mask(pieces, pieces, 50, KEY, 3);
  for (size_t i = 0; i < 50; i++)
    assert_int_equal(pieces[i], src[i] ^ KEY[(i + 3) & 3]);
}

/* ---- property: random messages, fragments, control frames and cuts ----------------- */

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

static void random_streams_round_trip(void **state) {
  (void)state;
  for (int round = 0; round < 60; round++) {
    wire w = {0}, want = {0};
    int nmsg = 1 + (int)(rnd() % 8);
    for (int m = 0; m < nmsg; m++) {
      uint8_t op = rnd() & 1 ? CGNET__WS_OP_TEXT : CGNET__WS_OP_BINARY;
      size_t size = rnd() % 4 == 0 ? rnd() % 70000 : rnd() % 300;
      uint8_t *msg = malloc(size + 1);
      assert_non_null(msg);
      for (size_t i = 0; i < size; i++)
        msg[i] = op == CGNET__WS_OP_TEXT ? (uint8_t)('a' + rnd() % 26) : (uint8_t)rnd();
      uint8_t tag[9] = {op};
      memcpy(tag + 1, &size, sizeof(size_t) < 8 ? sizeof(size_t) : 8);
      wire_put(&want, tag, sizeof tag);
      wire_put(&want, msg, size);
      size_t at = 0;
      int first = 1;
      do {
        size_t part = size - at;
        if (rnd() % 3 == 0) part = part ? rnd() % (part + 1) : 0;
        uint8_t key[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()};
        int fin = at + part == size && (part || rnd() % 2);
        put_frame(&w, fin, 0, first ? op : CGNET__WS_OP_CONTINUATION, msg + at, part, key);
        first = 0;
        at += part;
        if (rnd() % 4 == 0) put_frame(&w, 1, 0, CGNET__WS_OP_PING, "x", 1, key);
        if (fin) break;
      } while (1);
      free(msg);
    }
    size_t cuts[6];
    for (int c = 0; c < 6; c++)
      cuts[c] = rnd() % (w.len + 1);
    for (int i = 1; i < 6; i++) /* sorted */
      for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
        size_t t = cuts[j];
        cuts[j] = cuts[j - 1];
        cuts[j - 1] = t;
      }
    outcome o = feed(&SERVER, w.b, w.len, cuts, 6);
    assert_int_equal(o.error, 0);
    assert_int_equal(o.left, 0);
    assert_int_equal(o.msgs.len, want.len);
    assert_memory_equal(o.msgs.b, want.b, want.len);
    outcome_free(&o);
    free(w.b);
    free(want.b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rfc_examples_parse),
      cmocka_unit_test(rfc_examples_encode),
      cmocka_unit_test(rfc_examples_long),
      cmocka_unit_test(length_forms_at_boundaries),
      cmocka_unit_test(length_hostile_forms),
      cmocka_unit_test(fragments_with_interleaved_control),
      cmocka_unit_test(hostile_frames),
      cmocka_unit_test(fails_before_the_rest_arrives),
      cmocka_unit_test(rsv1_with_deflate_negotiated),
      cmocka_unit_test(close_codes_every_value),
      cmocka_unit_test(close_payload_paths),
      cmocka_unit_test(close_builder),
      cmocka_unit_test(text_utf8_across_fragments),
      cmocka_unit_test(frame_and_message_limits),
      cmocka_unit_test(mask_offset_carried),
      cmocka_unit_test(random_streams_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
