#!/usr/bin/env bash
# Type-check the crate (lib, tests, examples, benches) for macOS and FreeBSD from a
# Debian host. Nothing is linked or run; this catches cfg and API mistakes.
#
# Usage: ci/cross-check.sh [-C CRATE_DIR] [TARGET...]
#   CRATE_DIR  crate to check (default: the repository holding this script)
#   TARGET     default: x86_64-apple-darwin x86_64-unknown-freebsd, then
#              wasm32-unknown-unknown, a target with no backend, whose build
#              must stop with the crate's one message and no other error
set -euo pipefail

crate=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == -C ]]; then crate=$(cd "${2:?-C needs a directory}" && pwd); shift 2; fi
targets=("$@")
defaults=0
((${#targets[@]})) || { targets=(x86_64-apple-darwin x86_64-unknown-freebsd); defaults=1; }

# Debian's Rust ships std source, so -Zbuild-std can build std for any target.
pkgs=(rustc-web cargo-web rust-web-src)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# Debian's cargo/rustc ahead of any rustup toolchain; RUSTC_BOOTSTRAP lets
# the stable compiler take -Zbuild-std.
export PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1
unset RUSTC RUSTDOC RUSTUP_TOOLCHAIN
export CARGO_TARGET_DIR=$crate/target/cross    # apart from the host build

cd "$crate"
for t in "${targets[@]}"; do
  echo "== check $t"
  cargo check -Zbuild-std --target "$t" --lib --tests --examples --benches
done

if ((defaults)); then
  t=wasm32-unknown-unknown
  echo "== check $t (no backend: the crate's one error expected)"
  if log=$(cargo check -Zbuild-std --target "$t" --lib 2>&1); then
    echo "$t built: the shell backend's compile_error! is gone"
    exit 1
  fi
  # Our error, then cargo's "could not compile": nothing else, no warning.
  if ! grep -q '^error: iocompletion has no backend for this target' <<<"$log" ||
    [[ $(grep -c '^error' <<<"$log") -ne 2 ]] || grep -q '^warning' <<<"$log"; then
    printf '%s\n' "$log"
    echo "$t: expected the crate's one error and nothing else"
    exit 1
  fi
  grep '^error: iocompletion' <<<"$log"
fi
