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
//! `crates/lsqr-format/tests/fuzz_regressions.rs` runs the same checks over
//! saved inputs; keep the two in sync.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lsqr_format::{LsqFile, TensorView, PREAMBLE_LEN};

/// Tensors with more elements than this are listed but not decoded.
const MAX_DECODE: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(fixed) = repair_preamble(data) {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let Ok(file) = LsqFile::from_bytes(data) else { return };
    check_reencodes(data, &file);
    let _ = file.verify();
    let _ = (file.metadata().len(), file.graph().map(|g| g.layers.len()));
    let mut name_bytes = 0usize;
    for (i, info) in file.tensors().iter().enumerate() {
        name_bytes += info.name.len();
        assert_eq!(file.tensor_index(&info.name), Some(i), "lookup of '{}'", info.name);
        if info.element_count() > MAX_DECODE {
            continue;
        }
        let Ok(view) = file.tensor_at(i) else { continue };
        let values = view.to_f32_vec();
        assert!(values.is_ok(), "tensor '{}' opened but does not decode: {values:?}", info.name);
        if let TensorView::Quantized(q) = &view {
            let codes = q.codes();
            assert!(codes.is_ok(), "tensor '{}': codes: {codes:?}", info.name);
            let _ = q.scales_f32();
        }
    }
    std::hint::black_box(name_bytes);
    assert!(file.tensor_at(file.tensors().len()).is_err());

    // The same bytes, in pieces: a valid file's strict prefixes (and the
    // file with a byte appended) must be rejected.
    let len = data.len();
    for k in [0, 1, 63, 64, len / 2, len.saturating_sub(64), len - 1] {
        if k < len {
            assert!(LsqFile::from_bytes(&data[..k]).is_err(), "prefix of {k}/{len} bytes accepted");
        }
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(LsqFile::from_bytes(&longer).is_err(), "file with a trailing byte accepted");
}

/// The header and preamble of an accepted file are what the encoder writes
/// for what was parsed.
fn check_reencodes(data: &[u8], file: &LsqFile<'_>) {
    let le64 = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let header_offset = le64(16);
    let header = lsqr_format::raw::encode_header(file.metadata(), file.tensors(), file.graph());
    assert!(data[header_offset as usize..] == header[..], "header does not re-encode");
    let crc = u32::from_le_bytes(data[40..44].try_into().unwrap());
    let preamble = lsqr_format::raw::encode_preamble(header_offset, header.len() as u64, crc);
    assert!(data[..64] == preamble[..], "preamble does not re-encode");
}

/// `data` with the file length, header length and both checksums made
/// consistent, when its header offset lies in the file.
fn repair_preamble(data: &[u8]) -> Option<Vec<u8>> {
    let len = data.len() as u64;
    if len < PREAMBLE_LEN {
        return None;
    }
    let mut out = data.to_vec();
    let header_offset = u64::from_le_bytes(out[16..24].try_into().unwrap());
    if !(PREAMBLE_LEN..=len).contains(&header_offset) {
        return None;
    }
    out[24..32].copy_from_slice(&(len - header_offset).to_le_bytes());
    out[32..40].copy_from_slice(&len.to_le_bytes());
    let header_crc = crc32fast::hash(&out[header_offset as usize..]);
    out[40..44].copy_from_slice(&header_crc.to_le_bytes());
    let preamble_crc = crc32fast::hash(&out[..44]);
    out[44..48].copy_from_slice(&preamble_crc.to_le_bytes());
    (out != data).then_some(out)
}
