/*
 * Codecs: the built-in frame decoders and encoders (line, delimiter, fixed length,
 * length field), custom codecs, and the checks cgnet applies to every decoder's answer.
 *
 * Pure functions of (codec, input): no loop, no conn, no allocation after creation, so
 * one codec serves every loop at once and the fuzzers can link this file alone (with
 * error.c). The conn side (feeding the inbound view, calling on_frame) is in stream.c.
 *
 * The `hint` (see cgnet_frame) makes a frame that arrives in many reads cost O(frame)
 * in total: the line and delimiter decoders resume scanning where they stopped, the
 * length-field decoder remembers the total it is waiting for.
 */
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"

typedef enum { KIND_CUSTOM, KIND_LINE, KIND_DELIM, KIND_FIXED, KIND_LENFIELD } codec_kind;

typedef struct lenfield {
  cgnet_byte_order order;
  size_t offset;  /* length_field_offset */
  size_t flen;    /* 1, 2, 3, 4 or 8 */
  size_t header;  /* offset + flen: bytes needed to read the value */
  int64_t adjust; /* length_adjustment, minus flen when the value includes the field */
  size_t strip;   /* initial_bytes_to_strip, CGNET_STRIP_HEADER resolved */
} lenfield;

struct cgnet_codec {
  cgnet_codec_ops ops;
  void *state;
  size_t max;           /* max_frame_length */
  size_t pending_limit; /* "need more" with more than this pending: frame too large */
  codec_kind kind;
  int keep_cr;      /* line */
  size_t fixed_len; /* fixed */
  lenfield lf;      /* length field */
  size_t delim_len; /* delimiter */
  uint8_t delim[];  /* delimiter bytes (copied) */
};

static size_t sat_add(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static int resolve_max(size_t max, size_t *out) {
  if (max == SIZE_MAX) return CGNET_EINVAL; /* a decoder must bound what it buffers */
  *out = max ? max : CGNET_CODEC_DEFAULT_MAX_FRAME;
  return 0;
}

static cgnet_codec *codec_alloc(codec_kind kind, size_t extra, size_t max) {
  cgnet_codec *c = calloc(1, sizeof *c + extra);
  if (!c) return NULL;
  c->kind = kind;
  c->state = c;
  c->max = max;
  c->pending_limit = max;
  return c;
}

static void set_frame(cgnet_frame *f, const uint8_t *data, size_t len, size_t consumed) {
  f->data = data;
  f->len = len;
  f->consumed = consumed;
}

/* ---- line ---------------------------------------------------------------------------- */

/* hint: bytes already scanned without finding '\n'. */
static int line_decode(void *state, const uint8_t *in, size_t len, cgnet_frame *out) {
  const cgnet_codec *c = state;
  size_t from = out->hint <= len ? out->hint : 0;
  const uint8_t *nl = from < len ? memchr(in + from, '\n', len - from) : NULL;
  if (!nl) {
    out->hint = len;
    /* The shortest frame the line can still become: all of it but a '\r' at the end. */
    size_t least = (len && !c->keep_cr && in[len - 1] == '\r') ? len - 1 : len;
    return least > c->max ? CGNET_EFRAMETOOLARGE : 0;
  }
  size_t n = (size_t)(nl - in);
  size_t flen = (n && !c->keep_cr && in[n - 1] == '\r') ? n - 1 : n;
  if (flen > c->max) return CGNET_EFRAMETOOLARGE;
  set_frame(out, in, flen, n + 1);
  return 1;
}

static int line_encode(void *state, const uint8_t *frame, size_t len, cgnet_encoded *out) {
  const cgnet_codec *c = state;
  if (len > c->max) return CGNET_EFRAMETOOLARGE;
  if (len && (memchr(frame, '\n', len) || (!c->keep_cr && frame[len - 1] == '\r')))
    return CGNET_EINVAL;
  out->iov[0] = (struct iovec){.iov_base = (void *)frame, .iov_len = len};
  out->iov[1] = (struct iovec){.iov_base = (void *)"\n", .iov_len = 1};
  out->iovcnt = 2;
  return 0;
}

int cgnet_codec_line(const cgnet_line_codec_options *o, cgnet_codec **out) {
  cgnet_line_codec_options d = {0};
  if (!out) return CGNET_EINVAL;
  if (!o) o = &d;
  size_t max;
  int err = resolve_max(o->max_frame_length, &max);
  if (err) return err;
  cgnet_codec *c = codec_alloc(KIND_LINE, 0, max);
  if (!c) return CGNET_ENOMEM;
  c->keep_cr = o->keep_cr != 0;
  c->pending_limit = sat_add(max, 1); /* a frame of max bytes, then "\r" */
  c->ops = (cgnet_codec_ops){.decode = line_decode, .encode = line_encode};
  *out = c;
  return 0;
}

/* ---- delimiter ----------------------------------------------------------------------- */

/* hint: where the next search starts (before it, no delimiter can begin). */
static int delim_decode(void *state, const uint8_t *in, size_t len, cgnet_frame *out) {
  const cgnet_codec *c = state;
  size_t dl = c->delim_len;
  size_t from = out->hint <= len ? out->hint : 0;
  const uint8_t *hit = NULL;
  if (len >= dl && from <= len - dl) hit = memmem(in + from, len - from, c->delim, dl);
  if (!hit) {
    /* A delimiter may still start in the last dl - 1 bytes. */
    size_t next = len >= dl ? len - dl + 1 : 0;
    out->hint = next > from ? next : from;
    return next > c->max ? CGNET_EFRAMETOOLARGE : 0;
  }
  size_t n = (size_t)(hit - in);
  if (n > c->max) return CGNET_EFRAMETOOLARGE;
  set_frame(out, in, n, n + dl);
  return 1;
}

/* Would the decoder find the delimiter before offset len in frame + delimiter? */
static int delim_found_early(const cgnet_codec *c, const uint8_t *frame, size_t len) {
  size_t dl = c->delim_len;
  if (len >= dl && memmem(frame, len, c->delim, dl)) return 1;
  /* Straddling: the frame's last k bytes and the delimiter's first dl - k bytes. */
  for (size_t k = 1; k < dl && k <= len; k++) {
    if (memcmp(frame + len - k, c->delim, k) == 0 &&
        memcmp(c->delim, c->delim + k, dl - k) == 0)
      return 1;
  }
  return 0;
}

static int delim_encode(void *state, const uint8_t *frame, size_t len, cgnet_encoded *out) {
  const cgnet_codec *c = state;
  if (len > c->max) return CGNET_EFRAMETOOLARGE;
  if (delim_found_early(c, frame, len)) return CGNET_EINVAL;
  out->iov[0] = (struct iovec){.iov_base = (void *)frame, .iov_len = len};
  out->iov[1] = (struct iovec){.iov_base = (void *)c->delim, .iov_len = c->delim_len};
  out->iovcnt = 2;
  return 0;
}

int cgnet_codec_delimiter(const cgnet_delimiter_codec_options *o, cgnet_codec **out) {
  if (!out || !o || !o->delimiter || o->delimiter_len == 0) return CGNET_EINVAL;
  size_t max;
  int err = resolve_max(o->max_frame_length, &max);
  if (err) return err;
  if (o->delimiter_len > SIZE_MAX / 2) return CGNET_EINVAL;
  cgnet_codec *c = codec_alloc(KIND_DELIM, o->delimiter_len, max);
  if (!c) return CGNET_ENOMEM;
  memcpy(c->delim, o->delimiter, o->delimiter_len);
  c->delim_len = o->delimiter_len;
  c->pending_limit = sat_add(max, o->delimiter_len - 1);
  c->ops = (cgnet_codec_ops){.decode = delim_decode, .encode = delim_encode};
  *out = c;
  return 0;
}

/* ---- fixed length -------------------------------------------------------------------- */

static int fixed_decode(void *state, const uint8_t *in, size_t len, cgnet_frame *out) {
  const cgnet_codec *c = state;
  if (len < c->fixed_len) return 0;
  set_frame(out, in, c->fixed_len, c->fixed_len);
  return 1;
}

static int fixed_encode(void *state, const uint8_t *frame, size_t len, cgnet_encoded *out) {
  const cgnet_codec *c = state;
  if (len != c->fixed_len) return CGNET_EMSGSIZE;
  out->iov[0] = (struct iovec){.iov_base = (void *)frame, .iov_len = len};
  out->iovcnt = 1;
  return 0;
}

/* The longest fixed frame. The other codecs take their bound from the user
 * (max_frame_length, default 1 MiB); here the frame length is the bound, and every conn
 * buffers up to a whole frame before it can decode one, so an absurd length (a negative
 * number cast to size_t, 2^40) is refused rather than taken as "buffer without limit".
 * 1 GiB is also the largest write_buffer_cap an engine accepts. */
#define FIXED_MAX_FRAME ((size_t)1 << 30)

int cgnet_codec_fixed(size_t frame_length, cgnet_codec **out) {
  if (!out || frame_length == 0 || frame_length > FIXED_MAX_FRAME) return CGNET_EINVAL;
  cgnet_codec *c = codec_alloc(KIND_FIXED, 0, frame_length);
  if (!c) return CGNET_ENOMEM;
  c->fixed_len = frame_length;
  c->ops = (cgnet_codec_ops){.decode = fixed_decode, .encode = fixed_encode};
  *out = c;
  return 0;
}

/* ---- length field -------------------------------------------------------------------- */

static uint64_t read_uint(const uint8_t *p, size_t n, cgnet_byte_order order) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v |= (uint64_t)p[order == CGNET_BIG_ENDIAN ? i : n - 1 - i] << (8 * (n - 1 - i));
  return v;
}

static void write_uint(uint8_t *p, size_t n, cgnet_byte_order order, uint64_t v) {
  for (size_t i = 0; i < n; i++)
    p[order == CGNET_BIG_ENDIAN ? i : n - 1 - i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

/* The whole frame's size on the wire from the header's value, or a negative code. */
static int lenfield_total(const cgnet_codec *c, uint64_t v, size_t *total) {
  const lenfield *lf = &c->lf;
  int64_t rest;
  if (v > INT64_MAX || __builtin_add_overflow((int64_t)v, lf->adjust, &rest) || rest < 0)
    return CGNET_ECODEC;
  if ((uint64_t)rest > SIZE_MAX - lf->header) return CGNET_ECODEC;
  *total = lf->header + (size_t)rest;
  if (*total > c->max) return CGNET_EFRAMETOOLARGE;
  if (lf->strip > *total) return CGNET_ECODEC;
  return 0;
}

/* hint: the total the frame at the front needs, once its header was seen. */
static int lenfield_decode(void *state, const uint8_t *in, size_t len, cgnet_frame *out) {
  const cgnet_codec *c = state;
  const lenfield *lf = &c->lf;
  if (len < lf->header || len < out->hint) return 0;
  size_t total;
  int err = lenfield_total(c, read_uint(in + lf->offset, lf->flen, lf->order), &total);
  if (err) return err;
  if (len < total) {
    out->hint = total;
    return 0;
  }
  set_frame(out, in + lf->strip, total - lf->strip, total);
  return 1;
}

static int lenfield_encode(void *state, const uint8_t *frame, size_t len,
                           cgnet_encoded *out) {
  const cgnet_codec *c = state;
  const lenfield *lf = &c->lf;
  if (len < lf->offset) return CGNET_EINVAL;
  if (len > c->max || len - lf->offset > (size_t)INT64_MAX) return CGNET_EFRAMETOOLARGE;
  int64_t v;
  if (__builtin_sub_overflow((int64_t)(len - lf->offset), lf->adjust, &v) || v < 0)
    return CGNET_EMSGSIZE;
  if (lf->flen < 8 && (uint64_t)v >> (8 * lf->flen)) return CGNET_EMSGSIZE;
  if (sat_add(len, lf->flen) > c->max) return CGNET_EFRAMETOOLARGE;
  write_uint(out->header, lf->flen, lf->order, (uint64_t)v);
  out->iov[0] = (struct iovec){.iov_base = (void *)frame, .iov_len = lf->offset};
  out->iov[1] = (struct iovec){.iov_base = out->header, .iov_len = lf->flen};
  out->iov[2] =
      (struct iovec){.iov_base = (void *)(frame + lf->offset), .iov_len = len - lf->offset};
  out->iovcnt = 3;
  return 0;
}

static int lenfield_config(const cgnet_length_field_codec_options *o, lenfield *lf,
                           size_t max) {
  int fl = o->length_field_length ? o->length_field_length : 4;
  if (fl != 1 && fl != 2 && fl != 3 && fl != 4 && fl != 8) return CGNET_EINVAL;
  if (o->byte_order != CGNET_BIG_ENDIAN && o->byte_order != CGNET_LITTLE_ENDIAN)
    return CGNET_EINVAL;
  lf->order = o->byte_order;
  lf->flen = (size_t)fl;
  lf->offset = o->length_field_offset;
  if (lf->offset > max || max - lf->offset < lf->flen) return CGNET_EINVAL;
  lf->header = lf->offset + lf->flen;
  lf->adjust = o->length_adjustment;
  if (o->length_includes_length_field &&
      __builtin_sub_overflow(lf->adjust, (int64_t)lf->flen, &lf->adjust))
    return CGNET_EINVAL;
  lf->strip = o->initial_bytes_to_strip == CGNET_STRIP_HEADER ? lf->header
                                                              : o->initial_bytes_to_strip;
  return 0;
}

int cgnet_codec_length_field(const cgnet_length_field_codec_options *o, cgnet_codec **out) {
  cgnet_length_field_codec_options d = {0};
  if (!out) return CGNET_EINVAL;
  if (!o) o = &d;
  size_t max;
  lenfield lf;
  int err = resolve_max(o->max_frame_length, &max);
  if (!err) err = lenfield_config(o, &lf, max);
  if (err) return err;
  cgnet_codec *c = codec_alloc(KIND_LENFIELD, 0, max);
  if (!c) return CGNET_ENOMEM;
  c->lf = lf;
  c->ops = (cgnet_codec_ops){.decode = lenfield_decode, .encode = lenfield_encode};
  *out = c;
  return 0;
}

/* ---- custom codecs and the common entry points --------------------------------------- */

int cgnet_codec_new(const cgnet_codec_ops *ops, void *state, size_t max_frame_length,
                    cgnet_codec **out) {
  if (!out || !ops || !ops->decode || !ops->encode) return CGNET_EINVAL;
  size_t max;
  int err = resolve_max(max_frame_length, &max);
  if (err) return err;
  cgnet_codec *c = codec_alloc(KIND_CUSTOM, 0, max);
  if (!c) return CGNET_ENOMEM;
  c->ops = *ops;
  c->state = state;
  *out = c;
  return 0;
}

void cgnet_codec_free(cgnet_codec *codec) {
  if (!codec) return;
  if (codec->kind == KIND_CUSTOM && codec->ops.destroy) codec->ops.destroy(codec->state);
  free(codec);
}

size_t cgnet_codec_max_frame_length(const cgnet_codec *codec) {
  return codec ? codec->max : 0;
}

/* A decoder's frame must lie inside the input and use up at least one byte. */
static int frame_is_sane(const uint8_t *in, size_t len, const cgnet_frame *f) {
  if (f->consumed == 0 || f->consumed > len) return 0;
  if (f->len == 0) return 1; /* data is not dereferenced */
  if (!f->data || f->data < in || f->data > in + len) return 0;
  return f->len <= (size_t)(in + len - f->data);
}

int cgnet_codec_decode(const cgnet_codec *codec, const uint8_t *in, size_t len,
                       cgnet_frame *out) {
  if (!codec || !out || (len && !in)) return CGNET_EINVAL;
  int rc = codec->ops.decode(codec->state, in, len, out);
  if (rc < 0) return rc;
  if (rc == 0) return len > codec->pending_limit ? CGNET_EFRAMETOOLARGE : 0;
  if (!frame_is_sane(in, len, out)) return CGNET_ECODEC;
  if (out->len > codec->max) return CGNET_EFRAMETOOLARGE;
  if (out->len == 0) out->data = in; /* never a stray pointer */
  return 1;
}

int cgnet_codec_encode(const cgnet_codec *codec, const uint8_t *frame, size_t len,
                       cgnet_encoded *out) {
  if (!codec || !out || (len && !frame)) return CGNET_EINVAL;
  out->iovcnt = 0;
  int rc = codec->ops.encode(codec->state, frame, len, out);
  if (rc == 0 && (out->iovcnt < 0 || out->iovcnt > 3)) return CGNET_ECODEC;
  return rc;
}
