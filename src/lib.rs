//! LSQR: a runtime for low-bit neural-network weights.
//!
//! This facade re-exports the layers, each usable alone as a crate:
//! - [`codec`] (`lsqr-codec`): codebooks, encoding, group scales, metrics;
//! - [`pack`] (`lsqr-pack`): arbitrary-width bit packing of the codes.
#![deny(missing_docs)]

pub use lsqr_codec as codec;
pub use lsqr_pack as pack;

pub mod synthetic;
