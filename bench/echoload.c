/*
 * echoload — a load generator and checker for TCP echo servers.
 *
 * Standalone (libc + pthreads + epoll, no cgnet), so it measures cgnet and its peers
 * alike. Connections are spread over T threads; each thread owns one epoll instance and
 * its connections outright. While the run goes, threads share nothing but the read-only
 * payload table and the stop flag; their counters are merged after pthread_join. The
 * histogram, pattern, argument helpers and the summary come from load_common.h, shared
 * with wsload, tlsload and async_latency.
 *
 * Payload. Each connection sends one endless byte stream: byte i of conn c's stream is
 * g_pattern[(i + shift(c)) % PERIOD], where the table holds pseudo-random bytes and
 * PERIOD is prime. Sends are written straight out of the table (no copy, no allocation)
 * and every echoed chunk is memcmp'd against it, so all bytes are checked at memory
 * speed. A dropped, duplicated, reordered or foreign chunk does not line up with the
 * table unless its length is a multiple of the (prime) period.
 *
 * Modes. pingpong: one SIZE-byte message in flight per conn, the next sent when the
 * whole echo is back. pipeline: DEPTH messages in flight. stream: open loop, write as
 * fast as the socket takes (at most `window` bytes unechoed per conn) while reading the
 * echo; SIZE is only the unit messages are counted in and latency is sampled at.
 *
 * Timeline: connect every conn (bounded retries), then warm-up (-w), then the measured
 * window (-d), then a drain: no new messages, wait for what is in flight to come back
 * (bounded), close every conn, merge and print.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "load_common.h"

#define READ_BUF (256u * 1024u)    /* per-thread read buffer */
#define WRITE_BURST (256u * 1024u) /* bytes per writev */
#define WRITE_FAIR (256u * 1024u)  /* bytes per conn per wake-up */
#define READS_PER_WAKE 4           /* reads per conn per wake-up */
#define MAX_EVENTS 256

/* Connecting: attempts per conn, each bounded; pending connects per thread. */
#define CONNECT_ATTEMPTS 5
#define CONNECT_TIMEOUT_NS (3000 * NS_PER_MS)
#define CONNECT_INFLIGHT 128

/* The drain gives up after DRAIN_STALL_NS without a byte, or DRAIN_MAX_NS in all. */
#define DRAIN_STALL_NS (2000 * NS_PER_MS)
#define DRAIN_MAX_NS (10000 * NS_PER_MS)

enum mode { MODE_PINGPONG, MODE_PIPELINE, MODE_STREAM };
static const char *const mode_names[] = {"pingpong", "pipeline", "stream"};

/* ------------------------------------------------------------------------------------ */
/* Configuration and shared state                                                       */
/* ------------------------------------------------------------------------------------ */

struct config {
  struct load_opts o; /* -a -c -s -d -w -t */
  enum mode mode;
  uint64_t depth;
  int json;
};

/* Written by main before the threads start; read-only afterwards. */
static struct config g_cfg;

/* ------------------------------------------------------------------------------------ */
/* Connections and workers                                                              */
/* ------------------------------------------------------------------------------------ */

enum conn_state { C_IDLE, C_CONNECTING, C_OPEN, C_DONE, C_FAILED };

struct sample { /* stream mode: a message fully written at `t` ends at stream offset `end`
                 */
  uint64_t end;
  uint64_t t;
};

struct conn {
  int fd;
  enum conn_state state;
  uint32_t id;      /* global conn number */
  uint32_t shift;   /* pattern index of stream byte 0 */
  int pollout;      /* EPOLLOUT is registered */
  int attempts;     /* connect attempts made */
  int reported;     /* a byte mismatch of this conn was reported */
  uint64_t when;    /* connecting: attempt deadline; idle: retry time */
  uint64_t tx_off;  /* stream bytes written */
  uint64_t tx_goal; /* stream bytes that should be written */
  uint64_t rx_off;  /* stream bytes echoed (and checked) */
  uint64_t msgs_sent, msgs_recv;
  uint64_t *ts;           /* pingpong/pipeline: send time of message k at ts[k % depth] */
  struct sample *samples; /* stream: ring of STREAM_SAMPLES */
  uint32_t s_head, s_len;
};

struct worker {
  int ep;
  int draining; /* no new messages: only finish what is in flight */
  struct conn *conns;
  size_t nconns;
  size_t open; /* conns in C_OPEN */
  uint8_t *rbuf;
  struct load_stats st; /* results, owned by the worker until it is joined */
};

static void set_pollout(struct worker *w, struct conn *c, int on) {
  if (c->pollout == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->pollout = on;
}

/* Close an open conn: ours (lost == 0) or the server's doing (an error). */
static void conn_close(struct worker *w, struct conn *c) {
  close(c->fd);
  c->fd = -1;
  c->state = C_DONE;
  w->open--;
}

static void conn_lost(struct worker *w, struct conn *c, int err) {
  report("conn %u: %s after %llu bytes sent, %llu echoed", c->id,
         err ? strerror(err) : "closed by the server", (unsigned long long)c->tx_off,
         (unsigned long long)c->rx_off);
  w->st.conns_lost++;
  conn_close(w, c);
}

/* Check n echoed bytes against the pattern at the conn's rx offset. */
static void verify(struct worker *w, struct conn *c, const uint8_t *buf, size_t n) {
  pattern_verify(buf, n, c->rx_off, c->id, c->shift, &c->reported, &w->st.byte_errors, 1);
}

/* Queue one more message (pingpong/pipeline): it goes out in conn_write. */
static void send_msg(struct conn *c, uint64_t now) {
  c->ts[c->msgs_sent % g_cfg.depth] = now;
  c->msgs_sent++;
  c->tx_goal += g_cfg.o.size;
}

/* Account for messages whose echo is now complete. */
static void complete_msgs(struct worker *w, struct conn *c, uint64_t now) {
  if (g_cfg.mode == MODE_STREAM) {
    uint64_t done = c->rx_off / g_cfg.o.size;
    if (in_window(now)) w->st.msgs += done - c->msgs_recv;
    c->msgs_recv = done;
    while (c->s_len > 0 && c->samples[c->s_head].end <= c->rx_off) {
      if (in_window(now)) hist_record(&w->st.hist, now - c->samples[c->s_head].t);
      c->s_head = (c->s_head + 1) % STREAM_SAMPLES;
      c->s_len--;
    }
    return;
  }
  while (c->msgs_recv < c->msgs_sent && c->rx_off >= (c->msgs_recv + 1) * g_cfg.o.size) {
    uint64_t sent = c->ts[c->msgs_recv % g_cfg.depth];
    c->msgs_recv++;
    if (in_window(now)) {
      w->st.msgs++;
      hist_record(&w->st.hist, now - sent);
    }
    if (!w->draining) send_msg(c, now);
  }
}

/* Read what the socket holds (a few big reads at most), check it, complete messages.
 * Returns 0 if the conn is gone. */
static int conn_read(struct worker *w, struct conn *c, uint64_t now) {
  for (int i = 0; i < READS_PER_WAKE; i++) {
    ssize_t r = read(c->fd, w->rbuf, READ_BUF);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
    if (r <= 0) {
      conn_lost(w, c, r < 0 ? errno : 0);
      return 0;
    }
    size_t n = (size_t)r;
    if (c->rx_off + n > c->tx_off) {
      w->st.byte_errors += c->rx_off + n - c->tx_off;
      report("conn %u: the server sent %llu bytes more than it was sent", c->id,
             (unsigned long long)(c->rx_off + n - c->tx_off));
      w->st.conns_lost++;
      conn_close(w, c);
      return 0;
    }
    verify(w, c, w->rbuf, n);
    c->rx_off += n;
    if (in_window(now)) w->st.rx_bytes += n;
    complete_msgs(w, c, now);
    if (n < READ_BUF) return 1; /* drained the socket; level-triggered epoll says if more */
  }
  return 1;
}

/* Stream mode: remember when a message boundary was fully written, to time its echo. */
static void stream_sample(struct conn *c, uint64_t before, uint64_t now) {
  uint64_t end = c->tx_off / g_cfg.o.size * g_cfg.o.size;
  if (end <= before || c->s_len == STREAM_SAMPLES) return;
  struct sample *s = &c->samples[(c->s_head + c->s_len) % STREAM_SAMPLES];
  s->end = end;
  s->t = now;
  c->s_len++;
}

/* Write the stream from tx_off towards tx_goal, straight out of the pattern table, until
 * the socket is full or this conn had its fair share; EPOLLOUT is on while bytes wait.
 * Returns 0 if the conn is gone. */
static int conn_write(struct worker *w, struct conn *c, uint64_t now) {
  if (g_cfg.mode == MODE_STREAM && !w->draining) c->tx_goal = c->rx_off + g_cfg.o.window;
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
      conn_lost(w, c, errno);
      return 0;
    }
    uint64_t before = c->tx_off;
    c->tx_off += (uint64_t)r;
    budget -= (size_t)r;
    if (in_window(now)) w->st.tx_bytes += (uint64_t)r;
    if (g_cfg.mode == MODE_STREAM) stream_sample(c, before, now);
    if ((size_t)r < want) break; /* the socket is full */
  }
  set_pollout(w, c, c->tx_off < c->tx_goal);
  return 1;
}

static void on_event(struct worker *w, struct conn *c, uint32_t events) {
  if (c->state != C_OPEN) return; /* closed earlier in this batch */
  uint64_t now = now_ns();
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !conn_read(w, c, now)) return;
  if (c->tx_off < c->tx_goal || (g_cfg.mode == MODE_STREAM && !w->draining))
    conn_write(w, c, now);
  else
    set_pollout(w, c, 0);
}

/* ------------------------------------------------------------------------------------ */
/* Connecting: every conn up front, non-blocking, bounded retries                       */
/* ------------------------------------------------------------------------------------ */

static void connect_failed(struct worker *w, struct conn *c, int err, uint64_t now,
                           size_t *settled) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->attempts++;
  int hopeless = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
  if (c->attempts >= CONNECT_ATTEMPTS || hopeless || stopping()) {
    c->state = C_FAILED;
    w->st.connect_errors++;
    (*settled)++;
    report("conn %u: connect to %s failed after %d attempt%s: %s", c->id, g_cfg.o.target,
           c->attempts, c->attempts == 1 ? "" : "s", strerror(err));
    return;
  }
  c->state = C_IDLE;
  c->when = now + (uint64_t)c->attempts * 100 * NS_PER_MS; /* back off */
}

static void connect_ok(struct worker *w, struct conn *c, size_t *settled) {
  c->state = C_OPEN;
  c->pollout = 1; /* registered with EPOLLOUT while connecting */
  set_pollout(w, c, 0);
  w->open++;
  w->st.connected++;
  (*settled)++;
}

/* Start one attempt. Returns 1 if it is now pending. */
static int connect_start(struct worker *w, struct conn *c, uint64_t now, size_t *settled) {
  int fd = socket(g_cfg.o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
  if (connect(fd, (const struct sockaddr *)&g_cfg.o.addr, g_cfg.o.addrlen) == 0) {
    connect_ok(w, c, settled);
    return 0;
  }
  if (errno != EINPROGRESS) {
    connect_failed(w, c, errno, now, settled);
    return 0;
  }
  c->state = C_CONNECTING;
  c->when = now + CONNECT_TIMEOUT_NS;
  return 1;
}

/* Connect all of this worker's conns. At most CONNECT_INFLIGHT are pending at a time so
 * a burst of SYNs does not overflow the server's accept queue. */
static void connect_all(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  size_t next = 0, settled = 0, inflight = 0;
  uint64_t last_scan = 0;
  while (settled < w->nconns) {
    uint64_t now = now_ns();
    while (next < w->nconns && inflight < CONNECT_INFLIGHT)
      inflight += (size_t)connect_start(w, &w->conns[next++], now, &settled);
    if (now - last_scan >= 50 * NS_PER_MS) { /* timeouts and retries */
      last_scan = now;
      for (size_t i = 0; i < next; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == C_CONNECTING && now >= c->when) {
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
      struct conn *c = evs[i].data.ptr;
      if (c->state == C_OPEN) { /* bytes or a close before we sent anything */
        conn_read(w, c, 0);
        continue;
      }
      if (c->state != C_CONNECTING) continue;
      inflight--;
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0 && (evs[i].events & (EPOLLERR | EPOLLHUP))) err = ECONNRESET;
      if (err == 0)
        connect_ok(w, c, &settled);
      else
        connect_failed(w, c, err, now_ns(), &settled);
    }
  }
}

/* ------------------------------------------------------------------------------------ */
/* The run                                                                              */
/* ------------------------------------------------------------------------------------ */

static void run(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  uint64_t now = now_ns();
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    if (g_cfg.mode != MODE_STREAM)
      for (uint64_t k = 0; k < g_cfg.depth; k++)
        send_msg(c, now);
    conn_write(w, c, now);
  }
  while (w->open > 0) {
    now = now_ns();
    if (now >= g_t_end || stopping()) break;
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, ms_until(g_t_end, now, 100));
    for (int i = 0; i < n; i++)
      on_event(w, evs[i].data.ptr, evs[i].events);
  }
  w->st.meas_end = now < g_t_end ? now : g_t_end;
}

static int drained(const struct conn *c) {
  return c->tx_off == c->tx_goal && c->rx_off == c->tx_off;
}

/* Stop making messages, wait for the ones in flight to come back, close every conn.
 * Gives up after DRAIN_STALL_NS without a byte, or DRAIN_MAX_NS in all; conns still
 * waiting for their echo then count as undrained (an error: bytes went missing). */
static void drain(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  w->draining = 1;
  uint64_t start = now_ns(), progress = start;
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    if (g_cfg.mode == MODE_STREAM) c->tx_goal = c->tx_off;
    if (drained(c)) conn_close(w, c);
  }
  while (w->open > 0) {
    uint64_t now = now_ns();
    if (now - progress >= DRAIN_STALL_NS || now - start >= DRAIN_MAX_NS) break;
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, 100);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      uint64_t before = c->rx_off;
      on_event(w, c, evs[i].events);
      if (c->rx_off != before) progress = now;
      if (c->state == C_OPEN && drained(c)) conn_close(w, c);
    }
  }
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    w->st.undrained++;
    report("conn %u: %llu bytes never echoed (%llu sent, %llu echoed)", c->id,
           (unsigned long long)(c->tx_goal - c->rx_off), (unsigned long long)c->tx_off,
           (unsigned long long)c->rx_off);
    conn_close(w, c);
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  connect_all(w);
  load_worker_sync();
  if (!stopping()) run(w);
  drain(w);
  return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Command line                                                                         */
/* ------------------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fprintf(
      f, "usage: echoload -a HOST:PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-t THREADS]\n"
         "                [-m pingpong|pipeline|stream] [-p DEPTH] [-w WARMUP_S] [--json]\n"
         "  -a  server address: 127.0.0.1:9000, [::1]:9000, localhost:9000, tcp://...\n"
         "  -c  connections (default 100)\n"
         "  -s  message size in bytes, K/M suffixes allowed (default 64)\n"
         "  -d  measured seconds (default 5)\n"
         "  -t  threads, each with its own epoll (default: half the CPUs, <= conns)\n"
         "  -m  pingpong: 1 message in flight per conn (default); pipeline: DEPTH;\n"
         "      stream: write as fast as the socket takes, SIZE is the counting unit\n"
         "  -p  messages in flight per conn in pipeline mode (default 16)\n"
         "  -w  warm-up seconds before measuring (default 0)\n"
         "  --json  print a JSON object instead of the human summary\n"
         "The last line is always 'RESULT key=value ...'. Exit status: 0 if every byte\n"
         "came back intact and no conn was lost, 1 otherwise, 2 for bad arguments.\n");
}

static int parse_args(int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'J'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
  int depth_set = 0;
  load_opts_init(&g_cfg.o, 100, 64);
  g_cfg.mode = MODE_PINGPONG;
  g_cfg.depth = 16;
  int opt;
  while ((opt = getopt_long(argc, argv, "a:c:s:d:t:m:p:w:h", longopts, NULL)) != -1) {
    int taken = load_opt(&g_cfg.o, opt, optarg, 1);
    if (taken < 0) return -1;
    if (taken) continue;
    switch (opt) {
    case 'p':
      if (parse_u64(optarg, 1, 1000000, 0, &g_cfg.depth) != 0) return -1;
      depth_set = 1;
      break;
    case 'm':
      if (strcmp(optarg, "pingpong") == 0)
        g_cfg.mode = MODE_PINGPONG;
      else if (strcmp(optarg, "pipeline") == 0)
        g_cfg.mode = MODE_PIPELINE;
      else if (strcmp(optarg, "stream") == 0)
        g_cfg.mode = MODE_STREAM;
      else
        return -1;
      break;
    case 'J':
      g_cfg.json = 1;
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      return -1;
    }
  }
  if (optind != argc || g_cfg.o.target == NULL) return -1;
  if (g_cfg.mode == MODE_PINGPONG) {
    if (depth_set && g_cfg.depth != 1) {
      fprintf(stderr, "echoload: -p needs -m pipeline\n");
      return -1;
    }
    g_cfg.depth = 1;
  }
  if (g_cfg.mode == MODE_STREAM) g_cfg.depth = 0;
  return load_opts_finish(&g_cfg.o, 0, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Setup, results                                                                       */
/* ------------------------------------------------------------------------------------ */

/* Spread conns over the workers (conn i -> worker i % T) and allocate everything the run
 * needs up front. */
static struct worker *make_workers(void) {
  size_t T = g_cfg.o.threads;
  struct worker *ws = calloc(T, sizeof *ws);
  if (ws == NULL) return NULL;
  for (size_t t = 0; t < T; t++) {
    struct worker *w = &ws[t];
    w->nconns = g_cfg.o.conns / T + (t < g_cfg.o.conns % T);
    w->conns = calloc(w->nconns, sizeof *w->conns);
    w->rbuf = malloc(READ_BUF);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->conns == NULL || w->rbuf == NULL || w->ep < 0) return NULL;
    for (size_t i = 0; i < w->nconns; i++) {
      struct conn *c = &w->conns[i];
      c->fd = -1;
      c->id = (uint32_t)(i * T + t);
      c->shift = pattern_shift(c->id);
      if (g_cfg.mode == MODE_STREAM)
        c->samples = calloc(STREAM_SAMPLES, sizeof *c->samples);
      else
        c->ts = calloc(g_cfg.depth, sizeof *c->ts);
      if (c->samples == NULL && c->ts == NULL) return NULL;
    }
  }
  return ws;
}

static void free_workers(struct worker *ws) {
  for (size_t t = 0; t < g_cfg.o.threads; t++) {
    for (size_t i = 0; i < ws[t].nconns; i++) {
      free(ws[t].conns[i].ts);
      free(ws[t].conns[i].samples);
    }
    free(ws[t].conns);
    free(ws[t].rbuf);
    if (ws[t].ep >= 0) close(ws[t].ep);
  }
  free(ws);
}

/* The run's totals and what the summary says about them. */
static void print_results(const struct load_stats *r, double secs, uint64_t errors) {
  struct load_summary sum = {.o = &g_cfg.o,
                             .mode = mode_names[g_cfg.mode],
                             .depth = g_cfg.depth,
                             .pipeline = g_cfg.mode == MODE_PIPELINE,
                             .stream = g_cfg.mode == MODE_STREAM,
                             .secs = secs,
                             .errors = errors,
                             .s = r};
  print_echo_results(&sum, g_cfg.json);
}

int main(int argc, char **argv) {
  g_prog = "echoload";
  if (parse_args(argc, argv) != 0) {
    usage(stderr);
    return 2;
  }
  /* One descriptor per conn plus one epoll per thread and a few spare. */
  load_setup_process(g_cfg.o.conns + g_cfg.o.threads + 32);
  pattern_init();
  struct worker *ws = make_workers();
  struct load_stats *r = calloc(1, sizeof *r);
  if (ws == NULL || r == NULL) {
    fprintf(stderr, "echoload: out of memory or descriptors setting up %zu conns\n",
            g_cfg.o.conns);
    return 1;
  }
  if (load_start(ws, sizeof *ws, offsetof(struct worker, st), g_cfg.o.threads,
                 worker_main) != 0)
    return 1;
  if (load_ready() == 0) {
    fprintf(stderr, "echoload: no connection to %s could be opened\n", g_cfg.o.target);
    atomic_store(&g_stop, 1);
  }
  load_window_start(g_cfg.o.warmup, g_cfg.o.secs);
  load_release();
  load_join(r);
  uint64_t errors = r->byte_errors + r->conns_lost + r->undrained;
  print_results(r, (double)(r->meas_end - g_t_start) / 1e9, errors);

  int ok = errors == 0 && r->connect_errors == 0 && r->connected > 0;
  free_workers(ws);
  free(r);
  return ok ? 0 : 1;
}
