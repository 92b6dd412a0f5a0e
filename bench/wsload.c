/*
 * wsload — a load generator and checker for WebSocket echo servers (RFC 6455).
 *
 * Built like echoload (libc + pthreads + epoll; connections spread over T threads, each
 * owning one epoll instance and its connections outright; counters merged after
 * pthread_join), with a WebSocket client on every conn. From the cgnet library it takes
 * only the SHA-1 and base64 helpers, to compute the Sec-WebSocket-Accept value it expects.
 *
 * Handshake. After the TCP connect each conn sends an HTTP/1.1 upgrade request with a
 * random 16-byte Sec-WebSocket-Key and no extension or subprotocol offered, and counts
 * as connected only when the answer is "HTTP/1.1 101" with Upgrade: websocket,
 * Connection: upgrade, the right Sec-WebSocket-Accept and no extension or subprotocol.
 * A wrong answer is a connect error (not retried); a timeout or a reset is retried.
 *
 * Payload. As in echoload, conn c's payload is one endless byte stream drawn from a
 * table of pseudo-random bytes with a prime period, offset per conn; message k carries
 * stream bytes [k * SIZE, (k + 1) * SIZE) in one masked binary frame (a fresh masking
 * key per frame). The echo must come back as binary messages of exactly SIZE bytes, in
 * unmasked frames (fragments allowed, 7/16/64-bit lengths), no RSV bit set; every
 * payload byte is checked against the table. A ping from the server is answered with a
 * pong; a close, a text message, a masked or malformed frame is an error.
 *
 * Modes: pingpong (1 message in flight per conn), pipeline (DEPTH) and stream (whole
 * messages sent while fewer than `window` payload bytes are unechoed), as in echoload.
 * Message counts, byte rates and latencies refer to payload bytes, not to wire bytes.
 *
 * --raw: no handshake and no framing: the plain byte stream exactly as echoload sends it,
 * for a raw TCP echo server, so one tool measures both and the WebSocket overhead is a
 * ratio.
 *
 * Timeline: connect (and upgrade) every conn with bounded retries, print "wsload: N conns
 * open, load starts" to stderr, warm-up (-w), the measured window (-d), a bounded drain;
 * each drained WebSocket is sent a close frame (1000) before its socket is closed.
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../src/base64.h"
#include "../src/sha1.h"
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

/* WebSocket: the largest message (-s) and the handshake response accepted; output room
 * kept for one pong (a header of 6 bytes and at most 125 bytes of payload); the most
 * bytes of a frame header. */
#define WS_MAX_SIZE (16u << 20)
#define WS_RESPONSE_MAX 2048
#define WS_PONG_ROOM (6u + 125u)
#define WS_HDR_MAX 14u
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

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
  int raw;          /* --raw: plain bytes, no handshake, no frames */
  char host[300];   /* the Host header: HOST:PORT as given */
  size_t frame_max; /* WebSocket: bytes of one encoded message */
  size_t tx_cap;    /* WebSocket: a conn's output buffer */
};

/* Written by main before the threads start; read-only afterwards. */
static struct config g_cfg;

/* ------------------------------------------------------------------------------------ */
/* Connections and workers                                                              */
/* ------------------------------------------------------------------------------------ */
/* ------------------------------------------------------------------------------------ */
/* Connections and workers                                                              */
/* ------------------------------------------------------------------------------------ */

/* C_HANDSHAKE: TCP connected, the upgrade request sent or going out, the 101 awaited. */
enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DONE, C_FAILED };

struct sample { /* stream mode: a message fully queued at `t` ends at stream offset `end`
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
  uint64_t when;    /* connecting, handshake: attempt deadline; idle: retry time */
  uint64_t tx_off;  /* stream bytes written (raw) or framed into tx (WebSocket) */
  uint64_t tx_goal; /* stream bytes that should be written */
  uint64_t rx_off;  /* stream bytes echoed (and checked) */
  uint64_t msgs_sent, msgs_recv;
  uint64_t *ts;           /* pingpong/pipeline: send time of message k at ts[k % depth] */
  struct sample *samples; /* stream: ring of STREAM_SAMPLES */
  uint32_t s_head, s_len;
  /* WebSocket only. Output: encoded bytes not yet written are tx[tx_pos, tx_len). */
  uint8_t *tx;
  size_t tx_pos, tx_len;
  char *resp; /* handshake: the response so far (WS_RESPONSE_MAX bytes) */
  size_t resp_len;
  char accept[32]; /* handshake: the Sec-WebSocket-Accept value the server must send */
  /* Input: the frame being read. */
  uint8_t hdr[WS_HDR_MAX];
  uint8_t hdr_have;   /* header bytes read so far */
  uint8_t in_payload; /* the header is complete; frame_left payload bytes are to come */
  uint8_t op, fin;    /* of the frame being read */
  uint8_t in_msg;     /* a binary message has begun and not ended */
  uint8_t ctrl_len;
  uint8_t ctrl[125]; /* a control frame's payload */
  uint64_t frame_left, msg_len;
};

struct worker {
  int ep;
  int draining; /* no new messages: only finish what is in flight */
  struct conn *conns;
  size_t nconns;
  size_t open; /* conns in C_OPEN */
  uint8_t *rbuf;
  uint64_t rng;         /* xorshift64 state for masking keys */
  struct load_stats st; /* results, owned by the worker until it is joined */
};

static uint32_t next_key(struct worker *w) {
  uint64_t x = w->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  w->rng = x;
  return (uint32_t)(x >> 32);
}

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

/* The server broke the protocol or echoed what it was not sent: an error, and the conn
 * is closed (what follows could not be checked). Returns 0, for "the conn is gone". */
static int conn_wrong(struct worker *w, struct conn *c, const char *why) {
  report("conn %u: %s (after %llu bytes echoed)", c->id, why,
         (unsigned long long)c->rx_off);
  w->st.byte_errors++;
  w->st.conns_lost++;
  conn_close(w, c);
  return 0;
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

/* Stream mode: remember when a message boundary was fully sent, to time its echo. */
static void stream_sample(struct conn *c, uint64_t before, uint64_t now) {
  uint64_t end = c->tx_off / g_cfg.o.size * g_cfg.o.size;
  if (end <= before || c->s_len == STREAM_SAMPLES) return;
  struct sample *s = &c->samples[(c->s_head + c->s_len) % STREAM_SAMPLES];
  s->end = end;
  s->t = now;
  c->s_len++;
}

/* ------------------------------------------------------------------------------------ */
/* WebSocket frames                                                                     */
/* ------------------------------------------------------------------------------------ */

/* dst[i] = src[i] ^ key[(pos + i) % 4] for i < n: pos is the offset in the frame's
 * payload, so a payload masked in pieces gets the same bytes as in one go. */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                      size_t pos) {
  uint8_t k[8];
  for (unsigned i = 0; i < 8; i++)
    k[i] = key[(pos + i) & 3];
  uint64_t m;
  memcpy(&m, k, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, src + i, 8);
    v ^= m;
    memcpy(dst + i, &v, 8);
  }
  for (; i < n; i++)
    dst[i] = src[i] ^ k[i & 7];
}

/* Write a client frame header (FIN set, masked) for opcode op and len payload bytes at
 * p; the masking key goes in key. Returns the header's length. */
static size_t frame_header(uint8_t *p, uint8_t op, uint64_t len, uint32_t rnd,
                           uint8_t key[4]) {
  size_t h = 0;
  p[h++] = (uint8_t)(0x80u | op);
  if (len < 126) {
    p[h++] = (uint8_t)(0x80u | len);
  } else if (len < 65536) {
    p[h++] = 0x80u | 126u;
    p[h++] = (uint8_t)(len >> 8);
    p[h++] = (uint8_t)len;
  } else {
    p[h++] = 0x80u | 127u;
    for (int i = 7; i >= 0; i--)
      p[h++] = (uint8_t)(len >> (8 * i));
  }
  memcpy(key, &rnd, 4);
  memcpy(p + h, key, 4);
  return h + 4;
}

/* Room at the end of tx for `need` more bytes, moving what is unwritten to the front. */
static int tx_room(struct conn *c, size_t need) {
  if (g_cfg.tx_cap - c->tx_len >= need) return 1;
  if (c->tx_pos > 0) {
    memmove(c->tx, c->tx + c->tx_pos, c->tx_len - c->tx_pos);
    c->tx_len -= c->tx_pos;
    c->tx_pos = 0;
  }
  return g_cfg.tx_cap - c->tx_len >= need;
}

/* Frame the next message: stream bytes [tx_off, tx_off + SIZE) as one masked binary
 * frame at the end of tx (the caller made room for frame_max bytes). */
static void encode_msg(struct worker *w, struct conn *c) {
  uint8_t key[4];
  uint8_t *p = c->tx + c->tx_len;
  size_t h = frame_header(p, 0x2, g_cfg.o.size, next_key(w), key);
  size_t n = (size_t)g_cfg.o.size, done = 0;
  while (done < n) {
    size_t idx = (size_t)((c->tx_off + done + c->shift) % PERIOD);
    size_t k = n - done < 2 * PERIOD - idx ? n - done : 2 * PERIOD - idx;
    mask_copy(p + h + done, g_pattern + idx, k, key, done);
    done += k;
  }
  c->tx_len += h + n;
  c->tx_off += n;
}

/* Queue a control frame (pong, close) with payload[0, n), n <= 125. Returns 0 if there
 * is no room (only when the server pings faster than it reads). */
static int queue_control(struct worker *w, struct conn *c, uint8_t op,
                         const uint8_t *payload, size_t n) {
  if (!tx_room(c, 6 + n)) return 0;
  uint8_t key[4];
  uint8_t *p = c->tx + c->tx_len;
  size_t h = frame_header(p, op, n, next_key(w), key);
  mask_copy(p + h, payload, n, key, 0);
  c->tx_len += h + n;
  return 1;
}

/* Encode messages into tx while the mode wants more and there is room (one pong's room
 * is always kept). Stream mode: whole messages while fewer than `window` bytes are
 * unechoed; tx_goal follows tx_off. */
static void ws_fill(struct worker *w, struct conn *c, uint64_t now) {
  int stream = g_cfg.mode == MODE_STREAM;
  uint64_t goal = stream && !w->draining ? c->rx_off + g_cfg.o.window : c->tx_goal;
  uint64_t before = c->tx_off;
  while (c->tx_off < goal && tx_room(c, g_cfg.frame_max + WS_PONG_ROOM))
    encode_msg(w, c);
  if (c->tx_off == before) return;
  if (in_window(now)) w->st.tx_bytes += c->tx_off - before;
  if (stream) {
    c->tx_goal = c->tx_off;
    stream_sample(c, before, now);
  }
}

/* Write what tx holds. Returns 0, or the errno of a failed write. */
static int tx_flush(struct worker *w, struct conn *c, size_t budget) {
  while (c->tx_pos < c->tx_len && budget > 0) {
    size_t want = c->tx_len - c->tx_pos;
    if (want > budget) want = budget;
    ssize_t r = write(c->fd, c->tx + c->tx_pos, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r < 0) return errno;
    c->tx_pos += (size_t)r;
    budget -= (size_t)r;
    if (c->tx_pos == c->tx_len) c->tx_pos = c->tx_len = 0;
    if ((size_t)r < want) break; /* the socket is full */
  }
  set_pollout(w, c, c->tx_pos < c->tx_len);
  return 0;
}

/* A frame header is complete in c->hdr: check it and start the frame. Returns 0 if the
 * conn was closed. */
static int frame_begin(struct worker *w, struct conn *c) {
  uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
  uint64_t len = b1 & 0x7fu;
  if (len == 126) {
    len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
  } else if (len == 127) {
    len = 0;
    for (int i = 2; i < 10; i++)
      len = len << 8 | c->hdr[i];
  }
  c->op = b0 & 0x0fu;
  c->fin = b0 >> 7;
  c->frame_left = len;
  c->ctrl_len = 0;
  if (b0 & 0x70u) return conn_wrong(w, c, "frame with an RSV bit set");
  if (b1 & 0x80u) return conn_wrong(w, c, "masked frame from the server");
  if (len >> 63) return conn_wrong(w, c, "frame length with the top bit set");
  if (c->op & 0x8u) {
    if (c->op > 0xau) return conn_wrong(w, c, "frame with a reserved control opcode");
    if (!c->fin || len > 125) return conn_wrong(w, c, "fragmented or long control frame");
    return 1;
  }
  if (c->op == 0x1) return conn_wrong(w, c, "text message; binary was sent");
  if (c->op == 0x2 && c->in_msg)
    return conn_wrong(w, c, "a message begins inside another one");
  if (c->op == 0x0 && !c->in_msg) return conn_wrong(w, c, "continuation outside a message");
  if (c->op > 0x2) return conn_wrong(w, c, "frame with a reserved data opcode");
  if (c->msg_len + len > g_cfg.o.size) return conn_wrong(w, c, "message longer than sent");
  c->in_msg = 1;
  return 1;
}

/* The current frame's payload is all in. Returns 0 if the conn was closed. */
static int frame_end(struct worker *w, struct conn *c) {
  c->in_payload = 0;
  if (c->op == 0x9) { /* ping: answer with a pong carrying the same bytes */
    if (!queue_control(w, c, 0xa, c->ctrl, c->ctrl_len))
      report("conn %u: no room to answer a ping", c->id);
    return 1;
  }
  if (c->op == 0xa) return 1; /* an unasked pong: ignored, as RFC 6455 allows */
  if (c->op == 0x8) {
    char why[96];
    int code = c->ctrl_len >= 2 ? c->ctrl[0] << 8 | c->ctrl[1] : 1005;
    snprintf(why, sizeof why, "the server closed the WebSocket (code %d)", code);
    return conn_wrong(w, c, why);
  }
  if (!c->fin) return 1;
  if (c->msg_len != g_cfg.o.size) return conn_wrong(w, c, "message shorter than sent");
  c->in_msg = 0;
  c->msg_len = 0;
  return 1;
}

/* Parse n bytes of server frames: check data payloads against the stream (in place, no
 * copy), keep control payloads. Returns 0 if the conn was closed. */
static int ws_input(struct worker *w, struct conn *c, const uint8_t *p, size_t n,
                    uint64_t now) {
  while (n > 0) {
    if (!c->in_payload) {
      size_t need = 2;
      if (c->hdr_have >= 2) {
        uint8_t l7 = c->hdr[1] & 0x7fu;
        need = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
      }
      size_t k = need - c->hdr_have < n ? need - c->hdr_have : n;
      memcpy(c->hdr + c->hdr_have, p, k);
      c->hdr_have = (uint8_t)(c->hdr_have + k);
      p += k;
      n -= k;
      if (c->hdr_have < need) continue;
      if (need == 2 && (c->hdr[1] & 0x7fu) >= 126) continue; /* the length follows */
      c->hdr_have = 0;
      if (!frame_begin(w, c)) return 0;
      c->in_payload = 1;
      if (c->frame_left == 0 && !frame_end(w, c)) return 0;
      continue;
    }
    size_t k = c->frame_left < n ? (size_t)c->frame_left : n;
    if (c->op & 0x8u) {
      memcpy(c->ctrl + c->ctrl_len, p, k);
      c->ctrl_len = (uint8_t)(c->ctrl_len + k);
    } else {
      if (c->rx_off + k > c->tx_off) return conn_wrong(w, c, "echo of bytes never sent");
      verify(w, c, p, k);
      c->rx_off += k;
      c->msg_len += k;
      if (in_window(now)) w->st.rx_bytes += k;
    }
    c->frame_left -= k;
    p += k;
    n -= k;
    if (c->frame_left == 0 && !frame_end(w, c)) return 0;
  }
  return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Reading and writing an open conn                                                     */
/* ------------------------------------------------------------------------------------ */

/* Raw mode: n plain echoed bytes. Returns 0 if the conn was closed. */
static int raw_input(struct worker *w, struct conn *c, const uint8_t *buf, size_t n,
                     uint64_t now) {
  if (c->rx_off + n > c->tx_off) {
    w->st.byte_errors += c->rx_off + n - c->tx_off;
    report("conn %u: the server sent %llu bytes more than it was sent", c->id,
           (unsigned long long)(c->rx_off + n - c->tx_off));
    w->st.conns_lost++;
    conn_close(w, c);
    return 0;
  }
  verify(w, c, buf, n);
  c->rx_off += n;
  if (in_window(now)) w->st.rx_bytes += n;
  return 1;
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
    if (g_cfg.raw ? !raw_input(w, c, w->rbuf, n, now) : !ws_input(w, c, w->rbuf, n, now))
      return 0;
    complete_msgs(w, c, now);
    if (n < READ_BUF) return 1; /* drained the socket; level-triggered epoll says if more */
  }
  return 1;
}

/* Raw mode: write the stream from tx_off towards tx_goal, straight out of the pattern
 * table, until the socket is full or this conn had its fair share; EPOLLOUT is on while
 * bytes wait. Returns 0 if the conn is gone. */
static int raw_write(struct worker *w, struct conn *c, uint64_t now) {
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

/* WebSocket: frame what the mode wants and write, refilling as tx empties, until the
 * socket is full or this conn had its fair share. Returns 0 if the conn is gone. */
static int ws_write(struct worker *w, struct conn *c, uint64_t now) {
  size_t budget = WRITE_FAIR;
  for (;;) {
    ws_fill(w, c, now);
    size_t before = c->tx_len - c->tx_pos;
    if (before == 0) break;
    int err = tx_flush(w, c, budget);
    if (err != 0) {
      conn_lost(w, c, err);
      return 0;
    }
    size_t sent = before - (c->tx_len - c->tx_pos);
    budget -= sent < budget ? sent : budget;
    if (c->tx_len > c->tx_pos || budget == 0) break; /* the socket is full, or fair share */
  }
  set_pollout(w, c, c->tx_pos < c->tx_len);
  return 1;
}

static int wants_write(const struct worker *w, const struct conn *c) {
  return c->tx_off < c->tx_goal || c->tx_pos < c->tx_len ||
         (g_cfg.mode == MODE_STREAM && !w->draining);
}

static void on_event(struct worker *w, struct conn *c, uint32_t events) {
  if (c->state != C_OPEN) return; /* closed earlier in this batch */
  uint64_t now = now_ns();
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !conn_read(w, c, now)) return;
  if (wants_write(w, c))
    g_cfg.raw ? raw_write(w, c, now) : ws_write(w, c, now);
  else
    set_pollout(w, c, 0);
}

/* ------------------------------------------------------------------------------------ */
/* The opening handshake                                                                */
/* ------------------------------------------------------------------------------------ */

enum hs_result { HS_PENDING, HS_DONE, HS_RETRY, HS_BAD };

/* Send the upgrade request with a fresh key and remember the accept value it calls for.
 * Returns 0, or an errno. */
static int handshake_start(struct worker *w, struct conn *c) {
  uint8_t key[16];
  if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key) {
    for (size_t i = 0; i < sizeof key; i += 4) {
      uint32_t r = next_key(w);
      memcpy(key + i, &r, 4);
    }
  }
  char key64[32], concat[96];
  cgnet__base64_encode(key, sizeof key, key64);
  int n = snprintf(concat, sizeof concat, "%s%s", key64, WS_GUID);
  uint8_t digest[CGNET__SHA1_LEN];
  cgnet__sha1(concat, (size_t)n, digest);
  cgnet__base64_encode(digest, sizeof digest, c->accept);
  n = snprintf((char *)c->tx, g_cfg.tx_cap,
               "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
               g_cfg.host, key64);
  c->tx_pos = 0;
  c->tx_len = (size_t)n;
  c->resp_len = 0;
  c->state = C_HANDSHAKE;
  return tx_flush(w, c, g_cfg.tx_cap);
}

/* The value of header `name` in the response head [p, end), trimmed, into out (cap
 * bytes). Returns 1 if the header is there. */
static int header_value(const char *p, const char *end, const char *name, char *out,
                        size_t cap) {
  size_t nl = strlen(name);
  const char *line = memchr(p, '\n', (size_t)(end - p)); /* skip the status line */
  while (line != NULL && line + 1 < end) {
    line++;
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    if (eol == NULL) eol = end;
    if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      snprintf(out, cap, "%.*s", (int)(ve - v), v);
      return 1;
    }
    line = eol;
  }
  return 0;
}

/* Check a complete response head [0, len). Returns NULL if it accepts the upgrade as
 * asked, else what is wrong. */
static const char *check_response(const struct conn *c, size_t len) {
  const char *p = c->resp, *end = c->resp + len;
  char v[256];
  if (len < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) return "the status is not 101";
  if (!header_value(p, end, "Upgrade", v, sizeof v) || strcasecmp(v, "websocket") != 0)
    return "no 'Upgrade: websocket'";
  if (!header_value(p, end, "Connection", v, sizeof v) || strcasestr(v, "upgrade") == NULL)
    return "no 'Connection: upgrade'";
  if (!header_value(p, end, "Sec-WebSocket-Accept", v, sizeof v))
    return "no Sec-WebSocket-Accept";
  if (strcmp(v, c->accept) != 0) return "Sec-WebSocket-Accept does not match the key";
  if (header_value(p, end, "Sec-WebSocket-Extensions", v, sizeof v))
    return "an extension was not offered";
  if (header_value(p, end, "Sec-WebSocket-Protocol", v, sizeof v))
    return "a subprotocol was not offered";
  return NULL;
}

/* Progress a handshake on an epoll event. On HS_RETRY *err says why. */
static enum hs_result handshake_event(struct worker *w, struct conn *c, uint32_t events,
                                      int *err) {
  if (c->tx_pos < c->tx_len && (*err = tx_flush(w, c, g_cfg.tx_cap)) != 0) return HS_RETRY;
  if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return HS_PENDING;
  for (;;) {
    size_t room = WS_RESPONSE_MAX - 1 - c->resp_len;
    if (room == 0) {
      report("conn %u: handshake: the response head is over %d bytes", c->id,
             WS_RESPONSE_MAX);
      return HS_BAD;
    }
    ssize_t r = read(c->fd, c->resp + c->resp_len, room);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return HS_PENDING;
    if (r <= 0) {
      *err = r < 0 ? errno : ECONNRESET;
      return HS_RETRY;
    }
    c->resp_len += (size_t)r;
    c->resp[c->resp_len] = '\0';
    const char *eoh = memmem(c->resp, c->resp_len, "\r\n\r\n", 4);
    if (eoh == NULL) continue;
    size_t head = (size_t)(eoh - c->resp) + 4;
    const char *why = check_response(c, head);
    if (why == NULL && head != c->resp_len) why = "bytes after the response head";
    if (why != NULL) {
      const char *eol = strpbrk(c->resp, "\r\n");
      report("conn %u: handshake: %s (status line: %.*s)", c->id, why,
             eol ? (int)(eol - c->resp) : 0, c->resp);
      return HS_BAD;
    }
    return HS_DONE;
  }
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

/* The server answered the upgrade wrongly: not retried. */
static void handshake_bad(struct worker *w, struct conn *c, size_t *settled) {
  close(c->fd);
  c->fd = -1;
  c->state = C_FAILED;
  w->st.connect_errors++;
  (*settled)++;
}

/* The conn is ready for messages (raw: connected; WebSocket: upgraded). */
static void connect_ok(struct worker *w, struct conn *c, size_t *settled) {
  c->state = C_OPEN;
  set_pollout(w, c, 0);
  c->tx_pos = c->tx_len = 0;
  free(c->resp);
  c->resp = NULL;
  w->open++;
  w->st.connected++;
  (*settled)++;
}

/* TCP is connected: raw conns are ready, WebSocket ones start the handshake. Returns 1
 * if the conn is still pending (handshaking). */
static int tcp_connected(struct worker *w, struct conn *c, uint64_t now, size_t *settled) {
  c->pollout = 1; /* registered with EPOLLOUT while connecting */
  if (g_cfg.raw) {
    connect_ok(w, c, settled);
    return 0;
  }
  if (c->resp == NULL && (c->resp = malloc(WS_RESPONSE_MAX)) == NULL) {
    connect_failed(w, c, ENOMEM, now, settled);
    return 0;
  }
  int err = handshake_start(w, c);
  if (err != 0) {
    connect_failed(w, c, err, now, settled);
    return 0;
  }
  c->when = now + CONNECT_TIMEOUT_NS;
  return 1;
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
  c->tx_pos = c->tx_len = 0;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    connect_failed(w, c, errno, now, settled);
    return 0;
  }
  if (connect(fd, (const struct sockaddr *)&g_cfg.o.addr, g_cfg.o.addrlen) == 0)
    return tcp_connected(w, c, now, settled);
  if (errno != EINPROGRESS) {
    connect_failed(w, c, errno, now, settled);
    return 0;
  }
  c->state = C_CONNECTING;
  c->when = now + CONNECT_TIMEOUT_NS;
  return 1;
}

/* A pending conn (connecting or handshaking) had an epoll event. Returns 1 if it is no
 * longer pending. */
static int pending_event(struct worker *w, struct conn *c, uint32_t events,
                         size_t *settled) {
  int err = 0;
  if (c->state == C_HANDSHAKE) {
    switch (handshake_event(w, c, events, &err)) {
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
      struct conn *c = evs[i].data.ptr;
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

static void run(struct worker *w) {
  struct epoll_event evs[MAX_EVENTS];
  uint64_t now = now_ns();
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = &w->conns[i];
    if (c->state != C_OPEN) continue;
    if (g_cfg.mode != MODE_STREAM)
      for (uint64_t k = 0; k < g_cfg.depth; k++)
        send_msg(c, now);
    g_cfg.raw ? raw_write(w, c, now) : ws_write(w, c, now);
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
  return c->tx_off == c->tx_goal && c->rx_off == c->tx_off && c->tx_pos == c->tx_len;
}

/* Close a drained conn; a WebSocket is first sent a close frame (1000, best effort: the
 * socket has room, its output being empty). */
static void conn_finish(struct worker *w, struct conn *c) {
  if (!g_cfg.raw) {
    static const uint8_t normal[2] = {0x03, 0xe8};
    c->tx_pos = c->tx_len = 0;
    if (queue_control(w, c, 0x8, normal, sizeof normal))
      (void)!write(c->fd, c->tx, c->tx_len);
  }
  conn_close(w, c);
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
    if (drained(c)) conn_finish(w, c);
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
      if (c->state == C_OPEN && drained(c)) conn_finish(w, c);
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
  fprintf(f,
          "usage: wsload -a HOST:PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-t THREADS]\n"
          "              [-m pingpong|pipeline|stream] [-p DEPTH] [-w WARMUP_S] [--raw]\n"
          "              [--json]\n"
          "  -a  server address: 127.0.0.1:9000, [::1]:9000, localhost:9000, tcp://...\n"
          "  -c  connections (default 100)\n"
          "  -s  message size in bytes, K/M suffixes allowed (default 64; WebSocket:\n"
          "      at most 16M, each message one binary frame)\n"
          "  -d  measured seconds (default 5)\n"
          "  -t  threads, each with its own epoll (default: half the CPUs, <= conns)\n"
          "  -m  pingpong: 1 message in flight per conn (default); pipeline: DEPTH;\n"
          "      stream: write as fast as the socket takes, SIZE is the counting unit\n"
          "  -p  messages in flight per conn in pipeline mode (default 16)\n"
          "  -w  warm-up seconds before measuring (default 0)\n"
          "  --raw   no WebSocket: plain bytes as echoload sends them, for a TCP echo\n"
          "  --json  print a JSON object instead of the human summary\n"
          "The last line is always 'RESULT key=value ...'. Exit status: 0 if every byte\n"
          "came back intact and no conn was lost, 1 otherwise, 2 for bad arguments.\n");
}

static int parse_args(int argc, char **argv) {
  static const struct option longopts[] = {{"json", no_argument, NULL, 'J'},
                                           {"raw", no_argument, NULL, 'R'},
                                           {"help", no_argument, NULL, 'h'},
                                           {0, 0, 0, 0}};
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
    case 'R':
      g_cfg.raw = 1;
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
      fprintf(stderr, "wsload: -p needs -m pipeline\n");
      return -1;
    }
    g_cfg.depth = 1;
  }
  if (g_cfg.mode == MODE_STREAM) g_cfg.depth = 0;
  if (!g_cfg.raw) {
    if (g_cfg.o.size > WS_MAX_SIZE) {
      fprintf(stderr, "wsload: -s: a WebSocket message is at most %u bytes\n", WS_MAX_SIZE);
      return -1;
    }
    /* Output room: the messages that may be in flight (at most 16 framed at a time), or
     * 64 KiB in stream mode; always one pong, and the handshake request. */
    g_cfg.frame_max = (size_t)g_cfg.o.size + WS_HDR_MAX;
    uint64_t frames = g_cfg.mode == MODE_STREAM ? 1 : g_cfg.depth < 16 ? g_cfg.depth : 16;
    size_t cap = (size_t)frames * g_cfg.frame_max + WS_PONG_ROOM;
    if (g_cfg.mode == MODE_STREAM && cap < (64u << 10)) cap = 64u << 10;
    g_cfg.tx_cap = cap < 1024 ? 1024 : cap;
  }
  const char *hostport;
  if (load_opts_finish(&g_cfg.o, 0, &hostport) != 0) return -1;
  snprintf(g_cfg.host, sizeof g_cfg.host, "%s", hostport);
  return 0;
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
    if (getrandom(&w->rng, sizeof w->rng, 0) != (ssize_t)sizeof w->rng || w->rng == 0)
      w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)t << 32 | (uint64_t)now_ns());
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
      if (!g_cfg.raw && (c->tx = malloc(g_cfg.tx_cap)) == NULL) return NULL;
    }
  }
  return ws;
}

static void free_workers(struct worker *ws) {
  for (size_t t = 0; t < g_cfg.o.threads; t++) {
    for (size_t i = 0; i < ws[t].nconns; i++) {
      free(ws[t].conns[i].ts);
      free(ws[t].conns[i].samples);
      free(ws[t].conns[i].tx);
      free(ws[t].conns[i].resp);
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
                             .protocol = g_cfg.raw ? "raw" : "websocket",
                             .depth = g_cfg.depth,
                             .pipeline = g_cfg.mode == MODE_PIPELINE,
                             .stream = g_cfg.mode == MODE_STREAM,
                             .secs = secs,
                             .errors = errors,
                             .s = r};
  print_echo_results(&sum, g_cfg.json);
}

int main(int argc, char **argv) {
  g_prog = "wsload";
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
    fprintf(stderr, "wsload: out of memory or descriptors setting up %zu conns\n",
            g_cfg.o.conns);
    return 1;
  }
  if (load_start(ws, sizeof *ws, offsetof(struct worker, st), g_cfg.o.threads,
                 worker_main) != 0)
    return 1;
  uint64_t connected = load_ready();
  if (connected == 0) {
    fprintf(stderr, "wsload: no connection to %s could be opened\n", g_cfg.o.target);
    atomic_store(&g_stop, 1);
  }
  load_window_start(g_cfg.o.warmup, g_cfg.o.secs);
  /* The clock starts now: a caller that measures the server over the same window (bench/
   * measure.py --mark) counts from this line, not from our launch, since connecting and
   * upgrading many conns to a slow server can take seconds. */
  fprintf(stderr, "wsload: %llu conns open, load starts\n", (unsigned long long)connected);
  load_release();
  load_join(r);
  uint64_t errors = r->byte_errors + r->conns_lost + r->undrained;
  print_results(r, (double)(r->meas_end - g_t_start) / 1e9, errors);

  int ok = errors == 0 && r->connect_errors == 0 && r->connected > 0;
  free_workers(ws);
  free(r);
  return ok ? 0 : 1;
}
