/*
 * The poller seam: the handful of calls a loop makes to learn which descriptors are
 * ready. src/poller/epoll.c implements it on Linux; a kqueue or io_uring (POLL_ADD
 * multishot) backend implements the same six functions. Everything above this seam
 * (loop, conn, user code) sees only "this pointer is readable / writable / failed".
 *
 * A poller belongs to one loop and is used from that loop's thread only, except
 * cgnet__poller_init/close which run on the thread that builds or frees the loop.
 */
#ifndef CGNET_POLLER_H
#define CGNET_POLLER_H

#include <stdint.h>

/* Interest flags for add/mod. */
#define CGNET__POLL_READ 0x1u
#define CGNET__POLL_WRITE 0x2u
#define CGNET__POLL_EDGE 0x4u /* edge-triggered */

/* Readiness flags in results. */
#define CGNET__READY_READ 0x1u
#define CGNET__READY_WRITE 0x2u
#define CGNET__READY_ERROR 0x4u /* error or hang-up: read to learn which */

typedef struct cgnet__poller {
  int fd;
} cgnet__poller;

typedef struct cgnet__ready {
  void *ptr;
  uint32_t flags;
} cgnet__ready;

int cgnet__poller_init(cgnet__poller *p);
void cgnet__poller_close(cgnet__poller *p);
int cgnet__poller_add(cgnet__poller *p, int fd, uint32_t interest, void *ptr);
int cgnet__poller_mod(cgnet__poller *p, int fd, uint32_t interest, void *ptr);
int cgnet__poller_del(cgnet__poller *p, int fd);
/* Wait up to timeout_ms (-1: forever, 0: poll) and fill at most max results. Returns the
 * count (0 on timeout or EINTR) or a negative error. */
int cgnet__poller_wait(cgnet__poller *p, cgnet__ready *out, int max, int timeout_ms);

#endif
