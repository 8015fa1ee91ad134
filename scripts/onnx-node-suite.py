"""ONNX's own conformance cases (onnx/backend/test/data/node, from the
pinned onnx wheel in the reference venv, and the small models of its
pytorch-converted, pytorch-operator and simple folders: PyTorch 0.3's
opset 6 exports among them), laid out for
crates/lsqr-cli/tests/onnx_node_suite.rs, which needs no Python.

For each case: model.onnx, in_K.npy / out_K.npy (test_data_set_0, in
graph order, as float32), and a line of cases.tsv:

    name <TAB> input NAME=d0,d1,... separated by ';' <TAB> output count <TAB> status

status is `run`, or why the case is left out (a sequence, optional or
string value, which the runtime has no type for). The runtime computes in
f32 and takes shape-like operands (Reshape's shape, Slice's starts, Gather's
indices, ...) as constants only, so inputs that are not floating point
become initializers of the copied model: the same computation, with the
value ONNX's test feeds. Floating-point inputs stay graph inputs, except
those that are weights in real models (WEIGHT_INPUTS: a Conv's or an
LSTM's W, ...).

usage: onnx-node-suite.py OUT_DIR
"""

import hashlib
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import numpy_helper

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}

# Cases whose stored outputs onnxruntime does not reproduce: the int8
# QLinearMatMul data saturates differently from ONNX's own definition
# (onnxruntime gives -128 where the file says 20 for
# (a - a_zp)(b - b_zp) = -52135). For these the expected outputs are
# onnxruntime's (pinned in the same venv).
# Inputs that are weights in real models (the runtime takes them as
# constants): by op, the input positions that become initializers too.
WEIGHT_INPUTS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "LSTM": (1, 2, 3, 7),
    "GRU": (1, 2, 3),
    "RNN": (1, 2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7, 8),
}

ONNXRUNTIME_REFERENCE = {
    "test_qlinearmatmul_2D_int8_float16",
    "test_qlinearmatmul_2D_int8_float32",
    "test_qlinearmatmul_3D_int8_float16",
    "test_qlinearmatmul_3D_int8_float32",
}


def read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def to_array(t, elem_type):
    """A TensorProto as numpy; bfloat16 values (which ONNX's test data
    stores as their raw uint16 bits) as the float32 values they stand for."""
    arr = numpy_helper.to_array(t)
    if elem_type == onnx.TensorProto.BFLOAT16 and arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def numeric(arr):
    return arr.dtype != object and arr.dtype.kind in "biuf"


def convert(src, dst):
    model = onnx.load(os.path.join(src, "model.onnx"))
    g = model.graph
    data = os.path.join(src, "test_data_set_0")
    if not os.path.isdir(data):
        return "no test_data_set_0"
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    files = sorted(os.listdir(data))
    in_files = [f for f in files if f.startswith("input_")]
    out_files = [f for f in files if f.startswith("output_")]
    if len(in_files) != len(inputs) or len(out_files) != len(g.output):
        return "inputs or outputs are not plain tensors"
    for vi in list(inputs) + list(g.output):
        if not vi.type.HasField("tensor_type"):
            return f"{vi.name} is not a tensor"
    key = lambda f: int(f.split("_")[1].split(".")[0])
    elem = lambda vi: vi.type.tensor_type.elem_type
    ins = [to_array(read_pb(os.path.join(data, f)), elem(vi)) for f, vi in zip(sorted(in_files, key=key), inputs)]
    outs = [to_array(read_pb(os.path.join(data, f)), elem(vi)) for f, vi in zip(sorted(out_files, key=key), g.output)]
    if not all(numeric(a) for a in ins + outs):
        return "a string value"
    # Some pytorch-operator cases store uninitialised float64 memory
    # (1e-316, 1e198): values f32 cannot hold, so not a test of f32 maths.
    for a in ins + outs:
        if a.dtype == np.float64:
            m = np.abs(a[np.isfinite(a) & (a != 0)])
            if m.size and (m.max() > np.finfo(np.float32).max or m.min() < np.finfo(np.float32).smallest_subnormal):
                return "float64 values beyond f32's range"
    weights = {n.input[k] for n in g.node for k in WEIGHT_INPUTS.get(n.op_type, ()) if k < len(n.input)}
    kept, fed = [], []
    for vi, arr in zip(inputs, ins):
        if vi.type.tensor_type.elem_type in FLOATS and vi.name not in weights:
            kept.append(vi)
            fed.append((vi.name, arr))
        else:
            g.initializer.append(numpy_helper.from_array(arr, vi.name))
    del g.input[:]
    g.input.extend(kept)
    os.makedirs(dst, exist_ok=True)
    onnx.save(model, os.path.join(dst, "model.onnx"))
    shapes = []
    for k, (name, arr) in enumerate(fed):
        np.save(os.path.join(dst, f"in_{k}.npy"), arr.astype(np.float32))
        shapes.append(name + "=" + ",".join(str(d) for d in arr.shape))
    if os.path.basename(src) in ONNXRUNTIME_REFERENCE:
        import onnxruntime as ort

        sess = ort.InferenceSession(os.path.join(dst, "model.onnx"), providers=["CPUExecutionProvider"])
        outs = sess.run(None, dict(fed))
    for k, arr in enumerate(outs):
        np.save(os.path.join(dst, f"out_{k}.npy"), arr.astype(np.float32))
    return ("run", ";".join(shapes), len(outs))


def main():
    out = sys.argv[1]
    data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    lines = []
    cases = [
        (os.path.join(data, folder), name)
        for folder in ("node", "pytorch-converted", "pytorch-operator", "simple")
        for name in sorted(os.listdir(os.path.join(data, folder)))
    ]
    assert len({name for _, name in cases}) == len(cases), "a case name repeats across folders"
    for root, name in cases:
        if not os.path.isfile(os.path.join(root, name, "model.onnx")):
            continue
        try:
            r = convert(os.path.join(root, name), os.path.join(out, name))
        except Exception as e:  # a case this script cannot read: listed, not run
            r = f"unreadable: {type(e).__name__}"
        if isinstance(r, tuple):
            lines.append(f"{name}\t{r[1]}\t{r[2]}\trun")
        else:
            lines.append(f"{name}\t\t0\t{r}")
    with open(os.path.join(out, "cases.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # Every file's sha256, so the test can tell a damaged cache.
    sums = []
    for d, _, fs in sorted(os.walk(out)):
        for f in sorted(fs):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, out)
            with open(p, "rb") as fh:
                sums.append(f"{hashlib.sha256(fh.read()).hexdigest()}  {rel}")
    with open(os.path.join(out, "SHA256SUMS"), "w") as f:
        f.write("\n".join(sums) + "\n")


if __name__ == "__main__":
    main()
