/*
 * Byte buffers: the per-loop chunk pool, the contiguous inbound buffer and the outbound
 * queue (elastic ring + FIFO of blocks). Everything here runs on one loop thread.
 *
 * The outbound path is the hot path of the library: a write that fits in the ring is one
 * or two memcpy calls and no allocation. Only growth, spilling and the first write after
 * an idle period touch the pool or malloc.
 */
#include "buffer.h"

#include <stdlib.h>
#include <string.h>

#include "cgnet.h"
#include "internal/util.h"

#define POOL_MIN ((size_t)1 << CGNET__BUFPOOL_MIN_SHIFT)
#define POOL_MAX ((size_t)1 << CGNET__BUFPOOL_MAX_SHIFT)
#define SIZE_POW2_MAX (((size_t)-1 >> 1) + 1)

/* ------------------------------------------------------------------------------------ */
/* Chunk pool                                                                           */
/* ------------------------------------------------------------------------------------ */

void cgnet__bufpool_init(cgnet__bufpool *p) {
  memset(p, 0, sizeof(*p));
}

void cgnet__bufpool_destroy(cgnet__bufpool *p) {
  for (int c = 0; c < CGNET__BUFPOOL_CLASSES; c++) {
    while (p->count[c] > 0)
      free(p->chunks[c][--p->count[c]]);
  }
}

/* Size class of a power-of-two size in [POOL_MIN, POOL_MAX]. */
static int pool_class(size_t cap) {
  return __builtin_ctzll((unsigned long long)cap) - CGNET__BUFPOOL_MIN_SHIFT;
}

/* How many chunks of class c the pool keeps: CGNET__BUFPOOL_KEEP, and no more than
 * CGNET__BUFPOOL_CLASS_BYTES of them, so the large classes do not hold memory that every
 * conn under backpressure (a full 64 KiB ring each) would rather have. */
#define POOL_KEEP(c)                                                                       \
  ((CGNET__BUFPOOL_CLASS_BYTES >> ((c) + CGNET__BUFPOOL_MIN_SHIFT)) < CGNET__BUFPOOL_KEEP  \
       ? (int)(CGNET__BUFPOOL_CLASS_BYTES >> ((c) + CGNET__BUFPOOL_MIN_SHIFT))             \
       : CGNET__BUFPOOL_KEEP)
static const int pool_keep[CGNET__BUFPOOL_CLASSES] = {
    POOL_KEEP(0), POOL_KEEP(1), POOL_KEEP(2), POOL_KEEP(3), POOL_KEEP(4)};
_Static_assert(CGNET__BUFPOOL_CLASSES == 5, "pool_keep lists one entry per class");

void *cgnet__bufpool_get(cgnet__bufpool *p, size_t *cap) {
  size_t want = *cap;
  if (want <= POOL_MIN) {
    want = POOL_MIN;
  } else {
    if (cgnet__unlikely(want > SIZE_POW2_MAX)) return NULL;
    want = cgnet__next_pow2(want);
  }
  if (want <= POOL_MAX) {
    int c = pool_class(want);
    if (p->count[c] > 0) {
      *cap = want;
      void *mem = p->chunks[c][--p->count[c]];
      if (p->count[c] < p->idle[c]) p->idle[c] = p->count[c];
      return mem;
    }
  }
  void *mem = malloc(want);
  if (mem) *cap = want;
  return mem;
}

size_t cgnet__bufpool_trim(cgnet__bufpool *p) {
  size_t freed = 0;
  for (int c = 0; c < CGNET__BUFPOOL_CLASSES; c++) {
    /* The bottom idle[c] chunks were never taken in the period: they go. */
    int drop = p->idle[c];
    for (int i = 0; i < drop; i++)
      free(p->chunks[c][i]);
    memmove(p->chunks[c], p->chunks[c] + drop,
            (size_t)(p->count[c] - drop) * sizeof(void *));
    p->count[c] -= drop;
    p->idle[c] = p->count[c];
    freed += (size_t)drop << (c + CGNET__BUFPOOL_MIN_SHIFT);
  }
  p->released += freed;
  return freed;
}

size_t cgnet__bufpool_bytes(const cgnet__bufpool *p) {
  size_t n = 0;
  for (int c = 0; c < CGNET__BUFPOOL_CLASSES; c++)
    n += (size_t)p->count[c] << (c + CGNET__BUFPOOL_MIN_SHIFT);
  return n;
}

void cgnet__bufpool_put(cgnet__bufpool *p, void *mem, size_t cap) {
  if (!mem) return;
  if (cap >= POOL_MIN && cap <= POOL_MAX && (cap & (cap - 1)) == 0) {
    int c = pool_class(cap);
    if (p->count[c] < pool_keep[c]) {
      p->chunks[c][p->count[c]++] = mem;
      return;
    }
  }
  p->released += cap;
  free(mem);
}

/* ------------------------------------------------------------------------------------ */
/* Contiguous inbound buffer                                                            */
/* ------------------------------------------------------------------------------------ */

int cgnet__buf_append(cgnet__buf *b, cgnet__bufpool *p, const void *data, size_t len) {
  if (len == 0) return 0;
  if (cgnet__likely(b->cap - b->tail >= len)) { /* room at the tail (also cap == 0) */
    memcpy(b->data + b->tail, data, len);
    b->tail += len;
    return 0;
  }
  size_t live = b->tail - b->head;
  if (len > (size_t)-1 - live) return CGNET_ENOMEM;
  if (live + len <= b->cap) { /* compact: slide the live bytes to the front */
    memmove(b->data, b->data + b->head, live);
  } else {
    size_t cap = live + len;
    uint8_t *mem = cgnet__bufpool_get(p, &cap);
    if (!mem) return CGNET_ENOMEM;
    if (live) memcpy(mem, b->data + b->head, live);
    cgnet__bufpool_put(p, b->data, b->cap);
    b->data = mem;
    b->cap = cap;
  }
  b->head = 0;
  memcpy(b->data + live, data, len);
  b->tail = live + len;
  return 0;
}

void cgnet__buf_consume(cgnet__buf *b, cgnet__bufpool *p, size_t n) {
  size_t live = b->tail - b->head;
  if (n >= live) {
    cgnet__buf_release(b, p);
    return;
  }
  b->head += n;
}

void cgnet__buf_release(cgnet__buf *b, cgnet__bufpool *p) {
  cgnet__bufpool_put(p, b->data, b->cap);
  cgnet__buf_init(b);
}

/* ------------------------------------------------------------------------------------ */
/* Outbound queue                                                                       */
/* ------------------------------------------------------------------------------------ */

/*
 * Invariants:
 *  - total == ring_len + the unsent bytes of every block.
 *  - total == 0  <=>  ring == NULL && first == NULL (nothing is held while idle).
 *  - Once a block exists, every new byte goes to the blocks (the ring may still hold
 *    older bytes being drained), so the byte order is ring, then blocks in list order.
 *  - Blocks in the list are never empty; only `last` has room for appends.
 */

void cgnet__outbuf_init(cgnet__outbuf *o) {
  memset(o, 0, sizeof(*o));
}

/* A cursor over the caller's iovecs, so one code path serves append and appendv. */
typedef struct src {
  const struct iovec *iov;
  size_t off; /* offset in iov[0] */
} src;

static void src_copy(src *s, uint8_t *dst, size_t n) {
  while (n) {
    size_t avail = s->iov->iov_len - s->off;
    if (avail == 0) {
      s->iov++;
      s->off = 0;
      continue;
    }
    size_t k = avail < n ? avail : n;
    memcpy(dst, (const uint8_t *)s->iov->iov_base + s->off, k);
    dst += k;
    n -= k;
    s->off += k;
  }
}

/* Copy n bytes (n <= free space) to the ring's tail, wrapping if needed. */
static void ring_write(cgnet__outbuf *o, src *s, size_t n) {
  size_t pos = (o->ring_head + o->ring_len) & (o->ring_cap - 1);
  size_t first = o->ring_cap - pos;
  if (first >= n) {
    src_copy(s, o->ring + pos, n);
  } else {
    src_copy(s, o->ring + pos, first);
    src_copy(s, o->ring, n - first);
  }
  o->ring_len += n;
}

/* Move the ring's bytes, linearized, into a chunk of newcap bytes. */
static int ring_resize(cgnet__outbuf *o, cgnet__bufpool *p, size_t newcap) {
  uint8_t *mem = cgnet__bufpool_get(p, &newcap);
  if (!mem) return CGNET_ENOMEM;
  if (o->ring_len) {
    size_t first = o->ring_cap - o->ring_head;
    if (first >= o->ring_len) {
      memcpy(mem, o->ring + o->ring_head, o->ring_len);
    } else {
      memcpy(mem, o->ring + o->ring_head, first);
      memcpy(mem + first, o->ring, o->ring_len - first);
    }
  }
  cgnet__bufpool_put(p, o->ring, o->ring_cap);
  o->ring = mem;
  o->ring_cap = newcap;
  o->ring_head = 0;
  return 0;
}

static cgnet__outblock *block_new(size_t size) {
  if (size > (size_t)-1 - sizeof(cgnet__outblock)) return NULL;
  cgnet__outblock *b = malloc(sizeof(*b) + size);
  if (!b) return NULL;
  b->next = NULL;
  b->cap = size;
  b->head = b->tail = 0;
  return b;
}

/*
 * The general append: len bytes from s. Every allocation happens before any byte is
 * copied, so on CGNET_ENOMEM nothing has been appended (a ring that grew keeps its old
 * bytes; a ring allocated for this call alone is given back).
 */
static int append_slow(cgnet__outbuf *o, cgnet__bufpool *p, size_t ring_max, src *s,
                       size_t len) {
  if (len > (size_t)-1 - o->total) return CGNET_ENOMEM;
  if (ring_max < POOL_MIN) ring_max = POOL_MIN;
  if (ring_max > SIZE_POW2_MAX) ring_max = SIZE_POW2_MAX;
  ring_max = cgnet__next_pow2(ring_max);

  size_t to_ring = 0;
  int ring_fresh = 0;
  if (!o->first) {
    if (!o->ring) {
      size_t cap = len >= ring_max ? ring_max : cgnet__max_size(POOL_MIN, len);
      o->ring = cgnet__bufpool_get(p, &cap);
      if (!o->ring) return CGNET_ENOMEM;
      o->ring_cap = cap;
      o->ring_head = o->ring_len = 0;
      ring_fresh = 1;
    } else if (len > o->ring_cap - o->ring_len && o->ring_cap < ring_max && !o->pinned) {
      /* Doubling until it fits or reaches ring_max is one jump to a power of two. */
      size_t need = len >= ring_max ? ring_max : o->ring_len + len;
      size_t newcap = cgnet__min_size(ring_max, cgnet__next_pow2(need));
      if (ring_resize(o, p, newcap) != 0) return CGNET_ENOMEM;
    }
    to_ring = cgnet__min_size(len, o->ring_cap - o->ring_len);
  }

  size_t rest = len - to_ring;
  size_t to_last = 0;
  cgnet__outblock *nb = NULL;
  if (rest) {
    if (o->last) to_last = cgnet__min_size(rest, o->last->cap - o->last->tail);
    if (rest > to_last) {
      nb = block_new(cgnet__max_size(CGNET__OUTBLOCK_MIN, rest - to_last));
      if (!nb) {
        if (ring_fresh) {
          cgnet__bufpool_put(p, o->ring, o->ring_cap);
          o->ring = NULL;
          o->ring_cap = 0;
        }
        return CGNET_ENOMEM;
      }
    }
  }

  if (to_ring) ring_write(o, s, to_ring);
  if (to_last) {
    src_copy(s, o->last->data + o->last->tail, to_last);
    o->last->tail += to_last;
  }
  if (nb) {
    nb->tail = rest - to_last;
    src_copy(s, nb->data, nb->tail);
    if (o->last)
      o->last->next = nb;
    else
      o->first = nb;
    o->last = nb;
  }
  o->total += len;
  return 0;
}

int cgnet__outbuf_append(cgnet__outbuf *o, cgnet__bufpool *p, size_t ring_max,
                         const void *data, size_t len) {
  if (len == 0) return 0;
  struct iovec iov = {(void *)(uintptr_t)data, len};
  src s = {&iov, 0};
  /* Fast path: no blocks and the ring has room. */
  if (cgnet__likely(!o->first && len <= o->ring_cap - o->ring_len)) {
    ring_write(o, &s, len);
    o->total += len;
    return 0;
  }
  return append_slow(o, p, ring_max, &s, len);
}

int cgnet__outbuf_appendv(cgnet__outbuf *o, cgnet__bufpool *p, size_t ring_max,
                          const struct iovec *iov, int iovcnt) {
  if (iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len > (size_t)-1 - len) return CGNET_ENOMEM;
    len += iov[i].iov_len;
  }
  if (len == 0) return 0;
  src s = {iov, 0};
  if (!o->first && len <= o->ring_cap - o->ring_len) {
    ring_write(o, &s, len);
    o->total += len;
    return 0;
  }
  return append_slow(o, p, ring_max, &s, len);
}

int cgnet__outbuf_gather(const cgnet__outbuf *o, struct iovec *iov, int max) {
  int n = 0;
  if (max <= 0) return 0;
  if (o->ring_len) {
    size_t first = o->ring_cap - o->ring_head;
    iov[n].iov_base = o->ring + o->ring_head;
    if (first >= o->ring_len) {
      iov[n++].iov_len = o->ring_len;
    } else {
      iov[n++].iov_len = first;
      if (n == max) return n;
      iov[n].iov_base = o->ring;
      iov[n++].iov_len = o->ring_len - first;
    }
  }
  for (const cgnet__outblock *b = o->first; b && n < max; b = b->next) {
    iov[n].iov_base = (void *)(uintptr_t)(b->data + b->head);
    iov[n++].iov_len = b->tail - b->head;
  }
  return n;
}

void cgnet__outbuf_consume(cgnet__outbuf *o, cgnet__bufpool *p, size_t n) {
  if (n >= o->total) {
    cgnet__outbuf_release(o, p);
    return;
  }
  o->total -= n;
  size_t k = cgnet__min_size(n, o->ring_len);
  o->ring_len -= k;
  o->ring_head = o->ring_len ? (o->ring_head + k) & (o->ring_cap - 1) : 0;
  n -= k;
  while (n) {
    cgnet__outblock *b = o->first;
    size_t avail = b->tail - b->head;
    if (n < avail) {
      b->head += n;
      break;
    }
    n -= avail;
    o->first = b->next;
    free(b);
  }
  if (!o->first) o->last = NULL;
}

void cgnet__outbuf_release(cgnet__outbuf *o, cgnet__bufpool *p) {
  cgnet__outblock *b = o->first;
  while (b) {
    cgnet__outblock *next = b->next;
    free(b);
    b = next;
  }
  cgnet__bufpool_put(p, o->ring, o->ring_cap);
  cgnet__outbuf_init(o);
}
