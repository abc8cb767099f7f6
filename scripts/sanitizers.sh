#!/usr/bin/env bash
# The test suite under AddressSanitizer, ThreadSanitizer and valgrind.
#
# Usage: scripts/sanitizers.sh [asan|tsan|valgrind ...]   (default: all three)
#
# asan, tsan: need a nightly toolchain (-Zsanitizer). tsan also rebuilds the
#   standard library instrumented (-Zbuild-std), which needs the nightly's
#   rust-src component; without it the tsan pass is skipped with a note.
# valgrind: memcheck on the test binaries, one at a time (apt-get install
#   valgrind).
# Each pass has its own target directory under target/sanitizers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
host=$(rustc -vV | awk '/^host/ {print $2}')
passes=${*:-asan tsan valgrind}
failed=()

asan() {
  echo "== AddressSanitizer"
  # tests/io_closed_fd.rs leaks one handle on purpose (its fd number is
  # closed under it; dropping it could close someone else's).
  local supp
  supp=$(mktemp)
  echo "leak:io_closed_fd::" >"$supp"
  RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
    ASAN_OPTIONS="detect_leaks=1" LSAN_OPTIONS="suppressions=$supp" \
    CARGO_TARGET_DIR=target/sanitizers/asan \
    cargo +nightly test --no-fail-fast --target "$host" --lib --tests
  local r=$?
  rm -f "$supp"
  return $r
}

tsan() {
  echo "== ThreadSanitizer"
  if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "skipped: the nightly toolchain has no rust-src (rustup component add rust-src --toolchain nightly)"
    return 0
  fi
  RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" \
    TSAN_OPTIONS="halt_on_error=1" CARGO_TARGET_DIR=target/sanitizers/tsan \
    cargo +nightly test --no-fail-fast -Zbuild-std --target "$host" --lib --tests
}

valgrind_pass() {
  echo "== valgrind (memcheck)"
  command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; return 1; }
  local dir=target/sanitizers/valgrind
  local bins
  bins=$(CARGO_TARGET_DIR=$dir cargo test --no-run --lib --tests --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
  for b in $bins; do
    echo "-- $(basename "$b")"
    valgrind -q --error-exitcode=99 --leak-check=no --trace-children=no "$b" --test-threads=2 -q
  done
}

for p in $passes; do
  case $p in
    asan) asan || failed+=(asan) ;;
    tsan) tsan || failed+=(tsan) ;;
    valgrind) valgrind_pass || failed+=(valgrind) ;;
    *) echo "unknown pass $p (asan, tsan, valgrind)" >&2; exit 2 ;;
  esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "all passes clean: $passes"
