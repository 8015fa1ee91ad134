//! x86-64 paths: the AVX2+FMA kernel table.

pub(crate) mod avx2;
pub(crate) mod gemm;

use crate::kernels::Kernels;

/// Whether this CPU runs the AVX2+FMA kernels (ignores `LSQR_FORCE_SCALAR`).
#[cfg(feature = "std")]
pub(crate) fn avx2_fma_detected() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether this build targets AVX2+FMA (no run-time detection without `std`).
#[cfg(not(feature = "std"))]
pub(crate) fn avx2_fma_detected() -> bool {
    cfg!(target_feature = "avx2") && cfg!(target_feature = "fma")
}

/// Safe wrappers over the `unsafe` AVX2 kernels. They are only reachable
/// through [`AVX2`], which `crate::arch` hands out only after
/// [`avx2_fma_detected`] returned `true`.
mod safe {
    use super::avx2;

    macro_rules! wrap {
        ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
            pub(super) fn $name($($arg: $ty),*) {
                // SAFETY: this wrapper is reachable only through the AVX2
                // table, handed out only once AVX2 and FMA were detected.
                unsafe { avx2::$name($($arg),*) }
            }
        )*};
    }

    wrap! {
        relu(x: &mut [f32]);
        relu6(x: &mut [f32]);
        leaky_relu(x: &mut [f32], alpha: f32);
        sigmoid(x: &mut [f32]);
        tanh(x: &mut [f32]);
        gelu(x: &mut [f32]);
        gelu_tanh(x: &mut [f32]);
        silu(x: &mut [f32]);
        hardsigmoid(x: &mut [f32]);
        hardswish(x: &mut [f32]);
        add(a: &[f32], b: &[f32], out: &mut [f32]);
        mul(a: &[f32], b: &[f32], out: &mut [f32]);
        add_scalar(a: &[f32], s: f32, out: &mut [f32]);
        mul_scalar(a: &[f32], s: f32, out: &mut [f32]);
        affine(x: &mut [f32], scale: f32, shift: f32);
        softmax(x: &mut [f32], axis_len: usize);
        layer_norm(x: &mut [f32], axis_len: usize, gamma: &[f32], beta: &[f32], eps: f32);
    }

    pub(super) fn dot_codes_grouped(
        table: &[f32],
        codes: &[u16],
        x: &[f32],
        scales: &[f32],
        group: usize,
    ) -> f32 {
        if !table.len().is_power_of_two() || group == 0 {
            return crate::arch::generic::dot_codes_grouped(table, codes, x, scales, group);
        }
        // SAFETY: as `dot_codes`; the kernel also reads only the scales of
        // groups that exist in min(codes.len(), x.len()) and stops at
        // `scales.len()` groups.
        unsafe { avx2::dot_codes_grouped(table, codes, x, scales, group) }
    }

    pub(super) fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
        // The kernel works on raw pointers: check the extents (cheap, once
        // per call) so that no caller can make it read out of bounds.
        let fits = |len: usize, r: usize, s: usize| r.checked_mul(s).is_some_and(|e| e <= len);
        assert!(
            fits(a.len(), m, k) && fits(b.len(), k, n) && fits(c.len(), m, n),
            "matmul: buffers smaller than their shapes"
        );
        // SAFETY: the table is handed out only once AVX2 and FMA were
        // detected; the lengths were checked just above.
        unsafe { avx2::matmul(a, b, c, m, k, n) }
    }
}

/// Safe wrappers over the GEMM and depthwise kernels, same contract as
/// [`safe`]: reachable only through [`AVX2`].
mod safe_gemm {
    use super::gemm;
    use crate::conv::DwPlane;
    use crate::gemm::TILE;

    pub(super) fn gemm_tile(
        a: &[f32],
        lda: usize,
        b: &[f32],
        kc: usize,
        mr: usize,
        nr: usize,
        out: &mut [f32; TILE],
    ) {
        let max_rows = match nr {
            16 => 6,
            8 => 12,
            _ => 0,
        };
        let a_fits = (mr.saturating_sub(1))
            .checked_mul(lda)
            .and_then(|s| s.checked_add(kc))
            .is_some_and(|e| e <= a.len());
        let b_fits = kc.checked_mul(nr).is_some_and(|e| e <= b.len());
        if mr == 0 || mr > max_rows || kc == 0 || !a_fits || !b_fits {
            return crate::gemm::tile_portable(a, lda, b, kc, mr, nr, out);
        }
        // SAFETY: AVX2 and FMA were detected (only the AVX2 table reaches
        // here); the extents of a, b and out were checked just above
        // (mr * nr <= 96 <= TILE).
        unsafe { gemm::tile(a, lda, b, kc, mr, nr, out) }
    }

    pub(super) fn decode_codes(table: &[f32], codes: &[u16], scale: f32, out: &mut [f32]) {
        if !table.len().is_power_of_two() {
            return crate::gemm::decode_portable(table, codes, scale, out);
        }
        // SAFETY: AVX2 and FMA were detected; the table length is a power
        // of two, so masked codes index inside it.
        unsafe { gemm::decode(table, codes, scale, out) }
    }

    pub(super) fn decode_bytes(
        table: &[f32],
        bits: u32,
        bytes: &[u8],
        scale: f32,
        out: &mut [f32],
    ) {
        let want = match bits {
            8 => 256,
            4 => 16,
            _ => 0,
        };
        if table.len() != want {
            return crate::gemm::decode_bytes_portable(table, bits, bytes, scale, out);
        }
        // SAFETY: AVX2 and FMA were detected; the table has 2^bits entries
        // and bits is 4 or 8, the kernel's contract.
        unsafe { gemm::decode_bytes(table, bits, bytes, scale, out) }
    }

    pub(super) fn depthwise_plane(p: &DwPlane<'_>, out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were detected; the body is safe code.
        unsafe { gemm::depthwise_plane(p, out) }
    }
}

/// The AVX2+FMA kernel table. Only `crate::arch` may hand it out, after
/// detection.
pub(crate) static AVX2: Kernels = Kernels {
    name: "avx2+fma",
    relu: safe::relu,
    relu6: safe::relu6,
    leaky_relu: safe::leaky_relu,
    sigmoid: safe::sigmoid,
    tanh: safe::tanh,
    gelu: safe::gelu,
    gelu_tanh: safe::gelu_tanh,
    silu: safe::silu,
    hardsigmoid: safe::hardsigmoid,
    hardswish: safe::hardswish,
    add: safe::add,
    mul: safe::mul,
    add_scalar: safe::add_scalar,
    mul_scalar: safe::mul_scalar,
    affine: safe::affine,
    softmax: safe::softmax,
    layer_norm: safe::layer_norm,
    matmul: safe::matmul,
    dot_codes_grouped: safe::dot_codes_grouped,
    gemm_tile: safe_gemm::gemm_tile,
    decode_codes: safe_gemm::decode_codes,
    decode_bytes: safe_gemm::decode_bytes,
    depthwise_plane: safe_gemm::depthwise_plane,
};

#[cfg(all(test, feature = "std"))]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use crate::arch::generic;

    proptest! {
        /// The AVX2 `dot_codes_grouped` equals the portable one up to
        /// summation order, for register (<= 16 entries) and gathered
        /// tables, any length and group (tails included).
        #[test]
        fn dot_codes_grouped_matches_portable(log_len in prop::sample::select(vec![1u32, 2, 3, 4, 5, 8, 12, 16]), n in 0usize..150, seed in any::<u64>()) {
            if !super::avx2_fma_detected() {
                return Ok(());
            }
            let len = 1usize << log_len;
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let table: Vec<f32> = (0..len).map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
            let codes: Vec<u16> = (0..n).map(|_| (next() as usize % len) as u16).collect();
            let x: Vec<f32> = (0..n).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect();
            for group in [1usize, 16, 64, 7, n.max(1)] {
                let scales: Vec<f32> = (0..n.div_ceil(group)).map(|g| 0.5 + g as f32 * 0.25).collect();
                let simd = super::safe::dot_codes_grouped(&table, &codes, &x, &scales, group);
                let scalar = generic::dot_codes_grouped(&table, &codes, &x, &scales, group);
                let size: f32 = codes.iter().zip(&x).enumerate().map(|(i, (&c, &v))| (scales[i / group] * table[usize::from(c)] * v).abs()).sum();
                prop_assert!((simd - scalar).abs() <= 1e-5 * size + 1e-30, "group {}: {} vs {}", group, simd, scalar);
            }
        }
    }
}
