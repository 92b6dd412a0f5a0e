/*
 * The proxy at full size: 100 MiB through each of 20 concurrent conns, every
 * byte checked (the same tests as tests/test_proxy.c, which runs them smaller).
 * cgnet-test-timeout: 900
 */
#define PROXY_LONG 1
#include "../test_proxy.c"
