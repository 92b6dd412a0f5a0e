/*
 * Connections: the read path, the write path, closing, and the conn API.
 * Everything here runs on the loop thread that owns the conn.
 *
 * Read path. One read() into the loop's shared read buffer per wake-up (level mode) or
 * until EAGAIN / the chunk budget (edge mode). When the conn holds no leftover bytes, the
 * user sees the bytes in place in the loop buffer; only what the user leaves unconsumed
 * is copied into the conn's own inbound buffer, which is released once it empties.
 *
 * Write path. Writes made during a wake-up are appended to the conn's outbound queue and
 * the conn joins the loop's pending_out list; the loop flushes every pending conn with
 * one send/sendmsg each just before it sleeps (redis' "write before sleep"), so replies
 * to many requests in one wake-up cost one syscall. A large write with nothing queued
 * goes straight to the socket to save the copy. What the socket does not take stays
 * queued and EPOLLOUT is armed until it drains.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

/* A write at least this large, with nothing queued before it, skips the queue. */
#define DIRECT_WRITE_MIN (16 * 1024)
/* Timeout for a graceful stop asked for by a callback's SHUTDOWN action. */
#define ACTION_STOP_TIMEOUT_MS 1000

static const cgnet_handler *handler_of(const cgnet_conn *c) { return &c->loop->eng->h; }

static bool edge_mode(const cgnet_conn *c) { return c->loop->eng->o.edge_triggered != 0; }

static void schedule_flush(cgnet_conn *c) {
  if (!cgnet__list_linked(&c->out_node))
    cgnet__list_insert_tail(&c->loop->pending_out, &c->out_node);
}

/* Close when it is safe: at once, or after the conn's running callback returns. */
static void request_close(cgnet_conn *c, int reason) {
  if (c->closed) return;
  if (c->close_reason == 0) c->close_reason = reason;
  if (c->in_callback == 0) cgnet__conn_close_now(c, c->close_reason);
}

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
  if (c->in_callback == 0) schedule_flush(c);
}

/* Fold what the user consumed back into the inbound buffer: drop consumed bytes, and
 * copy unconsumed bytes out of the loop's read buffer (which the next read reuses). */
static void settle_view(cgnet_conn *c) {
  if (!c->view_set) return;
  size_t left = c->view_len - c->view_pos;
  c->view_set = false;
  if (c->view_is_rbuf) {
    if (left && cgnet__buf_append(&c->in, &c->loop->pool, c->view + c->view_pos, left))
      request_close(c, CGNET_ENOMEM);
  } else if (c->view_pos) {
    cgnet__buf_consume(&c->in, &c->loop->pool, c->view_pos);
  }
  c->view = NULL;
  c->view_len = c->view_pos = 0;
}

/* ---- callbacks ----------------------------------------------------------------------- */

static void apply_action(cgnet_conn *c, cgnet_action a) {
  if (a == CGNET_SHUTDOWN)
    cgnet__engine_request_stop(c->loop->eng, ACTION_STOP_TIMEOUT_MS, 0);
  else if (a == CGNET_CLOSE)
    request_close(c, CGNET_ELOCALCLOSE);
}

/* Common tail of every conn callback: settle the view and carry out closes the callback
 * asked for, once the outermost callback of this conn has returned. */
static void after_callback(cgnet_conn *c, cgnet_action a) {
  c->in_callback--;
  apply_action(c, a);
  if (c->in_callback > 0 || c->closed) return;
  settle_view(c);
  if (c->close_reason) cgnet__conn_close_now(c, c->close_reason);
}

static void call_on_traffic(cgnet_conn *c) {
  const cgnet_handler *h = handler_of(c);
  if (!h->on_traffic) {
    c->view_pos = c->view_len; /* nobody wants the bytes */
    settle_view(c);
    return;
  }
  c->in_callback++;
  after_callback(c, h->on_traffic(c));
}

static void call_on_pre_write(cgnet_conn *c) {
  const cgnet_handler *h = handler_of(c);
  if (!h->on_pre_write) return;
  c->in_callback++;
  h->on_pre_write(c);
  after_callback(c, CGNET_NONE);
}

/* ---- opening ------------------------------------------------------------------------- */

static void forget_accepted(cgnet_loop *loop) {
  atomic_fetch_sub_explicit(&loop->nconns, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&loop->eng->nconns, 1, memory_order_relaxed);
}

void cgnet__conn_open(cgnet_loop *loop, int fd, const struct sockaddr *sa, socklen_t len) {
  cgnet_engine *eng = loop->eng;
  cgnet_conn *c = loop->stopping ? NULL : calloc(1, sizeof *c);
  if (!c) {
    if (!loop->stopping) cgnet__log(eng, CGNET_LOG_ERROR, "out of memory for a new conn");
    close(fd);
    forget_accepted(loop);
    return;
  }
  c->io.fd = fd;
  c->io.kind = CGNET__KIND_CONN;
  c->loop = loop;
  cgnet__list_init(&c->node);
  cgnet__list_init(&c->out_node);
  cgnet__list_init(&c->read_node);
  cgnet__buf_init(&c->in);
  cgnet__outbuf_init(&c->out);
  if (len > sizeof c->remote) len = sizeof c->remote;
  memcpy(&c->remote, sa, len);
  c->remote_len = len;
  c->interest = edge_mode(c) ? (CGNET__POLL_READ | CGNET__POLL_WRITE | CGNET__POLL_EDGE)
                             : CGNET__POLL_READ;
  int err = cgnet__poller_add(&loop->poller, fd, c->interest, &c->io);
  if (err) {
    cgnet__log(eng, CGNET_LOG_ERROR, "cannot watch a new conn: %s", cgnet_strerror(err));
    close(fd);
    free(c);
    forget_accepted(loop);
    return;
  }
  cgnet__list_insert_tail(&loop->conns, &c->node);
  if (eng->h.on_open) {
    c->in_callback++;
    after_callback(c, eng->h.on_open(c));
  }
}

/* ---- reading ------------------------------------------------------------------------- */

/* Hand n freshly read bytes to the user. */
static void deliver(cgnet_conn *c, const uint8_t *data, size_t n) {
  if (cgnet__buf_len(&c->in) == 0) {
    c->view = data;
    c->view_len = n;
    c->view_pos = 0;
    c->view_is_rbuf = true;
    c->view_set = true;
  } else {
    if (cgnet__buf_append(&c->in, &c->loop->pool, data, n)) {
      request_close(c, CGNET_ENOMEM);
      return;
    }
    view_from_inbound(c);
  }
  call_on_traffic(c);
}

/* One read; returns the byte count, 0 when nothing more is to be read now, or -1 when
 * the conn was closed (EOF or error). */
static ssize_t read_once(cgnet_conn *c) {
  cgnet_loop *loop = c->loop;
  ssize_t n;
  do {
    n = read(c->io.fd, loop->rbuf, loop->rbuf_cap);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    deliver(c, loop->rbuf, (size_t)n);
    return c->closed ? -1 : n;
  }
  if (n == 0) {
    request_close(c, CGNET_EOF);
    return -1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  request_close(c, -errno);
  return -1;
}

/* Edge mode must drain the socket, but a budget keeps one busy peer from starving the
 * others: past it, the conn waits in pending_read for the loop's next turn. */
static void read_edge(cgnet_conn *c) {
  size_t budget = c->loop->eng->o.read_chunk_limit, total = 0;
  for (;;) {
    ssize_t n = read_once(c);
    if (n <= 0 || c->close_reason) return;
    total += (size_t)n;
    if (total >= budget) {
      if (!cgnet__list_linked(&c->read_node))
        cgnet__list_insert_tail(&c->loop->pending_read, &c->read_node);
      return;
    }
  }
}

void cgnet__conn_continue_read(cgnet_conn *c) {
  cgnet__list_remove(&c->read_node);
  if (!c->closed && !c->draining) read_edge(c);
}

/* ---- writing ------------------------------------------------------------------------- */

/* Keep EPOLLOUT armed exactly while output is queued (level mode); while draining for a
 * stop, stop reading. Edge mode registers both once and never changes. */
static void update_interest(cgnet_conn *c) {
  if (edge_mode(c) || c->closed) return;
  uint32_t want = c->draining ? 0 : CGNET__POLL_READ;
  if (cgnet__outbuf_len(&c->out)) want |= CGNET__POLL_WRITE;
  if (want == c->interest) return;
  int err = cgnet__poller_mod(&c->loop->poller, c->io.fd, want, &c->io);
  if (err) {
    request_close(c, err);
    return;
  }
  c->interest = want;
}

/* Send queued output until it is gone or the socket is full. 0, or the socket error. */
static int write_out(cgnet_conn *c) {
  struct iovec iov[CGNET__MAX_IOV];
  while (cgnet__outbuf_len(&c->out)) {
    int cnt = cgnet__outbuf_gather(&c->out, iov, CGNET__MAX_IOV);
    size_t want = 0;
    for (int i = 0; i < cnt; i++) want += iov[i].iov_len;
    ssize_t n;
    if (cnt == 1) {
      n = send(c->io.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
      struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
      n = sendmsg(c->io.fd, &msg, MSG_NOSIGNAL);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -errno;
    }
    cgnet__outbuf_consume(&c->out, &c->loop->pool, (size_t)n);
    if ((size_t)n < want) return 0; /* the socket is full */
  }
  return 0;
}

static void flush_now(cgnet_conn *c) {
  if (cgnet__list_linked(&c->out_node)) cgnet__list_remove(&c->out_node);
  if (c->closed) return;
  if (c->view_set && c->in_callback == 0) settle_view(c); /* touched outside a callback */
  if (cgnet__outbuf_len(&c->out)) {
    call_on_pre_write(c);
    if (c->closed) return;
    int err = write_out(c);
    if (err) {
      request_close(c, err);
      return;
    }
  }
  if (c->draining && cgnet__outbuf_len(&c->out) == 0) {
    cgnet__conn_close_now(c, CGNET_ESHUTDOWN);
    return;
  }
  update_interest(c);
}

void cgnet__conn_flush_pending(cgnet_conn *c) { flush_now(c); }

void cgnet__conn_on_ready(cgnet_conn *c, uint32_t flags) {
  if ((flags & (CGNET__READY_READ | CGNET__READY_ERROR)) && !c->draining) {
    if (edge_mode(c))
      read_edge(c);
    else
      (void)read_once(c);
  } else if ((flags & CGNET__READY_ERROR) && c->draining) {
    int soerr = 0;
    socklen_t l = sizeof soerr;
    getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
    request_close(c, soerr ? -soerr : CGNET_ESHUTDOWN);
  }
  if (!c->closed && (flags & CGNET__READY_WRITE) && cgnet__outbuf_len(&c->out)) flush_now(c);
}

/* ---- closing ------------------------------------------------------------------------- */

/* Reasons after which the socket may still take our last bytes. */
static bool can_flush_on_close(int reason) {
  return reason == CGNET_ELOCALCLOSE || reason == CGNET_ESHUTDOWN || reason == CGNET_EOF;
}

void cgnet__conn_close_now(cgnet_conn *c, int reason) {
  if (c->closed) return;
  cgnet_loop *loop = c->loop;
  if (cgnet__outbuf_len(&c->out) && can_flush_on_close(reason)) (void)write_out(c);
  c->closed = true;
  c->close_reason = reason;
  c->view_set = false;
  (void)cgnet__poller_del(&loop->poller, c->io.fd);
  if (cgnet__list_linked(&c->out_node)) cgnet__list_remove(&c->out_node);
  if (cgnet__list_linked(&c->read_node)) cgnet__list_remove(&c->read_node);
  cgnet__list_remove(&c->node);
  cgnet__list_insert_tail(&loop->graveyard, &c->node);
  forget_accepted(loop);

  const cgnet_handler *h = handler_of(c);
  if (h->on_close) {
    c->in_callback++;
    cgnet_action a = h->on_close(c, reason);
    c->in_callback--;
    if (a == CGNET_SHUTDOWN) cgnet__engine_request_stop(loop->eng, ACTION_STOP_TIMEOUT_MS, 0);
  }
  cgnet__buf_release(&c->in, &loop->pool);
  cgnet__outbuf_release(&c->out, &loop->pool);
  close(c->io.fd);
  c->io.fd = -1;
}

void cgnet__conn_free(cgnet_conn *c) {
  cgnet__list_remove(&c->node);
  free(c);
}

void cgnet__conn_begin_stop(cgnet_conn *c) {
  if (c->closed) return;
  if (cgnet__outbuf_len(&c->out) == 0 || c->in_callback) {
    request_close(c, CGNET_ESHUTDOWN);
    return;
  }
  c->draining = true;
  schedule_flush(c);
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
  return (c->closed || c->close_reason) ? CGNET_ECLOSED : 0;
}

/* With nothing queued, try the socket first; returns how many bytes it took, or a
 * negative error (the conn is then closing). */
static ssize_t write_direct(cgnet_conn *c, const void *data, size_t len) {
  call_on_pre_write(c);
  if (writable_or_error(c)) return CGNET_ECLOSED;
  ssize_t n;
  do {
    n = send(c->io.fd, data, len, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return n;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  int err = -errno;
  request_close(c, err);
  return err;
}

int cgnet_conn_write(cgnet_conn *c, const void *data, size_t len) {
  int err = writable_or_error(c);
  if (err || len == 0) return err;
  if (len >= DIRECT_WRITE_MIN && cgnet__outbuf_len(&c->out) == 0) {
    ssize_t n = write_direct(c, data, len);
    if (n < 0) return (int)n;
    data = (const uint8_t *)data + n;
    len -= (size_t)n;
    if (len == 0) return 0;
  }
  err = cgnet__outbuf_append(&c->out, &c->loop->pool, c->loop->eng->ring_max, data, len);
  if (err) return err;
  schedule_flush(c);
  return 0;
}

int cgnet_conn_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt) {
  int err = writable_or_error(c);
  if (err) return err;
  if (iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  err = cgnet__outbuf_appendv(&c->out, &c->loop->pool, c->loop->eng->ring_max, iov, iovcnt);
  if (err) return err;
  if (cgnet__outbuf_len(&c->out)) schedule_flush(c);
  return 0;
}

int cgnet_conn_flush(cgnet_conn *c) {
  int err = writable_or_error(c);
  if (err) return err;
  if (cgnet__outbuf_len(&c->out) == 0) return 0;
  call_on_pre_write(c);
  if ((err = writable_or_error(c))) return err;
  err = write_out(c);
  if (err) {
    request_close(c, err);
    return err;
  }
  if (cgnet__outbuf_len(&c->out))
    schedule_flush(c); /* the rest goes out (or EPOLLOUT gets armed) before sleep */
  else
    update_interest(c);
  return 0;
}

size_t cgnet_conn_outbound_buffered(const cgnet_conn *c) { return cgnet__outbuf_len(&c->out); }

/* ---- public API: state and controls -------------------------------------------------- */

int cgnet_conn_close(cgnet_conn *c) {
  if (c->closed || c->close_reason) return CGNET_ECLOSED;
  request_close(c, CGNET_ELOCALCLOSE);
  return 0;
}

void *cgnet_conn_context(const cgnet_conn *c) { return c->ctx; }
void cgnet_conn_set_context(cgnet_conn *c, void *ctx) { c->ctx = ctx; }
cgnet_loop *cgnet_conn_loop(const cgnet_conn *c) { return c->loop; }
cgnet_engine *cgnet_conn_engine(const cgnet_conn *c) { return c->loop->eng; }
int cgnet_conn_fd(const cgnet_conn *c) { return c->io.fd; }

const struct sockaddr *cgnet_conn_remote_addr(const cgnet_conn *c, socklen_t *len) {
  if (len) *len = c->remote_len;
  return (const struct sockaddr *)&c->remote;
}

static void fetch_local(cgnet_conn *c) {
  if (c->local_len || c->io.fd < 0) return;
  socklen_t len = sizeof c->local;
  if (getsockname(c->io.fd, (struct sockaddr *)&c->local, &len) == 0) c->local_len = len;
}

const struct sockaddr *cgnet_conn_local_addr(const cgnet_conn *c, socklen_t *len) {
  fetch_local((cgnet_conn *)c); /* a cache fill; the conn is logically unchanged */
  if (len) *len = c->local_len;
  return (const struct sockaddr *)&c->local;
}

const char *cgnet_conn_remote_addr_string(cgnet_conn *c) {
  if (!c->remote_str[0])
    (void)cgnet_format_addr((struct sockaddr *)&c->remote, c->remote_len, c->remote_str,
                            sizeof c->remote_str);
  return c->remote_str;
}

const char *cgnet_conn_local_addr_string(cgnet_conn *c) {
  fetch_local(c);
  if (!c->local_str[0] && c->local_len)
    (void)cgnet_format_addr((struct sockaddr *)&c->local, c->local_len, c->local_str,
                            sizeof c->local_str);
  return c->local_str;
}

static int open_fd_or_error(const cgnet_conn *c) { return c->closed ? CGNET_ECLOSED : 0; }

int cgnet_conn_set_nodelay(cgnet_conn *c, int on) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_nodelay(c->io.fd, on);
}

int cgnet_conn_set_keepalive(cgnet_conn *c, int idle_s, int interval_s, int count) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_keepalive(c->io.fd, idle_s, interval_s, count);
}

int cgnet_conn_set_linger(cgnet_conn *c, int seconds) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_linger(c->io.fd, seconds);
}

int cgnet_conn_set_recv_buffer(cgnet_conn *c, int bytes) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_bufsize(c->io.fd, SO_RCVBUF, bytes);
}

int cgnet_conn_set_send_buffer(cgnet_conn *c, int bytes) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_bufsize(c->io.fd, SO_SNDBUF, bytes);
}
