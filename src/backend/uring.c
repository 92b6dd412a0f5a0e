/*
 * The io_uring backend (src/backend.h): completions. One ring per loop.
 *
 *  - Stream conns receive through a multishot RECV that picks buffers from a provided
 *    buffer ring; a RECV result points into the buffer, which goes back to the ring when
 *    the core calls recv_done (right after the callback saw it). An empty ring ends the
 *    receive with -ENOBUFS: it is counted and the receive is started again at the next
 *    wait, once buffers have come back; no byte is lost, the socket keeps them.
 *  - Where the kernel consumes provided buffers incrementally (6.12+), receives fill the
 *    buffers back to back: a receive takes what the socket holds, up to the end of the
 *    current buffer, and the next receive (of any conn) goes on from there. Small
 *    messages then share a buffer instead of each holding one, and a streaming conn
 *    receives as much per completion as a buffer holds. A buffer goes back to the ring
 *    once the kernel has moved past it and its last bytes were seen.
 *  - Sends are SEND (one iovec) or SENDMSG (several), one in flight per conn; the iovecs
 *    and the message header live in a slot that stays allocated until the completion.
 *  - Listeners accept with a multishot ACCEPT; connects are CONNECT.
 *  - UDP sockets and connected datagram conns are watched with one-shot POLL_ADD,
 *    re-armed after each READY result while still watched: the same level semantics as
 *    epoll, and the core performs their syscalls (src/backend/sys.c).
 *  - The wake-up: where the kernel can post a completion into a ring from any thread
 *    with no ring of its own (IORING_REGISTER_SEND_MSG_RING, 6.13+), a signal is one
 *    such message, and the loop sees it as a completion with nothing to read or re-arm.
 *    Otherwise, and for any message the kernel refuses (the ring not enabled yet), the
 *    signal writes the loop's eventfd, watched by a poll like the sockets above.
 *  - Everything started during a turn is submitted by the next wait, in the same
 *    io_uring_enter that waits: one system call per loop turn when nothing else is due.
 *
 * The ring is created disabled on the thread that builds the loop (so that failures show
 * at engine start) and enabled by the loop thread (start), which with SINGLE_ISSUER and
 * DEFER_TASKRUN becomes its only submitter.
 *
 * User data: the object's address with the operation in the low 3 bits (objects are
 * 8-byte aligned); a send's user data is its slot's address; a wake-up message carries
 * the wake-up's address with no operation bits. Cancels, closes and poll updates carry
 * 0 and their completions are skipped.
 */
#ifdef CGNET_HAVE_IO_URING

#include "../backend.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../internal/util.h"

enum {
  TAG_RECV = 1,
  TAG_SEND = 2,
  TAG_CONNECT = 3,
  TAG_ACCEPT = 4,
  TAG_POLL = 5,
  TAG_CANCEL_RECV = 6,   /* a cancel of the receive */
  TAG_CANCEL_ACCEPT = 7, /* a cancel of the accept */
  TAG_MASK = 7,
};

/* Backend-private bits in cgnet__io.bflags. */
#define BF_WANT_RECV 0x01u   /* the core wants the receive running */
#define BF_RECV_CANCEL 0x02u /* a cancel of the receive was sent */
#define BF_STARVED 0x04u     /* the receive ended on an empty ring: restart at next wait */
#define BF_ACCEPT_STOP 0x08u /* accept_stop asked for the accept to end */
#define BF_WAKE_POLLED 0x10u /* the wake-up's eventfd was signalled: read it */

#define BUF_GROUP 0

/* Newer than liburing 2.3's headers (kernel 6.12): incremental buffer consumption. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif
/* cgnet__result.flags of a RECV: give the buffer back at recv_done (the kernel is done
 * with it). */
#define RECV_BUF_LAST 0x01u
#define SEND_IOV_MAX 8 /* iovecs per SENDMSG; the rest goes in the next send */
#define SLOTS_KEPT 256 /* send slots cached for reuse */

typedef struct send_slot {
  cgnet__io *io;
  struct send_slot *next_free;
  struct msghdr msg;
  struct iovec iov[SEND_IOV_MAX];
} send_slot;

typedef struct uring_state {
  struct io_uring ring;
  bool enabled;
  struct io_uring_buf_ring *br;
  size_t br_bytes;
  uint8_t *bufs;
  size_t bufs_bytes;
  unsigned nbufs, buf_len, mask;
  unsigned bufs_out; /* buffers holding a receive's bytes, not yet given back */
  /* Incremental consumption: each buffer's bytes handed out so far (its next receive
   * lands there). NULL when every receive takes a buffer of its own. */
  uint32_t *buf_used;
  cgnet__io **starved; /* receives to restart at the next wait */
  size_t nstarved, starved_cap;
  send_slot *free_slots;
  size_t nfree_slots;
  /* Wake-ups are ring messages (else eventfd writes); set before the loop thread
   * starts, read by any thread. */
  bool msg_wake;
  cgnet__backend_stats st;
} uring_state;

static uring_state *state_of(const cgnet__backend *b) {
  return b->impl;
}

static uint64_t ud_of(const void *p, unsigned tag) {
  return (uint64_t)(uintptr_t)p | tag;
}

/* An SQE; when the queue is full, what is queued is submitted first. */
static struct io_uring_sqe *get_sqe(uring_state *u) {
  struct io_uring_sqe *s = io_uring_get_sqe(&u->ring);
  if (cgnet__likely(s != NULL)) return s;
  if (!u->enabled) return NULL;
  u->st.enters++;
  (void)io_uring_submit(&u->ring);
  return io_uring_get_sqe(&u->ring);
}

/* ---- setup -----------------------------------------------------------------------------
 */

/* Tests: a completion queue this small (with a submission queue no larger), to force
 * overflows. 0: the sizes below. */
unsigned cgnet__uring_test_cq_entries;
/* Tests: one buffer per receive even where the kernel could consume them incrementally,
 * to run that path on a kernel that has both. */
int cgnet__uring_test_whole_buffers;
/* Tests: set the ring up as on kernels without DEFER_TASKRUN (before 6.1). */
int cgnet__uring_test_coop_taskrun;

#define SQ_ENTRIES 1024

static int setup_ring(uring_state *u, unsigned sq_entries, unsigned cq_entries) {
  struct io_uring_params p;
  /* Preferred: one submitter and completions run only when it waits (6.1+). */
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_R_DISABLED | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  p.cq_entries = cq_entries;
  int err = cgnet__uring_test_coop_taskrun
                ? -EINVAL
                : io_uring_queue_init_params(sq_entries, &u->ring, &p);
  if (err == -EINVAL) {
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_R_DISABLED | IORING_SETUP_CQSIZE |
              IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = cq_entries;
    err = io_uring_queue_init_params(sq_entries, &u->ring, &p);
  }
  if (err) return err;
  /* Needed: completions never dropped, and a wait with a timeout in one call. */
  if (!(p.features & IORING_FEAT_NODROP) || !(p.features & IORING_FEAT_EXT_ARG)) {
    io_uring_queue_exit(&u->ring);
    return -EOPNOTSUPP;
  }
  return 0;
}

static void recycle(uring_state *u, unsigned bid) {
  u->bufs_out--;
  if (u->buf_used) u->buf_used[bid] = 0;
  io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->buf_len, u->buf_len,
                        (unsigned short)bid, u->mask, 0);
  io_uring_buf_ring_advance(u->br, 1);
}

/* Sizes of the buffers when the options leave them to cgnet (4 MiB per loop either
 * way). Consumed incrementally, fewer and larger buffers: a streaming conn receives up
 * to 64 KiB per completion, as epoll's reads take it, while small messages still share
 * buffers. Whole buffers (one per receive) must be many, since each small message holds
 * one until its callback returns; bench/ measured both (docs/benchmarks.md). */
#define INC_DEFAULT_BUFFERS 64
#define INC_DEFAULT_BUFFER_LEN (64 * 1024)
#define WHOLE_DEFAULT_BUFFERS 256
#define WHOLE_DEFAULT_BUFFER_LEN (16 * 1024)
#define PROBE_GROUP 1

static int register_ring(uring_state *u, void *ring, unsigned entries, uint16_t group,
                         bool incremental) {
  struct io_uring_buf_reg reg = {
      .ring_addr = (uint64_t)(uintptr_t)ring, .ring_entries = entries, .bgid = group};
  reg.pad = incremental ? IOU_PBUF_RING_INC : 0; /* the kernel's `flags` (liburing 2.3) */
  return io_uring_register_buf_ring(&u->ring, &reg, 0);
}

/* Whether the kernel consumes provided buffers incrementally (6.12+): a one-entry ring
 * registered with the flag and dropped again; older kernels refuse the flag. */
static bool incremental_supported(uring_state *u) {
  if (cgnet__uring_test_whole_buffers) return false;
  void *ring = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring == MAP_FAILED) return false;
  bool ok = register_ring(u, ring, 1, PROBE_GROUP, true) == 0;
  if (ok) (void)io_uring_unregister_buf_ring(&u->ring, PROBE_GROUP);
  munmap(ring, 4096);
  return ok;
}

/* The provided-buffer ring and its buffers, in memory of their own (munmap'd at close:
 * the kernel never writes into memory that malloc could hand out again). */
static int setup_buffers(uring_state *u, const cgnet__backend_config *cfg) {
  bool inc = incremental_supported(u);
  u->nbufs = cfg->recv_buffers ? cfg->recv_buffers
                               : (inc ? INC_DEFAULT_BUFFERS : WHOLE_DEFAULT_BUFFERS);
  u->buf_len = cfg->recv_buffer_len
                   ? cfg->recv_buffer_len
                   : (inc ? INC_DEFAULT_BUFFER_LEN : WHOLE_DEFAULT_BUFFER_LEN);
  u->mask = (unsigned)io_uring_buf_ring_mask(u->nbufs);
  u->br_bytes = (size_t)u->nbufs * sizeof(struct io_uring_buf);
  void *br =
      mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED) return -errno;
  u->br = br;
  u->bufs_bytes = (size_t)u->nbufs * u->buf_len;
  void *bufs =
      mmap(NULL, u->bufs_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bufs == MAP_FAILED) return -errno;
  u->bufs = bufs;
  if (inc) {
    u->buf_used = calloc(u->nbufs, sizeof *u->buf_used);
    if (!u->buf_used) return -ENOMEM;
  }
  int err = register_ring(u, br, u->nbufs, BUF_GROUP, inc);
  if (err) return err;
  io_uring_buf_ring_init(u->br);
  for (unsigned i = 0; i < u->nbufs; i++)
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * u->buf_len, u->buf_len,
                          (unsigned short)i, u->mask, (int)i);
  io_uring_buf_ring_advance(u->br, (int)u->nbufs);
  return 0;
}

static void uring_close(cgnet__backend *b);

static int uring_init(cgnet__backend *b, const cgnet__backend_config *cfg) {
  uring_state *u = calloc(1, sizeof *u);
  if (!u) return -ENOMEM;
  b->impl = u;
  b->fd = -1;
  u->ring.ring_fd = -1;
  /* Room for a completion per provided buffer and as many again for everything else. */
  unsigned nbufs = cfg->recv_buffers ? cfg->recv_buffers : WHOLE_DEFAULT_BUFFERS;
  unsigned sq = SQ_ENTRIES, cq = nbufs * 2 < 4096 ? 4096 : nbufs * 2;
  if (cgnet__uring_test_cq_entries) sq = cq = cgnet__uring_test_cq_entries;
  int err = setup_ring(u, sq, cq);
  if (err) {
    free(u);
    b->impl = NULL;
    return err;
  }
  b->fd = u->ring.ring_fd;
  err = setup_buffers(u, cfg);
  if (err) uring_close(b);
  return err;
}

/* liburing 2.3 declares io_uring_enable_rings but does not export it: the raw call. */
static int enable_rings(struct io_uring *ring) {
  long rc =
      syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
  return rc < 0 ? -errno : 0;
}

static int uring_start(cgnet__backend *b) {
  uring_state *u = state_of(b);
  int err = enable_rings(&u->ring);
  if (err == 0) u->enabled = true;
  return err;
}

static void uring_close(cgnet__backend *b) {
  uring_state *u = state_of(b);
  if (!u) return;
  if (u->ring.ring_fd >= 0) io_uring_queue_exit(&u->ring);
  if (u->br) munmap(u->br, u->br_bytes);
  if (u->bufs) munmap(u->bufs, u->bufs_bytes);
  free(u->buf_used);
  while (u->free_slots) {
    send_slot *s = u->free_slots;
    u->free_slots = s->next_free;
    free(s);
  }
  free(u->starved);
  free(u);
  b->impl = NULL;
  b->fd = -1;
}

/* ---- watching by readiness: one-shot polls, re-armed after each result ----------------
 */

static unsigned poll_mask(uint32_t interest) {
  unsigned m = 0;
  if (interest & CGNET__POLL_READ) m |= POLLIN | POLLRDHUP;
  if (interest & CGNET__POLL_WRITE) m |= POLLOUT;
  if (interest & CGNET__POLL_HUP) m |= POLLERR | POLLHUP;
  return m;
}

static int arm_poll(uring_state *u, cgnet__io *io) {
  struct io_uring_sqe *s = get_sqe(u);
  if (!s) return -EBUSY;
  io_uring_prep_poll_add(s, io->fd, poll_mask(io->watch));
  io_uring_sqe_set_data64(s, ud_of(io, TAG_POLL));
  io->ops |= CGNET__OP_POLL_ARMED;
  u->st.watches++;
  return 0;
}

static int uring_watch(cgnet__backend *b, cgnet__io *io, uint32_t interest) {
  uring_state *u = state_of(b);
  interest &= CGNET__POLL_READ | CGNET__POLL_WRITE | CGNET__POLL_HUP;
  uint32_t old = io->watch;
  io->watch = (uint8_t)interest;
  if (interest == old && (interest == 0 || (io->ops & CGNET__OP_POLL_ARMED))) return 0;
  if (!(io->ops & CGNET__OP_POLL_ARMED)) return interest ? arm_poll(u, io) : 0;
  /* Armed with the old interest: change it in place. If the poll has fired meanwhile,
   * the update finds nothing and the firing's completion re-arms with the new one. */
  struct io_uring_sqe *s = get_sqe(u);
  if (!s) return -EBUSY;
  if (interest == 0) {
    io_uring_prep_poll_remove(s, ud_of(io, TAG_POLL));
  } else {
    io_uring_prep_poll_update(s, ud_of(io, TAG_POLL), ud_of(io, TAG_POLL),
                              poll_mask(interest), IORING_POLL_UPDATE_EVENTS);
  }
  io_uring_sqe_set_data64(s, 0);
  u->st.watches++;
  return 0;
}

static void uring_unwatch(cgnet__backend *b, cgnet__io *io) {
  (void)uring_watch(b, io, 0);
}

/* ---- operations ------------------------------------------------------------------------
 */

static int uring_accept_start(cgnet__backend *b, cgnet__io *l) {
  uring_state *u = state_of(b);
  l->bflags &= (uint8_t)~BF_ACCEPT_STOP;
  if (l->ops & CGNET__OP_ACCEPT_ARMED) return 0;
  struct io_uring_sqe *s = get_sqe(u);
  if (!s) return -EBUSY;
  io_uring_prep_multishot_accept(s, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, ud_of(l, TAG_ACCEPT));
  l->ops |= CGNET__OP_ACCEPT_ARMED;
  return 0;
}

/* A cancel's own completion says whether it found the operation: a multishot
 * operation that is running (not waiting) when the cancel looks for it is not found
 * (-ENOENT), and goes on; then the cancel is sent again (on_cancel). The cancel counts as
 * an operation of the object, so the object outlives its completion. */
static void cancel_op(uring_state *u, cgnet__io *io, unsigned tag) {
  struct io_uring_sqe *s = get_sqe(u);
  if (!s) return;
  io_uring_prep_cancel64(s, ud_of(io, tag), 0);
  io_uring_sqe_set_data64(s,
                          ud_of(io, tag == TAG_RECV ? TAG_CANCEL_RECV : TAG_CANCEL_ACCEPT));
  io->cancels++;
}

static void uring_accept_stop(cgnet__backend *b, cgnet__io *l) {
  l->bflags |= BF_ACCEPT_STOP;
  if (l->ops & CGNET__OP_ACCEPT_ARMED) cancel_op(state_of(b), l, TAG_ACCEPT);
}

/* A multishot receive (recv_cap 0), or one receive of at most recv_cap bytes. */
static int arm_recv(uring_state *u, cgnet__io *io) {
  struct io_uring_sqe *s = get_sqe(u);
  if (!s) return -EBUSY;
  if (io->recv_cap)
    io_uring_prep_recv(s, io->fd, NULL, io->recv_cap, 0);
  else
    io_uring_prep_recv_multishot(s, io->fd, NULL, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = BUF_GROUP;
  io_uring_sqe_set_data64(s, ud_of(io, TAG_RECV));
  io->ops |= CGNET__OP_RECV_ARMED;
  return 0;
}

static int request_recv(uring_state *u, cgnet__io *io);

static int uring_recv_start(cgnet__backend *b, cgnet__io *io, uint32_t cap) {
  io->bflags |= BF_WANT_RECV;
  io->recv_cap = cap;
  /* Still armed (maybe with a cancel on its way): its last completion re-arms. */
  if ((io->ops & CGNET__OP_RECV_ARMED) || (io->bflags & BF_STARVED)) return 0;
  return request_recv(state_of(b), io);
}

/* The cancel goes to the kernel now, not with the next wait: until it lands, the receive
 * keeps taking buffers, and every one it fills for a conn that stopped reading (a pause,
 * or output at the high watermark) is bytes the conn must keep. Submitted at once, what
 * the conn holds past its stop is about what was already received. */
static void uring_recv_stop(cgnet__backend *b, cgnet__io *io) {
  uring_state *u = state_of(b);
  io->bflags &= (uint8_t)~BF_WANT_RECV;
  if ((io->ops & CGNET__OP_RECV_ARMED) && !(io->bflags & BF_RECV_CANCEL)) {
    io->bflags |= BF_RECV_CANCEL;
    cancel_op(u, io, TAG_RECV);
    if (u->enabled) {
      u->st.enters++;
      (void)io_uring_submit(&u->ring);
    }
  }
}

static void uring_recv_done(cgnet__backend *b, const cgnet__result *r) {
  if (r->res > 0 && (r->flags & RECV_BUF_LAST)) recycle(state_of(b), r->buf);
}

static send_slot *slot_get(uring_state *u) {
  send_slot *s = u->free_slots;
  if (s) {
    u->free_slots = s->next_free;
    u->nfree_slots--;
    return s;
  }
  return malloc(sizeof *s);
}

static void slot_put(uring_state *u, send_slot *s) {
  if (u->nfree_slots >= SLOTS_KEPT) {
    free(s);
    return;
  }
  s->next_free = u->free_slots;
  u->free_slots = s;
  u->nfree_slots++;
}

static int uring_send_start(cgnet__backend *b, cgnet__io *io, const struct iovec *iov,
                            int cnt) {
  uring_state *u = state_of(b);
  send_slot *slot = slot_get(u);
  if (!slot) return -ENOMEM;
  struct io_uring_sqe *s = get_sqe(u);
  if (!s) {
    slot_put(u, slot);
    return -EBUSY;
  }
  if (cnt > SEND_IOV_MAX) cnt = SEND_IOV_MAX;
  slot->io = io;
  if (cnt == 1) {
    io_uring_prep_send(s, io->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
  } else {
    memcpy(slot->iov, iov, (size_t)cnt * sizeof *iov);
    memset(&slot->msg, 0, sizeof slot->msg);
    slot->msg.msg_iov = slot->iov;
    slot->msg.msg_iovlen = (size_t)cnt;
    io_uring_prep_sendmsg(s, io->fd, &slot->msg, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data64(s, ud_of(slot, TAG_SEND));
  io->ops |= CGNET__OP_SEND_ARMED;
  return 0;
}

static int uring_connect_start(cgnet__backend *b, cgnet__io *io, const struct sockaddr *sa,
                               socklen_t len) {
  struct io_uring_sqe *s = get_sqe(state_of(b));
  if (!s) return -EBUSY;
  io_uring_prep_connect(s, io->fd, sa, len);
  io_uring_sqe_set_data64(s, ud_of(io, TAG_CONNECT));
  io->ops |= CGNET__OP_CONNECT_ARMED;
  return 0;
}

static void forget_starved(uring_state *u, cgnet__io *io);

/* Cancel everything on the descriptor, then close it. Operations queued and not yet
 * submitted name the descriptor by number, so what is queued is submitted first (the
 * kernel takes its own reference to the socket as it issues each one); then the close is
 * a plain close(), which frees the number at once (descriptor accounting stays exact and
 * sanitizers see it) while the socket lives on until the cancelled operations let go. */
static void uring_release(cgnet__backend *b, cgnet__io *io) {
  uring_state *u = state_of(b);
  io->released = 1;
  io->bflags &= (uint8_t)~BF_WANT_RECV;
  forget_starved(u, io);
  io->watch = 0;
  if (io->fd < 0) return;
  struct io_uring_sqe *s;
  if (io->ops && (s = get_sqe(u)) != NULL) {
    io_uring_prep_cancel_fd(s, io->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(s, 0);
    s->flags |= IOSQE_CQE_SKIP_SUCCESS;
  }
  if (io_uring_sq_ready(&u->ring) && u->enabled) {
    u->st.enters++;
    (void)io_uring_submit(&u->ring);
  }
  close(io->fd);
  io->fd = -1;
}

/* ---- waiting and completions -----------------------------------------------------------
 */

/* Receives stopped by an empty ring start again as buffers come back, oldest first, no
 * more of them than there are buffers free (each takes at least one), so that a
 * thousand conns over a handful of buffers take turns instead of all failing again. */
static void restart_starved(uring_state *u) {
  size_t free_bufs = u->nbufs - u->bufs_out, n = 0;
  for (; n < u->nstarved && n < free_bufs; n++) {
    cgnet__io *io = u->starved[n];
    io->bflags &= (uint8_t)~BF_STARVED;
    if ((io->bflags & BF_WANT_RECV) && !io->released && !(io->ops & CGNET__OP_RECV_ARMED))
      (void)arm_recv(u, io);
  }
  memmove(u->starved, u->starved + n, (u->nstarved - n) * sizeof *u->starved);
  u->nstarved -= n;
}

/* A released object leaves the list (its memory may go once its operations are done). */
static void forget_starved(uring_state *u, cgnet__io *io) {
  if (!(io->bflags & BF_STARVED)) return;
  io->bflags &= (uint8_t)~BF_STARVED;
  for (size_t i = 0; i < u->nstarved; i++) {
    if (u->starved[i] != io) continue;
    memmove(u->starved + i, u->starved + i + 1, (u->nstarved - i - 1) * sizeof *u->starved);
    u->nstarved--;
    return;
  }
}

static void mark_starved(uring_state *u, cgnet__io *io) {
  if (io->bflags & BF_STARVED) return;
  if (u->nstarved == u->starved_cap) {
    size_t cap = u->starved_cap ? u->starved_cap * 2 : 64;
    cgnet__io **p = realloc(u->starved, cap * sizeof *p);
    if (!p) { /* cannot wait for buffers: restart it now */
      (void)arm_recv(u, io);
      return;
    }
    u->starved = p;
    u->starved_cap = cap;
  }
  io->bflags |= BF_STARVED;
  u->starved[u->nstarved++] = io;
}

/* Start a receive, or, while others wait for buffers, queue behind them: a conn whose
 * receive just completed would otherwise take the buffers that came back before the
 * ones that have waited, and those could wait forever. */
static int request_recv(uring_state *u, cgnet__io *io) {
  if (u->nstarved) {
    mark_starved(u, io);
    return 0;
  }
  return arm_recv(u, io);
}

/* Where a receive's bytes are, and whether the kernel is done with their buffer (*last):
 * always with whole buffers; with incremental consumption, when the kernel did not say
 * it goes on with this buffer. A buffer counts as out from its first bytes on. */
static const uint8_t *take_bytes(uring_state *u, const struct io_uring_cqe *cqe,
                                 bool *last) {
  unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
  const uint8_t *base = u->bufs + (size_t)bid * u->buf_len;
  if (!u->buf_used) {
    u->bufs_out++;
    *last = true;
    return base;
  }
  uint32_t used = u->buf_used[bid];
  if (used == 0) u->bufs_out++;
  u->buf_used[bid] = used + (uint32_t)cqe->res;
  *last = (cqe->flags & IORING_CQE_F_BUF_MORE) == 0;
  return base + used;
}

/* A receive's completion; true when it is a result for the core. */
static bool on_recv(uring_state *u, cgnet__io *io, const struct io_uring_cqe *cqe,
                    cgnet__result *r) {
  bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  int res = cqe->res;
  if (!more) {
    io->ops &= (uint8_t)~CGNET__OP_RECV_ARMED;
    io->bflags &= (uint8_t)~BF_RECV_CANCEL;
  }
  const uint8_t *data = NULL;
  bool last = true;
  if (res > 0) data = take_bytes(u, cqe, &last);
  if (io->released) {
    if (res > 0 && last) recycle(u, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    u->st.stale++;
    return false;
  }
  if (res == -ENOBUFS) {
    u->st.recv_nobufs++;
    if (!more && (io->bflags & BF_WANT_RECV)) mark_starved(u, io);
    return false;
  }
  if (res == -ECANCELED) {
    if (io->bflags & BF_WANT_RECV) (void)request_recv(u, io); /* resumed meanwhile */
    return false;
  }
  r->type = CGNET__RES_RECV;
  r->res = res;
  r->more = more;
  if (res > 0) {
    r->buf = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    r->data = data;
    r->flags = last ? RECV_BUF_LAST : 0;
    /* A multishot receive also ends when the completion queue is short of room; a
     * single receive is started again by the core, with the room it has then. */
    if (!more && !io->recv_cap && (io->bflags & BF_WANT_RECV)) (void)request_recv(u, io);
  }
  return true;
}

static bool on_poll(uring_state *u, cgnet__io *io, const struct io_uring_cqe *cqe,
                    cgnet__result *r) {
  io->ops &= (uint8_t)~CGNET__OP_POLL_ARMED;
  if (io->released) {
    u->st.stale++;
    return false;
  }
  if (io->watch) (void)arm_poll(u, io);
  if (cqe->res < 0) return false; /* removed, or updated away */
  if (io->kind == CGNET__KIND_WAKE) io->bflags |= BF_WAKE_POLLED;
  unsigned ev = (unsigned)cqe->res, f = 0;
  if (ev & (POLLIN | POLLRDHUP | POLLPRI)) f |= CGNET__READY_READ;
  if (ev & POLLOUT) f |= CGNET__READY_WRITE;
  if (ev & (POLLERR | POLLHUP)) f |= CGNET__READY_ERROR;
  r->type = CGNET__RES_READY;
  r->flags = (uint8_t)f;
  return f != 0;
}

/* A cancel completed. Not found while the operation is still armed and still not
 * wanted: it was running, send the cancel again (it goes with the next wait). */
static void on_cancel(uring_state *u, cgnet__io *io, unsigned tag, int res) {
  io->cancels--;
  if (res != -ENOENT && res != -EALREADY) return;
  if (tag == TAG_CANCEL_RECV && (io->ops & CGNET__OP_RECV_ARMED) &&
      (io->bflags & BF_RECV_CANCEL) && !(io->bflags & BF_WANT_RECV))
    cancel_op(u, io, TAG_RECV);
  else if (tag == TAG_CANCEL_ACCEPT && (io->ops & CGNET__OP_ACCEPT_ARMED) &&
           (io->bflags & BF_ACCEPT_STOP))
    cancel_op(u, io, TAG_ACCEPT);
}

static bool translate(uring_state *u, const struct io_uring_cqe *cqe, cgnet__result *r) {
  uint64_t ud = io_uring_cqe_get_data64(cqe);
  if (ud == 0) return false;
  unsigned tag = (unsigned)(ud & TAG_MASK);
  void *p = (void *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
  bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  cgnet__io *io = p;
  if (tag == TAG_SEND) {
    send_slot *slot = p;
    io = slot->io;
    slot_put(u, slot);
  }
  r->io = io;
  r->more = more;
  r->res = cqe->res;
  r->flags = 0;
  switch (tag) {
  case 0: /* a wake-up message */
    r->type = CGNET__RES_READY;
    r->flags = CGNET__READY_READ;
    return true;
  case TAG_RECV:
    return on_recv(u, io, cqe, r);
  case TAG_POLL:
    return on_poll(u, io, cqe, r);
  case TAG_SEND:
    io->ops &= (uint8_t)~CGNET__OP_SEND_ARMED;
    r->type = CGNET__RES_SEND;
    break;
  case TAG_CONNECT:
    io->ops &= (uint8_t)~CGNET__OP_CONNECT_ARMED;
    r->type = CGNET__RES_CONNECT;
    break;
  case TAG_CANCEL_RECV:
  case TAG_CANCEL_ACCEPT:
    on_cancel(u, io, tag, cqe->res);
    return false;
  case TAG_ACCEPT:
    if (!more) io->ops &= (uint8_t)~CGNET__OP_ACCEPT_ARMED;
    if (io->released || io->fd < 0) {
      if (cqe->res >= 0) close(cqe->res);
      u->st.stale++;
      return false;
    }
    r->type = CGNET__RES_ACCEPT;
    return true;
  default:
    return false;
  }
  if (io->released) {
    u->st.stale++;
    return false;
  }
  return true;
}

static int uring_wait(cgnet__backend *b, cgnet__result *out, int max, int timeout_ms) {
  uring_state *u = state_of(b);
  /* Receives still queued after a window of restarts: do not sleep, the next turn
   * restarts the next window (the restarted ones may be idle conns that take no buffer,
   * and nothing else would wake the loop for the rest). */
  if (u->nstarved) restart_starved(u);
  if (u->nstarved) timeout_ms = 0;
  int rc;
  struct io_uring_cqe *cqe = NULL;
  u->st.enters++;
  if (io_uring_cq_ready(&u->ring) || timeout_ms == 0) {
    rc = io_uring_submit_and_get_events(&u->ring);
  } else if (timeout_ms < 0) {
    rc = io_uring_submit_and_wait(&u->ring, 1);
  } else {
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
  }
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return rc;
  bool overflowed = io_uring_cq_has_overflow(&u->ring);
  int n = 0;
  unsigned head, seen = 0;
  io_uring_for_each_cqe(&u->ring, head, cqe) {
    if (n == max) break;
    seen++;
    if (translate(u, cqe, &out[n])) n++;
  }
  io_uring_cq_advance(&u->ring, seen);
  u->st.completions += seen;
  /* The kernel keeps what did not fit (NODROP) and hands it over as room frees up;
   * counted once per wait that saw it, before or after taking the completions. */
  if (overflowed || io_uring_cq_has_overflow(&u->ring)) u->st.cq_overflows++;
  return n;
}

static void uring_get_stats(const cgnet__backend *b, cgnet__backend_stats *out) {
  const uring_state *u = state_of(b);
  *out = u ? u->st : (cgnet__backend_stats){0};
}

int cgnet__uring_probe(void) {
  uring_state u;
  memset(&u, 0, sizeof u);
  int err = setup_ring(&u, SQ_ENTRIES, 4096);
  if (err) return err;
  /* Multishot receives with a buffer ring (6.0+): register a one-entry ring. */
  void *br = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED) {
    err = -errno;
  } else {
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = 1, .bgid = BUF_GROUP};
    err = io_uring_register_buf_ring(&u.ring, &reg, 0);
    munmap(br, 4096);
  }
  io_uring_queue_exit(&u.ring);
  return err;
}

/* ---- the wake-up ------------------------------------------------------------------------
 */

/* Newer than liburing 2.3's headers (kernel 6.13). */
#ifndef IORING_REGISTER_SEND_MSG_RING
#define IORING_REGISTER_SEND_MSG_RING 31
#endif

/* Post a completion carrying user_data into the ring ring_fd, from any thread, with no
 * ring of the caller's own. 0 or a negative errno. */
static int send_ring_message(int ring_fd, uint64_t user_data) {
  struct io_uring_sqe sqe;
  memset(&sqe, 0, sizeof sqe);
  sqe.opcode = IORING_OP_MSG_RING;
  sqe.fd = ring_fd;
  sqe.addr = IORING_MSG_DATA;
  sqe.off = user_data;
  long rc = syscall(__NR_io_uring_register, -1, IORING_REGISTER_SEND_MSG_RING, &sqe, 1);
  return rc < 0 ? -errno : 0;
}

/* Ring messages for wake-ups, unless CGNET_URING_WAKE=eventfd asks for the eventfd
 * (bench/: the two are compared) or the kernel lacks them: a message to no ring is
 * refused with EBADF where the call exists, EINVAL where it does not. */
static bool ring_messages_usable(void) {
  const char *env = getenv("CGNET_URING_WAKE");
  if (env && strcmp(env, "eventfd") == 0) return false;
  return send_ring_message(-1, 0) == -EBADF;
}

static int uring_wake_open(cgnet__backend *b, cgnet__io *w) {
  int err = cgnet__eventfd_wake_open(b, w);
  if (err == 0) state_of(b)->msg_wake = ring_messages_usable();
  return err;
}

static void uring_wake_signal(cgnet__backend *b, cgnet__io *w) {
  if (state_of(b)->msg_wake && send_ring_message(b->fd, ud_of(w, 0)) == 0) return;
  cgnet__sys_eventfd_signal(w->fd);
}

/* The eventfd needs a read only when it was written (its poll fired). */
static void uring_wake_drain(cgnet__backend *b, cgnet__io *w) {
  (void)b;
  if (!(w->bflags & BF_WAKE_POLLED)) return;
  w->bflags &= (uint8_t)~BF_WAKE_POLLED;
  cgnet__sys_eventfd_drain(w->fd);
}

int cgnet__uring_incremental_supported(void) {
  uring_state u;
  memset(&u, 0, sizeof u);
  if (setup_ring(&u, 8, 16)) return 0;
  bool ok = incremental_supported(&u);
  io_uring_queue_exit(&u.ring);
  return ok;
}

const cgnet__backend_ops cgnet__uring_ops = {
    .name = "io_uring",
    .completion = true,
    .init = uring_init,
    .start = uring_start,
    .close = uring_close,
    .wait = uring_wait,
    .watch = uring_watch,
    .unwatch = uring_unwatch,
    /* The wake-up: a ring message, or an eventfd watched with a poll. */
    .wake_open = uring_wake_open,
    .wake_signal = uring_wake_signal,
    .wake_drain = uring_wake_drain,
    .wake_close = cgnet__eventfd_wake_close,
    .accept_start = uring_accept_start,
    .accept_stop = uring_accept_stop,
    .recv_start = uring_recv_start,
    .recv_stop = uring_recv_stop,
    .recv_done = uring_recv_done,
    .send_start = uring_send_start,
    .connect_start = uring_connect_start,
    .release = uring_release,
    .get_stats = uring_get_stats,
};

#endif /* CGNET_HAVE_IO_URING */
