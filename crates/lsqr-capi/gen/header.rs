//! Generates `include/lsqr.h` from this crate with cbindgen; shared by
//! `examples/gen_header.rs` (writes it) and `tests/header.rs` (checks the
//! committed file is what it would write).

use std::path::{Path, PathBuf};

/// The crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the committed header lives.
pub fn header_path() -> PathBuf {
    crate_dir().join("../../include/lsqr.h")
}

/// The version macros: cbindgen cannot evaluate `env!`, so they are put
/// after the includes from the Cargo version this code is compiled with.
pub fn version_macros() -> String {
    format!(
        "#define LSQR_VERSION_MAJOR {}\n#define LSQR_VERSION_MINOR {}\n#define LSQR_VERSION_PATCH {}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    )
}

/// The header's text.
pub fn generate() -> String {
    let dir = crate_dir();
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .expect("crates/lsqr-capi/cbindgen.toml parses");
    config.after_includes = Some(version_macros());
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

/// Writes the header to `path`.
#[allow(dead_code)] // used by the example, not the test
pub fn write(path: &Path) {
    std::fs::write(path, generate()).expect("include/lsqr.h is writable");
}
