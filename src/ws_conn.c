/*
 * WebSocket conns: a handler adapter that runs the protocol core (ws_handshake.c,
 * ws_frame.c, utf8.c, ws_deflate.c) on ordinary conns through the public conn API. The
 * conn's context slot holds a ws_conn; everything here runs on the conn's loop thread,
 * except the async calls, which post a task to it.
 *
 * A conn goes HANDSHAKE -> OPEN -> CLOSING (our close sent, waiting for the peer's) ->
 * DONE (close handshake over or conn failed: the TCP conn is being closed). Plain HTTP
 * requests keep a server's conn in HANDSHAKE, one request after the other; a dialed conn
 * sends its request in on_open and waits in HANDSHAKE for the 101.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cgnet_ws.h"
#include "core.h"
#include "utf8.h"
#include "ws_deflate.h"
#include "ws_frame.h"
#include "ws_handshake.h"

#define DEFAULT_MAX_MESSAGE (1024 * 1024)
#define DEFAULT_CLOSE_TIMEOUT_MS 5000
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
/* Smaller messages go out uncompressed: deflate's framing costs more than it saves. */
#define DEFLATE_MIN_SIZE 64
/* A message buffer grown past this is released after its message, so an idle conn holds
 * no large buffer because of one large message long ago. */
#define KEEP_MESSAGE_BUFFER (64 * 1024)

struct cgnet_ws_server {
  cgnet_ws_handler h;
  cgnet_ws_options o; /* defaults filled in; subprotocols copied */
  char **protocols;
  int deflate; /* accept permessage-deflate offers */
};

struct cgnet_ws_request {
  cgnet__ws_request r;
  const uint8_t *body;
  size_t body_len;
};

enum { WS_HANDSHAKE, WS_OPEN, WS_CLOSING, WS_DONE };

/* What a dialed conn needs until its handshake is over. */
typedef struct ws_dial {
  char *host, *path, *origin;
  char *protocols_line; /* the offered subprotocols, "a, b" (NULL: none) */
  char **protocols;     /* ... one by one, for checking the answer */
  size_t nprotocols;
  char key[CGNET__WS_KEY_LEN + 1];
  int offered_deflate;
} ws_dial;

typedef struct ws_conn {
  cgnet_ws_server *srv;
  void *user_ctx;
  ws_dial *dial;  /* a dialed conn until it is open (NULL for a server's conn) */
  uint8_t client; /* a dialed conn: its frames are masked */
  uint8_t state;
  uint8_t opened;      /* on_ws_open ran: on_ws_close is owed */
  uint8_t close_sent;  /* our close frame is queued */
  uint8_t have_code;   /* close_code / close_reason are set */
  uint16_t close_code; /* see on_ws_close */
  char close_reason[CGNET__WS_MAX_CLOSE_REASON + 1];
  size_t head_resume; /* the head parser's memo */
  cgnet_timer *timer; /* handshake, then close timeout */
  cgnet__ws_parser parser;
  cgnet__ws_deflate *z; /* permessage-deflate agreed */
  char *protocol;       /* agreed subprotocol */
  /* The message being reassembled or inflated. */
  uint8_t *msg;
  size_t msg_len, msg_cap;
  uint8_t msg_op;
  cgnet__utf8 utf8; /* inflated text is validated here as it comes out */
  /* Compression scratch, kept between messages. */
  uint8_t *zbuf;
  size_t zcap;
  /* A streamed message: its opcode (0: none open), whether a frame went out, whether
   * it is compressed (deflate agreed when it began) and whether the previous piece's
   * compressed output still owes its 00 00 ff ff tail (sent before the next piece), and
   * its text so far, validated piece by piece. */
  uint8_t stream_op;
  uint8_t stream_started;
  uint8_t stream_z;
  uint8_t stream_tail;
  cgnet__utf8 stream_utf8;
  /* The engine's stop sent our close frame (1001): what on_ws_close reports if the peer
   * does not answer it. */
  uint8_t stop_sent;
  /* A dialed conn: masked payload copies, and masking keys drawn from the system's
   * entropy a batch at a time (one getrandom per 64 frames). */
  uint8_t *mbuf;
  size_t mcap;
  uint8_t keys[256];
  size_t keys_used;
} ws_conn;

/* ---- small helpers ------------------------------------------------------------------- */

static cgnet_action ws_on_traffic(cgnet_conn *c);

/* The layer's state of a conn, or NULL for a conn this layer does not serve (its context
 * is someone else's pointer): the WebSocket calls are safe on any conn. */
static ws_conn *ws_of(const cgnet_conn *c) {
  if (!c->h || c->h->on_traffic != ws_on_traffic) return NULL;
  return (ws_conn *)cgnet_conn_context(c);
}

static int grow(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 256;
  while (n < need)
    n = n > SIZE_MAX / 2 ? need : n * 2;
  uint8_t *p = realloc(*buf, n);
  if (!p) return CGNET_ENOMEM;
  *buf = p;
  *cap = n;
  return 0;
}

static void record_close(ws_conn *ws, unsigned code, const char *reason, size_t len) {
  if (ws->have_code) return;
  if (len > CGNET__WS_MAX_CLOSE_REASON) len = CGNET__WS_MAX_CLOSE_REASON;
  ws->have_code = 1;
  ws->close_code = (uint16_t)code;
  if (len) memcpy(ws->close_reason, reason, len);
  ws->close_reason[len] = '\0';
}

/* The handshake and the close handshake are bounded by one conn timer: when it fires,
 * the conn is closed. */
static cgnet_action timer_expired(cgnet_timer *t, void *ud) {
  (void)t;
  ws_conn *ws = ud;
  if (ws->state == WS_HANDSHAKE) {
    static const char why[] = "handshake timed out";
    record_close(ws, CGNET_WS_CLOSE_ABNORMAL, why, sizeof why - 1);
  }
  ws->state = WS_DONE;
  return CGNET_CLOSE;
}

static void start_timer(cgnet_conn *c, ws_conn *ws, uint64_t ms) {
  if (!ws->timer) ws->timer = cgnet_conn_timer_new(c, timer_expired, ws);
  if (!ws->timer) {
    cgnet_conn_close(c); /* out of memory: no timer would bound this conn */
    return;
  }
  cgnet_timer_start(ws->timer, ms, 0);
}

/*
 * End the conn from our side once our last bytes (an HTTP error, a close frame) are
 * queued: send them and our FIN, then read and drop whatever the peer still sends until
 * its FIN (or the close timeout) closes the conn. Closing at once instead would make the
 * kernel answer bytes still in flight with a reset, which may destroy our last bytes
 * before the peer reads them. RFC 6455 section 7.1.1 has the server end the TCP conn
 * first, which the FIN does.
 */
static void finish(cgnet_conn *c, ws_conn *ws) {
  ws->state = WS_DONE;
  if (cgnet_conn_shutdown_write(c) != 0) {
    cgnet_conn_close(c);
    return;
  }
  start_timer(c, ws, ws->srv->o.close_timeout_ms);
}

/* ---- frames out ---------------------------------------------------------------------- */

/* A fresh masking key (RFC 6455 section 5.3: unpredictable, from strong entropy). */
static void next_key(ws_conn *ws, uint8_t key[4]) {
  if (ws->keys_used == 0 || ws->keys_used + 4 > sizeof ws->keys) {
    size_t got = 0;
    while (got < sizeof ws->keys) {
      ssize_t n = getrandom(ws->keys + got, sizeof ws->keys - got, 0);
      if (n > 0) got += (size_t)n;
    }
    ws->keys_used = 0;
  }
  memcpy(key, ws->keys + ws->keys_used, 4);
  ws->keys_used += 4;
}

static void release_if_big(uint8_t **buf, size_t *cap) {
  if (*cap > KEEP_MESSAGE_BUFFER) {
    free(*buf);
    *buf = NULL;
    *cap = 0;
  }
}

/* Queue one frame. A server's goes out as header + the caller's payload; a client's
 * payload is masked, so it is masked into a copy (in place when `scratch`: the payload
 * is already ours, the compressor's output). */
static int write_frame(cgnet_conn *c, ws_conn *ws, int fin, uint8_t rsv, uint8_t op,
                       const void *data, size_t len, int scratch) {
  uint8_t hdr[CGNET__WS_MAX_HEADER], key[4];
  const uint8_t *payload = data;
  if (ws->client) {
    next_key(ws, key);
    if (scratch) {
      cgnet__ws_mask((uint8_t *)data, data, len, key, 0);
    } else if (len) {
      if (grow(&ws->mbuf, &ws->mcap, len) != 0) return CGNET_ENOMEM;
      cgnet__ws_mask(ws->mbuf, data, len, key, 0);
      payload = ws->mbuf;
    }
  }
  size_t hl = cgnet__ws_encode_header(hdr, fin, rsv, op, len, ws->client ? key : NULL);
  struct iovec iov[2] = {{hdr, hl}, {(void *)payload, len}};
  int rc = cgnet_conn_writev(c, iov, len ? 2 : 1);
  if (payload == ws->mbuf) release_if_big(&ws->mbuf, &ws->mcap);
  return rc;
}

/* Send our close frame (once) and remember what we said. */
static int send_close(cgnet_conn *c, ws_conn *ws, unsigned code, const char *reason,
                      size_t len) {
  uint8_t frame[CGNET__WS_MAX_CONTROL_FRAME], key[4];
  if (ws->client) next_key(ws, key);
  long n = cgnet__ws_build_close(frame, code, reason, len, ws->client ? key : NULL);
  if (n < 0) return (int)n;
  ws->close_sent = 1;
  return cgnet_conn_write(c, frame, (size_t)n);
}

/* Fail the WebSocket (RFC 6455 section 7.1.7): close frame with `code`, then close. */
static void fail_conn(cgnet_conn *c, ws_conn *ws, unsigned code, const char *why) {
  size_t len = why ? strlen(why) : 0;
  if (len > CGNET__WS_MAX_CLOSE_REASON) len = CGNET__WS_MAX_CLOSE_REASON;
  record_close(ws, code, why, len);
  if (!ws->close_sent) send_close(c, ws, code, why, len);
  finish(c, ws);
}

/* ---- HTTP responses -------------------------------------------------------------------
 */

static void refuse(cgnet_conn *c, ws_conn *ws, int status) {
  char buf[512];
  long n = cgnet__ws_build_error(buf, sizeof buf, status, NULL);
  if (n > 0) cgnet_conn_write(c, buf, (size_t)n);
  finish(c, ws);
}

static int offered(const cgnet__ws_request *r, const char *proto) {
  for (size_t i = 0; i < r->head.nprotocols; i++) {
    cgnet__ws_str s = r->head.protocols[i];
    if (strlen(proto) == s.len && memcmp(proto, s.ptr, s.len) == 0) return 1;
  }
  return 0;
}

static const char *preferred_protocol(const cgnet_ws_server *srv,
                                      const cgnet__ws_request *r) {
  for (size_t i = 0; i < srv->o.nsubprotocols; i++)
    if (offered(r, srv->protocols[i])) return srv->protocols[i];
  return NULL;
}

/* The largest compressed form of n bytes; a limit too large to have one stays as is
 * (it bounds nothing a peer could send anyway). */
static uint64_t compressed_bound(size_t n) {
  return n > SIZE_MAX / 4 ? n : cgnet__ws_deflate_bound(n);
}

static void parser_config(const ws_conn *ws, cgnet__ws_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->role = ws->client ? CGNET__WS_CLIENT : CGNET__WS_SERVER;
  cfg->max_frame = ws->srv->o.max_frame;
  cfg->max_message = ws->srv->o.max_message;
  cfg->allow_rsv1 = ws->z != NULL;
  if (ws->z) {
    /* The parser judges payloads as sent. Deflate makes incompressible data a little
     * larger, so a message within the limit may arrive over it compressed: allow the
     * worst case. What it inflates to is held to the limit itself (inflate_piece). */
    cfg->max_frame = compressed_bound(ws->srv->o.max_frame);
    cfg->max_message = compressed_bound(ws->srv->o.max_message);
  }
}

static void open_conn(ws_conn *ws);

/* Agree on permessage-deflate if offered and allowed; ext gets the response value. */
static int agree_deflate(ws_conn *ws, const cgnet__ws_request *r, char *ext, size_t cap) {
  ext[0] = '\0';
  if (!ws->srv->deflate) return 0;
  cgnet__ws_deflate_config cfg = {0};
  cgnet__ws_deflate_params agreed;
  int rc = cgnet__ws_deflate_negotiate(r->head.extensions, r->head.nextensions, &cfg,
                                       &agreed, ext, cap);
  if (rc != 1) {
    ext[0] = '\0';
    return 0;
  }
  ws->z = cgnet__ws_deflate_new(CGNET__WS_SERVER, &agreed, &cfg);
  if (!ws->z) ext[0] = '\0'; /* no memory: go on without it rather than fail */
  return 0;
}

/* A valid upgrade: ask the user, answer 101, open. Returns 0 once open, else the conn
 * has been refused. */
static int accept_upgrade(cgnet_conn *c, ws_conn *ws, cgnet_ws_request *req) {
  const cgnet_ws_handler *h = &ws->srv->h;
  const char *proto = preferred_protocol(ws->srv, &req->r);
  if (h->on_ws_handshake) {
    int status = h->on_ws_handshake(c, req, &proto);
    if (status != 0) {
      refuse(c, ws, status >= 400 && status <= 599 ? status : 500);
      return -1;
    }
    if (proto && !offered(&req->r, proto)) {
      refuse(c, ws, 500);
      return -1;
    }
  }
  if (proto && !(ws->protocol = strdup(proto))) {
    refuse(c, ws, 503);
    return -1;
  }
  char ext[256], resp[1024];
  agree_deflate(ws, &req->r, ext, sizeof ext);
  long n = cgnet__ws_build_response(resp, sizeof resp, req->r.key, proto, ext);
  if (n < 0) {
    refuse(c, ws, 500);
    return -1;
  }
  cgnet_conn_write(c, resp, (size_t)n);
  open_conn(ws);
  return 0;
}

/* The value of the first header `name`, or a view with ptr NULL. */
static cgnet__ws_str find_header(const cgnet__ws_request *r, const char *name) {
  for (size_t i = 0; i < r->head.nfields; i++)
    if (cgnet__ws_str_ieq(r->head.fields[i].name, name)) return r->head.fields[i].value;
  cgnet__ws_str none = {NULL, 0};
  return none;
}

/* The body length of a plain request: 0 or more, or the status to refuse it with. */
static long body_length(const cgnet_ws_server *srv, const cgnet__ws_request *r) {
  if (!r->has_body) return 0;
  if (find_header(r, "transfer-encoding").ptr) return -501;
  cgnet__ws_str cl = find_header(r, "content-length");
  if (!cl.ptr || cl.len == 0 || cl.len > 18) return -400;
  unsigned long long v = 0;
  for (size_t i = 0; i < cl.len; i++) {
    if (cl.ptr[i] < '0' || cl.ptr[i] > '9') return -400;
    v = v * 10 + (unsigned)(cl.ptr[i] - '0');
  }
  if (v > srv->o.max_message) return -413;
  return (long)v;
}

/* ---- reading: the handshake and plain HTTP ------------------------------------------- */

/* One plain HTTP request (head parsed). Returns 1 if it was handled and consumed, 0 to
 * wait for its body, -1 when the conn is done. */
static int plain_request(cgnet_conn *c, ws_conn *ws, cgnet_ws_request *req,
                         const uint8_t *buf, size_t len, cgnet_action *act) {
  const cgnet_ws_handler *h = &ws->srv->h;
  if (!h->on_http_request) {
    refuse(c, ws, 426);
    return -1;
  }
  long body = body_length(ws->srv, &req->r);
  if (body < 0) {
    refuse(c, ws, (int)-body);
    return -1;
  }
  size_t total = req->r.head.head_len + (size_t)body;
  if (len < total) return 0;
  req->body = buf + req->r.head.head_len;
  req->body_len = (size_t)body;
  cgnet_action a = h->on_http_request(c, req);
  cgnet_conn_discard(c, total);
  ws->head_resume = 0;
  if (a == CGNET_SHUTDOWN) *act = a;
  if (a != CGNET_NONE) {
    finish(c, ws);
    return -1;
  }
  start_timer(c, ws, ws->srv->o.handshake_timeout_ms);
  return 1;
}

/* Read request heads until the conn is a WebSocket, waits for bytes, or is done.
 * Returns 1 once open (frames may follow in the buffer), else 0. */
static int read_handshake(cgnet_conn *c, ws_conn *ws, cgnet_action *act) {
  for (;;) {
    const uint8_t *buf;
    size_t len = cgnet_conn_peek(c, 0, &buf);
    if (len == 0) return 0;
    cgnet_ws_request req;
    memset(&req, 0, sizeof req);
    int rc = cgnet__ws_parse_request((const char *)buf, len, 0, &ws->head_resume, &req.r);
    if (rc == 0) return 0;
    if (rc != 1) {
      refuse(c, ws, rc);
      return 0;
    }
    if (!cgnet__ws_is_upgrade(&req.r)) {
      if (plain_request(c, ws, &req, buf, len, act) <= 0) return 0;
      continue;
    }
    const char *why;
    int status = cgnet__ws_check_request(&req.r, &why);
    if (status != 0) {
      refuse(c, ws, status);
      return 0;
    }
    size_t head_len = req.r.head.head_len;
    if (accept_upgrade(c, ws, &req) != 0) return 0;
    cgnet_conn_discard(c, head_len);
    return 1;
  }
}

/* ---- reading: messages --------------------------------------------------------------- */

static void apply_action(cgnet_conn *c, ws_conn *ws, cgnet_action a, cgnet_action *act) {
  if (a == CGNET_SHUTDOWN) *act = a;
  if (a == CGNET_CLOSE && ws->state == WS_OPEN)
    cgnet_ws_close(c, CGNET_WS_CLOSE_NORMAL, NULL);
}

static void deliver(cgnet_conn *c, ws_conn *ws, uint8_t op, const uint8_t *data, size_t len,
                    cgnet_action *act) {
  const cgnet_ws_handler *h = &ws->srv->h;
  if (h->on_ws_message)
    apply_action(c, ws, h->on_ws_message(c, (cgnet_ws_opcode)op, data, len), act);
}

static void release_big_message_buffer(ws_conn *ws) {
  ws->msg_len = 0;
  if (ws->msg_cap > KEEP_MESSAGE_BUFFER) {
    free(ws->msg);
    ws->msg = NULL;
    ws->msg_cap = 0;
  }
}

static int append(ws_conn *ws, const uint8_t *p, size_t n) {
  if (grow(&ws->msg, &ws->msg_cap, ws->msg_len + n) != 0) return CGNET_ENOMEM;
  if (n) memcpy(ws->msg + ws->msg_len, p, n);
  ws->msg_len += n;
  return 0;
}

/* Inflated bytes: text is checked as it comes out, so bad UTF-8 fails at once. */
#define INFLATED_BAD_UTF8 1
static int inflate_sink(void *arg, const uint8_t *p, size_t n) {
  ws_conn *ws = arg;
  size_t bad;
  if (ws->msg_op == CGNET__WS_OP_TEXT && cgnet__utf8_feed(&ws->utf8, p, n, &bad) != 0)
    return INFLATED_BAD_UTF8;
  return append(ws, p, n);
}

/* A piece of a compressed message. Returns 0, or the conn has failed. */
static int inflate_piece(cgnet_conn *c, ws_conn *ws, const cgnet__ws_event *ev) {
  int rc = cgnet__ws_inflate(ws->z, ev->data, ev->len, ev->last, ws->srv->o.max_message,
                             inflate_sink, ws);
  if (rc == 0 && ev->last && ws->msg_op == CGNET__WS_OP_TEXT &&
      !cgnet__utf8_done(&ws->utf8))
    rc = INFLATED_BAD_UTF8;
  if (rc == 0) return 0;
  if (rc == CGNET_EMSGSIZE)
    fail_conn(c, ws, CGNET_WS_CLOSE_TOO_BIG,
              "message larger than the maximum message size");
  else if (rc == INFLATED_BAD_UTF8)
    fail_conn(c, ws, CGNET_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
  else if (rc == CGNET_ECODEC)
    fail_conn(c, ws, CGNET_WS_CLOSE_INVALID_DATA, "invalid compressed data");
  else
    fail_conn(c, ws, CGNET_WS_CLOSE_INTERNAL_ERROR, "out of memory");
  return -1;
}

static void on_data(cgnet_conn *c, ws_conn *ws, const cgnet__ws_event *ev,
                    cgnet_action *act) {
  if (ws->state != WS_OPEN) return; /* after our close: dropped */
  if (ev->first) {
    ws->msg_len = 0;
    ws->msg_op = ev->opcode;
    cgnet__utf8_init(&ws->utf8);
  }
  if (!ev->compressed && ws->z) {
    /* With deflate agreed the parser's limits allow for compression: an uncompressed
     * message is held to the limits themselves here. */
    if (ws->parser.h.payload_len > ws->srv->o.max_frame) {
      fail_conn(c, ws, CGNET_WS_CLOSE_TOO_BIG, "frame larger than the maximum frame size");
      return;
    }
    if (ev->len > ws->srv->o.max_message - ws->msg_len) {
      fail_conn(c, ws, CGNET_WS_CLOSE_TOO_BIG,
                "message larger than the maximum message size");
      return;
    }
  }
  if (ev->compressed) {
    if (inflate_piece(c, ws, ev) != 0) return;
  } else if (ev->first && ev->last) {
    deliver(c, ws, ev->opcode, ev->data, ev->len, act); /* in place */
    return;
  } else if (append(ws, ev->data, ev->len) != 0) {
    fail_conn(c, ws, CGNET_WS_CLOSE_INTERNAL_ERROR, "out of memory");
    return;
  }
  if (!ev->last) return;
  deliver(c, ws, ws->msg_op, ws->msg, ws->msg_len, act);
  release_big_message_buffer(ws);
}

static void on_peer_close(cgnet_conn *c, ws_conn *ws, const cgnet__ws_event *ev) {
  record_close(ws, ev->close_code, (const char *)ev->data, ev->len);
  if (!ws->close_sent) {
    /* Echo the code (none for a close that had none), as RFC 6455 section 5.5.1 asks. */
    unsigned code = ev->close_code == CGNET__WS_CLOSE_NO_STATUS ? 0 : ev->close_code;
    send_close(c, ws, code, NULL, 0);
  }
  /* Both closes are out: the server ends the TCP conn first (section 7.1.1). */
  finish(c, ws);
}

/* One parser event. */
static void on_event(cgnet_conn *c, ws_conn *ws, const cgnet__ws_event *ev,
                     cgnet_action *act) {
  const cgnet_ws_handler *h = &ws->srv->h;
  switch (ev->type) {
  case CGNET__WS_EV_DATA:
    on_data(c, ws, ev, act);
    break;
  case CGNET__WS_EV_PING:
    if (!ws->close_sent) write_frame(c, ws, 1, 0, CGNET__WS_OP_PONG, ev->data, ev->len, 0);
    break;
  case CGNET__WS_EV_PONG:
    if (h->on_ws_pong && ws->state == WS_OPEN)
      apply_action(c, ws, h->on_ws_pong(c, ev->data, ev->len), act);
    break;
  case CGNET__WS_EV_CLOSE:
    on_peer_close(c, ws, ev);
    break;
  case CGNET__WS_EV_ERROR:
    fail_conn(c, ws, ev->close_code, ev->reason);
    break;
  default:
    break;
  }
}

/* Parse what is buffered, one event at a time, while the conn is a WebSocket. */
static void read_frames(cgnet_conn *c, ws_conn *ws, cgnet_action *act) {
  while ((ws->state == WS_OPEN || ws->state == WS_CLOSING) && *act == CGNET_NONE &&
         !cgnet__conn_closing(c)) {
    const uint8_t *buf;
    size_t len = cgnet_conn_peek(c, 0, &buf);
    if (len == 0) return;
    if (cgnet__conn_has(c, CGNET__CF_PAUSED)) {
      /* Paused (by a callback, say on_ws_message): the frames already read stay
       * buffered, and cgnet_conn_resume_read hands them back here before reading more. */
      cgnet__conn_set(c, CGNET__CF_REDELIVER);
      return;
    }
    cgnet__ws_event ev;
    /* The bytes are the conn's own input: unmasking them in place is ours to do. */
    size_t n = cgnet__ws_parse(&ws->parser, (uint8_t *)buf, len, &ev);
    cgnet_conn_discard(c, n);
    if (ev.type == CGNET__WS_EV_NONE && n == 0) return;
    on_event(c, ws, &ev, act);
  }
}

/* ---- reading: a dialed conn's handshake ------------------------------------------------
 */

static void free_dial(ws_dial *d) {
  if (!d) return;
  free(d->host);
  free(d->path);
  free(d->origin);
  free(d->protocols_line);
  for (size_t i = 0; i < d->nprotocols; i++)
    free(d->protocols[i]);
  free(d->protocols);
  free(d);
}

/* The handshake failed: no WebSocket. on_ws_close will say why (1006). */
static void dial_failed(cgnet_conn *c, ws_conn *ws, const char *why) {
  record_close(ws, CGNET_WS_CLOSE_ABNORMAL, why, strlen(why));
  ws->state = WS_DONE;
  cgnet_conn_close(c);
}

/* Connected: send the upgrade request. */
static void send_request(cgnet_conn *c, ws_conn *ws) {
  ws_dial *d = ws->dial;
  char offer[128] = "";
  cgnet__ws_deflate_config cfg = {0};
  if (ws->srv->deflate && cgnet__ws_deflate_offer(&cfg, offer, sizeof offer) > 0)
    d->offered_deflate = 1;
  cgnet__ws_client_request req = {
      .host = d->host,
      .path = d->path,
      .origin = d->origin,
      .protocols = d->protocols_line,
      .extensions = d->offered_deflate ? offer : NULL,
  };
  char buf[4096];
  long n = cgnet__ws_build_request(buf, sizeof buf, &req, d->key);
  if (n < 0 || cgnet_conn_write(c, buf, (size_t)n) != 0) {
    dial_failed(c, ws, "cannot send the upgrade request");
    return;
  }
  start_timer(c, ws, ws->srv->o.handshake_timeout_ms);
}

/* The server agreed to permessage-deflate: set it up as it answered. */
static int accept_deflate(ws_conn *ws, const cgnet__ws_response *r) {
  for (size_t i = 0; i < r->head.nextensions; i++) {
    if (!cgnet__ws_str_ieq(r->head.extensions[i].name, "permessage-deflate")) continue;
    cgnet__ws_deflate_config cfg = {0};
    cgnet__ws_deflate_params agreed;
    if (cgnet__ws_deflate_accept(&r->head.extensions[i], &cfg, &agreed) != 0) return -1;
    ws->z = cgnet__ws_deflate_new(CGNET__WS_CLIENT, &agreed, &cfg);
    return ws->z ? 0 : -1;
  }
  return 0;
}

/* Read the 101. Returns 1 once open, else 0 (waiting, or failed). */
static int read_response(cgnet_conn *c, ws_conn *ws) {
  const uint8_t *buf;
  size_t len = cgnet_conn_peek(c, 0, &buf);
  if (len == 0) return 0;
  cgnet__ws_response r;
  int rc = cgnet__ws_parse_response((const char *)buf, len, 0, &ws->head_resume, &r);
  if (rc == 0) return 0;
  if (rc < 0) {
    dial_failed(c, ws,
                rc == CGNET_EMSGSIZE ? "response head too large"
                                     : "malformed response head");
    return 0;
  }
  ws_dial *d = ws->dial;
  const char *ext_names[] = {"permessage-deflate"};
  const char *why;
  if (cgnet__ws_check_response(&r, d->key, (const char *const *)d->protocols, d->nprotocols,
                               ext_names, d->offered_deflate ? 1 : 0, &why) != 0) {
    char msg[CGNET__WS_MAX_CLOSE_REASON + 1];
    snprintf(msg, sizeof msg, "handshake: %s (status %d)", why, r.status);
    dial_failed(c, ws, msg);
    return 0;
  }
  if (accept_deflate(ws, &r) != 0) {
    dial_failed(c, ws, "handshake: unacceptable permessage-deflate parameters");
    return 0;
  }
  if (r.head.nprotocols &&
      !(ws->protocol = strndup(r.head.protocols[0].ptr, r.head.protocols[0].len))) {
    dial_failed(c, ws, "out of memory");
    return 0;
  }
  cgnet_conn_discard(c, r.head.head_len);
  free_dial(ws->dial);
  ws->dial = NULL;
  return 1;
}

/* The conn is a WebSocket now: its parser, its timer stopped, on_ws_open owed. */
static void open_conn(ws_conn *ws) {
  cgnet__ws_config cfg;
  parser_config(ws, &cfg);
  cgnet__ws_parser_init(&ws->parser, &cfg);
  if (ws->timer) cgnet_timer_stop(ws->timer);
  ws->state = WS_OPEN;
  ws->opened = 1;
}

/* ---- the engine handler ---------------------------------------------------------------
 */

static cgnet_action ws_on_open(cgnet_conn *c) {
  if (cgnet_conn_client(c)) {
    /* Dialed: the context is the ws_conn cgnet_ws_dial made. */
    ws_conn *ws = ws_of(c);
    if (!ws) return CGNET_CLOSE;
    send_request(c, ws);
    return CGNET_NONE;
  }
  cgnet_ws_server *srv = cgnet_engine_userdata(cgnet_conn_engine(c));
  ws_conn *ws = calloc(1, sizeof *ws);
  if (!ws) return CGNET_CLOSE;
  ws->srv = srv;
  ws->state = WS_HANDSHAKE;
  cgnet_conn_set_context(c, ws);
  start_timer(c, ws, srv->o.handshake_timeout_ms);
  return CGNET_NONE;
}

static int read_opening(cgnet_conn *c, ws_conn *ws, cgnet_action *act) {
  int open = ws->client ? read_response(c, ws) : read_handshake(c, ws, act);
  if (!open) return 0;
  if (ws->client) open_conn(ws);
  const cgnet_ws_handler *h = &ws->srv->h;
  if (h->on_ws_open) apply_action(c, ws, h->on_ws_open(c), act);
  return 1;
}

static cgnet_action ws_on_traffic(cgnet_conn *c) {
  ws_conn *ws = ws_of(c);
  cgnet_action act = CGNET_NONE;
  if (!ws) return CGNET_CLOSE;
  if (ws->state == WS_HANDSHAKE && !read_opening(c, ws, &act)) {
    if (ws->state != WS_DONE) return act;
  }
  read_frames(c, ws, &act);
  if (ws->state == WS_DONE) {
    /* Input after the end is not ours to read. */
    cgnet_conn_discard(c, cgnet_conn_inbound_buffered(c));
  }
  return act;
}

static void free_ws(ws_conn *ws) {
  free_dial(ws->dial);
  cgnet__ws_deflate_free(ws->z);
  free(ws->protocol);
  free(ws->msg);
  free(ws->zbuf);
  free(ws->mbuf);
  free(ws);
}

static cgnet_action ws_on_close(cgnet_conn *c, int reason) {
  ws_conn *ws = ws_of(c);
  if (!ws) return CGNET_NONE;
  const cgnet_ws_handler *h = &ws->srv->h;
  /* A dialed conn that never opened reports too, so its dialer learns why. */
  if ((ws->opened || ws->client) && h->on_ws_close) {
    if (!ws->have_code && ws->stop_sent) {
      static const char why[] = "going away";
      record_close(ws, CGNET_WS_CLOSE_GOING_AWAY, why, sizeof why - 1);
    } else if (!ws->have_code) {
      const char *why = ws->opened ? "" : cgnet_strerror(reason);
      record_close(ws, CGNET_WS_CLOSE_ABNORMAL, why, strlen(why));
    }
    h->on_ws_close(c, ws->close_code, ws->close_reason);
  }
  cgnet_conn_set_context(c, NULL);
  free_ws(ws);
  return CGNET_NONE;
}

/* With options.allow_half_open the peer's FIN comes here: a WebSocket has no half-open
 * state (its end is the close handshake), so the conn closes as it would without. */
static cgnet_action ws_on_read_closed(cgnet_conn *c) {
  (void)c;
  return CGNET_CLOSE;
}

static void ws_on_writable_changed(cgnet_conn *c, int writable) {
  ws_conn *ws = ws_of(c);
  if (ws && ws->opened && ws->srv->h.on_ws_writable_changed)
    ws->srv->h.on_ws_writable_changed(c, writable);
}

/* A dialed wss:// conn whose TLS handshake failed: its on_ws_close (1006) says why, in
 * the TLS library's words, not only the error's name. */
static void ws_on_tls_error(cgnet_conn *c, int code, const char *reason) {
  ws_conn *ws = ws_of(c);
  if (!ws || !ws->client) return;
  char why[CGNET__WS_MAX_CLOSE_REASON + 1];
  int n = snprintf(why, sizeof why, "%s: %s", cgnet_strerror(code), reason ? reason : "");
  record_close(ws, CGNET_WS_CLOSE_ABNORMAL, why, n < 0 ? 0 : strlen(why));
}

/*
 * The engine is stopping (or the dialing client is being freed). An open WebSocket is
 * sent a close frame with 1001 (going away) and keeps its conn, reading, so that the
 * peer's close can come back and the close handshake end as usual (FIN, then the peer's
 * FIN); the stop's timeout closes whatever is left. A conn whose close was already sent
 * just goes on with its close handshake. Returns false for a conn this layer does not
 * serve, or one still in its HTTP handshake: the engine drains and closes those as
 * always.
 */
bool cgnet__ws_conn_stopping(cgnet_conn *c) {
  ws_conn *ws = ws_of(c);
  if (!ws || ws->state == WS_HANDSHAKE) return false;
  if (ws->state == WS_OPEN) {
    static const char why[] = "going away";
    if (send_close(c, ws, CGNET_WS_CLOSE_GOING_AWAY, why, sizeof why - 1) != 0)
      return false;
    ws->stop_sent = 1;
    ws->state = WS_CLOSING;
    start_timer(c, ws, ws->srv->o.close_timeout_ms);
  }
  return true;
}

/* ---- server object --------------------------------------------------------------------
 */

static int copy_protocols(cgnet_ws_server *s, const cgnet_ws_options *o) {
  if (!o->nsubprotocols) return 0;
  if (!o->subprotocols) return CGNET_EINVAL;
  s->protocols = calloc(o->nsubprotocols, sizeof *s->protocols);
  if (!s->protocols) return CGNET_ENOMEM;
  for (size_t i = 0; i < o->nsubprotocols; i++) {
    if (!o->subprotocols[i] || !o->subprotocols[i][0]) return CGNET_EINVAL;
    if (!(s->protocols[i] = strdup(o->subprotocols[i]))) return CGNET_ENOMEM;
  }
  return 0;
}

static int fill_options(cgnet_ws_server *s, const cgnet_ws_options *in) {
  cgnet_ws_options o = in ? *in : (cgnet_ws_options){0};
  if (!o.max_message) o.max_message = DEFAULT_MAX_MESSAGE;
  if (!o.max_frame) o.max_frame = o.max_message;
  if (o.max_frame > o.max_message) return CGNET_EINVAL;
  if (!o.close_timeout_ms) o.close_timeout_ms = DEFAULT_CLOSE_TIMEOUT_MS;
  if (!o.handshake_timeout_ms) o.handshake_timeout_ms = DEFAULT_HANDSHAKE_TIMEOUT_MS;
  s->deflate = o.deflate != CGNET_OFF && cgnet__ws_deflate_available();
  s->o = o;
  s->o.subprotocols = NULL;
  return copy_protocols(s, &o);
}

int cgnet_ws_server_new(const cgnet_ws_handler *handler, const cgnet_ws_options *opts,
                        cgnet_ws_server **out) {
  if (!handler || !out) return CGNET_EINVAL;
  cgnet_ws_server *s = calloc(1, sizeof *s);
  if (!s) return CGNET_ENOMEM;
  s->h = *handler;
  int rc = fill_options(s, opts);
  if (rc != 0) {
    cgnet_ws_server_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void cgnet_ws_server_handler(cgnet_ws_server *ws, cgnet_handler *out) {
  memset(out, 0, sizeof *out);
  out->ud = ws;
  out->on_open = ws_on_open;
  out->on_traffic = ws_on_traffic;
  out->on_close = ws_on_close;
  out->on_writable_changed = ws_on_writable_changed;
  out->on_read_closed = ws_on_read_closed;
  out->on_tls_error = ws_on_tls_error;
}

void cgnet_ws_server_free(cgnet_ws_server *ws) {
  if (!ws) return;
  if (ws->protocols)
    for (size_t i = 0; i < ws->o.nsubprotocols; i++)
      free(ws->protocols[i]);
  free(ws->protocols);
  free(ws);
}

void *cgnet_ws_server_userdata(const cgnet_ws_server *ws) {
  return ws->h.ud;
}

/* ---- conn accessors --------------------------------------------------------------------
 */

void *cgnet_ws_userdata(const cgnet_conn *c) {
  ws_conn *ws = ws_of(c);
  return ws ? ws->srv->h.ud : NULL;
}

void *cgnet_ws_context(const cgnet_conn *c) {
  ws_conn *ws = ws_of(c);
  return ws ? ws->user_ctx : NULL;
}

void cgnet_ws_set_context(cgnet_conn *c, void *ctx) {
  ws_conn *ws = ws_of(c);
  if (ws) ws->user_ctx = ctx;
}

const char *cgnet_ws_subprotocol(const cgnet_conn *c) {
  ws_conn *ws = ws_of(c);
  return ws ? ws->protocol : NULL;
}

int cgnet_ws_deflate_enabled(const cgnet_conn *c) {
  ws_conn *ws = ws_of(c);
  return ws && ws->z != NULL;
}

/* ---- sending ---------------------------------------------------------------------------
 */

/* The conn's ws state if it may send data now, else NULL with *err set. */
static ws_conn *sendable(cgnet_conn *c, int *err) {
  if (!c) {
    *err = CGNET_EINVAL;
    return NULL;
  }
  if (c->loop != cgnet__tls_loop) {
    *err = CGNET_EWRONGTHREAD;
    return NULL;
  }
  ws_conn *ws = cgnet__conn_closed(c) ? NULL : ws_of(c);
  if (!ws || ws->state != WS_OPEN || cgnet__conn_closing(c)) {
    *err = CGNET_ECLOSED;
    return NULL;
  }
  return ws;
}

static int send_compressed(cgnet_conn *c, ws_conn *ws, uint8_t op, const uint8_t *data,
                           size_t len) {
  size_t need = cgnet__ws_deflate_bound(len), out_len;
  if (grow(&ws->zbuf, &ws->zcap, need) != 0) return CGNET_ENOMEM;
  int rc = cgnet__ws_deflate_message(ws->z, data, len, ws->zbuf, ws->zcap, &out_len);
  if (rc != 0) return rc;
  rc = write_frame(c, ws, 1, 0x40, op, ws->zbuf, out_len, 1);
  release_if_big(&ws->zbuf, &ws->zcap);
  return rc;
}

static int send_message(cgnet_conn *c, uint8_t op, const void *data, size_t len) {
  int err;
  ws_conn *ws = sendable(c, &err);
  if (!ws) return err;
  if (len && !data) return CGNET_EINVAL;
  if (ws->stream_op) return CGNET_EBUSY;
  if (op == CGNET__WS_OP_TEXT && !cgnet__utf8_valid(data, len)) return CGNET_EINVAL;
  if (ws->z && len >= DEFLATE_MIN_SIZE) return send_compressed(c, ws, op, data, len);
  return write_frame(c, ws, 1, 0, op, data, len, 0);
}

int cgnet_ws_send_text(cgnet_conn *c, const char *data, size_t len) {
  return send_message(c, CGNET__WS_OP_TEXT, data, len);
}

int cgnet_ws_send_binary(cgnet_conn *c, const void *data, size_t len) {
  return send_message(c, CGNET__WS_OP_BINARY, data, len);
}

int cgnet_ws_send_ping(cgnet_conn *c, const void *data, size_t len) {
  int err;
  ws_conn *ws = sendable(c, &err);
  if (!ws) return err;
  if (len > CGNET__WS_MAX_CONTROL_PAYLOAD || (len && !data)) return CGNET_EINVAL;
  return write_frame(c, ws, 1, 0, CGNET__WS_OP_PING, data, len, 0);
}

int cgnet_ws_close(cgnet_conn *c, int code, const char *reason) {
  int err;
  ws_conn *ws = sendable(c, &err);
  if (!ws) {
    ws = err == CGNET_ECLOSED && !cgnet__conn_closed(c) ? ws_of(c) : NULL;
    return ws && ws->close_sent ? CGNET_EALREADY : err;
  }
  size_t rlen = reason ? strlen(reason) : 0;
  if (code < 0 || (code == 0 && rlen)) return CGNET_EINVAL;
  int rc = send_close(c, ws, (unsigned)code, reason, rlen);
  if (rc == CGNET_EINVAL) return rc;
  ws->state = WS_CLOSING;
  start_timer(c, ws, ws->srv->o.close_timeout_ms);
  return rc;
}

int cgnet_ws_send_begin(cgnet_conn *c, cgnet_ws_opcode op) {
  int err;
  ws_conn *ws = sendable(c, &err);
  if (!ws) return err;
  if (op != CGNET_WS_TEXT && op != CGNET_WS_BINARY) return CGNET_EINVAL;
  if (ws->stream_op) return CGNET_EBUSY;
  ws->stream_op = (uint8_t)op;
  ws->stream_started = 0;
  ws->stream_z = ws->z != NULL;
  ws->stream_tail = 0;
  cgnet__utf8_init(&ws->stream_utf8);
  return 0;
}

/* The streamed message's next frame: its first carries the opcode (and RSV1 when it is
 * compressed). `scratch` as for write_frame. */
static int stream_frame(cgnet_conn *c, ws_conn *ws, int fin, const void *data, size_t len,
                        int scratch) {
  uint8_t op = ws->stream_started ? CGNET__WS_OP_CONTINUATION : ws->stream_op;
  uint8_t rsv = !ws->stream_started && ws->stream_z ? 0x40 : 0;
  ws->stream_started = 1;
  if (fin) {
    ws->stream_op = 0;
    if (ws->stream_z) cgnet__ws_deflate_end(ws->z);
  }
  return write_frame(c, ws, fin, rsv, op, data, len, scratch);
}

/* A piece compressed: the previous piece's tail, then this one's output without its
 * own tail (owed to the next piece, or dropped if this was the last). */
static int stream_compressed(cgnet_conn *c, ws_conn *ws, const uint8_t *data, size_t len) {
  static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
  size_t need = cgnet__ws_deflate_bound(len) + sizeof tail, out_len;
  if (grow(&ws->zbuf, &ws->zcap, need) != 0) return CGNET_ENOMEM;
  size_t head = ws->stream_tail ? sizeof tail : 0;
  memcpy(ws->zbuf, tail, head);
  int rc =
      cgnet__ws_deflate_piece(ws->z, data, len, ws->zbuf + head, ws->zcap - head, &out_len);
  if (rc != 0) return rc;
  ws->stream_tail = 1;
  rc = stream_frame(c, ws, 0, ws->zbuf, head + out_len, 1);
  release_if_big(&ws->zbuf, &ws->zcap);
  return rc;
}

int cgnet_ws_send_piece(cgnet_conn *c, const void *data, size_t len) {
  int err;
  ws_conn *ws = sendable(c, &err);
  if (!ws) return err;
  if (!ws->stream_op || (len && !data)) return CGNET_EINVAL;
  if (len == 0) return 0; /* an empty fragment says nothing */
  if (ws->stream_op == CGNET_WS_TEXT) {
    cgnet__utf8 v = ws->stream_utf8;
    size_t bad;
    if (cgnet__utf8_feed(&v, data, len, &bad) != 0) return CGNET_EINVAL;
    ws->stream_utf8 = v;
  }
  if (ws->stream_z) return stream_compressed(c, ws, data, len);
  return stream_frame(c, ws, 0, data, len, 0);
}

int cgnet_ws_send_end(cgnet_conn *c) {
  int err;
  ws_conn *ws = sendable(c, &err);
  if (!ws) return err;
  if (!ws->stream_op) return CGNET_EINVAL;
  if (ws->stream_op == CGNET_WS_TEXT && !cgnet__utf8_done(&ws->stream_utf8))
    return CGNET_EINVAL; /* it would end inside a character: the stream stays open */
  if (ws->stream_z && !ws->stream_started) {
    /* An empty compressed message: one 0x00 byte (RFC 7692 section 7.2.3.6). */
    uint8_t zero = 0x00; /* scratch: masked in place on a dialed conn */
    return stream_frame(c, ws, 1, &zero, 1, 1);
  }
  return stream_frame(c, ws, 1, NULL, 0, 0);
}

/* ---- dialing
 * ----------------------------------------------------------------------------- */

/* Split "ws://AUTHORITY/PATH?QUERY" into the address to dial ("tcp://HOST:PORT", port 80
 * when none is given), the Host header (AUTHORITY as written) and the request target;
 * "wss://" dials "tls://HOST:PORT" (port 443 by default), whose handshake sends HOST as
 * SNI and verifies the server's certificate against it. */
static int parse_url(const char *url, char **dial_addr, char **host, char **path) {
  const char *auth, *scheme, *port;
  if (strncmp(url, "ws://", 5) == 0) {
    auth = url + 5;
    scheme = "tcp";
    port = ":80";
  } else if (strncmp(url, "wss://", 6) == 0) {
    auth = url + 6;
    scheme = "tls";
    port = ":443";
  } else {
    return CGNET_EBADSCHEME;
  }
  size_t alen = strcspn(auth, "/?#");
  if (alen == 0 || auth[alen] == '#') return CGNET_EBADADDR;
  for (size_t i = 0; i < alen; i++)
    if (auth[i] <= ' ' || auth[i] == '@' || auth[i] == 0x7f) return CGNET_EBADADDR;
  const char *target = auth + alen;
  for (const char *p = target; *p; p++)
    if (*p <= ' ' || *p == 0x7f || *p == '#') return CGNET_EBADADDR;
  /* A port is given if the last ':' comes after any IPv6 literal's ']'. */
  const char *colon = memrchr(auth, ':', alen), *bracket = memrchr(auth, ']', alen);
  int has_port = colon && (!bracket || colon > bracket);
  size_t cap = alen + 16;
  *dial_addr = malloc(cap);
  *host = strndup(auth, alen);
  *path = malloc(strlen(target) + 2);
  if (!*dial_addr || !*host || !*path) return CGNET_ENOMEM;
  snprintf(*dial_addr, cap, "%s://%.*s%s", scheme, (int)alen, auth, has_port ? "" : port);
  snprintf(*path, strlen(target) + 2, "%s%s", target[0] == '/' ? "" : "/", target);
  return 0;
}

static int copy_offer(ws_dial *d, const cgnet_ws_dial_options *o) {
  if (!o || !o->nsubprotocols) return 0;
  if (!o->subprotocols) return CGNET_EINVAL;
  size_t line = 0;
  d->protocols = calloc(o->nsubprotocols, sizeof *d->protocols);
  if (!d->protocols) return CGNET_ENOMEM;
  for (size_t i = 0; i < o->nsubprotocols; i++, d->nprotocols++) {
    if (!o->subprotocols[i] || !o->subprotocols[i][0]) return CGNET_EINVAL;
    if (!(d->protocols[i] = strdup(o->subprotocols[i]))) return CGNET_ENOMEM;
    line += strlen(o->subprotocols[i]) + 2;
  }
  if (!(d->protocols_line = malloc(line + 1))) return CGNET_ENOMEM;
  d->protocols_line[0] = '\0';
  for (size_t i = 0; i < d->nprotocols; i++) {
    if (i) strcat(d->protocols_line, ", ");
    strcat(d->protocols_line, d->protocols[i]);
  }
  return 0;
}

/* A dialed conn's state, made before the dial: it is the conn's context from the start. */
static int new_dialed(cgnet_ws_server *srv, const char *url, const cgnet_ws_dial_options *o,
                      void *ctx, char **dial_addr, ws_conn **out) {
  ws_conn *ws = calloc(1, sizeof *ws);
  if (!ws) return CGNET_ENOMEM;
  ws->srv = srv;
  ws->client = 1;
  ws->user_ctx = ctx;
  ws->state = WS_HANDSHAKE;
  int rc = CGNET_ENOMEM;
  if (!(ws->dial = calloc(1, sizeof *ws->dial))) goto fail;
  ws_dial *d = ws->dial;
  if ((rc = parse_url(url, dial_addr, &d->host, &d->path)) != 0) goto fail;
  rc = CGNET_ENOMEM;
  if (o && o->origin && !(d->origin = strdup(o->origin))) goto fail;
  if ((rc = copy_offer(d, o)) != 0) goto fail;
  uint8_t random16[16];
  if (getrandom(random16, sizeof random16, 0) != (ssize_t)sizeof random16) {
    rc = CGNET_EIO;
    goto fail;
  }
  cgnet__ws_make_key(random16, d->key);
  *out = ws;
  return 0;
fail:
  free_ws(ws);
  return rc;
}

int cgnet_ws_dial(cgnet_client *cl, cgnet_ws_server *srv, const char *url,
                  const cgnet_ws_dial_options *o, void *ctx, cgnet_conn **out) {
  if (!cl || !srv || !url) return CGNET_EINVAL;
  char *dial_addr = NULL;
  ws_conn *ws = NULL;
  int rc = new_dialed(srv, url, o, ctx, &dial_addr, &ws);
  if (rc == 0) {
    rc = cgnet_client_dial(cl, dial_addr, o ? o->timeout_ms : 0, ws, out);
    /* On success the conn owns ws (freed in on_close, even if the dial fails later). */
    if (rc != 0) free_ws(ws);
  }
  free(dial_addr);
  return rc;
}

/* ---- from any thread -------------------------------------------------------------------
 */

typedef struct ws_task {
  cgnet__task t;
  cgnet_conn *c;
  int close; /* a close, not a message */
  int code;  /* close: the code; message: the opcode */
  int has_reason;
  cgnet_write_done_fn done;
  void *ud;
  size_t len;
  uint8_t data[]; /* the message, or the NUL-terminated reason */
} ws_task;

static void finish_task(ws_task *wt, int status) {
  if (wt->done) wt->done(wt->c, status, wt->ud);
  cgnet_conn_unref(wt->c);
  free(wt);
}

static void run_task(cgnet_loop *loop, cgnet__task *t) {
  (void)loop;
  ws_task *wt = (ws_task *)t;
  int rc;
  if (cgnet__conn_closed(wt->c))
    rc = CGNET_ECLOSED;
  else if (wt->close)
    rc = cgnet_ws_close(wt->c, wt->code, wt->has_reason ? (const char *)wt->data : NULL);
  else
    rc = send_message(wt->c, (uint8_t)wt->code, wt->data, wt->len);
  finish_task(wt, rc);
}

static void drop_task(cgnet__task *t) {
  finish_task((ws_task *)t, CGNET_ECANCELED);
}

static int post_task(cgnet_conn *c, int close, int code, const void *data, size_t len,
                     cgnet_write_done_fn done, void *ud) {
  if (cgnet_conn_is_closed(c)) return CGNET_ECLOSED;
  ws_task *wt = malloc(sizeof *wt + len + 1);
  if (!wt) return CGNET_ENOMEM;
  memset(wt, 0, sizeof *wt);
  wt->t.run = run_task;
  wt->t.drop = drop_task;
  wt->c = cgnet_conn_ref(c);
  wt->close = close;
  wt->code = code;
  wt->has_reason = close && data != NULL;
  wt->done = done;
  wt->ud = ud;
  wt->len = len;
  if (len) memcpy(wt->data, data, len);
  wt->data[len] = '\0';
  cgnet__loop_post(c->loop, &wt->t);
  return 0;
}

int cgnet_ws_async_send(cgnet_conn *c, cgnet_ws_opcode op, const void *data, size_t len,
                        cgnet_write_done_fn done, void *ud) {
  if (!c || (op != CGNET_WS_TEXT && op != CGNET_WS_BINARY) || (len && !data))
    return CGNET_EINVAL;
  return post_task(c, 0, (int)op, data, len, done, ud);
}

int cgnet_ws_async_close(cgnet_conn *c, int code, const char *reason,
                         cgnet_write_done_fn done, void *ud) {
  if (!c) return CGNET_EINVAL;
  size_t len = reason ? strlen(reason) : 0;
  if (len > CGNET__WS_MAX_CLOSE_REASON) return CGNET_EINVAL;
  return post_task(c, 1, code, reason, len, done, ud);
}

/* ---- the request -----------------------------------------------------------------------
 */

static const char *view(cgnet__ws_str s, size_t *len) {
  if (len) *len = s.len;
  return s.ptr;
}

const char *cgnet_ws_request_method(const cgnet_ws_request *r, size_t *len) {
  return view(r->r.method, len);
}

const char *cgnet_ws_request_target(const cgnet_ws_request *r, size_t *len) {
  return view(r->r.target, len);
}

const char *cgnet_ws_request_path(const cgnet_ws_request *r, size_t *len) {
  return view(r->r.path, len);
}

const char *cgnet_ws_request_header(const cgnet_ws_request *r, const char *name,
                                    size_t *len) {
  return view(find_header(&r->r, name), len);
}

size_t cgnet_ws_request_header_count(const cgnet_ws_request *r) {
  return r->r.head.nfields;
}

const char *cgnet_ws_request_header_at(const cgnet_ws_request *r, size_t i,
                                       size_t *name_len, const char **value,
                                       size_t *value_len) {
  if (i >= r->r.head.nfields) return NULL;
  const cgnet__ws_field *f = &r->r.head.fields[i];
  if (value) *value = view(f->value, value_len);
  return view(f->name, name_len);
}

size_t cgnet_ws_request_protocol_count(const cgnet_ws_request *r) {
  return r->r.head.nprotocols;
}

const char *cgnet_ws_request_protocol(const cgnet_ws_request *r, size_t i, size_t *len) {
  if (i >= r->r.head.nprotocols) return NULL;
  return view(r->r.head.protocols[i], len);
}

const uint8_t *cgnet_ws_request_body(const cgnet_ws_request *r, size_t *len) {
  if (len) *len = r->body_len;
  return r->body;
}
