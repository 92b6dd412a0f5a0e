/*
 * Error names and messages, generated from the one list in include/cgnet.h, and the
 * system's own for any other -errno passed through (ENODEV from SO_BINDTODEVICE, ENOSPC,
 * ENOTSOCK, ...).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerrordesc_np, strerrorname_np */
#endif
#include <limits.h>
#include <string.h>

#include "cgnet.h"

/* glibc 2.32 added strerrordesc_np and strerrorname_np: they return static, untranslated
 * strings, so unlike strerror they are safe from any thread, need no buffer, and do not
 * change with the locale. Elsewhere a system error only gets the generic text. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define HAVE_ERRNO_NP 1
#else
#define HAVE_ERRNO_NP 0
#endif

#define UNKNOWN_TEXT "unknown error"
#define UNKNOWN_NAME "CGNET_UNKNOWN"

/* The errno value behind a negative code, or 0 (positive codes are not errors). */
static int errno_of(int err) {
  return err < 0 && err != INT_MIN ? -err : 0;
}

/* The system's description of -err, or NULL if it is not an errno the system knows. */
static const char *system_text(int err) {
#if HAVE_ERRNO_NP
  int e = errno_of(err);
  return e ? strerrordesc_np(e) : NULL;
#else
  (void)err;
  return NULL;
#endif
}

/* The errno name of -err ("ENODEV"), or NULL. */
static const char *system_name(int err) {
#if HAVE_ERRNO_NP
  int e = errno_of(err);
  return e ? strerrorname_np(e) : NULL;
#else
  (void)err;
  return NULL;
#endif
}

const char *cgnet_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define CGNET_ERR_MSG_(name, val, msg)                                                     \
  case (val):                                                                              \
    return msg;
    CGNET_ERRNO_MAP(CGNET_ERR_MSG_)
#undef CGNET_ERR_MSG_
  default: {
    const char *s = system_text(err);
    return s ? s : UNKNOWN_TEXT;
  }
  }
}

const char *cgnet_err_name(int err) {
  switch (err) {
  case 0:
    return "CGNET_OK";
#define CGNET_ERR_NAME_(name, val, msg)                                                    \
  case (val):                                                                              \
    return "CGNET_" #name;
    CGNET_ERRNO_MAP(CGNET_ERR_NAME_)
#undef CGNET_ERR_NAME_
  default: {
    const char *s = system_name(err);
    return s ? s : UNKNOWN_NAME;
  }
  }
}
