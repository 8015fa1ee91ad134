//! A minimal reader of the protobuf wire format, enough for ONNX.
//!
//! A message is a sequence of fields, each a varint key (`number << 3 |
//! wire_type`) and a value: a varint (0), 8 little-endian bytes (1), a
//! length-prefixed byte string (2: strings, bytes, sub-messages, packed
//! repeated scalars) or 4 little-endian bytes (5). Groups (3, 4) are
//! obsolete and rejected. The reader is iterative and zero-copy: byte
//! strings borrow from the input and carry their absolute offset in it, so a
//! caller can refer to them in the memory map. Every read is bounds-checked;
//! malformed input is an error, never a panic. Nesting is up to the caller,
//! which decides how deep it follows sub-messages.

use std::fmt;

/// Why bytes are not a valid protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Absolute byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for DecodeError {}

fn error(offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError { offset, message: message.into() }
}

/// A field's value, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2, with the absolute offset of its first byte.
    Bytes { data: &'a [u8], offset: usize },
    /// Wire type 5.
    Fixed32(u32),
}

impl Value<'_> {
    fn wire_name(&self) -> &'static str {
        match self {
            Value::Varint(_) => "varint",
            Value::Fixed64(_) => "fixed64",
            Value::Bytes { .. } => "length-delimited",
            Value::Fixed32(_) => "fixed32",
        }
    }
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// Its value.
    pub value: Value<'a>,
    /// Absolute offset of the field's key.
    pub offset: usize,
}

impl<'a> Field<'a> {
    fn wrong_type(&self, expected: &str) -> DecodeError {
        error(
            self.offset,
            format!("field {} is {}, expected {expected}", self.number, self.value.wire_name()),
        )
    }

    /// A varint (int32, int64, uint64, enum, bool).
    pub fn varint(&self) -> Result<u64, DecodeError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.wrong_type("varint")),
        }
    }

    /// A fixed32 (float).
    pub fn fixed32(&self) -> Result<u32, DecodeError> {
        match self.value {
            Value::Fixed32(v) => Ok(v),
            _ => Err(self.wrong_type("fixed32")),
        }
    }

    /// A byte string and the absolute offset of its first byte.
    pub fn bytes(&self) -> Result<(&'a [u8], usize), DecodeError> {
        match self.value {
            Value::Bytes { data, offset } => Ok((data, offset)),
            _ => Err(self.wrong_type("length-delimited")),
        }
    }

    /// A UTF-8 string.
    pub fn string(&self) -> Result<&'a str, DecodeError> {
        let (data, offset) = self.bytes()?;
        std::str::from_utf8(data)
            .map_err(|_| error(offset, format!("field {} is not valid UTF-8", self.number)))
    }

    /// An embedded message.
    pub fn message(&self) -> Result<Message<'a>, DecodeError> {
        let (data, offset) = self.bytes()?;
        Ok(Message::new(data, offset))
    }

    /// Appends a repeated varint field's values, packed or not.
    pub fn varints(&self, out: &mut Vec<u64>) -> Result<(), DecodeError> {
        match self.value {
            Value::Varint(v) => out.push(v),
            Value::Bytes { data, offset } => {
                let mut pos = 0;
                while pos < data.len() {
                    let (v, next) = read_varint(data, pos)
                        .ok_or_else(|| error(offset + pos, "bad packed varint"))?;
                    out.push(v);
                    pos = next;
                }
            }
            _ => return Err(self.wrong_type("varint or packed varints")),
        }
        Ok(())
    }

    /// Appends a repeated fixed32 field's values, packed or not.
    pub fn fixed32s(&self, out: &mut Vec<u32>) -> Result<(), DecodeError> {
        match self.value {
            Value::Fixed32(v) => out.push(v),
            Value::Bytes { data, offset } => {
                if data.len() % 4 != 0 {
                    return Err(error(
                        offset,
                        format!(
                            "packed fixed32 field {} is {} bytes long",
                            self.number,
                            data.len()
                        ),
                    ));
                }
                out.extend(
                    data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            _ => return Err(self.wrong_type("fixed32 or packed fixed32")),
        }
        Ok(())
    }

    /// Appends a repeated fixed64 field's values, packed or not.
    pub fn fixed64s(&self, out: &mut Vec<u64>) -> Result<(), DecodeError> {
        match self.value {
            Value::Fixed64(v) => out.push(v),
            Value::Bytes { data, offset } => {
                if data.len() % 8 != 0 {
                    return Err(error(
                        offset,
                        format!(
                            "packed fixed64 field {} is {} bytes long",
                            self.number,
                            data.len()
                        ),
                    ));
                }
                out.extend(data.chunks_exact(8).map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_le_bytes(b)
                }));
            }
            _ => return Err(self.wrong_type("fixed64 or packed fixed64")),
        }
        Ok(())
    }
}

/// A message: bytes and where they start in the file.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    bytes: &'a [u8],
    base: usize,
}

impl<'a> Message<'a> {
    /// The message in `bytes`, which start at absolute offset `base`.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Self { bytes, base }
    }

    /// Its fields, in order.
    pub fn fields(&self) -> Fields<'a> {
        Fields { bytes: self.bytes, base: self.base, pos: 0, failed: false }
    }
}

/// Iterator over a message's fields; stops after the first error.
pub struct Fields<'a> {
    bytes: &'a [u8],
    base: usize,
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Result<Field<'a>, DecodeError> {
        let start = self.pos;
        let at = self.base.saturating_add(start);
        let (key, pos) = read_varint(self.bytes, start)
            .ok_or_else(|| error(at, "truncated or overlong field key"))?;
        let number = u32::try_from(key >> 3).map_err(|_| error(at, "field number out of range"))?;
        if number == 0 {
            return Err(error(at, "field number 0"));
        }
        let (value, end) = match key & 7 {
            0 => {
                let (v, end) =
                    read_varint(self.bytes, pos).ok_or_else(|| error(at, "truncated varint"))?;
                (Value::Varint(v), end)
            }
            1 => {
                let b =
                    self.bytes.get(pos..pos + 8).ok_or_else(|| error(at, "truncated fixed64"))?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (Value::Fixed64(u64::from_le_bytes(a)), pos + 8)
            }
            2 => {
                let (len, data_start) =
                    read_varint(self.bytes, pos).ok_or_else(|| error(at, "truncated length"))?;
                let data_end = usize::try_from(len)
                    .ok()
                    .and_then(|len| data_start.checked_add(len))
                    .filter(|&end| end <= self.bytes.len())
                    .ok_or_else(|| {
                        error(
                            at,
                            format!(
                                "field {number} claims {len} bytes, but the message ends before"
                            ),
                        )
                    })?;
                let data = &self.bytes[data_start..data_end];
                (Value::Bytes { data, offset: self.base.saturating_add(data_start) }, data_end)
            }
            5 => {
                let b =
                    self.bytes.get(pos..pos + 4).ok_or_else(|| error(at, "truncated fixed32"))?;
                (Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]])), pos + 4)
            }
            w => return Err(error(at, format!("field {number} has unsupported wire type {w}"))),
        };
        self.pos = end;
        Ok(Field { number, value, offset: at })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// Reads a varint at `pos`: its value and the position after it; `None` if
/// truncated or longer than 10 bytes.
pub fn read_varint(bytes: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *bytes.get(pos.checked_add(i)?)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, pos + i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(read_varint(&[0x01], 0), Some((1, 1)));
        assert_eq!(read_varint(&[0xac, 0x02], 0), Some((300, 2)));
        assert_eq!(
            read_varint(&[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>(), 0),
            Some((u64::MAX, 10))
        );
        assert_eq!(read_varint(&[0x80], 0), None, "truncated");
        assert_eq!(read_varint(&[0x80; 11], 0), None, "too long");
    }

    #[test]
    fn fields_and_offsets() {
        // 1: varint 150; 2: "hi"; 3: fixed32 1.0; 4: packed [1, 300]; 5: fixed64 7.
        let bytes = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1d, 0, 0, 0x80, 0x3f, 0x22, 0x03, 0x01,
            0xac, 0x02, 0x29, 7, 0, 0, 0, 0, 0, 0, 0,
        ];
        let fields: Vec<Field> =
            Message::new(&bytes, 100).fields().collect::<Result<_, _>>().unwrap();
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[0].varint().unwrap(), 150);
        assert_eq!(fields[1].bytes().unwrap(), (&b"hi"[..], 105));
        assert_eq!(fields[1].string().unwrap(), "hi");
        assert_eq!(f32::from_bits(fields[2].fixed32().unwrap()), 1.0);
        let mut v = Vec::new();
        fields[3].varints(&mut v).unwrap();
        fields[0].varints(&mut v).unwrap();
        assert_eq!(v, [1, 300, 150]);
        let mut w = Vec::new();
        fields[4].fixed64s(&mut w).unwrap();
        assert_eq!(w, [7]);
        assert!(fields[0].bytes().is_err(), "wrong wire type");
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [&[0x12, 0x05, b'a'][..], &[0x08], &[0x0b], &[0x00, 0x01], &[0x1d, 0, 0]] {
            let r: Result<Vec<_>, _> = Message::new(bad, 0).fields().collect();
            assert!(r.is_err(), "{bad:?}");
        }
    }
}
