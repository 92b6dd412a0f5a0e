/*
 * Load balancers. cgnet__lb_pick runs on the accepting thread only (the round-robin
 * cursor is not shared); the load callback may read counters other loops update.
 */
#include "lb.h"

#include <netinet/in.h>

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

void cgnet__lb_init(cgnet__lb *lb, cgnet_lb kind, int n, cgnet__lb_load_fn load,
                    void *ctx) {
  lb->kind = kind;
  lb->n = n < 1 ? 1 : n;
  lb->next = 0;
  lb->load = load;
  lb->ctx = ctx;
}

static int pick_round_robin(cgnet__lb *lb) {
  unsigned i = lb->next % (unsigned)lb->n;
  lb->next = i + 1 == (unsigned)lb->n ? 0 : i + 1;
  return (int)i;
}

static int pick_least_conn(cgnet__lb *lb) {
  if (!lb->load) return pick_round_robin(lb);
  int best = 0;
  size_t min = lb->load(lb->ctx, 0);
  for (int i = 1; i < lb->n && min > 0; i++) {
    size_t l = lb->load(lb->ctx, i);
    if (l < min) {
      min = l;
      best = i;
    }
  }
  return best;
}

static uint32_t fnv1a(uint32_t h, const void *data, size_t len) {
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    h = (h ^ p[i]) * FNV_PRIME;
  return h;
}

/*
 * FNV-1a over the IP bytes and the port (network order). The low bits of FNV-1a depend
 * only on the low bits of each input byte, so peers whose addresses differ only in high
 * bits (10.0.0.0, 10.0.0.4, 10.0.0.8, ...) would share a loop when n is a power of two;
 * folding the well-mixed high half in before the modulo fixes that.
 */
static uint32_t hash_peer(const struct sockaddr *peer, socklen_t len) {
  uint32_t h = FNV_OFFSET;
  if (!peer) len = 0;
  if (len >= (socklen_t)sizeof(struct sockaddr_in) && peer->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)peer;
    h = fnv1a(h, &sin->sin_addr, sizeof(sin->sin_addr));
    h = fnv1a(h, &sin->sin_port, sizeof(sin->sin_port));
  } else if (len >= (socklen_t)sizeof(struct sockaddr_in6) && peer->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)peer;
    h = fnv1a(h, &sin6->sin6_addr, sizeof(sin6->sin6_addr));
    h = fnv1a(h, &sin6->sin6_port, sizeof(sin6->sin6_port));
  }
  return h ^ (h >> 16);
}

int cgnet__lb_pick(cgnet__lb *lb, const struct sockaddr *peer, socklen_t len) {
  if (lb->n <= 1) return 0;
  switch (lb->kind) {
  case CGNET_LB_LEAST_CONN:
    return pick_least_conn(lb);
  case CGNET_LB_SOURCE_HASH:
    /* A Unix peer is usually unnamed: a hash would send every one to the same loop. */
    if (peer && len >= (socklen_t)sizeof(sa_family_t) && peer->sa_family == AF_UNIX)
      return pick_round_robin(lb);
    return (int)(hash_peer(peer, len) % (unsigned)lb->n);
  case CGNET_LB_ROUND_ROBIN:
  default:
    return pick_round_robin(lb);
  }
}
