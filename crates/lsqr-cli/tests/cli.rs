//! The `lsqr` binary end to end on small inputs made here: every command,
//! the JSON output, and the errors a user meets.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn lsqr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsqr")).args(args).output().expect("run lsqr")
}

fn ok(args: &[&str]) -> String {
    let out = lsqr(args);
    assert!(out.status.success(), "lsqr {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = lsqr(args);
    assert!(!out.status.success(), "lsqr {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = common::process_dir(&format!("cli-{tag}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    lsqr::synthetic::weights(lsqr::synthetic::Distribution::Laplacian, n, 0.05, seed)
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small safetensors model: two matrices, a bias, an i64 buffer.
fn write_model(path: &Path, poison: bool) -> HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let mut w1 = values(64 * 96, 1);
    if poison {
        w1[100] = f32::NAN;
    }
    let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("layer1.weight", Dtype::F32, vec![64, 96], le(&w1)),
        ("layer1.bias", Dtype::F32, vec![64], le(&values(64, 2))),
        ("layer2.weight", Dtype::F32, vec![10, 64], le(&values(640, 3))),
        (
            "position_ids",
            Dtype::I64,
            vec![1, 4],
            [0i64, 1, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
    tensors.into_iter().map(|(n, d, s, b)| (n.to_string(), (d, s, b))).collect()
}

#[test]
fn quantize_inspect_verify_export_round_trip() {
    let dir = TempDir::new("rt");
    let source = write_model(&dir.path("m.safetensors"), false);
    let json =
        ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.lsq"), "--bits", "6", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["format"], "safetensors");
    assert_eq!(report["totals"]["tensors"], 4);
    assert_eq!(report["totals"]["quantized"], 2);
    assert_eq!(report["totals"]["parameters"], 64 * 96 + 64 + 640 + 4);
    let snr = report["totals"]["weighted_snr_db"].as_f64().unwrap();
    assert!(snr > 30.0, "{snr}");
    let file_bytes = std::fs::metadata(dir.path("m.lsq")).unwrap().len();
    assert_eq!(report["totals"]["output_bytes"], file_bytes);

    let table = ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m2.lsq"), "--bits", "6"]);
    assert!(
        table.contains("layer1.weight")
            && table.contains("compression")
            && table.contains("weighted SNR")
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", &dir.s("m.lsq"), "--json"])).unwrap();
    assert_eq!(inspect["tensors"].as_array().unwrap().len(), 4);
    assert_eq!(inspect["metadata"]["lsqr.source_format"], "safetensors");
    assert!(inspect["compression_ratio"].as_f64().unwrap() > 3.0);
    assert!(ok(&["verify", &dir.s("m.lsq")]).contains("ok"));

    ok(&["export", &dir.s("m.lsq"), "-o", &dir.s("back.safetensors")]);
    let bytes = std::fs::read(dir.path("back.safetensors")).unwrap();
    let back = SafeTensors::deserialize(&bytes).unwrap();
    for (name, (dtype, shape, data)) in &source {
        let t = back.tensor(name).unwrap();
        assert_eq!(t.shape(), &shape[..], "{name}");
        if name.ends_with(".weight") {
            assert_eq!(t.dtype(), Dtype::F32);
            let x: Vec<f32> =
                data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let y: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let snr = lsqr::codec::ErrorMetrics::between(&x, &y).unwrap().snr_db();
            assert!(snr > 30.0, "{name}: {snr}");
        } else {
            assert_eq!(t.dtype(), *dtype, "{name}");
            assert_eq!(t.data(), &data[..], "{name}: raw tensors come back bit-exact");
        }
    }
}

#[test]
fn keep_bits_for_and_auto() {
    let dir = TempDir::new("opts");
    write_model(&dir.path("m.safetensors"), false);
    let json = ok(&[
        "quantize",
        &dir.s("m.safetensors"),
        "-o",
        &dir.s("m.lsq"),
        "--keep",
        "layer2.*",
        "--bits-for",
        "layer1.*=3",
        "--codec",
        "auto",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let by_name =
        |n: &str| r["tensors"].as_array().unwrap().iter().find(|t| t["name"] == n).unwrap().clone();
    assert_eq!(by_name("layer1.weight")["bits"], 3);
    assert!(by_name("layer2.weight")["codec"].is_null(), "kept raw");
    // auto picks the best of all codecs: at least as good as log alone.
    let auto = by_name("layer1.weight")["snr_db"].as_f64().unwrap();
    let json =
        ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("l.lsq"), "--bits", "3", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tensors = r["tensors"].as_array().unwrap();
    let log =
        tensors.iter().find(|t| t["name"] == "layer1.weight").unwrap()["snr_db"].as_f64().unwrap();
    assert!(auto >= log, "auto {auto} < log {log}");
}

#[test]
fn eval_table_json_and_plot() {
    let dir = TempDir::new("eval");
    write_model(&dir.path("m.safetensors"), false);
    let json = ok(&[
        "eval",
        &dir.s("m.safetensors"),
        "--bits",
        "3..5",
        "--json",
        "--plot",
        &dir.s("snr.svg"),
    ]);
    let cells: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(cells.len(), 7 * 3, "six codecs and seed-ref");
    let snr = |codec: &str, c: u32| {
        cells.iter().find(|e| e["codec"] == codec && e["bits"] == c).unwrap()["weighted_snr_db"]
            .as_f64()
            .unwrap()
    };
    assert!(snr("log", 5) > snr("log", 3) + 8.0);
    let bpw = cells.iter().find(|e| e["codec"] == "uniform" && e["bits"] == 4).unwrap()
        ["bits_per_weight"]
        .as_f64()
        .unwrap();
    // 4 bits plus an f16 scale per group; rows of 96 make two groups (64 + 32).
    let expected =
        (64.0 * 96.0 * 4.0 + 64.0 * 2.0 * 16.0 + 640.0 * 4.0 + 10.0 * 16.0) / (64.0 * 96.0 + 640.0);
    assert!((bpw - expected).abs() < 1e-9, "{bpw} vs {expected}");
    let svg = std::fs::read_to_string(dir.path("snr.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("log") && svg.contains("bits per weight"));
    let table = ok(&["eval", &dir.s("m.safetensors"), "--bits", "4,8", "--codec", "log,uniform"]);
    assert!(table.contains("| log |") && table.contains("C=8") && !table.contains("| nf |"));
}

#[test]
fn demo_runs_without_input() {
    let out = ok(&["demo"]);
    assert!(out.contains("C = 4:") && out.contains("C = 8:") && out.contains("| lut |"));
}

#[test]
fn npy_and_npz_inputs() {
    let dir = TempDir::new("npy");
    let w = values(32 * 48, 4);
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (32, 48), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend_from_slice(&le(&w));
    std::fs::write(dir.path("w.npy"), &npy).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&ok(&["quantize", &dir.s("w.npy"), "-o", &dir.s("w.lsq"), "--json"]))
            .unwrap();
    assert_eq!(r["format"], "npy");
    assert_eq!(r["tensors"][0]["name"], "w");
    assert_eq!(r["tensors"][0]["shape"], serde_json::json!([32, 48]));

    // An .npz (stored and deflated entries), given a misleading extension:
    // detection is by content.
    let file = std::fs::File::create(dir.path("archive.bin")).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    use std::io::Write;
    zip.start_file("a.npy", stored).unwrap();
    zip.write_all(&npy).unwrap();
    zip.start_file("b.npy", deflated).unwrap();
    zip.write_all(&npy).unwrap();
    zip.finish().unwrap();
    let r: serde_json::Value = serde_json::from_str(&ok(&[
        "quantize",
        &dir.s("archive.bin"),
        "-o",
        &dir.s("z.lsq"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(r["format"], "npz");
    assert_eq!(
        r["tensors"][0]["snr_db"], r["tensors"][1]["snr_db"],
        "stored and deflated read the same"
    );
    assert_eq!(
        (r["tensors"][0]["name"].as_str(), r["tensors"][1]["name"].as_str()),
        (Some("a"), Some("b"))
    );
}

#[test]
fn errors_name_the_file_and_tensor_and_leave_no_output() {
    let dir = TempDir::new("err");
    let e = fails(&["quantize", &dir.s("missing.safetensors"), "-o", &dir.s("x.lsq")]);
    assert!(e.contains("missing.safetensors"), "{e}");

    std::fs::write(dir.path("junk.bin"), b"this is not a model at all").unwrap();
    let e = fails(&["quantize", &dir.s("junk.bin"), "-o", &dir.s("x.lsq")]);
    assert!(e.contains("junk.bin") && e.contains("unrecognised format"), "{e}");

    write_model(&dir.path("nan.safetensors"), true);
    let e = fails(&["quantize", &dir.s("nan.safetensors"), "-o", &dir.s("x.lsq")]);
    assert!(
        e.contains("nan.safetensors") && e.contains("layer1.weight") && e.contains("element 100"),
        "{e}"
    );
    assert!(!dir.path("x.lsq").exists(), "no partial output");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2, "no temporary files left");

    // An unsupported dtype names the tensor.
    let data = [0u8; 8];
    let views = vec![("counts", TensorView::new(Dtype::U16, vec![4], &data).unwrap())];
    safetensors::serialize_to_file(views, None, &dir.path("u16.safetensors")).unwrap();
    let e = fails(&["quantize", &dir.s("u16.safetensors"), "-o", &dir.s("x.lsq")]);
    assert!(e.contains("counts") && e.contains("unsupported dtype"), "{e}");

    // A corrupted .lsq is reported by inspect and verify with the offset.
    write_model(&dir.path("m.safetensors"), false);
    ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.lsq")]);
    let mut bytes = std::fs::read(dir.path("m.lsq")).unwrap();
    bytes[64] ^= 0xff; // the first data section starts right after the preamble
    std::fs::write(dir.path("bad.lsq"), &bytes).unwrap();
    let e = fails(&["verify", &dir.s("bad.lsq")]);
    assert!(e.contains("bad.lsq") && e.contains("CRC mismatch") && e.contains("0x"), "{e}");
    bytes.truncate(bytes.len() - 10);
    std::fs::write(dir.path("short.lsq"), &bytes).unwrap();
    let e = fails(&["inspect", &dir.s("short.lsq")]);
    assert!(e.contains("short.lsq") && e.contains("truncated"), "{e}");

    let e = fails(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("x.lsq"), "--group", "48"]);
    assert!(e.contains("48"), "{e}");
}

/// Crafted inputs from a review (tests/data/hostile): views that repeat one
/// element into terabytes or overflow, zip entries that claim exabytes, an
/// .npz entry shorter than its array, and a pickle that copies a memoized
/// million-item list a thousand times. Each must be a clean error naming
/// the file, quickly, with no output left behind.
#[test]
fn hostile_inputs_are_clean_errors() {
    let dir = TempDir::new("hostile");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile");
    let mut seen = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let e = fails(&["quantize", &path.display().to_string(), "-o", &dir.s("out.lsq")]);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(e.contains(&name), "{e}");
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0, "{name} left a file behind");
        seen += 1;
    }
    assert_eq!(seen, 6);
}

#[test]
fn output_paths_are_checked_before_any_work() {
    let dir = TempDir::new("outpath");
    write_model(&dir.path("m.safetensors"), false);
    let e = fails(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.safetensors")]);
    assert!(e.contains("overwrite the input"), "{e}");
    let e = fails(&["quantize", &dir.s("m.safetensors"), "-o", &dir.0.display().to_string()]);
    assert!(e.contains("is a folder"), "{e}");
    let e = fails(&["eval", &dir.s("m.safetensors"), "--plot", &dir.s("missing/p.svg")]);
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1, "only the input remains");
}
