//! The writer: streams tensors one at a time, then the header, then the
//! preamble (FORMAT.md §8).
//!
//! Memory is bounded by the largest single tensor: each tensor's sections
//! go straight to the output, and only its header entry is kept.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use lsqr_codec::{CodebookParams, QuantizedTensor};

use crate::error::FormatError;
use crate::header::{self, Index};
use crate::model::*;
use crate::tempfile::{self, NamedTemp};

/// Writes a `.lsq` file to any seekable output.
///
/// Sections are written in the order tensors are added (data, scales,
/// table), each at the next multiple of 64; the same calls give the same
/// bytes.
#[derive(Debug)]
pub struct LsqWriter<W: Write + Seek> {
    out: W,
    pos: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    names: BTreeSet<String>,
    graph: Option<Graph>,
}

fn io_error(context: &str) -> impl FnOnce(io::Error) -> FormatError + '_ {
    move |source| FormatError::Io { context: context.to_string(), source }
}

fn invalid(message: String) -> FormatError {
    FormatError::Invalid { message }
}

fn check_name(what: &str, name: &str) -> Result<(), FormatError> {
    if name.is_empty() || name.len() as u64 > MAX_NAME_LEN {
        return Err(invalid(format!("{what} '{name}' must be 1..=4096 bytes of UTF-8")));
    }
    // FORMAT.md §3.1: no U+0000 in names, so that C readers (lsqr-capi)
    // can hand them out as NUL-terminated strings; the reader refuses them.
    if name.contains('\0') {
        return Err(invalid(format!("{what} '{}' contains a NUL byte", name.replace('\0', "\\0"))));
    }
    Ok(())
}

/// Every name of the graph follows FORMAT.md §3.1, as the reader requires.
fn check_graph_names(g: &Graph) -> Result<(), FormatError> {
    for v in g.inputs.iter().chain(&g.outputs) {
        check_name("graph value name", v)?;
    }
    for (i, layer) in g.layers.iter().enumerate() {
        check_name(&format!("graph layer {i} op"), &layer.op)?;
        for v in layer.inputs.iter().chain(&layer.outputs) {
            check_name(&format!("graph layer {i} value name"), v)?;
        }
        for v in &layer.weights {
            check_name(&format!("graph layer {i} weight name"), v)?;
        }
        for (k, _) in &layer.attrs {
            check_name(&format!("graph layer {i} attribute key"), k)?;
        }
    }
    Ok(())
}

impl<W: Write + Seek> LsqWriter<W> {
    /// Starts a file at the output's current position 0.
    pub fn new(mut out: W) -> Result<Self, FormatError> {
        out.seek(SeekFrom::Start(0)).map_err(io_error("seeking to the start"))?;
        out.write_all(&[0u8; PREAMBLE_LEN as usize])
            .map_err(io_error("writing the preamble placeholder"))?;
        Ok(Self {
            out,
            pos: PREAMBLE_LEN,
            metadata: Vec::new(),
            tensors: Vec::new(),
            names: BTreeSet::new(),
            graph: None,
        })
    }

    /// Adds a metadata entry; keys are unique.
    pub fn add_metadata(&mut self, key: &str, value: Value) -> Result<(), FormatError> {
        check_name("metadata key", key)?;
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(FormatError::DuplicateName { what: "metadata key", name: key.to_string() });
        }
        if self.metadata.len() as u64 >= MAX_METADATA {
            return Err(invalid(format!("more than {MAX_METADATA} metadata entries")));
        }
        self.metadata.push((key.to_string(), value));
        Ok(())
    }

    /// Adds a quantized tensor: packs its codes and writes codes, scales and
    /// (for `lut`) table.
    pub fn add_quantized(&mut self, name: &str, q: &QuantizedTensor) -> Result<(), FormatError> {
        let shape = self.check_tensor(name, q.shape())?;
        let codebook = q.codebook();
        let width = codebook.width();
        let (fp_layout, mu, table) = match codebook.params() {
            CodebookParams::Fp(layout) => (Some(*layout), 0.0, None),
            // μ = 0 is written +0.0 (FORMAT.md §3.4), whatever its sign.
            CodebookParams::Log { mu } => (None, if *mu == 0.0 { 0.0 } else { *mu }, None),
            CodebookParams::Lut(table) => (None, 0.0, Some(table)),
            _ => (None, 0.0, None),
        };
        let pack_error = |source| FormatError::Pack { tensor: name.to_string(), source };
        let mut packed =
            vec![0u8; lsqr_pack::packed_len(q.codes().len(), width.bits()).map_err(pack_error)?];
        lsqr_pack::pack_into(q.codes(), width.bits(), &mut packed).map_err(pack_error)?;
        let unit = q.scaling() == lsqr_codec::Scaling::Unit;
        let data = self.write_section(&packed)?;
        drop(packed);
        let scales = self.write_section(&q.scales().to_le_bytes())?;
        let table_bytes: Vec<u8> =
            table.map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap_or_default();
        let table = self.write_section(&table_bytes)?;
        let spec = QuantSpec {
            codec: codebook.kind(),
            width,
            scaling: q.scaling(),
            scale_dtype: (!unit).then(|| q.scales().dtype()),
            fp_layout,
            mu,
        };
        self.push(TensorInfo {
            name: name.to_string(),
            shape,
            storage: Storage::Quantized(spec),
            data,
            scales,
            table,
        });
        Ok(())
    }

    /// Adds a raw tensor from its little-endian bytes.
    pub fn add_raw(
        &mut self,
        name: &str,
        dtype: RawDtype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<(), FormatError> {
        let shape64 = self.check_tensor(name, shape)?;
        let expected =
            lsqr_codec::scale::element_count(shape).and_then(|n| n.checked_mul(dtype.size()));
        if expected != Some(bytes.len()) {
            return Err(invalid(format!(
                "tensor '{name}': {} bytes given for shape {shape:?} of {}",
                bytes.len(),
                dtype.name()
            )));
        }
        let data = self.write_section(bytes)?;
        let (scales, table) = (Section::EMPTY, Section::EMPTY);
        self.push(TensorInfo {
            name: name.to_string(),
            shape: shape64,
            storage: Storage::Raw(dtype),
            data,
            scales,
            table,
        });
        Ok(())
    }

    /// Adds a raw f32 tensor.
    pub fn add_raw_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[f32],
    ) -> Result<(), FormatError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, RawDtype::F32, shape, &bytes)
    }

    /// The entries of the tensors written so far.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Sets the layer graph; it is checked against the tensors at `finish`.
    pub fn set_graph(&mut self, graph: Graph) {
        self.graph = Some(graph);
    }

    /// Writes the header and the preamble and returns the output.
    pub fn finish(mut self) -> Result<W, FormatError> {
        let index = Index {
            by_name: {
                let mut v: Vec<usize> = (0..self.tensors.len()).collect();
                v.sort_unstable_by(|&a, &b| self.tensors[a].name.cmp(&self.tensors[b].name));
                v
            },
            metadata: Vec::new(),
            tensors: core::mem::take(&mut self.tensors),
            graph: None,
        };
        if let Some(g) = &self.graph {
            check_graph_names(g)?;
            header::validate_graph(g, &index, header::minor_version_for(&index.tensors, Some(g)))?;
        }
        let header = header::encode_header(&self.metadata, &index.tensors, self.graph.as_ref());
        if header.len() as u64 > MAX_HEADER_LEN {
            return Err(invalid(format!(
                "header of {} bytes exceeds the cap of {MAX_HEADER_LEN}",
                header.len()
            )));
        }
        let header_offset = self.pad_to_alignment()?;
        self.out.write_all(&header).map_err(io_error("writing the header"))?;
        let preamble = header::encode_preamble(
            header::minor_version_for(&index.tensors, self.graph.as_ref()),
            header_offset,
            header.len() as u64,
            crc32fast::hash(&header),
        );
        self.out.seek(SeekFrom::Start(0)).map_err(io_error("seeking to the preamble"))?;
        self.out.write_all(&preamble).map_err(io_error("writing the preamble"))?;
        self.out.flush().map_err(io_error("flushing"))?;
        Ok(self.out)
    }

    fn check_tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<u64>, FormatError> {
        check_name("tensor name", name)?;
        if self.names.contains(name) {
            return Err(FormatError::DuplicateName { what: "tensor name", name: name.to_string() });
        }
        if shape.len() > MAX_DIMS {
            return Err(invalid(format!(
                "tensor '{name}' has {} dims; at most {MAX_DIMS}",
                shape.len()
            )));
        }
        if self.tensors.len() as u64 >= MAX_TENSORS {
            return Err(invalid(format!("more than {MAX_TENSORS} tensors")));
        }
        Ok(shape.iter().map(|&d| d as u64).collect())
    }

    fn push(&mut self, info: TensorInfo) {
        self.names.insert(info.name.clone());
        self.tensors.push(info);
    }

    /// Pads with zeros to the next multiple of 64 and returns the position.
    fn pad_to_alignment(&mut self) -> Result<u64, FormatError> {
        let pad = self.pos.next_multiple_of(ALIGN) - self.pos;
        self.out
            .write_all(&[0u8; ALIGN as usize][..pad as usize])
            .map_err(io_error("writing padding"))?;
        self.pos += pad;
        Ok(self.pos)
    }

    fn write_section(&mut self, bytes: &[u8]) -> Result<Section, FormatError> {
        if bytes.is_empty() {
            return Ok(Section::EMPTY);
        }
        let offset = self.pad_to_alignment()?;
        self.out.write_all(bytes).map_err(io_error("writing tensor data"))?;
        self.pos += bytes.len() as u64;
        Ok(Section { offset, len: bytes.len() as u64, crc32: crc32fast::hash(bytes) })
    }
}

/// Writes a `.lsq` file atomically: to a temporary file in the destination's
/// folder, fsynced, then put in place of the destination (and the folder
/// fsynced). An error or a crash before [`LsqFileWriter::finish`] leaves the
/// destination as it was.
///
/// On Linux the temporary file is unnamed (`O_TMPFILE`) and linked into
/// place at the end, so nothing is left behind even on SIGKILL. Where that
/// is unsupported (another OS, or a filesystem refusing `O_TMPFILE`), or
/// when the environment variable `LSQR_NO_O_TMPFILE` is set to anything but
/// `0` or empty (for tests), it is a named file `.NAME.tmp-PID-N` beside the
/// destination, renamed over it at the end: dropping an unfinished writer
/// removes it, [`remove_temporary_files`](crate::remove_temporary_files)
/// removes it from a signal-handling thread, and those of dead processes
/// are removed when NAME is next written.
#[derive(Debug)]
pub struct LsqFileWriter {
    inner: Option<LsqWriter<BufWriter<File>>>,
    /// The named temporary file; `None` when the file is unnamed.
    temp: Option<NamedTemp>,
    dir: PathBuf,
    file_name: OsString,
    dest: PathBuf,
}

impl LsqFileWriter {
    /// Starts writing the file that will appear at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, FormatError> {
        let no_tmpfile =
            std::env::var_os("LSQR_NO_O_TMPFILE").is_some_and(|v| !v.is_empty() && v != "0");
        Self::create_with(path, !no_tmpfile)
    }

    /// [`create`](Self::create), choosing whether an unnamed (`O_TMPFILE`)
    /// temporary file may be used; for tests of the fallback.
    #[doc(hidden)]
    pub fn create_with(path: impl AsRef<Path>, unnamed: bool) -> Result<Self, FormatError> {
        let dest = path.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| invalid(format!("{} is not a file path", dest.display())))?
            .to_os_string();
        tempfile::remove_stale_temporaries(&dir, &file_name);
        let creating = |source| FormatError::Io {
            context: format!("creating a temporary file in {}", dir.display()),
            source,
        };
        let unnamed = if unnamed { tempfile::open_unnamed(&dir).map_err(creating)? } else { None };
        let (temp, file) = match unnamed {
            Some(file) => (None, file),
            None => {
                let (temp, file) = NamedTemp::new(&dir, &file_name, |p| {
                    fs::OpenOptions::new().write(true).create_new(true).open(p)
                })
                .map_err(creating)?;
                (Some(temp), file)
            }
        };
        // On error, dropping `temp` removes the file.
        let writer = LsqWriter::new(BufWriter::with_capacity(1 << 20, file))?;
        Ok(Self { inner: Some(writer), temp, dir, file_name, dest })
    }

    /// Whether the temporary file is unnamed (`O_TMPFILE`); for tests.
    #[doc(hidden)]
    pub fn is_unnamed(&self) -> bool {
        self.temp.is_none()
    }

    /// The writer, for adding tensors, metadata and the graph.
    pub fn writer(&mut self) -> &mut LsqWriter<BufWriter<File>> {
        self.inner.as_mut().expect("only `finish` takes the writer, and it consumes self")
    }

    /// Finishes the file, fsyncs it, and puts it in place.
    pub fn finish(mut self) -> Result<(), FormatError> {
        let writer = self.inner.take().expect("present until finish");
        let what = match &self.temp {
            Some(t) => t.path().display().to_string(),
            None => format!("the temporary file for {}", self.dest.display()),
        };
        let context = |verb: &str| format!("{verb} {what}");
        let file = writer.finish()?.into_inner().map_err(|e| FormatError::Io {
            context: context("flushing"),
            source: e.into_error(),
        })?;
        file.sync_all()
            .map_err(|source| FormatError::Io { context: context("syncing"), source })?;
        let placing = |source| FormatError::Io {
            context: format!("moving {what} to {}", self.dest.display()),
            source,
        };
        match self.temp.take() {
            None => tempfile::publish_unnamed(&file, &self.dir, &self.file_name, &self.dest)
                .map_err(placing)?,
            Some(temp) => {
                drop(file);
                temp.rename_to(&self.dest).map_err(placing)?;
                // Make the rename itself durable; not every platform can
                // sync a folder.
                tempfile::sync_dir(&self.dir);
            }
        }
        Ok(())
    }
}

impl Drop for LsqFileWriter {
    fn drop(&mut self) {
        // Close the file before `temp` (dropped after this) removes it.
        self.inner = None;
    }
}
