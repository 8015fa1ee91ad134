#!/usr/bin/env python3
"""Reference outputs of the ONNX models the tests run, by onnxruntime.

Run by scripts/fetch-models.sh inside its venv (pinned onnxruntime); writes,
for each model, fixed inputs and onnxruntime's outputs as .npy files under
<cache>/reference/<model>/, and a SHA256SUMS file over them. The inputs are
generated from fixed seeds, so the files are the same on every machine up to
onnxruntime's own floating-point differences, which the tests' tolerances
cover. With --time, also prints onnxruntime's single-threaded median time per
inference (milliseconds) for benches/models.rs's comparison.
"""
import hashlib
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

CACHE = os.path.expanduser(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "~/.cache/lsqr-models")

# name -> (model path, {input: (shape, generator)})
def magika_bytes(rng, shape):
    # Byte values 0..255 and the padding token 256, as Magika's features.
    return rng.integers(0, 257, size=shape, dtype=np.int32)

def text_image(rng, shape):
    """Lines of dark text on a light, noisy background (the models see text,
    not noise: on noise the detector's map is all but zero)."""
    from PIL import Image, ImageDraw, ImageFont

    n, _, h, w = shape
    out = []
    for _ in range(n):
        bg = tuple(int(v) for v in rng.integers(190, 256, size=3))
        img = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(img)
        words = ["LSQR", "runtime", "2026", "quantize", "ONNX", "edge", "hello", "model"]
        y = int(rng.integers(0, max(1, h // 8)))
        while y < h - 8:
            size = int(rng.integers(max(8, h // 12), max(9, h // 4) + 1))
            font = ImageFont.load_default(size=size)
            x = int(rng.integers(0, max(1, w // 6)))
            text = " ".join(words[int(i)] for i in rng.integers(0, len(words), size=4))
            ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
            draw.text((x, y), text, fill=ink, font=font)
            y += size + int(rng.integers(2, size + 2))
        a = np.asarray(img, dtype=np.float32) / 255.0
        a = a + rng.normal(0, 0.02, size=a.shape).astype(np.float32)
        out.append(a.transpose(2, 0, 1))
    return np.stack(out)


def cls_rec_image(rng, shape):
    # PP-OCR cls/rec preprocessing: (x / 255 - 0.5) / 0.5.
    return ((text_image(rng, shape) - 0.5) / 0.5).astype(np.float32)


def det_image(rng, shape):
    # PP-OCR det preprocessing: ImageNet mean and std.
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return ((text_image(rng, shape) - mean) / std).astype(np.float32)

MODELS = {
    "magika": ("magika/model.onnx", {"bytes": ((4, 2048), magika_bytes)}),
    "ppocr-cls": ("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": ((1, 3, 48, 192), cls_rec_image)}),
    "ppocr-det": ("ppocr/ch_PP-OCRv4_det_infer.onnx", {"x": ((1, 3, 320, 320), det_image)}),
    "ppocr-rec": ("ppocr/ch_PP-OCRv4_rec_infer.onnx", {"x": ((1, 3, 48, 320), cls_rec_image)}),
}


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    timing = "--time" in sys.argv
    out_root = os.path.join(CACHE, "reference")
    times = {}
    for name, (rel, inputs) in MODELS.items():
        rng = np.random.default_rng(20261130)
        sess = session(os.path.join(CACHE, rel))
        feeds = {k: gen(rng, shape) for k, (shape, gen) in inputs.items()}
        outs = sess.run(None, feeds)
        d = os.path.join(out_root, name)
        os.makedirs(d, exist_ok=True)
        files = []
        for k, v in feeds.items():
            np.save(os.path.join(d, f"input.{k}.npy"), v)
            files.append(f"input.{k}.npy")
        for o, v in zip(sess.get_outputs(), outs):
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in o.name)
            np.save(os.path.join(d, f"output.{safe}.npy"), v.astype(np.float32))
            files.append(f"output.{safe}.npy")
        with open(os.path.join(d, "SHA256SUMS"), "w") as f:
            for fn in sorted(files):
                h = hashlib.sha256(open(os.path.join(d, fn), "rb").read()).hexdigest()
                f.write(f"{h}  {fn}\n")
        if timing:
            sess.run(None, feeds)
            ts = []
            for _ in range(20):
                t = time.perf_counter()
                sess.run(None, feeds)
                ts.append((time.perf_counter() - t) * 1e3)
            times[name] = float(np.median(ts))
    if timing:
        print(json.dumps({"onnxruntime": ort.__version__, "median_ms": times}))


if __name__ == "__main__":
    main()
