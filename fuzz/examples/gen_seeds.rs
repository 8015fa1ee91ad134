//! Writes the seed corpus of the `from_bytes` target: small valid files
//! made by the writer, covering every section kind, codec, scaling, scale
//! dtype and raw dtype, metadata of every value type, and a graph.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus/from_bytes`.

use std::io::Cursor;
use std::path::PathBuf;

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
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/from_bytes"));
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
}
