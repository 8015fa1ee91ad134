//! `lsqr run`: a model's graph on inputs from .npy files, through the same
//! runtime the C API wraps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lsqr::format::{LsqFile, RawDtype};
use lsqr::runtime::Plan;
use serde::Serialize;

/// Parses `NAME=FILE` for `--input`.
pub fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=FILE"))?;
    if name.is_empty() || file.is_empty() {
        return Err(format!("'{s}' is not NAME=FILE"));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

/// A numeric array read from a .npy file, as f32.
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads `path` (.npy, any numeric dtype) as f32. Integers convert exactly
/// up to 2^24, as the runtime's f32 values hold them.
pub fn read_npy(path: &Path) -> Result<Array, String> {
    let model = lsqr_import::open(path).map_err(|e| e.to_string())?;
    if model.format != lsqr_import::Format::Npy || model.tensors.len() != 1 {
        return Err(format!("{}: expected a .npy file holding one array", path.display()));
    }
    let t = &model.tensors[0];
    let bytes = model.bytes(t).map_err(|e| e.to_string())?;
    let data = to_f32(t.dtype, &bytes);
    Ok(Array { shape: t.shape.clone(), data })
}

pub fn to_f32(dtype: RawDtype, b: &[u8]) -> Vec<f32> {
    let n = dtype.size();
    b.chunks_exact(n)
        .map(|c| match dtype {
            RawDtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            RawDtype::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            RawDtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
            RawDtype::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            RawDtype::I64 => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            RawDtype::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
            RawDtype::I16 => i16::from_le_bytes([c[0], c[1]]) as f32,
            RawDtype::I8 => c[0] as i8 as f32,
            RawDtype::U8 => c[0] as f32,
            RawDtype::Bool => f32::from(u8::from(c[0] != 0)),
        })
        .collect()
}

/// The bytes of a little-endian f32 .npy file (format 1.0).
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

#[derive(Serialize)]
struct OutputReport {
    name: String,
    shape: Vec<usize>,
    /// Over the finite values (`None` when there are none).
    min: Option<f32>,
    max: Option<f32>,
    mean: f64,
    /// NaN and ±inf values: a run on NaN inputs says so.
    non_finite: usize,
    file: String,
}

#[derive(Serialize)]
struct RunReport {
    model: String,
    runs: u32,
    median_ms: f64,
    outputs: Vec<OutputReport>,
}

/// A file name for output `name` (its characters outside `[A-Za-z0-9._-]`
/// replaced), so any value name is a safe file name inside `dir`.
fn output_file(dir: &Path, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let safe = if safe.trim_matches('.').is_empty() { "output".to_string() } else { safe };
    dir.join(format!("{safe}.npy"))
}

/// The arena a plan needs, or an error (not an abort) when the machine
/// cannot give it: a file's input shapes decide its size.
pub fn arena_for(plan: &Plan<'_>) -> Result<Vec<u8>, String> {
    let mut arena = Vec::new();
    arena.try_reserve_exact(plan.arena_len()).map_err(|_| {
        format!(
            "running the graph needs {} bytes of memory, which cannot be allocated",
            plan.arena_len()
        )
    })?;
    arena.resize(plan.arena_len(), 0);
    Ok(arena)
}

/// `lsqr run`.
pub fn run(
    model: &Path,
    inputs: &[(String, PathBuf)],
    output_dir: &Path,
    repeat: u32,
    json: bool,
) -> Result<(), String> {
    let file = LsqFile::open(model).map_err(|e| format!("{}: {e}", model.display()))?;
    // The data checksums first: opening checks the header only, and a
    // corrupted weight would otherwise run and give wrong outputs silently.
    file.verify().map_err(|e| format!("{}: {e}", model.display()))?;
    let plan = Plan::new(&file).map_err(|e| format!("{}: {e}", model.display()))?;
    let mut arena = arena_for(&plan).map_err(|e| format!("{}: {e}", model.display()))?;
    for (name, _) in inputs {
        if !plan.inputs().iter().any(|i| &i.name == name) {
            let known: Vec<&str> = plan.inputs().iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "--input {name}: the model has no such input (inputs: {})",
                known.join(", ")
            ));
        }
    }
    let mut arrays = Vec::new();
    for info in plan.inputs() {
        let (_, path) = inputs.iter().find(|(n, _)| n == &info.name).ok_or_else(|| {
            format!(
                "graph input '{}' (shape {:?}) is not given: --input {}=FILE.npy",
                info.name, info.shape, info.name
            )
        })?;
        let a = read_npy(path)?;
        if a.shape != info.shape {
            return Err(format!(
                "{}: has shape {:?}, graph input '{}' takes {:?}",
                path.display(),
                a.shape,
                info.name,
                info.shape
            ));
        }
        arrays.push(a);
    }
    let mut runner = plan.bind(&mut arena).map_err(|e| e.to_string())?;
    for (i, a) in arrays.iter().enumerate() {
        runner.set_input(i, &a.data).map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat {
        let start = Instant::now();
        runner.run().map_err(|e| format!("{}: {e}", model.display()))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    std::fs::create_dir_all(output_dir).map_err(|e| format!("{}: {e}", output_dir.display()))?;
    let mut outputs = Vec::new();
    for (i, info) in plan.outputs().iter().enumerate() {
        let y = runner.output(i).map_err(|e| e.to_string())?;
        let path = output_file(output_dir, &info.name);
        let bytes = npy_bytes(&info.shape, y);
        crate::commands::write_atomically(&path, |p| std::fs::write(p, &bytes))?;
        let finite = y.iter().copied().filter(|v| v.is_finite());
        outputs.push(OutputReport {
            name: info.name.clone(),
            shape: info.shape.clone(),
            min: finite.clone().reduce(f32::min),
            max: finite.clone().reduce(f32::max),
            mean: y.iter().map(|&v| v as f64).sum::<f64>() / y.len().max(1) as f64,
            non_finite: y.len() - finite.count(),
            file: path.display().to_string(),
        });
    }
    let report = RunReport { model: model.display().to_string(), runs: repeat, median_ms, outputs };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
    } else {
        let show = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.6}"));
        for o in &report.outputs {
            let bad = if o.non_finite > 0 {
                format!(" ({} NaN or infinite)", o.non_finite)
            } else {
                String::new()
            };
            println!(
                "{}: shape {:?}, min {}, max {}, mean {:.6}{bad} -> {}",
                o.name,
                o.shape,
                show(o.min),
                show(o.max),
                o.mean,
                o.file
            );
        }
        println!("median time per run: {:.3} ms ({} runs)", report.median_ms, report.runs);
    }
    Ok(())
}
