//! Replays every input saved in `tests/data/fuzz-regressions/` (crashes
//! found by `fuzz/fuzz_targets/from_bytes.rs`, minimised, and a few seeds)
//! through the same checks as the fuzz target: opening, re-encoding the
//! header, `verify`, listing, decoding, and rejecting the file's prefixes.
//! None of it may panic. Keep `check` in sync with the fuzz target.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use lsqr_format::raw::fuzz_one;
use lsqr_format::LsqFile;

/// Tensors with more elements than this are listed but not decoded.
fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions")
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
