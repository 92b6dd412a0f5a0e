/* Parsing of cgnet address strings ("tcp://127.0.0.1:9000") into socket addresses. */
#ifndef CGNET_ADDR_H
#define CGNET_ADDR_H

#include <sys/socket.h>

typedef enum cgnet__net {
  CGNET__NET_TCP = 1, /* tcp://  : IPv4 or IPv6 */
  CGNET__NET_TCP4,    /* tcp4:// : IPv4 only */
  CGNET__NET_TCP6,    /* tcp6:// : IPv6 only (IPV6_V6ONLY) */
} cgnet__net;

typedef struct cgnet__addr {
  cgnet__net net;
  struct sockaddr_storage sa; /* AF_INET or AF_INET6, port in network order */
  socklen_t salen;
  int v6only;     /* set IPV6_V6ONLY on an AF_INET6 socket (tcp6) */
  int wildcard;   /* the host was empty: bind to every address */
  int dual_stack; /* tcp:// with empty host: bind [::] with v6only off; a caller may fall
                     back to 0.0.0.0 when the system has no IPv6 */
} cgnet__addr;

/*
 * Parse "SCHEME://HOST:PORT". Schemes: tcp, tcp4, tcp6 (lower case). HOST: empty (every
 * address), an IPv4 literal, a bracketed IPv6 literal ("[::1]", "[fe80::1%lo]"), or a host
 * name resolved with getaddrinfo (tcp4/tcp6 restrict the family). PORT: 0..65535 decimal.
 * Returns 0 or: CGNET_EBADSCHEME (NULL, no "://", unknown scheme), CGNET_EBADADDR
 * (unbalanced brackets, unbracketed IPv6, bad literal, trailing junk after "]"),
 * CGNET_EBADPORT (missing, empty, non-digit, > 65535), CGNET_EADDRFAMILY (tcp4 with an
 * IPv6 literal or tcp6 with an IPv4 literal), CGNET_ERESOLVE (name did not resolve).
 */
int cgnet__addr_parse(const char *str, cgnet__addr *out);

#endif
