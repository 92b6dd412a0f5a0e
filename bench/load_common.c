/*
 * The shared core of the bench load tools; see load_common.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "load_common.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

const char *g_prog = "load";
uint64_t g_t_start, g_t_end;
atomic_int g_stop;
uint8_t g_pattern[2 * PERIOD];

static atomic_int g_reports; /* error lines printed so far */

/* ------------------------------------------------------------------------------------ */
/* Histogram                                                                            */
/* ------------------------------------------------------------------------------------ */

/* The middle of bucket idx. */
static uint64_t hist_value(unsigned idx) {
  if (idx < HIST_LINEAR) return idx;
  unsigned k = idx - HIST_LINEAR;
  unsigned shift = k / HIST_SUB + 1u;
  uint64_t top = HIST_SUB + k % HIST_SUB;
  return (top << shift) + ((1ull << shift) >> 1);
}

void hist_merge(struct hist *dst, const struct hist *src) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    dst->count[i] += src->count[i];
  dst->total += src->total;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t hist_quantile(const struct hist *h, double q) {
  if (h->total == 0) return 0;
  double exact = q * (double)h->total;
  uint64_t want = (uint64_t)exact;
  if ((double)want < exact) want++; /* ceil */
  if (want < 1) want = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->count[i];
    if (seen >= want) {
      uint64_t v = hist_value(i);
      return v < h->max ? v : h->max;
    }
  }
  return h->max;
}

/* ------------------------------------------------------------------------------------ */
/* Window, errors, process                                                              */
/* ------------------------------------------------------------------------------------ */

void load_window_start(double warmup, double secs) {
  g_t_start = now_ns() + (uint64_t)(warmup * 1e9);
  g_t_end = g_t_start + (uint64_t)(secs * 1e9);
}

void report(const char *fmt, ...) {
  int n = atomic_fetch_add_explicit(&g_reports, 1, memory_order_relaxed);
  if (n > MAX_REPORTS) return;
  if (n == MAX_REPORTS) {
    fprintf(stderr, "%s: further errors not shown\n", g_prog);
    return;
  }
  char line[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n", g_prog, line);
}

static void on_signal(int sig) {
  (void)sig;
  atomic_store(&g_stop, 1);
}

void load_setup_process(size_t nofile) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal, .sa_flags = (int)SA_RESETHAND};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL); /* a second ^C kills */
  sigaction(SIGTERM, &sa, NULL);
  struct rlimit rl;
  rlim_t need = (rlim_t)nofile;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need)
      fprintf(stderr, "%s: warning: open files limit %llu is below the %llu needed\n",
              g_prog, (unsigned long long)rl.rlim_cur, (unsigned long long)need);
  }
}

/* ------------------------------------------------------------------------------------ */
/* Pattern                                                                              */
/* ------------------------------------------------------------------------------------ */

void pattern_init(void) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (unsigned i = 0; i < PERIOD; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_pattern[i] = (uint8_t)((x * 0x2545f4914f6cdd1dull) >> 56);
  }
  memcpy(g_pattern + PERIOD, g_pattern, PERIOD);
}

int pattern_iov(struct iovec *iov, int cap, uint64_t off, uint32_t shift, size_t want) {
  int cnt = 0;
  size_t idx = (size_t)((off + shift) % PERIOD);
  for (size_t got = 0; got < want && cnt < cap; cnt++) {
    size_t k = want - got < 2 * PERIOD - idx ? want - got : 2 * PERIOD - idx;
    iov[cnt].iov_base = g_pattern + idx;
    iov[cnt].iov_len = k;
    got += k;
    idx = (idx + k) % PERIOD;
  }
  return cnt;
}

/* The bad bytes of one chunk that differs from the table: counted, and the first bad
 * chunk of the conn reported. */
static uint64_t mismatch(const uint8_t *buf, const uint8_t *want, size_t n, uint64_t off,
                         uint32_t id, int *reported, int detail) {
  uint64_t bad = 0;
  size_t first = n;
  for (size_t i = 0; i < n; i++) {
    if (buf[i] != want[i]) {
      if (first == n) first = i;
      bad++;
    }
  }
  if (!*reported) {
    *reported = 1;
    if (detail)
      report("conn %u: wrong byte at stream offset %llu: got 0x%02x, want 0x%02x "
             "(%llu bad bytes in this %zu-byte chunk)",
             id, (unsigned long long)(off + first), buf[first], want[first],
             (unsigned long long)bad, n);
    else
      report("conn %u: wrong byte at stream offset %llu: got 0x%02x, want 0x%02x", id,
             (unsigned long long)(off + first), buf[first], want[first]);
  }
  return bad;
}

uint64_t pattern_verify(const uint8_t *buf, size_t n, uint64_t off, uint32_t id,
                        uint32_t shift, int *reported, uint64_t *byte_errors, int detail) {
  uint64_t bad = 0;
  while (n > 0) {
    size_t idx = (size_t)((off + shift) % PERIOD);
    size_t k = n < 2 * PERIOD - idx ? n : 2 * PERIOD - idx;
    if (memcmp(buf, g_pattern + idx, k) != 0)
      bad += mismatch(buf, g_pattern + idx, k, off, id, reported, detail);
    buf += k;
    off += k;
    n -= k;
  }
  *byte_errors += bad;
  return bad;
}

/* ------------------------------------------------------------------------------------ */
/* Command line                                                                         */
/* ------------------------------------------------------------------------------------ */

int parse_u64(const char *s, uint64_t min, uint64_t max, int suffix, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-' || *s == '\0') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s) return -1;
  uint64_t mul = 1;
  if (suffix && (*end == 'K' || *end == 'k'))
    mul = 1024, end++;
  else if (suffix && (*end == 'M' || *end == 'm'))
    mul = 1024 * 1024, end++;
  if (*end != '\0' || v > max / mul || v * mul < min) return -1;
  *out = v * mul;
  return 0;
}

int parse_secs(const char *s, double min, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= min) || v > 86400.0) return -1;
  *out = v;
  return 0;
}

int parse_target(const char *target, int tls_scheme, struct sockaddr_storage *addr,
                 socklen_t *addrlen, const char **rest) {
  char host[256], *port;
  const char *s = target;
  if (strncmp(s, "tcp://", 6) == 0 || (tls_scheme && strncmp(s, "tls://", 6) == 0)) s += 6;
  if (snprintf(host, sizeof host, "%s", s) >= (int)sizeof host) return -1;
  port = strrchr(host, ':');
  if (port == NULL || port[1] == '\0') return -1;
  *port++ = '\0';
  char *h = host;
  if (h[0] == '[') {
    size_t n = strlen(h);
    if (n < 2 || h[n - 1] != ']') return -1;
    h[n - 1] = '\0';
    h++;
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res;
  int rc = getaddrinfo(h, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "%s: %s: %s\n", g_prog, target, gai_strerror(rc));
    return -1;
  }
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  *addrlen = res->ai_addrlen;
  freeaddrinfo(res);
  if (rest != NULL) *rest = s;
  return 0;
}

void load_opts_init(struct load_opts *o, size_t conns, uint64_t size) {
  long nproc = sysconf(_SC_NPROCESSORS_ONLN);
  *o = (struct load_opts){.conns = conns,
                          .size = size,
                          .secs = 5.0,
                          .threads = nproc > 1 ? (size_t)nproc / 2 : 1};
}

int load_opt(struct load_opts *o, int opt, const char *arg, uint64_t min_size) {
  uint64_t v;
  switch (opt) {
  case 'a':
    o->target = arg;
    return 1;
  case 'c':
    if (parse_u64(arg, 1, 1000000, 0, &v) != 0) return -1;
    o->conns = (size_t)v;
    return 1;
  case 's':
    return parse_u64(arg, min_size, 1ull << 30, 1, &o->size) == 0 ? 1 : -1;
  case 'd':
    return parse_secs(arg, 0.001, &o->secs) == 0 ? 1 : -1;
  case 'w':
    return parse_secs(arg, 0.0, &o->warmup) == 0 ? 1 : -1;
  case 't':
    if (parse_u64(arg, 1, 1024, 0, &v) != 0) return -1;
    o->threads = (size_t)v;
    return 1;
  default:
    return 0;
  }
}

int load_opts_finish(struct load_opts *o, int tls_scheme, const char **rest) {
  if (o->threads > o->conns) o->threads = o->conns;
  uint64_t share = STREAM_WINDOW_TOTAL / o->conns;
  o->window = share > STREAM_WINDOW_MAX ? STREAM_WINDOW_MAX : share;
  if (o->window < STREAM_WINDOW_MIN) o->window = STREAM_WINDOW_MIN;
  return parse_target(o->target, tls_scheme, &o->addr, &o->addrlen, rest);
}

/* ------------------------------------------------------------------------------------ */
/* Counters and results                                                                 */
/* ------------------------------------------------------------------------------------ */

void load_stats_merge(struct load_stats *dst, const struct load_stats *src) {
  dst->connected += src->connected;
  dst->connect_errors += src->connect_errors;
  dst->msgs += src->msgs;
  dst->tx_bytes += src->tx_bytes;
  dst->rx_bytes += src->rx_bytes;
  dst->byte_errors += src->byte_errors;
  dst->conns_lost += src->conns_lost;
  dst->undrained += src->undrained;
  if (src->meas_end > dst->meas_end) dst->meas_end = src->meas_end;
  hist_merge(&dst->hist, &src->hist);
}

void samples_sent(struct stream_samples *s, uint64_t before, uint64_t tx_off, uint64_t size,
                  uint64_t now) {
  uint64_t end = tx_off / size * size;
  if (end <= before || s->len == STREAM_SAMPLES) return;
  struct sample *e = &s->ring[(s->head + s->len) % STREAM_SAMPLES];
  e->end = end;
  e->t = now;
  s->len++;
}

void samples_echoed(struct stream_samples *s, uint64_t rx_off, uint64_t size,
                    uint64_t *msgs_recv, uint64_t now, struct load_stats *st) {
  uint64_t done = rx_off / size;
  if (in_window(now)) st->msgs += done - *msgs_recv;
  *msgs_recv = done;
  while (s->len > 0 && s->ring[s->head].end <= rx_off) {
    if (in_window(now)) hist_record(&st->hist, now - s->ring[s->head].t);
    s->head = (s->head + 1) % STREAM_SAMPLES;
    s->len--;
  }
}

#define WINDOW_EVENTS 256 /* epoll events per wait in the measured window */

uint64_t load_window_loop(int ep, const size_t *open,
                          void (*on_event)(void *ctx, void *ptr, uint32_t events),
                          void *ctx) {
  struct epoll_event evs[WINDOW_EVENTS];
  uint64_t now = now_ns();
  while (open == NULL || *open > 0) {
    now = now_ns();
    if (now >= g_t_end || stopping()) break;
    int n = epoll_wait(ep, evs, WINDOW_EVENTS, ms_until(g_t_end, now, 100));
    for (int i = 0; i < n; i++)
      on_event(ctx, evs[i].data.ptr, evs[i].events);
  }
  return now < g_t_end ? now : g_t_end;
}

/* The threads of the run: written by main in load_start, read by main. */
static struct {
  char *ws;
  size_t stride, st_off, T;
  pthread_t *threads;
  pthread_barrier_t ready, go;
} g_run;

static struct load_stats *stats_of(size_t t) {
  return (struct load_stats *)(void *)(g_run.ws + t * g_run.stride + g_run.st_off);
}

int load_start(void *ws, size_t stride, size_t st_off, size_t T, void *(*fn)(void *)) {
  g_run.ws = ws;
  g_run.stride = stride;
  g_run.st_off = st_off;
  g_run.T = T;
  g_run.threads = calloc(T, sizeof *g_run.threads);
  if (g_run.threads == NULL) return -1;
  pthread_barrier_init(&g_run.ready, NULL, (unsigned)T + 1);
  pthread_barrier_init(&g_run.go, NULL, (unsigned)T + 1);
  for (size_t t = 0; t < T; t++) {
    if (pthread_create(&g_run.threads[t], NULL, fn, g_run.ws + t * stride) != 0) {
      fprintf(stderr, "%s: cannot start thread %zu\n", g_prog, t);
      return -1;
    }
  }
  return 0;
}

uint64_t load_ready(void) {
  pthread_barrier_wait(&g_run.ready);
  uint64_t connected = 0;
  for (size_t t = 0; t < g_run.T; t++)
    connected += stats_of(t)->connected;
  return connected;
}

void load_release(void) {
  pthread_barrier_wait(&g_run.go);
}

void load_join(struct load_stats *r) {
  r->meas_end = g_t_start;
  for (size_t t = 0; t < g_run.T; t++) {
    pthread_join(g_run.threads[t], NULL);
    load_stats_merge(r, stats_of(t));
  }
  pthread_barrier_destroy(&g_run.ready);
  pthread_barrier_destroy(&g_run.go);
  free(g_run.threads);
  g_run.threads = NULL;
}

void load_worker_sync(void) {
  pthread_barrier_wait(&g_run.ready);
  pthread_barrier_wait(&g_run.go); /* main has set g_t_start/g_t_end (or g_stop) */
}

static void fmt_us(char *buf, size_t cap, const struct hist *h, uint64_t ns,
                   const char *na) {
  if (h->total == 0)
    snprintf(buf, cap, "%s", na);
  else
    snprintf(buf, cap, "%.1f", (double)ns / 1000.0);
}

void latency_text(struct latency_text *t, const struct hist *h, const char *na) {
  fmt_us(t->p50, sizeof t->p50, h, hist_quantile(h, 0.50), na);
  fmt_us(t->p99, sizeof t->p99, h, hist_quantile(h, 0.99), na);
  fmt_us(t->p999, sizeof t->p999, h, hist_quantile(h, 0.999), na);
  fmt_us(t->max, sizeof t->max, h, h->max, na);
}

struct load_rates load_rates(const struct load_stats *s, double secs) {
  if (!(secs > 0)) secs = 1e-9;
  return (struct load_rates){.mps = (double)s->msgs / secs,
                             .tx_mb = (double)s->tx_bytes / 1e6 / secs,
                             .rx_mb = (double)s->rx_bytes / 1e6 / secs};
}

void print_result_keys(const struct load_summary *r) {
  const struct load_stats *s = r->s;
  struct load_rates k = load_rates(r->s, r->secs);
  struct latency_text l;
  latency_text(&l, &s->hist, "na");
  printf("RESULT mode=%s conns=%zu connected=%llu size=%llu depth=%llu threads=%zu "
         "secs=%.3f msgs=%llu msgs_per_s=%.1f mb_per_s=%.3f tx_mb_per_s=%.3f "
         "rx_mb_per_s=%.3f p50_us=%s p99_us=%s p999_us=%s max_us=%s errors=%llu "
         "byte_errors=%llu conns_lost=%llu undrained=%llu connect_errors=%llu",
         r->mode, r->o->conns, (unsigned long long)s->connected,
         (unsigned long long)r->o->size, (unsigned long long)r->depth, r->o->threads,
         r->secs, (unsigned long long)s->msgs, k.mps, k.rx_mb, k.tx_mb, k.rx_mb, l.p50,
         l.p99, l.p999, l.max, (unsigned long long)r->errors,
         (unsigned long long)s->byte_errors, (unsigned long long)s->conns_lost,
         (unsigned long long)s->undrained, (unsigned long long)s->connect_errors);
}

static void print_echo_json(const struct load_summary *r) {
  const struct load_stats *s = r->s;
  struct load_rates k = load_rates(r->s, r->secs);
  struct latency_text j;
  latency_text(&j, &s->hist, "null");
  printf("{\"target\":\"%s\",", r->o->target);
  if (r->protocol) printf("\"protocol\":\"%s\",", r->protocol);
  printf("\"mode\":\"%s\",\"conns\":%zu,\"connected\":%llu,"
         "\"size\":%llu,\"depth\":%llu,\"threads\":%zu,\"secs\":%.3f,\"msgs\":%llu,"
         "\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,\"tx_mb_per_s\":%.3f,"
         "\"rx_mb_per_s\":%.3f,\"p50_us\":%s,\"p99_us\":%s,\"p999_us\":%s,"
         "\"max_us\":%s,\"latency_samples\":%llu,\"errors\":%llu,\"byte_errors\":%llu,"
         "\"conns_lost\":%llu,\"undrained\":%llu,\"connect_errors\":%llu}\n",
         r->mode, r->o->conns, (unsigned long long)s->connected,
         (unsigned long long)r->o->size, (unsigned long long)r->depth, r->o->threads,
         r->secs, (unsigned long long)s->msgs, k.mps, k.rx_mb, k.tx_mb, k.rx_mb, j.p50,
         j.p99, j.p999, j.max, (unsigned long long)s->hist.total,
         (unsigned long long)r->errors, (unsigned long long)s->byte_errors,
         (unsigned long long)s->conns_lost, (unsigned long long)s->undrained,
         (unsigned long long)s->connect_errors);
}

static void print_echo_human(const struct load_summary *r) {
  const struct load_stats *s = r->s;
  const struct hist *h = &s->hist;
  struct load_rates k = load_rates(r->s, r->secs);
  struct latency_text l;
  latency_text(&l, h, "na");
  printf("%s: %s  ", g_prog, r->o->target);
  if (r->protocol) printf("%s  ", r->protocol);
  printf("mode=%s  conns=%zu (%llu connected)  size=%llu B", r->mode, r->o->conns,
         (unsigned long long)s->connected, (unsigned long long)r->o->size);
  if (r->pipeline) printf("  depth=%llu", (unsigned long long)r->depth);
  if (r->stream) printf("  window=%llu KiB", (unsigned long long)(r->o->window >> 10));
  printf("  threads=%zu\n", r->o->threads);
  printf("  duration  %.2f s measured (after %.2f s warm-up)\n", r->secs, r->o->warmup);
  printf("  messages  %llu  (%.0f msgs/s)\n", (unsigned long long)s->msgs, k.mps);
  printf("  tx        %.2f MB/s  (%llu bytes)\n", k.tx_mb, (unsigned long long)s->tx_bytes);
  printf("  rx        %.2f MB/s  (%llu bytes, all checked)\n", k.rx_mb,
         (unsigned long long)s->rx_bytes);
  if (h->total > 0)
    printf("  latency   p50 %s us  p99 %s us  p99.9 %s us  max %s us  (%llu %s)\n", l.p50,
           l.p99, l.p999, l.max, (unsigned long long)h->total,
           r->stream ? "sampled messages" : "messages");
  else
    printf("  latency   n/a (no message completed in the window)\n");
  printf("  errors    %llu  (byte errors %llu, conns lost %llu, undrained %llu, "
         "connect errors %llu)\n",
         (unsigned long long)r->errors, (unsigned long long)s->byte_errors,
         (unsigned long long)s->conns_lost, (unsigned long long)s->undrained,
         (unsigned long long)s->connect_errors);
}

void print_echo_results(const struct load_summary *r, int json) {
  if (json)
    print_echo_json(r);
  else
    print_echo_human(r);
  print_result_keys(r);
  printf("\n");
  fflush(stdout);
}
