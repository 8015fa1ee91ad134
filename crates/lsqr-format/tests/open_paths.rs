//! `LsqFile::open` reads only regular files: a FIFO, a directory or a
//! device is refused by path before anything is read, so no caller can
//! block on a FIFO (docs/FORMAT.md §7).

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use lsqr_format::{FormatError, LsqFile};

/// Opens `path` on another thread, failing the test (instead of hanging)
/// if `open` blocks.
fn open_err(path: &Path) -> FormatError {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || tx.send(LsqFile::open(&p).map(|_| ())).unwrap());
    rx.recv_timeout(Duration::from_secs(20))
        .expect("LsqFile::open blocked")
        .expect_err("must be refused")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lsqr-open-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let fifo = scratch("model.lsq");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(st.success());
    let e = open_err(&fifo);
    assert!(matches!(&e, FormatError::NotAFile { kind: "FIFO", .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&fifo.display().to_string()) && msg.contains("FIFO"), "{msg}");
    std::fs::remove_file(&fifo).unwrap();
}

#[test]
fn a_directory_and_a_device_are_refused() {
    let dir = std::env::temp_dir();
    let e = open_err(&dir);
    assert!(matches!(&e, FormatError::NotAFile { kind: "directory", .. }), "{e}");
    assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
    let e = open_err(Path::new("/dev/null"));
    assert!(matches!(&e, FormatError::NotAFile { kind: "character device", .. }), "{e}");
}

#[test]
fn a_missing_path_is_an_io_error_naming_it() {
    let p = scratch("missing.lsq");
    let e = open_err(&p);
    assert!(matches!(&e, FormatError::Io { .. }), "{e}");
    assert!(e.to_string().contains(&p.display().to_string()), "{e}");
}
