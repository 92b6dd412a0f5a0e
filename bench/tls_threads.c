/*
 * What OpenSSL 3's full handshakes cost per thread when several threads do them at once,
 * and whether the known mitigations help: a context (SSL_CTX) per thread, or a library
 * context (OSSL_LIB_CTX) and a context per thread. OpenSSL 3.0 is known to lose handshake
 * throughput to locks shared between threads (the algorithm store, the name map,
 * reference counts on the shared certificate and key); cgnet's loops share one SSL_CTX,
 * so this measures what that costs on this machine.
 *
 * Each handshake is a client and a server SSL object on memory BIOs, on the same thread:
 * TLS 1.3, an ECDSA P-256 server certificate the client verifies, no session tickets, no
 * sockets. With --side server (the default) the client side always runs in a library
 * context of its own thread, so that only the server side's arrangement differs; with
 * --side both the client side is arranged like the server side (shared, a context each,
 * or a context in the thread's library context). The arrangements, each doing
 * --handshakes per thread (or process):
 *
 *   1 thread        the reference
 *   T processes     T forked processes: nothing shared in memory, so any rise over one
 *                   thread is the machine's (caches, clocks, the host)
 *   T threads, shared      one server SSL_CTX for all (what cgnet's loops do)
 *   T threads, ctx each    a server SSL_CTX per thread, in the default library context
 *   T threads, libctx each a server SSL_CTX per thread in an OSSL_LIB_CTX of its own, the
 *                          key and the certificate decoded into it
 *
 * The arrangements take turns for --rounds rounds (this machine is shared and noisy);
 * printed: the median and range of the CPU time per handshake (client and server sides
 * together), each threaded figure over the processes' figure, and the threads' voluntary
 * context switches per 1,000 handshakes: a thread that finds a lock held sleeps in the
 * kernel (a futex wait), so this counts contended locks, however noisy the clock.
 *
 *   build/bench/tls_threads [--threads T] [--handshakes N] [--rounds R]
 *                           [--side server|both]
 *
 * Certificates come from tests/support/tls_certs.c (made at start).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "support/tls_certs.h"

enum arrangement { ONE_THREAD, PROCESSES, SHARED, CTX_EACH, LIBCTX_EACH, ARRANGEMENTS };

static const char *const arrangement_names[ARRANGEMENTS] = {
    "1 thread", "T processes", "T threads, shared", "T threads, ctx each",
    "T threads, libctx each"};

#define MAX_THREADS 64
#define MAX_ROUNDS 64

static tu_tls_certs g_certs;
static int g_client_follows; /* --side both */

static void die(const char *what) {
  fprintf(stderr, "tls_threads: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

/* What a thread spent: CPU seconds and the times it slept (voluntary context switches). */
typedef struct spent {
  double cpu_s;
  double waits;
} spent;

static spent thread_spent(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) die("getrusage");
  return (spent){(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
                 (double)ru.ru_nvcsw};
}

static spent spent_since(spent start) {
  spent now = thread_spent();
  return (spent){now.cpu_s - start.cpu_s, now.waits - start.waits};
}

static void spent_add(spent *sum, spent x) {
  sum->cpu_s += x.cpu_s;
  sum->waits += x.waits;
}

/* ---- contexts -------------------------------------------------------------------- */

static BIO *pem_bio(const char *text) {
  return BIO_new_mem_buf(text, -1);
}

/* The server's certificate and key, decoded inside `lib`. */
static void load_server_identity(SSL_CTX *sc, OSSL_LIB_CTX *lib) {
  BIO *cb = pem_bio(g_certs.server.cert), *kb = pem_bio(g_certs.server.key);
  X509 *cert = X509_new_ex(lib, NULL);
  EVP_PKEY *key = NULL;
  if (!cb || !kb || !cert || !PEM_read_bio_X509(cb, &cert, NULL, NULL) ||
      !(key = PEM_read_bio_PrivateKey_ex(kb, NULL, NULL, NULL, lib, NULL)) ||
      SSL_CTX_use_certificate(sc, cert) != 1 || SSL_CTX_use_PrivateKey(sc, key) != 1)
    die("server certificate");
  X509_free(cert);
  EVP_PKEY_free(key);
  BIO_free(cb);
  BIO_free(kb);
}

/* The client trusts the test CA and checks the server's name, as cgnet's clients do. */
static void load_client_trust(SSL_CTX *cc, OSSL_LIB_CTX *lib) {
  BIO *b = pem_bio(g_certs.ca.cert);
  X509 *ca = X509_new_ex(lib, NULL);
  if (!b || !ca || !PEM_read_bio_X509(b, &ca, NULL, NULL) ||
      X509_STORE_add_cert(SSL_CTX_get_cert_store(cc), ca) != 1)
    die("client trust");
  SSL_CTX_set_verify(cc, SSL_VERIFY_PEER, NULL);
  X509_free(ca);
  BIO_free(b);
}

static SSL_CTX *new_ctx(OSSL_LIB_CTX *lib, int server) {
  SSL_CTX *c =
      SSL_CTX_new_ex(lib, NULL, server ? TLS_server_method() : TLS_client_method());
  if (!c || !SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION)) die("SSL_CTX_new_ex");
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(c, 0);
  if (server)
    load_server_identity(c, lib);
  else
    load_client_trust(c, lib);
  return c;
}

/* ---- handshakes ------------------------------------------------------------------ */

/* Move whatever `from` wrote into `to`'s read BIO. */
static void carry(BIO *from, BIO *to, char *buf, size_t cap) {
  int n;
  while ((n = BIO_read(from, buf, (int)cap)) > 0)
    if (BIO_write(to, buf, n) != n) die("BIO_write");
}

static void one_handshake(SSL_CTX *server, SSL_CTX *client) {
  SSL *s = SSL_new(server), *c = SSL_new(client);
  BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
  BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
  if (!s || !c || !s_in || !s_out || !c_in || !c_out) die("SSL_new");
  SSL_set_bio(s, s_in, s_out);
  SSL_set_bio(c, c_in, c_out);
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
  if (!SSL_set1_host(c, "localhost")) die("SSL_set1_host");
  char buf[16384];
  int done = 0;
  for (int flight = 0; flight < 8 && !done; flight++) { /* TLS 1.3 needs 3 */
    int rc = SSL_do_handshake(c);
    carry(c_out, s_in, buf, sizeof(buf));
    int rs = SSL_do_handshake(s);
    carry(s_out, c_in, buf, sizeof(buf));
    done = rc == 1 && rs == 1;
  }
  if (!done || SSL_get_verify_result(c) != X509_V_OK) die("handshake did not complete");
  SSL_free(s);
  SSL_free(c);
}

/* What `count` handshakes between these contexts cost the calling thread. */
static spent handshakes_spent(SSL_CTX *server, SSL_CTX *client, int count) {
  one_handshake(server, client); /* first-use set-up stays out of the figure */
  spent start = thread_spent();
  for (int i = 0; i < count; i++)
    one_handshake(server, client);
  return spent_since(start);
}

/* ---- arrangements ---------------------------------------------------------------- */

/* The shared contexts, in the default library context. */
typedef struct shared_ctxs {
  SSL_CTX *server, *client;
} shared_ctxs;

typedef struct job {
  const shared_ctxs *shared; /* NULL: contexts made in the thread */
  int own_lib;               /* with shared NULL: in a library context of the thread's */
  int count;
  spent used;
} job;

/* A thread's contexts: the server's as the job says; the client's the same way with
 * --side both, else always in a library context of its own. */
static void *job_thread(void *arg) {
  job *j = arg;
  OSSL_LIB_CTX *lib = NULL, *client_lib = NULL;
  if (!j->shared && j->own_lib && !(lib = OSSL_LIB_CTX_new())) die("OSSL_LIB_CTX_new");
  SSL_CTX *server = j->shared ? j->shared->server : new_ctx(lib, 1);
  SSL_CTX *client = NULL;
  if (g_client_follows) {
    client = j->shared ? j->shared->client : new_ctx(lib, 0);
  } else {
    if (!(client_lib = OSSL_LIB_CTX_new())) die("OSSL_LIB_CTX_new");
    client = new_ctx(client_lib, 0);
  }
  j->used = handshakes_spent(server, client, j->count);
  if (!j->shared) SSL_CTX_free(server);
  if (!j->shared || !g_client_follows) SSL_CTX_free(client);
  OSSL_LIB_CTX_free(client_lib);
  OSSL_LIB_CTX_free(lib);
  return NULL;
}

static spent run_threads(const shared_ctxs *shared, int own_lib, int threads, int count) {
  job jobs[MAX_THREADS];
  pthread_t tid[MAX_THREADS];
  for (int i = 0; i < threads; i++) {
    jobs[i] = (job){.shared = shared, .own_lib = own_lib, .count = count};
    if (pthread_create(&tid[i], NULL, job_thread, &jobs[i]) != 0) die("pthread_create");
  }
  spent sum = {0, 0};
  for (int i = 0; i < threads; i++) {
    pthread_join(tid[i], NULL);
    spent_add(&sum, jobs[i].used);
  }
  return sum;
}

/* T children at once, each with its own contexts; they report through a pipe. */
static spent run_processes(int procs, int count) {
  int fds[2];
  if (pipe(fds) != 0) die("pipe");
  pid_t pids[MAX_THREADS];
  for (int i = 0; i < procs; i++) {
    pids[i] = fork();
    if (pids[i] < 0) die("fork");
    if (pids[i] == 0) {
      close(fds[0]);
      job alone = {.count = count}; /* its own contexts, as a thread of its own */
      job_thread(&alone);
      spent used = alone.used;
      ssize_t w = write(fds[1], &used, sizeof(used));
      _exit(w == (ssize_t)sizeof(used) ? 0 : 1);
    }
  }
  close(fds[1]);
  spent sum = {0, 0}, one;
  int got = 0;
  while (read(fds[0], &one, sizeof(one)) == (ssize_t)sizeof(one)) {
    spent_add(&sum, one);
    got++;
  }
  close(fds[0]);
  for (int i = 0; i < procs; i++) {
    int st;
    if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      die("a child failed");
  }
  if (got != procs) die("a child did not report");
  return sum;
}

/* One run of arrangement `a`: CPU microseconds and waits per handshake. */
static spent run_arrangement(enum arrangement a, const shared_ctxs *shared, int threads,
                             int count) {
  spent s;
  int n = threads;
  switch (a) {
  case ONE_THREAD:
    s = run_threads(shared, 0, 1, count);
    n = 1;
    break;
  case PROCESSES:
    s = run_processes(threads, count);
    break;
  case SHARED:
    s = run_threads(shared, 0, threads, count);
    break;
  case CTX_EACH:
    s = run_threads(NULL, 0, threads, count);
    break;
  default:
    s = run_threads(NULL, 1, threads, count);
    break;
  }
  return (spent){s.cpu_s / (n * count) * 1e6, s.waits / (n * count)};
}

/* ---- main ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static long parse(const char *flag, const char *v, long lo, long hi) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || n < lo || n > hi) {
    fprintf(stderr, "tls_threads: %s wants a number in [%ld, %ld], not '%s'\n", flag, lo,
            hi, v);
    exit(2);
  }
  return n;
}

int main(int argc, char **argv) {
  long threads = 2, count = 1000, rounds = 5;
  for (int i = 1; i < argc; i += 2) {
    const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (value && strcmp(flag, "--threads") == 0)
      threads = parse(flag, value, 2, MAX_THREADS);
    else if (value && strcmp(flag, "--handshakes") == 0)
      count = parse(flag, value, 1, 1 << 24);
    else if (value && strcmp(flag, "--rounds") == 0)
      rounds = parse(flag, value, 1, MAX_ROUNDS);
    else if (value && strcmp(flag, "--side") == 0 &&
             (strcmp(value, "server") == 0 || strcmp(value, "both") == 0))
      g_client_follows = strcmp(value, "both") == 0;
    else {
      fprintf(
          stderr,
          "usage: %s [--threads T] [--handshakes N] [--rounds R] [--side server|both]\n",
          argv[0]);
      return 2;
    }
  }
  if (tu_tls_certs_make(&g_certs) != 0) die("certificates");
  shared_ctxs shared = {new_ctx(NULL, 1), new_ctx(NULL, 0)};
  static double us[ARRANGEMENTS][MAX_ROUNDS], waits[ARRANGEMENTS][MAX_ROUNDS];
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < ARRANGEMENTS; k++) {
      enum arrangement a = (enum arrangement)((k + r) % ARRANGEMENTS); /* take turns */
      spent s = run_arrangement(a, &shared, (int)threads, (int)count);
      us[a][r] = s.cpu_s;
      waits[a][r] = s.waits * 1000;
    }
  printf(
      "TLS 1.3 full handshakes (client and server on one thread, ECDSA P-256), T = %ld,\n"
      "%ld per thread or process, %ld rounds, client side %s: CPU per handshake,\n"
      "median (min-max)\n",
      threads, count, rounds,
      g_client_follows ? "arranged as the server's" : "in a library context each");
  double med[ARRANGEMENTS];
  for (int a = 0; a < ARRANGEMENTS; a++) {
    double lo = us[a][0], hi = us[a][0];
    for (int r = 1; r < rounds; r++) {
      lo = us[a][r] < lo ? us[a][r] : lo;
      hi = us[a][r] > hi ? us[a][r] : hi;
    }
    med[a] = median(us[a], (int)rounds);
    printf("  %-24s %6.0f us (%.0f-%.0f)", arrangement_names[a], med[a], lo, hi);
    printf("  %6.0f waits/1k", median(waits[a], (int)rounds));
    if (a >= SHARED) printf("   %.2fx the processes'", med[a] / med[PROCESSES]);
    printf("\n");
  }
  SSL_CTX_free(shared.server);
  SSL_CTX_free(shared.client);
  tu_tls_certs_free(&g_certs);
  return 0;
}
