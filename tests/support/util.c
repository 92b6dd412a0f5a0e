/* Time, waiting, process state, thread-safe checks and the connection tracker. */
#include <dirent.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

/* ---- time ---------------------------------------------------------------------------- */

uint64_t tu_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t tu_now_ms(void) {
  return tu_now_us() / 1000u;
}

void tu_sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

int tu_wait_until(tu_pred_fn pred, void *arg, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
  while (tu_now_ms() < deadline) {
    if (pred(arg)) return 1;
    tu_sleep_ms(2);
  }
  return pred(arg) ? 1 : 0;
}

typedef struct {
  atomic_int *v;
  int want;
} atomic_want;

static int atomic_eq(void *arg) {
  atomic_want *w = arg;
  return atomic_load(w->v) == w->want;
}

static int atomic_ge(void *arg) {
  atomic_want *w = arg;
  return atomic_load(w->v) >= w->want;
}

int tu_wait_atomic_eq(atomic_int *v, int want, int timeout_ms) {
  atomic_want w = {v, want};
  return tu_wait_until(atomic_eq, &w, timeout_ms);
}

int tu_wait_atomic_ge(atomic_int *v, int want, int timeout_ms) {
  atomic_want w = {v, want};
  return tu_wait_until(atomic_ge, &w, timeout_ms);
}

typedef struct {
  cgnet_engine *eng;
  size_t want;
} conns_want;

static int conns_eq(void *arg) {
  conns_want *w = arg;
  return cgnet_engine_count_connections(w->eng) == w->want;
}

int tu_wait_conns(cgnet_engine *eng, size_t want, int timeout_ms) {
  conns_want w = {eng, want};
  return tu_wait_until(conns_eq, &w, timeout_ms);
}

/* ---- process state --------------------------------------------------------------------
 */

int tu_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own descriptor */
}

long tu_raise_nofile(long want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
  if ((long)rl.rlim_cur < want) {
    rlim_t target = (rlim_t)want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
    rl.rlim_cur = target;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
    (void)getrlimit(RLIMIT_NOFILE, &rl);
  }
  return (long)rl.rlim_cur;
}

int tu_have_ipv6_loopback(void) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 s6;
  memset(&s6, 0, sizeof(s6));
  s6.sin6_family = AF_INET6;
  s6.sin6_addr = in6addr_loopback;
  int ok = bind(fd, (struct sockaddr *)&s6, sizeof(s6)) == 0;
  close(fd);
  return ok;
}

/* ---- checks ---------------------------------------------------------------------------
 */

#define TU_MAX_MSGS 16
static pthread_mutex_t check_mu = PTHREAD_MUTEX_INITIALIZER;
static int check_count;
static char check_msgs[TU_MAX_MSGS][256];

static void check_record(const char *msg) {
  pthread_mutex_lock(&check_mu);
  if (check_count < TU_MAX_MSGS) snprintf(check_msgs[check_count], 256, "%s", msg);
  check_count++;
  pthread_mutex_unlock(&check_mu);
}

void tu_check_fail(const char *file, int line, const char *what) {
  char msg[256];
  snprintf(msg, sizeof(msg), "%s:%d: check failed: %s", file, line, what);
  check_record(msg);
}

void tu_check_eq_fail(const char *file, int line, const char *what, long long a,
                      long long b) {
  char msg[256];
  snprintf(msg, sizeof(msg), "%s:%d: check failed: %s (%lld vs %lld)", file, line, what, a,
           b);
  check_record(msg);
}

int tu_checks_failed(void) {
  pthread_mutex_lock(&check_mu);
  int n = check_count;
  for (int i = 0; i < n && i < TU_MAX_MSGS; i++)
    fprintf(stderr, "  %s\n", check_msgs[i]);
  if (n > TU_MAX_MSGS) fprintf(stderr, "  ... and %d more\n", n - TU_MAX_MSGS);
  pthread_mutex_unlock(&check_mu);
  return n;
}

void tu_checks_reset(void) {
  pthread_mutex_lock(&check_mu);
  check_count = 0;
  pthread_mutex_unlock(&check_mu);
}

/* ---- tracker --------------------------------------------------------------------------
 */

tu_tracker *tu_tracker_new(void) {
  tu_tracker *t = calloc(1, sizeof(*t));
  if (!t) abort();
  for (int i = 0; i < TU_MAX_CONNS; i++) {
    t->slots[i].magic = TU_SLOT_MAGIC;
    t->slots[i].index = i;
    atomic_store(&t->slots[i].loop, -1);
    atomic_store(&t->slots[i].reason, 1); /* 1: no reason recorded yet */
  }
  return t;
}

void tu_tracker_free(tu_tracker *t) {
  free(t);
}

tu_tracker *tu_tracker_of_engine(cgnet_engine *eng) {
  return cgnet_engine_userdata(eng);
}

tu_tracker *tu_tracker_of_conn(cgnet_conn *c) {
  return tu_tracker_of_engine(cgnet_conn_engine(c));
}

tu_slot *tu_tracker_open(cgnet_conn *c) {
  tu_tracker *t = tu_tracker_of_conn(c);
  atomic_fetch_add(&t->opens, 1);
  int i = atomic_fetch_add(&t->nslots, 1);
  if (i >= TU_MAX_CONNS) {
    atomic_fetch_add(&t->overflow, 1);
    return NULL;
  }
  tu_slot *s = &t->slots[i];
  atomic_fetch_add(&s->opens, 1);
  atomic_store(&s->loop, cgnet_loop_index(cgnet_conn_loop(c)));
  socklen_t len = 0;
  const struct sockaddr *sa = cgnet_conn_remote_addr(c, &len);
  int port = -1;
  if (sa && sa->sa_family == AF_INET)
    port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
  if (sa && sa->sa_family == AF_INET6)
    port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  atomic_store(&s->remote_port, port);
  cgnet_conn_set_context(c, s);
  return s;
}

tu_slot *tu_slot_of(cgnet_conn *c) {
  tu_slot *s = cgnet_conn_context(c);
  if (!s || s->magic != TU_SLOT_MAGIC) return NULL;
  return s;
}

tu_slot *tu_tracker_close(cgnet_conn *c, int reason) {
  tu_tracker *t = tu_tracker_of_conn(c);
  tu_slot *s = tu_slot_of(c);
  if (!s || s < t->slots || s >= t->slots + TU_MAX_CONNS) {
    atomic_fetch_add(&t->bad_ctx, 1);
    s = NULL;
  } else if (atomic_fetch_add(&s->closes, 1) != 0) {
    atomic_fetch_add(&t->double_close, 1);
    s = NULL;
  } else {
    atomic_store(&s->reason, reason);
    atomic_store(&s->bytes_at_close, atomic_load(&s->bytes));
  }
  /* Counted last: a test thread that waits for the count then reads the slot. */
  atomic_fetch_add(&t->closes, 1);
  return s;
}

tu_slot *tu_tracker_find_port(tu_tracker *t, int port) {
  int n = atomic_load(&t->nslots);
  if (n > TU_MAX_CONNS) n = TU_MAX_CONNS;
  for (int i = 0; i < n; i++)
    if (atomic_load(&t->slots[i].remote_port) == port) return &t->slots[i];
  return NULL;
}

int tu_tracker_count_reason(tu_tracker *t, int reason) {
  int n = atomic_load(&t->nslots), k = 0;
  if (n > TU_MAX_CONNS) n = TU_MAX_CONNS;
  for (int i = 0; i < n; i++)
    if (atomic_load(&t->slots[i].closes) > 0 && atomic_load(&t->slots[i].reason) == reason)
      k++;
  return k;
}

int tu_tracker_all_closed_once(tu_tracker *t) {
  int n = atomic_load(&t->nslots);
  if (n > TU_MAX_CONNS || atomic_load(&t->overflow) || atomic_load(&t->bad_ctx) ||
      atomic_load(&t->double_close))
    return 0;
  for (int i = 0; i < n; i++)
    if (atomic_load(&t->slots[i].opens) != 1 || atomic_load(&t->slots[i].closes) != 1)
      return 0;
  return atomic_load(&t->opens) == atomic_load(&t->closes);
}
