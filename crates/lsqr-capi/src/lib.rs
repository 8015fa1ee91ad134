//! The C API of LSQR: `liblsqr.so` / `liblsqr.a` with the header
//! `include/lsqr.h` (generated from this crate by cbindgen:
//! `cargo run -p lsqr-capi --example gen_header`).
//!
//! The conventions (README.md, "C API conventions") follow rustls-ffi:
//!
//! - opaque handles: `lsqr_model` (owned: `lsqr_model_free`),
//!   `lsqr_tensor` (borrowed from its model, never freed), `lsqr_weight`
//!   (a tensor prepared for repeated linear or conv2d products; owned:
//!   `lsqr_weight_free`, the model outliving it) and `lsqr_micro` (the
//!   micro runtime: a model's graph planned and bound to a caller-owned
//!   arena; owned: `lsqr_micro_free`);
//! - every fallible function returns an `lsqr_status`, whose numbers are
//!   fixed forever; outputs are written only on success; `*_free(NULL)` is
//!   a no-op;
//! - every export runs inside a panic boundary (`catch_unwind`): nothing
//!   unwinds into C, a caught panic is `LSQR_STATUS_PANIC`;
//! - `lsqr_last_error()` gives the calling thread's message for the last
//!   failure, with the tensor name and byte offset the reader reports.
//!
//! The library must be built with `panic = "unwind"` (Cargo's default):
//! with `panic = "abort"` a bug would abort the host process instead of
//! returning `LSQR_STATUS_PANIC`.
//!
//! Only `cdylib` and `staticlib` are built (an rlib would be named like the
//! root `lsqr` crate's); Rust programs use the `lsqr` crate. The tests call
//! the exports from Rust exactly as C would (tests/api.rs, compiled into
//! this crate's unit tests).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs)]
// The exported types keep their C names (`lsqr_model`, `lsqr_status`), so
// the header cbindgen writes needs no renaming table.
#![allow(non_camel_case_types)]

use std::ffi::c_char;

mod error;
mod micro;
mod model;
mod ops;
mod weight;

pub use error::{lsqr_last_error, lsqr_status, lsqr_status_str};
pub use micro::{
    lsqr_micro, lsqr_micro_arena_size, lsqr_micro_borrow_output, lsqr_micro_free,
    lsqr_micro_get_output, lsqr_micro_input_count, lsqr_micro_input_shape, lsqr_micro_layer_count,
    lsqr_micro_load, lsqr_micro_output_count, lsqr_micro_output_shape, lsqr_micro_run,
    lsqr_micro_run_layer, lsqr_micro_set_exact, lsqr_micro_set_input,
};
pub use model::{
    lsqr_codec, lsqr_dtype, lsqr_model, lsqr_model_find_tensor, lsqr_model_free,
    lsqr_model_metadata_count, lsqr_model_metadata_get_bool, lsqr_model_metadata_get_float,
    lsqr_model_metadata_get_float_list, lsqr_model_metadata_get_int,
    lsqr_model_metadata_get_int_list, lsqr_model_metadata_get_string, lsqr_model_metadata_key_at,
    lsqr_model_metadata_type, lsqr_model_open, lsqr_model_open_memory, lsqr_model_tensor_at,
    lsqr_model_tensor_count, lsqr_model_verify, lsqr_scaling, lsqr_tensor, lsqr_tensor_get_info,
    lsqr_tensor_info, lsqr_value_type, LSQR_MAX_DIMS,
};
pub use ops::{
    lsqr_conv2d, lsqr_conv2d_output_shape, lsqr_conv2d_params, lsqr_linear, lsqr_tensor_dequantize,
};
pub use weight::{
    lsqr_weight, lsqr_weight_conv2d, lsqr_weight_conv2d_output_shape, lsqr_weight_free,
    lsqr_weight_is_exact, lsqr_weight_linear, lsqr_weight_prepare, lsqr_weight_set_exact,
};

/// The library version (`MAJOR.MINOR.PATCH`, the crate's version), for
/// checking at run time that the loaded library matches the header's
/// `LSQR_VERSION_*` macros. A static string: never NULL, never freed.
///
/// Thread-safe: reads only static data.
#[no_mangle]
pub extern "C" fn lsqr_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => panic!("the crate version has no NUL byte"),
    };
    // Nothing here can panic; the boundary keeps the rule without
    // exception (its fallback is the same static string).
    error::boundary_value(VERSION.as_ptr(), || VERSION.as_ptr())
}

/// The example model of the tests and ffi-examples.
#[cfg(test)]
#[path = "../gen/example_model.rs"]
mod example_model;

/// The header generator, for the drift test.
#[cfg(test)]
#[path = "../gen/header.rs"]
mod header;

/// Every export called as C would call it.
#[cfg(test)]
#[path = "../tests/api.rs"]
mod api_tests;

/// The committed header against a fresh generation and the version.
#[cfg(test)]
#[path = "../tests/header.rs"]
mod header_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn a_panic_is_caught_and_reported() {
        let status = error::boundary(|| panic!("boom {}", 42));
        assert_eq!(status, lsqr_status::Panic);
        // SAFETY: lsqr_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(lsqr_last_error()) }.to_str().unwrap();
        assert_eq!(msg, "panic inside liblsqr: boom 42");
        assert_eq!(error::boundary_value(7, || panic!("x")), 7);
        // A success clears it.
        assert_eq!(error::boundary(|| Ok(())), lsqr_status::Ok);
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(lsqr_last_error()) }.to_bytes(), b"");
    }
}
