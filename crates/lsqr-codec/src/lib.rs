//! The math of LSQR: codebooks as decode and threshold tables, encoding,
//! group scales and error metrics.
//!
//! A tensor is quantized in four steps, each a module:
//! 1. [`scale`]: the tensor is cut into groups (per tensor, per row, or G
//!    elements along a row) and each group gets a scale;
//! 2. [`codebook`]: a codebook maps each C-bit code (C in 2..=16) to a
//!    value at unit scale, materialised as a `2^C`-entry decode table;
//! 3. [`quantize`]: every value divided by its scale is encoded as the
//!    nearest level's code (ties go to the level nearer zero);
//! 4. [`metrics`]: the reconstruction is compared with the original.
//!
//! Packing codes into bytes is `lsqr-pack`'s job; this crate produces one
//! `u16` code per element.
//!
//! ```
//! use lsqr_codec::{quantize, CodecSpec, ErrorMetrics, QuantizeOptions};
//! let weights: Vec<f32> = (0..256).map(|i| ((i as f32) * 0.37).sin() * 0.1).collect();
//! let q = quantize(&weights, &[4, 64], &QuantizeOptions::new(CodecSpec::Log { mu: None }, 4))?;
//! let snr = ErrorMetrics::between(&weights, &q.dequantize())?.snr_db();
//! assert!(snr > 15.0);
//! # Ok::<(), lsqr_codec::CodecError>(())
//! ```
//!
//! The crate is `no_std` + `alloc` without its default `std` feature, for
//! firmware. Its dependencies: `half` (f16 scales, rounded exactly as the
//! decoder reads them) and `libm` (every transcendental used to build a
//! codebook, so tables are bit-identical with and without `std`).
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arch;
pub mod codebook;
mod error;
pub mod feedback;
pub mod metrics;
#[doc(hidden)]
pub mod paths;
pub mod quantize;
pub mod scale;
mod scale_fit;
mod search;

pub use codebook::{
    seed_reference_encode, CodeWidth, Codebook, CodebookParams, CodecKind, FpLayout,
};
pub use error::CodecError;
pub use feedback::ErrorFeedback;
pub use metrics::ErrorMetrics;
pub use quantize::{
    dequantize_codes, quantize, CodecSpec, QuantizeOptions, QuantizedTensor, ScaleMethod,
};
pub use scale::{GroupLayout, GroupScales, ScaleDtype, Scaling, TwoLevel};
