//! ONNX models end to end: imported by `lsqr quantize`, run by the runtime,
//! checked against onnxruntime's outputs (computed by
//! scripts/onnx-reference.py at fetch time) and, quantized, against the
//! float graph.

mod common;

#[path = "../../../examples/support/magika.rs"]
mod magika;

use std::path::{Path, PathBuf};

use common::{lsqr, model};
use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

/// A .npy file as f32 (through the importer, as `lsqr run` reads them).
fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let m = lsqr_import::open(path).unwrap();
    let t = &m.tensors[0];
    let bytes = m.bytes(t).unwrap();
    let data = match t.dtype {
        lsqr::format::RawDtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        lsqr::format::RawDtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => m.to_f32(t).unwrap().into_owned(),
    };
    (t.shape.clone(), data)
}

fn temp_dir(tag: &str) -> PathBuf {
    common::process_dir(&format!("onnx-{tag}"))
}

/// Runs a .lsq graph on `inputs` (in graph-input order); its outputs.
fn run(lsq: &Path, inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(lsq).unwrap();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        r.set_input(i, x).unwrap();
    }
    r.run().unwrap();
    (0..plan.outputs().len()).map(|i| r.output(i).unwrap().to_vec()).collect()
}

/// (reference name, model, input name, input shape)
const MODELS: &[(&str, &str, &str, &str)] = &[
    ("magika", "magika/model.onnx", "bytes", "4,2048"),
    ("ppocr-cls", "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x", "1,3,48,192"),
    ("ppocr-det", "ppocr/ch_PP-OCRv4_det_infer.onnx", "x", "1,3,320,320"),
    ("ppocr-rec", "ppocr/ch_PP-OCRv4_rec_infer.onnx", "x", "1,3,48,320"),
    ("ppocrv6-det", "ppocr/PP-OCRv6_det_small.onnx", "x", "1,3,320,320"),
    ("ppocrv6-rec", "ppocr/PP-OCRv6_rec_small.onnx", "x", "1,3,48,320"),
    ("ddddocr", "ddddocr/common.onnx", "input1", "1,1,64,256"),
    ("nudenet-yolov8n", "nudenet/320n.onnx", "images", "1,3,320,320"),
];

/// The reference's input and output files, their sha256s checked.
fn reference(name: &str) -> (PathBuf, PathBuf) {
    let dir = model(&format!("reference/{name}/SHA256SUMS")).parent().unwrap().to_path_buf();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let (mut input, mut output) = (None, None);
    for line in sums.lines() {
        let (sha, file) = line.split_once("  ").unwrap();
        let out = std::process::Command::new("sha256sum").arg(dir.join(file)).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(sha), "{file}: sha256 mismatch");
        if file.starts_with("input.") {
            input = Some(dir.join(file));
        } else {
            output = Some(dir.join(file));
        }
    }
    (input.unwrap(), output.unwrap())
}

/// Quantizes (or, with `--keep '*'`, only imports) `rel` into `dir`.
fn import(dir: &Path, rel: &str, input: &str, shape: &str, extra: &[&str], tag: &str) -> PathBuf {
    let out = dir.join(format!("{tag}.lsq"));
    let src = model(rel);
    let shape_arg = format!("{input}={shape}");
    let mut args = vec!["quantize", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(["--input-shape", &shape_arg]);
    args.extend(extra);
    lsqr(&args);
    out
}

#[test]
fn float_graphs_match_onnxruntime() {
    let dir = temp_dir("float");
    for &(name, rel, input, shape) in MODELS {
        let (x_path, y_path) = reference(name);
        let lsq = import(&dir, rel, input, shape, &["--keep", "*"], name);
        let (_, x) = npy(&x_path);
        let (_, want) = npy(&y_path);
        let got = run(&lsq, &[&x]).remove(0);
        assert_eq!(got.len(), want.len(), "{name}");
        let max_ref = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_diff = got.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_ref > 0.0, "{name}: the reference output is all zero");
        eprintln!("{name}: max |diff| / max |ref| = {:.1e}", max_diff / max_ref);
        assert!(
            max_diff <= 1e-4 * max_ref,
            "{name}: max |diff| {max_diff} > 1e-4 * max |ref| {max_ref}"
        );
        // And `lsqr run` writes the same values.
        let out_dir = dir.join(format!("{name}-out"));
        let x_arg = format!("{input}={}", x_path.display());
        lsqr(&[
            "run",
            lsq.to_str().unwrap(),
            "--input",
            &x_arg,
            "--output-dir",
            out_dir.to_str().unwrap(),
        ]);
        let written = std::fs::read_dir(&out_dir).unwrap().next().unwrap().unwrap().path();
        assert_eq!(npy(&written).1, got, "{name}: lsqr run");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Imports `rel` with `--input-shape` for each of `shapes` and `extra`
/// options; the .lsq written.
fn import_multi(dir: &Path, rel: &str, shapes: &[&str], extra: &[&str], tag: &str) -> PathBuf {
    let out = dir.join(format!("{tag}.lsq"));
    let src = model(rel);
    let mut args = vec!["quantize", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    for s in shapes {
        args.extend(["--input-shape", s]);
    }
    args.extend(extra);
    lsqr(&args);
    out
}

/// Runs `lsq` on reference `name`'s inputs (by the graph's input names);
/// each output with onnxruntime's: (name, ours, onnxruntime's).
fn run_on_reference(name: &str, lsq: &Path) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let _ = reference(name); // checks the sha256s
    let refdir = model(&format!("reference/{name}/SHA256SUMS")).parent().unwrap().to_path_buf();
    let bytes = std::fs::read(lsq).unwrap();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let inputs: Vec<Vec<f32>> = plan
        .inputs()
        .iter()
        .map(|i| npy(&refdir.join(format!("input.{}.npy", i.name))).1)
        .collect();
    let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let got = run(lsq, &refs);
    plan.outputs()
        .iter()
        .zip(got)
        .map(|(o, got)| {
            let safe: String = o
                .name
                .chars()
                .map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '_' })
                .collect();
            let (_, want) = npy(&refdir.join(format!("output.{safe}.npy")));
            assert_eq!(got.len(), want.len(), "{name} {}", o.name);
            (o.name.clone(), got, want)
        })
        .collect()
}

fn assert_close(name: &str, outputs: &[(String, Vec<f32>, Vec<f32>)]) {
    for (o, got, want) in outputs {
        let max_ref = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_diff = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{name} {o}: max |diff| / max |ref| = {:.1e}", max_diff / max_ref.max(1e-30));
        assert!(max_diff <= 1e-4 * max_ref.max(1.0), "{name} {o}: {max_diff} against {max_ref}");
    }
}

/// A BERT text encoder (paraphrase-MiniLM-L3-v2 as exported to ONNX):
/// embedding lookups of token ids computed at run time, attention with a
/// padding mask, two rows of different lengths. Float against onnxruntime
/// output by output; quantized with default options (the embedding table
/// too), the pooled embedding against float.
#[test]
fn bert_graph_matches_onnxruntime() {
    let dir = temp_dir("bert");
    let rel = "bert/paraphrase-MiniLM-L3-v2.onnx";
    let shapes = ["input_ids=2,16", "attention_mask=2,16"];
    let float = import_multi(&dir, rel, &shapes, &["--keep", "*"], "float");
    let outputs = run_on_reference("bert-minilm-l3", &float);
    assert_close("bert", &outputs);
    let pooled = outputs.iter().find(|o| o.2.len() == 2 * 384).expect("a [2, 384] output");
    let quant = import_multi(&dir, rel, &shapes, &[], "quant");
    let q = run_on_reference("bert-minilm-l3", &quant);
    let qp = &q.iter().find(|o| o.0 == pooled.0).unwrap().1;
    for row in 0..2 {
        let (a, b) = (&pooled.2[row * 384..][..384], &qp[row * 384..][..384]);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (na * nb);
        eprintln!("bert quantized (defaults), row {row}: cosine to float {cos:.4}");
        assert!(cos >= 0.97, "row {row}: cosine {cos}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Audio quality models with GRUs (speechmos' PLCMOS v2 and an AECMOS
/// stage, with a given initial state), unrolled at import: float against
/// onnxruntime, and quantized with defaults, the output's SNR.
#[test]
fn recurrent_graphs_match_onnxruntime() {
    let dir = temp_dir("gru");
    let cases: [(&str, &str, &[&str], f64); 2] = [
        (
            "plcmos-gru",
            "speechmos/plcmos_v2.onnx",
            &["degraded_audio=1,1,100,257", "rater_embed=1,64"],
            17.0,
        ),
        (
            "aecmos-gru",
            "speechmos/aecmos_1668423760.onnx",
            &["input=1,3,100,160", "h0=4,1,96"],
            30.0,
        ),
    ];
    for (name, rel, shapes, min_snr) in cases {
        let float = import_multi(&dir, rel, shapes, &["--keep", "*"], &format!("{name}-float"));
        assert_close(name, &run_on_reference(name, &float));
        let quant = import_multi(&dir, rel, shapes, &[], &format!("{name}-quant"));
        for (o, got, want) in run_on_reference(name, &quant) {
            let snr = snr_db(&want, &got);
            eprintln!("{name} quantized (defaults) {o}: SNR {snr:.1} dB against onnxruntime");
            assert!(snr >= min_snr, "{name} {o}: {snr:.1} dB");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Silero VAD 5 branches on its sample rate: an `If` on the graph input
/// `sr` picks the 16 kHz or the 8 kHz network, whose shapes differ. Left
/// to run time, both must import at one input's shapes, which the 8 kHz
/// network cannot at 16 kHz's 576 samples: the error names `sr` and what
/// fixes it. With `--input-value sr=16000` the 16 kHz network (an STFT as
/// a strided conv with reflect padding, four convs, an LSTM cell with a
/// given state) imports alone. Float against onnxruntime; quantized, the
/// speech probability and the next state against it: C = 8, and the
/// defaults (C = 4: a small model with every layer in the signal path
/// loses more than its 22 dB weight SNR says, 12 and 9.5 dB measured).
#[test]
fn silero_vad_with_its_sample_rate_fixed() {
    let dir = temp_dir("silero");
    let rel = "silero/silero_vad.onnx";
    let shapes = ["input=1,576", "state=2,1,128"];
    let (src, out) = (model(rel), dir.join("dynamic.lsq"));
    let mut args = vec!["quantize", src.to_str().unwrap(), "-o", out.to_str().unwrap(), "--graph"];
    args.extend(shapes.iter().flat_map(|s| ["--input-shape", s]));
    let failed =
        std::process::Command::new(env!("CARGO_BIN_EXE_lsqr")).args(&args).output().unwrap();
    let e = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the graph imported with sr left to run time");
    assert!(e.contains("node 'If_0'") && e.contains("from graph input 'sr'"), "{e}");
    assert!(e.contains("--input-value"), "{e}");
    assert!(!out.exists(), "a failed import left {}", out.display());

    let fixed = ["--input-value", "sr=16000"];
    let float = import_multi(&dir, rel, &shapes, &[&["--keep", "*"][..], &fixed].concat(), "float");
    let plan_inputs = {
        let bytes = std::fs::read(&float).unwrap();
        let file = LsqFile::from_bytes(&bytes).unwrap();
        Plan::new(&file).unwrap().inputs().iter().map(|i| i.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(plan_inputs, ["input", "state"], "sr is fixed, not an input");
    assert_close("silero-vad", &run_on_reference("silero-vad", &float));
    for (bits, min_snr) in [("8", 30.0), ("4", 7.0)] {
        let extra = [&["--bits", bits][..], &fixed].concat();
        let quant = import_multi(&dir, rel, &shapes, &extra, &format!("c{bits}"));
        for (o, got, want) in run_on_reference("silero-vad", &quant) {
            let snr = snr_db(&want, &got);
            eprintln!("silero-vad C = {bits} {o}: SNR {snr:.1} dB against onnxruntime");
            assert!(snr >= min_snr, "silero-vad C = {bits} {o}: {snr:.1} dB");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Regular files on this machine, at least 8 bytes: a fixed, sorted walk
/// of system folders, `count` of them spread over what it finds.
fn machine_files(count: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = ["/usr/share", "/usr/lib", "/etc", "/usr/include", "/usr/bin"]
        .iter()
        .map(PathBuf::from)
        .collect();
    stack.reverse();
    while let Some(d) = stack.pop() {
        if found.len() >= 40_000 {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && meta.len() >= magika::MIN_FILE_SIZE as u64 {
                found.push(p);
            }
        }
    }
    assert!(found.len() >= count, "only {} files found", found.len());
    let step = found.len() / count;
    found.into_iter().step_by(step).take(count).collect()
}

/// Bits per quantized weight of a `.lsq` file, everything stored counted.
fn quantized_bits_per_weight(lsq: &Path) -> f64 {
    let report = lsqr(&["inspect", lsq.to_str().unwrap(), "--json"]);
    common::quantized_bits_per_weight(&serde_json::from_str(&report).unwrap())
}

/// Magika keeps its top-1 label on ≥ 99.5 % of the machine's files at
/// C = 8 (638 of 640). Issue 12 asks 99.5 % at a budget of 4.5 bits per
/// weight; this does not reach it: 98.3 % by weight SNR alone, 98.75 %
/// calibrated on its outputs (importance weights and output gains), and
/// 98.3 % with error-compensating rounding on the same 64 calibration
/// files (`--error-feedback`; output SNR 31.9 dB against 32.2 with the
/// same plan: 64 files are too few for the convolution's 1280 x 1280
/// input covariance to generalise). Uniform widths show why: C = 5 (5.25
/// bits) keeps 99.06 % and C = 6 (6.25 bits) 99.53 %, because some files
/// are near ties for the float model itself (the test prints how many
/// have their top two scores within 0.02), and any error flips them. The
/// bounds below hold the measured figures.
///
/// The labels Magika reports (its confidence thresholds applied, see
/// [`MagikaReport`]) agree no better: every top-1 flip of the calibrated
/// 4.5-bit plan is on a file whose float score is under 0.4, below every
/// threshold, so most flips become the same generic `txt` or `unknown`;
/// but scores near a threshold cross it as often (98.75 % both ways, and
/// 99.22 % at C = 6).
#[test]
fn magika_keeps_top1() {
    const BATCH: usize = 16;
    // Every other file is measured, and calibration runs on 64 of the
    // others: the files the budget was fitted to are not the test.
    let all = machine_files(1280);
    let files: Vec<PathBuf> = all.iter().step_by(2).cloned().collect();
    let dir = temp_dir("magika");
    let shape = format!("{BATCH},2048");
    let float = import(&dir, "magika/model.onnx", "bytes", &shape, &["--keep", "*"], "f32");
    let labels =
        magika::labels(&std::fs::read_to_string(model("magika/config.min.json")).unwrap()).unwrap();
    let samples = dir.join("calibration.npz");
    let features: Vec<f32> = all
        .iter()
        .skip(1)
        .step_by(2)
        .take(64)
        .flat_map(|f| magika::features(&std::fs::read(f).unwrap_or_default()))
        .map(|v| v as f32)
        .collect();
    write_npz(&samples, "bytes", &[64, 2048], &features);
    let calibrate = ["--codec", "lut", "--scale-method", "mse", "--bpw", "4.5", "--calibrate"];
    let calibrate: Vec<&str> =
        calibrate.iter().copied().chain([samples.to_str().unwrap()]).collect();
    let feedback: Vec<&str> = calibrate.iter().copied().chain(["--error-feedback"]).collect();
    let cases: [(&str, &[&str]); 6] = [
        ("c8", &["--codec", "lut", "--bits", "8"]),
        ("c6", &["--codec", "lut", "--bits", "6"]),
        ("c5", &["--codec", "lut", "--bits", "5"]),
        ("bpw4.5", &["--codec", "lut", "--scale-method", "mse", "--bpw", "4.5"]),
        ("bpw4.5-calibrated", &calibrate),
        ("bpw4.5-calibrated-feedback", &feedback),
    ];
    let report = MagikaReport::load();
    let mut near_ties = 0;
    for (tag, args) in cases {
        let quantized = import(&dir, "magika/model.onnx", "bytes", &shape, args, tag);
        let bpw = quantized_bits_per_weight(&quantized);
        let (mut agree, mut reported, mut total) = (0, 0, 0);
        let (mut reference, mut test) = (Vec::new(), Vec::new());
        for chunk in files.chunks(BATCH).filter(|c| c.len() == BATCH) {
            let mut x = Vec::with_capacity(BATCH * 2048);
            for f in chunk {
                let content = std::fs::read(f).unwrap_or_default();
                x.extend(magika::features(&content).iter().map(|&v| v as f32));
            }
            let a = run(&float, &[&x]).remove(0);
            let b = run(&quantized, &[&x]).remove(0);
            assert_eq!(a.len(), BATCH * labels.len());
            for (ra, rb) in a.chunks(labels.len()).zip(b.chunks(labels.len())) {
                total += 1;
                agree += usize::from(magika::top1(ra).0 == magika::top1(rb).0);
                reported += usize::from(report.label(ra) == report.label(rb));
                near_ties += usize::from(tag == "c8" && top2_margin(ra) < 0.02);
            }
            reference.extend(a);
            test.extend(b);
        }
        let rate = agree as f64 / total as f64;
        if tag == "c8" {
            eprintln!(
                "magika float: {near_ties} of {total} files have a top-1 score within 0.02 of the \
                 second"
            );
        }
        eprintln!(
            "magika {tag} ({bpw:.3} bits per weight): top-1 agreement {agree}/{total} = {:.2} %, \
             reported label agreement {reported}/{total} = {:.2} %, output SNR {:.2} dB",
            100.0 * rate,
            100.0 * reported as f64 / total as f64,
            snr_db(&reference, &test)
        );
        if tag.starts_with("bpw") {
            assert!(bpw <= 4.5, "{tag}: {bpw} bits per weight over the 4.5 budget");
        }
        let floor = match tag {
            "c8" => 0.995,
            "c6" => 0.99,
            "bpw4.5" | "bpw4.5-calibrated-feedback" => 0.975,
            _ => 0.985,
        };
        assert!(total >= 500 && rate >= floor, "{tag}: top-1 agreement {agree}/{total}");
        let reported_rate = reported as f64 / total as f64;
        assert!(reported_rate >= floor, "{tag}: reported label agreement {reported}/{total}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The label Magika reports for a file, from the model's scores, as the
/// `magika` package (1.0.3) does in its default high-confidence mode: the
/// top label, renamed by the config's `overwrite_map`, when its score
/// reaches that label's threshold (`thresholds`, else
/// `medium_confidence_threshold`); otherwise a generic `txt` or `unknown`,
/// by whether the top label is text (`content_types_kb.min.json`).
struct MagikaReport {
    labels: Vec<String>,
    thresholds: std::collections::HashMap<String, f64>,
    medium: f64,
    overwrite: std::collections::HashMap<String, String>,
    is_text: std::collections::HashMap<String, bool>,
}

impl MagikaReport {
    fn load() -> Self {
        let read = |rel: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(model(rel)).unwrap()).unwrap()
        };
        let config = read("magika/config.min.json");
        let kb = read("magika/content_types_kb.min.json");
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
        };
        MagikaReport {
            labels: strings(&config["target_labels_space"]),
            thresholds: object(&config["thresholds"])
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
                .collect(),
            medium: config["medium_confidence_threshold"].as_f64().unwrap(),
            overwrite: object(&config["overwrite_map"])
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            is_text: object(&kb)
                .map(|(k, v)| (k.clone(), v["is_text"].as_bool().unwrap()))
                .collect(),
        }
    }

    fn label(&self, scores: &[f32]) -> &str {
        let (top, score) = magika::top1(scores);
        let dl = self.labels[top].as_str();
        let output = self.overwrite.get(dl).map_or(dl, String::as_str);
        let threshold = self.thresholds.get(dl).copied().unwrap_or(self.medium);
        if f64::from(score) >= threshold {
            output
        } else if self.is_text[output] {
            "txt"
        } else {
            "unknown"
        }
    }
}

#[test]
fn magika_reports_as_the_package_does() {
    let report = MagikaReport::load();
    let mut scores = vec![0.0f32; report.labels.len()];
    let at = |name: &str| report.labels.iter().position(|l| l == name).unwrap();
    // Above the 0.5 default threshold: the label; markdown's own is 0.75.
    scores[at("python")] = 0.6;
    assert_eq!(report.label(&scores), "python");
    scores[at("python")] = 0.0;
    scores[at("markdown")] = 0.7;
    assert_eq!(report.label(&scores), "txt");
    scores[at("markdown")] = 0.0;
    scores[at("elf")] = 0.4;
    assert_eq!(report.label(&scores), "unknown");
    scores[at("elf")] = 0.0;
    scores[at("randombytes")] = 0.9;
    assert_eq!(report.label(&scores), "unknown", "overwrite_map");
}

fn object(v: &serde_json::Value) -> serde_json::map::Iter<'_> {
    v.as_object().unwrap().iter()
}

/// The top score minus the second (Magika's scores are probabilities).
fn top2_margin(scores: &[f32]) -> f32 {
    let (first, second) =
        scores.iter().fold((f32::NEG_INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            if v > a {
                (v, a)
            } else {
                (a, b.max(v))
            }
        });
    first - second
}

fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = reference.iter().zip(test).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    10.0 * (signal / noise).log10()
}

#[test]
fn ppocr_det_c8_keeps_25_db() {
    let dir = temp_dir("det");
    let (x_path, _) = reference("ppocr-det");
    let (_, x) = npy(&x_path);
    let rel = "ppocr/ch_PP-OCRv4_det_infer.onnx";
    let float =
        run(&import(&dir, rel, "x", "1,3,320,320", &["--keep", "*"], "f32"), &[&x]).remove(0);
    let c8 = run(&import(&dir, rel, "x", "1,3,320,320", &["--bits", "8"], "c8"), &[&x]).remove(0);
    let snr = snr_db(&float, &c8);
    eprintln!("ppocr det C=8 log: output SNR {snr:.2} dB");
    assert!(snr >= 25.0, "output SNR {snr:.2} dB");
    std::fs::remove_dir_all(dir).ok();
}

/// PP-OCRv4 rec's folded batch norms leave rows whose largest weight is a
/// subnormal under 1 / f32::MAX (conv2d_201 has one): its raw absmax scale
/// has no finite inverse, and `lut` with two-level scales, which every
/// `--bpw` plan tries, once failed on it with a NaN table. And a whole
/// number of bits per weight (`--bpw 4`) plans from C = 3, as C = 4 with
/// scales takes more than 4 bits.
#[test]
fn ppocr_rec_lut_budget_of_four_bits() {
    let dir = temp_dir("rec-lut");
    let (x_path, _) = reference("ppocr-rec");
    let (_, x) = npy(&x_path);
    let options = ["--codec", "lut", "--scale-method", "mse", "--bpw", "4"];
    let rel = "ppocr/ch_PP-OCRv4_rec_infer.onnx";
    let lsq = import(&dir, rel, "x", "1,3,48,320", &options, "bpw4");
    let bpw = quantized_bits_per_weight(&lsq);
    assert!(bpw <= 4.0 && bpw > 3.9, "{bpw} bits per weight");
    let out = run(&lsq, &[&x]).remove(0);
    assert!(out.iter().all(|v| v.is_finite()), "non-finite output");
    std::fs::remove_dir_all(dir).ok();
}

/// Writes an `.npz` of one f32 array `name` of `shape`.
fn write_npz(path: &Path, name: &str, shape: &[usize], data: &[f32]) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    zip.start_file(format!("{name}.npy"), zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(&npy_bytes(shape, data)).unwrap();
    zip.finish().unwrap();
}

/// An f32 .npy file's bytes.
fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple =
        if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    let padded =
        format!("{header:<width$}\n", width = (10 + header.len() + 1).next_multiple_of(64) - 11);
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    out.extend_from_slice(padded.as_bytes());
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

#[test]
fn eval_with_inputs_reports_what_quantization_does_to_the_outputs() {
    let dir = temp_dir("eval");
    let (x_path, _) = reference("ppocr-cls");
    let (shape, x) = npy(&x_path);
    let npz = dir.join("samples.npz");
    write_npz(&npz, "x", &shape, &x);
    let src = model("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let out = lsqr(&[
        "eval",
        src.to_str().unwrap(),
        "--inputs",
        npz.to_str().unwrap(),
        "--bits",
        "4,8",
        "--codec",
        "log",
        "--bpw",
        "4.5",
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{out}");
    // The budget, planned by weight error and by output error, within it.
    // On this sample the plan by weight error flips the class (at 21 dB of
    // weight SNR, more than C = 4's) and the plan calibrated on the sample
    // keeps it: weight SNR is not the whole story. (Output SNR cannot rank
    // them here: the two saturated probabilities swing from 8 to 46 dB
    // between layouts of equal weight SNR.)
    for (row, codec) in rows[3..].iter().zip(["log --bpw", "log --bpw --calibrate"]) {
        assert_eq!((row["codec"].as_str(), row["budget"].as_f64()), (Some(codec), Some(4.5)));
        assert!(row["bits_per_weight"].as_f64().unwrap() <= 4.5, "{out}");
        assert!(row["weight_snr_db"].as_f64().unwrap() > 15.0, "{out}");
    }
    assert_eq!(rows[4]["top1_agreement"], 1.0, "{out}");
    assert_eq!(rows[0]["codec"], "f32");
    assert_eq!(rows[0]["top1_agreement"], 1.0);
    let c8 = &rows[2];
    assert_eq!((c8["codec"].as_str(), c8["bits"].as_u64()), (Some("log"), Some(8)));
    assert!(c8["output_snr_db"].as_f64().unwrap() > 25.0, "{out}");
    assert!(c8["weight_snr_db"].as_f64().unwrap() > 40.0, "{out}");
    assert!(c8["file_bytes"].as_u64() < rows[0]["file_bytes"].as_u64(), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

/// Text recognizers are where C = 4 falls short (README "ONNX models"):
/// PP-OCRv6 rec small keeps each time step's top-1 at C = 8, at C = 4 it
/// loses most of its output SNR, and a budget between the two planned on
/// the sample (`--bpw 5.5 --calibrate`) recovers much of it.
#[test]
fn text_recognizer_needs_more_than_four_bits() {
    let dir = temp_dir("eval-rec");
    let (x_path, _) = reference("ppocrv6-rec");
    let (shape, x) = npy(&x_path);
    let npz = dir.join("samples.npz");
    write_npz(&npz, "x", &shape, &x);
    let src = model("ppocr/PP-OCRv6_rec_small.onnx");
    let args = ["--bits", "4,8", "--codec", "log", "--bpw", "5.5", "--json"];
    let out = lsqr(
        &[&["eval", src.to_str().unwrap(), "--inputs", npz.to_str().unwrap()], &args[..]].concat(),
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    let field = |i: usize, k: &str| rows[i][k].as_f64().unwrap();
    for (i, row) in rows.iter().enumerate().skip(1) {
        eprintln!(
            "PP-OCRv6 rec {} {}: output SNR {:.2} dB, top-1 {:.1} %, {:.2} bits per weight",
            row["codec"].as_str().unwrap(),
            match row["budget"].as_f64() {
                Some(b) => format!("<= {b} bits"),
                None => format!("C = {}", row["bits"]),
            },
            field(i, "output_snr_db"),
            100.0 * field(i, "top1_agreement"),
            field(i, "bits_per_weight"),
        );
    }
    let (c4, c8, calibrated) = (1, 2, 4);
    assert_eq!(rows[calibrated]["codec"], "log --bpw --calibrate", "{out}");
    assert!(field(c8, "top1_agreement") >= 0.85 && field(c8, "output_snr_db") >= 15.0, "{out}");
    assert!(field(c8, "output_snr_db") >= field(c4, "output_snr_db") + 10.0, "{out}");
    assert!(field(calibrated, "output_snr_db") >= field(c4, "output_snr_db") + 6.0, "{out}");
    std::fs::remove_dir_all(dir).ok();
}

/// `--error-feedback` needs inputs the samples excite: Magika's byte
/// one-hot of NaN features is all zero, and the run says so, naming the
/// tensor and its input, and writes nothing.
#[test]
fn error_feedback_refuses_samples_that_never_excite_a_layer() {
    let dir = temp_dir("feedback-nan");
    let samples = dir.join("nan.npz");
    write_npz(&samples, "bytes", &[2, 2048], &[f32::NAN; 4096]);
    let out = dir.join("m.lsq");
    let src = model("magika/model.onnx");
    let args = [
        "quantize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--input-shape",
        "bytes=1,2048",
        "--bpw",
        "4.5",
        "--calibrate",
        samples.to_str().unwrap(),
        "--error-feedback",
    ];
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lsqr")).args(args).output().unwrap();
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{e}");
    assert!(e.contains("Dense_0/einsum/Einsum:0.weight' all-zero inputs"), "{e}");
    assert!(e.contains("no covariance for --error-feedback"), "{e}");
    assert!(!out.exists(), "a failed run left {}", out.display());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn run_refuses_missing_wrong_and_unknown_inputs() {
    let dir = temp_dir("run-errors");
    let lsq =
        import(&dir, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x", "1,3,48,192", &[], "cls");
    let fails = |args: &[&str]| {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_lsqr")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let l = lsq.to_str().unwrap();
    let e = fails(&["run", l]);
    assert!(e.contains("graph input 'x' (shape [1, 3, 48, 192]) is not given"), "{e}");
    let small = dir.join("small.npy");
    std::fs::write(&small, npy_bytes(&[1, 3, 4, 4], &[0.0; 48])).unwrap();
    let arg = format!("x={}", small.display());
    let e = fails(&["run", l, "--input", &arg]);
    assert!(e.contains("has shape [1, 3, 4, 4], graph input 'x' takes [1, 3, 48, 192]"), "{e}");
    let arg = format!("y={}", small.display());
    let e = fails(&["run", l, "--input", &arg]);
    assert!(e.contains("--input y: the model has no such input (inputs: x)"), "{e}");
    // A model without the graph cannot run.
    let src = model("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let w = dir.join("weights.lsq");
    lsqr(&["quantize", src.to_str().unwrap(), "-o", w.to_str().unwrap(), "--weights-only"]);
    let e = fails(&["run", w.to_str().unwrap()]);
    assert!(e.contains("no graph"), "{e}");
    // --input-shape is for ONNX graphs.
    let e = fails(&[
        "quantize",
        src.to_str().unwrap(),
        "-o",
        w.to_str().unwrap(),
        "--weights-only",
        "--input-shape",
        "x=1,2",
    ]);
    assert!(e.contains("--input-shape and --input-value apply to ONNX graphs only"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_graph_that_cannot_be_imported_leaves_the_weights_with_a_note() {
    let dir = temp_dir("fallback");
    let src = model("magika/model.onnx");
    let out = dir.join("m.lsq");
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    // Default options: the symbolic batch dim has no value, so the weights
    // only, and a note that says why and what to do.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lsqr"))
        .args(["quantize", s, "-o", o])
        .output()
        .unwrap();
    assert!(run.status.success());
    let note = String::from_utf8_lossy(&run.stderr);
    assert!(note.contains("the graph is not imported") && note.contains("--input-shape"), "{note}");
    let bytes = std::fs::read(&out).unwrap();
    assert!(LsqFile::from_bytes(&bytes).unwrap().graph().is_none());
    // --graph makes it an error naming the input and the dim.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lsqr"))
        .args(["quantize", s, "-o", o, "--graph"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(e.contains("graph input 'bytes': dim 0 is symbolic"), "{e}");
    // With the shape, the graph is there.
    lsqr(&["quantize", s, "-o", o, "--input-shape", "bytes=1,2048"]);
    let bytes = std::fs::read(&out).unwrap();
    assert!(LsqFile::from_bytes(&bytes).unwrap().graph().is_some());
    std::fs::remove_dir_all(dir).ok();
}

/// Small graphs of one or a few ops each, in the forms exporters write
/// (scripts/onnx-reference.py builds them and has onnxruntime run them):
/// imported and run here, they must give onnxruntime's outputs.
#[test]
fn small_op_graphs_match_onnxruntime() {
    let root = model("reference/ops/conv_bn_relu/SHA256SUMS")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = temp_dir("ops");
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let sums = std::fs::read_to_string(case.join("SHA256SUMS")).unwrap();
        for line in sums.lines() {
            let (sha, file) = line.split_once("  ").unwrap();
            let out =
                std::process::Command::new("sha256sum").arg(case.join(file)).output().unwrap();
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(sha), "{name}/{file}: sha256");
        }
        let (shape, x) = npy(&case.join("input.x.npy"));
        let (_, want) = npy(&case.join("output.y.npy"));
        let lsq = dir.join(format!("{name}.lsq"));
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let shape_arg = format!("x={}", dims.join(","));
        let src = case.join("model.onnx");
        lsqr(&[
            "quantize",
            src.to_str().unwrap(),
            "-o",
            lsq.to_str().unwrap(),
            "--graph",
            "--keep",
            "*",
            "--input-shape",
            &shape_arg,
        ]);
        let got = run(&lsq, &[&x]).remove(0);
        let max_ref = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_diff = got.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        if got.len() != want.len() || max_diff > 1e-4 * max_ref.max(1e-3) {
            failures.push(format!(
                "{name}: {} vs {} values, max |diff| {max_diff}, max |ref| {max_ref}",
                got.len(),
                want.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn run_refuses_an_arena_it_cannot_allocate() {
    use lsqr::format::{Graph, Layer, LsqWriter, Value};
    let dir = temp_dir("huge");
    let mut w = LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_metadata("input_shape.x", Value::IntList(vec![1 << 30, 1 << 30])).unwrap();
    let relu = Layer {
        op: "relu".into(),
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        weights: vec![],
        attrs: vec![],
    };
    w.set_graph(Graph { inputs: vec!["x".into()], outputs: vec!["y".into()], layers: vec![relu] });
    let path = dir.join("huge.lsq");
    std::fs::write(&path, w.finish().unwrap().into_inner()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lsqr"))
        .args(["run", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("bytes of memory, which cannot be allocated"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

/// A flipped byte in a weight's data is a checksum error before anything
/// runs, not slightly different outputs.
#[test]
fn run_refuses_corrupted_weights() {
    let dir = temp_dir("corrupt");
    let lsq =
        import(&dir, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x", "1,3,48,192", &[], "cls");
    let mut bytes = std::fs::read(&lsq).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    let bad = dir.join("corrupt.lsq");
    std::fs::write(&bad, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lsqr"))
        .args(["run", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("corrupt.lsq") && e.to_lowercase().contains("crc"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn run_reports_nan_outputs_as_such() {
    let dir = temp_dir("nan");
    let lsq =
        import(&dir, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x", "1,3,48,192", &[], "cls");
    let nan = dir.join("nan.npy");
    std::fs::write(&nan, npy_bytes(&[1, 3, 48, 192], &vec![f32::NAN; 3 * 48 * 192])).unwrap();
    let arg = format!("x={}", nan.display());
    let out_dir = dir.join("out");
    let out = lsqr(&[
        "run",
        lsq.to_str().unwrap(),
        "--input",
        &arg,
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.contains("min -, max -, mean NaN (2 NaN or infinite)"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}
