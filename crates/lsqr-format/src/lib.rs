//! The `.lsq` container: a byte-exact, versioned file format for quantized
//! models (docs/FORMAT.md in the repository is the specification).
//!
//! - [`LsqFile::from_bytes`] opens a file held in memory without copying;
//!   [`LsqFile::open`] memory-maps one. Both validate the whole header
//!   (bounds, overlaps, lengths, names, caps, graph) before returning, and
//!   read no tensor data: opening a large model touches two pages.
//! - [`LsqFile::verify`] also checks every data section's CRC-32.
//! - [`LsqWriter`] streams tensors to any seekable output, one at a time;
//!   [`LsqFileWriter`] does so atomically into a file.
//!
//! ```
//! use lsqr_codec::{quantize, CodecSpec, QuantizeOptions};
//! use lsqr_format::{LsqFile, LsqWriter, Value};
//!
//! let weights: Vec<f32> = (0..128).map(|i| (i as f32 * 0.1).sin()).collect();
//! let q = quantize(&weights, &[2, 64], &QuantizeOptions::new(CodecSpec::Log { mu: None }, 4))?;
//! let mut w = LsqWriter::new(std::io::Cursor::new(Vec::new()))?;
//! w.add_metadata("model", Value::String("demo".into()))?;
//! w.add_quantized("fc.weight", &q)?;
//! let bytes = w.finish()?.into_inner();
//!
//! let file = LsqFile::from_bytes(&bytes)?;
//! file.verify()?;
//! let back = file.tensor("fc.weight")?.to_f32_vec()?;
//! assert_eq!(back, q.dequantize());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Without the default `std` feature the crate is `no_std` + `alloc`: the
//! reader works on byte slices, e.g. a model in flash. Dependencies:
//! `lsqr-codec` and `lsqr-pack` (what a tensor entry describes and how its
//! codes are packed), `crc32fast` (checksums), `half` (f16 scales and raw
//! f16/bf16), `memmap2` (`open`, with `std`), `libc` (on Unix with `std`:
//! `O_TMPFILE` temporary files and telling dead processes' ones).
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
pub(crate) mod header;
mod model;
mod reader;
#[cfg(feature = "std")]
mod tempfile;
#[cfg(feature = "std")]
mod writer;

pub use error::{FormatError, SectionKind, SectionProblem};
pub use model::{
    Graph, Layer, QuantSpec, RawDtype, Section, Storage, TensorInfo, Value, ALIGN, MAGIC, MAX_DIMS,
    MAX_HEADER_LEN, MAX_METADATA, MAX_NAME_LEN, MAX_TENSORS, OPS_1_0, PREAMBLE_LEN, VERSION,
};
pub use reader::{LsqFile, QuantizedView, RawView, TensorView};
#[cfg(feature = "std")]
pub use tempfile::{remove_stale_temporaries, remove_temporary_files, NamedTemp};
#[cfg(feature = "std")]
pub use writer::{LsqFileWriter, LsqWriter};

/// Low-level header encoding, for tests and tools that must craft files the
/// writer would refuse to write (offsets past 4 GiB, corrupt entries).
/// Also the `from_bytes` fuzz target's checker ([`raw::fuzz_one`]), which
/// the crate's fuzz regression tests replay saved inputs through.
#[doc(hidden)]
pub mod raw {
    pub use crate::fuzz_check::{fuzz_one, repair_preamble};
    pub use crate::header::{encode_header, encode_preamble};
}

mod fuzz_check;
