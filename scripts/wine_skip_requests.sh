#!/usr/bin/env bash
# Noise-free companion of scripts/wine_skip_compare.sh: the Wine server
# requests the Windows echo server makes per round trip, with and without
# --skip-completion-port. Under Wine every kernel call of the IOCP path
# (a dequeue, a post, a socket call, a blocking wait) is a request to the
# wineserver, which prints each one at debug level 1. The server runs
# under a traced wineserver, so it is slow; the counts per round trip do
# not depend on the speed.
#
# Usage: scripts/wine_skip_requests.sh [CONNECTIONS] [BYTES] [SECONDS] [SERVER_FLAGS...]
# Defaults: 8 connections, 64 bytes, 3 seconds. Run ci/windows.sh test
# once first (it makes the Wine prefix). Stops the prefix's wineserver.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
conns=${1:-8} size=${2:-64} secs=${3:-3}
shift $(($# < 3 ? $# : 3))
extra=("$@")

cargo build --quiet --release --example echo_client
(
  export PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1
  unset RUSTC RUSTDOC RUSTUP_TOOLCHAIN
  CARGO_TARGET_DIR=$PWD/target/windows cargo build --quiet --release --example echo_server \
    --target x86_64-pc-windows-gnu -Zbuild-std
)
export PATH=/usr/bin:$PATH WINEDEBUG=-all WINEPREFIX=$PWD/target/wine-prefix
export WINEDLLOVERRIDES="mscoree,mshtml="
server=target/windows/x86_64-pc-windows-gnu/release/examples/echo_server.exe
client=target/release/examples/echo_client
[[ -d $WINEPREFIX ]] || { echo "no Wine prefix: run ci/windows.sh test once" >&2; exit 1; }
addr=127.0.0.1:7979
trace=$(mktemp -p target wine-trace.XXXXXX)
trap 'rm -f "$trace"; /usr/lib/wine/wineserver -k 2>/dev/null || true' EXIT

for mode in plain skip; do
  /usr/lib/wine/wineserver -k 2>/dev/null || true
  flags=("${extra[@]}")
  [[ $mode == skip ]] && flags+=(--skip-completion-port)
  /usr/lib/wine/wineserver -f -d1 -p 2>"$trace" &
  ws=$!
  sleep 1
  /usr/lib/wine/wine64 "$server" "$addr" 2 64 "${flags[@]}" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 200); do (: >/dev/tcp/${addr%:*}/${addr#*:}) 2>/dev/null && break; sleep 0.1; done
  before=$(wc -l <"$trace")
  out=$("$client" "$addr" "$conns" "$size" "$secs")
  after=$(wc -l <"$trace")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  /usr/lib/wine/wineserver -k 2>/dev/null || true
  wait "$ws" 2>/dev/null || true
  rt=$(sed -n 's/^ *\([0-9]*\) round trips,.*/\1/p' <<<"$out")
  echo "== $mode: $rt round trips ($conns connections x $size bytes, $secs s, traced)"
  # Each request is printed twice (the call and its reply): count calls.
  sed -n "$((before + 1)),${after}p" "$trace" | grep -oE '^[0-9a-f]{4}: [a-z_]+\( ' | awk '{print $2}' | tr -d '(' |
    sort | uniq -c | sort -rn |
    awk -v rt="$rt" '
      BEGIN { n = split("recv_socket send_socket set_async_direct_result get_handle_fd remove_completion add_completion select", keep, " ") }
      { total += $1; count[$2] = $1 }
      END {
        for (i = 1; i <= n; i++) printf "  %-24s %6.3f per round trip\n", keep[i], count[keep[i]] / rt
        printf "  %-24s %6.3f per round trip\n", "all requests", total / rt
      }'
done
