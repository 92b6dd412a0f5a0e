/*
 * The inside of a cgnet_tls_ctx (OpenSSL builds only), shared by src/tls_ctx.c, which
 * builds it, and src/tls.c, the per-connection engine that starts sessions on it.
 *
 * Threads: everything here is read-only after cgnet_tls_ctx_new returns, except the
 * reference count (atomic), the ticket keys and the client session cache (both under
 * `lock`). Sessions on many loop threads use one context at once.
 */
#ifndef CGNET_TLS_CTX_H
#define CGNET_TLS_CTX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "cgnet_tls.h"

/* A name a server certificate is chosen for: exact, or "*.rest" (then `name` is ".rest").
 */
typedef struct cgnet__tls_name {
  char *name; /* lower case */
  int wildcard;
  size_t cert; /* index into ssl[] */
} cgnet__tls_name;

/* A session ticket key: its public name and the secrets behind it. */
typedef struct cgnet__tls_ticket_key {
  uint8_t name[16];
  uint8_t aes[32];
  uint8_t hmac[32];
  uint64_t born_s; /* CLOCK_MONOTONIC seconds */
} cgnet__tls_ticket_key;

/* Client sessions kept for resumption: the latest per server name, a few names. */
#define CGNET__TLS_SESSION_CACHE 32
typedef struct cgnet__tls_cached {
  char *name;
  SSL_SESSION *sess;
} cgnet__tls_cached;

struct cgnet_tls_ctx {
  atomic_int refs; /* the user's, plus one per live session */
  cgnet_tls_role role;
  int insecure_skip_verify;
  BIO_METHOD *bio_method; /* the engine's span/sink BIO (src/tls.c) */

  /* One SSL_CTX per certificate, configured alike; sessions start on ssl[0] (a client
   * has exactly one), and a server's SNI callback moves a session to another. */
  SSL_CTX **ssl;
  size_t nssl;
  cgnet__tls_name *names;
  size_t nnames;
  cgnet_tls_sni_fn sni;
  void *sni_ud;
  uint8_t *alpn; /* wire format: length-prefixed names */
  size_t alpn_len;

  pthread_mutex_t lock;
  /* Server tickets: keys[0] current, keys[1] previous (when nkeys == 2). */
  int tickets;
  uint32_t ticket_period_s;
  cgnet__tls_ticket_key keys[2];
  int nkeys;
  EVP_CIPHER *ticket_cipher; /* fetched once, not per handshake */
  /* Client session cache, replaced round robin. */
  cgnet__tls_cached cache[CGNET__TLS_SESSION_CACHE];
  unsigned cache_next;
};

void cgnet__tls_ctx_ref(cgnet_tls_ctx *ctx);
void cgnet__tls_ctx_unref(cgnet_tls_ctx *ctx);

/* Client session cache: the session to offer to `name` (a new reference, or NULL), and
 * the one to keep for it (the cache takes the caller's reference). */
SSL_SESSION *cgnet__tls_ctx_session_get(cgnet_tls_ctx *ctx, const char *name);
void cgnet__tls_ctx_session_put(cgnet_tls_ctx *ctx, const char *name, SSL_SESSION *sess);

/* Implemented by the engine (src/tls.c): the BIO method the context creates once, and
 * the client's new-session callback, which knows the session's server name. */
BIO_METHOD *cgnet__tls_bio_method_new(void);
int cgnet__tls_on_new_session(SSL *ssl, SSL_SESSION *sess);

#endif /* CGNET_TLS_CTX_H */
