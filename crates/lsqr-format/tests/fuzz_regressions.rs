//! Replays every input saved in `tests/data/fuzz-regressions/` (crashes
//! found by `fuzz/fuzz_targets/from_bytes.rs`, minimised, and a few seeds)
//! through the same checks as the fuzz target: opening, re-encoding the
//! header, `verify`, listing, decoding, and rejecting the file's prefixes.
//! None of it may panic. Keep `check` in sync with the fuzz target.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use lsqr_format::{LsqFile, TensorView, PREAMBLE_LEN};

/// Tensors with more elements than this are listed but not decoded.
const MAX_DECODE: usize = 1 << 16;

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions")
}

/// What the fuzz target does with one input: tries it as is, then with its
/// preamble repaired. Returns whether each was accepted.
fn fuzz_one(data: &[u8]) -> (bool, Option<bool>) {
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
    let header = lsqr_format::raw::encode_header(file.metadata(), file.tensors(), file.graph());
    assert!(data[header_offset as usize..] == header[..], "header does not re-encode");
    let crc = u32::from_le_bytes(data[40..44].try_into().unwrap());
    let preamble = lsqr_format::raw::encode_preamble(header_offset, header.len() as u64, crc);
    assert!(data[..64] == preamble[..], "preamble does not re-encode");
}

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

#[test]
fn saved_inputs_do_not_panic() {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .expect("tests/data/fuzz-regressions exists")
        .map(|e| e.expect("listing fuzz regressions").path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no saved fuzz inputs");
    let mut panicked = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("reading a saved input");
        match catch_unwind(AssertUnwindSafe(|| fuzz_one(&data))) {
            Ok(outcome) => {
                eprintln!("{}: accepted (as is, repaired) = {outcome:?}", path.display())
            }
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    assert!(panicked.is_empty(), "panicked on: {panicked:?}");
}

/// The seed of the folder: a valid file cut short is rejected, as is, and
/// with its preamble repaired (its header is then cut short).
#[test]
fn truncated_file_is_rejected() {
    let data = std::fs::read(regressions_dir().join("truncated-small-model.bin")).unwrap();
    assert_eq!(fuzz_one(&data), (false, Some(false)));
    assert!(matches!(
        LsqFile::from_bytes(&data),
        Err(lsqr_format::FormatError::FileLength { declared: 1136, actual: 1000 })
    ));
}
