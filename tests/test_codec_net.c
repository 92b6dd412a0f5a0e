/*
 * Codecs through a real server on 127.0.0.1: echo with each built-in codec x {1 loop,
 * 2 loops} (pipelined batches of frames from 64 B to 1 MiB, every reply compared);
 * replies to a batch of frames leaving in one send; oversized and malformed frames
 * closing the conn with the right reason and bounded buffering; cgnet_conn_set_codec
 * from on_open and mid-stream; on_traffic without on_frame; write_frame without a codec
 * and from another thread; pause/resume with frames still buffered; the raw read API
 * inside on_frame; and examples/codec_echo.
 *
 * cgnet-test-timeout: 300
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/proc.h"
#include "support/support.h"

#define MiB (1024 * 1024)

/* ---- shared server side -------------------------------------------------------------- */

static struct {
  atomic_int frames;           /* on_frame calls */
  atomic_int prewrites;        /* on_pre_write calls */
  atomic_int frames_at_write1; /* frames seen when the first pre_write ran */
  atomic_size_t in_at_close;   /* inbound bytes buffered when on_close ran (max) */
  const cgnet_codec *second;   /* test_switch: the codec to switch to */
  cgnet_conn *ref;             /* test_async_write_frame: a reference */
  atomic_int timer_frames;     /* test_pause: frames seen when the resume timer fired */
  atomic_int unwritable;       /* on_writable_changed(0) calls */
} S;

static void reset_state(void) {
  atomic_store(&S.frames, 0);
  atomic_store(&S.prewrites, 0);
  atomic_store(&S.frames_at_write1, -1);
  atomic_store(&S.in_at_close, 0);
  atomic_store(&S.timer_frames, -1);
  atomic_store(&S.unwritable, 0);
  S.second = NULL;
  __atomic_store_n(&S.ref, NULL, __ATOMIC_RELEASE);
}

static cgnet_action on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  return CGNET_NONE;
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  size_t in = cgnet_conn_inbound_buffered(c);
  if (in > atomic_load(&S.in_at_close)) atomic_store(&S.in_at_close, in);
  tu_tracker_close(c, reason);
  return CGNET_NONE;
}

static cgnet_action echo_frame(cgnet_conn *c, const uint8_t *frame, size_t len) {
  atomic_fetch_add(&S.frames, 1);
  int rc = cgnet_conn_write_frame(c, frame, len);
  TU_CHECK_EQ(rc, 0);
  return rc ? CGNET_CLOSE : CGNET_NONE;
}

static cgnet_handler echo_handler(tu_tracker *t) {
  return (cgnet_handler){
      .ud = t, .on_open = on_open, .on_close = on_close, .on_frame = echo_frame};
}

static void start_opts(tu_server *srv, const cgnet_handler *h, const cgnet_options *o) {
  reset_state();
  assert_rc(tu_server_start(srv, h, o), 0);
}

static void start(tu_server *srv, const cgnet_handler *h, const cgnet_codec *codec,
                  int loops) {
  cgnet_options o = {.num_loops = loops, .codec = codec};
  start_opts(srv, h, &o);
}

static void finish(tu_server *srv, tu_tracker *t) {
  assert_rc(tu_server_stop(srv, 1000), 0);
  assert_true(tu_tracker_all_closed_once(t));
  assert_no_check_failures();
  tu_tracker_free(t);
}

static int connect_port(int port) {
  int fd = tu_connect4(port);
  assert_true(fd >= 0);
  return fd;
}

/* Encode frame with c, append to out. */
static void put_frame(const cgnet_codec *c, const uint8_t *f, size_t len, uint8_t *out,
                      size_t *olen) {
  cgnet_encoded e;
  assert_rc(cgnet_codec_encode(c, f, len, &e), 0);
  for (int i = 0; i < e.iovcnt; i++) {
    if (e.iov[i].iov_len) memcpy(out + *olen, e.iov[i].iov_base, e.iov[i].iov_len);
    *olen += e.iov[i].iov_len;
  }
}

static void expect_bytes(int fd, const void *want, size_t n) {
  uint8_t *buf = malloc(n ? n : 1);
  assert_non_null(buf);
  size_t got = 0;
  int rc = tu_recv_exact(fd, buf, n, TU_TIMEOUT_MS, &got);
  if (rc != 0) fail_msg("rc %d after %zu of %zu bytes", rc, got, n);
  size_t d = tu_first_diff(buf, want, n);
  if (d != SIZE_MAX) fail_msg("reply differs at byte %zu of %zu", d, n);
  free(buf);
}

/* One conn to a 1-loop server with codec `name` (see make_codec) whose handler is the
 * echo handler changed by `tweak`: send, expect `want` back, stop the server. The
 * caller then asserts on S. */
static cgnet_codec *make_codec(const char *name);
static void exchange(const char *name, void (*tweak)(cgnet_handler *h), const void *send,
                     size_t n, const void *want, size_t wn) {
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec = make_codec(name);
  cgnet_handler h = echo_handler(t);
  if (tweak) tweak(&h);
  tu_server srv;
  start(&srv, &h, codec, 1);
  int fd = connect_port(srv.port);
  assert_rc(tu_send_all(fd, send, n, TU_TIMEOUT_MS), 0); /* one send: one read */
  expect_bytes(fd, want, wn);
  close(fd);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

/* ---- echo: each codec x loops -------------------------------------------------------- */

typedef struct echo_cfg {
  const char *name;
  int loops;
  int et;      /* edge-triggered */
  size_t high; /* write_high_watermark (0: default) */
} echo_cfg;

/* Backpressure: frames left in the view when the replies crossed the high watermark
 * wait for the output to drain (test_echo counts these). */
static void count_unwritable(cgnet_conn *c, int writable) {
  (void)c;
  if (!writable) atomic_fetch_add(&S.unwritable, 1);
}

static cgnet_codec *make_codec(const char *name) {
  cgnet_codec *c = NULL;
  size_t max = MiB + 64;
  if (strcmp(name, "line") == 0) {
    cgnet_line_codec_options o = {.max_frame_length = max};
    assert_rc(cgnet_codec_line(&o, &c), 0);
  } else if (strcmp(name, "delim") == 0) {
    cgnet_delimiter_codec_options o = {.delimiter = (const uint8_t *)"\r\n--\r\n",
                                       .delimiter_len = 6,
                                       .max_frame_length = max};
    assert_rc(cgnet_codec_delimiter(&o, &c), 0);
  } else if (strcmp(name, "fixed") == 0) {
    assert_rc(cgnet_codec_fixed(4096, &c), 0);
  } else {
    cgnet_length_field_codec_options o = {.length_field_length = 4,
                                          .initial_bytes_to_strip = CGNET_STRIP_HEADER,
                                          .max_frame_length = max};
    assert_rc(cgnet_codec_length_field(&o, &c), 0);
  }
  return c;
}

/* A client's stream: frames of growing sizes, pattern bytes with the codec's special
 * bytes replaced. Returns the length; *nframes gets the count. */
static size_t build_stream(const cgnet_codec *c, const char *name, uint64_t seed,
                           uint8_t *out, int *nframes) {
  static const size_t sizes[] = {64, 100, 1000, 4096, 16384, 65536, 300000, MiB};
  size_t nsizes = TU_TSAN ? 6 : 8;
  size_t olen = 0, off = 0;
  uint8_t *f = malloc(MiB);
  assert_non_null(f);
  *nframes = 0;
  for (int round = 0; round < 3; round++)
    for (size_t i = 0; i < nsizes; i++) {
      size_t len = strcmp(name, "fixed") == 0 ? 4096 : sizes[i];
      if (round > 0 && len > 65536) continue; /* one big frame of each per client */
      tu_pattern_fill(f, len, seed, off);
      off += len;
      for (size_t k = 0; k < len; k++)
        if (f[k] == '\n' || f[k] == '\r') f[k] = 'x';
      put_frame(c, f, len, out, &olen);
      (*nframes)++;
    }
  free(f);
  return olen;
}

static void test_echo(void **state) {
  const echo_cfg *cfg = *state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec = make_codec(cfg->name);
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  h.on_writable_changed = count_unwritable;
  cgnet_options o = {.num_loops = cfg->loops,
                     .codec = codec,
                     .edge_triggered = cfg->et,
                     .write_high_watermark = cfg->high};
  start_opts(&srv, &h, &o);
  enum { NCL = 3 };
  tu_echo_client cl[NCL];
  uint8_t *tx[NCL], *rx[NCL];
  int frames = 0;
  for (int i = 0; i < NCL; i++) {
    tx[i] = malloc(3 * MiB);
    int n;
    size_t len = build_stream(codec, cfg->name, (uint64_t)i + 1, tx[i], &n);
    frames += n;
    rx[i] = malloc(len);
    assert_true(tx[i] && rx[i]);
    cl[i] = (tu_echo_client){.fd = connect_port(srv.port),
                             .tx = tx[i],
                             .tx_len = len,
                             .rx = rx[i],
                             .rx_len = len};
  }
  assert_rc(tu_echo_drive(cl, NCL, TU_TIMEOUT_MS), 0);
  for (int i = 0; i < NCL; i++) {
    size_t d = tu_first_diff(tx[i], rx[i], cl[i].tx_len);
    if (d != SIZE_MAX) fail_msg("client %d: reply differs at byte %zu", i, d);
    close(cl[i].fd);
    free(tx[i]);
    free(rx[i]);
  }
  assert_int_equal(atomic_load(&S.frames), frames);
  if (cfg->high) assert_true(atomic_load(&S.unwritable) > 0); /* frames were held */
  assert_true(tu_wait_conns(srv.eng, 0, TU_TIMEOUT_MS));
  if (tu_tracker_count_reason(t, CGNET_EOF) != NCL) {
    for (int i = 0; i < atomic_load(&t->nslots); i++)
      fprintf(stderr, "conn %d closed: %s\n", i,
              cgnet_strerror(atomic_load(&t->slots[i].reason)));
    fail_msg("not every conn closed with CGNET_EOF");
  }
  finish(&srv, t);
  cgnet_codec_free(codec);
}

/* ---- replies to one read's frames leave in one send ---------------------------------- */

static void count_prewrite(cgnet_conn *c) {
  (void)c;
  if (atomic_fetch_add(&S.prewrites, 1) == 0)
    atomic_store(&S.frames_at_write1, atomic_load(&S.frames));
}

static void with_prewrite_count(cgnet_handler *h) {
  h->on_pre_write = count_prewrite;
}

static void test_one_send(void **state) {
  (void)state;
  char batch[100 * 8];
  size_t n = 0;
  for (int i = 0; i < 100; i++)
    n += (size_t)snprintf(batch + n, sizeof batch - n, "f%04d\n", i);
  exchange("line", with_prewrite_count, batch, n, batch, n);
  assert_int_equal(atomic_load(&S.frames), 100);
  assert_int_equal(atomic_load(&S.frames_at_write1), 100); /* all decoded first */
  assert_int_equal(atomic_load(&S.prewrites), 1);          /* then one write */
}

/* ---- oversized and malformed frames -------------------------------------------------- */

/* Send `len` bytes (errors once the server closes are expected), then the server must
 * close with `reason`. */
static void expect_closed_with(tu_server *srv, tu_tracker *t, const uint8_t *data,
                               size_t len, int reason) {
  int fd = connect_port(srv->port);
  (void)tu_send_all(fd, data, len, TU_TIMEOUT_MS);
  int rc = tu_expect_eof(fd, TU_TIMEOUT_MS, NULL);
  assert_true(rc == 0 || rc == 1 || rc == -ECONNRESET);
  close(fd);
  assert_true(tu_wait_conns(srv->eng, 0, TU_TIMEOUT_MS));
  assert_int_equal(tu_tracker_count_reason(t, reason), 1);
}

static void test_lenfield_1gib(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec = make_codec("lenfield");
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  start(&srv, &h, codec, 1);
  static const uint8_t header[] = {0x40, 0, 0, 0, 'x', 'y'}; /* announces 1 GiB */
  long rss0 = tu_rss_kb();
  expect_closed_with(&srv, t, header, sizeof header, CGNET_EFRAMETOOLARGE);
  assert_true(atomic_load(&S.in_at_close) <= sizeof header); /* nothing reserved */
  assert_true(tu_rss_kb() - rss0 < 4096);
  assert_int_equal(atomic_load(&S.frames), 0);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

static void test_line_10mib(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec;
  cgnet_line_codec_options lo = {0}; /* max 1 MiB */
  assert_rc(cgnet_codec_line(&lo, &codec), 0);
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  start(&srv, &h, codec, 1);
  size_t n = 10 * MiB;
  uint8_t *big = malloc(n);
  assert_non_null(big);
  memset(big, 'a', n); /* touched before the baseline */
  long rss0 = tu_rss_kb();
  expect_closed_with(&srv, t, big, n, CGNET_EFRAMETOOLARGE);
  size_t buffered = atomic_load(&S.in_at_close);
  assert_true(buffered > MiB);                  /* it did wait for a newline... */
  assert_true(buffered <= MiB + 2 * 65536 + 2); /* ...but not for long */
  long grew = tu_rss_kb() - rss0;
  if (grew > 6 * 1024) fail_msg("RSS grew by %ld KiB", grew);
  free(big);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

static void test_delim_too_large(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec;
  cgnet_delimiter_codec_options o = {
      .delimiter = (const uint8_t *)"END", .delimiter_len = 3, .max_frame_length = 1000};
  assert_rc(cgnet_codec_delimiter(&o, &codec), 0);
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  start(&srv, &h, codec, 1);
  uint8_t data[1200];
  memset(data, 'q', sizeof data);
  memcpy(data, "okEND", 5); /* one good frame first */
  int fd = connect_port(srv.port);
  assert_rc(tu_send_all(fd, data, sizeof data, TU_TIMEOUT_MS), 0);
  expect_bytes(fd, "okEND", 5);
  assert_true(tu_expect_eof(fd, TU_TIMEOUT_MS, NULL) != -ETIMEDOUT);
  close(fd);
  assert_true(tu_wait_conns(srv.eng, 0, TU_TIMEOUT_MS));
  assert_int_equal(tu_tracker_count_reason(t, CGNET_EFRAMETOOLARGE), 1);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

static void test_lenfield_malformed(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec;
  cgnet_length_field_codec_options o = {.length_field_length = 2, .length_adjustment = -10};
  assert_rc(cgnet_codec_length_field(&o, &codec), 0);
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  start(&srv, &h, codec, 2);
  static const uint8_t bad[] = {0, 3, 'a', 'b', 'c'}; /* 3 - 10 < 0 */
  expect_closed_with(&srv, t, bad, sizeof bad, CGNET_ECODEC);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

/* A custom decoder that never finds a frame: cgnet enforces its maximum. */
static int never_decode(void *st, const uint8_t *in, size_t len, cgnet_frame *out) {
  (void)st, (void)in, (void)len, (void)out;
  return 0;
}
static int never_encode(void *st, const uint8_t *f, size_t len, cgnet_encoded *out) {
  (void)st, (void)f, (void)len, (void)out;
  return CGNET_EUNSUPPORTED;
}
/* A custom decoder that fails on 'X'. */
static int x_decode(void *st, const uint8_t *in, size_t len, cgnet_frame *out) {
  (void)st, (void)out;
  return memchr(in, 'X', len) ? CGNET_EPROTONOSUPPORT : 0;
}

static void test_custom_limits(void **state) {
  (void)state;
  cgnet_codec_ops ops = {.decode = never_decode, .encode = never_encode};
  cgnet_codec *codec;
  assert_rc(cgnet_codec_new(&ops, NULL, 100000, &codec), 0);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = echo_handler(t);
  tu_server srv;
  start(&srv, &h, codec, 1);
  uint8_t data[200000];
  memset(data, 'z', sizeof data);
  expect_closed_with(&srv, t, data, sizeof data, CGNET_EFRAMETOOLARGE);
  assert_true(atomic_load(&S.in_at_close) <= 100000 + 65536);
  finish(&srv, t);
  cgnet_codec_free(codec);

  ops.decode = x_decode; /* a custom error code is the close reason */
  assert_rc(cgnet_codec_new(&ops, NULL, 0, &codec), 0);
  t = tu_tracker_new();
  h = echo_handler(t);
  start(&srv, &h, codec, 1);
  expect_closed_with(&srv, t, (const uint8_t *)"abcX", 4, CGNET_EPROTONOSUPPORT);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

/* ---- set_codec: per conn from on_open, and switching mid-stream ---------------------- */

static cgnet_codec *g_line;

static cgnet_action open_with_line(cgnet_conn *c) {
  on_open(c);
  TU_CHECK_EQ(cgnet_conn_write_frame(c, "x", 1), CGNET_EINVAL); /* no codec yet */
  TU_CHECK_EQ(cgnet_conn_set_codec(c, g_line), 0);
  TU_CHECK(cgnet_conn_codec(c) == g_line);
  return CGNET_NONE;
}

/* "HELLO" (a line) switches the conn to the length-field codec. */
static cgnet_action hello_then_switch(cgnet_conn *c, const uint8_t *frame, size_t len) {
  if (cgnet_conn_codec(c) == g_line) {
    atomic_fetch_add(&S.frames, 1);
    TU_CHECK(len == 5 && memcmp(frame, "HELLO", 5) == 0);
    TU_CHECK_EQ(cgnet_conn_write(c, "OK\n", 3), 0);
    TU_CHECK_EQ(cgnet_conn_set_codec(c, S.second), 0);
    return CGNET_NONE;
  }
  return echo_frame(c, frame, len);
}

static void test_switch_codec(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *lf = make_codec("lenfield");
  assert_rc(cgnet_codec_line(NULL, &g_line), 0);
  cgnet_handler h = echo_handler(t);
  h.on_open = open_with_line;
  h.on_frame = hello_then_switch;
  /* Set before the loops start: nothing orders a later store with their reads (with
   * io_uring no read() on the loop thread gives TSan the socket's ordering either). */
  tu_server srv;
  reset_state();
  S.second = lf;
  cgnet_options o = {.num_loops = 2}; /* no engine codec: each conn picks one */
  assert_rc(tu_server_start(&srv, &h, &o), 0);
  uint8_t wire[64], frames[64];
  size_t n = 0, fn = 0;
  memcpy(wire, "HELLO\n", 6);
  n = 6;
  put_frame(lf, (const uint8_t *)"abc", 3, wire, &n);
  put_frame(lf, (const uint8_t *)"", 0, wire, &n); /* zero-length frame */
  put_frame(lf, (const uint8_t *)"defg", 4, wire, &n);
  memcpy(frames, "OK\n", 3);
  fn = 3;
  memcpy(frames + fn, wire + 6, n - 6); /* the echoes are the same frames */
  fn += n - 6;
  for (int round = 0; round < 2; round++) { /* two conns: round-robin over both loops */
    int fd = connect_port(srv.port);
    assert_rc(tu_send_all(fd, wire, n, TU_TIMEOUT_MS), 0); /* all in one send */
    expect_bytes(fd, frames, fn);
    close(fd);
  }
  assert_int_equal(atomic_load(&S.frames), 8);
  finish(&srv, t);
  cgnet_codec_free(lf);
  cgnet_codec_free(g_line);
}

/* ---- a codec without on_frame: raw bytes; write_frame from on_traffic ------------------
 */

static cgnet_action raw_traffic(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  TU_CHECK_EQ(cgnet_conn_write_frame(c, p, n), 0); /* encodes with the conn's codec */
  return CGNET_NONE;
}

static void without_on_frame(cgnet_handler *h) {
  h->on_frame = NULL;
  h->on_traffic = raw_traffic;
}

static void test_traffic_without_on_frame(void **state) {
  (void)state;
  /* Not decoded: the raw bytes come back framed by write_frame (a 4-byte length). */
  exchange("lenfield", without_on_frame, "ab\ncd", 5, "\0\0\0\5ab\ncd", 9);
  assert_int_equal(atomic_load(&S.frames), 0);
}

/* "RAW" switches the conn back to raw bytes: the rest of the same read, and what
 * follows, goes to on_traffic. */
static cgnet_action raw_after_frame(cgnet_conn *c, const uint8_t *frame, size_t len) {
  cgnet_action a = echo_frame(c, frame, len);
  if (len == 3 && memcmp(frame, "RAW", 3) == 0)
    TU_CHECK_EQ(cgnet_conn_set_codec(c, NULL), 0);
  return a;
}

static cgnet_action echo_raw(cgnet_conn *c) {
  const uint8_t *p;
  size_t n = cgnet_conn_next(c, 0, &p);
  TU_CHECK(cgnet_conn_codec(c) == NULL);
  TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  return CGNET_NONE;
}

static void with_switch_to_raw(cgnet_handler *h) {
  h->on_frame = raw_after_frame;
  h->on_traffic = echo_raw;
}

static void test_switch_to_raw(void **state) {
  (void)state;
  exchange("line", with_switch_to_raw, "a\nRAW\nb\nc", 10, "a\nRAW\nb\nc", 10);
  assert_int_equal(atomic_load(&S.frames), 2); /* "b\nc" came raw */
}

/* ---- async_write_frame from the test thread ------------------------------------------ */

static cgnet_action open_keep_ref(cgnet_conn *c) {
  on_open(c);
  __atomic_store_n(&S.ref, cgnet_conn_ref(c), __ATOMIC_RELEASE);
  return CGNET_NONE;
}

static atomic_int async_status = 1;
static void async_done(cgnet_conn *c, int status, void *ud) {
  (void)c, (void)ud;
  atomic_store(&async_status, status);
}

static int ref_taken(void *arg) {
  (void)arg;
  return __atomic_load_n(&S.ref, __ATOMIC_ACQUIRE) != NULL;
}

static void test_async_write_frame(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec = make_codec("delim");
  cgnet_handler h = echo_handler(t);
  h.on_open = open_keep_ref;
  tu_server srv;
  start(&srv, &h, codec, 1);
  int fd = connect_port(srv.port);
  assert_true(tu_wait_until(ref_taken, NULL, TU_TIMEOUT_MS));
  cgnet_conn *c = __atomic_load_n(&S.ref, __ATOMIC_ACQUIRE);
  atomic_store(&async_status, 1);
  assert_rc(cgnet_conn_async_write_frame(c, "pushed", 6, async_done, NULL), 0);
  expect_bytes(fd, "pushed\r\n--\r\n", 12);
  assert_true(tu_wait_atomic_eq(&async_status, 0, TU_TIMEOUT_MS));
  /* An encoder error is reported through done. */
  assert_rc(cgnet_conn_async_write_frame(c, "a\r\n--\r\nb", 8, async_done, NULL), 0);
  assert_true(tu_wait_atomic_eq(&async_status, CGNET_EINVAL, TU_TIMEOUT_MS));
  close(fd);
  assert_true(tu_wait_conns(srv.eng, 0, TU_TIMEOUT_MS));
  assert_rc(cgnet_conn_async_write_frame(c, "late", 4, NULL, NULL), CGNET_ECLOSED);
  cgnet_conn_unref(c);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

/* ---- pause in on_frame: the buffered frames come once reading resumes -----------------
 */

static cgnet_action resume_later(cgnet_timer *tm, void *ud) {
  (void)ud;
  atomic_store(&S.timer_frames, atomic_load(&S.frames));
  TU_CHECK_EQ(cgnet_conn_resume_read(cgnet_timer_conn(tm)), 0);
  return CGNET_NONE;
}

static cgnet_action pause_on_first(cgnet_conn *c, const uint8_t *frame, size_t len) {
  cgnet_action a = echo_frame(c, frame, len);
  if (atomic_load(&S.frames) == 1) {
    TU_CHECK_EQ(cgnet_conn_pause_read(c), 0);
    cgnet_timer *tm = cgnet_conn_timer_new(c, resume_later, NULL);
    TU_CHECK(tm != NULL);
    if (tm) TU_CHECK_EQ(cgnet_timer_start(tm, 30, 0), 0);
  }
  return a;
}

static void with_pause_on_first(cgnet_handler *h) {
  h->on_frame = pause_on_first;
}

/* The same with the peer's FIN right behind the frames (allow_half_open): the frames held
 * by the pause are still delivered when reading resumes, though no byte will come. */
static void test_pause_resume_after_fin(void **state) {
  (void)state;
  tu_tracker *t = tu_tracker_new();
  cgnet_codec *codec = make_codec("line");
  cgnet_handler h = echo_handler(t);
  h.on_frame = pause_on_first;
  cgnet_options o = {.codec = codec, .allow_half_open = 1};
  tu_server srv;
  start_opts(&srv, &h, &o);
  int fd = connect_port(srv.port);
  assert_rc(tu_send_all(fd, "one\ntwo\nthree\n", 14, TU_TIMEOUT_MS), 0);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  expect_bytes(fd, "one\ntwo\nthree\n", 14);
  close(fd);
  assert_int_equal(atomic_load(&S.frames), 3);
  finish(&srv, t);
  cgnet_codec_free(codec);
}

static void test_pause_resume(void **state) {
  (void)state;
  /* The reply needs no new bytes after the resume. */
  exchange("line", with_pause_on_first, "one\ntwo\nthree\n", 14, "one\ntwo\nthree\n", 14);
  assert_int_equal(atomic_load(&S.timer_frames), 1); /* the rest waited for the timer */
  assert_int_equal(atomic_load(&S.frames), 3);
}

/* ---- the raw read API inside on_frame ------------------------------------------------ */

static cgnet_action raw_api_frame(cgnet_conn *c, const uint8_t *frame, size_t len) {
  int i = atomic_fetch_add(&S.frames, 1);
  static const size_t after[] = {13, 7, 3}; /* bytes after each frame in the read */
  if (i < 3) TU_CHECK_EQ(cgnet_conn_inbound_buffered(c), after[i]);
  if (len == 5 && memcmp(frame, "skip2", 5) == 0)
    TU_CHECK_EQ(cgnet_conn_discard(c, 2), 2); /* raw bytes the decoder never sees */
  TU_CHECK_EQ(cgnet_conn_write_frame(c, frame, len), 0);
  return CGNET_NONE;
}

static void with_raw_api(cgnet_handler *h) {
  h->on_frame = raw_api_frame;
}

static void test_raw_api_in_on_frame(void **state) {
  (void)state;
  exchange("line", with_raw_api, "a\nskip2\nXXc\nddd", 15, "a\nskip2\nc\n", 10);
  assert_int_equal(atomic_load(&S.frames), 3);
}

/* ---- examples/codec_echo ------------------------------------------------------------- */

extern char **environ;

/* Start codec_echo with `args` and return its pid; *port is the port it listens on. */
static pid_t spawn_codec_echo(const char *const *args, int *port) {
  char line[256];
  pid_t pid = tu_spawn_example("codec_echo", args, line, sizeof line);
  if (pid < 0) fail_msg("cannot start codec_echo");
  *port = tu_port_after(line, "listening on ");
  assert_true(*port > 0);
  return pid;
}

static void test_codec_echo_example(void **state) {
  (void)state;
  const char *dir = getenv("CGNET_EXAMPLES_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/codec_echo", dir ? dir : "examples");
  static const struct {
    const char *spec, *wire;
    size_t len;
  } cases[] = {
      {"line", "hi\r\nthere\n", 11},      {"delim:\\r\\n", "a\r\nbc\r\n", 7},
      {"fixed:3", "abcdef", 6},           {"lenfield:2:le", "\x02\x00hi\x00\x00", 6},
      {"lenfield:3", "\x00\x00\x01z", 4},
  };
  static const char *const replies[] = {"hi\nthere\n", "a\r\nbc\r\n", "abcdef",
                                        "\x02\x00hi\x00\x00", "\x00\x00\x01z"};
  static const size_t reply_len[] = {9, 7, 6, 6, 4};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *args[] = {"tcp://127.0.0.1:0", "--codec", cases[i].spec,
                          "--loops",           "2",       NULL};
    int port;
    pid_t pid = spawn_codec_echo(args, &port);
    int fd = connect_port(port);
    assert_rc(tu_send_all(fd, cases[i].wire, cases[i].len, TU_TIMEOUT_MS), 0);
    expect_bytes(fd, replies[i], reply_len[i]);
    close(fd);
    assert_int_equal(tu_stop_process(pid, 10000), 0);
  }
  /* --max: a bigger frame closes the conn. */
  const char *args[] = {"tcp://127.0.0.1:0", "--codec", "lenfield:1", "--max", "10", NULL};
  int port;
  pid_t pid = spawn_codec_echo(args, &port);
  int fd = connect_port(port);
  assert_rc(tu_send_all(fd, "\x0a", 1, TU_TIMEOUT_MS), 0); /* 1 + 10 > 10 */
  int rc = tu_expect_eof(fd, TU_TIMEOUT_MS, NULL);
  assert_true(rc == 0 || rc == 1 || rc == -ECONNRESET);
  close(fd);
  assert_int_equal(tu_stop_process(pid, 10000), 0);
  char *bad[] = {path, "--codec", "lenfield:5", NULL}; /* no such field length */
  assert_rc(posix_spawn(&pid, path, NULL, NULL, bad, environ), 0);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
}

int main(void) {
  tu_apply_test_filter();
  static const echo_cfg cfgs[] = {
      {"line", 1, 0, 0},     {"line", 2, 0, 0},     {"delim", 1, 0, 0},
      {"delim", 2, 0, 0},    {"fixed", 1, 0, 0},    {"fixed", 2, 0, 0},
      {"lenfield", 1, 0, 0}, {"lenfield", 2, 0, 0}, {"line", 2, 1, 0},
      {"lenfield", 2, 1, 0}, {"line", 1, 0, 1024},  {"fixed", 2, 1, 1024},
  };
  enum { NCFG = sizeof cfgs / sizeof cfgs[0] };
  static char names[NCFG][64];
  struct CMUnitTest tests[NCFG + 16];
  size_t n = 0;
  for (size_t i = 0; i < NCFG; i++) {
    snprintf(names[i], sizeof names[i], "echo/%s/loops=%d%s%s", cfgs[i].name, cfgs[i].loops,
             cfgs[i].et ? "/edge" : "", cfgs[i].high ? "/high=1k" : "");
    tests[n++] =
        (struct CMUnitTest){names[i], test_echo, tu_setup, tu_teardown, (void *)&cfgs[i]};
  }
#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup, tu_teardown)
  const struct CMUnitTest rest[] = {
      T(test_one_send),
      T(test_lenfield_1gib),
      T(test_line_10mib),
      T(test_delim_too_large),
      T(test_lenfield_malformed),
      T(test_custom_limits),
      T(test_switch_codec),
      T(test_switch_to_raw),
      T(test_traffic_without_on_frame),
      T(test_async_write_frame),
      T(test_pause_resume),
      T(test_pause_resume_after_fin),
      T(test_raw_api_in_on_frame),
      T(test_codec_echo_example),
  };
  for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
    tests[n++] = rest[i];
  return _cmocka_run_group_tests("test_codec_net", tests, n, NULL, NULL);
}
