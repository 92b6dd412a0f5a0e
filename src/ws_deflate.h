/*
 * permessage-deflate (RFC 7692): negotiating the extension's parameters, and compressing
 * and decompressing whole messages with zlib (raw deflate; the 00 00 ff ff tail of a
 * sync flush stripped on send and appended on receive).
 *
 * Built without zlib (CGNET_WITH_ZLIB=OFF, or AUTO with no zlib found) the extension is
 * never negotiated: cgnet__ws_deflate_available() is 0, the server declines every offer
 * and the client offers nothing.
 *
 * Decompression is bounded: a message inflates at most to the caller's maximum message
 * size, in chunks of CGNET__WS_INFLATE_CHUNK bytes handed to a sink, so a small
 * compressed message that would inflate past the limit (a deflate bomb) stops with
 * CGNET_EMSGSIZE (close code 1009) having produced no more than the limit and having held
 * no more than one chunk. A compressor and a decompressor belong to one connection and
 * its loop thread.
 */
#ifndef CGNET_WS_DEFLATE_H
#define CGNET_WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "ws_frame.h"
#include "ws_handshake.h"

#define CGNET__WS_INFLATE_CHUNK 16384

/* Local choices; all-zero is the default. */
typedef struct cgnet__ws_deflate_config {
  /* Largest LZ77 window our compressor uses, 9-15 (0: 15). zlib cannot compress with an
   * 8-bit window, so an offer that insists on one is declined. */
  uint8_t max_window_bits;
  /* Ask the peer to compress with at most this window, 8-15 (0: do not ask). */
  uint8_t peer_max_window_bits;
  /* Reset our compressor after every message even where the peer allows context
   * takeover: less memory between messages, less compression. */
  uint8_t no_context_takeover;
  /* zlib memLevel, 1-9 (0: 8); the compressor holds about 2^(window + 2) + 2^(mem + 9)
   * bytes. */
  uint8_t mem_level;
  /* zlib compression level 1-9 (0: 6). */
  uint8_t level;
} cgnet__ws_deflate_config;

/* What the two sides agreed (the RFC's parameters; 15 where no window was named, and a
 * window of 0 is taken as 15, so all-zero is the extension without parameters). */
typedef struct cgnet__ws_deflate_params {
  uint8_t server_no_context_takeover;
  uint8_t client_no_context_takeover;
  uint8_t server_max_window_bits;
  uint8_t client_max_window_bits;
} cgnet__ws_deflate_params;

/* 1 if the build has zlib (the extension can be negotiated), else 0. */
int cgnet__ws_deflate_available(void);

/* Server: take the first acceptable permessage-deflate offer among a request's
 * extensions. An offer with an unknown, repeated or invalid parameter is declined (RFC
 * 7692 section 5), as is one asking for an 8-bit server window. Returns 1 with *agreed
 * set and the Sec-WebSocket-Extensions response value written to out (NUL-terminated),
 * 0 if no offer is acceptable (or there is no zlib), CGNET_ENOBUFS if out is too small. */
int cgnet__ws_deflate_negotiate(const cgnet__ws_ext *exts, size_t nexts,
                                const cgnet__ws_deflate_config *cfg,
                                cgnet__ws_deflate_params *agreed, char *out, size_t cap);

/* Client: the offer to send (NUL-terminated). Returns its length, 0 without zlib (send
 * none), or CGNET_ENOBUFS. */
long cgnet__ws_deflate_offer(const cgnet__ws_deflate_config *cfg, char *out, size_t cap);

/* Client: check the server's permessage-deflate response against the offer made with
 * cfg. Returns 0 with *agreed set, or CGNET_ECODEC (a parameter the client did not allow
 * or cannot honour, or no server window when the offer asked for one: the client must
 * fail the connection). */
int cgnet__ws_deflate_accept(const cgnet__ws_ext *response,
                             const cgnet__ws_deflate_config *cfg,
                             cgnet__ws_deflate_params *agreed);

/* A connection's compressor and decompressor (opaque: its size depends on zlib). */
typedef struct cgnet__ws_deflate cgnet__ws_deflate;

/* Both directions for `role` under the agreed parameters. NULL without memory or zlib. */
cgnet__ws_deflate *cgnet__ws_deflate_new(cgnet__ws_role role,
                                         const cgnet__ws_deflate_params *agreed,
                                         const cgnet__ws_deflate_config *cfg);
void cgnet__ws_deflate_free(cgnet__ws_deflate *z);

/* Bytes z holds now: itself (with its inflate chunk) and zlib's state and windows. */
size_t cgnet__ws_deflate_memory(const cgnet__ws_deflate *z);

/* Room cgnet__ws_deflate_message needs for n input bytes in the worst case. */
size_t cgnet__ws_deflate_bound(size_t n);

/* Compress one whole message in[0, n) into out (cap >= cgnet__ws_deflate_bound(n)),
 * tail stripped: the payload of a frame with RSV1. Returns 0 with *out_len set,
 * CGNET_ENOBUFS (out too small), or CGNET_EIO (zlib failed). */
int cgnet__ws_deflate_message(cgnet__ws_deflate *z, const uint8_t *in, size_t n,
                              uint8_t *out, size_t cap, size_t *out_len);

/* A message compressed piece by piece (a streamed send): each piece in[0, n) (n > 0) is
 * compressed with a sync flush into out (cap >= cgnet__ws_deflate_bound(n)), and
 * *out_len excludes the 00 00 ff ff tail that flush ends with. The caller sends the
 * output of every piece but the last followed by that tail, and the last's without it
 * (its frame with FIN, or an empty final frame after it), so the message's payload is
 * the whole stream with only its final tail stripped (RFC 7692 section 7.2.1). After
 * the last piece, cgnet__ws_deflate_end. 0, CGNET_ENOBUFS or CGNET_EIO (the compressor
 * is then reset and the message cannot be finished). */
int cgnet__ws_deflate_piece(cgnet__ws_deflate *z, const uint8_t *in, size_t n, uint8_t *out,
                            size_t cap, size_t *out_len);
/* The streamed message is over: reset the compressor if there is no context takeover. */
void cgnet__ws_deflate_end(cgnet__ws_deflate *z);

/* Receives inflated bytes; a non-zero return stops the inflation and is returned. */
typedef int (*cgnet__ws_sink)(void *arg, const uint8_t *p, size_t n);

/* Inflate a piece of a compressed message's payload (as the frame parser reports it);
 * `last` for its last piece. Output reaches sink in chunks. Returns 0, CGNET_EMSGSIZE
 * (the message would pass max_message bytes, 0: no limit; close with 1009),
 * CGNET_ECODEC (not a valid deflate stream; close with 1007), CGNET_ENOMEM, or the
 * sink's code. After an error the decompressor is unusable (the connection fails). */
int cgnet__ws_inflate(cgnet__ws_deflate *z, const uint8_t *in, size_t n, int last,
                      uint64_t max_message, cgnet__ws_sink sink, void *arg);

#endif
