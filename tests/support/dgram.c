/* UDP and Unix socket helpers for the tests (see dgram.h). Any thread. */
#include "dgram.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "support.h"

int tu_tmpdir(char *buf, size_t cap) {
  if (cap < 32) return -EINVAL;
  snprintf(buf, cap, "/tmp/cgnet-XXXXXX");
  return mkdtemp(buf) ? 0 : -errno;
}

void tu_rmdir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[512];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

int tu_connect_unix(const char *path) {
  struct sockaddr_un un;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  size_t n = strlen(path);
  if (n >= sizeof un.sun_path) return -ENAMETOOLONG;
  memcpy(un.sun_path, path, n);
  if (path[0] == '@') un.sun_path[0] = '\0';
  socklen_t len =
      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&un, len) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

socklen_t tu_loopback_addr(int family, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    s6->sin6_addr = in6addr_loopback;
    return sizeof *s6;
  }
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  s4->sin_family = AF_INET;
  s4->sin_port = htons((uint16_t)port);
  s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sizeof *s4;
}

int tu_udp_socket(int family, int port) {
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_storage ss;
  socklen_t len = tu_loopback_addr(family, 0, &ss);
  int err = bind(fd, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
  if (!err && port > 0) {
    len = tu_loopback_addr(family, port, &ss);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) err = -errno;
  }
  if (err) {
    close(fd);
    return err;
  }
  return fd;
}

int tu_udp_recv(int fd, void *buf, size_t cap, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
    if (n >= 0) return (int)n;
    if (errno != EAGAIN && errno != EINTR) return -errno;
    uint64_t now = tu_now_ms();
    if (now >= deadline) return -ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    poll(&p, 1, (int)(deadline - now));
  }
}

/* ---- the echo driver ----------------------------------------------------------------- */

typedef struct udp_client {
  int fd;
  int next;        /* next sequence number to send */
  int outstanding; /* sent, not answered */
  int answered;
  uint8_t *seen; /* per sequence number */
} udp_client;

/* Datagram `seq` of client `id`: id and seq, then the pattern of stream id*2^20+seq. */
static void make_dgram(uint8_t *buf, size_t size, uint32_t id, uint32_t seq) {
  memcpy(buf, &id, 4);
  memcpy(buf + 4, &seq, 4);
  tu_pattern_fill(buf + 8, size - 8, ((uint64_t)id << 20) + seq, 0);
}

/* Check one reply; 1 if it is an unseen datagram of client id. */
static int check_reply(udp_client *c, uint32_t id, const uint8_t *buf, int n, size_t size,
                       int count) {
  uint32_t rid, seq;
  if (n != (int)size) return 0;
  memcpy(&rid, buf, 4);
  memcpy(&seq, buf + 4, 4);
  if (rid != id || seq >= (uint32_t)count || (int)seq >= c->next || c->seen[seq]) return 0;
  if (tu_pattern_mismatches(buf + 8, size - 8, ((uint64_t)id << 20) + seq, 0)) return 0;
  c->seen[seq] = 1;
  return 1;
}

static void pump_client(udp_client *c, uint32_t id, uint8_t *buf, size_t size, int count,
                        int window, tu_udp_echo_result *res) {
  for (;;) { /* replies */
    ssize_t n = recv(c->fd, buf, size + 1, MSG_DONTWAIT);
    if (n < 0) break;
    if (check_reply(c, id, buf, (int)n, size, count)) {
      res->replies++;
      c->answered++;
      c->outstanding--;
    } else {
      res->bad++;
    }
  }
  while (c->next < count && c->outstanding < window) {
    make_dgram(buf, size, id, (uint32_t)c->next);
    if (send(c->fd, buf, size, MSG_DONTWAIT) != (ssize_t)size) break;
    c->next++;
    c->outstanding++;
  }
}

int tu_udp_echo(int family, int port, int nclients, int count, size_t size, int window,
                int timeout_ms, tu_udp_echo_result *res) {
  memset(res, 0, sizeof *res);
  udp_client *cl = calloc((size_t)nclients, sizeof *cl);
  struct pollfd *pf = calloc((size_t)nclients, sizeof *pf);
  uint8_t *buf = malloc(size + 1);
  int rc = (!cl || !pf || !buf) ? -ENOMEM : 0;
  for (int i = 0; i < nclients && !rc; i++) {
    cl[i].fd = tu_udp_socket(family, port);
    cl[i].seen = calloc((size_t)count, 1);
    if (cl[i].fd < 0 || !cl[i].seen) rc = cl[i].fd < 0 ? cl[i].fd : -ENOMEM;
  }
  uint64_t t0 = tu_now_ms(), deadline = t0 + (uint64_t)timeout_ms;
  int done = 0;
  while (!rc && done < nclients) {
    done = 0;
    for (int i = 0; i < nclients; i++) {
      pump_client(&cl[i], (uint32_t)i, buf, size, count, window, res);
      done += cl[i].answered == count;
      pf[i] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
    }
    if (done == nclients) break;
    if (tu_now_ms() >= deadline)
      rc = -ETIMEDOUT;
    else
      poll(pf, (nfds_t)nclients, 20);
  }
  res->elapsed_ms = tu_now_ms() - t0;
  for (int i = 0; cl && i < nclients; i++) {
    res->lost += count - cl[i].answered;
    if (cl[i].fd > 0) close(cl[i].fd);
    free(cl[i].seen);
  }
  free(cl);
  free(pf);
  free(buf);
  if (!rc && res->bad) rc = -EPROTO;
  return rc;
}
