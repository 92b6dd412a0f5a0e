/* Tests for src/lb.c: round-robin, least-conn and source-hash loop selection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "cgnet.h"
#include "lb.h"

static struct sockaddr_in v4(const char *ip, uint16_t port) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
  return sin;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port) {
  struct sockaddr_in6 sin6;
  memset(&sin6, 0, sizeof(sin6));
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  assert_int_equal(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
  return sin6;
}

#define SA(x) ((const struct sockaddr *)(const void *)&(x))

static void round_robin(void **state) {
  (void)state;
  cgnet__lb lb;
  cgnet__lb_init(&lb, CGNET_LB_ROUND_ROBIN, 3, NULL, NULL);
  struct sockaddr_in peer = v4("10.0.0.1", 1234);
  for (int cycle = 0; cycle < 5; cycle++) {
    for (int i = 0; i < 3; i++)
      assert_int_equal(cgnet__lb_pick(&lb, SA(peer), sizeof(peer)), i);
  }
  /* The peer does not matter, nor does a NULL one. */
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 0);
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 1);

  /* The cursor wraps cleanly even near UINT_MAX. */
  cgnet__lb_init(&lb, CGNET_LB_ROUND_ROBIN, 7, NULL, NULL);
  lb.next = 0xffffffffu;
  int first = cgnet__lb_pick(&lb, NULL, 0);
  assert_true(first >= 0 && first < 7);
  for (int i = 1; i < 15; i++)
    assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), (first + i) % 7);
}

static size_t loads[8];
static int load_calls;
static size_t fake_load(void *ctx, int i) {
  assert_ptr_equal(ctx, loads);
  assert_true(i >= 0 && i < 8);
  load_calls++;
  return loads[i];
}

static void least_conn(void **state) {
  (void)state;
  cgnet__lb lb;
  cgnet__lb_init(&lb, CGNET_LB_LEAST_CONN, 4, fake_load, loads);
  size_t init[4] = {5, 3, 7, 4};
  memcpy(loads, init, sizeof(init));
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 1);
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 1); /* loads unchanged: same answer */
  loads[1] = 9;
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 3);
  loads[3] = 5; /* tie between 0 and 3 at 5: the lowest index wins */
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 0);
  loads[2] = 0;
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 2);
  memset(loads, 0, sizeof(loads));
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 0);
  loads[0] = 1;
  loads[1] = 1;
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 2);
  loads[2] = 1;
  loads[3] = 1;
  assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 0);

  /* Simulate accepting: each pick adds a conn to the chosen loop -> they fill evenly. */
  memset(loads, 0, sizeof(loads));
  for (int k = 0; k < 40; k++)
    loads[cgnet__lb_pick(&lb, NULL, 0)]++;
  for (int i = 0; i < 4; i++)
    assert_int_equal(loads[i], 10);
  assert_true(load_calls > 0);
}

static void source_hash_stable(void **state) {
  (void)state;
  cgnet__lb lb;
  cgnet__lb_init(&lb, CGNET_LB_SOURCE_HASH, 5, NULL, NULL);
  struct sockaddr_in a = v4("192.168.1.77", 40000);
  struct sockaddr_in6 b = v6("2001:db8::1234", 51000);
  int ia = cgnet__lb_pick(&lb, SA(a), sizeof(a));
  int ib = cgnet__lb_pick(&lb, SA(b), sizeof(b));
  assert_true(ia >= 0 && ia < 5);
  assert_true(ib >= 0 && ib < 5);
  for (int i = 0; i < 100; i++) {
    struct sockaddr_in a2 = v4("192.168.1.77", 40000);
    struct sockaddr_in6 b2 = v6("2001:db8::1234", 51000);
    b2.sin6_flowinfo = (uint32_t)i; /* not part of the identity */
    assert_int_equal(cgnet__lb_pick(&lb, SA(a2), sizeof(a2)), ia);
    assert_int_equal(cgnet__lb_pick(&lb, SA(b2), sizeof(b2)), ib);
  }
  /* A second balancer with the same n agrees (no hidden state). */
  cgnet__lb lb2;
  cgnet__lb_init(&lb2, CGNET_LB_SOURCE_HASH, 5, NULL, NULL);
  assert_int_equal(cgnet__lb_pick(&lb2, SA(a), sizeof(a)), ia);
  assert_int_equal(cgnet__lb_pick(&lb2, SA(b), sizeof(b)), ib);

  /* NULL, non-IP and truncated peers hash as empty: one fixed loop, in range. */
  int empty = cgnet__lb_pick(&lb, NULL, 0);
  assert_true(empty >= 0 && empty < 5);
  struct sockaddr_in6 other;
  memset(&other, 0, sizeof(other));
  other.sin6_family = AF_APPLETALK;
  assert_int_equal(cgnet__lb_pick(&lb, SA(other), sizeof(other)), empty);
  assert_int_equal(cgnet__lb_pick(&lb, SA(a), 4), empty);
  assert_int_equal(cgnet__lb_pick(&lb, SA(b), sizeof(struct sockaddr_in)), empty);
}

/* Unix peers (usually unnamed, so all alike) go round-robin instead. */
static void source_hash_unix_round_robin(void **state) {
  (void)state;
  cgnet__lb lb;
  cgnet__lb_init(&lb, CGNET_LB_SOURCE_HASH, 3, NULL, NULL);
  struct sockaddr_un un;
  memset(&un, 0, sizeof(un));
  un.sun_family = AF_UNIX;
  for (int i = 0; i < 9; i++)
    assert_int_equal(cgnet__lb_pick(&lb, SA(un), sizeof(sa_family_t)), i % 3);
}

/* Every loop gets a fair share of `count` peers; returns the smallest share. */
static int spread(cgnet__lb *lb, int n, int count, int ipv6, int vary_ip) {
  int hits[16] = {0};
  for (int i = 0; i < count; i++) {
    int k;
    if (ipv6) {
      struct sockaddr_in6 s = v6("2001:db8::1", (uint16_t)(vary_ip ? 443 : 10000 + i));
      if (vary_ip) s.sin6_addr.s6_addr[15] = (uint8_t)(i * 4);
      k = cgnet__lb_pick(lb, SA(s), sizeof(s));
    } else {
      struct sockaddr_in s = v4("10.1.2.3", (uint16_t)(vary_ip ? 443 : 10000 + i));
      if (vary_ip) s.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)i * 4);
      k = cgnet__lb_pick(lb, SA(s), sizeof(s));
    }
    assert_true(k >= 0 && k < n);
    hits[k]++;
  }
  int min = count;
  for (int i = 0; i < n; i++)
    min = hits[i] < min ? hits[i] : min;
  return min;
}

static void source_hash_spread(void **state) {
  (void)state;
  cgnet__lb lb;
  cgnet__lb_init(&lb, CGNET_LB_SOURCE_HASH, 4, NULL, NULL);
  /* 1000 ports from one address: every loop gets a real share (fair would be 250). */
  assert_true(spread(&lb, 4, 1000, 0, 0) >= 150);
  assert_true(spread(&lb, 4, 1000, 1, 0) >= 150);
  /* Addresses that differ only in high bits of a byte (steps of 4) still spread. */
  assert_true(spread(&lb, 4, 200, 0, 1) >= 25);
  assert_true(spread(&lb, 4, 60, 1, 1) >= 5);
  cgnet__lb_init(&lb, CGNET_LB_SOURCE_HASH, 3, NULL, NULL);
  assert_true(spread(&lb, 3, 999, 0, 0) >= 200);
}

static void single_loop(void **state) {
  (void)state;
  static const cgnet_lb kinds[] = {CGNET_LB_ROUND_ROBIN, CGNET_LB_LEAST_CONN,
                                   CGNET_LB_SOURCE_HASH};
  for (size_t k = 0; k < 3; k++) {
    cgnet__lb lb;
    cgnet__lb_init(&lb, kinds[k], 1, fake_load, loads);
    for (int i = 0; i < 50; i++) {
      struct sockaddr_in s = v4("10.0.0.9", (uint16_t)(1000 + i));
      assert_int_equal(cgnet__lb_pick(&lb, SA(s), sizeof(s)), 0);
    }
    /* n < 1 is treated as one loop. */
    cgnet__lb_init(&lb, kinds[k], 0, fake_load, loads);
    assert_int_equal(lb.n, 1);
    assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), 0);
  }
}

static void least_conn_without_load(void **state) {
  (void)state;
  /* No load function: fall back to round-robin rather than crash. */
  cgnet__lb lb;
  cgnet__lb_init(&lb, CGNET_LB_LEAST_CONN, 3, NULL, NULL);
  for (int i = 0; i < 6; i++)
    assert_int_equal(cgnet__lb_pick(&lb, NULL, 0), i % 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_robin),
      cmocka_unit_test(least_conn),
      cmocka_unit_test(source_hash_stable),
      cmocka_unit_test(source_hash_spread),
      cmocka_unit_test(source_hash_unix_round_robin),
      cmocka_unit_test(single_loop),
      cmocka_unit_test(least_conn_without_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
