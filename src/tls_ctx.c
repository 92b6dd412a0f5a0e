/*
 * TLS contexts over OpenSSL 3: options checked and certificates loaded once, into one
 * SSL_CTX per certificate; SNI, ALPN, session tickets with rotating keys, and the
 * client's session cache. Built only with CGNET_HAVE_TLS (src/tls_none.c otherwise).
 */
#ifdef CGNET_HAVE_TLS

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cgnet_tls.h"
#include "tls_ctx.h"

/* Mozilla "intermediate" for TLS 1.2, minus DHE: ECDHE with AEAD ciphers only. */
#define DEFAULT_TLS12_CIPHERS                                                              \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                             \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                             \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define DEFAULT_TLS13_SUITES                                                               \
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define DEFAULT_TICKET_PERIOD_S 3600u
#define PEM_FILE_MAX (4u << 20) /* a certificate bundle is far smaller */

/* Names the sessions of one context for resumption (required with client certs). */
static const unsigned char session_id_context[] = "cgnet";

/* Errors while building a context: the code, and the message in the caller's buffer. */
typedef struct build_err {
  char *buf;
  size_t len;
} build_err;

static int fail(build_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(build_err *e, int code, const char *fmt, ...) {
  if (e->buf && e->len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->len, fmt, ap);
    va_end(ap);
  }
  ERR_clear_error();
  return code;
}

/* OpenSSL's reason for the last error on this thread (static text). */
static const char *ssl_reason(void) {
  const char *r = ERR_reason_error_string(ERR_peek_last_error());
  return r ? r : "unknown OpenSSL error";
}

/* ------------------------------------------------------------------------------------ */
/* PEM sources                                                                          */
/* ------------------------------------------------------------------------------------ */

/* A PEM source opened as a memory BIO: the file's bytes (owned) or the caller's. */
typedef struct pem_src {
  BIO *bio;
  char *owned;
  char label[160]; /* "certs[0].key (file 'x.pem')" for messages */
} pem_src;

static int read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -errno;
  char *buf = malloc(PEM_FILE_MAX);
  if (!buf) {
    fclose(f);
    return CGNET_ENOMEM;
  }
  size_t n = fread(buf, 1, PEM_FILE_MAX, f);
  int err = ferror(f) ? CGNET_EIO : 0;
  if (!err && n == PEM_FILE_MAX) err = CGNET_ETLSCERT; /* too big to be PEM we want */
  fclose(f);
  if (err) {
    free(buf);
    return err;
  }
  *out = buf;
  *len = n;
  return 0;
}

static int pem_open(const cgnet_tls_pem *p, const char *what, pem_src *s, build_err *e) {
  memset(s, 0, sizeof(*s));
  const char *data = p->data;
  size_t len = p->len;
  if (p->file && p->data)
    return fail(e, CGNET_EINVAL, "%s: set file or data, not both", what);
  if (p->file) {
    snprintf(s->label, sizeof(s->label), "%s (file '%s')", what, p->file);
    int rc = read_file(p->file, &s->owned, &len);
    if (rc == CGNET_ETLSCERT) return fail(e, rc, "%s: larger than 4 MiB", s->label);
    if (rc < 0) return fail(e, rc, "%s: cannot read: %s", s->label, cgnet_strerror(rc));
    data = s->owned;
  } else {
    snprintf(s->label, sizeof(s->label), "%s", what);
    if (!data) return fail(e, CGNET_EINVAL, "%s: no file and no data", what);
    if (len == 0) len = strlen(data);
  }
  if (len > (size_t)INT32_MAX) return fail(e, CGNET_EINVAL, "%s: too large", s->label);
  s->bio = BIO_new_mem_buf(data, (int)len);
  if (!s->bio) {
    free(s->owned);
    return fail(e, CGNET_ENOMEM, "%s: out of memory", s->label);
  }
  return 0;
}

static void pem_close(pem_src *s) {
  BIO_free(s->bio);
  free(s->owned);
}

/* Never prompt on a terminal for an encrypted key's passphrase: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

/* Every certificate in a PEM source, in order. */
static int load_certs(const cgnet_tls_pem *p, const char *what, STACK_OF(X509) * *out,
                      build_err *e) {
  pem_src s;
  int rc = pem_open(p, what, &s, e);
  if (rc < 0) return rc;
  STACK_OF(X509) *certs = sk_X509_new_null();
  X509 *x;
  while (certs && (x = PEM_read_bio_X509(s.bio, NULL, no_passphrase, NULL)) != NULL) {
    if (!sk_X509_push(certs, x)) {
      X509_free(x);
      break;
    }
  }
  /* The loop ends on "no more PEM"; anything else is a malformed certificate. */
  unsigned long last = ERR_peek_last_error();
  int eof = ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  if (!certs)
    rc = fail(e, CGNET_ENOMEM, "%s: out of memory", s.label);
  else if (last && !eof)
    rc = fail(e, CGNET_ETLSCERT, "%s: bad certificate: %s", s.label, ssl_reason());
  else if (sk_X509_num(certs) == 0)
    rc = fail(e, CGNET_ETLSCERT, "%s: no PEM certificate found", s.label);
  ERR_clear_error();
  pem_close(&s);
  if (rc < 0) {
    sk_X509_pop_free(certs, X509_free);
    return rc;
  }
  *out = certs;
  return 0;
}

static int load_key(const cgnet_tls_pem *p, const char *what, EVP_PKEY **out,
                    build_err *e) {
  pem_src s;
  int rc = pem_open(p, what, &s, e);
  if (rc < 0) return rc;
  EVP_PKEY *k = PEM_read_bio_PrivateKey(s.bio, NULL, no_passphrase, NULL);
  if (!k)
    rc = fail(e, CGNET_ETLSCERT, "%s: no usable PEM private key (%s)", s.label,
              ssl_reason());
  pem_close(&s);
  *out = k;
  return rc;
}

/* Put a chain and its key on one SSL_CTX; a key that is not the leaf's fails here. */
static int use_cert(SSL_CTX *sc, const cgnet_tls_cert *c, size_t i, build_err *e) {
  char what[64];
  snprintf(what, sizeof(what), "certs[%zu].chain", i);
  STACK_OF(X509) *chain = NULL;
  EVP_PKEY *key = NULL;
  int rc = load_certs(&c->chain, what, &chain, e);
  if (rc < 0) return rc;
  snprintf(what, sizeof(what), "certs[%zu].key", i);
  rc = load_key(&c->key, what, &key, e);
  if (rc == 0) {
    X509 *leaf = sk_X509_shift(chain);
    if (SSL_CTX_use_certificate(sc, leaf) != 1)
      rc = fail(e, CGNET_ETLSCERT, "certs[%zu].chain: certificate refused: %s", i,
                ssl_reason());
    else if (SSL_CTX_set1_chain(sc, chain) != 1)
      rc = fail(e, CGNET_ETLSCERT, "certs[%zu].chain: chain refused: %s", i, ssl_reason());
    else if (SSL_CTX_use_PrivateKey(sc, key) != 1 || SSL_CTX_check_private_key(sc) != 1)
      rc = fail(e, CGNET_ETLSCERT, "certs[%zu].key: does not match the certificate (%s)", i,
                ssl_reason());
    X509_free(leaf);
  }
  EVP_PKEY_free(key);
  sk_X509_pop_free(chain, X509_free);
  return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Callbacks                                                                            */
/* ------------------------------------------------------------------------------------ */

static int name_matches(const cgnet__tls_name *n, const char *name) {
  if (!n->wildcard) return strcasecmp(n->name, name) == 0;
  /* "*.example.com" (stored ".example.com"): exactly one non-empty label before it. */
  const char *dot = strchr(name, '.');
  return dot && dot != name && strcasecmp(dot, n->name) == 0;
}

/* The certificate for a server name: an exact name first, then a wildcard, then 0. */
static size_t cert_for_name(const cgnet_tls_ctx *ctx, const char *name) {
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < ctx->nnames; i++)
      if (ctx->names[i].wildcard == pass && name_matches(&ctx->names[i], name))
        return ctx->names[i].cert;
  return 0;
}

static int on_servername(SSL *ssl, int *alert, void *arg) {
  cgnet_tls_ctx *ctx = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  int pick = ctx->sni ? ctx->sni(ctx->sni_ud, name) : CGNET_TLS_SNI_MATCH;
  if (pick == CGNET_TLS_SNI_REJECT || pick < CGNET_TLS_SNI_REJECT ||
      (pick >= 0 && (size_t)pick >= ctx->nssl)) {
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  size_t cert = pick >= 0 ? (size_t)pick : cert_for_name(ctx, name);
  if (cert != 0 && !SSL_set_SSL_CTX(ssl, ctx->ssl[cert])) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  return SSL_TLSEXT_ERR_OK;
}

/* Server ALPN: the first of the server's protocols that the client offers. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  cgnet_tls_ctx *ctx = arg;
  unsigned char *chosen = NULL;
  if (SSL_select_next_proto(&chosen, outlen, ctx->alpn, (unsigned)ctx->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

static uint64_t monotonic_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec;
}

/* Make a new current key; the current one becomes the previous one. Under ctx->lock. */
static int rotate_locked(cgnet_tls_ctx *ctx) {
  cgnet__tls_ticket_key k;
  if (RAND_bytes(k.name, sizeof(k.name)) != 1 || RAND_bytes(k.aes, sizeof(k.aes)) != 1 ||
      RAND_bytes(k.hmac, sizeof(k.hmac)) != 1)
    return CGNET_ENOMEM;
  k.born_s = monotonic_s();
  if (ctx->nkeys > 0) ctx->keys[1] = ctx->keys[0];
  ctx->keys[0] = k;
  ctx->nkeys = ctx->nkeys > 0 ? 2 : 1;
  OPENSSL_cleanse(&k, sizeof(k));
  return 0;
}

/* Set up the ticket cipher and MAC with key k. */
static int ticket_init(cgnet_tls_ctx *ctx, const cgnet__tls_ticket_key *k,
                       unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                       int enc) {
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
      OSSL_PARAM_construct_end(),
  };
  if (!EVP_MAC_init(hctx, k->hmac, sizeof(k->hmac), params)) return 0;
  if (enc) return EVP_EncryptInit_ex(cctx, ctx->ticket_cipher, NULL, k->aes, iv);
  return EVP_DecryptInit_ex(cctx, ctx->ticket_cipher, NULL, k->aes, iv);
}

/* OpenSSL's ticket key callback: encrypt with the current key (rotating it first when
 * its period is over); decrypt with the key the ticket names, asking for a fresh ticket
 * when that is the previous key (or the session is TLS 1.3). Returns 1, 2 (renew), 0
 * (unknown key: full handshake) or -1. */
static int on_ticket_key(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc) {
  cgnet_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  int rc = -1;
  pthread_mutex_lock(&ctx->lock);
  if (enc) {
    if (monotonic_s() - ctx->keys[0].born_s >= ctx->ticket_period_s) rotate_locked(ctx);
    const cgnet__tls_ticket_key *k = &ctx->keys[0];
    int ivlen = EVP_CIPHER_get_iv_length(ctx->ticket_cipher);
    memcpy(key_name, k->name, sizeof(k->name));
    if (RAND_bytes(iv, ivlen) == 1 && ticket_init(ctx, k, iv, cctx, hctx, 1)) rc = 1;
  } else {
    rc = 0;
    for (int i = 0; i < ctx->nkeys; i++) {
      if (memcmp(key_name, ctx->keys[i].name, sizeof(ctx->keys[i].name)) != 0) continue;
      /* Renew a ticket of the previous key; and always in TLS 1.3, whose clients use a
       * ticket once, so that a resumed session leaves them another one. */
      int renew = i == 1 || SSL_version(ssl) == TLS1_3_VERSION;
      rc = ticket_init(ctx, &ctx->keys[i], iv, cctx, hctx, 0) ? (renew ? 2 : 1) : -1;
      break;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  return rc;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
  return cgnet__tls_on_new_session(ssl, sess);
}

/* ------------------------------------------------------------------------------------ */
/* Building                                                                             */
/* ------------------------------------------------------------------------------------ */

static int check_version(uint16_t v, const char *what, build_err *e) {
  if (v == 0 || v == CGNET_TLS_1_2 || v == CGNET_TLS_1_3) return 0;
  return fail(e, CGNET_EINVAL, "%s 0x%04x: only TLS 1.2 (0x0303) and 1.3 (0x0304)", what,
              v);
}

static int build_alpn(cgnet_tls_ctx *ctx, const char *const *alpn, build_err *e) {
  if (!alpn || !alpn[0]) return 0;
  size_t total = 0;
  for (size_t i = 0; alpn[i]; i++) {
    size_t n = strlen(alpn[i]);
    if (n == 0 || n > 255)
      return fail(e, CGNET_EINVAL, "alpn[%zu]: a protocol name is 1 to 255 bytes", i);
    total += 1 + n;
  }
  if (total > 65535) return fail(e, CGNET_EINVAL, "alpn: the list is too long");
  ctx->alpn = malloc(total);
  if (!ctx->alpn) return fail(e, CGNET_ENOMEM, "alpn: out of memory");
  for (size_t i = 0; alpn[i]; i++) {
    size_t n = strlen(alpn[i]);
    ctx->alpn[ctx->alpn_len++] = (uint8_t)n;
    memcpy(ctx->alpn + ctx->alpn_len, alpn[i], n);
    ctx->alpn_len += n;
  }
  return 0;
}

static int add_name(cgnet_tls_ctx *ctx, const char *name, size_t cert, build_err *e) {
  int wildcard = name[0] == '*';
  if (wildcard && (name[1] != '.' || name[2] == '\0' || strchr(name + 1, '*')))
    return fail(e, CGNET_EINVAL, "certs[%zu].names: '%s': a wildcard is '*.' and a domain",
                cert, name);
  if (!wildcard && (name[0] == '\0' || strchr(name, '*')))
    return fail(e, CGNET_EINVAL, "certs[%zu].names: '%s' is not a server name", cert, name);
  cgnet__tls_name *n = &ctx->names[ctx->nnames];
  n->name = strdup(wildcard ? name + 1 : name);
  if (!n->name) return fail(e, CGNET_ENOMEM, "out of memory");
  for (char *p = n->name; *p; p++)
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  n->wildcard = wildcard;
  n->cert = cert;
  ctx->nnames++;
  return 0;
}

static int build_names(cgnet_tls_ctx *ctx, const cgnet_tls_options *o, build_err *e) {
  size_t count = 0;
  for (size_t i = 0; i < o->ncerts; i++)
    for (size_t j = 0; o->certs[i].names && o->certs[i].names[j]; j++)
      count++;
  if (count == 0) return 0;
  ctx->names = calloc(count, sizeof(*ctx->names));
  if (!ctx->names) return fail(e, CGNET_ENOMEM, "out of memory");
  for (size_t i = 0; i < o->ncerts; i++)
    for (size_t j = 0; o->certs[i].names && o->certs[i].names[j]; j++) {
      int rc = add_name(ctx, o->certs[i].names[j], i, e);
      if (rc < 0) return rc;
    }
  return 0;
}

static int check_options(const cgnet_tls_options *o, build_err *e) {
  if (o->role != CGNET_TLS_SERVER && o->role != CGNET_TLS_CLIENT)
    return fail(e, CGNET_EINVAL, "role: neither server nor client");
  if (o->ncerts && !o->certs)
    return fail(e, CGNET_EINVAL, "ncerts is set but certs is NULL");
  if (o->role == CGNET_TLS_SERVER && o->ncerts == 0)
    return fail(e, CGNET_EINVAL, "a server needs a certificate and key (certs)");
  if (o->role == CGNET_TLS_CLIENT && o->ncerts > 1)
    return fail(e, CGNET_EINVAL, "a client has at most one certificate");
  if ((unsigned)o->client_cert > CGNET_TLS_CLIENT_CERT_REQUIRED)
    return fail(e, CGNET_EINVAL, "client_cert: not a cgnet_tls_client_cert value");
  int has_ca = o->ca.file || o->ca.data;
  if (o->role == CGNET_TLS_SERVER && o->client_cert != CGNET_TLS_CLIENT_CERT_NONE &&
      !has_ca)
    return fail(e, CGNET_EINVAL, "client_cert: verifying client certificates needs a ca");
  int rc = check_version(o->min_version, "min_version", e);
  if (rc == 0) rc = check_version(o->max_version, "max_version", e);
  if (rc == 0 && o->min_version && o->max_version && o->min_version > o->max_version)
    rc = fail(e, CGNET_EINVAL, "min_version is above max_version");
  return rc;
}

/* What every SSL_CTX of the context shares: versions, ciphers, options, callbacks. */
static int configure(cgnet_tls_ctx *ctx, SSL_CTX *sc, const cgnet_tls_options *o,
                     STACK_OF(X509) * ca, build_err *e) {
  SSL_CTX_set_app_data(sc, ctx);
  if (!SSL_CTX_set_min_proto_version(sc,
                                     o->min_version ? o->min_version : TLS1_2_VERSION) ||
      !SSL_CTX_set_max_proto_version(sc, o->max_version ? o->max_version : TLS1_3_VERSION))
    return fail(e, CGNET_EINVAL, "versions refused: %s", ssl_reason());
  const char *c12 = o->ciphers_tls12 ? o->ciphers_tls12 : DEFAULT_TLS12_CIPHERS;
  const char *c13 = o->ciphersuites_tls13 ? o->ciphersuites_tls13 : DEFAULT_TLS13_SUITES;
  if (!SSL_CTX_set_cipher_list(sc, c12))
    return fail(e, CGNET_EINVAL, "ciphers_tls12 '%s' selects no cipher", c12);
  if (!SSL_CTX_set_ciphersuites(sc, c13))
    return fail(e, CGNET_EINVAL, "ciphersuites_tls13 '%s' is not valid", c13);
  SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                              (ctx->tickets ? 0 : SSL_OP_NO_TICKET));
  SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
  if (ca) {
    X509_STORE *store = SSL_CTX_get_cert_store(sc);
    for (int i = 0; i < sk_X509_num(ca); i++)
      if (!X509_STORE_add_cert(store, sk_X509_value(ca, i)))
        return fail(e, CGNET_ETLSCERT, "ca: certificate %d refused: %s", i, ssl_reason());
  }
  if (o->role == CGNET_TLS_SERVER) {
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_OFF); /* stateless tickets only */
    SSL_CTX_set_session_id_context(sc, session_id_context, sizeof(session_id_context) - 1);
    SSL_CTX_set_timeout(sc, (long)ctx->ticket_period_s);
    SSL_CTX_set_num_tickets(sc, ctx->tickets ? 1 : 0);
    if (ctx->tickets) SSL_CTX_set_tlsext_ticket_key_evp_cb(sc, on_ticket_key);
    if (ctx->alpn) SSL_CTX_set_alpn_select_cb(sc, on_alpn, ctx);
    SSL_CTX_set_tlsext_servername_callback(sc, on_servername);
    SSL_CTX_set_tlsext_servername_arg(sc, ctx);
    int mode = SSL_VERIFY_NONE;
    if (o->client_cert == CGNET_TLS_CLIENT_CERT_OPTIONAL) mode = SSL_VERIFY_PEER;
    if (o->client_cert == CGNET_TLS_CLIENT_CERT_REQUIRED)
      mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(sc, mode, NULL);
  } else {
    SSL_CTX_set_verify(sc, ctx->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                       NULL);
    if (!ca && !ctx->insecure_skip_verify && !SSL_CTX_set_default_verify_paths(sc))
      return fail(e, CGNET_ETLSCERT, "system CA store: %s", ssl_reason());
    if (ctx->alpn && SSL_CTX_set_alpn_protos(sc, ctx->alpn, (unsigned)ctx->alpn_len) != 0)
      return fail(e, CGNET_ENOMEM, "alpn: %s", ssl_reason());
    if (ctx->tickets) {
      SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT |
                                             SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(sc, on_new_session);
    }
  }
  return 0;
}

static int build_ssl_ctxs(cgnet_tls_ctx *ctx, const cgnet_tls_options *o, build_err *e) {
  STACK_OF(X509) *ca = NULL;
  int rc = 0;
  if (o->ca.file || o->ca.data) rc = load_certs(&o->ca, "ca", &ca, e);
  ctx->nssl = o->ncerts ? o->ncerts : 1;
  ctx->ssl = rc == 0 ? calloc(ctx->nssl, sizeof(*ctx->ssl)) : NULL;
  if (rc == 0 && !ctx->ssl) rc = fail(e, CGNET_ENOMEM, "out of memory");
  const SSL_METHOD *m =
      o->role == CGNET_TLS_SERVER ? TLS_server_method() : TLS_client_method();
  for (size_t i = 0; rc == 0 && i < ctx->nssl; i++) {
    ctx->ssl[i] = SSL_CTX_new(m);
    if (!ctx->ssl[i]) rc = fail(e, CGNET_ENOMEM, "SSL_CTX_new: %s", ssl_reason());
    if (rc == 0) rc = configure(ctx, ctx->ssl[i], o, ca, e);
    if (rc == 0 && o->ncerts) rc = use_cert(ctx->ssl[i], &o->certs[i], i, e);
  }
  sk_X509_pop_free(ca, X509_free);
  return rc;
}

static void ctx_destroy(cgnet_tls_ctx *ctx) {
  for (size_t i = 0; ctx->ssl && i < ctx->nssl; i++)
    SSL_CTX_free(ctx->ssl[i]);
  free(ctx->ssl);
  for (size_t i = 0; i < ctx->nnames; i++)
    free(ctx->names[i].name);
  free(ctx->names);
  free(ctx->alpn);
  for (size_t i = 0; i < CGNET__TLS_SESSION_CACHE; i++) {
    free(ctx->cache[i].name);
    SSL_SESSION_free(ctx->cache[i].sess);
  }
  EVP_CIPHER_free(ctx->ticket_cipher);
  if (ctx->bio_method) BIO_meth_free(ctx->bio_method);
  OPENSSL_cleanse(ctx->keys, sizeof(ctx->keys));
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}

int cgnet_tls_available(void) {
  return 1;
}

int cgnet_tls_ctx_new(const cgnet_tls_options *opts, cgnet_tls_ctx **out, char *errbuf,
                      size_t errlen) {
  build_err e = {errbuf, errlen};
  if (errbuf && errlen) errbuf[0] = '\0';
  if (!out) return fail(&e, CGNET_EINVAL, "out is NULL");
  *out = NULL;
  static const cgnet_tls_options defaults;
  const cgnet_tls_options *o = opts ? opts : &defaults;
  ERR_clear_error();
  int rc = check_options(o, &e);
  if (rc < 0) return rc;

  cgnet_tls_ctx *ctx = calloc(1, sizeof(*ctx));
  if (!ctx) return fail(&e, CGNET_ENOMEM, "out of memory");
  atomic_init(&ctx->refs, 1);
  pthread_mutex_init(&ctx->lock, NULL);
  ctx->role = o->role;
  ctx->insecure_skip_verify = o->role == CGNET_TLS_CLIENT && o->insecure_skip_verify;
  ctx->sni = o->sni;
  ctx->sni_ud = o->sni_ud;
  ctx->tickets = !o->disable_tickets;
  ctx->ticket_period_s =
      o->ticket_key_period_s ? o->ticket_key_period_s : DEFAULT_TICKET_PERIOD_S;
  ctx->bio_method = cgnet__tls_bio_method_new();
  if (!ctx->bio_method) rc = fail(&e, CGNET_ENOMEM, "out of memory");
  if (rc == 0 && ctx->tickets && ctx->role == CGNET_TLS_SERVER) {
    ctx->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (!ctx->ticket_cipher || rotate_locked(ctx) < 0)
      rc = fail(&e, CGNET_ENOMEM, "session tickets: %s", ssl_reason());
  }
  if (rc == 0) rc = build_alpn(ctx, o->alpn, &e);
  if (rc == 0 && o->role == CGNET_TLS_SERVER) rc = build_names(ctx, o, &e);
  if (rc == 0) rc = build_ssl_ctxs(ctx, o, &e);
  if (rc < 0) {
    ctx_destroy(ctx);
    return rc;
  }
  *out = ctx;
  return 0;
}

void cgnet__tls_ctx_ref(cgnet_tls_ctx *ctx) {
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

void cgnet__tls_ctx_unref(cgnet_tls_ctx *ctx) {
  if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) == 1) ctx_destroy(ctx);
}

void cgnet_tls_ctx_free(cgnet_tls_ctx *ctx) {
  if (ctx) cgnet__tls_ctx_unref(ctx);
}

void cgnet__tls_ctx_hold(cgnet_tls_ctx *ctx) {
  cgnet__tls_ctx_ref(ctx);
}

int cgnet__tls_ctx_is_client(const cgnet_tls_ctx *ctx) {
  return ctx->role == CGNET_TLS_CLIENT;
}

int cgnet_tls_ctx_rotate_ticket_keys(cgnet_tls_ctx *ctx) {
  if (!ctx || ctx->role != CGNET_TLS_SERVER || !ctx->tickets) return CGNET_EINVAL;
  pthread_mutex_lock(&ctx->lock);
  int rc = rotate_locked(ctx);
  pthread_mutex_unlock(&ctx->lock);
  return rc;
}

SSL_SESSION *cgnet__tls_ctx_session_get(cgnet_tls_ctx *ctx, const char *name) {
  SSL_SESSION *s = NULL;
  pthread_mutex_lock(&ctx->lock);
  for (size_t i = 0; i < CGNET__TLS_SESSION_CACHE; i++) {
    if (ctx->cache[i].name && strcmp(ctx->cache[i].name, name) == 0) {
      s = ctx->cache[i].sess;
      SSL_SESSION_up_ref(s);
      break;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  return s;
}

void cgnet__tls_ctx_session_put(cgnet_tls_ctx *ctx, const char *name, SSL_SESSION *sess) {
  pthread_mutex_lock(&ctx->lock);
  cgnet__tls_cached *slot = NULL;
  for (size_t i = 0; i < CGNET__TLS_SESSION_CACHE && !slot; i++)
    if (ctx->cache[i].name && strcmp(ctx->cache[i].name, name) == 0) slot = &ctx->cache[i];
  if (!slot) {
    slot = &ctx->cache[ctx->cache_next++ % CGNET__TLS_SESSION_CACHE];
    char *copy = strdup(name);
    if (!copy) {
      pthread_mutex_unlock(&ctx->lock);
      SSL_SESSION_free(sess);
      return;
    }
    free(slot->name);
    slot->name = copy;
  }
  SSL_SESSION *old = slot->sess;
  slot->sess = sess;
  pthread_mutex_unlock(&ctx->lock);
  SSL_SESSION_free(old);
}

#endif /* CGNET_HAVE_TLS */
