//! Writes the seed corpora: for the `from_bytes` target, small valid files
//! made by the writer, covering every section kind, codec, scaling, scale
//! dtype and raw dtype, metadata of every value type, and a graph; for the
//! importers' targets (`import_*`), headers and pickles of the real models
//! `scripts/fetch-models.sh` fetches (small prefixes and members, not whole
//! models) and of the PyTorch test fixtures.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus`; each target's seeds go to
//! `OUT_DIR/<target>`. The real models are read from `$LSQR_MODELS` or
//! `~/.cache/lsqr-models`; missing ones are skipped with a note.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use lsqr_codec::{quantize, CodecSpec, FpLayout, QuantizeOptions, ScaleDtype, Scaling};
use lsqr_format::{Graph, Layer, LsqWriter, RawDtype, Value};

type Writer = LsqWriter<Cursor<Vec<u8>>>;

/// Deterministic pseudo-random values in [-amp, amp).
fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

fn writer() -> Writer {
    LsqWriter::new(Cursor::new(Vec::new())).unwrap()
}

fn finish(w: Writer) -> Vec<u8> {
    w.finish().unwrap().into_inner()
}

fn add_q(
    w: &mut Writer,
    name: &str,
    shape: &[usize],
    codec: CodecSpec,
    bits: u32,
    f: impl Fn(&mut QuantizeOptions),
) {
    let n = shape.iter().product();
    let mut o = QuantizeOptions::new(codec, bits);
    f(&mut o);
    let q = quantize(&values(n, name.len() as u64 + 7, 0.5), shape, &o).unwrap();
    w.add_quantized(name, &q).unwrap();
}

/// The model of `crates/lsqr-format/tests/common/mod.rs`.
fn small_model() -> Vec<u8> {
    let mut w = writer();
    w.add_metadata("name", Value::String("small".into())).unwrap();
    w.add_metadata("layers", Value::Int(1)).unwrap();
    add_q(&mut w, "fc.weight", &[8, 40], CodecSpec::Log { mu: None }, 5, |_| {});
    add_q(&mut w, "lut.weight", &[4, 16], CodecSpec::Lut, 3, |o| o.scaling = Scaling::Row);
    w.add_raw_f32("fc.bias", &[8], &values(8, 3, 1.0)).unwrap();
    w.set_graph(Graph {
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        layers: vec![Layer {
            op: "linear".into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            weights: vec!["fc.weight".into(), "fc.bias".into()],
            attrs: vec![("activation".into(), Value::String("relu".into()))],
        }],
    });
    finish(w)
}

/// One quantized tensor per codec, with every scaling and scale dtype.
fn codecs() -> Vec<u8> {
    let mut w = writer();
    add_q(&mut w, "seed", &[2, 64], CodecSpec::Seed, 4, |o| o.scaling = Scaling::Unit);
    add_q(&mut w, "log", &[4, 64], CodecSpec::Log { mu: Some(3.0) }, 4, |_| {});
    add_q(&mut w, "uniform", &[3, 50], CodecSpec::Uniform, 6, |o| {
        o.scaling = Scaling::Group(16);
        o.scale_dtype = ScaleDtype::F32;
    });
    add_q(&mut w, "nf", &[32], CodecSpec::Nf, 4, |o| o.scaling = Scaling::Tensor);
    add_q(&mut w, "fp", &[2, 3, 16], CodecSpec::Fp(None), 8, |o| o.scaling = Scaling::Row);
    let e2m1 = FpLayout::new(2, 1).unwrap();
    add_q(&mut w, "fp4", &[2, 32], CodecSpec::Fp(Some(e2m1)), 4, |_| {});
    add_q(&mut w, "lut", &[2, 32], CodecSpec::Lut, 2, |o| o.scale_dtype = ScaleDtype::F32);
    add_q(&mut w, "wide", &[1, 16], CodecSpec::Uniform, 12, |o| o.scaling = Scaling::Tensor);
    finish(w)
}

/// Raw tensors of every dtype, a scalar and an empty tensor.
fn raws() -> Vec<u8> {
    let mut w = writer();
    for (i, dtype) in RawDtype::ALL.into_iter().enumerate() {
        let shape = [2, i + 1];
        let n = 2 * (i + 1);
        let bytes: Vec<u8> = (0..n * dtype.size())
            .map(|b| if dtype == RawDtype::Bool { (b % 2) as u8 } else { (b * 37 + i) as u8 })
            .collect();
        w.add_raw(dtype.name(), dtype, &shape, &bytes).unwrap();
    }
    w.add_raw_f32("scalar", &[], &[1.5]).unwrap();
    w.add_raw_f32("empty", &[0, 4], &[]).unwrap();
    finish(w)
}

/// Metadata of every value type, no tensors.
fn metadata() -> Vec<u8> {
    let mut w = writer();
    w.add_metadata("s", Value::String("text".into())).unwrap();
    w.add_metadata("empty", Value::String(String::new())).unwrap();
    w.add_metadata("i", Value::Int(-3)).unwrap();
    w.add_metadata("f", Value::Float(0.25)).unwrap();
    w.add_metadata("b", Value::Bool(true)).unwrap();
    w.add_metadata("il", Value::IntList(vec![1, -2, 3])).unwrap();
    w.add_metadata("fl", Value::FloatList(vec![0.5, -1.0])).unwrap();
    finish(w)
}

/// A three-layer graph over two weights, with attributes.
fn graph() -> Vec<u8> {
    let mut w = writer();
    add_q(&mut w, "conv.weight", &[4, 1, 3, 3], CodecSpec::Uniform, 4, |o| {
        o.scaling = Scaling::Row
    });
    w.add_raw_f32("conv.bias", &[4], &values(4, 9, 1.0)).unwrap();
    let layer = |op: &str, i: &str, o: &str| Layer {
        op: op.into(),
        inputs: vec![i.into()],
        outputs: vec![o.into()],
        ..Layer::default()
    };
    let mut conv = layer("conv2d", "x", "h");
    conv.weights = vec!["conv.weight".into(), "conv.bias".into()];
    conv.attrs = vec![
        ("stride".into(), Value::IntList(vec![1, 1])),
        ("padding".into(), Value::IntList(vec![1, 1])),
    ];
    let mut leaky = layer("leaky_relu", "h", "a");
    leaky.attrs = vec![("slope".into(), Value::Float(0.01))];
    w.set_graph(Graph {
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        layers: vec![conv, leaky, layer("global_avg_pool2d", "a", "y")],
    });
    finish(w)
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let out = root.join("from_bytes");
    std::fs::create_dir_all(&out).unwrap();
    let seeds = [
        ("small_model", small_model()),
        ("codecs", codecs()),
        ("raws", raws()),
        ("metadata", metadata()),
        ("graph", graph()),
        ("empty", finish(writer())),
    ];
    for (name, bytes) in seeds {
        // Every seed must open and decode.
        let f = lsqr_format::LsqFile::from_bytes(&bytes).unwrap();
        f.verify().unwrap();
        for i in 0..f.tensors().len() {
            f.tensor_at(i).unwrap().to_f32_vec().unwrap();
        }
        let path = out.join(format!("{name}.lsq"));
        std::fs::write(&path, &bytes).unwrap();
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    import_seeds(&root);
}

/// Where `scripts/fetch-models.sh` puts the models.
fn models_dir() -> PathBuf {
    match std::env::var_os("LSQR_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lsqr-models"),
    }
}

fn read(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("skipping {}: {e}", path.display());
            None
        }
    }
}

/// The first `n` bytes.
fn prefix(bytes: &[u8], n: usize) -> Vec<u8> {
    bytes[..n.min(bytes.len())].to_vec()
}

/// The member of a zip whose name ends with `suffix`.
fn member(zip: &[u8], suffix: &str) -> Option<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).ok()?;
    let name = archive.file_names().find(|n| n.ends_with(suffix))?.to_string();
    let mut out = Vec::new();
    archive.by_name(&name).ok()?.read_to_end(&mut out).ok()?;
    Some(out)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A one-initializer ONNX model (`ModelProto.graph.initializer`, f32 raw
/// data) named like a real layer.
fn tiny_onnx(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
    let mut tensor = Vec::new();
    for &d in dims {
        varint(&mut tensor, 1 << 3);
        varint(&mut tensor, d);
    }
    varint(&mut tensor, 2 << 3);
    varint(&mut tensor, 1); // FLOAT
    field(&mut tensor, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    field(&mut tensor, 9, &raw);
    let mut graph = Vec::new();
    field(&mut graph, 5, &tensor);
    field(&mut graph, 2, b"g");
    let mut model = Vec::new();
    varint(&mut model, 1 << 3);
    varint(&mut model, 8); // ir_version
    field(&mut model, 7, &graph);
    model
}

/// An `.npy` file of `shape` with `bytes`.
fn npy(descr: &str, shape: &str, bytes: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    out
}

/// A `.safetensors` file of one f32 tensor.
fn tiny_safetensors(name: &str, values: &[f32]) -> Vec<u8> {
    let n = values.len() * 4;
    let header = format!(
        "{{\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[0,{n}]}}}}",
        values.len()
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

fn import_seeds(root: &Path) {
    let models = models_dir();
    let fixtures =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/lsqr-import/tests/data/torch");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();

    // Pickles: byte 0 even = data.pkl of a zip checkpoint, odd = a whole
    // legacy stream (prefixes of the facenet models: their pickles come
    // first).
    for f in ["nested.pt", "lists.pt", "out_of_bounds.pt", "malicious.pt", "big_endian.pt"] {
        if let Some(pkl) = read(&fixtures.join(f)).and_then(|z| member(&z, "data.pkl")) {
            seeds.push(("import_pickle", format!("zip_{f}"), [&[0u8][..], &pkl].concat()));
        }
    }
    if let Some(b) = read(&fixtures.join("legacy.pt")) {
        seeds.push(("import_pickle", "legacy_fixture".into(), [&[1u8][..], &b].concat()));
    }
    for f in ["pnet.pt", "rnet.pt", "onet.pt"] {
        if let Some(b) = read(&models.join("facenet").join(f)) {
            let p = prefix(&b, 32 << 10);
            seeds.push(("import_pickle", format!("facenet_{f}"), [&[1u8][..], &p].concat()));
        }
    }
    // TorchScript: data.pkl of the silero model and of the fixture.
    if let Some(pkl) =
        read(&models.join("silero/silero_vad.jit")).and_then(|z| member(&z, "/data.pkl"))
    {
        seeds.push(("import_torchscript", "silero_data_pkl".into(), pkl));
    }
    if let Some(pkl) = read(&fixtures.join("script.pt")).and_then(|z| member(&z, "data.pkl")) {
        seeds.push(("import_torchscript", "fixture_data_pkl".into(), pkl));
    }
    // ONNX: prefixes of the real models (their headers, opsets and first
    // nodes) and a whole tiny model.
    for f in ["magika/model.onnx", "silero/silero_vad.onnx"] {
        if let Some(b) = read(&models.join(f)) {
            let tag = f.replace('/', "_");
            seeds.push(("import_onnx", format!("{tag}_4k"), prefix(&b, 4 << 10)));
            seeds.push(("import_onnx", format!("{tag}_32k"), prefix(&b, 32 << 10)));
        }
    }
    seeds.push(("import_onnx", "tiny".into(), tiny_onnx("dense.kernel", &[2, 3], &[0.5; 6])));
    // npy: arrays of several dtypes and shapes.
    let f32s: Vec<u8> = (0..12).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
    seeds.push(("import_npy", "f32_3x4".into(), npy("<f4", "(3, 4)", &f32s)));
    seeds.push(("import_npy", "f16_6".into(), npy("<f2", "(6,)", &f32s[..12])));
    seeds.push(("import_npy", "i64_scalar".into(), npy("<i8", "()", &f32s[..8])));
    seeds.push(("import_npy", "u8_fortran".into(), {
        let mut b = npy("|u1", "(2, 3)", &f32s[..6]);
        let at = b.windows(5).position(|w| w == b"False").unwrap();
        b[at..at + 5].copy_from_slice(b"True ");
        b
    }));
    // safetensors: the real headers with the start of their data, and a
    // whole tiny file.
    for f in ["silero/silero_vad_16k.safetensors", "minilm/model.safetensors"] {
        if let Some(b) = read(&models.join(f)) {
            let header = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let tag = f.replace('/', "_");
            seeds.push((
                "import_safetensors",
                format!("{tag}_header"),
                prefix(&b, 8 + header + 4096),
            ));
        }
    }
    seeds.push(("import_safetensors", "tiny".into(), tiny_safetensors("fc.weight", &[0.5; 6])));

    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(&name);
        std::fs::write(&path, &bytes).unwrap();
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}
