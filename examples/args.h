/*
 * args — the command-line helper every example shares, so that they all behave alike:
 *
 *  - `--help` (or `-h`) prints the example's usage on stdout and exits 0;
 *  - a bad flag, a missing or out-of-range value, an unknown option or an address the
 *    example cannot serve prints one line on stderr naming the flag or address at fault
 *    (and a hint to try --help) and exits 2;
 *  - numbers are decimal, checked over the whole string: no sign, no trailing junk, no
 *    overflow, within the flag's range ("--max -5" is an error, never a huge value);
 *  - `--loops N` is 1..1024 event loops, and `--loops 0` means one loop per online CPU
 *    in every example (cgnet's multicore option);
 *  - the "listening on" line names each address as a client would dial it
 *    (tcp://127.0.0.1:41234, unix:///tmp/echo.sock, unix://@name).
 *
 * Main thread only (it exits the process on a usage error).
 */
#ifndef CGNET_EXAMPLES_ARGS_H
#define CGNET_EXAMPLES_ARGS_H

#include <signal.h>
#include <stdint.h>

#include "cgnet.h"

/* Exit status of a usage error (bad flag, value or address). */
#define EX_USAGE_STATUS 2
/* The most event loops cgnet runs. */
#define EX_MAX_LOOPS 1024

typedef struct ex_args {
  const char *prog;  /* "echo": prefixes every message */
  const char *usage; /* the whole --help text */
  int argc;
  char **argv;
  int i; /* index of the argument ex_next returned last */
} ex_args;

void ex_args_init(ex_args *a, const char *prog, const char *usage, int argc, char **argv);

/* The next argument, or NULL after the last. "--help" and "-h" print the usage on stdout
 * and exit 0 wherever they appear. */
const char *ex_next(ex_args *a);

/* 1 if `arg` (what ex_next returned) is `flag`. */
int ex_is(const char *arg, const char *flag);

/* The value that follows `flag`; its absence is a usage error. */
const char *ex_value(ex_args *a, const char *flag);

/* The value of `flag` as a decimal integer in [min, max]; anything else is a usage error
 * that names the flag, the value and the range. */
uint64_t ex_u64(ex_args *a, const char *flag, uint64_t min, uint64_t max);

/* Parse all of `s` as a decimal integer in [min, max]: digits only (no sign, no spaces,
 * no trailing characters), no overflow. 0, or -1 when it is not such a number. */
int ex_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* `--loops N` into opts: N in 1..1024 sets num_loops; 0 sets multicore (one loop per
 * CPU). */
void ex_loops(ex_args *a, const char *flag, cgnet_options *opts);

/* `--backend epoll|io_uring|auto` into opts->backend. */
void ex_backend(ex_args *a, const char *flag, cgnet_options *opts);

/* Report a usage error ("PROG: MESSAGE" and a hint on stderr) and exit 2. */
void ex_usage_error(const ex_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* A server example's one positional argument, its address: takes `arg` into *addr when
 * it is not an option and no address came before (*have_addr records that). 1 if it did;
 * 0 means the argument is unknown. */
int ex_address_arg(const char *arg, const char **addr, int *have_addr);

/* An argument that is no known option: a usage error naming it. */
void ex_unknown(const ex_args *a, const char *arg) __attribute__((noreturn));

/* Address kinds, as a bit set for ex_check_addr's `allowed`. */
enum { EX_ADDR_TCP = 1, EX_ADDR_UDP = 2, EX_ADDR_UNIX = 4, EX_ADDR_TLS = 8 };

/* What the address is for: listening (an empty host and port 0 are fine) or dialing
 * (both must be given). */
typedef enum { EX_LISTEN, EX_DIAL } ex_addr_use;

/*
 * Check the syntax of a cgnet address without resolving a host name (that happens when
 * it is bound or dialed): a known scheme, a host that is empty, an IPv4 literal, a
 * bracketed IPv6 literal or a name, and a port 0..65535 (for udp, then optionally
 * "?OPTIONS", which cgnet checks when it starts); or a Unix path / @name. `role`
 * names it in messages ("listen address", "backend address"). A malformed address, or
 * one whose kind is not in `allowed`, is a usage error naming it (`why_not` explains an
 * unsupported kind, e.g. "echo_pool answers streams only"). Returns its kind.
 */
int ex_check_addr(const ex_args *a, const char *role, const char *addr, int allowed,
                  ex_addr_use use, const char *why_not);

/* Print "PROG: listening on tcp://127.0.0.1:41234, unix:///tmp/e.sock (2 loops, epoll)"
 * (with
 * ", EXTRA" before the closing parenthesis when extra is not NULL) on stdout and flush
 * it: the first stdout line, read by scripts and tests to learn the bound ports. */
void ex_print_listening(const char *prog, cgnet_engine *eng, const char *const *addrs,
                        const char *extra);

/* Non-zero when a conn's close reason is an error worth a log line: anything but the
 * peer's orderly close (CGNET_EOF), our own close (CGNET_ELOCALCLOSE) and the engine's
 * stop (CGNET_ESHUTDOWN). */
int ex_close_is_error(int reason);

/* TLS from the command line: a server's --cert FILE and --key FILE (PEM) and
 * --no-tickets (issue no session tickets: every handshake is full), a client's --ca FILE
 * (PEM; default: the system's CAs) or --insecure (no verification). A server example
 * sets `alpn` itself (NULL-terminated; NULL: no ALPN) to the protocols it speaks. */
typedef struct ex_tls {
  const char *cert, *key, *ca;
  int insecure;
  int no_tickets;
  const char *const *alpn;
} ex_tls;

/* 1 if `arg` is one of the TLS flags above (its value is taken into t), else 0. */
int ex_tls_arg(ex_args *a, const char *arg, ex_tls *t);

/* A server: when one of its n addresses is tls://, build the server context from
 * --cert and --key into opts->tls (missing flags are a usage error; a file that does not
 * load prints the reason and exits 1). The engine keeps its own reference: free ours
 * after cgnet_engine_start. */
void ex_tls_server(const ex_args *a, const ex_tls *t, const char *const *addrs, size_t n,
                   cgnet_options *opts);

/* A client: the client context for tls:// dials from --ca / --insecure into opts->tls
 * (NULL with neither: cgnet's default, the system's CAs). Exits 1 if it does not load. */
void ex_tls_client(const ex_tls *t, const char *prog, cgnet_options *opts);

/* Block SIGINT and SIGTERM in the calling thread and fill `set` with them. Call before
 * any thread starts, so every thread inherits the mask and only sigwait sees them. */
void ex_block_stop_signals(sigset_t *set);

#endif
