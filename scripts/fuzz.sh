#!/usr/bin/env bash
# Build the fuzz targets (fuzz/fuzz_<target>.c) with clang and libFuzzer into
# build-fuzz/, then run each for a bounded time. Exits non-zero if a target fails to
# build or finds a crash (or a broken invariant: the targets abort on those).
#
#   scripts/fuzz.sh [SECONDS]      (default: $FUZZ_SECONDS, else 60) per target
#   FUZZ_TARGETS="line fixed" scripts/fuzz.sh 10
#
# The codec targets link only the codec; read_path drives a real client and loop, so it
# links the whole library; http links the HTTP example's request parser; tls_server
# links the library with TLS on, OpenSSL, and the test certificate maker; ws_frame and
# ws_handshake link the WebSocket protocol modules and zlib (target_sources
# below). Each target starts from a copy of its
# seed corpus (fuzz/corpus/<target>/) in build-fuzz/corpus/<target>/, so runs accumulate
# coverage without touching the tree, and uses fuzz/<target>.dict if there is one. A
# crashing input is saved as build-fuzz/crash-<target>-*.
# Needs clang and the libFuzzer runtime (Debian: clang, libclang-rt-14-dev; see
# scripts/deps.sh).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
seconds=${1:-${FUZZ_SECONDS:-60}}
out=build-fuzz
cc=${FUZZ_CC:-clang}
# Default: every target there is (fuzz/fuzz_<target>.c), so none is left out of make test.
all_targets=$(for f in fuzz/fuzz_*.c; do f=${f#fuzz/fuzz_}; echo "${f%.c}"; done)
# shellcheck disable=SC2206 # a space-separated list
targets=(${FUZZ_TARGETS:-$all_targets})
flags=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
  -Iinclude -Isrc -Iexamples -Wall -Wextra -Werror)

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz: $cc not found (bash scripts/deps.sh installs it)" >&2
  exit 1
fi
mkdir -p "$out"

# The sources (and link flags) a target is built from, besides fuzz/fuzz_<target>.c.
target_sources() {
  case "$1" in
    read_path) echo src/*.c src/backend/*.c -pthread ;;
    tls_*) echo src/*.c src/backend/*.c tests/support/tls_certs.c -Itests -DCGNET_HAVE_TLS \
      $(pkg-config --cflags --libs libssl libcrypto) -pthread ;;
    http) echo examples/http_parser.c ;;
    ws_frame | ws_handshake)
      echo src/ws_frame.c src/utf8.c src/ws_deflate.c src/ws_handshake.c src/sha1.c \
        src/base64.c -DCGNET_HAVE_ZLIB -lz
      ;;
    *) echo src/codec.c src/error.c ;;
  esac
}

declare -A result
fail=0
for t in "${targets[@]}"; do
  bin="$out/fuzz_$t"
  # shellcheck disable=SC2046 # the source list is meant to split (and glob)
  if ! "$cc" "${flags[@]}" "fuzz/fuzz_$t.c" $(target_sources "$t") -o "$bin"; then
    result[$t]="FAIL  build failed"
    fail=1
    continue
  fi
  corpus="$out/corpus/$t"
  mkdir -p "$corpus"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  dict=()
  [[ -f "fuzz/$t.dict" ]] && dict=(-dict="fuzz/$t.dict")
  log="$out/fuzz_$t.log"
  echo "==> fuzz_$t for ${seconds}s"
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict[@]}" -artifact_prefix="$out/crash-$t-" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
  if ((rc == 0)); then
    result[$t]="PASS  ${runs:-?} runs, ${cov:-cov: ?}"
  else
    result[$t]="FAIL  exit $rc after ${runs:-?} runs (see $log)"
    tail -n 30 "$log" >&2
    fail=1
  fi
done

echo "==> fuzz summary (${seconds}s per target)"
for t in "${targets[@]}"; do
  printf 'fuzz_%-13s %s\n' "$t" "${result[$t]}"
done
exit "$fail"
