/* The examples' shared command-line helper (see args.h). Main thread. */
#include "args.h"
#include "cgnet_tls.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

void ex_args_init(ex_args *a, const char *prog, const char *usage, int argc, char **argv) {
  a->prog = prog;
  a->usage = usage;
  a->argc = argc;
  a->argv = argv;
  a->i = 0;
}

int ex_is(const char *arg, const char *flag) {
  return strcmp(arg, flag) == 0;
}

const char *ex_next(ex_args *a) {
  if (a->i + 1 >= a->argc) return NULL;
  const char *arg = a->argv[++a->i];
  if (ex_is(arg, "--help") || ex_is(arg, "-h")) {
    fputs(a->usage, stdout);
    exit(0);
  }
  return arg;
}

void ex_usage_error(const ex_args *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", a->prog);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n(%s --help shows the usage)\n", a->prog);
  exit(EX_USAGE_STATUS);
}

void ex_unknown(const ex_args *a, const char *arg) {
  if (arg[0] == '-') ex_usage_error(a, "unknown option '%s'", arg);
  ex_usage_error(a, "unexpected argument '%s'", arg);
}

const char *ex_value(ex_args *a, const char *flag) {
  if (a->i + 1 >= a->argc) ex_usage_error(a, "%s needs a value", flag);
  return a->argv[++a->i];
}

int ex_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) {
  /* By hand rather than strtoull: strtoull accepts leading spaces and a sign, and turns
   * "-5" into 2^64 - 5. */
  if (*s == '\0') return -1;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return -1; /* would overflow */
    v = v * 10 + d;
  }
  if (v < min || v > max) return -1;
  *out = v;
  return 0;
}

uint64_t ex_u64(ex_args *a, const char *flag, uint64_t min, uint64_t max) {
  const char *s = ex_value(a, flag);
  uint64_t v;
  if (ex_parse_u64(s, min, max, &v) != 0)
    ex_usage_error(a, "%s '%s': want a whole number from %llu to %llu", flag, s,
                   (unsigned long long)min, (unsigned long long)max);
  return v;
}

void ex_loops(ex_args *a, const char *flag, cgnet_options *opts) {
  uint64_t n = ex_u64(a, flag, 0, EX_MAX_LOOPS);
  opts->num_loops = (int)n;
  opts->multicore = n == 0; /* 0: one loop per online CPU */
}

void ex_backend(ex_args *a, const char *flag, cgnet_options *opts) {
  const char *v = ex_value(a, flag);
  if (strcmp(v, "epoll") == 0)
    opts->backend = CGNET_BACKEND_EPOLL;
  else if (strcmp(v, "io_uring") == 0)
    opts->backend = CGNET_BACKEND_IO_URING;
  else if (strcmp(v, "auto") == 0)
    opts->backend = CGNET_BACKEND_AUTO;
  else
    ex_usage_error(a, "%s '%s': want epoll, io_uring or auto", flag, v);
}

/* ---- addresses ------------------------------------------------------------------------
 */

static const struct {
  const char *name;
  int kind;
  int family; /* 4 or 6: the only IP family the scheme takes; 0: either */
} SCHEMES[] = {
    {"tcp", EX_ADDR_TCP, 0},   {"tcp4", EX_ADDR_TCP, 4}, {"tcp6", EX_ADDR_TCP, 6},
    {"udp", EX_ADDR_UDP, 0},   {"udp4", EX_ADDR_UDP, 4}, {"udp6", EX_ADDR_UDP, 6},
    {"unix", EX_ADDR_UNIX, 0}, {"tls", EX_ADDR_TLS, 0},  {"tls4", EX_ADDR_TLS, 4},
    {"tls6", EX_ADDR_TLS, 6},
};

static const char *kind_name(int kind) {
  return kind == EX_ADDR_TCP   ? "tcp"
         : kind == EX_ADDR_UDP ? "udp"
         : kind == EX_ADDR_TLS ? "tls"
                               : "unix";
}

/* The port after the host: 1..5 digits, <= 65535; 0 only for a listen address. NULL when
 * fine, else what is wrong. */
static const char *check_port(const char *p, ex_addr_use use) {
  uint64_t port;
  if (*p != ':') return "has no :PORT";
  if (strlen(p + 1) > 5 || ex_parse_u64(p + 1, 0, 65535, &port) != 0)
    return "has a port that is not 0..65535";
  if (port == 0 && use == EX_DIAL) return "has port 0, which cannot be dialed";
  return NULL;
}

static int is_name_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '.' || ch == '_';
}

/* HOST:PORT of an IP scheme. NULL when fine, else what is wrong. */
static const char *check_host_port(const char *rest, int family, ex_addr_use use) {
  char host[256];
  const char *after;
  if (rest[0] == '[') { /* [v6]:port, with an optional %zone inside the brackets */
    const char *close = strchr(rest, ']');
    size_t n = close ? (size_t)(close - rest - 1) : 0;
    if (!close || n == 0 || n >= sizeof host) return "has a malformed [IPv6] host";
    memcpy(host, rest + 1, n);
    host[n] = '\0';
    char *zone = strchr(host, '%');
    if (zone) *zone = '\0';
    struct in6_addr ip6;
    if (inet_pton(AF_INET6, host, &ip6) != 1) return "has a malformed [IPv6] host";
    if (family == 4) return "has an IPv6 host but an IPv4-only scheme";
    after = close + 1;
  } else {
    const char *colon = strrchr(rest, ':');
    size_t n = colon ? (size_t)(colon - rest) : strlen(rest);
    if (n >= sizeof host) return "has a host name that is too long";
    memcpy(host, rest, n);
    host[n] = '\0';
    if (strchr(host, ':')) return "has an IPv6 host without [brackets]";
    for (size_t i = 0; i < n; i++)
      if (!is_name_char(host[i])) return "has a malformed host";
    struct in_addr ip4;
    int numeric = n > 0 && strspn(host, "0123456789.") == n;
    if (numeric && inet_pton(AF_INET, host, &ip4) != 1) return "has a malformed IPv4 host";
    if (numeric && family == 6) return "has an IPv4 host but an IPv6-only scheme";
    if (n == 0 && use == EX_DIAL) return "has no host to dial";
    after = rest + n;
  }
  return check_port(after, use);
}

/* PATH or @NAME of unix://. NULL when fine, else what is wrong. */
static const char *check_unix(const char *rest) {
  const struct sockaddr_un *un = NULL;
  size_t cap = sizeof un->sun_path;
  size_t n = strlen(rest);
  if (n == 0 || (rest[0] == '@' && n == 1)) return "has an empty path";
  if (rest[0] == '@' ? n > cap : n >= cap) return "has a path that is too long";
  return NULL;
}

int ex_check_addr(const ex_args *a, const char *role, const char *addr, int allowed,
                  ex_addr_use use, const char *why_not) {
  const char *sep = strstr(addr, "://");
  size_t slen = sep ? (size_t)(sep - addr) : 0;
  int kind = 0, family = 0;
  for (size_t i = 0; sep && i < sizeof SCHEMES / sizeof SCHEMES[0]; i++)
    if (strlen(SCHEMES[i].name) == slen && strncmp(addr, SCHEMES[i].name, slen) == 0) {
      kind = SCHEMES[i].kind;
      family = SCHEMES[i].family;
    }
  if (!kind)
    ex_usage_error(a,
                   "%s '%s' has no known scheme (tcp://, tcp4://, tcp6://, udp://, "
                   "udp4://, udp6://, tls://, tls4://, tls6://, unix://)",
                   role, addr);
  if (!(allowed & kind))
    ex_usage_error(a, "%s '%s': %s:// is not supported here (%s)", role, addr,
                   kind_name(kind), why_not ? why_not : "wrong kind of address");
  const char *rest = sep + 3;
  /* A udp address may end in "?OPTIONS" ("?sessions=1"): cgnet checks them at start. */
  char hostport[320];
  const char *query = kind == EX_ADDR_UDP ? strchr(rest, '?') : NULL;
  if (query) {
    size_t n = (size_t)(query - rest);
    if (n >= sizeof hostport) ex_usage_error(a, "%s '%s' is too long", role, addr);
    memcpy(hostport, rest, n);
    hostport[n] = '\0';
    rest = hostport;
  }
  const char *wrong =
      kind == EX_ADDR_UNIX ? check_unix(rest) : check_host_port(rest, family, use);
  if (wrong) ex_usage_error(a, "%s '%s' %s", role, addr, wrong);
  return kind;
}

void ex_print_listening(const char *prog, cgnet_engine *eng, const char *const *addrs,
                        const char *extra) {
  printf("%s: listening on", prog);
  for (size_t i = 0; i < cgnet_engine_num_listeners(eng); i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char where[160] = "?";
    if (cgnet_engine_listen_addr(eng, i, (struct sockaddr *)&ss, &len) == 0)
      cgnet_format_addr((struct sockaddr *)&ss, len, where, sizeof where);
    /* The scheme as the user wrote it; a Unix path "/tmp/s" or "@name" follows "://"
     * as it would in the address. */
    const char *sep = strstr(addrs[i], "://");
    int slen = sep ? (int)(sep - addrs[i]) : 3;
    printf("%s %.*s://%s", i ? "," : "", slen, sep ? addrs[i] : "tcp", where);
  }
  int loops = cgnet_engine_num_loops(eng);
  printf(" (%d loop%s, %s%s%s)\n", loops, loops == 1 ? "" : "s",
         cgnet_backend_name(cgnet_engine_backend(eng)), extra ? ", " : "",
         extra ? extra : "");
  fflush(stdout); /* a script may be waiting for this line on a pipe */
}

int ex_close_is_error(int reason) {
  return reason != CGNET_EOF && reason != CGNET_ELOCALCLOSE && reason != CGNET_ESHUTDOWN;
}

void ex_block_stop_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, set, NULL);
}

int ex_address_arg(const char *arg, const char **addr, int *have_addr) {
  if (arg[0] == '-' || *have_addr) return 0;
  *addr = arg;
  *have_addr = 1;
  return 1;
}

/* ---- TLS ------------------------------------------------------------------------------
 */

int ex_tls_arg(ex_args *a, const char *arg, ex_tls *t) {
  if (ex_is(arg, "--cert"))
    t->cert = ex_value(a, arg);
  else if (ex_is(arg, "--key"))
    t->key = ex_value(a, arg);
  else if (ex_is(arg, "--ca"))
    t->ca = ex_value(a, arg);
  else if (ex_is(arg, "--insecure"))
    t->insecure = 1;
  else if (ex_is(arg, "--no-tickets"))
    t->no_tickets = 1;
  else
    return 0;
  return 1;
}

static cgnet_tls_ctx *load_ctx(const cgnet_tls_options *o, const char *prog) {
  char msg[256] = "";
  cgnet_tls_ctx *ctx = NULL;
  int err = cgnet_tls_ctx_new(o, &ctx, msg, sizeof msg);
  if (err) {
    fprintf(stderr, "%s: TLS: %s (%s)\n", prog, msg[0] ? msg : cgnet_strerror(err),
            cgnet_err_name(err));
    exit(1);
  }
  return ctx;
}

void ex_tls_server(const ex_args *a, const ex_tls *t, const char *const *addrs, size_t n,
                   cgnet_options *opts) {
  int any = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(addrs[i], "tls", 3) == 0) any = 1;
  if (!any) {
    if (t->cert || t->key || t->no_tickets)
      ex_usage_error(a, "--cert, --key and --no-tickets need a tls:// address");
    return;
  }
  if (!t->cert || !t->key)
    ex_usage_error(a, "a tls:// address needs --cert FILE and --key FILE");
  cgnet_tls_cert cert = {.chain = {.file = t->cert}, .key = {.file = t->key}};
  cgnet_tls_options o = {.role = CGNET_TLS_SERVER,
                         .certs = &cert,
                         .ncerts = 1,
                         .alpn = t->alpn,
                         .disable_tickets = t->no_tickets};
  opts->tls = load_ctx(&o, a->prog);
}

void ex_tls_client(const ex_tls *t, const char *prog, cgnet_options *opts) {
  if (!t->ca && !t->insecure) return;
  cgnet_tls_options o = {.role = CGNET_TLS_CLIENT, .insecure_skip_verify = t->insecure};
  if (t->ca) o.ca.file = t->ca;
  opts->tls = load_ctx(&o, prog);
}
