//! Parameter searches: μ of the `log` codebook, the `lut` table, and
//! per-group clipping ratios.
//!
//! μ and the table are fitted on a strided sample of the tensor (every
//! element when the tensor is small), each element weighted by its group's
//! scale squared, so the objective is the tensor's squared error in its own
//! units. The full tensor is then encoded once with the result.

use alloc::vec;
use alloc::vec::Vec;

use crate::codebook::{CodeWidth, Codebook};
use crate::quantize::{inverse, scale_of};
use crate::scale::GroupLayout;
use crate::scale_fit::Importance;

/// Elements sampled for the μ search. Large enough that the chosen μ is
/// within noise of the whole-tensor optimum, small enough that the search
/// costs less than one encoding pass of a large tensor.
pub(crate) const MU_SAMPLE: usize = 1 << 16;
/// Elements sampled to train a `lut` table.
pub(crate) const LUT_SAMPLE: usize = 1 << 18;
/// Elements sampled to retrain a `lut` table for fitted scales: it starts
/// from a trained table, and sorting the larger sample each round cost a
/// third of the quantizer's time for a 0.002 dB difference on MiniLM.
const REFINE_SAMPLE: usize = 1 << 16;

/// Elements taken at a fixed stride, divided by their group scales, with
/// each one's weight `s²` (the factor that turns an error at unit scale into
/// an error in the tensor's units). Elements of all-zero groups decode to 0
/// under every codebook, so they are left out, and so are those of groups
/// too small to invert (see [`inverse`]).
pub(crate) struct Sample {
    normalized: Vec<f32>,
    /// `s²`, in f64: f32 overflows for scales above ~1.8e19.
    weights: Vec<f64>,
}

impl Sample {
    /// Each element's weight is also multiplied by its importance.
    pub(crate) fn strided(
        data: &[f32],
        layout: &GroupLayout,
        scales: &[f32],
        importance: Importance<'_>,
        max: usize,
    ) -> Self {
        let stride = data.len().div_ceil(max).max(1);
        let (normalized, weights) = (0..data.len())
            .step_by(stride)
            .map(|i| (i, data[i], scale_of(scales, layout.group_of(i))))
            .filter(|&(_, _, s)| inverse(s) > 0.0)
            .map(|(i, x, s)| (x * inverse(s), weight(s) * f64::from(importance.at(i))))
            .unzip();
        Self { normalized, weights }
    }

    /// Σ s² (x/s - level(x/s))² over the sample.
    fn squared_error(&self, codebook: &Codebook) -> f64 {
        let table = codebook.decode_table();
        let mut codes = vec![0u16; self.normalized.len()];
        codebook.encode_scaled(&self.normalized, 1.0, &mut codes);
        self.normalized
            .iter()
            .zip(&self.weights)
            .zip(&codes)
            .map(|((&v, &w), &c)| {
                let e = f64::from(v) - f64::from(table[usize::from(c)]);
                w * e * e
            })
            .sum()
    }
}

/// `s²` as f64: the f32 product where it is finite (so results on ordinary
/// scales stay bit-identical to the f32 weights used before), else computed
/// in f64.
fn weight(s: f32) -> f64 {
    let w = s * s;
    if w.is_finite() {
        f64::from(w)
    } else {
        f64::from(s) * f64::from(s)
    }
}

/// The μ with the least squared error on the sample: a grid over
/// {0} ∪ {2^k : k = 0..=14} (μ up to 16384), then a golden-section
/// refinement of ln μ between the best point's neighbours.
pub(crate) fn best_mu(sample: &Sample, width: CodeWidth) -> f32 {
    let error_at = |mu: f64| -> f64 {
        let codebook = Codebook::log(width, mu as f32).expect("grid mu is finite and >= 0");
        sample.squared_error(&codebook)
    };
    let grid: Vec<f64> =
        core::iter::once(0.0).chain((0..=14).map(|k| libm::exp2(f64::from(k)))).collect();
    let errors: Vec<f64> = grid.iter().map(|&mu| error_at(mu)).collect();
    let best = (0..grid.len()).fold(0, |b, i| if errors[i] < errors[b] { i } else { b });
    if best == 0 {
        return 0.0;
    }
    // Search t = ln(μ) between the neighbours; a neighbour μ = 0 becomes
    // t = ln(1/2), since μ below 1/2 is within rounding of uniform here.
    let lo = libm::log(grid[best - 1].max(0.5));
    let hi = libm::log(grid[(best + 1).min(grid.len() - 1)]);
    let (t, e) = golden_section(lo, hi, 14, |t| error_at(libm::exp(t)));
    if e < errors[best] {
        libm::exp(t) as f32
    } else {
        grid[best] as f32
    }
}

/// Minimises `f` on [lo, hi] with `steps` golden-section steps; returns the
/// best point seen and its value.
fn golden_section(mut lo: f64, mut hi: f64, steps: usize, f: impl Fn(f64) -> f64) -> (f64, f64) {
    const INV_PHI: f64 = 0.618_033_988_749_894_8;
    let mut a = hi - INV_PHI * (hi - lo);
    let mut b = lo + INV_PHI * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..steps {
        if fa <= fb {
            hi = b;
            (b, fb) = (a, fa);
            a = hi - INV_PHI * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            (a, fa) = (b, fb);
            b = lo + INV_PHI * (hi - lo);
            fb = f(b);
        }
    }
    if fa <= fb {
        (a, fa)
    } else {
        (b, fb)
    }
}

/// The `lut` table for a tensor: Lloyd-Max started from the `log`
/// codebook with its best μ.
///
/// Lloyd iterations never increase the sample's squared error, so starting
/// from the searched `log` levels makes the trained table at least as good
/// as `log` on the sample; starting from quantiles instead converges too
/// slowly at 7-8 bits to get there.
pub(crate) fn train_lut(
    data: &[f32],
    layout: &GroupLayout,
    scales: &[f32],
    importance: Importance<'_>,
    width: CodeWidth,
) -> Vec<f32> {
    let mu = best_mu(&Sample::strided(data, layout, scales, importance, MU_SAMPLE), width);
    let log = Codebook::log(width, mu).expect("searched mu is finite and >= 0");
    // Sign-magnitude has two zero codes; the spare level goes in the middle
    // of the widest gap.
    let mut start: Vec<f64> = log.decode_table().iter().map(|&v| f64::from(v)).collect();
    start.sort_by(f64::total_cmp);
    start.dedup();
    while start.len() < width.code_count() {
        let gap = (1..start.len())
            .max_by(|&a, &b| (start[a] - start[a - 1]).total_cmp(&(start[b] - start[b - 1])));
        let at = gap.unwrap_or(1).min(start.len());
        let mid = if start.len() > 1 { (start[at - 1] + start[at]) / 2.0 } else { 0.0 };
        start.insert(at, mid);
    }
    lloyd_max(&Sample::strided(data, layout, scales, importance, LUT_SAMPLE), start, 1.0)
}

/// A `lut` table retrained by Lloyd-Max from `table` for new `scales`
/// (fitted to the error, so values may lie beyond the table's range: they
/// are not clamped, the outer levels follow them).
pub(crate) fn refine_lut(
    data: &[f32],
    layout: &GroupLayout,
    scales: &[f32],
    importance: Importance<'_>,
    table: &[f32],
) -> Vec<f32> {
    let start = table.iter().map(|&v| f64::from(v)).collect();
    let sample = Sample::strided(data, layout, scales, importance, REFINE_SAMPLE);
    lloyd_max(&sample, start, f32::INFINITY)
}

/// Lloyd-Max (1-D k-means) on the sample's normalised values `x / s`
/// (clamped to ±`limit`), weighted by `s²`, from ascending `levels`;
/// returns the ascending table.
///
/// The sorted sample with prefix sums makes each iteration cost
/// O(2^C log n): a cell's centroid is a difference of two prefix sums.
fn lloyd_max(sample: &Sample, mut levels: Vec<f64>, limit: f32) -> Vec<f32> {
    let k = levels.len();
    let mut points: Vec<(f32, f64)> = sample
        .normalized
        .iter()
        .zip(&sample.weights)
        .map(|(&v, &w)| (v.clamp(-limit, limit), w))
        .collect();
    if points.is_empty() {
        return levels.into_iter().map(|v| v as f32).collect();
    }
    // Unstable (and deterministic): equal values may swap, which changes
    // nothing but the order of additions into the prefix sums.
    points.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let n = points.len();
    let mut prefix_w = vec![0.0f64; n + 1];
    let mut prefix_wv = vec![0.0f64; n + 1];
    for (i, &(v, w)) in points.iter().enumerate() {
        prefix_w[i + 1] = prefix_w[i] + w;
        prefix_wv[i + 1] = prefix_wv[i] + w * f64::from(v);
    }
    let mut bounds = vec![0usize; k + 1];
    bounds[k] = n;
    for _ in 0..100 {
        for i in 1..k {
            let t = (levels[i - 1] + levels[i]) / 2.0;
            bounds[i] = points.partition_point(|p| f64::from(p.0) <= t);
        }
        let mut moved = 0.0f64;
        for i in 0..k {
            let w = prefix_w[bounds[i + 1]] - prefix_w[bounds[i]];
            if w > 0.0 {
                let c = (prefix_wv[bounds[i + 1]] - prefix_wv[bounds[i]]) / w;
                moved = moved.max((c - levels[i]).abs());
                levels[i] = c;
            }
        }
        if moved < 1e-7 {
            break;
        }
    }
    let mut table: Vec<f32> = levels.into_iter().map(|v| v as f32).collect();
    // Centroids of ordered cells stay ordered; f32 rounding cannot break
    // that, but make it a guarantee for `Codebook::lut`.
    table.sort_by(f32::total_cmp);
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::Scaling;

    fn laplace(n: usize) -> Vec<f32> {
        // Deterministic Laplacian-ish sample via inverse CDF of a ramp.
        (0..n)
            .map(|i| {
                let u = (i as f64 * 0.618_033_988_75).fract() - 0.5;
                let v = -u.signum() * libm::log(1.0 - 2.0 * u.abs() + 1e-12);
                v as f32
            })
            .collect()
    }

    #[test]
    fn golden_section_finds_parabola_minimum() {
        let (x, fx) = golden_section(-3.0, 5.0, 40, |x| (x - 1.25) * (x - 1.25) + 2.0);
        assert!((x - 1.25).abs() < 1e-6);
        assert!((fx - 2.0).abs() < 1e-9);
    }

    #[test]
    fn mu_search_beats_every_grid_point_on_heavy_tails() {
        let x = laplace(4096);
        let layout = GroupLayout::new(&[4096], Scaling::Tensor).unwrap();
        let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let sample = Sample::strided(&x, &layout, &[absmax], Importance::UNIFORM, MU_SAMPLE);
        let w = CodeWidth::new(4).unwrap();
        let mu = best_mu(&sample, w);
        let err = sample.squared_error(&Codebook::log(w, mu).unwrap());
        for k in 0..=28 {
            let grid_mu = libm::exp2(f64::from(k) / 2.0) as f32;
            assert!(err <= sample.squared_error(&Codebook::log(w, grid_mu).unwrap()));
        }
        assert!(mu > 1.0, "heavy tails want log spacing, got mu = {mu}");
    }

    #[test]
    fn lut_beats_uniform_and_its_log_start() {
        let x = laplace(8192);
        let layout = GroupLayout::new(&[8192], Scaling::Tensor).unwrap();
        let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let sample = Sample::strided(&x, &layout, &[absmax], Importance::UNIFORM, LUT_SAMPLE);
        for bits in [3, 6] {
            let w = CodeWidth::new(bits).unwrap();
            let lut = Codebook::lut(w, train_lut(&x, &layout, &[absmax], Importance::UNIFORM, w))
                .unwrap();
            let uniform = Codebook::uniform(w);
            let log = Codebook::log(w, best_mu(&sample, w)).unwrap();
            let lut_error = sample.squared_error(&lut);
            assert!(lut_error < 0.8 * sample.squared_error(&uniform), "C={bits}");
            assert!(lut_error <= sample.squared_error(&log), "C={bits}");
        }
    }
}
