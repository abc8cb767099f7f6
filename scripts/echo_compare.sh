#!/usr/bin/env bash
# The crate's echo server against a tokio echo server, under load clients
# the crate did not write, interleaved round by round:
#
#   throughput  tcp-echo-benchmark (crates.io) for {1, 64, 512} connections
#               x {64, 4096} bytes: responses/s, ratio ours / tokio
#   latency     examples/echo_latency (built on tokio, not on this crate):
#               10,000 connections held, one 64-byte message per connection
#               per second; p50 / p99 / p99.9, ratio tokio / ours
#
# Usage: scripts/echo_compare.sh [ROUNDS] [SECONDS] [PARTS]
# Defaults: 5 rounds, 3 s per throughput run, PARTS "throughput latency".
# CONNS and SIZES (environment) narrow the throughput part, e.g.
# CONNS=64 SIZES=64 (defaults "1 64 512" and "64 4096"). The crate's server
# inherits the environment, so IOCOMPLETION_IO_URING_RINGS=shared (or
# worker) picks its rings.
# Server threads: ours `echo_server ADDR 2 64 --hold-buffers` (a buffer kept
# in each connection's pending read, as the tokio server keeps one per
# connection), tokio 2 workers.
# Needs an open-file limit above 20,000 for the latency part (ulimit -n).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-5} secs=${2:-3} parts=${3:-throughput latency}
tools=target/tools
if ! [ -x "$tools/bin/tcp-echo-benchmark" ]; then
  cargo install -q --locked --root "$tools" tcp-echo-benchmark --version 0.1.1
fi
cargo build -q --release --example echo_server --example tokio_echo_server --example echo_latency
bin=target/release/examples
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

start_server() { # name -> prints its address; leaves it running in $pid
  # A server killed a moment ago may still hold its port (seen as
  # AddrInUse): the kernel tears its io_uring rings down after the process,
  # and a request still in a ring holds its socket until then.
  local port=7878; [ "$1" = tokio ] && port=7879
  for _ in $(seq 100); do
    ss -Hltn "sport = :$port" | grep -q . || break
    sleep 0.1
  done
  case $1 in
    ours) "$bin/echo_server" 127.0.0.1:7878 2 64 --hold-buffers >/dev/null & pid=$!; addr=127.0.0.1:7878 ;;
    tokio) "$bin/tokio_echo_server" 127.0.0.1:7879 2 >/dev/null & pid=$!; addr=127.0.0.1:7879 ;;
  esac
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && return
    sleep 0.1
  done
  echo "server $1 did not start" >&2
  exit 1
}

stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

throughput() {
echo "## Throughput: tcp-echo-benchmark, $rounds rounds of $secs s, median (ratio ours/tokio, min-max)"
echo
echo "| connections x bytes | iocompletion responses/s | tokio responses/s | ratio | ratio min-max |"
echo "| --- | ---: | ---: | ---: | ---: |"
for conns in ${CONNS:-1 64 512}; do
  for size in ${SIZES:-64 4096}; do
    : >"$out/ratios"; : >"$out/ours"; : >"$out/tokio"
    for r in $(seq "$rounds"); do
      order="ours tokio"; [ $((r % 2)) -eq 0 ] && order="tokio ours"
      for s in $order; do
        start_server "$s"
        "$tools/bin/tcp-echo-benchmark" -a "$addr" -c "$conns" -l "$size" -t "$secs" \
          | awk '/^Throughput/ {print $4}' >"$out/$s.last"
        stop_server
        cat "$out/$s.last" >>"$out/$s"
      done
      paste "$out/ours.last" "$out/tokio.last" | awk '{printf "%.3f\n", $1/$2}' >>"$out/ratios"
    done
    printf "| %d x %d | %.0f | %.0f | %.2fx | %s-%s |\n" "$conns" "$size" \
      "$(median <"$out/ours")" "$(median <"$out/tokio")" "$(median <"$out/ratios")" \
      "$(sort -g "$out/ratios" | head -1)" "$(sort -g "$out/ratios" | tail -1)"
  done
done
}

latency() {
echo
echo "## Latency: echo_latency, 10000 connections x 64 B, 1 message/s each, $rounds rounds of 10 s"
echo
echo "| server | p50 us (median) | p99 us (median) | p99 min-max | p99.9 us (median) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for s in ours tokio; do : >"$out/$s.p50"; : >"$out/$s.p99"; : >"$out/$s.p999"; done
: >"$out/lat.ratios"
for r in $(seq "$rounds"); do
  order="ours tokio"; [ $((r % 2)) -eq 0 ] && order="tokio ours"
  for s in $order; do
    start_server "$s"
    line=$("$bin/echo_latency" "$addr" 10000 64 10 1000)
    stop_server
    # "N round trips over C connections: p50 A us, p99 B us, p99.9 C us, max D us"
    echo "$line" | awk '{print $8}' >>"$out/$s.p50"
    echo "$line" | awk '{print $11}' >"$out/$s.p99.last"
    cat "$out/$s.p99.last" >>"$out/$s.p99"
    echo "$line" | awk '{print $14}' >>"$out/$s.p999"
  done
  paste "$out/tokio.p99.last" "$out/ours.p99.last" | awk '{printf "%.3f\n", $1/$2}' >>"$out/lat.ratios"
done
for s in ours tokio; do
  printf "| %s | %s | %s | %s-%s | %s |\n" "$s" "$(median <"$out/$s.p50")" "$(median <"$out/$s.p99")" \
    "$(sort -g "$out/$s.p99" | head -1)" "$(sort -g "$out/$s.p99" | tail -1)" "$(median <"$out/$s.p999")"
done
echo
echo "p99 ratio tokio/ours (above 1: ours is lower): median $(median <"$out/lat.ratios"), min-max $(sort -g "$out/lat.ratios" | head -1)-$(sort -g "$out/lat.ratios" | tail -1)"
}

for part in $parts; do
  "$part"
done
