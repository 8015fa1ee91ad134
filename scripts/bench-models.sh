#!/usr/bin/env bash
# Whole-model speed, single-threaded, batch 1: onnxruntime against LSQR's
# runtime with f32, C = 4 and C = 8 weights (benches/models.rs), measured
# in the same run, then one table:
#   model | onnxruntime ms | ours f32 / C=4 / C=8 ms | f32 / ort | C=4 / f32
# The issue's targets: f32 / ort <= 1.25 (>= 0.8x onnxruntime's speed) and
# C=4 / f32 <= 1.
#
# Needs scripts/fetch-models.sh's cache ($LSQR_MODELS or ~/.cache/lsqr-models)
# with its onnxruntime venv. Usage: scripts/bench-models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${LSQR_MODELS:-$HOME/.cache/lsqr-models}
PY=${ORT_PYTHON:-$MODELS/ort-venv/bin/python}
TARGET=${CARGO_TARGET_DIR:-target}
export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1

cargo build --release -q -p lsqr-cli
# Median per run, in ns, under target/criterion/models/<model>/<variant>.
rm -rf "$TARGET/criterion/models"
cargo bench -q --bench models -- --noplot >&2

ORT_JSON=$("$PY" - "$MODELS" <<'PY'
import json, os, sys, time
import numpy as np
import onnxruntime as ort
root = sys.argv[1]
models = {
    "magika": ("magika/model.onnx", "magika", "bytes"),
    "ppocr-cls": ("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "ppocr-cls", "x"),
    "ppocr-det": ("ppocr/ch_PP-OCRv4_det_infer.onnx", "ppocr-det", "x"),
    "ppocr-rec": ("ppocr/ch_PP-OCRv4_rec_infer.onnx", "ppocr-rec", "x"),
}
out = {}
for name, (rel, ref, inp) in models.items():
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        continue
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    # Batch 1, the inputs the bench uses (Magika's first row).
    x = np.load(os.path.join(root, "reference", ref, f"input.{inp}.npy"))[:1]
    feeds = {inp: x}
    for _ in range(3):
        sess.run(None, feeds)
    ts = []
    for _ in range(30):
        t = time.perf_counter()
        sess.run(None, feeds)
        ts.append((time.perf_counter() - t) * 1e3)
    out[name] = float(np.median(ts))
print(json.dumps({"version": ort.__version__, "ms": out}))
PY
)

"$PY" - "$TARGET/criterion/models" "$ORT_JSON" <<'PY'
import json, os, sys
root, ort = sys.argv[1], json.loads(sys.argv[2])
def ours(model, variant):
    p = os.path.join(root, model, variant, "new", "estimates.json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["median"]["point_estimate"] / 1e6
fmt = lambda v: "-" if v is None else f"{v:.2f}"
print(f"single thread, batch 1; onnxruntime {ort['version']}")
print(f"| model | onnxruntime ms | f32 ms | C=4 ms | C=8 ms | f32 / ort | C=4 / f32 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for m in ["magika", "ppocr-cls", "ppocr-det", "ppocr-rec"]:
    o = ort["ms"].get(m)
    f, c4, c8 = (ours(m, v) for v in ("f32", "c4", "c8"))
    r1 = f / o if f and o else None
    r2 = c4 / f if c4 and f else None
    print(f"| {m} | {fmt(o)} | {fmt(f)} | {fmt(c4)} | {fmt(c8)} | {fmt(r1)} | {fmt(r2)} |")
PY
