//! LSQR: a runtime for low-bit neural-network weights.
//!
//! This facade re-exports the layers, each usable alone as a crate:
//! - [`codec`] (`lsqr-codec`): codebooks, encoding, group scales, metrics;
//! - [`pack`] (`lsqr-pack`): arbitrary-width bit packing of the codes;
//! - [`format`](mod@format) (`lsqr-format`): the `.lsq` container;
//! - [`kernels`] (`lsqr-kernels`): the CPU operators;
//! - [`runtime`] (`lsqr-runtime`): a micro runtime that runs a file's layer graph with no
//!   allocation after planning, and a builder for such files.
//!
//! and the high-level API the reference had, in Rust style:
//!
//! ```no_run
//! use lsqr::codec::{CodecSpec, QuantizeOptions};
//! use ndarray::ArrayD;
//!
//! let w = ArrayD::<f32>::zeros(ndarray::IxDyn(&[64, 128]));
//! let b = ArrayD::<f32>::zeros(ndarray::IxDyn(&[64]));
//! let options = QuantizeOptions::new(CodecSpec::Log { mu: None }, 4);
//! lsqr::save_lsq_model([("fc.weight", w.view()), ("fc.bias", b.view())], &options, "model.lsq")?;
//!
//! let model = lsqr::load_lsq_model("model.lsq")?;
//! let weight = model.tensor("fc.weight")?;
//! assert_eq!((weight.bits(), weight.shape()), (Some(4), vec![64, 128]));
//! let values = weight.dequantize()?; // ndarray::ArrayD<f32>
//! # Ok::<(), lsqr::Error>(())
//! ```
#![deny(missing_docs)]

pub use lsqr_codec as codec;
pub use lsqr_format as format;
pub use lsqr_kernels as kernels;
pub use lsqr_pack as pack;
pub use lsqr_runtime as runtime;

mod model;
pub mod synthetic;

pub use model::{
    is_vector, load_lsq_model, load_lsq_model_with, save_lsq_model, Error, LoadOptions, LsqModel,
    LsqModelWriter, LsqTensor, TensorReport,
};
