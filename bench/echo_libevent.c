/*
 * echo_libevent — the libevent peer of cgnet's echo benchmarks, written the way a
 * libevent user would write an echo server: bufferevents, and a read callback that moves
 * the input evbuffer onto the output one (evbuffer_add_buffer relinks the chains, no
 * copy).
 *
 * usage: echo_libevent [--host H] [--port P] [--loops N] [--cert FILE --key FILE]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
 *
 * TLS. With --cert and --key it serves TLS echo through libevent's bufferevent_openssl
 * (a socket-based one per conn, accepting), the peer of cgnet's tls:// echo. The
 * protocol settings are cgnet's server defaults: TLS 1.2 minimum, 1.3 maximum,
 * OpenSSL's default TLS 1.3 suites, cgnet's TLS 1.2 list (ECDHE with AES-GCM or
 * ChaCha20-Poly1305), no renegotiation, no session cache and no session tickets (as
 * cgnet --no-tickets), and SSL_MODE_RELEASE_BUFFERS on, as cgnet sets it, so an idle
 * conn holds no record buffers in either. One SSL_CTX
 * is shared by every loop (SSL_new on it is thread-safe). The options exist only when
 * the build found libevent_openssl (ECHO_LIBEVENT_TLS; --help lists them then); the
 * plain path is the same code either way.
 *
 * One event_base per thread, each with its own evconnlistener. main creates, binds and
 * listens the sockets itself (SO_REUSEADDR, plus SO_REUSEPORT when N > 1: what
 * LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT would set) because with port 0 the first
 * bind has to pick the port the others then share; evconnlistener_new() adopts each
 * socket (LEV_OPT_CLOSE_ON_FREE). No base is touched by two threads at once, so
 * libevent runs without locks (no evthread_use_pthreads).
 *
 * Two knobs, for a fair fight: a bufferevent reads and writes at most 16 KiB per call
 * by default; both limits are raised to 64 KiB, the read size of the other peers. And a
 * conn whose unsent output reaches 64 KiB stops reading until it is flushed, so memory
 * per conn stays bounded as in the floor.
 *
 * Threads: main sigwait()s for SIGINT or SIGTERM (blocked in every thread), then writes
 * each loop's eventfd; the loop's event on it calls event_base_loopbreak().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#ifdef ECHO_LIBEVENT_TLS
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#define PEER_TLS_OPTIONS /* peer_common.h: --cert and --key */
/* cgnet's default TLS 1.2 list (TLS 1.3 keeps OpenSSL's default suites, as cgnet does) */
#define TLS12_CIPHERS                                                                      \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                             \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                             \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#endif

#define BUF_SIZE (64u * 1024u)
#define BACKLOG 4096
#define MAX_LOOPS 256

#include "peer_common.h" /* options, listeners, stop signals */

struct conn {
  struct bufferevent *bev;
  struct conn *prev, *next; /* the loop's live conns, so they can be freed at exit */
};

/* Owned by its thread once started; main only touches it before create / after join,
 * except for writing wakefd. */
struct loop {
  struct event_base *base;
  struct ssl_ctx_st *tls; /* the shared SSL_CTX (--cert), NULL for plain TCP */
  struct evconnlistener *listener;
  int wakefd; /* eventfd: main writes it to stop the loop */
  struct event *wake;
  pthread_t thread;
  struct conn conns; /* list sentinel */
};

/* ---- the loop ------------------------------------------------------------------------ */

static void conn_close(struct conn *c) {
  bufferevent_free(c->bev); /* closes the fd (BEV_OPT_CLOSE_ON_FREE) */
  c->prev->next = c->next;
  c->next->prev = c->prev;
  free(c);
}

static void on_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  struct evbuffer *out = bufferevent_get_output(bev);
  evbuffer_add_buffer(out, bufferevent_get_input(bev));
  if (evbuffer_get_length(out) >= BUF_SIZE) bufferevent_disable(bev, EV_READ);
}

/* Called once the output has drained (the write low-watermark is 0). */
static void on_written(struct bufferevent *bev, void *arg) {
  (void)arg;
  if (!(bufferevent_get_enabled(bev) & EV_READ)) bufferevent_enable(bev, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) conn_close(arg);
}

#ifdef ECHO_LIBEVENT_TLS
/* A bufferevent that runs the server side of a TLS handshake on fd, then carries the
 * echo; it owns fd and the SSL (BEV_OPT_CLOSE_ON_FREE frees both). NULL on failure.
 * Past SSL_new only an allocation inside libevent can fail, and its error path may or
 * may not have taken fd and the SSL by then: they are left to it (a leak at worst, never
 * a double close). */
static struct bufferevent *tls_bufferevent(struct loop *lp, evutil_socket_t fd) {
  SSL *ssl = SSL_new(lp->tls);
  if (!ssl) {
    ERR_clear_error();
    close(fd);
    return NULL;
  }
  return bufferevent_openssl_socket_new(lp->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                        BEV_OPT_CLOSE_ON_FREE);
}
#endif

/* The conn's bufferevent over fd (TLS when the loop has a context); NULL on failure,
 * with fd closed (or left to libevent: see tls_bufferevent). */
static struct bufferevent *conn_bufferevent(struct loop *lp, evutil_socket_t fd) {
#ifdef ECHO_LIBEVENT_TLS
  if (lp->tls) return tls_bufferevent(lp, fd);
#endif
  struct bufferevent *bev = bufferevent_socket_new(lp->base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) close(fd);
  return bev;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg) {
  (void)l, (void)sa, (void)salen;
  struct loop *lp = arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct conn *c = malloc(sizeof *c);
  if (!c) {
    close(fd);
    return;
  }
  struct bufferevent *bev = conn_bufferevent(lp, fd);
  if (!bev) {
    free(c);
    return;
  }
  c->bev = bev;
  c->next = lp->conns.next;
  c->prev = &lp->conns;
  c->next->prev = c;
  lp->conns.next = c;
  bufferevent_set_max_single_read(bev, BUF_SIZE);
  bufferevent_set_max_single_write(bev, BUF_SIZE);
  bufferevent_setcb(bev, on_read, on_written, on_event, c);
  if (bufferevent_enable(bev, EV_READ) < 0) conn_close(c);
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  struct loop *lp = arg;
  event_base_loopbreak(lp->base);
}

static void *loop_run(void *arg) {
  struct loop *lp = arg;
  if (event_base_dispatch(lp->base) < 0) fprintf(stderr, "event_base_dispatch failed\n");
  for (struct conn *c = lp->conns.next, *next; c != &lp->conns; c = next) {
    next = c->next;
    conn_close(c);
  }
  return NULL;
}

static int loop_init(struct loop *lp, int lfd) {
  lp->conns.next = lp->conns.prev = &lp->conns;
  lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  lp->base = event_base_new();
  if (lp->wakefd < 0 || !lp->base) goto fail;
  /* backlog 0: the socket is already listening */
  lp->listener = evconnlistener_new(lp->base, on_accept, lp, LEV_OPT_CLOSE_ON_FREE, 0, lfd);
  lp->wake = event_new(lp->base, lp->wakefd, EV_READ | EV_PERSIST, on_wake, lp);
  if (!lp->listener || !lp->wake || event_add(lp->wake, NULL) < 0) goto fail;
  return 0;
fail:
  fprintf(stderr, "loop setup failed\n");
  return -1;
}

static void loop_free(struct loop *lp) {
  evconnlistener_free(lp->listener); /* closes the listening socket */
  event_free(lp->wake);
  event_base_free(lp->base);
  close(lp->wakefd);
  free(lp);
}

#ifdef ECHO_LIBEVENT_TLS
/* The server context for --cert and --key, set as the header comment says. NULL, with
 * a message naming the flag at fault, on failure. */
static SSL_CTX *tls_context(const char *cert, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  const char *flag = "", *what = "SSL_CTX_new";
  if (!ctx) goto fail;
  what = "TLS versions";
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
    goto fail;
  what = "TLS 1.2 ciphers";
  if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) goto fail;
  SSL_CTX_set_options(ctx,
                      SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0); /* TLS 1.3 would otherwise send 2 after each handshake */
  flag = "--cert ", what = cert;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) goto fail;
  flag = "--key ", what = key;
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1)
    goto fail;
  return ctx;
fail:;
  char reason[256] = "failed";
  unsigned long e = ERR_peek_error(); /* the first: the cause, not its consequences */
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  fprintf(stderr, "%s%s: %s\n", flag, what, reason);
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return NULL;
}
#endif

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o);
  sigset_t stop_set;
  block_stop_signals(&stop_set);

  struct ssl_ctx_st *tls = NULL; /* SSL_CTX, named so that a plain build needs no OpenSSL */
#ifdef ECHO_LIBEVENT_TLS
  if (o.cert && !(tls = tls_context(o.cert, o.key))) return 1;
#endif
  int lfds[MAX_LOOPS];
  int port = open_listeners(&o, lfds, SOCK_STREAM);
  if (port < 0) return 1;
  struct loop *loops[MAX_LOOPS];
  for (int i = 0; i < o.loops; i++) {
    loops[i] = calloc(1, sizeof *loops[i]);
    if (loops[i]) loops[i]->tls = tls;
    if (!loops[i] || loop_init(loops[i], lfds[i]) < 0 ||
        pthread_create(&loops[i]->thread, NULL, loop_run, loops[i]) != 0)
      return 1;
  }
  printf("listening on %s:%d\n", o.host, port);
  fflush(stdout);

  wait_for_stop(&stop_set);
  for (int i = 0; i < o.loops; i++) {
    uint64_t one = 1;
    if (write(loops[i]->wakefd, &one, sizeof one) < 0) perror("eventfd write");
  }
  for (int i = 0; i < o.loops; i++) {
    pthread_join(loops[i]->thread, NULL);
    loop_free(loops[i]); /* frees the conns' SSLs too */
  }
#ifdef ECHO_LIBEVENT_TLS
  SSL_CTX_free(tls);
#endif
  libevent_global_shutdown();
  return 0;
}
