/*
 * libFuzzer target: the server side of the TLS engine (src/tls.c) fed arbitrary bytes as
 * a client's first flight, the way a conn's read path would feed it.
 *
 * One server context (a self-signed ECDSA certificate made at start-up, ALPN, SNI names,
 * client certificates optional so that the certificate paths are reachable) serves
 * every input. Each input gets a fresh session; the bytes are fed in pieces whose sizes
 * the input chooses, into a plaintext buffer whose size it chooses too; then the session
 * is written to, flushed, closed and freed. Checked after every call:
 *   - the result is 0 or one of the engine's error codes, and FAILED goes with it (and
 *     with a reason); a failed session stays failed and sends nothing more;
 *   - no plaintext comes out before the handshake is done, and never more than the room
 *     given;
 *   - the sink is only called with non-empty byte runs, and the output stays bounded.
 * Any broken check aborts; leaks are LeakSanitizer's to find.
 *
 * Input format:
 *   byte 0        plaintext room: 1 + byte * 64
 *   byte 1        number of piece sizes P (% 16), then P bytes: a piece of b + 1 bytes
 *                 (the rest goes as one last piece)
 *   the rest      the ciphertext a client would send
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"
#include "cgnet_tls.h"
#include "fuzz_check.h"
#include "support/tls_certs.h"
#include "tls.h"

#define MAX_OUT (1u << 20) /* what a server may send in reply to one input */

static cgnet_tls_ctx *server;

typedef struct out_count {
  size_t bytes;
} out_count;

static int count_sink(void *ud, const struct iovec *iov, int iovcnt) {
  out_count *o = ud;
  FZ_CHECK(iovcnt > 0);
  for (int i = 0; i < iovcnt; i++) {
    FZ_CHECK(iov[i].iov_base != NULL && iov[i].iov_len > 0);
    o->bytes += iov[i].iov_len;
  }
  FZ_CHECK(o->bytes <= MAX_OUT);
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  tu_pem ca, leaf;
  if (tu_tls_make_cert(NULL, "fuzz CA", NULL, -3600, 86400, 1, NULL, &ca) != 0 ||
      tu_tls_make_cert(&ca, "localhost", "DNS:localhost", -3600, 86400, 0, "serverAuth",
                       &leaf) != 0)
    abort();
  static const char *names[] = {"localhost", "*.fuzz.test", NULL};
  static const char *alpn[] = {"h2", "http/1.1", NULL};
  cgnet_tls_cert cert = {
      .chain = {.data = leaf.cert}, .key = {.data = leaf.key}, .names = names};
  cgnet_tls_options o = {.role = CGNET_TLS_SERVER,
                         .certs = &cert,
                         .ncerts = 1,
                         .ca = {.data = ca.cert},
                         .client_cert = CGNET_TLS_CLIENT_CERT_OPTIONAL,
                         .alpn = alpn};
  char msg[256];
  if (cgnet_tls_ctx_new(&o, &server, msg, sizeof(msg)) != 0) {
    fprintf(stderr, "fuzz_tls_server: %s\n", msg);
    abort();
  }
  free(ca.cert);
  free(ca.key);
  free(leaf.cert);
  free(leaf.key);
  return 0;
}

static void check_result(cgnet__tls *t, int rc) {
  cgnet__tls_state st = cgnet__tls_get_state(t);
  if (rc == 0) {
    FZ_CHECK(st != CGNET__TLS_FAILED);
    return;
  }
  FZ_CHECK(rc == CGNET_ETLS || rc == CGNET_ETLSVERIFY || rc == CGNET_ENOMEM);
  FZ_CHECK(st == CGNET__TLS_FAILED);
  FZ_CHECK(cgnet__tls_reason(t) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t room = 1 + (size_t)data[0] * 64;
  size_t npieces = data[1] % 16;
  if (size < 2 + npieces) return 0;
  const uint8_t *pieces = data + 2;
  const uint8_t *in = data + 2 + npieces;
  size_t len = size - 2 - npieces;

  out_count out = {0};
  cgnet__tls *t = NULL;
  FZ_CHECK(cgnet__tls_new(server, NULL, count_sink, &out, &t) == 0);
  uint8_t *plain = malloc(room);
  FZ_CHECK(plain != NULL);
  size_t off = 0;
  for (size_t i = 0; off < len && i <= npieces; i++) {
    size_t n = i < npieces ? (size_t)pieces[i] + 1 : len - off;
    if (n > len - off) n = len - off;
    /* The span is borrowed: hand over a copy that dies right after the call. */
    uint8_t *span = malloc(n);
    FZ_CHECK(span != NULL);
    memcpy(span, in + off, n);
    size_t got = 0;
    int rc = cgnet__tls_input(t, span, n, plain, room, &got);
    free(span);
    off += n;
    check_result(t, rc);
    FZ_CHECK(got <= room);
    if (got) FZ_CHECK(cgnet__tls_get_state(t) != CGNET__TLS_HANDSHAKE);
    while (rc == 0 && cgnet__tls_pending(t)) {
      rc = cgnet__tls_input(t, NULL, 0, plain, room, &got);
      check_result(t, rc);
      FZ_CHECK(got <= room);
    }
  }
  /* The rest of a conn's life: a reply, a flush, a close, the peer gone. */
  int failed = cgnet__tls_get_state(t) == CGNET__TLS_FAILED;
  size_t sent = out.bytes;
  int rc = cgnet__tls_write(t, "HTTP/1.1 200 OK\r\n\r\n", 19);
  if (failed) FZ_CHECK(rc < 0);
  rc = cgnet__tls_flush(t);
  if (!failed) check_result(t, rc);
  rc = cgnet__tls_close(t);
  if (failed) FZ_CHECK(rc < 0 && out.bytes == sent);
  int eof = cgnet__tls_eof(t);
  FZ_CHECK(eof == CGNET_EOF || eof == CGNET_ETLSTRUNCATED);
  free(plain);
  cgnet__tls_free(t);
  return 0;
}
