//! Properties every codebook must have, for every family and every C in 2..=16.

use std::sync::OnceLock;

use lsqr_codec::{
    dequantize_codes, quantize, seed_reference_encode, CodeWidth, Codebook, CodecKind, CodecSpec,
    ErrorFeedback, FpLayout, QuantizeOptions, ScaleDtype, ScaleMethod, Scaling, TwoLevel,
};
use proptest::prelude::*;

/// One codebook of each family per width (`log` at three μ, `lut` from a
/// fixed pseudo-random table), built once.
fn codebooks() -> &'static [Codebook] {
    static BOOKS: OnceLock<Vec<Codebook>> = OnceLock::new();
    BOOKS.get_or_init(|| {
        let mut books = Vec::new();
        for bits in 2..=16 {
            let w = CodeWidth::new(bits).unwrap();
            books.push(Codebook::seed(w));
            for mu in [0.0, 5.0, 255.0, 16384.0] {
                books.push(Codebook::log(w, mu).unwrap());
            }
            books.push(Codebook::uniform(w));
            books.push(Codebook::nf(w));
            books.push(Codebook::fp(FpLayout::for_width(w)));
            books.push(Codebook::lut(w, pseudo_random_table(w)).unwrap());
        }
        books
    })
}

/// Ascending table with a few repeated entries, spanning about [-1.2, 0.9].
fn pseudo_random_table(w: CodeWidth) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(w.bits());
    let mut t: Vec<f32> = (0..w.code_count())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.1 - 1.2
        })
        .collect();
    t.sort_by(f32::total_cmp);
    if t.len() >= 4 {
        t[2] = t[1];
    }
    t
}

/// The distinct levels of a codebook, ascending.
fn sorted_levels(cb: &Codebook) -> Vec<f64> {
    let mut l: Vec<f64> = cb.decode_table().iter().map(|&v| f64::from(v)).collect();
    l.sort_by(f64::total_cmp);
    l.dedup();
    l
}

/// Asserts `code` decodes to a level nearest `x`, and on a tie to the one nearer zero.
fn assert_nearest(cb: &Codebook, levels: &[f64], x: f32, code: u16) {
    let got = f64::from(cb.decode_one(code).expect("code fits"));
    let x = f64::from(x);
    let i = levels.partition_point(|&l| l < x);
    let candidates =
        [i.checked_sub(1), Some(i)].into_iter().flatten().filter_map(|j| levels.get(j));
    for &l in candidates {
        let (dg, dl) = ((x - got).abs(), (x - l).abs());
        assert!(
            dg < dl || (dg == dl && got.abs() <= l.abs()),
            "{} C={}: x={x:e} took {got:e}, but {l:e} is nearer (or as near and nearer zero)",
            cb.kind(),
            cb.width().bits()
        );
    }
}

#[test]
fn tables_are_monotone_and_sized() {
    for cb in codebooks() {
        let t = cb.decode_table();
        let (kind, bits) = (cb.kind(), cb.width().bits());
        assert_eq!(t.len(), 1 << bits);
        assert!(t.iter().all(|v| v.is_finite()));
        match kind {
            CodecKind::Nf | CodecKind::Lut => {
                assert!(t.windows(2).all(|w| w[0] <= w[1]), "{kind} C={bits}");
            }
            _ => {
                // Sign-magnitude: ascending magnitudes, mirrored.
                let (pos, neg) = t.split_at(t.len() / 2);
                let first = usize::from(kind == CodecKind::Seed); // seed's k = 0 is unused
                assert!(pos[first..].windows(2).all(|w| w[0] <= w[1]), "{kind} C={bits}");
                assert!(pos.iter().zip(neg).all(|(p, n)| *n == -*p), "{kind} C={bits}");
                assert!(pos.iter().all(|&p| (0.0..=1.0).contains(&p)), "{kind} C={bits}");
            }
        }
        if kind != CodecKind::Seed && kind != CodecKind::Lut {
            assert_eq!(t.iter().fold(0.0f32, |m, v| m.max(v.abs())), 1.0, "{kind} C={bits}");
            assert!(t.contains(&0.0), "{kind} C={bits}");
        }
    }
}

/// Values right at, just below and just above every midpoint and every
/// level: where ties and off-by-one thresholds live.
#[test]
fn nearest_level_at_every_midpoint_and_level() {
    for cb in
        codebooks().iter().filter(|cb| cb.kind() != CodecKind::Seed && cb.width().bits() <= 10)
    {
        let levels = sorted_levels(cb);
        let mut probes: Vec<f32> = Vec::new();
        for w in levels.windows(2) {
            let mid = ((w[0] + w[1]) / 2.0) as f32;
            probes.extend([mid, next(mid, 1), next(mid, -1), w[0] as f32]);
        }
        probes.extend([-2.0, 2.0, 0.0, -0.0, 1e-30, -1e-30]);
        for x in probes {
            assert_nearest(cb, &levels, x, cb.encode_one(x));
        }
    }
}

fn next(x: f32, dir: i32) -> f32 {
    let up = (x > 0.0) == (dir > 0);
    if x == 0.0 {
        return f32::from_bits(1) * dir as f32;
    }
    f32::from_bits(if up { x.to_bits() + 1 } else { x.to_bits() - 1 })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_is_nearest_level_and_fits(book in 0..codebooks().len(), xs in prop::collection::vec(-1.5f32..1.5, 1..64)) {
        let cb = &codebooks()[book];
        let levels = sorted_levels(cb);
        for &x in &xs {
            let code = cb.encode_one(x);
            prop_assert!(code <= cb.width().max_code());
            if cb.kind() == CodecKind::Seed {
                prop_assert_eq!(code, seed_reference_encode(x, cb.width()));
            } else {
                assert_nearest(cb, &levels, x, code);
            }
        }
    }

    #[test]
    fn seed_thresholds_match_reference_bit_for_bit(bits in 2u32..=16, raw in any::<u32>(), k in 1u32..32767) {
        let w = CodeWidth::new(bits).unwrap();
        let cb = Codebook::seed(w);
        // Any f32 bit pattern, and inputs right around the formula's switch points.
        let x = f32::from_bits(raw);
        prop_assume!(!x.is_nan());
        prop_assert_eq!(cb.encode_one(x), seed_reference_encode(x, w));
        let b = f64::from(bits - 1);
        let switch = ((f64::from(k % (1 << (bits - 1))) + 0.5).log2() / b) as f32;
        for y in [switch, next(switch, 1), next(switch, -1), -switch, -next(switch, 1)] {
            prop_assert_eq!(cb.encode_one(y), seed_reference_encode(y, w), "y = {:e}", y);
        }
    }

    #[test]
    fn quantize_dequantize_round_trip(
        kind in 0usize..6,
        bits in 2u32..=16,
        rows in 0usize..5,
        cols in 0usize..200,
        scaling in 0usize..6,
        mse in any::<bool>(),
        f32_scales in any::<bool>(),
        weighted in any::<bool>(),
        fed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let kind = CodecKind::ALL[kind];
        let scaling = [
            Scaling::Unit,
            Scaling::Tensor,
            Scaling::Row,
            Scaling::Group(16),
            Scaling::TwoLevel(TwoLevel::new(32, 8, 3).unwrap()),
            Scaling::TwoLevel(TwoLevel::DEFAULT),
        ][scaling];
        let mut state = seed | 1;
        let xs: Vec<f32> = (0..rows * cols).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        }).collect();
        let options = QuantizeOptions {
            codec: CodecSpec::default_for(kind),
            bits,
            scaling,
            scale_dtype: if f32_scales { ScaleDtype::F32 } else { ScaleDtype::F16 },
            scale_method: if mse { ScaleMethod::MseSearch } else { ScaleMethod::AbsMax },
            // Importance weights from 0 to 3 by column (column 0 counts 0).
            importance: (weighted && rows > 0 && cols > 0)
                .then(|| (0..cols).map(|c| (c % 4) as f32).collect::<Vec<_>>())
                .filter(|w| w.iter().any(|&v| v > 0.0)),
            // A covariance with correlated neighbours, for error feedback.
            feedback: (fed && cols > 0).then(|| {
                let h: Vec<f32> = (0..cols * cols)
                    .map(|k| match (k / cols).abs_diff(k % cols) {
                        0 => 1.0,
                        1 => 0.45,
                        _ => 0.0,
                    })
                    .collect();
                std::sync::Arc::new(ErrorFeedback::from_covariance(&h, cols).unwrap())
            }),
        };
        let q = quantize(&xs, &[rows, cols], &options).unwrap();
        prop_assert_eq!(q.codes().len(), xs.len());
        prop_assert!(q.codes().iter().all(|&c| c <= CodeWidth::new(bits).unwrap().max_code()));
        let expected_scales = if scaling == Scaling::Unit { 0 } else { q.layout().group_count() };
        prop_assert_eq!(q.scales().values().len(), expected_scales);
        let ys = q.dequantize();
        // Every reconstruction is its code's level times its group's scale.
        let mut again = vec![0.0; xs.len()];
        dequantize_codes(q.codebook(), q.layout(), q.scale_values(), q.codes(), &mut again).unwrap();
        prop_assert_eq!(&ys, &again);
        let table = q.codebook().decode_table();
        for (i, (&x, &y)) in xs.iter().zip(&ys).enumerate() {
            let g = q.layout().group_of(i);
            let s = q.scales().values().get(g).copied().unwrap_or(1.0);
            prop_assert_eq!(y, table[usize::from(q.codes()[i])] * s);
            if kind != CodecKind::Seed && !mse && !fed && scaling != Scaling::Unit {
                // Absmax scaling never clips: the error is at most the
                // largest gap between adjacent levels, times the scale.
                let levels = sorted_levels(q.codebook());
                let gap = levels.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
                let span_ok = kind == CodecKind::Lut || f64::from((x - y).abs()) <= gap * f64::from(s) + 1e-7;
                prop_assert!(span_ok, "{} C={} x={} y={} s={}", kind, bits, x, y, s);
            }
        }
    }
}

/// A group of 64 values of one magnitude class: dead (f32 subnormals and
/// tiny normals, 1e-45..1e-30, far below f16's smallest subnormal; or
/// subnormals below 1 / f32::MAX only, whose inverse overflows), at f16's
/// smallest scales, ordinary, or large; some groups all zero.
fn magnitude_group() -> impl Strategy<Value = Vec<f32>> {
    let class = prop_oneof![
        Just((-45.0f32, -30.0f32)),
        Just((-45.0, -38.6)),
        Just((-8.0, -7.0)),
        Just((-3.0, 1.0)),
        Just((3.0, 4.8)),
        Just((0.0, 0.0)),
    ];
    class.prop_flat_map(|(lo, hi)| {
        proptest::collection::vec((lo..=hi, any::<bool>(), 0u8..10), 64).prop_map(move |v| {
            v.into_iter()
                .map(|(e, negative, zero)| {
                    if hi == 0.0 || zero == 0 {
                        return 0.0;
                    }
                    let x = 10f64.powf(f64::from(e)) as f32;
                    if negative {
                        -x
                    } else {
                        x
                    }
                })
                .collect()
        })
    })
}

/// Squared error of `decoded` against `original`, and of zeros.
fn errors(original: &[f32], decoded: &[f32]) -> (f64, f64) {
    original.iter().zip(decoded).fold((0.0, 0.0), |(e, z), (&x, &y)| {
        let (x, y) = (f64::from(x), f64::from(y));
        (e + (x - y) * (x - y), z + x * x)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// With the default options (groups of 64, f16 absmax scales) every
    /// codec takes any finite tensor whose magnitudes fit f16's range, dead
    /// channels included (issue 11): no error, and no group decodes worse
    /// than zeros would. A group too small for an f16 scale gets scale 0
    /// or f16's smallest subnormal, whichever is better. The same holds
    /// with f32 scales for values up to f32::MAX / 2.
    ///
    /// Two-level scales (256/32/6, so a row of 64 is one super-block of two
    /// sub-blocks) take the same tensors, and no sub-block decodes worse
    /// than zeros: a dead row's raw absmax scale is subnormal, too small
    /// to invert, and once made `lut`'s table NaN (PP-OCRv4 rec's folded
    /// batch norms have such rows).
    #[test]
    fn default_options_take_any_finite_magnitudes(
        groups in proptest::collection::vec(magnitude_group(), 1..6),
        huge in proptest::collection::vec((0usize..64, 30.0f32..38.23), 0..4),
        kind in 0usize..CodecKind::ALL.len(),
        bits in 2u32..=8,
        mse in any::<bool>(),
        two_level in any::<bool>(),
    ) {
        let kind = CodecKind::ALL[kind];
        let rows = groups.len();
        let data: Vec<f32> = groups.concat();
        let method = if mse { ScaleMethod::MseSearch } else { ScaleMethod::AbsMax };
        let mut options = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
        options.scale_method = method;
        if two_level {
            options.scaling = Scaling::TwoLevel(TwoLevel::DEFAULT);
        }
        let mut wide = data.clone();
        for (k, &(at, e)) in huge.iter().enumerate() {
            let x = (10f64.powf(f64::from(e)) as f32).min(f32::MAX / 2.0);
            wide[(k % rows) * 64 + at] = if k % 2 == 0 { x } else { -x };
        }
        for (values, dtype) in [(&data, ScaleDtype::F16), (&wide, ScaleDtype::F32)] {
            options.scale_dtype = dtype;
            let q = quantize(values, &[rows, 64], &options)
                .unwrap_or_else(|e| panic!("{kind} C={bits} {dtype:?}: {e}"));
            let decoded = q.dequantize();
            prop_assert!(decoded.iter().all(|v| v.is_finite()));
            let group = if two_level { 32 } else { 64 };
            for (g, (x, y)) in values.chunks(group).zip(decoded.chunks(group)).enumerate() {
                let (err, zeros) = errors(x, y);
                prop_assert!(
                    err <= zeros,
                    "{} C={} {:?} group {}: error {:e} > zeros {:e}",
                    kind, bits, dtype, g, err, zeros
                );
            }
            let m = q.metrics_against(values).unwrap();
            prop_assert!(m.error_energy <= m.signal_energy);
        }
    }
}
