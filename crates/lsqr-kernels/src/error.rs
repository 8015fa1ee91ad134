//! The one error type of the crate.

use alloc::vec::Vec;
use core::fmt;

/// Why an operator refused its inputs. Operators never panic on bad shapes,
/// lengths or parameters; they return one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpError {
    /// Two shapes that the operator needs to agree do not (e.g. broadcasting
    /// `[2, 3]` with `[4]`).
    ShapeMismatch {
        /// The operator.
        op: &'static str,
        /// The first shape.
        left: Vec<usize>,
        /// The second shape.
        right: Vec<usize>,
    },
    /// A buffer does not hold the number of elements its shape or role implies.
    LengthMismatch {
        /// The operator.
        op: &'static str,
        /// Which buffer (`"x"`, `"gamma"`, ...).
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// A parameter is out of its domain (zero kernel or stride, negative
    /// epsilon, shape whose element count overflows `usize`, ...).
    BadParameter {
        /// The operator.
        op: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::ShapeMismatch { op, left, right } => {
                write!(f, "{op}: incompatible shapes {left:?} and {right:?}")
            }
            OpError::LengthMismatch { op, what, expected, actual } => {
                write!(f, "{op}: `{what}` has {actual} elements, expected {expected}")
            }
            OpError::BadParameter { op, reason } => write!(f, "{op}: {reason}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OpError {}
