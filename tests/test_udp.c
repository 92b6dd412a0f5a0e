/*
 * UDP: echo equality with 1 and N loops (every reply checked), send_to to every sender
 * from a callback and from another thread, SHUTDOWN from on_traffic, the stream-only
 * calls refusing a datagram conn, errors known when queueing (EMSGSIZE, EAFNOSUPPORT,
 * ENOBUFS), oversized datagrams dropped and counted, multicast and bind-to-device on
 * lo, IPv6 and dual-stack listeners, and one engine serving TCP + Unix + UDP at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
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

#define NCLIENTS 10
#define DGRAM_SIZE 1024
#define DGRAMS_PER_CLIENT 300
#define WINDOW 4 /* unanswered datagrams per client: far below any socket buffer */

/* ---- shared callbacks ---------------------------------------------------------------- */

static cgnet_action track_on_open(cgnet_conn *c) {
  TU_CHECK(!cgnet_conn_is_datagram(c));
  TU_CHECK(tu_tracker_open(c) != NULL);
  return CGNET_NONE;
}

static cgnet_action track_on_close(cgnet_conn *c, int reason) {
  TU_CHECK(!cgnet_conn_is_datagram(c));
  tu_tracker_close(c, reason);
  return CGNET_NONE;
}

static void track_on_shutdown(cgnet_engine *eng) {
  atomic_fetch_add(&tu_tracker_of_engine(eng)->shutdowns, 1);
}

static cgnet_handler echo_handler(tu_tracker *t) {
  return (cgnet_handler){.ud = t,
                         .on_open = track_on_open,
                         .on_traffic = tu_echo_tracked,
                         .on_close = track_on_close,
                         .on_shutdown = track_on_shutdown};
}

static int start1(tu_server *s, const cgnet_handler *h, const char *addr,
                  const cgnet_options *o) {
  const char *addrs[] = {addr};
  return tu_server_start_at(s, h, addrs, 1, o);
}

/* One request/reply on a fresh connected client. 0 or a negative errno. */
static int ping(int family, int port, const char *msg, char *reply, size_t cap) {
  int fd = tu_udp_socket(family, port);
  if (fd < 0) return fd;
  int rc = send(fd, msg, strlen(msg), 0) < 0 ? -errno : 0;
  if (!rc) rc = tu_udp_recv(fd, reply, cap - 1, 2000 * TU_SLOW);
  if (rc >= 0) reply[rc] = '\0';
  close(fd);
  return rc < 0 ? rc : 0;
}

/* ---- echo -------------------------------------------------------------------------- */

static void run_echo(int family, const char *addr, int loops) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  cgnet_options o = {.num_loops = loops};
  tu_server s;
  assert_rc(start1(&s, &h, addr, &o), 0);
  assert_true(s.port > 0);
  tu_udp_echo_result r;
  int rc = tu_udp_echo(family, s.port, NCLIENTS, DGRAMS_PER_CLIENT, DGRAM_SIZE, WINDOW,
                       TU_TIMEOUT_MS, &r);
  /* A loop counts a sendmmsg once it returns, and the client may already hold the
   * replies by then: wait (bounded) for the count to catch up. */
  cgnet_datagram_stats st;
  cgnet_engine_datagram_stats(s.eng, &st);
  for (int waited = 0; st.sent < (uint64_t)r.replies && waited < 2000; waited++) {
    usleep(1000);
    cgnet_engine_datagram_stats(s.eng, &st);
  }
  printf("  udp echo, %d loop(s): %d replies in %llu ms; %llu datagrams in %llu recvmmsg "
         "calls (%.2f per call), %llu out in %llu sendmmsg calls (%.2f per call)\n",
         loops, r.replies, (unsigned long long)r.elapsed_ms,
         (unsigned long long)st.received, (unsigned long long)st.recv_calls,
         st.recv_calls ? (double)st.received / (double)st.recv_calls : 0.0,
         (unsigned long long)st.sent, (unsigned long long)st.send_calls,
         st.send_calls ? (double)st.sent / (double)st.send_calls : 0.0);
  if (rc)
    fail_msg("udp echo: rc %d, %d replies, %d bad, %d lost", rc, r.replies, r.bad, r.lost);
  assert_int_equal(r.replies, NCLIENTS * DGRAMS_PER_CLIENT);
  assert_int_equal(st.received, NCLIENTS * DGRAMS_PER_CLIENT);
  assert_int_equal(st.sent, NCLIENTS * DGRAMS_PER_CLIENT);
  assert_int_equal(st.dropped_truncated + st.dropped_send, 0);
  assert_true(st.recv_calls > 0 && st.recv_calls <= st.received);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&t->opens), 0); /* no on_open/on_close for datagrams */
  assert_int_equal(atomic_load(&t->closes), 0);
  assert_int_equal(atomic_load(&t->traffic), NCLIENTS * DGRAMS_PER_CLIENT);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_no_check_failures();
  tu_tracker_free(t);
}

static void test_echo(void **state) {
  run_echo(AF_INET, "udp://127.0.0.1:0", (int)(intptr_t)*state);
}

static void test_echo6(void **state) {
  (void)state;
  if (!tu_have_ipv6_loopback()) {
    printf("  skipped: no IPv6 loopback on this machine\n");
    skip();
  }
  run_echo(AF_INET6, "udp6://[::1]:0", 2);
}

/* ---- send_to ----------------------------------------------------------------------- */

#define MAX_PEERS 32

typedef struct peers {
  pthread_mutex_t mu;
  int n;
  struct sockaddr_storage addr[MAX_PEERS];
  socklen_t len[MAX_PEERS];
} peers;

/* "hello": remember the sender, answer "ok". "bcast": send "news" to every sender. */
static cgnet_action peers_on_traffic(cgnet_conn *c) {
  peers *p = tu_tracker_of_conn(c)->user;
  char msg[16] = {0};
  cgnet_conn_read(c, msg, sizeof msg - 1);
  if (strcmp(msg, "hello") == 0) {
    socklen_t len;
    const struct sockaddr *sa = cgnet_conn_remote_addr(c, &len);
    pthread_mutex_lock(&p->mu);
    if (p->n < MAX_PEERS) {
      memcpy(&p->addr[p->n], sa, len);
      p->len[p->n++] = len;
    }
    pthread_mutex_unlock(&p->mu);
    TU_CHECK_EQ(cgnet_conn_write(c, "ok", 2), 0);
  } else if (strcmp(msg, "bcast") == 0) {
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n; i++)
      TU_CHECK_EQ(
          cgnet_conn_send_to(c, (struct sockaddr *)&p->addr[i], p->len[i], "news", 4), 0);
    pthread_mutex_unlock(&p->mu);
  }
  return CGNET_NONE;
}

static void expect_dgram(int fd, const char *want) {
  char buf[32];
  int n = tu_udp_recv(fd, buf, sizeof buf - 1, 2000 * TU_SLOW);
  if (n < 0) fail_msg("waiting for \"%s\": %s", want, strerror(-n));
  buf[n] = '\0';
  assert_string_equal(buf, want);
}

static void test_send_to(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  peers p = {.n = 0};
  pthread_mutex_init(&p.mu, NULL);
  t->user = &p;
  cgnet_handler h = {.ud = t, .on_traffic = peers_on_traffic};
  cgnet_options o = {.num_loops = 2};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int fds[NCLIENTS];
  for (int i = 0; i < NCLIENTS; i++) {
    fds[i] = tu_udp_socket(AF_INET, s.port);
    assert_true(fds[i] >= 0);
    assert_int_equal(send(fds[i], "hello", 5, 0), 5);
    expect_dgram(fds[i], "ok");
  }
  /* From a callback: one client asks, every client hears. */
  assert_int_equal(send(fds[3], "bcast", 5, 0), 5);
  for (int i = 0; i < NCLIENTS; i++)
    expect_dgram(fds[i], "news");
  /* From this (non-loop) thread. */
  pthread_mutex_lock(&p.mu);
  assert_int_equal(p.n, NCLIENTS);
  for (int i = 0; i < p.n; i++)
    assert_rc(cgnet_engine_send_to(s.eng, 0, (struct sockaddr *)&p.addr[i], p.len[i],
                                   "engine", 6),
              0);
  pthread_mutex_unlock(&p.mu);
  for (int i = 0; i < NCLIENTS; i++) {
    expect_dgram(fds[i], "engine");
    close(fds[i]);
  }
  /* A second single-loop engine cannot take the port: no SO_REUSEADDR on unicast UDP.
   * (Another SO_REUSEPORT socket of the same user could join the group, as with TCP.) */
  char busy[64];
  snprintf(busy, sizeof busy, "udp://127.0.0.1:%d", s.port);
  const char *busy_addr[] = {busy};
  cgnet_engine *eng2 = NULL;
  cgnet_options o1 = {.num_loops = 1};
  assert_rc(cgnet_engine_start(&h, busy_addr, 1, &o1, &eng2), CGNET_EADDRINUSE);
  struct sockaddr_in to = {.sin_family = AF_INET};
  assert_rc(cgnet_engine_send_to(s.eng, 1, (struct sockaddr *)&to, sizeof to, "x", 1),
            CGNET_EINVAL);
  assert_rc(tu_server_stop(&s, 1000), 0);

  /* Not a UDP address: EINVAL. */
  tu_tracker *t2 = tu_tracker_new();
  cgnet_handler h2 = echo_handler(t2);
  assert_rc(start1(&s, &h2, "tcp://127.0.0.1:0", NULL), 0);
  assert_rc(cgnet_engine_send_to(s.eng, 0, (struct sockaddr *)&to, sizeof to, "x", 1),
            CGNET_EINVAL);
  assert_rc(tu_server_stop(&s, 1000), 0);
  pthread_mutex_destroy(&p.mu);
  assert_no_check_failures();
  tu_tracker_free(t);
  tu_tracker_free(t2);
}

/* ---- actions ----------------------------------------------------------------------- */

static cgnet_action shutdown_on_traffic(cgnet_conn *c) {
  tu_tracker *t = tu_tracker_of_conn(c);
  atomic_fetch_add(&t->traffic, 1);
  char msg[8] = {0};
  cgnet_conn_read(c, msg, sizeof msg - 1);
  TU_CHECK_EQ(cgnet_conn_write(c, msg, strlen(msg)), 0);
  if (strcmp(msg, "stop") == 0) return CGNET_SHUTDOWN;
  return strcmp(msg, "close") == 0 ? CGNET_CLOSE : CGNET_NONE;
}

static void test_shutdown_action(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {
      .ud = t, .on_traffic = shutdown_on_traffic, .on_shutdown = track_on_shutdown};
  cgnet_options o = {.num_loops = 2};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  char reply[16];
  assert_rc(ping(AF_INET, s.port, "close", reply, sizeof reply), 0); /* CLOSE: ignored */
  assert_string_equal(reply, "close");
  assert_rc(ping(AF_INET, s.port, "again", reply, sizeof reply), 0);
  assert_rc(ping(AF_INET, s.port, "stop", reply, sizeof reply), 0); /* reply, then stop */
  assert_string_equal(reply, "stop");
  assert_rc(tu_server_wait(&s, TU_TIMEOUT_MS), 0);
  assert_int_equal(atomic_load(&t->shutdowns), 1);
  assert_int_equal(atomic_load(&t->traffic), 3);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- what a datagram conn refuses -------------------------------------------------- */

static cgnet_action timer_fn(cgnet_timer *tm, void *ud) {
  (void)tm;
  (void)ud;
  return CGNET_NONE;
}

static cgnet_action unsupported_on_traffic(cgnet_conn *c) {
  atomic_fetch_add(&tu_tracker_of_conn(c)->traffic, 1);
  TU_CHECK(cgnet_conn_is_datagram(c));
  struct iovec iov = {.iov_base = "x", .iov_len = 1};
  TU_CHECK_EQ(cgnet_conn_writev(c, &iov, 1), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_shutdown_write(c), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_pause_read(c), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_resume_read(c), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_idle_timeout(c, 10), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_read_timeout(c, 10), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_write_timeout(c, 10), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_nodelay(c, 1), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_keepalive(c, 10, 1, 1), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_linger(c, 1), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_close(c), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_async_write(c, "x", 1, NULL, NULL), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_async_writev(c, &iov, 1, NULL, NULL), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_async_write_frame(c, "x", 1, NULL, NULL), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_wake(c), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_async_close(c, NULL, NULL), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_peer_cred(c, NULL, NULL, NULL), CGNET_EUNSUPPORTED);
  TU_CHECK(cgnet_conn_timer_new(c, timer_fn, NULL) == NULL);
  TU_CHECK(cgnet_conn_ref(c) == c);
  cgnet_conn_unref(c); /* no reference was taken: nothing happens */
  TU_CHECK_EQ(cgnet_conn_set_recv_buffer(c, 65536), 0); /* the socket's own buffers */
  TU_CHECK(cgnet_conn_remote_addr_string(c)[0] != '\0');
  TU_CHECK(strncmp(cgnet_conn_local_addr_string(c), "127.0.0.1:", 10) == 0);
  /* Peek two bytes, leave the rest: it is dropped, not delivered again. */
  const uint8_t *p;
  TU_CHECK_EQ(cgnet_conn_peek(c, 2, &p), 2);
  TU_CHECK_EQ(cgnet_conn_write(c, p, 2), 0);
  TU_CHECK_EQ(cgnet_conn_flush(c), 0); /* sends now */
  TU_CHECK_EQ(cgnet_conn_outbound_buffered(c), 0);
  return CGNET_NONE;
}

static void test_unsupported(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {.ud = t, .on_traffic = unsupported_on_traffic};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", NULL), 0);
  int fd = tu_udp_socket(AF_INET, s.port);
  assert_true(fd >= 0);
  assert_int_equal(send(fd, "abcdef", 6, 0), 6);
  expect_dgram(fd, "ab");
  assert_int_equal(send(fd, "xyz", 3, 0), 3);
  expect_dgram(fd, "xy");
  close(fd);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&t->traffic), 2);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- errors ------------------------------------------------------------------------ */

static cgnet_action errors_on_traffic(cgnet_conn *c) {
  atomic_fetch_add(&tu_tracker_of_conn(c)->traffic, 1);
  static uint8_t big[70000];
  TU_CHECK_EQ(cgnet_conn_write(c, big, sizeof big), CGNET_EMSGSIZE);
  struct sockaddr_in6 v6 = {
      .sin6_family = AF_INET6, .sin6_port = htons(9), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  TU_CHECK_EQ(cgnet_conn_send_to(c, (struct sockaddr *)&v6, sizeof v6, "x", 1),
              CGNET_EAFNOSUPPORT);
  TU_CHECK_EQ(cgnet_conn_send_to(c, NULL, 0, "x", 1), CGNET_EINVAL);
  /* write_buffer_limit is 4096: four 1000-byte datagrams fit, the fifth does not. */
  for (int i = 0; i < 4; i++)
    TU_CHECK_EQ(cgnet_conn_write(c, big, 1000), 0);
  TU_CHECK_EQ(cgnet_conn_write(c, big, 1000), CGNET_ENOBUFS);
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0); /* the (empty) echo still fits */
  return CGNET_NONE;
}

static int sent_at_least_5(void *eng) {
  cgnet_datagram_stats st;
  cgnet_engine_datagram_stats(eng, &st);
  return st.sent >= 5;
}

static void test_errors(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = {.ud = t, .on_traffic = errors_on_traffic};
  /* 1 KiB receive slots; a queue of at most 4096 bytes. */
  cgnet_options o = {.read_buffer_cap = 1024, .write_buffer_limit = 4096};
  tu_server s;
  assert_rc(start1(&s, &h, "udp://127.0.0.1:0", &o), 0);
  int fd = tu_udp_socket(AF_INET, s.port);
  assert_true(fd >= 0);
  static uint8_t buf[2000];
  assert_int_equal(send(fd, buf, 2000, 0), 2000); /* larger than a slot: dropped */
  assert_int_equal(send(fd, "", 0, 0), 0);        /* an empty datagram is delivered */
  for (int i = 0; i < 4; i++) {
    int n = tu_udp_recv(fd, buf, sizeof buf, 2000 * TU_SLOW);
    assert_int_equal(n, 1000);
  }
  assert_int_equal(tu_udp_recv(fd, buf, sizeof buf, 2000 * TU_SLOW), 0); /* the echo */
  close(fd);
  /* The loop counts a batch after sendmmsg returns, which can be after our recv: wait
   * for the counters to settle. */
  assert_true(tu_wait_until(sent_at_least_5, s.eng, 2000 * TU_SLOW));
  cgnet_datagram_stats st;
  cgnet_engine_datagram_stats(s.eng, &st);
  assert_int_equal(st.dropped_truncated, 1);
  assert_int_equal(st.received, 1);
  assert_int_equal(st.sent, 5);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&t->traffic), 1);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- multicast and devices on lo --------------------------------------------------- */

/* Send `count` datagrams to group:port out of lo; count the replies. */
static int multicast_round(int family, const struct sockaddr_storage *group, socklen_t glen,
                           int count, int *err) {
  int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int lo = (int)if_nametoindex("lo");
  if (family == AF_INET) {
    struct ip_mreqn mr = {.imr_ifindex = lo};
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof mr);
  } else {
    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &lo, sizeof lo);
  }
  int got = 0;
  *err = 0;
  for (int i = 0; i < count; i++) {
    if (sendto(fd, "mc", 2, 0, (const struct sockaddr *)group, glen) < 0) {
      *err = errno;
      break;
    }
    char buf[8];
    if (tu_udp_recv(fd, buf, sizeof buf, 1000 * TU_SLOW) == 2) got++;
  }
  close(fd);
  return got;
}

static void run_multicast(int family, const char *addr) {
  int lo = (int)if_nametoindex("lo");
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  cgnet_options o = {.num_loops = 2, .multicast_interface_index = lo};
  tu_server s;
  int rc = start1(&s, &h, addr, &o);
  if (rc != 0) {
    printf("  skipped: cannot join %s on lo here: %s\n", addr, cgnet_strerror(rc));
    tu_tracker_free(t);
    skip();
  }
  struct sockaddr_storage group;
  socklen_t glen = sizeof group;
  assert_rc(cgnet_engine_listen_addr(s.eng, 0, (struct sockaddr *)&group, &glen), 0);
  int err = 0, got = multicast_round(family, &group, glen, 5, &err);
  cgnet_datagram_stats st;
  cgnet_engine_datagram_stats(s.eng, &st);
  assert_rc(tu_server_stop(&s, 1000), 0);
  tu_tracker_free(t);
  if (family == AF_INET6 && got == 0) {
    printf("  skipped: IPv6 multicast cannot be sent on lo here (%s): lo has no "
           "IFF_MULTICAST and there is no IPv6 multicast route; not changing the "
           "network configuration from a test\n",
           err ? strerror(err) : "nothing arrived");
    skip();
  }
  assert_int_equal(err, 0);
  assert_int_equal(got, 5);
  /* One socket per group even with 2 loops: each datagram is delivered once. */
  assert_int_equal(st.received, 5);
}

static void test_multicast4(void **state) {
  (void)state;
  run_multicast(AF_INET, "udp4://239.255.77.1:0");
}

static void test_multicast6(void **state) {
  (void)state;
  if (!tu_have_ipv6_loopback()) {
    printf("  skipped: no IPv6 on this machine\n");
    skip();
  }
  run_multicast(AF_INET6, "udp6://[ff02::77:1%lo]:0");
}

static cgnet_action device_on_traffic(cgnet_conn *c) {
  if (cgnet_conn_is_datagram(c)) {
    char dev[IF_NAMESIZE] = {0};
    socklen_t len = sizeof dev;
    TU_CHECK_EQ(getsockopt(cgnet_conn_fd(c), SOL_SOCKET, SO_BINDTODEVICE, dev, &len), 0);
    TU_CHECK(strcmp(dev, "lo") == 0);
  }
  return tu_echo_tracked(c);
}

static void test_bind_to_device(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  h.on_traffic = device_on_traffic;
  cgnet_options o = {.num_loops = 2, .bind_to_device = "lo"};
  const char *addrs[] = {"udp://127.0.0.1:0", "tcp://127.0.0.1:0"};
  tu_server s;
  int rc = tu_server_start_at(&s, &h, addrs, 2, &o);
  if (rc == CGNET_EPERM) {
    printf("  skipped: SO_BINDTODEVICE needs CAP_NET_RAW here\n");
    tu_tracker_free(t);
    skip();
  }
  assert_rc(rc, 0);
  char reply[16];
  assert_rc(ping(AF_INET, s.port, "dev", reply, sizeof reply), 0);
  assert_string_equal(reply, "dev");
  int fd = tu_connect4(cgnet_engine_listen_port(s.eng, 1));
  assert_true(fd >= 0);
  assert_int_equal(tu_send_all(fd, "tcp", 3, TU_TIMEOUT_MS), 0);
  assert_int_equal(tu_recv_exact(fd, reply, 3, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(reply, "tcp", 3);
  close(fd);
  assert_rc(tu_server_stop(&s, 1000), 0);

  o.bind_to_device = "nosuchdev0";
  cgnet_engine *eng = NULL;
  assert_rc(cgnet_engine_start(&h, addrs, 1, &o, &eng), -ENODEV);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- IPv6 -------------------------------------------------------------------------- */

static cgnet_action addr_on_open(cgnet_conn *c) {
  tu_slot *slot = tu_tracker_open(c);
  TU_CHECK(slot != NULL);
  const char *ra = cgnet_conn_remote_addr_string(c);
  if (slot) atomic_store(&slot->expect, strncmp(ra, "[::ffff:127.0.0.1]:", 19) == 0);
  return CGNET_NONE;
}

static void test_dual_stack(void **state) {
  (void)state;
  if (!tu_have_ipv6_loopback()) {
    printf("  skipped: no IPv6 on this machine\n");
    skip();
  }
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  h.on_open = addr_on_open;
  /* tcp://[::] takes IPv4 clients too; they show as v4-mapped, in brackets. */
  tu_server s;
  assert_rc(start1(&s, &h, "tcp://[::]:0", NULL), 0);
  int fd = tu_connect4(s.port);
  assert_true(fd >= 0);
  assert_int_equal(tu_send_all(fd, "v4", 2, TU_TIMEOUT_MS), 0);
  char buf[4];
  assert_int_equal(tu_recv_exact(fd, buf, 2, TU_TIMEOUT_MS, NULL), 0);
  assert_true(atomic_load(&t->slots[0].expect) == 1);
  close(fd);
  fd = tu_connect(AF_INET6, s.port, 0, TU_TIMEOUT_MS);
  assert_true(fd >= 0);
  close(fd);
  assert_rc(tu_server_stop(&s, 1000), 0);

  /* tcp6:// is IPv6 only. */
  assert_rc(start1(&s, &h, "tcp6://[::]:0", NULL), 0);
  assert_int_equal(tu_connect(AF_INET, s.port, 0, 2000), -ECONNREFUSED);
  assert_rc(tu_server_stop(&s, 1000), 0);

  /* udp://[::] answers IPv4 senders; udp6:// does not hear them. */
  char reply[8];
  assert_rc(start1(&s, &h, "udp://[::]:0", NULL), 0);
  assert_rc(ping(AF_INET, s.port, "u4", reply, sizeof reply), 0);
  assert_string_equal(reply, "u4");
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_rc(start1(&s, &h, "udp6://[::]:0", NULL), 0);
  assert_rc(ping(AF_INET6, s.port, "u6", reply, sizeof reply), 0);
  int rc = ping(AF_INET, s.port, "u4", reply, sizeof reply);
  assert_true(rc == -ECONNREFUSED || rc == -ETIMEDOUT);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* ---- every scheme on one engine ---------------------------------------------------- */

typedef struct udp_job {
  int port, rc;
  tu_udp_echo_result r;
} udp_job;

static void *udp_job_run(void *arg) {
  udp_job *j = arg;
  j->rc = tu_udp_echo(AF_INET, j->port, 5, 200, DGRAM_SIZE, WINDOW, TU_TIMEOUT_MS, &j->r);
  return NULL;
}

#define MIXED_STREAM_CLIENTS 3 /* per stream listener */
#define MIXED_BYTES ((size_t)(256u << 10) / TU_PAYLOAD_DIV)

static void test_mixed(void **state) {
  (void)state;
  char dir[64], u1[128], u2[128], p1[108], p2[108];
  assert_int_equal(tu_tmpdir(dir, sizeof dir), 0);
  snprintf(p1, sizeof p1, "%s/a.sock", dir);
  snprintf(p2, sizeof p2, "%s/b.sock", dir);
  snprintf(u1, sizeof u1, "unix://%s", p1);
  snprintf(u2, sizeof u2, "unix://%s", p2);
  const char *addrs[] = {"tcp://127.0.0.1:0", u1, "udp://127.0.0.1:0",
                         "tcp://127.0.0.1:0", u2, "udp://127.0.0.1:0"};
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  cgnet_options o = {.num_loops = 2};
  tu_server s;
  assert_rc(tu_server_start_at(&s, &h, addrs, 6, &o), 0);
  assert_int_equal(cgnet_engine_num_listeners(s.eng), 6);

  udp_job jobs[2] = {{.port = cgnet_engine_listen_port(s.eng, 2)},
                     {.port = cgnet_engine_listen_port(s.eng, 5)}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, udp_job_run, &jobs[i]), 0);

  enum { N = 4 * MIXED_STREAM_CLIENTS };
  tu_echo_client cl[N];
  uint8_t *tx = malloc(MIXED_BYTES), *rx[N];
  assert_non_null(tx);
  tu_pattern_fill(tx, MIXED_BYTES, 11, 0);
  for (int i = 0; i < N; i++) {
    int k = i % 4, fd;
    if (k == 0 || k == 2)
      fd = tu_connect4(cgnet_engine_listen_port(s.eng, k == 0 ? 0 : 3));
    else
      fd = tu_connect_unix(k == 1 ? p1 : p2);
    assert_true(fd >= 0);
    rx[i] = malloc(MIXED_BYTES);
    cl[i] = (tu_echo_client){
        .fd = fd, .tx = tx, .tx_len = MIXED_BYTES, .rx = rx[i], .rx_len = MIXED_BYTES};
  }
  assert_rc(tu_echo_drive(cl, N, TU_TIMEOUT_MS), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < N; i++) {
    assert_int_equal(tu_first_diff(tx, rx[i], MIXED_BYTES), SIZE_MAX);
    close(cl[i].fd);
    free(rx[i]);
  }
  free(tx);
  for (int i = 0; i < 2; i++) {
    if (jobs[i].rc)
      fail_msg("udp listener %d: rc %d, %d replies, %d bad, %d lost", i, jobs[i].rc,
               jobs[i].r.replies, jobs[i].r.bad, jobs[i].r.lost);
    assert_int_equal(jobs[i].r.replies, 5 * 200);
  }
  assert_true(tu_wait_conns(s.eng, 0, TU_TIMEOUT_MS));
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_int_equal(atomic_load(&t->opens), N);
  assert_true(tu_tracker_all_closed_once(t));
  tu_rmdir(dir);
  assert_no_check_failures();
  tu_tracker_free(t);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      {"echo/loops=1", test_echo, tu_setup, tu_teardown, (void *)(intptr_t)1},
      {"echo/loops=4", test_echo, tu_setup, tu_teardown, (void *)(intptr_t)4},
      T(test_echo6),
      T(test_send_to),
      T(test_shutdown_action),
      T(test_unsupported),
      T(test_errors),
      T(test_multicast4),
      T(test_multicast6),
      T(test_bind_to_device),
      T(test_dual_stack),
      T(test_mixed),
  };
  return cmocka_run_group_tests_name("test_udp", tests, NULL, NULL);
}
