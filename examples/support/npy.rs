//! A minimal `.npy` reader (format 1.x/2.x, little-endian f32, f64, i32,
//! i64, u8) for the examples and benches, which cannot use lsqr-import's.

#![allow(dead_code)]

/// Reads `path` as `(shape, values as f32)`.
pub fn read_npy(path: &std::path::Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{}: not a little-endian numeric .npy file", path.display());
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let (hlen, hstart) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header =
        std::str::from_utf8(b.get(hstart..hstart + hlen).ok_or_else(bad)?).map_err(|_| bad())?;
    let descr = header.split("'descr':").nth(1).ok_or_else(bad)?;
    let descr = descr.split('\'').nth(1).ok_or_else(bad)?;
    if header.contains("'fortran_order': True") {
        return Err(bad());
    }
    let shape_s = header.split("'shape':").nth(1).ok_or_else(bad)?;
    let shape_s = &shape_s[shape_s.find('(').ok_or_else(bad)? + 1..];
    let shape_s = &shape_s[..shape_s.find(')').ok_or_else(bad)?];
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let data = &b[hstart + hlen..];
    let values: Vec<f32> = match descr {
        "<f4" => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        "<f8" => {
            data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        }
        "<i4" => {
            data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        }
        "<i8" => {
            data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        }
        "|u1" => data.iter().map(|&v| v as f32).collect(),
        _ => return Err(bad()),
    };
    if values.len() != shape.iter().product::<usize>() {
        return Err(bad());
    }
    Ok((shape, values))
}
