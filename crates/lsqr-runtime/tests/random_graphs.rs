//! Random small graphs run by the runtime against a naive interpreter.
//!
//! A proptest draws chains and diamonds (a value read by two later layers
//! whose results a binary op joins) of the runtime's ops on random shapes
//! (rank 1..=4, dims mostly 1..=4 so that broadcasting dims of 1 are
//! common, sometimes up to 19 so that SIMD loops run full width; rank 0
//! after full reductions), writes
//! them to an in-memory `.lsq`, plans, binds and runs them, and compares
//! every graph output with the reference interpreter below: plain loops over
//! f64, one function per op, with the index arithmetic written from the
//! op's definition (nothing here calls lsqr-kernels). The ops: constant,
//! add/sub/mul/div/max/min/pow with broadcasting (against constants,
//! `[1]`, or other values), relu/relu6/sigmoid/tanh/exp/neg/abs/clip/
//! hardsigmoid (both forms)/leaky_relu/elu/gelu_tanh/silu/hardswish/
//! softplus/sin/cos/reciprocal/sqrt, transpose, reshape (with -1), flatten,
//! concat of 2-3 inputs, slice (steps of +-1, 2, 3), gather, expand, pad
//! (constant, reflect, edge), the nine reductions with keepdims 0/1,
//! global avg/max pool, softmax and log_softmax on any axis, matmul (1-D,
//! batched, broadcasting), linear (f32 weights, with or without bias),
//! layer_norm and batch_norm. Graph outputs are the last value and up to
//! two others (intermediates, constants or graph inputs).
//!
//! Inputs are bounded: graph inputs and constants are in [-2, 2], divisors
//! are kept at least 0.25 away from zero, `exp` only sees values of
//! magnitude <= 3, and any value of magnitude above 10 is passed through a
//! `tanh` before anything else reads it. So nothing overflows, and the
//! tolerance can be tight:
//!
//! `|got - want| <= 1e-4 * |want| + 1e-5 * M`, `M` = max(1, the largest
//! magnitude of any value of the graph).
//!
//! The relative part covers f32 rounding of a few chained ops (each ~6e-8
//! relative) and the kernels' polynomial exp/tanh/sigmoid (~1e-6 relative);
//! the absolute part, proportional to the graph's magnitudes, covers
//! cancellation: `a - b` of two nearly equal values of magnitude ~M keeps
//! their rounding error (~M * 1e-7), however small the difference is.
//!
//! A second proptest appends one malformed layer to a random valid graph
//! (shapes that do not broadcast, bad axes, permutations, slices, pads,
//! indices, unknown attributes, wrong input counts...) and checks that
//! planning returns an error naming that layer instead of panicking;
//! dangling value names are refused when the file is written.

use std::io::Cursor;

use lsqr_format::{FormatError, Graph, Layer, LsqFile, LsqWriter, Value};
use lsqr_runtime::{Plan, RuntimeError};
use proptest::prelude::*;

/// The largest element count a generated value may have.
const MAX_NUMEL: usize = 1024;

// ---------------------------------------------------------------------------
// Reference tensors and ops.

#[derive(Clone, Debug, PartialEq)]
struct T {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major multi-index of flat index `i`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Flat index of multi-index `idx`.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    assert_eq!(idx.len(), shape.len());
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| {
        assert!(i < d, "index {idx:?} outside {shape:?}");
        acc * d + i
    })
}

impl T {
    fn new(shape: &[usize], data: Vec<f64>) -> T {
        assert_eq!(numel(shape), data.len());
        T { shape: shape.to_vec(), data }
    }

    fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> T {
        let data = (0..numel(shape)).map(|i| f(&unravel(i, shape))).collect();
        T { shape: shape.to_vec(), data }
    }

    fn at(&self, idx: &[usize]) -> f64 {
        self.data[ravel(idx, &self.shape)]
    }

    fn max_abs(&self) -> f64 {
        self.data.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    fn min_abs(&self) -> f64 {
        self.data.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()))
    }
}

/// NumPy broadcasting of two shapes.
fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i < r - s.len() { 1 } else { s[i - (r - s.len())] };
    (0..r)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The index into an operand of shape `s` that output index `idx` reads
/// under broadcasting: dims aligned on the right, a dim of 1 always reads 0.
fn broadcast_src(idx: &[usize], s: &[usize]) -> Vec<usize> {
    let off = idx.len() - s.len();
    (0..s.len()).map(|j| if s[j] == 1 { 0 } else { idx[off + j] }).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Only generated with a base >= 0.25 and an exponent in [-2, 2].
    Pow,
}

impl Bin {
    const ALL: [Bin; 6] = [Bin::Add, Bin::Sub, Bin::Mul, Bin::Div, Bin::Max, Bin::Min];

    fn name(self) -> &'static str {
        match self {
            Bin::Add => "add",
            Bin::Sub => "sub",
            Bin::Mul => "mul",
            Bin::Div => "div",
            Bin::Max => "max",
            Bin::Min => "min",
            Bin::Pow => "pow",
        }
    }

    fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Bin::Add => a + b,
            Bin::Sub => a - b,
            Bin::Mul => a * b,
            Bin::Div => a / b,
            Bin::Max => a.max(b),
            Bin::Min => a.min(b),
            Bin::Pow => a.powf(b),
        }
    }
}

fn ref_binary(op: Bin, a: &T, b: &T) -> T {
    let shape = broadcast_shapes(&a.shape, &b.shape).expect("generated shapes broadcast");
    T::from_fn(&shape, |i| {
        op.apply(a.at(&broadcast_src(i, &a.shape)), b.at(&broadcast_src(i, &b.shape)))
    })
}

#[derive(Clone, Copy, Debug)]
enum Un {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Neg,
    Abs,
    /// `clip` with optional `min` and `max`.
    Clip(Option<f32>, Option<f32>),
    /// `hardsigmoid`: PyTorch's `relu6(x + 3) / 6` without attributes,
    /// ONNX's `max(0, min(1, alpha x + beta))` with them.
    HardSigmoid(Option<(f32, f32)>),
    LeakyRelu(f32),
    Relu6,
    Elu(f32),
    GeluTanh,
    Silu,
    HardSwish,
    Softplus,
    Sin,
    Cos,
    /// Only generated for inputs of magnitude >= 0.25.
    Reciprocal,
    /// Only generated for inputs >= 1/16.
    Sqrt,
}

impl Un {
    fn name(self) -> &'static str {
        match self {
            Un::Relu => "relu",
            Un::Sigmoid => "sigmoid",
            Un::Tanh => "tanh",
            Un::Exp => "exp",
            Un::Neg => "neg",
            Un::Abs => "abs",
            Un::Clip(..) => "clip",
            Un::HardSigmoid(_) => "hardsigmoid",
            Un::LeakyRelu(_) => "leaky_relu",
            Un::Relu6 => "relu6",
            Un::Elu(_) => "elu",
            Un::GeluTanh => "gelu_tanh",
            Un::Silu => "silu",
            Un::HardSwish => "hardswish",
            Un::Softplus => "softplus",
            Un::Sin => "sin",
            Un::Cos => "cos",
            Un::Reciprocal => "reciprocal",
            Un::Sqrt => "sqrt",
        }
    }

    fn attrs(self) -> Vec<(&'static str, Value)> {
        let f = |v: f32| Value::Float(v as f64);
        match self {
            Un::Clip(lo, hi) => {
                let mut a = Vec::new();
                if let Some(lo) = lo {
                    a.push(("min", f(lo)));
                }
                if let Some(hi) = hi {
                    a.push(("max", f(hi)));
                }
                a
            }
            Un::HardSigmoid(Some((alpha, beta))) => vec![("alpha", f(alpha)), ("beta", f(beta))],
            Un::LeakyRelu(alpha) | Un::Elu(alpha) => vec![("alpha", f(alpha))],
            _ => vec![],
        }
    }

    fn apply(self, x: f64) -> f64 {
        match self {
            Un::Relu => x.max(0.0),
            Un::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Un::Tanh => x.tanh(),
            Un::Exp => x.exp(),
            Un::Neg => -x,
            Un::Abs => x.abs(),
            Un::Clip(lo, hi) => {
                let lo = lo.map_or(f64::NEG_INFINITY, f64::from);
                let hi = hi.map_or(f64::INFINITY, f64::from);
                x.max(lo).min(hi)
            }
            Un::HardSigmoid(None) => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Un::HardSigmoid(Some((alpha, beta))) => {
                (f64::from(alpha) * x + f64::from(beta)).clamp(0.0, 1.0)
            }
            Un::LeakyRelu(alpha) => {
                if x >= 0.0 {
                    x
                } else {
                    f64::from(alpha) * x
                }
            }
            Un::Relu6 => x.clamp(0.0, 6.0),
            Un::Elu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    f64::from(alpha) * (x.exp() - 1.0)
                }
            }
            Un::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            Un::Silu => x / (1.0 + (-x).exp()),
            Un::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Un::Softplus => x.exp().ln_1p(),
            Un::Sin => x.sin(),
            Un::Cos => x.cos(),
            Un::Reciprocal => 1.0 / x,
            Un::Sqrt => x.sqrt(),
        }
    }
}

fn ref_unary(op: Un, x: &T) -> T {
    T::new(&x.shape, x.data.iter().map(|&v| op.apply(v)).collect())
}

/// `out[i0, .., ir] = x[j]` with `j[perm[k]] = i[k]`.
fn ref_transpose(x: &T, perm: &[usize]) -> T {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    T::from_fn(&shape, |i| {
        let mut src = vec![0; perm.len()];
        for (k, &p) in perm.iter().enumerate() {
            src[p] = i[k];
        }
        x.at(&src)
    })
}

fn ref_concat(parts: &[&T], axis: usize) -> T {
    let mut shape = parts[0].shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    T::from_fn(&shape, |i| {
        let mut j = i[axis];
        for p in parts {
            if j < p.shape[axis] {
                let mut src = i.to_vec();
                src[axis] = j;
                return p.at(&src);
            }
            j -= p.shape[axis];
        }
        unreachable!("index past the concatenation")
    })
}

/// `out[i] = x[starts + i * steps]`, per axis.
fn ref_slice(x: &T, starts: &[usize], steps: &[i64], shape: &[usize]) -> T {
    T::from_fn(shape, |i| {
        let src: Vec<usize> = (0..i.len())
            .map(|d| usize::try_from(starts[d] as i64 + i[d] as i64 * steps[d]).unwrap())
            .collect();
        x.at(&src)
    })
}

fn ref_gather(x: &T, axis: usize, indices: &[usize]) -> T {
    let mut shape = x.shape.clone();
    shape[axis] = indices.len();
    T::from_fn(&shape, |i| {
        let mut src = i.to_vec();
        src[axis] = indices[i[axis]];
        x.at(&src)
    })
}

fn ref_expand(x: &T, target: &[usize]) -> T {
    T::from_fn(target, |i| x.at(&broadcast_src(i, &x.shape)))
}

#[derive(Clone, Copy, Debug)]
enum Pad {
    Constant(f32),
    Reflect,
    Edge,
}

fn ref_pad(x: &T, begin: &[usize], end: &[usize], mode: Pad) -> T {
    let shape: Vec<usize> = (0..x.shape.len()).map(|d| begin[d] + x.shape[d] + end[d]).collect();
    T::from_fn(&shape, |i| {
        let mut src = vec![0; i.len()];
        for d in 0..i.len() {
            let n = x.shape[d] as i64;
            let j = i[d] as i64 - begin[d] as i64;
            let j = if (0..n).contains(&j) {
                j
            } else {
                match mode {
                    Pad::Constant(v) => return f64::from(v),
                    // Mirror about the edge cells, not repeating them.
                    Pad::Reflect if j < 0 => -j,
                    Pad::Reflect => 2 * (n - 1) - j,
                    Pad::Edge => j.clamp(0, n - 1),
                }
            };
            src[d] = j as usize;
        }
        x.at(&src)
    })
}

#[derive(Clone, Copy, Debug)]
enum Red {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSumExp,
}

impl Red {
    fn name(self) -> &'static str {
        match self {
            Red::Sum => "reduce_sum",
            Red::Mean => "reduce_mean",
            Red::Max => "reduce_max",
            Red::Min => "reduce_min",
            Red::Prod => "reduce_prod",
            Red::L1 => "reduce_l1",
            Red::L2 => "reduce_l2",
            Red::SumSquare => "reduce_sum_square",
            Red::LogSumExp => "reduce_log_sum_exp",
        }
    }
}

fn ref_reduce(x: &T, axes: &[usize], keep: bool, op: Red) -> T {
    let r = x.shape.len();
    let full: Vec<usize> = (0..r).map(|d| if axes.contains(&d) { 1 } else { x.shape[d] }).collect();
    // Every reduction as a fold over the reduced elements (collected
    // first, so log-sum-exp can take their max).
    let mut groups: Vec<Vec<f64>> = vec![Vec::new(); numel(&full)];
    for (i, &v) in x.data.iter().enumerate() {
        let mut idx = unravel(i, &x.shape);
        for &a in axes {
            idx[a] = 0;
        }
        groups[ravel(&idx, &full)].push(v);
    }
    let acc: Vec<f64> = groups
        .iter()
        .map(|g| match op {
            Red::Sum => g.iter().sum(),
            Red::Mean => g.iter().sum::<f64>() / g.len() as f64,
            Red::Max => g.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)),
            Red::Min => g.iter().fold(f64::INFINITY, |a, &b| a.min(b)),
            Red::Prod => g.iter().product(),
            Red::L1 => g.iter().map(|v| v.abs()).sum(),
            Red::L2 => g.iter().map(|v| v * v).sum::<f64>().sqrt(),
            Red::SumSquare => g.iter().map(|v| v * v).sum(),
            Red::LogSumExp => {
                let m = g.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                m + g.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
            }
        })
        .collect();
    let shape: Vec<usize> = if keep {
        full
    } else {
        (0..r).filter(|d| !axes.contains(d)).map(|d| x.shape[d]).collect()
    };
    T::new(&shape, acc)
}

fn ref_softmax(x: &T, axis: usize, log: bool) -> T {
    T::from_fn(&x.shape, |i| {
        let row: Vec<f64> = (0..x.shape[axis])
            .map(|j| {
                let mut s = i.to_vec();
                s[axis] = j;
                x.at(&s)
            })
            .collect();
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let v = x.at(i);
        if log {
            v - m - z.ln()
        } else {
            (v - m).exp() / z
        }
    })
}

/// `numpy.matmul`'s shapes: (batch of a, m, k), (batch of b, k, n) and the
/// output shape. A 1-D `a` is a row `[1, k]`, a 1-D `b` a column `[k, 1]`,
/// and that added dim is dropped from the output.
#[allow(clippy::type_complexity)]
fn matmul_shape(a: &[usize], b: &[usize]) -> Option<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (ab, k) = if a.len() == 1 { (&[][..], a[0]) } else { (&a[..a.len() - 2], a[a.len() - 1]) };
    let (bb, k2) = if b.len() == 1 { (&[][..], b[0]) } else { (&b[..b.len() - 2], b[b.len() - 2]) };
    if k != k2 {
        return None;
    }
    let mut out = broadcast_shapes(ab, bb)?;
    if a.len() > 1 {
        out.push(a[a.len() - 2]);
    }
    if b.len() > 1 {
        out.push(b[b.len() - 1]);
    }
    Some((ab.to_vec(), bb.to_vec(), out))
}

fn ref_matmul(a: &T, b: &T) -> T {
    let (ab, bb, out) = matmul_shape(&a.shape, &b.shape).expect("generated shapes multiply");
    let nb = out.len() - usize::from(a.shape.len() > 1) - usize::from(b.shape.len() > 1);
    let k = *a.shape.last().unwrap();
    T::from_fn(&out, |i| {
        let batch = &i[..nb];
        let row = if a.shape.len() > 1 { i[nb] } else { 0 };
        let col = if b.shape.len() > 1 { i[i.len() - 1] } else { 0 };
        (0..k)
            .map(|kk| {
                let ai = if a.shape.len() == 1 {
                    vec![kk]
                } else {
                    let mut v = broadcast_src(batch, &ab);
                    v.extend([row, kk]);
                    v
                };
                let bi = if b.shape.len() == 1 {
                    vec![kk]
                } else {
                    let mut v = broadcast_src(batch, &bb);
                    v.extend([kk, col]);
                    v
                };
                a.at(&ai) * b.at(&bi)
            })
            .sum()
    })
}

/// `y[.., o] = sum_k x[.., k] * w[o, k] + b[o]`.
fn ref_linear(x: &T, w: &T, b: Option<&T>) -> T {
    let (out_f, in_f) = (w.shape[0], w.shape[1]);
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = out_f;
    T::from_fn(&shape, |i| {
        let o = i[i.len() - 1];
        let mut xi = i.to_vec();
        let mut s = b.map_or(0.0, |b| b.data[o]);
        for k in 0..in_f {
            *xi.last_mut().unwrap() = k;
            s += x.at(&xi) * w.at(&[o, k]);
        }
        s
    })
}

// ---------------------------------------------------------------------------
// Random choices.

/// Structural choices, drawn from a proptest-made list (so that failures
/// shrink towards fewer and smaller choices; past its end every choice is 0).
struct Gen<'c> {
    choices: &'c [u32],
    pos: usize,
}

impl Gen<'_> {
    fn next(&mut self) -> u32 {
        let v = self.choices.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.next() as usize % n
        }
    }

    fn coin(&mut self) -> bool {
        self.below(2) == 1
    }

    /// A dim: mostly 1..=4 (broadcasting, tails), sometimes up to 19 (so
    /// that SIMD kernels run their full-width loops too).
    fn dim(&mut self) -> usize {
        if self.below(5) == 0 {
            5 + self.below(15)
        } else {
            1 + self.below(4)
        }
    }

    fn shuffle<X>(&mut self, v: &mut [X]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// A random float attribute in `lo..hi`, on a 1/64 grid.
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        let steps = ((hi - lo) * 64.0) as usize;
        lo + self.below(steps) as f32 / 64.0
    }
}

/// Tensor data: xorshift from a proptest-drawn seed.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

// ---------------------------------------------------------------------------
// Graph building.

struct Val {
    name: String,
    t: T,
    /// False once a value was too large and replaced by its tanh.
    usable: bool,
}

struct Builder {
    /// Graph inputs: value id and data.
    inputs: Vec<(usize, Vec<f32>)>,
    /// Raw f32 tensors: name, shape, data.
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    layers: Vec<Layer>,
    vals: Vec<Val>,
    rng: Rng,
}

type Attrs = Vec<(&'static str, Value)>;

fn ints(v: &[usize]) -> Value {
    Value::IntList(v.iter().map(|&d| d as i64).collect())
}

impl Builder {
    fn new(seed: u64) -> Builder {
        Builder {
            inputs: Vec::new(),
            tensors: Vec::new(),
            layers: Vec::new(),
            vals: Vec::new(),
            rng: Rng(seed | 1),
        }
    }

    fn shape(&self, v: usize) -> Vec<usize> {
        self.vals[v].t.shape.clone()
    }

    fn t(&self, v: usize) -> &T {
        &self.vals[v].t
    }

    fn input(&mut self, shape: &[usize]) -> usize {
        let data: Vec<f32> = (0..numel(shape)).map(|_| self.rng.uniform(-2.0, 2.0)).collect();
        let id = self.vals.len();
        let t = T::new(shape, data.iter().map(|&v| f64::from(v)).collect());
        self.vals.push(Val { name: format!("x{id}"), t, usable: true });
        self.inputs.push((id, data));
        id
    }

    fn layer(
        &mut self,
        op: &str,
        ins: &[usize],
        weights: Vec<String>,
        attrs: Attrs,
        t: T,
    ) -> usize {
        let id = self.vals.len();
        let name = format!("v{id}");
        self.layers.push(Layer {
            op: op.into(),
            inputs: ins.iter().map(|&i| self.vals[i].name.clone()).collect(),
            outputs: vec![name.clone()],
            weights,
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
        self.vals.push(Val { name, t, usable: true });
        id
    }

    fn tensor(&mut self, shape: &[usize], data: Vec<f32>) -> (String, T) {
        let name = format!("t{}", self.tensors.len());
        let t = T::new(shape, data.iter().map(|&v| f64::from(v)).collect());
        self.tensors.push((name.clone(), shape.to_vec(), data));
        (name, t)
    }

    fn random_tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> (String, T) {
        let data = (0..numel(shape)).map(|_| self.rng.uniform(lo, hi)).collect();
        self.tensor(shape, data)
    }

    /// A `constant` layer of values in [-2, 2].
    fn constant(&mut self, shape: &[usize]) -> usize {
        let (name, t) = self.random_tensor(shape, -2.0, 2.0);
        self.layer("constant", &[], vec![name], vec![], t)
    }

    /// A `constant` layer fit to divide by: magnitudes in [0.5, 2].
    fn divisor(&mut self, shape: &[usize]) -> usize {
        let data = (0..numel(shape))
            .map(|_| {
                let m = self.rng.uniform(0.5, 2.0);
                if self.rng.uniform(0.0, 1.0) < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect();
        let (name, t) = self.tensor(shape, data);
        self.layer("constant", &[], vec![name], vec![], t)
    }

    /// Keeps magnitudes bounded: a value above 10 is replaced by its tanh.
    fn tame(&mut self, v: usize) -> usize {
        if self.t(v).max_abs() <= 10.0 {
            return v;
        }
        self.vals[v].usable = false;
        let t = ref_unary(Un::Tanh, self.t(v));
        self.layer("tanh", &[v], vec![], vec![], t)
    }

    fn usable(&self) -> Vec<usize> {
        (0..self.vals.len()).filter(|&v| self.vals[v].usable).collect()
    }

    /// The latest value half of the time (chains), else any (reuse).
    fn pick(&self, g: &mut Gen) -> usize {
        let u = self.usable();
        if g.coin() {
            *u.last().unwrap()
        } else {
            u[g.below(u.len())]
        }
    }

    /// Writes the file: input shapes as metadata, the tensors, the graph.
    fn write(&self, inputs: &[String], outputs: &[String]) -> Result<Vec<u8>, FormatError> {
        let mut w = LsqWriter::new(Cursor::new(Vec::new()))?;
        for &(v, _) in &self.inputs {
            let val = &self.vals[v];
            w.add_metadata(&format!("input_shape.{}", val.name), ints(&val.t.shape))?;
        }
        for (name, shape, data) in &self.tensors {
            w.add_raw_f32(name, shape, data)?;
        }
        w.set_graph(Graph {
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
            layers: self.layers.clone(),
        });
        Ok(w.finish()?.into_inner())
    }

    fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|&(v, _)| self.vals[v].name.clone()).collect()
    }
}

/// A shape that broadcasts with `a`: rank 1..=4, aligned on the right;
/// where `a` has a dim of 1 it may be larger (broadcasting both ways),
/// elsewhere it is `a`'s dim or 1.
fn broadcastable(g: &mut Gen, a: &[usize]) -> Vec<usize> {
    let rank = 1 + g.below(4);
    broadcastable_rank(g, a, rank)
}

/// [`broadcastable`] of a given rank (0 is `[]`).
fn broadcastable_rank(g: &mut Gen, a: &[usize], rank: usize) -> Vec<usize> {
    (0..rank)
        .map(|j| {
            let ai = a.len() as isize - rank as isize + j as isize;
            if ai < 0 {
                g.below(3) + 1
            } else {
                match a[ai as usize] {
                    1 => g.below(3) + 1,
                    d => {
                        if g.below(3) == 0 {
                            1
                        } else {
                            d
                        }
                    }
                }
            }
        })
        .collect()
}

fn random_unary(g: &mut Gen, x: &T) -> Un {
    let min = x.data.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    match g.below(19) {
        9 => Un::Relu6,
        10 => Un::Elu(g.float(0.0, 2.0)),
        11 => Un::GeluTanh,
        12 => Un::Silu,
        13 => Un::HardSwish,
        14 => Un::Softplus,
        15 => Un::Sin,
        16 => Un::Cos,
        17 if x.min_abs() >= 0.25 => Un::Reciprocal,
        18 if min >= 1.0 / 16.0 => Un::Sqrt,
        17 | 18 => Un::Abs,
        0 => Un::Relu,
        1 => Un::Sigmoid,
        2 => Un::Tanh,
        3 if x.max_abs() <= 3.0 => Un::Exp,
        3 => Un::Tanh,
        4 => Un::Neg,
        5 => Un::Abs,
        6 => {
            let lo = g.float(-2.0, 1.0);
            let hi = lo + g.float(0.0, 2.0);
            match g.below(3) {
                0 => Un::Clip(Some(lo), None),
                1 => Un::Clip(None, Some(hi)),
                _ => Un::Clip(Some(lo), Some(hi)),
            }
        }
        7 if g.coin() => Un::HardSigmoid(None),
        7 => Un::HardSigmoid(Some((g.float(0.0, 1.0), g.float(-1.0, 1.0)))),
        _ => Un::LeakyRelu(g.float(0.0, 0.5)),
    }
}

fn op_unary(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let u = random_unary(g, b.t(x));
    let t = ref_unary(u, b.t(x));
    Some(b.layer(u.name(), &[x], vec![], u.attrs(), t))
}

fn op_binary(b: &mut Builder, g: &mut Gen, x: usize, op: Bin) -> Option<usize> {
    let sx = b.shape(x);
    // A divisor must stay away from 0.
    let fits = |b: &Builder, v: usize| op != Bin::Div || b.t(v).min_abs() >= 0.25;
    let other = if g.below(3) == 0 {
        let cands: Vec<usize> = b
            .usable()
            .into_iter()
            .filter(|&v| {
                broadcast_shapes(&sx, &b.t(v).shape).is_some_and(|s| numel(&s) <= MAX_NUMEL)
                    && fits(b, v)
            })
            .collect();
        (!cands.is_empty()).then(|| cands[g.below(cands.len())])
    } else {
        None
    };
    let other = match other {
        Some(o) => o,
        None => {
            let s = if g.below(4) == 0 { vec![1] } else { broadcastable(g, &sx) };
            if numel(&broadcast_shapes(&sx, &s).unwrap()) > MAX_NUMEL {
                return None;
            }
            if op == Bin::Div {
                b.divisor(&s)
            } else {
                b.constant(&s)
            }
        }
    };
    let (l, r) = if g.coin() && fits(b, x) { (other, x) } else { (x, other) };
    let t = ref_binary(op, b.t(l), b.t(r));
    Some(b.layer(op.name(), &[l, r], vec![], vec![], t))
}

fn op_transpose(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let mut perm: Vec<usize> = (0..b.shape(x).len()).collect();
    g.shuffle(&mut perm);
    let t = ref_transpose(b.t(x), &perm);
    Some(b.layer("transpose", &[x], vec![], vec![("perm", ints(&perm))], t))
}

fn op_reshape(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let mut rest = numel(&b.shape(x));
    let rank = 1 + g.below(4);
    let mut dims = Vec::new();
    for _ in 1..rank {
        let divisors: Vec<usize> = (1..=rest).filter(|d| rest.is_multiple_of(*d)).collect();
        let d = divisors[g.below(divisors.len())];
        dims.push(d);
        rest /= d;
    }
    dims.push(rest);
    let mut attr: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    if g.below(3) == 0 {
        attr[g.below(rank)] = -1;
    }
    let t = T::new(&dims, b.t(x).data.clone());
    Some(b.layer("reshape", &[x], vec![], vec![("shape", Value::IntList(attr))], t))
}

fn op_concat(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    if sx.is_empty() {
        return None;
    }
    let axis = g.below(sx.len());
    let mut parts = vec![x];
    for _ in 0..1 + g.below(2) {
        let same_but_axis =
            |s: &[usize]| s.len() == sx.len() && (0..s.len()).all(|d| d == axis || s[d] == sx[d]);
        let cands: Vec<usize> =
            b.usable().into_iter().filter(|&v| same_but_axis(&b.t(v).shape)).collect();
        let p = match g.below(3) {
            0 => cands[g.below(cands.len())], // x is one of them
            _ => {
                let mut s = sx.clone();
                s[axis] = g.dim();
                b.constant(&s)
            }
        };
        parts.push(p);
    }
    let k = g.below(parts.len());
    parts.rotate_left(k);
    let refs: Vec<&T> = parts.iter().map(|&p| b.t(p)).collect();
    let t = ref_concat(&refs, axis);
    if numel(&t.shape) > MAX_NUMEL {
        return None;
    }
    let attrs = vec![("axis", Value::Int(axis as i64))];
    Some(b.layer("concat", &parts, vec![], attrs, t))
}

fn op_slice(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    let (mut starts, mut steps, mut shape) = (Vec::new(), Vec::new(), Vec::new());
    for &dim in &sx {
        let step: i64 = [1, 1, 2, -1, -2, 3][g.below(6)];
        let start = g.below(dim);
        let room =
            if step > 0 { (dim - 1 - start) / step as usize } else { start / (-step) as usize };
        starts.push(start);
        steps.push(step);
        shape.push(1 + g.below(room + 1));
    }
    let t = ref_slice(b.t(x), &starts, &steps, &shape);
    let attrs =
        vec![("starts", ints(&starts)), ("steps", Value::IntList(steps)), ("shape", ints(&shape))];
    Some(b.layer("slice", &[x], vec![], attrs, t))
}

fn op_gather(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    if sx.is_empty() {
        return None;
    }
    let axis = g.below(sx.len());
    let n = g.dim();
    let indices: Vec<usize> = (0..n).map(|_| g.below(sx[axis])).collect();
    let t = ref_gather(b.t(x), axis, &indices);
    if numel(&t.shape) > MAX_NUMEL {
        return None;
    }
    let mut attrs = vec![("indices", ints(&indices))];
    if axis != 0 || g.coin() {
        attrs.push(("axis", Value::Int(axis as i64)));
    }
    Some(b.layer("gather", &[x], vec![], attrs, t))
}

fn op_expand(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    let lead = g.below(4 - sx.len().min(3));
    let mut target: Vec<usize> = (0..lead).map(|_| g.below(3) + 1).collect();
    target.extend(sx.iter().map(|&d| if d == 1 { g.below(3) + 1 } else { d }));
    if numel(&target) > MAX_NUMEL {
        return None;
    }
    let t = ref_expand(b.t(x), &target);
    Some(b.layer("expand", &[x], vec![], vec![("shape", ints(&target))], t))
}

fn op_pad(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    let mode = match g.below(3) {
        0 => Pad::Constant(g.float(-2.0, 2.0)),
        1 => Pad::Reflect,
        _ => Pad::Edge,
    };
    let most = |d: usize| if matches!(mode, Pad::Reflect) { (d - 1).min(2) } else { 2 };
    let begin: Vec<usize> = sx.iter().map(|&d| g.below(most(d) + 1)).collect();
    let end: Vec<usize> = sx.iter().map(|&d| g.below(most(d) + 1)).collect();
    let mut attrs = vec![("pads", ints(&[begin.clone(), end.clone()].concat()))];
    let mode = match mode {
        Pad::Constant(v) => {
            if g.coin() {
                attrs.push(("mode", Value::String("constant".into())));
            }
            if g.below(4) == 0 {
                Pad::Constant(0.0) // the default value
            } else {
                attrs.push(("value", Value::Float(f64::from(v))));
                mode
            }
        }
        Pad::Reflect => {
            attrs.push(("mode", Value::String("reflect".into())));
            mode
        }
        Pad::Edge => {
            attrs.push(("mode", Value::String("edge".into())));
            mode
        }
    };
    let t = ref_pad(b.t(x), &begin, &end, mode);
    if numel(&t.shape) > MAX_NUMEL {
        return None;
    }
    Some(b.layer("pad", &[x], vec![], attrs, t))
}

fn op_reduce(b: &mut Builder, g: &mut Gen, x: usize, keep_forced: bool) -> Option<usize> {
    let r = b.shape(x).len();
    if r == 0 {
        return None;
    }
    let op = [
        Red::Sum,
        Red::Mean,
        Red::Max,
        Red::Sum,
        Red::Mean,
        Red::Max,
        Red::Min,
        Red::Prod,
        Red::L1,
        Red::L2,
        Red::SumSquare,
        Red::LogSumExp,
    ][g.below(12)];
    let mask = 1 + g.below((1 << r) - 1);
    let mut axes: Vec<usize> = (0..r).filter(|a| mask >> a & 1 == 1).collect();
    g.shuffle(&mut axes);
    let mut attrs = vec![("axes", ints(&axes))];
    let keep = match if keep_forced { 0 } else { g.below(3) } {
        0 => true, // the default
        1 => {
            attrs.push(("keepdims", Value::Int(0)));
            false
        }
        _ => {
            attrs.push(("keepdims", Value::Int(1)));
            true
        }
    };
    axes.sort_unstable();
    let t = ref_reduce(b.t(x), &axes, keep, op);
    Some(b.layer(op.name(), &[x], vec![], attrs, t))
}

fn op_softmax(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let r = b.shape(x).len();
    if r == 0 {
        return None;
    }
    let log = g.below(4) == 0;
    let mut attrs = vec![];
    let axis = if g.below(3) == 0 {
        r - 1 // the default: the last axis
    } else {
        let a = g.below(r);
        attrs.push(("axis", Value::Int(a as i64)));
        a
    };
    let t = ref_softmax(b.t(x), axis, log);
    Some(b.layer(if log { "log_softmax" } else { "softmax" }, &[x], vec![], attrs, t))
}

fn op_matmul(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    if sx.is_empty() {
        return None;
    }
    let x_left = g.coin();
    let ok = |a: &[usize], c: &[usize]| {
        matmul_shape(a, c).is_some_and(|(_, _, o)| o.len() <= 4 && numel(&o) <= MAX_NUMEL)
    };
    let other = if g.below(3) == 0 {
        let cands: Vec<usize> = b
            .usable()
            .into_iter()
            .filter(|&v| {
                let s = &b.t(v).shape;
                if x_left {
                    ok(&sx, s)
                } else {
                    ok(s, &sx)
                }
            })
            .collect();
        (!cands.is_empty()).then(|| cands[g.below(cands.len())])
    } else {
        None
    };
    let other = match other {
        Some(o) => o,
        None => {
            // The partner: a vector, a matrix, or a batch broadcasting with
            // x's batch dims.
            let r = sx.len();
            let (k, batch) = match (x_left, r) {
                (true, _) => (sx[r - 1], if r >= 2 { &sx[..r - 2] } else { &[][..] }),
                (false, 1) => (sx[0], &[][..]),
                (false, _) => (sx[r - 2], &sx[..r - 2]),
            };
            let n = g.dim();
            let mut s = match g.below(3) {
                0 => vec![],
                _ => {
                    let rank = 1 + g.below(2);
                    broadcastable_rank(g, batch, rank)
                }
            };
            let s = match (g.below(4), x_left) {
                (0, _) => vec![k],
                (_, true) => {
                    s.extend([k, n]);
                    s
                }
                (_, false) => {
                    s.extend([n, k]);
                    s
                }
            };
            let fits = if x_left { ok(&sx, &s) } else { ok(&s, &sx) };
            if !fits {
                return None;
            }
            b.constant(&s)
        }
    };
    let (l, r) = if x_left { (x, other) } else { (other, x) };
    let t = ref_matmul(b.t(l), b.t(r));
    Some(b.layer("matmul", &[l, r], vec![], vec![], t))
}

fn op_linear(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    let &in_f = sx.last()?;
    let out_f = g.dim();
    if numel(&sx) / in_f * out_f > MAX_NUMEL {
        return None;
    }
    let (wn, w) = b.random_tensor(&[out_f, in_f], -1.0, 1.0);
    let mut weights = vec![wn];
    let bias = if g.coin() {
        let (bn, bt) = b.random_tensor(&[out_f], -1.0, 1.0);
        weights.push(bn);
        Some(bt)
    } else {
        None
    };
    let t = ref_linear(b.t(x), &w, bias.as_ref());
    Some(b.layer("linear", &[x], weights, vec![], t))
}

fn op_flatten(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    if sx.is_empty() {
        return None;
    }
    let start = g.below(sx.len());
    let mut shape = sx[..start].to_vec();
    shape.push(numel(&sx[start..]));
    let mut attrs = vec![];
    if start != 1 || g.coin() {
        attrs.push(("start_dim", Value::Int(start as i64)));
    }
    let t = T::new(&shape, b.t(x).data.clone());
    Some(b.layer("flatten", &[x], vec![], attrs, t))
}

/// `global_avg_pool` / `global_max_pool` over the dims after `[n, c]`.
fn op_global_pool(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    if sx.len() < 3 {
        return None;
    }
    let max = g.coin();
    let axes: Vec<usize> = (2..sx.len()).collect();
    let t = ref_reduce(b.t(x), &axes, true, if max { Red::Max } else { Red::Mean });
    let op = if max { "global_max_pool" } else { "global_avg_pool" };
    Some(b.layer(op, &[x], vec![], vec![], t))
}

/// `layer_norm` over the last axis: `(x - mean) / sqrt(var + eps) * gamma + beta`.
fn op_layer_norm(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let t = b.t(x).clone();
    let &d = t.shape.last()?;
    let eps = if g.coin() { None } else { Some(g.float(0.0, 0.5) + 1e-3) };
    // Rows of (almost) equal values amplify rounding by 1/sqrt(var + eps):
    // only normalise rows that vary.
    let rows: Vec<&[f64]> = t.data.chunks(d).collect();
    let stats: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| {
            let mean = r.iter().sum::<f64>() / d as f64;
            (mean, r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64)
        })
        .collect();
    if stats.iter().any(|&(_, var)| var < 0.05) {
        return None;
    }
    let (gn, gt) = b.random_tensor(&[d], -2.0, 2.0);
    let (bn, bt) = b.random_tensor(&[d], -2.0, 2.0);
    let e = f64::from(eps.unwrap_or(1e-5));
    let data = t
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (mean, var) = stats[i / d];
            (v - mean) / (var + e).sqrt() * gt.data[i % d] + bt.data[i % d]
        })
        .collect();
    let attrs = eps.map(|e| vec![("eps", Value::Float(f64::from(e)))]).unwrap_or_default();
    Some(b.layer("layer_norm", &[x], vec![gn, bn], attrs, T::new(&t.shape, data)))
}

/// `batch_norm` of `[n, c, ...]` with running statistics:
/// `(x - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]`.
fn op_batch_norm(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let sx = b.shape(x);
    if sx.len() < 2 {
        return None;
    }
    let c = sx[1];
    let (gn, gt) = b.random_tensor(&[c], -2.0, 2.0);
    let (bn, bt) = b.random_tensor(&[c], -2.0, 2.0);
    let (mn, mt) = b.random_tensor(&[c], -1.0, 1.0);
    let (vn, vt) = b.random_tensor(&[c], 0.25, 2.0);
    let eps = if g.coin() { None } else { Some(g.float(0.0, 0.5)) };
    let e = f64::from(eps.unwrap_or(1e-5));
    let t = T::from_fn(&sx, |i| {
        let k = i[1];
        (b.t(x).at(i) - mt.data[k]) / (vt.data[k] + e).sqrt() * gt.data[k] + bt.data[k]
    });
    let attrs = eps.map(|e| vec![("eps", Value::Float(f64::from(e)))]).unwrap_or_default();
    Some(b.layer("batch_norm", &[x], vec![gn, bn, mn, vn], attrs, t))
}

/// `x ^ c` for a positive `x` and a constant exponent `c` in [-2, 2]
/// (broadcast either way).
fn op_pow(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let min = b.t(x).data.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    if min < 0.25 || b.t(x).max_abs() > 4.0 {
        return None;
    }
    let sx = b.shape(x);
    let s = broadcastable(g, &sx);
    if numel(&broadcast_shapes(&sx, &s).unwrap()) > MAX_NUMEL {
        return None;
    }
    let c = b.constant(&s);
    let t = ref_binary(Bin::Pow, b.t(x), b.t(c));
    Some(b.layer("pow", &[x, c], vec![], vec![], t))
}

/// One branch of a diamond: `x` itself or a layer of the same (or, for a
/// kept-dims reduction, broadcastable) shape.
fn branch(b: &mut Builder, g: &mut Gen, x: usize) -> usize {
    let y = match g.below(4) {
        0 => Some(x),
        1 => op_softmax(b, g, x),
        2 => op_reduce(b, g, x, true),
        _ => None,
    };
    let y = match y {
        Some(y) => y,
        None => op_unary(b, g, x).unwrap(),
    };
    b.tame(y)
}

/// `x` read by two branches, joined by a binary op.
fn op_diamond(b: &mut Builder, g: &mut Gen, x: usize) -> Option<usize> {
    let l = branch(b, g, x);
    let r = branch(b, g, x);
    let op = [Bin::Add, Bin::Sub, Bin::Mul, Bin::Max, Bin::Min][g.below(5)];
    let t = ref_binary(op, b.t(l), b.t(r));
    Some(b.layer(op.name(), &[l, r], vec![], vec![], t))
}

/// Appends one random op (a few layers for diamonds and constants).
fn random_op(b: &mut Builder, g: &mut Gen) {
    for _ in 0..8 {
        let x = b.pick(g);
        let y = match g.below(21) {
            0 => op_unary(b, g, x),
            1 | 2 => {
                let op = Bin::ALL[g.below(6)];
                op_binary(b, g, x, op)
            }

            3 => op_transpose(b, g, x),
            4 => op_reshape(b, g, x),
            5 => op_concat(b, g, x),
            6 => op_slice(b, g, x),
            7 => op_gather(b, g, x),
            8 => op_expand(b, g, x),
            9 => op_pad(b, g, x),
            10 => op_reduce(b, g, x, false),
            11 => op_softmax(b, g, x),
            12 => op_matmul(b, g, x),
            13 => op_linear(b, g, x),
            14 | 15 => op_diamond(b, g, x),
            16 => op_flatten(b, g, x),
            17 => op_global_pool(b, g, x),
            18 => op_layer_norm(b, g, x),
            19 => op_pow(b, g, x),
            _ => op_batch_norm(b, g, x),
        };
        if let Some(y) = y {
            b.tame(y);
            return;
        }
    }
}

fn random_shape(g: &mut Gen) -> Vec<usize> {
    loop {
        let s: Vec<usize> = (0..1 + g.below(4)).map(|_| g.dim()).collect();
        if numel(&s) <= MAX_NUMEL {
            return s;
        }
    }
}

/// A random valid graph of `1..=8` ops over one or two graph inputs.
fn random_graph(g: &mut Gen, seed: u64) -> Builder {
    let mut b = Builder::new(seed);
    for _ in 0..1 + g.below(2) {
        let s = random_shape(g);
        b.input(&s);
    }
    for _ in 0..1 + g.below(8) {
        if g.pos >= g.choices.len() {
            break; // out of choices: every further op would be the same
        }
        random_op(&mut b, g);
    }
    b
}

// ---------------------------------------------------------------------------
// Running and comparing.

fn describe(b: &Builder) -> String {
    let mut s = String::new();
    for &(v, _) in &b.inputs {
        s += &format!("input {} {:?}\n", b.vals[v].name, b.vals[v].t.shape);
    }
    for l in &b.layers {
        s += &format!(
            "{} = {}({}) w={:?} {:?}\n",
            l.outputs[0],
            l.op,
            l.inputs.join(", "),
            l.weights,
            l.attrs
        );
    }
    s
}

/// Plans and runs graph `b` with outputs `outs` (value ids) and checks
/// every output against the reference, and that running again (and in a
/// second arena) gives the same bits.
fn check(b: &Builder, outs: &[usize]) {
    let names: Vec<String> = outs.iter().map(|&v| b.vals[v].name.clone()).collect();
    let bytes = b.write(&b.input_names(), &names).expect("a valid graph writes");
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let graph = describe(b);
    let plan = Plan::new(&file).unwrap_or_else(|e| panic!("planning failed: {e}\n{graph}"));
    for (info, &v) in plan.outputs().iter().zip(outs) {
        assert_eq!(info.shape, b.vals[v].t.shape, "shape of {}\n{graph}", info.name);
    }
    let m = b.vals.iter().fold(1.0f64, |m, v| m.max(v.t.max_abs()));
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena).unwrap();
    for (i, (_, data)) in b.inputs.iter().enumerate() {
        runner.set_input(i, data).unwrap();
    }
    runner.run().unwrap_or_else(|e| panic!("run failed: {e}\n{graph}"));
    let first: Vec<Vec<f32>> =
        (0..outs.len()).map(|i| runner.output(i).unwrap().to_vec()).collect();
    for (got, &v) in first.iter().zip(outs) {
        let want = &b.vals[v].t;
        assert_eq!(got.len(), want.data.len(), "{}\n{graph}", b.vals[v].name);
        for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
            let err = (f64::from(g) - w).abs();
            assert!(
                g.is_finite() && err <= 1e-4 * w.abs() + 1e-5 * m,
                "output {} [{i}] of shape {:?}: got {g}, want {w}\n{graph}",
                b.vals[v].name,
                want.shape
            );
        }
    }
    // A bound plan runs again to the same results (graph inputs are kept,
    // reused buffers are rewritten before they are read).
    runner.run().unwrap();
    for (i, want) in first.iter().enumerate() {
        assert_eq!(runner.output(i).unwrap(), want.as_slice(), "second run\n{graph}");
    }
    // And so does a fresh binding of the same plan, in dirty memory.
    let mut arena2 = vec![0xffu8; plan.arena_len() + 7];
    let mut runner = plan.bind(&mut arena2[7..]).unwrap();
    for (i, (_, data)) in b.inputs.iter().enumerate() {
        runner.set_input(i, data).unwrap();
    }
    runner.run().unwrap();
    for (i, want) in first.iter().enumerate() {
        assert_eq!(runner.output(i).unwrap(), want.as_slice(), "second arena\n{graph}");
    }
}

/// The graph outputs: the last value, and up to two others (intermediate
/// values, constants or graph inputs).
fn random_outputs(b: &Builder, g: &mut Gen) -> Vec<usize> {
    let mut outs = vec![b.vals.len() - 1];
    for _ in 0..g.below(3) {
        let v = g.below(b.vals.len());
        if !outs.contains(&v) {
            outs.push(v);
        }
    }
    outs
}

/// 128 cases (a few seconds), or `PROPTEST_CASES` when set (to search longer).
fn config() -> ProptestConfig {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default().cases
    } else {
        128
    };
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_graphs_match_the_reference(
        choices in prop::collection::vec(any::<u32>(), 0..400),
        seed in any::<u64>(),
    ) {
        let mut g = Gen { choices: &choices, pos: 0 };
        let b = random_graph(&mut g, seed);
        let outs = random_outputs(&b, &mut g);
        check(&b, &outs);
    }
}

// ---------------------------------------------------------------------------
// Malformed graphs.

/// What a malformed graph must produce.
#[derive(Debug)]
enum Expect {
    /// `Plan::new` fails naming this layer.
    PlanAt(usize),
    /// `Plan::new` fails on the shape of this graph input.
    InputShape(String),
    /// Writing the file fails (the format checks value names).
    Write,
}

fn err_layer(e: &RuntimeError) -> Option<usize> {
    match e {
        RuntimeError::Shape { layer, .. }
        | RuntimeError::Attr { layer, .. }
        | RuntimeError::Weight { layer, .. }
        | RuntimeError::UnsupportedOp { layer, .. } => Some(*layer),
        _ => None,
    }
}

/// A layer that reads `ins` and cannot be planned.
fn bad(b: &mut Builder, op: &str, ins: &[usize], weights: Vec<String>, attrs: Attrs) -> Expect {
    let at = b.layers.len();
    // Its reference value is never looked at.
    b.layer(op, ins, weights, attrs, T::new(&[1], vec![0.0]));
    Expect::PlanAt(at)
}

/// Appends one malformed layer (or input) to `b`.
fn malformed(b: &mut Builder, g: &mut Gen) -> Expect {
    let x = b.pick(g);
    let sx = b.shape(x);
    let r = sx.len();
    match g.below(20) {
        // Shapes that do not broadcast: a dim of 2 or more against another
        // size that is not 1.
        0 | 1 => {
            let big: Vec<usize> = (0..r).filter(|&d| sx[d] >= 2).collect();
            let mut s = sx.clone();
            if big.is_empty() {
                // x is all ones: broadcast a [2, 3] against a [3, 2] instead.
                let a = b.constant(&[2, 3]);
                let c = b.constant(&[3, 2]);
                return bad(b, "add", &[a, c], vec![], vec![]);
            }
            let d = big[g.below(big.len())];
            s[d] = sx[d] + 1 + g.below(2);
            let c = b.constant(&s);
            let op = Bin::ALL[g.below(6)].name();
            let ins = if g.coin() { [x, c] } else { [c, x] };
            bad(b, op, &ins, vec![], vec![])
        }
        2 => {
            let axis = r + g.below(3);
            let attrs = vec![("axis", Value::Int(axis as i64))];
            bad(b, if g.coin() { "softmax" } else { "log_softmax" }, &[x], vec![], attrs)
        }
        3 => {
            // Reduce axes: one past the rank, or repeated.
            let axes = if r == 0 || g.coin() { vec![r] } else { vec![0, 0] };
            bad(b, "reduce_sum", &[x], vec![], vec![("axes", ints(&axes))])
        }
        4 => {
            // Not a permutation: too short, too long, or repeating.
            let perm: Vec<usize> = match g.below(3) {
                0 if r > 0 => (0..r - 1).collect(),
                1 if r > 1 => vec![0; r],
                _ => (0..r + 1).collect(),
            };
            bad(b, "transpose", &[x], vec![], vec![("perm", ints(&perm))])
        }
        5 => {
            // Concat on an axis past the rank, or parts that differ off
            // the axis.
            if r >= 2 && g.coin() {
                let axis = g.below(r);
                let off = (axis + 1 + g.below(r - 1)) % r;
                let mut s = sx.clone();
                s[off] += 1;
                let c = b.constant(&s);
                bad(b, "concat", &[x, c], vec![], vec![("axis", Value::Int(axis as i64))])
            } else {
                bad(b, "concat", &[x, x], vec![], vec![("axis", Value::Int(r as i64))])
            }
        }
        6 => {
            // Gather: an index past the dim, or an axis past the rank.
            if r > 0 && g.coin() {
                let axis = g.below(r);
                let attrs =
                    vec![("axis", Value::Int(axis as i64)), ("indices", ints(&[0, sx[axis]]))];
                bad(b, "gather", &[x], vec![], attrs)
            } else {
                let attrs = vec![("axis", Value::Int(r as i64)), ("indices", ints(&[0]))];
                bad(b, "gather", &[x], vec![], attrs)
            }
        }
        7 if r > 0 => {
            // A slice reading past the end, before the start, or stepping 0.
            let d = g.below(r);
            let mut starts = vec![0; r];
            let mut steps = vec![1i64; r];
            let mut shape = vec![1; r];
            match g.below(4) {
                0 => starts[d] = sx[d],
                1 => shape[d] = sx[d] + 1,
                2 => {
                    steps[d] = -1;
                    shape[d] = 2;
                }
                _ => steps[d] = 0,
            }
            let attrs = vec![
                ("starts", ints(&starts)),
                ("steps", Value::IntList(steps)),
                ("shape", ints(&shape)),
            ];
            bad(b, "slice", &[x], vec![], attrs)
        }
        8 => {
            // Pads: reflecting by a whole dim, the wrong count, an unknown mode.
            let mut pads = vec![0; 2 * r];
            let mut attrs = vec![];
            match g.below(3) {
                0 if r > 0 => {
                    let p = g.below(2 * r);
                    pads[p] = sx[p % r] + g.below(2);
                    attrs.push(("mode", Value::String("reflect".into())));
                }
                1 => {
                    pads.push(1);
                }
                _ => {
                    attrs.push(("mode", Value::String("wrap".into())));
                }
            }
            attrs.push(("pads", ints(&pads)));
            bad(b, "pad", &[x], vec![], attrs)
        }
        9 => {
            // Expand to a shape that x does not broadcast to (a dim of 2
            // or more grown by one), or to a negative dim.
            let big: Vec<usize> = (0..r).filter(|&d| sx[d] >= 2).collect();
            let target = if big.is_empty() {
                Value::IntList(vec![-1])
            } else {
                let mut t: Vec<i64> = sx.iter().map(|&d| d as i64).collect();
                t[big[g.below(big.len())]] += 1;
                Value::IntList(t)
            };
            bad(b, "expand", &[x], vec![], vec![("shape", target)])
        }
        10 => {
            // Reshape to a different element count.
            let n = numel(&sx) as i64;
            let attr = if g.coin() { vec![n + 1] } else { vec![-1, n + 1] };
            bad(b, "reshape", &[x], vec![], vec![("shape", Value::IntList(attr))])
        }
        11 if r > 0 => {
            // Matmul with inner dims that differ.
            let c = b.constant(&[sx[r - 1] + 1, 2]);
            bad(b, "matmul", &[x, c], vec![], vec![])
        }
        12 if r > 0 => {
            // Linear whose weight does not fit the features, or whose
            // bias has the wrong length.
            let in_f = sx[r - 1];
            if g.coin() {
                let (w, _) = b.random_tensor(&[2, in_f + 1], -1.0, 1.0);
                bad(b, "linear", &[x], vec![w], vec![])
            } else {
                let (w, _) = b.random_tensor(&[2, in_f], -1.0, 1.0);
                let (bias, _) = b.random_tensor(&[3], -1.0, 1.0);
                bad(b, "linear", &[x], vec![w, bias], vec![])
            }
        }
        13 => {
            // An attribute the op does not define (a typo).
            let (op, attrs) = match g.below(3) {
                0 => ("relu", vec![("alpha", Value::Float(0.1))]),
                1 => ("softmax", vec![("axes", ints(&[0]))]),
                _ => ("reduce_mean", vec![("axis", ints(&[0])), ("keepdims", Value::Int(1))]),
            };
            bad(b, op, &[x], vec![], attrs)
        }
        14 => {
            // The wrong number of inputs.
            match g.below(3) {
                0 => bad(b, "add", &[x], vec![], vec![]),
                1 => bad(b, "relu", &[x, x], vec![], vec![]),
                _ => bad(b, "matmul", &[x, x, x], vec![], vec![]),
            }
        }
        15 => {
            // Wrongly typed attributes.
            match g.below(3) {
                0 => bad(b, "transpose", &[x], vec![], vec![("perm", Value::Int(0))]),
                1 => bad(b, "clip", &[x], vec![], vec![("min", Value::String("0".into()))]),
                _ => bad(b, "concat", &[x, x], vec![], vec![("axis", Value::Int(-1))]),
            }
        }
        16 => {
            // A constant without its tensor, or with an input.
            if g.coin() {
                bad(b, "constant", &[], vec![], vec![])
            } else {
                let (w, _) = b.random_tensor(&[2], -1.0, 1.0);
                bad(b, "constant", &[x], vec![w], vec![])
            }
        }
        17 => {
            // A graph input without `input_shape.<name>`.
            let id = b.vals.len();
            let name = format!("x{id}");
            b.vals.push(Val { name: name.clone(), t: T::new(&[1], vec![0.0]), usable: false });
            // Listed as a graph input below, but given no metadata.
            b.layer("relu", &[id], vec![], vec![], T::new(&[1], vec![0.0]));
            Expect::InputShape(name)
        }
        _ => {
            // A dangling name: a layer reading a value never produced.
            b.layers.push(Layer {
                op: "relu".into(),
                inputs: vec!["ghost".into()],
                outputs: vec!["haunted".into()],
                ..Layer::default()
            });
            Expect::Write
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn malformed_graphs_are_planning_errors(
        choices in prop::collection::vec(any::<u32>(), 0..300),
        seed in any::<u64>(),
    ) {
        let mut g = Gen { choices: &choices, pos: 0 };
        let mut b = random_graph(&mut g, seed);
        let expect = malformed(&mut b, &mut g);
        let mut inputs = b.input_names();
        if let Expect::InputShape(name) = &expect {
            inputs.push(name.clone());
        }
        let last = b.layers.last().unwrap().outputs[0].clone();
        let graph = describe(&b);
        let bytes = match (b.write(&inputs, &[last]), &expect) {
            (Err(_), Expect::Write) => return Ok(()),
            (Err(e), _) => panic!("writing failed: {e}\n{graph}"),
            (Ok(_), Expect::Write) => panic!("a dangling name was written\n{graph}"),
            (Ok(bytes), _) => bytes,
        };
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let e = match Plan::new(&file) {
            Ok(_) => panic!("planned a malformed graph\n{graph}"),
            Err(e) => e,
        };
        match &expect {
            Expect::PlanAt(at) => {
                prop_assert_eq!(err_layer(&e), Some(*at), "{}\n{}", e, graph);
            }
            Expect::InputShape(name) => {
                prop_assert!(
                    matches!(&e, RuntimeError::InputShape { name: n, .. } if n == name),
                    "{}\n{}", e, graph
                );
            }
            Expect::Write => unreachable!(),
        }
        // The message names the layer (or the input), built without panicking.
        prop_assert!(!e.to_string().is_empty());
    }
}

/// Values with no elements (a dim of 0) flow through the ops that allow
/// them: a zero-size input, an empty slice and gather, concatenations with
/// an empty part, and products over an inner dim of 0 (all zeros).
#[test]
fn zero_size_values() {
    let mut b = Builder::new(7);
    let x = b.input(&[3, 4]);
    let e = b.input(&[3, 0]);
    let slice_attrs = vec![
        ("starts", ints(&[0, 1])),
        ("steps", Value::IntList(vec![1, -1])),
        ("shape", ints(&[0, 2])),
    ];
    let t = ref_slice(b.t(x), &[0, 1], &[1, -1], &[0, 2]);
    let s = b.layer("slice", &[x], vec![], slice_attrs, t);
    let t = ref_gather(b.t(x), 1, &[]);
    let gat =
        b.layer("gather", &[x], vec![], vec![("axis", Value::Int(1)), ("indices", ints(&[]))], t);
    let t = ref_concat(&[b.t(gat), b.t(x), b.t(e)], 1);
    let cat = b.layer("concat", &[gat, x, e], vec![], vec![("axis", Value::Int(1))], t);
    let t = ref_unary(Un::Exp, b.t(e));
    let ex = b.layer("exp", &[e], vec![], vec![], t);
    let c = b.constant(&[0, 5]);
    let t = ref_matmul(b.t(e), b.t(c));
    let mm = b.layer("matmul", &[e, c], vec![], vec![], t);
    let (w, wt) = b.random_tensor(&[2, 0], -1.0, 1.0);
    let t = ref_linear(b.t(e), &wt, None);
    let lin = b.layer("linear", &[e], vec![w], vec![], t);
    let t = ref_reduce(b.t(e), &[1], false, Red::Sum);
    let sum = b.layer(
        "reduce_sum",
        &[e],
        vec![],
        vec![("axes", ints(&[1])), ("keepdims", Value::Int(0))],
        t,
    );
    let t = ref_transpose(b.t(s), &[1, 0]);
    let tr = b.layer("transpose", &[s], vec![], vec![("perm", ints(&[1, 0]))], t);
    check(&b, &[s, gat, cat, ex, mm, lin, sum, tr]);
}

/// Rank-0 values (a full reduction without kept dims) through elementwise
/// ops, broadcasting, reshape, expand and an empty transpose.
#[test]
fn rank_zero_values() {
    let mut b = Builder::new(8);
    let x = b.input(&[2, 3]);
    let axes = vec![("axes", ints(&[1, 0])), ("keepdims", Value::Int(0))];
    let t = ref_reduce(b.t(x), &[0, 1], false, Red::Mean);
    let m = b.layer("reduce_mean", &[x], vec![], axes, t);
    let t = ref_binary(Bin::Sub, b.t(x), b.t(m));
    let centred = b.layer("sub", &[x, m], vec![], vec![], t);
    let t = ref_unary(Un::Sigmoid, b.t(m));
    let sg = b.layer("sigmoid", &[m], vec![], vec![], t);
    let t = ref_transpose(b.t(sg), &[]);
    let tr = b.layer("transpose", &[sg], vec![], vec![("perm", ints(&[]))], t);
    let t = ref_expand(b.t(tr), &[2, 2]);
    let ex = b.layer("expand", &[tr], vec![], vec![("shape", ints(&[2, 2]))], t);
    let t = T::new(&[1, 1], b.t(m).data.clone());
    let rs = b.layer("reshape", &[m], vec![], vec![("shape", ints(&[1, 1]))], t);
    check(&b, &[m, centred, sg, tr, ex, rs]);
}
