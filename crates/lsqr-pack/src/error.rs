//! The error type shared by every packing and unpacking entry point.

use core::fmt;

/// Why a pack, unpack or lookup request was rejected.
///
/// Every public function of this crate validates its arguments completely
/// before touching any output buffer, so when an error is returned the output
/// buffer has not been modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackError {
    /// The requested code width is not in `1..=MAX_WIDTH` (`1..=16`).
    InvalidWidth {
        /// The rejected width, in bits.
        width: u32,
    },
    /// A buffer is shorter than the operation requires.
    ///
    /// For packing this is the output byte buffer; for unpacking and
    /// [`get`](crate::get) it is the packed input byte buffer. Both numbers
    /// are in bytes.
    BufferTooSmall {
        /// Number of bytes the operation needs.
        needed: usize,
        /// Number of bytes the caller supplied.
        available: usize,
    },
    /// A code handed to [`pack_into`](crate::pack_into) has bits set at or
    /// above `width`, so it cannot be represented in `width` bits.
    CodeTooWide {
        /// Index (into the input code slice) of the first offending code.
        index: usize,
        /// The offending code's value.
        code: u16,
        /// The width the code was supposed to fit in.
        width: u32,
    },
    /// A bit or byte count (number of codes times width, or a code index
    /// times width) does not fit in `usize`.
    LengthOverflow,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PackError::InvalidWidth { width } => write!(
                f,
                "invalid code width {width} bits: width must be in 1..={}",
                crate::MAX_WIDTH
            ),
            PackError::BufferTooSmall { needed, available } => write!(
                f,
                "buffer too small: {needed} bytes needed but only {available} bytes available"
            ),
            PackError::CodeTooWide { index, code, width } => write!(
                f,
                "code {code} at index {index} does not fit in {width} bits (maximum {})",
                (1u64 << width.min(63)) - 1
            ),
            PackError::LengthOverflow => {
                f.write_str("packed length overflows usize (code count times width is too large)")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PackError {}
