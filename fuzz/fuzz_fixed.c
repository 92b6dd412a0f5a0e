/*
 * libFuzzer target: the fixed-length codec. Input: [frame length][cut] then the stream;
 * frame length % 64 + 1 bytes.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  fz_input in;
  if (!fz_split_input(d, n, 2, &in)) return 0;
  size_t flen = in.cfg[0] % 64 + 1;
  cgnet_codec *c;
  FZ_CHECK(cgnet_codec_fixed(flen, &c) == 0);
  fz_check_stream(c, in.data, in.n, in.cfg[1] % (in.n + 1));
  /* Exactly flen bytes round-trip; any other length is refused. */
  if (in.n >= flen) FZ_CHECK(fz_round_trip(c, in.data, flen, 1) == 0);
  if (in.n != flen) FZ_CHECK(fz_round_trip(c, in.data, in.n, 1) == CGNET_EMSGSIZE);
  /* The whole stream is n / flen frames. */
  fz_result r = fz_decode_split(c, in.data, in.n, in.n);
  FZ_CHECK(r.frames == in.n / flen && r.end == 0);
  cgnet_codec_free(c);
  return 0;
}
