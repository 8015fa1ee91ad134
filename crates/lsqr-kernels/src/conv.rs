//! Convolutions on packed weights, NCHW (and NCL for 1-D).
//!
//! The weight is `[out_channels, in_channels / groups, kh, kw]` (PyTorch's
//! layout), packed; each output channel's filter is one row of its row
//! view, decoded into caller scratch when it is used, so no f32 copy of
//! the whole weight is ever made. Every entry point has a `_into` form
//! that writes into caller buffers and allocates nothing (the micro
//! runtime's contract); [`conv2d_scratch_len`] says how much scratch it
//! needs.
//!
//! Two fast paths, both tested against the direct [`reference`]:
//! - depthwise (one input channel per output channel, `in / groups == 1`):
//!   each filter (`kh kw` values) is decoded and slid over its plane by
//!   whole output rows (`Kernels::depthwise_plane`); an im2col of one
//!   channel would copy every pixel `kh kw` times for a handful of FLOPs;
//! - everything else: per image and group, the blocked GEMM of
//!   `crate::gemm` with the group's filters as `A` (decoded 72 × 256 at a
//!   time) and im2col patches as `B`, built straight into the GEMM's
//!   packed panel layout 256 pixels at a time, so the scratch is bounded
//!   by the filter size (`256 · taps` plus fixed blocks), whatever the
//!   image size.

use alloc::vec;
use alloc::vec::Vec;

use crate::packed::PackedWeight;
use crate::{Kernels, OpError};

const OP2: &str = "conv2d";
const OP1: &str = "conv1d";

/// Stride, symmetric zero padding, dilation and groups of a 2-D
/// convolution, as `[along h, along w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output positions.
    pub stride: [usize; 2],
    /// Zeros added on both sides.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Channel groups: `in_channels` and `out_channels` are both split into
    /// this many groups (`groups == in_channels`: depthwise).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

/// The 1-D counterpart of [`Conv2dParams`] on `[n, c, length]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dParams {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on both sides.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv1dParams {
    fn default() -> Self {
        Self { stride: 1, padding: 0, dilation: 1, groups: 1 }
    }
}

impl Conv1dParams {
    fn as_2d(&self) -> Conv2dParams {
        Conv2dParams {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// The checked geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    groups: usize,
}

impl Geometry {
    fn new(
        op: &'static str,
        weight_shape: [usize; 4],
        input_shape: [usize; 4],
        p: &Conv2dParams,
    ) -> Result<Self, OpError> {
        let bad = |reason| OpError::BadParameter { op, reason };
        let [n, cin, h, w] = input_shape;
        let [cout, cin_g, kh, kw] = weight_shape;
        if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
            return Err(bad("groups, stride and dilation must be at least 1"));
        }
        if kh == 0 || kw == 0 {
            return Err(bad("the kernel must be at least 1x1"));
        }
        if cin % p.groups != 0 || cout % p.groups != 0 || cin / p.groups != cin_g {
            return Err(OpError::ShapeMismatch {
                op,
                left: input_shape.to_vec(),
                right: weight_shape.to_vec(),
            });
        }
        let out_len = |len: usize, pad: usize, dil: usize, k: usize, stride: usize| {
            let padded = len.checked_add(pad.checked_mul(2)?)?;
            let span = dil.checked_mul(k - 1)?.checked_add(1)?;
            padded.checked_sub(span).map(|d| d / stride + 1)
        };
        let oh = out_len(h, p.padding[0], p.dilation[0], kh, p.stride[0]);
        let ow = out_len(w, p.padding[1], p.dilation[1], kw, p.stride[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(bad("the dilated kernel is larger than the padded input"));
        };
        let geometry = Self { n, cin, h, w, cout, kh, kw, oh, ow, groups: p.groups };
        // Every buffer length used later must fit in usize.
        [n, cin, h, w]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|_| [n, cout, oh, ow].iter().try_fold(1usize, |a, &d| a.checked_mul(d)))
            .ok_or(bad("element count overflows"))?;
        Ok(geometry)
    }

    fn input_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }

    fn output_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.oh, self.ow]
    }

    fn output_len(&self) -> usize {
        self.n * self.cout * self.oh * self.ow
    }

    /// Elements of one output channel's filter.
    fn filter_len(&self) -> usize {
        self.cin / self.groups * self.kh * self.kw
    }

    /// Whether each output channel reads a single input channel.
    fn depthwise(&self) -> bool {
        self.cin / self.groups == 1
    }

    /// Scratch of the path this geometry takes (see [`conv2d_scratch_len`]).
    fn scratch_len(&self) -> usize {
        if self.depthwise() {
            self.filter_len()
        } else {
            crate::gemm::scratch_len(self.cout / self.groups, self.filter_len(), self.oh * self.ow)
        }
    }
}

/// The `[out, in / groups, kh, kw]` shape of a conv2d weight.
fn weight_shape_2d(weight: &PackedWeight<'_>) -> Result<[usize; 4], OpError> {
    match *weight.shape() {
        [o, i, kh, kw] => Ok([o, i, kh, kw]),
        _ => Err(OpError::BadParameter {
            op: OP2,
            reason: "the weight must have rank 4 [out, in / groups, kh, kw]",
        }),
    }
}

/// A conv1d weight `[out, in / groups, k]` seen as conv2d `[out, in / groups, 1, k]`.
fn weight_shape_1d(weight: &PackedWeight<'_>) -> Result<[usize; 4], OpError> {
    match *weight.shape() {
        [o, i, k] => Ok([o, i, 1, k]),
        _ => Err(OpError::BadParameter {
            op: OP1,
            reason: "the weight must have rank 3 [out, in / groups, k]",
        }),
    }
}

fn check_len(
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

/// The NCHW output shape of [`conv2d`] on an input of `input_shape`.
pub fn conv2d_output_shape(
    weight: &PackedWeight<'_>,
    input_shape: [usize; 4],
    params: &Conv2dParams,
) -> Result<[usize; 4], OpError> {
    Geometry::new(OP2, weight_shape_2d(weight)?, input_shape, params).map(|g| g.output_shape())
}

/// The `f32` scratch [`conv2d_into`] needs for this shape: one filter for
/// a depthwise convolution, else the GEMM's im2col patches of 256 pixels
/// (all `in / groups · kh · kw` taps), one decoded filter block and one
/// output block: bounded whatever the image size.
pub fn conv2d_scratch_len(
    weight: &PackedWeight<'_>,
    input_shape: [usize; 4],
    params: &Conv2dParams,
) -> Result<usize, OpError> {
    Geometry::new(OP2, weight_shape_2d(weight)?, input_shape, params).map(|g| g.scratch_len())
}

/// 2-D convolution (cross-correlation, as in PyTorch) of NCHW `input`
/// with a packed weight, plus an optional per-output-channel `bias`.
/// Returns the output and its shape.
pub fn conv2d(
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 4],
    params: &Conv2dParams,
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    conv2d_with(Kernels::active(), weight, bias, input, input_shape, params)
}

/// [`conv2d`] into caller buffers: `output` must hold exactly
/// [`conv2d_output_shape`]'s element count, `scratch` at least
/// [`conv2d_scratch_len`] values. Allocates nothing.
pub fn conv2d_into(
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 4],
    params: &Conv2dParams,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let weight_shape = weight_shape_2d(weight)?;
    conv_into(OP2, weight, weight_shape, bias, input, input_shape, params, output, scratch)
}

#[allow(clippy::too_many_arguments)]
fn conv_into(
    op: &'static str,
    weight: &PackedWeight<'_>,
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 4],
    params: &Conv2dParams,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let run = Run { kern: Kernels::active(), op, parallel: false };
    conv_with(&run, weight, weight_shape, bias, input, input_shape, params, output, scratch)
}

/// How to run a convolution: the code path, the operator's name (for
/// errors), and whether it may split over rayon's threads (only the
/// allocating forms, with the `parallel` feature: `_into` has one
/// caller scratch).
struct Run<'k> {
    kern: &'k Kernels,
    op: &'static str,
    #[cfg_attr(not(feature = "parallel"), allow(dead_code))]
    parallel: bool,
}

/// Validates, then runs the depthwise or GEMM path.
#[allow(clippy::too_many_arguments)]
fn conv_with(
    run: &Run<'_>,
    weight: &PackedWeight<'_>,
    weight_shape: [usize; 4],
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 4],
    params: &Conv2dParams,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let op = run.op;
    let mut g = Geometry::new(op, weight_shape, input_shape, params)?;
    // A convolution along H alone (`w == kw == 1`, no W padding: Magika's
    // `[n, c, 512, 1]`) is the same as one along W with the axes swapped:
    // the input, weight and output memory are identical, and so is the
    // order of the taps (one of `ky`, `kx` is always 0). Along W the
    // im2col packing copies runs of pixels instead of one pixel at a time.
    let swapped;
    let params = if g.w == 1 && g.kw == 1 && params.padding[1] == 0 && g.h > 1 {
        g = Geometry { h: g.w, w: g.h, kh: g.kw, kw: g.kh, oh: g.ow, ow: g.oh, ..g };
        let flip = |[a, b]: [usize; 2]| [b, a];
        swapped = Conv2dParams {
            stride: flip(params.stride),
            padding: flip(params.padding),
            dilation: flip(params.dilation),
            ..*params
        };
        &swapped
    } else {
        params
    };
    check_len(op, "input", g.input_len(), input.len())?;
    check_len(op, "output", g.output_len(), output.len())?;
    if let Some(b) = bias {
        check_len(op, "bias", g.cout, b.len())?;
    }
    let needed = g.scratch_len();
    if scratch.len() < needed {
        return Err(OpError::LengthMismatch {
            op,
            what: "scratch",
            expected: needed,
            actual: scratch.len(),
        });
    }
    let scratch = &mut scratch[..needed];
    if g.output_len() == 0 {
        return Ok(());
    }
    if g.depthwise() {
        depthwise(run, &g, weight, bias, input, params, output, scratch)
    } else {
        im2col_gemm(run, &g, weight, bias, input, params, output, scratch)
    }
}

/// The arguments of one depthwise channel plane.
pub(crate) struct DwPlane<'a> {
    /// The input plane, `h * w`.
    pub input: &'a [f32],
    pub h: usize,
    pub w: usize,
    /// The decoded filter, `kh * kw`.
    pub filter: &'a [f32],
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub oh: usize,
    pub ow: usize,
    pub bias: f32,
}

/// A depthwise plane kernel: writes the `oh * ow` output plane.
pub(crate) type DwFn = fn(&DwPlane<'_>, &mut [f32]);

/// The output positions `o` in `o0..o0 + count` whose input index
/// `o s + off - pad` falls inside `0..len`, as a range (empty: `(o0, o0)`).
#[inline(always)]
fn valid_range(
    o0: usize,
    count: usize,
    s: usize,
    off: usize,
    pad: usize,
    len: usize,
) -> (usize, usize) {
    let first = if pad > off { (pad - off).div_ceil(s) } else { 0 };
    let end = match (len + pad).checked_sub(off + 1) {
        Some(last) => last / s + 1,
        None => 0,
    };
    let (lo, hi) = (first.max(o0), end.min(o0 + count));
    if lo < hi {
        (lo, hi)
    } else {
        (o0, o0)
    }
}

/// One depthwise plane: the output starts as the bias, then each filter
/// tap adds `tap * input` along the output rows it reaches (contiguous
/// for stride 1, so the loop vectorises). The valid output rows and
/// columns of a tap are computed once per tap (divisions), not per row.
/// Each output still sums its taps in `(ky, kx)` order. Shared by the
/// portable and the AVX2 build.
#[inline(always)]
pub(crate) fn depthwise_plane_impl(p: &DwPlane<'_>, out: &mut [f32]) {
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    out.fill(p.bias);
    // Rows of at least 16 outputs (so most are in eight-wide chunks) by
    // output rows; narrower ones (10 x 10 planes) tap by tap, below.
    match sw {
        1 if p.ow >= 16 => return depthwise_rows::<1>(p, out),
        2 if p.ow >= 16 => return depthwise_rows::<2>(p, out),
        _ => {}
    }
    for ky in 0..p.kh {
        let (oy0, oy1) = valid_range(0, p.oh, sh, ky * dh, ph, p.h);
        if oy0 == oy1 {
            continue;
        }
        for kx in 0..p.kw {
            let (ox0, ox1) = valid_range(0, p.ow, sw, kx * dw, pw, p.w);
            if ox0 == ox1 {
                continue;
            }
            let tap = p.filter[ky * p.kw + kx];
            let x0 = ox0 * sw + kx * dw - pw;
            for oy in oy0..oy1 {
                let y = oy * sh + ky * dh - ph;
                let irow = &p.input[y * p.w..(y + 1) * p.w];
                let dst = &mut out[oy * p.ow + ox0..oy * p.ow + ox1];
                if sw == 1 {
                    // Eight at a time, so the AVX2 build does one vector per
                    // chunk (a plain loop is unrolled by 32 and leaves short
                    // rows, 56 wide in a typical CNN, to a 4-wide tail).
                    let src = &irow[x0..x0 + dst.len()];
                    let mut d8 = dst.chunks_exact_mut(8);
                    let mut s8 = src.chunks_exact(8);
                    for (d, s) in (&mut d8).zip(&mut s8) {
                        for k in 0..8 {
                            d[k] += tap * s[k];
                        }
                    }
                    for (o, &v) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
                        *o += tap * v;
                    }
                } else {
                    for (o, &v) in dst.iter_mut().zip(irow[x0..].iter().step_by(sw)) {
                        *o += tap * v;
                    }
                }
            }
        }
    }
}

/// [`depthwise_plane_impl`] for stride `SW` (1 or 2) along W, output
/// row by output row: eight outputs are held in registers while every tap
/// of a filter row adds into them (taking tap by tap over whole rows, a
/// 5x5 filter on 20-wide planes spent its time in loop overhead and
/// 4-wide tails, and stride 2 was a scalar loop). Each output still sums
/// its taps in `(ky, kx)` order, a multiply then an add, skipping taps
/// that fall in the padding: the same values as tap by tap.
#[inline(always)]
fn depthwise_rows<const SW: usize>(p: &DwPlane<'_>, out: &mut [f32]) {
    let [sh, _] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let (w, ow, kw) = (p.w, p.ow, p.kw);
    // Outputs whose every tap along W is inside the row: `ox SW >= pw`
    // and `ox SW + (kw - 1) dw - pw < w`.
    let x_lo = pw.div_ceil(SW).min(ow);
    let x_hi = match (w + pw).checked_sub((kw - 1) * dw + 1) {
        Some(last) => (last / SW + 1).min(ow).max(x_lo),
        None => x_lo,
    };
    for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
        for ky in 0..p.kh {
            let Some(y) = (oy * sh + ky * dh).checked_sub(ph).filter(|&y| y < p.h) else {
                continue;
            };
            let irow = &p.input[y * w..(y + 1) * w];
            let taps = &p.filter[ky * kw..(ky + 1) * kw];
            for (ox, o) in orow[..x_lo].iter_mut().enumerate() {
                dw_edge::<SW>(taps, irow, ox, dw, pw, o);
            }
            for (ox, o) in orow[x_hi..].iter_mut().enumerate() {
                dw_edge::<SW>(taps, irow, x_hi + ox, dw, pw, o);
            }
            let mut ox = x_lo;
            // Interior outputs read inside the row. Four or two chunks
            // of eight at a time, then one.
            while ox + 32 <= x_hi {
                dw_chunks::<SW, 4>(taps, irow, &mut orow[ox..ox + 32], ox, dw, pw);
                ox += 32;
            }
            while ox + 16 <= x_hi {
                dw_chunks::<SW, 2>(taps, irow, &mut orow[ox..ox + 16], ox, dw, pw);
                ox += 16;
            }
            while ox + 8 <= x_hi {
                let dst: &mut [f32; 8] = (&mut orow[ox..ox + 8]).try_into().expect("8 outputs");
                let mut acc = *dst;
                for (kx, &t) in taps.iter().enumerate() {
                    let s = ox * SW + kx * dw - pw;
                    let src = &irow[s..s + 7 * SW + 1];
                    for k in 0..8 {
                        acc[k] += t * src[k * SW];
                    }
                }
                *dst = acc;
                ox += 8;
            }
            for (i, o) in orow[ox..x_hi].iter_mut().enumerate() {
                let ox = ox + i;
                for (kx, &t) in taps.iter().enumerate() {
                    *o += t * irow[ox * SW + kx * dw - pw];
                }
            }
        }
    }
}

/// `C` chunks of eight interior outputs `dst` from column `ox` of a
/// depthwise row: each output's taps added in order (`C` independent
/// chains of dependent adds keep the adder busy).
#[inline(always)]
fn dw_chunks<const SW: usize, const C: usize>(
    taps: &[f32],
    irow: &[f32],
    dst: &mut [f32],
    ox: usize,
    dw: usize,
    pw: usize,
) {
    let mut acc = [[0.0f32; 8]; C];
    for (c, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&dst[8 * c..8 * c + 8]);
    }
    for (kx, &t) in taps.iter().enumerate() {
        let s = ox * SW + kx * dw - pw;
        let src = &irow[s..s + (8 * C - 1) * SW + 1];
        for (c, a) in acc.iter_mut().enumerate() {
            for k in 0..8 {
                a[k] += t * src[(8 * c + k) * SW];
            }
        }
    }
    for (c, a) in acc.iter().enumerate() {
        dst[8 * c..8 * c + 8].copy_from_slice(a);
    }
}

/// One output `o` at column `ox` near an edge of a depthwise row: the
/// filter row's taps that fall inside `irow`, in order.
#[inline(always)]
fn dw_edge<const SW: usize>(
    taps: &[f32],
    irow: &[f32],
    ox: usize,
    dw: usize,
    pw: usize,
    o: &mut f32,
) {
    for (kx, &t) in taps.iter().enumerate() {
        if let Some(&v) = (ox * SW + kx * dw).checked_sub(pw).and_then(|i| irow.get(i)) {
            *o += t * v;
        }
    }
}

/// The portable depthwise plane kernel.
pub(crate) fn depthwise_portable(p: &DwPlane<'_>, out: &mut [f32]) {
    depthwise_plane_impl(p, out)
}

/// Depthwise path: per output channel, decode its filter into `filter`
/// and run the plane kernel on each image. With `run.parallel` (and the
/// feature), the channels are split over rayon's threads, each decoding
/// into a filter of its own.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    run: &Run<'_>,
    g: &Geometry,
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    p: &Conv2dParams,
    output: &mut [f32],
    filter: &mut [f32],
) -> Result<(), OpError> {
    #[cfg(feature = "parallel")]
    if run.parallel && g.output_len().saturating_mul(g.filter_len()) >= PAR_MIN_MACS {
        use rayon::prelude::*;
        let oplane = g.oh * g.ow;
        let planes = g.n * g.cout;
        let per_task = planes.div_ceil(rayon::current_num_threads().max(1));
        return output.par_chunks_mut(per_task * oplane).enumerate().try_for_each(|(t, out)| {
            let mut filter = vec![0.0; g.filter_len()];
            depthwise_planes(run.kern, g, weight, bias, input, p, t * per_task, out, &mut filter)
        });
    }
    depthwise_planes(run.kern, g, weight, bias, input, p, 0, output, filter)
}

/// Decoded depthwise filters held on the stack at once (4 KiB).
const DW_DECODED: usize = 1024;

/// Output planes `first..first + out.len() / (oh ow)` (plane `i` is
/// image `i / cout`, channel `i % cout`) of a depthwise convolution.
#[allow(clippy::too_many_arguments)]
fn depthwise_planes(
    kern: &Kernels,
    g: &Geometry,
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    p: &Conv2dParams,
    first: usize,
    out: &mut [f32],
    filter: &mut [f32],
) -> Result<(), OpError> {
    let cout_g = g.cout / g.groups;
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    let flen = filter.len();
    // Filters are decoded DW_DECODED values at a time (a call to the
    // decoder per 5x5 filter cost 40 ns, a quarter of a 2 x 96 plane's
    // work); a filter larger than that, one at a time into `filter`.
    let mut stack = [0.0f32; DW_DECODED];
    let batch: &mut [f32] = if flen <= DW_DECODED { &mut stack } else { filter };
    let per_batch = (batch.len() / flen.max(1)).min(g.cout);
    let mut decoded = 0..0;
    for (i, out) in out.chunks_exact_mut(oplane).enumerate() {
        let (n, oc) = ((first + i) / g.cout, (first + i) % g.cout);
        if !decoded.contains(&oc) {
            let count = per_batch.min(g.cout - oc);
            weight.decode_block(kern, oc, 0, flen, &mut batch[..count * flen])?;
            decoded = oc..oc + count;
        }
        let filter = &batch[(oc - decoded.start) * flen..][..flen];
        let ic = oc / cout_g;
        let args = DwPlane {
            input: &input[(n * g.cin + ic) * plane..][..plane],
            h: g.h,
            w: g.w,
            filter,
            kh: g.kh,
            kw: g.kw,
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            oh: g.oh,
            ow: g.ow,
            bias: bias.map_or(0.0, |b| b[oc]),
        };
        (kern.depthwise_plane)(&args, out);
    }
    Ok(())
}

/// Below this many multiply-adds a convolution stays on one thread.
#[cfg(feature = "parallel")]
const PAR_MIN_MACS: usize = 1 << 22;

/// GEMM path: for each image and group, `out[oc, pixel] = bias[oc] +
/// Σ_tap filter[oc, tap] · patch[tap, pixel]`. With `run.parallel` (and
/// the feature), a group's output channels are split over rayon's threads
/// (each with its own scratch, each building the patches it multiplies).
#[allow(clippy::too_many_arguments)]
fn im2col_gemm(
    run: &Run<'_>,
    g: &Geometry,
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    p: &Conv2dParams,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let kern = run.kern;
    let (cin_g, cout_g) = (g.cin / g.groups, g.cout / g.groups);
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    for n in 0..g.n {
        for group in 0..g.groups {
            let planes = &input[(n * g.cin + group * cin_g) * plane..][..cin_g * plane];
            let out = &mut output[(n * g.cout + group * cout_g) * oplane..][..cout_g * oplane];
            for (i, row) in out.chunks_exact_mut(oplane).enumerate() {
                row.fill(bias.map_or(0.0, |b| b[group * cout_g + i]));
            }
            let pack = |pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [f32]| {
                im2col_pack(g, p, planes, pc, kc, jc, nc, nr, dst)
            };
            let row0 = group * cout_g;
            #[cfg(feature = "parallel")]
            if run.parallel
                && cout_g >= 12
                && out.len().saturating_mul(g.filter_len()) >= PAR_MIN_MACS
            {
                use rayon::prelude::*;
                let threads = rayon::current_num_threads().max(1);
                let rows = cout_g.div_ceil(threads).next_multiple_of(6);
                out.par_chunks_mut(rows * oplane).enumerate().try_for_each(|(t, out)| {
                    let m = out.len() / oplane;
                    let mut scratch =
                        vec![0.0; crate::gemm::scratch_len(m, g.filter_len(), oplane)];
                    let c = crate::gemm::Out { data: out, rs: oplane, cs: 1 };
                    crate::gemm::gemm(
                        kern,
                        weight,
                        row0 + t * rows,
                        m,
                        oplane,
                        &pack,
                        c,
                        &mut scratch,
                    )
                })?;
                continue;
            }
            let c = crate::gemm::Out { data: out, rs: oplane, cs: 1 };
            crate::gemm::gemm(kern, weight, row0, cout_g, oplane, &pack, c, scratch)?;
        }
    }
    Ok(())
}

/// Packs im2col patches straight into the GEMM's panel layout: tap `t`
/// (`(ic, ky, kx)`) of pixel `j` goes to
/// `dst[(j / nr) nr kc + (t - pc) nr + j % nr]`, for taps `pc..pc + kc`
/// and pixels `jc..jc + nc`, zeros for padding and past pixel `nc`. Each
/// run of pixels on one output row and one panel is a (strided) copy.
/// Panel by panel, so the stores are sequential (tap by tap across the
/// panels, `nr kc` floats apart, they all fell in the same L1 sets); the
/// pixels and taps are walked with counters (`nr` and the kernel size
/// are not constants: `/` was a hardware division), and short runs are
/// copied inline rather than through `memcpy`.
#[allow(clippy::too_many_arguments)]
fn im2col_pack(
    g: &Geometry,
    p: &Conv2dParams,
    planes: &[f32],
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    nr: usize,
    dst: &mut [f32],
) {
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let khw = g.kh * g.kw;
    let panels = nc.div_ceil(nr);
    let (t_ic, t_ky, t_kx) = (pc / khw, pc % khw / g.kw, pc % g.kw);
    if khw == 1 && p.stride == [1, 1] && p.padding == [0, 0] {
        // A 1x1 convolution without stride or padding: pixel `j` reads
        // input pixel `j` of each channel, so a panel's row is one run of
        // the plane, across output rows (which the general loop below
        // copies a row at a time: a panel of 16 spans two or more rows of
        // a 10- or 20-pixel-wide image).
        let plane_len = g.h * g.w;
        for (panel, pdst) in dst.chunks_exact_mut(nr * kc).take(panels).enumerate() {
            let j0 = jc + panel * nr;
            let jn = nr.min(nc - panel * nr);
            for (t, tdst) in pdst.chunks_exact_mut(nr).enumerate() {
                let plane = &planes[(pc + t) * plane_len..][..plane_len];
                copy_panel_row(&mut tdst[..jn], &plane[j0..j0 + jn]);
                zero_short(&mut tdst[jn..]);
            }
        }
        return;
    }
    // The first pixel of the current panel.
    let (mut py, mut px) = (jc / g.ow, jc % g.ow);
    for (panel, pdst) in dst.chunks_exact_mut(nr * kc).take(panels).enumerate() {
        let jn = nr.min(nc - panel * nr);
        // The common case: a full panel inside one output row (stride 1).
        // Which of its kernel taps read the input at every pixel, and
        // where in a plane their contiguous run starts, depends on the tap
        // `(ky, kx)` and not on the input channel: found once per panel,
        // not per tap of every channel.
        let mut full = [usize::MAX; FULL_TAPS];
        let simple = jn == nr && px + nr <= g.ow && khw <= FULL_TAPS;
        if simple {
            for ky in 0..g.kh {
                let (oy_lo, oy_hi) = valid_range_fast(g.oh, sh, ky * dh, ph, g.h);
                if !(oy_lo..oy_hi).contains(&py) {
                    continue;
                }
                let y = py * sh + ky * dh - ph;
                for kx in 0..g.kw {
                    let (ox_lo, ox_hi) = valid_range_fast(g.ow, sw, kx * dw, pw, g.w);
                    if px >= ox_lo && px + nr <= ox_hi {
                        full[ky * g.kw + kx] = y * g.w + px * sw + kx * dw - pw;
                    }
                }
            }
        }
        if simple && full[..khw].iter().all(|&f| f != usize::MAX) {
            // Every tap reads one input row (an interior panel): the same
            // values as below with a channel's plane found once per
            // channel and no tap counters (the per-tap bookkeeping, not
            // the 64-byte copies, was most of im2col's time).
            let start = (t_ic, pc % khw);
            pack_interior_panel(planes, g.h * g.w, start, &full[..khw], pdst, (nr, sw));
        } else {
            pack_panel_taps(
                g,
                p,
                planes,
                (t_ic, t_ky, t_kx),
                &full,
                simple,
                (py, px),
                jn,
                pdst,
                nr,
            );
        }
        px += nr;
        while px >= g.ow {
            px -= g.ow;
            py += 1;
        }
    }
}

/// One panel of [`im2col_pack`] whose every tap reads `nr` values of one
/// input row, `sw` apart (contiguous at stride 1): tap `k` of channel `ic`
/// from `planes[ic plane + full[k]..]`, from tap `k0` of channel `ic0` on,
/// a panel row per tap.
fn pack_interior_panel(
    planes: &[f32],
    plane: usize,
    (ic0, k0): (usize, usize),
    full: &[usize],
    pdst: &mut [f32],
    (nr, sw): (usize, usize),
) {
    let mut rows = pdst.chunks_exact_mut(nr);
    let (mut ic, mut k0) = (ic0, k0);
    while rows.len() > 0 {
        let channel = &planes[ic * plane..][..plane];
        // `full` first: `zip` takes from its first side before its second.
        for (&first, row) in full[k0..].iter().zip(rows.by_ref()) {
            gather_row(row, &channel[first..], sw);
        }
        k0 = 0;
        ic += 1;
    }
}

/// One panel of [`im2col_pack`], tap by tap from tap `(ic, ky, kx)`: a
/// tap's run on one input row where `simple` found one (`full`), else its valid
/// pixels of the panel's `jn` (from output pixel `(py, px)`), zeros
/// elsewhere.
#[allow(clippy::too_many_arguments)]
fn pack_panel_taps(
    g: &Geometry,
    p: &Conv2dParams,
    planes: &[f32],
    (t_ic, t_ky, t_kx): (usize, usize, usize),
    full: &[usize; FULL_TAPS],
    simple: bool,
    (py, px): (usize, usize),
    jn: usize,
    pdst: &mut [f32],
    nr: usize,
) {
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    let (mut ic, mut ky, mut kx) = (t_ic, t_ky, t_kx);
    for tdst in pdst.chunks_exact_mut(nr) {
        let plane = &planes[ic * g.h * g.w..][..g.h * g.w];
        let first = if simple { full[ky * g.kw + kx] } else { usize::MAX };
        if first != usize::MAX {
            gather_row(tdst, &plane[first..], sw);
        } else {
            // This tap's valid output rows and columns.
            let (oy_lo, oy_hi) = valid_range_fast(g.oh, sh, ky * dh, ph, g.h);
            let (ox_lo, ox_hi) = valid_range_fast(g.ow, sw, kx * dw, pw, g.w);
            let (mut oy, mut ox) = (py, px);
            let mut jj = 0;
            while jj < jn {
                let run = (g.ow - ox).min(jn - jj);
                let out = &mut tdst[jj..jj + run];
                let (x0, x1) = (ox_lo.max(ox), ox_hi.min(ox + run));
                if oy < oy_lo || oy >= oy_hi || x0 >= x1 {
                    zero_short(out);
                } else {
                    let y = oy * sh + ky * dh - ph;
                    let row = &plane[y * g.w..(y + 1) * g.w];
                    let (a, b) = (x0 - ox, x1 - ox);
                    zero_short(&mut out[..a]);
                    zero_short(&mut out[b..]);
                    let first = x0 * sw + kx * dw - pw;
                    gather_row(&mut out[a..b], &row[first..], sw);
                }
                jj += run;
                ox += run;
                if ox == g.ow {
                    ox = 0;
                    oy += 1;
                }
            }
            zero_short(&mut tdst[jn..]);
        }
        kx += 1;
        if kx == g.kw {
            kx = 0;
            ky += 1;
            if ky == g.kh {
                ky = 0;
                ic += 1;
            }
        }
    }
}

/// Kernel taps (`kh kw`) up to which [`im2col_pack`] finds each tap's
/// run once per panel.
const FULL_TAPS: usize = 64;

/// `dst[i] = src[i sw]` for every `i < dst.len()`: a panel row's pixels of
/// one input row (contiguous at stride 1: [`copy_panel_row`]). Panics if
/// `src` is too short.
#[inline(always)]
fn gather_row(dst: &mut [f32], src: &[f32], sw: usize) {
    let Some(last) = dst.len().checked_sub(1) else { return };
    if sw == 1 {
        return copy_panel_row(dst, &src[..dst.len()]);
    }
    for (d, &v) in dst.iter_mut().zip(src[..last * sw + 1].iter().step_by(sw)) {
        *d = v;
    }
}

/// One panel row of [`im2col_pack`]'s common case: `nr` contiguous
/// values; at 16 (the AVX tiles' width) a fixed-size copy, which compiles
/// to vector moves instead of a call or a loop.
#[inline(always)]
fn copy_panel_row(dst: &mut [f32], src: &[f32]) {
    match (<&mut [f32; 16]>::try_from(&mut *dst), <&[f32; 16]>::try_from(src)) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => copy_short(dst, src),
    }
}

/// [`valid_range`] over all `count` outputs, without a division when the
/// stride is 1 (the common case, now called per tap and panel).
#[inline(always)]
fn valid_range_fast(count: usize, s: usize, off: usize, pad: usize, len: usize) -> (usize, usize) {
    if s != 1 {
        return valid_range(0, count, s, off, pad, len);
    }
    let first = pad.saturating_sub(off);
    let end = (len + pad).saturating_sub(off).min(count);
    if first < end {
        (first, end)
    } else {
        (0, 0)
    }
}

/// `dst.copy_from_slice(src)` for the short runs of [`im2col_pack`]
/// (at most a panel wide), four at a time inline instead of a call.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d4 = dst.chunks_exact_mut(4);
    let mut s4 = src.chunks_exact(4);
    for (d, s) in (&mut d4).zip(&mut s4) {
        let v: [f32; 4] = [s[0], s[1], s[2], s[3]];
        d.copy_from_slice(&v);
    }
    for (o, &v) in d4.into_remainder().iter_mut().zip(s4.remainder()) {
        *o = v;
    }
}

/// `dst.fill(0.0)` for short runs, inline.
#[inline(always)]
fn zero_short(dst: &mut [f32]) {
    let mut d4 = dst.chunks_exact_mut(4);
    for d in &mut d4 {
        d.copy_from_slice(&[0.0; 4]);
    }
    for o in d4.into_remainder() {
        *o = 0.0;
    }
}

/// The direct [`reference`] with its own buffers: the test oracle of
/// both fast paths (`lsqr_kernels::paths::conv2d_reference`).
pub(crate) fn reference_conv2d(
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 4],
    params: &Conv2dParams,
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    let g = Geometry::new(OP2, weight_shape_2d(weight)?, input_shape, params)?;
    check_len(OP2, "input", g.input_len(), input.len())?;
    if let Some(b) = bias {
        check_len(OP2, "bias", g.cout, b.len())?;
    }
    let mut output = vec![0.0; g.output_len()];
    let mut filter = vec![0.0; g.filter_len()];
    reference(&g, weight, bias, input, params, &mut output, &mut filter)?;
    Ok((output, g.output_shape()))
}

/// [`conv2d`] on a given code path (tests compare paths); splits over
/// threads as [`conv2d`] does.
pub(crate) fn conv2d_with(
    kern: &Kernels,
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 4],
    params: &Conv2dParams,
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    let weight_shape = weight_shape_2d(weight)?;
    let g = Geometry::new(OP2, weight_shape, input_shape, params)?;
    let mut output = vec![0.0; g.output_len()];
    let mut scratch = vec![0.0; g.scratch_len()];
    let run = Run { kern, op: OP2, parallel: true };
    conv_with(
        &run,
        weight,
        weight_shape,
        bias,
        input,
        input_shape,
        params,
        &mut output,
        &mut scratch,
    )?;
    Ok((output, g.output_shape()))
}

/// Direct convolution, one decoded filter at a time: the oracle the fast
/// paths are tested against.
fn reference(
    g: &Geometry,
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    p: &Conv2dParams,
    output: &mut [f32],
    filter: &mut [f32],
) -> Result<(), OpError> {
    let (cin_g, cout_g) = (g.cin / g.groups, g.cout / g.groups);
    for oc in 0..g.cout {
        weight.decode_row(oc, filter)?;
        let first_ic = oc / cout_g.max(1) * cin_g;
        let b = bias.map_or(0.0, |b| b[oc]);
        for n in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = 0.0f32;
                    for ic in 0..cin_g {
                        let plane =
                            &input[((n * g.cin + first_ic + ic) * g.h) * g.w..][..g.h * g.w];
                        for ky in 0..g.kh {
                            let Some(y) =
                                (oy * p.stride[0] + ky * p.dilation[0]).checked_sub(p.padding[0])
                            else {
                                continue;
                            };
                            if y >= g.h {
                                continue;
                            }
                            for kx in 0..g.kw {
                                let Some(x) = (ox * p.stride[1] + kx * p.dilation[1])
                                    .checked_sub(p.padding[1])
                                else {
                                    continue;
                                };
                                if x < g.w {
                                    acc +=
                                        plane[y * g.w + x] * filter[(ic * g.kh + ky) * g.kw + kx];
                                }
                            }
                        }
                    }
                    output[((n * g.cout + oc) * g.oh + oy) * g.ow + ox] = acc + b;
                }
            }
        }
    }
    Ok(())
}

/// The `[n, c, length]` output shape of [`conv1d`].
pub fn conv1d_output_shape(
    weight: &PackedWeight<'_>,
    input_shape: [usize; 3],
    params: &Conv1dParams,
) -> Result<[usize; 3], OpError> {
    let [n, c, l] = input_shape;
    let g = Geometry::new(OP1, weight_shape_1d(weight)?, [n, c, 1, l], &params.as_2d())?;
    let [n, c, _, l] = g.output_shape();
    Ok([n, c, l])
}

/// The `f32` scratch [`conv1d_into`] needs (as [`conv2d_scratch_len`]).
pub fn conv1d_scratch_len(
    weight: &PackedWeight<'_>,
    input_shape: [usize; 3],
    params: &Conv1dParams,
) -> Result<usize, OpError> {
    let [n, c, l] = input_shape;
    Geometry::new(OP1, weight_shape_1d(weight)?, [n, c, 1, l], &params.as_2d())
        .map(|g| g.scratch_len())
}

/// 1-D convolution of `[n, c, length]` with a packed `[out, in / groups, k]`
/// weight. Returns the output and its shape.
pub fn conv1d(
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 3],
    params: &Conv1dParams,
) -> Result<(Vec<f32>, [usize; 3]), OpError> {
    let shape = conv1d_output_shape(weight, input_shape, params)?;
    let [n, c, l] = input_shape;
    let mut output = vec![0.0; shape.iter().product()];
    let mut scratch = vec![0.0; conv1d_scratch_len(weight, input_shape, params)?];
    let run = Run { kern: Kernels::active(), op: OP1, parallel: true };
    let weight_shape = weight_shape_1d(weight)?;
    let p = params.as_2d();
    conv_with(
        &run,
        weight,
        weight_shape,
        bias,
        input,
        [n, c, 1, l],
        &p,
        &mut output,
        &mut scratch,
    )?;
    Ok((output, shape))
}

/// [`conv1d`] into caller buffers; allocates nothing.
pub fn conv1d_into(
    weight: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    input: &[f32],
    input_shape: [usize; 3],
    params: &Conv1dParams,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let [n, c, l] = input_shape;
    let weight_shape = weight_shape_1d(weight)?;
    conv_into(
        OP1,
        weight,
        weight_shape,
        bias,
        input,
        [n, c, 1, l],
        &params.as_2d(),
        output,
        scratch,
    )
}
