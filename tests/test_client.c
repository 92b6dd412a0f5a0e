/*
 * The client: dialing (non-blocking and blocking), enrolling, timeouts, refusals, early
 * async calls, attached clients, and echo through a cgnet server, over loopback.
 *
 * Every dialed conn's context is a `dconn` record; callbacks on the client's loops
 * write into it with atomics and TU_CHECK, the test thread asserts afterwards. Loops are
 * bounded in count and time; payloads shrink under TSan (TU_PAYLOAD_DIV).
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/dgram.h"
#include "support/support.h"

#define WAIT_MS (5000 * TU_SLOW)
#define MAX_DIALS 64

/* ---- the echo server ----------------------------------------------------------------- */

static atomic_int server_close_after_reply; /* echo, then CLOSE */

static cgnet_action echo_traffic(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n) TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  return atomic_load(&server_close_after_reply) ? CGNET_CLOSE : CGNET_NONE;
}

/* Echo on tcp, udp and a unix socket in `dir`; their addresses for dialing. */
typedef struct echo_addrs {
  char tcp[64], udp[64], unix_path[96];
} echo_addrs;

static void start_echo_server(tu_server *s, int loops, const char *dir, echo_addrs *a) {
  cgnet_handler h = {.on_traffic = echo_traffic};
  cgnet_options o = {.num_loops = loops, .write_buffer_limit = 64 << 20};
  char unix_addr[96];
  snprintf(unix_addr, sizeof unix_addr, "unix://%s/echo.sock", dir);
  const char *addrs[] = {"tcp://127.0.0.1:0", "udp://127.0.0.1:0", unix_addr};
  assert_rc(tu_server_start_at(s, &h, addrs, 3, &o), 0);
  snprintf(a->tcp, sizeof a->tcp, "tcp://127.0.0.1:%d",
           cgnet_engine_listen_port(s->eng, 0));
  snprintf(a->udp, sizeof a->udp, "udp://127.0.0.1:%d",
           cgnet_engine_listen_port(s->eng, 1));
  snprintf(a->unix_path, sizeof a->unix_path, "%s", unix_addr);
}

static void tcp_addr(char *buf, size_t cap, int port) {
  snprintf(buf, cap, "tcp://127.0.0.1:%d", port);
}

/* ---- one dialed conn ----------------------------------------------------------------- */

typedef struct dconn {
  atomic_int opens, closes, reason, traffic, traffic_before_open, wakes_seen;
  atomic_int loop_index;
  atomic_int is_datagram; /* cgnet_conn_is_datagram in on_open */
  size_t want;            /* bytes to echo */
  size_t dgram;           /* > 0: a datagram conn: sends want bytes in datagrams this large,
                             one at a time, the next when the previous one came back */
  uint64_t seed;          /* payload pattern */
  int write_on_open;      /* send the payload from on_open with cgnet_conn_write */
  atomic_size_t got, bad;
  atomic_size_t got_at_close;
  atomic_size_t bytes_sent; /* streaming tests */
  atomic_int writable_on, writable_off;
} dconn;

static dconn D[MAX_DIALS];

static void reset_dconns(void) {
  memset(D, 0, sizeof D);
}

static uint8_t *payload(size_t len, uint64_t seed) {
  uint8_t *p = malloc(len ? len : 1);
  assert_non_null(p);
  tu_pattern_fill(p, len, seed, 0);
  return p;
}

static cgnet_action cl_open(cgnet_conn *c) {
  dconn *d = cgnet_conn_context(c);
  atomic_fetch_add(&d->opens, 1);
  atomic_store(&d->loop_index, cgnet_loop_index(cgnet_conn_loop(c)));
  atomic_store(&d->is_datagram, cgnet_conn_is_datagram(c));
  TU_CHECK(cgnet_conn_client(c) != NULL);
  if (d->write_on_open && d->want) {
    size_t n = d->dgram ? d->dgram : d->want;
    uint8_t *p = payload(n, d->seed);
    TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
    free(p);
  }
  return CGNET_NONE;
}

/* A datagram conn's next datagram: the pattern from offset `off`. */
static void send_next_datagram(cgnet_conn *c, dconn *d, size_t off) {
  uint8_t buf[4096];
  size_t n = d->want - off < d->dgram ? d->want - off : d->dgram;
  tu_pattern_fill(buf, n, d->seed, off);
  TU_CHECK_EQ(cgnet_conn_write(c, buf, n), 0);
}

static cgnet_action cl_traffic(cgnet_conn *c) {
  dconn *d = cgnet_conn_context(c);
  atomic_fetch_add(&d->traffic, 1);
  if (atomic_load(&d->opens) == 0) atomic_fetch_add(&d->traffic_before_open, 1);
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n == 0) atomic_fetch_add(&d->wakes_seen, 1);
  size_t off = atomic_load(&d->got);
  atomic_fetch_add(&d->bad, tu_pattern_mismatches(p, n, d->seed, off));
  atomic_store(&d->got, off + n);
  if (d->want && off + n >= d->want) return CGNET_CLOSE;
  if (d->dgram && n) send_next_datagram(c, d, off + n);
  return CGNET_NONE;
}

static cgnet_action cl_close(cgnet_conn *c, int reason) {
  dconn *d = cgnet_conn_context(c);
  TU_CHECK(d != NULL);
  if (!d) return CGNET_NONE;
  atomic_store(&d->reason, reason);
  atomic_store(&d->got_at_close, atomic_load(&d->got));
  atomic_fetch_add(&d->closes, 1);
  return CGNET_NONE;
}

static const cgnet_handler client_handler = {
    .on_open = cl_open, .on_traffic = cl_traffic, .on_close = cl_close};

static int closes_ge(void *arg) {
  int n = *(int *)arg;
  for (int i = 0; i < n; i++)
    if (atomic_load(&D[i].closes) < 1) return 0;
  return 1;
}

static void wait_all_closed(int n) {
  assert_true(tu_wait_until(closes_ge, &n, WAIT_MS * 4));
}

/* ---- fixture: an echo server and a client -------------------------------------------- */

typedef struct fixture {
  tu_server s; /* eng NULL: no server */
  cgnet_client *cl;
  char addr[64]; /* the server's tcp address */
  echo_addrs all;
  char dir[64]; /* for the unix socket */
} fixture;

/* An echo server with server_loops loops (0: none) and a client with handler h (NULL:
 * client_handler) and options o (NULL: defaults); fresh dconn records. */
static void fx_start(fixture *f, int server_loops, const cgnet_handler *h,
                     const cgnet_options *o) {
  memset(f, 0, sizeof *f);
  if (server_loops) {
    assert_int_equal(tu_tmpdir(f->dir, sizeof f->dir), 0);
    start_echo_server(&f->s, server_loops, f->dir, &f->all);
    snprintf(f->addr, sizeof f->addr, "%s", f->all.tcp);
  }
  reset_dconns();
  assert_rc(cgnet_client_new(h ? h : &client_handler, o, &f->cl), 0);
}

static void fx_stop(fixture *f, uint64_t client_timeout_ms) {
  assert_rc(cgnet_client_free(f->cl, client_timeout_ms), 0);
  assert_rc(tu_server_stop(&f->s, 0), 0);
  if (f->dir[0]) tu_rmdir(f->dir);
  assert_no_check_failures();
}

/* ---- echo matrix --------------------------------------------------------------------- */

typedef struct echo_case {
  const char *scheme; /* "tcp", "udp" or "unix" */
  int loops;
  int async_write; /* 0: cgnet_conn_write from on_open; 1: async writes right after dial */
} echo_case;

static void test_echo(void **state) {
  const echo_case *ec = *state;
  enum { N = 10 };
  bool udp = strcmp(ec->scheme, "udp") == 0;
  /* Streams: 1 MiB per conn. UDP: 1 KiB datagrams, 32 of them, one in flight at a time
   * (a lossless exchange on loopback). */
  size_t len = udp ? 32 * 1024 : (1u << 20) / TU_PAYLOAD_DIV;
  size_t chunk = udp ? 1024 : 64 * 1024;
  cgnet_options o = {.num_loops = ec->loops, .write_high_watermark = CGNET_UNLIMITED};
  fixture f;
  fx_start(&f, 2, NULL, &o);
  const char *addr = udp                               ? f.all.udp
                     : strcmp(ec->scheme, "unix") == 0 ? f.all.unix_path
                                                       : f.all.tcp;
  cgnet_conn *refs[N];
  for (int i = 0; i < N; i++) {
    D[i].want = len;
    D[i].dgram = udp ? chunk : 0;
    D[i].seed = 1000 + (uint64_t)i;
    D[i].write_on_open = !ec->async_write;
    assert_rc(cgnet_client_dial(f.cl, addr, 5000, &D[i], &refs[i]), 0);
    assert_non_null(refs[i]);
    if (ec->async_write) { /* before the connect completes: queued, sent once open */
      size_t total = udp ? chunk : len; /* UDP: the first datagram; replies send the rest */
      uint8_t *p = payload(total, D[i].seed);
      for (size_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? total - off : chunk;
        assert_rc(cgnet_conn_async_write(refs[i], p + off, n, NULL, NULL), 0);
      }
      free(p);
    }
  }
  wait_all_closed(N);
  int loops_seen = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&D[i].opens), 1);
    assert_int_equal(atomic_load(&D[i].closes), 1);
    assert_rc(atomic_load(&D[i].reason), CGNET_ELOCALCLOSE);
    assert_int_equal(atomic_load(&D[i].got), len);
    assert_int_equal(atomic_load(&D[i].bad), 0);
    assert_int_equal(atomic_load(&D[i].traffic_before_open), 0);
    assert_int_equal(atomic_load(&D[i].is_datagram), udp);
    assert_true(cgnet_conn_is_closed(refs[i]));
    loops_seen |= 1 << atomic_load(&D[i].loop_index);
    cgnet_conn_unref(refs[i]);
  }
  /* Round-robin spreads the dials over every loop. */
  assert_int_equal(loops_seen, (1 << ec->loops) - 1);
  assert_int_equal(cgnet_client_count_connections(f.cl), 0);
  fx_stop(&f, 1000);
}

static int no_client_conns(void *arg) {
  return cgnet_client_count_connections(arg) == 0;
}

/* ---- failures ------------------------------------------------------------------------ */

static void test_refused(void **state) {
  (void)state;
  int port = 0;
  int lfd = tu_listen_any(&port); /* a free port: bound, then closed */
  assert_true(lfd >= 0);
  close(lfd);
  int fds_before = tu_count_fds();
  fixture f;
  fx_start(&f, 0, NULL, NULL);
  tcp_addr(f.addr, sizeof f.addr, port);
  for (int i = 0; i < 5; i++)
    assert_rc(cgnet_client_dial(f.cl, f.addr, 0, &D[i], NULL), 0);
  wait_all_closed(5);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(atomic_load(&D[i].opens), 0);
    assert_int_equal(atomic_load(&D[i].closes), 1);
    assert_rc(atomic_load(&D[i].reason), CGNET_ECONNREFUSED);
  }
  assert_true(tu_wait_until(no_client_conns, f.cl, WAIT_MS));
  /* Blocking form: the error comes back as the return value, after on_close. */
  assert_rc(cgnet_client_dial_wait(f.cl, f.addr, 0, &D[5], NULL), CGNET_ECONNREFUSED);
  assert_int_equal(atomic_load(&D[5].closes), 1);
  fx_stop(&f, 0);
  assert_int_equal(tu_count_fds(), fds_before);
}

/* UDP: the "connect" only fixes the peer, so the conn opens; the first datagram to a
 * closed port brings back an ICMP port unreachable, which closes it with ECONNREFUSED.
 * Unix: a missing path is ENOENT, a socket file nobody listens on is ECONNREFUSED. */
static void test_refused_udp_unix(void **state) {
  (void)state;
  int port = 0;
  int ufd = tu_udp_socket(AF_INET, 0); /* a free UDP port: bound, then closed */
  assert_true(ufd >= 0);
  port = tu_local_port(ufd);
  close(ufd);
  fixture f;
  fx_start(&f, 0, NULL, NULL);
  char addr[160];
  snprintf(addr, sizeof addr, "udp://127.0.0.1:%d", port);
  D[0].want = 1024;
  D[0].dgram = 512;
  D[0].write_on_open = 1;
  assert_rc(cgnet_client_dial(f.cl, addr, 0, &D[0], NULL), 0);

  char dir[64];
  assert_int_equal(tu_tmpdir(dir, sizeof dir), 0);
  snprintf(addr, sizeof addr, "unix://%s/nobody.sock", dir);
  assert_rc(cgnet_client_dial(f.cl, addr, 0, &D[1], NULL), 0);
  /* A stale socket file: bound once, its listener gone. */
  char path[96];
  snprintf(path, sizeof path, "%s/stale.sock", dir);
  int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
  assert_int_equal(bind(sfd, (struct sockaddr *)&sun, sizeof sun), 0);
  close(sfd);
  snprintf(addr, sizeof addr, "unix://%s", path);
  assert_rc(cgnet_client_dial(f.cl, addr, 0, &D[2], NULL), 0);

  wait_all_closed(3);
  assert_int_equal(atomic_load(&D[0].opens), 1);
  assert_rc(atomic_load(&D[0].reason), CGNET_ECONNREFUSED);
  assert_int_equal(atomic_load(&D[1].opens), 0);
  assert_rc(atomic_load(&D[1].reason), CGNET_ENOENT);
  assert_int_equal(atomic_load(&D[2].opens), 0);
  assert_rc(atomic_load(&D[2].reason), CGNET_ECONNREFUSED);
  tu_rmdir(dir);
  fx_stop(&f, 0);
}

/* A listener that never accepts, with its queue full: further SYNs get no answer. */
static int full_listener(int *port, int *fillers, int nfill) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 0) < 0)
    return -1;
  *port = tu_local_port(lfd);
  for (int i = 0; i < nfill; i++)
    fillers[i] = tu_connect(AF_INET, *port, 1, 0); /* non-blocking: may stay pending */
  tu_sleep_ms(50);
  return lfd;
}

static void test_dial_timeout(void **state) {
  (void)state;
  int port = 0, fillers[4];
  int lfd = full_listener(&port, fillers, 4);
  assert_true(lfd >= 0);
  fixture f;
  fx_start(&f, 0, NULL, NULL);
  tcp_addr(f.addr, sizeof f.addr, port);
  const uint64_t timeout = 300;
  uint64_t t0 = tu_now_ms();
  assert_rc(cgnet_client_dial_wait(f.cl, f.addr, timeout, &D[0], NULL), CGNET_ETIMEDOUT);
  uint64_t took = tu_now_ms() - t0;
  assert_int_equal(atomic_load(&D[0].opens), 0);
  assert_rc(atomic_load(&D[0].reason), CGNET_ETIMEDOUT);
  /* Within the timeout plus one tick (and scheduling slack on a shared machine). */
  assert_true(took >= timeout - 1);
  assert_true(took <= timeout + 50 * TU_SLOW);
  for (int i = 0; i < 4; i++)
    if (fillers[i] >= 0) close(fillers[i]);
  close(lfd);
  fx_stop(&f, 0);
}

static void test_bad_addresses(void **state) {
  (void)state;
  cgnet_client *cl;
  assert_rc(cgnet_client_new(&client_handler, NULL, &cl), 0);
  assert_rc(cgnet_client_dial(cl, "foo://127.0.0.1:1", 0, NULL, NULL), CGNET_EBADSCHEME);
  assert_rc(cgnet_client_dial(cl, "tcp://127.0.0.1", 0, NULL, NULL), CGNET_EBADPORT);
  assert_rc(cgnet_client_dial(cl, "tcp://example.invalid:99999", 0, NULL, NULL),
            CGNET_EBADPORT);
  assert_rc(cgnet_client_dial(cl, "tcp://1.2.3:80x", 0, NULL, NULL), CGNET_EBADPORT);
  assert_rc(cgnet_client_dial(cl, NULL, 0, NULL, NULL), CGNET_EINVAL);
  assert_int_equal(cgnet_client_count_connections(cl), 0);
  assert_rc(cgnet_client_free(cl, 0), 0);
}

/* A name that does not resolve fails through on_close, never blocking the caller on a
 * loop; "localhost" resolves and connects. */
static void test_names(void **state) {
  (void)state;
  fixture f;
  fx_start(&f, 1, NULL, NULL);
  assert_rc(cgnet_client_dial(f.cl, "tcp://no-such-host.invalid:80", 0, &D[0], NULL), 0);
  snprintf(f.addr, sizeof f.addr, "tcp4://localhost:%d", f.s.port); /* by name */
  D[1].want = 1000;
  D[1].seed = 7;
  D[1].write_on_open = 1;
  assert_rc(cgnet_client_dial(f.cl, f.addr, 5000, &D[1], NULL), 0);
  wait_all_closed(2);
  assert_int_equal(atomic_load(&D[0].opens), 0);
  assert_rc(atomic_load(&D[0].reason), CGNET_ERESOLVE);
  assert_int_equal(atomic_load(&D[1].opens), 1);
  assert_int_equal(atomic_load(&D[1].got), 1000);
  assert_int_equal(atomic_load(&D[1].bad), 0);
  fx_stop(&f, 0);
}

/* A udp:// dial by name: datagrams written while the name resolves wait, in order, and
 * go out once the socket exists, each as its own datagram (numeric dials connect before
 * any async write runs). Two early 1 KiB writes must come back as two datagrams. */
static void test_udp_by_name_early_writes(void **state) {
  (void)state;
  fixture f;
  fx_start(&f, 1, NULL, NULL);
  char addr[64];
  snprintf(addr, sizeof addr, "udp4://localhost:%d", cgnet_engine_listen_port(f.s.eng, 1));
  enum { N = 8 };
  cgnet_conn *refs[N];
  for (int i = 0; i < N; i++) {
    /* dgram 0: the conn sends nothing of its own when a reply comes back, so only the
     * two early writes can complete the exchange (with 1024, the first reply sent the
     * second half itself and the conn could finish, and close, before the test thread
     * made its second async write). */
    D[i].want = 2 * 1024;
    D[i].dgram = 0;
    D[i].seed = 700 + (uint64_t)i;
    assert_rc(cgnet_client_dial(f.cl, addr, 5000, &D[i], &refs[i]), 0);
    uint8_t *p = payload(2048, D[i].seed);
    assert_rc(cgnet_conn_async_write(refs[i], p, 1024, NULL, NULL), 0);
    assert_rc(cgnet_conn_async_write(refs[i], p + 1024, 1024, NULL, NULL), 0);
    free(p);
  }
  wait_all_closed(N);
  for (int i = 0; i < N; i++) {
    assert_rc(atomic_load(&D[i].reason), CGNET_ELOCALCLOSE);
    assert_int_equal(atomic_load(&D[i].got), D[i].want);
    assert_int_equal(atomic_load(&D[i].bad), 0);
    assert_int_equal(atomic_load(&D[i].traffic), 2); /* two datagrams, not one of 2 KiB */
    cgnet_conn_unref(refs[i]);
  }
  fx_stop(&f, 0);
}

/* ---- early calls and ordering -------------------------------------------------------- */

/* Wake and close right after dial, before the connect can have completed. */
static void test_wake_close_after_dial(void **state) {
  (void)state;
  fixture f;
  fx_start(&f, 1, NULL, NULL);
  enum { N = 20 };
  cgnet_conn *refs[N];
  for (int i = 0; i < N; i++) {
    assert_rc(cgnet_client_dial(f.cl, f.addr, 5000, &D[i], &refs[i]), 0);
    assert_rc(cgnet_conn_wake(refs[i]), 0);
    if (i % 2 == 0) assert_rc(cgnet_conn_async_close(refs[i], NULL, NULL), 0);
  }
  /* The odd ones stay open: their wake shows as one on_traffic with no bytes, after
   * on_open. */
  for (int i = 1; i < N; i += 2)
    assert_true(tu_wait_atomic_ge(&D[i].wakes_seen, 1, WAIT_MS));
  for (int i = 0; i < N; i++) {
    if (i % 2 == 1) assert_rc(cgnet_conn_async_close(refs[i], NULL, NULL), 0);
  }
  wait_all_closed(N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&D[i].closes), 1);
    assert_rc(atomic_load(&D[i].reason), CGNET_ELOCALCLOSE);
    assert_int_equal(atomic_load(&D[i].traffic_before_open), 0);
    if (i % 2 == 1) assert_int_equal(atomic_load(&D[i].opens), 1);
    assert_true(atomic_load(&D[i].opens) <= 1);
    cgnet_conn_unref(refs[i]);
  }
  fx_stop(&f, 0);
}

/* A server that replies and closes at once: the reply reaches on_traffic before
 * on_close (EOF). */
static void test_data_before_close(void **state) {
  (void)state;
  fixture f;
  fx_start(&f, 1, NULL, NULL);
  atomic_store(&server_close_after_reply, 1);
  enum { N = 10 };
  for (int i = 0; i < N; i++) {
    D[i].want = 0; /* never closes by itself: waits for the server's close */
    D[i].seed = 50 + (uint64_t)i;
    D[i].write_on_open = 0;
    cgnet_conn *c;
    assert_rc(cgnet_client_dial_wait(f.cl, f.addr, 5000, &D[i], &c), 0);
    uint8_t *p = payload(3000, D[i].seed);
    assert_rc(cgnet_conn_async_write(c, p, 3000, NULL, NULL), 0);
    free(p);
    cgnet_conn_unref(c);
  }
  wait_all_closed(N);
  for (int i = 0; i < N; i++) {
    assert_rc(atomic_load(&D[i].reason), CGNET_EOF);
    /* Whatever the server echoed before closing arrived, intact, before on_close. */
    assert_true(atomic_load(&D[i].got_at_close) > 0);
    assert_int_equal(atomic_load(&D[i].got_at_close), atomic_load(&D[i].got));
    assert_int_equal(atomic_load(&D[i].bad), 0);
  }
  atomic_store(&server_close_after_reply, 0);
  fx_stop(&f, 0);
}

/* ---- enroll -------------------------------------------------------------------------- */

static void test_enroll(void **state) {
  (void)state;
  fixture f;
  fx_start(&f, 1, NULL, NULL);
  int fd = tu_connect(AF_INET, f.s.port, 0, WAIT_MS);
  assert_true(fd >= 0);
  D[0].want = 200000 / TU_PAYLOAD_DIV;
  D[0].seed = 99;
  D[0].write_on_open = 1;
  assert_rc(cgnet_client_enroll(f.cl, fd, &D[0], NULL), 0);
  wait_all_closed(1);
  assert_int_equal(atomic_load(&D[0].opens), 1);
  assert_int_equal(atomic_load(&D[0].got), D[0].want);
  assert_int_equal(atomic_load(&D[0].bad), 0);
  /* A connected UDP socket becomes a datagram conn. */
  int udp_port = cgnet_engine_listen_port(f.s.eng, 1);
  int ufd = tu_udp_socket(AF_INET, udp_port);
  assert_true(ufd >= 0);
  D[1].want = 8 * 1024;
  D[1].dgram = 1024;
  D[1].seed = 98;
  D[1].write_on_open = 1;
  assert_rc(cgnet_client_enroll(f.cl, ufd, &D[1], NULL), 0);
  wait_all_closed(2);
  assert_int_equal(atomic_load(&D[1].got), D[1].want);
  assert_int_equal(atomic_load(&D[1].bad), 0);
  /* A datagram socket with no peer: refused, and cgnet closes the fd. */
  int fds_before = tu_count_fds();
  int lone = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(lone >= 0);
  assert_rc(cgnet_client_enroll(f.cl, lone, NULL, NULL), CGNET_ENOTCONN);
  assert_int_equal(tu_count_fds(), fds_before);
  /* Stream sockets with no peer, never connected or listening: each is refused and
   * closed, and no on_open runs. */
  int fresh = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fresh >= 0);
  assert_rc(cgnet_client_enroll(f.cl, fresh, &D[2], NULL), CGNET_ENOTCONN);
  int lport = 0;
  int listening = tu_listen_any(&lport);
  assert_true(listening >= 0);
  assert_rc(cgnet_client_enroll(f.cl, listening, &D[2], NULL), CGNET_ENOTCONN);
  assert_int_equal(tu_count_fds(), fds_before);
  assert_int_equal(atomic_load(&D[2].opens), 0);
  assert_int_equal(atomic_load(&D[2].closes), 0);
  assert_rc(cgnet_client_enroll(f.cl, -1, NULL, NULL), CGNET_EBADF);
  fx_stop(&f, 0);
}

/* ---- free with open conns ------------------------------------------------------------ */

static void test_free_closes_conns(void **state) {
  (void)state;
  fixture f;
  cgnet_options o = {.num_loops = 2};
  fx_start(&f, 1, NULL, &o);
  enum { N = 8 };
  for (int i = 0; i < N; i++)
    assert_rc(cgnet_client_dial_wait(f.cl, f.addr, 5000, &D[i], NULL), 0);
  assert_int_equal(cgnet_client_count_connections(f.cl), N);
  assert_true(tu_wait_conns(f.s.eng, N, WAIT_MS));
  assert_rc(cgnet_client_free(f.cl, 500), 0);
  f.cl = NULL;
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&D[i].closes), 1);
    assert_rc(atomic_load(&D[i].reason), CGNET_ESHUTDOWN);
  }
  assert_true(tu_wait_conns(f.s.eng, 0, WAIT_MS));
  fx_stop(&f, 0);
}

/* ---- a client on a server's loops ---------------------------------------------------- */

/* The front server dials a backend per accepted conn from on_open, on the same loop. */
static struct {
  _Atomic(cgnet_client *) cl; /* NULL once freed: on_open then dials nothing */
  char backend[64];
  atomic_int same_loop, different_loop, dial_errors;
} F;

static cgnet_action front_open(cgnet_conn *c) {
  static atomic_int next;
  int i = atomic_fetch_add(&next, 1) % MAX_DIALS;
  D[i].want = 5000;
  D[i].seed = 300 + (uint64_t)i;
  D[i].write_on_open = 1;
  cgnet_client *cl = atomic_load(&F.cl);
  if (!cl) return CGNET_CLOSE;
  cgnet_conn *b;
  int rc = cgnet_client_dial(cl, F.backend, 5000, &D[i], &b);
  if (rc) {
    atomic_fetch_add(&F.dial_errors, 1);
    return CGNET_CLOSE;
  }
  atomic_fetch_add(
      cgnet_conn_loop(b) == cgnet_conn_loop(c) ? &F.same_loop : &F.different_loop, 1);
  cgnet_conn_unref(b);
  return CGNET_NONE;
}

static void test_attached(void **state) {
  (void)state;
  fixture bf; /* the backend: an echo server; its client is not used */
  fx_start(&bf, 1, NULL, NULL);
  tu_server front;
  memset(&F, 0, sizeof F);
  snprintf(F.backend, sizeof F.backend, "%s", bf.all.tcp);
  cgnet_handler fh = {.on_open = front_open};
  cgnet_options fo = {.num_loops = 3};
  /* The engine first, then the client on its loops, then the front's clients. */
  assert_rc(tu_server_start(&front, &fh, &fo), 0);
  cgnet_client *cl;
  assert_rc(cgnet_client_new_on(front.eng, &client_handler, NULL, &cl), 0);
  assert_true(cgnet_client_engine(cl) == front.eng);
  atomic_store(&F.cl, cl);
  enum { N = 9 };
  int fds[N];
  for (int i = 0; i < N; i++) {
    fds[i] = tu_connect(AF_INET, front.port, 0, WAIT_MS);
    assert_true(fds[i] >= 0);
  }
  wait_all_closed(N);
  assert_int_equal(atomic_load(&F.dial_errors), 0);
  assert_int_equal(atomic_load(&F.same_loop), N);
  assert_int_equal(atomic_load(&F.different_loop), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&D[i].got), 5000);
    assert_int_equal(atomic_load(&D[i].bad), 0);
    close(fds[i]);
  }
  /* The engine keeps running after its client is freed. */
  atomic_store(&F.cl, NULL);
  assert_rc(cgnet_client_free(cl, 0), 0);
  int fd = tu_connect(AF_INET, front.port, 0, WAIT_MS);
  assert_true(fd >= 0);
  assert_rc(tu_expect_eof(fd, WAIT_MS, NULL), 0);
  close(fd);
  assert_rc(tu_server_stop(&front, 0), 0);
  fx_stop(&bf, 0);
}

/* ---- closing a conn before it joined its loop ---------------------------------------- */

/* The front's on_open (a loop thread) dials or enrolls a backend conn on the same loop and
 * closes it at once, before the loop has run anything for it: what a proxy does when its
 * front conn goes away. Each case says how the new conn is made and whether the caller
 * keeps a reference across the close. */
typedef enum early_kind { EARLY_TCP, EARLY_UNIX, EARLY_NAME, EARLY_ENROLL } early_kind;
typedef struct early_case {
  early_kind kind;
  int hold_ref;
} early_case;

static struct {
  _Atomic(cgnet_client *) cl;
  char tcp[64], unix_path[96], name[64];
  int backend_port;
  const early_case *ec;
  atomic_int next, dial_errors, close_errors;
  cgnet_conn *held[MAX_DIALS]; /* hold_ref: the references, dropped by the test */
} E;

static cgnet_action early_front_open(cgnet_conn *front) {
  int i = atomic_fetch_add(&E.next, 1);
  cgnet_client *cl = atomic_load(&E.cl);
  if (i >= MAX_DIALS || !cl) return CGNET_CLOSE;
  cgnet_conn *b = NULL;
  int rc;
  switch (E.ec->kind) {
  case EARLY_ENROLL: {
    int fd = tu_connect(AF_INET, E.backend_port, 0, WAIT_MS);
    rc = fd < 0 ? CGNET_EIO : cgnet_client_enroll(cl, fd, &D[i], &b);
    break;
  }
  default: {
    const char *addr = E.ec->kind == EARLY_TCP    ? E.tcp
                       : E.ec->kind == EARLY_UNIX ? E.unix_path
                                                  : E.name;
    rc = cgnet_client_dial(cl, addr, 5000, &D[i], &b);
  }
  }
  if (rc) {
    atomic_fetch_add(&E.dial_errors, 1);
    return CGNET_CLOSE;
  }
  TU_CHECK(cgnet_conn_loop(b) == cgnet_conn_loop(front));
  if (cgnet_conn_close(b) != 0) atomic_fetch_add(&E.close_errors, 1);
  /* A second close reports that the conn is already closing. */
  TU_CHECK_EQ(cgnet_conn_close(b), CGNET_ECLOSED);
  if (E.ec->hold_ref)
    E.held[i] = b;
  else
    cgnet_conn_unref(b);
  return CGNET_CLOSE;
}

static void test_close_before_enter(void **state) {
  const early_case *ec = *state;
  fixture bf; /* the backend */
  fx_start(&bf, 1, NULL, NULL);
  memset(&E, 0, sizeof E);
  E.ec = ec;
  E.backend_port = bf.s.port;
  snprintf(E.tcp, sizeof E.tcp, "%s", bf.all.tcp);
  snprintf(E.unix_path, sizeof E.unix_path, "%s", bf.all.unix_path);
  snprintf(E.name, sizeof E.name, "tcp://localhost:%d", bf.s.port);
  tu_server front;
  cgnet_handler fh = {.on_open = early_front_open};
  cgnet_options fo = {.num_loops = 2};
  assert_rc(tu_server_start(&front, &fh, &fo), 0);
  cgnet_client *cl;
  assert_rc(cgnet_client_new_on(front.eng, &client_handler, NULL, &cl), 0);
  atomic_store(&E.cl, cl);
  enum { N = 16 };
  for (int i = 0; i < N; i++) {
    int fd = tu_connect(AF_INET, front.port, 0, WAIT_MS);
    assert_true(fd >= 0);
    assert_rc(tu_expect_eof(fd, WAIT_MS, NULL), 0); /* the front closed it */
    close(fd);
  }
  wait_all_closed(N);
  assert_int_equal(atomic_load(&E.dial_errors), 0);
  assert_int_equal(atomic_load(&E.close_errors), 0);
  for (int i = 0; i < N; i++) {
    /* Closed before it connected: one on_close, no on_open, no traffic. */
    assert_int_equal(atomic_load(&D[i].opens), 0);
    assert_int_equal(atomic_load(&D[i].closes), 1);
    assert_rc(atomic_load(&D[i].reason), CGNET_ELOCALCLOSE);
    assert_int_equal(atomic_load(&D[i].traffic), 0);
  }
  assert_true(tu_wait_until(no_client_conns, cl, WAIT_MS));
  /* The loops still serve: a conn to the front is accepted and closed by on_open. */
  int fd = tu_connect(AF_INET, front.port, 0, WAIT_MS);
  assert_true(fd >= 0);
  assert_rc(tu_expect_eof(fd, WAIT_MS, NULL), 0);
  close(fd);
  atomic_store(&E.cl, NULL);
  assert_rc(cgnet_client_free(cl, 0), 0);
  assert_rc(tu_server_stop(&front, 0), 0);
  /* N conns to the front, and the one just above: each dialed one backend conn. */
  assert_int_equal(atomic_load(&E.next), N + 1);
  for (int i = 0; i <= N && ec->hold_ref; i++) { /* references outlive conns and engine */
    assert_non_null(E.held[i]);
    assert_true(cgnet_conn_is_closed(E.held[i]));
    assert_rc(cgnet_conn_async_write(E.held[i], "x", 1, NULL, NULL), CGNET_ECLOSED);
    cgnet_conn_unref(E.held[i]);
  }
  fx_stop(&bf, 0);
}

/* ---- streaming with the default options ---------------------------------------------- */

/* Each conn streams its payload paced by cgnet_conn_writable / on_writable_changed (the
 * way an application is meant to), with the flow-control options at their defaults, against
 * a cgnet echo server with its defaults. A client that paused its own reading at the high
 * watermark would deadlock here: both sides would stop reading with full pipes. */
static void stream_more(cgnet_conn *c) {
  dconn *d = cgnet_conn_context(c);
  static _Thread_local uint8_t chunk[32768];
  size_t sent = atomic_load(&d->bytes_sent);
  while (sent < d->want && cgnet_conn_writable(c)) {
    size_t n = d->want - sent < sizeof chunk ? d->want - sent : sizeof chunk;
    tu_pattern_fill(chunk, n, d->seed, sent);
    if (cgnet_conn_write(c, chunk, n) != 0) break;
    sent += n;
  }
  atomic_store(&d->bytes_sent, sent);
}

static cgnet_action stream_open(cgnet_conn *c) {
  dconn *d = cgnet_conn_context(c);
  atomic_fetch_add(&d->opens, 1);
  stream_more(c);
  return CGNET_NONE;
}

static cgnet_action stream_traffic(cgnet_conn *c) {
  cgnet_action a = cl_traffic(c);
  if (a == CGNET_NONE) stream_more(c);
  return a;
}

static void stream_writable(cgnet_conn *c, int writable) {
  dconn *d = cgnet_conn_context(c);
  atomic_fetch_add(writable ? &d->writable_on : &d->writable_off, 1);
  if (writable) stream_more(c);
}

static void test_stream_defaults(void **state) {
  (void)state;
  cgnet_handler h = {.on_open = stream_open,
                     .on_traffic = stream_traffic,
                     .on_close = cl_close,
                     .on_writable_changed = stream_writable};
  /* Defaults, except small socket buffers so the output queue really crosses the
   * watermarks (the kernel would otherwise absorb megabytes first). */
  cgnet_options o = {.socket_send_buffer = 16384, .socket_recv_buffer = 16384};
  fixture f;
  fx_start(&f, 1, &h, &o);
  enum { N = 4 };
  for (int i = 0; i < N; i++) {
    D[i].want = ((size_t)8 << 20) / TU_PAYLOAD_DIV;
    D[i].seed = 4000 + (uint64_t)i;
    assert_rc(cgnet_client_dial(f.cl, f.addr, 5000, &D[i], NULL), 0);
  }
  wait_all_closed(N);
  for (int i = 0; i < N; i++) {
    assert_rc(atomic_load(&D[i].reason), CGNET_ELOCALCLOSE);
    assert_int_equal(atomic_load(&D[i].got), D[i].want);
    assert_int_equal(atomic_load(&D[i].bad), 0);
    /* The payload is far above the watermark: pacing really happened. */
    assert_true(atomic_load(&D[i].writable_off) > 0);
    assert_true(atomic_load(&D[i].writable_on) > 0);
  }
  fx_stop(&f, 0);
}

/* Stopping the engine a client runs on closes the client's conns too (ESHUTDOWN); the
 * client is freed afterwards, before the engine. */
static void test_engine_stop_closes_attached(void **state) {
  (void)state;
  fixture bf; /* the backend */
  fx_start(&bf, 1, NULL, NULL);
  cgnet_engine *host; /* not a tu_server: it must outlive the client */
  cgnet_handler hh = {0};
  const char *haddr = "tcp://127.0.0.1:0";
  assert_rc(cgnet_engine_start(&hh, &haddr, 1, NULL, &host), 0);
  cgnet_client *cl;
  assert_rc(cgnet_client_new_on(host, &client_handler, NULL, &cl), 0);
  enum { N = 6 };
  for (int i = 0; i < N; i++)
    assert_rc(cgnet_client_dial_wait(cl, bf.all.tcp, 5000, &D[i], NULL), 0);
  assert_int_equal(cgnet_client_count_connections(cl), N);
  assert_rc(cgnet_engine_stop(host, 0), 0); /* returns once every loop has exited */
  wait_all_closed(N);
  for (int i = 0; i < N; i++)
    assert_rc(atomic_load(&D[i].reason), CGNET_ESHUTDOWN);
  assert_rc(cgnet_client_dial(cl, bf.all.tcp, 0, NULL, NULL), CGNET_ESHUTDOWN);
  assert_int_equal(cgnet_client_count_connections(cl), 0);
  assert_rc(cgnet_client_free(cl, 0), 0);
  assert_rc(cgnet_engine_wait(host), 0);
  cgnet_engine_free(host);
  fx_stop(&bf, 0);
}

static const early_case early_cases[] = {
    {EARLY_TCP, 0},  {EARLY_TCP, 1},  {EARLY_UNIX, 0},   {EARLY_UNIX, 1},
    {EARLY_NAME, 0}, {EARLY_NAME, 1}, {EARLY_ENROLL, 0}, {EARLY_ENROLL, 1},
};

static const echo_case ec_cases[] = {
    {"tcp", 1, 0},  {"tcp", 1, 1},  {"tcp", 4, 0},  {"tcp", 4, 1},
    {"udp", 1, 0},  {"udp", 1, 1},  {"udp", 4, 0},  {"udp", 4, 1},
    {"unix", 1, 0}, {"unix", 1, 1}, {"unix", 4, 0}, {"unix", 4, 1},
};

#define T(name, f, st)                                                                     \
  { name, f, tu_setup, tu_teardown, (void *)(st) }

int main(void) {
  tu_apply_test_filter();
  tu_raise_nofile(4096);
  const struct CMUnitTest tests[] = {
      T("echo/tcp/1loop/sync", test_echo, &ec_cases[0]),
      T("echo/tcp/1loop/async", test_echo, &ec_cases[1]),
      T("echo/tcp/4loops/sync", test_echo, &ec_cases[2]),
      T("echo/tcp/4loops/async", test_echo, &ec_cases[3]),
      T("echo/udp/1loop/sync", test_echo, &ec_cases[4]),
      T("echo/udp/1loop/async", test_echo, &ec_cases[5]),
      T("echo/udp/4loops/sync", test_echo, &ec_cases[6]),
      T("echo/udp/4loops/async", test_echo, &ec_cases[7]),
      T("echo/unix/1loop/sync", test_echo, &ec_cases[8]),
      T("echo/unix/1loop/async", test_echo, &ec_cases[9]),
      T("echo/unix/4loops/sync", test_echo, &ec_cases[10]),
      T("echo/unix/4loops/async", test_echo, &ec_cases[11]),
      T("refused", test_refused, NULL),
      T("refused_udp_unix", test_refused_udp_unix, NULL),
      T("dial_timeout", test_dial_timeout, NULL),
      T("bad_addresses", test_bad_addresses, NULL),
      T("names", test_names, NULL),
      T("udp_by_name_early_writes", test_udp_by_name_early_writes, NULL),
      T("wake_close_after_dial", test_wake_close_after_dial, NULL),
      T("data_before_close", test_data_before_close, NULL),
      T("enroll", test_enroll, NULL),
      T("free_closes_conns", test_free_closes_conns, NULL),
      T("attached", test_attached, NULL),
      T("engine_stop_closes_attached", test_engine_stop_closes_attached, NULL),
      T("stream_defaults", test_stream_defaults, NULL),
      T("close_before_enter/tcp", test_close_before_enter, &early_cases[0]),
      T("close_before_enter/tcp/ref", test_close_before_enter, &early_cases[1]),
      T("close_before_enter/unix", test_close_before_enter, &early_cases[2]),
      T("close_before_enter/unix/ref", test_close_before_enter, &early_cases[3]),
      T("close_before_enter/name", test_close_before_enter, &early_cases[4]),
      T("close_before_enter/name/ref", test_close_before_enter, &early_cases[5]),
      T("close_before_enter/enroll", test_close_before_enter, &early_cases[6]),
      T("close_before_enter/enroll/ref", test_close_before_enter, &early_cases[7]),
  };
  return cmocka_run_group_tests_name("test_client", tests, NULL, NULL);
}
