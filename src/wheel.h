/*
 * A hierarchical timing wheel with 1 ms ticks: 4 levels of 64 slots cover 2^24 ms
 * (about 4.6 hours) directly; later deadlines wait in the top level and are re-filed as
 * time approaches them. Start and cancel are O(1) (intrusive list nodes); advancing costs
 * O(1) per elapsed tick plus O(1) per timer moved or expired.
 *
 * One wheel per loop, used only from that loop's thread.
 */
#ifndef CGNET_WHEEL_H
#define CGNET_WHEEL_H

#include <stdbool.h>
#include <stdint.h>

#include "internal/list.h"

#define CGNET__WHEEL_BITS 6
#define CGNET__WHEEL_SLOTS (1u << CGNET__WHEEL_BITS)
#define CGNET__WHEEL_LEVELS 4

typedef struct cgnet__tnode cgnet__tnode;
typedef void (*cgnet__tnode_fn)(cgnet__tnode *n);

struct cgnet__tnode {
  cgnet__list link; /* in a wheel slot, or the expired list, or self-linked */
  uint64_t expires; /* absolute time in ms */
  cgnet__tnode_fn fn;
};

typedef struct cgnet__wheel {
  uint64_t now; /* the last tick processed */
  cgnet__list slots[CGNET__WHEEL_LEVELS][CGNET__WHEEL_SLOTS];
  size_t count; /* timers in the wheel */
} cgnet__wheel;

void cgnet__wheel_init(cgnet__wheel *w, uint64_t now_ms);

static inline void cgnet__tnode_init(cgnet__tnode *n, cgnet__tnode_fn fn) {
  cgnet__list_init(&n->link);
  n->expires = 0;
  n->fn = fn;
}
static inline bool cgnet__tnode_active(const cgnet__tnode *n) {
  return cgnet__list_linked(&n->link);
}

/* Arm n to fire at expires_ms (a time at or before the wheel's now fires on the next
 * advance). Re-arming an armed node moves it. Compute expires_ms with cgnet__deadline
 * (internal/util.h): a plain now + delay wraps around for a huge delay and fires at
 * once. UINT64_MAX (or any time too far to reach) stays armed and never fires. */
void cgnet__wheel_add(cgnet__wheel *w, cgnet__tnode *n, uint64_t expires_ms);
/* Disarm n if armed. */
void cgnet__wheel_del(cgnet__wheel *w, cgnet__tnode *n);
/* Advance to now_ms and call fn for every node whose time has come, earliest tick first.
 * A callback may add or delete any node, itself included. Returns how many fired. */
size_t cgnet__wheel_advance(cgnet__wheel *w, uint64_t now_ms);
/* The earliest time at which advance() may have work: exact when that timer is within 64
 * ms, otherwise the time its slot is due to be re-filed (never later than the real
 * deadline). UINT64_MAX when the wheel is empty. */
uint64_t cgnet__wheel_next_due(const cgnet__wheel *w);

#endif
