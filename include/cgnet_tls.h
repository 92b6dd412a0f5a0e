/*
 * cgnet TLS contexts: certificates, keys, peer verification and protocol settings for
 * TLS 1.2 and 1.3 (OpenSSL 3), shared by every loop of an engine.
 *
 * A context is built once from cgnet_tls_options and used by many connections at once,
 * from any number of loop threads; it is immutable after creation except for its session
 * ticket keys (which rotate under a lock). Each connection over it gets its own session.
 *
 * Without OpenSSL (built with -DCGNET_WITH_TLS=OFF, or AUTO on a machine without OpenSSL
 * 3) every call here returns CGNET_EUNSUPPORTED and cgnet_tls_available() returns 0.
 *
 * Errors. Calls return 0 or a negative CGNET_E* code (cgnet_strerror() names it). Failing
 * to build a context also writes a sentence saying what was wrong (which file, which
 * option, what OpenSSL reported) into the caller's buffer.
 */
#ifndef CGNET_TLS_H
#define CGNET_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "cgnet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cgnet_tls_ctx cgnet_tls_ctx; /* settings + certificates; shared by loops */

/* Protocol versions, with their wire values. */
#define CGNET_TLS_1_2 0x0303
#define CGNET_TLS_1_3 0x0304

typedef enum cgnet_tls_role {
  CGNET_TLS_SERVER = 0, /* accepts handshakes: needs a certificate and key */
  CGNET_TLS_CLIENT = 1, /* starts handshakes: verifies the server by default */
} cgnet_tls_role;

/* Whether a server asks for a client certificate (verified against the options' CA). */
typedef enum cgnet_tls_client_cert {
  CGNET_TLS_CLIENT_CERT_NONE = 0,     /* do not ask */
  CGNET_TLS_CLIENT_CERT_OPTIONAL = 1, /* ask; a client without one is let in, a bad
                                         one fails the handshake */
  CGNET_TLS_CLIENT_CERT_REQUIRED = 2, /* a client without a valid one fails it */
} cgnet_tls_client_cert;

/* PEM text from a file or from memory; set one of the two (both: CGNET_EINVAL). A file
 * is read once, when the context is built. */
typedef struct cgnet_tls_pem {
  const char *file; /* path of a PEM file */
  const char *data; /* PEM text in memory */
  size_t len;       /* length of data; 0: data is NUL-terminated */
} cgnet_tls_pem;

/* A certificate chain (the leaf first, then its intermediates) and its private key (not
 * encrypted). A server chooses among its certificates by the name the client sent (SNI):
 * `names` lists the names this one serves, NULL-terminated; each is exact
 * ("www.example.com") or a wildcard for exactly one label ("*.example.com" matches
 * "a.example.com", not "example.com" nor "a.b.example.com"), compared without case. The
 * first certificate is the default, for a client that sends no name or a name no
 * certificate lists. A client uses the first certificate as its client certificate. */
typedef struct cgnet_tls_cert {
  cgnet_tls_pem chain;
  cgnet_tls_pem key;
  const char *const *names;
} cgnet_tls_cert;

/* Returned by an SNI callback: the index of a certificate in cgnet_tls_options.certs, or
 * CGNET_TLS_SNI_MATCH (choose by the certificates' names, then the default), or
 * CGNET_TLS_SNI_REJECT (fail the handshake with the alert unrecognized_name; so does an
 * index out of range). */
#define CGNET_TLS_SNI_MATCH (-1)
#define CGNET_TLS_SNI_REJECT (-2)

/* Server: called during each handshake whose client sent a server name, before the name
 * table is consulted. Runs on the loop thread doing the handshake, possibly on several
 * loops at once; it must not block. */
typedef int (*cgnet_tls_sni_fn)(void *ud, const char *server_name);

/*
 * Options for cgnet_tls_ctx_new. All-zero is a client that verifies servers against the
 * system's CAs with the secure defaults below; a server needs at least one certificate.
 */
typedef struct cgnet_tls_options {
  cgnet_tls_role role;

  /* Server: its certificates (at least one; see cgnet_tls_cert for SNI). Client: an
   * optional client certificate (certs[0]; at most one). */
  const cgnet_tls_cert *certs;
  size_t ncerts;

  /* CAs (one or more PEM certificates) that the peer's chain must lead to. Client:
   * unset means the system's CA store. Server: needed when client_cert asks for one. */
  cgnet_tls_pem ca;

  /* Server: whether to ask for a client certificate. */
  cgnet_tls_client_cert client_cert;

  /* Client: skip verifying the server's chain and name. Anyone on the path can then read
   * and change the traffic; for tests against self-signed servers only. */
  int insecure_skip_verify;

  /* Versions: CGNET_TLS_1_2 or CGNET_TLS_1_3; 0: minimum 1.2, maximum 1.3. Older
   * versions are refused (CGNET_EINVAL). */
  uint16_t min_version;
  uint16_t max_version;

  /* TLS 1.2 cipher list and TLS 1.3 cipher suites, in OpenSSL's syntax. NULL: ECDHE key
   * exchange with AEAD ciphers only (AES-GCM and CHACHA20-POLY1305; no CBC, no RSA key
   * exchange) for 1.2, and the three standard suites for 1.3. */
  const char *ciphers_tls12;
  const char *ciphersuites_tls13;

  /* ALPN protocol names, NULL-terminated, each 1-255 bytes. Server: the ones it accepts,
   * in its order of preference (a client offering none of them fails the handshake with
   * no_application_protocol; a client offering no ALPN is let in without one). Client:
   * the ones it offers. NULL: no ALPN. */
  const char *const *alpn;

  /* Server: an optional SNI callback (see cgnet_tls_sni_fn) and its argument. */
  cgnet_tls_sni_fn sni;
  void *sni_ud;

  /* Session resumption. A server issues stateless session tickets, encrypted with a key
   * that rotates every ticket_key_period_s seconds (0: 3600); a ticket is accepted for
   * one period after it was issued, including across one rotation (the previous key is
   * kept for that). A client keeps the latest session per server name and offers it on
   * its next handshake to that name. disable_tickets turns all of this off. */
  uint32_t ticket_key_period_s;
  int disable_tickets;
} cgnet_tls_options;

/* 1 if this cgnet was built with TLS, else 0. Any thread. */
CGNET_API int cgnet_tls_available(void);

/*
 * Build a context from `opts` into *out (NULL on failure). Loads and checks every
 * certificate and key now, so that a bad one is reported here rather than at the first
 * handshake. On failure returns a negative code and, when errbuf is not NULL, writes a
 * NUL-terminated message of at most errlen bytes saying what was wrong:
 *   -errno (CGNET_ENOENT, CGNET_EACCES, ...)  a PEM file could not be read
 *   CGNET_ETLSCERT   a certificate or key could not be parsed, or the key does not match
 *                    the certificate
 *   CGNET_EINVAL     an option is invalid (no certificate on a server, a version, a
 *                    cipher list that selects nothing, an ALPN name, a client
 *                    certificate asked for with no CA, ...)
 *   CGNET_ENOMEM, CGNET_EUNSUPPORTED (built without TLS)
 * Any thread.
 */
CGNET_API int cgnet_tls_ctx_new(const cgnet_tls_options *opts, cgnet_tls_ctx **out,
                                char *errbuf, size_t errlen);

/* Release the caller's hold on a context. Connections still using it keep it alive; it
 * is freed when the last of them is. NULL is ignored. Any thread. */
CGNET_API void cgnet_tls_ctx_free(cgnet_tls_ctx *ctx);

/* Server: start a new session ticket key now (the current one becomes the previous one,
 * still accepted for one period; the one before is dropped). Tickets issued from now on
 * use the new key. 0, CGNET_EINVAL (a client context, or tickets disabled), CGNET_ENOMEM
 * or CGNET_EUNSUPPORTED. Any thread. */
CGNET_API int cgnet_tls_ctx_rotate_ticket_keys(cgnet_tls_ctx *ctx);

/* ------------------------------------------------------------------------------------ */
/* TLS conns                                                                            */
/* ------------------------------------------------------------------------------------ */

/*
 * A conn made from a "tls://" address (a listener's or a dial's) is a TLS conn: the same
 * callbacks, reads and writes as a plain one, with plaintext in both directions. on_open
 * runs once the handshake is done. A graceful close sends close_notify after the queued
 * output; the peer's close_notify reads as the end of input (CGNET_EOF, or
 * on_read_closed with allow_half_open); a TCP end without it closes the conn with
 * CGNET_ETLSTRUNCATED. Watermarks and write_buffer_limit count plaintext not yet
 * encrypted plus ciphertext queued.
 *
 * The getters below are for the conn's loop thread, from on_open until on_close returns
 * (cgnet_conn_tls_error also in on_tls_error). Before the handshake is done, on a plain
 * conn, or without TLS, they return NULL / 0.
 */

/* 1 if c is a TLS conn. */
CGNET_API int cgnet_conn_is_tls(const cgnet_conn *c);
/* The version negotiated: "TLSv1.2" or "TLSv1.3". */
CGNET_API const char *cgnet_conn_tls_version(const cgnet_conn *c);
/* The cipher suite ("TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", ...). */
CGNET_API const char *cgnet_conn_tls_cipher(const cgnet_conn *c);
/* The ALPN protocol agreed on, *len bytes, not NUL-terminated (NULL: none). */
CGNET_API const uint8_t *cgnet_conn_tls_alpn(const cgnet_conn *c, size_t *len);
/* Server: the name the client sent (SNI; NULL if none). Client: the host it dialed. */
CGNET_API const char *cgnet_conn_tls_server_name(const cgnet_conn *c);
/* 1 if the session was resumed (a ticket from an earlier handshake). */
CGNET_API int cgnet_conn_tls_resumed(const cgnet_conn *c);
/* The peer certificate's subject as one line (RFC 2253) into buf; 1, or 0 when the peer
 * sent no certificate (buf is then ""). */
CGNET_API int cgnet_conn_tls_peer_subject(const cgnet_conn *c, char *buf, size_t cap);
/* Why the conn's TLS failed: a sentence from the TLS library ("certificate has
 * expired", ...) or about the handshake ("handshake timed out"); NULL if it did not. */
CGNET_API const char *cgnet_conn_tls_error(const cgnet_conn *c);

/* TLS handshakes of the engine's conns (its tls:// listeners', and the dials of clients
 * on its loops) that failed, timed out or were abandoned by the peer (including a peer
 * that connects and leaves before its ClientHello is complete, or without sending
 * anything, as a TCP health check does), since it started;
 * an engine stopping during a handshake does not count. Any thread. */
CGNET_API uint64_t cgnet_engine_tls_handshake_failures(const cgnet_engine *eng);

#ifdef __cplusplus
}
#endif

#endif /* CGNET_TLS_H */
