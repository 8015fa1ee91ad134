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

use crate::graph_eval::{file_bytes, graph_for_samples, run, Output};
use crate::pipeline::{best_quantization, Settings};

/// Output error energy gain per tensor name, measured on the samples with
/// `source`'s graph (an ONNX model) imported at the samples' shapes.
/// Tensors the probe leaves exact get gain 0 and are left out; names the
/// calibration graph lacks are left out too (the caller decides).
pub fn output_gains(
    source: &SourceModel,
    settings: &Settings,
    samples_path: &Path,
    probe: (u32, Scaling),
    names: &[String],
) -> Result<BTreeMap<String, f64>, String> {
    let (graph, inputs) = graph_for_samples(source, samples_path)?;
    let (model, settings) = crate::graph::tensors_as_model(&source.path, &graph, settings);
    let reference = run(&file_bytes(&graph, &[])?, &inputs)?;
    let mut gains = BTreeMap::new();
    let bar = crate::commands::progress_bar(names.len() as u64, "calibrate");
    for name in names {
        bar.inc(1);
        let Some(t) = model.tensors.iter().find(|t| &t.name == name) else { continue };
        let values = model.to_f32(t).map_err(|e| e.to_string())?;
        let (q, m) = best_quantization(&model, t, &settings, &values, &t.shape, probe.0, probe.1)
            .map_err(|e| e.to_string())?;
        if m.error_energy.is_nan() || m.error_energy <= 0.0 {
            continue;
        }
        let outputs = run(&file_bytes(&graph, &[(name.clone(), q)])?, &inputs)?;
        gains.insert(name.clone(), error_energy(&reference, &outputs) / m.error_energy);
    }
    bar.finish_and_clear();
    Ok(gains)
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
