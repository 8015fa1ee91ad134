//! `--calibrate samples.npz`: the budget weighs each tensor's weight error
//! by what it does to the model's outputs on the samples.
//!
//! Weight SNR treats an error in a stem convolution like one in a wide
//! classifier, but a model can be far more sensitive to some tensors than
//! to others (small layers feeding many, a final projection). Each tensor
//! is quantized alone at a probe setting and the graph run on the samples:
//! its gain is the output error energy this adds per unit of its weight
//! error energy. The budget then minimizes the sum of gain × weight error,
//! which to first order is the output error of all tensors quantized
//! together.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use lsqr::codec::{ErrorFeedback, Scaling};
use lsqr::format::Value;
use lsqr_import::SourceModel;

use lsqr::format::Layer;
use lsqr_import::onnx_graph::ImportedGraph;

use crate::graph_eval::{file_bytes, graph_for_samples, run, Output};
use crate::pipeline::{best_quantization, Settings};

/// What calibration measured.
pub struct Calibration {
    /// Per tensor name: the mean square of each input column over the
    /// samples (the codec's importance weights).
    pub importance: BTreeMap<String, Vec<f32>>,
    /// Per tensor name: its inputs' covariance, factored for
    /// error-compensating rounding (tensors of at most
    /// [`MAX_FEEDBACK_COLUMNS`] columns).
    pub feedback: BTreeMap<String, Arc<ErrorFeedback>>,
    /// Per tensor name: output error energy per unit of (importance-weighted)
    /// weight error energy.
    pub gains: BTreeMap<String, f64>,
}

/// Runs `source`'s graph (an ONNX model) imported at the shapes of the
/// samples: first once to record the inputs of every layer whose weight is
/// in `names` (their mean squares are its importance), then once per such
/// tensor quantized alone at `probe` (its gain). Names the calibration
/// graph lacks, and tensors the probe leaves exact, get neither. With
/// `error_feedback`, each tensor's input covariance is measured and
/// factored too, and the probes and gains use it. `input_values` fix graph
/// inputs as `--input-value` does.
pub fn calibrate(
    source: &SourceModel,
    settings: &Settings,
    samples_path: &Path,
    probe: (u32, Scaling),
    names: &[String],
    error_feedback: bool,
    input_values: &[(String, Vec<f64>)],
) -> Result<Calibration, String> {
    let (graph, inputs) = graph_for_samples(source, samples_path, input_values)?;
    let (importance, feedback) = measure_inputs(&graph, &inputs, names, error_feedback)?;
    let settings =
        Settings { importance: importance.clone(), feedback: feedback.clone(), ..settings.clone() };
    let (model, settings) = crate::graph::tensors_as_model(&source.path, &graph, &settings);
    let reference = run(&file_bytes(&graph, &[])?, &inputs)?;
    let mut gains = BTreeMap::new();
    let bar = crate::commands::progress_bar(names.len() as u64, "calibrate");
    for name in names {
        bar.inc(1);
        let Some(t) = model.tensors.iter().find(|t| &t.name == name) else { continue };
        let values = model.to_f32(t).map_err(|e| e.to_string())?;
        let (q, m) = best_quantization(&model, t, &settings, &values, &t.shape, probe.0, probe.1)
            .map_err(|e| e.to_string())?;
        // The gain is per unit of the error the budget counts.
        let weight_error =
            crate::budget::counted_error(&settings, name, &values, &q.dequantize(), &m);
        if weight_error.is_nan() || weight_error <= 0.0 {
            continue;
        }
        let outputs = run(&file_bytes(&graph, &[(name.clone(), q)])?, &inputs)?;
        gains.insert(name.clone(), error_energy(&reference, &outputs) / weight_error);
    }
    bar.finish_and_clear();
    Ok(Calibration { importance, feedback, gains })
}

/// Tensors with more columns than this get importance weights but no
/// error feedback: its factors take `16 × columns²` bytes and
/// `columns³` operations to build.
pub const MAX_FEEDBACK_COLUMNS: usize = 4096;

/// All tensors' error feedback together stays within this many bytes
/// (`16 × columns²` each); the tensors past it get importance only, with
/// a note.
pub const MAX_FEEDBACK_BYTES: usize = 2 << 30;

/// What the inputs of each weight in `names` that a linear or convolution
/// layer of `graph` takes say about it, per column of its `[out, rest]`
/// view:
/// - its importance: the mean square of the input each column multiplies
///   over the samples, floored at 1 % of the tensor's mean so that inputs
///   the samples never excite still count;
/// - with `error_feedback`, its error feedback: the covariance of those
///   inputs, factored.
#[allow(clippy::type_complexity)]
fn measure_inputs(
    graph: &ImportedGraph,
    inputs: &[Vec<f32>],
    names: &[String],
    error_feedback: bool,
) -> Result<(BTreeMap<String, Vec<f32>>, BTreeMap<String, Arc<ErrorFeedback>>), String> {
    let layers: Vec<&Layer> = graph
        .graph
        .layers
        .iter()
        .filter(|l| matches!(l.op.as_str(), "linear" | "conv2d" | "conv1d"))
        .filter(|l| l.weights.first().is_some_and(|w| names.contains(w)))
        .filter(|l| l.inputs.len() == 1)
        .collect();
    // Record every such layer's input as an extra output of the graph.
    let mut probe = graph.clone();
    for l in &layers {
        let v = &l.inputs[0];
        if !probe.graph.outputs.contains(v) && !probe.graph.inputs.contains(v) {
            probe.graph.outputs.push(v.clone());
        }
    }
    let outputs = run(&file_bytes(&probe, &[])?, inputs)?;
    let value = |name: &str| -> Option<(Vec<usize>, &[f32])> {
        if let Some(i) = probe.graph.inputs.iter().position(|n| n == name) {
            let shape = probe.input_shapes.iter().find(|(n, _)| n == name)?.1.clone();
            return Some((shape, &inputs[i][..]));
        }
        let i = probe.graph.outputs.iter().position(|n| n == name)?;
        Some((outputs[i].0.clone(), &outputs[i].1[..]))
    };
    let (mut importance, mut feedback) = (BTreeMap::new(), BTreeMap::new());
    let mut feedback_bytes = 0usize;
    for l in layers {
        let w = &l.weights[0];
        let Some(t) = graph.tensors.iter().find(|t| &t.name == w) else { continue };
        let Some((shape, x)) = value(&l.inputs[0]) else { continue };
        if let Some(imp) = column_importance(&l.op, &t.shape, &shape, x) {
            importance.insert(w.clone(), imp);
        }
        let columns: usize = t.shape[1..].iter().product();
        if !error_feedback || columns > MAX_FEEDBACK_COLUMNS {
            continue;
        }
        let bytes = 16 * columns * columns;
        if feedback_bytes + bytes > MAX_FEEDBACK_BYTES {
            eprintln!(
                "note: --error-feedback: '{w}' ({columns} columns) rounds to nearest: the \
                 factored covariances would take more than {} MiB",
                MAX_FEEDBACK_BYTES >> 20
            );
            continue;
        }
        feedback_bytes += bytes;
        if let Some(h) = column_covariance(l, &t.shape, &shape, x) {
            let zero = (0..columns).all(|i| h[i * columns + i] == 0.0);
            if zero || h.iter().any(|v| !v.is_finite()) {
                let what = if zero { "all-zero" } else { "non-finite" };
                return Err(format!(
                    "calibration: the samples give tensor '{w}' {what} inputs (layer input \
                     '{}'): no covariance for --error-feedback",
                    l.inputs[0]
                ));
            }
            let f = ErrorFeedback::from_covariance(&h, columns)
                .map_err(|e| format!("calibration: tensor '{w}': {e}"))?;
            feedback.insert(w.clone(), Arc::new(f));
        }
    }
    Ok((importance, feedback))
}

/// Rows of inputs summed into `Σ x xᵀ`, a chunk at a time through the
/// kernels' matmul.
struct Covariance {
    columns: usize,
    chunk: Vec<f32>,
    sum: Vec<f64>,
    rows: usize,
}

impl Covariance {
    const CHUNK_ROWS: usize = 2048;

    fn new(columns: usize) -> Self {
        Self {
            columns,
            chunk: Vec::with_capacity(Self::CHUNK_ROWS * columns),
            sum: vec![0.0; columns * columns],
            rows: 0,
        }
    }

    /// Appends one row, filled by `fill`.
    fn push(&mut self, fill: impl FnOnce(&mut [f32])) {
        let at = self.chunk.len();
        self.chunk.resize(at + self.columns, 0.0);
        fill(&mut self.chunk[at..]);
        self.rows += 1;
        if self.chunk.len() == Self::CHUNK_ROWS * self.columns {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let (k, r) = (self.columns, self.chunk.len() / self.columns);
        if r == 0 {
            return;
        }
        let mut t = vec![0.0f32; k * r];
        for (i, row) in self.chunk.chunks_exact(k).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                t[j * r + i] = v;
            }
        }
        let p = lsqr::kernels::matmul(&t, &self.chunk, k, r, k).expect("shapes agree");
        for (s, v) in self.sum.iter_mut().zip(p) {
            *s += f64::from(v);
        }
        self.chunk.clear();
    }

    /// The mean of `x xᵀ`, shrunk towards its diagonal by `k / (n + k)`
    /// for `n` rows of `k` columns, or `None` without rows.
    ///
    /// With few samples per column (a classifier's pooled input sees one
    /// row per sample) the sample covariance has directions no sample
    /// excites; error feedback would push the rounding error into them,
    /// where other inputs then meet it. The shrinkage keeps those
    /// directions weighed by the diagonal (the importance) instead: on
    /// Magika's 214 x 512 classifier calibrated on 64 samples, unshrunk
    /// feedback predicted 12 dB less output error on the samples and gave
    /// more on other files.
    fn mean(mut self) -> Option<Vec<f32>> {
        self.flush();
        if self.rows == 0 {
            return None;
        }
        let (n, k) = (self.rows as f64, self.columns);
        let keep = n / (n + k as f64);
        let cov = self.sum.iter().enumerate().map(|(i, &v)| {
            let mean = v / n;
            let shrunk = if i / k == i % k { mean } else { keep * mean };
            shrunk as f32
        });
        Some(cov.collect())
    }
}

/// The covariance of the inputs that multiply each column of the weight
/// (`w` its shape) of layer `l`, over the samples: for `linear`, of the
/// input's feature vectors; for convolutions, of the patches (zeros where
/// the padding is) that each output position reads, pooled over the
/// channel groups. `None` when shapes or attributes do not line up.
fn column_covariance(l: &Layer, w: &[usize], x_shape: &[usize], x: &[f32]) -> Option<Vec<f32>> {
    if l.op == "linear" {
        let features = *x_shape.last()?;
        if w.len() != 2 || w[1] != features || features == 0 {
            return None;
        }
        let mut acc = Covariance::new(features);
        for row in x.chunks_exact(features) {
            acc.push(|out| out.copy_from_slice(row));
        }
        return acc.mean();
    }
    let g = ConvGeometry::of(l, w, x_shape, x.len())?;
    let mut acc = Covariance::new(g.cin * g.kernel[0] * g.kernel[1]);
    for n in 0..g.batch {
        for group in 0..g.groups {
            for oy in 0..g.out[0] {
                for ox in 0..g.out[1] {
                    acc.push(|patch| g.patch(x, n, group, [oy, ox], patch));
                }
            }
        }
    }
    acc.mean()
}

/// A conv1d or conv2d layer's shapes and attributes, conv1d as a conv2d
/// of height 1.
struct ConvGeometry {
    batch: usize,
    groups: usize,
    /// Input channels per group.
    cin: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    out: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl ConvGeometry {
    fn of(l: &Layer, w: &[usize], x_shape: &[usize], x_len: usize) -> Option<Self> {
        let (input, kernel) = match (l.op.as_str(), w, x_shape) {
            ("conv2d", &[_, _, kh, kw], &[_, _, h, iw]) => ([h, iw], [kh, kw]),
            ("conv1d", &[_, _, k], &[_, _, len]) => ([1, len], [1, k]),
            _ => return None,
        };
        let pair = |key: &str, default: usize| -> Option<[usize; 2]> {
            let v = match l.attr(key) {
                None => [default as i64; 2],
                Some(Value::Int(v)) if l.op == "conv1d" => [1, *v],
                Some(Value::Int(v)) => [*v; 2],
                Some(Value::IntList(v)) if v.len() == 2 => [v[0], v[1]],
                _ => return None,
            };
            let v = [usize::try_from(v[0]).ok()?, usize::try_from(v[1]).ok()?];
            Some(if l.op == "conv1d" && key == "padding" { [0, v[1]] } else { v })
        };
        let groups = match l.attr("groups") {
            None => 1,
            Some(Value::Int(v)) => usize::try_from(*v).ok()?,
            _ => return None,
        };
        let (stride, padding, dilation) =
            (pair("stride", 1)?, pair("padding", 0)?, pair("dilation", 1)?);
        let (batch, channels, cin) = (x_shape[0], x_shape[1], w[1]);
        let elements = batch.checked_mul(channels)?.checked_mul(input[0] * input[1])?;
        if groups == 0 || cin == 0 || channels != cin.checked_mul(groups)? || x_len != elements {
            return None;
        }
        let mut out = [0; 2];
        for a in 0..2 {
            let span = dilation[a].checked_mul(kernel[a].checked_sub(1)?)?.checked_add(1)?;
            let padded = input[a].checked_add(2 * padding[a])?;
            out[a] = padded.checked_sub(span)? / stride[a].max(1) + 1;
        }
        Some(Self { batch, groups, cin, input, kernel, out, stride, padding, dilation })
    }

    /// The input values output position `at` of image `n`, group `group`
    /// multiplies, in the weight's `[cin, kh, kw]` order.
    fn patch(&self, x: &[f32], n: usize, group: usize, at: [usize; 2], out: &mut [f32]) {
        let [h, w] = self.input;
        let [kh, kw] = self.kernel;
        for ci in 0..self.cin {
            let plane = ((n * self.groups + group) * self.cin + ci) * h * w;
            for ky in 0..kh {
                let y =
                    (at[0] * self.stride[0] + ky * self.dilation[0]).checked_sub(self.padding[0]);
                for kx in 0..kw {
                    let xx = (at[1] * self.stride[1] + kx * self.dilation[1])
                        .checked_sub(self.padding[1]);
                    out[(ci * kh + ky) * kw + kx] = match (y, xx) {
                        (Some(y), Some(xx)) if y < h && xx < w => x[plane + y * w + xx],
                        _ => 0.0,
                    };
                }
            }
        }
    }
}

/// Mean squares of the input per weight column: for `linear`, per input
/// feature (the last axis); for convolutions, per input channel, repeated
/// over the kernel taps and averaged over the groups. `None` when shapes
/// do not line up.
fn column_importance(op: &str, w: &[usize], x_shape: &[usize], x: &[f32]) -> Option<Vec<f32>> {
    let mean_square = |values: &mut dyn Iterator<Item = f32>, n: usize| {
        values.map(|v| f64::from(v) * f64::from(v)).sum::<f64>() / n.max(1) as f64
    };
    let imp: Vec<f64> = match op {
        "linear" => {
            let features = *x_shape.last()?;
            if w.len() != 2 || w[1] != features || features == 0 {
                return None;
            }
            let rows = x.len() / features;
            (0..features)
                .map(|k| mean_square(&mut (0..rows).map(|r| x[r * features + k]), rows))
                .collect()
        }
        _ => {
            let (n, c) = (*x_shape.first()?, *x_shape.get(1)?);
            let per_group = *w.get(1)?;
            if per_group == 0 || c % per_group != 0 || n * c == 0 {
                return None;
            }
            let spatial = x.len() / (n * c);
            let channel: Vec<f64> = (0..c)
                .map(|ch| {
                    let mut it = (0..n).flat_map(|b| {
                        let at = (b * c + ch) * spatial;
                        x[at..at + spatial].iter().copied()
                    });
                    mean_square(&mut it, n * spatial)
                })
                .collect();
            let groups = c / per_group;
            let taps: usize = w[2..].iter().product();
            (0..per_group)
                .flat_map(|ci| {
                    let m = (0..groups).map(|g| channel[g * per_group + ci]).sum::<f64>()
                        / groups as f64;
                    std::iter::repeat_n(m, taps)
                })
                .collect()
        }
    };
    let mean = imp.iter().sum::<f64>() / imp.len().max(1) as f64;
    if mean.is_nan() || mean <= 0.0 || mean.is_infinite() {
        return None;
    }
    Some(imp.iter().map(|&v| v.max(0.01 * mean) as f32).collect())
}

/// Σ (a - b)² over every output.
fn error_energy(reference: &[Output], test: &[Output]) -> f64 {
    reference
        .iter()
        .zip(test)
        .flat_map(|((_, a), (_, b))| a.iter().zip(b))
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv_layer(op: &str, attrs: Vec<(String, Value)>) -> Layer {
        Layer {
            op: op.into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            weights: vec!["w".into()],
            attrs,
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// A convolution written out directly: `y[n, o, oy, ox]`.
    #[allow(clippy::too_many_arguments)]
    fn direct_conv(
        x: &[f32],
        [c, h, w]: [usize; 3],
        wt: &[f32],
        [co, ci, kh, kw]: [usize; 4],
        groups: usize,
        s: [usize; 2],
        p: [usize; 2],
        d: [usize; 2],
        (n, o, oy, ox): (usize, usize, usize, usize),
    ) -> f32 {
        let g = o / (co / groups);
        let mut acc = 0.0;
        for i in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    let y = (oy * s[0] + ky * d[0]) as isize - p[0] as isize;
                    let xx = (ox * s[1] + kx * d[1]) as isize - p[1] as isize;
                    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                        continue;
                    }
                    let ch = g * ci + i;
                    let v = x[((n * c + ch) * h + y as usize) * w + xx as usize];
                    acc += v * wt[((o * ci + i) * kh + ky) * kw + kx];
                }
            }
        }
        acc
    }

    #[test]
    fn conv_patches_are_what_each_output_multiplies() {
        let (n, c, h, w, co, groups) = (2, 4, 7, 6, 6, 2);
        let (ci, kh, kw) = (c / groups, 3, 2);
        let (s, p, d) = ([2, 1], [1, 2], [1, 2]);
        let x = values(n * c * h * w, 7);
        let wt = values(co * ci * kh * kw, 11);
        let pair = |v: [usize; 2]| Value::IntList(vec![v[0] as i64, v[1] as i64]);
        let attrs = vec![
            ("stride".into(), pair(s)),
            ("padding".into(), pair(p)),
            ("dilation".into(), pair(d)),
            ("groups".into(), Value::Int(groups as i64)),
        ];
        let l = conv_layer("conv2d", attrs);
        let geo = ConvGeometry::of(&l, &[co, ci, kh, kw], &[n, c, h, w], x.len()).unwrap();
        let cols = ci * kh * kw;
        let mut patch = vec![0.0; cols];
        for b in 0..n {
            for o in 0..co {
                let g = o / (co / groups);
                for oy in 0..geo.out[0] {
                    for ox in 0..geo.out[1] {
                        geo.patch(&x, b, g, [oy, ox], &mut patch);
                        let row = &wt[o * cols..(o + 1) * cols];
                        let got: f32 = row.iter().zip(&patch).map(|(a, b)| a * b).sum();
                        let want = direct_conv(
                            &x,
                            [c, h, w],
                            &wt,
                            [co, ci, kh, kw],
                            groups,
                            s,
                            p,
                            d,
                            (b, o, oy, ox),
                        );
                        assert!((got - want).abs() < 1e-5, "{b} {o} {oy} {ox}: {got} {want}");
                    }
                }
            }
        }
        // PyTorch's output size: floor((7 + 2 - 3) / 2) + 1, floor((6 + 4 - 3) / 1) + 1.
        assert_eq!(geo.out, [4, 8]);
        // conv1d: the same on a height-1 image; shapes that disagree: none.
        let l1 = conv_layer("conv1d", vec![("padding".into(), Value::Int(1))]);
        let g1 = ConvGeometry::of(&l1, &[3, 2, 3], &[1, 2, 5], 10).unwrap();
        assert_eq!((g1.out, g1.padding), ([1, 5], [0, 1]));
        assert!(ConvGeometry::of(&l1, &[3, 2, 3], &[1, 2, 5], 9).is_none());
        assert!(ConvGeometry::of(&l1, &[3, 3, 3], &[1, 2, 5], 10).is_none());
        assert!(ConvGeometry::of(&l1, &[3, 2, 9], &[1, 2, 5], 10).is_none());
    }

    #[test]
    fn covariance_is_the_mean_outer_product_shrunk_by_the_sample_count() {
        let (k, rows) = (3, 5000);
        let x = values(k * rows, 3);
        let mut acc = Covariance::new(k);
        for r in x.chunks_exact(k) {
            acc.push(|out| out.copy_from_slice(r));
        }
        let got = acc.mean().unwrap();
        let keep = rows as f64 / (rows + k) as f64;
        for i in 0..k {
            for j in 0..k {
                let mean: f64 =
                    x.chunks_exact(k).map(|r| f64::from(r[i]) * f64::from(r[j])).sum::<f64>()
                        / rows as f64;
                let want = if i == j { mean } else { keep * mean };
                assert!((f64::from(got[i * k + j]) - want).abs() < 1e-5, "{i} {j}");
            }
        }
        assert!(Covariance::new(4).mean().is_none());
    }
}
