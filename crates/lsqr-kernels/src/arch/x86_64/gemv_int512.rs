//! Linear on packed rows with integer dot products, AVX-512 (F, BW, VL,
//! VBMI, VNNI), for one activation vector or a batch of them: C = 2 with
//! int8 tables and C = 3..=8 with int16 ones, blocks of 64 columns lying
//! in one scale group (or at C = 4 in two, four or eight: two-level
//! scales' sub-blocks of 32, 16 and 8, [`SplitLanes`] for the last two).
//! Other jobs (C = 1, blocks of 32) take the AVX2 kernel
//! (`super::gemv_int`), whose results these equal bit for bit.
//!
//! Two-level scales as stored (`crate::kernels::SubScales`) are expanded
//! to f32 four rows at a time before those rows' blocks
//! (`super::gemv_int::ExpandedScales`), so that memory gives a byte per
//! sub-block and the block loop reads f32 scales from L1.
//!
//! A block's 64 codes fill one register, arranged so that the two
//! `vpunpck{l,h}bw` of their looked-up low and high bytes give the int16
//! levels of the block's stored positions `0..32` and `32..64` (the AVX2
//! kernel's order, `crate::kernels::int_act_column`), which two
//! `vpdpwssd` multiply with the block's activations as two plain loads:
//! - C = 2 (int8 levels and activations): each 32-code span's 8 bytes in
//!   four qwords shifted by 0, 2, 4 and 6 bits (`vpsrlvq`), the AVX2
//!   kernel's order, looked up by `vpshufb`; `vpdpbusd` multiplies the
//!   levels' magnitudes by the activations carrying their signs;
//! - C = 4: the 32 bytes spread to 32 words (`vpermb`, each word a byte
//!   of the order the activations want), whose low and high nibbles are
//!   looked up as words by two `vpermw` (16 entries): no byte planes to
//!   interleave;
//! - C = 3, 5..=7: the 8·C bytes' qwords of eight codes, gathered (`vpermb`)
//!   in the order the unpacks want, cut into bytes by `vpmultishiftqb`
//!   (eight bit fields per qword at offsets 0, C, .., 7·C) and a mask;
//!   looked up by `vpshufb` (C = 3), `vpermb` (64 entries, C = 5, 6) or
//!   `vpermi2b` (128, C = 7);
//! - C = 8: the 64 bytes (`vpermq`), looked up by two `vpermi2b` per byte
//!   plane and a blend by the code's top bit.
//!
//! The last rows, and a row's last partial block, load their codes with a
//! byte mask (faults suppressed past it), so every row runs here (the
//! codes past a row's end load as zeros against zero activations); the
//! other blocks take plain loads, which measured faster out of cache. At
//! batch 1 the loop prefetches the same block four rows on: a row's codes
//! are a short stream (2-4 KB at 4096 columns), and without the hint the
//! kernel waited on memory (C = 8 at 4096 x 4096, cold: about 1.2 ms
//! without, 0.66 ms with).
//!
//! Batch > 1 looks each row's block up once for four vectors, as the AVX2
//! kernel does; every vector's results are those of a batch of it alone.
//!
//! Exactness: a 512-bit sum of a block has 16 int32 lanes; lane `k` and
//! `k + 8` hold what the AVX2 kernel's lane `k` holds (the same terms,
//! exact integer sums), so their sum is that lane, and the block's f32
//! epilogue and the final lane sum are the AVX2 kernel's own functions.

use core::arch::x86_64::*;

use super::gemv_int::{
    add_block, lane_groups, lanes_sum, prefetch_next_rows, ExpandedScales, GroupWalk, RowScales,
};
use crate::kernels::{IntRows, IntTable};

/// Whether [`gemv_int`] takes this job (the caller has checked the
/// extents of codes and scales, as for the AVX2 kernel).
pub(crate) fn supports(w: &IntRows<'_>) -> bool {
    let p = &w.rows;
    let form = match w.table {
        IntTable::I16(_) => p.bits == 3 || p.bits == 4,
        IntTable::I16Large(..) => (5..=8).contains(&p.bits),
        IntTable::I8(_) => p.bits == 2,
    };
    let padded = p.cols.div_ceil(64) * 64;
    let acts = if w.table.wide() { w.act16.len() } else { w.act8.len() };
    // One group per block, or at C = 4 two, four or eight (two-level
    // scales' sub-blocks), in rows of whole blocks: with two, lanes 0..4
    // of a row's folded sums hold the first group's columns, 4..8 the
    // second's; with four or eight, each lane its own (`SplitLanes`).
    let groups_fit = match w.groups_per_block {
        1 => p.group > 0 && (p.group.is_multiple_of(64) || p.group >= p.cols),
        n @ (2 | 4 | 8) => p.bits == 4 && p.group == 64 / n && p.cols.is_multiple_of(64),
        _ => false,
    };
    form && w.batch >= 1
        && w.block == 64
        && groups_fit
        && p.cols > 0
        && p.cols.is_multiple_of(8)
        && w.act_scales.len() >= w.batch.saturating_mul(padded / 64)
        && acts >= w.batch.saturating_mul(padded)
}

/// `y[r · batch + v]` for every row and vector (`y.len() / batch` rows);
/// returns the rows done (all).
///
/// # Safety
/// AVX-512 F, BW, VL, VBMI and VNNI, AVX2 and FMA must be available;
/// `supports(w)` must hold; `packed` holds `y.len()` rows of `cols · C / 8`
/// bytes and `scales` covers every `row · scale_stride + group` of them;
/// `y.len()` is a multiple of the batch.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
pub(crate) unsafe fn gemv_int(w: &IntRows<'_>, y: &mut [f32]) -> usize {
    // SAFETY: forwarded.
    unsafe {
        match w.rows.bits {
            2 => gemv_c::<2>(w, y),
            3 => gemv_c::<3>(w, y),
            4 => gemv_c::<4>(w, y),
            5 => gemv_c::<5>(w, y),
            6 => gemv_c::<6>(w, y),
            7 => gemv_c::<7>(w, y),
            8 => gemv_c::<8>(w, y),
            _ => 0,
        }
    }
}

/// [`gemv_int`] at one width: four rows at a time share the activation
/// loads.
///
/// # Safety
/// As [`gemv_int`], with `BITS == w.rows.bits`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
unsafe fn gemv_c<const BITS: u32>(w: &IntRows<'_>, y: &mut [f32]) -> usize {
    let t = tables(&w.table);
    let u = unpack_consts(BITS);
    let p = &w.rows;
    // Rows below `whole` can load `load_len` bytes at any block: its
    // start plus that stays inside `packed`.
    let rb = p.cols / 8 * BITS as usize;
    let last_block = (p.cols.div_ceil(64) - 1) * 8 * BITS as usize;
    let out_rows = y.len() / w.batch;
    let whole = (p.packed.len() + rb)
        .saturating_sub(last_block + load_len(BITS))
        .checked_div(rb)
        .map_or(out_rows, |rows| rows.min(out_rows));
    if w.batch > 1 {
        // SAFETY: forwarded; rows below `whole` are whole.
        unsafe { batch_rows::<BITS>(w, &u, &t, whole, y) };
        return y.len();
    }
    // Stored two-level scales: four rows' at a time expanded to f32 here,
    // then read as f32 scales (`ExpandedScales`).
    let mut expanded = ExpandedScales::new(p);
    let mut r = 0;
    while r + 4 <= whole {
        // SAFETY: rows r..r + 4 exist and are whole (the caller, above);
        // so are their scales.
        let v = unsafe {
            let scales = match expanded.as_mut() {
                // `rows` gives each row's stored scales, its group count
                // and room for them.
                Some(e) => e.rows::<4>(p, r, |s, n, out| expand_row(s, n, out)),
                None => RowScales::of(p, r),
            };
            rows::<4, BITS, true>(w, &u, &t, r, scales)
        };
        y[r..r + 4].copy_from_slice(&v);
        r += 4;
    }
    while r < y.len() {
        // SAFETY: row r exists (the caller).
        y[r] = unsafe { rows::<1, BITS, false>(w, &u, &t, r, RowScales::of(p, r)) }[0];
        r += 1;
    }
    y.len()
}

/// The table in registers: C = 2, the 16 int8 entries in each 128-bit
/// lane of `lo[0]`; C = 3, the 16 int16 entries' low and high bytes so in
/// `lo[0]`, `hi[0]`; C = 4, `words`; C = 5..=8, entries `64k..64k + 64`'
/// low and high bytes in `lo[k]`, `hi[k]`.
struct Tables {
    lo: [__m512i; 4],
    hi: [__m512i; 4],
    /// C = 4: the 16 int16 levels, words 0..16 (`vpermw`).
    words: __m512i,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
fn tables(t: &IntTable) -> Tables {
    let zero = _mm512_setzero_si512();
    match t {
        IntTable::I16(v) => {
            let plane = |k: usize| -> [u8; 16] { core::array::from_fn(|i| v[i].to_le_bytes()[k]) };
            // SAFETY: 16 readable bytes.
            let bcast =
                |b: [u8; 16]| _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(b.as_ptr().cast()) });
            // SAFETY: 16 readable words.
            let words = _mm512_zextsi256_si512(unsafe { _mm256_loadu_si256(v.as_ptr().cast()) });
            Tables {
                lo: [bcast(plane(0)), zero, zero, zero],
                hi: [bcast(plane(1)), zero, zero, zero],
                words,
            }
        }
        IntTable::I16Large(v, _) => {
            // Entries 64k..64k + 64 as two registers of 32 words, each
            // narrowed to its low (high) bytes and the halves joined.
            let planes = |k: usize| {
                // SAFETY: v holds 256 words; 64k + 64 <= 256.
                let (a, b) = unsafe {
                    (
                        _mm512_loadu_si512(v.as_ptr().add(64 * k).cast()),
                        _mm512_loadu_si512(v.as_ptr().add(64 * k + 32).cast()),
                    )
                };
                let join =
                    |x: __m256i, y: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), y);
                let lo = join(_mm512_cvtepi16_epi8(a), _mm512_cvtepi16_epi8(b));
                let hi = join(
                    _mm512_cvtepi16_epi8(_mm512_srli_epi16::<8>(a)),
                    _mm512_cvtepi16_epi8(_mm512_srli_epi16::<8>(b)),
                );
                (lo, hi)
            };
            let p = [planes(0), planes(1), planes(2), planes(3)];
            Tables { lo: p.map(|p| p.0), hi: p.map(|p| p.1), words: zero }
        }
        IntTable::I8(v) => {
            // SAFETY: 16 readable bytes.
            let t = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(v.as_ptr().cast()) });
            Tables { lo: [t, zero, zero, zero], hi: [zero; 4], words: zero }
        }
    }
}

/// The constants of arranging a block's codes (see the module doc).
struct Unpack {
    /// C = 2, 8: the `vpermq` control; C = 3..=7: the `vpermb` one.
    perm: __m512i,
    /// C = 3, 5..=7: the `vpmultishiftqb` control (bit offsets 0, C, ..,
    /// 7·C); C = 2: each qword's `vpsrlvq` shift.
    shift: __m512i,
    /// The low C bits of each byte (C = 4: unused).
    mask: __m512i,
}

/// The qword (group of eight codes, or at C = 4 a half's eight bytes) that
/// each qword of the arranged register takes: `vpunpcklbw` reads qwords
/// 0, 2, 4, 6 (stored positions 0..32: groups 0, 2, 1, 3), `vpunpckhbw`
/// qwords 1, 3, 5, 7 (positions 32..64: groups 4, 6, 5, 7).
const QWORD_ORDER: [usize; 8] = [0, 4, 2, 6, 1, 5, 3, 7];

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
fn unpack_consts(bits: u32) -> Unpack {
    let c = bits as usize;
    let mut perm = [0u8; 64];
    let mut shift = [0u8; 64];
    for (q, &g) in QWORD_ORDER.iter().enumerate() {
        for b in 0..8 {
            // Group g's codes are bytes g·C..g·C + C; the bytes past them
            // are read but masked off.
            perm[8 * q + b] = (g * c + b).min(63) as u8;
            shift[8 * q + b] = (b * c) as u8;
        }
    }
    let qwords: [u64; 8] = QWORD_ORDER.map(|g| g as u64);
    // SAFETY: each array is 64 readable bytes.
    let load = |p: *const u8| unsafe { _mm512_loadu_si512(p.cast()) };
    if bits == 2 {
        return Unpack {
            perm: _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1),
            shift: _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6),
            mask: _mm512_set1_epi8(3),
        };
    }
    if bits == 4 {
        // Word s of the block's register: raw byte `m(s)`, whose low
        // nibble is the code of stored position s and high nibble that of
        // 32 + s (`int_act_column`: m swaps 8..16 with 16..24).
        let mut bytes = [0u8; 64];
        for (s, b) in bytes.chunks_exact_mut(2).enumerate() {
            b[0] = match s {
                8..=15 => s + 8,
                16..=23 => s - 8,
                _ => s,
            } as u8;
        }
        return Unpack {
            perm: load(bytes.as_ptr()),
            shift: _mm512_setzero_si512(),
            mask: _mm512_setzero_si512(),
        };
    }
    Unpack {
        perm: if bits == 8 { load(qwords.as_ptr().cast()) } else { load(perm.as_ptr()) },
        shift: load(shift.as_ptr()),
        mask: _mm512_set1_epi8(((1u32 << bits.min(7)) - 1) as i8),
    }
}

/// The byte mask of a load of `n <= 64` bytes.
#[inline]
fn byte_mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// A block's codes, one byte each, arranged as the module doc says, from
/// the `k`-masked bytes at `p`, or (`WHOLE`) from a plain load of
/// [`load_len`] bytes (masked loads measured slower out of cache).
///
/// # Safety
/// The bytes `k` selects at `p` are readable; `WHOLE`: `load_len(BITS)`
/// bytes at `p` are, and `k` selects all 8·C of the block's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn codes64<const BITS: u32, const WHOLE: bool>(u: &Unpack, p: *const u8, k: u64) -> __m512i {
    if BITS == 2 {
        // SAFETY: the caller (k has at most 16 bits set; WHOLE: 16
        // readable bytes).
        let raw = unsafe {
            if WHOLE {
                _mm_loadu_si128(p.cast())
            } else {
                _mm_maskz_loadu_epi8(k as u16, p.cast())
            }
        };
        // Each span's 8 bytes in four qwords, shifted by 0, 2, 4, 6: the
        // AVX2 kernel's order (stored position 8j + i: code 4i + j).
        let spans = _mm512_permutexvar_epi64(u.perm, _mm512_castsi128_si512(raw));
        return _mm512_and_si512(_mm512_srlv_epi64(spans, u.shift), u.mask);
    }
    if BITS == 4 {
        // SAFETY: the caller (k has at most 32 bits set; WHOLE: 32
        // readable bytes).
        let raw = unsafe {
            if WHOLE {
                _mm256_loadu_si256(p.cast())
            } else {
                _mm256_maskz_loadu_epi8(k as u32, p.cast())
            }
        };
        // Each word a byte of two codes (`unpack_consts`).
        _mm512_maskz_permutexvar_epi8(0x5555_5555_5555_5555, u.perm, _mm512_castsi256_si512(raw))
    } else {
        // SAFETY: the caller (WHOLE: 64 readable bytes).
        let raw = unsafe {
            if WHOLE {
                _mm512_loadu_si512(p.cast())
            } else {
                _mm512_maskz_loadu_epi8(k, p.cast())
            }
        };
        if BITS == 8 {
            _mm512_permutexvar_epi64(u.perm, raw)
        } else {
            let grouped = _mm512_permutexvar_epi8(u.perm, raw);
            _mm512_and_si512(_mm512_multishift_epi64_epi8(u.shift, grouped), u.mask)
        }
    }
}

/// [`codes64`] of a block of `n` columns: a plain load when the row is
/// `WHOLE` and the block full, else the masked one.
///
/// # Safety
/// As [`codes64`] for the load it picks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn block_codes<const BITS: u32, const WHOLE: bool>(
    u: &Unpack,
    p: *const u8,
    n: usize,
    k: u64,
) -> __m512i {
    // SAFETY: the caller.
    unsafe {
        if WHOLE && n == 64 {
            codes64::<BITS, true>(u, p, k)
        } else {
            codes64::<BITS, false>(u, p, k)
        }
    }
}

/// The bytes a plain load of a block's codes reads (8·C of them are the
/// block's).
const fn load_len(bits: u32) -> usize {
    match bits {
        2 => 16,
        4 => 32,
        _ => 64,
    }
}

/// A block's looked-up levels: int16 words of stored positions `0..32`
/// and `32..64` (`levels`); C = 2, the int8 levels' magnitudes (in
/// `levels[0]`) and their signs (`negative`).
struct Looked {
    levels: [__m512i; 2],
    negative: __mmask64,
}

/// The block's int32 sums, 16 lanes, added to `acc`: `a`, the block's
/// activations (two registers of int16, or one of int8 at C = 2).
/// `vpdpbusd` multiplies the int8 levels' magnitudes by the activations
/// carrying the levels' signs, as the AVX2 kernel's `vpmaddubsw` does
/// (no pair can saturate: 2 · 127 · 127 < 2^15).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
fn dot<const BITS: u32>(acc: __m512i, l: &Looked, a: [__m512i; 2]) -> __m512i {
    if BITS == 2 {
        let signed = _mm512_mask_sub_epi8(a[0], l.negative, _mm512_setzero_si512(), a[0]);
        _mm512_dpbusd_epi32(acc, l.levels[0], signed)
    } else {
        _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(acc, l.levels[0], a[0]), l.levels[1], a[1])
    }
}

/// The activations of vector `v`'s block at column `c0`, as [`dot`]
/// takes them.
///
/// # Safety
/// The block lies in `act8` (C = 2) or `act16` (`supports`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn block_acts<const BITS: u32>(w: &IntRows<'_>, v: usize, c0: usize) -> [__m512i; 2] {
    let at = v * w.padded_cols() + c0;
    // SAFETY: the caller.
    unsafe {
        if BITS == 2 {
            [_mm512_loadu_si512(w.act8.as_ptr().add(at).cast()), _mm512_setzero_si512()]
        } else {
            let p = w.act16.as_ptr().add(at);
            [_mm512_loadu_si512(p.cast()), _mm512_loadu_si512(p.add(32).cast())]
        }
    }
}

/// The looked-up levels of 64 arranged codes ([`Looked`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
fn lookup<const BITS: u32>(codes: __m512i, t: &Tables) -> Looked {
    if BITS == 2 {
        let v = _mm512_shuffle_epi8(t.lo[0], codes);
        return Looked {
            levels: [_mm512_abs_epi8(v), _mm512_setzero_si512()],
            negative: _mm512_movepi8_mask(v),
        };
    }
    if BITS == 4 {
        // Words of two codes each: the low nibbles index positions 0..32,
        // the high ones 32..64, each looked up by `vpermw`.
        let lo = _mm512_and_si512(codes, _mm512_set1_epi16(0x0f));
        let hi = _mm512_srli_epi16::<4>(codes);
        return Looked {
            levels: [_mm512_permutexvar_epi16(lo, t.words), _mm512_permutexvar_epi16(hi, t.words)],
            negative: 0,
        };
    }
    let plane = |p: &[__m512i; 4]| match BITS {
        3 => _mm512_shuffle_epi8(p[0], codes),
        5 | 6 => _mm512_permutexvar_epi8(codes, p[0]),
        7 => _mm512_permutex2var_epi8(p[0], codes, p[1]),
        _ => {
            let low = _mm512_permutex2var_epi8(p[0], codes, p[1]);
            let high = _mm512_permutex2var_epi8(p[2], codes, p[3]);
            _mm512_mask_blend_epi8(_mm512_movepi8_mask(codes), low, high)
        }
    };
    let (l, h) = (plane(&t.lo), plane(&t.hi));
    Looked { levels: [_mm512_unpacklo_epi8(l, h), _mm512_unpackhi_epi8(l, h)], negative: 0 }
}

/// Rows `r..r + R` against the single vector: per block, each row's 16
/// int32 lanes folded to the AVX2 kernel's eight, then its epilogue, two
/// rows to a register ([`add_pair`]; R = 1 on its own). The whole blocks
/// run in a loop of their own, without the partial block's masks.
///
/// # Safety
/// As [`gemv_int`], and rows `r..r + R` exist, their scales in `scales`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn rows<const R: usize, const BITS: u32, const WHOLE: bool>(
    w: &IntRows<'_>,
    u: &Unpack,
    t: &Tables,
    r: usize,
    scales: RowScales,
) -> [f32; R] {
    // One row alone, or pairs of rows in `RowSums::fsum`'s four registers.
    const { assert!(R == 1 || (R.is_multiple_of(2) && R <= 8)) };
    let p = &w.rows;
    let rb = p.cols / 8 * BITS as usize;
    // SAFETY: row r starts inside `packed` (the caller).
    let codes = unsafe { p.packed.as_ptr().add(r * rb) };
    let mut st = RowSums::<R> {
        codes,
        scales,
        fsum: [_mm512_setzero_ps(); 4],
        groups: GroupWalk::new(w),
        split: SplitLanes::of(w),
    };
    let full = p.cols / 64;
    for b in 0..full {
        // SAFETY: forwarded; block b is whole.
        unsafe { row_block::<R, BITS, WHOLE>(w, u, t, &mut st, b, 64) };
    }
    if !p.cols.is_multiple_of(64) {
        // SAFETY: forwarded; the last block has `cols % 64` columns.
        unsafe { row_block::<R, BITS, false>(w, u, t, &mut st, full, p.cols % 64) };
    }
    core::array::from_fn(|q| {
        let pair = st.fsum[q / 2];
        let half = if q % 2 == 0 {
            _mm512_castps512_ps256(pair)
        } else {
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(pair)))
        };
        lanes_sum(half)
    })
}

/// What [`rows`] carries from block to block.
struct RowSums<const R: usize> {
    /// The first row's codes (the others follow, `rb` bytes apart).
    codes: *const u8,
    /// The first row's scales (the others' follow).
    scales: RowScales,
    /// Pair k: rows 2k (lanes 0..8) and 2k + 1 (lanes 8..16); R = 1: row 0
    /// in lanes 0..8 of pair 0.
    fsum: [__m512; 4],
    groups: GroupWalk,
    split: SplitLanes,
}

/// Four or eight scale groups per block (C = 4, two-level sub-blocks of
/// 16 or 8): each of a row's 16 int32 lanes takes its own group's scale.
/// Lanes 0..8 of a block's sums hold the AVX2 kernel's part 0 (stored
/// positions 0..16 and 32..48), lanes 8..16 its part 1; the AVX2 kernel
/// adds each part's lanes into the row's f32 sums in turn, each scaled
/// through its own `vpermps` control (`lanes`), and so does this kernel.
#[derive(Clone, Copy)]
struct SplitLanes {
    on: bool,
    /// The AVX2 kernel's controls for parts 0 and 1.
    lanes: [__m256i; 2],
    /// The same for two rows' scales side by side (the second row's
    /// eight scales in lanes 8..16).
    pair: [__m512i; 2],
}

impl SplitLanes {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
    #[inline]
    fn of(w: &IntRows<'_>) -> Self {
        let on = w.rows.bits == 4 && w.groups_per_block >= 4;
        let lanes = if on { lane_groups(w) } else { [_mm256_setzero_si256(); 2] };
        let pair = lanes.map(|ctl| {
            let second = _mm256_add_epi32(ctl, _mm256_set1_epi32(8));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ctl), second)
        });
        Self { on, lanes, pair }
    }
}

/// Block `b` (`n` columns) of [`rows`]: its codes looked up and
/// multiplied, row by row, and added into `st`. `PLAIN`: plain loads of
/// [`load_len`] bytes (a whole block of a `WHOLE` row), else masked ones.
///
/// # Safety
/// As [`rows`]; `PLAIN` only where [`block_codes`] allows it.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn row_block<const R: usize, const BITS: u32, const PLAIN: bool>(
    w: &IntRows<'_>,
    u: &Unpack,
    t: &Tables,
    st: &mut RowSums<R>,
    b: usize,
    n: usize,
) {
    let c = BITS as usize;
    let rb = w.rows.cols / 8 * c;
    let c0 = 64 * b;
    let k = byte_mask(n / 8 * c);
    // Each block step reads R · 8 · C bytes of the R rows' run.
    let span = R * 8 * c;
    prefetch_next_rows(st.codes, R * rb, b * span, span);
    // SAFETY: c0 + 64 <= the padded columns <= the activations' length
    // (`supports`).
    let a = unsafe { block_acts::<BITS>(w, 0, c0) };
    // A loop, not `array::from_fn`: its closure was not always inlined.
    let mut acc = [_mm512_setzero_si512(); R];
    for (q, acc) in acc.iter_mut().enumerate() {
        // SAFETY: k selects the block's bytes of row r + q, which lie in
        // the row (c0 / 8 · C + that count <= rb); PLAIN: the caller.
        let codes =
            unsafe { block_codes::<BITS, PLAIN>(u, st.codes.add(q * rb + c0 / 8 * c), n, k) };
        *acc = dot::<BITS>(*acc, &lookup::<BITS>(codes, t), a);
    }
    // SAFETY: b < the padded blocks <= act_scales.len() (`supports`).
    let act = unsafe { *w.act_scales.get_unchecked(b) };
    let g = st.groups.next();
    if R == 1 {
        // SAFETY: the block's groups of the row have scales (the caller).
        let gs = unsafe { st.scales.block(w.groups_per_block, b, g) };
        let f = add_row_block(_mm512_castps512_ps256(st.fsum[0]), acc[0], gs, act, &st.split);
        st.fsum[0] = _mm512_castps256_ps512(f);
    } else {
        let act = _mm512_set1_ps(act);
        for q in (0..R).step_by(2) {
            let (row, pair) = (st.scales.row(q), [acc[q], acc[q + 1]]);
            // SAFETY: the block's groups of rows r + q and r + q + 1 have
            // scales (the caller; R is even).
            st.fsum[q / 2] = unsafe {
                if BITS == 4 && st.split.on {
                    let s = split_pair_scales(w.groups_per_block, row, b, act, &st.split);
                    add_pair_split(st.fsum[q / 2], pair, s)
                } else {
                    add_pair(st.fsum[q / 2], pair, pair_scales(w.groups_per_block, row, b, g), act)
                }
            };
        }
    }
}

/// Two rows' block sums added to their f32 sums `fsum` (rows in lanes
/// 0..8 and 8..16), each lane as the AVX2 kernel's `add_block` computes it
/// (lanes `k` and `k + 8` of a row's sums added as integers, converted,
/// times `scale · act`, added; `scale` from [`pair_scales`]): one fold,
/// conversion and two products for both rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
fn add_pair(fsum: __m512, acc: [__m512i; 2], scale: __m512, act: __m512) -> __m512 {
    // Lanes 0..8: row 0's halves' lanes added; 8..16: row 1's.
    let low = _mm512_shuffle_i64x2::<0b01_00_01_00>(acc[0], acc[1]);
    let high = _mm512_shuffle_i64x2::<0b11_10_11_10>(acc[0], acc[1]);
    let folded = _mm512_add_epi32(low, high);
    _mm512_add_ps(fsum, _mm512_mul_ps(_mm512_cvtepi32_ps(folded), _mm512_mul_ps(scale, act)))
}

/// One row's block sums `acc` added to its f32 sums `fsum` as the AVX2
/// kernel's `add_block` adds them: lanes `k` and `k + 8` added as
/// integers, or with [`SplitLanes`] kept apart as its two parts.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
fn add_row_block(fsum: __m256, acc: __m512i, gs: __m256, act: f32, split: &SplitLanes) -> __m256 {
    let (low, high) = (_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64::<1>(acc));
    if split.on {
        add_block::<true>(fsum, [low, high], gs, act, &split.lanes)
    } else {
        let zero = _mm256_setzero_si256();
        add_block::<false>(fsum, [_mm256_add_epi32(low, high), zero], gs, act, &[zero; 2])
    }
}

/// [`add_pair`] with [`SplitLanes`]: each row's part 0 (lanes 0..8 of its
/// sums), then its part 1 (lanes 8..16), converted, times `scale · act`
/// (`scaled[part]` from [`split_pair_scales`]) and added, as the AVX2
/// kernel's `add_block` adds them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
fn add_pair_split(fsum: __m512, acc: [__m512i; 2], scaled: [__m512; 2]) -> __m512 {
    let part0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(acc[0], acc[1]);
    let part1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(acc[0], acc[1]);
    let f = _mm512_add_ps(fsum, _mm512_mul_ps(_mm512_cvtepi32_ps(part0), scaled[0]));
    _mm512_add_ps(f, _mm512_mul_ps(_mm512_cvtepi32_ps(part1), scaled[1]))
}

/// `scale · act` of block `b` of the rows `row` and the one after it for
/// [`add_pair_split`]: per part, each lane's group's, the first row's in
/// lanes 0..8 and the second's in 8..16 (one product for both parts: the
/// permutes move the products, which are each lane's own).
///
/// # Safety
/// The block's groups of both rows have scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn split_pair_scales(
    groups_per_block: usize,
    row: RowScales,
    b: usize,
    act: __m512,
    split: &SplitLanes,
) -> [__m512; 2] {
    // SAFETY: the caller.
    let (first, second) =
        unsafe { (row.block(groups_per_block, b, 0), row.row(1).block(groups_per_block, b, 0)) };
    let both = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castpd256_pd512(_mm256_castps_pd(first)),
        _mm256_castps_pd(second),
    ));
    let scaled = _mm512_mul_ps(both, act);
    split.pair.map(|idx| _mm512_permutexvar_ps(idx, scaled))
}

/// The scales of block `b` of the rows `row` and the one after it, lane
/// by lane as [`add_pair`] takes them: one group `g` per block, each row's
/// broadcast to its eight lanes; two groups per block (`RowScales::block`'s
/// layout), each to four.
///
/// # Safety
/// The block's groups of both rows have scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn pair_scales(groups_per_block: usize, row: RowScales, b: usize, g: usize) -> __m512 {
    // SAFETY: the caller.
    unsafe {
        let next = row.row(1);
        if row.stored() {
            let low = _mm256_castps_pd(row.block(groups_per_block, b, g));
            let high = _mm256_castps_pd(next.block(groups_per_block, b, g));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(low), high))
        } else if groups_per_block == 2 {
            let (first, second) = (row.f32s(2 * b), next.f32s(2 * b));
            let both = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(first.cast()), second.cast()));
            let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
            _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(both))
        } else {
            _mm512_mask_blend_ps(
                0xff00,
                _mm512_set1_ps(row.scale(g)),
                _mm512_set1_ps(next.scale(g)),
            )
        }
    }
}

/// Row `s`'s first `groups` scales (stored two-level ones) as f32 at
/// `out`, sixteen at a time: `sup · f32::from(sub)`, the multiply
/// `RowScales::scale` does.
///
/// # Safety
/// `s` is stored and has `groups` groups; `out` is writable for `groups`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
unsafe fn expand_row(s: RowScales, groups: usize, out: *mut f32) {
    let (sup, sub, shift) = s.stored_parts();
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let shift_v = _mm_cvtsi32_si128(shift as i32);
    let mut g = 0;
    while g < groups {
        let n = (groups - g).min(16);
        let k = ((1u32 << n) - 1) as __mmask16;
        let base = g >> shift;
        let supers = ((g + n - 1) >> shift) - base + 1;
        // SAFETY: groups g..g + n and their super-blocks base..base +
        // supers exist (the caller); the masks keep the loads and the
        // store to them.
        unsafe {
            let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
                k,
                sub.add(g).cast(),
            )));
            // Sixteen or more sub-blocks per super-block (1024/16, 1024/8):
            // g is a multiple of 16, so all sixteen share one.
            let spread = if shift >= 4 {
                _mm512_set1_ps(*sup.add(base))
            } else {
                let sups =
                    _mm512_maskz_loadu_ps(((1u32 << supers) - 1) as __mmask16, sup.add(base));
                let at = _mm512_add_epi32(iota, _mm512_set1_epi32(g as i32));
                let idx =
                    _mm512_sub_epi32(_mm512_srl_epi32(at, shift_v), _mm512_set1_epi32(base as i32));
                _mm512_permutexvar_ps(idx, sups)
            };
            _mm512_mask_storeu_ps(out.add(g), k, _mm512_mul_ps(q, spread));
        }
        g += 16;
    }
}

/// Rows per block of [`batch_rows`]: their codes stay in L1 while the
/// batch's vectors pass over them, four at a time.
const ROW_BLOCK: usize = 4;

/// Batch > 1: every row against every vector, [`row_batch`] on up to four
/// vectors at a time (a row's block is looked up once for all of them),
/// [`ROW_BLOCK`] rows sharing each group of vectors while it is in L1:
/// the AVX2 kernel's order of work.
///
/// # Safety
/// As [`gemv_int`]; rows below `whole` can load `load_len` bytes at any
/// block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
unsafe fn batch_rows<const BITS: u32>(
    w: &IntRows<'_>,
    u: &Unpack,
    t: &Tables,
    whole: usize,
    y: &mut [f32],
) {
    let batch = w.batch;
    let rows = y.len() / batch;
    for first in (0..rows).step_by(ROW_BLOCK) {
        let block = first..(first + ROW_BLOCK).min(rows);
        let mut v = 0;
        // SAFETY: the rows exist, those below `whole` are whole; vectors
        // v..v + NB <= batch (the caller).
        unsafe {
            while v + 4 <= batch {
                for r in block.clone() {
                    let s = if r < whole {
                        row_batch::<4, BITS, true>(w, u, t, r, v)
                    } else {
                        row_batch::<4, BITS, false>(w, u, t, r, v)
                    };
                    y[r * batch + v..][..4].copy_from_slice(&s);
                }
                v += 4;
            }
            while v < batch {
                for r in block.clone() {
                    y[r * batch + v] = if r < whole {
                        row_batch::<1, BITS, true>(w, u, t, r, v)
                    } else {
                        row_batch::<1, BITS, false>(w, u, t, r, v)
                    }[0];
                }
                v += 1;
            }
        }
    }
}

/// Row `r` against vectors `v..v + NB`, each as [`rows`] computes one row
/// against one vector (the same lanes, the same order: bit-exact).
///
/// # Safety
/// As [`gemv_int`]; row `r` exists (`WHOLE`: it can load `load_len` bytes
/// at any block) and `v + NB <= w.batch`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
#[inline]
unsafe fn row_batch<const NB: usize, const BITS: u32, const WHOLE: bool>(
    w: &IntRows<'_>,
    u: &Unpack,
    t: &Tables,
    r: usize,
    v: usize,
) -> [f32; NB] {
    let p = &w.rows;
    let c = BITS as usize;
    let rb = p.cols / 8 * c;
    let blocks = w.blocks();
    // SAFETY: row r starts inside `packed` and its scales inside `scales`
    // (the caller).
    let (row_ptr, scales) = unsafe { (p.packed.as_ptr().add(r * rb), RowScales::of(p, r)) };
    let split = SplitLanes::of(w);
    let mut fsum = [_mm256_setzero_ps(); NB];
    let mut groups = GroupWalk::new(w);
    for (b, c0) in (0..p.cols).step_by(64).enumerate() {
        let n = (p.cols - c0).min(64);
        let k = byte_mask(n / 8 * c);
        // SAFETY: as in `rows`.
        let codes = unsafe {
            let at = row_ptr.add(c0 / 8 * c);
            block_codes::<BITS, WHOLE>(u, at, n, k)
        };
        let looked = lookup::<BITS>(codes, t);
        // SAFETY: the block's groups of row r have scales (the caller).
        let gs = unsafe { scales.block(w.groups_per_block, b, groups.next()) };
        for (q, fsum) in fsum.iter_mut().enumerate() {
            // SAFETY: vector v + q's block at c0 lies in the activations,
            // and its factor in act_scales (`supports`, v + q < batch).
            let (a, act) = unsafe {
                (
                    block_acts::<BITS>(w, v + q, c0),
                    *w.act_scales.get_unchecked((v + q) * blocks + b),
                )
            };
            let acc = dot::<BITS>(_mm512_setzero_si512(), &looked, a);
            *fsum = add_row_block(*fsum, acc, gs, act, &split);
        }
    }
    core::array::from_fn(|q| lanes_sum(fsum[q]))
}
