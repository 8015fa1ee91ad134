//! Data movement on row-major tensors: transpose, slice, concat, pad,
//! gather.
//!
//! None of these computes anything; they exist so that the runtime can
//! run the ONNX layout operators between its layers without allocating.
//! Every per-axis state lives in fixed `[_; MAX_RANK]` arrays on the stack
//! (the `.lsq` format caps tensors at 8 dims), every buffer length is
//! checked against its shape, and every index the copy will touch is
//! checked before the first write, so a bad call leaves `out` untouched
//! and never panics.

use crate::shape::{check_len, numel};
use crate::OpError;

/// Most dims a tensor may have here: the allocation-free loops keep one
/// counter per axis in fixed arrays of this size.
pub const MAX_RANK: usize = 8;

fn bad(op: &'static str, reason: &'static str) -> OpError {
    OpError::BadParameter { op, reason }
}

fn check_rank(op: &'static str, rank: usize) -> Result<(), OpError> {
    if rank > MAX_RANK {
        Err(bad(op, "at most 8 dims are supported"))
    } else {
        Ok(())
    }
}

fn check_arg_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), OpError> {
    if expected == actual {
        Ok(())
    } else {
        Err(OpError::LengthMismatch { op, what, expected, actual })
    }
}

/// Row-major element strides of `shape` (entries past its rank are 0).
fn strides(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut s = [0usize; MAX_RANK];
    let mut run = 1usize;
    for d in (0..shape.len()).rev() {
        s[d] = run;
        // Callers checked that the element count fits in usize.
        run = run.wrapping_mul(shape[d]);
    }
    s
}

/// One axis of a copy loop: its size and the element strides of the
/// source and the destination.
#[derive(Clone, Copy, Debug)]
struct Axis {
    size: usize,
    src: usize,
    dst: usize,
}

const NO_AXIS: Axis = Axis { size: 1, src: 0, dst: 0 };

/// Side of the square tiles of the blocked 2-D transpose: 16 x 16 f32 is
/// 1 KiB per side, so a tile of source and destination rows stays in L1
/// while each is walked against its contiguous direction.
const TILE: usize = 16;

/// Permutes the axes of `x` (of `shape`) into `out`: output axis `i` is
/// input axis `perm[i]` (ONNX Transpose, NumPy `transpose`).
///
/// Axes of size 1 are dropped and output axes that stay adjacent in the
/// input are merged first, so e.g. NCHW -> NHWC becomes a batch of 2-D
/// transposes `[c, hw] -> [hw, c]`. When the innermost output axis is
/// contiguous in the input the copy goes by whole runs; otherwise the pair
/// (innermost output axis, input's contiguous axis) is transposed in
/// 16 x 16 tiles, so that neither side is walked with a cache-missing
/// stride for long.
pub fn transpose_into(
    x: &[f32],
    shape: &[usize],
    perm: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "transpose";
    let rank = shape.len();
    check_rank(OP, rank)?;
    check_arg_len(OP, "perm", rank, perm.len())?;
    let mut seen = [false; MAX_RANK];
    for &p in perm {
        if p >= rank || seen[p] {
            return Err(bad(OP, "perm is not a permutation of 0..rank"));
        }
        seen[p] = true;
    }
    check_len(OP, "x", x.len(), shape)?;
    // The output has the same element count as the input.
    check_arg_len(OP, "out", x.len(), out.len())?;
    if x.is_empty() {
        return Ok(());
    }
    let istride = strides(shape);
    // Output axes, innermost first, with size-1 axes dropped and axes that
    // are adjacent (in order) in the input merged.
    let mut axes = [NO_AXIS; MAX_RANK];
    let mut n = 0usize;
    let mut run = 1usize;
    for i in (0..rank).rev() {
        let size = shape[perm[i]];
        let axis = Axis { size, src: istride[perm[i]], dst: run };
        run *= size;
        if size == 1 {
            continue;
        }
        match axes[..n].last_mut() {
            Some(last) if axis.src == last.src * last.size && axis.dst == last.dst * last.size => {
                last.size *= size;
            }
            _ => {
                axes[n] = axis;
                n += 1;
            }
        }
    }
    let axes = &axes[..n];
    let Some(&inner) = axes.first() else {
        out[0] = x[0];
        return Ok(());
    };
    if inner.src == 1 {
        // Contiguous runs on both sides.
        let len = inner.size;
        let outer = &axes[1..];
        let mut counter = [0usize; MAX_RANK];
        let (mut src, mut dst) = (0usize, 0usize);
        for chunk in out.chunks_exact_mut(len) {
            chunk.copy_from_slice(&x[src..src + len]);
            advance(&mut counter, outer, &mut src, &mut dst);
        }
        return Ok(());
    }
    // The input's contiguous axis (stride 1) exists: the input's innermost
    // axis of size > 1 survived the merge with stride 1.
    let Some(b) = axes.iter().position(|a| a.src == 1) else {
        return Err(bad(OP, "internal: no contiguous input axis"));
    };
    let (ax_a, ax_b) = (inner, axes[b]);
    let mut outer = [NO_AXIS; MAX_RANK];
    let mut m = 0usize;
    for (i, a) in axes.iter().enumerate() {
        if i != 0 && i != b {
            outer[m] = *a;
            m += 1;
        }
    }
    let outer = &outer[..m];
    let blocks = x.len() / (ax_a.size * ax_b.size);
    let mut counter = [0usize; MAX_RANK];
    let (mut src, mut dst) = (0usize, 0usize);
    for _ in 0..blocks {
        for b0 in (0..ax_b.size).step_by(TILE) {
            let b1 = (b0 + TILE).min(ax_b.size);
            for a0 in (0..ax_a.size).step_by(TILE) {
                let a1 = (a0 + TILE).min(ax_a.size);
                for ib in b0..b1 {
                    let row = &mut out[dst + ib * ax_b.dst + a0..dst + ib * ax_b.dst + a1];
                    for (o, ia) in row.iter_mut().zip(a0..a1) {
                        *o = x[src + ib + ia * ax_a.src];
                    }
                }
            }
        }
        advance(&mut counter, outer, &mut src, &mut dst);
    }
    Ok(())
}

/// Steps an odometer over `axes` (innermost first), keeping the source and
/// destination offsets in step.
#[inline]
fn advance(counter: &mut [usize; MAX_RANK], axes: &[Axis], src: &mut usize, dst: &mut usize) {
    for (c, a) in counter.iter_mut().zip(axes) {
        *c += 1;
        *src += a.src;
        *dst += a.dst;
        if *c < a.size {
            return;
        }
        *c = 0;
        *src -= a.src * a.size;
        *dst -= a.dst * a.size;
    }
}

/// A strided window of `x`: `out[i_0, .., i_r] = x[starts[d] + i_d
/// steps[d], ..]` for `out` of `out_shape`. Steps are non-zero and may be
/// negative (a reversed view); every index the window touches must lie
/// inside its dim, checked before anything is written.
///
/// ONNX Slice's `starts`/`ends` clamping is the caller's business (see
/// [`onnx_slice_params`]): keeping it out of here lets the runtime resolve
/// it once at plan time and keeps this a plain gather with an exact
/// contract.
pub fn slice_into(
    x: &[f32],
    shape: &[usize],
    starts: &[usize],
    steps: &[isize],
    out_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "slice";
    let rank = shape.len();
    check_rank(OP, rank)?;
    check_arg_len(OP, "starts", rank, starts.len())?;
    check_arg_len(OP, "steps", rank, steps.len())?;
    check_arg_len(OP, "out_shape", rank, out_shape.len())?;
    check_len(OP, "x", x.len(), shape)?;
    check_len(OP, "out", out.len(), out_shape)?;
    for d in 0..rank {
        if steps[d] == 0 {
            return Err(bad(OP, "steps must be non-zero"));
        }
        if out_shape[d] == 0 {
            continue;
        }
        // The first and last index along d, in i128 so no input overflows.
        let first = starts[d] as i128;
        let last = first + (out_shape[d] as i128 - 1) * steps[d] as i128;
        if first >= shape[d] as i128 || last < 0 || last >= shape[d] as i128 {
            return Err(bad(OP, "the slice reads outside the input"));
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    // In range, so every offset below fits: |offset| < x.len() <= isize::MAX.
    let istride = strides(shape);
    let mut base = 0isize;
    let mut step = [0isize; MAX_RANK];
    for d in 0..rank {
        base += (starts[d] * istride[d]) as isize;
        step[d] = steps[d] * istride[d] as isize;
    }
    if rank == 0 {
        out[0] = x[0];
        return Ok(());
    }
    let len = out_shape[rank - 1];
    let inner = step[rank - 1];
    let mut counter = [0usize; MAX_RANK];
    let mut src = base;
    for chunk in out.chunks_exact_mut(len) {
        if inner == 1 {
            chunk.copy_from_slice(&x[src as usize..src as usize + len]);
        } else {
            let mut s = src;
            for o in chunk.iter_mut() {
                *o = x[s as usize];
                s += inner;
            }
        }
        // Odometer over the outer dims, innermost first.
        for d in (0..rank - 1).rev() {
            counter[d] += 1;
            src += step[d];
            if counter[d] < out_shape[d] {
                break;
            }
            counter[d] = 0;
            src -= step[d] * out_shape[d] as isize;
        }
    }
    Ok(())
}

/// ONNX Slice's resolution of one axis: `(start, count)` for
/// [`slice_into`], from the operator's `start`, `end` and `step` on a dim
/// of size `dim`.
///
/// Negative `start`/`end` count from the end; then with `step > 0` both
/// are clamped to `[0, dim]`, with `step < 0` `start` to `[0, dim - 1]`
/// and `end` to `[-1, dim - 1]` (so `end = INT64_MIN` means "through
/// index 0"). The arithmetic is in `i128`, so `INT64_MAX`/`INT64_MIN`
/// ends, the ONNX idiom for "to the end", cannot overflow. A step of 0 is
/// an error.
pub fn onnx_slice_params(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<(usize, usize), OpError> {
    const OP: &str = "slice";
    if step == 0 {
        return Err(bad(OP, "steps must be non-zero"));
    }
    let d = dim as i128;
    let resolve = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
    let (mut s, mut e) = (resolve(start), resolve(end));
    let step = step as i128;
    let count = if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else {
        if dim == 0 {
            return Ok((0, 0));
        }
        s = s.clamp(0, d - 1);
        e = e.clamp(-1, d - 1);
        if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        }
    };
    // 0 <= s <= dim and count <= dim, both fit in usize.
    Ok((s as usize, count as usize))
}

/// Copies `x` (of `x_shape`) into `out` (of `out_shape`) at `offset` along
/// `axis`: one input of an ONNX Concat, so that the runtime writes each
/// input straight into the shared output instead of building a list of
/// inputs. All other dims must be equal, and the input must fit:
/// `offset + x_shape[axis] <= out_shape[axis]`.
pub fn concat_into(
    x: &[f32],
    x_shape: &[usize],
    axis: usize,
    offset: usize,
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<(), OpError> {
    const OP: &str = "concat";
    let rank = x_shape.len();
    check_rank(OP, rank)?;
    check_rank(OP, out_shape.len())?;
    if axis >= rank {
        return Err(bad(OP, "axis out of range"));
    }
    let mismatch =
        || OpError::ShapeMismatch { op: OP, left: x_shape.to_vec(), right: out_shape.to_vec() };
    if out_shape.len() != rank || (0..rank).any(|d| d != axis && x_shape[d] != out_shape[d]) {
        return Err(mismatch());
    }
    match offset.checked_add(x_shape[axis]) {
        Some(end) if end <= out_shape[axis] => {}
        _ => return Err(bad(OP, "the input does not fit at this offset")),
    }
    check_len(OP, "x", x.len(), x_shape)?;
    check_len(OP, "out", out.len(), out_shape)?;
    if x.is_empty() {
        return Ok(());
    }
    let inner: usize = x_shape[axis + 1..].iter().product();
    let block = x_shape[axis] * inner;
    let out_block = out_shape[axis] * inner;
    for (src, dst) in x.chunks_exact(block).zip(out.chunks_exact_mut(out_block)) {
        dst[offset * inner..offset * inner + block].copy_from_slice(src);
    }
    Ok(())
}

/// How [`pad_into`] fills the border (ONNX Pad's `mode`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// Every padded cell holds this value.
    Constant(f32),
    /// Mirror without repeating the edge (`[1, 2, 3]` padded by 2 on the
    /// left: `[3, 2, 1, 2, 3]`); needs each pad `< dim`.
    Reflect,
    /// Repeat the edge value; needs a non-empty dim wherever it pads.
    Edge,
}

/// Where output index `o` of an axis reads from: `Some(input index)` or
/// `None` for a constant cell. `i` is `o - begin`.
#[inline]
fn pad_source(mode: PadMode, i: isize, dim: usize) -> Option<usize> {
    let d = dim as isize;
    if (0..d).contains(&i) {
        return Some(i as usize);
    }
    match mode {
        PadMode::Constant(_) => None,
        // pad < dim was checked, so one reflection lands inside.
        PadMode::Reflect => Some(if i < 0 { (-i) as usize } else { (2 * (d - 1) - i) as usize }),
        PadMode::Edge => Some(if i < 0 { 0 } else { dim - 1 }),
    }
}

/// ONNX Pad: `out` is `x` with `begin[d]` cells before and `end[d]` after
/// it along each dim `d`, filled as `mode` says. Negative pads (crops) are
/// the runtime's business: it can express them as a [`slice_into`].
///
/// Reflect with a pad `>= dim`, and Edge or Reflect padding an empty dim,
/// are errors rather than the multi-bounce or undefined results other
/// implementations differ on.
pub fn pad_into(
    x: &[f32],
    shape: &[usize],
    begin: &[usize],
    end: &[usize],
    mode: PadMode,
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "pad";
    let rank = shape.len();
    check_rank(OP, rank)?;
    check_arg_len(OP, "begin", rank, begin.len())?;
    check_arg_len(OP, "end", rank, end.len())?;
    let mut oshape = [0usize; MAX_RANK];
    for d in 0..rank {
        oshape[d] = shape[d]
            .checked_add(begin[d])
            .and_then(|v| v.checked_add(end[d]))
            .ok_or(bad(OP, "padded dim overflows usize"))?;
        let padded = begin[d] > 0 || end[d] > 0;
        match mode {
            PadMode::Reflect
                if (begin[d] > 0 && begin[d] >= shape[d]) || (end[d] > 0 && end[d] >= shape[d]) =>
            {
                return Err(bad(OP, "reflect padding must be smaller than the dim"));
            }
            PadMode::Edge if padded && shape[d] == 0 => {
                return Err(bad(OP, "edge padding of an empty dim"));
            }
            _ => {}
        }
    }
    let oshape = &oshape[..rank];
    check_len(OP, "x", x.len(), shape)?;
    check_len(OP, "out", out.len(), oshape)?;
    if out.is_empty() {
        return Ok(());
    }
    let fill = match mode {
        PadMode::Constant(v) => v,
        _ => 0.0,
    };
    if rank == 0 {
        out[0] = x[0];
        return Ok(());
    }
    let istride = strides(shape);
    let last = rank - 1;
    let (len, dim, b) = (oshape[last], shape[last], begin[last]);
    let mut counter = [0usize; MAX_RANK];
    for row in out.chunks_exact_mut(len) {
        // The input row this output row reads, if it reads one.
        let mut src = Some(0usize);
        for d in 0..last {
            let i = counter[d] as isize - begin[d] as isize;
            src = match (src, pad_source(mode, i, shape[d])) {
                (Some(s), Some(j)) => Some(s + j * istride[d]),
                _ => None,
            };
        }
        match src {
            None => row.fill(fill),
            Some(s) => {
                let input = &x[s..s + dim];
                row[b..b + dim].copy_from_slice(input);
                for (o, v) in row[..b].iter_mut().enumerate() {
                    *v = pad_source(mode, o as isize - b as isize, dim).map_or(fill, |j| input[j]);
                }
                for (o, v) in row[b + dim..].iter_mut().enumerate() {
                    *v = pad_source(mode, (dim + o) as isize, dim).map_or(fill, |j| input[j]);
                }
            }
        }
        for d in (0..last).rev() {
            counter[d] += 1;
            if counter[d] < oshape[d] {
                break;
            }
            counter[d] = 0;
        }
    }
    Ok(())
}

/// ONNX Gather with resolved indices: `out` (of `shape[..axis] ++
/// [indices.len()] ++ shape[axis + 1..]`) takes, at each position along
/// `axis`, the input slice `indices[j]`. Negative ONNX indices are resolved
/// by the caller, which knows whether they are constants; here an index
/// `>= shape[axis]` is an error, checked before anything is written.
pub fn gather_into(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    indices: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    gather_with(x, shape, axis, indices.len(), out, |j, dim| {
        let i = indices[j];
        if i >= dim {
            return Err(bad("gather", "index out of range"));
        }
        Ok(i)
    })
}

/// [`gather_into`] with indices computed at run time (token ids into an
/// embedding table): `indices` holds whole numbers as f32, a negative one
/// counting from the end of `axis` (ONNX Gather). Out holds `x` with
/// `indices.len()` on `axis`.
///
/// An index that is not a whole number or lies outside `[-dim, dim)` is an
/// error, not a clamp: a model fed an id past its vocabulary must say so.
pub fn gather_computed_into(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    indices: &[f32],
    out: &mut [f32],
) -> Result<(), OpError> {
    gather_with(x, shape, axis, indices.len(), out, |j, dim| {
        let d = dim as f64;
        let v = f64::from(indices[j]);
        // (No `fract` in core: a whole number survives the round trip.)
        if !(-d..d).contains(&v) || v as i64 as f64 != v {
            return Err(bad("gather", "an index is not a whole number inside [-dim, dim)"));
        }
        Ok(if v < 0.0 { (v + d) as usize } else { v as usize })
    })
}

/// The gathers' shared walk: `count` indices, the `j`-th resolved by
/// `index(j, dim)`. Every index is checked before anything is written.
fn gather_with(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    count: usize,
    out: &mut [f32],
    index: impl Fn(usize, usize) -> Result<usize, OpError>,
) -> Result<(), OpError> {
    const OP: &str = "gather";
    let rank = shape.len();
    check_rank(OP, rank)?;
    if axis >= rank {
        return Err(bad(OP, "axis out of range"));
    }
    check_len(OP, "x", x.len(), shape)?;
    let dim = shape[axis];
    for j in 0..count {
        index(j, dim)?;
    }
    let mut oshape = [0usize; MAX_RANK];
    oshape[..rank].copy_from_slice(shape);
    oshape[axis] = count;
    check_len(OP, "out", out.len(), &oshape[..rank])?;
    if out.is_empty() {
        return Ok(());
    }
    let inner = numel(OP, &shape[axis + 1..])?;
    let block = dim * inner;
    let out_block = count * inner;
    for (src, dst) in x.chunks_exact(block).zip(out.chunks_exact_mut(out_block)) {
        for (j, d) in dst.chunks_exact_mut(inner).enumerate() {
            let i = index(j, dim)?;
            d.copy_from_slice(&src[i * inner..(i + 1) * inner]);
        }
    }
    Ok(())
}
