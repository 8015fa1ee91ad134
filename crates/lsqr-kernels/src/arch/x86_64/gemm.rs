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

/// `out[i] = table[codes[i] & (len - 1)] * scale`: a 16-entry (or smaller)
/// table sits in two registers and is looked up with `vpermps`; larger
/// tables are gathered. One multiply per value, as the portable decode, so
/// the result is bit-identical.
///
/// # Safety
/// AVX2 and FMA; `table.len()` a power of two.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn decode(table: &[f32], codes: &[u16], scale: f32, out: &mut [f32]) {
    let n = codes.len().min(out.len());
    let len_mask = table.len() - 1;
    let mask = _mm256_set1_epi32(len_mask as i32);
    let mut lanes = [[0.0f32; 8]; 2];
    for (i, &v) in table.iter().take(16).enumerate() {
        lanes[i / 8][i % 8] = v;
    }
    // SAFETY: `lanes` rows are 8 readable f32s each.
    let (lo, hi) =
        unsafe { (_mm256_loadu_ps(lanes[0].as_ptr()), _mm256_loadu_ps(lanes[1].as_ptr())) };
    let small = table.len() <= 16;
    let s = _mm256_set1_ps(scale);
    let (c, o) = (codes.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= codes.len(), out.len(); gathered indices are
        // masked to table.len() - 1.
        unsafe {
            let idx =
                _mm256_and_si256(_mm256_cvtepu16_epi32(_mm_loadu_si128(c.add(i).cast())), mask);
            let v = if small {
                let a = _mm256_permutevar8x32_ps(lo, idx);
                let b = _mm256_permutevar8x32_ps(hi, idx);
                _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
            } else {
                _mm256_i32gather_ps::<4>(table.as_ptr(), idx)
            };
            _mm256_storeu_ps(o.add(i), _mm256_mul_ps(v, s));
        }
        i += 8;
    }
    for (d, &code) in out[i..n].iter_mut().zip(&codes[i..n]) {
        *d = table[usize::from(code) & len_mask] * scale;
    }
}

/// `crate::gemm::DecodeBytesFn`: 4-bit codes are split from 8 bytes at a
/// time into 16 indices (low nibble first) and looked up in the two table
/// registers; 8-bit codes are widened 8 at a time and gathered. One
/// multiply per value: bit-identical to the portable decode.
///
/// # Safety
/// AVX2 and FMA; `bits` 4 with a 16-entry table, or 8 with 256 entries.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn decode_bytes(
    table: &[f32],
    bits: u32,
    bytes: &[u8],
    scale: f32,
    out: &mut [f32],
) {
    let s = _mm256_set1_ps(scale);
    let (src, dst) = (bytes.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    if bits == 4 {
        let n = out.len().min(bytes.len() * 2);
        // SAFETY: the table has 16 entries (contract).
        let (lo, hi) =
            unsafe { (_mm256_loadu_ps(table.as_ptr()), _mm256_loadu_ps(table.as_ptr().add(8))) };
        let nib = _mm_set1_epi8(0x0f);
        let lookup = |idx: __m256i| {
            let a = _mm256_permutevar8x32_ps(lo, idx);
            let b = _mm256_permutevar8x32_ps(hi, idx);
            _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
        };
        while i + 16 <= n {
            // SAFETY: i + 16 <= n <= 2 bytes.len(): bytes i/2 .. i/2 + 8 are
            // readable, out[i..i + 16] writable.
            unsafe {
                let b = _mm_loadl_epi64(src.add(i / 2).cast());
                let codes = _mm_unpacklo_epi8(
                    _mm_and_si128(b, nib),
                    _mm_and_si128(_mm_srli_epi16::<4>(b), nib),
                );
                let v0 = lookup(_mm256_cvtepu8_epi32(codes));
                let v1 = lookup(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(codes)));
                _mm256_storeu_ps(dst.add(i), _mm256_mul_ps(v0, s));
                _mm256_storeu_ps(dst.add(i + 8), _mm256_mul_ps(v1, s));
            }
            i += 16;
        }
        for (k, o) in out[i..n].iter_mut().enumerate() {
            let code = (bytes[(i + k) / 2] >> (4 * ((i + k) % 2))) & 0x0f;
            *o = table[usize::from(code)] * scale;
        }
    } else {
        let n = out.len().min(bytes.len());
        while i + 8 <= n {
            // SAFETY: i + 8 <= n: bytes[i..i + 8] readable, out[i..i + 8]
            // writable; byte indices are < 256 = table.len().
            unsafe {
                let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.add(i).cast()));
                let v = _mm256_i32gather_ps::<4>(table.as_ptr(), idx);
                _mm256_storeu_ps(dst.add(i), _mm256_mul_ps(v, s));
            }
            i += 8;
        }
        for (o, &b) in out[i..n].iter_mut().zip(&bytes[i..n]) {
            *o = table[usize::from(b)] * scale;
        }
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
