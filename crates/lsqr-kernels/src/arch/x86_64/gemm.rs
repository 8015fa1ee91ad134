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

/// The AVX-512 `R x 16` register tile over `kc`: `R` zmm accumulators
/// (up to 12 of the 32 registers), one load of `b` and `R` broadcast
/// multiply-adds per step. Each output element is the same chain of FMAs
/// over `p` as in [`kernel`], so the two agree bit for bit; the wider
/// registers do twice the multiply-adds per instruction, and twelve rows
/// per tile (the AVX2 tile takes six with sixteen columns) halve the
/// loads of `b` per multiply-add.
///
/// # Safety
/// AVX-512 F; `a` points at `R` rows of `kc` readable values `lda`
/// apart, `b` at `kc * 16` readable values, `out` at `R * 16` writable
/// ones.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn kernel512<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    out: *mut f32,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    for p in 0..kc {
        // SAFETY: b[p * 16 .. + 16] is inside the panel (kc rows of 16).
        let bv = unsafe { _mm512_loadu_ps(b.add(p * 16)) };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: a[r * lda + p] with r < R, p < kc is inside the a block.
            let av = _mm512_set1_ps(unsafe { *a.add(r * lda + p) });
            *acc_r = _mm512_fmadd_ps(av, bv, *acc_r);
        }
    }
    for (r, &sum) in acc.iter().enumerate() {
        // SAFETY: out[r * 16 .. + 16] is inside the R x 16 tile.
        unsafe { _mm512_storeu_ps(out.add(r * 16), sum) };
    }
}

/// The AVX-512 micro-kernel of `crate::gemm::TileFn`: `nr` 16 with `mr <=
/// 12` ([`kernel512`]), `nr` 8 as [`tile`].
///
/// # Safety
/// AVX-512 F, AVX2 and FMA; `mr >= 1`, `kc >= 1`, `a.len() >= (mr - 1)
/// lda + kc`, `b.len() >= kc nr`, `mr nr <= TILE` and `nr` 8 or 16.
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
    if nr != 16 {
        // SAFETY: forwarded.
        return unsafe { tile(a, lda, b, kc, mr, nr, out) };
    }
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    macro_rules! rows {
        ($($r:literal)*) => {
            // SAFETY: forwarded contract; the kernel reads mr rows of a, kc
            // rows of the 16-wide panel and writes mr x 16 of out.
            unsafe {
                match mr {
                    $($r => kernel512::<$r>(pa, lda, pb, kc, po),)*
                    _ => {}
                }
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12);
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
