#!/usr/bin/env python3
"""Prints README's performance tables from criterion's results.

Run the benches first (`cargo bench --bench pack --bench codec --bench format
-- --noplot`), then `python3 scripts/bench-tables.py`. Figures are criterion's
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


main()
