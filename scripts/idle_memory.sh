#!/usr/bin/env bash
# Resident memory of the echo servers holding idle connections: each
# connection echoes 64 bytes once, then stays open and silent. Prints the
# servers' VmRSS (Linux) once every connection is idle.
#
# Usage: scripts/idle_memory.sh [CONNECTIONS]   (default 10000)
# Needs python3 (the idle client) and an open-file limit above CONNECTIONS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-10000}
cargo build -q --release --example echo_server --example tokio_echo_server
bin=target/release/examples
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

cat >"$out/idle.py" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
socks = [socket.create_connection((host, int(port))) for _ in range(int(sys.argv[2]))]
for s in socks:
    s.sendall(b"x" * 64)
for s in socks:
    got = b""
    while len(got) < 64:
        got += s.recv(64 - len(got))
open(sys.argv[3], "w").write("idle")
time.sleep(3)
PY

measure() { # name addr server-command...
  local name=$1 addr=$2; shift 2
  "$@" >/dev/null &
  local pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
    sleep 0.1
  done
  rm -f "$out/idle"
  python3 "$out/idle.py" "$addr" "$n" "$out/idle" &
  local client=$!
  while ! [ -f "$out/idle" ]; do sleep 0.2; done
  sleep 0.5
  printf "%-36s %s\n" "$name" "$(awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")"
  wait "$client"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "$n idle connections, resident memory of the server:"
measure "iocompletion (zero-byte reads)" 127.0.0.1:7878 "$bin/echo_server" 127.0.0.1:7878 2 64
measure "iocompletion --hold-buffers" 127.0.0.1:7878 "$bin/echo_server" 127.0.0.1:7878 2 64 --hold-buffers
measure "tokio (64 KiB buffer per task)" 127.0.0.1:7879 "$bin/tokio_echo_server" 127.0.0.1:7879 2
