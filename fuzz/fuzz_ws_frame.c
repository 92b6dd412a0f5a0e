/*
 * libFuzzer target: the WebSocket frame parser (src/ws_frame.c), with permessage-deflate
 * inflation of compressed messages (src/ws_deflate.c). Input: [config] [cut] then a byte
 * stream, fed as a conn would feed it: the bytes that arrived, the unconsumed tail kept
 * for the next delivery. config bit 0: role (server/client), bit 1: RSV1 allowed, bits
 * 2-3: max_frame (none, none, 125, 70000), bits 4-5: max_message (none, 1, 200, 100000).
 * It aborts when an invariant breaks:
 *
 *  - a call consumes no more than it was given; an event's bytes lie in the buffer given;
 *    a DATA piece is no longer than what the call consumed; control payloads are at most
 *    125 bytes; pieces come first..last, with no second first before a last;
 *  - an ERROR carries 1002, 1007 or 1009 and a reason, and sticks; a CLOSE carries a code
 *    a peer may send, or 1005;
 *  - a complete uncompressed text message is valid UTF-8; no message passes max_message,
 *    no frame max_frame; a compressed message never inflates past max_message;
 *  - the stream fed in two pieces (split where the input says) gives the same messages,
 *    control frames and ending as fed whole (and the same inflation outcome);
 *  - every complete message, re-encoded (masked when the parser is a server), parses back
 *    to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"
#include "ws_deflate.h"
#include "ws_frame.h"

#include "fuzz_check.h"

typedef struct trace {
  uint64_t hash;
  size_t events;
  int end; /* 0, or the close code of the error that ended the stream */
} trace;

static void fold(trace *t, uint64_t v) {
  t->hash = (t->hash ^ v) * 0x100000001b3ull;
}

static void fold_bytes(trace *t, const uint8_t *p, size_t n) {
  fold(t, n);
  for (size_t i = 0; i < n; i++)
    fold(t, p[i]);
}

/* A message being assembled. */
typedef struct message {
  uint8_t *b;
  size_t len, cap;
  int open;
} message;

static void append(message *m, const uint8_t *p, size_t n) {
  if (m->len + n > m->cap) {
    m->cap = (m->len + n) * 2 + 16;
    m->b = realloc(m->b, m->cap);
    FZ_CHECK(m->b != NULL);
  }
  if (n) memcpy(m->b + m->len, p, n);
  m->len += n;
}

static int count_sink(void *arg, const uint8_t *p, size_t n) {
  (void)p;
  *(size_t *)arg += n;
  return 0;
}

/* Encode one whole message as the peer would and parse it back: same bytes. */
static void check_round_trip(const cgnet__ws_config *cfg, uint8_t op, const message *m) {
  static const uint8_t key[4] = {1, 2, 3, 4};
  int masked = cfg->role == CGNET__WS_SERVER;
  size_t total = CGNET__WS_MAX_HEADER + m->len;
  uint8_t *wire = malloc(total);
  FZ_CHECK(wire != NULL);
  size_t hl = cgnet__ws_encode_header(wire, 1, 0, op, m->len, masked ? key : NULL);
  if (m->len)
    cgnet__ws_mask(wire + hl, m->b, m->len, masked ? key : (const uint8_t[4]){0}, 0);
  cgnet__ws_config plain = {.role = cfg->role};
  cgnet__ws_parser p;
  cgnet__ws_parser_init(&p, &plain);
  cgnet__ws_event ev;
  size_t used = cgnet__ws_parse(&p, wire, hl + m->len, &ev);
  FZ_CHECK(used == hl + m->len);
  FZ_CHECK(ev.type == CGNET__WS_EV_DATA && ev.first && ev.last && ev.opcode == op);
  FZ_CHECK(ev.len == m->len && (m->len == 0 || memcmp(ev.data, m->b, m->len) == 0));
  free(wire);
}

typedef struct run {
  const cgnet__ws_config *cfg;
  cgnet__ws_parser parser;
  cgnet__ws_deflate *z;
  message msg;
  uint8_t msg_op;
  int compressed;
  size_t inflated;
  int failed;
} run;

static void on_data(run *r, const cgnet__ws_event *ev, trace *t) {
  FZ_CHECK(ev->opcode == CGNET__WS_OP_TEXT || ev->opcode == CGNET__WS_OP_BINARY);
  FZ_CHECK(ev->first == !r->msg.open);
  if (ev->first) {
    r->msg.len = 0;
    r->msg.open = 1;
    r->msg_op = ev->opcode;
    r->compressed = ev->compressed;
    r->inflated = 0;
  }
  FZ_CHECK(ev->opcode == r->msg_op && ev->compressed == r->compressed);
  FZ_CHECK(!ev->compressed || r->cfg->allow_rsv1);
  append(&r->msg, ev->data, ev->len);
  uint64_t max = r->cfg->max_message;
  FZ_CHECK(max == 0 || r->msg.len <= max);
  if (ev->compressed && r->z && !r->failed) {
    int rc =
        cgnet__ws_inflate(r->z, ev->data, ev->len, ev->last, max, count_sink, &r->inflated);
    FZ_CHECK(rc == 0 || rc == CGNET_EMSGSIZE || rc == CGNET_ECODEC);
    FZ_CHECK(max == 0 || r->inflated <= max);
    if (rc) r->failed = 1; /* a conn would close here */
  }
  if (!ev->last) return;
  /* Message-level only: the pieces depend on how the bytes arrived, the message not. */
  t->events++;
  fold(t, ev->compressed ? (r->failed ? 1 : 2 + (uint64_t)r->inflated) : 0);
  r->msg.open = 0;
  if (ev->opcode == CGNET__WS_OP_TEXT && !ev->compressed)
    FZ_CHECK(cgnet__utf8_valid(r->msg.b, r->msg.len));
  if (!ev->compressed) check_round_trip(r->cfg, ev->opcode, &r->msg);
  fold_bytes(t, r->msg.b, r->msg.len);
}

static void on_event(run *r, const cgnet__ws_event *ev, const uint8_t *buf, size_t len,
                     trace *t) {
  if (ev->type != CGNET__WS_EV_DATA) {
    t->events++;
    fold(t, (uint64_t)ev->type << 8 | ev->opcode);
  }
  if (ev->data) FZ_CHECK(ev->data >= buf && ev->data + ev->len <= buf + len);
  switch (ev->type) {
  case CGNET__WS_EV_DATA:
    on_data(r, ev, t);
    break;
  case CGNET__WS_EV_PING:
  case CGNET__WS_EV_PONG:
    FZ_CHECK(ev->len <= CGNET__WS_MAX_CONTROL_PAYLOAD);
    fold_bytes(t, ev->data, ev->len);
    break;
  case CGNET__WS_EV_CLOSE:
    FZ_CHECK(ev->close_code == CGNET__WS_CLOSE_NO_STATUS ||
             cgnet__ws_close_code_valid(ev->close_code));
    FZ_CHECK(ev->len <= CGNET__WS_MAX_CLOSE_REASON);
    FZ_CHECK(cgnet__utf8_valid(ev->data, ev->len));
    fold(t, ev->close_code);
    fold_bytes(t, ev->data, ev->len);
    break;
  case CGNET__WS_EV_ERROR:
    FZ_CHECK(ev->close_code == 1002 || ev->close_code == 1007 || ev->close_code == 1009);
    FZ_CHECK(ev->reason != NULL);
    t->end = ev->close_code;
    break;
  default:
    FZ_CHECK(0);
  }
}

/* Feed stream[0, n) as stream[0, cut) then the rest. */
static trace feed(const cgnet__ws_config *cfg, const uint8_t *stream, size_t n,
                  size_t cut) {
  trace t = {0xcbf29ce484222325ull, 0, 0};
  run r = {.cfg = cfg};
  cgnet__ws_parser_init(&r.parser, cfg);
  if (cfg->allow_rsv1) {
    cgnet__ws_deflate_params p = {0, 0, 15, 15};
    cgnet__ws_deflate_config dc = {0};
    r.z = cgnet__ws_deflate_new(cfg->role, &p, &dc);
  }
  uint8_t *pending = NULL;
  size_t npending = 0, at = 0;
  for (int delivery = 0; delivery < 2 && !t.end; delivery++) {
    size_t end = delivery == 0 ? cut : n;
    size_t len = npending + (end - at);
    uint8_t *buf = malloc(len ? len : 1); /* exactly what arrived: reads past it trap */
    FZ_CHECK(buf != NULL);
    if (npending) memcpy(buf, pending, npending);
    memcpy(buf + npending, stream + at, end - at);
    at = end;
    size_t pos = 0;
    for (;;) {
      cgnet__ws_event ev;
      size_t used = cgnet__ws_parse(&r.parser, buf + pos, len - pos, &ev);
      FZ_CHECK(used <= len - pos);
      if (ev.type == CGNET__WS_EV_DATA) FZ_CHECK(ev.len <= used);
      pos += used;
      if (ev.type == CGNET__WS_EV_NONE) break;
      on_event(&r, &ev, buf, len, &t);
      if (ev.type == CGNET__WS_EV_ERROR) {
        cgnet__ws_event again;
        FZ_CHECK(cgnet__ws_parse(&r.parser, buf + pos, len - pos, &again) == 0);
        FZ_CHECK(again.type == CGNET__WS_EV_ERROR && again.close_code == ev.close_code);
        break;
      }
    }
    free(pending);
    npending = len - pos;
    pending = malloc(npending ? npending : 1);
    FZ_CHECK(pending != NULL);
    if (npending) memcpy(pending, buf + pos, npending);
    free(buf);
  }
  free(pending);
  free(r.msg.b);
  cgnet__ws_deflate_free(r.z);
  return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 2) return 0;
  static const uint64_t frames[] = {0, 0, 125, 70000};
  static const uint64_t messages[] = {0, 1, 200, 100000};
  cgnet__ws_config cfg = {
      .role = d[0] & 1 ? CGNET__WS_CLIENT : CGNET__WS_SERVER,
      .allow_rsv1 = (d[0] >> 1) & 1,
      .max_frame = frames[(d[0] >> 2) & 3],
      .max_message = messages[(d[0] >> 4) & 3],
  };
  const uint8_t *stream = d + 2;
  size_t len = n - 2;
  size_t cut = len ? d[1] % (len + 1) : 0;
  trace whole = feed(&cfg, stream, len, len);
  trace split = feed(&cfg, stream, len, cut);
  FZ_CHECK(whole.events == split.events);
  FZ_CHECK(whole.hash == split.hash);
  FZ_CHECK(whole.end == split.end);
  return 0;
}
