/*
 * async_latency — cgnet's cross-thread write path under load: how long a record takes
 * from a worker thread's cgnet_conn_async_write to the peer's socket (worker -> task
 * queue -> loop -> socket), and how many loop wake-ups those writes cost (a burst of
 * submissions should share one eventfd wake-up, so under load wake-ups per write fall
 * far below 1).
 *
 * usage: async_latency [--loops N] [--conns C] [--workers W] [--readers R] [--secs D]
 *                      [--size S] [--rate R] [--inflight M]
 *
 * Everything runs in one process, over loopback:
 *   - a cgnet engine on tcp://127.0.0.1:0 with N loops; on_open takes a reference on the
 *     conn and publishes it in a table indexed by the peer's port;
 *   - C plain client sockets connected to it; main matches each client to its server conn
 *     by port, so client i and slot i are the two ends of one connection;
 *   - W worker threads that, for D seconds, pick conns round-robin and async-write one
 *     S-byte record each: a header (CLOCK_MONOTONIC send time, conn, worker, seq) and
 *     filler. With --rate each worker paces itself to R records/s; without, it writes as
 *     fast as it can, but skips a conn while M of its records are in flight (written by
 *     workers, not yet read by the client), so memory stays bounded;
 *   - 1 or more reader threads that epoll their share of the client sockets, cut the
 *     stream into records, record receive time - send time in a log-linear histogram
 *     (load_common.h, the one echoload uses) and check that each (conn, worker)
 *     sequence goes 0, 1, 2, ... without a gap.
 *
 * Then a bounded drain (every written record must arrive), the loops' wake-up and task
 * counters are read again, and the summary ends with one "RESULT k=v ..." line. Exit 1
 * on any write error, sequence error, lost record or lost conn; 2 for bad arguments.
 *
 * Threads: main owns the engine, the client sockets and the tables; workers and readers
 * share only the slots' in-flight counters (atomics), the stop flags and read-only
 * configuration. Their results are merged after pthread_join.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cgnet.h"
#include "load_common.h"

#define REC_MAGIC 0xa5c1a7e5u
#define REC_MIN 32u           /* the header */
#define REC_MAX (64u * 1024u) /* a record fits one read buffer */
#define READ_BUF (256u * 1024u)
#define MAX_EVENTS 128
#define MAX_THREADS 64

#define OPEN_TIMEOUT_NS (5000 * NS_PER_MS) /* every conn must reach on_open by then */
#define DRAIN_MAX_NS (10000 * NS_PER_MS)   /* the drain gives up after this long */
#define DRAIN_STALL_NS (2000 * NS_PER_MS)  /* ... or after this long without progress */
#define PACE_MAX_BEHIND_NS                                                                 \
  (100 * NS_PER_MS)                     /* a paced worker further behind skips ahead       \
                                         */
#define SLEEP_SLICE_NS (10 * NS_PER_MS) /* sleeps are cut so the stop flag is seen */

/* The wire record: REC_MIN bytes of header, then filler up to the configured size. All
 * fields in host order (both ends are this process). */
struct rec {
  uint64_t ts_ns; /* CLOCK_MONOTONIC just before cgnet_conn_async_write */
  uint64_t seq;   /* per (conn, worker): 0, 1, 2, ... */
  uint32_t conn;
  uint32_t worker;
  uint32_t magic;
  uint32_t size;
};
_Static_assert(sizeof(struct rec) == REC_MIN, "record header is REC_MIN bytes");

/* ------------------------------------------------------------------------------------ */
/* Configuration and shared state                                                       */
/* ------------------------------------------------------------------------------------ */

struct config {
  int loops;
  size_t conns;
  int workers;
  int readers;
  double secs;
  size_t size;
  uint64_t rate;    /* records/s per worker; 0 = as fast as the in-flight bound allows */
  int64_t inflight; /* records in flight per conn before workers skip it */
};

/* One connection as the workers see it. Padded so that the counters of neighbouring
 * conns do not share a cache line. */
struct slot {
  cgnet_conn *c;               /* referenced; set by main before the workers start */
  _Atomic int64_t outstanding; /* written by workers and not yet read by the client */
  char pad[64 - sizeof(cgnet_conn *) - sizeof(int64_t)];
};

/* One client socket; owned by the reader thread it is assigned to. */
struct client {
  int fd;
  uint32_t id;
  int lost;         /* EOF or error before the end */
  size_t part_len;  /* bytes of an incomplete record carried to the next read */
  uint8_t *part;    /* REC_MAX-sized carry buffer, allocated with the client */
  uint64_t *expect; /* next seq per worker */
};

struct worker {
  pthread_t thread;
  int id;
  uint64_t written;   /* async writes that returned 0 */
  uint64_t write_err; /* async writes that failed */
  uint64_t *seq;      /* next seq per conn */
};

struct reader {
  pthread_t thread;
  int ep;
  size_t first, count;       /* its clients: g_clients[first .. first + count) */
  _Atomic uint64_t received; /* read by main during the drain */
  uint64_t seq_errors, bad_records, conns_lost;
  uint8_t *buf;
  struct hist hist;
};

/* Written by main before the threads start; read-only afterwards. */
static struct config g_cfg;
static struct slot *g_slots;
static struct client *g_clients;

/* Published by on_open (loop threads), read by main: the server conn of each peer port. */
static _Atomic(cgnet_conn *) g_by_port[65536];
static _Atomic size_t g_opened;

static _Atomic int g_stop_workers;
static _Atomic int g_stop_readers;
static _Atomic int g_teardown;         /* set before main closes the clients */
static _Atomic uint64_t g_done_errors; /* write completions with a non-zero status */
static _Atomic uint64_t g_server_lost; /* conns closed by the server side before teardown */
static pthread_barrier_t g_go;

static void sleep_ns(uint64_t ns) {
  struct timespec ts = {.tv_sec = (time_t)(ns / NS_PER_S),
                        .tv_nsec = (long)(ns % NS_PER_S)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ------------------------------------------------------------------------------------ */
/* Server: cgnet callbacks (loop threads)                                               */
/* ------------------------------------------------------------------------------------ */

static cgnet_action on_open(cgnet_conn *c) {
  socklen_t len = 0;
  const struct sockaddr *sa = cgnet_conn_remote_addr(c, &len);
  if (!sa || sa->sa_family != AF_INET) return CGNET_CLOSE;
  uint16_t port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
  /* The reference keeps the conn usable from the workers; main drops it at the end. */
  atomic_store_explicit(&g_by_port[port], cgnet_conn_ref(c), memory_order_release);
  atomic_fetch_add_explicit(&g_opened, 1, memory_order_release);
  return CGNET_NONE;
}

static cgnet_action on_traffic(cgnet_conn *c) {
  cgnet_conn_discard(c, cgnet_conn_inbound_buffered(c)); /* clients send nothing */
  return CGNET_NONE;
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  (void)c;
  if (!atomic_load_explicit(&g_teardown, memory_order_acquire)) {
    atomic_fetch_add_explicit(&g_server_lost, 1, memory_order_relaxed);
    report("server conn closed during the run: %s", cgnet_strerror(reason));
  }
  return CGNET_NONE;
}

/* Runs on the conn's loop after each async write; only failures matter. */
static void on_write_done(cgnet_conn *c, int status, void *ud) {
  (void)c;
  (void)ud;
  if (status != 0) {
    atomic_fetch_add_explicit(&g_done_errors, 1, memory_order_relaxed);
    report("async write completed with %s", cgnet_strerror(status));
  }
}

/* ------------------------------------------------------------------------------------ */
/* Workers: the async writers                                                           */
/* ------------------------------------------------------------------------------------ */

/* Paced mode: wait until `deadline`, in slices so that a stop is noticed. Returns 0 when
 * stopped. */
static int wait_until(uint64_t deadline) {
  for (;;) {
    if (atomic_load_explicit(&g_stop_workers, memory_order_relaxed)) return 0;
    uint64_t t = now_ns();
    if (t >= deadline) return 1;
    uint64_t d = deadline - t;
    sleep_ns(d < SLEEP_SLICE_NS ? d : SLEEP_SLICE_NS);
  }
}

/* The next conn in round-robin order whose in-flight count is under the bound, starting
 * at *next. Yields the CPU after each full pass that found none. SIZE_MAX when stopped. */
static size_t pick_conn(size_t *next) {
  size_t n = g_cfg.conns;
  for (;;) {
    for (size_t tries = 0; tries < n; tries++) {
      size_t i = *next;
      *next = i + 1 == n ? 0 : i + 1;
      if (atomic_load_explicit(&g_slots[i].outstanding, memory_order_relaxed) <
          g_cfg.inflight)
        return i;
    }
    if (atomic_load_explicit(&g_stop_workers, memory_order_relaxed)) return SIZE_MAX;
    sched_yield();
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  uint8_t buf[REC_MAX];
  memset(buf, 0x5a, g_cfg.size);
  struct rec h = {
      .worker = (uint32_t)w->id, .magic = REC_MAGIC, .size = (uint32_t)g_cfg.size};
  /* Workers start at different conns so that they do not march in step. */
  size_t next = (size_t)w->id * g_cfg.conns / (size_t)g_cfg.workers;
  uint64_t period = g_cfg.rate ? NS_PER_S / g_cfg.rate : 0;

  pthread_barrier_wait(&g_go);
  /* Paced workers are phase-shifted by period / W, so that their writes arrive evenly
   * spread instead of W at once (which would coalesce into one wake-up by construction). */
  uint64_t deadline = now_ns() + period * (uint64_t)w->id / (uint64_t)g_cfg.workers;
  while (!atomic_load_explicit(&g_stop_workers, memory_order_relaxed)) {
    if (period) {
      if (!wait_until(deadline)) break;
      deadline += period;
      uint64_t t = now_ns();
      if (t > deadline + PACE_MAX_BEHIND_NS) deadline = t; /* descheduled: do not burst */
    }
    size_t i = pick_conn(&next);
    if (i == SIZE_MAX) break;
    struct slot *s = &g_slots[i];
    /* Count it in flight before the bytes can possibly reach the reader. */
    atomic_fetch_add_explicit(&s->outstanding, 1, memory_order_relaxed);
    h.conn = (uint32_t)i;
    h.seq = w->seq[i];
    h.ts_ns = now_ns();
    memcpy(buf, &h, sizeof h);
    int rc = cgnet_conn_async_write(s->c, buf, g_cfg.size, on_write_done, NULL);
    if (rc == 0) {
      w->seq[i]++;
      w->written++;
    } else {
      atomic_fetch_sub_explicit(&s->outstanding, 1, memory_order_relaxed);
      w->write_err++;
      report("worker %d: async write to conn %zu: %s", w->id, i, cgnet_strerror(rc));
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Readers: the clients' receiving side                                                 */
/* ------------------------------------------------------------------------------------ */

/* Check one complete record of client c received at time t. Returns 1 if it counts. */
static int take_record(struct reader *r, struct client *c, const uint8_t *p, uint64_t t) {
  struct rec h;
  memcpy(&h, p, sizeof h);
  if (h.magic != REC_MAGIC || h.size != g_cfg.size || h.conn != c->id ||
      h.worker >= (uint32_t)g_cfg.workers) {
    r->bad_records++;
    report("conn %u: malformed record (magic 0x%08x, size %u, conn %u, worker %u)", c->id,
           h.magic, h.size, h.conn, h.worker);
    return 0;
  }
  if (h.seq != c->expect[h.worker]) {
    r->seq_errors++;
    report("conn %u worker %u: seq %llu, expected %llu", c->id, h.worker,
           (unsigned long long)h.seq, (unsigned long long)c->expect[h.worker]);
  }
  c->expect[h.worker] = h.seq + 1;
  hist_record(&r->hist, t > h.ts_ns ? t - h.ts_ns : 0);
  return 1;
}

/* Cut n freshly read bytes into records, completing the carried partial one first. */
static uint64_t parse(struct reader *r, struct client *c, const uint8_t *p, size_t n,
                      uint64_t t) {
  size_t sz = g_cfg.size;
  uint64_t got = 0;
  if (c->part_len) {
    size_t k = sz - c->part_len < n ? sz - c->part_len : n;
    memcpy(c->part + c->part_len, p, k);
    c->part_len += k;
    p += k;
    n -= k;
    if (c->part_len < sz) return 0;
    got += (uint64_t)take_record(r, c, c->part, t);
    c->part_len = 0;
  }
  for (; n >= sz; p += sz, n -= sz)
    got += (uint64_t)take_record(r, c, p, t);
  memcpy(c->part, p, n);
  c->part_len = n;
  return got;
}

static void client_lost(struct reader *r, struct client *c, int err) {
  if (atomic_load_explicit(&g_teardown, memory_order_relaxed)) return;
  c->lost = 1;
  r->conns_lost++;
  epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
  report("client %u: %s", c->id, err ? strerror(err) : "closed by the server");
}

/* Read what client c has (a few reads at most, then others get a turn). */
static void client_read(struct reader *r, struct client *c) {
  for (int round = 0; round < 4; round++) {
    ssize_t n = read(c->fd, r->buf, READ_BUF);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      client_lost(r, c, n < 0 ? errno : 0);
      return;
    }
    uint64_t got = parse(r, c, r->buf, (size_t)n, now_ns());
    if (got) {
      atomic_fetch_sub_explicit(&g_slots[c->id].outstanding, (int64_t)got,
                                memory_order_relaxed);
      atomic_fetch_add_explicit(&r->received, got, memory_order_relaxed);
    }
    if ((size_t)n < READ_BUF) return;
  }
}

static void *reader_main(void *arg) {
  struct reader *r = arg;
  struct epoll_event evs[MAX_EVENTS];
  while (!atomic_load_explicit(&g_stop_readers, memory_order_relaxed)) {
    int n = epoll_wait(r->ep, evs, MAX_EVENTS, 10);
    for (int i = 0; i < n; i++)
      client_read(r, evs[i].data.ptr);
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Setup                                                                                */
/* ------------------------------------------------------------------------------------ */

static void usage(const char *prog, int code) {
  fprintf(code ? stderr : stdout,
          "usage: %s [--loops N] [--conns C] [--workers W] [--readers R] [--secs D]\n"
          "       %*s [--size S] [--rate R] [--inflight M]\n"
          "  -l, --loops N     cgnet event loops (default 1)\n"
          "  -c, --conns C     client connections (default 100)\n"
          "  -w, --workers W   worker threads calling cgnet_conn_async_write (default 4)\n"
          "  -r, --readers R   client reader threads (default 1)\n"
          "  -d, --secs D      seconds the workers write (fractions allowed; default 5)\n"
          "  -s, --size S      record size in bytes, %u..%u (default 64)\n"
          "  -R, --rate R      records/s per worker, paced; 0 = as fast as possible\n"
          "                    within the in-flight bound (default 0)\n"
          "  -m, --inflight M  records in flight per conn before workers skip it\n"
          "                    (default 256)\n",
          prog, (int)strlen(prog), "", REC_MIN, REC_MAX);
  exit(code);
}

static long long parse_num(const char *prog, const char *s, long long lo, long long hi) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno || v < lo || v > hi) usage(prog, 2);
  return v;
}

static void parse_options(int argc, char **argv) {
  static const struct option longopts[] = {
      {"loops", required_argument, NULL, 'l'},   {"conns", required_argument, NULL, 'c'},
      {"workers", required_argument, NULL, 'w'}, {"readers", required_argument, NULL, 'r'},
      {"secs", required_argument, NULL, 'd'},    {"size", required_argument, NULL, 's'},
      {"rate", required_argument, NULL, 'R'},    {"inflight", required_argument, NULL, 'm'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
  g_cfg = (struct config){.loops = 1,
                          .conns = 100,
                          .workers = 4,
                          .readers = 1,
                          .secs = 5.0,
                          .size = 64,
                          .rate = 0,
                          .inflight = 256};
  int ch;
  char *end;
  while ((ch = getopt_long(argc, argv, "l:c:w:r:d:s:R:m:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'l':
      g_cfg.loops = (int)parse_num(argv[0], optarg, 1, 1024);
      break;
    case 'c':
      g_cfg.conns = (size_t)parse_num(argv[0], optarg, 1, 30000);
      break;
    case 'w':
      g_cfg.workers = (int)parse_num(argv[0], optarg, 1, MAX_THREADS);
      break;
    case 'r':
      g_cfg.readers = (int)parse_num(argv[0], optarg, 1, MAX_THREADS);
      break;
    case 'd':
      end = NULL;
      g_cfg.secs = strtod(optarg, &end);
      if (*optarg == '\0' || *end != '\0' || !(g_cfg.secs > 0 && g_cfg.secs <= 3600))
        usage(argv[0], 2);
      break;
    case 's':
      g_cfg.size = (size_t)parse_num(argv[0], optarg, REC_MIN, REC_MAX);
      break;
    case 'R':
      g_cfg.rate = (uint64_t)parse_num(argv[0], optarg, 0, 1000000000);
      break;
    case 'm':
      g_cfg.inflight = (int64_t)parse_num(argv[0], optarg, 1, 1 << 20);
      break;
    case 'h':
      usage(argv[0], 0);
      break;
    default:
      usage(argv[0], 2);
    }
  }
  if (optind != argc) usage(argv[0], 2);
  if ((size_t)g_cfg.readers > g_cfg.conns) g_cfg.readers = (int)g_cfg.conns;
}

static void raise_nofile(size_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* Connect a client (blocking, then non-blocking for the reader); returns its local port
 * or -1. */
static int client_connect(struct client *c, int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -1;
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
  struct sockaddr_in local;
  socklen_t len = sizeof local;
  if (getsockname(c->fd, (struct sockaddr *)&local, &len) != 0) return -1;
  int fl = fcntl(c->fd, F_GETFL);
  if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0) return -1;
  return ntohs(local.sin_port);
}

/* Connect every client, then find each one's server conn by port (on_open may run a
 * little later, on whichever loop the conn was handed to). Returns 0 or -1. */
static int open_clients(int port) {
  size_t n = g_cfg.conns;
  g_clients = calloc(n, sizeof *g_clients);
  int *ports = calloc(n, sizeof *ports);
  if (!g_clients || !ports) {
    free(ports);
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    g_clients[i].fd = -1;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    struct client *c = &g_clients[i];
    c->id = (uint32_t)i;
    c->part = malloc(g_cfg.size);
    c->expect = calloc((size_t)g_cfg.workers, sizeof *c->expect);
    ports[i] = c->part && c->expect ? client_connect(c, port) : -1;
    if (ports[i] < 0) {
      fprintf(stderr, "async_latency: client %zu: connect: %s\n", i, strerror(errno));
      rc = -1;
    }
  }
  uint64_t deadline = now_ns() + OPEN_TIMEOUT_NS;
  for (size_t i = 0; i < n && rc == 0; i++) {
    cgnet_conn *c;
    while (!(c = atomic_load_explicit(&g_by_port[ports[i]], memory_order_acquire))) {
      if (now_ns() > deadline) {
        fprintf(stderr, "async_latency: client %zu: no on_open on the server\n", i);
        rc = -1;
        break;
      }
      sleep_ns(NS_PER_MS);
    }
    g_slots[i].c = c;
  }
  free(ports);
  return rc;
}

/* Give each reader its contiguous share of the clients and start it. */
static int start_readers(struct reader *rs) {
  size_t n = g_cfg.conns, k = (size_t)g_cfg.readers;
  for (size_t t = 0; t < k; t++) {
    struct reader *r = &rs[t];
    r->first = t * n / k;
    r->count = (t + 1) * n / k - r->first;
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    r->buf = malloc(READ_BUF);
    if (r->ep < 0 || !r->buf) return -1;
    for (size_t i = r->first; i < r->first + r->count; i++) {
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g_clients[i]};
      if (epoll_ctl(r->ep, EPOLL_CTL_ADD, g_clients[i].fd, &ev) != 0) return -1;
    }
    if (pthread_create(&r->thread, NULL, reader_main, r) != 0) return -1;
  }
  return 0;
}

static void loop_stats(cgnet_engine *eng, cgnet_loop_stats *sum) {
  *sum = (cgnet_loop_stats){0};
  for (int i = 0; i < cgnet_engine_num_loops(eng); i++) {
    cgnet_loop_stats s;
    cgnet_loop_get_stats(cgnet_engine_loop(eng, i), &s);
    sum->wakeups += s.wakeups;
    sum->tasks += s.tasks;
  }
}

static uint64_t total_received(struct reader *rs) {
  uint64_t sum = 0;
  for (int t = 0; t < g_cfg.readers; t++)
    sum += atomic_load_explicit(&rs[t].received, memory_order_relaxed);
  return sum;
}

/* Wait (bounded) until every written record has been read. */
static void drain(struct reader *rs, uint64_t written) {
  uint64_t start = now_ns(), progress = start, last = total_received(rs);
  while (last < written) {
    sleep_ns(NS_PER_MS);
    uint64_t got = total_received(rs), t = now_ns();
    if (got != last) progress = t;
    last = got;
    if (t - progress > DRAIN_STALL_NS || t - start > DRAIN_MAX_NS) break;
  }
}

/* ------------------------------------------------------------------------------------ */
/* Main                                                                                 */
/* ------------------------------------------------------------------------------------ */

struct totals {
  double secs;
  uint64_t written, received, write_err, seq_errors, bad_records, conns_lost, lost;
  uint64_t wakeups, tasks;
  struct hist hist;
};

static void print_summary(const struct totals *t) {
  double us[4] = {(double)hist_quantile(&t->hist, 0.50) / NS_PER_US,
                  (double)hist_quantile(&t->hist, 0.99) / NS_PER_US,
                  (double)hist_quantile(&t->hist, 0.999) / NS_PER_US,
                  (double)t->hist.max / NS_PER_US};
  double rate = t->secs > 0 ? (double)t->written / t->secs : 0;
  double wpw = t->written ? (double)t->wakeups / (double)t->written : 0;
  double tpw = t->wakeups ? (double)t->tasks / (double)t->wakeups : 0;
  uint64_t done_err = atomic_load(&g_done_errors),
           server_lost = atomic_load(&g_server_lost);
  uint64_t errors = t->write_err + done_err + t->seq_errors + t->bad_records +
                    t->conns_lost + server_lost + t->lost;
  char rate_s[48];
  if (g_cfg.rate)
    snprintf(rate_s, sizeof rate_s, "%llu/s per worker", (unsigned long long)g_cfg.rate);
  else
    snprintf(rate_s, sizeof rate_s, "max");

  printf("async_latency: loops=%d conns=%zu workers=%d readers=%d size=%zu rate=%s "
         "inflight=%lld secs=%.3f\n",
         g_cfg.loops, g_cfg.conns, g_cfg.workers, g_cfg.readers, g_cfg.size, rate_s,
         (long long)g_cfg.inflight, t->secs);
  printf("  records   %llu written, %llu received, %.1f records/s\n",
         (unsigned long long)t->written, (unsigned long long)t->received, rate);
  printf("  latency   p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n", us[0], us[1],
         us[2], us[3]);
  printf("  wake-ups  %llu: %.4f per async write, %.1f tasks per wake-up\n",
         (unsigned long long)t->wakeups, wpw, tpw);
  printf("  errors    %llu (write %llu, completion %llu, seq %llu, malformed %llu, "
         "lost records %llu, lost conns %llu)\n",
         (unsigned long long)errors, (unsigned long long)t->write_err,
         (unsigned long long)done_err, (unsigned long long)t->seq_errors,
         (unsigned long long)t->bad_records, (unsigned long long)t->lost,
         (unsigned long long)(t->conns_lost + server_lost));
  printf(
      "RESULT loops=%d conns=%zu workers=%d size=%zu target_rate=%llu records=%llu "
      "secs=%.3f rate=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f wakeups=%llu "
      "wakeups_per_write=%.4f tasks=%llu tasks_per_wakeup=%.1f errors=%llu\n",
      g_cfg.loops, g_cfg.conns, g_cfg.workers, g_cfg.size, (unsigned long long)g_cfg.rate,
      (unsigned long long)t->written, t->secs, rate, us[0], us[1], us[2], us[3],
      (unsigned long long)t->wakeups, wpw, (unsigned long long)t->tasks, tpw,
      (unsigned long long)errors);
  fflush(stdout);
}

/* Run the workers for the configured time, then drain; fills the counters of t. */
static int run_workers(cgnet_engine *eng, struct reader *rs, struct totals *t) {
  int nw = g_cfg.workers;
  struct worker *ws = calloc((size_t)nw, sizeof *ws);
  if (!ws || pthread_barrier_init(&g_go, NULL, (unsigned)nw + 1) != 0) {
    free(ws);
    return -1;
  }
  int started = 0, rc = 0;
  for (; started < nw; started++) {
    ws[started].id = started;
    ws[started].seq = calloc(g_cfg.conns, sizeof *ws[started].seq);
    if (!ws[started].seq ||
        pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0) {
      free(ws[started].seq);
      rc = -1;
      break;
    }
  }
  if (rc != 0) { /* the barrier can never fill: the workers that exist wait forever */
    fprintf(stderr, "async_latency: cannot start worker %d\n", started);
    exit(1);
  }
  cgnet_loop_stats s0, s1;
  loop_stats(eng, &s0);
  pthread_barrier_wait(&g_go);
  uint64_t t0 = now_ns();
  sleep_ns((uint64_t)(g_cfg.secs * (double)NS_PER_S));
  atomic_store(&g_stop_workers, 1);
  for (int i = 0; i < nw; i++) {
    pthread_join(ws[i].thread, NULL);
    t->written += ws[i].written;
    t->write_err += ws[i].write_err;
    free(ws[i].seq);
  }
  t->secs = (double)(now_ns() - t0) / (double)NS_PER_S;
  drain(rs, t->written);
  loop_stats(eng, &s1);
  t->wakeups = s1.wakeups - s0.wakeups;
  t->tasks = s1.tasks - s0.tasks;
  pthread_barrier_destroy(&g_go);
  free(ws);
  return 0;
}

/* Stop the readers and merge what they found. */
static void join_readers(struct reader *rs, struct totals *t) {
  atomic_store(&g_stop_readers, 1);
  for (int i = 0; i < g_cfg.readers; i++) {
    struct reader *r = &rs[i];
    pthread_join(r->thread, NULL);
    t->received += atomic_load(&r->received);
    t->seq_errors += r->seq_errors;
    t->bad_records += r->bad_records;
    t->conns_lost += r->conns_lost;
    hist_merge(&t->hist, &r->hist);
  }
  t->lost = t->written > t->received ? t->written - t->received : 0;
  if (t->lost)
    report("%llu records written but never received", (unsigned long long)t->lost);
}

int main(int argc, char **argv) {
  g_prog = "async_latency";
  parse_options(argc, argv);
  raise_nofile(2 * g_cfg.conns + 64);

  cgnet_handler h = {.on_open = on_open, .on_traffic = on_traffic, .on_close = on_close};
  cgnet_options o = {.num_loops = g_cfg.loops};
  const char *addr = "tcp://127.0.0.1:0";
  cgnet_engine *eng = NULL;
  int err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "async_latency: cgnet_engine_start: %s\n", cgnet_strerror(err));
    return 1;
  }

  struct totals *t = calloc(1, sizeof *t);
  struct reader *rs = calloc((size_t)g_cfg.readers, sizeof *rs);
  g_slots = calloc(g_cfg.conns, sizeof *g_slots);
  int ok = t && rs && g_slots && open_clients(cgnet_engine_listen_port(eng, 0)) == 0;
  int readers_started = 0;
  if (ok && start_readers(rs) != 0) {
    fprintf(stderr, "async_latency: cannot start the readers\n");
    ok = 0;
  }
  readers_started = ok;
  if (ok && run_workers(eng, rs, t) != 0) ok = 0;
  if (readers_started) join_readers(rs, t);

  /* Teardown: clients first (their EOF closes the server conns, expectedly now), then
   * the engine; the references go before cgnet_engine_free. */
  atomic_store(&g_teardown, 1);
  for (size_t i = 0; g_clients && i < g_cfg.conns; i++) {
    if (g_clients[i].fd >= 0) close(g_clients[i].fd);
    free(g_clients[i].part);
    free(g_clients[i].expect);
  }
  cgnet_engine_stop(eng, 1000);
  cgnet_engine_wait(eng);
  for (size_t p = 0; p < 65536; p++) {
    cgnet_conn *c = atomic_exchange(&g_by_port[p], NULL);
    if (c) cgnet_conn_unref(c);
  }
  cgnet_engine_free(eng);

  int bad = 1;
  if (ok) {
    print_summary(t);
    bad = t->write_err || atomic_load(&g_done_errors) || t->seq_errors || t->bad_records ||
          t->conns_lost || atomic_load(&g_server_lost) || t->lost;
  }
  for (int i = 0; rs && i < g_cfg.readers; i++) {
    if (rs[i].ep >= 0) close(rs[i].ep);
    free(rs[i].buf);
  }
  free(rs);
  free(t);
  free(g_slots);
  free(g_clients);
  return bad ? 1 : 0;
}
