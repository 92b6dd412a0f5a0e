/*
 * The backend seam: how a loop talks to the kernel (docs/design.md, "The I/O seam").
 *
 * A backend is one file under src/backend/ that fills a cgnet__backend_ops table:
 * src/backend/epoll.c (readiness) and src/backend/uring.c (completions, when built with
 * liburing). The plain socket calls that both need (read, send, sendmsg, accept4,
 * recvmmsg, ...) are in src/backend/sys.c, declared at the end of this header.
 *
 * Objects. Everything a backend watches or runs operations on starts with a cgnet__io.
 * Results of a wait point back at it and say what happened:
 *  - READY: a watched object is readable, writable or failed (flags). The core then
 *    performs the syscall itself through the sys calls below. Epoll reports every object
 *    this way; io_uring reports the wake-up, UDP sockets and connected datagram conns
 *    this way too (multishot poll).
 *  - RECV, SEND, CONNECT, ACCEPT: an operation the core started on a completion backend
 *    (stream conns and listeners on io_uring) completed; res is its result.
 *
 * Operations in flight. On a completion backend the kernel holds an object's memory
 * (the conn, the output it sends, the address it connects to) until the operation's
 * completion arrives, so io.ops records which operations are armed. After release() an
 * object is closed for the core, but it is freed only once io.ops is 0 (two-phase close):
 * the backend delivers the remaining completions with io.released set, and the core
 * drops them. Readiness backends never set io.ops.
 *
 * Threads. A backend belongs to one loop and is used from that loop's thread only, except
 * init/close and wake_open/wake_close, which run on the thread that builds or frees the
 * loop, and wake_signal, which any thread may call.
 */
#ifndef CGNET_BACKEND_H
#define CGNET_BACKEND_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* What a backend result points at: every registered object starts with a cgnet__io. */
typedef enum cgnet__kind {
  CGNET__KIND_CONN = 1,
  CGNET__KIND_LISTENER,
  CGNET__KIND_WAKE,
  CGNET__KIND_UDP, /* a cgnet__udp (udp.c) */
} cgnet__kind;

/* Operations armed on an object (cgnet__io.ops); completion backends only. */
#define CGNET__OP_RECV_ARMED 0x01u    /* a multishot receive */
#define CGNET__OP_SEND_ARMED 0x02u    /* one send */
#define CGNET__OP_CONNECT_ARMED 0x04u /* a connect */
#define CGNET__OP_ACCEPT_ARMED 0x08u  /* a multishot accept */
#define CGNET__OP_POLL_ARMED 0x10u    /* a poll (watch) */

typedef struct cgnet__io {
  int fd;
  uint8_t kind;      /* cgnet__kind */
  uint8_t ops;       /* CGNET__OP_*_ARMED: completions still to come */
  uint8_t watch;     /* the interest the backend watches (CGNET__POLL_*) */
  uint8_t released;  /* release() ran: completions still to come are dropped */
  uint8_t bflags;    /* the backend's own bits */
  uint8_t cancels;   /* cancels of its operations still to complete */
  uint32_t recv_cap; /* receives: 0 multishot, else single receives of at most this */
} __attribute__((aligned(8))) cgnet__io; /* 3 low bits free in a pointer to it */

/* No completion is owed for io any more: its memory may go. */
static inline bool cgnet__io_idle(const cgnet__io *io) {
  return io->ops == 0 && io->cancels == 0;
}

/* Interest flags for watch. */
#define CGNET__POLL_READ 0x1u
#define CGNET__POLL_WRITE 0x2u
#define CGNET__POLL_EDGE 0x4u /* edge-triggered (epoll only; ignored elsewhere) */
#define CGNET__POLL_HUP 0x8u  /* only errors and hang-ups (which epoll always reports) */

/* Readiness flags in READY results. */
#define CGNET__READY_READ 0x1u
#define CGNET__READY_WRITE 0x2u
#define CGNET__READY_ERROR 0x4u /* error or hang-up: read to learn which */

typedef enum cgnet__result_type {
  CGNET__RES_READY = 0,
  CGNET__RES_RECV,    /* res: bytes at data, 0: the peer's FIN, or -errno */
  CGNET__RES_SEND,    /* res: bytes sent, or -errno */
  CGNET__RES_CONNECT, /* res: 0 or -errno */
  CGNET__RES_ACCEPT,  /* res: a new socket, or -errno */
} cgnet__result_type;

typedef struct cgnet__result {
  cgnet__io *io;
  uint8_t type;  /* cgnet__result_type */
  uint8_t flags; /* READY: CGNET__READY_* */
  uint8_t more;  /* a multishot operation stays armed after this result */
  uint16_t buf;  /* RECV: the provided buffer to give back (recv_done) */
  int32_t res;
  const uint8_t *data; /* RECV: the bytes, valid until recv_done */
} cgnet__result;

/* Sizes a backend is set up with (from cgnet_options). */
typedef struct cgnet__backend_config {
  unsigned recv_buffers;    /* provided buffers per loop (io_uring) */
  unsigned recv_buffer_len; /* bytes each */
} cgnet__backend_config;

/* Counters a backend keeps (cgnet_loop_stats). */
typedef struct cgnet__backend_stats {
  uint64_t enters;       /* system calls that submitted or waited */
  uint64_t completions;  /* completions seen */
  uint64_t recv_nobufs;  /* receives stopped by an empty buffer ring, re-armed */
  uint64_t cq_overflows; /* completion-queue overflows seen */
  uint64_t stale;        /* completions for released objects, dropped */
  uint64_t watches;      /* changes of what is watched: epoll_ctl calls; poll requests */
} cgnet__backend_stats;

typedef struct cgnet__backend cgnet__backend;

typedef struct cgnet__backend_ops {
  const char *name;
  /* true: stream conns and listeners run through operations (RECV/SEND/CONNECT/ACCEPT);
   * false: everything is READY results and sys calls. */
  bool completion;
  int (*init)(cgnet__backend *b, const cgnet__backend_config *cfg);
  /* On the loop thread, before its first wait (NULL: nothing to do). 0 or -errno. */
  int (*start)(cgnet__backend *b);
  void (*close)(cgnet__backend *b);
  /* Submit what was started, then wait up to timeout_ms (-1: forever, 0: poll) and fill
   * at most max results. Returns the count (0 on timeout or EINTR) or a negative error. */
  int (*wait)(cgnet__backend *b, cgnet__result *out, int max, int timeout_ms);

  /* Watch io for the interest (CGNET__POLL_*; 0 stops watching but keeps it known),
   * adding it the first time. 0 or a negative errno. */
  int (*watch)(cgnet__backend *b, cgnet__io *io, uint32_t interest);
  /* Stop watching io altogether (before its descriptor is closed). */
  void (*unwatch)(cgnet__backend *b, cgnet__io *io);

  /* The wake-up: a signal from any thread makes the wait return a READY result for w;
   * the loop drains it before looking at what the signal was for. */
  int (*wake_open)(cgnet__backend *b, cgnet__io *w);
  void (*wake_signal)(cgnet__backend *b, cgnet__io *w);
  void (*wake_drain)(cgnet__backend *b, cgnet__io *w);
  void (*wake_close)(cgnet__backend *b, cgnet__io *w);

  /* ---- completion backends only (NULL in readiness backends) ---- */
  /* Start accepting on a listener: ACCEPT results until accept_stop, or until one
   * arrives without `more` (an error, e.g. EMFILE); then the core starts it again. */
  int (*accept_start)(cgnet__backend *b, cgnet__io *l);
  void (*accept_stop)(cgnet__backend *b, cgnet__io *l);
  /* Receive on a stream conn: RECV results until recv_stop or an error/FIN. cap 0: a
   * multishot receive, restarted by the backend while wanted; cap > 0: one receive of at
   * most cap bytes, which the core starts again (with the room it has then) after its
   * result. Called while one is armed, it only records that receiving is wanted. */
  int (*recv_start)(cgnet__backend *b, cgnet__io *io, uint32_t cap);
  void (*recv_stop)(cgnet__backend *b, cgnet__io *io);
  /* A RECV result's bytes are no longer needed: its buffer goes back to the ring. */
  void (*recv_done)(cgnet__backend *b, const cgnet__result *r);
  /* Send the bytes of iov[0, cnt) (at most one send in flight per object): one SEND
   * result. The bytes must stay in place until it arrives; the iovecs are copied. */
  int (*send_start)(cgnet__backend *b, cgnet__io *io, const struct iovec *iov, int cnt);
  /* Connect io's socket to sa (which stays valid until the CONNECT result). */
  int (*connect_start)(cgnet__backend *b, cgnet__io *io, const struct sockaddr *sa,
                       socklen_t len);
  /* Cancel every operation on io and close its descriptor (io->fd becomes -1); the
   * completions still to come arrive with io->released set. */
  void (*release)(cgnet__backend *b, cgnet__io *io);

  void (*get_stats)(const cgnet__backend *b, cgnet__backend_stats *out);
} cgnet__backend_ops;

/* A loop's backend: the ops and the state of the one that was chosen. */
struct cgnet__backend {
  const cgnet__backend_ops *ops;
  void *impl; /* the backend's own state */
  int fd;     /* its descriptor (epoll instance or ring), -1 when closed */
};

extern const cgnet__backend_ops cgnet__epoll_ops;
#ifdef CGNET_HAVE_IO_URING
extern const cgnet__backend_ops cgnet__uring_ops;
/* Can a ring with what cgnet needs be set up here? 0, or the negative errno why not. */
int cgnet__uring_probe(void);
/* Tests only: rings get a completion queue of this many entries (0: the default). */
extern unsigned cgnet__uring_test_cq_entries;
/* Tests: receives take whole buffers even where the kernel could consume them
 * incrementally (set before the engine starts). */
extern int cgnet__uring_test_whole_buffers;
/* Tests: rings are set up with COOP_TASKRUN, as where DEFER_TASKRUN is missing. */
extern int cgnet__uring_test_coop_taskrun;
/* 1 if this kernel consumes provided buffers incrementally (6.12+), else 0. */
int cgnet__uring_incremental_supported(void);
#endif

/* The calls the core makes, forwarding to the chosen backend. */
static inline int cgnet__backend_wait(cgnet__backend *b, cgnet__result *out, int max,
                                      int timeout_ms) {
  return b->ops->wait(b, out, max, timeout_ms);
}
static inline int cgnet__backend_watch(cgnet__backend *b, cgnet__io *io,
                                       uint32_t interest) {
  return b->ops->watch(b, io, interest);
}
static inline void cgnet__backend_unwatch(cgnet__backend *b, cgnet__io *io) {
  b->ops->unwatch(b, io);
}
static inline bool cgnet__backend_completion(const cgnet__backend *b) {
  return b->ops->completion;
}

/* ---- sys.c: the plain socket calls both backends build on ----------------------------
 * Each retries EINTR and returns a count or a negative errno (-EAGAIN when the socket
 * has nothing or no room now). The two on every message's path are inline here, so the
 * read and send of a readiness backend cost what the bare syscalls cost. */

static inline ssize_t cgnet__sys_recv(int fd, void *buf, size_t len) {
  ssize_t n;
  do {
    n = read(fd, buf, len);
  } while (__builtin_expect(n < 0, 0) && errno == EINTR);
  return n < 0 ? -errno : n;
}

/* send (one iovec) or sendmsg (several), MSG_NOSIGNAL. */
static inline ssize_t cgnet__sys_send(int fd, const struct iovec *iov, int cnt) {
  ssize_t n;
  if (cnt == 1) {
    do {
      n = send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } while (__builtin_expect(n < 0, 0) && errno == EINTR);
  } else {
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
    do {
      n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    } while (__builtin_expect(n < 0, 0) && errno == EINTR);
  }
  return n < 0 ? -errno : n;
}

/* One datagram; MSG_TRUNC: the result is its real length even when longer than len. */
ssize_t cgnet__sys_recv_dgram(int fd, void *buf, size_t len);
/* One datagram, gathered from iov (connected socket), without blocking. */
ssize_t cgnet__sys_send_dgram(int fd, const struct iovec *iov, int cnt);
int cgnet__sys_recvmmsg(int fd, struct mmsghdr *m, unsigned n);
int cgnet__sys_sendmmsg(int fd, struct mmsghdr *m, unsigned n);
/* shutdown(SHUT_WR); ENOTCONN is not an error (the peer went first). */
int cgnet__sys_shutdown_write(int fd);
/* Start a non-blocking connect: 0 connected, 1 in progress, or a negative errno. */
int cgnet__sys_connect(int fd, const struct sockaddr *sa, socklen_t len);
/* The socket's pending error (SO_ERROR), as a negative errno, or 0. */
int cgnet__sys_socket_error(int fd);
/* The peer's address of a connected socket. 0 or a negative errno. */
int cgnet__sys_peer_name(int fd, struct sockaddr_storage *ss, socklen_t *len);

/* One result of an accept: a new non-blocking, close-on-exec socket and its peer's
 * address, or (fd < 0) the negative errno that ended the batch. */
typedef struct cgnet__accepted {
  int fd;
  socklen_t len;
  struct sockaddr_storage addr;
} cgnet__accepted;

/* Accept up to max pending connections on fd into out, in arrival order. An attempt that
 * fails with ECONNABORTED, EPROTO or EINTR uses up one of the max and is skipped; an
 * empty backlog (EAGAIN) ends the batch with no entry; any other error (EMFILE, ENFILE,
 * ...) ends it with an entry carrying the error, so the caller can apply its policy
 * after handling the sockets accepted before it. Returns the number of entries filled. */
int cgnet__sys_accept(int fd, cgnet__accepted *out, int max);
/* Accept one pending connection on fd and close it at once (a peer turned away when out
 * of descriptors sees a clean close). Needs one free descriptor. 0 or a negative errno. */
int cgnet__sys_accept_shed(int fd);

/* The process's descriptor limit now (RLIMIT_NOFILE, soft). */
unsigned long cgnet__sys_nofile_limit(void);

/* The eventfd both backends use as the wake-up. */
int cgnet__sys_eventfd(void);
void cgnet__sys_eventfd_signal(int fd);
void cgnet__sys_eventfd_drain(int fd);
/* The wake-up ops of both backends' tables: an eventfd that b watches for reading. */
int cgnet__eventfd_wake_open(cgnet__backend *b, cgnet__io *w);
void cgnet__eventfd_wake_signal(cgnet__backend *b, cgnet__io *w);
void cgnet__eventfd_wake_drain(cgnet__backend *b, cgnet__io *w);
void cgnet__eventfd_wake_close(cgnet__backend *b, cgnet__io *w);

#endif
