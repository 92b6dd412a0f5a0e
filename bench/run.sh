#!/usr/bin/env bash
# bench/run.sh — cgnet side by side with the floor (a hand-written epoll loop) and the C
# peers, in one run, on this machine. `make bench` runs it with the defaults.
#
#   bench/run.sh [echo] [http] [regress] [udp] [ws]  (no argument: the first three, then
#                                                     the report; udp, ws run when named)
#
# Placements (PLACEMENTS):
#   pin1    server with 1 loop pinned to CPU 0, load tool (1 thread) pinned to CPU 1
#   loops2  server with 2 loops, load tool with LOAD_THREADS2 threads, nothing pinned
# echo     build/bench/echoload against SERVERS (cgnet cgnet_uring floor floor_uring libuv
#          libevent), for every CONNS x SIZES x MODES (pingpong, stream)
# http     wrk (pipeline script, depth 16) and h2load (-m 16), 256 conns each, against
#          HTTP_SERVERS (cgnet_http cgnet_http_uring floor_http nginx h2o; nginx/h2o
#          skipped if absent)
# regress  the regression figures: user-space instructions per echoed message
#          (callgrind) and syscalls per echoed message (strace -c), for cgnet on epoll and
#          on io_uring (with completions per io_uring_enter) and the two floors
# udp      build/bench/udpload against UDP_SERVERS (floor_udp, a hand-written recvmmsg/
#          sendmmsg loop; examples/echo on a udp address with sessions off, cgnet_udp, and
#          on, cgnet_udp_sessions), UDP_SOCKETS sockets (one peer each) x UDP_SIZE bytes,
#          UDP_WINDOW datagrams in flight per socket; rows in udp.tsv
# ws       build/bench/wsload against WS_SERVERS: cgnet_ws (examples/ws_echo, no deflate),
#          cgnet_raw (examples/echo driven by wsload --raw: the same echo without
#          WebSocket, so the WebSocket overhead is one ratio), node_ws (Node's ws,
#          bench/ws_node_server.js) and python_websockets (bench/ws_python_server.py);
#          WS_CONNS x WS_SIZES x WS_MODES, binary messages, every payload byte checked;
#          rows in ws.tsv. Node and Python are single-threaded: in loops2 they still run
#          one thread (unpinned), where cgnet runs 2 loops.
#
# Each repetition runs the whole matrix again with the servers in a rotated order, and
# every run starts a fresh server process. Per run the results file gets one line:
# throughput, the server's CPU (utime+stime of its processes and threads, sampled in a
# window inside the steady load), messages per server-CPU-second, p50/p99, peak RSS
# (VmHWM) and errors; the raw tool outputs stay beside it.
#
# Knobs (environment):
#   REPS=3  DURATION=5 (echo, s)  HTTP_DURATION=5  WARMUP=1 (echo warm-up, s)
#   CONNS="100 1000"  SIZES="512 4096"  MODES="pingpong stream"
#   SERVERS="cgnet cgnet_uring floor floor_uring libuv libevent"  (cgnet_uring: echo
#            --backend io_uring; floor_uring: the hand-written io_uring floor)
#   HTTP_SERVERS="cgnet_http cgnet_http_uring floor_http nginx h2o"
#   HTTP_TOOLS="wrk h2load"  HTTP_CONNS=256  HTTP_DEPTH=16  PLACEMENTS="pin1 loops2"
#   LOAD_THREADS2=2 (load-tool threads in loops2)  CGNET_ARGS= (extra flags for cgnet)
#   REGRESS_SECS=3  REGRESS_CONNS=100  REGRESS_SIZE=512
#   REGRESS_SERVERS="cgnet cgnet_uring floor floor_uring"
#   UDP_SERVERS="floor_udp cgnet_udp cgnet_udp_sessions"
#   UDP_SOCKETS=256  UDP_SIZE=64  UDP_WINDOW=1
#   WS_SERVERS="cgnet_ws cgnet_raw node_ws python_websockets"  (absent peers are skipped)
#   WS_CONNS="100 1000"  WS_SIZES="64 4096"  WS_MODES=pingpong (stream works too, but
#            the Python peer may not echo a full stream window within wsload's 10 s drain)
#   (QUICK=1 makes WS_CONNS=100 unless set)
#   QUICK=1    a smoke run: 1 rep, 1 s, 100 conns, 512 B, both modes and placements
#   OUT=DIR    results directory (default bench/results/<timestamp>-run)
#   REPORT=0   do not run bench/report.py at the end
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

if [[ ${QUICK:-0} == 1 ]]; then
  : "${REPS:=1}" "${DURATION:=1}" "${HTTP_DURATION:=2}" "${WARMUP:=0.5}"
  : "${CONNS:=100}" "${SIZES:=512}" "${REGRESS_SECS:=1}"
fi
REPS=${REPS:-3}
DURATION=${DURATION:-5}
HTTP_DURATION=${HTTP_DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-100 1000}
SIZES=${SIZES:-512 4096}
MODES=${MODES:-pingpong stream}
SERVERS=${SERVERS:-cgnet cgnet_uring floor floor_uring libuv libevent}
HTTP_SERVERS=${HTTP_SERVERS:-cgnet_http cgnet_http_uring floor_http nginx h2o}
HTTP_TOOLS=${HTTP_TOOLS:-wrk h2load}
HTTP_CONNS=${HTTP_CONNS:-256}
HTTP_DEPTH=${HTTP_DEPTH:-16}
PLACEMENTS=${PLACEMENTS:-pin1 loops2}
LOAD_THREADS2=${LOAD_THREADS2:-2}
REGRESS_SECS=${REGRESS_SECS:-3}
REGRESS_CONNS=${REGRESS_CONNS:-100}
REGRESS_SIZE=${REGRESS_SIZE:-512}
REGRESS_SERVERS=${REGRESS_SERVERS:-cgnet cgnet_uring floor floor_uring}
REPORT=${REPORT:-1}
UDP_SERVERS=${UDP_SERVERS:-floor_udp cgnet_udp cgnet_udp_sessions}
UDP_SOCKETS=${UDP_SOCKETS:-256}
UDP_SIZE=${UDP_SIZE:-64}
UDP_WINDOW=${UDP_WINDOW:-1}

parts=("$@")
((${#parts[@]})) || parts=(echo http regress)
for p in "${parts[@]}"; do
  case $p in
    echo | http | regress | udp | ws) ;;
    -h | --help)
      sed -n '2,/^set -uo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "run.sh: unknown part '$p' (echo, http, regress, udp, ws)" >&2
      exit 2
      ;;
  esac
done

for bin in "$BUILD/bench/echoload" "$BUILD/examples/echo" "$BUILD/examples/http_plaintext"; do
  [[ -x $bin ]] || {
    echo "run.sh: $bin is missing: run make first" >&2
    exit 1
  }
done

OUT=${OUT:-$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-run}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.tsv
machine_info "$OUT/machine.txt"
trap bench_cleanup EXIT
trap 'bench_cleanup; exit 130' INT TERM

# A regress-only run has no results.tsv, so report.py keeps the last full run's tables.
if [[ " ${parts[*]} " == *" echo "* || " ${parts[*]} " == *" http "* ]]; then
  [[ -s $RESULTS ]] || tr ' ' '\t' <<<"$RESULTS_HEADER" >"$RESULTS"
fi
{
  echo "cmd=bench/run.sh ${parts[*]}"
  for v in REPS DURATION HTTP_DURATION WARMUP CONNS SIZES MODES SERVERS HTTP_SERVERS HTTP_TOOLS \
    HTTP_CONNS HTTP_DEPTH PLACEMENTS LOAD_THREADS2 CGNET_ARGS REGRESS_SECS REGRESS_CONNS REGRESS_SIZE \
    UDP_SERVERS UDP_SOCKETS UDP_SIZE UDP_WINDOW; do
    echo "$v=${!v:-}"
  done
} >"$OUT/knobs.txt"

# one_run PLACEMENT BENCH MODE CONNS SIZE TOOL SERVER REP ORDER
one_run() {
  local placement=$1 bench=$2 mode=$3 conns=$4 size=$5 tool=$6 server=$7 rep=$8 order=$9
  local loops threads tag dir line="" a b cmd mark=()
  loops=$(placement_loops "$placement")
  threads=1
  [[ $placement == pin1 ]] || threads=$LOAD_THREADS2
  tag="$bench-$placement-$mode-c$conns-s$size-$tool-$server-r$rep"
  dir=$OUT/raw/$tag
  mkdir -p "$dir"
  local meta="$placement $bench $mode $conns $size $tool $server $rep $order $loops $threads"
  if ! start_server "$server" "$placement" "$dir"; then
    record "$meta" "" "$dir"
    return
  fi
  case $tool in
    echoload)
      # CPU window: after the connects and the warm-up, before the drain.
      a=$WARMUP
      b=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d - 0.1 }')
      cmd=("$BUILD/bench/echoload" -a "$HOST:$SERVER_PORT" -c "$conns" -s "$size" -m "$mode"
        -d "$DURATION" -w "$WARMUP" -t "$threads")
      ;;
    wrk)
      a=0.5
      b=$(awk -v d="$HTTP_DURATION" 'BEGIN { print d - 0.2 }')
      cmd=(wrk -t "$threads" -c "$conns" -d "${HTTP_DURATION}s" --latency
        -s "$BENCH_DIR/wrk_pipeline.lua" "http://$HOST:$SERVER_PORT/plaintext" -- "$HTTP_DEPTH")
      ;;
    udpload)
      a=0.5
      b=$(awk -v d="$DURATION" 'BEGIN { print d - 0.2 }')
      cmd=("$BUILD/bench/udpload" -a "$HOST:$SERVER_PORT" -c "$conns" -s "$size" -w "$UDP_WINDOW"
        -d "$DURATION")
      ;;
    wsload)
      # As echoload, but the CPU window counts from wsload's "load starts" line: the
      # upgrades of 1,000 conns to a slow peer can take seconds. cgnet_raw is the same
      # tool without the WebSocket layer.
      mark=(--mark "load starts")
      a=$WARMUP
      b=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d - 0.1 }')
      cmd=("$BUILD/bench/wsload" -a "$HOST:$SERVER_PORT" -c "$conns" -s "$size" -m "$mode"
        -d "$DURATION" -w "$WARMUP" -t "$threads")
      [[ $server == cgnet_raw ]] && cmd+=(--raw)
      ;;
    h2load)
      a=0.5
      b=$(awk -v d="$HTTP_DURATION" 'BEGIN { print d - 0.1 }')
      cmd=(h2load --h1 -t "$threads" -c "$conns" -m "$HTTP_DEPTH" -D "$HTTP_DURATION"
        "http://$HOST:$SERVER_PORT/plaintext")
      ;;
  esac
  local limit
  limit=$(awk -v d="$DURATION" -v h="$HTTP_DURATION" -v w="$WARMUP" 'BEGIN { print int(d + h + w + 40) }')
  # shellcheck disable=SC2046
  line=$($(load_cpus "$placement") python3 "$BENCH_DIR/measure.py" --pid "$SERVER_PID" \
    --tool "$tool" --win "$a" "$b" --raw "$dir/load.txt" "${mark[@]}" -- timeout -s INT "$limit" "${cmd[@]}")
  stop_server
  record "$meta" "$line" "$dir"
  log "$tag: $line"
}

run_echo() {
  local placement rep mode conns size i=0 server
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for mode in $MODES; do
        for conns in $CONNS; do
          for size in $SIZES; do
            local order=0
            # shellcheck disable=SC2086
            for server in $(rotate $((rep - 1 + i)) $SERVERS); do
              one_run "$placement" echo "$mode" "$conns" "$size" echoload "$server" "$rep" $((order++))
            done
            i=$((i + 1))
          done
        done
      done
    done
  done
}

run_http() {
  local placement rep tool servers=() s i=0 server
  for s in $HTTP_SERVERS; do
    if http_server_available "$s"; then servers+=("$s"); else log "skipping $s: not installed"; fi
  done
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for tool in $HTTP_TOOLS; do
        command -v "$tool" >/dev/null || {
          log "skipping $tool: not installed"
          continue
        }
        local order=0
        for server in $(rotate $((rep - 1 + i)) "${servers[@]}"); do
          one_run "$placement" http pipeline "$HTTP_CONNS" 0 "$tool" "$server" "$rep" $((order++))
        done
        i=$((i + 1))
      done
    done
  done
}

# ---- regression figures -------------------------------------------------------------
# Instructions per echoed message: the server runs under callgrind (1 loop, CPU 0) while
# echoload (CPU 1) drives pingpong for REGRESS_SECS; then again for a 0.1 s window. The
# difference of the two instruction totals over the difference of the messages echoed
# cancels start-up, accepts and shutdown. Syscalls per echoed message: the same two runs
# of the (uninstrumented) server with strace -f -c attached, counted the same way.

regress_start() { # SERVER DIR [WRAPPER...]: like start_server, pinned, 1 loop, slow start ok
  local server=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  if [[ $server == cgnet ]]; then
    taskset -c 0 "$@" "$BUILD/examples/echo" "tcp://$HOST:0" --loops 1 --quiet >"$dir/server.log" 2>&1 &
  elif [[ $server == cgnet_uring ]]; then
    taskset -c 0 "$@" "$BUILD/examples/echo" "tcp://$HOST:0" --loops 1 --quiet \
      --backend io_uring --stats >"$dir/server.log" 2>&1 &
  else
    local bin=floor_echo
    [[ $server == floor_uring ]] && bin=floor_uring
    taskset -c 0 "$@" "$BUILD/bench/$bin" --host "$HOST" --port 0 --loops 1 >"$dir/server.log" 2>&1 &
  fi
  SERVER_PID=$!
  SERVER_PORT=$(wait_listening "$dir/server.log" 60)
}

regress_load() { # SECS OUTFILE -> prints msgs
  taskset -c 1 "$BUILD/bench/echoload" -a "$HOST:$SERVER_PORT" -c "$REGRESS_CONNS" \
    -s "$REGRESS_SIZE" -m pingpong -d "$1" -t 1 >"$2" 2>&1
  sed -nE 's/^RESULT .* msgs=([0-9]+) .*/\1/p' "$2"
}

callgrind_ir() { # FILE -> total Ir
  sed -nE 's/^(summary|totals): *([0-9]+).*/\2/p' "$1" | head -n1
}

run_regress() {
  local R=$OUT/regress.tsv server dir m_long m_short ir_long ir_short
  command -v valgrind >/dev/null || log "valgrind missing: no instruction counts"
  command -v strace >/dev/null || log "strace missing: no syscall counts"
  printf 'server\tmetric\tvalue\tmsgs\tnote\n' >"$R"
  for server in $REGRESS_SERVERS; do
    # valgrind does not emulate io_uring (the ring cannot be set up under it): the
    # io_uring servers get the syscall figures only.
    if command -v valgrind >/dev/null && [[ $server != *_uring ]]; then
      dir=$OUT/raw/regress-callgrind-$server
      local secs
      for secs in "$REGRESS_SECS" 0.1; do
        regress_start "$server" "$dir" valgrind --tool=callgrind \
          --callgrind-out-file="$dir/callgrind.out.$secs" || {
          log "$server did not start under callgrind"
          stop_server
          continue 2
        }
        if [[ $secs == 0.1 ]]; then m_short=$(regress_load "$secs" "$dir/load.$secs.txt"); else
          m_long=$(regress_load "$secs" "$dir/load.$secs.txt")
        fi
        stop_server 60 # callgrind writes its profile as the server exits
      done
      ir_long=$(callgrind_ir "$dir/callgrind.out.$REGRESS_SECS")
      ir_short=$(callgrind_ir "$dir/callgrind.out.0.1")
      callgrind_annotate "$dir/callgrind.out.$REGRESS_SECS" >"$dir/annotate.txt" 2>/dev/null
      if [[ -n $ir_long && -n $ir_short && -n $m_long && -n $m_short ]] && ((m_long > m_short)); then
        printf '%s\tir_per_msg\t%s\t%s\t%s\n' "$server" \
          "$(awk -v a="$ir_long" -v b="$ir_short" -v m="$m_long" -v n="$m_short" 'BEGIN { printf "%.0f", (a - b) / (m - n) }')" \
          "$((m_long - m_short))" "Ir ${ir_long}-${ir_short}, msgs ${m_long}-${m_short}" >>"$R"
      fi
      log "regress $server callgrind: Ir $ir_long/$ir_short msgs $m_long/$m_short"
    fi
    if command -v strace >/dev/null; then
      dir=$OUT/raw/regress-strace-$server
      local ok=1
      for secs in "$REGRESS_SECS" 0.1; do
        regress_start "$server" "$dir" || {
          stop_server
          ok=0
          break
        }
        strace -f -c -o "$dir/strace.$secs.txt" -p "$SERVER_PID" 2>"$dir/strace.$secs.err" &
        local spid=$!
        sleep 1 # attached to every thread before the load starts
        if [[ $secs == 0.1 ]]; then m_short=$(regress_load "$secs" "$dir/load.$secs.txt"); else
          m_long=$(regress_load "$secs" "$dir/load.$secs.txt")
        fi
        sleep 0.5 # the server has seen the conns close
        kill -INT "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
        stop_server
        cp "$dir/server.log" "$dir/server.$secs.log"
      done
      # io_uring: completions per io_uring_enter, from the counters echo --stats prints.
      if ((ok)) && [[ $server == cgnet_uring ]]; then
        awk -v s="$server" '
          /stats:/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[FILENAME, kv[1]] = kv[2] } }
          END {
            e = v[ARGV[1], "enters"] - v[ARGV[2], "enters"]
            c = v[ARGV[1], "completions"] - v[ARGV[2], "completions"]
            if (e > 0) printf "%s\tcompletions_per_enter\t%.2f\t%d\tenters %d\n", s, c / e, c, e
          }' "$dir/server.$REGRESS_SECS.log" "$dir/server.0.1.log" >>"$R"
      fi
      if ((ok)) && [[ -n $m_long && -n $m_short ]] && ((m_long > m_short)); then
        # Per syscall name: calls in the long run minus calls in the short one.
        awk -v s="$server" -v m=$((m_long - m_short)) '
          FNR == 1 { f++ }
          $1 ~ /^[0-9.]+$/ && NF >= 5 { c[$NF] += (f == 1 ? $4 : -$4); if (f == 1) order[++n] = $NF }
          END {
            printf "%s\tsyscalls_per_msg\t%.3f\t%d\tall syscalls\n", s, c["total"] / m, m
            for (i = 1; i <= n; i++) if (order[i] != "total" && c[order[i]] / m >= 0.0005)
              printf "%s\tsys_%s_per_msg\t%.3f\t%d\t\n", s, order[i], c[order[i]] / m, m
          }' "$dir/strace.$REGRESS_SECS.txt" "$dir/strace.0.1.txt" >>"$R"
      fi
      log "regress $server strace: msgs $m_long/$m_short"
    fi
  done
}

# UDP echo: the hand-written floor (floor_udp), cgnet with per-datagram conns (cgnet_udp)
# and with sessions (cgnet_udp_sessions), each measured like an echo run (measure.py:
# the server's CPU in a window inside the load) by udpload, which checks every byte (a
# mismatch is an error) and counts the datagrams lost. Rows in udp.tsv, results.tsv's
# columns.
run_udp() {
  [[ -x $BUILD/bench/udpload ]] || {
    log "udp: $BUILD/bench/udpload is missing"
    return
  }
  local saved=$RESULTS placement rep i=0 server
  RESULTS=$OUT/udp.tsv
  [[ -s $RESULTS ]] || tr ' ' '\t' <<<"$RESULTS_HEADER" >"$RESULTS"
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      local order=0
      # shellcheck disable=SC2086
      for server in $(rotate $((rep - 1 + i)) $UDP_SERVERS); do
        one_run "$placement" udp echo "$UDP_SOCKETS" "$UDP_SIZE" udpload "$server" "$rep" $((order++))
      done
      i=$((i + 1))
    done
  done
  RESULTS=$saved
}

# WebSocket echo: cgnet's ws_echo, the same echo on raw conns (the overhead ratio), and
# the Node and Python peers, each measured like an echo run by wsload (every payload byte
# checked). Rows in ws.tsv, results.tsv's columns; the knobs go to knobs.txt.
if [[ ${QUICK:-0} == 1 ]]; then : "${WS_CONNS:=100}"; fi
WS_SERVERS=${WS_SERVERS:-cgnet_ws cgnet_raw node_ws python_websockets}
WS_CONNS=${WS_CONNS:-100 1000}
WS_SIZES=${WS_SIZES:-64 4096}
WS_MODES=${WS_MODES:-pingpong}

run_ws() {
  [[ -x $BUILD/bench/wsload ]] || {
    log "ws: $BUILD/bench/wsload is missing"
    return
  }
  local saved=$RESULTS placement rep mode conns size i=0 server servers=() v
  for server in $WS_SERVERS; do
    if ws_server_available "$server"; then servers+=("$server"); else log "skipping $server: not installed"; fi
  done
  for v in WS_SERVERS WS_CONNS WS_SIZES WS_MODES; do echo "$v=${!v}"; done >>"$OUT/knobs.txt"
  RESULTS=$OUT/ws.tsv
  [[ -s $RESULTS ]] || tr ' ' '\t' <<<"$RESULTS_HEADER" >"$RESULTS"
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for mode in $WS_MODES; do
        for conns in $WS_CONNS; do
          for size in $WS_SIZES; do
            local order=0
            for server in $(rotate $((rep - 1 + i)) "${servers[@]}"); do
              one_run "$placement" ws "$mode" "$conns" "$size" wsload "$server" "$rep" $((order++))
            done
            i=$((i + 1))
          done
        done
      done
    done
  done
  RESULTS=$saved
}

log "results in $OUT"
for p in "${parts[@]}"; do
  log "== $p"
  "run_$p"
done
log "done: $OUT"
if [[ $REPORT == 1 ]]; then
  python3 "$BENCH_DIR/report.py" --run "$OUT"
fi
