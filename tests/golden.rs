//! A committed `.lsq` file pins the format: any change to how files are
//! read or written fails here.
//!
//! - `tests/data/golden-v1.lsq` must open, verify, and decode to values
//!   whose CRC-32 is recorded below (the reader and decode tables).
//! - Writing its decoded parts back must give the same bytes (the writer).
//!
//! To regenerate after a deliberate format change (and bump the version):
//! `LSQR_BLESS=1 cargo test --test golden`, then update `DECODED_CRC32`.

use std::io::Cursor;
use std::path::PathBuf;

use lsqr::codec::{
    quantize, CodeWidth, Codebook, CodebookParams, CodecKind, CodecSpec, GroupScales,
    QuantizeOptions, QuantizedTensor, ScaleDtype, Scaling,
};
use lsqr::format::{Graph, Layer, LsqFile, LsqWriter, RawDtype, TensorView, Value};
use lsqr::synthetic::{weights, Distribution};

/// CRC-32 of every tensor's values as f32 little-endian, in file order.
const DECODED_CRC32: u32 = 0xf2d6_2534;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden-v1.lsq")
}

/// The model the golden file was made from: every codec at several widths
/// and scalings, every raw dtype, metadata of every type, and a graph.
fn generate() -> Vec<u8> {
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_metadata("name", Value::String("lsqr golden v1".into())).unwrap();
    w.add_metadata("layers", Value::Int(2)).unwrap();
    w.add_metadata("std", Value::Float(0.05)).unwrap();
    w.add_metadata("trained", Value::Bool(false)).unwrap();
    // The graph follows the runtime's conventions (FORMAT.md §6.1): graph
    // input `x` has its shape in `input_shape.x`.
    w.add_metadata("input_shape.x", Value::IntList(vec![1, 40])).unwrap();
    w.add_metadata("mean", Value::FloatList(vec![0.5, -0.25])).unwrap();
    let data = weights(Distribution::Laplacian, 4 * 40, 0.05, 2024);
    for kind in CodecKind::ALL {
        for bits in [2, 4, 7, 8] {
            let mut o = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
            o.scaling = Scaling::Group(16);
            let q = quantize(&data, &[4, 40], &o).unwrap();
            w.add_quantized(&format!("{kind}.c{bits}"), &q).unwrap();
        }
    }
    let mut o = QuantizeOptions::new(CodecSpec::Log { mu: None }, 11);
    (o.scaling, o.scale_dtype) = (Scaling::Row, ScaleDtype::F32);
    w.add_quantized("log.c11.row", &quantize(&data, &[4, 2, 20], &o).unwrap()).unwrap();
    let o = QuantizeOptions::seed_reference(6);
    w.add_quantized("seed.c6.unit", &quantize(&data, &[160], &o).unwrap()).unwrap();
    for dtype in RawDtype::ALL {
        let bytes: Vec<u8> = (0..5 * dtype.size())
            .map(|i| if dtype == RawDtype::Bool { (i % 2) as u8 } else { (i * 37) as u8 })
            .collect();
        w.add_raw(&format!("raw.{}", dtype.name()), dtype, &[5], &bytes).unwrap();
    }
    w.add_raw_f32("fc.bias", &[4], &[0.1, -0.2, 0.3, 0.0]).unwrap();
    w.set_graph(Graph {
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        layers: vec![
            Layer {
                op: "linear".into(),
                inputs: vec!["x".into()],
                outputs: vec!["h".into()],
                weights: vec!["log.c4".into(), "fc.bias".into()],
                attrs: vec![],
            },
            Layer {
                op: "leaky_relu".into(),
                inputs: vec!["h".into()],
                outputs: vec!["y".into()],
                weights: vec![],
                attrs: vec![("alpha".into(), Value::Float(0.125))],
            },
        ],
    });
    w.finish().unwrap().into_inner()
}

fn decoded_crc(f: &LsqFile<'_>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for i in 0..f.tensors().len() {
        for v in f.tensor_at(i).unwrap().to_f32_vec().unwrap() {
            h.update(&v.to_le_bytes());
        }
    }
    h.finalize()
}

#[test]
fn golden_file_decodes_to_the_recorded_values() {
    if std::env::var_os("LSQR_BLESS").is_some() {
        let bytes = generate();
        std::fs::write(golden_path(), &bytes).unwrap();
        let crc = decoded_crc(&LsqFile::from_bytes(&bytes).unwrap());
        panic!(
            "wrote {} ({} bytes); set DECODED_CRC32 = {crc:#010x} and rerun without LSQR_BLESS",
            golden_path().display(),
            bytes.len()
        );
    }
    let f = LsqFile::open(golden_path()).unwrap();
    f.verify().unwrap();
    assert_eq!(f.tensors().len(), 6 * 4 + 2 + 10 + 1);
    assert_eq!(
        decoded_crc(&f),
        DECODED_CRC32,
        "decoded values changed: a reader or codebook change?"
    );
}

/// The golden graph follows the LSQR runtime's conventions (FORMAT.md
/// §6.1), so the runtime plans it: input shape from `input_shape.x`, only
/// known attribute keys.
#[test]
fn the_golden_graph_follows_the_runtime_conventions() {
    let f = LsqFile::open(golden_path()).unwrap();
    let plan = lsqr::runtime::Plan::new(&f).unwrap();
    assert_eq!(plan.inputs().len(), 1);
    assert_eq!(plan.outputs().len(), 1);
}

#[test]
fn writing_the_golden_parts_reproduces_its_bytes() {
    let golden = std::fs::read(golden_path()).unwrap();
    let f = LsqFile::from_bytes(&golden).unwrap();
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    for (k, v) in f.metadata() {
        w.add_metadata(k, v.clone()).unwrap();
    }
    for i in 0..f.tensors().len() {
        match f.tensor_at(i).unwrap() {
            TensorView::Raw(r) => {
                w.add_raw(&r.info().name, r.dtype(), &r.info().shape_usize(), r.bytes()).unwrap();
            }
            TensorView::Quantized(q) => {
                let spec = q.spec();
                let params = q.params().clone();
                let codebook =
                    Codebook::from_params(CodeWidth::new(spec.width.bits()).unwrap(), params)
                        .unwrap();
                let scales =
                    GroupScales::new(spec.scale_dtype.unwrap_or_default(), q.scales_f32()).unwrap();
                let tensor = QuantizedTensor::from_parts(
                    q.info().shape_usize(),
                    codebook,
                    spec.scaling,
                    scales,
                    q.codes().unwrap(),
                )
                .unwrap();
                if let CodebookParams::Lut(t) = q.params() {
                    assert_eq!(t.len(), 1 << spec.width.bits());
                }
                w.add_quantized(&q.info().name, &tensor).unwrap();
            }
        }
    }
    w.set_graph(f.graph().unwrap().clone());
    assert_eq!(w.finish().unwrap().into_inner(), golden, "the writer's output changed");
}
