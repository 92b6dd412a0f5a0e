/* Small helpers shared by every module: container_of, branch hints, min/max, deadlines. */
#ifndef CGNET_INTERNAL_UTIL_H
#define CGNET_INTERNAL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define cgnet__container_of(ptr, type, member)                                             \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define cgnet__likely(x) __builtin_expect(!!(x), 1)
#define cgnet__unlikely(x) __builtin_expect(!!(x), 0)

#define CGNET__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static inline size_t cgnet__min_size(size_t a, size_t b) {
  return a < b ? a : b;
}
static inline size_t cgnet__max_size(size_t a, size_t b) {
  return a > b ? a : b;
}
static inline uint64_t cgnet__min_u64(uint64_t a, uint64_t b) {
  return a < b ? a : b;
}

/* The time delay_ms after now_ms, saturating at UINT64_MAX instead of wrapping around.
 * Every deadline ("now + timeout", "now + delay") is computed with it, so that a huge
 * delay (UINT64_MAX is the natural "never") lands in the far future, never in the past.
 * The wheel keeps an UINT64_MAX deadline armed without ever reaching it. */
static inline uint64_t cgnet__deadline(uint64_t now_ms, uint64_t delay_ms) {
  return delay_ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + delay_ms;
}

/* Smallest power of two >= v (v <= SIZE_MAX/2 + 1); 1 for v == 0. */
static inline size_t cgnet__next_pow2(size_t v) {
  if (v <= 1) return 1;
  return (size_t)1 << (64 - __builtin_clzll((unsigned long long)(v - 1)));
}

#endif
