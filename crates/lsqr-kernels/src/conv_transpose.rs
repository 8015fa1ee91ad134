//! ONNX ConvTranspose in 2-D on NCHW, on packed (or plain f32) weights.
//!
//! The weight is `[cin, cout / groups, kh, kw]` (ONNX's and PyTorch's
//! layout for the transposed convolution), so its row view has one row
//! per input channel. Per group, each input pixel's contribution to all
//! `cout / groups · kh · kw` output taps is one column of
//! `Wᵀ [cout/g · kh · kw, cin/g] · x [cin/g, h · w]`: a dense GEMM (the
//! active path's matmul kernel), then a col2im scatter-add of those
//! columns into the output. This is how the convolution is run as a GEMM
//! without ever touching the zeros a "dilate the input, then convolve"
//! formulation would multiply.
//!
//! The weight is decoded once per call (transposed, for the GEMM's row
//! operand) into caller scratch; [`conv_transpose2d_scratch_len`] says how
//! much. Nothing is allocated.

use crate::packed::PackedWeight;
use crate::{Kernels, OpError};

const OP: &str = "conv_transpose2d";

/// The attributes of an ONNX 2-D ConvTranspose node (with `pads`
/// resolved: `auto_pad` and `output_shape` are the runtime's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    /// Step between the output positions of consecutive input pixels.
    pub stride: [usize; 2],
    /// Output cells cropped: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Extra output cells at the bottom and right (which no input reaches
    /// past the last full stride: bias only). Must be smaller than the
    /// stride or the dilation on its axis, as in PyTorch, so it can only
    /// resolve the ambiguity of a strided convolution's input size.
    pub output_padding: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        Self { stride: [1, 1], pads: [0; 4], dilation: [1, 1], output_padding: [0, 0], groups: 1 }
    }
}

/// The checked geometry of one transposed convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout_g: usize,
    groups: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(
        input: [usize; 4],
        weight: &[usize],
        p: &ConvTranspose2dParams,
    ) -> Result<Self, OpError> {
        let bad = |reason| OpError::BadParameter { op: OP, reason };
        let &[wcin, cout_g, kh, kw] = weight else {
            return Err(bad("the weight must have rank 4 [cin, cout / groups, kh, kw]"));
        };
        let [n, cin, h, w] = input;
        if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
            return Err(bad("groups, stride and dilation must be at least 1"));
        }
        if kh == 0 || kw == 0 {
            return Err(bad("the kernel must be at least 1x1"));
        }
        if h == 0 || w == 0 {
            return Err(bad("empty spatial plane"));
        }
        if wcin != cin || cin % p.groups != 0 {
            return Err(OpError::ShapeMismatch {
                op: OP,
                left: input.to_vec(),
                right: weight.to_vec(),
            });
        }
        let mut out = [0usize; 2];
        for a in 0..2 {
            let (len, k) = ([h, w][a], [kh, kw][a]);
            let (s, d, op) = (p.stride[a], p.dilation[a], p.output_padding[a]);
            if op >= s && op >= d {
                return Err(bad("output_padding must be smaller than the stride or the dilation"));
            }
            // In i128, so no input overflows. The uncropped extent must fit
            // comfortably in isize too: col2im computes tap offsets and
            // output positions before cropping.
            const LIM: i128 = (isize::MAX / 4) as i128;
            let span = (k as i128 - 1) * d as i128 + 1;
            let extent = s as i128 * (len as i128 - 1) + op as i128 + span;
            if span > LIM || extent > LIM {
                return Err(bad("output size overflows"));
            }
            let size = extent - p.pads[a] as i128 - p.pads[a + 2] as i128;
            if size <= 0 {
                return Err(bad("the pads crop the whole output"));
            }
            out[a] = size as usize;
        }
        let cout = cout_g.checked_mul(p.groups).ok_or(bad("element count overflows"))?;
        let g = Self { n, cin, h, w, cout_g, groups: p.groups, kh, kw, oh: out[0], ow: out[1] };
        // Every buffer length used later must fit in usize (and isize).
        [n, cin, h, w]
            .iter()
            .chain(&[cout, out[0], out[1], kh, kw])
            .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
            .filter(|&v| v <= isize::MAX as usize)
            .ok_or(bad("element count overflows"))?;
        Ok(g)
    }

    /// Rows of the GEMM: output taps of one group.
    fn m(&self) -> usize {
        self.cout_g * self.kh * self.kw
    }

    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }

    fn scratch_len(&self) -> usize {
        // One decoded weight row, the transposed weight, one group's columns.
        self.m() + self.cin * self.m() + self.m() * self.h * self.w
    }

    fn output_shape(&self) -> [usize; 4] {
        [self.n, self.cout_g * self.groups, self.oh, self.ow]
    }
}

/// The NCHW output shape of [`conv_transpose2d_into`]:
/// `stride (in - 1) + output_padding + (k - 1) dilation + 1 - pad_begin -
/// pad_end` per spatial axis, after every check the operator makes.
pub fn conv_transpose2d_output_shape(
    input: [usize; 4],
    weight: &[usize],
    p: &ConvTranspose2dParams,
) -> Result<[usize; 4], OpError> {
    Geom::new(input, weight, p).map(|g| g.output_shape())
}

/// The `f32` scratch [`conv_transpose2d_into`] needs: one decoded weight
/// row, the whole weight transposed (`cin · cout/g · kh · kw`) and one
/// group's GEMM columns (`cout/g · kh · kw · h · w`).
pub fn conv_transpose2d_scratch_len(
    w: &PackedWeight<'_>,
    input: [usize; 4],
    p: &ConvTranspose2dParams,
) -> Result<usize, OpError> {
    Geom::new(input, w.shape(), p).map(|g| g.scratch_len())
}

/// ONNX ConvTranspose of NCHW `x` (of `input`) with weight `w` plus an
/// optional per-output-channel `bias`, into `out` (exactly
/// [`conv_transpose2d_output_shape`]'s element count), using `scratch`
/// (at least [`conv_transpose2d_scratch_len`] values). Allocates nothing.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_into(
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    input: [usize; 4],
    p: &ConvTranspose2dParams,
    out: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let g = Geom::new(input, w.shape(), p)?;
    let len = |what, expected: usize, actual: usize| {
        if expected == actual {
            Ok(())
        } else {
            Err(OpError::LengthMismatch { op: OP, what, expected, actual })
        }
    };
    let [n, cout, oh, ow] = g.output_shape();
    len("x", g.n * g.cin * g.h * g.w, x.len())?;
    len("out", n * cout * oh * ow, out.len())?;
    if let Some(b) = bias {
        len("bias", cout, b.len())?;
    }
    let needed = g.scratch_len();
    if scratch.len() < needed {
        return Err(OpError::LengthMismatch {
            op: OP,
            what: "scratch",
            expected: needed,
            actual: scratch.len(),
        });
    }
    if out.is_empty() {
        return Ok(());
    }
    let (m, cin_g, hw, ohw) = (g.m(), g.cin_g(), g.h * g.w, oh * ow);
    // Bias first: every output cell gets it once, reached by inputs or not.
    for (plane, o) in out.chunks_exact_mut(ohw).enumerate() {
        o.fill(bias.map_or(0.0, |b| b[plane % cout]));
    }
    if m == 0 || cin_g == 0 {
        return Ok(());
    }
    let (row, rest) = scratch.split_at_mut(m);
    let (wt, rest) = rest.split_at_mut(g.cin * m);
    let col = &mut rest[..m * hw];
    // wt holds, per group, Wᵀ as [m, cin_g].
    for c in 0..g.cin {
        w.decode_row(c, row)?;
        let (grp, cl) = (c / cin_g, c % cin_g);
        let wt_g = &mut wt[grp * m * cin_g..(grp + 1) * m * cin_g];
        for (j, &v) in row.iter().enumerate() {
            wt_g[j * cin_g + cl] = v;
        }
    }
    let matmul = Kernels::active().matmul;
    for img in 0..g.n {
        for grp in 0..g.groups {
            let xg = &x[(img * g.cin + grp * cin_g) * hw..][..cin_g * hw];
            matmul(&wt[grp * m * cin_g..][..m * cin_g], xg, col, m, cin_g, hw);
            let og = &mut out[(img * cout + grp * g.cout_g) * ohw..][..g.cout_g * ohw];
            col2im(&g, p, col, og);
        }
    }
    Ok(())
}

/// The input positions `i` along one axis whose output `i s - pad + t`
/// (`t` the tap's offset) lies in `[0, out)`, as a range, and that
/// output's value at the first of them.
#[inline]
fn valid_range(len: usize, s: usize, pad: usize, t: usize, out: usize) -> (usize, usize, usize) {
    // o = i s + t - pad >= 0  <=>  i >= ceil((pad - t) / s).
    let lo = if t >= pad { 0 } else { (pad - t).div_ceil(s) };
    // o < out  <=>  i s < out + pad - t.
    let hi = if out + pad <= t { 0 } else { (out + pad - t).div_ceil(s).min(len) };
    let hi = hi.max(lo);
    (lo, hi, (lo * s + t).wrapping_sub(pad))
}

/// Adds the columns `col [cout_g · kh · kw, h · w]` of one group into its
/// output planes `og [cout_g, oh, ow]`.
fn col2im(g: &Geom, p: &ConvTranspose2dParams, col: &[f32], og: &mut [f32]) {
    let (ohw, hw) = (g.oh * g.ow, g.h * g.w);
    let (sh, sw) = (p.stride[0], p.stride[1]);
    for (r, src) in col.chunks_exact(hw).enumerate() {
        let (co, ky, kx) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let plane = &mut og[co * ohw..(co + 1) * ohw];
        let (y0, y1, oy0) = valid_range(g.h, sh, p.pads[0], ky * p.dilation[0], g.oh);
        let (x0, x1, ox0) = valid_range(g.w, sw, p.pads[1], kx * p.dilation[1], g.ow);
        if x0 >= x1 {
            continue;
        }
        for (iy, oy) in (y0..y1).zip((oy0..).step_by(sh)) {
            let srow = &src[iy * g.w + x0..iy * g.w + x1];
            let orow = &mut plane[oy * g.ow..(oy + 1) * g.ow];
            for (&v, o) in srow.iter().zip(orow[ox0..].iter_mut().step_by(sw)) {
                *o += v;
            }
        }
    }
}
