/*
 * Unix domain stream sockets: echo equality with 1 and N loops (path and abstract
 * names), the socket file's life cycle (a stale file is replaced, a live one, even with a
 * full backlog, or a non-socket gives EADDRINUSE, the file is gone after stop), peer
 * credentials, and the TCP-only controls refusing a Unix conn.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgnet.h"
#include "support/dgram.h"
#include "support/support.h"

#define NCLIENTS 10
#define ECHO_BYTES ((size_t)(1u << 20) / TU_PAYLOAD_DIV)

static char dir[64];

static int dir_setup(void **state) {
  if (tu_tmpdir(dir, sizeof dir) != 0) return -1;
  return tu_setup(state);
}

static int dir_teardown(void **state) {
  int rc = tu_teardown(state);
  tu_rmdir(dir);
  return rc;
}

/* "unix://DIR/name" into buf; the path alone into path (if not NULL). */
static const char *sock_addr(char *buf, size_t cap, const char *name, char *path) {
  snprintf(buf, cap, "unix://%s/%s", dir, name);
  if (path) snprintf(path, 108, "%s/%s", dir, name);
  return buf;
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* ---- callbacks --------------------------------------------------------------------- */

typedef struct cred_seen {
  atomic_int pid, uid, gid, rc;
  atomic_int nodelay_rc, keepalive_rc, linger_rc;
  atomic_int remote_empty, local_ok;
  atomic_int done; /* set last: every field above is stored */
} cred_seen;

static cgnet_action unix_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  tu_tracker *t = tu_tracker_of_conn(c);
  cred_seen *cs = t->user;
  if (cs) {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    atomic_store(&cs->rc, cgnet_conn_peer_cred(c, &pid, &uid, &gid));
    atomic_store(&cs->pid, (int)pid);
    atomic_store(&cs->uid, (int)uid);
    atomic_store(&cs->gid, (int)gid);
    TU_CHECK_EQ(cgnet_conn_peer_cred(c, NULL, NULL, NULL), 0);
    atomic_store(&cs->nodelay_rc, cgnet_conn_set_nodelay(c, 1));
    atomic_store(&cs->keepalive_rc, cgnet_conn_set_keepalive(c, 10, 1, 1));
    atomic_store(&cs->linger_rc, cgnet_conn_set_linger(c, 1));
    atomic_store(&cs->remote_empty, cgnet_conn_remote_addr_string(c)[0] == '\0');
    atomic_store(&cs->local_ok,
                 strncmp(cgnet_conn_local_addr_string(c), dir, strlen(dir)) == 0);
    atomic_store(&cs->done, 1);
  }
  return CGNET_NONE;
}

static cgnet_action tcp_cred_on_open(cgnet_conn *c) {
  TU_CHECK(tu_tracker_open(c) != NULL);
  pid_t pid = 0;
  TU_CHECK_EQ(cgnet_conn_peer_cred(c, &pid, NULL, NULL), CGNET_EUNSUPPORTED);
  TU_CHECK_EQ(cgnet_conn_set_nodelay(c, 1), 0);
  return CGNET_NONE;
}

static cgnet_action echo_on_traffic(cgnet_conn *c) {
  const uint8_t *p = NULL;
  size_t n = cgnet_conn_next(c, 0, &p);
  if (n > 0) TU_CHECK_EQ(cgnet_conn_write(c, p, n), 0);
  return CGNET_NONE;
}

static cgnet_action track_on_close(cgnet_conn *c, int reason) {
  tu_tracker_close(c, reason);
  return CGNET_NONE;
}

static cgnet_handler unix_handler(tu_tracker *t) {
  return (cgnet_handler){.ud = t,
                         .on_open = unix_on_open,
                         .on_traffic = echo_on_traffic,
                         .on_close = track_on_close};
}

/* ---- echo -------------------------------------------------------------------------- */

/* NCLIENTS clients on `path` (a file path or "@name") each echo ECHO_BYTES. */
static void run_echo(const char *addr, const char *path, int loops) {
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = unix_handler(t);
  /* loops < 0: that many loops with reuse_port (a Unix listener stays one, on loop 0,
   * and the balancer still spreads its conns). */
  cgnet_options o = {.num_loops = loops < 0 ? -loops : loops,
                     .lb = CGNET_LB_SOURCE_HASH,
                     .reuse_port = loops < 0};
  loops = o.num_loops;
  tu_server s;
  const char *addrs[] = {addr};
  assert_rc(tu_server_start_at(&s, &h, addrs, 1, &o), 0);
  assert_int_equal(cgnet_engine_listen_port(s.eng, 0), CGNET_EAFNOSUPPORT);

  tu_echo_client cl[NCLIENTS];
  uint8_t *tx = malloc(ECHO_BYTES), *rx[NCLIENTS];
  assert_non_null(tx);
  tu_pattern_fill(tx, ECHO_BYTES, 7, 0);
  for (int i = 0; i < NCLIENTS; i++) {
    rx[i] = malloc(ECHO_BYTES);
    assert_non_null(rx[i]);
    int fd = tu_connect_unix(path);
    if (fd < 0) fail_msg("connect %s: %s", path, strerror(-fd));
    cl[i] = (tu_echo_client){
        .fd = fd, .tx = tx, .tx_len = ECHO_BYTES, .rx = rx[i], .rx_len = ECHO_BYTES};
  }
  assert_rc(tu_echo_drive(cl, NCLIENTS, TU_TIMEOUT_MS), 0);
  int used[64] = {0};
  for (int i = 0; i < NCLIENTS; i++) {
    assert_int_equal(tu_first_diff(tx, rx[i], ECHO_BYTES), SIZE_MAX);
    close(cl[i].fd);
    free(rx[i]);
  }
  assert_true(tu_wait_conns(s.eng, 0, TU_TIMEOUT_MS));
  /* Source hash falls back to round-robin for unnamed Unix peers: every loop serves. */
  for (int i = 0; i < atomic_load(&t->nslots); i++)
    used[atomic_load(&t->slots[i].loop) & 63] = 1;
  for (int l = 0; l < loops; l++)
    if (!used[l]) fail_msg("loop %d served no Unix conn", l);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_true(tu_tracker_all_closed_once(t));
  assert_int_equal(atomic_load(&t->opens), NCLIENTS);
  free(tx);
  assert_no_check_failures();
  tu_tracker_free(t);
}

static void test_echo_path(void **state) {
  int loops = (int)(intptr_t)*state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "echo.sock", path);
  run_echo(addr, path, loops);
  assert_false(exists(path)); /* removed at stop */
}

static void test_echo_abstract(void **state) {
  (void)state;
  char addr[96], name[64];
  snprintf(name, sizeof name, "@cgnet-test-%d", (int)getpid());
  snprintf(addr, sizeof addr, "unix://%s", name);
  run_echo(addr, name, 2);
}

/* ---- the socket file --------------------------------------------------------------- */

/* A socket file nobody listens on, as a crashed server leaves it. */
static void make_stale(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  strcpy(un.sun_path, path);
  assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
  assert_int_equal(listen(fd, 1), 0);
  close(fd); /* the file stays */
  assert_true(exists(path));
  assert_int_equal(tu_connect_unix(path), -ECONNREFUSED);
}

static void test_stale_replaced(void **state) {
  (void)state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "stale.sock", path);
  make_stale(path);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = unix_handler(t);
  tu_server s;
  const char *addrs[] = {addr};
  assert_rc(tu_server_start_at(&s, &h, addrs, 1, NULL), 0);
  int fd = tu_connect_unix(path);
  assert_true(fd >= 0);
  assert_int_equal(tu_send_all(fd, "ping", 4, TU_TIMEOUT_MS), 0);
  char buf[4];
  assert_int_equal(tu_recv_exact(fd, buf, 4, TU_TIMEOUT_MS, NULL), 0);
  assert_memory_equal(buf, "ping", 4);
  close(fd);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_false(exists(path));
  assert_no_check_failures();
  tu_tracker_free(t);
}

static void test_live_in_use(void **state) {
  (void)state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "live.sock", path);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = unix_handler(t);
  tu_server s;
  const char *addrs[] = {addr};
  assert_rc(tu_server_start_at(&s, &h, addrs, 1, NULL), 0);
  struct stat before;
  assert_int_equal(lstat(path, &before), 0);

  /* A second engine on the live path fails and leaves the first one's file alone. */
  cgnet_engine *eng2 = NULL;
  assert_rc(cgnet_engine_start(&h, addrs, 1, NULL, &eng2), CGNET_EADDRINUSE);
  assert_null(eng2);
  struct stat after;
  assert_int_equal(lstat(path, &after), 0);
  assert_int_equal(after.st_ino, before.st_ino);
  int fd = tu_connect_unix(path); /* and the first one still serves */
  assert_true(fd >= 0);
  close(fd);

  /* Replaced behind our back: stop must not remove somebody else's file. */
  assert_int_equal(unlink(path), 0);
  make_stale(path);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_true(exists(path));
  unlink(path);
  assert_no_check_failures();
  tu_tracker_free(t);
}

/* A live server whose backlog is full: a blocking probe would wait for room in it
 * forever. The start must say CGNET_EADDRINUSE promptly and leave the file alone. */
typedef struct start_job {
  const cgnet_handler *h;
  const char *addr;
  int rc;
} start_job;

static void *start_thread(void *arg) {
  start_job *j = arg;
  const char *addrs[] = {j->addr};
  cgnet_engine *eng = NULL;
  j->rc = cgnet_engine_start(j->h, addrs, 1, NULL, &eng);
  cgnet_engine_free(eng);
  return NULL;
}

static void test_live_backlog_full(void **state) {
  (void)state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "full.sock", path);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(lfd >= 0);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  strcpy(un.sun_path, path);
  assert_int_equal(bind(lfd, (struct sockaddr *)&un, sizeof un), 0);
  assert_int_equal(listen(lfd, 0), 0);
  /* Queue connections nobody accepts until the kernel refuses more (EAGAIN). */
  enum { MAX_PENDING = 64 };
  int pending[MAX_PENDING], npending = 0, full = 0;
  while (npending < MAX_PENDING && !full) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (connect(fd, (struct sockaddr *)&un, sizeof un) == 0) {
      pending[npending++] = fd;
      continue;
    }
    int err = errno;
    close(fd);
    if (err != EAGAIN) fail_msg("connect: %s", strerror(err));
    full = 1;
  }
  assert_true(full);
  struct stat before;
  assert_int_equal(lstat(path, &before), 0);

  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = unix_handler(t);
  start_job *j = calloc(1, sizeof *j); /* outlives an abandoned thread */
  *j = (start_job){.h = &h, .addr = addr, .rc = 1};
  if (tu_run_bounded(start_thread, j, 5000 * TU_SLOW) != 0)
    fail_msg("starting on a live path with a full backlog did not return");
  assert_rc(j->rc, CGNET_EADDRINUSE);
  free(j);
  struct stat after;
  assert_int_equal(lstat(path, &after), 0);
  assert_int_equal(after.st_ino, before.st_ino);
  /* The server still owns its socket: it accepts what was queued. */
  int a = accept(lfd, NULL, NULL);
  assert_true(a >= 0);
  close(a);
  for (int i = 0; i < npending; i++)
    close(pending[i]);
  close(lfd);
  unlink(path);
  tu_tracker_free(t);
}

static void test_not_a_socket(void **state) {
  (void)state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "regular", path);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("keep me", f);
  fclose(f);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = unix_handler(t);
  cgnet_engine *eng = NULL;
  const char *addrs[] = {addr};
  assert_rc(cgnet_engine_start(&h, addrs, 1, NULL, &eng), CGNET_EADDRINUSE);
  struct stat st;
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_size, 7);
  tu_tracker_free(t);
}

/* A later address failing to bind removes the socket file an earlier one created. */
static void test_failed_start_cleans_up(void **state) {
  (void)state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "first.sock", path);
  tu_tracker *t = tu_tracker_new();
  cgnet_handler h = unix_handler(t);
  cgnet_engine *eng = NULL;
  const char *addrs[] = {addr, "unix://"};
  assert_rc(cgnet_engine_start(&h, addrs, 2, NULL, &eng), CGNET_EBADADDR);
  int port = 0, busy = tu_listen_any(&port);
  char tcp[64];
  snprintf(tcp, sizeof tcp, "tcp://127.0.0.1:%d", port);
  const char *addrs2[] = {addr, tcp};
  cgnet_options o = {.reuse_addr = CGNET_OFF};
  assert_rc(cgnet_engine_start(&h, addrs2, 2, &o, &eng), CGNET_EADDRINUSE);
  close(busy);
  assert_false(exists(path));
  tu_tracker_free(t);
}

/* ---- credentials and controls ------------------------------------------------------ */

static void test_peer_cred(void **state) {
  (void)state;
  char addr[160], path[108];
  sock_addr(addr, sizeof addr, "cred.sock", path);
  tu_tracker *t = tu_tracker_new();
  cred_seen cs;
  memset(&cs, 0, sizeof cs);
  atomic_store(&cs.rc, 1);
  t->user = &cs;
  cgnet_handler h = unix_handler(t);
  tu_server s;
  const char *addrs[] = {addr};
  cgnet_options o = {.tcp_keepalive = 30}; /* TCP defaults are skipped for Unix conns */
  assert_rc(tu_server_start_at(&s, &h, addrs, 1, &o), 0);
  int fd = tu_connect_unix(path);
  assert_true(fd >= 0);
  /* on_open counts the open first and stores what it saw after: wait for the last. */
  assert_true(tu_wait_atomic_eq(&cs.done, 1, TU_TIMEOUT_MS));
  assert_int_equal(atomic_load(&t->opens), 1);
  assert_rc(atomic_load(&cs.rc), 0);
  assert_int_equal(atomic_load(&cs.pid), (int)getpid());
  assert_int_equal(atomic_load(&cs.uid), (int)getuid());
  assert_int_equal(atomic_load(&cs.gid), (int)getgid());
  assert_rc(atomic_load(&cs.nodelay_rc), CGNET_EUNSUPPORTED);
  assert_rc(atomic_load(&cs.keepalive_rc), CGNET_EUNSUPPORTED);
  assert_rc(atomic_load(&cs.linger_rc), 0);
  assert_true(atomic_load(&cs.remote_empty));
  assert_true(atomic_load(&cs.local_ok));
  close(fd);
  assert_rc(tu_server_stop(&s, 1000), 0);

  /* On a TCP conn peer_cred is unsupported. */
  tu_tracker *t2 = tu_tracker_new();
  cgnet_handler h2 = {.ud = t2, .on_open = tcp_cred_on_open, .on_close = track_on_close};
  assert_rc(tu_server_start(&s, &h2, NULL), 0);
  fd = tu_connect4(s.port);
  assert_true(fd >= 0);
  assert_true(tu_wait_atomic_eq(&t2->opens, 1, TU_TIMEOUT_MS));
  close(fd);
  assert_rc(tu_server_stop(&s, 1000), 0);
  assert_no_check_failures();
  tu_tracker_free(t);
  tu_tracker_free(t2);
}

#define T(f) cmocka_unit_test_setup_teardown(f, dir_setup, dir_teardown)

int main(void) {
  tu_apply_test_filter();
  const struct CMUnitTest tests[] = {
      {"echo/path/loops=1", test_echo_path, dir_setup, dir_teardown, (void *)(intptr_t)1},
      {"echo/path/loops=4", test_echo_path, dir_setup, dir_teardown, (void *)(intptr_t)4},
      {"echo/path/loops=3/reuse_port", test_echo_path, dir_setup, dir_teardown,
       (void *)(intptr_t)-3},
      T(test_echo_abstract),
      T(test_stale_replaced),
      T(test_live_in_use),
      T(test_live_backlog_full),
      T(test_not_a_socket),
      T(test_failed_start_cleans_up),
      T(test_peer_cred),
  };
  return cmocka_run_group_tests_name("test_unix", tests, NULL, NULL);
}
