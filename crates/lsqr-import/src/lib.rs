//! Importers: the formats models actually come in, read into one shape
//! without executing anything they contain.
//!
//! [`open`] takes a path, [`from_bytes`] a byte slice (for fuzzing and for
//! callers that already hold the file); both detect the format from the
//! content, never from the file name, and return a [`SourceModel`]: a list
//! of [`SourceTensor`]s (name, dtype, shape, where the bytes are) over the
//! backing buffers.
//!
//! # Formats
//!
//! | [`Format`] | What is read |
//! |---|---|
//! | safetensors | the JSON header (via the `safetensors` crate); data stays in the map |
//! | npy, npz | the header dict; npz entries stored or deflated |
//! | PyTorch zip (`torch.save`, torch >= 1.6) | `data.pkl` through a restricted unpickler; storages are zip entries |
//! | PyTorch legacy (before 1.6) | the pickle stream and the storages that follow it |
//! | TorchScript (`torch.jit.save`) | `data.pkl` and constants; the `code/` is never run |
//! | ONNX | initializers, `Constant` nodes and subgraphs, external data beside the file |
//!
//! # What is refused, and why
//!
//! Inputs are untrusted: a model downloaded from anywhere must not be able
//! to run code, read files it should not, hang the process or exhaust its
//! memory. So:
//!
//! - **Nothing is executed.** Pickles are read by a restricted unpickler
//!   that knows only the handful of globals a checkpoint needs (tensor
//!   rebuilds, storage types, `OrderedDict`, …) and builds *values*, never
//!   calls anything; any other global is an error naming it. TorchScript
//!   code is ignored.
//! - **Work is bounded by the input's size.** The unpickler charges every
//!   opcode one unit, and every element or byte it copies or visits beyond
//!   what it read one or more, against a budget of 16 units per pickle
//!   byte plus 1M; the walk over its result spends what is left. A small
//!   pickle cannot make quadratic work (REDUCE applied many times to one
//!   shared big tuple, `set(...)` of a shared list, a walk over a shared
//!   object): it is refused, naming the opcode and its byte offset. (A
//!   deflated `data.pkl` is budgeted by its inflated bytes, which the
//!   output bound below caps at 64 × the file's size on disk + 4 MiB.)
//!   Nesting depth is bounded, so deep input is an error, not a stack
//!   overflow.
//! - **Output is bounded by the input's size.** The elements all tensors
//!   may make together are at most [`AMPLIFICATION`] × the file's size on
//!   disk (compressed bytes) plus [`AMPLIFICATION_SLACK`]: stride-0 views or
//!   deflate bombs that would turn kilobytes into gigabytes are refused,
//!   naming the tensor. Buffers sized from the input are reserved with
//!   `try_reserve`, so an allocation failure is an error, not an abort.
//! - **Bounds are checked.** Every offset, length, shape and stride is
//!   checked against the buffer it points into, with checked arithmetic;
//!   ONNX external data must stay in the model's folder and be regular
//!   files; FIFOs and devices are refused before they are opened.
//! - **Memory-mapped inputs.** Files are mapped, not read: a tensor's
//!   bytes are touched only when asked for, so peak memory follows the
//!   largest tensor, not the model.

mod npy;
mod onnx;
pub mod onnx_graph;
mod pickle;
mod protobuf;
mod safetensors;
#[cfg(test)]
mod testutil;
mod torch;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use lsqr::format::RawDtype;

/// How many elements all the tensors of a file may hold together, per byte
/// of the file on disk (compressed bytes, not inflated ones; ONNX external
/// data files count as on disk). Real models are about 1:1 (one element per
/// 1 to 4 bytes); stride-0 views and deflate bombs are what exceed it. The
/// same bound caps the bytes zip entries may inflate to.
pub const AMPLIFICATION: u64 = 64;
/// Elements (and inflated bytes) every file may make beyond
/// [`AMPLIFICATION`] × its size, so tiny test files are not refused.
pub const AMPLIFICATION_SLACK: u64 = 1 << 22;

/// Elements, or inflated bytes, a file of `on_disk` bytes may make.
pub(crate) fn amplification_limit(on_disk: usize) -> u64 {
    (on_disk as u64).saturating_mul(AMPLIFICATION).saturating_add(AMPLIFICATION_SLACK)
}

/// Reads a zip entry's `declared` inflated bytes from `reader`, spending
/// them from `left` (the input's amplification bound, see
/// [`AMPLIFICATION`]); the buffer is reserved with `try_reserve_exact`, so
/// an allocation failure is an error, not an abort.
pub(crate) fn inflate(
    mut reader: impl std::io::Read,
    declared: u64,
    left: &mut u64,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if declared > *left {
        return Err(format!(
            "inflates to {declared} bytes, more than the {left} bytes left of the input's bound \
             ({AMPLIFICATION} × its size on disk + {AMPLIFICATION_SLACK}): refusing a zip bomb"
        ));
    }
    *left -= declared;
    let n = usize::try_from(declared).map_err(|_| format!("{declared} bytes is too large"))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(n).map_err(|_| format!("cannot allocate {n} bytes"))?;
    (&mut reader)
        .take(declared)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot inflate: {e}"))?;
    let mut extra = [0u8; 1];
    let more = reader.read(&mut extra).map_err(|e| format!("cannot inflate: {e}"))?;
    if bytes.len() as u64 != declared || more != 0 {
        return Err(format!(
            "inflates to {}{} bytes, not the declared {declared}",
            bytes.len(),
            if more != 0 { " or more" } else { "" }
        ));
    }
    Ok(bytes)
}

/// The formats an input can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.safetensors`.
    Safetensors,
    /// NumPy `.npy` (one array).
    Npy,
    /// NumPy `.npz` (a zip of `.npy`).
    Npz,
    /// PyTorch `torch.save` zip (torch >= 1.6).
    TorchZip,
    /// PyTorch legacy `torch.save` stream (before 1.6).
    TorchLegacy,
    /// TorchScript archive (`torch.jit.save`).
    TorchScript,
    /// ONNX model.
    Onnx,
}

impl Format {
    /// Name for messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Npy => "npy",
            Self::Npz => "npz",
            Self::TorchZip => "pytorch (zip)",
            Self::TorchLegacy => "pytorch (legacy)",
            Self::TorchScript => "torchscript",
            Self::Onnx => "onnx",
        }
    }
}

/// A backing buffer: a memory-mapped file, or bytes decoded at import.
pub enum Buffer {
    /// A whole file, memory-mapped.
    Mapped(memmap2::Mmap),
    /// Bytes held in memory (e.g. an inflated zip entry).
    Owned(Vec<u8>),
}

impl Buffer {
    /// Memory-maps `path`.
    pub fn map(path: &Path) -> Result<Self, ImportError> {
        let file = open_regular(path).map_err(|e| ImportError::new(path, e))?;
        // SAFETY: read-only private map; the input must not change while the
        // command runs, the contract of every mmap-based reader.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| ImportError::new(path, format!("cannot map: {e}")))?;
        Ok(Buffer::Mapped(map))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Buffer::Mapped(m) => m,
            Buffer::Owned(v) => v,
        }
    }
}

/// Opens `path` for reading if it is a regular file (after following
/// symlinks). A FIFO would block the command forever and a device would be
/// read as if it were a model, so both are refused: the type is checked
/// before opening, the file is opened non-blocking (so a FIFO swapped in
/// between cannot block the open), and the opened file's type is checked
/// again.
pub fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    check_regular(&meta)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| format!("cannot open: {e}"))?;
    check_regular(&file.metadata().map_err(|e| format!("cannot open: {e}"))?)?;
    Ok(file)
}

fn check_regular(meta: &std::fs::Metadata) -> Result<(), String> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() { "a folder" } else { file_kind(meta) };
    Err(format!("is {kind}, not a regular file"))
}

#[cfg(unix)]
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn file_kind(_: &std::fs::Metadata) -> &'static str {
    "a special file"
}

/// Where a tensor's little-endian bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorBytes {
    /// Contiguous (row-major) at byte `offset` of buffer `buffer`;
    /// `element_count * dtype.size()` bytes long.
    Contiguous {
        /// Index into the model's buffers.
        buffer: usize,
        /// Byte offset in that buffer.
        offset: usize,
    },
    /// A strided view (PyTorch): element `index` (row-major over `shape`) is
    /// at byte `offset + size * Σ index_k * strides[k]` of buffer `buffer`.
    Strided {
        /// Index into the model's buffers.
        buffer: usize,
        /// Byte offset of element 0.
        offset: usize,
        /// Strides in elements, one per dim.
        strides: Vec<usize>,
    },
    /// Decoded at import: contiguous little-endian bytes.
    Owned(Vec<u8>),
}

/// One tensor of an input model.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTensor {
    /// Name, e.g. `encoder.layer.0.attention.self.query.weight`.
    pub name: String,
    /// Element type.
    pub dtype: RawDtype,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Where its bytes are.
    pub bytes: TensorBytes,
}

impl SourceTensor {
    /// Number of elements (saturating: an overflowing shape can never fit
    /// in a buffer, so `SourceModel::bytes` reports it).
    pub fn element_count(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// Bytes of its values (saturating, as `element_count`).
    pub fn byte_len(&self) -> usize {
        self.element_count().saturating_mul(self.dtype.size())
    }
}

/// An opened input model.
pub struct SourceModel {
    /// The input's path.
    pub path: PathBuf,
    /// What it was detected as.
    pub format: Format,
    /// Backing buffers (the input, and e.g. ONNX external data files).
    pub buffers: Vec<Buffer>,
    /// Every tensor, in the source's order.
    pub tensors: Vec<SourceTensor>,
}

impl fmt::Debug for SourceModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceModel")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SourceModel {
    /// The tensor's values as contiguous little-endian bytes: borrowed from
    /// the map when they already are, gathered otherwise. Bounds were
    /// checked at import; they are checked again here, so a bad importer is
    /// an error, not a panic.
    pub fn bytes<'a>(&'a self, t: &'a SourceTensor) -> Result<Cow<'a, [u8]>, ImportError> {
        let len = t.byte_len();
        let out_of_bounds = || self.error(&t.name, "data lies outside the file");
        match &t.bytes {
            TensorBytes::Owned(v) if v.len() == len => Ok(Cow::Borrowed(v)),
            TensorBytes::Owned(_) => Err(self.error(&t.name, "decoded data has the wrong length")),
            TensorBytes::Contiguous { buffer, offset } => {
                let buf = self.buffers.get(*buffer).ok_or_else(out_of_bounds)?.as_slice();
                let end = offset.checked_add(len).ok_or_else(out_of_bounds)?;
                buf.get(*offset..end).map(Cow::Borrowed).ok_or_else(out_of_bounds)
            }
            TensorBytes::Strided { buffer, offset, strides } => {
                let buf = self.buffers.get(*buffer).ok_or_else(out_of_bounds)?.as_slice();
                match gather_strided(buf, *offset, &t.shape, strides, t.dtype.size()) {
                    Some(Ok(v)) => Ok(Cow::Owned(v)),
                    Some(Err(e)) => Err(self.error(&t.name, &e)),
                    None => Err(out_of_bounds()),
                }
            }
        }
    }

    /// The tensor's values as f32 (float dtypes converted exactly where f32
    /// can hold them; f64 rounded).
    /// f32 data already in place (little-endian host, 4-byte aligned) is
    /// borrowed, not copied.
    pub fn to_f32<'a>(&'a self, t: &'a SourceTensor) -> Result<Cow<'a, [f32]>, ImportError> {
        let b = self.bytes(t)?;
        if t.dtype == RawDtype::F32 && cfg!(target_endian = "little") {
            if let Cow::Borrowed(bytes) = b {
                if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
                    return Ok(Cow::Borrowed(values));
                }
            }
        }
        let out = match t.dtype {
            RawDtype::F32 => {
                b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            RawDtype::F16 => {
                b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            RawDtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            RawDtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact(8)")) as f32)
                .collect(),
            other => {
                return Err(
                    self.error(&t.name, &format!("{} is not a floating-point dtype", other.name()))
                )
            }
        };
        Ok(Cow::Owned(out))
    }

    /// Lets the OS drop the resident pages of a tensor read from a mapped
    /// input, once it has been written out: without this, every page of the
    /// input stays in the process's resident set until exit, and peak RSS
    /// would be the model's size, not a tensor's.
    pub fn release(&self, t: &SourceTensor) {
        let TensorBytes::Contiguous { buffer, offset } = t.bytes else { return };
        let Some(Buffer::Mapped(map)) = self.buffers.get(buffer) else { return };
        // madvise needs a page-aligned start; 64 KiB covers every page size.
        let start = offset / 65536 * 65536;
        let end = offset.saturating_add(t.byte_len()).min(map.len());
        if end > start {
            // SAFETY: the map is private, read-only and file-backed, so
            // MADV_DONTNEED only drops resident pages: a later access reads
            // the same bytes from the file again (which must not change
            // while mapped, the contract of `Buffer::map`). The range lies
            // within the map.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// An error about tensor `name` of this model.
    pub fn error(&self, name: &str, message: &str) -> ImportError {
        ImportError {
            path: self.path.clone(),
            tensor: Some(name.to_string()),
            message: message.to_string(),
        }
    }
}

/// Gathers a strided view into contiguous bytes; `None` if any element lies
/// outside `buf`, an error if the bytes cannot be allocated.
fn gather_strided(
    buf: &[u8],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
    size: usize,
) -> Option<Result<Vec<u8>, String>> {
    if strides.len() != shape.len() {
        return None;
    }
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if count == 0 {
        return Some(Ok(Vec::new()));
    }
    // The last element's offset bounds all others (strides are >= 0).
    let last = shape
        .iter()
        .zip(strides)
        .try_fold(0usize, |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?))?;
    let end = offset.checked_add(last.checked_mul(size)?)?.checked_add(size)?;
    if end > buf.len() {
        return None;
    }
    let len = count.checked_mul(size)?;
    let mut out = Vec::new();
    if out.try_reserve_exact(len).is_err() {
        return Some(Err(format!("cannot allocate {len} bytes for the view")));
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..count {
        let element: usize = index.iter().zip(strides).map(|(i, s)| i * s).sum();
        let at = offset + element * size;
        out.extend_from_slice(&buf[at..at + size]);
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Some(Ok(out))
}

/// Why an input could not be read: names the file and, where there is one,
/// the tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    /// The input file.
    pub path: PathBuf,
    /// The tensor, if the problem is one tensor's.
    pub tensor: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ImportError {
    /// An error about the file as a whole.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), tensor: None, message: message.into() }
    }

    /// An error about one tensor.
    pub fn tensor(path: &Path, tensor: &str, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), tensor: Some(tensor.to_string()), message: message.into() }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(t) = &self.tensor {
            write!(f, ": tensor '{t}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ImportError {}

/// What the first bytes say the file is.
fn detect(path: &Path, bytes: &[u8]) -> Result<Format, ImportError> {
    if bytes.starts_with(b"\x93NUMPY") {
        return Ok(Format::Npy);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return zip_kind(path, bytes);
    }
    if safetensors::looks_like(bytes) {
        return Ok(Format::Safetensors);
    }
    if torch::looks_like_legacy(bytes) {
        return Ok(Format::TorchLegacy);
    }
    if onnx::looks_like(bytes) {
        return Ok(Format::Onnx);
    }
    Err(ImportError::new(
        path,
        "unrecognised format (expected safetensors, .npy/.npz, PyTorch, TorchScript or ONNX)",
    ))
}

/// A zip is an .npz, a PyTorch checkpoint or a TorchScript archive, by its
/// entries.
fn zip_kind(path: &Path, bytes: &[u8]) -> Result<Format, ImportError> {
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ImportError::new(path, format!("not a readable zip: {e}")))?;
    let names: Vec<&str> = archive.file_names().collect();
    let has = |suffix: &str| names.iter().any(|n| n.ends_with(suffix));
    if names.iter().any(|n| n.contains("/code/") || n.starts_with("code/")) && has("data.pkl") {
        Ok(Format::TorchScript)
    } else if has("data.pkl") {
        Ok(Format::TorchZip)
    } else if !names.is_empty() && names.iter().all(|n| n.ends_with(".npy")) {
        Ok(Format::Npz)
    } else {
        Err(ImportError::new(
            path,
            "zip archive is neither .npz, a PyTorch checkpoint nor a TorchScript archive",
        ))
    }
}

/// Opens any supported input: memory-maps `path`, detects its format from
/// its content and lists its tensors. ONNX external data is read from
/// beside it.
pub fn open(path: &Path) -> Result<SourceModel, ImportError> {
    let buffer = Buffer::map(path)?;
    read(path, buffer, None, true)
}

/// Reads a model held in memory, as [`open`] reads a file; `name` stands
/// for the path in messages. Nothing outside `bytes` is touched: ONNX
/// external data is refused.
pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<SourceModel, ImportError> {
    read(Path::new(name), Buffer::Owned(bytes), None, false)
}

/// As [`from_bytes`], read as `format` without detecting it (the fuzz
/// targets use it, so mutated inputs reach the importer they aim at).
pub fn from_bytes_as(
    bytes: Vec<u8>,
    name: &str,
    format: Format,
) -> Result<SourceModel, ImportError> {
    read(Path::new(name), Buffer::Owned(bytes), Some(format), false)
}

fn read(
    path: &Path,
    buffer: Buffer,
    format: Option<Format>,
    files_allowed: bool,
) -> Result<SourceModel, ImportError> {
    let format = match format {
        Some(f) => f,
        None => detect(path, buffer.as_slice())?,
    };
    let mut model = SourceModel {
        path: path.to_path_buf(),
        format,
        buffers: vec![buffer],
        tensors: Vec::new(),
    };
    match format {
        Format::Safetensors => safetensors::import(&mut model)?,
        Format::Npy => npy::import_npy(&mut model)?,
        Format::Npz => npy::import_npz(&mut model)?,
        Format::TorchZip | Format::TorchScript => torch::import_zip(&mut model)?,
        Format::TorchLegacy => torch::import_legacy(&mut model)?,
        Format::Onnx => onnx::import(&mut model, files_allowed)?,
    }
    // A graph without weights is a model (its ops run); anything else
    // without a tensor is not.
    let has_graph = format == Format::Onnx
        && model.buffers.first().is_some_and(|b| onnx::has_nodes(b.as_slice()));
    if model.tensors.is_empty() && !has_graph {
        return Err(ImportError::new(
            path,
            format!("no tensor found: the {} file holds no weights", format.name()),
        ));
    }
    check_names(&model)?;
    check_unique_names(&model)?;
    check_amplification(&model)?;
    Ok(model)
}

/// Tensor names become names in the `.lsq` file, which C callers read as
/// NUL-terminated strings: a NUL inside one is refused here, for every
/// importer. The tensor is named by index (its name is shown with the NUL
/// as `\\0`).
fn check_names(model: &SourceModel) -> Result<(), ImportError> {
    match model.tensors.iter().position(|t| t.name.contains('\0')) {
        Some(i) => Err(ImportError::new(
            &model.path,
            format!(
                "tensor #{i} ('{}'): name contains a NUL byte",
                model.tensors[i].name.replace('\0', "\\0")
            ),
        )),
        None => Ok(()),
    }
}

/// The elements all tensors hold together stay within [`AMPLIFICATION`] ×
/// the input's size on disk (+ [`AMPLIFICATION_SLACK`]); the tensor that
/// crosses the bound is named.
fn check_amplification(model: &SourceModel) -> Result<(), ImportError> {
    // The input itself (mapped, or the caller's bytes) and mapped external
    // data files; inflated entries are not on disk.
    let on_disk: usize = model
        .buffers
        .iter()
        .enumerate()
        .filter(|(i, b)| *i == 0 || matches!(b, Buffer::Mapped(_)))
        .map(|(_, b)| b.as_slice().len())
        .sum();
    let limit = amplification_limit(on_disk);
    let mut total = 0u64;
    for t in &model.tensors {
        total = total.saturating_add(t.element_count() as u64);
        if total > limit {
            return Err(ImportError::tensor(
                &model.path,
                &t.name,
                format!(
                    "the tensors up to this one hold {total} elements, more than {limit} \
                     ({AMPLIFICATION} × the {on_disk} bytes on disk + {AMPLIFICATION_SLACK}): \
                     refusing repeated (stride-0) views or inflated data no real model has"
                ),
            ));
        }
    }
    Ok(())
}

fn check_unique_names(model: &SourceModel) -> Result<(), ImportError> {
    let mut names: Vec<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(ImportError::tensor(&model.path, w[0], "appears twice")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_gather_transposes() {
        // A 2x3 view with strides (1, 2) over [0, 1, 2, 3, 4, 5] as u8.
        let buf = [0u8, 1, 2, 3, 4, 5];
        assert_eq!(
            gather_strided(&buf, 0, &[2, 3], &[1, 2], 1).unwrap().unwrap(),
            [0, 2, 4, 1, 3, 5]
        );
        assert_eq!(
            gather_strided(&buf, 1, &[2, 3], &[1, 2], 1),
            None,
            "last element out of bounds"
        );
        assert_eq!(
            gather_strided(&buf, 0, &[0, 3], &[1, 2], 1).unwrap().unwrap(),
            Vec::<u8>::new()
        );
    }
}
