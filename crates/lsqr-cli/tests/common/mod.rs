//! Helpers shared by the tests that run the `lsqr` binary on real models.

#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// This test process's directory for its temporary files,
/// `lsqr-{tag}-{pid}` in the system's temporary directory. Those of
/// earlier runs whose process has exited (no `/proc/{pid}`) are removed
/// first, once per tag: a test process has no hook to remove its own when
/// it exits, and the real-model tests write hundreds of MB per run (51
/// runs had left 8.5 GB behind and filled a CI disk).
pub fn process_dir(tag: &str) -> PathBuf {
    static CLEANED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let base = std::env::temp_dir();
    let prefix = format!("lsqr-{tag}-");
    let me = std::process::id().to_string();
    let mut cleaned = CLEANED.lock().unwrap_or_else(|e| e.into_inner());
    if !cleaned.contains(&prefix) && Path::new("/proc/self").exists() {
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
            let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
            if is_pid && pid != me && !Path::new("/proc").join(pid).exists() {
                // Not a symlink's target: remove_dir_all removes a link itself.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        cleaned.push(prefix.clone());
    }
    let dir = base.join(format!("{prefix}{me}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where `scripts/fetch-models.sh` caches the models.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("LSQR_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lsqr-models"),
    }
}

/// The cached model `rel`, fetched first if missing (never skipped).
pub fn model(rel: &str) -> PathBuf {
    static FETCH: Mutex<()> = Mutex::new(());
    let path = models_dir().join(rel);
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-models.sh");
        assert!(
            Command::new("bash").arg(script).status().unwrap().success(),
            "fetch-models.sh failed"
        );
    }
    assert!(path.exists(), "{} missing after fetch-models.sh", path.display());
    path
}

/// Runs `lsqr ARGS`, which must succeed; its stdout.
pub fn lsqr(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lsqr")).args(args).output().unwrap();
    assert!(out.status.success(), "lsqr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Bits per quantized weight in a JSON report of `lsqr quantize` or
/// `lsqr inspect` (tensors with a width), everything stored counted.
pub fn quantized_bits_per_weight(report: &serde_json::Value) -> f64 {
    let (mut bytes, mut weights) = (0u64, 0u64);
    for t in report["tensors"].as_array().unwrap().iter().filter(|t| !t["bits"].is_null()) {
        bytes += t["stored_bytes"].as_u64().unwrap();
        weights +=
            t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>();
    }
    8.0 * bytes as f64 / weights as f64
}
