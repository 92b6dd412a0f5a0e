/* The library's only output: log lines to the user's logger, or stderr by default. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "core.h"

static const char *level_name(cgnet_log_level level) {
  switch (level) {
  case CGNET_LOG_DEBUG:
    return "debug";
  case CGNET_LOG_INFO:
    return "info";
  case CGNET_LOG_WARN:
    return "warn";
  case CGNET_LOG_ERROR:
    return "error";
  default:
    return "log";
  }
}

void cgnet__log(const cgnet_engine *eng, cgnet_log_level level, const char *fmt, ...) {
  cgnet_log_level min = eng ? eng->o.log_level : CGNET_LOG_WARN;
  if (level < min) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (eng && eng->o.logger) {
    eng->o.logger(eng->o.logger_ud, level, msg);
    return;
  }
  /* One fprintf per line so lines from different loops do not interleave. */
  fprintf(stderr, "cgnet %s: %s\n", level_name(level), msg);
}

uint64_t cgnet__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
