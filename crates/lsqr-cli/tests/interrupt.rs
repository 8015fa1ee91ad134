//! An interrupted `lsqr quantize` leaves nothing beside its output: killed
//! with SIGKILL, SIGTERM or SIGINT mid-write, with the unnamed (`O_TMPFILE`)
//! temporary file and with the named fallback (`LSQR_NO_O_TMPFILE=1`,
//! where SIGKILL cannot be handled: the next run removes what it left).
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> PathBuf {
    let d = common::process_dir(&format!("cli-int-{tag}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("out")).unwrap();
    d
}

/// A safetensors file of `tensors` f32 matrices of 512 x 1024.
fn write_model(path: &Path, tensors: usize) {
    let len = 512 * 1024;
    let mut header = String::from("{");
    for i in 0..tensors {
        let (a, b) = (i * len * 4, (i + 1) * len * 4);
        if i > 0 {
            header.push(',');
        }
        header += &format!(
            "\"w{i}\":{{\"dtype\":\"F32\",\"shape\":[512,1024],\"data_offsets\":[{a},{b}]}}"
        );
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..tensors * len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    fs::write(path, bytes).unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn quantize(input: &Path, output: &Path, named: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsqr"));
    cmd.arg("quantize").arg(input).arg("-o").arg(output).args(["--bits", "4"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    if named {
        cmd.env("LSQR_NO_O_TMPFILE", "1");
    } else {
        cmd.env_remove("LSQR_NO_O_TMPFILE");
    }
    cmd.spawn().unwrap()
}

/// Whether the child's temporary file exists: named, in `out`; unnamed,
/// among its open files (`/proc/PID/fd`, where the link reads
/// `OUT/#INODE (deleted)`).
fn writing(child: &Child, out: &Path, named: bool) -> bool {
    if named {
        return listing(out).iter().any(|n| n.contains(".tmp-"));
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", child.id())) else { return false };
    fds.flatten().any(|e| fs::read_link(e.path()).is_ok_and(|l| l.starts_with(out)))
}

/// Runs quantize and sends `signal` once it is writing; retries with a
/// bigger input if it finished first, and checks what is left in the
/// output folder.
fn interrupt(tag: &str, signal: i32, named: bool) {
    let dir = temp_dir(tag);
    let out = dir.join("out");
    let input = dir.join("in.safetensors");
    let mut tensors = 16;
    for _attempt in 0..5 {
        write_model(&input, tensors);
        let mut child = quantize(&input, &out.join("m.lsq"), named);
        let start = Instant::now();
        let mut finished = false;
        while !writing(&child, &out, named) {
            if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(30) {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !finished {
            // Into writing tensors.
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: signalling our own child, which has not been waited for.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
        let status = child.wait().unwrap();
        let complete = out.join("m.lsq").exists();
        if complete {
            // Published before the signal (then killed or not): the file is
            // whole. Try again with more to do.
            let file = lsqr::format::LsqFile::open(out.join("m.lsq")).unwrap();
            file.verify().unwrap();
            drop(file);
            fs::remove_file(out.join("m.lsq")).unwrap();
            tensors *= 4;
            continue;
        }
        assert_eq!(status.signal(), Some(signal), "{tag}: {status:?}");
        let left = listing(&out);
        if named && signal == libc::SIGKILL {
            // Nothing could run: the named temporary stays until the next
            // write of m.lsq, which removes it (its process is dead).
            assert!(left.len() == 1 && left[0].starts_with(".m.lsq.tmp-"), "{left:?}");
            write_model(&input, 1);
            let status = quantize(&input, &out.join("m.lsq"), named).wait().unwrap();
            assert!(status.success());
            assert_eq!(listing(&out), ["m.lsq"]);
        } else {
            assert!(left.is_empty(), "{tag}: left behind {left:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
        return;
    }
    panic!("{tag}: quantize always finished before the signal");
}

#[cfg(target_os = "linux")]
#[test]
fn sigkill_leaves_nothing_with_o_tmpfile() {
    interrupt("kill", libc::SIGKILL, false);
}

#[cfg(target_os = "linux")]
#[test]
fn sigterm_leaves_nothing_with_o_tmpfile() {
    interrupt("term", libc::SIGTERM, false);
}

#[cfg(target_os = "linux")]
#[test]
fn sigint_leaves_nothing_with_o_tmpfile() {
    interrupt("int", libc::SIGINT, false);
}

#[test]
fn sigterm_removes_the_named_temporary() {
    interrupt("term-named", libc::SIGTERM, true);
}

#[test]
fn sigint_removes_the_named_temporary() {
    interrupt("int-named", libc::SIGINT, true);
}

#[test]
fn sigkill_named_temporary_is_removed_by_the_next_run() {
    interrupt("kill-named", libc::SIGKILL, true);
}

/// A hand-made `.m.lsq.tmp-<dead pid>-0` is removed by the next quantize to
/// m.lsq; a live process's is kept; with and without `O_TMPFILE`.
#[test]
fn stale_temporaries_of_dead_processes_are_removed() {
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    for named in [true, false] {
        let dir = temp_dir(&format!("stale-{named}"));
        let out = dir.join("out");
        let input = dir.join("in.safetensors");
        write_model(&input, 1);
        let stale = format!(".m.lsq.tmp-{dead_pid}-0");
        let alive = format!(".m.lsq.tmp-{}-0", live.id());
        fs::write(out.join(&stale), b"partial").unwrap();
        fs::write(out.join(&alive), b"partial").unwrap();
        assert!(quantize(&input, &out.join("m.lsq"), named).wait().unwrap().success());
        assert_eq!(listing(&out), [alive, "m.lsq".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }
    live.kill().unwrap();
    live.wait().unwrap();
}
