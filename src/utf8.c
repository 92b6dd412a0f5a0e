/* Incremental UTF-8 validation (see utf8.h for the rules and the state's layout). */
#include "utf8.h"

#include <string.h>

#define HIGH_BITS 0x8080808080808080ull

static uint32_t make_state(unsigned need, unsigned lo, unsigned hi) {
  return (uint32_t)need | (uint32_t)lo << 8 | (uint32_t)hi << 16;
}

/* The state after lead byte b (which is >= 0x80), or UINT32_MAX if b cannot start a
 * character. The first continuation byte's range excludes overlongs (E0, F0), surrogates
 * (ED) and code points past U+10FFFF (F4). */
static uint32_t lead_state(uint8_t b) {
  if (b < 0xc2) return UINT32_MAX; /* continuation byte, or overlong C0/C1 */
  if (b < 0xe0) return make_state(1, 0x80, 0xbf);
  if (b == 0xe0) return make_state(2, 0xa0, 0xbf);
  if (b == 0xed) return make_state(2, 0x80, 0x9f);
  if (b < 0xf0) return make_state(2, 0x80, 0xbf);
  if (b == 0xf0) return make_state(3, 0x90, 0xbf);
  if (b < 0xf4) return make_state(3, 0x80, 0xbf);
  if (b == 0xf4) return make_state(3, 0x80, 0x8f);
  return UINT32_MAX;
}

/* Skip the ASCII run at p[i, n) eight bytes at a time; returns the first index that may
 * hold a non-ASCII byte. */
static size_t skip_ascii(const uint8_t *p, size_t i, size_t n) {
  while (n - i >= 8) {
    uint64_t w;
    memcpy(&w, p + i, sizeof w);
    if (w & HIGH_BITS) break;
    i += 8;
  }
  return i;
}

int cgnet__utf8_feed(cgnet__utf8 *v, const uint8_t *p, size_t n, size_t *bad_offset) {
  uint32_t st = v->state;
  size_t i = 0;
  while (i < n) {
    if (st == 0) {
      i = skip_ascii(p, i, n);
      if (i == n) break;
      uint8_t b = p[i];
      if (b < 0x80) {
        i++;
        continue;
      }
      st = lead_state(b);
      if (st == UINT32_MAX) {
        v->state = 0;
        *bad_offset = i;
        return -1;
      }
      i++;
      continue;
    }
    uint8_t b = p[i];
    unsigned lo = (st >> 8) & 0xff, hi = (st >> 16) & 0xff, need = st & 0xff;
    if (b < lo || b > hi) {
      v->state = st;
      *bad_offset = i;
      return -1;
    }
    st = need == 1 ? 0 : make_state(need - 1, 0x80, 0xbf);
    i++;
  }
  v->state = st;
  return 0;
}

int cgnet__utf8_valid(const uint8_t *p, size_t n) {
  cgnet__utf8 v;
  size_t bad;
  cgnet__utf8_init(&v);
  return cgnet__utf8_feed(&v, p, n, &bad) == 0 && cgnet__utf8_done(&v);
}
