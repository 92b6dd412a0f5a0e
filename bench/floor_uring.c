/*
 * floor_uring — the floor of cgnet's echo benchmarks on io_uring: the least a correct
 * io_uring echo server has to do, written by hand with no framework, as floor_echo is
 * for epoll. cgnet on io_uring is measured against it, and it against floor_echo says
 * what the completion model itself gains on this machine.
 *
 * usage: floor_uring [--host H] [--port P] [--loops N]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
 *
 * One ring per loop thread (SINGLE_ISSUER | DEFER_TASKRUN), one listener per loop (with
 * N > 1, SO_REUSEPORT sockets on one port). Each loop:
 *  - a multishot ACCEPT on its listener;
 *  - per conn, one RECV at a time into a provided-buffer ring (consumed incrementally
 *    where the kernel can, 64 x 64 KiB; else whole buffers, 256 x 16 KiB), and then
 *    one SEND (MSG_WAITALL: the kernel finishes partial sends itself) of those bytes
 *    straight from the provided buffer, no copy; the next RECV starts when the SEND
 *    completes, so each conn holds at most one received chunk and a client that does
 *    not read its echo only slows itself down;
 *  - a buffer returns to the ring once the kernel has moved past it and every SEND out
 *    of it has completed;
 *  - everything started in a turn is submitted by the one io_uring_enter that waits.
 *
 * Threads: main opens the listeners, starts the loops and waits for SIGINT/SIGTERM in
 * sigwait(); it then writes each loop's eventfd (read through its ring), joins the loops
 * and exits 0. Needs liburing; built only where cgnet's io_uring backend is.
 */
#include <liburing.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define BACKLOG 4096
#define MAX_LOOPS 256

#include "peer_common.h" /* options, listeners, stop signals */

#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

#define RING_ENTRIES 4096
#define GROUP 0

enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_WAKE = 4, OP_MASK = 7 };

struct conn {
  int fd;
  unsigned send_bid;        /* the buffer the SEND in flight reads from */
  struct conn *prev, *next; /* the loop's live conns, freed at exit */
};

struct loop {
  struct io_uring ring;
  int lfd, wakefd;
  uint64_t wake_value;
  pthread_t thread;
  struct io_uring_buf_ring *br;
  uint8_t *bufs;
  unsigned nbufs, buf_len;
  int incremental;
  uint32_t *used;    /* incremental: bytes of each buffer handed out so far */
  uint32_t *sends;   /* SENDs in flight out of each buffer */
  uint8_t *filled;   /* the kernel has moved past the buffer */
  struct conn conns; /* list sentinel */
};

static uint64_t ud(const void *p, unsigned op) {
  return (uint64_t)(uintptr_t)p | op;
}

static struct io_uring_sqe *sqe_of(struct loop *lp) {
  struct io_uring_sqe *s = io_uring_get_sqe(&lp->ring);
  if (!s) {
    io_uring_submit(&lp->ring);
    s = io_uring_get_sqe(&lp->ring);
  }
  return s;
}

/* ---- buffers ------------------------------------------------------------------------- */

static void give_back(struct loop *lp, unsigned bid) {
  lp->used[bid] = 0;
  lp->filled[bid] = 0;
  io_uring_buf_ring_add(lp->br, lp->bufs + (size_t)bid * lp->buf_len, lp->buf_len,
                        (unsigned short)bid, io_uring_buf_ring_mask(lp->nbufs), 0);
  io_uring_buf_ring_advance(lp->br, 1);
}

static void maybe_give_back(struct loop *lp, unsigned bid) {
  if (lp->filled[bid] && lp->sends[bid] == 0) give_back(lp, bid);
}

static int register_ring(struct loop *lp, int incremental) {
  struct io_uring_buf_reg reg = {
      .ring_addr = (uint64_t)(uintptr_t)lp->br, .ring_entries = lp->nbufs, .bgid = GROUP};
  reg.pad = incremental ? IOU_PBUF_RING_INC : 0; /* the kernel's `flags` (liburing 2.3) */
  return io_uring_register_buf_ring(&lp->ring, &reg, 0);
}

static int setup_buffers(struct loop *lp) {
  /* Room for the larger of the two layouts: 256 ring entries, 4 MiB of buffers. */
  lp->br = mmap(NULL, 256 * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  lp->bufs =
      mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  lp->used = calloc(256, sizeof *lp->used);
  lp->sends = calloc(256, sizeof *lp->sends);
  lp->filled = calloc(256, 1);
  if (lp->br == MAP_FAILED || lp->bufs == MAP_FAILED || !lp->used || !lp->sends ||
      !lp->filled)
    return -1;
  lp->incremental = 1;
  lp->nbufs = 64;
  lp->buf_len = 64 * 1024;
  if (register_ring(lp, 1) != 0) {
    lp->incremental = 0;
    lp->nbufs = 256;
    lp->buf_len = 16 * 1024;
    if (register_ring(lp, 0) != 0) return -1;
  }
  io_uring_buf_ring_init(lp->br);
  for (unsigned i = 0; i < lp->nbufs; i++)
    io_uring_buf_ring_add(lp->br, lp->bufs + (size_t)i * lp->buf_len, lp->buf_len,
                          (unsigned short)i, io_uring_buf_ring_mask(lp->nbufs), (int)i);
  io_uring_buf_ring_advance(lp->br, (int)lp->nbufs);
  return 0;
}

/* ---- operations ---------------------------------------------------------------------- */

static void arm_accept(struct loop *lp) {
  struct io_uring_sqe *s = sqe_of(lp);
  io_uring_prep_multishot_accept(s, lp->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, ud(lp, OP_ACCEPT));
}

static void arm_recv(struct loop *lp, struct conn *c) {
  struct io_uring_sqe *s = sqe_of(lp);
  io_uring_prep_recv(s, c->fd, NULL, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = GROUP;
  io_uring_sqe_set_data64(s, ud(c, OP_RECV));
}

static void arm_wake(struct loop *lp) {
  struct io_uring_sqe *s = sqe_of(lp);
  io_uring_prep_read(s, lp->wakefd, &lp->wake_value, sizeof lp->wake_value, 0);
  io_uring_sqe_set_data64(s, ud(lp, OP_WAKE));
}

static void conn_close(struct conn *c) {
  close(c->fd); /* nothing of it is in flight: one RECV or one SEND at a time */
  c->prev->next = c->next;
  c->next->prev = c->prev;
  free(c);
}

/* ---- completions --------------------------------------------------------------------- */

static void on_accept(struct loop *lp, const struct io_uring_cqe *cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lp); /* ended (e.g. EMFILE): again */
  if (cqe->res < 0) return;
  int fd = cqe->res, one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct conn *c = calloc(1, sizeof *c);
  if (!c) {
    close(fd);
    return;
  }
  c->fd = fd;
  c->next = lp->conns.next;
  c->prev = &lp->conns;
  c->next->prev = c;
  lp->conns.next = c;
  arm_recv(lp, c);
}

static void on_recv(struct loop *lp, struct conn *c, const struct io_uring_cqe *cqe) {
  if (cqe->res == -ENOBUFS) { /* every buffer is out: try again next turn */
    arm_recv(lp, c);
    return;
  }
  if (cqe->res <= 0) { /* EOF or error */
    conn_close(c);
    return;
  }
  unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
  uint8_t *data = lp->bufs + (size_t)bid * lp->buf_len;
  if (lp->incremental) {
    data += lp->used[bid];
    lp->used[bid] += (uint32_t)cqe->res;
    lp->filled[bid] = !(cqe->flags & IORING_CQE_F_BUF_MORE);
  } else {
    lp->filled[bid] = 1;
  }
  lp->sends[bid]++;
  c->send_bid = bid;
  struct io_uring_sqe *s = sqe_of(lp);
  io_uring_prep_send(s, c->fd, data, (size_t)cqe->res, MSG_WAITALL | MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, ud(c, OP_SEND));
}

static void on_send(struct loop *lp, struct conn *c, const struct io_uring_cqe *cqe) {
  lp->sends[c->send_bid]--;
  maybe_give_back(lp, c->send_bid);
  if (cqe->res < 0) {
    conn_close(c);
    return;
  }
  arm_recv(lp, c);
}

/* Runs on the loop's own thread until main writes its eventfd. */
static void *loop_run(void *arg) {
  struct loop *lp = arg;
  arm_accept(lp);
  arm_wake(lp);
  int stop = 0;
  while (!stop) {
    int rc = io_uring_submit_and_wait(&lp->ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      fprintf(stderr, "io_uring_submit_and_wait: %s\n", strerror(-rc));
      break;
    }
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&lp->ring, head, cqe) {
      seen++;
      uint64_t u = io_uring_cqe_get_data64(cqe);
      void *p = (void *)(uintptr_t)(u & ~(uint64_t)OP_MASK);
      switch (u & OP_MASK) {
      case OP_ACCEPT:
        on_accept(lp, cqe);
        break;
      case OP_RECV:
        on_recv(lp, p, cqe);
        break;
      case OP_SEND:
        on_send(lp, p, cqe);
        break;
      case OP_WAKE:
        stop = 1;
        break;
      }
    }
    io_uring_cq_advance(&lp->ring, seen);
  }
  for (struct conn *c = lp->conns.next, *next; c != &lp->conns; c = next) {
    next = c->next;
    conn_close(c);
  }
  return NULL;
}

static int loop_init(struct loop *lp, int lfd) {
  lp->lfd = lfd;
  lp->conns.next = lp->conns.prev = &lp->conns;
  lp->wakefd = eventfd(0, EFD_CLOEXEC);
  struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER |
                                       IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
                                       IORING_SETUP_R_DISABLED,
                              .cq_entries = 4 * RING_ENTRIES};
  int err = io_uring_queue_init_params(RING_ENTRIES, &lp->ring, &p);
  if (lp->wakefd < 0 || err < 0) {
    fprintf(stderr, "ring setup: %s\n", strerror(err < 0 ? -err : errno));
    return -1;
  }
  if (setup_buffers(lp) < 0) {
    fprintf(stderr, "buffer ring setup failed\n");
    return -1;
  }
  return 0;
}

/* The loop thread becomes the ring's only submitter (SINGLE_ISSUER). */
static void *loop_main(void *arg) {
  struct loop *lp = arg;
  if (syscall(__NR_io_uring_register, lp->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL,
              0) < 0) {
    perror("io_uring enable");
    return NULL;
  }
  return loop_run(lp);
}

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o);
  sigset_t stop_set;
  block_stop_signals(&stop_set);

  int lfds[MAX_LOOPS];
  int port = open_listeners(&o, lfds, SOCK_STREAM);
  if (port < 0) return 1;
  struct loop *loops[MAX_LOOPS];
  for (int i = 0; i < o.loops; i++) {
    loops[i] = calloc(1, sizeof *loops[i]);
    if (!loops[i] || loop_init(loops[i], lfds[i]) < 0 ||
        pthread_create(&loops[i]->thread, NULL, loop_main, loops[i]) != 0)
      return 1;
  }
  printf("listening on %s:%d\n", o.host, port);
  fflush(stdout);

  wait_for_stop(&stop_set);
  for (int i = 0; i < o.loops; i++) {
    uint64_t one = 1;
    if (write(loops[i]->wakefd, &one, sizeof one) < 0) perror("eventfd write");
  }
  for (int i = 0; i < o.loops; i++) {
    pthread_join(loops[i]->thread, NULL);
    io_uring_queue_exit(&loops[i]->ring);
    close(loops[i]->wakefd);
    close(lfds[i]);
    free(loops[i]->used);
    free(loops[i]->sends);
    free(loops[i]->filled);
    free(loops[i]);
  }
  return 0;
}
