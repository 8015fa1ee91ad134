//! NumPy `.npy` and `.npz`.
//!
//! An `.npy` is a magic, a version, a header length, a Python-literal dict
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, then the
//! data. An `.npz` is a zip of them; stored entries are read in place,
//! compressed ones are inflated one at a time.

use lsqr::format::RawDtype;

use super::{Buffer, ImportError, SourceModel, SourceTensor, TensorBytes};

/// An array's header.
#[derive(Debug, PartialEq)]
struct Header {
    dtype: RawDtype,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Bytes from the start of the file to the data.
    data_offset: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err("not an .npy array (bad magic)".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated .npy header")?;
            (u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let text = bytes
        .get(start..start.checked_add(len).ok_or("bad header length")?)
        .ok_or("truncated .npy header")?;
    let text = std::str::from_utf8(text).map_err(|_| "the .npy header is not text")?;
    let descr = dict_value(text, "descr").ok_or("the .npy header has no 'descr'")?;
    let descr = quoted(descr).ok_or("the .npy 'descr' is not a quoted string")?;
    // Not `split_at(1)`: the first character may be more than one byte.
    let (order, code) = descr.split_at_checked(1).unwrap_or(("", descr));
    let big_endian = order == ">";
    let dtype = match code {
        "f4" => RawDtype::F32,
        "f2" => RawDtype::F16,
        "f8" => RawDtype::F64,
        "i1" => RawDtype::I8,
        "i2" => RawDtype::I16,
        "i4" => RawDtype::I32,
        "i8" => RawDtype::I64,
        "u1" => RawDtype::U8,
        "b1" => RawDtype::Bool,
        _ => return Err(format!("unsupported dtype '{descr}'")),
    };
    let fortran_order = match dict_value(text, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err("the .npy header has no valid 'fortran_order'".into()),
    };
    let shape_text = dict_value(text, "shape").ok_or("the .npy header has no 'shape'")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("malformed shape '{shape_text}'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Header {
        dtype,
        big_endian: big_endian && dtype.size() > 1,
        fortran_order,
        shape,
        data_offset: start + len,
    })
}

/// The contents of the quoted string at the start of `text`.
fn quoted(text: &str) -> Option<&str> {
    let quote = text.chars().next().filter(|&c| c == '\'' || c == '"')?;
    text[1..].split(quote).next()
}

/// The text after `'key':` in the header dict.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("'{key}'")).or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = &text[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// Where the array's bytes are, given its header and where the .npy starts.
fn tensor(
    model: &SourceModel,
    name: String,
    header: &Header,
    buffer: usize,
    npy_start: usize,
    npy_end: usize,
) -> Result<SourceTensor, ImportError> {
    let count = header.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let len = count.and_then(|n| n.checked_mul(header.dtype.size()));
    let Some(len) = len else {
        return Err(ImportError::tensor(&model.path, &name, "the shape's element count overflows"));
    };
    let offset = npy_start + header.data_offset;
    // The array ends with its own entry, not with the file around it.
    let available = npy_end.min(model.buffers[buffer].as_slice().len()).saturating_sub(offset);
    if len > available {
        return Err(ImportError::tensor(&model.path, &name, "array data is truncated"));
    }
    let bytes = if header.big_endian {
        let raw = &model.buffers[buffer].as_slice()[offset..offset + len];
        TensorBytes::Owned(
            raw.chunks_exact(header.dtype.size()).flat_map(|c| c.iter().rev().copied()).collect(),
        )
    } else if header.fortran_order && header.shape.len() > 1 {
        // Column-major: element (i0, i1, ...) is at i0 + d0*(i1 + d1*(...)).
        let mut strides = vec![1usize; header.shape.len()];
        for k in 1..header.shape.len() {
            strides[k] = strides[k - 1] * header.shape[k - 1];
        }
        TensorBytes::Strided { buffer, offset, strides }
    } else {
        TensorBytes::Contiguous { buffer, offset }
    };
    if header.big_endian && header.fortran_order && header.shape.len() > 1 {
        return Err(ImportError::tensor(
            &model.path,
            &name,
            "big-endian Fortran-order arrays are not supported",
        ));
    }
    Ok(SourceTensor { name, dtype: header.dtype, shape: header.shape.clone(), bytes })
}

pub(super) fn import_npy(model: &mut SourceModel) -> Result<(), ImportError> {
    let header =
        parse_header(model.buffers[0].as_slice()).map_err(|e| ImportError::new(&model.path, e))?;
    let name = model.path.file_stem().map_or("array".into(), |s| s.to_string_lossy().into_owned());
    let end = model.buffers[0].as_slice().len();
    let t = tensor(model, name, &header, 0, 0, end)?;
    model.tensors.push(t);
    Ok(())
}

/// Deflate expands at most ~1032:1; a larger claimed ratio is a zip bomb.
const MAX_INFLATE_RATIO: u64 = 1100;

pub(super) fn import_npz(model: &mut SourceModel) -> Result<(), ImportError> {
    let zip_error =
        |e: zip::result::ZipError| ImportError::new(&model.path, format!("bad .npz archive: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(model.buffers[0].as_slice()))
        .map_err(zip_error)?;
    let mut found = Vec::new();
    let mut inflate_left = crate::amplification_limit(model.buffers[0].as_slice().len());
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(zip_error)?;
        let name = entry.name().strip_suffix(".npy").unwrap_or(entry.name()).to_string();
        let declared = entry.size();
        if entry.compression() == zip::CompressionMethod::Stored {
            let start = entry.data_start() as usize;
            found.push((name, start, start.saturating_add(declared as usize), None));
            continue;
        }
        let bad = |m: String| ImportError::tensor(&model.path, &name, m);
        if declared > entry.compressed_size().saturating_mul(MAX_INFLATE_RATIO) + 4096 {
            return Err(bad(format!(
                "entry claims to inflate {} bytes to {declared}: refusing a zip bomb",
                entry.compressed_size()
            )));
        }
        // Never more than the declared size, whatever the stream says.
        let bytes = crate::inflate(entry, declared, &mut inflate_left).map_err(bad)?;
        found.push((name, 0, bytes.len(), Some(bytes)));
    }
    drop(archive);
    for (name, start, end, owned) in found {
        let (buffer, start, end) = match owned {
            Some(bytes) => {
                model.buffers.push(Buffer::Owned(bytes));
                (model.buffers.len() - 1, 0, end)
            }
            None => (0, start, end),
        };
        let all = model.buffers[buffer].as_slice();
        let bytes = &all[start.min(all.len())..end.min(all.len()).max(start.min(all.len()))];
        let header = parse_header(bytes).map_err(|e| ImportError::tensor(&model.path, &name, e))?;
        let t = tensor(model, name, &header, buffer, start, end)?;
        model.tensors.push(t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_headers() {
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", &[]);
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.dtype, h.fortran_order, h.shape.clone(), h.data_offset),
            (RawDtype::F32, false, vec![3, 4], 128)
        );
        let b = npy("{'descr': '>i2', 'fortran_order': True, 'shape': (5,), }", &[]);
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.dtype, h.big_endian, h.fortran_order, h.shape),
            (RawDtype::I16, true, true, vec![5])
        );
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &[]);
        assert_eq!(parse_header(&b).unwrap().shape, Vec::<usize>::new());
        let b = npy("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", &[]);
        assert!(parse_header(&b).unwrap_err().contains("unsupported dtype '<c8'"));
        assert!(parse_header(b"\x93NUMPY").is_err());
        assert!(parse_header(b"garbage").is_err());
    }
}
