/*
 * The user timer API on running engines: loop timers made from tasks
 * (cgnet_loop_execute, including from on_boot) and from on_open, conn timers, one-shot
 * and repeating, stop and restart, free from the timer's own callback, conn timers freed
 * with their conn, the CLOSE and SHUTDOWN actions, delays of UINT64_MAX that never
 * come, and accuracy (a timer fires at or after its delay, within a few ms, also after
 * the loop has been idle).
 *
 * Timer callbacks run on loop threads: they record into atomics; the test thread
 * asserts afterwards. ASan's leak check at exit catches timers that are never freed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/support.h"

/* A timer fires no earlier than its delay; the wheel counts whole milliseconds from the
 * loop's clock, read when it woke, so up to one tick of rounding is allowed. */
#define EARLY_US 1000
/* "A few ms" late: the median of a series must be; any one sample may be hit by the
 * scheduler, so it gets a looser bound. */
#define LATE_MAX_MS (50 * TU_SLOW)
#define LATE_MEDIAN_MS (3 * TU_SLOW)
#define MAX_FIRES 64

/* ---- shared state ------------------------------------------------------------------- */

typedef struct probe {
  atomic_int fires;
  atomic_int wrong_thread;
  _Atomic uint64_t start_us;
  _Atomic uint64_t fire_us[MAX_FIRES];
  int stop_after; /* stop (or free, with free_self) from the callback at this count */
  int free_self;
  uint64_t delay;          /* for start_acc */
  cgnet_action ret;        /* what the callback returns */
  cgnet_loop *loop;        /* the loop it must run on */
  cgnet_timer *timer;      /* loop thread only */
  atomic_int active_in_cb; /* cgnet_timer_active seen in the last callback */
  atomic_int active_after; /* ... after the stop in the callback */
} probe;

#define NPROBES 8
static probe P[NPROBES];
static tu_tracker *trk;
static atomic_int tasks_run;

/* A failed test leaves its tracker behind (its engine is stopped by tu_teardown). */
static void free_tracker(void) {
  tu_tracker_free(trk);
  trk = NULL;
}

static int group_teardown(void **state) {
  (void)state;
  free_tracker();
  return 0;
}

static void reset(void) {
  free_tracker();
  memset(P, 0, sizeof(P));
  atomic_store(&tasks_run, 0);
  trk = tu_tracker_new();
}

static void finish(tu_server *srv) {
  assert_rc(tu_server_stop(srv, 0), 0);
  assert_no_check_failures();
  tu_tracker_free(trk);
  trk = NULL;
}

static cgnet_action probe_fire(cgnet_timer *t, void *ud) {
  probe *p = ud;
  uint64_t now = tu_now_us();
  int k = atomic_fetch_add(&p->fires, 1);
  if (k < MAX_FIRES) atomic_store(&p->fire_us[k], now);
  if (p->loop && !cgnet_loop_is_current(p->loop)) atomic_fetch_add(&p->wrong_thread, 1);
  TU_CHECK(cgnet_loop_is_current(cgnet_timer_loop(t)));
  atomic_store(&p->active_in_cb, cgnet_timer_active(t));
  if (p->stop_after && k + 1 == p->stop_after) {
    if (p->free_self) {
      cgnet_timer_free(t);
      p->timer = NULL;
    } else {
      TU_CHECK_EQ(cgnet_timer_stop(t), 0);
      atomic_store(&p->active_after, cgnet_timer_active(t));
    }
  }
  return p->ret;
}

/* Start probe p's timer (made on first use) on `loop`. Loop thread. */
static void probe_start(probe *p, cgnet_loop *loop, uint64_t delay, uint64_t repeat) {
  if (!p->timer) {
    p->timer = cgnet_timer_new(loop, probe_fire, p);
    TU_CHECK(p->timer != NULL);
    if (!p->timer) return;
    TU_CHECK(cgnet_timer_loop(p->timer) == loop);
    TU_CHECK(cgnet_timer_conn(p->timer) == NULL);
    TU_CHECK(!cgnet_timer_active(p->timer));
  }
  p->loop = loop;
  atomic_store(&p->start_us, tu_now_us());
  TU_CHECK_EQ(cgnet_timer_start(p->timer, delay, repeat), 0);
  TU_CHECK(cgnet_timer_active(p->timer));
}

/* Run fn(loop, arg) on loop i and wait for it to have run. */
typedef struct job {
  void (*fn)(cgnet_loop *loop, void *arg);
  void *arg;
} job;

static void job_run(cgnet_loop *loop, void *ud) {
  job *j = ud;
  j->fn(loop, j->arg);
  free(j);
  atomic_fetch_add(&tasks_run, 1);
}

static void on_loop(cgnet_engine *eng, int i, void (*fn)(cgnet_loop *, void *), void *arg) {
  job *j = malloc(sizeof(*j));
  assert_non_null(j);
  j->fn = fn;
  j->arg = arg;
  int before = atomic_load(&tasks_run);
  assert_rc(cgnet_loop_execute(cgnet_engine_loop(eng, i), job_run, j), 0);
  assert_true(tu_wait_atomic_ge(&tasks_run, before + 1, TU_TIMEOUT_MS));
}

static uint64_t elapsed_us(probe *p, int k) {
  return atomic_load(&p->fire_us[k]) - atomic_load(&p->start_us);
}

/* The k-th fire (0-based) of a timer started with (delay, repeat) was on time. */
static void assert_on_time(probe *p, int k, uint64_t delay, uint64_t repeat,
                           uint64_t late_ms) {
  uint64_t due_us = (delay + (uint64_t)k * repeat) * 1000;
  uint64_t e = elapsed_us(p, k);
  if (e + EARLY_US < due_us)
    fail_msg("fire %d came %.3f ms early (due %.1f ms after start)", k,
             (double)(due_us - e) / 1000.0, (double)due_us / 1000.0);
  if (e > due_us + late_ms * 1000)
    fail_msg("fire %d came %.3f ms late (due %.1f ms after start)", k,
             (double)(e - due_us) / 1000.0, (double)due_us / 1000.0);
}

static cgnet_action track_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  return CGNET_NONE;
}

static cgnet_action track_close(cgnet_conn *c, int reason) {
  tu_tracker_close(c, reason);
  return CGNET_NONE;
}

static void track_shutdown(cgnet_engine *eng) {
  atomic_fetch_add(&tu_tracker_of_engine(eng)->shutdowns, 1);
}

static cgnet_handler base_handler(void) {
  cgnet_handler h = {.ud = trk,
                     .on_open = track_open,
                     .on_close = track_close,
                     .on_shutdown = track_shutdown};
  return h;
}

/* ---- loop timers from on_boot ---------------------------------------------------------
 */

static void boot_task(cgnet_loop *loop, void *ud) {
  (void)ud;
  probe_start(&P[0], loop, 30, 0);
  atomic_fetch_add(&tasks_run, 1);
}

static cgnet_action boot_execute(cgnet_engine *eng) {
  TU_CHECK_EQ(cgnet_loop_execute(cgnet_engine_loop(eng, 0), boot_task, NULL), 0);
  return CGNET_NONE;
}

/* A one-shot loop timer made by a task submitted from on_boot fires once; it is left
 * running-free for cgnet_engine_free to release. */
static void test_loop_timer_from_boot(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  h.on_boot = boot_execute;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  assert_true(tu_wait_atomic_ge(&P[0].fires, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(100);
  assert_int_equal(atomic_load(&P[0].fires), 1);
  assert_int_equal(atomic_load(&P[0].wrong_thread), 0);
  assert_int_equal(atomic_load(&P[0].active_in_cb),
                   0); /* a one-shot is done when it runs */
  assert_true(elapsed_us(&P[0], 0) + EARLY_US >= 30000);
  finish(&srv); /* the timer was never freed: the engine frees it (ASan checks) */
}

/* ---- loop timers from on_open ------------------------------------------------------- */

static cgnet_action open_loop_timer(cgnet_conn *c) {
  track_open(c);
  probe *p = &P[1];
  p->free_self = 1;
  p->stop_after = 1;
  probe_start(p, cgnet_conn_loop(c), 40, 0);
  return CGNET_NONE;
}

/* A loop timer made in on_open outlives the conn and frees itself when it fires. */
static void test_loop_timer_from_open(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  h.on_open = open_loop_timer;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_true(tu_wait_atomic_ge(&trk->opens, 1, TU_TIMEOUT_MS));
  close(fd); /* the loop timer is not the conn's: it still fires */
  assert_true(tu_wait_atomic_ge(&P[1].fires, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(100);
  assert_int_equal(atomic_load(&P[1].fires), 1);
  assert_true(elapsed_us(&P[1], 0) + EARLY_US >= 40000);
  assert_true(tu_wait_atomic_ge(&trk->closes, 1, TU_TIMEOUT_MS));
  finish(&srv);
}

/* ---- repeating, stop, restart ----------------------------------------------------------
 */

static void start_repeat(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  probe_start(p, loop, 20, 30);
}

static void restart_once(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  TU_CHECK(!cgnet_timer_active(p->timer));
  probe_start(p, loop, 10, 0);
}

static void free_probe(cgnet_loop *loop, void *arg) {
  (void)loop;
  probe *p = arg;
  cgnet_timer_free(p->timer);
  p->timer = NULL;
}

/* delay 20, repeat 30: fires on the schedule 20, 50, 80, ... ms; stopped from its own
 * callback after 5 fires, it stays stopped until restarted. */
static void test_repeating(void **state) {
  (void)state;
  reset();
  P[2].stop_after = 5;
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  on_loop(srv.eng, 0, start_repeat, &P[2]);
  assert_true(tu_wait_atomic_ge(&P[2].fires, 5, TU_TIMEOUT_MS));
  tu_sleep_ms(120);
  assert_int_equal(atomic_load(&P[2].fires), 5);
  assert_int_equal(atomic_load(&P[2].active_after), 0);
  assert_int_equal(atomic_load(&P[2].active_in_cb), 1); /* re-armed before its callback */
  for (int k = 0; k < 5; k++)
    assert_on_time(&P[2], k, 20, 30, LATE_MAX_MS);

  /* Restart as a one-shot. */
  P[2].stop_after = 0;
  on_loop(srv.eng, 0, restart_once, &P[2]);
  assert_true(tu_wait_atomic_ge(&P[2].fires, 6, TU_TIMEOUT_MS));
  tu_sleep_ms(80);
  assert_int_equal(atomic_load(&P[2].fires), 6);
  on_loop(srv.eng, 0, free_probe, &P[2]);
  finish(&srv);
}

/* While a repeating timer runs its callback it is already re-armed. */
static void start_repeat_fast(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  probe_start(p, loop, 5, 5);
}

static void test_repeating_active_in_callback(void **state) {
  (void)state;
  reset();
  P[3].stop_after = 3;
  P[3].free_self = 1;
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  on_loop(srv.eng, 0, start_repeat_fast, &P[3]);
  assert_true(tu_wait_atomic_ge(&P[3].fires, 3, TU_TIMEOUT_MS));
  tu_sleep_ms(60);
  assert_int_equal(atomic_load(&P[3].fires), 3); /* freed itself on the third */
  assert_int_equal(atomic_load(&P[3].active_in_cb), 1);
  finish(&srv);
}

/* ---- stop before firing, restart while running ------------------------------------------
 */

static void stop_and_restart(cgnet_loop *loop, void *arg) {
  (void)arg;
  /* P[4]: started then stopped at once: never fires. */
  probe_start(&P[4], loop, 30, 0);
  TU_CHECK_EQ(cgnet_timer_stop(P[4].timer), 0);
  TU_CHECK(!cgnet_timer_active(P[4].timer));
  TU_CHECK_EQ(cgnet_timer_stop(P[4].timer), 0); /* again: harmless */
  /* P[5]: started for 200 ms, restarted for 20 ms: fires once, at ~20 ms. */
  probe_start(&P[5], loop, 200, 0);
  probe_start(&P[5], loop, 20, 0);
  /* A timer never started can be stopped and freed. */
  cgnet_timer *idle = cgnet_timer_new(loop, probe_fire, &P[6]);
  TU_CHECK(idle != NULL);
  TU_CHECK_EQ(cgnet_timer_stop(idle), 0);
  cgnet_timer_free(idle);
  /* Argument checks. */
  TU_CHECK(cgnet_timer_new(loop, NULL, NULL) == NULL);
  TU_CHECK_EQ(cgnet_timer_start(NULL, 1, 0), CGNET_EINVAL);
  TU_CHECK_EQ(cgnet_timer_stop(NULL), CGNET_EINVAL);
  TU_CHECK(!cgnet_timer_active(NULL));
  cgnet_timer_free(NULL);
}

static void test_stop_and_restart(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  on_loop(srv.eng, 0, stop_and_restart, NULL);
  assert_true(tu_wait_atomic_ge(&P[5].fires, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(300);
  assert_int_equal(atomic_load(&P[4].fires), 0);
  assert_int_equal(atomic_load(&P[5].fires), 1);
  assert_int_equal(atomic_load(&P[6].fires), 0);
  assert_true(elapsed_us(&P[5], 0) < 150000);
  on_loop(srv.eng, 0, free_probe, &P[4]);
  on_loop(srv.eng, 0, free_probe, &P[5]);
  finish(&srv);
}

/* ---- free from callbacks ----------------------------------------------------------------
 */

static cgnet_action free_other(cgnet_timer *t, void *ud) {
  probe *victim = ud;
  atomic_fetch_add(&P[7].fires, 1);
  cgnet_timer_free(victim->timer); /* pending: it must never fire */
  victim->timer = NULL;
  cgnet_timer_free(t); /* and itself */
  return CGNET_NONE;
}

static void start_free_cases(cgnet_loop *loop, void *arg) {
  (void)arg;
  /* One-shot that frees itself. */
  P[0].stop_after = 1;
  P[0].free_self = 1;
  probe_start(&P[0], loop, 10, 0);
  /* Repeating that frees itself on its fourth fire. */
  P[1].stop_after = 4;
  P[1].free_self = 1;
  probe_start(&P[1], loop, 5, 5);
  /* A timer that frees a pending one and then itself. */
  probe_start(&P[2], loop, 60, 0);
  cgnet_timer *killer = cgnet_timer_new(loop, free_other, &P[2]);
  TU_CHECK(killer != NULL);
  if (killer) TU_CHECK_EQ(cgnet_timer_start(killer, 20, 10), 0);
}

static void test_free_from_callback(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  on_loop(srv.eng, 0, start_free_cases, NULL);
  assert_true(tu_wait_atomic_ge(&P[1].fires, 4, TU_TIMEOUT_MS));
  assert_true(tu_wait_atomic_ge(&P[7].fires, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(150);
  assert_int_equal(atomic_load(&P[0].fires), 1);
  assert_int_equal(atomic_load(&P[1].fires), 4);
  assert_int_equal(atomic_load(&P[2].fires), 0);
  assert_int_equal(atomic_load(&P[7].fires), 1);
  finish(&srv);
}

/* ---- conn timers
 * ------------------------------------------------------------------------- */

static cgnet_action conn_tick(cgnet_timer *t, void *ud) {
  probe *p = ud;
  cgnet_conn *c = cgnet_timer_conn(t);
  TU_CHECK(c != NULL);
  if (c) {
    TU_CHECK(cgnet_timer_loop(t) == cgnet_conn_loop(c));
    TU_CHECK(tu_slot_of(c) != NULL);
    TU_CHECK_EQ(atomic_load(&tu_slot_of(c)->closes), 0); /* never after on_close */
  }
  return probe_fire(t, p);
}

static cgnet_action conn_timers_open(cgnet_conn *c) {
  track_open(c);
  /* Repeating every 10 ms until the conn goes. */
  cgnet_timer *a = cgnet_conn_timer_new(c, conn_tick, &P[0]);
  TU_CHECK(a != NULL);
  if (a) TU_CHECK_EQ(cgnet_timer_start(a, 10, 10), 0);
  /* Pending far in the future when the conn closes: freed with it. */
  cgnet_timer *b = cgnet_conn_timer_new(c, conn_tick, &P[1]);
  TU_CHECK(b != NULL);
  if (b) TU_CHECK_EQ(cgnet_timer_start(b, 60000, 0), 0);
  /* Freed early by the user (allowed), before the conn closes. */
  cgnet_timer *d = cgnet_conn_timer_new(c, conn_tick, &P[2]);
  TU_CHECK(d != NULL);
  if (d) TU_CHECK_EQ(cgnet_timer_start(d, 5, 0), 0);
  cgnet_timer_free(d);
  /* Frees itself from its callback on its second fire. */
  P[3].stop_after = 2;
  P[3].free_self = 1;
  cgnet_timer *e = cgnet_conn_timer_new(c, conn_tick, &P[3]);
  TU_CHECK(e != NULL);
  if (e) TU_CHECK_EQ(cgnet_timer_start(e, 5, 5), 0);
  return CGNET_NONE;
}

static cgnet_action conn_timers_close(cgnet_conn *c, int reason) {
  TU_CHECK(cgnet_conn_timer_new(c, conn_tick, &P[4]) == NULL); /* too late */
  atomic_store(&P[5].fires, atomic_load(&P[0].fires));         /* fires seen at close */
  return track_close(c, reason);
}

static void test_conn_timers_freed_with_conn(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  h.on_open = conn_timers_open;
  h.on_close = conn_timers_close;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_true(tu_wait_atomic_ge(&P[0].fires, 5, TU_TIMEOUT_MS));
  close(fd);
  assert_true(tu_wait_atomic_ge(&trk->closes, 1, TU_TIMEOUT_MS));
  int at_close = atomic_load(&P[5].fires);
  tu_sleep_ms(100);
  assert_int_equal(atomic_load(&P[0].fires), at_close); /* gone with the conn */
  assert_int_equal(atomic_load(&P[1].fires), 0);
  assert_int_equal(atomic_load(&P[2].fires), 0);
  assert_int_equal(atomic_load(&P[3].fires), 2);
  assert_int_equal(atomic_load(&P[4].fires), 0);
  finish(&srv);
}

/* CLOSE from a conn timer closes the conn (ELOCALCLOSE); the client sees EOF. */
static cgnet_action close_open(cgnet_conn *c) {
  track_open(c);
  P[0].ret = CGNET_CLOSE;
  cgnet_timer *t = cgnet_conn_timer_new(c, conn_tick, &P[0]);
  TU_CHECK(t != NULL);
  atomic_store(&P[0].start_us, tu_now_us());
  if (t) TU_CHECK_EQ(cgnet_timer_start(t, 30, 10), 0);
  return CGNET_NONE;
}

static void test_conn_timer_close_action(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  h.on_open = close_open;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  int fd = tu_connect4(srv.port);
  assert_true(fd >= 0);
  assert_rc(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  assert_true(tu_wait_atomic_ge(&trk->closes, 1, TU_TIMEOUT_MS));
  int r = atomic_load(&trk->slots[0].reason);
  if (r != CGNET_ELOCALCLOSE) fail_msg("closed with %s", cgnet_err_name(r));
  tu_sleep_ms(50);
  assert_int_equal(atomic_load(&P[0].fires), 1); /* repeating, but gone with its conn */
  assert_true(elapsed_us(&P[0], 0) + EARLY_US >= 30000);
  close(fd);
  finish(&srv);
}

/* SHUTDOWN from a loop timer stops the engine. */
static void start_shutdown_timer(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  p->ret = CGNET_SHUTDOWN;
  probe_start(p, loop, 20, 0);
}

static void test_loop_timer_shutdown_action(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  on_loop(srv.eng, 0, start_shutdown_timer, &P[0]);
  assert_rc(tu_server_wait(&srv, TU_TIMEOUT_MS), 0);
  assert_int_equal(atomic_load(&P[0].fires), 1);
  assert_int_equal(atomic_load(&trk->shutdowns), 1);
  assert_no_check_failures();
  tu_tracker_free(trk);
  trk = NULL;
}

/* Timers on another loop run on that loop's thread. */
static void start_on_loop1(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  TU_CHECK_EQ(cgnet_loop_index(loop), 1);
  probe_start(p, loop, 10, 10);
  p->stop_after = 3;
  p->free_self = 1;
}

/* A fresh run with a server on two loops. */
static void start_two_loops(tu_server *srv) {
  reset();
  cgnet_handler h = base_handler();
  cgnet_options o = {.num_loops = 2};
  assert_rc(tu_server_start(srv, &h, &o), 0);
}

static void test_timer_on_other_loop(void **state) {
  (void)state;
  tu_server srv;
  start_two_loops(&srv);
  on_loop(srv.eng, 1, start_on_loop1, &P[0]);
  assert_true(tu_wait_atomic_ge(&P[0].fires, 3, TU_TIMEOUT_MS));
  tu_sleep_ms(50);
  assert_int_equal(atomic_load(&P[0].fires), 3);
  assert_int_equal(atomic_load(&P[0].wrong_thread), 0);
  finish(&srv);
}

/* ---- start and stop off the timer's loop --------------------------------------------- */

static void make_on_loop1(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  p->timer = cgnet_timer_new(loop, probe_fire, p);
  TU_CHECK(p->timer != NULL);
  p->loop = loop;
}

static atomic_int other_loop_rc_start, other_loop_rc_stop;

static void start_from_loop0(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  TU_CHECK(cgnet_timer_loop(p->timer) != loop);
  atomic_store(&other_loop_rc_start, cgnet_timer_start(p->timer, 1, 0));
  atomic_store(&other_loop_rc_stop, cgnet_timer_stop(p->timer));
}

static void start_on_own_loop(cgnet_loop *loop, void *arg) {
  (void)loop;
  probe *p = arg;
  TU_CHECK_EQ(cgnet_timer_start(p->timer, 10, 0), 0);
}

/* The wheel belongs to the timer's loop: start and stop from the test thread and from
 * another loop's thread answer CGNET_EWRONGTHREAD and leave the timer as it was (it never
 * fires); on its own loop it starts and fires once. */
static void test_wrong_thread(void **state) {
  (void)state;
  tu_server srv;
  start_two_loops(&srv);
  on_loop(srv.eng, 1, make_on_loop1, &P[0]);
  assert_non_null(P[0].timer);
  assert_rc(cgnet_timer_start(P[0].timer, 1, 0), CGNET_EWRONGTHREAD);
  assert_rc(cgnet_timer_stop(P[0].timer), CGNET_EWRONGTHREAD);
  on_loop(srv.eng, 0, start_from_loop0, &P[0]);
  assert_rc(atomic_load(&other_loop_rc_start), CGNET_EWRONGTHREAD);
  assert_rc(atomic_load(&other_loop_rc_stop), CGNET_EWRONGTHREAD);
  tu_sleep_ms(50);
  assert_int_equal(atomic_load(&P[0].fires), 0);
  on_loop(srv.eng, 1, start_on_own_loop, &P[0]);
  assert_true(tu_wait_atomic_ge(&P[0].fires, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&P[0].wrong_thread), 0);
  finish(&srv);
}

/* ---- accuracy
 * ------------------------------------------------------------------------------ */

static const uint64_t acc_delays[] = {1, 5, 20, 64, 100, 250};
#define NACC (sizeof(acc_delays) / sizeof(acc_delays[0]))

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Check NACC samples: none early, none later than LATE_MAX_MS, median late by at most
 * LATE_MEDIAN_MS. */
static void assert_samples(const char *what, const uint64_t *late_us,
                           const uint64_t *early_us) {
  uint64_t sorted[NACC];
  for (size_t i = 0; i < NACC; i++) {
    print_message("%s: delay %3llu ms: %s %.3f ms\n", what,
                  (unsigned long long)acc_delays[i], early_us[i] ? "EARLY by" : "late by",
                  (double)(early_us[i] ? early_us[i] : late_us[i]) / 1000.0);
    sorted[i] = late_us[i];
  }
  for (size_t i = 0; i < NACC; i++) {
    if (early_us[i] > EARLY_US)
      fail_msg("%s: a %llu ms timer fired %.3f ms early", what,
               (unsigned long long)acc_delays[i], (double)early_us[i] / 1000.0);
    if (late_us[i] > (uint64_t)LATE_MAX_MS * 1000)
      fail_msg("%s: a %llu ms timer fired %.3f ms late", what,
               (unsigned long long)acc_delays[i], (double)late_us[i] / 1000.0);
  }
  qsort(sorted, NACC, sizeof(sorted[0]), cmp_u64);
  if (sorted[NACC / 2] > (uint64_t)LATE_MEDIAN_MS * 1000)
    fail_msg("%s: median lateness %.3f ms", what, (double)sorted[NACC / 2] / 1000.0);
}

static void split(probe *p, uint64_t delay, uint64_t *late, uint64_t *early) {
  uint64_t e = elapsed_us(p, 0), due = delay * 1000;
  *late = e > due ? e - due : 0;
  *early = e < due ? due - e : 0;
}

static void start_acc(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  probe_start(p, loop, p->delay, 0);
}

/* Loop timers started by a task, each after the loop has been idle for 150 ms. */
static void test_accuracy_task(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  uint64_t late[NACC], early[NACC];
  for (size_t i = 0; i < NACC; i++) {
    probe *p = &P[i];
    p->delay = acc_delays[i];
    tu_sleep_ms(150);
    on_loop(srv.eng, 0, start_acc, p);
    assert_true(tu_wait_atomic_ge(&p->fires, 1, TU_TIMEOUT_MS));
    split(p, acc_delays[i], &late[i], &early[i]);
  }
  tu_sleep_ms(20);
  for (size_t i = 0; i < NACC; i++)
    assert_int_equal(atomic_load(&P[i].fires), 1);
  assert_samples("loop timer from a task", late, early);
  for (size_t i = 0; i < NACC; i++)
    on_loop(srv.eng, 0, free_probe, &P[i]);
  finish(&srv);
}

static atomic_int acc_index;

static cgnet_action acc_open(cgnet_conn *c) {
  track_open(c);
  int i = atomic_load(&acc_index);
  probe *p = &P[i];
  cgnet_timer *t = cgnet_conn_timer_new(c, conn_tick, p);
  TU_CHECK(t != NULL);
  atomic_store(&p->start_us, tu_now_us());
  if (t) TU_CHECK_EQ(cgnet_timer_start(t, acc_delays[i], 0), 0);
  return CGNET_NONE;
}

/* Conn timers started in on_open, each connect after the loop has been idle for 150 ms. */
static void test_accuracy_open(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  h.on_open = acc_open;
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  uint64_t late[NACC], early[NACC];
  for (size_t i = 0; i < NACC; i++) {
    atomic_store(&acc_index, (int)i);
    tu_sleep_ms(150);
    int fd = tu_connect4(srv.port);
    assert_true(fd >= 0);
    assert_true(tu_wait_atomic_ge(&P[i].fires, 1, TU_TIMEOUT_MS));
    split(&P[i], acc_delays[i], &late[i], &early[i]);
    close(fd);
    assert_true(tu_wait_atomic_ge(&trk->closes, (int)i + 1, TU_TIMEOUT_MS));
  }
  assert_samples("conn timer from on_open", late, early);
  finish(&srv);
}

/* A repeating timer keeps its schedule: fire k is due at delay + k * repeat. */
static void start_schedule(cgnet_loop *loop, void *arg) {
  probe *p = arg;
  p->stop_after = 20;
  probe_start(p, loop, 7, 13);
}

static void test_accuracy_repeating(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  tu_sleep_ms(150);
  on_loop(srv.eng, 0, start_schedule, &P[0]);
  assert_true(tu_wait_atomic_ge(&P[0].fires, 20, TU_TIMEOUT_MS));
  tu_sleep_ms(40);
  assert_int_equal(atomic_load(&P[0].fires), 20);
  uint64_t late[20];
  for (int k = 0; k < 20; k++) {
    assert_on_time(&P[0], k, 7, 13, LATE_MAX_MS);
    uint64_t due = (7 + (uint64_t)k * 13) * 1000, e = elapsed_us(&P[0], k);
    late[k] = e > due ? e - due : 0;
  }
  qsort(late, 20, sizeof(late[0]), cmp_u64);
  print_message(
      "repeating 7+13k ms: median lateness %.3f ms, worst %.3f ms over 20 fires\n",
      (double)late[10] / 1000.0, (double)late[19] / 1000.0);
  if (late[10] > (uint64_t)LATE_MEDIAN_MS * 1000)
    fail_msg("median lateness %.3f ms", (double)late[10] / 1000.0);
  on_loop(srv.eng, 0, free_probe, &P[0]);
  finish(&srv);
}

/* ---- far-future delays ----------------------------------------------------------------
 */

/* A delay or repeat of UINT64_MAX (or any huge value) means "never": the loop's
 * now + delay saturates instead of wrapping around to a time already past. */
static atomic_int never_active[NPROBES];

static void start_never(cgnet_loop *loop, void *arg) {
  (void)arg;
  probe_start(&P[0], loop, UINT64_MAX, 0);
  probe_start(&P[1], loop, UINT64_MAX - 1, UINT64_MAX);
  probe_start(&P[2], loop, 10, UINT64_MAX); /* fires once; the repeat never comes */
  probe_start(&P[3], loop, UINT64_MAX / 2 + 12345, 0);
}

static void record_never_active(cgnet_loop *loop, void *arg) {
  (void)loop;
  (void)arg;
  for (int i = 0; i < 4; i++)
    atomic_store(&never_active[i], cgnet_timer_active(P[i].timer));
}

static void test_never_delays(void **state) {
  (void)state;
  reset();
  cgnet_handler h = base_handler();
  tu_server srv;
  assert_rc(tu_server_start(&srv, &h, NULL), 0);
  on_loop(srv.eng, 0, start_never, NULL);
  assert_true(tu_wait_atomic_ge(&P[2].fires, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(200);
  on_loop(srv.eng, 0, record_never_active, NULL);
  for (int i = 0; i < 4; i++) {
    int want = i == 2 ? 1 : 0;
    if (atomic_load(&P[i].fires) != want)
      fail_msg("timer %d fired %d times, want %d", i, atomic_load(&P[i].fires), want);
    assert_int_equal(atomic_load(&never_active[i]), 1); /* armed for the far future */
  }
  finish(&srv); /* the engine frees the loop timers left */
}

/* ---- registry
 * -------------------------------------------------------------------------------- */

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      T(test_loop_timer_from_boot),
      T(test_loop_timer_from_open),
      T(test_repeating),
      T(test_repeating_active_in_callback),
      T(test_stop_and_restart),
      T(test_free_from_callback),
      T(test_conn_timers_freed_with_conn),
      T(test_conn_timer_close_action),
      T(test_loop_timer_shutdown_action),
      T(test_timer_on_other_loop),
      T(test_wrong_thread),
      T(test_never_delays),
      T(test_accuracy_task),
      T(test_accuracy_open),
      T(test_accuracy_repeating),
  };
  return cmocka_run_group_tests_name("test_timer", tests, NULL, group_teardown);
}
