/*
 * UDP sessions: 10,000 peers at once, each with its own count (every reply checked);
 * sessions closing and reopening while the table grows and shrinks; IPv6 and dual-stack
 * peers;
 * one datagram per callback with nothing carried over; idle expiry of exactly the silent
 * peers and a new session for a peer that comes back; the session limit under a flood of
 * new source addresses; async write, async close, conn timers and held references on a
 * session; engine stop closing every session with CGNET_ESHUTDOWN; the address option
 * "?sessions=" both ways and its errors; the calls a session refuses.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/dgram.h"
#include "support/support.h"

#define CTX_MAGIC 0x5e55u

/* What the test thread reads while the engine runs: atomics only. */
typedef struct counts {
  atomic_int opens, closes, traffic;
  atomic_int by_shutdown, by_timeout, by_local, by_other;
  atomic_int bad; /* a session callback saw something wrong */
  atomic_int last_closed_port;
  atomic_int timer_fired;
  cgnet_conn *_Atomic held; /* a reference on_open took (test_handles) */
  atomic_int local_port, remote_port;
} counts;

/* A session's context: its count of datagrams. */
typedef struct peer_ctx {
  unsigned magic;
  unsigned long count;
} peer_ctx;

static counts *counts_of(cgnet_conn *c) {
  return cgnet_engine_userdata(cgnet_conn_engine(c));
}

static int port_of(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
  return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
}

static cgnet_action counter_on_open(cgnet_conn *c) {
  counts *k = counts_of(c);
  peer_ctx *p = calloc(1, sizeof *p);
  if (!p || !cgnet_conn_is_datagram(c)) atomic_fetch_add(&k->bad, 1);
  if (!p) return CGNET_CLOSE;
  p->magic = CTX_MAGIC;
  cgnet_conn_set_context(c, p);
  atomic_fetch_add(&k->opens, 1);
  return CGNET_NONE;
}

/* Reply "<count> <datagram>". Only one byte is consumed: the rest must not reach the
 * next callback (one datagram, one view). */
static cgnet_action counter_on_traffic(cgnet_conn *c) {
  counts *k = counts_of(c);
  peer_ctx *p = cgnet_conn_context(c);
  atomic_fetch_add(&k->traffic, 1);
  if (!p || p->magic != CTX_MAGIC) {
    atomic_fetch_add(&k->bad, 1);
    return CGNET_CLOSE;
  }
  const uint8_t *data;
  size_t n = cgnet_conn_peek(c, 0, &data);
  char head[32];
  int hl = snprintf(head, sizeof head, "%lu ", ++p->count);
  uint8_t out[2048];
  if (n > sizeof out - (size_t)hl) n = sizeof out - (size_t)hl;
  memcpy(out, head, (size_t)hl);
  if (n) memcpy(out + hl, data, n);
  if (cgnet_conn_write(c, out, (size_t)hl + n) != 0) atomic_fetch_add(&k->bad, 1);
  (void)cgnet_conn_discard(c, 1);
  if (n == 5 && memcmp(data, "close", 5) == 0) cgnet_conn_close(c);
  return CGNET_NONE;
}

static cgnet_action counter_on_close(cgnet_conn *c, int reason) {
  counts *k = counts_of(c);
  peer_ctx *p = cgnet_conn_context(c);
  if (!p || p->magic != CTX_MAGIC) atomic_fetch_add(&k->bad, 1);
  free(p);
  cgnet_conn_set_context(c, NULL);
  socklen_t len;
  atomic_store(&k->last_closed_port, port_of(cgnet_conn_remote_addr(c, &len)));
  atomic_int *by = reason == CGNET_ESHUTDOWN     ? &k->by_shutdown
                   : reason == CGNET_ETIMEDOUT   ? &k->by_timeout
                   : reason == CGNET_ELOCALCLOSE ? &k->by_local
                                                 : &k->by_other;
  atomic_fetch_add(by, 1);
  atomic_fetch_add(&k->closes, 1);
  return CGNET_NONE;
}

static cgnet_handler counter_handler(counts *k) {
  return (cgnet_handler){.ud = k,
                         .on_open = counter_on_open,
                         .on_traffic = counter_on_traffic,
                         .on_close = counter_on_close};
}

static int start1(tu_server *s, const cgnet_handler *h, const char *addr,
                  const cgnet_options *o) {
  const char *addrs[] = {addr};
  return tu_server_start_at(s, h, addrs, 1, o);
}

/* Send msg on a connected socket and expect exactly want back. 0, or what went wrong. */
static int exchange(int fd, const char *msg, const char *want) {
  if (send(fd, msg, strlen(msg), 0) < 0) return -errno;
  char buf[2048];
  int n = tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW);
  if (n < 0) return n;
  buf[n] = '\0';
  if (strcmp(buf, want) != 0) {
    printf("  got \"%s\", want \"%s\"\n", buf, want);
    return -EPROTO;
  }
  return 0;
}

static cgnet_datagram_stats stats_of(cgnet_engine *eng) {
  cgnet_datagram_stats st;
  cgnet_engine_datagram_stats(eng, &st);
  return st;
}

/* ---- 10,000 sessions ----------------------------------------------------------------- */

#define MANY 10000
#define ROUNDS 3
#define BATCH 128 /* datagrams in flight: far below the socket buffers */

/* Round r of peers [from, to): every peer sends one datagram, every reply must be its
 * count (r + 1) and its bytes. Returns the number of wrong or missing replies. */
static int many_round(const int *fds, int from, int to, int r) {
  int wrong = 0;
  char msg[64], want[96], buf[256];
  for (int i = from; i < to; i++) {
    snprintf(msg, sizeof msg, "peer-%d-round-%d", i, r);
    if (send(fds[i], msg, strlen(msg), 0) < 0) wrong++;
  }
  for (int i = from; i < to; i++) {
    snprintf(msg, sizeof msg, "peer-%d-round-%d", i, r);
    snprintf(want, sizeof want, "%d %s", r + 1, msg);
    int n = tu_udp_recv(fds[i], buf, sizeof buf - 1, 5000 * TU_SLOW);
    if (n < 0) {
      wrong++;
      continue;
    }
    buf[n] = '\0';
    if (strcmp(buf, want) != 0) wrong++;
  }
  return wrong;
}

static void test_many_sessions(void **state) {
  (void)state;
  long limit = tu_raise_nofile(MANY + 512);
  if (limit < MANY + 256) {
    printf("  skipped: RLIMIT_NOFILE allows %ld descriptors, the test needs %d\n", limit,
           MANY + 256);
    skip();
  }
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.num_loops = 2, .reuse_port = 1, .udp_sessions = 1};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  /* Every socket stays open to the end, so no source port is used twice. */
  int *fds = calloc(MANY, sizeof *fds);
  assert_non_null(fds);
  int opened = 0, wrong = 0;
  for (; opened < MANY; opened++) {
    fds[opened] = tu_udp_socket(AF_INET, s.port);
    if (fds[opened] < 0) break;
  }
  assert_int_equal(opened, MANY);
  uint64_t t0 = tu_now_ms();
  for (int from = 0; from < MANY; from += BATCH) {
    int to = from + BATCH < MANY ? from + BATCH : MANY;
    for (int r = 0; r < ROUNDS; r++)
      wrong += many_round(fds, from, to, r);
  }
  uint64_t ms = tu_now_ms() - t0;
  cgnet_datagram_stats st = stats_of(s.eng);
  printf("  %d sessions x %d datagrams in %llu ms; %llu in %llu recvmmsg, %llu out in "
         "%llu sendmmsg\n",
         MANY, ROUNDS, (unsigned long long)ms, (unsigned long long)st.received,
         (unsigned long long)st.recv_calls, (unsigned long long)st.sent,
         (unsigned long long)st.send_calls);
  assert_int_equal(wrong, 0);
  assert_int_equal(atomic_load(&k.opens), MANY);
  assert_int_equal(st.sessions_opened, MANY);
  assert_int_equal(st.sessions_open, MANY);
  assert_int_equal(st.sessions_refused, 0);
  assert_int_equal(st.received, MANY * ROUNDS);
  assert_int_equal(cgnet_engine_count_connections(s.eng), MANY);
  assert_true(cgnet_loop_count_connections(cgnet_engine_loop(s.eng, 0)) +
                  cgnet_loop_count_connections(cgnet_engine_loop(s.eng, 1)) ==
              MANY);
  /* Engine stop closes every session with CGNET_ESHUTDOWN. */
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.closes), MANY);
  assert_int_equal(atomic_load(&k.by_shutdown), MANY);
  assert_int_equal(atomic_load(&k.bad), 0);
  for (int i = 0; i < MANY; i++)
    close(fds[i]);
  free(fds);
  assert_no_check_failures();
}

/* ---- churn ------------------------------------------------------------------------- */

#define CHURN 1000

/* Sessions come and go in a table that grows and then shrinks back: every peer still
 * finds its own session (its count goes on), and every closed one gets a new one. */
static void test_churn(void **state) {
  (void)state;
  if (tu_raise_nofile(CHURN + 256) < CHURN + 128) {
    printf("  skipped: RLIMIT_NOFILE is below the %d descriptors the test needs\n",
           CHURN + 128);
    skip();
  }
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.udp_sessions = 1};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int *fds = calloc(CHURN, sizeof *fds);
  assert_non_null(fds);
  for (int i = 0; i < CHURN; i++) {
    fds[i] = tu_udp_socket(AF_INET, s.port);
    assert_true(fds[i] >= 0);
    assert_rc(exchange(fds[i], "a", "1 a"), 0);
  }
  for (int i = 0; i < CHURN; i += 2) /* every other one closes */
    assert_rc(exchange(fds[i], "close", "2 close"), 0);
  assert_true(tu_wait_conns(s.eng, CHURN / 2, TU_TIMEOUT_MS));
  for (int i = 0; i < CHURN; i++)
    assert_rc(exchange(fds[i], "b", i % 2 ? "2 b" : "1 b"), 0);
  /* All but one in a hundred close: the table shrinks, several times. */
  for (int i = 0; i < CHURN; i++)
    if (i % 100 != 1)
      assert_rc(exchange(fds[i], "close", i % 2 ? "3 close" : "2 close"), 0);
  assert_true(tu_wait_conns(s.eng, CHURN / 100, TU_TIMEOUT_MS));
  for (int i = 1; i < CHURN; i += 100)
    assert_rc(exchange(fds[i], "c", "3 c"), 0);
  assert_int_equal(stats_of(s.eng).sessions_open, CHURN / 100);
  assert_int_equal(atomic_load(&k.opens), CHURN + CHURN / 2);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.by_shutdown), CHURN / 100);
  assert_int_equal(atomic_load(&k.bad), 0);
  for (int i = 0; i < CHURN; i++)
    close(fds[i]);
  free(fds);
  assert_no_check_failures();
}

/* ---- one datagram, one callback ------------------------------------------------------ */

static void test_boundaries(void **state) {
  (void)state;
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.udp_sessions = 1};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int fd = tu_udp_socket(AF_INET, s.port);
  assert_true(fd >= 0);
  /* The handler consumes one byte of each: none of the rest may leak into the next. */
  assert_rc(exchange(fd, "abcdefgh", "1 abcdefgh"), 0);
  assert_rc(exchange(fd, "xy", "2 xy"), 0);
  assert_rc(exchange(fd, "", "3 "), 0); /* an empty datagram is a callback too */
  assert_rc(exchange(fd, "z", "4 z"), 0);
  /* A burst: each its own callback, in order. */
  const char *burst[] = {"one", "two", "three", "four"};
  for (int i = 0; i < 4; i++)
    assert_true(send(fd, burst[i], strlen(burst[i]), 0) >= 0);
  for (int i = 0; i < 4; i++) {
    char buf[64], want[64];
    int n = tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW);
    assert_true(n > 0);
    buf[n] = '\0';
    snprintf(want, sizeof want, "%d %s", 5 + i, burst[i]);
    assert_string_equal(buf, want);
  }
  assert_int_equal(atomic_load(&k.opens), 1);
  assert_int_equal(atomic_load(&k.traffic), 8);
  /* The handler's CLOSE on "close": the next datagram opens a new session. */
  assert_rc(exchange(fd, "close", "9 close"), 0);
  assert_true(tu_wait_atomic_eq(&k.by_local, 1, TU_TIMEOUT_MS));
  assert_rc(exchange(fd, "again", "1 again"), 0);
  assert_int_equal(atomic_load(&k.opens), 2);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.by_shutdown), 1);
  assert_int_equal(atomic_load(&k.bad), 0);
  close(fd);
  assert_no_check_failures();
}

/* IPv6 peers, and IPv4 peers of a dual-stack socket (seen as ::ffff:a.b.c.d): each its
 * own session, keyed by its whole address. */
static void test_ipv6(void **state) {
  (void)state;
  if (!tu_have_ipv6_loopback()) {
    printf("  skipped: no IPv6 loopback on this machine\n");
    skip();
  }
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.udp_sessions = 1};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://[::]:0", &o), 0);
  int fds[4] = {tu_udp_socket(AF_INET6, s.port), tu_udp_socket(AF_INET6, s.port),
                tu_udp_socket(AF_INET, s.port), tu_udp_socket(AF_INET, s.port)};
  for (int i = 0; i < 4; i++)
    assert_true(fds[i] >= 0);
  for (int round = 1; round <= 3; round++) {
    for (int i = 0; i < 4; i++) {
      char msg[16], want[32];
      snprintf(msg, sizeof msg, "p%d", i);
      snprintf(want, sizeof want, "%d p%d", round, i);
      assert_rc(exchange(fds[i], msg, want), 0);
    }
  }
  assert_int_equal(atomic_load(&k.opens), 4);
  assert_int_equal(stats_of(s.eng).sessions_open, 4);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.by_shutdown), 4);
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  assert_no_check_failures();
}

/* ---- idle expiry --------------------------------------------------------------------- */

#define CHATTY 3
#define SILENT 3
#define IDLE_MS (300 * TU_SLOW)

/* state: 0 for idle_timeout_ms (no datagram either way), 1 for read_timeout_ms (none
 * from the peer: the replies do not keep a session open). */
static void test_idle_expiry(void **state) {
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.udp_sessions = 1};
  if (*state)
    o.read_timeout_ms = IDLE_MS;
  else
    o.idle_timeout_ms = IDLE_MS;
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int fds[CHATTY + SILENT];
  for (int i = 0; i < CHATTY + SILENT; i++) {
    fds[i] = tu_udp_socket(AF_INET, s.port);
    assert_true(fds[i] >= 0);
    assert_rc(exchange(fds[i], "hi", "1 hi"), 0);
  }
  assert_true(tu_wait_conns(s.eng, CHATTY + SILENT, TU_TIMEOUT_MS));
  /* The chatty peers keep talking for 3 idle periods; the silent ones time out. */
  uint64_t end = tu_now_ms() + 3 * IDLE_MS;
  unsigned long sent = 1;
  while (tu_now_ms() < end) {
    sent++;
    for (int i = 0; i < CHATTY; i++) {
      char want[32];
      snprintf(want, sizeof want, "%lu hi", sent);
      assert_rc(exchange(fds[i], "hi", want), 0);
    }
    tu_sleep_ms(IDLE_MS / 6);
  }
  assert_int_equal(atomic_load(&k.by_timeout), SILENT);
  assert_int_equal(cgnet_engine_count_connections(s.eng), CHATTY);
  assert_int_equal(stats_of(s.eng).sessions_open, CHATTY);
  /* A silent peer that comes back gets a new session (on_open again, count from 1). */
  int back = fds[CHATTY];
  assert_rc(exchange(back, "back", "1 back"), 0);
  assert_int_equal(atomic_load(&k.opens), CHATTY + SILENT + 1);
  /* Then everyone falls silent: every session times out. */
  assert_true(tu_wait_conns(s.eng, 0, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&k.by_timeout), CHATTY + SILENT + 1);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.by_shutdown), 0);
  assert_int_equal(atomic_load(&k.bad), 0);
  for (int i = 0; i < CHATTY + SILENT; i++)
    close(fds[i]);
  assert_no_check_failures();
}

/* ---- the session limit --------------------------------------------------------------- */

#define LIMIT 50
#define EARLY 10   /* sessions open before the flood */
#define FLOOD 1000 /* new source addresses */
#define WAVE 100   /* flood datagrams in flight */

typedef struct seen_want {
  cgnet_engine *eng;
  uint64_t want; /* opened + refused */
} seen_want;

static int seen_reached(void *arg) {
  seen_want *w = arg;
  cgnet_datagram_stats st = stats_of(w->eng);
  return st.sessions_opened + st.sessions_refused >= w->want;
}

static void test_limit(void **state) {
  (void)state;
  if (tu_raise_nofile(FLOOD + 256) < FLOOD + 128) {
    printf("  skipped: RLIMIT_NOFILE is below the %d descriptors the test needs\n",
           FLOOD + 128);
    skip();
  }
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.udp_sessions = 1, .max_udp_sessions = LIMIT};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int early[EARLY];
  for (int i = 0; i < EARLY; i++) {
    early[i] = tu_udp_socket(AF_INET, s.port);
    assert_true(early[i] >= 0);
    assert_rc(exchange(early[i], "first", "1 first"), 0);
  }
  /* A flood of new peers, in waves the socket buffer holds; each wave is fully seen
   * (opened or refused) before the next, so no datagram is lost to the kernel. Every
   * socket stays open to the end, so that no source port comes twice. */
  int *fds = calloc(FLOOD, sizeof *fds);
  assert_non_null(fds);
  seen_want w = {.eng = s.eng, .want = EARLY};
  for (int base = 0; base < FLOOD; base += WAVE) {
    for (int i = base; i < base + WAVE; i++) {
      fds[i] = tu_udp_socket(AF_INET, s.port);
      assert_true(fds[i] >= 0);
      assert_true(send(fds[i], "new", 3, 0) == 3);
    }
    w.want += WAVE;
    assert_true(tu_wait_until(seen_reached, &w, TU_TIMEOUT_MS));
  }
  cgnet_datagram_stats st = stats_of(s.eng);
  assert_int_equal(st.sessions_opened, LIMIT);
  assert_int_equal(st.sessions_refused, EARLY + FLOOD - LIMIT);
  assert_int_equal(st.sessions_open, LIMIT);
  assert_int_equal(st.received, EARLY + (LIMIT - EARLY));
  assert_int_equal(cgnet_engine_count_connections(s.eng), LIMIT);
  assert_int_equal(atomic_load(&k.opens), LIMIT);
  /* The sessions open before the flood are unharmed. */
  for (int i = 0; i < EARLY; i++)
    assert_rc(exchange(early[i], "second", "2 second"), 0);
  /* A closed session frees its place: the next new peer gets it. */
  assert_rc(exchange(early[0], "close", "3 close"), 0);
  assert_true(tu_wait_conns(s.eng, LIMIT - 1, TU_TIMEOUT_MS));
  int late = tu_udp_socket(AF_INET, s.port);
  assert_true(late >= 0);
  assert_rc(exchange(late, "late", "1 late"), 0);
  assert_int_equal(stats_of(s.eng).sessions_open, LIMIT);
  close(late);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.by_shutdown), LIMIT);
  assert_int_equal(atomic_load(&k.bad), 0);
  for (int i = 0; i < EARLY; i++)
    close(early[i]);
  for (int i = 0; i < FLOOD; i++)
    close(fds[i]);
  free(fds);
  assert_no_check_failures();
}

/* max_connections bounds sessions too (they count among the engine's conns). */
static void test_max_connections(void **state) {
  (void)state;
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  cgnet_options o = {.udp_sessions = 1, .max_connections = 2};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = tu_udp_socket(AF_INET, s.port);
    assert_true(fds[i] >= 0);
  }
  assert_rc(exchange(fds[0], "a", "1 a"), 0);
  assert_rc(exchange(fds[1], "b", "1 b"), 0);
  assert_true(send(fds[2], "c", 1, 0) == 1);
  seen_want w = {.eng = s.eng, .want = 3};
  assert_true(tu_wait_until(seen_reached, &w, TU_TIMEOUT_MS));
  assert_int_equal(stats_of(s.eng).sessions_refused, 1);
  char buf[16];
  assert_int_equal(tu_udp_recv(fds[2], buf, sizeof buf, 100), -ETIMEDOUT);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.opens), 2);
  for (int i = 0; i < 3; i++)
    close(fds[i]);
  assert_no_check_failures();
}

/* ---- handles: async calls, timers, references ---------------------------------------- */

static cgnet_action on_timer(cgnet_timer *t, void *ud) {
  cgnet_conn *c = ud;
  counts *k = counts_of(c);
  if (cgnet_conn_write(c, "timer", 5) != 0) atomic_fetch_add(&k->bad, 1);
  atomic_fetch_add(&k->timer_fired, 1);
  (void)t;
  return CGNET_NONE;
}

/* Keeps a reference for the test thread, checks what a session refuses and allows, and
 * starts a conn timer that writes to the peer. */
static cgnet_action handles_on_open(cgnet_conn *c) {
  counts *k = counts_of(c);
  cgnet_action a = counter_on_open(c);
  socklen_t len;
  bool ok = cgnet_conn_pause_read(c) == CGNET_EUNSUPPORTED &&
            cgnet_conn_shutdown_write(c) == CGNET_EUNSUPPORTED &&
            cgnet_conn_set_codec(c, NULL) == CGNET_EUNSUPPORTED &&
            cgnet_conn_set_read_timeout(c, 0) == 0 && cgnet_conn_fd(c) >= 0 &&
            cgnet_conn_local_addr(c, &len) != NULL && len > 0;
  if (!ok) atomic_fetch_add(&k->bad, 1);
  atomic_store(&k->local_port, port_of(cgnet_conn_local_addr(c, &len)));
  atomic_store(&k->remote_port, port_of(cgnet_conn_remote_addr(c, &len)));
  cgnet_timer *t = cgnet_conn_timer_new(c, on_timer, c);
  if (!t || cgnet_timer_start(t, 20, 0) != 0) atomic_fetch_add(&k->bad, 1);
  if (!atomic_load(&k->held)) atomic_store(&k->held, cgnet_conn_ref(c));
  return a;
}

typedef struct done_box {
  atomic_int status, calls;
} done_box;

static void write_done(cgnet_conn *c, int status, void *ud) {
  done_box *d = ud;
  (void)c;
  atomic_store(&d->status, status);
  atomic_fetch_add(&d->calls, 1);
}

static void close_done(cgnet_conn *c, int reason, void *ud) {
  write_done(c, reason, ud);
}

static void test_handles(void **state) {
  (void)state;
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  h.on_open = handles_on_open;
  cgnet_options o = {.udp_sessions = 1};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int fd = tu_udp_socket(AF_INET, s.port);
  assert_true(fd >= 0);
  assert_rc(exchange(fd, "hello", "1 hello"), 0);
  char buf[64];
  int n = tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW); /* the conn timer's */
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "timer", 5);
  assert_int_equal(atomic_load(&k.local_port), s.port);
  assert_int_equal(atomic_load(&k.remote_port), tu_local_port(fd));
  cgnet_conn *c = atomic_load(&k.held);
  assert_non_null(c);

  /* Async write and writev from this thread: one datagram each. */
  done_box d = {0};
  assert_rc(cgnet_conn_async_write(c, "pushed", 6, write_done, &d), 0);
  n = tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW);
  assert_int_equal(n, 6);
  assert_memory_equal(buf, "pushed", 6);
  struct iovec iov[2] = {{.iov_base = "two ", .iov_len = 4},
                         {.iov_base = "pieces", .iov_len = 6}};
  assert_rc(cgnet_conn_async_writev(c, iov, 2, write_done, &d), 0);
  n = tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW);
  assert_int_equal(n, 10);
  assert_memory_equal(buf, "two pieces", 10);
  assert_true(tu_wait_atomic_eq(&d.calls, 2, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&d.status), 0);

  /* Async close: ELOCALCLOSE; then the handle answers CGNET_ECLOSED, and stays safe to
   * use until the reference goes. */
  done_box cd = {0};
  assert_rc(cgnet_conn_async_close(c, close_done, &cd), 0);
  assert_true(tu_wait_atomic_eq(&cd.calls, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&cd.status), CGNET_ELOCALCLOSE);
  assert_int_equal(atomic_load(&k.by_local), 1);
  assert_true(cgnet_conn_is_closed(c));
  assert_int_equal(cgnet_conn_async_write(c, "late", 4, write_done, &d), CGNET_ECLOSED);
  assert_int_equal(cgnet_conn_async_close(c, NULL, NULL), CGNET_ECLOSED);
  assert_int_equal(cgnet_conn_wake(c), CGNET_ECLOSED);
  assert_int_equal(cgnet_engine_count_connections(s.eng), 0);
  /* The peer's next datagram opens a new session. */
  assert_rc(exchange(fd, "again", "1 again"), 0);
  assert_int_equal(atomic_load(&k.opens), 2);
  assert_int_equal(tu_udp_recv(fd, buf, sizeof buf - 1, 5000 * TU_SLOW), 5); /* timer */
  cgnet_conn_unref(c);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.by_shutdown), 1);
  assert_int_equal(atomic_load(&k.bad), 0);
  close(fd);
  assert_no_check_failures();
}

/* ---- writev and flush ---------------------------------------------------------------- */

/* Answers "<" datagram ">" with a writev of three pieces (one datagram), then flushes:
 * the reply leaves in this callback, not at the end of the batch. */
static cgnet_action framing_on_traffic(cgnet_conn *c) {
  counts *k = counts_of(c);
  const uint8_t *data;
  size_t n = cgnet_conn_peek(c, 0, &data);
  struct iovec iov[3] = {{.iov_base = "<", .iov_len = 1},
                         {.iov_base = (void *)data, .iov_len = n},
                         {.iov_base = ">", .iov_len = 1}};
  if (cgnet_conn_writev(c, iov, 3) != 0) atomic_fetch_add(&k->bad, 1);
  cgnet_datagram_stats before, after;
  cgnet_engine_datagram_stats(cgnet_conn_engine(c), &before);
  if (cgnet_conn_flush(c) != 0) atomic_fetch_add(&k->bad, 1);
  cgnet_engine_datagram_stats(cgnet_conn_engine(c), &after);
  if (after.sent != before.sent + 1) atomic_fetch_add(&k->bad, 1); /* sent by the flush */
  struct iovec big = {.iov_base = (void *)data, .iov_len = 70000};
  if (cgnet_conn_writev(c, (struct iovec[]){big, big}, 2) != CGNET_EMSGSIZE)
    atomic_fetch_add(&k->bad, 1);
  if (cgnet_conn_writev(c, NULL, 1) != CGNET_EINVAL) atomic_fetch_add(&k->bad, 1);
  return CGNET_NONE;
}

/* A server with sessions on 127.0.0.1 whose on_traffic is `traffic`; returns a client
 * socket connected to it. */
static int start_sessions(tu_server *s, counts *k, cgnet_action (*traffic)(cgnet_conn *)) {
  cgnet_handler h = counter_handler(k);
  h.on_traffic = traffic;
  cgnet_options o = {.udp_sessions = 1};
  assert_rc(start1(s, &h, "udp://127.0.0.1:0", &o), 0);
  int fd = tu_udp_socket(AF_INET, s->port);
  assert_true(fd >= 0);
  return fd;
}

static void test_writev_flush(void **state) {
  (void)state;
  counts k = {0};
  tu_server s;
  int fd = start_sessions(&s, &k, framing_on_traffic);
  assert_rc(exchange(fd, "abc", "<abc>"), 0);
  assert_rc(exchange(fd, "", "<>"), 0);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&k.bad), 0);
  close(fd);
  assert_no_check_failures();
}

/* An async write queued while the session closes completes with CGNET_ECLOSED. */
static cgnet_action closer_on_traffic(cgnet_conn *c) {
  counts *k = counts_of(c);
  if (!atomic_load(&k->held)) atomic_store(&k->held, cgnet_conn_ref(c));
  cgnet_conn_close(c);
  return CGNET_NONE;
}

static void test_write_after_close(void **state) {
  (void)state;
  counts k = {0};
  tu_server s;
  int fd = start_sessions(&s, &k, closer_on_traffic);
  assert_true(send(fd, "bye", 3, 0) == 3);
  assert_true(tu_wait_atomic_eq(&k.closes, 1, TU_TIMEOUT_MS));
  cgnet_conn *c = atomic_load(&k.held);
  assert_non_null(c);
  assert_int_equal(cgnet_conn_async_write(c, "x", 1, NULL, NULL), CGNET_ECLOSED);
  assert_rc(tu_server_stop(&s, 1000), 0);
  /* The reference outlives the session's close and the engine's stop; freed now. */
  assert_true(cgnet_conn_is_closed(c));
  cgnet_conn_unref(c);
  assert_int_equal(atomic_load(&k.by_local), 1);
  close(fd);
  assert_no_check_failures();
}

/* ---- the address option -------------------------------------------------------------- */

static void test_address_option(void **state) {
  (void)state;
  counts k = {0};
  cgnet_handler h = counter_handler(&k);
  tu_server s;
  /* On for one address, with the options' default off. */
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0?sessions=1", NULL), 0);
  int fd = tu_udp_socket(AF_INET, s.port);
  assert_true(fd >= 0);
  assert_rc(exchange(fd, "a", "1 a"), 0);
  assert_rc(exchange(fd, "b", "2 b"), 0);
  assert_rc(tu_server_stop(&s, 1000), 0);
  close(fd);
  assert_int_equal(atomic_load(&k.opens), 1);

  /* Off for one address, with the options on: plain datagram conns, no on_open. */
  static const cgnet_handler plain = {.on_traffic = tu_echo_tracked};
  tu_tracker *t = tu_tracker_new();
  cgnet_handler ph = plain;
  ph.ud = t;
  cgnet_options o = {.udp_sessions = 1};
  assert_rc(start1(&s, &ph, "udp4://127.0.0.1:0?sessions=0", &o), 0);
  fd = tu_udp_socket(AF_INET, s.port);
  assert_true(fd >= 0);
  assert_rc(exchange(fd, "same", "same"), 0);
  assert_int_equal(stats_of(s.eng).sessions_opened, 0);
  assert_rc(tu_server_stop(&s, 1000), 0);
  close(fd);
  tu_tracker_free(t);

  /* Errors name the option. */
  const char *bad[] = {
      "udp://127.0.0.1:0?",           "udp://127.0.0.1:0?sessions",
      "udp://127.0.0.1:0?sessions=2", "udp://127.0.0.1:0?sessions=",
      "udp://127.0.0.1:0?color=1",    "udp://127.0.0.1:0?sessions=1&",
      "tcp://127.0.0.1:0?sessions=1", "udp://127.0.0.1:0?sessions=1&sessions=0"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cgnet_engine *eng = NULL;
    const char *addrs[] = {bad[i]};
    int rc = cgnet_engine_start(&h, addrs, 1, NULL, &eng);
    if (rc != CGNET_EBADOPTION) fail_msg("\"%s\": got %d, want EBADOPTION", bad[i], rc);
    assert_null(eng);
  }
  /* The option is a server's: a client's dial refuses it. */
  cgnet_client *cl = NULL;
  cgnet_handler ch = {0};
  assert_rc(cgnet_client_new(&ch, NULL, &cl), 0);
  assert_int_equal(cgnet_client_dial(cl, "udp://127.0.0.1:9?sessions=1", 0, NULL, NULL),
                   CGNET_EBADOPTION);
  assert_int_equal(cgnet_client_dial(cl, "udp://localhost:9?sessions=0", 0, NULL, NULL),
                   CGNET_EBADOPTION);
  assert_rc(cgnet_client_free(cl, 1000), 0);
  assert_no_check_failures();
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      T(test_many_sessions),
      T(test_churn),
      T(test_ipv6),
      T(test_boundaries),
      {"test_idle_expiry/idle", test_idle_expiry, tu_setup, tu_teardown,
       (void *)(intptr_t)0},
      {"test_idle_expiry/read", test_idle_expiry, tu_setup, tu_teardown,
       (void *)(intptr_t)1},
      T(test_limit),
      T(test_max_connections),
      T(test_handles),
      T(test_writev_flush),
      T(test_write_after_close),
      T(test_address_option),
  };
  return cmocka_run_group_tests_name("test_udp_sessions", tests, NULL, NULL);
}
