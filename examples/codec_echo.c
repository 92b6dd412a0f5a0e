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
 * ADDR defaults to tcp://127.0.0.1:9000 (port 0: a free one; the first line on stdout
 * names it). --max sets the codec's maximum frame length (default 1 MiB): a larger
 * frame closes the connection. SIGINT or SIGTERM stops it. Try it:
 *
 *   build/examples/codec_echo --codec line &   printf 'hello\nworld\n' | nc -q1 127.0.0.1
 * 9000
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgnet.h"

/* Every complete frame: write it back, encoded. The frame points into cgnet's buffer and
 * is valid until we return; write_frame copies it into the conn's output (or sends a
 * large one straight away). Replies to all frames of one read leave in one send. */
static cgnet_action on_frame(cgnet_conn *c, const uint8_t *frame, size_t len) {
  return cgnet_conn_write_frame(c, frame, len) == 0 ? CGNET_NONE : CGNET_CLOSE;
}

/* A codec error or an oversized frame ends the conn with a reason worth a line. */
static cgnet_action on_close(cgnet_conn *c, int reason) {
  if (reason == CGNET_EFRAMETOOLARGE || reason == CGNET_ECODEC)
    fprintf(stderr, "codec_echo: closed %s: %s\n", cgnet_conn_remote_addr_string(c),
            cgnet_strerror(reason));
  return CGNET_NONE;
}

static void usage(void) {
  fprintf(stderr,
          "usage: codec_echo [ADDR] --codec line|delim:STR|fixed:N|lenfield:LEN[:be|le]\n"
          "                  [--loops N] [--max BYTES]\n"
          "  ADDR defaults to tcp://127.0.0.1:9000\n");
  exit(2);
}

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
  char *end;
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
    unsigned long long n = strtoull(spec + 6, &end, 10);
    return *end ? CGNET_EINVAL : cgnet_codec_fixed((size_t)n, out);
  }
  if (strncmp(spec, "lenfield:", 9) == 0) {
    cgnet_length_field_codec_options o = {.initial_bytes_to_strip = CGNET_STRIP_HEADER,
                                          .max_frame_length = max};
    o.length_field_length = (int)strtol(spec + 9, &end, 10);
    if (end == spec + 9) return CGNET_EINVAL;
    if (strcmp(end, ":le") == 0)
      o.byte_order = CGNET_LITTLE_ENDIAN;
    else if (*end && strcmp(end, ":be") != 0)
      return CGNET_EINVAL;
    return cgnet_codec_length_field(&o, out);
  }
  return CGNET_EINVAL;
}

int main(int argc, char **argv) {
  const char *addr = "tcp://127.0.0.1:9000", *spec = NULL;
  size_t max = 0;
  cgnet_options o = {0};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--codec") == 0 && i + 1 < argc)
      spec = argv[++i];
    else if (strcmp(argv[i], "--loops") == 0 && i + 1 < argc)
      o.num_loops = atoi(argv[++i]);
    else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc)
      max = (size_t)strtoull(argv[++i], NULL, 10);
    else if (argv[i][0] != '-')
      addr = argv[i];
    else
      usage();
  }
  if (!spec) usage();
  cgnet_codec *codec;
  int err = make_codec(spec, max, &codec);
  if (err) {
    fprintf(stderr, "codec_echo: --codec %s: %s\n", spec, cgnet_strerror(err));
    return 2;
  }
  o.codec = codec; /* every conn starts with it */

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* the loop threads inherit the mask */

  cgnet_handler h = {.on_frame = on_frame, .on_close = on_close};
  cgnet_engine *eng;
  err = cgnet_engine_start(&h, &addr, 1, &o, &eng);
  if (err) {
    fprintf(stderr, "codec_echo: %s: %s\n", addr, cgnet_strerror(err));
    cgnet_codec_free(codec);
    return 1;
  }
  printf("codec_echo: listening on port %d (%s, %d loop%s)\n",
         cgnet_engine_listen_port(eng, 0), spec, cgnet_engine_num_loops(eng),
         cgnet_engine_num_loops(eng) == 1 ? "" : "s");
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  cgnet_engine_stop(eng, 1000);
  err = cgnet_engine_wait(eng);
  cgnet_engine_free(eng);
  cgnet_codec_free(codec); /* only once no conn can use it */
  return err ? 1 : 0;
}
