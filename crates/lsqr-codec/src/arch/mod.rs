//! CPU-specific encoders behind one entry point.
//!
//! As in memchr: one module per architecture, a portable path that always
//! builds, and a choice made once per process. With `std`, the choice is made
//! at run time by CPU feature detection and cached; without `std`, by the
//! compile-time target features. `LSQR_FORCE_SCALAR=1` in the environment
//! (read once, with `std`) forces the portable path, so the whole test suite
//! can run on it.

use crate::codebook::threshold::ThresholdTable;

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// Encodes `xs[i] * inv_scale` into `out[i]` (equal lengths).
#[inline]
pub(crate) fn encode_scaled(table: &ThresholdTable, xs: &[f32], inv_scale: f32, out: &mut [u16]) {
    debug_assert_eq!(xs.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if x86_64::encode_scaled(table, xs, inv_scale, out) {
        return;
    }
    table.encode_scaled_generic(xs, inv_scale, out);
}

/// Whether the portable path has been forced by `LSQR_FORCE_SCALAR`.
#[cfg(feature = "std")]
pub(crate) fn force_scalar() -> bool {
    std::env::var_os("LSQR_FORCE_SCALAR").is_some_and(|v| v != "0" && !v.is_empty())
}
