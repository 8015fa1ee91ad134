//! ONNX reductions (`ReduceSum`, `ReduceMax`, ...) over any set of axes,
//! and softmax / log-softmax along any axis.
//!
//! Allocation-free: shapes are coalesced into at most 8 alternating groups
//! of kept and reduced axes held in fixed arrays. Two loop orders, so that
//! the innermost loop always runs over contiguous memory:
//!
//! - innermost axis reduced: each output folds contiguous runs with the
//!   path's row kernel (AVX2 for sum, sum of squares / absolute values,
//!   max, min);
//! - innermost axis kept: the output row accumulates whole input rows
//!   elementwise (the same IEEE operations in the same order on every path,
//!   so this order is bit-identical across paths).

use crate::arch::generic;
use crate::elementwise::MAX_RANK;
use crate::shape;
use crate::{Kernels, OpError};

/// A reduction, with ONNX semantics (`keepdims` is a reshape, the caller's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReduceOp {
    /// Sum (empty: 0).
    Sum,
    /// Mean (empty: NaN, as 0 / 0).
    Mean,
    /// Maximum, NaN if any element is NaN (empty: `-inf`).
    Max,
    /// Minimum, NaN if any element is NaN (empty: `+inf`).
    Min,
    /// Product (empty: 1).
    Prod,
    /// Sum of absolute values (empty: 0).
    L1,
    /// Square root of the sum of squares (empty: 0).
    L2,
    /// Sum of squares (empty: 0).
    SumSquare,
    /// `log(sum(exp(x)))`, computed stably (empty: `-inf`).
    LogSumExp,
}

/// The fold a row kernel applies (crate-private: the kernel tables use it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RowReduce {
    Sum,
    SumAbs,
    SumSquare,
    Prod,
    Max,
    Min,
    /// `Σ exp(x - shift)`.
    SumExp(f32),
    /// Online `log(Σ exp(x))`.
    LogAddExp,
}

impl RowReduce {
    /// The value of an empty fold.
    pub(crate) fn identity(self) -> f32 {
        match self {
            RowReduce::Sum | RowReduce::SumAbs | RowReduce::SumSquare | RowReduce::SumExp(_) => 0.0,
            RowReduce::Prod => 1.0,
            RowReduce::Max | RowReduce::LogAddExp => f32::NEG_INFINITY,
            RowReduce::Min => f32::INFINITY,
        }
    }
}

impl ReduceOp {
    /// The elementwise fold of the operator (before `finish`).
    fn fold(self) -> RowReduce {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => RowReduce::Sum,
            ReduceOp::Max => RowReduce::Max,
            ReduceOp::Min => RowReduce::Min,
            ReduceOp::Prod => RowReduce::Prod,
            ReduceOp::L1 => RowReduce::SumAbs,
            ReduceOp::L2 | ReduceOp::SumSquare => RowReduce::SumSquare,
            ReduceOp::LogSumExp => RowReduce::LogAddExp,
        }
    }

    /// The result of reducing no element.
    fn empty(self) -> f32 {
        match self {
            ReduceOp::Mean => f32::NAN,
            _ => self.fold().identity(),
        }
    }

    /// The folded value of `count` elements to the result.
    fn finish(self, acc: f32, count: usize) -> f32 {
        match self {
            ReduceOp::Mean => acc / count as f32,
            ReduceOp::L2 => libm::sqrtf(acc),
            _ => acc,
        }
    }
}

/// Checks the common arguments of the axis operators: rank, length.
fn check_shape(op: &'static str, len: usize, shape: &[usize]) -> Result<(), OpError> {
    if shape.len() > MAX_RANK {
        return Err(OpError::BadParameter { op, reason: "at most 8 dims are supported" });
    }
    shape::check_len(op, "x", len, shape)
}

/// A coalesced group of adjacent axes that are all kept or all reduced.
#[derive(Clone, Copy, Debug, Default)]
struct Group {
    size: usize,
    reduced: bool,
}

/// The outer groups' odometer: each group's size, its stride in `x` and in
/// `out` (0 when reduced).
#[derive(Clone, Copy, Debug, Default)]
struct Outer {
    size: usize,
    sx: usize,
    so: usize,
}

impl Kernels {
    /// Reduces `x` of `shape` over `axes` (strictly increasing, each below
    /// the rank) into `out`, which holds the kept dims' element count in
    /// row-major order. At most 8 dims; allocates nothing on success.
    pub fn reduce_into(
        &self,
        op: ReduceOp,
        x: &[f32],
        shape: &[usize],
        axes: &[usize],
        out: &mut [f32],
    ) -> Result<(), OpError> {
        const OP: &str = "reduce";
        check_shape(OP, x.len(), shape)?;
        if axes.iter().any(|&a| a >= shape.len()) || axes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(OpError::BadParameter {
                op: OP,
                reason: "axes must be strictly increasing and below the rank",
            });
        }
        let mut reduced_mask = 0u32;
        for &a in axes {
            reduced_mask |= 1 << a;
        }
        let mut kept = 1usize;
        let mut count = 1usize;
        for (i, &d) in shape.iter().enumerate() {
            let slot = if reduced_mask >> i & 1 == 1 { &mut count } else { &mut kept };
            *slot = slot.checked_mul(d).ok_or(OpError::BadParameter {
                op: OP,
                reason: "shape's element count overflows usize",
            })?;
        }
        if out.len() != kept {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "out",
                expected: kept,
                actual: out.len(),
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        if count == 0 {
            out.fill(op.empty());
            return Ok(());
        }
        // Coalesce: drop size-1 axes, merge neighbours of the same kind.
        let mut groups = [Group::default(); MAX_RANK];
        let mut n = 0usize;
        for (i, &size) in shape.iter().enumerate() {
            let reduced = reduced_mask >> i & 1 == 1;
            if size == 1 {
                continue;
            }
            match groups[..n].last_mut() {
                Some(last) if last.reduced == reduced => last.size *= size,
                _ => {
                    groups[n] = Group { size, reduced };
                    n += 1;
                }
            }
        }
        // No reduced axis left (all of size 1): one element per output,
        // as a run of one.
        if n == 0 || !groups[..n].iter().any(|g| g.reduced) {
            groups[n] = Group { size: 1, reduced: true };
            n += 1;
        }
        let (last, outer) = (groups[n - 1], &groups[..n - 1]);
        // Strides of the outer groups in x and out.
        let mut odo = [Outer::default(); MAX_RANK];
        let (mut sx, mut so) = (last.size, if last.reduced { 1 } else { last.size });
        for (j, g) in outer.iter().enumerate().rev() {
            odo[j] = Outer { size: g.size, sx, so: if g.reduced { 0 } else { so } };
            sx *= g.size;
            if !g.reduced {
                so *= g.size;
            }
        }
        let odo = &odo[..n - 1];
        if last.reduced {
            self.reduce_inner_runs(op, x, out, odo, last.size, count);
        } else {
            self.reduce_inner_kept(op, x, out, odo, last.size, count);
        }
        Ok(())
    }

    /// The innermost axis reduced: each output folds its runs of `len`.
    fn reduce_inner_runs(
        &self,
        op: ReduceOp,
        x: &[f32],
        out: &mut [f32],
        odo: &[Outer],
        len: usize,
        count: usize,
    ) {
        // Split the outer groups into kept ones (which enumerate outputs)
        // and reduced ones (which enumerate an output's runs).
        let mut kept = [Outer::default(); MAX_RANK];
        let mut red = [Outer::default(); MAX_RANK];
        let (mut nk, mut nr) = (0, 0);
        for g in odo {
            if g.so == 0 {
                red[nr] = *g;
                nr += 1;
            } else {
                kept[nk] = *g;
                nk += 1;
            }
        }
        let (kept, red) = (&kept[..nk], &red[..nr]);
        let runs = red.iter().map(|g| g.size).product::<usize>();
        let row = self.reduce_row;
        let mut counter = [0usize; MAX_RANK];
        let mut base = 0usize;
        for o in out.iter_mut() {
            // Each run of this output, in row-major order.
            let for_runs = |f: &mut dyn FnMut(&[f32])| {
                let mut c = [0usize; MAX_RANK];
                let mut off = base;
                for _ in 0..runs {
                    f(&x[off..off + len]);
                    for (k, g) in red.iter().enumerate().rev() {
                        c[k] += 1;
                        off += g.sx;
                        if c[k] < g.size {
                            break;
                        }
                        c[k] = 0;
                        off -= g.sx * g.size;
                    }
                }
            };
            let acc = match op {
                ReduceOp::LogSumExp => {
                    let mut m = f32::NEG_INFINITY;
                    for_runs(&mut |r| m = generic::max_nan(row(RowReduce::Max, r), m));
                    if m.is_finite() {
                        let mut s = 0.0f32;
                        for_runs(&mut |r| s += row(RowReduce::SumExp(m), r));
                        m + libm::logf(s)
                    } else {
                        m
                    }
                }
                _ => {
                    let fold = op.fold();
                    let mut acc = fold.identity();
                    let mut first = true;
                    for_runs(&mut |r| {
                        let v = row(fold, r);
                        acc = if first {
                            v
                        } else {
                            match fold {
                                RowReduce::Prod => acc * v,
                                RowReduce::Max => generic::max_nan(v, acc),
                                RowReduce::Min => generic::min_nan(v, acc),
                                _ => acc + v,
                            }
                        };
                        first = false;
                    });
                    acc
                }
            };
            *o = op.finish(acc, count);
            // Next output: odometer over the kept outer groups.
            for (k, g) in kept.iter().enumerate().rev() {
                counter[k] += 1;
                base += g.sx;
                if counter[k] < g.size {
                    break;
                }
                counter[k] = 0;
                base -= g.sx * g.size;
            }
        }
    }

    /// The innermost axis kept: output rows of `len` accumulate input rows.
    fn reduce_inner_kept(
        &self,
        op: ReduceOp,
        x: &[f32],
        out: &mut [f32],
        odo: &[Outer],
        len: usize,
        count: usize,
    ) {
        let fold = op.fold();
        out.fill(fold.identity());
        let mut counter = [0usize; MAX_RANK];
        let mut base = 0usize;
        for chunk in x.chunks_exact(len) {
            (self.reduce_acc)(fold, &mut out[base..base + len], chunk);
            for (k, g) in odo.iter().enumerate().rev() {
                counter[k] += 1;
                base += g.so;
                if counter[k] < g.size {
                    break;
                }
                counter[k] = 0;
                base -= g.so * g.size;
            }
        }
        if matches!(op, ReduceOp::Mean | ReduceOp::L2) {
            out.iter_mut().for_each(|v| *v = op.finish(*v, count));
        }
    }

    /// Softmax of `x` of `shape` along `axis`, in place: numerically stable
    /// (the maximum is subtracted first). The last axis runs the path's
    /// softmax kernel; other axes a strided loop, the same on every path.
    pub fn softmax_axis_inplace(
        &self,
        x: &mut [f32],
        shape: &[usize],
        axis: usize,
    ) -> Result<(), OpError> {
        let (n, inner) = axis_split("softmax", x.len(), shape, axis)?;
        if x.is_empty() {
            return Ok(());
        }
        if inner == 1 {
            (self.softmax)(x, n);
            return Ok(());
        }
        for block in x.chunks_exact_mut(n * inner) {
            for i in 0..inner {
                let max = (0..n).fold(f32::NEG_INFINITY, |m, j| m.max(block[j * inner + i]));
                let mut sum = generic::CompensatedSum::default();
                for j in 0..n {
                    let v = &mut block[j * inner + i];
                    *v = libm::expf(*v - max);
                    sum.add(*v);
                }
                let sum = sum.value();
                (0..n).for_each(|j| block[j * inner + i] /= sum);
            }
        }
        Ok(())
    }

    /// `log(softmax(x))` along `axis`, in place, as
    /// `x - max - log(sum(exp(x - max)))` (no `log` of an underflowed 0).
    /// One strided loop for every axis, the same on every path.
    pub fn log_softmax_axis_inplace(
        &self,
        x: &mut [f32],
        shape: &[usize],
        axis: usize,
    ) -> Result<(), OpError> {
        let (n, inner) = axis_split("log_softmax", x.len(), shape, axis)?;
        if x.is_empty() {
            return Ok(());
        }
        for block in x.chunks_exact_mut(n * inner) {
            for i in 0..inner {
                let max = (0..n).fold(f32::NEG_INFINITY, |m, j| m.max(block[j * inner + i]));
                let mut sum = generic::CompensatedSum::default();
                (0..n).for_each(|j| sum.add(libm::expf(block[j * inner + i] - max)));
                let shift = max + libm::logf(sum.value());
                (0..n).for_each(|j| block[j * inner + i] -= shift);
            }
        }
        Ok(())
    }
}

/// Validates a softmax call; returns the axis length and the element count
/// after the axis.
fn axis_split(
    op: &'static str,
    len: usize,
    shape: &[usize],
    axis: usize,
) -> Result<(usize, usize), OpError> {
    check_shape(op, len, shape)?;
    if axis >= shape.len() {
        return Err(OpError::BadParameter { op, reason: "axis must be below the rank" });
    }
    // numel(shape) fits (check_len), so does any suffix product.
    Ok((shape[axis], shape[axis + 1..].iter().product()))
}

/// Reduces `x` of `shape` over `axes` into `out`; see
/// [`Kernels::reduce_into`]. Runs on [`Kernels::active`].
pub fn reduce_into(
    op: ReduceOp,
    x: &[f32],
    shape: &[usize],
    axes: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    Kernels::active().reduce_into(op, x, shape, axes, out)
}

/// Softmax along `axis`; see [`Kernels::softmax_axis_inplace`].
pub fn softmax_axis_inplace(x: &mut [f32], shape: &[usize], axis: usize) -> Result<(), OpError> {
    Kernels::active().softmax_axis_inplace(x, shape, axis)
}

/// Log-softmax along `axis`; see [`Kernels::log_softmax_axis_inplace`].
pub fn log_softmax_axis_inplace(
    x: &mut [f32],
    shape: &[usize],
    axis: usize,
) -> Result<(), OpError> {
    Kernels::active().log_softmax_axis_inplace(x, shape, axis)
}

/// Writes, for each position of `x` (of `shape`) without `axis`, the index
/// along `axis` of its largest value (`max`) or smallest, as f32: ONNX's
/// ArgMax / ArgMin. Ties go to the first index, or the last with
/// `last_index`; a NaN counts as beyond every number (NumPy's rule), so the
/// first NaN wins (the last with `last_index`). `out` holds the positions
/// in row-major order (with or without the kept size-1 axis, the same
/// elements).
///
/// A selection, not arithmetic: one scalar pass, no SIMD path to check.
pub fn arg_extreme_into(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    max: bool,
    last_index: bool,
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "arg_extreme";
    check_shape(OP, x.len(), shape)?;
    let Some(&n) = shape.get(axis) else {
        return Err(OpError::BadParameter { op: OP, reason: "axis must be below the rank" });
    };
    if n == 0 {
        return Err(OpError::BadParameter { op: OP, reason: "the axis is empty" });
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    if out.len() != outer * inner {
        return Err(OpError::LengthMismatch {
            op: OP,
            what: "out",
            expected: outer * inner,
            actual: out.len(),
        });
    }
    // Whether `v` beats the best so far `b` (strictly, or on a tie with
    // `last_index`).
    let beats = |v: f32, b: f32| {
        if b.is_nan() {
            return last_index && v.is_nan();
        }
        if v.is_nan() {
            return true;
        }
        let (better, tie) = if max { (v > b, v == b) } else { (v < b, v == b) };
        better || (last_index && tie)
    };
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| x[(o * n + k) * inner + i];
            let mut best = 0;
            for k in 1..n {
                if beats(at(k), at(best)) {
                    best = k;
                }
            }
            out[o * inner + i] = best as f32;
        }
    }
    Ok(())
}
