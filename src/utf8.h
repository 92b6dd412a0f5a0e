/*
 * Incremental UTF-8 validation (Unicode 15, table 3-7: well-formed byte sequences), for
 * WebSocket text messages and close reasons, which arrive in pieces split at any byte.
 *
 * The validator fails at the first byte that cannot continue a well-formed sequence, not
 * at the end of the character: an overlong form (C0, C1, E0 80..9F, F0 80..8F), a
 * surrogate (ED A0..BF), a code point above U+10FFFF (F4 90.., F5..FF) or a stray
 * continuation byte is rejected at that very byte. A message that ends inside a
 * character is caught by cgnet__utf8_done(). Pure and allocation-free; one validator per
 * message, used on one thread.
 */
#ifndef CGNET_UTF8_H
#define CGNET_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* State between pieces: 0 at a character boundary; otherwise the number of continuation
 * bytes still due (bits 0-7) and the range the next one must lie in (lo: bits 8-15, hi:
 * bits 16-23). */
typedef struct cgnet__utf8 {
  uint32_t state;
} cgnet__utf8;

static inline void cgnet__utf8_init(cgnet__utf8 *v) {
  v->state = 0;
}

/* Validate p[0, n) as the continuation of what v has seen. Returns 0 if every byte is
 * valid so far (the last character may still be incomplete), or -1 with *bad_offset set
 * to the offset in p of the first invalid byte; v is then left as it was before that
 * byte. */
int cgnet__utf8_feed(cgnet__utf8 *v, const uint8_t *p, size_t n, size_t *bad_offset);

/* 1 if v stands at a character boundary (a message may end here), else 0. */
static inline int cgnet__utf8_done(const cgnet__utf8 *v) {
  return v->state == 0;
}

/* Validate a whole string: 1 if p[0, n) is complete, well-formed UTF-8, else 0. */
int cgnet__utf8_valid(const uint8_t *p, size_t n);

#endif
