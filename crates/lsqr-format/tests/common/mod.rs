//! Shared helpers: small models, and a way to rebuild a file around a
//! modified header with valid checksums.
#![allow(dead_code)]

use std::io::Cursor;

use lsqr_codec::{quantize, CodecSpec, QuantizeOptions, Scaling};
use lsqr_format::raw::{encode_header, encode_preamble};
use lsqr_format::{Graph, Layer, LsqFile, LsqWriter, RawDtype, TensorInfo, Value};

/// Deterministic pseudo-random values in [-amp, amp).
pub fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
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

/// A small model with every section kind: a quantized weight with scales,
/// a lut tensor with a table, a raw bias, metadata and a graph.
pub fn small_model() -> Vec<u8> {
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_metadata("name", Value::String("small".into())).unwrap();
    w.add_metadata("layers", Value::Int(1)).unwrap();
    let weight = values(8 * 40, 1, 0.1);
    let q =
        quantize(&weight, &[8, 40], &QuantizeOptions::new(CodecSpec::Log { mu: None }, 5)).unwrap();
    w.add_quantized("fc.weight", &q).unwrap();
    let mut o = QuantizeOptions::new(CodecSpec::Lut, 3);
    o.scaling = Scaling::Row;
    let q = quantize(&values(4 * 16, 2, 1.0), &[4, 16], &o).unwrap();
    w.add_quantized("lut.weight", &q).unwrap();
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
    w.finish().unwrap().into_inner()
}

/// Where the header starts, from the preamble.
pub fn header_offset(file: &[u8]) -> usize {
    u64::from_le_bytes(file[16..24].try_into().unwrap()) as usize
}

/// Rebuilds `file` with `header` in place of its header, and checksums
/// that match, so that only the header's content is wrong.
pub fn with_header(file: &[u8], header: &[u8]) -> Vec<u8> {
    let at = header_offset(file);
    let mut out = file[..at].to_vec();
    out.extend_from_slice(header);
    out[..64].copy_from_slice(&encode_preamble(
        u16::from_le_bytes([file[10], file[11]]),
        at as u64,
        header.len() as u64,
        crc32fast::hash(header),
    ));
    out
}

/// Rebuilds `file` with the header re-encoded from edited parts.
pub fn edit(
    file: &[u8],
    change: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<TensorInfo>, &mut Option<Graph>),
) -> Vec<u8> {
    let f = LsqFile::from_bytes(file).unwrap();
    let mut metadata = f.metadata().to_vec();
    let mut tensors = f.tensors().to_vec();
    let mut graph = f.graph().cloned();
    change(&mut metadata, &mut tensors, &mut graph);
    with_header(file, &encode_header(&metadata, &tensors, graph.as_ref()))
}

/// Patches bytes of the header at `rel` (relative to the header start) and
/// fixes the checksums.
pub fn patch_header(file: &[u8], rel: usize, bytes: &[u8]) -> Vec<u8> {
    let at = header_offset(file);
    let mut header = file[at..].to_vec();
    header[rel..rel + bytes.len()].copy_from_slice(bytes);
    with_header(file, &header)
}

/// Patches preamble bytes and fixes the preamble checksum.
pub fn patch_preamble(file: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    out[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = crc32fast::hash(&out[..44]);
    out[44..48].copy_from_slice(&crc.to_le_bytes());
    out
}

pub const RAW_DTYPES: [RawDtype; 10] = RawDtype::ALL;
