/*
 * libFuzzer target: the line codec. Input: [flags][max][cut] then the stream.
 * flags bit 0: keep_cr; max: 0 = the default (1 MiB), else 1..255 bytes.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  fz_input in;
  if (!fz_split_input(d, n, 3, &in)) return 0;
  cgnet_line_codec_options o = {.keep_cr = in.cfg[0] & 1, .max_frame_length = in.cfg[1]};
  cgnet_codec *c;
  FZ_CHECK(cgnet_codec_line(&o, &c) == 0);
  fz_check_stream(c, in.data, in.n, in.cfg[2] % (in.n + 1));

  /* The stream as one frame: refused only if it holds '\n' (or ends in a stripped
   * '\r'), or is too long; once cleaned, it must round-trip exactly. */
  int rc = fz_round_trip(c, in.data, in.n, 1);
  FZ_CHECK(rc == 0 || rc == CGNET_EINVAL || rc == CGNET_EFRAMETOOLARGE);
  uint8_t *f = malloc(in.n ? in.n : 1);
  FZ_CHECK(f != NULL);
  for (size_t i = 0; i < in.n; i++)
    f[i] = in.data[i] == '\n' || in.data[i] == '\r' ? ' ' : in.data[i];
  rc = fz_round_trip(c, f, in.n, 1);
  FZ_CHECK(rc == 0 ||
           (rc == CGNET_EFRAMETOOLARGE && in.n > cgnet_codec_max_frame_length(c)));
  free(f);
  cgnet_codec_free(c);
  return 0;
}
