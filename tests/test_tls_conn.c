/*
 * TLS conns end to end over loopback: cgnet servers on tls:// addresses and cgnet
 * clients dialing them, with certificates made at test time (tests/support/tls_certs.c):
 * echo of many random-sized writes with every byte checked, ALPN, SNI, client
 * certificates, resumption, the getters, pause/resume and watermarks, codecs, handshake
 * failures (timeout, plain HTTP, random bytes, bad certificates, truncated
 * ClientHellos), truncation, a storm of simultaneous handshakes and the per-turn
 * handshake budget, renegotiation refused, burst writes against write_buffer_limit, the
 * buffers of an idle conn, and outside clients (openssl s_client, also resuming, and
 * Python's ssl).
 *
 * Built without TLS, tls:// addresses must say CGNET_EUNSUPPORTED; the rest is skipped.
 *
 * cgnet-test-timeout: 600
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "cgnet_tls.h"
#include "support/support.h"
#include "support/tls_certs.h"

#ifdef CGNET_HAVE_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>

/* Bytes a conn's TLS session holds in buffers (src/core.h; loop thread). */
size_t cgnet__tls_conn_held(const cgnet_conn *c);
#endif

/* Without TLS, a tls:// listener or dial is refused as unsupported. */
static void test_tls_addresses_without_tls(void **state) {
  (void)state;
  if (cgnet_tls_available()) skip();
  cgnet_handler h = {0};
  cgnet_options o = {.log_level = CGNET_LOG_OFF};
  const char *addrs[] = {"tls://127.0.0.1:0"};
  cgnet_engine *eng = NULL;
  assert_rc(cgnet_engine_start(&h, addrs, 1, &o, &eng), CGNET_EUNSUPPORTED);
  assert_null(eng);
  cgnet_client *cl = NULL;
  assert_rc(cgnet_client_new(&h, &o, &cl), 0);
  cgnet_conn *c = NULL;
  assert_rc(cgnet_client_dial(cl, "tls://127.0.0.1:1", 1000, NULL, &c), CGNET_EUNSUPPORTED);
  assert_null(c);
  assert_rc(cgnet_client_free(cl, 1000), 0);
}

#ifndef CGNET_HAVE_TLS

static void test_tls_conn_skipped(void **state) {
  (void)state;
  print_message("test_tls_conn: built without TLS: the TLS conn tests are skipped\n");
  skip();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tls_addresses_without_tls),
      cmocka_unit_test(test_tls_conn_skipped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* CGNET_HAVE_TLS */

static tu_tls_certs certs;

/* ------------------------------------------------------------------------------------ */
/* Contexts                                                                             */
/* ------------------------------------------------------------------------------------ */

static cgnet_tls_ctx *make_ctx(const cgnet_tls_options *o) {
  char msg[256] = "";
  cgnet_tls_ctx *ctx = NULL;
  int rc = cgnet_tls_ctx_new(o, &ctx, msg, sizeof msg);
  if (rc) fail_msg("cgnet_tls_ctx_new: %s: %s", cgnet_err_name(rc), msg);
  return ctx;
}

/* A server context on one certificate (the test CA's localhost one by default). */
static cgnet_tls_ctx *server_ctx_with(const tu_pem *pem, const cgnet_tls_options *extra) {
  cgnet_tls_cert cert = {0};
  if (pem) cert = (cgnet_tls_cert){.chain = {.data = pem->cert}, .key = {.data = pem->key}};
  cgnet_tls_options o = extra ? *extra : (cgnet_tls_options){0};
  o.role = CGNET_TLS_SERVER;
  if (!o.certs) {
    o.certs = &cert;
    o.ncerts = 1;
  }
  if (o.client_cert) o.ca.data = certs.ca.cert;
  return make_ctx(&o);
}

static cgnet_tls_ctx *server_ctx(void) {
  return server_ctx_with(&certs.server, NULL);
}

/* A client context trusting the test CA. */
static cgnet_tls_ctx *client_ctx_with(const cgnet_tls_options *extra) {
  cgnet_tls_options o = extra ? *extra : (cgnet_tls_options){0};
  o.role = CGNET_TLS_CLIENT;
  o.ca.data = certs.ca.cert;
  return make_ctx(&o);
}

static cgnet_tls_ctx *client_ctx(void) {
  return client_ctx_with(NULL);
}

/* ------------------------------------------------------------------------------------ */
/* The server: echo, with everything it saw counted                                     */
/* ------------------------------------------------------------------------------------ */

typedef struct srv_state {
  /* Guards the strings: a later conn's callback rewrites them while the test thread
   * may still be reading the last ones (SRV_LOCKED). */
  pthread_mutex_t mu;
  atomic_int opens, closes, tls_errors, last_error_code, last_close_reason;
  atomic_int writable_off, writable_on;
  atomic_size_t bytes;
  char last_reason[128]; /* written before tls_errors is incremented */
  char subject[256];     /* the last client certificate subject seen (before opens++) */
  char sni[64];          /* the last server name seen (before opens++) */
  char alpn[32];
  atomic_int resumed; /* conns that said they were resumed */
  atomic_int bad_getters;
  _Atomic(cgnet_conn *) last_conn; /* the last conn opened (valid while it is open) */
} srv_state;

static srv_state *srv_of(cgnet_conn *c) {
  return cgnet_engine_userdata(cgnet_loop_engine(cgnet_conn_loop(c)));
}

static void copy_str(char *dst, size_t cap, const char *src, size_t len) {
  if (len >= cap) len = cap - 1;
  memcpy(dst, src, len);
  dst[len] = '\0';
}

static cgnet_action srv_open(cgnet_conn *c) {
  srv_state *s = srv_of(c);
  if (!cgnet_conn_is_tls(c) || !cgnet_conn_tls_version(c) || !cgnet_conn_tls_cipher(c))
    atomic_fetch_add(&s->bad_getters, 1);
  pthread_mutex_lock(&s->mu);
  cgnet_conn_tls_peer_subject(c, s->subject, sizeof s->subject);
  const char *sni = cgnet_conn_tls_server_name(c);
  copy_str(s->sni, sizeof s->sni, sni ? sni : "", sni ? strlen(sni) : 0);
  size_t n = 0;
  const uint8_t *p = cgnet_conn_tls_alpn(c, &n);
  copy_str(s->alpn, sizeof s->alpn, p ? (const char *)p : "", n);
  pthread_mutex_unlock(&s->mu);
  if (cgnet_conn_tls_resumed(c)) atomic_fetch_add(&s->resumed, 1);
  atomic_store(&s->last_conn, c);
  atomic_fetch_add(&s->opens, 1);
  return CGNET_NONE;
}

static cgnet_action srv_echo(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n) {
    TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
    atomic_fetch_add(&srv_of(c)->bytes, n);
  }
  return CGNET_NONE;
}

static cgnet_action srv_close(cgnet_conn *c, int reason) {
  srv_state *s = srv_of(c);
  atomic_store(&s->last_close_reason, reason);
  atomic_fetch_add(&s->closes, 1);
  return CGNET_NONE;
}

static void srv_tls_error(cgnet_conn *c, int code, const char *reason) {
  srv_state *s = srv_of(c);
  TU_CHECK(reason != NULL);
  TU_CHECK(cgnet_conn_tls_error(c) != NULL);
  pthread_mutex_lock(&s->mu);
  copy_str(s->last_reason, sizeof s->last_reason, reason ? reason : "",
           reason ? strlen(reason) : 0);
  pthread_mutex_unlock(&s->mu);
  atomic_store(&s->last_error_code, code);
  atomic_fetch_add(&s->tls_errors, 1);
}

static void srv_writable(cgnet_conn *c, int writable) {
  atomic_fetch_add(writable ? &srv_of(c)->writable_on : &srv_of(c)->writable_off, 1);
}

/* Run a check on the server's strings under their lock. */
#define SRV_LOCKED(st, check)                                                              \
  do {                                                                                     \
    pthread_mutex_lock(&(st).mu);                                                          \
    check;                                                                                 \
    pthread_mutex_unlock(&(st).mu);                                                        \
  } while (0)

static void srv_state_init(srv_state *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
}

static cgnet_handler srv_handler(srv_state *s) {
  return (cgnet_handler){.ud = s,
                         .on_open = srv_open,
                         .on_traffic = srv_echo,
                         .on_close = srv_close,
                         .on_tls_error = srv_tls_error,
                         .on_writable_changed = srv_writable};
}

typedef struct server {
  tu_server s;
  srv_state st;
  cgnet_handler h;
} server;

/* A TLS echo server on tls://127.0.0.1:0 over ctx (the engine keeps its own reference;
 * ours is released here). */
static void server_start(server *sv, cgnet_tls_ctx *ctx, const cgnet_options *extra) {
  srv_state_init(&sv->st);
  sv->h = srv_handler(&sv->st);
  cgnet_options o = extra ? *extra : (cgnet_options){0};
  o.tls = ctx;
  if (!o.log_level) o.log_level = CGNET_LOG_ERROR;
  const char *addrs[] = {"tls://127.0.0.1:0"};
  assert_rc(tu_server_start_at(&sv->s, &sv->h, addrs, 1, &o), 0);
  cgnet_tls_ctx_free(ctx);
}

static void server_stop(server *sv) {
  assert_rc(tu_server_stop(&sv->s, 1000), 0);
}

/* ------------------------------------------------------------------------------------ */
/* The client: a cgnet client whose conns check an echoed pattern                      */
/* ------------------------------------------------------------------------------------ */

typedef struct cli_conn {
  uint64_t seed;
  atomic_size_t got; /* bytes received and checked */
  atomic_size_t bad; /* of which differed from the pattern */
  atomic_int opened; /* on_open ran */
  atomic_int closed; /* on_close ran; reason below */
  atomic_int reason;
  atomic_int resumed;
  atomic_int tls_error; /* on_tls_error's code */
  char error[128];      /* its reason (written before tls_error) */
  char alpn[32];
  const uint8_t *expect; /* the bytes to receive (NULL: the pattern of seed) */
  size_t send_on_open;   /* pattern bytes to write from on_open */
  int pause_on_open;     /* pause reading in on_open */
} cli_conn;

static cgnet_action cli_open(cgnet_conn *c) {
  cli_conn *cc = cgnet_conn_context(c);
  size_t n = 0;
  const uint8_t *p = cgnet_conn_tls_alpn(c, &n);
  copy_str(cc->alpn, sizeof cc->alpn, p ? (const char *)p : "", n);
  atomic_store(&cc->resumed, cgnet_conn_tls_resumed(c));
  TU_CHECK(cgnet_conn_tls_version(c) != NULL);
  if (cc->send_on_open) {
    uint8_t *buf = malloc(cc->send_on_open);
    tu_pattern_fill(buf, cc->send_on_open, cc->seed, 0);
    TU_CHECK_EQ(cgnet_conn_write(c, buf, cc->send_on_open), 0);
    free(buf);
  }
  if (cc->pause_on_open) TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
  atomic_store(&cc->opened, 1);
  return CGNET_NONE;
}

static cgnet_action cli_traffic(cgnet_conn *c) {
  cli_conn *cc = cgnet_conn_context(c);
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  size_t at = atomic_load(&cc->got);
  if (cc->expect)
    atomic_fetch_add(&cc->bad, memcmp(p, cc->expect + at, n) != 0);
  else
    atomic_fetch_add(&cc->bad, tu_pattern_mismatches(p, n, cc->seed, at));
  atomic_store(&cc->got, at + n);
  return CGNET_NONE;
}

static cgnet_action cli_close(cgnet_conn *c, int reason) {
  cli_conn *cc = cgnet_conn_context(c);
  if (!cc) return CGNET_NONE;
  atomic_store(&cc->reason, reason);
  atomic_store(&cc->closed, 1);
  return CGNET_NONE;
}

static void cli_tls_error(cgnet_conn *c, int code, const char *reason) {
  cli_conn *cc = cgnet_conn_context(c);
  TU_CHECK(reason != NULL && cgnet_conn_tls_error(c) != NULL);
  if (!cc) return;
  copy_str(cc->error, sizeof cc->error, reason ? reason : "", reason ? strlen(reason) : 0);
  atomic_store(&cc->tls_error, code);
}

static const cgnet_handler cli_handler = {.on_open = cli_open,
                                          .on_traffic = cli_traffic,
                                          .on_close = cli_close,
                                          .on_tls_error = cli_tls_error};

static cgnet_client *client_new(cgnet_tls_ctx *ctx) {
  cgnet_options o = {.tls = ctx, .log_level = CGNET_LOG_ERROR};
  cgnet_client *cl = NULL;
  assert_rc(cgnet_client_new(&cli_handler, &o, &cl), 0);
  cgnet_tls_ctx_free(ctx); /* the client holds its own reference */
  return cl;
}

static void dial_addr(char *buf, size_t cap, const char *host, int port) {
  snprintf(buf, cap, "tls://%s:%d", host, port);
}

/* Dial and wait for the handshake; returns the dial's code. */
static int dial(cgnet_client *cl, const char *host, int port, cli_conn *cc,
                cgnet_conn **out) {
  char a[96];
  dial_addr(a, sizeof a, host, port);
  return cgnet_client_dial_wait(cl, a, (uint64_t)TU_TIMEOUT_MS, cc, out);
}

static int got_at_least(void *arg) {
  cli_conn *cc = arg;
  return atomic_load(&cc->got) >= atomic_load_explicit(&cc->bad, memory_order_relaxed) &&
         atomic_load(&cc->got) >= cc->send_on_open;
}

static int is_closed(void *arg) {
  return atomic_load(&((cli_conn *)arg)->closed);
}

/* ------------------------------------------------------------------------------------ */
/* Echo and getters                                                                     */
/* ------------------------------------------------------------------------------------ */

typedef struct waiter {
  cli_conn *cc;
  size_t want;
} waiter;

static int got_want(void *arg) {
  waiter *w = arg;
  return atomic_load(&w->cc->got) >= w->want;
}

static atomic_int write_failures;

static void count_write_failure(cgnet_conn *c, int status, void *ud) {
  (void)c, (void)ud;
  if (status != 0) atomic_fetch_add(&write_failures, 1);
}

/* Many random-sized async writes from this (non-loop) thread: each is a task on the
 * conn's loop, and those of one turn leave as full records. At most `window` bytes are
 * in flight (sent and not echoed yet), as a sender that respects write_buffer_limit
 * would pace itself; with window 0 nothing waits for the echo. Every write must
 * succeed. */
static void send_pattern_async(cgnet_conn *c, cli_conn *cc, size_t total, size_t window) {
  uint8_t *buf = malloc(total);
  tu_pattern_fill(buf, total, cc->seed, 0);
  atomic_store(&write_failures, 0);
  size_t off = 0;
  unsigned r = 12345;
  while (off < total) {
    r = r * 1103515245u + 12345u;
    size_t n = 1 + (r >> 8) % 40000;
    if (n > total - off) n = total - off;
    if (window && off > window) {
      waiter w = {cc, off - window};
      assert_true(tu_wait_until(got_want, &w, TU_TIMEOUT_MS));
    }
    assert_rc(cgnet_conn_async_write(c, buf + off, n, count_write_failure, NULL), 0);
    off += n;
  }
  free(buf);
}

static void test_echo_many_writes(void **state) {
  (void)state;
  server sv;
  server_start(&sv, server_ctx(), NULL);
  cgnet_client *cl = client_new(client_ctx());
  cli_conn cc = {.seed = 7};
  cgnet_conn *c = NULL;
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, &c), 0);
  assert_true(cgnet_conn_is_tls(c));
  size_t total = (8u << 20) / TU_PAYLOAD_DIV;
  send_pattern_async(c, &cc, total, 1u << 20);
  waiter w = {&cc, total};
  if (!tu_wait_until(got_want, &w, TU_TIMEOUT_MS))
    fail_msg("echoed %zu of %zu bytes; the server read %zu, queued %zu",
             atomic_load(&cc.got), total, atomic_load(&sv.st.bytes),
             cgnet_engine_count_connections(sv.s.eng));
  assert_int_equal(atomic_load(&cc.got), total);
  assert_int_equal(atomic_load(&cc.bad), 0);
  assert_int_equal(atomic_load(&write_failures), 0);
  assert_int_equal(atomic_load(&sv.st.bytes), total);
  assert_int_equal(atomic_load(&sv.st.bad_getters), 0);
  SRV_LOCKED(sv.st, assert_string_equal(sv.st.sni, "")); /* an IP is not sent as SNI */
  SRV_LOCKED(sv.st, assert_string_equal(sv.st.subject, ""));
  cgnet_conn_unref(c);
  assert_rc(cgnet_client_free(cl, 2000), 0);
  /* The client's graceful close sent close_notify: the server read a clean EOF. */
  assert_true(tu_wait_atomic_eq(&sv.st.closes, 1, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_close_reason), CGNET_EOF);
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ALPN and SNI: the client dials by name, the server chooses among its certificates by
 * it; both see the protocol agreed on. */
static void test_alpn_and_sni(void **state) {
  (void)state;
  const char *localhost[] = {"localhost", NULL};
  const char *exact[] = {"exact.test", NULL};
  cgnet_tls_cert list[2] = {
      {.chain = {.data = certs.exact.cert},
       .key = {.data = certs.exact.key},
       .names = exact},
      {.chain = {.data = certs.server.cert},
       .key = {.data = certs.server.key},
       .names = localhost},
  };
  const char *server_alpn[] = {"h2", "http/1.1", NULL};
  cgnet_tls_options so = {.certs = list, .ncerts = 2, .alpn = server_alpn};
  server sv;
  server_start(&sv, server_ctx_with(NULL, &so), NULL);
  const char *client_alpn[] = {"http/1.1", NULL};
  cgnet_tls_options co = {.alpn = client_alpn};
  cgnet_client *cl = client_new(client_ctx_with(&co));
  cli_conn cc = {.seed = 3, .send_on_open = 1000};
  /* "localhost" verifies only against the second certificate: SNI chose it. */
  assert_rc(dial(cl, "localhost", sv.s.port, &cc, NULL), 0);
  assert_true(tu_wait_until(got_at_least, &cc, TU_TIMEOUT_MS));
  assert_string_equal(cc.alpn, "http/1.1");
  assert_true(tu_wait_atomic_eq(&sv.st.opens, 1, TU_TIMEOUT_MS));
  SRV_LOCKED(sv.st, assert_string_equal(sv.st.sni, "localhost"));
  SRV_LOCKED(sv.st, assert_string_equal(sv.st.alpn, "http/1.1"));
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* Client certificates: required and missing fails the handshake on the server; given,
 * the server sees its subject; optional and missing lets the client in. */
static void test_client_certificates(void **state) {
  (void)state;
  for (int mode = 0; mode < 3; mode++) {
    cgnet_tls_options so = {.client_cert = mode == 2 ? CGNET_TLS_CLIENT_CERT_OPTIONAL
                                                     : CGNET_TLS_CLIENT_CERT_REQUIRED};
    server sv;
    server_start(&sv, server_ctx_with(&certs.server, &so), NULL);
    cgnet_tls_cert mine = {.chain = {.data = certs.client.cert},
                           .key = {.data = certs.client.key}};
    cgnet_tls_options co = {0};
    if (mode == 1) {
      co.certs = &mine;
      co.ncerts = 1;
    }
    cgnet_client *cl = client_new(client_ctx_with(&co));
    cli_conn cc = {.seed = 11, .send_on_open = 100};
    int rc = dial(cl, "127.0.0.1", sv.s.port, &cc, NULL);
    if (mode == 0) {
      /* TLS 1.3: the client finishes first and learns of the refusal from the alert,
       * either still in the handshake or right after on_open. */
      assert_true(tu_wait_until(is_closed, &cc, TU_TIMEOUT_MS));
      assert_true(rc == 0 || rc == CGNET_ETLS || rc == CGNET_ETLSVERIFY);
      assert_true(tu_wait_atomic_eq(&sv.st.tls_errors, 1, TU_TIMEOUT_MS));
      assert_int_equal(atomic_load(&sv.st.opens), 0);
      assert_int_equal(atomic_load(&sv.st.closes), 0);
      assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 1);
      SRV_LOCKED(sv.st, assert_true(strlen(sv.st.last_reason) > 0));
    } else {
      assert_rc(rc, 0);
      assert_true(tu_wait_until(got_at_least, &cc, TU_TIMEOUT_MS));
      assert_int_equal(atomic_load(&cc.bad), 0);
      SRV_LOCKED(sv.st, assert_true((strstr(sv.st.subject, "cgnet test client") != NULL) ==
                                    (mode == 1)));
    }
    assert_rc(cgnet_client_free(cl, 2000), 0);
    server_stop(&sv);
  }
  assert_no_check_failures();
}

/* A second dial to the same name resumes the first one's session. */
static void test_resumption(void **state) {
  (void)state;
  server sv;
  server_start(&sv, server_ctx(), NULL);
  cgnet_client *cl = client_new(client_ctx());
  cli_conn first = {.seed = 1, .send_on_open = 500},
           second = {.seed = 2, .send_on_open = 500};
  cgnet_conn *c = NULL;
  assert_rc(dial(cl, "localhost", sv.s.port, &first, &c), 0);
  /* The echo carries the session ticket (TLS 1.3 sends it after the handshake). */
  assert_true(tu_wait_until(got_at_least, &first, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&first.resumed), 0);
  assert_rc(cgnet_conn_async_close(c, NULL, NULL), 0);
  cgnet_conn_unref(c);
  assert_true(tu_wait_until(is_closed, &first, TU_TIMEOUT_MS));
  assert_rc(dial(cl, "localhost", sv.s.port, &second, NULL), 0);
  assert_true(tu_wait_until(got_at_least, &second, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&second.resumed), 1);
  assert_true(tu_wait_atomic_eq(&sv.st.resumed, 1, TU_TIMEOUT_MS));
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Flow control and codecs                                                              */
/* ------------------------------------------------------------------------------------ */

static void resume_on_loop(cgnet_loop *loop, void *ud) {
  (void)loop;
  TU_CHECK_EQ(cgnet_conn_resume_read(ud), 0);
}

/* The client writes far more than the server's high watermark and reads nothing for a
 * while: the server's echo backs up over TLS, it stops reading (writable 0), and once
 * the client reads again everything arrives, in order. */
static void test_pause_resume_and_watermarks(void **state) {
  (void)state;
  server sv;
  cgnet_options so = {.write_high_watermark = 16 * 1024, .socket_send_buffer = 8192};
  server_start(&sv, server_ctx(), &so);
  cgnet_client *cl = client_new(client_ctx());
  size_t total = (4u << 20) / TU_PAYLOAD_DIV;
  cli_conn cc = {.seed = 5, .pause_on_open = 1};
  cgnet_conn *c = NULL;
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, &c), 0);
  send_pattern_async(c, &cc, total, 0);
  assert_true(tu_wait_atomic_ge(&sv.st.writable_off, 1, TU_TIMEOUT_MS));
  tu_sleep_ms(100);
  assert_int_equal(atomic_load(&cc.got), 0); /* paused: plaintext waits in the session */
  assert_rc(cgnet_loop_execute(cgnet_conn_loop(c), resume_on_loop, c), 0);
  waiter w = {&cc, total};
  assert_true(tu_wait_until(got_want, &w, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&cc.bad), 0);
  assert_int_equal(atomic_load(&write_failures), 0);
  assert_true(tu_wait_atomic_ge(&sv.st.writable_on, 1, TU_TIMEOUT_MS));
  cgnet_conn_unref(c);
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* Frames over TLS: the server decodes length-prefixed frames from the plaintext and
 * echoes each with write_frame. */
static cgnet_action frame_echo(cgnet_conn *c, const uint8_t *f, size_t len) {
  TU_CHECK_EQ(cgnet_conn_write_frame(c, f, len), 0);
  atomic_fetch_add(&srv_of(c)->bytes, len);
  return CGNET_NONE;
}

static void test_codec_over_tls(void **state) {
  (void)state;
  cgnet_codec *codec = NULL;
  cgnet_length_field_codec_options lo = {.initial_bytes_to_strip = CGNET_STRIP_HEADER};
  assert_rc(cgnet_codec_length_field(&lo, &codec), 0);
  server sv;
  srv_state_init(&sv.st);
  sv.h = srv_handler(&sv.st);
  sv.h.on_frame = frame_echo;
  cgnet_options so = {.tls = server_ctx(), .codec = codec, .log_level = CGNET_LOG_ERROR};
  const char *addrs[] = {"tls://127.0.0.1:0"};
  assert_rc(tu_server_start_at(&sv.s, &sv.h, addrs, 1, &so), 0);
  cgnet_tls_ctx_free(so.tls);
  /* 300 frames of 1..3000 pattern bytes, each behind its 4-byte big-endian length; the
   * echo re-encodes each frame, so it is the very same stream. */
  size_t nframes = 300, total = 0, payload = 0;
  uint8_t *stream = malloc(nframes * 3004);
  unsigned r = 99;
  for (size_t i = 0; i < nframes; i++) {
    r = r * 1103515245u + 12345u;
    uint32_t len = 1 + (r >> 8) % 3000;
    uint8_t *f = stream + total;
    f[0] = (uint8_t)(len >> 24), f[1] = (uint8_t)(len >> 16), f[2] = (uint8_t)(len >> 8);
    f[3] = (uint8_t)len;
    tu_pattern_fill(f + 4, len, 40 + i, 0);
    total += 4 + len;
    payload += len;
  }
  cgnet_client *cl = client_new(client_ctx());
  cli_conn cc = {.expect = stream};
  cgnet_conn *c = NULL;
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, &c), 0);
  /* In pieces that split frames anywhere. */
  for (size_t off = 0, step = 1; off < total; off += step, step = step * 7 % 5003 + 1) {
    if (step > total - off) step = total - off;
    assert_rc(cgnet_conn_async_write(c, stream + off, step, NULL, NULL), 0);
  }
  waiter w = {&cc, total};
  assert_true(tu_wait_until(got_want, &w, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&cc.got), total);
  assert_int_equal(atomic_load(&cc.bad), 0);
  assert_int_equal(atomic_load(&sv.st.bytes), payload);
  cgnet_conn_unref(c);
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  free(stream);
  cgnet_codec_free(codec);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Failures                                                                             */
/* ------------------------------------------------------------------------------------ */

/* A client that connects and sends nothing is closed at the handshake timeout, without
 * on_open or on_close, and counted. */
static void test_stalled_handshake_times_out(void **state) {
  (void)state;
  server sv;
  cgnet_options so = {.tls_handshake_timeout_ms = 200};
  server_start(&sv, server_ctx(), &so);
  int fd = tu_connect4(sv.s.port);
  assert_true(fd >= 0);
  uint64_t t0 = tu_now_ms();
  assert_int_equal(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL), 0);
  assert_true(tu_now_ms() - t0 >= 150);
  close(fd);
  assert_true(tu_wait_atomic_eq(&sv.st.tls_errors, 1, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_error_code), CGNET_ETIMEDOUT);
  SRV_LOCKED(sv.st, assert_non_null(strstr(sv.st.last_reason, "timed out")));
  assert_int_equal(atomic_load(&sv.st.opens), 0);
  assert_int_equal(atomic_load(&sv.st.closes), 0);
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 1);
  assert_true(tu_wait_conns(sv.s.eng, 0, TU_TIMEOUT_MS));
  server_stop(&sv);
  assert_no_check_failures();
}

static int run_cmd(const char *cmd, const char *input, char *out, size_t cap);
static int have_tool(const char *probe);

/* Run a Python script (from a file: it has quotes of its own); its output into out. */
static int run_python(const char *script, char *out, size_t cap) {
  char path[128], cmd[256];
  snprintf(path, sizeof path, "%s/client.py", certs.dir);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fputs(script, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "python3 %s", path);
  return run_cmd(cmd, "", out, cap);
}

/* Once open, a conn's own timeouts apply: a client that starts its handshake later than
 * the idle timeout, then stays idle, is closed by the idle timeout, not at the handshake
 * timeout's far later deadline. */
static void test_idle_timeout_after_handshake(void **state) {
  (void)state;
  if (!have_tool("python3 -c 'import ssl'")) {
    print_message("python3 with ssl not found: skipping the late handshake test\n");
    skip();
  }
  server sv;
  cgnet_options so = {.idle_timeout_ms = 300, .tls_handshake_timeout_ms = 30000};
  server_start(&sv, server_ctx(), &so);
  char script[1024], out[512];
  snprintf(script, sizeof script,
           "import socket, ssl, time\n"
           "ctx = ssl.create_default_context(cafile='%s/ca.pem')\n"
           "raw = socket.create_connection(('127.0.0.1', %d))\n"
           "time.sleep(0.8)\n"
           "s = ctx.wrap_socket(raw, server_hostname='localhost')\n"
           "t0 = time.time()\n"
           "s.settimeout(25)\n"
           "print('eof' if s.recv(10) == b'' else 'data', round(time.time() - t0))\n",
           certs.dir, sv.s.port);
  assert_int_equal(run_python(script, out, sizeof out), 0);
  assert_true(tu_wait_atomic_eq(&sv.st.closes, 1, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_close_reason), CGNET_ETIMEDOUT);
  /* Closed within seconds of the handshake, not after the handshake's 30 s. */
  if (strncmp(out, "eof ", 4) != 0 || atoi(out + 4) > 10) fail_msg("python: \"%s\"", out);
  server_stop(&sv);
  assert_no_check_failures();
}

/* Plain HTTP, then random bytes, sent to a TLS port: each fails its handshake (counted,
 * on_tls_error), and the server still serves a real client afterwards. */
static void test_garbage_to_tls_port(void **state) {
  (void)state;
  server sv;
  server_start(&sv, server_ctx(), NULL);
  const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  uint8_t noise[600];
  tu_pattern_fill(noise, sizeof noise, 77, 0);
  noise[0] = 0x16; /* a handshake record type, so the record layer reads on */
  for (int i = 0; i < 2; i++) {
    int fd = tu_connect4(sv.s.port);
    assert_true(fd >= 0);
    assert_rc(i == 0 ? tu_send_all(fd, http, sizeof http - 1, TU_TIMEOUT_MS)
                     : tu_send_all(fd, noise, sizeof noise, TU_TIMEOUT_MS),
              0);
    size_t extra = 0;
    int rc = tu_expect_eof(fd, TU_TIMEOUT_MS, &extra);
    assert_true(rc == 0 || rc == -ECONNRESET);
    close(fd);
    assert_true(tu_wait_atomic_eq(&sv.st.tls_errors, i + 1, TU_TIMEOUT_MS));
    assert_rc(atomic_load(&sv.st.last_error_code), CGNET_ETLS);
    SRV_LOCKED(sv.st, assert_true(strlen(sv.st.last_reason) > 0));
  }
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 2);
  assert_int_equal(atomic_load(&sv.st.opens), 0);
  assert_int_equal(atomic_load(&sv.st.closes), 0);
  cgnet_client *cl = client_new(client_ctx());
  cli_conn cc = {.seed = 4, .send_on_open = 3000};
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, NULL), 0);
  assert_true(tu_wait_until(got_at_least, &cc, TU_TIMEOUT_MS));
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* The client's TCP stream ends with no close_notify: the server closes the conn with
 * CGNET_ETLSTRUNCATED. */
static void shut_wr_on_loop(cgnet_loop *loop, void *ud) {
  (void)loop;
  TU_CHECK_EQ(shutdown(cgnet_conn_fd(ud), SHUT_WR), 0);
}

static void test_truncated_stream(void **state) {
  (void)state;
  server sv;
  server_start(&sv, server_ctx(), NULL);
  cgnet_client *cl = client_new(client_ctx());
  cli_conn cc = {.seed = 6, .send_on_open = 100};
  cgnet_conn *c = NULL;
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, &c), 0);
  assert_true(tu_wait_until(got_at_least, &cc, TU_TIMEOUT_MS));
  assert_rc(cgnet_loop_execute(cgnet_conn_loop(c), shut_wr_on_loop, c), 0);
  assert_true(tu_wait_atomic_eq(&sv.st.closes, 1, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_close_reason), CGNET_ETLSTRUNCATED);
  /* The server's side, too, ends without close_notify: the client sees a truncation. */
  assert_true(tu_wait_until(is_closed, &cc, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&cc.reason), CGNET_ETLSTRUNCATED);
  cgnet_conn_unref(c);
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* Servers with an expired, a wrong-host and an untrusted certificate: each dial fails
 * with CGNET_ETLSVERIFY, the reason says why, on_open never runs. */
static void test_bad_server_certificates(void **state) {
  (void)state;
  tu_pem self = {0}; /* for localhost, signed by its own key */
  assert_int_equal(tu_tls_make_cert(NULL, "localhost", "DNS:localhost,IP:127.0.0.1", -60,
                                    3600, 0, "serverAuth", &self),
                   0);
  const tu_pem *bad[] = {&certs.expired, &certs.wrong_host, &certs.untrusted, &self};
  const char *why[] = {"expired", "mismatch", "issuer", "self-signed"};
  for (int i = 0; i < 4; i++) {
    server sv;
    server_start(&sv, server_ctx_with(bad[i], NULL), NULL);
    cgnet_client *cl = client_new(client_ctx());
    cli_conn cc = {.seed = 1};
    assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, NULL), CGNET_ETLSVERIFY);
    assert_true(tu_wait_until(is_closed, &cc, TU_TIMEOUT_MS));
    assert_int_equal(atomic_load(&cc.opened), 0);
    assert_rc(atomic_load(&cc.reason), CGNET_ETLSVERIFY);
    assert_rc(atomic_load(&cc.tls_error), CGNET_ETLSVERIFY);
    if (!strstr(cc.error, why[i])) fail_msg("reason \"%s\" lacks \"%s\"", cc.error, why[i]);
    /* The server got our alert: its side failed too, quietly. */
    assert_true(tu_wait_atomic_eq(&sv.st.tls_errors, 1, TU_TIMEOUT_MS));
    assert_int_equal(atomic_load(&sv.st.closes), 0);
    assert_rc(cgnet_client_free(cl, 2000), 0);
    server_stop(&sv);
  }
  free(self.cert);
  free(self.key);
  /* A client with no context of its own verifies against the system's CAs, which do not
   * know the test CA. */
  server sv;
  server_start(&sv, server_ctx(), NULL);
  cgnet_client *cl = client_new(NULL);
  cli_conn cc = {.seed = 1};
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, NULL), CGNET_ETLSVERIFY);
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* Configuration errors: a tls:// listener without a server context, or with a client's;
 * a client given a server context. */
static void keep_log_line(void *ud, cgnet_log_level level, const char *msg) {
  (void)level;
  snprintf(ud, 256, "%s", msg);
}

static void test_context_required(void **state) {
  (void)state;
  cgnet_handler h = {0};
  const char *addrs[] = {"tcp://127.0.0.1:0", "tls://127.0.0.1:0"};
  char logged[256] = "";
  cgnet_options o = {.logger = keep_log_line, .logger_ud = logged};
  cgnet_engine *eng = NULL;
  assert_rc(cgnet_engine_start(&h, addrs, 2, &o, &eng), CGNET_EINVAL);
  if (!strstr(logged, "tls://") || !strstr(logged, "no server context"))
    fail_msg("logged \"%s\"", logged);
  o.logger = NULL;
  o.log_level = CGNET_LOG_OFF;
  o.tls = client_ctx();
  assert_rc(cgnet_engine_start(&h, addrs, 2, &o, &eng), CGNET_EINVAL);
  cgnet_tls_ctx_free(o.tls);
  o.tls = server_ctx();
  cgnet_client *cl = NULL;
  assert_rc(cgnet_client_new(&cli_handler, &o, &cl), 0);
  assert_rc(cgnet_client_dial(cl, "tls://127.0.0.1:1", 1000, NULL, NULL), CGNET_EINVAL);
  assert_rc(cgnet_client_free(cl, 1000), 0);
  /* One engine serves tcp:// and tls:// together. */
  assert_rc(cgnet_engine_start(&h, addrs, 2, &o, &eng), 0);
  cgnet_tls_ctx_free(o.tls);
  assert_rc(cgnet_engine_stop(eng, 1000), 0);
  cgnet_engine_free(eng);
}

/* ------------------------------------------------------------------------------------ */
/* Many handshakes at once                                                              */
/* ------------------------------------------------------------------------------------ */

#define STORM 240

static void test_handshake_storm(void **state) {
  (void)state;
  server sv;
  cgnet_options so = {.tls_handshakes_per_turn = 8};
  server_start(&sv, server_ctx(), &so);
  cgnet_client *cl = client_new(client_ctx());
  cli_conn *cc = calloc(STORM, sizeof *cc);
  char a[64];
  dial_addr(a, sizeof a, "127.0.0.1", sv.s.port);
  for (int i = 0; i < STORM; i++) {
    cc[i].seed = 1000 + (uint64_t)i;
    cc[i].send_on_open = 64 + (size_t)i;
    assert_rc(cgnet_client_dial(cl, a, (uint64_t)TU_TIMEOUT_MS, &cc[i], NULL), 0);
  }
  uint64_t deadline = tu_now_ms() + (uint64_t)TU_TIMEOUT_MS;
  for (int i = 0; i < STORM; i++) {
    while (atomic_load(&cc[i].got) < cc[i].send_on_open && !atomic_load(&cc[i].closed) &&
           tu_now_ms() < deadline)
      tu_sleep_ms(2);
    if (atomic_load(&cc[i].got) != cc[i].send_on_open)
      fail_msg("conn %d: %zu of %zu bytes (closed %d, reason %s)", i,
               atomic_load(&cc[i].got), cc[i].send_on_open, atomic_load(&cc[i].closed),
               cgnet_err_name(atomic_load(&cc[i].reason)));
    assert_int_equal(atomic_load(&cc[i].bad), 0);
  }
  assert_int_equal(atomic_load(&sv.st.opens), STORM);
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 0);
  assert_rc(cgnet_client_free(cl, 5000), 0);
  free(cc);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Outside clients                                                                      */
/* ------------------------------------------------------------------------------------ */

/* Run a shell command with `input` on its stdin; its stdout into out. Exit status, or -1.
 */
static int run_cmd(const char *cmd, const char *input, char *out, size_t cap) {
  char path[128];
  snprintf(path, sizeof path, "%s/cmd.in", certs.dir);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fputs(input, f);
  fclose(f);
  char full[2048];
  snprintf(full, sizeof full, "timeout %d sh -c '%s' < %s 2>/dev/null", 20 * TU_SLOW, cmd,
           path);
  FILE *p = popen(full, "r");
  if (!p) return -1;
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int have_tool(const char *probe) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "%s >/dev/null 2>&1", probe);
  return system(cmd) == 0;
}

/* openssl s_client, TLS 1.2 and 1.3, with ALPN and SNI: the echo comes back and the
 * server saw the name and the protocol. */
static void test_openssl_s_client(void **state) {
  (void)state;
  if (!have_tool("openssl version")) {
    print_message("openssl CLI not found: skipping the s_client test\n");
    skip();
  }
  const char *alpn[] = {"echo", NULL};
  cgnet_tls_options so = {.alpn = alpn};
  server sv;
  server_start(&sv, server_ctx_with(&certs.server, &so), NULL);
  const char *versions[] = {"-tls1_2", "-tls1_3"};
  for (int i = 0; i < 2; i++) {
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd,
             "(cat; sleep %d) | openssl s_client -quiet -no_ign_eof -connect 127.0.0.1:%d "
             "%s -servername localhost -alpn echo -CAfile %s/ca.pem -verify_return_error",
             TU_SLOW, sv.s.port, versions[i], certs.dir);
    /* It sends the line, prints the echo, and at the end of its input closes. */
    int rc = run_cmd(cmd, "hello over s_client\n", out, sizeof out);
    if (rc != 0 || !strstr(out, "hello over s_client"))
      fail_msg("%s: exit %d, echo missing: \"%s\"", versions[i], rc, out);
    assert_true(tu_wait_atomic_eq(&sv.st.opens, i + 1, TU_TIMEOUT_MS));
    SRV_LOCKED(sv.st, assert_string_equal(sv.st.sni, "localhost"));
    SRV_LOCKED(sv.st, assert_string_equal(sv.st.alpn, "echo"));
  }
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* Python's ssl module, verifying the server against the test CA. */
static void test_python_ssl(void **state) {
  (void)state;
  if (!have_tool("python3 -c 'import ssl'")) {
    print_message("python3 with ssl not found: skipping the Python test\n");
    skip();
  }
  server sv;
  server_start(&sv, server_ctx(), NULL);
  char script[1024], out[4096];
  snprintf(script, sizeof script,
           "python3 -c \"\nimport socket, ssl\n"
           "ctx = ssl.create_default_context(cafile=\\\"%s/ca.pem\\\")\n"
           "s = ctx.wrap_socket(socket.create_connection((\\\"127.0.0.1\\\", %d)), "
           "server_hostname=\\\"localhost\\\")\n"
           "s.sendall(b\\\"ping from python\\\")\n"
           "got = b\\\"\\\"\nwhile len(got) < 16: got += s.recv(100)\n"
           "print(got.decode(), s.version())\ns.unwrap(); s.close()\n\"",
           certs.dir, sv.s.port);
  /* The script has double quotes of its own: run it through a file, not sh -c '...'. */
  char path[128];
  snprintf(path, sizeof path, "%s/client.sh", certs.dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(script, f);
  fclose(f);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "sh %s", path);
  assert_int_equal(run_cmd(cmd, "", out, sizeof out), 0);
  if (!strstr(out, "ping from python TLSv1.3")) fail_msg("python printed \"%s\"", out);
  /* unwrap() sent close_notify: a clean end. */
  assert_true(tu_wait_atomic_eq(&sv.st.closes, 1, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_close_reason), CGNET_EOF);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Resumption with openssl s_client                                                     */
/* ------------------------------------------------------------------------------------ */

/* s_client saves the session (-sess_out) on a first connection and offers it (-sess_in)
 * on a second: the second one resumes, as s_client prints ("Reused, TLSv1.x") and the
 * server's on_open sees (cgnet_conn_tls_resumed). TLS 1.3 and TLS 1.2. */
static void test_s_client_resumption(void **state) {
  (void)state;
  if (!have_tool("openssl version")) {
    print_message("skipped: openssl CLI not found\n");
    skip();
  }
  server sv;
  server_start(&sv, server_ctx(), NULL);
  const char *versions[] = {"-tls1_3", "-tls1_2"};
  const char *names[] = {"TLSv1.3", "TLSv1.2"};
  char *out = malloc(32768);
  assert_non_null(out);
  for (int v = 0; v < 2; v++) {
    char sess[160];
    snprintf(sess, sizeof sess, "%s/sess%d.pem", certs.dir, v);
    unlink(sess);
    for (int round = 0; round < 2; round++) {
      char cmd[1024], want[64];
      /* It sends the line, prints the echo (the TLS 1.3 ticket comes before it), and at
       * the end of its input closes. */
      snprintf(cmd, sizeof cmd,
               "(cat; sleep %d) | openssl s_client -no_ign_eof -connect 127.0.0.1:%d %s "
               "-servername localhost -CAfile %s/ca.pem -verify_return_error %s %s",
               TU_SLOW, sv.s.port, versions[v], certs.dir,
               round == 0 ? "-sess_out" : "-sess_in", sess);
      int rc = run_cmd(cmd, "hello resumption\n", out, 32768);
      snprintf(want, sizeof want, "%s, %s, Cipher is", round ? "Reused" : "New", names[v]);
      if (rc != 0 || !strstr(out, want) || !strstr(out, "hello resumption"))
        fail_msg("%s round %d: exit %d, no \"%s\" or no echo in:\n%s", versions[v], round,
                 rc, want, out);
      assert_true(tu_wait_atomic_eq(&sv.st.closes, 2 * v + round + 1, TU_TIMEOUT_MS));
      assert_int_equal(atomic_load(&sv.st.resumed), v + round);
    }
  }
  free(out);
  assert_int_equal(atomic_load(&sv.st.opens), 4);
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Renegotiation                                                                        */
/* ------------------------------------------------------------------------------------ */

/* A TLS 1.2 OpenSSL client over a blocking socket (bounded by socket timeouts). */
typedef struct tls12_client {
  SSL_CTX *ctx;
  SSL *ssl;
  int fd;
} tls12_client;

/* One call on a blocking socket, retried while OpenSSL says it wants to read or write
 * again (a receive interrupted by a signal, EINTR, reads as that), for at most the test
 * timeout. Returns the call's last result. */
enum { SSL_OP_CONNECT, SSL_OP_READ, SSL_OP_WRITE, SSL_OP_HANDSHAKE, SSL_OP_SHUTDOWN };

static int ssl_call(SSL *ssl, int op, void *buf, int len) {
  uint64_t until = tu_now_ms() + (uint64_t)TU_TIMEOUT_MS;
  for (;;) {
    ERR_clear_error();
    int r = 0;
    switch (op) {
    case SSL_OP_CONNECT:
      r = SSL_connect(ssl);
      break;
    case SSL_OP_READ:
      r = SSL_read(ssl, buf, len);
      break;
    case SSL_OP_WRITE:
      r = SSL_write(ssl, buf, len);
      break;
    case SSL_OP_HANDSHAKE:
      r = SSL_do_handshake(ssl);
      break;
    default:
      r = SSL_shutdown(ssl);
      if (r == 0) return 0; /* ours sent; the peer's not awaited */
      break;
    }
    if (r > 0) return r;
    int e = SSL_get_error(ssl, r);
    if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || tu_now_ms() >= until)
      return r;
  }
}

static void tls12_connect(tls12_client *k, int port) {
  k->ctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(k->ctx);
  assert_int_equal(SSL_CTX_set_max_proto_version(k->ctx, TLS1_2_VERSION), 1);
  k->fd = tu_connect4(port);
  assert_true(k->fd >= 0);
  struct timeval tv = {.tv_sec = 10 * TU_SLOW};
  setsockopt(k->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(k->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  k->ssl = SSL_new(k->ctx);
  assert_non_null(k->ssl);
  SSL_set_fd(k->ssl, k->fd);
  SSL_set_tlsext_host_name(k->ssl, "localhost");
  int r = ssl_call(k->ssl, SSL_OP_CONNECT, NULL, 0);
  if (r != 1) {
    int e = SSL_get_error(k->ssl, r), en = errno;
    unsigned long q = ERR_peek_error();
    fail_msg("SSL_connect: %d, SSL_get_error %d, errno %d, \"%s\"", r, e, en,
             q ? ERR_reason_error_string(q) : "");
  }
  assert_string_equal(SSL_get_version(k->ssl), "TLSv1.2");
}

static void tls12_close(tls12_client *k) {
  SSL_free(k->ssl);
  SSL_CTX_free(k->ctx);
  close(k->fd);
  ERR_clear_error();
}

/* After the handshake, a TLS 1.2 client asks to renegotiate (a new ClientHello). The
 * server refuses with the warning alert no_renegotiation and starts no handshake; the
 * client, told no, gives up with a fatal alert, and the server closes the conn with
 * CGNET_ETLS (on_close: it was open; not a handshake failure). The server then serves
 * a new conn. */
static void test_renegotiation_refused_on_conn(void **state) {
  (void)state;
  server sv;
  server_start(&sv, server_ctx(), NULL);
  tls12_client k;
  tls12_connect(&k, sv.s.port);
  char buf[16] = "";
  assert_int_equal(ssl_call(k.ssl, SSL_OP_WRITE, "ping", 4), 4);
  assert_int_equal(ssl_call(k.ssl, SSL_OP_READ, buf, sizeof buf), 4);
  assert_memory_equal(buf, "ping", 4);
  assert_true(tu_wait_atomic_eq(&sv.st.opens, 1, TU_TIMEOUT_MS));
  /* OpenSSL 3 clients may renegotiate unless told not to. */
  assert_int_equal(SSL_renegotiate(k.ssl), 1);
  int r = ssl_call(k.ssl, SSL_OP_HANDSHAKE, NULL, 0);
  assert_true(r <= 0);
  assert_int_equal(SSL_get_error(k.ssl, r), SSL_ERROR_SSL);
  unsigned long e = ERR_peek_error();
  if (ERR_GET_REASON(e) != SSL_R_NO_RENEGOTIATION)
    fail_msg("the client failed with \"%s\", not no_renegotiation",
             ERR_reason_error_string(e));
  assert_true(tu_wait_atomic_eq(&sv.st.closes, 1, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_close_reason), CGNET_ETLS);
  assert_int_equal(atomic_load(&sv.st.opens), 1);
  assert_int_equal(atomic_load(&sv.st.tls_errors), 0);
  assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), 0);
  size_t extra = 0;
  int rc = tu_expect_eof(k.fd, TU_TIMEOUT_MS, &extra);
  assert_true(rc == 0 || rc == -ECONNRESET);
  tls12_close(&k);
  /* Alive: a new TLS 1.2 conn is served. */
  tls12_connect(&k, sv.s.port);
  assert_int_equal(ssl_call(k.ssl, SSL_OP_WRITE, "again", 5), 5);
  assert_int_equal(ssl_call(k.ssl, SSL_OP_READ, buf, sizeof buf), 5);
  assert_memory_equal(buf, "again", 5);
  assert_int_equal(ssl_call(k.ssl, SSL_OP_SHUTDOWN, NULL, 0), 0);
  tls12_close(&k);
  assert_true(tu_wait_atomic_eq(&sv.st.closes, 2, TU_TIMEOUT_MS));
  assert_rc(atomic_load(&sv.st.last_close_reason), CGNET_EOF);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Truncated ClientHello                                                                */
/* ------------------------------------------------------------------------------------ */

/* A real ClientHello (TLS 1.2-1.3, SNI localhost) from an OpenSSL client on memory BIOs:
 * its bytes into buf, returns their count. */
static size_t capture_client_hello(uint8_t *buf, size_t cap) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(ctx);
  SSL *ssl = SSL_new(ctx);
  assert_non_null(ssl);
  BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
  assert_true(rb && wb);
  SSL_set_bio(ssl, rb, wb);
  SSL_set_tlsext_host_name(ssl, "localhost");
  int r = SSL_connect(ssl);
  assert_int_equal(SSL_get_error(ssl, r), SSL_ERROR_WANT_READ);
  char *p = NULL;
  long n = BIO_get_mem_data(wb, &p);
  assert_true(n > 5 && (size_t)n <= cap);
  memcpy(buf, p, (size_t)n);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return (size_t)n;
}

static void expect_alive(server *sv) {
  cgnet_client *cl = client_new(client_ctx());
  cli_conn cc = {.seed = 21, .send_on_open = 2000};
  assert_rc(dial(cl, "127.0.0.1", sv->s.port, &cc, NULL), 0);
  assert_true(tu_wait_until(got_at_least, &cc, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&cc.bad), 0);
  assert_rc(cgnet_client_free(cl, 2000), 0);
}

/* The first n bytes of a real ClientHello (none, part of the record header, the header
 * announcing more than follows, all but the last byte), then the client's FIN: the
 * server closes the conn; it is a handshake failure (counted, on_tls_error with
 * CGNET_ETLSTRUNCATED), with no on_open nor on_close. The same bytes and no FIN: the
 * conn is closed at the handshake timeout (CGNET_ETIMEDOUT). The server serves a real
 * client afterwards. */
static void test_truncated_client_hello(void **state) {
  (void)state;
  uint8_t hello[2048];
  size_t len = capture_client_hello(hello, sizeof hello);
  assert_int_equal(hello[0], 22); /* a handshake record */
  assert_int_equal(((size_t)hello[3] << 8 | hello[4]) + 5, len);
  server sv;
  cgnet_options so = {.tls_handshake_timeout_ms = 300};
  server_start(&sv, server_ctx(), &so);
  const size_t cuts[] = {0, 3, len / 2, len - 1};
  int failures = 0;
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    for (int stall = 0; stall < 2; stall++) {
      int fd = tu_connect4(sv.s.port);
      assert_true(fd >= 0);
      if (cuts[i]) assert_rc(tu_send_all(fd, hello, cuts[i], TU_TIMEOUT_MS), 0);
      if (!stall) assert_int_equal(shutdown(fd, SHUT_WR), 0);
      uint64_t t0 = tu_now_ms();
      int rc = tu_expect_eof(fd, TU_TIMEOUT_MS, NULL);
      uint64_t took = tu_now_ms() - t0;
      close(fd);
      if (rc != 0) fail_msg("cut %zu, stall %d: no clean EOF (%d)", cuts[i], stall, rc);
      failures++;
      assert_true(tu_wait_atomic_eq(&sv.st.tls_errors, failures, TU_TIMEOUT_MS));
      int code = atomic_load(&sv.st.last_error_code);
      if (stall) {
        assert_rc(code, CGNET_ETIMEDOUT);
        assert_true(took >= 250);
        SRV_LOCKED(sv.st, assert_non_null(strstr(sv.st.last_reason, "timed out")));
      } else {
        assert_rc(code, CGNET_ETLSTRUNCATED);
        SRV_LOCKED(sv.st,
                   assert_non_null(strstr(sv.st.last_reason, "closed the connection")));
      }
      assert_int_equal(cgnet_engine_tls_handshake_failures(sv.s.eng), failures);
      assert_true(tu_wait_conns(sv.s.eng, 0, TU_TIMEOUT_MS));
    }
  }
  assert_int_equal(atomic_load(&sv.st.opens), 0);
  assert_int_equal(atomic_load(&sv.st.closes), 0);
  expect_alive(&sv);
  server_stop(&sv);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* The per-turn handshake budget                                                        */
/* ------------------------------------------------------------------------------------ */

typedef struct hold {
  atomic_int held, release;
} hold;

/* Keep the loop busy until released (at most a few seconds): connections and their
 * ClientHellos pile up in the kernel meanwhile. */
static void hold_loop(cgnet_loop *loop, void *ud) {
  (void)loop;
  hold *h = ud;
  atomic_store(&h->held, 1);
  uint64_t until = tu_now_ms() + 5000 * TU_SLOW;
  while (!atomic_load(&h->release) && tu_now_ms() < until)
    tu_sleep_ms(1);
}

#define BURST 200

/* BURST conns whose ClientHellos all wait while the server's only loop is held, then
 * arrive together; every conn is served. The loop's stats for them. */
static void handshake_burst(int per_turn, cgnet_loop_stats *st) {
  server sv;
  cgnet_options so = {.tls_handshakes_per_turn = per_turn, .num_loops = 1};
  server_start(&sv, server_ctx(), &so);
  cgnet_loop *loop = cgnet_engine_loop(sv.s.eng, 0);
  hold h = {0};
  assert_rc(cgnet_loop_execute(loop, hold_loop, &h), 0);
  assert_true(tu_wait_atomic_eq(&h.held, 1, TU_TIMEOUT_MS));
  cgnet_client *cl = client_new(client_ctx());
  cli_conn *cc = calloc(BURST, sizeof *cc);
  assert_non_null(cc);
  char a[64];
  dial_addr(a, sizeof a, "127.0.0.1", sv.s.port);
  for (int i = 0; i < BURST; i++) {
    cc[i].seed = 500 + (uint64_t)i;
    cc[i].send_on_open = 100;
    assert_rc(cgnet_client_dial(cl, a, (uint64_t)TU_TIMEOUT_MS, &cc[i], NULL), 0);
  }
  tu_sleep_ms(300 * TU_SLOW); /* the client's loops connect and send their hellos */
  atomic_store(&h.release, 1);
  for (int i = 0; i < BURST; i++) {
    waiter w = {&cc[i], 100};
    if (!tu_wait_until(got_want, &w, TU_TIMEOUT_MS))
      fail_msg("conn %d: %zu of 100 bytes (closed %d, reason %s)", i,
               atomic_load(&cc[i].got), atomic_load(&cc[i].closed),
               cgnet_err_name(atomic_load(&cc[i].reason)));
    assert_int_equal(atomic_load(&cc[i].bad), 0);
  }
  assert_int_equal(atomic_load(&sv.st.opens), BURST);
  cgnet_loop_get_stats(loop, st);
  assert_rc(cgnet_client_free(cl, 5000), 0);
  free(cc);
  server_stop(&sv);
}

/* With tls_handshakes_per_turn = 4, no turn of the loop starts more than 4 server
 * handshakes, though the burst offers many more at once: with a budget of 64 the same
 * burst starts more than 4 in one turn. */
static void test_handshake_budget_per_turn(void **state) {
  (void)state;
  cgnet_loop_stats st;
  handshake_burst(4, &st);
  assert_int_equal(st.tls_handshakes, BURST);
  if (st.tls_handshakes_turn_max > 4)
    fail_msg("a turn started %llu handshakes, over the budget of 4",
             (unsigned long long)st.tls_handshakes_turn_max);
  assert_int_equal(st.tls_handshakes_turn_max, 4);
  uint64_t max4 = st.tls_handshakes_turn_max;
  handshake_burst(64, &st);
  print_message("most handshakes started in one turn: %llu (budget 4), %llu (budget 64)\n",
                (unsigned long long)max4, (unsigned long long)st.tls_handshakes_turn_max);
  assert_int_equal(st.tls_handshakes, BURST);
  assert_true(st.tls_handshakes_turn_max > 4);
  assert_true(st.tls_handshakes_turn_max <= 64);
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Burst writes against write_buffer_limit                                              */
/* ------------------------------------------------------------------------------------ */

#define BURST_SEED 4242
#define BURST_LIMIT (64 * 1024)

typedef struct burst_state {
  size_t chunk;
  atomic_size_t accepted; /* bytes the writes took */
  atomic_size_t before;   /* cgnet_conn_outbound_buffered before the writes (the
                             server's session ticket may be queued) */
  atomic_size_t queued;   /* ... and at the first refusal */
  atomic_size_t taken;    /* bytes taken before the first refusal */
  atomic_int done;
} burst_state;

/* In one callback: writes of `chunk` pattern bytes until one is refused, which must be
 * with CGNET_EOVERFLOW; then exactly the room left, which is taken; then one byte more,
 * refused. Then a graceful close: what was taken goes out, then close_notify. */
static cgnet_action burst_open(cgnet_conn *c) {
  burst_state *b = cgnet_engine_userdata(cgnet_loop_engine(cgnet_conn_loop(c)));
  uint8_t *buf = malloc(b->chunk);
  size_t off = 0;
  int rc = 0;
  atomic_store(&b->before, cgnet_conn_outbound_buffered(c));
  for (int i = 0; i < 10000 && rc == 0; i++) {
    tu_pattern_fill(buf, b->chunk, BURST_SEED, off);
    rc = cgnet_conn_write(c, buf, b->chunk);
    if (rc == 0) off += b->chunk;
  }
  TU_CHECK_EQ(rc, CGNET_EOVERFLOW);
  /* Full records were encrypted as they filled: the session holds less than one. */
  TU_CHECK(cgnet__tls_conn_held(c) <= 16384);
  size_t q = cgnet_conn_outbound_buffered(c);
  atomic_store(&b->queued, q);
  atomic_store(&b->taken, off);
  TU_CHECK(q + b->chunk > BURST_LIMIT);
  if (q < BURST_LIMIT) {
    size_t room = BURST_LIMIT - q;
    tu_pattern_fill(buf, room, BURST_SEED, off);
    TU_CHECK_EQ(cgnet_conn_write(c, buf, room), 0);
    off += room;
  }
  TU_CHECK_EQ(cgnet_conn_write(c, buf, 1), CGNET_EOVERFLOW);
  free(buf);
  atomic_store(&b->accepted, off);
  atomic_store(&b->done, 1);
  return CGNET_CLOSE;
}

/* A handler that writes past write_buffer_limit in one callback over TLS: the write
 * that crosses it fails with CGNET_EOVERFLOW and changes nothing, and the client
 * receives exactly the bytes that were taken, then a clean end. Small writes (gathered
 * into records, each encrypted once full) and writes of more than a record (whole
 * records encrypted from the caller's memory). */
static void test_burst_writes_over_limit(void **state) {
  (void)state;
  const size_t chunks[] = {1000, 20000};
  for (int i = 0; i < 2; i++) {
    burst_state b = {.chunk = chunks[i]};
    cgnet_handler h = {.ud = &b, .on_open = burst_open};
    cgnet_options so = {.tls = server_ctx(),
                        .write_buffer_limit = BURST_LIMIT,
                        .log_level = CGNET_LOG_ERROR};
    tu_server s;
    const char *addrs[] = {"tls://127.0.0.1:0"};
    assert_rc(tu_server_start_at(&s, &h, addrs, 1, &so), 0);
    cgnet_tls_ctx_free(so.tls);
    cgnet_client *cl = client_new(client_ctx());
    cli_conn cc = {.seed = BURST_SEED};
    assert_rc(dial(cl, "127.0.0.1", s.port, &cc, NULL), 0);
    assert_true(tu_wait_until(is_closed, &cc, TU_TIMEOUT_MS));
    assert_true(atomic_load(&b.done));
    size_t accepted = atomic_load(&b.accepted);
    /* What the limit counted at the refusal: the bytes taken, as ciphertext (22 bytes
     * more per full record: TLS 1.3 with AES-GCM) or as plaintext under a record. */
    size_t taken = atomic_load(&b.taken);
    assert_int_equal(atomic_load(&b.queued) - atomic_load(&b.before),
                     taken + 22 * (taken / 16384));
    /* Up to the limit, less what was queued before and the records' overhead (at most
     * 22 bytes per record of up to 16 KiB, in TLS 1.3). */
    size_t room = BURST_LIMIT - atomic_load(&b.before);
    assert_true(accepted <= room && accepted + 22 * (room / 16384 + 2) >= room);
    assert_rc(atomic_load(&cc.reason), CGNET_EOF);
    assert_int_equal(atomic_load(&cc.got), accepted);
    assert_int_equal(atomic_load(&cc.bad), 0);
    assert_rc(cgnet_client_free(cl, 2000), 0);
    assert_rc(tu_server_stop(&s, 1000), 0);
  }
  assert_no_check_failures();
}

/* ------------------------------------------------------------------------------------ */
/* Memory of an idle conn                                                               */
/* ------------------------------------------------------------------------------------ */

typedef struct held_probe {
  cgnet_conn *c;
  atomic_size_t held, out, in;
  atomic_int done;
} held_probe;

static void probe_held(cgnet_loop *loop, void *ud) {
  (void)loop;
  held_probe *p = ud;
  atomic_store(&p->held, cgnet__tls_conn_held(p->c));
  atomic_store(&p->out, cgnet_conn_outbound_buffered(p->c));
  atomic_store(&p->in, cgnet_conn_inbound_buffered(p->c));
  atomic_store(&p->done, 1);
}

/* On c's loop: the bytes its session and queues hold; all must be 0. */
static void expect_nothing_held(cgnet_conn *c, const char *side) {
  held_probe p = {.c = c};
  assert_rc(cgnet_loop_execute(cgnet_conn_loop(c), probe_held, &p), 0);
  assert_true(tu_wait_atomic_eq(&p.done, 1, TU_TIMEOUT_MS));
  if (atomic_load(&p.held) || atomic_load(&p.out) || atomic_load(&p.in))
    fail_msg("%s: an idle conn holds %zu bytes in its session, %zu out, %zu in", side,
             atomic_load(&p.held), atomic_load(&p.out), atomic_load(&p.in));
}

/* After an echo of writes of every size (records split across reads, plaintext that
 * waited for a flush), both ends of the idle conn hold no buffered bytes in their
 * sessions. */
static void test_idle_conn_holds_no_buffers(void **state) {
  (void)state;
  server sv;
  server_start(&sv, server_ctx(), NULL);
  cgnet_client *cl = client_new(client_ctx());
  cli_conn cc = {.seed = 31};
  cgnet_conn *c = NULL;
  assert_rc(dial(cl, "127.0.0.1", sv.s.port, &cc, &c), 0);
  size_t total = (1u << 20) / TU_PAYLOAD_DIV;
  send_pattern_async(c, &cc, total, 256 * 1024);
  waiter w = {&cc, total};
  assert_true(tu_wait_until(got_want, &w, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&cc.bad), 0);
  assert_true(tu_wait_atomic_eq(&sv.st.opens, 1, TU_TIMEOUT_MS));
  expect_nothing_held(c, "client");
  expect_nothing_held(atomic_load(&sv.st.last_conn), "server");
  cgnet_conn_unref(c);
  assert_rc(cgnet_client_free(cl, 2000), 0);
  server_stop(&sv);
  assert_no_check_failures();
}

static int group_setup(void **state) {
  (void)state;
  return tu_tls_certs_make(&certs);
}

static int group_teardown(void **state) {
  (void)state;
  tu_tls_certs_free(&certs);
  return 0;
}

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tls_addresses_without_tls),
      cmocka_unit_test_setup_teardown(test_echo_many_writes, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_alpn_and_sni, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_client_certificates, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_resumption, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_pause_resume_and_watermarks, tu_setup,
                                      tu_teardown),
      cmocka_unit_test_setup_teardown(test_codec_over_tls, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_stalled_handshake_times_out, tu_setup,
                                      tu_teardown),
      cmocka_unit_test_setup_teardown(test_idle_timeout_after_handshake, tu_setup,
                                      tu_teardown),
      cmocka_unit_test_setup_teardown(test_garbage_to_tls_port, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_truncated_stream, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_bad_server_certificates, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_context_required, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_handshake_storm, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_openssl_s_client, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_python_ssl, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_s_client_resumption, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_renegotiation_refused_on_conn, tu_setup,
                                      tu_teardown),
      cmocka_unit_test_setup_teardown(test_truncated_client_hello, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_handshake_budget_per_turn, tu_setup,
                                      tu_teardown),
      cmocka_unit_test_setup_teardown(test_burst_writes_over_limit, tu_setup, tu_teardown),
      cmocka_unit_test_setup_teardown(test_idle_conn_holds_no_buffers, tu_setup,
                                      tu_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

#endif /* CGNET_HAVE_TLS */
