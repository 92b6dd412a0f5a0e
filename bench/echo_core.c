/*
 * The echo load engine; see echo_core.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "echo_core.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_BUF (256u * 1024u)    /* per-thread read buffer */
#define WRITE_BURST (256u * 1024u) /* bytes per writev */
#define WRITE_FAIR (256u * 1024u)  /* bytes per conn per wake-up */
#define READS_PER_WAKE 4           /* reads per conn per wake-up */
#define MAX_EVENTS 256

/* Connecting: attempts per conn, each bounded (CONNECT_TIMEOUT_NS); pending connects
 * per thread. */
#define CONNECT_ATTEMPTS 5
#define CONNECT_INFLIGHT 128

/* The drain gives up after DRAIN_STALL_NS without a byte, or DRAIN_MAX_NS in all. */
#define DRAIN_STALL_NS (2000 * NS_PER_MS)
#define DRAIN_MAX_NS (10000 * NS_PER_MS)

static const char *const mode_names[] = {"pingpong", "pipeline", "stream"};

struct echo_config g_echo;

/* The tool's hooks: set by echo_run before the workers start. */
static const struct echo_hooks *g_hooks;
static int g_depth_set; /* -p was given */

static struct echo_conn *conn_at(struct echo_worker *w, size_t i) {
  return (struct echo_conn *)(void *)(w->conns + i * g_hooks->conn_size);
}

/* ------------------------------------------------------------------------------------ */
/* Open conns: messages, reading, writing                                               */
/* ------------------------------------------------------------------------------------ */

void echo_set_pollout(struct echo_worker *w, struct echo_conn *c, int on) {
  if (c->pollout == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->pollout = on;
}

void echo_conn_close(struct echo_worker *w, struct echo_conn *c) {
  close(c->fd);
  c->fd = -1;
  c->state = C_DONE;
  w->open--;
}

void echo_conn_lost(struct echo_worker *w, struct echo_conn *c, int err) {
  report("conn %u: %s after %llu bytes sent, %llu echoed", c->id,
         err ? strerror(err) : "closed by the server", (unsigned long long)c->tx_off,
         (unsigned long long)c->rx_off);
  w->st.conns_lost++;
  echo_conn_close(w, c);
}

void echo_verify(struct echo_worker *w, struct echo_conn *c, const uint8_t *buf, size_t n) {
  pattern_verify(buf, n, c->rx_off, c->id, c->shift, &c->reported, &w->st.byte_errors, 1);
}

void echo_stream_sample(struct echo_conn *c, uint64_t before, uint64_t now) {
  samples_sent(&c->samples, before, c->tx_off, g_echo.o.size, now);
}

/* Queue one more message (pingpong/pipeline): it goes out in the next write. */
static void send_msg(struct echo_conn *c, uint64_t now) {
  c->ts[c->msgs_sent % g_echo.depth] = now;
  c->msgs_sent++;
  c->tx_goal += g_echo.o.size;
}

/* Account for messages whose echo is now complete. */
static void complete_msgs(struct echo_worker *w, struct echo_conn *c, uint64_t now) {
  uint64_t size = g_echo.o.size;
  if (g_echo.mode == MODE_STREAM) {
    samples_echoed(&c->samples, c->rx_off, size, &c->msgs_recv, now, &w->st);
    return;
  }
  while (c->msgs_recv < c->msgs_sent && c->rx_off >= (c->msgs_recv + 1) * size) {
    uint64_t sent = c->ts[c->msgs_recv % g_echo.depth];
    c->msgs_recv++;
    if (in_window(now)) {
      w->st.msgs++;
      hist_record(&w->st.hist, now - sent);
    }
    if (!w->draining) send_msg(c, now);
  }
}

/* The plain stream: n echoed bytes. Returns 0 if the conn was closed. */
static int raw_input(struct echo_worker *w, struct echo_conn *c, const uint8_t *buf,
                     size_t n, uint64_t now) {
  if (c->rx_off + n > c->tx_off) {
    w->st.byte_errors += c->rx_off + n - c->tx_off;
    report("conn %u: the server sent %llu bytes more than it was sent", c->id,
           (unsigned long long)(c->rx_off + n - c->tx_off));
    w->st.conns_lost++;
    echo_conn_close(w, c);
    return 0;
  }
  echo_verify(w, c, buf, n);
  c->rx_off += n;
  if (in_window(now)) w->st.rx_bytes += n;
  return 1;
}

/* Read what the socket holds (a few big reads at most), check it, complete messages.
 * Returns 0 if the conn is gone. */
static int conn_read(struct echo_worker *w, struct echo_conn *c, uint64_t now) {
  for (int i = 0; i < READS_PER_WAKE; i++) {
    ssize_t r = read(c->fd, w->rbuf, READ_BUF);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
    if (r <= 0) {
      echo_conn_lost(w, c, r < 0 ? errno : 0);
      return 0;
    }
    size_t n = (size_t)r;
    if (g_hooks->input ? !g_hooks->input(w, c, w->rbuf, n, now)
                       : !raw_input(w, c, w->rbuf, n, now))
      return 0;
    complete_msgs(w, c, now);
    if (n < READ_BUF) return 1; /* drained the socket; level-triggered epoll says if more */
  }
  return 1;
}

/* The plain stream: write from tx_off towards tx_goal, straight out of the pattern
 * table, until the socket is full or this conn had its fair share; EPOLLOUT is on while
 * bytes wait. Returns 0 if the conn is gone. */
static int raw_write(struct echo_worker *w, struct echo_conn *c, uint64_t now) {
  if (g_echo.mode == MODE_STREAM && !w->draining) c->tx_goal = c->rx_off + g_echo.o.window;
  size_t budget = WRITE_FAIR;
  while (c->tx_off < c->tx_goal && budget > 0) {
    uint64_t left = c->tx_goal - c->tx_off;
    size_t want = left < WRITE_BURST ? (size_t)left : WRITE_BURST;
    if (want > budget) want = budget;
    struct iovec iov[WRITE_BURST / PERIOD + 2];
    int cnt =
        pattern_iov(iov, (int)(sizeof iov / sizeof iov[0]), c->tx_off, c->shift, want);
    ssize_t r = writev(c->fd, iov, cnt);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r < 0) {
      echo_conn_lost(w, c, errno);
      return 0;
    }
    uint64_t before = c->tx_off;
    c->tx_off += (uint64_t)r;
    budget -= (size_t)r;
    if (in_window(now)) w->st.tx_bytes += (uint64_t)r;
    if (g_echo.mode == MODE_STREAM) echo_stream_sample(c, before, now);
    if ((size_t)r < want) break; /* the socket is full */
  }
  echo_set_pollout(w, c, c->tx_off < c->tx_goal);
  return 1;
}

static int conn_write(struct echo_worker *w, struct echo_conn *c, uint64_t now) {
  return g_hooks->write ? g_hooks->write(w, c, now) : raw_write(w, c, now);
}

static int unsent(const struct echo_conn *c) {
  return g_hooks->unsent != NULL && g_hooks->unsent(c);
}

static int wants_write(const struct echo_worker *w, const struct echo_conn *c) {
  return c->tx_off < c->tx_goal || unsent(c) ||
         (g_echo.mode == MODE_STREAM && !w->draining);
}

static void on_event(struct echo_worker *w, struct echo_conn *c, uint32_t events) {
  if (c->state != C_OPEN) return; /* closed earlier in this batch */
  uint64_t now = now_ns();
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !conn_read(w, c, now)) return;
  if (wants_write(w, c))
    conn_write(w, c, now);
  else
    echo_set_pollout(w, c, 0);
}

/* ------------------------------------------------------------------------------------ */
/* Connecting: every conn up front, non-blocking, bounded retries                       */
/* ------------------------------------------------------------------------------------ */

static void connect_failed(struct echo_worker *w, struct echo_conn *c, int err,
                           uint64_t now, size_t *settled) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->attempts++;
  int hopeless = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
  if (c->attempts >= CONNECT_ATTEMPTS || hopeless || stopping()) {
    c->state = C_FAILED;
    w->st.connect_errors++;
    (*settled)++;
    report("conn %u: connect to %s failed after %d attempt%s: %s", c->id, g_echo.o.target,
           c->attempts, c->attempts == 1 ? "" : "s", strerror(err));
    return;
  }
  c->state = C_IDLE;
  c->when = now + (uint64_t)c->attempts * 100 * NS_PER_MS; /* back off */
}

/* The server answered the upgrade wrongly (the tool said why): not retried. */
static void handshake_bad(struct echo_worker *w, struct echo_conn *c, size_t *settled) {
  close(c->fd);
  c->fd = -1;
  c->state = C_FAILED;
  w->st.connect_errors++;
  (*settled)++;
}

/* The conn is ready for messages (connected, and upgraded if the tool upgrades). */
static void connect_ok(struct echo_worker *w, struct echo_conn *c, size_t *settled) {
  c->state = C_OPEN;
  echo_set_pollout(w, c, 0);
  if (g_hooks->opened) g_hooks->opened(c);
  w->open++;
  w->st.connected++;
  (*settled)++;
}

/* TCP is connected: the conn is ready, or its upgrade starts. Returns 1 if the conn is
 * still pending (upgrading). */
static int tcp_connected(struct echo_worker *w, struct echo_conn *c, uint64_t now,
                         size_t *settled) {
  c->pollout = 1; /* registered with EPOLLOUT while connecting */
  if (g_hooks->upgrade == NULL) {
    connect_ok(w, c, settled);
    return 0;
  }
  int err = g_hooks->upgrade(w, c);
  if (err != 0) {
    connect_failed(w, c, err, now, settled);
    return 0;
  }
  c->when = now + CONNECT_TIMEOUT_NS;
  return 1;
}

/* Start one attempt. Returns 1 if it is now pending. */
static int connect_start(struct echo_worker *w, struct echo_conn *c, uint64_t now,
                         size_t *settled) {
  int fd = socket(g_echo.o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    connect_failed(w, c, errno, now, settled);
    return 0;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    connect_failed(w, c, errno, now, settled);
    return 0;
  }
  if (connect(fd, (const struct sockaddr *)&g_echo.o.addr, g_echo.o.addrlen) == 0)
    return tcp_connected(w, c, now, settled);
  if (errno != EINPROGRESS) {
    connect_failed(w, c, errno, now, settled);
    return 0;
  }
  c->state = C_CONNECTING;
  c->when = now + CONNECT_TIMEOUT_NS;
  return 1;
}

/* A pending conn (connecting or upgrading) had an epoll event. Returns 1 if it is no
 * longer pending. */
static int pending_event(struct echo_worker *w, struct echo_conn *c, uint32_t events,
                         size_t *settled) {
  int err = 0;
  if (c->state == C_HANDSHAKE) {
    switch (g_hooks->handshake_event(w, c, events, &err)) {
    case HS_PENDING:
      return 0;
    case HS_DONE:
      connect_ok(w, c, settled);
      return 1;
    case HS_RETRY:
      connect_failed(w, c, err, now_ns(), settled);
      return 1;
    case HS_BAD:
      handshake_bad(w, c, settled);
      return 1;
    }
  }
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0 && (events & (EPOLLERR | EPOLLHUP))) err = ECONNRESET;
  if (err != 0) {
    connect_failed(w, c, err, now_ns(), settled);
    return 1;
  }
  return !tcp_connected(w, c, now_ns(), settled);
}

/* Connect (and upgrade) all of this worker's conns. At most CONNECT_INFLIGHT are pending
 * at a time so a burst of SYNs does not overflow the server's accept queue. */
static void connect_all(struct echo_worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  size_t next = 0, settled = 0, inflight = 0;
  uint64_t last_scan = 0;
  while (settled < w->nconns) {
    uint64_t now = now_ns();
    while (next < w->nconns && inflight < CONNECT_INFLIGHT)
      inflight += (size_t)connect_start(w, conn_at(w, next++), now, &settled);
    if (now - last_scan >= 50 * NS_PER_MS) { /* timeouts and retries */
      last_scan = now;
      for (size_t i = 0; i < next; i++) {
        struct echo_conn *c = conn_at(w, i);
        if ((c->state == C_CONNECTING || c->state == C_HANDSHAKE) && now >= c->when) {
          inflight--;
          connect_failed(w, c, ETIMEDOUT, now, &settled);
        } else if (c->state == C_IDLE && now >= c->when && inflight < CONNECT_INFLIGHT) {
          inflight += (size_t)connect_start(w, c, now, &settled);
        }
      }
    }
    if (settled == w->nconns) break;
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, 50);
    for (int i = 0; i < n; i++) {
      struct echo_conn *c = evs[i].data.ptr;
      if (c->state == C_OPEN) { /* bytes or a close before we sent anything */
        conn_read(w, c, 0);
        continue;
      }
      if (c->state != C_CONNECTING && c->state != C_HANDSHAKE) continue;
      if (pending_event(w, c, evs[i].events, &settled)) inflight--;
    }
  }
}

/* ------------------------------------------------------------------------------------ */
/* The run                                                                              */
/* ------------------------------------------------------------------------------------ */

static void window_event(void *w, void *c, uint32_t events) {
  on_event(w, c, events);
}

static void run(struct echo_worker *w) {
  uint64_t now = now_ns();
  for (size_t i = 0; i < w->nconns; i++) {
    struct echo_conn *c = conn_at(w, i);
    if (c->state != C_OPEN) continue;
    if (g_echo.mode != MODE_STREAM)
      for (uint64_t k = 0; k < g_echo.depth; k++)
        send_msg(c, now);
    conn_write(w, c, now);
  }
  w->st.meas_end = load_window_loop(w->ep, &w->open, window_event, w);
}

static int drained(const struct echo_conn *c) {
  return c->tx_off == c->tx_goal && c->rx_off == c->tx_off && !unsent(c);
}

static void conn_finish(struct echo_worker *w, struct echo_conn *c) {
  if (g_hooks->finish) g_hooks->finish(w, c);
  echo_conn_close(w, c);
}

/* Stop making messages, wait for the ones in flight to come back, close every conn.
 * Gives up after DRAIN_STALL_NS without a byte, or DRAIN_MAX_NS in all; conns still
 * waiting for their echo then count as undrained (an error: bytes went missing). */
static void drain(struct echo_worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  w->draining = 1;
  uint64_t start = now_ns(), progress = start;
  for (size_t i = 0; i < w->nconns; i++) {
    struct echo_conn *c = conn_at(w, i);
    if (c->state != C_OPEN) continue;
    if (g_echo.mode == MODE_STREAM) c->tx_goal = c->tx_off;
    if (drained(c)) conn_finish(w, c);
  }
  while (w->open > 0) {
    uint64_t now = now_ns();
    if (now - progress >= DRAIN_STALL_NS || now - start >= DRAIN_MAX_NS) break;
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, 100);
    for (int i = 0; i < n; i++) {
      struct echo_conn *c = evs[i].data.ptr;
      uint64_t before = c->rx_off;
      on_event(w, c, evs[i].events);
      if (c->rx_off != before) progress = now;
      if (c->state == C_OPEN && drained(c)) conn_finish(w, c);
    }
  }
  for (size_t i = 0; i < w->nconns; i++) {
    struct echo_conn *c = conn_at(w, i);
    if (c->state != C_OPEN) continue;
    w->st.undrained++;
    report("conn %u: %llu bytes never echoed (%llu sent, %llu echoed)", c->id,
           (unsigned long long)(c->tx_goal - c->rx_off), (unsigned long long)c->tx_off,
           (unsigned long long)c->rx_off);
    echo_conn_close(w, c);
  }
}

static void *worker_main(void *arg) {
  struct echo_worker *w = arg;
  connect_all(w);
  load_worker_sync();
  if (!stopping()) run(w);
  drain(w);
  return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Options                                                                              */
/* ------------------------------------------------------------------------------------ */

void echo_opts_init(void) {
  load_opts_init(&g_echo.o, 100, 64);
  g_echo.mode = MODE_PINGPONG;
  g_echo.depth = 16;
  g_depth_set = 0;
}

int echo_opt(int opt, const char *arg) {
  int taken = load_opt(&g_echo.o, opt, arg, 1);
  if (taken != 0) return taken;
  switch (opt) {
  case 'p':
    if (parse_u64(arg, 1, 1000000, 0, &g_echo.depth) != 0) return -1;
    g_depth_set = 1;
    return 1;
  case 'm':
    if (strcmp(arg, "pingpong") == 0)
      g_echo.mode = MODE_PINGPONG;
    else if (strcmp(arg, "pipeline") == 0)
      g_echo.mode = MODE_PIPELINE;
    else if (strcmp(arg, "stream") == 0)
      g_echo.mode = MODE_STREAM;
    else
      return -1;
    return 1;
  case 'J':
    g_echo.json = 1;
    return 1;
  default:
    return 0;
  }
}

int echo_opts_finish(void) {
  if (g_echo.mode == MODE_PINGPONG) {
    if (g_depth_set && g_echo.depth != 1) {
      fprintf(stderr, "%s: -p needs -m pipeline\n", g_prog);
      return -1;
    }
    g_echo.depth = 1;
  }
  if (g_echo.mode == MODE_STREAM) g_echo.depth = 0;
  return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Setup, results                                                                       */
/* ------------------------------------------------------------------------------------ */

static void free_workers(struct echo_worker *ws) {
  for (size_t t = 0; t < g_echo.o.threads; t++) {
    for (size_t i = 0; ws[t].conns != NULL && i < ws[t].nconns; i++) {
      struct echo_conn *c = conn_at(&ws[t], i);
      free(c->ts);
      free(c->samples.ring);
      if (g_hooks->conn_free) g_hooks->conn_free(c);
    }
    free(ws[t].conns);
    free(ws[t].rbuf);
    if (ws[t].ep >= 0) close(ws[t].ep);
  }
  free(ws);
}

/* Spread conns over the workers (conn i -> worker i % T) and allocate everything the run
 * needs up front. */
static struct echo_worker *make_workers(void) {
  size_t T = g_echo.o.threads;
  struct echo_worker *ws = calloc(T, sizeof *ws);
  if (ws == NULL) return NULL;
  for (size_t t = 0; t < T; t++) {
    struct echo_worker *w = &ws[t];
    w->nconns = g_echo.o.conns / T + (t < g_echo.o.conns % T);
    w->conns = calloc(w->nconns, g_hooks->conn_size);
    w->rbuf = malloc(READ_BUF);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->conns == NULL || w->rbuf == NULL || w->ep < 0) return NULL;
    if (g_hooks->worker_init && g_hooks->worker_init(w, t) != 0) return NULL;
    for (size_t i = 0; i < w->nconns; i++) {
      struct echo_conn *c = conn_at(w, i);
      c->fd = -1;
      c->id = (uint32_t)(i * T + t);
      c->shift = pattern_shift(c->id);
      if (g_echo.mode == MODE_STREAM)
        c->samples.ring = calloc(STREAM_SAMPLES, sizeof *c->samples.ring);
      else
        c->ts = calloc(g_echo.depth, sizeof *c->ts);
      if (c->samples.ring == NULL && c->ts == NULL) return NULL;
      if (g_hooks->conn_init && g_hooks->conn_init(c) != 0) return NULL;
    }
  }
  return ws;
}

static void print_results(const struct load_stats *r, double secs, uint64_t errors) {
  struct load_summary sum = {.o = &g_echo.o,
                             .mode = mode_names[g_echo.mode],
                             .protocol = g_hooks->protocol,
                             .depth = g_echo.depth,
                             .pipeline = g_echo.mode == MODE_PIPELINE,
                             .stream = g_echo.mode == MODE_STREAM,
                             .secs = secs,
                             .errors = errors,
                             .s = r};
  print_echo_results(&sum, g_echo.json);
}

int echo_run(const struct echo_hooks *hooks) {
  g_hooks = hooks;
  /* One descriptor per conn plus one epoll per thread and a few spare. */
  load_setup_process(g_echo.o.conns + g_echo.o.threads + 32);
  pattern_init();
  struct echo_worker *ws = make_workers();
  struct load_stats *r = calloc(1, sizeof *r);
  if (ws == NULL || r == NULL) {
    fprintf(stderr, "%s: out of memory or descriptors setting up %zu conns\n", g_prog,
            g_echo.o.conns);
    return 1;
  }
  if (load_start(ws, sizeof *ws, offsetof(struct echo_worker, st), g_echo.o.threads,
                 worker_main) != 0)
    return 1;
  uint64_t connected = load_ready();
  if (connected == 0) {
    fprintf(stderr, "%s: no connection to %s could be opened\n", g_prog, g_echo.o.target);
    atomic_store(&g_stop, 1);
  }
  load_window_start(g_echo.o.warmup, g_echo.o.secs);
  /* The clock starts now: a caller that measures the server over the same window (bench/
   * measure.py --mark) counts from this line, not from our launch, since connecting and
   * upgrading many conns to a slow server can take seconds. */
  if (hooks->announce)
    fprintf(stderr, "%s: %llu conns open, load starts\n", g_prog,
            (unsigned long long)connected);
  load_release();
  load_join(r);
  uint64_t errors = r->byte_errors + r->conns_lost + r->undrained;
  print_results(r, (double)(r->meas_end - g_t_start) / 1e9, errors);

  int ok = errors == 0 && r->connect_errors == 0 && r->connected > 0;
  free_workers(ws);
  free(r);
  return ok ? 0 : 1;
}
