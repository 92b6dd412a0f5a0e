#!/usr/bin/env bash
# bench/run.sh — cgnet side by side with the floor (a hand-written epoll loop) and the C
# peers, in one run, on this machine. `make bench` runs it with the defaults.
#
#   bench/run.sh [echo] [http] [regress] [tls] [ws] [udp]  (no argument: all but udp,
#                                                           then the report; udp runs
#                                                           when named)
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
# tls      TLS (1.3) with build/bench/tlsload, wrk and h2load; certificates made first with
#          the openssl CLI in $OUT/certs (ECDSA P-256 and RSA-2048, self-signed, CN/SAN
#          127.0.0.1 and localhost). Sub-parts (TLS_PARTS), rows in tls.tsv except idle:
#          handshake  full handshakes per server-CPU-second, tlsload -m handshake with
#                     TLS_HS_CONNS slots, for each configuration (TLS_HS_CONFIGS: a key,
#                     ecdsa or rsa, with _tickets when the servers issue session tickets)
#                     against TLS_HS_SERVERS (cgnet_tls: examples/echo on tls://,
#                     cgnet_tls_uring: the same on io_uring, nginx_tls, h2o_tls:
#                     bench/*_tls.conf.in); bench column handshake_CONFIG. One openssl
#                     s_client probe per server and configuration first: protocol, suite,
#                     group and the TLS 1.3 tickets the server sends, in tls_probe.tsv
#          Session tickets: every TLS server runs with resumption off (TLS_TICKETS=off:
#          cgnet --no-tickets, nginx ssl_session_tickets off, h2o ssl-session-resumption
#          off) except in the _tickets handshake rows, where each issues tickets its own
#          way (TLS_TICKETS=on: cgnet 1 per handshake, nginx and h2o OpenSSL's 2). The
#          client never resumes, so every handshake is full either way.
#          https      HTTPS pipelined, wrk (wrk_pipeline.lua) and h2load --h1, HTTP_CONNS
#                     conns, HTTP_DEPTH deep, ECDSA cert, against TLS_HTTPS_SERVERS
#                     (cgnet_https: examples/http_plaintext on tls://, cgnet_https_uring,
#                     nginx_tls, h2o_tls)
#          echo       TLS echo, tlsload pingpong and stream, TLS_ECHO_CONNS conns x
#                     TLS_ECHO_SIZES, ECDSA cert, against TLS_ECHO_SERVERS (cgnet_tls,
#                     cgnet_tls_uring, libevent_tls: bench/echo_libevent --cert --key on
#                     libevent's bufferevent_openssl, skipped when built without
#                     libevent_openssl, and plain cgnet driven by tlsload --plain: the
#                     cost of TLS by difference)
#          proxy      TLS termination: tlsload pingpong and stream, TLS_PROXY_CONNS conns x
#                     TLS_PROXY_SIZES, ECDSA cert, through TLS_PROXY_SERVERS in front of a
#                     plain echo backend (cgnet_tls_proxy: examples/proxy tls:// ->
#                     tcp://; nginx_tls_proxy: nginx's stream module, ssl + proxy_pass,
#                     bench/nginx_tls_proxy.conf.in, skipped without
#                     libnginx-mod-stream; h2o has no TCP proxy). The backend is
#                     build/bench/floor_echo, 1 loop, started once for the sub-part and
#                     pinned to CPU 1 with the load in every placement; only the proxy's
#                     CPU is measured (the backend is no child of it), and the
#                     backend's is left out of other_util (measure.py --helper). Bench
#                     tls_proxy; every echoed byte is checked by tlsload as for echo
#          idle       server memory per idle conn: TLS_IDLE_CONNS conns (tlsload -m idle:
#                     handshake and one TLS_IDLE_SIZE-byte echo each), server VmRSS before
#                     the conns and once all are idle; bytes per conn = delta / conns.
#                     TLS_IDLE_SERVERS (cgnet_tls, plain cgnet), TLS_IDLE_PLACEMENTS;
#                     rows in tls_idle.tsv
#          The open-files limit is raised to the hard limit for the servers and tools.
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
#   TLS_PARTS="handshake https echo proxy idle"  TLS_HS_CONFIGS="ecdsa rsa ecdsa_tickets"
#   TLS_DURATION=DURATION
#   TLS_WARMUP=WARMUP  TLS_HS_CONNS=64  TLS_HS_SERVERS="cgnet_tls cgnet_tls_uring nginx_tls
#   h2o_tls"  TLS_HTTPS_SERVERS="cgnet_https cgnet_https_uring nginx_tls h2o_tls"
#   TLS_ECHO_SERVERS="cgnet_tls cgnet_tls_uring libevent_tls cgnet"  TLS_ECHO_CONNS=100
#   TLS_ECHO_SIZES="512 4096"  TLS_ECHO_MODES="pingpong stream"
#   TLS_PROXY_SERVERS="cgnet_tls_proxy nginx_tls_proxy"  TLS_PROXY_CONNS=TLS_ECHO_CONNS
#   TLS_PROXY_SIZES=TLS_ECHO_SIZES  TLS_PROXY_MODES=TLS_ECHO_MODES
#   TLS_IDLE_SERVERS="cgnet_tls cgnet"  TLS_IDLE_CONNS=10000  TLS_IDLE_SIZE=64
#   TLS_IDLE_PLACEMENTS=pin1
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
TLS_PARTS=${TLS_PARTS:-handshake https echo proxy idle}
TLS_HS_CONFIGS=${TLS_HS_CONFIGS:-ecdsa rsa ecdsa_tickets}
export TLS_TICKETS=off # see "Session tickets" above; the _tickets rows set it on
TLS_DURATION=${TLS_DURATION:-$DURATION}
TLS_WARMUP=${TLS_WARMUP:-$WARMUP}
TLS_HS_CONNS=${TLS_HS_CONNS:-64}
TLS_HS_SERVERS=${TLS_HS_SERVERS:-cgnet_tls cgnet_tls_uring nginx_tls h2o_tls}
TLS_HTTPS_SERVERS=${TLS_HTTPS_SERVERS:-cgnet_https cgnet_https_uring nginx_tls h2o_tls}
TLS_ECHO_SERVERS=${TLS_ECHO_SERVERS:-cgnet_tls cgnet_tls_uring libevent_tls cgnet}
TLS_ECHO_CONNS=${TLS_ECHO_CONNS:-100}
TLS_ECHO_SIZES=${TLS_ECHO_SIZES:-512 4096}
TLS_ECHO_MODES=${TLS_ECHO_MODES:-pingpong stream}
TLS_PROXY_SERVERS=${TLS_PROXY_SERVERS:-cgnet_tls_proxy nginx_tls_proxy}
TLS_PROXY_CONNS=${TLS_PROXY_CONNS:-$TLS_ECHO_CONNS}
TLS_PROXY_SIZES=${TLS_PROXY_SIZES:-$TLS_ECHO_SIZES}
TLS_PROXY_MODES=${TLS_PROXY_MODES:-$TLS_ECHO_MODES}
TLS_IDLE_SERVERS=${TLS_IDLE_SERVERS:-cgnet_tls cgnet}
TLS_IDLE_CONNS=${TLS_IDLE_CONNS:-10000}
TLS_IDLE_SIZE=${TLS_IDLE_SIZE:-64}
TLS_IDLE_PLACEMENTS=${TLS_IDLE_PLACEMENTS:-pin1}

parts=("$@")
((${#parts[@]})) || parts=(echo http regress tls ws)
for p in "${parts[@]}"; do
  case $p in
    echo | http | regress | udp | ws | tls) ;;
    -h | --help)
      sed -n '2,/^set -uo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "run.sh: unknown part '$p' (echo, http, regress, udp, ws, tls)" >&2
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
if [[ " ${parts[*]} " == *" tls "* ]]; then
  for v in TLS_PARTS TLS_HS_CONFIGS TLS_DURATION TLS_WARMUP TLS_HS_CONNS TLS_HS_SERVERS \
    TLS_HTTPS_SERVERS TLS_ECHO_SERVERS TLS_ECHO_CONNS TLS_ECHO_SIZES TLS_ECHO_MODES \
    TLS_PROXY_SERVERS TLS_PROXY_CONNS TLS_PROXY_SIZES TLS_PROXY_MODES TLS_IDLE_SERVERS \
    TLS_IDLE_CONNS TLS_IDLE_SIZE TLS_IDLE_PLACEMENTS; do
    echo "$v=${!v:-}"
  done >>"$OUT/knobs.txt"
fi

# one_run PLACEMENT BENCH MODE CONNS SIZE TOOL SERVER REP ORDER
one_run() {
  local placement=$1 bench=$2 mode=$3 conns=$4 size=$5 tool=$6 server=$7 rep=$8 order=$9
  local loops threads tag dir line="" a b cmd mark=() helper=()
  loops=$(placement_loops "$placement")
  threads=1
  [[ $placement == pin1 ]] || threads=$LOAD_THREADS2
  tag="${RUN_PREFIX:-}$bench-$placement-$mode-c$conns-s$size-$tool-$server-r$rep"
  dir=$OUT/raw/$tag
  mkdir -p "$dir"
  local meta="$placement $bench $mode $conns $size $tool $server $rep $order $loops $threads"
  if ! start_server "$server" "$placement" "$dir"; then
    record "$meta" "" "$dir"
    return
  fi
  local scheme=${HTTP_SCHEME:-http} http_a=${HTTP_WIN_START:-0.5}
  case $tool in
    echoload)
      # CPU window: after the connects and the warm-up, before the drain.
      a=$WARMUP
      b=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d - 0.1 }')
      cmd=("$BUILD/bench/echoload" -a "$HOST:$SERVER_PORT" -c "$conns" -s "$size" -m "$mode"
        -d "$DURATION" -w "$WARMUP" -t "$threads")
      ;;
    tlsload)
      a=$TLS_WARMUP
      b=$(awk -v w="$TLS_WARMUP" -v d="$TLS_DURATION" 'BEGIN { print w + d - 0.1 }')
      cmd=("$BUILD/bench/tlsload" -a "$HOST:$SERVER_PORT" -m "$mode" -c "$conns" -s "$size"
        -d "$TLS_DURATION" -w "$TLS_WARMUP" -t "$threads")
      [[ $server == *tls* ]] || cmd+=(--plain)
      ;;
    wrk)
      a=$http_a
      b=$(awk -v d="$HTTP_DURATION" 'BEGIN { print d - 0.2 }')
      cmd=(wrk -t "$threads" -c "$conns" -d "${HTTP_DURATION}s" --latency
        -s "$BENCH_DIR/wrk_pipeline.lua" "$scheme://$HOST:$SERVER_PORT/plaintext" -- "$HTTP_DEPTH")
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
      a=$http_a
      b=$(awk -v d="$HTTP_DURATION" 'BEGIN { print d - 0.1 }')
      cmd=(h2load --h1 -t "$threads" -c "$conns" -m "$HTTP_DEPTH" -D "$HTTP_DURATION"
        "$scheme://$HOST:$SERVER_PORT/plaintext")
      ;;
  esac
  # The TLS proxies' backend runs beside the server: not a neighbour (measure.py --helper).
  [[ -n $BACKEND_PID ]] && helper=(--helper "$BACKEND_PID")
  local limit
  limit=$(awk -v d="$DURATION" -v h="$HTTP_DURATION" -v w="$WARMUP" -v td="$TLS_DURATION" \
    -v tw="$TLS_WARMUP" 'BEGIN { if (td > d) d = td; if (tw > w) w = tw; print int(d + h + w + 40) }')
  # shellcheck disable=SC2046
  line=$($(load_cpus "$placement") python3 "$BENCH_DIR/measure.py" --pid "$SERVER_PID" \
    --tool "$tool" --win "$a" "$b" --raw "$dir/load.txt" "${mark[@]}" "${helper[@]}" \
    -- timeout -s INT "$limit" "${cmd[@]}")
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

# ---- TLS ---------------------------------------------------------------------------
# Handshakes, HTTPS and TLS echo are measured like the other parts (measure.py: the
# server's CPU in a window inside the steady load, a fresh server per run); rows in
# tls.tsv with results.tsv's columns. Idle memory has its own rows (tls_idle.tsv).

# tls_make_certs DIR: ECDSA P-256 and RSA-2048 self-signed server certificates.
tls_make_certs() {
  local dir=$1 key
  mkdir -p "$dir"
  for key in ecdsa rsa; do
    local algo=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    [[ $key == rsa ]] && algo=(-newkey rsa:2048)
    openssl req -x509 "${algo[@]}" -nodes -days 30 -subj /CN=127.0.0.1 \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "$dir/$key.key" -out "$dir/$key.crt" >"$dir/$key.log" 2>&1 || return 1
  done
  chmod 755 "$dir"
  chmod 644 "$dir"/*.crt "$dir"/*.key # h2o may read them after dropping to "nobody"
}

tls_use_key() { # KEY: the certificate start_server hands to the TLS servers
  TLS_CERT=$OUT/certs/$1.crt
  TLS_KEY=$OUT/certs/$1.key
}

# tls_one_run PLACEMENT BENCH MODE CONNS SIZE TOOL SERVER REP ORDER: one_run over TLS
# (HTTPS URLs; the CPU window of wrk and h2load opens after the conns' handshakes).
tls_one_run() { RUN_PREFIX=tls- HTTP_SCHEME=https HTTP_WIN_START=1 one_run "$@"; }

# tls_probe SERVER KEY: one openssl s_client handshake (TLS 1.3); what was negotiated
# and how many session tickets the server sent after it, as a row of tls_probe.tsv.
tls_probe() {
  local server=$1 key=$2 dir=$OUT/raw/tls-probe-$1-$2 out
  start_server "$server" pin1 "$dir" || return 0
  out=$(sleep 1 | timeout 10 openssl s_client -connect "$HOST:$SERVER_PORT" -tls1_3 \
    -servername localhost 2>&1)
  stop_server
  printf '%s\n' "$out" >"$dir/s_client.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$key" \
    "$(sed -nE 's/^New, (TLSv[0-9.]+), Cipher is .*/\1/p' <<<"$out" | head -n1)" \
    "$(sed -nE 's/.*Cipher is ([A-Z0-9_-]+).*/\1/p' <<<"$out" | head -n1)" \
    "$(sed -nE 's/^Server Temp Key: ([^,]+).*/\1/p' <<<"$out" | head -n1)" \
    "$(grep -c 'Post-Handshake New Session Ticket arrived' <<<"$out")" >>"$OUT/tls_probe.tsv"
}

tls_servers() { # NAME...: those available here (tls_server_available)
  local s
  for s in "$@"; do
    if tls_server_available "$s"; then
      printf '%s ' "$s"
    else
      log "skipping $s: not installed, or not built with TLS"
    fi
  done
}

# tls_hs_config CONFIG: the key and the ticket setting of a handshake configuration
# (ecdsa, rsa, ecdsa_tickets, ...).
tls_hs_config() {
  tls_use_key "${1%%_*}"
  TLS_TICKETS=off
  [[ $1 == *_tickets ]] && TLS_TICKETS=on
}

run_tls_handshake() {
  local cfg placement rep server servers i=0
  # shellcheck disable=SC2086
  servers=$(tls_servers $TLS_HS_SERVERS)
  printf 'server\tkey\tprotocol\tcipher\tgroup\ttickets\n' >"$OUT/tls_probe.tsv"
  for cfg in $TLS_HS_CONFIGS; do
    tls_hs_config "$cfg"
    for server in $servers; do tls_probe "$server" "$cfg"; done
  done
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for cfg in $TLS_HS_CONFIGS; do
        tls_hs_config "$cfg"
        local order=0
        # shellcheck disable=SC2086
        for server in $(rotate $((rep - 1 + i)) $servers); do
          tls_one_run "$placement" "handshake_$cfg" handshake "$TLS_HS_CONNS" 0 tlsload \
            "$server" "$rep" $((order++))
        done
        i=$((i + 1))
      done
    done
  done
  TLS_TICKETS=off
}

run_tls_https() {
  local placement rep tool server servers i=0
  # shellcheck disable=SC2086
  servers=$(tls_servers $TLS_HTTPS_SERVERS)
  tls_use_key ecdsa
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for tool in $HTTP_TOOLS; do
        command -v "$tool" >/dev/null || {
          log "skipping $tool: not installed"
          continue
        }
        local order=0
        # shellcheck disable=SC2086
        for server in $(rotate $((rep - 1 + i)) $servers); do
          tls_one_run "$placement" https pipeline "$HTTP_CONNS" 0 "$tool" "$server" "$rep" $((order++))
        done
        i=$((i + 1))
      done
    done
  done
}

# tls_echo_matrix BENCH SERVERS CONNS SIZES MODES: tlsload pingpong/stream rows against
# each server (the TLS echo and proxy sub-parts), ECDSA certificate.
tls_echo_matrix() {
  local bench=$1 servers=$2 conns=$3 sizes=$4 modes=$5 placement rep mode size server i=0
  tls_use_key ecdsa
  for placement in $PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for mode in $modes; do
        for size in $sizes; do
          local order=0
          # shellcheck disable=SC2086
          for server in $(rotate $((rep - 1 + i)) $servers); do
            tls_one_run "$placement" "$bench" "$mode" "$conns" "$size" tlsload \
              "$server" "$rep" $((order++))
          done
          i=$((i + 1))
        done
      done
    done
  done
}

run_tls_echo() {
  local servers
  # shellcheck disable=SC2086
  servers=$(tls_servers $TLS_ECHO_SERVERS)
  tls_echo_matrix tls_echo "$servers" "$TLS_ECHO_CONNS" "$TLS_ECHO_SIZES" "$TLS_ECHO_MODES"
}

# The proxies pass every byte to the one backend (start_backend) and back; a backend
# that died mid-way fails the rows after it (errors in tlsload), it is not restarted.
run_tls_proxy() {
  local servers
  # shellcheck disable=SC2086
  servers=$(tls_servers $TLS_PROXY_SERVERS)
  [[ -n ${servers// /} ]] || return 0
  start_backend "$OUT/raw/tls-proxy-backend" || return 0
  log "tls proxy: backend floor_echo on port $BACKEND_PORT (pid $BACKEND_PID, CPU 1)"
  tls_echo_matrix tls_proxy "$servers" "$TLS_PROXY_CONNS" "$TLS_PROXY_SIZES" "$TLS_PROXY_MODES"
  kill -0 "$BACKEND_PID" 2>/dev/null || log "tls proxy: the backend exited during the runs"
  stop_backend
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# tls_idle_run PLACEMENT SERVER REP ORDER: one row of tls_idle.tsv.
tls_idle_run() {
  local placement=$1 server=$2 rep=$3 order=$4 loops threads dir before idle="" n="" lpid
  local status=ok tries
  loops=$(placement_loops "$placement")
  threads=1
  [[ $placement == pin1 ]] || threads=$LOAD_THREADS2
  dir=$OUT/raw/tls-idle-$placement-c$TLS_IDLE_CONNS-$server-r$rep
  mkdir -p "$dir"
  local cmd=("$BUILD/bench/tlsload" -a "$HOST:0" -m idle -c "$TLS_IDLE_CONNS" -s "$TLS_IDLE_SIZE"
    -d 120 -t "$threads")
  [[ $server == *tls* ]] || cmd+=(--plain)
  if start_server "$server" "$placement" "$dir"; then
    cmd[2]="$HOST:$SERVER_PORT"
    sleep 0.3
    before=$(rss_kb "$SERVER_PID")
    # shellcheck disable=SC2046
    $(load_cpus "$placement") "${cmd[@]}" >"$dir/load.txt" 2>&1 &
    lpid=$!
    tries=1200 # 120 s to set every conn up
    while ((tries-- > 0)) && kill -0 "$lpid" 2>/dev/null && ! grep -qs '^IDLE n=' "$dir/load.txt"; do
      sleep 0.1
    done
    n=$(sed -nE 's/^IDLE n=([0-9]+).*/\1/p' "$dir/load.txt")
    if [[ -n $n ]]; then
      sleep 1 # let the server finish with the last echoes
      idle=$(rss_kb "$SERVER_PID")
    fi
    kill -INT "$lpid" 2>/dev/null
    wait "$lpid"
    local rc=$?
    stop_server
    [[ -n $n && -n $idle && $rc == 0 ]] || status=rc$rc
  else
    status=fail
  fi
  local delta=NA per=NA
  if [[ -n $idle && -n $before && -n $n ]] && ((n > 0)); then
    delta=$((idle - before))
    per=$((delta * 1024 / n))
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$placement" "$server" ecdsa \
    "$rep" "$order" "$loops" "$TLS_IDLE_CONNS" "$TLS_IDLE_SIZE" "$status" "${before:-NA}" \
    "${idle:-NA}" "$delta" "$per" "${dir#"$OUT"/}" >>"$OUT/tls_idle.tsv"
  log "tls idle $placement $server r$rep: before=${before:-NA} kB idle=${idle:-NA} kB n=${n:-NA} bytes/conn=$per ($status)"
}

run_tls_idle() {
  local placement rep server i=0
  tls_use_key ecdsa
  [[ -s $OUT/tls_idle.tsv ]] ||
    printf 'placement\tserver\tkey\trep\torder\tloops\tconns\tsize\tstatus\trss_before_kb\trss_idle_kb\tdelta_kb\tbytes_per_conn\traw\n' >"$OUT/tls_idle.tsv"
  for placement in $TLS_IDLE_PLACEMENTS; do
    for ((rep = 1; rep <= REPS; rep++)); do
      local order=0
      # shellcheck disable=SC2086
      for server in $(rotate $((rep - 1 + i)) $TLS_IDLE_SERVERS); do
        tls_idle_run "$placement" "$server" "$rep" $((order++))
      done
      i=$((i + 1))
    done
  done
}

run_tls() {
  [[ -x $BUILD/bench/tlsload ]] || {
    log "tls: $BUILD/bench/tlsload is missing (cgnet built without TLS?)"
    return
  }
  tls_make_certs "$OUT/certs" || {
    log "tls: the openssl CLI could not make the certificates ($OUT/certs)"
    return
  }
  local saved=$RESULTS nofile sub
  nofile=$(ulimit -n)
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || log "tls: could not raise the open-files limit"
  RESULTS=$OUT/tls.tsv
  [[ -s $RESULTS ]] || tr ' ' '\t' <<<"$RESULTS_HEADER" >"$RESULTS"
  for sub in $TLS_PARTS; do
    case $sub in
      handshake | https | echo | proxy | idle)
        log "== tls $sub"
        "run_tls_$sub"
        ;;
      *) log "tls: unknown sub-part '$sub' (handshake, https, echo, proxy, idle)" ;;
    esac
  done
  RESULTS=$saved
  ulimit -n "$nofile"
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
