//! ONNX elementwise operators on `f32`: binary operators with NumPy
//! broadcasting, unary operators in place, and Expand.
//!
//! All of them are allocation-free on success (the broadcast loop keeps its
//! per-axis state in fixed arrays, which is why ranks stop at 8, the most
//! the `.lsq` format stores), and return an [`OpError`] rather than panic
//! on any bad length, shape or rank.

use crate::shape::{self, BinaryKernel};
use crate::{Kernels, OpError};

/// Most dims an operand of these operators may have.
pub const MAX_RANK: usize = 8;

/// A binary elementwise operator, with ONNX semantics on `f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (IEEE: `x / 0` is `±inf` or NaN).
    Div,
    /// `a ^ b` (`libm::powf`).
    Pow,
    /// The larger, NaN if either is NaN (as `numpy.maximum`).
    Max,
    /// The smaller, NaN if either is NaN (as `numpy.minimum`).
    Min,
    /// `a == b` as 1.0 / 0.0.
    Equal,
    /// `a < b` as 1.0 / 0.0 (0.0 if either is NaN).
    Less,
    /// `a > b` as 1.0 / 0.0.
    Greater,
    /// `a <= b` as 1.0 / 0.0.
    LessOrEqual,
    /// `a >= b` as 1.0 / 0.0.
    GreaterOrEqual,
    /// Python-style modulo: the result takes the divisor's sign
    /// (ONNX `Mod` with `fmod = 0`).
    Mod,
    /// C `fmodf`: the result takes the dividend's sign (ONNX `Mod` with
    /// `fmod = 1`).
    FMod,
}

/// A unary elementwise operator, with ONNX semantics on `f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` where `x >= 0`, `alpha x` below.
    LeakyRelu {
        /// Slope below zero.
        alpha: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// GELU, erf form.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// `x sigmoid(x)`.
    Silu,
    /// `max(0, min(1, alpha x + beta))` (ONNX's defaults are
    /// `alpha = 0.2`, `beta = 0.5`; PyTorch's `1/6` and `0.5`).
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x relu6(x + 3) / 6`.
    HardSwish,
    /// `min(max(x, min), max)`; NaN stays NaN.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `sqrt(x)` (NaN below zero).
    Sqrt,
    /// `1 / x`, a true division (not an approximate reciprocal).
    Reciprocal,
    /// `exp(x)`.
    Exp,
    /// Natural logarithm.
    Log,
    /// The error function.
    Erf,
    /// Round toward `-inf`.
    Floor,
    /// Round toward `+inf`.
    Ceil,
    /// Round half to even.
    Round,
    /// `1`, `-1`, or `x` itself for `±0` and NaN.
    Sign,
    /// `log(1 + exp(x))`.
    Softplus,
    /// `x` where `x >= 0`, `alpha (exp(x) - 1)` below.
    Elu {
        /// Scale below zero.
        alpha: f32,
    },
    /// `sin(x)`.
    Sin,
    /// `cos(x)`.
    Cos,
    /// Logical not on a 0/1 tensor: 1.0 where `x == 0`, else 0.0.
    Not,
    /// Round toward zero (the float step of a Cast to an integer type).
    Trunc,
}

impl BinaryOp {
    /// The name in errors.
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Equal => "equal",
            BinaryOp::Less => "less",
            BinaryOp::Greater => "greater",
            BinaryOp::LessOrEqual => "less_or_equal",
            BinaryOp::GreaterOrEqual => "greater_or_equal",
            BinaryOp::Mod => "mod",
            BinaryOp::FMod => "fmod",
        }
    }
}

/// A [`BinaryOp`] on one path's kernels.
struct OnPath<'k> {
    kern: &'k Kernels,
    op: BinaryOp,
}

impl BinaryKernel for OnPath<'_> {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn same(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        (self.kern.binary_same)(self.op, a, b, out)
    }
    fn scalar_right(&self, a: &[f32], s: f32, out: &mut [f32]) {
        (self.kern.binary_scalar_right)(self.op, a, s, out)
    }
    fn scalar_left(&self, s: f32, b: &[f32], out: &mut [f32]) {
        (self.kern.binary_scalar_left)(self.op, s, b, out)
    }
    fn one(&self, a: f32, b: f32) -> f32 {
        crate::arch::generic::binary1(self.op, a, b)
    }
}

impl Kernels {
    /// `a (op) b` with NumPy broadcasting into `out`, which holds exactly
    /// the broadcast shape's element count ([`crate::broadcast_shape`]).
    /// At most [`MAX_RANK`] dims; allocates nothing on success.
    pub fn binary_into(
        &self,
        op: BinaryOp,
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let f = OnPath { kern: self, op };
        shape::broadcast_binary_into(&f, a, a_shape, b, b_shape, out, MAX_RANK)
    }

    /// `x = op(x)` in place.
    pub fn unary_inplace(&self, op: UnaryOp, x: &mut [f32]) {
        (self.unary)(op, x)
    }
}

/// `a (op) b` with NumPy broadcasting into `out` (exactly the broadcast
/// shape's element count, see [`crate::broadcast_shape`]), on
/// [`Kernels::active`]. At most 8 dims.
pub fn binary_into(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    Kernels::active().binary_into(op, a, a_shape, b, b_shape, out)
}

/// `x = op(x)` in place, on [`Kernels::active`]. The activations that have
/// their own crate-level function ([`crate::relu`], ...) run the same
/// kernels.
pub fn unary_inplace(op: UnaryOp, x: &mut [f32]) {
    Kernels::active().unary_inplace(op, x)
}

/// `x` broadcast to `out_shape` into `out` (ONNX Expand, once the runtime
/// has resolved the output shape): `x_shape` must broadcast to exactly
/// `out_shape` (aligned at the last axis, each dim equal or 1). At most 8
/// dims; allocates nothing on success.
pub fn expand_into(
    x: &[f32],
    x_shape: &[usize],
    out_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    shape::expand_into(x, x_shape, out_shape, out)
}

/// ONNX `Where`: `out = cond != 0 ? x : y`, the three operands broadcast
/// together (NumPy rules). `out` holds exactly the broadcast shape's
/// elements. A NaN condition counts as true (it is not 0), as in ONNX,
/// where the condition is a bool made by a comparison.
pub fn where_into(
    cond: &[f32],
    cond_shape: &[usize],
    x: &[f32],
    x_shape: &[usize],
    y: &[f32],
    y_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "where";
    let shapes = [cond_shape, x_shape, y_shape];
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    if rank > MAX_RANK {
        return Err(OpError::BadParameter { op: OP, reason: "rank above 8" });
    }
    // Each operand's dims right-aligned to `rank`, and the output's.
    let mut dims = [[1usize; MAX_RANK]; 3];
    let mut out_dims = [1usize; MAX_RANK];
    for (k, s) in shapes.iter().enumerate() {
        for (i, &d) in s.iter().enumerate() {
            dims[k][rank - s.len() + i] = d;
        }
    }
    for i in 0..rank {
        let d = dims.iter().map(|d| d[i]).find(|&d| d != 1).unwrap_or(1);
        if dims.iter().any(|dk| dk[i] != 1 && dk[i] != d) {
            return Err(OpError::ShapeMismatch {
                op: OP,
                left: cond_shape.to_vec(),
                right: if dims[1][i] != 1 && dims[1][i] != d { x_shape } else { y_shape }.to_vec(),
            });
        }
        out_dims[i] = d;
    }
    for (what, data, s) in [("cond", cond, cond_shape), ("x", x, x_shape), ("y", y, y_shape)] {
        shape::check_len(OP, what, data.len(), s)?;
    }
    shape::check_len(OP, "out", out.len(), &out_dims[..rank])?;
    // Element strides, 0 along broadcast axes.
    let mut strides = [[0usize; MAX_RANK]; 3];
    for k in 0..3 {
        let mut s = 1usize;
        for i in (0..rank).rev() {
            strides[k][i] = if dims[k][i] == 1 { 0 } else { s };
            s *= dims[k][i];
        }
    }
    let mut index = [0usize; MAX_RANK];
    let mut offsets = [0usize; 3];
    for o in out.iter_mut() {
        *o = if cond[offsets[0]] != 0.0 { x[offsets[1]] } else { y[offsets[2]] };
        // Advance the multi-index, innermost axis first.
        for i in (0..rank).rev() {
            index[i] += 1;
            for k in 0..3 {
                offsets[k] += strides[k][i];
            }
            if index[i] < out_dims[i] {
                break;
            }
            for k in 0..3 {
                offsets[k] -= strides[k][i] * out_dims[i];
            }
            index[i] = 0;
        }
    }
    Ok(())
}
