/* Intrusive circular doubly linked list (the head is a sentinel node). */
#ifndef CGNET_INTERNAL_LIST_H
#define CGNET_INTERNAL_LIST_H

#include <stddef.h>

typedef struct cgnet__list {
  struct cgnet__list *prev, *next;
} cgnet__list;

static inline void cgnet__list_init(cgnet__list *h) {
  h->prev = h->next = h;
}
static inline int cgnet__list_empty(const cgnet__list *h) {
  return h->next == h;
}
/* A node that is not in any list points at itself (after init or remove). */
static inline int cgnet__list_linked(const cgnet__list *n) {
  return n->next != n;
}

static inline void cgnet__list_insert_tail(cgnet__list *h, cgnet__list *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}

static inline void cgnet__list_remove(cgnet__list *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

#define cgnet__list_first(h) ((h)->next)

#endif
