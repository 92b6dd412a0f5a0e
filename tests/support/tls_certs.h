/*
 * Certificates for the TLS tests, made at test time with libcrypto (no private key is
 * ever committed): ECDSA P-256 keys, SHA-256 signatures, PEM text in memory, and the
 * same written as files into a fresh temporary directory.
 *
 * Only with CGNET_HAVE_TLS; the declarations are harmless otherwise.
 */
#ifndef CGNET_TEST_TLS_CERTS_H
#define CGNET_TEST_TLS_CERTS_H

#include <stddef.h>

/* A certificate and its private key, as malloc'd PEM strings. */
typedef struct tu_pem {
  char *cert;
  char *key;
} tu_pem;

/* The set every TLS test uses. */
typedef struct tu_tls_certs {
  tu_pem ca;         /* self-signed CA "cgnet test CA" */
  tu_pem server;     /* CN=localhost, SAN DNS:localhost IP:127.0.0.1, signed by ca */
  tu_pem client;     /* CN=cgnet test client, clientAuth, signed by ca */
  tu_pem expired;    /* like server, but its validity ended yesterday */
  tu_pem wrong_host; /* CN=wrong.example, SAN DNS:wrong.example, signed by ca */
  tu_pem other_ca;   /* a second CA the clients do not trust */
  tu_pem untrusted;  /* like server, signed by other_ca */
  tu_pem exact;      /* CN=exact.test, SAN DNS:exact.test (for SNI) */
  tu_pem wild;       /* CN=*.wild.test, SAN DNS:*.wild.test (for SNI) */
  char dir[64];      /* temporary directory holding ca.pem, server.pem, server.key */
} tu_tls_certs;

/* Make them all (about a millisecond each). 0, or -1 with a message on stderr. */
int tu_tls_certs_make(tu_tls_certs *c);
/* Free the strings and remove the directory. */
void tu_tls_certs_free(tu_tls_certs *c);

/*
 * One certificate: issued by `issuer` (NULL: self-signed), valid from now + not_before_s
 * to now + not_after_s (seconds, may be negative), with subject CN `cn`, subjectAltName
 * `san` (OpenSSL syntax, e.g. "DNS:localhost,IP:127.0.0.1"; NULL: none), a CA when `ca`,
 * and for a leaf the extended key usage `eku` ("serverAuth", "clientAuth"). 0 or -1.
 */
int tu_tls_make_cert(const tu_pem *issuer, const char *cn, const char *san,
                     long not_before_s, long not_after_s, int ca, const char *eku,
                     tu_pem *out);

/* Write text to dir/name; the path into path (cap bytes). 0 or -1. */
int tu_tls_write_file(const char *dir, const char *name, const char *text, char *path,
                      size_t cap);

#endif
