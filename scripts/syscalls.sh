#!/usr/bin/env bash
# System calls per echo round trip, on the server only (strace -f -c), for
# the crate's echo server on each Linux driver (io_uring, epoll) and a tokio
# echo server under the same load.
#
# Usage: scripts/syscalls.sh [CONNECTIONS] [MESSAGE_BYTES] [SECONDS] [THREADS]
# Defaults: 64 connections, 64 bytes, 5 seconds, 2 server threads.
# Needs strace (apt-get install strace). The crate's server runs with
# --hold-buffers (its reads keep a buffer while they wait, as tokio's do);
# io_uring-worker has a ring per worker (IOCOMPLETION_IO_URING_RINGS=worker),
# io_uring-zero waits with zero-byte reads (no --hold-buffers, S31),
# io_uring-signal has the port's ring without COOP_TASKRUN
# (IOCOMPLETION_IO_URING_RINGS=shared-signal, the setup before).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
conns=${1:-64} size=${2:-64} secs=${3:-5} threads=${4:-2}
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
cargo build -q --release --example echo_server --example echo_client --example tokio_echo_server
bin=target/release/examples
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

measure() { # name addr server-command...
  local name=$1 addr=$2; shift 2
  strace -f -qq -c -o "$out/$name.txt" "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
    sleep 0.1
  done
  local trips
  trips=$("$bin/echo_client" "$addr" "$conns" "$size" "$secs" | awk '/round trips,/ {print $1}')
  # Stop the server itself; strace then writes its table and exits.
  pkill -TERM -P "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  awk -v t="$trips" -v n="$name" '
    $NF ~ /^(read|readv|recvfrom|recvmsg|write|writev|sendto|sendmsg|epoll_wait|epoll_pwait|io_uring_enter|futex|sched_yield|total)$/ {
      calls = ($4 ~ /^[0-9]+$/) ? $4 : $3
      printf "%-10s %-12s %10d calls %8.3f per round trip\n", n, $NF, calls, calls / t
    }' "$out/$name.txt"
  echo "$name: $trips round trips"
}

measure io_uring 127.0.0.1:7878 env IOCOMPLETION_DRIVER=io_uring "$bin/echo_server" 127.0.0.1:7878 "$threads" "$threads" --hold-buffers
measure io_uring-worker 127.0.0.1:7881 env IOCOMPLETION_DRIVER=io_uring IOCOMPLETION_IO_URING_RINGS=worker "$bin/echo_server" 127.0.0.1:7881 "$threads" "$threads" --hold-buffers
measure io_uring-signal 127.0.0.1:7883 env IOCOMPLETION_DRIVER=io_uring IOCOMPLETION_IO_URING_RINGS=shared-signal "$bin/echo_server" 127.0.0.1:7883 "$threads" "$threads" --hold-buffers
measure io_uring-zero 127.0.0.1:7882 env IOCOMPLETION_DRIVER=io_uring "$bin/echo_server" 127.0.0.1:7882 "$threads" "$threads"
measure epoll 127.0.0.1:7880 env IOCOMPLETION_DRIVER=epoll "$bin/echo_server" 127.0.0.1:7880 "$threads" "$threads" --hold-buffers
measure tokio 127.0.0.1:7879 "$bin/tokio_echo_server" 127.0.0.1:7879 "$threads"
