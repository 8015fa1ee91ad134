//! Batch-1 linear on packed rows, AVX2+FMA: codes are unpacked in
//! registers and looked up in registers, four rows per pass.
//!
//! At batch 1 a layer streams its weight once, so the kernel must decode
//! faster than memory delivers codes. Eight C-bit codes are exactly C
//! bytes, so when a row is a whole number of such chunks (`cols % 8 == 0`)
//! every chunk starts on a byte: one unaligned load, a broadcast and one
//! variable shift put eight codes in eight lanes. The look-up is then:
//! - C <= 3: one `vpermps` (the table is repeated to fill 8 lanes, so the
//!   higher, unmasked bits of a lane select the same entry);
//! - C = 4: two `vpermps` and a blend on bit 3;
//! - C = 5: four `vpermps` and three blends on bits 3 and 4;
//! - a sign-magnitude table (top half = bottom half negated, as `log` and
//!   `fp` are) looks up only the magnitudes and flips the sign with one
//!   xor: C = 4 takes one `vpermps`, C = 5 two;
//! - C = 6..=8: eight scalar table loads (64..256 entries have no
//!   register form on AVX2, and `vgatherdps`, microcode on Zen 3, measured
//!   about half as fast).
//!
//! Four rows share each load of `x`. Each group's partial sum is scaled by
//! its group scale with one FMA, so scales never touch the inner loop.

use core::arch::x86_64::*;

use crate::kernels::PackedRows;

/// Calls `$f::<C, S>$args` for the job's width C (1..=8) and, where the
/// look-up can use it (C = 4, 5), whether its table is sign-magnitude.
/// The table test runs only for those widths: the GEMM decodes a block of
/// a row per call, and the other widths have no use for it.
macro_rules! for_width {
    ($w:expr, $f:ident, $args:tt) => {
        match ($w.bits, matches!($w.bits, 4 | 5) && sign_magnitude($w.table)) {
            (1, _) => $f::<1, false> $args,
            (2, _) => $f::<2, false> $args,
            (3, _) => $f::<3, false> $args,
            (4, false) => $f::<4, false> $args,
            (4, true) => $f::<4, true> $args,
            (5, false) => $f::<5, false> $args,
            (5, true) => $f::<5, true> $args,
            (6, _) => $f::<6, false> $args,
            (7, _) => $f::<7, false> $args,
            _ => $f::<8, false> $args,
        }
    };
}

/// Whether [`gemv`] takes this job (otherwise the caller falls back to the
/// unpack-then-dot path).
pub(crate) fn supports(w: &PackedRows<'_>) -> bool {
    (1..=8).contains(&w.bits)
        && w.cols.is_multiple_of(8)
        && w.group.is_multiple_of(8)
        && w.group > 0
        && w.table.len() == 1usize << w.bits
}

/// Bytes one row occupies.
fn row_bytes(w: &PackedRows<'_>) -> usize {
    w.cols / 8 * w.bits as usize
}

/// `y[r] = Σ_g scale(r, g) Σ_{c in g} table[code(r, c)] x[c]` for the rows
/// whose every chunk load stays inside `packed`; returns how many leading
/// rows were done (the caller finishes the rest).
///
/// # Safety
/// AVX2 and FMA must be available; `supports(w)` must hold; `w` must be
/// consistent (`packed` holds `y.len()` rows, `scales` covers every
/// `row * scale_stride + group` index used); `x.len() == w.cols`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemv(w: &PackedRows<'_>, x: &[f32], y: &mut [f32]) -> usize {
    // SAFETY: forwarded contract; each instance checks nothing else.
    unsafe { for_width!(w, gemv_c, (w, x, y)) }
}

/// Whether the top half of the table is the bottom half negated, bit for
/// bit (`table[i + n/2] == -table[i]`, -0.0 included): true of the
/// sign-magnitude codebooks (`log`, `fp`, ...). Then the top code bit is a
/// sign to flip, and only the bottom half need be looked up, exactly.
fn sign_magnitude(table: &[f32]) -> bool {
    let (low, high) = table.split_at(table.len() / 2);
    table.len() >= 2 && low.iter().zip(high).all(|(a, b)| (a.to_bits() ^ b.to_bits()) == 1 << 31)
}

/// The table in registers: 8-lane slices, repeated for C < 3.
struct Table {
    regs: [__m256; 4],
    ptr: *const f32,
}

#[target_feature(enable = "avx2,fma")]
fn table_regs<const C: u32, const S: bool>(table: &[f32]) -> Table {
    let mut lanes = [[0.0f32; 8]; 4];
    // Sign-magnitude: registers hold the magnitudes (bottom half) only.
    let len = if S { table.len() / 2 } else { table.len() };
    for (i, lane) in lanes.iter_mut().flatten().enumerate() {
        *lane = table[i % len];
    }
    // SAFETY: each `lanes` row is 8 readable f32s.
    let load = |row: &[f32; 8]| unsafe { _mm256_loadu_ps(row.as_ptr()) };
    Table {
        regs: [load(&lanes[0]), load(&lanes[1]), load(&lanes[2]), load(&lanes[3])],
        ptr: table.as_ptr(),
    }
}

/// Eight codes from the C bytes at `p`, one per 32-bit lane (C <= 4: the
/// lanes also hold higher bits of later codes; the look-up ignores them).
///
/// # Safety
/// `p` must be readable for 4 bytes (C <= 4) or 8 bytes (C > 4).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn codes8<const C: u32>(p: *const u8) -> __m256i {
    let c = C as i32;
    if C <= 4 {
        // SAFETY: caller guarantees 4 readable bytes.
        let word = unsafe { p.cast::<u32>().read_unaligned() };
        let shifts = _mm256_setr_epi32(0, c, 2 * c, 3 * c, 4 * c, 5 * c, 6 * c, 7 * c);
        _mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts)
    } else {
        // SAFETY: caller guarantees 8 readable bytes.
        let word = unsafe { p.cast::<u64>().read_unaligned() };
        let v = _mm256_set1_epi64x(word as i64);
        let c = i64::from(c);
        // After the shuffle below, lane order is [lo0, lo1, hi0, hi1 | lo2,
        // lo3, hi2, hi3]: shift amounts are laid out to make that 0..8.
        let lo = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, c, 4 * c, 5 * c));
        let hi = _mm256_srlv_epi64(v, _mm256_setr_epi64x(2 * c, 3 * c, 6 * c, 7 * c));
        let both =
            _mm256_shuffle_ps::<0b10_00_10_00>(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi));
        _mm256_and_si256(_mm256_castps_si256(both), _mm256_set1_epi32((1 << C) - 1))
    }
}

/// The table entries of eight codes. With `S` (sign-magnitude table), the
/// low C - 1 bits are looked up among the magnitudes and bit C - 1 flips
/// the sign.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn lookup<const C: u32, const S: bool>(t: &Table, idx: __m256i) -> __m256 {
    // Bit `b` of each lane moved to the sign bit, which blendv reads.
    let bit = |b: u32| -> __m256i {
        match b {
            3 => _mm256_slli_epi32::<28>(idx),
            4 => _mm256_slli_epi32::<27>(idx),
            _ => _mm256_slli_epi32::<26>(idx),
        }
    };
    let select = |b: u32| _mm256_castsi256_ps(bit(b));
    let p = |k: usize| _mm256_permutevar8x32_ps(t.regs[k], idx);
    // Up to 32 entries from the registers: bits 0..3 by vpermps, bits 3
    // and 4 by blends.
    let levels = |entries: u32| -> __m256 {
        match entries {
            8 => p(0),
            16 => _mm256_blendv_ps(p(0), p(1), select(3)),
            _ => {
                let b3 = select(3);
                let low = _mm256_blendv_ps(p(0), p(1), b3);
                _mm256_blendv_ps(low, _mm256_blendv_ps(p(2), p(3), b3), select(4))
            }
        }
    };
    if S {
        let sign = _mm256_and_si256(bit(C - 1), _mm256_set1_epi32(i32::MIN));
        _mm256_xor_ps(levels(1 << (C - 1)), _mm256_castsi256_ps(sign))
    } else if C <= 3 {
        p(0)
    } else if C <= 5 {
        levels(1 << C)
    } else {
        // C >= 6 without S never reaches here (`scalar8`); a gather keeps
        // this function total.
        // SAFETY: `codes8` masked each lane to C bits and the table has
        // 2^C entries (`supports`).
        unsafe { _mm256_i32gather_ps::<4>(t.ptr, idx) }
    }
}

/// The table entries of the eight C-bit codes at `p` (C = 6..=8), looked
/// up with scalar loads: eight loads beat `vgatherdps` (microcode on Zen
/// 3) at these widths. C = 8 reads bytes; C = 6, 7 shift one 64-bit word.
///
/// # Safety
/// `p` must be readable for 8 bytes and the table must have 2^C entries.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn scalar8<const C: u32>(t: &Table, p: *const u8) -> __m256 {
    // SAFETY: 8 readable bytes at `p`; every index is masked to C bits,
    // inside the 2^C-entry table.
    unsafe {
        let l = |k: usize| {
            let code = if C == 8 {
                usize::from(*p.add(k))
            } else {
                (p.cast::<u64>().read_unaligned() >> (k as u32 * C)) as usize & ((1 << C) - 1)
            };
            *t.ptr.add(code)
        };
        _mm256_setr_ps(l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7))
    }
}

/// Whether the look-up runs from registers rather than by scalar loads.
/// llvm-mca's Zen 3 model, in cycles per 32 weights of the four-row loop:
/// C <= 3: 8.2; C = 4: 11.4 (10.4 sign-magnitude); C = 5: 22.8 (19.1);
/// C = 6 sign-magnitude from registers would be 31.3, against 22-24 for the
/// scalar loads at C = 6..8. So registers up to C = 5.
const fn registers<const C: u32>() -> bool {
    C <= 5
}

/// Horizontal sum of eight lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Rows done four at a time while all four rows' loads are in bounds,
/// then one at a time.
///
/// # Safety
/// As [`gemv`].
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_c<const C: u32, const S: bool>(
    w: &PackedRows<'_>,
    x: &[f32],
    y: &mut [f32],
) -> usize {
    let t = table_regs::<C, S>(w.table);
    let rb = row_bytes(w);
    let read = if C <= 4 { 4 } else { 8 };
    // A row is safe when the last chunk's load fits in `packed`.
    let safe_rows = (w.packed.len() + C as usize)
        .saturating_sub(read)
        .checked_div(rb)
        .map_or(y.len(), |rows| rows.min(y.len()));
    let mut r = 0;
    while r + 4 <= safe_rows {
        // SAFETY: rows r..r + 4 are safe rows; the rest is the caller's
        // contract.
        let sums = unsafe { rows::<C, 4, S>(w, &t, x, r) };
        y[r..r + 4].copy_from_slice(&sums);
        r += 4;
    }
    while r < safe_rows {
        // SAFETY: as above, for one row.
        y[r] = unsafe { rows::<C, 1, S>(w, &t, x, r) }[0];
        r += 1;
    }
    safe_rows
}

/// The dot products of rows `r..r + R`.
///
/// # Safety
/// As [`gemv`], and rows `r..r + R` are safe rows (see `gemv_c`).
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::needless_range_loop)] // q indexes the accumulators and the rows
unsafe fn rows<const C: u32, const R: usize, const S: bool>(
    w: &PackedRows<'_>,
    t: &Table,
    x: &[f32],
    r: usize,
) -> [f32; R] {
    let rb = row_bytes(w);
    let chunk = C as usize;
    let base = w.packed.as_ptr();
    let mut total = [_mm256_setzero_ps(); R];
    let mut c0 = 0;
    let mut g = 0;
    while c0 < w.cols {
        let c1 = (c0 + w.group).min(w.cols);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut c = c0;
        while c < c1 {
            // SAFETY: c + 8 <= cols = x.len() (cols and c1 are multiples
            // of 8); row r + q's chunk at byte (r + q) * rb + c / 8 * C is
            // readable for the 4 or 8 bytes `codes8` loads (safe rows).
            unsafe {
                let xv = _mm256_loadu_ps(x.as_ptr().add(c));
                for q in 0..R {
                    let p = base.add((r + q) * rb + c / 8 * chunk);
                    let v = if registers::<C>() {
                        lookup::<C, S>(t, codes8::<C>(p))
                    } else {
                        scalar8::<C>(t, p)
                    };
                    acc[q] = _mm256_fmadd_ps(v, xv, acc[q]);
                }
            }
            c += 8;
        }
        for q in 0..R {
            let s = w.scales[(r + q) * w.scale_stride + g];
            total[q] = _mm256_fmadd_ps(acc[q], _mm256_set1_ps(s), total[q]);
        }
        c0 = c1;
        g += 1;
    }
    let mut out = [0.0f32; R];
    for q in 0..R {
        out[q] = hsum(total[q]);
    }
    out
}

/// Outputs of at least this many f32 (8 MiB, beyond this CPU's L2 and a
/// good part of L3) are written with streaming stores.
const STREAM_MIN: usize = 2 << 20;

/// Decodes elements `start..start + out.len()` of the row-major weight
/// (`table[code] * scale`) for as long as the chunk loads stay inside
/// `packed`; returns how many leading elements of `out` were written (the
/// caller finishes the rest). Takes only jobs that `supports`, with
/// `start` a multiple of 8.
///
/// # Safety
/// AVX2 and FMA must be available; `supports(w)` must hold; `scales`
/// must cover every `row * scale_stride + group` of the elements decoded.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn decode(w: &PackedRows<'_>, start: usize, out: &mut [f32]) -> usize {
    // SAFETY: forwarded contract.
    unsafe { for_width!(w, decode_c, (w, start, out)) }
}

/// # Safety
/// As [`decode`].
#[target_feature(enable = "avx2,fma")]
unsafe fn decode_c<const C: u32, const S: bool>(
    w: &PackedRows<'_>,
    start: usize,
    out: &mut [f32],
) -> usize {
    if w.cols == 0 || !start.is_multiple_of(8) {
        return 0;
    }
    let t = table_regs::<C, S>(w.table);
    let read = if C <= 4 { 4 } else { 8 };
    // Whole 8-element chunks whose load fits in `packed`.
    let loadable = ((w.packed.len() + C as usize).saturating_sub(read) / C as usize)
        .saturating_sub(start / 8)
        .min(out.len() / 8);
    let end = start + loadable * 8;
    // Outputs larger than the caches go around them: streaming stores skip
    // the read-for-ownership of every destination line. They need 16-byte
    // alignment, which every allocator gives f32 buffers this size.
    let stream = out.len() >= STREAM_MIN && (out.as_ptr() as usize).is_multiple_of(16);
    let mut e = start;
    while e < end {
        let (row, col) = (e / w.cols, e % w.cols);
        let group_end = ((col / w.group + 1) * w.group).min(w.cols);
        let stop = (e + group_end - col).min(end);
        let scale = _mm256_set1_ps(w.scales[row * w.scale_stride + col / w.group]);
        while e < stop {
            // SAFETY: e < end, so chunk e / 8 loads inside `packed`
            // (`loadable`) and writes out[e - start..e - start + 8] inside
            // `out` (loadable <= out.len() / 8); streamed halves are
            // 16-byte aligned (`stream`, and e - start is a multiple of 8).
            unsafe {
                let p = w.packed.as_ptr().add(e / 8 * C as usize);
                let v = if registers::<C>() {
                    lookup::<C, S>(&t, codes8::<C>(p))
                } else {
                    scalar8::<C>(&t, p)
                };
                let v = _mm256_mul_ps(v, scale);
                let dst = out.as_mut_ptr().add(e - start);
                if stream {
                    _mm_stream_ps(dst, _mm256_castps256_ps128(v));
                    _mm_stream_ps(dst.add(4), _mm256_extractf128_ps::<1>(v));
                } else {
                    _mm256_storeu_ps(dst, v);
                }
            }
            e += 8;
        }
    }
    if stream {
        // Streaming stores are weakly ordered: fence before the caller
        // (or another thread) reads the output.
        _mm_sfence();
    }
    end - start
}
