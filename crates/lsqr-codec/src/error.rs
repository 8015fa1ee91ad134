//! The one error type of this crate.

use core::fmt;

/// Everything that can go wrong while building a codebook, quantizing or
/// dequantizing. Every variant names the offending value and, where there is
/// one, the element or group index, so that a caller can point at the data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CodecError {
    /// The code width C is outside 2..=16.
    InvalidBits {
        /// The width that was asked for.
        bits: u32,
    },
    /// An input value is NaN or infinite; it would otherwise become a silent code.
    NonFinite {
        /// Flat (row-major) index of the value.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// The shape's element count does not match the data length.
    ShapeMismatch {
        /// Product of the shape's dimensions (`None` if it overflows `usize`).
        shape_elements: Option<usize>,
        /// Length of the data slice.
        data_len: usize,
    },
    /// The product of a shape's dimensions overflows `usize`.
    ShapeOverflow,
    /// A group size that is not a power of two in 16..=1024.
    InvalidGroupSize {
        /// The group size that was asked for.
        group: usize,
    },
    /// Two-level scales of a shape [`crate::scale::TwoLevel::new`] refuses.
    InvalidTwoLevel {
        /// Elements per super-block.
        super_len: usize,
        /// Elements per sub-block.
        sub_len: usize,
        /// Bits per sub-scale.
        sub_bits: u32,
    },
    /// Importance weights that are not one finite, non-negative weight per
    /// column (not all zero).
    InvalidImportance {
        /// Columns of the tensor's `[d0, rest]` view.
        columns: usize,
        /// Weights given.
        got: usize,
    },
    /// An input covariance for error-compensating rounding that is not
    /// `columns × columns` finite values with a positive diagonal (or
    /// cannot be factored even when damped), or one of another row length.
    InvalidCovariance {
        /// Columns of the tensor's `[d0, rest]` view.
        columns: usize,
        /// Values given.
        got: usize,
    },
    /// A sub-scale does not fit its bits.
    SubScaleOutOfRange {
        /// Index of the sub-block.
        group: usize,
        /// The sub-scale.
        sub_scale: u8,
        /// Bits per sub-scale.
        bits: u32,
    },
    /// A scale does not fit the scale dtype (f16 overflow or underflow to zero).
    ScaleOutOfRange {
        /// Index of the group.
        group: usize,
        /// The f32 scale before rounding.
        scale: f32,
    },
    /// The μ of the `log` codebook is negative or not finite.
    InvalidMu {
        /// The μ that was given.
        mu: f32,
    },
    /// An explicit `lut` table has the wrong length or a non-finite entry.
    InvalidTable {
        /// What is wrong with it.
        reason: &'static str,
        /// The index of the offending entry, or the table length.
        at: usize,
    },
    /// A minifloat layout whose sign + exponent + mantissa bits do not make C,
    /// or with no exponent bit.
    InvalidFpLayout {
        /// Exponent bits.
        exp_bits: u32,
        /// Mantissa bits.
        man_bits: u32,
    },
    /// A code does not fit in C bits.
    CodeOutOfRange {
        /// Index of the code.
        index: usize,
        /// The code.
        code: u16,
        /// The width C.
        bits: u32,
    },
    /// Two buffers that must agree in length do not.
    LengthMismatch {
        /// What the length is of.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidBits { bits } => {
                write!(f, "code width C = {bits} is not supported (expected 2..=16)")
            }
            Self::NonFinite { index, value } => {
                write!(f, "element {index} is {value}; only finite values can be quantized")
            }
            Self::ShapeMismatch { shape_elements: Some(n), data_len } => {
                write!(f, "shape holds {n} elements but the data has {data_len}")
            }
            Self::ShapeMismatch { shape_elements: None, data_len } => {
                write!(f, "shape element count overflows (data has {data_len} elements)")
            }
            Self::ShapeOverflow => f.write_str("the shape's element count overflows"),
            Self::InvalidGroupSize { group } => {
                write!(f, "group size {group} is not a power of two in 16..=1024")
            }
            Self::InvalidTwoLevel { super_len, sub_len, sub_bits } => write!(
                f,
                "two-level scales {super_len}/{sub_len}/{sub_bits}: super-blocks must be a power \
                 of two in 32..=4096, sub-blocks a power of two from 8 to half a super-block, \
                 sub-scales 2..=8 bits"
            ),
            Self::InvalidImportance { columns, got } => write!(
                f,
                "importance: {got} weights for {columns} columns; they must be one finite, \
                 non-negative weight per column, not all zero"
            ),
            Self::InvalidCovariance { columns, got } => write!(
                f,
                "input covariance: {got} values for {columns} columns; it must be {columns} x \
                 {columns} finite values, symmetric, with a positive diagonal"
            ),
            Self::SubScaleOutOfRange { group, sub_scale, bits } => {
                write!(f, "sub-scale {sub_scale} of sub-block {group} does not fit {bits} bits")
            }
            Self::ScaleOutOfRange { group, scale } => write!(
                f,
                "scale {scale:e} of group {group} does not fit an f16 scale; use f32 scales"
            ),
            Self::InvalidMu { mu } => write!(f, "log codebook mu = {mu} must be finite and >= 0"),
            Self::InvalidTable { reason, at } => write!(f, "invalid lut table: {reason} (at {at})"),
            Self::InvalidFpLayout { exp_bits, man_bits } => write!(
                f,
                "minifloat layout E{exp_bits}M{man_bits} needs 1 sign bit + E >= 1 + M = C in 2..=16"
            ),
            Self::CodeOutOfRange { index, code, bits } => {
                write!(f, "code {code} at index {index} does not fit in {bits} bits")
            }
            Self::LengthMismatch { what, expected, got } => {
                write!(f, "{what}: expected length {expected}, got {got}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodecError {}
