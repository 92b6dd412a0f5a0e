/*
 * The engine's internal structures (engine, loop, conn, listener, task) and the internal
 * calls between the modules that work on them; every such module includes this header.
 *
 * Ownership and threads:
 *  - The engine owns its loops, listeners and addresses. It is built and freed on the
 *    user's thread; its atomic fields are read from any thread.
 *  - A loop runs on one thread and owns every conn in its `conns` list; nothing but that
 *    thread touches a conn, except through the loop's task queue.
 *  - Conns are never freed while the loop is working through a batch of backend results,
 *    so a result for a conn closed earlier in the same batch finds it CLOSED and is
 *    skipped; the loop frees such conns (the `graveyard`) once the batch is done.
 */
#ifndef CGNET_CORE_H
#define CGNET_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "addr.h"
#include "buffer.h"
#include "cgnet.h"
#include "internal/list.h"
#include "internal/queue.h"
#include "internal/util.h"
#include "lb.h"
#include "backend.h"
#include "wheel.h"

typedef struct cgnet__listener {
  cgnet__io io;
  size_t index; /* which address of the engine */
  cgnet_loop *loop;
  cgnet__tnode retry; /* out of descriptors: listening again when it fires */
  bool paused;        /* not accepting until retry fires */
  /* Completion backend, out of descriptors: an accept operation would fail at once, with
   * or without a pending connection (the kernel takes the descriptor first), so the
   * listener is watched for readiness and accepted from as with epoll until accept4
   * succeeds again. */
  bool fd_starved;
  /* A Unix listener's socket file as created by our bind (unix_file 0: none, e.g.
   * abstract): removed at close only if the path still names this very file. */
  int unix_file;
  dev_t unix_dev;
  ino_t unix_ino;
} cgnet__listener;

struct cgnet_timer {
  cgnet__tnode node;
  cgnet_loop *loop;
  cgnet_conn *conn;      /* NULL for a loop timer */
  cgnet__list conn_link; /* in conn->timers, or loop->timers for a loop timer */
  cgnet_timer_fn fn;
  void *ud;
  uint64_t repeat_ms;
  bool firing;          /* its callback is running */
  bool free_after_fire; /* freed (or orphaned by its conn) during the callback */
};

/* A unit of work handed to a loop from another thread. `run` executes on the loop
 * thread and owns the task (frees it); `drop` frees it without running when the loop is
 * gone (engine teardown). */
typedef struct cgnet__task cgnet__task;
struct cgnet__task {
  cgnet__mpsc_node node;
  void (*run)(cgnet_loop *loop, cgnet__task *t);
  void (*drop)(cgnet__task *t);
};

#define CGNET__MAX_IOV 64 /* iovecs gathered per write */
/* Flush timeout of a graceful stop asked for by a callback's SHUTDOWN action. */
#define CGNET__ACTION_STOP_TIMEOUT_MS 1000

typedef struct cgnet__conn_names {
  struct sockaddr_storage local;
  socklen_t local_len;                  /* 0: not fetched yet */
  char remote_str[112], local_str[112]; /* room for a Unix path (sun_path is 108) */
} cgnet__conn_names;

/*
 * A conn's life (docs/design.md, "The conn's life as a state machine"):
 *
 *   NEW --enter--> CONNECTING --connected--> OPEN --close--> CLOSED
 *    |                  |                      (handshake)     ^
 *    +------ close -----+--------------------------------------+
 *
 * Until OPEN, writes queue, wake-ups wait for on_open and the only timeout is a dial's
 * connect deadline. A close request (close_reason) is not a state: the conn stays OPEN
 * until the callback that asked for it returns.
 *
 * A TLS conn is OPEN once its socket is connected (it reads and sends the handshake
 * through the ordinary paths), with CGNET__CF_HANDSHAKE set until the handshake is done:
 * on_open runs then. Meanwhile writes wait in the session, wake-ups wait for on_open,
 * and the only timeout is the handshake's. A server conn whose handshake fails closes
 * without on_open nor on_close (on_tls_error tells of it); a client's fails its dial.
 */
typedef enum cgnet__conn_state {
  /* Built (cgnet__conn_new) but not among its loop's conns: a dialed or enrolled conn
   * whose enter task has not run yet. Closable on its loop all the same. */
  CGNET__CONN_NEW = 0,
  /* Among its loop's conns, not connected yet: resolving, connect() in progress, or
   * about to be given its socket (cgnet__conn_attach). */
  CGNET__CONN_CONNECTING,
  CGNET__CONN_OPEN,   /* connected; on_open ran or is running */
  CGNET__CONN_CLOSED, /* fd closed, on_close done; memory not yet freed */
} cgnet__conn_state;

/* What a conn is. Bit 0: a client's (dialed or enrolled); bit 1: a datagram conn; bit 2:
 * a session (one remote peer of a server's UDP socket, which it shares). */
typedef enum cgnet__conn_kind {
  CGNET__SERVER_STREAM = 0,   /* accepted from a listener */
  CGNET__CLIENT_STREAM = 1,   /* a client's TCP or Unix stream conn */
  CGNET__SERVER_DGRAM = 2,    /* a UDP socket's per-datagram conn (udp.c) */
  CGNET__CONNECTED_DGRAM = 3, /* a client's connected UDP socket (udp.c) */
  CGNET__SESSION_DGRAM = 6,   /* a UDP socket's conn for one remote peer (udp_session.c) */
} cgnet__conn_kind;

/* The conn's conditions besides its state, one bit each in cgnet_conn.flags. */
enum {
  CGNET__CF_PAUSED = 1u << 0,    /* cgnet_conn_pause_read */
  CGNET__CF_OVER_HIGH = 1u << 1, /* queued output crossed the high watermark */
  /* Reading pauses while OVER_HIGH (options.read_backpressure); set once, at init. */
  CGNET__CF_READ_BACKPRESSURE = 1u << 2,
  CGNET__CF_READ_CLOSED = 1u << 3,     /* half-open: the peer's FIN arrived */
  CGNET__CF_SHUT_WR_PENDING = 1u << 4, /* shutdown_write asked: FIN once output drains */
  CGNET__CF_SHUT_WR_DONE = 1u << 5,    /* that FIN went out */
  CGNET__CF_DRAINING = 1u << 6,        /* engine stopping: close once output is flushed */
  /* Buffered bytes still wait to be decoded (decoding stopped by a pause, or the codec
   * changed): the next continue_read hands them over before reading more. */
  CGNET__CF_REDELIVER = 1u << 7,
  CGNET__CF_WAKE_ON_OPEN = 1u << 8, /* cgnet_conn_wake while connecting */
  /* Its I/O runs through a completion backend's operations (a stream conn on
   * io_uring), not through readiness and sys calls. */
  CGNET__CF_COMPLETION = 1u << 9,
  /* Completion backend: the peer's FIN arrived while reading was off; it is acted on
   * once the bytes before it have been delivered. */
  CGNET__CF_FIN_PENDING = 1u << 10,
  /* Closed with a send in flight on a completion backend and output to flush: the
   * socket stays open until that send completes (then the rest is sent, as epoll's
   * close does, and the socket is released) or CGNET__LINGER_MS pass. */
  CGNET__CF_LINGER = 1u << 11,
  CGNET__CF_EDGE = 1u << 12, /* options.edge_triggered (set once, at init) */
  CGNET__CF_TLS = 1u << 13,  /* a TLS conn (set once; `tls` is freed at close) */
  /* OPEN at the socket level, TLS handshake in progress: not open to the user yet
   * (no on_open, no on_traffic; writes wait in the session). */
  CGNET__CF_HANDSHAKE = 1u << 14,
  /* Server: the handshake has been fed its first bytes (counted in the turn's budget). */
  CGNET__CF_TLS_STARTED = 1u << 15,
};
#define CGNET__LINGER_MS 1000

/* Datagrams a connected datagram conn was asked to send before its connect (udp.c). */
typedef struct cgnet__dgram_list {
  struct cgnet__pending_dgram *head, *tail;
  size_t bytes;
} cgnet__dgram_list;

struct cgnet_conn {
  cgnet__io io;  /* must stay first */
  uint8_t state; /* cgnet__conn_state */
  /* cgnet__conn_kind, fixed before the conn is published: calls from any thread read it
   * (a different byte from `state`, which only the loop thread touches). */
  uint8_t kind;
  uint32_t flags; /* CGNET__CF_* */
  cgnet_loop *loop;
  void *ctx;
  /* Whose conn this is: the engine's handler and options for a server kind, the
   * client's for a client kind. */
  const cgnet_handler *h;
  const cgnet_options *o;
  size_t ring_max;       /* write_buffer_cap of those options, as a power of two */
  cgnet__list node;      /* in loop->conns, or loop->graveyard once closed */
  cgnet__list out_node;  /* in loop->pending_out while output waits for the flush */
  cgnet__list read_node; /* edge mode: in loop->pending_read when its budget ran out */
  uint32_t interest;     /* what the backend watches now */
  size_t read_max; /* bytes one read may take with nothing queued (read_room in stream.c) */
  int close_reason; /* non-zero: close requested with this reason */
  int in_callback;  /* > 0 while a user callback for this conn runs */
  atomic_bool gone; /* state is CLOSED, readable from any thread */
  atomic_uint refs; /* 1 for the loop until the conn is swept, + user references */

  /* Client kinds only (zero for the others). */
  struct {
    cgnet_client *owner;
    void *dial_waiter;            /* cgnet_client_dial_wait's rendezvous, until signalled */
    uint64_t connect_deadline_ms; /* 0: none */
    /* A connected datagram conn: one read is one datagram (the unread rest is dropped),
     * one write is one datagram sent at once. Writes made before the connect (a name
     * still resolving) wait here. */
    cgnet__dgram_list pending;
  } client;

  /* Timeouts: one wheel node, armed at the earliest deadline; reads and writes only
   * stamp times, and the node re-arms itself lazily when it fires early. */
  cgnet__tnode timeout_node;
  uint64_t last_read_ms, last_write_ms;
  uint64_t idle_to_ms, read_to_ms, write_to_ms;
  cgnet__list timers; /* the conn's user timers */

  /* The bytes the user sees: in_callback, either a slice of the loop's read buffer
   * (view_is_rbuf) or the conn's own inbound buffer. view_pos counts consumed bytes;
   * it is settled when the callback returns. These two are the view's, not the conn's
   * life: plain bytes that the read path stores on every read, with no
   * read-modify-write of `flags`. */
  const uint8_t *view;
  size_t view_len, view_pos;
  bool view_set, view_is_rbuf;

  cgnet__buf in;
  cgnet__outbuf out;
  /* A completion backend's received bytes not taken yet: a receive delivers whole
   * buffers, and what arrives while the conn does not read, or beyond the read room,
   * waits here to be taken as epoll's read would take it (stream.c, pump_stash). */
  cgnet__buf stash;

  /* Framing (stream.c's deliver_frames): the conn's codec and the decoder's memo for the
   * pending input (cgnet_frame.hint). */
  const cgnet_codec *codec;
  size_t codec_hint;

  struct sockaddr_storage remote;
  socklen_t remote_len;
  /* The local address and both addresses as text, made on the first call that asks for
   * them: most conns never do, and every byte of a conn counts when 10,000 are open. */
  struct cgnet__conn_names *names;

  /* TLS conns only (tls_conn.c): the session (NULL for a plain conn, and once closed),
   * the plaintext it holds not yet encrypted (counted with `out` by the watermarks and
   * the limit; 0 for a plain conn, so that sum needs no branch), and the handshake's
   * deadline. */
  struct cgnet__tls *tls;
  size_t tls_plain;
  uint64_t tls_deadline_ms;
};

static inline bool cgnet__conn_has(const cgnet_conn *c, uint32_t any_of) {
  return (c->flags & any_of) != 0;
}
static inline void cgnet__conn_set(cgnet_conn *c, uint32_t f) {
  c->flags |= f;
}
static inline void cgnet__conn_clear(cgnet_conn *c, uint32_t f) {
  c->flags &= ~f;
}

/* Output queued: ciphertext or plain bytes in `out`, plus a TLS session's plaintext. */
static inline size_t cgnet__conn_queued(const cgnet_conn *c) {
  return cgnet__outbuf_len(&c->out) + c->tls_plain;
}

static inline bool cgnet__conn_closed(const cgnet_conn *c) {
  return c->state == CGNET__CONN_CLOSED;
}
/* Not connected yet (NEW or CONNECTING). */
static inline bool cgnet__conn_connecting(const cgnet_conn *c) {
  return c->state < CGNET__CONN_OPEN;
}
/* Closed, or a close requested. */
static inline bool cgnet__conn_closing(const cgnet_conn *c) {
  return c->state == CGNET__CONN_CLOSED || c->close_reason != 0;
}

static inline bool cgnet__conn_is_client(const cgnet_conn *c) {
  return (c->kind & 1) != 0;
}
static inline bool cgnet__conn_is_dgram(const cgnet_conn *c) {
  return (c->kind & 2) != 0;
}

/* Output over the high watermark holds reading back (with read backpressure on). */
static inline bool cgnet__conn_backpressured(const cgnet_conn *c) {
  const uint32_t both = CGNET__CF_OVER_HIGH | CGNET__CF_READ_BACKPRESSURE;
  return (c->flags & both) == both;
}
/* Reading is on unless the engine is draining the conn, output is over the high
 * watermark, the user paused it, or the peer has sent its FIN. */
static inline bool cgnet__conn_wants_read(const cgnet_conn *c) {
  return !cgnet__conn_has(c,
                          CGNET__CF_DRAINING | CGNET__CF_PAUSED | CGNET__CF_READ_CLOSED) &&
         !cgnet__conn_backpressured(c);
}

struct cgnet_loop {
  cgnet_engine *eng;
  int index;
  pthread_t thread;
  bool thread_started;
  cgnet__backend backend;
  cgnet__io wake;           /* the wake-up (an eventfd with epoll) */
  atomic_int wake_pending;  /* 1 while a wake-up signal has not been drained */
  _Atomic uint64_t wakeups; /* wake-up signals sent (cgnet_loop_stats) */
  _Atomic uint64_t tasks_run;
  /* The backend's counters (cgnet__backend_stats), published once per turn. */
  _Atomic uint64_t enters, completions, recv_nobufs, cq_overflows, stale, watches;
  cgnet__mpsc tasks;

  uint8_t *rbuf;
  size_t rbuf_cap;
  cgnet__bufpool pool;
  uint64_t pool_trim_ms; /* when the pool next frees what it has not lent out since */

  cgnet__list conns;
  cgnet__list graveyard;
  /* Closed conns swept while a completion backend still owes completions of their
   * operations (two-phase close): freed once io.ops is 0. */
  cgnet__list zombies;
  cgnet__list pending_out; /* conns with output or an interest change for the flush */
  cgnet__list pending_read;
  /* Set while the flush before the loop sleeps runs: level-triggered interest changes
   * are made then, and at once while it runs, so that a pause and a resume of reading,
   * or a write armed and disarmed, within one turn cost no epoll_ctl. */
  bool final_flush;
  cgnet__list timers; /* loop timers not yet freed by the user */
  atomic_size_t nconns;

  cgnet__listener **listeners; /* owned by this loop (loop 0, or each with reuse_port) */
  size_t nlisteners;
  int reserve_fd; /* spare descriptor released to shed a connection on EMFILE */

  struct cgnet__udp **udps; /* this loop's UDP sockets, one per udp address (udp.c) */
  size_t nudps;
  /* The loop's UDP sessions by (socket, remote address), made at the first session. */
  struct cgnet__session_table *sessions;
  cgnet__list pending_udp; /* UDP sockets with queued datagrams: flushed before sleep */

  /* The loop's clock, read after every epoll_wait: timeouts and new timers count from
   * it. The wheel's own `now` is the last tick it processed, which lags behind while
   * the turn's events are handled; it is only the base for re-arming inside a firing. */
  uint64_t now_ms;
  /* TLS conns: where a session decrypts (rbuf_cap bytes, made for the first TLS conn),
   * and the server handshakes started this turn (options.tls_handshakes_per_turn). */
  uint8_t *tls_scratch;
  int tls_handshakes;
  /* Server handshakes started since start, and the most started in one turn
   * (cgnet_loop_stats; only this thread writes them). */
  _Atomic uint64_t tls_started, tls_turn_max;
  cgnet__wheel wheel;
  cgnet__tnode tick_node; /* loop 0 with the ticker */
  bool stopping;
  uint64_t stop_deadline_ms;
};

enum cgnet__state { CGNET__RUNNING = 0, CGNET__STOPPING = 1 };

struct cgnet_engine {
  cgnet_handler h;
  cgnet_options o; /* normalized: every default filled in */
  size_t ring_max; /* write_buffer_cap rounded to a power of two */

  cgnet__addr *addrs;
  size_t naddrs;
  struct sockaddr_storage *bound; /* bound address per listener index */
  socklen_t *bound_len;

  cgnet_backend backend;                 /* what the loops run on (never AUTO) */
  const cgnet__backend_ops *backend_ops; /* ... and its implementation */
  cgnet_loop *loops;
  int nloops;
  cgnet__lb lb;

  atomic_int state;
  _Atomic uint64_t stop_timeout_ms;
  atomic_size_t nconns;
  _Atomic uint64_t rejected; /* closed at once because of max_connections */
  atomic_size_t nsessions;   /* open UDP sessions, bounded by max_udp_sessions */
  _Atomic uint64_t sessions_opened, sessions_refused;
  _Atomic uint64_t tls_failures; /* TLS handshakes that failed */
  atomic_int loops_alive;
  atomic_int err; /* first error that stopped the engine */

  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;   /* every loop exited, on_shutdown ran */
  bool joined; /* threads joined */
};

/* ---- engine.c ---- */
/* cgnet_engine_start, also with no address at all (a client's own loops). */
int cgnet__engine_start(const cgnet_handler *handler, const char *const *addrs,
                        size_t naddrs, const cgnet_options *opts, cgnet_engine **out);
/* The options with every default filled in, or CGNET_EINVAL. */
int cgnet__normalize_options(const cgnet_options *in, cgnet_options *o);
/* write_buffer_cap as the outbound ring's maximum size. */
size_t cgnet__ring_max(const cgnet_options *o);
/* Ask every loop to stop (any thread). The first call wins; err is recorded if non-zero. */
void cgnet__engine_request_stop(cgnet_engine *eng, uint64_t timeout_ms, int err);
/* Called by each loop thread as it exits; the last one runs on_shutdown. */
void cgnet__engine_loop_exited(cgnet_engine *eng);

/* ---- loop.c ---- */
int cgnet__loop_init(cgnet_loop *loop, cgnet_engine *eng, int index);
void cgnet__loop_destroy(cgnet_loop *loop);
int cgnet__loop_start(cgnet_loop *loop);
int cgnet__loop_add_listener(cgnet_loop *loop, size_t index, int fd);
void cgnet__loop_wake(cgnet_loop *loop);
void cgnet__loop_post(cgnet_loop *loop, cgnet__task *t);
/* Free the zombies whose operations have all completed. */
void cgnet__loop_reap_zombies(cgnet_loop *loop);
/* Apply fn to every open conn of the loop; fn may close any of them. Loop thread. */
void cgnet__loop_for_each_conn(cgnet_loop *loop, void (*fn)(cgnet_conn *c, void *ud),
                               void *ud);
/* The loop this thread runs (NULL off the loops). initial-exec: read with one
 * thread-pointer load on every loop-only call, with no __tls_get_addr in libcgnet.so. */
extern _Thread_local cgnet_loop *cgnet__tls_loop __attribute__((tls_model("initial-exec")));

/* ---- conn.c (a conn's life) ---- */
/* Adopt an accepted socket on this loop: register it and call on_open (tls: first the
 * TLS handshake, over the engine's server context). */
void cgnet__conn_open(cgnet_loop *loop, int fd, const struct sockaddr *sa, socklen_t len,
                      bool tls);
/* The conn is open to the user: on_open and what waited for it (a TLS conn's handshake
 * is done). */
void cgnet__conn_open_for_user(cgnet_conn *c);
/* Set every field of a zeroed conn for `loop`, with no socket (fd -1). Any thread. */
void cgnet__conn_init(cgnet_conn *c, cgnet_loop *loop, const cgnet_handler *h,
                      const cgnet_options *o, size_t ring_max, cgnet_client *client,
                      unsigned refs);
/* A conn for `loop` with every field set but no socket yet (any thread; refs = 1 + extra
 * references for the caller), in state NEW. The caller counts it in loop->nconns. */
cgnet_conn *cgnet__conn_new(cgnet_loop *loop, const cgnet_handler *h,
                            const cgnet_options *o, size_t ring_max, cgnet_client *client,
                            unsigned extra_refs);
/* Loop thread: the conn made by cgnet__conn_new joins the loop's conns (closable,
 * timeouts armed) before it has a socket: NEW -> CONNECTING. */
void cgnet__conn_enter_loop(cgnet_conn *c);
/* Loop thread: give it its socket. connecting: connect() is in progress (on_open once it
 * completes); else the socket is connected and the conn opens (on_open) now. */
int cgnet__conn_attach(cgnet_conn *c, int fd, bool connecting);
/* A dial's connect() finished (the socket reported writable or an error): open or close. */
void cgnet__conn_finish_connect(cgnet_conn *c);
/* A completion backend's connect finished with err (0 or a negative errno). */
void cgnet__conn_connect_done(cgnet_conn *c, int err);
/* Arm the timeout node if a deadline now comes before it (new queued output, new
 * settings; reads and writes only push deadlines later). */
void cgnet__conn_arm_timeouts(cgnet_conn *c);
/* Close when it is safe: at once, or after the conn's running callback returns. */
void cgnet__conn_request_close(cgnet_conn *c, int reason);
/* Close now (not from inside one of this conn's callbacks). */
void cgnet__conn_close_now(cgnet_conn *c, int reason);
/* The loop drops its reference (end of the turn in which the conn closed), or, with
 * operations still in flight, moves the conn to the zombies. */
void cgnet__conn_free(cgnet_conn *c);
/* A zombie's last operation completed: free what the kernel held and drop the loop's
 * reference. */
void cgnet__conn_reap(cgnet_conn *c);
/* A lingering conn (CGNET__CF_LINGER): send what the socket takes now and release it. */
void cgnet__conn_end_linger(cgnet_conn *c);
/* Free what a conn owns besides itself (its names); for conns freed elsewhere. */
void cgnet__conn_release_names(cgnet_conn *c);
/* Engine stopping: close at once, or mark draining if output is queued; an open
 * WebSocket conn starts its close handshake instead (cgnet__ws_conn_stopping). */
void cgnet__conn_begin_stop(cgnet_conn *c);
/* ws_conn.c: if c is an open WebSocket conn, send its close frame (1001) and return
 * true: the conn stays open, reading, until its close handshake ends or the stop's
 * deadline closes it. False for any other conn. Loop thread. */
bool cgnet__ws_conn_stopping(cgnet_conn *c);

/* ---- stream.c (a conn's read and write paths) ---- */
void cgnet__conn_on_ready(cgnet_conn *c, uint32_t flags);

/* Edge mode: continue reading a conn whose per-wake-up budget ran out. */
void cgnet__conn_continue_read(cgnet_conn *c);
/* Write queued output; called before the loop sleeps for every conn in pending_out. */
void cgnet__conn_flush_pending(cgnet_conn *c);
/* Common tail of a conn callback (the caller incremented in_callback): settle the
 * inbound view, apply the action, carry out a requested close. */
void cgnet__conn_after_callback(cgnet_conn *c, cgnet_action a);
/* Edge mode, or reading resumed: read again on the loop's next turn. */
void cgnet__conn_schedule_read(cgnet_conn *c);
/* Run on_traffic for a wake-up with no new bytes. */
void cgnet__conn_wake_now(cgnet_conn *c);
/* Hand n freshly read bytes to the user (seen in place while nothing is buffered); a
 * TLS conn's go through its session first. */
void cgnet__conn_deliver(cgnet_conn *c, const uint8_t *data, size_t n);
/* The same, for bytes that are the user's already (a TLS session's plaintext). */
void cgnet__conn_deliver_plain(cgnet_conn *c, const uint8_t *data, size_t n);
/* Queued output grew from `before` bytes: watermarks, write timeout, the flush. */
void cgnet__conn_queue_grew(cgnet_conn *c, size_t before);
/* Level mode: make the backend watch what the conn wants now (reading, writing). */
void cgnet__conn_update_interest(cgnet_conn *c);
/* Send what the conn's own callbacks queued, unless a callback of it still runs. */
void cgnet__conn_flush_own_output(cgnet_conn *c);
/* Send queued output now, until it is gone or the socket is full (no operation is left
 * in flight). 0, or the socket error. */
int cgnet__conn_write_out_now(cgnet_conn *c);
/* Fold what the user consumed of the inbound view back into the buffers. */
void cgnet__conn_settle_view(cgnet_conn *c);
/* The peer's FIN: close, or with allow_half_open stop reading and tell the user. */
void cgnet__conn_peer_fin(cgnet_conn *c);
/* How many bytes one read may take now (read backpressure). */
size_t cgnet__conn_read_room(const cgnet_conn *c);

/* ---- completion.c (a stream conn's I/O on a completion backend) ---- */
/* Run the multishot receive exactly while the conn wants to read; while it does not,
 * watch for errors and hang-ups. */
void cgnet__conn_update_receive(cgnet_conn *c);
/* Send the front of the queue unless a send is in flight. 0 or an error. */
int cgnet__conn_submit_send(cgnet_conn *c);
/* Reading resumes: stashed bytes first, a FIN behind them, the receive restarted. */
void cgnet__conn_continue_receive(cgnet_conn *c);
/* A completion backend's result for a stream conn's operation (receive, send, connect). */
void cgnet__conn_on_completion(cgnet_conn *c, const cgnet__result *r);

/* Output waits for the flush before the loop sleeps (or the conn's own, sooner). */
static inline void cgnet__conn_schedule_flush(cgnet_conn *c) {
  if (!cgnet__list_linked(&c->out_node))
    cgnet__list_insert_tail(&c->loop->pending_out, &c->out_node);
}

/* ---- tls_conn.c (TLS as a conn's transport) ---- */
/* Give a conn a TLS session over ctx (client: verifying server_name). 0 or an error. */
int cgnet__tls_conn_attach(cgnet_conn *c, cgnet_tls_ctx *ctx, const char *server_name);
/* The socket is connected: start the handshake (a client sends its hello). */
void cgnet__tls_conn_begin(cgnet_conn *c);
/* Ciphertext received: decrypt and deliver the plaintext, drive the handshake. */
void cgnet__tls_conn_input(cgnet_conn *c, const uint8_t *data, size_t n);
/* Reading resumes: plaintext and ciphertext the session still holds go first. */
void cgnet__tls_conn_drain(cgnet_conn *c);
/* Plaintext writes into the session (counted in tls_plain). 0 or an error. */
int cgnet__tls_conn_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt);
/* Before queued output is sent: encrypt what the session buffered (and the close_notify
 * a pending shutdown_write asks for). */
void cgnet__tls_conn_flush(cgnet_conn *c);
/* The peer's TCP FIN: true if that ends the conn as a truncation (handled here). */
bool cgnet__tls_conn_transport_eof(cgnet_conn *c);
/* The conn is closing with reason: send close_notify if graceful, or account for a
 * failed handshake. Returns true when on_close must not run (a server conn that never
 * opened). */
bool cgnet__tls_conn_closing(cgnet_conn *c, int reason);
/* After on_close: free the session. */
void cgnet__tls_conn_free(cgnet_conn *c);
/* Bytes the conn's session holds in buffers (cgnet__tls_held; 0 on a plain conn): 0
 * once a TLS conn is idle. For tests. Loop thread. */
size_t cgnet__tls_conn_held(const cgnet_conn *c);
/* Engine start: every tls:// address needs a server context. 0 or CGNET_EINVAL. */
int cgnet__tls_check_engine(cgnet_engine *eng);
/* A client conn's context: the given one (must be a client's), or a default one made
 * once in *fallback. */
int cgnet__tls_client_ctx(cgnet_tls_ctx *given, cgnet_tls_ctx **fallback,
                          pthread_mutex_t *mu, cgnet_tls_ctx **out);

/* ---- client.c ---- */
/* A client conn opened (on_open ran) or closed; on the conn's loop. */
void cgnet__client_conn_opened(cgnet_conn *c);
void cgnet__client_conn_closed(cgnet_conn *c, int reason);

/* Calls that act on a socket of the conn's own (pause, shutdown, linger, writev, codecs)
 * return CGNET_EUNSUPPORTED on a server's per-datagram conn and on a UDP session, which
 * share their socket with every other peer of it. */
#define CGNET__STREAM_ONLY(c)                                                              \
  do {                                                                                     \
    if (cgnet__unlikely((c)->kind == CGNET__SERVER_DGRAM ||                                \
                        (c)->kind == CGNET__SESSION_DGRAM))                                \
      return CGNET_EUNSUPPORTED;                                                           \
  } while (0)

/* Calls that make sense on any conn with one peer (close, timeouts, the async calls)
 * return CGNET_EUNSUPPORTED on a server's per-datagram conn only. */
#define CGNET__ONE_PEER_ONLY(c)                                                            \
  do {                                                                                     \
    if (cgnet__unlikely((c)->kind == CGNET__SERVER_DGRAM)) return CGNET_EUNSUPPORTED;      \
  } while (0)

/* Calls documented "loop thread" check it, so that a call from another thread (or from
 * another loop's thread) is an error instead of a race on the conn's state. */
#define CGNET__LOOP_ONLY(c)                                                                \
  do {                                                                                     \
    if (cgnet__unlikely(cgnet__tls_loop != (c)->loop)) return CGNET_EWRONGTHREAD;          \
  } while (0)

/* ---- udp.c ---- */
typedef struct cgnet__udp cgnet__udp;
/* A bound, non-blocking UDP socket for `a` (SO_REUSEPORT with several loops, multicast
 * group joined), or a negative error. */
int cgnet__udp_open(const cgnet__addr *a, const cgnet_options *o, int reuse_port);
/* Adopt a UDP socket for address `index` (before the loop thread starts). */
int cgnet__loop_add_udp(cgnet_loop *loop, size_t index, int fd);
void cgnet__udp_on_ready(cgnet__udp *u, uint32_t flags);
/* Queue one datagram to `to` (a server socket's: a client's connected udp:// conn sends
 * at once, cgnet__dgram_conn_send) for the next sendmmsg. 0, CGNET_EINVAL, CGNET_EMSGSIZE,
 * CGNET_EAFNOSUPPORT, CGNET_ENOBUFS (over write_buffer_limit), or CGNET_ENOMEM. */
int cgnet__dgram_queue(cgnet__udp *u, const struct sockaddr *to, socklen_t tolen,
                       const void *data, size_t len);
/* Send what is queued (sendmmsg); EAGAIN keeps the rest and arms write interest. */
void cgnet__udp_flush(cgnet__udp *u);
/* Before the loop sleeps: flush every socket in loop->pending_udp. */
void cgnet__loop_flush_udp(cgnet_loop *loop);
/* Engine stopping: stop receiving (the sockets stay open for cgnet_engine_send_to until
 * the engine is freed). */
void cgnet__loop_stop_udp(cgnet_loop *loop);
/* Engine teardown: close and free the loop's UDP sockets. */
void cgnet__loop_free_udp(cgnet_loop *loop);
/* The datagram conns' operations (conn.c and stream.c dispatch to them). */
/* One datagram to the peer: queued for a server's datagram conn, sent now (or kept until
 * the connect) for a connected one. */
int cgnet__dgram_conn_write(cgnet_conn *c, const void *data, size_t len);
/* A server's datagram conn: send what its socket has queued. */
int cgnet__dgram_conn_flush(cgnet_conn *c);
/* A connected datagram conn: read datagrams (edge or level, within the read budget). */
void cgnet__dgram_conn_read(cgnet_conn *c);
/* A connected datagram conn: send one datagram gathered from iov now; before the connect
 * completes, keep a copy (CGNET_ENOBUFS past write_buffer_limit). */
int cgnet__dgram_conn_send(cgnet_conn *c, const struct iovec *iov, int iovcnt);
/* A connected datagram conn: the connect completed, send what was kept, in order. */
void cgnet__dgram_conn_send_pending(cgnet_conn *c);
/* A connected datagram conn closing: drop what was kept. */
void cgnet__dgram_conn_free_pending(cgnet_conn *c);

/* ---- udp_session.c (a conn per remote peer of a server's UDP socket) ---- */
typedef struct cgnet__session_table cgnet__session_table;
/* The socket's datagram from `from` goes to its peer's session, opened now if it has
 * none (on_open). False when the datagram was not delivered: the session limit was
 * reached (counted), on_open closed it, or out of memory. Loop thread. */
bool cgnet__session_deliver(cgnet__udp *u, const uint8_t *data, size_t len,
                            const struct sockaddr_storage *from, socklen_t fromlen,
                            cgnet_action *action);
/* A session closing: it leaves its loop's table (a later datagram from its peer opens a
 * new one) and stops counting against the limit. Loop thread. */
void cgnet__session_closed(cgnet_conn *c);
/* One datagram from a session to its peer, through its socket's send queue. */
int cgnet__session_write(cgnet_conn *c, const void *data, size_t len);
/* One datagram gathered from iov, the same way. */
int cgnet__session_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt);
/* Send what the session's socket has queued (its own datagrams and its other peers'). */
int cgnet__session_flush(cgnet_conn *c);
/* The descriptor of the socket a session shares, or -1 once it has closed. */
int cgnet__session_fd(const cgnet_conn *c);
/* Engine teardown: free the loop's table (every session has closed by then). */
void cgnet__loop_free_sessions(cgnet_loop *loop);
/* udp.c's side, for the sessions: the socket's loop and descriptor. */
cgnet_loop *cgnet__udp_loop(const cgnet__udp *u);
int cgnet__udp_fd(const cgnet__udp *u);

/* ---- unix.c ---- */
/* A bound, listening Unix socket for `a`, replacing a stale socket file; dev and ino get
 * the identity of the file (file = 0 for an abstract name). A negative error. */
int cgnet__unix_listen(const cgnet__addr *a, const cgnet_options *o, int *file, dev_t *dev,
                       ino_t *ino);
/* Remove the socket file of a closed Unix listener if it is still ours. */
void cgnet__unix_unlink(const cgnet__addr *a, dev_t dev, ino_t ino);

/* ---- timer.c (user timers) ---- */
/* Stop and free the timers of a closing conn. */
void cgnet__conn_free_timers(cgnet_conn *c);
/* Free the loop timers the user left (engine teardown). */
void cgnet__loop_free_timers(cgnet_loop *loop);

/* ---- socket.c ---- */
int cgnet__listen(const cgnet__addr *a, const cgnet_options *o, int reuse_port);
void cgnet__apply_conn_options(int fd, int family, const cgnet_options *o);
int cgnet__bind_to_device(int fd, const cgnet_options *o);
int cgnet__set_nodelay(int fd, int on);
int cgnet__set_keepalive(int fd, int idle_s, int interval_s, int count);
int cgnet__set_linger(int fd, int seconds);
int cgnet__set_bufsize(int fd, int optname, int bytes);
/* SO_RCVBUF / SO_SNDBUF from the options on a datagram socket. 0 or the error. */
int cgnet__set_dgram_buffers(int fd, const cgnet_options *o);

/* ---- log.c ---- */
void cgnet__log(const cgnet_engine *eng, cgnet_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- time ---- */
uint64_t cgnet__now_ms(void);

#endif
