//! The `lsqr` command: quantize real models into `.lsq`, inspect, evaluate,
//! export and verify them.
//!
//! Reading the input formats is the `lsqr-import` library's job (memory-
//! mapped, nothing executed, nothing copied until used). Modules here:
//! `pipeline` decides what to quantize and runs it on both cores,
//! `commands` are the subcommands, `table` and `plot` the output.
//! Dependencies, each for one job: clap (arguments), safetensors (exporting
//! .safetensors), serde and serde_json (`--json`), indicatif (progress on a
//! terminal), plotters (`eval --plot`), rayon (both cores), half (f16 scale
//! limits).

mod budget;
mod calibrate;
mod commands;
mod demo;
mod graph;
mod graph_eval;
mod pattern;
mod pipeline;
mod plot;
mod run;
mod signals;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lsqr::codec::{ScaleDtype, ScaleMethod, Scaling, TwoLevel};

use crate::pattern::{parse_bits_for, Pattern};
use crate::pipeline::{CodecChoice, ScaleChoice, Settings};
use lsqr_import::onnx_graph::GraphOptions;

/// Quantize neural-network weights to C-bit codes (C = 2..16) and store them as .lsq.
#[derive(Parser, Debug)]
#[command(name = "lsqr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Quantize a model (safetensors, .npy/.npz, PyTorch, TorchScript, ONNX) into a .lsq file.
    Quantize {
        /// The input model.
        input: PathBuf,
        /// The .lsq file to write (atomically: no partial file on error).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Keep tensors whose name matches PATTERN raw (`*` matches anything). Repeatable.
        #[arg(long, value_name = "PATTERN")]
        keep: Vec<String>,
        /// Use C bits for tensors matching PATTERN, e.g. `--bits-for '*.embeddings.*=8'`. Repeatable.
        #[arg(long, value_name = "PATTERN=C", value_parser = parse_bits_for)]
        bits_for: Vec<(Pattern, u32)>,
        /// Shape of an ONNX graph input, giving its symbolic dims, e.g.
        /// `--input-shape x=1,3,48,320` (`x=` for a scalar). Repeatable.
        #[arg(long, value_name = "NAME=D0,D1,...", value_parser = graph::parse_input_shape)]
        input_shape: Vec<(String, Vec<usize>)>,
        /// Fix an ONNX graph input to a value (row-major, as many values as
        /// its shape holds), e.g. `--input-value sr=16000`: it becomes a
        /// constant and leaves the graph's inputs, so a branch (`If`) on it
        /// is decided at import. Repeatable.
        #[arg(long, value_name = "NAME=V0,V1,...", value_parser = graph::parse_input_value)]
        input_value: Vec<(String, Vec<f64>)>,
        /// Store the weights only: an ONNX model's graph is not imported.
        #[arg(long, conflicts_with = "graph")]
        weights_only: bool,
        /// Require the graph: an ONNX graph that cannot be imported is an
        /// error (by default it leaves the weights only, with a note).
        #[arg(long)]
        graph: bool,
        /// Print results as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a .lsq model's graph on inputs given as .npy files.
    Run {
        /// The .lsq file.
        model: PathBuf,
        /// A graph input: `NAME=file.npy` (any numeric dtype, converted to
        /// f32; the shape must be the input's). Repeatable.
        #[arg(long, value_name = "NAME=FILE", value_parser = run::parse_input)]
        input: Vec<(String, PathBuf)>,
        /// Where to write each output as `<name>.npy`.
        #[arg(long, value_name = "DIR", default_value = ".")]
        output_dir: PathBuf,
        /// Runs to time (the median is reported).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100000))]
        repeat: u32,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a .lsq file's metadata and tensors, reading only its header (the
    /// data checksums are not checked; `verify` does that).
    Inspect {
        /// The .lsq file.
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// SNR of every codec at every width on a model, without writing anything.
    Eval {
        /// The input model.
        input: PathBuf,
        /// Widths to try: a range `A..B` (inclusive) or a list `3,4,8`.
        #[arg(long, default_value = "2..8", value_parser = parse_widths)]
        bits: Widths,
        /// Codecs to try (default: all). Repeatable or comma-separated.
        #[arg(long, value_delimiter = ',')]
        codec: Vec<String>,
        /// Scale groups: `tensor`, `row`, a group size (16..1024), or
        /// two-level `S/s[/k]` (see `quantize --help`).
        #[arg(long, default_value = "64", value_parser = parse_group)]
        group: Scaling,
        /// Scale storage [default: f16, and f32 for a tensor whose scales overflow f16].
        #[arg(long, value_parser = parse_scale_dtype)]
        scale_dtype: Option<ScaleDtype>,
        /// How scales are chosen: `mse` (as `quantize`'s default) or `absmax`.
        #[arg(long, default_value = "mse", value_parser = parse_scale_method)]
        scale_method: ScaleMethod,
        /// With --inputs: also size budgets (bits per weight, comma-separated),
        /// each planned by weight error and by output error on the samples
        /// (`quantize --bpw`, `--calibrate`), against the uniform widths.
        #[arg(long, value_delimiter = ',', value_parser = parse_bpw)]
        bpw: Vec<f64>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Also draw SNR against bits per weight (overhead included) to this SVG.
        #[arg(long, value_name = "SVG")]
        plot: Option<PathBuf>,
        /// Samples to run an ONNX model's graph on (.npz, one array per graph
        /// input, with its full shape): reports output SNR and top-1
        /// agreement against the float graph for each codec and width.
        #[arg(long, value_name = "NPZ")]
        inputs: Option<PathBuf>,
        /// With --inputs: fix a graph input to a value, as `quantize
        /// --input-value` does (an array of that name in the samples is
        /// not read). Repeatable.
        #[arg(long, value_name = "NAME=V0,V1,...", value_parser = graph::parse_input_value)]
        input_value: Vec<(String, Vec<f64>)>,
    },
    /// Write a .lsq file's tensors as a .safetensors file: quantized tensors
    /// as dequantized f32, raw tensors as stored.
    Export {
        /// The .lsq file.
        file: PathBuf,
        /// The .safetensors file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Do not check the data sections' CRC-32s first (by default a
        /// corrupted file is refused instead of exported with changed values).
        #[arg(long)]
        no_verify: bool,
    },
    /// Check every checksum of a .lsq file.
    Verify {
        /// The .lsq file.
        file: PathBuf,
    },
    /// Quantize a built-in synthetic model (no input, no network) and print the tables.
    Demo {
        /// Write the quantized demo model here too.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
struct SettingsArgs {
    /// Bits per code, C (2..16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=16))]
    bits: u32,
    /// Codec: seed, log, uniform, nf, fp, lut, or auto (per tensor, the least error).
    #[arg(long, default_value = "log", value_parser = CodecChoice::parse)]
    codec: CodecChoice,
    /// Scale groups: `tensor`, `row`, a group size (16..1024), or two-level
    /// scales `S/s[/k]`: a scale per super-block of S elements (32..4096) and
    /// a k-bit integer sub-scale (default 6) per sub-block of s elements,
    /// e.g. `256/32` (0.25 bits per weight with f16 scales) [default: 64;
    /// with --bpw, chosen per tensor among 1024/32/4, 1024/16/4, 1024/8/4].
    #[arg(long, value_parser = parse_group)]
    group: Option<Scaling>,
    /// A size budget instead of one width: at most B bits per quantized
    /// weight, counting codes, scales and tables; each tensor gets the
    /// width (and, without --group, the scale layout) that maximizes the
    /// weighted SNR under it. Overrides --bits and --bits-for.
    #[arg(long, value_name = "B", value_parser = parse_bpw)]
    bpw: Option<f64>,
    /// With --bpw and an ONNX model: samples to run the graph on (.npz, one
    /// array per graph input, full shapes); each tensor's error is weighed
    /// by what it does to the outputs, not by weight SNR alone.
    #[arg(long, value_name = "NPZ", requires = "bpw")]
    calibrate: Option<PathBuf>,
    /// With --calibrate: error-compensating rounding (GPTQ). Each quantized
    /// tensor's codes are chosen column by column, each rounding error fed
    /// forward to the columns not yet rounded by the covariance of the
    /// tensor's inputs on the samples (tensors of at most 4096 columns).
    /// It needs many more samples than columns to generalise.
    #[arg(long, requires = "calibrate")]
    error_feedback: bool,
    /// Importance weights (.npz or .safetensors: per tensor, an array named as the tensor
    /// with one non-negative weight per column of its [rows, rest] view,
    /// e.g. the mean square of each input feature over calibration data):
    /// each weight's error counts by its column's weight.
    #[arg(long, value_name = "NPZ")]
    importance: Option<PathBuf>,
    /// Scale storage [default: f16, and f32 for a tensor whose scales overflow f16
    /// (values beyond ±65504); an explicit `f16` makes that an error].
    #[arg(long, value_parser = parse_scale_dtype)]
    scale_dtype: Option<ScaleDtype>,
    /// How scales are chosen: `mse` (least squared error: candidates from
    /// 0.7 to 1.15 times the absmax, codes re-chosen for each; with `lut`,
    /// table and scales fitted in turn; never worse than absmax per group,
    /// about 3x the time) or `absmax` (the group's largest magnitude: the
    /// textbook grids).
    #[arg(long, default_value = "mse", value_parser = parse_scale_method)]
    scale_method: ScaleMethod,
}

fn parse_group(s: &str) -> Result<Scaling, String> {
    match s {
        "tensor" => Ok(Scaling::Tensor),
        "row" => Ok(Scaling::Row),
        n if n.contains('/') => {
            let parts: Vec<&str> = n.split('/').collect();
            let number =
                |p: &str| p.parse::<usize>().map_err(|_| format!("'{n}': '{p}' is not a number"));
            let (sup, sub, bits) = match parts[..] {
                [a, b] => (number(a)?, number(b)?, 6),
                [a, b, c] => (number(a)?, number(b)?, number(c)?),
                _ => return Err(format!("'{n}' is not S/s or S/s/k")),
            };
            let bits = u32::try_from(bits).unwrap_or(u32::MAX);
            TwoLevel::new(sup, sub, bits).map(Scaling::TwoLevel).map_err(|e| e.to_string())
        }
        n => {
            let g: usize =
                n.parse().map_err(|_| format!("'{n}' is not tensor, row or a group size"))?;
            Scaling::Group(g).validate().map_err(|e| e.to_string())
        }
    }
}

/// `--importance`: one 1-D float array per tensor name.
fn read_importance(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, Vec<f32>>, String> {
    let m = lsqr_import::open(path).map_err(|e| e.to_string())?;
    if !matches!(m.format, lsqr_import::Format::Npz | lsqr_import::Format::Safetensors) {
        return Err(format!("{}: --importance takes a .npz or .safetensors", path.display()));
    }
    let mut out = std::collections::BTreeMap::new();
    for t in &m.tensors {
        if t.shape.len() != 1 || !t.dtype.is_float() {
            return Err(format!(
                "{}: array '{}' must be a 1-D float array (one weight per column), is {:?} {}",
                path.display(),
                t.name,
                t.shape,
                t.dtype.name()
            ));
        }
        out.insert(t.name.clone(), m.to_f32(t).map_err(|e| e.to_string())?.into_owned());
    }
    Ok(out)
}

fn parse_bpw(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if (1.0..=17.0).contains(&b) => Ok(b),
        _ => Err(format!("'{s}' is not a number of bits per weight in 1..17")),
    }
}

fn parse_scale_method(s: &str) -> Result<ScaleMethod, String> {
    match s {
        "absmax" => Ok(ScaleMethod::AbsMax),
        "mse" => Ok(ScaleMethod::MseSearch),
        _ => Err(format!("'{s}' is not absmax or mse")),
    }
}

fn parse_scale_dtype(s: &str) -> Result<ScaleDtype, String> {
    match s {
        "f16" => Ok(ScaleDtype::F16),
        "f32" => Ok(ScaleDtype::F32),
        _ => Err(format!("'{s}' is not f16 or f32")),
    }
}

/// A list of code widths.
#[derive(Debug, Clone)]
struct Widths(Vec<u32>);

fn parse_widths(s: &str) -> Result<Widths, String> {
    parse_width_list(s).map(Widths)
}

fn parse_width_list(s: &str) -> Result<Vec<u32>, String> {
    let check = |c: u32| {
        if (2..=16).contains(&c) {
            Ok(c)
        } else {
            Err(format!("width {c} is not in 2..=16"))
        }
    };
    let num = |t: &str| t.trim().parse::<u32>().map_err(|_| format!("'{t}' is not a width"));
    if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (check(num(a)?)?, check(num(b.trim_start_matches('='))?)?);
        if a > b {
            return Err(format!("empty range {s}"));
        }
        return Ok((a..=b).collect());
    }
    s.split(',').map(|t| check(num(t)?)).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    signals::install();
    let result = match cli.command {
        Command::Quantize {
            input,
            output,
            settings,
            keep,
            bits_for,
            input_shape,
            input_value,
            weights_only,
            graph,
            json,
        } => {
            let settings = Settings {
                bits: settings.bits,
                codec: settings.codec,
                scaling: settings.group.unwrap_or(Scaling::Group(64)),
                scale_dtype: settings.scale_dtype.unwrap_or(ScaleDtype::F16),
                scale_method: settings.scale_method,
                scale_fallback: settings.scale_dtype.is_none(),
                keep: keep.iter().map(|k| Pattern::new(k)).collect(),
                bits_for,
                per_tensor: Default::default(),
                budget: settings.bpw.map(|bits_per_weight| budget::Budget {
                    bits_per_weight,
                    layouts: settings.group.map_or_else(budget::default_layouts, |g| vec![g]),
                    calibrate: settings.calibrate,
                    error_feedback: settings.error_feedback,
                }),
                importance: match settings.importance.as_deref().map(read_importance) {
                    None => Default::default(),
                    Some(Ok(map)) => map,
                    Some(Err(e)) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                feedback: Default::default(),
            };
            let graph_options =
                GraphOptions { input_shapes: input_shape, input_values: input_value };
            commands::quantize(
                &input,
                &output,
                &settings,
                &graph_options,
                weights_only,
                graph,
                json,
            )
        }
        Command::Run { model, input, output_dir, repeat, json } => {
            run::run(&model, &input, &output_dir, repeat, json)
        }
        Command::Inspect { file, json } => commands::inspect(&file, json),
        Command::Eval {
            input,
            bits,
            codec,
            group,
            scale_dtype,
            scale_method,
            bpw,
            json,
            plot,
            inputs,
            input_value,
        } => {
            let scales = ScaleChoice { scaling: group, dtype: scale_dtype, method: scale_method };
            commands::eval(
                &input,
                &bits.0,
                &codec,
                scales,
                &bpw,
                json,
                plot.as_deref(),
                inputs.as_deref(),
                &input_value,
            )
        }
        Command::Export { file, output, no_verify } => commands::export(&file, &output, !no_verify),
        Command::Verify { file } => commands::verify(&file),
        Command::Demo { output } => demo::run(output.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
