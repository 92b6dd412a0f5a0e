/*
 * TLS without OpenSSL (built with CGNET_WITH_TLS=OFF, or AUTO where OpenSSL 3 is not
 * found): every public call says CGNET_EUNSUPPORTED, and the engine's entry points exist
 * so that callers link the same way in both builds. No session can be created, so the
 * calls that take one are never reached with a live session.
 */
#ifndef CGNET_HAVE_TLS

#include <stdio.h>

#include "tls.h"

int cgnet_tls_available(void) {
  return 0;
}

int cgnet_tls_ctx_new(const cgnet_tls_options *opts, cgnet_tls_ctx **out, char *errbuf,
                      size_t errlen) {
  (void)opts;
  if (out) *out = NULL;
  if (errbuf && errlen) snprintf(errbuf, errlen, "cgnet was built without TLS");
  return CGNET_EUNSUPPORTED;
}

void cgnet_tls_ctx_free(cgnet_tls_ctx *ctx) {
  (void)ctx;
}

void cgnet__tls_ctx_hold(cgnet_tls_ctx *ctx) {
  (void)ctx;
}

int cgnet__tls_ctx_is_client(const cgnet_tls_ctx *ctx) {
  (void)ctx;
  return 0;
}

int cgnet_tls_ctx_rotate_ticket_keys(cgnet_tls_ctx *ctx) {
  (void)ctx;
  return CGNET_EUNSUPPORTED;
}

int cgnet__tls_new(cgnet_tls_ctx *ctx, const char *server_name, cgnet__tls_sink_fn sink,
                   void *sink_ud, cgnet__tls **out) {
  (void)ctx, (void)server_name, (void)sink, (void)sink_ud;
  *out = NULL;
  return CGNET_EUNSUPPORTED;
}

void cgnet__tls_free(cgnet__tls *t) {
  (void)t;
}

int cgnet__tls_start(cgnet__tls *t) {
  (void)t;
  return CGNET_EUNSUPPORTED;
}

int cgnet__tls_input(cgnet__tls *t, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
                     size_t *outlen) {
  (void)t, (void)in, (void)len, (void)out, (void)cap;
  *outlen = 0;
  return CGNET_EUNSUPPORTED;
}

int cgnet__tls_pending(const cgnet__tls *t) {
  (void)t;
  return 0;
}

int cgnet__tls_write(cgnet__tls *t, const void *data, size_t len) {
  (void)t, (void)data, (void)len;
  return CGNET_EUNSUPPORTED;
}

int cgnet__tls_writev(cgnet__tls *t, const struct iovec *iov, int iovcnt) {
  (void)t, (void)iov, (void)iovcnt;
  return CGNET_EUNSUPPORTED;
}

int cgnet__tls_flush(cgnet__tls *t) {
  (void)t;
  return CGNET_EUNSUPPORTED;
}

size_t cgnet__tls_buffered(const cgnet__tls *t) {
  (void)t;
  return 0;
}

size_t cgnet__tls_held(const cgnet__tls *t) {
  (void)t;
  return 0;
}

int cgnet__tls_close(cgnet__tls *t) {
  (void)t;
  return CGNET_EUNSUPPORTED;
}

int cgnet__tls_eof(const cgnet__tls *t) {
  (void)t;
  return CGNET_EOF;
}

cgnet__tls_state cgnet__tls_get_state(const cgnet__tls *t) {
  (void)t;
  return CGNET__TLS_FAILED;
}

const char *cgnet__tls_reason(const cgnet__tls *t) {
  (void)t;
  return "cgnet was built without TLS";
}

const char *cgnet__tls_version(const cgnet__tls *t) {
  (void)t;
  return NULL;
}

const char *cgnet__tls_cipher(const cgnet__tls *t) {
  (void)t;
  return NULL;
}

const uint8_t *cgnet__tls_alpn(const cgnet__tls *t, size_t *len) {
  (void)t;
  *len = 0;
  return NULL;
}

const char *cgnet__tls_server_name(const cgnet__tls *t) {
  (void)t;
  return NULL;
}

int cgnet__tls_resumed(const cgnet__tls *t) {
  (void)t;
  return 0;
}

int cgnet__tls_peer_subject(const cgnet__tls *t, char *buf, size_t cap) {
  (void)t;
  if (cap) buf[0] = '\0';
  return 0;
}

void *cgnet__tls_ssl(const cgnet__tls *t) {
  (void)t;
  return NULL;
}

#endif /* !CGNET_HAVE_TLS */
