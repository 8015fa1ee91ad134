//! Fuzzes the `.npy` importer, and the `.npz` one with the input as a
//! stored entry of an archive.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lsqr_import::Format;

fuzz_target!(|data: &[u8]| {
    common::check(lsqr_import::from_bytes_as(data.to_vec(), "fuzz.npy", Format::Npy));
    let npz = common::zip(&[("a.npy", data)]);
    common::check(lsqr_import::from_bytes_as(npz, "fuzz.npz", Format::Npz));
});
