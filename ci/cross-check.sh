#!/usr/bin/env bash
# Type-check the crate (lib, tests, examples, benches) for macOS and FreeBSD from a
# Debian host. Nothing is linked or run; this catches cfg and API mistakes.
#
# Usage: ci/cross-check.sh [-C CRATE_DIR] [TARGET...]
#   CRATE_DIR  crate to check (default: the repository holding this script)
#   TARGET     default: x86_64-apple-darwin x86_64-unknown-freebsd
set -euo pipefail

crate=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == -C ]]; then crate=$(cd "${2:?-C needs a directory}" && pwd); shift 2; fi
targets=("$@")
((${#targets[@]})) || targets=(x86_64-apple-darwin x86_64-unknown-freebsd)

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
