/*
 * echoload — a load generator and checker for TCP echo servers.
 *
 * Standalone (libc + pthreads + epoll, no cgnet), so it measures cgnet and its peers
 * alike. Connections are spread over T threads; each thread owns one epoll instance and
 * its connections outright. While the run goes, threads share nothing but the read-only
 * payload table and the stop flag; their counters are merged after pthread_join.
 *
 * The engine is echo_core.c (shared with wsload, which runs it with a WebSocket on every
 * conn); the histogram, pattern, argument helpers and the summary are load_common.c
 * (shared with tlsload and async_latency too). This file is the command line.
 *
 * Payload. Each connection sends one endless byte stream: byte i of conn c's stream is
 * g_pattern[(i + shift(c)) % PERIOD], where the table holds pseudo-random bytes and
 * PERIOD is prime. Sends are written straight out of the table (no copy, no allocation)
 * and every echoed chunk is memcmp'd against it, so all bytes are checked at memory
 * speed. A dropped, duplicated, reordered or foreign chunk does not line up with the
 * table unless its length is a multiple of the (prime) period.
 *
 * Modes. pingpong: one SIZE-byte message in flight per conn, the next sent when the
 * whole echo is back. pipeline: DEPTH messages in flight. stream: open loop, write as
 * fast as the socket takes (at most `window` bytes unechoed per conn) while reading the
 * echo; SIZE is only the unit messages are counted in and latency is sampled at.
 *
 * Timeline: connect every conn (bounded retries), then warm-up (-w), then the measured
 * window (-d), then a drain: no new messages, wait for what is in flight to come back
 * (bounded), close every conn, merge and print.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "echo_core.h"

static void usage(FILE *f) {
  fprintf(
      f, "usage: echoload -a HOST:PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-t THREADS]\n"
         "                [-m pingpong|pipeline|stream] [-p DEPTH] [-w WARMUP_S] [--json]\n"
         "  -a  server address: 127.0.0.1:9000, [::1]:9000, localhost:9000, tcp://...\n"
         "  -c  connections (default 100)\n"
         "  -s  message size in bytes, K/M suffixes allowed (default 64)\n"
         "  -d  measured seconds (default 5)\n"
         "  -t  threads, each with its own epoll (default: half the CPUs, <= conns)\n"
         "  -m  pingpong: 1 message in flight per conn (default); pipeline: DEPTH;\n"
         "      stream: write as fast as the socket takes, SIZE is the counting unit\n"
         "  -p  messages in flight per conn in pipeline mode (default 16)\n"
         "  -w  warm-up seconds before measuring (default 0)\n"
         "  --json  print a JSON object instead of the human summary\n"
         "The last line is always 'RESULT key=value ...'. Exit status: 0 if every byte\n"
         "came back intact and no conn was lost, 1 otherwise, 2 for bad arguments.\n");
}

static int parse_args(int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'J'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
  echo_opts_init();
  int opt;
  while ((opt = getopt_long(argc, argv, "a:c:s:d:t:m:p:w:h", longopts, NULL)) != -1) {
    int taken = echo_opt(opt, optarg);
    if (taken < 0) return -1;
    if (taken) continue;
    if (opt != 'h') return -1;
    usage(stdout);
    exit(0);
  }
  if (optind != argc || g_echo.o.target == NULL) return -1;
  if (echo_opts_finish() != 0) return -1;
  return load_opts_finish(&g_echo.o, 0, NULL);
}

int main(int argc, char **argv) {
  g_prog = "echoload";
  if (parse_args(argc, argv) != 0) {
    usage(stderr);
    return 2;
  }
  static const struct echo_hooks plain = {.conn_size = sizeof(struct echo_conn)};
  return echo_run(&plain);
}
