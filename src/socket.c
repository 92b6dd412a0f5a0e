/* Socket creation and socket options (listeners and accepted connections). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

static int set_int_opt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

static int bind_and_listen(int fd, const struct sockaddr *sa, socklen_t len, int backlog) {
  if (bind(fd, sa, len) < 0) return -errno;
  if (listen(fd, backlog) < 0) return -errno;
  return 0;
}

/* Datagram sockets (a server's, or a client's connected ones) get the buffer sizes
 * here; stream conns get theirs at accept or dial (cgnet__apply_conn_options). */
int cgnet__set_dgram_buffers(int fd, const cgnet_options *o) {
  int err = 0;
  if (o->socket_recv_buffer > 0)
    err = cgnet__set_bufsize(fd, SO_RCVBUF, o->socket_recv_buffer);
  if (!err && o->socket_send_buffer > 0)
    err = cgnet__set_bufsize(fd, SO_SNDBUF, o->socket_send_buffer);
  return err;
}

/* SO_REUSEADDR: on TCP listeners (default on), and on UDP only for a multicast group,
 * where several receivers share the port; on a unicast UDP socket it would let a second
 * server bind the same port silently and take part of its traffic. */
static int wants_reuse_addr(int socktype, const struct sockaddr *sa,
                            const cgnet_options *o) {
  if (o->reuse_addr == CGNET_OFF) return 0;
  if (socktype == SOCK_STREAM) return 1;
  if (sa->sa_family == AF_INET)
    return IN_MULTICAST(
        ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr));
  return sa->sa_family == AF_INET6 &&
         IN6_IS_ADDR_MULTICAST(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
}

static int open_listener(int family, int socktype, const struct sockaddr *sa, socklen_t len,
                         int v6only, const cgnet_options *o, int reuse_port) {
  int fd = socket(family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int err = 0;
  if (wants_reuse_addr(socktype, sa, o)) err = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  if (!err && reuse_port) err = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
  if (!err && family == AF_INET6) err = set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only);
  if (!err) err = cgnet__bind_to_device(fd, o);
  if (!err && socktype == SOCK_DGRAM) err = cgnet__set_dgram_buffers(fd, o);
  if (!err && socktype == SOCK_DGRAM && bind(fd, sa, len) < 0) err = -errno;
  if (!err && socktype == SOCK_STREAM) err = bind_and_listen(fd, sa, len, o->backlog);
  if (err) {
    close(fd);
    return err;
  }
  return fd;
}

/* A bound, listening, non-blocking TCP socket for `a` (or a bound UDP socket for a udp
 * address), or a negative error. A dual-stack wildcard ("tcp://:port") falls back to
 * 0.0.0.0 when the system has no IPv6. */
int cgnet__listen(const cgnet__addr *a, const cgnet_options *o, int reuse_port) {
  int family = a->sa.ss_family;
  int fd = open_listener(family, a->socktype, (const struct sockaddr *)&a->sa, a->salen,
                         a->v6only, o, reuse_port);
  if (fd == -EAFNOSUPPORT && a->dual_stack) {
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = ((const struct sockaddr_in6 *)&a->sa)->sin6_port,
                              .sin_addr.s_addr = htonl(INADDR_ANY)};
    fd = open_listener(AF_INET, a->socktype, (struct sockaddr *)&sin, sizeof sin, 0, o,
                       reuse_port);
  }
  return fd;
}

/* options.bind_to_device: SO_BINDTODEVICE (needs CAP_NET_RAW on older kernels). */
int cgnet__bind_to_device(int fd, const cgnet_options *o) {
  if (!o->bind_to_device) return 0;
  size_t n = strlen(o->bind_to_device);
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o->bind_to_device, (socklen_t)n) < 0)
    return -errno;
  return 0;
}

int cgnet__set_nodelay(int fd, int on) {
  return set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
}

int cgnet__set_keepalive(int fd, int idle_s, int interval_s, int count) {
  if (idle_s <= 0) return set_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 0);
  int err = set_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  if (!err) err = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s);
  if (!err && interval_s > 0) err = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL, interval_s);
  if (!err && count > 0) err = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPCNT, count);
  return err;
}

int cgnet__set_linger(int fd, int seconds) {
  struct linger l = {.l_onoff = seconds >= 0, .l_linger = seconds >= 0 ? seconds : 0};
  return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0 ? -errno : 0;
}

int cgnet__set_bufsize(int fd, int optname, int bytes) {
  if (bytes <= 0) return CGNET_EINVAL;
  return set_int_opt(fd, SOL_SOCKET, optname, bytes);
}

/* The engine's socket defaults for a newly accepted conn. Failures are not fatal: the
 * conn works without the option (e.g. TCP_NODELAY on a socket that already closed). The
 * TCP options are skipped on Unix conns. */
void cgnet__apply_conn_options(int fd, int family, const cgnet_options *o) {
  if (family != AF_UNIX && o->tcp_nodelay != CGNET_OFF) (void)cgnet__set_nodelay(fd, 1);
  if (family != AF_UNIX && o->tcp_keepalive > 0) {
    int interval = o->tcp_keepalive_interval ? o->tcp_keepalive_interval : o->tcp_keepalive;
    (void)cgnet__set_keepalive(fd, o->tcp_keepalive, interval, o->tcp_keepalive_count);
  }
  if (o->linger > 0) (void)cgnet__set_linger(fd, o->linger);
  if (o->linger == CGNET_LINGER_RESET) (void)cgnet__set_linger(fd, 0);
  if (o->socket_recv_buffer > 0)
    (void)cgnet__set_bufsize(fd, SO_RCVBUF, o->socket_recv_buffer);
  if (o->socket_send_buffer > 0)
    (void)cgnet__set_bufsize(fd, SO_SNDBUF, o->socket_send_buffer);
}
