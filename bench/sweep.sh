#!/usr/bin/env bash
# bench/sweep.sh — streaming echo over many connections and message sizes, cgnet and the
# floor, for the throughput-vs-connections and throughput-vs-size charts (as in gnet's
# README). `make bench-sweep` runs it with the defaults, then bench/report.py.
#
# Every point: a fresh server, `echoload -m stream -c CONNS -s SIZE` for DURATION seconds
# after a WARMUP, servers alternating in order, one line per run in sweep.tsv (the same
# columns as run.sh's results.tsv) under bench/results/<timestamp>-sweep/.
#
# In stream mode SIZE is only the unit echoload counts messages in: the server sees the
# same byte stream whatever SIZE is, so MB/s should not depend on it. MODE=pipeline
# (DEPTH messages in flight per conn, each written as one SIZE-byte message) makes the
# size matter to the server.
#
# Knobs (environment):
#   CONNS="1000 2000 5000 10000"  SIZES="512 1024 2048 4096 8192 16384 32768 65536"
#   SERVERS="cgnet floor"  PLACEMENT=pin1 (or loops2, as in run.sh)
#   REPS=2  DURATION=3  WARMUP=1  MODE=stream (or pipeline, pingpong)  DEPTH=16
#   QUICK=1   a smoke run: 1000 and 2000 conns, 512 B and 64 KiB, 1 s
#   OUT=DIR   results directory;  REPORT=0: do not run bench/report.py
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

if [[ ${QUICK:-0} == 1 ]]; then
  : "${CONNS:=1000 2000}" "${SIZES:=512 65536}" "${DURATION:=1}" "${WARMUP:=0.5}"
fi
CONNS=${CONNS:-1000 2000 5000 10000}
SIZES=${SIZES:-512 1024 2048 4096 8192 16384 32768 65536}
SERVERS=${SERVERS:-cgnet floor}
PLACEMENT=${PLACEMENT:-pin1}
REPS=${REPS:-2}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
LOAD_THREADS2=${LOAD_THREADS2:-2}
REPORT=${REPORT:-1}
MODE=${MODE:-stream}
DEPTH=${DEPTH:-16}
mode_args=(-m "$MODE")
[[ $MODE == pipeline ]] && mode_args+=(-p "$DEPTH")

case ${1:-} in
  -h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

# 10000 conns: that many fds in the server and in echoload, plus slack.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
if (($(ulimit -n) < 10100)); then
  echo "sweep.sh: open files limit $(ulimit -n): the largest CONNS may fail" >&2
fi

OUT=${OUT:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-sweep}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/sweep.tsv
machine_info "$OUT/machine.txt"
{
  echo "cmd=bench/sweep.sh"
  for v in CONNS SIZES SERVERS PLACEMENT REPS DURATION WARMUP MODE DEPTH CGNET_ARGS; do echo "$v=${!v:-}"; done
} >"$OUT/knobs.txt"
trap bench_cleanup EXIT
trap 'bench_cleanup; exit 130' INT TERM

[[ -s $RESULTS ]] || tr ' ' '\t' <<<"$RESULTS_HEADER" >"$RESULTS"

loops=$(placement_loops "$PLACEMENT")
threads=1
[[ $PLACEMENT == pin1 ]] || threads=$LOAD_THREADS2
b=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d - 0.1 }')
limit=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print int(w + d + 60) }')
log "results in $OUT"
i=0
for ((rep = 1; rep <= REPS; rep++)); do
  for conns in $CONNS; do
    for size in $SIZES; do
      order=0
      # shellcheck disable=SC2086
      for server in $(rotate $((i++)) $SERVERS); do
        tag="sweep-$PLACEMENT-c$conns-s$size-$server-r$rep"
        dir=$OUT/raw/$tag
        meta="$PLACEMENT echo $MODE $conns $size echoload $server $rep $((order++)) $loops $threads"
        line=""
        if start_server "$server" "$PLACEMENT" "$dir"; then
          # shellcheck disable=SC2046
          line=$($(load_cpus "$PLACEMENT") python3 "$BENCH_DIR/measure.py" --pid "$SERVER_PID" \
            --tool echoload --win "$WARMUP" "$b" --raw "$dir/load.txt" -- \
            timeout -s INT "$limit" "$BUILD/bench/echoload" -a "$HOST:$SERVER_PORT" -c "$conns" \
            -s "$size" "${mode_args[@]}" -d "$DURATION" -w "$WARMUP" -t "$threads")
          stop_server
        fi
        record "$meta" "$line" "$dir"
        log "$tag: $line"
      done
    done
  done
done
log "done: $RESULTS"
if [[ $REPORT == 1 ]]; then
  python3 "$BENCH_DIR/report.py" --sweep "$OUT"
fi
