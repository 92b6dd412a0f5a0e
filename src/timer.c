/*
 * User timers on a loop's wheel: loop timers (freed by the user) and conn timers (freed
 * with their conn). Loop thread only.
 */
#include <stdlib.h>

#include "core.h"

static void free_timer(cgnet_timer *t) {
  cgnet__wheel_del(&t->loop->wheel, &t->node);
  if (cgnet__list_linked(&t->conn_link)) cgnet__list_remove(&t->conn_link);
  free(t);
}

static void on_fire(cgnet__tnode *n) {
  cgnet_timer *t = cgnet__container_of(n, cgnet_timer, node);
  cgnet_loop *loop = t->loop;
  /* Re-arm first, so the callback can stop or restart it. */
  if (t->repeat_ms)
    cgnet__wheel_add(&loop->wheel, &t->node,
                     cgnet__deadline(loop->wheel.now, t->repeat_ms));
  t->firing = true;
  cgnet_conn *c = t->conn;
  cgnet_action a;
  if (c) {
    c->in_callback++;
    a = t->fn(t, t->ud);
    cgnet__conn_after_callback(c, a);
  } else {
    a = t->fn(t, t->ud);
    if (a == CGNET_SHUTDOWN)
      cgnet__engine_request_stop(loop->eng, CGNET__ACTION_STOP_TIMEOUT_MS, 0);
  }
  t->firing = false;
  if (t->free_after_fire) free_timer(t);
}

static cgnet_timer *new_timer(cgnet_loop *loop, cgnet_conn *c, cgnet_timer_fn fn,
                              void *ud) {
  if (!loop || !fn) return NULL;
  cgnet_timer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  cgnet__tnode_init(&t->node, on_fire);
  cgnet__list_init(&t->conn_link);
  t->loop = loop;
  t->conn = c;
  t->fn = fn;
  t->ud = ud;
  cgnet__list_insert_tail(c ? &c->timers : &loop->timers, &t->conn_link);
  return t;
}

cgnet_timer *cgnet_timer_new(cgnet_loop *loop, cgnet_timer_fn fn, void *ud) {
  return new_timer(loop, NULL, fn, ud);
}

cgnet_timer *cgnet_conn_timer_new(cgnet_conn *c, cgnet_timer_fn fn, void *ud) {
  if (!c || cgnet__conn_closed(c) || c->kind == CGNET__SERVER_DGRAM) return NULL;
  return new_timer(c->loop, c, fn, ud);
}

/* The wheel is the loop thread's alone: start and stop from elsewhere are refused. */
static int timer_call_ok(const cgnet_timer *t) {
  if (!t) return CGNET_EINVAL;
  return cgnet__unlikely(cgnet__tls_loop != t->loop) ? CGNET_EWRONGTHREAD : 0;
}

/* The delay counts from the call, not from the start of the loop's turn: a timer
 * started late in a long turn (a slow callback before it) would otherwise fire that
 * much early, and a repeating one keeps that offset in every later fire. */
int cgnet_timer_start(cgnet_timer *t, uint64_t delay_ms, uint64_t repeat_ms) {
  int err = timer_call_ok(t);
  if (err) return err;
  t->repeat_ms = repeat_ms;
  uint64_t now = cgnet__now_ms();
  if (now < t->loop->wheel.now) now = t->loop->wheel.now;
  cgnet__wheel_add(&t->loop->wheel, &t->node, cgnet__deadline(now, delay_ms));
  return 0;
}

int cgnet_timer_stop(cgnet_timer *t) {
  int err = timer_call_ok(t);
  if (err) return err;
  cgnet__wheel_del(&t->loop->wheel, &t->node);
  return 0;
}

int cgnet_timer_active(const cgnet_timer *t) {
  return t && cgnet__tnode_active(&t->node);
}

void cgnet_timer_free(cgnet_timer *t) {
  if (!t) return;
  if (t->firing) {
    cgnet__wheel_del(&t->loop->wheel, &t->node);
    t->free_after_fire = true;
    return;
  }
  free_timer(t);
}

cgnet_conn *cgnet_timer_conn(const cgnet_timer *t) {
  return t->conn;
}
cgnet_loop *cgnet_timer_loop(const cgnet_timer *t) {
  return t->loop;
}

static void free_all(cgnet__list *timers) {
  while (!cgnet__list_empty(timers)) {
    cgnet_timer *t = cgnet__container_of(cgnet__list_first(timers), cgnet_timer, conn_link);
    cgnet__list_remove(&t->conn_link);
    t->conn = NULL;
    cgnet_timer_free(t);
  }
}

void cgnet__conn_free_timers(cgnet_conn *c) {
  free_all(&c->timers);
}
void cgnet__loop_free_timers(cgnet_loop *loop) {
  free_all(&loop->timers);
}
