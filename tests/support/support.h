/*
 * Shared helpers for cgnet's integration tests: loopback clients with deadlines,
 * deterministic payloads, "wait until" polling, fd counting, a per-connection tracker for
 * callbacks, thread-safe checks usable on loop threads, and a server fixture.
 *
 * Threads. cmocka's assert_* may only be used on the test's own thread (it longjmps).
 * Code that runs on loop threads or client threads records problems with TU_CHECK() and
 * atomics; the test thread asserts on them afterwards.
 */
#ifndef CGNET_TEST_SUPPORT_H
#define CGNET_TEST_SUPPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "cgnet.h"

/* ------------------------------------------------------------------------------------ */
/* Sanitizer detection and scaling                                                      */
/* ------------------------------------------------------------------------------------ */

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#ifndef TU_ASAN
#define TU_ASAN 0
#endif

/* How much slower than a plain build: deadlines are multiplied by it. */
#define TU_SLOW (TU_TSAN ? 8 : (TU_ASAN ? 3 : 1))
/* Payload divisor: big transfers are cut down under TSan. */
#define TU_PAYLOAD_DIV (TU_TSAN ? 8 : 1)

/* Default per-operation deadline in milliseconds. */
#define TU_TIMEOUT_MS (20000 * TU_SLOW)

/* Returned by the receive helpers when the peer closed before the data was complete. */
#define TU_EEOF (-100000)

/* ------------------------------------------------------------------------------------ */
/* Time                                                                                 */
/* ------------------------------------------------------------------------------------ */

uint64_t tu_now_ms(void);
uint64_t tu_now_us(void);
void tu_sleep_ms(unsigned ms);

/* Call pred(arg) every ~2 ms until it returns non-zero (returns 1) or timeout_ms passes
 * (returns 0; pred is tried one last time). */
typedef int (*tu_pred_fn)(void *arg);
int tu_wait_until(tu_pred_fn pred, void *arg, int timeout_ms);

/* Wait until *v == want (returns 1) or the deadline (0). */
int tu_wait_atomic_eq(atomic_int *v, int want, int timeout_ms);
/* Wait until *v >= want (returns 1) or the deadline (0). */
int tu_wait_atomic_ge(atomic_int *v, int want, int timeout_ms);
/* Wait until cgnet_engine_count_connections(eng) == want. */
int tu_wait_conns(cgnet_engine *eng, size_t want, int timeout_ms);

/* ------------------------------------------------------------------------------------ */
/* Process state                                                                        */
/* ------------------------------------------------------------------------------------ */

/* Number of open descriptors of this process (entries of /proc/self/fd, not counting the
 * one used to read it), or -1. */
int tu_count_fds(void);
/* Raise RLIMIT_NOFILE's soft limit to at least `want` (bounded by the hard limit).
 * Returns the resulting soft limit. */
long tu_raise_nofile(long want);
/* 1 if an IPv6 socket can bind [::1]. */
int tu_have_ipv6_loopback(void);

/* ------------------------------------------------------------------------------------ */
/* Loopback clients                                                                     */
/* ------------------------------------------------------------------------------------ */

/* Connect to 127.0.0.1:port (AF_INET) or [::1]:port (AF_INET6) within timeout_ms. The
 * returned socket is blocking unless `nonblock`; TCP_NODELAY is set. Returns the fd or a
 * negative errno. */
int tu_connect(int family, int port, int nonblock, int timeout_ms);
static inline int tu_connect4(int port) {
  return tu_connect(AF_INET, port, 0, TU_TIMEOUT_MS);
}

int tu_set_nonblock(int fd, int on);
/* The local port of a connected socket, or -1. */
int tu_local_port(int fd);

/* Send everything (works on blocking and non-blocking sockets; never raises SIGPIPE).
 * 0, -ETIMEDOUT, or a negative errno. */
int tu_send_all(int fd, const void *buf, size_t len, int timeout_ms);
/* Receive exactly len bytes. 0, -ETIMEDOUT, TU_EEOF (peer closed early; *got says how
 * much arrived if got != NULL), or a negative errno such as -ECONNRESET. */
int tu_recv_exact(int fd, void *buf, size_t len, int timeout_ms, size_t *got);
/* Wait for the end of the stream, draining what comes first (counted in *extra). 0:
 * orderly EOF; -ECONNRESET: reset; -ETIMEDOUT. With extra == NULL, bytes before the EOF
 * are unexpected and an otherwise clean EOF returns 1. */
int tu_expect_eof(int fd, int timeout_ms, size_t *extra);
/* Close with SO_LINGER {1, 0}: the kernel sends RST instead of FIN. */
void tu_close_reset(int fd);
/* A listening TCP socket on 127.0.0.1:0 (no SO_REUSEADDR/PORT); *port gets its port. */
int tu_listen_any(int *port);

/* ------------------------------------------------------------------------------------ */
/* Payloads                                                                             */
/* ------------------------------------------------------------------------------------ */

/* A deterministic pseudo-random byte stream: byte i of stream `seed`. Random access, so a
 * receiver can check any slice without keeping the whole stream. */
uint8_t tu_pattern_byte(uint64_t seed, size_t i);
void tu_pattern_fill(uint8_t *buf, size_t len, uint64_t seed, size_t offset);
/* Number of bytes in buf that differ from stream `seed` starting at `offset`. */
size_t tu_pattern_mismatches(const uint8_t *buf, size_t len, uint64_t seed, size_t offset);
/* Index of the first differing byte, or SIZE_MAX. */
size_t tu_first_diff(const uint8_t *a, const uint8_t *b, size_t len);

/* ------------------------------------------------------------------------------------ */
/* Echo driver: many non-blocking clients, sending and receiving interleaved             */
/* ------------------------------------------------------------------------------------ */

typedef struct tu_echo_client {
  int fd;            /* connected; made non-blocking by the driver */
  const uint8_t *tx; /* bytes to send; NULL: tu_pattern bytes of `seed` */
  size_t tx_len, tx_off;
  uint8_t *rx; /* receives rx_len bytes; NULL: compared with the pattern on the fly */
  size_t rx_len, rx_off;
  uint64_t seed; /* the pattern, when tx / rx are NULL (no memory for big transfers) */
  size_t bad;    /* received bytes that differed from the pattern (rx == NULL) */
  int err;       /* 0, or why this client stopped (negative errno / TU_EEOF) */
} tu_echo_client;

/* Drive every client until each has sent tx_len and received rx_len bytes, or a client
 * fails, or timeout_ms passes, or nothing moves for 3 s (x TU_SLOW). Returns 0,
 * -ETIMEDOUT, or the first client's error. */
int tu_echo_drive(tu_echo_client *cl, int n, int timeout_ms);

/* ------------------------------------------------------------------------------------ */
/* Checks that may run on any thread                                                    */
/* ------------------------------------------------------------------------------------ */

void tu_check_fail(const char *file, int line, const char *what);
#define TU_CHECK(cond)                                                                     \
  do {                                                                                     \
    if (!(cond)) tu_check_fail(__FILE__, __LINE__, #cond);                                 \
  } while (0)
/* Record an integer comparison with both values in the message. */
void tu_check_eq_fail(const char *file, int line, const char *what, long long a,
                      long long b);
#define TU_CHECK_EQ(a, b)                                                                  \
  do {                                                                                     \
    long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);                              \
    if (tu_a_ != tu_b_) tu_check_eq_fail(__FILE__, __LINE__, #a " == " #b, tu_a_, tu_b_);  \
  } while (0)
/* Number of failed checks since the last reset; prints the first few to stderr. */
int tu_checks_failed(void);
void tu_checks_reset(void);

/* For the test thread (expands to cmocka's fail_msg): compare return codes and print
 * them by name. */
#define assert_rc(expr, want)                                                              \
  do {                                                                                     \
    int tu_rc_ = (int)(expr), tu_w_ = (int)(want);                                         \
    if (tu_rc_ != tu_w_)                                                                   \
      fail_msg("%s = %d (%s), want %d (%s)", #expr, tu_rc_, cgnet_err_name(tu_rc_), tu_w_, \
               cgnet_err_name(tu_w_));                                                     \
  } while (0)
/* Fail the test if any TU_CHECK failed on any thread. */
#define assert_no_check_failures()                                                         \
  do {                                                                                     \
    int tu_n_ = tu_checks_failed();                                                        \
    if (tu_n_ != 0)                                                                        \
      fail_msg("%d check(s) failed on loop/client threads (see above)", tu_n_);            \
  } while (0)

/* ------------------------------------------------------------------------------------ */
/* Per-connection tracker                                                               */
/* ------------------------------------------------------------------------------------ */

#define TU_MAX_CONNS 512
#define TU_SLOT_MAGIC 0x7e57c0deu

/* One per accepted connection; it is the conn's context. Fields written on the loop
 * thread are atomics because the test thread reads them while the engine runs. */
typedef struct tu_slot {
  unsigned magic;
  int index;
  atomic_int opens;
  atomic_int closes;
  atomic_int reason;    /* on_close reason */
  atomic_int loop;      /* cgnet_loop_index of the owning loop */
  atomic_int traffic;   /* on_traffic calls */
  atomic_size_t bytes;  /* test-specific byte count */
  atomic_size_t expect; /* test-specific expected count */
  atomic_size_t bad;    /* test-specific mismatches */
  atomic_size_t bytes_at_close;
  atomic_int remote_port; /* the peer's port as seen by the server */
} tu_slot;

typedef struct tu_tracker {
  atomic_int nslots;
  atomic_int opens, closes, shutdowns, boots, ticks, traffic, prewrites, prewrite_pending;
  atomic_int overflow;     /* more conns than TU_MAX_CONNS */
  atomic_int bad_ctx;      /* on_close saw a context that was not ours (or none) */
  atomic_int double_close; /* on_close ran twice for one conn */
  void *user;              /* test-specific */
  tu_slot slots[TU_MAX_CONNS];
} tu_tracker;

tu_tracker *tu_tracker_new(void);
void tu_tracker_free(tu_tracker *t);
/* The tracker behind handler.ud (use in callbacks). */
tu_tracker *tu_tracker_of_conn(cgnet_conn *c);
tu_tracker *tu_tracker_of_engine(cgnet_engine *eng);
/* on_open: take a slot, make it the conn's context. NULL if out of slots. */
tu_slot *tu_tracker_open(cgnet_conn *c);
/* The conn's slot (checks the magic), or NULL. */
tu_slot *tu_slot_of(cgnet_conn *c);
/* on_close: validate the context, count, record the reason. NULL if the context was bad
 * or the conn was already closed once. */
tu_slot *tu_tracker_close(cgnet_conn *c, int reason);
/* The slot of the conn whose peer uses `port` (the client's local port), or NULL. */
tu_slot *tu_tracker_find_port(tu_tracker *t, int port);
/* How many slots closed with `reason`. */
int tu_tracker_count_reason(tu_tracker *t, int reason);
/* 1 if every slot opened exactly once and closed exactly once and nothing odd happened. */
int tu_tracker_all_closed_once(tu_tracker *t);

/* ------------------------------------------------------------------------------------ */
/* Server fixture                                                                       */
/* ------------------------------------------------------------------------------------ */

typedef struct tu_server {
  cgnet_engine *eng;
  int port; /* listener 0's port */
} tu_server;

/* Start on "tcp://127.0.0.1:0". Returns cgnet_engine_start's code. */
int tu_server_start(tu_server *s, const cgnet_handler *h, const cgnet_options *o);
int tu_server_start_at(tu_server *s, const cgnet_handler *h, const char *const *addrs,
                       size_t naddrs, const cgnet_options *o);
/* cgnet_engine_stop(timeout) + cgnet_engine_wait + cgnet_engine_free, bounded by
 * TU_TIMEOUT_MS. Returns the wait code, or -ETIMEDOUT if the engine did not stop (then
 * it is abandoned, not freed). No-op (0) if s->eng is NULL. */
int tu_server_stop(tu_server *s, uint64_t stop_timeout_ms);
/* The engine is ending by itself (an action): cgnet_engine_wait + free, bounded. */
int tu_server_wait(tu_server *s, int timeout_ms);

/* Run fn(arg) on a new thread and join it within timeout_ms. Returns 0, or -ETIMEDOUT
 * (the thread is detached and left running). */
int tu_run_bounded(void *(*fn)(void *), void *arg, int timeout_ms);

/* An on_traffic that echoes every byte (streams and datagrams alike), counts the call in
 * the tracker behind handler.ud, and checks nothing stays buffered. */
cgnet_action tu_echo_tracked(cgnet_conn *c);

/* Run only the tests whose name contains $CGNET_TEST_FILTER (a glob if it has * or ?).
 * Call at the start of main(). */
void tu_apply_test_filter(void);

/* cmocka setup/teardown: arm a watchdog (SIGALRM → message and exit) and stop any
 * server a failed test left running. */
int tu_setup(void **state);
int tu_teardown(void **state);

#endif
