//! From f32 values to codes and scales, and back.
//!
//! The pipeline: validate the input, compute each group's scale, choose the
//! codebook (search μ for `log`, train the table for `lut`), optionally search
//! each group's clipping ratio, then encode every group against the one
//! codebook.

#[cfg(target_has_atomic = "ptr")]
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::codebook::{CodeWidth, Codebook, CodecKind, FpLayout};
use crate::scale::{
    element_count, settle_tiny_groups, zero_groups_worse_than_zeros, GroupLayout, GroupScales,
    ScaleDtype, Scaling,
};
use crate::scale_fit::{self, Importance, TwoLevelFit};
#[cfg(target_has_atomic = "ptr")]
use crate::ErrorFeedback;
use crate::{search, CodecError, ErrorMetrics};

/// Which codebook to quantize with, and how to choose its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum CodecSpec {
    /// The reference LSQR codec.
    Seed,
    /// μ-law logarithmic; `None` searches μ for the least squared error.
    Log {
        /// A fixed μ, or `None` to search it.
        mu: Option<f32>,
    },
    /// Symmetric integer grid.
    Uniform,
    /// NormalFloat-C.
    Nf,
    /// Minifloat; `None` takes [`FpLayout::for_width`].
    Fp(Option<FpLayout>),
    /// Table trained by Lloyd-Max on this tensor.
    Lut,
}

impl CodecSpec {
    /// The spec a codec family gets by default: μ and tables searched, the
    /// default minifloat layout.
    pub fn default_for(kind: CodecKind) -> Self {
        match kind {
            CodecKind::Seed => Self::Seed,
            CodecKind::Log => Self::Log { mu: None },
            CodecKind::Uniform => Self::Uniform,
            CodecKind::Nf => Self::Nf,
            CodecKind::Fp => Self::Fp(None),
            CodecKind::Lut => Self::Lut,
        }
    }
}

/// How a group's scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleMethod {
    /// The group's largest magnitude: nothing is clipped.
    #[default]
    AbsMax,
    /// The scale with the least squared error for the group: candidates
    /// from 0.7 to 1.15 times the absmax scale, the codes re-chosen for
    /// each and the scale refitted to them by least squares; never worse
    /// than absmax. With `lut`, the table and the scales are fitted in
    /// turn. With two-level scales, each sub-scale is also chosen among
    /// its rounding neighbours by the error.
    MseSearch,
}

/// Everything [`quantize`] needs besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeOptions {
    /// Codebook family and parameters.
    pub codec: CodecSpec,
    /// Code width C.
    pub bits: u32,
    /// How scales are shared.
    pub scaling: Scaling,
    /// How scales are stored.
    pub scale_dtype: ScaleDtype,
    /// How scales are chosen.
    pub scale_method: ScaleMethod,
    /// How much each column's squared error counts (one non-negative
    /// weight per element of a row of the `[d0, d1 * d2 * ...]` view, e.g.
    /// the mean squared input of each feature of a linear layer over
    /// calibration data); `None` counts every element the same. It steers
    /// the scale fit and the `log`/`lut` parameter searches; each value
    /// still takes its nearest level.
    pub importance: Option<Vec<f32>>,
    /// Error-compensating rounding (GPTQ) with this layer's factored input
    /// covariance: codes are chosen column by column, each rounding error
    /// fed forward to the columns not yet rounded, so that the layer's
    /// outputs, not each weight, are as close as the codebook allows.
    /// Scales and codebook are chosen as without it. `None`: each value
    /// takes its nearest level.
    pub feedback: Option<Arc<ErrorFeedback>>,
}

impl QuantizeOptions {
    /// `codec` at `bits`, with the defaults: groups of 64, f16 absmax scales.
    pub fn new(codec: CodecSpec, bits: u32) -> Self {
        Self {
            codec,
            bits,
            scaling: Scaling::Group(64),
            scale_dtype: ScaleDtype::F16,
            scale_method: ScaleMethod::AbsMax,
            importance: None,
            #[cfg(target_has_atomic = "ptr")]
            feedback: None,
        }
    }

    /// The reference LSQR behaviour: `seed` codebook, no scale.
    pub fn seed_reference(bits: u32) -> Self {
        Self { scaling: Scaling::Unit, ..Self::new(CodecSpec::Seed, bits) }
    }
}

/// A quantized tensor: shape, codebook, scales and one code per element.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    shape: Vec<usize>,
    codebook: Codebook,
    scaling: Scaling,
    layout: GroupLayout,
    scales: GroupScales,
    codes: Vec<u16>,
}

/// Quantizes `data` (row-major, of `shape`).
pub fn quantize(
    data: &[f32],
    shape: &[usize],
    options: &QuantizeOptions,
) -> Result<QuantizedTensor, CodecError> {
    let width = CodeWidth::new(options.bits)?;
    let layout = layout_for(shape, data.len(), options.scaling)?;
    let importance = importance_of(shape, options.importance.as_deref())?;
    let absmax = group_absmax(data, &layout)?;
    let (codebook, scales) = match options.scaling {
        Scaling::Unit => {
            let codebook = choose_codebook(data, &layout, &[], importance, width, &options.codec)?;
            (codebook, GroupScales::new(options.scale_dtype, Vec::new())?)
        }
        Scaling::TwoLevel(_) => two_level(data, &layout, &absmax, importance, width, options)?,
        _ => one_level(data, &layout, &absmax, importance, width, options)?,
    };
    let mut codes = vec![0u16; data.len()];
    let columns = columns_of(shape);
    encode(data, columns, &layout, scales.values(), &codebook, options, &mut codes)?;
    Ok(QuantizedTensor {
        shape: shape.to_vec(),
        codebook,
        scaling: options.scaling,
        layout,
        scales,
        codes,
    })
}

/// Table ↔ scale alternations for `lut` with fitted scales: the table is
/// retrained for the fitted scales, then the scales refitted to the new
/// table. On MiniLM at C = 4 (two-level 256/32) the rounds add 0.009 and
/// 0.005 dB, and four rounds 0.01 more: two take nearly all of the gain.
const LUT_REFIT_ROUNDS: usize = 2;

/// The importance weights of `options`, checked against the tensor: one per
/// column of the `[d0, rest]` view, finite, non-negative, not all zero.
fn importance_of<'a>(
    shape: &[usize],
    per_column: Option<&'a [f32]>,
) -> Result<Importance<'a>, CodecError> {
    let Some(w) = per_column else { return Ok(Importance::UNIFORM) };
    let cols = columns_of(shape);
    let bad = w.len() != cols
        || w.iter().any(|v| !v.is_finite() || *v < 0.0)
        || (cols > 0 && w.iter().all(|&v| v == 0.0));
    if bad {
        return Err(CodecError::InvalidImportance { columns: cols, got: w.len() });
    }
    Ok(Importance::new(w))
}

/// Columns of the `[d0, rest]` view of `shape` (the elements of a vector).
fn columns_of(shape: &[usize]) -> usize {
    match shape {
        [] | [_] => element_count(shape).unwrap_or(0),
        [_, rest @ ..] => element_count(rest).unwrap_or(0),
    }
}

/// One scale per group (tensor, row or group scaling).
fn one_level(
    data: &[f32],
    layout: &GroupLayout,
    absmax: &[f32],
    importance: Importance<'_>,
    width: CodeWidth,
    options: &QuantizeOptions,
) -> Result<(Codebook, GroupScales), CodecError> {
    let dtype = options.scale_dtype;
    let absmax_scales: Vec<f32> =
        absmax.iter().enumerate().map(|(g, &m)| dtype.round(g, m)).collect::<Result<_, _>>()?;
    let mut codebook =
        choose_codebook(data, layout, &absmax_scales, importance, width, &options.codec)?;
    let mut scales = absmax_scales.clone();
    let fit = |codebook: &Codebook| {
        scale_fit::fitted_group_scales(data, layout, codebook, dtype, &absmax_scales, importance)
    };
    if options.scale_method == ScaleMethod::MseSearch {
        scales = fit(&codebook)?;
        if options.codec == CodecSpec::Lut {
            let values = Vec::as_slice;
            let refit =
                alternate_lut(data, layout, importance, width, codebook, scales, values, fit)?;
            (codebook, scales) = refit;
        }
    }
    settle_tiny_groups(data, layout, &codebook, dtype, &mut scales);
    zero_groups_worse_than_zeros(data, layout, &codebook, &mut scales);
    Ok((codebook, GroupScales::new(dtype, scales)?))
}

/// Two-level scales: super-scales in the scale dtype, k-bit sub-scales.
fn two_level(
    data: &[f32],
    layout: &GroupLayout,
    absmax: &[f32],
    importance: Importance<'_>,
    width: CodeWidth,
    options: &QuantizeOptions,
) -> Result<(Codebook, GroupScales), CodecError> {
    let dtype = options.scale_dtype;
    let fit = match options.scale_method {
        ScaleMethod::AbsMax => TwoLevelFit::AbsMax,
        ScaleMethod::MseSearch => TwoLevelFit::Mse,
    };
    let mut codebook = choose_codebook(data, layout, absmax, importance, width, &options.codec)?;
    let scales_for = |codebook: &Codebook| {
        let (supers, subs) =
            scale_fit::two_level_scales(data, layout, codebook, dtype, fit, importance)?;
        GroupScales::two_level(dtype, layout, supers, subs)
    };
    let mut scales = scales_for(&codebook)?;
    if options.codec == CodecSpec::Lut && fit == TwoLevelFit::Mse {
        let values = GroupScales::values;
        (codebook, scales) =
            alternate_lut(data, layout, importance, width, codebook, scales, values, scales_for)?;
    }
    let scales = zero_sub_blocks_worse_than_zeros(data, layout, &codebook, scales)?;
    Ok((codebook, scales))
}

/// [`zero_groups_worse_than_zeros`] for two-level scales: a sub-block that
/// its codes decode worse than zeros gets sub-scale 0. A super-scale shared
/// with larger sub-blocks can leave a small one at a scale whose smallest
/// level is far from its values (a dead channel beside live ones).
fn zero_sub_blocks_worse_than_zeros(
    data: &[f32],
    layout: &GroupLayout,
    codebook: &Codebook,
    scales: GroupScales,
) -> Result<GroupScales, CodecError> {
    let mut values = scales.values().to_vec();
    zero_groups_worse_than_zeros(data, layout, codebook, &mut values);
    let (Some(supers), Some(subs)) = (scales.super_scales(), scales.sub_scales()) else {
        return Ok(scales);
    };
    if values == scales.values() {
        return Ok(scales);
    }
    let subs = subs.iter().zip(&values).map(|(&q, &v)| if v == 0.0 { 0 } else { q }).collect();
    GroupScales::two_level(scales.dtype(), layout, supers.to_vec(), subs)
}

/// [`LUT_REFIT_ROUNDS`] of: the `lut` table retrained for the scales
/// (whose per-group values `values` gives), then the scales refitted to
/// the table by `fit`.
#[allow(clippy::too_many_arguments)]
fn alternate_lut<S>(
    data: &[f32],
    layout: &GroupLayout,
    importance: Importance<'_>,
    width: CodeWidth,
    mut codebook: Codebook,
    mut scales: S,
    values: impl Fn(&S) -> &[f32],
    fit: impl Fn(&Codebook) -> Result<S, CodecError>,
) -> Result<(Codebook, S), CodecError> {
    for _ in 0..LUT_REFIT_ROUNDS {
        let table =
            search::refine_lut(data, layout, values(&scales), importance, codebook.decode_table());
        codebook = Codebook::lut(width, table)?;
        scales = fit(&codebook)?;
    }
    Ok((codebook, scales))
}

fn layout_for(
    shape: &[usize],
    data_len: usize,
    scaling: Scaling,
) -> Result<GroupLayout, CodecError> {
    let shape_elements = element_count(shape);
    if shape_elements != Some(data_len) {
        return Err(CodecError::ShapeMismatch { shape_elements, data_len });
    }
    GroupLayout::new(shape, scaling)
}

/// Each group's largest magnitude, in one pass that also rejects NaN and
/// ±Inf. On finite f32s, the order of `bits & 0x7fff_ffff` as integers is
/// the order of magnitudes, and every non-finite value is above every
/// finite one, so one vectorisable integer max does both jobs.
fn group_absmax(data: &[f32], layout: &GroupLayout) -> Result<Vec<f32>, CodecError> {
    const NON_FINITE: u32 = 0x7f80_0000;
    let mut out = Vec::with_capacity(layout.group_count());
    for range in layout.groups() {
        let xs = &data[range.clone()];
        let max_bits = xs.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        if max_bits >= NON_FINITE {
            let at = xs.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(CodecError::NonFinite { index: range.start + at, value: xs[at] });
        }
        out.push(f32::from_bits(max_bits));
    }
    Ok(out)
}

fn choose_codebook(
    data: &[f32],
    layout: &GroupLayout,
    scales: &[f32],
    importance: Importance<'_>,
    width: CodeWidth,
    spec: &CodecSpec,
) -> Result<Codebook, CodecError> {
    Ok(match spec {
        CodecSpec::Seed => Codebook::seed(width),
        CodecSpec::Log { mu: Some(mu) } => Codebook::log(width, *mu)?,
        CodecSpec::Log { mu: None } => {
            let sample =
                search::Sample::strided(data, layout, scales, importance, search::MU_SAMPLE);
            Codebook::log(width, search::best_mu(&sample, width))?
        }
        CodecSpec::Uniform => Codebook::uniform(width),
        CodecSpec::Nf => Codebook::nf(width),
        CodecSpec::Fp(layout_opt) => {
            let fp = layout_opt.unwrap_or_else(|| FpLayout::for_width(width));
            if fp.width() != width {
                return Err(CodecError::InvalidFpLayout {
                    exp_bits: fp.exp_bits(),
                    man_bits: fp.man_bits(),
                });
            }
            Codebook::fp(fp)
        }
        CodecSpec::Lut => {
            Codebook::lut(width, search::train_lut(data, layout, scales, importance, width))?
        }
    })
}

/// The scale of group `g`: 1 when there are no scales (`Scaling::Unit`).
pub(crate) fn scale_of(scales: &[f32], g: usize) -> f32 {
    scales.get(g).copied().unwrap_or(1.0)
}

/// Multiplier that maps a group onto the codebook's unit range; 0 (the
/// group taken as zeros) for a scale of 0 or one too small to invert.
///
/// A subnormal scale below `1 / f32::MAX` (a group whose largest
/// magnitude is under about 3e-39, as rows of a folded batch norm can be)
/// has no finite inverse, and `x * inf` would turn the group's zeros into
/// NaN. Stored scales are never that small (they are 0 or at least the
/// smallest normal f32); the raw absmax scales a codebook is first fitted
/// to can be.
pub(crate) fn inverse(scale: f32) -> f32 {
    let inv = 1.0 / scale;
    if scale > 0.0 && inv.is_finite() {
        inv
    } else {
        0.0
    }
}

/// Every value's code: its nearest level, or by error-compensating
/// rounding when `options` carries the feedback.
fn encode(
    data: &[f32],
    columns: usize,
    layout: &GroupLayout,
    scales: &[f32],
    codebook: &Codebook,
    options: &QuantizeOptions,
    codes: &mut [u16],
) -> Result<(), CodecError> {
    #[cfg(target_has_atomic = "ptr")]
    if let Some(f) = &options.feedback {
        return f.encode(data, columns, layout, scales, codebook, codes);
    }
    let _ = (options, columns);
    encode_groups(data, layout, scales, codebook, codes);
    Ok(())
}

fn encode_groups(
    data: &[f32],
    layout: &GroupLayout,
    scales: &[f32],
    codebook: &Codebook,
    codes: &mut [u16],
) {
    if layout.element_count() == 0 {
        return;
    }
    for (g, range) in layout.groups().enumerate() {
        let inv = inverse(scale_of(scales, g));
        codebook.encode_scaled(&data[range.clone()], inv, &mut codes[range]);
    }
}

/// Decodes `codes` into `out`: `out[i] = decode_table[codes[i]] * scale(group of i)`.
///
/// `scales` is `None` for `Scaling::Unit`, else one per group of `layout`.
pub fn dequantize_codes(
    codebook: &Codebook,
    layout: &GroupLayout,
    scales: Option<&[f32]>,
    codes: &[u16],
    out: &mut [f32],
) -> Result<(), CodecError> {
    let n = layout.element_count();
    check_len("codes", n, codes.len())?;
    check_len("output", n, out.len())?;
    let scales = match scales {
        None => &[][..],
        Some(s) => {
            check_len("scales", layout.group_count(), s.len())?;
            s
        }
    };
    check_codes(codes, codebook.width())?;
    if n == 0 {
        return Ok(());
    }
    let table = codebook.decode_table();
    for (g, range) in layout.groups().enumerate() {
        let s = scale_of(scales, g);
        for (o, &c) in out[range.clone()].iter_mut().zip(&codes[range]) {
            *o = table[usize::from(c)] * s;
        }
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), CodecError> {
    if expected == got {
        Ok(())
    } else {
        Err(CodecError::LengthMismatch { what, expected, got })
    }
}

/// Every code must fit in C bits; the first that does not is named.
fn check_codes(codes: &[u16], width: CodeWidth) -> Result<(), CodecError> {
    let max = width.max_code();
    if codes.iter().fold(0u16, |acc, &c| acc | c) <= max {
        return Ok(());
    }
    let index = codes.iter().position(|&c| c > max).unwrap_or(0);
    Err(CodecError::CodeOutOfRange { index, code: codes[index], bits: width.bits() })
}

impl QuantizedTensor {
    /// Assembles a tensor from stored parts, checking that they agree.
    pub fn from_parts(
        shape: Vec<usize>,
        codebook: Codebook,
        scaling: Scaling,
        scales: GroupScales,
        codes: Vec<u16>,
    ) -> Result<Self, CodecError> {
        let layout = layout_for(&shape, codes.len(), scaling)?;
        let expected_scales = if scaling == Scaling::Unit { 0 } else { layout.group_count() };
        check_len("scales", expected_scales, scales.values().len())?;
        check_codes(&codes, codebook.width())?;
        Ok(Self { shape, codebook, scaling, layout, scales, codes })
    }

    /// Shape of the original tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The codebook (its params are what a container stores).
    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }

    /// How scales are shared.
    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// Where the groups lie.
    pub fn layout(&self) -> &GroupLayout {
        &self.layout
    }

    /// One scale per group (none for `Scaling::Unit`).
    pub fn scales(&self) -> &GroupScales {
        &self.scales
    }

    /// The scales to decode with: `None` for `Scaling::Unit`.
    pub fn scale_values(&self) -> Option<&[f32]> {
        (self.scaling != Scaling::Unit).then(|| self.scales.values())
    }

    /// One code per element, row-major.
    pub fn codes(&self) -> &[u16] {
        &self.codes
    }

    /// Decodes into a caller buffer of exactly one f32 per element.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), CodecError> {
        dequantize_codes(&self.codebook, &self.layout, self.scale_values(), &self.codes, out)
    }

    /// The error of this tensor against `original`, decoded a piece at a
    /// time, so measuring a large tensor needs no second full-size buffer.
    pub fn metrics_against(&self, original: &[f32]) -> Result<ErrorMetrics, CodecError> {
        check_len("original", self.codes.len(), original.len())?;
        let table = self.codebook.decode_table();
        let scales = self.scale_values().unwrap_or(&[]);
        let mut m = ErrorMetrics::default();
        let mut buf = [0.0f32; 256];
        if self.codes.is_empty() {
            return Ok(m);
        }
        for (g, range) in self.layout.groups().enumerate() {
            let s = scale_of(scales, g);
            for start in range.clone().step_by(buf.len()) {
                let end = (start + buf.len()).min(range.end);
                let piece = &mut buf[..end - start];
                for (o, &c) in piece.iter_mut().zip(&self.codes[start..end]) {
                    *o = table[usize::from(c)] * s;
                }
                m.accumulate(&original[start..end], piece);
            }
        }
        Ok(m)
    }

    /// Decodes into a new vector.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.codes.len()];
        self.dequantize_into(&mut out).expect("parts were validated on construction");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect()
    }

    #[test]
    fn rejects_non_finite_with_index() {
        let mut x = ramp(100);
        x[42] = f32::NAN;
        let err = quantize(&x, &[100], &QuantizeOptions::new(CodecSpec::Uniform, 4)).unwrap_err();
        assert!(matches!(err, CodecError::NonFinite { index: 42, .. }));
        x[42] = f32::NEG_INFINITY;
        let err = quantize(&x, &[100], &QuantizeOptions::new(CodecSpec::Uniform, 4)).unwrap_err();
        assert_eq!(err, CodecError::NonFinite { index: 42, value: f32::NEG_INFINITY });
    }

    #[test]
    fn rejects_shape_mismatch_and_bad_bits() {
        let x = ramp(10);
        let opts = QuantizeOptions::new(CodecSpec::Uniform, 4);
        assert_eq!(
            quantize(&x, &[3, 4], &opts),
            Err(CodecError::ShapeMismatch { shape_elements: Some(12), data_len: 10 })
        );
        assert!(matches!(
            quantize(&x, &[usize::MAX, 2], &opts),
            Err(CodecError::ShapeMismatch { shape_elements: None, .. })
        ));
        let opts = QuantizeOptions::new(CodecSpec::Uniform, 17);
        assert_eq!(quantize(&x, &[10], &opts), Err(CodecError::InvalidBits { bits: 17 }));
    }

    #[test]
    fn every_codec_round_trips_within_reason() {
        let x = ramp(4096);
        for kind in CodecKind::ALL {
            for bits in [3, 8] {
                let opts = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
                let q = quantize(&x, &[64, 64], &opts).unwrap();
                let y = q.dequantize();
                let m = ErrorMetrics::between(&x, &y).unwrap();
                assert_eq!(q.metrics_against(&x).unwrap(), m, "piecewise equals whole");
                let snr = m.snr_db();
                let floor = match (kind, bits) {
                    (CodecKind::Seed, _) => -10.0,
                    (_, 3) => 8.0,
                    _ => 30.0,
                };
                assert!(snr > floor, "{kind} C={bits}: {snr} dB");
            }
        }
    }

    /// A row whose largest magnitude is a subnormal below `1 / f32::MAX`
    /// (a folded batch norm's dead channel in PP-OCRv4 rec) beside an
    /// ordinary row: its raw absmax scale has no finite inverse. Every
    /// codec, scaling and scale method takes it, the dead row decodes to
    /// (near) zeros and the ordinary row keeps its precision.
    #[test]
    fn a_row_too_small_to_invert_beside_an_ordinary_one() {
        let mut x = vec![0.0f32; 2 * 480];
        x[7] = 8.4e-40;
        x[480..].copy_from_slice(&ramp(480));
        let two_level = Scaling::TwoLevel(crate::TwoLevel::DEFAULT);
        for kind in CodecKind::ALL {
            for scaling in [Scaling::Group(64), Scaling::Row, two_level] {
                for method in [ScaleMethod::AbsMax, ScaleMethod::MseSearch] {
                    let opts = QuantizeOptions {
                        scaling,
                        scale_method: method,
                        ..QuantizeOptions::new(CodecSpec::default_for(kind), 4)
                    };
                    let case = alloc::format!("{kind} {scaling:?} {method:?}");
                    let q =
                        quantize(&x, &[2, 480], &opts).unwrap_or_else(|e| panic!("{case}: {e}"));
                    let y = q.dequantize();
                    assert!(y[..480].iter().all(|v| v.abs() < 1e-38), "{case}");
                    let snr = ErrorMetrics::between(&x[480..], &y[480..]).unwrap().snr_db();
                    let floor = if kind == CodecKind::Seed { 5.0 } else { 15.0 };
                    assert!(snr > floor, "{case}: {snr} dB");
                }
            }
        }
    }

    #[test]
    fn from_parts_validates() {
        let x = ramp(64);
        let q = quantize(&x, &[2, 32], &QuantizeOptions::new(CodecSpec::Nf, 3)).unwrap();
        let rebuilt = QuantizedTensor::from_parts(
            q.shape().to_vec(),
            q.codebook().clone(),
            q.scaling(),
            q.scales().clone(),
            q.codes().to_vec(),
        )
        .unwrap();
        assert_eq!(rebuilt, q);
        let mut bad_codes = q.codes().to_vec();
        bad_codes[5] = 8;
        let err = QuantizedTensor::from_parts(
            q.shape().to_vec(),
            q.codebook().clone(),
            q.scaling(),
            q.scales().clone(),
            bad_codes,
        );
        assert_eq!(err, Err(CodecError::CodeOutOfRange { index: 5, code: 8, bits: 3 }));
        let err = QuantizedTensor::from_parts(
            q.shape().to_vec(),
            q.codebook().clone(),
            q.scaling(),
            GroupScales::new(ScaleDtype::F16, vec![1.0]).unwrap(),
            q.codes().to_vec(),
        );
        assert!(matches!(
            err,
            Err(CodecError::LengthMismatch { what: "scales", expected: 2, got: 1 })
        ));
    }

    #[test]
    fn mse_search_skips_candidates_too_small_for_f16() {
        let x = [4e-8f32, -1e-8, 2e-8, 3e-8];
        let mut o = QuantizeOptions::new(CodecSpec::Uniform, 4);
        o.scaling = Scaling::Tensor;
        o.scale_method = ScaleMethod::MseSearch;
        let q = quantize(&x, &[4], &o).unwrap();
        assert!(q.scales().values()[0] > 0.0);
    }

    #[test]
    fn bad_fp_layouts_are_errors_not_overflows() {
        assert!(FpLayout::new(2, u32::MAX).is_err());
        assert!(FpLayout::new(u32::MAX, 2).is_err());
        assert!(FpLayout::new(1, 14).is_ok());
        let o = QuantizeOptions::new(CodecSpec::Fp(Some(FpLayout::new(2, 1).unwrap())), 5);
        assert!(matches!(quantize(&[1.0], &[1], &o), Err(CodecError::InvalidFpLayout { .. })));
    }

    #[test]
    fn dequantize_codes_checks_scales_unless_unit() {
        let q =
            quantize(&ramp(64), &[2, 32], &QuantizeOptions::new(CodecSpec::Uniform, 4)).unwrap();
        let mut out = vec![0.0; 64];
        let e = dequantize_codes(q.codebook(), q.layout(), Some(&[]), q.codes(), &mut out);
        assert!(matches!(
            e,
            Err(CodecError::LengthMismatch { what: "scales", expected: 2, got: 0 })
        ));
        dequantize_codes(q.codebook(), q.layout(), None, q.codes(), &mut out).unwrap();
        assert_eq!(out[0], q.codebook().decode_table()[usize::from(q.codes()[0])]);
    }

    #[test]
    fn empty_and_single_element_tensors() {
        for kind in CodecKind::ALL {
            let opts = QuantizeOptions::new(CodecSpec::default_for(kind), 4);
            let q = quantize(&[], &[0, 7], &opts).unwrap();
            assert!(q.dequantize().is_empty());
            let q = quantize(&[0.25], &[], &opts).unwrap();
            assert_eq!(q.dequantize().len(), 1);
        }
    }
}
