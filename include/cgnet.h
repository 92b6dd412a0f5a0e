/*
 * cgnet — an event-driven networking library in C (the C counterpart of Go's gnet).
 *
 * The user hands cgnet a table of callbacks (cgnet_handler) and one or more addresses;
 * cgnet runs N event loops, one per thread, accepts and balances connections, reads the
 * bytes and calls the user back on the loop that owns the connection.
 *
 * Threads. Every function says which thread may call it:
 *   - "any thread": safe from any thread, including loop threads.
 *   - "loop thread": only from a callback (or task) running on the loop that owns the
 *     object. The calls that change a conn (write, writev, write_frame, flush, close,
 *     shutdown_write, pause/resume_read, set_codec, the timeouts) and a timer
 *     (cgnet_timer_start/stop) return CGNET_EWRONGTHREAD from any other thread, another
 *     loop's included; for the others,
 *     calling them elsewhere is undefined behaviour. Other threads use the async calls.
 *
 * Errors. Functions return 0 (or a non-negative count) on success and a negative
 * CGNET_E* code on failure; cgnet_strerror() and cgnet_err_name() describe a code.
 *
 * Lifetimes. A cgnet_conn * handed to a callback is borrowed: it stays valid until
 * on_close for it returns, and must not be used after that.
 */
#ifndef CGNET_H
#define CGNET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CGNET_BUILDING) && defined(__GNUC__)
#define CGNET_API __attribute__((visibility("default")))
#else
#define CGNET_API
#endif

#define CGNET_VERSION_MAJOR 0
#define CGNET_VERSION_MINOR 1
#define CGNET_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------ */
/* Error codes                                                                          */
/* ------------------------------------------------------------------------------------ */

/*
 * Codes that mirror a POSIX errno are its negation (CGNET_EINVAL == -EINVAL on Linux), so
 * a system error can be passed through as -errno; one not listed here (-ENODEV, -ENOSPC,
 * ...) may be returned too, and cgnet_strerror / cgnet_err_name describe it. cgnet's own
 * codes live below -4000.
 */
#define CGNET_ERRNO_MAP(XX)                                                                \
  XX(EPERM, -1, "operation not permitted")                                                 \
  XX(ENOENT, -2, "no such file or directory")                                              \
  XX(EINTR, -4, "interrupted system call")                                                 \
  XX(EIO, -5, "i/o error")                                                                 \
  XX(EBADF, -9, "bad file descriptor")                                                     \
  XX(EAGAIN, -11, "resource temporarily unavailable")                                      \
  XX(ENOMEM, -12, "not enough memory")                                                     \
  XX(EACCES, -13, "permission denied")                                                     \
  XX(EBUSY, -16, "resource busy or locked")                                                \
  XX(EEXIST, -17, "already exists")                                                        \
  XX(EINVAL, -22, "invalid argument")                                                      \
  XX(ENFILE, -23, "file table overflow")                                                   \
  XX(EMFILE, -24, "too many open files")                                                   \
  XX(EPIPE, -32, "broken pipe")                                                            \
  XX(ENAMETOOLONG, -36, "name too long")                                                   \
  XX(EOVERFLOW, -75, "output buffer limit exceeded")                                       \
  XX(EMSGSIZE, -90, "message too long")                                                    \
  XX(EPROTONOSUPPORT, -93, "protocol not supported")                                       \
  XX(EUNSUPPORTED, -95, "operation not supported on this connection")                      \
  XX(EAFNOSUPPORT, -97, "address family not supported")                                    \
  XX(EADDRINUSE, -98, "address already in use")                                            \
  XX(EADDRNOTAVAIL, -99, "address not available")                                          \
  XX(ENETDOWN, -100, "network is down")                                                    \
  XX(ENETUNREACH, -101, "network is unreachable")                                          \
  XX(ECONNABORTED, -103, "connection aborted")                                             \
  XX(ECONNRESET, -104, "connection reset by peer")                                         \
  XX(ENOBUFS, -105, "no buffer space available")                                           \
  XX(ENOTCONN, -107, "socket is not connected")                                            \
  XX(ESHUTDOWN, -108, "engine is shutting down")                                           \
  XX(ETIMEDOUT, -110, "operation timed out")                                               \
  XX(ECONNREFUSED, -111, "connection refused")                                             \
  XX(EHOSTUNREACH, -113, "host is unreachable")                                            \
  XX(EALREADY, -114, "operation already in progress")                                      \
  XX(ECANCELED, -125, "operation canceled")                                                \
  XX(EOF, -4001, "peer closed the connection")                                             \
  XX(ECLOSED, -4002, "connection is closed")                                               \
  XX(ELOCALCLOSE, -4003, "connection closed by the application")                           \
  XX(EBADSCHEME, -4010, "address has an unknown or missing scheme")                        \
  XX(EBADADDR, -4011, "address has a malformed host")                                      \
  XX(EBADPORT, -4012, "address has a missing or out-of-range port")                        \
  XX(EADDRFAMILY, -4013, "address host does not match the scheme's family")                \
  XX(ERESOLVE, -4014, "host name could not be resolved")                                   \
  XX(EBADOPTION, -4015, "address has an unknown or malformed option")                      \
  XX(EFRAMETOOLARGE, -4020, "frame exceeds the maximum frame length")                      \
  XX(ECODEC, -4021, "malformed frame")                                                     \
  XX(EWRONGTHREAD, -4030, "called from a thread that may not call it")                     \
  XX(ETLS, -4040, "TLS handshake or protocol failure")                                     \
  XX(ETLSVERIFY, -4041, "TLS peer certificate was not verified")                           \
  XX(ETLSCERT, -4042, "TLS certificate or key is invalid")                                 \
  XX(ETLSTRUNCATED, -4043, "TLS stream ended without close_notify")

typedef enum cgnet_errno {
#define CGNET_ERR_ENUM_(name, val, msg) CGNET_##name = (val),
  CGNET_ERRNO_MAP(CGNET_ERR_ENUM_)
#undef CGNET_ERR_ENUM_
} cgnet_errno;

/* Human-readable text for an error code (never NULL; a static string). A system error
 * with no CGNET_ code of its own, passed through as -errno (e.g. -ENODEV), gets the
 * system's description ("No such device"); a code nobody knows, "unknown error". Any
 * thread. */
CGNET_API const char *cgnet_strerror(int err);
/* Symbolic name of an error code, e.g. "CGNET_EINVAL" (never NULL; a static string). A
 * system error passed through as -errno with no CGNET_ code of its own gets its errno
 * name ("ENODEV"); a code nobody knows, "CGNET_UNKNOWN". Any thread. */
CGNET_API const char *cgnet_err_name(int err);

/* ------------------------------------------------------------------------------------ */
/* Handles and small types                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct cgnet_engine cgnet_engine; /* a running server: listeners + loops */
typedef struct cgnet_loop cgnet_loop;     /* one event loop, one thread */
typedef struct cgnet_conn cgnet_conn;     /* one connection, owned by one loop */
typedef struct cgnet_codec cgnet_codec;   /* frames a byte stream (see "Codecs") */

/* What a callback asks the engine to do next. */
typedef enum cgnet_action {
  CGNET_NONE = 0,     /* carry on */
  CGNET_CLOSE = 1,    /* close this connection (callbacks without a conn: ignored) */
  CGNET_SHUTDOWN = 2, /* stop the whole engine gracefully */
} cgnet_action;

/* Load-balancing algorithm used to hand accepted connections to loops. */
typedef enum cgnet_lb {
  CGNET_LB_ROUND_ROBIN = 0, /* default: loops in turn */
  CGNET_LB_LEAST_CONN = 1,  /* the loop with the fewest connections */
  CGNET_LB_SOURCE_HASH = 2, /* hash of the peer's address and port */
} cgnet_lb;

/* An option value that turns a size bound off (write_high_watermark, write_buffer_limit).
 */
#define CGNET_UNLIMITED SIZE_MAX

/* Tri-state for options whose default is "on": all-zero means the default. */
typedef enum cgnet_toggle {
  CGNET_DEFAULT = 0,
  CGNET_ON = 1,
  CGNET_OFF = -1,
} cgnet_toggle;

typedef enum cgnet_log_level {
  CGNET_LOG_DEFAULT = 0, /* in options: WARN */
  CGNET_LOG_DEBUG = 1,
  CGNET_LOG_INFO = 2,
  CGNET_LOG_WARN = 3,
  CGNET_LOG_ERROR = 4,
  CGNET_LOG_OFF = 5,
} cgnet_log_level;

/* Linger value that makes close() send RST instead of FIN (SO_LINGER with 0 seconds). */
#define CGNET_LINGER_RESET (-1)

/* ------------------------------------------------------------------------------------ */
/* Callbacks                                                                            */
/* ------------------------------------------------------------------------------------ */

/*
 * The event handler. Any callback may be NULL. `ud` is the user's pointer, returned by
 * cgnet_engine_userdata(). Unless stated, callbacks run on the loop thread that owns the
 * connection, never concurrently for one connection.
 */
typedef struct cgnet_handler {
  void *ud;

  /* The engine is ready: listeners are bound, loops are about to start. Runs once on
   * the thread that called cgnet_engine_start()/cgnet_run(). SHUTDOWN (or
   * cgnet_engine_stop, which then returns at once) stops the engine before it serves
   * anyone: the loops start, exit at once, and on_shutdown runs. */
  cgnet_action (*on_boot)(cgnet_engine *eng);

  /* The engine has stopped: every on_close has run. Runs once, on the last loop thread
   * to exit, just before cgnet_engine_wait() returns. */
  void (*on_shutdown)(cgnet_engine *eng);

  /* A new connection. It may write (a greeting goes out before any echo) and set a
   * context. CLOSE closes it at once (on_close still runs); SHUTDOWN stops the engine. */
  cgnet_action (*on_open)(cgnet_conn *c);

  /* Bytes arrived (or the connection was woken). Pull them with cgnet_conn_peek/next/
   * discard/read; whatever is left unconsumed stays buffered for the next call. */
  cgnet_action (*on_traffic)(cgnet_conn *c);

  /* The connection is gone. `reason` says why: CGNET_EOF (peer closed), CGNET_ECONNRESET,
   * CGNET_ELOCALCLOSE (the application closed it), CGNET_ESHUTDOWN (engine stopping), or
   * the error that ended it. The conn and its context are valid until this returns.
   * SHUTDOWN stops the engine; CLOSE is meaningless here and ignored. */
  cgnet_action (*on_close)(cgnet_conn *c, int reason);

  /* The ticker (options.ticker): runs on loop 0's thread, first right after the loops
   * start, then again after the delay it stores in *next_delay_ms (default 1000 ms if it
   * stores nothing; UINT64_MAX: never again). SHUTDOWN stops the engine; CLOSE is
   * ignored. */
  cgnet_action (*on_tick)(cgnet_engine *eng, uint64_t *next_delay_ms);

  /* Just before queued output of `c` is written to its socket (gnet v1's PreWrite). */
  void (*on_pre_write)(cgnet_conn *c);

  /* Backpressure: the conn's queued output reached the high watermark (writable == 0;
   * cgnet has stopped reading from it) or drained to the low watermark (writable == 1;
   * reading resumes unless the user paused it). */
  void (*on_writable_changed)(cgnet_conn *c, int writable);

  /* The peer shut down its write side (FIN) and options.allow_half_open is set: no more
   * bytes will arrive, but the conn stays open for writing until it is closed (or
   * cgnet_conn_shutdown_write finishes the other half). CLOSE closes it; SHUTDOWN stops
   * the engine. Without allow_half_open a FIN closes the conn with CGNET_EOF instead. */
  cgnet_action (*on_read_closed)(cgnet_conn *c);

  /* One complete frame decoded by the conn's codec (options.codec or
   * cgnet_conn_set_codec); gnet v1's React. `frame` points into cgnet's inbound buffer
   * and is valid until on_frame returns. It runs once per frame, for every complete
   * frame of a read, in order; replies written meanwhile leave together in one send.
   * Inside on_frame the raw read API (peek/next/...) sees the bytes after this frame,
   * and bytes it consumes are skipped by the decoder. CLOSE closes the conn (frames
   * after this one are dropped); SHUTDOWN stops the engine. With a codec but no
   * on_frame, on_traffic gets the raw bytes as if there were no codec. */
  cgnet_action (*on_frame)(cgnet_conn *c, const uint8_t *frame, size_t len);

  /* A TLS conn's handshake failed (or timed out, or the peer left during it): `code`
   * is the error (CGNET_ETLSVERIFY for a certificate, CGNET_ETLS, CGNET_ETIMEDOUT,
   * CGNET_ETLSTRUNCATED, ...) and `reason` a sentence saying why (also given by
   * cgnet_conn_tls_error). A server's conn then ends here, never seen by on_open nor
   * on_close (it is counted: cgnet_engine_tls_handshake_failures); a client's dial
   * fails next, with on_close(code). Getters on the conn work; it cannot be written. */
  void (*on_tls_error)(cgnet_conn *c, int code, const char *reason);
} cgnet_handler;

/* A log sink. `msg` is one line without a trailing newline. May run on any thread. */
typedef void (*cgnet_logger_fn)(void *ud, cgnet_log_level level, const char *msg);

/* The kernel interface a loop runs on. epoll is readiness: the loop reads and sends
 * when a socket is ready, one system call each. io_uring (Linux 6.1+, built with
 * liburing) is completions: receives land in a ring of provided buffers, sends and
 * accepts are submitted, and a loop turn costs one io_uring_enter. */
typedef enum cgnet_backend {
  /* The backend measured best here: epoll for now (docs/benchmarks.md: io_uring is not
   * ahead yet). io_uring runs when asked for by name. */
  CGNET_BACKEND_AUTO = 0,
  CGNET_BACKEND_EPOLL,
  CGNET_BACKEND_IO_URING,
} cgnet_backend;

/* A TLS context (certificates, verification, protocol settings): see cgnet_tls.h. */
typedef struct cgnet_tls_ctx cgnet_tls_ctx;

/* ------------------------------------------------------------------------------------ */
/* Options: all-zero means sensible defaults                                            */
/* ------------------------------------------------------------------------------------ */

typedef struct cgnet_options {
  /* Loops. num_loops > 0 wins; else multicore != 0 means one loop per online CPU;
   * else 1 loop. At most 1024. */
  int num_loops;
  int multicore;
  cgnet_lb lb;             /* load balancer (default round-robin) */
  int reuse_port;          /* one SO_REUSEPORT listener per loop; the kernel balances */
  cgnet_toggle reuse_addr; /* SO_REUSEADDR on listeners (default on) */
  int cpu_affinity;        /* pin loop i to CPU i % ncpu */
  int backlog;             /* listen() backlog (default 1024) */

  /* Reading. */
  int edge_triggered;      /* EPOLLET instead of level-triggered */
  size_t read_chunk_limit; /* edge-triggered: max bytes read from one conn per wake-up
                             before others get a turn (default 1 MiB) */
  size_t read_buffer_cap; /* per-loop read buffer: bytes read per read() (default 64 KiB) */

  /* Writing. */
  size_t write_buffer_cap; /* outbound ring capacity per conn before spilling into
                              blocks (default 64 KiB; the ring starts small and grows) */

  /* Ticker: call handler.on_tick on loop 0. */
  int ticker;

  /* Socket defaults for accepted connections (each can be changed per conn). */
  cgnet_toggle tcp_nodelay;   /* TCP_NODELAY (default on) */
  int tcp_keepalive;          /* > 0: SO_KEEPALIVE with this idle time in seconds */
  int tcp_keepalive_interval; /* seconds between probes (default: the idle time) */
  int tcp_keepalive_count;    /* probes before the conn is dropped (default: OS's) */
  int linger;                 /* 0: OS default; > 0: linger N s; CGNET_LINGER_RESET: RST */
  int socket_recv_buffer;     /* > 0: SO_RCVBUF in bytes */
  int socket_send_buffer;     /* > 0: SO_SNDBUF in bytes */

  /* Flow control (per conn). Once queued output reaches the high watermark a server's
   * conn stops reading until the output drains to the low watermark (read_backpressure,
   * below), and until then each read takes no more than the room left below the high
   * watermark; so a handler that answers what it reads holds at most about the high
   * watermark of output per conn, even for a peer that sends and never reads. Crossing
   * either watermark calls on_writable_changed. write_buffer_limit bounds what stays
   * queued: a write that would take the queue past it fails with CGNET_EOVERFLOW, except
   * that with nothing queued the socket first takes what it can and only the rest must
   * fit (if it does not and part was sent, the conn closes with CGNET_EOVERFLOW: the
   * peer holds a partial message). CGNET_UNLIMITED turns a bound off. */
  size_t write_high_watermark; /* default 64 KiB */
  size_t write_low_watermark;  /* default high / 2; must be <= high */
  size_t write_buffer_limit;   /* hard cap on queued output (default 8 MiB) */

  /* Timeouts in milliseconds (0: none); expiry closes the conn with CGNET_ETIMEDOUT.
   * idle: no byte read or written; read: no byte read; write: queued output made no
   * progress. Each can be changed per conn. UINT64_MAX (or any value too large to be
   * reached) is effectively never, like 0. */
  uint64_t idle_timeout_ms;
  uint64_t read_timeout_ms;
  uint64_t write_timeout_ms;

  /* At most this many open conns (0: no limit); beyond it new conns are closed at once
   * and counted (cgnet_engine_rejected_connections), existing ones are untouched. UDP
   * sessions count among the conns: a new peer beyond the limit is dropped and counted
   * in sessions_refused (cgnet_datagram_stats) instead. */
  size_t max_connections;

  /* A peer's FIN calls on_read_closed and leaves the conn open for writing. */
  int allow_half_open;

  /* Logging: by default warnings and errors go to stderr. */
  cgnet_logger_fn logger; /* NULL: stderr */
  void *logger_ud;
  cgnet_log_level log_level; /* minimum level logged (CGNET_LOG_DEFAULT: WARN) */

  /* Stop reading from a conn once its queued output reaches write_high_watermark, until
   * it drains to the low one. Default: on for a server's conns (their output is
   * replies to their input, so this bounds it), off for a client's conns (a client
   * streaming out while it reads the answers would otherwise deadlock against a server
   * doing the same; it paces itself with cgnet_conn_writable / on_writable_changed). */
  cgnet_toggle read_backpressure;

  /* UDP multicast: when a udp address's host is a multicast group ("udp://239.1.2.3:5000",
   * "udp6://[ff02::1234]:5000"), the socket binds the group and port and joins the
   * group on this interface index (0: the kernel's choice; IPv4 IP_ADD_MEMBERSHIP with
   * ip_mreqn, IPv6 IPV6_ADD_MEMBERSHIP). See "Datagrams" below. */
  int multicast_interface_index;
  /* SO_BINDTODEVICE with this interface name ("lo", "eth0") on every TCP listener and
   * UDP socket (NULL: none). The kernel may require CAP_NET_RAW (CGNET_EPERM). */
  const char *bind_to_device;

  /* Backend (see cgnet_backend). The environment variable CGNET_BACKEND=epoll|io_uring
   * overrides this field (tests and benchmarks run a program on either). Asking for
   * io_uring where it cannot run fails cgnet_engine_start with CGNET_EUNSUPPORTED (and
   * logs why); AUTO runs epoll. cgnet_engine_backend says which runs. */
  cgnet_backend backend;
  /* io_uring receive buffers: a ring of this many per loop (a power of two, at most
   * 32768), each of this many bytes (512 B to 1 MiB). A conn sees what it received in
   * place, and the bytes it leaves unread are copied to the conn. On Linux 6.12+ the
   * kernel fills the buffers back to back (a receive takes what the socket holds, up to
   * the end of the current buffer; small messages share a buffer); before 6.12 each
   * receive takes a buffer of its own. 0 (the default): 64 x 64 KiB on 6.12+, else
   * 256 x 16 KiB; 4 MiB per loop either way, resident once the kernel has filled each
   * buffer once. When all are in use, receives wait (counted in recv_nobufs). */
  unsigned recv_buffers;
  size_t recv_buffer_size;

  /* Framing (see "Codecs"): every conn starts with this codec, so on_frame gets whole
   * frames and cgnet_conn_write_frame encodes. NULL: raw bytes through on_traffic. The
   * codec must outlive the engine. */
  const cgnet_codec *codec;

  /* UDP sessions (see "Datagrams"): non-zero gives each remote peer of a udp address a
   * conn of its own, opened by its first datagram, instead of one per-datagram conn.
   * "udp://...?sessions=1" or "?sessions=0" overrides this for one address. */
  int udp_sessions;
  /* At most this many sessions open at once across the engine (default 65536): the
   * first datagram of a new peer beyond it is dropped and counted (sessions_refused in
   * cgnet_datagram_stats); open sessions are untouched. max_connections, when set,
   * bounds sessions too, as they count among the engine's conns. */
  size_t max_udp_sessions;

  /* TLS (cgnet_tls.h; "tls://" addresses). For an engine: the server context of its
   * tls:// listeners (a tls:// address without one fails cgnet_engine_start with
   * CGNET_EINVAL). For a client: the client context of its tls:// dials; NULL uses a
   * default one made on the first such dial (the system's CAs, the chain and the host
   * name verified). The engine or client holds a reference: the caller may free its
   * own once started. */
  cgnet_tls_ctx *tls;
  /* A TLS handshake not done within this many ms closes the conn with CGNET_ETIMEDOUT
   * (default 10000; a dial's own timeout, if sooner, covers its handshake too). */
  uint64_t tls_handshake_timeout_ms;
  /* At most this many server handshakes start per loop turn (default 64); the others
   * wait for the next turn, so a storm of new TLS conns cannot starve the open ones. */
  int tls_handshakes_per_turn;
} cgnet_options;

/* ------------------------------------------------------------------------------------ */
/* Engine                                                                               */
/* ------------------------------------------------------------------------------------ */

/*
 * Parse and bind every address, create the loops, call on_boot, and start the loop
 * threads; returns at once with *out set. Addresses (any mix, served by the same loops):
 *   "tcp://:9000", "tcp://127.0.0.1:9000", "tcp://[::]:9000"   TCP; an empty host or
 *        [::] is dual-stack ([::] with IPV6_V6ONLY off) where the system allows it
 *   "tcp4://host:port", "tcp6://[::1]:9000"   IPv4 only / IPv6 only (IPV6_V6ONLY on)
 *   "udp://...", "udp4://...", "udp6://..."   UDP, same host forms (see "Datagrams");
 *        options may follow the port: "udp://:9001?sessions=1" (or 0) turns UDP sessions
 *        on (off) for that address; an empty query, an unknown key, a repeated key or
 *        a value other than 0/1 is CGNET_EBADOPTION, and so is any query on a tcp address
 *   "unix:///run/app.sock"   a Unix stream socket at /run/app.sock; "unix://rel.sock" is
 *        relative to the working directory; "unix://@name" is the abstract name "name"
 *   "tls://:443", "tls4://...", "tls6://..."   TLS over TCP (cgnet_tls.h), with the
 *        server context in opts->tls (without one: CGNET_EINVAL, logged; built without
 *        TLS: CGNET_EUNSUPPORTED)
 * Port 0 picks a free port (see cgnet_engine_listen_addr). `opts` may be NULL. The
 * handler table is copied.
 *
 * Unix sockets behave like TCP conns for every event and call, except the TCP-only
 * controls (nodelay, keep-alive: CGNET_EUNSUPPORTED; the engine's TCP defaults are not
 * applied). A Unix address always has one listener, on loop 0, even with reuse_port; its
 * conns are handed to loops by the load balancer (source-hash falls back to round-robin
 * for them). At start a socket file left behind by a dead server (connect() refused) is
 * replaced; a live server on the path (even one whose backlog is full: the probe never
 * blocks), or a file that is not a socket, gives CGNET_EADDRINUSE. The file is removed
 * when the engine stops, if it is still the one we bound. An abstract name has no file.
 * Errors: malformed address (CGNET_EBADSCHEME, EBADADDR, EBADPORT, EADDRFAMILY, ERESOLVE,
 * EBADOPTION),
 * invalid options (CGNET_EINVAL), bind errors (CGNET_EADDRINUSE, ...). Any thread.
 */
CGNET_API int cgnet_engine_start(const cgnet_handler *handler, const char *const *addrs,
                                 size_t naddrs, const cgnet_options *opts,
                                 cgnet_engine **out);

/*
 * Block until the engine has stopped (an action or cgnet_engine_stop) and every loop
 * thread has exited; on_shutdown has run when it returns. Returns 0, or the error that
 * stopped the engine. Call once, from a non-loop thread; then cgnet_engine_free(). From
 * one of the engine's loop threads or its on_boot: CGNET_EWRONGTHREAD.
 */
CGNET_API int cgnet_engine_wait(cgnet_engine *eng);

/*
 * Stop gracefully: stop accepting, let queued output flush for up to timeout_ms (0: no
 * wait; UINT64_MAX: until it has all drained), close every conn with CGNET_ESHUTDOWN.
 * An open WebSocket conn (cgnet_ws.h) is sent a close frame with 1001 instead and gets
 * the same time to finish its close handshake, after which it closes by itself.
 * Any thread. From a non-loop thread it blocks until the engine has fully stopped; from
 * one of the engine's loop threads (inside a callback) or from its on_boot (the loops
 * have not started yet) it only requests the stop and returns. Calling it again is
 * harmless.
 */
CGNET_API int cgnet_engine_stop(cgnet_engine *eng, uint64_t timeout_ms);

/* Release a stopped engine (after cgnet_engine_wait returned). Non-loop thread: from
 * the engine's own loop threads or its on_boot it frees nothing (an error is logged). */
CGNET_API void cgnet_engine_free(cgnet_engine *eng);

/* Start, wait and free in one call: blocks until the engine stops. Any non-loop thread. */
CGNET_API int cgnet_run(const cgnet_handler *handler, const char *const *addrs,
                        size_t naddrs, const cgnet_options *opts);

/* Connections open across all loops right now. Any thread. */
CGNET_API size_t cgnet_engine_count_connections(const cgnet_engine *eng);
/* The backend the engine's loops run on (EPOLL or IO_URING, never AUTO). */
CGNET_API cgnet_backend cgnet_engine_backend(const cgnet_engine *eng);
/* "epoll", "io_uring" or "auto". */
CGNET_API const char *cgnet_backend_name(cgnet_backend b);
/* 0 when an engine can run on backend b here, else why not: CGNET_EUNSUPPORTED (not
 * built in, or the kernel lacks a feature cgnet needs), CGNET_EPERM (denied, e.g. by a
 * seccomp profile or kernel.io_uring_disabled), or another negated errno of the ring's
 * setup (-ENOSYS: a kernel without io_uring). */
CGNET_API int cgnet_backend_supported(cgnet_backend b);

/* The handler's ud pointer. Any thread. */
CGNET_API void *cgnet_engine_userdata(const cgnet_engine *eng);

/* Number of loops, and loop i (0 <= i < count). Any thread. */
CGNET_API int cgnet_engine_num_loops(const cgnet_engine *eng);
CGNET_API cgnet_loop *cgnet_engine_loop(const cgnet_engine *eng, int i);

/* Number of addresses the engine listens on (as given to start). Any thread. */
CGNET_API size_t cgnet_engine_num_listeners(const cgnet_engine *eng);

/* The bound address of listener i (useful with port 0). Copies up to *len bytes into
 * `sa` and sets *len to the address length. Any thread. */
CGNET_API int cgnet_engine_listen_addr(const cgnet_engine *eng, size_t i,
                                       struct sockaddr *sa, socklen_t *len);

/* Port of listener i, or a negative error (CGNET_EAFNOSUPPORT for a Unix address). Any
 * thread. */
CGNET_API int cgnet_engine_listen_port(const cgnet_engine *eng, size_t i);

/* ------------------------------------------------------------------------------------ */
/* Datagrams (udp://, udp4://, udp6://)                                                 */
/* ------------------------------------------------------------------------------------ */

/*
 * Every loop has its own socket for each udp address (an SO_REUSEPORT group, so the
 * kernel spreads senders over the loops; port 0 is picked by the first bind); a
 * multicast group address gets one socket, on loop 0. A loop receives with recvmmsg,
 * up to 16 datagrams per call, into slots of min(read_buffer_cap, 64 KiB) bytes; a
 * datagram larger than a slot is dropped and counted (dropped_truncated, and a warning
 * at most once a second), never delivered cut short.
 *
 * Without sessions (the default), each datagram calls on_traffic with the socket's
 * datagram conn
 * (cgnet_conn_is_datagram() is 1): its remote address is the sender, its inbound bytes
 * are exactly the datagram (read with peek/next/read as usual), and whatever is left
 * unconsumed is dropped when on_traffic returns. There is no on_open/on_close for
 * datagrams. SHUTDOWN stops the engine (no further datagram of the batch is delivered);
 * CLOSE is ignored.
 *
 * The datagram conn is valid only during that on_traffic call: do not keep it, and do
 * not use cgnet_conn_ref on it (it returns c but takes no reference; unref does
 * nothing). cgnet_conn_write sends one datagram to the sender; cgnet_conn_send_to sends
 * one anywhere. Both copy the bytes into the socket's send queue, which goes out with
 * sendmmsg after the batch of received datagrams (cgnet_conn_flush sends it at once).
 * If the socket is full (EAGAIN) the rest waits for EPOLLOUT; the queue holds at most
 * write_buffer_limit bytes, past which writes fail with CGNET_ENOBUFS. Errors known when
 * queueing are returned: CGNET_EMSGSIZE (longer than a UDP datagram can be) and
 * CGNET_EAFNOSUPPORT (an IPv6 destination on an IPv4 socket, or the reverse). Errors the
 * kernel reports later for one datagram (EMSGSIZE from the path MTU, ENETUNREACH,
 * ECONNREFUSED, ...) drop that datagram: they are logged (at most once a second) and
 * counted in dropped_send.
 *
 * On the per-datagram conn these return CGNET_EUNSUPPORTED: writev, shutdown_write,
 * pause/resume_read, the per-conn timeouts, nodelay, keepalive, linger, close, the async
 * calls (async_write*, wake, async_close) and cgnet_conn_peer_cred; cgnet_conn_timer_new
 * returns NULL. set_recv_buffer/set_send_buffer work and change the loop's socket.
 * Options: socket_recv_buffer/socket_send_buffer size every UDP socket,
 * bind_to_device and multicast_interface_index apply as documented with them.
 *
 * Sessions (options.udp_sessions, or "udp://:9001?sessions=1" for one address;
 * "?sessions=0" turns them off for one address). The first datagram from a new remote
 * address opens a session: a conn for that peer, with on_open (set a context there: it
 * stays with the peer), then one on_traffic per datagram on it, with the same datagram
 * boundaries as above (the view is exactly the datagram; the unread rest is dropped).
 * cgnet_conn_write sends one datagram to the peer through the socket's send queue
 * (sendmmsg after the batch, as above; CGNET_ENOBUFS past write_buffer_limit for the
 * whole socket). The session is an ordinary conn handle: cgnet_conn_ref/unref, the async
 * calls (async_write/writev/write_owned send one datagram each; wake; async_close) from
 * any thread, conn timers, cgnet_conn_close, the CLOSE action, per-conn idle and read
 * timeouts, remote_addr/local_addr (local_addr and cgnet_conn_fd are the shared
 * socket's), set_recv_buffer/set_send_buffer (on the shared socket). It ends with
 * on_close(reason): CGNET_ELOCALCLOSE (closed by the application), CGNET_ETIMEDOUT (idle
 * or read timeout: a silent peer), CGNET_ESHUTDOWN (engine stop). The next datagram from
 * that peer then opens a new session. The engine's max_udp_sessions (default 65536) and
 * max_connections bound the sessions: a new peer beyond them is dropped, its datagram
 * unanswered, and counted in sessions_refused; open sessions are untouched. Sessions
 * count in cgnet_engine_count_connections and cgnet_loop_count_connections.
 *
 * On a session, write and writev send one datagram each (writev gathers its pieces),
 * queued on the socket with its other peers' and sent before the loop sleeps;
 * cgnet_conn_flush sends that queue now. These return CGNET_EUNSUPPORTED: write_frame
 * and set_codec (no codecs: a datagram is a message), pause/resume_read,
 * shutdown_write, linger, nodelay, keepalive, send_to and peer_cred. The write timeout
 * never fires (nothing is queued on the session itself); options.codec and
 * read_backpressure do not apply.
 *
 * A session lives on the loop whose socket received its peer's first datagram. The
 * kernel's SO_REUSEPORT hash of the 4-tuple keeps a peer on one socket, hence one loop,
 * while the group's sockets stay the same (they do while the engine runs); if a peer's
 * datagrams ever reach another loop's socket, that loop opens a second session for it,
 * independent of the first, which ends by itself (timeout, close, stop). Sessions are
 * keyed by (socket, remote address): one peer sending to two udp addresses has two.
 */

/* Non-zero for a datagram conn (a server's per-datagram conn, a UDP session, or a
 * client's udp:// conn once it has opened). Loop thread. */
CGNET_API int cgnet_conn_is_datagram(const cgnet_conn *c);

/* Send one datagram from c's socket to `to`. Loop thread, during the datagram's
 * on_traffic. 0 (queued), CGNET_EUNSUPPORTED on a stream conn, or an error as above. */
CGNET_API int cgnet_conn_send_to(cgnet_conn *c, const struct sockaddr *to, socklen_t tolen,
                                 const void *data, size_t len);

/* Send one datagram to `to` from the socket of udp address `listener` (the calling
 * loop's socket when called on one of the engine's loops, else loop 0's), with one
 * sendto() now. Any thread, until cgnet_engine_free. 0, CGNET_EINVAL (listener is not
 * a udp address), CGNET_EAGAIN (the socket buffer is full), CGNET_EMSGSIZE, or the
 * send error. */
CGNET_API int cgnet_engine_send_to(cgnet_engine *eng, size_t listener,
                                   const struct sockaddr *to, socklen_t tolen,
                                   const void *data, size_t len);

/* Datagram counters of the whole engine, since start. Any thread. */
typedef struct cgnet_datagram_stats {
  uint64_t received;          /* datagrams delivered to on_traffic */
  uint64_t recv_calls;        /* recvmmsg calls that returned at least one datagram */
  uint64_t sent;              /* datagrams the kernel accepted from the send queues */
  uint64_t send_calls;        /* sendmmsg calls that sent at least one */
  uint64_t dropped_truncated; /* received datagrams larger than a slot */
  uint64_t dropped_send;      /* queued datagrams the kernel refused */
  uint64_t sessions_opened;   /* UDP sessions opened (on_open ran) */
  uint64_t sessions_refused;  /* new peers dropped at max_udp_sessions / max_connections */
  uint64_t sessions_open;     /* UDP sessions open now */
} cgnet_datagram_stats;
CGNET_API void cgnet_engine_datagram_stats(const cgnet_engine *eng,
                                           cgnet_datagram_stats *out);

/* ------------------------------------------------------------------------------------ */
/* Loops                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Index of the loop (0 .. num_loops-1). Any thread. */
CGNET_API int cgnet_loop_index(const cgnet_loop *loop);
/* The engine a loop belongs to. Any thread. */
CGNET_API cgnet_engine *cgnet_loop_engine(const cgnet_loop *loop);
/* Connections currently owned by this loop. Any thread. */
CGNET_API size_t cgnet_loop_count_connections(const cgnet_loop *loop);
/* Non-zero when the calling thread is this loop's thread. Any thread. */
CGNET_API int cgnet_loop_is_current(const cgnet_loop *loop);

/* Run fn(loop, ud) on the loop's thread, soon, in submission order. Submissions from
 * many threads are coalesced into one wake-up. Returns 0, CGNET_ENOMEM, or
 * CGNET_ESHUTDOWN once the engine is stopping (fn will not run then). A call that
 * returned 0 runs fn before the loop exits, except in one race: a call made while the
 * stop is being requested may find the loop already gone, and then fn never runs (free
 * what ud owns in on_shutdown if that matters). May also be called from on_boot, before
 * the loops start. Any thread. */
typedef void (*cgnet_loop_fn)(cgnet_loop *loop, void *ud);
CGNET_API int cgnet_loop_execute(cgnet_loop *loop, cgnet_loop_fn fn, void *ud);

/* Counters of a loop's cross-thread traffic, since start. `wakeups`: eventfd writes that
 * woke the loop (a burst of submissions shares one); `tasks`: cross-thread tasks it ran
 * (async writes, wakes, closes, executes, hand-offs of accepted conns). Any thread. */
typedef struct cgnet_loop_stats {
  uint64_t wakeups;
  uint64_t tasks;
  /* io_uring (0 with epoll): io_uring_enter calls, completions seen, receives stopped by
   * an empty buffer ring (and restarted), completion-queue overflows, and completions
   * of operations on conns already closed (dropped). */
  uint64_t enters;
  uint64_t completions;
  uint64_t recv_nobufs;
  uint64_t cq_overflows;
  uint64_t stale_completions;
  /* Changes of what the loop's poller watches: epoll_ctl calls with epoll (a conn's
   * reading paused and resumed, or a write armed and disarmed, within one loop turn makes
   * none); poll requests with io_uring (a stream conn polls only for a hang-up while its
   * reading is paused). */
  uint64_t interest_updates;
  /* TLS: server handshakes this loop started, and the most it started in one turn
   * (never above options.tls_handshakes_per_turn). */
  uint64_t tls_handshakes;
  uint64_t tls_handshakes_turn_max;
} cgnet_loop_stats;
CGNET_API void cgnet_loop_get_stats(const cgnet_loop *loop, cgnet_loop_stats *out);

/* ------------------------------------------------------------------------------------ */
/* Connections: reading (loop thread)                                                   */
/* ------------------------------------------------------------------------------------ */

/* Bytes received and not yet consumed. Loop thread. */
CGNET_API size_t cgnet_conn_inbound_buffered(const cgnet_conn *c);

/* Look at the next min(n, buffered) bytes without consuming them (n == 0: all of them).
 * *data points into the connection's buffer and stays valid until the callback returns.
 * Returns the number of bytes visible. Loop thread. */
CGNET_API size_t cgnet_conn_peek(cgnet_conn *c, size_t n, const uint8_t **data);

/* Like peek, but consumes the bytes it returns. Loop thread. */
CGNET_API size_t cgnet_conn_next(cgnet_conn *c, size_t n, const uint8_t **data);

/* Consume min(n, buffered) bytes; returns how many. Loop thread. */
CGNET_API size_t cgnet_conn_discard(cgnet_conn *c, size_t n);

/* Copy up to cap bytes into buf and consume them; returns how many. Loop thread. */
CGNET_API size_t cgnet_conn_read(cgnet_conn *c, void *buf, size_t cap);

/* ------------------------------------------------------------------------------------ */
/* Connections: writing (loop thread)                                                   */
/* ------------------------------------------------------------------------------------ */

/*
 * Queue bytes for the peer. Writes a conn's callbacks make are coalesced and go out in
 * one syscall as soon as those callbacks return; writes from elsewhere on the loop
 * (timers, tasks, other conns' callbacks) go out before the loop next sleeps. A large
 * write with nothing queued ahead of it goes straight to the socket. The data is copied
 * (or written) before the call returns. Returns 0, CGNET_ECLOSED if the conn is closing,
 * CGNET_EPIPE after shutdown_write, or CGNET_EOVERFLOW past write_buffer_limit (see the
 * options). Loop thread.
 */
CGNET_API int cgnet_conn_write(cgnet_conn *c, const void *data, size_t len);

/* Gathering form of cgnet_conn_write. Loop thread. */
CGNET_API int cgnet_conn_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt);

/* Try to write queued output now instead of when the callbacks return. Returns 0 (all or
 * part written, the rest stays queued) or the error that closed the conn. Loop thread. */
CGNET_API int cgnet_conn_flush(cgnet_conn *c);

/* Bytes queued and not yet accepted by the socket. Loop thread. */
CGNET_API size_t cgnet_conn_outbound_buffered(const cgnet_conn *c);

/* Non-zero while queued output is below the high watermark (or has drained to the low
 * one after reaching it): the conn welcomes more writes. Loop thread. */
CGNET_API int cgnet_conn_writable(const cgnet_conn *c);

/* Half-close: send what is queued, then FIN (shutdown(SHUT_WR)); reading goes on. Later
 * writes fail with CGNET_EPIPE. Loop thread. */
CGNET_API int cgnet_conn_shutdown_write(cgnet_conn *c);

/* Stop / resume reading from the conn (application-level backpressure). Independent of
 * the automatic pause at the high watermark: reading resumes only when neither holds.
 * Loop thread. */
CGNET_API int cgnet_conn_pause_read(cgnet_conn *c);
CGNET_API int cgnet_conn_resume_read(cgnet_conn *c);

/* Per-conn timeouts in ms (0: none; UINT64_MAX or any huge value: effectively never),
 * overriding the engine's options. Loop thread. */
CGNET_API int cgnet_conn_set_idle_timeout(cgnet_conn *c, uint64_t ms);
CGNET_API int cgnet_conn_set_read_timeout(cgnet_conn *c, uint64_t ms);
CGNET_API int cgnet_conn_set_write_timeout(cgnet_conn *c, uint64_t ms);

/* ------------------------------------------------------------------------------------ */
/* Connections from other threads                                                       */
/* ------------------------------------------------------------------------------------ */

/*
 * The rule: to use a conn outside its own callbacks (from a worker, a timer of another
 * loop, ...), take a reference with cgnet_conn_ref on its loop and drop it with
 * cgnet_conn_unref when done; while you hold one, every call in this section is safe from
 * any thread and returns (or reports) CGNET_ECLOSED once the conn has closed, never a
 * use-after-free. References must be dropped before cgnet_engine_free.
 *
 * Completion callbacks (done) run on the conn's loop thread, exactly once for a call that
 * returned 0; calls that return an error never call them. Work still queued when the
 * engine is freed completes with CGNET_ECANCELED on the freeing thread.
 */

/* Take a reference (loop thread, or any thread that already holds one). Returns c. */
CGNET_API cgnet_conn *cgnet_conn_ref(cgnet_conn *c);
/* Drop a reference. Any thread. */
CGNET_API void cgnet_conn_unref(cgnet_conn *c);
/* Non-zero once the conn has closed. Any thread (holding a reference). */
CGNET_API int cgnet_conn_is_closed(const cgnet_conn *c);

/* Result of an async write: 0 (queued on the conn like cgnet_conn_write), CGNET_ECLOSED
 * (the conn was gone), or the write's error (e.g. CGNET_EOVERFLOW). */
typedef void (*cgnet_write_done_fn)(cgnet_conn *c, int status, void *ud);

/* Write from any thread: the bytes are copied now and written on the loop, in the order
 * of submission (per submitting thread). done may be NULL. Any thread (holding a
 * reference). 0, CGNET_ENOMEM, or CGNET_ECLOSED. */
CGNET_API int cgnet_conn_async_write(cgnet_conn *c, const void *data, size_t len,
                                     cgnet_write_done_fn done, void *ud);
CGNET_API int cgnet_conn_async_writev(cgnet_conn *c, const struct iovec *iov, int iovcnt,
                                      cgnet_write_done_fn done, void *ud);
/* Zero-copy hand-off: cgnet takes `data` and calls free_fn(data) once it is no longer
 * needed (after the write, or when the call fails, or when the conn is gone). */
CGNET_API int cgnet_conn_async_write_owned(cgnet_conn *c, void *data, size_t len,
                                           void (*free_fn)(void *data),
                                           cgnet_write_done_fn done, void *ud);

/* Make on_traffic run on the loop even with no new bytes (it sees whatever is still
 * buffered; with a codec and on_frame, the buffered bytes are decoded instead and
 * on_frame runs for each complete frame). Any thread (holding a reference). 0,
 * CGNET_ENOMEM or CGNET_ECLOSED. */
CGNET_API int cgnet_conn_wake(cgnet_conn *c);

/* Close from any thread. done(c, reason, ud), if given, runs on the loop once the conn
 * is closed: CGNET_ELOCALCLOSE, or CGNET_ECLOSED if it had closed already. Any thread
 * (holding a reference). 0, CGNET_ENOMEM or CGNET_ECLOSED. */
typedef void (*cgnet_close_done_fn)(cgnet_conn *c, int reason, void *ud);
CGNET_API int cgnet_conn_async_close(cgnet_conn *c, cgnet_close_done_fn done, void *ud);

/* ------------------------------------------------------------------------------------ */
/* Codecs: framing a byte stream into messages                                          */
/* ------------------------------------------------------------------------------------ */

/*
 * A codec cuts the inbound byte stream into frames and wraps outbound frames (gnet's
 * ICodec, netty's frame decoders). Give one to the engine (options.codec) or to a conn
 * (cgnet_conn_set_codec); cgnet then calls handler.on_frame once per complete frame and
 * cgnet_conn_write_frame encodes replies.
 *
 * A codec is user-owned and immutable once made: one codec may serve every conn of every
 * loop at once, and must outlive the engines and conns that use it. Built-ins: line,
 * delimiter, fixed length, length field; or plug in your own with cgnet_codec_new.
 *
 * Every decoder has a maximum frame length (default 1 MiB). A frame over it closes the
 * conn with CGNET_EFRAMETOOLARGE as soon as that is known (a length field's value is
 * checked when the header arrives; a line is given up once max + its terminator bytes
 * are buffered without one), so a peer can never make cgnet buffer more than about the
 * maximum plus one read. A malformed frame (a length that is negative after adjustment or
 * overflows, or a custom decoder's error) closes it with CGNET_ECODEC (or the custom
 * decoder's code). on_close gets that reason.
 *
 * Codecs frame streams: TCP and Unix conns, a server's or a client's. A server's UDP
 * datagram conns ignore options.codec (each datagram is already a message; set_codec and
 * write_frame on them return CGNET_EUNSUPPORTED). A client's connected udp:// conn
 * decodes each datagram on its own: a frame cannot span datagrams, and an incomplete
 * tail is dropped with the datagram; write_frame sends the encoded frame as one datagram.
 */
/* Default maximum frame length of every codec (max_frame_length 0 means this). */
#define CGNET_CODEC_DEFAULT_MAX_FRAME (1024 * 1024)

/* One decoded frame, as a decoder reports it. */
typedef struct cgnet_frame {
  const uint8_t *data; /* out: first byte of the frame, inside the input */
  size_t len;          /* out: frame length (<= the codec's max frame length) */
  size_t consumed;     /* out: input bytes the frame used up, framing included (> 0) */
  /* in/out: the decoder's memo across calls on the same pending input (how far a line
   * decoder has scanned, the total a length-field decoder knows it needs). cgnet keeps
   * it per conn: zeroed when a frame is consumed (or the conn's codec or unread input
   * changes), handed back unchanged otherwise. Callers of cgnet_codec_decode set it to
   * 0 for new input and pass back what a "need more" call left. */
  size_t hint;
} cgnet_frame;

/* An encoded frame: up to 3 pieces (header, payload, trailer) ready for writev. The
 * payload piece points at the caller's frame (never copied); header bytes may live in
 * `header`, so an encoded frame must not be copied by value while iov points into it. */
#define CGNET_CODEC_HEADER_MAX 32
typedef struct cgnet_encoded {
  struct iovec iov[3];
  int iovcnt;
  uint8_t header[CGNET_CODEC_HEADER_MAX]; /* scratch an encoder may point iov at */
} cgnet_encoded;

/*
 * A custom codec. Both functions may run on many loop threads at once with the same
 * state: treat it as read-only.
 *   decode(state, in, len, out): look at the pending input in[0, len). Return 1 with
 *     out->data/len/consumed set (one frame; data..data+len and consumed within the
 *     input, consumed > 0), 0 for "need more bytes" (out->hint may be updated), or a
 *     negative CGNET_E* code (CGNET_ECODEC, CGNET_EFRAMETOOLARGE, ...) that closes the
 *     conn with that reason. cgnet checks the result: a frame outside the input or
 *     consumed == 0 is CGNET_ECODEC, a frame over max_frame_length, or "need more" with
 *     more than max_frame_length pending, is CGNET_EFRAMETOOLARGE.
 *   encode(state, frame, len, out): fill out->iov/iovcnt for `frame` (point an iovec at
 *     the frame itself; header/trailer bytes in out->header or in static/state memory).
 *     0 or a negative CGNET_E* code.
 *   destroy(state): may be NULL; called by cgnet_codec_free.
 */
typedef struct cgnet_codec_ops {
  int (*decode)(void *state, const uint8_t *in, size_t len, cgnet_frame *out);
  int (*encode)(void *state, const uint8_t *frame, size_t len, cgnet_encoded *out);
  void (*destroy)(void *state);
} cgnet_codec_ops;

/* Wrap custom ops (copied) and state. max_frame_length 0: 1 MiB; CGNET_UNLIMITED is
 * refused (CGNET_EINVAL): a decoder always bounds what a peer can make us buffer.
 * 0, CGNET_EINVAL (no decode or encode) or CGNET_ENOMEM. Any thread. */
CGNET_API int cgnet_codec_new(const cgnet_codec_ops *ops, void *state,
                              size_t max_frame_length, cgnet_codec **out);

/*
 * Line codec: frames end with '\n'.
 *
 *     wire:  | h e l l o \r \n | w o r l d \n |
 *     frames:  "hello"            "world"
 *
 * One '\r' right before the '\n' is stripped unless keep_cr. max_frame_length bounds
 * the line without its terminator. The encoder appends "\n"; a frame that contains '\n'
 * (or, without keep_cr, ends in '\r') cannot round-trip and is refused (CGNET_EINVAL).
 * `o` may be NULL (all defaults). 0, CGNET_EINVAL or CGNET_ENOMEM. Any thread.
 */
typedef struct cgnet_line_codec_options {
  int keep_cr;             /* non-zero: deliver "...\r" as is */
  size_t max_frame_length; /* 0: 1 MiB */
} cgnet_line_codec_options;
CGNET_API int cgnet_codec_line(const cgnet_line_codec_options *o, cgnet_codec **out);

/*
 * Delimiter codec: frames end with `delimiter` (1 or more bytes, copied), which is not
 * part of the frame. With delimiter "\r\n\r\n":
 *
 *     wire:  | a b c \r \n \r \n | \r \n \r \n | x |...
 *     frames:  "abc"                ""          (need more)
 *
 * max_frame_length bounds the frame without the delimiter. The encoder appends the
 * delimiter and refuses (CGNET_EINVAL) a frame in which the delimiter would be found
 * earlier than where it appends it. 0, CGNET_EINVAL or CGNET_ENOMEM. Any thread.
 */
typedef struct cgnet_delimiter_codec_options {
  const uint8_t *delimiter; /* required */
  size_t delimiter_len;     /* >= 1 */
  size_t max_frame_length;  /* 0: 1 MiB */
} cgnet_delimiter_codec_options;
CGNET_API int cgnet_codec_delimiter(const cgnet_delimiter_codec_options *o,
                                    cgnet_codec **out);

/*
 * Fixed-length codec: every frame is exactly frame_length bytes (1 to 1 GiB, 2^30), which
 * is also its maximum frame length.
 *
 *     frame_length 3:  | a b c | d e f | g h |
 *     frames:            "abc"   "def"  (need more)
 *
 * The encoder writes the frame as is and refuses any other length (CGNET_EMSGSIZE; no
 * padding). 0, CGNET_EINVAL (frame_length 0 or over 1 GiB, out NULL) or CGNET_ENOMEM.
 * Any thread.
 */
CGNET_API int cgnet_codec_fixed(size_t frame_length, cgnet_codec **out);

typedef enum cgnet_byte_order {
  CGNET_BIG_ENDIAN = 0, /* network order: most significant byte first (default) */
  CGNET_LITTLE_ENDIAN = 1,
} cgnet_byte_order;

/* initial_bytes_to_strip value that strips the whole header (offset + field length). */
#define CGNET_STRIP_HEADER SIZE_MAX

/*
 * Length-field codec (netty's LengthFieldBasedFrameDecoder and LengthFieldPrepender,
 * gnet's LengthFieldBasedFrameCodec). A frame on the wire:
 *
 *     |<- length_field_offset ->|<- length_field_length ->|<------- rest ------->|
 *     |  bytes before the field |  unsigned value V       |                      |
 *     |<------------------- total = offset + field length + V + length_adjustment
 *                                                  (- field length if includes) ->|
 *
 * The decoder delivers wire bytes [initial_bytes_to_strip, total). Examples, frame
 * "HELLO" (5 bytes):
 *
 *   all defaults (4-byte big-endian field, nothing stripped: the header is delivered):
 *     wire | 00 00 00 05 | H E L L O |        frame | 00 00 00 05 H E L L O |
 *   .length_field_length = 2, .initial_bytes_to_strip = 2 (or CGNET_STRIP_HEADER):
 *     wire | 00 05 | H E L L O |              frame | H E L L O |
 *   .length_field_length = 2, .length_includes_length_field = 1, strip 2:
 *     wire | 00 07 | H E L L O |              frame | H E L L O |
 *   .length_field_offset = 2 (a 2-byte tag T1 T2 first), 3-byte field, strip 0:
 *     wire | T1 T2 | 00 00 05 | H E L L O |   frame | T1 T2 00 00 05 H E L L O |
 *   .byte_order = CGNET_LITTLE_ENDIAN, 2-byte field, .length_adjustment = 2 (V excludes
 *   a 2-byte trailer CK CK that belongs to the frame), strip 2:
 *     wire | 05 00 | H E L L O CK CK |        frame | H E L L O CK CK |
 *
 * Decoding errors: a value over INT64_MAX, total below offset + field length (a
 * negative rest) or overflowing, or initial_bytes_to_strip > total: CGNET_ECODEC; total
 * > max_frame_length: CGNET_EFRAMETOOLARGE, decided as soon as the header is in.
 *
 * The encoder is the mirror image: for frame f it writes f[0, offset), then the field
 * with V = (len - offset) - length_adjustment (+ field length if includes), then
 * f[offset, len). len < offset: CGNET_EINVAL; V negative or too big for the field:
 * CGNET_EMSGSIZE; the wire frame over max_frame_length: CGNET_EFRAMETOOLARGE. So
 * decode(encode(f)) == f exactly when offset == 0 and the field is stripped
 * (initial_bytes_to_strip == field length, or CGNET_STRIP_HEADER).
 *
 * 0, CGNET_EINVAL (bad field length or byte order, a header longer than the maximum) or
 * CGNET_ENOMEM. `o` may be NULL (all defaults). Any thread.
 */
typedef struct cgnet_length_field_codec_options {
  cgnet_byte_order byte_order;      /* default big endian */
  size_t length_field_offset;       /* bytes before the length field (default 0) */
  int length_field_length;          /* 1, 2, 3 (24-bit), 4 or 8 bytes (0: 4) */
  int64_t length_adjustment;        /* added to V to get the bytes after the field */
  size_t initial_bytes_to_strip;    /* cut from the front of each frame (default 0:
                                       netty's default; CGNET_STRIP_HEADER: the header) */
  int length_includes_length_field; /* V counts the field's own bytes too */
  size_t max_frame_length; /* whole frame on the wire, header included (0: 1 MiB) */
} cgnet_length_field_codec_options;
CGNET_API int cgnet_codec_length_field(const cgnet_length_field_codec_options *o,
                                       cgnet_codec **out);

/* Free a codec (NULL is ignored); calls ops.destroy for a custom one. Only once no
 * engine or conn uses it. Any thread. */
CGNET_API void cgnet_codec_free(cgnet_codec *codec);

/* The decoder and encoder as pure functions (any thread): what cgnet runs per conn,
 * including its checks of a custom codec's results. For tests, fuzzers and framing by
 * hand. decode returns 1 (a frame), 0 (need more) or a negative code; encode 0 or a
 * negative code. */
CGNET_API int cgnet_codec_decode(const cgnet_codec *codec, const uint8_t *in, size_t len,
                                 cgnet_frame *out);
CGNET_API int cgnet_codec_encode(const cgnet_codec *codec, const uint8_t *frame, size_t len,
                                 cgnet_encoded *out);
CGNET_API size_t cgnet_codec_max_frame_length(const cgnet_codec *codec);

/* Use `codec` on this conn from now on (NULL: back to raw bytes through on_traffic).
 * Typically called from on_open; bytes already buffered are decoded with the new codec
 * (from inside on_frame: starting with the bytes after the current frame). 0 or
 * CGNET_ECLOSED. Loop thread. */
CGNET_API int cgnet_conn_set_codec(cgnet_conn *c, const cgnet_codec *codec);
/* The conn's codec, or NULL. Loop thread. */
CGNET_API const cgnet_codec *cgnet_conn_codec(const cgnet_conn *c);

/* Encode `frame` with the conn's codec and queue it like cgnet_conn_writev (the frame is
 * not copied by the encoder; a large frame with nothing queued goes straight to the
 * socket). 0, CGNET_EINVAL when the conn has no codec, the encoder's error (nothing is
 * written then), or cgnet_conn_writev's. Loop thread. */
CGNET_API int cgnet_conn_write_frame(cgnet_conn *c, const void *frame, size_t len);

/* cgnet_conn_write_frame from any thread: the frame is copied now and encoded on the
 * loop with the conn's codec at that time; done gets write_frame's result. Any thread
 * (holding a reference). 0, CGNET_ENOMEM or CGNET_ECLOSED. */
CGNET_API int cgnet_conn_async_write_frame(cgnet_conn *c, const void *frame, size_t len,
                                           cgnet_write_done_fn done, void *ud);

/* ------------------------------------------------------------------------------------ */
/* Connections: state and controls (loop thread)                                        */
/* ------------------------------------------------------------------------------------ */

/* Close the connection once the current callback returns (queued output gets one last
 * attempt to go out). on_close runs with CGNET_ELOCALCLOSE. Loop thread. */
CGNET_API int cgnet_conn_close(cgnet_conn *c);

/* User context pointer. Loop thread. */
CGNET_API void *cgnet_conn_context(const cgnet_conn *c);
CGNET_API void cgnet_conn_set_context(cgnet_conn *c, void *ctx);

/* The loop and engine that own the conn. Any thread holding a reference (they never
 * change), so a worker can reach the conn's loop with cgnet_loop_execute. */
CGNET_API cgnet_loop *cgnet_conn_loop(const cgnet_conn *c);
CGNET_API cgnet_engine *cgnet_conn_engine(const cgnet_conn *c);

/* The socket descriptor (do not close it yourself). Loop thread. */
CGNET_API int cgnet_conn_fd(const cgnet_conn *c);

/* Local and remote addresses. The sockaddr pointers stay valid for the conn's life. The
 * string form is that of cgnet_format_addr ("1.2.3.4:80", "[::1]:80", a Unix path, or ""
 * for an unnamed Unix peer). Loop thread. */
CGNET_API const struct sockaddr *cgnet_conn_local_addr(const cgnet_conn *c, socklen_t *len);
CGNET_API const struct sockaddr *cgnet_conn_remote_addr(const cgnet_conn *c,
                                                        socklen_t *len);
CGNET_API const char *cgnet_conn_local_addr_string(cgnet_conn *c);
CGNET_API const char *cgnet_conn_remote_addr_string(cgnet_conn *c);

/* Socket controls; each returns 0 or an error. Loop thread. */
CGNET_API int cgnet_conn_set_nodelay(cgnet_conn *c, int on);
/* idle_s <= 0 turns keep-alive off; interval_s/count <= 0 keep the OS default. */
CGNET_API int cgnet_conn_set_keepalive(cgnet_conn *c, int idle_s, int interval_s,
                                       int count);
/* seconds >= 0: SO_LINGER on with that time (0 = RST on close); < 0: linger off. */
CGNET_API int cgnet_conn_set_linger(cgnet_conn *c, int seconds);
CGNET_API int cgnet_conn_set_recv_buffer(cgnet_conn *c, int bytes);
CGNET_API int cgnet_conn_set_send_buffer(cgnet_conn *c, int bytes);

/* The peer's process, user and group at connect time (SO_PEERCRED) of a Unix conn; a
 * NULL pointer is skipped. CGNET_EUNSUPPORTED on any other conn. Loop thread. */
CGNET_API int cgnet_conn_peer_cred(const cgnet_conn *c, pid_t *pid, uid_t *uid, gid_t *gid);

/* ------------------------------------------------------------------------------------ */
/* Timers (loop thread)                                                                 */
/* ------------------------------------------------------------------------------------ */

/*
 * Timers run on a loop's timing wheel (1 ms ticks; start and stop are O(1)). A timer made
 * with cgnet_conn_timer_new belongs to the conn: it is stopped and freed when the conn
 * closes (after on_close), and must not be used after that. A loop timer lives until
 * cgnet_timer_free (which may be called from its own callback) or until the engine is
 * freed, which frees the loop timers left.
 */
typedef struct cgnet_timer cgnet_timer;

/* A timer callback. CLOSE closes the timer's conn (conn timers only); SHUTDOWN stops the
 * engine. */
typedef cgnet_action (*cgnet_timer_fn)(cgnet_timer *t, void *ud);

/* A stopped timer on `loop` (NULL when out of memory). Loop thread of `loop`. */
CGNET_API cgnet_timer *cgnet_timer_new(cgnet_loop *loop, cgnet_timer_fn fn, void *ud);
/* A stopped timer owned by conn `c`. Loop thread. */
CGNET_API cgnet_timer *cgnet_conn_timer_new(cgnet_conn *c, cgnet_timer_fn fn, void *ud);
/* Fire after delay_ms, then every repeat_ms if repeat_ms > 0. Restarts a running timer.
 * A delay or repeat of UINT64_MAX (or any value too large to be reached) is effectively
 * never: the timer stays active and does not fire (again). Loop thread of the timer's
 * loop (CGNET_EWRONGTHREAD elsewhere, like cgnet_timer_stop). */
CGNET_API int cgnet_timer_start(cgnet_timer *t, uint64_t delay_ms, uint64_t repeat_ms);
/* Stop without freeing. Loop thread. */
CGNET_API int cgnet_timer_stop(cgnet_timer *t);
/* Non-zero while the timer is due to fire. Loop thread. */
CGNET_API int cgnet_timer_active(const cgnet_timer *t);
/* Stop and free. Loop timers only (conn timers go with their conn; freeing one earlier
 * is also allowed). Loop thread. */
CGNET_API void cgnet_timer_free(cgnet_timer *t);
/* The conn of a conn timer (NULL for a loop timer), and the timer's loop. Loop thread. */
CGNET_API cgnet_conn *cgnet_timer_conn(const cgnet_timer *t);
CGNET_API cgnet_loop *cgnet_timer_loop(const cgnet_timer *t);

/* Connections closed at once because of max_connections, since start. Any thread. */
CGNET_API uint64_t cgnet_engine_rejected_connections(const cgnet_engine *eng);

/* ------------------------------------------------------------------------------------ */
/* Client: outbound connections in the event loops                                      */
/* ------------------------------------------------------------------------------------ */

/*
 * A client dials outbound connections (or adopts connected sockets) and runs them on
 * event loops with the same callbacks and the same conn API as a server's conns:
 * on_open once connected, on_traffic (or on_frame), on_close, writes, async writes,
 * wake, timers, flow control.
 *
 * Two kinds:
 *  - cgnet_client_new: the client has its own loops (options.num_loops / multicore),
 *    started at once; handler.on_boot, on_tick and on_shutdown work as for an engine.
 *  - cgnet_client_new_on: the client runs on a running engine's loops, so a server can
 *    open backend connections from its own callbacks (a proxy). A dial made on one of
 *    that engine's loop threads puts the new conn on that same loop, so both sides of a
 *    proxied pair live on one thread and talk without locks. The engine's stop closes
 *    the client's conns too (CGNET_ESHUTDOWN). Only the conn callbacks of the client's
 *    handler are used (on_open, on_traffic, on_frame, on_close, on_pre_write,
 *    on_writable_changed, on_read_closed).
 *
 * Options that apply to a client's conns: flow control (watermarks, limits), read and
 * write buffers, timeouts, allow_half_open, edge_triggered (own loops only), tcp_nodelay,
 * keep-alive, linger, socket buffers. Listener options are ignored.
 *
 * A failed dial: on_close(c, reason) runs with the error (CGNET_ECONNREFUSED,
 * CGNET_ETIMEDOUT, CGNET_ERESOLVE, CGNET_ENETUNREACH, ...) and on_open never ran for it;
 * the conn's context is the ctx given to dial. A conn is "open" from on_open on.
 */
typedef struct cgnet_client cgnet_client;

/* A client with its own loops, started at once. `opts` may be NULL. Any thread. */
CGNET_API int cgnet_client_new(const cgnet_handler *handler, const cgnet_options *opts,
                               cgnet_client **out);

/* A client on the loops of the running engine `eng` (which must outlive it). `opts` may
 * be NULL (then the engine's options apply to the client's conns). Any thread. */
CGNET_API int cgnet_client_new_on(cgnet_engine *eng, const cgnet_handler *handler,
                                  const cgnet_options *opts, cgnet_client **out);

/*
 * Start connecting to `addr` ("tcp://127.0.0.1:9000", "tcp6://[::1]:80",
 * "tcp://example.org:80", "udp://127.0.0.1:9001", "unix:///path", "unix://@name") without
 * blocking: returns at once; on_open runs on the conn's loop once connected, or on_close
 * with the error. timeout_ms bounds the connect (0: no bound but the system's); on expiry
 * the dial fails with CGNET_ETIMEDOUT. `ctx` becomes the conn's context before any
 * callback. Host names are resolved off the loops (on a resolver thread of the client)
 * so a dial from a loop thread never blocks it; numeric hosts are used directly.
 * If `out` is not NULL it receives a reference to the new conn (release it with
 * cgnet_conn_unref): the any-thread conn calls (async write, wake, async close) may be
 * used on it at once, even before it connects; writes made before the connect completes
 * are sent once it does.
 * Returns 0, or an error for a malformed address (CGNET_EBADSCHEME, CGNET_EBADADDR, ...),
 * CGNET_ESHUTDOWN (client or engine stopping) or CGNET_ENOMEM; after 0, the outcome
 * always comes as on_open or on_close (when the engine's loops exit before the dial
 * reached one, that on_close, CGNET_ESHUTDOWN, runs on the thread freeing the engine or
 * client, where the loop-only calls answer CGNET_EWRONGTHREAD). timeout_ms UINT64_MAX,
 * like 0, sets no bound. Any thread.
 *
 * Per scheme: tcp waits for the handshake (the timeout applies). unix connects at once
 * or fails at once (CGNET_ENOENT: no such path; CGNET_ECONNREFUSED: a socket file nobody
 * listens on; CGNET_EAGAIN: the listener's backlog is full). udp "connects" at once (it
 * only fixes the peer) and gives a connected datagram conn (cgnet_conn_is_datagram):
 * every on_traffic is one datagram (what is left unread of it is dropped), every
 * cgnet_conn_write / writev sends one datagram at once (CGNET_EAGAIN if the socket
 * buffer is full, CGNET_EMSGSIZE if too long), shutdown_write is CGNET_EUNSUPPORTED, and
 * an ICMP "port unreachable" for an earlier datagram closes the conn with
 * CGNET_ECONNREFUSED. Unlike a server's datagram conn, it is a real conn: on_open,
 * on_close, timeouts, timers and the any-thread calls all work. Address options
 * ("?sessions=1") are a server's: a dial with one is CGNET_EBADOPTION. tls (tls4, tls6)
 * is tcp plus a TLS handshake before on_open (the timeout covers both), over the client
 * options' context (a client one, else CGNET_EINVAL) or a default one (the system's CAs);
 * the HOST as written is sent as SNI (unless an IP literal) and verified against the
 * server's certificate; a failed handshake ends the dial like a refused connect, with
 * on_tls_error and on_close(CGNET_ETLSVERIFY, CGNET_ETLS, ...). Built without TLS:
 * CGNET_EUNSUPPORTED.
 */
CGNET_API int cgnet_client_dial(cgnet_client *cl, const char *addr, uint64_t timeout_ms,
                                void *ctx, cgnet_conn **out);

/* The blocking form for simple programs: dial and wait until on_open has run (returns 0
 * and, if `out` is given, a reference to the conn) or the dial failed (returns its error;
 * on_close has run). Not from a loop thread (CGNET_EWRONGTHREAD). */
CGNET_API int cgnet_client_dial_wait(cgnet_client *cl, const char *addr,
                                     uint64_t timeout_ms, void *ctx, cgnet_conn **out);

/* Take over `fd`, an already-connected socket (a stream socket whose connect has
 * completed, or a datagram socket whose peer connect() fixed; CGNET_ENOTCONN for one
 * never connected, still connecting or listening): it is made non-blocking and
 * on_open runs on a loop. cgnet owns fd from here on, even when this fails (it is
 * closed). `out` as for dial. Any thread. */
CGNET_API int cgnet_client_enroll(cgnet_client *cl, int fd, void *ctx, cgnet_conn **out);

/* Conns of this client open right now (dialing ones included). Any thread. */
CGNET_API size_t cgnet_client_count_connections(const cgnet_client *cl);

/* The engine whose loops the client uses (its own internal one for cgnet_client_new).
 * Any thread. */
CGNET_API cgnet_engine *cgnet_client_engine(const cgnet_client *cl);

/* The client that dialed or enrolled `c`, or NULL for a conn a server accepted. Loop
 * thread (or any thread holding a reference). */
CGNET_API cgnet_client *cgnet_conn_client(const cgnet_conn *c);

/*
 * Close every conn of the client (queued output gets up to timeout_ms to flush; then
 * on_close with CGNET_ESHUTDOWN; an open WebSocket conn sends its close frame, 1001, and
 * gets that time for its close handshake), stop its own loops, and free it. For a client on
 * an engine's loops, the engine keeps running. Blocks until done; not from a loop thread of
 * the client's loops (CGNET_EWRONGTHREAD, nothing freed). References to its conns must be
 * released first or soon after; they never dangle (see cgnet_conn_ref).
 */
CGNET_API int cgnet_client_free(cgnet_client *cl, uint64_t timeout_ms);

/* ------------------------------------------------------------------------------------ */
/* Addresses                                                                            */
/* ------------------------------------------------------------------------------------ */

/* Format a socket address into buf (NUL-terminated): "1.2.3.4:80", "[::1]:80", a Unix
 * path "/run/app.sock", "@name" for an abstract Unix name, and "" (length 0) for an
 * unnamed Unix peer (a client that did not bind). Returns the length, or a negative
 * error (CGNET_ENOBUFS: cap too small). Any thread. */
CGNET_API int cgnet_format_addr(const struct sockaddr *sa, socklen_t len, char *buf,
                                size_t cap);

/* ------------------------------------------------------------------------------------ */
/* Worker pool: blocking work off the event loops (gnet's ants)                          */
/* ------------------------------------------------------------------------------------ */

/*
 * A pool of worker threads that run submitted tasks, for work that may block (disk, a
 * database, sleep) and so must never run on an event loop. Threads are started on demand
 * up to max_threads, kept down to min_threads, and expire after idle_expiry_ms without
 * work. The queue is bounded. Every function here may be called from any thread
 * (including loop threads and workers), except as noted for release.
 */
typedef struct cgnet_pool cgnet_pool;

typedef struct cgnet_pool_options {
  int min_threads;         /* kept alive even when idle (default 0) */
  int max_threads;         /* default: 4 x online CPUs (at least min_threads); <= 4096 */
  size_t queue_capacity;   /* tasks waiting for a worker (default 4096) */
  uint64_t idle_expiry_ms; /* an idle worker above min_threads exits (default 10000) */
} cgnet_pool_options;

typedef void (*cgnet_pool_fn)(void *ud);

/* How cgnet_pool_release treats tasks still queued. */
typedef enum cgnet_pool_release_mode {
  CGNET_POOL_DRAIN = 0,  /* run every queued task, then stop */
  CGNET_POOL_CANCEL = 1, /* drop queued tasks (their cancel function runs), stop */
} cgnet_pool_release_mode;

/* Create a pool (opts may be NULL). 0, CGNET_EINVAL or CGNET_ENOMEM. */
CGNET_API int cgnet_pool_new(const cgnet_pool_options *opts, cgnet_pool **out);

/* Queue fn(ud). Returns 0, CGNET_EBUSY when the queue is full, CGNET_ESHUTDOWN after
 * release, CGNET_EINVAL for a NULL pool or fn, or CGNET_EAGAIN/CGNET_ENOMEM when no
 * worker exists and none could be started (the task is not queued then). */
CGNET_API int cgnet_pool_submit(cgnet_pool *p, cgnet_pool_fn fn, void *ud);

/* Like submit, with cancel(ud) called instead of fn if the task is dropped by a
 * CGNET_POOL_CANCEL release (cancel may be NULL); cancel runs on the thread that calls
 * release. */
CGNET_API int cgnet_pool_submit_ex(cgnet_pool *p, cgnet_pool_fn fn, cgnet_pool_fn cancel,
                                   void *ud);

/* Like submit, but waits up to timeout_ms for room in a full queue (0: do not wait,
 * UINT64_MAX: forever). CGNET_ETIMEDOUT when no room came in time (also for timeout 0),
 * CGNET_ESHUTDOWN if the pool is released meanwhile. Never call it from a loop thread
 * with a long timeout: it blocks. */
CGNET_API int cgnet_pool_submit_wait(cgnet_pool *p, cgnet_pool_fn fn, void *ud,
                                     uint64_t timeout_ms);

/* Workers running a task now; tasks waiting; the maximum number of workers; live worker
 * threads (busy or idle). */
CGNET_API size_t cgnet_pool_running(const cgnet_pool *p);
CGNET_API size_t cgnet_pool_waiting(const cgnet_pool *p);
CGNET_API size_t cgnet_pool_capacity(const cgnet_pool *p);
CGNET_API size_t cgnet_pool_threads(const cgnet_pool *p);

/* Change max_threads at run time (>= 1; it may go below min_threads, and then wins).
 * Extra workers exit once their task is done. CGNET_ESHUTDOWN after release. */
CGNET_API int cgnet_pool_tune(cgnet_pool *p, int max_threads);

/* Stop accepting tasks; DRAIN runs what is queued, CANCEL drops it; wait up to
 * timeout_ms (UINT64_MAX: forever) for every worker to finish, and free the pool.
 * Returns 0, or CGNET_ETIMEDOUT if some task was still running at the deadline: the
 * pool then finishes in the background and frees itself after its last task. Either
 * way `p` must not be used after the call. Call once, not from a worker of this pool. */
CGNET_API int cgnet_pool_release(cgnet_pool *p, cgnet_pool_release_mode mode,
                                 uint64_t timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* CGNET_H */
