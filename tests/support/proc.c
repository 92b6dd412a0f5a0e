/* Process state helpers (see proc.h). Any thread. */
#include "proc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support.h"

long tu_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kb = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

long tu_cpu_ms(pid_t pid) {
  char path[64], buf[1024];
  if (pid == 0)
    snprintf(path, sizeof(path), "/proc/self/stat");
  else
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  /* The command name (field 2) may hold spaces: fields are counted after its ')'. */
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  p += 2; /* now at field 3, the state */
  unsigned long long utime = 0, stime = 0;
  if (sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
      2)
    return -1;
  long tck = sysconf(_SC_CLK_TCK);
  if (tck <= 0) tck = 100;
  return (long)((utime + stime) * 1000ull / (unsigned long long)tck);
}

long tu_set_nofile(long soft) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
  rlim_t want = (rlim_t)soft;
  if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
  return (long)rl.rlim_cur;
}

static long read_nr_open(void) {
  FILE *f = fopen("/proc/sys/fs/nr_open", "re");
  if (!f) return -1;
  long v = -1;
  if (fscanf(f, "%ld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

long tu_raise_nofile_hard(long want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
  long nr_open = read_nr_open();
  if (nr_open > 0 && want > nr_open) want = nr_open;
  if (rl.rlim_max != RLIM_INFINITY && (long)rl.rlim_max < want) {
    struct rlimit hard = {.rlim_cur = (rlim_t)want, .rlim_max = (rlim_t)want};
    (void)setrlimit(RLIMIT_NOFILE, &hard); /* fails without CAP_SYS_RESOURCE */
  }
  return tu_raise_nofile(want);
}

int tu_max_fd(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int self = dirfd(d), max = -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd != self && fd > max) max = fd;
  }
  closedir(d);
  return max;
}

int tu_connect_bufs(int port, int sndbuf, int rcvbuf, int nonblock, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  if (sndbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  if (rcvbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
    if (errno != EINPROGRESS) {
      int e = errno;
      close(fd);
      return -e;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    do {
      r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
      int e = r == 0 ? ETIMEDOUT : (r < 0 ? errno : (soerr ? soerr : EIO));
      close(fd);
      return -e;
    }
  }
  if (!nonblock) (void)tu_set_nonblock(fd, 0);
  return fd;
}
