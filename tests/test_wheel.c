/* Tests for src/wheel.c: the hierarchical timing wheel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal/util.h"
#include "wheel.h"

typedef struct probe {
  cgnet__tnode node;
  cgnet__wheel *w;
  uint64_t want;     /* when it should fire */
  uint64_t fired_at; /* wheel time when it fired, 0 if not */
  int fired;
  uint64_t repeat; /* > 0: re-arm from the callback */
} probe;

static void on_fire(cgnet__tnode *n) {
  probe *p = cgnet__container_of(n, probe, node);
  p->fired++;
  p->fired_at = p->w->now;
  if (p->repeat) {
    p->want = p->w->now + p->repeat;
    cgnet__wheel_add(p->w, &p->node, p->want);
  }
}

static void arm(cgnet__wheel *w, probe *p, uint64_t at) {
  memset(p, 0, sizeof *p);
  cgnet__tnode_init(&p->node, on_fire);
  p->w = w;
  p->want = at;
  cgnet__wheel_add(w, &p->node, at);
}

static void fires_exactly_on_its_tick(void **state) {
  (void)state;
  static const uint64_t delays[] = {
      1,    2,      63,     64,     65,      127,      128,      4095,     4096,
      4097, 262143, 262144, 262145, 1000000, 16777215, 16777216, 16777217, 40000000};
  enum { N = sizeof delays / sizeof delays[0] };
  cgnet__wheel w;
  uint64_t start = 1000003; /* not aligned to any level */
  cgnet__wheel_init(&w, start);
  probe p[N];
  for (int i = 0; i < N; i++)
    arm(&w, &p[i], start + delays[i]);
  assert_int_equal(w.count, N);
  /* Advance in uneven steps and check each fired on its tick, not before. */
  uint64_t now = start;
  while (w.count) {
    now += 1 + (now % 7919);
    cgnet__wheel_advance(&w, now);
    for (int i = 0; i < N; i++) {
      if (p[i].want <= now) {
        assert_int_equal(p[i].fired, 1);
        assert_int_equal(p[i].fired_at, p[i].want);
      } else {
        assert_int_equal(p[i].fired, 0);
      }
    }
  }
}

static void past_deadline_fires_on_next_tick(void **state) {
  (void)state;
  cgnet__wheel w;
  cgnet__wheel_init(&w, 500);
  probe p;
  arm(&w, &p, 10); /* already past */
  assert_int_equal(p.node.expires, 501);
  assert_int_equal(cgnet__wheel_advance(&w, 500), 0);
  assert_int_equal(cgnet__wheel_advance(&w, 501), 1);
  assert_int_equal(p.fired_at, 501);
}

static void cancel_and_rearm(void **state) {
  (void)state;
  cgnet__wheel w;
  cgnet__wheel_init(&w, 0);
  probe a, b;
  arm(&w, &a, 100);
  arm(&w, &b, 5000);
  assert_true(cgnet__tnode_active(&a.node));
  cgnet__wheel_del(&w, &a.node);
  assert_false(cgnet__tnode_active(&a.node));
  cgnet__wheel_del(&w, &a.node); /* twice is harmless */
  assert_int_equal(w.count, 1);
  cgnet__wheel_add(&w, &b.node, 200); /* move an armed timer earlier */
  b.want = 200;
  assert_int_equal(w.count, 1);
  cgnet__wheel_advance(&w, 10000);
  assert_int_equal(a.fired, 0);
  assert_int_equal(b.fired, 1);
  assert_int_equal(b.fired_at, 200);
}

static void repeating_from_callback(void **state) {
  (void)state;
  cgnet__wheel w;
  cgnet__wheel_init(&w, 7);
  probe p;
  arm(&w, &p, 17);
  p.repeat = 10;
  cgnet__wheel_advance(&w, 7 + 10 * 25);
  assert_int_equal(p.fired, 25);
  assert_int_equal(p.fired_at, 7 + 10 * 25);
  assert_true(cgnet__tnode_active(&p.node));
}

static void next_due_is_never_late(void **state) {
  (void)state;
  cgnet__wheel w;
  cgnet__wheel_init(&w, 12345);
  assert_true(cgnet__wheel_next_due(&w) == UINT64_MAX);
  probe p;
  arm(&w, &p, 12345 + 30);
  assert_int_equal(cgnet__wheel_next_due(&w), 12345 + 30); /* exact within 64 ticks */
  cgnet__wheel_del(&w, &p.node);
  arm(&w, &p, 12345 + 100000);
  /* Sleeping until next_due each time reaches the deadline without overshooting. */
  int wakeups = 0;
  while (!p.fired) {
    uint64_t due = cgnet__wheel_next_due(&w);
    assert_true(due > w.now);
    assert_true(due <= p.want);
    cgnet__wheel_advance(&w, due);
    wakeups++;
    assert_true(wakeups < 200);
  }
  assert_int_equal(p.fired_at, p.want);
}

/* Deadlines past the wheel's reach (2^24 ticks), up to UINT64_MAX ("never"), wait in the
 * top level and are re-filed as time passes; they fire on their tick or, if unreachable,
 * never, and next_due never asks for a wake-up later than a live deadline. */
static void far_expiry_waits_its_turn(void **state) {
  (void)state;
  const uint64_t start = 5000017, reach = (uint64_t)1 << 24;
  cgnet__wheel w;
  cgnet__wheel_init(&w, start);
  probe never, far, beyond, edge;
  arm(&w, &never, UINT64_MAX);
  arm(&w, &far, start + ((uint64_t)1 << 40));
  arm(&w, &beyond, start + 3 * reach + 12345);
  arm(&w, &edge, start + reach);
  assert_true(never.node.expires == UINT64_MAX); /* kept as given, not wrapped */
  int wakeups = 0;
  while (!beyond.fired) {
    uint64_t due = cgnet__wheel_next_due(&w);
    assert_true(due > w.now);
    if (!edge.fired) assert_true(due <= edge.want);
    assert_true(due <= beyond.want);
    cgnet__wheel_advance(&w, due);
    assert_true(++wakeups < 1000);
  }
  assert_int_equal(edge.fired, 1);
  assert_int_equal(edge.fired_at, edge.want);
  assert_int_equal(beyond.fired, 1);
  assert_int_equal(beyond.fired_at, beyond.want);
  /* Another full turn of the top level: the far ones stay armed and silent. */
  cgnet__wheel_advance(&w, w.now + reach + 777);
  assert_int_equal(never.fired, 0);
  assert_int_equal(far.fired, 0);
  assert_true(cgnet__tnode_active(&never.node));
  assert_true(cgnet__tnode_active(&far.node));
  assert_int_equal(w.count, 2);
  assert_true(cgnet__wheel_next_due(&w) > w.now);
}

/* The deadline helper every "now + delay" goes through saturates instead of wrapping. */
static void deadline_saturates(void **state) {
  (void)state;
  assert_true(cgnet__deadline(100, 5) == 105);
  assert_true(cgnet__deadline(100, 0) == 100);
  assert_true(cgnet__deadline(100, UINT64_MAX) == UINT64_MAX);
  assert_true(cgnet__deadline(100, UINT64_MAX - 100) == UINT64_MAX);
  assert_true(cgnet__deadline(100, UINT64_MAX - 101) == UINT64_MAX - 1);
  assert_true(cgnet__deadline(UINT64_MAX, 1) == UINT64_MAX);
}

/* Many random timers, random cancels, random steps: every live timer fires on its tick. */
static void random_property(void **state) {
  (void)state;
  enum { N = 3000 };
  probe *p = calloc(N, sizeof *p);
  assert_non_null(p);
  cgnet__wheel w;
  uint64_t now = 987654321;
  cgnet__wheel_init(&w, now);
  srand(42);
  for (int i = 0; i < N; i++) {
    uint64_t d = (uint64_t)rand() % (rand() % 4 == 0 ? 20000000u : 5000u);
    arm(&w, &p[i], now + 1 + d);
  }
  int cancelled[N] = {0};
  for (int i = 0; i < N; i += 7) {
    cgnet__wheel_del(&w, &p[i].node);
    cancelled[i] = 1;
  }
  while (w.count) {
    uint64_t due = cgnet__wheel_next_due(&w);
    uint64_t step = (uint64_t)(rand() % 3000);
    now = (rand() % 2) ? due : now + 1 + step;
    cgnet__wheel_advance(&w, now);
  }
  for (int i = 0; i < N; i++) {
    if (cancelled[i]) {
      assert_int_equal(p[i].fired, 0);
    } else {
      assert_int_equal(p[i].fired, 1);
      assert_int_equal(p[i].fired_at, p[i].want);
    }
  }
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fires_exactly_on_its_tick),
      cmocka_unit_test(past_deadline_fires_on_next_tick),
      cmocka_unit_test(cancel_and_rearm),
      cmocka_unit_test(repeating_from_callback),
      cmocka_unit_test(next_due_is_never_late),
      cmocka_unit_test(far_expiry_waits_its_turn),
      cmocka_unit_test(deadline_saturates),
      cmocka_unit_test(random_property),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
