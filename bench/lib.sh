# shellcheck shell=bash
# bench/lib.sh — shared by bench/run.sh and bench/sweep.sh (sourced, not run).
#
# Starts and stops the servers under test, one fresh process per run, each on a port the
# kernel picked (port 0, read back from the server's "listening" line; nginx and h2o
# cannot print theirs, so a free port is found by binding port 0 first). Only loopback
# addresses. Only the PIDs started here are ever signalled: bench_cleanup (an EXIT trap)
# stops the one server that may still be running, and the proxies' backend.

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
ROOT=${ROOT:-$(cd "$BENCH_DIR/.." && pwd)}
BUILD=${BUILD:-$ROOT/build}
HOST=127.0.0.1

SERVER_PID=
SERVER_PORT=
BACKEND_PID=
BACKEND_PORT=

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The columns of results.tsv / sweep.tsv: the run's description, then measure.py's keys.
# shellcheck disable=SC2034 # used by the scripts that source this
MEASURE_KEYS="rc thr msgs secs cpu_win_s win_s cpu_util per_cpu_s cpu_total_s load_util other_util wall_s p50_us p99_us hwm_kb errors non2xx lost"
# shellcheck disable=SC2034
RESULTS_HEADER="placement bench mode conns size tool server rep order loops load_threads status $MEASURE_KEYS raw"

# record META LINE RAW: append one line to $RESULTS (under $OUT) (META: space-separated columns;
# LINE: measure.py's key=value output, empty if the server did not start).
record() {
  local meta=$1 line=$2 raw=$3 status=ok kv k vals=()
  local -A m=()
  for kv in $line; do m[${kv%%=*}]=${kv#*=}; done
  [[ -n $line ]] || status=fail
  for k in $MEASURE_KEYS; do vals+=("${m[$k]:-NA}"); done
  if [[ $status == ok && ${m[rc]:-} != 0 ]]; then status=rc${m[rc]:-NA}; fi
  # shellcheck disable=SC2206
  local fields=($meta $status "${vals[@]}" "${raw#"$OUT"/}")
  (
    IFS=$'\t'
    echo "${fields[*]}"
  ) >>"$RESULTS"
}

# The CPU prefix for the server and for the load tool in a placement.
server_cpus() { if [[ $1 == pin1 ]]; then echo "taskset -c 0"; fi; }
load_cpus() { if [[ $1 == pin1 ]]; then echo "taskset -c 1"; fi; }
placement_loops() { [[ $1 == pin1 ]] && echo 1 || echo 2; }

# A port nothing listens on right now (a small race with other programs; harmless here).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT TIMEOUT_S: until something accepts on 127.0.0.1:PORT.
wait_port() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# wait_listening FILE TIMEOUT_S: print the port from a "listening" line in FILE.
wait_listening() {
  local file=$1 tries=$(($2 * 20)) port
  while ((tries-- > 0)); do
    port=$(sed -nE -e 's/.*listening on ((tcp|udp|tls):\/\/)?[0-9.]+:([0-9]+).*/\3/p' \
      -e 's/.*listening on port ([0-9]+).*/\1/p' "$file" 2>/dev/null | head -n1)
    if [[ -n $port ]]; then
      echo "$port"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# Session tickets on the TLS servers, from TLS_TICKETS (on or off; unset: off).
tls_ticket_flag() { [[ ${TLS_TICKETS:-off} == on ]] || printf -- '--no-tickets'; }
h2o_resumption() { if [[ ${TLS_TICKETS:-off} == on ]]; then printf ticket; else printf off; fi; }

# start_server NAME PLACEMENT OUTDIR: sets SERVER_PID and SERVER_PORT; returns 1 if the
# server did not come up (its output is in OUTDIR/server.log).
#   echo servers: cgnet cgnet_uring floor floor_uring libuv libevent
#   http servers: cgnet_http floor_http nginx h2o
#   udp echo servers: cgnet_udp (per-datagram conns) cgnet_udp_sessions (?sessions=1)
#   WebSocket echo servers: cgnet_ws cgnet_raw node_ws python_websockets (ws_start)
#   tls servers (certificate and key in $TLS_CERT, $TLS_KEY): cgnet_tls cgnet_tls_uring
#     (echo over tls://), libevent_tls (bench/echo_libevent --cert --key), cgnet_https
#     cgnet_https_uring (http_plaintext over tls://), nginx_tls h2o_tls (HTTPS
#     /plaintext; any TLS client can handshake with them)
#   TLS-terminating proxies in front of the echo backend on $BACKEND_PORT (start_backend):
#     cgnet_tls_proxy (examples/proxy tls:// -> tcp://), nginx_tls_proxy (nginx's stream
#     module, bench/nginx_tls_proxy.conf.in). h2o has no TCP proxy, so no h2o row.
start_server() {
  local name=$1 placement=$2 dir=$3 loops pre
  loops=$(placement_loops "$placement")
  pre=$(server_cpus "$placement")
  mkdir -p "$dir"
  SERVER_PORT=
  local log=$dir/server.log
  case $name in
    cgnet)
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/echo" "tcp://$HOST:0" --loops "$loops" --quiet ${CGNET_ARGS:-} \
        >"$log" 2>&1 &
      ;;
    cgnet_uring)
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/echo" "tcp://$HOST:0" --loops "$loops" --quiet --backend io_uring \
        ${CGNET_ARGS:-} >"$log" 2>&1 &
      ;;
    cgnet_udp | cgnet_udp_sessions)
      local on=0
      [[ $name == cgnet_udp_sessions ]] && on=1
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/echo" "udp://$HOST:0?sessions=$on" --loops "$loops" --quiet \
        ${CGNET_ARGS:-} >"$log" 2>&1 &
      ;;
    cgnet_http)
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/http_plaintext" "tcp://$HOST:0" --loops "$loops" ${CGNET_ARGS:-} \
        >"$log" 2>&1 &
      ;;
    cgnet_http_uring)
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/http_plaintext" "tcp://$HOST:0" --loops "$loops" \
        --backend io_uring ${CGNET_ARGS:-} >"$log" 2>&1 &
      ;;
    floor | floor_uring | floor_udp | libuv | libevent | floor_http)
      local bin=$name
      [[ $name == floor ]] && bin=floor_echo
      [[ $name == libuv || $name == libevent ]] && bin=echo_$name
      $pre "$BUILD/bench/$bin" --host "$HOST" --port 0 --loops "$loops" >"$log" 2>&1 &
      ;;
    cgnet_ws | cgnet_raw | node_ws | python_websockets)
      ws_start "$name" "$loops" "$pre" "$log"
      ;;
    nginx)
      SERVER_PORT=$(free_port)
      sed -e "s/@PORT@/$SERVER_PORT/" -e "s/@WORKERS@/$loops/" -e "s,@DIR@,$dir," \
        "$BENCH_DIR/nginx.conf.in" >"$dir/nginx.conf"
      $pre nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$log" 2>&1 &
      ;;
    h2o)
      SERVER_PORT=$(free_port)
      chmod 755 "$dir"
      printf 'Hello, World!' >"$dir/plaintext"
      sed -e "s/@PORT@/$SERVER_PORT/" -e "s/@WORKERS@/$loops/" -e "s,@DIR@,$dir," \
        "$BENCH_DIR/h2o.conf.in" >"$dir/h2o.conf"
      $pre h2o -c "$dir/h2o.conf" >"$log" 2>&1 &
      ;;
    cgnet_tls | cgnet_tls_uring)
      local be=epoll
      [[ $name == cgnet_tls_uring ]] && be=io_uring
      # shellcheck disable=SC2046,SC2086 # the ticket flag is one word or none
      $pre "$BUILD/examples/echo" "tls://$HOST:0" --loops "$loops" --quiet --backend "$be" \
        --cert "$TLS_CERT" --key "$TLS_KEY" $(tls_ticket_flag) ${CGNET_ARGS:-} >"$log" 2>&1 &
      ;;
    libevent_tls)
      # Issues no session tickets whatever TLS_TICKETS says (it serves the echo rows only).
      $pre "$BUILD/bench/echo_libevent" --host "$HOST" --port 0 --loops "$loops" \
        --cert "$TLS_CERT" --key "$TLS_KEY" >"$log" 2>&1 &
      ;;
    cgnet_tls_proxy)
      # shellcheck disable=SC2046,SC2086 # the ticket flag is one word or none
      $pre "$BUILD/examples/proxy" "tls://$HOST:0" "tcp://$HOST:$BACKEND_PORT" --loops "$loops" \
        --quiet --cert "$TLS_CERT" --key "$TLS_KEY" $(tls_ticket_flag) ${CGNET_ARGS:-} \
        >"$log" 2>&1 &
      ;;
    nginx_tls_proxy)
      SERVER_PORT=$(free_port)
      sed -e "s/@PORT@/$SERVER_PORT/" -e "s/@BACKEND@/$BACKEND_PORT/" -e "s/@WORKERS@/$loops/" \
        -e "s,@DIR@,$dir," -e "s,@CERT@,$TLS_CERT," -e "s,@KEY@,$TLS_KEY," \
        -e "s/@TICKETS@/${TLS_TICKETS:-off}/" "$BENCH_DIR/nginx_tls_proxy.conf.in" >"$dir/nginx.conf"
      $pre nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$log" 2>&1 &
      ;;
    cgnet_https | cgnet_https_uring)
      local be=epoll
      [[ $name == cgnet_https_uring ]] && be=io_uring
      # shellcheck disable=SC2046,SC2086 # the ticket flag is one word or none
      $pre "$BUILD/examples/http_plaintext" "tls://$HOST:0" --loops "$loops" --backend "$be" \
        --cert "$TLS_CERT" --key "$TLS_KEY" $(tls_ticket_flag) ${CGNET_ARGS:-} >"$log" 2>&1 &
      ;;
    nginx_tls)
      SERVER_PORT=$(free_port)
      sed -e "s/@PORT@/$SERVER_PORT/" -e "s/@WORKERS@/$loops/" -e "s,@DIR@,$dir," \
        -e "s,@CERT@,$TLS_CERT," -e "s,@KEY@,$TLS_KEY," -e "s/@TICKETS@/${TLS_TICKETS:-off}/" \
        "$BENCH_DIR/nginx_tls.conf.in" >"$dir/nginx.conf"
      $pre nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$log" 2>&1 &
      ;;
    h2o_tls)
      SERVER_PORT=$(free_port)
      chmod 755 "$dir"
      printf 'Hello, World!' >"$dir/plaintext"
      sed -e "s/@PORT@/$SERVER_PORT/" -e "s/@WORKERS@/$loops/" -e "s,@DIR@,$dir," \
        -e "s,@CERT@,$TLS_CERT," -e "s,@KEY@,$TLS_KEY," -e "s/@RESUMPTION@/$(h2o_resumption)/" \
        "$BENCH_DIR/h2o_tls.conf.in" >"$dir/h2o.conf"
      $pre h2o -c "$dir/h2o.conf" >"$log" 2>&1 &
      ;;
    *)
      log "unknown server '$name'"
      return 1
      ;;
  esac
  SERVER_PID=$!
  if [[ -n $SERVER_PORT ]]; then
    wait_port "$SERVER_PORT" 10 || {
      log "$name did not accept on port $SERVER_PORT"
      stop_server
      return 1
    }
  else
    SERVER_PORT=$(wait_listening "$log" 10) || {
      log "$name did not print a listening port"
      stop_server
      return 1
    }
  fi
}

# stop_pid PID SECS: SIGTERM PID (one started here), SIGKILL after SECS; reap it.
stop_pid() {
  local pid=$1 n=0 max=$(($2 * 20))
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null && ((n++ < max)); do sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# shellcheck disable=SC2120 # SECS is optional
# stop_server [SECS]: SIGTERM the server started last, SIGKILL after SECS (5); reap it.
stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=
  stop_pid "$pid" "${1:-5}"
}

# start_backend OUTDIR: the plain echo behind the TLS proxies (bench/floor_echo, 1 loop)
# pinned to CPU 1, the load tool's CPU in pin1, so that it never takes CPU 0 from the
# proxy under test; it is no child of the proxy, so measure.py does not count it. Sets
# BACKEND_PID and BACKEND_PORT; returns 1 if it did not come up (OUTDIR/backend.log).
start_backend() {
  local log=$1/backend.log
  mkdir -p "$1"
  taskset -c 1 "$BUILD/bench/floor_echo" --host "$HOST" --port 0 --loops 1 >"$log" 2>&1 &
  BACKEND_PID=$!
  local tries=200 # 10 s
  BACKEND_PORT=
  while ((tries-- > 0)) && [[ -z $BACKEND_PORT ]] && kill -0 "$BACKEND_PID" 2>/dev/null; do
    BACKEND_PORT=$(sed -nE 's/.*listening on [0-9.]+:([0-9]+).*/\1/p' "$log" | head -n1)
    [[ -n $BACKEND_PORT ]] || sleep 0.05
  done
  [[ -n $BACKEND_PORT ]] && return 0
  log "the proxy backend (floor_echo) did not print a listening port: $log"
  stop_backend
  return 1
}

stop_backend() {
  local pid=$BACKEND_PID
  BACKEND_PID=
  BACKEND_PORT=
  stop_pid "$pid" 5
}

bench_cleanup() {
  stop_server
  stop_backend
}

# http_server_available NAME: nginx and h2o are optional.
http_server_available() {
  case $1 in
    nginx | nginx_tls) command -v nginx >/dev/null ;;
    h2o | h2o_tls) command -v h2o >/dev/null ;;
    *) true ;;
  esac
}

# tls_server_available NAME: as http_server_available, and libevent_tls needs
# echo_libevent built with libevent_openssl (then its --help lists --cert),
# nginx_tls_proxy nginx's stream module (Debian: libnginx-mod-stream).
tls_server_available() {
  case $1 in
    libevent_tls)
      [[ -x $BUILD/bench/echo_libevent ]] &&
        "$BUILD/bench/echo_libevent" --help 2>/dev/null | grep -q -- --cert
      ;;
    nginx_tls_proxy)
      command -v nginx >/dev/null && [[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]]
      ;;
    *) http_server_available "$1" ;;
  esac
}

# rotate N WORD...: the words rotated left by N (servers take turns going first).
rotate() {
  local n=$1
  shift
  local a=("$@") i
  local k=${#a[@]}
  ((k)) || return 0
  for ((i = 0; i < k; i++)); do printf '%s ' "${a[$(((i + n) % k))]}"; done
}

# machine_info FILE: what ran the benchmark.
machine_info() {
  {
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -sr)"
    echo "compiler=$(cc --version | head -n1)"
    echo "build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt" 2>/dev/null)"
    echo "libuv=$(pkg-config --modversion libuv 2>/dev/null)"
    echo "libevent=$(pkg-config --modversion libevent 2>/dev/null)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "h2o=$(h2o --version 2>/dev/null | head -n1 | sed 's/^h2o version //')"
    echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
    echo "h2load=$(h2load --version 2>/dev/null | head -n1 | sed 's/.*nghttp2\///')"
    echo "git=$(git -C "$ROOT" describe --always --dirty 2>/dev/null)"
  } >"$1"
}

# ---- WebSocket echo servers (bench/run.sh ws) ----------------------------------------
# ws_start NAME LOOPS PREFIX LOG: start one in the background (start_server takes its PID
# from $! and its port from the "listening on tcp://HOST:PORT" line each one prints).
#   cgnet_ws           examples/ws_echo, permessage-deflate declined, LOOPS loops
#   cgnet_raw          examples/echo, the same echo on raw conns (driven by wsload --raw)
#   node_ws            bench/ws_node_server.js on Node's global `ws` package
#   python_websockets  bench/ws_python_server.py on Python's websockets
# Node and Python run the server on one thread whatever LOOPS says.
ws_start() {
  local name=$1 loops=$2 pre=$3 log=$4
  case $name in
    cgnet_ws)
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/ws_echo" "tcp://$HOST:0" --loops "$loops" --no-deflate --quiet \
        ${CGNET_ARGS:-} >"$log" 2>&1 &
      ;;
    cgnet_raw)
      # shellcheck disable=SC2086
      $pre "$BUILD/examples/echo" "tcp://$HOST:0" --loops "$loops" --quiet ${CGNET_ARGS:-} \
        >"$log" 2>&1 &
      ;;
    node_ws)
      ws_node_path
      NODE_PATH=$WS_NODE_PATH $pre node "$BENCH_DIR/ws_node_server.js" --host "$HOST" \
        --port 0 >"$log" 2>&1 &
      ;;
    python_websockets)
      $pre "$(ws_python)" "$BENCH_DIR/ws_python_server.py" --host "$HOST" --port 0 \
        >"$log" 2>&1 &
      ;;
  esac
}

WS_NODE_PATH=
# Sets WS_NODE_PATH to where `npm install -g` put the ws package (asked once).
ws_node_path() {
  [[ -n $WS_NODE_PATH ]] || WS_NODE_PATH=$(npm root -g 2>/dev/null)
}

# A python3 that imports websockets: the one on PATH, else Debian's (python3-websockets).
ws_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if "$py" -c 'import websockets' 2>/dev/null; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

# ws_server_available NAME: the Node and Python peers need their packages.
ws_server_available() {
  case $1 in
    cgnet_ws) [[ -x $BUILD/examples/ws_echo ]] ;;
    node_ws)
      ws_node_path
      command -v node >/dev/null && NODE_PATH=$WS_NODE_PATH node -e 'require("ws")' 2>/dev/null
      ;;
    python_websockets) ws_python >/dev/null ;;
    *) true ;;
  esac
}
