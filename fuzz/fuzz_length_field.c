/*
 * libFuzzer target: the length-field codec, every parameter. Input:
 *   [shape][offset][adjustment][strip][max][cut] then the stream
 * shape: bits 0-2 pick the field length (1, 2, 3, 4, 8), bit 3 little endian, bit 4
 * length includes the field; offset % 8; adjustment as int8; strip: 255 = the header,
 * else % 16; max: 0 = 1 MiB, else header + max * 8.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  static const int flens[] = {1, 2, 3, 4, 8};
  fz_input in;
  if (!fz_split_input(d, n, 6, &in)) return 0;
  const uint8_t *cfg = in.cfg;
  int flen = flens[(cfg[0] & 7) % 5];
  size_t off = cfg[1] % 8;
  cgnet_length_field_codec_options o = {
      .byte_order = cfg[0] & 8 ? CGNET_LITTLE_ENDIAN : CGNET_BIG_ENDIAN,
      .length_field_offset = off,
      .length_field_length = flen,
      .length_adjustment = (int8_t)cfg[2],
      .initial_bytes_to_strip = cfg[3] == 255 ? CGNET_STRIP_HEADER : cfg[3] % 16,
      .length_includes_length_field = (cfg[0] >> 4) & 1,
      .max_frame_length = cfg[4] ? off + (size_t)flen + (size_t)cfg[4] * 8 : 0};
  cgnet_codec *c;
  FZ_CHECK(cgnet_codec_length_field(&o, &c) == 0);
  fz_check_stream(c, in.data, in.n, cfg[5] % (in.n + 1));

  /* Encoding with any config: if it succeeds, the bytes decode to one whole frame
   * (unless stripping asks for more than the frame has). */
  cgnet_encoded e;
  int rc = cgnet_codec_encode(c, in.data, in.n, &e);
  FZ_CHECK(rc == 0 || rc == CGNET_EINVAL || rc == CGNET_EMSGSIZE ||
           rc == CGNET_EFRAMETOOLARGE);
  size_t strip = o.initial_bytes_to_strip == CGNET_STRIP_HEADER ? off + (size_t)flen
                                                                : o.initial_bytes_to_strip;
  if (rc == 0 && strip <= in.n + (size_t)flen)
    FZ_CHECK(fz_round_trip(c, in.data, in.n, 0) == 0);
  cgnet_codec_free(c);

  /* The round-trip configuration: offset 0, the field stripped: an identity. */
  o.length_field_offset = 0;
  o.initial_bytes_to_strip = (size_t)flen;
  o.max_frame_length = 0;
  FZ_CHECK(cgnet_codec_length_field(&o, &c) == 0);
  rc = fz_round_trip(c, in.data, in.n, 1);
  FZ_CHECK(rc == 0 || rc == CGNET_EMSGSIZE); /* V negative or too wide for the field */
  cgnet_codec_free(c);
  return 0;
}
