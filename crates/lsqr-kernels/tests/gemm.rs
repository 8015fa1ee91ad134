//! The blocked GEMM behind batch-N linear and conv2d/conv1d, on every code
//! path (portable, AVX2+FMA when present, the active one), against naive
//! oracles: an f64 product of the decoded weight for linear, the direct
//! `paths::conv2d_reference` for convolutions. Tolerance as for matmul:
//! `(k + 2) ε` relative to `Σ |a b|` (twice that where the oracle is f32
//! too), `k` the depth of each dot product.

use lsqr_codec::Scaling;
use lsqr_kernels::conv::{
    conv1d, conv1d_into, conv1d_scratch_len, conv2d, conv2d_into, conv2d_output_shape,
    conv2d_scratch_len, Conv1dParams, Conv2dParams,
};
use lsqr_kernels::packed::{
    dequantize_into, linear, linear_into, linear_scratch_len, PackedWeight,
};
use lsqr_kernels::{paths, Kernels, OpError};
use proptest::prelude::*;

/// Runs `f` on the active (dispatched) path, then on every path of
/// `paths::SIMD_PATHS` this CPU has (the portable one first), called
/// directly, and writes this binary's `lsqr-simd:` report line once.
fn each_path(mut f: impl FnMut(&'static Kernels)) {
    f(paths::active());
    paths::for_each_simd_path(env!("CARGO_CRATE_NAME"), |p| f(p.kernels()));
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// The parts of a random quantized weight: codes, table, scales.
struct Parts {
    packed: Vec<u8>,
    bits: u32,
    shape: Vec<usize>,
    scaling: Scaling,
    scales: Vec<f32>,
    table: Vec<f32>,
}

impl Parts {
    fn new(shape: &[usize], bits: u32, scaling: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let count: usize = shape.iter().product();
        let rows = shape.first().copied().unwrap_or(1);
        let cols = count.checked_div(rows).unwrap_or(0);
        let codes: Vec<u16> = (0..count).map(|_| (rng.next() % (1u64 << bits)) as u16).collect();
        let mut packed = vec![0u8; lsqr_pack::packed_len(count, bits).unwrap()];
        lsqr_pack::pack_into(&codes, bits, &mut packed).unwrap();
        let (scaling, n_scales) = match scaling {
            0 => (Scaling::Unit, 0),
            1 => (Scaling::Tensor, 1),
            2 => (Scaling::Row, rows),
            3 => (Scaling::Group(64), rows * cols.div_ceil(64)),
            _ => (Scaling::Group(5), rows * cols.div_ceil(5)),
        };
        let scales = if n_scales == 0 {
            vec![1.0]
        } else {
            (0..n_scales).map(|_| 0.25 + rng.f32().abs()).collect()
        };
        let table = rng.vec(1 << bits);
        Self { packed, bits, shape: shape.to_vec(), scaling, scales, table }
    }

    fn weight(&self) -> PackedWeight<'_> {
        self.weight_shaped(&self.shape)
    }

    /// The weight on the exact path (the f64 oracles here bound its f32
    /// rounding; the integer path is checked in `linear_extremes_every_path`
    /// and `tests/packed.rs`).
    fn weight_shaped(&self, shape: &[usize]) -> PackedWeight<'_> {
        let mut w = self.integer_weight(shape);
        w.set_exact(true);
        w
    }

    /// The weight with the integer path allowed (the default).
    fn integer_weight(&self, shape: &[usize]) -> PackedWeight<'_> {
        PackedWeight::new(
            &self.packed,
            self.bits,
            shape,
            self.scaling,
            self.scales.clone(),
            self.table.clone(),
        )
        .unwrap()
    }
}

fn dense(w: &PackedWeight<'_>) -> Vec<f32> {
    let mut d = vec![0.0; w.rows() * w.cols()];
    dequantize_into(w, &mut d).unwrap();
    d
}

/// The f64 oracle of one output of `y = x Wᵀ + b`.
struct Oracle {
    /// `b + Σ w x`, in f64.
    exact: f64,
    /// `(cols + 2) ε (|b| + Σ |w x|)`: the bound on an f32 product's
    /// rounding error.
    tol: f64,
    /// `Σ |w|` over the output's row of the weight.
    wsum: f64,
}

/// Calls `check(b, r, y[b, r], oracle)` for every output of `y`
/// (`[batch, rows]`), the oracle computed from the decoded weight `dense`
/// (`[rows, cols]`), `x` (`[batch, cols]`) and `bias`.
fn each_output(
    dense: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    bias: &[f32],
    y: &[f32],
    mut check: impl FnMut(usize, usize, f32, Oracle),
) {
    let batch = y.len() / rows.max(1);
    for b in 0..batch {
        for r in 0..rows {
            let (mut exact, mut size) = (f64::from(bias[r]), f64::from(bias[r].abs()));
            let mut wsum = 0.0f64;
            for c in 0..cols {
                let w = dense[r * cols + c];
                let p = f64::from(w) * f64::from(x[b * cols + c]);
                exact += p;
                size += p.abs();
                wsum += f64::from(w.abs());
            }
            let tol = (cols + 2) as f64 * f64::from(f32::EPSILON) * size + 1e-30;
            check(b, r, y[b * rows + r], Oracle { exact, tol, wsum });
        }
    }
}

/// Checks `y = x Wᵀ + b` against an f64 product of the decoded weight.
fn check_linear(
    what: &str,
    dense: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    bias: &[f32],
    y: &[f32],
) {
    let batch = y.len() / rows.max(1);
    each_output(dense, rows, cols, x, bias, y, |b, r, got, Oracle { exact, tol, .. }| {
        let got = f64::from(got);
        assert!(
            (got - exact).abs() <= tol,
            "{what}: y[{b},{r}] = {got}, expected {exact} (rows {rows}, cols {cols}, batch {batch})"
        );
    });
}

fn linear_case(rows: usize, cols: usize, batch: usize, bits: u32, scaling: usize, seed: u64) {
    let parts = Parts::new(&[rows, cols], bits, scaling, seed);
    let w = parts.weight();
    let d = dense(&w);
    let mut rng = Rng::new(seed ^ 0x55);
    let x = rng.vec(batch * cols);
    let bias = rng.vec(rows);
    each_path(|kern| {
        let mut y = vec![f32::NAN; batch * rows];
        paths::linear_with(kern, &w, Some(&bias), &x, batch, &mut y).unwrap();
        check_linear(kern.name(), &d, rows, cols, &x, &bias, &y);
    });
    // The plain f32 weight of the same values gives the same products.
    let plain = PackedWeight::from_f32(&d, &[rows, cols]).unwrap();
    let mut y = vec![f32::NAN; batch * rows];
    linear(&plain, Some(&bias), &x, batch, &mut y).unwrap();
    check_linear("plain", &d, rows, cols, &x, &bias, &y);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random shapes around the tile sizes (6/12 rows, 8/16 columns).
    #[test]
    fn linear_random_shapes(rows in 1usize..30, cols in 1usize..70, batch in 2usize..40, bits in 1u32..=9, scaling in 0usize..5, seed: u64) {
        linear_case(rows, cols, batch, bits, scaling, seed);
    }
}

#[test]
fn linear_crosses_every_block() {
    // rows > MC = 72, cols > KC = 256, batch > NC = 256; batch 8 (12 x 8
    // tiles), 9 (6 x 16 with a ragged panel), 17.
    linear_case(150, 600, 300, 4, 3, 1);
    linear_case(77, 513, 8, 8, 4, 2);
    linear_case(13, 257, 9, 3, 2, 3);
    linear_case(200, 64, 17, 16, 1, 4);
}

#[test]
fn linear_into_scratch_contract() {
    let parts = Parts::new(&[20, 300], 4, 3, 9);
    let w = parts.weight();
    let x = Rng::new(1).vec(5 * 300);
    let mut y = vec![0.0; 5 * 20];
    assert_eq!(linear_scratch_len(&w, 1), 0);
    assert_eq!(linear_scratch_len(&w, 0), 0);
    let need = linear_scratch_len(&w, 5);
    assert!(need > 0 && need <= 256 * 256 + 72 * 256);
    let mut scratch = vec![0.0; need];
    linear_into(&w, None, &x, 5, &mut y, &mut scratch).unwrap();
    let mut want = vec![0.0; 5 * 20];
    linear(&w, None, &x, 5, &mut want).unwrap();
    assert_eq!(y, want);
    assert!(matches!(
        linear_into(&w, None, &x, 5, &mut y, &mut scratch[..need - 1]),
        Err(OpError::LengthMismatch { what: "scratch", .. })
    ));
    // Batch 1 needs none.
    linear_into(&w, None, &x[..300], 1, &mut y[..20], &mut []).unwrap();
}

#[test]
fn plain_f32_weight() {
    let data: Vec<f32> = (0..12).map(|i| i as f32 - 5.0).collect();
    let w = PackedWeight::from_f32(&data, &[3, 2, 2]).unwrap();
    assert!(!w.is_quantized());
    assert_eq!((w.rows(), w.cols(), w.shape()), (3, 4, &[3usize, 2, 2][..]));
    let mut row = [0.0; 4];
    w.decode_row(2, &mut row).unwrap();
    assert_eq!(row, [3.0, 4.0, 5.0, 6.0]);
    assert!(w.decode_row(3, &mut row).is_err());
    // Batch 1 and batch 2, with bias: exact small integers.
    let x = [1.0, 0.0, -1.0, 2.0, 0.5, 0.5, 0.5, 0.5];
    let mut y = [0.0; 3];
    linear(&w, Some(&[1.0, 2.0, 3.0]), &x[..4], 1, &mut y).unwrap();
    // Rows [-5 -4 -3 -2], [-1 0 1 2], [3 4 5 6] against [1 0 -1 2].
    assert_eq!(y, [-6.0 + 1.0, 2.0 + 2.0, 10.0 + 3.0]);
    let mut y2 = [0.0; 6];
    linear(&w, Some(&[1.0, 2.0, 3.0]), &x, 2, &mut y2).unwrap();
    assert_eq!(&y2[..3], &y);
    assert_eq!(&y2[3..], &[-7.0 + 1.0, 1.0 + 2.0, 9.0 + 3.0]);
    assert!(matches!(
        PackedWeight::from_f32(&data, &[5, 2]),
        Err(OpError::LengthMismatch { what: "data", expected: 10, actual: 12, .. })
    ));
    assert!(PackedWeight::from_f32(&[], &[usize::MAX, 2]).is_err());
    // A plain conv weight convolves like the reference.
    let w = PackedWeight::from_f32(&data, &[3, 2, 1, 2]).unwrap();
    let (out, shape) =
        conv2d(&w, None, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 2, 1, 3], &Conv2dParams::default())
            .unwrap();
    let (want, _) = paths::conv2d_reference(
        &w,
        None,
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [1, 2, 1, 3],
        &Conv2dParams::default(),
    )
    .unwrap();
    assert_eq!(shape, [1, 3, 1, 2]);
    assert_eq!(out, want);
}

/// Compares every path's conv2d with the reference; `Ok(false)` if the
/// geometry is invalid (both must then fail).
fn conv_case(
    weight_shape: [usize; 4],
    input_shape: [usize; 4],
    p: &Conv2dParams,
    bits: u32,
    scaling: usize,
    seed: u64,
) -> bool {
    let parts = Parts::new(&weight_shape, bits, scaling, seed);
    let w = parts.weight();
    let mut rng = Rng::new(seed ^ 0x77);
    let x = rng.vec(input_shape.iter().product());
    let bias = rng.vec(weight_shape[0]);
    let want = paths::conv2d_reference(&w, Some(&bias), &x, input_shape, p);
    let Ok((want, shape)) = want else {
        each_path(|kern| {
            assert!(paths::conv2d_with(kern, &w, Some(&bias), &x, input_shape, p).is_err());
        });
        return false;
    };
    // Σ |w x| + |b| per output: the reference on absolute values.
    let abs_w: Vec<f32> = dense(&w).iter().map(|v| v.abs()).collect();
    let abs_weight = PackedWeight::from_f32(&abs_w, &weight_shape).unwrap();
    let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let abs_b: Vec<f32> = bias.iter().map(|v| v.abs()).collect();
    let (size, _) =
        paths::conv2d_reference(&abs_weight, Some(&abs_b), &abs_x, input_shape, p).unwrap();
    let depth = weight_shape[1] * weight_shape[2] * weight_shape[3];
    each_path(|kern| {
        let (got, got_shape) =
            paths::conv2d_with(kern, &w, Some(&bias), &x, input_shape, p).unwrap();
        assert_eq!(got_shape, shape);
        for i in 0..got.len() {
            let tol = 2.0 * (depth + 2) as f32 * f32::EPSILON * size[i] + 1e-30;
            assert!(
                (got[i] - want[i]).abs() <= tol,
                "{} conv {weight_shape:?} on {input_shape:?} {p:?} at [{i}]: {} vs {}",
                kern.name(),
                got[i],
                want[i]
            );
        }
    });
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random geometry: groups (including depthwise with a channel
    /// multiplier), kernels 1..5, stride, padding, dilation, odd sizes.
    #[test]
    fn conv2d_random_shapes(
        n in 1usize..=3, groups in 1usize..=3, cin_g in 1usize..=3, cout_g in 1usize..=3,
        h in 1usize..=11, w in 1usize..=11, kh in 1usize..=5, kw in 1usize..=5,
        sh in 1usize..=3, sw in 1usize..=3, ph in 0usize..=2, pw in 0usize..=2,
        dh in 1usize..=2, dw in 1usize..=2, bits in 2u32..=8, scaling in 0usize..5, seed: u64,
    ) {
        let p = Conv2dParams { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups };
        conv_case([groups * cout_g, cin_g, kh, kw], [n, groups * cin_g, h, w], &p, bits, scaling, seed);
    }

    /// Depthwise (`groups == channels`) specifically.
    #[test]
    fn conv2d_depthwise_random(
        n in 1usize..=3, c in 1usize..=6, mult in 1usize..=2, h in 1usize..=13, w in 1usize..=13,
        k in 1usize..=5, s in 1usize..=3, pad in 0usize..=2, d in 1usize..=2, seed: u64,
    ) {
        let p = Conv2dParams { stride: [s, s], padding: [pad, pad], dilation: [d, d], groups: c };
        conv_case([c * mult, 1, k, k], [n, c, h, w], &p, 4, 3, seed);
    }
}

#[test]
fn conv2d_crosses_every_block() {
    // K = 40 * 9 = 360 > KC, 80 output channels > MC, 20 x 20 = 400
    // pixels > NC; then a grouped one and a strided depthwise one.
    let p = Conv2dParams { padding: [1, 1], ..Conv2dParams::default() };
    assert!(conv_case([80, 40, 3, 3], [1, 40, 20, 20], &p, 4, 3, 1));
    let p = Conv2dParams { stride: [2, 1], padding: [2, 0], dilation: [1, 2], groups: 2 };
    assert!(conv_case([14, 30, 5, 3], [2, 60, 19, 23], &p, 3, 4, 2));
    let p = Conv2dParams { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 32 };
    assert!(conv_case([32, 1, 3, 3], [1, 32, 33, 31], &p, 8, 2, 3));
    // Large enough for the `parallel` feature to split channels.
    let p = Conv2dParams { padding: [1, 1], groups: 128, ..Conv2dParams::default() };
    assert!(conv_case([128, 1, 3, 3], [1, 128, 64, 64], &p, 4, 3, 5));
    // Depthwise filters are decoded 1024 values at a time (113 3x3
    // filters): 120 channels over two images cross that batch and return
    // to channel 0.
    let p = Conv2dParams { padding: [1, 1], groups: 120, ..Conv2dParams::default() };
    assert!(conv_case([120, 1, 3, 3], [2, 120, 5, 7], &p, 4, 3, 15));
    // A filter of more than 1024 values (33 x 33) is decoded alone.
    let p = Conv2dParams { padding: [16, 16], groups: 3, ..Conv2dParams::default() };
    assert!(conv_case([3, 1, 33, 33], [1, 3, 20, 21], &p, 4, 3, 16));
    // 1x1: a plain GEMM over pixels. Panels of 16 pixels cross rows of 7;
    // then deeper than KC (300 channels) and wider than NC (17 x 19 = 323
    // pixels), and grouped.
    assert!(conv_case([24, 16, 1, 1], [2, 16, 9, 7], &Conv2dParams::default(), 4, 1, 4));
    assert!(conv_case([20, 300, 1, 1], [1, 300, 17, 19], &Conv2dParams::default(), 4, 3, 11));
    let p = Conv2dParams { groups: 2, ..Conv2dParams::default() };
    assert!(conv_case([8, 6, 1, 1], [2, 12, 5, 7], &p, 4, 3, 12));
    // More row blocks (> MC output channels) than column blocks, deeper
    // than KC: the weight-outer loop order of the GEMM with row-major C.
    let p = Conv2dParams { padding: [1, 1], ..Conv2dParams::default() };
    assert!(conv_case([150, 30, 3, 3], [1, 30, 6, 6], &p, 4, 3, 10));
    // Depthwise rows wide enough for eight interior outputs at a time:
    // 5x5 at stride 1 and 2, dilated, with edges on both sides.
    let p = Conv2dParams { stride: [1, 2], padding: [2, 2], dilation: [1, 2], groups: 6 };
    assert!(conv_case([6, 1, 5, 5], [1, 6, 9, 53], &p, 4, 3, 8));
    let p = Conv2dParams { stride: [2, 1], padding: [2, 1], dilation: [1, 1], groups: 4 };
    assert!(conv_case([8, 1, 5, 5], [2, 4, 11, 37], &p, 8, 1, 9));
    // Strided rows wide enough for interior panels of 16 pixels (whose
    // taps im2col gathers `sw` apart): a network's first 3x3 stride-2
    // convolution over 3 channels, then stride 3 with dilation.
    let p = Conv2dParams { stride: [2, 2], padding: [1, 1], ..Conv2dParams::default() };
    assert!(conv_case([16, 3, 3, 3], [1, 3, 24, 70], &p, 8, 2, 13));
    let p = Conv2dParams { stride: [2, 3], padding: [1, 2], dilation: [2, 2], groups: 1 };
    assert!(conv_case([8, 5, 3, 3], [1, 5, 30, 120], &p, 4, 3, 14));
    // Along H only (`w == kw == 1`, Magika's shape): run with H and W
    // swapped; strided, padded along H, dilated, and grouped.
    assert!(conv_case([40, 24, 5, 1], [1, 24, 300, 1], &Conv2dParams::default(), 4, 3, 6));
    let p = Conv2dParams { stride: [2, 1], padding: [2, 0], dilation: [2, 1], groups: 2 };
    assert!(conv_case([12, 5, 3, 1], [2, 10, 37, 1], &p, 8, 2, 7));
}

#[test]
fn conv_scratch_contract() {
    let parts = Parts::new(&[8, 4, 3, 3], 4, 3, 5);
    let w = parts.weight();
    let p = Conv2dParams { padding: [1, 1], ..Conv2dParams::default() };
    let shape = [1, 4, 10, 10];
    let x = Rng::new(3).vec(400);
    let out_len: usize = conv2d_output_shape(&w, shape, &p).unwrap().iter().product();
    let need = conv2d_scratch_len(&w, shape, &p).unwrap();
    let mut out = vec![0.0; out_len];
    let mut scratch = vec![0.0; need];
    conv2d_into(&w, None, &x, shape, &p, &mut out, &mut scratch).unwrap();
    assert_eq!(out, conv2d(&w, None, &x, shape, &p).unwrap().0);
    assert!(matches!(
        conv2d_into(&w, None, &x, shape, &p, &mut out, &mut scratch[..need - 1]),
        Err(OpError::LengthMismatch { what: "scratch", .. })
    ));
    // Depthwise needs one filter only.
    let dw = Parts::new(&[4, 1, 3, 3], 4, 3, 6);
    let dp = Conv2dParams { groups: 4, ..p };
    assert_eq!(conv2d_scratch_len(&dw.weight(), shape, &dp).unwrap(), 9);
    // Scratch is bounded whatever the image size.
    let big = conv2d_scratch_len(&w, [1, 4, 1000, 1000], &p).unwrap();
    assert!(big <= 256 * 256 + 72 * 256, "{big}");
}

#[test]
fn conv1d_matches_conv2d_reference() {
    for (groups, cin, cout, k, stride, pad, dil, len) in
        [(1, 3, 5, 3, 1, 1, 1, 17), (2, 4, 6, 5, 2, 2, 2, 30), (4, 4, 8, 3, 1, 0, 3, 12)]
    {
        let parts = Parts::new(&[cout, cin / groups, k], 5, 4, len as u64);
        let w1 = parts.weight();
        let w2 = parts.weight_shaped(&[cout, cin / groups, 1, k]);
        let x = Rng::new(k as u64).vec(2 * cin * len);
        let p1 = Conv1dParams { stride, padding: pad, dilation: dil, groups };
        let p2 =
            Conv2dParams { stride: [1, stride], padding: [0, pad], dilation: [1, dil], groups };
        let (got, shape) = conv1d(&w1, None, &x, [2, cin, len], &p1).unwrap();
        let (want, shape2) = paths::conv2d_reference(&w2, None, &x, [2, cin, 1, len], &p2).unwrap();
        assert_eq!(shape, [shape2[0], shape2[1], shape2[3]]);
        let depth = cin / groups * k;
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 2.0 * (depth + 2) as f32 * f32::EPSILON * 4.0 * depth as f32);
        }
        let need = conv1d_scratch_len(&w1, [2, cin, len], &p1).unwrap();
        let mut out = vec![0.0; got.len()];
        conv1d_into(&w1, None, &x, [2, cin, len], &p1, &mut out, &mut vec![0.0; need]).unwrap();
        assert_eq!(out, got);
    }
}

/// `v` at the end of an exact heap allocation, `offset` elements past its
/// (aligned) start: AddressSanitizer sees a read past the end, and vector
/// loads start off their alignment.
fn exact_at(v: &[f32], offset: usize) -> Box<[f32]> {
    let mut buf = vec![0.0f32; offset];
    buf.extend_from_slice(v);
    buf.into_boxed_slice()
}

/// Equal bits, or both NaN.
fn same(got: f32, want: f32) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

/// Every third value of `v` replaced by one of `special`.
fn sprinkle(v: &mut [f32], special: &[f32], seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, x) in v.iter_mut().enumerate() {
        if i % 3 == (seed as usize) % 3 {
            *x = special[rng.next() as usize % special.len()];
        }
    }
}

/// The f32 extremes: ±MAX, ±inf, NaN, ±0, the smallest normal, subnormals.
const EXTREMES: [f32; 11] = [
    f32::MAX,
    f32::MIN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    0.0,
    -0.0,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-40,
    -1e-45,
];

/// Large but summable (products of two, over a few hundred terms, stay
/// finite in any order), tiny, subnormal and signed zeros.
const LARGE: [f32; 10] = [1e17, -1e17, 3e16, -2e16, 1e-40, -1e-40, 0.0, -0.0, 1.2e-38, -1.0];

/// The decoders (f32, f16, bf16) of every path on tables and scales
/// holding every f32 extreme: bit for bit the portable decoder, which is
/// `table[code] * scale`; f16 and bf16 are that, rounded once (NaN stays
/// NaN). Every C, odd widths, every scaling; outputs in exact allocations.
#[test]
fn dequantize_extremes_every_path() {
    for bits in 1..=16u32 {
        for (rows, cols) in [(3, 8), (5, 13), (2, 67), (1, 1)] {
            for scaling in 0..5 {
                let seed = u64::from(bits) * 100 + cols as u64 + scaling as u64;
                let mut parts = Parts::new(&[rows, cols], bits, scaling, seed);
                sprinkle(&mut parts.table, &EXTREMES, seed);
                if scaling > 0 {
                    sprinkle(&mut parts.scales, &[0.0, 1e-40, f32::MAX, 1e10, 1e-3], seed + 1);
                }
                let w = parts.weight();
                let n = rows * cols;
                let mut want = vec![0.0f32; n];
                paths::dequantize_into_with(paths::scalar(), &w, &mut want).unwrap();
                let mut codes = vec![0u16; n];
                lsqr_pack::unpack_into(&parts.packed, bits, &mut codes).unwrap();
                let group = match scaling {
                    0 | 1 => usize::MAX,
                    2 => cols,
                    3 => 64,
                    _ => 5,
                };
                for (e, &v) in want.iter().enumerate() {
                    let (r, c) = (e / cols, e % cols);
                    let s = match scaling {
                        0 | 1 => parts.scales[0],
                        _ => parts.scales[r * cols.div_ceil(group) + c / group],
                    };
                    assert!(same(v, parts.table[usize::from(codes[e])] * s), "portable [{e}]");
                }
                each_path(|kern| {
                    let what =
                        format!("{} C={bits} [{rows}, {cols}] scaling {scaling}", kern.name());
                    let mut got = vec![f32::NAN; n].into_boxed_slice();
                    paths::dequantize_into_with(kern, &w, &mut got).unwrap();
                    for e in 0..n {
                        assert!(
                            same(got[e], want[e]),
                            "{what} [{e}]: {:e} vs {:e}",
                            got[e],
                            want[e]
                        );
                    }
                    let mut h = vec![half::f16::ZERO; n].into_boxed_slice();
                    paths::dequantize_into_f16_with(kern, &w, &mut h).unwrap();
                    let mut b = vec![half::bf16::ZERO; n].into_boxed_slice();
                    paths::dequantize_into_bf16_with(kern, &w, &mut b).unwrap();
                    for e in 0..n {
                        let (hw, bw) =
                            (half::f16::from_f32(want[e]), half::bf16::from_f32(want[e]));
                        assert!(
                            h[e].to_bits() == hw.to_bits() || (h[e].is_nan() && hw.is_nan()),
                            "{what} f16 [{e}]"
                        );
                        assert!(
                            b[e].to_bits() == bw.to_bits() || (b[e].is_nan() && bw.is_nan()),
                            "{what} bf16 [{e}]"
                        );
                    }
                });
            }
        }
    }
}

/// `got` against the f64 oracle of `y = x Wᵀ + b`: a NaN or infinite
/// exact value (an order-independent outcome: a NaN, opposite infinities,
/// or one infinity among finite terms) must be matched exactly, finite ones
/// within `(cols + 2) ε Σ |w x|`.
fn check_linear_extreme(
    what: &str,
    dense: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    bias: &[f32],
    y: &[f32],
) {
    each_output(dense, rows, cols, x, bias, y, |b, r, got, Oracle { exact, tol, .. }| {
        let ok = if exact.is_nan() {
            got.is_nan()
        } else if exact.is_infinite() {
            f64::from(got) == exact
        } else {
            (f64::from(got) - exact).abs() <= tol
        };
        assert!(ok, "{what}: y[{b},{r}] = {got:e}, expected {exact:e} (cols {cols})");
    });
}

/// The integer path (or the exact one, where it declines) on the same
/// extremes: a NaN or infinity exactly where the f64 oracle has one, and
/// otherwise a finite value within a loose bound: int8 activations round
/// each to 1/254 of its block's largest, and table entries move by up to
/// 1/16 of a cell, so the error stays below `Σ |w| · max |x| / 8` (this
/// catches overflow, lost blocks and garbage, not precision: that is
/// `tests/packed.rs`'s `int_path_precision`). Batch 1: `x` is one row.
fn check_linear_integer(
    what: &str,
    dense: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    bias: &[f32],
    y: &[f32],
) {
    let xmax = x.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    each_output(dense, rows, cols, x, bias, y, |_, r, got, Oracle { exact, wsum, .. }| {
        if exact.is_nan() || exact.is_infinite() {
            // The exact path's order-independent outcomes (see
            // `check_linear_extreme`) are the integer path's too: it
            // declines non-finite inputs.
            assert!(
                got.is_nan() == exact.is_nan() && (exact.is_nan() || f64::from(got) == exact),
                "{what}: y[{r}] = {got:e}, expected {exact:e}"
            );
        } else {
            let tol = wsum * xmax / 8.0 + f64::from(bias[r].abs()) * 1e-6 + 1e-30;
            assert!(
                got.is_finite() && (f64::from(got) - exact).abs() <= tol,
                "{what}: y[{r}] = {got:e}, expected {exact:e} (bound {tol:e})"
            );
        }
    });
}

/// Batch 1 (the register GEMV) and batch > 1 (the blocked GEMM) of every
/// path, on weights and inputs holding large values (products near 1e34),
/// subnormals and signed zeros, then also ±inf and NaN; `x` starts at an
/// odd offset of an exact allocation, the packed codes are exact too.
#[test]
fn linear_extremes_every_path() {
    for (k, (rows, cols, bits)) in
        [(5, 16, 4), (9, 24, 3), (7, 40, 5), (6, 13, 8), (13, 264, 2), (4, 64, 7), (3, 9, 11)]
            .into_iter()
            .enumerate()
    {
        for (special, nonfinite) in [(&LARGE[..], false), (&EXTREMES[2..], true)] {
            for scaling in [1, 3, 4] {
                let seed = k as u64 * 31 + scaling as u64;
                let mut parts = Parts::new(&[rows, cols], bits, scaling, seed);
                sprinkle(&mut parts.table, special, seed);
                let w = parts.weight();
                let d = dense(&w);
                for batch in [1, 2, 9] {
                    let mut rng = Rng::new(seed ^ batch as u64);
                    let mut xs = rng.vec(batch * cols);
                    sprinkle(&mut xs, special, seed + 7);
                    let bias = rng.vec(rows);
                    let offset = 1 + (k + batch) % 7;
                    let buf = exact_at(&xs, offset);
                    let x = &buf[offset..];
                    each_path(|kern| {
                        let mut y = vec![f32::NAN; batch * rows].into_boxed_slice();
                        paths::linear_with(kern, &w, Some(&bias), x, batch, &mut y).unwrap();
                        let what = format!(
                            "{} C={bits} batch {batch} scaling {scaling} nonfinite {nonfinite}",
                            kern.name()
                        );
                        check_linear_extreme(&what, &d, rows, cols, x, &bias, &y);
                    });
                    if batch == 1 {
                        // The special values in the table (most such tables
                        // have no integer form) and only in `x`.
                        let plain = Parts::new(&[rows, cols], bits, scaling, seed);
                        for (table, p) in [("special", &parts), ("plain", &plain)] {
                            let wi = p.integer_weight(&[rows, cols]);
                            let d = dense(&wi);
                            each_path(|kern| {
                                let mut y = vec![f32::NAN; rows].into_boxed_slice();
                                paths::linear_with(kern, &wi, Some(&bias), x, 1, &mut y).unwrap();
                                let what = format!(
                                    "{} {:?} C={bits} {table} table, scaling {scaling} nonfinite {nonfinite}",
                                    kern.name(),
                                    wi.int_form()
                                );
                                check_linear_integer(&what, &d, rows, cols, x, &bias, &y);
                            });
                        }
                    }
                }
            }
        }
    }
}

/// conv2d (im2col + GEMM, and the direct depthwise path) of every path on
/// large, tiny and subnormal weights and inputs, then with ±inf and NaN in
/// the input (not the weight: the im2col GEMM multiplies the zero padding
/// by every weight, the direct reference skips it), against the direct
/// convolution; the input at an odd offset of an exact allocation.
#[test]
fn conv2d_extremes_every_path() {
    let cases = [
        ([6, 3, 3, 3], [2, 3, 9, 11], Conv2dParams { padding: [1, 1], ..Conv2dParams::default() }),
        (
            [8, 2, 3, 2],
            [1, 4, 7, 13],
            Conv2dParams { stride: [2, 1], groups: 2, ..Conv2dParams::default() },
        ),
        (
            [5, 1, 3, 3],
            [1, 5, 10, 9],
            Conv2dParams { padding: [1, 1], groups: 5, ..Conv2dParams::default() },
        ),
        ([4, 6, 1, 1], [2, 6, 5, 7], Conv2dParams::default()),
    ];
    for (k, (ws, is, p)) in cases.into_iter().enumerate() {
        for (x_special, nonfinite) in [(&LARGE[..], false), (&EXTREMES[2..], true)] {
            let seed = k as u64 + 11;
            let mut parts = Parts::new(&ws, 4, 3, seed);
            // Weights summable against x: LARGE in the large-value round,
            // tiny and subnormal values against infinite inputs.
            let w_special: &[f32] = if nonfinite { &[0.0, -0.0, 1e-40, -1.0, 2.0] } else { &LARGE };
            sprinkle(&mut parts.table, w_special, seed);
            let w = parts.weight();
            let mut rng = Rng::new(seed ^ 0x77);
            let mut xs = rng.vec(is.iter().product());
            sprinkle(&mut xs, x_special, seed + 3);
            let offset = 1 + k % 7;
            let buf = exact_at(&xs, offset);
            let x = &buf[offset..];
            let bias = rng.vec(ws[0]);
            let (want, shape) = paths::conv2d_reference(&w, Some(&bias), x, is, &p).unwrap();
            let abs_w: Vec<f32> = dense(&w).iter().map(|v| v.abs()).collect();
            let abs_weight = PackedWeight::from_f32(&abs_w, &ws).unwrap();
            let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let abs_b: Vec<f32> = bias.iter().map(|v| v.abs()).collect();
            let (size, _) =
                paths::conv2d_reference(&abs_weight, Some(&abs_b), &abs_x, is, &p).unwrap();
            let depth = ws[1] * ws[2] * ws[3];
            each_path(|kern| {
                let (got, got_shape) =
                    paths::conv2d_with(kern, &w, Some(&bias), x, is, &p).unwrap();
                assert_eq!(got_shape, shape);
                for i in 0..got.len() {
                    let ok = if want[i].is_nan() {
                        got[i].is_nan()
                    } else if want[i].is_infinite() {
                        got[i] == want[i]
                    } else {
                        let tol = 2.0 * (depth + 2) as f32 * f32::EPSILON * size[i] + 1e-30;
                        (got[i] - want[i]).abs() <= tol
                    };
                    assert!(
                        ok,
                        "{} conv {ws:?} on {is:?} nonfinite {nonfinite} at [{i}]: {:e} vs {:e}",
                        kern.name(),
                        got[i],
                        want[i]
                    );
                }
            });
        }
    }
}
