/*
 * The echo load engine echoload and wsload share: conns spread over T threads, each with
 * its own epoll instance; every conn connected up front (bounded retries, at most
 * CONNECT_INFLIGHT pending per thread), then warm-up, the measured window and a bounded
 * drain. Modes: pingpong (one SIZE-byte message in flight per conn), pipeline (DEPTH) and
 * stream (open loop, at most `window` bytes unechoed per conn; SIZE is the counting unit
 * and latency is sampled at message boundaries). Every echoed byte is checked against
 * the conn's pattern stream (load_common.h).
 *
 * With no hooks a conn carries the plain byte stream (echoload, wsload --raw). A tool
 * that frames the stream (wsload) gives hooks: an upgrade after the TCP connect, its own
 * input parser and writer, output of its own still unsent, and a goodbye before close.
 * Its conn struct begins with struct echo_conn and is hooks->conn_size bytes.
 *
 * Threads: every worker owns its epoll, conns and counters outright; g_echo is written
 * by main before the workers start.
 */
#ifndef CGNET_BENCH_ECHO_CORE_H
#define CGNET_BENCH_ECHO_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "load_common.h"

#define CONNECT_TIMEOUT_NS (3000 * NS_PER_MS) /* one connect (and upgrade) attempt */

enum echo_mode { MODE_PINGPONG, MODE_PIPELINE, MODE_STREAM };

struct echo_config {
  struct load_opts o; /* -a -c -s -d -w -t */
  enum echo_mode mode;
  uint64_t depth; /* messages in flight per conn (stream: 0) */
  int json;
};

/* Written by main before the workers start (echo_opt, echo_opts_finish). */
extern struct echo_config g_echo;

/* C_HANDSHAKE: TCP connected, the tool's upgrade going on. */
enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DONE, C_FAILED };

struct echo_conn {
  int fd;
  enum conn_state state;
  uint32_t id;      /* global conn number */
  uint32_t shift;   /* pattern index of stream byte 0 */
  int pollout;      /* EPOLLOUT is registered */
  int attempts;     /* connect attempts made */
  int reported;     /* a byte mismatch of this conn was reported */
  uint64_t when;    /* connecting, handshake: attempt deadline; idle: retry time */
  uint64_t tx_off;  /* stream bytes written (or framed, by a tool's writer) */
  uint64_t tx_goal; /* stream bytes that should be written */
  uint64_t rx_off;  /* stream bytes echoed (and checked) */
  uint64_t msgs_sent, msgs_recv;
  uint64_t *ts; /* pingpong/pipeline: send time of message k at ts[k % depth] */
  struct stream_samples samples; /* stream mode */
};

struct echo_worker {
  int ep;
  int draining;         /* no new messages: only finish what is in flight */
  unsigned char *conns; /* nconns conns of hooks->conn_size bytes */
  size_t nconns;
  size_t open; /* conns in C_OPEN */
  uint8_t *rbuf;
  uint64_t rng;         /* the tool's (wsload: masking keys) */
  struct load_stats st; /* results, owned by the worker until it is joined */
};

/* What an upgrade step came to. */
enum hs_result { HS_PENDING, HS_DONE, HS_RETRY, HS_BAD };

/* A tool's part; every hook may be NULL (the plain byte stream). Worker threads. */
struct echo_hooks {
  size_t conn_size;     /* of the tool's conn, which begins with struct echo_conn */
  const char *protocol; /* named in the summary and JSON; NULL: not named */
  int announce;         /* print "PROG: N conns open, load starts" when the window is set */
  /* Set-up: a worker (0 or -1: out of memory); a conn (0 or -1); a conn's release. */
  int (*worker_init)(struct echo_worker *w, size_t t);
  int (*conn_init)(struct echo_conn *c);
  void (*conn_free)(struct echo_conn *c);
  /* TCP is connected: start the upgrade (state C_HANDSHAKE). Returns 0 or an errno. */
  int (*upgrade)(struct echo_worker *w, struct echo_conn *c);
  /* An epoll event on a conn in C_HANDSHAKE; on HS_RETRY *err says why. */
  enum hs_result (*handshake_event)(struct echo_worker *w, struct echo_conn *c,
                                    uint32_t events, int *err);
  /* The conn is ready for messages. */
  void (*opened)(struct echo_conn *c);
  /* n bytes read: check them (echo_verify) and advance rx_off. Returns 0 if the conn
   * was closed. */
  int (*input)(struct echo_worker *w, struct echo_conn *c, const uint8_t *buf, size_t n,
               uint64_t now);
  /* Write what the mode wants (tx_goal; stream mode: the window). Returns 0 if the
   * conn is gone. */
  int (*write)(struct echo_worker *w, struct echo_conn *c, uint64_t now);
  /* The tool still holds output of this conn. */
  int (*unsent)(const struct echo_conn *c);
  /* A drained conn is about to be closed. */
  void (*finish)(struct echo_worker *w, struct echo_conn *c);
};

/* For hooks: the engine's own steps. */
void echo_set_pollout(struct echo_worker *w, struct echo_conn *c, int on);
void echo_conn_close(struct echo_worker *w, struct echo_conn *c);
/* The server closed the conn (err 0) or it failed: reported, counted, closed. */
void echo_conn_lost(struct echo_worker *w, struct echo_conn *c, int err);
/* Check n echoed bytes against the pattern at the conn's rx offset. */
void echo_verify(struct echo_worker *w, struct echo_conn *c, const uint8_t *buf, size_t n);
/* Stream mode: stream bytes [before, tx_off) were sent (samples_sent). */
void echo_stream_sample(struct echo_conn *c, uint64_t before, uint64_t now);

/* The defaults: 100 conns of 64-byte messages, pingpong, depth 16 for pipeline. */
void echo_opts_init(void);
/* One getopt result: load_opt's (-a -c -s -d -w -t), -m MODE, -p DEPTH and --json
 * (getopt value 'J'). Returns 1 if taken, 0 if opt is none of these, -1 if bad. */
int echo_opt(int opt, const char *arg);
/* After the options: depth by mode ("-p needs -m pipeline"). Returns 0 or -1. The tool
 * then calls load_opts_finish(&g_echo.o, ...). */
int echo_opts_finish(void);

/* Run the load with the options in g_echo and print the results. Returns the exit
 * status: 0 if every byte came back intact and no conn was lost, else 1. */
int echo_run(const struct echo_hooks *hooks);

#endif
