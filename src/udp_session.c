/*
 * UDP sessions: a conn per remote peer of a server's UDP socket (options.udp_sessions,
 * or "?sessions=1" on the address). Everything here runs on the loop thread that owns
 * the socket.
 *
 * The first datagram from a new (socket, remote address) opens a session: a conn of kind
 * CGNET__SESSION_DGRAM with no socket of its own (io.fd stays -1, so the close path never
 * touches the shared socket's registration), on_open, the engine's timeouts; each
 * datagram is then one on_traffic on it, and its writes queue one datagram each on the
 * socket's send queue (udp.c), which goes out with sendmmsg as before.
 *
 * Lookup is one probe sequence in a per-loop open-addressing table (linear probing,
 * deletion by backward shift, so no tombstones build up), keyed by the socket and the
 * peer's address and hashed with SipHash-1-3 under a key drawn at random for each
 * table: a sender who picks its source addresses cannot aim them at one chain. The table
 * stays between 1/8 and 1/2 full (at least MIN_SLOTS), so it grows and shrinks with the
 * sessions, and the sessions are bounded by max_udp_sessions (and max_connections).
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core.h"

#define MIN_SLOTS 16
#define REFUSE_LOG_INTERVAL_MS 1000

typedef struct session {
  cgnet_conn c;  /* must stay first: cgnet_conn_unref frees the session through it */
  cgnet__udp *u; /* the socket it shares with the socket's other peers */
  uint64_t hash; /* of (u, c.remote), kept so that the table never rehashes a key */
} session;

typedef struct slot {
  uint64_t hash;
  session *s; /* NULL: free */
} slot;

struct cgnet__session_table {
  slot *slots;
  size_t mask; /* slot count - 1 (a power of two) */
  size_t count;
  uint64_t k0, k1; /* the SipHash key */
  uint64_t last_refuse_log;
};

static session *session_of(cgnet_conn *c) {
  return (session *)(void *)c;
}

/* ---- the hash ------------------------------------------------------------------------ */

static inline uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

static inline void sip_round(uint64_t v[4]) {
  v[0] += v[1];
  v[1] = rotl(v[1], 13) ^ v[0];
  v[0] = rotl(v[0], 32);
  v[2] += v[3];
  v[3] = rotl(v[3], 16) ^ v[2];
  v[0] += v[3];
  v[3] = rotl(v[3], 21) ^ v[0];
  v[2] += v[1];
  v[1] = rotl(v[1], 17) ^ v[2];
  v[2] = rotl(v[2], 32);
}

/* SipHash-1-3 of n 64-bit words (the key material is built word-aligned). */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint64_t *w, size_t n) {
  uint64_t v[4] = {k0 ^ 0x736f6d6570736575ull, k1 ^ 0x646f72616e646f6dull,
                   k0 ^ 0x6c7967656e657261ull, k1 ^ 0x7465646279746573ull};
  for (size_t i = 0; i < n; i++) {
    v[3] ^= w[i];
    sip_round(v);
    v[0] ^= w[i];
  }
  uint64_t last = (uint64_t)(n * 8) << 56;
  v[3] ^= last;
  sip_round(v);
  v[0] ^= last;
  v[2] ^= 0xff;
  for (int r = 0; r < 3; r++)
    sip_round(v);
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* The parts of an address that name a peer: family, port, address and (IPv6) scope.
 * IPv6's flow label is left out: a peer may change it from one datagram to the next. */
static uint64_t hash_peer(const cgnet__session_table *t, const cgnet__udp *u,
                          const struct sockaddr_storage *sa) {
  uint64_t w[4] = {(uint64_t)(uintptr_t)u, 0, 0, 0};
  if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
    w[1] = (uint64_t)AF_INET6 << 48 | (uint64_t)s6->sin6_port << 32 | s6->sin6_scope_id;
    memcpy(&w[2], &s6->sin6_addr, 16);
    return siphash13(t->k0, t->k1, w, 4);
  }
  const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
  w[1] = (uint64_t)AF_INET << 48 | (uint64_t)s4->sin_port << 32 | s4->sin_addr.s_addr;
  return siphash13(t->k0, t->k1, w, 2);
}

static bool same_peer(const session *s, const cgnet__udp *u,
                      const struct sockaddr_storage *sa) {
  const struct sockaddr_storage *r = &s->c.remote;
  if (s->u != u || r->ss_family != sa->ss_family) return false;
  if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)r;
    const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)(const void *)sa;
    return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
           memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0;
  }
  const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)r;
  const struct sockaddr_in *b = (const struct sockaddr_in *)(const void *)sa;
  return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* ---- the table ----------------------------------------------------------------------- */

static void random_key(cgnet__session_table *t) {
  uint64_t k[2];
  if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
    /* No entropy yet (early boot): still different per table and per run. */
    k[0] = cgnet__now_ms() ^ (uint64_t)(uintptr_t)t;
    k[1] = rotl(k[0], 29) ^ (uint64_t)(uintptr_t)&k;
  }
  t->k0 = k[0];
  t->k1 = k[1];
}

static cgnet__session_table *table_new(void) {
  cgnet__session_table *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->slots = calloc(MIN_SLOTS, sizeof *t->slots);
  if (!t->slots) {
    free(t);
    return NULL;
  }
  t->mask = MIN_SLOTS - 1;
  random_key(t);
  return t;
}

static session *table_find(const cgnet__session_table *t, uint64_t h, const cgnet__udp *u,
                           const struct sockaddr_storage *sa) {
  for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
    const slot *sl = &t->slots[i];
    if (!sl->s) return NULL;
    if (sl->hash == h && same_peer(sl->s, u, sa)) return sl->s;
  }
}

static void place(slot *slots, size_t mask, uint64_t h, session *s) {
  size_t i = h & mask;
  while (slots[i].s)
    i = (i + 1) & mask;
  slots[i].hash = h;
  slots[i].s = s;
}

/* Move every entry into a table of `n` slots. CGNET_ENOMEM leaves it as it was. */
static int table_resize(cgnet__session_table *t, size_t n) {
  slot *fresh = calloc(n, sizeof *fresh);
  if (!fresh) return CGNET_ENOMEM;
  for (size_t i = 0; i <= t->mask; i++)
    if (t->slots[i].s) place(fresh, n - 1, t->slots[i].hash, t->slots[i].s);
  free(t->slots);
  t->slots = fresh;
  t->mask = n - 1;
  return 0;
}

/* Room for one more entry with the table at most half full. */
static int table_reserve(cgnet__session_table *t) {
  size_t n = t->mask + 1;
  if ((t->count + 1) * 2 <= n) return 0;
  return table_resize(t, n * 2);
}

static void table_insert(cgnet__session_table *t, session *s) {
  place(t->slots, t->mask, s->hash, s);
  t->count++;
}

/* Remove s; later entries of its probe run shift back over the hole, so that every
 * entry stays reachable from its home slot with no tombstone. */
static void table_remove(cgnet__session_table *t, const session *s) {
  size_t i = s->hash & t->mask;
  while (t->slots[i].s != s) {
    if (!t->slots[i].s) return; /* not there (never inserted) */
    i = (i + 1) & t->mask;
  }
  for (size_t j = (i + 1) & t->mask; t->slots[j].s; j = (j + 1) & t->mask) {
    size_t home = t->slots[j].hash & t->mask;
    /* j's entry may fill the hole at i unless its home lies cyclically in (i, j]. */
    bool home_after_hole = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (home_after_hole) continue;
    t->slots[i] = t->slots[j];
    i = j;
  }
  t->slots[i].s = NULL;
  t->count--;
  size_t n = t->mask + 1;
  if (n > MIN_SLOTS && t->count * 8 < n) (void)table_resize(t, n / 2); /* else stay */
}

void cgnet__loop_free_sessions(cgnet_loop *loop) {
  cgnet__session_table *t = loop->sessions;
  if (!t) return;
  free(t->slots);
  free(t);
  loop->sessions = NULL;
}

/* ---- opening ------------------------------------------------------------------------- */

static void log_refused(cgnet_loop *loop, const char *why, uint64_t n) {
  cgnet__session_table *t = loop->sessions;
  if (t->last_refuse_log && loop->now_ms - t->last_refuse_log < REFUSE_LOG_INTERVAL_MS)
    return;
  t->last_refuse_log = loop->now_ms;
  cgnet__log(loop->eng, CGNET_LOG_WARN,
             "udp: %s reached: datagram from a new peer dropped (%llu so far)", why,
             (unsigned long long)n);
}

/* Count a new session against max_udp_sessions and max_connections (add, then check:
 * exact with several loops opening at once). False, with the drop counted, if over. */
static bool admit(cgnet_loop *loop) {
  cgnet_engine *eng = loop->eng;
  const char *why = NULL;
  size_t before = atomic_fetch_add_explicit(&eng->nsessions, 1, memory_order_relaxed);
  if (before >= eng->o.max_udp_sessions) {
    why = "max_udp_sessions";
  } else {
    before = atomic_fetch_add_explicit(&eng->nconns, 1, memory_order_relaxed);
    if (!eng->o.max_connections || before < eng->o.max_connections) {
      atomic_fetch_add_explicit(&loop->nconns, 1, memory_order_relaxed);
      return true;
    }
    atomic_fetch_sub_explicit(&eng->nconns, 1, memory_order_relaxed);
    why = "max_connections";
  }
  atomic_fetch_sub_explicit(&eng->nsessions, 1, memory_order_relaxed);
  uint64_t n = atomic_fetch_add_explicit(&eng->sessions_refused, 1, memory_order_relaxed);
  log_refused(loop, why, n + 1);
  return false;
}

/* Undo admit for a session that never opened. */
static void unadmit(cgnet_loop *loop) {
  atomic_fetch_sub_explicit(&loop->eng->nsessions, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&loop->eng->nconns, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&loop->nconns, 1, memory_order_relaxed);
}

/* A session's conn: a server's conn with no socket of its own and no codec (a datagram
 * is a message already), read without backpressure (nothing is ever queued on it: its
 * writes go to the socket's queue), never registered with the backend (interest is
 * READ already, so the stream code never asks the backend for it). */
static session *new_session(cgnet__udp *u, uint64_t h, const struct sockaddr_storage *from,
                            socklen_t fromlen) {
  cgnet_loop *loop = cgnet__udp_loop(u);
  cgnet_engine *eng = loop->eng;
  session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  cgnet_conn *c = &s->c;
  cgnet__conn_init(c, loop, &eng->h, &eng->o, eng->ring_max, NULL, 1);
  c->kind = CGNET__SESSION_DGRAM;
  cgnet__conn_clear(c, CGNET__CF_EDGE | CGNET__CF_READ_BACKPRESSURE);
  c->codec = NULL;
  c->write_to_ms = 0; /* nothing is queued on the conn itself */
  c->interest = CGNET__POLL_READ;
  if (fromlen > sizeof c->remote) fromlen = sizeof c->remote;
  memcpy(&c->remote, from, fromlen);
  c->remote_len = fromlen;
  s->u = u;
  s->hash = h;
  return s;
}

/* Open a session for the peer: into the table and the loop's conns, then on_open. NULL
 * when it is refused, out of memory, or closed by on_open. */
static session *open_session(cgnet__udp *u, cgnet__session_table *t, uint64_t h,
                             const struct sockaddr_storage *from, socklen_t fromlen) {
  cgnet_loop *loop = cgnet__udp_loop(u);
  if (!admit(loop)) return NULL;
  session *s = table_reserve(t) == 0 ? new_session(u, h, from, fromlen) : NULL;
  if (!s) {
    unadmit(loop);
    cgnet__log(loop->eng, CGNET_LOG_ERROR, "udp: out of memory for a new session");
    return NULL;
  }
  table_insert(t, s);
  atomic_fetch_add_explicit(&loop->eng->sessions_opened, 1, memory_order_relaxed);
  cgnet_conn *c = &s->c;
  cgnet__conn_enter_loop(c);
  c->state = CGNET__CONN_OPEN;
  cgnet__conn_arm_timeouts(c);
  if (c->h->on_open) {
    c->in_callback++;
    cgnet__conn_after_callback(c, c->h->on_open(c));
  }
  return cgnet__conn_closed(c) ? NULL : s;
}

/* ---- datagrams ----------------------------------------------------------------------- */

/* One datagram is one on_traffic: the view is exactly its bytes, and whatever the
 * callback leaves unread is dropped with it (cleared before the common tail, which would
 * keep it for the next callback as a stream's). A SHUTDOWN goes back to the caller,
 * which stops the batch. */
static cgnet_action deliver_to(session *s, const uint8_t *data, size_t len) {
  cgnet_conn *c = &s->c;
  c->last_read_ms = c->loop->now_ms;
  if (!c->h->on_traffic) return CGNET_NONE;
  c->view = data;
  c->view_len = len;
  c->view_pos = 0;
  c->view_is_rbuf = true;
  c->view_set = true;
  c->in_callback++;
  cgnet_action a = c->h->on_traffic(c);
  c->view_set = false;
  c->view = NULL;
  c->view_len = c->view_pos = 0;
  cgnet__conn_after_callback(c, a == CGNET_SHUTDOWN ? CGNET_NONE : a);
  return a;
}

bool cgnet__session_deliver(cgnet__udp *u, const uint8_t *data, size_t len,
                            const struct sockaddr_storage *from, socklen_t fromlen,
                            cgnet_action *action) {
  cgnet_loop *loop = cgnet__udp_loop(u);
  if (from->ss_family != AF_INET && from->ss_family != AF_INET6) return false;
  if (!loop->sessions && !(loop->sessions = table_new())) {
    cgnet__log(loop->eng, CGNET_LOG_ERROR, "udp: out of memory for the session table");
    return false;
  }
  cgnet__session_table *t = loop->sessions;
  uint64_t h = hash_peer(t, u, from);
  session *s = table_find(t, h, u, from);
  if (!s && !(s = open_session(u, t, h, from, fromlen))) return false;
  *action = deliver_to(s, data, len);
  return true;
}

void cgnet__session_closed(cgnet_conn *c) {
  session *s = session_of(c);
  if (c->loop->sessions) table_remove(c->loop->sessions, s);
  atomic_fetch_sub_explicit(&c->loop->eng->nsessions, 1, memory_order_relaxed);
}

int cgnet__session_write(cgnet_conn *c, const void *data, size_t len) {
  if (cgnet__conn_closing(c)) return CGNET_ECLOSED;
  int err = cgnet__dgram_queue(session_of(c)->u, (const struct sockaddr *)&c->remote,
                               c->remote_len, data, len);
  if (!err) c->last_write_ms = c->loop->now_ms;
  return err;
}

/* The largest UDP payload (IPv4: 65535 - 8 - 20); the socket refuses anything larger. */
#define SESSION_MAX_DATAGRAM 65507

int cgnet__session_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt) {
  if (iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  if (iovcnt == 1) return cgnet__session_write(c, iov[0].iov_base, iov[0].iov_len);
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  if (total > SESSION_MAX_DATAGRAM) return CGNET_EMSGSIZE;
  /* The send queue copies the datagram; the pieces are gathered for it first (the
   * loop's read buffer may hold the view the caller is answering). */
  uint8_t *gathered = malloc(total ? total : 1);
  if (!gathered) return CGNET_ENOMEM;
  size_t off = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len) memcpy(gathered + off, iov[i].iov_base, iov[i].iov_len);
    off += iov[i].iov_len;
  }
  int err = cgnet__session_write(c, gathered, total);
  free(gathered);
  return err;
}

int cgnet__session_flush(cgnet_conn *c) {
  if (cgnet__conn_closed(c)) return CGNET_ECLOSED;
  cgnet__udp_flush(session_of(c)->u);
  return 0;
}

int cgnet__session_fd(const cgnet_conn *c) {
  if (cgnet__conn_closed(c)) return -1;
  return cgnet__udp_fd(session_of((cgnet_conn *)c)->u);
}
