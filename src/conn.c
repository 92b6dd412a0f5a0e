/*
 * A conn's life and its API: building it, entering its loop, opening (accepted,
 * enrolled, or a dial that connected), timeouts, closing and freeing, references, and the
 * accessors and socket options. Everything here runs on the loop thread that owns the
 * conn, except where a comment says otherwise. The read and write paths are in
 * stream.c, the datagram conns' in udp.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

/* Close when it is safe: at once, or after the conn's running callback returns. */
void cgnet__conn_request_close(cgnet_conn *c, int reason) {
  if (cgnet__conn_closed(c)) return;
  if (c->close_reason == 0) c->close_reason = reason;
  if (c->in_callback == 0) cgnet__conn_close_now(c, c->close_reason);
}

/* ---- timeouts ------------------------------------------------------------------------ */

/* The earliest timeout deadline of the conn, or UINT64_MAX (none, or so far away that
 * it saturates: a timeout of UINT64_MAX never fires). */
static uint64_t timeout_deadline(const cgnet_conn *c) {
  if (cgnet__conn_connecting(c))
    return c->client.connect_deadline_ms ? c->client.connect_deadline_ms : UINT64_MAX;
  if (cgnet__conn_has(c, CGNET__CF_HANDSHAKE)) return c->tls_deadline_ms;
  uint64_t d = UINT64_MAX;
  if (c->idle_to_ms) {
    uint64_t last = c->last_read_ms > c->last_write_ms ? c->last_read_ms : c->last_write_ms;
    d = cgnet__deadline(last, c->idle_to_ms);
  }
  if (c->read_to_ms && !cgnet__conn_has(c, CGNET__CF_READ_CLOSED))
    d = cgnet__min_u64(d, cgnet__deadline(c->last_read_ms, c->read_to_ms));
  if (c->write_to_ms && cgnet__outbuf_len(&c->out))
    d = cgnet__min_u64(d, cgnet__deadline(c->last_write_ms, c->write_to_ms));
  return d;
}

/* Arm the node if a deadline now comes before it (reads and writes only push deadlines
 * later, so they never need this; new queued output and new settings may). */
void cgnet__conn_arm_timeouts(cgnet_conn *c) {
  uint64_t d = timeout_deadline(c);
  if (d == UINT64_MAX) return;
  if (!cgnet__tnode_active(&c->timeout_node) || d < c->timeout_node.expires)
    cgnet__wheel_add(&c->loop->wheel, &c->timeout_node, d);
}

static void on_timeout_node(cgnet__tnode *n) {
  cgnet_conn *c = cgnet__container_of(n, cgnet_conn, timeout_node);
  if (cgnet__conn_closed(c)) {
    cgnet__conn_end_linger(c); /* its send never completed: give up on it */
    return;
  }
  uint64_t d = timeout_deadline(c);
  if (d <= c->loop->wheel.now) {
    cgnet__conn_request_close(c, CGNET_ETIMEDOUT);
    return;
  }
  if (d != UINT64_MAX) cgnet__wheel_add(&c->loop->wheel, n, d);
}

/* ---- opening ------------------------------------------------------------------------- */

static void forget_accepted(cgnet_loop *loop) {
  atomic_fetch_sub_explicit(&loop->nconns, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&loop->eng->nconns, 1, memory_order_relaxed);
}

/* The conn no longer counts in its loop and engine (a client counts its own conns, in
 * cgnet__client_conn_closed once on_close has run). */
static void forget_conn(cgnet_conn *c) {
  if (!cgnet__conn_is_client(c))
    forget_accepted(c->loop);
  else
    atomic_fetch_sub_explicit(&c->loop->nconns, 1, memory_order_relaxed);
}

void cgnet__conn_init(cgnet_conn *c, cgnet_loop *loop, const cgnet_handler *h,
                      const cgnet_options *o, size_t ring_max, cgnet_client *client,
                      unsigned refs) {
  c->io.fd = -1;
  c->io.kind = CGNET__KIND_CONN;
  c->loop = loop;
  c->h = h;
  c->o = o;
  c->ring_max = ring_max;
  c->kind = client ? CGNET__CLIENT_STREAM : CGNET__SERVER_STREAM; /* dgram: set later */
  c->client.owner = client;
  cgnet__list_init(&c->node);
  cgnet__list_init(&c->out_node);
  cgnet__list_init(&c->read_node);
  cgnet__list_init(&c->timers);
  cgnet__buf_init(&c->in);
  cgnet__buf_init(&c->stash);
  cgnet__outbuf_init(&c->out);
  cgnet__tnode_init(&c->timeout_node, on_timeout_node);
  atomic_init(&c->gone, false);
  atomic_init(&c->refs, refs);
  /* A server's output follows its input (replies), so reading less is how it bounds
   * its output; a client's output is the application's, and a client that stopped
   * reading while it streams out would deadlock against a server doing the same. */
  if (client ? o->read_backpressure == CGNET_ON : o->read_backpressure != CGNET_OFF)
    cgnet__conn_set(c, CGNET__CF_READ_BACKPRESSURE);
  if (o->edge_triggered) cgnet__conn_set(c, CGNET__CF_EDGE);
  c->read_max = loop->rbuf_cap;
  if (cgnet__conn_has(c, CGNET__CF_READ_BACKPRESSURE) &&
      o->write_high_watermark < c->read_max)
    c->read_max = o->write_high_watermark;
  c->idle_to_ms = o->idle_timeout_ms;
  c->read_to_ms = o->read_timeout_ms;
  c->write_to_ms = o->write_timeout_ms;
  c->codec = o->codec;
}

cgnet_conn *cgnet__conn_new(cgnet_loop *loop, const cgnet_handler *h,
                            const cgnet_options *o, size_t ring_max, cgnet_client *client,
                            unsigned extra_refs) {
  cgnet_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  cgnet__conn_init(c, loop, h, o, ring_max, client, 1 + extra_refs);
  return c;
}

void cgnet__conn_enter_loop(cgnet_conn *c) {
  c->state = CGNET__CONN_CONNECTING;
  cgnet__list_insert_tail(&c->loop->conns, &c->node);
  c->last_read_ms = c->last_write_ms = c->loop->now_ms;
  cgnet__conn_arm_timeouts(c);
}

/* What the backend watches once the conn is open. */
static uint32_t open_interest(const cgnet_conn *c) {
  if (c->o->edge_triggered) return CGNET__POLL_READ | CGNET__POLL_WRITE | CGNET__POLL_EDGE;
  return CGNET__POLL_READ;
}

static void call_on_open(cgnet_conn *c) {
  const cgnet_handler *h = c->h;
  if (h->on_open) {
    c->in_callback++;
    cgnet__conn_after_callback(c, h->on_open(c));
  }
}

/* The socket is connected (accepted, enrolled, or a dial that completed): open, or for
 * a TLS conn start the handshake, which opens it to the user once done. */
static void open_connected(cgnet_conn *c) {
  c->state = CGNET__CONN_OPEN;
  c->last_read_ms = c->last_write_ms = c->loop->now_ms;
  cgnet__conn_arm_timeouts(c);
  if (cgnet__unlikely(c->tls != NULL)) {
    cgnet__tls_conn_begin(c);
    return;
  }
  cgnet__conn_open_for_user(c);
}

void cgnet__conn_open_for_user(cgnet_conn *c) {
  if (cgnet__conn_is_client(c)) cgnet__client_conn_opened(c);
  if (c->client.pending.head) cgnet__dgram_conn_send_pending(c);
  call_on_open(c);
  if (cgnet__conn_closed(c)) return;
  if (cgnet__conn_has(c, CGNET__CF_WAKE_ON_OPEN)) {
    cgnet__conn_clear(c, CGNET__CF_WAKE_ON_OPEN);
    cgnet__conn_wake_now(c);
    if (cgnet__conn_closed(c)) return;
  }
  if (cgnet__outbuf_len(&c->out)) cgnet__conn_schedule_flush(c);
  /* A completion conn starts receiving now, whatever it has to send. */
  if (!cgnet__outbuf_len(&c->out) || cgnet__conn_has(c, CGNET__CF_COMPLETION))
    cgnet__conn_update_interest(c);
  if (cgnet__conn_is_client(c))
    cgnet__conn_schedule_read(c); /* bytes may have come with the connect */
  cgnet__conn_flush_own_output(c);
}

/* A stream conn on a completion backend: connect and receive through operations. */
static int attach_completion(cgnet_conn *c, bool connecting) {
  cgnet__backend *b = &c->loop->backend;
  cgnet__conn_set(c, CGNET__CF_COMPLETION);
  c->interest = 0;
  if (connecting)
    return b->ops->connect_start(b, &c->io, (const struct sockaddr *)&c->remote,
                                 c->remote_len);
  open_connected(c);
  return 0;
}

int cgnet__conn_attach(cgnet_conn *c, int fd, bool connecting) {
  c->io.fd = fd;
  if (cgnet__backend_completion(&c->loop->backend) && !cgnet__conn_is_dgram(c))
    return attach_completion(c, connecting);
  c->interest = connecting ? (c->o->edge_triggered ? open_interest(c) : CGNET__POLL_WRITE)
                           : open_interest(c);
  int err = cgnet__backend_watch(&c->loop->backend, &c->io, c->interest);
  if (err) return err;
  if (!connecting) open_connected(c);
  return 0;
}

/* A new TLS server conn gets its session; without one it is dropped like a conn that
 * found no memory. */
static bool attach_server_tls(cgnet_conn *c) {
  int err = cgnet__tls_conn_attach(c, c->loop->eng->o.tls, NULL);
  if (!err) return true;
  cgnet__log(c->loop->eng, CGNET_LOG_ERROR, "no TLS session for a new conn: %s",
             cgnet_strerror(err));
  free(c);
  return false;
}

void cgnet__conn_open(cgnet_loop *loop, int fd, const struct sockaddr *sa, socklen_t len,
                      bool tls) {
  cgnet_engine *eng = loop->eng;
  cgnet_conn *c = NULL;
  if (!loop->stopping) /* already counted in the loop, at dispatch */
    c = cgnet__conn_new(loop, &eng->h, &eng->o, eng->ring_max, NULL, 0);
  if (c && tls && !attach_server_tls(c)) c = NULL;
  if (!c) {
    if (!loop->stopping) cgnet__log(eng, CGNET_LOG_ERROR, "out of memory for a new conn");
    close(fd);
    forget_accepted(loop);
    return;
  }
  if (len > sizeof c->remote) len = sizeof c->remote;
  memcpy(&c->remote, sa, len);
  c->remote_len = len;
  cgnet__conn_enter_loop(c);
  int err = cgnet__conn_attach(c, fd, false);
  if (err) { /* never opened: no on_close either */
    cgnet__log(eng, CGNET_LOG_ERROR, "cannot watch a new conn: %s", cgnet_strerror(err));
    cgnet__wheel_del(&loop->wheel, &c->timeout_node);
    cgnet__list_remove(&c->node);
    close(fd);
    forget_accepted(loop);
    if (c->tls) cgnet__tls_conn_free(c);
    free(c);
  }
}

/* A dial's connect() finished (the socket reported writable or an error). */
void cgnet__conn_finish_connect(cgnet_conn *c) {
  int err = cgnet__sys_socket_error(c->io.fd);
  if (err) {
    cgnet__conn_request_close(c, err);
    return;
  }
  open_connected(c);
}

void cgnet__conn_connect_done(cgnet_conn *c, int err) {
  if (cgnet__conn_closed(c) || !cgnet__conn_connecting(c)) return;
  if (err) {
    cgnet__conn_request_close(c, err);
    return;
  }
  open_connected(c);
}

/* ---- closing ------------------------------------------------------------------------- */

/* Close the socket: epoll stopped watching it before on_close; a completion backend
 * cancels the operations still armed and closes it (their completions are awaited
 * before the conn is freed: the zombies). */
static void release_socket(cgnet_conn *c) {
  cgnet__backend *b = &c->loop->backend;
  if (c->io.fd < 0) return;
  if (cgnet__backend_completion(b)) {
    b->ops->release(b, &c->io);
  } else {
    close(c->io.fd);
  }
  c->io.fd = -1;
}

/* Reasons after which the socket may still take our last bytes. A codec error is the
 * peer's protocol fault, not the socket's: replies to the frames before it still go. */
static bool can_flush_on_close(int reason) {
  return reason == CGNET_ELOCALCLOSE || reason == CGNET_ESHUTDOWN || reason == CGNET_EOF ||
         reason == CGNET_EFRAMETOOLARGE || reason == CGNET_ECODEC ||
         /* the alert that tells the TLS peer why */
         reason == CGNET_ETLS || reason == CGNET_ETLSVERIFY;
}

void cgnet__conn_close_now(cgnet_conn *c, int reason) {
  if (cgnet__conn_closed(c)) return;
  cgnet_loop *loop = c->loop;
  /* close_notify joins the queue, or a handshake failure is accounted for. */
  bool unseen = c->tls && cgnet__tls_conn_closing(c, reason);
  /* One last send of what is queued. With a send in flight (a completion backend) its
   * bytes go first: the socket lingers until it completes (CGNET__CF_LINGER). */
  bool linger = false;
  if (cgnet__outbuf_len(&c->out) && can_flush_on_close(reason) &&
      !cgnet__conn_has(c, CGNET__CF_SHUT_WR_DONE) && !cgnet__conn_connecting(c) &&
      c->io.fd >= 0) {
    if (c->out.pinned == 0)
      (void)cgnet__conn_write_out_now(c);
    else
      linger = true;
  }
  c->state = CGNET__CONN_CLOSED;
  atomic_store_explicit(&c->gone, true, memory_order_release);
  c->close_reason = reason;
  c->view_set = false;
  if (c->io.fd >= 0 && !cgnet__backend_completion(&loop->backend))
    cgnet__backend_unwatch(&loop->backend, &c->io);
  if (cgnet__list_linked(&c->out_node)) cgnet__list_remove(&c->out_node);
  if (cgnet__list_linked(&c->read_node)) cgnet__list_remove(&c->read_node);
  cgnet__wheel_del(&loop->wheel, &c->timeout_node);
  cgnet__list_remove(&c->node);
  cgnet__list_insert_tail(&loop->graveyard, &c->node);
  forget_conn(c);
  if (c->kind == CGNET__SESSION_DGRAM) cgnet__session_closed(c); /* its peer may reopen */

  const cgnet_handler *h = c->h;
  if (h->on_close && !unseen) {
    c->in_callback++;
    cgnet_action a = h->on_close(c, reason);
    c->in_callback--;
    if (a == CGNET_SHUTDOWN)
      cgnet__engine_request_stop(loop->eng, CGNET__ACTION_STOP_TIMEOUT_MS, 0);
  }
  if (cgnet__conn_is_client(c)) cgnet__client_conn_closed(c, reason);
  if (c->tls) cgnet__tls_conn_free(c);
  if (c->kind == CGNET__CONNECTED_DGRAM) cgnet__dgram_conn_free_pending(c);
  cgnet__conn_free_timers(c);
  cgnet__buf_release(&c->in, &loop->pool);
  cgnet__buf_release(&c->stash, &loop->pool);
  /* Bytes a send in flight reads stay until its completion (cgnet__conn_reap), and a
   * lingering conn's until they are sent. */
  if (!linger && !(c->io.ops & CGNET__OP_SEND_ARMED))
    cgnet__outbuf_release(&c->out, &loop->pool);
  if (linger) {
    cgnet__conn_set(c, CGNET__CF_LINGER);
    loop->backend.ops->recv_stop(&loop->backend, &c->io);
    cgnet__wheel_add(&loop->wheel, &c->timeout_node,
                     cgnet__deadline(loop->now_ms, CGNET__LINGER_MS));
    return;
  }
  release_socket(c);
}

void cgnet__conn_end_linger(cgnet_conn *c) {
  if (!cgnet__conn_has(c, CGNET__CF_LINGER)) return;
  cgnet__conn_clear(c, CGNET__CF_LINGER);
  cgnet__wheel_del(&c->loop->wheel, &c->timeout_node);
  if (c->out.pinned == 0 && cgnet__outbuf_len(&c->out)) (void)cgnet__conn_write_out_now(c);
  release_socket(c);
  if (!(c->io.ops & CGNET__OP_SEND_ARMED)) cgnet__outbuf_release(&c->out, &c->loop->pool);
}

void cgnet__conn_free(cgnet_conn *c) {
  cgnet__list_remove(&c->node);
  if (cgnet__unlikely(!cgnet__io_idle(&c->io) || cgnet__conn_has(c, CGNET__CF_LINGER))) {
    cgnet__list_insert_tail(&c->loop->zombies, &c->node);
    return;
  }
  cgnet__outbuf_release(&c->out, &c->loop->pool);
  cgnet_conn_unref(c);
}

void cgnet__conn_reap(cgnet_conn *c) {
  cgnet__list_remove(&c->node);
  cgnet__outbuf_release(&c->out, &c->loop->pool);
  cgnet_conn_unref(c);
}

cgnet_conn *cgnet_conn_ref(cgnet_conn *c) {
  /* A server's datagram conn is valid only during its callback: no reference. */
  if (c->kind == CGNET__SERVER_DGRAM) return c;
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void cgnet_conn_unref(cgnet_conn *c) {
  if (c->kind == CGNET__SERVER_DGRAM) return;
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
    cgnet__conn_release_names(c);
    if (c->tls) cgnet__tls_conn_free(c); /* a dial that never reached its loop */
    free(c);
  }
}

int cgnet_conn_is_closed(const cgnet_conn *c) {
  return atomic_load_explicit(&c->gone, memory_order_acquire);
}

void cgnet__conn_begin_stop(cgnet_conn *c) {
  if (cgnet__conn_closed(c)) return;
  /* A protocol with a goodbye of its own says it and ends the conn itself. */
  if (!c->in_callback && !cgnet__conn_connecting(c) &&
      !cgnet__conn_has(c, CGNET__CF_HANDSHAKE) && cgnet__ws_conn_stopping(c))
    return;
  if (cgnet__outbuf_len(&c->out) == 0 || c->in_callback ||
      cgnet__conn_has(c, CGNET__CF_SHUT_WR_DONE) || cgnet__conn_connecting(c)) {
    cgnet__conn_request_close(c, CGNET_ESHUTDOWN);
    return;
  }
  cgnet__conn_set(c, CGNET__CF_DRAINING);
  cgnet__conn_update_interest(c);
  cgnet__conn_schedule_flush(c);
}

/* ---- public API: timeouts ----------------------------------------------------------- */

static int set_timeout(cgnet_conn *c, uint64_t *field, uint64_t ms) {
  CGNET__ONE_PEER_ONLY(c);
  if (cgnet__conn_closed(c)) return CGNET_ECLOSED;
  *field = ms;
  /* Count the new timeout from now, as a user setting it would expect. */
  c->last_read_ms = c->last_write_ms = c->loop->now_ms;
  cgnet__conn_arm_timeouts(c);
  return 0;
}

int cgnet_conn_set_idle_timeout(cgnet_conn *c, uint64_t ms) {
  CGNET__LOOP_ONLY(c);
  return set_timeout(c, &c->idle_to_ms, ms);
}
int cgnet_conn_set_read_timeout(cgnet_conn *c, uint64_t ms) {
  CGNET__LOOP_ONLY(c);
  return set_timeout(c, &c->read_to_ms, ms);
}
int cgnet_conn_set_write_timeout(cgnet_conn *c, uint64_t ms) {
  CGNET__LOOP_ONLY(c);
  return set_timeout(c, &c->write_to_ms, ms);
}
/* ---- public API: state and controls -------------------------------------------------- */

int cgnet_conn_close(cgnet_conn *c) {
  CGNET__LOOP_ONLY(c);
  CGNET__ONE_PEER_ONLY(c);
  if (cgnet__conn_closing(c)) return CGNET_ECLOSED;
  cgnet__conn_request_close(c, CGNET_ELOCALCLOSE);
  return 0;
}

void *cgnet_conn_context(const cgnet_conn *c) {
  return c->ctx;
}
void cgnet_conn_set_context(cgnet_conn *c, void *ctx) {
  c->ctx = ctx;
}
cgnet_loop *cgnet_conn_loop(const cgnet_conn *c) {
  return c->loop;
}
cgnet_engine *cgnet_conn_engine(const cgnet_conn *c) {
  return c->loop->eng;
}
/* The socket the conn uses: its own, or for a UDP session the one it shares. */
static int socket_fd(const cgnet_conn *c) {
  if (cgnet__unlikely(c->kind == CGNET__SESSION_DGRAM)) return cgnet__session_fd(c);
  return c->io.fd;
}

int cgnet_conn_fd(const cgnet_conn *c) {
  return socket_fd(c);
}

const struct sockaddr *cgnet_conn_remote_addr(const cgnet_conn *c, socklen_t *len) {
  if (len) *len = c->remote_len;
  return (const struct sockaddr *)&c->remote;
}

void cgnet__conn_release_names(cgnet_conn *c) {
  free(c->names);
  c->names = NULL;
}

/* The conn's names, made on first use; NULL when out of memory. */
static cgnet__conn_names *names_of(cgnet_conn *c) {
  if (!c->names) c->names = calloc(1, sizeof *c->names);
  return c->names;
}

/* Answers when the names cannot be had (out of memory): an empty address. */
static const struct sockaddr_storage no_addr;

static cgnet__conn_names *fetch_local(cgnet_conn *c) {
  cgnet__conn_names *nm = names_of(c);
  int fd = socket_fd(c);
  if (!nm || nm->local_len || fd < 0) return nm;
  socklen_t len = sizeof nm->local;
  if (getsockname(fd, (struct sockaddr *)&nm->local, &len) == 0) nm->local_len = len;
  return nm;
}

const struct sockaddr *cgnet_conn_local_addr(const cgnet_conn *c, socklen_t *len) {
  /* A cache fill; the conn is logically unchanged. */
  cgnet__conn_names *nm = fetch_local((cgnet_conn *)c);
  if (len) *len = nm ? nm->local_len : 0;
  return (const struct sockaddr *)(nm ? &nm->local : &no_addr);
}

const char *cgnet_conn_remote_addr_string(cgnet_conn *c) {
  cgnet__conn_names *nm = names_of(c);
  if (!nm) return "";
  if (!nm->remote_str[0])
    (void)cgnet_format_addr((struct sockaddr *)&c->remote, c->remote_len, nm->remote_str,
                            sizeof nm->remote_str);
  return nm->remote_str;
}

const char *cgnet_conn_local_addr_string(cgnet_conn *c) {
  cgnet__conn_names *nm = fetch_local(c);
  if (!nm) return "";
  if (!nm->local_str[0] && nm->local_len)
    (void)cgnet_format_addr((struct sockaddr *)&nm->local, nm->local_len, nm->local_str,
                            sizeof nm->local_str);
  return nm->local_str;
}

static int open_fd_or_error(const cgnet_conn *c) {
  return cgnet__conn_closed(c) ? CGNET_ECLOSED : 0;
}

/* nodelay and keep-alive: TCP conns only. */
static int open_tcp_or_error(const cgnet_conn *c) {
  if (cgnet__conn_is_dgram(c) || c->remote.ss_family == AF_UNIX) return CGNET_EUNSUPPORTED;
  return open_fd_or_error(c);
}

int cgnet_conn_is_datagram(const cgnet_conn *c) {
  return cgnet__conn_is_dgram(c);
}

int cgnet_conn_set_nodelay(cgnet_conn *c, int on) {
  int err = open_tcp_or_error(c);
  return err ? err : cgnet__set_nodelay(c->io.fd, on);
}

int cgnet_conn_set_keepalive(cgnet_conn *c, int idle_s, int interval_s, int count) {
  int err = open_tcp_or_error(c);
  return err ? err : cgnet__set_keepalive(c->io.fd, idle_s, interval_s, count);
}

int cgnet_conn_set_linger(cgnet_conn *c, int seconds) {
  CGNET__STREAM_ONLY(c);
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_linger(c->io.fd, seconds);
}

int cgnet_conn_set_recv_buffer(cgnet_conn *c, int bytes) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_bufsize(socket_fd(c), SO_RCVBUF, bytes);
}

int cgnet_conn_set_send_buffer(cgnet_conn *c, int bytes) {
  int err = open_fd_or_error(c);
  return err ? err : cgnet__set_bufsize(socket_fd(c), SO_SNDBUF, bytes);
}

/* ---- public API: codecs -------------------------------------------------------------- */

int cgnet_conn_set_codec(cgnet_conn *c, const cgnet_codec *codec) {
  CGNET__LOOP_ONLY(c);
  CGNET__STREAM_ONLY(c);
  if (cgnet__conn_closed(c)) return CGNET_ECLOSED;
  if (codec == c->codec) return 0;
  c->codec = codec;
  c->codec_hint = 0;
  if (cgnet_conn_inbound_buffered(c)) { /* decode what is buffered on the next turn */
    cgnet__conn_set(c, CGNET__CF_REDELIVER);
    cgnet__conn_schedule_read(c);
  }
  return 0;
}

const cgnet_codec *cgnet_conn_codec(const cgnet_conn *c) {
  return c->codec;
}
