/*
 * Shared checks for the codec fuzz targets (fuzz/fuzz_<codec>.c). Each target builds a
 * codec from the input's first bytes and hands the rest to these. They abort (a crash
 * libFuzzer reports) when an invariant breaks, not only on memory errors:
 *
 *  - decoding the stream as cgnet does (a pending buffer, the hint carried across "need
 *    more", zeroed after each frame): every frame lies inside the input, consumed > 0
 *    and <= what is pending, the frame is no longer than the codec's maximum, and the
 *    result is 1, 0 or a negative code;
 *  - the same stream fed in two pieces (split where the input says) gives the same
 *    frames and the same ending;
 *  - round trip: when encode(frame) succeeds, decoding the encoded bytes gives back one
 *    frame that uses them all (and, where the codec makes it an identity, equals frame).
 */
#ifndef CGNET_FUZZ_COMMON_H
#define CGNET_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"

#include "fuzz_check.h"

/* What a decode of a stream produced: frames folded into a hash, and how it ended. */
typedef struct fz_result {
  uint64_t hash;
  size_t frames;
  int end; /* 0: need more, or the error */
} fz_result;

static void fz_fold(fz_result *r, const uint8_t *p, size_t n) {
  uint64_t h = r->hash ^ (n * 0x9e3779b97f4a7c15ull);
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  r->hash = h;
  r->frames++;
}

/* Decode pending[0, *len) like one wake-up of a conn; keeps the unfinished tail. */
static int fz_drain(const cgnet_codec *c, uint8_t *pending, size_t *len, size_t *hint,
                    fz_result *r) {
  size_t pos = 0;
  int rc = 0;
  while (pos < *len) {
    cgnet_frame f = {.hint = *hint};
    rc = cgnet_codec_decode(c, pending + pos, *len - pos, &f);
    FZ_CHECK(rc <= 1);
    if (rc <= 0) {
      *hint = f.hint;
      break;
    }
    FZ_CHECK(f.consumed > 0 && f.consumed <= *len - pos);
    FZ_CHECK(f.len <= cgnet_codec_max_frame_length(c));
    FZ_CHECK(f.data >= pending + pos && f.len <= (size_t)(pending + *len - f.data));
    fz_fold(r, f.data, f.len);
    *hint = 0;
    pos += f.consumed;
  }
  memmove(pending, pending + pos, *len - pos);
  *len -= pos;
  return rc < 0 ? rc : 0;
}

/* Decode d[0, n) fed as d[0, cut) then d[cut, n). */
static fz_result fz_decode_split(const cgnet_codec *c, const uint8_t *d, size_t n,
                                 size_t cut) {
  fz_result r = {0xcbf29ce484222325ull, 0, 0};
  uint8_t *pending = malloc(n ? n : 1);
  FZ_CHECK(pending != NULL);
  size_t len = 0, hint = 0;
  if (cut > n) cut = n;
  memcpy(pending, d, cut);
  len = cut;
  r.end = fz_drain(c, pending, &len, &hint, &r);
  if (r.end == 0) {
    memcpy(pending + len, d + cut, n - cut);
    len += n - cut;
    r.end = fz_drain(c, pending, &len, &hint, &r);
  }
  free(pending);
  return r;
}

/* The stream invariants, and whole == split at `cut`. */
static void fz_check_stream(const cgnet_codec *c, const uint8_t *d, size_t n, size_t cut) {
  fz_result whole = fz_decode_split(c, d, n, n);
  fz_result split = fz_decode_split(c, d, n, cut);
  FZ_CHECK(whole.frames == split.frames);
  FZ_CHECK(whole.hash == split.hash);
  FZ_CHECK(whole.end == split.end);
}

/* Encode f; if the codec takes it, decoding gives one frame using every encoded byte,
 * equal to f when `identity`. Returns encode's code. */
static int fz_round_trip(const cgnet_codec *c, const uint8_t *f, size_t n, int identity) {
  cgnet_encoded e;
  int rc = cgnet_codec_encode(c, f, n, &e);
  if (rc != 0) return rc;
  FZ_CHECK(e.iovcnt >= 0 && e.iovcnt <= 3);
  size_t total = 0;
  for (int i = 0; i < e.iovcnt; i++)
    total += e.iov[i].iov_len;
  uint8_t *wire = malloc(total ? total : 1);
  FZ_CHECK(wire != NULL);
  size_t at = 0;
  for (int i = 0; i < e.iovcnt; i++) {
    if (e.iov[i].iov_len) memcpy(wire + at, e.iov[i].iov_base, e.iov[i].iov_len);
    at += e.iov[i].iov_len;
  }
  cgnet_frame fr = {0};
  int d = cgnet_codec_decode(c, wire, total, &fr);
  FZ_CHECK(d == 1);
  FZ_CHECK(fr.consumed == total);
  if (identity) {
    FZ_CHECK(fr.len == n);
    FZ_CHECK(n == 0 || memcmp(fr.data, f, n) == 0);
  }
  free(wire);
  return 0;
}

/* Input layout shared by the targets: config bytes, then the payload. */
typedef struct fz_input {
  const uint8_t *cfg;
  size_t ncfg;
  const uint8_t *data;
  size_t n;
} fz_input;

static int fz_split_input(const uint8_t *d, size_t n, size_t ncfg, fz_input *in) {
  if (n < ncfg) return 0;
  in->cfg = d;
  in->ncfg = ncfg;
  in->data = d + ncfg;
  in->n = n - ncfg;
  return 1;
}

#endif
