//! The runtime's one error type.

use std::fmt;

use lsqr_format::FormatError;
use lsqr_kernels::OpError;

/// Why a graph could not be planned, bound or run.
///
/// Errors found while planning ([`super::Plan::new`]) may carry owned
/// strings: planning allocates anyway. Errors that can happen after
/// [`super::Plan::bind`] (the variants documented as "run time") hold only
/// indices, counts and `&'static str`, so returning them allocates nothing;
/// their messages are built in `Display`.
#[derive(Debug)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The file has no graph section.
    NoGraph,
    /// A graph input has no usable `input_shape.<name>` metadata entry.
    InputShape {
        /// The graph input.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The layer's op is a known op of the format that this runtime does not
    /// execute.
    UnsupportedOp {
        /// Layer index.
        layer: usize,
        /// The op.
        op: String,
    },
    /// A weight of the layer is missing, of the wrong shape or type.
    Weight {
        /// Layer index.
        layer: usize,
        /// The op.
        op: String,
        /// The weight's tensor name (empty when a weight is missing).
        weight: String,
        /// What is wrong.
        problem: String,
    },
    /// An attribute of the layer is unknown, mistyped or out of range.
    Attr {
        /// Layer index.
        layer: usize,
        /// The op.
        op: String,
        /// The attribute key.
        attr: String,
        /// What is wrong.
        problem: String,
    },
    /// The layer's inputs do not fit the op (count, rank, shapes).
    Shape {
        /// Layer index.
        layer: usize,
        /// The op.
        op: String,
        /// What is wrong.
        problem: String,
    },
    /// A buffer size overflows `usize`.
    TooLarge {
        /// What was being sized.
        what: &'static str,
    },
    /// A tensor could not be read.
    Format(FormatError),
    /// Run time: a kernel refused its arguments (cannot happen for a plan
    /// that checked shapes; kept so that no path panics).
    Kernel {
        /// Layer index.
        layer: usize,
        /// The op.
        op: &'static str,
        /// The kernel's error.
        source: OpError,
    },
    /// `bind`: the arena is smaller than [`super::Plan::arena_len`].
    ArenaTooSmall {
        /// Bytes given.
        len: usize,
        /// Bytes the plan needs (alignment slack included).
        needed: usize,
    },
    /// Run time: a layer index past the end.
    NoSuchLayer {
        /// The index asked for.
        index: usize,
        /// The number of layers.
        count: usize,
    },
    /// Run time: an input index past the end.
    NoSuchInput {
        /// The index asked for.
        index: usize,
        /// The number of graph inputs.
        count: usize,
    },
    /// Run time: an output index past the end.
    NoSuchOutput {
        /// The index asked for.
        index: usize,
        /// The number of graph outputs.
        count: usize,
    },
    /// Run time: input data of the wrong length.
    InputLength {
        /// The input index.
        index: usize,
        /// Values its shape holds.
        expected: usize,
        /// Values given.
        actual: usize,
    },
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RuntimeError::*;
        match self {
            NoGraph => write!(f, "the file has no graph to run"),
            InputShape { name, problem } => write!(
                f,
                "graph input `{name}`: {problem} (the runtime reads its shape from metadata \
                 `input_shape.{name}`, an IntList)"
            ),
            UnsupportedOp { layer, op } => {
                write!(f, "layer {layer} ({op}): the runtime does not execute this op")
            }
            Weight { layer, op, weight, problem } if weight.is_empty() => {
                write!(f, "layer {layer} ({op}): {problem}")
            }
            Weight { layer, op, weight, problem } => {
                write!(f, "layer {layer} ({op}): weight `{weight}` {problem}")
            }
            Attr { layer, op, attr, problem } => {
                write!(f, "layer {layer} ({op}): attribute `{attr}` {problem}")
            }
            Shape { layer, op, problem } => write!(f, "layer {layer} ({op}): {problem}"),
            TooLarge { what } => write!(f, "{what} overflows usize"),
            Format(e) => e.fmt(f),
            Kernel { layer, op, source } => write!(f, "layer {layer} ({op}): {source}"),
            ArenaTooSmall { len, needed } => {
                write!(f, "arena is {len} bytes, the plan needs {needed}")
            }
            NoSuchLayer { index, count } => {
                write!(f, "layer {index} does not exist; the graph has {count} layers")
            }
            NoSuchInput { index, count } => {
                write!(f, "input {index} does not exist; the graph has {count} inputs")
            }
            NoSuchOutput { index, count } => {
                write!(f, "output {index} does not exist; the graph has {count} outputs")
            }
            InputLength { index, expected, actual } => {
                write!(f, "input {index} takes {expected} values, {actual} given")
            }
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Format(e) => Some(e),
            RuntimeError::Kernel { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<FormatError> for RuntimeError {
    fn from(e: FormatError) -> Self {
        RuntimeError::Format(e)
    }
}
