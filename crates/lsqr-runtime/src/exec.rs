//! Running a bound plan: every buffer is a slice of the caller's arena, so
//! nothing here allocates (tests/runtime_no_alloc.rs counts).

use std::ops::Range;

use lsqr_kernels::conv::{conv1d_into, conv2d_into};
use lsqr_kernels::packed::linear_into;
use lsqr_kernels::OpError;

use crate::error::RuntimeError;
use crate::plan::{Op, Plan, Step, Unary, ALIGN_BYTES};

/// A plan bound to an arena: set the inputs, run, read the outputs.
/// Running allocates nothing and never panics; it may be repeated (inputs
/// keep their values between runs, outputs stay readable after `run`).
#[derive(Debug)]
pub struct Runner<'p, 'f, 'a> {
    plan: &'p Plan<'f>,
    /// The aligned part of the arena: scratch, then the values.
    buf: &'a mut [f32],
}

impl<'p, 'f, 'a> Runner<'p, 'f, 'a> {
    pub(crate) fn new(plan: &'p Plan<'f>, arena: &'a mut [u8]) -> Result<Self, RuntimeError> {
        let too_small = RuntimeError::ArenaTooSmall { len: arena.len(), needed: plan.arena_len() };
        if arena.len() < plan.arena_len() {
            return Err(too_small);
        }
        // SAFETY: `align_to_mut` only returns a middle part whose address is
        // aligned for f32 and whose bytes lie inside `arena`; every bit
        // pattern of four bytes is a valid f32, and `arena` stays mutably
        // borrowed for 'a, so nothing else sees these bytes as u8 meanwhile.
        let (_, floats, _) = unsafe { arena.align_to_mut::<f32>() };
        // `align_offset` counts f32 elements to the next 64-byte boundary:
        // at most 15, which the plan's 63 bytes of slack cover.
        let skip = floats.as_ptr().align_offset(ALIGN_BYTES);
        let buf = skip
            .checked_add(plan.total_len)
            .and_then(|end| floats.get_mut(skip..end))
            .ok_or(too_small)?;
        buf.fill(0.0);
        Ok(Self { plan, buf })
    }

    /// The plan being run.
    pub fn plan(&self) -> &'p Plan<'f> {
        self.plan
    }

    /// Copies `data` into graph input `index` (exactly its element count).
    pub fn set_input(&mut self, index: usize, data: &[f32]) -> Result<(), RuntimeError> {
        let count = self.plan.input_ids.len();
        let id =
            *self.plan.input_ids.get(index).ok_or(RuntimeError::NoSuchInput { index, count })?;
        let dst = self.value_mut(id)?;
        if dst.len() != data.len() {
            return Err(RuntimeError::InputLength {
                index,
                expected: dst.len(),
                actual: data.len(),
            });
        }
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Graph output `index`, as computed by the last run.
    pub fn output(&self, index: usize) -> Result<&[f32], RuntimeError> {
        let count = self.plan.output_ids.len();
        let id =
            *self.plan.output_ids.get(index).ok_or(RuntimeError::NoSuchOutput { index, count })?;
        let r = self.range(id)?;
        self.buf.get(r).ok_or(RuntimeError::TooLarge { what: "an output range" })
    }

    /// Runs every layer in order.
    pub fn run(&mut self) -> Result<(), RuntimeError> {
        for i in 0..self.plan.steps.len() {
            self.run_layer(i)?;
        }
        Ok(())
    }

    /// Runs layer `i` alone (its inputs must have been computed: layers
    /// `0..i` run since the inputs were set). For stepping through a model
    /// or timing one layer.
    pub fn run_layer(&mut self, i: usize) -> Result<(), RuntimeError> {
        let count = self.plan.steps.len();
        let step = self.plan.steps.get(i).ok_or(RuntimeError::NoSuchLayer { index: i, count })?;
        let kernel = |source: OpError| RuntimeError::Kernel { layer: i, op: step.op_name, source };
        let internal = || {
            kernel(OpError::BadParameter { op: step.op_name, reason: "planned buffers overlap" })
        };
        let out_r = self.range(step.output)?;
        let scratch_len = self.plan.scratch_len;
        // Split the arena into scratch | below output | output | above
        // output; the plan placed every input (live at this step) apart
        // from the output, so each lies wholly below or above it.
        let (scratch, values) = self.buf.split_at_mut_checked(scratch_len).ok_or_else(internal)?;
        let (lo, rest) = values
            .split_at_mut_checked(out_r.start.checked_sub(scratch_len).ok_or_else(internal)?)
            .ok_or_else(internal)?;
        let (out, hi) = rest.split_at_mut_checked(out_r.len()).ok_or_else(internal)?;
        let (lo, hi) = (&*lo, &*hi);
        let input = |k: usize| -> Result<&[f32], RuntimeError> {
            let id = *step.inputs.get(k).ok_or_else(internal)?;
            let r = self.plan.values.get(id).ok_or_else(internal)?.range.clone();
            let slice = if r.end <= out_r.start {
                lo.get(r.start - scratch_len..r.end - scratch_len)
            } else if r.start >= out_r.end {
                hi.get(r.start - out_r.end..r.end - out_r.end)
            } else {
                None
            };
            slice.ok_or_else(internal)
        };
        let shape = |k: usize| -> &[usize] {
            step.inputs
                .get(k)
                .and_then(|&id| self.plan.values.get(id))
                .map_or(&[], |s| s.info.shape.as_slice())
        };
        exec(step, out, scratch, input, shape).map_err(kernel)
    }

    fn range(&self, id: usize) -> Result<Range<usize>, RuntimeError> {
        self.plan
            .values
            .get(id)
            .map(|s| s.range.clone())
            .ok_or(RuntimeError::TooLarge { what: "a value index" })
    }

    fn value_mut(&mut self, id: usize) -> Result<&mut [f32], RuntimeError> {
        let r = self.range(id)?;
        self.buf.get_mut(r).ok_or(RuntimeError::TooLarge { what: "a value range" })
    }
}

/// Copies `x` into `out` (same length) for the ops that work in place.
fn copy(op: &'static str, x: &[f32], out: &mut [f32]) -> Result<(), OpError> {
    if x.len() != out.len() {
        return Err(OpError::LengthMismatch {
            op,
            what: "output",
            expected: x.len(),
            actual: out.len(),
        });
    }
    out.copy_from_slice(x);
    Ok(())
}

fn exec<'x>(
    step: &Step<'_>,
    out: &mut [f32],
    scratch: &mut [f32],
    input: impl Fn(usize) -> Result<&'x [f32], RuntimeError>,
    shape: impl Fn(usize) -> &'x [usize],
) -> Result<(), OpError> {
    let op = step.op_name;
    let missing = OpError::BadParameter { op, reason: "missing input" };
    let x = input(0).map_err(|_| missing.clone())?;
    match &step.op {
        Op::Linear { w, bias, batch } => linear_into(w, bias.as_deref(), x, *batch, out, scratch),
        Op::Conv2d { w, bias, params, input } => {
            conv2d_into(w, bias.as_deref(), x, *input, params, out, scratch)
        }
        Op::Conv1d { w, bias, params, input } => {
            conv1d_into(w, bias.as_deref(), x, *input, params, out, scratch)
        }
        Op::Unary(u) => {
            copy(op, x, out)?;
            match *u {
                Unary::Relu => lsqr_kernels::relu(out),
                Unary::Relu6 => lsqr_kernels::relu6(out),
                Unary::LeakyRelu(alpha) => lsqr_kernels::leaky_relu(out, alpha),
                Unary::Sigmoid => lsqr_kernels::sigmoid(out),
                Unary::Tanh => lsqr_kernels::tanh(out),
                Unary::Gelu => lsqr_kernels::gelu(out),
                Unary::GeluTanh => lsqr_kernels::gelu_tanh(out),
                Unary::Silu => lsqr_kernels::silu(out),
                Unary::Hardsigmoid => lsqr_kernels::hardsigmoid(out),
                Unary::Hardswish => lsqr_kernels::hardswish(out),
            }
            Ok(())
        }
        Op::Softmax { axis } => {
            copy(op, x, out)?;
            lsqr_kernels::softmax(out, *axis)
        }
        Op::LayerNorm { gamma, beta, eps, axis } => {
            copy(op, x, out)?;
            lsqr_kernels::layer_norm(out, *axis, gamma, beta, *eps)
        }
        Op::BatchNorm { scale, shift, plane } => {
            copy(op, x, out)?;
            if *plane == 0 || scale.is_empty() {
                return Ok(());
            }
            for (i, p) in out.chunks_exact_mut(*plane).enumerate() {
                let c = i % scale.len();
                let (s, t) = (scale[c], shift[c]);
                p.iter_mut().for_each(|v| *v = *v * s + t);
            }
            Ok(())
        }
        Op::MaxPool { pool, input } => {
            lsqr_kernels::max_pool2d_into(x, *input, pool, out).map(drop)
        }
        Op::AvgPool { pool, input } => {
            lsqr_kernels::avg_pool2d_into(x, *input, pool, out).map(drop)
        }
        Op::GlobalAvgPool { input } => {
            lsqr_kernels::global_avg_pool2d_into(x, *input, out).map(drop)
        }
        Op::Add | Op::Mul => {
            let y = input(1).map_err(|_| missing)?;
            if matches!(step.op, Op::Add) {
                lsqr_kernels::add_into(x, shape(0), y, shape(1), out)
            } else {
                lsqr_kernels::mul_into(x, shape(0), y, shape(1), out)
            }
        }
        Op::Copy => copy(op, x, out),
    }
}
