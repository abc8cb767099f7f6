#!/usr/bin/env bash
# The crate's echo server on each Linux driver against a tokio echo server,
# under load clients in their own processes, interleaved round by round (the
# order of the servers turns every round), so every ratio is from one round:
#
#   throughput  a load client for {1, 64, 512} connections x {64, 4096}
#               bytes: round trips/s per server, and the per-round ratios
#               io_uring/tokio, epoll/tokio, io_uring/epoll (median, min-max)
#   many        10,000 connections, 64 B, each sending as fast as its echo
#               comes back (examples/echo_latency with a 1 ms period):
#               round trips/s and p99 per server, ratios as above
#   latency     examples/echo_latency: 10,000 connections held, one 64-byte
#               message per connection per second; p50 / p99 / p99.9
#
# Usage: scripts/echo_compare.sh [ROUNDS] [SECONDS] [PARTS] [SERVERS]
# Defaults: 5 rounds, 3 s per throughput run, PARTS "throughput many latency",
# SERVERS "uring epoll tokio". Server names:
#   uring, epoll   `echo_server ADDR 2 64 --hold-buffers` with
#                  IOCOMPLETION_DRIVER=io_uring / epoll (a buffer kept in each
#                  connection's pending read, as the tokio server keeps one)
#   uring0, epoll0 the same without --hold-buffers (zero-byte waits, S31)
#   uringw         uring with a ring per worker (IOCOMPLETION_IO_URING_RINGS=worker)
#   uringk         uring, the port's ring set up without COOP_TASKRUN
#                  (IOCOMPLETION_IO_URING_RINGS=shared-signal, the setup before)
#   base           uring, but the echo_server binary in $BASE_BIN (another
#                  build of the crate, e.g. an earlier commit, to compare)
#   tokio          examples/tokio_echo_server, 2 workers
# CONNS and SIZES narrow the throughput part (defaults "1 64 512" and
# "64 4096"), e.g. CONNS=64 SIZES=64. The servers inherit the environment,
# so IOCOMPLETION_IO_URING_RINGS=shared or worker picks the rings.
# CLIENT picks the throughput client: `tcp-echo-benchmark` (crates.io, the
# default) or `crate` (examples/echo_client, which checks every byte).
# Needs an open-file limit above 20,000 for "many" and "latency" (ulimit -n).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-5} secs=${2:-3} parts=${3:-throughput many latency} servers=${4:-uring epoll tokio}
client=${CLIENT:-tcp-echo-benchmark}
tools=target/tools
if [ "$client" = tcp-echo-benchmark ] && ! [ -x "$tools/bin/tcp-echo-benchmark" ]; then
  cargo install -q --locked --root "$tools" tcp-echo-benchmark --version 0.1.1
fi
cargo build -q --release --example echo_server --example tokio_echo_server --example echo_latency \
  --example echo_client
bin=target/release/examples
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

start_server() { # name -> leaves it running in $pid, its address in $addr
  addr=127.0.0.1:7878
  # A server killed a moment ago may still hold the port (AddrInUse): the
  # kernel tears its io_uring rings down after the process, and a request
  # still in a ring holds its socket until then.
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null || break
    sleep 0.1
  done
  case $1 in
    uring) IOCOMPLETION_DRIVER=io_uring "$bin/echo_server" $addr 2 64 --hold-buffers >/dev/null & pid=$! ;;
    epoll) IOCOMPLETION_DRIVER=epoll "$bin/echo_server" $addr 2 64 --hold-buffers >/dev/null & pid=$! ;;
    uringw) IOCOMPLETION_DRIVER=io_uring IOCOMPLETION_IO_URING_RINGS=worker "$bin/echo_server" $addr 2 64 --hold-buffers >/dev/null & pid=$! ;;
    uringk) IOCOMPLETION_DRIVER=io_uring IOCOMPLETION_IO_URING_RINGS=shared-signal "$bin/echo_server" $addr 2 64 --hold-buffers >/dev/null & pid=$! ;;
    base) IOCOMPLETION_DRIVER=io_uring "${BASE_BIN:?set BASE_BIN to a directory holding another echo_server}/echo_server" $addr 2 64 --hold-buffers >/dev/null & pid=$! ;;
    uring0) IOCOMPLETION_DRIVER=io_uring "$bin/echo_server" $addr 2 64 >/dev/null & pid=$! ;;
    epoll0) IOCOMPLETION_DRIVER=epoll "$bin/echo_server" $addr 2 64 >/dev/null & pid=$! ;;
    tokio) "$bin/tokio_echo_server" $addr 2 >/dev/null & pid=$! ;;
    *) echo "unknown server $1" >&2; exit 1 ;;
  esac
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && return
    sleep 0.1
  done
  echo "server $1 did not start" >&2
  exit 1
}

stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; sleep 0.2; }

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# the servers in the order of round $1 (turned by one each round)
order() {
  local -a s=($servers)
  local n=${#s[@]} k=$(($1 % ${#s[@]})) i
  for ((i = 0; i < n; i++)); do printf '%s ' "${s[$(((i + k) % n))]}"; done
}

# "a/b" ratios of the last round into $out/ratio.a.b, for every pair asked
ratios_of_round() { # suffix
  local a b
  for a in $servers; do
    for b in $servers; do
      [ "$a" = "$b" ] && continue
      case "$b" in
        tokio) ;;
        epoll) [ "$a" = uring ] || [ "$a" = uringw ] || [ "$a" = uringk ] || continue ;;
        epoll0) [ "$a" = uring0 ] || continue ;;
        uring) [ "$a" = uring0 ] || [ "$a" = uringw ] || [ "$a" = base ] || continue ;;
        uringk) [ "$a" = uring ] || continue ;;
        *) continue ;;
      esac
      paste "$out/$a.$1.last" "$out/$b.$1.last" | awk '{printf "%.3f\n", ($2 > 0) ? $1/$2 : 0}' >>"$out/ratio.$a.$b.$1"
    done
  done
}

print_ratios() { # suffix
  local f pair
  for f in "$out"/ratio.*."$1"; do
    [ -e "$f" ] || continue
    pair=${f#"$out"/ratio.}; pair=${pair%."$1"}
    printf '%s/%s %.2fx (%s-%s); ' "${pair%.*}" "${pair#*.}" "$(median <"$f")" "$(sort -g "$f" | head -1)" "$(sort -g "$f" | tail -1)"
  done
}

run_client() { # conns size -> round trips/s on stdout
  if [ "$client" = crate ]; then
    "$bin/echo_client" "$addr" "$1" "$2" "$secs" | sed -n 's|.* \([0-9][0-9]*\) round trips/s.*|\1|p' | head -1
  else
    "$tools/bin/tcp-echo-benchmark" -a "$addr" -c "$1" -l "$2" -t "$secs" | awk '/^Throughput/ {print $4}'
  fi
}

throughput() {
  echo "## Throughput: $client, $rounds rounds of $secs s, medians; ratios are per round (median, min-max)"
  echo
  printf '| connections x bytes |'; for s in $servers; do printf ' %s /s |' "$s"; done; echo " ratios |"
  printf '| --- |'; for _ in $servers; do printf ' ---: |'; done; echo " --- |"
  for conns in ${CONNS:-1 64 512}; do
    for size in ${SIZES:-64 4096}; do
      rm -f "$out"/ratio.*; for s in $servers; do : >"$out/$s.t"; done
      for r in $(seq "$rounds"); do
        for s in $(order "$r"); do
          start_server "$s"
          run_client "$conns" "$size" >"$out/$s.t.last"
          stop_server
          cat "$out/$s.t.last" >>"$out/$s.t"
        done
        ratios_of_round t
      done
      printf '| %d x %d |' "$conns" "$size"
      for s in $servers; do printf ' %.0f |' "$(median <"$out/$s.t")"; done
      echo " $(print_ratios t)|"
    done
  done
}

many() {
  echo
  echo "## 10,000 connections x 64 B, each sending as soon as its echo is back, $rounds rounds of 15 s"
  echo
  echo "| server | round trips/s (median) | p99 us (median) | p99.9 us (median) |"
  echo "| --- | ---: | ---: | ---: |"
  rm -f "$out"/ratio.*
  for s in $servers; do : >"$out/$s.m"; : >"$out/$s.m99"; : >"$out/$s.m999"; done
  for r in $(seq "$rounds"); do
    for s in $(order "$r"); do
      start_server "$s"
      line=$("$bin/echo_latency" "$addr" 10000 64 15 1)
      stop_server
      # "N round trips over C connections: p50 A us, p99 B us, p99.9 C us, max D us"
      echo "$line" | awk '{printf "%.0f\n", $1 / 15}' >"$out/$s.m.last"
      cat "$out/$s.m.last" >>"$out/$s.m"
      echo "$line" | awk '{print $11}' >>"$out/$s.m99"
      echo "$line" | awk '{print $14}' >>"$out/$s.m999"
    done
    ratios_of_round m
  done
  for s in $servers; do
    printf '| %s | %.0f | %s | %s |\n' "$s" "$(median <"$out/$s.m")" "$(median <"$out/$s.m99")" "$(median <"$out/$s.m999")"
  done
  echo
  echo "round trips, per round: $(print_ratios m)"
}

latency() {
  echo
  echo "## Latency: echo_latency, 10000 connections x 64 B, 1 message/s each, $rounds rounds of 10 s"
  echo
  echo "| server | p50 us (median) | p99 us (median) | p99 min-max | p99.9 us (median) |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for s in $servers; do : >"$out/$s.p50"; : >"$out/$s.p99"; : >"$out/$s.p999"; done
  for r in $(seq "$rounds"); do
    for s in $(order "$r"); do
      start_server "$s"
      line=$("$bin/echo_latency" "$addr" 10000 64 10 1000)
      stop_server
      echo "$line" | awk '{print $8}' >>"$out/$s.p50"
      echo "$line" | awk '{print $11}' >>"$out/$s.p99"
      echo "$line" | awk '{print $14}' >>"$out/$s.p999"
    done
  done
  for s in $servers; do
    printf '| %s | %s | %s | %s-%s | %s |\n' "$s" "$(median <"$out/$s.p50")" "$(median <"$out/$s.p99")" \
      "$(sort -g "$out/$s.p99" | head -1)" "$(sort -g "$out/$s.p99" | tail -1)" "$(median <"$out/$s.p999")"
  done
}

for part in $parts; do
  "$part"
done
