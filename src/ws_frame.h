/*
 * The WebSocket frame layer (RFC 6455 section 5): an incremental parser that turns the
 * bytes of a connection into message pieces and control frames, and the encoders for the
 * other direction. Pure (bytes in, events out), no allocation, no I/O; one parser per
 * connection, used on that connection's loop thread.
 *
 * Parsing: cgnet__ws_parse() looks at the bytes the caller has, consumes what it can and
 * reports at most one event per call:
 *  - a frame header is consumed only once it is complete (2 to 14 bytes); before that
 *    the call consumes nothing and reports NONE ("need more"). The first two bytes are
 *    checked as soon as they are there, so a bad frame fails before its length arrives.
 *  - a data frame's payload is unmasked in place and reported as it arrives (DATA), in
 *    as many pieces as the reads deliver; the masking key's position is carried across
 *    pieces, so a payload split at any byte unmasks right.
 *  - a control frame (close, ping, pong; at most 2 + 4 + 125 bytes) is consumed only once
 *    it is whole, and reported in place, unmasked. The caller's buffer must therefore be
 *    able to hold CGNET__WS_MAX_CONTROL_FRAME bytes.
 *  - a protocol violation reports ERROR with the close code to send (1002, 1007, 1009)
 *    and a static reason; the parser then stays failed and consumes nothing more.
 *  - after a close frame the parser is finished: it consumes and ignores everything.
 * Strictness: RFC 6455 says a sender MUST use the minimal length encoding; this parser
 * fails a frame that does not (1002), as it fails a 64-bit length with its top bit set.
 */
#ifndef CGNET_WS_FRAME_H
#define CGNET_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

enum {
  CGNET__WS_OP_CONTINUATION = 0x0,
  CGNET__WS_OP_TEXT = 0x1,
  CGNET__WS_OP_BINARY = 0x2,
  CGNET__WS_OP_CLOSE = 0x8,
  CGNET__WS_OP_PING = 0x9,
  CGNET__WS_OP_PONG = 0xa,
};

/* Close codes (RFC 6455 section 7.4.1) the parser and its callers use. */
enum {
  CGNET__WS_CLOSE_NORMAL = 1000,
  CGNET__WS_CLOSE_GOING_AWAY = 1001,
  CGNET__WS_CLOSE_PROTOCOL = 1002,
  CGNET__WS_CLOSE_UNSUPPORTED = 1003,
  CGNET__WS_CLOSE_NO_STATUS = 1005, /* never sent: "the close frame had no code" */
  CGNET__WS_CLOSE_ABNORMAL = 1006,  /* never sent: "no close frame at all" */
  CGNET__WS_CLOSE_INVALID_DATA = 1007,
  CGNET__WS_CLOSE_POLICY = 1008,
  CGNET__WS_CLOSE_TOO_BIG = 1009,
  CGNET__WS_CLOSE_EXTENSION = 1010,
  CGNET__WS_CLOSE_INTERNAL = 1011,
};

#define CGNET__WS_MAX_HEADER 14           /* 2 + 8 (64-bit length) + 4 (masking key) */
#define CGNET__WS_MAX_CONTROL_PAYLOAD 125 /* RFC 6455 section 5.5 */
#define CGNET__WS_MAX_CONTROL_FRAME (2 + 4 + CGNET__WS_MAX_CONTROL_PAYLOAD)
#define CGNET__WS_MAX_CLOSE_REASON (CGNET__WS_MAX_CONTROL_PAYLOAD - 2)

/* Whose frames the parser reads: a server reads a client's (which must be masked), a
 * client reads a server's (which must not be). */
typedef enum cgnet__ws_role { CGNET__WS_SERVER = 0, CGNET__WS_CLIENT = 1 } cgnet__ws_role;

typedef struct cgnet__ws_config {
  cgnet__ws_role role;
  /* A frame whose payload is longer fails with 1009 (0: no limit but the message's). */
  uint64_t max_frame;
  /* A data message whose payload (the sum of its frames, as sent: compressed if
   * compressed) would be longer fails with 1009 (0: no limit). */
  uint64_t max_message;
  /* permessage-deflate was negotiated: RSV1 marks a compressed message (on its first
   * frame only; never on control or continuation frames). Without it RSV1 fails (1002).
   * RSV2 and RSV3 always fail. */
  int allow_rsv1;
} cgnet__ws_config;

/* A frame header as sent. */
typedef struct cgnet__ws_header {
  uint8_t fin;
  uint8_t rsv;    /* the RSV1-3 bits, in place: 0x40 | 0x20 | 0x10 */
  uint8_t opcode; /* 0x0 - 0xf */
  uint8_t masked;
  uint8_t mask[4];
  uint8_t header_len; /* 2 - 14 */
  uint64_t payload_len;
} cgnet__ws_header;

typedef enum cgnet__ws_event_type {
  CGNET__WS_EV_NONE = 0, /* need more bytes (or: bytes after a close, ignored) */
  CGNET__WS_EV_DATA,     /* a piece of a text or binary message */
  CGNET__WS_EV_PING,
  CGNET__WS_EV_PONG,
  CGNET__WS_EV_CLOSE, /* the peer's close frame, code and reason checked */
  CGNET__WS_EV_ERROR, /* protocol violation: send close_code and fail the connection */
} cgnet__ws_event_type;

typedef struct cgnet__ws_event {
  cgnet__ws_event_type type;
  uint8_t opcode;     /* DATA: the message's (TEXT or BINARY); control: the frame's */
  uint8_t first;      /* DATA: the message's first piece */
  uint8_t last;       /* DATA: the message's last piece (it is complete) */
  uint8_t compressed; /* DATA: the message's first frame had RSV1 (permessage-deflate) */
  uint8_t *data;      /* DATA, PING, PONG: the payload, unmasked in the caller's buffer;
                         CLOSE: the reason (UTF-8, checked) */
  size_t len;
  uint16_t
      close_code;     /* CLOSE: the peer's (1005 if it sent none); ERROR: the one to send */
  const char *reason; /* ERROR: what was wrong (a static string, usable as close reason) */
} cgnet__ws_event;

typedef struct cgnet__ws_parser {
  cgnet__ws_config cfg;
  cgnet__ws_header h;    /* the frame being read (PAYLOAD state) */
  uint64_t remaining;    /* its payload bytes still to come */
  uint64_t message_len;  /* payload bytes of the current data message so far */
  cgnet__utf8 utf8;      /* the current text message's validation state */
  uint8_t state;         /* HEADER, PAYLOAD, CLOSED, FAILED (ws_frame.c) */
  uint8_t in_message;    /* a fragmented data message is open */
  uint8_t message_op;    /* its opcode */
  uint8_t compressed;    /* its first frame had RSV1 */
  uint8_t reported;      /* a DATA event of it has been reported */
  uint16_t error_code;   /* FAILED: the close code */
  const char *error_why; /* FAILED: the reason */
} cgnet__ws_parser;

void cgnet__ws_parser_init(cgnet__ws_parser *p, const cgnet__ws_config *cfg);

/* Parse buf[0, len) (payload bytes are unmasked in place). Returns the bytes consumed;
 * *ev says what they made. The caller keeps the unconsumed bytes and calls again with
 * them first and new bytes after, until the call returns NONE or ERROR. */
size_t cgnet__ws_parse(cgnet__ws_parser *p, uint8_t *buf, size_t len, cgnet__ws_event *ev);

/* Decode a frame header from p[0, n) without checks beyond its shape: returns the header
 * length (2 - 14) once it is all there, else 0. */
size_t cgnet__ws_decode_header(const uint8_t *p, size_t n, cgnet__ws_header *h);

/* XOR src[0, n) with the masking key starting at key byte `offset` (mod 4) into dst (dst
 * may be src). Returns the offset for the next byte. */
size_t cgnet__ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                      size_t offset);

/* Write a frame header into out (CGNET__WS_MAX_HEADER bytes) in the minimal length form;
 * key NULL: unmasked (server), else masked with key (client: the caller then masks the
 * payload with cgnet__ws_mask, offset 0). rsv: RSV bits in place (0x40 for a compressed
 * message's first frame). Returns the header length. The payload can go out as its own
 * iovec after it. */
size_t cgnet__ws_encode_header(uint8_t out[CGNET__WS_MAX_HEADER], int fin, uint8_t rsv,
                               uint8_t opcode, uint64_t payload_len, const uint8_t *key);

/* 1 if a peer may send this close code (1000-1003, 1007-1014, 3000-4999), else 0. */
int cgnet__ws_close_code_valid(unsigned code);

/* Build a whole close frame into out (CGNET__WS_MAX_CONTROL_FRAME bytes): code 0 sends
 * no payload; otherwise the code must be one a peer may send and the reason valid UTF-8
 * of at most CGNET__WS_MAX_CLOSE_REASON bytes. key as for cgnet__ws_encode_header.
 * Returns the frame's length, or CGNET_EINVAL. */
long cgnet__ws_build_close(uint8_t out[CGNET__WS_MAX_CONTROL_FRAME], unsigned code,
                           const char *reason, size_t reason_len, const uint8_t *key);

#endif
