#!/usr/bin/env bash
# Usage: scripts/check-simd-coverage.sh LOGFILE
#
# LOGFILE is the combined stdout + stderr of `cargo test --workspace`. Each
# test binary that compares SIMD paths with the portable one writes a line
#
#   lsqr-simd: CRATE (SUITE): checked NAME[FEATURES] ...; skipped: none
#   lsqr-simd: CRATE (SUITE): checked portable[]; skipped: avx2[avx2](missing avx2)
#
# (see `paths::for_each_simd_path` in lsqr-pack, lsqr-codec, lsqr-kernels).
# This script fails, naming crate, suite, path and features, when this
# CPU (/proc/cpuinfo flags) has every feature of a path that a report line
# does not list as checked, or when a SIMD crate wrote no report at all.
set -euo pipefail

log=${1:?usage: $0 LOGFILE}
[ -r "$log" ] || { echo "check-simd-coverage: cannot read $log" >&2; exit 2; }

crates="lsqr-pack lsqr-codec lsqr-kernels"

# CPU feature names, normalised as the reports' are: lower case, without
# '_' and '.' (cpuinfo's avx512_vnni is Rust's avx512vnni, sse4_1 sse4.1).
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2 || true)
norm() { tr 'A-Z' 'a-z' | tr -d '_.'; }
cpu=" $(printf '%s' "$flags" | norm | tr -s ' \t' '  ') "
has() { case "$cpu" in *" $(printf '%s' "$1" | norm) "*) return 0 ;; *) return 1 ;; esac; }

reports=$(grep -ao 'lsqr-simd: [A-Za-z0-9_-]* ([^)]*): checked[^;]*; skipped:.*' "$log" || true)

status=0
for c in $crates; do
  if ! printf '%s\n' "$reports" | grep -q "^lsqr-simd: $c ("; then
    echo "check-simd-coverage: FAIL: no 'lsqr-simd: $c' report in $log (its SIMD tests did not run?)"
    status=1
  fi
done

n=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  n=$((n + 1))
  crate=$(printf '%s' "$line" | sed -E 's/^lsqr-simd: ([^ ]+) .*/\1/')
  suite=$(printf '%s' "$line" | sed -E 's/^lsqr-simd: [^ ]+ \(([^)]*)\).*/\1/')
  checked=$(printf '%s' "$line" | sed -E 's/.*: checked([^;]*); skipped:.*/\1/')
  skipped=$(printf '%s' "$line" | sed -E 's/.*; skipped:(.*)/\1/')
  checked_names=" $(printf '%s' "$checked" | grep -o '[^][ ]*\[' | tr -d '[' | tr '\n' ' ') "
  # Every path named in the line, checked or skipped, with its features.
  for entry in $(printf '%s %s' "$checked" "$skipped" | grep -o '[^][ ()]*\[[^]]*\]'); do
    name=${entry%%[*}
    feats=${entry#*[}
    feats=${feats%]}
    runnable=1
    missing=
    for f in ${feats//,/ }; do
      if ! has "$f"; then runnable=0; missing=$f; break; fi
    done
    case "$checked_names" in
      *" $name "*) ;;
      *)
        if [ "$runnable" = 1 ]; then
          echo "check-simd-coverage: FAIL: $crate ($suite): path $name needs [${feats}], which this CPU has, but it was not checked"
          status=1
        else
          echo "check-simd-coverage: $crate ($suite): $name skipped (this CPU lacks $missing)"
        fi
        ;;
    esac
  done
done <<< "$reports"

if [ "$status" = 0 ]; then
  echo "check-simd-coverage: ok: $n report lines; every path this CPU can run was checked"
  printf '%s\n' "$reports" | sort -u
fi
exit "$status"
