#!/usr/bin/env bash
# Batch-1 linear: LSQR's packed `log` kernel against candle-core's quantized
# matmul (Q4K, Q4_0, Q8_0), measured in the same run (peers/candle, its own
# Cargo workspace: the main workspace never builds candle), then a markdown
# table of criterion's medians.
#
#   scripts/bench-candle.sh [criterion filter]
#
# With MISTRALRS_FORCE_AVX2=1 (candle's switch) candle keeps to its AVX2
# tier and ours to our AVX2 kernel (single-thread entries): the pair an
# AVX2-only CPU runs, measured on this one.
#
# Two processes: candle's CPU pool is sized once per process from
# CANDLE_NUM_THREADS / RAYON_NUM_THREADS, so the single-thread figures (and
# all of ours) come from a run with RAYON_NUM_THREADS=1, and
# candle_q4k_2threads from a second one with CANDLE_NUM_THREADS=2 (the bench
# registers only that entry then). Criterion's results are read from
# ${CARGO_TARGET_DIR:-peers/candle/target}/criterion.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
peer="$root/peers/candle"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in
/*) ;;
*) target="$peer/$target" ;; # cargo resolves it from peers/candle
esac

cpu() {
    local model flags
    model="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    flags="$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2- | tr ' ' '\n' |
        grep -E '^(avx2|fma|avx512[a-z0-9_]*|avx_vnni|amx[a-z0-9_]*)$' | tr '\n' ' ')"
    echo "CPU: ${model:-unknown} ($(nproc) logical CPUs); flags: ${flags:-none of avx2/fma/avx512*/avx_vnni}"
    if [ "${MISTRALRS_FORCE_AVX2:-}" = 1 ]; then
        echo "MISTRALRS_FORCE_AVX2=1: candle's AVX2 tier and our AVX2 kernel (one thread)"
    fi
}

cpu
cd "$peer"
env -u CANDLE_NUM_THREADS RAYON_NUM_THREADS=1 cargo bench --bench vs_candle -- --noplot "$@"
RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=2 cargo bench --bench vs_candle -- --noplot "$@"

echo
cpu
echo
python3 - "$target/criterion" <<'EOF'
import json, os, sys

root = sys.argv[1]
r = {}
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        r[bench["full_id"]] = json.load(f)["median"]["point_estimate"]
if not r:
    sys.exit(f"no criterion results under {root}")


def ms(key):
    v = r.get(key)
    return f"{v / 1e6:.2f}" if v else "-"


print("Batch-1 linear, weights out of cache, median ms (criterion). Ours: `log` codec, groups of 64. "
      "vs candle = candle time / ours (above 1: we are faster), against Q4K for C <= 4 and Q8_0 for "
      "C >= 5; roofline = memcpy of our packed codes and f32 scales / ours. One thread unless said.\n")
print("| shape (out x in) | C | ours | candle Q4K | candle Q4_0 | candle Q8_0 | f32 ndarray | vs candle | "
      "fraction of roofline |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for shape in ("4096x4096", "11008x4096"):
    g = f"b1_{shape}"
    q4k, q40, q80 = (ms(f"{g}/candle_{k}") for k in ("q4k", "q4_0", "q8_0"))
    nd = ms(f"{g}/f32_ndarray_dot")
    for c in range(2, 9):
        ours = r.get(f"{g}/lsqr_log/C{c}")
        if not ours:
            continue
        name, peer = ("Q4K", r.get(f"{g}/candle_q4k")) if c <= 4 else ("Q8_0", r.get(f"{g}/candle_q8_0"))
        vs = f"{peer / ours:.2f}x {name}" if peer else "-"
        m = r.get(f"{g}/memcpy_packed/C{c}")
        roof = f"{m / ours:.0%}" if m else "-"
        print(f"| {shape} | {c} | {ours / 1e6:.2f} | {q4k} | {q40} | {q80} | {nd} | {vs} | {roof} |")
    ours2, peer2 = r.get(f"{g}/lsqr_log_2threads/C4"), r.get(f"{g}/candle_q4k_2threads")
    if ours2 or peer2:
        vs = f"{peer2 / ours2:.2f}x Q4K" if ours2 and peer2 else "-"
        o = f"{ours2 / 1e6:.2f}" if ours2 else "-"
        p = f"{peer2 / 1e6:.2f}" if peer2 else "-"
        print(f"| {shape} | 4, 2 threads | {o} | {p} | - | - | - | {vs} | - |")
EOF
