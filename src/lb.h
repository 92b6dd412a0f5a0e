/* Load balancers: pick the loop that gets a newly accepted connection. */
#ifndef CGNET_LB_H
#define CGNET_LB_H

#include <stddef.h>
#include <sys/socket.h>

#include "cgnet.h"

typedef size_t (*cgnet__lb_load_fn)(void *ctx, int loop_index);

typedef struct cgnet__lb {
  cgnet_lb kind;
  int n;                  /* number of loops, >= 1 */
  unsigned next;          /* round-robin cursor; only the accepting thread uses it */
  cgnet__lb_load_fn load; /* current connection count of a loop (least-conn) */
  void *ctx;
} cgnet__lb;

void cgnet__lb_init(cgnet__lb *lb, cgnet_lb kind, int n, cgnet__lb_load_fn load, void *ctx);

/*
 * Index of the loop for a connection from `peer`:
 *  - round-robin: 0, 1, ..., n-1, 0, ...
 *  - least-conn: the loop with the smallest load(); ties go to the lowest index.
 *  - source-hash: FNV-1a over the peer's IP bytes and port, folded (h ^= h >> 16) and taken
 * mod n; the same address always maps to the same loop. A Unix peer (AF_UNIX, usually
 * unnamed) goes round-robin; a NULL, other non-IP or truncated peer hashes as empty.
 */
int cgnet__lb_pick(cgnet__lb *lb, const struct sockaddr *peer, socklen_t len);

#endif
