//! The packed-weight operators against the codec's own decoding and a
//! naive f64 matrix product, for every codec, width and scaling.

use std::io::Cursor;

use lsqr_codec::{
    quantize, CodecKind, CodecSpec, QuantizeOptions, QuantizedTensor, Scaling, TwoLevel,
};
use lsqr_format::{LsqFile, LsqWriter, TensorView};
use lsqr_kernels::packed::{
    dequantize_into, dequantize_into_bf16, dequantize_into_f16, gather_rows_into, linear,
    PackedWeight,
};
use lsqr_kernels::OpError;
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

/// The kernels' weight of a `.lsq` tensor view (as lsqr-runtime builds it).
fn from_view<'a>(view: &lsqr_format::QuantizedView<'a>) -> Result<PackedWeight<'a>, OpError> {
    let scales = if view.spec().scale_dtype.is_some() { view.scales_f32() } else { vec![1.0] };
    PackedWeight::new(
        view.packed(),
        view.spec().width.bits(),
        &view.info().shape_usize(),
        view.spec().scaling,
        scales,
        view.decode_table().to_vec(),
    )
}

/// Writes `q` to an in-memory .lsq file and returns its bytes.
fn file_of(q: &QuantizedTensor) -> Vec<u8> {
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_quantized("w", q).unwrap();
    w.finish().unwrap().into_inner()
}

fn check(kind: CodecKind, bits: u32, scaling: Scaling, shape: &[usize], batch: usize, seed: u64) {
    let n: usize = shape.iter().product();
    let mut o = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
    o.scaling = scaling;
    let q = quantize(&values(n, seed), shape, &o).unwrap();
    let bytes = file_of(&q);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { panic!("quantized") };
    let mut w = from_view(&view).unwrap();
    // The naive product below is the exact path's check; the integer path
    // is checked against the exact one in `int_path_precision`.
    w.set_exact(true);

    // Decoding agrees bit for bit with the codec.
    let mut dense = vec![0.0f32; n];
    dequantize_into(&w, &mut dense).unwrap();
    assert_eq!(dense, q.dequantize(), "{kind} C={bits} {scaling:?} {shape:?}");

    // Half-precision outputs are the f32 values, rounded once.
    let mut h = vec![half::f16::ZERO; n];
    dequantize_into_f16(&w, &mut h).unwrap();
    let expected: Vec<u16> = dense.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
    assert_eq!(h.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), expected, "f16 {kind} C={bits}");
    let mut b16 = vec![half::bf16::ZERO; n];
    dequantize_into_bf16(&w, &mut b16).unwrap();
    let expected: Vec<u16> = dense.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
    assert_eq!(
        b16.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        expected,
        "bf16 {kind} C={bits}"
    );

    // Gathered rows (an embedding lookup) are the decoded rows.
    let (rows, cols) = (w.rows(), w.cols());
    if rows > 0 && cols > 0 {
        let picks = [rows - 1, 0, rows / 2, rows - 1];
        let ids: Vec<f32> = picks.iter().map(|&r| r as f32).chain([-1.0]).collect();
        let mut g = vec![f32::NAN; ids.len() * cols];
        gather_rows_into(&w, &ids, &mut g).unwrap();
        for (k, &r) in picks.iter().chain([rows - 1].iter()).enumerate() {
            assert_eq!(g[k * cols..][..cols], dense[r * cols..][..cols], "{kind} C={bits} row {r}");
        }
        for bad in [rows as f32, -(rows as f32) - 1.0, 0.5, f32::NAN] {
            let r = gather_rows_into(&w, &[bad], &mut g[..cols]);
            assert!(matches!(r, Err(OpError::BadParameter { .. })), "index {bad}");
        }
        let r = gather_rows_into(&w, &[0.0], &mut g[..cols + 1]);
        assert!(matches!(r, Err(OpError::LengthMismatch { .. })));
    }

    // linear agrees with a naive f64 product of the decoded weight.
    let x = values(batch * cols, seed ^ 7);
    let bias = values(rows, seed ^ 9);
    let mut y = vec![0.0f32; batch * rows];
    linear(&w, Some(&bias), &x, batch, &mut y).unwrap();
    for b in 0..batch {
        for r in 0..rows {
            let (mut exact, mut size) = (f64::from(bias[r]), f64::from(bias[r].abs()));
            for c in 0..cols {
                let p = f64::from(dense[r * cols + c]) * f64::from(x[b * cols + c]);
                exact += p;
                size += p.abs();
            }
            let got = f64::from(y[b * rows + r]);
            assert!(
                (got - exact).abs() <= 1e-6 * size + 1e-12,
                "{kind} C={bits}: y[{b},{r}] = {got}, expected {exact}"
            );
        }
    }
}

#[test]
fn every_codec_width_and_scaling() {
    for kind in CodecKind::ALL {
        for bits in [2, 3, 4, 5, 6, 7, 8, 12, 16] {
            for scaling in [
                Scaling::Unit,
                Scaling::Tensor,
                Scaling::Row,
                Scaling::Group(16),
                Scaling::Group(64),
            ] {
                check(kind, bits, scaling, &[7, 50], 3, u64::from(bits));
                // Rows of whole 8-code chunks: the fused SIMD kernels.
                check(kind, bits, scaling, &[9, 128], 1, u64::from(bits) + 1);
            }
        }
    }
}

/// Above a million weights, batch 1 splits its rows over threads (with
/// the `parallel` feature): whole-chunk rows, and rows whose codes do not
/// start on a byte. Above 2^21 elements, dequantize streams its stores.
#[test]
fn large_weights_split_over_threads() {
    check(CodecKind::Log, 4, Scaling::Group(64), &[2064, 1024], 1, 5);
    check(CodecKind::Nf, 3, Scaling::Row, &[1030, 1021], 1, 6);
}

#[test]
fn conv_shaped_and_degenerate_weights() {
    check(CodecKind::Log, 4, Scaling::Group(16), &[8, 3, 3, 3], 2, 1);
    check(CodecKind::Nf, 4, Scaling::Row, &[1, 1], 1, 2);
    check(CodecKind::Uniform, 6, Scaling::Group(16), &[5, 17], 0, 3);
    check(CodecKind::Fp, 8, Scaling::Tensor, &[3, 0], 2, 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_shapes(kind in 0usize..6, bits in 2u32..=9, rows in 1usize..9, cols in 1usize..140, batch in 0usize..4, g in 0usize..4, seed in any::<u64>()) {
        let scaling = [Scaling::Tensor, Scaling::Row, Scaling::Group(16), Scaling::Group(32)][g];
        check(CodecKind::ALL[kind], bits, scaling, &[rows, cols], batch, seed);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let q =
        quantize(&values(64, 1), &[4, 16], &QuantizeOptions::new(CodecSpec::Uniform, 4)).unwrap();
    let bytes = file_of(&q);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { panic!() };
    let w = from_view(&view).unwrap();
    let mut y = vec![0.0; 8];
    assert!(matches!(
        linear(&w, None, &[0.0; 15], 1, &mut y[..4]),
        Err(OpError::LengthMismatch { what: "x", .. })
    ));
    assert!(matches!(
        linear(&w, None, &[0.0; 16], 1, &mut y),
        Err(OpError::LengthMismatch { what: "y", .. })
    ));
    assert!(matches!(
        linear(&w, Some(&[0.0; 3]), &[0.0; 16], 1, &mut y[..4]),
        Err(OpError::LengthMismatch { what: "bias", .. })
    ));
    assert!(matches!(dequantize_into(&w, &mut [0.0; 63]), Err(OpError::LengthMismatch { .. })));
    let table = vec![0.0; 16];
    assert!(
        PackedWeight::new(&[0u8; 3], 4, &[4, 2], Scaling::Tensor, vec![1.0], table.clone())
            .is_err(),
        "short codes"
    );
    assert!(
        PackedWeight::new(&[0u8; 4], 4, &[4, 2], Scaling::Row, vec![1.0], table.clone()).is_err(),
        "scale count"
    );
    assert!(
        PackedWeight::new(&[0u8; 4], 4, &[4, 2], Scaling::Tensor, vec![1.0], vec![0.0; 15])
            .is_err(),
        "table"
    );
}

/// A Gaussian (or, `laplace`, Laplacian) sample of `n` values of RMS `rms`.
fn random(n: usize, rms: f32, laplace: bool, seed: u64) -> Vec<f32> {
    let u = values(2 * n, seed);
    (0..n)
        .map(|i| {
            let (a, b) = (f64::from(u[2 * i]) * 5.0 + 0.5, f64::from(u[2 * i + 1]) * 5.0 + 0.5);
            let a = a.clamp(1e-9, 1.0 - 1e-9);
            let v = if laplace {
                let s = if b < 0.5 { -1.0 } else { 1.0 };
                s * (-a.ln()) / std::f64::consts::SQRT_2
            } else {
                (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
            };
            (v * f64::from(rms)) as f32
        })
        .collect()
}

/// `10 log10(Σ reference² / Σ (got - reference)²)`.
fn snr_db(got: &[f32], reference: &[f64]) -> f64 {
    let (mut s, mut e) = (0.0, 0.0);
    for (&g, &r) in got.iter().zip(reference) {
        s += r * r;
        e += (f64::from(g) - r).powi(2);
    }
    10.0 * (s / e.max(1e-300)).log10()
}

/// Output SNR of the exact path against the f32 weights, of the integer
/// path against the exact path, and the form, for one codec and C.
fn int_precision(
    kind: CodecKind,
    bits: u32,
    scaling: Scaling,
    laplace: bool,
) -> (f64, f64, &'static str) {
    let (rows, cols) = (256, 1024);
    let wf = random(rows * cols, 0.02, laplace, u64::from(bits) * 31 + kind as u64);
    let mut o = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
    o.scaling = scaling;
    let q = quantize(&wf, &[rows, cols], &o).unwrap();
    let bytes = file_of(&q);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { panic!("quantized") };
    let mut w = from_view(&view).unwrap();
    let x = random(cols, 1.0, laplace, 99);
    let reference: Vec<f64> = (0..rows)
        .map(|r| (0..cols).map(|c| f64::from(wf[r * cols + c]) * f64::from(x[c])).sum())
        .collect();
    let mut exact = vec![0.0f32; rows];
    w.set_exact(true);
    linear(&w, None, &x, 1, &mut exact).unwrap();
    w.set_exact(false);
    let form = w.int_form().unwrap_or("exact");
    let mut int = vec![0.0f32; rows];
    linear(&w, None, &x, 1, &mut int).unwrap();
    let exact64: Vec<f64> = exact.iter().map(|&v| f64::from(v)).collect();
    (snr_db(&exact, &reference), snr_db(&int, &exact64), form)
}

/// Issue 13's rule for the integer path: its output SNR against the exact
/// path is at least 20 dB above the exact path's against the f32 weights,
/// for every codec at C = 2..=8 (the widths it serves), Gaussian and
/// Laplacian weights, groups of 64 and 32 and one scale per row. Prints
/// the table (`cargo test -p lsqr-kernels --test packed int_path -- --nocapture`).
#[test]
fn int_path_precision() {
    if lsqr_kernels::packed::exact_forced() {
        return; // LSQR_EXACT=1: no integer path to measure (see `exact_env`).
    }
    for laplace in [false, true] {
        for scaling in [
            Scaling::Group(64),
            Scaling::Group(32),
            Scaling::TwoLevel(TwoLevel::DEFAULT),
            Scaling::TwoLevel(TwoLevel::new(1024, 16, 4).unwrap()),
            Scaling::TwoLevel(TwoLevel::new(256, 8, 4).unwrap()),
            Scaling::Row,
        ] {
            for kind in CodecKind::ALL {
                for bits in 2..=8 {
                    let (codec, int, form) = int_precision(kind, bits, scaling, laplace);
                    let dist = if laplace { "laplace" } else { "gauss" };
                    println!(
                        "{dist} {scaling:?} {kind} C={bits}: codec {codec:.1} dB, {form} path {int:.1} dB (margin {:.1})",
                        int - codec
                    );
                    if form != "exact" {
                        assert!(int >= codec + 20.0, "{kind} C={bits} {scaling:?} {dist}: {int:.1} dB vs codec {codec:.1} dB");
                    }
                }
            }
        }
    }
}

/// At C = 7 and 8 the `log` codec's μ-law levels and the `uniform` grid take the
/// nibble form (`kernels::NibbleFactors`: three 16-entry lookups on AVX2)
/// at every μ whose table the int16 grid holds, within the same error
/// bound per level as the plain int16 table; levels without one curve per
/// high nibble (`lut`, `nf`) keep the plain table.
#[test]
fn c7_c8_nibble_form_where_the_levels_have_it() {
    if lsqr_kernels::packed::exact_forced() {
        return; // LSQR_EXACT=1: no integer form.
    }
    let (rows, cols) = (16, 256);
    let wf = random(rows * cols, 0.02, true, 8);
    for bits in [7, 8] {
        let form = |spec: CodecSpec| {
            let q = quantize(&wf, &[rows, cols], &QuantizeOptions::new(spec, bits)).unwrap();
            let bytes = file_of(&q);
            let file = LsqFile::from_bytes(&bytes).unwrap();
            let TensorView::Quantized(view) = file.tensor("w").unwrap() else {
                panic!("quantized")
            };
            from_view(&view).unwrap().int_form()
        };
        for mu in [0.0, 1e-3, 0.5, 2.0, 7.0, 30.0, 100.0, 200.0] {
            assert_eq!(
                form(CodecSpec::Log { mu: Some(mu) }),
                Some("int16 nibbles"),
                "C={bits} log mu = {mu}"
            );
        }
        for kind in [CodecKind::Log, CodecKind::Uniform] {
            assert_eq!(
                form(CodecSpec::default_for(kind)),
                Some("int16 nibbles"),
                "C={bits} {kind}"
            );
        }
        for kind in [CodecKind::Lut, CodecKind::Nf] {
            assert_eq!(form(CodecSpec::default_for(kind)), Some("int16"), "C={bits} {kind}");
        }
    }
}

/// `set_exact` and `LSQR_EXACT` select the exact path: bit for bit the
/// exact GEMV; without them a C = 4 `log` weight takes the integer path.
#[test]
fn exact_env_and_option() {
    let (rows, cols) = (64, 256);
    let wf = random(rows * cols, 0.02, false, 3);
    let q = quantize(
        &wf,
        &[rows, cols],
        &QuantizeOptions::new(CodecSpec::default_for(CodecKind::Log), 4),
    )
    .unwrap();
    let bytes = file_of(&q);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { panic!("quantized") };
    let mut w = from_view(&view).unwrap();
    assert!(!w.is_exact(), "the integer path by default");
    let x = random(cols, 1.0, false, 4);
    let mut int = vec![0.0f32; rows];
    linear(&w, None, &x, 1, &mut int).unwrap();
    w.set_exact(true);
    assert_eq!(w.int_form(), None);
    let mut exact = vec![0.0f32; rows];
    linear(&w, None, &x, 1, &mut exact).unwrap();
    w.set_exact(false);
    if lsqr_kernels::packed::exact_forced() {
        assert_eq!(w.int_form(), None, "LSQR_EXACT forces the exact path");
        assert_eq!(int, exact);
    } else {
        assert_eq!(w.int_form(), Some("int16"), "log C=4 needs the int16 table");
        assert_ne!(int, exact, "the integer path ran");
    }
}

/// `w`, quantized from `wf` with `kind` at C = `bits` and `scaling`, run
/// through `f` (the weight borrows an in-memory `.lsq` file).
fn with_weight<T>(
    wf: &[f32],
    shape: &[usize],
    (kind, bits, scaling): (CodecKind, u32, Scaling),
    f: impl FnOnce(&mut PackedWeight<'_>) -> T,
) -> T {
    let mut o = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
    o.scaling = scaling;
    let bytes = file_of(&quantize(wf, shape, &o).unwrap());
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { panic!("quantized") };
    f(&mut from_view(&view).unwrap())
}

/// Batches above 1 take the integer path too, and each vector's outputs
/// are bit for bit those of a batch of it alone: across the kernel's
/// 4-vector groups and their tails, `INT_BATCH` tiles (batch 17), int8
/// and int16 tables, one and eight scale groups per block, and (2064 x
/// 1024, with `parallel`) rows split over threads. A vector holding a NaN
/// takes the exact path alone: its outputs are NaN, the others' unchanged.
#[test]
fn int_batch_is_each_vector_alone() {
    let cases = [
        (CodecKind::Log, 4, Scaling::Group(64), [40, 320]),
        (CodecKind::Lut, 4, Scaling::TwoLevel(TwoLevel::DEFAULT), [24, 512]),
        (CodecKind::Nf, 3, Scaling::Row, [33, 96]),
        (CodecKind::Uniform, 2, Scaling::Group(32), [9, 64]),
        (CodecKind::Log, 4, Scaling::Group(64), [2064, 1024]),
    ];
    for (kind, bits, scaling, [rows, cols]) in cases {
        let wf = random(rows * cols, 0.02, false, u64::from(bits) + rows as u64);
        let bias = random(rows, 0.1, false, 5);
        with_weight(&wf, &[rows, cols], (kind, bits, scaling), |w| {
            let forced = lsqr_kernels::packed::exact_forced();
            assert!(
                forced || w.int_form().is_some(),
                "{kind} C={bits} {scaling:?} has an int form"
            );
            for batch in [2, 5, 17] {
                let mut x = random(batch * cols, 1.0, true, batch as u64);
                let nan = (batch - 1).min(3);
                x[nan * cols + 7] = f32::NAN;
                let mut y = vec![0.0f32; batch * rows];
                linear(w, Some(&bias), &x, batch, &mut y).unwrap();
                for v in 0..batch {
                    let mut alone = vec![0.0f32; rows];
                    linear(w, Some(&bias), &x[v * cols..(v + 1) * cols], 1, &mut alone).unwrap();
                    let got = &y[v * rows..(v + 1) * rows];
                    let same = got.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kind} C={bits} {scaling:?} batch {batch} vector {v}");
                }
                // The NaN: the exact path's NaNs in its vector, finite
                // outputs elsewhere (the integer path ran for them).
                let (before, rest) = y.split_at(nan * rows);
                let (nans, after) = rest.split_at(rows);
                assert!(nans.iter().all(|v| v.is_nan()));
                assert!(before.iter().chain(after).all(|v| v.is_finite()));
            }
        });
    }
}

/// Above `INT_MAX_BATCH` (C <= 4) or `INT_MAX_BATCH_LARGE` (C = 5..=8) a
/// linear takes the exact path (the f32 GEMM is faster there): bit for
/// bit the weight set exact, whatever the threads; at the limit, the
/// integer one.
#[test]
fn large_batches_take_the_exact_path() {
    use lsqr_kernels::packed::{INT_MAX_BATCH, INT_MAX_BATCH_LARGE};
    // 2048 x 1024 at batch 65 (over 2^22 products) is split over the
    // threads with `parallel`, in halves below the limit: still exact.
    let (rows, cols) = (2048, 1024);
    let wf = random(rows * cols, 0.02, false, 13);
    for (bits, limit) in [(4, INT_MAX_BATCH), (8, INT_MAX_BATCH_LARGE)] {
        with_weight(&wf, &[rows, cols], (CodecKind::Log, bits, Scaling::Group(64)), |w| {
            for batch in [limit, limit + 1] {
                let x = random(batch * cols, 1.0, false, 14);
                let run = |w: &PackedWeight<'_>| {
                    let mut y = vec![0.0f32; batch * rows];
                    linear(w, None, &x, batch, &mut y).unwrap();
                    y
                };
                let default = run(w);
                w.set_exact(true);
                let exact = run(w);
                w.set_exact(false);
                let same = default.iter().zip(&exact).all(|(a, b)| a.to_bits() == b.to_bits());
                let int_ran = batch <= limit && !lsqr_kernels::packed::exact_forced();
                assert_eq!(same, !int_ran, "C={bits} batch {batch}");
            }
        });
    }
}

/// At batch 8, the integer path's output SNR against the exact path (the
/// f32 GEMM) is at least 20 dB above the exact path's against the f32
/// weights: issue 13's rule, as at batch 1 (`int_path_precision`).
#[test]
fn int_batch_precision() {
    let (rows, cols, batch) = (256, 1024, 8);
    for (kind, bits) in
        [(CodecKind::Log, 4), (CodecKind::Lut, 4), (CodecKind::Nf, 2), (CodecKind::Log, 8)]
    {
        let wf = random(rows * cols, 0.02, false, 11);
        let x = random(batch * cols, 1.0, true, 12);
        let reference: Vec<f64> = (0..batch * rows)
            .map(|k| {
                let (v, r) = (k / rows, k % rows);
                (0..cols).map(|c| f64::from(wf[r * cols + c]) * f64::from(x[v * cols + c])).sum()
            })
            .collect();
        let (exact, int) = with_weight(&wf, &[rows, cols], (kind, bits, Scaling::Group(64)), |w| {
            let run = |w: &PackedWeight<'_>| {
                let mut y = vec![0.0f32; batch * rows];
                linear(w, None, &x, batch, &mut y).unwrap();
                y
            };
            w.set_exact(true);
            let exact = run(w);
            w.set_exact(false);
            (exact, run(w))
        });
        let exact64: Vec<f64> = exact.iter().map(|&v| f64::from(v)).collect();
        let (codec, int) = (snr_db(&exact, &reference), snr_db(&int, &exact64));
        println!("batch {batch} {kind} C={bits}: codec {codec:.1} dB, integer path {int:.1} dB");
        if !lsqr_kernels::packed::exact_forced() {
            assert!(int >= codec + 20.0, "{kind} C={bits}: {int:.1} dB vs codec {codec:.1} dB");
        }
    }
}

/// A weight given its two-level scales as stored (`new_two_level`, which
/// lsqr-runtime uses and whose stored form the integer kernels read)
/// computes what the same weight given the reader's f32 scales computes,
/// bit for bit: decoding, and linear at batch 1 and 3 on the integer path.
/// Super-blocks of 32 (a 64-column block spans two), partial super-blocks
/// (rows of 200), C = 4 with sub-blocks of 8 to 64 and C = 5, and rows
/// split over threads.
#[test]
fn two_level_scales_as_stored_equal_their_f32_scales() {
    let cases = [
        (4, TwoLevel::DEFAULT, [24, 512]),
        (4, TwoLevel::new(1024, 16, 4).unwrap(), [8, 2048]),
        (4, TwoLevel::new(256, 8, 4).unwrap(), [16, 512]),
        (4, TwoLevel::new(32, 8, 3).unwrap(), [8, 256]),
        (4, TwoLevel::new(256, 64, 6).unwrap(), [8, 512]),
        (4, TwoLevel::new(256, 32, 8).unwrap(), [5, 200]),
        (5, TwoLevel::DEFAULT, [24, 512]),
        (4, TwoLevel::new(1024, 16, 4).unwrap(), [1100, 1024]),
    ];
    for (bits, t, shape) in cases {
        let n = shape[0] * shape[1];
        let mut o = QuantizeOptions::new(CodecSpec::default_for(CodecKind::Lut), bits);
        o.scaling = Scaling::TwoLevel(t);
        let q = quantize(&random(n, 0.02, true, 11), &shape, &o).unwrap();
        let bytes = file_of(&q);
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { panic!("quantized") };
        let plain = from_view(&view).unwrap();
        let (sup, sub) = view.two_level_scales().unwrap();
        let stored = PackedWeight::new_two_level(
            view.packed(),
            bits,
            &shape,
            t,
            sup.clone(),
            sub.clone(),
            view.decode_table().to_vec(),
        )
        .unwrap();
        let what = format!("C={bits} {t:?} {shape:?}");
        assert_eq!(stored.int_form(), plain.int_form(), "{what}");
        let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
        dequantize_into(&plain, &mut a).unwrap();
        dequantize_into(&stored, &mut b).unwrap();
        assert_eq!(a, b, "{what}: decoded");
        for batch in [1, 3] {
            let x = random(batch * shape[1], 1.0, false, 12);
            let (mut a, mut b) = (vec![0.0f32; batch * shape[0]], vec![0.0f32; batch * shape[0]]);
            linear(&plain, None, &x, batch, &mut a).unwrap();
            linear(&stored, None, &x, batch, &mut b).unwrap();
            let bits_of = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits_of(&a), bits_of(&b), "{what}: linear, batch {batch}");
        }
        // Scales that do not match the shape are an error, not a guess.
        for (sup, sub) in [(&sup[1..], &sub[..]), (&sup[..], &sub[1..])] {
            let r = PackedWeight::new_two_level(
                view.packed(),
                bits,
                &shape,
                t,
                sup.to_vec(),
                sub.to_vec(),
                view.decode_table().to_vec(),
            );
            assert!(matches!(r, Err(OpError::LengthMismatch { .. })), "{what}");
        }
    }
}
