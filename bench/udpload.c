/*
 * udpload — a load generator and checker for UDP echo servers.
 *
 *   udpload -a HOST:PORT [-c SOCKETS] [-s SIZE] [-w WINDOW] [-d SECONDS] [-n COUNT]
 *
 * Standalone (libc + epoll, no cgnet), one thread. Each of SOCKETS sockets is connected
 * to the server from its own source port, so a server with sessions sees SOCKETS peers.
 * Each keeps WINDOW datagrams of SIZE bytes in flight and sends the next when one comes
 * back, until SECONDS have passed or COUNT datagrams were sent in all (whichever comes
 * first; both are bounded), then waits up to a second for the last replies.
 *
 * Every byte is checked: datagram k of socket i carries k in its first 8 bytes and then
 * bytes that are a function of (i, k), so a reply that is cut, changed, duplicated or
 * meant for another socket does not match. A datagram with no reply within LOSS_MS (or
 * overtaken by a later one) counts as lost; UDP may lose, so lost datagrams are reported
 * but are no error. A mismatch is: the exit status is 1.
 *
 * Output, one line: "udpload: datagrams=N seconds=S datagrams_per_s=R lost=L bad=B".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000ull
#define LOSS_MS 200       /* no reply this long: what is in flight is lost */
#define DRAIN_MS 1000     /* after the run: how long to wait for the last replies */
#define MAX_SIZE 65000    /* bytes per datagram at most */
#define MAX_SOCKETS 60000 /* bounded by the ephemeral ports anyway */
#define MAX_EVENTS 256

typedef struct sock {
  int fd;
  uint64_t next_send;   /* sequence number of the next datagram */
  uint64_t next_expect; /* oldest sequence number still in flight */
  uint64_t last_ns;     /* last send or reply */
} sock;

static struct {
  size_t size;
  uint64_t window, count, seconds;
  int nsock;
  uint64_t sent, received, lost, bad;
  uint8_t *tx, *rx;
} g = {.size = 64, .window = 1, .count = 10000000, .seconds = 5, .nsock = 64};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "udpload: %s: %s\n", what, strerror(errno));
  exit(2);
}

/* The bytes of datagram `seq` of socket `i`: the sequence number, then a pattern. */
static void fill(uint8_t *buf, int i, uint64_t seq) {
  memcpy(buf, &seq, sizeof seq);
  uint64_t x = seq * 0x9e3779b97f4a7c15ull ^ (uint64_t)i * 0xbf58476d1ce4e5b9ull;
  for (size_t k = sizeof seq; k < g.size; k++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[k] = (uint8_t)x;
  }
}

static void send_one(sock *s, int i, uint64_t now) {
  fill(g.tx, i, s->next_send);
  ssize_t n = send(s->fd, g.tx, g.size, 0);
  if (n == (ssize_t)g.size) {
    s->next_send++;
    g.sent++;
  } else if (n < 0 && errno != EAGAIN && errno != ECONNREFUSED && errno != ENOBUFS) {
    die("send");
  }
  s->last_ns = now;
}

/* Top the window up, unless the run is over. */
static void top_up(sock *s, int i, uint64_t now, int running) {
  while (running && g.sent < g.count && s->next_send - s->next_expect < g.window) {
    uint64_t before = s->next_send;
    send_one(s, i, now);
    if (s->next_send == before) return; /* the socket is full: later */
  }
}

/* One reply: in order, it retires what it overtook (lost) and itself. */
static void on_reply(sock *s, int i, size_t n) {
  uint64_t seq;
  if (n != g.size) {
    g.bad++;
    return;
  }
  memcpy(&seq, g.rx, sizeof seq);
  if (seq < s->next_expect || seq >= s->next_send) { /* late after a loss, or foreign */
    if (seq >= s->next_send) g.bad++;
    return;
  }
  fill(g.tx, i, seq);
  if (memcmp(g.rx, g.tx, g.size) != 0) {
    g.bad++;
    return;
  }
  g.lost += seq - s->next_expect;
  s->next_expect = seq + 1;
  g.received++;
}

static void read_socket(sock *s, int i, uint64_t now, int running) {
  for (;;) {
    ssize_t n = recv(s->fd, g.rx, MAX_SIZE + 1, MSG_TRUNC);
    if (n < 0) {
      if (errno != EAGAIN && errno != ECONNREFUSED) die("recv");
      break;
    }
    s->last_ns = now;
    on_reply(s, i, (size_t)n);
  }
  top_up(s, i, now, running);
}

/* Sockets silent for LOSS_MS with datagrams in flight: those are lost. */
static void expire(sock *socks, uint64_t now, int running) {
  for (int i = 0; i < g.nsock; i++) {
    sock *s = &socks[i];
    if (s->next_send == s->next_expect || now - s->last_ns < LOSS_MS * NS_PER_MS) continue;
    g.lost += s->next_send - s->next_expect;
    s->next_expect = s->next_send;
    top_up(s, i, now, running);
  }
}

static void open_sockets(sock *socks, const struct addrinfo *ai, int ep) {
  for (int i = 0; i < g.nsock; i++) {
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    socks[i] = (sock){.fd = fd};
  }
}

/* The measured run, then the drain. */
static void run(sock *socks, int ep, double *seconds) {
  uint64_t start = now_ns(), end = start + g.seconds * 1000000000ull, stop = 0;
  for (int i = 0; i < g.nsock; i++)
    top_up(&socks[i], i, start, 1);
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    uint64_t now = now_ns();
    int running = now < end && g.sent < g.count;
    if (!running && !stop) {
      stop = now;
      *seconds = (double)(now - start) / 1e9;
    }
    if (stop && (now - stop > DRAIN_MS * NS_PER_MS || g.received + g.lost == g.sent)) break;
    int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    now = now_ns();
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      read_socket(&socks[i], i, now, running);
    }
    expire(socks, now, running);
  }
}

static uint64_t number(const char *flag, const char *v, uint64_t min, uint64_t max) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (v[0] < '0' || v[0] > '9' || *end || errno || x < min || x > max) {
    fprintf(stderr, "udpload: %s '%s': want %llu..%llu\n", flag, v, (unsigned long long)min,
            (unsigned long long)max);
    exit(2);
  }
  return x;
}

/* "HOST:PORT" (the host may be bracketed IPv6) or "udp://HOST:PORT". */
static struct addrinfo *resolve(const char *arg) {
  if (strncmp(arg, "udp://", 6) == 0) arg += 6;
  char host[256];
  const char *colon = strrchr(arg, ':');
  size_t n = colon ? (size_t)(colon - arg) : 0;
  if (!colon || n >= sizeof host) {
    fprintf(stderr, "udpload: -a '%s': want HOST:PORT\n", arg);
    exit(2);
  }
  memcpy(host, arg, n);
  host[n] = '\0';
  if (host[0] == '[' && n > 1 && host[n - 1] == ']') {
    memmove(host, host + 1, n - 2);
    host[n - 2] = '\0';
  }
  struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *ai = NULL;
  int rc = getaddrinfo(host, colon + 1, &hints, &ai);
  if (rc) {
    fprintf(stderr, "udpload: -a '%s': %s\n", arg, gai_strerror(rc));
    exit(2);
  }
  return ai;
}

static const char USAGE[] =
    "usage: udpload -a HOST:PORT [-c SOCKETS] [-s SIZE] [-w WINDOW] [-d SECONDS] [-n "
    "COUNT]\n"
    "  -a  the UDP echo server (HOST:PORT, [v6]:PORT or udp://HOST:PORT)\n"
    "  -c  sockets, each from its own source port, 1..60000 (default 64)\n"
    "  -s  bytes per datagram, 8..65000 (default 64)\n"
    "  -w  datagrams in flight per socket, 1..1024 (default 1)\n"
    "  -d  seconds to run, 1..3600 (default 5)\n"
    "  -n  datagrams to send at most, 1..10^12 (default 10^7)\n";

int main(int argc, char **argv) {
  const char *addr = NULL;
  for (int opt; (opt = getopt(argc, argv, "a:c:s:w:d:n:h")) != -1;) {
    switch (opt) {
    case 'a':
      addr = optarg;
      break;
    case 'c':
      g.nsock = (int)number("-c", optarg, 1, MAX_SOCKETS);
      break;
    case 's':
      g.size = (size_t)number("-s", optarg, 8, MAX_SIZE);
      break;
    case 'w':
      g.window = number("-w", optarg, 1, 1024);
      break;
    case 'd':
      g.seconds = number("-d", optarg, 1, 3600);
      break;
    case 'n':
      g.count = number("-n", optarg, 1, 1000000000000ull);
      break;
    case 'h':
      fputs(USAGE, stdout);
      return 0;
    default:
      fputs(USAGE, stderr);
      return 2;
    }
  }
  if (!addr || optind != argc) {
    fputs(USAGE, stderr);
    return 2;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g.nsock + 64) {
    rl.rlim_cur = rl.rlim_max < (rlim_t)g.nsock + 64 ? rl.rlim_max : (rlim_t)g.nsock + 64;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  struct addrinfo *ai = resolve(addr);
  sock *socks = calloc((size_t)g.nsock, sizeof *socks);
  g.tx = malloc(MAX_SIZE + 1);
  g.rx = malloc(MAX_SIZE + 1);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!socks || !g.tx || !g.rx || ep < 0) die("setup");
  open_sockets(socks, ai, ep);
  freeaddrinfo(ai);
  double seconds = 0;
  run(socks, ep, &seconds);
  printf("udpload: datagrams=%llu seconds=%.2f datagrams_per_s=%.0f lost=%llu bad=%llu\n",
         (unsigned long long)g.received, seconds,
         seconds > 0 ? (double)g.received / seconds : 0.0, (unsigned long long)g.lost,
         (unsigned long long)g.bad);
  for (int i = 0; i < g.nsock; i++)
    close(socks[i].fd);
  close(ep);
  free(socks);
  free(g.tx);
  free(g.rx);
  return g.bad ? 1 : 0;
}
