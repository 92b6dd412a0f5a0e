/*
 * What every bench peer server (floor_echo, floor_http, echo_libuv, echo_libevent) shares:
 * the command line (--host H --port P --loops N), the listeners (one, or one SO_REUSEPORT
 * socket per loop with port 0 resolved by the first bind) and the stop signals. Header
 * only, so each peer stays one .c file. The includer defines BACKLOG and MAX_LOOPS first,
 * and PEER_TLS_OPTIONS if it can serve TLS: then --cert FILE and --key FILE are accepted
 * too (both or neither), and listed by --help, which is how bench/lib.sh tells whether a
 * peer was built with TLS.
 */
#ifndef CGNET_BENCH_PEER_COMMON_H
#define CGNET_BENCH_PEER_COMMON_H

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

#if !defined(BACKLOG) || !defined(MAX_LOOPS)
#error "define BACKLOG and MAX_LOOPS before including peer_common.h"
#endif

struct options {
  const char *host;
  int port;
  int loops;
  const char *cert; /* PEM files; NULL: plain TCP (always, without PEER_TLS_OPTIONS) */
  const char *key;
};

static void usage(const char *prog, int code) {
  fprintf(code ? stderr : stdout,
          "usage: %s [--host H] [--port P] [--loops N]\n"
          "  --host H   IPv4 address to listen on (default 127.0.0.1)\n"
          "  --port P   port, 0 = any free port (default 0)\n"
          "  --loops N  event loops, one thread each; N > 1 uses one SO_REUSEPORT\n"
          "             socket per loop (default 1)\n"
#ifdef PEER_TLS_OPTIONS
          "  --cert F   serve TLS with this certificate chain (PEM); needs --key\n"
          "  --key F    the certificate's private key (PEM); needs --cert\n"
#endif
          ,
          prog);
  exit(code);
}

static void parse_options(int argc, char **argv, struct options *o) {
  static const struct option longopts[] = {{"host", required_argument, NULL, 'H'},
                                           {"port", required_argument, NULL, 'p'},
                                           {"loops", required_argument, NULL, 'n'},
                                           {"help", no_argument, NULL, 'h'},
#ifdef PEER_TLS_OPTIONS
                                           {"cert", required_argument, NULL, 'c'},
                                           {"key", required_argument, NULL, 'k'},
#endif
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
#ifdef PEER_TLS_OPTIONS
    case 'c':
      o->cert = optarg;
      break;
    case 'k':
      o->key = optarg;
      break;
#endif
    default:
      usage(argv[0], 2);
    }
  }
  if (optind != argc || !o->cert != !o->key) usage(argv[0], 2);
}

/* A bound socket of `type` (SOCK_STREAM: listening too). */
static int listen_on(const struct sockaddr_in *sa, int reuseport, int type) {
  int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
      bind(fd, (const struct sockaddr *)sa, sizeof *sa) < 0 ||
      (type == SOCK_STREAM && listen(fd, BACKLOG) < 0)) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* Opens one socket of `type` per loop on host:port (TCP listeners, or UDP sockets; more
 * than one: SO_REUSEPORT). Port 0 is resolved by the first bind and reused by the
 * others. Returns the port, or -1 with a message printed. */
static int open_listeners(const struct options *o, int *fds, int type) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
  if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1) {
    fprintf(stderr, "bad IPv4 address: %s\n", o->host);
    return -1;
  }
  for (int i = 0; i < o->loops; i++) {
    fds[i] = listen_on(&sa, o->loops > 1, type);
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

#endif
