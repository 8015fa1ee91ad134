//! AVX2 encoder: eight values per step, branch-free binary search.
//!
//! Each level of the search compares the eight keys against eight
//! thresholds and adds the level's step where the key is greater. The first
//! four levels draw their thresholds from a register with one `vpermps`
//! (at level k there are only 2^k <= 8 candidates); deeper levels gather
//! them from the table.

use core::arch::x86_64::*;

use crate::codebook::threshold::{Layout, ThresholdTable};

/// Levels served from registers.
const REGISTER_LEVELS: u32 = 4;

/// # Safety
/// The CPU must support AVX2. `xs` and `out` must have equal lengths.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn encode_scaled(
    table: &ThresholdTable,
    xs: &[f32],
    inv_scale: f32,
    out: &mut [u16],
) {
    let n = xs.len().min(out.len());
    let full = n - n % 8;
    let depth = table.depth;
    let t = &table.thresholds;
    // Level k's candidates, t[j * 2^(depth-k) + 2^(depth-k-1) - 1] for j < 2^k.
    let mut level_regs = [_mm256_setzero_ps(); REGISTER_LEVELS as usize];
    for (k, reg) in level_regs
        .iter_mut()
        .enumerate()
        .take(depth.min(REGISTER_LEVELS) as usize)
    {
        let span = 1usize << (depth as usize - k);
        let mut lane = [0.0f32; 8];
        for (j, l) in lane.iter_mut().enumerate().take(1 << k) {
            *l = t[j * span + span / 2 - 1];
        }
        // SAFETY: `lane` is 8 readable f32s.
        *reg = unsafe { _mm256_loadu_ps(lane.as_ptr()) };
    }
    let (sign_magnitude, sign_shift, zero_keeps_sign) = match table.layout {
        Layout::SignMagnitude {
            sign_shift,
            zero_keeps_sign,
        } => (true, sign_shift, zero_keeps_sign),
        Layout::Sorted => (false, 0, false),
    };
    let inv = _mm256_set1_ps(inv_scale);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let first_code = _mm256_set1_epi32(i32::from(table.first_code));
    let sign_bit = _mm256_set1_epi32(1 << sign_shift);
    let mut i = 0;
    while i < full {
        // SAFETY: i + 8 <= full <= xs.len().
        let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) }, inv);
        let key = if sign_magnitude {
            _mm256_and_ps(v, abs_mask)
        } else {
            v
        };
        // SAFETY: AVX2 is enabled for this function, and `search` reads only
        // indices below 2^depth - 1 = t.len().
        let slot = unsafe { search(key, depth, &level_regs, t.as_ptr()) };
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
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(code, code));
        // SAFETY: i + 8 <= out.len(); 8 u16 = 16 bytes.
        unsafe {
            _mm_storeu_si128(
                out.as_mut_ptr().add(i).cast(),
                _mm256_castsi256_si128(packed),
            )
        };
        i += 8;
    }
    table.encode_scaled_generic(&xs[full..n], inv_scale, &mut out[full..n]);
}

/// The slot of each lane: the number of thresholds below its key.
///
/// # Safety
/// AVX2 must be available; `t` must point to `2^depth - 1` readable f32s.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn search(key: __m256, depth: u32, level_regs: &[__m256; 4], t: *const f32) -> __m256i {
    let mut idx = _mm256_setzero_si256();
    for k in 0..depth {
        let step = 1i32 << (depth - k - 1);
        let threshold = if k < REGISTER_LEVELS {
            let j = _mm256_srlv_epi32(idx, _mm256_set1_epi32((depth - k) as i32));
            _mm256_permutevar8x32_ps(level_regs[k as usize], j)
        } else {
            let at = _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1));
            // SAFETY: idx is a sum of larger steps, so idx + step - 1 <=
            // 2^depth - 2, inside the table.
            unsafe { _mm256_i32gather_ps::<4>(t, at) }
        };
        let greater = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(key, threshold));
        idx = _mm256_add_epi32(idx, _mm256_and_si256(greater, _mm256_set1_epi32(step)));
    }
    idx
}
