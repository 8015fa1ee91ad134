//! Replays every input saved in `tests/data/fuzz-regressions/<target>/`
//! (crashes and slow inputs the `fuzz/` targets found, after the fix) the
//! way its target runs it, with the same checks as
//! `fuzz/fuzz_targets/common.rs`: no panic, accepted models read every
//! tensor as its declared length. Keep the two in sync.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use lsqr_import::{Format, ImportError, SourceModel};

fn check(result: Result<SourceModel, ImportError>) {
    let Ok(model) = result else { return };
    // A model has tensors, or (ONNX) a graph of nodes that needs none.
    assert!(model.format == Format::Onnx || !model.tensors.is_empty());
    for t in &model.tensors {
        if t.element_count() > 1 << 16 {
            continue;
        }
        if let Ok(bytes) = model.bytes(t) {
            assert_eq!(bytes.len(), t.byte_len(), "tensor '{}'", t.name);
        }
    }
}

fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            zip.start_file(*name, stored).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

fn checkpoint(pickle: &[u8], script: bool) -> Vec<u8> {
    let storage: Vec<u8> = (0..=255u8).collect();
    let names: Vec<String> = (0..16).map(|k| format!("archive/data/{k}")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", pickle)];
    if script {
        entries.push(("archive/code/__torch__.py", b""));
    }
    for n in &names {
        entries.push((n, &storage));
    }
    zip(&entries)
}

/// Runs `data` as fuzz target `target` does.
fn replay(target: &str, data: &[u8]) {
    match target {
        "npy" => {
            check(lsqr_import::from_bytes_as(data.to_vec(), "fuzz.npy", Format::Npy));
            let npz = zip(&[("a.npy", data)]);
            check(lsqr_import::from_bytes_as(npz, "fuzz.npz", Format::Npz));
        }
        "pickle" => {
            let Some((&mode, rest)) = data.split_first() else { return };
            check(if mode % 2 == 0 {
                lsqr_import::from_bytes_as(checkpoint(rest, false), "fuzz.pt", Format::TorchZip)
            } else {
                lsqr_import::from_bytes_as(rest.to_vec(), "fuzz.pt", Format::TorchLegacy)
            });
        }
        "torchscript" => check(lsqr_import::from_bytes_as(
            checkpoint(data, true),
            "fuzz.pt",
            Format::TorchScript,
        )),
        "onnx" => check(lsqr_import::from_bytes_as(data.to_vec(), "fuzz.onnx", Format::Onnx)),
        // fuzz/fuzz_targets/import_onnx_graph.rs: the graph import must give
        // a graph or an error.
        "onnx_graph" => {
            if let Ok(model) = lsqr_import::from_bytes_as(data.to_vec(), "fuzz.onnx", Format::Onnx)
            {
                let _ = lsqr_import::onnx_graph::graph_of(&model, &Default::default());
            }
        }
        "safetensors" => check(lsqr_import::from_bytes_as(
            data.to_vec(),
            "fuzz.safetensors",
            Format::Safetensors,
        )),
        other => panic!("unknown fuzz target folder '{other}'"),
    }
}

#[test]
fn fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut seen = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let start = Instant::now();
            replay(&target, &data);
            let took = start.elapsed();
            assert!(took < Duration::from_secs(10), "{} took {took:?}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0);
}
