/*
 * What the TLS engine (src/tls.c) costs, in memory and without sockets:
 *
 *   bulk       MiB/s through a client session's write/flush and a server session's
 *              input, ciphertext handed over in spans of --span bytes (a read's worth)
 *   baseline   the same bytes through two plain SSL objects on memory BIOs (the common
 *              way: BIO_write the ciphertext into the server's read BIO, SSL_read it out,
 *              BIO_read the client's output), to show what the span BIO saves
 *   writes     MiB/s of plaintext through a client session's write path: writes of W
 *              bytes, a flush after every F of them (F = 1: a reply per turn; F large:
 *              a turn's burst of small writes), the ciphertext discarded
 *   handshake  full handshakes per second (client + server on this one thread)
 *
 * (What handshakes cost on several threads at once: bench/tls_threads.c.)
 *
 *   build/bench/tls_engine [--mib N] [--span BYTES] [--handshakes N]
 *
 * Certificates come from tests/support/tls_certs.c (made at start, ECDSA P-256).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "cgnet_tls.h"
#include "support/tls_certs.h"
#include "tls.h"

typedef struct wire {
  uint8_t *p;
  size_t len, cap;
} wire;

static int to_wire(void *ud, const struct iovec *iov, int n) {
  wire *w = ud;
  for (int i = 0; i < n; i++) {
    if (w->len + iov[i].iov_len > w->cap) {
      size_t cap = w->cap ? w->cap * 2 : 65536;
      while (cap < w->len + iov[i].iov_len)
        cap *= 2;
      uint8_t *p = realloc(w->p, cap);
      if (!p) return CGNET_ENOMEM;
      w->p = p;
      w->cap = cap;
    }
    memcpy(w->p + w->len, iov[i].iov_base, iov[i].iov_len);
    w->len += iov[i].iov_len;
  }
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "tls_engine: %s\n", what);
  exit(1);
}

static uint8_t plain[65536];

/* Hand everything in w to t in spans of `span`, dropping the plaintext. */
static size_t deliver(wire *w, cgnet__tls *t, size_t span) {
  size_t got_total = 0;
  for (size_t off = 0; off < w->len;) {
    size_t n = w->len - off < span ? w->len - off : span, got = 0;
    if (cgnet__tls_input(t, w->p + off, n, plain, sizeof(plain), &got) < 0) die("input");
    got_total += got;
    while (cgnet__tls_pending(t)) {
      if (cgnet__tls_input(t, NULL, 0, plain, sizeof(plain), &got) < 0) die("input");
      got_total += got;
    }
    off += n;
  }
  w->len = 0;
  return got_total;
}

static void handshake(cgnet__tls *c, wire *cw, cgnet__tls *s, wire *sw) {
  if (cgnet__tls_start(c) < 0) die("start");
  for (int i = 0; i < 20 && (cw->len || sw->len); i++) {
    deliver(cw, s, 65536);
    deliver(sw, c, 65536);
  }
  if (cgnet__tls_get_state(c) != CGNET__TLS_OPEN ||
      cgnet__tls_get_state(s) != CGNET__TLS_OPEN)
    die("handshake failed");
}

static double bench_engine(cgnet_tls_ctx *cctx, cgnet_tls_ctx *sctx, size_t total,
                           size_t span) {
  wire cw = {0}, sw = {0};
  cgnet__tls *c, *s;
  if (cgnet__tls_new(cctx, "localhost", to_wire, &cw, &c) ||
      cgnet__tls_new(sctx, NULL, to_wire, &sw, &s))
    die("session");
  handshake(c, &cw, s, &sw);
  static uint8_t msg[16384];
  memset(msg, 'x', sizeof(msg));
  double t0 = now_s();
  size_t got = 0;
  for (size_t sent = 0; sent < total; sent += sizeof(msg)) {
    if (cgnet__tls_write(c, msg, sizeof(msg)) || cgnet__tls_flush(c)) die("write");
    if (cw.len >= span) got += deliver(&cw, s, span);
  }
  got += deliver(&cw, s, span);
  double dt = now_s() - t0;
  if (got != total) die("bulk: bytes lost");
  cgnet__tls_free(c);
  cgnet__tls_free(s);
  free(cw.p);
  free(sw.p);
  return (double)total / (1 << 20) / dt;
}

/* The write path alone: `per_flush` writes of `size` bytes, then a flush; `total` bytes
 * in all. The wire is emptied after each flush (nothing reads it). */
static double bench_writes(cgnet_tls_ctx *cctx, cgnet_tls_ctx *sctx, size_t total,
                           size_t size, size_t per_flush) {
  wire cw = {0}, sw = {0};
  cgnet__tls *c, *s;
  if (cgnet__tls_new(cctx, "localhost", to_wire, &cw, &c) ||
      cgnet__tls_new(sctx, NULL, to_wire, &sw, &s))
    die("session");
  handshake(c, &cw, s, &sw);
  static uint8_t msg[16384];
  memset(msg, 'x', sizeof(msg));
  double t0 = now_s();
  for (size_t sent = 0; sent < total;) {
    for (size_t i = 0; i < per_flush && sent < total; i++, sent += size)
      if (cgnet__tls_write(c, msg, size)) die("write");
    if (cgnet__tls_flush(c)) die("flush");
    cw.len = 0;
  }
  double dt = now_s() - t0;
  cgnet__tls_free(c);
  cgnet__tls_free(s);
  free(cw.p);
  free(sw.p);
  return (double)total / (1 << 20) / dt;
}

/* The usual memory-BIO pair, for comparison. */
static void mem_pump(SSL *from, BIO *from_out, BIO *to_in, size_t span, uint8_t *buf) {
  (void)from;
  for (;;) {
    int n = BIO_read(from_out, buf, (int)span);
    if (n <= 0) break;
    if (BIO_write(to_in, buf, n) != n) die("BIO_write");
  }
}

static double bench_membio(cgnet_tls_ctx *cctx_unused, const tu_tls_certs *certs,
                           size_t total, size_t span) {
  (void)cctx_unused;
  SSL_CTX *sc = SSL_CTX_new(TLS_server_method()), *cc = SSL_CTX_new(TLS_client_method());
  BIO *kb = BIO_new_mem_buf(certs->server.key, -1),
      *xb = BIO_new_mem_buf(certs->server.cert, -1);
  EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
  X509 *x = PEM_read_bio_X509(xb, NULL, NULL, NULL);
  if (!sc || !cc || !k || !x || !SSL_CTX_use_certificate(sc, x) ||
      !SSL_CTX_use_PrivateKey(sc, k))
    die("baseline ctx");
  SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_mode(cc, SSL_MODE_RELEASE_BUFFERS);
  SSL *s = SSL_new(sc), *c = SSL_new(cc);
  BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
  BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
  SSL_set_bio(s, s_in, s_out);
  SSL_set_bio(c, c_in, c_out);
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
  uint8_t *buf = malloc(span);
  if (!buf) die("malloc");
  for (int i = 0; i < 20; i++) {
    SSL_do_handshake(c);
    mem_pump(c, c_out, s_in, span, buf);
    SSL_do_handshake(s);
    mem_pump(s, s_out, c_in, span, buf);
  }
  if (!SSL_is_init_finished(c) || !SSL_is_init_finished(s)) die("baseline handshake");
  static uint8_t msg[16384];
  memset(msg, 'x', sizeof(msg));
  double t0 = now_s();
  size_t got = 0, n;
  for (size_t sent = 0; sent < total; sent += sizeof(msg)) {
    if (SSL_write_ex(c, msg, sizeof(msg), &n) != 1) die("baseline write");
    if (BIO_ctrl_pending(c_out) >= span || sent + sizeof(msg) >= total) {
      mem_pump(c, c_out, s_in, span, buf);
      while (SSL_read_ex(s, plain, sizeof(plain), &n) == 1)
        got += n;
    }
  }
  double dt = now_s() - t0;
  if (got != total) die("baseline: bytes lost");
  ERR_clear_error();
  SSL_free(s);
  SSL_free(c);
  SSL_CTX_free(sc);
  SSL_CTX_free(cc);
  EVP_PKEY_free(k);
  X509_free(x);
  BIO_free(kb);
  BIO_free(xb);
  free(buf);
  return (double)total / (1 << 20) / dt;
}

static double bench_handshakes(cgnet_tls_ctx *cctx, cgnet_tls_ctx *sctx, int count) {
  double t0 = now_s();
  for (int i = 0; i < count; i++) {
    wire cw = {0}, sw = {0};
    cgnet__tls *c, *s;
    if (cgnet__tls_new(cctx, "localhost", to_wire, &cw, &c) ||
        cgnet__tls_new(sctx, NULL, to_wire, &sw, &s))
      die("session");
    handshake(c, &cw, s, &sw);
    cgnet__tls_free(c);
    cgnet__tls_free(s);
    free(cw.p);
    free(sw.p);
  }
  return count / (now_s() - t0);
}

static long parse(const char *flag, const char *v, long lo, long hi) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || n < lo || n > hi) {
    fprintf(stderr, "tls_engine: %s wants a number in [%ld, %ld], not '%s'\n", flag, lo, hi,
            v);
    exit(2);
  }
  return n;
}

int main(int argc, char **argv) {
  long mib = 512, span = 65536, hs = 2000;
  for (int i = 1; i < argc; i += 2) {
    const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (value && strcmp(flag, "--mib") == 0)
      mib = parse(flag, value, 1, 1 << 20);
    else if (value && strcmp(flag, "--span") == 0)
      span = parse(flag, value, 1, 1 << 24);
    else if (value && strcmp(flag, "--handshakes") == 0)
      hs = parse(flag, value, 1, 1 << 24);
    else {
      fprintf(stderr, "usage: %s [--mib N] [--span BYTES] [--handshakes N]\n", argv[0]);
      return 2;
    }
  }
  if (!cgnet_tls_available()) die("built without TLS");
  tu_tls_certs certs;
  if (tu_tls_certs_make(&certs) != 0) die("certificates");
  cgnet_tls_cert sc = {.chain = {.data = certs.server.cert},
                       .key = {.data = certs.server.key}};
  cgnet_tls_options so = {.role = CGNET_TLS_SERVER, .certs = &sc, .ncerts = 1};
  cgnet_tls_options co = {.role = CGNET_TLS_CLIENT, .ca = {.data = certs.ca.cert}};
  cgnet_tls_ctx *sctx, *cctx;
  char msg[256];
  if (cgnet_tls_ctx_new(&so, &sctx, msg, sizeof(msg)) ||
      cgnet_tls_ctx_new(&co, &cctx, msg, sizeof(msg)))
    die(msg);
  size_t total = (size_t)mib << 20;
  printf("bulk, span BIO (engine):  %8.0f MiB/s  (%ld MiB, spans of %ld bytes, TLS 1.3)\n",
         bench_engine(cctx, sctx, total, (size_t)span), mib, span);
  printf("bulk, memory BIO pair:    %8.0f MiB/s\n",
         bench_membio(cctx, &certs, total, (size_t)span));
  static const size_t writes[][2] = {{64, 1}, {100, 655}, {1000, 65}, {4096, 16}};
  for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
    printf("writes of %4zu, %3zu/flush: %8.0f MiB/s\n", writes[i][0], writes[i][1],
           bench_writes(cctx, sctx, total / 4, writes[i][0], writes[i][1]));
  printf("handshakes (both sides):  %8.0f /s     (TLS 1.3, ECDSA P-256, client verifies)\n",
         bench_handshakes(cctx, sctx, (int)hs));
  cgnet_tls_ctx_free(cctx);
  cgnet_tls_ctx_free(sctx);
  tu_tls_certs_free(&certs);
  return 0;
}
