/* The per-loop timing wheel (see wheel.h for the shape and the costs). */
#include "wheel.h"

#include "internal/util.h"

#define SLOT_MASK ((uint64_t)CGNET__WHEEL_SLOTS - 1)

static unsigned level_shift(int level) {
  return (unsigned)level * CGNET__WHEEL_BITS;
}

void cgnet__wheel_init(cgnet__wheel *w, uint64_t now_ms) {
  w->now = now_ms;
  w->count = 0;
  for (int l = 0; l < CGNET__WHEEL_LEVELS; l++)
    for (unsigned s = 0; s < CGNET__WHEEL_SLOTS; s++)
      cgnet__list_init(&w->slots[l][s]);
}

/*
 * File n by its distance from now: level k holds deadlines less than 64^(k+1) ticks away,
 * in the slot of bits [6k, 6k+6) of the deadline. A slot of level k is re-filed
 * ("cascaded") when the clock enters its 64^k-tick block, which is never after the
 * deadlines it holds. Deadlines beyond the top level wait in the top slot that cascades
 * last and are re-filed from there. expires >= now is required (add() guarantees it).
 */
static void file_node(cgnet__wheel *w, cgnet__tnode *n) {
  uint64_t delta = n->expires - w->now;
  int level = 0;
  while (level < CGNET__WHEEL_LEVELS - 1 &&
         delta >= ((uint64_t)1 << level_shift(level + 1)))
    level++;
  uint64_t slot;
  if (delta >= ((uint64_t)1 << level_shift(CGNET__WHEEL_LEVELS)))
    slot = (w->now >> level_shift(level)) & SLOT_MASK;
  else
    slot = (n->expires >> level_shift(level)) & SLOT_MASK;
  cgnet__list_insert_tail(&w->slots[level][slot], &n->link);
}

void cgnet__wheel_add(cgnet__wheel *w, cgnet__tnode *n, uint64_t expires_ms) {
  if (cgnet__list_linked(&n->link)) {
    cgnet__list_remove(&n->link);
    w->count--;
  }
  /* The current tick has been processed: the earliest a new timer can fire is the next. */
  n->expires = expires_ms > w->now ? expires_ms : w->now + 1;
  file_node(w, n);
  w->count++;
}

void cgnet__wheel_del(cgnet__wheel *w, cgnet__tnode *n) {
  if (!cgnet__list_linked(&n->link)) return;
  cgnet__list_remove(&n->link);
  w->count--;
}

static void cascade(cgnet__wheel *w, int level, uint64_t slot) {
  cgnet__list *head = &w->slots[level][slot];
  cgnet__list moving;
  cgnet__list_init(&moving);
  if (cgnet__list_empty(head)) return;
  moving.next = head->next;
  moving.prev = head->prev;
  moving.next->prev = &moving;
  moving.prev->next = &moving;
  cgnet__list_init(head);
  while (!cgnet__list_empty(&moving)) {
    cgnet__tnode *n = cgnet__container_of(cgnet__list_first(&moving), cgnet__tnode, link);
    cgnet__list_remove(&n->link);
    file_node(w, n);
  }
}

/* Re-file the higher-level slots whose block starts at tick t. */
static void cascade_at(cgnet__wheel *w, uint64_t t) {
  for (int level = 1; level < CGNET__WHEEL_LEVELS; level++) {
    if ((t & (((uint64_t)1 << level_shift(level)) - 1)) != 0) return;
    cascade(w, level, (t >> level_shift(level)) & SLOT_MASK);
  }
}

size_t cgnet__wheel_advance(cgnet__wheel *w, uint64_t now_ms) {
  size_t fired = 0;
  while (w->now < now_ms) {
    if (w->count == 0) {
      w->now = now_ms; /* nothing to re-file or fire: jump */
      break;
    }
    uint64_t t = ++w->now;
    cascade_at(w, t);
    cgnet__list *due = &w->slots[0][t & SLOT_MASK];
    while (!cgnet__list_empty(due)) {
      cgnet__tnode *n = cgnet__container_of(cgnet__list_first(due), cgnet__tnode, link);
      cgnet__list_remove(&n->link);
      w->count--;
      fired++;
      n->fn(n); /* may add or delete nodes, n included */
    }
  }
  return fired;
}

uint64_t cgnet__wheel_next_due(const cgnet__wheel *w) {
  if (w->count == 0) return UINT64_MAX;
  for (uint64_t i = 1; i <= CGNET__WHEEL_SLOTS; i++)
    if (!cgnet__list_empty(&w->slots[0][(w->now + i) & SLOT_MASK])) return w->now + i;
  for (int level = 1; level < CGNET__WHEEL_LEVELS; level++) {
    unsigned sh = level_shift(level);
    for (uint64_t i = 1; i <= CGNET__WHEEL_SLOTS; i++) {
      uint64_t block = (w->now >> sh) + i;
      if (!cgnet__list_empty(&w->slots[level][block & SLOT_MASK])) return block << sh;
    }
  }
  return w->now + 1; /* unreachable while count is right; wake soon rather than never */
}
