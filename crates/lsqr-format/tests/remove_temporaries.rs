//! `remove_temporary_files`, what a signal-handling thread calls: it removes
//! the named temporary files being written and refuses new ones. In its own
//! test binary, since it closes the process-wide registry.

use std::fs;

use lsqr_format::{remove_temporary_files, LsqFileWriter};

#[test]
fn removes_named_temporaries_and_refuses_new_ones() {
    let dir = std::env::temp_dir().join(format!("lsqr-format-rmtmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("x.lsq");
    let mut w = LsqFileWriter::create_with(&dest, false).unwrap();
    w.writer().add_raw_f32("a", &[1], &[1.0]).unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    remove_temporary_files();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    let e = w.finish().unwrap_err();
    assert!(e.to_string().contains("interrupted"), "{e}");
    assert!(LsqFileWriter::create_with(&dest, false).is_err());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir_all(&dir).unwrap();
}
