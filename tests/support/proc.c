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
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#include "support.h"

long tu_rss_kb(void) {
  return tu_rss_kb_of(0);
}

long tu_rss_kb_of(pid_t pid) {
  char path[64];
  if (pid == 0)
    snprintf(path, sizeof(path), "/proc/self/status");
  else
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "re");
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

pid_t tu_spawn_example(const char *name, const char *const *args, char *line, size_t cap) {
  const char *dir = getenv("CGNET_EXAMPLES_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir ? dir : "examples", name);
  char *argv[32];
  int argc = 0;
  argv[argc++] = path;
  for (; args && args[argc - 1] && argc < 31; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  int pipefd[2];
  if (pipe(pipefd) < 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  pid_t pid;
  int rc = posix_spawn(&pid, path, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (rc != 0) {
    fprintf(stderr, "cannot start %s: %s\n", path, strerror(rc));
    close(pipefd[0]);
    return -1;
  }
  /* One line, read byte by byte so nothing after it is swallowed by a stdio buffer;
   * bounded by the pipe closing if the program exits. */
  size_t n = 0;
  char ch;
  while (n + 1 < cap && read(pipefd[0], &ch, 1) == 1 && ch != '\n')
    line[n++] = ch;
  line[n] = '\0';
  close(pipefd[0]);
  if (n == 0) {
    (void)tu_stop_process(pid, 1000);
    return -1;
  }
  return pid;
}

int tu_stop_process(pid_t pid, int timeout_ms) {
  if (pid <= 0) return -1; /* never kill(0 or -1, ...): that signals whole groups */
  kill(pid, SIGTERM);
  return tu_wait_exit(pid, timeout_ms);
}

int tu_wait_exit(pid_t pid, int timeout_ms) {
  int status = 0;
  if (pid <= 0) return -1;
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    tu_sleep_ms(10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

int tu_port_after(const char *line, const char *marker) {
  const char *p = strstr(line, marker);
  if (!p) return -1;
  p += strlen(marker);
  const char *colon = strchr(p, ':');
  const char *space = strchr(p, ' ');
  if (colon && (!space || colon < space)) { /* HOST:PORT (or [v6]:PORT): the last ':' */
    const char *end = space ? space : p + strlen(p);
    const char *last = colon;
    for (const char *q = colon; q && q < end; q = strchr(q + 1, ':'))
      last = q;
    return atoi(last + 1);
  }
  return atoi(p);
}

const char *tu_python_with(const char *module) {
  static const char *const pythons[] = {"python3", "/usr/bin/python3"};
  char code[128];
  snprintf(code, sizeof code, "import %s", module);
  for (size_t i = 0; i < sizeof pythons / sizeof pythons[0]; i++) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *const argv[] = {(char *)pythons[i], "-c", code, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, pythons[i], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == 0 && tu_wait_exit(pid, 20000) == 0) return pythons[i];
  }
  return NULL;
}
