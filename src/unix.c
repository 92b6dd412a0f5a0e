/*
 * Unix domain stream sockets: the listener's bind with stale-file recovery, the removal
 * of the socket file at shutdown, and peer credentials.
 *
 * A socket file outlives the process that bound it (a crash, a kill -9), and bind() then
 * fails with EADDRINUSE although nobody listens. We probe the path with a non-blocking
 * connect(): a refusal means the file is stale and is replaced; an answer, or EAGAIN (a
 * live server whose backlog is full), means a live server owns it and we report
 * CGNET_EADDRINUSE. A path that is not a socket is never removed.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"

static const char *path_of(const cgnet__addr *a) {
  return ((const struct sockaddr_un *)(const void *)&a->sa)->sun_path;
}

static int new_socket(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

/* How long a probe whose connect is in progress may wait for its outcome. A Unix connect
 * normally completes or fails at once; this only bounds an unusual kernel answer. */
#define PROBE_WAIT_MS 100

/* The outcome (0 or an errno) of a connect that said EINPROGRESS, waiting at most
 * PROBE_WAIT_MS; ETIMEDOUT if it is still undecided. */
static int probe_outcome(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  int n;
  do {
    n = poll(&p, 1, PROBE_WAIT_MS);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  if (n == 0) return ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
  return err;
}

/* Does a server answer on the path? 1: yes, 0: no (stale), or a negative error. The probe
 * never blocks: a blocking connect to a live server whose backlog is full waits until
 * that server accepts, which may be never. */
static int someone_listens(const cgnet__addr *a) {
  int fd = new_socket(); /* non-blocking */
  if (fd < 0) return fd;
  int err = connect(fd, (const struct sockaddr *)&a->sa, a->salen) == 0 ? 0 : errno;
  if (err == EINPROGRESS) err = probe_outcome(fd);
  close(fd);
  switch (err) {
  case 0:
    return 1;
  case EAGAIN:    /* its backlog is full: it is alive */
  case ETIMEDOUT: /* no verdict in time: never take a path that may be in use */
    return 1;
  case ECONNREFUSED:
    return 0;
  default:
    return -err;
  }
}

/* bind() said EADDRINUSE: replace the file if it is a stale socket. */
static int replace_stale(const cgnet__addr *a) {
  struct stat st;
  if (lstat(path_of(a), &st) < 0) return errno == ENOENT ? 0 : -errno; /* gone: retry */
  if (!S_ISSOCK(st.st_mode)) return CGNET_EADDRINUSE;
  int live = someone_listens(a);
  if (live) return live > 0 ? CGNET_EADDRINUSE : live;
  if (unlink(path_of(a)) < 0 && errno != ENOENT) return -errno;
  return 0;
}

static int bind_listen(int fd, const cgnet__addr *a, int backlog) {
  if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0) return -errno;
  if (listen(fd, backlog) < 0) return -errno;
  return 0;
}

int cgnet__unix_listen(const cgnet__addr *a, const cgnet_options *o, int *file, dev_t *dev,
                       ino_t *ino) {
  *file = 0;
  int fd = new_socket();
  if (fd < 0) return fd;
  int err = bind_listen(fd, a, o->backlog);
  if (err == CGNET_EADDRINUSE && !a->abstract) {
    err = replace_stale(a);
    if (!err) err = bind_listen(fd, a, o->backlog);
  }
  if (!err && !a->abstract) {
    struct stat st;
    if (lstat(path_of(a), &st) == 0) {
      *file = 1;
      *dev = st.st_dev;
      *ino = st.st_ino;
    }
  }
  if (err) {
    close(fd);
    return err;
  }
  return fd;
}

void cgnet__unix_unlink(const cgnet__addr *a, dev_t dev, ino_t ino) {
  struct stat st;
  if (lstat(path_of(a), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev &&
      st.st_ino == ino)
    (void)unlink(path_of(a));
}

/* ---- public API ---------------------------------------------------------------------- */

int cgnet_conn_peer_cred(const cgnet_conn *c, pid_t *pid, uid_t *uid, gid_t *gid) {
  if (c->kind == CGNET__SERVER_DGRAM || c->remote.ss_family != AF_UNIX)
    return CGNET_EUNSUPPORTED;
  if (cgnet__conn_closed(c)) return CGNET_ECLOSED;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
  if (pid) *pid = cred.pid;
  if (uid) *uid = cred.uid;
  if (gid) *gid = cred.gid;
  return 0;
}
