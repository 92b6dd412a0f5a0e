/*
 * FZ_CHECK: the fuzz targets' invariant check. A broken invariant is a finding: say which
 * and where, then abort() so that libFuzzer saves the input.
 */
#ifndef CGNET_FUZZ_CHECK_H
#define CGNET_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FZ_CHECK(cond)                                                                     \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);         \
      abort();                                                                             \
    }                                                                                      \
  } while (0)

#endif
