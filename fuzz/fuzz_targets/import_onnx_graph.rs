//! Fuzzes the ONNX graph import (node and attribute parsing, shape
//! inference, constant folding, fusions): any input gives a graph or an
//! error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lsqr_import::onnx_graph::{graph_of, GraphOptions};
use lsqr_import::Format;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = lsqr_import::from_bytes_as(data.to_vec(), "fuzz.onnx", Format::Onnx) else {
        return;
    };
    let _ = graph_of(&model, &GraphOptions::default());
});
