//! Whatever is written reads back the same: every codec, width, scaling,
//! scale dtype, shape (empty and one-element included) and raw dtype.

mod common;

use std::io::Cursor;

use common::{small_model, values};
use lsqr_codec::{
    quantize, CodecKind, CodecSpec, QuantizeOptions, QuantizedTensor, ScaleDtype, Scaling,
};
use lsqr_format::{LsqFile, LsqWriter, RawDtype, Storage, TensorView, Value};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Entry {
    Quantized {
        shape: Vec<usize>,
        kind: usize,
        bits: u32,
        scaling: usize,
        f32_scales: bool,
        seed: u64,
    },
    Raw {
        shape: Vec<usize>,
        dtype: usize,
        seed: u64,
    },
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0]),
        Just(vec![1]),
        Just(vec![1, 1]),
        Just(vec![3, 0, 2]),
        prop::collection::vec(1usize..9, 1..4),
        (1usize..5, 1usize..150).prop_map(|(r, c)| vec![r, c]),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (shape(), 0usize..6, 2u32..=16, 0usize..4, any::<bool>(), any::<u64>()).prop_map(
            |(shape, kind, bits, scaling, f32_scales, seed)| Entry::Quantized {
                shape,
                kind,
                bits,
                scaling,
                f32_scales,
                seed
            }
        ),
        (shape(), 0usize..10, any::<u64>()).prop_map(|(shape, dtype, seed)| Entry::Raw {
            shape,
            dtype,
            seed
        }),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,20}".prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(Value::IntList),
        prop::collection::vec(-1e9f64..1e9, 0..5).prop_map(Value::FloatList),
    ]
}

fn quantized(
    shape: &[usize],
    kind: usize,
    bits: u32,
    scaling: usize,
    f32_scales: bool,
    seed: u64,
) -> QuantizedTensor {
    let n: usize = shape.iter().product();
    let mut o = QuantizeOptions::new(CodecSpec::default_for(CodecKind::ALL[kind]), bits);
    o.scaling = [Scaling::Unit, Scaling::Tensor, Scaling::Row, Scaling::Group(16)][scaling];
    o.scale_dtype = if f32_scales { ScaleDtype::F32 } else { ScaleDtype::F16 };
    quantize(&values(n, seed, 0.5), shape, &o).unwrap()
}

fn raw_bytes(n: usize, dtype: RawDtype, seed: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> =
        values(n * dtype.size(), seed, 1.0).iter().map(|v| (v * 127.0) as i8 as u8).collect();
    if dtype == RawDtype::Bool {
        bytes.iter_mut().for_each(|b| *b &= 1);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_model_round_trips(entries in prop::collection::vec(entry(), 0..6), meta in prop::collection::vec(value(), 0..4)) {
        let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
        for (i, v) in meta.iter().enumerate() {
            w.add_metadata(&format!("key{i}"), v.clone()).unwrap();
        }
        let mut expected = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let name = format!("t{i}.ü");
            match e {
                Entry::Quantized { shape, kind, bits, scaling, f32_scales, seed } => {
                    let q = quantized(shape, *kind, *bits, *scaling, *f32_scales, *seed);
                    w.add_quantized(&name, &q).unwrap();
                    expected.push((name, Ok(q)));
                }
                Entry::Raw { shape, dtype, seed } => {
                    let dtype = RawDtype::ALL[*dtype];
                    let bytes = raw_bytes(shape.iter().product(), dtype, *seed);
                    w.add_raw(&name, dtype, shape, &bytes).unwrap();
                    expected.push((name, Err((dtype, shape.clone(), bytes))));
                }
            }
        }
        let file = w.finish().unwrap().into_inner();
        let f = LsqFile::from_bytes(&file).unwrap();
        f.verify().unwrap();
        prop_assert_eq!(f.metadata().len(), meta.len());
        for (i, v) in meta.iter().enumerate() {
            prop_assert_eq!(f.metadata_get(&format!("key{i}")), Some(v));
        }
        prop_assert_eq!(f.tensors().len(), expected.len());
        for (name, want) in &expected {
            let view = f.tensor(name).unwrap();
            match (want, &view) {
                (Ok(q), TensorView::Quantized(v)) => {
                    prop_assert_eq!(v.info().shape_usize(), q.shape().to_vec());
                    prop_assert_eq!(&v.codebook().unwrap(), q.codebook());
                    prop_assert_eq!(v.decode_table(), q.codebook().decode_table());
                    prop_assert_eq!(v.codes().unwrap(), q.codes().to_vec());
                    prop_assert_eq!(v.scales_f32(), q.scales().values().to_vec());
                    prop_assert_eq!(view.to_f32_vec().unwrap(), q.dequantize());
                }
                (Err((dtype, shape, bytes)), TensorView::Raw(r)) => {
                    prop_assert_eq!(r.dtype(), *dtype);
                    prop_assert_eq!(&r.info().shape_usize(), shape);
                    prop_assert_eq!(r.bytes(), &bytes[..]);
                    prop_assert_eq!(r.info().storage, Storage::Raw(*dtype));
                }
                _ => prop_assert!(false, "{} came back as the wrong kind", name),
            }
        }
        // Every data section is 64-byte aligned.
        for t in f.tensors() {
            for s in [t.data, t.scales, t.table] {
                prop_assert!(s.len == 0 || s.offset % 64 == 0);
            }
        }
    }
}

#[test]
fn writing_is_deterministic() {
    assert_eq!(small_model(), small_model());
}

#[test]
fn graph_and_metadata_survive() {
    let file = small_model();
    let f = LsqFile::from_bytes(&file).unwrap();
    let g = f.graph().unwrap();
    assert_eq!(g.layers[0].op, "linear");
    assert_eq!(g.layers[0].weights, ["fc.weight", "fc.bias"]);
    assert_eq!(g.layers[0].attr("activation"), Some(&Value::String("relu".into())));
    assert_eq!(f.metadata_get("layers"), Some(&Value::Int(1)));
    assert_eq!(f.tensor_info("fc.bias").unwrap().shape, [8]);
}

#[test]
fn file_writer_round_trips_through_mmap() {
    let dir = std::env::temp_dir().join(format!("lsqr-format-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.lsq");
    let q = quantized(&[3, 70], 1, 4, 3, false, 5);
    let mut w = lsqr_format::LsqFileWriter::create(&path).unwrap();
    w.writer().add_quantized("w", &q).unwrap();
    w.finish().unwrap();
    let f = LsqFile::open(&path).unwrap();
    f.verify().unwrap();
    assert_eq!(f.tensor("w").unwrap().to_f32_vec().unwrap(), q.dequantize());
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["m.lsq"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `quantized_bits_per_weight` counts codes, scales and tables of the
/// quantized tensors only: a 4-bit `lut` weight of 8 x 64 with scales per
/// 32 stores 256 bytes of codes, plus its scales and table; a raw tensor
/// beside it does not count, and a file without a quantized tensor has no
/// figure.
#[test]
fn quantized_bits_per_weight_counts_everything_stored() {
    let mut o = QuantizeOptions::new(CodecSpec::default_for(CodecKind::Lut), 4);
    o.scaling = Scaling::Group(32);
    let q = quantize(&values(512, 3, 1.0), &[8, 64], &o).unwrap();
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_quantized("w", &q).unwrap();
    w.add_raw_f32("bias", &[8], &values(8, 4, 1.0)).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let info = file.tensor_info("w").unwrap();
    assert_eq!(info.data.len, 256);
    assert!(info.scales.len > 0 && info.table.len > 0);
    let stored = info.data.len + info.scales.len + info.table.len;
    assert_eq!(file.quantized_bits_per_weight(), Some(8.0 * stored as f64 / 512.0));
    assert!(file.quantized_bits_per_weight().unwrap() > 4.5);

    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("bias", &[8], &values(8, 4, 1.0)).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    assert_eq!(LsqFile::from_bytes(&bytes).unwrap().quantized_bits_per_weight(), None);
}
