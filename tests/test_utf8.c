/* Tests for src/utf8.c: the incremental UTF-8 validator. The table follows the rules of
 * Unicode table 3-7 (the cases a WebSocket conformance suite checks: boundaries,
 * overlongs, surrogates, code points past U+10FFFF, stray and missing continuation
 * bytes); every case is also fed split at every byte and one byte at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

#define VALID (-1)      /* well-formed and complete */
#define INCOMPLETE (-2) /* well-formed so far, ends inside a character */

typedef struct utf8_case {
  const char *bytes;
  size_t len;
  long expect; /* VALID, INCOMPLETE, or the offset of the first invalid byte */
} utf8_case;

#define C(s, e)                                                                            \
  { s, sizeof(s) - 1, e }

static const utf8_case cases[] = {
    C("", VALID),
    C("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", VALID),
    C("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", VALID), /* kosme */
    /* First and last code point of each length. */
    C("\x00", VALID),
    C("\xc2\x80", VALID),
    C("\xe0\xa0\x80", VALID),
    C("\xf0\x90\x80\x80", VALID),
    C("\x7f", VALID),
    C("\xdf\xbf", VALID),
    C("\xef\xbf\xbf", VALID),
    C("\xf4\x8f\xbf\xbf", VALID),
    /* Around the surrogates, and the noncharacters (valid in UTF-8). */
    C("\xed\x9f\xbf", VALID),
    C("\xee\x80\x80", VALID),
    C("\xef\xbf\xbd", VALID),
    C("\xef\xbf\xbe", VALID),
    C("\xf4\x8f\xbf\xbe", VALID),
    /* Past U+10FFFF, and the old 5- and 6-byte forms. */
    C("\xf4\x90\x80\x80", 1),
    C("\xf5\x80\x80\x80", 0),
    C("\xf7\xbf\xbf\xbf", 0),
    C("\xf8\x88\x80\x80\x80", 0),
    C("\xfc\x84\x80\x80\x80\x80", 0),
    /* Stray continuation bytes. */
    C("\x80", 0),
    C("\xbf", 0),
    C("\x80\xbf", 0),
    C("ab\x80\xbf\x80", 2),
    C("\xc2\x80\x80", 2),
    /* Lead bytes followed by a space. */
    C("\xc0\x20", 0),
    C("\xc2\x20", 1),
    C("\xdf\x20", 1),
    C("\xe0\x20", 1),
    C("\xe1\x80\x20", 2),
    C("\xef\x20", 1),
    C("\xf0\x20", 1),
    C("\xf1\x80\x80\x20", 3),
    C("\xf4\x20", 1),
    /* Sequences cut short at the end of the input. */
    C("\xc2", INCOMPLETE),
    C("\xe0\xa0", INCOMPLETE),
    C("\xe1", INCOMPLETE),
    C("\xf0\x90\x80", INCOMPLETE),
    C("\xf4\x8f", INCOMPLETE),
    C("abc\xe2\x82", INCOMPLETE),
    /* ... and followed by another character instead. */
    C("\xe0\xa0\xc2\x80", 2),
    C("\xf0\x90\x80\x41", 3),
    /* Impossible bytes. */
    C("\xfe", 0),
    C("\xff", 0),
    C("\xfe\xfe\xff\xff", 0),
    /* Overlongs: detected at the first byte that proves them overlong. */
    C("\xc0\xaf", 0),
    C("\xe0\x80\xaf", 1),
    C("\xf0\x80\x80\xaf", 1),
    C("\xc1\xbf", 0),
    C("\xe0\x9f\xbf", 1),
    C("\xf0\x8f\xbf\xbf", 1),
    C("\xc0\x80", 0),
    C("\xe0\x80\x80", 1),
    C("\xf0\x80\x80\x80", 1),
    /* UTF-16 surrogates, single and paired. */
    C("\xed\xa0\x80", 1),
    C("\xed\xad\xbf", 1),
    C("\xed\xae\x80", 1),
    C("\xed\xaf\xbf", 1),
    C("\xed\xb0\x80", 1),
    C("\xed\xbe\x80", 1),
    C("\xed\xbf\xbf", 1),
    C("\xed\xa0\x80\xed\xb0\x80", 1),
    C("\xed\xaf\xbf\xed\xbf\xbf", 1),
    /* Long ASCII runs around the word-at-a-time skip. */
    C("0123456789abcdefghij\x80", 20),
    C("0123456789abcdefg\xf4\x90", 18),
    C("01234567\xc3\xa9"
      "01234567\xe2\x82\xac"
      "0123456789abcdef",
      VALID),
    C("0123456789abcdef0123456789abcdef\xed\xa0\x80", 33),
    C("0123456789abcdef0123456789abcde\xe2\x82", INCOMPLETE),
};

/* Feed p[0, n) in the given pieces; returns VALID, INCOMPLETE or the first bad offset. */
static long run_pieces(const uint8_t *p, size_t n, const size_t *cuts, size_t ncuts) {
  cgnet__utf8 v;
  cgnet__utf8_init(&v);
  size_t at = 0;
  for (size_t c = 0; c <= ncuts; c++) {
    size_t end = c < ncuts ? cuts[c] : n;
    size_t bad = SIZE_MAX;
    if (cgnet__utf8_feed(&v, p + at, end - at, &bad) != 0) {
      assert_true(bad < end - at);
      return (long)(at + bad);
    }
    at = end;
  }
  return cgnet__utf8_done(&v) ? VALID : INCOMPLETE;
}

static void table_whole(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const utf8_case *c = &cases[i];
    long got = run_pieces((const uint8_t *)c->bytes, c->len, NULL, 0);
    if (got != c->expect) fail_msg("case %zu: got %ld, want %ld", i, got, c->expect);
    assert_int_equal(cgnet__utf8_valid((const uint8_t *)c->bytes, c->len),
                     c->expect == VALID);
  }
}

static void table_split_at_every_byte(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const utf8_case *c = &cases[i];
    for (size_t k = 0; k <= c->len; k++) {
      long got = run_pieces((const uint8_t *)c->bytes, c->len, &k, 1);
      if (got != c->expect)
        fail_msg("case %zu split at %zu: got %ld, want %ld", i, k, got, c->expect);
    }
  }
}

static void table_one_byte_at_a_time(void **state) {
  (void)state;
  size_t cuts[64];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const utf8_case *c = &cases[i];
    assert_true(c->len <= 64);
    for (size_t k = 0; k + 1 < c->len; k++)
      cuts[k] = k + 1;
    long got = run_pieces((const uint8_t *)c->bytes, c->len, cuts, c->len ? c->len - 1 : 0);
    if (got != c->expect)
      fail_msg("case %zu bytewise: got %ld, want %ld", i, got, c->expect);
  }
}

static size_t encode(uint32_t cp, size_t len, uint8_t *out) {
  if (len == 1) {
    out[0] = (uint8_t)cp;
  } else if (len == 2) {
    out[0] = (uint8_t)(0xc0 | cp >> 6);
    out[1] = (uint8_t)(0x80 | (cp & 0x3f));
  } else if (len == 3) {
    out[0] = (uint8_t)(0xe0 | cp >> 12);
    out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp & 0x3f));
  } else {
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
  }
  return len;
}

static size_t shortest(uint32_t cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/* Every code point in its shortest form is valid except the surrogates (bad at byte 1);
 * every longer (overlong) form is bad at byte 0 (C0, C1) or 1 (E0, F0). */
static void every_code_point(void **state) {
  (void)state;
  uint8_t b[4];
  for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
    size_t n = encode(cp, shortest(cp), b);
    long want = cp >= 0xd800 && cp <= 0xdfff ? 1 : VALID;
    long got = run_pieces(b, n, NULL, 0);
    if (got != want) fail_msg("U+%04X: got %ld, want %ld", (unsigned)cp, got, want);
    for (size_t len = n + 1; len <= 4 && len >= 2; len++) {
      size_t m = encode(cp, len, b);
      long over = len == 2 ? 0 : 1;
      got = run_pieces(b, m, NULL, 0);
      if (got != over)
        fail_msg("U+%04X overlong in %zu: got %ld, want %ld", (unsigned)cp, len, got, over);
    }
  }
  /* Past the last code point: F4 90.. (bad at 1), then F5..F7 leads (bad at 0). */
  for (uint32_t cp = 0x110000; cp <= 0x1fffff; cp += 0x123) {
    encode(cp, 4, b);
    long want = b[0] == 0xf4 ? 1 : 0;
    assert_int_equal(run_pieces(b, 4, NULL, 0), want);
  }
}

/* A failing feed leaves the validator where it was before the bad byte. */
static void state_kept_on_error(void **state) {
  (void)state;
  cgnet__utf8 v;
  size_t bad = 99;
  cgnet__utf8_init(&v);
  assert_int_equal(cgnet__utf8_feed(&v, (const uint8_t *)"\xe2\x82", 2, &bad), 0);
  assert_int_equal(cgnet__utf8_feed(&v, (const uint8_t *)"x", 1, &bad), -1);
  assert_int_equal(bad, 0);
  assert_false(cgnet__utf8_done(&v));
  assert_int_equal(cgnet__utf8_feed(&v, (const uint8_t *)"\xac", 1, &bad), 0);
  assert_true(cgnet__utf8_done(&v));
}

/* A large valid text with multi-byte characters scattered in long ASCII runs. */
static void long_mixed_text(void **state) {
  (void)state;
  enum { N = 1 << 16 };
  uint8_t *p = malloc(N + 8);
  assert_non_null(p);
  size_t n = 0;
  unsigned seed = 12345;
  while (n < N) {
    seed = seed * 1103515245u + 12345u;
    uint32_t r = seed >> 8;
    if (r % 7 == 0) {
      uint32_t cp = (r >> 3) % 0x10ffff;
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xe9;
      n += encode(cp, shortest(cp), p + n);
    } else {
      p[n++] = (uint8_t)('a' + r % 26);
    }
  }
  assert_true(cgnet__utf8_valid(p, n));
  size_t cuts[3] = {n / 3, n / 3 + 1, n - 1};
  assert_int_equal(run_pieces(p, n, cuts, 3), VALID);
  p[n - 1] = 0xff;
  assert_int_equal(run_pieces(p, n, NULL, 0), (long)n - 1);
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(table_whole),
      cmocka_unit_test(table_split_at_every_byte),
      cmocka_unit_test(table_one_byte_at_a_time),
      cmocka_unit_test(every_code_point),
      cmocka_unit_test(state_kept_on_error),
      cmocka_unit_test(long_mixed_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
