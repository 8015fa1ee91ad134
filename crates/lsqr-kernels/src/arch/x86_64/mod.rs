//! x86-64 paths: the AVX2+FMA kernel table.

pub(crate) mod avx2;
pub(crate) mod gemm;
mod gemv;
mod gemv_int;
mod gemv_int512;

use crate::kernels::Kernels;

/// Whether this CPU runs the AVX2+FMA kernels (ignores `LSQR_FORCE_SCALAR`).
#[cfg(feature = "std")]
pub(crate) fn avx2_fma_detected() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether this CPU runs the AVX-512 kernels (on top of AVX2+FMA; ignores
/// `LSQR_FORCE_SCALAR`).
#[cfg(feature = "std")]
pub(crate) fn avx512_detected() -> bool {
    avx2_fma_detected()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vbmi")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// Whether this build targets the AVX-512 kernels' features.
#[cfg(not(feature = "std"))]
pub(crate) fn avx512_detected() -> bool {
    avx2_fma_detected()
        && cfg!(target_feature = "avx512f")
        && cfg!(target_feature = "avx512bw")
        && cfg!(target_feature = "avx512vl")
        && cfg!(target_feature = "avx512vbmi")
        && cfg!(target_feature = "avx512vnni")
}

/// Whether this build targets AVX2+FMA (no run-time detection without `std`).
#[cfg(not(feature = "std"))]
pub(crate) fn avx2_fma_detected() -> bool {
    cfg!(target_feature = "avx2") && cfg!(target_feature = "fma")
}

/// Safe wrappers over the `unsafe` AVX2 kernels. They are only reachable
/// through [`AVX2`], which `crate::arch` hands out only after
/// [`avx2_fma_detected`] returned `true`.
pub(crate) mod safe {
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

    pub(crate) fn dot_codes_grouped(
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
                sub_scales: None,
                ..*w
            };
            let dot = |t: &[f32], c: &[u16], v: &[f32]| {
                dot_codes_grouped(t, c, v, &[1.0], c.len().max(1))
            };
            crate::arch::generic::gemv_packed_with(&rest, x, &mut y[done..], dot);
        }
    }

    /// Whether `y` has whole vectors for `w`'s batch, and the codes and
    /// scales cover its rows (what the integer kernels take on trust).
    pub(super) fn int_job_consistent(w: &crate::kernels::IntRows<'_>, y: &[f32]) -> bool {
        let p = &w.rows;
        let batch = w.batch.max(1);
        let rows = y.len() / batch;
        y.len().is_multiple_of(batch)
            && p.packed.len() >= rows.saturating_mul(p.cols / 8 * p.bits as usize)
            && p.group > 0
            && rows.checked_sub(1).is_none_or(|last| {
                p.scales.len() > last * p.scale_stride + (p.cols.max(1) - 1) / p.group
            })
    }

    /// `w` as the kernels may read it: its stored two-level scales kept
    /// only when they cover `y`'s rows as its f32 scales must (checked by
    /// [`int_job_consistent`]) and each 64-column block's groups lie in
    /// one super-block; otherwise the kernels read the f32 scales.
    pub(super) fn with_checked_sub_scales<'a>(
        w: &crate::kernels::IntRows<'a>,
        y: &[f32],
    ) -> crate::kernels::IntRows<'a> {
        let p = &w.rows;
        let rows = y.len() / w.batch.max(1);
        let fits = p.sub_scales.is_some_and(|s| {
            let last_group = (p.cols.max(1) - 1) / p.group.max(1);
            s.subs_per_super_log2 < usize::BITS
                && (p.group << s.subs_per_super_log2) >= 64
                && rows.checked_sub(1).is_none_or(|last| {
                    s.sub.len() > last * p.scale_stride + last_group
                        && s.sup.len() > last * s.sup_stride + (last_group >> s.subs_per_super_log2)
                })
        });
        let rows =
            crate::kernels::PackedRows { sub_scales: if fits { p.sub_scales } else { None }, ..*p };
        crate::kernels::IntRows { rows, ..*w }
    }

    pub(super) fn gemv_int(w: &crate::kernels::IntRows<'_>, y: &mut [f32]) {
        let batch = w.batch.max(1);
        let w = &with_checked_sub_scales(w, y);
        let consistent = int_job_consistent(w, y);
        let done = if consistent && super::gemv_int::supports(w) {
            // SAFETY: the table is handed out only once AVX2 was detected;
            // `supports` and the extents were checked just above.
            unsafe { super::gemv_int::gemv_int(w, y) }
        } else {
            0
        };
        // The last rows (whose 16-byte loads would pass the end of the
        // codes), or a job the kernel does not take: the reference, which
        // computes the same bits.
        crate::arch::generic::gemv_int_rows(w, done, &mut y[done * batch..]);
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

    use crate::arch::generic;
    use crate::elementwise::{BinaryOp, UnaryOp};
    use crate::reduce::RowReduce;

    pub(super) fn binary_same(op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) {
        // SAFETY: reachable only through the AVX2 table, handed out only
        // once AVX2 and FMA were detected; the kernel bounds itself by the
        // shortest slice.
        if !unsafe { avx2::binary_same(op, a, b, out) } {
            generic::binary_same(op, a, b, out)
        }
    }

    pub(super) fn binary_scalar_right(op: BinaryOp, a: &[f32], s: f32, out: &mut [f32]) {
        // SAFETY: as `binary_same`.
        if !unsafe { avx2::binary_scalar_right(op, a, s, out) } {
            generic::binary_scalar_right(op, a, s, out)
        }
    }

    pub(super) fn binary_scalar_left(op: BinaryOp, s: f32, b: &[f32], out: &mut [f32]) {
        // SAFETY: as `binary_same`.
        if !unsafe { avx2::binary_scalar_left(op, s, b, out) } {
            generic::binary_scalar_left(op, s, b, out)
        }
    }

    pub(super) fn unary(op: UnaryOp, x: &mut [f32]) {
        match op {
            UnaryOp::Relu => relu(x),
            UnaryOp::Relu6 => relu6(x),
            UnaryOp::LeakyRelu { alpha } => leaky_relu(x, alpha),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Tanh => tanh(x),
            UnaryOp::Gelu => gelu(x),
            UnaryOp::GeluTanh => gelu_tanh(x),
            UnaryOp::Silu => silu(x),
            UnaryOp::HardSwish => hardswish(x),
            // SAFETY: as `binary_same`.
            _ if unsafe { avx2::unary(op, x) } => {}
            _ => generic::unary(op, x),
        }
    }

    pub(super) fn reduce_row(op: RowReduce, row: &[f32]) -> f32 {
        // SAFETY: as `binary_same`.
        match unsafe { avx2::reduce_row(op, row) } {
            Some(v) => v,
            None => generic::reduce_row(op, row),
        }
    }

    pub(super) fn reduce_acc(op: RowReduce, acc: &mut [f32], x: &[f32]) {
        // SAFETY: as `binary_same`.
        if !unsafe { avx2::reduce_acc(op, acc, x) } {
            generic::reduce_acc(op, acc, x)
        }
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
        let rows = (AVX2_TABLE.gemm_rows16, AVX2_TABLE.gemm_rows32);
        if !tile_fits(a, lda, b, kc, mr, nr, rows) {
            return crate::gemm::tile_portable(a, lda, b, kc, mr, nr, out);
        }
        // SAFETY: AVX2 and FMA were detected (only the AVX2 table reaches
        // here); the extents of a, b and out were checked just above
        // (mr * nr <= 96 <= TILE).
        unsafe { gemm::tile(a, lda, b, kc, mr, nr, out) }
    }

    use super::AVX2_TABLE;

    /// Whether a tile call is in the micro-kernels' contract: `nr` 8
    /// (`mr <= 12`), 16 (`mr <= rows16`) or 32 (`mr <= rows32`), and `a`
    /// and `b` long enough.
    pub(super) fn tile_fits(
        a: &[f32],
        lda: usize,
        b: &[f32],
        kc: usize,
        mr: usize,
        nr: usize,
        (rows16, rows32): (usize, usize),
    ) -> bool {
        let max_rows = match nr {
            32 => rows32,
            16 => rows16,
            8 => 12,
            _ => 0,
        };
        let a_fits = (mr.saturating_sub(1))
            .checked_mul(lda)
            .and_then(|s| s.checked_add(kc))
            .is_some_and(|e| e <= a.len());
        let b_fits = kc.checked_mul(nr).is_some_and(|e| e <= b.len());
        mr != 0 && mr <= max_rows && kc != 0 && a_fits && b_fits
    }

    pub(super) fn depthwise_plane(p: &DwPlane<'_>, out: &mut [f32]) {
        // SAFETY: AVX2 and FMA were detected; the body is safe code.
        unsafe { gemm::depthwise_plane(p, out) }
    }
}

/// The AVX-512 kernels: reachable only through [`AVX512`], handed out only
/// once [`avx512_detected`] returned `true`.
mod safe512 {
    use crate::conv::DwPlane;
    use crate::gemm::TILE;

    pub(super) fn depthwise_plane(p: &DwPlane<'_>, out: &mut [f32]) {
        let fits = p.stride[1] == 1
            && p.kw <= super::gemm::DW512_MAX_KW
            && p.ow <= super::gemm::DW512_MAX_OW
            && p.oh.checked_mul(p.ow) == Some(out.len())
            && p.h.checked_mul(p.w).is_some_and(|n| n <= p.input.len())
            && p.kh.checked_mul(p.kw).is_some_and(|n| n <= p.filter.len());
        if !fits {
            return super::safe_gemm::depthwise_plane(p, out);
        }
        // SAFETY: this table is handed out only once AVX-512 F was
        // detected; the contract's extents were checked just above.
        unsafe { super::gemm::depthwise_plane512(p, out) }
    }

    pub(super) fn gemm_tile(
        a: &[f32],
        lda: usize,
        b: &[f32],
        kc: usize,
        mr: usize,
        nr: usize,
        out: &mut [f32; TILE],
    ) {
        let rows = (super::AVX512.gemm_rows16, super::AVX512.gemm_rows32);
        if !super::safe_gemm::tile_fits(a, lda, b, kc, mr, nr, rows) {
            return crate::gemm::tile_portable(a, lda, b, kc, mr, nr, out);
        }
        // SAFETY: this table is handed out only once AVX-512 F, AVX2 and
        // FMA were detected; the extents of a, b and out were checked just
        // above (mr * nr <= 384 = TILE).
        unsafe { super::gemm::tile512(a, lda, b, kc, mr, nr, out) }
    }

    pub(super) fn gemv_int(w: &crate::kernels::IntRows<'_>, y: &mut [f32]) {
        let w = &super::safe::with_checked_sub_scales(w, y);
        if super::safe::int_job_consistent(w, y) && super::gemv_int512::supports(w) {
            // SAFETY: this table is handed out only once AVX-512 F, BW,
            // VL, VBMI and VNNI, AVX2 and FMA were detected; `supports`
            // and the extents were checked just above.
            unsafe { super::gemv_int512::gemv_int(w, y) };
        } else {
            super::safe::gemv_int(w, y);
        }
    }
}

/// The AVX-512 table: the AVX2+FMA one with AVX-512 integer linear at
/// any batch (C = 2..=8, blocks of 64), the GEMM's 12 x 16 and 12 x 32 tiles and
/// masked depthwise rows. Only `crate::arch` may hand it out,
/// after detection.
pub(crate) static AVX512: Kernels = Kernels {
    name: "avx512",
    gemv_int: safe512::gemv_int,
    gemm_tile: safe512::gemm_tile,
    gemm_rows16: 12,
    gemm_rows32: 12,
    depthwise_plane: safe512::depthwise_plane,
    ..AVX2_TABLE
};

/// The AVX2+FMA kernel table. Only `crate::arch` may hand it out, after
/// detection.
pub(crate) static AVX2: Kernels = AVX2_TABLE;

const AVX2_TABLE: Kernels = Kernels {
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
    gemv_int: safe::gemv_int,
    decode_packed: safe::decode_packed,
    gemm_tile: safe_gemm::gemm_tile,
    gemm_rows16: 6,
    gemm_rows32: 0,
    depthwise_plane: safe_gemm::depthwise_plane,
    binary_same: safe::binary_same,
    binary_scalar_right: safe::binary_scalar_right,
    binary_scalar_left: safe::binary_scalar_left,
    unary: safe::unary,
    reduce_row: safe::reduce_row,
    reduce_acc: safe::reduce_acc,
};
