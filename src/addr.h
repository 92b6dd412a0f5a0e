/* Parsing of cgnet address strings ("tcp://127.0.0.1:9000") into socket addresses. */
#ifndef CGNET_ADDR_H
#define CGNET_ADDR_H

#include <sys/socket.h>

typedef enum cgnet__net {
  CGNET__NET_TCP = 1, /* tcp://  : IPv4 or IPv6 */
  CGNET__NET_TCP4,    /* tcp4:// : IPv4 only */
  CGNET__NET_TCP6,    /* tcp6:// : IPv6 only (IPV6_V6ONLY) */
  CGNET__NET_UDP,     /* udp://  : IPv4 or IPv6 */
  CGNET__NET_UDP4,    /* udp4:// : IPv4 only */
  CGNET__NET_UDP6,    /* udp6:// : IPv6 only (IPV6_V6ONLY) */
  CGNET__NET_UNIX,    /* unix:// : a stream Unix domain socket (a path, or @abstract) */
} cgnet__net;

typedef struct cgnet__addr {
  cgnet__net net;
  int socktype; /* SOCK_STREAM (tcp*, unix) or SOCK_DGRAM (udp*) */
  /* AF_INET or AF_INET6 with the port in network order, or AF_UNIX (a sockaddr_un: a
   * NUL-terminated path, or for an abstract name a leading NUL and no trailing one, with
   * salen = offsetof(sun_path) + 1 + the name's length). */
  struct sockaddr_storage sa;
  socklen_t salen;
  int v6only;     /* set IPV6_V6ONLY on an AF_INET6 socket (tcp6, udp6) */
  int wildcard;   /* the host was empty: bind to every address */
  int dual_stack; /* tcp:// or udp:// with empty host: bind [::] with v6only off; a caller
                     may fall back to 0.0.0.0 when the system has no IPv6 */
  int abstract;   /* unix://@name: Linux abstract namespace, no file */
  /* "?sessions=1" / "?sessions=0" after a udp address: CGNET_ON / CGNET_OFF; not given:
   * CGNET_DEFAULT (options.udp_sessions decides). */
  int sessions;
  int tls; /* tls://, tls4://, tls6://: TLS over TCP (net is TCP, TCP4, TCP6) */
} cgnet__addr;

/*
 * Parse "SCHEME://HOST:PORT" or "unix://PATH". Schemes: tcp, tcp4, tcp6, udp, udp4, udp6,
 * tls, tls4, tls6, unix (lower case). The udp and tls forms take the same HOST:PORT
 * grammar as their tcp twins; a tls address is a tcp one with `tls` set.
 * unix://PATH: everything after "//" is the path, taken verbatim ("unix:///tmp/s.sock" is
 * /tmp/s.sock; a relative path such as "unix://run/s.sock" is allowed, as in Go, and is
 * relative to the working directory at bind time); "unix://@name" is the abstract name
 * "name". An empty path or name is CGNET_EBADADDR; one that does not fit sun_path (107
 * bytes of path plus its NUL; 107 bytes of abstract name) is CGNET_ENAMETOOLONG.
 * For the IP schemes: HOST: empty (every
 * address), an IPv4 literal, a bracketed IPv6 literal ("[::1]", "[fe80::1%lo]"), or a host
 * name resolved with getaddrinfo (tcp4/tcp6 restrict the family). PORT: 0..65535 decimal.
 * Returns 0 or: CGNET_EBADSCHEME (NULL, no "://", unknown scheme), CGNET_EBADADDR
 * (unbalanced brackets, unbracketed IPv6, bad literal, trailing junk after "]"),
 * CGNET_EBADPORT (missing, empty, non-digit, > 65535), CGNET_EADDRFAMILY (tcp4 with an
 * IPv6 literal or tcp6 with an IPv4 literal), CGNET_ERESOLVE (name did not resolve).
 *
 * The udp schemes take options after the port: "?KEY=VALUE[&KEY=VALUE...]". The one key
 * is "sessions" with the value 0 or 1. An empty query, an unknown key, a key given
 * twice, a missing or other value, or a query on a tcp address is CGNET_EBADOPTION. A
 * unix path is taken verbatim, '?' included.
 */
int cgnet__addr_parse(const char *str, cgnet__addr *out);

/* The HOST of an IP address string as written (a name, or a literal without brackets
 * and zone), into buf: what a TLS client sends as SNI and checks the certificate
 * against. 0, a parse error, or CGNET_ENAMETOOLONG. */
int cgnet__addr_host(const char *str, char *buf, size_t cap);

#endif
