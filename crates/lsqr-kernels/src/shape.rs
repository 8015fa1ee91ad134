//! Shapes: element counts, NumPy broadcasting, pooling windows.

use alloc::vec;
use alloc::vec::Vec;

use crate::arch::generic::PoolGeometry;
use crate::OpError;

/// The number of elements of `shape` (1 for `[]`), or an error on overflow.
pub(crate) fn numel(op: &'static str, shape: &[usize]) -> Result<usize, OpError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(OpError::BadParameter { op, reason: "shape's element count overflows usize" })
}

/// Checks that `data` holds exactly `numel(shape)` elements.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    data: usize,
    shape: &[usize],
) -> Result<(), OpError> {
    let expected = numel(op, shape)?;
    if data != expected {
        return Err(OpError::LengthMismatch { op, what, expected, actual: data });
    }
    Ok(())
}

/// Checks that `eps` is finite and non-negative.
pub(crate) fn check_eps(op: &'static str, eps: f32) -> Result<(), OpError> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(OpError::BadParameter { op, reason: "eps must be finite and >= 0" })
    }
}

/// The NumPy broadcast of two shapes: aligned at their last axes, each pair
/// of sizes must be equal or contain a 1; the result takes the larger.
///
/// ```
/// use lsqr_kernels::broadcast_shape;
/// assert_eq!(broadcast_shape(&[8, 1, 6, 1], &[7, 1, 5]).unwrap(), vec![8, 7, 6, 5]);
/// assert!(broadcast_shape(&[2, 3], &[4]).is_err());
/// ```
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i < rank - s.len() { 1 } else { s[i - (rank - s.len())] };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => {
                Err(OpError::ShapeMismatch { op: "broadcast", left: a.to_vec(), right: b.to_vec() })
            }
        })
        .collect()
}

/// An axis of a coalesced broadcast loop: size and the element strides of
/// both operands (0 where the operand is broadcast).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub size: usize,
    pub sa: usize,
    pub sb: usize,
}

/// The three kernels broadcasting needs, and one element for the rare
/// inner run where both operands are broadcast.
pub(crate) trait BinaryKernel {
    /// The operator's name in errors.
    fn name(&self) -> &'static str;
    /// `out = a (op) b`, equal lengths.
    fn same(&self, a: &[f32], b: &[f32], out: &mut [f32]);
    /// `out = a (op) s`.
    fn scalar_right(&self, a: &[f32], s: f32, out: &mut [f32]);
    /// `out = s (op) b`: distinct from `scalar_right` for the operators
    /// that do not commute (sub, div, pow, comparisons, mod).
    fn scalar_left(&self, s: f32, b: &[f32], out: &mut [f32]);
    /// One element.
    fn one(&self, a: f32, b: f32) -> f32;
}

/// A commutative binary elementwise operator on plain kernel pointers (add,
/// mul of the original table).
pub(crate) struct Binary {
    pub op: &'static str,
    /// `out = a (op) b`, equal lengths.
    pub same: fn(&[f32], &[f32], &mut [f32]),
    /// `out = a (op) s`; the operator must be commutative.
    pub scalar: fn(&[f32], f32, &mut [f32]),
    /// One element.
    pub one: fn(f32, f32) -> f32,
}

impl BinaryKernel for Binary {
    fn name(&self) -> &'static str {
        self.op
    }
    fn same(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        (self.same)(a, b, out)
    }
    fn scalar_right(&self, a: &[f32], s: f32, out: &mut [f32]) {
        (self.scalar)(a, s, out)
    }
    fn scalar_left(&self, s: f32, b: &[f32], out: &mut [f32]) {
        (self.scalar)(b, s, out)
    }
    fn one(&self, a: f32, b: f32) -> f32 {
        (self.one)(a, b)
    }
}

/// Most axes a broadcast may have. The allocation-free loop keeps its
/// per-axis state in fixed arrays of this size; tensors of the `.lsq`
/// format have at most 8 dims, so 16 leaves room.
pub(crate) const MAX_BROADCAST_RANK: usize = 16;

/// `a (op) b` with NumPy broadcasting; returns the output and its shape.
pub(crate) fn broadcast_binary(
    f: &impl BinaryKernel,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>), OpError> {
    let op = f.name();
    let out_shape = broadcast_shape(a_shape, b_shape).map_err(|_| OpError::ShapeMismatch {
        op,
        left: a_shape.to_vec(),
        right: b_shape.to_vec(),
    })?;
    let total = numel(op, &out_shape)?;
    check_len(op, "a", a.len(), a_shape)?;
    check_len(op, "b", b.len(), b_shape)?;
    let mut out = vec![0.0f32; total];
    broadcast_binary_into(f, a, a_shape, b, b_shape, &mut out, MAX_BROADCAST_RANK)?;
    Ok((out, out_shape))
}

/// The error of a rank above `max_rank`.
fn rank_error(op: &'static str, max_rank: usize) -> OpError {
    OpError::BadParameter {
        op,
        reason: if max_rank <= 8 {
            "at most 8 dims are supported"
        } else {
            "broadcasting supports at most 16 dims"
        },
    }
}

/// `a (op) b` with NumPy broadcasting into `out`, which must hold exactly
/// the broadcast shape's element count. Allocates nothing on success (the
/// per-axis state lives on the stack), which is what the micro runtime
/// needs between layers.
pub(crate) fn broadcast_binary_into(
    f: &impl BinaryKernel,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    max_rank: usize,
) -> Result<(), OpError> {
    let op = f.name();
    let rank = a_shape.len().max(b_shape.len());
    let (pad_a, pad_b) = (rank - a_shape.len(), rank - b_shape.len());
    let dim_a = |i: usize| if i < pad_a { 1 } else { a_shape[i - pad_a] };
    let dim_b = |i: usize| if i < pad_b { 1 } else { b_shape[i - pad_b] };
    let mismatch =
        || OpError::ShapeMismatch { op, left: a_shape.to_vec(), right: b_shape.to_vec() };
    let mut total = 1usize;
    for i in 0..rank {
        let size = match (dim_a(i), dim_b(i)) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(mismatch()),
        };
        total = total
            .checked_mul(size)
            .ok_or(OpError::BadParameter { op, reason: "shape's element count overflows usize" })?;
    }
    if rank > max_rank.min(MAX_BROADCAST_RANK) {
        return Err(rank_error(op, max_rank));
    }
    check_len(op, "a", a.len(), a_shape)?;
    check_len(op, "b", b.len(), b_shape)?;
    if out.len() != total {
        return Err(OpError::LengthMismatch {
            op,
            what: "out",
            expected: total,
            actual: out.len(),
        });
    }
    let dims = |i: usize| (dim_a(i), dim_b(i), dim_a(i).max(dim_b(i)));
    for_each_run(rank, dims, out, |chunk, oa, ob, inner| {
        let len = chunk.len();
        match (inner.sa, inner.sb) {
            (1, 1) => f.same(&a[oa..oa + len], &b[ob..ob + len], chunk),
            (1, _) => f.scalar_right(&a[oa..oa + len], b[ob], chunk),
            (_, 1) => f.scalar_left(a[oa], &b[ob..ob + len], chunk),
            _ => chunk.fill(f.one(a[oa], b[ob])),
        }
    });
    Ok(())
}

/// `x` broadcast to exactly `out_shape` into `out` (ONNX Expand once the
/// output shape is resolved). Allocates nothing on success; at most 8 dims.
pub(crate) fn expand_into(
    x: &[f32],
    x_shape: &[usize],
    out_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "expand";
    if x_shape.len() > 8 || out_shape.len() > 8 {
        return Err(rank_error(OP, 8));
    }
    let rank = out_shape.len();
    let mismatch =
        || OpError::ShapeMismatch { op: OP, left: x_shape.to_vec(), right: out_shape.to_vec() };
    let Some(pad) = rank.checked_sub(x_shape.len()) else { return Err(mismatch()) };
    let dim_x = |i: usize| if i < pad { 1 } else { x_shape[i - pad] };
    if (0..rank).any(|i| dim_x(i) != out_shape[i] && dim_x(i) != 1) {
        return Err(mismatch());
    }
    check_len(OP, "x", x.len(), x_shape)?;
    check_len(OP, "out", out.len(), out_shape)?;
    for_each_run(
        rank,
        |i| (dim_x(i), 1, out_shape[i]),
        out,
        |chunk, ox, _, inner| {
            if inner.sa == 1 {
                chunk.copy_from_slice(&x[ox..ox + chunk.len()]);
            } else {
                chunk.fill(x[ox]);
            }
        },
    );
    Ok(())
}

/// The broadcast loop shared by the binary operators and expand: `dims(i)`
/// gives axis `i`'s size in operand a, operand b and the output (already
/// validated: each operand's size is the output's or 1, `rank` at most
/// `MAX_BROADCAST_RANK`, `out` exactly the output's element count). Axes are
/// taken from the innermost out, size-1 axes dropped and contiguous runs
/// merged; `run` gets each innermost run of the output with the offsets of
/// its first element in a and b and the innermost axis (strides 0 or 1).
pub(crate) fn for_each_run(
    rank: usize,
    dims: impl Fn(usize) -> (usize, usize, usize),
    out: &mut [f32],
    mut run: impl FnMut(&mut [f32], usize, usize, Axis),
) {
    if out.is_empty() {
        return;
    }
    let (mut run_a, mut run_b) = (1usize, 1usize);
    let mut axes = [Axis { size: 1, sa: 0, sb: 0 }; MAX_BROADCAST_RANK];
    let mut n_axes = 0usize;
    for i in (0..rank.min(MAX_BROADCAST_RANK)).rev() {
        let (da, db, size) = dims(i);
        let axis =
            Axis { size, sa: if da == 1 { 0 } else { run_a }, sb: if db == 1 { 0 } else { run_b } };
        run_a *= da;
        run_b *= db;
        if size == 1 {
            continue;
        }
        match axes[..n_axes].last_mut() {
            Some(last) if axis.sa == last.sa * last.size && axis.sb == last.sb * last.size => {
                last.size *= size;
            }
            _ => {
                axes[n_axes] = axis;
                n_axes += 1;
            }
        }
    }
    let n_axes = n_axes.max(1);
    let (&inner, outer) = match axes[..n_axes].split_first() {
        Some(split) => split,
        None => return,
    };
    let len = inner.size;
    let mut counter = [0usize; MAX_BROADCAST_RANK];
    let (mut oa, mut ob) = (0usize, 0usize);
    for chunk in out.chunks_exact_mut(len) {
        run(chunk, oa, ob, inner);
        // Odometer over the outer axes.
        for (c, axis) in counter.iter_mut().zip(outer) {
            *c += 1;
            oa += axis.sa;
            ob += axis.sb;
            if *c < axis.size {
                break;
            }
            *c = 0;
            oa -= axis.sa * axis.size;
            ob -= axis.sb * axis.size;
        }
    }
}

/// A 2-D pooling window: kernel, stride and zero-padding per spatial axis
/// (`[height, width]`).
///
/// Constraints (checked by the pooling operators): kernel and stride `>= 1`,
/// `2 * padding <= kernel` on each axis (so every window covers at least one
/// input element), and the padded input at least one kernel large.
/// Output size per axis: `(in + 2 padding - kernel) / stride + 1` (floor,
/// i.e. PyTorch's `ceil_mode = false`). No dilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Window size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Step `[sh, sw]`.
    pub stride: [usize; 2],
    /// Implicit padding `[ph, pw]` on both sides of each axis.
    pub padding: [usize; 2],
}

impl Pool2d {
    /// A square window with equal stride and padding on both axes.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Pool2d { kernel: [kernel; 2], stride: [stride; 2], padding: [padding; 2] }
    }

    /// The `[n, c, oh, ow]` output shape of pooling an NCHW input of
    /// `shape` with this window, after the same checks the pooling
    /// operators make (so a planner can size buffers up front).
    pub fn output_shape(&self, shape: [usize; 4]) -> Result<[usize; 4], OpError> {
        const OP: &str = "pool2d";
        let g = self.geometry(OP, shape, numel(OP, &shape)?)?;
        Ok([shape[0], shape[1], g.oh, g.ow])
    }

    /// Validates the window against an NCHW input of `len` elements.
    pub(crate) fn geometry(
        &self,
        op: &'static str,
        shape: [usize; 4],
        len: usize,
    ) -> Result<PoolGeometry, OpError> {
        check_len(op, "input", len, &shape)?;
        let bad = |reason| Err(OpError::BadParameter { op, reason });
        let [_, _, h, w] = shape;
        if h == 0 || w == 0 {
            return bad("empty spatial plane");
        }
        let mut out = [0usize; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let (k, s, p) = (self.kernel[axis], self.stride[axis], self.padding[axis]);
            if k == 0 || s == 0 {
                return bad("kernel and stride must be >= 1");
            }
            if p > k / 2 {
                return bad("padding must be <= kernel / 2");
            }
            let padded = p.checked_mul(2).and_then(|p2| p2.checked_add(size));
            match padded {
                Some(padded) if padded >= k => out[axis] = (padded - k) / s + 1,
                Some(_) => return bad("kernel larger than the padded input"),
                None => return bad("padding overflows usize"),
            }
        }
        Ok(PoolGeometry {
            h,
            w,
            oh: out[0],
            ow: out[1],
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        })
    }
}
