//! The small `.lsq` model the C examples and the Rust tests run on: one
//! quantized linear layer with a raw bias, a quantized conv2d layer, raw
//! f16/bf16/f32 tensors and one metadata entry of each type. Shared by
//! `examples/make_example_model.rs` and the tests.

use lsqr_codec::{quantize, CodecSpec, QuantizeOptions, ScaleDtype, Scaling};
use lsqr_format::{LsqWriter, RawDtype, Value};

/// Deterministic weights with a trained-layer-like spread (~0.05).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 * 0.618 + seed as f32 * 1.7;
            0.05 * (t.sin() + 0.5 * (3.1 * t).cos())
        })
        .collect()
}

/// Shape of `fc.weight`: `[out, in]`.
pub const FC: [usize; 2] = [32, 128];
/// Shape of `conv.weight`: `[out, in, kh, kw]`.
pub const CONV: [usize; 4] = [8, 3, 3, 3];

/// The model's bytes.
pub fn build() -> Vec<u8> {
    let mut w = LsqWriter::new(std::io::Cursor::new(Vec::new())).expect("writer");
    for (key, value) in [
        ("model", Value::String("lsqr-capi example".into())),
        ("layers", Value::Int(2)),
        ("dropout", Value::Float(0.125)),
        ("quantized", Value::Bool(true)),
        ("input_shape", Value::IntList(vec![1, 3, 8, 8])),
        ("mean", Value::FloatList(vec![0.485, 0.456, 0.406])),
    ] {
        w.add_metadata(key, value).expect("metadata");
    }
    let fc = values(FC[0] * FC[1], 1);
    let q = quantize(&fc, &FC, &QuantizeOptions::new(CodecSpec::Log { mu: None }, 4))
        .expect("quantize fc");
    w.add_quantized("fc.weight", &q).expect("fc.weight");
    w.add_raw_f32("fc.bias", &[FC[0]], &values(FC[0], 2)).expect("fc.bias");
    let conv = values(CONV.iter().product(), 3);
    let options = QuantizeOptions {
        scaling: Scaling::Row,
        scale_dtype: ScaleDtype::F32,
        ..QuantizeOptions::new(CodecSpec::Nf, 3)
    };
    let q = quantize(&conv, &CONV, &options).expect("quantize conv");
    w.add_quantized("conv.weight", &q).expect("conv.weight");
    let f16: Vec<u8> =
        values(CONV[0], 4).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    w.add_raw("conv.bias", RawDtype::F16, &[CONV[0]], &f16).expect("conv.bias");
    let bf16: Vec<u8> =
        values(FC[0], 5).iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    w.add_raw("norm.gamma", RawDtype::BF16, &[FC[0]], &bf16).expect("norm.gamma");
    w.add_raw_f32("head.weight", &[4, FC[0]], &values(4 * FC[0], 6)).expect("head.weight");
    w.finish().expect("finish").into_inner()
}
