#!/usr/bin/env python3
"""Weight SNR of ggml's low-bit formats and of bitsandbytes' NF4 on the weights
LSQR measures itself on (all-MiniLM-L6-v2), so the README can put them beside
LSQR's figures.

    python3 scripts/peer-formats.py [--json out.json] [--c-reference]
                                    [--formats Q4_K,IQ4_XS,...] [--model PATH]

What it reproduces. numpy re-implementations of the *quantizers* (not only
the dequantizers) of llama.cpp's ggml-quants.c, as `llama-quantize` runs them
without an importance matrix (ggml_quantize_chunk with imatrix = NULL):
Q3_K, Q4_K, Q5_K, Q6_K (quantize_row_q*_K_ref: make_q3_quants,
make_qkx2_quants, make_qx_quants), IQ4_XS and IQ4_NL (quantize_iq4_xs /
quantize_iq4_nl, i.e. quantize_row_iq4_nl_impl with ntry = 7; not
quantize_row_iq4_nl_ref, whose ntry = -1 llama-quantize does not use), Q4_0, Q5_0,
Q5_1, Q8_0 (quantize_row_q*_ref); plus NF4 as bitsandbytes does it (blocks of
64, fp32 absmax, and with double quantization of the absmax: 8-bit dynamic
map, blocks of 256, fp32 second-level absmax and a per-tensor fp32 offset).
The code follows the C reference operation by operation in float32 (sums left
to right, ggml's nearest_int, fp16 round-to-nearest-even), and writes the
exact ggml block byte layouts. Checks: gguf-py's dequantize (an independent
implementation) of our bytes must equal our own dequantization bit for bit;
where gguf-py has a quantizer (Q4_0, Q5_0, Q5_1, Q8_0) its bytes must equal
ours; and with --c-reference the C quantizers themselves (ggml-base compiled
from the llama.cpp that the pinned llama-cpp-python sdist vendors) quantize
the same rows, and the bytes and SNR are compared. NF4 has no such outside
check here (bitsandbytes needs torch): its codes, unpacked from the stored
bytes, are compared with a literal re-run of bitsandbytes' default-backend
rule (argmin |x/absmax - code|), and the 8-bit dynamic map of the double
quantization is rebuilt by emulating torch.linspace's scalar float32 formula
(torch's vectorised path may differ by an ulp in a few entries; the SNR
cannot see that).

What it leaves out, deliberately. No importance matrix (imatrix): with one,
llama.cpp takes other code paths (quantize_row_q4_K_impl, make_qkx3_quants,
make_qp_quants, weighted IQ4 searches) that need calibration activations
and minimise an activation-weighted error rather than the plain weight error
measured here; none of that is run. Nor the mixed
recipes (Q4_K_M and the like give some tensors more bits): each row of the
table is one format for every matrix. Weight SNR only: no model outputs.

Tensor selection and blocks are LSQR's and ggml's: every floating-point tensor
with at least two dims larger than 1 (40 matrices, 22.7 M weights in MiniLM,
including the embeddings); rows are the first dim(s), blocks run along a row.
ggml's K and IQ4_XS formats need rows that are a multiple of 256; MiniLM's rows
are 384 or 1536 long, so 384-long rows are zero-padded to 512 here: "bpw
stored" counts the padding's storage, "bpw nominal" does not (the
reconstruction of the real weights is the same either way, since the padding
fills whole sub-blocks of its own). llama.cpp itself would instead fall back
to a 32-block type for such tensors; that mix is in the second table.

SNR: 10 log10(sum x^2 / sum (x - x_hat)^2) pooled over every element of every
selected tensor, in float64 (LSQR's "weighted SNR").

Setup: the script runs itself in a venv it makes once, $LSQR_MODELS/peer-venv
(default ~/.cache/lsqr-models/peer-venv) with numpy==1.26.4 and gguf==0.19.0;
the weights come from `bash scripts/fetch-models.sh`. --c-reference also needs
gcc and g++ and fetches llama-cpp-python's sdist (76 MB) from PyPI once.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PINS = "numpy==1.26.4 gguf==0.19.0"
CACHE = Path(os.environ.get("LSQR_MODELS", Path.home() / ".cache" / "lsqr-models"))
VENV = CACHE / "peer-venv"
DEFAULT_MODEL = CACHE / "minilm" / "model.safetensors"

# The C reference: ggml as vendored by this sdist (ggml 0.25.3).
LLAMA_CPP_PY = "llama-cpp-python==0.3.36"
LLAMA_CPP_PY_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CFLAGS = ["-O3", "-DNDEBUG", "-fPIC", "-D_GNU_SOURCE"]


def ensure_venv():
    """Re-runs this script in the pinned venv, making the venv first if needed."""
    py = VENV / "bin" / "python"
    pins_file = VENV / ".pins"
    pins_ok = py.exists() and pins_file.exists() and pins_file.read_text().strip() == PINS
    if pins_ok and Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not pins_ok:
        print(f"making {VENV} ({PINS})", file=sys.stderr)
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *PINS.split()], check=True)
        pins_file.write_text(PINS + "\n")
    os.execv(str(py), [str(py), os.path.abspath(__file__), *sys.argv[1:]])


if __name__ == "__main__":
    ensure_venv()

import numpy as np  # noqa: E402  (after the venv switch)

F32 = np.float32
QK_K = 256
GROUP_MAX_EPS = F32(1e-15)

# ggml-common.h: kvalues_iq4nl
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.int8)

# bitsandbytes: the NF4 table (bitsandbytes/backends/utils.py, functional.get_4bit_type)
NF4_TABLE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


# ----------------------------------------------------------------- helpers

def nearest_int(a):
    """ggml's nearest_int: (f + 12582912.f) read as bits; round half to even
    for |f| < 2^22, and the same bits as C for anything else."""
    a = np.asarray(a, dtype=F32)
    with np.errstate(invalid="ignore", over="ignore"):
        v = (a + F32(12582912.0)).view(np.int32)
    return (v & 0x007FFFFF) - 0x00400000


def seqsum(a):
    """float32 sum over the last axis, left to right, like C's `s += a[i]`."""
    return seqsum_t(np.ascontiguousarray(np.moveaxis(a, -1, 0)))


def seqsum_t(a):
    """The same over the first axis. The kernels below keep a block's
    elements along axis 0 (shape (elements, blocks)), so that every step of
    a left-to-right sum is one contiguous vector operation over all blocks."""
    out = a[0].copy()
    for j in range(1, a.shape[0]):
        out += a[j]
    return out


def fp16(a):
    """GGML_FP32_TO_FP16 (round to nearest even, as numpy)."""
    return np.asarray(a, dtype=F32).astype(np.float16)


def roundf(v):
    """C roundf: half away from zero, exactly (no +0.5 rounding trap)."""
    t = np.trunc(v)
    frac = v - t
    return t + np.sign(v) * (np.abs(frac) >= F32(0.5))


def first_absmax(x):
    """(amax, max) as ggml's `if (ax > amax) { amax = ax; max = x[i]; }` loop:
    the first element of largest magnitude, with its sign; over the last axis."""
    idx = np.argmax(np.abs(x), axis=-1)
    mx = np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]
    return np.abs(mx), mx


def first_absmax_t(xt):
    """first_absmax over axis 0 of an (elements, blocks) array."""
    idx = np.argmax(np.abs(xt), axis=0)
    mx = xt[idx, np.arange(xt.shape[1])]
    return np.abs(mx), mx


def f16_bytes(h):
    return h.astype(np.float16).reshape(-1, 1).view(np.uint8)


_KV = KVALUES_IQ4NL.astype(F32)
# how many kvalues are <= k, for k = -128..127: for integer table values,
# val <= x exactly when val <= floor(x), so this replaces the binary search
_KV_LE = np.array([int(np.sum(KVALUES_IQ4NL <= k)) for k in range(-128, 128)], dtype=np.intp)


def best_index_int8(al):
    """ggml-quants.c best_index_int8(16, kvalues_iq4nl, x): x <= val[0] -> 0,
    x >= val[15] -> 15, else the binary search's bracket [mu-1, mu] and
    `x - val[mu-1] < val[mu] - x ? mu-1 : mu` in float32 (NaN -> 15, as C)."""
    f = np.floor(al)
    f = np.minimum(np.where(f >= -128, f, F32(-128)), F32(127))
    mu = np.clip(_KV_LE[f.astype(np.intp) + 128], 1, 15)
    idx = np.where((al - _KV[mu - 1]) < (_KV[mu] - al), mu - 1, mu)
    idx = np.where(al <= _KV[0], 0, idx)
    idx = np.where((al >= _KV[15]) | (al != al), 15, idx)
    return idx.astype(np.uint8)


# ------------------------------------------------------------ K-quant core
# Inputs are (blocks, elements); inside, (elements, blocks).

def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep):
    """ggml make_qkx2_quants (use_mad = false), vectorised over blocks.
    Returns (scale, the_min, L)."""
    xt = np.ascontiguousarray(x.T)
    wt = np.ascontiguousarray(w.T)
    with np.errstate(all="ignore"):
        mn = xt.min(axis=0)
        mx = xt.max(axis=0)
        sum_w = seqsum_t(wt)
        sum_x = seqsum_t(wt * xt)
        mn = np.where(mn > 0, F32(0), mn)
        flat = mx == mn
        iscale = F32(nmax) / (mx - mn)
        scale = F32(1) / iscale
        L = np.clip(nearest_int(iscale * (xt - mn)), 0, nmax)
        diff = scale * L.astype(F32) + mn - xt
        best_error = seqsum_t(wt * (diff * diff))
        for step in range(nstep + 1):
            c = F32(F32(rmin) + F32(rdelta) * F32(step)) + F32(nmax)
            iscale = c / (mx - mn)   # min is the best fit so far, as in C
            Laux = np.clip(nearest_int(iscale * (xt - mn)), 0, nmax)
            Lf = Laux.astype(F32)
            wl = wt * Lf
            sum_l = seqsum_t(wl)
            sum_l2 = seqsum_t(wl * Lf)
            sum_xl = seqsum_t(wl * xt)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            diff = this_scale * Lf + this_min - xt
            cur = seqsum_t(wt * (diff * diff))
            upd = (D > 0) & (cur < best_error)
            L = np.where(upd, Laux, L)
            best_error = np.where(upd, cur, best_error)
            scale = np.where(upd, this_scale, scale)
            mn = np.where(upd, this_min, mn)
    L = np.where(flat, 0, L)
    scale = np.where(flat, F32(0), scale)
    return scale.astype(F32), (-mn).astype(F32), np.ascontiguousarray(L.T).astype(np.uint8)


def make_qx_quants(x, nmax):
    """ggml make_qx_quants with rmse_type = 1 and no quant weights (w = x*x)."""
    xt = np.ascontiguousarray(x.T)
    amax, mx = first_absmax_t(xt)
    zero = amax < GROUP_MAX_EPS
    wt = xt * xt
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / mx
        lv = np.clip(nearest_int(iscale * xt), -nmax, nmax - 1)
        lf = lv.astype(F32)
        sumlx = seqsum_t(wt * xt * lf)
        suml2 = seqsum_t(wt * lf * lf)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        L = lv + nmax
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = -(F32(nmax) + F32(0.1) * F32(step)) / mx
            lv = np.clip(nearest_int(iscale * xt), -nmax, nmax - 1)
            lf = lv.astype(F32)
            sumlx = seqsum_t(wt * xt * lf)
            suml2 = seqsum_t(wt * lf * lf)
            upd = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(upd, lv + nmax, L)
            scale = np.where(upd, sumlx / suml2, scale)
            best = np.where(upd, scale * sumlx, best)
    L = np.where(zero, 0, L)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), np.ascontiguousarray(L.T).astype(np.int32)


def make_q3_quants(x, nmax=4):
    """ggml make_q3_quants with do_rmse = true (weights x*x, 5 rounds of
    coordinate descent; a block whose round changed nothing would change
    nothing in later rounds either, so every block runs all 5)."""
    xt = np.ascontiguousarray(x.T)
    amax, mx = first_absmax_t(xt)
    zero = amax < GROUP_MAX_EPS
    wt = xt * xt
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / mx
        L = np.clip(nearest_int(iscale * xt), -nmax, nmax - 1).astype(np.int32)
        Lf = L.astype(F32)
        sumlx = seqsum_t(wt * xt * Lf)
        suml2 = seqsum_t(wt * Lf * Lf)
        for _ in range(5):
            for i in range(xt.shape[0]):
                wi, xi, li = wt[i], xt[i], L[i].astype(F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new_l = np.clip(nearest_int(xi * sl2 / slx), -nmax, nmax - 1)
                nl = new_l.astype(F32)
                slx2 = slx + wi * xi * nl
                sl22 = sl2 + wi * nl * nl
                acc = ((slx > 0) & (new_l != L[i]) & (sl22 > 0)
                       & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22))
                L[i] = np.where(acc, new_l, L[i])
                sumlx = np.where(acc, slx2, sumlx)
                suml2 = np.where(acc, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    L = np.where(zero, 0, L + nmax)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), np.ascontiguousarray(L.T).astype(np.int32)


# -------------------------------------------------------------- ggml types
# Each quantizer takes blocks X (N, block) float32 and returns
# (y, raw): y our dequantization (N, block) float32, raw the ggml block bytes
# (N, type_size) uint8.

def pack_k_scales(ls, lm):
    """Q4_K / Q5_K: eight 6-bit scales and mins in 12 bytes."""
    s = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    s[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return s


def quantize_qk_minmax(X, nmax, rmin, rdelta, nstep):
    """quantize_row_q4_K_ref / quantize_row_q5_K_ref up to the 5/4-bit codes."""
    B = X.shape[0]
    xs = X.reshape(B * 8, 32)
    sum_x2 = seqsum(xs * xs)
    av_x = np.sqrt(sum_x2 / F32(32))
    w = av_x[:, None] + np.abs(xs)
    scales, mins, Ls = make_qkx2_quants(xs, w, nmax, rmin, rdelta, nstep)
    scales = scales.reshape(B, 8)
    mins = mins.reshape(B, 8)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    d = fp16(max_scale / F32(63))
    dmin = fp16(max_min / F32(63))
    dsub = d.astype(F32)[:, None] * ls.astype(F32)
    msub = dmin.astype(F32)[:, None] * lm.astype(F32)
    xb = X.reshape(B, 8, 32)
    with np.errstate(all="ignore"):
        Lr = np.clip(nearest_int((xb + msub[:, :, None]) / dsub[:, :, None]), 0, nmax)
    L = np.where((dsub != 0)[:, :, None], Lr, Ls.reshape(B, 8, 32)).astype(np.uint8)
    y = dsub[:, :, None] * L.astype(F32) - msub[:, :, None]
    return d, dmin, ls, lm, L.reshape(B, 256), y.reshape(B, 256)


def q4_k(X):
    d, dmin, ls, lm, L, y = quantize_qk_minmax(X, 15, -1.0, 0.1, 20)
    Lr = L.reshape(-1, 4, 2, 32)
    qs = (Lr[:, :, 0, :] | (Lr[:, :, 1, :] << 4)).reshape(-1, 128)
    raw = np.concatenate([f16_bytes(d), f16_bytes(dmin), pack_k_scales(ls, lm), qs], axis=1)
    return y, raw


def q5_k(X):
    d, dmin, ls, lm, L, y = quantize_qk_minmax(X, 31, -0.5, 0.1, 15)
    Lr = L.reshape(-1, 4, 2, 32)
    hb = (Lr >> 4) & 1
    shifts = (2 * np.arange(4)[:, None] + np.arange(2)[None, :]).astype(np.uint8)
    qh = np.bitwise_or.reduce(hb << shifts[None, :, :, None], axis=(1, 2)).astype(np.uint8)
    ql = ((Lr[:, :, 0, :] & 0xF) | ((Lr[:, :, 1, :] & 0xF) << 4)).reshape(-1, 128)
    raw = np.concatenate([f16_bytes(d), f16_bytes(dmin), pack_k_scales(ls, lm), qh, ql], axis=1)
    return y, raw


def q6_k(X):
    """quantize_row_q6_K_ref."""
    B = X.shape[0]
    xs = X.reshape(B * 16, 16)
    scales, Ls = make_qx_quants(xs, 32)
    scales = scales.reshape(B, 16)
    max_abs, max_scale = first_absmax(scales)
    zero = max_abs < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-128) / max_scale
        d = fp16(F32(1) / iscale)
        sc = np.minimum(127, nearest_int(iscale[:, None] * scales))
    d = np.where(zero, np.float16(0), d)
    sc = np.where(zero[:, None], 0, sc).astype(np.int8)
    dsub = d.astype(F32)[:, None] * sc.astype(F32)
    xb = X.reshape(B, 16, 16)
    with np.errstate(all="ignore"):
        Lr = np.clip(nearest_int(xb / dsub[:, :, None]), -32, 31) + 32
    L = np.where((dsub != 0)[:, :, None], Lr, Ls.reshape(B, 16, 16))
    L = np.where(zero[:, None, None], 0, L).astype(np.uint8).reshape(B, 256)
    y = (dsub[:, :, None] * (L.reshape(B, 16, 16).astype(F32) - F32(32))).reshape(B, 256)
    Lh = L.reshape(B, 2, 4, 32)
    ql = np.concatenate([(Lh[:, :, 0] & 0xF) | ((Lh[:, :, 2] & 0xF) << 4),
                         (Lh[:, :, 1] & 0xF) | ((Lh[:, :, 3] & 0xF) << 4)], axis=2).reshape(B, 128)
    qh = ((Lh[:, :, 0] >> 4) | ((Lh[:, :, 1] >> 4) << 2) | ((Lh[:, :, 2] >> 4) << 4)
          | ((Lh[:, :, 3] >> 4) << 6)).reshape(B, 64)
    raw = np.concatenate([ql, qh, sc.view(np.uint8), f16_bytes(d)], axis=1)
    return y, raw


def q3_k(X):
    """quantize_row_q3_K_ref."""
    B = X.shape[0]
    xs = X.reshape(B * 16, 16)
    scales, Ls = make_q3_quants(xs, 4)
    scales = scales.reshape(B, 16)
    _, max_scale = first_absmax(scales)
    nz = max_scale != 0
    with np.errstate(all="ignore"):
        iscale = F32(-32) / max_scale
        lq = np.clip(nearest_int(iscale[:, None] * scales), -32, 31) + 32
        d = fp16(F32(1) / iscale)
    lq = np.where(nz[:, None], lq, 0).astype(np.uint8)   # memset(scales, 0) when max_scale == 0
    d = np.where(nz, d, np.float16(0))
    s = np.zeros((B, 12), dtype=np.uint8)
    s[:, 0:8] = (lq[:, 0:8] & 0xF) | ((lq[:, 8:16] & 0xF) << 4)
    hi = (lq >> 4).reshape(B, 4, 4)   # [j // 4, j % 4]
    s[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    sc = np.where(nz[:, None], lq.astype(np.int32), 0) - 32   # as decoded from the bytes
    dsub = d.astype(F32)[:, None] * sc.astype(F32)
    xb = X.reshape(B, 16, 16)
    with np.errstate(all="ignore"):
        Lr = np.clip(nearest_int(xb / dsub[:, :, None]), -4, 3) + 4
    L = np.where((dsub != 0)[:, :, None], Lr, Ls.reshape(B, 16, 16)).astype(np.uint8).reshape(B, 256)
    y = (dsub[:, :, None] * (L.reshape(B, 16, 16).astype(F32) - F32(4))).reshape(B, 256)
    high = (L > 3).astype(np.uint8).reshape(B, 8, 32)
    hmask = np.bitwise_or.reduce(high << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    low = (L & 3).reshape(B, 2, 4, 32)
    qs = (low[:, :, 0] | (low[:, :, 1] << 2) | (low[:, :, 2] << 4) | (low[:, :, 3] << 6)).reshape(B, 64)
    raw = np.concatenate([hmask.astype(np.uint8), qs, s, f16_bytes(d)], axis=1)
    return y, raw


def iq4_block_scales(xs, ntry=7):
    """The per-32-block scale search of quantize_row_iq4_nl_impl (no quant
    weights: w = x*x); blocks (M, 32) in, scales (M,) out."""
    xt = np.ascontiguousarray(xs.T)
    amax, mx = first_absmax_t(xt)
    zero = amax < GROUP_MAX_EPS
    wt = xt * xt
    with np.errstate(all="ignore"):
        d = -mx / _KV[0] if ntry > 0 else mx / _KV[0]
        q = _KV[best_index_int8((F32(1) / d) * xt)]
        sumqx = seqsum_t(wt * q * xt)
        sumq2 = seqsum_t(wt * q * q)
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
        best = d * sumqx
        for itry in range(-ntry, ntry + 1):
            ide = F32(itry + int(KVALUES_IQ4NL[0])) / mx
            q = _KV[best_index_int8(ide * xt)]
            sumqx = seqsum_t(wt * q * xt)
            sumq2 = seqsum_t(wt * q * q)
            upd = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(upd, sumqx / sumq2, d)
            best = np.where(upd, d * sumqx, best)
    return np.where(zero, F32(0), d).astype(F32)


def iq4_xs(X):
    """quantize_iq4_xs (super-block 256, blocks of 32, ntry 7)."""
    B = X.shape[0]
    xb = X.reshape(B, 8, 32)
    scales = iq4_block_scales(X.reshape(B * 8, 32)).reshape(B, 8)
    _, max_scale = first_absmax(scales)
    dsb = -max_scale / F32(32)
    dh = fp16(dsb)
    with np.errstate(all="ignore"):
        ide = np.where(dsb != 0, F32(1) / dsb, F32(0))
        lv = np.clip(nearest_int(ide[:, None] * scales), -32, 31)
        dl = dsb[:, None] * lv.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0))
    L = best_index_int8(idl[:, :, None] * xb)
    ls = (lv + 32).astype(np.uint8)
    scales_l = (ls[:, 0::2] & 0xF) | ((ls[:, 1::2] & 0xF) << 4)
    scales_h = np.bitwise_or.reduce((ls.astype(np.uint16) >> 4) << (2 * np.arange(8, dtype=np.uint16)),
                                    axis=1).astype("<u2")
    qs = (L[:, :, :16] | (L[:, :, 16:] << 4)).reshape(B, 128)
    y = ((dh.astype(F32)[:, None] * (ls.astype(F32) - F32(32)))[:, :, None]
         * KVALUES_IQ4NL.astype(F32)[L]).reshape(B, 256)
    raw = np.concatenate([f16_bytes(dh), scales_h.reshape(-1, 1).view(np.uint8), scales_l, qs], axis=1)
    return y, raw


def iq4_nl(X):
    """quantize_iq4_nl (blocks of 32, ntry 7)."""
    scale = iq4_block_scales(X)
    dh = fp16(scale)
    with np.errstate(divide="ignore"):
        ide = np.where(scale != 0, F32(1) / scale, F32(0))
    L = best_index_int8(ide[:, None] * X)
    y = dh.astype(F32)[:, None] * KVALUES_IQ4NL.astype(F32)[L]
    raw = np.concatenate([f16_bytes(dh), L[:, :16] | (L[:, 16:] << 4)], axis=1)
    return y, raw


def q4_0(X):
    """quantize_row_q4_0_ref."""
    _, mx = first_absmax(X)
    d = mx / F32(-8)
    with np.errstate(divide="ignore"):
        ide = np.where(d != 0, F32(1) / d, F32(0))
    xi = np.minimum(15, np.trunc(X * ide[:, None] + F32(8.5)).astype(np.int8)).astype(np.uint8)
    dh = fp16(d)
    y = (xi.astype(np.int32) - 8).astype(F32) * dh.astype(F32)[:, None]
    raw = np.concatenate([f16_bytes(dh), xi[:, :16] | (xi[:, 16:] << 4)], axis=1)
    return y, raw


def q5_bits(xi):
    qs = (xi[:, :16] & 0xF) | ((xi[:, 16:] & 0xF) << 4)
    hb = ((xi >> 4) & 1).astype(np.uint32)
    qh = np.bitwise_or.reduce(hb << np.arange(32, dtype=np.uint32), axis=1).astype("<u4")
    return qh.reshape(-1, 1).view(np.uint8), qs


def q5_0(X):
    """quantize_row_q5_0_ref (llama.cpp's fallback for Q4_K)."""
    _, mx = first_absmax(X)
    d = mx / F32(-16)
    with np.errstate(divide="ignore"):
        ide = np.where(d != 0, F32(1) / d, F32(0))
    xi = np.minimum(31, np.trunc(X * ide[:, None] + F32(16.5)).astype(np.int8)).astype(np.uint8)
    dh = fp16(d)
    y = (xi.astype(np.int32) - 16).astype(F32) * dh.astype(F32)[:, None]
    qh, qs = q5_bits(xi)
    return y, np.concatenate([f16_bytes(dh), qh, qs], axis=1)


def q5_1(X):
    """quantize_row_q5_1_ref (llama.cpp's fallback for Q5_K)."""
    mn = X.min(axis=1)
    mx = X.max(axis=1)
    d = (mx - mn) / F32(31)
    with np.errstate(divide="ignore"):
        ide = np.where(d != 0, F32(1) / d, F32(0))
    xi = np.trunc((X - mn[:, None]) * ide[:, None] + F32(0.5)).astype(np.uint8)
    dh, mh = fp16(d), fp16(mn)
    y = xi.astype(F32) * dh.astype(F32)[:, None] + mh.astype(F32)[:, None]
    qh, qs = q5_bits(xi)
    return y, np.concatenate([f16_bytes(dh), f16_bytes(mh), qh, qs], axis=1)


def q8_0(X):
    """quantize_row_q8_0_ref."""
    amax = np.abs(X).max(axis=1)
    d = amax / F32(127)
    with np.errstate(divide="ignore"):
        ide = np.where(d != 0, F32(1) / d, F32(0))
    qs = roundf(X * ide[:, None]).astype(np.int8)
    dh = fp16(d)
    y = qs.astype(F32) * dh.astype(F32)[:, None]
    return y, np.concatenate([f16_bytes(dh), qs.view(np.uint8)], axis=1)


# name: (quantizer, block size, bytes per block, llama-quantize fallback for rows not a multiple of 256)
GGML_FORMATS = {
    "Q3_K": (q3_k, 256, 110, "Q4_0"),
    "IQ4_XS": (iq4_xs, 256, 136, "IQ4_NL"),
    "Q4_K": (q4_k, 256, 144, "Q5_0"),
    "Q5_K": (q5_k, 256, 176, "Q5_1"),
    "Q6_K": (q6_k, 256, 210, "Q8_0"),
    "IQ4_NL": (iq4_nl, 32, 18, None),
    "Q4_0": (q4_0, 32, 18, None),
    "Q5_0": (q5_0, 32, 22, None),
    "Q5_1": (q5_1, 32, 24, None),
    "Q8_0": (q8_0, 32, 34, None),
}
GGUF_HAS_QUANTIZER = ("Q4_0", "Q5_0", "Q5_1", "Q8_0")


# ---------------------------------------------------------------- NF4 (bnb)

def torch_linspace_f32(start, end, steps):
    """torch.linspace on CPU in float32 (scalar formula: start + step*i for
    the first half, end - step*(steps-1-i) for the rest)."""
    start, end = F32(start), F32(end)
    step = (end - start) / F32(steps - 1)
    i = np.arange(steps)
    return np.where(i < steps // 2, start + step * i.astype(F32),
                    end - step * (steps - 1 - i).astype(F32)).astype(F32)


def bnb_dynamic_map():
    """bitsandbytes functional.create_dynamic_map(signed=True, 7, 8)."""
    data = []
    for i in range(7):
        b = torch_linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = (b[:-1] + b[1:]) / F32(2)
        scaled = F32(10.0 ** (-6 + i)) * means
        data += scaled.tolist() + (-scaled).tolist()
    data += [0.0, 1.0]
    assert len(data) == 256
    return np.array(sorted(data), dtype=F32)


def nearest_code(scaled, code):
    """argmin |scaled - code| (first index on ties), for a sorted code."""
    k = np.clip(np.searchsorted(code, scaled), 1, len(code) - 1)
    lo, hi = code[k - 1], code[k]
    return np.where(np.abs(scaled - lo) <= np.abs(scaled - hi), k - 1, k)


def bnb_blockwise_absmax(flat, blocksize):
    n = flat.size
    nb = -(-n // blocksize)
    pad = np.zeros(nb * blocksize, dtype=F32)
    pad[:n] = flat
    absmax = np.abs(pad.reshape(nb, blocksize)).max(axis=1)
    return pad.reshape(nb, blocksize), absmax


def nf4_quantize(flat, double_quant):
    """bitsandbytes quantize_4bit(quant_type='nf4', blocksize=64) as the
    default (torch) backend computes it; with double_quant, the absmax are
    compressed as functional.quantize_4bit(compress_statistics=True) does.
    Returns (stored arrays, bits stored, the normalised inputs of the code
    choice, for the check)."""
    n = flat.size
    blocks, absmax = bnb_blockwise_absmax(flat, 64)
    with np.errstate(all="ignore"):
        scaled = np.clip(blocks * (F32(1) / absmax)[:, None], F32(-1), F32(1))
    scaled = np.where(absmax[:, None] > 0, scaled, F32(0))   # all-zero block: bnb gives NaN; we store 0
    scaled = scaled.reshape(-1)[: n + (n & 1)]
    q = nearest_code(scaled, NF4_TABLE).astype(np.uint8)
    packed = (q[0::2] << 4) | q[1::2]
    stored = {"packed": packed, "n": n}
    inputs = {"scaled": scaled[:n]}
    bits = packed.size * 8
    if not double_quant:
        stored["absmax"] = absmax
        bits += absmax.size * 32
    else:
        code = bnb_dynamic_map()
        offset = F32(absmax.astype(np.float64).mean())
        centered = absmax - offset
        blocks2, absmax2 = bnb_blockwise_absmax(centered, 256)
        with np.errstate(all="ignore"):
            s2 = np.clip(blocks2 * (F32(1) / absmax2)[:, None], F32(-1), F32(1))
        s2 = np.where(absmax2[:, None] > 0, s2, F32(0))
        s2 = s2.reshape(-1)[: centered.size]
        q2 = nearest_code(s2, code).astype(np.uint8)
        stored.update(qabsmax=q2, absmax2=absmax2, offset=offset, code=code)
        inputs["scaled_absmax"] = s2
        bits += q2.size * 8 + absmax2.size * 32 + 32
    return stored, bits, inputs


def literal_argmin(v, code, chunk=1 << 19):
    """torch.argmin(torch.abs(v[:, None] - code), dim=-1), literally."""
    out = np.empty(v.size, dtype=np.intp)
    for s in range(0, v.size, chunk):
        out[s:s + chunk] = np.argmin(np.abs(v[s:s + chunk, None] - code[None, :]), axis=1)
    return out


def nf4_dequantize(stored):
    """bitsandbytes' dequantize_4bit (+ dequantize_blockwise of the absmax),
    read from the stored arrays only."""
    packed, n = stored["packed"], stored["n"]
    q = np.empty(packed.size * 2, dtype=np.uint8)
    q[0::2] = packed >> 4
    q[1::2] = packed & 0xF
    if "absmax" in stored:
        absmax = stored["absmax"]
    else:
        q2, absmax2 = stored["qabsmax"], stored["absmax2"]
        m = q2.size
        a = np.zeros(absmax2.size * 256, dtype=F32)
        a[:m] = stored["code"][q2]
        absmax = (a.reshape(-1, 256) * absmax2[:, None]).reshape(-1)[:m] + stored["offset"]
    nb = absmax.size
    vals = np.zeros(nb * 64, dtype=F32)
    vals[:n] = NF4_TABLE[q[:n]]
    return (vals.reshape(nb, 64) * absmax[:, None]).reshape(-1)[:n]


# ------------------------------------------------------------------ model

def load_safetensors(path):
    """{name: array} of every tensor, from the file alone (no torch)."""
    raw = Path(path).read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1", "BF16": "<u2"}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        a = np.frombuffer(raw, dtype=dtypes[info["dtype"]], count=-1, offset=8 + hlen + s)
        a = a[: (e - s) // a.itemsize].reshape(info["shape"])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(F32)
        out[name] = (info["dtype"], a)
    return out


def select_matrices(tensors):
    """LSQR's rule: floating point, at least two dims larger than 1."""
    chosen = []
    for name, (dt, a) in tensors.items():
        if dt in ("F32", "F16", "F64", "BF16") and sum(d > 1 for d in a.shape) >= 2 and a.size > 0:
            chosen.append((name, np.ascontiguousarray(a.astype(F32).reshape(-1, a.shape[-1]))))
    return chosen


def rows_for(fmt_block, m):
    """The matrix as ggml blocks: rows zero-padded to the format's row unit."""
    n = m.shape[1]
    unit = QK_K if fmt_block == QK_K else 32
    npad = -(-n // unit) * unit
    if npad == n:
        return m, npad
    p = np.zeros((m.shape[0], npad), dtype=F32)
    p[:, :n] = m
    return p, npad


# ------------------------------------------------------------ C reference

def build_c_reference():
    """libggml-base.so from the llama.cpp that LLAMA_CPP_PY vendors; cached."""
    out = CACHE / "ggml-ref"
    lib = out / "libggml-base.so"
    stamp = f"{LLAMA_CPP_PY} {LLAMA_CPP_PY_SHA256} {' '.join(CFLAGS)}"
    if lib.exists() and (out / ".stamp").exists() and (out / ".stamp").read_text().strip() == stamp:
        return lib
    for tool in ("gcc", "g++"):
        if not shutil.which(tool):
            sys.exit(f"--c-reference needs {tool}")
    shutil.rmtree(out, ignore_errors=True)
    (out / "dl").mkdir(parents=True)
    print(f"fetching the {LLAMA_CPP_PY} sdist (llama.cpp's C quantizers)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--no-binary", "llama-cpp-python", "-d", str(out / "dl"), LLAMA_CPP_PY],
                   check=True)
    (sdist,) = list((out / "dl").glob("llama_cpp_python-*.tar.gz"))
    got = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if got != LLAMA_CPP_PY_SHA256:
        sys.exit(f"sha256 mismatch for {sdist.name}: {got}")
    src = out / "src"
    with tarfile.open(sdist) as tf:
        for m in tf.getmembers():
            parts = m.name.split("/")
            if parts[1:4] != ["vendor", "llama.cpp", "ggml"] or not m.isfile():
                continue
            rel = parts[4:]
            keep = (rel[0] == "include" or (rel[0] == "src" and len(rel) == 2)
                    or (rel[:2] == ["src", "ggml-cpu"] and len(rel) == 3 and rel[2].endswith(".h")))
            if keep:
                dest = src.joinpath(*rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tf.extractfile(m).read())
    (src / "src" / "ggml-version.h").write_text(
        f'#pragma once\n#define GGML_VERSION "{LLAMA_CPP_PY}"\n#define GGML_COMMIT "vendored"\n')
    inc = ["-I", str(src / "include"), "-I", str(src / "src")]
    objs = []
    print("compiling ggml-base", file=sys.stderr)
    for f in ["ggml.c", "ggml-alloc.c", "ggml-quants.c", "ggml.cpp", "ggml-backend.cpp",
              "ggml-backend-meta.cpp", "ggml-opt.cpp", "ggml-threading.cpp", "gguf.cpp"]:
        o = out / (f.replace(".", "_") + ".o")
        cc = ["gcc", "-std=gnu11"] if f.endswith(".c") else ["g++", "-std=gnu++17"]
        subprocess.run([*cc, *CFLAGS, *inc, "-c", str(src / "src" / f), "-o", str(o)], check=True)
        objs.append(str(o))
    subprocess.run(["g++", "-shared", "-Wl,-z,defs", "-o", str(lib), *objs, "-lpthread", "-lm"], check=True)
    (out / ".stamp").write_text(stamp + "\n")
    shutil.rmtree(out / "dl")
    return lib


class CReference:
    def __init__(self, lib_path):
        import ctypes
        self.ct = ctypes
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                                 ctypes.c_void_p]
        # enum ggml_type, from the header the library was built from
        header = (Path(lib_path).parent / "src" / "include" / "ggml.h").read_text()
        self.ids = {m.group(1): int(m.group(2))
                    for m in re.finditer(r"GGML_TYPE_(\w+)\s*=\s*(\d+)", header)}

    def quantize(self, fmt, rows, type_size, block):
        rows = np.ascontiguousarray(rows, dtype=F32)
        nrow, n = rows.shape
        dst = np.zeros(nrow * (n // block) * type_size, dtype=np.uint8)
        got = self.lib.ggml_quantize_chunk(self.ids[fmt], rows.ctypes.data, dst.ctypes.data,
                                           0, nrow, n, None)
        assert got == dst.size, (fmt, got, dst.size)
        return dst.reshape(-1, type_size)


# ------------------------------------------------------------------- main

def group_names(names):
    """Tensor names with layer numbers folded: a.0.b, a.1.b -> a.{0..1}.b."""
    groups = {}
    for n in names:
        key = re.sub(r"\.(\d+)\.", ".{N}.", n)
        groups.setdefault(key, []).append(int(m.group(1)) if (m := re.search(r"\.(\d+)\.", n)) else None)
    out = []
    for key, layers in groups.items():
        ls = sorted(x for x in layers if x is not None)
        out.append(key.replace("{N}", f"{{{ls[0]}..{ls[-1]}}}" if len(ls) > 1 else str(ls[0])) if ls else key)
    return ", ".join(out)


def snr_db(sig, err):
    return float(10 * np.log10(sig / err)) if err > 0 else float("inf")


def run_ggml(fmt, mats, gguf, cref):
    quant, block, tsize, _ = GGML_FORMATS[fmt]
    qtype = gguf.GGMLQuantizationType[fmt]
    assert gguf.GGML_QUANT_SIZES[qtype] == (block, tsize), fmt
    per = []
    t_quant = t_check = 0.0
    ver = {"blocks": 0, "gguf_dequant_bit_identical": True, "gguf_quant_bytes_equal": None,
           "c_blocks_equal": None, "c_bit_identical_values": None}
    c_err = 0.0
    for name, m in mats:
        rows, npad = rows_for(block, m)
        t0 = time.perf_counter()
        y, raw = quant(rows.reshape(-1, block))
        y = y.reshape(rows.shape)
        t_quant += time.perf_counter() - t0
        n = m.shape[1]
        e = (m.astype(np.float64) - y[:, :n].astype(np.float64))
        per.append({"name": name, "shape": list(m.shape), "row_len": n, "padded_row_len": npad,
                    "signal": float(np.sum(m.astype(np.float64) ** 2)), "error": float(np.sum(e * e)),
                    "bits_stored": raw.size * 8, "bits_nominal": m.size * tsize * 8 / block})
        t0 = time.perf_counter()
        ver["blocks"] += raw.shape[0]
        ref = gguf.quants.dequantize(raw.reshape(rows.shape[0], -1), qtype)
        if not np.array_equal(ref.view(np.uint32), y.view(np.uint32)):
            ver["gguf_dequant_bit_identical"] = False
            ver.setdefault("gguf_dequant_max_abs_diff", 0.0)
            ver["gguf_dequant_max_abs_diff"] = max(ver["gguf_dequant_max_abs_diff"],
                                                   float(np.max(np.abs(ref - y))))
        if fmt in GGUF_HAS_QUANTIZER:
            gq = gguf.quants.quantize(rows, qtype).reshape(-1, tsize)
            same = bool(np.array_equal(gq, raw))
            ver["gguf_quant_bytes_equal"] = same if ver["gguf_quant_bytes_equal"] is None else (
                ver["gguf_quant_bytes_equal"] and same)
        if cref is not None:
            craw = cref.quantize(fmt, rows, tsize, block)
            eq = int(np.sum(np.all(craw == raw, axis=1)))
            ver["c_blocks_equal"] = (ver["c_blocks_equal"] or 0) + eq
            cy = gguf.quants.dequantize(craw.reshape(rows.shape[0], -1), qtype)[:, :n]
            ce = m.astype(np.float64) - cy.astype(np.float64)
            c_err += float(np.sum(ce * ce))
            same_vals = bool(np.array_equal(cy.view(np.uint32), y[:, :n].view(np.uint32)))
            ver["c_bit_identical_values"] = same_vals if ver["c_bit_identical_values"] is None else (
                ver["c_bit_identical_values"] and same_vals)
        t_check += time.perf_counter() - t0
    sig = sum(p["signal"] for p in per)
    err = sum(p["error"] for p in per)
    if cref is not None:
        ver["c_snr_db"] = snr_db(sig, c_err)
    return {"format": fmt, "source": "ggml", "tensors": per, "signal": sig, "error": err,
            "snr_db": snr_db(sig, err), "time_s": t_quant, "check_time_s": t_check, "verification": ver}


def run_nf4(double_quant, mats):
    per = []
    t_quant = t_check = 0.0
    ok = True
    n_codes = n_scale_codes = 0
    for name, m in mats:
        t0 = time.perf_counter()
        stored, bits, inputs = nf4_quantize(m.reshape(-1), double_quant)
        y = nf4_dequantize(stored)
        t_quant += time.perf_counter() - t0
        e = m.reshape(-1).astype(np.float64) - y.astype(np.float64)
        per.append({"name": name, "shape": list(m.shape), "signal": float(np.sum(m.astype(np.float64) ** 2)),
                    "error": float(np.sum(e * e)), "bits_stored": bits, "bits_nominal": bits})
        # The codes, unpacked from the stored bytes, against a literal re-run
        # of bitsandbytes' default-backend rule (argmin |x/absmax - code|).
        t0 = time.perf_counter()
        q = np.empty(stored["packed"].size * 2, dtype=np.uint8)
        q[0::2], q[1::2] = stored["packed"] >> 4, stored["packed"] & 0xF
        ok &= bool(np.array_equal(q[: m.size], literal_argmin(inputs["scaled"], NF4_TABLE)))
        n_codes += m.size
        if double_quant:
            ok &= bool(np.array_equal(stored["qabsmax"],
                                      literal_argmin(inputs["scaled_absmax"], stored["code"])))
            n_scale_codes += stored["qabsmax"].size
        t_check += time.perf_counter() - t0
    sig = sum(p["signal"] for p in per)
    err = sum(p["error"] for p in per)
    return {"format": "NF4" + (" + double quant" if double_quant else ""), "source": "bitsandbytes",
            "tensors": per, "signal": sig, "error": err, "snr_db": snr_db(sig, err), "time_s": t_quant,
            "check_time_s": t_check,
            "verification": {"codes_equal_literal_argmin": ok, "codes": n_codes, "absmax_codes": n_scale_codes}}


def nf4_selftest():
    """Hand-checkable facts about the NF4 path (bitsandbytes itself needs torch)."""
    code = bnb_dynamic_map()
    assert code.size == 256 and np.all(np.diff(code) >= 0) and code[-1] == 1.0 and 0.0 in code
    # A block holding the 16 table values times 0.5 (absmax 0.5) round-trips exactly.
    x = np.tile(NF4_TABLE * F32(0.5), 4)
    stored, bits, _ = nf4_quantize(x, False)
    assert bits == 64 * 4 + 32 and np.array_equal(nf4_dequantize(stored), x)
    assert stored["packed"][0] == (0 << 4 | 1) and stored["packed"][7] == (14 << 4 | 15)
    # A value halfway between two levels goes to the lower index (argmin's first).
    mid = (NF4_TABLE[8] + NF4_TABLE[9]) / 2
    assert nearest_code(np.array([mid], F32), NF4_TABLE)[0] == 8
    return "NF4 self-test: table round trip, packing (high nibble first) and tie rule as bitsandbytes: ok"


def ggml_selftest():
    """Small cases whose answers can be derived by hand from the C code."""
    out = []
    # Q4_0: block [-8..7]*0.25 (max |x| = 2 at x = -2): d = -2/-8 = 0.25, codes x/d + 8 exactly.
    x = (np.arange(32) % 16 - 8).astype(F32) * F32(0.25)
    y, raw = q4_0(x[None, :])
    assert np.array_equal(y[0], x) and raw[0, 2] == (0 | (0 << 4))
    # IQ4_NL: a block of kvalues * 0.01 (two copies) is reproduced to fp16 precision of the scale.
    x = (np.tile(KVALUES_IQ4NL.astype(F32), 2) * F32(0.01))
    y, raw = iq4_nl(x[None, :])
    codes = np.concatenate([raw[0, 2:] & 0xF, raw[0, 2:] >> 4])
    assert np.array_equal(codes, np.tile(np.arange(16), 2)), codes
    assert abs(float(raw[0, :2].view(np.float16)[0]) - 0.01) < 1e-5
    # Q4_K: eight sub-blocks that each hold 0..15 (times 1/64 steps, shifted by -0.1):
    # min fits exactly (-0.1), codes are 0..15 twice.
    base = (np.tile(np.arange(16), 2).astype(F32) / F32(64)) - F32(0.1)
    y, raw = q4_k(np.tile(base, 8)[None, :])
    L = np.concatenate([raw[0, 16:48] & 0xF, raw[0, 16:48] >> 4])
    assert np.array_equal(L, np.concatenate([np.tile(np.arange(16), 2)] * 2)), L
    assert float(np.max(np.abs(y[0] - np.tile(base, 8)))) < 2e-3
    out.append("hand-derived cases (Q4_0 exact grid, IQ4_NL kvalues grid, Q4_K 0..15 ramps): ok")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--formats", help="comma-separated subset (default: all)")
    ap.add_argument("--c-reference", action="store_true",
                    help="also run llama.cpp's C quantizers (built once from the pinned "
                         "llama-cpp-python sdist) and compare bytes and SNR")
    args = ap.parse_args()

    import gguf
    import gguf.quants  # noqa: F401
    from importlib.metadata import version as pkg_version

    model = Path(args.model)
    if not model.exists():
        sys.exit(f"{model} is missing: run `bash scripts/fetch-models.sh` first")
    tensors = load_safetensors(model)
    mats = select_matrices(tensors)
    n_weights = sum(m.size for _, m in mats)
    not256 = [(name, m.shape[1]) for name, m in mats if m.shape[1] % QK_K]

    all_formats = list(GGML_FORMATS) + ["NF4", "NF4-DQ"]
    formats = args.formats.split(",") if args.formats else all_formats
    for f in formats:
        if f not in all_formats:
            sys.exit(f"unknown format {f}; known: {', '.join(all_formats)}")

    cref = None
    if args.c_reference:
        cref = CReference(build_c_reference())

    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "gguf": pkg_version("gguf")}
    print(f"peer-formats: {model}")
    print(f"numpy {versions['numpy']}, gguf {versions['gguf']}, python {versions['python']}"
          + (f"; C reference: ggml from {LLAMA_CPP_PY} sdist, gcc {' '.join(CFLAGS)}" if cref else ""))
    print(f"{len(mats)} of {len(tensors)} tensors quantized (floating point, two or more dims > 1): "
          f"{n_weights:,} weights; rows = first dim(s), blocks along a row")
    if not256:
        lens = sorted({n for _, n in not256})
        print(f"{len(not256)} of {len(mats)} tensors ({sum(dict(mats)[k].size for k, _ in not256):,} weights) "
              f"have rows not a multiple of 256 (lengths {lens}): ggml's K and IQ4_XS formats cannot store "
              f"them; here they are zero-padded to the next multiple of 256 ('bpw stored' counts the padding, "
              f"'bpw nominal' does not). Affected: {group_names([k for k, _ in not256])}; "
              f"not affected: {group_names([k for k, _ in mats if k not in dict(not256)])}")
    print()

    results = []
    selftests = ggml_selftest() + [nf4_selftest()]
    for f in formats:
        print(f"  {f} ...", file=sys.stderr, flush=True)
        if f == "NF4":
            r = run_nf4(False, mats)
        elif f == "NF4-DQ":
            r = run_nf4(True, mats)
        else:
            r = run_ggml(f, mats, gguf, cref)
        bits_stored = sum(p["bits_stored"] for p in r["tensors"])
        bits_nominal = sum(p["bits_nominal"] for p in r["tensors"])
        r["bpw_stored"] = bits_stored / n_weights
        r["bpw_nominal"] = bits_nominal / n_weights
        results.append(r)

    def fmt_row(r):
        return (f"| {r['format']} | {r['source']} | {r['bpw_nominal']:.4f} | {r['bpw_stored']:.4f} | "
                f"{r['snr_db']:.2f} | {r['time_s']:.1f} |")

    print("| format | from | bpw nominal | bpw stored (padding) | weighted SNR (dB) | time (s) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in sorted(results, key=lambda r: r["bpw_nominal"]):
        print(fmt_row(r))
    print()
    print("bpw counts everything stored: codes, block scales and mins, super-block scales "
          "(ggml: fp16; NF4: fp32 absmax, or 8-bit absmax + fp32 per 256 + fp32 offset per tensor); "
          "not the format's constant tables. Time: our numpy quantize + dequantize of all "
          f"{len(mats)} matrices, one thread, no verification.")

    # What llama-quantize itself would write: 256-row formats fall back per tensor.
    by = {r["format"]: r for r in results}
    fallback = []
    for f, (_, block, _, fb) in GGML_FORMATS.items():
        if block != QK_K or f not in by or fb not in by:
            continue
        sig = err = bits = 0.0
        for p, q in zip(by[f]["tensors"], by[fb]["tensors"]):
            src = q if p["row_len"] % QK_K else p
            sig += src["signal"]
            err += src["error"]
            bits += src["bits_stored"]
        fallback.append({"format": f, "fallback": fb, "tensors_fallen_back": len(not256),
                         "bpw": bits / n_weights, "snr_db": snr_db(sig, err)})
    if fallback and not256:
        print()
        print("As llama.cpp's llama-quantize (--pure) stores a 256-block type: tensors whose rows are not a "
              f"multiple of 256 ({len(not256)} of {len(mats)} here) fall back to a 32-block type "
              "(tensor_type_fallback in llama-quant.cpp). The same 40 matrices as above; llama-quantize "
              "would also leave BERT's position and token-type embeddings unquantized:")
        print()
        print("| target | fallback type | bpw | weighted SNR (dB) |")
        print("|---|---|---:|---:|")
        for fb in fallback:
            print(f"| {fb['format']} | {fb['fallback']} | {fb['bpw']:.4f} | {fb['snr_db']:.2f} |")

    print()
    print("verification:")
    for s in selftests:
        print(f"  {s}")
    for r in results:
        v = r["verification"]
        if r["source"] == "ggml":
            line = (f"  {r['format']}: gguf {versions['gguf']} dequantize of our {v['blocks']:,} blocks "
                    f"{'== our dequantization bit for bit' if v['gguf_dequant_bit_identical'] else 'DIFFERS (max %g)' % v['gguf_dequant_max_abs_diff']}")
            if v["gguf_quant_bytes_equal"] is not None:
                line += f"; gguf quantize bytes {'== ours' if v['gguf_quant_bytes_equal'] else 'DIFFER from ours'}"
            if v["c_blocks_equal"] is not None:
                line += (f"; C ggml_quantize_chunk: {v['c_blocks_equal']:,}/{v['blocks']:,} blocks byte-identical, "
                         f"SNR {v['c_snr_db']:.4f} dB (ours {r['snr_db']:.4f})")
            line += f" [{r['check_time_s']:.1f} s]"
            print(line)
        else:
            extra = f" and {v['absmax_codes']:,} 8-bit absmax codes" if v["absmax_codes"] else ""
            print(f"  {r['format']}: {v['codes']:,} 4-bit codes{extra}, unpacked from the stored bytes, "
                  f"{'==' if v['codes_equal_literal_argmin'] else 'DIFFER from'} a literal argmin |x/absmax - code| "
                  f"(bitsandbytes' default backend); SNR from the bnb-layout dequantizer of the stored arrays; "
                  f"bitsandbytes itself not run (it needs torch) [{r['check_time_s']:.1f} s]")
    if cref is None:
        print("  (the C quantizers were not run: add --c-reference)")

    if args.json:
        out = {"model": str(model), "versions": versions, "n_tensors": len(tensors),
               "n_matrices": len(mats), "n_weights": n_weights,
               "rows_not_multiple_of_256": [{"name": k, "row_len": n} for k, n in not256],
               "c_reference": LLAMA_CPP_PY if cref else None,
               "results": [{k: v for k, v in r.items()} for r in results],
               "llama_quantize_fallback": fallback, "selftests": selftests}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
