/*
 * run_on_backend BACKEND PROGRAM [ARGS...]: run a test program with CGNET_BACKEND set, or
 * skip it (exit 77, ctest's SKIP_RETURN_CODE) when this machine cannot run that backend,
 * saying why. ctest registers every engine test once per backend through it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgnet.h"

#define SKIP 77

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: run_on_backend epoll|io_uring PROGRAM [ARGS...]\n");
    return 2;
  }
  cgnet_backend b;
  if (strcmp(argv[1], "epoll") == 0) {
    b = CGNET_BACKEND_EPOLL;
  } else if (strcmp(argv[1], "io_uring") == 0) {
    b = CGNET_BACKEND_IO_URING;
  } else {
    fprintf(stderr, "run_on_backend: unknown backend '%s'\n", argv[1]);
    return 2;
  }
  int err = cgnet_backend_supported(b);
  if (err) {
    printf("SKIP: the %s backend cannot run on this machine: %s\n", argv[1],
           cgnet_strerror(err));
    return SKIP;
  }
  if (setenv("CGNET_BACKEND", argv[1], 1) != 0) {
    perror("run_on_backend: setenv");
    return 2;
  }
  execv(argv[2], argv + 2);
  perror("run_on_backend: exec");
  return 2;
}
