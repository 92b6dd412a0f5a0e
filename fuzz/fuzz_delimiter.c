/*
 * libFuzzer target: the delimiter codec. Input: [dlen][4 delimiter bytes][max][cut] then
 * the stream. dlen % 4 + 1 delimiter bytes are used; max: 0 = 1 MiB, else 1..255.
 */
#include "fuzz_common.h"

/* Does the delimiter occur in frame + delimiter before the appended one? */
static int found_early(const uint8_t *f, size_t n, const uint8_t *dl, size_t dn) {
  uint8_t *w = malloc(n + dn);
  FZ_CHECK(w != NULL);
  memcpy(w, f, n);
  memcpy(w + n, dl, dn);
  const uint8_t *hit = memmem(w, n + dn, dl, dn);
  int early = hit && hit < w + n;
  free(w);
  return early;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  fz_input in;
  if (!fz_split_input(d, n, 7, &in)) return 0;
  size_t dn = in.cfg[0] % 4 + 1;
  cgnet_delimiter_codec_options o = {
      .delimiter = in.cfg + 1, .delimiter_len = dn, .max_frame_length = in.cfg[5]};
  cgnet_codec *c;
  FZ_CHECK(cgnet_codec_delimiter(&o, &c) == 0);
  fz_check_stream(c, in.data, in.n, in.cfg[6] % (in.n + 1));

  /* The stream as one frame: refused exactly when the delimiter would show up early
   * (or it is too long), else it round-trips. */
  int rc = fz_round_trip(c, in.data, in.n, 1);
  if (in.n > cgnet_codec_max_frame_length(c))
    FZ_CHECK(rc == CGNET_EFRAMETOOLARGE);
  else
    FZ_CHECK(rc == (found_early(in.data, in.n, in.cfg + 1, dn) ? CGNET_EINVAL : 0));
  cgnet_codec_free(c);
  return 0;
}
