/*
 * SHA-1 (FIPS 180-4), for the WebSocket handshake's Sec-WebSocket-Accept value only (the
 * RFC 6455 handshake is not a security boundary; SHA-1 is what the protocol names).
 * Built with CGNET_HAVE_LIBCRYPTO, cgnet__sha1() uses libcrypto's SHA1; the local
 * implementation is always compiled and tested (cgnet__sha1_local). Pure; any thread.
 */
#ifndef CGNET_SHA1_H
#define CGNET_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define CGNET__SHA1_LEN 20

typedef struct cgnet__sha1_ctx {
  uint32_t h[5];
  uint64_t total; /* bytes hashed so far */
  uint8_t block[64];
  size_t used; /* bytes waiting in block */
} cgnet__sha1_ctx;

void cgnet__sha1_init(cgnet__sha1_ctx *c);
void cgnet__sha1_update(cgnet__sha1_ctx *c, const void *data, size_t n);
void cgnet__sha1_final(cgnet__sha1_ctx *c, uint8_t out[CGNET__SHA1_LEN]);

/* One-shot digest with the local implementation. */
void cgnet__sha1_local(const void *data, size_t n, uint8_t out[CGNET__SHA1_LEN]);
/* One-shot digest: libcrypto's when built with CGNET_HAVE_LIBCRYPTO, else the local one. */
void cgnet__sha1(const void *data, size_t n, uint8_t out[CGNET__SHA1_LEN]);

#endif
