/*
 * sendzc_uring — does io_uring's zero-copy send (IORING_OP_SEND_ZC) pay off on this
 * machine? Sends the same bytes over a loopback TCP connection with SEND and with
 * SEND_ZC, one chunk size at a time, and reports CPU time per KiB sent for each: the
 * sending thread's, and the whole process's (sender and the receiving thread: on
 * loopback a zero-copy send's bytes are still copied, on their way into the receiver's
 * socket).
 *
 * usage: sendzc_uring [--mib N] [--sizes S1,S2,...] [--reps R]
 *        (defaults: 512 MiB per run, 16K,64K,256K,1M, 3 repetitions, alternating)
 *
 * One send in flight at a time, as cgnet's conns do; a SEND_ZC is done when its
 * notification arrives (the kernel no longer needs the buffer), and only then is the
 * buffer written again. Prints one line per run and a "RESULT size=... send_ns_per_kib=
 * ... zc_ns_per_kib=... (sender) send_total_ns_per_kib=... zc_total_ns_per_kib=..."
 * line per size with the medians. Exit 1 on a send error, 2 on
 * bad arguments, 77 if the kernel has no SEND_ZC.
 */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZES 16
#define MAX_REPS 15

static uint64_t cpu_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A connected loopback TCP pair: *tx and *rx. 0 or -1. */
static int tcp_pair(int *tx, int *rx) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
      getsockname(l, (struct sockaddr *)&a, &len) < 0)
    return -1;
  *tx = socket(AF_INET, SOCK_STREAM, 0);
  if (*tx < 0 || connect(*tx, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  *rx = accept(l, NULL, NULL);
  close(l);
  int one = 1;
  setsockopt(*tx, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return *rx < 0 ? -1 : 0;
}

struct drain {
  int fd;
  uint64_t bytes;
};

/* The receiving side: read until EOF. */
static void *drain_run(void *arg) {
  struct drain *d = arg;
  static char buf[1 << 20];
  for (;;) {
    ssize_t n = read(d->fd, buf, sizeof buf);
    if (n <= 0) break;
    d->bytes += (uint64_t)n;
  }
  return NULL;
}

/* Send total bytes in chunks of size, zero-copy or not; the sender's CPU ns per KiB,
 * and the process's in *all. */
static double run_once(struct io_uring *ring, size_t size, uint64_t total, int zc,
                       double *all) {
  int tx, rx;
  if (tcp_pair(&tx, &rx) < 0) {
    perror("loopback pair");
    exit(1);
  }
  struct drain d = {.fd = rx};
  uint64_t p0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
  pthread_t th;
  pthread_create(&th, NULL, drain_run, &d);
  uint8_t *buf = aligned_alloc(4096, size);
  memset(buf, 0x5a, size);
  uint64_t sent = 0, t0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
  while (sent < total) {
    size_t want = total - sent < size ? (size_t)(total - sent) : size;
    struct io_uring_sqe *s = io_uring_get_sqe(ring);
    if (zc)
      io_uring_prep_send_zc(s, tx, buf, want, MSG_WAITALL, 0);
    else
      io_uring_prep_send(s, tx, buf, want, MSG_WAITALL);
    io_uring_submit(ring);
    /* SEND: one completion. SEND_ZC: the result (flagged MORE) and then the
     * notification that the buffer is free again. */
    int pending = 1;
    while (pending) {
      struct io_uring_cqe *cqe;
      if (io_uring_wait_cqe(ring, &cqe) < 0) exit(1);
      if (cqe->flags & IORING_CQE_F_NOTIF) {
        pending = 0;
      } else {
        if (cqe->res < 0) {
          fprintf(stderr, "send: %s\n", strerror(-cqe->res));
          exit(cqe->res == -EINVAL && zc ? 77 : 1);
        }
        sent += (uint64_t)cqe->res;
        if (!(cqe->flags & IORING_CQE_F_MORE)) pending = 0;
      }
      io_uring_cqe_seen(ring, cqe);
    }
  }
  uint64_t t1 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
  shutdown(tx, SHUT_WR);
  pthread_join(th, NULL);
  *all = (double)(cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - p0) / ((double)total / 1024.0);
  close(tx);
  close(rx);
  free(buf);
  if (d.bytes != total) {
    fprintf(stderr, "received %llu of %llu bytes\n", (unsigned long long)d.bytes,
            (unsigned long long)total);
    exit(1);
  }
  return (double)(t1 - t0) / ((double)total / 1024.0);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static size_t parse_size(const char *s) {
  char *end;
  unsigned long v = strtoul(s, &end, 10);
  if (*end == 'K' || *end == 'k') v <<= 10, end++;
  if (*end == 'M' || *end == 'm') v <<= 20, end++;
  return (*end == '\0' || *end == ',') ? v : 0;
}

int main(int argc, char **argv) {
  uint64_t mib = 512;
  int reps = 3, nsizes = 0;
  size_t sizes[MAX_SIZES];
  const char *size_list = "16K,64K,256K,1M";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc)
      mib = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
      size_list = argv[++i];
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: sendzc_uring [--mib N] [--sizes S1,S2,...] [--reps R]\n");
      return 2;
    }
  }
  for (const char *p = size_list; *p && nsizes < MAX_SIZES;) {
    size_t v = parse_size(p);
    if (v == 0 || v > (64u << 20)) {
      fprintf(stderr, "sendzc_uring: bad size list '%s'\n", size_list);
      return 2;
    }
    sizes[nsizes++] = v;
    p = strchr(p, ',');
    if (!p) break;
    p++;
  }
  if (mib == 0 || reps < 1 || reps > MAX_REPS) return 2;
  struct io_uring ring;
  int err = io_uring_queue_init(8, &ring, 0);
  if (err) {
    fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-err));
    return 77;
  }
  for (int i = 0; i < nsizes; i++) {
    double plain[MAX_REPS], zc[MAX_REPS], plain_all[MAX_REPS], zc_all[MAX_REPS];
    for (int r = 0; r < reps; r++) {
      plain[r] = run_once(&ring, sizes[i], mib << 20, 0, &plain_all[r]);
      zc[r] = run_once(&ring, sizes[i], mib << 20, 1, &zc_all[r]);
      printf("size=%zu rep=%d send_ns_per_kib=%.1f zc_ns_per_kib=%.1f "
             "send_total_ns_per_kib=%.1f zc_total_ns_per_kib=%.1f\n",
             sizes[i], r, plain[r], zc[r], plain_all[r], zc_all[r]);
    }
    qsort(plain, (size_t)reps, sizeof *plain, cmp_double);
    qsort(zc, (size_t)reps, sizeof *zc, cmp_double);
    qsort(plain_all, (size_t)reps, sizeof *plain_all, cmp_double);
    qsort(zc_all, (size_t)reps, sizeof *zc_all, cmp_double);
    int m = reps / 2;
    printf("RESULT size=%zu send_ns_per_kib=%.1f zc_ns_per_kib=%.1f zc_over_send=%.2f "
           "send_total_ns_per_kib=%.1f zc_total_ns_per_kib=%.1f zc_over_send_total=%.2f\n",
           sizes[i], plain[m], zc[m], zc[m] / plain[m], plain_all[m], zc_all[m],
           zc_all[m] / plain_all[m]);
    fflush(stdout);
  }
  io_uring_queue_exit(&ring);
  return 0;
}
