/*
 * The client: outbound conns (dialed or enrolled) on event loops, either the client's
 * own (an internal engine with no listener) or a running engine's.
 *
 * A dial never blocks a loop. cgnet_client_dial builds the conn on the caller's thread
 * (so the caller can hold a reference and post async calls at once) and posts an "enter"
 * task to the chosen loop, which puts the conn among the loop's conns (closable, its
 * connect deadline armed) and, for a numeric address, starts the non-blocking connect.
 * A host name is resolved on the client's resolver pool, which then posts a "connect"
 * task with the result. The connect completes when the socket reports writable; the
 * conn then opens (on_open) like an accepted one. Every failure ends in on_close with
 * the reason, with no on_open before it.
 *
 * Tasks run in the order they were posted to a loop, and the enter task is posted before
 * cgnet_client_dial returns, so async calls the caller makes on the conn find it
 * entered (they queue writes and defer wakes until the connect completes; see stream.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cgnet_tls.h"
#include "core.h"
#include "tls.h"

#define RESOLVER_THREADS 4
#define RESOLVER_IDLE_MS 2000

struct cgnet_client {
  cgnet_engine *eng;
  bool own_engine; /* cgnet_client_new: eng is ours */
  /* What the client's conns run with (the engine's copies for an own engine). */
  cgnet_handler h;
  cgnet_options o;
  const cgnet_handler *conn_h;
  const cgnet_options *conn_o;
  size_t ring_max;

  atomic_size_t nconns;
  /* The user's reference (until cgnet_client_free) + one per conn not yet closed: a conn
   * whose task is dropped at engine teardown still reports to a live client. */
  atomic_uint refs;
  atomic_uint next_loop; /* round-robin cursor for dials from outside the loops */
  atomic_bool closing;

  pthread_mutex_t mu; /* guards the resolver's and default_tls' creation; nconns
                        reaching 0 signals cv */
  pthread_cond_t cv;
  cgnet_pool *resolver; /* created on the first dial that needs a name resolved */
  /* The client context of tls:// dials when the options give none: made on the first
   * such dial, kept until the client is freed. */
  cgnet_tls_ctx *default_tls;
  bool holds_tls; /* cl->o.tls is held by the client (cgnet_client_new_on) */
};

/* cgnet_client_dial_wait's rendezvous: signalled once, by the conn's loop. */
typedef struct dial_waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  int status;
} dial_waiter;

/* ---- hooks from conn.c -----------------------------------------------------------------
 */

static void signal_waiter(cgnet_conn *c, int status) {
  dial_waiter *w = c->client.dial_waiter;
  if (!w) return;
  c->client.dial_waiter = NULL;
  pthread_mutex_lock(&w->mu);
  w->done = true;
  w->status = status;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

void cgnet__client_conn_opened(cgnet_conn *c) {
  signal_waiter(c, 0);
}

static void free_client(cgnet_client *cl);

static void unref_client(cgnet_client *cl) {
  if (atomic_fetch_sub_explicit(&cl->refs, 1, memory_order_acq_rel) == 1) free_client(cl);
}

void cgnet__client_conn_closed(cgnet_conn *c, int reason) {
  cgnet_client *cl = c->client.owner;
  signal_waiter(c, reason);
  if (atomic_fetch_sub_explicit(&cl->nconns, 1, memory_order_acq_rel) == 1) {
    pthread_mutex_lock(&cl->mu);
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
  }
  unref_client(cl);
}

/* ---- creating ------------------------------------------------------------------------ */

static cgnet_client *alloc_client(void) {
  cgnet_client *cl = calloc(1, sizeof *cl);
  if (!cl) return NULL;
  atomic_init(&cl->nconns, 0);
  atomic_init(&cl->refs, 1);
  atomic_init(&cl->next_loop, 0);
  atomic_init(&cl->closing, false);
  pthread_mutex_init(&cl->mu, NULL);
  pthread_cond_init(&cl->cv, NULL);
  return cl;
}

static void free_client(cgnet_client *cl) {
  cgnet_tls_ctx_free(cl->default_tls);
  if (cl->holds_tls) cgnet_tls_ctx_free(cl->o.tls);
  pthread_mutex_destroy(&cl->mu);
  pthread_cond_destroy(&cl->cv);
  free(cl);
}

int cgnet_client_new(const cgnet_handler *handler, const cgnet_options *opts,
                     cgnet_client **out) {
  if (!out) return CGNET_EINVAL;
  *out = NULL;
  if (!handler) return CGNET_EINVAL;
  cgnet_client *cl = alloc_client();
  if (!cl) return CGNET_ENOMEM;
  cgnet_engine *eng;
  int err = cgnet__engine_start(handler, NULL, 0, opts, &eng);
  if (!eng) {
    free_client(cl);
    return err;
  }
  if (err) { /* a loop thread failed to start: the others stop */
    cgnet_engine_free(eng);
    free_client(cl);
    return err;
  }
  cl->eng = eng;
  cl->own_engine = true;
  cl->conn_h = &eng->h;
  cl->conn_o = &eng->o;
  cl->ring_max = eng->ring_max;
  *out = cl;
  return 0;
}

int cgnet_client_new_on(cgnet_engine *eng, const cgnet_handler *handler,
                        const cgnet_options *opts, cgnet_client **out) {
  if (!out) return CGNET_EINVAL;
  *out = NULL;
  if (!eng || !handler) return CGNET_EINVAL;
  cgnet_client *cl = alloc_client();
  if (!cl) return CGNET_ENOMEM;
  int err = 0;
  if (opts) {
    err = cgnet__normalize_options(opts, &cl->o);
  } else {
    cl->o = eng->o;
    cl->o.tls = NULL; /* the engine's is its listeners' server context */
  }
  if (err) {
    cl->o.tls = NULL;
    free_client(cl);
    return err;
  }
  if (cl->o.tls) {
    cgnet__tls_ctx_hold(cl->o.tls);
    cl->holds_tls = true;
  }
  cl->h = *handler;
  cl->eng = eng;
  cl->conn_h = &cl->h;
  cl->conn_o = &cl->o;
  cl->ring_max = cgnet__ring_max(&cl->o);
  *out = cl;
  return 0;
}

/* ---- choosing a loop ----------------------------------------------------------------- */

static cgnet_loop *least_loaded(cgnet_engine *eng) {
  int best = 0;
  size_t best_n = SIZE_MAX;
  for (int i = 0; i < eng->nloops; i++) {
    size_t n = atomic_load_explicit(&eng->loops[i].nconns, memory_order_relaxed);
    if (n < best_n) {
      best_n = n;
      best = i;
    }
  }
  return &eng->loops[best];
}

/* A dial from one of the engine's loops stays on that loop (a proxy's two sides share a
 * thread); others go round-robin, or to the least loaded loop with CGNET_LB_LEAST_CONN. */
static cgnet_loop *pick_loop(cgnet_client *cl) {
  cgnet_engine *eng = cl->eng;
  if (cgnet__tls_loop && cgnet__tls_loop->eng == eng) return cgnet__tls_loop;
  if (eng->nloops == 1) return &eng->loops[0];
  if (cl->conn_o->lb == CGNET_LB_LEAST_CONN) return least_loaded(eng);
  unsigned i = atomic_fetch_add_explicit(&cl->next_loop, 1, memory_order_relaxed);
  return &eng->loops[i % (unsigned)eng->nloops];
}

static bool accepting_work(const cgnet_client *cl) {
  return !atomic_load_explicit(&cl->closing, memory_order_acquire) &&
         atomic_load_explicit(&cl->eng->state, memory_order_acquire) == CGNET__RUNNING;
}

static cgnet_conn *new_client_conn(cgnet_client *cl, void *ctx, unsigned extra_refs) {
  cgnet_conn *c =
      cgnet__conn_new(pick_loop(cl), cl->conn_h, cl->conn_o, cl->ring_max, cl, extra_refs);
  if (!c) return NULL;
  c->ctx = ctx; /* NEW (not connected) until its loop's task enters it */
  atomic_fetch_add_explicit(&c->loop->nconns, 1, memory_order_relaxed); /* least-conn */
  atomic_fetch_add_explicit(&cl->nconns, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&cl->refs, 1, memory_order_relaxed);
  return c;
}

/* Undo new_client_conn for a conn no loop has seen (out of memory on the way). */
static void discard_new_conn(cgnet_conn *c) {
  cgnet_client *cl = c->client.owner;
  atomic_fetch_sub_explicit(&c->loop->nconns, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&cl->nconns, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&cl->refs, 1, memory_order_relaxed); /* the caller holds one */
  if (c->tls) cgnet__tls_conn_free(c);
  free(c);
}

/* ---- connecting (loop thread) -------------------------------------------------------- */

/* A client conn on a datagram socket is a connected datagram conn. Only before the conn
 * is published: calls from any thread read the kind. */
static void set_client_kind(cgnet_conn *c, int socktype) {
  c->kind = socktype == SOCK_DGRAM ? CGNET__CONNECTED_DGRAM : CGNET__CLIENT_STREAM;
}

static void set_remote(cgnet_conn *c, const struct sockaddr_storage *sa, socklen_t len) {
  if (len > sizeof c->remote) len = sizeof c->remote;
  memcpy(&c->remote, sa, len);
  c->remote_len = len;
}

/*
 * Open a socket and start the non-blocking connect to `a`. TCP answers EINPROGRESS (the
 * loop then waits for writability); a Unix stream socket connects at once or fails
 * (EAGAIN: the listener's backlog is full, reported as is); a UDP socket "connects" at
 * once (it only fixes the peer), and the conn is a connected datagram conn (its kind,
 * fixed by the dial from the same scheme).
 */
static void start_connect(cgnet_conn *c, const cgnet__addr *a) {
  set_remote(c, &a->sa, a->salen);
  int family = a->sa.ss_family;
  int fd = socket(family, a->socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    cgnet__conn_close_now(c, -errno);
    return;
  }
  if (c->kind == CGNET__CONNECTED_DGRAM)
    (void)cgnet__set_dgram_buffers(fd, c->o); /* not fatal, as for stream options */
  else
    cgnet__apply_conn_options(fd, family, c->o);
  /* A completion backend connects a stream socket through its own operation. */
  int rc = cgnet__backend_completion(&c->loop->backend) && c->kind == CGNET__CLIENT_STREAM
               ? 1
               : cgnet__sys_connect(fd, (const struct sockaddr *)&a->sa, a->salen);
  if (rc < 0) {
    close(fd);
    cgnet__conn_close_now(c, rc);
    return;
  }
  int err = cgnet__conn_attach(c, fd, rc == 1);
  if (err) cgnet__conn_close_now(c, err);
}

typedef struct dial_task {
  cgnet__task t;
  cgnet_conn *c;
  int err;      /* connect task: the resolution failed with this */
  bool connect; /* enter task: also connect to addr */
  cgnet__addr addr;
} dial_task;

/*
 * A conn is closable from the moment cgnet_client_dial/enroll return it: code on its loop
 * may call cgnet_conn_close before the task that brings it onto the loop has run. Such a
 * conn is closed in full there and then (on_close, counts, the loop's reference dropped at
 * the turn's sweep), so that task must leave it alone: each such task holds a reference of
 * its own, and joins only a conn that is still open.
 */
static bool join_loop(cgnet_loop *loop, cgnet_conn *c) {
  if (cgnet__conn_closed(c)) return false;
  cgnet__conn_enter_loop(c);
  if (loop->stopping) {
    cgnet__conn_close_now(c, CGNET_ESHUTDOWN);
    return false;
  }
  return true;
}

/* The first task of a dialed conn: it joins the loop, then connects if it can. */
static void enter_run(cgnet_loop *loop, cgnet__task *t) {
  dial_task *d = (dial_task *)t;
  cgnet_conn *c = d->c;
  if (join_loop(loop, c) && d->connect) start_connect(c, &d->addr);
  cgnet_conn_unref(c); /* the task's reference */
  free(d);
}

/* The loop is gone (engine teardown; its thread has exited) and the conn never entered
 * it: unless it was closed on the loop already, it ends here. on_close still runs (every
 * dial that returned 0 ends in on_open or on_close), on the thread tearing the engine
 * down; the loop-only calls refuse to act from there (CGNET_EWRONGTHREAD). */
static void forget_unentered(cgnet_conn *c) {
  if (c->state == CGNET__CONN_NEW) { /* else CLOSED: ended on the loop already */
    atomic_fetch_sub_explicit(&c->loop->nconns, 1, memory_order_relaxed);
    atomic_store_explicit(&c->gone, true, memory_order_release);
    c->state = CGNET__CONN_CLOSED;
    c->close_reason = CGNET_ESHUTDOWN;
    if (c->h->on_close) {
      c->in_callback++;
      (void)c->h->on_close(c, CGNET_ESHUTDOWN); /* no loop left to act on an action */
      c->in_callback--;
    }
    cgnet__client_conn_closed(c, CGNET_ESHUTDOWN);
    cgnet__conn_free_timers(c);
    cgnet_conn_unref(c); /* the loop's reference */
  }
  cgnet_conn_unref(c); /* the task's reference */
}

static void enter_drop(cgnet__task *t) {
  dial_task *d = (dial_task *)t;
  forget_unentered(d->c);
  free(d);
}

/* After a name was resolved (or not): connect, unless the conn closed meanwhile. */
static void connect_run(cgnet_loop *loop, cgnet__task *t) {
  (void)loop;
  dial_task *d = (dial_task *)t;
  cgnet_conn *c = d->c;
  if (!cgnet__conn_closed(c)) {
    if (d->err)
      cgnet__conn_close_now(c, d->err);
    else
      start_connect(c, &d->addr);
  }
  cgnet_conn_unref(c); /* the resolver's reference */
  free(d);
}

static void connect_drop(cgnet__task *t) {
  dial_task *d = (dial_task *)t;
  cgnet_conn_unref(d->c);
  free(d);
}

static dial_task *new_dial_task(cgnet_conn *c, void (*run)(cgnet_loop *, cgnet__task *),
                                void (*drop)(cgnet__task *)) {
  dial_task *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->t.run = run;
  d->t.drop = drop;
  d->c = c;
  return d;
}

/* ---- resolving names (resolver pool) ------------------------------------------------- */

typedef struct resolve_job {
  cgnet_conn *c;
  char *addr;
} resolve_job;

static void post_connect(cgnet_conn *c, int err, const cgnet__addr *a) {
  dial_task *d = new_dial_task(c, connect_run, connect_drop);
  if (!d) {
    cgnet_conn_unref(c); /* the deadline (if any) or the client's close ends the conn */
    return;
  }
  d->err = err;
  if (a) d->addr = *a;
  cgnet__loop_post(c->loop, &d->t);
}

static void resolve_run(void *ud) {
  resolve_job *j = ud;
  cgnet__addr a;
  int err = cgnet_conn_is_closed(j->c) ? CGNET_ECANCELED : cgnet__addr_parse(j->addr, &a);
  post_connect(j->c, err, err ? NULL : &a);
  free(j->addr);
  free(j);
}

static void resolve_cancel(void *ud) {
  resolve_job *j = ud;
  post_connect(j->c, CGNET_ESHUTDOWN, NULL);
  free(j->addr);
  free(j);
}

static int ensure_resolver(cgnet_client *cl) {
  int err = 0;
  pthread_mutex_lock(&cl->mu);
  if (!cl->resolver) {
    cgnet_pool_options po = {.max_threads = RESOLVER_THREADS,
                             .idle_expiry_ms = RESOLVER_IDLE_MS};
    err = cgnet_pool_new(&po, &cl->resolver);
  }
  pthread_mutex_unlock(&cl->mu);
  return err;
}

static int submit_resolve(cgnet_client *cl, cgnet_conn *c, const char *addr) {
  int err = ensure_resolver(cl);
  if (err) return err;
  resolve_job *j = malloc(sizeof *j);
  char *copy = strdup(addr);
  if (!j || !copy) {
    free(j);
    free(copy);
    return CGNET_ENOMEM;
  }
  j->c = cgnet_conn_ref(c);
  j->addr = copy;
  err = cgnet_pool_submit_ex(cl->resolver, resolve_run, resolve_cancel, j);
  if (err) {
    cgnet_conn_unref(c);
    free(copy);
    free(j);
  }
  return err;
}

/*
 * Does the address name a host that needs a lookup? Numeric hosts (IPv4, bracketed
 * IPv6, empty) and Unix paths do not. For a name, *syntax gets the same address with an
 * empty host, so the scheme and port can be checked at once without a lookup.
 */
static bool needs_lookup(const char *addr, char *syntax, size_t cap) {
  const char *sep = strstr(addr, "://");
  if (!sep || strncmp(addr, "unix", 4) == 0) return false;
  const char *host = sep + 3;
  if (*host == '[') return false;
  const char *colon = strrchr(host, ':');
  if (!colon || colon == host) return false;
  bool numeric = true;
  for (const char *p = host; p < colon; p++)
    if (!((*p >= '0' && *p <= '9') || *p == '.')) numeric = false;
  if (numeric) return false;
  int n = snprintf(syntax, cap, "%.*s%s", (int)(host - addr), addr, colon);
  return n > 0 && (size_t)n < cap;
}

/* ---- dialing ------------------------------------------------------------------------- */

/* A tls:// dial's session, made here on the dialing thread (the conn reaches its loop
 * through the task queue, after this): the host as written in the address is sent as
 * SNI (a name) and checked against the server's certificate (a name or an address). */
static int attach_tls(cgnet_conn *c, const char *addr, cgnet_tls_ctx *tls) {
  char host[256];
  int err = cgnet__addr_host(addr, host, sizeof host);
  return err ? err : cgnet__tls_conn_attach(c, tls, host);
}

static int dial(cgnet_client *cl, const char *addr, uint64_t timeout_ms, void *ctx,
                cgnet_conn **out, dial_waiter *w) {
  if (out) *out = NULL;
  if (!cl || !addr) return CGNET_EINVAL;
  if (!accepting_work(cl)) return CGNET_ESHUTDOWN;

  char syntax[320];
  cgnet__addr a;
  bool lookup = needs_lookup(addr, syntax, sizeof syntax);
  int err = cgnet__addr_parse(lookup ? syntax : addr, &a);
  if (!err && a.sessions != CGNET_DEFAULT) err = CGNET_EBADOPTION; /* a server's option */
  if (err) return err;

  cgnet_tls_ctx *tls = NULL;
  if (a.tls &&
      (err = cgnet__tls_client_ctx(cl->conn_o->tls, &cl->default_tls, &cl->mu, &tls)))
    return err;

  cgnet_conn *c = new_client_conn(cl, ctx, out ? 1 : 0);
  dial_task *d = c ? new_dial_task(c, enter_run, enter_drop) : NULL;
  if (!d) {
    if (c) discard_new_conn(c);
    return CGNET_ENOMEM;
  }
  if (tls && (err = attach_tls(c, addr, tls))) {
    free(d);
    discard_new_conn(c);
    return err;
  }
  if (timeout_ms)
    c->client.connect_deadline_ms = cgnet__deadline(cgnet__now_ms(), timeout_ms);
  c->client.dial_waiter = w;
  /* Known from the scheme now (the syntax parse has it too): writes made while a name
   * resolves must stay separate datagrams, not one coalesced stream. The kind is fixed
   * before the conn is posted: the any-thread calls read it. */
  set_client_kind(c, a.socktype);
  d->connect = !lookup;
  d->addr = a;
  if (out) *out = c;
  /* From here the loop owns the conn: every outcome is reported through on_close. */
  cgnet_conn_ref(c); /* the enter task's */
  cgnet_conn_ref(c); /* held across the post, for submit_resolve below */
  cgnet__loop_post(c->loop, &d->t);
  if (lookup && submit_resolve(cl, c, addr) != 0)
    post_connect(cgnet_conn_ref(c), CGNET_ENOMEM, NULL);
  cgnet_conn_unref(c);
  return 0;
}

int cgnet_client_dial(cgnet_client *cl, const char *addr, uint64_t timeout_ms, void *ctx,
                      cgnet_conn **out) {
  return dial(cl, addr, timeout_ms, ctx, out, NULL);
}

int cgnet_client_dial_wait(cgnet_client *cl, const char *addr, uint64_t timeout_ms,
                           void *ctx, cgnet_conn **out) {
  if (out) *out = NULL;
  if (cgnet__tls_loop) return CGNET_EWRONGTHREAD;
  dial_waiter w = {.done = false, .status = 0};
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  cgnet_conn *c = NULL;
  int err = dial(cl, addr, timeout_ms, ctx, &c, &w);
  if (!err) {
    pthread_mutex_lock(&w.mu);
    while (!w.done)
      pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    err = w.status;
    if (!err && out)
      *out = c;
    else
      cgnet_conn_unref(c);
  }
  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cv);
  return err;
}

/* ---- enrolling ----------------------------------------------------------------------- */

typedef struct enroll_task {
  cgnet__task t;
  cgnet_conn *c;
  int fd;
} enroll_task;

static void enroll_run(cgnet_loop *loop, cgnet__task *t) {
  enroll_task *e = (enroll_task *)t;
  cgnet_conn *c = e->c;
  if (join_loop(loop, c)) { /* the conn owns the socket from here, even on error */
    int err = cgnet__conn_attach(c, e->fd, false);
    if (err) cgnet__conn_close_now(c, err);
  } else {
    close(e->fd);
  }
  cgnet_conn_unref(c); /* the task's reference */
  free(e);
}

static void enroll_drop(cgnet__task *t) {
  enroll_task *e = (enroll_task *)t;
  close(e->fd);
  forget_unentered(e->c);
  free(e);
}

/* A socket can be enrolled only once it has a peer: a stream socket that finished its
 * connect (not one still connecting, listening or never connected), a datagram socket
 * whose peer connect() fixed. */
static bool has_peer(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  return getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
}

int cgnet_client_enroll(cgnet_client *cl, int fd, void *ctx, cgnet_conn **out) {
  if (out) *out = NULL;
  if (fd < 0) return CGNET_EBADF;
  int type = 0;
  socklen_t tl = sizeof type;
  int err = 0;
  if (!cl)
    err = CGNET_EINVAL;
  else if (!accepting_work(cl))
    err = CGNET_ESHUTDOWN;
  else if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
    err = -errno;
  else if (type != SOCK_STREAM && type != SOCK_DGRAM)
    err = CGNET_EPROTONOSUPPORT;
  else if (!has_peer(fd))
    err = CGNET_ENOTCONN;
  else {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) err = -errno;
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  cgnet_conn *c = err ? NULL : new_client_conn(cl, ctx, out ? 1 : 0);
  enroll_task *e = c ? malloc(sizeof *e) : NULL;
  if (!e) {
    if (c) discard_new_conn(c);
    close(fd);
    return err ? err : CGNET_ENOMEM;
  }
  socklen_t len = sizeof c->remote;
  if (getpeername(fd, (struct sockaddr *)&c->remote, &len) == 0) c->remote_len = len;
  set_client_kind(c, type);
  e->t.run = enroll_run;
  e->t.drop = enroll_drop;
  e->c = c;
  e->fd = fd;
  if (out) *out = c;
  cgnet_conn_ref(c); /* the enroll task's */
  cgnet__loop_post(c->loop, &e->t);
  return 0;
}

/* ---- closing ------------------------------------------------------------------------- */

typedef struct close_task {
  cgnet__task t;
  cgnet_client *cl;
  bool force; /* close at once; else let queued output drain first */
} close_task;

static void close_one(cgnet_conn *c, void *ud) {
  close_task *ct = ud;
  if (c->client.owner != ct->cl || cgnet__conn_closed(c)) return;
  if (ct->force)
    cgnet__conn_close_now(c, CGNET_ESHUTDOWN);
  else
    cgnet__conn_begin_stop(c);
}

static void close_run(cgnet_loop *loop, cgnet__task *t) {
  cgnet__loop_for_each_conn(loop, close_one, t);
  free(t);
}

static void close_drop(cgnet__task *t) {
  free(t);
}

static void post_close_all(cgnet_client *cl, bool force) {
  for (int i = 0; i < cl->eng->nloops; i++) {
    close_task *ct = malloc(sizeof *ct);
    if (!ct) continue; /* that loop's conns close with the engine */
    ct->t.run = close_run;
    ct->t.drop = close_drop;
    ct->cl = cl;
    ct->force = force;
    cgnet__loop_post(&cl->eng->loops[i], &ct->t);
  }
}

static bool engine_done(cgnet_engine *eng) {
  pthread_mutex_lock(&eng->mu);
  bool done = eng->done;
  pthread_mutex_unlock(&eng->mu);
  return done;
}

/* Wait until the client has no conn, up to deadline_ms (UINT64_MAX: no bound), or until
 * the engine's loops have all exited (conns whose tasks were still queued then end when
 * the engine is freed; the client's references keep it alive for them). */
static bool wait_no_conns(cgnet_client *cl, uint64_t deadline_ms) {
  pthread_mutex_lock(&cl->mu);
  while (atomic_load_explicit(&cl->nconns, memory_order_acquire) != 0) {
    uint64_t now = cgnet__now_ms();
    if (deadline_ms != UINT64_MAX && now >= deadline_ms) break;
    if (engine_done(cl->eng)) break;
    uint64_t step = deadline_ms == UINT64_MAX ? 100 : deadline_ms - now;
    if (step > 100) step = 100;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(step * 1000000);
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
  }
  bool empty = atomic_load_explicit(&cl->nconns, memory_order_acquire) == 0;
  pthread_mutex_unlock(&cl->mu);
  return empty;
}

/* A client on an engine's loops: drain, then close, its conns only. */
static void close_attached_conns(cgnet_client *cl, uint64_t timeout_ms) {
  if (atomic_load_explicit(&cl->eng->state, memory_order_acquire) == CGNET__RUNNING) {
    post_close_all(cl, false);
    uint64_t deadline = cgnet__deadline(cgnet__now_ms(), timeout_ms);
    if (wait_no_conns(cl, deadline)) return;
    if (atomic_load_explicit(&cl->eng->state, memory_order_acquire) == CGNET__RUNNING)
      post_close_all(cl, true);
  }
  (void)wait_no_conns(cl, UINT64_MAX); /* a stopping engine closes them itself */
}

int cgnet_client_free(cgnet_client *cl, uint64_t timeout_ms) {
  if (!cl) return 0;
  if (cgnet__tls_loop && cgnet__tls_loop->eng == cl->eng) return CGNET_EWRONGTHREAD;
  atomic_store_explicit(&cl->closing, true, memory_order_release);
  /* Lookups still running finish first (their conns then close with CGNET_ESHUTDOWN),
   * so no resolver thread posts to a loop after it is gone. */
  if (cl->resolver) (void)cgnet_pool_release(cl->resolver, CGNET_POOL_CANCEL, UINT64_MAX);
  if (cl->own_engine) {
    (void)cgnet_engine_stop(cl->eng, timeout_ms);
    cgnet_engine_free(cl->eng);
  } else {
    close_attached_conns(cl, timeout_ms);
  }
  unref_client(cl);
  return 0;
}

/* ---- accessors ----------------------------------------------------------------------- */

size_t cgnet_client_count_connections(const cgnet_client *cl) {
  return atomic_load_explicit(&cl->nconns, memory_order_relaxed);
}

cgnet_engine *cgnet_client_engine(const cgnet_client *cl) {
  return cl->eng;
}

cgnet_client *cgnet_conn_client(const cgnet_conn *c) {
  return c->client.owner;
}
