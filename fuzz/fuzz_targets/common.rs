//! Shared by the importers' fuzz targets: what every accepted model must
//! satisfy, and the archives fuzzed pickles and arrays are wrapped in.
#![allow(dead_code)]

use std::io::Write;

use lsqr_import::{ImportError, SourceModel};

/// Tensors with more elements than this are listed but not read.
const MAX_READ: usize = 1 << 16;

/// Besides "never panics": every tensor of an accepted model reads as
/// exactly its declared number of bytes (or is a clean error), and f32
/// conversion agrees with it.
pub fn check(result: Result<SourceModel, ImportError>) {
    let model = match result {
        Ok(m) => m,
        Err(e) => {
            // Errors name the input.
            assert!(e.to_string().starts_with(&e.path.display().to_string()));
            return;
        }
    };
    // A model has tensors, or (ONNX) a graph of nodes that needs none.
    let graph_only = model.format == lsqr_import::Format::Onnx;
    assert!(graph_only || !model.tensors.is_empty(), "an accepted model has tensors");
    for t in &model.tensors {
        if t.element_count() > MAX_READ {
            continue;
        }
        let Ok(bytes) = model.bytes(t) else { continue };
        assert_eq!(bytes.len(), t.byte_len(), "tensor '{}'", t.name);
        if let Ok(values) = model.to_f32(t) {
            assert_eq!(values.len(), t.element_count(), "tensor '{}'", t.name);
        }
    }
}

/// A zip of `entries`, all stored (as `torch.save` writes them).
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
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

/// A PyTorch zip checkpoint around `pickle`, with storages `0`..`15` of 256
/// bytes each (and TorchScript's `code/` folder if `script`).
pub fn checkpoint(pickle: &[u8], script: bool) -> Vec<u8> {
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
