//! Whole models at batch 1 on one thread: Magika (`bytes [1, 2048]`) and
//! PP-OCR cls, det and rec, each as an f32 graph (`--keep '*'`) and with
//! C = 4 and C = 8 weights (log codec, groups of 64), the time of one
//! `Runner::run` on the fixed reference inputs (after `bind`: what an
//! application pays per inference). `scripts/bench-models.sh` runs this
//! beside onnxruntime and prints the table.
//!
//! The `.lsq` files are made by the `lsqr` binary (`lsqr quantize
//! MODEL.onnx --input-shape ...`), not through `lsqr-import` as a
//! dev-dependency: the ONNX graph import alone (`onnx_graph::graph_of`)
//! would not do, the rest of the pipeline (`--keep` patterns, per-tensor
//! codec and scale choices, the graph and metadata written with the
//! weights) lives in `lsqr-cli`, which this package cannot depend on.
//! Shelling out to the same binary also benches exactly the files a user
//! gets. The binary is `$LSQR_BIN`, else `lsqr` next to this bench's
//! target directory (`cargo build --release -p lsqr-cli` first; the script
//! does). The files are cached in `<target>/bench-models/` and made again
//! when the binary is newer than them.
//!
//! Models: `$LSQR_MODELS` or `~/.cache/lsqr-models` (scripts/fetch-models.sh);
//! a model that is missing is skipped with a note.
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench models -- --noplot`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

#[path = "../examples/support/npy.rs"]
mod npy;

/// `(bench name, model path under the cache, input name, shape for
/// --input-shape, reference folder)`.
const MODELS: &[(&str, &str, &str, &str, &str)] = &[
    ("magika", "magika/model.onnx", "bytes", "1,2048", "magika"),
    ("ppocr-cls", "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x", "1,3,48,192", "ppocr-cls"),
    ("ppocr-det", "ppocr/ch_PP-OCRv4_det_infer.onnx", "x", "1,3,320,320", "ppocr-det"),
    ("ppocr-rec", "ppocr/ch_PP-OCRv4_rec_infer.onnx", "x", "1,3,48,320", "ppocr-rec"),
];

/// The weight variants: name and the `lsqr quantize` flags.
const VARIANTS: &[(&str, &[&str])] =
    &[("f32", &["--keep", "*"]), ("c4", &["--bits", "4"]), ("c8", &["--bits", "8"])];

fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LSQR_MODELS") {
        return d.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/lsqr-models")
}

/// The target directory this bench runs from (`<target>/release/deps/..`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.ancestors().nth(3).expect("bench is inside a target directory").to_path_buf()
}

fn lsqr_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("LSQR_BIN") {
        return b.into();
    }
    target_dir().join("release").join(format!("lsqr{}", std::env::consts::EXE_SUFFIX))
}

/// The `.lsq` of `model` with `flags`, made again whenever the `lsqr`
/// binary is newer than the file (an import change, such as a new fusion,
/// changes the graph that is timed).
fn lsq(model: &Path, name: &str, shape: &str, flags: &[&str], out: &Path) -> Result<(), String> {
    let bin = lsqr_bin();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(made), Some(built)) = (modified(out), modified(&bin)) {
        if made >= built {
            return Ok(());
        }
    }
    let status = Command::new(&bin)
        .arg("quantize")
        .arg(model)
        .arg("-o")
        .arg(out)
        .arg("--input-shape")
        .arg(format!("{name}={shape}"))
        .args(flags)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e} (cargo build --release -p lsqr-cli)", bin.display()))?;
    if !status.success() {
        return Err(format!("lsqr quantize {} failed: {status}", model.display()));
    }
    Ok(())
}

fn models(c: &mut Criterion) {
    let dir = models_dir();
    let cache = target_dir().join("bench-models");
    std::fs::create_dir_all(&cache).expect("bench cache directory");
    let mut group = c.benchmark_group("models");
    group.sample_size(20).warm_up_time(Duration::from_millis(500));
    for &(bench, rel, input, shape, reference) in MODELS {
        let model = dir.join(rel);
        let input_file = dir.join("reference").join(reference).join(format!("input.{input}.npy"));
        if !model.exists() || !input_file.exists() {
            eprintln!("skipping {bench}: {} or its input is missing", model.display());
            continue;
        }
        let (_, data) = npy::read_npy(&input_file).expect("reference input");
        for &(variant, flags) in VARIANTS {
            let path = cache.join(format!("{bench}-{variant}.lsq"));
            if let Err(e) = lsq(&model, input, shape, flags, &path) {
                eprintln!("skipping {bench}/{variant}: {e}");
                continue;
            }
            let file = LsqFile::open(&path).expect("bench .lsq");
            let plan = Plan::new(&file).expect("plan");
            let mut arena = vec![0u8; plan.arena_len()];
            let mut runner = plan.bind(&mut arena).expect("bind");
            let len: usize = plan.inputs()[0].shape.iter().product();
            // Batch 1: the first row of Magika's batch-4 reference input.
            runner.set_input(0, &data[..len]).expect("input");
            group.bench_function(BenchmarkId::new(bench, variant), |b| {
                b.iter(|| runner.run().expect("run"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
