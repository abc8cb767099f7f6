#!/usr/bin/env bash
# Resident memory of the echo servers after waves of connections: each wave
# opens CONNECTIONS connections, echoes 64 bytes on each, and closes them
# all. After every wave (all connections closed) the script prints the
# server's VmRSS and glibc's own account of its heap (bytes in use, bytes
# the allocator holds), printed by malloc_stats() called in the server by gdb.
#
# Usage: scripts/rss_waves.sh [CONNECTIONS] [WAVES] [SERVER...]
#   CONNECTIONS default 10000, WAVES default 3; SERVER one or more of
#   zero-byte, hold-buffers, tokio (default: all three).
# Extra environment for the servers can be given as usual, for example
#   MALLOC_ARENA_MAX=1 scripts/rss_waves.sh
# Needs python3 (the client), gdb for the heap figures (skipped without
# it), and an open-file limit above CONNECTIONS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-10000}
waves=${2:-3}
shift $(($# < 2 ? $# : 2))
servers=${*:-zero-byte hold-buffers tokio}
cargo build -q --release --example echo_server --example tokio_echo_server
bin=target/release/examples
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

cat >"$out/wave.py" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
socks = [socket.create_connection((host, int(port))) for _ in range(int(sys.argv[2]))]
for s in socks:
    s.sendall(b"x" * 64)
for s in socks:
    got = b""
    while len(got) < 64:
        chunk = s.recv(64 - len(got))
        if not chunk:
            sys.exit("the server closed a connection early")
        got += chunk
for s in socks:
    s.close()
PY

heap() { # pid stderr-file -> "heap in use X MiB, held by malloc Y MiB"
  # glibc's malloc_stats() prints to the server's stderr; its last block is
  # the total over every arena, mmapped chunks included.
  command -v gdb >/dev/null || return 0
  : >"$2"
  gdb -q -batch -p "$1" -ex 'call (void) malloc_stats()' >/dev/null 2>&1 || return 0
  awk '/^Total/ {t = 1} t && /system bytes/ {s = $NF} t && /in use bytes/ {u = $NF}
    END { if (s) printf "heap in use %.1f MiB, held by malloc %.1f MiB", u / 1048576, s / 1048576 }' "$2"
}

open_fds() { ls "/proc/$1/fd" | wc -l; }

run() { # name addr server-command...
  local name=$1 addr=$2; shift 2
  "$@" >/dev/null 2>"$out/stderr" &
  local pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
  local fds0
  fds0=$(open_fds "$pid")
  echo "$name"
  for w in $(seq "$waves"); do
    python3 "$out/wave.py" "$addr" "$n"
    # Wait for the server to close its side of every connection.
    for _ in $(seq 100); do
      [ "$(open_fds "$pid")" -le "$fds0" ] && break
      sleep 0.1
    done
    sleep 0.5
    printf "  after wave %d: RSS %s, %s descriptors; %s\n" "$w" \
      "$(awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status")" \
      "$(open_fds "$pid")" "$(heap "$pid" "$out/stderr")"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

echo "$waves waves of $n connections (64 bytes echoed on each, then closed)"
for s in $servers; do
  case $s in
    zero-byte) run "iocompletion (zero-byte reads)" 127.0.0.1:7878 "$bin/echo_server" 127.0.0.1:7878 2 64 ;;
    hold-buffers) run "iocompletion --hold-buffers" 127.0.0.1:7878 "$bin/echo_server" 127.0.0.1:7878 2 64 --hold-buffers ;;
    tokio) run "tokio (64 KiB buffer per task)" 127.0.0.1:7879 "$bin/tokio_echo_server" 127.0.0.1:7879 2 ;;
    *) echo "unknown server $s (zero-byte, hold-buffers, tokio)" >&2; exit 2 ;;
  esac
done
