/*
 * The stream read and write paths of a conn, and the public calls that read, write and
 * pause it. Everything here runs on the loop thread that owns the conn. The per-message
 * path (backend result -> read -> callback -> write -> send) is all in this file, so the
 * compiler inlines it as one piece; conn.c holds the rest of a conn's life.
 *
 * Read path. read() into the loop's shared read buffer, again while reads fill it (level
 * mode) or until EAGAIN (edge mode), within the chunk budget; each read takes no more than
 * the room below the high watermark (read_room). When the conn holds no leftover bytes, the
 * user sees the bytes in place in the loop buffer; only what the user leaves unconsumed
 * is copied into the conn's own inbound buffer, which is released once it empties.
 *
 * Codecs. With a codec and on_frame, deliver_frames() decodes frames straight out of the
 * same view (the loop's read buffer when nothing is pending), calls on_frame for each,
 * and leaves only the unfinished frame's bytes to be copied into the inbound buffer; a
 * frame spread over many reads is assembled there with no other copy.
 *
 * Write path. Writes are appended to the conn's outbound queue and the conn joins the
 * loop's pending_out list. Output the conn's own callbacks queued leaves in one
 * send/sendmsg as soon as they return (flush_own_output); output queued from elsewhere
 * (timers, tasks, other conns' callbacks) leaves just before the loop sleeps (redis'
 * "write before sleep"). Either way replies to many requests in one wake-up cost one
 * syscall. A large write with nothing queued goes straight to the socket to save the
 * copy. What the socket does not take stays queued and EPOLLOUT is armed until it
 * drains. write_buffer_limit bounds what stays queued (write_oversized).
 *
 * A connected datagram conn (udp.c) shares the view, the callbacks and the backend
 * registration, and reads and sends through udp.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

/* A write at least this large, with nothing queued before it, skips the queue. */
#define DIRECT_WRITE_MIN (16 * 1024)

/* ---- the inbound view ---------------------------------------------------------------- */

static void view_from_inbound(cgnet_conn *c) {
  c->view = cgnet__buf_data(&c->in);
  c->view_len = cgnet__buf_len(&c->in);
  c->view_pos = 0;
  c->view_is_rbuf = false;
  c->view_set = true;
}

/* The bytes the user may read now. Outside a callback (a tick or task on the loop), the
 * view is settled in the conn's next flush, so pointers stay valid until then. */
static void ensure_view(cgnet_conn *c) {
  if (c->view_set) return;
  view_from_inbound(c);
  if (c->in_callback == 0) cgnet__conn_schedule_flush(c);
}

/* Fold what the user consumed back into the inbound buffer: drop consumed bytes, and
 * copy unconsumed bytes out of the loop's read buffer (which the next read reuses). */
static void settle_view(cgnet_conn *c) {
  if (!c->view_set) return;
  size_t left = c->view_len - c->view_pos;
  c->view_set = false;
  if (c->view_is_rbuf) {
    /* Unconsumed bytes wait for the next callback; a datagram's unread rest is dropped. */
    if (left && c->kind != CGNET__CONNECTED_DGRAM &&
        cgnet__buf_append(&c->in, &c->loop->pool, c->view + c->view_pos, left))
      cgnet__conn_request_close(c, CGNET_ENOMEM);
  } else if (c->view_pos) {
    cgnet__buf_consume(&c->in, &c->loop->pool, c->view_pos);
  }
  c->view = NULL;
  c->view_len = c->view_pos = 0;
}

/* ---- callbacks ----------------------------------------------------------------------- */

static void apply_action(cgnet_conn *c, cgnet_action a) {
  if (a == CGNET_SHUTDOWN)
    cgnet__engine_request_stop(c->loop->eng, CGNET__ACTION_STOP_TIMEOUT_MS, 0);
  else if (a == CGNET_CLOSE)
    cgnet__conn_request_close(c, CGNET_ELOCALCLOSE);
}

/* Common tail of every conn callback: settle the view and carry out closes the callback
 * asked for, once the outermost callback of this conn has returned. */
void cgnet__conn_after_callback(cgnet_conn *c, cgnet_action a) {
  c->in_callback--;
  apply_action(c, a);
  if (c->in_callback > 0 || cgnet__conn_closed(c)) return;
  settle_view(c);
  if (c->close_reason) cgnet__conn_close_now(c, c->close_reason);
}

static void call_on_traffic(cgnet_conn *c) {
  const cgnet_handler *h = c->h;
  if (!h->on_traffic) {
    c->view_pos = c->view_len; /* nobody wants the bytes */
    settle_view(c);
    return;
  }
  c->in_callback++;
  cgnet__conn_after_callback(c, h->on_traffic(c));
}

/* With a codec and an on_frame callback the conn delivers frames, else raw bytes. */
static bool framed(const cgnet_conn *c) {
  return c->codec && c->h->on_frame;
}

/* Reading stopped while frames may still sit in the view: leave them for later. */
static bool frames_held(const cgnet_conn *c) {
  return cgnet__conn_has(c, CGNET__CF_PAUSED | CGNET__CF_DRAINING) ||
         cgnet__conn_backpressured(c);
}

/*
 * Decode the view's frames and call on_frame for each, until the decoder needs more
 * bytes, fails (the conn closes with its error), an action, a close or a pause. One
 * in_callback span covers the whole batch, so replies to every frame leave in one send
 * and the view is settled once: the unconsumed tail is the only copy.
 *
 * Kept out of line: inlined into its one caller, dispatch, it made dispatch too big to be
 * inlined into the read path (4 instructions per echoed message without a codec).
 */
static __attribute__((noinline)) void deliver_frames(cgnet_conn *c) {
  const cgnet_handler *h = c->h;
  cgnet_action a = CGNET_NONE;
  cgnet__conn_clear(c, CGNET__CF_REDELIVER);
  c->in_callback++;
  while (a == CGNET_NONE && !cgnet__conn_closing(c) && c->view_pos < c->view_len) {
    if (!framed(c) || frames_held(c)) { /* codec removed, or paused: later */
      cgnet__conn_set(c, CGNET__CF_REDELIVER);
      break;
    }
    cgnet_frame f = {.hint = c->codec_hint};
    int rc =
        cgnet_codec_decode(c->codec, c->view + c->view_pos, c->view_len - c->view_pos, &f);
    if (rc < 0) cgnet__conn_request_close(c, rc);
    if (rc <= 0) {
      c->codec_hint = f.hint;
      break;
    }
    c->codec_hint = 0;
    c->view_pos += f.consumed;
    a = h->on_frame(c, f.data, f.len);
  }
  cgnet__conn_after_callback(c, a);
}

/* Frames held back by a pause can go now, even after the peer's FIN (read_closed): they
 * arrived before it. */
static bool can_redeliver(const cgnet_conn *c) {
  return cgnet__conn_has(c, CGNET__CF_REDELIVER) && !frames_held(c);
}

/* Hand the view to the user: as frames or as raw bytes. */
static void dispatch(cgnet_conn *c) {
  if (cgnet__unlikely(c->codec != NULL) && framed(c))
    deliver_frames(c);
  else
    call_on_traffic(c);
}

static void call_on_pre_write(cgnet_conn *c) {
  const cgnet_handler *h = c->h;
  if (!h->on_pre_write) return;
  c->in_callback++;
  h->on_pre_write(c);
  cgnet__conn_after_callback(c, CGNET_NONE);
}

/* ---- writing ------------------------------------------------------------------------- */

/* Level mode: watch for reading exactly while cgnet__conn_wants_read(), and for writing
 * exactly while output is queued. Edge mode registers both once and never changes:
 * reading is gated by cgnet__conn_wants_read() and restarted through pending_read. */
static bool completion_io(const cgnet_conn *c) {
  return cgnet__conn_has(c, CGNET__CF_COMPLETION);
}

static __attribute__((noinline)) void watch_interest(cgnet_conn *c, uint32_t want) {
  int err = cgnet__backend_watch(&c->loop->backend, &c->io, want);
  if (err) {
    cgnet__conn_request_close(c, err);
    return;
  }
  c->interest = want;
}

/*
 * Level-triggered epoll: interest changes are made in the flush before the loop sleeps
 * (loop->final_flush), so that a change undone within the turn (reading paused and
 * resumed, a write that blocks and then drains) costs no epoll_ctl. Readiness reported
 * in the meantime is handled as before: reading checks that it is wanted. A completion
 * conn's receive is managed in completion.c at once (its requests cost no syscall: they
 * go with the next wait); an edge-triggered conn's interest never changes.
 */
static void update_interest(cgnet_conn *c) {
  if (cgnet__unlikely(cgnet__conn_has(c, CGNET__CF_EDGE | CGNET__CF_COMPLETION))) {
    if (completion_io(c)) cgnet__conn_update_receive(c);
    return;
  }
  if (c->state != CGNET__CONN_OPEN) return;
  uint32_t want = cgnet__conn_wants_read(c) ? CGNET__POLL_READ : 0;
  if (cgnet__outbuf_len(&c->out)) want |= CGNET__POLL_WRITE;
  if (want == c->interest) return;
  if (c->loop->final_flush)
    watch_interest(c, want);
  else
    cgnet__conn_schedule_flush(c);
}

static void notify_writable(cgnet_conn *c, int writable) {
  const cgnet_handler *h = c->h;
  if (!h->on_writable_changed) return;
  c->in_callback++;
  h->on_writable_changed(c, writable);
  cgnet__conn_after_callback(c, CGNET_NONE);
}

/* Queued output grew: at the high watermark, tell the user and (read_backpressure)
 * stop reading. */
static void after_queue_grew(cgnet_conn *c, size_t before) {
  if (before == 0) {
    c->last_write_ms = c->loop->now_ms; /* the write timeout counts from here */
    if (c->write_to_ms) cgnet__conn_arm_timeouts(c);
  }
  if (!cgnet__conn_has(c, CGNET__CF_OVER_HIGH) &&
      cgnet__conn_queued(c) >= c->o->write_high_watermark) {
    cgnet__conn_set(c, CGNET__CF_OVER_HIGH);
    update_interest(c);
    notify_writable(c, 0);
  }
  cgnet__conn_schedule_flush(c);
}

/* Queued output shrank: at or below the low watermark, read again. */
static void after_queue_shrank(cgnet_conn *c) {
  if (!cgnet__conn_has(c, CGNET__CF_OVER_HIGH) ||
      cgnet__conn_queued(c) > c->o->write_low_watermark)
    return;
  cgnet__conn_clear(c, CGNET__CF_OVER_HIGH);
  update_interest(c);
  if (cgnet__conn_wants_read(c) || can_redeliver(c))
    cgnet__conn_schedule_read(c); /* bytes may wait */
  notify_writable(c, 1);
}

/* Send queued output until it is gone or the socket is full. 0, or the socket error. */
static int write_out_now(cgnet_conn *c) {
  struct iovec iov[CGNET__MAX_IOV];
  while (cgnet__outbuf_len(&c->out)) {
    int cnt = cgnet__outbuf_gather(&c->out, iov, CGNET__MAX_IOV);
    size_t want = 0;
    for (int i = 0; i < cnt; i++)
      want += iov[i].iov_len;
    ssize_t n = cgnet__sys_send(c->io.fd, iov, cnt);
    if (n < 0) return n == -EAGAIN ? 0 : (int)n;
    c->last_write_ms = c->loop->now_ms;
    cgnet__outbuf_consume(&c->out, &c->loop->pool, (size_t)n);
    if ((size_t)n < want) return 0; /* the socket is full */
  }
  return 0;
}

static int write_out(cgnet_conn *c) {
  if (cgnet__unlikely(completion_io(c))) return cgnet__conn_submit_send(c);
  return write_out_now(c);
}

/* The half-close asked for by cgnet_conn_shutdown_write, once output has drained. */
static void finish_shutdown_write(cgnet_conn *c) {
  if (!cgnet__conn_has(c, CGNET__CF_SHUT_WR_PENDING) ||
      cgnet__conn_has(c, CGNET__CF_SHUT_WR_DONE | CGNET__CF_HANDSHAKE) ||
      cgnet__outbuf_len(&c->out))
    return; /* (a TLS conn's close_notify and FIN wait for its handshake) */
  cgnet__conn_set(c, CGNET__CF_SHUT_WR_DONE);
  int err = cgnet__sys_shutdown_write(c->io.fd);
  if (err) {
    cgnet__conn_request_close(c, err);
    return;
  }
  if (cgnet__conn_has(c, CGNET__CF_READ_CLOSED)) cgnet__conn_request_close(c, CGNET_EOF);
}

/* Write what is queued, then apply what follows from it: backpressure release, half
 * close, the end of a drain, the backend registration. */
static void send_queued(cgnet_conn *c) {
  if (cgnet__outbuf_len(&c->out)) {
    call_on_pre_write(c);
    if (cgnet__conn_closed(c)) return;
    int err = write_out(c);
    if (err) {
      cgnet__conn_request_close(c, err);
      return;
    }
  }
  /* Also with nothing left: a completion backend's send may just have emptied it. */
  after_queue_shrank(c);
  if (cgnet__conn_closed(c)) return;
  finish_shutdown_write(c);
  if (cgnet__conn_closing(c)) return;
  if (cgnet__conn_has(c, CGNET__CF_DRAINING) && cgnet__outbuf_len(&c->out) == 0) {
    cgnet__conn_close_now(c, CGNET_ESHUTDOWN);
    return;
  }
  update_interest(c);
}

void cgnet__conn_flush_pending(cgnet_conn *c) {
  if (cgnet__list_linked(&c->out_node)) cgnet__list_remove(&c->out_node);
  if (cgnet__conn_closed(c)) return;
  /* Output waits for the connect; open_connected flushes it. */
  if (cgnet__conn_connecting(c)) return;
  if (c->view_set && c->in_callback == 0) settle_view(c); /* touched outside a callback */
  if (cgnet__unlikely(c->tls != NULL)) { /* this turn's plaintext, as full records */
    cgnet__tls_conn_flush(c);
    if (cgnet__conn_closed(c)) return;
  }
  send_queued(c);
}

/* Readiness reported while reading is off: an error or a hang-up ends the conn. */
static void on_error_while_not_reading(cgnet_conn *c) {
  int err = cgnet__sys_socket_error(c->io.fd);
  if (err)
    cgnet__conn_request_close(c, err);
  else if (cgnet__conn_has(c, CGNET__CF_READ_CLOSED))
    cgnet__conn_request_close(c, CGNET_EOF);
  else if (cgnet__conn_has(c, CGNET__CF_DRAINING))
    cgnet__conn_request_close(c, CGNET_ESHUTDOWN);
  else if (cgnet__conn_has(c, CGNET__CF_SHUT_WR_DONE))
    /* A hang-up after our FIN: both ways are shut, and level mode would report it on
     * every turn. */
    cgnet__conn_request_close(c, CGNET_EOF);
  /* else paused: an error shows when reading resumes */
}

/*
 * Replies a conn's own callbacks queued during this wake-up leave right away, in one
 * syscall, instead of waiting for the end of the batch: the ring they sit in goes back
 * to the loop's pool at once (so one chunk serves every conn of the batch, no malloc),
 * and the first conn's reply is not delayed by the others' callbacks. Output queued
 * from elsewhere (timers, tasks, other conns) still goes out before the loop sleeps.
 */
static void flush_own_output(cgnet_conn *c) {
  if (cgnet__conn_closed(c) || c->in_callback || !cgnet__list_linked(&c->out_node)) return;
  cgnet__conn_flush_pending(c);
}

/* For conn.c: the same calls, out of line (here they stay inlinable). */
void cgnet__conn_update_interest(cgnet_conn *c) {
  update_interest(c);
}
void cgnet__conn_flush_own_output(cgnet_conn *c) {
  flush_own_output(c);
}
int cgnet__conn_write_out_now(cgnet_conn *c) {
  return write_out_now(c);
}
void cgnet__conn_settle_view(cgnet_conn *c) {
  settle_view(c);
}

/* ---- reading ------------------------------------------------------------------------- */

/* Hand n bytes of the user's to the user. */
static void deliver_plain(cgnet_conn *c, const uint8_t *data, size_t n) {
  if (cgnet__buf_len(&c->in) == 0) {
    c->view = data;
    c->view_len = n;
    c->view_pos = 0;
    c->view_is_rbuf = true;
    c->view_set = true;
  } else {
    if (cgnet__buf_append(&c->in, &c->loop->pool, data, n)) {
      cgnet__conn_request_close(c, CGNET_ENOMEM);
      return;
    }
    view_from_inbound(c);
  }
  dispatch(c);
}

/* Hand n freshly read bytes to the user; a TLS conn's are ciphertext, which its session
 * turns into plaintext that comes back through deliver_plain. */
static void deliver(cgnet_conn *c, const uint8_t *data, size_t n) {
  if (cgnet__unlikely(c->tls != NULL)) {
    cgnet__tls_conn_input(c, data, n);
    return;
  }
  deliver_plain(c, data, n);
}

void cgnet__conn_deliver(cgnet_conn *c, const uint8_t *data, size_t n) {
  deliver(c, data, n);
}
void cgnet__conn_deliver_plain(cgnet_conn *c, const uint8_t *data, size_t n) {
  deliver_plain(c, data, n);
}
void cgnet__conn_queue_grew(cgnet_conn *c, size_t before) {
  after_queue_grew(c, before);
}
static void on_peer_fin(cgnet_conn *c);
static size_t read_room(const cgnet_conn *c);
void cgnet__conn_peer_fin(cgnet_conn *c) {
  on_peer_fin(c);
}
size_t cgnet__conn_read_room(const cgnet_conn *c) {
  return read_room(c);
}

/* The peer's FIN: close, or with allow_half_open stop reading and tell the user. */
static void on_peer_fin(cgnet_conn *c) {
  if (c->tls && cgnet__tls_conn_transport_eof(c)) return;
  if (!c->o->allow_half_open) {
    cgnet__conn_request_close(c, CGNET_EOF);
    return;
  }
  cgnet__conn_set(c, CGNET__CF_READ_CLOSED);
  if (cgnet__conn_has(c, CGNET__CF_SHUT_WR_DONE)) { /* both halves are closed now */
    cgnet__conn_request_close(c, CGNET_EOF);
    return;
  }
  update_interest(c);
  const cgnet_handler *h = c->h;
  if (h->on_read_closed) {
    c->in_callback++;
    cgnet__conn_after_callback(c, h->on_read_closed(c));
  }
}

/*
 * How much one read may take. With read backpressure, no more than the room left below
 * the high watermark: a handler that answers what it reads then queues at most the
 * watermark, not the watermark plus a whole read buffer, so a peer that sends and never
 * reads costs about write_high_watermark of output per conn, however fast it sends.
 * Reading stops at the watermark (over_high), so the room is never 0 here; 1 guards the
 * read from meaning EOF if it were.
 */
static size_t read_room(const cgnet_conn *c) {
  size_t queued = cgnet__conn_queued(c);
  if (cgnet__likely(queued == 0) || !cgnet__conn_has(c, CGNET__CF_READ_BACKPRESSURE))
    return c->read_max;
  size_t high = c->o->write_high_watermark;
  size_t room = queued < high ? high - queued : 1;
  return room < c->read_max ? room : c->read_max;
}

/* One read; returns the byte count, 0 when nothing more is to be read now, or -1 when
 * reading is over for now (closed, FIN, or paused by the callback). */
static ssize_t read_once(cgnet_conn *c) {
  cgnet_loop *loop = c->loop;
  ssize_t n = cgnet__sys_recv(c->io.fd, loop->rbuf, read_room(c));
  if (n > 0) {
    c->last_read_ms = loop->now_ms;
    deliver(c, loop->rbuf, (size_t)n);
    return (cgnet__conn_closing(c) || !cgnet__conn_wants_read(c)) ? -1 : n;
  }
  if (n == 0) {
    on_peer_fin(c);
    return -1;
  }
  if (n == -EAGAIN) return 0;
  cgnet__conn_request_close(c, (int)n);
  return -1;
}

void cgnet__conn_schedule_read(cgnet_conn *c) {
  if (!cgnet__list_linked(&c->read_node))
    cgnet__list_insert_tail(&c->loop->pending_read, &c->read_node);
}

/* Edge mode must drain the socket, but a budget keeps one busy peer from starving the
 * others: past it, the conn waits in pending_read for the loop's next turn. */
static void read_edge(cgnet_conn *c) {
  size_t budget = c->o->read_chunk_limit, total = 0;
  for (;;) {
    ssize_t n = read_once(c);
    if (n <= 0) return;
    total += (size_t)n;
    if (total >= budget) {
      cgnet__conn_schedule_read(c);
      return;
    }
  }
}

/* Level mode: keep reading while reads fill the whole buffer (more is waiting), up to the
 * same budget; a short read means the socket is drained for now, and anything left past
 * the budget is reported again by the next epoll_wait. Draining a busy socket in one
 * wake-up instead of one read per wake-up is what keeps a streaming peer cheap: in the
 * open-loop echo bench it cut server CPU per message by 2.7x and p50 latency from
 * 290 ms to 10 ms. */
static void read_level(cgnet_conn *c) {
  size_t budget = c->o->read_chunk_limit, total = 0, cap = c->loop->rbuf_cap;
  for (;;) {
    ssize_t n = read_once(c);
    if (n <= 0) return;
    total += (size_t)n;
    if ((size_t)n < cap || total >= budget) return;
  }
}

/* Bytes left buffered by an earlier pause or codec change go to the user first. */
static void redeliver(cgnet_conn *c) {
  if (c->view_set) settle_view(c); /* touched by a task earlier in this turn */
  cgnet__conn_clear(c, CGNET__CF_REDELIVER);
  if (cgnet__buf_len(&c->in) == 0) return;
  view_from_inbound(c);
  dispatch(c);
}

/* Read what the socket has, within the conn's budget. */
static void read_socket(cgnet_conn *c) {
  if (cgnet__unlikely(completion_io(c)))
    cgnet__conn_continue_receive(c);
  else if (cgnet__unlikely(c->kind == CGNET__CONNECTED_DGRAM))
    cgnet__dgram_conn_read(c);
  else if (cgnet__conn_has(c, CGNET__CF_EDGE))
    read_edge(c);
  else
    read_level(c);
}

void cgnet__conn_continue_read(cgnet_conn *c) {
  cgnet__list_remove(&c->read_node);
  if (cgnet__conn_closed(c) || !(cgnet__conn_wants_read(c) || can_redeliver(c))) return;
  if (cgnet__conn_has(c, CGNET__CF_REDELIVER)) {
    redeliver(c);
    if (cgnet__conn_closed(c) || cgnet__conn_has(c, CGNET__CF_REDELIVER) ||
        !cgnet__conn_wants_read(c)) {
      flush_own_output(c);
      return;
    }
  }
  if (c->tls) { /* what the session holds came before what the socket has */
    cgnet__tls_conn_drain(c);
    if (cgnet__conn_closing(c) || !cgnet__conn_wants_read(c) ||
        cgnet__list_linked(&c->read_node)) {
      flush_own_output(c);
      return;
    }
  }
  read_socket(c);
  flush_own_output(c);
}

void cgnet__conn_on_ready(cgnet_conn *c, uint32_t flags) {
  if (cgnet__conn_connecting(c)) {
    if (flags & (CGNET__READY_WRITE | CGNET__READY_ERROR)) cgnet__conn_finish_connect(c);
    return;
  }
  if (flags & (CGNET__READY_READ | CGNET__READY_ERROR)) {
    if (cgnet__conn_wants_read(c))
      read_socket(c);
    else if (flags & CGNET__READY_ERROR) {
      on_error_while_not_reading(c);
    }
  }
  if (!cgnet__conn_closed(c) && (flags & CGNET__READY_WRITE) &&
      cgnet__outbuf_len(&c->out)) {
    if (cgnet__list_linked(&c->out_node)) cgnet__list_remove(&c->out_node);
    send_queued(c);
  }
  flush_own_output(c);
}

void cgnet__conn_wake_now(cgnet_conn *c) {
  if (cgnet__conn_closed(c)) return;
  if (cgnet__conn_connecting(c) || cgnet__conn_has(c, CGNET__CF_HANDSHAKE)) {
    /* on_traffic only after on_open */
    cgnet__conn_set(c, CGNET__CF_WAKE_ON_OPEN);
    return;
  }
  if (c->view_set) settle_view(c); /* touched by a task earlier in this turn */
  view_from_inbound(c);
  dispatch(c);
  flush_own_output(c);
}

/* ---- public API: reading ------------------------------------------------------------- */

size_t cgnet_conn_inbound_buffered(const cgnet_conn *c) {
  if (c->view_set) return c->view_len - c->view_pos;
  return cgnet__buf_len(&c->in);
}

size_t cgnet_conn_peek(cgnet_conn *c, size_t n, const uint8_t **data) {
  ensure_view(c);
  size_t avail = c->view_len - c->view_pos;
  if (n == 0 || n > avail) n = avail;
  if (data) *data = n ? c->view + c->view_pos : NULL;
  return n;
}

size_t cgnet_conn_next(cgnet_conn *c, size_t n, const uint8_t **data) {
  n = cgnet_conn_peek(c, n, data);
  c->view_pos += n;
  if (n) c->codec_hint = 0; /* the decoder's memo was about the old front */
  return n;
}

size_t cgnet_conn_discard(cgnet_conn *c, size_t n) {
  if (n == 0) return 0;
  return cgnet_conn_next(c, n, NULL);
}

size_t cgnet_conn_read(cgnet_conn *c, void *buf, size_t cap) {
  if (cap == 0) return 0;
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, cap, &p);
  if (n) memcpy(buf, p, n);
  return n;
}

/* ---- public API: writing ------------------------------------------------------------- */

static int writable_or_error(const cgnet_conn *c) {
  if (cgnet__conn_closing(c)) return CGNET_ECLOSED;
  if (cgnet__conn_has(c, CGNET__CF_SHUT_WR_PENDING)) return CGNET_EPIPE;
  return 0;
}

/* Can `len` more bytes be queued without passing the hard cap? */
static int check_limit(const cgnet_conn *c, size_t len) {
  size_t queued = cgnet__conn_queued(c), limit = c->o->write_buffer_limit;
  return (len > limit || queued > limit - len) ? CGNET_EOVERFLOW : 0;
}

/* With nothing queued, try the socket first; returns how many bytes it took, or a
 * negative error (the conn is then closing). */
static ssize_t write_direct(cgnet_conn *c, const struct iovec *iov, int iovcnt) {
  call_on_pre_write(c);
  if (writable_or_error(c)) return CGNET_ECLOSED;
  /* on_pre_write queued bytes of its own: they go first, so this write queues behind. */
  if (cgnet__outbuf_len(&c->out)) return 0;
  ssize_t n = cgnet__sys_send(c->io.fd, iov, iovcnt);
  if (n > 0) c->last_write_ms = c->loop->now_ms;
  if (n >= 0) return n;
  if (n == -EAGAIN) return 0;
  cgnet__conn_request_close(c, (int)n);
  return n;
}

/* Queue the bytes of iov[0, cnt) that come after the first `skip`. */
static int append_iov_from(cgnet_conn *c, const struct iovec *iov, int cnt, size_t skip) {
  int i = 0;
  while (i < cnt && skip >= iov[i].iov_len)
    skip -= iov[i++].iov_len;
  if (i < cnt && skip) {
    int err = cgnet__outbuf_append(&c->out, &c->loop->pool, c->ring_max,
                                   (const uint8_t *)iov[i].iov_base + skip,
                                   iov[i].iov_len - skip);
    if (err) return err;
    i++;
  }
  return i < cnt
             ? cgnet__outbuf_appendv(&c->out, &c->loop->pool, c->ring_max, iov + i, cnt - i)
             : 0;
}

/*
 * A write that would take queued output past write_buffer_limit. The limit bounds what
 * stays queued, not what one call may carry: with nothing queued, the socket takes what
 * it can now and the rest is queued if that fits. If it does not fit, a write the socket
 * took none of fails with CGNET_EOVERFLOW and changes nothing; one it took part of has
 * left the peer a partial message, so the conn closes with CGNET_EOVERFLOW.
 */
static int write_oversized(cgnet_conn *c, const struct iovec *iov, int cnt, size_t total) {
  if (cgnet__outbuf_len(&c->out) || cgnet__conn_connecting(c) ||
      c->kind == CGNET__CONNECTED_DGRAM)
    return CGNET_EOVERFLOW;
  ssize_t n = write_direct(c, iov, cnt < CGNET__MAX_IOV ? cnt : CGNET__MAX_IOV);
  if (n < 0) return (int)n;
  size_t rest = total - (size_t)n;
  if (rest == 0) return 0;
  int err = check_limit(c, rest);
  if (!err) err = append_iov_from(c, iov, cnt, (size_t)n);
  if (err) {
    if (n == 0 && err == CGNET_EOVERFLOW) return err; /* nothing sent, nothing queued */
    cgnet__log(c->loop->eng, CGNET_LOG_DEBUG,
               "conn %d: %zu of a %zu-byte write sent, the rest over write_buffer_limit: "
               "closing",
               c->io.fd, (size_t)n, total);
    cgnet__conn_request_close(c, err);
    return err;
  }
  after_queue_grew(c, 0);
  return 0;
}

/* Queue len bytes behind the `before` bytes that were queued when the write began. */
static int queue_bytes(cgnet_conn *c, const void *data, size_t len, size_t before) {
  int err = cgnet__outbuf_append(&c->out, &c->loop->pool, c->ring_max, data, len);
  if (err) return err;
  after_queue_grew(c, before);
  return 0;
}

/* A write of DIRECT_WRITE_MIN bytes or more (within the limit): with nothing queued, the
 * socket takes what it can first, which saves copying it; the rest is queued. */
static int write_large(cgnet_conn *c, const void *data, size_t len) {
  size_t before = cgnet__outbuf_len(&c->out);
  if (before == 0 && !cgnet__conn_connecting(c)) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    ssize_t n = write_direct(c, &iov, 1);
    if (n < 0) return (int)n;
    data = (const uint8_t *)data + n;
    len -= (size_t)n;
    if (len == 0) return 0;
  }
  return queue_bytes(c, data, len, before);
}

int cgnet_conn_write(cgnet_conn *c, const void *data, size_t len) {
  CGNET__LOOP_ONLY(c);
  if (cgnet__unlikely(cgnet__conn_is_dgram(c)))
    return cgnet__dgram_conn_write(c, data, len);
  int err = writable_or_error(c);
  if (err || len == 0) return err;
  if (cgnet__unlikely(c->tls != NULL)) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return cgnet__tls_conn_writev(c, &iov, 1);
  }
  if (cgnet__unlikely(check_limit(c, len) != 0)) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return write_oversized(c, &iov, 1, len);
  }
  if (cgnet__unlikely(len >= DIRECT_WRITE_MIN)) return write_large(c, data, len);
  return queue_bytes(c, data, len, cgnet__outbuf_len(&c->out));
}

int cgnet_conn_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt) {
  CGNET__LOOP_ONLY(c);
  if (cgnet__unlikely(c->kind == CGNET__SESSION_DGRAM))
    return cgnet__session_writev(c, iov, iovcnt); /* one datagram */
  CGNET__STREAM_ONLY(c);
  int err = writable_or_error(c);
  if (err) return err;
  if (iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  if (c->kind == CGNET__CONNECTED_DGRAM)
    return cgnet__dgram_conn_send(c, iov, iovcnt); /* one datagram */
  if (c->tls) return cgnet__tls_conn_writev(c, iov, iovcnt);
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  if (total == 0) return 0;
  if (check_limit(c, total)) return write_oversized(c, iov, iovcnt, total);
  size_t before = cgnet__outbuf_len(&c->out);
  err = cgnet__outbuf_appendv(&c->out, &c->loop->pool, c->ring_max, iov, iovcnt);
  if (err) return err;
  after_queue_grew(c, before);
  return 0;
}

int cgnet_conn_flush(cgnet_conn *c) {
  CGNET__LOOP_ONLY(c);
  if (c->kind == CGNET__SERVER_DGRAM) return cgnet__dgram_conn_flush(c);
  if (c->kind == CGNET__SESSION_DGRAM) return cgnet__session_flush(c);
  int err = writable_or_error(c);
  if (err) return err;
  if (c->tls && !cgnet__conn_connecting(c)) {
    cgnet__tls_conn_flush(c);
    if ((err = writable_or_error(c))) return err;
  }
  if (cgnet__outbuf_len(&c->out) == 0 || cgnet__conn_connecting(c) ||
      c->kind == CGNET__CONNECTED_DGRAM)
    return 0;
  call_on_pre_write(c);
  if ((err = writable_or_error(c))) return err;
  /* Now, in this call, on either backend; with a send in flight on a completion
   * backend, the rest follows its completion. */
  err = c->out.pinned ? 0 : write_out_now(c);
  if (err) {
    cgnet__conn_request_close(c, err);
    return err;
  }
  after_queue_shrank(c);
  if (cgnet__outbuf_len(&c->out))
    cgnet__conn_schedule_flush(
        c); /* the rest goes out (or EPOLLOUT gets armed) before sleep */
  else
    update_interest(c);
  return 0;
}

size_t cgnet_conn_outbound_buffered(const cgnet_conn *c) {
  return cgnet__conn_queued(c);
}

int cgnet_conn_writable(const cgnet_conn *c) {
  return !cgnet__conn_closed(c) && !cgnet__conn_has(c, CGNET__CF_OVER_HIGH);
}

int cgnet_conn_shutdown_write(cgnet_conn *c) {
  CGNET__LOOP_ONLY(c);
  CGNET__STREAM_ONLY(c);
  if (c->kind == CGNET__CONNECTED_DGRAM) return CGNET_EUNSUPPORTED;
  if (cgnet__conn_closing(c)) return CGNET_ECLOSED;
  if (cgnet__conn_has(c, CGNET__CF_SHUT_WR_PENDING)) return 0;
  cgnet__conn_set(c, CGNET__CF_SHUT_WR_PENDING);
  cgnet__conn_schedule_flush(c); /* FIN goes out after the queue, before the loop sleeps */
  return 0;
}

/* ---- public API: flow control ---------------------------------------------------------
 */

static void reading_changed(cgnet_conn *c) {
  update_interest(c);
  if (cgnet__conn_wants_read(c) || can_redeliver(c)) cgnet__conn_schedule_read(c);
}

int cgnet_conn_pause_read(cgnet_conn *c) {
  CGNET__LOOP_ONLY(c);
  CGNET__STREAM_ONLY(c);
  if (cgnet__conn_closed(c)) return CGNET_ECLOSED;
  cgnet__conn_set(c, CGNET__CF_PAUSED);
  reading_changed(c);
  return 0;
}

int cgnet_conn_resume_read(cgnet_conn *c) {
  CGNET__LOOP_ONLY(c);
  CGNET__STREAM_ONLY(c);
  if (cgnet__conn_closed(c)) return CGNET_ECLOSED;
  cgnet__conn_clear(c, CGNET__CF_PAUSED);
  reading_changed(c);
  return 0;
}

/* Drop the first n bytes of iov[0, cnt) (n <= their total); returns the first iovec
 * left, adjusted in place. */
static int iov_skip(struct iovec *iov, int cnt, size_t n) {
  int i = 0;
  while (i < cnt && n >= iov[i].iov_len)
    n -= iov[i++].iov_len;
  if (i < cnt) {
    iov[i].iov_base = (uint8_t *)iov[i].iov_base + n;
    iov[i].iov_len -= n;
  }
  return i;
}

int cgnet_conn_write_frame(cgnet_conn *c, const void *frame, size_t len) {
  CGNET__LOOP_ONLY(c);
  CGNET__STREAM_ONLY(c);
  int err = writable_or_error(c);
  if (err) return err;
  if (!c->codec) return CGNET_EINVAL;
  cgnet_encoded e;
  if ((err = cgnet_codec_encode(c->codec, frame, len, &e))) return err;
  if (c->tls) return cgnet__tls_conn_writev(c, e.iov, e.iovcnt);
  size_t total = 0;
  for (int i = 0; i < e.iovcnt; i++)
    total += e.iov[i].iov_len;
  if (check_limit(c, total)) return write_oversized(c, e.iov, e.iovcnt, total);
  int first = 0;
  if (total >= DIRECT_WRITE_MIN && cgnet__outbuf_len(&c->out) == 0 &&
      !cgnet__conn_connecting(c) && c->kind != CGNET__CONNECTED_DGRAM) {
    ssize_t n = write_direct(c, e.iov, e.iovcnt); /* a big frame: no copy at all */
    if (n < 0) return (int)n;
    first = iov_skip(e.iov, e.iovcnt, (size_t)n);
  }
  return cgnet_conn_writev(c, e.iov + first, e.iovcnt - first);
}
