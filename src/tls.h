/*
 * The per-connection TLS engine: one TLS session over a cgnet_tls_ctx, driven purely by
 * bytes. It never touches a socket, so the same engine serves a readiness backend
 * (ciphertext from read()) and a completion backend (ciphertext in a buffer the kernel
 * filled):
 *
 *   input    the conn hands over the ciphertext it just received as one span; the engine
 *            decrypts straight into a plaintext buffer the conn passes in (its inbound
 *            buffer or the loop's scratch), where the handler then sees it in place.
 *            OpenSSL reads records out of the span itself (a custom BIO), so the span is
 *            not copied into a memory BIO first; a record split across spans waits in
 *            OpenSSL's own record buffer. Only ciphertext left over because the plaintext
 *            buffer filled is copied (the carry), and released once drained.
 *   output   plaintext writes are buffered until a full record's worth (16 KiB) is there,
 *            which is encrypted at once, or until a flush, which encrypts the rest; the
 *            records go to the sink, a callback the conn points at its outbound queue.
 *            The sink must take every byte (it queues; it never blocks).
 *   close    cgnet__tls_close sends close_notify; the peer's close_notify ends the input
 *            (CGNET__TLS_PEER_CLOSED); cgnet__tls_eof tells a clean end from a truncation.
 *
 * Threads: a session belongs to the loop thread that created it; every call is made from
 * that thread. The context behind it may be shared by many loops.
 *
 * Memory: an idle session holds no record buffers (SSL_MODE_RELEASE_BUFFERS, and the
 * plaintext and carry buffers are freed whenever they empty). Measured by test_tls on
 * x86_64 with OpenSSL 3.0: see TLS_IDLE_SESSION_BYTES in tests/test_tls.c and
 * docs/design.md ("TLS engine").
 */
#ifndef CGNET_TLS_INTERNAL_H
#define CGNET_TLS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cgnet_tls.h"

typedef struct cgnet__tls cgnet__tls;

/* Where the engine's ciphertext goes: called with records ready for the wire, on the
 * session's thread. Returns 0, or a negative CGNET_E* code that fails the session. */
typedef int (*cgnet__tls_sink_fn)(void *ud, const struct iovec *iov, int iovcnt);

typedef enum cgnet__tls_state {
  CGNET__TLS_HANDSHAKE = 0,   /* in progress (a timeout on it is the conn's business) */
  CGNET__TLS_OPEN = 1,        /* handshake done; data flows both ways */
  CGNET__TLS_PEER_CLOSED = 2, /* the peer's close_notify came: a clean end of input */
  CGNET__TLS_FAILED = 3,      /* fatal error; cgnet__tls_reason says what */
} cgnet__tls_state;

/* The largest plaintext OpenSSL puts in one record. */
#define CGNET__TLS_RECORD_MAX 16384

/*
 * A session over ctx into *out. server_name (client only; may be NULL): the name sent as
 * SNI (unless it is an IP address) and checked against the server's certificate (a name
 * or an IP address), and the key of the client's session cache. The sink receives every
 * byte the session sends. Holds a reference on ctx until cgnet__tls_free. 0,
 * CGNET_EINVAL, CGNET_ENOMEM or CGNET_EUNSUPPORTED.
 */
int cgnet__tls_new(cgnet_tls_ctx *ctx, const char *server_name, cgnet__tls_sink_fn sink,
                   void *sink_ud, cgnet__tls **out);
void cgnet__tls_free(cgnet__tls *t);

/* Client: send the first flight (ClientHello) to the sink. A server needs no start.
 * 0 or the session's error. */
int cgnet__tls_start(cgnet__tls *t);

/*
 * Ciphertext in, plaintext out. `in` (len bytes; NULL/0 to drain what is already held)
 * is only borrowed for this call: what is not consumed is copied into the carry. Drives
 * the handshake (its replies go to the sink) and then decrypts up to cap bytes into out,
 * setting *outlen. Returns 0 (see cgnet__tls_state: still in the handshake, open, or
 * peer closed) or a negative code on a fatal error (the state is then FAILED):
 * CGNET_ETLSVERIFY (the peer's certificate), CGNET_ETLS (anything else in the protocol),
 * CGNET_ENOMEM, or the sink's error. Call again with in = NULL while
 * cgnet__tls_pending says so and there is room.
 */
int cgnet__tls_input(cgnet__tls *t, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
                     size_t *outlen);

/* 1 if input() can produce plaintext without new ciphertext (decrypted bytes held by
 * OpenSSL, or ciphertext in the carry). */
int cgnet__tls_pending(const cgnet__tls *t);

/* Plaintext out. Once the handshake is done, full 16 KiB records are encrypted to the
 * sink at once (from the caller's memory when nothing is buffered) and less than a
 * record waits, copied, for the next write or flush; writes made during the handshake
 * all wait for it to finish. 0, CGNET_ENOMEM, CGNET_ECLOSED after close, or the
 * session's error (the sink's, or OpenSSL's). */
int cgnet__tls_write(cgnet__tls *t, const void *data, size_t len);
int cgnet__tls_writev(cgnet__tls *t, const struct iovec *iov, int iovcnt);

/* Encrypt every buffered byte into records of up to 16 KiB and hand them to the sink.
 * During the handshake it does nothing (the bytes stay buffered). 0 or an error. */
int cgnet__tls_flush(cgnet__tls *t);

/* Plaintext bytes buffered and not yet encrypted. */
size_t cgnet__tls_buffered(const cgnet__tls *t);

/* Bytes of buffered data the session holds besides its fixed state: the capacity of its
 * plaintext and carry buffers, and decrypted bytes OpenSSL has not handed out. 0 for an
 * idle session (OpenSSL's own record buffers, released by SSL_MODE_RELEASE_BUFFERS, are
 * not visible here; test_tls counts them through OpenSSL's allocator). */
size_t cgnet__tls_held(const cgnet__tls *t);

/* Flush, then send close_notify. Further writes return CGNET_ECLOSED. 0 or an error
 * (nothing is sent on a session that failed). */
int cgnet__tls_close(cgnet__tls *t);

/* The transport reached end of file. Returns the close reason for the conn: CGNET_EOF if
 * the peer sent close_notify first, else CGNET_ETLSTRUNCATED (the peer, or someone on
 * the path, cut the stream: data may have been lost). */
int cgnet__tls_eof(const cgnet__tls *t);

cgnet__tls_state cgnet__tls_get_state(const cgnet__tls *t);

/* Why the session failed: a static sentence from OpenSSL ("certificate has expired", "no
 * shared cipher", "unsupported protocol", ...), or NULL if it has not. */
const char *cgnet__tls_reason(const cgnet__tls *t);

/* After the handshake (NULL, or 0, before it): the version ("TLSv1.3"), the cipher
 * ("TLS_AES_128_GCM_SHA256"), the ALPN protocol chosen (not NUL-terminated; *len set),
 * the server name the client sent (server side) or asked for (client side), whether the
 * session was resumed, and the peer certificate's subject written into buf as a one-line
 * string (returns 1, or 0 when the peer sent no certificate). */
const char *cgnet__tls_version(const cgnet__tls *t);
const char *cgnet__tls_cipher(const cgnet__tls *t);
const uint8_t *cgnet__tls_alpn(const cgnet__tls *t, size_t *len);
const char *cgnet__tls_server_name(const cgnet__tls *t);
int cgnet__tls_resumed(const cgnet__tls *t);
int cgnet__tls_peer_subject(const cgnet__tls *t, char *buf, size_t cap);

/* A reference on a context, for an engine or client that keeps it (released with
 * cgnet_tls_ctx_free); whether it is a client's context. Any thread. */
void cgnet__tls_ctx_hold(cgnet_tls_ctx *ctx);
int cgnet__tls_ctx_is_client(const cgnet_tls_ctx *ctx);

/* The OpenSSL SSL object behind a session (an SSL *), for tests and the fuzz target that
 * need to act as a misbehaving peer. NULL without TLS. */
void *cgnet__tls_ssl(const cgnet__tls *t);

#endif /* CGNET_TLS_INTERNAL_H */
