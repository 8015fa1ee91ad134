//! Resize against a direct transcription of the ONNX reference
//! implementation (`onnx/reference/ops/op_resize.py`: 1-D interpolation
//! on an edge-padded axis, nearest neighbours found by sorting, applied
//! along W then H), the operator docs' examples, and every error.

use lsqr_kernels::resize::*;
use lsqr_kernels::OpError;
use proptest::prelude::*;

/// The reference's `_get_neighbor_idxes` + `_get_neighbor`: the `n`
/// indices nearest to `x` (ties to the smaller) on `data` padded with
/// `ceil(n / 2)` edge copies, as indices of the unpadded axis.
fn neighbors(x: f32, n: usize, len: usize) -> Vec<isize> {
    let pad = n.div_ceil(2) as isize;
    let xp = x as f64 + pad as f64;
    let mut idx: Vec<isize> = (0..len as isize + 2 * pad).collect();
    idx.sort_by(|&a, &b| {
        let (da, db) = ((xp - a as f64).abs(), (xp - b as f64).abs());
        da.partial_cmp(&db).unwrap().then(a.cmp(&b))
    });
    let mut idx: Vec<isize> = idx[..n].to_vec();
    idx.sort();
    idx.iter().map(|i| i - pad).collect()
}

fn coeffs(p: &ResizeParams, ratio: f32) -> Vec<f64> {
    let r = ratio as f64;
    match p.mode {
        ResizeMode::Nearest => {
            if ratio == 1.0 {
                return vec![0.0, 1.0];
            }
            let up = match p.nearest_mode {
                NearestMode::RoundPreferFloor => r > 0.5,
                NearestMode::RoundPreferCeil => r >= 0.5,
                NearestMode::Floor => false,
                NearestMode::Ceil => true,
            };
            if up {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        }
        ResizeMode::Linear => vec![1.0 - r, r],
        ResizeMode::Cubic => {
            let a = p.cubic_coeff_a as f64;
            let s = 1.0 - r;
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
                ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
            ]
        }
    }
}

/// `_interpolate_1d_with_x` (coordinates in f32, as onnxruntime; the
/// output-length-1 cases of pytorch_half_pixel and align_corners give 0).
fn interp_1d(data: &[f64], scale: f32, out_len: usize, x: usize, p: &ResizeParams) -> f64 {
    let len = data.len();
    let xf = x as f32;
    let x_ori: f32 = match p.coordinate_transform {
        CoordinateTransform::HalfPixel => (xf + 0.5) / scale - 0.5,
        CoordinateTransform::PytorchHalfPixel => {
            if out_len == 1 {
                0.0
            } else {
                (xf + 0.5) / scale - 0.5
            }
        }
        CoordinateTransform::AlignCorners => {
            if out_len == 1 {
                0.0
            } else {
                xf * (len - 1) as f32 / (out_len - 1) as f32
            }
        }
        CoordinateTransform::Asymmetric => xf / scale,
        CoordinateTransform::TfHalfPixelForNearest => (xf + 0.5) / scale,
    };
    let ratio = if x_ori.fract() == 0.0 { 1.0 } else { x_ori - x_ori.floor() };
    let mut c = coeffs(p, ratio);
    let idx = neighbors(x_ori, c.len(), len);
    if p.exclude_outside && p.mode == ResizeMode::Cubic {
        for (k, &i) in idx.iter().enumerate() {
            if i < 0 || i >= len as isize {
                c[k] = 0.0;
            }
        }
        let s: f64 = c.iter().sum();
        c.iter_mut().for_each(|v| *v /= s);
    }
    idx.iter().zip(&c).map(|(&i, &w)| w * data[i.clamp(0, len as isize - 1) as usize]).sum()
}

fn reference(x: &[f32], shape: &[usize], out_shape: &[usize], p: &ResizeParams) -> Vec<f32> {
    let r = shape.len();
    let (h, w, oh, ow) = (shape[r - 2], shape[r - 1], out_shape[r - 2], out_shape[r - 1]);
    let planes: usize = shape[..r - 2].iter().product();
    let mut out = vec![];
    for pl in 0..planes {
        let src = &x[pl * h * w..(pl + 1) * h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let col: Vec<f64> = (0..h)
                    .map(|y| {
                        let row: Vec<f64> =
                            src[y * w..(y + 1) * w].iter().map(|&v| v as f64).collect();
                        interp_1d(&row, p.scales[1], ow, ox, p)
                    })
                    .collect();
                out.push(interp_1d(&col, p.scales[0], oh, oy, p) as f32);
            }
        }
    }
    out
}

fn params(
    mode: ResizeMode,
    ct: CoordinateTransform,
    nm: NearestMode,
    scales: [f32; 2],
) -> ResizeParams {
    ResizeParams {
        mode,
        coordinate_transform: ct,
        nearest_mode: nm,
        scales,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
    }
}

const MODES: [ResizeMode; 3] = [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic];
const CTS: [CoordinateTransform; 5] = [
    CoordinateTransform::HalfPixel,
    CoordinateTransform::PytorchHalfPixel,
    CoordinateTransform::AlignCorners,
    CoordinateTransform::Asymmetric,
    CoordinateTransform::TfHalfPixelForNearest,
];
const NMS: [NearestMode; 4] = [
    NearestMode::RoundPreferFloor,
    NearestMode::RoundPreferCeil,
    NearestMode::Floor,
    NearestMode::Ceil,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn resize_matches_reference(
        lead in prop::collection::vec(0usize..3, 0..=2),
        (h, w) in (1usize..6, 1usize..6),
        sizes in prop_oneof![
            // `sizes` given: scale = out / in.
            (0usize..11, 0usize..11).prop_map(|(a, b)| (a, b, None)),
            // `scales` given: out = floor(in * scale).
            (0.3f32..3.5, 0.3f32..3.5).prop_map(|(a, b)| (0, 0, Some([a, b]))),
        ],
        (mode, ct, nm) in (0usize..3, 0usize..5, 0usize..4),
        exclude in any::<bool>(),
        a in prop_oneof![Just(-0.75f32), Just(-0.5f32)],
        seed in any::<u64>(),
    ) {
        let (oh, ow, scales) = match sizes {
            (oh, ow, None) => (oh, ow, [oh as f32 / h as f32, ow as f32 / w as f32]),
            (_, _, Some(s)) => ((h as f32 * s[0]) as usize, (w as f32 * s[1]) as usize, s),
        };
        // A zero scale (out 0 from sizes) is rejected: use 1 there, the
        // output is empty anyway.
        let scales = scales.map(|s| if s > 0.0 { s } else { 1.0 });
        let mut p = params(MODES[mode], CTS[ct], NMS[nm], scales);
        p.exclude_outside = exclude;
        p.cubic_coeff_a = a;
        let mut shape = lead.clone();
        shape.extend([h, w]);
        let mut out_shape = lead.clone();
        out_shape.extend([oh, ow]);
        let len: usize = shape.iter().product();
        let x: Vec<f32> = (0..len)
            .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9).wrapping_add(seed) % 199) as f32 / 8.0 - 12.0)
            .collect();
        let want = reference(&x, &shape, &out_shape, &p);
        let mut out = vec![f32::NAN; want.len()];
        resize_into(&x, &shape, &out_shape, &p, &mut out).unwrap();
        for (i, (&g, &r)) in out.iter().zip(&want).enumerate() {
            let tol = if p.mode == ResizeMode::Nearest { 0.0 } else { 1e-4 * (1.0 + r.abs()) };
            prop_assert!((g - r).abs() <= tol, "[{}] {} vs {} ({:?})", i, g, r, p);
        }
    }
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-3, "{got:?} vs {want:?}");
    }
}

#[test]
fn onnx_doc_examples() {
    use CoordinateTransform::*;
    use NearestMode::*;
    use ResizeMode::*;
    let x4 = [1.0f32, 2.0, 3.0, 4.0];
    // resize_upsample_scales_nearest: [2, 2] x scales [2, 3], half_pixel.
    let mut out = [0.0; 24];
    resize_into(
        &x4,
        &[1, 1, 2, 2],
        &[1, 1, 4, 6],
        &params(Nearest, HalfPixel, RoundPreferFloor, [2.0, 3.0]),
        &mut out,
    )
    .unwrap();
    let (a, b) = ([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 4.0, 4.0, 4.0]);
    assert_eq!(out.to_vec(), [a, a, b, b].concat());
    // resize_downsample_scales_nearest: [2, 4] x 0.6 -> [1, 2].
    let x8: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    let mut out = [0.0; 2];
    resize_into(
        &x8,
        &[1, 1, 2, 4],
        &[1, 1, 1, 2],
        &params(Nearest, HalfPixel, RoundPreferFloor, [0.6, 0.6]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, [1.0, 3.0]);
    // resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric and
    // resize_upsample_sizes_nearest_ceil_half_pixel: 4x4 -> 8x8.
    let x16: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    let rows = [0usize, 1, 1, 2, 2, 3, 3, 3];
    let want: Vec<f32> =
        rows.iter().flat_map(|&r| rows.iter().map(move |&c| (r * 4 + c + 1) as f32)).collect();
    let mut out = [0.0; 64];
    for (ct, nm) in [(Asymmetric, RoundPreferCeil), (HalfPixel, Ceil)] {
        resize_into(
            &x16,
            &[1, 1, 4, 4],
            &[1, 1, 8, 8],
            &params(Nearest, ct, nm, [2.0, 2.0]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.to_vec(), want, "{ct:?} {nm:?}");
    }
    // resize_upsample_scales_linear (half_pixel) and
    // resize_upsample_scales_linear_align_corners: [2, 2] x 2.
    let mut out = [0.0; 16];
    resize_into(
        &x4,
        &[1, 1, 2, 2],
        &[1, 1, 4, 4],
        &params(Linear, HalfPixel, RoundPreferFloor, [2.0, 2.0]),
        &mut out,
    )
    .unwrap();
    assert_close(
        &out,
        &[1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0],
    );
    resize_into(
        &x4,
        &[1, 1, 2, 2],
        &[1, 1, 4, 4],
        &params(Linear, AlignCorners, RoundPreferFloor, [2.0, 2.0]),
        &mut out,
    )
    .unwrap();
    assert_close(
        &out,
        &[
            1.0, 1.333_333, 1.666_667, 2.0, 1.666_667, 2.0, 2.333_333, 2.666_667, 2.333_333,
            2.666_667, 3.0, 3.333_333, 3.0, 3.333_333, 3.666_667, 4.0,
        ],
    );
}

#[test]
fn cubic_reproduces_constants_and_ramps() {
    // Keys' kernel sums to 1 (any a) and reproduces linear functions in
    // the interior (a = -0.5).
    let x: Vec<f32> = (0..36).map(|i| (i % 6) as f32).collect();
    let mut out = vec![0.0; 144];
    let p = params(
        ResizeMode::Cubic,
        CoordinateTransform::AlignCorners,
        NearestMode::Floor,
        [2.0, 2.0],
    );
    // Linear functions are reproduced only with a = -0.5 (Keys' choice).
    let keys = ResizeParams { cubic_coeff_a: -0.5, ..p };
    resize_into(&x, &[6, 6], &[12, 12], &keys, &mut out).unwrap();
    for oy in 0..12 {
        for ox in 3..9 {
            let want = ox as f32 * 5.0 / 11.0;
            assert!((out[oy * 12 + ox] - want).abs() < 1e-4, "{ox}: {}", out[oy * 12 + ox]);
        }
    }
    let ones = vec![3.0f32; 9];
    let mut out = vec![0.0; 25];
    for exclude in [false, true] {
        let p = ResizeParams { exclude_outside: exclude, ..p };
        resize_into(&ones, &[3, 3], &[5, 5], &p, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 3.0).abs() < 1e-5), "{out:?}");
    }
}

#[test]
fn resize_errors() {
    let bad = |r: Result<(), OpError>| matches!(r, Err(OpError::BadParameter { .. }));
    let len = |r: Result<(), OpError>| matches!(r, Err(OpError::LengthMismatch { .. }));
    let shape_err = |r: Result<(), OpError>| matches!(r, Err(OpError::ShapeMismatch { .. }));
    let p =
        params(ResizeMode::Linear, CoordinateTransform::HalfPixel, NearestMode::Floor, [2.0, 2.0]);
    let x = [0.0f32; 8];
    let mut out = [0.0; 32];
    // Another axis changes size; rank mismatch.
    assert!(shape_err(resize_into(&x, &[2, 2, 2], &[4, 2, 2], &p, &mut out[..16])));
    assert!(shape_err(resize_into(&x, &[2, 2, 2], &[2, 4, 4, 1], &p, &mut out)));
    // Rank < 2 and > 8.
    assert!(bad(resize_into(&x, &[8], &[8], &p, &mut out[..8])));
    let nine = [1usize; 9];
    assert!(bad(resize_into(&x[..1], &nine, &nine, &p, &mut out[..1])));
    // Scales.
    for s in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let q = ResizeParams { scales: [2.0, s], ..p };
        assert!(bad(resize_into(&x, &[2, 2, 2], &[2, 4, 4], &q, &mut out)));
    }
    let q = ResizeParams { mode: ResizeMode::Cubic, cubic_coeff_a: f32::NAN, ..p };
    assert!(bad(resize_into(&x, &[2, 2, 2], &[2, 4, 4], &q, &mut out)));
    // Lengths.
    assert!(len(resize_into(&x[..7], &[2, 2, 2], &[2, 4, 4], &p, &mut out)));
    assert!(len(resize_into(&x, &[2, 2, 2], &[2, 4, 4], &p, &mut out[..31])));
    // Empty input axis to a non-empty output.
    assert!(bad(resize_into(&[], &[1, 0, 2], &[1, 2, 2], &p, &mut out[..4])));
    // Empty to empty is fine.
    resize_into(&[], &[1, 0, 2], &[1, 0, 4], &p, &mut []).unwrap();
}
