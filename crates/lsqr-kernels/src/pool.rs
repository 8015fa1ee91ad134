//! ONNX MaxPool / AveragePool / GlobalMaxPool on NCHW, with the parts of
//! those operators the older [`crate::Pool2d`] leaves out: asymmetric
//! pads, dilation, `ceil_mode` and `count_include_pad`.
//!
//! Kept apart from [`crate::Pool2d`] rather than growing it, because that
//! type's public fields and its "padding <= kernel / 2" contract are
//! relied on; these operators follow ONNX's contract instead. Portable
//! code only, allocation-free.

use crate::shape::{check_len, numel};
use crate::OpError;

const OP_MAX: &str = "max_pool2d";
const OP_AVG: &str = "avg_pool2d";
const OP_GMAX: &str = "global_max_pool";

/// The attributes of an ONNX 2-D pooling node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window `[kh, kw]` (>= 1).
    pub kernel: [usize; 2],
    /// Step `[sh, sw]` (>= 1).
    pub stride: [usize; 2],
    /// Implicit padding: top, left, bottom, right. Each must be smaller
    /// than the dilated window on its axis (as onnxruntime requires), so
    /// the padding alone never makes up a whole window row or column.
    pub pads: [usize; 4],
    /// Spacing between taps `[dh, dw]` (>= 1).
    pub dilation: [usize; 2],
    /// Round the output size up instead of down; a last window that would
    /// start inside the end padding is dropped (ONNX's and PyTorch's rule).
    pub ceil_mode: bool,
    /// AveragePool: divide by the number of taps inside the padded input
    /// (padding counts as zeros) instead of by the taps on real input.
    pub count_include_pad: bool,
}

/// The checked geometry of one spatial axis.
#[derive(Clone, Copy, Debug)]
struct AxisGeom {
    size: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    pad_begin: usize,
}

impl AxisGeom {
    /// Taps `j` of output `o`'s window whose position lies in `[lo, hi)`
    /// (coordinates of the unpadded input, which may be negative), as
    /// `(first position, first j, end j)`.
    #[inline]
    fn taps(&self, o: usize, lo: isize, hi: isize) -> (isize, usize, usize) {
        let start = (o * self.s) as isize - self.pad_begin as isize;
        if self.d == 1 {
            // The same as below without its divisions (by 1): a division
            // per output and axis cost more than a small window's taps.
            let j0 = (lo - start).max(0);
            let j1 = (hi - start).clamp(0, self.k as isize);
            return (start, j0 as usize, j1.max(j0) as usize);
        }
        let d = self.d as isize;
        let j0 = if start >= lo { 0 } else { (lo - start + d - 1) / d };
        let j1 = if hi <= start { 0 } else { ((hi - start + d - 1) / d).min(self.k as isize) };
        (start, j0 as usize, (j1.max(j0)) as usize)
    }
}

impl Pool2dParams {
    /// The `[n, c, oh, ow]` output of pooling an NCHW `input`, after the
    /// checks the operators make, so a planner can size buffers up front.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4], OpError> {
        let [gh, gw] = self.geometry("pool2d", input)?;
        Ok([input[0], input[1], gh.out, gw.out])
    }

    fn geometry(&self, op: &'static str, input: [usize; 4]) -> Result<[AxisGeom; 2], OpError> {
        let bad = |reason| OpError::BadParameter { op, reason };
        numel(op, &input)?;
        let mut axes = [AxisGeom { size: 0, out: 0, k: 0, s: 0, d: 0, pad_begin: 0 }; 2];
        for (a, axis) in axes.iter_mut().enumerate() {
            let (size, k, s, d) = (input[2 + a], self.kernel[a], self.stride[a], self.dilation[a]);
            let (pb, pe) = (self.pads[a], self.pads[a + 2]);
            if k == 0 || s == 0 || d == 0 {
                return Err(bad("kernel, stride and dilation must be >= 1"));
            }
            if size == 0 {
                return Err(bad("empty spatial plane"));
            }
            // Everything below fits in isize, so window arithmetic can't overflow.
            const LIM: usize = isize::MAX as usize / 4;
            let span = (k - 1).checked_mul(d).and_then(|v| v.checked_add(1)).filter(|&v| v <= LIM);
            let padded = size.checked_add(pb).and_then(|v| v.checked_add(pe)).filter(|&v| v <= LIM);
            let (Some(span), Some(padded)) = (span, padded) else {
                return Err(bad("window or padded size overflows"));
            };
            if pb >= span || pe >= span {
                return Err(bad("pads must be smaller than the dilated kernel"));
            }
            if padded < span {
                return Err(bad("the dilated kernel is larger than the padded input"));
            }
            let mut out = if self.ceil_mode {
                (padded - span).div_ceil(s) + 1
            } else {
                (padded - span) / s + 1
            };
            if self.ceil_mode && (out - 1) * s >= size + pb {
                out -= 1;
            }
            *axis = AxisGeom { size, out, k, s, d, pad_begin: pb };
        }
        Ok(axes)
    }
}

/// The taps of one output: `(first row, first jy, end jy)` and the same
/// for columns ([`AxisGeom::taps`] on the unpadded input).
type WindowTaps = ((isize, usize, usize), (isize, usize, usize));

/// Validates buffers, then calls `window(plane, gh, gw, taps)` for every
/// output element of every `[h, w]` plane (a row's taps found once).
fn run(
    op: &'static str,
    x: &[f32],
    input: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
    window: impl Fn(&[f32], &AxisGeom, &AxisGeom, WindowTaps) -> f32,
) -> Result<(), OpError> {
    let [gh, gw] = p.geometry(op, input)?;
    check_len(op, "x", x.len(), &input)?;
    check_len(op, "out", out.len(), &[input[0], input[1], gh.out, gw.out])?;
    let (plane, oplane) = (gh.size * gw.size, gh.out * gw.out);
    if out.is_empty() {
        return Ok(());
    }
    for (src, dst) in x.chunks_exact(plane).zip(out.chunks_exact_mut(oplane)) {
        for (oy, row) in dst.chunks_exact_mut(gw.out).enumerate() {
            let rows = gh.taps(oy, 0, gh.size as isize);
            for (ox, o) in row.iter_mut().enumerate() {
                *o = window(src, &gh, &gw, (rows, gw.taps(ox, 0, gw.size as isize)));
            }
        }
    }
    Ok(())
}

/// ONNX MaxPool (the `Y` output) of NCHW `x` into `out` (of
/// [`Pool2dParams::output_shape`]). Padding is not a value, so it never
/// wins: a window of negatives over padding yields the largest negative.
/// NaN propagates. A window with no tap on the input (possible only with
/// a dilation larger than the input) yields `-inf`.
pub fn max_pool2d_ext_into(
    x: &[f32],
    input: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
) -> Result<(), OpError> {
    if input[3] <= MAX_ROW_BY_ROWS {
        return max_pool_by_rows(x, input, p, out);
    }
    run(OP_MAX, x, input, p, out, |src, gh, gw, ((y0, jy0, jy1), (x0, jx0, jx1))| {
        let mut m = f32::NEG_INFINITY;
        for jy in jy0..jy1 {
            let y = (y0 + (jy * gh.d) as isize) as usize;
            let row = &src[y * gw.size..(y + 1) * gw.size];
            for jx in jx0..jx1 {
                let v = row[(x0 + (jx * gw.d) as isize) as usize];
                if v > m || v.is_nan() {
                    m = v;
                }
            }
        }
        m
    })
}

/// Input rows up to this wide are max-pooled in two passes through a stack
/// buffer of this many f32s ([`max_pool_by_rows`]).
const MAX_ROW_BY_ROWS: usize = 1024;

/// NaN wins; otherwise the larger.
#[inline]
fn max_or_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// [`max_pool2d_ext_into`] in two passes per output row: the window's
/// input rows reduced element by element into one row (which vectorizes),
/// then each output's taps along it. Per output and tap, the first pass
/// costs a compare on a whole vector; the window-by-window loop cost 5 ns
/// an output on PP-OCR cls's 2 x 2 pools. The max is the same set's max in
/// another order: equal, except that of a tie of +0 and -0 either may be
/// returned.
fn max_pool_by_rows(
    x: &[f32],
    input: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
) -> Result<(), OpError> {
    let [gh, gw] = p.geometry(OP_MAX, input)?;
    check_len(OP_MAX, "x", x.len(), &input)?;
    check_len(OP_MAX, "out", out.len(), &[input[0], input[1], gh.out, gw.out])?;
    if out.is_empty() {
        return Ok(());
    }
    let mut buf = [f32::NEG_INFINITY; MAX_ROW_BY_ROWS];
    let rows_max = &mut buf[..gw.size];
    let (plane, oplane) = (gh.size * gw.size, gh.out * gw.out);
    for (src, dst) in x.chunks_exact(plane).zip(out.chunks_exact_mut(oplane)) {
        for (oy, row) in dst.chunks_exact_mut(gw.out).enumerate() {
            let (y0, jy0, jy1) = gh.taps(oy, 0, gh.size as isize);
            rows_max.fill(f32::NEG_INFINITY);
            for jy in jy0..jy1 {
                let y = (y0 + (jy * gh.d) as isize) as usize;
                let input_row = &src[y * gw.size..(y + 1) * gw.size];
                for (m, &v) in rows_max.iter_mut().zip(input_row) {
                    *m = max_or_nan(*m, v);
                }
            }
            let span = (gw.k - 1) * gw.d + 1;
            for (ox, o) in row.iter_mut().enumerate() {
                let start = (ox * gw.s) as isize - gw.pad_begin as isize;
                *o = if start >= 0 && start as usize + span <= gw.size {
                    // A window inside the row: its taps without clamping.
                    let window = &rows_max[start as usize..start as usize + span];
                    window.iter().step_by(gw.d).copied().fold(f32::NEG_INFINITY, max_or_nan)
                } else {
                    let (x0, jx0, jx1) = gw.taps(ox, 0, gw.size as isize);
                    let taps = (jx0..jx1).map(|jx| rows_max[(x0 + (jx * gw.d) as isize) as usize]);
                    taps.fold(f32::NEG_INFINITY, max_or_nan)
                };
            }
        }
    }
    Ok(())
}

/// ONNX AveragePool of NCHW `x` into `out`. With `count_include_pad` the
/// divisor is the kernel's size, also for a last window that `ceil_mode`
/// lets run past the end padding (what onnxruntime 1.20 computes: on
/// `[1, 2, 3, 4]`, kernel 3, stride 2, pads 1, ceil mode, the last window
/// is `4 / 3`); without it, only taps on real input count. A window with
/// no tap on the input (only possible with a large dilation) yields 0.
pub fn avg_pool2d_ext_into(
    x: &[f32],
    input: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
) -> Result<(), OpError> {
    let include = p.count_include_pad;
    run(OP_AVG, x, input, p, out, |src, gh, gw, ((y0, jy0, jy1), (x0, jx0, jx1))| {
        let mut sum = 0.0f32;
        for jy in jy0..jy1 {
            let y = (y0 + (jy * gh.d) as isize) as usize;
            let row = &src[y * gw.size..(y + 1) * gw.size];
            for jx in jx0..jx1 {
                sum += row[(x0 + (jx * gw.d) as isize) as usize];
            }
        }
        let count = if include { gh.k * gw.k } else { (jy1 - jy0) * (jx1 - jx0) };
        if count == 0 {
            0.0
        } else {
            sum / count as f32
        }
    })
}

/// ONNX GlobalMaxPool of NCHW `x` into `out` (`[n, c, 1, 1]`). NaN
/// propagates; an empty plane is an error (its max is undefined); of a tie
/// between +0 and -0 either may be returned.
pub fn global_max_pool2d_into(
    x: &[f32],
    input: [usize; 4],
    out: &mut [f32],
) -> Result<(), OpError> {
    let n_c = input[0].checked_mul(input[1]);
    let plane = input[2].checked_mul(input[3]);
    let (Some(n_c), Some(plane)) = (n_c, plane) else {
        return Err(OpError::BadParameter {
            op: OP_GMAX,
            reason: "shape's element count overflows usize",
        });
    };
    global_max_pool_into(x, n_c, plane, out)
}

/// [`global_max_pool2d_into`] on `n_c` planes of `plane` elements each, for
/// GlobalMaxPool on any number of trailing spatial axes (1-D, 3-D):
/// the runtime passes their product as `plane`.
pub fn global_max_pool_into(
    x: &[f32],
    n_c: usize,
    plane: usize,
    out: &mut [f32],
) -> Result<(), OpError> {
    if plane == 0 {
        return Err(OpError::BadParameter { op: OP_GMAX, reason: "empty spatial plane" });
    }
    check_len(OP_GMAX, "x", x.len(), &[n_c, plane])?;
    check_len(OP_GMAX, "out", out.len(), &[n_c])?;
    let pick = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    for (src, o) in x.chunks_exact(plane).zip(out.iter_mut()) {
        // Eight running maxima (lane `i % 8`), which vectorize: one chain
        // of dependent compares took 0.5 ms on Magika's 512 x 508 plane.
        // A NaN stays in its lane, so it still wins; only which of +0 and
        // -0 a tie between them gives may differ from one chain's.
        let mut lanes = [f32::NEG_INFINITY; 8];
        let chunks = src.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = pick(*m, v);
            }
        }
        *o = lanes.into_iter().chain(rest.iter().copied()).fold(f32::NEG_INFINITY, pick);
    }
    Ok(())
}
