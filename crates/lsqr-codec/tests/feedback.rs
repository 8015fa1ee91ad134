//! Error-compensating rounding (`QuantizeOptions::feedback`): it changes
//! only the codes, leaves a diagonal covariance's nearest rounding alone,
//! and lowers the output error where inputs are correlated.

use std::sync::Arc;

use lsqr_codec::{quantize, CodecSpec, ErrorFeedback, QuantizeOptions, ScaleMethod, Scaling};

/// A deterministic uniform stream in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `mean(x xᵀ)` of `samples` inputs of `cols` features that share a few
/// latent signals (correlated, as real layer inputs are).
fn correlated_covariance(cols: usize, samples: usize) -> Vec<f32> {
    let latent = 4;
    let mix = noise(1, latent * cols);
    let z = noise(2, samples * latent);
    let own = noise(3, samples * cols);
    let x: Vec<f64> = (0..samples * cols)
        .map(|i| {
            let (s, c) = (i / cols, i % cols);
            let shared: f32 = (0..latent).map(|l| z[s * latent + l] * mix[l * cols + c]).sum();
            f64::from(shared + 0.1 * own[i])
        })
        .collect();
    let mut h = vec![0.0f32; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            let v: f64 = (0..samples).map(|s| x[s * cols + i] * x[s * cols + j]).sum();
            h[i * cols + j] = (v / samples as f64) as f32;
        }
    }
    h
}

fn options(codec: CodecSpec, bits: u32, feedback: Option<Arc<ErrorFeedback>>) -> QuantizeOptions {
    QuantizeOptions {
        scaling: Scaling::Group(32),
        scale_method: ScaleMethod::MseSearch,
        feedback,
        ..QuantizeOptions::new(codec, bits)
    }
}

#[test]
fn correlated_inputs_get_a_lower_output_error() {
    let (rows, cols) = (24, 128);
    let w = noise(7, rows * cols);
    let feedback =
        Arc::new(ErrorFeedback::from_covariance(&correlated_covariance(cols, 512), cols).unwrap());
    for codec in [CodecSpec::Log { mu: None }, CodecSpec::Lut, CodecSpec::Uniform, CodecSpec::Nf] {
        for bits in [2, 3, 4] {
            let nearest = quantize(&w, &[rows, cols], &options(codec.clone(), bits, None)).unwrap();
            let fed =
                quantize(&w, &[rows, cols], &options(codec.clone(), bits, Some(feedback.clone())))
                    .unwrap();
            // Same codebook and scales: only the codes differ.
            assert_eq!(nearest.codebook(), fed.codebook());
            assert_eq!(nearest.scales(), fed.scales());
            let e_nearest = feedback.output_error(&w, &nearest.dequantize());
            let e_fed = feedback.output_error(&w, &fed.dequantize());
            assert!(
                e_fed < 0.5 * e_nearest,
                "{codec:?} C={bits}: output error {e_fed} with feedback, {e_nearest} without"
            );
        }
    }
}

#[test]
fn a_diagonal_covariance_rounds_to_nearest() {
    let (rows, cols) = (8, 64);
    let w = noise(11, rows * cols);
    let mut h = vec![0.0f32; cols * cols];
    for i in 0..cols {
        h[i * cols + i] = 0.5 + (i % 5) as f32;
    }
    let feedback = Arc::new(ErrorFeedback::from_covariance(&h, cols).unwrap());
    for bits in [2, 4, 8] {
        let codec = CodecSpec::Log { mu: None };
        let nearest = quantize(&w, &[rows, cols], &options(codec.clone(), bits, None)).unwrap();
        let fed =
            quantize(&w, &[rows, cols], &options(codec, bits, Some(feedback.clone()))).unwrap();
        assert_eq!(nearest.codes(), fed.codes(), "C={bits}");
    }
}

#[test]
fn feedback_of_another_row_length_is_refused() {
    let w = noise(5, 4 * 64);
    let h: Vec<f32> = (0..32 * 32).map(|i| f32::from(u8::from(i % 33 == 0))).collect();
    let feedback = Arc::new(ErrorFeedback::from_covariance(&h, 32).unwrap());
    let err = quantize(&w, &[4, 64], &options(CodecSpec::Uniform, 4, Some(feedback))).unwrap_err();
    assert!(err.to_string().contains("64 columns"), "{err}");
}

#[test]
fn the_same_input_gives_the_same_codes() {
    let (rows, cols) = (6, 96);
    let w = noise(9, rows * cols);
    let h = correlated_covariance(cols, 200);
    let a = Arc::new(ErrorFeedback::from_covariance(&h, cols).unwrap());
    let b = Arc::new(ErrorFeedback::from_covariance(&h, cols).unwrap());
    let qa = quantize(&w, &[rows, cols], &options(CodecSpec::Lut, 3, Some(a))).unwrap();
    let qb = quantize(&w, &[rows, cols], &options(CodecSpec::Lut, 3, Some(b))).unwrap();
    assert_eq!(qa, qb);
}
