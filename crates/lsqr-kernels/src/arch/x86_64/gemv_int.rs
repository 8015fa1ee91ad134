//! Batch-1 linear on packed rows with integer dot products, AVX2 (C <= 4).
//!
//! The activations were quantized once per call (`crate::packed`), per
//! block of 32 or 64 columns, to int8 or int16; the weight's decode table
//! has an int8 or int16 copy of its 16 entries. Per 32 codes:
//! - unpack: the 4·C bytes of 32 codes (C <= 4: at most 16) are broadcast
//!   to both halves of a register; two `vpshufb` gather the 16-bit word
//!   holding each code, a `vpmullw` by `2^(8 - shift)` and a shift by 8
//!   right-align it, `vpackuswb` packs the 32 codes into bytes in order,
//!   and a mask keeps C bits;
//! - int8 table: one `vpshufb` looks the 32 codes up; `vpmaddubsw` (the
//!   table value's magnitude, unsigned, times the activation carrying the
//!   table value's sign: `vpsignb`) and `vpmaddwd` by ones add them into
//!   eight int32 sums;
//! - int16 table: two `vpshufb` (low and high bytes), interleaved into 16-bit
//!   values, two `vpmaddwd` against the int16 activations.
//!
//! Every sum is exact (int8: pairs at most 2 · 127 · 127 < 2^15; int16:
//! a 64-column block at most 64 · 8191 · 4095 < 2^31), so the block sums
//! equal the portable reference's; the f32 steps per block are the
//! reference's, lane by lane (`IntRows`), so the result is bit-exact.
//! Four rows share each activation load.

use core::arch::x86_64::*;

use crate::kernels::{IntRows, IntTable};

/// Whether [`gemv_int`] takes this job.
pub(crate) fn supports(w: &IntRows<'_>) -> bool {
    let p = &w.rows;
    (1..=4).contains(&p.bits)
        && (w.block == 32 || w.block == 64)
        && p.cols.is_multiple_of(w.block)
        && p.group > 0
        && (p.group.is_multiple_of(w.block) || p.group >= p.cols)
        && w.act_scales.len() >= p.cols / w.block
        && match w.table {
            IntTable::I8(_) => w.act8.len() >= p.cols,
            IntTable::I16(_) => w.act16.len() >= p.cols,
        }
}

/// The unpacking constants of C-bit codes: `vpshufb` controls gathering
/// each code's 16-bit word (for the two registers of a 32-code chunk) and
/// the `vpmullw` multipliers that move each code to bits 8.. of its lane.
struct Unpack {
    shuf: [__m256i; 2],
    mul: [__m256i; 2],
    mask: __m256i,
}

#[target_feature(enable = "avx2")]
fn unpack_consts(bits: u32) -> Unpack {
    let c = bits as usize;
    let mut shuf = [[0u8; 32]; 2];
    let mut mul = [[0i16; 16]; 2];
    for v in 0..2 {
        for slot in 0..16 {
            // Register v, 128-bit half h, slot j: code 16 h + 8 v + j.
            let (h, j) = (slot / 8, slot % 8);
            let code = 16 * h + 8 * v + j;
            let (byte, shift) = (code * c / 8, code * c % 8);
            shuf[v][2 * slot] = byte as u8;
            shuf[v][2 * slot + 1] = if byte + 1 < 16 { byte as u8 + 1 } else { 0x80 };
            mul[v][slot] = 1 << (8 - shift);
        }
    }
    // SAFETY: each array is 32 readable bytes.
    let load = |p: *const u8| unsafe { _mm256_loadu_si256(p.cast()) };
    Unpack {
        shuf: [load(shuf[0].as_ptr()), load(shuf[1].as_ptr())],
        mul: [load(mul[0].as_ptr().cast()), load(mul[1].as_ptr().cast())],
        mask: _mm256_set1_epi8(((1u32 << bits) - 1) as i8),
    }
}

/// The 32 codes of the 16 bytes at `p` (only the first 4·C used), one
/// byte each, in order.
///
/// # Safety
/// `p` must be readable for 16 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn codes32(u: &Unpack, p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes.
    let bytes = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
    let lane = |v: usize| {
        let words = _mm256_shuffle_epi8(bytes, u.shuf[v]);
        _mm256_srli_epi16::<8>(_mm256_mullo_epi16(words, u.mul[v]))
    };
    _mm256_and_si256(_mm256_packus_epi16(lane(0), lane(1)), u.mask)
}

/// `y[r]` for the rows whose loads stay inside `packed`; returns how many
/// leading rows were done (the caller finishes the rest).
///
/// # Safety
/// AVX2 must be available; `supports(w)` must hold; `scales` must cover
/// every `row * scale_stride + group` of `y.len()` rows; `packed` holds
/// `y.len()` rows.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn gemv_int(w: &IntRows<'_>, y: &mut [f32]) -> usize {
    let p = &w.rows;
    let chunk = 4 * p.bits as usize;
    let rb = p.cols / 8 * p.bits as usize;
    // Row r is safe when its last chunk's 16-byte load fits.
    let safe_rows = (p.packed.len() + chunk)
        .saturating_sub(16)
        .checked_div(rb)
        .map_or(y.len(), |rows| rows.min(y.len()));
    let u = unpack_consts(p.bits);
    let wide = matches!(w.table, IntTable::I16(_));
    let mut r = 0;
    while r + 4 <= safe_rows {
        // SAFETY: rows r..r + 4 are safe; the rest is the caller's contract.
        let v = unsafe {
            if wide {
                rows::<4, true>(w, &u, r)
            } else {
                rows::<4, false>(w, &u, r)
            }
        };
        y[r..r + 4].copy_from_slice(&v);
        r += 4;
    }
    while r < safe_rows {
        // SAFETY: as above, one row.
        y[r] = unsafe {
            if wide {
                rows::<1, true>(w, &u, r)
            } else {
                rows::<1, false>(w, &u, r)
            }
        }[0];
        r += 1;
    }
    safe_rows
}

/// The eight int32 partial sums of one 32-code chunk of one row:
/// `WIDE` false: int8 table `lo`, activations `a0`; true: int16 table
/// bytes `lo`, `hi`, activations `a0` (columns `[0..8, 16..24]`), `a1`
/// (`[8..16, 24..32]`).
///
/// # Safety
/// `p` readable for 16 bytes.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_dot<const WIDE: bool>(
    u: &Unpack,
    p: *const u8,
    lo: __m256i,
    hi: __m256i,
    a0: __m256i,
    a1: __m256i,
) -> __m256i {
    // SAFETY: forwarded.
    let codes = unsafe { codes32(u, p) };
    if WIDE {
        let (l, h) = (_mm256_shuffle_epi8(lo, codes), _mm256_shuffle_epi8(hi, codes));
        let w0 = _mm256_unpacklo_epi8(l, h);
        let w1 = _mm256_unpackhi_epi8(l, h);
        _mm256_add_epi32(_mm256_madd_epi16(w0, a0), _mm256_madd_epi16(w1, a1))
    } else {
        let v = _mm256_shuffle_epi8(lo, codes);
        let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(a0, v));
        _mm256_madd_epi16(prod, _mm256_set1_epi16(1))
    }
}

/// The integer table in registers (16 entries repeated in both halves):
/// the int8 values, or the int16 values' low and high bytes.
#[target_feature(enable = "avx2")]
fn tables(t: &IntTable) -> (__m256i, __m256i) {
    let bcast = |b: [u8; 16]| {
        // SAFETY: 16 readable bytes.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(b.as_ptr().cast()) })
    };
    match t {
        IntTable::I8(v) => (bcast(v.map(|e| e as u8)), _mm256_setzero_si256()),
        IntTable::I16(v) => {
            (bcast(v.map(|e| e.to_le_bytes()[0])), bcast(v.map(|e| e.to_le_bytes()[1])))
        }
    }
}

/// Rows `r..r + R`.
///
/// # Safety
/// As [`gemv_int`], and rows `r..r + R` are safe.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::needless_range_loop)] // q indexes the accumulators and the rows
unsafe fn rows<const R: usize, const WIDE: bool>(
    w: &IntRows<'_>,
    u: &Unpack,
    r: usize,
) -> [f32; R] {
    let p = &w.rows;
    let (lo, hi) = tables(&w.table);
    let chunk = 4 * p.bits as usize;
    let rb = p.cols / 8 * p.bits as usize;
    let base = p.packed.as_ptr();
    let mut sum = _mm_setzero_ps();
    let mut sum1 = 0.0f32;
    let mut c0 = 0;
    let mut b = 0;
    while c0 < p.cols {
        let mut acc = [_mm256_setzero_si256(); R];
        let mut c = c0;
        while c < c0 + w.block {
            // SAFETY: c + 32 <= cols <= the activations' length
            // (`supports`); row r + q's chunk at byte (r + q) rb + c / 32
            // · 4C is readable for 16 bytes (safe rows).
            unsafe {
                let (a0, a1) = if WIDE {
                    let a0 = _mm256_loadu_si256(w.act16.as_ptr().add(c).cast());
                    let a1 = _mm256_loadu_si256(w.act16.as_ptr().add(c + 16).cast());
                    (
                        _mm256_permute2x128_si256::<0x20>(a0, a1),
                        _mm256_permute2x128_si256::<0x31>(a0, a1),
                    )
                } else {
                    (_mm256_loadu_si256(w.act8.as_ptr().add(c).cast()), _mm256_setzero_si256())
                };
                for q in 0..R {
                    let ptr = base.add((r + q) * rb + c / 32 * chunk);
                    let d = chunk_dot::<WIDE>(u, ptr, lo, hi, a0, a1);
                    acc[q] = _mm256_add_epi32(acc[q], d);
                }
            }
            c += 32;
        }
        let g = c0 / p.group;
        let a = w.act_scales[b];
        if R == 4 {
            let h01 = _mm256_hadd_epi32(acc[0], acc[1]);
            let h23 = _mm256_hadd_epi32(acc[2], acc[3]);
            let h = _mm256_hadd_epi32(h01, h23);
            let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            let gs = _mm_setr_ps(
                p.scales[r * p.scale_stride + g],
                p.scales[(r + 1) * p.scale_stride + g],
                p.scales[(r + 2) * p.scale_stride + g],
                p.scales[(r + 3) * p.scale_stride + g],
            );
            let f = _mm_mul_ps(gs, _mm_set1_ps(a));
            sum = _mm_add_ps(sum, _mm_mul_ps(_mm_cvtepi32_ps(s), f));
        } else {
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(acc[0]),
                _mm256_extracti128_si256::<1>(acc[0]),
            );
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            let s = _mm_cvtsi128_si32(s);
            sum1 += s as f32 * (p.scales[r * p.scale_stride + g] * a);
        }
        c0 += w.block;
        b += 1;
    }
    let mut out = [0.0f32; R];
    if R == 4 {
        let mut v = [0.0f32; 4];
        // SAFETY: 4 writable f32s.
        unsafe { _mm_storeu_ps(v.as_mut_ptr(), sum) };
        out.copy_from_slice(&v[..R]);
    } else {
        out[0] = sum1;
    }
    out
}
