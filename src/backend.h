/*
 * The backend seam: the calls a loop makes to the kernel's event interface.
 * src/backend/epoll.c implements it on Linux. Today it is readiness-shaped: six calls
 * (init, close, add, mod, del, wait) through which a loop learns which registered
 * objects are readable, writable or failed; everything above it (loop, conn, user code)
 * sees only "this pointer is readable / writable / failed". docs/design.md describes
 * the operation seam it is growing into.
 *
 * A backend belongs to one loop and is used from that loop's thread only, except
 * cgnet__backend_init/close which run on the thread that builds or frees the loop.
 */
#ifndef CGNET_BACKEND_H
#define CGNET_BACKEND_H

#include <stdint.h>

/* Interest flags for add/mod. */
#define CGNET__POLL_READ 0x1u
#define CGNET__POLL_WRITE 0x2u
#define CGNET__POLL_EDGE 0x4u /* edge-triggered */

/* Readiness flags in results. */
#define CGNET__READY_READ 0x1u
#define CGNET__READY_WRITE 0x2u
#define CGNET__READY_ERROR 0x4u /* error or hang-up: read to learn which */

typedef struct cgnet__backend {
  int fd;
} cgnet__backend;

typedef struct cgnet__ready {
  void *ptr;
  uint32_t flags;
} cgnet__ready;

int cgnet__backend_init(cgnet__backend *p);
void cgnet__backend_close(cgnet__backend *p);
int cgnet__backend_add(cgnet__backend *p, int fd, uint32_t interest, void *ptr);
int cgnet__backend_mod(cgnet__backend *p, int fd, uint32_t interest, void *ptr);
int cgnet__backend_del(cgnet__backend *p, int fd);
/* Wait up to timeout_ms (-1: forever, 0: poll) and fill at most max results. Returns the
 * count (0 on timeout or EINTR) or a negative error. */
int cgnet__backend_wait(cgnet__backend *p, cgnet__ready *out, int max, int timeout_ms);

#endif
