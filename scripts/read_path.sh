#!/usr/bin/env bash
# The source files the path of one stream read runs code in, on each Linux
# driver: examples/trace_one_read (one read on a TCP socket, from
# `Handle::read` to its callback, on a pool of one worker) under gdb, with
# a breakpoint on the entry of every function of the crate, armed between
# its markers `trace_begin` and `trace_end`. A debug build, so only what
# the compiler inlines even there is not seen (`#[inline(always)]`).
#
# Usage: [LOG=DIR] scripts/read_path.sh [DRIVERS]   (default "io_uring epoll")
# Prints, per driver, each file with the number of function entries seen
# in it, and the count of the crate's files (the standard library's apart).
# Needs gdb and nm (binutils).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
drivers=${1:-io_uring epoll}
cargo build -q --example trace_one_read
bin=target/debug/examples/trace_one_read
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Every function of the crate (drop glue apart: it has no source line),
# by its address in the file; gdb adds the load address at run time.
paste -d'|' <(nm --defined-only "$bin") <(nm -C --defined-only "$bin") |
  awk -F'|' '$2 ~ /iocompletion::/ && $2 !~ /drop_in_place/ {split($1, a, " "); if (a[2] ~ /^[tT]$/) print a[1]}' \
  > "$out/addrs"
marker=$(nm --defined-only "$bin" | awk '$3 == "trace_begin" {print $1}')

cat > "$out/trace.gdb" <<GDB
set pagination off
set confirm off
set print thread-events off
set print frame-arguments none
set print frame-info location
break trace_begin
run
python
b = gdb.selected_frame().block()
while b.function is None:
    b = b.superblock
base = b.start - 0x$marker
for line in open("$out/addrs"):
    bp = gdb.Breakpoint("*%d" % (int(line, 16) + base))
    bp.silent = True
    bp.commands = 'printf "HIT %d ", \$_thread\nframe\ncontinue'
end
break trace_end
continue
kill
quit
GDB

for d in $drivers; do
  IOCOMPLETION_DRIVER=$d gdb -q -batch -x "$out/trace.gdb" "$bin" > "$out/$d.log" 2>&1 || true
  grep -q "^HIT" "$out/$d.log" || { echo "$d: no function entry seen; gdb said:"; tail -5 "$out/$d.log"; exit 1; }
  echo "== $d: $(grep -m1 -o 'kind: [A-Za-z]*' "$out/$d.log")"
  # A file of the standard library (an inlined thread-local access, …)
  # is shown as "(std) PATH", one of the crate from its src/.
  grep "^HIT" "$out/$d.log" | sed -E 's/.* at ([^:]+):[0-9]+$/\1/; s#^/rustc/[^/]*/#(std) #; s#^/.*/(src/)#\1#' |
    sort | uniq -c | sort -rn > "$out/$d.files"
  cat "$out/$d.files"
  echo "$d: $(grep -vc '(std)' "$out/$d.files") files of the crate"
  # LOG=DIR keeps each function entry, in order, with its thread.
  if [ -n "${LOG:-}" ]; then grep "^HIT" "$out/$d.log" > "$LOG/read_path.$d.log"; fi
done
