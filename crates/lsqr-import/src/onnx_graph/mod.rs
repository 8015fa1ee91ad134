//! ONNX graphs into `.lsq` graphs the LSQR runtime runs.
//!
//! [`import_graph`] reads an ONNX model's main graph and returns an
//! [`ImportedGraph`]: layers in the runtime's ops (`lsqr::runtime::OPS`),
//! the tensors they name, and every graph input's fixed shape.
//!
//! With every input shape fixed at import (from the model, or from
//! [`GraphOptions::input_shapes`] for its symbolic dims), every value's
//! shape is known, so:
//!
//! - **Constant folding.** A node whose inputs are all constants is
//!   evaluated here (the shape arithmetic exporters emit: Shape, Gather,
//!   Cast, Range, ConstantOfShape, Expand, Equal, Where, Unsqueeze, Concat,
//!   Slice, ...), and `Shape` of a computed value is a constant.
//! - **Folds into weights.** BatchNormalization after a Conv or Gemm is
//!   folded into its weights and bias; an Add of a constant vector after a
//!   MatMul/Gemm/Conv becomes its bias; MatMul or Gemm with a constant
//!   operand becomes `linear` (its weight is then quantizable).
//! - **Exact fusions.** `x * sigmoid(x)` is `silu`; `x * hardsigmoid(x)`
//!   with alpha 1/6 and beta 1/2 is `hardswish`, and so is
//!   `(x * Clip(x + 3, 0, 6)) / 6`; `Clip(0, 6)` is `relu6`.
//! - **Nothing is approximated.** An op, attribute or input form this
//!   importer does not handle is an error naming the node, its op type and
//!   the opset, not a silent guess.

mod expand;
mod legacy;
mod parse;
mod tensor;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use lsqr::format::{Graph, Layer, Value};

use crate::{ImportError, SourceModel};
use parse::{Attr, Dim, Node, OnnxGraph};
use tensor::{Const, Dtype};

/// What the caller fixes.
#[derive(Debug, Clone, Default)]
pub struct GraphOptions {
    /// Full shapes of graph inputs, by name: they give the values of the
    /// model's symbolic dims (a fixed dim must agree with the model).
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// Graph inputs fixed to a value, by name (row-major, as many values as
    /// the input's shape holds): each becomes a constant and leaves the
    /// graph's inputs, so what it decides is decided at import. A model
    /// that branches on a setting (Silero VAD's sample rate picks one of
    /// two networks with an `If`) imports only the branch it takes.
    pub input_values: Vec<(String, Vec<f64>)>,
}

/// How a tensor of the imported graph is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// The weight of a `linear`, `conv*` layer: the one a quantizer
    /// should compress.
    Weight,
    /// Anything else (biases, norm parameters, constants): kept as f32.
    Constant,
}

/// A tensor of the imported graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphTensor {
    /// Its name, unique in the graph.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
    /// How the graph uses it.
    pub role: TensorRole,
}

/// A model's graph in the runtime's ops.
#[derive(Debug, Clone)]
pub struct ImportedGraph {
    /// The layers, graph inputs and outputs.
    pub graph: Graph,
    /// Each graph input's fixed shape (the runtime reads them from
    /// metadata `input_shape.<name>`).
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// The tensors the layers name.
    pub tensors: Vec<GraphTensor>,
    /// The model's opset (default domain).
    pub opset: i64,
    /// What the import noticed and let pass: a graph output whose shape
    /// differs from the one the model declares (exporters leave stale
    /// declarations; onnxruntime warns and gives the computed shape, as
    /// this import does).
    pub notes: Vec<String>,
}

/// The ONNX ops [`import_graph`] handles (some only when their inputs are
/// constants, as noted in their errors).
pub const SUPPORTED_ONNX_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RNN",
    "Range",
    "Reciprocal",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// Reads the graph of the ONNX model at `path`.
pub fn import_graph(path: &Path, options: &GraphOptions) -> Result<ImportedGraph, ImportError> {
    let model = crate::open(path)?;
    graph_of(&model, options)
}

/// The graph of an ONNX model already opened with [`crate::open`] or
/// [`crate::from_bytes`].
pub fn graph_of(model: &SourceModel, options: &GraphOptions) -> Result<ImportedGraph, ImportError> {
    if model.format != crate::Format::Onnx {
        return Err(ImportError::new(
            &model.path,
            format!("{} files hold no graph this importer reads (ONNX does)", model.format.name()),
        ));
    }
    let bytes = model
        .buffers
        .first()
        .ok_or_else(|| ImportError::new(&model.path, "no input buffer"))?
        .as_slice();
    let onnx = parse::parse(&model.path, bytes)?;
    Converter::new(model, &onnx).run(&onnx, options)
}

/// A value while converting: a constant, or computed by the runtime (its
/// `.lsq` value name and fixed shape).
#[derive(Debug, Clone)]
enum Val {
    Const(Const),
    Dyn { name: String, shape: Vec<usize> },
}

impl Val {
    fn shape(&self) -> &[usize] {
        match self {
            Val::Const(c) => &c.shape,
            Val::Dyn { shape, .. } => shape,
        }
    }
}

struct Converter<'m> {
    model: &'m SourceModel,
    opset: i64,
    /// Tensors of the source model (initializers, Constant outputs).
    sources: HashMap<&'m str, usize>,
    vals: HashMap<String, Val>,
    /// How many nodes read each ONNX value (graph outputs count too).
    uses: HashMap<String, usize>,
    layers: Vec<Layer>,
    tensors: Vec<GraphTensor>,
    /// Every `.lsq` value and tensor name taken.
    taken: HashSet<String>,
    /// `.lsq` value -> the layer that writes it.
    producer: HashMap<String, usize>,
    /// Constants already materialised as `constant` layers, by data.
    materialised: HashMap<*const Vec<f64>, (Vec<usize>, String)>,
    /// Shapes the model declares for its values (fixed dims only count).
    declared: HashMap<String, Vec<Dim>>,
    /// The last `#k` suffix given to each base name.
    suffixes: HashMap<String, usize>,
    /// Elements folding may still produce: 16 per byte of the model plus
    /// 4M, so that a chain of folds cannot make work without bound.
    fold_budget: usize,
    /// Readers of each `.lsq` value among the ONNX nodes (the sum over the
    /// ONNX values it stands for), for the fusions' single-use checks.
    lsq_uses: HashMap<String, usize>,
    /// `linear` weights made from a MatMul's constant operand, by that
    /// constant's data: MatMuls of the same constant (an unrolled
    /// recurrence's steps) share one weight tensor.
    linear_weights: HashMap<*const Vec<f64>, (Vec<usize>, String)>,
    /// See [`ImportedGraph::notes`].
    notes: Vec<String>,
    /// The ONNX element type the model declares for graph inputs and
    /// annotated values (runtime values are all f32; CastLike needs it).
    elem_types: HashMap<String, u64>,
    /// The graph's run-time inputs: (ONNX name, `.lsq` value name).
    graph_inputs: Vec<(String, String)>,
}

type R<T> = Result<T, ImportError>;

fn attr_value<'n>(node: &'n Node, name: &str) -> Option<&'n Attr> {
    node.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Normalises a possibly negative axis.
fn axis_of(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

fn ints(v: &[usize]) -> Value {
    Value::IntList(v.iter().map(|&d| d as i64).collect())
}

/// Element count, saturating (shapes are checked where they are made;
/// this must not panic on a hostile one before that).
fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// Largest dim and element count a computed value may have: far beyond
/// any model (a 2^40-element activation is 4 TiB), and small enough that
/// the shape arithmetic on them (sums of products of two dims or
/// attributes) cannot overflow.
const MAX_VALUE_DIM: usize = 1 << 32;
const MAX_VALUE_ELEMENTS: usize = 1 << 40;
/// Largest stride, dilation or pad an attribute may give.
const MAX_SPATIAL_ATTR: i64 = 1 << 31;

fn check_value_shape(shape: &[usize]) -> Result<(), String> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if shape.iter().any(|&d| d > MAX_VALUE_DIM) || count.is_none_or(|n| n > MAX_VALUE_ELEMENTS) {
        return Err(format!("has shape {shape:?}: too large to compute"));
    }
    Ok(())
}

/// A constant's single value (Range bounds, Clip bounds): an error, not a
/// panic, when it has none or several.
fn scalar_of(c: &Const, what: &str) -> Result<f64, String> {
    match c.data.as_slice() {
        [v] => Ok(*v),
        _ => Err(format!("{what} must hold one value, it holds {}", c.len())),
    }
}

impl<'m> Converter<'m> {
    fn new(model: &'m SourceModel, onnx: &OnnxGraph) -> Self {
        let sources = model.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
        let mut uses: HashMap<String, usize> = HashMap::new();
        // Reads from inside subgraphs (If branches) count too.
        fn count(nodes: &[Node], uses: &mut HashMap<String, usize>) {
            for n in nodes {
                for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                    *uses.entry(i.clone()).or_default() += 1;
                }
                for (_, a) in &n.attrs {
                    if let Attr::Graph(g) = a {
                        count(&g.nodes, uses);
                        for o in &g.outputs {
                            *uses.entry(o.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
        count(&onnx.nodes, &mut uses);
        for o in &onnx.outputs {
            *uses.entry(o.clone()).or_default() += 1;
        }
        Converter {
            model,
            opset: onnx.opset,
            sources,
            vals: HashMap::new(),
            uses,
            layers: Vec::new(),
            tensors: Vec::new(),
            taken: HashSet::new(),
            producer: HashMap::new(),
            materialised: HashMap::new(),
            suffixes: HashMap::new(),
            fold_budget: model
                .buffers
                .iter()
                .map(|b| b.as_slice().len())
                .sum::<usize>()
                .saturating_mul(16)
                .saturating_add(1 << 22),
            lsq_uses: HashMap::new(),
            declared: onnx
                .declared
                .iter()
                .filter_map(|d| Some((d.name.clone(), d.dims.clone()?)))
                .collect(),
            linear_weights: HashMap::new(),
            graph_inputs: Vec::new(),
            notes: Vec::new(),
            elem_types: onnx
                .inputs
                .iter()
                .chain(&onnx.declared)
                .chain(&onnx.annotated)
                .filter(|d| d.elem_type != 0)
                .map(|d| (d.name.clone(), d.elem_type))
                .collect(),
        }
    }

    fn err(&self, message: impl Into<String>) -> ImportError {
        ImportError::new(&self.model.path, message)
    }

    fn node_err(&self, node: &Node, message: impl std::fmt::Display) -> ImportError {
        let name = if node.name.is_empty() {
            let first = node.outputs.iter().find(|o| !o.is_empty()).or(node.outputs.first());
            first.map_or(String::new(), |o| format!("producing '{o}'"))
        } else {
            format!("'{}'", node.name)
        };
        self.err(format!("node {name} ({}, opset {}): {message}", node.op, self.opset))
    }

    fn run(mut self, onnx: &OnnxGraph, options: &GraphOptions) -> R<ImportedGraph> {
        let input_shapes = self.inputs(onnx, options)?;
        for node in self.order(onnx)? {
            self.node(node).map_err(|e| {
                if e.message.starts_with("node ") {
                    e
                } else {
                    self.node_err(node, &e.message)
                }
            })?;
        }
        let mut outputs = Vec::new();
        for o in &onnx.outputs {
            outputs.push(self.output(o)?);
        }
        let graph = Graph {
            inputs: input_shapes.iter().map(|(n, _)| n.clone()).collect(),
            outputs,
            layers: std::mem::take(&mut self.layers),
        };
        let mut tensors = std::mem::take(&mut self.tensors);
        let mut graph = graph;
        fuse_layer_norms(&mut graph, &mut tensors);
        let (graph, tensors) = prune(graph, tensors);
        let notes = std::mem::take(&mut self.notes);
        Ok(ImportedGraph { graph, input_shapes, tensors, opset: self.opset, notes })
    }

    /// Fixes every graph input's shape.
    fn inputs(&mut self, onnx: &OnnxGraph, options: &GraphOptions) -> R<Vec<(String, Vec<usize>)>> {
        let named = options.input_shapes.iter().map(|(n, _)| ("--input-shape", n));
        let valued = options.input_values.iter().map(|(n, _)| ("--input-value", n));
        for (flag, name) in named.chain(valued) {
            if !onnx.inputs.iter().any(|i| &i.name == name) {
                let known: Vec<&str> = onnx.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(self.err(format!(
                    "{flag} names '{name}', which is not a graph input (inputs: {})",
                    known.join(", ")
                )));
            }
        }
        let mut out = Vec::new();
        for input in &onnx.inputs {
            let given = options.input_shapes.iter().find(|(n, _)| n == &input.name).map(|(_, s)| s);
            let err = |m: String| self.err(format!("graph input '{}': {m}", input.name));
            let shape = match (&input.dims, given) {
                (None, None) => {
                    return Err(err("has no declared shape: give it with --input-shape".into()))
                }
                (None, Some(g)) => g.clone(),
                (Some(dims), given) => {
                    if let Some(g) = given {
                        if g.len() != dims.len() {
                            return Err(err(format!(
                                "has rank {}, --input-shape gives {} dims",
                                dims.len(),
                                g.len()
                            )));
                        }
                    }
                    // What to write: the fixed dims as they are, the others named.
                    let template = dims
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(v) if *v >= 0 => v.to_string(),
                            Dim::Param(p) => format!("<{p}>"),
                            _ => "<?>".to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(",");
                    let mut shape = Vec::new();
                    for (i, d) in dims.iter().enumerate() {
                        let g = given.map(|g| g[i]);
                        shape.push(match (d, g) {
                            (Dim::Fixed(v), Some(g)) if *v >= 0 && *v as usize != g => {
                                return Err(err(format!(
                                    "dim {i} is {v} in the model, --input-shape says {g}"
                                )))
                            }
                            (Dim::Fixed(v), _) if *v >= 0 => *v as usize,
                            (_, Some(g)) => g,
                            (Dim::Param(p), None) => {
                                return Err(err(format!(
                                    "dim {i} is symbolic ('{p}'): give the input's shape with \
                                     --input-shape {}={template}",
                                    input.name
                                )))
                            }
                            _ => {
                                return Err(err(format!(
                                    "dim {i} is unknown: give the input's shape with \
                                     --input-shape {}={template}",
                                    input.name
                                )))
                            }
                        });
                    }
                    shape
                }
            };
            if input.elem_type != 0 && parse::dtype_of_code(input.elem_type).is_none() {
                return Err(err(format!("has unsupported element type {}", input.elem_type)));
            }
            let bad_name =
                input.name.is_empty() || input.name.len() > 4000 || input.name.contains('\0');
            if bad_name {
                return Err(err("its name is not a valid .lsq value name".into()));
            }
            if let Some((_, values)) = options.input_values.iter().find(|(n, _)| n == &input.name) {
                let dtype = parse::dtype_of_code(input.elem_type).unwrap_or(Dtype::Float);
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(err("--input-value gives a value that is not finite".into()));
                }
                let c = Const::new(dtype, shape, values.clone())
                    .map_err(|m| err(format!("--input-value gives {m}")))?;
                self.vals.insert(input.name.clone(), Val::Const(c));
                continue;
            }
            let name = self.claim(&input.name);
            self.graph_inputs.push((input.name.clone(), name.clone()));
            self.vals.insert(input.name.clone(), Val::Dyn { name, shape: shape.clone() });
            out.push((input.name.clone(), shape));
        }
        Ok(out)
    }

    /// The nodes in an order where every input is produced before it is
    /// read (ONNX requires topological order; exporters mostly comply).
    /// A cycle or an input nothing produces is an error.
    fn order<'g>(&self, onnx: &'g OnnxGraph) -> R<Vec<&'g Node>> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut available: HashSet<&str> = onnx.inputs.iter().map(|i| i.name.as_str()).collect();
        available.extend(self.sources.keys().copied());
        // Which node produces each value (the first, if several claim it).
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (k, n) in onnx.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                producer.entry(o.as_str()).or_insert(k);
            }
        }
        // Kahn's algorithm, smallest index first: a sorted graph keeps its
        // order, and the work is linear in the edges (a hostile model of
        // many nodes in reverse order must not take quadratic time).
        let mut waiting = vec![0usize; onnx.nodes.len()];
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); onnx.nodes.len()];
        for (k, n) in onnx.nodes.iter().enumerate() {
            // A Constant's value is in `sources` under its output name.
            if n.op == "Constant" {
                continue;
            }
            for i in n.inputs.iter().filter(|i| !i.is_empty() && !available.contains(i.as_str())) {
                match producer.get(i.as_str()) {
                    Some(&p) => {
                        waiting[k] += 1;
                        readers[p].push(k);
                    }
                    None => return Err(self.node_err(n, format!("input '{i}' is never produced"))),
                }
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..onnx.nodes.len()).filter(|&k| waiting[k] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(onnx.nodes.len());
        while let Some(Reverse(k)) = ready.pop() {
            order.push(&onnx.nodes[k]);
            for &r in &readers[k] {
                waiting[r] -= 1;
                if waiting[r] == 0 {
                    ready.push(Reverse(r));
                }
            }
        }
        if order.len() < onnx.nodes.len() {
            let stuck: Vec<&Node> =
                (0..onnx.nodes.len()).filter(|&k| waiting[k] > 0).map(|k| &onnx.nodes[k]).collect();
            let names: Vec<String> = stuck
                .iter()
                .take(5)
                .map(|n| if n.name.is_empty() { n.op.clone() } else { n.name.clone() })
                .collect();
            return Err(self.err(format!(
                "the graph has a cycle: nodes {} (and {} more) wait on each other",
                names.join(", "),
                stuck.len().saturating_sub(5)
            )));
        }
        for o in &onnx.outputs {
            if !available.contains(o.as_str()) && !producer.contains_key(o.as_str()) {
                return Err(self.err(format!("graph output '{o}' is never produced")));
            }
        }
        Ok(order)
    }

    // ------------------------------------------------------------ values

    /// A unique `.lsq` name based on `base`.
    fn claim(&mut self, base: &str) -> String {
        let mut base: String = base.chars().filter(|&c| c != '\0').take(4000).collect();
        if base.is_empty() {
            base = "v".into();
        }
        let mut name = base.clone();
        // Counting on from the last suffix this base got keeps many
        // same-named values linear, not quadratic.
        let k = self.suffixes.entry(base.clone()).or_insert(0);
        while self.taken.contains(&name) {
            *k += 1;
            name = format!("{base}#{k}");
        }
        self.taken.insert(name.clone());
        name
    }

    /// The value `name` (a computed value, or a constant tensor of the
    /// model); `None` for an absent optional input.
    fn get(&mut self, name: &str) -> R<Option<Val>> {
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(v) = self.vals.get(name) {
            return Ok(Some(v.clone()));
        }
        let Some(&i) = self.sources.get(name) else {
            return Err(self.err(format!("value '{name}' is never produced")));
        };
        let t = &self.model.tensors[i];
        let bytes = self.model.bytes(t)?;
        let c = Const::from_le_bytes(t.dtype, t.shape.clone(), &bytes)
            .map_err(|m| ImportError::tensor(&self.model.path, name, m))?;
        self.vals.insert(name.to_string(), Val::Const(c.clone()));
        Ok(Some(Val::Const(c)))
    }

    fn input(&mut self, node: &Node, k: usize) -> R<Option<Val>> {
        match node.inputs.get(k) {
            Some(name) => self.get(name),
            None => Ok(None),
        }
    }

    fn need(&mut self, node: &Node, k: usize) -> R<Val> {
        self.input(node, k)?.ok_or_else(|| self.node_err(node, format!("input {k} is missing")))
    }

    fn need_const(&mut self, node: &Node, k: usize, what: &str) -> R<Const> {
        match self.need(node, k)? {
            Val::Const(c) => Ok(c),
            Val::Dyn { .. } => Err(self.node_err(
                node,
                format!("input {k} ({what}) is computed at run time; it must be a constant"),
            )),
        }
    }

    fn opt_const(&mut self, node: &Node, k: usize, what: &str) -> R<Option<Const>> {
        match self.input(node, k)? {
            None => Ok(None),
            Some(Val::Const(c)) => Ok(Some(c)),
            Some(Val::Dyn { .. }) => Err(self.node_err(
                node,
                format!("input {k} ({what}) is computed at run time; it must be a constant"),
            )),
        }
    }

    fn set(&mut self, node: &Node, k: usize, v: Val) -> R<()> {
        let name = node.outputs.get(k).ok_or_else(|| self.node_err(node, "missing output"))?;
        if let Val::Dyn { shape, .. } = &v {
            check_value_shape(shape)
                .map_err(|m| self.node_err(node, format!("output '{name}' {m}")))?;
        }
        if let Val::Const(c) = &v {
            tensor::numel(&c.shape).map_err(|m| self.node_err(node, m))?;
            // Constants are read, reshaped or computed; each costs its size
            // once (a Constant node or an Identity passes one along).
            self.fold_budget = self.fold_budget.checked_sub(c.len()).ok_or_else(|| {
                self.node_err(
                    node,
                    "folding the graph's constants takes more work than the model's size allows",
                )
            })?;
        }
        if let Some(dims) = self.declared.get(name) {
            let shape = v.shape();
            let agrees = dims.len() == shape.len()
                && dims
                    .iter()
                    .zip(shape)
                    .all(|(d, &s)| !matches!(d, Dim::Fixed(f) if *f >= 0 && *f as usize != s));
            if !agrees {
                let declared: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(f) if *f >= 0 => f.to_string(),
                        Dim::Param(p) => p.clone(),
                        _ => "?".into(),
                    })
                    .collect();
                self.notes.push(format!(
                    "graph output '{name}' has shape {shape:?}; the model declares [{}] \
                     (onnxruntime gives the computed shape too)",
                    declared.join(", ")
                ));
            }
        }
        if let Val::Dyn { name: lsq, .. } = &v {
            *self.lsq_uses.entry(lsq.clone()).or_default() += self.uses(name);
        }
        self.vals.insert(name.clone(), v);
        Ok(())
    }

    /// Adds a tensor; returns its name.
    fn tensor(
        &mut self,
        base: &str,
        shape: Vec<usize>,
        data: Vec<f32>,
        role: TensorRole,
    ) -> String {
        let name = self.claim(base);
        self.tensors.push(GraphTensor { name: name.clone(), shape, data, role });
        name
    }

    /// The `.lsq` value of `v`, materialising a constant as a `constant`
    /// layer (once per constant).
    fn dyn_name(&mut self, v: &Val, hint: &str) -> String {
        match v {
            Val::Dyn { name, .. } => name.clone(),
            Val::Const(c) => {
                let key = Rc::as_ptr(&c.data);
                if let Some((shape, name)) = self.materialised.get(&key) {
                    if shape == &c.shape {
                        return name.clone();
                    }
                }
                let t = self.tensor(
                    &format!("{hint}.const"),
                    c.shape.clone(),
                    c.to_f32s(),
                    TensorRole::Constant,
                );
                let out = self.claim(&format!("{hint}.const"));
                self.push_layer("constant", vec![], vec![t], vec![], &out);
                self.materialised.insert(key, (c.shape.clone(), out.clone()));
                out
            }
        }
    }

    fn push_layer(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        weights: Vec<String>,
        attrs: Vec<(&str, Value)>,
        out: &str,
    ) -> usize {
        let i = self.layers.len();
        self.layers.push(Layer {
            op: op.into(),
            inputs,
            outputs: vec![out.to_string()],
            weights,
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
        self.producer.insert(out.to_string(), i);
        i
    }

    /// Emits a layer computing ONNX output `k` of `node` (shape `shape`).
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        node: &Node,
        k: usize,
        op: &str,
        inputs: Vec<String>,
        weights: Vec<String>,
        attrs: Vec<(&str, Value)>,
        shape: Vec<usize>,
    ) -> R<String> {
        let onnx_name = node.outputs.get(k).ok_or_else(|| self.node_err(node, "missing output"))?;
        let out = self.claim(onnx_name);
        self.push_layer(op, inputs, weights, attrs, &out);
        self.set(node, k, Val::Dyn { name: out.clone(), shape })?;
        Ok(out)
    }

    /// Emits an intermediate layer (not an ONNX value).
    fn emit_tmp(
        &mut self,
        hint: &str,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, Value)>,
    ) -> String {
        let out = self.claim(&format!("{hint}#{op}"));
        self.push_layer(op, inputs, vec![], attrs, &out);
        out
    }

    /// A graph output's `.lsq` value: outputs keep their ONNX names.
    fn output(&mut self, name: &str) -> R<String> {
        let v =
            self.get(name)?.ok_or_else(|| self.err(format!("graph output '{name}' is empty")))?;
        match &v {
            Val::Dyn { name: n, .. } if n == name => Ok(n.clone()),
            _ => {
                let src = self.dyn_name(&v, name);
                let out = self.claim(name);
                let shape = v.shape().to_vec();
                self.push_layer("reshape", vec![src], vec![], vec![("shape", ints(&shape))], &out);
                Ok(out)
            }
        }
    }

    fn uses(&self, onnx_value: &str) -> usize {
        self.uses.get(onnx_value).copied().unwrap_or(0)
    }

    // ------------------------------------------------------------ attributes

    fn attr_int(&self, node: &Node, name: &str, default: i64) -> R<i64> {
        match attr_value(node, name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(other) => {
                Err(self.node_err(node, format!("attribute {name} must be an int, got {other:?}")))
            }
        }
    }

    fn attr_float(&self, node: &Node, name: &str, default: f32) -> R<f32> {
        match attr_value(node, name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(other) => {
                Err(self.node_err(node, format!("attribute {name} must be a float, got {other:?}")))
            }
        }
    }

    fn attr_str(&self, node: &Node, name: &str, default: &str) -> R<String> {
        match attr_value(node, name) {
            None => Ok(default.to_string()),
            Some(Attr::String(v)) => Ok(v.clone()),
            Some(other) => {
                Err(self
                    .node_err(node, format!("attribute {name} must be a string, got {other:?}")))
            }
        }
    }

    fn attr_ints(&self, node: &Node, name: &str) -> R<Option<Vec<i64>>> {
        match attr_value(node, name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => {
                Err(self.node_err(node, format!("attribute {name} must be ints, got {other:?}")))
            }
        }
    }

    /// Rejects attributes the conversion does not read, so that none is
    /// silently ignored.
    fn allow(&self, node: &Node, known: &[&str]) -> R<()> {
        for (k, _) in &node.attrs {
            if !known.contains(&k.as_str()) {
                return Err(self.node_err(
                    node,
                    format!(
                        "attribute '{k}' is not supported (supported: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Axes from an attribute (older opsets) or an input (newer ones),
    /// normalised and sorted; `None` when neither is given.
    fn axes(
        &mut self,
        node: &Node,
        input: usize,
        from_opset: i64,
        rank: usize,
    ) -> R<Option<Vec<usize>>> {
        let raw = if self.opset >= from_opset {
            self.opt_const(node, input, "axes")?.map(|c| c.to_i64s())
        } else {
            self.attr_ints(node, "axes")?
        };
        let Some(raw) = raw else { return Ok(None) };
        self.axis_list(node, &raw, rank).map(Some)
    }

    // ------------------------------------------------------------ nodes

    fn node(&mut self, node: &Node) -> R<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(self.node_err(
                node,
                format!("domain '{}' is not supported (only the default ONNX domain)", node.domain),
            ));
        }
        if node.op == "If" && node.domain.is_empty() {
            return self.if_op(node);
        }
        if node.attrs.iter().any(|(_, a)| matches!(a, Attr::Graph(_))) {
            return Err(self.node_err(node, "subgraphs (Loop, Scan) are not supported"));
        }
        if self.opset < 7 && self.legacy(node)? {
            return Ok(());
        }
        // Recurrences may leave Y out and keep only their final states.
        let optional_first = matches!(node.op.as_str(), "LSTM" | "GRU" | "RNN");
        if node.outputs.first().is_none_or(String::is_empty)
            && !(optional_first && node.outputs.iter().any(|o| !o.is_empty()))
        {
            return Err(self.node_err(node, "has no output"));
        }
        match node.op.as_str() {
            "Constant" => {
                let name = node.outputs.first().cloned().unwrap_or_default();
                let v = self.get(&name)?.ok_or_else(|| self.node_err(node, "has no value"))?;
                self.vals.insert(name, v);
                Ok(())
            }
            "Identity" | "Dropout" => {
                self.allow(node, &["ratio", "seed"])?;
                let v = self.need(node, 0)?;
                // In training mode Dropout zeroes random elements: only a
                // constant false (or a ratio of 0) is the identity.
                if node.op == "Dropout" && node.inputs.get(2).is_some_and(|t| !t.is_empty()) {
                    let training = self.need_const(node, 2, "training_mode")?;
                    let ratio = match self.opt_const(node, 1, "ratio")? {
                        Some(r) => scalar_of(&r, "ratio").map_err(|m| self.node_err(node, m))?,
                        None => 0.5,
                    };
                    if training.data.iter().any(|&t| t != 0.0) && ratio != 0.0 {
                        return Err(self.node_err(
                            node,
                            "training_mode is true: random dropout is not supported",
                        ));
                    }
                }
                // Older exporters (Caffe2, opset <= 9) declare the mask even
                // where nothing reads it; at inference it keeps every element.
                let mask = node.outputs.get(1).filter(|m| node.op == "Dropout" && !m.is_empty());
                if mask.is_some_and(|m| self.uses(m) > 0) {
                    let n = tensor::numel(v.shape()).map_err(|m| self.node_err(node, m))?;
                    let ones = Const::new(Dtype::Bool, v.shape().to_vec(), vec![1.0; n])
                        .map_err(|m| self.node_err(node, m))?;
                    self.set(node, 1, Val::Const(ones))?;
                }
                self.set(node, 0, v)
            }
            "Cast" => self.cast(node),
            "Shape" => self.shape_op(node),
            "Size" => {
                let v = self.need(node, 0)?;
                self.set(
                    node,
                    0,
                    Val::Const(
                        Const::new(Dtype::Int, vec![], vec![numel(v.shape()) as f64])
                            .map_err(|m| self.node_err(node, m))?,
                    ),
                )
            }
            "ConstantOfShape" => {
                self.allow(node, &["value"])?;
                let shape = self.need_const(node, 0, "shape")?.to_i64s();
                let shape: Vec<usize> = shape
                    .iter()
                    .map(|&d| {
                        usize::try_from(d)
                            .map_err(|_| self.node_err(node, format!("negative dim {d}")))
                    })
                    .collect::<R<_>>()?;
                let (dtype, v) = match attr_value(node, "value") {
                    Some(Attr::Tensor(t)) if t.len() == 1 => (t.dtype, t.data[0]),
                    None => (Dtype::Float, 0.0),
                    _ => return Err(self.node_err(node, "value must be a one-element tensor")),
                };
                let n = tensor::grown(&shape, 1).map_err(|m| self.node_err(node, m))?;
                let c = Const::new(dtype, shape, vec![v; n]).map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(c))
            }
            "Range" => {
                let [s, l, d] = [0, 1, 2].map(|k| self.need_const(node, k, "start/limit/delta"));
                let (s, l, d) = (s?, l?, d?);
                let one = |c: &Const, w: &str| scalar_of(c, w).map_err(|m| self.node_err(node, m));
                let (start, limit, delta) =
                    (one(&s, "start")?, one(&l, "limit")?, one(&d, "delta")?);
                if delta == 0.0 || !delta.is_finite() {
                    return Err(self.node_err(node, "delta must be finite and non-zero"));
                }
                let n = ((limit - start) / delta).ceil().max(0.0);
                if n > tensor::MAX_GROWN_ELEMENTS as f64 {
                    return Err(self.node_err(node, "the range is too long"));
                }
                let data = (0..n as usize).map(|i| start + i as f64 * delta).collect();
                let c = Const::new(s.dtype, vec![n as usize], data)
                    .map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(c))
            }
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Reciprocal" | "Neg" | "Abs"
            | "Erf" | "Floor" | "Ceil" | "Round" | "Sign" | "Softplus" | "Sin" | "Cos" | "Not"
            | "HardSwish" => {
                self.allow(node, &[])?;
                let op = match node.op.as_str() {
                    "HardSwish" => "hardswish".to_string(),
                    other => other.to_ascii_lowercase(),
                };
                self.unary(node, &op, vec![])
            }
            "HardSigmoid" => {
                self.allow(node, &["alpha", "beta"])?;
                let alpha = self.attr_float(node, "alpha", 0.2)?;
                let beta = self.attr_float(node, "beta", 0.5)?;
                self.unary(
                    node,
                    "hardsigmoid",
                    vec![
                        ("alpha", Value::Float(alpha as f64)),
                        ("beta", Value::Float(beta as f64)),
                    ],
                )
            }
            "LeakyRelu" | "Elu" => {
                self.allow(node, &["alpha"])?;
                let default = if node.op == "Elu" { 1.0 } else { 0.01 };
                let alpha = self.attr_float(node, "alpha", default)?;
                let op = if node.op == "Elu" { "elu" } else { "leaky_relu" };
                self.unary(node, op, vec![("alpha", Value::Float(alpha as f64))])
            }
            "Gelu" => {
                self.allow(node, &["approximate"])?;
                let op = match self.attr_str(node, "approximate", "none")?.as_str() {
                    "none" => "gelu",
                    "tanh" => "gelu_tanh",
                    other => {
                        return Err(
                            self.node_err(node, format!("approximate '{other}' is not supported"))
                        )
                    }
                };
                self.unary(node, op, vec![])
            }
            "Clip" => self.clip(node),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater"
            | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Mod" => {
                let op = match node.op.as_str() {
                    "LessOrEqual" => "less_or_equal",
                    "GreaterOrEqual" => "greater_or_equal",
                    "And" => "mul",
                    "Or" => "max",
                    "Mod" => {
                        self.allow(node, &["fmod"])?;
                        if self.attr_int(node, "fmod", 0)? == 1 {
                            "fmod"
                        } else {
                            "mod"
                        }
                    }
                    _ => "",
                };
                if node.op != "Mod" {
                    self.allow(node, &[])?;
                }
                let op = if op.is_empty() { node.op.to_ascii_lowercase() } else { op.to_string() };
                self.binary(node, &op)
            }
            "Max" | "Min" | "Sum" | "Mean" => self.variadic(node),
            "Where" => self.where_op(node),
            "MatMul" => self.matmul(node),
            "Gemm" => self.gemm(node),
            "Conv" => self.conv(node),
            "ConvTranspose" => self.conv_transpose(node),
            "BatchNormalization" => self.batch_norm(node),
            "LayerNormalization" => self.layer_norm(node),
            "MaxPool" | "AveragePool" => self.pool(node),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                self.allow(node, &[])?;
                let x = self.need(node, 0)?;
                let s = x.shape().to_vec();
                if s.len() < 3 {
                    return Err(
                        self.node_err(node, format!("input has shape {s:?}, expected [n, c, ...]"))
                    );
                }
                let mut out = s.clone();
                out[2..].iter_mut().for_each(|d| *d = 1);
                let op =
                    if node.op == "GlobalMaxPool" { "global_max_pool" } else { "global_avg_pool" };
                let xn = self.dyn_name(&x, &node.outputs[0]);
                self.emit(node, 0, op, vec![xn], vec![], vec![], out).map(drop)
            }
            "Softmax" | "LogSoftmax" => self.softmax(node),
            "ArgMax" | "ArgMin" => self.arg_extreme(node),
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
            | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSumExp" => self.reduce(node),
            "Transpose" => self.transpose(node),
            "Reshape" => self.reshape(node),
            "Flatten" => {
                self.allow(node, &["axis"])?;
                let x = self.need(node, 0)?;
                let s = x.shape().to_vec();
                let a = self.attr_int(node, "axis", 1)?;
                let a = if a == s.len() as i64 {
                    s.len()
                } else {
                    axis_of(a, s.len())
                        .ok_or_else(|| self.node_err(node, format!("axis {a} out of range")))?
                };
                let out = vec![numel(&s[..a]), numel(&s[a..])];
                self.reshape_to(node, x, out)
            }
            "Squeeze" => {
                self.allow(node, &["axes"])?;
                let x = self.need(node, 0)?;
                let s = x.shape().to_vec();
                let axes = self
                    .axes(node, 1, 13, s.len())?
                    .unwrap_or_else(|| (0..s.len()).filter(|&k| s[k] == 1).collect());
                if let Some(&a) = axes.iter().find(|&&a| s[a] != 1) {
                    return Err(self.node_err(node, format!("axis {a} has size {}, not 1", s[a])));
                }
                let out = (0..s.len()).filter(|k| !axes.contains(k)).map(|k| s[k]).collect();
                self.reshape_to(node, x, out)
            }
            "Unsqueeze" => {
                self.allow(node, &["axes"])?;
                let x = self.need(node, 0)?;
                let s = x.shape().to_vec();
                let rank = s.len() + self.axes_len(node)?;
                let axes = self
                    .axes(node, 1, 13, rank)?
                    .ok_or_else(|| self.node_err(node, "axes are required"))?;
                let mut it = s.iter();
                let out = (0..rank)
                    .map(|k| if axes.contains(&k) { 1 } else { *it.next().unwrap_or(&1) })
                    .collect();
                self.reshape_to(node, x, out)
            }
            "Expand" => self.expand(node),
            "Tile" => self.tile(node),
            "Concat" => self.concat(node),
            "Split" => self.split(node),
            "Slice" => self.slice(node),
            "Gather" => self.gather(node),
            "Pad" => self.pad(node),
            "Resize" | "Upsample" => self.resize(node),
            op if expand::EXPANDED_OPS.contains(&op) => self.by_expansion(node),
            _ => Err(self.node_err(
                node,
                format!("op is not supported (supported ops: {})", SUPPORTED_ONNX_OPS.join(", ")),
            )),
        }
    }

    fn axes_len(&mut self, node: &Node) -> R<usize> {
        Ok(if self.opset >= 13 {
            self.opt_const(node, 1, "axes")?.map_or(0, |c| c.len())
        } else {
            self.attr_ints(node, "axes")?.map_or(0, |v| v.len())
        })
    }

    fn cast(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["to", "saturate"])?;
        let to = self.attr_int(node, "to", 1)? as u64;
        let dtype = parse::dtype_of_code(to)
            .ok_or_else(|| self.node_err(node, format!("cannot cast to element type {to}")))?;
        match self.need(node, 0)? {
            Val::Const(c) => self.set(node, 0, Val::Const(c.cast(dtype))),
            v @ Val::Dyn { .. } => match dtype {
                // Runtime values are f32 already.
                Dtype::Float => self.set(node, 0, v),
                Dtype::Int => self.unary_dyn(node, v, "trunc", vec![]),
                Dtype::Bool => {
                    let name = self.dyn_name(&v, &node.outputs[0]);
                    let shape = v.shape().to_vec();
                    let t = self.emit_tmp(&node.outputs[0], "not", vec![name], vec![]);
                    self.emit(node, 0, "not", vec![t], vec![], vec![], shape).map(drop)
                }
            },
        }
    }

    fn shape_op(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["start", "end"])?;
        let s = self.need(node, 0)?.shape().to_vec();
        let r = s.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(self.attr_int(node, "start", 0)?);
        let end = clamp(self.attr_int(node, "end", r)?);
        let dims: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
        self.set(node, 0, Val::Const(Const::ints(&dims)))
    }

    /// Folds `f` over constant inputs; `None` if any input is computed.
    fn fold(
        &mut self,
        node: &Node,
        vals: &[Val],
        dtype: Option<Dtype>,
        f: impl Fn(&[f64]) -> f64,
    ) -> R<bool> {
        let consts: Option<Vec<&Const>> =
            vals.iter().map(|v| if let Val::Const(c) = v { Some(c) } else { None }).collect();
        let Some(consts) = consts else { return Ok(false) };
        let dtype = dtype.unwrap_or_else(|| {
            if consts.iter().any(|c| c.dtype == Dtype::Float) {
                Dtype::Float
            } else {
                consts[0].dtype
            }
        });
        let c = tensor::elementwise(&consts, dtype, f).map_err(|m| self.node_err(node, m))?;
        self.set(node, 0, Val::Const(c))?;
        Ok(true)
    }

    fn unary(&mut self, node: &Node, op: &str, attrs: Vec<(&str, Value)>) -> R<()> {
        let x = self.need(node, 0)?;
        if let Val::Const(_) = x {
            let f =
                unary_fn(op, &attrs).ok_or_else(|| self.node_err(node, "cannot fold this op"))?;
            let dtype = if op == "not" { Some(Dtype::Bool) } else { None };
            self.fold(node, &[x], dtype, |a| f(a[0]))?;
            return Ok(());
        }
        self.unary_dyn(node, x, op, attrs)
    }

    fn unary_dyn(&mut self, node: &Node, x: Val, op: &str, attrs: Vec<(&str, Value)>) -> R<()> {
        let shape = x.shape().to_vec();
        // x * sigmoid(x) and x * hardsigmoid(x) are fused when the Mul comes.
        let name = self.dyn_name(&x, &node.outputs[0]);
        self.emit(node, 0, op, vec![name], vec![], attrs, shape).map(drop)
    }

    fn clip(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["min", "max"])?;
        let x = self.need(node, 0)?;
        let (lo, hi) = if self.opset < 11 {
            (
                self.attr_float(node, "min", f32::NEG_INFINITY)?,
                self.attr_float(node, "max", f32::INFINITY)?,
            )
        } else {
            for k in [1, 2] {
                if matches!(self.input(node, k)?, Some(Val::Dyn { .. })) {
                    return self.by_expansion(node);
                }
            }
            let lo = match self.opt_const(node, 1, "min")? {
                None => f32::NEG_INFINITY,
                Some(c) => scalar_of(&c, "min").map_err(|m| self.node_err(node, m))? as f32,
            };
            let hi = match self.opt_const(node, 2, "max")? {
                None => f32::INFINITY,
                Some(c) => scalar_of(&c, "max").map_err(|m| self.node_err(node, m))? as f32,
            };
            (lo, hi)
        };
        if let Val::Const(_) = x {
            let (lo, hi) = (lo as f64, hi as f64);
            self.fold(
                node,
                &[x],
                None,
                |a| if a[0].is_nan() { a[0] } else { a[0].max(lo).min(hi) },
            )?;
            return Ok(());
        }
        match (lo, hi) {
            (0.0, 6.0) => self.unary_dyn(node, x, "relu6", vec![]),
            (0.0, f32::INFINITY) => self.unary_dyn(node, x, "relu", vec![]),
            _ => self.unary_dyn(
                node,
                x,
                "clip",
                vec![("min", Value::Float(lo as f64)), ("max", Value::Float(hi as f64))],
            ),
        }
    }

    fn binary(&mut self, node: &Node, op: &str) -> R<()> {
        let a = self.need(node, 0)?;
        let b = self.need(node, 1)?;
        let f = binary_fn(op).ok_or_else(|| self.node_err(node, "cannot fold this op"))?;
        let cmp = matches!(op, "equal" | "less" | "greater" | "less_or_equal" | "greater_or_equal");
        if self
            .fold(node, &[a.clone(), b.clone()], cmp.then_some(Dtype::Bool), |v| f(v[0], v[1]))?
        {
            return Ok(());
        }
        let shape =
            tensor::broadcast(&[a.shape(), b.shape()]).map_err(|m| self.node_err(node, m))?;
        if op == "mul"
            && (self.fuse_gate(node, &a, &b, &shape)? || self.fuse_scale(node, &a, &b, &shape)?)
        {
            return Ok(());
        }
        if op == "add" && self.fuse_bias(node, &a, &b, &shape)? {
            return Ok(());
        }
        if op == "div" && self.fuse_hardswish(node, &a, &b, &shape)? {
            return Ok(());
        }
        let an = self.dyn_name(&a, &node.outputs[0]);
        let bn = self.dyn_name(&b, &node.outputs[0]);
        self.emit(node, 0, op, vec![an, bn], vec![], vec![], shape).map(drop)
    }

    /// `x * sigmoid(x)` -> silu, `x * hardsigmoid(x)` (1/6, 1/2) -> hardswish:
    /// the gate layer is rewritten in place to write the product.
    fn fuse_gate(&mut self, node: &Node, a: &Val, b: &Val, shape: &[usize]) -> R<bool> {
        for (x, g) in [(a, b), (b, a)] {
            let (Val::Dyn { name: xn, shape: xs }, Val::Dyn { name: gn, .. }) = (x, g) else {
                continue;
            };
            if xs.as_slice() != shape {
                continue;
            }
            let Some(&li) = self.producer.get(gn) else { continue };
            let layer = &self.layers[li];
            if layer.inputs.first() != Some(xn) || !self.single_use_of_lsq(gn) {
                continue;
            }
            let fused = match layer.op.as_str() {
                "sigmoid" => "silu",
                "hardsigmoid"
                    if layer.attr("alpha") == Some(&Value::Float((1.0f32 / 6.0) as f64))
                        && layer.attr("beta") == Some(&Value::Float(0.5)) =>
                {
                    "hardswish"
                }
                _ => continue,
            };
            let out = self.claim(&node.outputs[0]);
            let layer = &mut self.layers[li];
            layer.op = fused.into();
            layer.attrs.clear();
            layer.outputs = vec![out.clone()];
            self.producer.remove(gn);
            self.producer.insert(out.clone(), li);
            self.set(node, 0, Val::Dyn { name: out, shape: shape.to_vec() })?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `(x * relu6(x + 3)) / 6`, the hard swish PaddlePaddle's exporter
    /// writes as Add, Clip, Mul and Div, -> one `hardswish` layer: the
    /// runtime's evaluates exactly these IEEE steps, so the result is the
    /// chain's bit for bit, in one pass instead of four. The chain's layers,
    /// read by nothing else, are left to `prune`.
    fn fuse_hardswish(&mut self, node: &Node, a: &Val, b: &Val, shape: &[usize]) -> R<bool> {
        let (Val::Dyn { name: m, shape: ms }, Val::Const(six)) = (a, b) else {
            return Ok(false);
        };
        if ms.as_slice() != shape || six.data.as_slice() != [6.0] {
            return Ok(false);
        }
        let Some(x) = self.hardswish_input(m) else { return Ok(false) };
        self.emit(node, 0, "hardswish", vec![x], vec![], vec![], shape.to_vec())?;
        Ok(true)
    }

    /// `x` when `.lsq` value `m` is `x * relu6(x + 3)` (either order of
    /// each operation's operands), each step read only by the next.
    fn hardswish_input(&self, m: &str) -> Option<String> {
        let mul = self.sole_reader_layer(m, "mul")?;
        let [p, q] = mul.inputs.as_slice() else { return None };
        let three = |c: &String| self.constant_values(c).is_some_and(|v| v == [3.0]);
        [(p, q), (q, p)].into_iter().find_map(|(x, r)| {
            let relu6 = self.sole_reader_layer(r, "relu6")?;
            let add = self.sole_reader_layer(relu6.inputs.first()?, "add")?;
            let [u, v] = add.inputs.as_slice() else { return None };
            let chain = (u == x && three(v)) || (v == x && three(u));
            chain.then(|| x.clone())
        })
    }

    /// The layer of op `op` that writes `.lsq` value `name`, when one ONNX
    /// node alone reads that value.
    fn sole_reader_layer(&self, name: &str, op: &str) -> Option<&Layer> {
        let layer = self.layers.get(*self.producer.get(name)?)?;
        (layer.op == op && self.single_use_of_lsq(name)).then_some(layer)
    }

    /// The values of `.lsq` value `name` when a `constant` layer writes it.
    fn constant_values(&self, name: &str) -> Option<&[f32]> {
        let layer = self.layers.get(*self.producer.get(name)?)?;
        let tensor = layer.weights.first().filter(|_| layer.op == "constant")?;
        self.tensors.iter().find(|t| &t.name == tensor).map(|t| t.data.as_slice())
    }

    /// Whether `.lsq` value `name` (the output of an ONNX node) is read by
    /// exactly one node and is not a graph output.
    fn single_use_of_lsq(&self, name: &str) -> bool {
        self.lsq_uses.get(name).copied() == Some(1)
    }

    /// `linear(x) + b` / `conv(x) + b` with a constant `b` over the output
    /// channels becomes the layer's bias.
    fn fuse_bias(&mut self, node: &Node, a: &Val, b: &Val, shape: &[usize]) -> R<bool> {
        self.fuse_channelwise(node, a, b, shape, false)
    }

    /// `linear(x) * s` / `conv(x) * s` with a constant `s` over the output
    /// channels scales the layer's weight rows and bias (exporters write a
    /// batch norm as such a Mul and Add after the conv).
    fn fuse_scale(&mut self, node: &Node, a: &Val, b: &Val, shape: &[usize]) -> R<bool> {
        self.fuse_channelwise(node, a, b, shape, true)
    }

    /// The Add (`scale` false) or Mul (`scale` true) of a constant that
    /// varies only along the output channels, folded into the linear or
    /// convolution layer that computes the other operand, when that layer's
    /// output is read by this node only and its tensors are still f32.
    fn fuse_channelwise(
        &mut self,
        node: &Node,
        a: &Val,
        b: &Val,
        shape: &[usize],
        scale: bool,
    ) -> R<bool> {
        for (x, c) in [(a, b), (b, a)] {
            let (Val::Dyn { name: xn, shape: xs }, Val::Const(c)) = (x, c) else { continue };
            if xs.as_slice() != shape {
                continue;
            }
            let Some(&li) = self.producer.get(xn) else { continue };
            let op = self.layers[li].op.clone();
            let channel_axis = match op.as_str() {
                "linear" => xs.len().saturating_sub(1),
                "conv2d" | "conv1d" => 1,
                // Its weight is [in, out / groups, ...]: a bias only.
                "conv_transpose2d" if !scale => 1,
                _ => continue,
            };
            if !self.single_use_of_lsq(xn) || xs.len() <= channel_axis {
                continue;
            }
            // The constant must vary only along the channel axis.
            let channels = xs[channel_axis];
            let offset = xs.len() - c.shape.len().min(xs.len());
            let only_channels = c.shape.len() <= xs.len()
                && c.shape
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| d == 1 || (i + offset == channel_axis && d == channels));
            if !only_channels || c.len() != channels && c.len() != 1 {
                continue;
            }
            let values: Vec<f32> =
                if c.len() == 1 { vec![c.data[0] as f32; channels] } else { c.to_f32s() };
            let weights = self.layers[li].weights.clone();
            // A tensor other layers also use (a weight shared by MatMuls of
            // one constant) is not this layer's to change.
            let shared = |w: &String| {
                self.layers.iter().enumerate().any(|(j, l)| j != li && l.weights.contains(w))
            };
            if (scale && shared(&weights[0])) || weights.get(1).is_some_and(shared) {
                continue;
            }
            let find = |name: &str| self.tensors.iter().position(|t| t.name == name);
            let (Some(wi), bi) = (find(&weights[0]), weights.get(1).map(|b| find(b))) else {
                continue;
            };
            if bi == Some(None) || self.tensors[wi].shape.first() != Some(&channels) {
                continue;
            }
            let bi = bi.flatten();
            if scale {
                let per = self.tensors[wi].data.len() / channels.max(1);
                for (k, w) in self.tensors[wi].data.iter_mut().enumerate() {
                    *w *= values[k / per.max(1)];
                }
                if let Some(bi) = bi {
                    self.tensors[bi].data.iter_mut().zip(&values).for_each(|(b, s)| *b *= s);
                }
            } else if let Some(bi) = bi {
                self.tensors[bi].data.iter_mut().zip(&values).for_each(|(b, v)| *b += v);
            } else {
                let t = self.tensor(
                    &format!("{}.bias", weights[0].trim_end_matches(".weight")),
                    vec![channels],
                    values,
                    TensorRole::Constant,
                );
                self.layers[li].weights.push(t);
            }
            let out = self.claim(&node.outputs[0]);
            self.layers[li].outputs = vec![out.clone()];
            self.producer.remove(xn);
            self.producer.insert(out.clone(), li);
            self.set(node, 0, Val::Dyn { name: out, shape: shape.to_vec() })?;
            return Ok(true);
        }
        Ok(false)
    }

    fn variadic(&mut self, node: &Node) -> R<()> {
        self.allow(node, &[])?;
        let n = node.inputs.iter().filter(|i| !i.is_empty()).count();
        if n == 0 {
            return Err(self.node_err(node, "has no inputs"));
        }
        let op = match node.op.as_str() {
            "Max" => "max",
            "Min" => "min",
            _ => "add",
        };
        let f = binary_fn(op).expect("known op");
        let mut vals = Vec::new();
        for k in 0..node.inputs.len() {
            if let Some(v) = self.input(node, k)? {
                vals.push(v);
            }
        }
        let mean = node.op == "Mean";
        let count = vals.len() as f64;
        if self.fold(node, &vals, None, |v| {
            let r = v[1..].iter().fold(v[0], |acc, &x| f(acc, x));
            if mean {
                r / count
            } else {
                r
            }
        })? {
            return Ok(());
        }
        let shapes: Vec<&[usize]> = vals.iter().map(Val::shape).collect();
        let shape = tensor::broadcast(&shapes).map_err(|m| self.node_err(node, m))?;
        if vals.len() == 1 {
            let v = vals.pop().expect("one input");
            return self.reshape_to(node, v, shape);
        }
        let hint = node.outputs[0].clone();
        let mut acc = self.dyn_name(&vals[0], &hint);
        for (i, v) in vals.iter().enumerate().skip(1) {
            let vn = self.dyn_name(v, &hint);
            if i + 1 == vals.len() && !mean {
                return self.emit(node, 0, op, vec![acc, vn], vec![], vec![], shape).map(drop);
            }
            acc = self.emit_tmp(&hint, op, vec![acc, vn], vec![]);
        }
        let k = Val::Const(
            Const::new(Dtype::Float, vec![], vec![count]).map_err(|m| self.node_err(node, m))?,
        );
        let kn = self.dyn_name(&k, &hint);
        self.emit(node, 0, "div", vec![acc, kn], vec![], vec![], shape).map(drop)
    }

    fn where_op(&mut self, node: &Node) -> R<()> {
        self.allow(node, &[])?;
        let c = self.need(node, 0)?;
        let x = self.need(node, 1)?;
        let y = self.need(node, 2)?;
        let dtype = match (&x, &y) {
            (Val::Const(a), _) => Some(a.dtype),
            _ => None,
        };
        if self.fold(node, &[c.clone(), x.clone(), y.clone()], dtype, |v| {
            if v[0] != 0.0 {
                v[1]
            } else {
                v[2]
            }
        })? {
            return Ok(());
        }
        let shape = tensor::broadcast(&[c.shape(), x.shape(), y.shape()])
            .map_err(|m| self.node_err(node, m))?;
        let hint = node.outputs[0].clone();
        let names = [&c, &x, &y].map(|v| self.dyn_name(v, &hint)).to_vec();
        self.emit(node, 0, "where", names, vec![], vec![], shape).map(drop)
    }

    fn matmul(&mut self, node: &Node) -> R<()> {
        self.allow(node, &[])?;
        let a = self.need(node, 0)?;
        let b = self.need(node, 1)?;
        // The runtime's own rule (numpy.matmul), so import and plan agree.
        let shape = lsqr::kernels::batched_matmul_shape(a.shape(), b.shape())
            .map_err(|e| self.node_err(node, e))?;
        match (&a, &b) {
            (Val::Const(ca), Val::Const(cb)) => {
                let c = const_matmul(ca, cb, &shape).map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(c))
            }
            (Val::Dyn { name, shape: xs }, Val::Const(w))
                if w.shape.len() == 2 && !xs.is_empty() =>
            {
                let (k, n) = (w.shape[0], w.shape[1]);
                let key = Rc::as_ptr(&w.data);
                let t = match self.linear_weights.get(&key) {
                    Some((s, t)) if s == &w.shape => t.clone(),
                    _ => {
                        // linear's weight is [out, in]: the transpose of B.
                        let wt =
                            tensor::transpose(w, &[1, 0]).map_err(|m| self.node_err(node, m))?;
                        let base = format!("{}.weight", node.outputs[0]);
                        let t = self.tensor(&base, vec![n, k], wt.to_f32s(), TensorRole::Weight);
                        self.linear_weights.insert(key, (w.shape.clone(), t.clone()));
                        t
                    }
                };
                if xs.len() == 1 {
                    // [k] @ [k, n] -> [n]: linear over a [1, k] view.
                    let x2 = self.emit_tmp(
                        &node.outputs[0],
                        "reshape",
                        vec![name.clone()],
                        vec![("shape", ints(&[1, k]))],
                    );
                    let y = self.claim(&format!("{}#linear", node.outputs[0]));
                    self.push_layer("linear", vec![x2], vec![t], vec![], &y);
                    return self
                        .emit(
                            node,
                            0,
                            "reshape",
                            vec![y],
                            vec![],
                            vec![("shape", ints(&shape))],
                            shape,
                        )
                        .map(drop);
                }
                self.emit(node, 0, "linear", vec![name.clone()], vec![t], vec![], shape).map(drop)
            }
            _ => {
                let hint = node.outputs[0].clone();
                let an = self.dyn_name(&a, &hint);
                let bn = self.dyn_name(&b, &hint);
                self.emit(node, 0, "matmul", vec![an, bn], vec![], vec![], shape).map(drop)
            }
        }
    }

    fn gemm(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["alpha", "beta", "transA", "transB"])?;
        let alpha = self.attr_float(node, "alpha", 1.0)?;
        let beta = self.attr_float(node, "beta", 1.0)?;
        let trans_a = self.attr_int(node, "transA", 0)? != 0;
        let trans_b = self.attr_int(node, "transB", 0)? != 0;
        let a = self.need(node, 0)?;
        if matches!(a, Val::Const(_)) || matches!(self.need(node, 1)?, Val::Dyn { .. }) {
            return self.by_expansion(node);
        }
        let b = self.need_const(node, 1, "B")?;
        let c = self.opt_const(node, 2, "C")?;
        if a.shape().len() != 2 || b.shape.len() != 2 {
            return Err(self.node_err(
                node,
                format!("A {:?} and B {:?} must be matrices", a.shape(), b.shape),
            ));
        }
        // Weight [n, k] = (transB ? B : B^T) * alpha.
        let w = if trans_b {
            b.clone()
        } else {
            tensor::transpose(&b, &[1, 0]).map_err(|m| self.node_err(node, m))?
        };
        let (n, k) = (w.shape[0], w.shape[1]);
        let hint = node.outputs[0].clone();
        let (x, m) = match &a {
            Val::Const(_) => return Err(self.node_err(node, "a constant A is not supported")),
            Val::Dyn { name, shape } => {
                if trans_a {
                    let t = self.emit_tmp(
                        &hint,
                        "transpose",
                        vec![name.clone()],
                        vec![("perm", ints(&[1, 0]))],
                    );
                    (t, shape[1])
                } else {
                    (name.clone(), shape[0])
                }
            }
        };
        let xk = if trans_a { a.shape()[0] } else { a.shape()[1] };
        if xk != k {
            return Err(self.node_err(node, format!("A has {xk} columns, B gives {k}")));
        }
        let weight: Vec<f32> = w.data.iter().map(|&v| (v as f32) * alpha).collect();
        let mut weights =
            vec![self.tensor(&format!("{hint}.weight"), vec![n, k], weight, TensorRole::Weight)];
        let mut bias_2d = None;
        if let Some(c) = c {
            let out = [m, n];
            let b1 =
                c.shape.iter().rev().skip(1).all(|&d| d == 1) && (c.len() == n || c.len() == 1);
            if b1 {
                let bias: Vec<f32> = (0..n)
                    .map(|j| beta * c.data[if c.len() == 1 { 0 } else { j }] as f32)
                    .collect();
                weights.push(self.tensor(
                    &format!("{hint}.bias"),
                    vec![n],
                    bias,
                    TensorRole::Constant,
                ));
            } else {
                tensor::broadcast(&[&c.shape, &out]).map_err(|msg| self.node_err(node, msg))?;
                let scaled = Const::new(
                    Dtype::Float,
                    c.shape.clone(),
                    c.data.iter().map(|&v| (v as f32 * beta) as f64).collect(),
                )
                .map_err(|msg| self.node_err(node, msg))?;
                bias_2d = Some(scaled);
            }
        }
        match bias_2d {
            None => self.emit(node, 0, "linear", vec![x], weights, vec![], vec![m, n]).map(drop),
            Some(c) => {
                let y = self.emit_tmp(&hint, "linear", vec![x], vec![]);
                let li = self.producer[&y];
                self.layers[li].weights = weights;
                let cn = self.dyn_name(&Val::Const(c), &hint);
                self.emit(node, 0, "add", vec![y, cn], vec![], vec![], vec![m, n]).map(drop)
            }
        }
    }

    /// A convolution's tensors: its weight (quantizable) and, if given, its
    /// bias of `cout` values.
    fn weight_and_bias(
        &mut self,
        node: &Node,
        hint: &str,
        w: &Const,
        b: Option<&Const>,
        cout: usize,
    ) -> R<Vec<String>> {
        if let Some(b) = b.filter(|b| b.len() != cout) {
            return Err(
                self.node_err(node, format!("B has {} values for {cout} channels", b.len()))
            );
        }
        let mut names = vec![self.tensor(
            &format!("{hint}.weight"),
            w.shape.clone(),
            w.to_f32s(),
            TensorRole::Weight,
        )];
        if let Some(b) = b {
            names.push(self.tensor(
                &format!("{hint}.bias"),
                vec![cout],
                b.to_f32s(),
                TensorRole::Constant,
            ));
        }
        Ok(names)
    }

    /// Spatial attributes of Conv / pooling: kernel from `kernel` (weight
    /// or attribute), explicit begin/end pads (auto_pad resolved).
    fn spatial(
        &self,
        node: &Node,
        input: &[usize],
        kernel: &[usize],
        transpose: bool,
    ) -> R<Spatial> {
        let nd = kernel.len();
        if kernel.contains(&0) || kernel.iter().any(|&k| k > MAX_VALUE_DIM) {
            return Err(
                self.node_err(node, format!("kernel {kernel:?} must be at least 1 on every axis"))
            );
        }
        let get = |name: &str, default: usize| -> R<Vec<usize>> {
            match self.attr_ints(node, name)? {
                None => Ok(vec![default; nd]),
                Some(v)
                    if v.len() == nd && v.iter().all(|&x| (0..=MAX_SPATIAL_ATTR).contains(&x)) =>
                {
                    Ok(v.iter().map(|&x| x as usize).collect())
                }
                Some(v) => Err(self
                    .node_err(node, format!("{name} {v:?} must have {nd} non-negative entries"))),
            }
        };
        let strides = get("strides", 1)?;
        let dilations = get("dilations", 1)?;
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(self.node_err(node, "strides and dilations must be at least 1"));
        }
        let mut pads = match self.attr_ints(node, "pads")? {
            None => vec![0; 2 * nd],
            Some(v)
                if v.len() == 2 * nd && v.iter().all(|&x| (0..=MAX_SPATIAL_ATTR).contains(&x)) =>
            {
                v.iter().map(|&x| x as usize).collect()
            }
            Some(v) => {
                return Err(self.node_err(
                    node,
                    format!("pads {v:?} must have {} non-negative entries", 2 * nd),
                ))
            }
        };
        let auto = self.attr_str(node, "auto_pad", "NOTSET")?;
        match auto.as_str() {
            "NOTSET" => {}
            "VALID" => pads.iter_mut().for_each(|p| *p = 0),
            "SAME_UPPER" | "SAME_LOWER" if !transpose => {
                for i in 0..nd {
                    let out = input[i].div_ceil(strides[i]);
                    let span = (kernel[i] - 1) * dilations[i] + 1;
                    let total =
                        ((out.saturating_sub(1)) * strides[i] + span).saturating_sub(input[i]);
                    let (small, big) = (total / 2, total - total / 2);
                    if auto == "SAME_UPPER" {
                        (pads[i], pads[i + nd]) = (small, big);
                    } else {
                        (pads[i], pads[i + nd]) = (big, small);
                    }
                }
            }
            other => return Err(self.node_err(node, format!("auto_pad {other} is not supported"))),
        }
        Ok(Spatial { strides, dilations, pads })
    }

    fn conv(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])?;
        let x = self.need(node, 0)?;
        let w = self.need_const(node, 1, "W")?;
        let b = self.opt_const(node, 2, "B")?;
        let xs = x.shape().to_vec();
        if !(xs.len() == 3 || xs.len() == 4) || w.shape.len() != xs.len() {
            return Err(self.node_err(
                node,
                format!(
                    "only 1-D and 2-D convolutions are supported (input {xs:?}, weight {:?})",
                    w.shape
                ),
            ));
        }
        let nd = xs.len() - 2;
        let kernel = w.shape[2..].to_vec();
        if let Some(k) = self.attr_ints(node, "kernel_shape")? {
            if k.iter().map(|&v| v as usize).ne(kernel.iter().copied()) {
                return Err(self.node_err(
                    node,
                    format!("kernel_shape {k:?} disagrees with the weight {:?}", w.shape),
                ));
            }
        }
        let groups = self.attr_int(node, "group", 1)?;
        let groups = usize::try_from(groups)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| self.node_err(node, "group must be >= 1"))?;
        let sp = self.spatial(node, &xs[2..], &kernel, false)?;
        let hint = node.outputs[0].clone();
        let mut xn = self.dyn_name(&x, &hint);
        let mut xs_eff = xs.clone();
        let symmetric = (0..nd).all(|i| sp.pads[i] == sp.pads[i + nd]);
        let padding: Vec<usize> = if symmetric {
            sp.pads[..nd].to_vec()
        } else {
            // Asymmetric padding: an explicit zero pad first.
            let mut pads = vec![0usize; 2 * xs.len()];
            for i in 0..nd {
                pads[2 + i] = sp.pads[i];
                pads[xs.len() + 2 + i] = sp.pads[i + nd];
                xs_eff[2 + i] += sp.pads[i] + sp.pads[i + nd];
            }
            xn = self.emit_tmp(
                &hint,
                "pad",
                vec![xn],
                vec![
                    ("pads", ints(&pads)),
                    ("mode", Value::String("constant".into())),
                    ("value", Value::Float(0.0)),
                ],
            );
            vec![0; nd]
        };
        let cout = w.shape[0];
        if Some(xs[1]) != w.shape[1].checked_mul(groups) || !cout.is_multiple_of(groups) {
            return Err(self.node_err(
                node,
                format!("input {xs:?}, weight {:?} and group {groups} do not agree", w.shape),
            ));
        }
        let mut out = vec![xs[0], cout];
        for i in 0..nd {
            let span = (kernel[i] - 1) * sp.dilations[i] + 1;
            let padded = xs_eff[2 + i] + 2 * padding[i];
            if padded < span {
                return Err(self.node_err(node, "the kernel is larger than the padded input"));
            }
            out.push((padded - span) / sp.strides[i] + 1);
        }
        let weights = self.weight_and_bias(node, &hint, &w, b.as_ref(), cout)?;
        let (op, attrs) = if nd == 2 {
            (
                "conv2d",
                vec![
                    ("stride", ints(&sp.strides)),
                    ("padding", ints(&padding)),
                    ("dilation", ints(&sp.dilations)),
                    ("groups", Value::Int(groups as i64)),
                ],
            )
        } else {
            (
                "conv1d",
                vec![
                    ("stride", Value::Int(sp.strides[0] as i64)),
                    ("padding", Value::Int(padding[0] as i64)),
                    ("dilation", Value::Int(sp.dilations[0] as i64)),
                    ("groups", Value::Int(groups as i64)),
                ],
            )
        };
        self.emit(node, 0, op, vec![xn], weights, attrs, out).map(drop)
    }

    fn conv_transpose(&mut self, node: &Node) -> R<()> {
        self.allow(
            node,
            &[
                "auto_pad",
                "dilations",
                "group",
                "kernel_shape",
                "output_padding",
                "output_shape",
                "pads",
                "strides",
            ],
        )?;
        let x = self.need(node, 0)?;
        let w = self.need_const(node, 1, "W")?;
        let b = self.opt_const(node, 2, "B")?;
        let xs = x.shape().to_vec();
        if xs.len() != 4 || w.shape.len() != 4 {
            return Err(self.node_err(
                node,
                format!(
                    "only 2-D transposed convolutions are supported (input {xs:?}, weight {:?})",
                    w.shape
                ),
            ));
        }
        if self.attr_ints(node, "output_shape")?.is_some() {
            return Err(self.node_err(node, "output_shape is not supported; give pads"));
        }
        let groups = usize::try_from(self.attr_int(node, "group", 1)?)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| self.node_err(node, "group must be >= 1"))?;
        let kernel = w.shape[2..].to_vec();
        let sp = self.spatial(node, &xs[2..], &kernel, true)?;
        let op_ = match self.attr_ints(node, "output_padding")? {
            None => vec![0, 0],
            Some(v) if v.len() == 2 && v.iter().all(|&p| (0..=MAX_SPATIAL_ATTR).contains(&p)) => {
                v.iter().map(|&p| p as usize).collect()
            }
            Some(v) => return Err(self.node_err(node, format!("output_padding {v:?} is invalid"))),
        };
        if xs[1] != w.shape[0] || xs[1] % groups != 0 {
            return Err(self.node_err(
                node,
                format!("input {xs:?}, weight {:?} and group {groups} do not agree", w.shape),
            ));
        }
        let cout =
            w.shape[1].checked_mul(groups).filter(|&c| c <= MAX_VALUE_DIM).ok_or_else(|| {
                self.node_err(
                    node,
                    format!("weight {:?} and group {groups} give too many channels", w.shape),
                )
            })?;
        let mut out = vec![xs[0], cout];
        for i in 0..2 {
            let full = sp.strides[i] * (xs[2 + i].saturating_sub(1))
                + op_[i]
                + (kernel[i] - 1) * sp.dilations[i]
                + 1;
            let o = full
                .checked_sub(sp.pads[i] + sp.pads[i + 2])
                .filter(|&o| o > 0)
                .ok_or_else(|| self.node_err(node, "the padding removes the whole output"))?;
            out.push(o);
        }
        let hint = node.outputs[0].clone();
        let xn = self.dyn_name(&x, &hint);
        let weights = self.weight_and_bias(node, &hint, &w, b.as_ref(), cout)?;
        let attrs = vec![
            ("stride", ints(&sp.strides)),
            ("pads", ints(&sp.pads)),
            ("dilation", ints(&sp.dilations)),
            ("output_padding", ints(&op_)),
            ("groups", Value::Int(groups as i64)),
        ];
        self.emit(node, 0, "conv_transpose2d", vec![xn], weights, attrs, out).map(drop)
    }

    fn batch_norm(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["epsilon", "momentum", "spatial", "training_mode"])?;
        if self.attr_int(node, "training_mode", 0)? != 0
            || node.outputs.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(self.node_err(node, "training mode is not supported"));
        }
        let eps = self.attr_float(node, "epsilon", 1e-5)?;
        let x = self.need(node, 0)?;
        for k in 1..=4 {
            if matches!(self.input(node, k)?, Some(Val::Dyn { .. })) {
                return self.by_expansion(node);
            }
        }
        let [g, b, m, v] = [1, 2, 3, 4].map(|k| self.need_const(node, k, "statistics"));
        let (g, b, m, v) = (g?, b?, m?, v?);
        let xs = x.shape().to_vec();
        if xs.len() < 2 || [&g, &b, &m, &v].iter().any(|t| t.len() != xs[1]) {
            return Err(self.node_err(
                node,
                format!("input {xs:?} and statistics of lengths {} do not agree", g.len()),
            ));
        }
        let c = xs[1];
        // y = x * s + t, s = gamma / sqrt(var + eps), t = beta - mean * s,
        // in f32 as onnxruntime computes it.
        let s: Vec<f32> =
            (0..c).map(|i| g.data[i] as f32 / (v.data[i] as f32 + eps).sqrt()).collect();
        let t: Vec<f32> = (0..c).map(|i| b.data[i] as f32 - m.data[i] as f32 * s[i]).collect();
        if let Val::Dyn { name, .. } = &x {
            if let Some(&li) = self.producer.get(name) {
                let layer = &self.layers[li];
                if matches!(layer.op.as_str(), "conv2d" | "conv1d") && self.single_use_of_lsq(name)
                {
                    let wname = layer.weights[0].clone();
                    let bname = layer.weights.get(1).cloned();
                    let wi = self.tensors.iter().position(|t| t.name == wname).expect("own tensor");
                    let per = self.tensors[wi].data.len() / c.max(1);
                    for (k, w) in self.tensors[wi].data.iter_mut().enumerate() {
                        *w *= s[k / per.max(1)];
                    }
                    let old_bias = bname.as_ref().map(|bn| {
                        self.tensors
                            .iter()
                            .find(|t| &t.name == bn)
                            .expect("own tensor")
                            .data
                            .clone()
                    });
                    let bias: Vec<f32> = (0..c)
                        .map(|i| old_bias.as_ref().map_or(0.0, |ob| ob[i]) * s[i] + t[i])
                        .collect();
                    match bname {
                        Some(bn) => {
                            self.tensors
                                .iter_mut()
                                .find(|t| t.name == bn)
                                .expect("own tensor")
                                .data = bias
                        }
                        None => {
                            let bn = self.tensor(
                                &format!("{wname}.bias"),
                                vec![c],
                                bias,
                                TensorRole::Constant,
                            );
                            self.layers[li].weights.push(bn);
                        }
                    }
                    let out = self.claim(&node.outputs[0]);
                    self.layers[li].outputs = vec![out.clone()];
                    self.producer.remove(name);
                    self.producer.insert(out.clone(), li);
                    return self.set(node, 0, Val::Dyn { name: out, shape: xs });
                }
            }
        }
        let hint = node.outputs[0].clone();
        let mut bshape = vec![1usize; xs.len() - 1];
        bshape[0] = c;
        let sc = Val::Const(
            Const::new(Dtype::Float, bshape.clone(), s.iter().map(|&v| v as f64).collect())
                .map_err(|m| self.node_err(node, m))?,
        );
        let sh = Val::Const(
            Const::new(Dtype::Float, bshape, t.iter().map(|&v| v as f64).collect())
                .map_err(|m| self.node_err(node, m))?,
        );
        let xn = self.dyn_name(&x, &hint);
        let scn = self.dyn_name(&sc, &hint);
        let shn = self.dyn_name(&sh, &hint);
        let y = self.emit_tmp(&hint, "mul", vec![xn, scn], vec![]);
        self.emit(node, 0, "add", vec![y, shn], vec![], vec![], xs).map(drop)
    }

    fn arg_extreme(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axis", "keepdims", "select_last_index"])?;
        let x = self.need(node, 0)?;
        let s = x.shape().to_vec();
        let a = self.attr_int(node, "axis", 0)?;
        let axis = axis_of(a, s.len()).ok_or_else(|| {
            self.node_err(node, format!("axis {a} is out of range for rank {}", s.len()))
        })?;
        let keep = self.attr_int(node, "keepdims", 1)? != 0;
        let last = self.attr_int(node, "select_last_index", 0)? != 0;
        let out: Vec<usize> = if keep {
            (0..s.len()).map(|k| if k == axis { 1 } else { s[k] }).collect()
        } else {
            (0..s.len()).filter(|&k| k != axis).map(|k| s[k]).collect()
        };
        let max = node.op == "ArgMax";
        if let Val::Const(c) = &x {
            let mut idx = vec![0.0f32; numel(&out)];
            lsqr::kernels::reduce::arg_extreme_into(&c.to_f32s(), &s, axis, max, last, &mut idx)
                .map_err(|e| self.node_err(node, e))?;
            let data = idx.into_iter().map(f64::from).collect();
            let c = Const::new(Dtype::Int, out, data).map_err(|m| self.node_err(node, m))?;
            return self.set(node, 0, Val::Const(c));
        }
        let attrs = vec![
            ("axis", Value::Int(axis as i64)),
            ("keepdims", Value::Int(i64::from(keep))),
            ("select_last_index", Value::Int(i64::from(last))),
        ];
        let op = if max { "arg_max" } else { "arg_min" };
        let xn = self.dyn_name(&x, &node.outputs[0]);
        self.emit(node, 0, op, vec![xn], vec![], attrs, out).map(drop)
    }

    fn layer_norm(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axis", "epsilon", "stash_type"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let axis = axis_of(self.attr_int(node, "axis", -1)?, xs.len())
            .ok_or_else(|| self.node_err(node, "axis out of range"))?;
        if axis + 1 != xs.len() || node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
            return self.by_expansion(node);
        }
        let d = xs[axis];
        let g = self.need_const(node, 1, "scale")?;
        let b = self.opt_const(node, 2, "B")?;
        if g.len() != d || b.as_ref().is_some_and(|b| b.len() != d) {
            return Err(self.node_err(node, format!("scale/bias must have {d} values")));
        }
        let eps = self.attr_float(node, "epsilon", 1e-5)?;
        let hint = node.outputs[0].clone();
        let gn = self.tensor(&format!("{hint}.gamma"), vec![d], g.to_f32s(), TensorRole::Constant);
        let bn = self.tensor(
            &format!("{hint}.beta"),
            vec![d],
            b.map_or(vec![0.0; d], |b| b.to_f32s()),
            TensorRole::Constant,
        );
        let xn = self.dyn_name(&x, &hint);
        self.emit(
            node,
            0,
            "layer_norm",
            vec![xn],
            vec![gn, bn],
            vec![("eps", Value::Float(eps as f64))],
            xs,
        )
        .map(drop)
    }

    fn pool(&mut self, node: &Node) -> R<()> {
        self.allow(
            node,
            &[
                "auto_pad",
                "ceil_mode",
                "count_include_pad",
                "dilations",
                "kernel_shape",
                "pads",
                "storage_order",
                "strides",
            ],
        )?;
        if self.attr_int(node, "storage_order", 0)? != 0
            || node.outputs.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(self.node_err(node, "the Indices output is not supported"));
        }
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let kernel: Vec<usize> = self
            .attr_ints(node, "kernel_shape")?
            .ok_or_else(|| self.node_err(node, "kernel_shape is required"))?
            .iter()
            .map(|&k| usize::try_from(k).unwrap_or(0))
            .collect();
        if !(xs.len() == 3 || xs.len() == 4) || kernel.len() + 2 != xs.len() || kernel.contains(&0)
        {
            return Err(self.node_err(node, format!("only 1-D and 2-D pooling with a positive kernel is supported (input {xs:?}, kernel {kernel:?})")));
        }
        let sp = self.spatial(node, &xs[2..], &kernel, false)?;
        let ceil = self.attr_int(node, "ceil_mode", 0)? != 0;
        let include = self.attr_int(node, "count_include_pad", 0)? != 0;
        // 1-D pooling runs as 2-D over [n, c, 1, l].
        let lift =
            |v: &[usize], one: usize| if v.len() == 1 { vec![one, v[0]] } else { v.to_vec() };
        let k2 = lift(&kernel, 1);
        let s2 = lift(&sp.strides, 1);
        let d2 = lift(&sp.dilations, 1);
        let p4 =
            if kernel.len() == 1 { vec![0, sp.pads[0], 0, sp.pads[1]] } else { sp.pads.clone() };
        let in4 = if xs.len() == 3 { vec![xs[0], xs[1], 1, xs[2]] } else { xs.clone() };
        let mut out = vec![in4[0], in4[1]];
        for i in 0..2 {
            let span = (k2[i] - 1) * d2[i] + 1;
            let padded = in4[2 + i] + p4[i] + p4[i + 2];
            if padded < span {
                return Err(self.node_err(node, "the kernel is larger than the padded input"));
            }
            let num = padded - span;
            let mut o = if ceil { num.div_ceil(s2[i]) + 1 } else { num / s2[i] + 1 };
            // The last window must start inside the input or left padding.
            if ceil && (o - 1) * s2[i] >= in4[2 + i] + p4[i] {
                o -= 1;
            }
            out.push(o);
        }
        let hint = node.outputs[0].clone();
        let mut xn = self.dyn_name(&x, &hint);
        if xs.len() == 3 {
            xn = self.emit_tmp(&hint, "reshape", vec![xn], vec![("shape", ints(&in4))]);
        }
        let op = if node.op == "MaxPool" { "max_pool2d" } else { "avg_pool2d" };
        let attrs = vec![
            ("kernel", ints(&k2)),
            ("stride", ints(&s2)),
            ("pads", ints(&p4)),
            ("dilation", ints(&d2)),
            ("ceil_mode", Value::Int(ceil as i64)),
            ("count_include_pad", Value::Int(include as i64)),
        ];
        if xs.len() == 3 {
            let y = self.emit_tmp(&hint, op, vec![xn], attrs);
            let out3 = vec![out[0], out[1], out[3]];
            return self
                .emit(node, 0, "reshape", vec![y], vec![], vec![("shape", ints(&out3))], out3)
                .map(drop);
        }
        self.emit(node, 0, op, vec![xn], vec![], attrs, out).map(drop)
    }

    fn softmax(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axis"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let default = if self.opset >= 13 { -1 } else { 1 };
        let a = self.attr_int(node, "axis", default)?;
        let axis = axis_of(a, xs.len())
            .ok_or_else(|| self.node_err(node, format!("axis {a} out of range")))?;
        let op = if node.op == "Softmax" { "softmax" } else { "log_softmax" };
        let hint = node.outputs[0].clone();
        let xn = self.dyn_name(&x, &hint);
        if self.opset < 13 && axis + 1 != xs.len() {
            // Before opset 13 the input is coerced to 2-D at `axis`.
            let two = vec![numel(&xs[..axis]), numel(&xs[axis..])];
            let r = self.emit_tmp(&hint, "reshape", vec![xn], vec![("shape", ints(&two))]);
            let s = self.emit_tmp(&hint, op, vec![r], vec![("axis", Value::Int(1))]);
            return self
                .emit(node, 0, "reshape", vec![s], vec![], vec![("shape", ints(&xs))], xs)
                .map(drop);
        }
        self.emit(node, 0, op, vec![xn], vec![], vec![("axis", Value::Int(axis as i64))], xs)
            .map(drop)
    }

    fn reduce(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axes", "keepdims", "noop_with_empty_axes"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let from = if node.op == "ReduceSum" { 13 } else { 18 };
        let keep = self.attr_int(node, "keepdims", 1)? != 0;
        let noop = self.attr_int(node, "noop_with_empty_axes", 0)? != 0;
        let axes = match self.axes(node, 1, from, xs.len())? {
            Some(a) if !a.is_empty() => a,
            _ if noop => return self.set(node, 0, x),
            _ => (0..xs.len()).collect(),
        };
        let out: Vec<usize> = if keep {
            (0..xs.len()).map(|k| if axes.contains(&k) { 1 } else { xs[k] }).collect()
        } else {
            (0..xs.len()).filter(|k| !axes.contains(k)).map(|k| xs[k]).collect()
        };
        let op = match node.op.as_str() {
            "ReduceSum" => "reduce_sum",
            "ReduceMean" => "reduce_mean",
            "ReduceMax" => "reduce_max",
            "ReduceMin" => "reduce_min",
            "ReduceProd" => "reduce_prod",
            "ReduceL1" => "reduce_l1",
            "ReduceL2" => "reduce_l2",
            "ReduceSumSquare" => "reduce_sum_square",
            _ => "reduce_log_sum_exp",
        };
        if let Val::Const(c) = &x {
            let f = reduce_fn(op);
            let r = tensor::reduce(c, &axes, keep, f).map_err(|m| self.node_err(node, m))?;
            return self.set(node, 0, Val::Const(r));
        }
        let hint = node.outputs[0].clone();
        let xn = self.dyn_name(&x, &hint);
        let attrs = vec![("axes", ints(&axes)), ("keepdims", Value::Int(keep as i64))];
        self.emit(node, 0, op, vec![xn], vec![], attrs, out).map(drop)
    }

    fn transpose(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["perm"])?;
        let x = self.need(node, 0)?;
        let rank = x.shape().len();
        let perm: Vec<usize> = match self.attr_ints(node, "perm")? {
            None => (0..rank).rev().collect(),
            Some(p) => p.iter().map(|&a| axis_of(a, rank).unwrap_or(usize::MAX)).collect(),
        };
        if let Val::Const(c) = &x {
            let t = tensor::transpose(c, &perm).map_err(|m| self.node_err(node, m))?;
            return self.set(node, 0, Val::Const(t));
        }
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(
                self.node_err(node, format!("perm {perm:?} is not a permutation of rank {rank}"))
            );
        }
        let out: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.set(node, 0, x);
        }
        let hint = node.outputs[0].clone();
        let xn = self.dyn_name(&x, &hint);
        self.emit(node, 0, "transpose", vec![xn], vec![], vec![("perm", ints(&perm))], out)
            .map(drop)
    }

    fn reshape(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["allowzero"])?;
        let x = self.need(node, 0)?;
        let spec = if self.opset >= 5 {
            self.need_const(node, 1, "shape")?.to_i64s()
        } else {
            self.attr_ints(node, "shape")?
                .ok_or_else(|| self.node_err(node, "shape is required"))?
        };
        let allow_zero = self.attr_int(node, "allowzero", 0)? != 0;
        let xs = x.shape().to_vec();
        let mut out = Vec::with_capacity(spec.len());
        let mut infer = None;
        for (i, &d) in spec.iter().enumerate() {
            out.push(match d {
                0 if !allow_zero => *xs.get(i).ok_or_else(|| {
                    self.node_err(
                        node,
                        format!("shape entry {i} copies a dim the input does not have"),
                    )
                })?,
                -1 if infer.is_none() => {
                    infer = Some(i);
                    1
                }
                d if d >= 0 => d as usize,
                d => return Err(self.node_err(node, format!("invalid shape entry {d}"))),
            });
        }
        let total = numel(&xs);
        if let Some(i) = infer {
            let known = numel(&out);
            if known == 0 || !total.is_multiple_of(known) {
                return Err(self.node_err(node, format!("cannot reshape {xs:?} to {spec:?}")));
            }
            out[i] = total / known;
        }
        if numel(&out) != total {
            return Err(self.node_err(node, format!("cannot reshape {xs:?} to {spec:?}")));
        }
        self.reshape_to(node, x, out)
    }

    /// Output 0 of `node` is `x` with shape `out` (same elements).
    fn reshape_to(&mut self, node: &Node, x: Val, out: Vec<usize>) -> R<()> {
        if numel(&out) != numel(x.shape()) {
            return Err(self.node_err(node, format!("cannot reshape {:?} to {out:?}", x.shape())));
        }
        match x {
            Val::Const(c) => {
                let r = c.reshaped(out).map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(r))
            }
            Val::Dyn { name, shape } if shape == out => self.set(node, 0, Val::Dyn { name, shape }),
            Val::Dyn { name, .. } => self
                .emit(node, 0, "reshape", vec![name], vec![], vec![("shape", ints(&out))], out)
                .map(drop),
        }
    }

    fn expand(&mut self, node: &Node) -> R<()> {
        self.allow(node, &[])?;
        let x = self.need(node, 0)?;
        let spec = self.need_const(node, 1, "shape")?.to_i64s();
        if spec.iter().any(|&d| d < 0) {
            return Err(self.node_err(node, format!("shape {spec:?} has a negative dim")));
        }
        let spec: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
        let out = tensor::broadcast(&[x.shape(), &spec]).map_err(|m| self.node_err(node, m))?;
        match &x {
            Val::Const(c) => {
                // Broadcast by picking index 0 along the size-1 axes.
                tensor::grown(&out, c.len()).map_err(|m| self.node_err(node, m))?;
                let pad = out.len() - c.shape.len();
                let padded: Vec<usize> =
                    std::iter::repeat_n(1, pad).chain(c.shape.iter().copied()).collect();
                let c = c.reshaped(padded.clone()).map_err(|m| self.node_err(node, m))?;
                let picks: Vec<Vec<usize>> = (0..out.len())
                    .map(|k| if padded[k] == 1 { vec![0; out[k]] } else { (0..out[k]).collect() })
                    .collect();
                let r = tensor::pick(&c, &picks).map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(r))
            }
            Val::Dyn { .. } if x.shape() == out.as_slice() => self.set(node, 0, x),
            Val::Dyn { name, .. } => {
                let name = name.clone();
                self.emit(node, 0, "expand", vec![name], vec![], vec![("shape", ints(&out))], out)
                    .map(drop)
            }
        }
    }

    fn tile(&mut self, node: &Node) -> R<()> {
        self.allow(node, &[])?;
        if matches!(self.need(node, 0)?, Val::Dyn { .. }) {
            return self.by_expansion(node);
        }
        let x = self.need_const(node, 0, "input")?;
        let reps = self.need_const(node, 1, "repeats")?.to_i64s();
        if reps.len() != x.shape.len() || reps.iter().any(|&r| r < 0) {
            return Err(
                self.node_err(node, format!("repeats {reps:?} do not fit shape {:?}", x.shape))
            );
        }
        let tiled: Vec<usize> =
            x.shape.iter().zip(&reps).map(|(&d, &r)| d.saturating_mul(r as usize)).collect();
        tensor::grown(&tiled, x.len()).map_err(|m| self.node_err(node, m))?;
        let picks: Vec<Vec<usize>> = x
            .shape
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| (0..d * r as usize).map(|i| i % d.max(1)).collect())
            .collect();
        let t = tensor::pick(&x, &picks).map_err(|m| self.node_err(node, m))?;
        self.set(node, 0, Val::Const(t))
    }

    fn concat(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axis"])?;
        let mut vals = Vec::new();
        for k in 0..node.inputs.len() {
            if let Some(v) = self.input(node, k)? {
                vals.push(v);
            }
        }
        let first =
            vals.first().ok_or_else(|| self.node_err(node, "has no inputs"))?.shape().to_vec();
        let a = self.attr_int(node, "axis", 0)?;
        let axis = axis_of(a, first.len())
            .ok_or_else(|| self.node_err(node, format!("axis {a} out of range")))?;
        let consts: Option<Vec<&Const>> =
            vals.iter().map(|v| if let Val::Const(c) = v { Some(c) } else { None }).collect();
        if let Some(consts) = consts {
            let c = tensor::concat(&consts, axis).map_err(|m| self.node_err(node, m))?;
            return self.set(node, 0, Val::Const(c));
        }
        let mut out = first.clone();
        out[axis] = 0;
        for v in &vals {
            let s = v.shape();
            if s.len() != first.len() || (0..s.len()).any(|k| k != axis && s[k] != first[k]) {
                return Err(self.node_err(node, format!("cannot concatenate {first:?} with {s:?}")));
            }
            out[axis] += s[axis];
        }
        let hint = node.outputs[0].clone();
        let names: Vec<String> =
            vals.iter().filter(|v| numel(v.shape()) > 0).map(|v| self.dyn_name(v, &hint)).collect();
        if names.len() == 1 {
            let v = vals.into_iter().find(|v| numel(v.shape()) > 0).expect("one");
            return self.reshape_to(node, v, out);
        }
        self.emit(node, 0, "concat", names, vec![], vec![("axis", Value::Int(axis as i64))], out)
            .map(drop)
    }

    fn split(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axis", "split", "num_outputs"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let a = self.attr_int(node, "axis", 0)?;
        let axis = axis_of(a, xs.len())
            .ok_or_else(|| self.node_err(node, format!("axis {a} out of range")))?;
        let n = node.outputs.len();
        let sizes: Vec<usize> = match if self.opset >= 13 {
            self.opt_const(node, 1, "split")?.map(|c| c.to_i64s())
        } else {
            self.attr_ints(node, "split")?
        } {
            Some(s) => s.iter().map(|&v| usize::try_from(v).unwrap_or(usize::MAX)).collect(),
            None => {
                let each = xs[axis].div_ceil(n.max(1));
                (0..n).map(|i| each.min(xs[axis].saturating_sub(i * each))).collect()
            }
        };
        if sizes.len() != n
            || sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(xs[axis])
        {
            return Err(self
                .node_err(node, format!("split sizes {sizes:?} do not divide dim {}", xs[axis])));
        }
        let mut start = 0;
        for (k, &len) in sizes.iter().enumerate() {
            let mut shape = xs.clone();
            shape[axis] = len;
            let mut starts = vec![0usize; xs.len()];
            starts[axis] = start;
            start += len;
            if node.outputs[k].is_empty() {
                continue;
            }
            match &x {
                Val::Const(c) => {
                    tensor::grown(&shape, c.len()).map_err(|m| self.node_err(node, m))?;
                    let picks: Vec<Vec<usize>> = (0..xs.len())
                        .map(|d| (starts[d]..starts[d] + shape[d]).collect())
                        .collect();
                    let t = tensor::pick(c, &picks).map_err(|m| self.node_err(node, m))?;
                    self.set(node, k, Val::Const(t))?;
                }
                Val::Dyn { name, .. } => {
                    let attrs = vec![
                        ("starts", ints(&starts)),
                        ("steps", ints(&vec![1; xs.len()])),
                        ("shape", ints(&shape)),
                    ];
                    let name = name.clone();
                    self.emit(node, k, "slice", vec![name], vec![], attrs, shape)?;
                }
            }
        }
        Ok(())
    }

    fn slice(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axes", "ends", "starts"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let rank = xs.len();
        let (starts, ends, axes, steps) = if self.opset >= 10 {
            let s = self.need_const(node, 1, "starts")?.to_i64s();
            let e = self.need_const(node, 2, "ends")?.to_i64s();
            let a = self.opt_const(node, 3, "axes")?.map(|c| c.to_i64s());
            let st = self.opt_const(node, 4, "steps")?.map(|c| c.to_i64s());
            (s, e, a, st)
        } else {
            let s = self.attr_ints(node, "starts")?.unwrap_or_default();
            let e = self.attr_ints(node, "ends")?.unwrap_or_default();
            (s, e, self.attr_ints(node, "axes")?, None)
        };
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(self.node_err(node, "starts, ends, axes and steps differ in length"));
        }
        let mut first = vec![0usize; rank];
        let mut step = vec![1i64; rank];
        let mut out = xs.clone();
        for i in 0..starts.len() {
            let ax = axis_of(axes[i], rank)
                .ok_or_else(|| self.node_err(node, format!("axis {} out of range", axes[i])))?;
            let (s, count) = slice_range(xs[ax], starts[i], ends[i], steps[i])
                .map_err(|m| self.node_err(node, m))?;
            first[ax] = s;
            step[ax] = steps[i];
            out[ax] = count;
        }
        match &x {
            Val::Const(c) => {
                tensor::grown(&out, c.len()).map_err(|m| self.node_err(node, m))?;
                let picks: Vec<Vec<usize>> = (0..rank)
                    .map(|d| {
                        (0..out[d])
                            .map(|i| (first[d] as i64 + i as i64 * step[d]) as usize)
                            .collect()
                    })
                    .collect();
                let t = tensor::pick(c, &picks).map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(t))
            }
            Val::Dyn { .. } if out == xs && step.iter().all(|&s| s == 1) => self.set(node, 0, x),
            Val::Dyn { name, .. } => {
                let name = name.clone();
                let attrs = vec![
                    ("starts", ints(&first)),
                    ("steps", Value::IntList(step)),
                    ("shape", ints(&out)),
                ];
                self.emit(node, 0, "slice", vec![name], vec![], attrs, out).map(drop)
            }
        }
    }

    fn gather(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["axis"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let a = self.attr_int(node, "axis", 0)?;
        let axis = axis_of(a, xs.len())
            .ok_or_else(|| self.node_err(node, format!("axis {a} out of range")))?;
        if let Val::Dyn { name: iname, shape: is } = self.need(node, 1)? {
            // Indices computed at run time (token ids into an embedding
            // table): checked by the runtime as it reads them.
            if xs[axis] == 0 {
                return Err(self.node_err(node, "the data is empty on the gathered axis"));
            }
            let out: Vec<usize> =
                xs[..axis].iter().chain(&is).chain(&xs[axis + 1..]).copied().collect();
            let attrs = vec![("axis", Value::Int(axis as i64))];
            if let (Val::Const(c), 0, 2) = (&x, axis, xs.len()) {
                // An embedding table: a weight the quantizer compresses, of
                // which the runtime decodes only the rows looked up.
                let hint = node.outputs[0].clone();
                let t = self.tensor(
                    &format!("{hint}.table"),
                    xs.clone(),
                    c.to_f32s(),
                    TensorRole::Weight,
                );
                let flat = vec![numel(&is), xs[1]];
                if flat == out {
                    return self
                        .emit(node, 0, "gather", vec![iname], vec![t], attrs, out)
                        .map(drop);
                }
                let g = self.claim(&format!("{hint}#gather"));
                self.push_layer("gather", vec![iname], vec![t], attrs, &g);
                return self
                    .emit(node, 0, "reshape", vec![g], vec![], vec![("shape", ints(&out))], out)
                    .map(drop);
            }
            let xn = self.dyn_name(&x, &node.outputs[0]);
            let mut flat = xs.clone();
            flat[axis] = numel(&is);
            if flat == out {
                return self.emit(node, 0, "gather", vec![xn, iname], vec![], attrs, out).map(drop);
            }
            let g = self.emit_tmp(&node.outputs[0], "gather", vec![xn, iname], attrs);
            return self
                .emit(node, 0, "reshape", vec![g], vec![], vec![("shape", ints(&out))], out)
                .map(drop);
        }
        let idx = self.need_const(node, 1, "indices")?;
        let dim = xs[axis] as i64;
        let mut indices = Vec::with_capacity(idx.len());
        for v in idx.to_i64s() {
            let r = if v < 0 { v + dim } else { v };
            if !(0..dim).contains(&r) {
                return Err(self.node_err(node, format!("index {v} is out of range for dim {dim}")));
            }
            indices.push(r as usize);
        }
        let out: Vec<usize> =
            xs[..axis].iter().chain(&idx.shape).chain(&xs[axis + 1..]).copied().collect();
        match &x {
            Val::Const(c) => {
                // Bounded before any index list is built (an empty constant
                // may have dims of 2^28).
                let mut flat = xs.clone();
                flat[axis] = indices.len();
                tensor::grown(&flat, c.len()).map_err(|m| self.node_err(node, m))?;
                let mut indices = Some(indices);
                let picks: Vec<Vec<usize>> = (0..xs.len())
                    .map(|d| {
                        if d == axis {
                            indices.take().unwrap_or_default()
                        } else {
                            (0..xs[d]).collect()
                        }
                    })
                    .collect();
                let t = tensor::pick(c, &picks).map_err(|m| self.node_err(node, m))?;
                let t = t.reshaped(out).map_err(|m| self.node_err(node, m))?;
                self.set(node, 0, Val::Const(t))
            }
            Val::Dyn { name, .. } => {
                let name = name.clone();
                let mut flat = xs.clone();
                flat[axis] = indices.len();
                let attrs = vec![("axis", Value::Int(axis as i64)), ("indices", ints(&indices))];
                if flat == out {
                    return self.emit(node, 0, "gather", vec![name], vec![], attrs, out).map(drop);
                }
                let g = self.emit_tmp(&node.outputs[0], "gather", vec![name], attrs);
                self.emit(node, 0, "reshape", vec![g], vec![], vec![("shape", ints(&out))], out)
                    .map(drop)
            }
        }
    }

    fn pad(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["mode", "pads", "value"])?;
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let rank = xs.len();
        let mode = self.attr_str(node, "mode", "constant")?;
        let (pads, value) = if self.opset >= 11 {
            let p = self.need_const(node, 1, "pads")?.to_i64s();
            let v = self
                .opt_const(node, 2, "constant_value")?
                .map_or(0.0, |c| c.data.first().copied().unwrap_or(0.0));
            let axes = self.opt_const(node, 3, "axes")?;
            let p = match axes {
                None => p,
                Some(a) => {
                    let a = a.to_i64s();
                    if p.len() != 2 * a.len() {
                        return Err(self.node_err(node, "pads must have two entries per axis"));
                    }
                    let mut full = vec![0i64; 2 * rank];
                    for (i, &ax) in a.iter().enumerate() {
                        let ax = axis_of(ax, rank).ok_or_else(|| {
                            self.node_err(node, format!("axis {ax} out of range"))
                        })?;
                        full[ax] = p[i];
                        full[ax + rank] = p[i + a.len()];
                    }
                    full
                }
            };
            (p, v)
        } else {
            (
                self.attr_ints(node, "pads")?.unwrap_or_default(),
                self.attr_float(node, "value", 0.0)? as f64,
            )
        };
        if pads.len() != 2 * rank {
            return Err(
                self.node_err(node, format!("pads {pads:?} must have {} entries", 2 * rank))
            );
        }
        if !matches!(mode.as_str(), "constant" | "reflect" | "edge") {
            return Err(self.node_err(
                node,
                format!("mode '{mode}' is not supported (constant, reflect, edge)"),
            ));
        }
        if pads.iter().any(|&p| p < 0) {
            return Err(self.node_err(node, "negative pads (cropping) are not supported"));
        }
        let out: Vec<usize> =
            (0..rank).map(|k| xs[k] + pads[k] as usize + pads[k + rank] as usize).collect();
        if pads.iter().all(|&p| p == 0) {
            return self.set(node, 0, x);
        }
        let hint = node.outputs[0].clone();
        let xn = self.dyn_name(&x, &hint);
        let attrs = vec![
            ("pads", Value::IntList(pads)),
            ("mode", Value::String(mode)),
            ("value", Value::Float(value)),
        ];
        self.emit(node, 0, "pad", vec![xn], vec![], attrs, out).map(drop)
    }

    fn resize(&mut self, node: &Node) -> R<()> {
        self.allow(
            node,
            &[
                "antialias",
                "axes",
                "coordinate_transformation_mode",
                "cubic_coeff_a",
                "exclude_outside",
                "extrapolation_value",
                "keep_aspect_ratio_policy",
                "mode",
                "nearest_mode",
                "scales",
            ],
        )?;
        if self.attr_int(node, "antialias", 0)? != 0 || self.attr_ints(node, "axes")?.is_some() {
            return Err(self.node_err(node, "antialias and axes are not supported"));
        }
        let x = self.need(node, 0)?;
        let xs = x.shape().to_vec();
        let upsample = node.op == "Upsample" || self.opset < 11;
        let (scales, sizes) = if upsample {
            let s = match self.input(node, 1)? {
                Some(Val::Const(c)) => Some(c.to_f32s()),
                Some(_) => return Err(self.node_err(node, "scales must be a constant")),
                None => match attr_value(node, "scales") {
                    Some(Attr::Floats(f)) => Some(f.clone()),
                    _ => None,
                },
            };
            (s, None)
        } else {
            let s =
                self.opt_const(node, 2, "scales")?.map(|c| c.to_f32s()).filter(|s| !s.is_empty());
            let z =
                self.opt_const(node, 3, "sizes")?.map(|c| c.to_i64s()).filter(|s| !s.is_empty());
            (s, z)
        };
        let rank = xs.len();
        let (out, hw_scales): (Vec<usize>, Vec<f32>) = match (scales, sizes) {
            (_, Some(z)) => {
                if z.len() != rank || z.iter().any(|&d| d < 0) {
                    return Err(self.node_err(node, format!("sizes {z:?} do not fit rank {rank}")));
                }
                let out: Vec<usize> = z.iter().map(|&d| d as usize).collect();
                let sc = (0..rank).map(|k| out[k] as f32 / xs[k].max(1) as f32).collect();
                (out, sc)
            }
            (Some(s), None) => {
                if s.len() != rank || s.iter().any(|&v| v.is_nan() || v <= 0.0 || !v.is_finite()) {
                    return Err(self.node_err(node, format!("scales {s:?} do not fit rank {rank}")));
                }
                let out = (0..rank).map(|k| (xs[k] as f32 * s[k]).floor() as usize).collect();
                (out, s)
            }
            (None, None) => return Err(self.node_err(node, "neither scales nor sizes is given")),
        };
        if rank < 2 || (0..rank - 2).any(|k| out[k] != xs[k]) {
            return Err(self.node_err(
                node,
                format!("only the last two axes may be resized ({xs:?} -> {out:?})"),
            ));
        }
        let mode = self.attr_str(node, "mode", "nearest")?;
        let default_ct = if upsample { "asymmetric" } else { "half_pixel" };
        let ct = self.attr_str(node, "coordinate_transformation_mode", default_ct)?;
        let nearest = self.attr_str(
            node,
            "nearest_mode",
            if upsample { "floor" } else { "round_prefer_floor" },
        )?;
        let mode = match mode.as_str() {
            "nearest" | "linear" | "cubic" => mode,
            "bilinear" if upsample => "linear".into(),
            other => return Err(self.node_err(node, format!("mode '{other}' is not supported"))),
        };
        if !matches!(
            ct.as_str(),
            "half_pixel"
                | "pytorch_half_pixel"
                | "align_corners"
                | "asymmetric"
                | "tf_half_pixel_for_nearest"
        ) {
            return Err(self.node_err(
                node,
                format!("coordinate_transformation_mode '{ct}' is not supported"),
            ));
        }
        let hint = node.outputs[0].clone();
        let xn = self.dyn_name(&x, &hint);
        let attrs = vec![
            ("shape", ints(&out)),
            ("mode", Value::String(mode)),
            ("coordinate_transformation_mode", Value::String(ct)),
            ("nearest_mode", Value::String(nearest)),
            (
                "scales",
                Value::FloatList(vec![hw_scales[rank - 2] as f64, hw_scales[rank - 1] as f64]),
            ),
            ("cubic_coeff_a", Value::Float(self.attr_float(node, "cubic_coeff_a", -0.75)? as f64)),
            ("exclude_outside", Value::Int(self.attr_int(node, "exclude_outside", 0)?)),
        ];
        self.emit(node, 0, "resize", vec![xn], vec![], attrs, out).map(drop)
    }
}

struct Spatial {
    strides: Vec<usize>,
    dilations: Vec<usize>,
    /// Begin pads of each spatial axis, then end pads.
    pads: Vec<usize>,
}

/// ONNX Slice on one axis: the first index and the element count.
fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> Result<(usize, usize), String> {
    if step == 0 {
        return Err("a slice step is 0".into());
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    let (s, e) = if step > 0 {
        (s.clamp(0, d), e.clamp(0, d))
    } else {
        (s.clamp(-1, d - 1), e.clamp(-1, d - 1))
    };
    let count = if step > 0 {
        if e > s {
            ((e - s) as u64).div_ceil(step as u64)
        } else {
            0
        }
    } else if s > e {
        ((s - e) as u64).div_ceil(step.unsigned_abs())
    } else {
        0
    };
    Ok((if count == 0 { 0 } else { s as usize }, count as usize))
}

/// Constant matmul (f32 products summed in f64, rounded once).
fn const_matmul(a: &Const, b: &Const, out: &[usize]) -> Result<Const, String> {
    let a2: Vec<usize> = if a.shape.len() == 1 { vec![1, a.shape[0]] } else { a.shape.clone() };
    let b2: Vec<usize> = if b.shape.len() == 1 { vec![b.shape[0], 1] } else { b.shape.clone() };
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    let batch = tensor::broadcast(&[&a2[..a2.len() - 2], &b2[..b2.len() - 2]])?;
    let nb = tensor::numel(&batch)?;
    tensor::grown(out, a.len().max(b.len()))?;
    // Folding runs before anything else is bounded: cap its work too.
    let work = [nb, m, k, n].iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if work.is_none_or(|w| w > 1 << 31) {
        return Err(format!(
            "folding a matmul of {:?} and {:?} is too much work",
            a.shape, b.shape
        ));
    }
    let ai = tensor::broadcast_index(&a2[..a2.len() - 2], &batch);
    let bi = tensor::broadcast_index(&b2[..b2.len() - 2], &batch);
    let mut data = Vec::with_capacity(nb * m * n);
    for t in 0..nb {
        let (ao, bo) = (ai[t] * m * k, bi[t] * k * n);
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| a.data[ao + i * k + p] * b.data[bo + p * n + j]).sum();
                data.push(s);
            }
        }
    }
    let dtype =
        if a.dtype == Dtype::Float || b.dtype == Dtype::Float { Dtype::Float } else { Dtype::Int };
    Const::new(dtype, out.to_vec(), data)
}

fn unary_fn(op: &str, attrs: &[(&str, Value)]) -> Option<Box<dyn Fn(f64) -> f64>> {
    let attr = |k: &str| {
        attrs.iter().find(|(n, _)| *n == k).and_then(|(_, v)| {
            if let Value::Float(f) = v {
                Some(*f)
            } else {
                None
            }
        })
    };
    let f32op =
        |f: fn(f32) -> f32| -> Box<dyn Fn(f64) -> f64> { Box::new(move |x| f(x as f32) as f64) };
    Some(match op {
        "relu" => Box::new(|x: f64| if x < 0.0 { 0.0 } else { x }),
        "neg" => Box::new(|x: f64| -x),
        "abs" => Box::new(f64::abs),
        "sqrt" => f32op(f32::sqrt),
        "reciprocal" => f32op(|x| 1.0 / x),
        "exp" => f32op(f32::exp),
        "log" => f32op(f32::ln),
        "floor" => Box::new(f64::floor),
        "ceil" => Box::new(f64::ceil),
        "round" => Box::new(f64::round_ties_even),
        "sign" => Box::new(|x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        "not" => Box::new(|x: f64| f64::from(u8::from(x == 0.0))),
        "sigmoid" => f32op(|x| 1.0 / (1.0 + (-x).exp())),
        "tanh" => f32op(f32::tanh),
        "sin" => f32op(f32::sin),
        "cos" => f32op(f32::cos),
        "hardsigmoid" => {
            let (a, b) = (attr("alpha")? as f32, attr("beta")? as f32);
            Box::new(move |x| (a * x as f32 + b).clamp(0.0, 1.0) as f64)
        }
        _ => return None,
    })
}

fn binary_fn(op: &str) -> Option<fn(f64, f64) -> f64> {
    Some(match op {
        "add" => |a, b| a + b,
        "sub" => |a, b| a - b,
        "mul" => |a, b| a * b,
        "div" => |a, b| a / b,
        "pow" => |a, b| (a as f32).powf(b as f32) as f64,
        "max" => |a: f64, b: f64| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) },
        "min" => |a: f64, b: f64| if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) },
        "equal" => |a, b| f64::from(u8::from(a == b)),
        "less" => |a, b| f64::from(u8::from(a < b)),
        "greater" => |a, b| f64::from(u8::from(a > b)),
        "less_or_equal" => |a, b| f64::from(u8::from(a <= b)),
        "greater_or_equal" => |a, b| f64::from(u8::from(a >= b)),
        "mod" => |a: f64, b: f64| {
            let r = a % b;
            if r != 0.0 && (r < 0.0) != (b < 0.0) {
                r + b
            } else {
                r
            }
        },
        "fmod" => |a, b| a % b,
        _ => return None,
    })
}

fn reduce_fn(op: &str) -> fn(&[f64]) -> f64 {
    match op {
        "reduce_sum" => |v| v.iter().sum(),
        "reduce_mean" => |v| v.iter().sum::<f64>() / v.len() as f64,
        "reduce_max" => |v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "reduce_min" => |v| v.iter().copied().fold(f64::INFINITY, f64::min),
        "reduce_prod" => |v| v.iter().product(),
        "reduce_l1" => |v| v.iter().map(|x| x.abs()).sum(),
        "reduce_l2" => |v| v.iter().map(|x| x * x).sum::<f64>().sqrt(),
        "reduce_sum_square" => |v| v.iter().map(|x| x * x).sum(),
        _ => |v| v.iter().map(|x| x.exp()).sum::<f64>().ln(),
    }
}

/// Replaces the chain exporters write for a layer norm over the last axis,
///
/// ```text
/// m = reduce_mean(x, last); d = x - m; v = reduce_mean(d ^ 2, last)
/// y = d / sqrt(v + eps) * gamma + beta
/// ```
///
/// with one `layer_norm` layer (the same function: biased variance over
/// the last axis). Every intermediate must be read only inside the chain,
/// `eps`, `2`, `gamma` and `beta` must be constants, and gamma and beta
/// must vary only along the last axis.
fn fuse_layer_norms(graph: &mut Graph, tensors: &mut Vec<GraphTensor>) {
    // All matches are found in one scan (their intermediates are read once,
    // so no two chains share a layer), then applied together: linear work
    // however many chains a model has.
    let matches = find_layer_norms(graph, tensors);
    if matches.is_empty() {
        return;
    }
    let mut taken: HashSet<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let mut remove: HashSet<usize> = HashSet::new();
    for m in matches {
        let LayerNormMatch { remove: chain, x, eps, gamma, beta, out, at } = m;
        if chain.iter().chain([&at]).any(|i| remove.contains(i)) {
            continue;
        }
        let d = gamma.len();
        let mut unique = |s: String| {
            let mut n = s;
            while !taken.insert(n.clone()) {
                n.push('#');
            }
            n
        };
        let (gn, bn) = (unique(format!("{out}.gamma")), unique(format!("{out}.beta")));
        tensors.push(GraphTensor {
            name: gn.clone(),
            shape: vec![d],
            data: gamma,
            role: TensorRole::Constant,
        });
        tensors.push(GraphTensor {
            name: bn.clone(),
            shape: vec![d],
            data: beta,
            role: TensorRole::Constant,
        });
        graph.layers[at] = Layer {
            op: "layer_norm".into(),
            inputs: vec![x],
            outputs: vec![out],
            weights: vec![gn, bn],
            attrs: vec![("eps".into(), Value::Float(eps as f64))],
        };
        remove.extend(chain);
    }
    let mut i = 0;
    graph.layers.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
}

struct LayerNormMatch {
    /// Layers of the chain to drop (all but the last, `at`).
    remove: Vec<usize>,
    x: String,
    eps: f32,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    out: String,
    at: usize,
}

fn find_layer_norms(graph: &Graph, tensors: &[GraphTensor]) -> Vec<LayerNormMatch> {
    let mut matches = Vec::new();
    let producer: HashMap<&str, usize> = graph
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for l in &graph.layers {
        for i in &l.inputs {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.outputs {
        *readers.entry(o.as_str()).or_default() += 1;
    }
    let layer = |v: &str| producer.get(v).map(|&i| (i, &graph.layers[i]));
    let by_name: HashMap<&str, &GraphTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    // The values of a `constant` layer's output.
    let constant = |v: &str| -> Option<&GraphTensor> {
        let (_, l) = layer(v)?;
        (l.op == "constant").then(|| by_name.get(l.weights.first()?.as_str()).copied())?
    };
    let scalar = |v: &str| constant(v).filter(|t| t.data.len() == 1).map(|t| t.data[0]);
    // A constant varying only along the last axis, as a [d] vector.
    let along_last = |v: &str, d: usize| -> Option<Vec<f32>> {
        let t = constant(v)?;
        let last_only = t.shape.iter().rev().skip(1).all(|&s| s == 1);
        match t.data.len() {
            n if n == d && last_only && t.shape.last() == Some(&d) => Some(t.data.clone()),
            1 => Some(vec![t.data[0]; d]),
            _ => None,
        }
    };
    let single = |v: &str| readers.get(v).copied().unwrap_or(0) == 1;
    let last_axis_mean = |l: &Layer, rank: usize| {
        l.op == "reduce_mean"
            && l.attr("axes") == Some(&Value::IntList(vec![rank as i64 - 1]))
            && l.attr("keepdims") == Some(&Value::Int(1))
    };
    let other = |l: &Layer, v: &str| -> Option<String> {
        match l.inputs.as_slice() {
            [a, b] if a == v => Some(b.clone()),
            [a, b] if b == v => Some(a.clone()),
            _ => None,
        }
    };
    for (at, add) in graph.layers.iter().enumerate() {
        if add.op != "add" || add.inputs.len() != 2 {
            continue;
        }
        for (y, beta_v) in [(&add.inputs[0], &add.inputs[1]), (&add.inputs[1], &add.inputs[0])] {
            let Some((mul_i, mul)) = layer(y) else { continue };
            if mul.op != "mul" || !single(y) {
                continue;
            }
            for (n, gamma_v) in [(&mul.inputs[0], &mul.inputs[1]), (&mul.inputs[1], &mul.inputs[0])]
            {
                let Some((div_i, div)) = layer(n) else { continue };
                if div.op != "div" || div.inputs.len() != 2 || !single(n) {
                    continue;
                }
                let (dv, sv) = (&div.inputs[0], &div.inputs[1]);
                let found = (|| {
                    let (sqrt_i, sqrt) = layer(sv)?;
                    (sqrt.op == "sqrt" && single(sv)).then_some(())?;
                    let ev = &sqrt.inputs[0];
                    let (eadd_i, eadd) = layer(ev)?;
                    (eadd.op == "add" && single(ev)).then_some(())?;
                    let (vv, eps) = eadd.inputs.iter().find_map(|i| {
                        let o = other(eadd, i)?;
                        Some((i.clone(), scalar(&o)?))
                    })?;
                    let (var_i, var) = layer(&vv)?;
                    let pv = var.inputs.first()?;
                    let (pow_i, pow) = layer(pv)?;
                    (pow.op == "pow" && single(pv) && single(&vv)).then_some(())?;
                    (pow.inputs.first()? == dv && scalar(pow.inputs.get(1)?)? == 2.0)
                        .then_some(())?;
                    let (sub_i, sub) = layer(dv)?;
                    (sub.op == "sub" && sub.inputs.len() == 2).then_some(())?;
                    // d is read by the pow and the div only.
                    (readers.get(dv.as_str()).copied() == Some(2)).then_some(())?;
                    let (x, mv) = (&sub.inputs[0], &sub.inputs[1]);
                    let (mean_i, mean) = layer(mv)?;
                    (mean.inputs.first()? == x && single(mv)).then_some(())?;
                    Some((
                        x.clone(),
                        eps,
                        [sqrt_i, eadd_i, var_i, pow_i, sub_i, mean_i],
                        var.clone(),
                        mean.clone(),
                    ))
                })();
                let Some((x, eps, chain, var, mean)) = found else { continue };
                // The rank and last dim of x, from the mean's axes (planning
                // checks the rest: the runtime plans what this writes).
                let Some(Value::IntList(axes)) = mean.attr("axes") else { continue };
                let rank = axes[0] as usize + 1;
                if !last_axis_mean(&mean, rank) || !last_axis_mean(&var, rank) || eps < 0.0 {
                    continue;
                }
                let Some(gamma_t) = constant(gamma_v) else { continue };
                let d = *gamma_t.shape.last().unwrap_or(&gamma_t.data.len());
                let (Some(gamma), Some(beta)) = (along_last(gamma_v, d), along_last(beta_v, d))
                else {
                    continue;
                };
                let mut remove = chain.to_vec();
                remove.extend([mul_i, div_i]);
                matches.push(LayerNormMatch {
                    remove,
                    x,
                    eps,
                    gamma,
                    beta,
                    out: add.outputs[0].clone(),
                    at,
                });
            }
        }
    }
    matches
}

/// Drops layers whose output nothing reads (and tensors no layer names),
/// e.g. values only their Shape was taken of.
fn prune(mut graph: Graph, tensors: Vec<GraphTensor>) -> (Graph, Vec<GraphTensor>) {
    loop {
        let mut read: HashSet<&str> = graph.outputs.iter().map(String::as_str).collect();
        for l in &graph.layers {
            read.extend(l.inputs.iter().map(String::as_str));
        }
        let keep: Vec<bool> = graph
            .layers
            .iter()
            .map(|l| l.outputs.iter().any(|o| read.contains(o.as_str())))
            .collect();
        if keep.iter().all(|&k| k) {
            break;
        }
        let mut k = keep.into_iter();
        graph.layers.retain(|_| k.next().unwrap_or(true));
    }
    let named: HashSet<&str> =
        graph.layers.iter().flat_map(|l| l.weights.iter().map(String::as_str)).collect();
    let tensors = tensors.into_iter().filter(|t| named.contains(t.name.as_str())).collect();
    (graph, tensors)
}

#[cfg(test)]
mod tests;
