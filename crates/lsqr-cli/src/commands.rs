//! The subcommands. Each returns `Err(message)` for the user; `main` prints
//! it and exits non-zero.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use lsqr::codec::{CodecKind, ScaleDtype, ScaleMethod, Scaling};
use lsqr::format::{LsqFile, LsqFileWriter, RawDtype, Storage, TensorView, Value};
use serde::Serialize;

use crate::pipeline::{self, ScaleChoice, Settings, Totals};
use crate::table;
use lsqr_import::onnx_graph::GraphOptions;

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

#[derive(Serialize)]
struct QuantizeReport<'a> {
    input: String,
    format: &'static str,
    output: String,
    settings: SettingsReport,
    tensors: &'a [pipeline::TensorResult],
    totals: Totals,
}

#[derive(Serialize)]
struct SettingsReport {
    bits: u32,
    codec: String,
    scaling: String,
    scale_dtype: &'static str,
    scale_method: &'static str,
}

fn settings_report(s: &Settings) -> SettingsReport {
    SettingsReport {
        bits: s.bits,
        codec: s.codec.to_string(),
        scaling: scaling_name(s.scaling),
        scale_dtype: dtype_name(s.scale_dtype),
        scale_method: scale_method_name(s.scale_method),
    }
}

/// The `--scale-method` name of a method.
pub fn scale_method_name(m: ScaleMethod) -> &'static str {
    match m {
        ScaleMethod::AbsMax => "absmax",
        ScaleMethod::MseSearch => "mse",
    }
}

pub fn scaling_name(s: Scaling) -> String {
    match s {
        Scaling::Unit => "unit".into(),
        Scaling::Tensor => "tensor".into(),
        Scaling::Row => "row".into(),
        Scaling::Group(g) => format!("group {g}"),
        Scaling::TwoLevel(t) => {
            format!("two-level {}/{}/{}", t.super_len(), t.sub_len(), t.sub_bits())
        }
    }
}

fn dtype_name(d: ScaleDtype) -> &'static str {
    pipeline::scale_dtype_name(d)
}

/// `lsqr quantize`.
pub fn quantize(
    input: &Path,
    output: &Path,
    settings: &Settings,
    graph_options: &GraphOptions,
    weights_only: bool,
    require_graph: bool,
    json: bool,
) -> Result<(), String> {
    check_output(input, output)?;
    // The output's folder is checked (by creating the temporary file)
    // before any work is done.
    let mut file = LsqFileWriter::create(output).map_err(|e| e.to_string())?;
    let source = lsqr_import::open(input).map_err(|e| e.to_string())?;
    let model = &source;
    let is_onnx = model.format == lsqr_import::Format::Onnx;
    let fixes_inputs =
        !graph_options.input_shapes.is_empty() || !graph_options.input_values.is_empty();
    if (!is_onnx || weights_only) && fixes_inputs {
        return Err("--input-shape and --input-value apply to ONNX graphs only (without \
                    --weights-only)"
            .into());
    }
    if !is_onnx && require_graph {
        return Err(format!("--graph: {} files hold no graph (ONNX does)", model.format.name()));
    }
    // An ONNX model's graph is imported (folded, fused) and its tensors are
    // what gets quantized: weights of linear and conv layers, the rest f32.
    // With default options a graph that cannot be imported (a symbolic dim
    // without --input-shape, an unsupported op) leaves the weights only,
    // with a note saying why; --graph or --input-shape make it an error.
    let graph = match (is_onnx && !weights_only)
        .then(|| lsqr_import::onnx_graph::graph_of(model, graph_options))
    {
        None => None,
        Some(Ok(g)) => {
            for note in &g.notes {
                eprintln!("note: {note}");
            }
            Some(g)
        }
        Some(Err(e)) if require_graph || fixes_inputs => return Err(e.to_string()),
        Some(Err(e)) => {
            eprintln!(
                "note: the graph is not imported, the file holds the weights only: {}\n      \
                 (give the graph's input shapes with --input-shape NAME=d0,d1,...; --graph \
                 makes this an error, --weights-only silences it)",
                e.message
            );
            None
        }
    };
    let graph_model;
    let (model, settings) = match &graph {
        Some(g) => {
            let (m, s) = crate::graph::tensors_as_model(input, g, settings);
            graph_model = (m, s);
            (&graph_model.0, &graph_model.1)
        }
        None => (model, settings),
    };
    let names: Vec<String> =
        crate::budget::quantizable(model, settings).iter().map(|t| t.name.clone()).collect();
    if let Some(unknown) = settings.importance.keys().find(|k| !names.contains(k)) {
        return Err(format!("--importance: '{unknown}' is not a tensor this run quantizes"));
    }
    let planned;
    let settings = match &settings.budget {
        None => settings,
        Some(budget) => {
            let mut settings = settings.clone();
            let gains = match &budget.calibrate {
                None => None,
                Some(samples) => {
                    if graph.is_none() {
                        return Err("--calibrate runs the model's graph: it needs an ONNX \
                                    model whose graph imports"
                            .into());
                    }
                    let probe = crate::budget::probe(
                        model,
                        &settings,
                        budget.bits_per_weight,
                        &budget.layouts,
                    );
                    let feedback = budget.error_feedback;
                    let c = crate::calibrate::calibrate(
                        &source,
                        &settings,
                        samples,
                        probe,
                        &names,
                        feedback,
                        &graph_options.input_values,
                    )?;
                    // Importance given with --importance wins over measured.
                    for (name, w) in c.importance {
                        settings.importance.entry(name).or_insert(w);
                    }
                    settings.feedback = c.feedback;
                    Some(c.gains)
                }
            };
            let plan = crate::budget::plan(
                model,
                &settings,
                budget.bits_per_weight,
                &budget.layouts,
                gains.as_ref(),
            )
            .map_err(|e| e.to_string())?;
            eprintln!(
                "budget: {} bits per weight asked, {:.4} stored (codes, scales and tables of \
                 the quantized tensors); widths and scales per tensor below",
                budget.bits_per_weight, plan.bits_per_weight
            );
            settings.per_tensor = plan.choices;
            planned = settings;
            &planned
        }
    };
    let writer = file.writer();
    if let Some(g) = &graph {
        crate::graph::write_graph(writer, g)?;
    }
    let source_bytes: u64 = source.tensors.iter().map(|t| t.byte_len() as u64).sum();
    let source_name = input.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let metadata = [
        ("lsqr.source", Value::String(source_name)),
        ("lsqr.source_format", Value::String(model.format.name().into())),
        ("lsqr.source_bytes", Value::Int(source_bytes as i64)),
        ("lsqr.tool", Value::String(format!("lsqr {}", env!("CARGO_PKG_VERSION")))),
    ];
    for (k, v) in metadata {
        writer.add_metadata(k, v).map_err(|e| e.to_string())?;
    }
    let bar = progress_bar(model.tensors.len() as u64, "quantize");
    let results = pipeline::run(model, settings, Some(writer), &|t| {
        bar.set_message(t.name.clone());
        bar.inc(1);
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    file.finish().map_err(|e| e.to_string())?;
    let asked = dtype_name(settings.scale_dtype);
    for r in results.iter().filter(|r| r.scale_dtype.is_some_and(|d| d != asked)) {
        eprintln!(
            "note: tensor '{}': its values exceed f16's range (65504), so its scales are \
             stored as f32",
            r.name
        );
    }
    let file_bytes =
        std::fs::metadata(output).map_err(|e| format!("{}: {e}", output.display()))?.len();
    let totals = Totals::of(&results, Some(file_bytes));
    if json {
        let report = QuantizeReport {
            input: input.display().to_string(),
            format: model.format.name(),
            output: output.display().to_string(),
            settings: settings_report(settings),
            tensors: &results,
            totals,
        };
        println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
    } else {
        println!("{} ({}) -> {}", input.display(), model.format.name(), output.display());
        print!("{}", table::tensor_table(&results));
        print!("{}", table::totals(&totals));
    }
    Ok(())
}

/// Refuses an output that is the input itself or a folder, before any work.
pub fn check_output(input: &Path, output: &Path) -> Result<(), String> {
    if output.is_dir() {
        return Err(format!("{}: is a folder; give a file name", output.display()));
    }
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        if a == b {
            return Err(format!("{}: the output would overwrite the input", output.display()));
        }
    }
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!("{}: folder {} does not exist", output.display(), parent.display()));
    }
    Ok(())
}

#[derive(Serialize)]
struct InspectTensor {
    name: String,
    shape: Vec<u64>,
    storage: String,
    codec: Option<String>,
    bits: Option<u32>,
    scaling: Option<String>,
    dtype: Option<String>,
    stored_bytes: u64,
}

#[derive(Serialize)]
struct InspectReport {
    file: String,
    file_bytes: u64,
    metadata: HashMap<String, serde_json::Value>,
    tensors: Vec<InspectTensor>,
    parameters: u64,
    source_bytes: Option<u64>,
    compression_ratio: Option<f64>,
    graph_layers: Option<usize>,
    /// Always false: inspect validates the header (and its checksum) only.
    data_checksums_checked: bool,
    note: &'static str,
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => s.clone().into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => (*f).into(),
        Value::Bool(b) => (*b).into(),
        Value::IntList(l) => l.clone().into(),
        Value::FloatList(l) => l.clone().into(),
    }
}

/// Opens a `.lsq` file after checking that it is a regular file (a FIFO
/// would block, a device would be read).
fn open_lsq(path: &Path) -> Result<LsqFile<'static>, String> {
    lsqr_import::open_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
    LsqFile::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// What `inspect` says about the data checksums, which it does not read.
const NOT_CHECKED: &str =
    "data checksums not checked (inspect reads the header only; `lsqr verify` checks them)";

/// `lsqr inspect`: the header only.
pub fn inspect(path: &Path, json: bool) -> Result<(), String> {
    let file = open_lsq(path)?;
    let file_bytes = file.as_bytes().len() as u64;
    let tensors: Vec<InspectTensor> = file
        .tensors()
        .iter()
        .map(|t| {
            let (storage, codec, bits, scaling, dtype) = match t.storage {
                Storage::Quantized(q) => {
                    let s = format!("{} C={} {}", q.codec, q.width.bits(), scaling_name(q.scaling));
                    (
                        s,
                        Some(q.codec.name().to_string()),
                        Some(q.width.bits()),
                        Some(scaling_name(q.scaling)),
                        None,
                    )
                }
                Storage::Raw(d) => {
                    (format!("raw {}", d.name()), None, None, None, Some(d.name().to_string()))
                }
            };
            InspectTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                storage,
                codec,
                bits,
                scaling,
                dtype,
                stored_bytes: t.stored_bytes(),
            }
        })
        .collect();
    let parameters = file.tensors().iter().map(|t| t.element_count() as u64).sum();
    let source_bytes = match file.metadata_get("lsqr.source_bytes") {
        Some(Value::Int(n)) if *n > 0 => Some(*n as u64),
        _ => None,
    };
    let report = InspectReport {
        file: path.display().to_string(),
        file_bytes,
        metadata: file.metadata().iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
        tensors,
        parameters,
        source_bytes,
        compression_ratio: source_bytes.map(|s| s as f64 / file_bytes as f64),
        graph_layers: file.graph().map(|g| g.layers.len()),
        data_checksums_checked: false,
        note: NOT_CHECKED,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
        return Ok(());
    }
    println!(
        "{} ({} bytes, .lsq {}.{})",
        report.file,
        file_bytes,
        lsqr::format::VERSION.0,
        lsqr::format::VERSION.1
    );
    for (k, v) in file.metadata() {
        println!("  {k} = {}", json_value(v));
    }
    let rows: Vec<[String; 4]> = report
        .tensors
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                format!("{:?}", t.shape),
                t.storage.clone(),
                t.stored_bytes.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["tensor", "shape", "storage", "bytes"],
            &rows,
            &[false, false, false, true]
        )
    );
    println!("{} tensors, {} parameters, {} bytes", report.tensors.len(), parameters, file_bytes);
    if let (Some(s), Some(r)) = (source_bytes, report.compression_ratio) {
        println!("source {s} bytes, compression {r:.2}x");
    }
    if let Some(n) = report.graph_layers {
        println!("graph: {n} layers");
    }
    println!("note: {NOT_CHECKED}");
    Ok(())
}

/// `lsqr eval`.
#[allow(clippy::too_many_arguments)]
pub fn eval(
    input: &Path,
    widths: &[u32],
    codecs: &[String],
    scales: ScaleChoice,
    budgets: &[f64],
    json: bool,
    plot: Option<&Path>,
    samples: Option<&Path>,
    input_values: &[(String, Vec<f64>)],
) -> Result<(), String> {
    if !budgets.is_empty() && samples.is_none() {
        return Err("eval --bpw runs the model's graph: give --inputs samples.npz".into());
    }
    if !input_values.is_empty() && samples.is_none() {
        return Err("eval --input-value fixes a graph input: give --inputs samples.npz".into());
    }
    let (scale_dtype, scale_fallback) =
        (scales.dtype.unwrap_or(ScaleDtype::F16), scales.dtype.is_none());
    let kinds: Vec<CodecKind> = if codecs.is_empty() {
        CodecKind::ALL.to_vec()
    } else {
        codecs
            .iter()
            .map(|c| CodecKind::from_name(c).ok_or_else(|| format!("unknown codec '{c}'")))
            .collect::<Result<_, _>>()?
    };
    if let Some(svg) = plot {
        check_output(input, svg)?;
    }
    if let Some(samples) = samples {
        return crate::graph_eval::eval_graph(
            input,
            samples,
            widths,
            &kinds,
            scales,
            budgets,
            input_values,
            json,
            plot,
        );
    }
    let model = lsqr_import::open(input).map_err(|e| e.to_string())?;
    let settings = Settings {
        bits: 4,
        codec: pipeline::CodecChoice::Fixed(CodecKind::Log),
        scaling: scales.scaling,
        scale_dtype,
        scale_method: scales.method,
        scale_fallback,
        keep: Vec::new(),
        bits_for: Vec::new(),
        per_tensor: Default::default(),
        budget: None,
        importance: Default::default(),
        feedback: Default::default(),
    };
    let quantizable = model
        .tensors
        .iter()
        .filter(|t| matches!(settings.action(t), pipeline::Action::Quantize(_)))
        .count();
    let rows = kinds.len() + usize::from(kinds.contains(&CodecKind::Seed)); // + seed-ref
    let bar = progress_bar((quantizable * rows * widths.len()) as u64, "eval");
    let cells = pipeline::evaluate(&model, &settings, &kinds, widths, &|| bar.inc(1))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    if let Some(svg) = plot {
        let name = input
            .file_name()
            .map_or(input.display().to_string(), |n| n.to_string_lossy().into_owned());
        crate::plot::snr_vs_bits(&cells, &name, svg)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&cells).expect("serializable"));
    } else {
        println!(
            "{} ({}): weighted SNR (dB) of {} quantized tensors, {}, {} {} scales",
            input.display(),
            model.format.name(),
            quantizable,
            scaling_name(scales.scaling),
            dtype_name(scale_dtype),
            scale_method_name(scales.method)
        );
        print!("{}", table::eval_table(&cells, &kinds, widths));
    }
    Ok(())
}

/// A tensor to export, decoded only when the serializer asks for its bytes,
/// so memory holds one tensor at a time.
struct ExportTensor<'f> {
    view: TensorView<'f>,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
}

impl ExportTensor<'_> {
    fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, lsqr::format::FormatError> {
        Ok(match &self.view {
            TensorView::Raw(r) => std::borrow::Cow::Borrowed(r.bytes()),
            TensorView::Quantized(_) => std::borrow::Cow::Owned(
                self.view.to_f32_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        })
    }
}

impl safetensors::View for &ExportTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        // `tensor_at` validated the scales and table, and `open` the section
        // lengths, so decoding cannot fail here (its only errors are those
        // checks). Were it to, the empty data would not match `data_len`
        // and serializing would fail; it cannot write wrong values.
        self.bytes().unwrap_or_default()
    }
    fn data_len(&self) -> usize {
        let size = match self.dtype {
            safetensors::Dtype::F32 => 4,
            d => d.bitsize() / 8,
        };
        self.shape.iter().product::<usize>() * size
    }
}

fn safetensors_dtype(d: RawDtype) -> safetensors::Dtype {
    use safetensors::Dtype as D;
    match d {
        RawDtype::F32 => D::F32,
        RawDtype::F16 => D::F16,
        RawDtype::BF16 => D::BF16,
        RawDtype::F64 => D::F64,
        RawDtype::I8 => D::I8,
        RawDtype::I16 => D::I16,
        RawDtype::I32 => D::I32,
        RawDtype::I64 => D::I64,
        RawDtype::U8 => D::U8,
        RawDtype::Bool => D::BOOL,
    }
}

/// `lsqr export`: dequantized f32 for quantized tensors, raw as stored.
/// With `verify`, every data checksum is checked first, so a corrupted
/// file is refused (naming the tensor and section) before anything is
/// written.
pub fn export(path: &Path, output: &Path, verify: bool) -> Result<(), String> {
    check_output(path, output)?;
    let file = open_lsq(path)?;
    if verify {
        file.verify()
            .map_err(|e| format!("{}: {e} (--no-verify exports it anyway)", path.display()))?;
    }
    let mut tensors = Vec::with_capacity(file.tensors().len());
    for i in 0..file.tensors().len() {
        let view = file.tensor_at(i).map_err(|e| format!("{}: {e}", path.display()))?;
        let info = view.info();
        let dtype = match &view {
            TensorView::Raw(r) => safetensors_dtype(r.dtype()),
            TensorView::Quantized(_) => safetensors::Dtype::F32,
        };
        let t = ExportTensor { view, dtype, shape: info.shape_usize() };
        tensors.push((info.name.clone(), t));
    }
    write_atomically(output, |temp| {
        safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), None, temp)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })?;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} -> {} ({} tensors, {} bytes)",
        path.display(),
        output.display(),
        tensors.len(),
        bytes
    );
    Ok(())
}

/// Writes a file through `write` into a temporary file `.NAME.tmp-PID-N`
/// beside `path` (registered, so SIGINT/SIGTERM remove it; those of dead
/// processes are removed first), fsyncs it and renames it into place; on
/// error nothing is left behind.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), String> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| format!("{} is not a file path", path.display()))?;
    lsqr::format::remove_stale_temporaries(dir, name);
    let result = lsqr::format::NamedTemp::new(dir, name, |p| std::fs::File::create_new(p))
        .and_then(|(temp, file)| {
            drop(file);
            write(temp.path())?;
            std::fs::File::open(temp.path())?.sync_all()?;
            temp.rename_to(path)
        });
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// `lsqr verify`.
pub fn verify(path: &Path) -> Result<(), String> {
    let file = open_lsq(path)?;
    file.verify().map_err(|e| format!("{}: {e}", path.display()))?;
    let sections: usize = file
        .tensors()
        .iter()
        .map(|t| [t.data, t.scales, t.table].iter().filter(|s| s.len > 0).count())
        .sum();
    println!(
        "{}: ok ({} tensors, {} data sections, {} bytes; header and every section checksum match)",
        path.display(),
        file.tensors().len(),
        sections,
        file.as_bytes().len()
    );
    Ok(())
}
