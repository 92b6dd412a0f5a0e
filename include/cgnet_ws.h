/*
 * cgnet WebSocket conns (RFC 6455, with permessage-deflate, RFC 7692): a handler adapter
 * that serves WebSocket on ordinary cgnet conns, so it runs on every backend and over
 * any stream conn.
 *
 * Use. Make a server object from a cgnet_ws_handler and options, let it fill a
 * cgnet_handler, and start an engine with that handler:
 *
 *     cgnet_ws_server *ws;
 *     cgnet_ws_server_new(&my_ws_handler, &ws_opts, &ws);
 *     cgnet_handler h;
 *     cgnet_ws_server_handler(ws, &h);   // h.on_boot / on_shutdown / on_tick may be set
 *     cgnet_engine_start(&h, addrs, naddrs, &opts, &eng);
 *     ...
 *     cgnet_engine_stop(eng, 1000); cgnet_engine_wait(eng); cgnet_engine_free(eng);
 *     cgnet_ws_server_free(ws);          // after the engine is freed
 *
 * Over TLS: the same handler on a "tls://" listener (the engine's options.tls holds the
 * server context, see cgnet_tls.h) serves wss://; nothing else changes.
 *
 * The filled handler's ud is the server object (cgnet_engine_userdata returns it; the
 * user's own pointer is cgnet_ws_server_userdata / cgnet_ws_userdata). Every engine
 * option applies to the conns as for raw conns: watermarks and on_writable_changed
 * (forwarded as on_ws_writable_changed), write_buffer_limit (a send past it fails with
 * CGNET_EOVERFLOW), idle/read/write timeouts, max_connections.
 *
 * A conn's life: the HTTP head is read (it may arrive in any number of pieces); a valid
 * upgrade gets 101 and on_ws_open, then messages; a bad one gets 400, 426 (wrong or
 * missing Sec-WebSocket-Version, or plain HTTP with no on_http_request) or 431 (a head
 * over 8 KiB or 64 header lines) and is closed. The WebSocket ends with on_ws_close,
 * exactly once for every conn that had on_ws_open, when the TCP conn is gone. The end
 * is the close handshake: after the last close frame this side sends its FIN and reads
 * (and drops) what the peer still sends until the peer's FIN or close_timeout_ms.
 *
 * The engine's stop (cgnet_engine_stop, or a SHUTDOWN action; for dialed conns also
 * cgnet_client_free) sends every open WebSocket a close frame with 1001 ("going away")
 * and keeps reading it, so the peer's close comes back and the close handshake ends as
 * above; what is still open when the stop's timeout (or close_timeout_ms) runs out is
 * closed then. A conn still in its HTTP handshake is closed as any conn is.
 *
 * Threads: callbacks run on the conn's loop thread; the cgnet_ws_send_* / close calls
 * are loop-thread calls on an open WebSocket conn; the async forms run from any thread
 * (holding a conn reference, see cgnet_conn_ref).
 */
#ifndef CGNET_WS_H
#define CGNET_WS_H

#include "cgnet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cgnet_ws_server cgnet_ws_server;
/* The HTTP request head of a conn (upgrade or plain), valid during the callback. */
typedef struct cgnet_ws_request cgnet_ws_request;

/* The kind of a data message. */
typedef enum cgnet_ws_opcode {
  CGNET_WS_TEXT = 1,   /* UTF-8 text, validated before delivery */
  CGNET_WS_BINARY = 2, /* bytes */
} cgnet_ws_opcode;

/* Close codes (RFC 6455 section 7.4.1). 1005 and 1006 are never sent: 1005 is a close
 * frame without a code, 1006 a WebSocket that ended without any close frame. */
enum {
  CGNET_WS_CLOSE_NORMAL = 1000,
  CGNET_WS_CLOSE_GOING_AWAY = 1001,
  CGNET_WS_CLOSE_PROTOCOL_ERROR = 1002,
  CGNET_WS_CLOSE_UNSUPPORTED = 1003,
  CGNET_WS_CLOSE_NO_STATUS = 1005,
  CGNET_WS_CLOSE_ABNORMAL = 1006,
  CGNET_WS_CLOSE_INVALID_DATA = 1007,
  CGNET_WS_CLOSE_POLICY = 1008,
  CGNET_WS_CLOSE_TOO_BIG = 1009,
  CGNET_WS_CLOSE_INTERNAL_ERROR = 1011,
};

/*
 * The WebSocket callbacks; any may be NULL. Actions: CLOSE starts the close handshake
 * with 1000 (on_ws_open, on_ws_message, on_ws_pong) or closes the conn (on_http_request);
 * SHUTDOWN stops the engine.
 */
typedef struct cgnet_ws_handler {
  void *ud; /* cgnet_ws_userdata / cgnet_ws_server_userdata */

  /* A valid upgrade request: return 0 to accept, or an HTTP status 400-599 to refuse
   * (the conn gets that response and closes). *protocol holds the subprotocol chosen
   * from options.subprotocols (the first of them the client offered, or NULL); the
   * callback may set it to NULL or to another NUL-terminated string equal to one the
   * client offered (cgnet_ws_request_protocol lists them); one the client did not offer
   * refuses the upgrade with 500. It may set the
   * conn's context (cgnet_ws_set_context). */
  int (*on_ws_handshake)(cgnet_conn *c, const cgnet_ws_request *req, const char **protocol);

  /* A plain HTTP request (no "Upgrade: websocket") with its body (Content-Length, at
   * most options.max_message bytes; larger: 413, chunked bodies: 501, then closed).
   * Write the whole response with cgnet_conn_write; the conn then waits for its next
   * request (keep-alive) unless CLOSE is returned. NULL: such requests get 426. */
  cgnet_action (*on_http_request)(cgnet_conn *c, const cgnet_ws_request *req);

  /* The 101 has been queued: the conn is a WebSocket. It may send. */
  cgnet_action (*on_ws_open)(cgnet_conn *c);

  /* One whole message: text (valid UTF-8) or binary, reassembled from its fragments and
   * inflated if compressed. `data` is valid until the callback returns (it points into
   * the conn's input when the message arrived in one piece, else into the conn's
   * message buffer). Messages arriving after the conn sent its close are dropped.
   * It may call cgnet_conn_pause_read: no further frame is then parsed, so no message
   * is delivered, until cgnet_conn_resume_read; the frames already received stay
   * buffered and come first, in order, after the resume (pings wait too). */
  cgnet_action (*on_ws_message)(cgnet_conn *c, cgnet_ws_opcode op, const uint8_t *data,
                                size_t len);

  /* A pong (the answer to cgnet_ws_send_ping, or unsolicited). Pings are answered by
   * the layer itself. */
  cgnet_action (*on_ws_pong)(cgnet_conn *c, const uint8_t *data, size_t len);

  /* The WebSocket has ended and its TCP conn is gone (for a dialed conn, also a dial
   * that never opened: 1006, see cgnet_ws_dial). `code`: the peer's close code if
   * it sent a close frame (1005 if that frame had none), else the code this side failed
   * the conn with (1002, 1007, 1009, ...), else 1001 "going away" if the engine's stop
   * sent our close and the peer never answered it, else 1006 (no close frame: the peer
   * vanished, the close timeout passed, a timeout closed the conn; a dial that failed,
   * with its error, for a TLS one the verify or handshake error and the TLS library's
   * reason: "TLS peer certificate was not verified: ..."). `reason`:
   * the matching reason, NUL-terminated (possibly ""). The context is still readable. */
  void (*on_ws_close)(cgnet_conn *c, int code, const char *reason);

  /* The engine's on_writable_changed for an open WebSocket conn (see cgnet_options). */
  void (*on_ws_writable_changed)(cgnet_conn *c, int writable);
} cgnet_ws_handler;

/* All-zero means the defaults. */
typedef struct cgnet_ws_options {
  /* Largest message delivered, after reassembly and inflation (default 1 MiB); a larger
   * one closes the conn with 1009, judged on frame headers as they arrive (so a peer
   * never makes the conn buffer more), and for a compressed message as it inflates. Also
   * bounds a plain HTTP request's body. */
  size_t max_message;
  /* Largest frame payload accepted (0: max_message); larger closes with 1009. */
  size_t max_frame;
  /* After this side sends its close frame, how long to wait for the peer's before the
   * conn is closed anyway (default 5000 ms). */
  uint64_t close_timeout_ms;
  /* A request head must arrive whole within this time of the conn opening (or of the
   * previous plain HTTP request) or the conn is closed (default 10000 ms). */
  uint64_t handshake_timeout_ms;
  /* Subprotocols this server speaks, in order of preference (copied). */
  const char *const *subprotocols;
  size_t nsubprotocols;
  /* permessage-deflate: accepted when a client offers it (default on when cgnet was
   * built with zlib; CGNET_OFF declines every offer). Messages of at least 64 bytes are
   * sent compressed on a conn that agreed to it (a streamed one always is, see
   * cgnet_ws_send_begin). */
  cgnet_toggle deflate;
} cgnet_ws_options;

/* A server object (copies handler and options). 0, CGNET_EINVAL (null arguments, a
 * max_frame above max_message, an empty subprotocol) or CGNET_ENOMEM. Any thread. */
CGNET_API int cgnet_ws_server_new(const cgnet_ws_handler *handler,
                                  const cgnet_ws_options *opts, cgnet_ws_server **out);
/* Fill `out` with the engine handler that serves WebSocket through `ws` (ud is `ws`;
 * on_boot, on_shutdown and on_tick are left NULL for the caller to set). Any thread. */
CGNET_API void cgnet_ws_server_handler(cgnet_ws_server *ws, cgnet_handler *out);
/* Free the server once no engine using it runs (after cgnet_engine_free). */
CGNET_API void cgnet_ws_server_free(cgnet_ws_server *ws);
/* The handler's ud. Any thread. */
CGNET_API void *cgnet_ws_server_userdata(const cgnet_ws_server *ws);

/* The ws handler's ud of the server serving conn `c`. Loop thread. */
CGNET_API void *cgnet_ws_userdata(const cgnet_conn *c);
/* The user's context of a conn served by a ws server (the conn's own context slot holds
 * the layer's state: use these instead of cgnet_conn_context). Loop thread. */
CGNET_API void *cgnet_ws_context(const cgnet_conn *c);
CGNET_API void cgnet_ws_set_context(cgnet_conn *c, void *ctx);
/* The agreed subprotocol, or NULL. Loop thread. */
CGNET_API const char *cgnet_ws_subprotocol(const cgnet_conn *c);
/* 1 if permessage-deflate was agreed on this conn, else 0. Loop thread. */
CGNET_API int cgnet_ws_deflate_enabled(const cgnet_conn *c);

/* ---- sending (loop thread) ----------------------------------------------------------- */

/* Queue one whole message (compressed when agreed and at least 64 bytes). Text must be
 * valid UTF-8 (CGNET_EINVAL otherwise). 0; CGNET_ECLOSED (not an open WebSocket, or
 * this side already sent its close); CGNET_EBUSY (a streamed message is open); or the
 * write's error (CGNET_EOVERFLOW past write_buffer_limit). */
CGNET_API int cgnet_ws_send_text(cgnet_conn *c, const char *data, size_t len);
CGNET_API int cgnet_ws_send_binary(cgnet_conn *c, const void *data, size_t len);
/* A ping with up to 125 bytes of payload (CGNET_EINVAL if longer). */
CGNET_API int cgnet_ws_send_ping(cgnet_conn *c, const void *data, size_t len);
/* Start the close handshake: send a close frame (code 0: none; else a code a peer may
 * send, 1000-1003, 1007-1014 or 3000-4999, with a UTF-8 reason of at most 123 bytes,
 * NULL for none; CGNET_EINVAL otherwise), stop sending, wait up to close_timeout_ms for
 * the peer's close, then close the conn. CGNET_EALREADY if a close was already sent. */
CGNET_API int cgnet_ws_close(cgnet_conn *c, int code, const char *reason);

/* A message sent in pieces: begin, any number of pieces, end. Other whole messages wait
 * (CGNET_EBUSY) until end; pings and the close may go between pieces.
 *  - Text is validated as it goes: a piece may end inside a character, but a piece
 *    with invalid UTF-8 is refused whole (CGNET_EINVAL, nothing sent, the stream stays
 *    open), and so is the end while the text stops inside a character (send the rest
 *    of it, or close the WebSocket). Nothing invalid ever reaches the wire.
 *  - Where permessage-deflate was agreed (when begin ran), the stream is one compressed
 *    message, whatever its size: each piece is compressed as it comes (with a sync
 *    flush, so it goes out now) into one frame, the first with RSV1, and end sends the
 *    final frame (RFC 7692). Otherwise each piece is one frame as given.
 *  - An empty piece sends nothing. A piece that fails with CGNET_ENOMEM, CGNET_EIO
 *    (compression) or the write's error leaves the message unfinishable: close the
 *    WebSocket.
 * 0, CGNET_EINVAL (no stream open for piece/end, a bad opcode for begin), CGNET_EBUSY
 * (begin while one is open), CGNET_ECLOSED, or the write's error. */
CGNET_API int cgnet_ws_send_begin(cgnet_conn *c, cgnet_ws_opcode op);
CGNET_API int cgnet_ws_send_piece(cgnet_conn *c, const void *data, size_t len);
CGNET_API int cgnet_ws_send_end(cgnet_conn *c);

/* ---- from any thread ------------------------------------------------------------------
 */

/* cgnet_ws_send_text/_binary from any thread: the bytes are copied now and sent on the
 * conn's loop in submission order (per thread); done(c, status, ud), if given, runs on
 * the loop with the send's result (CGNET_ECLOSED if the conn was gone, CGNET_ECANCELED if
 * the engine was freed first). Any thread holding a reference. 0, CGNET_EINVAL,
 * CGNET_ENOMEM or CGNET_ECLOSED. */
CGNET_API int cgnet_ws_async_send(cgnet_conn *c, cgnet_ws_opcode op, const void *data,
                                  size_t len, cgnet_write_done_fn done, void *ud);
/* cgnet_ws_close from any thread (reason copied); done gets its result. */
CGNET_API int cgnet_ws_async_close(cgnet_conn *c, int code, const char *reason,
                                   cgnet_write_done_fn done, void *ud);

/* ---- dialing: the client side ---------------------------------------------------------
 */

/*
 * A cgnet_ws_server also serves conns a cgnet_client dials: make the client with the
 * handler cgnet_ws_server_handler filled (cgnet_client_new, or cgnet_client_new_on to
 * dial from a server's own loops), then dial ws:// or wss:// URLs with cgnet_ws_dial. A
 * dialed conn sends an upgrade request (a fresh random key, the subprotocols offered, and
 * permessage-deflate unless options.deflate is CGNET_OFF), checks the 101 (status,
 * headers, accept value, that the subprotocol and extension were offered), then runs
 * exactly like a server's conn: on_ws_open, on_ws_message, the same sends (masked, as a
 * client's frames must be, with keys from getrandom), the close handshake, on_ws_close.
 * The options' limits and timeouts apply (handshake_timeout_ms bounds the wait for the
 * 101); on_ws_handshake and on_http_request are not used.
 *
 * A dial that fails (connect error, TLS error, timeout, a response that is not a valid 101)
 * ends with on_ws_close(c, 1006, why) without on_ws_open; cgnet_ws_context then returns the
 * dial's ctx, as it does from the start.
 */
typedef struct cgnet_ws_dial_options {
  const char *const *subprotocols; /* offered, in order of preference (copied) */
  size_t nsubprotocols;
  const char *origin;  /* an Origin header (NULL: none) */
  uint64_t timeout_ms; /* the TCP connect (0: the system's); see cgnet_client_dial */
} cgnet_ws_dial_options;

/* Dial "ws://HOST[:PORT][/PATH][?QUERY]" (port 80 by default; HOST a name, an IPv4
 * address or a bracketed IPv6 one) or "wss://..." (port 443 by default): a tls:// dial
 * over the client's TLS context (its options.tls, else cgnet's default: the system's
 * CAs), which sends HOST as SNI (unless an IP literal) and verifies the server's
 * certificate against it, then the same upgrade. A TLS failure ends the dial with
 * on_ws_close(c, 1006, reason) as any failed dial does. `o` may be NULL; `ctx` is the
 * conn's cgnet_ws_context; `out` as for cgnet_client_dial. 0, or CGNET_EBADSCHEME
 * (neither ws:// nor wss://), CGNET_EBADADDR, CGNET_EINVAL, CGNET_ENOMEM, or
 * cgnet_client_dial's error (CGNET_EUNSUPPORTED: wss:// without TLS built in). Any
 * thread. */
CGNET_API int cgnet_ws_dial(cgnet_client *cl, cgnet_ws_server *ws, const char *url,
                            const cgnet_ws_dial_options *o, void *ctx, cgnet_conn **out);

/* ---- the request (during on_ws_handshake / on_http_request) -------------------------- */

/* Views into the request: pointers with a length (*len), not NUL-terminated. */
CGNET_API const char *cgnet_ws_request_method(const cgnet_ws_request *r, size_t *len);
/* The request target, and its path (the target up to '?'). */
CGNET_API const char *cgnet_ws_request_target(const cgnet_ws_request *r, size_t *len);
CGNET_API const char *cgnet_ws_request_path(const cgnet_ws_request *r, size_t *len);
/* The first header named `name` (any case), or NULL. */
CGNET_API const char *cgnet_ws_request_header(const cgnet_ws_request *r, const char *name,
                                              size_t *len);
/* Header i (0 <= i < count): its name (returned) and value. */
CGNET_API size_t cgnet_ws_request_header_count(const cgnet_ws_request *r);
CGNET_API const char *cgnet_ws_request_header_at(const cgnet_ws_request *r, size_t i,
                                                 size_t *name_len, const char **value,
                                                 size_t *value_len);
/* The subprotocols the client offered, in its order. */
CGNET_API size_t cgnet_ws_request_protocol_count(const cgnet_ws_request *r);
CGNET_API const char *cgnet_ws_request_protocol(const cgnet_ws_request *r, size_t i,
                                                size_t *len);
/* A plain request's body (empty for an upgrade). */
CGNET_API const uint8_t *cgnet_ws_request_body(const cgnet_ws_request *r, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* CGNET_WS_H */
