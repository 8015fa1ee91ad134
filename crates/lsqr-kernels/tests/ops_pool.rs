//! ONNX pooling against a direct per-tap reference, the operator docs'
//! examples, and every error.

use lsqr_kernels::pool::*;
use lsqr_kernels::OpError;
use proptest::prelude::*;

/// Output length of one axis, straight from the ONNX reference's formula.
fn out_len(size: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize, ceil: bool) -> usize {
    let span = (k - 1) * d + 1;
    let num = (size + pb + pe - span) as f64 / s as f64;
    let mut out = if ceil { num.ceil() } else { num.floor() } as usize + 1;
    if ceil && (out - 1) * s >= size + pb {
        out -= 1;
    }
    out
}

/// (max, avg) by visiting every tap of every window.
fn reference(x: &[f32], input: [usize; 4], p: &Pool2dParams) -> (Vec<f32>, Vec<f32>, [usize; 4]) {
    let [n, c, h, w] = input;
    let oh = out_len(h, p.kernel[0], p.stride[0], p.dilation[0], p.pads[0], p.pads[2], p.ceil_mode);
    let ow = out_len(w, p.kernel[1], p.stride[1], p.dilation[1], p.pads[1], p.pads[3], p.ceil_mode);
    let (mut mx, mut av) = (vec![], vec![]);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut sum, mut real) = (f32::NEG_INFINITY, 0.0f32, 0);
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let y =
                            (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.pads[0] as isize;
                        let xx =
                            (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.pads[1] as isize;
                        if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                            let v = x[plane * h * w + y as usize * w + xx as usize];
                            // NaN is sticky; otherwise the larger wins.
                            if !m.is_nan() && (v.is_nan() || v > m) {
                                m = v;
                            }
                            sum += v;
                            real += 1;
                        }
                    }
                }
                mx.push(m);
                // onnxruntime divides by the kernel size with
                // count_include_pad, ceil-mode overhang included.
                let count = if p.count_include_pad { p.kernel[0] * p.kernel[1] } else { real };
                av.push(if count == 0 { 0.0 } else { sum / count as f32 });
            }
        }
    }
    (mx, av, [n, c, oh, ow])
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn params() -> impl Strategy<Value = ([usize; 4], Pool2dParams)> {
    (
        (0usize..3, 0usize..3, 1usize..8, 1usize..8),
        (1usize..4, 1usize..4, 1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter_map(
            "valid window",
            |((n, c, h, w), (kh, kw, sh, sw, dh, dw), pads, ceil, inc)| {
                let p = Pool2dParams {
                    kernel: [kh, kw],
                    stride: [sh, sw],
                    pads: [pads.0, pads.1, pads.2, pads.3],
                    dilation: [dh, dw],
                    ceil_mode: ceil,
                    count_include_pad: inc,
                };
                let ok = (0..2).all(|a| {
                    let span = (p.kernel[a] - 1) * p.dilation[a] + 1;
                    let size = [h, w][a];
                    p.pads[a] < span
                        && p.pads[a + 2] < span
                        && size + p.pads[a] + p.pads[a + 2] >= span
                });
                ok.then_some(([n, c, h, w], p))
            },
        )
}

/// Rows wider than the max pool's row buffer (1024) take the
/// window-by-window loop; narrower ones the two-pass one, which the
/// proptest below covers.
#[test]
fn max_pool_rows_wider_than_its_buffer() {
    for (w, (k, s, d, pad, ceil)) in
        [(1025, (2, 2, 1, 0, false)), (1031, (3, 1, 1, 1, false)), (1030, (3, 2, 2, 2, true))]
    {
        let input = [1, 2, 4, w];
        let x: Vec<f32> = (0..2 * 4 * w).map(|i| ((i * 7919) % 113) as f32 - 50.0).collect();
        let p = Pool2dParams {
            kernel: [k, k],
            stride: [s, s],
            pads: [pad; 4],
            dilation: [d, d],
            ceil_mode: ceil,
            count_include_pad: false,
        };
        let (mx, _, shape) = reference(&x, input, &p);
        let mut out = vec![0.0; mx.len()];
        max_pool2d_ext_into(&x, input, &p, &mut out).unwrap();
        assert_eq!(p.output_shape(input).unwrap(), shape);
        assert!(same(&out, &mx), "width {w}, {p:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pools_match_reference((input, p) in params(), seed in any::<u64>(), nan in any::<bool>()) {
        let len: usize = input.iter().product();
        let mut x: Vec<f32> = (0..len)
            .map(|i| ((i as u64).wrapping_mul(2654435761).wrapping_add(seed) % 97) as f32 - 60.0)
            .collect();
        if nan && len > 0 {
            x[(seed as usize) % len] = f32::NAN;
        }
        let (mx, av, shape) = reference(&x, input, &p);
        prop_assert_eq!(p.output_shape(input).unwrap(), shape);
        let mut out = vec![0.0; mx.len()];
        max_pool2d_ext_into(&x, input, &p, &mut out).unwrap();
        prop_assert!(same(&out, &mx), "max {:?} vs {:?}", out, mx);
        avg_pool2d_ext_into(&x, input, &p, &mut out).unwrap();
        prop_assert!(same(&out, &av), "avg {:?} vs {:?}", out, av);
    }

    #[test]
    fn global_max_matches_reference(n in 0usize..3, c in 0usize..3, h in 1usize..5, w in 1usize..5, seed in any::<u64>()) {
        let len = n * c * h * w;
        let x: Vec<f32> = (0..len).map(|i| ((i as u64 * 7919 + seed) % 101) as f32).collect();
        let want: Vec<f32> = x
            .chunks(h * w)
            .map(|p| p.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
            .collect();
        let mut out = vec![0.0; n * c];
        global_max_pool2d_into(&x, [n, c, h, w], &mut out).unwrap();
        prop_assert_eq!(out, want);
    }

    /// Planes of any length (past the eight running maxima and their
    /// remainder), negatives, signed zeros and a NaN anywhere: the max
    /// (equal as a value: a tie of +0 and -0 may give either), NaN if the
    /// plane has one.
    #[test]
    fn global_max_is_the_max_at_any_length(
        x in prop::collection::vec(prop_oneof![-1e3f32..1e3, Just(0.0f32), Just(-0.0f32)], 1..70),
        nan_at in prop::option::of(0usize..70),
    ) {
        let mut x = x;
        if let Some(i) = nan_at.filter(|&i| i < x.len()) {
            x[i] = f32::NAN;
        }
        let mut out = [0.0];
        global_max_pool2d_into(&x, [1, 1, 1, x.len()], &mut out).unwrap();
        if x.iter().any(|v| v.is_nan()) {
            prop_assert!(out[0].is_nan());
        } else {
            prop_assert_eq!(out[0], x.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        }
    }
}

fn p(kernel: usize, stride: usize, pad: usize) -> Pool2dParams {
    Pool2dParams {
        kernel: [kernel; 2],
        stride: [stride; 2],
        pads: [pad; 4],
        dilation: [1; 2],
        ceil_mode: false,
        count_include_pad: false,
    }
}

#[test]
fn onnx_doc_examples() {
    let x16: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    let mut out = [0.0; 4];
    // maxpool_2d_ceil: 4x4, kernel 3, stride 2, ceil_mode.
    let ceil = Pool2dParams { ceil_mode: true, ..p(3, 2, 0) };
    assert_eq!(ceil.output_shape([1, 1, 4, 4]).unwrap(), [1, 1, 2, 2]);
    max_pool2d_ext_into(&x16, [1, 1, 4, 4], &ceil, &mut out).unwrap();
    assert_eq!(out, [11.0, 12.0, 15.0, 16.0]);
    // averagepool_2d_ceil.
    avg_pool2d_ext_into(&x16, [1, 1, 4, 4], &ceil, &mut out).unwrap();
    assert_eq!(out, [6.0, 7.5, 12.0, 13.5]);
    // maxpool_2d_dilations: kernel 2, stride 1, dilation 2.
    let dil = Pool2dParams { dilation: [2, 2], ..p(2, 1, 0) };
    max_pool2d_ext_into(&x16, [1, 1, 4, 4], &dil, &mut out).unwrap();
    assert_eq!(out, [11.0, 12.0, 15.0, 16.0]);
    // maxpool_2d_pads: 5x5, kernel 5, pads 2 -> 5x5.
    let x25: Vec<f32> = (1..=25).map(|v| v as f32).collect();
    let mut out = [0.0; 25];
    max_pool2d_ext_into(&x25, [1, 1, 5, 5], &p(5, 1, 2), &mut out).unwrap();
    let row = |a: f32| [a, a + 1.0, a + 2.0, a + 2.0, a + 2.0];
    let want: Vec<f32> = [13.0, 18.0, 23.0, 23.0, 23.0].iter().flat_map(|&a| row(a)).collect();
    assert_eq!(out.to_vec(), want);
}

#[test]
fn ceil_mode_drops_a_window_starting_in_end_padding() {
    // Length 3, kernel 2, stride 2, pads 1: ceil gives 3 windows, the
    // third would start at padded index 4 (end padding): dropped, as
    // PyTorch does.
    let q = Pool2dParams { ceil_mode: true, ..p(2, 2, 1) };
    assert_eq!(q.output_shape([1, 1, 3, 3]).unwrap(), [1, 1, 2, 2]);
}

#[test]
fn count_include_pad_divides_by_the_kernel_size() {
    // [1, 2, 3, 4], kernel 3, stride 2, pads 1, ceil: the last window
    // covers input 3, one pad cell and one cell past the padding; as in
    // onnxruntime 1.20, all three count.
    let x = [1.0, 2.0, 3.0, 4.0];
    let q = Pool2dParams {
        kernel: [1, 3],
        stride: [1, 2],
        pads: [0, 1, 0, 1],
        dilation: [1, 1],
        ceil_mode: true,
        count_include_pad: true,
    };
    let mut out = [0.0; 3];
    avg_pool2d_ext_into(&x, [1, 1, 1, 4], &q, &mut out).unwrap();
    assert_eq!(out, [1.0, 3.0, 4.0 / 3.0]);
    let q = Pool2dParams { count_include_pad: false, ..q };
    avg_pool2d_ext_into(&x, [1, 1, 1, 4], &q, &mut out).unwrap();
    assert_eq!(out, [1.5, 3.0, 4.0]);
    max_pool2d_ext_into(&[-1.0, -2.0, -3.0, -4.0], [1, 1, 1, 4], &q, &mut out).unwrap();
    assert_eq!(out, [-1.0, -2.0, -4.0]);
}

#[test]
fn pool_errors() {
    let bad = |r: Result<(), OpError>| matches!(r, Err(OpError::BadParameter { .. }));
    let len = |r: Result<(), OpError>| matches!(r, Err(OpError::LengthMismatch { .. }));
    let x = [0.0f32; 16];
    let mut out = [0.0; 4];
    let s = [1, 1, 4, 4];
    for q in [
        p(0, 1, 0),
        p(2, 0, 0),
        Pool2dParams { dilation: [0, 1], ..p(2, 1, 0) },
        p(2, 1, 2),
        Pool2dParams { pads: [0, 0, 0, 3], ..p(3, 1, 0) },
        p(5, 1, 0),
        p(usize::MAX, 1, 0),
        Pool2dParams { dilation: [usize::MAX, 1], ..p(2, 1, 0) },
    ] {
        assert!(bad(max_pool2d_ext_into(&x, s, &q, &mut out)), "{q:?}");
        assert!(bad(avg_pool2d_ext_into(&x, s, &q, &mut out)), "{q:?}");
        assert!(q.output_shape(s).is_err());
    }
    let q = p(3, 1, 0);
    assert!(len(max_pool2d_ext_into(&x[..15], s, &q, &mut out)));
    assert!(len(max_pool2d_ext_into(&x, s, &q, &mut out[..3])));
    assert!(len(avg_pool2d_ext_into(&x, s, &q, &mut [0.0; 5])));
    assert!(bad(max_pool2d_ext_into(&[], [1, 1, 0, 4], &q, &mut [])));
    assert!(bad(max_pool2d_ext_into(&x, [usize::MAX, 2, 2, 2], &q, &mut out)));
    assert!(bad(global_max_pool2d_into(&[], [1, 1, 0, 3], &mut [0.0])));
    assert!(bad(global_max_pool2d_into(&[], [usize::MAX, 2, 1, 1], &mut [0.0])));
    assert!(len(global_max_pool2d_into(&x, [1, 2, 2, 2], &mut [0.0; 2])));
    assert!(len(global_max_pool2d_into(&x, [1, 4, 2, 2], &mut [0.0; 3])));
    let mut one = [0.0];
    global_max_pool_into(&[1.0, f32::NAN, 3.0], 1, 3, &mut one).unwrap();
    assert!(one[0].is_nan());
}
