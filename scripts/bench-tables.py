#!/usr/bin/env python3
"""Prints README's performance tables from criterion's results.

Run the benches first (`cargo bench --bench pack --bench codec --bench format
--bench kernels -- --noplot`), then `python3 scripts/bench-tables.py`. Figures are criterion's
median estimates, read from target/criterion/*/new/{benchmark,estimates}.json.
"""
import json
import os
import sys

root = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")


def load():
    out = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        ns = est["median"]["point_estimate"]
        tp = bench.get("throughput") or {}
        per_s = None
        if "Elements" in tp:
            per_s = tp["Elements"] / ns * 1e9
        elif "Bytes" in tp:
            per_s = tp["Bytes"] / ns * 1e9
        out[bench["full_id"]] = (ns, per_s)
    return out


def main():
    r = load()
    if not r:
        sys.exit("no criterion results under target/criterion; run the benches first")

    def rate(key, scale):
        v = r.get(key)
        return f"{v[1] / scale:.2f}" if v and v[1] else "-"

    if "memcpy_u16/copy" in r:
        base = r["memcpy_u16/copy"][1]
        print(f"pack/unpack, 2^20 codes, G codes/s (memcpy of the u16 codes: {base / 1e9:.2f} G codes/s)\n")
        print("| C | unpack | pack | unpack (portable) | pack (portable) | unpack / memcpy |")
        print("|---:|---:|---:|---:|---:|---:|")
        for w in range(1, 17):
            u = r.get(f"unpack/{w}")
            ratio = f"{u[1] / base:.2f}" if u else "-"
            print(f"| {w} | {rate(f'unpack/{w}', 1e9)} | {rate(f'pack/{w}', 1e9)} | "
                  f"{rate(f'unpack_scalar/{w}', 1e9)} | {rate(f'pack_scalar/{w}', 1e9)} | {ratio} |")
        print()
    if "codec/memcpy_f32" in r:
        base = r["codec/memcpy_f32"][1]
        print(f"quantize (encode) and dequantize (decode), 16 M elements, groups of 64, M elements/s "
              f"(memcpy of the f32 tensor: {base / 1e6:.0f} M elements/s)\n")
        print("| codec | encode C=4 | encode C=8 | decode C=4 | decode C=8 |")
        print("|---|---:|---:|---:|---:|")
        for k in ["seed", "log", "uniform", "nf", "fp", "lut"]:
            cells = [rate(f"codec/{op}/{k}/C{c}", 1e6) for op in ("encode", "decode") for c in (4, 8)]
            print(f"| {k} | " + " | ".join(cells) + " |")
        print()
    opens = [(k, v) for k, v in r.items() if k.startswith("open_and_list/")]
    if opens:
        print("| benchmark | median | throughput |")
        print("|---|---:|---:|")
        for k, (ns, per_s) in sorted(opens) + sorted((k, v) for k, v in r.items() if k.startswith("write_256MiB/")):
            t = f"{ns / 1e3:.0f} µs" if ns < 1e6 else f"{ns / 1e6:.0f} ms"
            thr = f"{per_s / 2**20:.0f} MiB/s" if per_s else "-"
            print(f"| {k} | {t} | {thr} |")

    kernels(r)
    gemm_tables(r)


def kernels(r):
    """Tables of benches/kernels.rs: batch-1 linear, dequantize."""
    for shape in ("4096x4096", "11008x4096", "4096x11008"):
        g = f"linear_b1_{shape}"
        nd, loop = r.get(f"{g}/f32_ndarray_dot"), r.get(f"{g}/f32_loop")
        if not nd:
            continue
        print(f"linear, batch 1, {shape} (out x in), `log` codec, groups of 64, weights out of cache. "
              f"f32 ndarray: {nd[0] / 1e6:.2f} ms, f32 loop: {loop[0] / 1e6:.2f} ms\n")
        avx2 = any(k.startswith(f"{g}/packed_log_avx2/") for k in r)
        extra = " AVX2 path |" if avx2 else ""
        print("| C | packed | exact path | vs ndarray | vs f32 loop | roofline (memcpy) | fraction of roofline | 2 threads |" + extra)
        print("|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if avx2 else ""))
        for c in range(2, 9):
            p = r.get(f"{g}/packed_log/C{c}")
            if not p:
                continue
            m = r.get(f"{g}/memcpy_packed/C{c}")
            exact = r.get(f"{g}/packed_log_exact/C{c}")
            exact_s = f"{exact[0] / 1e6:.2f} ms" if exact else "(same)"
            two = r.get(f"{g}/packed_log_2threads/C{c}")
            two_s = f"{p[0] / two[0]:.2f}x faster" if two else "-"
            read2 = r.get(f"{g}/read_packed_2threads/C{c}")
            if two and read2:
                two_s += f", {read2[0] / two[0]:.0%} of the 2-thread read roofline"
            a2 = r.get(f"{g}/packed_log_avx2/C{c}")
            a2_s = (f" {a2[0] / 1e6:.2f} ms |" if a2 else " - |") if avx2 else ""
            print(f"| {c} | {p[0] / 1e6:.2f} ms | {exact_s} | {nd[0] / p[0]:.2f}x | {loop[0] / p[0]:.2f}x | "
                  f"{m[0] / 1e6:.2f} ms | {m[0] / p[0]:.0%} | {two_s} |" + a2_s)
        read1, read2 = r.get(f"{g}/read_packed/C4"), r.get(f"{g}/read_packed_2threads/C4")
        if read1 and read2:
            print(f"\nRead-only roofline of the C = 4 weight (its bytes summed, cold): "
                  f"{read1[0] / 1e6:.2f} ms on one thread, {read2[0] / 1e6:.2f} ms on two.")
        print()
    g = "linear_hot_b1"
    shapes = [sh for sh in ("10x128", "128x784", "384x384", "1536x384") if f"{g}/{sh}/f32_loop" in r]
    if shapes:
        print("linear, batch 1, small weights kept in cache (µs, default path / exact path), `log` codec, "
              "groups of 64, one thread\n")
        print("| out x in | f32 loop | " + " | ".join(f"C={c}" for c in range(2, 9)) + " |")
        print("|---|---:|" + "---:|" * 7)
        for sh in shapes:
            cells = []
            for c in range(2, 9):
                a, e = r.get(f"{g}/{sh}/packed_log/C{c}"), r.get(f"{g}/{sh}/packed_log_exact/C{c}")
                cells.append(f"{a[0] / 1e3:.2f} / {e[0] / 1e3:.2f}" if a and e else "-")
            print(f"| {sh} | {r[f'{g}/{sh}/f32_loop'][0] / 1e3:.2f} | " + " | ".join(cells) + " |")
        print()
    g = "dequantize_4096x4096"
    if f"{g}/memcpy_f32" in r:
        base = r[f"{g}/memcpy_f32"][1]
        print(f"dequantize, 4096x4096 `log`, groups of 64, G elements/s "
              f"(memcpy of the f32 output: {base / 1e9:.2f} G elements/s)\n")
        print("| C | f32 | f16 | bf16 | f32 / memcpy |")
        print("|---:|---:|---:|---:|---:|")
        for c in (4, 8):
            f = r.get(f"{g}/f32/C{c}")
            ratio = f"{f[1] / base:.2f}" if f else "-"
            print(f"| {c} | {rate(r, f'{g}/f32/C{c}', 1e9)} | {rate(r, f'{g}/f16/C{c}', 1e9)} | "
                  f"{rate(r, f'{g}/bf16/C{c}', 1e9)} | {ratio} |")
        print()


def gemm_tables(r):
    """Tables of benches/kernels.rs: batch-N linear and conv2d."""
    g = "linear_batch"
    if f"{g}/f32_matrixmultiply_sgemm/64" in r:
        print("linear, batch 8 and 64, 4096x4096, `log` codec, groups of 64, warm (ms; ratio = "
              "baseline time / ours, above 1 is faster)\n")
        print("| batch | f32 ndarray | f32 matrixmultiply sgemm | packed C=4 (integer) | vs sgemm "
              "| C=4 exact (f32 GEMM) | packed C=8 | vs sgemm | C=4, 2 threads |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in (8, 64):
            nd, mm = r[f"{g}/f32_ndarray_dot/{b}"][0], r[f"{g}/f32_matrixmultiply_sgemm/{b}"][0]
            c4, c8 = r[f"{g}/packed_log_C4/{b}"][0], r[f"{g}/packed_log_C8/{b}"][0]
            exact = r.get(f"{g}/packed_log_C4_exact/{b}")
            exact_s = f"{exact[0] / 1e6:.2f} ms" if exact else "-"
            two = r.get(f"{g}/packed_log_C4_2threads/{b}")
            two_s = f"{two[0] / 1e6:.2f} ms ({c4 / two[0]:.2f}x)" if two else "-"
            print(f"| {b} | {nd / 1e6:.2f} ms | {mm / 1e6:.2f} ms | {c4 / 1e6:.2f} ms | {mm / c4:.2f}x | "
                  f"{exact_s} | {c8 / 1e6:.2f} ms | {mm / c8:.2f}x | {two_s} |")
        print()
    g = "linear_small"
    if f"{g}/384x384/packed_log_C4/16" in r:
        print("MiniLM's shapes, `log` C = 4, groups of 64, warm (µs; one thread)\n")
        print("| out x in | batch | f32 sgemm | packed C=4 (integer) | C=4 exact | integer vs exact "
              "| integer vs sgemm |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for shape in ("384x384", "1536x384", "384x1536"):
            for b in (16, 32, 64, 256):
                mm = r.get(f"{g}/{shape}/f32_matrixmultiply_sgemm/{b}")
                c4 = r.get(f"{g}/{shape}/packed_log_C4/{b}")
                ex = r.get(f"{g}/{shape}/packed_log_C4_exact/{b}")
                if not (mm and c4 and ex):
                    continue
                mm, c4, ex = mm[0] / 1e3, c4[0] / 1e3, ex[0] / 1e3
                # Above batch 64 the default is the exact path (INT_MAX_BATCH).
                ours, vs_exact = (f"{c4:.0f}", f"{ex / c4:.2f}x") if b <= 64 else (f"{c4:.0f} (exact)", "-")
                print(f"| {shape.replace('x', ' x ')} | {b} | {mm:.0f} | {ours} | {ex:.0f} | "
                      f"{vs_exact} | {mm / c4:.2f}x |")
        print()
    g = "conv2d"
    if f"{g}/3x3_64_56/f32_im2col_sgemm" in r:
        print("conv2d, n = 1, 56x56, pad 1, `log` C = 4, groups of 64 (ms; ratio = baseline / ours)\n")
        print("| case | f32 im2col + sgemm | packed C=4 | vs im2col + sgemm | other |")
        print("|---|---:|---:|---:|---|")
        base = r[f"{g}/3x3_64_56/f32_im2col_sgemm"][0]
        ours = r[f"{g}/3x3_64_56/packed_log_C4"][0]
        two = r.get(f"{g}/3x3_64_56/packed_log_C4_2threads")
        other = f"2 threads: {two[0] / 1e6:.2f} ms ({ours / two[0]:.2f}x)" if two else ""
        print(f"| 3x3, 64 -> 64 | {base / 1e6:.2f} ms | {ours / 1e6:.2f} ms | {base / ours:.2f}x | {other} |")
        base = r[f"{g}/dw3x3_256_56/f32_im2col_sgemm"][0]
        ours = r[f"{g}/dw3x3_256_56/packed_log_C4"][0]
        direct = r.get(f"{g}/dw3x3_256_56/f32_direct_loop")
        other = f"f32 direct loop: {direct[0] / 1e6:.2f} ms ({direct[0] / ours:.2f}x)" if direct else ""
        print(f"| depthwise 3x3, 256 | {base / 1e6:.2f} ms | {ours / 1e6:.2f} ms | {base / ours:.2f}x | {other} |")
        print()


def rate(r, key, scale):
    v = r.get(key)
    return f"{v[1] / scale:.2f}" if v and v[1] else "-"


main()
