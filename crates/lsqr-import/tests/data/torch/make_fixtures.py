#!/usr/bin/env python3
"""Builds the small PyTorch-format fixtures of the torch importer's tests,
without torch: the standard pickle module with fake `torch.*` globals (fake
modules put in sys.modules, so pickle references them by name) and a
Pickler whose persistent_id emits the storage tuples torch writes.

Run from anywhere; writes next to this script:

  nested.pt             zip checkpoint {"epoch", "state_dict": OrderedDict, "optimizer"}:
                        a transposed (non-contiguous) view, a 0-dim tensor at an
                        offset, f16 and i64 tensors, OrderedDict `_metadata` (BUILD)
  lists.pt              zip, protocol 4: tensors in nested lists/tuples/dicts, a
                        Parameter, bf16, and one storage entry deflated
  legacy.pt             legacy (pre-1.6) stream: two tensors sharing a storage, an i32
  script.pt             TorchScript-like archive: __torch__.* module records (NEWOBJ+BUILD)
  malicious.pt          zip whose data.pkl calls os.system (must be rejected by name)
  malicious_script.pt   the same as a TorchScript archive
  out_of_bounds.pt      a tensor reaching past the end of its storage
  big_endian.pt         a zip checkpoint whose byteorder is "big"
"""

import collections
import copyreg
import io
import os
import pickle
import struct
import sys
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def fake_module(name):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        n = ".".join(parts[:i])
        if n not in sys.modules:
            sys.modules[n] = types.ModuleType(n)
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[n])
    return sys.modules[name]


def fake_global(module, name, cls=False):
    """An object that pickles as the global `module.name`."""
    if cls:
        obj = type(name, (), {})
    else:

        def obj(*args):
            raise RuntimeError("fake")

        obj.__name__ = name
    obj.__module__ = module
    obj.__qualname__ = name
    setattr(fake_module(module), name, obj)
    return obj


rebuild_tensor_v2 = fake_global("torch._utils", "_rebuild_tensor_v2")
rebuild_parameter = fake_global("torch._utils", "_rebuild_parameter")
build_intlist = fake_global("torch.jit._pickle", "build_intlist")
STORAGE = {
    name: fake_global("torch", name, cls=True)
    for name in ["FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "IntStorage"]
}


class Storage:
    def __init__(self, kind, key, fmt, values):
        self.kind, self.key, self.numel = STORAGE[kind], key, len(values)
        self.data = b"".join(struct.pack("<" + fmt, v) for v in values) if fmt else bytes(values)


class Raw:
    """Reduces to a given (func, args)."""

    def __init__(self, reduced):
        self.reduced = reduced

    def __reduce_ex__(self, proto):
        return self.reduced


class Tensor:
    def __init__(self, storage, offset, size, stride, parameter=False):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
        self.parameter = parameter

    def __reduce_ex__(self, proto):
        inner = (rebuild_tensor_v2, self.args)
        if self.parameter:
            return (rebuild_parameter, (Raw(inner), True, collections.OrderedDict()))
        return inner


class ModuleRecord:
    def __reduce_ex__(self, proto):
        return (copyreg.__newobj__, (type(self),), self.attrs)


def Module(module, name, attrs):
    """A TorchScript module record: __torch__.<module>.<name>, NEWOBJ + BUILD."""
    full = "__torch__." + module if module else "__torch__"
    cls = type(name, (ModuleRecord,), {})
    cls.__module__, cls.__qualname__ = full, name
    setattr(fake_module(full), name, cls)
    obj = cls()
    obj.attrs = attrs
    return obj


class IntList:
    def __init__(self, values):
        self.values = values

    def __reduce_ex__(self, proto):
        return (build_intlist, (self.values,))


def dumps(obj, protocol=2, legacy=False):
    storages = {}

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                storages[obj.key] = obj
                pid = ("storage", obj.kind, obj.key, "cpu", obj.numel)
                return pid + (None,) if legacy else pid
            return None

    out = io.BytesIO()
    P(out, protocol=protocol).dump(obj)
    return out.getvalue(), storages


def write_zip(name, prefix, pickled, storages, byteorder="little", deflate=(), extra=()):
    with zipfile.ZipFile(os.path.join(HERE, name), "w", zipfile.ZIP_STORED) as z:

        def put(entry, data, compress=zipfile.ZIP_STORED):
            info = zipfile.ZipInfo(f"{prefix}/{entry}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compress
            z.writestr(info, data)

        put("data.pkl", pickled)
        for entry, data in extra:
            put(entry, data)
        put("byteorder", byteorder)
        for key, s in sorted(storages.items()):
            put(f"data/{key}", s.data, zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED)
        put("version", "3\n")


def nested():
    s0 = Storage("FloatStorage", "0", "f", [0, 1, 2, 3, 4, 5])
    s1 = Storage("FloatStorage", "1", "f", [-1, 1, 0.25])
    s2 = Storage("HalfStorage", "2", "e", [1, -2, 0.5, 65504])
    s3 = Storage("LongStorage", "3", "q", [7, -8, 1 << 40])
    s4 = Storage("FloatStorage", "4", "f", [9, 9])
    sd = collections.OrderedDict()
    sd["conv1.weight"] = Tensor(s0, 0, (2, 3), (3, 1))
    sd["conv1.bias"] = Tensor(s1, 0, (2,), (1,))
    sd["fc.weight"] = Tensor(s0, 0, (3, 2), (1, 3))  # conv1.weight transposed
    sd["scale"] = Tensor(s1, 2, (), ())  # 0-dim
    sd["half"] = Tensor(s2, 0, (4,), (1,))
    sd["steps"] = Tensor(s3, 0, (3,), (1,))
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    checkpoint = {
        "epoch": 3,
        "state_dict": sd,
        "optimizer": {"state": {0: {"exp_avg": Tensor(s4, 0, (2,), (1,))}}, "param_groups": [{"lr": 0.1}]},
    }
    pickled, storages = dumps(checkpoint)
    write_zip("nested.pt", "nested", pickled, storages)


def lists():
    s0 = Storage("FloatStorage", "0", "f", [1.5, 2.5])
    s1 = Storage("DoubleStorage", "1", "d", [1, 2, 3, 4])
    s2 = Storage("BFloat16Storage", "2", None, [0x80, 0x3F, 0x40, 0xC0])  # 1.0, -3.0
    obj = {
        "layers": [Tensor(s0, 0, (2,), (1,), parameter=True), {"w": Tensor(s1, 0, (2, 2), (2, 1))}],
        "note": "hello",
        "count": 5,
        "extra": ({"b": Tensor(s2, 0, (2,), (1,))},),
    }
    pickled, storages = dumps(obj, protocol=4)
    write_zip("lists.pt", "archive", pickled, storages, deflate={"1"})


def legacy():
    k1 = Storage("FloatStorage", "140001", "f", [1, 2, 3, 4, 5, 6])
    k2 = Storage("IntStorage", "140002", "i", [-1, 0, 1])
    sd = collections.OrderedDict()
    sd["a"] = Tensor(k1, 0, (2, 2), (2, 1))
    sd["b"] = Tensor(k1, 4, (2,), (1,))
    sd["c"] = Tensor(k2, 0, (3,), (1,))
    out = io.BytesIO()
    out.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    out.write(pickle.dumps(1001, protocol=2))
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out.write(pickle.dumps(sys_info, protocol=2))
    pickled, storages = dumps(sd, legacy=True)
    out.write(pickled)
    keys = sorted(storages)
    out.write(pickle.dumps(keys, protocol=2))
    for key in keys:
        out.write(struct.pack("<q", storages[key].numel))
        out.write(storages[key].data)
    with open(os.path.join(HERE, "legacy.pt"), "wb") as f:
        f.write(out.getvalue())


def script():
    s0 = Storage("FloatStorage", "0", "f", [1, 0, 0, 1])
    s1 = Storage("FloatStorage", "1", "f", [0.1, 0.2])
    s2 = Storage("FloatStorage", "2", "f", [0.5, -0.5])
    linear = Module("torch.nn.modules.linear", "Linear", {"training": False, "weight": Tensor(s0, 0, (2, 2), (2, 1)),
                                                           "bias": Tensor(s1, 0, (2,), (1,)), "in_features": 2})
    relu = Module("torch.nn.modules.activation", "ReLU", {"training": False})
    encoder = Module("torch.nn.modules.container", "Sequential", {"training": False, "0": linear, "1": relu})
    head = Module("torch.nn.modules.linear.___torch_mangle_1", "Linear",
                  {"training": False, "weight": Tensor(s2, 0, (1, 2), (2, 1)), "bias": None})
    net = Module("m", "Net", {"training": False, "encoder": encoder, "head": head, "sizes": IntList([1, 2]),
                              "name": "net"})
    pickled, storages = dumps(net)
    code = [("code/__torch__/m.py", "class Net(Module):\n  pass\n"), ("constants.pkl", pickle.dumps((), protocol=2))]
    write_zip("script.pt", "script", pickled, storages, extra=code)


def malicious():
    # What `pickle.dumps(X)` gives for a class X whose __reduce__ is (os.system, ("echo pwned",)).
    evil = b"\x80\x02cos\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    write_zip("malicious.pt", "malicious", evil, {})
    write_zip("malicious_script.pt", "malicious", evil, {}, extra=[("code/__torch__/x.py", "")])


def out_of_bounds():
    s0 = Storage("FloatStorage", "0", "f", [1, 2, 3, 4])
    pickled, storages = dumps({"w": Tensor(s0, 1, (2, 2), (2, 1))})
    write_zip("out_of_bounds.pt", "oob", pickled, storages)


def big_endian():
    s0 = Storage("FloatStorage", "0", "f", [1, 2])
    pickled, storages = dumps({"w": Tensor(s0, 0, (2,), (1,))})
    write_zip("big_endian.pt", "be", pickled, storages, byteorder="big")


if __name__ == "__main__":
    nested()
    lists()
    legacy()
    script()
    malicious()
    out_of_bounds()
    big_endian()
