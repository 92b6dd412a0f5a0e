/* The epoll backend (see src/backend.h). */
#include "../backend.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../internal/util.h"

/* How many epoll events one wait can return; results beyond go to the next wait. */
#define EPOLL_BATCH 256

static uint32_t to_epoll(uint32_t interest) {
  uint32_t ev = 0;
  if (interest & CGNET__POLL_READ) ev |= EPOLLIN;
  if (interest & CGNET__POLL_WRITE) ev |= EPOLLOUT;
  /* Edge mode reads until EAGAIN, so it wants to hear about the FIN as its own edge;
   * level mode learns of it from read() returning 0. */
  if (interest & CGNET__POLL_EDGE) ev |= EPOLLET | EPOLLRDHUP;
  return ev;
}

int cgnet__backend_init(cgnet__backend *p) {
  p->fd = epoll_create1(EPOLL_CLOEXEC);
  return p->fd < 0 ? -errno : 0;
}

void cgnet__backend_close(cgnet__backend *p) {
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
}

int cgnet__backend_add(cgnet__backend *p, int fd, uint32_t interest, void *ptr) {
  struct epoll_event ev = {.events = to_epoll(interest), .data.ptr = ptr};
  return epoll_ctl(p->fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int cgnet__backend_mod(cgnet__backend *p, int fd, uint32_t interest, void *ptr) {
  struct epoll_event ev = {.events = to_epoll(interest), .data.ptr = ptr};
  return epoll_ctl(p->fd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int cgnet__backend_del(cgnet__backend *p, int fd) {
  struct epoll_event ev = {0}; /* non-NULL for kernels before 2.6.9 */
  return epoll_ctl(p->fd, EPOLL_CTL_DEL, fd, &ev) < 0 ? -errno : 0;
}

int cgnet__backend_wait(cgnet__backend *p, cgnet__ready *out, int max, int timeout_ms) {
  struct epoll_event evs[EPOLL_BATCH];
  if (max > EPOLL_BATCH) max = EPOLL_BATCH;
  int n = epoll_wait(p->fd, evs, max, timeout_ms);
  if (cgnet__unlikely(n < 0)) return errno == EINTR ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    uint32_t e = evs[i].events, f = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) f |= CGNET__READY_READ;
    if (e & EPOLLOUT) f |= CGNET__READY_WRITE;
    if (e & (EPOLLERR | EPOLLHUP)) f |= CGNET__READY_ERROR;
    out[i].ptr = evs[i].data.ptr;
    out[i].flags = f;
  }
  return n;
}

/* ---- the loop's wake-up: an eventfd ------------------------------------------------- */

int cgnet__backend_wake_open(cgnet__backend *p, cgnet__io *w) {
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0) return -errno;
  return cgnet__backend_add(p, w->fd, CGNET__POLL_READ, w);
}

void cgnet__backend_wake_signal(cgnet__backend *p, cgnet__io *w) {
  (void)p;
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(w->fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
}

/* One read resets the counter whatever the number of writes (no EFD_SEMAPHORE). */
void cgnet__backend_wake_drain(cgnet__backend *p, cgnet__io *w) {
  (void)p;
  uint64_t v;
  while (read(w->fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}

/* No epoll_ctl DEL: the epoll instance is closed right after. */
void cgnet__backend_wake_close(cgnet__backend *p, cgnet__io *w) {
  (void)p;
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
}

/* ---- accepting: accept4 until the backlog is empty -------------------------------- */

int cgnet__backend_accept(cgnet__backend *p, cgnet__io *l, cgnet__accepted *out, int max) {
  (void)p;
  int n = 0;
  for (int tries = 0; tries < max; tries++) {
    cgnet__accepted *a = &out[n];
    a->len = sizeof a->addr;
    a->fd =
        accept4(l->fd, (struct sockaddr *)&a->addr, &a->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
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

int cgnet__backend_accept_shed(cgnet__backend *p, cgnet__io *l) {
  (void)p;
  int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return -errno;
  close(fd);
  return 0;
}
