//! Fuzzes `LsqFile::from_bytes` and everything reachable from an opened file.
//!
//! Each input is tried twice:
//! 1. as is, which exercises the preamble checks and the checksums;
//! 2. with its preamble repaired (file length, header length, header and
//!    preamble CRC-32 recomputed), so that mutations of the header reach the
//!    header parser instead of stopping at a checksum mismatch.
//!
//! For every accepted file it checks, besides "never panics":
//! - the header and preamble re-encode to the same bytes (the encoding is
//!   canonical: every field is validated, every reserved byte is zero);
//! - every tensor is found by its name at its own index;
//! - a tensor view that opens also decodes (section lengths were validated);
//! - no strict prefix of the file, nor the file plus one byte, is accepted
//!   (the preamble declares the file length).
//!
//! `crates/lsqr-format/tests/fuzz_regressions.rs` replays saved inputs
//! through the same checker, `lsqr_format::raw::fuzz_one`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The checks live in lsqr-format (`raw::fuzz_one`), shared with its
// `tests/fuzz_regressions.rs`.
fuzz_target!(|data: &[u8]| {
    lsqr_format::raw::fuzz_one(data);
});
