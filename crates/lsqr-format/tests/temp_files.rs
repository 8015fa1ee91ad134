//! Temporary files of `LsqFileWriter`: unnamed (`O_TMPFILE`) on Linux, the
//! named fallback, and removing the stale temporaries of dead processes.

use std::fs;
use std::path::{Path, PathBuf};

use lsqr_format::{LsqFile, LsqFileWriter};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lsqr-format-tmp-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn value(path: &Path) -> f32 {
    LsqFile::open(path).unwrap().tensor("a").unwrap().to_f32_vec().unwrap()[0]
}

/// On Linux (where the test folder's filesystem takes `O_TMPFILE`), no
/// name appears in the folder until `finish`, which creates or replaces
/// the destination.
#[cfg(target_os = "linux")]
#[test]
fn unnamed_temporary_has_no_name_until_finish() {
    let dir = temp_dir("unnamed");
    let dest = dir.join("x.lsq");
    for v in [1.0, 2.0] {
        let mut w = LsqFileWriter::create_with(&dest, true).unwrap();
        if !w.is_unnamed() {
            eprintln!("skipped: O_TMPFILE unsupported in {}", dir.display());
            return;
        }
        w.writer().add_raw_f32("a", &[1], &[v]).unwrap();
        let before: Vec<String> = if v == 1.0 { vec![] } else { vec!["x.lsq".into()] };
        assert_eq!(listing(&dir), before);
        w.finish().unwrap();
        // The second round replaces the existing file.
        assert_eq!(listing(&dir), ["x.lsq"]);
        assert_eq!(value(&dest), v);
    }
    // Dropped unfinished: nothing changes.
    let mut w = LsqFileWriter::create_with(&dest, true).unwrap();
    w.writer().add_raw_f32("a", &[1], &[3.0]).unwrap();
    drop(w);
    assert_eq!(listing(&dir), ["x.lsq"]);
    assert_eq!(value(&dest), 2.0);
    fs::remove_dir_all(&dir).unwrap();
}

/// The fallback: a named `.NAME.tmp-PID-N` while writing, renamed at
/// `finish`, removed when dropped unfinished.
#[test]
fn named_fallback_is_renamed_or_removed() {
    let dir = temp_dir("named");
    let dest = dir.join("x.lsq");
    let mut w = LsqFileWriter::create_with(&dest, false).unwrap();
    assert!(!w.is_unnamed());
    w.writer().add_raw_f32("a", &[1], &[1.0]).unwrap();
    let names = listing(&dir);
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with(&format!(".x.lsq.tmp-{}-", std::process::id())), "{names:?}");
    drop(w);
    assert!(listing(&dir).is_empty());
    let mut w = LsqFileWriter::create_with(&dest, false).unwrap();
    w.writer().add_raw_f32("a", &[1], &[4.0]).unwrap();
    w.finish().unwrap();
    assert_eq!(listing(&dir), ["x.lsq"]);
    assert_eq!(value(&dest), 4.0);
    fs::remove_dir_all(&dir).unwrap();
}

/// Writing NAME removes `.NAME.tmp-PID-N` and `.NAME.tmp-PID` files of
/// dead processes, and keeps those of live ones and anything else.
#[cfg(unix)]
#[test]
fn stale_temporaries_of_dead_processes_are_removed() {
    use std::process::Command;
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let live_pid = live.id();
    for unnamed in [false, true] {
        let dir = temp_dir(&format!("stale-{unnamed}"));
        let dest = dir.join("x.lsq");
        let kept = [
            format!(".x.lsq.tmp-{live_pid}-0"),
            format!(".x.lsq.tmp-{dead_pid}-0-junk"),
            format!(".x.lsq.tmp-{dead_pid}-"),
            format!(".y.lsq.tmp-{dead_pid}-0"),
            format!("x.lsq.tmp-{dead_pid}-0"),
        ];
        let removed = [format!(".x.lsq.tmp-{dead_pid}-0"), format!(".x.lsq.tmp-{dead_pid}")];
        for n in kept.iter().chain(&removed) {
            fs::write(dir.join(n), b"partial").unwrap();
        }
        let mut w = LsqFileWriter::create_with(&dest, unnamed).unwrap();
        w.writer().add_raw_f32("a", &[1], &[1.0]).unwrap();
        w.finish().unwrap();
        let mut expected: Vec<String> = kept.to_vec();
        expected.push("x.lsq".into());
        expected.sort();
        assert_eq!(listing(&dir), expected);
        fs::remove_dir_all(&dir).unwrap();
    }
    live.kill().unwrap();
    live.wait().unwrap();
}
