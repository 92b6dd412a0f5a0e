/*
 * The backend seam: the calls a loop makes to the kernel's event interface.
 * src/backend/epoll.c implements it on Linux. Six calls (init, close, add, mod, del,
 * wait) are readiness-shaped: through them a loop learns which registered objects are
 * readable, writable or failed. The loop's own objects go through operations instead,
 * which own their syscalls: the wake-up (open, signal, drain, close) and a listener's
 * accepts (accept, shed). docs/design.md describes the operation seam the rest is
 * moving to.
 *
 * A backend belongs to one loop and is used from that loop's thread only, except
 * cgnet__backend_init/close and wake_open/close, which run on the thread that builds or
 * frees the loop, and wake_signal, which any thread may call.
 */
#ifndef CGNET_BACKEND_H
#define CGNET_BACKEND_H

#include <stdint.h>
#include <sys/socket.h>

/* What a backend result points at: every registered object starts with this. */
typedef enum cgnet__kind {
  CGNET__KIND_CONN = 1,
  CGNET__KIND_LISTENER,
  CGNET__KIND_WAKE,
  CGNET__KIND_UDP, /* a cgnet__udp (udp.c) */
} cgnet__kind;

typedef struct cgnet__io {
  int fd;
  cgnet__kind kind;
} cgnet__io;

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

/* ---- the loop's wake-up ----------------------------------------------------------------
 * A signal from any thread makes the loop's wait return a result pointing at the wake-up
 * object; the loop drains it before looking at what the signal was for, so a signal
 * raised after the drain makes the next wait return again. */

/* Create the wake-up in w->fd and register it with p. Returns 0 or a negative errno. */
int cgnet__backend_wake_open(cgnet__backend *p, cgnet__io *w);
/* Any thread: wake the loop. Reads only w->fd, fixed from open to close. */
void cgnet__backend_wake_signal(cgnet__backend *p, cgnet__io *w);
/* Loop thread, on w's result: consume the signals raised so far. */
void cgnet__backend_wake_drain(cgnet__backend *p, cgnet__io *w);
/* Release the wake-up (before cgnet__backend_close); w->fd becomes -1. */
void cgnet__backend_wake_close(cgnet__backend *p, cgnet__io *w);

/* ---- accepting ---------------------------------------------------------------------- */

/* One result of an accept: a new non-blocking, close-on-exec socket and its peer's
 * address, or (fd < 0) the negative errno that ended the batch. */
typedef struct cgnet__accepted {
  int fd;
  socklen_t len;
  struct sockaddr_storage addr;
} cgnet__accepted;

/* Accept up to max pending connections on listener l into out, in arrival order. An
 * attempt that fails with ECONNABORTED, EPROTO or EINTR uses up one of the max and is
 * skipped; an empty backlog (EAGAIN) ends the batch with no entry; any other error
 * (EMFILE, ENFILE, ...) ends it with an entry carrying the error, so the caller can
 * apply its policy after handling the sockets accepted before it. Returns the number of
 * entries filled, 0 when nothing was pending. */
int cgnet__backend_accept(cgnet__backend *p, cgnet__io *l, cgnet__accepted *out, int max);
/* Accept one pending connection on l and close it at once (a peer turned away when out
 * of descriptors sees a clean close). Needs one free descriptor. Returns 0 or a negative
 * errno. */
int cgnet__backend_accept_shed(cgnet__backend *p, cgnet__io *l);

#endif
