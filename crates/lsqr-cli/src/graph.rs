//! ONNX graphs through the quantizer: the imported graph's tensors become a
//! model the pipeline quantizes like any other, and the graph and input
//! shapes are written beside them.

use std::path::Path;

use lsqr::format::{LsqWriter, RawDtype, Value};
use lsqr_import::onnx_graph::{ImportedGraph, TensorRole};
use lsqr_import::{Buffer, Format, SourceModel, SourceTensor, TensorBytes};

use crate::pattern::Pattern;
use crate::pipeline::Settings;

/// Parses `NAME=d0,d1,...` for `--input-shape`; `NAME=` is a scalar
/// (rank 0), as ONNX's Clip bounds or a Pad value can be.
pub fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s.rsplit_once('=').ok_or_else(|| format!("'{s}' is not NAME=d0,d1,..."))?;
    if name.is_empty() {
        return Err(format!("'{s}' has no input name"));
    }
    if dims.trim().is_empty() {
        return Ok((name.to_string(), Vec::new()));
    }
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>().map_err(|_| format!("'{d}' in '{s}' is not a dim")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// Parses `NAME=v0,v1,...` for `--input-value` (finite numbers, at least
/// one).
pub fn parse_input_value(s: &str) -> Result<(String, Vec<f64>), String> {
    let (name, values) =
        s.rsplit_once('=').ok_or_else(|| format!("'{s}' is not NAME=v0,v1,..."))?;
    if name.is_empty() {
        return Err(format!("'{s}' has no input name"));
    }
    let values = values
        .split(',')
        .map(|v| match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(format!("'{v}' in '{s}' is not a finite number")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), values))
}

/// The graph's tensors as a model for the quantizer: `Weight` tensors are
/// quantized as any weight would be, the rest stay f32.
pub fn tensors_as_model(
    path: &Path,
    graph: &ImportedGraph,
    settings: &Settings,
) -> (SourceModel, Settings) {
    let tensors = graph
        .tensors
        .iter()
        .map(|t| SourceTensor {
            name: t.name.clone(),
            dtype: RawDtype::F32,
            shape: t.shape.clone(),
            bytes: TensorBytes::Owned(t.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        })
        .collect();
    let model = SourceModel {
        path: path.to_path_buf(),
        format: Format::Onnx,
        buffers: vec![Buffer::Owned(Vec::new())],
        tensors,
    };
    let mut settings = settings.clone();
    settings.keep.extend(
        graph
            .tensors
            .iter()
            .filter(|t| t.role != TensorRole::Weight)
            .map(|t| Pattern::exact(&t.name)),
    );
    (model, settings)
}

/// Writes the graph and every input's shape (`input_shape.<name>`).
pub fn write_graph<W: std::io::Write + std::io::Seek>(
    writer: &mut LsqWriter<W>,
    graph: &ImportedGraph,
) -> Result<(), String> {
    for (name, shape) in &graph.input_shapes {
        let dims = shape.iter().map(|&d| d as i64).collect();
        writer
            .add_metadata(&format!("input_shape.{name}"), Value::IntList(dims))
            .map_err(|e| e.to_string())?;
    }
    writer.add_metadata("lsqr.onnx_opset", Value::Int(graph.opset)).map_err(|e| e.to_string())?;
    writer.set_graph(graph.graph.clone());
    Ok(())
}
