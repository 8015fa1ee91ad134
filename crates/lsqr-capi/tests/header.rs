//! include/lsqr.h is generated, committed, and must not drift from the
//! exports or from the crate version.

use crate::header;

fn committed() -> String {
    std::fs::read_to_string(header::header_path()).expect("include/lsqr.h exists")
}

#[test]
fn committed_header_is_a_fresh_generation() {
    let fresh = header::generate();
    assert!(
        committed() == fresh,
        "include/lsqr.h is stale: run `cargo run -p lsqr-capi --example gen_header` and commit it"
    );
}

fn macro_value(text: &str, name: &str) -> String {
    let prefix = format!("#define {name} ");
    let values: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
    assert_eq!(values.len(), 1, "{name} is defined exactly once: {values:?}");
    values[0].trim().to_string()
}

#[test]
fn version_macros_match_cargo_and_lsqr_version() {
    let text = committed();
    assert_eq!(macro_value(&text, "LSQR_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(macro_value(&text, "LSQR_VERSION_MINOR"), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(macro_value(&text, "LSQR_VERSION_PATCH"), env!("CARGO_PKG_VERSION_PATCH"));
    // SAFETY: lsqr_version returns a static NUL-terminated string.
    let runtime = unsafe { std::ffi::CStr::from_ptr(crate::lsqr_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn header_uses_c_names_and_fixed_status_numbers() {
    let text = committed();
    for (name, number) in [
        ("LSQR_STATUS_OK", 0),
        ("LSQR_STATUS_PANIC", 1),
        ("LSQR_STATUS_NULL_ARGUMENT", 2),
        ("LSQR_STATUS_INVALID_ARGUMENT", 3),
        ("LSQR_STATUS_BUFFER_TOO_SMALL", 4),
        ("LSQR_STATUS_IO", 5),
        ("LSQR_STATUS_FORMAT", 6),
        ("LSQR_STATUS_NOT_FOUND", 7),
        ("LSQR_STATUS_SHAPE_MISMATCH", 8),
        ("LSQR_STATUS_UNSUPPORTED", 9),
        ("LSQR_STATUS_ARENA_TOO_SMALL", 10),
        ("LSQR_STATUS_TYPE_MISMATCH", 11),
    ] {
        assert!(text.contains(&format!("    {name} = {number},")), "{name} = {number}");
    }
    assert!(text.contains("typedef struct lsqr_model lsqr_model;"));
    assert!(text.contains("typedef struct lsqr_tensor lsqr_tensor;"));
    assert!(text.contains("lsqr_status lsqr_model_open(const char *path, lsqr_model **out);"));
}
