/* Server fixture, bounded joins, and the per-test watchdog. Test thread only. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "support.h"

/* Engines started through the fixture and not yet stopped: a test that fails half-way
 * (cmocka longjmps out of it) leaves them here and tu_teardown stops them. */
#define TU_MAX_LIVE 8
static cgnet_engine *live[TU_MAX_LIVE];

static void live_add(cgnet_engine *eng) {
  for (int i = 0; i < TU_MAX_LIVE; i++)
    if (!live[i]) {
      live[i] = eng;
      return;
    }
}

static void live_del(cgnet_engine *eng) {
  for (int i = 0; i < TU_MAX_LIVE; i++)
    if (live[i] == eng) live[i] = NULL;
}

int tu_run_bounded(void *(*fn)(void *), void *arg, int timeout_ms) {
  pthread_t th;
  if (pthread_create(&th, NULL, fn, arg) != 0) return -EAGAIN;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  int r = pthread_timedjoin_np(th, NULL, &ts);
  if (r == 0) return 0;
  pthread_detach(th);
  return -ETIMEDOUT;
}

int tu_server_start_at(tu_server *s, const cgnet_handler *h, const char *const *addrs,
                       size_t naddrs, const cgnet_options *o) {
  s->eng = NULL;
  s->port = -1;
  cgnet_engine *eng = NULL;
  int rc = cgnet_engine_start(h, addrs, naddrs, o, &eng);
  if (rc != 0) return rc;
  s->eng = eng;
  s->port = cgnet_engine_listen_port(eng, 0);
  live_add(eng);
  return 0;
}

int tu_server_start(tu_server *s, const cgnet_handler *h, const cgnet_options *o) {
  const char *addr[] = {"tcp://127.0.0.1:0"};
  return tu_server_start_at(s, h, addr, 1, o);
}

/* Heap-allocated so an abandoned (timed-out) thread never writes to a dead stack. */
typedef struct stop_job {
  cgnet_engine *eng;
  int do_stop;
  uint64_t stop_timeout_ms;
  int rc;
} stop_job;

static void *stop_thread(void *arg) {
  stop_job *j = arg;
  if (j->do_stop) cgnet_engine_stop(j->eng, j->stop_timeout_ms);
  j->rc = cgnet_engine_wait(j->eng);
  return NULL;
}

static int finish(tu_server *s, int do_stop, uint64_t stop_timeout_ms, int timeout_ms) {
  if (!s->eng) return 0;
  stop_job *j = calloc(1, sizeof(*j));
  if (!j) abort();
  j->eng = s->eng;
  j->do_stop = do_stop;
  j->stop_timeout_ms = stop_timeout_ms;
  live_del(s->eng);
  int r = tu_run_bounded(stop_thread, j, timeout_ms);
  if (r != 0) {
    fprintf(stderr, "engine %p did not stop within %d ms; abandoned\n", (void *)s->eng,
            timeout_ms);
    s->eng = NULL;
    return -ETIMEDOUT; /* j stays with the abandoned thread */
  }
  int rc = j->rc;
  free(j);
  cgnet_engine_free(s->eng);
  s->eng = NULL;
  return rc;
}

int tu_server_stop(tu_server *s, uint64_t stop_timeout_ms) {
  return finish(s, 1, stop_timeout_ms, TU_TIMEOUT_MS);
}

int tu_server_wait(tu_server *s, int timeout_ms) {
  return finish(s, 0, 0, timeout_ms);
}

/* ---- watchdog --------------------------------------------------------------------------
 */

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "\nwatchdog: a test ran past its overall deadline; aborting\n";
  ssize_t w = write(2, msg, sizeof(msg) - 1);
  (void)w;
  _exit(3);
}

int tu_setup(void **state) {
  (void)state;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  alarm((unsigned)(2 * TU_TIMEOUT_MS / 1000 + 10));
  tu_checks_reset();
  return 0;
}

int tu_teardown(void **state) {
  (void)state;
  for (int i = 0; i < TU_MAX_LIVE; i++) {
    if (!live[i]) continue;
    tu_server s = {.eng = live[i], .port = -1};
    fprintf(stderr, "teardown: stopping an engine the test left running\n");
    tu_server_stop(&s, 0);
  }
  alarm(0);
  return 0;
}

void tu_apply_test_filter(void) {
  static char pattern[256];
  const char *filter = getenv("CGNET_TEST_FILTER");
  if (!filter || !*filter) return;
  if (strpbrk(filter, "*?"))
    snprintf(pattern, sizeof pattern, "%s", filter);
  else
    snprintf(pattern, sizeof pattern, "*%s*", filter);
  cmocka_set_test_filter(pattern);
}

cgnet_action tu_echo_tracked(cgnet_conn *c) {
  atomic_fetch_add(&tu_tracker_of_conn(c)->traffic, 1);
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n > 0) TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), 0);
  return CGNET_NONE;
}
