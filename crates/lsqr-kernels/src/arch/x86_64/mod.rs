//! x86-64 paths: the AVX2+FMA kernel table.

pub(crate) mod avx2;
pub(crate) mod gemm;
mod gemv;

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

    pub(super) fn gemv_packed(w: &crate::kernels::PackedRows<'_>, x: &[f32], y: &mut [f32]) {
        let consistent = w.cols == x.len()
            && w.packed.len() >= y.len().saturating_mul(w.cols / 8 * w.bits as usize)
            && w.group > 0
            && y.len().checked_sub(1).is_none_or(|last| {
                w.scales.len() > last * w.scale_stride + (w.cols.max(1) - 1) / w.group
            });
        let done = if consistent && super::gemv::supports(w) {
            // SAFETY: the table is handed out only once AVX2 and FMA were
            // detected; `supports` and the extents were checked just above.
            unsafe { super::gemv::gemv(w, x, y) }
        } else {
            0
        };
        if done < y.len() {
            // The rows the fused kernel did not take: unpack, then the
            // AVX2 dot (one scale per call).
            let rest = crate::kernels::PackedRows {
                packed: w.packed.get(done * w.cols * w.bits as usize / 8..).unwrap_or_default(),
                scales: w.scales.get(done * w.scale_stride..).unwrap_or_default(),
                ..*w
            };
            let dot = |t: &[f32], c: &[u16], v: &[f32]| {
                dot_codes_grouped(t, c, v, &[1.0], c.len().max(1))
            };
            crate::arch::generic::gemv_packed_with(&rest, x, &mut y[done..], dot);
        }
    }

    pub(super) fn decode_packed(w: &crate::kernels::PackedRows<'_>, start: usize, out: &mut [f32]) {
        let last_group = |e: usize| (e / w.cols) * w.scale_stride + (e % w.cols) / w.group;
        let consistent = w.cols > 0
            && w.group > 0
            && out.last().is_none_or(|_| {
                start
                    .checked_add(out.len())
                    .is_some_and(|end| end <= w.packed.len() * 8 / w.bits as usize)
                    && w.scales.len() > last_group(start + out.len() - 1)
            });
        let done = if consistent && super::gemv::supports(w) {
            // SAFETY: AVX2 and FMA were detected (this table is handed out
            // only then); `supports` and the scale extent checked above.
            unsafe { super::gemv::decode(w, start, out) }
        } else {
            0
        };
        crate::arch::generic::decode_packed(w, start + done, &mut out[done..]);
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
    gemv_packed: safe::gemv_packed,
    decode_packed: safe::decode_packed,
    gemm_tile: safe_gemm::gemm_tile,
    depthwise_plane: safe_gemm::depthwise_plane,
};

#[cfg(all(test, feature = "std"))]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use crate::arch::generic;

    /// Random inputs of the code-kernel tests: a table of 2^bits values in
    /// [-1, 1) (its top half the bottom half negated when `sign_magnitude`,
    /// the xor-sign path), `count` codes, and more values on demand.
    struct Case {
        table: Vec<f32>,
        codes: Vec<u16>,
        state: u64,
    }

    impl Case {
        fn new(bits: u32, count: usize, sign_magnitude: bool, seed: u64) -> Self {
            let len = 1usize << bits;
            let mut case = Case { table: Vec::new(), codes: Vec::new(), state: seed | 1 };
            case.table =
                (0..len).map(|_| (case.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect();
            if sign_magnitude && len >= 2 {
                for i in 0..len / 2 {
                    case.table[i + len / 2] = -case.table[i];
                }
            }
            case.codes = (0..count).map(|_| (case.next() as usize % len) as u16).collect();
            case
        }

        fn next(&mut self) -> u64 {
            let s = &mut self.state;
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s
        }

        /// `n` values in [-0.5, 0.5).
        fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect()
        }

        /// The codes packed LSB-first, exactly as long as they need.
        fn packed(&self) -> Vec<u8> {
            let bits = self.table.len().trailing_zeros();
            let mut packed = vec![0u8; lsqr_pack::packed_len(self.codes.len(), bits).unwrap()];
            lsqr_pack::pack_into(&self.codes, bits, &mut packed).unwrap();
            packed
        }
    }

    /// `n` group scales, 0.5 to 2.0.
    fn scales(n: usize) -> Vec<f32> {
        (0..n).map(|g| 0.5 + (g % 7) as f32 * 0.25).collect()
    }

    proptest! {
        /// The AVX2 `dot_codes_grouped` equals the portable one up to
        /// summation order, for register (<= 16 entries) and gathered
        /// tables, any length and group (tails included).
        #[test]
        fn dot_codes_grouped_matches_portable(log_len in prop::sample::select(vec![1u32, 2, 3, 4, 5, 8, 12, 16]), n in 0usize..150, sign_magnitude in prop::bool::ANY, seed in any::<u64>()) {
            if !super::avx2_fma_detected() {
                return Ok(());
            }
            let mut case = Case::new(log_len, n, sign_magnitude, seed);
            let x = case.values(n);
            let (table, codes) = (&case.table, &case.codes);
            for group in [1usize, 16, 64, 7, n.max(1)] {
                let scales: Vec<f32> = (0..n.div_ceil(group)).map(|g| 0.5 + g as f32 * 0.25).collect();
                let simd = super::safe::dot_codes_grouped(table, codes, &x, &scales, group);
                let scalar = generic::dot_codes_grouped(table, codes, &x, &scales, group);
                let size: f32 = codes.iter().zip(&x).enumerate().map(|(i, (&c, &v))| (scales[i / group] * table[usize::from(c)] * v).abs()).sum();
                prop_assert!((simd - scalar).abs() <= 1e-5 * size + 1e-30, "group {}: {} vs {}", group, simd, scalar);
            }
        }
    }

    proptest! {
        /// The AVX2 batch-1 packed kernel (fused for C <= 8 with whole
        /// 8-code chunks, unpack-then-dot otherwise) equals the portable
        /// one up to summation order: every C, odd and aligned widths,
        /// every scale layout, and a packed buffer cut to its exact length
        /// (so the last rows' wide loads must be avoided).
        #[test]
        fn gemv_packed_matches_portable(
            bits in 1u32..=16,
            rows in 1usize..10,
            cols8 in 0usize..40,
            odd in prop::bool::ANY,
            layout in 0usize..5,
            sign_magnitude in prop::bool::ANY,
            seed in any::<u64>(),
        ) {
            if !super::avx2_fma_detected() {
                return Ok(());
            }
            let cols = cols8 * 8 + usize::from(odd) * 3;
            let mut case = Case::new(bits, rows * cols, sign_magnitude, seed);
            let x = case.values(cols);
            let (table, codes, packed) = (&case.table, &case.codes, case.packed());
            let (scale_stride, group) = match layout {
                0 => (0, cols.max(1)),
                1 => (1, cols.max(1)),
                2 => (cols.div_ceil(16), 16),
                3 => (cols.div_ceil(32), 32),
                _ => (cols.div_ceil(24).max(1), 24),
            };
            let scales = scales(rows * scale_stride.max(1));
            let job = crate::kernels::PackedRows { packed: &packed, bits, cols, table, scales: &scales, scale_stride, group };
            let (mut simd, mut scalar) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
            super::safe::gemv_packed(&job, &x, &mut simd);
            generic::gemv_packed(&job, &x, &mut scalar);
            for r in 0..rows {
                let size: f32 = (0..cols).map(|c| (scales[r * scale_stride + c / group] * table[usize::from(codes[r * cols + c])] * x[c]).abs()).sum();
                prop_assert!((simd[r] - scalar[r]).abs() <= 1e-5 * size + 1e-30, "C={} row {}: {} vs {}", bits, r, simd[r], scalar[r]);
            }
        }
    }

    proptest! {
        /// The AVX2 decoder equals the portable one bit for bit (one
        /// multiply per element on both paths), from any start, for every
        /// C and scale layout, up to the exact end of the packed data.
        #[test]
        fn decode_packed_matches_portable(
            bits in 1u32..=16,
            rows in 1usize..6,
            cols8 in 1usize..20,
            odd in prop::bool::ANY,
            layout in 0usize..4,
            start8 in 0usize..8,
            sign_magnitude in prop::bool::ANY,
            seed in any::<u64>(),
        ) {
            if !super::avx2_fma_detected() {
                return Ok(());
            }
            let cols = cols8 * 8 + usize::from(odd) * 5;
            let case = Case::new(bits, rows * cols, sign_magnitude, seed);
            let (table, codes, packed) = (&case.table, &case.codes, case.packed());
            let (scale_stride, group) = match layout {
                0 => (0, cols),
                1 => (1, cols),
                2 => (cols.div_ceil(16), 16),
                _ => (cols.div_ceil(40), 40),
            };
            let scales = scales(rows * scale_stride.max(1));
            let job = crate::kernels::PackedRows { packed: &packed, bits, cols, table, scales: &scales, scale_stride, group };
            let start = (start8 * 8).min(codes.len());
            let n = codes.len() - start;
            let (mut simd, mut scalar) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            super::safe::decode_packed(&job, start, &mut simd);
            generic::decode_packed(&job, start, &mut scalar);
            for (k, (&a, &b)) in simd.iter().zip(&scalar).enumerate() {
                let e = start + k;
                let expected = table[usize::from(codes[e])] * scales[(e / cols) * scale_stride + (e % cols) / group];
                prop_assert_eq!(b.to_bits(), expected.to_bits());
                prop_assert_eq!(a.to_bits(), b.to_bits(), "C={} element {}", bits, e);
            }
        }
    }
}
