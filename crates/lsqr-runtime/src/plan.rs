//! Planning: everything that may allocate happens here, once.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Range;

use lsqr_kernels::conv::{conv1d_scratch_len, conv2d_scratch_len, Conv1dParams, Conv2dParams};
use lsqr_kernels::conv_transpose::{
    conv_transpose2d_output_shape, conv_transpose2d_scratch_len, ConvTranspose2dParams,
};
use lsqr_kernels::elementwise::{BinaryOp, UnaryOp, MAX_RANK};
use lsqr_kernels::layout::PadMode;
use lsqr_kernels::packed::PackedWeight;
use lsqr_kernels::pool::Pool2dParams;
use lsqr_kernels::reduce::ReduceOp;
use lsqr_kernels::resize::{CoordinateTransform, NearestMode, ResizeMode, ResizeParams};
use lsqr_kernels::{broadcast_shape, Pool2d};

use crate::error::RuntimeError;
use crate::exec::Runner;
use lsqr_format::{Layer, LsqFile, Value, MAX_DIMS};
use lsqr_kernels::packed::linear_scratch_len;

/// A graph input or output: its name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// The value's name in the graph.
    pub name: String,
    /// Its shape, row-major.
    pub shape: Vec<usize>,
}

/// Floats per alignment unit: every buffer starts on a 64-byte boundary,
/// so SIMD loads never straddle cache lines at a buffer's start.
const ALIGN_F32: usize = 16;
/// Bytes of alignment of the arena's buffers.
pub(crate) const ALIGN_BYTES: usize = 64;

/// A layer's weight, kept the way the kernels read it: packed codes
/// borrowed from the file, or raw floats converted to f32 once.
pub(crate) type Weight<'f> = PackedWeight<'f>;

/// One planned operation with its constants.
#[derive(Debug)]
pub(crate) enum Op<'f> {
    Linear {
        w: Weight<'f>,
        bias: Option<Vec<f32>>,
        batch: usize,
    },
    /// A `linear` whose input is `equal(x, keys)`, fused by
    /// [`fuse_one_hot_linear`]: reads `x`.
    OneHotLinear {
        w: Weight<'f>,
        bias: Option<Vec<f32>>,
        keys: Vec<f32>,
    },
    Conv2d {
        w: Weight<'f>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
        input: [usize; 4],
    },
    Conv1d {
        w: Weight<'f>,
        bias: Option<Vec<f32>>,
        params: Conv1dParams,
        input: [usize; 3],
    },
    ConvTranspose2d {
        w: Weight<'f>,
        bias: Option<Vec<f32>>,
        params: ConvTranspose2dParams,
        input: [usize; 4],
    },
    Unary(UnaryOp),
    /// PyTorch's hardsigmoid, `relu6(x + 3) / 6` (an attribute-less
    /// `hardsigmoid`); with alpha and beta it is ONNX's `Unary`.
    HardSigmoidTorch,
    Binary(BinaryOp),
    /// ONNX Where over three broadcast values.
    Where,
    Softmax {
        axis: usize,
        log: bool,
    },
    LayerNorm {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        eps: f32,
        axis: usize,
    },
    /// Per-channel `x * scale + shift` (folded from the statistics at
    /// planning time, so running allocates nothing); `plane` elements per
    /// channel.
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
        plane: usize,
    },
    MaxPool {
        pool: Pool2d,
        input: [usize; 4],
    },
    AvgPool {
        pool: Pool2d,
        input: [usize; 4],
    },
    /// ONNX pooling: asymmetric pads, dilation, ceil mode, count_include_pad.
    Pool {
        max: bool,
        params: Pool2dParams,
        input: [usize; 4],
    },
    /// Global pooling over the trailing dims of `[n, c, ...]`.
    GlobalPool {
        max: bool,
        input: [usize; 4],
    },
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    /// Index of the largest / smallest value along `axis`.
    ArgExtreme {
        max: bool,
        axis: usize,
        last_index: bool,
    },
    MatMul,
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    Slice {
        starts: Vec<usize>,
        steps: Vec<isize>,
    },
    /// Rows of a table weight at the input's indices (whole numbers as f32).
    GatherRows {
        w: Weight<'f>,
    },
    /// Gather with the indices in the second input (whole numbers as f32).
    GatherComputed {
        axis: usize,
    },
    Gather {
        axis: usize,
        indices: Vec<usize>,
    },
    Expand,
    Pad {
        begin: Vec<usize>,
        end: Vec<usize>,
        mode: PadMode,
    },
    Resize(ResizeParams),
    /// flatten and reshape: same values, new shape.
    Copy,
}

#[derive(Debug)]
pub(crate) struct Step<'f> {
    /// The graph layer it runs (the last one, for fused layers).
    pub layer: usize,
    pub op_name: &'static str,
    pub op: Op<'f>,
    pub inputs: Vec<usize>,
    pub output: usize,
    /// f32 scratch this step needs.
    pub scratch: usize,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub info: ValueInfo,
    /// Where the value lives: in the arena (f32 elements from the arena's
    /// aligned start), or a constant of the plan.
    pub loc: Loc,
}

/// Where a value lives.
#[derive(Debug, Clone)]
pub(crate) enum Loc {
    Arena(Range<usize>),
    /// Index into [`Plan::consts`].
    Const(usize),
}

/// An executable plan of a `.lsq` graph: checked layers with their weights
/// ready for the kernels, every value's shape, and the arena layout. See
/// the [module documentation](super).
#[derive(Debug)]
pub struct Plan<'f> {
    pub(crate) values: Vec<Slot>,
    /// The values of `constant` layers (read-only at run time).
    pub(crate) consts: Vec<Vec<f32>>,
    pub(crate) steps: Vec<Step<'f>>,
    pub(crate) input_ids: Vec<usize>,
    pub(crate) output_ids: Vec<usize>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    /// f32 elements of the scratch region (at the arena's start).
    pub(crate) scratch_len: usize,
    /// f32 elements of scratch + values.
    pub(crate) total_len: usize,
    arena_len: usize,
    _file: PhantomData<&'f ()>,
}

/// The ops this runtime executes (FORMAT.md §6.1 documents each). A graph
/// naming any other op is refused by [`Plan::new`], naming the layer.
pub const OPS: &[&str] = &[
    "constant",
    "linear",
    "conv1d",
    "conv2d",
    "conv_transpose2d",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "sigmoid",
    "tanh",
    "gelu",
    "gelu_tanh",
    "silu",
    "hardsigmoid",
    "hardswish",
    "clip",
    "neg",
    "abs",
    "sqrt",
    "reciprocal",
    "exp",
    "log",
    "erf",
    "floor",
    "ceil",
    "round",
    "sign",
    "softplus",
    "sin",
    "cos",
    "not",
    "trunc",
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "max",
    "min",
    "mod",
    "fmod",
    "equal",
    "less",
    "greater",
    "less_or_equal",
    "greater_or_equal",
    "where",
    "softmax",
    "log_softmax",
    "layer_norm",
    "batch_norm",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "global_avg_pool",
    "global_max_pool",
    "reduce_sum",
    "reduce_mean",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_l1",
    "reduce_l2",
    "reduce_sum_square",
    "reduce_log_sum_exp",
    "arg_max",
    "arg_min",
    "matmul",
    "transpose",
    "concat",
    "slice",
    "gather",
    "expand",
    "pad",
    "resize",
    "flatten",
    "reshape",
];

impl<'f> Plan<'f> {
    /// Checks the graph of `file` and plans its execution: weights are
    /// prepared (packed ones borrowed from the file), every value's shape
    /// is inferred from the graph inputs' `input_shape.<name>` metadata,
    /// and each value gets a 64-byte-aligned place in one arena, reusing
    /// the places of values no longer needed.
    ///
    /// Data checksums are not checked here: opening a file reads only its
    /// header, and a flipped bit in a weight would run as a wrong value.
    /// Call [`LsqFile::verify`] first (as `lsqr::load_lsq_model`,
    /// `lsqr run` and the C API's `lsqr_micro_load` do), unless the bytes
    /// were checked before.
    pub fn new(file: &'f LsqFile<'_>) -> Result<Plan<'f>, RuntimeError> {
        // CPU-path selection and `LSQR_EXACT` are read lazily in the kernel
        // crate, from the environment (which allocates); do it now, not in
        // `run`.
        let _ = lsqr_kernels::Kernels::active();
        let _ = lsqr_kernels::packed::exact_forced();
        let graph = file.graph().ok_or(RuntimeError::NoGraph)?;
        let mut values: Vec<ValueInfo> = Vec::new();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for name in &graph.inputs {
            let shape = input_shape(file, name)?;
            ids.insert(name, values.len());
            values.push(ValueInfo { name: name.clone(), shape });
        }
        let mut steps = Vec::with_capacity(graph.layers.len());
        let mut consts: Vec<Vec<f32>> = Vec::new();
        let mut const_of: HashMap<usize, usize> = HashMap::new();
        for (index, layer) in graph.layers.iter().enumerate() {
            let cx = Cx { index, layer };
            let op_name = OPS.iter().find(|&&s| s == layer.op).copied().ok_or_else(|| {
                RuntimeError::UnsupportedOp { layer: index, op: layer.op.clone() }
            })?;
            if layer.outputs.len() != 1 {
                return Err(cx.shape(format!(
                    "has {} outputs; every op writes exactly one",
                    layer.outputs.len()
                )));
            }
            let mut inputs = Vec::with_capacity(layer.inputs.len());
            for name in &layer.inputs {
                let id = ids
                    .get(name.as_str())
                    .copied()
                    .ok_or_else(|| cx.shape(format!("input `{name}` is not defined before")))?;
                inputs.push(id);
            }
            let in_shapes: Vec<&[usize]> =
                inputs.iter().map(|&id| values[id].shape.as_slice()).collect();
            let output = values.len();
            let shape = if op_name == "constant" {
                cx.allow_attrs(&[])?;
                cx.inputs(&in_shapes, 0)?;
                let names = cx.weights(1, 1, "[t]")?;
                let view = file
                    .tensor(&names[0])
                    .map_err(|e| cx.weight_err(&names[0], format!("unreadable: {e}")))?;
                let data =
                    view.to_f32_vec().map_err(|e| cx.weight_err(&names[0], e.to_string()))?;
                const_of.insert(output, consts.len());
                consts.push(data);
                view.info().shape_usize()
            } else {
                let (op, shape, scratch) = plan_layer(&cx, file, op_name, &in_shapes)?;
                steps.push(Step { layer: index, op_name, op, inputs, output, scratch });
                shape
            };
            if shape.len() > MAX_DIMS {
                return Err(cx.shape(format!("output rank {} exceeds {MAX_DIMS}", shape.len())));
            }
            element_count(&shape)?;
            let out_name = &layer.outputs[0];
            if ids.insert(out_name, output).is_some() {
                return Err(cx.shape(format!("value `{out_name}` is produced twice")));
            }
            values.push(ValueInfo { name: out_name.clone(), shape });
        }
        let lookup = |name: &String| {
            ids.get(name.as_str()).copied().ok_or_else(|| RuntimeError::Shape {
                layer: graph.layers.len(),
                op: "graph".into(),
                problem: format!("graph output `{name}` is never produced"),
            })
        };
        let input_ids: Vec<usize> = (0..graph.inputs.len()).collect();
        let output_ids = graph.outputs.iter().map(lookup).collect::<Result<Vec<_>, _>>()?;
        fuse_one_hot_linear(&mut steps, &values, &consts, &const_of, &output_ids);
        let is_const: Vec<bool> = (0..values.len()).map(|v| const_of.contains_key(&v)).collect();
        let ranges = assign_buffers(&values, &is_const, &steps, &input_ids, &output_ids)?;
        let values_len = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        let scratch_len =
            round_up(steps.iter().map(|s| s.scratch).max().unwrap_or(0)).ok_or(too_large())?;
        // The value ranges are relative to the values region, after
        // scratch, and were rounded up to 64 bytes; a slot is the value's
        // exact elements.
        let values: Vec<Slot> = values
            .into_iter()
            .zip(ranges)
            .enumerate()
            .map(|(v, (info, r))| {
                let start = r.start + scratch_len;
                let len = info.shape.iter().product::<usize>();
                let loc = match const_of.get(&v) {
                    Some(&c) => Loc::Const(c),
                    None => Loc::Arena(start..start + len),
                };
                Slot { info, loc }
            })
            .collect();
        let total_len = scratch_len.checked_add(values_len).ok_or(too_large())?;
        let arena_len = total_len
            .checked_mul(4)
            .and_then(|b| b.checked_add(ALIGN_BYTES - 1))
            .ok_or(too_large())?;
        let info = |&id: &usize| values[id].info.clone();
        let inputs = input_ids.iter().map(info).collect();
        let outputs = output_ids.iter().map(info).collect();
        Ok(Plan {
            values,
            consts,
            steps,
            input_ids,
            output_ids,
            inputs,
            outputs,
            scratch_len,
            total_len,
            arena_len,
            _file: PhantomData,
        })
    }

    /// Keeps every linear on the exact f32 table path (`true`) or
    /// lets C <= 8 weights use integer dot products (`false`, the default;
    /// `lsqr_kernels::packed::PackedWeight::set_exact` explains the
    /// trade). `LSQR_EXACT=1` in the environment forces `true`. The arena
    /// size does not change: it was planned for the integer path, which
    /// needs the most scratch.
    pub fn set_exact(&mut self, exact: bool) {
        for step in &mut self.steps {
            if let Op::Linear { w, .. } = &mut step.op {
                w.set_exact(exact);
            }
        }
    }

    /// Bytes of arena [`Plan::bind`] needs: the buffers, plus 63 bytes so
    /// that any arena can be aligned to 64.
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }

    /// Number of layers ([`Runner::run_layer`] takes `0..layer_count()`).
    pub fn layer_count(&self) -> usize {
        self.steps.len()
    }

    /// The index in the file's graph of the layer that step `i` of
    /// [`Runner::run_layer`] runs. `constant` layers have no step, and a
    /// step may run several layers fused (`equal` then a `linear` of its
    /// one-hot output: the `linear`'s index).
    pub fn graph_layer(&self, i: usize) -> Option<usize> {
        self.steps.get(i).map(|s| s.layer)
    }

    /// The graph inputs, in order, with their shapes.
    pub fn inputs(&self) -> &[ValueInfo] {
        &self.inputs
    }

    /// The graph outputs, in order, with their shapes.
    pub fn outputs(&self) -> &[ValueInfo] {
        &self.outputs
    }

    /// The shape of every value (inputs first, then each layer's output),
    /// for tools that print a model.
    pub fn value_shapes(&self) -> impl Iterator<Item = &ValueInfo> {
        self.values.iter().map(|s| &s.info)
    }

    /// Binds the plan to a caller-provided arena of at least
    /// [`Plan::arena_len`] bytes (zeroed here). Nothing is allocated from
    /// here on: running only writes into the arena.
    pub fn bind<'p, 'a>(&'p self, arena: &'a mut [u8]) -> Result<Runner<'p, 'f, 'a>, RuntimeError> {
        Runner::new(self, arena)
    }
}

fn too_large() -> RuntimeError {
    RuntimeError::TooLarge { what: "the arena" }
}

/// `n` rounded up to whole 64-byte units of f32.
fn round_up(n: usize) -> Option<usize> {
    n.checked_next_multiple_of(ALIGN_F32)
}

fn element_count(shape: &[usize]) -> Result<usize, RuntimeError> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or(RuntimeError::TooLarge { what: "a value's element count" })
}

/// The shape of graph input `name`, from metadata `input_shape.<name>`.
fn input_shape(file: &LsqFile<'_>, name: &str) -> Result<Vec<usize>, RuntimeError> {
    let problem = |p: &str| RuntimeError::InputShape { name: name.into(), problem: p.into() };
    match file.metadata_get(&format!("input_shape.{name}")) {
        None => Err(problem("has no shape")),
        Some(Value::IntList(dims)) => {
            if dims.len() > MAX_DIMS {
                return Err(problem("has more than 8 dims"));
            }
            let shape = dims
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| problem("has a negative dim")))
                .collect::<Result<Vec<_>, _>>()?;
            element_count(&shape)?;
            Ok(shape)
        }
        Some(_) => Err(problem("has a shape entry that is not an IntList")),
    }
}

/// Lifetimes in steps: graph inputs are defined at 0, layer `i`'s output
/// at `i + 1`; graph inputs and outputs live to the end (so a plan can be
/// run again, and outputs read after `run`). Values are then placed first
/// fit, in definition order, in the lowest gap no value of overlapping
/// lifetime occupies. Returns each value's range in f32 elements.
/// Each `linear` whose only input is `equal(x, keys)`, that value read by
/// nothing else, becomes one [`Op::OneHotLinear`] step on `x`: `keys` a
/// constant of shape `[1, ..., 1, K]` with distinct values, `x` of the
/// one-hot's shape with a last dim of 1, the weight finite. It computes
/// the values the two steps did on the exact path (see
/// `lsqr_kernels::packed::one_hot_linear_into`); an integer-path linear
/// (batch <= 64 on C <= 8 weights) computed approximations of them. The
/// one-hot value is left unwritten and unread.
fn fuse_one_hot_linear(
    steps: &mut Vec<Step<'_>>,
    values: &[ValueInfo],
    consts: &[Vec<f32>],
    const_of: &HashMap<usize, usize>,
    output_ids: &[usize],
) {
    let mut fused_away = vec![false; steps.len()];
    for i in 0..steps.len() {
        let Some((j, x, keys)) = one_hot_input(steps, i, values, consts, const_of, output_ids)
        else {
            continue;
        };
        let Op::Linear { w, bias, .. } = std::mem::replace(&mut steps[i].op, Op::Copy) else {
            continue;
        };
        steps[i].scratch = lsqr_kernels::packed::one_hot_linear_scratch_len(&w);
        steps[i].op = Op::OneHotLinear { w, bias, keys };
        steps[i].inputs = vec![x];
        fused_away[j] = true;
    }
    let mut k = 0;
    steps.retain(|_| {
        k += 1;
        !fused_away[k - 1]
    });
}

/// For step `i`, a `linear` fed by `equal(x, keys)` that
/// [`fuse_one_hot_linear`] may fuse: the `equal` step, `x` and the keys.
fn one_hot_input(
    steps: &[Step<'_>],
    i: usize,
    values: &[ValueInfo],
    consts: &[Vec<f32>],
    const_of: &HashMap<usize, usize>,
    output_ids: &[usize],
) -> Option<(usize, usize, Vec<f32>)> {
    let Op::Linear { w, .. } = &steps[i].op else { return None };
    let t = *steps[i].inputs.first()?;
    let readers = steps.iter().filter(|s| s.inputs.contains(&t)).count();
    if readers != 1 || output_ids.contains(&t) {
        return None;
    }
    let j = steps.iter().position(|s| s.output == t)?;
    let Op::Binary(BinaryOp::Equal) = steps[j].op else { return None };
    let &[p, q] = steps[j].inputs.as_slice() else { return None };
    let (x, keys) = match (const_of.get(&p), const_of.get(&q)) {
        (None, Some(&c)) => (p, (q, c)),
        (Some(&c), None) => (q, (p, c)),
        _ => return None,
    };
    let (one_hot, x_shape) = (&values[t].shape, &values[x].shape);
    let (keys_shape, keys) = (&values[keys.0].shape, consts.get(keys.1)?);
    let k = *one_hot.last()?;
    let x_fits = x_shape.len() == one_hot.len()
        && x_shape[..x_shape.len() - 1] == one_hot[..one_hot.len() - 1]
        && x_shape.last() == Some(&1);
    let keys_fit = keys_shape.last() == Some(&k)
        && keys_shape[..keys_shape.len() - 1].iter().all(|&d| d == 1)
        && keys.len() == k
        && w.cols() == k;
    if !x_fits || !keys_fit {
        return None;
    }
    let mut sorted = keys.clone();
    sorted.sort_by(f32::total_cmp);
    if sorted.windows(2).any(|p| p[0] == p[1]) {
        return None;
    }
    let mut dense = vec![0.0f32; w.rows().checked_mul(w.cols())?];
    lsqr_kernels::packed::dequantize_into(w, &mut dense).ok()?;
    dense.iter().all(|v| v.is_finite()).then(|| (j, x, keys.clone()))
}

fn assign_buffers(
    values: &[ValueInfo],
    is_const: &[bool],
    steps: &[Step<'_>],
    input_ids: &[usize],
    output_ids: &[usize],
) -> Result<Vec<Range<usize>>, RuntimeError> {
    let end = steps.len() + 1;
    let mut def = vec![0usize; values.len()];
    let mut last = vec![0usize; values.len()];
    for (i, s) in steps.iter().enumerate() {
        def[s.output] = i + 1;
        last[s.output] = last[s.output].max(i + 1);
        for &v in &s.inputs {
            last[v] = last[v].max(i + 1);
        }
    }
    for &v in input_ids.iter().chain(output_ids) {
        last[v] = end;
    }
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(values.len());
    let mut busy: Vec<Range<usize>> = Vec::new();
    for v in 0..values.len() {
        if is_const[v] {
            // Constants live in the plan, not the arena.
            ranges.push(0..0);
            continue;
        }
        let len = round_up(element_count(&values[v].shape)?).ok_or(too_large())?;
        busy.clear();
        busy.extend(
            (0..v)
                .filter(|&u| !is_const[u] && def[u] <= last[v] && def[v] <= last[u])
                .map(|u| ranges[u].clone()),
        );
        busy.sort_by_key(|r| r.start);
        let mut start = 0usize;
        for r in &busy {
            if r.start >= start.checked_add(len).ok_or(too_large())? {
                break;
            }
            start = start.max(r.end);
        }
        ranges.push(start..start.checked_add(len).ok_or(too_large())?);
    }
    Ok(ranges)
}

/// A layer being planned, for error messages.
struct Cx<'g> {
    index: usize,
    layer: &'g Layer,
}

impl Cx<'_> {
    fn shape(&self, problem: String) -> RuntimeError {
        RuntimeError::Shape { layer: self.index, op: self.layer.op.clone(), problem }
    }

    fn attr_err(&self, attr: &str, problem: impl Into<String>) -> RuntimeError {
        RuntimeError::Attr {
            layer: self.index,
            op: self.layer.op.clone(),
            attr: attr.into(),
            problem: problem.into(),
        }
    }

    fn weight_err(&self, weight: &str, problem: impl Into<String>) -> RuntimeError {
        RuntimeError::Weight {
            layer: self.index,
            op: self.layer.op.clone(),
            weight: weight.into(),
            problem: problem.into(),
        }
    }

    /// Rejects attributes the op does not define (a typo such as `strides`
    /// would otherwise silently run with the default).
    fn allow_attrs(&self, allowed: &[&str]) -> Result<(), RuntimeError> {
        for (key, _) in &self.layer.attrs {
            if !allowed.contains(&key.as_str()) {
                let hint = if allowed.is_empty() {
                    "is not defined: this op takes no attributes".to_string()
                } else {
                    format!("is not defined for this op (it takes {})", allowed.join(", "))
                };
                return Err(self.attr_err(key, hint));
            }
        }
        Ok(())
    }

    fn inputs(&self, shapes: &[&[usize]], n: usize) -> Result<(), RuntimeError> {
        if shapes.len() != n {
            return Err(self.shape(format!("takes {n} input(s), the graph gives {}", shapes.len())));
        }
        Ok(())
    }

    fn rank<const N: usize>(&self, shape: &[usize]) -> Result<[usize; N], RuntimeError> {
        shape.try_into().map_err(|_| {
            let name = self.layer.inputs.first().map_or("", String::as_str);
            self.shape(format!("input `{name}` has shape {shape:?}, expected rank {N}"))
        })
    }

    fn usize_of(&self, key: &str, v: i64) -> Result<usize, RuntimeError> {
        usize::try_from(v).map_err(|_| self.attr_err(key, format!("is {v}, must be >= 0")))
    }

    /// An `Int` attribute (>= 0), or `default` when absent.
    fn int(&self, key: &str, default: Option<usize>) -> Result<usize, RuntimeError> {
        match (self.layer.attr(key), default) {
            (Some(Value::Int(v)), _) => self.usize_of(key, *v),
            (Some(Value::IntList(l)), _) if l.len() == 1 => self.usize_of(key, l[0]),
            (Some(other), _) => Err(self.attr_err(key, format!("must be an Int, got {other:?}"))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.attr_err(key, "is required")),
        }
    }

    /// A `[h, w]` attribute: an `IntList` of 2, or one `Int` for both axes.
    fn pair(&self, key: &str, default: Option<[usize; 2]>) -> Result<[usize; 2], RuntimeError> {
        match (self.layer.attr(key), default) {
            (Some(Value::Int(v)), _) => Ok([self.usize_of(key, *v)?; 2]),
            (Some(Value::IntList(l)), _) if l.len() == 2 => {
                Ok([self.usize_of(key, l[0])?, self.usize_of(key, l[1])?])
            }
            (Some(other), _) => Err(self.attr_err(
                key,
                format!("must be an IntList of 2 (or one Int for both axes), got {other:?}"),
            )),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.attr_err(key, "is required")),
        }
    }

    /// A finite `Float` (or `Int`) attribute, or `default` when absent.
    fn float(&self, key: &str, default: f32) -> Result<f32, RuntimeError> {
        let v = match self.layer.attr(key) {
            None => return Ok(default),
            Some(Value::Float(v)) => *v as f32,
            Some(Value::Int(v)) => *v as f32,
            Some(other) => {
                return Err(self.attr_err(key, format!("must be a Float, got {other:?}")))
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.attr_err(key, format!("is {v}, must be finite")))
        }
    }

    /// A Float attribute that may be infinite (clip bounds, pad values).
    fn float_any(&self, key: &str, default: f32) -> Result<f32, RuntimeError> {
        match self.layer.attr(key) {
            None => Ok(default),
            Some(Value::Float(v)) if !v.is_nan() => Ok(*v as f32),
            Some(Value::Int(v)) => Ok(*v as f32),
            Some(other) => {
                Err(self.attr_err(key, format!("must be a Float (not NaN), got {other:?}")))
            }
        }
    }

    /// An IntList attribute (required).
    fn ints(&self, key: &str) -> Result<Vec<i64>, RuntimeError> {
        match self.layer.attr(key) {
            Some(Value::IntList(v)) if v.len() <= MAX_DIMS * 2 || key == "indices" => Ok(v.clone()),
            Some(Value::IntList(v)) => {
                Err(self.attr_err(key, format!("has {} entries, too many", v.len())))
            }
            Some(other) => Err(self.attr_err(key, format!("must be an IntList, got {other:?}"))),
            None => Err(self.attr_err(key, "is required")),
        }
    }

    /// An IntList attribute of values >= 0 (required).
    fn usizes(&self, key: &str) -> Result<Vec<usize>, RuntimeError> {
        self.ints(key)?.iter().map(|&v| self.usize_of(key, v)).collect()
    }

    /// An IntList attribute of values >= 0, or `default` when absent.
    fn usizes_or(&self, key: &str, default: &[usize]) -> Result<Vec<usize>, RuntimeError> {
        match self.layer.attr(key) {
            None => Ok(default.to_vec()),
            Some(_) => self.usizes(key),
        }
    }

    /// The `pads` attribute of 2-D pooling and transposed convolution:
    /// `[top, left, bottom, right]`, zeros when absent.
    fn pads4(&self) -> Result<[usize; 4], RuntimeError> {
        match self.usizes_or("pads", &[0, 0, 0, 0])?.as_slice() {
            &[a, b, c, d] => Ok([a, b, c, d]),
            other => Err(self.attr_err(
                "pads",
                format!("{other:?} must have 4 entries [top, left, bottom, right]"),
            )),
        }
    }

    /// Axes: an IntList of distinct values below `rank`, sorted.
    fn axes(&self, key: &str, rank: usize) -> Result<Vec<usize>, RuntimeError> {
        let mut axes = self.usizes(key)?;
        axes.sort_unstable();
        if axes.windows(2).any(|w| w[0] == w[1]) || axes.last().is_some_and(|&a| a >= rank) {
            return Err(
                self.attr_err(key, format!("{axes:?} must be distinct axes below rank {rank}"))
            );
        }
        Ok(axes)
    }

    /// A String attribute, or `default` when absent.
    fn string(&self, key: &str, default: &str) -> Result<String, RuntimeError> {
        match self.layer.attr(key) {
            None => Ok(default.to_string()),
            Some(Value::String(v)) => Ok(v.clone()),
            Some(other) => Err(self.attr_err(key, format!("must be a String, got {other:?}"))),
        }
    }

    /// The weight names, `min..=max` of them (`what` names them for the
    /// message, e.g. "[w] or [w, b]").
    fn weights(&self, min: usize, max: usize, what: &str) -> Result<&[String], RuntimeError> {
        let n = self.layer.weights.len();
        if n < min || n > max {
            return Err(self.weight_err("", format!("takes weights {what}, the graph gives {n}")));
        }
        Ok(&self.layer.weights)
    }

    /// Weight `name` of rank `rank` (`layout` names its dims).
    fn weight<'f>(
        &self,
        file: &'f LsqFile<'_>,
        name: &str,
        rank: usize,
        layout: &str,
    ) -> Result<Weight<'f>, RuntimeError> {
        let view =
            file.tensor(name).map_err(|e| self.weight_err(name, format!("unreadable: {e}")))?;
        let shape = view.info().shape_usize();
        if shape.len() != rank {
            return Err(self
                .weight_err(name, format!("has shape {shape:?}, expected rank {rank} {layout}")));
        }
        let weight =
            crate::weights::weight_of(&view).map_err(|e| self.weight_err(name, e.to_string()))?;
        // Decoding a row once here also selects lsqr-pack's CPU path (lazy,
        // and it reads the environment) before any run.
        let mut row = vec![0.0f32; weight.cols()];
        if weight.rows() > 0 {
            weight.decode_row(0, &mut row).map_err(|e| self.weight_err(name, e.to_string()))?;
        }
        Ok(weight)
    }

    /// A vector weight (bias, norm parameters) of `len` values, as f32.
    fn vector(&self, file: &LsqFile<'_>, name: &str, len: usize) -> Result<Vec<f32>, RuntimeError> {
        let view =
            file.tensor(name).map_err(|e| self.weight_err(name, format!("unreadable: {e}")))?;
        let shape = view.info().shape_usize();
        if shape != [len] {
            return Err(self.weight_err(name, format!("has shape {shape:?}, expected [{len}]")));
        }
        view.to_f32_vec().map_err(|e| self.weight_err(name, e.to_string()))
    }
}

type Planned<'f> = (Op<'f>, Vec<usize>, usize);

/// Checks one layer and returns its op, output shape and scratch need.
fn plan_layer<'f>(
    cx: &Cx<'_>,
    file: &'f LsqFile<'_>,
    op_name: &'static str,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    let unary = |u: UnaryOp| -> Result<Planned<'f>, RuntimeError> {
        cx.inputs(ins, 1)?;
        cx.weights(0, 0, "[]")?;
        Ok((Op::Unary(u), ins[0].to_vec(), 0))
    };
    let simple_unary = match op_name {
        "relu" => Some(UnaryOp::Relu),
        "relu6" => Some(UnaryOp::Relu6),
        "sigmoid" => Some(UnaryOp::Sigmoid),
        "tanh" => Some(UnaryOp::Tanh),
        "gelu" => Some(UnaryOp::Gelu),
        "gelu_tanh" => Some(UnaryOp::GeluTanh),
        "silu" => Some(UnaryOp::Silu),
        "hardswish" => Some(UnaryOp::HardSwish),
        "neg" => Some(UnaryOp::Neg),
        "abs" => Some(UnaryOp::Abs),
        "sqrt" => Some(UnaryOp::Sqrt),
        "reciprocal" => Some(UnaryOp::Reciprocal),
        "exp" => Some(UnaryOp::Exp),
        "log" => Some(UnaryOp::Log),
        "erf" => Some(UnaryOp::Erf),
        "floor" => Some(UnaryOp::Floor),
        "ceil" => Some(UnaryOp::Ceil),
        "round" => Some(UnaryOp::Round),
        "sign" => Some(UnaryOp::Sign),
        "softplus" => Some(UnaryOp::Softplus),
        "sin" => Some(UnaryOp::Sin),
        "cos" => Some(UnaryOp::Cos),
        "not" => Some(UnaryOp::Not),
        "trunc" => Some(UnaryOp::Trunc),
        _ => None,
    };
    if let Some(u) = simple_unary {
        cx.allow_attrs(&[])?;
        return unary(u);
    }
    let binary = match op_name {
        "add" => Some(BinaryOp::Add),
        "sub" => Some(BinaryOp::Sub),
        "mul" => Some(BinaryOp::Mul),
        "div" => Some(BinaryOp::Div),
        "pow" => Some(BinaryOp::Pow),
        "max" => Some(BinaryOp::Max),
        "min" => Some(BinaryOp::Min),
        "mod" => Some(BinaryOp::Mod),
        "fmod" => Some(BinaryOp::FMod),
        "equal" => Some(BinaryOp::Equal),
        "less" => Some(BinaryOp::Less),
        "greater" => Some(BinaryOp::Greater),
        "less_or_equal" => Some(BinaryOp::LessOrEqual),
        "greater_or_equal" => Some(BinaryOp::GreaterOrEqual),
        _ => None,
    };
    if let Some(b) = binary {
        cx.allow_attrs(&[])?;
        cx.inputs(ins, 2)?;
        cx.weights(0, 0, "[]")?;
        let out = broadcast_shape(ins[0], ins[1]).map_err(|_| {
            cx.shape(format!("inputs of shapes {:?} and {:?} do not broadcast", ins[0], ins[1]))
        })?;
        if out.len() > MAX_RANK {
            return Err(cx.shape(format!("output rank {} exceeds {MAX_RANK}", out.len())));
        }
        return Ok((Op::Binary(b), out, 0));
    }
    match op_name {
        "leaky_relu" | "elu" => {
            cx.allow_attrs(&["alpha"])?;
            if op_name == "elu" {
                unary(UnaryOp::Elu { alpha: cx.float("alpha", 1.0)? })
            } else {
                unary(UnaryOp::LeakyRelu { alpha: cx.float("alpha", 0.01)? })
            }
        }
        "hardsigmoid" => {
            cx.allow_attrs(&["alpha", "beta"])?;
            if cx.layer.attrs.is_empty() {
                cx.inputs(ins, 1)?;
                cx.weights(0, 0, "[]")?;
                return Ok((Op::HardSigmoidTorch, ins[0].to_vec(), 0));
            }
            // ONNX's max(0, min(1, alpha x + beta)), ONNX's defaults.
            let alpha = cx.float("alpha", 0.2)?;
            let beta = cx.float("beta", 0.5)?;
            unary(UnaryOp::HardSigmoid { alpha, beta })
        }
        "clip" => {
            cx.allow_attrs(&["min", "max"])?;
            let min = cx.float_any("min", f32::NEG_INFINITY)?;
            let max = cx.float_any("max", f32::INFINITY)?;
            if min.is_nan() || max.is_nan() {
                return Err(cx.attr_err("min", "and max must not be NaN"));
            }
            unary(UnaryOp::Clip { min, max })
        }
        "where" => {
            cx.allow_attrs(&[])?;
            cx.inputs(ins, 3)?;
            cx.weights(0, 0, "[]")?;
            let out = broadcast_shape(ins[0], ins[1])
                .and_then(|s| broadcast_shape(&s, ins[2]))
                .map_err(|_| {
                    cx.shape(format!(
                        "inputs of shapes {:?}, {:?} and {:?} do not broadcast",
                        ins[0], ins[1], ins[2]
                    ))
                })?;
            if out.len() > MAX_RANK {
                return Err(cx.shape(format!("output rank {} exceeds {MAX_RANK}", out.len())));
            }
            Ok((Op::Where, out, 0))
        }
        "linear" => plan_linear(cx, file, ins),
        "conv2d" => plan_conv2d(cx, file, ins),
        "conv1d" => plan_conv1d(cx, file, ins),
        "conv_transpose2d" => plan_conv_transpose2d(cx, file, ins),
        "softmax" | "log_softmax" => {
            cx.allow_attrs(&["axis"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let rank = ins[0].len();
            if rank == 0 || rank > MAX_RANK {
                return Err(cx.shape(format!("input has rank {rank}, expected 1..={MAX_RANK}")));
            }
            let axis = cx.int("axis", Some(rank - 1))?;
            if axis >= rank {
                return Err(cx.attr_err("axis", format!("is {axis}, the input has rank {rank}")));
            }
            Ok((Op::Softmax { axis, log: op_name == "log_softmax" }, ins[0].to_vec(), 0))
        }
        "layer_norm" => {
            cx.allow_attrs(&["eps"])?;
            cx.inputs(ins, 1)?;
            let names = cx.weights(2, 2, "[gamma, beta]")?;
            let axis = last_dim(cx, ins[0])?;
            let eps = cx.float("eps", 1e-5)?;
            if eps < 0.0 {
                return Err(cx.attr_err("eps", format!("is {eps}, must be >= 0")));
            }
            let gamma = cx.vector(file, &names[0], axis)?;
            let beta = cx.vector(file, &names[1], axis)?;
            Ok((Op::LayerNorm { gamma, beta, eps, axis }, ins[0].to_vec(), 0))
        }
        "batch_norm" => {
            cx.allow_attrs(&["eps"])?;
            cx.inputs(ins, 1)?;
            let names = cx.weights(4, 4, "[gamma, beta, running_mean, running_var]")?;
            let shape = ins[0];
            if shape.len() < 2 {
                return Err(cx.shape(format!("input has shape {shape:?}, expected [n, c, ...]")));
            }
            let c = shape[1];
            let eps = cx.float("eps", 1e-5)?;
            if eps < 0.0 {
                return Err(cx.attr_err("eps", format!("is {eps}, must be >= 0")));
            }
            let gamma = cx.vector(file, &names[0], c)?;
            let beta = cx.vector(file, &names[1], c)?;
            let mean = cx.vector(file, &names[2], c)?;
            let var = cx.vector(file, &names[3], c)?;
            // The same fold as lsqr_kernels::batch_norm.
            let scale: Vec<f32> =
                gamma.iter().zip(&var).map(|(&g, &v)| g / (v + eps).sqrt()).collect();
            let shift =
                beta.iter().zip(&mean).zip(&scale).map(|((&b, &m), &s)| b - m * s).collect();
            let plane = element_count(&shape[2..])?;
            Ok((Op::BatchNorm { scale, shift, plane }, shape.to_vec(), 0))
        }
        "max_pool2d" | "avg_pool2d" => plan_pool(cx, op_name, ins),
        "global_avg_pool2d" => {
            cx.allow_attrs(&[])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let input = cx.rank::<4>(ins[0])?;
            if input[2] == 0 || input[3] == 0 {
                return Err(cx.shape(format!("input has shape {input:?}: empty spatial plane")));
            }
            Ok((Op::GlobalPool { max: false, input }, vec![input[0], input[1], 1, 1], 0))
        }
        "global_avg_pool" | "global_max_pool" => {
            cx.allow_attrs(&[])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let s = ins[0];
            if s.len() < 3 {
                return Err(cx.shape(format!("input has shape {s:?}, expected [n, c, ...]")));
            }
            let plane = element_count(&s[2..])?;
            if plane == 0 {
                return Err(cx.shape(format!("input has shape {s:?}: empty spatial extent")));
            }
            let mut out = s.to_vec();
            out[2..].iter_mut().for_each(|d| *d = 1);
            let input = [s[0], s[1], 1, plane];
            Ok((Op::GlobalPool { max: op_name == "global_max_pool", input }, out, 0))
        }
        "reduce_sum" | "reduce_mean" | "reduce_max" | "reduce_min" | "reduce_prod"
        | "reduce_l1" | "reduce_l2" | "reduce_sum_square" | "reduce_log_sum_exp" => {
            cx.allow_attrs(&["axes", "keepdims"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let s = ins[0];
            let axes = cx.axes("axes", s.len())?;
            let keep = cx.int("keepdims", Some(1))? != 0;
            let out: Vec<usize> = if keep {
                (0..s.len()).map(|k| if axes.contains(&k) { 1 } else { s[k] }).collect()
            } else {
                (0..s.len()).filter(|k| !axes.contains(k)).map(|k| s[k]).collect()
            };
            let op = match op_name {
                "reduce_sum" => ReduceOp::Sum,
                "reduce_mean" => ReduceOp::Mean,
                "reduce_max" => ReduceOp::Max,
                "reduce_min" => ReduceOp::Min,
                "reduce_prod" => ReduceOp::Prod,
                "reduce_l1" => ReduceOp::L1,
                "reduce_l2" => ReduceOp::L2,
                "reduce_sum_square" => ReduceOp::SumSquare,
                _ => ReduceOp::LogSumExp,
            };
            Ok((Op::Reduce { op, axes }, out, 0))
        }
        "arg_max" | "arg_min" => {
            cx.allow_attrs(&["axis", "keepdims", "select_last_index"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let s = ins[0];
            let rank = s.len();
            if rank == 0 || rank > MAX_RANK {
                return Err(cx.shape(format!("input has rank {rank}, expected 1..={MAX_RANK}")));
            }
            let axis = cx.int("axis", Some(0))?;
            if axis >= rank {
                return Err(cx.attr_err("axis", format!("is {axis}, the input has rank {rank}")));
            }
            if s[axis] == 0 {
                return Err(cx.shape(format!("input {s:?} is empty on axis {axis}")));
            }
            let keep = cx.int("keepdims", Some(1))? != 0;
            let last_index = cx.int("select_last_index", Some(0))? != 0;
            let out: Vec<usize> = if keep {
                (0..s.len()).map(|k| if k == axis { 1 } else { s[k] }).collect()
            } else {
                (0..s.len()).filter(|&k| k != axis).map(|k| s[k]).collect()
            };
            Ok((Op::ArgExtreme { max: op_name == "arg_max", axis, last_index }, out, 0))
        }
        "matmul" => {
            cx.allow_attrs(&[])?;
            cx.inputs(ins, 2)?;
            cx.weights(0, 0, "[]")?;
            let out = lsqr_kernels::batched_matmul_shape(ins[0], ins[1]).map_err(|e| {
                cx.shape(format!("inputs of shapes {:?} and {:?}: {e}", ins[0], ins[1]))
            })?;
            Ok((Op::MatMul, out, 0))
        }
        "transpose" => {
            cx.allow_attrs(&["perm"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let s = ins[0];
            let perm = cx.usizes("perm")?;
            let mut seen = vec![false; s.len()];
            if perm.len() != s.len()
                || perm.iter().any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(
                    cx.attr_err("perm", format!("{perm:?} is not a permutation of 0..{}", s.len()))
                );
            }
            let out = perm.iter().map(|&p| s[p]).collect();
            Ok((Op::Transpose { perm }, out, 0))
        }
        "concat" => {
            cx.allow_attrs(&["axis"])?;
            cx.weights(0, 0, "[]")?;
            let first = ins.first().ok_or_else(|| cx.shape("takes at least one input".into()))?;
            let axis = cx.int("axis", None)?;
            if axis >= first.len() {
                return Err(
                    cx.attr_err("axis", format!("is {axis}, the inputs have rank {}", first.len()))
                );
            }
            let mut out = first.to_vec();
            out[axis] = 0;
            for s in ins {
                if s.len() != first.len() || (0..s.len()).any(|k| k != axis && s[k] != first[k]) {
                    return Err(cx.shape(format!("cannot concatenate {first:?} with {s:?}")));
                }
                out[axis] = out[axis]
                    .checked_add(s[axis])
                    .ok_or(RuntimeError::TooLarge { what: "a concatenation" })?;
            }
            Ok((Op::Concat { axis }, out, 0))
        }
        "slice" => {
            cx.allow_attrs(&["starts", "steps", "shape"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let s = ins[0];
            let starts = cx.usizes("starts")?;
            let steps = cx.ints("steps")?;
            let out = cx.usizes("shape")?;
            if starts.len() != s.len() || steps.len() != s.len() || out.len() != s.len() {
                return Err(
                    cx.shape(format!("starts, steps and shape must each have {} entries", s.len()))
                );
            }
            // Every index the slice reads must lie inside its dim.
            for d in 0..s.len() {
                let step = steps[d];
                let last = (starts[d] as i128) + (out[d] as i128 - 1) * step as i128;
                let ok = step != 0
                    && (out[d] == 0 || (starts[d] < s[d] && (0..s[d] as i128).contains(&last)));
                if !ok {
                    return Err(cx.attr_err("starts", format!("with steps {steps:?} and shape {out:?} reads outside the input {s:?} on axis {d}")));
                }
            }
            let steps = steps.iter().map(|&v| v as isize).collect();
            Ok((Op::Slice { starts, steps }, out, 0))
        }
        "gather" if !cx.layer.weights.is_empty() => plan_gather_rows(cx, file, ins),
        "gather" => {
            // Indices as an attribute, or (with a second input) computed.
            cx.weights(0, 0, "[]")?;
            let computed = ins.len() == 2;
            if computed {
                cx.allow_attrs(&["axis"])?;
            } else {
                cx.allow_attrs(&["axis", "indices"])?;
                cx.inputs(ins, 1)?;
            }
            let s = ins[0];
            let axis = cx.int("axis", Some(0))?;
            if axis >= s.len() {
                return Err(
                    cx.attr_err("axis", format!("is {axis}, the input has rank {}", s.len()))
                );
            }
            if computed {
                if s[axis] == 0 {
                    return Err(cx.shape(format!("input {s:?} is empty on axis {axis}")));
                }
                let mut out = s.to_vec();
                out[axis] = ins[1].iter().product();
                return Ok((Op::GatherComputed { axis }, out, 0));
            }
            let indices = cx.usizes("indices")?;
            if let Some(&i) = indices.iter().find(|&&i| i >= s[axis]) {
                return Err(cx.attr_err("indices", format!("holds {i}, past dim {}", s[axis])));
            }
            let mut out = s.to_vec();
            out[axis] = indices.len();
            Ok((Op::Gather { axis, indices }, out, 0))
        }
        "expand" => {
            cx.allow_attrs(&["shape"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let target = cx.usizes("shape")?;
            let out = broadcast_shape(ins[0], &target).ok().filter(|o| *o == target).ok_or_else(
                || cx.shape(format!("input {:?} does not broadcast to {target:?}", ins[0])),
            )?;
            Ok((Op::Expand, out, 0))
        }
        "pad" => {
            cx.allow_attrs(&["pads", "mode", "value"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let s = ins[0];
            let pads = cx.usizes("pads")?;
            if pads.len() != 2 * s.len() {
                return Err(cx.attr_err(
                    "pads",
                    format!("has {} entries, expected {}", pads.len(), 2 * s.len()),
                ));
            }
            let (begin, end) = pads.split_at(s.len());
            let mode = match cx.string("mode", "constant")?.as_str() {
                "constant" => PadMode::Constant(cx.float_any("value", 0.0)?),
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                other => {
                    return Err(
                        cx.attr_err("mode", format!("is `{other}` (constant, reflect, edge)"))
                    )
                }
            };
            let mut out = Vec::with_capacity(s.len());
            for d in 0..s.len() {
                let grow = |v: usize| v.checked_add(begin[d])?.checked_add(end[d]);
                out.push(grow(s[d]).ok_or(RuntimeError::TooLarge { what: "a padded dim" })?);
                let reflect_bad = matches!(mode, PadMode::Reflect)
                    && (begin[d] >= s[d] || end[d] >= s[d])
                    && begin[d] + end[d] > 0;
                let edge_bad = matches!(mode, PadMode::Edge) && s[d] == 0 && begin[d] + end[d] > 0;
                if reflect_bad || edge_bad {
                    return Err(cx.attr_err(
                        "pads",
                        format!("{pads:?} cannot {:?}-pad axis {d} of size {}", mode, s[d]),
                    ));
                }
            }
            Ok((Op::Pad { begin: begin.to_vec(), end: end.to_vec(), mode }, out, 0))
        }
        "resize" => plan_resize(cx, ins),
        "flatten" => {
            cx.allow_attrs(&["start_dim"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let shape = ins[0];
            let start = cx.int("start_dim", Some(1))?;
            if start >= shape.len().max(1) {
                return Err(cx.attr_err(
                    "start_dim",
                    format!("is {start}, the input has rank {}", shape.len()),
                ));
            }
            let mut out = shape[..start].to_vec();
            out.push(element_count(&shape[start..])?);
            Ok((Op::Copy, out, 0))
        }
        "reshape" => {
            cx.allow_attrs(&["shape"])?;
            cx.inputs(ins, 1)?;
            cx.weights(0, 0, "[]")?;
            let out = reshape(cx, ins[0])?;
            Ok((Op::Copy, out, 0))
        }
        _ => Err(RuntimeError::UnsupportedOp { layer: cx.index, op: op_name.into() }),
    }
}

fn plan_pool<'f>(
    cx: &Cx<'_>,
    op_name: &str,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&[
        "kernel",
        "stride",
        "padding",
        "pads",
        "dilation",
        "ceil_mode",
        "count_include_pad",
    ])?;
    cx.inputs(ins, 1)?;
    cx.weights(0, 0, "[]")?;
    let input = cx.rank::<4>(ins[0])?;
    let kernel = cx.pair("kernel", None)?;
    let max = op_name == "max_pool2d";
    let onnx_form = ["pads", "dilation", "ceil_mode", "count_include_pad"]
        .iter()
        .any(|k| cx.layer.attr(k).is_some());
    if !onnx_form {
        // The 1.0 form: symmetric padding, floor mode, averages exclude padding.
        let pool = Pool2d {
            kernel,
            stride: cx.pair("stride", Some(kernel))?,
            padding: cx.pair("padding", Some([0, 0]))?,
        };
        let out = pool.output_shape(input).map_err(|e| cx.shape(e.to_string()))?;
        let op = if max { Op::MaxPool { pool, input } } else { Op::AvgPool { pool, input } };
        return Ok((op, out.to_vec(), 0));
    }
    if cx.layer.attr("padding").is_some() {
        return Err(cx.attr_err("padding", "cannot be combined with pads (give pads only)"));
    }
    let pads = cx.pads4()?;
    let params = Pool2dParams {
        kernel,
        stride: cx.pair("stride", Some(kernel))?,
        pads,
        dilation: cx.pair("dilation", Some([1, 1]))?,
        ceil_mode: cx.int("ceil_mode", Some(0))? != 0,
        count_include_pad: cx.int("count_include_pad", Some(0))? != 0,
    };
    let out = params.output_shape(input).map_err(|e| cx.shape(e.to_string()))?;
    Ok((Op::Pool { max, params, input }, out.to_vec(), 0))
}

fn plan_resize<'f>(cx: &Cx<'_>, ins: &[&[usize]]) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&[
        "shape",
        "mode",
        "coordinate_transformation_mode",
        "nearest_mode",
        "scales",
        "cubic_coeff_a",
        "exclude_outside",
    ])?;
    cx.inputs(ins, 1)?;
    cx.weights(0, 0, "[]")?;
    let s = ins[0];
    let out = cx.usizes("shape")?;
    if out.len() != s.len() || s.len() < 2 || (0..s.len() - 2).any(|k| out[k] != s[k]) {
        return Err(
            cx.attr_err("shape", format!("{out:?}: only the last two axes of {s:?} may change"))
        );
    }
    let mode = match cx.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" => ResizeMode::Linear,
        "cubic" => ResizeMode::Cubic,
        other => return Err(cx.attr_err("mode", format!("is `{other}` (nearest, linear, cubic)"))),
    };
    let coordinate_transform = match cx
        .string("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => CoordinateTransform::HalfPixel,
        "pytorch_half_pixel" => CoordinateTransform::PytorchHalfPixel,
        "align_corners" => CoordinateTransform::AlignCorners,
        "asymmetric" => CoordinateTransform::Asymmetric,
        "tf_half_pixel_for_nearest" => CoordinateTransform::TfHalfPixelForNearest,
        other => {
            return Err(cx
                .attr_err("coordinate_transformation_mode", format!("`{other}` is not supported")))
        }
    };
    let nearest_mode = match cx.string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(cx.attr_err("nearest_mode", format!("`{other}` is not supported"))),
    };
    let r = s.len();
    let default_scales =
        [out[r - 2] as f32 / s[r - 2].max(1) as f32, out[r - 1] as f32 / s[r - 1].max(1) as f32];
    let scales = match cx.layer.attr("scales") {
        None => default_scales,
        Some(Value::FloatList(v))
            if v.len() == 2 && v.iter().all(|x| x.is_finite() && *x > 0.0) =>
        {
            [v[0] as f32, v[1] as f32]
        }
        Some(other) => {
            return Err(cx.attr_err(
                "scales",
                format!("must be a FloatList of 2 positive values, got {other:?}"),
            ))
        }
    };
    let params = ResizeParams {
        mode,
        coordinate_transform,
        nearest_mode,
        scales,
        cubic_coeff_a: cx.float("cubic_coeff_a", -0.75)?,
        exclude_outside: cx.int("exclude_outside", Some(0))? != 0,
    };
    Ok((Op::Resize(params), out, 0))
}

fn plan_conv_transpose2d<'f>(
    cx: &Cx<'_>,
    file: &'f LsqFile<'_>,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&["stride", "pads", "dilation", "output_padding", "groups"])?;
    cx.inputs(ins, 1)?;
    let names = cx.weights(1, 2, "[w] or [w, b]")?;
    let input = cx.rank::<4>(ins[0])?;
    let w = cx.weight(file, &names[0], 4, "[in, out / groups, kh, kw]")?;
    let pads = cx.pads4()?;
    let params = ConvTranspose2dParams {
        stride: cx.pair("stride", Some([1, 1]))?,
        pads,
        dilation: cx.pair("dilation", Some([1, 1]))?,
        output_padding: cx.pair("output_padding", Some([0, 0]))?,
        groups: cx.int("groups", Some(1))?,
    };
    let out = conv_transpose2d_output_shape(input, w.shape(), &params).map_err(|e| {
        cx.shape(format!("input {input:?} with weight `{}` {:?}: {e}", names[0], w.shape()))
    })?;
    let bias = names.get(1).map(|b| cx.vector(file, b, out[1])).transpose()?;
    let scratch =
        conv_transpose2d_scratch_len(&w, input, &params).map_err(|e| cx.shape(e.to_string()))?;
    Ok((Op::ConvTranspose2d { w, bias, params, input }, out.to_vec(), scratch))
}

fn last_dim(cx: &Cx<'_>, shape: &[usize]) -> Result<usize, RuntimeError> {
    shape
        .last()
        .copied()
        .ok_or_else(|| cx.shape("input is a scalar; the op works on its last axis".into()))
}

/// `reshape`'s `shape` attribute: an IntList where one dim may be -1
/// (inferred from the element count).
fn reshape(cx: &Cx<'_>, input: &[usize]) -> Result<Vec<usize>, RuntimeError> {
    let Some(Value::IntList(dims)) = cx.layer.attr("shape") else {
        return Err(cx.attr_err("shape", "is required, an IntList"));
    };
    let count = element_count(input)?;
    let mut known = 1usize;
    let mut infer = None;
    for (i, &d) in dims.iter().enumerate() {
        if d == -1 && infer.is_none() {
            infer = Some(i);
        } else {
            known = known
                .checked_mul(cx.usize_of("shape", d)?)
                .ok_or(RuntimeError::TooLarge { what: "a reshape" })?;
        }
    }
    let mut out: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    match infer {
        Some(i) if known != 0 && count % known == 0 => out[i] = count / known,
        None if known == count => {}
        _ => {
            return Err(cx.attr_err(
                "shape",
                format!("{dims:?} does not hold the {count} values of input shape {input:?}"),
            ))
        }
    }
    Ok(out)
}

fn plan_linear<'f>(
    cx: &Cx<'_>,
    file: &'f LsqFile<'_>,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&[])?;
    cx.inputs(ins, 1)?;
    let names = cx.weights(1, 2, "[w] or [w, b]")?;
    let w = cx.weight(file, &names[0], 2, "[out, in]")?;
    let [out_f, in_f] = [w.shape()[0], w.shape()[1]];
    let shape = ins[0];
    if shape.last() != Some(&in_f) {
        return Err(cx.shape(format!(
            "input `{}` has shape {shape:?}, but weight `{}` is {:?}: the last dim must be {in_f}",
            cx.layer.inputs[0],
            names[0],
            w.shape()
        )));
    }
    let bias = names.get(1).map(|b| cx.vector(file, b, out_f)).transpose()?;
    let batch = element_count(&shape[..shape.len() - 1])?;
    let mut out = shape.to_vec();
    *out.last_mut().expect("rank >= 1") = out_f;
    let scratch = linear_scratch_len(&w, batch);
    Ok((Op::Linear { w, bias, batch }, out, scratch))
}

/// `gather` of a (possibly quantized) table's rows by computed indices:
/// only the rows looked up are decoded.
fn plan_gather_rows<'f>(
    cx: &Cx<'_>,
    file: &'f LsqFile<'_>,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&["axis"])?;
    cx.inputs(ins, 1)?;
    let names = cx.weights(1, 1, "[table]")?;
    if cx.int("axis", Some(0))? != 0 {
        return Err(cx.attr_err("axis", "must be 0 with a table weight"));
    }
    let w = cx.weight(file, &names[0], 2, "[rows, cols]")?;
    if w.rows() == 0 {
        return Err(cx.weight_err(&names[0], "has no rows"));
    }
    let out = vec![element_count(ins[0])?, w.cols()];
    Ok((Op::GatherRows { w }, out, 0))
}

fn plan_conv2d<'f>(
    cx: &Cx<'_>,
    file: &'f LsqFile<'_>,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&["stride", "padding", "dilation", "groups"])?;
    cx.inputs(ins, 1)?;
    let names = cx.weights(1, 2, "[w] or [w, b]")?;
    let input = cx.rank::<4>(ins[0])?;
    let w = cx.weight(file, &names[0], 4, "[out, in / groups, kh, kw]")?;
    let params = Conv2dParams {
        stride: cx.pair("stride", Some([1, 1]))?,
        padding: cx.pair("padding", Some([0, 0]))?,
        dilation: cx.pair("dilation", Some([1, 1]))?,
        groups: cx.int("groups", Some(1))?,
    };
    let ws: [usize; 4] = w.shape().try_into().expect("rank checked");
    let out = conv_output_shape(input, ws, &params)
        .map_err(|p| cx.shape(format!("input {input:?} with weight `{}` {ws:?}: {p}", names[0])))?;
    let bias = names.get(1).map(|b| cx.vector(file, b, ws[0])).transpose()?;
    let scratch = conv2d_scratch_len(&w, input, &params).map_err(|e| cx.shape(e.to_string()))?;
    Ok((Op::Conv2d { w, bias, params, input }, out.to_vec(), scratch))
}

fn plan_conv1d<'f>(
    cx: &Cx<'_>,
    file: &'f LsqFile<'_>,
    ins: &[&[usize]],
) -> Result<Planned<'f>, RuntimeError> {
    cx.allow_attrs(&["stride", "padding", "dilation", "groups"])?;
    cx.inputs(ins, 1)?;
    let names = cx.weights(1, 2, "[w] or [w, b]")?;
    let input = cx.rank::<3>(ins[0])?;
    let w = cx.weight(file, &names[0], 3, "[out, in / groups, k]")?;
    let params = Conv1dParams {
        stride: cx.int("stride", Some(1))?,
        padding: cx.int("padding", Some(0))?,
        dilation: cx.int("dilation", Some(1))?,
        groups: cx.int("groups", Some(1))?,
    };
    let ws = w.shape();
    let p2 = conv1d_as_2d(&params);
    let [n, c, _, l] =
        conv_output_shape([input[0], input[1], 1, input[2]], [ws[0], ws[1], 1, ws[2]], &p2)
            .map_err(|p| {
                cx.shape(format!("input {input:?} with weight `{}` {ws:?}: {p}", names[0]))
            })?;
    let bias = names.get(1).map(|b| cx.vector(file, b, ws[0])).transpose()?;
    let scratch = conv1d_scratch_len(&w, input, &params).map_err(|e| cx.shape(e.to_string()))?;
    Ok((Op::Conv1d { w, bias, params, input }, vec![n, c, l], scratch))
}

/// A conv1d on `[n, c, l]` is a conv2d on `[n, c, 1, l]`.
pub(crate) fn conv1d_as_2d(p: &Conv1dParams) -> Conv2dParams {
    Conv2dParams {
        stride: [1, p.stride],
        padding: [0, p.padding],
        dilation: [1, p.dilation],
        groups: p.groups,
    }
}

/// The NCHW output shape of a convolution, with PyTorch's rules, checked
/// (the same checks as lsqr-kernels' conv, which f32 weights bypass).
pub(crate) fn conv_output_shape(
    input: [usize; 4],
    weight: [usize; 4],
    p: &Conv2dParams,
) -> Result<[usize; 4], &'static str> {
    let [n, cin, h, w] = input;
    let [cout, cin_g, kh, kw] = weight;
    if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
        return Err("groups, stride and dilation must be at least 1");
    }
    if kh == 0 || kw == 0 {
        return Err("the kernel must be at least 1x1");
    }
    if cin % p.groups != 0 || cout % p.groups != 0 || cin / p.groups != cin_g {
        return Err("channels do not match: the weight must be [out, in / groups, kh, kw] with \
                    in and out multiples of groups");
    }
    let out_len = |len: usize, pad: usize, dil: usize, k: usize, stride: usize| {
        let padded = len.checked_add(pad.checked_mul(2)?)?;
        let span = dil.checked_mul(k - 1)?.checked_add(1)?;
        padded.checked_sub(span).map(|d| d / stride + 1)
    };
    let oh = out_len(h, p.padding[0], p.dilation[0], kh, p.stride[0]);
    let ow = out_len(w, p.padding[1], p.dilation[1], kw, p.stride[1]);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok([n, cout, oh, ow]),
        _ => Err("the dilated kernel is larger than the padded input"),
    }
}
