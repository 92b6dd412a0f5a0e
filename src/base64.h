/*
 * Base64 (RFC 4648 section 4, standard alphabet, with padding) for the WebSocket
 * handshake: encoding the accept value and the client's key, and decoding a key to check
 * that it holds 16 bytes. Pure; any thread.
 */
#ifndef CGNET_BASE64_H
#define CGNET_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Characters cgnet__base64_encode writes for n input bytes (no terminator counted). */
static inline size_t cgnet__base64_encoded_len(size_t n) {
  return (n + 2) / 3 * 4;
}

/* Encode in[0, n) into out, which has room for cgnet__base64_encoded_len(n) + 1 bytes;
 * NUL-terminates. Returns the length written (without the NUL). */
size_t cgnet__base64_encode(const uint8_t *in, size_t n, char *out);

/* Decode the canonical padded form: len a multiple of 4, only alphabet characters and
 * trailing '=' padding, unused bits zero. Writes at most cap bytes. Returns the decoded
 * length, or -1 if the input is not canonical base64 or does not fit. */
long cgnet__base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
