//! Errors, each naming what is wrong and where: the tensor, the section and
//! the byte offset in the file.

use alloc::string::String;
use core::fmt;

use lsqr_codec::CodecError;
use lsqr_pack::PackError;

/// The three data sections a tensor entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// Raw values, or packed codes.
    Data,
    /// Group scales.
    Scales,
    /// The `lut` codebook table.
    Table,
}

impl SectionKind {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Scales => "scales",
            Self::Table => "table",
        }
    }
}

/// What is wrong with a section descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionProblem {
    /// `offset % 64 != 0`.
    Misaligned,
    /// Overlaps the preamble or reaches past the data area (which ends where
    /// the header starts).
    OutOfBounds {
        /// Where the data area ends (the header offset).
        limit: u64,
    },
    /// The length does not match what the tensor entry implies.
    WrongLength {
        /// The length the entry implies.
        expected: u64,
    },
    /// An empty section whose offset or CRC is not zero (both must be).
    EmptyNotZero {
        /// The stored offset.
        offset: u64,
        /// The stored CRC-32.
        crc32: u32,
    },
    /// A non-zero reserved field.
    Reserved,
}

/// Everything that can go wrong reading or writing a `.lsq` file.
#[derive(Debug)]
#[non_exhaustive]
pub enum FormatError {
    /// An I/O error on a file.
    #[cfg(feature = "std")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `LsqFile::open` was given a path that is not a regular file.
    #[cfg(feature = "std")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is instead ("directory", "FIFO", ...).
        kind: &'static str,
    },
    /// Fewer bytes than the 64-byte preamble.
    TooShort {
        /// The file length.
        len: u64,
    },
    /// The first 8 bytes are not the `.lsq` magic.
    BadMagic,
    /// A version this reader does not implement.
    UnsupportedVersion {
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
    },
    /// Flags this reader does not know.
    UnknownFlags {
        /// The flags field.
        flags: u32,
    },
    /// A reserved field that is not zero.
    NonZeroReserved {
        /// Byte offset of the field.
        offset: u64,
    },
    /// The preamble's CRC does not match.
    PreambleChecksum {
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The declared file length differs from the actual one (truncated or
    /// trailing bytes).
    FileLength {
        /// `file_len` in the preamble.
        declared: u64,
        /// The actual number of bytes.
        actual: u64,
    },
    /// The header does not lie within `[64, file_len)` ending at `file_len`.
    HeaderBounds {
        /// Header offset.
        offset: u64,
        /// Header length.
        len: u64,
        /// File length.
        file_len: u64,
    },
    /// The header is larger than the cap.
    HeaderTooLarge {
        /// Header length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The header's CRC does not match.
    HeaderChecksum {
        /// CRC stored in the preamble.
        stored: u32,
        /// CRC of the header bytes.
        computed: u32,
    },
    /// The header ended in the middle of a record.
    Truncated {
        /// What was being read.
        context: String,
        /// File offset where the read started.
        offset: u64,
    },
    /// Bytes left in the header after its last record.
    TrailingHeaderBytes {
        /// File offset of the first extra byte.
        offset: u64,
        /// How many.
        count: u64,
    },
    /// A count above its cap, or larger than the bytes left could hold.
    TooMany {
        /// What is counted.
        what: &'static str,
        /// The count in the file.
        count: u64,
        /// The cap.
        max: u64,
        /// File offset of the count.
        offset: u64,
    },
    /// A string that is not UTF-8.
    InvalidUtf8 {
        /// What the string is.
        context: String,
        /// File offset of the string.
        offset: u64,
    },
    /// A name (tensor name, metadata key, op, value name or attribute key)
    /// holding U+0000, which FORMAT.md §3.1 forbids.
    NulInName {
        /// Which name, e.g. "tensor 3 name" or "metadata entry 0 key".
        context: String,
        /// File offset of the NUL byte.
        offset: u64,
    },
    /// A name that is empty or longer than 4096 bytes.
    InvalidName {
        /// What the name is.
        context: String,
        /// File offset of the name.
        offset: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// The same name twice where names must be unique.
    DuplicateName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A field with a value the format does not allow.
    InvalidField {
        /// The tensor (or other record) it belongs to.
        context: String,
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// File offset of the field.
        offset: u64,
    },
    /// The element count of a shape overflows.
    ShapeOverflow {
        /// The tensor.
        tensor: String,
    },
    /// A bad section descriptor.
    Section {
        /// The tensor.
        tensor: String,
        /// Which section.
        section: SectionKind,
        /// Section offset.
        offset: u64,
        /// Section length.
        len: u64,
        /// What is wrong.
        problem: SectionProblem,
    },
    /// Two sections share bytes.
    SectionOverlap {
        /// The earlier section's tensor and kind.
        first: (String, SectionKind),
        /// The later section's tensor and kind.
        second: (String, SectionKind),
        /// Where the second starts (inside the first).
        offset: u64,
    },
    /// A section's CRC does not match (found by `verify`).
    DataChecksum {
        /// The tensor.
        tensor: String,
        /// Which section.
        section: SectionKind,
        /// Section offset.
        offset: u64,
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A scale that is negative, NaN or infinite.
    InvalidScale {
        /// The tensor.
        tensor: String,
        /// Group index.
        group: u64,
        /// File offset of the scale.
        offset: u64,
    },
    /// A `lut` table entry that is not finite, or less than the one before.
    InvalidTable {
        /// The tensor.
        tensor: String,
        /// Entry index.
        index: u64,
        /// File offset of the entry.
        offset: u64,
    },
    /// A graph layer names an op that is not defined.
    UnknownOp {
        /// Layer index.
        layer: usize,
        /// The op.
        op: String,
    },
    /// A graph layer names a weight that is not a tensor of the file.
    UnknownWeight {
        /// Layer index.
        layer: usize,
        /// The tensor name.
        tensor: String,
    },
    /// A layer input that is neither a graph input nor an earlier output.
    UndefinedValue {
        /// Layer index.
        layer: usize,
        /// The value name.
        value: String,
    },
    /// A value produced twice (or a graph input produced by a layer).
    DuplicateValue {
        /// The value name.
        value: String,
    },
    /// A graph output that no layer produces.
    MissingOutput {
        /// The value name.
        value: String,
    },
    /// No tensor of that name.
    NoSuchTensor {
        /// The name asked for.
        name: String,
    },
    /// A codec-level error in a tensor.
    Codec {
        /// The tensor.
        tensor: String,
        /// The underlying error.
        source: CodecError,
    },
    /// A packing error in a tensor.
    Pack {
        /// The tensor.
        tensor: String,
        /// The underlying error.
        source: PackError,
    },
    /// The caller asked for something the format cannot hold (writer side).
    Invalid {
        /// What and why.
        message: String,
    },
    /// A caller buffer of the wrong size.
    BufferSize {
        /// The tensor.
        tensor: String,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match self {
            #[cfg(feature = "std")]
            Io { context, source } => write!(f, "{context}: {source}"),
            #[cfg(feature = "std")]
            NotAFile { path, kind } => {
                write!(f, "{path} is a {kind}, not a regular file; .lsq files are read only from regular files")
            }
            TooShort { len } => write!(f, "file is {len} bytes, shorter than the 64-byte preamble"),
            BadMagic => f.write_str("not an .lsq file (bad magic at offset 0x0)"),
            UnsupportedVersion { major, minor } => {
                write!(f, "unsupported .lsq version {major}.{minor} (this reader reads 1.0 to 1.2)")
            }
            UnknownFlags { flags } => write!(f, "unknown feature flags {flags:#x} at offset 0xc"),
            NonZeroReserved { offset } => write!(f, "reserved field at {offset:#x} is not zero"),
            PreambleChecksum { stored, computed } => {
                write!(f, "preamble CRC mismatch at 0x2c: stored {stored:#010x}, computed {computed:#010x}")
            }
            FileLength { declared, actual } => write!(
                f,
                "file length is {actual:#x} but the preamble declares {declared:#x} (truncated or extra bytes)"
            ),
            HeaderBounds { offset, len, file_len } => write!(
                f,
                "header at {offset:#x} + {len} does not end the file of length {file_len:#x}"
            ),
            HeaderTooLarge { len, max } => write!(f, "header of {len} bytes exceeds the cap of {max}"),
            HeaderChecksum { stored, computed } => {
                write!(f, "header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            Truncated { context, offset } => write!(f, "header ends inside {context} at {offset:#x}"),
            TrailingHeaderBytes { offset, count } => {
                write!(f, "{count} unexpected bytes after the last header record at {offset:#x}")
            }
            TooMany { what, count, max, offset } => {
                write!(f, "{what} count {count} at {offset:#x} exceeds {max}")
            }
            InvalidUtf8 { context, offset } => write!(f, "{context} at {offset:#x} is not valid UTF-8"),
            NulInName { context, offset } => write!(
                f,
                "{context} contains a NUL byte (U+0000) at {offset:#x}; names must not"
            ),
            InvalidName { context, offset, len } => {
                write!(f, "{context} at {offset:#x} has length {len}; names must be 1..=4096 bytes")
            }
            DuplicateName { what, name } => write!(f, "duplicate {what} '{name}'"),
            InvalidField { context, field, value, offset } => {
                write!(f, "{context}: invalid {field} {value} at {offset:#x}")
            }
            ShapeOverflow { tensor } => write!(f, "tensor '{tensor}': element count overflows"),
            Section { tensor, section, offset, len, problem } => {
                let s = section.name();
                write!(f, "tensor '{tensor}': {s} section at {offset:#x} + {len} ")?;
                match problem {
                    SectionProblem::Misaligned => f.write_str("is not 64-byte aligned"),
                    SectionProblem::OutOfBounds { limit } => {
                        write!(f, "lies outside the data area [0x40, {limit:#x})")
                    }
                    SectionProblem::WrongLength { expected } => {
                        write!(f, "has the wrong length (expected {expected})")
                    }
                    SectionProblem::EmptyNotZero { offset, crc32 } => {
                        f.write_str("is empty but has ")?;
                        match (*offset != 0, *crc32 != 0) {
                            (true, true) => write!(f, "a non-zero offset and CRC {crc32:#010x}")?,
                            (true, false) => f.write_str("a non-zero offset")?,
                            _ => write!(f, "a non-zero CRC {crc32:#010x}")?,
                        }
                        f.write_str(" (an empty section's offset and CRC must be 0)")
                    }
                    SectionProblem::Reserved => f.write_str("has a non-zero reserved field"),
                }
            }
            SectionOverlap { first, second, offset } => write!(
                f,
                "tensor '{}': {} section at {offset:#x} overlaps tensor '{}': {} section",
                second.0,
                second.1.name(),
                first.0,
                first.1.name()
            ),
            DataChecksum { tensor, section, offset, stored, computed } => write!(
                f,
                "tensor '{tensor}': {} section at {offset:#x}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})",
                section.name()
            ),
            InvalidScale { tensor, group, offset } => write!(
                f,
                "tensor '{tensor}': scale of group {group} at {offset:#x} is negative or not finite"
            ),
            InvalidTable { tensor, index, offset } => write!(
                f,
                "tensor '{tensor}': lut entry {index} at {offset:#x} is not finite or is less than the entry before"
            ),
            UnknownOp { layer, op } => write!(f, "graph layer {layer}: unknown op '{op}'"),
            UnknownWeight { layer, tensor } => {
                write!(f, "graph layer {layer}: weight '{tensor}' is not a tensor of the file")
            }
            UndefinedValue { layer, value } => write!(
                f,
                "graph layer {layer}: input '{value}' is neither a graph input nor an earlier output"
            ),
            DuplicateValue { value } => write!(f, "graph value '{value}' is produced twice"),
            MissingOutput { value } => write!(f, "graph output '{value}' is never produced"),
            NoSuchTensor { name } => write!(f, "no tensor named '{name}'"),
            Codec { tensor, source } => write!(f, "tensor '{tensor}': {source}"),
            Pack { tensor, source } => write!(f, "tensor '{tensor}': {source}"),
            Invalid { message } => f.write_str(message),
            BufferSize { tensor, expected, got } => {
                write!(f, "tensor '{tensor}': buffer holds {got} elements, {expected} needed")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Codec { source, .. } => Some(source),
            Self::Pack { source, .. } => Some(source),
            _ => None,
        }
    }
}
