//! The checks of the `from_bytes` fuzz target, shared with
//! `tests/fuzz_regressions.rs`, which replays saved inputs through them:
//! one checker, so the two cannot drift apart.
//!
//! Each input is tried as is and with its preamble repaired (lengths and
//! CRC-32s made consistent, so header mutations reach the parser). For an
//! accepted file: the header and preamble re-encode to the same bytes,
//! every tensor is found by name at its index, a view that opens also
//! decodes, and no strict prefix nor the file plus one byte is accepted.

use alloc::vec::Vec;

use crate::{LsqFile, TensorView, PREAMBLE_LEN};

/// Tensors with more elements than this are listed but not decoded.
const MAX_DECODE: usize = 1 << 16;

/// What the fuzz target does with one input: tries it as is, then with its
/// preamble repaired. Returns whether each was accepted.
pub fn fuzz_one(data: &[u8]) -> (bool, Option<bool>) {
    let as_is = check(data);
    let repaired = repair_preamble(data).map(|fixed| check(&fixed));
    (as_is, repaired)
}

fn check(data: &[u8]) -> bool {
    let Ok(file) = LsqFile::from_bytes(data) else { return false };
    check_reencodes(data, &file);
    let _ = file.verify();
    let _ = (file.metadata().len(), file.graph().map(|g| g.layers.len()));
    for (i, info) in file.tensors().iter().enumerate() {
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
    assert!(file.tensor_at(file.tensors().len()).is_err());

    let len = data.len();
    for k in [0, 1, 63, 64, len / 2, len.saturating_sub(64), len - 1] {
        if k < len {
            assert!(LsqFile::from_bytes(&data[..k]).is_err(), "prefix of {k}/{len} bytes accepted");
        }
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(LsqFile::from_bytes(&longer).is_err(), "file with a trailing byte accepted");
    true
}

fn check_reencodes(data: &[u8], file: &LsqFile<'_>) {
    let le64 = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let header_offset = le64(16);
    let header = crate::header::encode_header(file.metadata(), file.tensors(), file.graph());
    assert!(data[header_offset as usize..] == header[..], "header does not re-encode");
    let crc = u32::from_le_bytes(data[40..44].try_into().unwrap());
    let minor = u16::from_le_bytes([data[10], data[11]]);
    let preamble = crate::header::encode_preamble(minor, header_offset, header.len() as u64, crc);
    assert!(data[..64] == preamble[..], "preamble does not re-encode");
}

/// `data` with the preamble's lengths and both checksums recomputed (so
/// that a mutated header reaches the parser), or `None` when nothing
/// changes or the header offset is out of range.
pub fn repair_preamble(data: &[u8]) -> Option<Vec<u8>> {
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
