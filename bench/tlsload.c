/*
 * tlsload — a load generator and checker for TLS servers (echo servers, and any TLS
 * server for the handshake mode).
 *
 * Standalone (libc, pthreads, epoll and OpenSSL 3; no cgnet), so it measures cgnet and
 * its peers alike. Connections are spread over T threads; each thread owns one epoll
 * instance, one SSL_CTX and its connections outright. Threads share nothing but the
 * read-only payload table and the stop flag; their counters are merged after
 * pthread_join.
 *
 * Modes.
 *   handshake  CONNS slots, each in a loop: connect, full TLS handshake (the client has no
 *              session cache and sends no ticket extension, so nothing can be resumed; a
 *              resumed session would be an error), optionally one echo of SIZE bytes
 *              (-s, default 0 here), close, again. A message is one completed cycle.
 *   pingpong   TLS echo, one SIZE-byte message in flight per conn.
 *   stream     TLS echo, open loop: each conn writes as fast as its socket takes, with at
 *              most a window of unechoed bytes; SIZE is the counting unit.
 *   idle       open CONNS conns, each with its handshake and one echo of SIZE bytes, print
 *              "IDLE n=N" once all are idle, then hold them for -d seconds (or until
 *              SIGINT/SIGTERM) while watching that none is closed.
 * --plain runs any mode over plain TCP (to show what TLS costs); --tls12 forces TLS 1.2.
 *
 * Payload and checks as in echoload (both from load_common.h, with the histogram, the
 * argument helpers and the RESULT keys): conn c's byte stream is a pseudo-random table
 * read from a per-conn offset, so every echoed byte is compared with what was sent.
 *
 * The handshake is "really complete" when SSL_do_handshake returned 1 with the version
 * asked for, a cipher, a server certificate and no resumption; anything else counts as
 * a handshake error. Certificates are not verified (speed: the same for every server).
 *
 * The last line is `RESULT key=value ...` with echoload's keys (msgs = handshakes in
 * handshake mode), so bench/measure.py reads it with the same parser.
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
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "load_common.h"

#define READ_BUF (64u * 1024u)    /* per-thread read buffer (a TLS record is <= 16 KiB) */
#define WRITE_CHUNK (16u * 1024u) /* bytes per write call: one full TLS record */
#define WRITE_FAIR (256u * 1024u) /* bytes per conn per wake-up */
#define READS_PER_WAKE 64         /* plain reads per conn per wake-up */
#define MAX_EVENTS 256

/* Setting up (pingpong, stream, idle): attempts per conn, conns being set up per thread.
 * Any mode: a connect plus handshake (plus the handshake mode's echo) is given up after
 * CYCLE_TIMEOUT_NS. */
#define CONNECT_ATTEMPTS 5
#define CONNECT_INFLIGHT 128
#define CYCLE_TIMEOUT_NS (5000 * NS_PER_MS)

#define DRAIN_STALL_NS (2000 * NS_PER_MS)
#define DRAIN_MAX_NS (10000 * NS_PER_MS)

enum mode { MODE_HANDSHAKE, MODE_PINGPONG, MODE_STREAM, MODE_IDLE };
static const char *const mode_names[] = {"handshake", "pingpong", "stream", "idle"};

/* ------------------------------------------------------------------------------------ */
/* Configuration and shared state                                                       */
/* ------------------------------------------------------------------------------------ */

struct config {
  struct load_opts o; /* -a -c -s -d -w -t */
  enum mode mode;
  int plain;
  int tls_version; /* TLS1_3_VERSION or TLS1_2_VERSION */
};

/* Written by main before the threads start; read-only afterwards. */
static struct config g_cfg;

/* OpenSSL's reason for the last error on this thread, and the queue cleared. */
static const char *ssl_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : "no OpenSSL reason";
}

/* ------------------------------------------------------------------------------------ */
/* Connections                                                                          */
/* ------------------------------------------------------------------------------------ */

/*
 * A conn's life: C_IDLE (no socket; `when` is the next attempt) -> C_CONNECTING (TCP)
 * -> C_HANDSHAKE (TLS; skipped with --plain) -> C_OPEN (echo traffic) -> closed: back
 * to C_IDLE (handshake mode, or a retry while setting up), C_DONE or C_FAILED.
 */
enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DONE, C_FAILED };

struct conn {
  int fd;
  SSL *ssl; /* NULL with --plain or while not connected */
  enum conn_state state;
  uint32_t id;
  uint32_t shift;
  uint32_t events;  /* the epoll interest registered */
  int rd_wants_out; /* the last SSL_read asked for writability */
  int wr_wants_in;  /* the last SSL_write asked for readability */
  int attempts;
  int reported;
  int ready;          /* set up: handshake done (and idle mode's echo back) */
  int cycled;         /* handshake mode: this slot completed a cycle */
  uint64_t when;      /* C_IDLE: next attempt; else: the deadline of this attempt */
  uint64_t t_begin;   /* when this connect started */
  uint64_t tx_off;    /* stream bytes handed to the socket / SSL_write */
  uint64_t tx_goal;   /* stream bytes that should be written */
  uint64_t rx_off;    /* stream bytes echoed and checked */
  uint64_t wpend;     /* the length of an SSL_write to retry (0: none) */
  uint64_t msgs_recv; /* pingpong: messages echoed */
  uint64_t sent_at;   /* pingpong: when the message in flight was queued */
  struct stream_samples samples; /* stream mode */
};

struct worker {
  int ep;
  SSL_CTX *ctx;
  int draining;
  struct conn *conns;
  size_t nconns;
  size_t open;     /* conns with a socket */
  size_t inflight; /* set-up: conns connecting or handshaking (or idle's first echo) */
  size_t settled;  /* set-up: conns ready or failed for good */
  uint8_t *rbuf;
  const char *cipher; /* the first negotiated suite (static OpenSSL text) */
  /* Results, owned by the worker until it is joined. */
  struct load_stats st;
  uint64_t handshake_errors;
};

static void set_events(struct worker *w, struct conn *c, uint32_t ev) {
  if (c->events == ev) return;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &e) == 0) c->events = ev;
}

/* Close the socket; the conn goes to `next`. Never SSL_shutdown: a plain close, the
 * same for every server. */
static void conn_close(struct worker *w, struct conn *c, enum conn_state next) {
  if (c->ssl) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) {
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    w->open--;
  }
  c->state = next;
  c->events = 0;
  c->rd_wants_out = c->wr_wants_in = 0;
}

/* Reset the per-connection stream (handshake mode starts each cycle from zero). */
static void stream_reset(struct conn *c) {
  c->tx_off = c->tx_goal = c->rx_off = c->wpend = 0;
  c->msgs_recv = 0;
  c->samples.head = c->samples.len = 0;
}

/* An open conn closed or broke under us: always an error. */
static void conn_lost(struct worker *w, struct conn *c, const char *why) {
  report("conn %u: %s after %llu bytes sent, %llu echoed", c->id, why,
         (unsigned long long)c->tx_off, (unsigned long long)c->rx_off);
  w->st.conns_lost++;
  if (g_cfg.mode == MODE_IDLE && !c->ready) { /* lost while being set up */
    w->inflight--;
    w->settled++;
  }
  conn_close(w, c, g_cfg.mode == MODE_HANDSHAKE ? C_IDLE : C_DONE);
  c->when = now_ns();
}

/* A connect or handshake that did not succeed. Handshake mode: count it and start this
 * slot again shortly. Setting up: retry a few times with a back-off, then give up. */
static void attempt_failed(struct worker *w, struct conn *c, int handshake,
                           const char *why) {
  uint64_t now = now_ns();
  if (c->state == C_CONNECTING || c->state == C_HANDSHAKE ||
      (c->state == C_OPEN && !c->ready)) {
    if (g_cfg.mode != MODE_HANDSHAKE) w->inflight--;
  }
  conn_close(w, c, C_IDLE);
  if (handshake)
    w->handshake_errors++;
  else if (g_cfg.mode == MODE_HANDSHAKE)
    w->st.connect_errors++;
  report("conn %u: %s failed: %s", c->id, handshake ? "TLS handshake" : "connect", why);
  if (g_cfg.mode == MODE_HANDSHAKE) {
    c->when = now + 10 * NS_PER_MS;
    return;
  }
  c->attempts++;
  if (c->attempts >= CONNECT_ATTEMPTS || stopping()) {
    c->state = C_FAILED;
    if (!handshake) w->st.connect_errors++;
    w->settled++;
    return;
  }
  c->when = now + (uint64_t)c->attempts * 100 * NS_PER_MS;
}

/* Start a connect. Returns 0, or -1 if it failed at once (already accounted for). */
static int conn_start(struct worker *w, struct conn *c, uint64_t now) {
  int fd = socket(g_cfg.o.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    c->state = C_CONNECTING;
    if (g_cfg.mode != MODE_HANDSHAKE) w->inflight++;
    attempt_failed(w, c, 0, strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->fd = fd;
  w->open++;
  c->state = C_CONNECTING;
  c->t_begin = now;
  c->when = now + CYCLE_TIMEOUT_NS;
  c->ready = 0;
  if (g_cfg.mode != MODE_HANDSHAKE) w->inflight++;
  c->events = EPOLLIN | EPOLLOUT;
  struct epoll_event ev = {.events = c->events, .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    attempt_failed(w, c, 0, strerror(errno));
    return -1;
  }
  if (connect(fd, (const struct sockaddr *)&g_cfg.o.addr, g_cfg.o.addrlen) != 0 &&
      errno != EINPROGRESS) {
    attempt_failed(w, c, 0, strerror(errno));
    return -1;
  }
  return 0; /* EPOLLOUT says when the connect is done, even if it already is */
}

/* ------------------------------------------------------------------------------------ */
/* Plain or TLS I/O                                                                     */
/* ------------------------------------------------------------------------------------ */

#define IO_AGAIN (-2)
#define IO_CLOSED (-3)
#define IO_ERROR (-1)

/* Read up to n bytes: > 0, IO_AGAIN, IO_CLOSED (the peer closed) or IO_ERROR. */
static long io_read(struct conn *c, uint8_t *buf, size_t n, const char **why) {
  if (!c->ssl) {
    for (;;) {
      ssize_t r = read(c->fd, buf, n);
      if (r > 0) return (long)r;
      if (r == 0) return IO_CLOSED;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_AGAIN;
      *why = strerror(errno);
      return IO_ERROR;
    }
  }
  int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
  c->rd_wants_out = 0;
  if (r > 0) return r;
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ:
    return IO_AGAIN;
  case SSL_ERROR_WANT_WRITE:
    c->rd_wants_out = 1;
    return IO_AGAIN;
  case SSL_ERROR_ZERO_RETURN:
    return IO_CLOSED;
  case SSL_ERROR_SYSCALL:
    if (errno == 0) {
      ERR_clear_error();
      return IO_CLOSED; /* EOF without close_notify */
    }
    *why = strerror(errno);
    ERR_clear_error();
    return IO_ERROR;
  default:
    *why = ssl_reason();
    return IO_ERROR;
  }
}

/* Write n bytes (n >= any length this conn's pending SSL_write had): > 0 written,
 * IO_AGAIN, or IO_ERROR. */
static long io_write(struct conn *c, const uint8_t *buf, size_t n, const char **why) {
  if (!c->ssl) {
    for (;;) {
      ssize_t r = write(c->fd, buf, n);
      if (r >= 0) return r > 0 ? (long)r : IO_AGAIN;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_AGAIN;
      *why = strerror(errno);
      return IO_ERROR;
    }
  }
  int r = SSL_write(c->ssl, buf, (int)n);
  c->wr_wants_in = 0;
  if (r > 0) {
    c->wpend = 0;
    return r;
  }
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_WRITE:
    c->wpend = n;
    return IO_AGAIN;
  case SSL_ERROR_WANT_READ:
    c->wpend = n;
    c->wr_wants_in = 1;
    return IO_AGAIN;
  case SSL_ERROR_SYSCALL:
    *why = errno ? strerror(errno) : "unexpected EOF";
    ERR_clear_error();
    return IO_ERROR;
  default:
    *why = ssl_reason();
    return IO_ERROR;
  }
}

/* ------------------------------------------------------------------------------------ */
/* The echo: writing, reading, checking                                                 */
/* ------------------------------------------------------------------------------------ */

static void verify(struct worker *w, struct conn *c, const uint8_t *buf, size_t n) {
  pattern_verify(buf, n, c->rx_off, c->id, c->shift, &c->reported, &w->st.byte_errors, 0);
}

static void stream_sample(struct conn *c, uint64_t before, uint64_t now) {
  samples_sent(&c->samples, before, c->tx_off, g_cfg.o.size, now);
}

static void update_events(struct worker *w, struct conn *c) {
  int out = c->tx_off < c->tx_goal || c->wpend > 0 || c->rd_wants_out;
  set_events(w, c, EPOLLIN | (out ? EPOLLOUT : 0u));
}

/* Write from tx_off towards tx_goal straight out of the pattern table. Returns 0 if the
 * conn is gone. */
static int conn_write(struct worker *w, struct conn *c, uint64_t now) {
  if (g_cfg.mode == MODE_STREAM && !w->draining) c->tx_goal = c->rx_off + g_cfg.o.window;
  size_t budget = WRITE_FAIR;
  while (c->tx_off < c->tx_goal && budget > 0) {
    size_t idx = (size_t)((c->tx_off + c->shift) % PERIOD);
    uint64_t left = c->tx_goal - c->tx_off;
    size_t k = left < WRITE_CHUNK ? (size_t)left : WRITE_CHUNK;
    if (k > 2 * PERIOD - idx) k = 2 * PERIOD - idx;
    const char *why = NULL;
    long r = io_write(c, g_pattern + idx, k, &why);
    if (r == IO_AGAIN) break;
    if (r < 0) {
      conn_lost(w, c, why);
      return 0;
    }
    uint64_t before = c->tx_off;
    c->tx_off += (uint64_t)r;
    budget = (size_t)r < budget ? budget - (size_t)r : 0;
    if (in_window(now)) w->st.tx_bytes += (uint64_t)r;
    if (g_cfg.mode == MODE_STREAM) stream_sample(c, before, now);
  }
  update_events(w, c);
  return 1;
}

static void cycle_done(struct worker *w, struct conn *c, uint64_t now);

/* Pingpong, stream, idle: this conn is set up (idle: its first echo is back). */
static void setup_done(struct worker *w, struct conn *c) {
  c->ready = 1;
  w->inflight--;
  w->settled++;
  w->st.connected++;
}

/* Account for what the echo completed. Returns 0 if the conn is gone. */
static int complete_msgs(struct worker *w, struct conn *c, uint64_t now) {
  switch (g_cfg.mode) {
  case MODE_STREAM:
    samples_echoed(&c->samples, c->rx_off, g_cfg.o.size, &c->msgs_recv, now, &w->st);
    return 1;
  case MODE_PINGPONG:
    if (c->rx_off == c->tx_goal && c->tx_goal == (c->msgs_recv + 1) * g_cfg.o.size) {
      c->msgs_recv++;
      if (in_window(now)) {
        w->st.msgs++;
        hist_record(&w->st.hist, now - c->sent_at);
      }
      if (!w->draining) {
        c->sent_at = now;
        c->tx_goal += g_cfg.o.size;
      }
    }
    return 1;
  case MODE_HANDSHAKE:
    if (c->rx_off == g_cfg.o.size) {
      cycle_done(w, c, now);
      return 0;
    }
    return 1;
  case MODE_IDLE:
    if (!c->ready && c->rx_off == g_cfg.o.size) setup_done(w, c);
    return 1;
  }
  return 1;
}

/* Read what there is, check it, complete messages. Returns 0 if the conn is gone. */
static int conn_read(struct worker *w, struct conn *c, uint64_t now) {
  for (int i = 0; c->ssl || i < READS_PER_WAKE; i++) {
    const char *why = NULL;
    long r = io_read(c, w->rbuf, READ_BUF, &why);
    if (r == IO_AGAIN) return 1;
    if (r == IO_CLOSED) {
      conn_lost(w, c, "closed by the server");
      return 0;
    }
    if (r < 0) {
      conn_lost(w, c, why);
      return 0;
    }
    size_t n = (size_t)r;
    if (c->rx_off + n > c->tx_off) {
      w->st.byte_errors += c->rx_off + n - c->tx_off;
      report("conn %u: the server sent %llu bytes more than it was sent", c->id,
             (unsigned long long)(c->rx_off + n - c->tx_off));
      conn_lost(w, c, "too many bytes");
      return 0;
    }
    verify(w, c, w->rbuf, n);
    c->rx_off += n;
    if (in_window(now)) w->st.rx_bytes += n;
    if (!complete_msgs(w, c, now)) return 0;
  }
  return 1;
}

static void on_open_event(struct worker *w, struct conn *c, uint32_t events) {
  uint64_t now = now_ns();
  int readable = (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0;
  if ((readable || (c->rd_wants_out && (events & EPOLLOUT))) && !conn_read(w, c, now))
    return;
  if (c->tx_off < c->tx_goal || c->wpend > 0 || (g_cfg.mode == MODE_STREAM && !w->draining))
    conn_write(w, c, now);
  else
    update_events(w, c);
}

/* ------------------------------------------------------------------------------------ */
/* Connect, handshake, cycles                                                           */
/* ------------------------------------------------------------------------------------ */

/* The handshake is done (or there is none): start the conn's traffic. */
static void conn_ready(struct worker *w, struct conn *c, uint64_t now) {
  c->state = C_OPEN;
  stream_reset(c);
  switch (g_cfg.mode) {
  case MODE_HANDSHAKE:
    if (g_cfg.o.size == 0) {
      cycle_done(w, c, now);
      return;
    }
    c->tx_goal = g_cfg.o.size;
    break;
  case MODE_IDLE:
    if (g_cfg.o.size == 0) {
      setup_done(w, c);
      update_events(w, c);
      return;
    }
    c->tx_goal = g_cfg.o.size;
    break;
  case MODE_PINGPONG:
  case MODE_STREAM:
    setup_done(w, c); /* messages start with the run */
    update_events(w, c);
    return;
  }
  conn_write(w, c, now);
}

/* One handshake-mode cycle is complete: count it, close, start the slot again. */
static void cycle_done(struct worker *w, struct conn *c, uint64_t now) {
  if (in_window(now)) {
    w->st.msgs++;
    hist_record(&w->st.hist, now - c->t_begin);
  }
  if (!c->cycled) {
    c->cycled = 1;
    w->st.connected++; /* slots that completed at least one cycle */
  }
  conn_close(w, c, C_IDLE);
  c->when = now; /* restarted after this batch of events: no stale event can hit it */
}

/* Is the session what was asked for: a full handshake at the right version? */
static const char *check_session(const SSL *ssl) {
  if (SSL_version(ssl) != g_cfg.tls_version) return "wrong protocol version";
  if (SSL_get_current_cipher(ssl) == NULL) return "no cipher";
  if (SSL_session_reused(ssl)) return "the session was resumed";
  X509 *peer = SSL_get0_peer_certificate(ssl);
  if (peer == NULL) return "no server certificate";
  return NULL;
}

static void handshake_step(struct worker *w, struct conn *c) {
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    const char *bad = check_session(c->ssl);
    if (bad) {
      attempt_failed(w, c, 1, bad);
      return;
    }
    if (!w->cipher) w->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
    conn_ready(w, c, now_ns());
    return;
  }
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ:
    set_events(w, c, EPOLLIN);
    return;
  case SSL_ERROR_WANT_WRITE:
    set_events(w, c, EPOLLIN | EPOLLOUT);
    return;
  case SSL_ERROR_SYSCALL: {
    const char *why = errno ? strerror(errno) : "the server closed the connection";
    ERR_clear_error();
    attempt_failed(w, c, 1, why);
    return;
  }
  default:
    attempt_failed(w, c, 1, ssl_reason());
    return;
  }
}

static void on_connected(struct worker *w, struct conn *c, uint32_t events) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0 && (events & (EPOLLERR | EPOLLHUP))) err = ECONNRESET;
  if (err != 0) {
    attempt_failed(w, c, 0, strerror(err));
    return;
  }
  if (g_cfg.plain) {
    conn_ready(w, c, now_ns());
    return;
  }
  c->ssl = SSL_new(w->ctx);
  if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
    attempt_failed(w, c, 1, ssl_reason());
    return;
  }
  SSL_set_connect_state(c->ssl);
  c->state = C_HANDSHAKE;
  handshake_step(w, c);
}

static void on_event(struct worker *w, struct conn *c, uint32_t events) {
  switch (c->state) {
  case C_CONNECTING:
    on_connected(w, c, events);
    break;
  case C_HANDSHAKE:
    handshake_step(w, c);
    break;
  case C_OPEN:
    on_open_event(w, c, events);
    break;
  default:
    break; /* closed earlier in this batch */
  }
}

/* Every 50 ms: attempts past their deadline fail; idle conns due are started (at most
 * `cap` being set up at a time). */
static void scan(struct worker *w, uint64_t now, size_t cap, size_t upto) {
  for (size_t i = 0; i < upto; i++) {
    struct conn *c = &w->conns[i];
    int busy = c->state == C_CONNECTING || c->state == C_HANDSHAKE ||
               (c->state == C_OPEN && !c->ready && g_cfg.mode != MODE_PINGPONG &&
                g_cfg.mode != MODE_STREAM);
    if (busy && now >= c->when)
      attempt_failed(w, c, c->state != C_CONNECTING, "timed out");
    else if (c->state == C_IDLE && now >= c->when && w->inflight < cap && !stopping())
      conn_start(w, c, now);
  }
}

/* Pingpong, stream, idle: set every conn up (bounded retries, at most CONNECT_INFLIGHT
 * at a time). */
static void setup_all(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  size_t next = 0;
  uint64_t last_scan = 0;
  while (w->settled < w->nconns && !stopping()) {
    uint64_t now = now_ns();
    while (next < w->nconns && w->inflight < CONNECT_INFLIGHT)
      conn_start(w, &w->conns[next++], now);
    if (now - last_scan >= 50 * NS_PER_MS) {
      last_scan = now;
      scan(w, now, CONNECT_INFLIGHT, next);
    }
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, 50);
    for (int i = 0; i < n; i++)
      on_event(w, evs[i].data.ptr, evs[i].events);
  }
}

/* Handshake mode: every slot cycles until the window ends. */
static void run_handshakes(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  uint64_t now = now_ns(), last_scan = now;
  for (size_t i = 0; i < w->nconns; i++)
    conn_start(w, &w->conns[i], now);
  while (!stopping()) {
    now = now_ns();
    if (now >= g_t_end) break;
    int n = epoll_wait(w->ep, evs, MAX_EVENTS, ms_until(g_t_end, now, 50));
    for (int i = 0; i < n; i++)
      on_event(w, evs[i].data.ptr, evs[i].events);
    now = now_ns();
    for (size_t i = 0; i < w->nconns; i++) { /* slots whose cycle ended in this batch */
      struct conn *c = &w->conns[i];
      if (c->state == C_IDLE && now >= c->when && now < g_t_end) conn_start(w, c, now);
    }
    if (now - last_scan >= 50 * NS_PER_MS) {
      last_scan = now;
      scan(w, now, SIZE_MAX, w->nconns);
    }
  }
  w->st.meas_end = now < g_t_end ? now : g_t_end;
  for (size_t i = 0; i < w->nconns; i++) /* unfinished cycles are not counted */
    if (w->conns[i].fd >= 0) conn_close(w, &w->conns[i], C_DONE);
}

static void window_event(void *w, void *c, uint32_t events) {
  on_event(w, c, events);
}

static void run_echo(struct worker *w) {
  uint64_t now = now_ns();
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    if (g_cfg.mode == MODE_PINGPONG) {
      c->sent_at = now;
      c->tx_goal = g_cfg.o.size;
    }
    conn_write(w, c, now);
  }
  w->st.meas_end = load_window_loop(w->ep, &w->open, window_event, w);
}

static int drained(const struct conn *c) {
  return c->tx_off == c->tx_goal && c->wpend == 0 && c->rx_off == c->tx_off;
}

/* No new messages; wait (bounded) for the echo of what is in flight; close everything.
 * Echoes still missing count as undrained. */
static void drain(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  w->draining = 1;
  uint64_t start = now_ns(), progress = start;
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    /* A pending SSL_write already holds its record: finish it. */
    if (g_cfg.mode == MODE_STREAM) c->tx_goal = c->tx_off + c->wpend;
    if (drained(c)) conn_close(w, c, C_DONE);
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
      if (c->state == C_OPEN && drained(c)) conn_close(w, c, C_DONE);
    }
  }
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    w->st.undrained++;
    report("conn %u: %llu bytes never echoed", c->id,
           (unsigned long long)(c->tx_goal - c->rx_off));
    conn_close(w, c, C_DONE);
  }
}

/* Idle mode: hold the conns until the end, counting any the server closes. */
static void hold_idle(struct worker *w) {
  w->st.meas_end = load_window_loop(w->ep, NULL, window_event, w);
  for (size_t i = 0; i < w->nconns; i++)
    if (w->conns[i].fd >= 0) conn_close(w, &w->conns[i], C_DONE);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  if (g_cfg.mode != MODE_HANDSHAKE) setup_all(w);
  load_worker_sync();
  switch (g_cfg.mode) {
  case MODE_HANDSHAKE:
    run_handshakes(w);
    break;
  case MODE_PINGPONG:
  case MODE_STREAM:
    if (!stopping()) run_echo(w);
    drain(w);
    break;
  case MODE_IDLE:
    hold_idle(w);
    break;
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Command line                                                                         */
/* ------------------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: tlsload -a HOST:PORT [-m handshake|pingpong|stream|idle] [-c CONNS]\n"
      "               [-s SIZE] [-d SECONDS] [-w WARMUP_S] [-t THREADS] [--tls12]\n"
      "               [--plain]\n"
      "  -a  server address: 127.0.0.1:9443, [::1]:9443, tls://..., tcp://...\n"
      "  -m  handshake: CONNS slots, each connecting, handshaking (full, never\n"
      "      resumed), echoing SIZE bytes if SIZE > 0, closing, again (default);\n"
      "      pingpong: 1 message of SIZE in flight per conn; stream: write as fast\n"
      "      as the socket takes, SIZE is the counting unit; idle: CONNS conns, each\n"
      "      with one echo of SIZE bytes, held open for SECONDS ('IDLE n=N' printed\n"
      "      once all are idle)\n"
      "  -c  connections or slots (default 64)\n"
      "  -s  message size in bytes, K/M suffixes (default 0 in handshake mode, else 64)\n"
      "  -d  measured seconds (idle: seconds held) (default 5)\n"
      "  -w  warm-up seconds before measuring (default 0)\n"
      "  -t  threads, each with its own epoll and SSL_CTX (default: half the CPUs)\n"
      "  --tls12  TLS 1.2 instead of 1.3\n"
      "  --plain  plain TCP, no TLS (what TLS costs, by difference)\n"
      "The last line is 'RESULT key=value ...' (msgs = handshakes in handshake mode).\n"
      "Exit status: 0 if every handshake completed, every byte came back intact and\n"
      "no conn was lost, 1 otherwise, 2 for bad arguments.\n");
}

static int parse_args(int argc, char **argv) {
  static const struct option longopts[] = {{"tls12", no_argument, NULL, '2'},
                                           {"plain", no_argument, NULL, 'P'},
                                           {"help", no_argument, NULL, 'h'},
                                           {0, 0, 0, 0}};
  int size_set = 0;
  load_opts_init(&g_cfg.o, 64, 0);
  g_cfg.mode = MODE_HANDSHAKE;
  g_cfg.tls_version = TLS1_3_VERSION;
  int opt;
  while ((opt = getopt_long(argc, argv, "a:c:s:d:t:m:w:h", longopts, NULL)) != -1) {
    int taken = load_opt(&g_cfg.o, opt, optarg, 0);
    if (taken < 0) return -1;
    if (opt == 's') size_set = 1;
    if (taken) continue;
    switch (opt) {
    case 'm':
      if (strcmp(optarg, "handshake") == 0)
        g_cfg.mode = MODE_HANDSHAKE;
      else if (strcmp(optarg, "pingpong") == 0)
        g_cfg.mode = MODE_PINGPONG;
      else if (strcmp(optarg, "stream") == 0)
        g_cfg.mode = MODE_STREAM;
      else if (strcmp(optarg, "idle") == 0)
        g_cfg.mode = MODE_IDLE;
      else
        return -1;
      break;
    case '2':
      g_cfg.tls_version = TLS1_2_VERSION;
      break;
    case 'P':
      g_cfg.plain = 1;
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      return -1;
    }
  }
  if (optind != argc || g_cfg.o.target == NULL) return -1;
  if (!size_set) g_cfg.o.size = g_cfg.mode == MODE_HANDSHAKE ? 0 : 64;
  if (g_cfg.o.size == 0 && (g_cfg.mode == MODE_PINGPONG || g_cfg.mode == MODE_STREAM)) {
    fprintf(stderr, "tlsload: -s must be at least 1 in %s mode\n", mode_names[g_cfg.mode]);
    return -1;
  }
  return load_opts_finish(&g_cfg.o, 1, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Setup, results                                                                       */
/* ------------------------------------------------------------------------------------ */

/* One client context per thread: no verification, no session cache, no tickets, the
 * default TLS 1.3 suites (and the default TLS 1.2 list with --tls12). */
static SSL_CTX *make_ctx(void) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL) return NULL;
  if (!SSL_CTX_set_min_proto_version(ctx, g_cfg.tls_version) ||
      !SSL_CTX_set_max_proto_version(ctx, g_cfg.tls_version)) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx,
                   SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1); /* fewer read calls; io_read drains what it buffers */
  return ctx;
}

static struct worker *make_workers(void) {
  size_t T = g_cfg.o.threads;
  struct worker *ws = calloc(T, sizeof *ws);
  if (ws == NULL) return NULL;
  for (size_t t = 0; t < T; t++)
    ws[t].ep = -1;
  for (size_t t = 0; t < T; t++) {
    struct worker *w = &ws[t];
    w->nconns = g_cfg.o.conns / T + (t < g_cfg.o.conns % T);
    w->conns = calloc(w->nconns, sizeof *w->conns);
    w->rbuf = malloc(READ_BUF);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g_cfg.plain) w->ctx = make_ctx();
    if (w->conns == NULL || w->rbuf == NULL || w->ep < 0 || (!g_cfg.plain && !w->ctx))
      return NULL;
    for (size_t i = 0; i < w->nconns; i++) {
      struct conn *c = &w->conns[i];
      c->fd = -1;
      c->id = (uint32_t)(i * T + t);
      c->shift = pattern_shift(c->id);
      if (g_cfg.mode == MODE_STREAM) {
        c->samples.ring = calloc(STREAM_SAMPLES, sizeof *c->samples.ring);
        if (c->samples.ring == NULL) return NULL;
      }
    }
  }
  return ws;
}

static void free_workers(struct worker *ws) {
  for (size_t t = 0; t < g_cfg.o.threads; t++) {
    for (size_t i = 0; i < ws[t].nconns; i++)
      free(ws[t].conns[i].samples.ring);
    free(ws[t].conns);
    free(ws[t].rbuf);
    if (ws[t].ep >= 0) close(ws[t].ep);
    SSL_CTX_free(ws[t].ctx);
  }
  free(ws);
}

static const char *tls_name(void) {
  if (g_cfg.plain) return "none";
  return g_cfg.tls_version == TLS1_2_VERSION ? "1.2" : "1.3";
}

static void print_results(const struct load_stats *r, double secs, uint64_t errors,
                          uint64_t handshake_errors, const char *cipher) {
  struct load_summary sum = {.o = &g_cfg.o,
                             .mode = mode_names[g_cfg.mode],
                             .depth = g_cfg.mode == MODE_PINGPONG ? 1 : 0,
                             .secs = secs,
                             .errors = errors,
                             .s = r};
  struct load_rates k = load_rates(r, secs);
  struct latency_text l;
  latency_text(&l, &r->hist, "na");
  const char *unit = g_cfg.mode == MODE_HANDSHAKE ? "handshakes" : "messages";
  if (cipher == NULL) cipher = "none";

  printf("tlsload: %s  mode=%s  tls=%s  cipher=%s  conns=%zu (%llu connected)  "
         "size=%llu B  threads=%zu\n",
         g_cfg.o.target, sum.mode, tls_name(), cipher, g_cfg.o.conns,
         (unsigned long long)r->connected, (unsigned long long)g_cfg.o.size,
         g_cfg.o.threads);
  printf("  duration  %.2f s measured (after %.2f s warm-up)\n", secs, g_cfg.o.warmup);
  printf("  %-9s %llu  (%.0f/s)\n", unit, (unsigned long long)r->msgs, k.mps);
  printf("  tx        %.2f MB/s   rx %.2f MB/s (all checked)\n", k.tx_mb, k.rx_mb);
  if (r->hist.total > 0)
    printf("  latency   p50 %s us  p99 %s us  p99.9 %s us  max %s us\n", l.p50, l.p99,
           l.p999, l.max);
  printf("  errors    %llu  (handshake %llu, byte %llu, conns lost %llu, undrained %llu, "
         "connect %llu)\n",
         (unsigned long long)errors, (unsigned long long)handshake_errors,
         (unsigned long long)r->byte_errors, (unsigned long long)r->conns_lost,
         (unsigned long long)r->undrained, (unsigned long long)r->connect_errors);
  print_result_keys(&sum);
  printf(" handshake_errors=%llu tls=%s cipher=%s\n", (unsigned long long)handshake_errors,
         tls_name(), cipher);
  fflush(stdout);
}

int main(int argc, char **argv) {
  g_prog = "tlsload";
  if (parse_args(argc, argv) != 0) {
    usage(stderr);
    return 2;
  }
  /* One descriptor per conn, an epoll and a spare per thread, and a few more. */
  load_setup_process(g_cfg.o.conns + 2 * g_cfg.o.threads + 32);
  pattern_init();
  struct worker *ws = make_workers();
  struct load_stats *r = calloc(1, sizeof *r);
  if (ws == NULL || r == NULL) {
    fprintf(stderr, "tlsload: out of memory, descriptors or TLS setting up %zu conns\n",
            g_cfg.o.conns);
    return 1;
  }
  if (load_start(ws, sizeof *ws, offsetof(struct worker, st), g_cfg.o.threads,
                 worker_main) != 0)
    return 1;
  uint64_t ready = load_ready();
  if (g_cfg.mode != MODE_HANDSHAKE) {
    if (ready == 0) {
      fprintf(stderr, "tlsload: no connection to %s could be set up\n", g_cfg.o.target);
      atomic_store(&g_stop, 1);
    } else if (g_cfg.mode == MODE_IDLE) {
      printf("IDLE n=%llu\n", (unsigned long long)ready);
      fflush(stdout);
    }
  }
  load_window_start(g_cfg.o.warmup, g_cfg.o.secs);
  load_release();
  load_join(r);
  uint64_t handshake_errors = 0;
  const char *cipher = NULL;
  for (size_t t = 0; t < g_cfg.o.threads; t++) {
    handshake_errors += ws[t].handshake_errors;
    if (!cipher) cipher = ws[t].cipher;
  }
  uint64_t errors = r->byte_errors + r->conns_lost + r->undrained + handshake_errors;
  print_results(r, (double)(r->meas_end - g_t_start) / 1e9, errors, handshake_errors,
                cipher);

  int ok = errors == 0 && r->connect_errors == 0 && r->connected == g_cfg.o.conns;
  free_workers(ws);
  free(r);
  return ok ? 0 : 1;
}
