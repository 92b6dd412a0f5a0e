/*
 * What the bench load tools (echoload, wsload, tlsload, async_latency) share: the
 * latency histogram, the clock, bounded error reporting, the checked byte pattern, the
 * command-line helpers (counts with K/M suffixes, seconds, HOST:PORT, the options every
 * tool takes), process set-up (signals, open-files limit), the worker threads and their
 * barriers, the per-worker counters, stream-mode latency samples, the measured-window
 * loop, and the summary and RESULT line that bench/run.sh and bench/measure.py parse.
 *
 * Compiled once (bench/load_common.c) and linked into each tool; CMakeLists.txt keeps it
 * out of the one-program-per-file glob. What is hot (histogram record, clock, window
 * test) is static inline here. What differs per tool (framing, TLS, the handshake, the
 * modes) stays in the tool.
 *
 * Threads: the g_* globals are written by main before the workers start (g_t_start and
 * g_t_end between the tools' two barriers) and only read afterwards; g_stop is atomic.
 */
#ifndef CGNET_BENCH_LOAD_COMMON_H
#define CGNET_BENCH_LOAD_COMMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull

#define MAX_REPORTS 20 /* error lines printed in all */

/* ------------------------------------------------------------------------------------ */
/* Latency histogram: log-linear, fixed size, no allocation per sample                  */
/* ------------------------------------------------------------------------------------ */

/*
 * Values (ns) below 256 get a bucket each; above, every power of two is split into 128
 * buckets, so a reported value is within 0.4% of the true one. Values are clamped to
 * 2^40 ns (~18 minutes).
 */
#define HIST_LINEAR 256u
#define HIST_SUB 128u
#define HIST_MAX_VALUE ((1ull << 40) - 1)
#define HIST_BUCKETS (HIST_LINEAR + 32u * HIST_SUB)

struct hist {
  uint64_t count[HIST_BUCKETS];
  uint64_t total;
  uint64_t max;
};

static inline unsigned hist_index(uint64_t v) {
  if (v > HIST_MAX_VALUE) v = HIST_MAX_VALUE;
  if (v < HIST_LINEAR) return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 8 */
  unsigned shift = msb - 7u;                         /* v >> shift is in [128, 256) */
  unsigned top = (unsigned)(v >> shift);
  return HIST_LINEAR + (shift - 1u) * HIST_SUB + (top - HIST_SUB);
}

static inline void hist_record(struct hist *h, uint64_t v) {
  h->count[hist_index(v)]++;
  h->total++;
  if (v > h->max) h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src);

/* The value at quantile q (0 < q <= 1), in ns; 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* ------------------------------------------------------------------------------------ */
/* Clock, run window, stop flag, error lines                                            */
/* ------------------------------------------------------------------------------------ */

/* The tool's name, for every line it prints to stderr ("echoload: ..."). */
extern const char *g_prog;

/* The measured window [g_t_start, g_t_end) on CLOCK_MONOTONIC. */
extern uint64_t g_t_start, g_t_end;

/* Set by SIGINT/SIGTERM (after load_setup_process): end the run early. */
extern atomic_int g_stop;

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static inline int in_window(uint64_t t) {
  return t >= g_t_start && t < g_t_end;
}

static inline int stopping(void) {
  return atomic_load_explicit(&g_stop, memory_order_relaxed);
}

/* Milliseconds from now to deadline, rounded up, at most cap: an epoll_wait timeout. */
static inline int ms_until(uint64_t deadline, uint64_t now, int cap) {
  if (deadline <= now) return 0;
  uint64_t ms = (deadline - now + NS_PER_MS - 1) / NS_PER_MS;
  return ms < (uint64_t)cap ? (int)ms : cap;
}

/* Start the measured window warmup seconds from now, secs long. Main thread. */
void load_window_start(double warmup, double secs);

/* Print one error line "PROG: ..." to stderr, at most MAX_REPORTS in all. Any thread. */
__attribute__((format(printf, 1, 2))) void report(const char *fmt, ...);

/* Ignore SIGPIPE (a write to a closed conn returns EPIPE), make the first SIGINT or
 * SIGTERM set g_stop (a second one kills), and raise the open-files limit to `nofile`
 * if the hard limit allows (a warning if not). Main thread, before any other. */
void load_setup_process(size_t nofile);

/* ------------------------------------------------------------------------------------ */
/* The checked byte pattern                                                             */
/* ------------------------------------------------------------------------------------ */

/*
 * Each connection sends one endless byte stream: byte i of conn c's stream is
 * g_pattern[(i + shift(c)) % PERIOD], where the table holds pseudo-random bytes and
 * PERIOD is prime. Sends are written straight out of the table (no copy) and every
 * echoed chunk is memcmp'd against it. A dropped, duplicated, reordered or foreign chunk
 * does not line up with the table unless its length is a multiple of the (prime) period.
 * The second half of the table repeats the first, so any run of up to PERIOD + 1 bytes
 * starting below PERIOD is contiguous.
 */
#define PERIOD 65521u

extern uint8_t g_pattern[2 * PERIOD];

/* Fill g_pattern (xorshift64*). Main thread, before the workers start. */
void pattern_init(void);

/* The pattern index of stream byte 0 of conn `id`. */
static inline uint32_t pattern_shift(uint32_t id) {
  return (uint32_t)(((uint64_t)id * 40503u + 12345u) % PERIOD);
}

/* Fill iov (room for `cap` entries, cap >= want / PERIOD + 2) with the stream bytes
 * [off, off + want) of the conn with pattern shift `shift`, pointing into the table.
 * Returns the number of entries used. */
int pattern_iov(struct iovec *iov, int cap, uint64_t off, uint32_t shift, size_t want);

/*
 * Check n echoed bytes against the stream at offset off of conn `id` (pattern shift
 * `shift`). Bad bytes are added to *byte_errors; the first bad chunk of a conn is
 * reported once (*reported is then set), with its bad-byte count and size when
 * `detail`. Returns the number of bad bytes.
 */
uint64_t pattern_verify(const uint8_t *buf, size_t n, uint64_t off, uint32_t id,
                        uint32_t shift, int *reported, uint64_t *byte_errors, int detail);

/* ------------------------------------------------------------------------------------ */
/* Command line                                                                         */
/* ------------------------------------------------------------------------------------ */

/* Stream mode: unechoed bytes per conn, STREAM_WINDOW_MAX shrunk so that all conns
 * together stay under STREAM_WINDOW_TOTAL, but never below STREAM_WINDOW_MIN; and the
 * latency samples in flight per conn. */
#define STREAM_WINDOW_MAX (4u << 20)
#define STREAM_WINDOW_MIN (64u << 10)
#define STREAM_WINDOW_TOTAL (1ull << 30)
#define STREAM_SAMPLES 64

/* A decimal count in [min, max], with a K or M suffix (x1024, x1024^2) if `suffix`.
 * Returns 0, or -1 if s is not one. */
int parse_u64(const char *s, uint64_t min, uint64_t max, int suffix, uint64_t *out);

/* Seconds (fractions allowed) in [min, 86400]. Returns 0, or -1. */
int parse_secs(const char *s, double min, double *out);

/*
 * HOST:PORT or [HOST]:PORT, optionally after tcp:// (and tls:// if `tls_scheme`),
 * resolved into addr/addrlen. *rest (if not NULL) gets the text after the scheme.
 * Returns 0, or -1 (a resolver error is printed, naming the target).
 */
int parse_target(const char *target, int tls_scheme, struct sockaddr_storage *addr,
                 socklen_t *addrlen, const char **rest);

/* The options every load tool takes, and what follows from them. */
struct load_opts {
  const char *target; /* -a, as given */
  struct sockaddr_storage addr;
  socklen_t addrlen;
  size_t conns;    /* -c */
  uint64_t size;   /* -s */
  double secs;     /* -d: measured seconds */
  double warmup;   /* -w */
  size_t threads;  /* -t; never more than conns */
  uint64_t window; /* stream mode: unechoed bytes per conn */
};

/* Defaults: `conns` conns, `size` bytes, 5 s, no warm-up, half the CPUs. */
void load_opts_init(struct load_opts *o, size_t conns, uint64_t size);

/* One getopt result: -a HOST:PORT, -c CONNS (1..1000000), -s SIZE (min_size..1G, K/M),
 * -d SECONDS (>= 0.001), -w SECONDS, -t THREADS (1..1024). Returns 1 if taken, 0 if
 * opt is none of these, -1 if its argument is bad. */
int load_opt(struct load_opts *o, int opt, const char *arg, uint64_t min_size);

/* After the options: threads capped at conns, the stream window set and the target
 * resolved (tls:// accepted if tls_scheme; *rest as in parse_target). Returns 0 or -1. */
int load_opts_finish(struct load_opts *o, int tls_scheme, const char **rest);

/* ------------------------------------------------------------------------------------ */
/* Counters, stream-mode samples, the measured window, results                          */
/* ------------------------------------------------------------------------------------ */

/* One worker's counters, owned by it until it is joined; then merged by main. */
struct load_stats {
  uint64_t connected, connect_errors;
  uint64_t msgs, tx_bytes, rx_bytes;
  uint64_t byte_errors, conns_lost, undrained;
  uint64_t meas_end; /* when this worker stopped measuring */
  struct hist hist;
};

/* Add src's counters to dst (meas_end: the later one). */
void load_stats_merge(struct load_stats *dst, const struct load_stats *src);

/* Stream mode's latency samples: a ring (STREAM_SAMPLES entries, allocated by the
 * tool) of message ends in flight, each with the time it was fully sent. */
struct sample {
  uint64_t end; /* stream offset the message ends at */
  uint64_t t;   /* when it was fully sent */
};
struct stream_samples {
  struct sample *ring;
  uint32_t head, len;
};

/* Stream bytes [before, tx_off) were just sent at `now`: if a SIZE-byte message ends in
 * them, remember the last such end (if the ring has room) to time its echo. */
void samples_sent(struct stream_samples *s, uint64_t before, uint64_t tx_off, uint64_t size,
                  uint64_t now);

/* The echo reached rx_off at `now`: count the SIZE-byte messages completed since
 * *msgs_recv and time the sampled ones, into st while in the window. */
void samples_echoed(struct stream_samples *s, uint64_t rx_off, uint64_t size,
                    uint64_t *msgs_recv, uint64_t now, struct load_stats *st);

/* The measured window on epoll instance ep: every event goes to on_event(ctx,
 * data.ptr, events) until g_t_end, g_stop, or (open not NULL) *open is 0. Returns
 * when measuring stopped (at most g_t_end). Worker thread. */
uint64_t load_window_loop(int ep, const size_t *open,
                          void (*on_event)(void *ctx, void *ptr, uint32_t events),
                          void *ctx);

/*
 * The run's threads. Main: load_start, then load_ready (every worker set up), set the
 * window (load_window_start) and load_release, then load_join. A worker calls
 * load_worker_sync once it is set up and measures after it returns.
 *
 * ws holds the T workers, `stride` bytes apart (sizeof one), each with its struct
 * load_stats at offset st_off; worker t runs fn(ws + t * stride).
 */
int load_start(void *ws, size_t stride, size_t st_off, size_t T, void *(*fn)(void *));

/* Main: wait until every worker is set up. Returns the sum of their `connected`. */
uint64_t load_ready(void);

/* Main: let the workers measure (the window is set, or g_stop). */
void load_release(void);

/* Main: join the workers and merge their counters into r (meas_end at least g_t_start). */
void load_join(struct load_stats *r);

/* Worker: set up; wait for main to set the window, then return. */
void load_worker_sync(void);

/* The latency quantiles in microseconds (one decimal), or `na` each when empty. */
struct latency_text {
  char p50[32], p99[32], p999[32], max[32];
};
void latency_text(struct latency_text *t, const struct hist *h, const char *na);

/* Messages per second and MB/s (10^6 bytes) each way over `secs` measured seconds. */
struct load_rates {
  double mps, tx_mb, rx_mb;
};
struct load_rates load_rates(const struct load_stats *s, double secs);

/* What the summary and the RESULT line say about a run. */
struct load_summary {
  const struct load_opts *o;
  const char *mode;
  const char *protocol; /* wsload: "websocket" or "raw"; NULL: not printed */
  uint64_t depth;
  int pipeline, stream; /* the mode is pipeline / stream (what the summary adds) */
  double secs;          /* measured */
  uint64_t errors;
  const struct load_stats *s;
};

/* Print "RESULT mode=... connect_errors=N" (echoload's keys, without the newline) to
 * stdout; a tool may add its own keys before ending the line. */
void print_result_keys(const struct load_summary *r);

/* The echo tools' (echoload, wsload) output: the human summary or (json) one JSON
 * object, then the RESULT line; stdout flushed. */
void print_echo_results(const struct load_summary *r, int json);

#endif
