/* permessage-deflate: negotiation and message (de)compression (see ws_deflate.h). */
#include "ws_deflate.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"

#ifdef CGNET_HAVE_ZLIB
#include <zlib.h>
#endif

#define EXT_NAME "permessage-deflate"

/* ---- negotiation (pure; zlib only decides whether it happens) --------------------- */

int cgnet__ws_deflate_available(void) {
#ifdef CGNET_HAVE_ZLIB
  return 1;
#else
  return 0;
#endif
}

/* The parameters of one offer or response. Windows: 0 absent, -1 named without a
 * value (client_max_window_bits in an offer), else 8-15. */
typedef struct deflate_params {
  int server_no_context_takeover;
  int client_no_context_takeover;
  int server_max_window_bits;
  int client_max_window_bits;
} deflate_params;

/* A window size: "8" to "15", no leading zero. Returns it, or -1. */
static int window_value(cgnet__ws_str v) {
  if (!v.ptr) return -1;
  if (v.len == 1 && (v.ptr[0] == '8' || v.ptr[0] == '9')) return v.ptr[0] - '0';
  if (v.len == 2 && v.ptr[0] == '1' && v.ptr[1] >= '0' && v.ptr[1] <= '5')
    return 10 + v.ptr[1] - '0';
  return -1;
}

static int set_flag(int *slot, const cgnet__ws_ext_param *p) {
  if (*slot || p->value.ptr) return -1; /* repeated, or given a value */
  *slot = 1;
  return 0;
}

static int set_window(int *slot, const cgnet__ws_ext_param *p, int value_optional) {
  if (*slot) return -1;
  if (!p->value.ptr && value_optional) {
    *slot = -1;
    return 0;
  }
  *slot = window_value(p->value);
  return *slot < 0 ? -1 : 0;
}

/* Parse an extension's parameters; an unknown, repeated or invalid one fails (-1).
 * client_max_window_bits may go without a value only in an offer. */
static int parse_params(const cgnet__ws_ext *x, int offer, deflate_params *o) {
  memset(o, 0, sizeof *o);
  for (size_t i = 0; i < x->nparams; i++) {
    const cgnet__ws_ext_param *p = &x->params[i];
    int rc;
    if (cgnet__ws_str_ieq(p->name, "server_no_context_takeover"))
      rc = set_flag(&o->server_no_context_takeover, p);
    else if (cgnet__ws_str_ieq(p->name, "client_no_context_takeover"))
      rc = set_flag(&o->client_no_context_takeover, p);
    else if (cgnet__ws_str_ieq(p->name, "server_max_window_bits"))
      rc = set_window(&o->server_max_window_bits, p, 0);
    else if (cgnet__ws_str_ieq(p->name, "client_max_window_bits"))
      rc = set_window(&o->client_max_window_bits, p, offer);
    else
      rc = -1;
    if (rc) return -1;
  }
  return 0;
}

static int own_window(const cgnet__ws_deflate_config *cfg) {
  int w = cfg->max_window_bits ? cfg->max_window_bits : 15;
  return w < 9 ? 9 : w > 15 ? 15 : w;
}

static int peer_window(const cgnet__ws_deflate_config *cfg) {
  int w = cfg->peer_max_window_bits;
  return w == 0 ? 0 : w < 8 ? 8 : w > 15 ? 15 : w;
}

static int min_int(int a, int b) {
  return a < b ? a : b;
}

/* Agree on one offer (server side); 0, or -1 to decline it. The response names the
 * server window only if the offer did, and the client window only if the offer allowed
 * it: always when the offer gave a value (so both sides read the same limit from the
 * response), and without one when the configuration asks for a smaller window. A
 * compressor may always use a smaller window than agreed. */
static int agree(const deflate_params *o, const cgnet__ws_deflate_config *cfg,
                 cgnet__ws_deflate_params *a, int *name_client_window) {
  if (o->server_max_window_bits == 8) return -1; /* zlib cannot compress with 256 bytes */
  a->server_no_context_takeover = o->server_no_context_takeover || cfg->no_context_takeover;
  a->client_no_context_takeover = (uint8_t)o->client_no_context_takeover;
  a->server_max_window_bits =
      (uint8_t)(o->server_max_window_bits
                    ? min_int(o->server_max_window_bits, own_window(cfg))
                    : 15);
  int client = o->client_max_window_bits > 0 ? o->client_max_window_bits : 15;
  if (o->client_max_window_bits != 0 && peer_window(cfg) != 0)
    client = min_int(client, peer_window(cfg));
  *name_client_window = o->client_max_window_bits > 0 ||
                        (o->client_max_window_bits != 0 && peer_window(cfg) != 0);
  a->client_max_window_bits = (uint8_t)client;
  return 0;
}

static long format_response(const deflate_params *o, const cgnet__ws_deflate_params *a,
                            int name_client_window, char *out, size_t cap) {
  char smwb[40] = "", cmwb[40] = "";
  if (o->server_max_window_bits)
    snprintf(smwb, sizeof smwb, "; server_max_window_bits=%u", a->server_max_window_bits);
  if (name_client_window)
    snprintf(cmwb, sizeof cmwb, "; client_max_window_bits=%u", a->client_max_window_bits);
  int n = snprintf(out, cap, EXT_NAME "%s%s%s%s",
                   a->server_no_context_takeover ? "; server_no_context_takeover" : "",
                   a->client_no_context_takeover ? "; client_no_context_takeover" : "",
                   smwb, cmwb);
  return n >= 0 && (size_t)n < cap ? n : CGNET_ENOBUFS;
}

int cgnet__ws_deflate_negotiate(const cgnet__ws_ext *exts, size_t nexts,
                                const cgnet__ws_deflate_config *cfg,
                                cgnet__ws_deflate_params *agreed, char *out, size_t cap) {
  if (!cgnet__ws_deflate_available()) return 0;
  for (size_t i = 0; i < nexts; i++) {
    deflate_params o;
    int name_client_window;
    if (!cgnet__ws_str_ieq(exts[i].name, EXT_NAME)) continue;
    if (parse_params(&exts[i], 1, &o) != 0) continue;
    if (agree(&o, cfg, agreed, &name_client_window) != 0) continue;
    long n = format_response(&o, agreed, name_client_window, out, cap);
    return n < 0 ? (int)n : 1;
  }
  return 0;
}

long cgnet__ws_deflate_offer(const cgnet__ws_deflate_config *cfg, char *out, size_t cap) {
  if (!cgnet__ws_deflate_available()) return 0;
  char smwb[40] = "";
  if (peer_window(cfg))
    snprintf(smwb, sizeof smwb, "; server_max_window_bits=%d", peer_window(cfg));
  int n = snprintf(out, cap, EXT_NAME "; client_max_window_bits%s%s", smwb,
                   cfg->no_context_takeover ? "; client_no_context_takeover" : "");
  return n >= 0 && (size_t)n < cap ? n : CGNET_ENOBUFS;
}

int cgnet__ws_deflate_accept(const cgnet__ws_ext *response,
                             const cgnet__ws_deflate_config *cfg,
                             cgnet__ws_deflate_params *agreed) {
  deflate_params o;
  if (!cgnet__ws_deflate_available() || !cgnet__ws_str_ieq(response->name, EXT_NAME))
    return CGNET_ECODEC;
  if (parse_params(response, 0, &o) != 0) return CGNET_ECODEC;
  /* The offer named a server window: the server accepts it by naming one no larger
   * (RFC 7692 section 7.1.2.1). A client window of 8 cannot be honoured with zlib. */
  if (peer_window(cfg) &&
      (!o.server_max_window_bits || o.server_max_window_bits > peer_window(cfg)))
    return CGNET_ECODEC;
  if (o.client_max_window_bits == 8) return CGNET_ECODEC;
  agreed->server_no_context_takeover = (uint8_t)o.server_no_context_takeover;
  agreed->client_no_context_takeover = (uint8_t)o.client_no_context_takeover;
  agreed->server_max_window_bits =
      (uint8_t)(o.server_max_window_bits ? o.server_max_window_bits : 15);
  agreed->client_max_window_bits =
      (uint8_t)(o.client_max_window_bits ? o.client_max_window_bits : 15);
  return 0;
}

/* ---- compression -------------------------------------------------------------------- */

size_t cgnet__ws_deflate_bound(size_t n) {
  /* zlib's general bound for raw deflate with any window and memLevel, plus an empty
   * stored block for the sync flush and some slack. */
  return n + ((n + 7) >> 3) + ((n + 63) >> 6) + 5 + 16;
}

#ifdef CGNET_HAVE_ZLIB

#define PIECE_MAX (1u << 30) /* zlib counts in uInt: feed it at most this much at once */

struct cgnet__ws_deflate {
  z_stream tx, rx;
  int tx_ready, rx_ready;
  int tx_reset, rx_reset; /* no context takeover: reset after each message */
  uint64_t rx_total;      /* bytes inflated of the current message */
  size_t zmem;            /* bytes zlib holds for the two streams */
  uint8_t chunk[CGNET__WS_INFLATE_CHUNK];
};

/* zlib's allocations, counted: each block carries its size in front. */
typedef union zblock {
  size_t size;
  max_align_t align;
} zblock;

static voidpf counted_alloc(voidpf opaque, uInt items, uInt size) {
  cgnet__ws_deflate *z = opaque;
  size_t n = (size_t)items * size;
  zblock *b = malloc(sizeof *b + n);
  if (!b) return Z_NULL;
  b->size = n;
  z->zmem += n;
  return b + 1;
}

static void counted_free(voidpf opaque, voidpf p) {
  cgnet__ws_deflate *z = opaque;
  if (!p) return;
  zblock *b = (zblock *)p - 1;
  z->zmem -= b->size;
  free(b);
}

size_t cgnet__ws_deflate_memory(const cgnet__ws_deflate *z) {
  return z ? sizeof *z + z->zmem : 0;
}

static const uint8_t TAIL[4] = {0x00, 0x00, 0xff, 0xff};

cgnet__ws_deflate *cgnet__ws_deflate_new(cgnet__ws_role role,
                                         const cgnet__ws_deflate_params *agreed,
                                         const cgnet__ws_deflate_config *cfg) {
  cgnet__ws_deflate *z = calloc(1, sizeof *z);
  if (!z) return NULL;
  int server = role == CGNET__WS_SERVER;
  int tx_window = server ? agreed->server_max_window_bits : agreed->client_max_window_bits;
  int rx_window = server ? agreed->client_max_window_bits : agreed->server_max_window_bits;
  tx_window = min_int(tx_window ? tx_window : 15, own_window(cfg)); /* 0: none named */
  rx_window = rx_window ? rx_window : 15;
  tx_window = tx_window < 9 ? 9 : tx_window;
  /* zlib may compress with a 9-bit window where 8 was agreed: inflate with at least 9. */
  rx_window = rx_window < 9 ? 9 : rx_window > 15 ? 15 : rx_window;
  z->tx_reset =
      (server ? agreed->server_no_context_takeover : agreed->client_no_context_takeover) ||
      cfg->no_context_takeover;
  z->rx_reset =
      server ? agreed->client_no_context_takeover : agreed->server_no_context_takeover;
  int level = cfg->level >= 1 && cfg->level <= 9 ? cfg->level : 6;
  int mem = cfg->mem_level >= 1 && cfg->mem_level <= 9 ? cfg->mem_level : 8;
  z->tx.zalloc = z->rx.zalloc = counted_alloc;
  z->tx.zfree = z->rx.zfree = counted_free;
  z->tx.opaque = z->rx.opaque = z;
  if (deflateInit2(&z->tx, level, Z_DEFLATED, -tx_window, mem, Z_DEFAULT_STRATEGY) != Z_OK)
    goto fail;
  z->tx_ready = 1;
  if (inflateInit2(&z->rx, -rx_window) != Z_OK) goto fail;
  z->rx_ready = 1;
  return z;
fail:
  cgnet__ws_deflate_free(z);
  return NULL;
}

void cgnet__ws_deflate_free(cgnet__ws_deflate *z) {
  if (!z) return;
  if (z->tx_ready) deflateEnd(&z->tx);
  if (z->rx_ready) inflateEnd(&z->rx);
  free(z);
}

static size_t min_size(size_t a, size_t b) {
  return a < b ? a : b;
}

/* deflate in[0, n) with a sync flush at the end into out[0, cap). 0 or an error. */
static int deflate_sync(z_stream *s, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                        size_t *used) {
  size_t in_left = n, out_used = 0;
  s->next_in = (Bytef *)(uintptr_t)in;
  for (;;) {
    uInt ain = (uInt)min_size(in_left, PIECE_MAX);
    uInt aout = (uInt)min_size(cap - out_used, PIECE_MAX);
    int flush = in_left <= PIECE_MAX ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    s->avail_in = ain;
    s->next_out = out + out_used;
    s->avail_out = aout;
    int rc = deflate(s, flush);
    if (rc != Z_OK && rc != Z_BUF_ERROR) return CGNET_EIO;
    in_left -= ain - s->avail_in;
    out_used += aout - s->avail_out;
    /* A sync flush is complete once it returns with room to spare. */
    if (flush == Z_SYNC_FLUSH && s->avail_in == 0 && s->avail_out != 0) break;
    if (out_used == cap) return CGNET_ENOBUFS;
  }
  *used = out_used;
  return 0;
}

int cgnet__ws_deflate_message(cgnet__ws_deflate *z, const uint8_t *in, size_t n,
                              uint8_t *out, size_t cap, size_t *out_len) {
  if (n == 0) {
    /* An empty message is one 0x00 byte (RFC 7692 section 7.2.3.6): with the tail, an
     * empty stored block. Every message ends byte-aligned after its sync flush, so this
     * is valid whatever came before, and zlib, which makes no output for a flush with
     * no new input, is not asked. */
    if (cap < 1) return CGNET_ENOBUFS;
    out[0] = 0x00;
    *out_len = 1;
    return 0;
  }
  size_t used = 0;
  int rc = deflate_sync(&z->tx, in, n, out, cap, &used);
  if (rc == 0 && (used < 4 || memcmp(out + used - 4, TAIL, 4) != 0)) rc = CGNET_EIO;
  /* After a failure the history holds bytes the peer never saw: start afresh. */
  if (rc != 0 || z->tx_reset) deflateReset(&z->tx);
  if (rc != 0) return rc;
  *out_len = used - 4;
  return 0;
}

int cgnet__ws_deflate_piece(cgnet__ws_deflate *z, const uint8_t *in, size_t n, uint8_t *out,
                            size_t cap, size_t *out_len) {
  size_t used = 0;
  int rc = deflate_sync(&z->tx, in, n, out, cap, &used);
  if (rc == 0 && (used < 4 || memcmp(out + used - 4, TAIL, 4) != 0)) rc = CGNET_EIO;
  if (rc != 0) {
    deflateReset(&z->tx); /* the message cannot be finished: start the next afresh */
    return rc;
  }
  *out_len = used - 4;
  return 0;
}

void cgnet__ws_deflate_end(cgnet__ws_deflate *z) {
  if (z->tx_reset) deflateReset(&z->tx);
}

/* Inflate in[0, n) into the chunk buffer, handing each chunk to the sink. */
static int inflate_some(cgnet__ws_deflate *z, const uint8_t *in, size_t n, uint64_t max,
                        cgnet__ws_sink sink, void *arg) {
  size_t in_left = n;
  z->rx.next_in = (Bytef *)(uintptr_t)in;
  for (;;) {
    uInt ain = (uInt)min_size(in_left, PIECE_MAX);
    size_t room = sizeof z->chunk;
    if (max) {
      /* One byte past the limit is enough to know the message is too big. */
      uint64_t allowed = max - z->rx_total;
      if (allowed < room) room = (size_t)allowed + 1;
    }
    z->rx.avail_in = ain;
    z->rx.next_out = z->chunk;
    z->rx.avail_out = (uInt)room;
    int rc = inflate(&z->rx, Z_SYNC_FLUSH);
    if (rc == Z_MEM_ERROR) return CGNET_ENOMEM;
    if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) return CGNET_ECODEC;
    size_t took = ain - z->rx.avail_in, got = room - z->rx.avail_out;
    in_left -= took;
    z->rx_total += got;
    if (max && z->rx_total > max) return CGNET_EMSGSIZE;
    if (got) {
      int s = sink(arg, z->chunk, got);
      if (s) return s;
    }
    /* A block with BFINAL ends the deflate stream; what follows starts a new one. */
    if (rc == Z_STREAM_END) inflateReset(&z->rx);
    if (in_left == 0 && z->rx.avail_out != 0) return 0;
    if (took == 0 && got == 0 && rc != Z_STREAM_END) return in_left ? CGNET_ECODEC : 0;
  }
}

int cgnet__ws_inflate(cgnet__ws_deflate *z, const uint8_t *in, size_t n, int last,
                      uint64_t max_message, cgnet__ws_sink sink, void *arg) {
  int rc = inflate_some(z, in, n, max_message, sink, arg);
  if (rc == 0 && last) rc = inflate_some(z, TAIL, sizeof TAIL, max_message, sink, arg);
  if (rc == 0 && last) {
    z->rx_total = 0;
    if (z->rx_reset) inflateReset(&z->rx);
  }
  return rc;
}

#else /* no zlib: the extension is never negotiated, so none of this is reached */

cgnet__ws_deflate *cgnet__ws_deflate_new(cgnet__ws_role role,
                                         const cgnet__ws_deflate_params *agreed,
                                         const cgnet__ws_deflate_config *cfg) {
  (void)role;
  (void)agreed;
  (void)cfg;
  return NULL;
}

void cgnet__ws_deflate_free(cgnet__ws_deflate *z) {
  (void)z;
}

size_t cgnet__ws_deflate_memory(const cgnet__ws_deflate *z) {
  (void)z;
  return 0;
}

int cgnet__ws_deflate_message(cgnet__ws_deflate *z, const uint8_t *in, size_t n,
                              uint8_t *out, size_t cap, size_t *out_len) {
  (void)z;
  (void)in;
  (void)n;
  (void)out;
  (void)cap;
  (void)out_len;
  return CGNET_EUNSUPPORTED;
}

int cgnet__ws_deflate_piece(cgnet__ws_deflate *z, const uint8_t *in, size_t n, uint8_t *out,
                            size_t cap, size_t *out_len) {
  (void)z;
  (void)in;
  (void)n;
  (void)out;
  (void)cap;
  (void)out_len;
  return CGNET_EUNSUPPORTED;
}

void cgnet__ws_deflate_end(cgnet__ws_deflate *z) {
  (void)z;
}

int cgnet__ws_inflate(cgnet__ws_deflate *z, const uint8_t *in, size_t n, int last,
                      uint64_t max_message, cgnet__ws_sink sink, void *arg) {
  (void)z;
  (void)in;
  (void)n;
  (void)last;
  (void)max_message;
  (void)sink;
  (void)arg;
  return CGNET_EUNSUPPORTED;
}

#endif
