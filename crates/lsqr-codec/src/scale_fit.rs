//! Scales fitted to the error rather than to the largest magnitude.
//!
//! An absmax scale wastes levels: it spends the codebook's outermost level
//! on one outlier per group and leaves the bulk of the values on a coarse
//! grid. For each block this module tries a range of scales around the
//! absmax one, re-chooses the codes for every candidate (the nearest level),
//! and then refits the scale to those codes by least squares, which is the
//! exact optimum for fixed codes: `s = Σ x·t / Σ t²`. The best refitted
//! scale wins. This is the search ggml's IQ4_NL quantizer does, without its
//! importance weights.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;

use crate::codebook::Codebook;
use crate::scale::{GroupLayout, ScaleDtype};
use crate::CodecError;

/// Candidate scales as multiples of the absmax scale (`absmax / peak`):
/// 0.70 to 1.15 in steps of 0.05. Each candidate is refitted, so the grid
/// only has to land in the right basin: on MiniLM at C = 4, 19 candidates
/// in steps of 0.025, or three more refits of the best, change the SNR by
/// under 0.005 dB.
const CANDIDATES: [f32; 10] = [0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 1.00, 1.05, 1.10, 1.15];

/// How much each element's squared error counts: one weight per column of
/// the `[d0, d1 * d2 * ...]` view (the input features of a linear layer, or
/// the input channel × tap of a convolution), or uniform when empty. With
/// weights `E[x_k²]` over calibration inputs, `Σ w (x - x̂)²` is the layer's
/// expected output error from its weight error (cross terms aside): what
/// llama.cpp's importance matrix does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Importance<'a> {
    per_column: &'a [f32],
}

impl<'a> Importance<'a> {
    /// Every element counts the same.
    pub(crate) const UNIFORM: Importance<'static> = Importance { per_column: &[] };

    pub(crate) fn new(per_column: &'a [f32]) -> Self {
        Self { per_column }
    }

    /// The weight of element `i` (row-major).
    pub(crate) fn at(&self, i: usize) -> f32 {
        match self.per_column.len() {
            0 => 1.0,
            cols => self.per_column[i % cols],
        }
    }

    /// The weights of the elements in `range` (empty when uniform): a
    /// slice when the range stays in one row, as every group but a
    /// whole-tensor one does.
    pub(crate) fn of(&self, range: core::ops::Range<usize>) -> Cow<'a, [f32]> {
        let cols = self.per_column.len();
        if cols == 0 {
            return Cow::Borrowed(&[]);
        }
        let start = range.start % cols;
        if start + range.len() <= cols {
            Cow::Borrowed(&self.per_column[start..start + range.len()])
        } else {
            Cow::Owned(range.map(|i| self.at(i)).collect())
        }
    }
}

/// Fits scales of blocks under one codebook; holds the scratch codes.
pub(crate) struct BlockFitter<'c> {
    codebook: &'c Codebook,
    table: &'c [f32],
    /// The largest level magnitude: the absmax scale maps a block's largest
    /// magnitude onto it.
    peak: f32,
    codes: Vec<u16>,
    /// The levels of `codes`.
    levels: Vec<f32>,
}

impl<'c> BlockFitter<'c> {
    pub(crate) fn new(codebook: &'c Codebook) -> Self {
        let table = codebook.decode_table();
        let peak = table.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        Self { codebook, table, peak, codes: Vec::new(), levels: Vec::new() }
    }

    /// The scale that maps `absmax` onto the codebook's largest level.
    pub(crate) fn absmax_scale(&self, absmax: f32) -> f32 {
        if self.peak > 0.0 {
            absmax / self.peak
        } else {
            absmax
        }
    }

    /// The continuous scale (not yet rounded to a dtype) with the least
    /// squared error found for `xs`, whose largest magnitude is `absmax`;
    /// 0 for an all-zero block, and `absmax`'s scale for one too small to
    /// invert.
    ///
    /// The sums run on values divided by the absmax scale, so they stay
    /// near 1 in f32 whatever the block's magnitude (any finite f32).
    pub(crate) fn best_scale(&mut self, xs: &[f32], imp: &[f32], absmax: f32) -> f32 {
        self.best_scale_and_weight(xs, imp, absmax).0
    }

    /// [`BlockFitter::best_scale`], and the weight `w = Σ t²` of its codes:
    /// moving the scale from its optimum `σ` to `s` adds about
    /// `w (s - σ)²` to the block's squared error (exactly, for fixed
    /// codes), which is what sharing a super-scale trades off.
    /// `imp` weighs each element's squared error (empty: uniform).
    pub(crate) fn best_scale_and_weight(
        &mut self,
        xs: &[f32],
        imp: &[f32],
        absmax: f32,
    ) -> (f32, f64) {
        let base = self.absmax_scale(absmax);
        if base.is_nan() || base < f32::MIN_POSITIVE || !base.is_finite() {
            return (base.max(0.0), 0.0);
        }
        let inv = 1.0 / base;
        let sxx = weighted_sum(xs, imp, |x, _| (x * inv) * (x * inv), &[]);
        let mut best = (f64::INFINITY, base, 0.0f64);
        for ratio in CANDIDATES {
            // In units of `s = base * ratio`: x' = x / s, and the error of
            // the refit is (Σx'² - (Σx't)² / Σt²) s², compared here in
            // units of base².
            self.codes.resize(xs.len(), 0);
            self.codebook.encode_scaled(xs, inv / ratio, &mut self.codes);
            let (sxt, stt) = self.correlation(xs, imp, inv);
            let sxt = sxt / f64::from(ratio);
            if sxt > 0.0 && stt > 0.0 {
                let r = f64::from(ratio);
                let error = sxx - r * r * sxt * sxt / stt;
                let refit = base * ratio * (sxt / stt) as f32;
                if error < best.0 && refit.is_finite() && refit > 0.0 {
                    best = (error, refit, stt);
                }
            }
        }
        (best.1, best.2)
    }

    /// `(Σ (x·inv)·t, Σ t²)` over the current codes' levels `t`, in f32
    /// within chunks of 256 and f64 across them.
    fn correlation(&self, xs: &[f32], imp: &[f32], inv: f32) -> (f64, f64) {
        if !imp.is_empty() {
            let levels: Vec<f32> = self.codes.iter().map(|&c| self.table[usize::from(c)]).collect();
            let sxt = weighted_sum(xs, imp, |x, t| x * inv * t, &levels);
            let stt = weighted_sum(xs, imp, |_, t| t * t, &levels);
            return (sxt, stt);
        }
        let (mut sxt, mut stt) = (0.0f64, 0.0f64);
        for (xc, cc) in xs.chunks(256).zip(self.codes.chunks(256)) {
            let (mut a, mut b) = (0.0f32, 0.0f32);
            for (&x, &c) in xc.iter().zip(cc) {
                let t = self.table[usize::from(c)];
                a += x * inv * t;
                b += t * t;
            }
            sxt += f64::from(a);
            stt += f64::from(b);
        }
        (sxt, stt)
    }

    /// Codes nearest to `x * inv_scale`, and their levels.
    fn encode(&mut self, xs: &[f32], inv_scale: f32) {
        self.codes.resize(xs.len(), 0);
        self.codebook.encode_scaled(xs, inv_scale, &mut self.codes);
        self.levels.clear();
        self.levels.extend(self.codes.iter().map(|&c| self.table[usize::from(c)]));
    }

    /// The squared error of `xs` decoded at exactly scale `s` (the
    /// decoder's f32 product `level * s`), codes re-chosen, in units of
    /// `unit²` so that it stays finite for any finite input.
    pub(crate) fn error_at(&mut self, xs: &[f32], imp: &[f32], s: f32, unit: f32) -> f64 {
        let inv_unit = 1.0 / unit;
        if s == 0.0 {
            return weighted_sum(xs, imp, |x, _| (x * inv_unit) * (x * inv_unit), &[]);
        }
        self.encode(xs, 1.0 / s);
        weighted_sum(
            xs,
            imp,
            |x, t| {
                let e = x * inv_unit - t * s * inv_unit;
                e * e
            },
            &self.levels,
        )
    }
}

/// `Σ w_i f(x_i, t_i)` (t empty: `f(x_i, 0)`; w empty: 1), summed in f32
/// within chunks of 256 and in f64 across them: fast for blocks, and exact
/// enough for a whole-tensor block of millions.
fn weighted_sum(xs: &[f32], ws: &[f32], f: impl Fn(f32, f32) -> f32, ts: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for (k, chunk) in xs.chunks(256).enumerate() {
        let t = |j: usize| ts.get(k * 256 + j).copied().unwrap_or(0.0);
        let part: f32 = if ws.is_empty() {
            chunk.iter().enumerate().map(|(j, &x)| f(x, t(j))).sum()
        } else {
            let w = &ws[k * 256..];
            chunk.iter().enumerate().map(|(j, &x)| w[j] * f(x, t(j))).sum()
        };
        total += f64::from(part);
    }
    total
}

/// Per group, the scale with the least squared error: the refitted scale
/// rounded to `dtype`, or the absmax scale (`absmax_scales`, already rounded
/// up) where that is better, so the result is never worse than absmax.
pub(crate) fn fitted_group_scales(
    data: &[f32],
    layout: &GroupLayout,
    codebook: &Codebook,
    dtype: ScaleDtype,
    absmax_scales: &[f32],
    importance: Importance<'_>,
) -> Result<Vec<f32>, CodecError> {
    let mut fitter = BlockFitter::new(codebook);
    let mut scales = Vec::with_capacity(layout.group_count());
    for ((g, range), &fallback) in layout.groups().enumerate().zip(absmax_scales) {
        let imp = importance.of(range.clone());
        let xs = &data[range];
        let absmax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // A fitted scale beyond f16's range (absmax near 65504, ratio > 1)
        // is not a candidate; absmax is.
        let fitted = dtype.round_nearest(g, fitter.best_scale(xs, &imp, absmax)).unwrap_or(0.0);
        let keep_fitted = fitted > 0.0
            && fitter.error_at(xs, &imp, fitted, absmax)
                < fitter.error_at(xs, &imp, fallback, absmax);
        scales.push(if keep_fitted { fitted } else { fallback });
    }
    Ok(scales)
}

/// How two-level scales are chosen.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TwoLevelFit {
    /// Each sub-block's scale covers its largest magnitude: nothing clips.
    AbsMax,
    /// Sub-block scales fitted to the error, then each sub-scale chosen
    /// among its rounding neighbours by the error they give.
    Mse,
}

/// Two-level scales for `layout` (which has them): one super-scale per
/// super-block, in `dtype`, and one sub-scale per sub-block.
///
/// The super-scale is the largest sub-block scale divided by `2^k - 1`, so
/// the sub-scales use their whole range where it matters most.
pub(crate) fn two_level_scales(
    data: &[f32],
    layout: &GroupLayout,
    codebook: &Codebook,
    dtype: ScaleDtype,
    fit: TwoLevelFit,
    importance: Importance<'_>,
) -> Result<(Vec<f32>, Vec<u8>), CodecError> {
    let shape = layout.two_level().expect("the layout has two-level scales");
    let sub_max = shape.sub_max();
    let mut fitter = BlockFitter::new(codebook);
    let mut supers = vec![0.0f32; layout.super_count()];
    let mut subs = vec![0u8; layout.group_count()];
    let groups: Vec<_> = layout.groups().collect();
    let mut sigmas = Vec::with_capacity(shape.subs_per_super());
    let mut g = 0;
    while g < groups.len() {
        let b = layout.super_of(g);
        let end = (g..groups.len()).find(|&h| layout.super_of(h) != b).unwrap_or(groups.len());
        sigmas.clear();
        for range in &groups[g..end] {
            let xs = &data[range.clone()];
            let absmax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            sigmas.push(match fit {
                TwoLevelFit::AbsMax => (fitter.absmax_scale(absmax), 0.0),
                TwoLevelFit::Mse => {
                    fitter.best_scale_and_weight(xs, &importance.of(range.clone()), absmax)
                }
            });
        }
        let largest = sigmas.iter().fold(0.0f32, |m, &(s, _)| m.max(s));
        let ideal = match fit {
            TwoLevelFit::AbsMax => largest / sub_max as f32,
            TwoLevelFit::Mse => shared_scale(&sigmas, sub_max),
        };
        let d = super_scale(b, ideal, largest, dtype, fit)?;
        supers[b] = d;
        for (j, &(sigma, _)) in sigmas.iter().enumerate() {
            let range = groups[g + j].clone();
            let imp = importance.of(range.clone());
            subs[g + j] = sub_scale(&mut fitter, &data[range], &imp, sigma, d, sub_max, fit);
        }
        g = end;
    }
    Ok((supers, subs))
}

/// The super-scale `d` that best serves sub-blocks with optimal scales `σ_j`
/// and weights `w_j`: least `Σ w_j (d q_j - σ_j)²` over `d` and integers
/// `q_j` in 0..=`sub_max`, by alternating the two from `max σ / sub_max`
/// (each step lowers the sum). Starting from the largest sub-block gives
/// it the top sub-scale exactly; the alternation instead lets a small `d`
/// serve the many small sub-blocks better when the largest one can bear a
/// little clipping.
fn shared_scale(sigmas: &[(f32, f64)], sub_max: u32) -> f32 {
    let largest = sigmas.iter().fold(0.0f32, |m, &(s, _)| m.max(s));
    let mut d = f64::from(largest) / f64::from(sub_max);
    if d.is_nan() || d <= 0.0 {
        return 0.0;
    }
    for _ in 0..4 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for &(sigma, w) in sigmas {
            let q = libm::round(f64::from(sigma) / d).clamp(0.0, f64::from(sub_max));
            num += w * q * f64::from(sigma);
            den += w * q * q;
        }
        if den.is_nan() || den <= 0.0 {
            break;
        }
        d = num / den;
    }
    d as f32
}

/// The stored super-scale for `ideal` (the largest sub-block scale over
/// `2^k - 1`): rounded up for absmax (so that no sub-block clips), to
/// nearest when fitted; the dtype's smallest positive value when that
/// rounding gives 0 for a block that is not all zeros.
fn super_scale(
    block: usize,
    ideal: f32,
    largest: f32,
    dtype: ScaleDtype,
    fit: TwoLevelFit,
) -> Result<f32, CodecError> {
    if largest.is_nan() || largest <= 0.0 {
        return Ok(0.0);
    }
    let d = match fit {
        TwoLevelFit::AbsMax => dtype.round(block, ideal)?,
        TwoLevelFit::Mse => dtype.round_nearest(block, ideal)?,
    };
    Ok(if d > 0.0 { d } else { dtype.smallest() })
}

/// The sub-scale `q` (scale `d * q`) of one sub-block whose ideal scale is
/// `sigma`.
fn sub_scale(
    fitter: &mut BlockFitter<'_>,
    xs: &[f32],
    imp: &[f32],
    sigma: f32,
    d: f32,
    sub_max: u32,
    fit: TwoLevelFit,
) -> u8 {
    if d == 0.0 || sigma == 0.0 {
        return 0;
    }
    let ratio = sigma / d;
    let q = match fit {
        // Up, so the sub-block's largest magnitude stays within range.
        TwoLevelFit::AbsMax => libm::ceilf(ratio),
        TwoLevelFit::Mse => libm::roundf(ratio),
    };
    let q = (q as u32).min(sub_max);
    if fit == TwoLevelFit::AbsMax {
        return q as u8;
    }
    let lo = q.saturating_sub(1);
    let hi = (q + 1).min(sub_max);
    let mut best = (f64::INFINITY, q);
    for candidate in lo..=hi {
        let error = fitter.error_at(xs, imp, d * candidate as f32, sigma);
        if error < best.0 {
            best = (error, candidate);
        }
    }
    best.1 as u8
}
