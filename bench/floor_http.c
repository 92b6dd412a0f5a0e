/*
 * floor_http — the floor of cgnet's HTTP plaintext benchmark (TechEmpower style): a raw
 * epoll loop that answers pipelined HTTP/1.1 requests with a fixed "Hello, World!".
 *
 * usage: floor_http [--host H] [--port P] [--loops N]
 *        (defaults 127.0.0.1, 0 = any free port, 1 loop; prints "listening on H:PORT")
 *
 * Threads, listeners and signals as in floor_echo.c: one epoll loop per thread, one
 * SO_REUSEPORT listener per loop when N > 1, main sigwait()s and wakes the loops.
 *
 * Per read: every complete request in the bytes read (a head ending in "\r\n\r\n") gets
 * one response appended to a per-thread output buffer, and all of them leave in a single
 * write(). An incomplete request is kept in a per-conn buffer until the rest arrives.
 * Parsing is the floor's minimum: the request line must look like "METHOD /path
 * HTTP/1.x"; headers are skipped and any path gets the same response. Request bodies are
 * not supported (the plaintext test sends none); a malformed request line, or a head
 * longer than MAX_HEAD, closes the conn.
 *
 * Partial writes are handled like the echo floor's: the rest is parked in a per-conn
 * buffer, the conn waits for EPOLLOUT and reads nothing until it is out.
 *
 * The Date header is cached per loop and rebuilt when the wall-clock second changes,
 * checked once per epoll_wait() wakeup (CLOCK_REALTIME_COARSE, a vDSO read).
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
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (64u * 1024u)
#define MAX_HEAD (16u * 1024u) /* longest incomplete request head kept across reads */
#define BACKLOG 4096
#define MAX_EVENTS 256
#define MAX_LOOPS 256

#include "peer_common.h" /* options, listeners, stop signals */

#define RESP_HEAD                                                                          \
  "HTTP/1.1 200 OK\r\nServer: F\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"     \
  "Date: "
#define RESP_TAIL "\r\n\r\nHello, World!"
#define DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */
#define RESP_LEN (sizeof RESP_HEAD - 1 + DATE_LEN + sizeof RESP_TAIL - 1)

/* A growable byte buffer: data[0, len) is live, cap bytes are allocated. */
struct buf {
  char *data;
  size_t len, cap;
};

struct conn {
  int fd;
  struct buf in;            /* an incomplete request head carried over to the next read */
  struct buf out;           /* out.data[out_off, out.len) still to be written */
  size_t out_off;           /* out.len != 0 <=> the conn waits for EPOLLOUT */
  struct conn *prev, *next; /* the loop's live conns, so they can be freed at exit */
};

/* Owned by its thread once started; main only touches it before create / after join. */
struct loop {
  int epfd;
  int lfd;    /* this loop's listener (main closes it) */
  int wakefd; /* eventfd: main writes it to stop the loop */
  pthread_t thread;
  struct conn conns;   /* list sentinel */
  struct buf out;      /* the responses to one read, reused */
  time_t date_sec;     /* the second resp's Date was built for */
  char resp[RESP_LEN]; /* the response, Date included */
  char rbuf[BUF_SIZE];
};

/* ---- buffers, date ------------------------------------------------------------------- */

/* Makes room for n more bytes. */
static int buf_reserve(struct buf *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < n)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

static int buf_append(struct buf *b, const char *p, size_t n) {
  if (buf_reserve(b, n) < 0) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static void refresh_date(struct loop *lp) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec == lp->date_sec) return;
  lp->date_sec = ts.tv_sec;
  struct tm tm;
  char date[DATE_LEN + 1];
  gmtime_r(&ts.tv_sec, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm); /* C locale */
  memcpy(lp->resp + sizeof RESP_HEAD - 1, date, DATE_LEN);
}

static void response_init(struct loop *lp) {
  memcpy(lp->resp, RESP_HEAD, sizeof RESP_HEAD - 1);
  memcpy(lp->resp + sizeof RESP_HEAD - 1 + DATE_LEN, RESP_TAIL, sizeof RESP_TAIL - 1);
  lp->date_sec = -1;
  refresh_date(lp);
}

/* ---- HTTP ---------------------------------------------------------------------------- */

/* Checks for "METHOD SP /path SP HTTP/1.x CR" at p; end points at the "\r\n\r\n" that
 * closes the head, so every byte read here lies in [p, end]. */
static int request_line_ok(const char *p, const char *end) {
  const char *s = p;
  while (s < end && *s >= 'A' && *s <= 'Z')
    s++;
  if (s == p || *s++ != ' ') return 0;
  const char *path = s;
  while (s < end && *s != ' ' && *s != '\r')
    s++;
  if (s == path || (*path != '/' && *path != '*') || *s++ != ' ') return 0;
  return end - s >= 8 && memcmp(s, "HTTP/1.", 7) == 0 && s[7] >= '0' && s[7] <= '9' &&
         s[8] == '\r';
}

/* Appends one response per complete request in p[0, n) to lp->out. Returns the bytes
 * consumed (the complete requests), or -1 to close the conn. */
static ssize_t answer(struct loop *lp, const char *p, size_t n) {
  size_t off = 0;
  const char *end;
  while ((end = memmem(p + off, n - off, "\r\n\r\n", 4)) != NULL) {
    if (!request_line_ok(p + off, end) || buf_append(&lp->out, lp->resp, RESP_LEN) < 0)
      return -1;
    off = (size_t)(end - p) + 4;
  }
  return (ssize_t)off;
}

/* ---- the loop ------------------------------------------------------------------------ */

static void conn_close(struct conn *c) {
  close(c->fd); /* also removes it from the epoll set: the fd is never dup'ed */
  c->prev->next = c->next;
  c->next->prev = c->prev;
  free(c->in.data);
  free(c->out.data);
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

/* Writes lp->out in one write(); parks what the socket did not take. */
static void flush(struct loop *lp, struct conn *c) {
  ssize_t w = write(c->fd, lp->out.data, lp->out.len);
  if (w == (ssize_t)lp->out.len) return;
  if (w < 0) {
    if (!would_block()) {
      conn_close(c);
      return;
    }
    w = 0;
  }
  c->out.len = c->out_off = 0;
  if (buf_append(&c->out, lp->out.data + w, lp->out.len - (size_t)w) < 0 ||
      conn_watch(lp, c, EPOLLOUT) < 0)
    conn_close(c);
}

static void on_readable(struct loop *lp, struct conn *c) {
  ssize_t n = read(c->fd, lp->rbuf, BUF_SIZE);
  if (n <= 0) {
    if (n == 0 || !would_block()) conn_close(c); /* EOF or error */
    return;
  }
  /* Parse straight from rbuf unless a partial request is waiting in c->in. */
  const char *p = lp->rbuf;
  size_t len = (size_t)n;
  if (c->in.len) {
    if (buf_append(&c->in, lp->rbuf, len) < 0) {
      conn_close(c);
      return;
    }
    p = c->in.data;
    len = c->in.len;
  }
  lp->out.len = 0;
  ssize_t used = answer(lp, p, len);
  if (used < 0 || len - (size_t)used > MAX_HEAD) {
    conn_close(c);
    return;
  }
  size_t rest = len - (size_t)used;
  if (p == c->in.data) {
    memmove(c->in.data, p + used, rest);
    c->in.len = rest;
  } else if (rest && buf_append(&c->in, p + used, rest) < 0) {
    conn_close(c);
    return;
  }
  if (lp->out.len) flush(lp, c);
}

static void on_writable(struct loop *lp, struct conn *c) {
  ssize_t w = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
  if (w < 0) {
    if (!would_block()) conn_close(c);
    return;
  }
  c->out_off += (size_t)w;
  if (c->out_off < c->out.len) return;
  c->out_off = c->out.len = 0;
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
    refresh_date(lp);
    for (int i = 0; i < n; i++) {
      void *p = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      if (p == &lp->wakefd) {
        stop = 1;
      } else if (p == &lp->lfd) {
        on_accept(lp);
      } else if (e & (EPOLLERR | EPOLLHUP)) {
        conn_close(p); /* reset, or both directions shut: nothing can be delivered */
      } else if (((struct conn *)p)->out.len) {
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
  free(lp->out.data);
  return NULL;
}

static int loop_init(struct loop *lp, int lfd) {
  lp->lfd = lfd;
  lp->conns.next = lp->conns.prev = &lp->conns;
  response_init(lp);
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
