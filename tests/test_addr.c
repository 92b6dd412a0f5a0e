/* Tests for src/addr.c: every accepted address form and every way to get one wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include <stddef.h>
#include <sys/un.h>

#include "addr.h"
#include "cgnet.h"
#include "internal/util.h"

static const struct sockaddr_in *as_v4(const cgnet__addr *a) {
  return (const struct sockaddr_in *)(const void *)&a->sa;
}
static const struct sockaddr_in6 *as_v6(const cgnet__addr *a) {
  return (const struct sockaddr_in6 *)(const void *)&a->sa;
}

/* Parse str and check it is IPv4 `ip`:`port` with the given flags. */
static void expect_v4(const char *str, cgnet__net net, const char *ip, int port,
                      int wildcard) {
  cgnet__addr a;
  int rc = cgnet__addr_parse(str, &a);
  if (rc != 0) fail_msg("%s: rc %d", str, rc);
  struct in_addr want;
  assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
  assert_int_equal(a.net, net);
  assert_int_equal(a.sa.ss_family, AF_INET);
  assert_int_equal(a.salen, sizeof(struct sockaddr_in));
  assert_memory_equal(&as_v4(&a)->sin_addr, &want, sizeof(want));
  assert_int_equal(ntohs(as_v4(&a)->sin_port), port);
  assert_int_equal(a.v6only, 0);
  assert_int_equal(a.dual_stack, 0);
  assert_int_equal(a.wildcard, wildcard);
}

/* Parse str and check it is IPv6 [ip]:port with the given flags and scope. */
static void expect_v6(const char *str, cgnet__net net, const char *ip, int port, int v6only,
                      int wildcard, int dual_stack, uint32_t scope) {
  cgnet__addr a;
  int rc = cgnet__addr_parse(str, &a);
  if (rc != 0) fail_msg("%s: rc %d", str, rc);
  struct in6_addr want;
  assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
  assert_int_equal(a.net, net);
  assert_int_equal(a.sa.ss_family, AF_INET6);
  assert_int_equal(a.salen, sizeof(struct sockaddr_in6));
  assert_memory_equal(&as_v6(&a)->sin6_addr, &want, sizeof(want));
  assert_int_equal(ntohs(as_v6(&a)->sin6_port), port);
  assert_int_equal(as_v6(&a)->sin6_scope_id, scope);
  assert_int_equal(a.v6only, v6only);
  assert_int_equal(a.wildcard, wildcard);
  assert_int_equal(a.dual_stack, dual_stack);
}

static void expect_err(const char *str, int err) {
  cgnet__addr a;
  memset(&a, 0x77, sizeof(a));
  int rc = cgnet__addr_parse(str, &a);
  if (rc != err) fail_msg("\"%s\": got %d, want %d", str ? str : "(null)", rc, err);
  assert_int_equal(a.salen, 0); /* nothing half-filled is left behind */
  assert_int_equal(a.sa.ss_family, 0);
  assert_int_equal(a.net, 0);
  assert_int_equal(a.wildcard | a.v6only | a.dual_stack, 0);
}

/* ---- valid forms ---- */

static void valid_wildcards(void **state) {
  (void)state;
  expect_v6("tcp://:9000", CGNET__NET_TCP, "::", 9000, 0, 1, 1, 0);
  expect_v4("tcp4://:0", CGNET__NET_TCP4, "0.0.0.0", 0, 1);
  expect_v6("tcp6://:80", CGNET__NET_TCP6, "::", 80, 1, 1, 0, 0);
}

static void valid_ipv4(void **state) {
  (void)state;
  expect_v4("tcp://127.0.0.1:9000", CGNET__NET_TCP, "127.0.0.1", 9000, 0);
  expect_v4("tcp4://127.0.0.1:65535", CGNET__NET_TCP4, "127.0.0.1", 65535, 0);
  expect_v4("tcp://0.0.0.0:1", CGNET__NET_TCP, "0.0.0.0", 1, 0);
  expect_v4("tcp4://10.20.30.40:00080", CGNET__NET_TCP4, "10.20.30.40", 80, 0);
  expect_v4("tcp://255.255.255.255:0", CGNET__NET_TCP, "255.255.255.255", 0, 0);
}

static void valid_ipv6(void **state) {
  (void)state;
  expect_v6("tcp6://[::1]:9000", CGNET__NET_TCP6, "::1", 9000, 1, 0, 0, 0);
  expect_v6("tcp://[::1]:1", CGNET__NET_TCP, "::1", 1, 0, 0, 0, 0);
  expect_v6("tcp://[2001:db8::a:b]:443", CGNET__NET_TCP, "2001:db8::a:b", 443, 0, 0, 0, 0);
  expect_v6("tcp6://[::ffff:1.2.3.4]:7", CGNET__NET_TCP6, "::ffff:1.2.3.4", 7, 1, 0, 0, 0);
  expect_v6("tcp://[::]:65535", CGNET__NET_TCP, "::", 65535, 0, 0, 0, 0);
}

static void valid_zone(void **state) {
  (void)state;
  unsigned lo = if_nametoindex("lo");
  assert_true(lo > 0);
  expect_v6("tcp://[fe80::1%lo]:80", CGNET__NET_TCP, "fe80::1", 80, 0, 0, 0, lo);
  expect_v6("tcp6://[fe80::1%lo]:80", CGNET__NET_TCP6, "fe80::1", 80, 1, 0, 0, lo);
  expect_v6("tcp://[fe80::1%1]:80", CGNET__NET_TCP, "fe80::1", 80, 0, 0, 0, 1);
  expect_v6("tcp://[fe80::1%42]:80", CGNET__NET_TCP, "fe80::1", 80, 0, 0, 0, 42);
}

static void valid_hostname(void **state) {
  (void)state;
  cgnet__addr a;
  assert_int_equal(cgnet__addr_parse("tcp://localhost:80", &a), 0);
  assert_int_equal(a.net, CGNET__NET_TCP);
  assert_int_equal(a.wildcard, 0);
  assert_int_equal(a.dual_stack, 0);
  assert_int_equal(a.v6only, 0);
  if (a.sa.ss_family == AF_INET) {
    assert_int_equal(a.salen, sizeof(struct sockaddr_in));
    assert_int_equal(ntohl(as_v4(&a)->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(as_v4(&a)->sin_port), 80);
  } else {
    assert_int_equal(a.sa.ss_family, AF_INET6);
    assert_true(IN6_IS_ADDR_LOOPBACK(&as_v6(&a)->sin6_addr));
    assert_int_equal(ntohs(as_v6(&a)->sin6_port), 80);
  }
  /* tcp4 restricts the family. */
  assert_int_equal(cgnet__addr_parse("tcp4://localhost:8080", &a), 0);
  assert_int_equal(a.sa.ss_family, AF_INET);
  assert_int_equal(ntohl(as_v4(&a)->sin_addr.s_addr), INADDR_LOOPBACK);
  assert_int_equal(ntohs(as_v4(&a)->sin_port), 8080);
}

/* ---- udp ---- */

static void valid_udp(void **state) {
  (void)state;
  expect_v4("udp://127.0.0.1:9001", CGNET__NET_UDP, "127.0.0.1", 9001, 0);
  expect_v4("udp4://:53", CGNET__NET_UDP4, "0.0.0.0", 53, 1);
  expect_v6("udp6://[::1]:0", CGNET__NET_UDP6, "::1", 0, 1, 0, 0, 0);
  expect_v6("udp://:7", CGNET__NET_UDP, "::", 7, 0, 1, 1, 0);
  expect_v6("udp6://:7", CGNET__NET_UDP6, "::", 7, 1, 1, 0, 0);
  expect_v6("udp://[::]:7", CGNET__NET_UDP, "::", 7, 0, 0, 0, 0);
  expect_v4("udp://239.1.2.3:5000", CGNET__NET_UDP, "239.1.2.3", 5000, 0);
  cgnet__addr a;
  assert_int_equal(cgnet__addr_parse("udp://127.0.0.1:1", &a), 0);
  assert_int_equal(a.socktype, SOCK_DGRAM);
  assert_int_equal(cgnet__addr_parse("udp4://localhost:1", &a), 0);
  assert_int_equal(a.socktype, SOCK_DGRAM);
  assert_int_equal(a.sa.ss_family, AF_INET);
  assert_int_equal(cgnet__addr_parse("tcp://127.0.0.1:1", &a), 0);
  assert_int_equal(a.socktype, SOCK_STREAM);
}

static void bad_udp(void **state) {
  (void)state;
  expect_err("udp://127.0.0.1", CGNET_EBADPORT);
  expect_err("udp://127.0.0.1:65536", CGNET_EBADPORT);
  expect_err("udp://127.0.0.1:x", CGNET_EBADPORT);
  expect_err("udp://", CGNET_EBADPORT);
  expect_err("udp://::1:80", CGNET_EBADADDR);
  expect_err("udp://[::1:80", CGNET_EBADADDR);
  expect_err("udp://300.1.1.1:80", CGNET_EBADADDR);
  expect_err("udp4://[::1]:80", CGNET_EADDRFAMILY);
  expect_err("udp6://127.0.0.1:80", CGNET_EADDRFAMILY);
}

/* ---- udp options ---- */

static void valid_udp_options(void **state) {
  (void)state;
  expect_v4("udp://127.0.0.1:9001?sessions=1", CGNET__NET_UDP, "127.0.0.1", 9001, 0);
  expect_v6("udp6://[::1]:7?sessions=0", CGNET__NET_UDP6, "::1", 7, 1, 0, 0, 0);
  expect_v6("udp://:9001?sessions=1", CGNET__NET_UDP, "::", 9001, 0, 1, 1, 0);
  cgnet__addr a;
  assert_int_equal(cgnet__addr_parse("udp://:9001?sessions=1", &a), 0);
  assert_int_equal(a.sessions, CGNET_ON);
  assert_int_equal(cgnet__addr_parse("udp4://:9001?sessions=0", &a), 0);
  assert_int_equal(a.sessions, CGNET_OFF);
  assert_int_equal(a.socktype, SOCK_DGRAM);
  assert_int_equal(cgnet__addr_parse("udp://:9001", &a), 0);
  assert_int_equal(a.sessions, CGNET_DEFAULT);
  /* A unix path is verbatim: its '?' is part of the name. */
  assert_int_equal(cgnet__addr_parse("unix:///tmp/a?sessions=1", &a), 0);
  assert_int_equal(a.sessions, CGNET_DEFAULT);
}

static void bad_udp_options(void **state) {
  (void)state;
  expect_err("udp://:9001?", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=2", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=10", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=on", CGNET_EBADOPTION);
  expect_err("udp://:9001?Sessions=1", CGNET_EBADOPTION);
  expect_err("udp://:9001?session=1", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessionsx=1", CGNET_EBADOPTION);
  expect_err("udp://:9001?=1", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=1&", CGNET_EBADOPTION);
  expect_err("udp://:9001?&sessions=1", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=1&sessions=1", CGNET_EBADOPTION);
  expect_err("udp://:9001?sessions=1?sessions=1", CGNET_EBADOPTION);
  expect_err("tcp://:9001?sessions=1", CGNET_EBADOPTION); /* no options for tcp */
  expect_err("tcp4://127.0.0.1:80?", CGNET_EBADOPTION);
  /* The address before the query is still checked. */
  expect_err("udp://:x?sessions=1", CGNET_EBADPORT);
  expect_err("udp://[::1?sessions=1]:80", CGNET_EBADOPTION);
  expect_err("udp://300.1.1.1:80?sessions=1", CGNET_EBADADDR);
}

/* ---- unix ---- */

static const struct sockaddr_un *as_un(const cgnet__addr *a) {
  return (const struct sockaddr_un *)(const void *)&a->sa;
}

static void expect_unix(const char *str, const char *path, int abstract) {
  cgnet__addr a;
  int rc = cgnet__addr_parse(str, &a);
  if (rc != 0) fail_msg("%s: rc %d", str, rc);
  size_t n = strlen(path), off = offsetof(struct sockaddr_un, sun_path);
  assert_int_equal(a.net, CGNET__NET_UNIX);
  assert_int_equal(a.socktype, SOCK_STREAM);
  assert_int_equal(a.sa.ss_family, AF_UNIX);
  assert_int_equal(a.abstract, abstract);
  if (abstract) { /* leading NUL, the name, no trailing NUL */
    assert_int_equal(a.salen, off + 1 + n);
    assert_int_equal(as_un(&a)->sun_path[0], '\0');
    assert_memory_equal(as_un(&a)->sun_path + 1, path, n);
  } else {
    assert_int_equal(a.salen, off + n + 1);
    assert_string_equal(as_un(&a)->sun_path, path);
  }
  char buf[128];
  int len = cgnet_format_addr((const struct sockaddr *)&a.sa, a.salen, buf, sizeof buf);
  assert_int_equal(len, (int)n + (abstract ? 1 : 0));
  if (abstract) {
    assert_int_equal(buf[0], '@');
    assert_string_equal(buf + 1, path);
  } else {
    assert_string_equal(buf, path);
  }
}

static void valid_unix(void **state) {
  (void)state;
  expect_unix("unix:///tmp/echo.sock", "/tmp/echo.sock", 0);
  expect_unix("unix://rel.sock", "rel.sock", 0); /* relative, as in Go */
  expect_unix("unix://./a/b:c", "./a/b:c", 0);   /* no host:port grammar */
  expect_unix("unix://@cgnet-test", "cgnet-test", 1);
}

static void bad_unix(void **state) {
  (void)state;
  char s[256];
  size_t max = sizeof(((struct sockaddr_un *)0)->sun_path); /* 108 */
  expect_err("unix://", CGNET_EBADADDR);
  expect_err("unix://@", CGNET_EBADADDR);
  /* A path of max-1 bytes fits with its NUL; max bytes does not. */
  strcpy(s, "unix:///");
  memset(s + 8, 'p', max - 2);
  s[8 + max - 2] = '\0';
  expect_unix(s, s + 7, 0);
  strcpy(s + 8 + max - 2, "q");
  expect_err(s, CGNET_ENAMETOOLONG);
  /* An abstract name of max-1 bytes fits (after the leading NUL); max does not. */
  strcpy(s, "unix://@");
  memset(s + 8, 'n', max - 1);
  s[8 + max - 1] = '\0';
  expect_unix(s, s + 8, 1);
  strcpy(s + 8 + max - 1, "n");
  expect_err(s, CGNET_ENAMETOOLONG);
}

static void format_unix(void **state) {
  (void)state;
  struct sockaddr_un un;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  char buf[8];
  /* An unnamed peer: only the family. */
  assert_int_equal(cgnet_format_addr((struct sockaddr *)&un, sizeof(sa_family_t), buf, 8),
                   0);
  assert_string_equal(buf, "");
  strcpy(un.sun_path, "/a/very/long/path");
  assert_int_equal(cgnet_format_addr((struct sockaddr *)&un, sizeof un, buf, sizeof buf),
                   CGNET_ENOBUFS);
  char big[128];
  assert_int_equal(cgnet_format_addr((struct sockaddr *)&un, sizeof un, big, sizeof big),
                   17);
  assert_string_equal(big, "/a/very/long/path");
}

/* ---- malformed forms ---- */

static void bad_scheme(void **state) {
  (void)state;
  expect_err(NULL, CGNET_EBADSCHEME);
  expect_err("", CGNET_EBADSCHEME);
  expect_err("9000", CGNET_EBADSCHEME);
  expect_err(":9000", CGNET_EBADSCHEME);
  expect_err("127.0.0.1:9000", CGNET_EBADSCHEME);
  expect_err("http://x:1", CGNET_EBADSCHEME);
  expect_err("tcp:/x:1", CGNET_EBADSCHEME);
  expect_err("tcp:x:1", CGNET_EBADSCHEME);
  expect_err("TCP://1.2.3.4:1", CGNET_EBADSCHEME); /* schemes are lower case */
  expect_err("Tcp4://1.2.3.4:1", CGNET_EBADSCHEME);
  expect_err("tcp5://1.2.3.4:1", CGNET_EBADSCHEME);
  expect_err("udp5://1.2.3.4:1", CGNET_EBADSCHEME);
  expect_err("UDP://1.2.3.4:1", CGNET_EBADSCHEME);
  expect_err("unix:/tmp/x.sock", CGNET_EBADSCHEME);
  expect_err("unixgram:///tmp/x.sock", CGNET_EBADSCHEME);
  expect_err(" tcp://1.2.3.4:1", CGNET_EBADSCHEME);
  expect_err("tcp", CGNET_EBADSCHEME);
}

static void bad_port(void **state) {
  (void)state;
  expect_err("tcp://127.0.0.1", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:65536", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:99999", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:000080", CGNET_EBADPORT); /* six digits */
  expect_err("tcp://127.0.0.1:-1", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:+80", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1: 80", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:80 ", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:9x", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:0x50", CGNET_EBADPORT);
  expect_err("tcp://127.0.0.1:80/x", CGNET_EBADPORT);
  expect_err("tcp://[::1]", CGNET_EBADPORT);
  expect_err("tcp://[::1]:", CGNET_EBADPORT);
  expect_err("tcp://", CGNET_EBADPORT);
  expect_err("tcp://:", CGNET_EBADPORT);
  expect_err("tcp6://", CGNET_EBADPORT);
  expect_err("tcp://localhost", CGNET_EBADPORT);
}

static void bad_host(void **state) {
  (void)state;
  expect_err("tcp://[::1:80", CGNET_EBADADDR);
  expect_err("tcp://::1:80", CGNET_EBADADDR);
  expect_err("tcp://::1", CGNET_EBADADDR);
  expect_err("tcp://[::1]x:80", CGNET_EBADADDR);
  expect_err("tcp://[::1]]:80", CGNET_EBADADDR);
  expect_err("tcp://[]:80", CGNET_EBADADDR);
  expect_err("tcp://[127.0.0.1]:80", CGNET_EBADADDR);
  expect_err("tcp://[localhost]:80", CGNET_EBADADDR);
  expect_err("tcp://[::g]:80", CGNET_EBADADDR);
  expect_err("tcp://[fe80::1%]:80", CGNET_EBADADDR);
  expect_err("tcp://[fe80::1%no-such-if0]:80", CGNET_EBADADDR);
  expect_err("tcp://[fe80::1%99999999999]:80", CGNET_EBADADDR);
  expect_err("tcp://fe80::1%lo:80", CGNET_EBADADDR);
  expect_err("tcp://256.1.1.1:80", CGNET_EBADADDR);
  expect_err("tcp://1.2.3:80", CGNET_EBADADDR);
  expect_err("tcp://1.2.3.4.5:80", CGNET_EBADADDR);
  expect_err("tcp://1..2.3:80", CGNET_EBADADDR);
  expect_err("tcp://127.0.0.1:80:80", CGNET_EBADADDR);
  expect_err("tcp://host name:80", CGNET_EBADADDR);
  expect_err("tcp://a/b:80", CGNET_EBADADDR);
  expect_err("tcp://]:80", CGNET_EBADADDR);
}

static void bad_family(void **state) {
  (void)state;
  expect_err("tcp4://[::1]:80", CGNET_EADDRFAMILY);
  expect_err("tcp4://[::]:80", CGNET_EADDRFAMILY);
  expect_err("tcp4://[fe80::1%lo]:80", CGNET_EADDRFAMILY);
  expect_err("tcp6://127.0.0.1:80", CGNET_EADDRFAMILY);
  expect_err("tcp6://0.0.0.0:80", CGNET_EADDRFAMILY);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bad_resolve(void **state) {
  (void)state;
  double t0 = now_s();
  expect_err("tcp://no-such-host.invalid:80", CGNET_ERESOLVE);
  /* Must not hang on a resolver timeout (the test machine has no network). */
  assert_true(now_s() - t0 < 5.0);
}

static void bad_long(void **state) {
  (void)state;
  static char s[1 << 20];
  /* A host of 300 characters (only the length is wrong). */
  strcpy(s, "tcp://");
  memset(s + 6, 'a', 300);
  strcpy(s + 306, ":80");
  expect_err(s, CGNET_EBADADDR);
  /* A 256-character IPv6-ish bracketed host. */
  strcpy(s, "tcp://[");
  memset(s + 7, '1', 256);
  strcpy(s + 263, "]:80");
  expect_err(s, CGNET_EBADADDR);
  /* A megabyte of host, then of port digits, then of garbage. */
  strcpy(s, "tcp://");
  memset(s + 6, 'x', sizeof(s) - 16);
  strcpy(s + sizeof(s) - 10, ":80");
  expect_err(s, CGNET_EBADADDR);
  strcpy(s, "tcp://1.2.3.4:");
  memset(s + 14, '9', sizeof(s) - 15);
  s[sizeof(s) - 1] = '\0';
  expect_err(s, CGNET_EBADPORT);
  memset(s, '[', sizeof(s) - 1);
  expect_err(s, CGNET_EBADSCHEME);
  memcpy(s, "tcp://", 6);
  expect_err(s, CGNET_EBADADDR);
}

static void null_out(void **state) {
  (void)state;
  assert_int_equal(cgnet__addr_parse("tcp://:80", NULL), CGNET_EINVAL);
}

/*
 * Mutations and truncations of valid addresses never crash and return a documented code.
 * The seeds hold no letters in the host, and mutations only insert digits and
 * punctuation, so no mutant is a host name that would go to the resolver.
 */
static int check_any(const char *str) {
  cgnet__addr a;
  int rc = cgnet__addr_parse(str, &a);
  if (rc == 0) {
    assert_true(a.salen == sizeof(struct sockaddr_in) ||
                a.salen == sizeof(struct sockaddr_in6));
    assert_int_equal(a.sa.ss_family,
                     a.salen == sizeof(struct sockaddr_in) ? AF_INET : AF_INET6);
  } else if (rc != CGNET_EBADSCHEME && rc != CGNET_EBADADDR && rc != CGNET_EBADPORT &&
             rc != CGNET_EADDRFAMILY && rc != CGNET_EBADOPTION) {
    fail_msg("\"%s\": unexpected %d", str, rc);
  }
  return rc;
}

static void mutations(void **state) {
  (void)state;
  static const char *seeds[] = {
      "tcp://:9000",
      "tcp4://127.0.0.1:65535",
      "tcp6://[::1]:9000",
      "tcp://[1::2%1]:80",
      "tcp://10.0.0.1:1",
      "tcp6://[::ffff:1.2.3.4]:7",
      "tcp4://:0",
      "tcp://[::]:443",
      "udp://:9001?sessions=1",
      "udp6://[::1]:7?sessions=0",
  };
  static const char alphabet[] = ":[]%./0123456789?&=";
  uint32_t x = 12345;
  char buf[64];
  for (size_t s = 0; s < CGNET__ARRAY_LEN(seeds); s++) {
    size_t n = strlen(seeds[s]);
    for (size_t cut = 0; cut <= n; cut++) { /* every prefix */
      memcpy(buf, seeds[s], cut);
      buf[cut] = '\0';
      int rc = check_any(buf);
      if (cut == n) assert_int_equal(rc, 0);
      if (cut < 6) assert_int_equal(rc, CGNET_EBADSCHEME);
    }
    for (int it = 0; it < 3000; it++) {
      strcpy(buf, seeds[s]);
      int k = 1 + (int)(x % 3);
      for (int j = 0; j < k; j++) {
        x = x * 1103515245u + 12345u;
        size_t pos = (x >> 8) % n;
        x = x * 1103515245u + 12345u;
        buf[pos] = alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
      }
      check_any(buf);
    }
  }
}

/* tls://, tls4://, tls6:// are the tcp forms with `tls` set; the host as written is what
 * a TLS client names (SNI) and verifies. */
static void valid_tls(void **state) {
  (void)state;
  expect_v4("tls://127.0.0.1:443", CGNET__NET_TCP, "127.0.0.1", 443, 0);
  expect_v4("tls4://:8443", CGNET__NET_TCP4, "0.0.0.0", 8443, 1);
  expect_v6("tls6://[::1]:443", CGNET__NET_TCP6, "::1", 443, 1, 0, 0, 0);
  cgnet__addr a;
  assert_int_equal(cgnet__addr_parse("tls://127.0.0.1:1", &a), 0);
  assert_int_equal(a.tls, 1);
  assert_int_equal(a.socktype, SOCK_STREAM);
  assert_int_equal(cgnet__addr_parse("tcp://127.0.0.1:1", &a), 0);
  assert_int_equal(a.tls, 0);
  expect_err("tls4://[::1]:443", CGNET_EADDRFAMILY);
  expect_err("tls://127.0.0.1", CGNET_EBADPORT);
  expect_err("tlsx://127.0.0.1:1", CGNET_EBADSCHEME);

  char host[64];
  assert_int_equal(cgnet__addr_host("tls://example.com:443", host, sizeof host), 0);
  assert_string_equal(host, "example.com");
  assert_int_equal(cgnet__addr_host("tls://[fe80::1%lo]:443", host, sizeof host), 0);
  assert_string_equal(host, "fe80::1");
  assert_int_equal(cgnet__addr_host("tls://127.0.0.1:443", host, sizeof host), 0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(cgnet__addr_host("tls://averylongname.test:1", host, 8),
                   CGNET_ENAMETOOLONG);
  assert_int_equal(cgnet__addr_host("unix:///tmp/x", host, sizeof host), CGNET_EBADADDR);
  assert_int_equal(cgnet__addr_host("nope", host, sizeof host), CGNET_EBADSCHEME);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_tls),         cmocka_unit_test(valid_wildcards),
      cmocka_unit_test(valid_ipv4),        cmocka_unit_test(valid_ipv6),
      cmocka_unit_test(valid_zone),        cmocka_unit_test(valid_hostname),
      cmocka_unit_test(bad_scheme),        cmocka_unit_test(bad_port),
      cmocka_unit_test(bad_host),          cmocka_unit_test(bad_family),
      cmocka_unit_test(bad_resolve),       cmocka_unit_test(bad_long),
      cmocka_unit_test(null_out),          cmocka_unit_test(mutations),
      cmocka_unit_test(valid_udp),         cmocka_unit_test(bad_udp),
      cmocka_unit_test(valid_udp_options), cmocka_unit_test(bad_udp_options),
      cmocka_unit_test(valid_unix),        cmocka_unit_test(bad_unix),
      cmocka_unit_test(format_unix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
