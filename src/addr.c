/*
 * Address strings: "SCHEME://HOST:PORT" -> struct sockaddr. Any thread (host names block
 * in getaddrinfo, so the engine parses before its loops start).
 *
 * The grammar is Go's net.SplitHostPort with a scheme in front: the port follows the last
 * ':'; an IPv6 host must be bracketed; nothing may follow the port.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "cgnet.h"

#define HOST_MAX 255 /* longest host name (RFC 1035), and far above any literal */

typedef struct scheme {
  const char *prefix;
  size_t len;
  cgnet__net net;
  int tls; /* TLS over the stream */
} scheme;

static const scheme schemes[] = {
    {"tcp://", 6, CGNET__NET_TCP, 0},   {"tcp4://", 7, CGNET__NET_TCP4, 0},
    {"tcp6://", 7, CGNET__NET_TCP6, 0}, {"udp://", 6, CGNET__NET_UDP, 0},
    {"udp4://", 7, CGNET__NET_UDP4, 0}, {"udp6://", 7, CGNET__NET_UDP6, 0},
    {"unix://", 7, CGNET__NET_UNIX, 0}, {"tls://", 6, CGNET__NET_TCP, 1},
    {"tls4://", 7, CGNET__NET_TCP4, 1}, {"tls6://", 7, CGNET__NET_TCP6, 1},
};

/* The family a scheme restricts the host to: 4, 6, or 0 (either). */
static int net_only(cgnet__net net) {
  if (net == CGNET__NET_TCP4 || net == CGNET__NET_UDP4) return 4;
  if (net == CGNET__NET_TCP6 || net == CGNET__NET_UDP6) return 6;
  return 0;
}

static int parse_scheme(const char *str, cgnet__net *net, int *tls, const char **rest) {
  for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
    if (strncmp(str, schemes[i].prefix, schemes[i].len) == 0) {
      *net = schemes[i].net;
      *tls = schemes[i].tls;
      *rest = str + schemes[i].len;
      return 0;
    }
  }
  return CGNET_EBADSCHEME;
}

/* 1..5 decimal digits (leading zeros allowed), <= 65535, and nothing after them. */
static int parse_port(const char *s, uint16_t *port) {
  unsigned v = 0;
  size_t i = 0;
  for (; s[i] >= '0' && s[i] <= '9'; i++) {
    if (i == 5) return CGNET_EBADPORT;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (i == 0 || s[i] != '\0' || v > 65535) return CGNET_EBADPORT;
  *port = (uint16_t)v;
  return 0;
}

/*
 * Split rest into host [hbeg, hend) and the port text. Bracketed hosts lose their
 * brackets and set *bracketed.
 */
static int split_host_port(const char *rest, const char **hbeg, size_t *hlen,
                           const char **port, int *bracketed) {
  if (rest[0] == '[') {
    const char *close = strchr(rest, ']');
    if (!close) return CGNET_EBADADDR;
    *hbeg = rest + 1;
    *hlen = (size_t)(close - rest - 1);
    *bracketed = 1;
    if (close[1] == '\0') return CGNET_EBADPORT; /* "[::1]": port missing */
    if (close[1] != ':') return CGNET_EBADADDR;  /* "[::1]x:80" */
    *port = close + 2;
    return 0;
  }
  const char *colon = strrchr(rest, ':');
  if (!colon) return CGNET_EBADPORT;
  *hbeg = rest;
  *hlen = (size_t)(colon - rest);
  *bracketed = 0;
  *port = colon + 1;
  return 0;
}

static void set_v4(cgnet__addr *out, const struct in_addr *ip, uint16_t port) {
  struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  sin->sin_addr = *ip;
  out->salen = sizeof(*sin);
}

static void set_v6(cgnet__addr *out, const struct in6_addr *ip, uint32_t scope,
                   uint16_t port) {
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  sin6->sin6_addr = *ip;
  sin6->sin6_scope_id = scope;
  out->salen = sizeof(*sin6);
  out->v6only = net_only(out->net) == 6;
}

/* A zone id: an interface name or a decimal index. */
static int parse_zone(const char *zone, uint32_t *scope) {
  size_t n = strlen(zone);
  if (n == 0 || n >= IF_NAMESIZE) return CGNET_EBADADDR;
  if (zone[strspn(zone, "0123456789")] == '\0') {
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
      v = v * 10 + (unsigned long)(zone[i] - '0');
      if (v > UINT32_MAX) return CGNET_EBADADDR;
    }
    *scope = (uint32_t)v;
    return 0;
  }
  unsigned idx = if_nametoindex(zone);
  if (idx == 0) return CGNET_EBADADDR;
  *scope = idx;
  return 0;
}

/* host is the inside of "[...]": an IPv6 literal with an optional "%zone". */
static int parse_v6_literal(char *host, uint16_t port, cgnet__addr *out) {
  uint32_t scope = 0;
  char *pct = strchr(host, '%');
  if (pct) {
    *pct = '\0';
    int rc = parse_zone(pct + 1, &scope);
    if (rc) return rc;
  }
  struct in6_addr ip6;
  if (inet_pton(AF_INET6, host, &ip6) != 1) return CGNET_EBADADDR;
  if (net_only(out->net) == 4) return CGNET_EADDRFAMILY;
  set_v6(out, &ip6, scope, port);
  return 0;
}

static int is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_';
}

static int resolve(const char *host, uint16_t port, cgnet__addr *out) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  int only = net_only(out->net);
  hints.ai_family = only == 4 ? AF_INET : only == 6 ? AF_INET6 : AF_UNSPEC;
  hints.ai_socktype = out->socktype;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc != 0) return rc == EAI_MEMORY ? CGNET_ENOMEM : CGNET_ERESOLVE;
  rc = CGNET_ERESOLVE;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET && only != 6 &&
        ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
      set_v4(out, &((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr, port);
      rc = 0;
      break;
    }
    if (ai->ai_family == AF_INET6 && only != 4 &&
        ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
      const struct sockaddr_in6 *s6 =
          (const struct sockaddr_in6 *)(const void *)ai->ai_addr;
      set_v6(out, &s6->sin6_addr, s6->sin6_scope_id, port);
      rc = 0;
      break;
    }
  }
  freeaddrinfo(res);
  return rc;
}

static int parse_host(char *host, int bracketed, uint16_t port, cgnet__addr *out) {
  if (bracketed) return parse_v6_literal(host, port, out);

  if (host[0] == '\0') { /* every address */
    out->wildcard = 1;
    if (net_only(out->net) == 4) {
      struct in_addr any = {htonl(INADDR_ANY)};
      set_v4(out, &any, port);
    } else {
      set_v6(out, &in6addr_any, 0, port);
      out->dual_stack = net_only(out->net) == 0;
    }
    return 0;
  }

  /* Unbracketed IPv6 ("tcp://::1:80") and junk are not host names. */
  for (const char *c = host; *c; c++) {
    if (!is_name_char(*c)) return CGNET_EBADADDR;
  }

  /* Only digits and dots: it must be an IPv4 literal ("256.1.1.1" is malformed, not a
   * name to look up). */
  if (host[strspn(host, "0123456789.")] == '\0') {
    struct in_addr ip4;
    if (inet_pton(AF_INET, host, &ip4) != 1) return CGNET_EBADADDR;
    if (net_only(out->net) == 6) return CGNET_EADDRFAMILY;
    set_v4(out, &ip4, port);
    return 0;
  }
  return resolve(host, port, out);
}

static int is_udp(cgnet__net net) {
  return net == CGNET__NET_UDP || net == CGNET__NET_UDP4 || net == CGNET__NET_UDP6;
}

/* The value of "sessions": exactly "0" or "1". */
static int parse_sessions(const char *v, size_t n, int *out) {
  if (*out != CGNET_DEFAULT) return CGNET_EBADOPTION; /* given twice */
  if (n != 1 || (v[0] != '0' && v[0] != '1')) return CGNET_EBADOPTION;
  *out = v[0] == '1' ? CGNET_ON : CGNET_OFF;
  return 0;
}

/* One "KEY=VALUE" of n bytes. */
static int parse_option(const char *opt, size_t n, cgnet__addr *out) {
  const char *eq = memchr(opt, '=', n);
  if (!eq) return CGNET_EBADOPTION;
  size_t klen = (size_t)(eq - opt);
  const char *v = eq + 1;
  size_t vlen = n - klen - 1;
  if (klen == 8 && memcmp(opt, "sessions", 8) == 0)
    return parse_sessions(v, vlen, &out->sessions);
  return CGNET_EBADOPTION;
}

/* The query after '?': options separated by '&', none of them empty. */
static int parse_query(const char *q, cgnet__addr *out) {
  if (!is_udp(out->net)) return CGNET_EBADOPTION; /* only udp addresses take options */
  for (;;) {
    const char *amp = strchr(q, '&');
    size_t n = amp ? (size_t)(amp - q) : strlen(q);
    if (n == 0) return CGNET_EBADOPTION;
    int rc = parse_option(q, n, out);
    if (rc) return rc;
    if (!amp) return 0;
    q = amp + 1;
  }
}

/* "unix://PATH" or "unix://@NAME": the rest after "unix://" goes into a sockaddr_un. */
static int parse_unix(const char *rest, cgnet__addr *out) {
  struct sockaddr_un *sun = (struct sockaddr_un *)&out->sa;
  size_t n = strlen(rest);
  sun->sun_family = AF_UNIX;
  if (rest[0] == '@') { /* abstract: leading NUL, no trailing NUL */
    if (n == 1) return CGNET_EBADADDR;
    if (n > sizeof sun->sun_path) return CGNET_ENAMETOOLONG; /* '@' becomes the NUL */
    memcpy(sun->sun_path + 1, rest + 1, n - 1);
    out->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    out->abstract = 1;
    return 0;
  }
  if (n == 0) return CGNET_EBADADDR;
  if (n >= sizeof sun->sun_path) return CGNET_ENAMETOOLONG; /* room for the NUL */
  memcpy(sun->sun_path, rest, n + 1);
  out->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

int cgnet__addr_parse(const char *str, cgnet__addr *out) {
  if (!out) return CGNET_EINVAL;
  memset(out, 0, sizeof(*out));
  if (!str) return CGNET_EBADSCHEME;

  cgnet__net net;
  const char *rest;
  int tls;
  int rc = parse_scheme(str, &net, &tls, &rest);
  if (rc) return rc;
  if (net == CGNET__NET_UNIX) {
    out->net = net;
    out->socktype = SOCK_STREAM;
    rc = parse_unix(rest, out);
    if (rc) memset(out, 0, sizeof(*out));
    return rc;
  }

  /* The options go first, so that host and port parse from a copy without them. */
  char hostport[HOST_MAX + 16];
  const char *query = strchr(rest, '?');
  if (query) {
    size_t n = (size_t)(query - rest);
    if (n >= sizeof hostport) return CGNET_EBADADDR;
    memcpy(hostport, rest, n);
    hostport[n] = '\0';
    rest = hostport;
    out->net = net;
    rc = parse_query(query + 1, out);
    if (rc) {
      memset(out, 0, sizeof(*out));
      return rc;
    }
  }

  const char *hbeg, *ptext;
  size_t hlen;
  int bracketed;
  rc = split_host_port(rest, &hbeg, &hlen, &ptext, &bracketed);
  if (!rc && hlen > HOST_MAX) rc = CGNET_EBADADDR;
  uint16_t port;
  if (!rc) rc = parse_port(ptext, &port);
  if (rc) {
    memset(out, 0, sizeof(*out));
    return rc;
  }

  char host[HOST_MAX + 1];
  memcpy(host, hbeg, hlen);
  host[hlen] = '\0';
  out->net = net;
  out->socktype = is_udp(net) ? SOCK_DGRAM : SOCK_STREAM;
  rc = parse_host(host, bracketed, port, out);
  if (rc)
    memset(out, 0, sizeof(*out));
  else
    out->tls = tls;
  return rc;
}

int cgnet__addr_host(const char *str, char *buf, size_t cap) {
  cgnet__net net;
  const char *rest, *hbeg, *ptext;
  size_t hlen;
  int tls, bracketed;
  int rc = str ? parse_scheme(str, &net, &tls, &rest) : CGNET_EBADSCHEME;
  if (!rc && net == CGNET__NET_UNIX) rc = CGNET_EBADADDR;
  if (!rc) rc = split_host_port(rest, &hbeg, &hlen, &ptext, &bracketed);
  if (rc) return rc;
  if (hlen >= cap) return CGNET_ENAMETOOLONG;
  memcpy(buf, hbeg, hlen);
  buf[hlen] = '\0';
  /* A link-local zone ("fe80::1%lo") names our interface, not the server. */
  char *zone = bracketed ? strchr(buf, '%') : NULL;
  if (zone) *zone = '\0';
  return 0;
}
