/* The WebSocket frame parser and encoders (see ws_frame.h for the parser's contract). */
#include "ws_frame.h"

#include <string.h>

#include "cgnet.h"

enum { ST_HEADER, ST_PAYLOAD, ST_CLOSED, ST_FAILED };

#define RSV1 0x40
#define RSV23 0x30

void cgnet__ws_parser_init(cgnet__ws_parser *p, const cgnet__ws_config *cfg) {
  memset(p, 0, sizeof *p);
  p->cfg = *cfg;
  p->state = ST_HEADER;
}

static int is_control(uint8_t op) {
  return op >= 0x8;
}

static int known_opcode(uint8_t op) {
  return op <= CGNET__WS_OP_BINARY || (op >= CGNET__WS_OP_CLOSE && op <= CGNET__WS_OP_PONG);
}

/* Enter the failed state; every later call reports the same error. */
static void fail(cgnet__ws_parser *p, cgnet__ws_event *ev, uint16_t code, const char *why) {
  p->state = ST_FAILED;
  p->error_code = code;
  p->error_why = why;
  ev->type = CGNET__WS_EV_ERROR;
  ev->close_code = code;
  ev->reason = why;
}

size_t cgnet__ws_decode_header(const uint8_t *b, size_t n, cgnet__ws_header *h) {
  if (n < 2) return 0;
  uint8_t len7 = b[1] & 0x7f;
  size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  size_t masked = b[1] >> 7;
  size_t hl = 2 + ext + 4 * masked;
  if (n < hl) return 0;
  h->fin = b[0] >> 7;
  h->rsv = b[0] & 0x70;
  h->opcode = b[0] & 0x0f;
  h->masked = (uint8_t)masked;
  h->header_len = (uint8_t)hl;
  uint64_t len = len7;
  if (ext) {
    len = 0;
    for (size_t i = 0; i < ext; i++)
      len = len << 8 | b[2 + i];
  }
  h->payload_len = len;
  if (masked)
    memcpy(h->mask, b + 2 + ext, 4);
  else
    memset(h->mask, 0, 4);
  return hl;
}

/* The checks the first two bytes allow: fail as early as the frame shows its fault. */
static const char *check_start(const cgnet__ws_parser *p, uint8_t b0, uint8_t b1) {
  uint8_t op = b0 & 0x0f, rsv = b0 & 0x70, fin = b0 >> 7, masked = b1 >> 7;
  if (rsv & RSV23) return "reserved bits RSV2/RSV3 set";
  if (!known_opcode(op)) return "unknown opcode";
  if ((rsv & RSV1) && !p->cfg.allow_rsv1) return "RSV1 set without an extension";
  if ((rsv & RSV1) && (is_control(op) || op == CGNET__WS_OP_CONTINUATION))
    return "RSV1 set on a control or continuation frame";
  if (is_control(op) && !fin) return "fragmented control frame";
  if (is_control(op) && (b1 & 0x7f) > CGNET__WS_MAX_CONTROL_PAYLOAD)
    return "control frame payload over 125 bytes";
  if (p->cfg.role == CGNET__WS_SERVER && !masked) return "unmasked frame from a client";
  if (p->cfg.role == CGNET__WS_CLIENT && masked) return "masked frame from a server";
  if (op == CGNET__WS_OP_CONTINUATION && !p->in_message)
    return "continuation frame without a message to continue";
  if ((op == CGNET__WS_OP_TEXT || op == CGNET__WS_OP_BINARY) && p->in_message)
    return "new data message inside a fragmented one";
  return NULL;
}

/* The length checks once the header is whole: its form (1002) and the limits (1009). */
static int check_length(const cgnet__ws_parser *p, const cgnet__ws_header *h,
                        uint16_t *code, const char **why) {
  uint64_t len = h->payload_len;
  size_t ext = (size_t)h->header_len - 2 - 4 * (size_t)h->masked;
  *code = CGNET__WS_CLOSE_PROTOCOL;
  if (ext == 8 && (len >> 63)) {
    *why = "64-bit payload length with its top bit set";
    return -1;
  }
  if ((ext == 2 && len < 126) || (ext == 8 && len <= 0xffff)) {
    *why = "payload length not in its minimal form";
    return -1;
  }
  if (is_control(h->opcode)) return 0;
  *code = CGNET__WS_CLOSE_TOO_BIG;
  if (p->cfg.max_frame && len > p->cfg.max_frame) {
    *why = "frame larger than the maximum frame size";
    return -1;
  }
  uint64_t so_far = h->opcode == CGNET__WS_OP_CONTINUATION ? p->message_len : 0;
  if (p->cfg.max_message && len > p->cfg.max_message - so_far) {
    *why = "message larger than the maximum message size";
    return -1;
  }
  return 0;
}

static uint16_t load_be16(const uint8_t *b) {
  return (uint16_t)(b[0] << 8 | b[1]);
}

/* A whole control frame's payload, unmasked: report it. */
static void control_event(cgnet__ws_parser *p, const cgnet__ws_header *h, uint8_t *payload,
                          cgnet__ws_event *ev) {
  size_t n = (size_t)h->payload_len;
  ev->opcode = h->opcode;
  if (h->opcode == CGNET__WS_OP_PING || h->opcode == CGNET__WS_OP_PONG) {
    ev->type = h->opcode == CGNET__WS_OP_PING ? CGNET__WS_EV_PING : CGNET__WS_EV_PONG;
    ev->data = payload;
    ev->len = n;
    return;
  }
  if (n == 1) {
    fail(p, ev, CGNET__WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
    return;
  }
  uint16_t code = n ? load_be16(payload) : CGNET__WS_CLOSE_NO_STATUS;
  if (n && !cgnet__ws_close_code_valid(code)) {
    fail(p, ev, CGNET__WS_CLOSE_PROTOCOL, "invalid close code");
    return;
  }
  if (n > 2 && !cgnet__utf8_valid(payload + 2, n - 2)) {
    fail(p, ev, CGNET__WS_CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason");
    return;
  }
  p->state = ST_CLOSED;
  ev->type = CGNET__WS_EV_CLOSE;
  ev->close_code = code;
  ev->data = n > 2 ? payload + 2 : payload;
  ev->len = n > 2 ? n - 2 : 0;
}

/* The text checks for a piece of a message: UTF-8 so far, and complete at its end.
 * Compressed messages are checked after inflation, by the caller. */
static int text_ok(cgnet__ws_parser *p, const uint8_t *data, size_t n, int last) {
  if (p->message_op != CGNET__WS_OP_TEXT || p->compressed) return 1;
  size_t bad;
  if (cgnet__utf8_feed(&p->utf8, data, n, &bad) != 0) return 0;
  return !last || cgnet__utf8_done(&p->utf8);
}

/* Report data[0, n) of the current frame as a DATA event; the frame ends the message if
 * it is its last piece of a FIN frame. */
static void data_event(cgnet__ws_parser *p, uint8_t *data, size_t n, int frame_done,
                       cgnet__ws_event *ev) {
  int last = frame_done && p->h.fin;
  if (!text_ok(p, data, n, last)) {
    fail(p, ev, CGNET__WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
    return;
  }
  ev->type = CGNET__WS_EV_DATA;
  ev->opcode = p->message_op;
  ev->first = !p->reported;
  ev->last = (uint8_t)last;
  ev->compressed = p->compressed;
  ev->data = data;
  ev->len = n;
  p->reported = 1;
  if (frame_done) p->state = ST_HEADER;
  if (last) p->in_message = 0;
}

/* HEADER state: a whole frame header, or a whole control frame. */
static size_t read_header(cgnet__ws_parser *p, uint8_t *buf, size_t len,
                          cgnet__ws_event *ev) {
  if (len < 2) return 0;
  const char *why = check_start(p, buf[0], buf[1]);
  if (why) {
    fail(p, ev, CGNET__WS_CLOSE_PROTOCOL, why);
    return 0;
  }
  cgnet__ws_header h;
  size_t hl = cgnet__ws_decode_header(buf, len, &h);
  if (!hl) return 0;
  uint16_t code;
  if (check_length(p, &h, &code, &why) != 0) {
    fail(p, ev, code, why);
    return 0;
  }
  if (is_control(h.opcode)) {
    size_t n = (size_t)h.payload_len;
    if (len - hl < n) return 0; /* consumed only when whole */
    cgnet__ws_mask(buf + hl, buf + hl, n, h.mask, 0);
    control_event(p, &h, buf + hl, ev);
    return p->state == ST_FAILED ? 0 : hl + n;
  }
  if (h.opcode != CGNET__WS_OP_CONTINUATION) {
    p->in_message = 1;
    p->message_op = h.opcode;
    p->compressed = (h.rsv & RSV1) != 0;
    p->message_len = 0;
    p->reported = 0;
    cgnet__utf8_init(&p->utf8);
  }
  p->message_len += h.payload_len;
  p->h = h;
  p->remaining = h.payload_len;
  p->state = ST_PAYLOAD;
  if (h.payload_len == 0) {
    p->state = ST_HEADER;
    if (h.fin) {
      data_event(p, buf + hl, 0, 1, ev);
      if (p->state == ST_FAILED) return 0;
    }
  }
  return hl;
}

/* PAYLOAD state: unmask and report what has arrived of the frame's payload. */
static size_t read_payload(cgnet__ws_parser *p, uint8_t *buf, size_t len,
                           cgnet__ws_event *ev) {
  size_t n = len < p->remaining ? len : (size_t)p->remaining;
  if (n == 0) return 0;
  if (p->h.masked) {
    size_t offset = (size_t)((p->h.payload_len - p->remaining) & 3);
    cgnet__ws_mask(buf, buf, n, p->h.mask, offset);
  }
  p->remaining -= n;
  data_event(p, buf, n, p->remaining == 0, ev);
  return p->state == ST_FAILED ? 0 : n;
}

static size_t step(cgnet__ws_parser *p, uint8_t *buf, size_t len, cgnet__ws_event *ev) {
  switch (p->state) {
  case ST_HEADER:
    return read_header(p, buf, len, ev);
  case ST_PAYLOAD:
    return read_payload(p, buf, len, ev);
  case ST_CLOSED:
    return len;
  default:
    ev->type = CGNET__WS_EV_ERROR;
    ev->close_code = p->error_code;
    ev->reason = p->error_why;
    return 0;
  }
}

size_t cgnet__ws_parse(cgnet__ws_parser *p, uint8_t *buf, size_t len, cgnet__ws_event *ev) {
  size_t total = 0;
  memset(ev, 0, sizeof *ev);
  /* Frames that make no event (an empty non-final data frame) are passed over here. */
  for (;;) {
    size_t n = step(p, buf + total, len - total, ev);
    total += n;
    if (ev->type != CGNET__WS_EV_NONE || n == 0 || total == len) return total;
  }
}

size_t cgnet__ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                      size_t offset) {
  uint8_t k[8];
  for (size_t j = 0; j < 8; j++)
    k[j] = key[(offset + j) & 3];
  uint64_t kw;
  memcpy(&kw, k, sizeof kw);
  size_t i = 0;
  for (; n - i >= 8; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, sizeof w);
    w ^= kw;
    memcpy(dst + i, &w, sizeof w);
  }
  for (; i < n; i++)
    dst[i] = src[i] ^ k[i & 7];
  return (offset + n) & 3;
}

size_t cgnet__ws_encode_header(uint8_t out[CGNET__WS_MAX_HEADER], int fin, uint8_t rsv,
                               uint8_t opcode, uint64_t payload_len, const uint8_t *key) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 0x70) | (opcode & 0x0f));
  uint8_t mask_bit = key ? 0x80 : 0;
  if (payload_len < 126) {
    out[n++] = (uint8_t)(mask_bit | payload_len);
  } else if (payload_len <= 0xffff) {
    out[n++] = mask_bit | 126;
    out[n++] = (uint8_t)(payload_len >> 8);
    out[n++] = (uint8_t)payload_len;
  } else {
    out[n++] = mask_bit | 127;
    for (int shift = 56; shift >= 0; shift -= 8)
      out[n++] = (uint8_t)(payload_len >> shift);
  }
  if (key) {
    memcpy(out + n, key, 4);
    n += 4;
  }
  return n;
}

int cgnet__ws_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

long cgnet__ws_build_close(uint8_t out[CGNET__WS_MAX_CONTROL_FRAME], unsigned code,
                           const char *reason, size_t reason_len, const uint8_t *key) {
  if (code == 0 && reason_len) return CGNET_EINVAL;
  if (code != 0 && !cgnet__ws_close_code_valid(code)) return CGNET_EINVAL;
  if (reason_len > CGNET__WS_MAX_CLOSE_REASON) return CGNET_EINVAL;
  if (reason_len && !cgnet__utf8_valid((const uint8_t *)reason, reason_len))
    return CGNET_EINVAL;
  size_t plen = code ? 2 + reason_len : 0;
  size_t hl = cgnet__ws_encode_header(out, 1, 0, CGNET__WS_OP_CLOSE, plen, key);
  if (code) {
    out[hl] = (uint8_t)(code >> 8);
    out[hl + 1] = (uint8_t)code;
    if (reason_len) memcpy(out + hl + 2, reason, reason_len);
    if (key) cgnet__ws_mask(out + hl, out + hl, plen, key, 0);
  }
  return (long)(hl + plen);
}
