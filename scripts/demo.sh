#!/usr/bin/env bash
# demo.sh BUILD_DIR — what `make demo` runs after the build: start the echo example on a
# free loopback port with 2 loops, load it for 5 s with bench/echoload (100 conns,
# 512-byte ping-pong, every echoed byte checked), stop the server with SIGTERM and
# report. Exits 0 only if echoload found no error and the server exited 0.
set -uo pipefail

build=${1:-}
if [[ -z $build ]]; then
  echo "usage: scripts/demo.sh BUILD_DIR" >&2
  exit 2
fi
echo_bin=$build/examples/echo
load_bin=$build/bench/echoload
for bin in "$echo_bin" "$load_bin"; do
  if [[ ! -x $bin ]]; then
    echo "demo: FAILED: $bin is missing (build it first: make)" >&2
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cgnet-demo.XXXXXX")
server_pid=""

# Whatever happens, leave no server behind: only the PID we started is touched.
cleanup() {
  if [[ -n $server_pid ]]; then
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "demo: FAILED: $*" >&2
  if [[ -s $tmp/server.err ]]; then
    echo "demo: server stderr (last lines):" >&2
    tail -n 20 "$tmp/server.err" | sed 's/^/  /' >&2
  fi
  exit 1
}

# State letter of a process (R, S, Z, ...), or "gone". A child that exited stays a
# zombie (Z) until we wait for it, so its PID cannot be reused while we poll.
proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || {
    echo gone
    return
  }
  stat=${stat##*) }
  echo "${stat%% *}"
}

# 1. Start the server on port 0 and read the port it got from its first stdout line.
"$echo_bin" tcp://127.0.0.1:0 --loops 2 --quiet >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
port=""
for _ in $(seq 50); do
  line=$(head -n 1 "$tmp/server.out" 2>/dev/null)
  if [[ $line =~ ^echo:\ listening\ on\ tcp://[^\ ]*:([0-9]+)[\ ,] ]]; then
    port=${BASH_REMATCH[1]}
    break
  fi
  state=$(proc_state "$server_pid")
  if [[ $state == Z || $state == gone ]]; then
    wait "$server_pid"
    rc=$?
    server_pid=""
    fail "the echo server exited with status $rc before listening"
  fi
  sleep 0.1
done
[[ -n $port ]] || fail "the echo server printed no 'echo: listening on ...' line within 5 s"
echo "demo: $(head -n 1 "$tmp/server.out") [pid $server_pid]"

# 2. Load it.
echo "demo: echoload -a 127.0.0.1:$port -c 100 -s 512 -d 5 -m pingpong"
"$load_bin" -a "127.0.0.1:$port" -c 100 -s 512 -d 5 -m pingpong >"$tmp/load.out" 2>"$tmp/load.err"
load_rc=$?
sed 's/^/  /' "$tmp/load.err"
grep -v '^RESULT ' "$tmp/load.out"
result=$(grep '^RESULT ' "$tmp/load.out" | tail -n 1)
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result"; }

# 3. Stop the server: SIGTERM, up to 5 s to exit, then SIGKILL.
kill -TERM "$server_pid" 2>/dev/null
for _ in $(seq 50); do
  state=$(proc_state "$server_pid")
  [[ $state == Z || $state == gone ]] && break
  sleep 0.1
done
state=$(proc_state "$server_pid")
killed=0
if [[ $state != Z && $state != gone ]]; then
  kill -KILL "$server_pid" 2>/dev/null
  killed=1
fi
wait "$server_pid"
server_rc=$?
server_pid=""

# 4. Verdict.
if [[ -n $result ]]; then
  printf 'demo: %s msgs/s, %s MB/s each way, latency p50 %s us, p99 %s us, errors %s\n' \
    "$(get msgs_per_s)" "$(get mb_per_s)" "$(get p50_us)" "$(get p99_us)" "$(get errors)"
fi
((killed)) && fail "the echo server did not exit within 5 s of SIGTERM (killed)"
((load_rc == 0)) || fail "echoload exited with status $load_rc"
((server_rc == 0)) || fail "the echo server exited with status $server_rc"
echo "demo: OK (echoload and the echo server both exited 0)"
exit 0
