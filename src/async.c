/*
 * Conn calls from any thread: async write/writev/write_frame, wake and close. Each call
 * copies what it needs into a task, takes a reference on the conn for the task, and posts
 * it to the conn's loop (one eventfd write per burst, see loop.c); the task runs on the
 * loop, finds out whether the conn is still open, acts, reports through `done`, and drops
 * its reference. So a worker may keep calling these on a conn that has long closed: the
 * memory stays until the last reference goes, and the calls answer CGNET_ECLOSED.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef enum { OP_WRITE, OP_WRITE_FRAME, OP_WAKE, OP_CLOSE } op_kind;

typedef struct conn_task {
  cgnet__task t;
  cgnet_conn *c;
  op_kind kind;
  union {
    cgnet_write_done_fn write_done;
    cgnet_close_done_fn close_done;
  } done;
  void *ud;
  const uint8_t *data; /* OP_WRITE: inline copy or the owned buffer */
  size_t len;
  void *owned; /* owned buffer, released with free_fn */
  void (*free_fn)(void *);
  uint8_t inline_data[]; /* copied bytes follow the task */
} conn_task;

static void finish(conn_task *ct) {
  if (ct->owned) ct->free_fn(ct->owned);
  cgnet_conn_unref(ct->c);
  free(ct);
}

static void report(conn_task *ct, int status) {
  if ((ct->kind == OP_WRITE || ct->kind == OP_WRITE_FRAME) && ct->done.write_done)
    ct->done.write_done(ct->c, status, ct->ud);
  else if (ct->kind == OP_CLOSE && ct->done.close_done)
    ct->done.close_done(ct->c, status, ct->ud);
}

static void run_task(cgnet_loop *loop, cgnet__task *t) {
  (void)loop;
  conn_task *ct = (conn_task *)t;
  cgnet_conn *c = ct->c;
  switch (ct->kind) {
  case OP_WRITE:
    report(ct,
           cgnet__conn_closed(c) ? CGNET_ECLOSED : cgnet_conn_write(c, ct->data, ct->len));
    break;
  case OP_WRITE_FRAME: /* encoded here: the conn's codec is loop-thread state */
    report(ct, cgnet__conn_closed(c) ? CGNET_ECLOSED
                                     : cgnet_conn_write_frame(c, ct->data, ct->len));
    break;
  case OP_WAKE:
    cgnet__conn_wake_now(c);
    break;
  case OP_CLOSE:
    if (cgnet__conn_closed(c)) {
      report(ct, CGNET_ECLOSED);
    } else {
      cgnet__conn_close_now(c, CGNET_ELOCALCLOSE);
      report(ct, CGNET_ELOCALCLOSE);
    }
    break;
  }
  finish(ct);
}

/* The loop is gone (engine teardown): complete without acting. */
static void drop_task(cgnet__task *t) {
  conn_task *ct = (conn_task *)t;
  report(ct, CGNET_ECANCELED);
  finish(ct);
}

static conn_task *new_task(cgnet_conn *c, op_kind kind, size_t extra) {
  conn_task *ct = malloc(sizeof *ct + extra);
  if (!ct) return NULL;
  memset(ct, 0, sizeof *ct);
  ct->t.run = run_task;
  ct->t.drop = drop_task;
  ct->c = c;
  ct->kind = kind;
  return ct;
}

static int post(conn_task *ct) {
  cgnet_conn_ref(ct->c);
  cgnet__loop_post(ct->c->loop, &ct->t);
  return 0;
}

int cgnet_conn_async_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt,
                            cgnet_write_done_fn done, void *ud) {
  if (!c || iovcnt < 0 || (iovcnt > 0 && !iov)) return CGNET_EINVAL;
  CGNET__ONE_PEER_ONLY(c); /* a session's async writev: the pieces make one datagram */
  if (cgnet_conn_is_closed(c)) return CGNET_ECLOSED;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  conn_task *ct = new_task(c, OP_WRITE, total);
  if (!ct) return CGNET_ENOMEM;
  size_t off = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len) memcpy(ct->inline_data + off, iov[i].iov_base, iov[i].iov_len);
    off += iov[i].iov_len;
  }
  ct->data = ct->inline_data;
  ct->len = total;
  ct->done.write_done = done;
  ct->ud = ud;
  return post(ct);
}

int cgnet_conn_async_write_frame(cgnet_conn *c, const void *frame, size_t len,
                                 cgnet_write_done_fn done, void *ud) {
  if (!c || (len && !frame)) return CGNET_EINVAL;
  CGNET__STREAM_ONLY(c);
  if (cgnet_conn_is_closed(c)) return CGNET_ECLOSED;
  conn_task *ct = new_task(c, OP_WRITE_FRAME, len);
  if (!ct) return CGNET_ENOMEM;
  if (len) memcpy(ct->inline_data, frame, len);
  ct->data = ct->inline_data;
  ct->len = len;
  ct->done.write_done = done;
  ct->ud = ud;
  return post(ct);
}

int cgnet_conn_async_write(cgnet_conn *c, const void *data, size_t len,
                           cgnet_write_done_fn done, void *ud) {
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  if (len && !data) return CGNET_EINVAL;
  return cgnet_conn_async_writev(c, &iov, 1, done, ud);
}

int cgnet_conn_async_write_owned(cgnet_conn *c, void *data, size_t len,
                                 void (*free_fn)(void *data), cgnet_write_done_fn done,
                                 void *ud) {
  int err = 0;
  conn_task *ct = NULL;
  if (!c || !free_fn || (len && !data))
    err = CGNET_EINVAL;
  else if (c->kind == CGNET__SERVER_DGRAM)
    err = CGNET_EUNSUPPORTED;
  else if (cgnet_conn_is_closed(c))
    err = CGNET_ECLOSED;
  else if (!(ct = new_task(c, OP_WRITE, 0)))
    err = CGNET_ENOMEM;
  if (err) {
    if (free_fn && data) free_fn(data);
    return err;
  }
  ct->data = data;
  ct->len = len;
  ct->owned = data;
  ct->free_fn = free_fn;
  ct->done.write_done = done;
  ct->ud = ud;
  return post(ct);
}

int cgnet_conn_wake(cgnet_conn *c) {
  if (!c) return CGNET_EINVAL;
  CGNET__ONE_PEER_ONLY(c);
  if (cgnet_conn_is_closed(c)) return CGNET_ECLOSED;
  conn_task *ct = new_task(c, OP_WAKE, 0);
  if (!ct) return CGNET_ENOMEM;
  return post(ct);
}

int cgnet_conn_async_close(cgnet_conn *c, cgnet_close_done_fn done, void *ud) {
  if (!c) return CGNET_EINVAL;
  CGNET__ONE_PEER_ONLY(c);
  if (cgnet_conn_is_closed(c)) return CGNET_ECLOSED;
  conn_task *ct = new_task(c, OP_CLOSE, 0);
  if (!ct) return CGNET_ENOMEM;
  ct->done.close_done = done;
  ct->ud = ud;
  return post(ct);
}
