/*
 * floor_udp — the floor of cgnet's UDP echo benchmark: the least a UDP echo server has
 * to do, written by hand with no framework, as floor_echo is for TCP.
 *
 * usage: floor_udp [--host H] [--port P] [--loops N]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
 *
 * One thread per loop, each with its own SO_REUSEPORT UDP socket on the same port (the
 * kernel spreads peers by hash) and its own epoll: on readiness, recvmmsg a batch of up
 * to 64 datagrams and sendmmsg each back to its source, until recvmmsg finds nothing.
 * A reply the socket cannot take at once is dropped, as UDP may (the run's loss count
 * shows it). Main waits for SIGINT/SIGTERM in sigwait() and stops the loops through
 * their eventfds.
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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define DGRAM_MAX 65536
#define BACKLOG 0 /* (no listen on a UDP socket) */
#define MAX_LOOPS 256

#include "peer_common.h" /* options, sockets, stop signals */

struct loop {
  int fd, epfd, wakefd;
  pthread_t thread;
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_storage from[BATCH];
  uint8_t bufs[BATCH][DGRAM_MAX];
};

/* Echo what the socket holds, a batch at a time, until it is empty. */
static void echo_batches(struct loop *lp) {
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      lp->iov[i] = (struct iovec){.iov_base = lp->bufs[i], .iov_len = DGRAM_MAX};
      lp->msgs[i].msg_hdr = (struct msghdr){.msg_name = &lp->from[i],
                                            .msg_namelen = sizeof lp->from[i],
                                            .msg_iov = &lp->iov[i],
                                            .msg_iovlen = 1};
    }
    int n = recvmmsg(lp->fd, lp->msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return; /* EAGAIN: empty */
    for (int i = 0; i < n; i++)
      lp->iov[i].iov_len = lp->msgs[i].msg_len; /* the reply is the datagram itself */
    int sent = 0;
    while (sent < n) {
      int k = sendmmsg(lp->fd, lp->msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT);
      if (k <= 0) break; /* the socket is full: the rest is dropped */
      sent += k;
    }
  }
}

static void *loop_run(void *arg) {
  struct loop *lp = arg;
  struct epoll_event evs[4];
  for (;;) {
    int n = epoll_wait(lp->epfd, evs, 4, -1);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      if (evs[i].data.fd == lp->wakefd) return NULL;
      echo_batches(lp);
    }
  }
  return NULL;
}

static int loop_init(struct loop *lp, int fd) {
  lp->fd = fd;
  lp->epfd = epoll_create1(EPOLL_CLOEXEC);
  lp->wakefd = eventfd(0, EFD_CLOEXEC);
  struct epoll_event sev = {.events = EPOLLIN, .data.fd = fd};
  struct epoll_event wev = {.events = EPOLLIN, .data.fd = lp->wakefd};
  if (lp->epfd < 0 || lp->wakefd < 0 || epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &sev) < 0 ||
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

  int fds[MAX_LOOPS];
  int port = open_listeners(&o, fds, SOCK_DGRAM);
  if (port < 0) return 1;
  struct loop *lps[MAX_LOOPS];
  for (int i = 0; i < o.loops; i++) {
    lps[i] = calloc(1, sizeof *lps[i]);
    if (!lps[i] || loop_init(lps[i], fds[i]) < 0 ||
        pthread_create(&lps[i]->thread, NULL, loop_run, lps[i]) != 0)
      return 1;
  }
  printf("listening on %s:%d\n", o.host, port);
  fflush(stdout);

  wait_for_stop(&stop_set);
  for (int i = 0; i < o.loops; i++) {
    uint64_t one = 1;
    if (write(lps[i]->wakefd, &one, sizeof one) < 0) perror("eventfd write");
  }
  for (int i = 0; i < o.loops; i++) {
    pthread_join(lps[i]->thread, NULL);
    close(lps[i]->fd);
    close(lps[i]->epfd);
    close(lps[i]->wakefd);
    free(lps[i]);
  }
  return 0;
}
