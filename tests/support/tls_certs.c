/* Test certificates made with libcrypto at run time (see tls_certs.h). */
#ifdef CGNET_HAVE_TLS

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "support/tls_certs.h"

static char *bio_to_string(BIO *b) {
  char *data = NULL;
  long n = BIO_get_mem_data(b, &data);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s) {
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
  }
  return s;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
  if (!ext) return -1;
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : -1;
}

static int parse_pem(const tu_pem *p, X509 **x, EVP_PKEY **k) {
  BIO *b = BIO_new_mem_buf(p->cert, -1);
  *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  b = BIO_new_mem_buf(p->key, -1);
  *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  return *x && *k ? 0 : -1;
}

static int set_extensions(X509 *x, X509 *issuer, const char *san, int ca, const char *eku) {
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
  int rc = add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (rc == 0)
    rc = add_ext(x, &v3, NID_key_usage,
                 ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  if (rc == 0) rc = add_ext(x, &v3, NID_subject_key_identifier, "hash");
  if (rc == 0 && issuer != x) rc = add_ext(x, &v3, NID_authority_key_identifier, "keyid");
  if (rc == 0 && eku) rc = add_ext(x, &v3, NID_ext_key_usage, eku);
  if (rc == 0 && san) rc = add_ext(x, &v3, NID_subject_alt_name, san);
  return rc;
}

int tu_tls_make_cert(const tu_pem *issuer, const char *cn, const char *san,
                     long not_before_s, long not_after_s, int ca, const char *eku,
                     tu_pem *out) {
  memset(out, 0, sizeof(*out));
  X509 *ix = NULL;
  EVP_PKEY *ik = NULL;
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  int rc = key && x ? 0 : -1;
  if (rc == 0 && issuer) rc = parse_pem(issuer, &ix, &ik);
  unsigned char serial[8];
  if (rc == 0 && RAND_bytes(serial, sizeof(serial)) != 1) rc = -1;
  if (rc == 0) {
    serial[0] &= 0x7f; /* positive */
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_set_version(x, X509_VERSION_3);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) rc = -1;
    BN_free(bn);
  }
  if (rc == 0) {
    X509_gmtime_adj(X509_getm_notBefore(x), not_before_s);
    X509_gmtime_adj(X509_getm_notAfter(x), not_after_s);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               (const unsigned char *)"cgnet tests", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                               0);
    X509_set_issuer_name(x, ix ? X509_get_subject_name(ix) : name);
    rc = set_extensions(x, ix ? ix : x, san, ca, ca ? NULL : eku);
  }
  if (rc == 0 && !X509_sign(x, ik ? ik : key, EVP_sha256())) rc = -1;
  BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
  if (rc == 0 && cb && kb && PEM_write_bio_X509(cb, x) &&
      PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL)) {
    out->cert = bio_to_string(cb);
    out->key = bio_to_string(kb);
  }
  if (!out->cert || !out->key) rc = -1;
  BIO_free(cb);
  BIO_free(kb);
  X509_free(x);
  X509_free(ix);
  EVP_PKEY_free(key);
  EVP_PKEY_free(ik);
  return rc;
}

int tu_tls_write_file(const char *dir, const char *name, const char *text, char *path,
                      size_t cap) {
  snprintf(path, cap, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  size_t n = strlen(text);
  int ok = fwrite(text, 1, n, f) == n;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static void pem_free(tu_pem *p) {
  free(p->cert);
  free(p->key);
  p->cert = p->key = NULL;
}

#define DAY (24L * 3600)

int tu_tls_certs_make(tu_tls_certs *c) {
  memset(c, 0, sizeof(*c));
  const char *srv_san = "DNS:localhost,IP:127.0.0.1";
  int rc = tu_tls_make_cert(NULL, "cgnet test CA", NULL, -DAY, 30 * DAY, 1, NULL, &c->ca);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->ca, "localhost", srv_san, -DAY, 30 * DAY, 0, "serverAuth",
                          &c->server);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->ca, "cgnet test client", NULL, -DAY, 30 * DAY, 0,
                          "clientAuth", &c->client);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->ca, "localhost", srv_san, -30 * DAY, -DAY, 0, "serverAuth",
                          &c->expired);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->ca, "wrong.example", "DNS:wrong.example", -DAY, 30 * DAY, 0,
                          "serverAuth", &c->wrong_host);
  if (rc == 0)
    rc = tu_tls_make_cert(NULL, "other CA", NULL, -DAY, 30 * DAY, 1, NULL, &c->other_ca);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->other_ca, "localhost", srv_san, -DAY, 30 * DAY, 0,
                          "serverAuth", &c->untrusted);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->ca, "exact.test", "DNS:exact.test", -DAY, 30 * DAY, 0,
                          "serverAuth", &c->exact);
  if (rc == 0)
    rc = tu_tls_make_cert(&c->ca, "*.wild.test", "DNS:*.wild.test", -DAY, 30 * DAY, 0,
                          "serverAuth", &c->wild);
  if (rc == 0) {
    snprintf(c->dir, sizeof(c->dir), "/tmp/cgnet-tls-XXXXXX");
    if (!mkdtemp(c->dir)) rc = -1;
  }
  char path[128];
  if (rc == 0) rc = tu_tls_write_file(c->dir, "ca.pem", c->ca.cert, path, sizeof(path));
  if (rc == 0)
    rc = tu_tls_write_file(c->dir, "server.pem", c->server.cert, path, sizeof(path));
  if (rc == 0)
    rc = tu_tls_write_file(c->dir, "server.key", c->server.key, path, sizeof(path));
  if (rc < 0) fprintf(stderr, "tu_tls_certs_make: could not make the test certificates\n");
  return rc;
}

void tu_tls_certs_free(tu_tls_certs *c) {
  tu_pem *all[] = {&c->ca,       &c->server,    &c->client, &c->expired, &c->wrong_host,
                   &c->other_ca, &c->untrusted, &c->exact,  &c->wild};
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
    pem_free(all[i]);
  if (c->dir[0]) {
    const char *files[] = {"ca.pem", "server.pem", "server.key"};
    char path[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
      snprintf(path, sizeof(path), "%s/%s", c->dir, files[i]);
      unlink(path);
    }
    rmdir(c->dir);
    c->dir[0] = '\0';
  }
}

#endif /* CGNET_HAVE_TLS */
