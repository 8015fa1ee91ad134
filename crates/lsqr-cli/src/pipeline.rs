//! Quantizing a whole model: which tensors, with what, on both cores, and
//! streamed to the writer in the source's order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use lsqr::codec::{
    quantize, CodecError, CodecKind, CodecSpec, ErrorFeedback, ErrorMetrics, QuantizeOptions,
    QuantizedTensor, ScaleDtype, ScaleMethod, Scaling,
};
use lsqr::format::LsqWriter;
use rayon::prelude::*;
use serde::Serialize;

use crate::pattern::Pattern;
use lsqr_import::{ImportError, SourceModel, SourceTensor};

/// The codec for a tensor: one family, or the best of all at that width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    /// This family.
    Fixed(CodecKind),
    /// Per tensor, the family with the least squared error.
    Auto,
}

impl CodecChoice {
    /// Parses `seed|log|uniform|nf|fp|lut|auto`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        CodecKind::from_name(s).map(Self::Fixed).ok_or_else(|| {
            format!("unknown codec '{s}' (expected seed, log, uniform, nf, fp, lut or auto)")
        })
    }
}

impl fmt::Display for CodecChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(k) => k.fmt(f),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// How scales are shared, stored and chosen, as `lsqr eval` takes them.
#[derive(Debug, Clone, Copy)]
pub struct ScaleChoice {
    /// How scales are shared.
    pub scaling: Scaling,
    /// How scales are stored; `None` for f16 with the f32 fallback.
    pub dtype: Option<ScaleDtype>,
    /// How scales are chosen.
    pub method: ScaleMethod,
}

/// How to quantize a model.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default code width.
    pub bits: u32,
    /// Default codec.
    pub codec: CodecChoice,
    /// How scales are shared.
    pub scaling: Scaling,
    /// How scales are stored.
    pub scale_dtype: ScaleDtype,
    /// How scales are chosen.
    pub scale_method: ScaleMethod,
    /// With f16 scales, a tensor whose scales overflow f16 (values beyond
    /// ±65504) gets f32 scales instead of failing. On when the scale dtype
    /// was not asked for explicitly, so default options work on any finite
    /// input.
    pub scale_fallback: bool,
    /// Tensors matching any of these stay raw.
    pub keep: Vec<Pattern>,
    /// Per-pattern widths; the first match wins.
    pub bits_for: Vec<(Pattern, u32)>,
    /// Width and scale layout per tensor name (what `--bpw` chose); ahead
    /// of `bits_for` and `scaling`.
    pub per_tensor: BTreeMap<String, (u32, Scaling)>,
    /// `--bpw`: widths and layouts are chosen per tensor under this budget
    /// (filling `per_tensor`) before quantizing.
    pub budget: Option<crate::budget::Budget>,
    /// Importance weights per tensor name (`--importance`, or what
    /// `--calibrate` measured): one per column, see
    /// [`QuantizeOptions::importance`].
    pub importance: BTreeMap<String, Vec<f32>>,
    /// Error-compensating rounding per tensor name (what `--calibrate`
    /// measured), see [`QuantizeOptions::feedback`].
    pub feedback: BTreeMap<String, Arc<ErrorFeedback>>,
}

/// What happens to one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Quantized at this width.
    Quantize(u32),
    /// Stored as it is.
    Keep,
}

impl Settings {
    /// Floating-point tensors with two or more dims larger than 1 are
    /// quantized, unless kept by `--keep`; vectors and scalars (biases,
    /// norms, whatever their shape: `[N]`, `[1, N]`, `[1, 1, 1]`; see
    /// [`lsqr::is_vector`]) and integer tensors stay raw.
    pub fn action(&self, t: &SourceTensor) -> Action {
        let quantizable = t.dtype.is_float() && !lsqr::is_vector(&t.shape) && t.element_count() > 0;
        if !quantizable || self.keep.iter().any(|p| p.matches(&t.name)) {
            return Action::Keep;
        }
        if let Some(&(bits, _)) = self.per_tensor.get(&t.name) {
            return Action::Quantize(bits);
        }
        let bits =
            self.bits_for.iter().find(|(p, _)| p.matches(&t.name)).map_or(self.bits, |&(_, b)| b);
        Action::Quantize(bits)
    }

    /// How tensor `t`'s scales are shared.
    pub fn scaling_for(&self, t: &SourceTensor) -> Scaling {
        self.per_tensor.get(&t.name).map_or(self.scaling, |&(_, s)| s)
    }

    fn options(
        &self,
        kind: CodecKind,
        bits: u32,
        scaling: Scaling,
        scale_dtype: ScaleDtype,
        name: &str,
    ) -> QuantizeOptions {
        QuantizeOptions {
            scaling,
            scale_dtype,
            scale_method: self.scale_method,
            importance: self.importance.get(name).cloned(),
            feedback: self.feedback.get(name).cloned(),
            ..QuantizeOptions::new(CodecSpec::default_for(kind), bits)
        }
    }

    /// Quantizes with `kind` at `bits`; with `scale_fallback`, an f16 scale
    /// overflow is retried with f32 scales.
    fn quantize(
        &self,
        name: &str,
        values: &[f32],
        shape: &[usize],
        kind: CodecKind,
        bits: u32,
        scaling: Scaling,
    ) -> Result<QuantizedTensor, CodecError> {
        let options = |dtype| self.options(kind, bits, scaling, dtype, name);
        match quantize(values, shape, &options(self.scale_dtype)) {
            Err(CodecError::ScaleOutOfRange { scale, .. })
                if self.scale_fallback
                    && self.scale_dtype == ScaleDtype::F16
                    && scale > f32::from(half::f16::MAX) =>
            {
                quantize(values, shape, &options(ScaleDtype::F32))
            }
            result => result,
        }
    }
}

/// What became of one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorResult {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Source dtype.
    pub dtype: &'static str,
    /// Codec, if quantized.
    pub codec: Option<String>,
    /// Code width, if quantized.
    pub bits: Option<u32>,
    /// How its scales are shared, if quantized.
    pub scaling: Option<String>,
    /// SNR in dB against the source, if quantized.
    pub snr_db: Option<f64>,
    /// How its scales are stored, if quantized with scales: `f32` where
    /// f16 was asked for means the f16 overflow fallback was taken.
    pub scale_dtype: Option<&'static str>,
    /// Bytes in the source.
    pub source_bytes: u64,
    /// Bytes in the .lsq file (codes + scales + table, or raw).
    pub stored_bytes: u64,
    #[serde(skip)]
    pub metrics: Option<ErrorMetrics>,
}

/// Errors of the pipeline name the file and the tensor.
#[derive(Debug)]
pub enum PipelineError {
    /// Reading the source.
    Import(ImportError),
    /// Quantizing a tensor (e.g. a NaN).
    Codec {
        /// The source file.
        path: String,
        /// The tensor.
        tensor: String,
        /// What went wrong.
        source: lsqr::codec::CodecError,
    },
    /// Writing the output.
    Format(lsqr::format::FormatError),
    /// A `--bpw` budget no choice fits.
    Budget(String),
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Import(e) => e.fmt(f),
            Self::Codec { path, tensor, source } => {
                write!(f, "{path}: tensor '{tensor}': {source}")
            }
            Self::Format(e) => e.fmt(f),
            Self::Budget(message) => f.write_str(message),
        }
    }
}

impl From<ImportError> for PipelineError {
    fn from(e: ImportError) -> Self {
        Self::Import(e)
    }
}

impl From<lsqr::format::FormatError> for PipelineError {
    fn from(e: lsqr::format::FormatError) -> Self {
        Self::Format(e)
    }
}

/// Quantizes one tensor with `choice` at `bits`: for `Auto`, every family
/// is tried and the one with the least error energy kept.
pub fn quantize_tensor(
    model: &SourceModel,
    t: &SourceTensor,
    settings: &Settings,
    choice: CodecChoice,
    bits: u32,
) -> Result<(QuantizedTensor, ErrorMetrics), PipelineError> {
    let values = model.to_f32(t)?;
    let settings = &Settings { codec: choice, ..settings.clone() };
    best_quantization(model, t, settings, &values, &t.shape, bits, settings.scaling_for(t))
}

/// `values` (tensor `t` of `model`, or a sample of its rows of `shape`)
/// quantized at `bits` with `scaling` by the settings' codec: for `Auto`,
/// the family with the least error energy.
pub fn best_quantization(
    model: &SourceModel,
    t: &SourceTensor,
    settings: &Settings,
    values: &[f32],
    shape: &[usize],
    bits: u32,
    scaling: Scaling,
) -> Result<(QuantizedTensor, ErrorMetrics), PipelineError> {
    let codec_error = |source| PipelineError::Codec {
        path: model.path.display().to_string(),
        tensor: t.name.clone(),
        source,
    };
    let kinds: Vec<CodecKind> = match settings.codec {
        CodecChoice::Fixed(k) => vec![k],
        CodecChoice::Auto => CodecKind::ALL.to_vec(),
    };
    let mut best: Option<(QuantizedTensor, ErrorMetrics)> = None;
    for kind in kinds {
        let q =
            settings.quantize(&t.name, values, shape, kind, bits, scaling).map_err(codec_error)?;
        let m = q.metrics_against(values).map_err(codec_error)?;
        if best.as_ref().is_none_or(|(_, b)| m.error_energy < b.error_energy) {
            best = Some((q, m));
        }
    }
    Ok(best.expect("at least one codec"))
}

/// `f16` or `f32`.
pub fn scale_dtype_name(d: ScaleDtype) -> &'static str {
    match d {
        ScaleDtype::F16 => "f16",
        ScaleDtype::F32 => "f32",
    }
}

/// Bytes a quantized tensor takes in the file.
pub fn stored_bytes(q: &QuantizedTensor) -> u64 {
    let bits = q.codebook().width().bits();
    let codes = lsqr::pack::packed_len(q.codes().len(), bits).unwrap_or(usize::MAX) as u64;
    let table = if q.codebook().kind() == CodecKind::Lut { 4u64 << bits } else { 0 };
    codes + q.scales().to_le_bytes().len() as u64 + table
}

enum Outcome {
    Quantized(Box<QuantizedTensor>, ErrorMetrics),
    Keep,
}

/// Runs `settings` over the model, writing to `writer` if given, in the
/// source's order. Tensors are quantized a window at a time on the rayon
/// pool (one tensor per thread), so memory stays a small multiple of the
/// largest tensor. `progress` is called after each tensor.
pub fn run<W: std::io::Write + std::io::Seek>(
    model: &SourceModel,
    settings: &Settings,
    mut writer: Option<&mut LsqWriter<W>>,
    progress: &(dyn Fn(&SourceTensor) + Sync),
) -> Result<Vec<TensorResult>, PipelineError> {
    let window = rayon::current_num_threads().max(1);
    let mut results = Vec::with_capacity(model.tensors.len());
    for chunk in windows(&model.tensors, window, |t| settings.action(t) != Action::Keep) {
        let outcomes: Vec<Result<Outcome, PipelineError>> = chunk
            .par_iter()
            .map(|t| {
                let outcome = match settings.action(t) {
                    Action::Keep => Ok(Outcome::Keep),
                    Action::Quantize(bits) => {
                        quantize_tensor(model, t, settings, settings.codec, bits)
                            .map(|(q, m)| Outcome::Quantized(Box::new(q), m))
                    }
                };
                progress(t);
                outcome
            })
            .collect();
        for (t, outcome) in chunk.iter().zip(outcomes) {
            let source_bytes = t.byte_len() as u64;
            let result = match outcome? {
                Outcome::Quantized(q, m) => {
                    if let Some(w) = writer.as_deref_mut() {
                        w.add_quantized(&t.name, &q)?;
                    }
                    TensorResult {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        dtype: t.dtype.name(),
                        codec: Some(q.codebook().kind().name().to_string()),
                        bits: Some(q.codebook().width().bits()),
                        scaling: Some(crate::commands::scaling_name(q.scaling())),
                        snr_db: Some(m.snr_db()),
                        scale_dtype: (q.scaling() != Scaling::Unit)
                            .then(|| scale_dtype_name(q.scales().dtype())),
                        source_bytes,
                        stored_bytes: stored_bytes(&q),
                        metrics: Some(m),
                    }
                }
                Outcome::Keep => {
                    if let Some(w) = writer.as_deref_mut() {
                        w.add_raw(&t.name, t.dtype, &t.shape, &model.bytes(t)?)?;
                    }
                    TensorResult {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        dtype: t.dtype.name(),
                        codec: None,
                        bits: None,
                        scaling: None,
                        snr_db: None,
                        scale_dtype: None,
                        source_bytes,
                        stored_bytes: source_bytes,
                        metrics: None,
                    }
                }
            };
            model.release(t);
            results.push(result);
        }
    }
    Ok(results)
}

/// Consecutive runs of `tensors` holding at most `per_window` heavy ones
/// (and any light ones between them), so every thread gets real work while
/// at most `per_window` large tensors are in memory at once.
fn windows(
    tensors: &[SourceTensor],
    per_window: usize,
    heavy: impl Fn(&SourceTensor) -> bool,
) -> Vec<&[SourceTensor]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, t) in tensors.iter().enumerate() {
        if heavy(t) {
            if count == per_window {
                out.push(&tensors[start..i]);
                (start, count) = (i, 0);
            }
            count += 1;
        }
    }
    if start < tensors.len() {
        out.push(&tensors[start..]);
    }
    out
}

/// Totals over a model's results.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Tensors in all.
    pub tensors: usize,
    /// Tensors quantized.
    pub quantized: usize,
    /// Parameters in all.
    pub parameters: u64,
    /// Bytes of the source's tensors.
    pub source_bytes: u64,
    /// Bytes of the output (the file, if written; else the sections).
    pub output_bytes: u64,
    /// source_bytes / output_bytes.
    pub compression_ratio: f64,
    /// SNR of all quantized tensors pooled (energy-weighted), dB.
    pub weighted_snr_db: Option<f64>,
}

impl Totals {
    /// Sums `results`; `output_bytes` is the file size when there is a file.
    pub fn of(results: &[TensorResult], output_bytes: Option<u64>) -> Self {
        let pooled = results.iter().filter_map(|r| r.metrics).reduce(ErrorMetrics::merge);
        let source_bytes = results.iter().map(|r| r.source_bytes).sum();
        let output_bytes =
            output_bytes.unwrap_or_else(|| results.iter().map(|r| r.stored_bytes).sum());
        Self {
            tensors: results.len(),
            quantized: results.iter().filter(|r| r.codec.is_some()).count(),
            parameters: results.iter().map(|r| r.shape.iter().product::<usize>() as u64).sum(),
            source_bytes,
            output_bytes,
            compression_ratio: source_bytes as f64 / output_bytes.max(1) as f64,
            weighted_snr_db: pooled.map(|m| m.snr_db()),
        }
    }
}

/// One cell of an `eval` table.
#[derive(Debug, Clone, Serialize)]
pub struct EvalCell {
    /// Codec.
    pub codec: String,
    /// Code width.
    pub bits: u32,
    /// Pooled SNR over the quantized tensors, dB.
    pub weighted_snr_db: f64,
    /// Stored bits per quantized weight, scales and tables included.
    pub bits_per_weight: f64,
}

/// The `eval` row of the seed codec as the reference applies it: no scale.
pub const SEED_REFERENCE: &str = "seed-ref";

/// SNR of every (codec, width) pair over the tensors `settings` would
/// quantize, without writing anything. With `seed` among the codecs, a
/// `seed-ref` row (no scale, as the reference) comes first.
pub fn evaluate(
    model: &SourceModel,
    settings: &Settings,
    codecs: &[CodecKind],
    widths: &[u32],
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<EvalCell>, PipelineError> {
    let tensors: Vec<&SourceTensor> = model
        .tensors
        .iter()
        .filter(|t| matches!(settings.action(t), Action::Quantize(_)))
        .collect();
    let weights: u64 = tensors.iter().map(|t| t.element_count() as u64).sum();
    // The reference applies its codec without any scale; show that too.
    let unit = Settings { scaling: Scaling::Unit, ..settings.clone() };
    let mut runs: Vec<(&str, CodecKind, &Settings)> = Vec::new();
    if codecs.contains(&CodecKind::Seed) {
        runs.push((SEED_REFERENCE, CodecKind::Seed, &unit));
    }
    runs.extend(codecs.iter().map(|&k| (k.name(), k, settings)));
    let mut cells = Vec::new();
    for (label, kind, settings) in runs {
        for &bits in widths {
            let per_tensor: Vec<Result<(ErrorMetrics, u64), PipelineError>> = tensors
                .par_iter()
                .map(|t| {
                    let r = quantize_tensor(model, t, settings, CodecChoice::Fixed(kind), bits)
                        .map(|(q, m)| (m, stored_bytes(&q)));
                    progress();
                    r
                })
                .collect();
            let mut pooled = ErrorMetrics::default();
            let mut bytes = 0u64;
            for r in per_tensor {
                let (m, b) = r?;
                pooled = pooled.merge(m);
                bytes += b;
            }
            cells.push(EvalCell {
                codec: label.to_string(),
                bits,
                weighted_snr_db: pooled.snr_db(),
                bits_per_weight: 8.0 * bytes as f64 / weights.max(1) as f64,
            });
        }
    }
    Ok(cells)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lsqr::format::RawDtype;
    use lsqr_import::{Format, TensorBytes};
    use proptest::prelude::*;

    /// What `lsqr quantize` uses when no option is given.
    pub(crate) fn defaults(codec: CodecKind) -> Settings {
        Settings {
            bits: 4,
            codec: CodecChoice::Fixed(codec),
            scaling: Scaling::Group(64),
            scale_dtype: ScaleDtype::F16,
            scale_method: ScaleMethod::AbsMax,
            scale_fallback: true,
            keep: Vec::new(),
            bits_for: Vec::new(),
            per_tensor: Default::default(),
            budget: None,
            importance: Default::default(),
            feedback: Default::default(),
        }
    }

    pub(crate) fn model_of(values: &[f32], shape: &[usize]) -> SourceModel {
        SourceModel {
            path: "test.safetensors".into(),
            format: Format::Safetensors,
            buffers: Vec::new(),
            tensors: vec![SourceTensor {
                name: "w".into(),
                dtype: RawDtype::F32,
                shape: shape.to_vec(),
                bytes: TensorBytes::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            }],
        }
    }

    /// A group of 64 values of magnitude about 10^e, e in `lo..=hi`.
    fn group(lo: f64, hi: f64) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec((lo..=hi, any::<bool>()), 64).prop_map(|v| {
            v.into_iter()
                .map(|(e, negative)| {
                    let x = (10f64.powf(e) as f32).min(f32::MAX / 2.0);
                    if negative {
                        -x
                    } else {
                        x
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Default options work on any finite input (issue 11): dead
        /// channels (1e-45..1e-30), ordinary values and values up to
        /// f32::MAX / 2, with every codec: no error, and the decoded tensor
        /// is no worse than zeros. Scales fall back to f32 exactly when some
        /// group's magnitude exceeds f16's range.
        #[test]
        fn default_options_take_any_finite_tensor(
            groups in proptest::collection::vec(
                prop_oneof![group(-45.0, -30.0), group(-3.0, 0.0), group(4.0, 38.23)],
                1..5,
            ),
            kind in 0usize..CodecKind::ALL.len(),
            bits in 2u32..=8,
        ) {
            let kind = CodecKind::ALL[kind];
            let values = groups.concat();
            let model = model_of(&values, &[groups.len(), 64]);
            let settings = defaults(kind);
            let (q, m) = quantize_tensor(
                &model, &model.tensors[0], &settings, CodecChoice::Fixed(kind), bits,
            )
            .unwrap_or_else(|e| panic!("{kind} C={bits}: {e}"));
            prop_assert!(m.error_energy <= m.signal_energy, "{kind} C={bits}: {m:?}");
            let overflow = values.iter().any(|v| v.abs() > 65504.0);
            let want = if overflow { ScaleDtype::F32 } else { ScaleDtype::F16 };
            prop_assert_eq!(q.scales().dtype(), want);
        }
    }

    #[test]
    fn an_explicit_f16_scale_dtype_is_kept_to() {
        let mut values = vec![0.5f32; 128];
        values[3] = 1e6;
        let model = model_of(&values, &[2, 64]);
        let settings = Settings { scale_fallback: false, ..defaults(CodecKind::Log) };
        let e = quantize_tensor(&model, &model.tensors[0], &settings, settings.codec, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'w'") && e.contains("f16"), "{e}");
    }
}
