#!/usr/bin/env bash
# Configure, build and run the ctest suite in one or more build variants, then print a
# summary line per variant and a total line. Exits non-zero if any variant failed, after
# running all of them.
#
#   scripts/check-tests.sh [plain] [asan] [tsan] [fuzz]     (default: all four)
#
#   plain  build/        CGNET_SANITIZE=""
#   asan   build-asan/   CGNET_SANITIZE=address  (ASan + UBSan + LeakSanitizer)
#   tsan   build-tsan/   CGNET_SANITIZE=thread
#   fuzz   build-fuzz/   scripts/fuzz.sh: every fuzz target briefly (CGNET_FUZZ_SECONDS,
#                        default 5 s per target); a crash or broken invariant fails it
#
# Extra cmake arguments can be passed in CMAKE_ARGS; extra ctest arguments in CTEST_ARGS.
# CGNET_TSAN_SETARCH=1|0 forces / forbids running the TSan suite under `setarch -R`.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
root=$PWD
jobs=$(nproc 2>/dev/null || echo 2)
variants=("$@")
((${#variants[@]})) || variants=(plain asan tsan fuzz)

declare -A summary
total_pass=0
total_fail=0
total_skip=0
overall=0

say() { printf '\n==> %s\n' "$*"; }

# Print the compiler CMake chose for build dir $1.
cmake_cc() {
  sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$1/CMakeCache.txt" 2>/dev/null | head -n1
}

# probe DIR NAME FLAGS... : compile a tiny threaded program with FLAGS into DIR/NAME.
probe_build() {
  local dir="$1" name="$2"
  shift 2
  local cc
  cc=$(cmake_cc "$dir")
  mkdir -p "$dir/probe"
  cat >"$dir/probe/$name.c" <<'PROBE'
#include <pthread.h>
#include <stdlib.h>
static int counter;
static void *work(void *arg) { (void)arg; __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST); return NULL; }
int main(void) {
  pthread_t t;
  void *p = malloc(64);
  if (pthread_create(&t, NULL, work, NULL) != 0) return 1;
  pthread_join(t, NULL);
  free(p);
  return counter == 1 ? 0 : 1;
}
PROBE
  "${cc:-cc}" "$@" -pthread "$dir/probe/$name.c" -o "$dir/probe/$name" >/dev/null 2>&1
}

# Run-time environment for the sanitizer variants. Returns, in the global `runner`, a
# command prefix for ctest (setarch -R when TSan needs ASLR off).
setup_env() {
  local variant="$1" dir="$2"
  runner=()
  case "$variant" in
    # allocator_may_return_null=1: the tests exercise cgnet's ENOMEM paths with huge
    # requests, which must come back as NULL rather than kill the process.
    asan)
      export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
      export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
      # LeakSanitizer cannot run under some ptrace-restricted sandboxes; say so loudly
      # rather than failing every test for a reason that is not cgnet's.
      if probe_build "$dir" asan_probe -fsanitize=address,undefined &&
        ! "$dir/probe/asan_probe" >/dev/null 2>&1; then
        if ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}" \
          "$dir/probe/asan_probe" >/dev/null 2>&1; then
          echo "check-tests: WARNING: LeakSanitizer does not work here; detect_leaks=0" >&2
          ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}"
        fi
      fi
      echo "ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS"
      ;;
    tsan)
      export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1}"
      # TSan's shadow memory layout breaks with high-entropy mmap (vm.mmap_rnd_bits > 28
      # on newer kernels): a plain TSan binary dies with "unexpected memory mapping".
      # Then run the suite with ASLR disabled.
      # CGNET_TSAN_SETARCH=1 forces setarch -R, =0 never uses it; default: probe.
      if [[ "${CGNET_TSAN_SETARCH:-auto}" == 1 ]]; then
        echo "TSan: CGNET_TSAN_SETARCH=1; running ctest under setarch $(uname -m) -R"
        runner=(setarch "$(uname -m)" -R)
      elif [[ "${CGNET_TSAN_SETARCH:-auto}" == 0 ]]; then
        echo "TSan: CGNET_TSAN_SETARCH=0; running ctest as is"
      elif probe_build "$dir" tsan_probe -fsanitize=thread; then
        if "$dir/probe/tsan_probe" >/dev/null 2>&1; then
          echo "TSan probe: works as is"
        elif setarch "$(uname -m)" -R "$dir/probe/tsan_probe" >/dev/null 2>&1; then
          echo "TSan probe: needs ASLR off; running ctest under setarch $(uname -m) -R"
          runner=(setarch "$(uname -m)" -R)
        else
          echo "check-tests: WARNING: a trivial TSan program fails even with setarch -R" >&2
        fi
      else
        echo "check-tests: WARNING: could not build the TSan probe" >&2
      fi
      echo "TSAN_OPTIONS=$TSAN_OPTIONS"
      ;;
  esac
}

# The fuzz targets, briefly: one "test" per target in the totals.
run_fuzz() {
  local start=$SECONDS
  say "[fuzz] scripts/fuzz.sh ${CGNET_FUZZ_SECONDS:-5}"
  mkdir -p build-fuzz
  bash scripts/fuzz.sh "${CGNET_FUZZ_SECONDS:-5}" 2>&1 | tee build-fuzz/check.log
  local rc=${PIPESTATUS[0]} pass fail
  pass=$(grep -c '^fuzz_[a-z_]* *PASS' build-fuzz/check.log)
  fail=$(grep -c '^fuzz_[a-z_]* *FAIL' build-fuzz/check.log)
  ((rc != 0 && fail == 0)) && fail=1
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    summary[fuzz]="PASS  $pass targets passed, $fail failed (${took}s)"
  else
    summary[fuzz]="FAIL  $pass targets passed, $fail failed (${took}s)"
  fi
  return "$rc"
}

run_variant() {
  local variant="$1" dir sanitize
  case "$variant" in
    fuzz)
      run_fuzz
      return
      ;;
    plain) dir=build sanitize="" ;;
    asan) dir=build-asan sanitize=address ;;
    tsan) dir=build-tsan sanitize=thread ;;
    *)
      echo "check-tests: unknown variant '$variant' (plain, asan, tsan, fuzz)" >&2
      summary[$variant]="FAIL  unknown variant"
      total_fail=$((total_fail + 1))
      return 2
      ;;
  esac
  local start=$SECONDS
  say "[$variant] configure $dir (CGNET_SANITIZE='$sanitize')"
  # shellcheck disable=SC2086
  if ! cmake -S "$root" -B "$dir" -DCGNET_SANITIZE="$sanitize" -DCGNET_BUILD_TESTS=ON \
    ${CMAKE_ARGS:-}; then
    summary[$variant]="FAIL  configure failed"
    total_fail=$((total_fail + 1))
    return 1
  fi
  say "[$variant] build $dir"
  if ! cmake --build "$dir" -j"$jobs"; then
    summary[$variant]="FAIL  build failed"
    total_fail=$((total_fail + 1))
    return 1
  fi

  say "[$variant] ctest $dir"
  (
    setup_env "$variant" "$dir"
    cd "$dir" || exit 1
    # Serial: the tests open many sockets and the machine has two cores. The slow tests
    # (label "long") run in `make test-long` instead.
    # shellcheck disable=SC2086
    "${runner[@]}" ctest --output-on-failure -j1 --no-tests=error -LE long ${CTEST_ARGS:-}
  ) 2>&1 | tee "$dir/ctest.log"
  local rc=${PIPESTATUS[0]}

  # ctest's closing line: "95% tests passed, 1 tests failed out of 20"
  # A skipped test (exit 77: the machine lacks what it needs, e.g. io_uring) counts in
  # ctest's "passed" figure; it is counted and named here on its own.
  local line pass=0 fail=0 count skipped skipped_names
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$dir/ctest.log" | tail -n1)
  skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' "$dir/ctest.log")
  skipped_names=$(grep -E 'Test +#[0-9]+: .*Skipped' "$dir/ctest.log" |
    sed -E 's/.*Test +#[0-9]+: ([^ ]+).*/\1/' | tr '\n' ' ')
  if [[ -n "$line" ]]; then
    fail=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$line")
    count=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
    pass=$((count - fail - skipped))
  elif ((rc != 0)); then
    fail=1
  fi
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  total_skip=$((total_skip + skipped))
  local took=$((SECONDS - start)) skip_note=""
  ((skipped > 0)) && skip_note=" [skipped: ${skipped_names% }]"
  if ((rc == 0)); then
    summary[$variant]="PASS  $pass passed, $fail failed, $skipped skipped (${took}s)$skip_note"
  else
    summary[$variant]="FAIL  $pass passed, $fail failed, $skipped skipped, ctest exit $rc (${took}s)$skip_note"
  fi
  return "$rc"
}

for v in "${variants[@]}"; do
  run_variant "$v" || overall=1
done

printf '\n==> summary\n'
for v in "${variants[@]}"; do
  printf 'test-%-6s %s\n' "$v" "${summary[$v]:-FAIL  not run}"
done
printf 'total: %d passed, %d failed, %d skipped\n' "$total_pass" "$total_fail" "$total_skip"
exit "$overall"
