//! The reference LSQR codec, reproduced bit for bit.
//!
//! The reference encoder (`float_to_logsigned` in the reference README) is
//! a formula, not a nearest-level search: it rounds `2^B - 2^(B|M|)` in the
//! linear domain. It is monotone in |M|, so it is exactly a threshold
//! search; the thresholds are found here by evaluating the formula itself
//! at neighbouring f32 values, which keeps the table encoder bit-exact with
//! [`seed_reference_encode`] for every f32 input.

use alloc::vec::Vec;

use super::threshold::{next_down, next_up, Layout, ThresholdTable};
use super::CodeWidth;

/// The reference `float_to_logsigned(M, B)` for B = C - 1, in f64 as the
/// reference computes it: clip M to [-1, 1]; n = 1 if M < 0;
/// N = round-half-even(2^B - 2^(B|M|)) clamped to [1, 2^B - 1];
/// code = (n << B) | (2^B - N).
///
/// This is the readable definition; [`Codebook::seed`](super::Codebook::seed)
/// encodes with a threshold table proven equal to it by tests.
/// NaN is the caller's to reject: it has no reference code.
pub fn seed_reference_encode(m: f32, width: CodeWidth) -> u16 {
    let b = width.magnitude_bits();
    let m = f64::from(m).clamp(-1.0, 1.0);
    let n = u16::from(m < 0.0);
    (n << b) | reference_k(m.abs(), b)
}

/// The magnitude field k = 2^B - N of the reference for |M| = `a` in [0, 1].
fn reference_k(a: f64, b: u32) -> u16 {
    let two_b = f64::from(1u32 << b);
    let target = libm::pow(2.0, f64::from(b) * a);
    let n = libm::rint(two_b - target).clamp(1.0, two_b - 1.0);
    (two_b - n) as u16
}

/// Decode table and threshold encoder of the seed codebook.
pub(super) fn tables(width: CodeWidth) -> (Vec<f32>, ThresholdTable) {
    let b = width.magnitude_bits();
    let half = 1u32 << b;
    let decode_table = decode_table(width);

    // Slots are k = 1..=2^B - 1; threshold k separates k from k + 1.
    let thresholds = (1..half - 1).map(|k| last_input_with_k_at_most(k as u16, b)).collect();
    let layout = Layout::SignMagnitude { sign_shift: b, zero_keeps_sign: true };
    (decode_table, ThresholdTable::new(layout, thresholds, 1))
}

/// `(-1)^n * log2(k) / B` for code `(n << B) | k`; k = 0 decodes to 0.
pub(super) fn decode_table(width: CodeWidth) -> Vec<f32> {
    let b = width.magnitude_bits();
    let decode = move |n: u32, k: u32| -> f32 {
        let magnitude = if k == 0 { 0.0 } else { libm::log2(f64::from(k)) / f64::from(b) };
        let value = if n == 1 && k != 0 { -magnitude } else { magnitude };
        value as f32
    };
    (0..2u32).flat_map(|n| (0..1u32 << b).map(move |k| decode(n, k))).collect()
}

/// The largest f32 `a` in [0, 1] with `reference_k(a) <= k`.
///
/// The formula switches from k to k + 1 near `a = log2(k + 0.5) / B`; the
/// estimate is then walked one f32 at a time against the formula itself.
fn last_input_with_k_at_most(k: u16, b: u32) -> f32 {
    let k_at = |a: f32| reference_k(f64::from(a), b);
    let estimate = (libm::log2(f64::from(k) + 0.5) / f64::from(b)) as f32;
    let mut a = estimate.clamp(0.0, 1.0);
    while a > 0.0 && k_at(a) > k {
        a = next_down(a);
    }
    while a < 1.0 && k_at(next_up(a)) <= k {
        a = next_up(a);
    }
    a
}
