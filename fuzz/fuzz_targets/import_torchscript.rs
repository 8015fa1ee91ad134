//! Fuzzes the TorchScript importer: the input is the `data.pkl` of a
//! TorchScript archive (with a `code/` folder and storages `0`..`15`), read
//! with `__torch__.*` classes allowed as inert records.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lsqr_import::Format;

fuzz_target!(|data: &[u8]| {
    let archive = common::checkpoint(data, true);
    common::check(lsqr_import::from_bytes_as(archive, "fuzz.pt", Format::TorchScript));
});
