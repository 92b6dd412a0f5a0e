/*
 * codec_echo — an echo server that speaks in frames: each complete frame a client sends
 * comes back encoded with the same codec (gnet's codec example).
 *
 *   build/examples/codec_echo [ADDR] --codec line|delim:STR|fixed:N|lenfield:LEN[:be|le]
 *                             [--loops N] [--max BYTES]
 *
 *   line           "\n"-terminated lines ("\r\n" accepted; the reply ends in "\n")
 *   delim:STR      frames end with STR; \n \r \t \\ and \xHH escapes work ("delim:\r\n")
 *   fixed:N        frames of exactly N bytes
 *   lenfield:LEN   a LEN-byte (1, 2, 3, 4 or 8) length prefix, big endian unless ":le";
 *                  the prefix counts the payload only
 *
 * ADDR is a stream address (tcp://, tcp4://, tcp6://, unix://; default
 * tcp://127.0.0.1:9000; port 0: a free one, the first line on stdout names it); udp://
 * is refused at start (codecs frame byte streams; a datagram is its own frame). --max
 * sets the codec's maximum frame length (default 1 MiB; fixed:N frames are N bytes): a
 * larger frame closes the connection. Every conn that closes with an error gets a line
 * on stderr saying why. SIGINT or SIGTERM stops it. Try it:
 *
 *   build/examples/codec_echo --codec line &
 *   printf 'hello\nworld\n' | nc -q1 127.0.0.1 9000
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cgnet.h"

/* Every complete frame: write it back, encoded. The frame points into cgnet's buffer and
 * is valid until we return; write_frame copies it into the conn's output (or sends a
 * large one straight away). Replies to all frames of one read leave in one send. */
static cgnet_action on_frame(cgnet_conn *c, const uint8_t *frame, size_t len) {
  int err = cgnet_conn_write_frame(c, frame, len);
  if (err == 0) return CGNET_NONE;
  /* Our own close reads as CGNET_ELOCALCLOSE in on_close: say here why. */
  fprintf(stderr, "codec_echo: closing %s: echo of a %zu-byte frame: %s\n",
          cgnet_conn_remote_addr_string(c), len, cgnet_strerror(err));
  return CGNET_CLOSE;
}

/* Every conn that ends with an error (a codec error, an oversized frame, a reset, a
 * full output buffer, ...) gets a line: a silent close is a mystery to a user. */
static cgnet_action on_close(cgnet_conn *c, int reason) {
  if (ex_close_is_error(reason))
    fprintf(stderr, "codec_echo: closed %s: %s\n", cgnet_conn_remote_addr_string(c),
            cgnet_strerror(reason));
  return CGNET_NONE;
}

static const char USAGE[] =
    "usage: codec_echo [ADDR] --codec line|delim:STR|fixed:N|lenfield:LEN[:be|le]\n"
    "                  [--loops N] [--max BYTES]\n"
    "  ADDR          tcp://HOST:PORT, tcp4://, tcp6://[::1]:PORT, unix:///PATH or\n"
    "                unix://@NAME (default tcp://127.0.0.1:9000; port 0: a free one);\n"
    "                not udp:// (codecs frame byte streams)\n"
    "  --codec SPEC  line: \"\\n\"-terminated lines (\"\\r\\n\" accepted)\n"
    "                delim:STR: frames end with STR (\\n \\r \\t \\\\ \\xHH escapes)\n"
    "                fixed:N: frames of exactly N bytes, 1..1073741824\n"
    "                lenfield:LEN[:be|le]: a LEN-byte (1, 2, 3, 4, 8) length prefix\n"
    "  --loops N     event loops, 1..1024, or 0 for one per CPU (default 1)\n"
    "  --max BYTES   largest frame, 1..1073741824 (default 1048576; not for fixed:N)\n";

#define MAX_FRAME ((uint64_t)1 << 30)

static int hex_digit(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Decode C-style escapes of s into out (room for strlen(s) bytes); returns the length,
 * or 0 on a malformed escape. */
static size_t unescape(const char *s, uint8_t *out) {
  size_t n = 0;
  while (*s) {
    if (*s != '\\') {
      out[n++] = (uint8_t)*s++;
      continue;
    }
    s++;
    switch (*s) {
    case 'n':
      out[n++] = '\n';
      break;
    case 'r':
      out[n++] = '\r';
      break;
    case 't':
      out[n++] = '\t';
      break;
    case '\\':
      out[n++] = '\\';
      break;
    case 'x':
      if (hex_digit(s[1]) < 0 || hex_digit(s[2]) < 0) return 0;
      out[n++] = (uint8_t)(hex_digit(s[1]) * 16 + hex_digit(s[2]));
      s += 2;
      break;
    default:
      return 0;
    }
    s++;
  }
  return n;
}

/* Build the codec named by spec. 0 or an error code. */
static int make_codec(const char *spec, size_t max, cgnet_codec **out) {
  if (strcmp(spec, "line") == 0) {
    cgnet_line_codec_options o = {.max_frame_length = max};
    return cgnet_codec_line(&o, out);
  }
  if (strncmp(spec, "delim:", 6) == 0) {
    uint8_t delim[256];
    if (strlen(spec + 6) >= sizeof delim) return CGNET_EINVAL;
    cgnet_delimiter_codec_options o = {.delimiter = delim,
                                       .delimiter_len = unescape(spec + 6, delim),
                                       .max_frame_length = max};
    return cgnet_codec_delimiter(&o, out); /* the delimiter is copied */
  }
  if (strncmp(spec, "fixed:", 6) == 0) {
    uint64_t n;
    if (ex_parse_u64(spec + 6, 1, MAX_FRAME, &n) != 0) return CGNET_EINVAL;
    return cgnet_codec_fixed((size_t)n, out);
  }
  if (strncmp(spec, "lenfield:", 9) == 0) {
    cgnet_length_field_codec_options o = {.initial_bytes_to_strip = CGNET_STRIP_HEADER,
                                          .max_frame_length = max};
    char digit[2] = {spec[9], '\0'};
    uint64_t n;
    if (ex_parse_u64(digit, 1, 8, &n) != 0) return CGNET_EINVAL;
    o.length_field_length = (int)n;
    const char *end = spec + 10;
    if (strcmp(end, ":le") == 0)
      o.byte_order = CGNET_LITTLE_ENDIAN;
    else if (*end && strcmp(end, ":be") != 0)
      return CGNET_EINVAL;
    return cgnet_codec_length_field(&o, out);
  }
  return CGNET_EINVAL;
}

/* The output a conn may queue. An echo of one frame is queued whole (write_frame does
 * not take part of it), so the default limit (8 MiB) would refuse every frame larger
 * than that with CGNET_EOVERFLOW. Room for two frames: one leaving while the next is
 * queued (reading stops above the high watermark, so no more pile up). */
static size_t write_limit_for(size_t max_frame) {
  size_t want = 2 * max_frame + ((size_t)64 << 10);
  return want > ((size_t)8 << 20) ? want : 0; /* 0: cgnet's default */
}

int main(int argc, char **argv) {
  const char *addr = "tcp://127.0.0.1:9000", *spec = NULL;
  size_t max = 0;
  cgnet_options o = {0};
  ex_args a;
  ex_args_init(&a, "codec_echo", USAGE, argc, argv);
  int have_addr = 0;
  for (const char *arg; (arg = ex_next(&a)) != NULL;) {
    if (ex_is(arg, "--codec")) {
      spec = ex_value(&a, arg);
    } else if (ex_is(arg, "--loops")) {
      ex_loops(&a, arg, &o);
    } else if (ex_is(arg, "--max")) {
      max = (size_t)ex_u64(&a, arg, 1, MAX_FRAME);
    } else if (!ex_address_arg(arg, &addr, &have_addr)) {
      ex_unknown(&a, arg);
    }
  }
  if (!spec) ex_usage_error(&a, "--codec is required");
  ex_check_addr(&a, "listen address", addr, EX_ADDR_TCP | EX_ADDR_UNIX, EX_LISTEN,
                "codecs frame byte streams");
  cgnet_codec *codec;
  int err = make_codec(spec, max, &codec);
  if (err)
    ex_usage_error(&a,
                   "--codec '%s': %s (want line, delim:STR, fixed:N with N 1..%llu, or "
                   "lenfield:LEN[:be|le] with LEN 1, 2, 3, 4 or 8)",
                   spec, cgnet_strerror(err), (unsigned long long)MAX_FRAME);
  o.codec = codec; /* every conn starts with it */
  o.write_buffer_limit = write_limit_for(cgnet_codec_max_frame_length(codec));

  sigset_t set;
  ex_block_stop_signals(&set); /* the loop threads inherit the mask */

  cgnet_handler h = {.on_frame = on_frame, .on_close = on_close};
  cgnet_engine *eng;
  err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "codec_echo: %s: %s\n", addr, cgnet_strerror(err));
    cgnet_codec_free(codec);
    return 1;
  }
  ex_print_listening("codec_echo", eng, &addr, spec);
  int sig;
  sigwait(&set, &sig);
  cgnet_engine_stop(eng, 1000);
  err = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  cgnet_codec_free(codec); /* only once no conn can use it */
  return err ? 1 : 0;
}
