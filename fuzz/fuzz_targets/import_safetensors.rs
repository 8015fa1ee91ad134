//! Fuzzes the `.safetensors` importer.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lsqr_import::Format;

fuzz_target!(|data: &[u8]| {
    common::check(lsqr_import::from_bytes_as(
        data.to_vec(),
        "fuzz.safetensors",
        Format::Safetensors,
    ));
});
