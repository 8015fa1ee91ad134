//! x86-64 paths.

pub(crate) mod avx2;

use core::sync::atomic::{AtomicU8, Ordering};

use crate::codebook::threshold::ThresholdTable;

const UNKNOWN: u8 = 0;
const SCALAR: u8 = 1;
const AVX2: u8 = 2;

static PATH: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The path this process uses, detected on first call.
fn path() -> u8 {
    match PATH.load(Ordering::Relaxed) {
        UNKNOWN => {
            let p = if avx2_available() { AVX2 } else { SCALAR };
            PATH.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

#[cfg(feature = "std")]
fn avx2_available() -> bool {
    !crate::arch::force_scalar() && std::is_x86_feature_detected!("avx2")
}

#[cfg(not(feature = "std"))]
fn avx2_available() -> bool {
    cfg!(target_feature = "avx2")
}

/// Encodes on the best x86-64 path; `false` if only the portable path applies.
#[inline]
pub(crate) fn encode_scaled(
    table: &ThresholdTable,
    xs: &[f32],
    inv_scale: f32,
    out: &mut [u16],
) -> bool {
    if path() != AVX2 {
        return false;
    }
    // SAFETY: `path()` returns AVX2 only after detecting AVX2 on this CPU
    // (or when the build itself targets AVX2).
    unsafe { avx2::encode_scaled(table, xs, inv_scale, out) };
    true
}
