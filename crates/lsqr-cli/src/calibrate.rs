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

use lsqr::codec::Scaling;
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
    /// Per tensor name: output error energy per unit of (importance-weighted)
    /// weight error energy.
    pub gains: BTreeMap<String, f64>,
}

/// Runs `source`'s graph (an ONNX model) imported at the shapes of the
/// samples: first once to record the inputs of every layer whose weight is
/// in `names` (their mean squares are its importance), then once per such
/// tensor quantized alone at `probe` (its gain). Names the calibration
/// graph lacks, and tensors the probe leaves exact, get neither.
pub fn calibrate(
    source: &SourceModel,
    settings: &Settings,
    samples_path: &Path,
    probe: (u32, Scaling),
    names: &[String],
) -> Result<Calibration, String> {
    let (graph, inputs) = graph_for_samples(source, samples_path)?;
    let importance = input_importance(&graph, &inputs, names)?;
    let settings = Settings { importance: importance.clone(), ..settings.clone() };
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
        // The gain is per unit of the error the budget counts: weighted by
        // the importance where there is one.
        let weight_error = match settings.importance.get(name) {
            None => m.error_energy,
            Some(w) => crate::budget::weighted_error(&values, &q.dequantize(), w),
        };
        if weight_error.is_nan() || weight_error <= 0.0 {
            continue;
        }
        let outputs = run(&file_bytes(&graph, &[(name.clone(), q)])?, &inputs)?;
        gains.insert(name.clone(), error_energy(&reference, &outputs) / weight_error);
    }
    bar.finish_and_clear();
    Ok(Calibration { importance, gains })
}

/// The importance of each weight in `names` that a linear or convolution
/// layer of `graph` takes: per column of its `[out, rest]` view, the mean
/// square of the input it multiplies over the samples, floored at 1 % of
/// the tensor's mean so that inputs the samples never excite still count.
fn input_importance(
    graph: &ImportedGraph,
    inputs: &[Vec<f32>],
    names: &[String],
) -> Result<BTreeMap<String, Vec<f32>>, String> {
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
    let mut out = BTreeMap::new();
    for l in layers {
        let w = &l.weights[0];
        let Some(t) = graph.tensors.iter().find(|t| &t.name == w) else { continue };
        let Some((shape, x)) = value(&l.inputs[0]) else { continue };
        if let Some(imp) = column_importance(&l.op, &t.shape, &shape, x) {
            out.insert(w.clone(), imp);
        }
    }
    Ok(out)
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
