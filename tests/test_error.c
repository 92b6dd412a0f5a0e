/* Error codes: every code in CGNET_ERRNO_MAP has its text and name; errno mirroring;
 * other system errors passed through as -errno get the system's text and name. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cgnet.h"

typedef struct err_entry {
  int code;
  const char *name; /* "CGNET_" #name */
  const char *msg;
} err_entry;

static const err_entry all_errors[] = {
#define XX(name, val, msg) {CGNET_##name, "CGNET_" #name, msg},
    CGNET_ERRNO_MAP(XX)
#undef XX
};
#define NERRORS (sizeof(all_errors) / sizeof(all_errors[0]))

static void test_strerror_matches_map(void **state) {
  (void)state;
  for (size_t i = 0; i < NERRORS; i++) {
    const char *s = cgnet_strerror(all_errors[i].code);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
    if (strcmp(s, all_errors[i].msg) != 0)
      fail_msg("cgnet_strerror(%s) = \"%s\", want \"%s\"", all_errors[i].name, s,
               all_errors[i].msg);
  }
}

static void test_err_name_matches_map(void **state) {
  (void)state;
  for (size_t i = 0; i < NERRORS; i++) {
    const char *n = cgnet_err_name(all_errors[i].code);
    assert_non_null(n);
    assert_int_equal(strncmp(n, "CGNET_", 6), 0);
    if (strcmp(n, all_errors[i].name) != 0)
      fail_msg("cgnet_err_name(%d) = \"%s\", want \"%s\"", all_errors[i].code, n,
               all_errors[i].name);
  }
}

static void test_codes_and_names_distinct(void **state) {
  (void)state;
  for (size_t i = 0; i < NERRORS; i++) {
    assert_true(all_errors[i].code < 0);
    for (size_t j = i + 1; j < NERRORS; j++) {
      if (all_errors[i].code == all_errors[j].code)
        fail_msg("%s and %s share code %d", all_errors[i].name, all_errors[j].name,
                 all_errors[i].code);
      assert_string_not_equal(cgnet_err_name(all_errors[i].code),
                              cgnet_err_name(all_errors[j].code));
      assert_string_not_equal(cgnet_strerror(all_errors[i].code),
                              cgnet_strerror(all_errors[j].code));
    }
  }
}

static int is_known_name(const char *n) {
  for (size_t i = 0; i < NERRORS; i++)
    if (strcmp(n, all_errors[i].name) == 0) return 1;
  return 0;
}

static int is_known_code(int code) {
  for (size_t i = 0; i < NERRORS; i++)
    if (all_errors[i].code == code) return 1;
  return 0;
}

static void test_unknown_codes_are_generic(void **state) {
  (void)state;
  const int unknown[] = {-3999, -4000, -4004, -4099,   -9999,  -100000,
                         1,     77,    12345, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    assert_false(is_known_code(unknown[i]));
    const char *s = cgnet_strerror(unknown[i]);
    const char *n = cgnet_err_name(unknown[i]);
    assert_non_null(s);
    assert_non_null(n);
    assert_true(strlen(s) > 0);
    assert_true(strlen(n) > 0);
    if (is_known_name(n)) fail_msg("unknown code %d named %s", unknown[i], n);
    for (size_t j = 0; j < NERRORS; j++)
      if (strcmp(s, all_errors[j].msg) == 0)
        fail_msg("unknown code %d described as %s's \"%s\"", unknown[i], all_errors[j].name,
                 s);
  }
  /* 0 is not an error; it must still get a non-NULL text and name. */
  assert_non_null(cgnet_strerror(0));
  assert_non_null(cgnet_err_name(0));
  assert_false(is_known_name(cgnet_err_name(0)));
}

/* A system error without a CGNET_ code of its own, passed through as -errno (ENODEV from
 * SO_BINDTODEVICE, ENOSPC, ENOTSOCK, ...), gets the system's description and errno name,
 * never "unknown error". */
static void test_system_errors_described(void **state) {
  (void)state;
  const int sys[] = {ENODEV, ENOSPC, ENOTSOCK, ESRCH, ENXIO, EROFS, ELOOP, EDESTADDRREQ};
  const char *names[] = {"ENODEV", "ENOSPC", "ENOTSOCK", "ESRCH",
                         "ENXIO",  "EROFS",  "ELOOP",    "EDESTADDRREQ"};
  const char *unknown_text = cgnet_strerror(-9999);
  const char *unknown_name = cgnet_err_name(-9999);
  for (size_t i = 0; i < sizeof(sys) / sizeof(sys[0]); i++) {
    assert_false(is_known_code(-sys[i]));
    const char *s = cgnet_strerror(-sys[i]);
    const char *n = cgnet_err_name(-sys[i]);
    assert_non_null(s);
    assert_non_null(n);
    if (strcmp(s, unknown_text) == 0) fail_msg("-%s described as \"%s\"", names[i], s);
    assert_string_equal(n, names[i]);
    assert_string_not_equal(n, unknown_name);
  }
  assert_string_equal(cgnet_strerror(-ENODEV), "No such device");
  assert_string_equal(cgnet_strerror(-ENOSPC), "No space left on device");
  /* Distinct errors get distinct texts. */
  assert_string_not_equal(cgnet_strerror(-ENODEV), cgnet_strerror(-ENOTSOCK));
  /* The texts are static: they stay valid and unchanged across calls and threads. */
  const char *first = cgnet_strerror(-ENOTSOCK);
  (void)cgnet_strerror(-ENOSPC);
  assert_ptr_equal(cgnet_strerror(-ENOTSOCK), first);
  /* A positive errno value is not an error code: it stays unknown. */
  assert_string_equal(cgnet_strerror(ENODEV), unknown_text);
  assert_string_equal(cgnet_err_name(ENODEV), unknown_name);
}

static void test_errno_mirroring(void **state) {
  (void)state;
  assert_int_equal(CGNET_EPERM, -EPERM);
  assert_int_equal(CGNET_ENOENT, -ENOENT);
  assert_int_equal(CGNET_EINTR, -EINTR);
  assert_int_equal(CGNET_EIO, -EIO);
  assert_int_equal(CGNET_EBADF, -EBADF);
  assert_int_equal(CGNET_EAGAIN, -EAGAIN);
  assert_int_equal(CGNET_ENOMEM, -ENOMEM);
  assert_int_equal(CGNET_EACCES, -EACCES);
  assert_int_equal(CGNET_EBUSY, -EBUSY);
  assert_int_equal(CGNET_EEXIST, -EEXIST);
  assert_int_equal(CGNET_EINVAL, -EINVAL);
  assert_int_equal(CGNET_ENFILE, -ENFILE);
  assert_int_equal(CGNET_EMFILE, -EMFILE);
  assert_int_equal(CGNET_EPIPE, -EPIPE);
  assert_int_equal(CGNET_ENAMETOOLONG, -ENAMETOOLONG);
  assert_int_equal(CGNET_EOVERFLOW, -EOVERFLOW);
  assert_int_equal(CGNET_EMSGSIZE, -EMSGSIZE);
  assert_int_equal(CGNET_EPROTONOSUPPORT, -EPROTONOSUPPORT);
  assert_int_equal(CGNET_EUNSUPPORTED, -EOPNOTSUPP);
  assert_int_equal(CGNET_EAFNOSUPPORT, -EAFNOSUPPORT);
  assert_int_equal(CGNET_EADDRINUSE, -EADDRINUSE);
  assert_int_equal(CGNET_EADDRNOTAVAIL, -EADDRNOTAVAIL);
  assert_int_equal(CGNET_ENETDOWN, -ENETDOWN);
  assert_int_equal(CGNET_ENETUNREACH, -ENETUNREACH);
  assert_int_equal(CGNET_ECONNABORTED, -ECONNABORTED);
  assert_int_equal(CGNET_ECONNRESET, -ECONNRESET);
  assert_int_equal(CGNET_ENOBUFS, -ENOBUFS);
  assert_int_equal(CGNET_ENOTCONN, -ENOTCONN);
  assert_int_equal(CGNET_ESHUTDOWN, -ESHUTDOWN);
  assert_int_equal(CGNET_ETIMEDOUT, -ETIMEDOUT);
  assert_int_equal(CGNET_ECONNREFUSED, -ECONNREFUSED);
  assert_int_equal(CGNET_EHOSTUNREACH, -EHOSTUNREACH);
  assert_int_equal(CGNET_EALREADY, -EALREADY);
  assert_int_equal(CGNET_ECANCELED, -ECANCELED);
  /* cgnet's own codes live below -4000, clear of every errno. */
  const int own[] = {CGNET_EOF,         CGNET_ECLOSED,      CGNET_ELOCALCLOSE,
                     CGNET_EBADSCHEME,  CGNET_EBADADDR,     CGNET_EBADPORT,
                     CGNET_EADDRFAMILY, CGNET_ERESOLVE,     CGNET_EFRAMETOOLARGE,
                     CGNET_ECODEC,      CGNET_EWRONGTHREAD, CGNET_ETLS,
                     CGNET_ETLSVERIFY,  CGNET_ETLSCERT,     CGNET_ETLSTRUNCATED,
                     CGNET_EBADOPTION};
  for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
    assert_true(own[i] < -4000);
}

static void test_passthrough_errno(void **state) {
  (void)state;
  /* A system error passed through as -errno is described like the matching code. */
  assert_string_equal(cgnet_err_name(-EADDRINUSE), "CGNET_EADDRINUSE");
  assert_string_equal(cgnet_err_name(-ECONNRESET), "CGNET_ECONNRESET");
  assert_string_equal(cgnet_strerror(-EINVAL), "invalid argument");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strerror_matches_map),
      cmocka_unit_test(test_err_name_matches_map),
      cmocka_unit_test(test_codes_and_names_distinct),
      cmocka_unit_test(test_unknown_codes_are_generic),
      cmocka_unit_test(test_system_errors_described),
      cmocka_unit_test(test_errno_mirroring),
      cmocka_unit_test(test_passthrough_errno),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
