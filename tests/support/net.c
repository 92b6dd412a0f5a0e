/* Loopback clients, payload patterns and the multi-client echo driver. Any thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"

static int remaining_ms(uint64_t deadline) {
  uint64_t now = tu_now_ms();
  if (now >= deadline) return 0;
  uint64_t left = deadline - now;
  return left > 1000000 ? 1000000 : (int)left;
}

/* Wait for `events` on fd until the deadline. 1: ready, 0: timed out, <0: -errno. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    struct pollfd p = {.fd = fd, .events = events};
    int ms = remaining_ms(deadline);
    int r = poll(&p, 1, ms);
    if (r > 0) return 1;
    if (r == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

static void fill_loopback(int family, int port, struct sockaddr_storage *ss,
                          socklen_t *len) {
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    s6->sin6_addr = in6addr_loopback;
    *len = sizeof(*s6);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *len = sizeof(*s4);
  }
}

int tu_set_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int tu_connect(int family, int port, int nonblock, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  struct sockaddr_storage ss;
  socklen_t len;
  fill_loopback(family, port, &ss, &len);
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
    if (errno != EINPROGRESS) {
      int e = errno;
      close(fd);
      return -e;
    }
    int r = wait_fd(fd, POLLOUT, deadline);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
      close(fd);
      if (r == 0) return -ETIMEDOUT;
      return r < 0 ? r : -(soerr ? soerr : EIO);
    }
  }
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!nonblock) tu_set_nonblock(fd, 0);
  return fd;
}

int tu_local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -1;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -1;
}

int tu_send_all(int fd, const void *buf, size_t len, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    int r = wait_fd(fd, POLLOUT, deadline);
    if (r == 0) return -ETIMEDOUT;
    if (r < 0) return r;
  }
  return 0;
}

int tu_recv_exact(int fd, void *buf, size_t len, int timeout_ms, size_t *got) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  uint8_t *p = buf;
  size_t off = 0;
  int rc = 0;
  while (off < len) {
    ssize_t n = recv(fd, p + off, len - off, MSG_DONTWAIT);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    if (n == 0) {
      rc = TU_EEOF;
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      rc = -errno;
      break;
    }
    int r = wait_fd(fd, POLLIN, deadline);
    if (r == 0) {
      rc = -ETIMEDOUT;
      break;
    }
    if (r < 0) {
      rc = r;
      break;
    }
  }
  if (got) *got = off;
  return rc;
}

int tu_expect_eof(int fd, int timeout_ms, size_t *extra) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  uint8_t scratch[16384];
  size_t got = 0;
  int rc;
  for (;;) {
    ssize_t n = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0) {
      rc = 0;
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      rc = -errno;
      break;
    }
    int r = wait_fd(fd, POLLIN, deadline);
    if (r == 0) {
      rc = -ETIMEDOUT;
      break;
    }
    if (r < 0) {
      rc = r;
      break;
    }
  }
  if (extra)
    *extra = got;
  else if (got > 0 && rc == 0)
    rc = 1;
  return rc;
}

void tu_close_reset(int fd) {
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(fd);
}

int tu_listen_any(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_storage ss;
  socklen_t len;
  fill_loopback(AF_INET, 0, &ss, &len);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  *port = tu_local_port(fd);
  return fd;
}

/* ---- payloads ---------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t block_of(uint64_t seed, size_t blk) {
  return mix64(seed * 0x100000001b3ull ^ (uint64_t)blk);
}

uint8_t tu_pattern_byte(uint64_t seed, size_t i) {
  return (uint8_t)(block_of(seed, i / 8) >> ((i % 8) * 8));
}

void tu_pattern_fill(uint8_t *buf, size_t len, uint64_t seed, size_t offset) {
  size_t i = 0;
  while (i < len) {
    size_t pos = offset + i;
    uint64_t b = block_of(seed, pos / 8);
    for (size_t k = pos % 8; k < 8 && i < len; k++, i++)
      buf[i] = (uint8_t)(b >> (k * 8));
  }
}

size_t tu_pattern_mismatches(const uint8_t *buf, size_t len, uint64_t seed, size_t offset) {
  size_t bad = 0, i = 0;
  while (i < len) {
    size_t pos = offset + i;
    uint64_t b = block_of(seed, pos / 8);
    for (size_t k = pos % 8; k < 8 && i < len; k++, i++)
      if (buf[i] != (uint8_t)(b >> (k * 8))) bad++;
  }
  return bad;
}

size_t tu_first_diff(const uint8_t *a, const uint8_t *b, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (a[i] != b[i]) return i;
  return SIZE_MAX;
}

/* ---- echo driver ------------------------------------------------------------------- */

static int client_done(const tu_echo_client *c) {
  return c->err != 0 || (c->tx_off >= c->tx_len && c->rx_off >= c->rx_len);
}

static void client_io(tu_echo_client *c, short revents) {
  static _Thread_local uint8_t scratch[65536]; /* pattern mode: one chunk at a time */
  if ((revents & (POLLIN | POLLERR | POLLHUP)) && c->rx_off < c->rx_len) {
    for (int spins = 0; spins < 64 && c->rx_off < c->rx_len; spins++) {
      size_t want = c->rx_len - c->rx_off;
      if (!c->rx && want > sizeof scratch) want = sizeof scratch;
      ssize_t n = recv(c->fd, c->rx ? c->rx + c->rx_off : scratch, want, MSG_DONTWAIT);
      if (n > 0) {
        if (!c->rx) c->bad += tu_pattern_mismatches(scratch, (size_t)n, c->seed, c->rx_off);
        c->rx_off += (size_t)n;
        continue;
      }
      if (n == 0)
        c->err = TU_EEOF;
      else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        c->err = -errno;
      break;
    }
  }
  if (c->err == 0 && (revents & (POLLOUT | POLLERR)) && c->tx_off < c->tx_len) {
    size_t chunk = c->tx_len - c->tx_off;
    if (chunk > sizeof scratch) chunk = sizeof scratch;
    const uint8_t *p = c->tx ? c->tx + c->tx_off : scratch;
    if (!c->tx) tu_pattern_fill(scratch, chunk, c->seed, c->tx_off);
    ssize_t n = send(c->fd, p, chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0)
      c->tx_off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      c->err = -errno;
  }
}

/* Bytes moved so far by every client: progress is measured by it. */
static size_t moved(const tu_echo_client *cl, int n) {
  size_t sum = 0;
  for (int i = 0; i < n; i++)
    sum += cl[i].tx_off + cl[i].rx_off;
  return sum;
}

int tu_echo_drive(tu_echo_client *cl, int n, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  /* A transfer that stalls this long has failed: fail fast instead of waiting for the
   * overall deadline (a broken echo would otherwise cost every test its full budget). */
  const uint64_t stall_ms = 3000u * TU_SLOW;
  uint64_t last_progress = tu_now_ms();
  size_t last_moved = moved(cl, n);
  struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
  if (!pf) return -ENOMEM;
  for (int i = 0; i < n; i++)
    tu_set_nonblock(cl[i].fd, 1);
  int rc = 0;
  for (;;) {
    int active = 0;
    for (int i = 0; i < n; i++) {
      pf[i].fd = -1;
      pf[i].events = 0;
      pf[i].revents = 0;
      if (client_done(&cl[i])) {
        if (cl[i].err && rc == 0) rc = cl[i].err;
        continue;
      }
      pf[i].fd = cl[i].fd;
      if (cl[i].rx_off < cl[i].rx_len) pf[i].events |= POLLIN;
      if (cl[i].tx_off < cl[i].tx_len) pf[i].events |= POLLOUT;
      active++;
    }
    if (rc != 0 || active == 0) break;
    int ms = remaining_ms(deadline);
    size_t now_moved = moved(cl, n);
    if (now_moved != last_moved) {
      last_moved = now_moved;
      last_progress = tu_now_ms();
    }
    if (ms == 0 || tu_now_ms() - last_progress > stall_ms) {
      rc = -ETIMEDOUT;
      break;
    }
    int r = poll(pf, (nfds_t)n, ms > 100 ? 100 : ms);
    if (r < 0 && errno != EINTR) {
      rc = -errno;
      break;
    }
    for (int i = 0; i < n && r > 0; i++)
      if (pf[i].fd >= 0 && pf[i].revents) client_io(&cl[i], pf[i].revents);
  }
  free(pf);
  return rc;
}
