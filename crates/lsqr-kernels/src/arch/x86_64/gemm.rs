//! AVX2+FMA kernels of the blocked GEMM (`crate::gemm`) and of the
//! depthwise convolution: the register-tile micro-kernel, the decode of
//! codes to f32 (table in registers), and the depthwise plane loop
//! compiled for AVX2.

use core::arch::x86_64::*;

use crate::conv::{depthwise_plane_impl, DwPlane};
use crate::gemm::TILE;

/// The `R x 8 NV` register tile over `kc`: `R * NV` accumulators, `NV`
/// vectors of `b` loaded per step and one broadcast of `a` per row (at
/// most 12 + 2 + 1 of the 16 ymm registers: nothing spills).
///
/// # Safety
/// AVX2 and FMA; `a` points at `R` rows of `kc` readable values `lda`
/// apart, `b` at `kc * 8 NV` readable values, `out` at `R * 8 NV`
/// writable ones.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const NV: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    out: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    for p in 0..kc {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: b[p * 8NV + 8v .. + 8] is inside the panel (kc rows of 8 NV).
            *slot = unsafe { _mm256_loadu_ps(b.add(p * 8 * NV + 8 * v)) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: a[r * lda + p] with r < R, p < kc is inside the a block.
            let av = _mm256_set1_ps(unsafe { *a.add(r * lda + p) });
            for (acc_rv, &bw) in acc_r.iter_mut().zip(&bv) {
                *acc_rv = _mm256_fmadd_ps(av, bw, *acc_rv);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, &sum) in acc_r.iter().enumerate() {
            // SAFETY: out[r * 8NV + 8v .. + 8] is inside the R x 8NV tile.
            unsafe { _mm256_storeu_ps(out.add(r * 8 * NV + 8 * v), sum) };
        }
    }
}

/// The micro-kernel of `crate::gemm::TileFn`, `nr` 16 (`mr <= 6`) or 8
/// (`mr <= 12`).
///
/// # Safety
/// AVX2 and FMA; `mr >= 1`, `kc >= 1`, `a.len() >= (mr - 1) lda + kc`,
/// `b.len() >= kc nr`, `mr nr <= TILE` and `nr` 8 or 16.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(
    a: &[f32],
    lda: usize,
    b: &[f32],
    kc: usize,
    mr: usize,
    nr: usize,
    out: &mut [f32; TILE],
) {
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    macro_rules! rows {
        ($nv:literal; $($r:literal)*) => {
            // SAFETY: forwarded contract; the kernel reads mr rows of a, kc
            // rows of the nr-wide panel and writes mr x nr of out.
            unsafe {
                match mr {
                    $($r => kernel::<$r, $nv>(pa, lda, pb, kc, po),)*
                    _ => {}
                }
            }
        };
    }
    if nr == 16 {
        rows!(2; 1 2 3 4 5 6);
    } else {
        rows!(1; 1 2 3 4 5 6 7 8 9 10 11 12);
    }
}

/// The AVX-512 `R x 16 NV` register tile over `kc`: `R NV` zmm
/// accumulators (up to 24 of the 32 registers), `NV` loads of `b` and `R`
/// broadcasts per step. Each output element is the same chain of FMAs
/// over `p` as in [`kernel`], so the two agree bit for bit; the wider
/// registers do twice the multiply-adds per instruction. Twelve rows of
/// 32 columns load 14 values per 24 multiply-adds (12 x 16: 13 per 12),
/// so the loads no longer pace the FMA units.
///
/// # Safety
/// AVX-512 F; `a` points at `R` rows of `kc` readable values `lda`
/// apart, `b` at `kc * 16 NV` readable values, `out` at `R * 16 NV`
/// writable ones.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn kernel512<const R: usize, const NV: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    for p in 0..kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: b[p * 16NV + 16v .. + 16] is inside the panel (kc rows of 16 NV).
            *slot = unsafe { _mm512_loadu_ps(b.add(p * 16 * NV + 16 * v)) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: a[r * lda + p] with r < R, p < kc is inside the a block.
            let av = _mm512_set1_ps(unsafe { *a.add(r * lda + p) });
            for (acc_rv, &bw) in acc_r.iter_mut().zip(&bv) {
                *acc_rv = _mm512_fmadd_ps(av, bw, *acc_rv);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, &sum) in acc_r.iter().enumerate() {
            // SAFETY: out[r * 16NV + 16v .. + 16] is inside the R x 16NV tile.
            unsafe { _mm512_storeu_ps(out.add(r * 16 * NV + 16 * v), sum) };
        }
    }
}

/// The AVX-512 micro-kernel of `crate::gemm::TileFn`: `nr` 16 or 32 with
/// `mr <= 12` ([`kernel512`]), `nr` 8 as [`tile`].
///
/// # Safety
/// AVX-512 F, AVX2 and FMA; `mr >= 1`, `kc >= 1`, `a.len() >= (mr - 1)
/// lda + kc`, `b.len() >= kc nr`, `mr nr <= TILE` and `nr` 8, 16 or 32.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn tile512(
    a: &[f32],
    lda: usize,
    b: &[f32],
    kc: usize,
    mr: usize,
    nr: usize,
    out: &mut [f32; TILE],
) {
    if nr != 16 && nr != 32 {
        // SAFETY: forwarded.
        return unsafe { tile(a, lda, b, kc, mr, nr, out) };
    }
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    macro_rules! rows {
        ($nv:literal; $($r:literal)*) => {
            // SAFETY: forwarded contract; the kernel reads mr rows of a, kc
            // rows of the nr-wide panel and writes mr x nr of out.
            unsafe {
                match mr {
                    $($r => kernel512::<$r, $nv>(pa, lda, pb, kc, po),)*
                    _ => {}
                }
            }
        };
    }
    if nr == 32 {
        rows!(2; 1 2 3 4 5 6 7 8 9 10 11 12);
    } else {
        rows!(1; 1 2 3 4 5 6 7 8 9 10 11 12);
    }
}

/// The lanes `lo..hi` of a 16-lane mask.
#[inline(always)]
fn lanes(lo: usize, hi: usize) -> __mmask16 {
    let below = |k: usize| if k >= 16 { u32::from(u16::MAX) } else { (1u32 << k) - 1 };
    (below(hi) & !below(lo)) as __mmask16
}

/// Kernel widths up to which [`depthwise_plane512`] keeps each tap's
/// lanes and offset per chunk of sixteen outputs.
pub(crate) const DW512_MAX_KW: usize = 16;
/// Output widths up to which the AVX-512 table takes it
/// (`DW512_MAX_CHUNKS` chunks of 16). Wider rows keep the AVX2 loop,
/// whose interior chunks need no masks: on PP-OCR det's planes (one
/// thread, `examples/layer_times.rs`) this kernel took 10 x 10 (5x5
/// filters) from 0.40 to 0.14-0.16 ms per layer, 20 x 20 from 0.33 to
/// 0.23-0.25, 40 x 40 about even, but 80 x 80 and 160 x 160 (3x3) from
/// 0.25 and 0.24 to 0.28 and 0.37.
pub(crate) const DW512_MAX_OW: usize = 16 * DW512_MAX_CHUNKS;
const DW512_MAX_CHUNKS: usize = 3;

/// A depthwise plane at stride 1 along W, sixteen outputs of a row (a
/// chunk) per register, with AVX-512 masks for the lanes each tap
/// reaches: each output starts at the bias and adds its taps in `(ky,
/// kx)` order, a multiply then an add, skipping the taps in the padding
/// (a masked add leaves those lanes as they were; a row outside the
/// input masks every lane), which is what the portable loop computes,
/// bit for bit. Four (row, chunk) items at a time, so that four chains
/// of dependent adds overlap. The portable and AVX2 loops slide taps
/// along rows eight outputs at a time and leave rows narrower than 16
/// (det's 10 x 10 planes) to scalar code.
///
/// # Safety
/// AVX-512 F; `p.stride[1] == 1`, `p.kw <= DW512_MAX_KW`, `p.ow <=
/// DW512_MAX_OW`, `out.len() == p.oh * p.ow`, `p.input.len() >= p.h *
/// p.w` and `p.filter.len() >= p.kh * p.kw`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn depthwise_plane512(p: &DwPlane<'_>, out: &mut [f32]) {
    let (ow, kw) = (p.ow, p.kw);
    let chunks = ow.div_ceil(16);
    // Tap kx of chunk c reads input columns start + lane for the lanes
    // of its mask (those inside the row and the chunk).
    let mut reach = [[(0 as __mmask16, 0isize); DW512_MAX_KW]; DW512_MAX_CHUNKS];
    for (c, reach) in reach.iter_mut().enumerate().take(chunks) {
        let (ox0, n) = (16 * c, (ow - 16 * c).min(16));
        for (kx, r) in reach.iter_mut().enumerate().take(kw) {
            let start = (ox0 + kx * p.dilation[1]) as isize - p.padding[1] as isize;
            let lo = (-start).clamp(0, 16) as usize;
            let hi = (p.w as isize - start).clamp(0, n as isize) as usize;
            *r = (if lo < hi { lanes(lo, hi) } else { 0 }, start);
        }
    }
    let items = p.oh * chunks;
    let mut k = 0;
    while k + 4 <= items {
        // SAFETY: forwarded; items k..k + 4 exist.
        unsafe { dw_items::<4>(p, &reach, k, out) };
        k += 4;
    }
    while k < items {
        // SAFETY: as above, one item.
        unsafe { dw_items::<1>(p, &reach, k, out) };
        k += 1;
    }
}

/// Items `k..k + R` of [`depthwise_plane512`] (item `i`: output row `i /
/// chunks`, chunk `i % chunks`).
///
/// # Safety
/// As [`depthwise_plane512`]; items `k..k + R` exist.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dw_items<const R: usize>(
    p: &DwPlane<'_>,
    reach: &[[(__mmask16, isize); DW512_MAX_KW]; DW512_MAX_CHUNKS],
    k: usize,
    out: &mut [f32],
) {
    let [sh, _] = p.stride;
    let (ph, dh) = (p.padding[0], p.dilation[0]);
    let (w, ow, kw) = (p.w, p.ow, p.kw);
    let chunks = ow.div_ceil(16);
    let items: [(usize, usize); R] = core::array::from_fn(|i| ((k + i) / chunks, (k + i) % chunks));
    let mut acc = [_mm512_set1_ps(p.bias); R];
    for ky in 0..p.kh {
        // Each item's input row for this ky, or no lanes at all.
        let rows: [(*const f32, __mmask16); R] = core::array::from_fn(|i| {
            match (items[i].0 * sh + ky * dh).checked_sub(ph).filter(|&y| y < p.h) {
                Some(y) => (p.input[y * w..(y + 1) * w].as_ptr(), u16::MAX),
                None => (p.input.as_ptr(), 0),
            }
        });
        for (kx, &t) in p.filter[ky * kw..(ky + 1) * kw].iter().enumerate() {
            let t = _mm512_set1_ps(t);
            for (i, a) in acc.iter_mut().enumerate() {
                let (m, start) = reach[items[i].1][kx];
                let m = m & rows[i].1;
                // SAFETY: the lanes of `m` read row[start + lane], inside
                // the item's input row; the others are masked off and not
                // accessed.
                let v = unsafe { _mm512_maskz_loadu_ps(m, rows[i].0.wrapping_offset(start)) };
                *a = _mm512_mask_add_ps(*a, m, *a, _mm512_mul_ps(t, v));
            }
        }
    }
    for (i, &a) in acc.iter().enumerate() {
        let (oy, c) = items[i];
        let (ox0, n) = (16 * c, (ow - 16 * c).min(16));
        let row = &mut out[oy * ow..(oy + 1) * ow];
        // SAFETY: lanes 0..n are row[ox0..ox0 + n], inside the row.
        unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr().add(ox0), lanes(0, n), a) };
    }
}

/// The depthwise plane loop, compiled with AVX2 enabled so that its
/// contiguous multiply-adds vectorise eight lanes wide (still a multiply
/// then an add: bit-identical to the portable build).
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn depthwise_plane(p: &DwPlane<'_>, out: &mut [f32]) {
    depthwise_plane_impl(p, out)
}
