//! ONNX models: initializers, Constant nodes, external data.
//!
//! An `.onnx` file is a protobuf `ModelProto`; its `graph` holds the weights
//! as `initializer` tensors and, with some exporters, as the `value` of
//! `Constant` nodes (named here by the node's output). Subgraphs (the `g` and
//! `graphs` attributes of `If`, `Loop`, `Scan`, ...) are searched too. A
//! tensor's bytes are either `raw_data` (little-endian, referred to in place
//! in the memory map), typed repeated fields (`float_data`, `int32_data`,
//! ..., decoded at import) or external data: a file next to the model,
//! memory-mapped once per file.
//!
//! Not read: sparse initializers and `sparse_value` constants (an error),
//! string tensors and `value_string(s)` constants (an error / skipped: they
//! are not weights), `ModelProto.functions` and `training_info`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use lsqr::format::RawDtype;

use super::protobuf::{DecodeError, Field, Message};
use super::{Buffer, ImportError, SourceModel, SourceTensor, TensorBytes};

/// How deep subgraphs are followed; deeper is an error (and a guard
/// against malicious nesting).
const MAX_GRAPH_DEPTH: usize = 32;

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: u64 = 1;

/// Whether `bytes` look like an ONNX ModelProto: a first field
/// `ir_version` (key 0x08) with a plausible value, followed by another
/// ModelProto field of the right wire type.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    let mut fields = Message::new(bytes, 0).fields();
    match fields.next() {
        Some(Ok(Field { number: 1, value: super::protobuf::Value::Varint(v), .. }))
            if (1..=100).contains(&v) => {}
        _ => return false,
    }
    match fields.next() {
        // ir_version alone is not a model, but nothing else is shaped like it.
        None => true,
        Some(Ok(f)) => {
            use super::protobuf::Value::{Bytes, Varint};
            matches!(
                (f.number, f.value),
                (2 | 3 | 4 | 6 | 7 | 8 | 14 | 20 | 25 | 26, Bytes { .. }) | (5, Varint(_))
            )
        }
        Some(Err(_)) => false,
    }
}

/// Whether the ModelProto in `bytes` has a graph with at least one node.
pub(super) fn has_nodes(bytes: &[u8]) -> bool {
    let graph = Message::new(bytes, 0).fields().find_map(|f| match f {
        Ok(f) if f.number == 7 => f.message().ok(),
        _ => None,
    });
    graph.is_some_and(|g| g.fields().any(|f| matches!(f, Ok(f) if f.number == 1)))
}

/// Imports every weight of an ONNX model.
/// Reads the ONNX model in `model.buffers[0]`. External data files are
/// mapped from beside `model.path` when `files` is true; otherwise (an
/// in-memory model) they are an error.
pub(super) fn import(model: &mut SourceModel, files_allowed: bool) -> Result<(), ImportError> {
    let pending = {
        let bytes = match model.buffers.first() {
            Some(b) => b.as_slice(),
            None => return Err(ImportError::new(&model.path, "no input buffer")),
        };
        let mut collector = Collector { path: &model.path, tensors: Vec::new() };
        collector.model(Message::new(bytes, 0))?;
        collector.tensors
    };
    let mut dir: Option<PathBuf> = None;
    let mut files: HashMap<PathBuf, usize> = HashMap::new();
    for p in pending {
        let bytes = match p.data {
            Data::Ready(bytes) => bytes,
            Data::External(ext) => {
                let path = &model.path;
                let err = |msg: String| ImportError::tensor(path, &p.name, msg);
                if !files_allowed {
                    return Err(err(format!(
                        "external data '{}': an in-memory model cannot refer to other files",
                        ext.location
                    )));
                }
                let rel = safe_relative(&ext.location).map_err(&err)?;
                let dir = match &dir {
                    Some(d) => d,
                    None => {
                        let d = model
                            .path
                            .parent()
                            .filter(|d| !d.as_os_str().is_empty())
                            .unwrap_or(Path::new("."));
                        // Canonical, so that a symlink inside the folder
                        // cannot lead out of it.
                        let d = d.canonicalize().map_err(|e| {
                            ImportError::new(
                                &model.path,
                                format!("cannot resolve the model's folder: {e}"),
                            )
                        })?;
                        dir.insert(d)
                    }
                };
                let file = resolve_inside(dir, rel, &ext.location).map_err(&err)?;
                let buffer = match files.get(&file) {
                    Some(&k) => k,
                    None => {
                        let buf = Buffer::map(&file).map_err(|e| {
                            err(format!("external data '{}': {}", ext.location, e.message))
                        })?;
                        model.buffers.push(buf);
                        files.insert(file, model.buffers.len() - 1);
                        model.buffers.len() - 1
                    }
                };
                let file_len = model.buffers[buffer].as_slice().len() as u64;
                let offset = ext.offset.unwrap_or(0);
                let length = match ext.length {
                    Some(l) => l,
                    None => file_len.checked_sub(offset).ok_or_else(|| {
                        err(format!("external data offset {offset} is past the end of '{}' ({file_len} bytes)", ext.location))
                    })?,
                };
                if length != p.byte_len as u64 {
                    return Err(err(format!(
                        "external data is {length} bytes, but shape {:?} of {} needs {}",
                        p.shape,
                        p.dtype.name(),
                        p.byte_len
                    )));
                }
                if !matches!(offset.checked_add(length), Some(end) if end <= file_len) {
                    return Err(err(format!(
                        "external data {offset}..{} lies outside '{}' ({file_len} bytes)",
                        offset.saturating_add(length),
                        ext.location
                    )));
                }
                let offset = usize::try_from(offset)
                    .map_err(|_| err("external data offset too large".into()))?;
                TensorBytes::Contiguous { buffer, offset }
            }
        };
        model.tensors.push(SourceTensor { name: p.name, dtype: p.dtype, shape: p.shape, bytes });
    }
    Ok(())
}

/// `location` as a path under the model's folder: relative, without `..`.
fn safe_relative(location: &str) -> Result<&Path, String> {
    let path = Path::new(location);
    if location.is_empty() {
        return Err("external data has an empty location".into());
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "external data location '{location}' leaves the model's folder ('..')"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                "external data location '{location}' is absolute; it must be relative to the model"
            ))
            }
        }
    }
    Ok(path)
}

/// `rel` under the canonical folder `dir`, with every symlink resolved; an
/// error if the result lies outside `dir` (a symlink, to a file or to a
/// folder, pointing out of it).
fn resolve_inside(dir: &Path, rel: &Path, location: &str) -> Result<PathBuf, String> {
    let joined = dir.join(rel);
    let file = joined
        .canonicalize()
        .map_err(|e| format!("external data '{location}' ({}): {e}", joined.display()))?;
    if !file.starts_with(dir) {
        return Err(format!(
            "external data location '{location}' resolves to {}, outside the model's folder {} \
             (through a symlink)",
            file.display(),
            dir.display()
        ));
    }
    Ok(file)
}

/// Where a tensor's bytes will come from.
enum Data {
    /// In the model file, or decoded.
    Ready(TensorBytes),
    /// In another file, mapped after the model is parsed.
    External(External),
}

#[derive(Default)]
struct External {
    location: String,
    offset: Option<u64>,
    length: Option<u64>,
}

/// A tensor found while parsing.
struct Pending {
    name: String,
    dtype: RawDtype,
    shape: Vec<usize>,
    byte_len: usize,
    data: Data,
}

/// Walks the protobuf, collecting tensors.
struct Collector<'p> {
    path: &'p Path,
    tensors: Vec<Pending>,
}

impl Collector<'_> {
    fn malformed(&self, e: DecodeError) -> ImportError {
        ImportError::new(self.path, format!("malformed ONNX protobuf: {e}"))
    }

    fn model(&mut self, msg: Message<'_>) -> Result<(), ImportError> {
        let mut graphs = 0;
        for field in msg.fields() {
            let field = field.map_err(|e| self.malformed(e))?;
            if field.number == 7 {
                let graph = field.message().map_err(|e| self.malformed(e))?;
                self.graph(graph, 0)?;
                graphs += 1;
            }
        }
        if graphs == 0 {
            return Err(ImportError::new(self.path, "the ONNX model has no graph"));
        }
        Ok(())
    }

    fn graph(&mut self, msg: Message<'_>, depth: usize) -> Result<(), ImportError> {
        if depth > MAX_GRAPH_DEPTH {
            return Err(ImportError::new(
                self.path,
                format!("subgraphs nested deeper than {MAX_GRAPH_DEPTH}"),
            ));
        }
        for field in msg.fields() {
            let field = field.map_err(|e| self.malformed(e))?;
            match field.number {
                1 => self.node(field.message().map_err(|e| self.malformed(e))?, depth)?,
                5 => {
                    let t = field.message().map_err(|e| self.malformed(e))?;
                    let t = self.tensor(t, None)?;
                    self.tensors.push(t);
                }
                15 => {
                    return Err(ImportError::new(
                        self.path,
                        "sparse initializers are not supported",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn node(&mut self, msg: Message<'_>, depth: usize) -> Result<(), ImportError> {
        let mut op_type = "";
        let mut domain = "";
        let mut output: Option<&str> = None;
        let mut attributes = Vec::new();
        for field in msg.fields() {
            let field = field.map_err(|e| self.malformed(e))?;
            match field.number {
                2 if output.is_none() => {
                    output = Some(field.string().map_err(|e| self.malformed(e))?)
                }
                4 => op_type = field.string().map_err(|e| self.malformed(e))?,
                5 => attributes.push(field.message().map_err(|e| self.malformed(e))?),
                7 => domain = field.string().map_err(|e| self.malformed(e))?,
                _ => {}
            }
        }
        let constant = op_type == "Constant" && (domain.is_empty() || domain == "ai.onnx");
        for attr in attributes {
            self.attribute(attr, constant.then_some(output.unwrap_or("")), depth)?;
        }
        Ok(())
    }

    /// An attribute: follows its subgraphs; for a Constant node
    /// (`constant` is its output name), records its value.
    fn attribute(
        &mut self,
        msg: Message<'_>,
        constant: Option<&str>,
        depth: usize,
    ) -> Result<(), ImportError> {
        let mut name = "";
        let mut f: Option<u32> = None;
        let mut i: Option<u64> = None;
        let mut t = None;
        let mut floats = Vec::new();
        let mut ints = Vec::new();
        let mut sparse = false;
        for field in msg.fields() {
            let field = field.map_err(|e| self.malformed(e))?;
            let m = |e| self.malformed(e);
            match field.number {
                1 => name = field.string().map_err(m)?,
                2 => f = Some(field.fixed32().map_err(m)?),
                3 => i = Some(field.varint().map_err(m)?),
                5 => t = Some(field.message().map_err(m)?),
                6 => self.graph(field.message().map_err(m)?, depth + 1)?,
                7 => field.fixed32s(&mut floats).map_err(m)?,
                8 => field.varints(&mut ints).map_err(m)?,
                11 => self.graph(field.message().map_err(m)?, depth + 1)?,
                22 => sparse = true,
                _ => {}
            }
        }
        let Some(output) = constant else { return Ok(()) };
        let value = matches!(
            name,
            "value" | "value_float" | "value_floats" | "value_int" | "value_ints" | "sparse_value"
        );
        if value && output.is_empty() {
            return Err(ImportError::new(self.path, "a Constant node has no output name"));
        }
        let scalar = |dtype, shape: Vec<usize>, bytes: Vec<u8>| Pending {
            name: output.to_string(),
            dtype,
            byte_len: bytes.len(),
            shape,
            data: Data::Ready(TensorBytes::Owned(bytes)),
        };
        let pending = match name {
            "value" => match t {
                Some(t) => self.tensor(t, Some(output))?,
                None => {
                    return Err(ImportError::tensor(
                        self.path,
                        output,
                        "Constant 'value' has no tensor",
                    ))
                }
            },
            "value_float" => scalar(RawDtype::F32, vec![], f.unwrap_or(0).to_le_bytes().to_vec()),
            "value_floats" => scalar(
                RawDtype::F32,
                vec![floats.len()],
                floats.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            "value_int" => scalar(RawDtype::I64, vec![], i.unwrap_or(0).to_le_bytes().to_vec()),
            "value_ints" => scalar(
                RawDtype::I64,
                vec![ints.len()],
                ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            "sparse_value" if sparse => {
                return Err(ImportError::tensor(
                    self.path,
                    output,
                    "sparse Constant values are not supported",
                ))
            }
            // value_string(s): not weights.
            _ => return Ok(()),
        };
        self.tensors.push(pending);
        Ok(())
    }

    /// A TensorProto; `name` overrides its own (Constant nodes).
    fn tensor(&self, msg: Message<'_>, name: Option<&str>) -> Result<Pending, ImportError> {
        let mut dims = Vec::new();
        let mut data_type = 0u64;
        let mut own_name = "";
        let mut raw: Option<(&[u8], usize)> = None;
        let mut typed: Vec<Field<'_>> = Vec::new();
        let mut strings = false;
        let mut segment = false;
        let mut location = 0u64;
        let mut external = External::default();
        let mut external_entries = Vec::new();
        for field in msg.fields() {
            let field = field.map_err(|e| self.malformed(e))?;
            let m = |e| self.malformed(e);
            match field.number {
                1 => field.varints(&mut dims).map_err(m)?,
                2 => data_type = field.varint().map_err(m)?,
                3 => segment = true,
                4 | 5 | 7 | 10 | 11 => typed.push(field),
                6 => strings = true,
                8 => own_name = field.string().map_err(m)?,
                9 => raw = Some(field.bytes().map_err(m)?),
                13 => external_entries.push(field.message().map_err(m)?),
                14 => location = field.varint().map_err(m)?,
                _ => {}
            }
        }
        let name = name.unwrap_or(own_name);
        let err = |msg: String| ImportError::tensor(self.path, name, msg);
        if name.is_empty() {
            return Err(ImportError::new(self.path, "an initializer has no name"));
        }
        let dtype = onnx_dtype(data_type).map_err(&err)?;
        if segment {
            return Err(err("segmented tensors are not supported".into()));
        }
        if strings {
            return Err(err("has string_data, which is not numeric".into()));
        }
        let mut shape = Vec::with_capacity(dims.len());
        for &d in &dims {
            let d = usize::try_from(d as i64)
                .map_err(|_| err(format!("has a negative dimension {}", d as i64)))?;
            shape.push(d);
        }
        let byte_len = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| err(format!("shape {shape:?} is too large")))?;
        let needs = |have: usize, what: &str| {
            err(format!(
                "has {have} {what}, but shape {shape:?} of {} needs {byte_len} bytes",
                dtype.name()
            ))
        };

        let data = if location == EXTERNAL {
            for entry in external_entries {
                let (mut key, mut value) = ("", "");
                for field in entry.fields() {
                    let field = field.map_err(|e| self.malformed(e))?;
                    match field.number {
                        1 => key = field.string().map_err(|e| self.malformed(e))?,
                        2 => value = field.string().map_err(|e| self.malformed(e))?,
                        _ => {}
                    }
                }
                let number = |v: &str| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| err(format!("external data {key} '{v}' is not a number")))
                };
                match key {
                    "location" => external.location = value.to_string(),
                    "offset" => external.offset = Some(number(value)?),
                    "length" => external.length = Some(number(value)?),
                    _ => {}
                }
            }
            if external.location.is_empty() {
                return Err(err("external data without a location".into()));
            }
            Data::External(external)
        } else if location != 0 {
            return Err(err(format!("unknown data_location {location}")));
        } else if let Some((bytes, offset)) = raw {
            if bytes.len() != byte_len {
                return Err(needs(bytes.len(), "bytes of raw_data"));
            }
            Data::Ready(TensorBytes::Contiguous { buffer: 0, offset })
        } else {
            let decoded = decode_typed(dtype, &typed).map_err(&err)?;
            if decoded.len() != byte_len {
                return Err(needs(decoded.len() / dtype.size(), "values"));
            }
            Data::Ready(TensorBytes::Owned(decoded))
        };
        Ok(Pending { name: name.to_string(), dtype, shape, byte_len, data })
    }
}

/// The dtype of an ONNX `TensorProto.DataType`.
pub(super) fn onnx_dtype(code: u64) -> Result<RawDtype, String> {
    Ok(match code {
        1 => RawDtype::F32,
        2 => RawDtype::U8,
        3 => RawDtype::I8,
        5 => RawDtype::I16,
        6 => RawDtype::I32,
        7 => RawDtype::I64,
        9 => RawDtype::Bool,
        10 => RawDtype::F16,
        11 => RawDtype::F64,
        16 => RawDtype::BF16,
        _ => {
            let name = match code {
                0 => "UNDEFINED",
                4 => "UINT16",
                8 => "STRING",
                12 => "UINT32",
                13 => "UINT64",
                14 => "COMPLEX64",
                15 => "COMPLEX128",
                17 => "FLOAT8E4M3FN",
                18 => "FLOAT8E4M3FNUZ",
                19 => "FLOAT8E5M2",
                20 => "FLOAT8E5M2FNUZ",
                21 => "UINT4",
                22 => "INT4",
                23 => "FLOAT4E2M1",
                24 => "FLOAT8E8M0",
                _ => "unknown",
            };
            return Err(format!("unsupported ONNX data type {name} ({code})"));
        }
    })
}

/// Decodes the typed repeated field that holds `dtype`'s values into
/// little-endian bytes. Values in another typed field are an error.
pub(super) fn decode_typed(dtype: RawDtype, fields: &[Field<'_>]) -> Result<Vec<u8>, String> {
    let (number, field_name) = match dtype {
        RawDtype::F32 => (4, "float_data"),
        RawDtype::F64 => (10, "double_data"),
        RawDtype::I64 => (7, "int64_data"),
        _ => (5, "int32_data"),
    };
    let mut out = Vec::new();
    for field in fields {
        if field.number != number {
            if matches!(field.value, super::protobuf::Value::Bytes { data: [], .. }) {
                continue;
            }
            let found = match field.number {
                4 => "float_data",
                5 => "int32_data",
                7 => "int64_data",
                10 => "double_data",
                _ => "uint64_data",
            };
            return Err(format!(
                "has values in {found}, but {} values belong in {field_name}",
                dtype.name()
            ));
        }
        match number {
            4 => {
                let mut v = Vec::new();
                field.fixed32s(&mut v).map_err(|e| e.to_string())?;
                out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            }
            10 => {
                let mut v = Vec::new();
                field.fixed64s(&mut v).map_err(|e| e.to_string())?;
                out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            }
            _ => {
                let mut v = Vec::new();
                field.varints(&mut v).map_err(|e| e.to_string())?;
                for x in v {
                    push_int(&mut out, dtype, x)?;
                }
            }
        }
    }
    Ok(out)
}

/// Appends one varint value of `int32_data`/`int64_data` as `dtype`.
fn push_int(out: &mut Vec<u8>, dtype: RawDtype, x: u64) -> Result<(), String> {
    let range = || format!("value {} is out of range for {}", x as i64, dtype.name());
    match dtype {
        RawDtype::I64 => out.extend((x as i64).to_le_bytes()),
        // int32 varints are sign-extended to 64 bits.
        RawDtype::I32 => out.extend(i32::try_from(x as i64).map_err(|_| range())?.to_le_bytes()),
        RawDtype::I16 => out.extend(i16::try_from(x as i64).map_err(|_| range())?.to_le_bytes()),
        RawDtype::I8 => out.extend(i8::try_from(x as i64).map_err(|_| range())?.to_le_bytes()),
        RawDtype::U8 => out.push(u8::try_from(x).map_err(|_| range())?),
        RawDtype::Bool => out.push(u8::from(x != 0)),
        // The 16 bits of a half-precision value.
        RawDtype::F16 | RawDtype::BF16 => {
            out.extend(u16::try_from(x).map_err(|_| range())?.to_le_bytes())
        }
        RawDtype::F32 | RawDtype::F64 => {
            return Err(format!("{} values cannot be in an integer field", dtype.name()))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    /// A tiny protobuf encoder for building ModelProtos by hand.
    #[derive(Default, Clone)]
    struct Enc(Vec<u8>);

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    impl Enc {
        fn key(mut self, field: u32, wire: u64) -> Self {
            put_varint(&mut self.0, (u64::from(field) << 3) | wire);
            self
        }
        fn varint(self, field: u32, v: u64) -> Self {
            let mut s = self.key(field, 0);
            put_varint(&mut s.0, v);
            s
        }
        fn bytes(self, field: u32, b: &[u8]) -> Self {
            let mut s = self.key(field, 2);
            put_varint(&mut s.0, b.len() as u64);
            s.0.extend_from_slice(b);
            s
        }
        fn str(self, field: u32, s: &str) -> Self {
            self.bytes(field, s.as_bytes())
        }
        fn msg(self, field: u32, m: Enc) -> Self {
            self.bytes(field, &m.0)
        }
        fn fixed32(self, field: u32, v: u32) -> Self {
            let mut s = self.key(field, 5);
            s.0.extend(v.to_le_bytes());
            s
        }
        fn packed_varints(self, field: u32, vs: &[u64]) -> Self {
            let mut body = Vec::new();
            for &v in vs {
                put_varint(&mut body, v);
            }
            self.bytes(field, &body)
        }
        fn packed_f32(self, field: u32, vs: &[f32]) -> Self {
            let body: Vec<u8> = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.bytes(field, &body)
        }
    }

    /// A TensorProto header: dims (unpacked, as onnx writes them), type, name.
    fn tensor(name: &str, data_type: u64, dims: &[u64]) -> Enc {
        let mut t = Enc::default();
        for &d in dims {
            t = t.varint(1, d);
        }
        t.varint(2, data_type).str(8, name)
    }

    fn f32_bytes(vs: &[f32]) -> Vec<u8> {
        vs.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A ModelProto around `graph`.
    fn model(graph: Enc) -> Vec<u8> {
        Enc::default().varint(1, 8).str(2, "lsqr-test").msg(7, graph.str(2, "g")).0
    }

    fn import_bytes(bytes: Vec<u8>) -> Result<SourceModel, ImportError> {
        let mut m = SourceModel {
            path: PathBuf::from("test.onnx"),
            format: Format::Onnx,
            buffers: vec![Buffer::Owned(bytes)],
            tensors: Vec::new(),
        };
        import(&mut m, false)?;
        Ok(m)
    }

    fn values(m: &SourceModel, name: &str) -> Vec<u8> {
        let t =
            m.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
        m.bytes(t).unwrap().into_owned()
    }

    /// A fresh temporary folder.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lsqr-onnx-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn raw_data_points_into_the_map() {
        let data = f32_bytes(&[1.0, -2.0, 3.5, 0.25, 8.0, -0.5]);
        let bytes = model(Enc::default().msg(5, tensor("w", 1, &[2, 3]).bytes(9, &data)));
        assert!(looks_like(&bytes));
        let offset = bytes.windows(data.len()).position(|w| w == data).unwrap();
        let m = import_bytes(bytes).unwrap();
        assert_eq!(m.tensors.len(), 1);
        let t = &m.tensors[0];
        assert_eq!(
            (t.name.as_str(), t.dtype, t.shape.as_slice()),
            ("w", RawDtype::F32, &[2, 3][..])
        );
        assert_eq!(t.bytes, TensorBytes::Contiguous { buffer: 0, offset });
        assert_eq!(m.to_f32(t).unwrap().into_owned(), [1.0, -2.0, 3.5, 0.25, 8.0, -0.5]);
    }

    #[test]
    fn float_data_packed_and_unpacked() {
        // Packed dims, then float_data packed and one unpacked value.
        let t = Enc::default()
            .packed_varints(1, &[2, 2])
            .varint(2, 1)
            .packed_f32(4, &[1.5, -0.0, f32::MAX])
            .fixed32(4, f32::MIN_POSITIVE.to_bits())
            .str(8, "fd");
        let m = import_bytes(model(Enc::default().msg(5, t))).unwrap();
        let t = &m.tensors[0];
        assert_eq!(t.shape, [2, 2]);
        assert!(matches!(t.bytes, TensorBytes::Owned(_)));
        assert_eq!(values(&m, "fd"), f32_bytes(&[1.5, -0.0, f32::MAX, f32::MIN_POSITIVE]));
    }

    #[test]
    fn int64_and_small_int_data() {
        let i64s = [-5i64, 0, i64::MAX, i64::MIN];
        let t64 = tensor("i64", 7, &[4]).packed_varints(7, &i64s.map(|v| v as u64));
        // int8 and int32 values live in int32_data, negative ones sign-extended.
        let t8 = tensor("i8", 3, &[3]).packed_varints(5, &[-128i64 as u64, 127, 0]);
        let t32 = tensor("i32", 6, &[2]).packed_varints(5, &[i64::from(i32::MIN) as u64, 7]);
        let tb = tensor("b", 9, &[2]).packed_varints(5, &[1, 0]);
        let bytes = model(Enc::default().msg(5, t64).msg(5, t8).msg(5, t32).msg(5, tb));
        let m = import_bytes(bytes).unwrap();
        assert_eq!(m.tensors[0].dtype, RawDtype::I64);
        assert_eq!(
            values(&m, "i64"),
            i64s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
        );
        assert_eq!(values(&m, "i8"), [0x80, 0x7f, 0]);
        assert_eq!(values(&m, "i32"), [i32::MIN.to_le_bytes(), 7i32.to_le_bytes()].concat());
        assert_eq!(values(&m, "b"), [1, 0]);

        let bad = model(Enc::default().msg(5, tensor("u8", 2, &[1]).packed_varints(5, &[300])));
        let e = import_bytes(bad).unwrap_err();
        assert_eq!(e.tensor.as_deref(), Some("u8"));
        assert!(e.message.contains("out of range"), "{e}");
    }

    #[test]
    fn f16_and_bf16_in_int32_data() {
        let h = [half::f16::from_f32(1.0), half::f16::from_f32(-2.5), half::f16::MAX];
        let b = [half::bf16::from_f32(3.0), half::bf16::from_f32(-0.125)];
        let th = tensor("h", 10, &[3]).packed_varints(5, &h.map(|v| u64::from(v.to_bits())));
        let tb = tensor("bf", 16, &[1, 2]).packed_varints(5, &b.map(|v| u64::from(v.to_bits())));
        let m = import_bytes(model(Enc::default().msg(5, th).msg(5, tb))).unwrap();
        assert_eq!(m.tensors[0].dtype, RawDtype::F16);
        assert_eq!(m.to_f32(&m.tensors[0]).unwrap().into_owned(), [1.0, -2.5, 65504.0]);
        assert_eq!(m.tensors[1].dtype, RawDtype::BF16);
        assert_eq!(m.to_f32(&m.tensors[1]).unwrap().into_owned(), [3.0, -0.125]);
    }

    fn node(op: &str, output: &str, attrs: &[Enc]) -> Enc {
        let mut n =
            Enc::default().str(1, "x").str(2, output).str(3, &format!("{op}_node")).str(4, op);
        for a in attrs {
            n = n.msg(5, a.clone());
        }
        n
    }

    #[test]
    fn constant_nodes_and_subgraphs() {
        let data = f32_bytes(&[0.5, 0.75]);
        // The tensor's own name is replaced by the node's output.
        let value = Enc::default()
            .str(1, "value")
            .msg(5, tensor("ignored", 1, &[2]).bytes(9, &data))
            .varint(20, 4);
        let floats = Enc::default()
            .str(1, "value_floats")
            .fixed32(7, 1.0f32.to_bits())
            .fixed32(7, 2.0f32.to_bits());
        let int = Enc::default().str(1, "value_int").varint(3, -3i64 as u64);
        let ints = Enc::default().str(1, "value_ints").packed_varints(8, &[4, 5, 6]);
        let string = Enc::default().str(1, "value_string").bytes(4, b"text");
        // A tensor attribute of another op is not a weight.
        let other = node(
            "ConstantOfShape",
            "cos",
            &[Enc::default().str(1, "value").msg(5, tensor("z", 1, &[1]).bytes(9, &[0; 4]))],
        );
        // An If whose then_branch holds an initializer and a Constant.
        let branch = Enc::default()
            .msg(
                1,
                node(
                    "Constant",
                    "inner_const",
                    &[Enc::default().str(1, "value_float").fixed32(2, 9.0f32.to_bits())],
                ),
            )
            .msg(5, tensor("inner_init", 6, &[1]).packed_varints(5, &[42]));
        let iff = node(
            "If",
            "if_out",
            &[Enc::default().str(1, "then_branch").msg(6, branch).varint(20, 5)],
        );
        let graph = Enc::default()
            .msg(1, node("Constant", "c_value", &[value]))
            .msg(1, node("Constant", "c_floats", &[floats]))
            .msg(1, node("Constant", "c_int", &[int]))
            .msg(1, node("Constant", "c_ints", &[ints]))
            .msg(1, node("Constant", "c_string", &[string]))
            .msg(1, other)
            .msg(1, iff);
        let m = import_bytes(model(graph)).unwrap();
        let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c_value", "c_floats", "c_int", "c_ints", "inner_const", "inner_init"]);
        assert_eq!(m.to_f32(&m.tensors[0]).unwrap().into_owned(), [0.5, 0.75]);
        assert!(matches!(m.tensors[0].bytes, TensorBytes::Contiguous { buffer: 0, .. }));
        assert_eq!(
            (m.tensors[1].shape.as_slice(), m.to_f32(&m.tensors[1]).unwrap().into_owned()),
            (&[2][..], vec![1.0, 2.0])
        );
        assert_eq!((m.tensors[2].dtype, m.tensors[2].shape.len()), (RawDtype::I64, 0));
        assert_eq!(values(&m, "c_int"), (-3i64).to_le_bytes());
        assert_eq!(
            values(&m, "c_ints"),
            [4i64, 5, 6].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
        );
        assert_eq!(m.to_f32(&m.tensors[4]).unwrap().into_owned(), [9.0]);
        assert_eq!(values(&m, "inner_init"), 42i32.to_le_bytes());
    }

    #[test]
    fn deep_subgraphs_are_an_error_not_a_stack_overflow() {
        let mut g = Enc::default();
        for _ in 0..200 {
            g = Enc::default()
                .msg(1, node("Loop", "o", &[Enc::default().str(1, "body").msg(6, g)]));
        }
        let e = import_bytes(model(g)).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
    }

    #[test]
    fn external_data() {
        let dir = temp_dir("external");
        let a = f32_bytes(&[1.0, 2.0, 3.0]);
        let b = [7u8, 8, 9, 10];
        let mut data = vec![0xaa; 16];
        data.extend_from_slice(&a);
        data.extend_from_slice(&b);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/weights.bin"), &data).unwrap();
        let ext = |t: Enc, entries: &[(&str, &str)]| {
            let mut t = t.varint(14, 1);
            for (k, v) in entries {
                t = t.msg(13, Enc::default().str(1, k).str(2, v));
            }
            t
        };
        let ta = ext(
            tensor("a", 1, &[3]),
            &[("location", "./sub/weights.bin"), ("offset", "16"), ("length", "12")],
        );
        // No length: the rest of the file.
        let tb = ext(tensor("b", 2, &[4]), &[("location", "sub/weights.bin"), ("offset", "28")]);
        let path = dir.join("model.onnx");
        std::fs::write(&path, model(Enc::default().msg(5, ta).msg(5, tb))).unwrap();
        let m = crate::open(&path).unwrap();
        assert_eq!(m.format, Format::Onnx);
        assert_eq!(m.buffers.len(), 2, "the data file is mapped once");
        assert_eq!(m.tensors[0].bytes, TensorBytes::Contiguous { buffer: 1, offset: 16 });
        assert_eq!(m.to_f32(&m.tensors[0]).unwrap().into_owned(), [1.0, 2.0, 3.0]);
        assert_eq!(values(&m, "b"), b);

        let fails = |t: Enc, needle: &str| {
            std::fs::write(&path, model(Enc::default().msg(5, t))).unwrap();
            let e = crate::open(&path).unwrap_err();
            assert_eq!(e.tensor.as_deref(), Some("t"), "{e}");
            assert!(e.message.contains(needle), "{e} should say {needle}");
        };
        std::fs::write(dir.join("x"), [0u8; 4]).unwrap();
        let t = || tensor("t", 1, &[1]);
        fails(ext(t(), &[("location", "../x")]), "leaves the model's folder");
        fails(ext(t(), &[("location", "sub/../../x")]), "leaves the model's folder");
        fails(ext(t(), &[("location", "/etc/passwd")]), "absolute");
        fails(ext(t(), &[("location", "missing.bin")]), "missing.bin");
        fails(ext(t(), &[("offset", "0")]), "without a location");
        fails(ext(t(), &[("location", "x"), ("length", "8")]), "is 8 bytes");
        fails(ext(t(), &[("location", "x"), ("offset", "2"), ("length", "4")]), "lies outside");
        fails(ext(t(), &[("location", "x"), ("offset", "nope")]), "not a number");
        // Within the folder, plain names work.
        std::fs::write(&path, model(Enc::default().msg(5, ext(t(), &[("location", "x")]))))
            .unwrap();
        assert_eq!(
            crate::open(&path).unwrap().tensors[0].bytes,
            TensorBytes::Contiguous { buffer: 1, offset: 0 }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A symlink inside the model's folder, to a file or to a folder, must
    /// not lead out of it; external data must be a regular file (a FIFO
    /// would block, a device would be read).
    #[cfg(unix)]
    #[test]
    fn external_data_stays_in_the_folder_and_in_regular_files() {
        let root = temp_dir("symlinks");
        let (dir, outside) = (root.join("model"), root.join("outside"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), [1u8; 4]).unwrap();
        std::fs::write(dir.join("inside.bin"), [2u8; 4]).unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        };
        link(&outside.join("secret"), "file_link");
        link(&outside, "dir_link");
        link(Path::new("/etc/passwd"), "passwd");
        link(&dir.join("inside.bin"), "inside_link");
        link(&dir, "self_link");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let path = dir.join("model.onnx");
        let ext = |location: &str| {
            let t = tensor("t", 1, &[1]).varint(14, 1);
            model(
                Enc::default()
                    .msg(5, t.msg(13, Enc::default().str(1, "location").str(2, location))),
            )
        };
        let fails = |location: &str, needle: &str| {
            std::fs::write(&path, ext(location)).unwrap();
            let e = crate::open(&path).unwrap_err();
            assert_eq!(e.tensor.as_deref(), Some("t"), "{e}");
            assert!(e.message.contains(location), "{e} should name {location}");
            assert!(e.message.contains(needle), "{e} should say {needle}");
        };
        fails("file_link", "outside the model's folder");
        fails("dir_link/secret", "outside the model's folder");
        fails("passwd", "outside the model's folder");
        // The check is made in the running process: a FIFO is refused
        // before it is opened, so this returns instead of blocking.
        fails("fifo", "FIFO");
        fails("self_link/fifo", "FIFO");
        fails(".", "folder");
        // Symlinks that stay inside are fine.
        for location in ["inside_link", "self_link/inside.bin"] {
            std::fs::write(&path, ext(location)).unwrap();
            let m = crate::open(&path).unwrap();
            assert_eq!(m.bytes(&m.tensors[0]).unwrap().into_owned(), [2u8; 4], "{location}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn truncated_models_are_errors() {
        let data = f32_bytes(&[1.0, 2.0]);
        let bytes = model(
            Enc::default()
                .msg(
                    1,
                    node(
                        "Constant",
                        "c",
                        &[Enc::default().str(1, "value_ints").packed_varints(8, &[300, 1])],
                    ),
                )
                .msg(5, tensor("w", 1, &[2]).bytes(9, &data)),
        );
        assert!(import_bytes(bytes.clone()).is_ok());
        for len in 0..bytes.len() {
            assert!(import_bytes(bytes[..len].to_vec()).is_err(), "prefix of {len} bytes");
        }
        let e = import_bytes(bytes[..bytes.len() - 3].to_vec()).unwrap_err();
        assert!(e.message.contains("malformed"), "{e}");
    }

    #[test]
    fn length_mismatches_name_the_tensor() {
        let cases = [
            tensor("short_raw", 1, &[2, 3]).bytes(9, &[0; 20]),
            tensor("few_floats", 1, &[2, 3]).packed_f32(4, &[1.0; 5]),
            tensor("empty", 7, &[2]),
            tensor("wrong_field", 1, &[1]).packed_varints(7, &[1]),
            tensor("string", 8, &[1]).bytes(6, b"s"),
            tensor("negative", 1, &[-1i64 as u64]),
            tensor("huge", 1, &[u64::MAX >> 1, u64::MAX >> 1]),
        ];
        let needles = [
            "20 bytes of raw_data",
            "5 values",
            "0 values",
            "in int64_data, but f32 values belong in float_data",
            "STRING",
            "negative dimension",
            "too large",
        ];
        for (t, needle) in cases.into_iter().zip(needles) {
            let e = import_bytes(model(Enc::default().msg(5, t))).unwrap_err();
            assert!(e.tensor.is_some(), "{e}");
            assert!(e.message.contains(needle), "{e} should say {needle}");
        }
        let e = import_bytes(model(
            Enc::default().msg(5, tensor("few_floats", 1, &[2, 3]).packed_f32(4, &[1.0; 5])),
        ))
        .unwrap_err();
        assert_eq!(e.tensor.as_deref(), Some("few_floats"));
        assert!(e.to_string().contains("few_floats"));
    }

    #[test]
    fn detection() {
        assert!(looks_like(&model(Enc::default())));
        assert!(looks_like(&[0x08, 0x07]));
        for other in [
            &b"\x93NUMPY\x01\x00"[..],
            b"PK\x03\x04",
            b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":{}}      ",
            b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
            b"hello",
            b"",
        ] {
            assert!(!looks_like(other), "{other:?}");
        }
        // No graph is an error.
        let e = import_bytes(Enc::default().varint(1, 8).0).unwrap_err();
        assert!(e.message.contains("no graph"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = looks_like(&bytes);
            let _ = import_bytes(bytes);
        }

        #[test]
        fn corrupted_models_never_panic(at in 0usize..200, byte in proptest::num::u8::ANY) {
            let t = tensor("w", 1, &[2]).bytes(9, &f32_bytes(&[1.0, 2.0]));
            let c = node("Constant", "c", &[Enc::default().str(1, "value").msg(5, tensor("", 10, &[1]).packed_varints(5, &[1]))]);
            let mut bytes = model(Enc::default().msg(1, c).msg(5, t));
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(m) = import_bytes(bytes) {
                for t in &m.tensors {
                    proptest::prop_assert!(m.bytes(t).is_ok());
                }
            }
        }
    }

    #[test]
    fn magika() {
        let path = crate::testutil::model("magika/model.onnx");
        let m = crate::open(&path).unwrap();
        assert_eq!(m.format, Format::Onnx);
        assert_eq!(m.buffers.len(), 1);
        // Expected figures from onnx 1.23.2 + numpy_helper, not from this code.
        assert_eq!(m.tensors.len(), 36);
        assert_eq!(m.tensors.iter().map(SourceTensor::element_count).sum::<usize>(), 784_519);
        let count = |d| m.tensors.iter().filter(|t| t.dtype == d).count();
        assert_eq!((count(RawDtype::F32), count(RawDtype::I32), count(RawDtype::I64)), (19, 9, 8));
        assert!(m
            .tensors
            .iter()
            .all(|t| matches!(t.bytes, TensorBytes::Contiguous { buffer: 0, .. })));
        let get = |name: &str| {
            m.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(m.tensors[0].name, "slice_axes__119");
        let conv = get("jax2tf_get_logits_/pjit_get_logits_/MagikaV2/Conv_0/transpose_3:0");
        assert_eq!((conv.dtype, conv.shape.as_slice()), (RawDtype::F32, &[512, 256, 5, 1][..]));
        let conv = m.to_f32(conv).unwrap().into_owned();
        assert_eq!(
            [conv[0].to_bits(), conv[1].to_bits(), conv[conv.len() - 1].to_bits()],
            [0x3d69_8bb4, 0xbe67_161a, 0x3e0e_923b]
        );
        let emb = get("jax2tf_get_logits_/Const:0");
        assert_eq!(emb.shape, [257, 64]);
        assert_eq!(m.to_f32(emb).unwrap().into_owned()[256 * 64 + 63].to_bits(), 0xbcbf_7a72);
        let ends = get("const_ends__125");
        assert_eq!((ends.dtype, ends.shape.as_slice()), (RawDtype::I64, &[4][..]));
        let ends: Vec<u8> = [2_147_483_647i64, 2_147_483_647, 2_147_483_647, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(values(&m, "const_ends__125"), ends);
        let scalar = get("jax2tf_get_logits_/Const_8:0");
        assert_eq!((scalar.dtype, scalar.shape.len()), (RawDtype::F32, 0));
    }
}
