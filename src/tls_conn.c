/*
 * TLS as the transport of an ordinary conn ("tls://" listeners and dials). The session
 * (src/tls.c) only ever sees bytes; this file plugs it into the conn's two paths, which
 * are the same on both backends (docs/design.md, "TLS conns"):
 *
 *   read    the read path hands received ciphertext to cgnet__tls_conn_input (from
 *           stream.c's deliver, whether read() or an io_uring receive brought it); the
 *           session decrypts into the loop's scratch buffer, and the plaintext goes on
 *           through the plain path (cgnet__conn_deliver_plain): seen in place, what the
 *           handler leaves is copied to the inbound buffer. At most the read room is
 *           decrypted at a time, so read backpressure holds; what the session still
 *           holds when reading stops is delivered when it resumes (cgnet__tls_conn_drain,
 *           before the socket is read again).
 *   write   writes go into the session as plaintext (counted in c->tls_plain, which the
 *           watermarks and write_buffer_limit add to the queue); each full record's
 *           worth (16 KiB) is encrypted as soon as it is there, and the tail by the
 *           flush before the loop sleeps: one turn's writes leave as full records, and
 *           the session never holds more than a record of plaintext. The session's sink
 *           appends the records to the conn's outbound queue, which the backend sends
 *           as usual.
 *   life    the conn is OPEN at the socket level with CGNET__CF_HANDSHAKE set until the
 *           handshake is done; then on_open runs. A failed handshake closes a server's
 *           conn without on_open nor on_close (counted, logged, on_tls_error), and fails
 *           a client's dial like a refused connect. A graceful close sends close_notify
 *           after the queued output.
 *
 * Everything here runs on the conn's loop thread, except cgnet__tls_conn_attach for a
 * dial (on the dialing thread, before the conn is handed to its loop) and
 * cgnet__tls_client_ctx (any thread).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet_tls.h"
#include "core.h"
#include "tls.h"

/* Bytes a server conn may pile up while its handshake waits for the next turn's budget:
 * far more than any client's first flight. */
#define HANDSHAKE_HOLD_MAX (64 * 1024)

/* The session's ciphertext joins the conn's outbound queue; the loop sends it. */
static int sink_to_queue(void *ud, const struct iovec *iov, int iovcnt) {
  cgnet_conn *c = ud;
  return cgnet__outbuf_appendv(&c->out, &c->loop->pool, c->ring_max, iov, iovcnt);
}

int cgnet__tls_conn_attach(cgnet_conn *c, cgnet_tls_ctx *ctx, const char *server_name) {
  int err = cgnet__tls_new(ctx, server_name, sink_to_queue, c, &c->tls);
  if (err) return err;
  cgnet__conn_set(c, CGNET__CF_TLS);
  return 0;
}

void cgnet__tls_conn_free(cgnet_conn *c) {
  cgnet__tls_free(c->tls);
  c->tls = NULL;
  c->tls_plain = 0;
}

size_t cgnet__tls_conn_held(const cgnet_conn *c) {
  return c->tls ? cgnet__tls_held(c->tls) : 0;
}

/* ---- the handshake ------------------------------------------------------------------- */

/* The handshake's deadline: the handshake timeout, or a dial's own deadline if sooner. */
static uint64_t handshake_deadline(const cgnet_conn *c) {
  uint64_t d = cgnet__deadline(c->loop->now_ms, c->o->tls_handshake_timeout_ms);
  uint64_t dial = c->client.connect_deadline_ms;
  return dial && dial < d ? dial : d;
}

void cgnet__tls_conn_begin(cgnet_conn *c) {
  cgnet_loop *loop = c->loop;
  cgnet__conn_set(c, CGNET__CF_HANDSHAKE);
  c->tls_deadline_ms = handshake_deadline(c);
  cgnet__conn_arm_timeouts(c);
  if (!loop->tls_scratch && !(loop->tls_scratch = malloc(loop->rbuf_cap))) {
    cgnet__conn_request_close(c, CGNET_ENOMEM);
    return;
  }
  if (cgnet__conn_is_client(c)) {
    int err = cgnet__tls_start(c->tls); /* the ClientHello, into the queue */
    if (err) {
      cgnet__conn_request_close(c, err);
      return;
    }
    cgnet__conn_schedule_flush(c);
  }
  cgnet__conn_update_interest(c);
  cgnet__conn_flush_own_output(c);
}

/* The handshake is done: the conn opens to the user, and what was written meanwhile
 * leaves with the next flush. */
static void handshake_done(cgnet_conn *c) {
  cgnet__conn_clear(c, CGNET__CF_HANDSHAKE);
  c->last_read_ms = c->last_write_ms = c->loop->now_ms;
  cgnet__conn_arm_timeouts(c); /* an idle timeout may come before the handshake's */
  if (c->tls_plain || cgnet__conn_has(c, CGNET__CF_SHUT_WR_PENDING))
    cgnet__conn_schedule_flush(c);
  cgnet__conn_open_for_user(c);
}

/* Server: may this conn's handshake start in this turn? Each loop starts at most
 * tls_handshakes_per_turn per turn. Why: a server's first step of a handshake (key
 * exchange and the certificate signature) costs far more CPU than serving a request,
 * and a turn runs to its end before the loop sends anything; a storm of new conns
 * arriving together would otherwise make the conns already open wait for all of those
 * signatures, and the storm's own first replies for the whole batch. With the budget a
 * turn does a bounded amount of handshake work, then flushes and serves the rest. The
 * counter is reset after each wait (loop.c); the loop's stats keep the most started in
 * one turn, so that tests can see the budget held. */
static bool handshake_may_start(cgnet_conn *c) {
  if (cgnet__conn_is_client(c) || cgnet__conn_has(c, CGNET__CF_TLS_STARTED)) return true;
  cgnet_loop *loop = c->loop;
  if (loop->tls_handshakes >= c->o->tls_handshakes_per_turn) return false;
  loop->tls_handshakes++;
  atomic_fetch_add_explicit(&loop->tls_started, 1, memory_order_relaxed);
  if ((uint64_t)loop->tls_handshakes >
      atomic_load_explicit(&loop->tls_turn_max, memory_order_relaxed))
    atomic_store_explicit(&loop->tls_turn_max, (uint64_t)loop->tls_handshakes,
                          memory_order_relaxed);
  cgnet__conn_set(c, CGNET__CF_TLS_STARTED);
  return true;
}

/* A handshake past the turn's budget: its bytes wait in the inbound buffer (which holds
 * no plaintext before on_open) for the next turn, in order. */
static void hold_for_next_turn(cgnet_conn *c, const uint8_t *data, size_t n) {
  if (cgnet__buf_len(&c->in) + n > HANDSHAKE_HOLD_MAX ||
      cgnet__buf_append(&c->in, &c->loop->pool, data, n)) {
    cgnet__conn_request_close(c, CGNET_ETLS);
    return;
  }
  cgnet__conn_schedule_read(c);
}

/* Why a handshake failed, in words. */
static const char *failure_reason(const cgnet_conn *c, int code) {
  const char *r = c->tls ? cgnet__tls_reason(c->tls) : NULL;
  if (r) return r;
  switch (code) {
  case CGNET_ETIMEDOUT:
    return "the handshake timed out";
  case CGNET_ETLSTRUNCATED:
  case CGNET_EOF:
    return "the peer closed the connection during the handshake";
  case CGNET_ETLS:
    return "the peer sent too much before the handshake could start";
  default:
    return cgnet_strerror(code);
  }
}

/* A conn closing before its handshake was done: counted, logged and told to
 * on_tls_error, unless the engine is only stopping. A server's conn was never seen by
 * the user, so it gets no on_close either (returns true). */
static bool handshake_failed(cgnet_conn *c, int reason) {
  bool server = !cgnet__conn_is_client(c);
  if (reason == CGNET_ESHUTDOWN) return server;
  cgnet_engine *eng = c->loop->eng;
  atomic_fetch_add_explicit(&eng->tls_failures, 1, memory_order_relaxed);
  c->close_reason = reason; /* cgnet_conn_tls_error reads it */
  const char *why = failure_reason(c, reason);
  cgnet__log(eng, CGNET_LOG_DEBUG, "conn %d: TLS handshake failed: %s (%s)", c->io.fd, why,
             cgnet_err_name(reason));
  const cgnet_handler *h = c->h;
  if (h->on_tls_error) {
    c->in_callback++;
    h->on_tls_error(c, reason, why);
    c->in_callback--;
  }
  return server;
}

/* ---- reading ------------------------------------------------------------------------- */

/* The peer's close_notify: the end of input, as a FIN is for a plain conn; taken once
 * the bytes before it have been delivered and while the conn reads. */
static void take_close_notify(cgnet_conn *c) {
  if (cgnet__conn_wants_read(c) && !cgnet__conn_closing(c)) cgnet__conn_peer_fin(c);
}

/*
 * Feed ciphertext (NULL: what the session holds) to the session and deliver the
 * plaintext, at most the read room at a time, while the conn reads and the session has
 * more. Handshake messages the session answers with are queued for the flush.
 */
static void decrypt_and_deliver(cgnet_conn *c, const uint8_t *in, size_t len) {
  cgnet_loop *loop = c->loop;
  for (;;) {
    size_t room = cgnet__conn_read_room(c), got = 0;
    if (room > loop->rbuf_cap) room = loop->rbuf_cap;
    size_t queued = cgnet__conn_queued(c), sent_before = cgnet__outbuf_len(&c->out);
    int err = cgnet__tls_input(c->tls, in, len, loop->tls_scratch, room, &got);
    in = NULL;
    len = 0;
    if (cgnet__outbuf_len(&c->out) != sent_before) cgnet__conn_queue_grew(c, queued);
    if (err) {
      cgnet__conn_request_close(c, err);
      return;
    }
    cgnet__tls_state st = cgnet__tls_get_state(c->tls);
    if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE)) {
      if (st == CGNET__TLS_HANDSHAKE) return; /* more of the peer's flight to come */
      handshake_done(c);
      if (cgnet__conn_closing(c)) return;
    }
    if (got) {
      cgnet__conn_deliver_plain(c, loop->tls_scratch, got);
      if (cgnet__conn_closing(c)) return;
    }
    if (st == CGNET__TLS_PEER_CLOSED) {
      take_close_notify(c);
      return;
    }
    if (!got || !cgnet__conn_wants_read(c) || !cgnet__tls_pending(c->tls)) return;
  }
}

void cgnet__tls_conn_input(cgnet_conn *c, const uint8_t *data, size_t n) {
  if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE) &&
      (cgnet__buf_len(&c->in) || !handshake_may_start(c))) {
    hold_for_next_turn(c, data, n);
    return;
  }
  decrypt_and_deliver(c, data, n);
}

/* A held handshake whose turn has come: its bytes leave the inbound buffer first (the
 * plaintext that may follow them is delivered through it). */
static void start_held_handshake(cgnet_conn *c) {
  if (!handshake_may_start(c)) {
    cgnet__conn_schedule_read(c);
    return;
  }
  cgnet__buf held = c->in;
  cgnet__buf_init(&c->in);
  decrypt_and_deliver(c, cgnet__buf_data(&held), cgnet__buf_len(&held));
  cgnet__buf_release(&held, &c->loop->pool);
}

void cgnet__tls_conn_drain(cgnet_conn *c) {
  if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE)) {
    if (cgnet__buf_len(&c->in)) start_held_handshake(c);
    return;
  }
  if (cgnet__tls_get_state(c->tls) == CGNET__TLS_PEER_CLOSED)
    take_close_notify(c); /* it came while reading was off */
  else if (cgnet__tls_pending(c->tls))
    decrypt_and_deliver(c, NULL, 0);
}

bool cgnet__tls_conn_transport_eof(cgnet_conn *c) {
  if (cgnet__tls_get_state(c->tls) == CGNET__TLS_PEER_CLOSED) return false; /* clean */
  cgnet__conn_request_close(c, cgnet__tls_eof(c->tls));
  return true;
}

/* ---- writing ------------------------------------------------------------------------- */

int cgnet__tls_conn_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt) {
  if (iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  if (total == 0) return 0;
  size_t queued = cgnet__conn_queued(c), limit = c->o->write_buffer_limit;
  if (total > limit || queued > limit - total) return CGNET_EOVERFLOW;
  int err = cgnet__tls_writev(c->tls, iov, iovcnt);
  c->tls_plain = cgnet__tls_buffered(c->tls);
  if (err) { /* part of it may be in: the stream is no longer whole */
    cgnet__conn_request_close(c, err);
    return err;
  }
  cgnet__conn_queue_grew(c, queued);
  return 0;
}

void cgnet__tls_conn_flush(cgnet_conn *c) {
  if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE)) return; /* writes wait for on_open */
  int err = cgnet__tls_flush(c->tls);
  /* shutdown_write: close_notify goes before the FIN. */
  if (!err && cgnet__conn_has(c, CGNET__CF_SHUT_WR_PENDING)) err = cgnet__tls_close(c->tls);
  c->tls_plain = cgnet__tls_buffered(c->tls);
  if (err) cgnet__conn_request_close(c, err);
}

/* ---- closing ------------------------------------------------------------------------- */

/* Closes after which our last bytes, and close_notify, still go out. */
static bool graceful(int reason) {
  return reason == CGNET_ELOCALCLOSE || reason == CGNET_ESHUTDOWN || reason == CGNET_EOF ||
         reason == CGNET_EFRAMETOOLARGE || reason == CGNET_ECODEC;
}

bool cgnet__tls_conn_closing(cgnet_conn *c, int reason) {
  if (cgnet__conn_connecting(c)) return false; /* the dial failed before TLS began */
  if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE)) return handshake_failed(c, reason);
  if (graceful(reason)) {
    (void)cgnet__tls_close(c->tls); /* the queued plaintext, then close_notify */
    c->tls_plain = 0;
  }
  return false;
}

/* ---- contexts ------------------------------------------------------------------------ */

int cgnet__tls_check_engine(cgnet_engine *eng) {
  for (size_t i = 0; i < eng->naddrs; i++) {
    if (!eng->addrs[i].tls) continue;
    if (!cgnet_tls_available()) {
      cgnet__log(eng, CGNET_LOG_ERROR,
                 "address %zu is tls:// but cgnet was built without TLS", i);
      return CGNET_EUNSUPPORTED;
    }
    if (!eng->o.tls || cgnet__tls_ctx_is_client(eng->o.tls)) {
      cgnet__log(eng, CGNET_LOG_ERROR, "address %zu is tls:// but options.tls %s", i,
                 eng->o.tls ? "is a client context" : "has no server context");
      return CGNET_EINVAL;
    }
  }
  return 0;
}

int cgnet__tls_client_ctx(cgnet_tls_ctx *given, cgnet_tls_ctx **fallback,
                          pthread_mutex_t *mu, cgnet_tls_ctx **out) {
  *out = NULL;
  if (!cgnet_tls_available()) return CGNET_EUNSUPPORTED;
  if (given) {
    if (!cgnet__tls_ctx_is_client(given)) return CGNET_EINVAL;
    *out = given;
    return 0;
  }
  int err = 0;
  pthread_mutex_lock(mu);
  if (!*fallback) {
    cgnet_tls_options o = {.role = CGNET_TLS_CLIENT}; /* system CAs, full verification */
    err = cgnet_tls_ctx_new(&o, fallback, NULL, 0);
  }
  *out = *fallback;
  pthread_mutex_unlock(mu);
  return err;
}

/* ---- public getters ------------------------------------------------------------------ */

/* The session, once the handshake is done. */
static const cgnet__tls *open_session(const cgnet_conn *c) {
  return c->tls && !cgnet__conn_has(c, CGNET__CF_HANDSHAKE) ? c->tls : NULL;
}

int cgnet_conn_is_tls(const cgnet_conn *c) {
  return c && cgnet__conn_has(c, CGNET__CF_TLS);
}

const char *cgnet_conn_tls_version(const cgnet_conn *c) {
  const cgnet__tls *t = c ? open_session(c) : NULL;
  return t ? cgnet__tls_version(t) : NULL;
}

const char *cgnet_conn_tls_cipher(const cgnet_conn *c) {
  const cgnet__tls *t = c ? open_session(c) : NULL;
  return t ? cgnet__tls_cipher(t) : NULL;
}

const uint8_t *cgnet_conn_tls_alpn(const cgnet_conn *c, size_t *len) {
  const cgnet__tls *t = c ? open_session(c) : NULL;
  size_t n = 0;
  const uint8_t *p = t ? cgnet__tls_alpn(t, &n) : NULL;
  if (len) *len = n;
  return p;
}

const char *cgnet_conn_tls_server_name(const cgnet_conn *c) {
  const cgnet__tls *t = c ? open_session(c) : NULL;
  return t ? cgnet__tls_server_name(t) : NULL;
}

int cgnet_conn_tls_resumed(const cgnet_conn *c) {
  const cgnet__tls *t = c ? open_session(c) : NULL;
  return t ? cgnet__tls_resumed(t) : 0;
}

int cgnet_conn_tls_peer_subject(const cgnet_conn *c, char *buf, size_t cap) {
  const cgnet__tls *t = c ? open_session(c) : NULL;
  if (!t) {
    if (buf && cap) buf[0] = '\0';
    return 0;
  }
  return buf ? cgnet__tls_peer_subject(t, buf, cap) : 0;
}

const char *cgnet_conn_tls_error(const cgnet_conn *c) {
  if (!c || !c->tls) return NULL;
  const char *r = cgnet__tls_reason(c->tls);
  if (r) return r;
  if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE) && c->close_reason)
    return failure_reason(c, c->close_reason);
  return NULL;
}
