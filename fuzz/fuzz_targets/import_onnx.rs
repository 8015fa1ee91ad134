//! Fuzzes the ONNX importer (protobuf decoding, initializers, `Constant`
//! nodes, subgraphs). External data is refused for in-memory models, so
//! nothing outside the input is read.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lsqr_import::Format;

fuzz_target!(|data: &[u8]| {
    common::check(lsqr_import::from_bytes_as(data.to_vec(), "fuzz.onnx", Format::Onnx));
});
