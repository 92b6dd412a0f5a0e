/*
 * Intrusive multi-producer single-consumer queue (Vyukov's algorithm).
 *
 * Producers (any thread) push with one atomic exchange and never block. The single
 * consumer (the loop thread) pops without locks. A push in progress may be briefly
 * invisible to pop (the producer has swapped the head but not linked the node yet);
 * pop then returns NULL with *busy set, and the consumer retries shortly.
 */
#ifndef CGNET_INTERNAL_QUEUE_H
#define CGNET_INTERNAL_QUEUE_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct cgnet__mpsc_node {
  _Atomic(struct cgnet__mpsc_node *) next;
} cgnet__mpsc_node;

typedef struct cgnet__mpsc {
  _Atomic(cgnet__mpsc_node *) head; /* producers swap in here */
  cgnet__mpsc_node *tail;           /* consumer-owned */
  cgnet__mpsc_node stub;
} cgnet__mpsc;

static inline void cgnet__mpsc_init(cgnet__mpsc *q) {
  atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
  atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
  q->tail = &q->stub;
}

/* Any thread. */
static inline void cgnet__mpsc_push(cgnet__mpsc *q, cgnet__mpsc_node *n) {
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  /* seq_cst: loop.c's wake-up handshake relies on it (see cgnet__loop_wake). */
  cgnet__mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_seq_cst);
  atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Consumer thread only. Returns NULL when empty; *busy is set when a push is mid-way. */
static inline cgnet__mpsc_node *cgnet__mpsc_pop(cgnet__mpsc *q, int *busy) {
  cgnet__mpsc_node *tail = q->tail;
  cgnet__mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
  *busy = 0;
  if (tail == &q->stub) {
    if (next == NULL) {
      *busy = atomic_load_explicit(&q->head, memory_order_acquire) != tail;
      return NULL;
    }
    q->tail = next;
    tail = next;
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
  }
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  if (atomic_load_explicit(&q->head, memory_order_acquire) != tail) {
    *busy = 1;
    return NULL;
  }
  cgnet__mpsc_push(q, &q->stub);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next != NULL) {
    q->tail = next;
    return tail;
  }
  *busy = 1;
  return NULL;
}

#endif
