/* Tests for src/buffer.c: the chunk pool, the inbound buffer and the outbound queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buffer.h"
#include "cgnet.h"
#include "internal/util.h"

/* Let malloc of an absurd size return NULL instead of aborting, so the ENOMEM paths can
 * be tested under the sanitizers too. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}
#endif
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) {
  return "allocator_may_return_null=1";
}
#endif

/* ---- helpers ---- */

/* Byte i of the reference stream: a hash of i, so no shift or reordering goes unseen. */
static uint8_t pat(size_t i) {
  uint64_t z = (uint64_t)i + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (uint8_t)(z ^ (z >> 31));
}

static void fill_pat(uint8_t *dst, size_t from, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = pat(from + i);
}

static int check_pat(const uint8_t *p, size_t from, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != pat(from + i)) return 0;
  }
  return 1;
}

static uint64_t rng_state;
static uint64_t rng(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}
static size_t rnd(size_t n) {
  return n ? (size_t)(rng() % n) : 0;
}

static uint8_t scratch[1 << 20];

/* Append pattern bytes [*w, *w + n) to o and advance *w. */
static void out_push(cgnet__outbuf *o, cgnet__bufpool *p, size_t ring_max, size_t *w,
                     size_t n) {
  assert_true(n <= sizeof(scratch));
  fill_pat(scratch, *w, n);
  assert_int_equal(cgnet__outbuf_append(o, p, ring_max, scratch, n), 0);
  *w += n;
}

static size_t count_blocks(const cgnet__outbuf *o) {
  size_t n = 0;
  for (const cgnet__outblock *b = o->first; b; b = b->next)
    n++;
  return n;
}

/* Check the structural invariants of an outbuf. */
static void out_check(const cgnet__outbuf *o, size_t ring_max) {
  size_t sum = o->ring_len;
  const cgnet__outblock *last = NULL;
  for (const cgnet__outblock *b = o->first; b; b = b->next) {
    assert_true(b->tail > b->head);
    assert_true(b->tail <= b->cap);
    sum += b->tail - b->head;
    last = b;
  }
  assert_ptr_equal(last, o->last);
  assert_int_equal(sum, o->total);
  if (o->total == 0) {
    assert_null(o->ring);
    assert_null(o->first);
    assert_int_equal(o->ring_cap, 0);
  }
  if (o->ring) {
    assert_true(o->ring_cap >= 4096 && o->ring_cap <= ring_max);
    assert_int_equal(o->ring_cap & (o->ring_cap - 1), 0);
    assert_true(o->ring_len <= o->ring_cap);
    assert_true(o->ring_head < o->ring_cap);
  }
}

/* Gather up to max iovecs and check they hold pattern bytes from r on; returns bytes. */
static size_t out_verify(const cgnet__outbuf *o, size_t r, int max) {
  struct iovec iov[64];
  int n = cgnet__outbuf_gather(o, iov, max);
  assert_true(n >= 0 && n <= max);
  size_t got = 0;
  for (int i = 0; i < n; i++) {
    assert_true(iov[i].iov_len > 0);
    assert_true(check_pat(iov[i].iov_base, r + got, iov[i].iov_len));
    got += iov[i].iov_len;
  }
  return got;
}

/* ---- pool ---- */

static void pool_round_trip(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  size_t cap = 100;
  void *a = cgnet__bufpool_get(&p, &cap);
  assert_non_null(a);
  assert_int_equal(cap, 4096);
  memset(a, 0xab, cap);
  cgnet__bufpool_put(&p, a, cap);
  assert_int_equal(p.count[0], 1);
  cap = 4096;
  void *b = cgnet__bufpool_get(&p, &cap);
  assert_ptr_equal(a, b);
  assert_int_equal(cap, 4096);
  assert_int_equal(p.count[0], 0);
  cgnet__bufpool_put(&p, NULL, 4096); /* ignored */
  assert_int_equal(p.count[0], 0);
  cgnet__bufpool_put(&p, b, cap);
  cgnet__bufpool_destroy(&p);
  assert_int_equal(p.count[0], 0);
}

static void pool_classes(void **state) {
  (void)state;
  static const struct {
    size_t ask, cap;
    int cls;
  } cases[] = {{0, 4096, 0},      {1, 4096, 0},      {4096, 4096, 0},
               {4097, 8192, 1},   {8192, 8192, 1},   {12000, 16384, 2},
               {32768, 32768, 3}, {32769, 65536, 4}, {65536, 65536, 4}};
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  void *mem[CGNET__ARRAY_LEN(cases)];
  for (size_t i = 0; i < CGNET__ARRAY_LEN(cases); i++) {
    size_t cap = cases[i].ask;
    mem[i] = cgnet__bufpool_get(&p, &cap);
    assert_non_null(mem[i]);
    assert_int_equal(cap, cases[i].cap);
    memset(mem[i], 0x5a, cap); /* ASan: the chunk really has cap bytes */
  }
  for (size_t i = 0; i < CGNET__ARRAY_LEN(cases); i++) {
    int before = p.count[cases[i].cls];
    cgnet__bufpool_put(&p, mem[i], cases[i].cap);
    /* Kept, unless its class is at its limit (the 64 KiB class keeps one chunk). */
    size_t keep = CGNET__BUFPOOL_CLASS_BYTES / cases[i].cap;
    if (keep > CGNET__BUFPOOL_KEEP) keep = CGNET__BUFPOOL_KEEP;
    assert_int_equal(p.count[cases[i].cls], (size_t)before < keep ? before + 1 : before);
  }
  /* A class only hands out its own size: an 8 KiB request gets an 8 KiB chunk back. */
  size_t cap = 8000;
  void *c = cgnet__bufpool_get(&p, &cap);
  assert_int_equal(cap, 8192);
  assert_ptr_equal(c, mem[4]); /* LIFO within the class */
  cgnet__bufpool_put(&p, c, cap);
  cgnet__bufpool_destroy(&p);
  for (int i = 0; i < CGNET__BUFPOOL_CLASSES; i++)
    assert_int_equal(p.count[i], 0);
}

static void pool_keep_cap(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  enum { N = CGNET__BUFPOOL_KEEP + 5 };
  void *mem[N];
  for (int i = 0; i < N; i++) {
    size_t cap = 4096;
    mem[i] = cgnet__bufpool_get(&p, &cap);
    assert_non_null(mem[i]);
  }
  for (int i = 0; i < N; i++)
    cgnet__bufpool_put(&p, mem[i], 4096);
  /* The extra five were freed (ASan/valgrind would see a leak otherwise). */
  assert_int_equal(p.count[0], CGNET__BUFPOOL_KEEP);
  for (int i = 1; i < CGNET__BUFPOOL_CLASSES; i++)
    assert_int_equal(p.count[i], 0);
  cgnet__bufpool_destroy(&p);
  assert_int_equal(p.count[0], 0);
}

/* The large classes keep fewer chunks: no more than CGNET__BUFPOOL_CLASS_BYTES each. */
static void pool_class_bytes_cap(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  enum { N = CGNET__BUFPOOL_KEEP };
  void *mem[N];
  for (int i = 0; i < N; i++) {
    size_t cap = 65536;
    mem[i] = cgnet__bufpool_get(&p, &cap);
    assert_non_null(mem[i]);
  }
  for (int i = 0; i < N; i++)
    cgnet__bufpool_put(&p, mem[i], 65536);
  assert_int_equal(p.count[4], CGNET__BUFPOOL_CLASS_BYTES / 65536);
  assert_int_equal(cgnet__bufpool_bytes(&p), CGNET__BUFPOOL_CLASS_BYTES);
  cgnet__bufpool_destroy(&p);
}

/* A trim frees the chunks nobody took since the previous trim, and keeps the ones that
 * were lent out and came back. */
static void pool_trim(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  enum { N = 6 };
  void *mem[N];
  for (int i = 0; i < N; i++) {
    size_t cap = 4096;
    mem[i] = cgnet__bufpool_get(&p, &cap);
  }
  for (int i = 0; i < N; i++)
    cgnet__bufpool_put(&p, mem[i], 4096);
  /* Everything came back after the pool was empty: the first trim keeps all six. */
  assert_int_equal(cgnet__bufpool_trim(&p), 0);
  assert_int_equal(p.count[0], N);
  /* Two are taken and returned during the next period; the other four sat idle. */
  for (int k = 0; k < 2; k++) {
    size_t cap = 4096;
    mem[k] = cgnet__bufpool_get(&p, &cap);
  }
  for (int k = 0; k < 2; k++)
    cgnet__bufpool_put(&p, mem[k], 4096);
  assert_int_equal(cgnet__bufpool_trim(&p), 4 * 4096);
  assert_int_equal(p.count[0], 2);
  /* Nothing is taken in the next period: the rest goes too. */
  assert_int_equal(cgnet__bufpool_trim(&p), 2 * 4096);
  assert_int_equal(p.count[0], 0);
  assert_int_equal(cgnet__bufpool_bytes(&p), 0);
  cgnet__bufpool_destroy(&p);
}

static void pool_large(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  size_t cap = 65537;
  void *a = cgnet__bufpool_get(&p, &cap);
  assert_non_null(a);
  assert_int_equal(cap, 131072);
  memset(a, 1, cap);
  cgnet__bufpool_put(&p, a, cap); /* freed, not cached */
  for (int i = 0; i < CGNET__BUFPOOL_CLASSES; i++)
    assert_int_equal(p.count[i], 0);
  cap = 1 << 20;
  a = cgnet__bufpool_get(&p, &cap);
  assert_non_null(a);
  assert_int_equal(cap, 1 << 20);
  cgnet__bufpool_put(&p, a, cap);
  for (int i = 0; i < CGNET__BUFPOOL_CLASSES; i++)
    assert_int_equal(p.count[i], 0);
  /* An impossible size fails cleanly and leaves *cap alone. */
  cap = SIZE_MAX - 10;
  assert_null(cgnet__bufpool_get(&p, &cap));
  assert_int_equal(cap, SIZE_MAX - 10);
  cgnet__bufpool_destroy(&p);
}

/* ---- contiguous buffer ---- */

static void buf_append_consume(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__buf b;
  cgnet__buf_init(&b);
  assert_null(cgnet__buf_data(&b));
  assert_int_equal(cgnet__buf_append(&b, &p, scratch, 0), 0);
  assert_null(b.data); /* empty appends allocate nothing */

  uint8_t tmp[3000];
  fill_pat(tmp, 0, 1000);
  assert_int_equal(cgnet__buf_append(&b, &p, tmp, 1000), 0);
  assert_int_equal(b.cap, 4096);
  assert_int_equal(cgnet__buf_len(&b), 1000);
  fill_pat(tmp, 1000, 2000);
  assert_int_equal(cgnet__buf_append(&b, &p, tmp, 2000), 0);
  assert_int_equal(cgnet__buf_len(&b), 3000);
  assert_true(check_pat(cgnet__buf_data(&b), 0, 3000));

  cgnet__buf_consume(&b, &p, 2500);
  assert_int_equal(cgnet__buf_len(&b), 500);
  assert_int_equal(b.head, 2500);
  assert_true(check_pat(cgnet__buf_data(&b), 2500, 500));

  /* Compaction: 500 live + 3000 new fit in 4096 but not after tail=3000. */
  uint8_t *before = b.data;
  fill_pat(tmp, 3000, 3000);
  assert_int_equal(cgnet__buf_append(&b, &p, tmp, 3000), 0);
  assert_ptr_equal(b.data, before);
  assert_int_equal(b.head, 0);
  assert_int_equal(b.tail, 3500);
  assert_true(check_pat(cgnet__buf_data(&b), 2500, 3500));

  /* Growth: 3500 + 3000 > 4096 -> an 8 KiB chunk; the 4 KiB one goes to the pool. */
  fill_pat(tmp, 6000, 3000);
  assert_int_equal(cgnet__buf_append(&b, &p, tmp, 3000), 0);
  assert_int_equal(b.cap, 8192);
  assert_int_equal(p.count[0], 1);
  assert_ptr_equal(p.chunks[0][0], before);
  assert_int_equal(cgnet__buf_len(&b), 6500);
  assert_true(check_pat(cgnet__buf_data(&b), 2500, 6500));

  /* Emptying releases the memory to the pool. */
  uint8_t *grown = b.data;
  cgnet__buf_consume(&b, &p, 6500);
  assert_null(b.data);
  assert_int_equal(b.cap, 0);
  assert_int_equal(cgnet__buf_len(&b), 0);
  assert_null(cgnet__buf_data(&b));
  assert_int_equal(p.count[1], 1);
  assert_ptr_equal(p.chunks[1][0], grown);

  /* The next append takes a chunk from the pool again. */
  assert_int_equal(cgnet__buf_append(&b, &p, tmp, 10), 0);
  assert_ptr_equal(b.data, before);
  assert_int_equal(p.count[0], 0);
  cgnet__buf_release(&b, &p);
  assert_null(b.data);
  assert_int_equal(p.count[0], 1);
  cgnet__bufpool_destroy(&p);
}

static void buf_large(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__buf b;
  cgnet__buf_init(&b);
  fill_pat(scratch, 0, 200000);
  assert_int_equal(cgnet__buf_append(&b, &p, scratch, 100), 0);
  assert_int_equal(cgnet__buf_append(&b, &p, scratch + 100, 199900), 0);
  assert_int_equal(b.cap, 262144);
  assert_true(check_pat(cgnet__buf_data(&b), 0, 200000));
  cgnet__buf_consume(&b, &p, 200000);
  assert_null(b.data);
  for (int i = 0; i < CGNET__BUFPOOL_CLASSES; i++)
    assert_true(p.count[i] <= 1);
  cgnet__bufpool_destroy(&p);
}

static void buf_random(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__buf b;
  cgnet__buf_init(&b);
  rng_state = 0x1234567u;
  size_t w = 0, r = 0;
  for (int it = 0; it < 20000; it++) {
    size_t n = rng() % 4 == 0 ? rnd(70000) : rnd(3000);
    fill_pat(scratch, w, n);
    assert_int_equal(cgnet__buf_append(&b, &p, scratch, n), 0);
    w += n;
    assert_int_equal(cgnet__buf_len(&b), w - r);
    size_t c = rnd(w - r + 1);
    if (w > r) assert_true(check_pat(cgnet__buf_data(&b), r, w - r));
    cgnet__buf_consume(&b, &p, c);
    r += c;
    assert_int_equal(cgnet__buf_len(&b), w - r);
    if (w == r) assert_null(b.data);
  }
  cgnet__buf_release(&b, &p);
  cgnet__bufpool_destroy(&p);
}

/* ---- outbound queue ---- */

static void out_coalesce(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  assert_int_equal(cgnet__outbuf_append(&o, &p, 65536, scratch, 0), 0);
  assert_null(o.ring);
  size_t w = 0;
  for (int i = 0; i < 100; i++)
    out_push(&o, &p, 65536, &w, 10);
  assert_int_equal(o.ring_cap, 4096);
  assert_int_equal(cgnet__outbuf_len(&o), 1000);
  assert_null(o.first);
  struct iovec iov[4];
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 4), 1);
  assert_int_equal(iov[0].iov_len, 1000);
  assert_true(check_pat(iov[0].iov_base, 0, 1000));
  out_check(&o, 65536);
  cgnet__outbuf_release(&o, &p);
  assert_null(o.ring);
  assert_int_equal(p.count[0], 1);
  cgnet__bufpool_destroy(&p);
}

static void out_growth(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  size_t w = 0;
  out_push(&o, &p, 65536, &w, 3000);
  assert_int_equal(o.ring_cap, 4096);
  out_push(&o, &p, 65536, &w, 2000); /* 5000: doubles to 8 KiB */
  assert_int_equal(o.ring_cap, 8192);
  assert_int_equal(p.count[0], 1);    /* the old 4 KiB ring went back to the pool */
  out_push(&o, &p, 65536, &w, 20000); /* 25000: straight to 32 KiB */
  assert_int_equal(o.ring_cap, 32768);
  out_push(&o, &p, 65536, &w, 30000); /* 55000 */
  assert_int_equal(o.ring_cap, 65536);
  assert_null(o.first);
  out_push(&o, &p, 65536, &w, 20000); /* 75000: ring full, 9464 spill into a block */
  assert_int_equal(o.ring_cap, 65536);
  assert_int_equal(o.ring_len, 65536);
  assert_int_equal(count_blocks(&o), 1);
  assert_int_equal(o.first->cap, CGNET__OUTBLOCK_MIN);
  assert_int_equal(o.first->tail, 75000 - 65536);
  out_check(&o, 65536);
  assert_int_equal(out_verify(&o, 0, 8), 75000);

  /* A fresh outbuf sizes its first ring to the write: max(4096, next_pow2(len)). */
  cgnet__outbuf o2;
  cgnet__outbuf_init(&o2);
  size_t w2 = 0;
  out_push(&o2, &p, 65536, &w2, 10000);
  assert_int_equal(o2.ring_cap, 16384);
  cgnet__outbuf_release(&o2, &p);
  /* ... capped at ring_max, with the rest in one block sized to it. */
  w2 = 0;
  out_push(&o2, &p, 8192, &w2, 100000);
  assert_int_equal(o2.ring_cap, 8192);
  assert_int_equal(count_blocks(&o2), 1);
  assert_int_equal(o2.first->cap, 100000 - 8192);
  assert_int_equal(out_verify(&o2, 0, 8), 100000);
  out_check(&o2, 8192);
  cgnet__outbuf_release(&o2, &p);
  cgnet__outbuf_release(&o, &p);
  cgnet__bufpool_destroy(&p);
}

static void out_wrap(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  size_t w = 0, r = 0;
  out_push(&o, &p, 65536, &w, 3000);
  cgnet__outbuf_consume(&o, &p, 2000);
  r += 2000;
  assert_int_equal(o.ring_head, 2000);
  out_push(&o, &p, 65536, &w, 2500); /* 1000 + 2500 fit: wraps, no growth */
  assert_int_equal(o.ring_cap, 4096);
  assert_int_equal(o.ring_len, 3500);

  /* Peek across the wrap: two ring segments with the right bytes. */
  struct iovec iov[4];
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 4), 2);
  assert_ptr_equal(iov[0].iov_base, o.ring + 2000);
  assert_int_equal(iov[0].iov_len, 2096);
  assert_ptr_equal(iov[1].iov_base, o.ring);
  assert_int_equal(iov[1].iov_len, 1404);
  assert_true(check_pat(iov[0].iov_base, r, 2096));
  assert_true(check_pat(iov[1].iov_base, r + 2096, 1404));

  /* Consume past the end of the ring: the head wraps too. */
  cgnet__outbuf_consume(&o, &p, 2500);
  r += 2500;
  assert_int_equal(o.ring_head, (2000 + 2500) % 4096);
  assert_int_equal(out_verify(&o, r, 4), 1000);

  /* Growing a wrapped ring linearizes it. */
  out_push(&o, &p, 65536, &w, 2000);
  out_push(&o, &p, 65536, &w, 1500); /* 1000 + 2000 + 1500 > 4096 */
  assert_int_equal(o.ring_cap, 8192);
  assert_int_equal(o.ring_head, 0);
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 4), 1);
  assert_int_equal(out_verify(&o, r, 4), 4500);
  out_check(&o, 65536);
  cgnet__outbuf_release(&o, &p);
  cgnet__bufpool_destroy(&p);
}

static void out_spill_order(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  size_t w = 0, r = 0;
  out_push(&o, &p, 4096, &w, 4096); /* ring full at ring_max */
  assert_null(o.first);
  out_push(&o, &p, 4096, &w, 100); /* spills */
  assert_int_equal(count_blocks(&o), 1);
  assert_int_equal(o.first->cap, CGNET__OUTBLOCK_MIN);

  /* The ring drains but new bytes still go behind the block, never into the ring. */
  cgnet__outbuf_consume(&o, &p, 3000);
  r += 3000;
  out_push(&o, &p, 4096, &w, 50);
  assert_int_equal(o.ring_len, 1096);
  assert_int_equal(count_blocks(&o), 1);
  assert_int_equal(o.first->tail, 150); /* the last block's free space is used first */

  /* Fill the block, then a new one is made for the rest. */
  out_push(&o, &p, 4096, &w, CGNET__OUTBLOCK_MIN - 150 + 10);
  assert_int_equal(count_blocks(&o), 2);
  assert_int_equal(o.first->tail, CGNET__OUTBLOCK_MIN);
  assert_int_equal(o.last->tail, 10);
  out_check(&o, 4096);
  assert_int_equal(out_verify(&o, r, 8), w - r);

  /* Drain the ring completely while blocks remain: still ordered. */
  cgnet__outbuf_consume(&o, &p, 1096);
  r += 1096;
  assert_int_equal(o.ring_len, 0);
  assert_non_null(o.first);
  assert_int_equal(out_verify(&o, r, 8), w - r);
  out_push(&o, &p, 4096, &w, 7);
  assert_int_equal(o.ring_len, 0);
  assert_int_equal(out_verify(&o, r, 8), w - r);

  /* Consume into the middle of the first block, then free it. */
  cgnet__outbuf_consume(&o, &p, 100);
  r += 100;
  assert_int_equal(o.first->head, 100);
  cgnet__outbuf_consume(&o, &p, CGNET__OUTBLOCK_MIN - 100);
  r += CGNET__OUTBLOCK_MIN - 100;
  assert_int_equal(count_blocks(&o), 1);
  assert_ptr_equal(o.first, o.last);
  assert_int_equal(out_verify(&o, r, 8), w - r);
  out_check(&o, 4096);
  cgnet__outbuf_release(&o, &p);
  cgnet__bufpool_destroy(&p);
}

static void out_release_at_zero(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  size_t w = 0;
  out_push(&o, &p, 8192, &w, 8000);
  out_push(&o, &p, 8192, &w, 30000);
  assert_non_null(o.first);
  uint8_t *ring = o.ring;
  cgnet__outbuf_consume(&o, &p, 20000);
  assert_non_null(o.ring);
  cgnet__outbuf_consume(&o, &p, 18000);
  assert_int_equal(cgnet__outbuf_len(&o), 0);
  assert_null(o.ring);
  assert_int_equal(o.ring_cap, 0);
  assert_int_equal(o.ring_len, 0);
  assert_null(o.first);
  assert_null(o.last);
  assert_int_equal(p.count[1], 1); /* the 8 KiB ring is back in the pool */
  assert_ptr_equal(p.chunks[1][0], ring);
  struct iovec iov[2];
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 2), 0);

  /* Ring only: consuming everything releases it as well. */
  out_push(&o, &p, 8192, &w, 100);
  assert_int_equal(o.ring_cap, 4096);
  cgnet__outbuf_consume(&o, &p, 60);
  assert_non_null(o.ring);
  cgnet__outbuf_consume(&o, &p, 40);
  assert_null(o.ring);
  assert_int_equal(o.total, 0);
  cgnet__outbuf_release(&o, &p); /* harmless when empty */
  assert_null(o.ring);
  cgnet__bufpool_destroy(&p);
}

static void out_gather_small_max(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  size_t w = 0, r = 0;
  out_push(&o, &p, 4096, &w, 4000);
  cgnet__outbuf_consume(&o, &p, 3000);
  r += 3000;
  out_push(&o, &p, 4096, &w, 3096); /* ring full and wrapped: [3000, 4096) + [0, 3000) */
  assert_int_equal(o.ring_len, 4096);
  out_push(&o, &p, 4096, &w, CGNET__OUTBLOCK_MIN); /* block 1 (full) */
  out_push(&o, &p, 4096, &w, 5);                   /* block 2 */
  assert_int_equal(count_blocks(&o), 2);

  struct iovec iov[8];
  memset(iov, 0, sizeof(iov));
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 0), 0);
  assert_int_equal(cgnet__outbuf_gather(&o, iov, -1), 0);
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 1), 1);
  assert_int_equal(iov[0].iov_len, 1096);
  assert_null(iov[1].iov_base); /* nothing written past max */
  assert_int_equal(out_verify(&o, r, 1), 1096);
  assert_int_equal(out_verify(&o, r, 2), 4096);
  assert_int_equal(out_verify(&o, r, 3), 4096 + CGNET__OUTBLOCK_MIN);
  assert_int_equal(out_verify(&o, r, 4), 4096 + CGNET__OUTBLOCK_MIN + 5);
  assert_int_equal(cgnet__outbuf_gather(&o, iov, 8), 4);
  cgnet__outbuf_release(&o, &p);
  assert_null(o.first);
  cgnet__bufpool_destroy(&p);
}

static void out_appendv(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, NULL, 0), 0);
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, NULL, 1), CGNET_EINVAL);
  struct iovec none = {scratch, 0};
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, &none, -1), CGNET_EINVAL);
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, &none, 1), 0);
  assert_null(o.ring);

  /* Header + empty piece + body that crosses from the ring into a block. */
  static uint8_t src[10000];
  fill_pat(src, 0, sizeof(src));
  struct iovec v[4] = {{src, 20}, {src + 20, 0}, {src + 20, 1000}, {src + 1020, 4000}};
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, v, 4), 0);
  assert_int_equal(o.total, 5020);
  assert_int_equal(o.ring_len, 4096);
  assert_int_equal(count_blocks(&o), 1);
  struct iovec w2[2] = {{src + 5020, 3}, {src + 5023, 4977}};
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, w2, 2), 0);
  assert_int_equal(o.total, 10000);
  assert_int_equal(count_blocks(&o), 1);
  assert_int_equal(out_verify(&o, 0, 8), 10000);
  out_check(&o, 4096);

  /* A total that overflows size_t is refused before anything is touched. */
  struct iovec huge[2] = {{src, SIZE_MAX}, {src, 2}};
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, huge, 2), CGNET_ENOMEM);
  assert_int_equal(o.total, 10000);
  assert_int_equal(out_verify(&o, 0, 8), 10000);
  cgnet__outbuf_release(&o, &p);
  cgnet__bufpool_destroy(&p);
}

static void out_enomem_all_or_nothing(void **state) {
  (void)state;
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  cgnet__outbuf o;
  cgnet__outbuf_init(&o);
  /* An empty outbuf: the ring it took for the failed write is given back. */
  size_t huge = SIZE_MAX / 2;
  assert_int_equal(cgnet__outbuf_append(&o, &p, 4096, scratch, huge), CGNET_ENOMEM);
  assert_null(o.ring);
  assert_null(o.first);
  assert_int_equal(o.total, 0);
  assert_int_equal(p.count[0], 1);

  /* Queued bytes stay exactly as they were: the ring's free space is not filled. */
  size_t w = 0;
  out_push(&o, &p, 4096, &w, 100);
  assert_int_equal(cgnet__outbuf_append(&o, &p, 4096, scratch, huge), CGNET_ENOMEM);
  assert_int_equal(o.total, 100);
  assert_int_equal(o.ring_len, 100);
  assert_null(o.first);
  assert_int_equal(out_verify(&o, 0, 4), 100);

  /* Same with blocks present. */
  out_push(&o, &p, 4096, &w, 5000);
  size_t tail = o.last->tail;
  struct iovec v[2] = {{scratch, 10}, {scratch, huge}};
  assert_int_equal(cgnet__outbuf_appendv(&o, &p, 4096, v, 2), CGNET_ENOMEM);
  assert_int_equal(o.total, 5100);
  assert_int_equal(o.last->tail, tail);
  assert_int_equal(out_verify(&o, 0, 4), 5100);
  out_check(&o, 4096);
  cgnet__outbuf_release(&o, &p);
  cgnet__bufpool_destroy(&p);
}

/* Random appends (single and gathered) against random gather+consume steps, checked
 * against the reference stream and the structural invariants after every step. */
static void out_random_property(void **state) {
  (void)state;
  static const size_t ring_maxes[] = {4096, 8192, 65536};
  static struct iovec pieces[16];
  cgnet__bufpool p;
  cgnet__bufpool_init(&p);
  rng_state = 0xC0FFEE1234ull;
  for (size_t rm = 0; rm < CGNET__ARRAY_LEN(ring_maxes); rm++) {
    size_t ring_max = ring_maxes[rm];
    cgnet__outbuf o;
    cgnet__outbuf_init(&o);
    size_t w = 0, r = 0, releases = 0;
    for (int it = 0; it < 20000; it++) {
      int op = (int)rnd(10);
      if (op < 5) {
        size_t n;
        switch (rnd(4)) {
        case 0:
          n = rnd(16);
          break;
        case 1:
          n = rnd(600);
          break;
        case 2:
          n = rnd(5000);
          break;
        default:
          n = rnd(40000);
          break;
        }
        if (rnd(3) == 0) { /* appendv with up to 16 pieces */
          int cnt = 1 + (int)rnd(16);
          fill_pat(scratch, w, n);
          size_t off = 0;
          for (int i = 0; i < cnt; i++) {
            size_t k = i == cnt - 1 ? n - off : rnd(n - off + 1);
            pieces[i].iov_base = scratch + off;
            pieces[i].iov_len = k;
            off += k;
          }
          assert_int_equal(cgnet__outbuf_appendv(&o, &p, ring_max, pieces, cnt), 0);
          w += n;
        } else {
          out_push(&o, &p, ring_max, &w, n);
        }
      } else {
        int max = 1 + (int)rnd(8);
        size_t seen = out_verify(&o, r, max);
        size_t c = rnd(4) == 0 ? seen : rnd(seen + 1);
        cgnet__outbuf_consume(&o, &p, c);
        r += c;
        if (r == w) releases++;
      }
      assert_int_equal(cgnet__outbuf_len(&o), w - r);
      out_check(&o, ring_max);
    }
    assert_int_equal(out_verify(&o, r, 64) <= w - r, 1);
    while (o.total) { /* drain */
      size_t seen = out_verify(&o, r, 3);
      cgnet__outbuf_consume(&o, &p, seen);
      r += seen;
    }
    assert_int_equal(r, w);
    assert_true(releases > 0);
    out_check(&o, ring_max);
  }
  cgnet__bufpool_destroy(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pool_round_trip),
      cmocka_unit_test(pool_classes),
      cmocka_unit_test(pool_keep_cap),
      cmocka_unit_test(pool_class_bytes_cap),
      cmocka_unit_test(pool_trim),
      cmocka_unit_test(pool_large),
      cmocka_unit_test(buf_append_consume),
      cmocka_unit_test(buf_large),
      cmocka_unit_test(buf_random),
      cmocka_unit_test(out_coalesce),
      cmocka_unit_test(out_growth),
      cmocka_unit_test(out_wrap),
      cmocka_unit_test(out_spill_order),
      cmocka_unit_test(out_release_at_zero),
      cmocka_unit_test(out_gather_small_max),
      cmocka_unit_test(out_appendv),
      cmocka_unit_test(out_enomem_all_or_nothing),
      cmocka_unit_test(out_random_property),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
