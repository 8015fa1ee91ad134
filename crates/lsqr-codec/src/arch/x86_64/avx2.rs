//! AVX2 encoder: eight values per step, branch-free binary search.
//!
//! Each level of the search compares the eight keys against eight
//! thresholds and adds the level's step where the key is greater. The first
//! four levels draw their thresholds from a register with one `vpermps`
//! (at level k there are only 2^k <= 8 candidates); deeper levels gather
//! them from the table. The loop is monomorphised on the depth so the
//! levels unroll and the level registers stay in registers.

use core::arch::x86_64::*;

use crate::codebook::threshold::{Layout, ThresholdTable};

/// Levels served from registers.
const REGISTER_LEVELS: u32 = 4;

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn encode_scaled(
    table: &ThresholdTable,
    xs: &[f32],
    inv_scale: f32,
    out: &mut [u16],
) {
    macro_rules! by_depth {
        ($($d:literal)*) => {
            match table.depth {
                // SAFETY: AVX2 is available (this function's contract).
                $($d => unsafe { encode_depth::<$d>(table, xs, inv_scale, out) },)*
                _ => table.encode_scaled_generic(xs, inv_scale, out),
            }
        };
    }
    by_depth!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// # Safety
/// The CPU must support AVX2; `DEPTH == table.depth`.
#[target_feature(enable = "avx2")]
unsafe fn encode_depth<const DEPTH: u32>(
    table: &ThresholdTable,
    xs: &[f32],
    inv_scale: f32,
    out: &mut [u16],
) {
    debug_assert_eq!(DEPTH, table.depth);
    let n = xs.len().min(out.len());
    let full = n - n % 8;
    let t = table.thresholds.as_ptr();
    let mut level_regs = [_mm256_setzero_ps(); REGISTER_LEVELS as usize];
    for (reg, lanes) in level_regs.iter_mut().zip(&table.level_lanes) {
        // SAFETY: `lanes` is 8 readable f32s.
        *reg = unsafe { _mm256_loadu_ps(lanes.as_ptr()) };
    }
    let (sign_magnitude, sign_shift, zero_keeps_sign) = match table.layout {
        Layout::SignMagnitude { sign_shift, zero_keeps_sign } => {
            (true, sign_shift, zero_keeps_sign)
        }
        Layout::Sorted => (false, 0, false),
    };
    let inv = _mm256_set1_ps(inv_scale);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let first_code = _mm256_set1_epi32(i32::from(table.first_code));
    let sign_bit = _mm256_set1_epi32(1 << sign_shift);
    // One step: 8 values to 8 codes.
    let encode8 = |v: __m256| -> __m128i {
        let v = _mm256_mul_ps(v, inv);
        let key = if sign_magnitude { _mm256_and_ps(v, abs_mask) } else { v };
        // SAFETY: AVX2 is available, and the table holds 2^DEPTH - 1
        // thresholds, all that `search` reads.
        let slot = unsafe { search::<DEPTH>(key, &level_regs, t) };
        let mut code = _mm256_add_epi32(slot, first_code);
        if sign_magnitude {
            let negative = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps()));
            let keep = if zero_keeps_sign {
                negative
            } else {
                _mm256_andnot_si256(_mm256_cmpeq_epi32(slot, _mm256_setzero_si256()), negative)
            };
            code = _mm256_or_si256(code, _mm256_and_si256(keep, sign_bit));
        }
        // Codes are < 2^16, so unsigned saturation packs them exactly.
        _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256::<1>(code))
    };
    let (x, o) = (xs.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    // Two independent steps per iteration, so the searches' latency chains overlap.
    while i + 16 <= full {
        // SAFETY: i + 16 <= full <= xs.len(), out.len().
        unsafe {
            let a = encode8(_mm256_loadu_ps(x.add(i)));
            let b = encode8(_mm256_loadu_ps(x.add(i + 8)));
            _mm_storeu_si128(o.add(i).cast(), a);
            _mm_storeu_si128(o.add(i + 8).cast(), b);
        }
        i += 16;
    }
    if i < full {
        // SAFETY: i + 8 == full <= xs.len(), out.len().
        unsafe { _mm_storeu_si128(o.add(i).cast(), encode8(_mm256_loadu_ps(x.add(i)))) };
    }
    table.encode_scaled_generic(&xs[full..n], inv_scale, &mut out[full..n]);
}

/// The slot of each lane: the number of thresholds below its key.
///
/// # Safety
/// AVX2 must be available; `t` must point to `2^DEPTH - 1` readable f32s.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn search<const DEPTH: u32>(
    key: __m256,
    level_regs: &[__m256; 4],
    t: *const f32,
) -> __m256i {
    let mut idx = _mm256_setzero_si256();
    let mut k = 0;
    while k < DEPTH {
        let step = 1i32 << (DEPTH - k - 1);
        let threshold = if k < REGISTER_LEVELS {
            let j = _mm256_srlv_epi32(idx, _mm256_set1_epi32((DEPTH - k) as i32));
            _mm256_permutevar8x32_ps(level_regs[k as usize], j)
        } else {
            let at = _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1));
            // SAFETY: idx is a sum of larger steps, so idx + step - 1 <=
            // 2^DEPTH - 2, inside the table.
            unsafe { _mm256_i32gather_ps::<4>(t, at) }
        };
        let greater = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(key, threshold));
        idx = _mm256_add_epi32(idx, _mm256_and_si256(greater, _mm256_set1_epi32(step)));
        k += 1;
    }
    idx
}
