/*
 * Byte buffers for connections. All of them run on one loop thread and are not
 * thread-safe.
 *
 *  - cgnet__bufpool: a per-loop cache of power-of-two chunks (4 KiB .. 64 KiB) so that
 *    buffers released when a conn goes idle can be taken again without malloc. Each size
 *    class keeps at most CGNET__BUFPOOL_KEEP chunks and CGNET__BUFPOOL_CLASS_BYTES; the
 *    rest go back to malloc, so the cache holds at most 320 KiB per loop (16 x 4 KiB,
 *    8 x 8 KiB, 4 x 16 KiB, 2 x 32 KiB, 1 x 64 KiB: what a turn's flushes reuse; more
 *    would be memory every conn held at the high watermark could use); chunks left
 *    unused for a trim period (about a second) are freed.
 *  - cgnet__buf: a contiguous growable buffer (head/tail indices) for inbound bytes the
 *    user left unconsumed. It is released when it empties, so idle conns hold nothing.
 *  - cgnet__outbuf: the outbound queue: an elastic ring (power of two, starting at
 *    4 KiB, doubling up to ring_max) and, past that, a FIFO list of malloc'd blocks. Bytes
 *    are always appended in order: once blocks exist, new bytes go to the blocks. gather()
 *    fills an iovec array (ring: 1 or 2 segments, then blocks) for one writev().
 */
#ifndef CGNET_BUFFER_H
#define CGNET_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define CGNET__BUFPOOL_MIN_SHIFT 12 /* 4 KiB */
#define CGNET__BUFPOOL_MAX_SHIFT 16 /* 64 KiB */
#define CGNET__BUFPOOL_CLASSES (CGNET__BUFPOOL_MAX_SHIFT - CGNET__BUFPOOL_MIN_SHIFT + 1)
#define CGNET__BUFPOOL_KEEP 16                 /* chunks kept per size class, at most */
#define CGNET__BUFPOOL_CLASS_BYTES (64 * 1024) /* ... and at most this many bytes */
#define CGNET__OUTBLOCK_MIN (16 * 1024)        /* smallest block allocation */

typedef struct cgnet__bufpool {
  void *chunks[CGNET__BUFPOOL_CLASSES][CGNET__BUFPOOL_KEEP];
  int count[CGNET__BUFPOOL_CLASSES];
  int idle[CGNET__BUFPOOL_CLASSES]; /* chunks not taken since the last trim (low mark) */
  size_t released; /* bytes given back to malloc (the loop resets it when it trims) */
} cgnet__bufpool;

void cgnet__bufpool_init(cgnet__bufpool *p);
/* Frees every cached chunk. */
void cgnet__bufpool_destroy(cgnet__bufpool *p);
/* A chunk of at least *cap bytes; *cap is set to the real size (the next power of two,
 * at least 4 KiB). Sizes above 64 KiB are plain malloc. NULL when out of memory. */
void *cgnet__bufpool_get(cgnet__bufpool *p, size_t *cap);
/* Give back a chunk obtained from get() with its real size. NULL is ignored. */
void cgnet__bufpool_put(cgnet__bufpool *p, void *mem, size_t cap);
/* Free the chunks no get() has needed since the last trim (the loop calls it about once a
 * second), so a burst's chunks do not stay cached once the burst is over. Returns the
 * bytes freed. */
size_t cgnet__bufpool_trim(cgnet__bufpool *p); /* returns the bytes freed */
/* Bytes cached (tests). */
size_t cgnet__bufpool_bytes(const cgnet__bufpool *p);

/* ---- contiguous inbound buffer ---- */
typedef struct cgnet__buf {
  uint8_t *data;
  size_t cap, head, tail; /* valid bytes are data[head, tail) */
} cgnet__buf;

static inline void cgnet__buf_init(cgnet__buf *b) {
  b->data = NULL;
  b->cap = b->head = b->tail = 0;
}
static inline size_t cgnet__buf_len(const cgnet__buf *b) {
  return b->tail - b->head;
}
static inline const uint8_t *cgnet__buf_data(const cgnet__buf *b) {
  return b->data ? b->data + b->head : NULL;
}
/* Append len bytes (moves the live bytes to the front or grows as needed; the pointer
 * from cgnet__buf_data may change). 0 or CGNET_ENOMEM. */
int cgnet__buf_append(cgnet__buf *b, cgnet__bufpool *p, const void *data, size_t len);
/* Drop n bytes from the front (n <= len); releases the memory when it empties. */
void cgnet__buf_consume(cgnet__buf *b, cgnet__bufpool *p, size_t n);
/* Release the memory and reset to empty. */
void cgnet__buf_release(cgnet__buf *b, cgnet__bufpool *p);

/* ---- outbound queue ---- */
typedef struct cgnet__outblock {
  struct cgnet__outblock *next;
  size_t cap;  /* bytes allocated in data[] */
  size_t head; /* first unsent byte */
  size_t tail; /* end of valid bytes */
  uint8_t data[];
} cgnet__outblock;

typedef struct cgnet__outbuf {
  uint8_t *ring;    /* NULL when empty and released */
  size_t ring_cap;  /* power of two, or 0 */
  size_t ring_head; /* index of the first unsent byte, < ring_cap */
  size_t ring_len;  /* unsent bytes in the ring */
  cgnet__outblock *first, *last;
  size_t total; /* ring_len + bytes in blocks */
  /* Bytes at the front a send in flight reads (a completion backend): the ring is not
   * resized while they are, so they stay in place; appends go behind them as usual. */
  size_t pinned;
} cgnet__outbuf;

void cgnet__outbuf_init(cgnet__outbuf *o);
static inline size_t cgnet__outbuf_len(const cgnet__outbuf *o) {
  return o->total;
}
/* Append bytes. ring_max (a power of two >= 4096) bounds the ring; beyond it bytes go to
 * blocks. 0 or CGNET_ENOMEM (nothing appended then). */
int cgnet__outbuf_append(cgnet__outbuf *o, cgnet__bufpool *p, size_t ring_max,
                         const void *data, size_t len);
int cgnet__outbuf_appendv(cgnet__outbuf *o, cgnet__bufpool *p, size_t ring_max,
                          const struct iovec *iov, int iovcnt);
/* Fill at most max iovecs with the queued bytes, oldest first; returns the count. */
int cgnet__outbuf_gather(const cgnet__outbuf *o, struct iovec *iov, int max);
/* Mark n bytes (n <= len) as sent. Frees emptied blocks; when everything is sent the ring
 * goes back to the pool, so an idle conn holds no buffer. */
void cgnet__outbuf_consume(cgnet__outbuf *o, cgnet__bufpool *p, size_t n);
/* Drop everything and free all memory. */
void cgnet__outbuf_release(cgnet__outbuf *o, cgnet__bufpool *p);

#endif
