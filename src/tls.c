/*
 * The per-connection TLS engine over OpenSSL 3 (see src/tls.h for the contract). Built
 * only with CGNET_HAVE_TLS; src/tls_none.c stands in otherwise.
 *
 * OpenSSL talks to the connection through a BIO of our own: its read takes bytes from
 * the carry and then from the span of ciphertext the current cgnet__tls_input call was
 * given, and reports "retry" when both are empty; its write hands each record to the
 * sink. Neither ever blocks, so every SSL_* call returns at once with a result or
 * SSL_ERROR_WANT_READ. The engine's memory (this struct and its buffers) comes from
 * OPENSSL_malloc, so that OpenSSL's allocator hooks see a session's whole footprint.
 */
#ifdef CGNET_HAVE_TLS

#include <arpa/inet.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal/util.h"
#include "tls.h"
#include "tls_ctx.h"

struct cgnet__tls {
  SSL *ssl;
  cgnet_tls_ctx *ctx;
  cgnet__tls_sink_fn sink;
  void *sink_ud;

  /* The ciphertext span of the current input call (borrowed; NULL outside it). */
  const uint8_t *span;
  size_t span_len;
  /* Ciphertext input could not use yet because the plaintext buffer was full: read
   * before any newer span. Freed when it empties. */
  uint8_t *carry;
  size_t carry_off, carry_len, carry_cap;
  /* Plaintext written and not yet flushed. Freed at each flush. */
  uint8_t *out;
  size_t out_len, out_cap;

  char *server_name; /* client: the name it dials (the session cache key) */
  const char *reason;
  int err;      /* the fatal error, once FAILED */
  int sink_err; /* the sink's refusal, seen inside a BIO write */
  uint8_t state;
  uint8_t closed; /* close_notify sent (or close called) */
};

/* ------------------------------------------------------------------------------------ */
/* The BIO: reads from carry + span, writes to the sink                                 */
/* ------------------------------------------------------------------------------------ */

static int bio_read(BIO *b, char *buf, size_t len, size_t *got) {
  cgnet__tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  size_t n = 0;
  if (t->carry_len) {
    n = cgnet__min_size(len, t->carry_len);
    memcpy(buf, t->carry + t->carry_off, n);
    t->carry_off += n;
    t->carry_len -= n;
    if (t->carry_len == 0) {
      OPENSSL_free(t->carry);
      t->carry = NULL;
      t->carry_off = t->carry_cap = 0;
    }
  } else if (t->span_len) {
    n = cgnet__min_size(len, t->span_len);
    memcpy(buf, t->span, n);
    t->span += n;
    t->span_len -= n;
  } else {
    BIO_set_retry_read(b);
    *got = 0;
    return 0;
  }
  *got = n;
  return 1;
}

static int bio_write(BIO *b, const char *buf, size_t len, size_t *put) {
  cgnet__tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  struct iovec iov = {(void *)buf, len};
  int rc = t->sink(t->sink_ud, &iov, 1);
  if (rc < 0) {
    t->sink_err = rc;
    *put = 0;
    return 0;
  }
  *put = len;
  return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* nothing is held inside the BIO */
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD *cgnet__tls_bio_method_new(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cgnet span");
  if (!m) return NULL;
  if (!BIO_meth_set_read_ex(m, bio_read) || !BIO_meth_set_write_ex(m, bio_write) ||
      !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
    BIO_meth_free(m);
    return NULL;
  }
  return m;
}

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                               */
/* ------------------------------------------------------------------------------------ */

/* SSL_get_error reads the thread's error queue, so it must be empty before each SSL
 * call. It nearly always is already: peeking costs a tenth of what clearing the queue's
 * slots costs, and it runs before every read and write. */
static void clear_stale_errors(void) {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

static int set_failed(cgnet__tls *t, int err, const char *reason) {
  t->state = CGNET__TLS_FAILED;
  t->err = err;
  t->reason = reason;
  ERR_clear_error(); /* the queue is per thread: leave nothing for the next session */
  return err;
}

/* A verification failure as a code and OpenSSL's sentence for it. */
static int verify_failure(cgnet__tls *t, unsigned long e) {
  int reason = ERR_GET_REASON(e);
  long vr = SSL_get_verify_result(t->ssl);
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK)
    return set_failed(t, CGNET_ETLSVERIFY, X509_verify_cert_error_string(vr));
  return set_failed(t, CGNET_ETLSVERIFY, ERR_reason_error_string(e));
}

/* Classify a failed SSL call (ret as it returned). 0 when it only needs more input or
 * the peer closed cleanly; otherwise the session fails with a code and a reason. */
static int on_ssl_error(cgnet__tls *t, int ret) {
  int e = SSL_get_error(t->ssl, ret);
  if (e == SSL_ERROR_WANT_READ) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) {
    t->state = CGNET__TLS_PEER_CLOSED;
    return 0;
  }
  if (t->sink_err) return set_failed(t, t->sink_err, "the output sink refused the bytes");
  unsigned long err = ERR_peek_error();
  if (!err) return set_failed(t, CGNET_ETLS, "TLS engine error");
  if (ERR_GET_LIB(err) == ERR_LIB_SSL) {
    switch (ERR_GET_REASON(err)) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return verify_failure(t, err);
    default:
      break;
    }
  }
  if (ERR_GET_REASON(err) == ERR_R_MALLOC_FAILURE)
    return set_failed(t, CGNET_ENOMEM, "out of memory");
  const char *r = ERR_reason_error_string(err);
  return set_failed(t, CGNET_ETLS, r ? r : "TLS protocol error");
}

/* ------------------------------------------------------------------------------------ */
/* Life                                                                                 */
/* ------------------------------------------------------------------------------------ */

static int is_ip_literal(const char *name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* Client: SNI (names only, never an address), the name to verify, a cached session. */
static int setup_client(cgnet__tls *t, const char *name) {
  SSL *ssl = t->ssl;
  SSL_set_connect_state(ssl);
  if (!name) return t->ctx->insecure_skip_verify ? 0 : CGNET_EINVAL;
  t->server_name = OPENSSL_strdup(name);
  if (!t->server_name) return CGNET_ENOMEM;
  int ip = is_ip_literal(name);
  if (!ip && !SSL_set_tlsext_host_name(ssl, name)) return CGNET_EINVAL;
  if (!t->ctx->insecure_skip_verify) {
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
                : SSL_set1_host(ssl, name);
    if (!ok) return CGNET_EINVAL;
  }
  SSL_SESSION *cached = cgnet__tls_ctx_session_get(t->ctx, name);
  if (cached) {
    SSL_set_session(ssl, cached);
    SSL_SESSION_free(cached);
  }
  return 0;
}

int cgnet__tls_new(cgnet_tls_ctx *ctx, const char *server_name, cgnet__tls_sink_fn sink,
                   void *sink_ud, cgnet__tls **out) {
  *out = NULL;
  if (!ctx || !sink) return CGNET_EINVAL;
  cgnet__tls *t = OPENSSL_zalloc(sizeof(*t));
  if (!t) return CGNET_ENOMEM;
  cgnet__tls_ctx_ref(ctx);
  t->ctx = ctx;
  t->sink = sink;
  t->sink_ud = sink_ud;
  t->state = CGNET__TLS_HANDSHAKE;
  ERR_clear_error();
  int rc = CGNET_ENOMEM;
  t->ssl = SSL_new(ctx->ssl[0]);
  BIO *bio = t->ssl ? BIO_new(ctx->bio_method) : NULL;
  if (bio) {
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_app_data(t->ssl, t);
    rc = 0;
    if (ctx->role == CGNET_TLS_SERVER)
      SSL_set_accept_state(t->ssl);
    else
      rc = setup_client(t, server_name);
  }
  if (rc < 0) {
    cgnet__tls_free(t);
    ERR_clear_error();
    return rc;
  }
  *out = t;
  return 0;
}

void cgnet__tls_free(cgnet__tls *t) {
  if (!t) return;
  SSL_free(t->ssl); /* frees the BIO too */
  OPENSSL_free(t->carry);
  OPENSSL_free(t->out);
  OPENSSL_free(t->server_name);
  cgnet_tls_ctx *ctx = t->ctx;
  OPENSSL_free(t);
  cgnet__tls_ctx_unref(ctx);
}

int cgnet__tls_on_new_session(SSL *ssl, SSL_SESSION *sess) {
  cgnet__tls *t = SSL_get_app_data(ssl);
  if (!t || !t->server_name || !SSL_SESSION_is_resumable(sess)) return 0;
  cgnet__tls_ctx_session_put(t->ctx, t->server_name, sess);
  return 1; /* the cache keeps the reference */
}

/* ------------------------------------------------------------------------------------ */
/* Input                                                                                */
/* ------------------------------------------------------------------------------------ */

static int handshake(cgnet__tls *t) {
  clear_stale_errors();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->state = CGNET__TLS_OPEN;
    return 0;
  }
  return on_ssl_error(t, r);
}

int cgnet__tls_start(cgnet__tls *t) {
  if (t->state == CGNET__TLS_FAILED) return t->err;
  if (SSL_is_server(t->ssl) || t->state != CGNET__TLS_HANDSHAKE) return 0;
  return handshake(t);
}

/* Ciphertext the BIO can still hand OpenSSL in this call. */
static int input_left(const cgnet__tls *t) {
  return t->carry_len > 0 || t->span_len > 0;
}

/* Read until the plaintext buffer is full or nothing more can come out: no ciphertext
 * left to read and no decrypted bytes waiting (OpenSSL reads one record at a time, so
 * it holds no whole record beyond those). Not calling SSL_read then saves a call that
 * could only end in WANT_READ, after setting up and releasing its record buffer. */
static int read_plain(cgnet__tls *t, uint8_t *out, size_t cap, size_t *outlen) {
  while (*outlen < cap && t->state == CGNET__TLS_OPEN &&
         (input_left(t) || SSL_pending(t->ssl) > 0)) {
    size_t n = 0;
    clear_stale_errors();
    if (SSL_read_ex(t->ssl, out + *outlen, cap - *outlen, &n) == 1) {
      *outlen += n;
      continue;
    }
    return on_ssl_error(t, 0);
  }
  return 0;
}

/* Keep what is left of the span for the next call (the caller's buffer is reused). */
static int stash_span(cgnet__tls *t) {
  size_t need = t->carry_len + t->span_len;
  if (need > t->carry_cap - t->carry_off) {
    if (t->carry_off) { /* slide the unread part to the front first */
      memmove(t->carry, t->carry + t->carry_off, t->carry_len);
      t->carry_off = 0;
    }
    if (need > t->carry_cap) {
      uint8_t *p = OPENSSL_realloc(t->carry, need);
      if (!p) return set_failed(t, CGNET_ENOMEM, "out of memory");
      t->carry = p;
      t->carry_cap = need;
    }
  }
  memcpy(t->carry + t->carry_off + t->carry_len, t->span, t->span_len);
  t->carry_len += t->span_len;
  return 0;
}

int cgnet__tls_input(cgnet__tls *t, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
                     size_t *outlen) {
  *outlen = 0;
  if (t->state == CGNET__TLS_FAILED) return t->err;
  if (t->state == CGNET__TLS_PEER_CLOSED) return 0; /* bytes after close_notify: ignored */
  t->span = in;
  t->span_len = in ? len : 0;
  int rc = 0;
  if (t->state == CGNET__TLS_HANDSHAKE) rc = handshake(t);
  if (rc == 0 && cap > 0) rc = read_plain(t, out, cap, outlen);
  if (rc == 0 && t->span_len && t->state != CGNET__TLS_PEER_CLOSED) rc = stash_span(t);
  t->span = NULL;
  t->span_len = 0;
  return rc;
}

int cgnet__tls_pending(const cgnet__tls *t) {
  if (t->state != CGNET__TLS_OPEN && t->state != CGNET__TLS_HANDSHAKE) return 0;
  return t->carry_len > 0 || SSL_pending(t->ssl) > 0;
}

/* ------------------------------------------------------------------------------------ */
/* Output                                                                               */
/* ------------------------------------------------------------------------------------ */

static int encrypt(cgnet__tls *t, const uint8_t *p, size_t len) {
  while (len > 0) {
    size_t chunk = cgnet__min_size(len, CGNET__TLS_RECORD_MAX), n = 0;
    clear_stale_errors();
    if (SSL_write_ex(t->ssl, p, chunk, &n) != 1) return on_ssl_error(t, 0);
    p += n;
    len -= n;
  }
  return 0;
}

static int can_encrypt(const cgnet__tls *t) {
  return t->state == CGNET__TLS_OPEN || t->state == CGNET__TLS_PEER_CLOSED;
}

static int append_out(cgnet__tls *t, const void *data, size_t len) {
  if (len > t->out_cap - t->out_len) {
    size_t cap = cgnet__max_size(t->out_cap * 2, t->out_len + len);
    cap = cgnet__max_size(cap, 4096);
    /* Once open, less than a record waits here (cgnet__tls_write). */
    if (can_encrypt(t) && t->out_len + len <= CGNET__TLS_RECORD_MAX)
      cap = cgnet__min_size(cap, CGNET__TLS_RECORD_MAX);
    uint8_t *p = OPENSSL_realloc(t->out, cap);
    if (!p) return CGNET_ENOMEM;
    t->out = p;
    t->out_cap = cap;
  }
  memcpy(t->out + t->out_len, data, len);
  t->out_len += len;
  return 0;
}

static int write_check(const cgnet__tls *t) {
  if (t->state == CGNET__TLS_FAILED) return t->err;
  if (t->closed) return CGNET_ECLOSED;
  return 0;
}

/* Writes made during the handshake may have buffered more than a record: encrypt its
 * whole records, keep the tail in front, and shrink the buffer to a record. */
static int encrypt_buffered_records(cgnet__tls *t) {
  size_t whole = t->out_len - t->out_len % CGNET__TLS_RECORD_MAX;
  int rc = encrypt(t, t->out, whole);
  t->out_len -= whole;
  memmove(t->out, t->out + whole, t->out_len);
  uint8_t *p = OPENSSL_realloc(t->out, CGNET__TLS_RECORD_MAX);
  if (p) { /* else the larger buffer stays until the flush */
    t->out = p;
    t->out_cap = CGNET__TLS_RECORD_MAX;
  }
  return rc;
}

/*
 * Plaintext waits for the flush only while it is less than a record: as soon as a full
 * record's worth is pending it is encrypted, so a session holds at most 16 KiB of
 * plaintext besides the ciphertext queued. Otherwise a turn's burst of writes (up to
 * write_buffer_limit) would be held twice at the flush, once as plaintext and once as
 * ciphertext. The records are the same as a flush would make (16 KiB each from the
 * last flush on); small writes within a turn are still gathered into one record.
 * During the handshake everything waits.
 */
int cgnet__tls_write(cgnet__tls *t, const void *data, size_t len) {
  int rc = write_check(t);
  if (rc < 0 || len == 0) return rc;
  if (!can_encrypt(t)) return append_out(t, data, len);
  const uint8_t *p = data;
  if (t->out_len >= CGNET__TLS_RECORD_MAX && (rc = encrypt_buffered_records(t)) < 0)
    return rc;
  if (t->out_len) { /* complete the pending record first */
    size_t fill = cgnet__min_size(len, CGNET__TLS_RECORD_MAX - t->out_len);
    rc = append_out(t, p, fill);
    if (rc < 0 || t->out_len < CGNET__TLS_RECORD_MAX) return rc;
    p += fill;
    len -= fill;
    rc = encrypt(t, t->out, t->out_len);
    t->out_len = 0; /* the buffer stays for the next record; the flush frees it */
    if (rc < 0) return rc;
  }
  /* Full records go out now, uncopied; only the tail waits. */
  size_t whole = len - len % CGNET__TLS_RECORD_MAX;
  if (whole) {
    rc = encrypt(t, p, whole);
    if (rc < 0) return rc;
    p += whole;
    len -= whole;
  }
  return len ? append_out(t, p, len) : 0;
}

int cgnet__tls_writev(cgnet__tls *t, const struct iovec *iov, int iovcnt) {
  if (iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  for (int i = 0; i < iovcnt; i++) {
    int rc = cgnet__tls_write(t, iov[i].iov_base, iov[i].iov_len);
    if (rc < 0) return rc;
  }
  return write_check(t);
}

int cgnet__tls_flush(cgnet__tls *t) {
  if (t->state == CGNET__TLS_FAILED) return t->err;
  if (!can_encrypt(t) || !t->out) return 0;
  int rc = encrypt(t, t->out, t->out_len);
  /* Release the buffer: an idle session keeps none. */
  OPENSSL_free(t->out);
  t->out = NULL;
  t->out_len = t->out_cap = 0;
  return rc;
}

size_t cgnet__tls_buffered(const cgnet__tls *t) {
  return t->out_len;
}

size_t cgnet__tls_held(const cgnet__tls *t) {
  int pending = SSL_pending(t->ssl);
  return t->out_cap + t->carry_cap + (pending > 0 ? (size_t)pending : 0);
}

int cgnet__tls_close(cgnet__tls *t) {
  if (t->state == CGNET__TLS_FAILED) return t->err;
  if (t->closed) return 0;
  int rc = cgnet__tls_flush(t);
  t->closed = 1;
  if (rc < 0 || t->state == CGNET__TLS_HANDSHAKE) return rc;
  clear_stale_errors();
  int r = SSL_shutdown(t->ssl); /* 0: sent ours; 1: both sides done */
  if (r < 0) return on_ssl_error(t, r) < 0 ? t->err : 0;
  return 0;
}

int cgnet__tls_eof(const cgnet__tls *t) {
  return t->state == CGNET__TLS_PEER_CLOSED ? CGNET_EOF : CGNET_ETLSTRUNCATED;
}

/* ------------------------------------------------------------------------------------ */
/* What was negotiated                                                                  */
/* ------------------------------------------------------------------------------------ */

cgnet__tls_state cgnet__tls_get_state(const cgnet__tls *t) {
  return (cgnet__tls_state)t->state;
}

const char *cgnet__tls_reason(const cgnet__tls *t) {
  return t->state == CGNET__TLS_FAILED ? t->reason : NULL;
}

static int negotiated(const cgnet__tls *t) {
  return t->state == CGNET__TLS_OPEN || t->state == CGNET__TLS_PEER_CLOSED;
}

const char *cgnet__tls_version(const cgnet__tls *t) {
  return negotiated(t) ? SSL_get_version(t->ssl) : NULL;
}

const char *cgnet__tls_cipher(const cgnet__tls *t) {
  return negotiated(t) ? SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl)) : NULL;
}

const uint8_t *cgnet__tls_alpn(const cgnet__tls *t, size_t *len) {
  const unsigned char *p = NULL;
  unsigned n = 0;
  if (negotiated(t)) SSL_get0_alpn_selected(t->ssl, &p, &n);
  *len = p ? n : 0;
  return p && n ? p : NULL;
}

const char *cgnet__tls_server_name(const cgnet__tls *t) {
  if (t->server_name) return t->server_name;
  return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

int cgnet__tls_resumed(const cgnet__tls *t) {
  return negotiated(t) && SSL_session_reused(t->ssl);
}

int cgnet__tls_peer_subject(const cgnet__tls *t, char *buf, size_t cap) {
  X509 *peer = negotiated(t) ? SSL_get0_peer_certificate(t->ssl) : NULL;
  if (cap) buf[0] = '\0';
  if (!peer || cap == 0) return 0;
  BIO *b = BIO_new(BIO_s_mem());
  if (!b) return 0;
  X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
  char *text = NULL;
  long n = BIO_get_mem_data(b, &text);
  size_t copy = n > 0 ? cgnet__min_size((size_t)n, cap - 1) : 0;
  memcpy(buf, text, copy);
  buf[copy] = '\0';
  BIO_free(b);
  return 1;
}

void *cgnet__tls_ssl(const cgnet__tls *t) {
  return t->ssl;
}

#endif /* CGNET_HAVE_TLS */
