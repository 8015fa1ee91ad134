//! The preamble and header, in both directions: `encode_*` for the writer,
//! `parse` for the reader. docs/FORMAT.md is the contract; each function
//! names the section it implements.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use lsqr_codec::{CodeWidth, CodecKind, FpLayout, GroupLayout, ScaleDtype, Scaling, TwoLevel};

use crate::error::{FormatError, SectionKind, SectionProblem};
use crate::model::*;

// ---------------------------------------------------------------- encoding

/// The 64-byte preamble (FORMAT.md §2).
/// `minor` is the minor version the file needs (1 when its graph names an
/// op outside the 1.0 list, FORMAT.md §9).
pub fn encode_preamble(
    minor: u16,
    header_offset: u64,
    header_len: u64,
    header_crc: u32,
) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[..8].copy_from_slice(&MAGIC);
    p[8..10].copy_from_slice(&VERSION.0.to_le_bytes());
    p[10..12].copy_from_slice(&minor.to_le_bytes());
    p[16..24].copy_from_slice(&header_offset.to_le_bytes());
    p[24..32].copy_from_slice(&header_len.to_le_bytes());
    p[32..40].copy_from_slice(&(header_offset + header_len).to_le_bytes());
    p[40..44].copy_from_slice(&header_crc.to_le_bytes());
    let crc = crc32fast::hash(&p[..44]);
    p[44..48].copy_from_slice(&crc.to_le_bytes());
    p
}

/// The header bytes (FORMAT.md §3).
pub fn encode_header(
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
    graph: Option<&Graph>,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, metadata.len() as u32);
    put_u32(&mut out, tensors.len() as u32);
    out.extend_from_slice(&[u8::from(graph.is_some()), 0, 0, 0]);
    for (key, value) in metadata {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    for t in tensors {
        encode_tensor(&mut out, t);
    }
    if let Some(g) = graph {
        put_strs(&mut out, &g.inputs);
        put_strs(&mut out, &g.outputs);
        put_u32(&mut out, g.layers.len() as u32);
        for layer in &g.layers {
            put_str(&mut out, &layer.op);
            put_strs(&mut out, &layer.inputs);
            put_strs(&mut out, &layer.outputs);
            put_strs(&mut out, &layer.weights);
            put_u32(&mut out, layer.attrs.len() as u32);
            for (k, v) in &layer.attrs {
                put_str(&mut out, k);
                put_value(&mut out, v);
            }
        }
    }
    out
}

/// One tensor entry (FORMAT.md §3.4).
fn encode_tensor(out: &mut Vec<u8>, t: &TensorInfo) {
    put_str(out, &t.name);
    let mut fields = [0u8; 8];
    let (mut group, mut mu) = (0u32, 0.0f32);
    fields[1] = t.shape.len() as u8;
    match t.storage {
        Storage::Raw(dtype) => fields[2] = dtype.code(),
        Storage::Quantized(q) => {
            fields[0] = 1;
            fields[2] = codec_code(q.codec);
            fields[3] = q.width.bits() as u8;
            fields[4] = match q.scaling {
                Scaling::Unit => 0,
                Scaling::Tensor => 1,
                Scaling::Row => 2,
                Scaling::Group(g) => {
                    group = g as u32;
                    3
                }
                Scaling::TwoLevel(t) => {
                    group = two_level_field(t);
                    4
                }
            };
            fields[5] = match q.scale_dtype {
                None => 0,
                Some(ScaleDtype::F16) => 1,
                Some(ScaleDtype::F32) => 2,
            };
            if let Some(fp) = q.fp_layout {
                fields[6] = fp.exp_bits() as u8;
                fields[7] = fp.man_bits() as u8;
            }
            mu = q.mu;
        }
    }
    out.extend_from_slice(&fields);
    put_u32(out, group);
    out.extend_from_slice(&mu.to_le_bytes());
    for &d in &t.shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
    for s in [t.data, t.scales, t.table] {
        out.extend_from_slice(&s.offset.to_le_bytes());
        out.extend_from_slice(&s.len.to_le_bytes());
        put_u32(out, s.crc32);
        put_u32(out, 0);
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, list: &[String]) {
    put_u32(out, list.len() as u32);
    for s in list {
        put_str(out, s);
    }
}

/// A typed value (FORMAT.md §3.2).
fn put_value(out: &mut Vec<u8>, v: &Value) {
    out.push(v.type_code());
    match v {
        Value::String(s) => put_str(out, s),
        Value::Int(i) => out.extend_from_slice(&i.to_le_bytes()),
        Value::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::IntList(l) => {
            put_u32(out, l.len() as u32);
            l.iter().for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
        }
        Value::FloatList(l) => {
            put_u32(out, l.len() as u32);
            l.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
        }
    }
}

// ----------------------------------------------------------------- parsing

/// Everything the header says, validated.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    pub(crate) metadata: Vec<(String, Value)>,
    pub(crate) tensors: Vec<TensorInfo>,
    /// Tensor indices sorted by name, for lookup.
    pub(crate) by_name: Vec<usize>,
    pub(crate) graph: Option<Graph>,
}

impl Index {
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| self.tensors[i].name.as_str().cmp(name))
            .ok()
            .map(|k| self.by_name[k])
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The lowest minor version that describes a file with these tensors and
/// this graph (FORMAT.md §9): 1.2 if a tensor has two-level scales, 1.1 if
/// the graph names an op outside the 1.0 list, else 1.0, so that files older
/// readers can read keep saying so.
#[cfg(feature = "std")]
pub fn minor_version_for(tensors: &[TensorInfo], graph: Option<&Graph>) -> u16 {
    let new_op = |g: &Graph| g.layers.iter().any(|l| !OPS_1_0.contains(&l.op.as_str()));
    if tensors.iter().any(has_two_level_scales) {
        2
    } else if graph.is_some_and(new_op) {
        1
    } else {
        0
    }
}

#[cfg(feature = "std")]
fn has_two_level_scales(t: &TensorInfo) -> bool {
    matches!(t.storage, Storage::Quantized(q) if matches!(q.scaling, Scaling::TwoLevel(_)))
}

/// The `group_size` field of two-level scaling (FORMAT.md §5.2): the bytes
/// log2(super-block), log2(sub-block), sub-scale bits, 0.
fn two_level_field(t: TwoLevel) -> u32 {
    t.super_len().trailing_zeros() | t.sub_len().trailing_zeros() << 8 | t.sub_bits() << 16
}

/// Parses [`two_level_field`]; `None` for any shape `TwoLevel::new` refuses
/// or a non-zero last byte.
fn two_level_from_field(field: u32) -> Option<TwoLevel> {
    let [super_log2, sub_log2, bits, zero] = field.to_le_bytes();
    if zero != 0 || super_log2 > 12 || sub_log2 > 12 {
        return None;
    }
    TwoLevel::new(1 << super_log2, 1 << sub_log2, u32::from(bits)).ok()
}

/// Checks the preamble and returns the header's bytes, its offset and the
/// file's minor version (FORMAT.md §2).
fn parse_preamble(bytes: &[u8]) -> Result<(&[u8], u64, u16), FormatError> {
    let actual = bytes.len() as u64;
    if actual < PREAMBLE_LEN {
        return Err(FormatError::TooShort { len: actual });
    }
    if bytes[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let (major, minor) = (le_u16(bytes, 8), le_u16(bytes, 10));
    if major != VERSION.0 || minor > VERSION.1 {
        return Err(FormatError::UnsupportedVersion { major, minor });
    }
    let stored = le_u32(bytes, 44);
    let computed = crc32fast::hash(&bytes[..44]);
    if stored != computed {
        return Err(FormatError::PreambleChecksum { stored, computed });
    }
    let flags = le_u32(bytes, 12);
    if flags != 0 {
        return Err(FormatError::UnknownFlags { flags });
    }
    if let Some(i) = bytes[48..64].iter().position(|&b| b != 0) {
        return Err(FormatError::NonZeroReserved { offset: 48 + i as u64 });
    }
    let (offset, len, declared) = (le_u64(bytes, 16), le_u64(bytes, 24), le_u64(bytes, 32));
    if declared != actual {
        return Err(FormatError::FileLength { declared, actual });
    }
    if len > MAX_HEADER_LEN {
        return Err(FormatError::HeaderTooLarge { len, max: MAX_HEADER_LEN });
    }
    if offset < PREAMBLE_LEN || offset.checked_add(len) != Some(actual) {
        return Err(FormatError::HeaderBounds { offset, len, file_len: actual });
    }
    let header = &bytes[offset as usize..];
    let stored = le_u32(bytes, 40);
    let computed = crc32fast::hash(header);
    if stored != computed {
        return Err(FormatError::HeaderChecksum { stored, computed });
    }
    Ok((header, offset, minor))
}

/// Reads header records, tracking the file offset for messages.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, context: &dyn Fn() -> String) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::Truncated { context: context(), offset: self.offset() });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(
        &mut self,
        context: &dyn Fn() -> String,
    ) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, context)?);
        Ok(a)
    }

    fn u8(&mut self, context: &dyn Fn() -> String) -> Result<u8, FormatError> {
        Ok(self.array::<1>(context)?[0])
    }

    fn u32(&mut self, context: &dyn Fn() -> String) -> Result<u32, FormatError> {
        self.array(context).map(u32::from_le_bytes)
    }

    fn u64(&mut self, context: &dyn Fn() -> String) -> Result<u64, FormatError> {
        self.array(context).map(u64::from_le_bytes)
    }

    /// A count of records, each at least `min_size` bytes: capped, and
    /// checked against the bytes left so a tiny header cannot ask for a
    /// huge allocation.
    fn count(&mut self, what: &'static str, max: u64, min_size: u64) -> Result<usize, FormatError> {
        let offset = self.offset();
        let count = u64::from(self.u32(&|| what.to_string())?);
        let fits = count.checked_mul(min_size).is_some_and(|need| need <= self.remaining());
        if count > max || !fits {
            return Err(FormatError::TooMany { what, count, max, offset });
        }
        Ok(count as usize)
    }

    fn string(&mut self, context: &dyn Fn() -> String) -> Result<String, FormatError> {
        let offset = self.offset();
        let len = u64::from(self.u32(context)?);
        let bytes = self.take(len, context)?;
        core::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| FormatError::InvalidUtf8 { context: context(), offset })
    }

    /// A name (FORMAT.md §3.1): 1..=4096 bytes of UTF-8 without U+0000.
    fn name(&mut self, context: &dyn Fn() -> String) -> Result<String, FormatError> {
        let offset = self.offset();
        let s = self.string(context)?;
        if s.is_empty() || s.len() as u64 > MAX_NAME_LEN {
            return Err(FormatError::InvalidName {
                context: context(),
                offset,
                len: s.len() as u64,
            });
        }
        if let Some(i) = s.bytes().position(|b| b == 0) {
            // The name's bytes start after its u32 length.
            return Err(FormatError::NulInName {
                context: context(),
                offset: offset + 4 + i as u64,
            });
        }
        Ok(s)
    }

    fn names(
        &mut self,
        what: &'static str,
        context: &dyn Fn() -> String,
    ) -> Result<Vec<String>, FormatError> {
        let n = self.count(what, MAX_LAYERS, 5)?;
        (0..n).map(|_| self.name(context)).collect()
    }

    /// A typed value (FORMAT.md §3.2).
    fn value(&mut self, context: &dyn Fn() -> String) -> Result<Value, FormatError> {
        let offset = self.offset();
        let code = self.u8(context)?;
        Ok(match code {
            0 => Value::String(self.string(context)?),
            1 => Value::Int(self.array(context).map(i64::from_le_bytes)?),
            2 => Value::Float(self.array(context).map(f64::from_le_bytes)?),
            3 => match self.u8(context)? {
                b @ (0 | 1) => Value::Bool(b == 1),
                b => {
                    return Err(FormatError::InvalidField {
                        context: context(),
                        field: "bool value",
                        value: u64::from(b),
                        offset: offset + 1,
                    })
                }
            },
            4 => {
                let n = self.count("int list", u64::MAX, 8)?;
                Value::IntList(
                    (0..n)
                        .map(|_| self.array(context).map(i64::from_le_bytes))
                        .collect::<Result<_, _>>()?,
                )
            }
            5 => {
                let n = self.count("float list", u64::MAX, 8)?;
                Value::FloatList(
                    (0..n)
                        .map(|_| self.array(context).map(f64::from_le_bytes))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => {
                return Err(FormatError::InvalidField {
                    context: context(),
                    field: "value type",
                    value: u64::from(code),
                    offset,
                })
            }
        })
    }
}

/// Parses and validates preamble and header; reads no tensor data.
pub(crate) fn parse(bytes: &[u8]) -> Result<Index, FormatError> {
    let (header, header_offset, minor) = parse_preamble(bytes)?;
    let mut cur = Cursor { buf: header, pos: 0, base: header_offset };
    let ctx = || "header counts".to_string();
    let metadata_count = cur.count("metadata", MAX_METADATA, 6)?;
    let tensor_count = cur.count("tensor", MAX_TENSORS, 5 + 16 + 72)?;
    let flags_at = cur.offset();
    let [has_graph, r0, r1, r2] = cur.array::<4>(&ctx)?;
    if has_graph > 1 {
        return Err(FormatError::InvalidField {
            context: "header".into(),
            field: "has_graph",
            value: u64::from(has_graph),
            offset: flags_at,
        });
    }
    if let Some(i) = [r0, r1, r2].iter().position(|&b| b != 0) {
        return Err(FormatError::NonZeroReserved { offset: flags_at + 1 + i as u64 });
    }

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(metadata_count);
    for i in 0..metadata_count {
        let key = cur.name(&|| format!("metadata entry {i} key"))?;
        let value = cur.value(&|| format!("metadata '{key}'"))?;
        metadata.push((key, value));
    }
    let mut keys: Vec<&str> = metadata.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(FormatError::DuplicateName { what: "metadata key", name: w[0].to_string() });
    }

    let mut tensors = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        tensors.push(parse_tensor(&mut cur, i, header_offset, minor)?);
    }
    let mut by_name: Vec<usize> = (0..tensors.len()).collect();
    by_name.sort_unstable_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name));
    if let Some(w) = by_name.windows(2).find(|w| tensors[w[0]].name == tensors[w[1]].name) {
        return Err(FormatError::DuplicateName {
            what: "tensor name",
            name: tensors[w[0]].name.clone(),
        });
    }
    check_overlaps(&tensors)?;

    let graph = if has_graph == 1 { Some(parse_graph(&mut cur)?) } else { None };
    if cur.remaining() != 0 {
        return Err(FormatError::TrailingHeaderBytes {
            offset: cur.offset(),
            count: cur.remaining(),
        });
    }
    let index = Index { metadata, tensors, by_name, graph };
    if let Some(g) = &index.graph {
        validate_graph(g, &index, minor)?;
    }
    Ok(index)
}

/// One tensor entry (FORMAT.md §3.4, §4, §5).
fn parse_tensor(
    cur: &mut Cursor<'_>,
    i: usize,
    header_offset: u64,
    minor: u16,
) -> Result<TensorInfo, FormatError> {
    let name = cur.name(&|| format!("tensor {i} name"))?;
    let ctx = || format!("tensor '{name}'");
    let fields_at = cur.offset();
    let f = cur.array::<8>(&ctx)?;
    let group_at = cur.offset();
    let group = cur.u32(&ctx)?;
    let mu_at = cur.offset();
    let mu = f32::from_le_bytes(cur.array::<4>(&ctx)?);
    let invalid = |field: &'static str, value: u64, offset: u64| FormatError::InvalidField {
        context: ctx(),
        field,
        value,
        offset,
    };
    let field = |k: usize, name: &'static str| invalid(name, u64::from(f[k]), fields_at + k as u64);
    let ndim = usize::from(f[1]);
    if ndim > MAX_DIMS {
        return Err(field(1, "ndim"));
    }
    let shape: Vec<u64> = (0..ndim).map(|_| cur.u64(&ctx)).collect::<Result<_, _>>()?;
    let mut sections = [Section::EMPTY; 3];
    let mut section_at = [0u64; 3];
    for (s, at) in sections.iter_mut().zip(&mut section_at) {
        *at = cur.offset();
        let (offset, len, crc32, reserved) =
            (cur.u64(&ctx)?, cur.u64(&ctx)?, cur.u32(&ctx)?, cur.u32(&ctx)?);
        *s = Section { offset, len, crc32 };
        if reserved != 0 {
            return Err(FormatError::NonZeroReserved { offset: *at + 20 });
        }
    }
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        // Every dim too, not only the product: a zero dim would otherwise
        // let a dim that `usize` cannot hold through on 32-bit targets.
        .filter(|_| shape.iter().all(|&d| usize::try_from(d).is_ok()))
        .ok_or_else(|| FormatError::ShapeOverflow { tensor: name.clone() })?;

    let storage = match f[0] {
        0 => {
            let dtype = RawDtype::from_code(f[2]).ok_or_else(|| field(2, "dtype"))?;
            for (k, what) in [
                (3, "bits"),
                (4, "scaling"),
                (5, "scale_dtype"),
                (6, "fp_exp_bits"),
                (7, "fp_man_bits"),
            ] {
                if f[k] != 0 {
                    return Err(field(k, what));
                }
            }
            if group != 0 {
                return Err(invalid("group_size", u64::from(group), group_at));
            }
            if mu.to_bits() != 0 {
                return Err(invalid("mu", u64::from(mu.to_bits()), mu_at));
            }
            Storage::Raw(dtype)
        }
        1 => {
            let codec = codec_from_code(f[2]).ok_or_else(|| field(2, "codec"))?;
            let width = CodeWidth::new(u32::from(f[3])).map_err(|_| field(3, "bits"))?;
            let scaling = match (f[4], group) {
                (0, 0) => Scaling::Unit,
                (1, 0) => Scaling::Tensor,
                (2, 0) => Scaling::Row,
                (3, g) => Scaling::Group(g as usize)
                    .validate()
                    .map_err(|_| invalid("group_size", u64::from(g), group_at))?,
                (4, g) if minor >= 2 => two_level_from_field(g)
                    .map(Scaling::TwoLevel)
                    .ok_or_else(|| invalid("group_size", u64::from(g), group_at))?,
                (0..=2, g) => return Err(invalid("group_size", u64::from(g), group_at)),
                _ => return Err(field(4, "scaling")),
            };
            let scale_dtype = match (f[5], scaling) {
                (0, Scaling::Unit) => None,
                (1, s) if s != Scaling::Unit => Some(ScaleDtype::F16),
                (2, s) if s != Scaling::Unit => Some(ScaleDtype::F32),
                _ => return Err(field(5, "scale_dtype")),
            };
            let fp_layout = if codec == CodecKind::Fp {
                let layout = FpLayout::new(u32::from(f[6]), u32::from(f[7]))
                    .ok()
                    .filter(|l| l.width() == width)
                    .ok_or_else(|| field(6, "fp_exp_bits"))?;
                Some(layout)
            } else {
                for (k, what) in [(6, "fp_exp_bits"), (7, "fp_man_bits")] {
                    if f[k] != 0 {
                        return Err(field(k, what));
                    }
                }
                None
            };
            let mu_ok = if codec == CodecKind::Log {
                mu.is_finite() && mu >= 0.0
            } else {
                mu.to_bits() == 0
            };
            if !mu_ok {
                return Err(invalid("mu", u64::from(mu.to_bits()), mu_at));
            }
            Storage::Quantized(QuantSpec { codec, width, scaling, scale_dtype, fp_layout, mu })
        }
        _ => return Err(field(0, "storage")),
    };
    let info = TensorInfo {
        name,
        shape,
        storage,
        data: sections[0],
        scales: sections[1],
        table: sections[2],
    };
    let expected = expected_lengths(&info, count)
        .ok_or_else(|| FormatError::ShapeOverflow { tensor: info.name.clone() })?;
    let kinds = [SectionKind::Data, SectionKind::Scales, SectionKind::Table];
    for ((s, kind), want) in sections.iter().zip(kinds).zip(expected) {
        check_section(&info.name, kind, s, want, header_offset)?;
    }
    Ok(info)
}

/// Lengths of the data, scales and table sections implied by the entry.
fn expected_lengths(t: &TensorInfo, count: u64) -> Option<[u64; 3]> {
    match t.storage {
        Storage::Raw(dtype) => Some([count.checked_mul(dtype.size() as u64)?, 0, 0]),
        Storage::Quantized(q) => {
            let bits = count.checked_mul(u64::from(q.width.bits()))?;
            let data = bits.div_ceil(8);
            let scales = match q.scale_dtype {
                None => 0,
                Some(dtype) => {
                    GroupLayout::new(&t.shape_usize(), q.scaling).ok()?.stored_scale_bytes(dtype)?
                }
            };
            let table = if q.codec == CodecKind::Lut { 4u64 << q.width.bits() } else { 0 };
            Some([data, scales, table])
        }
    }
}

fn check_section(
    tensor: &str,
    kind: SectionKind,
    s: &Section,
    expected: u64,
    data_end: u64,
) -> Result<(), FormatError> {
    let problem = if s.len != expected {
        Some(SectionProblem::WrongLength { expected })
    } else if s.len == 0 {
        (s.offset != 0 || s.crc32 != 0)
            .then_some(SectionProblem::EmptyNotZero { offset: s.offset, crc32: s.crc32 })
    } else if !s.offset.is_multiple_of(ALIGN) {
        Some(SectionProblem::Misaligned)
    } else if s.offset < PREAMBLE_LEN
        || s.offset.checked_add(s.len).is_none_or(|end| end > data_end)
    {
        Some(SectionProblem::OutOfBounds { limit: data_end })
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(FormatError::Section {
            tensor: tensor.to_string(),
            section: kind,
            offset: s.offset,
            len: s.len,
            problem,
        }),
    }
}

/// No two non-empty sections may share a byte.
fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), FormatError> {
    let mut spans: Vec<(u64, u64, usize, SectionKind)> = tensors
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            [
                (t.data, SectionKind::Data),
                (t.scales, SectionKind::Scales),
                (t.table, SectionKind::Table),
            ]
            .into_iter()
            .filter(|(s, _)| s.len > 0)
            .map(move |(s, k)| (s.offset, s.offset + s.len, i, k))
        })
        .collect();
    spans.sort_unstable_by_key(|s| (s.0, s.1));
    for w in spans.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.0 < a.1 {
            return Err(FormatError::SectionOverlap {
                first: (tensors[a.2].name.clone(), a.3),
                second: (tensors[b.2].name.clone(), b.3),
                offset: b.0,
            });
        }
    }
    Ok(())
}

/// The graph (FORMAT.md §6), parsed but not yet checked against tensors.
fn parse_graph(cur: &mut Cursor<'_>) -> Result<Graph, FormatError> {
    let inputs = cur.names("graph input", &|| "graph inputs".to_string())?;
    let outputs = cur.names("graph output", &|| "graph outputs".to_string())?;
    let n = cur.count("layer", MAX_LAYERS, 5 + 16)?;
    let mut layers = Vec::with_capacity(n);
    for i in 0..n {
        let ctx = || format!("graph layer {i}");
        let op = cur.name(&ctx)?;
        let inputs = cur.names("layer input", &ctx)?;
        let outputs = cur.names("layer output", &ctx)?;
        let weights = cur.names("layer weight", &ctx)?;
        let attr_count = cur.count("attribute", MAX_METADATA, 6)?;
        let mut attrs = Vec::with_capacity(attr_count);
        for _ in 0..attr_count {
            let key = cur.name(&ctx)?;
            let value = cur.value(&|| format!("graph layer {i} attribute '{key}'"))?;
            attrs.push((key, value));
        }
        layers.push(Layer { op, inputs, outputs, weights, attrs });
    }
    Ok(Graph { inputs, outputs, layers })
}

/// The load-time rules of FORMAT.md §6, for a file of version 1.`minor`:
/// from 1.1 on any op name is allowed (the runtime decides what it runs);
/// a 1.0 file may name only the ops of the 1.0 list.
pub(crate) fn validate_graph(g: &Graph, index: &Index, minor: u16) -> Result<(), FormatError> {
    let mut defined: BTreeSet<&str> = BTreeSet::new();
    for v in &g.inputs {
        if !defined.insert(v) {
            return Err(FormatError::DuplicateValue { value: v.clone() });
        }
    }
    for (i, layer) in g.layers.iter().enumerate() {
        if minor == 0 && !OPS_1_0.contains(&layer.op.as_str()) {
            return Err(FormatError::UnknownOp { layer: i, op: layer.op.clone() });
        }
        if let Some(w) = layer.weights.iter().find(|w| index.find(w).is_none()) {
            return Err(FormatError::UnknownWeight { layer: i, tensor: w.clone() });
        }
        if let Some(v) = layer.inputs.iter().find(|v| !defined.contains(v.as_str())) {
            return Err(FormatError::UndefinedValue { layer: i, value: v.clone() });
        }
        for v in &layer.outputs {
            if !defined.insert(v) {
                return Err(FormatError::DuplicateValue { value: v.clone() });
            }
        }
        let mut keys: Vec<&str> = layer.attrs.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(FormatError::DuplicateName {
                what: "layer attribute",
                name: w[0].to_string(),
            });
        }
    }
    if let Some(v) = g.outputs.iter().find(|v| !defined.contains(v.as_str())) {
        return Err(FormatError::MissingOutput { value: v.clone() });
    }
    Ok(())
}
