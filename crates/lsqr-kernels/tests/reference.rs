//! Hand-computed checks of every operator, on the active path (run again
//! with `LSQR_FORCE_SCALAR=1` for the portable one).

use lsqr_kernels::*;

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "[{i}] {g} vs {w} (all: {got:?})");
    }
}

#[test]
fn piecewise_activations() {
    let base = [-4.0f32, -3.0, -1.0, -0.0, 0.0, 0.5, 3.0, 6.0, 7.5];
    let mut x = base;
    relu(&mut x);
    assert_eq!(x, [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 6.0, 7.5]);
    let mut x = base;
    relu6(&mut x);
    assert_eq!(x, [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 6.0, 6.0]);
    let mut x = base;
    leaky_relu(&mut x, 0.1);
    assert_close(&x, &[-0.4, -0.3, -0.1, 0.0, 0.0, 0.5, 3.0, 6.0, 7.5], 1e-7);
    let mut x = base;
    hardsigmoid(&mut x);
    assert_close(&x, &[0.0, 0.0, 2.0 / 6.0, 0.5, 0.5, 3.5 / 6.0, 1.0, 1.0, 1.0], 1e-7);
    let mut x = base;
    hardswish(&mut x);
    assert_close(&x, &[0.0, 0.0, -2.0 / 6.0, 0.0, 0.0, 0.5 * 3.5 / 6.0, 3.0, 6.0, 7.5], 1e-7);
    let mut x = [f32::NAN];
    relu(&mut x);
    assert!(x[0].is_nan());
}

#[test]
fn smooth_activations() {
    // Values from the closed forms, computed in f64.
    let xs = [-3.0f32, -1.0, 0.0, 0.5, 2.0];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let erf_ref = [
        -0.997_300_203_936_74_f64,
        -0.682_689_492_137_086,
        0.0,
        0.382_924_922_548_026,
        0.954_499_736_103_642,
    ];
    type Case = (fn(&mut [f32]), Vec<f64>);
    let cases: [Case; 5] = [
        (sigmoid, xs.iter().map(|&x| sig(x as f64)).collect()),
        (tanh, xs.iter().map(|&x| (x as f64).tanh()).collect()),
        (silu, xs.iter().map(|&x| x as f64 * sig(x as f64)).collect()),
        // erf(x / sqrt 2) at x = -3, -1, 0, 0.5, 2.
        (gelu, xs.iter().zip(erf_ref).map(|(&x, e)| 0.5 * x as f64 * (1.0 + e)).collect()),
        (
            gelu_tanh,
            xs.iter()
                .map(|&x| {
                    let x = x as f64;
                    0.5 * x
                        * (1.0
                            + ((2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
                                .tanh())
                })
                .collect(),
        ),
    ];
    for (f, want) in cases {
        let mut x = xs;
        f(&mut x);
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_close(&x, &want, 2e-6);
    }
}

#[test]
fn softmax_rows() {
    let mut x = [1.0f32, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
    softmax(&mut x, 3).unwrap();
    let e = [1.0f64, 1f64.exp(), 2f64.exp()];
    let s: f64 = e.iter().sum();
    let want = [e[0] / s, e[1] / s, e[2] / s, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0].map(|v| v as f32);
    assert_close(&x, &want, 1e-6);
    // -inf (a mask) gets exactly 0.
    let mut x = [0.0f32, f32::NEG_INFINITY, 0.0];
    softmax(&mut x, 3).unwrap();
    assert_eq!(x, [0.5, 0.0, 0.5]);
    assert!(softmax(&mut [1.0; 5], 3).is_err());
    assert!(softmax(&mut [1.0; 5], 0).is_err());
    softmax(&mut [], 0).unwrap();
}

#[test]
fn layer_norm_rows() {
    let mut x = [1.0f32, 2.0, 3.0, 4.0, -2.0, 0.0, 2.0, 4.0];
    layer_norm(&mut x, 4, &[1.0, 1.0, 2.0, 2.0], &[0.0, 0.0, 0.0, 1.0], 0.0).unwrap();
    // Row 1: mean 2.5, var 1.25. Row 2: mean 1, var 5.
    let (a, b) = (1.25f64.sqrt(), 5f64.sqrt());
    let want = [
        -1.5 / a,
        -0.5 / a,
        2.0 * 0.5 / a,
        2.0 * 1.5 / a + 1.0,
        -3.0 / b,
        -1.0 / b,
        2.0 / b,
        6.0 / b + 1.0,
    ];
    assert_close(&x, &want.map(|v| v as f32), 1e-6);
    assert!(layer_norm(&mut x, 4, &[1.0; 3], &[0.0; 4], 1e-5).is_err());
    assert!(layer_norm(&mut x, 4, &[1.0; 4], &[0.0; 4], -1.0).is_err());
    assert!(layer_norm(&mut x, 3, &[1.0; 3], &[0.0; 3], 1e-5).is_err());
}

#[test]
fn batch_norm_channels() {
    // [n=2, c=2, spatial=2].
    let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let p = BatchNorm {
        mean: &[1.0, 2.0],
        var: &[4.0, 0.25],
        gamma: &[1.0, 2.0],
        beta: &[0.0, -1.0],
        eps: 0.0,
    };
    batch_norm(&mut x, &[2, 2, 2], &p).unwrap();
    // ch0: (x - 1) / 2; ch1: (x - 2) / 0.5 * 2 - 1.
    assert_close(&x, &[0.0, 0.5, 3.0, 7.0, 2.0, 2.5, 19.0, 23.0], 1e-6);
    assert!(batch_norm(&mut x, &[2, 2, 3], &p).is_err());
    assert!(batch_norm(&mut x, &[8], &p).is_err());
    assert!(batch_norm(&mut x, &[2, 4, 1], &p).is_err());
    batch_norm(&mut x[..4], &[2, 2], &p).unwrap();
}

#[test]
fn pooling() {
    // One 3x4 plane.
    let x: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    let (y, s) = max_pool2d(&x, [1, 1, 3, 4], &Pool2d::new(2, 2, 0)).unwrap();
    assert_eq!((y, s), (vec![6.0, 8.0], [1, 1, 1, 2]));
    let (y, s) = max_pool2d(&x, [1, 1, 3, 4], &Pool2d::new(3, 1, 1)).unwrap();
    assert_eq!(s, [1, 1, 3, 4]);
    assert_eq!(y, [6.0, 7.0, 8.0, 8.0, 10.0, 11.0, 12.0, 12.0, 10.0, 11.0, 12.0, 12.0]);
    // avg, count_include_pad = false: the corner window covers 1 2 / 5 6.
    let (y, _) = avg_pool2d(&x, [1, 1, 3, 4], &Pool2d::new(3, 1, 1)).unwrap();
    assert_eq!(y[0], (1.0 + 2.0 + 5.0 + 6.0) / 4.0);
    assert_eq!(y[1], (1.0 + 2.0 + 3.0 + 5.0 + 6.0 + 7.0) / 6.0);
    assert_eq!(y[5], (1.0 + 2.0 + 3.0 + 5.0 + 6.0 + 7.0 + 9.0 + 10.0 + 11.0) / 9.0);
    let p = Pool2d { kernel: [1, 2], stride: [1, 2], padding: [0, 0] };
    let (y, s) = avg_pool2d(&x, [1, 1, 3, 4], &p).unwrap();
    assert_eq!((y, s), (vec![1.5, 3.5, 5.5, 7.5, 9.5, 11.5], [1, 1, 3, 2]));
    let (y, s) = global_avg_pool2d(&x, [1, 2, 2, 3]).unwrap();
    assert_eq!((y, s), (vec![3.5, 9.5], [1, 2, 1, 1]));
    assert!(max_pool2d(&x, [1, 1, 3, 4], &Pool2d::new(2, 0, 0)).is_err());
    assert!(max_pool2d(&x, [1, 1, 3, 4], &Pool2d::new(2, 1, 2)).is_err());
    assert!(max_pool2d(&x, [1, 1, 3, 4], &Pool2d::new(5, 1, 0)).is_err());
    assert!(max_pool2d(&x, [1, 2, 3, 4], &Pool2d::new(2, 1, 0)).is_err());
    assert!(global_avg_pool2d(&[], [1, 1, 0, 3]).is_err());
}

#[test]
fn broadcasting() {
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let (y, s) = add(&a, &[2, 3], &[10.0, 20.0, 30.0], &[3]).unwrap();
    assert_eq!((y, s), (vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0], vec![2, 3]));
    let (y, s) = add(&a, &[2, 3], &[10.0, 20.0], &[2, 1]).unwrap();
    assert_eq!((y, s), (vec![11.0, 12.0, 13.0, 24.0, 25.0, 26.0], vec![2, 3]));
    let (y, s) = mul(&[1.0, 2.0], &[2, 1], &[1.0, 10.0, 100.0], &[1, 3]).unwrap();
    assert_eq!((y, s), (vec![1.0, 10.0, 100.0, 2.0, 20.0, 200.0], vec![2, 3]));
    let (y, s) = mul(&[3.0], &[], &a, &[3, 1, 2]).unwrap();
    assert_eq!((y, s), (vec![3.0, 6.0, 9.0, 12.0, 15.0, 18.0], vec![3, 1, 2]));
    let (y, s) = add(&[], &[0, 3], &[1.0], &[1]).unwrap();
    assert_eq!((y, s), (vec![], vec![0, 3]));
    assert_eq!(
        add(&a, &[2, 3], &[1.0, 2.0], &[2]).unwrap_err(),
        OpError::ShapeMismatch { op: "add", left: vec![2, 3], right: vec![2] }
    );
    assert!(matches!(add(&a, &[2, 2], &[1.0], &[1]), Err(OpError::LengthMismatch { .. })));
    assert!(mul(&a, &[usize::MAX, 2], &[1.0], &[1]).is_err());
}

#[test]
fn matmul_small() {
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2x3
    let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0]; // 3x2
    assert_eq!(matmul(&a, &b, 2, 3, 2).unwrap(), [58.0, 64.0, 139.0, 154.0]);
    assert_eq!(matmul(&a, &b, 3, 2, 3).unwrap().len(), 9);
    assert_eq!(matmul(&[], &[], 2, 0, 3).unwrap(), [0.0; 6]);
    assert!(matmul(&a, &b, 2, 3, 3).is_err());
    let mut out = [1.0f32; 3];
    assert!(matmul_into(&a, &b, &mut out, 2, 3, 2).is_err());
    // Identity.
    let id: Vec<f32> = (0..49).map(|i| if i % 8 == 0 { 1.0 } else { 0.0 }).collect();
    let m: Vec<f32> = (0..7 * 19).map(|i| i as f32 * 0.5).collect();
    assert_eq!(matmul(&id, &m, 7, 7, 19).unwrap(), m);
}

#[test]
fn error_messages_name_shapes() {
    let e = add(&[0.0; 6], &[2, 3], &[0.0; 4], &[4]).unwrap_err();
    assert_eq!(e.to_string(), "add: incompatible shapes [2, 3] and [4]");
}

#[test]
fn into_forms_match_the_allocating_ones() {
    let a: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let b = [10.0f32, 20.0, 30.0];
    // Broadcasting [2, 3, 4] with [3, 1]: a middle axis, an inner broadcast.
    let (want, s) = add(&a, &[2, 3, 4], &b, &[3, 1]).unwrap();
    let mut out = vec![f32::NAN; 24];
    add_into(&a, &[2, 3, 4], &b, &[3, 1], &mut out).unwrap();
    assert_eq!((out.clone(), s), (want, vec![2, 3, 4]));
    let (want, _) = mul(&a, &[2, 3, 4], &a, &[2, 3, 4]).unwrap();
    mul_into(&a, &[2, 3, 4], &a, &[2, 3, 4], &mut out).unwrap();
    assert_eq!(out, want);
    // The output buffer must be exactly the broadcast size.
    assert_eq!(
        add_into(&a, &[2, 3, 4], &b, &[3, 1], &mut out[..23]).unwrap_err(),
        OpError::LengthMismatch { op: "add", what: "out", expected: 24, actual: 23 }
    );
    assert!(matches!(
        add_into(&a, &[2, 3, 4], &b, &[3], &mut out),
        Err(OpError::ShapeMismatch { .. })
    ));

    let x: Vec<f32> = (0..2 * 3 * 5 * 4).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let shape = [2, 3, 5, 4];
    let pool = Pool2d { kernel: [3, 2], stride: [2, 1], padding: [1, 0] };
    let out_shape = pool.output_shape(shape).unwrap();
    assert_eq!(out_shape, [2, 3, 3, 3]);
    for (f, g) in [
        (
            max_pool2d as fn(&[f32], [usize; 4], &Pool2d) -> _,
            max_pool2d_into as fn(&_, _, &_, &mut _) -> _,
        ),
        (avg_pool2d, avg_pool2d_into),
    ] {
        let (want, want_shape) = f(&x, shape, &pool).unwrap();
        let mut out = vec![f32::NAN; 54];
        assert_eq!(g(&x, shape, &pool, &mut out).unwrap(), want_shape);
        assert_eq!(out, want);
        assert!(matches!(
            g(&x, shape, &pool, &mut out[..53]),
            Err(OpError::LengthMismatch { what: "out", .. })
        ));
    }
    let (want, _) = global_avg_pool2d(&x, shape).unwrap();
    let mut out = vec![f32::NAN; 6];
    assert_eq!(global_avg_pool2d_into(&x, shape, &mut out).unwrap(), [2, 3, 1, 1]);
    assert_eq!(out, want);
    assert!(global_avg_pool2d_into(&x, shape, &mut out[..5]).is_err());
    assert!(Pool2d::new(7, 1, 0).output_shape(shape).is_err());
}
