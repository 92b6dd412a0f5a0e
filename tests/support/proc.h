/*
 * Process-level helpers for the flow-control and long tests: resident memory, CPU time,
 * descriptor limits, and a loopback client whose socket buffers are sized before it
 * connects (so the window it advertises is small from the first byte).
 *
 * Any thread, unless stated.
 */
#ifndef CGNET_TEST_PROC_H
#define CGNET_TEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Resident set size of this process in KiB (VmRSS of /proc/self/status), or -1. */
long tu_rss_kb(void);
/* The same for process `pid` (0: this process). */
long tu_rss_kb_of(pid_t pid);

/* Start $CGNET_EXAMPLES_DIR/NAME with the NULL-terminated `args` and read the first line
 * it prints on stdout (its "listening on ..." line) into `line`. Returns its pid, or -1
 * (then nothing is left running). */
pid_t tu_spawn_example(const char *name, const char *const *args, char *line, size_t cap);
/* SIGTERM, then wait up to timeout_ms (then SIGKILL). Returns the exit status, or -1 if
 * it had to be killed or died from a signal. */
int tu_stop_process(pid_t pid, int timeout_ms);
/* Wait up to timeout_ms for `pid` to exit by itself (then SIGKILL). Its exit status, or
 * -1 as above. */
int tu_wait_exit(pid_t pid, int timeout_ms);
/* A python3 that can import `module` ("python3" from PATH, else Debian's
 * /usr/bin/python3, where PATH may name another install), or NULL. */
const char *tu_python_with(const char *module);
/* The port in `line` after `marker`: "MARKER 127.0.0.1:8000 ..." or "MARKER 8000". -1 if
 * the marker is missing. */
int tu_port_after(const char *line, const char *marker);

/* User + system CPU time of process `pid` (0: this process) in milliseconds, from
 * /proc/PID/stat (resolution: one clock tick, usually 10 ms), or -1. */
long tu_cpu_ms(pid_t pid);

/* Set RLIMIT_NOFILE's soft limit to exactly `soft` (lowering is always allowed; raising
 * is bounded by the hard limit). Returns the resulting soft limit, or -1. */
long tu_set_nofile(long soft);

/* Raise RLIMIT_NOFILE's soft and, if the process may (CAP_SYS_RESOURCE), hard limit to
 * at least `want` (bounded by fs.nr_open). Returns the resulting soft limit. */
long tu_raise_nofile_hard(long want);

/* The highest open descriptor number of this process, or -1. */
int tu_max_fd(void);

/* Connect to 127.0.0.1:port with SO_SNDBUF / SO_RCVBUF set first (0: leave the kernel
 * default) and TCP_NODELAY on, within timeout_ms. Blocking unless `nonblock`. Returns the
 * fd or a negative errno. */
int tu_connect_bufs(int port, int sndbuf, int rcvbuf, int nonblock, int timeout_ms);

#endif
