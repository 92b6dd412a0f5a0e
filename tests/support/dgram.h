/*
 * Test helpers for UDP and Unix domain sockets: temporary directories for socket files,
 * Unix clients, loopback UDP clients, and a UDP echo driver that checks every reply.
 * Any thread.
 */
#ifndef CGNET_TEST_DGRAM_H
#define CGNET_TEST_DGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A fresh directory /tmp/cgnet-XXXXXX in buf (cap >= 32). 0 or -errno. */
int tu_tmpdir(char *buf, size_t cap);
/* Remove every entry of dir, then dir itself (one level: our socket files). */
void tu_rmdir(const char *dir);
/* Connect a blocking Unix stream socket to path ("@name": abstract). fd or -errno. */
int tu_connect_unix(const char *path);
/* A bound (loopback, ephemeral port) non-blocking UDP socket, connected to
 * loopback:port when port > 0. fd or -errno. */
int tu_udp_socket(int family, int port);
/* Loopback address of `family` with `port`. */
socklen_t tu_loopback_addr(int family, int port, struct sockaddr_storage *ss);
/* Receive one datagram within timeout_ms: its length, -ETIMEDOUT or -errno. */
int tu_udp_recv(int fd, void *buf, size_t cap, int timeout_ms);

/* Stats of a tu_udp_echo run. */
typedef struct tu_udp_echo_result {
  int replies; /* replies that matched a datagram we sent */
  int bad;     /* replies that did not (wrong bytes, duplicate, unknown) */
  int lost;    /* datagrams never answered */
  uint64_t elapsed_ms;
} tu_udp_echo_result;

/* nclients UDP clients each send `count` datagrams of `size` bytes (>= 8) to
 * loopback:port, at most `window` unanswered at a time; every reply must be one of the
 * client's datagrams, byte for byte, exactly once. 0 when every datagram came back
 * intact, else -ETIMEDOUT or -EPROTO (see *res). */
int tu_udp_echo(int family, int port, int nclients, int count, size_t size, int window,
                int timeout_ms, tu_udp_echo_result *res);

#endif
