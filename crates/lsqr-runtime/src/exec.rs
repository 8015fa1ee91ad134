//! Running a bound plan: every buffer is a slice of the caller's arena, so
//! nothing here allocates (tests/runtime_no_alloc.rs counts).

use std::ops::Range;

use lsqr_kernels::conv::{conv1d_into, conv2d_into};
use lsqr_kernels::conv_transpose::conv_transpose2d_into;
use lsqr_kernels::elementwise::{binary_into, expand_into, unary_inplace, where_into};
use lsqr_kernels::layout::{concat_into, gather_into, pad_into, slice_into, transpose_into};
use lsqr_kernels::packed::{linear_into, one_hot_linear_into};
use lsqr_kernels::pool::{avg_pool2d_ext_into, global_max_pool2d_into, max_pool2d_ext_into};
use lsqr_kernels::reduce::{log_softmax_axis_inplace, reduce_into, softmax_axis_inplace};
use lsqr_kernels::resize::resize_into;
use lsqr_kernels::OpError;

use crate::error::RuntimeError;
use crate::plan::{Loc, Op, Plan, Step, ALIGN_BYTES};

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
        match &self.plan.values.get(id).ok_or(RuntimeError::TooLarge { what: "a value index" })?.loc
        {
            Loc::Const(c) => self
                .plan
                .consts
                .get(*c)
                .map(Vec::as_slice)
                .ok_or(RuntimeError::TooLarge { what: "a constant" }),
            Loc::Arena(r) => {
                self.buf.get(r.clone()).ok_or(RuntimeError::TooLarge { what: "an output range" })
            }
        }
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
        let consts = &self.plan.consts;
        let input = |k: usize| -> Result<&[f32], RuntimeError> {
            let id = *step.inputs.get(k).ok_or_else(internal)?;
            let r = match &self.plan.values.get(id).ok_or_else(internal)?.loc {
                Loc::Const(c) => return consts.get(*c).map(Vec::as_slice).ok_or_else(internal),
                Loc::Arena(r) => r.clone(),
            };
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
        let out_shape =
            self.plan.values.get(step.output).map_or(&[][..], |s| s.info.shape.as_slice());
        exec(step, out, out_shape, scratch, input, shape).map_err(kernel)
    }

    /// The arena range of value `id` (constants have none).
    fn range(&self, id: usize) -> Result<Range<usize>, RuntimeError> {
        match self.plan.values.get(id).map(|s| &s.loc) {
            Some(Loc::Arena(r)) => Ok(r.clone()),
            _ => Err(RuntimeError::TooLarge { what: "a value index" }),
        }
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
    out_shape: &[usize],
    scratch: &mut [f32],
    input: impl Fn(usize) -> Result<&'x [f32], RuntimeError>,
    shape: impl Fn(usize) -> &'x [usize],
) -> Result<(), OpError> {
    let op = step.op_name;
    let missing = || OpError::BadParameter { op, reason: "missing input" };
    let x = input(0).map_err(|_| missing())?;
    match &step.op {
        Op::Linear { w, bias, batch } => linear_into(w, bias.as_deref(), x, *batch, out, scratch),
        Op::OneHotLinear { w, bias, keys } => {
            one_hot_linear_into(w, bias.as_deref(), x, keys, out, scratch)
        }
        Op::Conv2d { w, bias, params, input } => {
            conv2d_into(w, bias.as_deref(), x, *input, params, out, scratch)
        }
        Op::Conv1d { w, bias, params, input } => {
            conv1d_into(w, bias.as_deref(), x, *input, params, out, scratch)
        }
        Op::ConvTranspose2d { w, bias, params, input } => {
            conv_transpose2d_into(w, bias.as_deref(), x, *input, params, out, scratch)
        }
        Op::Unary(u) => {
            copy(op, x, out)?;
            unary_inplace(*u, out);
            Ok(())
        }
        Op::HardSigmoidTorch => {
            copy(op, x, out)?;
            lsqr_kernels::hardsigmoid(out);
            Ok(())
        }
        Op::Binary(b) => {
            let y = input(1).map_err(|_| missing())?;
            binary_into(*b, x, shape(0), y, shape(1), out)
        }
        Op::Where => {
            let (a, b) = (input(1).map_err(|_| missing())?, input(2).map_err(|_| missing())?);
            where_into(x, shape(0), a, shape(1), b, shape(2), out)
        }
        Op::Softmax { axis, log } => {
            copy(op, x, out)?;
            if *log {
                log_softmax_axis_inplace(out, out_shape, *axis)
            } else {
                softmax_axis_inplace(out, out_shape, *axis)
            }
        }
        Op::LayerNorm { gamma, beta, eps, axis } => {
            copy(op, x, out)?;
            lsqr_kernels::layer_norm(out, *axis, gamma, beta, *eps)
        }
        Op::BatchNorm { scale, shift, plane } => {
            copy(op, x, out)?;
            lsqr_kernels::channel_affine(out, *plane, scale, shift)
        }
        Op::MaxPool { pool, input } => {
            lsqr_kernels::max_pool2d_into(x, *input, pool, out).map(drop)
        }
        Op::AvgPool { pool, input } => {
            lsqr_kernels::avg_pool2d_into(x, *input, pool, out).map(drop)
        }
        Op::Pool { max: true, params, input } => max_pool2d_ext_into(x, *input, params, out),
        Op::Pool { max: false, params, input } => avg_pool2d_ext_into(x, *input, params, out),
        Op::GlobalPool { max: false, input } => {
            lsqr_kernels::global_avg_pool2d_into(x, *input, out).map(drop)
        }
        Op::GlobalPool { max: true, input } => global_max_pool2d_into(x, *input, out),
        Op::Reduce { op: r, axes } => reduce_into(*r, x, shape(0), axes, out),
        Op::ArgExtreme { max, axis, last_index } => {
            lsqr_kernels::reduce::arg_extreme_into(x, shape(0), *axis, *max, *last_index, out)
        }
        Op::MatMul => {
            let y = input(1).map_err(|_| missing())?;
            lsqr_kernels::batched_matmul_into(x, shape(0), y, shape(1), out)
        }
        Op::Transpose { perm } => transpose_into(x, shape(0), perm, out),
        Op::Concat { axis } => {
            let mut offset = 0;
            for k in 0..step.inputs.len() {
                let part = input(k).map_err(|_| missing())?;
                concat_into(part, shape(k), *axis, offset, out, out_shape)?;
                offset += shape(k).get(*axis).copied().unwrap_or(0);
            }
            Ok(())
        }
        Op::Slice { starts, steps } => slice_into(x, shape(0), starts, steps, out_shape, out),
        Op::Gather { axis, indices } => gather_into(x, shape(0), *axis, indices, out),
        Op::GatherRows { w } => lsqr_kernels::packed::gather_rows_into(w, x, out),
        Op::GatherComputed { axis } => {
            let indices = input(1).map_err(|_| missing())?;
            lsqr_kernels::layout::gather_computed_into(x, shape(0), *axis, indices, out)
        }
        Op::Expand => expand_into(x, shape(0), out_shape, out),
        Op::Pad { begin, end, mode } => pad_into(x, shape(0), begin, end, *mode, out),
        Op::Resize(params) => resize_into(x, shape(0), out_shape, params, out),
        Op::Copy => copy(op, x, out),
    }
}
