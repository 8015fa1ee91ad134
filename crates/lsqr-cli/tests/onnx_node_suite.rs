//! ONNX's own conformance cases (onnx/backend/test/data/node, 1,288 one-op
//! models with inputs and expected outputs, and the 140 small models of
//! its pytorch-converted, pytorch-operator and simple folders), laid out
//! by scripts/onnx-node-suite.py at fetch time.
//!
//! Each case goes through what a user runs: `lsqr quantize --keep '*'
//! --graph` on the model, then the runtime on ONNX's inputs. A case may be
//! refused (an op or a form the runtime does not run, with an error that
//! names it); it may never panic, and a case that runs must give ONNX's
//! values. The count that runs may not fall below `MIN_RUN`.
//!
//! `LSQR_NODE_CASE=substring` runs the matching cases only;
//! `LSQR_NODE_REFUSALS=1` prints every refusal.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::model;
use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

/// How many cases ran and matched when this floor was last raised: fewer
/// is a regression.
const MIN_RUN: usize = 906;

fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let m = lsqr_import::open(path).unwrap();
    let t = &m.tensors[0];
    (t.shape.clone(), m.to_f32(t).unwrap().into_owned())
}

/// ONNX's backend tests compare with rtol 1e-3 and atol 1e-7. Our kernels'
/// exp, tanh and erf are polynomial approximations to about 1e-6 relative,
/// so the absolute tolerance also scales with the output's largest value.
/// Casts to bfloat16 keep f32 values in the runtime (every runtime value is
/// f32), so those cases compare at bfloat16's precision (8 bits).
fn close(got: f32, want: f32, scale: f32, rtol: f32) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rtol * want.abs() + 1e-5 * scale.max(1.0)
}

enum Outcome {
    Ran,
    Refused(String),
    Wrong(String),
    Panicked(String),
}

fn run_case(dir: &Path, inputs: &str, outputs: usize, tmp: &Path) -> Outcome {
    let name = dir.file_name().unwrap().to_string_lossy();
    let rtol = if name.contains("BFLOAT16") { 1.0 / 128.0 } else { 1e-3 };
    let lsq = tmp.join("case.lsq");
    let _ = std::fs::remove_file(&lsq);
    let src = dir.join("model.onnx");
    let mut args: Vec<String> = vec![
        "quantize".into(),
        src.to_str().unwrap().into(),
        "-o".into(),
        lsq.to_str().unwrap().into(),
        "--keep".into(),
        "*".into(),
        "--graph".into(),
    ];
    for shape in inputs.split(';').filter(|s| !s.is_empty()) {
        args.extend(["--input-shape".into(), shape.into()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lsqr")).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // 0 written, 1 refused; anything else (101: a panic, a signal) is a bug.
    if stderr.contains("panicked") || !matches!(out.status.code(), Some(0 | 1)) {
        return Outcome::Panicked(format!("lsqr quantize ({}): {stderr}", out.status));
    }
    if !out.status.success() {
        let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let line = line.split(" (supported ops:").next().unwrap_or("").to_string();
        assert!(!line.is_empty(), "{}: refused with an empty message", dir.display());
        return Outcome::Refused(line);
    }
    let bytes = std::fs::read(&lsq).unwrap();
    let file = match LsqFile::from_bytes(&bytes) {
        Ok(f) => f,
        Err(e) => return Outcome::Wrong(format!("the written .lsq does not read back: {e}")),
    };
    let plan = match Plan::new(&file) {
        Ok(p) => p,
        Err(e) => return Outcome::Refused(format!("plan: {e}")),
    };
    if plan.outputs().len() != outputs {
        return Outcome::Wrong(format!("{} outputs, ONNX has {outputs}", plan.outputs().len()));
    }
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    for (i, info) in plan.inputs().iter().enumerate() {
        let (shape, x) = npy(&dir.join(format!("in_{i}.npy")));
        if shape != info.shape {
            return Outcome::Wrong(format!(
                "input {} has shape {:?}, ONNX's {shape:?}",
                info.name, info.shape
            ));
        }
        if let Err(e) = r.set_input(i, &x) {
            return Outcome::Wrong(format!("set_input {}: {e}", info.name));
        }
    }
    if let Err(e) = r.run() {
        return Outcome::Refused(format!("run: {e}"));
    }
    for (i, info) in plan.outputs().iter().enumerate() {
        let (shape, want) = npy(&dir.join(format!("out_{i}.npy")));
        let got = r.output(i).unwrap();
        if got.len() != want.len()
            || info.shape.iter().product::<usize>() != shape.iter().product::<usize>()
        {
            return Outcome::Wrong(format!(
                "output {} has shape {:?}, ONNX's {shape:?}",
                info.name, info.shape
            ));
        }
        let scale = want.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
        if let Some(k) = (0..want.len()).find(|&k| !close(got[k], want[k], scale, rtol)) {
            return Outcome::Wrong(format!(
                "output {} [{k}] = {}, ONNX's {} (of {} values)",
                info.name,
                got[k],
                want[k],
                want.len()
            ));
        }
    }
    Outcome::Ran
}

#[test]
fn onnx_node_cases_run_or_are_refused_by_name() {
    let cases_tsv = model("onnx-node/cases.tsv");
    let root = cases_tsv.parent().unwrap().to_path_buf();
    let tmp = common::process_dir("onnx-node");
    let (mut ran, mut refused, mut wrong, mut panicked) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut left_out = BTreeMap::<String, usize>::new();
    let only = std::env::var("LSQR_NODE_CASE").ok();
    for line in std::fs::read_to_string(&cases_tsv).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, inputs, outputs, status) = (f[0], f[1], f[2].parse::<usize>().unwrap(), f[3]);
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        if status != "run" {
            *left_out.entry(status.to_string()).or_default() += 1;
            continue;
        }
        match run_case(&root.join(name), inputs, outputs, &tmp) {
            Outcome::Ran => ran.push(name.to_string()),
            Outcome::Refused(why) => refused.push(format!("{name}: {why}")),
            Outcome::Wrong(why) => wrong.push(format!("{name}: {why}")),
            Outcome::Panicked(why) => panicked.push(format!("{name}: {why}")),
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
    // Every refusal with its message: LSQR_NODE_REFUSALS=1.
    if std::env::var_os("LSQR_NODE_REFUSALS").is_some() {
        for r in &refused {
            eprintln!("refused  {r}");
        }
    }
    for w in &wrong {
        eprintln!("WRONG    {w}");
    }
    for p in &panicked {
        eprintln!("PANIC    {p}");
    }
    eprintln!(
        "ONNX node cases: {} ran and matched, {} refused, {} wrong, {} panicked; left out (no tensor type): {left_out:?}",
        ran.len(),
        refused.len(),
        wrong.len(),
        panicked.len()
    );
    assert!(panicked.is_empty(), "{} cases panicked", panicked.len());
    assert!(wrong.is_empty(), "{} cases gave wrong values", wrong.len());
    if only.is_none() {
        assert!(ran.len() >= MIN_RUN, "only {} cases ran (at least {MIN_RUN} did)", ran.len());
    }
}
