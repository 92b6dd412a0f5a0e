/*
 * The codecs as pure functions (cgnet_codec_decode / cgnet_codec_encode), no sockets:
 * each built-in's framing, maximum frame length and errors; every length-field parameter
 * combination (field length 1/2/3/4/8, both byte orders, offsets, adjustments, the
 * length-includes-field flag, stripping) against a wire format built by hand; custom
 * codecs and the checks cgnet applies to them; and a property test: a stream decoded
 * whole, split at every offset, and cut into random chunks, yields the same frames (the
 * feeding below mirrors conn.c: a pending buffer, the hint carried across "need more",
 * zeroed after each frame).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/support.h"

/* ---- helpers ------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* xorshift64*: deterministic across runs */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}
static size_t rnd_below(size_t n) {
  return n ? (size_t)(rnd() % n) : 0;
}

/* Frames decoded from a stream, and how decoding ended (0: need more, or an error). */
typedef struct got {
  uint8_t *bytes;
  size_t nbytes, cap;
  size_t lens[4096];
  size_t nframes;
  int end;
} got;

static void got_reset(got *g) {
  g->nbytes = g->nframes = 0;
  g->end = 0;
}

/* Append n bytes to a growable buffer buf[0, *len) of capacity *cap. */
static void append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p, size_t n) {
  if (*len + n > *cap) {
    *cap = (*len + n) * 2 + 64;
    *buf = realloc(*buf, *cap);
    assert_non_null(*buf);
  }
  if (n) memcpy(*buf + *len, p, n);
  *len += n;
}

static void got_add(got *g, const uint8_t *p, size_t n) {
  assert_true(g->nframes < sizeof g->lens / sizeof g->lens[0]);
  append(&g->bytes, &g->nbytes, &g->cap, p, n);
  g->lens[g->nframes++] = n;
}

static void got_free(got *g) {
  free(g->bytes);
  memset(g, 0, sizeof *g);
}

static void assert_same_frames(const got *a, const got *b) {
  assert_int_equal(a->nframes, b->nframes);
  assert_int_equal(a->nbytes, b->nbytes);
  for (size_t i = 0; i < a->nframes; i++)
    assert_int_equal(a->lens[i], b->lens[i]);
  if (a->nbytes) assert_memory_equal(a->bytes, b->bytes, a->nbytes);
  assert_int_equal(a->end, b->end);
}

/* What conn.c keeps per conn: the pending bytes and the decoder's hint. */
typedef struct pending {
  uint8_t *buf;
  size_t len, cap;
  size_t hint;
} pending;

/* Append a chunk and decode every complete frame, as one wake-up of a conn does. Checks
 * each frame lies inside the input. Returns 0, or the error that ends the stream. */
static int feed(const cgnet_codec *c, pending *p, const uint8_t *chunk, size_t n, got *g) {
  append(&p->buf, &p->len, &p->cap, chunk, n);
  size_t pos = 0;
  int rc = 0;
  while (pos < p->len) {
    cgnet_frame f = {.hint = p->hint};
    rc = cgnet_codec_decode(c, p->buf + pos, p->len - pos, &f);
    if (rc <= 0) {
      p->hint = f.hint;
      break;
    }
    assert_true(f.consumed > 0 && f.consumed <= p->len - pos);
    assert_true(f.data >= p->buf + pos && f.data + f.len <= p->buf + p->len);
    assert_true(f.len <= cgnet_codec_max_frame_length(c));
    got_add(g, f.data, f.len);
    p->hint = 0;
    pos += f.consumed;
  }
  if (p->len > pos) memmove(p->buf, p->buf + pos, p->len - pos);
  p->len -= pos;
  if (rc < 0) g->end = rc;
  return rc < 0 ? rc : 0;
}

/* Decode `s` fed in pieces that end at cuts[0..ncuts) and then at len. */
static void decode_cuts(const cgnet_codec *c, const uint8_t *s, size_t len,
                        const size_t *cuts, size_t ncuts, got *g) {
  pending p = {0};
  size_t at = 0;
  got_reset(g);
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    if (feed(c, &p, s + at, end - at, g)) break;
    at = end;
  }
  free(p.buf);
}

static void decode_whole(const cgnet_codec *c, const uint8_t *s, size_t len, got *g) {
  decode_cuts(c, s, len, NULL, 0, g);
}

/* Encode into out (appending); returns encode's code. */
static int encode_append(const cgnet_codec *c, const uint8_t *f, size_t len, uint8_t *out,
                         size_t *olen) {
  cgnet_encoded e;
  int rc = cgnet_codec_encode(c, f, len, &e);
  if (rc) return rc;
  for (int i = 0; i < e.iovcnt; i++) {
    if (e.iov[i].iov_len) memcpy(out + *olen, e.iov[i].iov_base, e.iov[i].iov_len);
    *olen += e.iov[i].iov_len;
  }
  return 0;
}

/* One decode call on a NUL-terminated literal. */
static int dec1(const cgnet_codec *c, const char *s, cgnet_frame *f) {
  memset(f, 0, sizeof *f);
  return cgnet_codec_decode(c, (const uint8_t *)s, strlen(s), f);
}

static void assert_frame(const cgnet_frame *f, const char *want, size_t consumed) {
  assert_int_equal(f->len, strlen(want));
  if (f->len) assert_memory_equal(f->data, want, f->len);
  assert_int_equal(f->consumed, consumed);
}

/* ---- line ---------------------------------------------------------------------------- */

static void test_line(void **state) {
  (void)state;
  cgnet_codec *c;
  cgnet_frame f;
  assert_rc(cgnet_codec_line(NULL, &c), 0);
  assert_int_equal(cgnet_codec_max_frame_length(c), 1024 * 1024);
  assert_int_equal(dec1(c, "hello\r\nworld\n", &f), 1);
  assert_frame(&f, "hello", 7); /* one '\r' stripped */
  assert_int_equal(dec1(c, "\n", &f), 1);
  assert_frame(&f, "", 1); /* zero-length frame */
  assert_int_equal(dec1(c, "\r\n", &f), 1);
  assert_frame(&f, "", 2);
  assert_int_equal(dec1(c, "a\r\r\n", &f), 1);
  assert_frame(&f, "a\r", 4); /* only one */
  assert_int_equal(dec1(c, "partial", &f), 0);
  assert_int_equal(f.hint, 7); /* scanned */
  assert_int_equal(dec1(c, "", &f), 0);

  /* The hint: a caller that says 3 bytes were scanned is not rescanned there. */
  f = (cgnet_frame){.hint = 3};
  assert_int_equal(cgnet_codec_decode(c, (const uint8_t *)"ab\ncd\n", 6, &f), 1);
  assert_frame(&f, "ab\ncd", 6);

  cgnet_encoded e;
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"hi", 2, &e), 0);
  assert_int_equal(e.iovcnt, 2);
  assert_int_equal(e.iov[0].iov_len, 2);
  assert_memory_equal(e.iov[1].iov_base, "\n", 1);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"a\nb", 3, &e), CGNET_EINVAL);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"a\r", 2, &e), CGNET_EINVAL);
  assert_rc(cgnet_codec_encode(c, NULL, 0, &e), 0);
  cgnet_codec_free(c);

  cgnet_line_codec_options o = {.keep_cr = 1, .max_frame_length = 4};
  assert_rc(cgnet_codec_line(&o, &c), 0);
  assert_int_equal(dec1(c, "ab\r\n", &f), 1);
  assert_frame(&f, "ab\r", 4);
  assert_int_equal(dec1(c, "abcd\n", &f), 1); /* exactly max */
  assert_int_equal(dec1(c, "abcde\n", &f), CGNET_EFRAMETOOLARGE);
  assert_int_equal(dec1(c, "abcd", &f), 0);                     /* may still end here */
  assert_int_equal(dec1(c, "abcde", &f), CGNET_EFRAMETOOLARGE); /* can no longer */
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"a\r", 2, &e), 0);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"abcde", 5, &e), CGNET_EFRAMETOOLARGE);
  cgnet_codec_free(c);

  /* Stripping '\r': max bytes then "\r" may still become a frame of max bytes. */
  o = (cgnet_line_codec_options){.max_frame_length = 4};
  assert_rc(cgnet_codec_line(&o, &c), 0);
  assert_int_equal(dec1(c, "abcd\r", &f), 0);
  assert_int_equal(dec1(c, "abcd\r\n", &f), 1);
  assert_frame(&f, "abcd", 6);
  assert_int_equal(dec1(c, "abcd\r\r", &f), CGNET_EFRAMETOOLARGE);
  assert_int_equal(dec1(c, "abcde", &f), CGNET_EFRAMETOOLARGE);
  cgnet_codec_free(c);

  o.max_frame_length = CGNET_UNLIMITED;
  assert_rc(cgnet_codec_line(&o, &c), CGNET_EINVAL);
  assert_rc(cgnet_codec_line(NULL, NULL), CGNET_EINVAL);
}

/* ---- delimiter ----------------------------------------------------------------------- */

static cgnet_codec *delim_codec(const char *d, size_t max) {
  cgnet_codec *c = NULL;
  cgnet_delimiter_codec_options o = {
      .delimiter = (const uint8_t *)d, .delimiter_len = strlen(d), .max_frame_length = max};
  assert_rc(cgnet_codec_delimiter(&o, &c), 0);
  return c;
}

static void test_delimiter(void **state) {
  (void)state;
  cgnet_frame f;
  cgnet_encoded e;
  char d[] = "\r\n\r\n";
  cgnet_codec *c = delim_codec(d, 0);
  d[0] = 'X'; /* the codec has its own copy */
  assert_int_equal(dec1(c, "abc\r\n\r\n\r\n\r\nx", &f), 1);
  assert_frame(&f, "abc", 7);
  assert_int_equal(dec1(c, "\r\n\r\nx", &f), 1);
  assert_frame(&f, "", 4); /* zero-length frame */
  assert_int_equal(dec1(c, "abc\r\n\r", &f), 0);
  assert_int_equal(f.hint, 3); /* the delimiter may start at 3 */
  f = (cgnet_frame){.hint = 3};
  assert_int_equal(cgnet_codec_decode(c, (const uint8_t *)"abc\r\n\r\nz", 8, &f), 1);
  assert_frame(&f, "abc", 7);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"q", 1, &e), 0);
  assert_int_equal(e.iovcnt, 2);
  assert_memory_equal(e.iov[1].iov_base, "\r\n\r\n", 4);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"a\r\n\r\nb", 6, &e), CGNET_EINVAL);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"a\r\n", 3, &e), CGNET_EINVAL);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"a\r", 2, &e), 0); /* a\r\r\n\r\n */
  cgnet_codec_free(c);

  /* A one-byte delimiter and the maximum. */
  c = delim_codec(";", 3);
  assert_int_equal(dec1(c, "abc;", &f), 1);
  assert_int_equal(dec1(c, "abcd;", &f), CGNET_EFRAMETOOLARGE);
  assert_int_equal(dec1(c, "abc", &f), 0);
  assert_int_equal(dec1(c, "abcd", &f), CGNET_EFRAMETOOLARGE);
  assert_int_equal(dec1(c, ";;", &f), 1);
  assert_frame(&f, "", 1);
  cgnet_codec_free(c);

  /* Self-overlapping delimiter: the encoder refuses frames that would split early. */
  c = delim_codec("abab", 8);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"ab", 2, &e), CGNET_EINVAL);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"xa", 2, &e), 0); /* xaabab */
  assert_int_equal(dec1(c, "xaabab", &f), 1);
  assert_frame(&f, "xa", 6);
  assert_int_equal(dec1(c, "12345678ab", &f), 0); /* "abab" may follow */
  assert_int_equal(dec1(c, "1234567890ab", &f), CGNET_EFRAMETOOLARGE); /* 9 > 8 */
  cgnet_codec_free(c);

  cgnet_delimiter_codec_options bad = {.delimiter = (const uint8_t *)"x"};
  assert_rc(cgnet_codec_delimiter(&bad, &c), CGNET_EINVAL); /* length 0 */
  bad = (cgnet_delimiter_codec_options){.delimiter_len = 1};
  assert_rc(cgnet_codec_delimiter(&bad, &c), CGNET_EINVAL); /* no bytes */
  assert_rc(cgnet_codec_delimiter(NULL, &c), CGNET_EINVAL);
}

/* ---- fixed --------------------------------------------------------------------------- */

static void test_fixed(void **state) {
  (void)state;
  cgnet_codec *c;
  cgnet_frame f;
  cgnet_encoded e;
  assert_rc(cgnet_codec_fixed(0, &c), CGNET_EINVAL);
  assert_rc(cgnet_codec_fixed(3, &c), 0);
  assert_int_equal(cgnet_codec_max_frame_length(c), 3);
  assert_int_equal(dec1(c, "abcdefgh", &f), 1);
  assert_frame(&f, "abc", 3);
  assert_int_equal(dec1(c, "ab", &f), 0);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"xyz", 3, &e), 0);
  assert_int_equal(e.iovcnt, 1);
  assert_int_equal(e.iov[0].iov_len, 3);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"xy", 2, &e), CGNET_EMSGSIZE);
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"wxyz", 4, &e), CGNET_EMSGSIZE);
  cgnet_codec_free(c);
}

/* A fixed length is also what a peer can make a conn buffer before the first frame: an
 * absurd one is refused (the bound is 1 GiB), the bound itself is accepted. */
static void test_fixed_bounds(void **state) {
  (void)state;
  const size_t bad[] = {(size_t)-3, SIZE_MAX, (size_t)1 << 40, ((size_t)1 << 30) + 1};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cgnet_codec *c = NULL;
    if (cgnet_codec_fixed(bad[i], &c) != CGNET_EINVAL) {
      cgnet_codec_free(c);
      fail_msg("length %zu accepted", bad[i]);
    }
  }
  cgnet_codec *c = NULL;
  assert_rc(cgnet_codec_fixed((size_t)1 << 30, &c), 0);
  assert_int_equal(cgnet_codec_max_frame_length(c), (size_t)1 << 30);
  cgnet_frame f = {0};
  assert_int_equal(dec1(c, "abc", &f), 0); /* need more, not "too large" */
  cgnet_codec_free(c);
  assert_rc(cgnet_codec_fixed(16, NULL), CGNET_EINVAL);
}

/* ---- length field: fixed wire examples (the header's diagrams) -------------------------
 */

static cgnet_codec *lf_codec(cgnet_length_field_codec_options o) {
  cgnet_codec *c = NULL;
  assert_rc(cgnet_codec_length_field(&o, &c), 0);
  return c;
}

static int dec_bytes(const cgnet_codec *c, const uint8_t *s, size_t n, cgnet_frame *f) {
  memset(f, 0, sizeof *f);
  return cgnet_codec_decode(c, s, n, f);
}

static void test_length_field_examples(void **state) {
  (void)state;
  cgnet_frame f;
  static const uint8_t w1[] = {0, 0, 0, 5, 'H', 'E', 'L', 'L', 'O', 'x'};
  cgnet_codec *c = lf_codec((cgnet_length_field_codec_options){0});
  assert_int_equal(dec_bytes(c, w1, sizeof w1, &f), 1);
  assert_int_equal(f.len, 9); /* defaults: the header is delivered (netty) */
  assert_ptr_equal(f.data, w1);
  assert_int_equal(f.consumed, 9);
  assert_int_equal(dec_bytes(c, w1, 8, &f), 0);
  assert_int_equal(f.hint, 9); /* knows the total */
  cgnet_codec_free(c);

  static const uint8_t w2[] = {0, 5, 'H', 'E', 'L', 'L', 'O'};
  c = lf_codec((cgnet_length_field_codec_options){.length_field_length = 2,
                                                  .initial_bytes_to_strip = 2});
  assert_int_equal(dec_bytes(c, w2, sizeof w2, &f), 1);
  assert_frame(&f, "HELLO", 7);
  cgnet_codec_free(c);

  static const uint8_t w3[] = {0, 7, 'H', 'E', 'L', 'L', 'O'};
  c = lf_codec((cgnet_length_field_codec_options){.length_field_length = 2,
                                                  .length_includes_length_field = 1,
                                                  .initial_bytes_to_strip = 2});
  assert_int_equal(dec_bytes(c, w3, sizeof w3, &f), 1);
  assert_frame(&f, "HELLO", 7);
  cgnet_codec_free(c);

  static const uint8_t w4[] = {'T', 'U', 0, 0, 5, 'H', 'E', 'L', 'L', 'O'};
  c = lf_codec((cgnet_length_field_codec_options){.length_field_offset = 2,
                                                  .length_field_length = 3});
  assert_int_equal(dec_bytes(c, w4, sizeof w4, &f), 1);
  assert_int_equal(f.len, 10);
  assert_int_equal(f.consumed, 10);
  cgnet_codec_free(c);

  static const uint8_t w5[] = {5, 0, 'H', 'E', 'L', 'L', 'O', 'C', 'K'};
  c = lf_codec(
      (cgnet_length_field_codec_options){.byte_order = CGNET_LITTLE_ENDIAN,
                                         .length_field_length = 2,
                                         .length_adjustment = 2,
                                         .initial_bytes_to_strip = CGNET_STRIP_HEADER});
  assert_int_equal(dec_bytes(c, w5, sizeof w5, &f), 1);
  assert_frame(&f, "HELLOCK", 9);
  cgnet_codec_free(c);

  /* 8-byte big endian, zero-length frame. */
  static const uint8_t w6[] = {0, 0, 0, 0, 0, 0, 0, 0};
  c = lf_codec((cgnet_length_field_codec_options){.length_field_length = 8,
                                                  .initial_bytes_to_strip = 8});
  assert_int_equal(dec_bytes(c, w6, sizeof w6, &f), 1);
  assert_frame(&f, "", 8);
  cgnet_codec_free(c);
}

/* ---- length field: errors ------------------------------------------------------------ */

static void test_length_field_errors(void **state) {
  (void)state;
  cgnet_frame f;
  cgnet_encoded e;
  /* 1 GiB announced: too large as soon as the 4-byte header is in. */
  static const uint8_t gib[] = {0x40, 0, 0, 0};
  cgnet_codec *c = lf_codec((cgnet_length_field_codec_options){0});
  assert_int_equal(dec_bytes(c, gib, 3, &f), 0);
  assert_int_equal(dec_bytes(c, gib, 4, &f), CGNET_EFRAMETOOLARGE);
  /* Exactly the maximum (header included) is fine. */
  static const uint8_t at_max[] = {0x00, 0x0f, 0xff, 0xfc};
  assert_int_equal(dec_bytes(c, at_max, 4, &f), 0);
  assert_int_equal(f.hint, 1024 * 1024);
  static const uint8_t over[] = {0x00, 0x0f, 0xff, 0xfd};
  assert_int_equal(dec_bytes(c, over, 4, &f), CGNET_EFRAMETOOLARGE);
  cgnet_codec_free(c);

  /* Negative after adjustment. */
  c = lf_codec((cgnet_length_field_codec_options){.length_field_length = 1,
                                                  .length_adjustment = -3});
  static const uint8_t neg[] = {2, 'a', 'b'};
  assert_int_equal(dec_bytes(c, neg, 3, &f), CGNET_ECODEC);
  static const uint8_t zero[] = {3};
  assert_int_equal(dec_bytes(c, zero, 1, &f), 1); /* 3 - 3 = 0 bytes follow */
  assert_int_equal(f.consumed, 1);
  cgnet_codec_free(c);

  /* Includes the field, but the value is smaller than the field. */
  c = lf_codec((cgnet_length_field_codec_options){.length_field_length = 2,
                                                  .length_includes_length_field = 1});
  static const uint8_t small[] = {0, 1, 'x'};
  assert_int_equal(dec_bytes(c, small, 3, &f), CGNET_ECODEC);
  cgnet_codec_free(c);

  /* 8-byte values: above INT64_MAX, and overflowing with the adjustment. */
  cgnet_length_field_codec_options o8 = {.length_field_length = 8,
                                         .max_frame_length = CGNET_UNLIMITED - 1};
  c = lf_codec(o8);
  static const uint8_t huge[] = {0x80, 0, 0, 0, 0, 0, 0, 0};
  assert_int_equal(dec_bytes(c, huge, 8, &f), CGNET_ECODEC);
  static const uint8_t big[] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(dec_bytes(c, big, 8, &f), 0); /* legal with a near-unlimited max */
  assert_true(f.hint == (size_t)INT64_MAX + 8);
  cgnet_codec_free(c);
  o8.length_adjustment = 1;
  o8.max_frame_length = 0;
  c = lf_codec(o8);
  assert_int_equal(dec_bytes(c, big, 8, &f), CGNET_ECODEC); /* V + 1 overflows */
  assert_int_equal(dec_bytes(c, huge, 8, &f), CGNET_ECODEC);
  cgnet_codec_free(c);

  /* Stripping more than the frame. */
  c = lf_codec((cgnet_length_field_codec_options){
      .length_field_length = 1, .length_adjustment = -1, .initial_bytes_to_strip = 3});
  static const uint8_t short_frame[] = {2, 'a'};
  assert_int_equal(dec_bytes(c, short_frame, 2, &f), CGNET_ECODEC);
  cgnet_codec_free(c);

  /* Encoder errors. */
  c = lf_codec((cgnet_length_field_codec_options){
      .length_field_offset = 2, .length_field_length = 1, .max_frame_length = 300});
  uint8_t buf[400] = {0};
  assert_rc(cgnet_codec_encode(c, buf, 1, &e), CGNET_EINVAL);           /* len < offset */
  assert_rc(cgnet_codec_encode(c, buf, 2 + 255, &e), 0);                /* V = 255 */
  assert_rc(cgnet_codec_encode(c, buf, 2 + 256, &e), CGNET_EMSGSIZE);   /* V = 256 */
  assert_rc(cgnet_codec_encode(c, buf, 400, &e), CGNET_EFRAMETOOLARGE); /* > max */
  cgnet_codec_free(c);
  c = lf_codec(
      (cgnet_length_field_codec_options){.length_field_length = 2, .length_adjustment = 5});
  assert_rc(cgnet_codec_encode(c, buf, 4, &e), CGNET_EMSGSIZE); /* V = -1 */
  assert_rc(cgnet_codec_encode(c, buf, 5, &e), 0);              /* V = 0 */
  cgnet_codec_free(c);

  /* Bad options. */
  cgnet_length_field_codec_options bad[] = {
      {.length_field_length = 5},
      {.length_field_length = -1},
      {.byte_order = (cgnet_byte_order)2},
      {.max_frame_length = CGNET_UNLIMITED},
      {.length_field_offset = 10, .max_frame_length = 12}, /* header 14 > max */
      {.length_field_length = 8,
       .length_adjustment = INT64_MIN,
       .length_includes_length_field = 1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    c = NULL;
    assert_rc(cgnet_codec_length_field(&bad[i], &c), CGNET_EINVAL);
    assert_null(c);
  }
  assert_rc(cgnet_codec_length_field(NULL, &c), 0); /* NULL: defaults */
  assert_int_equal(cgnet_codec_max_frame_length(c), 1024 * 1024);
  cgnet_codec_free(c);
}

/* ---- length field: every parameter combination --------------------------------------- */

/* The wire frame built by hand (not by the encoder): prefix, value, rest. */
static size_t lf_wire(const uint8_t *f, size_t len, size_t off, int flen, int le,
                      uint64_t v, uint8_t *out) {
  memcpy(out, f, off);
  for (int i = 0; i < flen; i++) {
    int shift = le ? 8 * i : 8 * (flen - 1 - i);
    out[off + (size_t)i] = (uint8_t)(v >> shift);
  }
  memcpy(out + off + (size_t)flen, f + off, len - off);
  return len + (size_t)flen;
}

static void check_lf_combo(int flen, int le, size_t off, int64_t adj, int incl,
                           size_t strip) {
  cgnet_length_field_codec_options o = {.byte_order =
                                            le ? CGNET_LITTLE_ENDIAN : CGNET_BIG_ENDIAN,
                                        .length_field_offset = off,
                                        .length_field_length = flen,
                                        .length_adjustment = adj,
                                        .initial_bytes_to_strip = strip,
                                        .length_includes_length_field = incl,
                                        .max_frame_length = 4096};
  cgnet_codec *c = lf_codec(o);
  size_t header = off + (size_t)flen;
  size_t rstrip = strip == CGNET_STRIP_HEADER ? header : strip;
  static const size_t payloads[] = {0, 1, 2, 7, 200, 300, 3000};
  uint8_t frame[4096], want[2 * 4200], enc[4200]; /* want holds the frame twice */
  got g = {0};
  for (size_t k = 0; k < sizeof payloads / sizeof payloads[0]; k++) {
    size_t len = off + payloads[k];
    for (size_t i = 0; i < len; i++)
      frame[i] = (uint8_t)rnd();
    int64_t v = (int64_t)payloads[k] - adj + (incl ? flen : 0);
    int fits = v >= 0 && (flen == 8 || (uint64_t)v < (1ull << (8 * flen)));
    int too_big = len + (size_t)flen > 4096;
    size_t elen = 0;
    int rc = encode_append(c, frame, len, enc, &elen);
    if (too_big) {
      assert_rc(rc, CGNET_EFRAMETOOLARGE);
      continue;
    }
    if (!fits) {
      assert_rc(rc, CGNET_EMSGSIZE);
      continue;
    }
    assert_rc(rc, 0);
    size_t wlen = lf_wire(frame, len, off, flen, le, (uint64_t)v, want);
    assert_int_equal(elen, wlen);
    assert_memory_equal(enc, want, wlen);

    /* Decode the hand-built wire frame followed by a second copy. */
    memcpy(want + wlen, want, wlen);
    decode_whole(c, want, 2 * wlen, &g);
    if (rstrip > wlen) {
      assert_int_equal(g.nframes, 0);
      assert_int_equal(g.end, CGNET_ECODEC);
      continue;
    }
    assert_int_equal(g.end, 0);
    assert_int_equal(g.nframes, 2);
    assert_int_equal(g.lens[0], wlen - rstrip);
    if (wlen > rstrip) assert_memory_equal(g.bytes, want + rstrip, wlen - rstrip);
    if (off == 0 && rstrip == (size_t)flen) { /* the round-trip configuration */
      assert_int_equal(g.lens[0], len);
      if (len) assert_memory_equal(g.bytes, frame, len);
    }
    /* The same frames when the stream is split at every offset. */
    got s = {0};
    for (size_t cut = 0; cut <= 2 * wlen && payloads[k] < 300; cut++) {
      decode_cuts(c, want, 2 * wlen, &cut, 1, &s);
      assert_same_frames(&g, &s);
    }
    got_free(&s);
  }
  got_free(&g);
  cgnet_codec_free(c);
}

static void test_length_field_combinations(void **state) {
  (void)state;
  static const int flens[] = {1, 2, 3, 4, 8};
  static const size_t offs[] = {0, 1, 3};
  static const int64_t adjs[] = {0, 2, -2, -9};
  int combos = 0;
  for (size_t a = 0; a < 5; a++)
    for (int le = 0; le <= 1; le++)
      for (size_t b = 0; b < 3; b++)
        for (size_t d = 0; d < 4; d++)
          for (int incl = 0; incl <= 1; incl++) {
            int flen = flens[a];
            size_t header = offs[b] + (size_t)flen;
            size_t strips[] = {0, (size_t)flen, header, CGNET_STRIP_HEADER, header + 3};
            for (size_t s = 0; s < 5; s++) {
              check_lf_combo(flen, le, offs[b], adjs[d], incl, strips[s]);
              combos++;
            }
          }
  assert_int_equal(combos, 5 * 2 * 3 * 4 * 2 * 5);
}

/* ---- custom codecs ------------------------------------------------------------------- */

typedef struct custom_state {
  int mode; /* 0: good 1-byte-length frames, 1: frame outside input, 2: consumed 0,
               3: always need more */
  int destroyed;
} custom_state;

static int custom_decode(void *st, const uint8_t *in, size_t len, cgnet_frame *out) {
  custom_state *s = st;
  static const uint8_t elsewhere[4];
  switch (s->mode) {
  case 1:
    out->data = elsewhere;
    out->len = 4;
    out->consumed = len;
    return len ? 1 : 0;
  case 2:
    out->data = in;
    out->len = 0;
    out->consumed = 0;
    return 1;
  case 3:
    return 0;
  }
  if (len < 1 || len < 1u + in[0]) return 0;
  out->data = in + 1;
  out->len = in[0];
  out->consumed = 1u + in[0];
  return 1;
}

static int custom_encode(void *st, const uint8_t *frame, size_t len, cgnet_encoded *out) {
  (void)st;
  if (len > 255) return CGNET_EMSGSIZE;
  out->header[0] = (uint8_t)len;
  out->iov[0] = (struct iovec){.iov_base = out->header, .iov_len = 1};
  out->iov[1] = (struct iovec){.iov_base = (void *)frame, .iov_len = len};
  out->iovcnt = 2;
  return 0;
}

static void custom_destroy(void *st) {
  ((custom_state *)st)->destroyed++;
}

static void test_custom(void **state) {
  (void)state;
  custom_state st = {0};
  cgnet_codec_ops ops = {custom_decode, custom_encode, custom_destroy};
  cgnet_codec *c;
  cgnet_frame f;
  cgnet_encoded e;
  assert_rc(cgnet_codec_new(&ops, &st, 10, &c), 0);
  static const uint8_t good[] = {3, 'a', 'b', 'c', 0};
  assert_int_equal(dec_bytes(c, good, 5, &f), 1);
  assert_int_equal(f.len, 3);
  assert_int_equal(dec_bytes(c, good + 4, 1, &f), 1);
  assert_int_equal(f.len, 0);
  static const uint8_t over[] = {11, 0};
  assert_int_equal(dec_bytes(c, over, 2, &f), 0);
  uint8_t twelve[12] = {11};
  assert_int_equal(dec_bytes(c, twelve, 12, &f), CGNET_EFRAMETOOLARGE); /* frame 11 > 10 */
  assert_rc(cgnet_codec_encode(c, (const uint8_t *)"xy", 2, &e), 0);
  assert_int_equal(e.iovcnt, 2);
  st.mode = 1;
  assert_int_equal(dec_bytes(c, good, 5, &f), CGNET_ECODEC);
  st.mode = 2;
  assert_int_equal(dec_bytes(c, good, 5, &f), CGNET_ECODEC);
  st.mode = 3;
  assert_int_equal(dec_bytes(c, twelve, 10, &f), 0);
  assert_int_equal(dec_bytes(c, twelve, 11, &f), CGNET_EFRAMETOOLARGE); /* > max pending */
  cgnet_codec_free(c);
  assert_int_equal(st.destroyed, 1);

  cgnet_codec_ops no_decode = {.encode = custom_encode};
  assert_rc(cgnet_codec_new(&no_decode, NULL, 0, &c), CGNET_EINVAL);
  assert_rc(cgnet_codec_new(&ops, &st, CGNET_UNLIMITED, &c), CGNET_EINVAL);
  assert_rc(cgnet_codec_new(&ops, &st, 0, &c), 0);
  assert_int_equal(cgnet_codec_max_frame_length(c), 1024 * 1024);
  cgnet_codec_free(c);
  assert_int_equal(st.destroyed, 2);
  cgnet_codec_free(NULL);
}

/* ---- property: whole == split at every offset == random chunks ----------------------- */

/* Random frames (lengths 0..maxlen), encoded back to back; the ones the encoder refuses
 * are skipped. `want` gets the frames that were encoded. */
static size_t random_stream(const cgnet_codec *c, const uint8_t *alphabet, size_t nalpha,
                            size_t maxlen, size_t fixed, uint8_t *out, size_t cap,
                            got *want) {
  uint8_t f[512];
  size_t olen = 0;
  got_reset(want);
  for (int tries = 0; tries < 64 && olen + maxlen + 16 < cap; tries++) {
    size_t len = fixed ? fixed : rnd_below(maxlen + 1);
    for (size_t i = 0; i < len; i++)
      f[i] = nalpha ? alphabet[rnd_below(nalpha)] : (uint8_t)rnd();
    if (encode_append(c, f, len, out, &olen) == 0) got_add(want, f, len);
  }
  return olen;
}

/* Decoding s whole, split at every offset, and in random chunks agrees; returns the
 * whole decode in g. */
static void check_splits(const cgnet_codec *c, const uint8_t *s, size_t len, got *g) {
  got t = {0};
  decode_whole(c, s, len, g);
  for (size_t cut = 0; cut <= len; cut++) {
    decode_cuts(c, s, len, &cut, 1, &t);
    assert_same_frames(g, &t);
  }
  size_t cuts[64];
  for (int round = 0; round < 20; round++) {
    size_t n = 0, at = 0;
    while (n < 64 && at < len) {
      at += 1 + rnd_below(round % 2 ? 4 : 64);
      if (at < len) cuts[n++] = at;
    }
    decode_cuts(c, s, len, cuts, n, &t);
    assert_same_frames(g, &t);
  }
  got_free(&t);
}

static void test_property(void **state) {
  (void)state;
  static const uint8_t lines[] = {'a', 'b', '\r', '\n'}; /* encoded: the first 3 */
  static const uint8_t abc[] = {'a', 'b', 'c'};
  cgnet_codec *codecs[6];
  cgnet_line_codec_options lo = {.max_frame_length = 40};
  assert_rc(cgnet_codec_line(&lo, &codecs[0]), 0);
  codecs[1] = delim_codec("abab", 40);
  assert_rc(cgnet_codec_fixed(5, &codecs[2]), 0);
  codecs[3] = lf_codec((cgnet_length_field_codec_options){
      .length_field_length = 2, .initial_bytes_to_strip = 2, .max_frame_length = 60});
  codecs[4] = lf_codec((cgnet_length_field_codec_options){.byte_order = CGNET_LITTLE_ENDIAN,
                                                          .length_field_offset = 1,
                                                          .length_field_length = 3,
                                                          .length_adjustment = -1,
                                                          .max_frame_length = 60});
  codecs[5] = delim_codec(";", 40);
  uint8_t s[2048];
  got g = {0}, want = {0};
  int frames = 0;
  for (int round = 0; round < 30 * 6; round++) {
    cgnet_codec *c = codecs[round % 6];
    int kind = round % 6;
    /* Encoded frames: the decoder must give back exactly those. */
    size_t len = random_stream(c, kind == 0 ? lines : abc, kind == 3 ? 0 : 3,
                               kind == 0 || kind == 1 ? 30 : 45, kind == 2 ? 5 : 0, s,
                               kind == 2 ? 400 : 800, &want);
    check_splits(c, s, len, &g);
    if (kind != 4) { /* offset 1: frames come back with their header */
      assert_same_frames(&want, &g);
    } else {
      assert_int_equal(g.nframes, want.nframes);
    }
    frames += (int)g.nframes;
    /* Random bytes: whatever happens (frames, errors), splitting changes nothing. */
    size_t rlen = 1 + rnd_below(300);
    for (size_t i = 0; i < rlen; i++)
      s[i] = kind == 0 ? lines[rnd_below(4)]
                       : (kind == 1 ? abc[rnd_below(3)] : (uint8_t)rnd());
    check_splits(c, s, rlen, &g);
  }
  assert_true(frames > 1000);
  got_free(&g);
  got_free(&want);
  for (int i = 0; i < 6; i++)
    cgnet_codec_free(codecs[i]);
}

/* ---- the hint keeps a long frame O(n) over many small reads
 * ------------------------------ */

static size_t count_calls_decode_bytes;
static int counting_line_decode(void *st, const uint8_t *in, size_t len, cgnet_frame *out) {
  const cgnet_codec *line = st;
  size_t from = out->hint <= len ? out->hint : 0;
  count_calls_decode_bytes += len - from; /* what a resuming scan touches */
  return cgnet_codec_decode(line, in, len, out);
}

static void test_hint_linear(void **state) {
  (void)state;
  cgnet_codec *line, *c;
  cgnet_line_codec_options lo = {.max_frame_length = 1 << 20};
  assert_rc(cgnet_codec_line(&lo, &line), 0);
  cgnet_codec_ops ops = {.decode = counting_line_decode, .encode = NULL};
  assert_rc(cgnet_codec_new(&ops, line, 2 << 20, &c), CGNET_EINVAL); /* no encode */
  ops.encode = custom_encode;
  assert_rc(cgnet_codec_new(&ops, line, 2 << 20, &c), 0);
  size_t n = 1 << 20;
  uint8_t *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, 'x', n);
  s[n] = '\n';
  got g = {0};
  pending p = {0};
  count_calls_decode_bytes = 0;
  for (size_t at = 0; at <= n; at += 1024) { /* 1 KiB reads: 1025 decode calls */
    size_t chunk = at + 1024 <= n + 1 ? 1024 : n + 1 - at;
    assert_int_equal(feed(c, &p, s + at, chunk, &g), 0);
  }
  assert_int_equal(g.nframes, 1);
  assert_int_equal(g.lens[0], n);
  assert_true(count_calls_decode_bytes <= n + 1); /* each byte scanned once */
  free(p.buf);
  free(s);
  got_free(&g);
  cgnet_codec_free(c);
  cgnet_codec_free(line);
}

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_line),
      cmocka_unit_test(test_delimiter),
      cmocka_unit_test(test_fixed),
      cmocka_unit_test(test_fixed_bounds),
      cmocka_unit_test(test_length_field_examples),
      cmocka_unit_test(test_length_field_errors),
      cmocka_unit_test(test_length_field_combinations),
      cmocka_unit_test(test_custom),
      cmocka_unit_test(test_property),
      cmocka_unit_test(test_hint_linear),
  };
  return cmocka_run_group_tests_name("test_codec", tests, NULL, NULL);
}
