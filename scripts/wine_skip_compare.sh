#!/usr/bin/env bash
# W3-style echo under Wine: the Windows build of examples/echo_server with
# and without --skip-completion-port (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
# on every connection), driven by the Linux build of examples/echo_client,
# interleaved (A B, B A, ...). Prints, per round and as medians: round
# trips per second, the ratio with/without, and completions per round trip
# that came from the kernel's queue (the rest the crate delivered itself).
#
# Usage: scripts/wine_skip_compare.sh [ROUNDS] [CONNECTIONS] [BYTES] [SECONDS] [SERVER_FLAGS...]
# Defaults: 7 rounds, 64 connections, 64 bytes, 5 seconds. Needs what
# ci/windows.sh needs (it builds the Wine prefix); run that once first.
# Wine is not Windows: these are figures of the crate under Wine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-7} conns=${2:-64} size=${3:-64} secs=${4:-5}
shift $(($# < 4 ? $# : 4))
extra=("$@")

cargo build --quiet --release --example echo_client
(
  export PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1
  unset RUSTC RUSTDOC RUSTUP_TOOLCHAIN
  CARGO_TARGET_DIR=$PWD/target/windows cargo build --quiet --release --example echo_server \
    --target x86_64-pc-windows-gnu -Zbuild-std
)
export PATH=/usr/bin:$PATH WINEDEBUG=${WINEDEBUG:--all} WINEPREFIX=$PWD/target/wine-prefix
export WINEDLLOVERRIDES="mscoree,mshtml="
server=target/windows/x86_64-pc-windows-gnu/release/examples/echo_server.exe
client=target/release/examples/echo_client
[[ -d $WINEPREFIX ]] || { echo "no Wine prefix: run ci/windows.sh test once" >&2; exit 1; }
/usr/lib/wine/wineserver -p 2>/dev/null || true  # one server for all runs (may be up already)
trap '/usr/lib/wine/wineserver -k 2>/dev/null || true' EXIT
addr=127.0.0.1:7979
log=$(mktemp -p target wine-skip.XXXXXX)
results=$(mktemp -p target wine-skip.XXXXXX)

# One run: prints "MODE RATE ROUND_TRIPS COMPLETIONS DIRECT".
one() {
  local mode=$1 flags=("${extra[@]}")
  [[ $mode == skip ]] && flags+=(--skip-completion-port)
  /usr/lib/wine/wine64 "$server" "$addr" 2 64 "${flags[@]}" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (: >/dev/tcp/${addr%:*}/${addr#*:}) 2>/dev/null && break; sleep 0.1; done
  local out
  out=$("$client" "$addr" "$conns" "$size" "$secs")
  # The server prints its counters every 5 s: wait for a line after every
  # connection closed, so that its counts are final.
  for _ in $(seq 200); do grep -q ' 0 open' "$log" && break; sleep 0.1; done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local line rt rate completions direct
  line=$(grep ' 0 open' "$log" | tail -1)
  rt=$(sed -n 's/^ *\([0-9]*\) round trips, \([0-9]*\) round trips\/s.*/\1/p' <<<"$out")
  rate=$(sed -n 's/^ *\([0-9]*\) round trips, \([0-9]*\) round trips\/s.*/\2/p' <<<"$out")
  completions=$(sed -n 's/.*completions \([0-9]*\) (\([0-9]*\) without.*/\1/p' <<<"$line")
  direct=$(sed -n 's/.*completions \([0-9]*\) (\([0-9]*\) without.*/\2/p' <<<"$line")
  echo "$mode $rate $rt $completions $direct"
}

for r in $(seq "$rounds"); do
  if ((r % 2)); then order=(plain skip); else order=(skip plain); fi
  for m in "${order[@]}"; do one "$m" | tee -a "$results"; done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {"plain": [], "skip": []}
for mode, rate, rt, comp, direct in rows:
    by[mode].append((int(rate), int(rt), int(comp), int(direct)))
def show(mode):
    v = by[mode]
    rates = [x[0] for x in v]
    kernel = [(c - d) / rt for _, rt, c, d in v]
    total = [c / rt for _, rt, c, _ in v]
    print(f"{mode:5}: {statistics.median(rates):.0f} round trips/s (min {min(rates)}, max {max(rates)}); "
          f"completions per round trip {statistics.median(total):.2f}, from the kernel's queue "
          f"{statistics.median(kernel):.3f}")
show("plain")
show("skip")
ratios = [s[0] / p[0] for p, s in zip(by["plain"], by["skip"])]
print(f"skip / plain, per round: {' '.join(f'{r:.2f}' for r in ratios)}; "
      f"median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
EOF
rm -f "$log" "$results"
