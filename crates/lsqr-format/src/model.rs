//! What a header describes: metadata values, tensor entries, sections and
//! the layer graph. These types are shared by the reader and the writer.

use alloc::string::String;
use alloc::vec::Vec;

use lsqr_codec::{CodeWidth, CodecKind, FpLayout, ScaleDtype, Scaling};

/// The preamble's magic: `\x89LSQ\r\n\x1a\n`.
pub const MAGIC: [u8; 8] = [0x89, b'L', b'S', b'Q', b'\r', b'\n', 0x1a, b'\n'];
/// The version this crate reads and writes.
pub const VERSION: (u16, u16) = (1, 2);
/// Size of the preamble, and the alignment of every data section.
pub const PREAMBLE_LEN: u64 = 64;
/// Alignment of every data section.
pub const ALIGN: u64 = 64;
/// Cap on the header's size.
pub const MAX_HEADER_LEN: u64 = 64 << 20;
/// Cap on the number of tensors.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Cap on the number of metadata entries.
pub const MAX_METADATA: u64 = 1 << 16;
/// Cap on the number of graph layers.
pub const MAX_LAYERS: u64 = 1 << 20;
/// Cap on a tensor's rank.
pub const MAX_DIMS: usize = 8;
/// Cap on a name's length in bytes.
pub const MAX_NAME_LEN: u64 = 4096;

/// A typed metadata or attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// UTF-8 text.
    String(String),
    /// Signed 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// List of integers (shapes, strides, paddings).
    IntList(Vec<i64>),
    /// List of floats.
    FloatList(Vec<f64>),
}

impl Value {
    pub(crate) fn type_code(&self) -> u8 {
        match self {
            Value::String(_) => 0,
            Value::Int(_) => 1,
            Value::Float(_) => 2,
            Value::Bool(_) => 3,
            Value::IntList(_) => 4,
            Value::FloatList(_) => 5,
        }
    }
}

/// Element types of raw tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE binary64.
    F64,
    /// Signed 8-bit.
    I8,
    /// Signed 16-bit.
    I16,
    /// Signed 32-bit.
    I32,
    /// Signed 64-bit.
    I64,
    /// Unsigned 8-bit.
    U8,
    /// Boolean, one byte, 0 or 1.
    Bool,
}

impl RawDtype {
    /// Every dtype, in code order.
    pub const ALL: [RawDtype; 10] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::F64,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::U8,
        Self::Bool,
    ];

    /// The dtype code in the file.
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|&d| d == self).expect("in ALL") as u8
    }

    /// The dtype of a code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 | Self::Bool => 1,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }

    /// Lower-case name (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F64 => "f64",
            Self::I8 => "i8",
            Self::I16 => "i16",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::U8 => "u8",
            Self::Bool => "bool",
        }
    }

    /// Whether values are floating point.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64)
    }
}

/// Codec codes in the file.
pub(crate) fn codec_code(kind: CodecKind) -> u8 {
    match kind {
        CodecKind::Seed => 0,
        CodecKind::Log => 1,
        CodecKind::Uniform => 2,
        CodecKind::Nf => 3,
        CodecKind::Fp => 4,
        CodecKind::Lut => 5,
    }
}

pub(crate) fn codec_from_code(code: u8) -> Option<CodecKind> {
    CodecKind::ALL.into_iter().find(|&k| codec_code(k) == code)
}

/// A byte range of the file with its CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Section {
    /// Absolute offset (a multiple of 64 unless empty).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 of the bytes (0 when empty).
    pub crc32: u32,
}

impl Section {
    /// The empty section.
    pub const EMPTY: Section = Section { offset: 0, len: 0, crc32: 0 };
}

/// How a quantized tensor is encoded: everything but the bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantSpec {
    /// Codebook family.
    pub codec: CodecKind,
    /// Code width C.
    pub width: CodeWidth,
    /// How scales are shared.
    pub scaling: Scaling,
    /// Storage type of scales (`None` with `Scaling::Unit`).
    pub scale_dtype: Option<ScaleDtype>,
    /// Minifloat layout, for `fp`.
    pub fp_layout: Option<FpLayout>,
    /// μ, for `log` (0 otherwise).
    pub mu: f32,
}

/// Raw values or quantized codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Storage {
    /// Values stored as they are.
    Raw(RawDtype),
    /// Packed codes with scales.
    Quantized(QuantSpec),
}

/// One tensor entry of the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Unique name.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<u64>,
    /// Raw or quantized, and how.
    pub storage: Storage,
    /// Values or packed codes.
    pub data: Section,
    /// Group scales (quantized with a scale only).
    pub scales: Section,
    /// The `lut` table (lut only).
    pub table: Section,
}

impl TensorInfo {
    /// Number of elements (the reader has checked it fits `usize`).
    pub fn element_count(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// Shape as `usize` (the reader has checked every dim fits).
    pub fn shape_usize(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| d as usize).collect()
    }

    /// Bytes of all its sections.
    pub fn stored_bytes(&self) -> u64 {
        self.data.len + self.scales.len + self.table.len
    }
}

/// One layer of the graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layer {
    /// The op's name (the runtime that executes the graph defines it).
    pub op: String,
    /// Value names read.
    pub inputs: Vec<String>,
    /// Value names written.
    pub outputs: Vec<String>,
    /// Weight tensor names, in the op's order.
    pub weights: Vec<String>,
    /// Attributes (unique keys).
    pub attrs: Vec<(String, Value)>,
}

impl Layer {
    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// An ordered list of layers over named values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    /// Values supplied by the caller.
    pub inputs: Vec<String>,
    /// Values returned to the caller.
    pub outputs: Vec<String>,
    /// The layers, in execution order.
    pub layers: Vec<Layer>,
}

/// The ops a version 1.0 file may name (FORMAT.md §6). From 1.1 on the
/// container records any op name and the runtime decides what it runs;
/// writers mark a file 1.1 only when it names an op outside this list.
pub const OPS_1_0: &[&str] = &[
    "linear",
    "conv1d",
    "conv2d",
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "gelu",
    "gelu_tanh",
    "silu",
    "hardsigmoid",
    "hardswish",
    "softmax",
    "layer_norm",
    "batch_norm",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "add",
    "mul",
    "matmul",
    "flatten",
    "reshape",
];
