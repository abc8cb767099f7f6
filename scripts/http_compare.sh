#!/usr/bin/env bash
# The crate's hyper server (examples/http_server.rs: hyper 1.x on the
# crate's tasks, streams and timers, no tokio runtime) against the same
# server on hyper + tokio (examples/hyper_tokio_server.rs), both with 2
# server threads, under wrk (Debian's package), interleaved round by round:
# in each round both servers are loaded once for each connection count, in
# an order that alternates from round to round.
#
#   wrk -t2 -cC -dSs --latency   for C in 64 and 512
#
# Prints, per round and connection count, requests/s and p99 of each
# server, the ratio ours / tokio of requests/s (> 1: ours serves more) and
# tokio / ours of p99 (> 1: ours answers faster), then the medians of the
# per-round ratios.
#
# Usage: scripts/http_compare.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# Defaults: 5 rounds of 5 s, connections "64 512". Needs wrk on the PATH
# (apt-get install wrk) and an open-file limit above the connections.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-5} secs=${2:-5} conns=${3:-64 512}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true
cargo build -q --release --features hyper --example http_server --example hyper_tokio_server
bin=target/release/examples
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

ours_addr=127.0.0.1:18080 tokio_addr=127.0.0.1:18081
"$bin/http_server" "$ours_addr" 2 >"$out/ours.log" 2>&1 &
"$bin/hyper_tokio_server" "$tokio_addr" 2 >"$out/tokio.log" 2>&1 &
for a in $ours_addr $tokio_addr; do # wait (bounded) until both answer
  for _ in $(seq 100); do
    curl -fs "http://$a/" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

# wrk's figures: requests/s and p99 in microseconds.
load() { # addr conns -> "rps p99_us"
  wrk -t2 -c"$2" -d"${secs}s" --latency "http://$1/" >"$out/wrk.txt" 2>&1 || true
  awk '
    function us(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
      return v + 0
    }
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = us($2) }
    END { printf "%s %s\n", (rps == "" ? 0 : rps), (p99 == "" ? 0 : p99) }
  ' "$out/wrk.txt"
}

printf "%-5s %-5s %12s %12s %8s %10s %10s %8s\n" round conns "ours req/s" "tokio req/s" ratio "ours p99" "tokio p99" ratio
for r in $(seq "$rounds"); do
  for c in $conns; do
    if (( r % 2 )); then
      read -r o_rps o_p99 < <(load $ours_addr "$c")
      read -r t_rps t_p99 < <(load $tokio_addr "$c")
    else
      read -r t_rps t_p99 < <(load $tokio_addr "$c")
      read -r o_rps o_p99 < <(load $ours_addr "$c")
    fi
    rr=$(awk -v o="$o_rps" -v t="$t_rps" 'BEGIN { printf "%.3f", (t > 0 ? o / t : 0) }')
    pr=$(awk -v o="$o_p99" -v t="$t_p99" 'BEGIN { printf "%.3f", (o > 0 ? t / o : 0) }')
    printf "%-5s %-5s %12.0f %12.0f %8s %8.0fus %8.0fus %8s\n" "$r" "$c" "$o_rps" "$t_rps" "$rr" "$o_p99" "$t_p99" "$pr"
    echo "$c $rr $pr" >>"$out/ratios"
  done
done
echo
echo "medians of the per-round ratios (requests/s ours/tokio, p99 tokio/ours; > 1: ours better):"
for c in $conns; do
  rps=$(awk -v c="$c" '$1 == c { print $2 }' "$out/ratios" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
  p99=$(awk -v c="$c" '$1 == c { print $3 }' "$out/ratios" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
  echo "  -c$c: requests/s x$rps, p99 x$p99"
done
