//! Test support: the real models, fetched on first use.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The cache folder `scripts/fetch-models.sh` fills.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("LSQR_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/lsqr-models")
        }
    }
}

/// The path of a fetched model file, e.g. `model("facenet/pnet.pt")`. If it
/// is missing, runs `scripts/fetch-models.sh` (once per process) rather
/// than skipping the test.
pub fn model(rel: &str) -> PathBuf {
    static FETCH: Mutex<bool> = Mutex::new(false);
    let path = models_dir().join(rel);
    if !path.exists() {
        let mut fetched = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        if !*fetched {
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-models.sh");
            let status =
                Command::new("bash").arg(&script).status().expect("run scripts/fetch-models.sh");
            assert!(status.success(), "scripts/fetch-models.sh failed");
            *fetched = true;
        }
    }
    assert!(path.exists(), "{} is missing after scripts/fetch-models.sh", path.display());
    path
}
