/*
 * wsload — a load generator and checker for WebSocket echo servers (RFC 6455).
 *
 * echoload's engine (echo_core.c: libc + pthreads + epoll; connections spread over T
 * threads, each owning one epoll instance and its connections outright; counters merged
 * after pthread_join), with a WebSocket client on every conn through the engine's hooks:
 * this file is the upgrade, the framing and the command line. From the cgnet library it
 * takes only the SHA-1 and base64 helpers, to compute the Sec-WebSocket-Accept value it
 * expects.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "../src/base64.h"
#include "../src/sha1.h"
#include "echo_core.h"

#define WRITE_FAIR (256u * 1024u) /* bytes per conn per wake-up */

/* WebSocket: the largest message (-s) and the handshake response accepted; output room
 * kept for one pong (a header of 6 bytes and at most 125 bytes of payload); the most
 * bytes of a frame header. */
#define WS_MAX_SIZE (16u << 20)
#define WS_RESPONSE_MAX 2048
#define WS_PONG_ROOM (6u + 125u)
#define WS_HDR_MAX 14u
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------------------------ */
/* Configuration and connections                                                        */
/* ------------------------------------------------------------------------------------ */

/* What wsload adds to g_echo; written by main before the threads start. */
struct config {
  int raw;          /* --raw: plain bytes, no handshake, no frames */
  char host[300];   /* the Host header: HOST:PORT as given */
  size_t frame_max; /* WebSocket: bytes of one encoded message */
  size_t tx_cap;    /* WebSocket: a conn's output buffer */
};

static struct config g_cfg;

/* A WebSocket conn: the engine's conn (tx_off counts stream bytes framed into tx), then
 * the client's state. */
struct conn {
  struct echo_conn e;
  /* Output: encoded bytes not yet written are tx[tx_pos, tx_len). */
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

static struct conn *ws_of(struct echo_conn *e) {
  return (struct conn *)(void *)e;
}

static uint32_t next_key(struct echo_worker *w) {
  uint64_t x = w->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  w->rng = x;
  return (uint32_t)(x >> 32);
}

/* The server broke the protocol or echoed what it was not sent: an error, and the conn
 * is closed (what follows could not be checked). Returns 0, for "the conn is gone". */
static int conn_wrong(struct echo_worker *w, struct conn *c, const char *why) {
  report("conn %u: %s (after %llu bytes echoed)", c->e.id, why,
         (unsigned long long)c->e.rx_off);
  w->st.byte_errors++;
  w->st.conns_lost++;
  echo_conn_close(w, &c->e);
  return 0;
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
static void encode_msg(struct echo_worker *w, struct conn *c) {
  uint8_t key[4];
  uint8_t *p = c->tx + c->tx_len;
  size_t h = frame_header(p, 0x2, g_echo.o.size, next_key(w), key);
  size_t n = (size_t)g_echo.o.size, done = 0;
  while (done < n) {
    size_t idx = (size_t)((c->e.tx_off + done + c->e.shift) % PERIOD);
    size_t k = n - done < 2 * PERIOD - idx ? n - done : 2 * PERIOD - idx;
    mask_copy(p + h + done, g_pattern + idx, k, key, done);
    done += k;
  }
  c->tx_len += h + n;
  c->e.tx_off += n;
}

/* Queue a control frame (pong, close) with payload[0, n), n <= 125. Returns 0 if there
 * is no room (only when the server pings faster than it reads). */
static int queue_control(struct echo_worker *w, struct conn *c, uint8_t op,
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
static void ws_fill(struct echo_worker *w, struct conn *c, uint64_t now) {
  int stream = g_echo.mode == MODE_STREAM;
  uint64_t goal = stream && !w->draining ? c->e.rx_off + g_echo.o.window : c->e.tx_goal;
  uint64_t before = c->e.tx_off;
  while (c->e.tx_off < goal && tx_room(c, g_cfg.frame_max + WS_PONG_ROOM))
    encode_msg(w, c);
  if (c->e.tx_off == before) return;
  if (in_window(now)) w->st.tx_bytes += c->e.tx_off - before;
  if (stream) {
    c->e.tx_goal = c->e.tx_off;
    echo_stream_sample(&c->e, before, now);
  }
}

/* Write what tx holds. Returns 0, or the errno of a failed write. */
static int tx_flush(struct echo_worker *w, struct conn *c, size_t budget) {
  while (c->tx_pos < c->tx_len && budget > 0) {
    size_t want = c->tx_len - c->tx_pos;
    if (want > budget) want = budget;
    ssize_t r = write(c->e.fd, c->tx + c->tx_pos, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r < 0) return errno;
    c->tx_pos += (size_t)r;
    budget -= (size_t)r;
    if (c->tx_pos == c->tx_len) c->tx_pos = c->tx_len = 0;
    if ((size_t)r < want) break; /* the socket is full */
  }
  echo_set_pollout(w, &c->e, c->tx_pos < c->tx_len);
  return 0;
}

/* A frame header is complete in c->hdr: check it and start the frame. Returns 0 if the
 * conn was closed. */
static int frame_begin(struct echo_worker *w, struct conn *c) {
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
  if (c->msg_len + len > g_echo.o.size) return conn_wrong(w, c, "message longer than sent");
  c->in_msg = 1;
  return 1;
}

/* The current frame's payload is all in. Returns 0 if the conn was closed. */
static int frame_end(struct echo_worker *w, struct conn *c) {
  c->in_payload = 0;
  if (c->op == 0x9) { /* ping: answer with a pong carrying the same bytes */
    if (!queue_control(w, c, 0xa, c->ctrl, c->ctrl_len))
      report("conn %u: no room to answer a ping", c->e.id);
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
  if (c->msg_len != g_echo.o.size) return conn_wrong(w, c, "message shorter than sent");
  c->in_msg = 0;
  c->msg_len = 0;
  return 1;
}

/* Parse n bytes of server frames: check data payloads against the stream (in place, no
 * copy), keep control payloads. Returns 0 if the conn was closed. */
static int ws_input(struct echo_worker *w, struct echo_conn *e, const uint8_t *p, size_t n,
                    uint64_t now) {
  struct conn *c = ws_of(e);
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
      if (c->e.rx_off + k > c->e.tx_off)
        return conn_wrong(w, c, "echo of bytes never sent");
      echo_verify(w, &c->e, p, k);
      c->e.rx_off += k;
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

/* WebSocket: frame what the mode wants and write, refilling as tx empties, until the
 * socket is full or this conn had its fair share. Returns 0 if the conn is gone. */
static int ws_write(struct echo_worker *w, struct echo_conn *e, uint64_t now) {
  struct conn *c = ws_of(e);
  size_t budget = WRITE_FAIR;
  for (;;) {
    ws_fill(w, c, now);
    size_t before = c->tx_len - c->tx_pos;
    if (before == 0) break;
    int err = tx_flush(w, c, budget);
    if (err != 0) {
      echo_conn_lost(w, &c->e, err);
      return 0;
    }
    size_t sent = before - (c->tx_len - c->tx_pos);
    budget -= sent < budget ? sent : budget;
    if (c->tx_len > c->tx_pos || budget == 0) break; /* the socket is full, or fair share */
  }
  echo_set_pollout(w, &c->e, c->tx_pos < c->tx_len);
  return 1;
}

/* ------------------------------------------------------------------------------------ */
/* The opening handshake                                                                */
/* ------------------------------------------------------------------------------------ */

/* TCP is connected: send the upgrade request with a fresh key and remember the accept
 * value it calls for. Returns 0, or an errno. */
static int handshake_start(struct echo_worker *w, struct echo_conn *e) {
  struct conn *c = ws_of(e);
  if (c->resp == NULL && (c->resp = malloc(WS_RESPONSE_MAX)) == NULL) return ENOMEM;
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
  c->e.state = C_HANDSHAKE;
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
static enum hs_result handshake_event(struct echo_worker *w, struct echo_conn *e,
                                      uint32_t events, int *err) {
  struct conn *c = ws_of(e);
  if (c->tx_pos < c->tx_len && (*err = tx_flush(w, c, g_cfg.tx_cap)) != 0) return HS_RETRY;
  if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return HS_PENDING;
  for (;;) {
    size_t room = WS_RESPONSE_MAX - 1 - c->resp_len;
    if (room == 0) {
      report("conn %u: handshake: the response head is over %d bytes", c->e.id,
             WS_RESPONSE_MAX);
      return HS_BAD;
    }
    ssize_t r = read(c->e.fd, c->resp + c->resp_len, room);
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
      report("conn %u: handshake: %s (status line: %.*s)", c->e.id, why,
             eol ? (int)(eol - c->resp) : 0, c->resp);
      return HS_BAD;
    }
    return HS_DONE;
  }
}

/* ------------------------------------------------------------------------------------ */
/* The engine's hooks                                                                   */
/* ------------------------------------------------------------------------------------ */

static int ws_worker_init(struct echo_worker *w, size_t t) {
  if (getrandom(&w->rng, sizeof w->rng, 0) != (ssize_t)sizeof w->rng || w->rng == 0)
    w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)t << 32 | (uint64_t)now_ns());
  return 0;
}

static int ws_conn_init(struct echo_conn *e) {
  struct conn *c = ws_of(e);
  c->tx = malloc(g_cfg.tx_cap);
  return c->tx != NULL ? 0 : -1;
}

static void ws_conn_free(struct echo_conn *e) {
  struct conn *c = ws_of(e);
  free(c->tx);
  free(c->resp);
}

/* Upgraded: the handshake's buffers are done with. */
static void ws_opened(struct echo_conn *e) {
  struct conn *c = ws_of(e);
  c->tx_pos = c->tx_len = 0;
  free(c->resp);
  c->resp = NULL;
}

static int ws_unsent(const struct echo_conn *e) {
  const struct conn *c = (const struct conn *)(const void *)e;
  return c->tx_pos < c->tx_len;
}

/* Before a drained WebSocket is closed: a close frame (1000, best effort: the socket has
 * room, its output being empty). */
static void ws_finish(struct echo_worker *w, struct echo_conn *e) {
  static const uint8_t normal[2] = {0x03, 0xe8};
  struct conn *c = ws_of(e);
  c->tx_pos = c->tx_len = 0;
  if (queue_control(w, c, 0x8, normal, sizeof normal))
    (void)!write(c->e.fd, c->tx, c->tx_len);
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
  echo_opts_init();
  int opt;
  while ((opt = getopt_long(argc, argv, "a:c:s:d:t:m:p:w:h", longopts, NULL)) != -1) {
    int taken = echo_opt(opt, optarg);
    if (taken < 0) return -1;
    if (taken) continue;
    switch (opt) {
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
  if (optind != argc || g_echo.o.target == NULL) return -1;
  if (echo_opts_finish() != 0) return -1;
  if (!g_cfg.raw) {
    if (g_echo.o.size > WS_MAX_SIZE) {
      fprintf(stderr, "wsload: -s: a WebSocket message is at most %u bytes\n", WS_MAX_SIZE);
      return -1;
    }
    /* Output room: the messages that may be in flight (at most 16 framed at a time), or
     * 64 KiB in stream mode; always one pong, and the handshake request. */
    g_cfg.frame_max = (size_t)g_echo.o.size + WS_HDR_MAX;
    uint64_t frames = g_echo.mode == MODE_STREAM ? 1
                      : g_echo.depth < 16        ? g_echo.depth
                                                 : 16;
    size_t cap = (size_t)frames * g_cfg.frame_max + WS_PONG_ROOM;
    if (g_echo.mode == MODE_STREAM && cap < (64u << 10)) cap = 64u << 10;
    g_cfg.tx_cap = cap < 1024 ? 1024 : cap;
  }
  const char *hostport;
  if (load_opts_finish(&g_echo.o, 0, &hostport) != 0) return -1;
  snprintf(g_cfg.host, sizeof g_cfg.host, "%s", hostport);
  return 0;
}

int main(int argc, char **argv) {
  g_prog = "wsload";
  if (parse_args(argc, argv) != 0) {
    usage(stderr);
    return 2;
  }
  static const struct echo_hooks raw = {
      .conn_size = sizeof(struct echo_conn), .protocol = "raw", .announce = 1};
  static const struct echo_hooks websocket = {.conn_size = sizeof(struct conn),
                                              .protocol = "websocket",
                                              .announce = 1,
                                              .worker_init = ws_worker_init,
                                              .conn_init = ws_conn_init,
                                              .conn_free = ws_conn_free,
                                              .upgrade = handshake_start,
                                              .handshake_event = handshake_event,
                                              .opened = ws_opened,
                                              .input = ws_input,
                                              .write = ws_write,
                                              .unsent = ws_unsent,
                                              .finish = ws_finish};
  return echo_run(g_cfg.raw ? &raw : &websocket);
}
