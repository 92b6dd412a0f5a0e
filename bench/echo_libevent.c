/*
 * echo_libevent — the libevent peer of cgnet's echo benchmarks, written the way a
 * libevent user would write an echo server: bufferevents, and a read callback that moves
 * the input evbuffer onto the output one (evbuffer_add_buffer relinks the chains, no
 * copy).
 *
 * usage: echo_libevent [--host H] [--port P] [--loops N]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
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

#define BUF_SIZE (64u * 1024u)
#define BACKLOG 4096
#define MAX_LOOPS 256

struct conn {
  struct bufferevent *bev;
  struct conn *prev, *next; /* the loop's live conns, so they can be freed at exit */
};

/* Owned by its thread once started; main only touches it before create / after join,
 * except for writing wakefd. */
struct loop {
  struct event_base *base;
  struct evconnlistener *listener;
  int wakefd; /* eventfd: main writes it to stop the loop */
  struct event *wake;
  pthread_t thread;
  struct conn conns; /* list sentinel */
};

/* ---- options, listeners, signals (the same in every bench peer) ---------------------- */

struct options {
  const char *host;
  int port;
  int loops;
};

static void usage(const char *prog, int code) {
  fprintf(code ? stderr : stdout,
          "usage: %s [--host H] [--port P] [--loops N]\n"
          "  --host H   IPv4 address to listen on (default 127.0.0.1)\n"
          "  --port P   TCP port, 0 = any free port (default 0)\n"
          "  --loops N  event loops, one thread each; N > 1 uses one SO_REUSEPORT\n"
          "             listener per loop (default 1)\n",
          prog);
  exit(code);
}

static void parse_options(int argc, char **argv, struct options *o) {
  static const struct option longopts[] = {{"host", required_argument, NULL, 'H'},
                                           {"port", required_argument, NULL, 'p'},
                                           {"loops", required_argument, NULL, 'n'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  *o = (struct options){.host = "127.0.0.1", .port = 0, .loops = 1};
  int ch;
  while ((ch = getopt_long(argc, argv, "H:p:n:h", longopts, NULL)) != -1) {
    char *end = NULL;
    long v;
    switch (ch) {
    case 'H':
      o->host = optarg;
      break;
    case 'p':
      v = strtol(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || v < 0 || v > 65535) usage(argv[0], 2);
      o->port = (int)v;
      break;
    case 'n':
      v = strtol(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || v < 1 || v > MAX_LOOPS) usage(argv[0], 2);
      o->loops = (int)v;
      break;
    case 'h':
      usage(argv[0], 0);
      break;
    default:
      usage(argv[0], 2);
    }
  }
  if (optind != argc) usage(argv[0], 2);
}

static int listen_on(const struct sockaddr_in *sa, int reuseport) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
      bind(fd, (const struct sockaddr *)sa, sizeof *sa) < 0 || listen(fd, BACKLOG) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* Opens n listeners on host:port (n > 1: SO_REUSEPORT). Port 0 is resolved by the first
 * bind and reused by the others. Returns the port, or -1 with a message printed. */
static int open_listeners(const struct options *o, int *fds) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
  if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1) {
    fprintf(stderr, "bad IPv4 address: %s\n", o->host);
    return -1;
  }
  for (int i = 0; i < o->loops; i++) {
    fds[i] = listen_on(&sa, o->loops > 1);
    if (fds[i] < 0) {
      fprintf(stderr, "listen on %s:%u: %s\n", o->host, ntohs(sa.sin_port),
              strerror(errno));
      while (i-- > 0)
        close(fds[i]);
      return -1;
    }
    if (i == 0) {
      socklen_t len = sizeof sa;
      getsockname(fds[0], (struct sockaddr *)&sa, &len);
    }
  }
  return ntohs(sa.sin_port);
}

/* Blocks SIGINT/SIGTERM in this thread and every thread it starts afterwards, so that
 * wait_for_stop() alone receives them; ignores SIGPIPE (EPIPE is handled as an error). */
static void block_stop_signals(sigset_t *set) {
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, set, NULL);
}

static void wait_for_stop(const sigset_t *set) {
  int sig;
  while (sigwait(set, &sig) != 0) {
  }
}

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

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg) {
  (void)l, (void)sa, (void)salen;
  struct loop *lp = arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct conn *c = malloc(sizeof *c);
  struct bufferevent *bev =
      c ? bufferevent_socket_new(lp->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
  if (!bev) {
    free(c);
    close(fd);
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

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o);
  sigset_t stop_set;
  block_stop_signals(&stop_set);

  int lfds[MAX_LOOPS];
  int port = open_listeners(&o, lfds);
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
  for (int i = 0; i < o.loops; i++) {
    uint64_t one = 1;
    if (write(loops[i]->wakefd, &one, sizeof one) < 0) perror("eventfd write");
  }
  for (int i = 0; i < o.loops; i++) {
    pthread_join(loops[i]->thread, NULL);
    loop_free(loops[i]);
  }
  libevent_global_shutdown();
  return 0;
}
