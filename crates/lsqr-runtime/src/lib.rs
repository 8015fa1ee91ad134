//! A micro runtime: runs the layer graph of a `.lsq` file on the CPU with
//! every buffer planned up front, so that after [`Plan::bind`] nothing is
//! allocated (the contract firmware needs, and the C API wraps).
//!
//! ```no_run
//! use lsqr_format::LsqFile;
//! use lsqr_runtime::Plan;
//!
//! let file = LsqFile::open("mnist-log-c4.lsq")?;
//! let plan = Plan::new(&file)?; // checks, weights, shapes, arena layout
//! let mut arena = vec![0u8; plan.arena_len()]; // or a static buffer
//! let mut runner = plan.bind(&mut arena)?;
//! runner.set_input(0, &[0.0; 784])?;
//! runner.run()?; // no allocation from here on
//! let logits: &[f32] = runner.output(0)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Phases
//!
//! - [`Plan::new`] does everything that may allocate or fail on a bad file:
//!   checks that each op is supported, that its weights exist with the
//!   right rank and shape and its attributes are well-typed; prepares the
//!   weights (packed ones borrowed from the file, raw floats converted to
//!   f32, batch-norm statistics folded); infers every value's shape; and
//!   lays out one arena: a shared scratch region sized to the largest
//!   layer's need, then one 64-byte-aligned buffer per value, where a
//!   value reuses the space of values whose last use is behind it
//!   (liveness, first fit). Graph inputs and outputs are never reused, so a
//!   bound plan can be run again and its outputs read after `run`.
//! - [`Plan::bind`] carves the arena out of caller memory
//!   ([`Plan::arena_len`] bytes, alignment slack included).
//! - [`Runner::set_input`], [`Runner::run`] / [`Runner::run_layer`],
//!   [`Runner::output`] only read the file and write the arena. Their
//!   errors are allocation-free values; messages are built in `Display`.
//!
//! Nothing panics on a bad file: every problem is a [`RuntimeError`] that
//! names the layer index, the op and the tensor, attribute or value.
//!
//! # Graph inputs
//!
//! The shape of graph input `x` is metadata `input_shape.x`, an `IntList`
//! (for example `[1, 784]`). Shapes are fixed: the batch size is part of
//! the shape.
//!
//! # Ops, weights and attributes
//!
//! Every layer has exactly one output. Shapes are row-major; images are
//! NCHW. `Int` attributes must be `>= 0`. A "pair" attribute is an
//! `IntList` of two (`[along h, along w]`) or one `Int` for both axes.
//! Unknown attributes are rejected, so a misspelt one is not silently
//! replaced by its default.
//!
//! [`OPS`] lists the ops; docs/FORMAT.md §6.1 specifies each one's
//! inputs, weights, attributes and output shape. They cover what ONNX
//! exporters emit (opsets 11-17) once `lsqr quantize` has folded the
//! constants: every elementwise op with broadcasting, matmul, the layout
//! ops (transpose, concat, slice, gather, expand, pad, resize), pooling,
//! reductions, softmax on any axis, and (transposed) convolutions. A
//! `constant` layer's value lives in the plan, not the arena.
//!
//! Weights may be quantized (any codec, width and scaling) or raw floats
//! (f32, f16, bf16, f64; converted to f32 once when planning); one code
//! path in lsqr-kernels serves both.
//!
//! # Building models
//!
//! [`ModelBuilder`] writes such files from Rust: graph inputs with shapes,
//! layers with their weights (quantized with a [`lsqr_codec::QuantizeOptions`]
//! or kept f32), and the metadata above.

mod builder;
mod error;
mod exec;
mod plan;
mod weights;

pub use weights::{packed_weight, weight_of, WeightError};

pub use builder::{BuildError, ModelBuilder, WeightFormat};
pub use error::RuntimeError;
pub use exec::Runner;
pub use plan::{Plan, ValueInfo, OPS};
