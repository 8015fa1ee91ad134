//! AVX2 kernels (16 codes = two 8-code blocks = `2C` bytes per step).
//!
//! # Unpack (widths 1..=15 except 8)
//!
//! Block A (codes 0..8) starts at byte 0 of the step, block B (codes 8..16)
//! at byte `C`. For each block, 16 bytes are loaded and broadcast to both
//! 128-bit halves (`vbroadcasti128`); `vpshufb` moves bytes
//! `o_i, o_i+1, o_i+2` (`o_i = i*C/8`) into the low three bytes of 32-bit
//! lane `i`; `vpsrlvd` shifts lane `i` right by `(i*C) % 8`; an AND with
//! `(1 << C) - 1` clears the neighbours' bits. The two 8 x u32 results are
//! narrowed with `vpackusdw` (which interleaves 64-bit quarters) and put
//! back in order with `vpermq`. Width 8 is a widening copy and width 16 a
//! plain copy (both auto-vectorised).
//!
//! # Pack (widths 1..=15 except 8)
//!
//! 16 codes are loaded (block A in the low 128-bit half, B in the high) and
//! merged pairwise, doubling the field size each time:
//!
//! 1. pairs: `vpmaddwd` with multipliers `(1, 1 << C)` gives
//!    `x = c[2j] + (c[2j+1] << C)` in each 32-bit lane (`C <= 14`; for
//!    `C = 15` the signed multiplier would overflow, so
//!    `x = v - ((v >> 1) & 0xFFFF_8000)` is used instead);
//! 2. quads: the even 32-bit lanes are shifted left by `d = 32 - 2C`
//!    (`vpsllvd`, the value still fits), then each 64-bit lane is shifted
//!    right by `d` (`vpsrlq`), leaving `x0 + (x1 << 2C)`;
//! 3. octets: the two 64-bit halves `[y0, y1]` of each 128-bit lane become
//!    the 128-bit value `y0 + (y1 << 4C)`. For even `C` that is a byte
//!    concatenation (one `vpshufb`); for odd `C`,
//!    `[y0 | y1 << 4C, y1 >> (64 - 4C)]` via `vpsrlvq`, `vpsrldq`, `vpsllq`.
//!
//! Each 128-bit half now holds its block's `C` bytes followed by zeros; the
//! low half is stored (16 bytes) at the step's byte 0 and the high half at
//! byte `C`, overwriting the zeros.
//!
//! Every SIMD load/store is 16 or 32 bytes and happens only when the step
//! lies entirely inside the slices; the remaining (< ~16 bytes worth of)
//! codes are handled by the portable kernel.

use core::arch::x86_64::*;

use crate::arch::generic;
use crate::PackError;

/// Per-width constant tables (index = width; entries for 0, 8, 16 unused).
struct Tables {
    /// Unpack: byte shuffle placing code `i`'s three bytes in lane `i`.
    unpack_shuffle: [[u8; 32]; 17],
    /// Unpack: per-lane right shift `(i*C) % 8`.
    unpack_shift: [[u32; 8]; 17],
    /// Pack (even widths): byte shuffle concatenating `y0` and `y1`.
    pack_compact: [[u8; 32]; 17],
}

const fn build_tables() -> Tables {
    let mut t = Tables {
        unpack_shuffle: [[0x80; 32]; 17],
        unpack_shift: [[0; 8]; 17],
        pack_compact: [[0x80; 32]; 17],
    };
    let mut c = 1;
    while c <= 16 {
        let mut i = 0;
        while i < 8 {
            let o = (i * c) / 8;
            let mut k = 0;
            while k < 3 {
                if o + k < 16 {
                    t.unpack_shuffle[c][4 * i + k] = (o + k) as u8;
                }
                k += 1;
            }
            t.unpack_shift[c][i] = ((i * c) % 8) as u32;
            i += 1;
        }
        let half = c / 2;
        let mut j = 0;
        while j < 16 {
            let v = if j < half {
                j as u8
            } else if j < c && c % 2 == 0 {
                (8 + j - half) as u8
            } else {
                0x80
            };
            t.pack_compact[c][j] = v;
            t.pack_compact[c][16 + j] = v;
            j += 1;
        }
        c += 1;
    }
    t
}

static TABLES: Tables = build_tables();

/// Number of 16-code steps that fit: `16 * steps <= codes` and the last
/// step's second 16-byte access (at byte `2C(steps-1) + C`) ends inside
/// `bytes`.
#[inline(always)]
fn steps(codes: usize, bytes: usize, c: usize) -> usize {
    let by_bytes = if bytes >= c + 16 { (bytes - c - 16) / (2 * c) + 1 } else { 0 };
    (codes / 16).min(by_bytes)
}

/// AVX2 unpack: decodes `out.len()` codes from the start of `packed`.
///
/// # Safety
///
/// The CPU must support AVX2. `width` should be in `1..=16` and `packed` at
/// least `packed_len(out.len(), width)` bytes long (otherwise the output is
/// meaningless but memory safety is unaffected).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn unpack(packed: &[u8], width: u32, out: &mut [u16]) {
    match width {
        8 => generic::unpack8(packed, out),
        16 => generic::unpack16(packed, out),
        1..=15 => {
            // SAFETY: the caller guarantees AVX2.
            let done = unsafe { unpack_steps(packed, width, out) };
            let c = width as usize;
            let src = packed.get(2 * c * done..).unwrap_or(&[]);
            let dst = out.get_mut(16 * done..).unwrap_or(&mut []);
            generic::unpack_kernel(src, width, dst);
        }
        _ => {}
    }
}

/// Decodes as many whole 16-code steps as are safely loadable; returns the
/// number of steps done.
///
/// # Safety
///
/// The CPU must support AVX2 and `width` must be in `1..=15`.
#[target_feature(enable = "avx2")]
unsafe fn unpack_steps(packed: &[u8], width: u32, out: &mut [u16]) -> usize {
    let c = width as usize;
    let n = steps(out.len(), packed.len(), c);
    let src = packed.as_ptr();
    let dst = out.as_mut_ptr();
    // SAFETY: AVX2 is available (caller contract). The table loads read 32
    // bytes from `[u8; 32]` / `[u32; 8]` arrays (`width <= 15` indexes
    // within the 17-entry tables). For step `s < n`, `steps` guarantees
    // `2*c*s + c + 16 <= packed.len()`, so both 16-byte loads at byte
    // offsets `2*c*s` and `2*c*s + c` are in bounds, and `16*s + 16 <=
    // out.len()`, so the 32-byte store of 16 u16 is in bounds. Unaligned
    // load/store intrinsics are used throughout, so no alignment is needed.
    unsafe {
        let shuffle = _mm256_loadu_si256(TABLES.unpack_shuffle[c].as_ptr().cast());
        let shift = _mm256_loadu_si256(TABLES.unpack_shift[c].as_ptr().cast());
        let mask = _mm256_set1_epi32(generic::mask32(width) as i32);
        for s in 0..n {
            let p = src.add(2 * c * s);
            let a = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
            let b = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(c).cast()));
            let a =
                _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(a, shuffle), shift), mask);
            let b =
                _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(b, shuffle), shift), mask);
            // packus interleaves 64-bit quarters: [a0..4, b0..4 | a4..8, b4..8].
            let r = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
            _mm256_storeu_si256(dst.add(16 * s).cast(), r);
        }
    }
    n
}

/// AVX2 pack: range-checks `codes`, then packs them into `out`.
///
/// # Safety
///
/// The CPU must support AVX2. `width` should be in `1..=16` and `out`
/// exactly `packed_len(codes.len(), width)` bytes long (otherwise the output
/// is meaningless but memory safety is unaffected).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pack(codes: &[u16], width: u32, out: &mut [u8]) -> Result<(), PackError> {
    generic::check_codes(codes, width)?;
    match width {
        8 => generic::pack8(codes, out),
        16 => generic::pack16(codes, out),
        1..=15 => {
            // SAFETY: the caller guarantees AVX2; widths are in range for
            // each instantiation.
            let done = unsafe {
                match (width == 15, width.is_multiple_of(2)) {
                    (true, _) => pack_steps::<false, false>(codes, width, out),
                    (false, true) => pack_steps::<true, true>(codes, width, out),
                    (false, false) => pack_steps::<true, false>(codes, width, out),
                }
            };
            let c = width as usize;
            let src = codes.get(16 * done..).unwrap_or(&[]);
            let dst = out.get_mut(2 * c * done..).unwrap_or(&mut []);
            generic::pack_kernel(src, width, dst);
        }
        _ => {}
    }
    Ok(())
}

/// Packs as many whole 16-code steps as can be stored without writing past
/// `out`; returns the number of steps done.
///
/// `MADD`: use `vpmaddwd` for the pair step (requires `width <= 14`).
/// `EVEN`: `width` is even (byte-concatenation octet step).
///
/// # Safety
///
/// The CPU must support AVX2, `width` must be in `1..=15` and consistent
/// with `MADD`/`EVEN`, and `codes` must already be range-checked.
#[target_feature(enable = "avx2")]
unsafe fn pack_steps<const MADD: bool, const EVEN: bool>(
    codes: &[u16],
    width: u32,
    out: &mut [u8],
) -> usize {
    let c = width as usize;
    let n = steps(codes.len(), out.len(), c);
    let src = codes.as_ptr();
    let dst = out.as_mut_ptr();
    let d = (32 - 2 * width) as i32;
    let e = (64 - 4 * width) as i64;
    // SAFETY: AVX2 is available (caller contract). The table load reads a
    // `[u8; 32]` (`width <= 15` indexes within the 17-entry table). For step
    // `s < n`, `steps` guarantees `16*s + 16 <= codes.len()`, so the 32-byte
    // load of 16 u16 is in bounds, and `2*c*s + c + 16 <= out.len()`, so
    // both 16-byte stores at byte offsets `2*c*s` and `2*c*s + c` are in
    // bounds. Unaligned load/store intrinsics are used throughout.
    unsafe {
        let pair_mul = _mm256_set1_epi32((1i32 << (width + 16)) | 1);
        let hi15 = _mm256_set1_epi32(0xFFFF_8000u32 as i32);
        let quad_left = _mm256_setr_epi32(d, 0, d, 0, d, 0, d, 0);
        let quad_right = _mm_cvtsi32_si128(d);
        let compact = _mm256_loadu_si256(TABLES.pack_compact[c].as_ptr().cast());
        let oct_right = _mm256_setr_epi64x(0, e, 0, e);
        let oct_left = _mm_cvtsi32_si128(4 * width as i32);
        for s in 0..n {
            let v = _mm256_loadu_si256(src.add(16 * s).cast());
            // 1. pairs: x = c[2j] + (c[2j+1] << C) in 32-bit lanes.
            let x = if MADD {
                _mm256_madd_epi16(v, pair_mul)
            } else {
                _mm256_sub_epi32(v, _mm256_and_si256(_mm256_srli_epi32::<1>(v), hi15))
            };
            // 2. quads: y = x0 + (x1 << 2C) in 64-bit lanes.
            let y = _mm256_srl_epi64(_mm256_sllv_epi32(x, quad_left), quad_right);
            // 3. octets: z = y0 + (y1 << 4C) in 128-bit lanes.
            let z = if EVEN {
                _mm256_shuffle_epi8(y, compact)
            } else {
                _mm256_or_si256(
                    _mm256_srlv_epi64(y, oct_right),
                    _mm256_sll_epi64(_mm256_bsrli_epi128::<8>(y), oct_left),
                )
            };
            let p = dst.add(2 * c * s);
            _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(z));
            _mm_storeu_si128(p.add(c).cast(), _mm256_extracti128_si256::<1>(z));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_tables_select_each_codes_bytes() {
        for c in 1..=15usize {
            for i in 0..8 {
                let o = i * c / 8;
                let s = TABLES.unpack_shift[c][i] as usize;
                // The code (s + c bits from byte o) fits in three bytes...
                assert!(s + c <= 24);
                // ...which all lie in the 16 loaded bytes when needed.
                let needed = (s + c).div_ceil(8);
                for k in 0..needed {
                    assert_eq!(TABLES.unpack_shuffle[c][4 * i + k] as usize, o + k);
                }
                assert_eq!(TABLES.unpack_shuffle[c][4 * i + 3], 0x80);
            }
        }
    }

    #[test]
    fn steps_stay_in_bounds() {
        for c in 1..=15usize {
            for bytes in 0..100 {
                for codes in [0, 15, 16, 17, 64, 1000] {
                    let n = steps(codes, bytes, c);
                    assert!(16 * n <= codes);
                    if n > 0 {
                        assert!(2 * c * (n - 1) + c + 16 <= bytes);
                    }
                }
            }
        }
    }
}
