//! `--bpw B`: a size budget instead of one code width. Each tensor gets the
//! code width and scale layout that, together, give the least total squared
//! error (the most weighted SNR) for at most B bits per quantized weight,
//! counting everything stored: codes, scales and tables.
//!
//! Why per tensor: the weighted SNR pools error energy, and tensors differ
//! by an order of magnitude in energy per weight (MiniLM's attention query
//! and key matrices against its embeddings), so a bit buys much more in
//! some than in others.

use std::collections::BTreeMap;

use lsqr::codec::{GroupLayout, ScaleDtype, Scaling, TwoLevel};
use lsqr_import::{SourceModel, SourceTensor};
use rayon::prelude::*;

use lsqr::codec::CodecKind;

use crate::pipeline::{best_quantization, Action, CodecChoice, PipelineError, Settings};

/// Elements of each tensor, in whole rows spread over the tensor, that the
/// candidates are measured on. On MiniLM, samples of 2^15, 2^16 and 2^17
/// lead to plans within 0.02 dB of each other; 2^15 keeps the twenty
/// candidates per tensor at about twice one full quantization.
const SAMPLE_ELEMENTS: usize = 1 << 15;

/// The scale layouts tried when `--group` is not given: two-level scales
/// from 3-bit sub-scales per 32 elements to 4-bit per 8 (0.09 to 0.5 bits
/// per weight of sub-scales), and 6-bit per 32 (ggml's). Super-blocks of
/// 1024 make one per row for most rows (a row of 384 pays for two
/// super-blocks of 256). On MiniLM these are the efficient ones among 2- to
/// 6-bit sub-scales over sub-blocks of 8 to 32, and each of the five lifts
/// the SNR at one of the budgets 3.25, 4.25 and 5.25. And one scale per
/// row, for short rows (a 3x3 convolution over 16 channels has rows of
/// 144), where a super-scale per row costs more than the row scale.
pub fn default_layouts() -> Vec<Scaling> {
    [(1024, 32, 3), (1024, 32, 4), (1024, 16, 3), (1024, 16, 4), (1024, 8, 4), (1024, 32, 6)]
        .into_iter()
        .map(|(s, b, k)| Scaling::TwoLevel(TwoLevel::new(s, b, k).expect("valid shape")))
        .chain([Scaling::Row])
        .collect()
}

/// The widths tried from `base` (see [`base_width`]): to two above (4..=6
/// for 4.25 bits per weight), within 2..=8, and from one below for a
/// tensor whose error is weighed by what it does (`informed`: importance
/// weights or a calibrated gain). Weighed by weight error alone, a tensor
/// of small weights is cheap to starve whatever the model's dependence on
/// it, so a plan never takes such a tensor below the width the budget
/// affords all of them.
fn widths_for(base: u32, informed: bool) -> std::ops::RangeInclusive<u32> {
    let low = if informed { base.saturating_sub(1).max(2) } else { base };
    low..=(base + 2).min(8)
}

/// The width the budget affords every tensor: the largest C (at most the
/// integer part of `bpw`, within 2..=8) at which every quantized tensor,
/// stored with its cheapest layout and its scales and table, fits `bpw`.
/// So `--bpw 4` plans from C = 3, since C = 4 with any scales takes more
/// than 4 bits; the stored sizes follow from the shapes alone. (A plan
/// whose retained candidates still do not fit steps one width lower, see
/// [`plan`].)
pub fn base_width(model: &SourceModel, settings: &Settings, bpw: f64, layouts: &[Scaling]) -> u32 {
    let tensors = quantizable(model, settings);
    let weights: u64 = tensors.iter().map(|t| t.element_count() as u64).sum();
    let budget = (bpw * weights as f64).floor() as u64;
    let lut = matches!(settings.codec, CodecChoice::Auto | CodecChoice::Fixed(CodecKind::Lut));
    let top = bpw.floor().clamp(2.0, 8.0) as u32;
    let fits = |bits: u32| {
        let least = tensors.iter().map(|t| {
            let sizes =
                layouts.iter().map(|&l| stored_bits(&t.shape, bits, l, settings.scale_dtype, lut));
            sizes.min().unwrap_or(0)
        });
        least.fold(0u64, u64::saturating_add) <= budget
    };
    (2..=top).rev().find(|&bits| fits(bits)).unwrap_or(2)
}

/// A `--bpw` request.
#[derive(Debug, Clone)]
pub struct Budget {
    /// At most this many bits per quantized weight, everything stored.
    pub bits_per_weight: f64,
    /// The scale layouts to choose among.
    pub layouts: Vec<Scaling>,
    /// `--calibrate`: samples (.npz) to weigh tensors by their effect on
    /// the outputs of the model's graph.
    pub calibrate: Option<std::path::PathBuf>,
    /// `--error-feedback`: with `calibrate`, error-compensating rounding
    /// by each tensor's measured input covariance.
    pub error_feedback: bool,
}

/// One way to store a tensor, measured on its sample.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    bits: u32,
    scaling: Scaling,
    /// Bits the tensor takes in the file (exact, from its shape).
    stored_bits: u64,
    /// Squared error, estimated for the whole tensor.
    error: f64,
}

/// What `--bpw` chose.
#[derive(Debug, Clone)]
pub struct BudgetPlan {
    /// Width and scale layout per tensor name.
    pub choices: BTreeMap<String, (u32, Scaling)>,
    /// Bits per quantized weight the choices store.
    pub bits_per_weight: f64,
}

/// Chooses a width and layout per quantizable tensor of `model` for at
/// most `bpw` bits per quantized weight. An error if even the smallest
/// candidates exceed the budget (naming the least budget that fits).
///
/// `gains` (from [`crate::calibrate`]) weigh each tensor's error by its
/// effect on the outputs; a tensor without a gain gets the median gain.
pub fn plan(
    model: &SourceModel,
    settings: &Settings,
    bpw: f64,
    layouts: &[Scaling],
    gains: Option<&BTreeMap<String, f64>>,
) -> Result<BudgetPlan, PipelineError> {
    let tensors = quantizable(model, settings);
    let informed = |t: &SourceTensor| {
        settings.importance.contains_key(&t.name) || gains.is_some_and(|g| g.contains_key(&t.name))
    };
    let weights: u64 = tensors.iter().map(|t| t.element_count() as u64).sum();
    let budget = (bpw * weights as f64).floor() as u64;
    let mut base = base_width(model, settings, bpw, layouts);
    let (candidates, picks) = loop {
        let mut candidates: Vec<Vec<Candidate>> = tensors
            .par_iter()
            .map(|t| candidates_for(model, t, settings, widths_for(base, informed(t)), layouts))
            .collect::<Result<_, _>>()?;
        if let Some(gains) = gains {
            let mut known: Vec<f64> = gains.values().copied().collect();
            known.sort_by(f64::total_cmp);
            let median = known.get(known.len() / 2).copied().unwrap_or(1.0);
            for (t, c) in tensors.iter().zip(&mut candidates) {
                let gain = gains.get(&t.name).copied().unwrap_or(median);
                c.iter_mut().for_each(|c| c.error *= gain);
            }
        }
        if let Some(picks) = allocate(&candidates, budget) {
            break (candidates, picks);
        }
        // The cheapest layouts were dropped as less faithful than the
        // first one at this width: a width lower, if there is one.
        if base > 2 {
            base -= 1;
            continue;
        }
        let least: u64 =
            candidates.iter().map(|c| c.iter().map(|c| c.stored_bits).min().unwrap_or(0)).sum();
        return Err(PipelineError::Budget(format!(
            "--bpw {bpw}: the smallest widths and scales tried take {:.3} bits per weight",
            least as f64 / weights.max(1) as f64
        )));
    };
    let mut choices = BTreeMap::new();
    let mut stored = 0u64;
    for ((t, c), &p) in tensors.iter().zip(&candidates).zip(&picks) {
        choices.insert(t.name.clone(), (c[p].bits, c[p].scaling));
        stored += c[p].stored_bits;
    }
    Ok(BudgetPlan { choices, bits_per_weight: stored as f64 / weights.max(1) as f64 })
}

/// The tensors the settings quantize.
pub fn quantizable<'m>(model: &'m SourceModel, settings: &Settings) -> Vec<&'m SourceTensor> {
    model.tensors.iter().filter(|t| settings.action(t) != Action::Keep).collect()
}

/// The setting calibration probes each tensor with: the smallest width
/// and the first layout tried, so that its effect stands well above the
/// runtime's rounding.
pub fn probe(
    model: &SourceModel,
    settings: &Settings,
    bpw: f64,
    layouts: &[Scaling],
) -> (u32, Scaling) {
    (*widths_for(base_width(model, settings, bpw, layouts), true).start(), layouts[0])
}

/// Every (width, layout) for one tensor, measured on a sample of its rows,
/// that is at least as faithful as the smallest width with the first
/// layout: the pooled error favours starving a tensor of small weights,
/// and a layout that is cheaper only by being coarser than that reference
/// (row scales on long rows) is not a candidate.
fn candidates_for(
    model: &SourceModel,
    t: &SourceTensor,
    settings: &Settings,
    widths: std::ops::RangeInclusive<u32>,
    layouts: &[Scaling],
) -> Result<Vec<Candidate>, PipelineError> {
    let values = model.to_f32(t)?;
    let (sample, sample_shape, factor) = sample_rows(&values, &t.shape);
    let mut out = Vec::new();
    for bits in widths {
        for &scaling in layouts {
            let (q, m) =
                best_quantization(model, t, settings, &sample, &sample_shape, bits, scaling)?;
            let error = counted_error(settings, &t.name, &sample, &q.dequantize(), &m);
            let stored_bits = stored_bits(
                &t.shape,
                bits,
                scaling,
                q.scales().dtype(),
                q.codebook().kind() == lsqr::codec::CodecKind::Lut,
            );
            out.push(Candidate { bits, scaling, stored_bits, error: error * factor });
        }
    }
    let reference = out[0].error;
    out.retain(|c| c.error <= reference);
    Ok(out)
}

/// The error the budget counts for tensor `name` (values `x`, quantized
/// `y`, `m` their metrics): the output error its inputs' covariance
/// predicts where calibration measured one, else the squared error weighed
/// by its importance, else the plain squared error.
pub fn counted_error(
    settings: &Settings,
    name: &str,
    x: &[f32],
    y: &[f32],
    m: &lsqr::codec::ErrorMetrics,
) -> f64 {
    if let Some(f) = settings.feedback.get(name) {
        return f.output_error(x, y);
    }
    match settings.importance.get(name) {
        None => m.error_energy,
        Some(w) => weighted_error(x, y, w),
    }
}

/// `Σ w[col] (x - y)²`: the error the importance weights `w` (one per
/// column) count.
pub fn weighted_error(x: &[f32], y: &[f32], w: &[f32]) -> f64 {
    x.chunks(w.len().max(1))
        .zip(y.chunks(w.len().max(1)))
        .flat_map(|(xr, yr)| xr.iter().zip(yr).zip(w))
        .map(|((&a, &b), &w)| f64::from(w) * (f64::from(a) - f64::from(b)).powi(2))
        .sum()
}

/// Whole rows spread evenly over the tensor, about [`SAMPLE_ELEMENTS`] of
/// them, as a `[rows, row_len]` tensor, and the factor from its error to
/// the whole tensor's.
fn sample_rows(values: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<usize>, f64) {
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let row_len = values.len() / rows;
    let wanted = (SAMPLE_ELEMENTS / row_len.max(1)).max(1);
    if wanted >= rows {
        return (values.to_vec(), shape.to_vec(), 1.0);
    }
    let step = rows.div_ceil(wanted);
    let picked: Vec<usize> = (0..rows).step_by(step).collect();
    let sample =
        picked.iter().flat_map(|&r| &values[r * row_len..(r + 1) * row_len]).copied().collect();
    (sample, vec![picked.len(), row_len], rows as f64 / picked.len() as f64)
}

/// Bits a tensor of `shape` takes in the file at `bits` with `scaling`.
fn stored_bits(shape: &[usize], bits: u32, scaling: Scaling, dtype: ScaleDtype, lut: bool) -> u64 {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    let codes = (n * u64::from(bits)).div_ceil(8);
    let scales = GroupLayout::new(shape, scaling)
        .ok()
        .and_then(|l| l.stored_scale_bytes(dtype))
        .unwrap_or(u64::MAX / 16);
    let table = if lut { 4u64 << bits } else { 0 };
    8 * (codes + scales + table)
}

/// The candidate per tensor with the least total error whose stored bits
/// sum to at most `budget`, or `None` if the smallest ones exceed it.
///
/// Greedy on each tensor's lower convex hull of (bits, error): every step
/// takes the upgrade with the most error removed per bit that still fits.
/// That is optimal at the hull's vertices (the Lagrangian solution) and
/// within one step of it otherwise; ties go to the earlier tensor, so the
/// plan is deterministic.
fn allocate(candidates: &[Vec<Candidate>], budget: u64) -> Option<Vec<usize>> {
    let hulls: Vec<Vec<usize>> = candidates.iter().map(|c| lower_hull(c)).collect();
    let mut at = vec![0usize; hulls.len()];
    let mut used: u64 = hulls.iter().zip(candidates).map(|(h, c)| c[h[0]].stored_bits).sum();
    if used > budget {
        return None;
    }
    let mut blocked = vec![false; hulls.len()];
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (i, hull) in hulls.iter().enumerate() {
            if blocked[i] || at[i] + 1 >= hull.len() {
                continue;
            }
            let (from, to) = (&candidates[i][hull[at[i]]], &candidates[i][hull[at[i] + 1]]);
            let gain = (from.error - to.error) / (to.stored_bits - from.stored_bits) as f64;
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, i));
            }
        }
        let Some((_, i)) = best else { break };
        let (from, to) = (&candidates[i][hulls[i][at[i]]], &candidates[i][hulls[i][at[i] + 1]]);
        let extra = to.stored_bits - from.stored_bits;
        if used + extra <= budget {
            used += extra;
            at[i] += 1;
        } else {
            blocked[i] = true;
        }
    }
    Some(hulls.iter().zip(&at).map(|(h, &a)| h[a]).collect())
}

/// Indices of the candidates on the lower convex hull of (stored bits,
/// error), by increasing bits and strictly decreasing error.
fn lower_hull(c: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| {
        c[a].stored_bits.cmp(&c[b].stored_bits).then(c[a].error.total_cmp(&c[b].error))
    });
    let mut hull: Vec<usize> = Vec::new();
    for i in order {
        if hull.last().is_some_and(|&h| c[i].error >= c[h].error) {
            continue; // more bits, no less error
        }
        while hull.len() >= 2 {
            let (a, b) = (&c[hull[hull.len() - 2]], &c[hull[hull.len() - 1]]);
            // b is above the segment a..i: drop it.
            let slope_ab = (a.error - b.error) / (b.stored_bits - a.stored_bits) as f64;
            let slope_bi =
                (b.error - c[i].error) / (c[i].stored_bits - b.stored_bits).max(1) as f64;
            if slope_bi >= slope_ab {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(stored_bits: u64, error: f64) -> Candidate {
        Candidate { bits: 4, scaling: Scaling::Row, stored_bits, error }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let cands = [c(10, 100.0), c(20, 90.0), c(20, 50.0), c(30, 40.0), c(40, 10.0), c(50, 12.0)];
        // (20, 90) is dominated by (20, 50); (30, 40) lies above the segment
        // from (20, 50) to (40, 10); (50, 12) has more bits and more error.
        assert_eq!(lower_hull(&cands), vec![0, 2, 4]);
    }

    #[test]
    fn allocation_spends_bits_where_they_remove_the_most_error() {
        // Tensor 0 loses 90 error units for 10 bits, tensor 1 only 5.
        let t0 = vec![c(10, 100.0), c(20, 10.0)];
        let t1 = vec![c(10, 10.0), c(20, 5.0)];
        let both = [t0, t1];
        assert_eq!(allocate(&both, 20), Some(vec![0, 0]));
        assert_eq!(allocate(&both, 30), Some(vec![1, 0]));
        assert_eq!(allocate(&both, 40), Some(vec![1, 1]));
        assert_eq!(allocate(&both, 19), None);
    }

    #[test]
    fn a_blocked_upgrade_leaves_room_for_smaller_ones() {
        let big = vec![c(10, 100.0), c(110, 0.0)]; // best ratio, too big
        let small = vec![c(10, 10.0), c(15, 1.0)];
        assert_eq!(allocate(&[big, small], 40), Some(vec![0, 1]));
    }

    #[test]
    fn samples_are_whole_rows_spread_over_the_tensor() {
        let rows = 1000;
        let values: Vec<f32> = (0..rows * 256).map(|i| (i / 256) as f32).collect();
        let (sample, shape, factor) = sample_rows(&values, &[rows, 256]);
        assert_eq!(shape[1], 256);
        assert!(shape[0] * 256 <= SAMPLE_ELEMENTS && shape[0] >= SAMPLE_ELEMENTS / 256 / 2);
        assert_eq!(factor, rows as f64 / shape[0] as f64);
        // Rows are whole and spread: first row 0, last near the end.
        assert!(sample[..256].iter().all(|&v| v == 0.0));
        assert!(*sample.last().unwrap() as usize >= rows - rows / shape[0]);
        let (small, shape, factor) = sample_rows(&values[..2560], &[10, 256]);
        assert_eq!((small.len(), shape, factor), (2560, vec![10, 256], 1.0));
    }

    #[test]
    fn widths_around_the_budget() {
        assert_eq!(widths_for(4, false), 4..=6);
        assert_eq!(widths_for(4, true), 3..=6);
        assert_eq!(widths_for(2, true), 2..=4);
        assert_eq!(widths_for(8, false), 8..=8);
    }

    /// The base width is the largest every tensor can have within the
    /// budget, scales and table counted: a whole number of bits per weight
    /// does not fit that many bits of codes plus scales.
    #[test]
    fn a_plan_steps_down_when_its_cheapest_layout_is_dropped() {
        use crate::pipeline::tests::{defaults, model_of};
        // Laplacian-like rows of 1024 with outliers: one f16 scale per row
        // (4.016 bits at C = 4) is coarser than 1024/32/3 at C = 4 (4.109),
        // so it is not a candidate; 4.05 bits must then plan from C = 3.
        let values: Vec<f32> = (0..64 * 1024)
            .map(|i| {
                let u = ((i as u64 * 2654435761) % 1000) as f32 / 1000.0 - 0.5;
                u.signum() * (-(1.0 - 2.0 * u.abs()).max(1e-6).ln())
            })
            .collect();
        let model = model_of(&values, &[64, 1024]);
        let log = defaults(CodecKind::Log);
        let layouts = default_layouts();
        assert_eq!(base_width(&model, &log, 4.05, &layouts), 4);
        let plan = plan(&model, &log, 4.05, &layouts, None).unwrap();
        assert!(plan.bits_per_weight <= 4.05, "{}", plan.bits_per_weight);
        assert_eq!(plan.choices["w"].0, 3);
    }

    #[test]
    fn base_width_leaves_room_for_the_scales() {
        use crate::pipeline::tests::{defaults, model_of};
        let model = model_of(&vec![0.5; 64 * 1024], &[64, 1024]);
        let layouts = default_layouts();
        // Rows of 1024: an f16 per row is the cheapest layout, 0.016 bits
        // per weight.
        let log = defaults(CodecKind::Log);
        let cases = [(4.25, 4), (4.016, 4), (4.015, 3), (4.0, 3), (2.5, 2), (1.0, 2), (9.0, 8)];
        for (bpw, base) in cases {
            assert_eq!(base_width(&model, &log, bpw, &layouts), base, "--bpw {bpw}");
        }
        // A lut table at C = 8 is 1024 bytes, 0.125 bits per weight here.
        let lut = defaults(CodecKind::Lut);
        assert_eq!(base_width(&model, &lut, 8.14, &layouts), 7);
        assert_eq!(base_width(&model, &lut, 8.15, &layouts), 8);
    }
}
