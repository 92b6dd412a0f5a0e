/*
 * The engine: options, listeners, loop threads, and the stop/wait life cycle.
 *
 * Life cycle: start() validates options and parses every address before it touches the
 * system, then binds the listeners, builds the loops, calls on_boot on the caller's
 * thread and starts one thread per loop. A stop (an action or cgnet_engine_stop) flips
 * `state` once and wakes every loop; each loop closes its listeners, drains and closes its
 * conns and exits; the last one to exit runs on_shutdown and signals `done`. A stop asked
 * for in on_boot only flips `state`: the loops see it as they start, and exit at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "cgnet_tls.h"
#include "core.h"
#include "tls.h"

#define MAX_LOOPS 1024
#define DEFAULT_BACKLOG 1024
#define DEFAULT_READ_BUFFER (64 * 1024)
#define MIN_READ_BUFFER 512
#define MAX_READ_BUFFER (64 * 1024 * 1024)
#define DEFAULT_WRITE_BUFFER (64 * 1024)
#define MIN_WRITE_BUFFER 4096
#define MAX_WRITE_BUFFER ((size_t)1 << 30)
#define DEFAULT_READ_CHUNK_LIMIT (1024 * 1024)
#define DEFAULT_HIGH_WATERMARK (64 * 1024)
#define DEFAULT_WRITE_LIMIT (8 * 1024 * 1024)
#define DEFAULT_MAX_UDP_SESSIONS 65536
#define MAX_RECV_BUFFERS 32768
#define DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS 10000
#define DEFAULT_TLS_HANDSHAKES_PER_TURN 64
#define MIN_RECV_BUFFER_SIZE 512
#define MAX_RECV_BUFFER_SIZE (1024 * 1024)

/* ---- options ------------------------------------------------------------------------- */

static bool valid_toggle(cgnet_toggle t) {
  return t == CGNET_DEFAULT || t == CGNET_ON || t == CGNET_OFF;
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (n > MAX_LOOPS ? MAX_LOOPS : (int)n);
}

/* Copy the user's options with every default filled in, or CGNET_EINVAL. */
int cgnet__normalize_options(const cgnet_options *in, cgnet_options *o) {
  static const cgnet_options zero;
  *o = in ? *in : zero;
  if (o->num_loops < 0 || o->num_loops > MAX_LOOPS) return CGNET_EINVAL;
  if (o->num_loops == 0) o->num_loops = o->multicore ? online_cpus() : 1;
  if ((unsigned)o->lb > CGNET_LB_SOURCE_HASH) return CGNET_EINVAL;
  if (!valid_toggle(o->reuse_addr) || !valid_toggle(o->tcp_nodelay) ||
      !valid_toggle(o->read_backpressure))
    return CGNET_EINVAL;
  if (o->backlog < 0) return CGNET_EINVAL;
  if (o->backlog == 0) o->backlog = DEFAULT_BACKLOG;
  if (o->read_chunk_limit == 0) o->read_chunk_limit = DEFAULT_READ_CHUNK_LIMIT;
  if (o->read_buffer_cap == 0) o->read_buffer_cap = DEFAULT_READ_BUFFER;
  if (o->read_buffer_cap < MIN_READ_BUFFER || o->read_buffer_cap > MAX_READ_BUFFER)
    return CGNET_EINVAL;
  if (o->write_buffer_cap == 0) o->write_buffer_cap = DEFAULT_WRITE_BUFFER;
  if (o->write_buffer_cap < MIN_WRITE_BUFFER || o->write_buffer_cap > MAX_WRITE_BUFFER)
    return CGNET_EINVAL;
  if (o->tcp_keepalive < 0 || o->tcp_keepalive_interval < 0 || o->tcp_keepalive_count < 0)
    return CGNET_EINVAL;
  if (o->linger < CGNET_LINGER_RESET) return CGNET_EINVAL;
  if (o->socket_recv_buffer < 0 || o->socket_send_buffer < 0) return CGNET_EINVAL;
  if (o->write_high_watermark == 0) o->write_high_watermark = DEFAULT_HIGH_WATERMARK;
  if (o->write_low_watermark == 0)
    o->write_low_watermark = o->write_high_watermark == CGNET_UNLIMITED
                                 ? CGNET_UNLIMITED
                                 : o->write_high_watermark / 2;
  if (o->write_low_watermark > o->write_high_watermark) return CGNET_EINVAL;
  if (o->write_buffer_limit == 0) o->write_buffer_limit = DEFAULT_WRITE_LIMIT;
  if (o->max_udp_sessions == 0) o->max_udp_sessions = DEFAULT_MAX_UDP_SESSIONS;
  if ((unsigned)o->log_level > CGNET_LOG_OFF) return CGNET_EINVAL;
  if (o->log_level == CGNET_LOG_DEFAULT) o->log_level = CGNET_LOG_WARN;
  if ((unsigned)o->backend > CGNET_BACKEND_IO_URING) return CGNET_EINVAL;
  /* 0 leaves the receive buffers' count and size to the backend (src/backend/uring.c). */
  if (o->recv_buffers > MAX_RECV_BUFFERS || (o->recv_buffers & (o->recv_buffers - 1)))
    return CGNET_EINVAL;
  if (o->recv_buffer_size && (o->recv_buffer_size < MIN_RECV_BUFFER_SIZE ||
                              o->recv_buffer_size > MAX_RECV_BUFFER_SIZE))
    return CGNET_EINVAL;
  if (o->tls_handshake_timeout_ms == 0)
    o->tls_handshake_timeout_ms = DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS;
  if (o->tls_handshakes_per_turn < 0) return CGNET_EINVAL;
  if (o->tls_handshakes_per_turn == 0)
    o->tls_handshakes_per_turn = DEFAULT_TLS_HANDSHAKES_PER_TURN;
  return 0;
}

/* ---- the backend --------------------------------------------------------------------- */

const char *cgnet_backend_name(cgnet_backend b) {
  switch (b) {
  case CGNET_BACKEND_EPOLL:
    return "epoll";
  case CGNET_BACKEND_IO_URING:
    return "io_uring";
  default:
    return "auto";
  }
}

/* The options' choice, unless CGNET_BACKEND names one. CGNET_EINVAL for a name that is
 * neither. */
static int wanted_backend(cgnet_engine *eng, cgnet_backend *out) {
  const char *env = getenv("CGNET_BACKEND");
  *out = eng->o.backend;
  if (!env || !*env) return 0;
  if (strcmp(env, "epoll") == 0) {
    *out = CGNET_BACKEND_EPOLL;
  } else if (strcmp(env, "io_uring") == 0) {
    *out = CGNET_BACKEND_IO_URING;
  } else if (strcmp(env, "auto") == 0) {
    *out = CGNET_BACKEND_AUTO;
  } else {
    cgnet__log(eng, CGNET_LOG_ERROR, "CGNET_BACKEND=%s: not epoll, io_uring or auto", env);
    return CGNET_EINVAL;
  }
  return 0;
}

/* Why io_uring cannot run here (a negative error), or 0. */
static int uring_unavailable(void) {
#ifdef CGNET_HAVE_IO_URING
  return cgnet__uring_probe();
#else
  return CGNET_EUNSUPPORTED;
#endif
}

/* AUTO runs epoll until measurements say io_uring wins (docs/benchmarks.md). */
static int choose_backend(cgnet_engine *eng) {
  cgnet_backend want;
  int err = wanted_backend(eng, &want);
  if (err) return err;
  eng->backend = CGNET_BACKEND_EPOLL;
  eng->backend_ops = &cgnet__epoll_ops;
  if (want != CGNET_BACKEND_IO_URING) return 0;
  err = uring_unavailable();
  if (err) {
    cgnet__log(eng, CGNET_LOG_ERROR, "io_uring backend asked for but not available: %s",
               err == CGNET_EUNSUPPORTED ? "cgnet was built without liburing"
                                         : cgnet_strerror(err));
    return CGNET_EUNSUPPORTED;
  }
#ifdef CGNET_HAVE_IO_URING
  eng->backend = CGNET_BACKEND_IO_URING;
  eng->backend_ops = &cgnet__uring_ops;
#endif
  return 0;
}

int cgnet_backend_supported(cgnet_backend b) {
  if (b == CGNET_BACKEND_IO_URING) return uring_unavailable();
  return (unsigned)b > CGNET_BACKEND_IO_URING ? CGNET_EINVAL : 0;
}

cgnet_backend cgnet_engine_backend(const cgnet_engine *eng) {
  return eng->backend;
}

/* ---- listeners ----------------------------------------------------------------------- */

static void set_port(struct sockaddr_storage *ss, uint16_t port_be) {
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = port_be;
  else if (ss->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)ss)->sin6_port = port_be;
}

static uint16_t get_port(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) return ((const struct sockaddr_in *)ss)->sin_port;
  if (ss->ss_family == AF_INET6) return ((const struct sockaddr_in6 *)ss)->sin6_port;
  return 0;
}

static bool is_multicast(const cgnet__addr *a) {
  if (a->sa.ss_family == AF_INET)
    return IN_MULTICAST(ntohl(((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr));
  if (a->sa.ss_family == AF_INET6)
    return IN6_IS_ADDR_MULTICAST(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
  return 0;
}

/* How many sockets address a gets: every loop has its own UDP socket (one SO_REUSEPORT
 * group; a multicast group gets one socket, as the kernel would copy every datagram to
 * each member of the group), and with reuse_port every loop its own TCP listener. A Unix
 * listener is always one, on loop 0 (SO_REUSEPORT does not apply to it). */
static int sockets_for(const cgnet_engine *eng, const cgnet__addr *a) {
  if (a->socktype == SOCK_DGRAM) return is_multicast(a) ? 1 : eng->nloops;
  if (a->net == CGNET__NET_UNIX) return 1;
  return eng->o.reuse_port ? eng->nloops : 1;
}

static int add_unix_listener(cgnet_engine *eng, size_t i) {
  int file = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  int fd = cgnet__unix_listen(&eng->addrs[i], &eng->o, &file, &dev, &ino);
  if (fd < 0) return fd;
  cgnet_loop *loop = &eng->loops[0];
  size_t before = loop->nlisteners;
  int err = cgnet__loop_add_listener(loop, i, fd);
  if (loop->nlisteners == before) { /* not adopted */
    close(fd);
    if (file) cgnet__unix_unlink(&eng->addrs[i], dev, ino);
    return err;
  }
  cgnet__listener *l = loop->listeners[before];
  l->unix_file = file; /* set even on error: the loop closes fd and removes the file */
  l->unix_dev = dev;
  l->unix_ino = ino;
  return err;
}

/* Bind address i on one loop or on every loop (sockets_for). Port 0 is resolved by the
 * first bind; the other loops' sockets then bind that same port. */
static int bind_address(cgnet_engine *eng, size_t i) {
  cgnet__addr a = eng->addrs[i];
  bool dgram = a.socktype == SOCK_DGRAM;
  int nsock = sockets_for(eng, &a);
  if (a.net == CGNET__NET_UNIX) {
    int err = add_unix_listener(eng, i);
    if (err) return err;
  }
  for (int l = 0; l < nsock && a.net != CGNET__NET_UNIX; l++) {
    int fd = dgram ? cgnet__udp_open(&a, &eng->o, nsock > 1)
                   : cgnet__listen(&a, &eng->o, eng->o.reuse_port);
    if (fd < 0) return fd;
    if (l == 0) {
      eng->bound_len[i] = sizeof eng->bound[i];
      getsockname(fd, (struct sockaddr *)&eng->bound[i], &eng->bound_len[i]);
      set_port(&a.sa, get_port(&eng->bound[i]));
    }
    int err = dgram ? cgnet__loop_add_udp(&eng->loops[l], i, fd)
                    : cgnet__loop_add_listener(&eng->loops[l], i, fd);
    if (err) return err; /* the loop owns fd now and closes it */
  }
  if (a.net == CGNET__NET_UNIX) {
    eng->bound_len[i] = a.salen;
    memcpy(&eng->bound[i], &a.sa, a.salen);
  }
  return 0;
}

/* ---- building and tearing down ------------------------------------------------------- */

static size_t loop_load(void *ctx, int i) {
  cgnet_engine *eng = ctx;
  return atomic_load_explicit(&eng->loops[i].nconns, memory_order_relaxed);
}

static void destroy_engine(cgnet_engine *eng) {
  if (eng->loops)
    for (int i = 0; i < eng->nloops; i++)
      cgnet__loop_destroy(&eng->loops[i]);
  free(eng->loops);
  free(eng->addrs);
  free(eng->bound);
  free(eng->bound_len);
  cgnet_tls_ctx_free(eng->o.tls); /* the engine's reference */
  pthread_mutex_destroy(&eng->mu);
  pthread_cond_destroy(&eng->cv);
  free(eng);
}

static int parse_addresses(cgnet_engine *eng, const char *const *addrs, size_t naddrs) {
  size_t n = naddrs ? naddrs : 1; /* a client's engine has none */
  eng->addrs = calloc(n, sizeof *eng->addrs);
  eng->bound = calloc(n, sizeof *eng->bound);
  eng->bound_len = calloc(n, sizeof *eng->bound_len);
  if (!eng->addrs || !eng->bound || !eng->bound_len) return CGNET_ENOMEM;
  eng->naddrs = naddrs;
  for (size_t i = 0; i < naddrs; i++) {
    int err = cgnet__addr_parse(addrs[i], &eng->addrs[i]);
    if (err) {
      cgnet__log(eng, CGNET_LOG_DEBUG, "address \"%s\": %s", addrs[i] ? addrs[i] : "(null)",
                 cgnet_strerror(err));
      return err;
    }
  }
  return 0;
}

static int build_loops(cgnet_engine *eng) {
  eng->nloops = eng->o.num_loops;
  eng->loops = calloc((size_t)eng->nloops, sizeof *eng->loops);
  if (!eng->loops) return CGNET_ENOMEM;
  for (int i = 0; i < eng->nloops; i++) {
    int err = cgnet__loop_init(&eng->loops[i], eng, i);
    if (err) {
      /* Later loops were never initialised; mark them so destroy skips their fds. */
      for (int j = i + 1; j < eng->nloops; j++) {
        eng->loops[j].backend.fd = eng->loops[j].wake.fd = eng->loops[j].reserve_fd = -1;
        cgnet__mpsc_init(&eng->loops[j].tasks);
        cgnet__list_init(&eng->loops[j].conns);
        cgnet__list_init(&eng->loops[j].graveyard);
        cgnet__list_init(&eng->loops[j].timers);
      }
      return err;
    }
  }
  cgnet__lb_init(&eng->lb, eng->o.lb, eng->nloops, loop_load, eng);
  return 0;
}

static cgnet_engine *new_engine(const cgnet_handler *handler) {
  cgnet_engine *eng = calloc(1, sizeof *eng);
  if (!eng) return NULL;
  if (handler) eng->h = *handler;
  pthread_mutex_init(&eng->mu, NULL);
  pthread_cond_init(&eng->cv, NULL);
  atomic_init(&eng->state, CGNET__RUNNING);
  atomic_init(&eng->nconns, 0);
  atomic_init(&eng->rejected, 0);
  atomic_init(&eng->nsessions, 0);
  atomic_init(&eng->sessions_opened, 0);
  atomic_init(&eng->sessions_refused, 0);
  atomic_init(&eng->tls_failures, 0);
  atomic_init(&eng->err, 0);
  atomic_init(&eng->stop_timeout_ms, 0);
  eng->o.log_level = CGNET_LOG_WARN; /* until the options are known */
  return eng;
}

static int start_threads(cgnet_engine *eng) {
  atomic_init(&eng->loops_alive, eng->nloops);
  for (int i = 0; i < eng->nloops; i++) {
    int err = cgnet__loop_start(&eng->loops[i]);
    if (err) {
      cgnet__log(eng, CGNET_LOG_ERROR, "cannot start loop %d: %s", i, cgnet_strerror(err));
      cgnet__engine_request_stop(eng, 0, err);
      for (int j = i; j < eng->nloops; j++)
        cgnet__engine_loop_exited(eng);
      return err;
    }
  }
  return 0;
}

size_t cgnet__ring_max(const cgnet_options *o) {
  size_t cap = cgnet__next_pow2(o->write_buffer_cap);
  return cap > MAX_WRITE_BUFFER ? MAX_WRITE_BUFFER : cap;
}

/* The engine whose on_boot runs on this thread. on_boot runs on the thread that called
 * start, before any loop thread exists: a stop or wait there must not wait for loops
 * that only start once on_boot has returned. */
static _Thread_local const cgnet_engine *tls_booting;

static cgnet_action run_on_boot(cgnet_engine *eng) {
  const cgnet_engine *outer = tls_booting; /* an on_boot may start another engine */
  tls_booting = eng;
  cgnet_action a = eng->h.on_boot(eng);
  tls_booting = outer;
  return a;
}

int cgnet_engine_start(const cgnet_handler *handler, const char *const *addrs,
                       size_t naddrs, const cgnet_options *opts, cgnet_engine **out) {
  if (out) *out = NULL;
  if (!addrs || naddrs == 0) return CGNET_EINVAL;
  return cgnet__engine_start(handler, addrs, naddrs, opts, out);
}

int cgnet__engine_start(const cgnet_handler *handler, const char *const *addrs,
                        size_t naddrs, const cgnet_options *opts, cgnet_engine **out) {
  if (!out) return CGNET_EINVAL;
  *out = NULL;
  if (!handler || (naddrs && !addrs)) return CGNET_EINVAL;
  cgnet_engine *eng = new_engine(handler);
  if (!eng) return CGNET_ENOMEM;
  int err = cgnet__normalize_options(opts, &eng->o);
  if (err) eng->o.tls = NULL; /* not held */
  if (eng->o.tls) cgnet__tls_ctx_hold(eng->o.tls);
  if (!err) {
    eng->ring_max = cgnet__ring_max(&eng->o);
    err = choose_backend(eng);
  }
  if (!err) err = parse_addresses(eng, addrs, naddrs);
  if (!err) err = cgnet__tls_check_engine(eng);
  if (!err) err = build_loops(eng);
  for (size_t i = 0; !err && i < naddrs; i++)
    err = bind_address(eng, i);
  if (err) {
    destroy_engine(eng);
    return err;
  }
  if (eng->h.on_boot && run_on_boot(eng) == CGNET_SHUTDOWN)
    cgnet__engine_request_stop(eng, 0, 0);
  err = start_threads(eng);
  *out = eng; /* even on a thread error: the started loops stop, wait/free clean up */
  return err;
}

/* ---- stopping ------------------------------------------------------------------------ */

void cgnet__engine_request_stop(cgnet_engine *eng, uint64_t timeout_ms, int err) {
  pthread_mutex_lock(&eng->mu);
  bool first = atomic_load(&eng->state) == CGNET__RUNNING;
  if (first) {
    atomic_store(&eng->stop_timeout_ms, timeout_ms);
    if (err) atomic_store(&eng->err, err);
    atomic_store(&eng->state, CGNET__STOPPING);
  }
  pthread_mutex_unlock(&eng->mu);
  if (!first) return;
  for (int i = 0; i < eng->nloops; i++)
    cgnet__loop_wake(&eng->loops[i]);
}

void cgnet__engine_loop_exited(cgnet_engine *eng) {
  if (atomic_fetch_sub(&eng->loops_alive, 1) != 1) return;
  if (eng->h.on_shutdown) eng->h.on_shutdown(eng);
  pthread_mutex_lock(&eng->mu);
  eng->done = true;
  pthread_cond_broadcast(&eng->cv);
  pthread_mutex_unlock(&eng->mu);
}

static void wait_done(cgnet_engine *eng) {
  pthread_mutex_lock(&eng->mu);
  while (!eng->done)
    pthread_cond_wait(&eng->cv, &eng->mu);
  pthread_mutex_unlock(&eng->mu);
}

/* Is this thread one the engine's stop has to wait for: one of its loops, or its
 * on_boot (the loops start after it)? Waiting there would wait for ourselves. */
static bool stop_waits_for_this_thread(const cgnet_engine *eng) {
  return tls_booting == eng || (cgnet__tls_loop != NULL && cgnet__tls_loop->eng == eng);
}

int cgnet_engine_stop(cgnet_engine *eng, uint64_t timeout_ms) {
  if (!eng) return CGNET_EINVAL;
  cgnet__engine_request_stop(eng, timeout_ms, 0);
  if (!stop_waits_for_this_thread(eng)) wait_done(eng);
  return 0;
}

int cgnet_engine_wait(cgnet_engine *eng) {
  if (!eng) return CGNET_EINVAL;
  if (stop_waits_for_this_thread(eng)) return CGNET_EWRONGTHREAD;
  wait_done(eng);
  pthread_mutex_lock(&eng->mu);
  bool join = !eng->joined;
  eng->joined = true;
  pthread_mutex_unlock(&eng->mu);
  if (join)
    for (int i = 0; i < eng->nloops; i++)
      if (eng->loops[i].thread_started) pthread_join(eng->loops[i].thread, NULL);
  return atomic_load(&eng->err);
}

void cgnet_engine_free(cgnet_engine *eng) {
  if (!eng) return;
  if (stop_waits_for_this_thread(eng)) { /* it would free the loop that runs us */
    cgnet__log(eng, CGNET_LOG_ERROR, "cgnet_engine_free from the engine's own thread");
    return;
  }
  cgnet__engine_request_stop(eng, 0, 0);
  (void)cgnet_engine_wait(eng);
  destroy_engine(eng);
}

int cgnet_run(const cgnet_handler *handler, const char *const *addrs, size_t naddrs,
              const cgnet_options *opts) {
  cgnet_engine *eng;
  int err = cgnet_engine_start(handler, addrs, naddrs, opts, &eng);
  if (!eng) return err;
  int werr = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  return err ? err : werr;
}

/* ---- accessors ----------------------------------------------------------------------- */

uint64_t cgnet_engine_tls_handshake_failures(const cgnet_engine *eng) {
  return atomic_load_explicit(&eng->tls_failures, memory_order_relaxed);
}

uint64_t cgnet_engine_rejected_connections(const cgnet_engine *eng) {
  return atomic_load_explicit(&eng->rejected, memory_order_relaxed);
}

size_t cgnet_engine_count_connections(const cgnet_engine *eng) {
  return atomic_load_explicit(&eng->nconns, memory_order_relaxed);
}

void *cgnet_engine_userdata(const cgnet_engine *eng) {
  return eng->h.ud;
}
int cgnet_engine_num_loops(const cgnet_engine *eng) {
  return eng->nloops;
}

cgnet_loop *cgnet_engine_loop(const cgnet_engine *eng, int i) {
  if (i < 0 || i >= eng->nloops) return NULL;
  return &eng->loops[i];
}

size_t cgnet_engine_num_listeners(const cgnet_engine *eng) {
  return eng->naddrs;
}

int cgnet_engine_listen_addr(const cgnet_engine *eng, size_t i, struct sockaddr *sa,
                             socklen_t *len) {
  if (i >= eng->naddrs || !sa || !len) return CGNET_EINVAL;
  socklen_t n = eng->bound_len[i] < *len ? eng->bound_len[i] : *len;
  memcpy(sa, &eng->bound[i], n);
  *len = eng->bound_len[i];
  return 0;
}

int cgnet_engine_listen_port(const cgnet_engine *eng, size_t i) {
  if (i >= eng->naddrs) return CGNET_EINVAL;
  if (eng->bound[i].ss_family == AF_UNIX) return CGNET_EAFNOSUPPORT;
  return ntohs(get_port(&eng->bound[i]));
}

/* ---- addresses ----------------------------------------------------------------------- */

/* A Unix address: the path, "@name" for an abstract one, "" for an unnamed peer. */
static int format_unix(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap) {
  const struct sockaddr_un *sun = (const struct sockaddr_un *)(const void *)sa;
  size_t off = offsetof(struct sockaddr_un, sun_path);
  size_t n = len > off ? len - off : 0;
  if (n > sizeof sun->sun_path) n = sizeof sun->sun_path;
  if (n > 0 && sun->sun_path[0] != '\0') n = strnlen(sun->sun_path, n);
  if (n >= cap) {
    buf[0] = '\0';
    return CGNET_ENOBUFS;
  }
  memcpy(buf, sun->sun_path, n);
  if (n > 0 && buf[0] == '\0') buf[0] = '@';
  buf[n] = '\0';
  return (int)n;
}

int cgnet_format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap) {
  if (!sa || !buf || cap == 0) return CGNET_EINVAL;
  if (sa->sa_family == AF_UNIX) return format_unix(sa, len, buf, cap);
  char host[INET6_ADDRSTRLEN];
  int n;
  if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
    n = snprintf(buf, cap, "%s:%u", host, ntohs(s->sin_port));
  } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
    n = snprintf(buf, cap, "[%s]:%u", host, ntohs(s->sin6_port));
  } else {
    buf[0] = '\0';
    return CGNET_EAFNOSUPPORT;
  }
  if (n < 0 || (size_t)n >= cap) return CGNET_ENOBUFS;
  return n;
}
