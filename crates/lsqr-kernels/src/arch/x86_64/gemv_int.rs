//! Linear on packed rows with integer dot products, AVX2 (C <= 8), for one
//! activation vector or a batch of them.
//!
//! The activations were quantized once per call (`crate::packed`), each
//! vector per block of 32 or 64 columns, to int8 or int16, and stored in the order in
//! which this kernel unpacks codes (`crate::kernels::int_act_column`), so
//! the codes are never reordered. The weight's decode table has an int8 or
//! int16 copy of its (at most) 16 entries at C <= 4, an int16 copy of its
//! 32 to 256 entries at C = 5..=8. Per 32 codes:
//! - unpack, from exactly the chunk's 4·C bytes except at C = 3 and 5..=7:
//!   - C = 1, 2: the bytes broadcast to every dword (qword) lane, one
//!     variable shift per lane (`vpsrlvd` / `vpsrlvq`), a mask;
//!   - C = 3: the 12 bytes broadcast to both halves, `vpshufb` gathers the
//!     16-bit word holding each code, `vpmullw` by `2^(13 - shift)` moves
//!     the code to the word's top bits and a shift by 13 brings it down,
//!     `vpackuswb` makes bytes (16-byte loads: the last row may be left to
//!     the reference);
//!   - C = 4: low nibbles in the lower half, high nibbles (`vpsrlw` by 4)
//!     in the upper half (`vpblendd`), a mask;
//!   - C = 5..=7: as C = 3, codes 0..16 from the lower half's 16 bytes
//!     and codes 16..32 from the upper half's (loaded from byte 2·C);
//!   - C = 8: the 32 bytes;
//! - int8 table: one `vpshufb` looks the 32 codes up; `vpmaddubsw` (the
//!   table value's magnitude, unsigned, times the activation carrying the
//!   table value's sign: `vpsignb`) and `vpmaddwd` by ones add them into
//!   eight int32 sums;
//! - int16 table: two `vpshufb` (low and high bytes), interleaved into 16-bit
//!   values, two `vpmaddwd` against the int16 activations;
//! - C = 5..=8: the same with 2 to 16 subtables of 16 entries chained by
//!   XOR ([`xor_chain`]); a sign-magnitude table (`log`, the default,
//!   whose upper half is its lower half negated) looks up half the levels
//!   and negates with `vpsignw`: C = 6 takes 4 `vpshufb` per 32 codes,
//!   C = 5 two. C = 7 and 8 levels made of nibble factors
//!   (`crate::kernels::NibbleFactors`: `log`, `uniform`) take three
//!   16-entry lookups, a `vpmulhrsw` and an add ([`lookup_nibbles`]): 6
//!   `vpshufb` where the sign-magnitude chain takes 8 (C = 7) or 16 (C =
//!   8). 4096 x 4096 `log`, one thread (`MISTRALRS_FORCE_AVX2=1
//!   scripts/bench-candle.sh`): C = 8 2.25 -> 1.25 ms, C = 7 2.17 -> 1.87
//!   (candle's AVX2 Q8_0: 1.84-1.99 ms in the same runs). A bytewise
//!   negation in place of `vpsignw` (fewer shuffles, more ALU operations)
//!   made C = 5..=7 20 % slower.
//!
//! Every sum is exact (int8: pairs at most 2 · 127 · 127 < 2^15; int16:
//! a 64-column block at most 64 · 8191 · 4095 < 2^31; C = 5..=8: a lane of
//! a 64-column block at most 8 · 32767 · 8191 < 2^31), so the eight int32
//! lanes of a block equal the portable reference's; per block each lane
//! is scaled and added in f32 as the reference does (`IntRows`), and the
//! lanes are summed once per row, so the result is bit-exact. At batch 1
//! four rows share each activation load; above it, each row's span is
//! looked up once for four vectors (`rows_batch`), and four rows share
//! each group of vectors while it is in L1 (`batch_rows`). Batch 8 and 64
//! measured 2.5x and 1.05x f32 sgemm (README "Kernels on packed
//! weights"): the four FP pipes bound it, at about 16 vector operations
//! per 64 products per vector (4 `vpmaddwd`, 4 adds, the block's f32
//! epilogue, a quarter of the lookup).
//!
//! At batch 1 each row's loads are preceded by a prefetch of the same
//! span four rows on (a row's codes are a stream of 2-4 KB, too short for
//! the hardware prefetcher to run ahead).
//!
//! On CPUs with AVX-512 VBMI and VNNI, C = 2..=8 with blocks of 64 and
//! one scale group per block run `super::gemv_int512` instead, with the
//! same results.
//!
//! Scale groups of 32 at C = 4 (two-level scales' sub-blocks) still run
//! 64-code spans: in the stored order, int32 lanes 0-3 of a span's sums
//! hold columns 0..32 and lanes 4-7 columns 32..64, so one register of two
//! broadcast scales scales both halves (`IntRows::half_groups`).
//!
//! Measured with `perf` and `llvm-mca -mcpu=znver3`: the shuffle ports
//! (`vpshufb`, unpacks, shifts, packs: two on Zen 3) bound the loop, which
//! is why C = 4 unpacks 64 codes from one 32-byte load and the per-block
//! epilogue has no horizontal adds.

use core::arch::x86_64::*;

use crate::kernels::{IntRows, IntTable};

/// Whether [`gemv_int`] takes this job.
pub(crate) fn supports(w: &IntRows<'_>) -> bool {
    let p = &w.rows;
    let padded = p.cols.div_ceil(w.block.max(1)) * w.block;
    let groups_fit = match w.groups_per_block {
        1 => p.group > 0 && (p.group.is_multiple_of(w.block) || p.group >= p.cols),
        g @ (2 | 4 | 8) => {
            p.bits == 4
                && matches!(w.table, IntTable::I16(_))
                && w.block == 64
                && p.group * g == 64
                && p.cols.is_multiple_of(64)
        }
        _ => false,
    };
    let form = match w.table {
        IntTable::I8(_) | IntTable::I16(_) => (1..=4).contains(&p.bits),
        IntTable::I16Large(..) => (5..=8).contains(&p.bits) && w.groups_per_block == 1,
    };
    form && (w.block == 32 || w.block == 64)
        && p.cols.is_multiple_of(8)
        && groups_fit
        && w.batch >= 1
        && w.act_scales.len() >= w.batch.saturating_mul(padded / w.block)
        && if w.table.wide() {
            w.act16.len() >= w.batch.saturating_mul(padded)
        } else {
            w.act8.len() >= w.batch.saturating_mul(padded)
        }
}

/// The constants of unpacking C-bit codes (see the module doc).
struct Unpack {
    /// C = 1, 2: the per-lane shifts; C = 3: the `vpshufb` control of the
    /// first 16 codes' words.
    a: __m256i,
    /// C = 3: the control of the last 16 codes' words.
    b: __m256i,
    /// C = 3: the `vpmullw` multipliers of the two registers.
    mul: [__m256i; 2],
    mask: __m256i,
}

#[target_feature(enable = "avx2")]
fn unpack_consts(bits: u32) -> Unpack {
    let mut shuf = [[0u8; 32]; 2];
    let mut mul = [[0i16; 16]; 2];
    for (v, (shuf, mul)) in shuf.iter_mut().zip(&mut mul).enumerate() {
        for slot in 0..16 {
            // Register v, 128-bit half h, word j: code 16 h + 8 v + j (in
            // order once `vpackuswb` interleaves the halves). At C = 3 both
            // halves hold the span's 12 bytes; at C = 5..=7 the upper half
            // holds the bytes from code 16 on, so its codes count from 0.
            let (h, j) = (slot / 8, slot % 8);
            let code = if bits == 3 { 16 * h + 8 * v + j } else { 8 * v + j };
            let c = bits.clamp(3, 7) as usize;
            let (byte, shift) = (code * c / 8, code * c % 8);
            shuf[2 * slot] = byte as u8;
            shuf[2 * slot + 1] = if byte + 1 < 4 * c { byte as u8 + 1 } else { 0x80 };
            // The code to the word's top C bits.
            mul[slot] = 1 << (16 - c - shift);
        }
    }
    // SAFETY: each array is 32 readable bytes.
    let load = |p: *const u8| unsafe { _mm256_loadu_si256(p.cast()) };
    let mask = _mm256_set1_epi8(((1u32 << bits) - 1) as i8);
    // Opaque: knowing the constants, LLVM turns the C = 3 multiplies by
    // powers of two into 16-bit variable shifts, which AVX2 lacks (widen
    // to 32 bits, shift, pack: 2.6x slower measured).
    let consts = match bits {
        1 => Unpack {
            a: _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            b: _mm256_setzero_si256(),
            mul: [_mm256_setzero_si256(); 2],
            mask,
        },
        2 => Unpack {
            a: _mm256_setr_epi64x(0, 2, 4, 6),
            b: _mm256_setzero_si256(),
            mul: [_mm256_setzero_si256(); 2],
            mask,
        },
        _ => Unpack {
            a: load(shuf[0].as_ptr()),
            b: load(shuf[1].as_ptr()),
            mul: [load(mul[0].as_ptr().cast()), load(mul[1].as_ptr().cast())],
            mask,
        },
    };
    core::hint::black_box(consts)
}

/// Bytes [`codes32`] reads from a chunk of 32 C-bit codes (4·C of them,
/// and more where it loads whole 16-byte halves).
const fn chunk_load(bits: u32) -> usize {
    match bits {
        3 => 16,
        5..=7 => 2 * bits as usize + 16,
        _ => 4 * bits as usize,
    }
}

/// The 32 codes of the chunk at `p`, one byte each, in the order of
/// `int_act_column`.
///
/// # Safety
/// `p` must be readable for [`chunk_load`] bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn codes32<const BITS: u32>(u: &Unpack, p: *const u8) -> __m256i {
    match BITS {
        1 => {
            // SAFETY: 4 readable bytes (the caller).
            let v = _mm256_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() });
            _mm256_and_si256(_mm256_srlv_epi32(v, u.a), u.mask)
        }
        2 => {
            // SAFETY: 8 readable bytes (the caller).
            let v = _mm256_set1_epi64x(unsafe { p.cast::<i64>().read_unaligned() });
            _mm256_and_si256(_mm256_srlv_epi64(v, u.a), u.mask)
        }
        3 => {
            // SAFETY: 16 readable bytes (the caller).
            let bytes = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
            // `vpmullw` by 2^(13 - shift) moves the code to the word's top
            // three bits, a shift by 13 brings it down.
            let lane = |ctl: __m256i, mul: __m256i| {
                let words = _mm256_shuffle_epi8(bytes, ctl);
                _mm256_srli_epi16::<13>(_mm256_mullo_epi16(words, mul))
            };
            _mm256_packus_epi16(lane(u.a, u.mul[0]), lane(u.b, u.mul[1]))
        }
        5..=7 => {
            // SAFETY: 2·C + 16 readable bytes (the caller): codes 0..16 in
            // the lower half, codes 16..32 (from byte 2·C) in the upper.
            let bytes = unsafe { _mm256_loadu2_m128i(p.add(2 * BITS as usize).cast(), p.cast()) };
            // As at C = 3: the code to the word's top C bits, then down.
            let lane = |ctl: __m256i, mul: __m256i| {
                let top = _mm256_mullo_epi16(_mm256_shuffle_epi8(bytes, ctl), mul);
                match BITS {
                    5 => _mm256_srli_epi16::<11>(top),
                    6 => _mm256_srli_epi16::<10>(top),
                    _ => _mm256_srli_epi16::<9>(top),
                }
            };
            _mm256_packus_epi16(lane(u.a, u.mul[0]), lane(u.b, u.mul[1]))
        }
        8 => {
            // SAFETY: 32 readable bytes (the caller).
            unsafe { _mm256_loadu_si256(p.cast()) }
        }
        _ => {
            // SAFETY: 16 readable bytes (the caller).
            let v = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
            let hi = _mm256_srli_epi16::<4>(v);
            _mm256_and_si256(_mm256_blend_epi32::<0b1111_0000>(v, hi), u.mask)
        }
    }
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
    let wide = w.table.wide();
    const CH: u8 = large::CHAIN;
    const S: u8 = large::SIGN;
    const N: u8 = large::NIBBLES;
    // SAFETY: forwarded.
    unsafe {
        match (w.rows.bits, wide, large::form(&w.table, w.rows.bits)) {
            (1, false, _) => gemv_c::<1, false, CH>(w, y),
            (1, true, _) => gemv_c::<1, true, CH>(w, y),
            (2, false, _) => gemv_c::<2, false, CH>(w, y),
            (2, true, _) => gemv_c::<2, true, CH>(w, y),
            (3, false, _) => gemv_c::<3, false, CH>(w, y),
            (3, true, _) => gemv_c::<3, true, CH>(w, y),
            (4, false, _) => gemv_c::<4, false, CH>(w, y),
            (4, true, _) => gemv_c::<4, true, CH>(w, y),
            (5, true, S) => gemv_c::<5, true, S>(w, y),
            (5, true, _) => gemv_c::<5, true, CH>(w, y),
            (6, true, S) => gemv_c::<6, true, S>(w, y),
            (6, true, _) => gemv_c::<6, true, CH>(w, y),
            (7, true, S) => gemv_c::<7, true, S>(w, y),
            (7, true, N) => gemv_c::<7, true, N>(w, y),
            (7, true, _) => gemv_c::<7, true, CH>(w, y),
            (8, true, N) => gemv_c::<8, true, N>(w, y),
            (8, true, S) => gemv_c::<8, true, S>(w, y),
            (8, true, _) => gemv_c::<8, true, CH>(w, y),
            _ => 0,
        }
    }
}

/// [`gemv_int`] for one width and table form (`LARGE`, at C = 5..=8: how
/// the large table is looked up, [`large`]).
///
/// # Safety
/// As [`gemv_int`], with `BITS == w.rows.bits`, `WIDE` the table form and
/// `LARGE` as [`large::form`] says.
#[target_feature(enable = "avx2")]
unsafe fn gemv_c<const BITS: u32, const WIDE: bool, const LARGE: u8>(
    w: &IntRows<'_>,
    y: &mut [f32],
) -> usize {
    let p = &w.rows;
    let span64 = BITS == 4 && w.block == 64;
    let span_bytes = if span64 { 32 } else { 4 * BITS as usize };
    let load = if span64 { span_bytes } else { chunk_load(BITS) };
    let rb = p.cols / 8 * BITS as usize;
    // Row r is safe when its last span's load fits. A row's columns are
    // padded to whole blocks, so its last loads may run into the next row's
    // codes (multiplied by zero activations).
    let last_load_end = p.cols.div_ceil(w.block) * w.block / 8 * BITS as usize - span_bytes + load;
    let out_rows = y.len() / w.batch;
    let safe_rows = (p.packed.len() + rb)
        .saturating_sub(last_load_end)
        .checked_div(rb)
        .map_or(out_rows, |safe| safe.min(out_rows));
    let u = unpack_consts(BITS);
    let table = &tables::<LARGE>(&w.table, BITS);
    let split = w.groups_per_block >= 4;
    if w.batch > 1 {
        // SAFETY: forwarded.
        unsafe {
            match (span64, split) {
                (true, true) => {
                    batch_rows::<BITS, WIDE, LARGE, true, true>(w, &u, table, safe_rows, y)
                }
                (true, false) => {
                    batch_rows::<BITS, WIDE, LARGE, true, false>(w, &u, table, safe_rows, y)
                }
                _ => batch_rows::<BITS, WIDE, LARGE, false, false>(w, &u, table, safe_rows, y),
            }
        }
        return safe_rows;
    }
    // Stored two-level scales: four rows' at a time expanded to f32 here,
    // then read as f32 scales (`ExpandedScales`).
    let mut expanded = ExpandedScales::new(p);
    let mut r = 0;
    while r + 4 <= safe_rows {
        // SAFETY: rows r..r + 4 are safe, and have their scales; the rest
        // is the caller's contract.
        let v = unsafe {
            let s = match expanded.as_mut() {
                // `rows` gives each row's stored scales, its group count
                // and room for them.
                Some(e) => e.rows::<4>(p, r, |s, n, out| expand_row(s, n, out)),
                None => RowScales::of(p, r),
            };
            match (span64, split) {
                (true, true) => rows::<4, BITS, WIDE, LARGE, true, true>(w, &u, table, r, s),
                (true, false) => rows::<4, BITS, WIDE, LARGE, true, false>(w, &u, table, r, s),
                _ => rows::<4, BITS, WIDE, LARGE, false, false>(w, &u, table, r, s),
            }
        };
        y[r..r + 4].copy_from_slice(&v);
        r += 4;
    }
    while r < safe_rows {
        // SAFETY: as above, one row.
        y[r] = unsafe {
            let s = RowScales::of(p, r);
            match (span64, split) {
                (true, true) => rows::<1, BITS, WIDE, LARGE, true, true>(w, &u, table, r, s),
                (true, false) => rows::<1, BITS, WIDE, LARGE, true, false>(w, &u, table, r, s),
                _ => rows::<1, BITS, WIDE, LARGE, false, false>(w, &u, table, r, s),
            }
        }[0];
        r += 1;
    }
    safe_rows
}

/// The `vpermps` controls that give each lane of part 0 and part 1 its
/// scale group within a block of `w` (`crate::kernels::int_lane_group`).
#[target_feature(enable = "avx2")]
pub(super) fn lane_groups(w: &IntRows<'_>) -> [__m256i; 2] {
    let group = w.rows.group.max(1);
    core::array::from_fn(|part| {
        let idx: [i32; 8] = core::array::from_fn(|lane| match w.groups_per_block {
            0 | 1 => 0,
            _ => crate::kernels::int_lane_group(part, lane, group) as i32,
        });
        // SAFETY: 32 readable bytes.
        unsafe { _mm256_loadu_si256(idx.as_ptr().cast()) }
    })
}

/// 32 codes (one byte each) looked up in the integer table: `WIDE`: the
/// int16 values interleaved into words (`vpunpcklbw` / `vpunpckhbw` of the
/// `vpshufb` of the table's low and high bytes: stored positions 0..16,
/// 16..32); int8: the values' magnitudes and the values (for their signs).
#[target_feature(enable = "avx2")]
#[inline]
fn lookup<const WIDE: bool>(codes: __m256i, (lo, hi): (__m256i, __m256i)) -> [__m256i; 2] {
    if WIDE {
        let (l, h) = (_mm256_shuffle_epi8(lo, codes), _mm256_shuffle_epi8(hi, codes));
        [_mm256_unpacklo_epi8(l, h), _mm256_unpackhi_epi8(l, h)]
    } else {
        let v = _mm256_shuffle_epi8(lo, codes);
        [_mm256_abs_epi8(v), v]
    }
}

/// The two parts ([`crate::kernels::int_lane_part`]) of eight int32
/// partial sums of 32 looked-up codes (`lookup`) against their stored
/// activations: `WIDE`: int16, `a[0]` (stored positions 0..16) and `a[1]`
/// (16..32); int8: `a[0]` (`vpmaddubsw` of the magnitudes and the
/// activations carrying the values' signs, `vpmaddwd` by ones).
#[target_feature(enable = "avx2")]
#[inline]
fn looked_dot<const WIDE: bool>(l: [__m256i; 2], a: [__m256i; 2]) -> [__m256i; 2] {
    if WIDE {
        [_mm256_madd_epi16(l[0], a[0]), _mm256_madd_epi16(l[1], a[1])]
    } else {
        let prod = _mm256_maddubs_epi16(l[0], _mm256_sign_epi8(a[0], l[1]));
        [_mm256_madd_epi16(prod, _mm256_set1_epi16(1)), _mm256_setzero_si256()]
    }
}

/// `a + b`, part by part.
#[target_feature(enable = "avx2")]
#[inline]
fn add_parts(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
    [_mm256_add_epi32(a[0], b[0]), _mm256_add_epi32(a[1], b[1])]
}

/// One span of one row looked up (`lookup`): `SPAN64`, 64 codes at C = 4
/// from one 32-byte load (low nibbles in `[0..2]`, high in `[2..4]`);
/// otherwise one chunk of 32 (in `[0..2]`).
///
/// # Safety
/// `p` readable for the span's bytes (as [`codes32`] needs, or 32).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn span_lookup<const BITS: u32, const WIDE: bool, const LARGE: u8, const SPAN64: bool>(
    u: &Unpack,
    p: *const u8,
    small: (__m256i, __m256i),
    table: &Tables,
) -> [__m256i; 4] {
    if BITS >= 5 {
        // SAFETY: forwarded.
        let l = lookup_large::<BITS, LARGE>(unsafe { codes32::<BITS>(u, p) }, table);
        [l[0], l[1], _mm256_setzero_si256(), _mm256_setzero_si256()]
    } else if SPAN64 {
        // SAFETY: 32 readable bytes (the caller).
        let v = unsafe { _mm256_loadu_si256(p.cast()) };
        let lo = lookup::<WIDE>(_mm256_and_si256(v, u.mask), small);
        let hi = lookup::<WIDE>(_mm256_and_si256(_mm256_srli_epi16::<4>(v), u.mask), small);
        [lo[0], lo[1], hi[0], hi[1]]
    } else {
        // SAFETY: forwarded.
        let l = lookup::<WIDE>(unsafe { codes32::<BITS>(u, p) }, small);
        [l[0], l[1], _mm256_setzero_si256(), _mm256_setzero_si256()]
    }
}

/// The partial sums, in two parts, of a looked-up span (`span_lookup`)
/// against its activations `a` (registers of 32 stored positions:
/// `a[2k..2k + 2]`).
#[target_feature(enable = "avx2")]
#[inline]
fn span_dot<const WIDE: bool, const SPAN64: bool>(
    l: &[__m256i; 4],
    a: &[__m256i; 4],
) -> [__m256i; 2] {
    let d = looked_dot::<WIDE>([l[0], l[1]], [a[0], a[1]]);
    if SPAN64 {
        add_parts(d, looked_dot::<WIDE>([l[2], l[3]], [a[2], a[3]]))
    } else {
        d
    }
}

/// The activations of the span at column `c` of vector `v`: `a[2k..2k +
/// 2]` for register `k` of 32 stored positions (int16: two registers
/// each; int8: one, in `a[2k]`).
///
/// # Safety
/// The span's activations are inside `act8` / `act16` (`supports`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn span_acts<const WIDE: bool, const SPAN64: bool>(
    w: &IntRows<'_>,
    v: usize,
    c: usize,
) -> [__m256i; 4] {
    let regs = if SPAN64 { 2 } else { 1 };
    let at = v * w.padded_cols() + c;
    // SAFETY: register k's 32 bytes lie in the span (the caller).
    core::array::from_fn(|k| unsafe {
        if WIDE && k < 2 * regs {
            _mm256_loadu_si256(w.act16.as_ptr().add(at + 16 * k).cast())
        } else if !WIDE && k % 2 == 0 && k / 2 < regs {
            _mm256_loadu_si256(w.act8.as_ptr().add(at + 16 * k).cast())
        } else {
            _mm256_setzero_si256()
        }
    })
}

/// Adds one part-summed block `acc` of a row into its f32 lanes `fsum`:
/// each lane times its group's scale (`gs`, through `lanes` when `SPLIT`)
/// times the block's activation factor.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn add_block<const SPLIT: bool>(
    fsum: __m256,
    acc: [__m256i; 2],
    gs: __m256,
    act: f32,
    lanes: &[__m256i; 2],
) -> __m256 {
    let act = _mm256_set1_ps(act);
    let mut fsum = fsum;
    let parts = if SPLIT { 2 } else { 1 };
    for (part, &ctl) in lanes.iter().enumerate().take(parts) {
        let s = if SPLIT { _mm256_permutevar8x32_ps(gs, ctl) } else { gs };
        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[part]), _mm256_mul_ps(s, act));
        fsum = _mm256_add_ps(fsum, t);
    }
    fsum
}

/// Where one row's scales are read: its f32 scales, or its two-level
/// scales as stored (`crate::kernels::SubScales`: a byte per sub-block and
/// an f32 per super-block, multiplied here as the weight multiplied them
/// into the f32 scales, so the scales are the same bits).
#[derive(Clone, Copy)]
pub(super) struct RowScales {
    f32s: *const f32,
    sup: *const f32,
    sub: *const u8,
    /// `log2` of sub-blocks per super-block; `u32::MAX`: the f32 scales.
    shift: u32,
    stride: usize,
    sup_stride: usize,
}

impl RowScales {
    /// Row `r`'s scales in `p`; the stored two-level ones when `p` has
    /// them.
    ///
    /// # Safety
    /// Row `r`'s scales (and sub-scales) start inside their slices.
    #[inline]
    pub(super) unsafe fn of(p: &crate::kernels::PackedRows<'_>, r: usize) -> Self {
        let stride = p.scale_stride;
        // SAFETY: the caller.
        unsafe {
            match p.sub_scales {
                Some(s) => Self {
                    f32s: p.scales.as_ptr().wrapping_add(r * stride),
                    sup: s.sup.as_ptr().add(r * s.sup_stride),
                    sub: s.sub.as_ptr().add(r * stride),
                    shift: s.subs_per_super_log2,
                    stride,
                    sup_stride: s.sup_stride,
                },
                None => Self {
                    f32s: p.scales.as_ptr().add(r * stride),
                    sup: core::ptr::null(),
                    sub: core::ptr::null(),
                    shift: u32::MAX,
                    stride,
                    sup_stride: 0,
                },
            }
        }
    }

    /// The scales of the row `q` rows on (reading them is the caller's
    /// to justify, as for this row's).
    #[inline]
    pub(super) fn row(self, q: usize) -> Self {
        Self {
            f32s: self.f32s.wrapping_add(q * self.stride),
            sup: self.sup.wrapping_add(q * self.sup_stride),
            sub: self.sub.wrapping_add(q * self.stride),
            ..self
        }
    }

    /// The f32 scales from group `g` on.
    ///
    /// # Safety
    /// The row has group `g`.
    #[inline]
    pub(super) unsafe fn f32s(&self, g: usize) -> *const f32 {
        // SAFETY: the caller.
        unsafe { self.f32s.add(g) }
    }

    /// The f32 scales of rows `stride` apart from `f32s` on.
    pub(super) fn f32_rows(f32s: *const f32, stride: usize) -> Self {
        let (sup, sub) = (core::ptr::null(), core::ptr::null());
        Self { f32s, sup, sub, shift: u32::MAX, stride, sup_stride: 0 }
    }

    /// A stored row's super-scales, sub-scales and `log2` of sub-blocks per
    /// super-block.
    pub(super) fn stored_parts(&self) -> (*const f32, *const u8, u32) {
        (self.sup, self.sub, self.shift)
    }

    /// Whether the scales are read as stored two-level ones.
    #[inline]
    pub(super) fn stored(&self) -> bool {
        self.shift != u32::MAX
    }

    /// Group `g`'s scale (`g` counted from the row's first).
    ///
    /// # Safety
    /// The row has group `g`.
    #[inline]
    pub(super) unsafe fn scale(&self, g: usize) -> f32 {
        // SAFETY: the caller.
        unsafe {
            if self.stored() {
                *self.sup.add(g >> self.shift) * f32::from(*self.sub.add(g))
            } else {
                *self.f32s.add(g)
            }
        }
    }

    /// The scales of block `b`: the block's group `g` broadcast, or its
    /// `groups_per_block` groups (2: each broadcast to one half; 4, 8: in
    /// order, for `lanes`' `vpermps`).
    ///
    /// # Safety
    /// The block's groups have scales (`supports`: the row's columns are
    /// whole blocks when a block has more than one group), and with
    /// stored scales a block's groups lie in one super-block.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn block(&self, groups_per_block: usize, b: usize, g: usize) -> __m256 {
        if groups_per_block <= 1 {
            // SAFETY: the caller.
            return _mm256_set1_ps(unsafe { self.scale(g) });
        }
        if !self.stored() {
            // SAFETY: the caller.
            return unsafe { block_scales(groups_per_block, self.f32s, b) };
        }
        let first = groups_per_block * b;
        // SAFETY: the caller: sub-scales first..first + groups_per_block
        // exist and share super-block `first >> shift`.
        unsafe {
            let sup = _mm_set1_ps(*self.sup.add(first >> self.shift));
            let at = self.sub.add(first);
            let bytes = match groups_per_block {
                2 => _mm_cvtsi32_si128(i32::from(at.cast::<u16>().read_unaligned())),
                4 => _mm_cvtsi32_si128(at.cast::<i32>().read_unaligned()),
                _ => _mm_loadl_epi64(at.cast()),
            };
            let lo = _mm_mul_ps(_mm_cvtepi32_ps(_mm_cvtepu8_epi32(bytes)), sup);
            match groups_per_block {
                2 => _mm256_set_m128(
                    _mm_shuffle_ps::<0b01_01_01_01>(lo, lo),
                    _mm_shuffle_ps::<0>(lo, lo),
                ),
                4 => _mm256_castps128_ps256(lo),
                _ => {
                    let hi = _mm_cvtepu8_epi32(_mm_srli_si128::<4>(bytes));
                    _mm256_set_m128(_mm_mul_ps(_mm_cvtepi32_ps(hi), sup), lo)
                }
            }
        }
    }
}

/// Groups per row up to which the batch-1 kernels expand four rows'
/// stored two-level scales to f32 on their stack before the rows' blocks
/// (16 KB): the block loop then reads f32 scales from L1, with no more
/// work per block than f32 scales take, while memory gives a byte per
/// sub-block. Longer rows read the stored scales block by block
/// ([`RowScales::block`]).
const EXPANDED_GROUPS: usize = 1024;

/// The stack buffer of [`EXPANDED_GROUPS`].
pub(super) struct ExpandedScales {
    buf: core::mem::MaybeUninit<[f32; 4 * EXPANDED_GROUPS]>,
    groups: usize,
}

impl ExpandedScales {
    /// A buffer for `p`'s rows, when they have stored scales that fit.
    pub(super) fn new(p: &crate::kernels::PackedRows<'_>) -> Option<Self> {
        let groups = p.scale_stride;
        (p.sub_scales.is_some() && groups > 0 && groups <= EXPANDED_GROUPS)
            .then(|| Self { buf: core::mem::MaybeUninit::uninit(), groups })
    }

    /// Rows `r..r + R` (R <= 4) of `p` expanded by `expand(row, groups,
    /// out)`, as f32 scales in the buffer.
    ///
    /// # Safety
    /// Rows `r..r + R` of `p` have their scales; `expand` writes the
    /// `groups` values it is given.
    #[inline]
    pub(super) unsafe fn rows<const R: usize>(
        &mut self,
        p: &crate::kernels::PackedRows<'_>,
        r: usize,
        expand: impl Fn(RowScales, usize, *mut f32),
    ) -> RowScales {
        const { assert!(R <= 4) };
        let out = self.buf.as_mut_ptr().cast::<f32>();
        for q in 0..R {
            // SAFETY: the caller; row q's slot lies in the buffer.
            unsafe { expand(RowScales::of(p, r + q), self.groups, out.add(q * self.groups)) };
        }
        // The next R rows' scales are read at once when their turn comes:
        // hinted now, they arrive while these rows' blocks run (without,
        // each four rows began with a wait on memory).
        if let Some(s) = p.sub_scales {
            let run = R * p.scale_stride;
            let sub = s.sub.as_ptr().wrapping_add(r * p.scale_stride);
            prefetch_next_rows(sub, run, 0, run);
            let sup = s.sup.as_ptr().wrapping_add(r * s.sup_stride).cast::<u8>();
            let sup_run = core::mem::size_of::<f32>() * R * s.sup_stride;
            prefetch_next_rows(sup, sup_run, 0, sup_run);
        }
        RowScales::f32_rows(out, self.groups)
    }
}

/// Row `s`'s first `groups` scales (stored two-level ones) as f32 at
/// `out`, eight at a time within each super-block: `sup · f32::from(sub)`,
/// the multiply [`RowScales::scale`] does.
///
/// # Safety
/// `s` is stored and has `groups` groups; `out` is writable for `groups`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn expand_row(s: RowScales, groups: usize, out: *mut f32) {
    let (sup, sub, shift) = s.stored_parts();
    let mut g = 0;
    while g < groups {
        let end = (((g >> shift) + 1) << shift).min(groups);
        // SAFETY: groups g..end and their super-block exist, `out` has
        // room for them (the caller).
        unsafe {
            let one = *sup.add(g >> shift);
            let v = _mm256_set1_ps(one);
            while g + 8 <= end {
                let q =
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(sub.add(g).cast())));
                _mm256_storeu_ps(out.add(g), _mm256_mul_ps(q, v));
                g += 8;
            }
            while g < end {
                *out.add(g) = one * f32::from(*sub.add(g));
                g += 1;
            }
        }
    }
}

/// The f32 scales of block `b` of a row whose scales start at `row`, its
/// `groups_per_block` groups (2: each broadcast to one half; 4, 8:
/// loaded, for `lanes`' `vpermps`).
///
/// # Safety
/// The block's groups have scales.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block_scales(groups_per_block: usize, row: *const f32, b: usize) -> __m256 {
    // SAFETY: the caller.
    unsafe {
        match groups_per_block {
            2 => {
                let lo = _mm_broadcast_ss(&*row.add(2 * b));
                let hi = _mm_broadcast_ss(&*row.add(2 * b + 1));
                _mm256_set_m128(hi, lo)
            }
            4 => _mm256_castps128_ps256(_mm_loadu_ps(row.add(4 * b))),
            _ => _mm256_loadu_ps(row.add(8 * b)),
        }
    }
}

/// The integer table in registers, each 16-byte table repeated in both
/// halves.
struct Tables {
    /// C <= 4: the int8 values, or the int16 values' low and high bytes.
    small: (__m256i, __m256i),
    /// C = 5..=8: the int16 levels' low (`lo`) and high (`hi`) bytes in
    /// [`xor_chain`] form, 16 entries per register; or
    /// ([`large::NIBBLES`]) the nibble factors' (offset, span, shape) in
    /// `lo[0..3]` and `hi[0..3]`.
    lo: [__m256i; 16],
    hi: [__m256i; 16],
}

/// `t`'s registers for the form `LARGE` at C = 5..=8 ([`large`]).
#[target_feature(enable = "avx2")]
fn tables<const LARGE: u8>(t: &IntTable, bits: u32) -> Tables {
    let bcast = |b: [u8; 16]| {
        // SAFETY: 16 readable bytes.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(b.as_ptr().cast()) })
    };
    let zero = _mm256_setzero_si256();
    let byte = |k: usize| move |e: i16| e.to_le_bytes()[k];
    let small = match t {
        IntTable::I8(v) => (bcast(v.map(|e| e as u8)), zero),
        IntTable::I16(v) => (bcast(v.map(byte(0))), bcast(v.map(byte(1)))),
        IntTable::I16Large(..) => (zero, zero),
    };
    let (lo, hi) = match t {
        IntTable::I16Large(_, Some(f)) if LARGE == large::NIBBLES => {
            let mut lo = [zero; 16];
            let mut hi = [zero; 16];
            for (k, factor) in [f.offset, f.span, f.shape].into_iter().enumerate() {
                (lo[k], hi[k]) = (bcast(factor.map(byte(0))), bcast(factor.map(byte(1))));
            }
            (lo, hi)
        }
        IntTable::I16Large(v, _) => {
            let levels = if LARGE == large::SIGN { 1usize << (bits - 1) } else { 1usize << bits };
            let (lo, hi) = xor_chain(v.get(..levels).unwrap_or(v));
            (lo.map(bcast), hi.map(bcast))
        }
        _ => ([zero; 16], [zero; 16]),
    };
    Tables { small, lo, hi }
}

/// The subtables `D_j` (16 entries each; low bytes, high bytes) that look
/// up to 128 levels with `vpshufb`, and 256 as two halves of 128
/// (`D_8..D_16`: the upper half). For a code `m < 128` and `k < 8`,
/// `vpshufb(D_k, m - 16k)` is zero where `m - 16k` (wrapping) has its top
/// bit set (`k > m / 16`) and `D_k[m % 16]` otherwise, so the XOR over
/// `k` of the lookups is the XOR of `D_k[m % 16]` over `k <= j = m / 16`.
/// That equals `T_j[m % 16]` (the level) when `D_j = T_j ^ T_{j-1}` (`D_0
/// = T_0`): one `vpsubb`, two `vpshufb` and two `vpxor` per 16 levels.
/// (Above 8 subtables `m - 16k` wraps back to a clear top bit, hence the
/// halves.)
fn xor_chain(levels: &[i16]) -> ([[u8; 16]; 16], [[u8; 16]; 16]) {
    let mut d = [[[0u8; 16]; 16]; 2];
    let level =
        |j: usize, i: usize, b: usize| levels.get(16 * j + i).map_or(0, |v| v.to_le_bytes()[b]);
    for j in 0..levels.len().div_ceil(16).min(16) {
        for i in 0..16 {
            for (b, d) in d.iter_mut().enumerate() {
                let prev = if j % 8 >= 1 { level(j - 1, i, b) } else { 0 };
                d[j][i] = level(j, i, b) ^ prev;
            }
        }
    }
    (d[0], d[1])
}

/// How a C = 5..=8 integer table is looked up ([`lookup_large`]).
mod large {
    use crate::kernels::IntTable;

    /// All `2^C` levels by [`super::xor_chain`] (C = 8: two halves).
    pub(super) const CHAIN: u8 = 0;
    /// Sign-magnitude: the upper half is the lower half negated (`log`
    /// and `fp` tables are), so half the levels are looked up and a
    /// `vpsignw` gives the sign.
    pub(super) const SIGN: u8 = 1;
    /// C = 7 and 8, levels computed from the code's nibbles
    /// (`crate::kernels::NibbleFactors`): three 16-entry lookups.
    pub(super) const NIBBLES: u8 = 2;

    /// The form that looks `t` up fastest at C = `bits`.
    pub(super) fn form(t: &IntTable, bits: u32) -> u8 {
        match t {
            IntTable::I16Large(_, Some(_)) if (7..=8).contains(&bits) => NIBBLES,
            IntTable::I16Large(v, _) if (5..=8).contains(&bits) => {
                let half = 1usize << (bits - 1);
                if (0..half).all(|m| v[half + m] == v[m].wrapping_neg()) {
                    SIGN
                } else {
                    CHAIN
                }
            }
            _ => CHAIN,
        }
    }
}

/// 32 C = 7 or 8 codes' levels from their nibbles ([`large::NIBBLES`]):
/// `offset[h] + mulhrs(span[h], shape[l])`, as
/// `crate::kernels::NibbleFactors::level`, in [`lookup_large`]'s order.
/// Six `vpshufb`, six unpacks and a shift per 32 codes, where the
/// sign-magnitude chain takes 16 `vpshufb` and four unpacks at C = 8, 8
/// and a chain of six XORs at C = 7. Not at C = 6: its chain of two is
/// faster (1.72 against 2.04 ms at 4096 x 4096 on the AVX2 kernel).
#[target_feature(enable = "avx2")]
#[inline]
fn lookup_nibbles(codes: __m256i, t: &Tables) -> [__m256i; 2] {
    let mask = _mm256_set1_epi8(0x0f);
    let low = _mm256_and_si256(codes, mask);
    // A 16-bit shift: the bits that cross from the next byte are masked.
    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(codes), mask);
    let words = |k: usize, idx: __m256i| {
        let (l, h) = (_mm256_shuffle_epi8(t.lo[k], idx), _mm256_shuffle_epi8(t.hi[k], idx));
        [_mm256_unpacklo_epi8(l, h), _mm256_unpackhi_epi8(l, h)]
    };
    let (offset, span, shape) = (words(0, high), words(1, high), words(2, low));
    core::array::from_fn(|i| _mm256_add_epi16(offset[i], _mm256_mulhrs_epi16(span[i], shape[i])))
}

/// 32 C-bit codes (C = 5..=8, one byte each) looked up in a large
/// table ([`xor_chain`]): the levels as int16 words, interleaved as
/// [`lookup`]'s (`crate::kernels::int_act_column`). [`large::SIGN`]: the magnitude
/// is looked up, and `vpsignw` by the code's top bit negates it.
#[target_feature(enable = "avx2")]
#[inline]
fn lookup_large<const BITS: u32, const LARGE: u8>(codes: __m256i, t: &Tables) -> [__m256i; 2] {
    if BITS >= 7 && LARGE == large::NIBBLES {
        return lookup_nibbles(codes, t);
    }
    let sign = LARGE == large::SIGN;
    // Two halves of 128 levels only at C = 8 without the sign trick.
    let halves = !sign && BITS == 8;
    let m = if sign || halves {
        _mm256_and_si256(codes, _mm256_set1_epi8(((1u32 << (BITS - 1)) - 1) as i8))
    } else {
        codes
    };
    let subtables = if sign || halves { 1usize << (BITS - 5) } else { 1usize << (BITS - 4) };
    let chain = |first: usize| {
        let (mut l, mut h) =
            (_mm256_shuffle_epi8(t.lo[first], m), _mm256_shuffle_epi8(t.hi[first], m));
        let mut idx = m;
        for k in first + 1..first + subtables {
            idx = _mm256_sub_epi8(idx, _mm256_set1_epi8(16));
            l = _mm256_xor_si256(l, _mm256_shuffle_epi8(t.lo[k], idx));
            h = _mm256_xor_si256(h, _mm256_shuffle_epi8(t.hi[k], idx));
        }
        (l, h)
    };
    let (l, h) = if halves {
        // The code's top bit picks the upper half's bytes (`vpblendvb`).
        let ((l0, h0), (l1, h1)) = (chain(0), chain(8));
        (_mm256_blendv_epi8(l0, l1, codes), _mm256_blendv_epi8(h0, h1, codes))
    } else {
        chain(0)
    };
    // Low and high bytes interleaved into words, as at C <= 4.
    let words = [_mm256_unpacklo_epi8(l, h), _mm256_unpackhi_epi8(l, h)];
    if !sign {
        return words;
    }
    // Each code's top bit (C - 1) to its byte's bit 7 (a 16-bit shift:
    // the codes are below 2^C, so no bit crosses into the next byte),
    // interleaved as the words are, above a 1 (no sign word may be zero:
    // `vpsignw` would zero the level).
    let top = match BITS {
        5 => _mm256_slli_epi16::<3>(codes),
        6 => _mm256_slli_epi16::<2>(codes),
        7 => _mm256_slli_epi16::<1>(codes),
        _ => codes,
    };
    let one = _mm256_set1_epi8(1);
    [
        _mm256_sign_epi16(words[0], _mm256_unpacklo_epi8(one, top)),
        _mm256_sign_epi16(words[1], _mm256_unpackhi_epi8(one, top)),
    ]
}

/// The sum of `v`'s lanes in the order the reference uses
/// (`crate::arch::generic::int_lanes_sum`): `((l0 + l4) + (l2 + l6)) +
/// ((l1 + l5) + (l3 + l7))`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn lanes_sum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
}

/// Rows `r..r + R` against vector 0: per block, each row's eight int32
/// lane sums become f32 and are added, lane by lane, times `scale ·
/// act_scale`, into eight f32 sums, which are added up once at the end
/// ([`lanes_sum`]); the portable reference computes the same lanes
/// (`int_lane`), so the result is bit-exact. `SPLIT` (4 or 8 scale groups
/// per block) keeps the two parts of the sums apart, each lane scaled by
/// its own group's scale.
///
/// # Safety
/// As [`gemv_int`], and rows `r..r + R` are safe, their scales in
/// `scales`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn rows<
    const R: usize,
    const BITS: u32,
    const WIDE: bool,
    const LARGE: u8,
    const SPAN64: bool,
    const SPLIT: bool,
>(
    w: &IntRows<'_>,
    u: &Unpack,
    table: &Tables,
    r: usize,
    scales: RowScales,
) -> [f32; R] {
    let p = &w.rows;
    let span = if SPAN64 { 64 } else { 32 };
    let span_bytes = span / 8 * BITS as usize;
    let rb = p.cols / 8 * BITS as usize;
    // SAFETY: row r + q starts inside `packed` (safe rows).
    let row_ptr: [*const u8; R] =
        core::array::from_fn(|q| unsafe { p.packed.as_ptr().add((r + q) * rb) });
    let scales: [RowScales; R] = core::array::from_fn(|q| scales.row(q));
    // The C <= 4 table in registers for the whole loop.
    let small = table.small;
    let mut fsum = [_mm256_setzero_ps(); R];
    let lanes = lane_groups(w);
    let mut groups = GroupWalk::new(w);
    // The bytes of the R rows' block that each block step reads.
    let block_bytes = R * w.block / 8 * BITS as usize;
    for (b, c0) in (0..p.cols).step_by(w.block).enumerate() {
        prefetch_next_rows(row_ptr[0], R * rb, b * block_bytes, block_bytes);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for c in (c0..c0 + w.block).step_by(span) {
            // SAFETY: c + span <= the padded columns <= the activations'
            // length (`supports`); row r + q's span at byte c / span · its
            // bytes is readable as `span_lookup` needs (safe rows).
            unsafe {
                let a = span_acts::<WIDE, SPAN64>(w, 0, c);
                let off = c / span * span_bytes;
                for (acc, ptr) in acc.iter_mut().zip(row_ptr) {
                    let l = span_lookup::<BITS, WIDE, LARGE, SPAN64>(u, ptr.add(off), small, table);
                    *acc = accumulate::<SPLIT>(*acc, span_dot::<WIDE, SPAN64>(&l, &a));
                }
            }
        }
        // SAFETY: b < the padded blocks <= act_scales.len() (`supports`).
        let act = unsafe { *w.act_scales.get_unchecked(b) };
        let g = groups.next();
        for q in 0..R {
            // SAFETY: the block's groups of row r + q have scales (the
            // caller).
            let gs = unsafe { scales[q].block(w.groups_per_block, b, g) };
            fsum[q] = add_block::<SPLIT>(fsum[q], acc[q], gs, act, &lanes);
        }
    }
    core::array::from_fn(|q| lanes_sum(fsum[q]))
}

/// Hints the next `run` bytes after the run of rows at `rows` (R rows of
/// `rb` bytes, `run` = R · rb), at the block step's pace: the `step`
/// bytes from `offset` on, once per 64 (a line each once `step` >= 64; a
/// smaller step repeats some). A row is a short stream (2-4 KB), too
/// short for the hardware prefetcher alone, and R rows are one run that
/// the kernels read at R places. A hint never faults.
#[inline]
pub(super) fn prefetch_next_rows(rows: *const u8, run: usize, offset: usize, step: usize) {
    let ahead = rows.wrapping_add(run + offset);
    let mut line = 0;
    while line < step {
        // SAFETY: a prefetch hint reads nothing and never faults, at any
        // address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
        line += 64;
    }
}

/// `acc + d`: part by part when `SPLIT`, else into part 0.
#[target_feature(enable = "avx2")]
#[inline]
fn accumulate<const SPLIT: bool>(acc: [__m256i; 2], d: [__m256i; 2]) -> [__m256i; 2] {
    if SPLIT {
        add_parts(acc, d)
    } else {
        [_mm256_add_epi32(acc[0], _mm256_add_epi32(d[0], d[1])), acc[1]]
    }
}

/// The scale group of each block in turn, when a block lies in one group
/// (`supports`: the group is whole blocks, or the row has one scale):
/// counted, not divided (a division per block cost 5-12 % at batch 1).
pub(super) struct GroupWalk {
    blocks_per_group: usize,
    group: usize,
    in_group: usize,
}

impl GroupWalk {
    pub(super) fn new(w: &IntRows<'_>) -> Self {
        let p = &w.rows;
        let blocks_per_group = if p.group >= p.cols { usize::MAX } else { p.group / w.block };
        GroupWalk { blocks_per_group, group: 0, in_group: 0 }
    }

    /// The current block's group; moves to the next block.
    #[inline]
    pub(super) fn next(&mut self) -> usize {
        let g = self.group;
        self.in_group += 1;
        if self.in_group == self.blocks_per_group {
            (self.group, self.in_group) = (self.group + 1, 0);
        }
        g
    }
}

/// Rows per block of [`batch_rows`]: their codes stay in L1 while the
/// batch's vectors pass over them, four at a time.
const ROW_BLOCK: usize = 4;

/// Batch > 1: every safe row against every vector, [`rows_batch`] on up
/// to four vectors at a time (the row's span is looked up once for all
/// of them), [`ROW_BLOCK`] rows sharing each group of vectors while it is
/// in L1.
///
/// # Safety
/// As [`gemv_int`]; rows below `safe_rows` are safe.
#[target_feature(enable = "avx2")]
unsafe fn batch_rows<
    const BITS: u32,
    const WIDE: bool,
    const LARGE: u8,
    const SPAN64: bool,
    const SPLIT: bool,
>(
    w: &IntRows<'_>,
    u: &Unpack,
    table: &Tables,
    safe_rows: usize,
    y: &mut [f32],
) {
    let batch = w.batch;
    for first in (0..safe_rows).step_by(ROW_BLOCK) {
        let block = first..(first + ROW_BLOCK).min(safe_rows);
        let mut v = 0;
        // SAFETY: rows below safe_rows are safe; vectors v..v + NB <=
        // batch (the caller).
        unsafe {
            while v + 4 <= batch {
                for r in block.clone() {
                    let s = rows_batch::<4, BITS, WIDE, LARGE, SPAN64, SPLIT>(w, u, table, r, v);
                    y[r * batch + v..][..4].copy_from_slice(&s);
                }
                v += 4;
            }
            while v < batch {
                for r in block.clone() {
                    y[r * batch + v] =
                        rows_batch::<1, BITS, WIDE, LARGE, SPAN64, SPLIT>(w, u, table, r, v)[0];
                }
                v += 1;
            }
        }
    }
}

/// Row `r` against vectors `v..v + NB`, each as [`rows`] computes one
/// row against vector 0 (the same lanes, the same order: bit-exact).
///
/// # Safety
/// As [`gemv_int`]; row `r` is safe and `v + NB <= w.batch`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn rows_batch<
    const NB: usize,
    const BITS: u32,
    const WIDE: bool,
    const LARGE: u8,
    const SPAN64: bool,
    const SPLIT: bool,
>(
    w: &IntRows<'_>,
    u: &Unpack,
    table: &Tables,
    r: usize,
    v: usize,
) -> [f32; NB] {
    let p = &w.rows;
    let span = if SPAN64 { 64 } else { 32 };
    let span_bytes = span / 8 * BITS as usize;
    let rb = p.cols / 8 * BITS as usize;
    // SAFETY: row r starts inside `packed` and its scales inside `scales`
    // (safe rows, the caller).
    let (row_ptr, scales) = unsafe { (p.packed.as_ptr().add(r * rb), RowScales::of(p, r)) };
    let blocks = w.blocks();
    let small = table.small;
    let mut fsum = [_mm256_setzero_ps(); NB];
    let lanes = lane_groups(w);
    let mut groups = GroupWalk::new(w);
    for (b, c0) in (0..p.cols).step_by(w.block).enumerate() {
        let mut acc = [[_mm256_setzero_si256(); 2]; NB];
        for c in (c0..c0 + w.block).step_by(span) {
            // SAFETY: as in `rows`, for vectors v..v + NB < batch.
            unsafe {
                let l = span_lookup::<BITS, WIDE, LARGE, SPAN64>(
                    u,
                    row_ptr.add(c / span * span_bytes),
                    small,
                    table,
                );
                for (q, acc) in acc.iter_mut().enumerate() {
                    let a = span_acts::<WIDE, SPAN64>(w, v + q, c);
                    *acc = accumulate::<SPLIT>(*acc, span_dot::<WIDE, SPAN64>(&l, &a));
                }
            }
        }
        // SAFETY: the block's groups of row r have scales (the caller).
        let gs = unsafe { scales.block(w.groups_per_block, b, groups.next()) };
        for (q, (fsum, acc)) in fsum.iter_mut().zip(acc).enumerate() {
            // SAFETY: (v + q) · blocks + b < batch · blocks <=
            // act_scales.len() (`supports`).
            let act = unsafe { *w.act_scales.get_unchecked((v + q) * blocks + b) };
            *fsum = add_block::<SPLIT>(*fsum, acc, gs, act, &lanes);
        }
    }
    core::array::from_fn(|q| lanes_sum(fsum[q]))
}
