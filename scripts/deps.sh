#!/usr/bin/env bash
# Make sure the tools and libraries cgnet's build needs are installed (Debian/Ubuntu).
#
#   scripts/deps.sh [--fuzz] [--node] [--bench] [--format] [--dry-run]
#
#   (always)   cmake, a C compiler, make, pkg-config, libc headers, cmocka, OpenSSL 3
#              (libssl-dev, for TLS) and the openssl CLI, liburing (the io_uring backend)
#              and zlib (WebSocket permessage-deflate), Python's websockets
#              (python3-websockets: the WebSocket example's test talks to it) and curl:
#              enough for `make`, `make install` and the plain and sanitizer test builds (those use CMake's default
#              compiler, gcc on Debian, whose libgcc-N-dev brings the ASan, UBSan, LSan
#              and TSan runtimes)
#   --fuzz     also clang and its libFuzzer runtime (libclang-rt-14-dev), which
#              scripts/fuzz.sh builds the fuzz targets with (`make test`,
#              `make test-fuzz`, `make fuzz`)
#   --node     also Node.js and npm (nodejs, npm) and Node's `ws` package (npm install -g
#              ws, from the npm registry): a WebSocket example's test talks to it
#              (`make test`)
#   --bench    also libuv1-dev, libevent-dev, wrk, h2load (nghttp2-client), nginx-light
#              and its stream module (libnginx-mod-stream: the TLS proxy peer), h2o,
#              python3, gnuplot-nox, valgrind and strace (bench peers, load tools, report)
#   --format   also clang-format
#   --dry-run  only say what would be installed; change nothing
#
# Prints nothing when everything is there. When something is missing: as root, runs
# `apt-get update` and `apt-get install -y` for exactly the missing packages; otherwise
# prints the command to run and exits 1.
#
# For testing this script: CGNET_DEPS_PRETEND_MISSING="pkg1 pkg2" treats those Debian
# packages as missing even when they are installed.
set -euo pipefail

want_fuzz=0 want_node=0 want_bench=0 want_format=0 dry_run=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) want_fuzz=1 ;;
    --node) want_node=1 ;;
    --bench) want_bench=1 ;;
    --format) want_format=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0
      ;;
    *)
      echo "deps.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

missing=()
pretend=" ${CGNET_DEPS_PRETEND_MISSING:-} "

have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pc() { have_cmd pkg-config && pkg-config --exists "$1" 2>/dev/null; }

# need PACKAGE CHECK...: PACKAGE is missing unless the check command succeeds.
need() {
  local pkg="$1"
  shift
  if [[ "$pretend" == *" $pkg "* ]] || ! "$@"; then
    missing+=("$pkg")
  fi
}

# Where Debian's libnginx-mod-stream puts the module bench/nginx_tls_proxy.conf.in loads.
have_nginx_stream() { [[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]]; }
have_cc() { have_cmd cc || have_cmd gcc || have_cmd clang; }
have_libc_headers() { [[ -f /usr/include/stdio.h ]]; }
# What CMake's CGNET_WITH_TLS=AUTO looks for: libssl and libcrypto >= 3.0.
have_openssl3() { have_pc 'libssl >= 3.0' && have_pc 'libcrypto >= 3.0'; }
# clang's own libFuzzer runtime (the one `clang -fsanitize=fuzzer` links).
have_libfuzzer() {
  have_cmd clang || return 1
  local dir
  dir=$(clang -print-resource-dir 2>/dev/null) || return 1
  [[ -f "$dir/lib/linux/libclang_rt.fuzzer-$(uname -m).a" ]]
}
cmake_ok() {
  have_cmd cmake || return 1
  # CMakeLists.txt needs 3.16.
  local v
  v=$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  [[ -n "$v" ]] && printf '3.16\n%s\n' "$v" | sort -V -C
}

need cmake cmake_ok
need gcc have_cc
need libc6-dev have_libc_headers
need make have_cmd make
need pkg-config have_cmd pkg-config
need libcmocka-dev have_pc cmocka
need libssl-dev have_openssl3
need openssl have_cmd openssl
need liburing-dev have_pc liburing
need zlib1g-dev have_pc zlib
# The system Python's module (a pyenv or venv python3 first in PATH may lack it).
have_py_websockets() {
  local py
  for py in python3 /usr/bin/python3; do
    have_cmd "$py" && "$py" -c 'import websockets' 2>/dev/null && return 0
  done
  return 1
}
need python3-websockets have_py_websockets
need curl have_cmd curl
if ((want_fuzz)); then
  need clang have_cmd clang
  need libclang-rt-14-dev have_libfuzzer
fi
if ((want_node)); then
  need nodejs have_cmd node
  need npm have_cmd npm
fi
if ((want_bench)); then
  need libuv1-dev have_pc libuv
  need libevent-dev have_pc libevent
  need wrk have_cmd wrk
  need nghttp2-client have_cmd h2load
  need nginx-light have_cmd nginx
  need libnginx-mod-stream have_nginx_stream
  need h2o have_cmd h2o
  need python3 have_cmd python3
  need gnuplot-nox have_cmd gnuplot
  need valgrind have_cmd valgrind
  need strace have_cmd strace
fi
if ((want_format)); then
  need clang-format have_cmd clang-format
fi

# The missing Debian packages, installed with apt-get (as root), or the command to run.
apt_install() {
  ((${#missing[@]} == 0)) && return 0

  echo "deps.sh: missing: ${missing[*]}" >&2
  if ! have_cmd apt-get; then
    echo "deps.sh: no apt-get here; install the equivalents of: ${missing[*]}" >&2
    exit 1
  fi

  install_cmd="apt-get install -y ${missing[*]}"
  if ((EUID != 0)); then
    echo "deps.sh: run: sudo apt-get update && sudo $install_cmd" >&2
    exit 1
  fi

  export DEBIAN_FRONTEND=noninteractive
  if ((dry_run)); then
    echo "deps.sh: would run: apt-get update && $install_cmd" >&2
    # Ask apt (simulation only) whether it knows every package name.
    apt-get install -s -y "${missing[@]}" >/dev/null
    echo "deps.sh: apt-get knows all of: ${missing[*]}" >&2
    return 0
  fi

  echo "deps.sh: installing: ${missing[*]}" >&2
  apt-get update -q
  apt-get install -y -q "${missing[@]}" </dev/null
}

# Node's ws package, where the test that uses it looks: require('ws') from anywhere, or
# npm's global root.
have_node_ws() {
  have_cmd node || return 1
  node -e "require('ws')" 2>/dev/null && return 0
  have_cmd npm && NODE_PATH=$(npm root -g 2>/dev/null) node -e "require('ws')" 2>/dev/null
}

install_node_ws() {
  have_node_ws && return 0
  if ((EUID != 0 || dry_run)); then
    echo "deps.sh: run: sudo npm install -g ws" >&2
    ((dry_run)) && return 0
    exit 1
  fi
  echo "deps.sh: installing Node's ws package (npm install -g ws)" >&2
  npm install -g --no-fund --no-audit ws </dev/null
}

apt_install
if ((want_node)); then install_node_ws; fi
