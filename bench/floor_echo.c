/*
 * floor_echo — the floor of cgnet's echo benchmarks: the least a correct epoll echo
 * server has to do, written by hand with no framework. cgnet's overhead is measured
 * against this.
 *
 * usage: floor_echo [--host H] [--port P] [--loops N]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
 *
 * One event loop per thread. With one loop there is a single listener; with N > 1 every
 * loop owns its own SO_REUSEPORT listener on the same port, so the kernel spreads
 * connections by hash and the loops share nothing at all.
 *
 * Each loop: level-triggered epoll, accept4() until EAGAIN, one read() per readiness
 * event into a per-thread 64 KiB buffer and one write() of those bytes straight back.
 * A partial write parks the remainder in a per-conn buffer and swaps the conn's interest
 * from EPOLLIN to EPOLLOUT: nothing more is read from that conn until the remainder is
 * out, so memory stays bounded (one 64 KiB buffer per conn at most) and a client that
 * does not read its echo only slows itself down.
 *
 * Threads: main opens the listeners, starts the loops and waits for SIGINT/SIGTERM in
 * sigwait() (the signals are blocked in every thread); it then wakes each loop through
 * its eventfd, joins them and exits 0.
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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64u * 1024u)
#define BACKLOG 4096
#define MAX_EVENTS 256
#define MAX_LOOPS 256

#include "peer_common.h" /* options, listeners, stop signals */

struct conn {
  int fd;
  char *pend;               /* NULL until the first partial write, then BUF_SIZE bytes */
  size_t pend_off;          /* pend[pend_off, pend_len) still has to be written */
  size_t pend_len;          /* 0 <=> the conn is reading (EPOLLIN), else writing */
  struct conn *prev, *next; /* the loop's live conns, so they can be freed at exit */
};

/* Owned by its thread once started; main only touches it before create / after join. */
struct loop {
  int epfd;
  int lfd;    /* this loop's listener (main closes it) */
  int wakefd; /* eventfd: main writes it to stop the loop */
  pthread_t thread;
  struct conn conns; /* list sentinel */
  char buf[BUF_SIZE];
};

/* ---- the loop ------------------------------------------------------------------------ */

static void conn_close(struct conn *c) {
  close(c->fd); /* also removes it from the epoll set: the fd is never dup'ed */
  c->prev->next = c->next;
  c->next->prev = c->prev;
  free(c->pend);
  free(c);
}

static int conn_watch(struct loop *lp, struct conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  return epoll_ctl(lp->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_accept(struct loop *lp) {
  for (;;) {
    int fd = accept4(lp->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return; /* EAGAIN: backlog empty. EMFILE & co: retried on the next wakeup. */
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (!c || epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      free(c);
      close(fd);
      continue;
    }
    c->fd = fd;
    c->next = lp->conns.next;
    c->prev = &lp->conns;
    c->next->prev = c;
    lp->conns.next = c;
  }
}

static int would_block(void) {
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static void on_readable(struct loop *lp, struct conn *c) {
  ssize_t n = read(c->fd, lp->buf, BUF_SIZE);
  if (n <= 0) {
    if (n == 0 || !would_block()) conn_close(c); /* EOF or error */
    return;
  }
  ssize_t w = write(c->fd, lp->buf, (size_t)n);
  if (w == n) return;
  if (w < 0) {
    if (!would_block()) {
      conn_close(c);
      return;
    }
    w = 0;
  }
  /* Partial write: park the rest and stop reading until it is out. */
  if (!c->pend && !(c->pend = malloc(BUF_SIZE))) {
    conn_close(c);
    return;
  }
  c->pend_off = 0;
  c->pend_len = (size_t)(n - w);
  memcpy(c->pend, lp->buf + w, c->pend_len);
  if (conn_watch(lp, c, EPOLLOUT) < 0) conn_close(c);
}

static void on_writable(struct loop *lp, struct conn *c) {
  ssize_t w = write(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off);
  if (w < 0) {
    if (!would_block()) conn_close(c);
    return;
  }
  c->pend_off += (size_t)w;
  if (c->pend_off < c->pend_len) return;
  c->pend_off = c->pend_len = 0;
  if (conn_watch(lp, c, EPOLLIN) < 0) conn_close(c);
}

/* Runs on the loop's own thread until main writes its eventfd. */
static void *loop_run(void *arg) {
  struct loop *lp = arg;
  struct epoll_event evs[MAX_EVENTS];
  int stop = 0;
  while (!stop) {
    int n = epoll_wait(lp->epfd, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) {
      perror("epoll_wait");
      break;
    }
    for (int i = 0; i < n; i++) {
      void *p = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      if (p == &lp->wakefd) {
        stop = 1;
      } else if (p == &lp->lfd) {
        on_accept(lp);
      } else if (e & (EPOLLERR | EPOLLHUP)) {
        conn_close(p); /* reset, or both directions shut: nothing can be delivered */
      } else if (((struct conn *)p)->pend_len) {
        on_writable(lp, p);
      } else {
        on_readable(lp, p);
      }
    }
  }
  for (struct conn *c = lp->conns.next, *next; c != &lp->conns; c = next) {
    next = c->next;
    conn_close(c);
  }
  return NULL;
}

static int loop_init(struct loop *lp, int lfd) {
  lp->lfd = lfd;
  lp->conns.next = lp->conns.prev = &lp->conns;
  lp->epfd = epoll_create1(EPOLL_CLOEXEC);
  lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &lp->lfd};
  struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &lp->wakefd};
  if (lp->epfd < 0 || lp->wakefd < 0 || epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lfd, &lev) < 0 ||
      epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->wakefd, &wev) < 0) {
    perror("loop setup");
    return -1;
  }
  return 0;
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
  for (int i = 0; i < o.loops; i++) {
    uint64_t one = 1;
    if (write(loops[i]->wakefd, &one, sizeof one) < 0) perror("eventfd write");
  }
  for (int i = 0; i < o.loops; i++) {
    pthread_join(loops[i]->thread, NULL);
    close(loops[i]->epfd);
    close(loops[i]->wakefd);
    close(lfds[i]);
    free(loops[i]);
  }
  return 0;
}
