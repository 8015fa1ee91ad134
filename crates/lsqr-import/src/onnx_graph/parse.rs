//! The parts of an ONNX `ModelProto` a graph import needs: the opset, the
//! main graph's nodes, inputs (with their declared shapes) and outputs.
//! Tensors (initializers and Constant nodes) come from the importer's
//! `SourceModel`, which already reads them safely.

use std::collections::HashSet;
use std::path::Path;

use lsqr::format::RawDtype;

use super::tensor::{Const, Dtype};
use crate::onnx::{decode_typed, onnx_dtype};
use crate::protobuf::{DecodeError, Field, Message};
use crate::ImportError;

/// One node of the main graph.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: String,
    pub op: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
}

/// An attribute value.
#[derive(Debug, Clone)]
pub(crate) enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(Const),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    /// A string list (LSTM/GRU/RNN activations).
    Strings(Vec<String>),
    /// A subgraph (If's branches; Loop and Scan bodies are refused).
    Graph(std::rc::Rc<SubGraph>),
}

/// A subgraph: its nodes (in the file's order) and its outputs' names. Its
/// initializers and Constant nodes are tensors of the `SourceModel`, by
/// name, as the main graph's are.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubGraph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<String>,
}

/// How deep subgraphs are read (the tensor import refuses deeper ones).
const MAX_DEPTH: usize = 32;

/// A dimension of a declared input shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dim {
    Fixed(i64),
    Param(String),
    Unknown,
}

/// A graph input as declared.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub name: String,
    pub elem_type: u64,
    pub dims: Option<Vec<Dim>>,
}

/// The main graph.
#[derive(Debug, Clone, Default)]
pub(crate) struct OnnxGraph {
    /// The default domain's opset version.
    pub opset: i64,
    pub nodes: Vec<Node>,
    /// Declared inputs that are not initializers.
    pub inputs: Vec<Input>,
    pub outputs: Vec<String>,
    /// Declared shapes of outputs and intermediate values (value_info),
    /// checked against the shapes the import computes.
    pub declared: Vec<Input>,
    /// Intermediate values' annotations (value_info): their types are read
    /// (CastLike); their shapes are not checked, as onnxruntime only warns
    /// when exporters leave stale ones.
    pub annotated: Vec<Input>,
}

struct Parser<'p> {
    path: &'p Path,
}

impl Parser<'_> {
    fn malformed(&self, e: DecodeError) -> ImportError {
        ImportError::new(self.path, format!("malformed ONNX protobuf: {e}"))
    }

    fn string(&self, f: &Field<'_>) -> Result<String, ImportError> {
        f.string().map(str::to_string).map_err(|e| self.malformed(e))
    }

    fn message<'a>(&self, f: &Field<'a>) -> Result<Message<'a>, ImportError> {
        f.message().map_err(|e| self.malformed(e))
    }
}

/// Reads the main graph of the ModelProto in `bytes`.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<OnnxGraph, ImportError> {
    let p = Parser { path };
    let mut out = OnnxGraph { opset: 0, ..Default::default() };
    let mut graph = None;
    let mut opset = None;
    for field in Message::new(bytes, 0).fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        match field.number {
            7 => graph = Some(p.message(&field)?),
            8 => {
                let (mut domain, mut version) = (String::new(), 0i64);
                for f in p.message(&field)?.fields() {
                    let f = f.map_err(|e| p.malformed(e))?;
                    match f.number {
                        1 => domain = p.string(&f)?,
                        2 => version = f.varint().map_err(|e| p.malformed(e))? as i64,
                        _ => {}
                    }
                }
                if domain.is_empty() || domain == "ai.onnx" {
                    opset = Some(version);
                }
            }
            _ => {}
        }
    }
    let graph = graph.ok_or_else(|| ImportError::new(path, "the ONNX model has no graph"))?;
    // A model without an opset_import for the default domain is invalid;
    // opset 1 semantics would be a guess.
    out.opset = opset.ok_or_else(|| {
        ImportError::new(path, "the model declares no opset for the default ONNX domain")
    })?;
    let mut initializers = HashSet::new();
    let mut inputs = Vec::new();
    for field in graph.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        match field.number {
            1 => out.nodes.push(node(&p, p.message(&field)?, 0)?),
            5 => {
                for f in p.message(&field)?.fields() {
                    let f = f.map_err(|e| p.malformed(e))?;
                    if f.number == 8 {
                        initializers.insert(p.string(&f)?);
                    }
                }
            }
            11 => inputs.push(value_info(&p, p.message(&field)?)?),
            12 => {
                let info = value_info(&p, p.message(&field)?)?;
                out.outputs.push(info.name.clone());
                out.declared.push(info);
            }
            13 => out.annotated.push(value_info(&p, p.message(&field)?)?),
            _ => {}
        }
    }
    out.inputs = inputs.into_iter().filter(|i| !initializers.contains(&i.name)).collect();
    Ok(out)
}

fn node(p: &Parser<'_>, msg: Message<'_>, depth: usize) -> Result<Node, ImportError> {
    let mut n = Node {
        name: String::new(),
        op: String::new(),
        domain: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        attrs: Vec::new(),
    };
    for field in msg.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        match field.number {
            1 => n.inputs.push(p.string(&field)?),
            2 => n.outputs.push(p.string(&field)?),
            3 => n.name = p.string(&field)?,
            4 => n.op = p.string(&field)?,
            5 => n.attrs.push(attribute(p, p.message(&field)?, depth)?),
            7 => n.domain = p.string(&field)?,
            _ => {}
        }
    }
    Ok(n)
}

fn attribute(
    p: &Parser<'_>,
    msg: Message<'_>,
    depth: usize,
) -> Result<(String, Attr), ImportError> {
    let mut name = String::new();
    let (mut f, mut i, mut s, mut t, mut graph) = (None, None, None, None, None);
    let (mut floats, mut ints, mut strings) = (Vec::new(), Vec::new(), Vec::new());
    let mut kind = 0u64;
    for field in msg.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        let m = |e| p.malformed(e);
        match field.number {
            1 => name = p.string(&field)?,
            2 => f = Some(f32::from_bits(field.fixed32().map_err(m)?)),
            3 => i = Some(field.varint().map_err(m)? as i64),
            4 => s = Some(String::from_utf8_lossy(field.bytes().map_err(m)?.0).into_owned()),
            5 => t = Some(attr_tensor(p, p.message(&field)?)?),
            6 => graph = Some(subgraph(p, p.message(&field)?, depth + 1)?),
            11 => graph = Some(SubGraph::default()),
            7 => {
                let mut v = Vec::new();
                field.fixed32s(&mut v).map_err(m)?;
                floats.extend(v.into_iter().map(f32::from_bits));
            }
            8 => {
                let mut v = Vec::new();
                field.varints(&mut v).map_err(m)?;
                ints.extend(v.into_iter().map(|x| x as i64));
            }
            9 => strings.push(String::from_utf8_lossy(field.bytes().map_err(m)?.0).into_owned()),
            20 => kind = field.varint().map_err(m)?,
            _ => {}
        }
    }
    // AttributeProto.type says which field holds the value; exporters that
    // leave it 0 put exactly one field.
    let value = match kind {
        1 => Attr::Float(f.unwrap_or(0.0)),
        2 => Attr::Int(i.unwrap_or(0)),
        3 => Attr::String(s.unwrap_or_default()),
        4 => match t {
            Some(t) => Attr::Tensor(t),
            None => {
                return Err(ImportError::new(p.path, format!("attribute '{name}' has no tensor")))
            }
        },
        5 | 10 | 13 => Attr::Graph(std::rc::Rc::new(graph.unwrap_or_default())),
        6 => Attr::Floats(floats),
        7 => Attr::Ints(ints),
        8 => Attr::Strings(strings),
        _ if graph.is_some() => Attr::Graph(std::rc::Rc::new(graph.unwrap_or_default())),
        _ => match (f, i, s, t) {
            (Some(f), _, _, _) => Attr::Float(f),
            (_, Some(i), _, _) => Attr::Int(i),
            (_, _, Some(s), _) => Attr::String(s),
            (_, _, _, Some(t)) => Attr::Tensor(t),
            _ if !floats.is_empty() => Attr::Floats(floats),
            _ if !strings.is_empty() => Attr::Strings(strings),
            _ => Attr::Ints(ints),
        },
    };
    Ok((name, value))
}

/// A (small) tensor held in an attribute: ConstantOfShape's `value`.
fn attr_tensor(p: &Parser<'_>, msg: Message<'_>) -> Result<Const, ImportError> {
    let (mut dims, mut data_type, mut raw, mut typed) = (Vec::new(), 0u64, None, Vec::new());
    for field in msg.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        let m = |e| p.malformed(e);
        match field.number {
            1 => field.varints(&mut dims).map_err(m)?,
            2 => data_type = field.varint().map_err(m)?,
            4 | 5 | 7 | 10 | 11 => typed.push(field),
            9 => raw = Some(field.bytes().map_err(m)?.0),
            14 => return Err(ImportError::new(p.path, "an attribute tensor with external data")),
            _ => {}
        }
    }
    let err = |m: String| ImportError::new(p.path, format!("attribute tensor: {m}"));
    let dtype = onnx_dtype(data_type).map_err(err)?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d as i64).map_err(|_| err(format!("negative dim {}", d as i64))))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = match raw {
        Some(b) => b.to_vec(),
        None => decode_typed(dtype, &typed).map_err(err)?,
    };
    Const::from_le_bytes(dtype, shape, &bytes).map_err(err)
}

fn value_info(p: &Parser<'_>, msg: Message<'_>) -> Result<Input, ImportError> {
    let mut input = Input { name: String::new(), elem_type: 0, dims: None };
    for field in msg.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        match field.number {
            1 => input.name = p.string(&field)?,
            2 => {
                for tf in p.message(&field)?.fields() {
                    let tf = tf.map_err(|e| p.malformed(e))?;
                    if tf.number != 1 {
                        continue; // not a tensor type
                    }
                    for f in p.message(&tf)?.fields() {
                        let f = f.map_err(|e| p.malformed(e))?;
                        match f.number {
                            1 => input.elem_type = f.varint().map_err(|e| p.malformed(e))?,
                            2 => input.dims = Some(shape(p, p.message(&f)?)?),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(input)
}

fn shape(p: &Parser<'_>, msg: Message<'_>) -> Result<Vec<Dim>, ImportError> {
    let mut dims = Vec::new();
    for field in msg.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        if field.number != 1 {
            continue;
        }
        let mut dim = Dim::Unknown;
        for f in p.message(&field)?.fields() {
            let f = f.map_err(|e| p.malformed(e))?;
            match f.number {
                1 => dim = Dim::Fixed(f.varint().map_err(|e| p.malformed(e))? as i64),
                2 => dim = Dim::Param(p.string(&f)?),
                _ => {}
            }
        }
        dims.push(dim);
    }
    Ok(dims)
}

/// A GraphProto attribute's nodes and outputs.
fn subgraph(p: &Parser<'_>, msg: Message<'_>, depth: usize) -> Result<SubGraph, ImportError> {
    if depth > MAX_DEPTH {
        return Err(ImportError::new(p.path, format!("subgraphs nested deeper than {MAX_DEPTH}")));
    }
    let mut g = SubGraph::default();
    for field in msg.fields() {
        let field = field.map_err(|e| p.malformed(e))?;
        match field.number {
            1 => g.nodes.push(node(p, p.message(&field)?, depth)?),
            12 => g.outputs.push(value_info(p, p.message(&field)?)?.name),
            _ => {}
        }
    }
    Ok(g)
}

/// The dtype of an ONNX elem_type for our purposes.
pub(crate) fn dtype_of_code(code: u64) -> Option<Dtype> {
    match onnx_dtype(code).ok()? {
        RawDtype::F32 | RawDtype::F64 | RawDtype::F16 | RawDtype::BF16 => Some(Dtype::Float),
        RawDtype::Bool => Some(Dtype::Bool),
        _ => Some(Dtype::Int),
    }
}
