/*
 * The TLS context (include/cgnet_tls.h) and the per-connection engine (src/tls.h), driven
 * purely in memory: a client session and a server session whose sinks collect the bytes
 * each sends, pumped into the other's input whole, one byte at a time, or in random
 * pieces. Certificates are made at test time (tests/support/tls_certs.c).
 *
 * Built without TLS, the only test that runs checks that every public call says
 * CGNET_EUNSUPPORTED; the others are skipped, and say so.
 *
 * cgnet-test-timeout: 300
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cgnet.h"
#include "cgnet_tls.h"
#include "support/support.h"
#include "support/tls_certs.h"
#include "tls.h"

/* Without TLS every public call answers CGNET_EUNSUPPORTED (and says why). */
static void test_public_calls_without_tls(void **state) {
  (void)state;
  if (cgnet_tls_available()) skip();
  cgnet_tls_ctx *ctx = (cgnet_tls_ctx *)&ctx;
  char msg[128] = "x";
  cgnet_tls_options o = {0};
  assert_int_equal(cgnet_tls_ctx_new(&o, &ctx, msg, sizeof(msg)), CGNET_EUNSUPPORTED);
  assert_null(ctx);
  assert_non_null(strstr(msg, "without TLS"));
  assert_int_equal(cgnet_tls_ctx_rotate_ticket_keys(NULL), CGNET_EUNSUPPORTED);
  cgnet_tls_ctx_free(NULL);
  cgnet__tls *t = (cgnet__tls *)&t;
  assert_int_equal(cgnet__tls_new(NULL, "localhost", NULL, NULL, &t), CGNET_EUNSUPPORTED);
  assert_null(t);
}

#ifndef CGNET_HAVE_TLS

static void test_tls_skipped(void **state) {
  (void)state;
  assert_int_equal(cgnet_tls_available(), 0);
  print_message("test_tls: built without TLS (CGNET_WITH_TLS=OFF, or no OpenSSL 3 found): "
                "the TLS engine tests are skipped\n");
  skip();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_public_calls_without_tls),
      cmocka_unit_test(test_tls_skipped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* CGNET_HAVE_TLS */

#include <pthread.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* ------------------------------------------------------------------------------------ */
/* Counting every byte OpenSSL (and the engine, which allocates through it) holds       */
/* ------------------------------------------------------------------------------------ */

static atomic_llong live_bytes;

typedef union hdr {
  size_t size;
  max_align_t align;
} hdr;

static void *count_malloc(size_t n, const char *file, int line) {
  (void)file, (void)line;
  hdr *h = malloc(sizeof(hdr) + n);
  if (!h) return NULL;
  h->size = n;
  atomic_fetch_add(&live_bytes, (long long)n);
  return h + 1;
}

static void count_free(void *p, const char *file, int line) {
  (void)file, (void)line;
  if (!p) return;
  hdr *h = (hdr *)p - 1;
  atomic_fetch_sub(&live_bytes, (long long)h->size);
  free(h);
}

static void *count_realloc(void *p, size_t n, const char *file, int line) {
  if (!p) return count_malloc(n, file, line);
  if (n == 0) {
    count_free(p, file, line);
    return NULL;
  }
  hdr *h = (hdr *)p - 1;
  size_t old = h->size;
  hdr *nh = realloc(h, sizeof(hdr) + n);
  if (!nh) return NULL;
  nh->size = n;
  atomic_fetch_add(&live_bytes, (long long)n - (long long)old);
  return nh + 1;
}

/* ------------------------------------------------------------------------------------ */
/* Two sessions pumped against each other                                               */
/* ------------------------------------------------------------------------------------ */

typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

static void bytes_add(bytes *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    assert_non_null(b->p);
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void bytes_free(bytes *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

typedef enum split { WHOLE, BYTES, RANDOM } split;

typedef struct ep {
  cgnet__tls *t;
  bytes wire;   /* ciphertext it sent, not yet delivered */
  bytes got;    /* plaintext it received */
  int err;      /* the first error its input returned */
  size_t sinks; /* sink calls */
} ep;

static int sink(void *ud, const struct iovec *iov, int iovcnt) {
  ep *e = ud;
  e->sinks++;
  for (int i = 0; i < iovcnt; i++)
    bytes_add(&e->wire, iov[i].iov_base, iov[i].iov_len);
  return 0;
}

static uint32_t rng = 12345;
static size_t rand_below(size_t n) {
  rng = rng * 1103515245u + 12345u;
  return (rng >> 8) % n;
}

/* Plaintext buffer size the receiving side offers (small values exercise the carry). */
static size_t plain_cap = 65536;

/* Feed one piece of ciphertext to `to`, collecting its plaintext. */
static void feed(ep *to, const uint8_t *p, size_t n) {
  uint8_t *plain = malloc(plain_cap);
  assert_non_null(plain);
  size_t got = 0;
  int rc = cgnet__tls_input(to->t, p, n, plain, plain_cap, &got);
  bytes_add(&to->got, plain, got);
  while (rc == 0 && cgnet__tls_pending(to->t)) {
    rc = cgnet__tls_input(to->t, NULL, 0, plain, plain_cap, &got);
    bytes_add(&to->got, plain, got);
  }
  if (rc < 0 && !to->err) to->err = rc;
  free(plain);
}

/* Deliver everything `from` has sent to `to`, cut as `how` says. Returns bytes moved. */
static size_t deliver(ep *from, ep *to, split how) {
  size_t total = from->wire.len, off = 0;
  if (!total) return 0;
  uint8_t *copy = malloc(total); /* the input span is borrowed: reuse it like a loop */
  assert_non_null(copy);
  memcpy(copy, from->wire.p, total);
  from->wire.len = 0;
  while (off < total) {
    size_t n = total - off;
    if (how == BYTES) n = 1;
    if (how == RANDOM) n = 1 + rand_below(n < 700 ? n : 700);
    feed(to, copy + off, n);
    memset(copy + off, 0xEE, n); /* the engine must not look at a span after the call */
    off += n;
  }
  free(copy);
  return total;
}

static void pump(ep *a, ep *b, split how) {
  for (int i = 0; i < 1000; i++)
    if (deliver(a, b, how) + deliver(b, a, how) == 0) return;
  fail_msg("pump: still moving bytes after 1000 rounds");
}

static void ep_free(ep *e) {
  cgnet__tls_free(e->t);
  bytes_free(&e->wire);
  bytes_free(&e->got);
  memset(e, 0, sizeof(*e));
}

/* ------------------------------------------------------------------------------------ */
/* Contexts                                                                             */
/* ------------------------------------------------------------------------------------ */

static tu_tls_certs certs;

static cgnet_tls_cert cert_of(const tu_pem *p) {
  return (cgnet_tls_cert){.chain = {.data = p->cert}, .key = {.data = p->key}};
}

static cgnet_tls_ctx *ctx_or_fail(const cgnet_tls_options *o) {
  cgnet_tls_ctx *ctx = NULL;
  char msg[256];
  int rc = cgnet_tls_ctx_new(o, &ctx, msg, sizeof(msg));
  if (rc != 0) fail_msg("cgnet_tls_ctx_new: %s: %s", cgnet_err_name(rc), msg);
  return ctx;
}

/* A server on `pem` with version bounds (0: defaults). */
static cgnet_tls_ctx *server_ctx(const tu_pem *pem, uint16_t min, uint16_t max) {
  cgnet_tls_cert c = cert_of(pem);
  cgnet_tls_options o = {.role = CGNET_TLS_SERVER,
                         .certs = &c,
                         .ncerts = 1,
                         .min_version = min,
                         .max_version = max};
  return ctx_or_fail(&o);
}

/* A client trusting the test CA. */
static cgnet_tls_ctx *client_ctx(uint16_t min, uint16_t max) {
  cgnet_tls_options o = {.role = CGNET_TLS_CLIENT,
                         .ca = {.data = certs.ca.cert},
                         .min_version = min,
                         .max_version = max};
  return ctx_or_fail(&o);
}

static void ep_open(ep *e, cgnet_tls_ctx *ctx, const char *name) {
  memset(e, 0, sizeof(*e));
  assert_int_equal(cgnet__tls_new(ctx, name, sink, e, &e->t), 0);
}

/* Client `c` on cctx dialing `name`, server `s` on sctx; runs the handshake. */
static void connect_pair(ep *c, ep *s, cgnet_tls_ctx *cctx, cgnet_tls_ctx *sctx,
                         const char *name, split how) {
  ep_open(c, cctx, name);
  ep_open(s, sctx, NULL);
  assert_int_equal(cgnet__tls_get_state(s->t), CGNET__TLS_HANDSHAKE);
  assert_int_equal(cgnet__tls_start(c->t), 0);
  assert_true(c->wire.len > 0); /* the ClientHello */
  pump(c, s, how);
}

static void assert_open(const ep *e) {
  if (cgnet__tls_get_state(e->t) != CGNET__TLS_OPEN)
    fail_msg("state %d, error %s, reason %s", cgnet__tls_get_state(e->t),
             cgnet_err_name(e->err), cgnet__tls_reason(e->t));
}

static void assert_failed(const ep *e, int code, const char *reason_part) {
  assert_int_equal(cgnet__tls_get_state(e->t), CGNET__TLS_FAILED);
  if (e->err != code)
    fail_msg("error %s (reason %s), want %s", cgnet_err_name(e->err),
             cgnet__tls_reason(e->t), cgnet_err_name(code));
  const char *r = cgnet__tls_reason(e->t);
  assert_non_null(r);
  if (reason_part && !strstr(r, reason_part))
    fail_msg("reason \"%s\" does not say \"%s\"", r, reason_part);
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)((i * 31 + seed) ^ (i >> 9));
}

/* ------------------------------------------------------------------------------------ */
/* Tests                                                                                */
/* ------------------------------------------------------------------------------------ */

static void test_available(void **state) {
  (void)state;
  assert_int_equal(cgnet_tls_available(), 1);
}

static void check_handshake(uint16_t version, const char *want) {
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, version, version);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  assert_open(&c);
  assert_open(&s);
  assert_string_equal(cgnet__tls_version(c.t), want);
  assert_string_equal(cgnet__tls_version(s.t), want);
  assert_string_equal(cgnet__tls_cipher(c.t), cgnet__tls_cipher(s.t));
  if (version == CGNET_TLS_1_2) /* forward secret, AEAD */
    assert_non_null(strstr(cgnet__tls_cipher(s.t), "ECDHE-ECDSA-"));
  assert_string_equal(cgnet__tls_server_name(s.t), "localhost");
  char subject[256];
  assert_int_equal(cgnet__tls_peer_subject(c.t, subject, sizeof(subject)), 1);
  assert_non_null(strstr(subject, "CN=localhost"));
  assert_int_equal(cgnet__tls_peer_subject(s.t, subject, sizeof(subject)), 0);
  assert_int_equal(cgnet__tls_resumed(s.t), 0);
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void test_handshake_tls12_and_tls13(void **state) {
  (void)state;
  check_handshake(CGNET_TLS_1_2, "TLSv1.2");
  check_handshake(CGNET_TLS_1_3, "TLSv1.3");
}

/* Before the handshake ends there is nothing negotiated and writes wait. */
static void test_handshake_state_and_early_writes(void **state) {
  (void)state;
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, 0);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  ep c, s;
  ep_open(&c, cctx, "localhost");
  ep_open(&s, sctx, NULL);
  assert_null(cgnet__tls_version(c.t));
  assert_int_equal(cgnet__tls_write(c.t, "early", 5), 0);
  assert_int_equal(cgnet__tls_flush(c.t), 0);
  assert_int_equal(cgnet__tls_buffered(c.t), 5);
  assert_int_equal(cgnet__tls_start(c.t), 0);
  deliver(&c, &s, WHOLE); /* ClientHello -> server's flight */
  assert_int_equal(cgnet__tls_get_state(c.t), CGNET__TLS_HANDSHAKE);
  pump(&c, &s, WHOLE);
  assert_open(&c);
  assert_int_equal(cgnet__tls_flush(c.t), 0);
  assert_int_equal(cgnet__tls_buffered(c.t), 0);
  pump(&c, &s, WHOLE);
  assert_int_equal(s.got.len, 5);
  assert_memory_equal(s.got.p, "early", 5);
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void exchange(split how, uint16_t version, size_t cap, size_t n) {
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, version, version);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  plain_cap = cap;
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", how);
  assert_open(&c);
  assert_open(&s);
  uint8_t *up = malloc(n), *down = malloc(n);
  assert_non_null(up);
  assert_non_null(down);
  fill_pattern(up, n, 1);
  fill_pattern(down, n, 2);
  /* Mixed write sizes, flushed now and then, both ways at once. */
  for (size_t off = 0, i = 0; off < n; i++) {
    size_t k = 1 + rand_below(i % 3 == 0 ? 40000 : 300);
    if (k > n - off) k = n - off;
    assert_int_equal(cgnet__tls_write(c.t, up + off, k), 0);
    struct iovec iov[2] = {{down + off, k / 2}, {down + off + k / 2, k - k / 2}};
    assert_int_equal(cgnet__tls_writev(s.t, iov, 2), 0);
    off += k;
    if (i % 7 == 0) {
      assert_int_equal(cgnet__tls_flush(c.t), 0);
      assert_int_equal(cgnet__tls_flush(s.t), 0);
      pump(&c, &s, how);
    }
  }
  assert_int_equal(cgnet__tls_flush(c.t), 0);
  assert_int_equal(cgnet__tls_flush(s.t), 0);
  pump(&c, &s, how);
  assert_int_equal(c.err, 0);
  assert_int_equal(s.err, 0);
  assert_int_equal(s.got.len, n);
  assert_int_equal(c.got.len, n);
  assert_memory_equal(s.got.p, up, n);
  assert_memory_equal(c.got.p, down, n);
  free(up);
  free(down);
  plain_cap = 65536;
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void test_data_both_ways(void **state) {
  (void)state;
  const uint16_t versions[] = {CGNET_TLS_1_2, CGNET_TLS_1_3};
  for (int v = 0; v < 2; v++) {
    exchange(WHOLE, versions[v], 65536, 300000 / TU_PAYLOAD_DIV);
    exchange(RANDOM, versions[v], 65536, 200000 / TU_PAYLOAD_DIV);
    exchange(RANDOM, versions[v], 7, 50000 / TU_PAYLOAD_DIV); /* a tiny plaintext buffer */
  }
}

/* The handshake and a little data with every piece of ciphertext cut at every byte. */
static void test_split_at_every_byte(void **state) {
  (void)state;
  exchange(BYTES, CGNET_TLS_1_3, 65536, 5000);
  exchange(BYTES, CGNET_TLS_1_2, 100, 5000);
}

static const char *alpn_result(const char *const *server, const char *const *client,
                               char *buf, int *server_err) {
  cgnet_tls_cert sc = cert_of(&certs.server);
  cgnet_tls_options so = {
      .role = CGNET_TLS_SERVER, .certs = &sc, .ncerts = 1, .alpn = server};
  cgnet_tls_options co = {
      .role = CGNET_TLS_CLIENT, .ca = {.data = certs.ca.cert}, .alpn = client};
  cgnet_tls_ctx *sctx = ctx_or_fail(&so), *cctx = ctx_or_fail(&co);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  *server_err = s.err;
  buf[0] = '\0';
  size_t n = 0, m = 0;
  const uint8_t *p = cgnet__tls_alpn(s.t, &n);
  const uint8_t *q = cgnet__tls_alpn(c.t, &m);
  assert_int_equal(n, m);
  if (p) {
    assert_memory_equal(p, q, n);
    memcpy(buf, p, n);
    buf[n] = '\0';
  }
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
  return buf;
}

static void test_alpn(void **state) {
  (void)state;
  const char *server[] = {"h2", "http/1.1", NULL};
  const char *client[] = {"http/1.1", "h2", NULL};
  const char *client_h1[] = {"http/1.1", NULL};
  const char *client_other[] = {"imap", NULL};
  char buf[256];
  int err;
  /* The server's preference wins. */
  assert_string_equal(alpn_result(server, client, buf, &err), "h2");
  assert_int_equal(err, 0);
  assert_string_equal(alpn_result(server, client_h1, buf, &err), "http/1.1");
  /* A client without ALPN gets none; a client with none in common is refused. */
  assert_string_equal(alpn_result(server, NULL, buf, &err), "");
  assert_int_equal(err, 0);
  assert_string_equal(alpn_result(NULL, client, buf, &err), "");
  assert_int_equal(err, 0);
  alpn_result(server, client_other, buf, &err);
  assert_int_equal(err, CGNET_ETLS);
}

static atomic_int sni_calls;
static int sni_cb(void *ud, const char *name) {
  assert_ptr_equal(ud, &sni_calls);
  atomic_fetch_add(&sni_calls, 1);
  if (strcmp(name, "cb.test") == 0) return 1; /* the exact.test certificate */
  if (strcmp(name, "reject.test") == 0) return CGNET_TLS_SNI_REJECT;
  return CGNET_TLS_SNI_MATCH;
}

/* The subject the client saw when dialing `name` (insecure client: names on purpose
 * not in the certificate), or "" after a failed handshake. */
static void sni_subject(cgnet_tls_ctx *sctx, cgnet_tls_ctx *cctx, const char *name,
                        char *subject, size_t cap) {
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, name, WHOLE);
  subject[0] = '\0';
  if (cgnet__tls_get_state(c.t) == CGNET__TLS_OPEN)
    assert_int_equal(cgnet__tls_peer_subject(c.t, subject, cap), 1);
  else
    assert_failed(&s, CGNET_ETLS, NULL);
  ep_free(&c);
  ep_free(&s);
}

static void test_sni(void **state) {
  (void)state;
  const char *exact_names[] = {"exact.test", NULL};
  const char *wild_names[] = {"*.wild.test", NULL};
  cgnet_tls_cert cs[3] = {cert_of(&certs.server), cert_of(&certs.exact),
                          cert_of(&certs.wild)};
  cs[1].names = exact_names;
  cs[2].names = wild_names;
  cgnet_tls_options so = {.role = CGNET_TLS_SERVER,
                          .certs = cs,
                          .ncerts = 3,
                          .sni = sni_cb,
                          .sni_ud = &sni_calls};
  cgnet_tls_ctx *sctx = ctx_or_fail(&so);
  cgnet_tls_ctx *cctx = client_ctx(0, 0); /* verifies the name */
  cgnet_tls_options io = {.role = CGNET_TLS_CLIENT, .insecure_skip_verify = 1};
  cgnet_tls_ctx *insecure = ctx_or_fail(&io);
  char subj[256];
  /* A verifying client gets the certificate for its name, exact or wildcard. */
  sni_subject(sctx, cctx, "exact.test", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=exact.test"));
  sni_subject(sctx, cctx, "EXACT.test", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=exact.test"));
  sni_subject(sctx, cctx, "a.wild.test", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=*.wild.test"));
  sni_subject(sctx, cctx, "localhost", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=localhost"));
  /* The wildcard covers one label only; unknown names get the default certificate. */
  sni_subject(sctx, insecure, "a.b.wild.test", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=localhost"));
  sni_subject(sctx, insecure, "wild.test", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=localhost"));
  sni_subject(sctx, insecure, "nobody.example", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=localhost"));
  /* The callback picks first, or rejects. */
  int before = atomic_load(&sni_calls);
  sni_subject(sctx, insecure, "cb.test", subj, sizeof(subj));
  assert_non_null(strstr(subj, "CN=exact.test"));
  sni_subject(sctx, insecure, "reject.test", subj, sizeof(subj));
  assert_string_equal(subj, "");
  assert_int_equal(atomic_load(&sni_calls) - before, 2);
  /* An IP address is verified but never sent as SNI. */
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "127.0.0.1", WHOLE);
  assert_open(&c);
  assert_null(SSL_get_servername(cgnet__tls_ssl(s.t), TLSEXT_NAMETYPE_host_name));
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(insecure);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void client_cert_case(cgnet_tls_client_cert mode, int client_has_cert, uint16_t v,
                             int want_server_err) {
  cgnet_tls_cert sc = cert_of(&certs.server), cc = cert_of(&certs.client);
  cgnet_tls_options so = {.role = CGNET_TLS_SERVER,
                          .certs = &sc,
                          .ncerts = 1,
                          .ca = {.data = certs.ca.cert},
                          .client_cert = mode,
                          .max_version = v};
  cgnet_tls_options co = {.role = CGNET_TLS_CLIENT,
                          .ca = {.data = certs.ca.cert},
                          .certs = client_has_cert ? &cc : NULL,
                          .ncerts = client_has_cert ? 1 : 0};
  cgnet_tls_ctx *sctx = ctx_or_fail(&so), *cctx = ctx_or_fail(&co);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  if (want_server_err) {
    assert_failed(&s, want_server_err, NULL);
    /* The client learns it from the alert (in TLS 1.3 after its own side finished). */
    assert_int_equal(cgnet__tls_get_state(c.t), CGNET__TLS_FAILED);
  } else {
    assert_open(&s);
    char subj[256];
    int sent = client_has_cert && mode != CGNET_TLS_CLIENT_CERT_NONE;
    assert_int_equal(cgnet__tls_peer_subject(s.t, subj, sizeof(subj)), sent);
    if (sent) assert_non_null(strstr(subj, "CN=cgnet test client"));
  }
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void test_client_certificates(void **state) {
  (void)state;
  const uint16_t versions[] = {CGNET_TLS_1_2, CGNET_TLS_1_3};
  for (int i = 0; i < 2; i++) {
    client_cert_case(CGNET_TLS_CLIENT_CERT_REQUIRED, 1, versions[i], 0);
    client_cert_case(CGNET_TLS_CLIENT_CERT_REQUIRED, 0, versions[i], CGNET_ETLSVERIFY);
    client_cert_case(CGNET_TLS_CLIENT_CERT_OPTIONAL, 1, versions[i], 0);
    client_cert_case(CGNET_TLS_CLIENT_CERT_OPTIONAL, 0, versions[i], 0);
    client_cert_case(CGNET_TLS_CLIENT_CERT_NONE, 1, versions[i], 0);
  }
}

/* A verifying client against a server certificate it must refuse. */
static void refused(const tu_pem *server_pem, const char *name, const char *why) {
  cgnet_tls_ctx *sctx = server_ctx(server_pem, 0, 0);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, name, WHOLE);
  assert_failed(&c, CGNET_ETLSVERIFY, why);
  assert_failed(&s, CGNET_ETLS, NULL); /* the client's alert */
  ep_free(&c);
  ep_free(&s);
  /* The same with verification explicitly off: the handshake completes. */
  cgnet_tls_options io = {.role = CGNET_TLS_CLIENT, .insecure_skip_verify = 1};
  cgnet_tls_ctx *insecure = ctx_or_fail(&io);
  connect_pair(&c, &s, insecure, sctx, name, WHOLE);
  assert_open(&c);
  assert_open(&s);
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(insecure);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void test_client_refuses_bad_server_certificates(void **state) {
  (void)state;
  refused(&certs.expired, "localhost", "expired");
  refused(&certs.wrong_host, "localhost", "mismatch");
  refused(&certs.server, "127.0.0.2", "mismatch"); /* the address is not in the SAN */
  refused(&certs.untrusted, "localhost", "local issuer");
  /* A self-signed server certificate. */
  refused(&certs.other_ca, "localhost", "self-signed");
}

/* Without a CA the client uses the system store, which does not know the test CA. */
static void test_client_uses_system_store_by_default(void **state) {
  (void)state;
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, 0);
  cgnet_tls_options co = {.role = CGNET_TLS_CLIENT};
  cgnet_tls_ctx *cctx = ctx_or_fail(&co);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  assert_failed(&c, CGNET_ETLSVERIFY, "local issuer");
  ep_free(&c);
  ep_free(&s);
  /* A verifying client needs a name to verify. */
  ep_open(&c, cctx, "localhost");
  ep_free(&c);
  cgnet__tls *t = NULL;
  assert_int_equal(cgnet__tls_new(cctx, NULL, sink, &c, &t), CGNET_EINVAL);
  assert_null(t);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void test_handshake_failures_say_why(void **state) {
  (void)state;
  /* No common version. */
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, CGNET_TLS_1_3, 0);
  cgnet_tls_ctx *cctx = client_ctx(0, CGNET_TLS_1_2);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  assert_failed(&s, CGNET_ETLS, "unsupported protocol");
  assert_failed(&c, CGNET_ETLS, "protocol version");
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
  /* No common TLS 1.2 cipher. */
  cgnet_tls_cert sc = cert_of(&certs.server);
  cgnet_tls_options so = {.role = CGNET_TLS_SERVER,
                          .certs = &sc,
                          .ncerts = 1,
                          .max_version = CGNET_TLS_1_2,
                          .ciphers_tls12 = "ECDHE-ECDSA-AES256-GCM-SHA384"};
  cgnet_tls_options co = {.role = CGNET_TLS_CLIENT,
                          .ca = {.data = certs.ca.cert},
                          .ciphers_tls12 = "ECDHE-ECDSA-CHACHA20-POLY1305"};
  sctx = ctx_or_fail(&so);
  cctx = ctx_or_fail(&co);
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  assert_failed(&s, CGNET_ETLS, "no shared cipher");
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  /* Plain HTTP at a TLS server. */
  ep_open(&s, sctx, NULL);
  const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  feed(&s, (const uint8_t *)http, strlen(http));
  assert_failed(&s, CGNET_ETLS, NULL);
  /* A failed session stays failed and sends nothing more. */
  size_t sent = s.wire.len;
  assert_int_equal(cgnet__tls_write(s.t, "x", 1), CGNET_ETLS);
  assert_int_equal(cgnet__tls_close(s.t), CGNET_ETLS);
  assert_int_equal(s.wire.len, sent);
  ep_free(&s);
  cgnet_tls_ctx_free(sctx);
}

static void test_close_notify_and_truncation(void **state) {
  (void)state;
  const uint16_t versions[] = {CGNET_TLS_1_2, CGNET_TLS_1_3};
  for (int v = 0; v < 2; v++) {
    cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, versions[v]);
    cgnet_tls_ctx *cctx = client_ctx(0, 0);
    ep c, s;
    /* Data, then close_notify: all data arrives and the end is clean. */
    connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
    assert_int_equal(cgnet__tls_write(c.t, "bye", 3), 0);
    assert_int_equal(cgnet__tls_close(c.t), 0); /* flushes first */
    assert_int_equal(cgnet__tls_write(c.t, "x", 1), CGNET_ECLOSED);
    pump(&c, &s, RANDOM);
    assert_int_equal(s.got.len, 3);
    assert_int_equal(cgnet__tls_get_state(s.t), CGNET__TLS_PEER_CLOSED);
    assert_int_equal(cgnet__tls_eof(s.t), CGNET_EOF);
    /* The server answers with its own close_notify. */
    assert_int_equal(cgnet__tls_close(s.t), 0);
    pump(&c, &s, WHOLE);
    assert_int_equal(cgnet__tls_eof(c.t), CGNET_EOF);
    ep_free(&c);
    ep_free(&s);
    /* The stream just stops: a truncation. */
    connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
    assert_int_equal(cgnet__tls_write(c.t, "cut", 3), 0);
    assert_int_equal(cgnet__tls_flush(c.t), 0);
    pump(&c, &s, WHOLE);
    assert_int_equal(cgnet__tls_get_state(s.t), CGNET__TLS_OPEN);
    assert_int_equal(cgnet__tls_eof(s.t), CGNET_ETLSTRUNCATED);
    ep_free(&c);
    ep_free(&s);
    cgnet_tls_ctx_free(cctx);
    cgnet_tls_ctx_free(sctx);
  }
}

/* A TLS 1.2 client asking to renegotiate is refused; the server keeps its session. */
static void test_renegotiation_refused(void **state) {
  (void)state;
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, CGNET_TLS_1_2);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  assert_open(&s);
  SSL *cssl = cgnet__tls_ssl(c.t);
  /* The engine's own clients refuse too: force this one, as a hostile peer would. */
  assert_int_equal(SSL_renegotiate(cssl), 0);
  SSL_clear_options(cssl, SSL_OP_NO_RENEGOTIATION);
  assert_int_equal(SSL_renegotiate(cssl), 1);
  SSL_do_handshake(cssl); /* sends a new ClientHello */
  ERR_clear_error();
  assert_true(c.wire.len > 0);
  deliver(&c, &s, WHOLE);
  /* The server answers with an alert record (no_renegotiation, encrypted), not with a
   * handshake; it did not start a second handshake and still carries data. */
  assert_int_equal(cgnet__tls_get_state(s.t), CGNET__TLS_OPEN);
  assert_true(s.wire.len > 5);
  assert_int_equal(s.wire.p[0], 21);
  assert_int_equal(SSL_renegotiate_pending(cgnet__tls_ssl(s.t)), 0);
  assert_int_equal(cgnet__tls_write(s.t, "still", 5), 0);
  assert_int_equal(cgnet__tls_flush(s.t), 0);
  /* The client is told no, which is fatal to it; its alert then ends the server's. */
  pump(&c, &s, WHOLE);
  assert_failed(&c, CGNET_ETLS, "no renegotiation");
  assert_failed(&s, CGNET_ETLS, "handshake failure");
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

/* One client handshake to localhost, closed cleanly; returns whether it resumed. (A
 * session whose conn ends without the client's close_notify is not offered again.) */
static int dial_resumed(cgnet_tls_ctx *cctx, cgnet_tls_ctx *sctx) {
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  assert_open(&c);
  assert_open(&s);
  int r = cgnet__tls_resumed(s.t);
  assert_int_equal(cgnet__tls_resumed(c.t), r);
  assert_int_equal(cgnet__tls_close(c.t), 0);
  pump(&c, &s, WHOLE);
  ep_free(&c);
  ep_free(&s);
  return r;
}

static void test_ticket_resumption_and_rotation(void **state) {
  (void)state;
  const uint16_t versions[] = {CGNET_TLS_1_2, CGNET_TLS_1_3};
  for (int v = 0; v < 2; v++) {
    cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, versions[v]);
    cgnet_tls_ctx *cctx = client_ctx(0, 0);
    assert_int_equal(dial_resumed(cctx, sctx), 0);
    assert_int_equal(dial_resumed(cctx, sctx), 1);
    /* One rotation: the previous key still opens the ticket (and a new one is issued). */
    assert_int_equal(cgnet_tls_ctx_rotate_ticket_keys(sctx), 0);
    assert_int_equal(dial_resumed(cctx, sctx), 1);
    /* Two more: the ticket's key is gone, so a full handshake, then resumption again. */
    assert_int_equal(cgnet_tls_ctx_rotate_ticket_keys(sctx), 0);
    assert_int_equal(cgnet_tls_ctx_rotate_ticket_keys(sctx), 0);
    assert_int_equal(dial_resumed(cctx, sctx), 0);
    assert_int_equal(dial_resumed(cctx, sctx), 1);
    /* Another server context has other keys. */
    cgnet_tls_ctx *other = server_ctx(&certs.server, 0, versions[v]);
    assert_int_equal(dial_resumed(cctx, other), 0);
    cgnet_tls_ctx_free(other);
    cgnet_tls_ctx_free(cctx);
    cgnet_tls_ctx_free(sctx);
  }
  /* Tickets off: never resumed; a client context cannot rotate. */
  cgnet_tls_cert sc = cert_of(&certs.server);
  cgnet_tls_options so = {
      .role = CGNET_TLS_SERVER, .certs = &sc, .ncerts = 1, .disable_tickets = 1};
  cgnet_tls_ctx *sctx = ctx_or_fail(&so);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  assert_int_equal(dial_resumed(cctx, sctx), 0);
  assert_int_equal(dial_resumed(cctx, sctx), 0);
  assert_int_equal(cgnet_tls_ctx_rotate_ticket_keys(sctx), CGNET_EINVAL);
  assert_int_equal(cgnet_tls_ctx_rotate_ticket_keys(cctx), CGNET_EINVAL);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

/* Application-data records (type 23) in a run of whole TLS records. */
static size_t count_app_records(const bytes *b) {
  size_t n = 0, off = 0;
  while (off + 5 <= b->len) {
    size_t len = (size_t)b->p[off + 3] << 8 | b->p[off + 4];
    if (b->p[off] == 23) n++;
    off += 5 + len;
  }
  assert_int_equal(off, b->len);
  return n;
}

static void test_small_writes_coalesce(void **state) {
  (void)state;
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, 0);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  ep c, s;
  connect_pair(&c, &s, cctx, sctx, "localhost", WHOLE);
  uint8_t *data = malloc(100000);
  assert_non_null(data);
  fill_pattern(data, 100000, 3);
  /* 1,000 writes of 10 bytes: nothing leaves before the flush, then one record. */
  for (int i = 0; i < 1000; i++)
    assert_int_equal(cgnet__tls_write(c.t, data + i * 10, 10), 0);
  assert_int_equal(c.wire.len, 0);
  assert_int_equal(cgnet__tls_buffered(c.t), 10000);
  assert_int_equal(cgnet__tls_flush(c.t), 0);
  assert_int_equal(count_app_records(&c.wire), 1);
  pump(&c, &s, WHOLE);
  /* 1,000 writes of 100 bytes: full 16 KiB records, ceil(100000 / 16384) = 7. Each
   * full record leaves as soon as it is there: the session never holds more than one
   * record's worth of plaintext. */
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(cgnet__tls_write(c.t, data + i * 100, 100), 0);
    assert_true(cgnet__tls_held(c.t) <= 16384);
  }
  assert_int_equal(count_app_records(&c.wire), 6);
  assert_int_equal(cgnet__tls_buffered(c.t), 100000 - 6 * 16384);
  assert_int_equal(cgnet__tls_flush(c.t), 0);
  assert_int_equal(count_app_records(&c.wire), 7);
  assert_int_equal(cgnet__tls_held(c.t), 0);
  pump(&c, &s, WHOLE);
  /* 10 bytes, then 40,000: the second completes the pending record (16,374 of it), the
   * next 16,384 are a record of their own, and the last 7,242 wait. */
  assert_int_equal(cgnet__tls_write(c.t, data, 10), 0);
  assert_int_equal(cgnet__tls_write(c.t, data + 10, 40000), 0);
  assert_int_equal(count_app_records(&c.wire), 2);
  assert_int_equal(cgnet__tls_buffered(c.t), 7242);
  assert_int_equal(cgnet__tls_flush(c.t), 0);
  assert_int_equal(count_app_records(&c.wire), 3);
  pump(&c, &s, WHOLE);
  /* 40,000 bytes written during a handshake wait for it; the first write after it sends
   * their two full records and completes the third with its own bytes. */
  {
    ep c2, s2;
    ep_open(&c2, cctx, "localhost");
    ep_open(&s2, sctx, NULL);
    assert_int_equal(cgnet__tls_start(c2.t), 0);
    assert_int_equal(cgnet__tls_write(c2.t, data, 40000), 0);
    assert_int_equal(cgnet__tls_buffered(c2.t), 40000);
    pump(&c2, &s2, WHOLE);
    assert_open(&c2);
    bytes_free(&c2.wire);
    assert_int_equal(cgnet__tls_write(c2.t, data + 40000, 10000), 0);
    assert_int_equal(count_app_records(&c2.wire), 3);
    assert_int_equal(cgnet__tls_buffered(c2.t), 50000 - 3 * 16384);
    assert_true(cgnet__tls_held(c2.t) <= 16384);
    assert_int_equal(cgnet__tls_flush(c2.t), 0);
    pump(&c2, &s2, WHOLE);
    assert_int_equal(s2.got.len, 50000);
    assert_memory_equal(s2.got.p, data, 50000);
    ep_free(&c2);
    ep_free(&s2);
  }
  /* A 64 KiB write: four full records, none copied into the buffer. */
  assert_int_equal(cgnet__tls_write(c.t, data, 65536), 0);
  assert_int_equal(cgnet__tls_buffered(c.t), 0);
  assert_int_equal(count_app_records(&c.wire), 4);
  pump(&c, &s, WHOLE);
  assert_int_equal(s.got.len, 10000 + 100000 + 40010 + 65536);
  assert_memory_equal(s.got.p, data, 10000);
  assert_memory_equal(s.got.p + 10000, data, 100000);
  assert_memory_equal(s.got.p + 110000, data, 40010);
  assert_memory_equal(s.got.p + 150010, data, 65536);
  free(data);
  ep_free(&c);
  ep_free(&s);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

/*
 * Bytes per idle server session: handshaken (TLS 1.3, ECDSA P-256, X25519, a ticket
 * issued), nothing buffered. Measured at 10,000 sessions (fewer under the sanitizers) by
 * counting every allocation OpenSSL and the engine hold. On x86_64 with OpenSSL 3.0.19:
 * 13,612 bytes per session, of which OpenSSL's SSL object is 7,608, the two AES-GCM
 * cipher contexts 1,920, the SSL_SESSION 928, the copied certificate settings 536, and
 * the engine's own struct 136; no record buffer and no engine buffer. The bound leaves
 * room for other OpenSSL builds and suites.
 */
#define TLS_IDLE_SESSION_BYTES 16384
static void test_idle_session_memory(void **state) {
  (void)state;
  const size_t n = TU_TSAN ? 500 : (TU_ASAN ? 2000 : 10000);
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, 0);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  /* One handshake first, so that lazily made tables do not count. */
  dial_resumed(cctx, sctx);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_options io = {
      .role = CGNET_TLS_CLIENT, .insecure_skip_verify = 1, .disable_tickets = 1};
  cctx = ctx_or_fail(&io); /* cheap clients: no verification, no cache */
  ep *servers = calloc(n, sizeof(*servers));
  assert_non_null(servers);
  long long before = atomic_load(&live_bytes);
  uint64_t t0 = tu_now_ms();
  for (size_t i = 0; i < n; i++) {
    ep c;
    connect_pair(&c, &servers[i], cctx, sctx, "localhost", WHOLE);
    assert_open(&servers[i]);
    ep_free(&c);
    bytes_free(&servers[i].wire);
    bytes_free(&servers[i].got);
  }
  uint64_t took = tu_now_ms() - t0;
  long long per = (atomic_load(&live_bytes) - before) / (long long)n;
  print_message("idle TLS server session: %lld bytes each (%zu sessions, %llu ms for the "
                "handshakes)\n",
                per, n, (unsigned long long)took);
  assert_true(per > 0);
  assert_true(per < TLS_IDLE_SESSION_BYTES);
  for (size_t i = 0; i < n; i++)
    ep_free(&servers[i]);
  free(servers);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
}

static void expect_ctx_error(const cgnet_tls_options *o, int code, const char *msg_part) {
  cgnet_tls_ctx *ctx = (cgnet_tls_ctx *)&ctx;
  char msg[256] = "";
  int rc = cgnet_tls_ctx_new(o, &ctx, msg, sizeof(msg));
  if (rc != code)
    fail_msg("got %s (\"%s\"), want %s", cgnet_err_name(rc), msg, cgnet_err_name(code));
  assert_null(ctx);
  if (!strstr(msg, msg_part)) fail_msg("message \"%s\" does not say \"%s\"", msg, msg_part);
}

static void test_context_errors(void **state) {
  (void)state;
  cgnet_tls_cert c = cert_of(&certs.server);
  cgnet_tls_options o = {.role = CGNET_TLS_SERVER, .certs = &c, .ncerts = 1};
  /* Files: a missing one, then the real ones work. */
  char path[128], key_path[128], ca_path[128];
  snprintf(path, sizeof(path), "%s/server.pem", certs.dir);
  snprintf(key_path, sizeof(key_path), "%s/server.key", certs.dir);
  snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", certs.dir);
  c = (cgnet_tls_cert){.chain = {.file = "/nonexistent/cert.pem"},
                       .key = {.file = key_path}};
  expect_ctx_error(&o, CGNET_ENOENT, "/nonexistent/cert.pem");
  c = (cgnet_tls_cert){.chain = {.file = path}, .key = {.file = key_path}};
  cgnet_tls_ctx *sctx = ctx_or_fail(&o);
  cgnet_tls_options co = {.role = CGNET_TLS_CLIENT, .ca = {.file = ca_path}};
  cgnet_tls_ctx *cctx = ctx_or_fail(&co);
  assert_int_equal(dial_resumed(cctx, sctx), 0);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
  /* Not PEM; a broken PEM block; the key of another certificate. */
  c = (cgnet_tls_cert){.chain = {.data = "hello"}, .key = {.data = certs.server.key}};
  expect_ctx_error(&o, CGNET_ETLSCERT, "no PEM certificate");
  c.chain.data = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  expect_ctx_error(&o, CGNET_ETLSCERT, "certs[0].chain");
  c = (cgnet_tls_cert){.chain = {.data = certs.server.cert}, .key = {.data = "nope"}};
  expect_ctx_error(&o, CGNET_ETLSCERT, "certs[0].key");
  c.key.data = certs.client.key;
  expect_ctx_error(&o, CGNET_ETLSCERT, "does not match");
  c = (cgnet_tls_cert){.chain = {.data = certs.server.cert, .file = path},
                       .key = {.data = certs.server.key}};
  expect_ctx_error(&o, CGNET_EINVAL, "not both");
  /* Options. */
  c = cert_of(&certs.server);
  cgnet_tls_options bad = o;
  bad.ncerts = 0;
  expect_ctx_error(&bad, CGNET_EINVAL, "needs a certificate");
  bad = o;
  bad.min_version = 0x0301;
  expect_ctx_error(&bad, CGNET_EINVAL, "min_version");
  bad = o;
  bad.min_version = CGNET_TLS_1_3;
  bad.max_version = CGNET_TLS_1_2;
  expect_ctx_error(&bad, CGNET_EINVAL, "above");
  bad = o;
  bad.ciphers_tls12 = "NO-SUCH-CIPHER";
  expect_ctx_error(&bad, CGNET_EINVAL, "ciphers_tls12");
  bad = o;
  bad.ciphersuites_tls13 = "TLS_NOPE";
  expect_ctx_error(&bad, CGNET_EINVAL, "ciphersuites_tls13");
  const char *empty_alpn[] = {"", NULL};
  bad = o;
  bad.alpn = empty_alpn;
  expect_ctx_error(&bad, CGNET_EINVAL, "alpn[0]");
  bad = o;
  bad.client_cert = CGNET_TLS_CLIENT_CERT_REQUIRED;
  expect_ctx_error(&bad, CGNET_EINVAL, "needs a ca");
  const char *bad_names[] = {"*foo.test", NULL};
  cgnet_tls_cert named = c;
  named.names = bad_names;
  bad = o;
  bad.certs = &named;
  expect_ctx_error(&bad, CGNET_EINVAL, "wildcard");
  bad = o;
  bad.ca = (cgnet_tls_pem){.data = "garbage"};
  expect_ctx_error(&bad, CGNET_ETLSCERT, "ca");
  assert_int_equal(cgnet_tls_ctx_new(&o, NULL, NULL, 0), CGNET_EINVAL);
  cgnet_tls_ctx_free(NULL);
}

/* A context lives on while a session uses it. */
static void test_context_outlives_its_user_reference(void **state) {
  (void)state;
  cgnet_tls_ctx *sctx = server_ctx(&certs.server, 0, 0);
  cgnet_tls_ctx *cctx = client_ctx(0, 0);
  ep c, s;
  ep_open(&c, cctx, "localhost");
  ep_open(&s, sctx, NULL);
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
  assert_int_equal(cgnet__tls_start(c.t), 0);
  pump(&c, &s, WHOLE);
  assert_open(&c);
  assert_open(&s);
  ep_free(&c);
  ep_free(&s);
}

/* Sessions on several threads share one server and one client context (as loops will),
 * while another thread rotates the ticket keys: every handshake completes, resumptions
 * happen, and TSan sees the shared state (ticket keys, session cache, reference count)
 * under its lock. No cmocka assert on the worker threads: they count. */
typedef struct shared_ctxs {
  cgnet_tls_ctx *sctx, *cctx;
  atomic_int opened, resumed, failed, stop;
} shared_ctxs;

static int thread_sink(void *ud, const struct iovec *iov, int iovcnt) {
  bytes *b = ud;
  for (int i = 0; i < iovcnt; i++) {
    uint8_t *p = realloc(b->p, b->len + iov[i].iov_len);
    if (!p) return CGNET_ENOMEM;
    memcpy(p + b->len, iov[i].iov_base, iov[i].iov_len);
    b->p = p;
    b->len += iov[i].iov_len;
  }
  return 0;
}

/* Move b's bytes into t; 0 or the input's error. */
static int thread_feed(bytes *b, cgnet__tls *t) {
  uint8_t buf[4096];
  size_t got;
  int rc = cgnet__tls_input(t, b->p, b->len, buf, sizeof(buf), &got);
  while (rc == 0 && cgnet__tls_pending(t))
    rc = cgnet__tls_input(t, NULL, 0, buf, sizeof(buf), &got);
  b->len = 0;
  return rc;
}

static void *handshake_worker(void *arg) {
  shared_ctxs *sh = arg;
  for (int i = 0; i < 40; i++) {
    bytes cw = {0}, sw = {0};
    cgnet__tls *c = NULL, *s = NULL;
    int rc = cgnet__tls_new(sh->cctx, "localhost", thread_sink, &cw, &c);
    if (rc == 0) rc = cgnet__tls_new(sh->sctx, NULL, thread_sink, &sw, &s);
    if (rc == 0) rc = cgnet__tls_start(c);
    for (int round = 0; rc == 0 && round < 20 && (cw.len || sw.len); round++) {
      rc = thread_feed(&cw, s);
      if (rc == 0) rc = thread_feed(&sw, c);
    }
    if (rc == 0 && cgnet__tls_get_state(s) == CGNET__TLS_OPEN) {
      atomic_fetch_add(&sh->opened, 1);
      if (cgnet__tls_resumed(s)) atomic_fetch_add(&sh->resumed, 1);
      rc = cgnet__tls_close(c);
      if (rc == 0) rc = thread_feed(&cw, s);
    }
    if (rc != 0) atomic_fetch_add(&sh->failed, 1);
    cgnet__tls_free(c);
    cgnet__tls_free(s);
    free(cw.p);
    free(sw.p);
  }
  return NULL;
}

/* Rotates after every 20 handshakes (counted, not timed, so that a slow sanitizer build
 * still resumes between rotations). */
static void *rotator(void *arg) {
  shared_ctxs *sh = arg;
  int next = 20;
  while (!atomic_load(&sh->stop)) {
    if (atomic_load(&sh->opened) >= next) {
      if (cgnet_tls_ctx_rotate_ticket_keys(sh->sctx) != 0) atomic_fetch_add(&sh->failed, 1);
      next += 20;
    }
    tu_sleep_ms(1);
  }
  return NULL;
}

static void test_contexts_shared_by_threads(void **state) {
  (void)state;
  shared_ctxs sh = {.sctx = server_ctx(&certs.server, 0, 0), .cctx = client_ctx(0, 0)};
  pthread_t workers[3], rot;
  assert_int_equal(pthread_create(&rot, NULL, rotator, &sh), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&workers[i], NULL, handshake_worker, &sh), 0);
  for (int i = 0; i < 3; i++)
    pthread_join(workers[i], NULL);
  atomic_store(&sh.stop, 1);
  pthread_join(rot, NULL);
  assert_int_equal(atomic_load(&sh.failed), 0);
  assert_int_equal(atomic_load(&sh.opened), 120);
  assert_true(atomic_load(&sh.resumed) > 0);
  cgnet_tls_ctx_free(sh.cctx);
  cgnet_tls_ctx_free(sh.sctx);
}

static int setup(void **state) {
  (void)state;
  return tu_tls_certs_make(&certs);
}

static int teardown(void **state) {
  (void)state;
  tu_tls_certs_free(&certs);
  return 0;
}

int main(void) {
  /* Before OpenSSL allocates anything: count what it (and the engine) holds. */
  if (!CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free)) {
    fprintf(stderr, "test_tls: CRYPTO_set_mem_functions refused\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_public_calls_without_tls),
      cmocka_unit_test(test_available),
      cmocka_unit_test(test_handshake_tls12_and_tls13),
      cmocka_unit_test(test_handshake_state_and_early_writes),
      cmocka_unit_test(test_data_both_ways),
      cmocka_unit_test(test_split_at_every_byte),
      cmocka_unit_test(test_alpn),
      cmocka_unit_test(test_sni),
      cmocka_unit_test(test_client_certificates),
      cmocka_unit_test(test_client_refuses_bad_server_certificates),
      cmocka_unit_test(test_client_uses_system_store_by_default),
      cmocka_unit_test(test_handshake_failures_say_why),
      cmocka_unit_test(test_close_notify_and_truncation),
      cmocka_unit_test(test_renegotiation_refused),
      cmocka_unit_test(test_ticket_resumption_and_rotation),
      cmocka_unit_test(test_small_writes_coalesce),
      cmocka_unit_test(test_context_errors),
      cmocka_unit_test(test_context_outlives_its_user_reference),
      cmocka_unit_test(test_contexts_shared_by_threads),
      cmocka_unit_test(test_idle_session_memory),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

#endif /* CGNET_HAVE_TLS */
