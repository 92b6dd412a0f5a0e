/*
 * The epoll backend (src/backend.h): readiness only. Every object is watched with
 * epoll_ctl and reported as READY; the core then performs the syscall (src/backend/sys.c)
 * itself, so a message costs exactly one read and one send.
 */
#include "../backend.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
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

/* The backend's own state is its counters. */
static cgnet__backend_stats *stats_of(cgnet__backend *b) {
  return b->impl;
}

static int epoll_init(cgnet__backend *b, const cgnet__backend_config *cfg) {
  (void)cfg;
  b->impl = calloc(1, sizeof(cgnet__backend_stats));
  if (!b->impl) return -ENOMEM;
  b->fd = epoll_create1(EPOLL_CLOEXEC);
  if (b->fd >= 0) return 0;
  int err = -errno;
  free(b->impl);
  b->impl = NULL;
  return err;
}

static void epoll_close(cgnet__backend *b) {
  if (b->fd >= 0) close(b->fd);
  b->fd = -1;
  free(b->impl);
  b->impl = NULL;
}

/* An object is registered from its first watch until unwatch; io->watch remembers the
 * interest, with bit 7 set while registered (so interest 0 stays registered). */
#define REGISTERED 0x80u

static int epoll_watch(cgnet__backend *b, cgnet__io *io, uint32_t interest) {
  struct epoll_event ev = {.events = to_epoll(interest), .data.ptr = io};
  int op = (io->watch & REGISTERED) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  stats_of(b)->watches++;
  if (epoll_ctl(b->fd, op, io->fd, &ev) < 0) return -errno;
  io->watch = (uint8_t)(interest | REGISTERED);
  return 0;
}

static void epoll_unwatch(cgnet__backend *b, cgnet__io *io) {
  if (!(io->watch & REGISTERED)) return;
  struct epoll_event ev = {0}; /* non-NULL for kernels before 2.6.9 */
  stats_of(b)->watches++;
  (void)epoll_ctl(b->fd, EPOLL_CTL_DEL, io->fd, &ev);
  io->watch = 0;
}

static int epoll_wait_results(cgnet__backend *b, cgnet__result *out, int max,
                              int timeout_ms) {
  struct epoll_event evs[EPOLL_BATCH];
  if (max > EPOLL_BATCH) max = EPOLL_BATCH;
  int n = epoll_wait(b->fd, evs, max, timeout_ms);
  if (cgnet__unlikely(n < 0)) return errno == EINTR ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    uint32_t e = evs[i].events, f = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) f |= CGNET__READY_READ;
    if (e & EPOLLOUT) f |= CGNET__READY_WRITE;
    if (e & (EPOLLERR | EPOLLHUP)) f |= CGNET__READY_ERROR;
    out[i].io = evs[i].data.ptr;
    out[i].type = CGNET__RES_READY;
    out[i].flags = (uint8_t)f;
  }
  return n;
}

static void epoll_get_stats(const cgnet__backend *b, cgnet__backend_stats *out) {
  *out = b->impl ? *(const cgnet__backend_stats *)b->impl : (cgnet__backend_stats){0};
}

const cgnet__backend_ops cgnet__epoll_ops = {
    .name = "epoll",
    .completion = false,
    .init = epoll_init,
    .close = epoll_close,
    .wait = epoll_wait_results,
    .watch = epoll_watch,
    .unwatch = epoll_unwatch,
    /* The wake-up: an eventfd, registered for reading (src/backend/sys.c). */
    .wake_open = cgnet__eventfd_wake_open,
    .wake_signal = cgnet__eventfd_wake_signal,
    .wake_drain = cgnet__eventfd_wake_drain,
    .wake_close = cgnet__eventfd_wake_close,
    .get_stats = epoll_get_stats,
};
