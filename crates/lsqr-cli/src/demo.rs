//! `lsqr demo`: the whole pipeline on a built-in synthetic model, with no
//! input file and no network.

use std::path::{Path, PathBuf};

use lsqr::codec::{CodecKind, ScaleDtype, ScaleMethod, Scaling};
use lsqr::format::{LsqWriter, RawDtype};
use lsqr::synthetic::{weights, Distribution};

use crate::pipeline::{self, CodecChoice, Settings, Totals};
use crate::table;
use lsqr_import::{Buffer, Format, SourceModel, SourceTensor, TensorBytes};

/// A 784-512-256-10 MLP with Laplacian and Gaussian weights, std 0.02-0.05
/// (the spread of trained layers), and small biases.
pub fn synthetic_model() -> SourceModel {
    let layers: [(&str, usize, usize, Distribution, f32); 3] = [
        ("encoder.0", 512, 784, Distribution::Laplacian, 0.05),
        ("encoder.2", 256, 512, Distribution::Gaussian, 0.04),
        ("head", 10, 256, Distribution::Laplacian, 0.1),
    ];
    let mut buffers = Vec::new();
    let mut tensors = Vec::new();
    for (i, (name, rows, cols, dist, std)) in layers.into_iter().enumerate() {
        for (suffix, shape, values) in [
            ("weight", vec![rows, cols], weights(dist, rows * cols, std, 10 + i as u64)),
            ("bias", vec![rows], weights(Distribution::Gaussian, rows, 0.01, 20 + i as u64)),
        ] {
            buffers.push(Buffer::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()));
            tensors.push(SourceTensor {
                name: format!("{name}.{suffix}"),
                dtype: RawDtype::F32,
                shape,
                bytes: TensorBytes::Contiguous { buffer: buffers.len() - 1, offset: 0 },
            });
        }
    }
    SourceModel {
        path: PathBuf::from("<built-in demo MLP>"),
        format: Format::Safetensors,
        buffers,
        tensors,
    }
}

fn settings(bits: u32) -> Settings {
    Settings {
        bits,
        codec: CodecChoice::Fixed(CodecKind::Log),
        scaling: Scaling::Group(64),
        scale_dtype: ScaleDtype::F16,
        scale_method: ScaleMethod::MseSearch,
        scale_fallback: true,
        keep: Vec::new(),
        bits_for: Vec::new(),
        per_tensor: Default::default(),
        budget: None,
        importance: Default::default(),
        feedback: Default::default(),
    }
}

/// Prints what `lsqr quantize --bits 4` and `--bits 8` and `lsqr eval`
/// would on the demo model.
pub fn run(output: Option<&Path>) -> Result<(), String> {
    let model = synthetic_model();
    println!("demo: a synthetic 784-512-256-10 MLP (Laplacian/Gaussian weights), log codec, groups of 64, f16 scales fitted to the error\n");
    for bits in [4, 8] {
        let mut sink =
            LsqWriter::new(std::io::Cursor::new(Vec::new())).map_err(|e| e.to_string())?;
        let results = pipeline::run(&model, &settings(bits), Some(&mut sink), &|_| ())
            .map_err(|e| e.to_string())?;
        let bytes = sink.finish().map_err(|e| e.to_string())?.into_inner();
        println!("C = {bits}:");
        print!("{}", table::tensor_table(&results));
        println!("{}", table::totals(&Totals::of(&results, Some(bytes.len() as u64))));
        if let (Some(path), 4) = (output, bits) {
            crate::commands::write_atomically(path, |temp| std::fs::write(temp, &bytes))?;
            println!("wrote {}\n", path.display());
        }
    }
    let widths: Vec<u32> = (3..=8).collect();
    let cells = pipeline::evaluate(&model, &settings(4), &CodecKind::ALL, &widths, &|| ())
        .map_err(|e| e.to_string())?;
    println!("eval: weighted SNR (dB) by codec and C");
    print!("{}", table::eval_table(&cells, &CodecKind::ALL, &widths));
    Ok(())
}
