//! Inputs a user can point `lsqr` at without knowing what is inside (issue
//! 11): special files, names with NUL bytes, archives holding no tensor,
//! dead channels and huge values under the default options, vectors stored
//! as `[1, N]`, and `.lsq` files whose data checksums fail. Each refusal is
//! a message naming what and where, exit status 1, no panic, no output
//! file.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `lsqr`, failing the test (instead of hanging it) after 60 s.
fn lsqr(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lsqr"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lsqr");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("lsqr {args:?} blocked for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = lsqr(args);
    assert!(out.status.success(), "lsqr {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = lsqr(args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "lsqr {args:?} should fail cleanly: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = common::process_dir(&format!("untrusted-{tag}"));
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
    /// Names of the files in the folder (temporary files included).
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `.safetensors` file of F32 tensors, written by hand so that any name
/// (a NUL included) can be given.
fn safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn weights(n: usize, seed: u64) -> Vec<f32> {
    lsqr::synthetic::weights(lsqr::synthetic::Distribution::Laplacian, n, 0.05, seed)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_without_blocking() {
    let dir = TempDir::new("special");
    mkfifo(&dir.path("fifo"));
    let out = dir.s("out.lsq");
    // A FIFO with no writer would block `open`, a device would be read.
    for input in [dir.s("fifo"), "/dev/zero".to_string(), "/dev/null".to_string()] {
        for args in [
            vec!["quantize", &input, "-o", &out],
            vec!["eval", &input, "--bits", "4", "--codec", "uniform"],
            vec!["inspect", &input],
            vec!["verify", &input],
            vec!["export", &input, "-o", &out],
        ] {
            let err = fails(&args);
            assert!(err.contains(&input), "{args:?}: {err}");
            assert!(err.contains("not a regular file"), "{args:?}: {err}");
        }
    }
    let err = fails(&["quantize", &dir.s("fifo"), "-o", &out]);
    assert!(err.contains("FIFO"), "{err}");
    let err = fails(&["quantize", "/dev/zero", "-o", &out]);
    assert!(err.contains("character device"), "{err}");
    assert_eq!(dir.files(), ["fifo"], "no output, no temporary file");
}

#[test]
fn a_nul_in_a_tensor_name_is_refused_at_import() {
    let dir = TempDir::new("nul");
    safetensors(
        &dir.path("m.safetensors"),
        &[("fine.weight", vec![8, 64], weights(512, 1)), ("bad\0name", vec![4], vec![1.0; 4])],
    );
    for args in [
        vec!["quantize", &dir.s("m.safetensors"), "-o", &dir.s("out.lsq")],
        vec!["eval", &dir.s("m.safetensors"), "--bits", "4"],
    ] {
        let err = fails(&args);
        assert!(err.contains("m.safetensors"), "{err}");
        // Named by index, in the file's order.
        assert!(err.contains("tensor #1") && err.contains("NUL byte"), "{err}");
        assert!(err.contains("bad\\0name"), "the NUL is shown escaped: {err}");
    }
    assert_eq!(dir.files(), ["m.safetensors"]);
}

/// A PyTorch zip checkpoint whose `data.pkl` is `pickle`.
fn torch_zip(path: &Path, pickle: &[u8]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

#[test]
fn inputs_without_any_tensor_are_refused() {
    let dir = TempDir::new("empty");
    let mut cases: Vec<(&str, &str)> = Vec::new();
    // Zip checkpoints whose pickle holds None, an empty dict, a set, a list.
    for (name, pickle) in [
        ("none.pth", &b"\x80\x02N."[..]),
        ("dict.pth", b"\x80\x02}q\x00."),
        ("set.pth", b"\x80\x02c__builtin__\nset\nq\x00)Rq\x01."),
        ("list.pth", b"\x80\x02]q\x00."),
    ] {
        torch_zip(&dir.path(name), pickle);
        cases.push((name, "pytorch (zip)"));
    }
    // The legacy form: magic, version 1001, sys_info, main = None, no storages.
    let mut legacy = b"\x80\x02\x8a\x0a".to_vec();
    legacy.extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    legacy.extend(b".\x80\x02M\xe9\x03.\x80\x02}.\x80\x02N.\x80\x02].");
    std::fs::write(dir.path("legacy.pt"), legacy).unwrap();
    cases.push(("legacy.pt", "pytorch (legacy)"));
    // An ONNX model whose graph has no initializer.
    std::fs::write(dir.path("empty.onnx"), b"\x08\x08\x12\x01x\x3a\x03\x12\x01g").unwrap();
    cases.push(("empty.onnx", "onnx"));
    safetensors(&dir.path("empty.safetensors"), &[]);
    cases.push(("empty.safetensors", "safetensors"));
    for (name, format) in cases {
        let err = fails(&["quantize", &dir.s(name), "-o", &dir.s("out.lsq")]);
        assert!(err.contains(name), "{err}");
        assert!(err.contains("no tensor found"), "{name}: {err}");
        assert!(err.contains(format), "{name}: {err}");
        assert!(!dir.path("out.lsq").exists());
    }
    assert!(!dir.files().iter().any(|f| f.contains("out.lsq")), "{:?}", dir.files());
}

#[test]
fn vectors_and_scalars_stay_raw_whatever_their_shape() {
    let dir = TempDir::new("vectors");
    safetensors(
        &dir.path("m.safetensors"),
        &[
            ("a.matrix", vec![16, 64], weights(1024, 2)),
            ("b.row", vec![1, 384], weights(384, 3)),
            ("c.column", vec![384, 1], weights(384, 4)),
            ("d.conv_bias", vec![1, 64, 1, 1], weights(64, 5)),
            ("e.scalar", vec![1, 1, 1], vec![0.5]),
            ("f.vector", vec![384], weights(384, 6)),
            ("g.thin", vec![2, 1, 64], weights(128, 7)),
        ],
    );
    let out = ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.lsq"), "--json"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let codec = |name: &str| {
        let t = r["tensors"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap();
        (t["codec"].clone(), t["snr_db"].clone())
    };
    for name in ["a.matrix", "g.thin"] {
        assert!(codec(name).0.is_string(), "{name} is quantized");
    }
    for name in ["b.row", "c.column", "d.conv_bias", "e.scalar", "f.vector"] {
        assert_eq!(codec(name), (serde_json::Value::Null, serde_json::Value::Null), "{name}");
    }
    std::fs::remove_file(dir.path("m.lsq")).unwrap();
    let out = stdout(&ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.lsq")]));
    assert!(!out.contains("inf"), "no SNR of a scalar: {out}");
}

/// Dead channels (groups far below f16's smallest subnormal) and values
/// beyond f16's range both go through with the default options.
#[test]
fn default_options_take_dead_channels_and_huge_values() {
    let dir = TempDir::new("defaults");
    let mut dead = weights(4 * 128, 8);
    for (i, v) in dead.iter_mut().enumerate().take(128) {
        *v = if i % 2 == 0 { 1e-40 } else { -3e-39 }; // row 0: f32 subnormals
    }
    for v in &mut dead[128..256] {
        *v *= 1e-30; // row 1: normal f32, far below f16's 6e-8
    }
    let mut huge = weights(4 * 64, 9);
    huge[5] = 1e30;
    huge[70] = -f32::MAX / 2.0;
    safetensors(
        &dir.path("m.safetensors"),
        &[("dead.weight", vec![4, 128], dead), ("huge.weight", vec![4, 64], huge)],
    );
    for codec in ["seed", "log", "uniform", "nf", "fp", "lut", "auto"] {
        let out = ok(&[
            "quantize",
            &dir.s("m.safetensors"),
            "-o",
            &dir.s("m.lsq"),
            "--codec",
            codec,
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let t = &r["tensors"];
        assert_eq!(t[0]["scale_dtype"], "f16", "{codec}");
        assert_eq!(t[1]["scale_dtype"], "f32", "{codec}: f16 overflows, so f32");
        for k in 0..2 {
            let snr = t[k]["snr_db"].as_f64().unwrap();
            assert!(snr.is_finite() && snr > 0.0, "{codec}: {}: SNR {snr}", t[k]["name"]);
        }
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("'huge.weight'") && err.contains("stored as f32"), "{err}");
        ok(&["verify", &dir.s("m.lsq")]);
    }
    // Asked for explicitly, f16 is kept to: an error naming the tensor.
    std::fs::remove_file(dir.path("m.lsq")).unwrap();
    let args = ["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.lsq"), "--scale-dtype", "f16"];
    let err = fails(&args);
    assert!(err.contains("'huge.weight'") && err.contains("f16"), "{err}");
    assert_eq!(dir.files(), ["m.safetensors"]);
}

#[test]
fn export_checks_data_checksums_and_inspect_says_it_does_not() {
    let dir = TempDir::new("crc");
    safetensors(&dir.path("m.safetensors"), &[("fc.weight", vec![16, 64], weights(1024, 10))]);
    ok(&["quantize", &dir.s("m.safetensors"), "-o", &dir.s("m.lsq")]);
    let data = lsqr::format::LsqFile::open(dir.path("m.lsq")).unwrap().tensors()[0].data;
    let mut bytes = std::fs::read(dir.path("m.lsq")).unwrap();
    bytes[data.offset as usize + 3] ^= 0x01;
    std::fs::write(dir.path("bad.lsq"), &bytes).unwrap();

    let err = fails(&["export", &dir.s("bad.lsq"), "-o", &dir.s("out.safetensors")]);
    assert!(err.contains("bad.lsq") && err.contains("fc.weight"), "{err}");
    assert!(err.contains("data section") && err.contains("CRC"), "{err}");
    assert!(err.contains(&format!("{:#x}", data.offset)), "the section's offset: {err}");
    assert!(!dir.path("out.safetensors").exists());
    assert!(!dir.files().iter().any(|f| f.contains("out.safetensors")), "{:?}", dir.files());

    ok(&["export", &dir.s("bad.lsq"), "-o", &dir.s("out.safetensors"), "--no-verify"]);
    assert!(dir.path("out.safetensors").exists());

    let out = stdout(&ok(&["inspect", &dir.s("bad.lsq")]));
    assert!(out.contains("data checksums not checked"), "{out}");
    let out = stdout(&ok(&["inspect", &dir.s("bad.lsq"), "--json"]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["data_checksums_checked"], false);
    let err = fails(&["verify", &dir.s("bad.lsq")]);
    assert!(err.contains("fc.weight"), "{err}");
}
