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

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use crate::codebook::{CodeWidth, Codebook, FpLayout};

    fn books(bits: u32) -> Vec<Codebook> {
        let w = CodeWidth::new(bits).unwrap();
        let lut: Vec<f32> =
            (0..w.code_count()).map(|i| ((i as f32).powf(1.3) / 40.0) - 0.9).collect();
        vec![
            Codebook::seed(w),
            Codebook::log(w, 0.0).unwrap(),
            Codebook::log(w, 300.0).unwrap(),
            Codebook::uniform(w),
            Codebook::nf(w),
            Codebook::fp(FpLayout::for_width(w)),
            Codebook::lut(w, lut).unwrap(),
        ]
    }

    fn avx2_matches_generic(cb: &Codebook, xs: &[f32], inv_scale: f32) {
        let mut simd = vec![0u16; xs.len()];
        let mut scalar = vec![0u16; xs.len()];
        // SAFETY: the caller checked that AVX2 is available.
        unsafe { super::avx2::encode_scaled(cb.encoder(), xs, inv_scale, &mut simd) };
        cb.encoder().encode_scaled_generic(xs, inv_scale, &mut scalar);
        assert_eq!(simd, scalar, "{} C={} inv_scale={inv_scale}", cb.kind(), cb.width().bits());
    }

    /// Every threshold and its f32 neighbours, for every family and width.
    #[test]
    fn avx2_matches_generic_at_every_threshold() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for bits in 2..=16 {
            for cb in books(bits) {
                let mut xs: Vec<f32> = cb
                    .encoder()
                    .thresholds
                    .iter()
                    .filter(|t| t.is_finite())
                    .flat_map(|&t| {
                        [t, -t, f32::from_bits(t.to_bits() + 1), -f32::from_bits(t.to_bits() + 1)]
                    })
                    .collect();
                xs.extend([0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 1e-30, -1e-30]);
                avx2_matches_generic(&cb, &xs, 1.0);
            }
        }
    }

    proptest! {
        #[test]
        fn avx2_matches_generic_on_random_input(
            bits in 2u32..=16,
            xs in prop::collection::vec(-2.0f32..2.0, 0..77),
            inv_scale in prop_oneof![Just(1.0f32), Just(0.0f32), 0.01f32..100.0],
        ) {
            if std::is_x86_feature_detected!("avx2") {
                for cb in books(bits) {
                    avx2_matches_generic(&cb, &xs, inv_scale);
                }
            }
        }
    }
}
