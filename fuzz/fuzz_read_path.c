/*
 * libFuzzer target: a conn's whole read path (reads, the inbound view and buffer,
 * peek/next/discard/read, pause and resume, wakes, codecs switched on the fly, level and
 * edge mode), driven through a real cgnet client and loop.
 *
 * The harness enrolls one end of a Unix socketpair in a cgnet client (one loop, started
 * once per configuration and reused by every input) and writes the payload into the
 * other end in chunks, waiting (bounded) after each chunk until the loop has taken it
 * out of the socket, so the chunk sizes are real read boundaries. The handler consumes
 * the bytes as the input tells it, and every byte it consumes is checked at once against
 * the payload: raw bytes as they are taken, frames together with their framing (a line
 * frame plus its "\n", a delimiter frame plus "\r\n", fixed and length-field frames as
 * they were on the wire). At the end the rest is drained raw and the whole payload must
 * have been seen exactly once, in order; a conn closed by its codec must have had a
 * malformed or oversized frame at the point where it stopped. Any mismatch aborts.
 *
 * Input format:
 *   byte 0            mode: bit 0 edge-triggered; bit 1 small reads (read_buffer_cap
 *                     512, read_chunk_limit 700); bits 2-4 the codec set in on_open
 *                     (index into the table below; 0 = none)
 *   byte 1            number of chunk sizes S (% 32), then S bytes: a byte b < 200 is a
 *                     chunk of b + 1 bytes, else (b - 199) * 128 bytes; the payload left
 *                     after the last size goes as one chunk
 *   next byte         number of handler actions A (% 32), then A action bytes, used in
 *                     turn (cycling) by each on_traffic / on_frame call:
 *                       bits 0-2  0 consume all, 1 next(n), 2 peek(n) then discard(n/2),
 *                                 3 read(n), 4 nothing, 5 pause_read, 6 set_codec,
 *                                 7 discard(n) and go on with the next action (<= 4 a call)
 *                       n = (byte >> 3) * 4 + 1
 *                       pause: bit 3 set resumes from a conn timer after (bits 4-5) ms
 *                              (the first 8 of an input), else the harness resumes it (a
 *                              loop task, every other time after a wake)
 *                       set_codec: bits 3-5 index the codec table
 *                     no actions: consume all
 *   the rest          the payload (at most MAX_PAYLOAD bytes)
 *
 * Codec table: 0 none, 1 line (keep_cr, max 64), 2 fixed 5, 3 length field (2-byte big
 * endian, header kept, max 512), 4 fixed 1, 5 length field (tag byte, 1-byte length
 * that counts itself, header kept, max 300), 6 line (keep_cr), 7 delimiter "\r\n".
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cgnet.h"
#include "fuzz_check.h"

#define MAX_PAYLOAD (16 * 1024)
#define MAX_CHAIN 4
#define WAIT_MS 5000 /* a loop that wants to read takes a chunk within this */
#define NCODECS 8
/* A timer resume costs at least a wheel tick (1 ms): past this many in one input, the
 * harness resumes instead, so that an input stays in milliseconds. */
#define MAX_TIMER_PAUSES 8

/* ---- the codec table and the wire bytes a frame stands for ------------------------------
 */

static cgnet_codec *codecs[NCODECS];
static const char *const trailers[NCODECS] = {"", "\n", "", "", "", "", "\n", "\r\n"};

static void make_codecs(void) {
  cgnet_line_codec_options l64 = {.keep_cr = 1, .max_frame_length = 64};
  cgnet_line_codec_options l = {.keep_cr = 1};
  cgnet_length_field_codec_options lf2 = {.length_field_length = 2,
                                          .max_frame_length = 512};
  cgnet_length_field_codec_options lf1 = {.length_field_offset = 1,
                                          .length_field_length = 1,
                                          .length_includes_length_field = 1,
                                          .max_frame_length = 300};
  cgnet_delimiter_codec_options crlf = {.delimiter = (const uint8_t *)"\r\n",
                                        .delimiter_len = 2};
  FZ_CHECK(cgnet_codec_line(&l64, &codecs[1]) == 0);
  FZ_CHECK(cgnet_codec_fixed(5, &codecs[2]) == 0);
  FZ_CHECK(cgnet_codec_length_field(&lf2, &codecs[3]) == 0);
  FZ_CHECK(cgnet_codec_fixed(1, &codecs[4]) == 0);
  FZ_CHECK(cgnet_codec_length_field(&lf1, &codecs[5]) == 0);
  FZ_CHECK(cgnet_codec_line(&l, &codecs[6]) == 0);
  FZ_CHECK(cgnet_codec_delimiter(&crlf, &codecs[7]) == 0);
}

/* ---- one input's state (one input at a time) --------------------------------------------
 */

static struct {
  const uint8_t *payload;
  size_t total;
  const uint8_t *acts;
  size_t nacts, act_pos; /* loop thread */
  int initial_codec;

  atomic_size_t got;         /* bytes the handler consumed, all checked */
  atomic_int codec;          /* index of the conn's codec now */
  atomic_int closed, reason; /* on_close ran, and why */
  atomic_int paused_ext;     /* paused, waiting for the harness to resume it */
  atomic_int wakes;          /* wakes the harness sent for a resume */
  atomic_int draining;       /* the end: take everything raw */
  atomic_int tasks;          /* loop tasks posted and not yet run */
  int wakes_seen;            /* loop thread */
  int timer_pauses;          /* loop thread */
  cgnet_conn *conn;          /* the harness's reference */
  cgnet_timer *resume_timer; /* loop thread */
} S;

static void now_ts(struct timespec *ts) {
  clock_gettime(CLOCK_MONOTONIC, ts);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  now_ts(&ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Loop thread: the handler consumed p[0, n); it must be the payload's next n bytes. */
static void consumed(const uint8_t *p, size_t n) {
  size_t at = atomic_load(&S.got);
  FZ_CHECK(at + n <= S.total);
  FZ_CHECK(n == 0 || memcmp(p, S.payload + at, n) == 0);
  atomic_store(&S.got, at + n);
}

/* Loop thread: a frame stands for its bytes plus the codec's trailer on the wire. */
static void consumed_frame(const uint8_t *frame, size_t len) {
  const char *t = trailers[atomic_load(&S.codec)];
  consumed(frame, len);
  consumed((const uint8_t *)t, strlen(t));
}

/* ---- the handler ------------------------------------------------------------------------
 */

static cgnet_action resume_fn(cgnet_timer *t, void *ud) {
  (void)t;
  (void)ud;
  FZ_CHECK(cgnet_conn_resume_read(S.conn) == 0);
  return CGNET_NONE;
}

static void pause_conn(cgnet_conn *c, uint8_t a) {
  FZ_CHECK(cgnet_conn_pause_read(c) == 0);
  if (!(a & 8) || S.timer_pauses++ >= MAX_TIMER_PAUSES) {
    atomic_store(&S.paused_ext, 1);
    return;
  }
  if (!S.resume_timer) S.resume_timer = cgnet_conn_timer_new(c, resume_fn, NULL);
  FZ_CHECK(S.resume_timer != NULL);
  FZ_CHECK(cgnet_timer_start(S.resume_timer, (a >> 4) & 3, 0) == 0);
}

static void set_codec(cgnet_conn *c, int idx) {
  FZ_CHECK(cgnet_conn_set_codec(c, codecs[idx]) == 0);
  FZ_CHECK(cgnet_conn_codec(c) == codecs[idx]);
  atomic_store(&S.codec, idx);
}

/* One action on the bytes visible now (inside on_frame: those after the frame). Returns
 * 1 to go on with the next action. */
static int act(cgnet_conn *c, uint8_t a) {
  size_t n = (size_t)(a >> 3) * 4 + 1;
  const uint8_t *p = NULL;
  uint8_t buf[128];
  size_t k;
  switch (a & 7) {
  case 0:
    k = cgnet_conn_next(c, 0, &p);
    consumed(p, k);
    break;
  case 1:
    k = cgnet_conn_next(c, n, &p);
    FZ_CHECK(k <= n);
    consumed(p, k);
    break;
  case 2: {
    size_t avail = cgnet_conn_inbound_buffered(c);
    k = cgnet_conn_peek(c, n, &p);
    FZ_CHECK(k == (avail < n ? avail : n));
    size_t at = atomic_load(&S.got);
    FZ_CHECK(at + k <= S.total && (k == 0 || memcmp(p, S.payload + at, k) == 0));
    FZ_CHECK(cgnet_conn_discard(c, k / 2) == k / 2);
    consumed(p, k / 2);
    break;
  }
  case 3:
    k = cgnet_conn_read(c, buf, n < sizeof buf ? n : sizeof buf);
    consumed(buf, k);
    break;
  case 4:
    break;
  case 5:
    pause_conn(c, a);
    break;
  case 6:
    set_codec(c, (a >> 3) & 7);
    break;
  default:
    k = cgnet_conn_peek(c, n, &p);
    FZ_CHECK(cgnet_conn_discard(c, n) == k);
    consumed(p, k);
    return 1;
  }
  return 0;
}

/* A wake the harness sent for a pause it was asked to end. */
static void resume_if_woken(cgnet_conn *c) {
  int w = atomic_load(&S.wakes);
  if (w == S.wakes_seen) return;
  S.wakes_seen = w;
  if (atomic_exchange(&S.paused_ext, 0)) FZ_CHECK(cgnet_conn_resume_read(c) == 0);
}

static void run_actions(cgnet_conn *c) {
  resume_if_woken(c);
  if (atomic_load(&S.draining) || S.nacts == 0) {
    act(c, 0);
    return;
  }
  for (int i = 0; i < MAX_CHAIN; i++)
    if (!act(c, S.acts[S.act_pos++ % S.nacts])) break;
}

static cgnet_action on_open(cgnet_conn *c) {
  if (S.initial_codec) set_codec(c, S.initial_codec);
  return CGNET_NONE;
}

static cgnet_action on_traffic(cgnet_conn *c) {
  FZ_CHECK(!atomic_load(&S.closed));
  run_actions(c);
  return CGNET_NONE;
}

static cgnet_action on_frame(cgnet_conn *c, const uint8_t *frame, size_t len) {
  FZ_CHECK(!atomic_load(&S.closed));
  int idx = atomic_load(&S.codec);
  FZ_CHECK(idx != 0 && cgnet_conn_codec(c) == codecs[idx]);
  FZ_CHECK(len <= cgnet_codec_max_frame_length(codecs[idx]));
  consumed_frame(frame, len);
  run_actions(c);
  return CGNET_NONE;
}

static cgnet_action on_close(cgnet_conn *c, int reason) {
  (void)c;
  S.resume_timer = NULL; /* freed with the conn */
  atomic_store(&S.reason, reason);
  atomic_store(&S.closed, 1); /* last: the harness may start the next input */
  return CGNET_NONE;
}

static const cgnet_handler handler = {.on_open = on_open,
                                      .on_traffic = on_traffic,
                                      .on_frame = on_frame,
                                      .on_close = on_close};

/* ---- loop tasks posted by the harness ---------------------------------------------------
 */

static void resume_task(cgnet_loop *loop, void *ud) {
  (void)loop;
  (void)ud;
  if (!atomic_load(&S.closed) && atomic_exchange(&S.paused_ext, 0))
    FZ_CHECK(cgnet_conn_resume_read(S.conn) == 0);
  atomic_fetch_sub(&S.tasks, 1);
}

/* The end of the input: everything left is taken raw. */
static void drain_task(cgnet_loop *loop, void *ud) {
  (void)loop;
  (void)ud;
  atomic_store(&S.draining, 1);
  if (!atomic_load(&S.closed)) {
    if (S.resume_timer) FZ_CHECK(cgnet_timer_stop(S.resume_timer) == 0);
    set_codec(S.conn, 0);
    atomic_store(&S.paused_ext, 0);
    FZ_CHECK(cgnet_conn_resume_read(S.conn) == 0);
  }
  atomic_fetch_sub(&S.tasks, 1);
}

static void post(cgnet_loop_fn fn) {
  atomic_fetch_add(&S.tasks, 1);
  FZ_CHECK(cgnet_loop_execute(cgnet_conn_loop(S.conn), fn, NULL) == 0);
}

/* ---- the clients: one per (edge, small reads), started on first use --------------------
 */

static cgnet_client *clients[4];

static cgnet_client *client_for(int edge, int small) {
  cgnet_client **cl = &clients[edge * 2 + small];
  if (*cl) return *cl;
  cgnet_options o = {.num_loops = 1,
                     .edge_triggered = edge,
                     .read_buffer_cap = small ? 512 : 0,
                     .read_chunk_limit = small ? 700 : 0,
                     .log_level = CGNET_LOG_OFF};
  FZ_CHECK(cgnet_client_new(&handler, &o, cl) == 0);
  return *cl;
}

/* ---- the harness -----------------------------------------------------------------------
 */

/* Bytes in fd's receive queue that the loop has not read yet (0 once it is closed). */
static int unread(int fd) {
  int n = 0;
  if (atomic_load(&S.closed) || ioctl(fd, FIONREAD, &n) < 0) return 0;
  return n;
}

/* End a pause the handler left to the harness, once the previous attempt has run: a
 * resume task on the loop, every other time preceded by a wake (whose on_traffic, in raw
 * mode, resumes first; with a codec a paused conn's wake calls nothing). */
static void resume_external(unsigned *tries) {
  if (!atomic_load(&S.paused_ext) || atomic_load(&S.tasks) != 0) return;
  if ((*tries)++ % 2 == 0) {
    atomic_fetch_add(&S.wakes, 1);
    int rc = cgnet_conn_wake(S.conn);
    FZ_CHECK(rc == 0 || rc == CGNET_ECLOSED);
  }
  post(resume_task);
}

/* Spin, then sleep a little, until pred() holds; abort after WAIT_MS. */
static void wait_for(int (*pred)(void), const char *what) {
  uint64_t deadline = now_ms() + WAIT_MS;
  unsigned tries = 0;
  for (unsigned spin = 0; !pred(); spin++) {
    resume_external(&tries);
    if (now_ms() > deadline) {
      fprintf(stderr, "read path: %s did not happen within %d ms (consumed %zu of %zu)\n",
              what, WAIT_MS, atomic_load(&S.got), S.total);
      abort();
    }
    if (spin < 256)
      sched_yield();
    else
      usleep(50);
  }
}

static int fd0; /* the enrolled end, owned by cgnet */

/* The loop has read everything written to the conn's socket. */
static int socket_drained(void) {
  return unread(fd0) == 0;
}

static int all_consumed_or_closed(void) {
  return atomic_load(&S.closed) || atomic_load(&S.got) == S.total;
}
static int closed(void) {
  return atomic_load(&S.closed);
}
static int no_tasks(void) {
  return atomic_load(&S.tasks) == 0;
}

static void write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      FZ_CHECK(errno == EPIPE || errno == ECONNRESET); /* closed by a codec error */
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

static size_t chunk_size(uint8_t b) {
  return b < 200 ? (size_t)b + 1 : (size_t)(b - 199) * 128;
}

/* The conn closed before the end: only a codec error may do that, and the bytes after
 * the last one consumed must really be a bad frame for the codec of that moment. */
static void check_early_close(void) {
  int reason = atomic_load(&S.reason);
  FZ_CHECK(reason == CGNET_EFRAMETOOLARGE || reason == CGNET_ECODEC);
  int idx = atomic_load(&S.codec);
  FZ_CHECK(idx != 0);
  size_t at = atomic_load(&S.got);
  cgnet_frame f = {0};
  FZ_CHECK(cgnet_codec_decode(codecs[idx], S.payload + at, S.total - at, &f) == reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (!codecs[1]) make_codecs();
  if (n < 1) return 0;
  uint8_t mode = d[0];
  size_t pos = 1;
  size_t nsplits = pos < n ? d[pos++] % 32 : 0;
  if (nsplits > n - pos) nsplits = n - pos;
  const uint8_t *splits = d + pos;
  pos += nsplits;
  size_t nacts = pos < n ? d[pos++] % 32 : 0;
  if (nacts > n - pos) nacts = n - pos;
  const uint8_t *acts = d + pos;
  pos += nacts;
  size_t total = n - pos;
  if (total > MAX_PAYLOAD) total = MAX_PAYLOAD;

  memset(&S, 0, sizeof S);
  S.payload = d + pos;
  S.total = total;
  S.acts = acts;
  S.nacts = nacts;
  S.initial_codec = (mode >> 2) & 7;

  int fds[2];
  FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  cgnet_client *cl = client_for(mode & 1, (mode >> 1) & 1);
  fd0 = fds[0];
  FZ_CHECK(cgnet_client_enroll(cl, fds[0], NULL, &S.conn) == 0);

  size_t off = 0;
  for (size_t i = 0; off < total && !atomic_load(&S.closed); i++) {
    size_t len = i < nsplits ? chunk_size(splits[i]) : total - off;
    if (len > total - off) len = total - off;
    write_all(fds[1], S.payload + off, len);
    off += len;
    wait_for(socket_drained, "reading a chunk");
  }
  post(drain_task);
  int wake = cgnet_conn_wake(S.conn);
  FZ_CHECK(wake == 0 || wake == CGNET_ECLOSED);
  wait_for(all_consumed_or_closed, "consuming the whole payload");

  if (atomic_load(&S.closed))
    check_early_close();
  else
    FZ_CHECK(atomic_load(&S.got) == S.total);

  int rc = cgnet_conn_async_close(S.conn, NULL, NULL);
  FZ_CHECK(rc == 0 || rc == CGNET_ECLOSED);
  wait_for(closed, "closing the conn");
  wait_for(no_tasks, "running the harness's loop tasks");
  FZ_CHECK(atomic_load(&S.reason) != CGNET_ELOCALCLOSE || atomic_load(&S.got) == S.total);
  cgnet_conn_unref(S.conn);
  close(fds[1]);
  return 0;
}
