//! ONNX Resize (opsets 11 to 19) on the last two axes of a tensor.
//!
//! Coordinates follow onnxruntime and the ONNX reference implementation
//! (`onnx/reference/ops/op_resize.py`) in `f32`, as onnxruntime computes
//! them, so nearest-neighbour ties land on the same source pixel. The two
//! axes are interpolated separably (weights of H times weights of W), the
//! same sum as the reference's recursive 1-D interpolation.
//!
//! Only H and W may change: every upsampler of the CNNs the runtime
//! targets (U-Net, FPN, YOLO necks) resizes spatial axes only, and keeping
//! the leading axes fixed makes the operator a loop over planes.

use crate::layout::MAX_RANK;
use crate::shape::check_len;
use crate::OpError;

const OP: &str = "resize";

/// How output values are computed from the source pixels around them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// The nearest source pixel, rounded as [`NearestMode`] says.
    Nearest,
    /// Bilinear, source coordinates clamped to the image.
    Linear,
    /// Bicubic (Keys' kernel with `cubic_coeff_a`) on 4 x 4 pixels, edge
    /// pixels repeated outside the image.
    Cubic,
}

/// How an output coordinate maps to a source coordinate (ONNX
/// `coordinate_transformation_mode`; `tf_crop_and_resize` and
/// `half_pixel_symmetric` are not supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinateTransform {
    /// `(x + 0.5) / scale - 0.5`.
    HalfPixel,
    /// As `HalfPixel`, but 0 when the output length is 1.
    PytorchHalfPixel,
    /// `x (in - 1) / (out - 1)`, 0 when the output length is 1.
    AlignCorners,
    /// `x / scale`.
    Asymmetric,
    /// `(x + 0.5) / scale` (opset 11 only).
    TfHalfPixelForNearest,
}

/// How [`ResizeMode::Nearest`] rounds a fractional source coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round half down.
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
}

/// The attributes of an ONNX Resize node, resolved by the runtime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResizeParams {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Output-to-source coordinate mapping.
    pub coordinate_transform: CoordinateTransform,
    /// Rounding of `Nearest` (ignored by the other modes).
    pub nearest_mode: NearestMode,
    /// `[scale_h, scale_w]` as ONNX defines them: the `scales` input when
    /// given, else `out / in` from `sizes`. They are not recomputed from
    /// the shapes because with given scales ONNX's output length is
    /// `floor(in * scale)`, and the coordinates use the scale, not the
    /// ratio of lengths.
    pub scales: [f32; 2],
    /// Keys' `a` for `Cubic` (ONNX default -0.75).
    pub cubic_coeff_a: f32,
    /// `Cubic`: give source pixels outside the image weight 0 and
    /// renormalise the rest, instead of repeating the edge.
    pub exclude_outside: bool,
}

/// Source taps of one output coordinate along one axis: up to 4 indices
/// (already clamped into the axis) and their weights.
#[derive(Clone, Copy, Debug)]
struct Taps {
    n: usize,
    idx: [usize; 4],
    w: [f32; 4],
}

/// The per-axis constants [`taps`] needs.
#[derive(Clone, Copy, Debug)]
struct AxisMap {
    in_len: usize,
    out_len: usize,
    scale: f32,
}

fn source_coord(ct: CoordinateTransform, a: &AxisMap, x: usize) -> f32 {
    let x = x as f32;
    match ct {
        CoordinateTransform::HalfPixel => (x + 0.5) / a.scale - 0.5,
        CoordinateTransform::PytorchHalfPixel if a.out_len > 1 => (x + 0.5) / a.scale - 0.5,
        CoordinateTransform::PytorchHalfPixel => 0.0,
        CoordinateTransform::AlignCorners if a.out_len > 1 => {
            x * (a.in_len - 1) as f32 / (a.out_len - 1) as f32
        }
        CoordinateTransform::AlignCorners => 0.0,
        CoordinateTransform::Asymmetric => x / a.scale,
        CoordinateTransform::TfHalfPixelForNearest => (x + 0.5) / a.scale,
    }
}

/// Clamps a (possibly negative or too large) source index into the axis:
/// the reference's edge padding.
#[inline]
fn clamp_index(i: f32, len: usize) -> usize {
    if i <= 0.0 {
        0
    } else if i >= (len - 1) as f32 {
        len - 1
    } else {
        i as usize
    }
}

/// Keys' cubic convolution weights of the 4 taps `floor - 1 ..= floor + 2`
/// for fractional part `r` (the reference's `_cubic_coeffs`).
fn cubic_weights(r: f32, a: f32) -> [f32; 4] {
    let s = 1.0 - r;
    [
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
    ]
}

fn taps(p: &ResizeParams, a: &AxisMap, x: usize) -> Taps {
    let c = source_coord(p.coordinate_transform, a, x);
    let mut t = Taps { n: 1, idx: [0; 4], w: [1.0, 0.0, 0.0, 0.0] };
    match p.mode {
        ResizeMode::Nearest => {
            let f = libm::floorf(c);
            let r = c - f;
            let up = match p.nearest_mode {
                _ if r == 0.0 => false,
                NearestMode::RoundPreferFloor => r > 0.5,
                NearestMode::RoundPreferCeil => r >= 0.5,
                NearestMode::Floor => false,
                NearestMode::Ceil => true,
            };
            t.idx[0] = clamp_index(if up { f + 1.0 } else { f }, a.in_len);
        }
        ResizeMode::Linear => {
            let c = c.clamp(0.0, (a.in_len - 1) as f32);
            let f = libm::floorf(c);
            let i0 = f as usize;
            let r = c - f;
            t.n = 2;
            t.idx = [i0, (i0 + 1).min(a.in_len - 1), 0, 0];
            t.w = [1.0 - r, r, 0.0, 0.0];
        }
        ResizeMode::Cubic => {
            let f = libm::floorf(c);
            let mut w = cubic_weights(c - f, p.cubic_coeff_a);
            if p.exclude_outside {
                let mut sum = 0.0f32;
                for (k, wk) in w.iter_mut().enumerate() {
                    let i = f - 1.0 + k as f32;
                    if i < 0.0 || i >= a.in_len as f32 {
                        *wk = 0.0;
                    }
                    sum += *wk;
                }
                for wk in &mut w {
                    *wk /= sum;
                }
            }
            t.n = 4;
            for k in 0..4 {
                t.idx[k] = clamp_index(f - 1.0 + k as f32, a.in_len);
            }
            t.w = w;
        }
    }
    t
}

/// ONNX Resize of `x` (of `shape`, rank 2 to 8) into `out` (of
/// `out_shape`): only the last two axes may differ. Resizing an empty
/// H or W axis to a non-empty one is an error (there is nothing to
/// sample), as are non-positive or non-finite scales.
pub fn resize_into(
    x: &[f32],
    shape: &[usize],
    out_shape: &[usize],
    params: &ResizeParams,
    out: &mut [f32],
) -> Result<(), OpError> {
    let bad = |reason| OpError::BadParameter { op: OP, reason };
    let rank = shape.len();
    if rank > MAX_RANK {
        return Err(bad("at most 8 dims are supported"));
    }
    if rank < 2 {
        return Err(bad("the input needs at least the two axes H and W"));
    }
    if out_shape.len() != rank || shape[..rank - 2] != out_shape[..rank - 2] {
        return Err(OpError::ShapeMismatch {
            op: OP,
            left: shape.to_vec(),
            right: out_shape.to_vec(),
        });
    }
    if params.scales.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(bad("scales must be finite and > 0"));
    }
    if params.mode == ResizeMode::Cubic && !params.cubic_coeff_a.is_finite() {
        return Err(bad("cubic_coeff_a must be finite"));
    }
    check_len(OP, "x", x.len(), shape)?;
    check_len(OP, "out", out.len(), out_shape)?;
    if out.is_empty() {
        return Ok(());
    }
    let (h, w) = (shape[rank - 2], shape[rank - 1]);
    let (oh, ow) = (out_shape[rank - 2], out_shape[rank - 1]);
    if h == 0 || w == 0 {
        return Err(bad("cannot resize an empty axis to a non-empty one"));
    }
    let ay = AxisMap { in_len: h, out_len: oh, scale: params.scales[0] };
    let ax = AxisMap { in_len: w, out_len: ow, scale: params.scales[1] };
    // The taps are the same for every plane: they are computed once per
    // block of `CHUNK` x `CHUNK` outputs (on the stack: no allocation),
    // then each plane's part of that block is filled. Each output is the
    // same sum as computed pixel by pixel.
    const CHUNK: usize = 64;
    let one = Taps { n: 1, idx: [0; 4], w: [1.0, 0.0, 0.0, 0.0] };
    let (mut tys, mut txs) = ([one; CHUNK], [one; CHUNK]);
    for oy0 in (0..oh).step_by(CHUNK) {
        let tys = &mut tys[..CHUNK.min(oh - oy0)];
        for (k, t) in tys.iter_mut().enumerate() {
            *t = taps(params, &ay, oy0 + k);
        }
        let tys = &*tys;
        for ox0 in (0..ow).step_by(CHUNK) {
            let txs = &mut txs[..CHUNK.min(ow - ox0)];
            for (k, t) in txs.iter_mut().enumerate() {
                *t = taps(params, &ax, ox0 + k);
            }
            let txs = &*txs;
            let nearest_x = txs.iter().all(|t| t.n == 1);
            for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
                for (k, ty) in tys.iter().enumerate() {
                    let row = &mut dst[(oy0 + k) * ow + ox0..][..txs.len()];
                    if ty.n == 1 && nearest_x {
                        let line = &src[ty.idx[0] * w..(ty.idx[0] + 1) * w];
                        for (o, tx) in row.iter_mut().zip(txs) {
                            *o = line[tx.idx[0]];
                        }
                        continue;
                    }
                    for (o, tx) in row.iter_mut().zip(txs) {
                        let mut acc = 0.0f32;
                        for ky in 0..ty.n {
                            let line = &src[ty.idx[ky] * w..(ty.idx[ky] + 1) * w];
                            let mut inner = 0.0f32;
                            for kx in 0..tx.n {
                                inner += tx.w[kx] * line[tx.idx[kx]];
                            }
                            acc += ty.w[ky] * inner;
                        }
                        *o = if ty.n == 1 && tx.n == 1 {
                            src[ty.idx[0] * w + tx.idx[0]]
                        } else {
                            acc
                        };
                    }
                }
            }
        }
    }
    Ok(())
}
