//! Readable reference implementation of the packed layout.
//!
//! These functions are the executable definition of the layout described in
//! the [crate-level documentation](crate#layout): they view the packed bytes
//! as a [`BitSlice<u8, Lsb0>`] (stream bit `b` is bit `b % 8` of byte `b / 8`,
//! bit 0 being the least significant bit) and move one bit at a time, code
//! bit 0 first. They are slow and allocate, and exist so that the optimised
//! paths can be tested against something obviously correct.

use alloc::vec;
use alloc::vec::Vec;

use bitvec::prelude::{BitSlice, Lsb0};

use crate::{packed_len, validate_width, PackError};

/// Packs `codes` at `width` bits each into a freshly allocated byte vector.
///
/// The result has exactly [`packed_len`]`(codes.len(), width)` bytes and
/// unused high bits of the last byte are zero.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`,
/// [`PackError::LengthOverflow`] if the bit count does not fit in `usize`,
/// [`PackError::CodeTooWide`] for the first code that needs more than `width`
/// bits.
pub fn pack(codes: &[u16], width: u32) -> Result<Vec<u8>, PackError> {
    validate_width(width)?;
    let len = packed_len(codes.len(), width)?;
    for (index, &code) in codes.iter().enumerate() {
        if u32::from(code) >> width != 0 {
            return Err(PackError::CodeTooWide { index, code, width });
        }
    }
    let mut bytes = vec![0u8; len];
    let bits: &mut BitSlice<u8, Lsb0> =
        BitSlice::try_from_slice_mut(&mut bytes).map_err(|_| PackError::LengthOverflow)?;
    let w = width as usize;
    for (i, &code) in codes.iter().enumerate() {
        for j in 0..w {
            // Code bit j (bit 0 = least significant) goes to stream bit i*w + j.
            bits.set(i * w + j, (code >> j) & 1 == 1);
        }
    }
    Ok(bytes)
}

/// Unpacks the first `count` codes of `width` bits each from `packed`.
///
/// # Errors
///
/// [`PackError::InvalidWidth`] if `width` is not in `1..=16`,
/// [`PackError::LengthOverflow`] if the bit count does not fit in `usize`,
/// [`PackError::BufferTooSmall`] if `packed` is shorter than
/// [`packed_len`]`(count, width)` bytes.
pub fn unpack(packed: &[u8], width: u32, count: usize) -> Result<Vec<u16>, PackError> {
    validate_width(width)?;
    let needed = packed_len(count, width)?;
    if packed.len() < needed {
        return Err(PackError::BufferTooSmall { needed, available: packed.len() });
    }
    let bits: &BitSlice<u8, Lsb0> =
        BitSlice::try_from_slice(&packed[..needed]).map_err(|_| PackError::LengthOverflow)?;
    let w = width as usize;
    let mut codes = Vec::with_capacity(count);
    for i in 0..count {
        let mut code = 0u16;
        for j in 0..w {
            if bits[i * w + j] {
                code |= 1 << j;
            }
        }
        codes.push(code);
    }
    Ok(codes)
}
