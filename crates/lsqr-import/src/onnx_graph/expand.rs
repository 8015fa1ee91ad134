//! ONNX ops that are compositions of ops the importer already converts,
//! rewritten as those ops (as ONNX defines many of them, by a function
//! body): the runtime gains no op, and each part is converted, folded and
//! checked as any node would be.
//!
//! An expansion sees the shapes of its inputs (every value's shape is known
//! at import), so shape-dependent rewrites (DepthToSpace's reshapes, Trilu's
//! mask) are exact. Its intermediate values get names no ONNX value has.

use super::parse::{Attr, Node};
use super::tensor::{Const, Dtype};
use super::{axis_of, numel, Converter, Val, R};

/// The ops [`Converter::by_expansion`] rewrites.
pub(super) const EXPANDED_OPS: &[&str] = &[
    "ConvInteger",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RNN",
    "Celu",
    "CastLike",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "EyeLike",
    "GatherElements",
    "GRU",
    "GroupNormalization",
    "Hardmax",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "PRelu",
    "ReduceLogSum",
    "Selu",
    "Shrink",
    "Softsign",
    "SpaceToDepth",
    "Tan",
    "ThresholdedRelu",
    "Trilu",
    "Xor",
];

/// The attributes of ONNX's Conv, which the integer convolutions share
/// (and pass on to the Conv they become).
const CONV_ATTRS: &[&str] = &["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];

/// The nodes and constants an op is rewritten into.
struct Expansion {
    base: String,
    nodes: Vec<Node>,
    consts: Vec<(String, Const)>,
    names: Vec<String>,
}

impl Expansion {
    fn new(node: &Node) -> Self {
        let base = node.outputs.iter().find(|o| !o.is_empty()).cloned().unwrap_or_default();
        Expansion { base, nodes: Vec::new(), consts: Vec::new(), names: Vec::new() }
    }

    fn fresh(&mut self, cx: &Converter<'_>, what: &str) -> String {
        let mut k = self.names.len();
        loop {
            let name = format!("{}#{what}{k}", self.base);
            let known = cx.vals.contains_key(&name)
                || cx.sources.contains_key(name.as_str())
                || cx.uses.contains_key(&name)
                || self.names.contains(&name);
            if !known {
                self.names.push(name.clone());
                return name;
            }
            k += 1;
        }
    }

    fn konst(&mut self, cx: &Converter<'_>, c: Const) -> String {
        let name = self.fresh(cx, "const");
        self.consts.push((name.clone(), c));
        name
    }

    fn scalar(&mut self, cx: &Converter<'_>, v: f64) -> String {
        self.konst(
            cx,
            Const { dtype: Dtype::Float, shape: vec![], data: std::rc::Rc::new(vec![v]) },
        )
    }

    fn ints(&mut self, cx: &Converter<'_>, v: &[i64]) -> String {
        self.konst(cx, Const::ints(v))
    }

    /// Adds `op(inputs)` writing `out`.
    fn node_to(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, out: &str) {
        self.nodes.push(Node {
            name: String::new(),
            op: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.to_string()],
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }

    /// Adds `op(inputs)` writing a fresh value; its name.
    fn node(
        &mut self,
        cx: &Converter<'_>,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let out = self.fresh(cx, &op.to_ascii_lowercase());
        self.node_to(op, inputs, attrs, &out);
        out
    }

    /// A reduction over `axes` with kept dims, in the form the model's
    /// opset reads (axes as an input from opset 13 for ReduceSum, 18 for
    /// the others).
    fn reduce(&mut self, cx: &Converter<'_>, op: &str, x: &str, axes: &[usize]) -> String {
        let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        let from = if op == "ReduceSum" { 13 } else { 18 };
        if cx.opset >= from {
            let a = self.ints(cx, &axes);
            self.node(cx, op, &[x, &a], vec![("keepdims", Attr::Int(1))])
        } else {
            self.node(cx, op, &[x], vec![("axes", Attr::Ints(axes)), ("keepdims", Attr::Int(1))])
        }
    }

    fn reshape(&mut self, cx: &Converter<'_>, x: &str, shape: &[usize]) -> String {
        let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let s = self.ints(cx, &s);
        self.node(cx, "Reshape", &[x, &s], vec![])
    }
}

impl Converter<'_> {
    /// Converts `node` through its expansion.
    pub(super) fn by_expansion(&mut self, node: &Node) -> R<()> {
        let mut e = Expansion::new(node);
        self.expansion(node, &mut e)?;
        self.convert_expansion(node, e)
    }

    /// Converts `node` with its input `k` reshaped to `shape` (the other
    /// inputs and the attributes as `node` has them): an operand aligned
    /// the way an older opset aligned it (`super::legacy`).
    pub(super) fn with_input_reshaped(&mut self, node: &Node, k: usize, shape: &[usize]) -> R<()> {
        let mut e = Expansion::new(node);
        let mut inputs = node.inputs.clone();
        let input = inputs
            .get_mut(k)
            .ok_or_else(|| self.node_err(node, format!("input {k} is missing")))?;
        *input = e.reshape(self, input, shape);
        e.nodes.push(Node { inputs, ..node.clone() });
        self.convert_expansion(node, e)
    }

    /// Converts the parts `e` rewrote `node` into.
    fn convert_expansion(&mut self, node: &Node, mut e: Expansion) -> R<()> {
        for (name, c) in e.consts.drain(..) {
            self.vals.insert(name, Val::Const(c));
        }
        // Every read counts, so that no fusion takes a value another part
        // still reads (the original node's own count stays: conservative).
        for n in &e.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                *self.uses.entry(i.clone()).or_default() += 1;
                if let Some(Val::Dyn { name, .. }) = self.vals.get(i) {
                    *self.lsq_uses.entry(name.clone()).or_default() += 1;
                }
            }
        }
        for part in &e.nodes {
            self.node(part).map_err(|err| {
                let inner = err.message.split_once("): ").map_or(err.message.as_str(), |(_, m)| m);
                self.node_err(node, format!("in its expansion, {}: {inner}", part.op))
            })?;
        }
        Ok(())
    }

    fn expansion(&mut self, node: &Node, e: &mut Expansion) -> R<()> {
        let out = node.outputs.first().cloned().unwrap_or_default();
        let x = node.inputs.first().cloned().unwrap_or_default();
        let float = |cx: &Self, name: &str, default: f32| cx.attr_float(node, name, default);
        match node.op.as_str() {
            "PRelu" => {
                self.allow(node, &[])?;
                let slope = self.input_name(node, 1)?;
                let zero = e.scalar(self, 0.0);
                let neg = e.node(self, "Less", &[&x, &zero], vec![]);
                let scaled = e.node(self, "Mul", &[&x, &slope], vec![]);
                e.node_to("Where", &[&neg, &scaled, &x], vec![], &out);
            }
            "Softsign" => {
                self.allow(node, &[])?;
                let one = e.scalar(self, 1.0);
                let a = e.node(self, "Abs", &[&x], vec![]);
                let d = e.node(self, "Add", &[&a, &one], vec![]);
                e.node_to("Div", &[&x, &d], vec![], &out);
            }
            "Selu" => {
                self.allow(node, &["alpha", "gamma"])?;
                let alpha = float(self, "alpha", 1.673_263_2)?;
                let gamma = e.scalar(self, float(self, "gamma", 1.050_701)? as f64);
                let elu = e.node(self, "Elu", &[&x], vec![("alpha", Attr::Float(alpha))]);
                e.node_to("Mul", &[&elu, &gamma], vec![], &out);
            }
            "Celu" => {
                self.allow(node, &["alpha"])?;
                let alpha = float(self, "alpha", 1.0)? as f64;
                let a = e.scalar(self, alpha);
                let scaled = e.node(self, "Div", &[&x, &a], vec![]);
                let elu = e.node(self, "Elu", &[&scaled], vec![("alpha", Attr::Float(1.0))]);
                e.node_to("Mul", &[&elu, &a], vec![], &out);
            }
            "ThresholdedRelu" => {
                self.allow(node, &["alpha"])?;
                let alpha = e.scalar(self, float(self, "alpha", 1.0)? as f64);
                let zero = e.scalar(self, 0.0);
                let above = e.node(self, "Greater", &[&x, &alpha], vec![]);
                e.node_to("Where", &[&above, &x, &zero], vec![], &out);
            }
            "Shrink" => {
                self.allow(node, &["bias", "lambd"])?;
                let bias = float(self, "bias", 0.0)? as f64;
                let lambd = float(self, "lambd", 0.5)? as f64;
                let (b, l, nl) =
                    (e.scalar(self, bias), e.scalar(self, lambd), e.scalar(self, -lambd));
                let zero = e.scalar(self, 0.0);
                let above = e.node(self, "Greater", &[&x, &l], vec![]);
                let below = e.node(self, "Less", &[&x, &nl], vec![]);
                let down = e.node(self, "Sub", &[&x, &b], vec![]);
                let up = e.node(self, "Add", &[&x, &b], vec![]);
                let low = e.node(self, "Where", &[&below, &up, &zero], vec![]);
                e.node_to("Where", &[&above, &down, &low], vec![], &out);
            }
            "Mish" => {
                self.allow(node, &[])?;
                let sp = e.node(self, "Softplus", &[&x], vec![]);
                let t = e.node(self, "Tanh", &[&sp], vec![]);
                e.node_to("Mul", &[&x, &t], vec![], &out);
            }
            "Tan" | "Cosh" => {
                self.allow(node, &[])?;
                if node.op == "Tan" {
                    let s = e.node(self, "Sin", &[&x], vec![]);
                    let c = e.node(self, "Cos", &[&x], vec![]);
                    e.node_to("Div", &[&s, &c], vec![], &out);
                } else {
                    let half = e.scalar(self, 0.5);
                    let n = e.node(self, "Neg", &[&x], vec![]);
                    let a = e.node(self, "Exp", &[&x], vec![]);
                    let b = e.node(self, "Exp", &[&n], vec![]);
                    let s = e.node(self, "Add", &[&a, &b], vec![]);
                    e.node_to("Mul", &[&s, &half], vec![], &out);
                }
            }
            "IsNaN" => {
                self.allow(node, &[])?;
                let same = e.node(self, "Equal", &[&x, &x], vec![]);
                e.node_to("Not", &[&same], vec![], &out);
            }
            "IsInf" => {
                self.allow(node, &["detect_negative", "detect_positive"])?;
                let neg = self.attr_int(node, "detect_negative", 1)? != 0;
                let pos = self.attr_int(node, "detect_positive", 1)? != 0;
                let max = e.scalar(self, f32::MAX as f64);
                let min = e.scalar(self, f32::MIN as f64);
                match (neg, pos) {
                    (true, true) => {
                        let a = e.node(self, "Abs", &[&x], vec![]);
                        e.node_to("Greater", &[&a, &max], vec![], &out);
                    }
                    (false, true) => e.node_to("Greater", &[&x, &max], vec![], &out),
                    (true, false) => e.node_to("Less", &[&x, &min], vec![], &out),
                    (false, false) => {
                        // Never true: x < -inf.
                        let a = e.node(self, "Abs", &[&x], vec![]);
                        let zero = e.scalar(self, 0.0);
                        e.node_to("Less", &[&a, &zero], vec![], &out);
                    }
                }
            }
            "Xor" => {
                self.allow(node, &[])?;
                let b = self.input_name(node, 1)?;
                let same = e.node(self, "Equal", &[&x, &b], vec![]);
                e.node_to("Not", &[&same], vec![], &out);
            }
            "CastLike" => {
                self.allow(node, &["saturate"])?;
                let like = self.input_name(node, 1)?;
                // A constant's kind, or the type the model declares.
                let to = match self.need(node, 1)? {
                    Val::Const(c) => match c.dtype {
                        Dtype::Float => 1,
                        Dtype::Int => 7,
                        Dtype::Bool => 9,
                    },
                    Val::Dyn { .. } => *self.elem_types.get(&like).ok_or_else(|| {
                        self.node_err(node, format!("the model declares no type for '{like}'"))
                    })? as i64,
                };
                e.node_to("Cast", &[&x], vec![("to", Attr::Int(to))], &out);
            }
            "Clip" => {
                // Bounds computed at run time (constant ones convert directly).
                let mut y = x.clone();
                for (k, op) in [(1, "Max"), (2, "Min")] {
                    if let Some(bound) = node.inputs.get(k).filter(|b| !b.is_empty()) {
                        y = e.node(self, op, &[&y, bound], vec![]);
                    }
                }
                e.node_to("Identity", &[&y], vec![], &out);
            }
            "Gemm" => {
                // A computed B (or a constant A): the general form, as MatMul.
                let alpha = float(self, "alpha", 1.0)?;
                let beta = float(self, "beta", 1.0)?;
                let mut operand = |cx: &mut Self, k: usize, attr: &str| -> R<String> {
                    let v = cx.input_name(node, k)?;
                    Ok(if cx.attr_int(node, attr, 0)? != 0 {
                        e.node(cx, "Transpose", &[&v], vec![("perm", Attr::Ints(vec![1, 0]))])
                    } else {
                        v
                    })
                };
                let a = operand(self, 0, "transA")?;
                let b = operand(self, 1, "transB")?;
                let mut p = e.node(self, "MatMul", &[&a, &b], vec![]);
                if alpha != 1.0 {
                    let al = e.scalar(self, alpha as f64);
                    p = e.node(self, "Mul", &[&p, &al], vec![]);
                }
                match node.inputs.get(2).filter(|c| !c.is_empty()) {
                    Some(c) if beta != 0.0 => {
                        let mut c = c.clone();
                        if beta != 1.0 {
                            let be = e.scalar(self, beta as f64);
                            c = e.node(self, "Mul", &[&c, &be], vec![]);
                        }
                        e.node_to("Add", &[&p, &c], vec![], &out);
                    }
                    _ => e.node_to("Identity", &[&p], vec![], &out),
                }
            }
            "Tile" => {
                // [d0, d1, ...] as [1, d0, 1, d1, ...], expanded to
                // [r0, d0, r1, d1, ...], then merged pairwise.
                let s = self.need(node, 0)?.shape().to_vec();
                let reps = self.need_const(node, 1, "repeats")?.to_i64s();
                let reps: Vec<usize> =
                    reps.iter().filter_map(|&r| usize::try_from(r).ok()).collect();
                if reps.len() != s.len() {
                    return Err(self.node_err(node, format!("repeats do not fit shape {s:?}")));
                }
                let spread: Vec<usize> = s.iter().flat_map(|&d| [1, d]).collect();
                let wide: Vec<i64> =
                    s.iter().zip(&reps).flat_map(|(&d, &r)| [r as i64, d as i64]).collect();
                let tiled: Vec<usize> =
                    s.iter().zip(&reps).map(|(&d, &r)| d.saturating_mul(r)).collect();
                let r = e.reshape(self, &x, &spread);
                let w = e.ints(self, &wide);
                let big = e.node(self, "Expand", &[&r, &w], vec![]);
                let t: Vec<i64> = tiled.iter().map(|&d| d as i64).collect();
                let t = e.ints(self, &t);
                e.node_to("Reshape", &[&big, &t], vec![], &out);
            }
            "Hardmax" => {
                // 1 at the first largest value along `axis`; before opset 13
                // the axis split a 2-D view, the same only for the last axis.
                self.allow(node, &["axis"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let axis = self.attr_axis(node, if self.opset >= 13 { -1 } else { 1 }, s.len())?;
                if self.opset < 13 && axis + 1 != s.len() {
                    return Err(
                        self.node_err(node, "before opset 13, only the last axis is supported")
                    );
                }
                let a = e.node(
                    self,
                    "ArgMax",
                    &[&x],
                    vec![("axis", Attr::Int(axis as i64)), ("keepdims", Attr::Int(1))],
                );
                let mut ishape = vec![1; s.len()];
                ishape[axis] = s[axis];
                bounded(self, node, s[axis])?;
                let data = (0..s[axis]).map(|k| k as f64).collect();
                let idx =
                    Const::new(Dtype::Int, ishape, data).map_err(|m| self.node_err(node, m))?;
                let idx = e.konst(self, idx);
                let hit = e.node(self, "Equal", &[&a, &idx], vec![]);
                e.node_to("Cast", &[&hit], vec![("to", Attr::Int(1))], &out);
            }
            "BatchNormalization" => {
                // Statistics computed at run time (constant ones fold into
                // a per-channel affine map, or into the conv before).
                let s = self.need(node, 0)?.shape().to_vec();
                if s.len() < 2 {
                    return Err(
                        self.node_err(node, format!("input has shape {s:?}, expected [n, c, ...]"))
                    );
                }
                let eps = e.scalar(self, float(self, "epsilon", 1e-5)? as f64);
                let mut cshape = vec![s[1]];
                cshape.resize(s.len() - 1, 1);
                let [g, b, m, v] = [1, 2, 3, 4].map(|k| self.input_name(node, k));
                let [g, b, m, v] = [g?, b?, m?, v?].map(|t| e.reshape(self, &t, &cshape));
                let d = e.node(self, "Sub", &[&x, &m], vec![]);
                let ve = e.node(self, "Add", &[&v, &eps], vec![]);
                let sd = e.node(self, "Sqrt", &[&ve], vec![]);
                let n = e.node(self, "Div", &[&d, &sd], vec![]);
                let y = e.node(self, "Mul", &[&n, &g], vec![]);
                e.node_to("Add", &[&y, &b], vec![], &out);
            }
            "GatherElements" => {
                // Constant indices: a Gather of the flattened data.
                self.allow(node, &["axis"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let idx = self.need_const(node, 1, "indices")?;
                let axis = self.attr_axis(node, 0, s.len())?;
                let t = idx.shape.clone();
                if t.len() != s.len()
                    || t.iter().zip(&s).enumerate().any(|(d, (&a, &b))| d != axis && a > b)
                {
                    return Err(self.node_err(node, format!("indices {t:?} do not fit data {s:?}")));
                }
                if idx.len() > super::tensor::MAX_GROWN_ELEMENTS {
                    return Err(self.node_err(node, "too many indices"));
                }
                let strides = super::tensor::strides(&s);
                let tstrides = super::tensor::strides(&t);
                let mut flat = Vec::with_capacity(idx.len());
                for (p, &v) in idx.to_i64s().iter().enumerate() {
                    let dim = s[axis] as i64;
                    let r = if v < 0 { v + dim } else { v };
                    if !(0..dim).contains(&r) {
                        return Err(
                            self.node_err(node, format!("index {v} is out of range for {dim}"))
                        );
                    }
                    let mut at = 0;
                    for d in 0..t.len() {
                        let coord = if d == axis { r as usize } else { p / tstrides[d] % t[d] };
                        at += coord * strides[d];
                    }
                    flat.push(at as i64);
                }
                let flat_x = e.reshape(self, &x, &[numel(&s)]);
                let i = e.ints(self, &flat);
                let g = e.node(self, "Gather", &[&flat_x, &i], vec![("axis", Attr::Int(0))]);
                let ts: Vec<i64> = t.iter().map(|&d| d as i64).collect();
                let ts = e.ints(self, &ts);
                e.node_to("Reshape", &[&g, &ts], vec![], &out);
            }
            "CumSum" => {
                // Prefix sums in log2(n) steps: y += y shifted by 1, 2, 4, ...
                // along the axis.
                self.allow(node, &["exclusive", "reverse"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let a = self.need_const(node, 1, "axis")?;
                let a = super::scalar_of(&a, "axis").map_err(|m| self.node_err(node, m))? as i64;
                let axis = axis_of(a, s.len()).ok_or_else(|| {
                    self.node_err(node, format!("axis {a} is out of range for rank {}", s.len()))
                })?;
                let exclusive = self.attr_int(node, "exclusive", 0)? != 0;
                let reverse = self.attr_int(node, "reverse", 0)? != 0;
                let n = s[axis];
                // y shifted by k along the axis, zeros shifted in: a Slice
                // and a Pad (no constant as large as the input).
                let rank = s.len();
                let shift = |cx: &Self, e: &mut Expansion, y: &str, k: usize| -> String {
                    let k = k.min(n);
                    let (from, to) = if reverse { (k, n) } else { (0, n - k) };
                    let st = e.ints(cx, &[from as i64]);
                    let en = e.ints(cx, &[to as i64]);
                    let ax = e.ints(cx, &[axis as i64]);
                    let kept = e.node(cx, "Slice", &[y, &st, &en, &ax], vec![]);
                    let mut pads = vec![0i64; 2 * rank];
                    pads[if reverse { rank + axis } else { axis }] = k as i64;
                    let pads = e.ints(cx, &pads);
                    e.node(cx, "Pad", &[&kept, &pads], vec![])
                };
                let mut y = if exclusive { shift(self, e, &x, 1) } else { x.clone() };
                let mut k = 1;
                while k < n {
                    let sh = shift(self, e, &y, k);
                    y = e.node(self, "Add", &[&y, &sh], vec![]);
                    k *= 2;
                }
                e.node_to("Identity", &[&y], vec![], &out);
            }
            "LRN" => {
                // x / (bias + alpha * mean of x² over `size` channels)^beta,
                // the mean as an average pool over [channels, 1] that counts
                // the zero padding (ONNX divides by size, padded or not).
                self.allow(node, &["alpha", "beta", "bias", "size"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let size = self.attr_int(node, "size", 0)?;
                let size = usize::try_from(size).ok().filter(|&k| k > 0 && k <= 1 << 16);
                let size = size.ok_or_else(|| self.node_err(node, "size must be positive"))?;
                if s.len() < 3 {
                    return Err(
                        self.node_err(node, format!("input has shape {s:?}, expected [n, c, ...]"))
                    );
                }
                let alpha = e.scalar(self, float(self, "alpha", 1e-4)? as f64);
                let beta = e.scalar(self, float(self, "beta", 0.75)? as f64);
                let bias = e.scalar(self, float(self, "bias", 1.0)? as f64);
                let sq = e.node(self, "Mul", &[&x, &x], vec![]);
                let r = e.reshape(self, &sq, &[s[0], 1, s[1], numel(&s[2..])]);
                let (lo, hi) = ((size - 1) / 2, size - 1 - (size - 1) / 2);
                let pool = e.node(
                    self,
                    "AveragePool",
                    &[&r],
                    vec![
                        ("kernel_shape", Attr::Ints(vec![size as i64, 1])),
                        ("pads", Attr::Ints(vec![lo as i64, 0, hi as i64, 0])),
                        ("count_include_pad", Attr::Int(1)),
                    ],
                );
                let back = e.reshape(self, &pool, &s);
                let scaled = e.node(self, "Mul", &[&back, &alpha], vec![]);
                let d = e.node(self, "Add", &[&scaled, &bias], vec![]);
                let p = e.node(self, "Pow", &[&d, &beta], vec![]);
                e.node_to("Div", &[&x, &p], vec![], &out);
            }
            "QuantizeLinear" => {
                self.allow(node, &["axis", "saturate"])?;
                let (lo, hi) = self.quant_range(node, 2)?;
                let s = self.need(node, 0)?.shape().to_vec();
                let scale = self.per_axis(node, e, 1, &s)?;
                let zp = self.opt_per_axis(node, e, 2, &s)?;
                quantize(self, e, &x, &scale, zp.as_deref(), (lo, hi), &out);
            }
            "DequantizeLinear" => {
                self.allow(node, &["axis"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let scale = self.per_axis(node, e, 1, &s)?;
                let zp = self.opt_per_axis(node, e, 2, &s)?;
                dequantize(e, self, &x, &scale, zp.as_deref(), &out);
            }
            "DynamicQuantizeLinear" => {
                // ONNX's definition: uint8 over [min(x, 0), max(x, 0)].
                self.allow(node, &[])?;
                let rank = self.need(node, 0)?.shape().len();
                let all: Vec<usize> = (0..rank).collect();
                let (zero, q) = (e.scalar(self, 0.0), e.scalar(self, 255.0));
                let mx = e.reduce(self, "ReduceMax", &x, &all);
                let mn = e.reduce(self, "ReduceMin", &x, &all);
                let mx = e.node(self, "Max", &[&mx, &zero], vec![]);
                let mn = e.node(self, "Min", &[&mn, &zero], vec![]);
                let range = e.node(self, "Sub", &[&mx, &mn], vec![]);
                let scale = e.node(self, "Div", &[&range, &q], vec![]);
                let m = e.node(self, "Div", &[&mn, &scale], vec![]);
                let m = e.node(self, "Neg", &[&m], vec![]);
                let zp = clip(self, e, &m, (0.0, 255.0), None);
                let zp = e.node(self, "Round", &[&zp], vec![]);
                let scalar = e.ints(self, &[]);
                let outs: Vec<String> = node.outputs.clone();
                quantize(self, e, &x, &scale, Some(&zp), (0.0, 255.0), &out);
                if let Some(o) = outs.get(1).filter(|o| !o.is_empty()) {
                    e.node_to("Reshape", &[&scale, &scalar], vec![], o);
                }
                if let Some(o) = outs.get(2).filter(|o| !o.is_empty()) {
                    e.node_to("Reshape", &[&zp, &scalar], vec![], o);
                }
            }
            "MatMulInteger" | "ConvInteger" => {
                // (a - a_zero_point) times (b - b_zero_point), in f32 (exact
                // while the sums stay below 2^24 in magnitude).
                let conv = node.op == "ConvInteger";
                self.allow(node, if conv { CONV_ATTRS } else { &[] })?;
                let a = self.centred(node, e, 0, 2, if conv { 1 } else { 0 }, false)?;
                let b = self.centred(node, e, 1, 3, if conv { 0 } else { 1 }, !conv)?;
                let attrs = if conv { node.attrs.clone() } else { Vec::new() };
                let op = if conv { "Conv" } else { "MatMul" };
                e.nodes.push(Node {
                    name: String::new(),
                    op: op.into(),
                    domain: String::new(),
                    inputs: vec![a, b],
                    outputs: vec![out.clone()],
                    attrs,
                });
            }
            "QLinearMatMul" | "QLinearConv" => {
                // Dequantize both operands, multiply in f32, quantize.
                let conv = node.op == "QLinearConv";
                self.allow(node, if conv { CONV_ATTRS } else { &[] })?;
                let (lo, hi) = self.quant_range(node, 7)?;
                let deq = |cx: &mut Self, e: &mut Expansion, k: usize, axis: usize| -> R<String> {
                    let s = cx.need(node, k)?.shape().to_vec();
                    let v = cx.input_name(node, k)?;
                    let scale = cx.per_axis_at(node, e, k + 1, &s, axis)?;
                    let zp = cx.opt_per_axis_at(node, e, k + 2, &s, axis)?;
                    let d = e.fresh(cx, "dequantized");
                    dequantize(e, cx, &v, &scale, zp.as_deref(), &d);
                    Ok(d)
                };
                let a = deq(self, e, 0, if conv { 1 } else { 0 })?;
                let b_rank = self.need(node, 3)?.shape().len();
                let b = deq(self, e, 3, if conv { 0 } else { b_rank.saturating_sub(1) })?;
                let mut y = e.fresh(self, "product");
                let attrs = if conv { node.attrs.clone() } else { Vec::new() };
                e.nodes.push(Node {
                    name: String::new(),
                    op: if conv { "Conv" } else { "MatMul" }.into(),
                    domain: String::new(),
                    inputs: vec![a, b],
                    outputs: vec![y.clone()],
                    attrs,
                });
                if conv {
                    if let Some(bias) = node.inputs.get(8).filter(|b| !b.is_empty()) {
                        // int32 bias at scale x_scale * w_scale.
                        let rank = self.need(node, 0)?.shape().len();
                        let ws = self.input_name(node, 4)?;
                        let xs = self.input_name(node, 1)?;
                        let bs = e.node(self, "Mul", &[&xs, &ws], vec![]);
                        let bf = e.node(self, "Mul", &[bias, &bs], vec![]);
                        let mut cshape =
                            vec![self.need(node, 3)?.shape().first().copied().unwrap_or(1)];
                        cshape.resize(rank.saturating_sub(1), 1);
                        let bf = e.reshape(self, &bf, &cshape);
                        y = e.node(self, "Add", &[&y, &bf], vec![]);
                    }
                }
                let ys = self.need(node, 6)?.shape().to_vec();
                if numel(&ys) != 1 {
                    return Err(self.node_err(node, "only a per-tensor output scale is supported"));
                }
                let scale = self.input_name(node, 6)?;
                let zp = self.input_name(node, 7)?;
                quantize(self, e, &y, &scale, Some(&zp), (lo, hi), &out);
            }
            "LSTM" | "GRU" | "RNN" => self.recurrence(node, e)?,
            "GroupNormalization" => {
                self.allow(node, &["epsilon", "num_groups", "stash_type"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let groups = self.attr_int(node, "num_groups", 0)?;
                let c = s.get(1).copied().unwrap_or(0);
                let g = usize::try_from(groups).ok().filter(|&g| g > 0 && c % g == 0);
                let Some(g) = g.filter(|_| s.len() >= 3) else {
                    return Err(self.node_err(
                        node,
                        format!("input {s:?} does not split into {groups} groups of channels"),
                    ));
                };
                let eps = float(self, "epsilon", 1e-5)?;
                let mut cshape = vec![c];
                cshape.resize(s.len() - 1, 1);
                // Opset 18 gives one scale and bias per group, 21 per channel.
                let mut per_channel = |cx: &mut Self, k: usize, what: &str| -> R<String> {
                    let v = cx.need(node, k)?;
                    match v {
                        Val::Const(p) if p.len() == g && g != c => {
                            bounded(cx, node, c)?;
                            let data = (0..c).map(|ch| p.data[ch / (c / g)]).collect();
                            let p = Const::new(Dtype::Float, cshape.clone(), data)
                                .map_err(|m| cx.node_err(node, m))?;
                            Ok(e.konst(cx, p))
                        }
                        _ if numel(v.shape()) == c => {
                            let name = cx.input_name(node, k)?;
                            Ok(e.reshape(cx, &name, &cshape))
                        }
                        _ => Err(cx.node_err(node, format!("{what} must have {g} or {c} values"))),
                    }
                };
                let scale = per_channel(self, 1, "scale")?;
                let bias = per_channel(self, 2, "bias")?;
                let grouped = e.reshape(self, &x, &[s[0], g, numel(&s[1..]) / g]);
                let n = normalized(self, e, &grouped, &[2], eps as f64);
                let back = e.reshape(self, &n.y, &s);
                let y = e.node(self, "Mul", &[&back, &scale], vec![]);
                e.node_to("Add", &[&y, &bias], vec![], &out);
            }
            "ReduceLogSum" => {
                self.allow(node, &["axes", "keepdims", "noop_with_empty_axes"])?;
                // ReduceSum reads axes as an input from opset 13,
                // ReduceLogSum only from 18: move them when they differ.
                let mut inputs = vec![x.clone()];
                let mut attrs: Vec<(&str, Attr)> = node
                    .attrs
                    .iter()
                    .filter(|(k, _)| k != "axes")
                    .map(|(k, v)| {
                        (
                            if k == "keepdims" { "keepdims" } else { "noop_with_empty_axes" },
                            v.clone(),
                        )
                    })
                    .collect();
                match (self.opset >= 13, self.opset >= 18) {
                    (true, false) => {
                        if let Some(axes) = self.attr_ints(node, "axes")? {
                            inputs.push(e.ints(self, &axes));
                        }
                    }
                    (true, true) => inputs.extend(node.inputs.get(1).cloned()),
                    _ => {
                        if let Some(axes) = self.attr_ints(node, "axes")? {
                            attrs.push(("axes", Attr::Ints(axes)));
                        }
                    }
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let s = e.node(self, "ReduceSum", &refs, attrs);
                e.node_to("Log", &[&s], vec![], &out);
            }
            "LpNormalization" => {
                self.allow(node, &["axis", "p"])?;
                let rank = self.need(node, 0)?.shape().len();
                let axis = self.attr_axis(node, -1, rank)?;
                let op = match self.attr_int(node, "p", 2)? {
                    1 => "ReduceL1",
                    2 => "ReduceL2",
                    p => {
                        return Err(
                            self.node_err(node, format!("p = {p}: only 1 and 2 are defined"))
                        )
                    }
                };
                let n = e.reduce(self, op, &x, &[axis]);
                e.node_to("Div", &[&x, &n], vec![], &out);
            }
            "InstanceNormalization" => {
                self.allow(node, &["epsilon"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                if s.len() < 3 {
                    return Err(
                        self.node_err(node, format!("input has shape {s:?}, expected [n, c, ...]"))
                    );
                }
                let eps = float(self, "epsilon", 1e-5)?;
                let axes: Vec<usize> = (2..s.len()).collect();
                let mut cshape = vec![s[1]];
                cshape.resize(s.len() - 1, 1);
                let scale = self.input_name(node, 1)?;
                let bias = self.input_name(node, 2)?;
                let scale = e.reshape(self, &scale, &cshape);
                let bias = e.reshape(self, &bias, &cshape);
                let n = normalized(self, e, &x, &axes, eps as f64);
                let y = e.node(self, "Mul", &[&n.y, &scale], vec![]);
                e.node_to("Add", &[&y, &bias], vec![], &out);
            }
            "MeanVarianceNormalization" => {
                self.allow(node, &["axes"])?;
                let rank = self.need(node, 0)?.shape().len();
                let raw = self.attr_ints(node, "axes")?.unwrap_or_else(|| vec![0, 2, 3]);
                let axes = self.axis_list(node, &raw, rank)?;
                // ONNX's function body adds 1e-9 to the standard deviation.
                let mean = e.reduce(self, "ReduceMean", &x, &axes);
                let d = e.node(self, "Sub", &[&x, &mean], vec![]);
                let d2 = e.node(self, "Mul", &[&d, &d], vec![]);
                let var = e.reduce(self, "ReduceMean", &d2, &axes);
                let sd = e.node(self, "Sqrt", &[&var], vec![]);
                let eps = e.scalar(self, 1e-9);
                let sde = e.node(self, "Add", &[&sd, &eps], vec![]);
                e.node_to("Div", &[&d, &sde], vec![], &out);
            }
            "LayerNormalization" => {
                // Over axes [axis, rank), with the optional Mean and
                // InvStdDev outputs (the fused op covers the last axis).
                let s = self.need(node, 0)?.shape().to_vec();
                let axis = self.attr_axis(node, -1, s.len())?;
                let eps = float(self, "epsilon", 1e-5)?;
                let axes: Vec<usize> = (axis..s.len()).collect();
                let n = normalized(self, e, &x, &axes, eps as f64);
                let scale = self.input_name(node, 1)?;
                let y = e.node(self, "Mul", &[&n.y, &scale], vec![]);
                match node.inputs.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => e.node_to("Add", &[&y, b], vec![], &out),
                    None => e.node_to("Identity", &[&y], vec![], &out),
                }
                if let Some(m) = node.outputs.get(1).filter(|o| !o.is_empty()) {
                    e.node_to("Identity", &[&n.mean], vec![], m);
                }
                if let Some(r) = node.outputs.get(2).filter(|o| !o.is_empty()) {
                    e.node_to("Reciprocal", &[&n.std], vec![], r);
                }
            }
            "DepthToSpace" | "SpaceToDepth" => {
                let s = self.need(node, 0)?.shape().to_vec();
                let to_space = node.op == "DepthToSpace";
                self.allow(node, if to_space { &["blocksize", "mode"] } else { &["blocksize"] })?;
                let b = self.attr_int(node, "blocksize", 0)?;
                let [n, c, h, w] = s[..] else {
                    return Err(self
                        .node_err(node, format!("input has shape {s:?}, expected [n, c, h, w]")));
                };
                let b = usize::try_from(b).ok().filter(|&b| b > 0 && b <= 1 << 16);
                let b = b.ok_or_else(|| self.node_err(node, "blocksize must be positive"))?;
                let (mid, perm, last) = if to_space {
                    if c % (b * b) != 0 {
                        return Err(self.node_err(
                            node,
                            format!("{c} channels are not a multiple of blocksize² = {}", b * b),
                        ));
                    }
                    let crd = match self.attr_str(node, "mode", "DCR")?.as_str() {
                        "DCR" => false,
                        "CRD" => true,
                        m => {
                            return Err(self.node_err(node, format!("mode '{m}' is not DCR or CRD")))
                        }
                    };
                    let k = c / (b * b);
                    if crd {
                        (vec![n, k, b, b, h, w], vec![0, 1, 4, 2, 5, 3], vec![n, k, h * b, w * b])
                    } else {
                        (vec![n, b, b, k, h, w], vec![0, 3, 4, 1, 5, 2], vec![n, k, h * b, w * b])
                    }
                } else {
                    if h % b != 0 || w % b != 0 {
                        return Err(self.node_err(
                            node,
                            format!("{h} x {w} is not a multiple of blocksize {b}"),
                        ));
                    }
                    let (hb, wb) = (h / b, w / b);
                    (vec![n, c, hb, b, wb, b], vec![0, 3, 5, 1, 2, 4], vec![n, c * b * b, hb, wb])
                };
                let r = e.reshape(self, &x, &mid);
                let t = e.node(self, "Transpose", &[&r], vec![("perm", Attr::Ints(perm))]);
                let last: Vec<i64> = last.iter().map(|&d| d as i64).collect();
                let l = e.ints(self, &last);
                e.node_to("Reshape", &[&t, &l], vec![], &out);
            }
            "Trilu" => {
                self.allow(node, &["upper"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                if s.len() < 2 {
                    return Err(self
                        .node_err(node, format!("input has rank {}, at least 2 needed", s.len())));
                }
                let k = match self.opt_const(node, 1, "k")? {
                    None => 0,
                    Some(c) => {
                        super::scalar_of(&c, "k").map_err(|m| self.node_err(node, m))? as i64
                    }
                };
                let upper = self.attr_int(node, "upper", 1)? != 0;
                let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
                if numel(&[rows, cols]) > super::tensor::MAX_GROWN_ELEMENTS {
                    return Err(self.node_err(node, "the matrix is too large for a mask"));
                }
                let keep = |i: usize, j: usize| {
                    let d = j as i64 - i as i64;
                    if upper {
                        d >= k
                    } else {
                        d <= k
                    }
                };
                let data = (0..rows * cols)
                    .map(|p| f64::from(u8::from(keep(p / cols, p % cols))))
                    .collect();
                let mask = e.konst(
                    self,
                    Const {
                        dtype: Dtype::Bool,
                        shape: vec![rows, cols],
                        data: std::rc::Rc::new(data),
                    },
                );
                let zero = e.scalar(self, 0.0);
                e.node_to("Where", &[&mask, &x, &zero], vec![], &out);
            }
            "EyeLike" => {
                self.allow(node, &["dtype", "k"])?;
                let s = self.need(node, 0)?.shape().to_vec();
                let [rows, cols] = s[..] else {
                    return Err(self.node_err(node, format!("input has shape {s:?}, expected 2-D")));
                };
                if numel(&s) > super::tensor::MAX_GROWN_ELEMENTS {
                    return Err(self.node_err(node, "the matrix is too large"));
                }
                let k = self.attr_int(node, "k", 0)?;
                let data = (0..rows * cols)
                    .map(|p| f64::from(u8::from((p % cols) as i64 - (p / cols) as i64 == k)))
                    .collect();
                let eye = e.konst(
                    self,
                    Const { dtype: Dtype::Float, shape: s, data: std::rc::Rc::new(data) },
                );
                e.node_to("Identity", &[&eye], vec![], &out);
            }
            other => return Err(self.node_err(node, format!("no expansion for {other}"))),
        }
        Ok(())
    }

    /// The integer range of a quantized value, from its zero point's type
    /// (input `zp`; uint8 without one).
    fn quant_range(&self, node: &Node, zp: usize) -> R<(f64, f64)> {
        use lsqr::format::RawDtype;
        let Some(name) = node.inputs.get(zp).filter(|n| !n.is_empty()) else {
            return Ok((0.0, 255.0));
        };
        let dtype = match self.sources.get(name.as_str()) {
            Some(&i) => Some(self.model.tensors[i].dtype),
            None => self.elem_types.get(name).and_then(|&c| crate::onnx::onnx_dtype(c).ok()),
        };
        match dtype {
            Some(RawDtype::U8) => Ok((0.0, 255.0)),
            Some(RawDtype::I8) => Ok((-128.0, 127.0)),
            Some(RawDtype::I16) => Ok((-32768.0, 32767.0)),
            Some(RawDtype::I32) => Ok((f64::from(i32::MIN), f64::from(i32::MAX))),
            other => Err(self.node_err(
                node,
                format!(
                    "zero point '{name}' has type {other:?}: uint8, int8, int16 or int32 expected"
                ),
            )),
        }
    }

    /// Input `k` (a scale or zero point: one value, or one per slice of
    /// the `axis` attribute's dim of a value of shape `s`), shaped to
    /// broadcast against that value.
    fn per_axis(&self, node: &Node, e: &mut Expansion, k: usize, s: &[usize]) -> R<String> {
        if numel(&self.shape_of(node, k)?) == 1 {
            return self.input_name(node, k);
        }
        let axis = self.attr_axis(node, 1, s.len())?;
        self.per_axis_at(node, e, k, s, axis)
    }

    /// Input `k`'s shape (a computed or constant value, or a tensor of
    /// the model not read yet).
    fn shape_of(&self, node: &Node, k: usize) -> R<Vec<usize>> {
        let name = self.input_name(node, k)?;
        Ok(match self.vals.get(&name) {
            Some(v) => v.shape().to_vec(),
            None => self
                .sources
                .get(name.as_str())
                .map(|&i| self.model.tensors[i].shape.clone())
                .unwrap_or_default(),
        })
    }

    fn opt_per_axis(
        &self,
        node: &Node,
        e: &mut Expansion,
        k: usize,
        s: &[usize],
    ) -> R<Option<String>> {
        match node.inputs.get(k).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => self.per_axis(node, e, k, s).map(Some),
        }
    }

    fn opt_per_axis_at(
        &self,
        node: &Node,
        e: &mut Expansion,
        k: usize,
        s: &[usize],
        axis: usize,
    ) -> R<Option<String>> {
        match node.inputs.get(k).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => self.per_axis_at(node, e, k, s, axis).map(Some),
        }
    }

    fn per_axis_at(
        &self,
        node: &Node,
        e: &mut Expansion,
        k: usize,
        s: &[usize],
        axis: usize,
    ) -> R<String> {
        let name = self.input_name(node, k)?;
        let p = self.shape_of(node, k)?;
        let n = numel(&p);
        if n == 1 {
            return Ok(name);
        }
        if p.len() != 1 || s.get(axis) != Some(&n) {
            return Err(self.node_err(
                node,
                format!("input {k} has shape {p:?}: one value, or one per index of axis {axis} of {s:?} (blocked quantization is not supported)"),
            ));
        }
        let mut b = vec![1; s.len()];
        b[axis] = n;
        Ok(e.reshape(self, &name, &b))
    }

    /// `x - zero_point` for input `k` with zero point `zp` (absent: x),
    /// the zero point one value or one per index of `axis` (or, for
    /// `last`-style matrices, of the last dim).
    fn centred(
        &mut self,
        node: &Node,
        e: &mut Expansion,
        k: usize,
        zp: usize,
        axis: usize,
        last: bool,
    ) -> R<String> {
        let v = self.input_name(node, k)?;
        let Some(_) = node.inputs.get(zp).filter(|n| !n.is_empty()) else { return Ok(v) };
        let s = self.need(node, k)?.shape().to_vec();
        let axis = if last { s.len().saturating_sub(1) } else { axis };
        let z = self.per_axis_at(node, e, zp, &s, axis)?;
        Ok(e.node(self, "Sub", &[&v, &z], vec![]))
    }

    /// LSTM, GRU and RNN unrolled over the sequence (its length is known at
    /// import): the input projection of every step is one MatMul, each step's
    /// recurrent MatMul shares one weight, so both are `linear` layers the
    /// quantizer compresses. ONNX's default activations only.
    fn recurrence(&mut self, node: &Node, e: &mut Expansion) -> R<()> {
        let op = node.op.clone();
        let gates = match op.as_str() {
            "LSTM" => 4,
            "GRU" => 3,
            _ => 1,
        };
        let mut known = vec!["direction", "hidden_size", "layout"];
        if op == "GRU" {
            known.push("linear_before_reset");
        }
        if op == "LSTM" {
            known.push("input_forget");
        }
        // activations (the defaults spelled out) are accepted and checked.
        known.push("activations");
        self.allow(node, &known)?;
        let default_acts: &[&str] = match op.as_str() {
            "LSTM" => &["Sigmoid", "Tanh", "Tanh"],
            "GRU" => &["Sigmoid", "Tanh"],
            _ => &["Tanh"],
        };
        if let Some(a) = node.attrs.iter().find(|(k, _)| k == "activations") {
            let ok = matches!(&a.1, super::parse::Attr::Strings(v) if v.len() % default_acts.len() == 0
                && v.iter().enumerate().all(|(i, s)| s.eq_ignore_ascii_case(default_acts[i % default_acts.len()])));
            if !ok {
                return Err(self.node_err(node, "only the default activations are supported"));
            }
        }
        if op == "LSTM" && self.attr_int(node, "input_forget", 0)? != 0 {
            return Err(self.node_err(node, "input_forget is not supported"));
        }
        let lbr = op == "GRU" && self.attr_int(node, "linear_before_reset", 0)? != 0;
        let layout = self.attr_int(node, "layout", 0)?;
        let dirs: Vec<bool> = match self.attr_str(node, "direction", "forward")?.as_str() {
            "forward" => vec![false],
            "reverse" => vec![true],
            "bidirectional" => vec![false, true],
            d => return Err(self.node_err(node, format!("direction '{d}' is not supported"))),
        };
        let xs = self.need(node, 0)?.shape().to_vec();
        let [t_len, batch, _] = match (layout, &xs[..]) {
            (0, &[t, b, i]) => [t, b, i],
            (1, &[b, t, i]) => [t, b, i],
            _ => return Err(self.node_err(node, format!("X has shape {xs:?} (layout {layout})"))),
        };
        let w = self.need_const(node, 1, "W")?;
        let r = self.need_const(node, 2, "R")?;
        // Bounded so that the size arithmetic below cannot overflow.
        let h = usize::try_from(self.attr_int(node, "hidden_size", 0)?).unwrap_or(0);
        if h > 1 << 24 {
            return Err(self.node_err(node, format!("hidden_size {h} is too large")));
        }
        let d_n = dirs.len();
        let input = xs[2];
        if h == 0 || w.shape != [d_n, gates * h, input] || r.shape != [d_n, gates * h, h] {
            return Err(self.node_err(
                node,
                format!(
                    "W {:?} and R {:?} do not fit hidden_size {h} and X {xs:?}",
                    w.shape, r.shape
                ),
            ));
        }
        let b = self.opt_const(node, 3, "B")?;
        if b.as_ref().is_some_and(|b| b.shape != [d_n, 2 * gates * h]) {
            return Err(self.node_err(node, "B does not fit W"));
        }
        if let Some(l) = self.opt_const(node, 4, "sequence_lens")? {
            if l.data.iter().any(|&v| v as usize != t_len) {
                return Err(self
                    .node_err(node, "sequence_lens shorter than the sequence are not supported"));
            }
        }
        let p = if op == "LSTM" { self.opt_const(node, 7, "P")? } else { None };
        if p.as_ref().is_some_and(|p| p.shape != [d_n, 3 * h]) {
            return Err(self.node_err(node, "P does not fit hidden_size"));
        }
        if t_len == 0 || t_len > 1 << 14 {
            return Err(self.node_err(node, format!("a sequence of {t_len} steps is not unrolled")));
        }
        // Steps in [T, B, I] order.
        let x0 = node.inputs[0].clone();
        let x = if layout == 1 {
            e.node(self, "Transpose", &[&x0], vec![("perm", Attr::Ints(vec![1, 0, 2]))])
        } else {
            x0
        };
        // Initial states [D, B, H] (layout 1: [B, D, H]).
        let initial = |cx: &mut Self, e: &mut Expansion, k: usize, d: usize| -> R<String> {
            match node.inputs.get(k).filter(|n| !n.is_empty()) {
                None => {
                    bounded(cx, node, batch.saturating_mul(h))?;
                    let z = Const::new(Dtype::Float, vec![batch, h], vec![0.0; batch * h]);
                    Ok(e.konst(cx, z.map_err(|m| cx.node_err(node, m))?))
                }
                Some(name) => {
                    let axis = if layout == 1 { 1 } else { 0 };
                    let idx = Const {
                        dtype: Dtype::Int,
                        shape: vec![],
                        data: std::rc::Rc::new(vec![d as f64]),
                    };
                    let i = e.konst(cx, idx);
                    Ok(e.node(cx, "Gather", &[name, &i], vec![("axis", Attr::Int(axis))]))
                }
            }
        };
        let block = |c: &Const, d: usize, rows: std::ops::Range<usize>, cols: usize| -> Vec<f64> {
            let per = c.shape[1] * cols;
            (rows.start * cols..rows.end * cols).map(|k| c.data[d * per + k]).collect()
        };
        // A [rows, cols] slice of W or R, transposed for MatMul.
        let transposed = |cx: &Self,
                          e: &mut Expansion,
                          c: &Const,
                          d: usize,
                          rows: std::ops::Range<usize>,
                          cols: usize|
         -> R<String> {
            let n = rows.len();
            let data = block(c, d, rows, cols);
            let m =
                Const::new(Dtype::Float, vec![n, cols], data).map_err(|m| cx.node_err(node, m))?;
            let t = super::tensor::transpose(&m, &[1, 0]).map_err(|m| cx.node_err(node, m))?;
            Ok(e.konst(cx, t))
        };
        let gh = gates * h;
        // Columns from..to of a [B, n] value: a Slice (its opset's form),
        // which the graph stores as a few numbers.
        let cols_of = |cx: &Self, e: &mut Expansion, v: &str, from: usize, to: usize| -> String {
            let (from, to) = (from as i64, to as i64);
            if cx.opset >= 10 {
                let (st, en, ax) = (e.ints(cx, &[from]), e.ints(cx, &[to]), e.ints(cx, &[1]));
                e.node(cx, "Slice", &[v, &st, &en, &ax], vec![])
            } else {
                let attrs = vec![
                    ("starts", Attr::Ints(vec![from])),
                    ("ends", Attr::Ints(vec![to])),
                    ("axes", Attr::Ints(vec![1])),
                ];
                e.node(cx, "Slice", &[v], attrs)
            }
        };
        let (mut ys, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
        for (d, &reverse) in dirs.iter().enumerate() {
            // Input projection of every step, with the biases that sit
            // outside the recurrence.
            let wt = transposed(self, e, &w, d, 0..gh, input)?;
            let mut xw = e.node(self, "MatMul", &[&x, &wt], vec![]);
            if let Some(b) = &b {
                let wb = block(b, d, 0..gh, 1);
                let rb = block(b, d, gh..2 * gh, 1);
                // GRU with linear_before_reset keeps R's bias inside the
                // reset gate's product; otherwise R's bias of the h gate
                // adds outside it, as W's does.
                let sum: Vec<f64> = (0..gh)
                    .map(|k| {
                        if lbr {
                            wb[k] + if k < 2 * h { rb[k] } else { 0.0 }
                        } else {
                            wb[k] + rb[k]
                        }
                    })
                    .collect();
                let bias =
                    Const::new(Dtype::Float, vec![gh], sum).map_err(|m| self.node_err(node, m))?;
                let bias = e.konst(self, bias);
                xw = e.node(self, "Add", &[&xw, &bias], vec![]);
            }
            let mut hcur = initial(self, e, 5, d)?;
            let mut ccur = if op == "LSTM" { Some(initial(self, e, 6, d)?) } else { None };
            let rt = transposed(self, e, &r, d, 0..gh, h)?;
            let (rzr, rhh) = if op == "GRU" && !lbr {
                (
                    Some(transposed(self, e, &r, d, 0..2 * h, h)?),
                    Some(transposed(self, e, &r, d, 2 * h..3 * h, h)?),
                )
            } else {
                (None, None)
            };
            let rb_h = if lbr {
                let data = b.as_ref().map_or(vec![0.0; h], |b| block(b, d, gh + 2 * h..2 * gh, 1));
                let c =
                    Const::new(Dtype::Float, vec![h], data).map_err(|m| self.node_err(node, m))?;
                Some(e.konst(self, c))
            } else {
                None
            };
            let peep: Option<[String; 3]> = match &p {
                Some(p) => {
                    let mut v = Vec::new();
                    for g in 0..3 {
                        let c =
                            Const::new(Dtype::Float, vec![h], block(p, d, g * h..(g + 1) * h, 1))
                                .map_err(|m| self.node_err(node, m))?;
                        v.push(e.konst(self, c));
                    }
                    Some([v[0].clone(), v[1].clone(), v[2].clone()])
                }
                None => None,
            };
            let mut steps = vec![String::new(); t_len];
            let order: Vec<usize> =
                if reverse { (0..t_len).rev().collect() } else { (0..t_len).collect() };
            for &t in &order {
                let ti = e.konst(
                    self,
                    Const {
                        dtype: Dtype::Int,
                        shape: vec![],
                        data: std::rc::Rc::new(vec![t as f64]),
                    },
                );
                let xt = e.node(self, "Gather", &[&xw, &ti], vec![("axis", Attr::Int(0))]);
                match op.as_str() {
                    "LSTM" => {
                        let c_prev = ccur.clone().unwrap_or_default();
                        let hr = e.node(self, "MatMul", &[&hcur, &rt], vec![]);
                        let g = e.node(self, "Add", &[&xt, &hr], vec![]);
                        let mut gi = cols_of(self, e, &g, 0, h);
                        let mut go = cols_of(self, e, &g, h, 2 * h);
                        let mut gf = cols_of(self, e, &g, 2 * h, 3 * h);
                        let gc = cols_of(self, e, &g, 3 * h, 4 * h);
                        if let Some([pi, _, pf]) = &peep {
                            let a = e.node(self, "Mul", &[pi, &c_prev], vec![]);
                            gi = e.node(self, "Add", &[&gi, &a], vec![]);
                            let f = e.node(self, "Mul", &[pf, &c_prev], vec![]);
                            gf = e.node(self, "Add", &[&gf, &f], vec![]);
                        }
                        let i = e.node(self, "Sigmoid", &[&gi], vec![]);
                        let f = e.node(self, "Sigmoid", &[&gf], vec![]);
                        let cand = e.node(self, "Tanh", &[&gc], vec![]);
                        let keep = e.node(self, "Mul", &[&f, &c_prev], vec![]);
                        let add = e.node(self, "Mul", &[&i, &cand], vec![]);
                        let c = e.node(self, "Add", &[&keep, &add], vec![]);
                        if let Some([_, po, _]) = &peep {
                            let a = e.node(self, "Mul", &[po, &c], vec![]);
                            go = e.node(self, "Add", &[&go, &a], vec![]);
                        }
                        let o = e.node(self, "Sigmoid", &[&go], vec![]);
                        let tc = e.node(self, "Tanh", &[&c], vec![]);
                        hcur = e.node(self, "Mul", &[&o, &tc], vec![]);
                        ccur = Some(c);
                    }
                    "GRU" => {
                        let xz = cols_of(self, e, &xt, 0, h);
                        let xr = cols_of(self, e, &xt, h, 2 * h);
                        let xh = cols_of(self, e, &xt, 2 * h, 3 * h);
                        let (hz, hr_, hh) = if lbr {
                            let hrall = e.node(self, "MatMul", &[&hcur, &rt], vec![]);
                            let hz = cols_of(self, e, &hrall, 0, h);
                            let hr_ = cols_of(self, e, &hrall, h, 2 * h);
                            let hh = cols_of(self, e, &hrall, 2 * h, 3 * h);
                            let rb = rb_h.clone().unwrap_or_default();
                            let hh = e.node(self, "Add", &[&hh, &rb], vec![]);
                            (hz, hr_, Some(hh))
                        } else {
                            let rzr = rzr.clone().unwrap_or_default();
                            let hzr = e.node(self, "MatMul", &[&hcur, &rzr], vec![]);
                            (cols_of(self, e, &hzr, 0, h), cols_of(self, e, &hzr, h, 2 * h), None)
                        };
                        let gz = e.node(self, "Add", &[&xz, &hz], vec![]);
                        let gr = e.node(self, "Add", &[&xr, &hr_], vec![]);
                        let z = e.node(self, "Sigmoid", &[&gz], vec![]);
                        let rg = e.node(self, "Sigmoid", &[&gr], vec![]);
                        let inner = match hh {
                            Some(hh) => e.node(self, "Mul", &[&rg, &hh], vec![]),
                            None => {
                                let rh = e.node(self, "Mul", &[&rg, &hcur], vec![]);
                                let rhh = rhh.clone().unwrap_or_default();
                                e.node(self, "MatMul", &[&rh, &rhh], vec![])
                            }
                        };
                        let gh_ = e.node(self, "Add", &[&xh, &inner], vec![]);
                        let cand = e.node(self, "Tanh", &[&gh_], vec![]);
                        let one = e.scalar(self, 1.0);
                        let omz = e.node(self, "Sub", &[&one, &z], vec![]);
                        let a = e.node(self, "Mul", &[&omz, &cand], vec![]);
                        let bz = e.node(self, "Mul", &[&z, &hcur], vec![]);
                        hcur = e.node(self, "Add", &[&a, &bz], vec![]);
                    }
                    _ => {
                        let hr = e.node(self, "MatMul", &[&hcur, &rt], vec![]);
                        let g = e.node(self, "Add", &[&xt, &hr], vec![]);
                        hcur = e.node(self, "Tanh", &[&g], vec![]);
                    }
                }
                steps[t] = e.reshape(self, &hcur, &[1, 1, batch, h]);
            }
            let refs: Vec<&str> = steps.iter().map(String::as_str).collect();
            ys.push(if refs.len() == 1 {
                refs[0].to_string()
            } else {
                e.node(self, "Concat", &refs, vec![("axis", Attr::Int(0))])
            });
            hs.push(e.reshape(self, &hcur, &[1, batch, h]));
            if let Some(c) = &ccur {
                cs.push(e.reshape(self, c, &[1, batch, h]));
            }
        }
        let join = |cx: &Self, e: &mut Expansion, parts: &[String], axis: i64| -> String {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            if refs.len() == 1 {
                refs[0].to_string()
            } else {
                e.node(cx, "Concat", &refs, vec![("axis", Attr::Int(axis))])
            }
        };
        // Y [T, D, B, H] (layout 1: [B, T, D, H]); Y_h, Y_c [D, B, H]
        // (layout 1: [B, D, H]).
        let y = join(self, e, &ys, 1);
        let yh = join(self, e, &hs, 0);
        let yc = (!cs.is_empty()).then(|| join(self, e, &cs, 0));
        let outs =
            [(0, Some(y), vec![2, 0, 1, 3]), (1, Some(yh), vec![1, 0, 2]), (2, yc, vec![1, 0, 2])];
        for (k, v, perm) in outs {
            let (Some(o), Some(v)) = (node.outputs.get(k).filter(|o| !o.is_empty()), v) else {
                continue;
            };
            if layout == 1 {
                e.node_to("Transpose", &[&v], vec![("perm", Attr::Ints(perm))], o);
            } else {
                e.node_to("Identity", &[&v], vec![], o);
            }
        }
        Ok(())
    }

    /// ONNX If. A condition known at import (shape arithmetic, usually)
    /// selects its branch, whose nodes are converted in place. A computed
    /// condition runs both branches and selects each output with Where:
    /// the branches' outputs must then have equal shapes. The branches'
    /// own values are renamed apart; they may read the outer graph's.
    pub(super) fn if_op(&mut self, node: &Node) -> R<()> {
        self.allow(node, &["then_branch", "else_branch"])?;
        let branch = |k: &str| match node.attrs.iter().find(|(n, _)| n == k) {
            Some((_, Attr::Graph(g))) => Some(g.clone()),
            _ => None,
        };
        let (Some(then_g), Some(else_g)) = (branch("then_branch"), branch("else_branch")) else {
            return Err(self.node_err(node, "needs then_branch and else_branch graphs"));
        };
        let outs = node.outputs.len();
        if then_g.outputs.len() != outs || else_g.outputs.len() != outs {
            return Err(self.node_err(node, "the branches' outputs do not match the node's"));
        }
        let cond = self.need(node, 0)?;
        if let Val::Const(c) = &cond {
            let take = super::scalar_of(c, "cond").map_err(|m| self.node_err(node, m))? != 0.0;
            let g = if take { then_g } else { else_g };
            let produced = self.inline_branch(node, &g, "then")?;
            for (k, o) in produced.iter().enumerate() {
                let v = self
                    .get(o)?
                    .ok_or_else(|| self.node_err(node, format!("branch output '{o}' is empty")))?;
                self.set(node, k, v)?;
            }
            return Ok(());
        }
        // Both branches become layers and `Where` picks: each must import
        // at these shapes. Where one cannot, the inputs the condition
        // comes from are what the caller can fix.
        let hint = |mut e: crate::ImportError, behind: &[String]| {
            if !e.message.contains("--input-value") {
                let inputs = behind.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>();
                e.message.push_str(&format!(
                    " (the condition is computed at run time{}, so both branches must import \
                     at these input shapes; a graph input fixed with --input-value NAME=... \
                     is decided at import)",
                    if inputs.is_empty() {
                        String::new()
                    } else {
                        format!(" from graph input {}", inputs.join(", "))
                    }
                ));
            }
            e
        };
        let behind = match &cond {
            Val::Dyn { name, .. } => self.inputs_behind(name),
            Val::Const(_) => Vec::new(),
        };
        let a = self.inline_branch(node, &then_g, "then").map_err(|e| hint(e, &behind))?;
        let b = self.inline_branch(node, &else_g, "else").map_err(|e| hint(e, &behind))?;
        let mut e = Expansion::new(node);
        let c = node.inputs[0].clone();
        for k in 0..outs {
            let (sa, sb) = (self.get(&a[k])?, self.get(&b[k])?);
            let (Some(sa), Some(sb)) = (sa, sb) else {
                return Err(self.node_err(node, "a branch output is empty"));
            };
            if sa.shape() != sb.shape() {
                return Err(hint(self.node_err(
                    node,
                    format!(
                        "output {k}: the branches give shapes {:?} and {:?}; with a condition computed at run time they must agree",
                        sa.shape(),
                        sb.shape()
                    ),
                ), &behind));
            }
            if !node.outputs[k].is_empty() {
                e.node_to("Where", &[&c, &a[k], &b[k]], vec![], &node.outputs[k]);
            }
        }
        for n in &e.nodes {
            for i in &n.inputs {
                *self.uses.entry(i.clone()).or_default() += 1;
            }
        }
        for part in &e.nodes {
            self.node(part)?;
        }
        Ok(())
    }

    /// The graph inputs (ONNX names) that the run-time value `value` is
    /// computed from, through the layers made so far.
    fn inputs_behind(&self, value: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![value.to_string()];
        while let Some(v) = stack.pop() {
            if !seen.insert(v.clone()) {
                continue;
            }
            if let Some(layer) = self.producer.get(&v).and_then(|&l| self.layers.get(l)) {
                stack.extend(layer.inputs.iter().cloned());
            }
        }
        self.graph_inputs
            .iter()
            .filter(|(_, lsq)| seen.contains(lsq))
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Converts branch `g` of `node` with its own values renamed
    /// (`{if output}#{tag}/{name}`); the names its outputs have now.
    fn inline_branch(
        &mut self,
        node: &Node,
        g: &super::parse::SubGraph,
        tag: &str,
    ) -> R<Vec<String>> {
        let base = node.outputs.iter().find(|o| !o.is_empty()).cloned().unwrap_or_default();
        let mut renamed: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        for n in &g.nodes {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                let mut name = format!("{base}#{tag}/{o}");
                while self.vals.contains_key(&name)
                    || self.sources.contains_key(name.as_str())
                    || renamed.values().any(|v| v == &name)
                {
                    name.push('\'');
                }
                renamed.insert(o.clone(), name);
            }
        }
        let rename = |v: &String| renamed.get(v).cloned().unwrap_or_else(|| v.clone());
        for n in &g.nodes {
            // Nested branches read this branch's values by their new names.
            let write = |o: &String| if o.is_empty() { o.clone() } else { rename(o) };
            let inner = remapped_node(n, &rename, &write, &renamed);
            for i in inner.inputs.iter().filter(|i| !i.is_empty()) {
                *self.uses.entry(i.clone()).or_default() += 1;
            }
            // A Constant's value is the model's tensor under its own name.
            if n.op == "Constant" {
                let original = n.outputs.first().cloned().unwrap_or_default();
                let v = self.get(&original)?.ok_or_else(|| self.node_err(n, "has no value"))?;
                let out = inner.outputs.first().cloned().unwrap_or_default();
                self.vals.insert(out, v);
                continue;
            }
            self.node(&inner).map_err(|err| {
                let inner_msg = err.message.clone();
                self.node_err(node, format!("in its {tag} branch: {inner_msg}"))
            })?;
        }
        Ok(g.outputs.iter().map(rename).collect())
    }

    /// Input `k`'s name; an error if it is absent.
    fn input_name(&self, node: &Node, k: usize) -> R<String> {
        node.inputs
            .get(k)
            .filter(|i| !i.is_empty())
            .cloned()
            .ok_or_else(|| self.node_err(node, format!("input {k} is missing")))
    }

    fn attr_axis(&self, node: &Node, default: i64, rank: usize) -> R<usize> {
        let a = self.attr_int(node, "axis", default)?;
        axis_of(a, rank)
            .ok_or_else(|| self.node_err(node, format!("axis {a} is out of range for rank {rank}")))
    }

    /// `raw`'s axes of a rank-`rank` value, negative ones counted from the
    /// end, sorted; an error names the node for one out of range or
    /// repeated (also `Converter::axes`).
    pub(super) fn axis_list(&self, node: &Node, raw: &[i64], rank: usize) -> R<Vec<usize>> {
        let mut axes = Vec::new();
        for &a in raw {
            let ax = axis_of(a, rank).ok_or_else(|| {
                self.node_err(node, format!("axis {a} is out of range for rank {rank}"))
            })?;
            if axes.contains(&ax) {
                return Err(self.node_err(node, format!("axis {a} is repeated")));
            }
            axes.push(ax);
        }
        axes.sort_unstable();
        Ok(axes)
    }
}

/// An error unless a constant of `n` elements, built from a computed
/// value's dims (each up to 2^32), fits the cap on grown constants:
/// checked before it is allocated.
fn bounded(cx: &Converter<'_>, node: &Node, n: usize) -> R<()> {
    if n > super::tensor::MAX_GROWN_ELEMENTS {
        return Err(cx.node_err(
            node,
            format!(
                "its expansion needs a constant of {n} elements, more than the {} allowed",
                super::tensor::MAX_GROWN_ELEMENTS
            ),
        ));
    }
    Ok(())
}

/// `g` with its reads of values in `map` (an enclosing branch's renamed
/// values) renamed, except the values `g` itself produces, at every depth.
fn renamed_reads(
    g: &super::parse::SubGraph,
    map: &std::collections::HashMap<String, String>,
) -> super::parse::SubGraph {
    let own: std::collections::HashSet<&String> = g.nodes.iter().flat_map(|n| &n.outputs).collect();
    let map: std::collections::HashMap<String, String> =
        map.iter().filter(|(k, _)| !own.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let read = |v: &String| map.get(v).cloned().unwrap_or_else(|| v.clone());
    super::parse::SubGraph {
        nodes: g.nodes.iter().map(|n| remapped_node(n, &read, &|o| o.clone(), &map)).collect(),
        outputs: g.outputs.iter().map(read).collect(),
    }
}

/// `n` with its inputs read through `read` and its outputs named by
/// `write`, and its subgraphs reading the values `map` renames by their
/// new names ([`renamed_reads`]).
fn remapped_node(
    n: &Node,
    read: &dyn Fn(&String) -> String,
    write: &dyn Fn(&String) -> String,
    map: &std::collections::HashMap<String, String>,
) -> Node {
    Node {
        name: n.name.clone(),
        op: n.op.clone(),
        domain: n.domain.clone(),
        inputs: n.inputs.iter().map(read).collect(),
        outputs: n.outputs.iter().map(write).collect(),
        attrs: n
            .attrs
            .iter()
            .map(|(k, a)| match a {
                Attr::Graph(sub) => {
                    (k.clone(), Attr::Graph(std::rc::Rc::new(renamed_reads(sub, map))))
                }
                other => (k.clone(), other.clone()),
            })
            .collect(),
    }
}

/// `clip(x, lo, hi)` as Max and Min with constant bounds (written to
/// `out`, or a fresh value).
fn clip(
    cx: &Converter<'_>,
    e: &mut Expansion,
    x: &str,
    (lo, hi): (f64, f64),
    out: Option<&str>,
) -> String {
    let (l, h) = (e.scalar(cx, lo), e.scalar(cx, hi));
    let m = e.node(cx, "Max", &[x, &l], vec![]);
    match out {
        Some(o) => {
            e.node_to("Min", &[&m, &h], vec![], o);
            o.to_string()
        }
        None => e.node(cx, "Min", &[&m, &h], vec![]),
    }
}

/// ONNX QuantizeLinear: `clip(round_half_even(x / scale) + zero_point)`.
fn quantize(
    cx: &Converter<'_>,
    e: &mut Expansion,
    x: &str,
    scale: &str,
    zp: Option<&str>,
    range: (f64, f64),
    out: &str,
) {
    let d = e.node(cx, "Div", &[x, scale], vec![]);
    let mut r = e.node(cx, "Round", &[&d], vec![]);
    if let Some(z) = zp {
        r = e.node(cx, "Add", &[&r, z], vec![]);
    }
    clip(cx, e, &r, range, Some(out));
}

/// ONNX DequantizeLinear: `(x - zero_point) * scale`.
fn dequantize(
    e: &mut Expansion,
    cx: &Converter<'_>,
    x: &str,
    scale: &str,
    zp: Option<&str>,
    out: &str,
) {
    let c = match zp {
        Some(z) => e.node(cx, "Sub", &[x, z], vec![]),
        None => x.to_string(),
    };
    e.node_to("Mul", &[&c, scale], vec![], out);
}

/// `(x - mean) / std` over `axes`, with `std = sqrt(var + eps)`.
struct Normalized {
    y: String,
    mean: String,
    std: String,
}

fn normalized(
    cx: &Converter<'_>,
    e: &mut Expansion,
    x: &str,
    axes: &[usize],
    eps: f64,
) -> Normalized {
    let mean = e.reduce(cx, "ReduceMean", x, axes);
    let d = e.node(cx, "Sub", &[x, &mean], vec![]);
    let d2 = e.node(cx, "Mul", &[&d, &d], vec![]);
    let var = e.reduce(cx, "ReduceMean", &d2, axes);
    let eps = e.scalar(cx, eps);
    let ve = e.node(cx, "Add", &[&var, &eps], vec![]);
    let std = e.node(cx, "Sqrt", &[&ve], vec![]);
    let y = e.node(cx, "Div", &[&d, &std], vec![]);
    Normalized { y, mean, std }
}
