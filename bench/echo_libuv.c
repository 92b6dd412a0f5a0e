/*
 * echo_libuv — the libuv peer of cgnet's echo benchmarks, written the way a libuv user
 * would write a fast echo server.
 *
 * usage: echo_libuv [--host H] [--port P] [--loops N]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
 *
 * One uv_loop_t per thread, each with its own uv_tcp_t listener. libuv 1.44 has no
 * UV_TCP_REUSEPORT, so main creates, binds and listens the sockets itself (SO_REUSEPORT
 * when N > 1, one per loop, as in the other peers) and each loop uv_tcp_open()s its own.
 *
 * Reads land in one 64 KiB buffer per loop, handed out by alloc_cb: a loop runs on one
 * thread and libuv calls read_cb before it asks for the next buffer, so the buffer is
 * free again as soon as read_cb returns. read_cb echoes with uv_try_write(), which writes
 * straight from that buffer; only what the socket does not take is copied into a
 * uv_write() request. While such a write is queued the conn stops reading (uv_read_stop,
 * restarted by the write callback), so memory per conn stays bounded as in the floor.
 *
 * Threads: main sets every loop up, starts one thread per loop and sigwait()s for SIGINT
 * or SIGTERM (blocked in every thread); it then uv_async_send()s each loop, whose async
 * callback closes every handle so uv_run() returns, and joins the threads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define BUF_SIZE (64u * 1024u)
#define BACKLOG 4096
#define MAX_LOOPS 256

#include "peer_common.h" /* options, listeners, stop signals */

/* Owned by its thread once started; main only touches it before create / after join,
 * except for uv_async_send(&stop), which libuv allows from any thread. */
struct loop {
  uv_loop_t uv;    /* uv.data points back here */
  uv_tcp_t server; /* data == NULL: embedded, not freed on close */
  uv_async_t stop; /* data == NULL */
  pthread_t thread;
  char buf[BUF_SIZE];
};

/* The part of one echo the socket did not take. */
struct write_req {
  uv_write_t req;
  uv_buf_t buf;
  char data[];
};

/* ---- the loop ------------------------------------------------------------------------ */

/* Conns are malloc'ed uv_tcp_t whose data points to themselves; see close_any(). */
static void on_conn_closed(uv_handle_t *h) {
  free(h);
}

static void conn_close(uv_stream_t *s) {
  if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  struct loop *lp = h->loop->data;
  *buf = uv_buf_init(lp->buf, BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
  uv_stream_t *s = req->handle;
  free(req); /* req is the first member of its write_req */
  if (uv_is_closing((uv_handle_t *)s)) return; /* status is UV_ECANCELED */
  if (status < 0 || uv_read_start(s, on_alloc, on_read) < 0) conn_close(s);
}

static void echo(uv_stream_t *s, char *base, size_t len) {
  uv_buf_t b = uv_buf_init(base, (unsigned)len);
  int w = uv_try_write(s, &b, 1);
  if (w == (int)len) return;
  if (w == UV_EAGAIN) {
    w = 0;
  } else if (w < 0) {
    conn_close(s);
    return;
  }
  size_t rest = len - (size_t)w;
  struct write_req *wr = malloc(sizeof *wr + rest);
  if (!wr) {
    conn_close(s);
    return;
  }
  memcpy(wr->data, base + w, rest);
  wr->buf = uv_buf_init(wr->data, (unsigned)rest);
  if (uv_write(&wr->req, s, &wr->buf, 1, on_written) < 0) {
    free(wr);
    conn_close(s);
    return;
  }
  uv_read_stop(s);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  if (nread > 0)
    echo(s, buf->base, (size_t)nread);
  else if (nread < 0)
    conn_close(s); /* UV_EOF or an error; 0 means EAGAIN */
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  uv_tcp_t *c = malloc(sizeof *c);
  if (!c) return;
  uv_tcp_init(server->loop, c);
  c->data = c;
  if (uv_accept(server, (uv_stream_t *)c) < 0) {
    uv_close((uv_handle_t *)c, on_conn_closed);
    return;
  }
  uv_tcp_nodelay(c, 1);
  if (uv_read_start((uv_stream_t *)c, on_alloc, on_read) < 0) conn_close((uv_stream_t *)c);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, h->data ? on_conn_closed : NULL);
}

/* Runs on the loop's thread: closing every handle lets uv_run() return. */
static void on_stop(uv_async_t *a) {
  uv_walk(a->loop, close_any, NULL);
}

static void *loop_run(void *arg) {
  struct loop *lp = arg;
  uv_run(&lp->uv, UV_RUN_DEFAULT);
  if (uv_loop_close(&lp->uv) != 0) fprintf(stderr, "uv_loop_close: handles left open\n");
  return NULL;
}

static int loop_init(struct loop *lp, int lfd) {
  int err;
  if ((err = uv_loop_init(&lp->uv)) < 0) goto fail;
  lp->uv.data = lp;
  uv_tcp_init(&lp->uv, &lp->server);
  uv_async_init(&lp->uv, &lp->stop, on_stop);
  lp->server.data = lp->stop.data = NULL;
  if ((err = uv_tcp_open(&lp->server, lfd)) < 0 ||
      (err = uv_listen((uv_stream_t *)&lp->server, BACKLOG, on_connection)) < 0)
    goto fail;
  return 0;
fail:
  fprintf(stderr, "loop setup: %s\n", uv_strerror(err));
  return -1;
}

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o);
  sigset_t stop_set;
  block_stop_signals(&stop_set);

  int lfds[MAX_LOOPS];
  int port = open_listeners(&o, lfds, SOCK_STREAM);
  if (port < 0) return 1;
  struct loop *loops[MAX_LOOPS];
  for (int i = 0; i < o.loops; i++) {
    loops[i] = calloc(1, sizeof *loops[i]);
    if (!loops[i] || loop_init(loops[i], lfds[i]) < 0 ||
        pthread_create(&loops[i]->thread, NULL, loop_run, loops[i]) != 0)
      return 1;
  }
  printf("listening on %s:%d\n", o.host, port);
  fflush(stdout);

  wait_for_stop(&stop_set);
  for (int i = 0; i < o.loops; i++)
    uv_async_send(&loops[i]->stop);
  for (int i = 0; i < o.loops; i++) {
    pthread_join(loops[i]->thread, NULL); /* the listener fd closed with its handle */
    free(loops[i]);
  }
  uv_library_shutdown();
  return 0;
}
