#!/usr/bin/env bash
# The test suite under AddressSanitizer, ThreadSanitizer and valgrind.
#
# Usage: scripts/sanitizers.sh [asan|tsan|valgrind ...]   (default: all three)
#
# asan: needs a nightly toolchain (-Zsanitizer).
# tsan: rebuilds the standard library instrumented (-Zbuild-std): with the
#   nightly's rust-src component when it is installed, else with Debian's
#   Rust and its std source and gcc's libtsan (apt-get, see tsan_debian).
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
  # closed under it; dropping it could close someone else's). The ring's
  # tests of a close that gives up on a request the kernel keeps leak that
  # request on purpose: a close past its bound never frees memory the
  # kernel may still write (S11, S17).
  local supp
  supp=$(mktemp)
  printf '%s\n' "leak:io_closed_fd::" "leak:gives_up_on_a_request_the_kernel_keeps" >"$supp"
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
  local flags="-Zsanitizer=thread"
  if rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    RUSTFLAGS="$flags" RUSTDOCFLAGS="$flags" TSAN_OPTIONS="halt_on_error=1" \
      CARGO_TARGET_DIR=target/sanitizers/tsan \
      cargo +nightly test --no-fail-fast -Zbuild-std --target "$host" --lib --tests
    return
  fi
  tsan_debian
}

# TSan without the nightly's rust-src: Debian's Rust (the packages
# ci/windows.sh uses) comes with the source of its own standard library, so
# -Zbuild-std builds std instrumented. Debian ships no TSan runtime for that
# compiler, so gcc's libtsan is loaded first (LD_PRELOAD through the test
# runner), with a shim for the three entry points that newer LLVM emits and
# gcc 12's runtime lacks (__tsan_memcpy, __tsan_memmove, __tsan_memset; each
# calls the libc function, which libtsan intercepts and checks).
tsan_debian() {
  local pkgs=(rustc-web cargo-web rust-web-src gcc libtsan2) missing=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
  local dir=$PWD/target/sanitizers/tsan-debian
  mkdir -p "$dir"
  cat >"$dir/shim.c" <<'C'
#include <string.h>
void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }
void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }
C
  gcc -O1 -fPIC -c "$dir/shim.c" -o "$dir/shim.o"
  ar rcs "$dir/libtsanshim.a" "$dir/shim.o"
  local libtsan
  libtsan=$(gcc -print-file-name=libtsan.so.2)
  [[ -f $libtsan ]] || libtsan=$(ls /usr/lib/x86_64-linux-gnu/libtsan.so.2)
  local runner="env LD_PRELOAD=$libtsan TSAN_OPTIONS=halt_on_error=1"
  (
    export PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1
    unset RUSTC RUSTDOC RUSTUP_TOOLCHAIN
    export RUSTFLAGS="-Zsanitizer=thread -Zexternal-clangrt -Zunstable-options -Csymbol-mangling-version=legacy -Clink-arg=-Wl,--no-as-needed,-ltsan,$dir/libtsanshim.a"
    export CARGO_TARGET_DIR=$dir
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$runner
    cargo test --no-fail-fast -Zbuild-std --target x86_64-unknown-linux-gnu --lib --tests
  )
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
