/* SHA-1 as FIPS 180-4 section 6.1 specifies it (see sha1.h for why it is here). */
#include "sha1.h"

#include <string.h>

#ifdef CGNET_HAVE_LIBCRYPTO
#include <openssl/sha.h>
#endif

static uint32_t rol(uint32_t x, unsigned n) {
  return x << n | x >> (32 - n);
}

static uint32_t load_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* One 512-bit block: the 80-round compression with the message schedule kept in a
 * 16-word circular window. */
static void compress(uint32_t h[5], const uint8_t *block) {
  uint32_t w[16];
  for (int t = 0; t < 16; t++)
    w[t] = load_be32(block + 4 * t);
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int t = 0; t < 80; t++) {
    if (t >= 16) {
      uint32_t x = w[(t + 13) & 15] ^ w[(t + 8) & 15] ^ w[(t + 2) & 15] ^ w[t & 15];
      w[t & 15] = rol(x, 1);
    }
    uint32_t f, k;
    if (t < 20) {
      f = (b & c) | (~b & d);
      k = 0x5a827999u;
    } else if (t < 40) {
      f = b ^ c ^ d;
      k = 0x6ed9eba1u;
    } else if (t < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8f1bbcdcu;
    } else {
      f = b ^ c ^ d;
      k = 0xca62c1d6u;
    }
    uint32_t tmp = rol(a, 5) + f + e + k + w[t & 15];
    e = d;
    d = c;
    c = rol(b, 30);
    b = a;
    a = tmp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

void cgnet__sha1_init(cgnet__sha1_ctx *c) {
  static const uint32_t iv[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u,
                                 0xc3d2e1f0u};
  memcpy(c->h, iv, sizeof iv);
  c->total = 0;
  c->used = 0;
}

void cgnet__sha1_update(cgnet__sha1_ctx *c, const void *data, size_t n) {
  const uint8_t *p = data;
  c->total += n;
  if (c->used) {
    size_t take = 64 - c->used < n ? 64 - c->used : n;
    memcpy(c->block + c->used, p, take);
    c->used += take;
    p += take;
    n -= take;
    if (c->used < 64) return;
    compress(c->h, c->block);
    c->used = 0;
  }
  for (; n >= 64; p += 64, n -= 64)
    compress(c->h, p);
  memcpy(c->block, p, n);
  c->used = n;
}

void cgnet__sha1_final(cgnet__sha1_ctx *c, uint8_t out[CGNET__SHA1_LEN]) {
  uint64_t bits = c->total * 8;
  uint8_t pad[72] = {0x80};
  /* 0x80, zeros up to 56 mod 64, then the length in bits as a big-endian 64-bit value. */
  size_t padlen = c->used < 56 ? 56 - c->used : 120 - c->used;
  uint8_t len[8];
  store_be32(len, (uint32_t)(bits >> 32));
  store_be32(len + 4, (uint32_t)bits);
  cgnet__sha1_update(c, pad, padlen);
  cgnet__sha1_update(c, len, 8);
  for (int i = 0; i < 5; i++)
    store_be32(out + 4 * i, c->h[i]);
}

void cgnet__sha1_local(const void *data, size_t n, uint8_t out[CGNET__SHA1_LEN]) {
  cgnet__sha1_ctx c;
  cgnet__sha1_init(&c);
  cgnet__sha1_update(&c, data, n);
  cgnet__sha1_final(&c, out);
}

void cgnet__sha1(const void *data, size_t n, uint8_t out[CGNET__SHA1_LEN]) {
#ifdef CGNET_HAVE_LIBCRYPTO
  SHA1(data, n, out);
#else
  cgnet__sha1_local(data, n, out);
#endif
}
