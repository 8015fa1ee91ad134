//! Fuzzes the restricted unpickler and the PyTorch checkpoint importer.
//! The first byte picks the container: even, the rest is the `data.pkl` of
//! a zip checkpoint (with storages `0`..`15`); odd, the rest is a whole
//! legacy `torch.save` stream.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lsqr_import::Format;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let result = if mode % 2 == 0 {
        lsqr_import::from_bytes_as(common::checkpoint(rest, false), "fuzz.pt", Format::TorchZip)
    } else {
        lsqr_import::from_bytes_as(rest.to_vec(), "fuzz.pt", Format::TorchLegacy)
    };
    common::check(result);
});
