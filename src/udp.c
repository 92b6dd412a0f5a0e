/*
 * UDP sockets: one per loop per udp address, receiving and sending in batches.
 * Everything here runs on the socket's loop thread, except cgnet_engine_send_to and
 * cgnet_engine_datagram_stats (any thread: a sendto() on a descriptor that stays open
 * until the engine is freed, and relaxed counters).
 *
 * Receive path. On readable, recvmmsg fills up to RX_BATCH slots (allocated at the first
 * read, so an idle socket costs nothing); each datagram is handed to on_traffic through
 * the socket's one datagram conn, whose view points at the slot in place. Nothing of a
 * datagram survives its callback (datagram boundaries), so unlike a stream conn nothing
 * is ever copied into an inbound buffer.
 *
 * Send path. Writes made in the callbacks append to the socket's queue (an array of
 * destinations + one byte buffer); after the batch the queue goes out with one sendmmsg
 * per TX_BATCH datagrams, where gnet makes one syscall per datagram. A full socket
 * (EAGAIN) leaves the rest queued and arms EPOLLOUT; the loop's pre-sleep flush also
 * covers sockets written outside a batch.
 *
 * Sessions. With sessions on for the socket's address, each datagram goes instead to its
 * sender's session conn (udp_session.c), whose writes join this same send queue.
 *
 * Connected datagram conns. A client's udp:// conn (dialed or enrolled) has a socket of
 * its own and is driven by the conn read path like a stream conn, with the datagram
 * reads and sends below (the last section).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

#define RX_BATCH 16             /* datagrams per recvmmsg */
#define RX_SLOT_MAX (64 * 1024) /* bytes per receive slot (at most) */
#define RX_BATCHES_PER_WAKEUP 4 /* then other descriptors get a turn */
#define TX_BATCH 64             /* datagrams per sendmmsg */
#define MAX_UDP4_PAYLOAD 65507  /* 65535 - IPv4 header - UDP header */
#define MAX_UDP6_PAYLOAD 65527  /* 65535 - UDP header (no jumbograms) */
#define DROP_LOG_INTERVAL_MS 1000

typedef struct dgram_out {
  size_t off, len; /* bytes in qbuf */
  socklen_t tolen;
  struct sockaddr_storage to;
} dgram_out;

struct cgnet__udp {
  cgnet__io io; /* kind CGNET__KIND_UDP; must stay first */
  cgnet_loop *loop;
  size_t index; /* which address of the engine */
  int family;   /* of the socket */
  uint32_t interest;
  bool stopped;        /* engine stopping: no longer watched */
  bool sessions;       /* datagrams go to per-peer sessions (udp_session.c) */
  cgnet__list pending; /* in loop->pending_udp while datagrams are queued */
  cgnet_conn dc;       /* the datagram conn handed to on_traffic */

  /* Receiving: RX_BATCH slots of `slot` bytes, allocated at the first read. */
  size_t slot;
  uint8_t *rx;
  struct mmsghdr *rmsg;
  struct iovec *riov;
  struct sockaddr_storage *rfrom;

  /* Sending: datagrams [qhead, qlen) of q, their bytes in qbuf. */
  dgram_out *q;
  size_t qhead, qlen, qcap;
  uint8_t *qbuf;
  size_t qbuf_len, qbuf_cap;
  size_t queued; /* bytes of the queued datagrams */

  uint64_t last_trunc_log, last_send_log;
  _Atomic uint64_t received, recv_calls, sent, send_calls, truncated, send_dropped;
};

static void bump(_Atomic uint64_t *v, uint64_t n) {
  atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

/* ---- opening ------------------------------------------------------------------------- */

static int join_group(int fd, const cgnet__addr *a, int ifindex) {
  if (a->sa.ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&a->sa;
    if (!IN_MULTICAST(ntohl(sin->sin_addr.s_addr))) return 0;
    struct ip_mreqn mr = {.imr_multiaddr = sin->sin_addr, .imr_ifindex = ifindex};
    return setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) < 0 ? -errno : 0;
  }
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)&a->sa;
  if (!IN6_IS_ADDR_MULTICAST(&s6->sin6_addr)) return 0;
  struct ipv6_mreq mr = {.ipv6mr_multiaddr = s6->sin6_addr,
                         .ipv6mr_interface = (unsigned)ifindex};
  return setsockopt(fd, IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP, &mr, sizeof mr) < 0 ? -errno : 0;
}

int cgnet__udp_open(const cgnet__addr *a, const cgnet_options *o, int reuse_port) {
  int fd = cgnet__listen(a, o, reuse_port); /* socket options and bind */
  if (fd < 0) return fd;
  int err = join_group(fd, a, o->multicast_interface_index);
  if (err) {
    close(fd);
    return err;
  }
  return fd;
}

static void init_dgram_conn(cgnet__udp *u) {
  cgnet_conn *c = &u->dc;
  cgnet_engine *eng = u->loop->eng;
  cgnet__conn_init(c, u->loop, &eng->h, &eng->o, eng->ring_max, NULL, 1);
  c->io.fd = u->io.fd; /* never registered itself: the socket is (as u->io) */
  c->kind = CGNET__SERVER_DGRAM;
  c->state = CGNET__CONN_OPEN; /* open for as long as its socket */
  c->codec = NULL;             /* a datagram is a message already */
  c->idle_to_ms = c->read_to_ms = c->write_to_ms = 0;
}

int cgnet__loop_add_udp(cgnet_loop *loop, size_t index, int fd) {
  if (!loop->udps) loop->udps = calloc(loop->eng->naddrs, sizeof *loop->udps);
  cgnet__udp *u = loop->udps ? calloc(1, sizeof *u) : NULL;
  if (!u) {
    close(fd);
    return CGNET_ENOMEM;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  u->family = getsockname(fd, (struct sockaddr *)&ss, &len) == 0 ? ss.ss_family : AF_INET;
  u->io.fd = fd;
  u->io.kind = CGNET__KIND_UDP;
  u->loop = loop;
  u->index = index;
  u->interest = CGNET__POLL_READ;
  int asked = loop->eng->addrs[index].sessions; /* "?sessions=" wins over the options */
  u->sessions = asked == CGNET_DEFAULT ? loop->eng->o.udp_sessions != 0 : asked == CGNET_ON;
  cgnet__list_init(&u->pending);
  init_dgram_conn(u);
  loop->udps[loop->nudps++] = u;
  return cgnet__backend_watch(&loop->backend, &u->io, u->interest);
}

/* ---- sending ------------------------------------------------------------------------- */

static void set_write_interest(cgnet__udp *u, bool on) {
  uint32_t want = CGNET__POLL_READ | (on ? CGNET__POLL_WRITE : 0);
  if (u->stopped || want == u->interest) return;
  if (cgnet__backend_watch(&u->loop->backend, &u->io, want) == 0) u->interest = want;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 16;
  while (n < need)
    n *= 2;
  void *q = realloc(*p, n * elem);
  if (!q) return CGNET_ENOMEM;
  *p = q;
  *cap = n;
  return 0;
}

int cgnet__dgram_queue(cgnet__udp *u, const struct sockaddr *to, socklen_t tolen,
                       const void *data, size_t len) {
  if (u->io.fd < 0 || u->stopped) return CGNET_ECLOSED;
  if ((len && !data) || !to || tolen < (socklen_t)sizeof(sa_family_t) ||
      tolen > (socklen_t)sizeof(struct sockaddr_storage))
    return CGNET_EINVAL;
  int family = to->sa_family;
  /* An IPv6 socket reaches IPv4 peers (unless v6only); an IPv4 one no IPv6 peer. */
  if (family != u->family && !(family == AF_INET && u->family == AF_INET6))
    return CGNET_EAFNOSUPPORT;
  if (len > (family == AF_INET6 ? MAX_UDP6_PAYLOAD : MAX_UDP4_PAYLOAD))
    return CGNET_EMSGSIZE;
  size_t limit = u->loop->eng->o.write_buffer_limit;
  if (len > limit || u->queued > limit - len) return CGNET_ENOBUFS;
  if (grow((void **)&u->q, &u->qcap, u->qlen + 1, sizeof *u->q) ||
      grow((void **)&u->qbuf, &u->qbuf_cap, u->qbuf_len + len, 1))
    return CGNET_ENOMEM;
  dgram_out *d = &u->q[u->qlen++];
  d->off = u->qbuf_len;
  d->len = len;
  d->tolen = tolen;
  memcpy(&d->to, to, tolen);
  if (len) memcpy(u->qbuf + u->qbuf_len, data, len);
  u->qbuf_len += len;
  u->queued += len;
  if (!cgnet__list_linked(&u->pending))
    cgnet__list_insert_tail(&u->loop->pending_udp, &u->pending);
  return 0;
}

/* The kernel refused the datagram at the head of the queue: drop it. */
static void drop_head(cgnet__udp *u, int err) {
  u->queued -= u->q[u->qhead].len;
  u->qhead++;
  bump(&u->send_dropped, 1);
  cgnet_loop *loop = u->loop;
  if (u->last_send_log == 0 || loop->now_ms - u->last_send_log >= DROP_LOG_INTERVAL_MS) {
    u->last_send_log = loop->now_ms;
    cgnet__log(
        loop->eng, CGNET_LOG_WARN, "udp send: %s; datagram dropped (%llu so far)",
        cgnet_strerror(err),
        (unsigned long long)atomic_load_explicit(&u->send_dropped, memory_order_relaxed));
  }
}

/* One sendmmsg of up to TX_BATCH queued datagrams. Returns how many went, or -errno. */
static int send_batch(cgnet__udp *u) {
  struct mmsghdr m[TX_BATCH];
  struct iovec iov[TX_BATCH];
  size_t n = u->qlen - u->qhead;
  if (n > TX_BATCH) n = TX_BATCH;
  memset(m, 0, n * sizeof m[0]);
  for (size_t i = 0; i < n; i++) {
    dgram_out *d = &u->q[u->qhead + i];
    iov[i].iov_base = u->qbuf + d->off;
    iov[i].iov_len = d->len;
    m[i].msg_hdr.msg_iov = &iov[i];
    m[i].msg_hdr.msg_iovlen = 1;
    m[i].msg_hdr.msg_name = &d->to;
    m[i].msg_hdr.msg_namelen = d->tolen;
  }
  return cgnet__sys_sendmmsg(u->io.fd, m, (unsigned)n);
}

/* Keep the unsent tail at the front, so the buffers do not creep forward. */
static void compact_queue(cgnet__udp *u) {
  if (u->qhead == u->qlen) {
    u->qhead = u->qlen = u->qbuf_len = u->queued = 0;
    return;
  }
  if (u->qhead == 0) return;
  size_t base = u->q[u->qhead].off;
  memmove(u->qbuf, u->qbuf + base, u->qbuf_len - base);
  u->qbuf_len -= base;
  memmove(u->q, u->q + u->qhead, (u->qlen - u->qhead) * sizeof *u->q);
  u->qlen -= u->qhead;
  u->qhead = 0;
  for (size_t i = 0; i < u->qlen; i++)
    u->q[i].off -= base;
}

void cgnet__udp_flush(cgnet__udp *u) {
  if (cgnet__list_linked(&u->pending)) cgnet__list_remove(&u->pending);
  bool full = false;
  while (u->qhead < u->qlen && u->io.fd >= 0) {
    int r = send_batch(u);
    if (r > 0) {
      for (int i = 0; i < r; i++)
        u->queued -= u->q[u->qhead + (size_t)i].len;
      u->qhead += (size_t)r;
      bump(&u->sent, (uint64_t)r);
      bump(&u->send_calls, 1);
    } else if (r == -EAGAIN || r == -EWOULDBLOCK || r == -ENOBUFS) {
      full = true;
      break;
    } else {
      drop_head(u, r);
    }
  }
  compact_queue(u);
  set_write_interest(u, full);
}

void cgnet__loop_flush_udp(cgnet_loop *loop) {
  while (!cgnet__list_empty(&loop->pending_udp))
    cgnet__udp_flush(
        cgnet__container_of(cgnet__list_first(&loop->pending_udp), cgnet__udp, pending));
}

/* ---- receiving ----------------------------------------------------------------------- */

static int alloc_rx(cgnet__udp *u) {
  size_t cap = u->loop->eng->o.read_buffer_cap;
  u->slot = cap < RX_SLOT_MAX ? cap : RX_SLOT_MAX;
  u->rx = malloc(RX_BATCH * u->slot);
  u->rmsg = calloc(RX_BATCH, sizeof *u->rmsg);
  u->riov = calloc(RX_BATCH, sizeof *u->riov);
  u->rfrom = calloc(RX_BATCH, sizeof *u->rfrom);
  if (!u->rx || !u->rmsg || !u->riov || !u->rfrom) return CGNET_ENOMEM;
  for (size_t i = 0; i < RX_BATCH; i++) {
    u->riov[i].iov_base = u->rx + i * u->slot;
    u->riov[i].iov_len = u->slot;
    u->rmsg[i].msg_hdr.msg_iov = &u->riov[i];
    u->rmsg[i].msg_hdr.msg_iovlen = 1;
    u->rmsg[i].msg_hdr.msg_name = &u->rfrom[i];
  }
  return 0;
}

static void count_truncated(cgnet__udp *u, size_t len) {
  bump(&u->truncated, 1);
  cgnet_loop *loop = u->loop;
  if (u->last_trunc_log == 0 || loop->now_ms - u->last_trunc_log >= DROP_LOG_INTERVAL_MS) {
    u->last_trunc_log = loop->now_ms;
    cgnet__log(
        loop->eng, CGNET_LOG_WARN,
        "udp: a datagram of %zu bytes exceeds the %zu-byte receive slot "
        "(read_buffer_cap); dropped (%llu so far)",
        len, u->slot,
        (unsigned long long)atomic_load_explicit(&u->truncated, memory_order_relaxed));
  }
}

/* Hand one datagram to on_traffic. Returns the callback's action. */
static cgnet_action deliver(cgnet__udp *u, const uint8_t *data, size_t len,
                            const struct sockaddr_storage *from, socklen_t fromlen) {
  cgnet_conn *c = &u->dc;
  const cgnet_handler *h = &u->loop->eng->h;
  if (fromlen > sizeof c->remote) fromlen = sizeof c->remote;
  memcpy(&c->remote, from, fromlen);
  c->remote_len = fromlen;
  if (c->names) c->names->remote_str[0] = '\0'; /* a new sender */
  c->view = data;
  c->view_len = len;
  c->view_pos = 0;
  c->view_is_rbuf = true;
  c->view_set = true;
  c->in_callback = 1;
  cgnet_action a = h->on_traffic ? h->on_traffic(c) : CGNET_NONE;
  c->in_callback = 0;
  c->view_set = false; /* the rest of the datagram is dropped */
  c->view = NULL;
  c->view_len = c->view_pos = 0;
  return a;
}

/* Deliver the n datagrams of a batch; false once a callback asked for SHUTDOWN. */
static bool deliver_batch(cgnet__udp *u, int n) {
  uint64_t delivered = 0;
  bool go_on = true;
  for (int i = 0; i < n && go_on; i++) {
    struct msghdr *mh = &u->rmsg[i].msg_hdr;
    if (mh->msg_flags & MSG_TRUNC) {
      count_truncated(u, u->rmsg[i].msg_len);
      continue;
    }
    const uint8_t *data = u->rx + (size_t)i * u->slot;
    cgnet_action a = CGNET_NONE;
    if (!u->sessions)
      a = deliver(u, data, u->rmsg[i].msg_len, &u->rfrom[i], mh->msg_namelen);
    else if (!cgnet__session_deliver(u, data, u->rmsg[i].msg_len, &u->rfrom[i],
                                     mh->msg_namelen, &a))
      continue; /* refused: over the session limit, or on_open closed it */
    delivered++;
    if (a == CGNET_SHUTDOWN) {
      cgnet__engine_request_stop(u->loop->eng, CGNET__ACTION_STOP_TIMEOUT_MS, 0);
      go_on = false;
    }
  }
  bump(&u->received, delivered);
  return go_on;
}

static void receive(cgnet__udp *u) {
  if (!u->rx && alloc_rx(u)) {
    cgnet__log(u->loop->eng, CGNET_LOG_ERROR, "udp: out of memory for receive buffers");
    return;
  }
  for (int b = 0; b < RX_BATCHES_PER_WAKEUP; b++) {
    for (size_t i = 0; i < RX_BATCH; i++) {
      u->rmsg[i].msg_hdr.msg_namelen = sizeof u->rfrom[i];
      u->rmsg[i].msg_hdr.msg_flags = 0;
    }
    /* msg_len is the real length of a datagram too large for its slot (MSG_TRUNC). */
    int n = cgnet__sys_recvmmsg(u->io.fd, u->rmsg, RX_BATCH);
    if (n < 0) {
      /* EAGAIN, or an error queued for a connected socket (ICMP): nothing to deliver. */
      if (n != -EAGAIN)
        cgnet__log(u->loop->eng, CGNET_LOG_DEBUG, "udp recv: %s", cgnet_strerror(n));
      return;
    }
    if (n == 0) return;
    bump(&u->recv_calls, 1);
    bool go_on = deliver_batch(u, n);
    if (u->qhead < u->qlen) cgnet__udp_flush(u); /* the batch's replies, in one go */
    if (!go_on || n < RX_BATCH || u->loop->stopping) return;
  }
}

void cgnet__udp_on_ready(cgnet__udp *u, uint32_t flags) {
  if (u->stopped || u->io.fd < 0) return;
  if (flags & (CGNET__READY_READ | CGNET__READY_ERROR)) receive(u);
  if ((flags & CGNET__READY_WRITE) && !u->stopped) cgnet__udp_flush(u);
}

/* ---- stopping ------------------------------------------------------------------------ */

void cgnet__loop_stop_udp(cgnet_loop *loop) {
  for (size_t i = 0; i < loop->nudps; i++) {
    cgnet__udp *u = loop->udps[i];
    if (u->stopped) continue;
    cgnet__udp_flush(u); /* one last try for what the callbacks queued */
    u->stopped = true;
    cgnet__backend_unwatch(&loop->backend, &u->io);
    if (cgnet__list_linked(&u->pending)) cgnet__list_remove(&u->pending);
  }
}

void cgnet__loop_free_udp(cgnet_loop *loop) {
  for (size_t i = 0; i < loop->nudps; i++) {
    cgnet__udp *u = loop->udps[i];
    if (u->io.fd >= 0) close(u->io.fd);
    cgnet__conn_release_names(&u->dc);
    free(u->rx);
    free(u->rmsg);
    free(u->riov);
    free(u->rfrom);
    free(u->q);
    free(u->qbuf);
    free(u);
  }
  free(loop->udps);
  loop->udps = NULL;
  loop->nudps = 0;
}

/* ---- the datagram conn --------------------------------------------------------------- */

static cgnet__udp *udp_of(cgnet_conn *c) {
  return cgnet__container_of(c, cgnet__udp, dc);
}

cgnet_loop *cgnet__udp_loop(const cgnet__udp *u) {
  return u->loop;
}

int cgnet__udp_fd(const cgnet__udp *u) {
  return u->io.fd;
}

/* ---- connected datagram conns (a client's udp:// conns) ------------------------------
 *
 * A client's UDP socket with its peer fixed by connect(): a conn of its own, registered
 * like a stream conn, but one read is one datagram (the unread rest is dropped when the
 * callback returns) and one write is one datagram sent at once, with no queue. Writes
 * made before the connect (a name still resolving) are kept in c->client.pending and sent
 * in order once it completes.
 */

#define CONNECTED_RX_BATCH 64 /* datagrams read per wake-up in level mode */

typedef struct cgnet__pending_dgram {
  struct cgnet__pending_dgram *next;
  size_t len;
  uint8_t data[];
} pending_dgram;

/* One datagram in, or 0 when none is waiting, or -1 when reading is over for now. A
 * returned count is the datagram's length + 1, so an empty datagram still counts as one. */
static ssize_t read_datagram(cgnet_conn *c) {
  cgnet_loop *loop = c->loop;
  ssize_t n = cgnet__sys_recv_dgram(c->io.fd, loop->rbuf, loop->rbuf_cap);
  if (n < 0) {
    if (n == -EAGAIN) return 0;
    /* e.g. ECONNREFUSED: an ICMP port unreachable came back */
    cgnet__conn_request_close(c, (int)n);
    return -1;
  }
  c->last_read_ms = loop->now_ms;
  if ((size_t)n > loop->rbuf_cap) { /* larger than read_buffer_cap: never deliver it cut */
    cgnet__log(loop->eng, CGNET_LOG_DEBUG,
               "datagram of %zd bytes dropped (read buffer %zu)", n, loop->rbuf_cap);
    return 1;
  }
  cgnet__conn_deliver(c, loop->rbuf, (size_t)n);
  return (cgnet__conn_closing(c) || !cgnet__conn_wants_read(c)) ? -1 : n + 1;
}

/* Edge mode reads until EAGAIN within read_chunk_limit, and past it waits in
 * pending_read for the next turn; level mode reads until EAGAIN, CONNECTED_RX_BATCH
 * datagrams or read_chunk_limit bytes, and epoll reports the rest again. */
void cgnet__dgram_conn_read(cgnet_conn *c) {
  size_t budget = c->o->read_chunk_limit, total = 0;
  bool edge = c->o->edge_triggered;
  for (int count = 1;; count++) {
    ssize_t n = read_datagram(c);
    if (n <= 0) return;
    total += (size_t)n;
    if (!edge) {
      if (count >= CONNECTED_RX_BATCH || total >= budget) return;
    } else if (total >= budget) {
      cgnet__conn_schedule_read(c);
      return;
    }
  }
}

/* Keep a copy of one datagram gathered from iov until the connect completes. */
static int keep_pending(cgnet_conn *c, const struct iovec *iov, int iovcnt, size_t len) {
  cgnet__dgram_list *q = &c->client.pending;
  if (len > c->o->write_buffer_limit - q->bytes) return CGNET_ENOBUFS;
  pending_dgram *d = malloc(sizeof *d + len);
  if (!d) return CGNET_ENOMEM;
  d->next = NULL;
  d->len = len;
  size_t off = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len) memcpy(d->data + off, iov[i].iov_base, iov[i].iov_len);
    off += iov[i].iov_len;
  }
  if (q->tail)
    q->tail->next = d;
  else
    q->head = d;
  q->tail = d;
  q->bytes += len;
  return 0;
}

int cgnet__dgram_conn_send(cgnet_conn *c, const struct iovec *iov, int iovcnt) {
  if (cgnet__conn_closing(c)) return CGNET_ECLOSED;
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++)
    len += iov[i].iov_len;
  if (cgnet__conn_connecting(c)) return keep_pending(c, iov, iovcnt, len);
  ssize_t n = cgnet__sys_send_dgram(c->io.fd, iov, iovcnt);
  if (n >= 0) {
    c->last_write_ms = c->loop->now_ms;
    return 0;
  }
  int err = (int)n;
  if (err == CGNET_EAGAIN || err == CGNET_EMSGSIZE || err == CGNET_ENOBUFS) return err;
  cgnet__conn_request_close(c, err); /* ECONNREFUSED and the like: the peer is not there */
  return err;
}

void cgnet__dgram_conn_free_pending(cgnet_conn *c) {
  cgnet__dgram_list *q = &c->client.pending;
  while (q->head) {
    pending_dgram *d = q->head;
    q->head = d->next;
    free(d);
  }
  q->tail = NULL;
  q->bytes = 0;
}

void cgnet__dgram_conn_send_pending(cgnet_conn *c) {
  cgnet__dgram_list *q = &c->client.pending;
  while (q->head && !cgnet__conn_closing(c)) {
    pending_dgram *d = q->head;
    q->head = d->next;
    struct iovec iov = {.iov_base = d->data, .iov_len = d->len};
    (void)cgnet__dgram_conn_send(c, &iov, 1);
    free(d);
  }
  cgnet__dgram_conn_free_pending(c);
}

/* ---- either kind --------------------------------------------------------------------- */

int cgnet__dgram_conn_write(cgnet_conn *c, const void *data, size_t len) {
  if (c->kind == CGNET__SESSION_DGRAM) return cgnet__session_write(c, data, len);
  if (c->kind == CGNET__CONNECTED_DGRAM) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return cgnet__dgram_conn_send(c, &iov, 1);
  }
  return cgnet__dgram_queue(udp_of(c), (const struct sockaddr *)&c->remote, c->remote_len,
                            data, len);
}

int cgnet__dgram_conn_flush(cgnet_conn *c) {
  cgnet__udp_flush(udp_of(c));
  return 0;
}

int cgnet_conn_send_to(cgnet_conn *c, const struct sockaddr *to, socklen_t tolen,
                       const void *data, size_t len) {
  if (c->kind != CGNET__SERVER_DGRAM) return CGNET_EUNSUPPORTED;
  if (!to) return CGNET_EINVAL;
  return cgnet__dgram_queue(udp_of(c), to, tolen, data, len);
}

/* ---- engine-wide calls (any thread) -------------------------------------------------- */

static cgnet__udp *find_udp(const cgnet_loop *loop, size_t index) {
  for (size_t i = 0; i < loop->nudps; i++)
    if (loop->udps[i]->index == index) return loop->udps[i];
  return NULL;
}

int cgnet_engine_send_to(cgnet_engine *eng, size_t listener, const struct sockaddr *to,
                         socklen_t tolen, const void *data, size_t len) {
  if (!eng || !to || (len && !data) || listener >= eng->naddrs ||
      eng->addrs[listener].socktype != SOCK_DGRAM)
    return CGNET_EINVAL;
  cgnet__udp *u = NULL;
  if (cgnet__tls_loop && cgnet__tls_loop->eng == eng)
    u = find_udp(cgnet__tls_loop, listener);
  if (!u) u = find_udp(&eng->loops[0], listener);
  if (!u) return CGNET_EINVAL;
  ssize_t n;
  do {
    n = sendto(u->io.fd, data, len, MSG_DONTWAIT, to, tolen);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

static uint64_t load(const _Atomic uint64_t *v) {
  return atomic_load_explicit(v, memory_order_relaxed);
}

void cgnet_engine_datagram_stats(const cgnet_engine *eng, cgnet_datagram_stats *out) {
  memset(out, 0, sizeof *out);
  for (int l = 0; l < eng->nloops; l++) {
    const cgnet_loop *loop = &eng->loops[l];
    for (size_t i = 0; i < loop->nudps; i++) {
      const cgnet__udp *u = loop->udps[i];
      out->received += load(&u->received);
      out->recv_calls += load(&u->recv_calls);
      out->sent += load(&u->sent);
      out->send_calls += load(&u->send_calls);
      out->dropped_truncated += load(&u->truncated);
      out->dropped_send += load(&u->send_dropped);
    }
  }
  out->sessions_opened = load(&eng->sessions_opened);
  out->sessions_refused = load(&eng->sessions_refused);
  out->sessions_open = atomic_load_explicit(&eng->nsessions, memory_order_relaxed);
}
