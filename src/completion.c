/*
 * A stream conn's I/O on a completion backend (io_uring): the receive, the send and the
 * completions that drive them. stream.c keeps the read and write paths both backends
 * share (the view, callbacks, watermarks, half-close); this file holds what differs,
 * out of the epoll per-message path, which stays inlined within stream.c.
 *
 * Receive. A multishot receive runs while the conn wants to read; each completion
 * brings one provided buffer. What fits the read room is seen in place; the rest, and
 * whatever arrives while the conn does not read (the receive is being cancelled and
 * completions on their way still come), waits in the conn's stash and is taken as
 * epoll's reads would take it, so watermarks and read backpressure hold as on epoll.
 *
 * Send. One send in flight per conn: it carries the front of the outbound queue, whose
 * bytes stay pinned in place until its completion; writes made meanwhile queue behind,
 * and the completion sends the rest before the loop sleeps.
 */
#include <errno.h>
#include <string.h>

#include "core.h"

/* The receive runs exactly while the conn wants to read (c->interest's READ bit records
 * that the conn asked for it). With read backpressure each receive takes at most the
 * read room, as epoll's read does, and is started again after each result: a multishot
 * receive reads ahead as far as the socket and the buffer ring allow (tens of buffers
 * in one go), which a conn past its high watermark would have to keep. Without it (a
 * client's default) the receive is multishot. Sends are operations of their own. */
static uint32_t receive_cap(const cgnet_conn *c) {
  if (!cgnet__conn_has(c, CGNET__CF_READ_BACKPRESSURE)) return 0;
  size_t room = cgnet__conn_read_room(c);
  return room > UINT32_MAX ? UINT32_MAX : (uint32_t)room;
}

void cgnet__conn_update_receive(cgnet_conn *c) {
  if (c->state != CGNET__CONN_OPEN) return;
  cgnet__backend *b = &c->loop->backend;
  bool want = cgnet__conn_wants_read(c) && !cgnet__conn_has(c, CGNET__CF_FIN_PENDING);
  /* While not receiving, a poll tells of an error or hang-up, as epoll always does
   * (not after the peer's FIN: that one is known and waits for reading). */
  bool hup = !want && !cgnet__conn_has(c, CGNET__CF_FIN_PENDING | CGNET__CF_READ_CLOSED);
  bool on = (c->interest & CGNET__POLL_READ) != 0;
  bool hup_on = (c->io.watch & CGNET__POLL_HUP) != 0;
  int err = 0;
  if (want && (!on || !(c->io.ops & CGNET__OP_RECV_ARMED))) {
    err = b->ops->recv_start(b, &c->io, receive_cap(c));
    c->interest |= CGNET__POLL_READ;
  } else if (!want && on) {
    b->ops->recv_stop(b, &c->io);
    c->interest &= ~CGNET__POLL_READ;
  }
  if (!err && hup != hup_on)
    err = cgnet__backend_watch(b, &c->io, hup ? CGNET__POLL_HUP : 0);
  if (err) cgnet__conn_request_close(c, err);
}

/* With a completion backend: one send of the queue's front in flight at a time; its
 * bytes are pinned in the queue until the completion (on_sent), which sends the rest. */
#define SEND_IOV 8
int cgnet__conn_submit_send(cgnet_conn *c) {
  if (c->out.pinned) return 0; /* its completion may not have been seen yet */
  struct iovec iov[SEND_IOV];
  int cnt = cgnet__outbuf_gather(&c->out, iov, SEND_IOV);
  if (cnt == 0) return 0;
  size_t bytes = 0;
  for (int i = 0; i < cnt; i++)
    bytes += iov[i].iov_len;
  cgnet__backend *b = &c->loop->backend;
  int err = b->ops->send_start(b, &c->io, iov, cnt);
  if (err) return err;
  c->out.pinned = bytes;
  return 0;
}

/* Completion backend: take the stashed bytes as epoll's reads would, while the conn
 * reads, at most read_room at a time. */
static void pump_stash(cgnet_conn *c) {
  while (cgnet__buf_len(&c->stash) && cgnet__conn_wants_read(c) &&
         !cgnet__conn_closing(c)) {
    size_t k = cgnet__buf_len(&c->stash), room = cgnet__conn_read_room(c);
    if (k > room) k = room;
    if (c->view_set)
      cgnet__conn_settle_view(c); /* touched by a task earlier in this turn */
    cgnet__conn_deliver(c, cgnet__buf_data(&c->stash),
                        k);            /* the unread rest is copied out */
    if (cgnet__conn_closed(c)) return; /* the stash went with the conn */
    cgnet__buf_consume(&c->stash, &c->loop->pool, k);
  }
}

/* A FIN that arrived behind stashed bytes or while reading was off, once they are
 * taken: as epoll's read would return 0 only then. */
static void take_pending_fin(cgnet_conn *c) {
  if (!cgnet__conn_has(c, CGNET__CF_FIN_PENDING) || !cgnet__conn_wants_read(c) ||
      cgnet__buf_len(&c->stash) || cgnet__conn_closing(c))
    return;
  cgnet__conn_clear(c, CGNET__CF_FIN_PENDING);
  cgnet__conn_peer_fin(c);
}

/* Completion backend: the receive delivers by itself; here reading resumes (stashed
 * bytes, a FIN behind them, the receive restarted). */
void cgnet__conn_continue_receive(cgnet_conn *c) {
  pump_stash(c);
  take_pending_fin(c);
  cgnet__conn_update_receive(c);
}

/* ---- completions ----------------------------------------------------------------------
 */

/*
 * Bytes a receive brought. While the conn reads and they fit the read room, the user
 * sees them in place in the provided buffer (the unread rest is copied to the inbound
 * buffer), as with a read. Otherwise (paused or over the high watermark: the receive is
 * being cancelled and completions on their way still arrive; or more than the room)
 * they wait in the stash and are taken as reads would take them (pump_stash); a FIN
 * behind them waits for them.
 */
static void on_received(cgnet_conn *c, const cgnet__result *r) {
  if (cgnet__conn_closing(c)) return;
  if (r->res > 0) {
    size_t n = (size_t)r->res;
    c->last_read_ms = c->loop->now_ms;
    if (cgnet__likely(cgnet__buf_len(&c->stash) == 0) && cgnet__conn_wants_read(c) &&
        n <= cgnet__conn_read_room(c)) {
      if (c->view_set)
        cgnet__conn_settle_view(c); /* touched by a task earlier in this turn */
      cgnet__conn_deliver(c, r->data, n);
    } else if (!cgnet__conn_has(c, CGNET__CF_DRAINING)) {
      if (cgnet__buf_append(&c->stash, &c->loop->pool, r->data, n)) {
        cgnet__conn_request_close(c, CGNET_ENOMEM);
        return;
      }
      pump_stash(c);
    }
  } else if (r->res == 0) {
    cgnet__conn_set(c, CGNET__CF_FIN_PENDING);
    take_pending_fin(c);
  } else {
    cgnet__conn_request_close(c, r->res);
    return;
  }
  /* Stop the receive if the callback paused or filled the output (or after a FIN), or
   * start the next single receive. A multishot receive the kernel ended for its own
   * reasons the backend restarts while the conn still wants data. */
  cgnet__conn_update_receive(c);
}

/* A send completed: its bytes leave the queue, the rest goes in the next send, and what
 * waited for the queue to drain follows. */
static void on_sent(cgnet_conn *c, int res) {
  c->out.pinned = 0;
  if (cgnet__conn_closed(c)) {
    if (cgnet__conn_has(c, CGNET__CF_LINGER)) {
      if (res > 0) cgnet__outbuf_consume(&c->out, &c->loop->pool, (size_t)res);
      cgnet__conn_end_linger(c);
    }
    return;
  }
  if (res < 0) {
    cgnet__conn_request_close(c, res);
    return;
  }
  c->last_write_ms = c->loop->now_ms;
  cgnet__outbuf_consume(&c->out, &c->loop->pool, (size_t)res);
  /* As the flush before the loop sleeps would: the rest goes out, and what waited for
   * the queue to drain (watermarks, a half-close, the end of a drain) follows. */
  cgnet__conn_flush_pending(c);
}

void cgnet__conn_on_completion(cgnet_conn *c, const cgnet__result *r) {
  cgnet__backend *b = &c->loop->backend;
  switch (r->type) {
  case CGNET__RES_RECV:
    if (!cgnet__conn_closed(c)) on_received(c, r);
    b->ops->recv_done(b, r); /* the view was settled: the unread rest was copied */
    break;
  case CGNET__RES_SEND:
    on_sent(c, r->res);
    break;
  case CGNET__RES_CONNECT:
    cgnet__conn_connect_done(c, r->res);
    return;
  default:
    return;
  }
  cgnet__conn_flush_own_output(c);
}
