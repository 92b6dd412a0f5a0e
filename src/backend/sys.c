/*
 * The plain socket calls both backends build on (src/backend.h): a readiness backend
 * performs them when the descriptor is ready, a completion backend for the objects it
 * watches by readiness (the wake-up, UDP sockets) and for the synchronous paths (a
 * direct write, the shed of a connection on EMFILE).
 */
#include "../backend.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../internal/util.h"

ssize_t cgnet__sys_recv_dgram(int fd, void *buf, size_t len) {
  ssize_t n;
  do {
    n = recv(fd, buf, len, MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

ssize_t cgnet__sys_send_dgram(int fd, const struct iovec *iov, int cnt) {
  struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

int cgnet__sys_recvmmsg(int fd, struct mmsghdr *m, unsigned n) {
  int r;
  do {
    /* MSG_TRUNC: msg_len is the real length of a datagram too large for its slot. */
    r = recvmmsg(fd, m, n, MSG_DONTWAIT | MSG_TRUNC, NULL);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

int cgnet__sys_sendmmsg(int fd, struct mmsghdr *m, unsigned n) {
  int r;
  do {
    r = sendmmsg(fd, m, n, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

int cgnet__sys_shutdown_write(int fd) {
  if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN) return -errno;
  return 0;
}

int cgnet__sys_connect(int fd, const struct sockaddr *sa, socklen_t len) {
  int rc;
  do {
    rc = connect(fd, sa, len);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return 0;
  return errno == EINPROGRESS ? 1 : -errno;
}

int cgnet__sys_socket_error(int fd) {
  int soerr = 0;
  socklen_t l = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) < 0) return -errno;
  return -soerr;
}

int cgnet__sys_peer_name(int fd, struct sockaddr_storage *ss, socklen_t *len) {
  *len = sizeof *ss;
  return getpeername(fd, (struct sockaddr *)ss, len) < 0 ? -errno : 0;
}

int cgnet__sys_accept(int fd, cgnet__accepted *out, int max) {
  int n = 0;
  for (int tries = 0; tries < max; tries++) {
    cgnet__accepted *a = &out[n];
    a->len = sizeof a->addr;
    a->fd = accept4(fd, (struct sockaddr *)&a->addr, &a->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (a->fd >= 0) {
      n++;
      continue;
    }
    switch (errno) {
    case EINTR:
    case ECONNABORTED: /* the peer gave up while queued: the next one may be fine */
    case EPROTO:
      continue;
    case EAGAIN:
      return n;
    default:
      a->fd = -errno;
      return n + 1;
    }
  }
  return n;
}

int cgnet__sys_accept_shed(int fd) {
  int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return -errno;
  close(c);
  return 0;
}

unsigned long cgnet__sys_nofile_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return ~0ul;
  return (unsigned long)rl.rlim_cur;
}

int cgnet__sys_eventfd(void) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

void cgnet__sys_eventfd_signal(int fd) {
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
}

/* One read resets the counter whatever the number of writes (no EFD_SEMAPHORE). */
void cgnet__sys_eventfd_drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}

/* ---- the wake-up both backends use: an eventfd, watched for reading ---------------- */

int cgnet__eventfd_wake_open(cgnet__backend *b, cgnet__io *w) {
  w->fd = cgnet__sys_eventfd();
  if (w->fd < 0) {
    int err = w->fd;
    w->fd = -1;
    return err;
  }
  return b->ops->watch(b, w, CGNET__POLL_READ);
}

void cgnet__eventfd_wake_signal(cgnet__backend *b, cgnet__io *w) {
  (void)b;
  cgnet__sys_eventfd_signal(w->fd);
}

void cgnet__eventfd_wake_drain(cgnet__backend *b, cgnet__io *w) {
  (void)b;
  cgnet__sys_eventfd_drain(w->fd);
}

/* No unwatch: the backend is closed right after (its ring or epoll instance goes with
 * every registration). */
void cgnet__eventfd_wake_close(cgnet__backend *b, cgnet__io *w) {
  (void)b;
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
}
