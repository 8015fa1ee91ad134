//! The reader: validate the whole header up front, then hand out zero-copy
//! views of tensor data.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use half::{bf16, f16};
use lsqr_codec::{Codebook, CodebookParams, CodecKind, GroupLayout, ScaleDtype};

use crate::error::{FormatError, SectionKind};
use crate::header::{self, Index};
use crate::model::*;

enum Bytes<'a> {
    Borrowed(&'a [u8]),
    #[cfg(feature = "std")]
    Mapped(memmap2::Mmap),
}

/// An opened `.lsq` file: its validated header, and its bytes (borrowed or
/// memory-mapped). Opening reads the preamble and header only.
pub struct LsqFile<'a> {
    bytes: Bytes<'a>,
    index: Index,
}

impl core::fmt::Debug for LsqFile<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LsqFile")
            .field("len", &self.as_bytes().len())
            .field("tensors", &self.index.tensors.len())
            .finish()
    }
}

/// What a non-regular file is, for [`FormatError::NotAFile`]; `None` for a
/// regular file.
#[cfg(feature = "std")]
fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("FIFO");
        }
        if t.is_socket() {
            return Some("socket");
        }
        if t.is_block_device() {
            return Some("block device");
        }
        if t.is_char_device() {
            return Some("character device");
        }
    }
    Some("special file")
}

impl<'a> LsqFile<'a> {
    /// Opens a file held in memory (a buffer, or flash), without copying.
    /// Every header check of docs/FORMAT.md §7 runs before this returns.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let index = header::parse(bytes)?;
        Ok(Self { bytes: Bytes::Borrowed(bytes), index })
    }

    /// Memory-maps and opens a file. Only the pages of the preamble and
    /// header are read until a tensor is used.
    ///
    /// As with any memory map, the file must not be truncated or modified
    /// by another process while it is open.
    ///
    /// A path that is not a regular file (a directory, FIFO, socket or
    /// device) is refused with [`FormatError::NotAFile`] before anything is
    /// read from it, so opening never blocks on a FIFO. On Unix the file
    /// is also opened non-blocking and checked again, so a path swapped for
    /// a FIFO in between cannot block either.
    #[cfg(feature = "std")]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<LsqFile<'static>, FormatError> {
        let path = path.as_ref();
        let io = |what: &str, source| FormatError::Io {
            context: alloc::format!("{what} {}", path.display()),
            source,
        };
        let regular = |meta: &std::fs::Metadata| -> Result<(), FormatError> {
            match file_kind(meta) {
                None => Ok(()),
                Some(kind) => Err(FormatError::NotAFile { path: path.display().to_string(), kind }),
            }
        };
        regular(&std::fs::metadata(path).map_err(|e| io("reading metadata of", e))?)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options.open(path).map_err(|e| io("opening", e))?;
        let meta = file.metadata().map_err(|e| io("reading metadata of", e))?;
        regular(&meta)?;
        let len = meta.len();
        if len < PREAMBLE_LEN {
            return Err(FormatError::TooShort { len });
        }
        // SAFETY: the map is read-only and private to this value. The
        // documented contract is that the file is not modified while open,
        // the same contract as every memory-mapped reader (safetensors, GGUF).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io("memory-mapping", e))?;
        let index = header::parse(&map)?;
        Ok(LsqFile { bytes: Bytes::Mapped(map), index })
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Borrowed(b) => b,
            #[cfg(feature = "std")]
            Bytes::Mapped(m) => m,
        }
    }

    /// Metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.index.metadata
    }

    /// The metadata value of `key`.
    pub fn metadata_get(&self, key: &str) -> Option<&Value> {
        self.index.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every tensor entry, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.index.tensors
    }

    /// Bits stored per quantized weight, everything counted (codes,
    /// scales, tables) over every quantized tensor; `None` without one.
    /// The figure `--bpw` budgets and the README's tables report.
    pub fn quantized_bits_per_weight(&self) -> Option<f64> {
        let quantized =
            self.tensors().iter().filter(|t| matches!(t.storage, Storage::Quantized(_)));
        let (bytes, weights) = quantized
            .fold((0u64, 0u64), |(b, w), t| (b + t.stored_bytes(), w + t.element_count() as u64));
        (weights > 0).then(|| 8.0 * bytes as f64 / weights as f64)
    }

    /// The entry of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.find(name).map(|i| &self.index.tensors[i])
    }

    /// The position of tensor `name` in [`LsqFile::tensors`].
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.index.find(name)
    }

    /// A view of tensor `name`, after checking its scales and table.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, FormatError> {
        let i = self
            .index
            .find(name)
            .ok_or_else(|| FormatError::NoSuchTensor { name: name.to_string() })?;
        self.tensor_at(i)
    }

    /// A view of the `i`-th tensor, after checking its scales and table.
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'_>, FormatError> {
        let info = self
            .index
            .tensors
            .get(i)
            .ok_or_else(|| FormatError::NoSuchTensor { name: alloc::format!("#{i}") })?;
        let data = self.section(&info.data);
        Ok(match info.storage {
            Storage::Raw(dtype) => TensorView::Raw(RawView { info, dtype, bytes: data }),
            Storage::Quantized(spec) => TensorView::Quantized(QuantizedView::new(
                info,
                spec,
                data,
                self.section(&info.scales),
                self.section(&info.table),
            )?),
        })
    }

    /// The layer graph, if the file has one.
    pub fn graph(&self) -> Option<&Graph> {
        self.index.graph.as_ref()
    }

    /// Checks the CRC-32 of every data section (reads the whole file).
    pub fn verify(&self) -> Result<(), FormatError> {
        (0..self.index.tensors.len()).try_for_each(|i| self.verify_tensor_at(i))
    }

    /// Checks the CRC-32 of the data sections of tensor `i` (in file
    /// order): its codes or values, scales and table. Reads only that
    /// tensor's bytes, so a caller that uses a few tensors of a large file
    /// pays for those.
    pub fn verify_tensor_at(&self, i: usize) -> Result<(), FormatError> {
        let t = self
            .index
            .tensors
            .get(i)
            .ok_or_else(|| FormatError::NoSuchTensor { name: alloc::format!("#{i}") })?;
        for (s, kind) in [
            (t.data, SectionKind::Data),
            (t.scales, SectionKind::Scales),
            (t.table, SectionKind::Table),
        ] {
            let computed = crc32fast::hash(self.section(&s));
            if computed != s.crc32 {
                return Err(FormatError::DataChecksum {
                    tensor: t.name.clone(),
                    section: kind,
                    offset: s.offset,
                    stored: s.crc32,
                    computed,
                });
            }
        }
        Ok(())
    }

    /// The bytes of a section the header validated as in bounds.
    fn section(&self, s: &Section) -> &[u8] {
        let start = s.offset as usize;
        &self.as_bytes()[start..start + s.len as usize]
    }
}

/// A tensor's data, borrowed from the file.
// Views are made one at a time, on demand; boxing the larger variant would
// add an allocation per view for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TensorView<'f> {
    /// Values stored as they are.
    Raw(RawView<'f>),
    /// Packed codes with scales and a codebook.
    Quantized(QuantizedView<'f>),
}

impl<'f> TensorView<'f> {
    /// The header entry.
    pub fn info(&self) -> &'f TensorInfo {
        match self {
            Self::Raw(r) => r.info,
            Self::Quantized(q) => q.info,
        }
    }

    /// Writes the values as f32 into `out` (one per element): quantized
    /// tensors are decoded, raw ones converted (integers and booleans exactly
    /// where f32 can hold them).
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), FormatError> {
        match self {
            Self::Raw(r) => r.read_f32_into(out),
            Self::Quantized(q) => q.dequantize_into(out),
        }
    }

    /// The values as a new f32 vector.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, FormatError> {
        let mut out = vec![0.0; self.info().element_count()];
        self.dequantize_into(&mut out)?;
        Ok(out)
    }
}

fn check_len(info: &TensorInfo, out: &[f32]) -> Result<(), FormatError> {
    let expected = info.element_count();
    if out.len() != expected {
        return Err(FormatError::BufferSize {
            tensor: info.name.clone(),
            expected,
            got: out.len(),
        });
    }
    Ok(())
}

/// A raw tensor's bytes.
#[derive(Debug, Clone, Copy)]
pub struct RawView<'f> {
    info: &'f TensorInfo,
    dtype: RawDtype,
    bytes: &'f [u8],
}

impl<'f> RawView<'f> {
    /// The header entry.
    pub fn info(&self) -> &'f TensorInfo {
        self.info
    }

    /// The element type.
    pub fn dtype(&self) -> RawDtype {
        self.dtype
    }

    /// The stored little-endian bytes.
    pub fn bytes(&self) -> &'f [u8] {
        self.bytes
    }

    /// Converts every element to f32 into `out`.
    pub fn read_f32_into(&self, out: &mut [f32]) -> Result<(), FormatError> {
        check_len(self.info, out)?;
        let b = self.bytes;
        macro_rules! convert {
            ($n:literal, $f:expr) => {
                for (o, c) in out.iter_mut().zip(b.chunks_exact($n)) {
                    let a: [u8; $n] = c.try_into().expect("chunks_exact");
                    *o = $f(a);
                }
            };
        }
        match self.dtype {
            RawDtype::F32 => convert!(4, f32::from_le_bytes),
            RawDtype::F16 => convert!(2, |a| f16::from_le_bytes(a).to_f32()),
            RawDtype::BF16 => convert!(2, |a| bf16::from_le_bytes(a).to_f32()),
            RawDtype::F64 => convert!(8, |a| f64::from_le_bytes(a) as f32),
            RawDtype::I8 => convert!(1, |a| f32::from(i8::from_le_bytes(a))),
            RawDtype::I16 => convert!(2, |a| f32::from(i16::from_le_bytes(a))),
            RawDtype::I32 => convert!(4, |a| i32::from_le_bytes(a) as f32),
            RawDtype::I64 => convert!(8, |a| i64::from_le_bytes(a) as f32),
            RawDtype::U8 => convert!(1, |a: [u8; 1]| f32::from(a[0])),
            RawDtype::Bool => convert!(1, |a: [u8; 1]| f32::from(u8::from(a[0] != 0))),
        }
        Ok(())
    }
}

/// A quantized tensor: packed codes, scales and codebook, borrowed from the
/// file except for the codebook's tables.
#[derive(Debug)]
pub struct QuantizedView<'f> {
    info: &'f TensorInfo,
    spec: QuantSpec,
    params: CodebookParams,
    /// Only the decode table: building the encoder too would cost far more
    /// for some codebooks at C = 16, and decoding never needs it.
    decode_table: Vec<f32>,
    layout: GroupLayout,
    packed: &'f [u8],
    scales: &'f [u8],
}

impl<'f> QuantizedView<'f> {
    fn new(
        info: &'f TensorInfo,
        spec: QuantSpec,
        packed: &'f [u8],
        scales: &'f [u8],
        table: &'f [u8],
    ) -> Result<Self, FormatError> {
        let codec_error = |source| FormatError::Codec { tensor: info.name.clone(), source };
        let layout = GroupLayout::new(&info.shape_usize(), spec.scaling).map_err(codec_error)?;
        check_scales(info, spec, &layout, scales)?;
        let params = match spec.codec {
            CodecKind::Seed => CodebookParams::Seed,
            CodecKind::Log => CodebookParams::Log { mu: spec.mu },
            CodecKind::Uniform => CodebookParams::Uniform,
            CodecKind::Nf => CodebookParams::Nf,
            CodecKind::Fp => {
                CodebookParams::Fp(spec.fp_layout.expect("validated: fp has a layout"))
            }
            CodecKind::Lut => CodebookParams::Lut(read_table(info, table)?),
        };
        let decode_table = Codebook::decode_table_for(spec.width, &params).map_err(codec_error)?;
        Ok(Self { info, spec, params, decode_table, layout, packed, scales })
    }

    /// The header entry.
    pub fn info(&self) -> &'f TensorInfo {
        self.info
    }

    /// Codec, width and scaling.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    /// The codebook's parameters, as stored.
    pub fn params(&self) -> &CodebookParams {
        &self.params
    }

    /// The `2^C` values of the codes at unit scale.
    pub fn decode_table(&self) -> &[f32] {
        &self.decode_table
    }

    /// The full codebook, encoder included (built on each call: for
    /// re-encoding, not for decoding).
    pub fn codebook(&self) -> Result<Codebook, FormatError> {
        Codebook::from_params(self.spec.width, self.params.clone())
            .map_err(|source| FormatError::Codec { tensor: self.info.name.clone(), source })
    }

    /// Where the groups lie.
    pub fn layout(&self) -> &GroupLayout {
        &self.layout
    }

    /// The packed codes, as stored (LSB-first, C bits each).
    pub fn packed(&self) -> &'f [u8] {
        self.packed
    }

    /// The stored scale bytes (empty for `Scaling::Unit`).
    pub fn scale_bytes(&self) -> &'f [u8] {
        self.scales
    }

    /// The scale of group `g` (1 for `Scaling::Unit`); with two-level
    /// scales, of sub-block `g`: its super-block's scale times its
    /// sub-scale, multiplied in f32.
    pub fn scale(&self, g: usize) -> f32 {
        match self.layout.two_level() {
            None => read_scale(self.spec.scale_dtype, self.scales, g).unwrap_or(1.0),
            Some(shape) => {
                let sup = read_scale(self.spec.scale_dtype, self.scales, self.layout.super_of(g));
                let sub = self.sub_scale(g, shape.sub_bits());
                sup.unwrap_or(0.0) * f32::from(sub)
            }
        }
    }

    /// The k-bit sub-scale of sub-block `g`, packed after the super-scales.
    fn sub_scale(&self, g: usize, bits: u32) -> u16 {
        let size = self.spec.scale_dtype.map_or(0, ScaleDtype::size);
        let packed = self.scales.get(self.layout.super_count() * size..).unwrap_or_default();
        lsqr_pack::get(packed, bits, g).unwrap_or(0)
    }

    /// Two-level scales as stored: the super-scales as f32, one per
    /// super-block (row by row), and the sub-scales unpacked, one per
    /// sub-block; `None` without two-level scales. [`Self::scale`] of
    /// sub-block `g` is `sup[layout.super_of(g)] * f32::from(sub[g])`, bit
    /// for bit: kernels that read these compute the same scales from
    /// fewer bytes.
    pub fn two_level_scales(&self) -> Option<(Vec<f32>, Vec<u8>)> {
        let shape = self.layout.two_level()?;
        let sup = (0..self.layout.super_count())
            .map(|s| read_scale(self.spec.scale_dtype, self.scales, s).unwrap_or(0.0))
            .collect();
        // Sub-scales have at most 8 bits (`TwoLevel::new`).
        let sub = (0..self.layout.group_count())
            .map(|g| self.sub_scale(g, shape.sub_bits()) as u8)
            .collect();
        Some((sup, sub))
    }

    /// Every scale as f32, one per group (empty for `Scaling::Unit`).
    pub fn scales_f32(&self) -> Vec<f32> {
        if self.spec.scale_dtype.is_none() {
            return Vec::new();
        }
        (0..self.layout.group_count()).map(|g| self.scale(g)).collect()
    }

    /// Decodes every element into `out`, a group at a time, without
    /// unpacking the whole tensor first.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), FormatError> {
        check_len(self.info, out)?;
        if out.is_empty() {
            return Ok(());
        }
        let bits = self.spec.width.bits();
        let table = &self.decode_table;
        let mut codes = [0u16; 1024];
        for (g, range) in self.layout.groups().enumerate() {
            let s = self.scale(g);
            let mut start = range.start;
            while start < range.end {
                let n = (range.end - start).min(codes.len());
                lsqr_pack::unpack_from(self.packed, bits, start, &mut codes[..n]).map_err(
                    |source| FormatError::Pack { tensor: self.info.name.clone(), source },
                )?;
                for (o, &c) in out[start..start + n].iter_mut().zip(&codes[..n]) {
                    *o = table[usize::from(c)] * s;
                }
                start += n;
            }
        }
        Ok(())
    }

    /// Every code, unpacked.
    pub fn codes(&self) -> Result<Vec<u16>, FormatError> {
        let mut codes = vec![0u16; self.info.element_count()];
        lsqr_pack::unpack_into(self.packed, self.spec.width.bits(), &mut codes)
            .map_err(|source| FormatError::Pack { tensor: self.info.name.clone(), source })?;
        Ok(codes)
    }
}

fn read_scale(dtype: Option<ScaleDtype>, bytes: &[u8], g: usize) -> Option<f32> {
    match dtype? {
        ScaleDtype::F16 => {
            bytes.get(2 * g..2 * g + 2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
        }
        ScaleDtype::F32 => {
            bytes.get(4 * g..4 * g + 4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
}

/// Scales (with two-level scaling, super-scales) must be finite and >= 0
/// (FORMAT.md §5.2); every k-bit sub-scale is valid.
fn check_scales(
    info: &TensorInfo,
    spec: QuantSpec,
    layout: &GroupLayout,
    bytes: &[u8],
) -> Result<(), FormatError> {
    let Some(dtype) = spec.scale_dtype else { return Ok(()) };
    let count = match layout.two_level() {
        None => bytes.len() / dtype.size(),
        Some(_) => layout.super_count(),
    };
    let bad = (0..count).find(|&g| {
        let s = read_scale(Some(dtype), bytes, g).unwrap_or(f32::NAN);
        !(s.is_finite() && s >= 0.0)
    });
    match bad {
        None => Ok(()),
        Some(g) => Err(FormatError::InvalidScale {
            tensor: info.name.clone(),
            group: g as u64,
            offset: info.scales.offset + (g * dtype.size()) as u64,
        }),
    }
}

/// The lut table must be finite and non-decreasing (FORMAT.md §5.3).
fn read_table(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>, FormatError> {
    let table: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let bad = table
        .iter()
        .position(|v| !v.is_finite())
        .or_else(|| table.windows(2).position(|w| w[0] > w[1]).map(|i| i + 1));
    match bad {
        None => Ok(table),
        Some(i) => Err(FormatError::InvalidTable {
            tensor: info.name.clone(),
            index: i as u64,
            offset: info.table.offset + 4 * i as u64,
        }),
    }
}
