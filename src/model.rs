//! Saving and loading whole models: the reference's
//! `save_lsq_model(state, B, path)` / `load_lsq_model(path)`, in Rust.

use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::codec::{quantize, CodecError, CodecKind, ErrorMetrics, QuantizeOptions, Scaling};
use crate::format::{
    FormatError, Graph, LsqFile, LsqFileWriter, RawDtype, Storage, TensorInfo, TensorView, Value,
};

/// Errors of the facade: the layers' errors, with the tensor they concern.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the container.
    Format(FormatError),
    /// Quantizing a tensor.
    Codec {
        /// The tensor.
        tensor: String,
        /// What went wrong.
        source: CodecError,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Format(e) => e.fmt(f),
            Error::Codec { tensor, source } => write!(f, "tensor '{tensor}': {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Format(e) => Some(e),
            Error::Codec { source, .. } => Some(source),
        }
    }
}

impl From<lsqr_runtime::BuildError> for Error {
    fn from(e: lsqr_runtime::BuildError) -> Self {
        match e {
            lsqr_runtime::BuildError::Codec { tensor, source } => Error::Codec { tensor, source },
            lsqr_runtime::BuildError::Format(e) => Error::Format(e),
            other => Error::Format(FormatError::Invalid { message: other.to_string() }),
        }
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Format(e)
    }
}

/// What saving did to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// The tensor's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The codec, or `None` if it was kept raw.
    pub codec: Option<CodecKind>,
    /// Error of the stored values against the input (exact for raw tensors).
    pub metrics: ErrorMetrics,
    /// Bytes of the input (f32).
    pub original_bytes: u64,
    /// Bytes stored in the file (codes + scales + table, or raw values).
    pub stored_bytes: u64,
}

/// Writes a model tensor by tensor, quantizing as it goes. Memory is bounded
/// by the largest tensor; the file appears atomically at `finish`.
#[derive(Debug)]
pub struct LsqModelWriter {
    file: LsqFileWriter,
    reports: Vec<TensorReport>,
}

impl LsqModelWriter {
    /// Starts the file that `finish` will put at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self { file: LsqFileWriter::create(path)?, reports: Vec::new() })
    }

    /// Quantizes `values` with `options` and adds it.
    pub fn add_quantized(
        &mut self,
        name: &str,
        values: ArrayViewD<'_, f32>,
        options: &QuantizeOptions,
    ) -> Result<(), Error> {
        let shape = values.shape().to_vec();
        let data = values.as_standard_layout();
        let data = data.as_slice().expect("standard layout is contiguous");
        let codec_error = |source| Error::Codec { tensor: name.to_string(), source };
        let q = quantize(data, &shape, options).map_err(codec_error)?;
        let metrics = ErrorMetrics::between(data, &q.dequantize()).map_err(codec_error)?;
        let writer = self.file.writer();
        writer.add_quantized(name, &q)?;
        let stored_bytes = writer.tensors().last().map_or(0, TensorInfo::stored_bytes);
        self.reports.push(TensorReport {
            name: name.to_string(),
            shape,
            codec: Some(q.codebook().kind()),
            metrics,
            original_bytes: 4 * data.len() as u64,
            stored_bytes,
        });
        Ok(())
    }

    /// Adds `values` as raw f32.
    pub fn add_raw_f32(&mut self, name: &str, values: ArrayViewD<'_, f32>) -> Result<(), Error> {
        let data = values.as_standard_layout();
        let data = data.as_slice().expect("standard layout is contiguous");
        self.file.writer().add_raw_f32(name, values.shape(), data)?;
        let metrics = ErrorMetrics::between(data, data).expect("same length");
        let bytes = 4 * data.len() as u64;
        self.reports.push(TensorReport {
            name: name.to_string(),
            shape: values.shape().to_vec(),
            codec: None,
            metrics,
            original_bytes: bytes,
            stored_bytes: bytes,
        });
        Ok(())
    }

    /// Adds a raw tensor of any dtype from its little-endian bytes.
    pub fn add_raw(
        &mut self,
        name: &str,
        dtype: RawDtype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.file.writer().add_raw(name, dtype, shape, bytes)?;
        self.reports.push(TensorReport {
            name: name.to_string(),
            shape: shape.to_vec(),
            codec: None,
            metrics: ErrorMetrics::default(),
            original_bytes: bytes.len() as u64,
            stored_bytes: bytes.len() as u64,
        });
        Ok(())
    }

    /// Adds a metadata entry.
    pub fn add_metadata(&mut self, key: &str, value: Value) -> Result<(), Error> {
        Ok(self.file.writer().add_metadata(key, value)?)
    }

    /// Sets the layer graph (checked at `finish`).
    pub fn set_graph(&mut self, graph: Graph) {
        self.file.writer().set_graph(graph);
    }

    /// Writes the file and returns what was done to each tensor.
    pub fn finish(self) -> Result<Vec<TensorReport>, Error> {
        self.file.finish()?;
        Ok(self.reports)
    }
}

/// Whether a tensor of `shape` is a vector (or a scalar): fewer than two
/// dims larger than 1. `[384]`, `[1, 384]`, `[384, 1, 1]` and `[1, 1, 1]`
/// are vectors; `[2, 3]` is not. Vectors (biases, norms, stored in
/// whatever shape the exporter chose) are kept raw by [`save_lsq_model`]
/// and by `lsqr quantize`: they are small, and quantizing them costs
/// accuracy for no space.
pub fn is_vector(shape: &[usize]) -> bool {
    shape.iter().filter(|&&d| d > 1).count() < 2
}

/// Saves a state dict: tensors with two or more dims larger than 1 are
/// quantized with `options`; vectors and scalars (biases, norms; see
/// [`is_vector`]) are kept as f32, since they are small and quantizing them
/// costs accuracy for no space.
pub fn save_lsq_model<'a, I>(
    state: I,
    options: &QuantizeOptions,
    path: impl AsRef<Path>,
) -> Result<Vec<TensorReport>, Error>
where
    I: IntoIterator<Item = (&'a str, ArrayViewD<'a, f32>)>,
{
    let mut w = LsqModelWriter::create(path)?;
    for (name, values) in state {
        if !is_vector(values.shape()) {
            w.add_quantized(name, values, options)?;
        } else {
            w.add_raw_f32(name, values)?;
        }
    }
    w.finish()
}

/// How [`load_lsq_model_with`] opens a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Check the CRC-32 of every data section (scales, tables, codes, raw
    /// values) before returning, so corrupted weights are an error instead
    /// of wrong values. Reads the whole file once. Default: on.
    pub verify: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { verify: true }
    }
}

impl LoadOptions {
    /// Defaults: data checksums checked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to check the data checksums.
    pub fn verify(self, verify: bool) -> Self {
        Self { verify }
    }
}

/// Opens a `.lsq` model (memory-mapped) and checks every checksum, header
/// and data: a corrupted file is an error naming the tensor and section.
/// Nothing is decoded until asked. To skip the data checksums (which read
/// the whole file), use [`load_lsq_model_with`].
pub fn load_lsq_model(path: impl AsRef<Path>) -> Result<LsqModel<'static>, Error> {
    load_lsq_model_with(path, LoadOptions::default())
}

/// [`load_lsq_model`] with options: `LoadOptions::new().verify(false)`
/// validates the header only.
pub fn load_lsq_model_with(
    path: impl AsRef<Path>,
    options: LoadOptions,
) -> Result<LsqModel<'static>, Error> {
    let file = LsqFile::open(path)?;
    if options.verify {
        file.verify()?;
    }
    Ok(LsqModel { file })
}

/// An opened model.
#[derive(Debug)]
pub struct LsqModel<'a> {
    file: LsqFile<'a>,
}

impl<'a> LsqModel<'a> {
    /// Opens a model held in memory (for example flash), without copying,
    /// and checks every checksum as [`load_lsq_model`] does.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::from_bytes_with(bytes, LoadOptions::default())
    }

    /// [`LsqModel::from_bytes`] with options.
    pub fn from_bytes_with(bytes: &'a [u8], options: LoadOptions) -> Result<Self, Error> {
        let file = LsqFile::from_bytes(bytes)?;
        if options.verify {
            file.verify()?;
        }
        Ok(Self { file })
    }

    /// The container underneath.
    pub fn file(&self) -> &LsqFile<'a> {
        &self.file
    }

    /// Tensor names, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.file.tensors().iter().map(|t| t.name.as_str())
    }

    /// The tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<LsqTensor<'_>, Error> {
        Ok(LsqTensor { view: self.file.tensor(name)? })
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.file.metadata_get(key)
    }

    /// Checks every checksum.
    pub fn verify(&self) -> Result<(), Error> {
        Ok(self.file.verify()?)
    }
}

/// One tensor of an opened model.
#[derive(Debug)]
pub struct LsqTensor<'m> {
    view: TensorView<'m>,
}

impl<'m> LsqTensor<'m> {
    fn info(&self) -> &'m TensorInfo {
        self.view.info()
    }

    /// Its name.
    pub fn name(&self) -> &'m str {
        &self.info().name
    }

    /// Its shape.
    pub fn shape(&self) -> Vec<usize> {
        self.info().shape_usize()
    }

    /// Number of elements.
    pub fn element_count(&self) -> usize {
        self.info().element_count()
    }

    /// The codec, for a quantized tensor.
    pub fn codec(&self) -> Option<CodecKind> {
        match self.info().storage {
            Storage::Quantized(q) => Some(q.codec),
            Storage::Raw(_) => None,
        }
    }

    /// The code width C, for a quantized tensor.
    pub fn bits(&self) -> Option<u32> {
        match self.info().storage {
            Storage::Quantized(q) => Some(q.width.bits()),
            Storage::Raw(_) => None,
        }
    }

    /// How scales are shared, for a quantized tensor.
    pub fn scaling(&self) -> Option<Scaling> {
        match self.info().storage {
            Storage::Quantized(q) => Some(q.scaling),
            Storage::Raw(_) => None,
        }
    }

    /// The element type, for a raw tensor.
    pub fn raw_dtype(&self) -> Option<RawDtype> {
        match self.info().storage {
            Storage::Raw(d) => Some(d),
            Storage::Quantized(_) => None,
        }
    }

    /// Bytes stored in the file.
    pub fn stored_bytes(&self) -> u64 {
        self.info().stored_bytes()
    }

    /// The zero-copy view underneath (packed codes, scales, codebook).
    pub fn view(&self) -> &TensorView<'m> {
        &self.view
    }

    /// The values as f32 (decoded, or converted from the raw dtype).
    pub fn dequantize(&self) -> Result<ArrayD<f32>, Error> {
        let values = self.view.to_f32_vec()?;
        Ok(ArrayD::from_shape_vec(IxDyn(&self.shape()), values)
            .expect("length is the shape's element count"))
    }

    /// The values as f32 into a caller buffer of exactly `element_count`.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), Error> {
        Ok(self.view.dequantize_into(out)?)
    }
}
