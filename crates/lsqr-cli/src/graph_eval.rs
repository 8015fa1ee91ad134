//! `lsqr eval model.onnx --inputs samples.npz`: what quantization does to
//! the model's outputs, not only to its weights. The float graph and each
//! (codec, C) variant run through the runtime on the samples; each variant
//! is reported by its output SNR against the float outputs, its top-1
//! agreement where the last axis is a class axis, its weight SNR and its
//! size, so that C is picked by what the model does.

use std::io::Cursor;
use std::path::Path;

use lsqr::codec::{CodecKind, ErrorMetrics, ScaleDtype};
use lsqr::format::{LsqFile, LsqWriter};
use lsqr::runtime::Plan;
use lsqr_import::onnx_graph::{graph_of, GraphOptions, ImportedGraph, TensorRole};
use serde::Serialize;

use crate::pipeline::{self, CodecChoice, EvalCell, ScaleChoice, Settings};

/// One variant's results.
#[derive(Debug, Clone, Serialize)]
pub struct GraphEvalRow {
    /// Codec (`f32` for the float graph).
    pub codec: String,
    /// Code width (32 for the float graph; 0 for a budget's row, whose
    /// widths vary by tensor).
    pub bits: u32,
    /// `--bpw`: the budget of this row.
    pub budget: Option<f64>,
    /// SNR of all outputs against the float graph's, dB.
    pub output_snr_db: f64,
    /// Fraction of rows of class-axis outputs whose argmax agrees with the
    /// float graph's (`None` when no output has a class axis).
    pub top1_agreement: Option<f64>,
    /// Pooled SNR of the quantized weights, dB.
    pub weight_snr_db: f64,
    /// Bits per quantized weight, scales and tables included.
    pub bits_per_weight: f64,
    /// Bytes of the whole `.lsq` file.
    pub file_bytes: u64,
}

/// A named array: name, shape, values.
pub(crate) type Array = (String, Vec<usize>, Vec<f32>);
/// A graph output: shape, values.
pub(crate) type Output = (Vec<usize>, Vec<f32>);

/// The samples: one array per graph input, named as the input, with the
/// input's full shape (the batch is part of it).
pub(crate) fn samples(path: &Path) -> Result<Vec<Array>, String> {
    let m = lsqr_import::open(path).map_err(|e| e.to_string())?;
    if !matches!(m.format, lsqr_import::Format::Npz | lsqr_import::Format::Npy) {
        return Err(format!(
            "{}: --inputs takes a .npz (one array per graph input)",
            path.display()
        ));
    }
    m.tensors
        .iter()
        .map(|t| {
            let bytes = m.bytes(t).map_err(|e| e.to_string())?;
            Ok((t.name.clone(), t.shape.clone(), crate::run::to_f32(t.dtype, &bytes)))
        })
        .collect()
}

/// Writes the graph with `quantized` tensors (by name) and raw f32 ones.
pub(crate) fn file_bytes(
    g: &ImportedGraph,
    quantized: &[(String, lsqr::codec::QuantizedTensor)],
) -> Result<Vec<u8>, String> {
    let e = |e: lsqr::format::FormatError| e.to_string();
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).map_err(e)?;
    crate::graph::write_graph(&mut w, g)?;
    for t in &g.tensors {
        match quantized.iter().find(|(n, _)| n == &t.name) {
            Some((_, q)) => w.add_quantized(&t.name, q).map_err(e)?,
            None => w.add_raw_f32(&t.name, &t.shape, &t.data).map_err(e)?,
        }
    }
    Ok(w.finish().map_err(e)?.into_inner())
}

/// Runs a file's graph on the samples; its outputs and their shapes.
pub(crate) fn run(bytes: &[u8], inputs: &[Vec<f32>]) -> Result<Vec<Output>, String> {
    let file = LsqFile::from_bytes(bytes).map_err(|e| e.to_string())?;
    let plan = Plan::new(&file).map_err(|e| e.to_string())?;
    let mut arena = crate::run::arena_for(&plan)?;
    let mut r = plan.bind(&mut arena).map_err(|e| e.to_string())?;
    for (i, x) in inputs.iter().enumerate() {
        r.set_input(i, x).map_err(|e| e.to_string())?;
    }
    r.run().map_err(|e| e.to_string())?;
    plan.outputs()
        .iter()
        .enumerate()
        .map(|(i, o)| Ok((o.shape.clone(), r.output(i).map_err(|e| e.to_string())?.to_vec())))
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0
}

/// Output SNR and top-1 agreement of `test` against `reference`.
fn compare(
    reference: &[(Vec<usize>, Vec<f32>)],
    test: &[(Vec<usize>, Vec<f32>)],
) -> (f64, Option<f64>) {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    let (mut agree, mut rows) = (0usize, 0usize);
    for ((shape, a), (_, b)) in reference.iter().zip(test) {
        for (&x, &y) in a.iter().zip(b) {
            signal += (x as f64).powi(2);
            noise += (x as f64 - y as f64).powi(2);
        }
        let classes = shape.last().copied().unwrap_or(0);
        if shape.len() >= 2 && classes > 1 {
            for (ra, rb) in a.chunks(classes).zip(b.chunks(classes)) {
                rows += 1;
                agree += usize::from(argmax(ra) == argmax(rb));
            }
        }
    }
    let snr = if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() };
    (snr, (rows > 0).then(|| agree as f64 / rows as f64))
}

/// The model's graph imported at the shapes of the samples' arrays (the
/// inputs fixed by `input_values` aside: an array of that name is not
/// read), and the arrays in the order of the graph's inputs.
pub(crate) fn graph_for_samples(
    model: &lsqr_import::SourceModel,
    samples_path: &Path,
    input_values: &[(String, Vec<f64>)],
) -> Result<(ImportedGraph, Vec<Vec<f32>>), String> {
    let arrays = samples(samples_path)?;
    let fixed = |n: &String| input_values.iter().any(|(v, _)| v == n);
    let options = GraphOptions {
        input_shapes: arrays
            .iter()
            .filter(|(n, _, _)| !fixed(n))
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect(),
        input_values: input_values.to_vec(),
    };
    let graph = graph_of(model, &options).map_err(|e| e.to_string())?;
    let mut inputs = Vec::new();
    for (name, _) in &graph.input_shapes {
        let (_, _, data) = arrays.iter().find(|(n, _, _)| n == name).ok_or_else(|| {
            format!("{}: has no array named '{name}' (a graph input)", samples_path.display())
        })?;
        inputs.push(data.clone());
    }
    Ok((graph, inputs))
}

/// `lsqr eval model.onnx --inputs samples.npz`.
#[allow(clippy::too_many_arguments)]
pub fn eval_graph(
    input: &Path,
    samples_path: &Path,
    widths: &[u32],
    kinds: &[CodecKind],
    scales: ScaleChoice,
    budgets: &[f64],
    input_values: &[(String, Vec<f64>)],
    json: bool,
    plot: Option<&Path>,
) -> Result<(), String> {
    let model = lsqr_import::open(input).map_err(|e| e.to_string())?;
    let (graph, inputs) = graph_for_samples(&model, samples_path, input_values)?;
    let base = Settings {
        bits: 4,
        codec: CodecChoice::Fixed(CodecKind::Log),
        scaling: scales.scaling,
        scale_dtype: scales.dtype.unwrap_or(ScaleDtype::F16),
        scale_method: scales.method,
        scale_fallback: scales.dtype.is_none(),
        keep: Vec::new(),
        bits_for: Vec::new(),
        per_tensor: Default::default(),
        budget: None,
        importance: Default::default(),
        feedback: Default::default(),
    };
    let (source, settings) = crate::graph::tensors_as_model(input, &graph, &base);
    let weights: Vec<_> = source
        .tensors
        .iter()
        .filter(|t| matches!(settings.action(t), pipeline::Action::Quantize(_)))
        .collect();
    let weight_count: u64 = weights.iter().map(|t| t.element_count() as u64).sum();
    let float_bytes = file_bytes(&graph, &[])?;
    let reference = run(&float_bytes, &inputs)?;
    let mut rows = vec![GraphEvalRow {
        codec: "f32".into(),
        bits: 32,
        budget: None,
        output_snr_db: f64::INFINITY,
        top1_agreement: compare(&reference, &reference).1,
        weight_snr_db: f64::INFINITY,
        bits_per_weight: 32.0,
        file_bytes: float_bytes.len() as u64,
    }];
    let bar = crate::commands::progress_bar((kinds.len() * widths.len()) as u64, "eval");
    for &kind in kinds {
        for &bits in widths {
            let mut quantized = Vec::new();
            let (mut pooled, mut stored) = (ErrorMetrics::default(), 0u64);
            for t in &weights {
                let (q, m) = pipeline::quantize_tensor(
                    &source,
                    t,
                    &settings,
                    CodecChoice::Fixed(kind),
                    bits,
                )
                .map_err(|e| e.to_string())?;
                pooled = pooled.merge(m);
                stored += pipeline::stored_bytes(&q);
                quantized.push((t.name.clone(), q));
            }
            let bytes = file_bytes(&graph, &quantized)?;
            let outputs = run(&bytes, &inputs)?;
            let (snr, top1) = compare(&reference, &outputs);
            rows.push(GraphEvalRow {
                codec: kind.name().into(),
                bits,
                budget: None,
                output_snr_db: snr,
                top1_agreement: top1,
                weight_snr_db: pooled.snr_db(),
                bits_per_weight: 8.0 * stored as f64 / weight_count.max(1) as f64,
                file_bytes: bytes.len() as u64,
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    // Budgets: widths and layouts per tensor by weight error, then by
    // output error measured on the same samples (optimistic: the samples
    // calibrate and judge).
    for &kind in kinds {
        for &bpw in budgets {
            for calibrated in [false, true] {
                let mut s = Settings { codec: CodecChoice::Fixed(kind), ..settings.clone() };
                let layouts = crate::budget::default_layouts();
                let names: Vec<String> = weights.iter().map(|t| t.name.clone()).collect();
                let gains = if calibrated {
                    let probe = crate::budget::probe(&source, &s, bpw, &layouts);
                    let base = Settings { codec: CodecChoice::Fixed(kind), ..base.clone() };
                    let c = crate::calibrate::calibrate(
                        &model,
                        &base,
                        samples_path,
                        probe,
                        &names,
                        false,
                        input_values,
                    )?;
                    s.importance = c.importance;
                    Some(c.gains)
                } else {
                    None
                };
                let plan = crate::budget::plan(&source, &s, bpw, &layouts, gains.as_ref())
                    .map_err(|e| e.to_string())?;
                s.per_tensor = plan.choices;
                let mut quantized = Vec::new();
                let (mut pooled, mut stored) = (ErrorMetrics::default(), 0u64);
                for t in &weights {
                    let pipeline::Action::Quantize(bits) = s.action(t) else { continue };
                    let (q, m) =
                        pipeline::quantize_tensor(&source, t, &s, CodecChoice::Fixed(kind), bits)
                            .map_err(|e| e.to_string())?;
                    pooled = pooled.merge(m);
                    stored += pipeline::stored_bytes(&q);
                    quantized.push((t.name.clone(), q));
                }
                let bytes = file_bytes(&graph, &quantized)?;
                let (snr, top1) = compare(&reference, &run(&bytes, &inputs)?);
                let how = if calibrated { " --calibrate" } else { "" };
                rows.push(GraphEvalRow {
                    codec: format!("{} --bpw{how}", kind.name()),
                    bits: 0,
                    budget: Some(bpw),
                    output_snr_db: snr,
                    top1_agreement: top1,
                    weight_snr_db: pooled.snr_db(),
                    bits_per_weight: 8.0 * stored as f64 / weight_count.max(1) as f64,
                    file_bytes: bytes.len() as u64,
                });
            }
        }
    }
    if let Some(svg) = plot {
        let cells: Vec<EvalCell> = rows
            .iter()
            .skip(1)
            .map(|r| EvalCell {
                codec: r.codec.clone(),
                bits: r.bits,
                weighted_snr_db: r.output_snr_db,
                bits_per_weight: r.bits_per_weight,
            })
            .collect();
        let name = input.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        crate::plot::snr_vs_bits(&cells, &format!("{name} (output SNR)"), svg)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("serializable"));
        return Ok(());
    }
    let quantized_tensors = graph.tensors.iter().filter(|t| t.role == TensorRole::Weight).count();
    println!(
        "{} (onnx graph, {} layers, {} quantizable weights) on {}: outputs against the f32 graph",
        input.display(),
        graph.graph.layers.len(),
        quantized_tensors,
        samples_path.display()
    );
    println!(
        "{:<24} {:>6} {:>14} {:>7} {:>15} {:>6} {:>12}",
        "codec", "C", "output SNR dB", "top-1", "weight SNR dB", "bpw", "file bytes"
    );
    for r in &rows {
        let top1 = r.top1_agreement.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
        let width = r.budget.map_or(r.bits.to_string(), |b| format!("<={b}"));
        let db = |v: f64| if v.is_finite() { format!("{v:.2}") } else { "exact".into() };
        println!(
            "{:<24} {:>6} {:>14} {:>7} {:>15} {:>6.2} {:>12}",
            r.codec,
            width,
            db(r.output_snr_db),
            top1,
            db(r.weight_snr_db),
            r.bits_per_weight,
            r.file_bytes
        );
    }
    Ok(())
}
