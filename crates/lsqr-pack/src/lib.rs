//! Arbitrary-width (1..=16 bit) bit packing for quantized weight codes.
//!
//! A *code* is an unsigned integer of `C` bits (`1 <= C <= 16`, see
//! [`MAX_WIDTH`]) held in a `u16`. This crate packs a sequence of codes into
//! a dense byte stream and unpacks it again, using SIMD (AVX2 on x86_64,
//! chosen at run time) where available and portable block-wise scalar code
//! otherwise. Pack and unpack work on caller-provided slices and never
//! allocate; no function panics on any input.
//!
//! ```
//! use lsqr_pack::{pack_into, packed_len, unpack_into};
//!
//! let codes = [5u16, 2, 7, 1, 6];
//! let mut packed = [0u8; 2];
//! assert_eq!(packed_len(codes.len(), 3), Ok(2));
//! assert_eq!(pack_into(&codes, 3, &mut packed), Ok(2));
//! assert_eq!(packed, [0xD5, 0x63]);
//!
//! let mut back = [0u16; 5];
//! unpack_into(&packed, 3, &mut back).unwrap();
//! assert_eq!(back, codes);
//! ```
//!
//! # Layout
//!
//! The format is a plain LSB-first bit stream with no header:
//!
//! * **Stream bits.** Stream bit `b` (0-based) is bit `b % 8` of byte
//!   `b / 8`, where bit 0 of a byte is its least significant bit (value 1)
//!   and bit 7 its most significant bit (value 128).
//! * **Codes.** Code `i` (0-based) of width `C` occupies stream bits
//!   `i*C ..= i*C + C - 1`. Code bit `j` (bit 0 = least significant bit of
//!   the code) is stream bit `i*C + j`; that is, a code's least significant
//!   bit comes first. Codes are contiguous: there is no padding between
//!   codes, and a code may straddle two or three bytes.
//! * **Length.** `n` codes occupy exactly `ceil(n*C / 8)` bytes (see
//!   [`packed_len`]). The unused high bits of the last byte (stream bits
//!   `n*C` up to the next multiple of 8) are written as zero by the packer;
//!   decoders ignore them.
//! * **Blocks.** Because `8*C` bits are exactly `C` bytes, the 8 codes
//!   `8k .. 8k+8` ("block `k`") occupy exactly bytes `k*C .. (k+1)*C` and
//!   every block starts on a byte boundary. In particular, for `C = 8` each
//!   code is one byte, and for `C = 16` each code is a little-endian `u16`.
//!
//! Equivalently: read the whole stream as one (arbitrarily large)
//! little-endian unsigned integer `S`; then code `i` is
//! `(S >> (i*C)) & ((1 << C) - 1)`.
//!
//! ## Worked example (C = 3)
//!
//! Codes `[5, 2, 7, 1, 6]` (binary `101, 010, 111, 001, 110`) take
//! `5*3 = 15` bits, so 2 bytes:
//!
//! | stream bits | 0 1 2 | 3 4 5 | 6 7 8 | 9 10 11 | 12 13 14 | 15 |
//! |-------------|-------|-------|-------|---------|----------|----|
//! | code        | 0 = 5 | 1 = 2 | 2 = 7 | 3 = 1   | 4 = 6    | pad|
//! | bit values  | 1 0 1 | 0 1 0 | 1 1 1 | 1 0  0  | 0  1  1  | 0  |
//!
//! (bits listed code-LSB first). Byte 0 holds stream bits 0..=7, i.e.
//! (MSB to LSB) `1 1 0 1 0 1 0 1` = `0xD5`; byte 1 holds stream bits 8..=15,
//! i.e. `0 1 1 0 0 0 1 1` = `0x63`. Code 2 straddles the two bytes: its low
//! two bits are bits 6 and 7 of byte 0 and its high bit is bit 0 of byte 1.
//! So `pack_into(&[5, 2, 7, 1, 6], 3, ..)` produces `[0xD5, 0x63]`.
//!
//! ## Worked example (C = 10)
//!
//! Codes `[0x3FF, 0x001, 0x155]` take 30 bits, 4 bytes. As one little-endian
//! integer the stream is `0x3FF | 0x001 << 10 | 0x155 << 20 = 0x1550_07FF`,
//! so the bytes are `[0xFF, 0x07, 0x50, 0x15]` (the top two bits of byte 3
//! are padding and zero).
//!
//! ## Decoding in C
//!
//! A code spans at most `7 + 16 = 23` stream bits from the start of its first
//! byte, so a 32-bit little-endian window starting at byte `i*C/8` always
//! contains it:
//!
//! ```c
//! #include <stddef.h>
//! #include <stdint.h>
//!
//! /* Code i (0-based) of width C (1..16) from the n_bytes-byte buffer p.
//!  * Requires n_bytes >= (i*C + C + 7) / 8, i.e. the code is in bounds. */
//! static uint16_t lsqr_get(const uint8_t *p, size_t n_bytes, size_t i, unsigned C)
//! {
//!     size_t bit = i * (size_t)C;          /* first stream bit of the code */
//!     size_t byte = bit / 8;               /* byte containing that bit     */
//!     unsigned shift = (unsigned)(bit % 8);
//!     uint32_t w = 0;                      /* little-endian window, never
//!                                             reads past p[n_bytes - 1]    */
//!     for (unsigned k = 0; k < 4 && byte + k < n_bytes; k++)
//!         w |= (uint32_t)p[byte + k] << (8 * k);
//!     return (uint16_t)((w >> shift) & ((1u << C) - 1u));
//! }
//! ```
//!
//! When `byte + 4 <= n_bytes` the loop is just an unaligned little-endian
//! 32-bit load (`memcpy(&w, p + byte, 4)` on a little-endian host). Near the
//! end of the buffer, fewer bytes are read; the bytes the loop skips can
//! only hold bits above the code, which the mask discards.
//!
//! # Features
//!
//! * `std` (default): run-time CPU feature detection
//!   (`is_x86_feature_detected!`) and `std::error::Error` for [`PackError`].
//!   Without it the crate is `no_std` (it still needs `alloc` for the
//!   [`reference`](mod@reference) module) and AVX2 is used only when enabled at compile time
//!   (`-C target-feature=+avx2` or a suitable `-C target-cpu`).
//!
//! Setting the environment variable `LSQR_FORCE_SCALAR=1` (any non-empty
//! value other than `0`) before the first pack/unpack call forces the
//! portable implementation (`std` builds only; the choice is made once and
//! cached).
//!
//! # Dependencies
//!
//! Only `bitvec`: the [`reference`](mod@reference) implementation is
//! written with its `BitSlice<u8, Lsb0>`, one bit at a time, so that the
//! layout has a definition that reads like the text above, against which
//! the fast paths are tested. `byteorder` is not needed: `u32::from_le_bytes`
//! and friends are in `core`.
//!
//! # Errors
//!
//! Arguments are validated in this order: width, length arithmetic, buffer
//! sizes, code values. On error nothing has been written to the output.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arch;
mod error;
#[doc(hidden)]
pub mod paths;
pub mod reference;

use arch::{generic, Kernel};
pub use error::PackError;

/// Largest supported code width, in bits. Valid widths are `1..=MAX_WIDTH`.
pub const MAX_WIDTH: u32 = 16;

#[inline]
pub(crate) fn validate_width(width: u32) -> Result<(), PackError> {
    if (1..=MAX_WIDTH).contains(&width) {
        Ok(())
    } else {
        Err(PackError::InvalidWidth { width })
    }
}

/// Number of bytes occupied by `count` codes of `width` bits:
/// `ceil(count * width / 8)`.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`;
/// [`PackError::LengthOverflow`] if `count * width` overflows `usize`.
///
/// ```
/// assert_eq!(lsqr_pack::packed_len(5, 3), Ok(2));
/// assert_eq!(lsqr_pack::packed_len(8, 13), Ok(13));
/// ```
#[inline]
pub fn packed_len(count: usize, width: u32) -> Result<usize, PackError> {
    validate_width(width)?;
    let bits = count.checked_mul(width as usize).ok_or(PackError::LengthOverflow)?;
    Ok(bits / 8 + usize::from(bits % 8 != 0))
}

/// Packs `codes` at `width` bits each into the front of `out`.
///
/// Writes exactly [`packed_len`]`(codes.len(), width)` bytes (including zero
/// padding bits in the last byte) and returns that number; bytes of `out`
/// after it are left untouched.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`;
/// [`PackError::LengthOverflow`] if the length computation overflows;
/// [`PackError::BufferTooSmall`] if `out` is shorter than the packed length;
/// [`PackError::CodeTooWide`] naming the first code `>= 1 << width`. On error
/// `out` is not modified.
pub fn pack_into(codes: &[u16], width: u32, out: &mut [u8]) -> Result<usize, PackError> {
    pack_with(arch::selected(), codes, width, out)
}

/// Unpacks `out.len()` codes of `width` bits, starting at code 0 of
/// `packed`.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`;
/// [`PackError::LengthOverflow`] if the length computation overflows;
/// [`PackError::BufferTooSmall`] if `packed` is shorter than
/// [`packed_len`]`(out.len(), width)`. On error `out` is not modified.
pub fn unpack_into(packed: &[u8], width: u32, out: &mut [u16]) -> Result<(), PackError> {
    unpack_with(arch::selected(), packed, width, 0, out)
}

/// Unpacks codes `first .. first + out.len()` of `width` bits from `packed`
/// (the codes of the stream whose code 0 starts at `packed[0]`).
///
/// Any `first` is allowed; the codes before the next multiple of 8 are
/// decoded one at a time, the rest with the block-wise fast path.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`;
/// [`PackError::LengthOverflow`] if `first + out.len()` or the length
/// computation overflows; [`PackError::BufferTooSmall`] if `packed` is
/// shorter than [`packed_len`]`(first + out.len(), width)`. On error `out` is
/// not modified.
pub fn unpack_from(
    packed: &[u8],
    width: u32,
    first: usize,
    out: &mut [u16],
) -> Result<(), PackError> {
    unpack_with(arch::selected(), packed, width, first, out)
}

/// Returns code `index` of `width` bits from `packed`.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`;
/// [`PackError::LengthOverflow`] if `(index + 1) * width` overflows;
/// [`PackError::BufferTooSmall`] if `packed` is shorter than
/// [`packed_len`]`(index + 1, width)`.
///
/// ```
/// assert_eq!(lsqr_pack::get(&[0xD5, 0x63], 3, 2), Ok(7));
/// ```
pub fn get(packed: &[u8], width: u32, index: usize) -> Result<u16, PackError> {
    validate_width(width)?;
    let end = index.checked_add(1).ok_or(PackError::LengthOverflow)?;
    check_input(packed, end, width)?;
    // `end * width` fits in usize (checked by `packed_len`), so this does too.
    Ok(generic::read_code(packed, index * width as usize, width))
}

/// Checks that `packed` holds at least `count` codes.
#[inline]
fn check_input(packed: &[u8], count: usize, width: u32) -> Result<(), PackError> {
    let needed = packed_len(count, width)?;
    if packed.len() < needed {
        return Err(PackError::BufferTooSmall { needed, available: packed.len() });
    }
    Ok(())
}

/// `pack_into` with an explicit kernel.
pub(crate) fn pack_with(
    kernel: Kernel,
    codes: &[u16],
    width: u32,
    out: &mut [u8],
) -> Result<usize, PackError> {
    let len = packed_len(codes.len(), width)?;
    let available = out.len();
    let dst = out.get_mut(..len).ok_or(PackError::BufferTooSmall { needed: len, available })?;
    kernel.pack(codes, width, dst)?;
    Ok(len)
}

/// `unpack_from` with an explicit kernel.
pub(crate) fn unpack_with(
    kernel: Kernel,
    packed: &[u8],
    width: u32,
    first: usize,
    out: &mut [u16],
) -> Result<(), PackError> {
    validate_width(width)?;
    let end = first.checked_add(out.len()).ok_or(PackError::LengthOverflow)?;
    check_input(packed, end, width)?;
    if out.is_empty() {
        return Ok(());
    }
    let c = width as usize;
    // Scalar head up to the next block (multiple of 8 codes) boundary.
    let head = ((8 - first % 8) % 8).min(out.len());
    let (head_out, body_out) = out.split_at_mut(head);
    for (j, d) in head_out.iter_mut().enumerate() {
        // (first + j) * c < end * c, which fits in usize (checked above).
        *d = generic::read_code(packed, (first + j) * c, width);
    }
    if !body_out.is_empty() {
        // first + head is a multiple of 8, so its codes start at a byte
        // boundary: byte ((first + head) / 8) * c <= packed_len(end).
        let start = (first + head) / 8 * c;
        let src = packed.get(start..).unwrap_or(&[]);
        kernel.unpack(src, width, body_out);
    }
    Ok(())
}
