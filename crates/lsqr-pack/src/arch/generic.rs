//! Portable scalar kernels.
//!
//! Everything here is safe code. Codes are processed in blocks of 8, which
//! occupy exactly `C` bytes for width `C`, so every block starts on a byte
//! boundary. Each width gets its own fully unrolled instantiation (const
//! generic `C`), selected by a single `match` per call, so all shifts and
//! masks inside the loops are compile-time constants.
//!
//! Block decoding uses at most two little-endian `u64` windows per block:
//! `lo` at the block's first byte, holding codes 0..4 (and, for `C <= 8`, all
//! eight codes), and `hi` at byte `H = floor(4C / 8)`, holding codes 4..8
//! starting at bit `S = (4C) % 8`. Since `S + 4C <= 64` for every `C <= 16`,
//! each code lies entirely inside one window.
//!
//! The kernels here assume validated arguments (see the `*_kernel`
//! functions' docs); they never panic, but on unvalidated input would
//! produce meaningless output.

use crate::PackError;

/// `(1 << width) - 1` as a `u32`, for `width` in `1..=16`.
#[inline(always)]
pub(crate) fn mask32(width: u32) -> u32 {
    (1u32 << width) - 1
}

/// Checks that every code fits in `width` bits; reports the first one that
/// does not.
///
/// Fast path: OR-reduce everything (auto-vectorised), locate the index only
/// on failure.
#[inline(always)]
pub(crate) fn check_codes(codes: &[u16], width: u32) -> Result<(), PackError> {
    if width >= 16 {
        return Ok(());
    }
    let high = !(mask32(width) as u16);
    let acc = codes.iter().fold(0u16, |acc, &c| acc | c);
    if acc & high == 0 {
        Ok(())
    } else {
        first_too_wide(codes, width)
    }
}

#[cold]
#[inline(never)]
fn first_too_wide(codes: &[u16], width: u32) -> Result<(), PackError> {
    let high = !(mask32(width) as u16);
    match codes.iter().position(|&c| c & high != 0) {
        Some(index) => Err(PackError::CodeTooWide { index, code: codes[index], width }),
        None => Ok(()),
    }
}

/// Reads the code whose first bit is stream bit `bit`, zero-extending past
/// the end of `packed` (callers guarantee the code itself is in bounds).
#[inline(always)]
pub(crate) fn read_code(packed: &[u8], bit: usize, width: u32) -> u16 {
    let byte = bit / 8;
    let shift = (bit % 8) as u32;
    let window = match packed.get(byte..).and_then(|s| s.first_chunk::<4>()) {
        Some(w) => u32::from_le_bytes(*w),
        None => {
            let rest = packed.get(byte..).unwrap_or(&[]);
            let mut buf = [0u8; 4];
            let n = rest.len().min(4);
            buf[..n].copy_from_slice(&rest[..n]);
            u32::from_le_bytes(buf)
        }
    };
    ((window >> shift) & mask32(width)) as u16
}

/// Byte offset of the second decoding window of a block (codes 4..8).
const fn half_off(c: usize) -> usize {
    (4 * c) / 8
}

/// Bit offset of code 4 inside the second decoding window.
const fn half_shift(c: usize) -> usize {
    (4 * c) % 8
}

#[inline(always)]
fn le64_at(s: &[u8], at: usize) -> Option<u64> {
    s.get(at..).and_then(|t| t.first_chunk::<8>()).map(|a| u64::from_le_bytes(*a))
}

/// Loads the (`lo`, `hi`) windows of the block starting at byte `p`,
/// zero-padding past the end of `packed`.
#[inline(always)]
fn load_block<const C: usize>(packed: &[u8], p: usize) -> (u64, u64) {
    if C <= 8 {
        if let Some(lo) = le64_at(packed, p) {
            return (lo, 0);
        }
    } else if let (Some(lo), Some(hi)) = (le64_at(packed, p), le64_at(packed, p + half_off(C))) {
        return (lo, hi);
    }
    load_block_slow::<C>(packed, p)
}

#[cold]
#[inline(never)]
fn load_block_slow<const C: usize>(packed: &[u8], p: usize) -> (u64, u64) {
    let rest = packed.get(p..).unwrap_or(&[]);
    let mut buf = [0u8; 24];
    let n = rest.len().min(16);
    buf[..n].copy_from_slice(&rest[..n]);
    let lo = le64_at(&buf, 0).unwrap_or(0);
    let hi = le64_at(&buf, half_off(C)).unwrap_or(0);
    (lo, hi)
}

/// Decodes the 8 codes of one block from its two windows.
#[inline(always)]
fn decode_block<const C: usize>(lo: u64, hi: u64) -> [u16; 8] {
    let m = (1u64 << C) - 1;
    let mut d = [0u16; 8];
    if C <= 8 {
        for (i, v) in d.iter_mut().enumerate() {
            *v = ((lo >> (i * C)) & m) as u16;
        }
    } else {
        for i in 0..4 {
            d[i] = ((lo >> (i * C)) & m) as u16;
            d[i + 4] = ((hi >> (half_shift(C) + i * C)) & m) as u16;
        }
    }
    d
}

/// Encodes 8 codes (already range-checked) into the block's two windows.
///
/// `hi` already contains the bits shared with `lo` in byte `H`, so writing
/// `lo` at byte 0 and then `hi` at byte `H` produces the block.
#[inline(always)]
fn encode_block<const C: usize>(c: &[u16; 8]) -> (u64, u64) {
    if C <= 8 {
        let mut lo = 0u64;
        for (i, &v) in c.iter().enumerate() {
            lo |= u64::from(v) << (i * C);
        }
        (lo, 0)
    } else {
        let mut lo = 0u64;
        let mut hi = 0u64;
        for i in 0..4 {
            lo |= u64::from(c[i]) << (i * C);
            hi |= u64::from(c[i + 4]) << (half_shift(C) + i * C);
        }
        // Bits of lo at or above byte H (the low nibble of byte H for odd C).
        hi |= lo.checked_shr(8 * half_off(C) as u32).unwrap_or(0);
        (lo, hi)
    }
}

#[inline(always)]
fn store64(out: &mut [u8], at: usize, v: u64) -> bool {
    match out.get_mut(at..).and_then(|t| t.first_chunk_mut::<8>()) {
        Some(d) => {
            *d = v.to_le_bytes();
            true
        }
        None => false,
    }
}

/// Writes one block at byte `p` given its windows; writes at most
/// `out.len() - p` bytes and never more than `C` bytes beyond what later
/// blocks overwrite.
#[inline(always)]
fn store_block<const C: usize>(out: &mut [u8], p: usize, lo: u64, hi: u64) {
    if C <= 8 {
        if store64(out, p, lo) {
            return;
        }
    } else if p + half_off(C) + 8 <= out.len() {
        store64(out, p, lo);
        store64(out, p + half_off(C), hi);
        return;
    }
    store_block_slow::<C>(out, p, lo, hi);
}

#[cold]
#[inline(never)]
fn store_block_slow<const C: usize>(out: &mut [u8], p: usize, lo: u64, hi: u64) {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&lo.to_le_bytes());
    if C > 8 {
        let h = half_off(C);
        buf[h..h + 8].copy_from_slice(&hi.to_le_bytes());
    }
    if let Some(dst) = out.get_mut(p..) {
        let n = dst.len().min(C);
        dst[..n].copy_from_slice(&buf[..n]);
    }
}

fn unpack_c<const C: usize>(packed: &[u8], out: &mut [u16]) {
    let mut blocks = out.chunks_exact_mut(8);
    let mut p = 0usize;
    for dst in &mut blocks {
        let (lo, hi) = load_block::<C>(packed, p);
        dst.copy_from_slice(&decode_block::<C>(lo, hi));
        p += C;
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let (lo, hi) = load_block::<C>(packed, p);
        let d = decode_block::<C>(lo, hi);
        tail.copy_from_slice(&d[..tail.len()]);
    }
}

fn pack_c<const C: usize>(codes: &[u16], out: &mut [u8]) {
    let mut blocks = codes.chunks_exact(8);
    let mut p = 0usize;
    for src in &mut blocks {
        let mut c = [0u16; 8];
        c.copy_from_slice(src);
        let (lo, hi) = encode_block::<C>(&c);
        store_block::<C>(out, p, lo, hi);
        p += C;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut c = [0u16; 8];
        c[..tail.len()].copy_from_slice(tail);
        let (lo, hi) = encode_block::<C>(&c);
        store_block::<C>(out, p, lo, hi);
    }
}

#[inline(always)]
pub(crate) fn unpack8(packed: &[u8], out: &mut [u16]) {
    for (d, &s) in out.iter_mut().zip(packed) {
        *d = u16::from(s);
    }
}

#[inline(always)]
pub(crate) fn unpack16(packed: &[u8], out: &mut [u16]) {
    for (d, s) in out.iter_mut().zip(packed.chunks_exact(2)) {
        *d = u16::from_le_bytes([s[0], s[1]]);
    }
}

#[inline(always)]
pub(crate) fn pack8(codes: &[u16], out: &mut [u8]) {
    for (d, &s) in out.iter_mut().zip(codes) {
        *d = s as u8;
    }
}

#[inline(always)]
pub(crate) fn pack16(codes: &[u16], out: &mut [u8]) {
    for (d, &s) in out.chunks_exact_mut(2).zip(codes) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

macro_rules! dispatch_width {
    ($width:expr, $f:ident, $($arg:expr),*) => {
        match $width {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*),
            14 => $f::<14>($($arg),*),
            15 => $f::<15>($($arg),*),
            _ => {}
        }
    };
}

/// Decodes `out.len()` codes starting at code 0 of `packed`.
///
/// Requires `width` in `1..=16` and `packed.len() >= packed_len(out.len())`
/// (otherwise the missing bytes read as zero).
pub(crate) fn unpack_kernel(packed: &[u8], width: u32, out: &mut [u16]) {
    match width {
        8 => unpack8(packed, out),
        16 => unpack16(packed, out),
        w => dispatch_width!(w, unpack_c, packed, out),
    }
}

/// Packs range-checked `codes` into `out`, which must be exactly
/// `packed_len(codes.len(), width)` bytes long; every byte of `out` is
/// written.
pub(crate) fn pack_kernel(codes: &[u16], width: u32, out: &mut [u8]) {
    match width {
        8 => pack8(codes, out),
        16 => pack16(codes, out),
        w => dispatch_width!(w, pack_c, codes, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_windows_cover_every_code() {
        // Codes 4..8 must fit in the second u64 window for every width.
        for c in 1..=16usize {
            assert!(half_shift(c) + 4 * c <= 64, "C={c}");
            assert!(half_off(c) + 8 <= 16, "C={c}");
        }
    }

    #[test]
    fn encode_decode_block_round_trip() {
        fn rt<const C: usize>() {
            let m = ((1u32 << C) - 1) as u16;
            let codes = [m, 0, 1, m, m >> 1, 1 & m, m, 0];
            let (lo, hi) = encode_block::<C>(&codes);
            let mut buf = [0u8; 24];
            buf[..8].copy_from_slice(&lo.to_le_bytes());
            if C > 8 {
                buf[half_off(C)..half_off(C) + 8].copy_from_slice(&hi.to_le_bytes());
            }
            // Only the block's C bytes may be nonzero.
            assert!(buf[C..].iter().all(|&b| b == 0), "C={C}");
            let (lo2, hi2) = load_block::<C>(&buf[..C], 0);
            assert_eq!(decode_block::<C>(lo2, hi2), codes, "C={C}");
        }
        rt::<1>();
        rt::<2>();
        rt::<3>();
        rt::<7>();
        rt::<9>();
        rt::<11>();
        rt::<15>();
    }

    #[test]
    fn read_code_near_end() {
        // 0xFFFF as a 16-bit code at the very end of the buffer, and a 3-bit
        // code in the last byte's high bits.
        assert_eq!(read_code(&[0, 0xFF, 0xFF], 8, 16), 0xFFFF);
        assert_eq!(read_code(&[0b1010_0000], 5, 3), 0b101);
        // Reading wholly past the end yields zero rather than panicking.
        assert_eq!(read_code(&[], 1000, 16), 0);
    }

    #[test]
    fn check_codes_reports_first() {
        assert_eq!(check_codes(&[1, 2, 3], 2), Ok(()));
        assert_eq!(
            check_codes(&[1, 4, 8], 2),
            Err(PackError::CodeTooWide { index: 1, code: 4, width: 2 })
        );
        assert_eq!(check_codes(&[u16::MAX], 16), Ok(()));
    }
}
