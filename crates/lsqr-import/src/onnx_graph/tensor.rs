//! Constant tensors, and the arithmetic that folds them at import.
//!
//! Every value is held as f64: it holds every int32 and float32 exactly,
//! and int64 up to 2^53 (shape arithmetic never comes near; the INT64_MAX
//! "to the end" of Slice saturates back to i64::MAX). Float results are
//! rounded to f32 after each operation, as onnxruntime computes them.

use std::rc::Rc;

use lsqr::format::RawDtype;

/// What a constant's elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    Float,
    Int,
    Bool,
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Rc<Vec<f64>>,
}

/// Cap on the elements a folded constant may have: folding runs before
/// anything is checked against memory, so a hostile Expand or
/// ConstantOfShape must not allocate without bound.
pub(crate) const MAX_CONST_ELEMENTS: usize = 1 << 28;

pub(crate) fn numel(shape: &[usize]) -> Result<usize, String> {
    // Every dim is bounded too, even when another is 0 (an empty constant
    // of shape [0, 2^60] must not reach code that walks a dim).
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d).filter(|_| d <= MAX_CONST_ELEMENTS))
        .filter(|&n| n <= MAX_CONST_ELEMENTS)
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))
}

/// Cap on a folded constant that is larger than every constant it was
/// made from (Expand, Tile, ConstantOfShape, Range, broadcasting): such
/// growth comes from a few bytes of shape arithmetic, not from the file's
/// data, so it is bounded on its own (4M elements, 32 MiB as f64).
pub(crate) const MAX_GROWN_ELEMENTS: usize = 1 << 22;

/// The element count of a folded result of `shape` made from inputs of at
/// most `largest_input` elements: an error past [`MAX_GROWN_ELEMENTS`]
/// when it grew.
pub(crate) fn grown(shape: &[usize], largest_input: usize) -> Result<usize, String> {
    let n = numel(shape)?;
    // A dim past the cap is refused even when another dim is 0: callers
    // build per-axis index lists as long as each dim.
    let longest = shape.iter().copied().max().unwrap_or(0);
    let cap = MAX_GROWN_ELEMENTS.max(largest_input);
    if (n > largest_input && n > MAX_GROWN_ELEMENTS) || longest > cap {
        return Err(format!(
            "folding makes a constant of shape {shape:?} ({n} elements) from inputs of at most \
             {largest_input}: more than the {MAX_GROWN_ELEMENTS} a fold may grow to"
        ));
    }
    Ok(n)
}

impl Const {
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<f64>) -> Result<Const, String> {
        let expected = numel(&shape)?;
        if expected != data.len() {
            let got = match data.len() {
                1 => "1 value".to_string(),
                n => format!("{n} values"),
            };
            return Err(format!("{got} for shape {shape:?}, which holds {expected}"));
        }
        let data = match dtype {
            Dtype::Float => data.into_iter().map(|v| v as f32 as f64).collect(),
            Dtype::Int => data.into_iter().map(|v| v.trunc()).collect(),
            Dtype::Bool => data.into_iter().map(|v| f64::from(u8::from(v != 0.0))).collect(),
        };
        Ok(Const { dtype, shape, data: Rc::new(data) })
    }

    pub fn ints(values: &[i64]) -> Const {
        Const {
            dtype: Dtype::Int,
            shape: vec![values.len()],
            data: Rc::new(values.iter().map(|&v| v as f64).collect()),
        }
    }

    pub fn from_le_bytes(dtype: RawDtype, shape: Vec<usize>, b: &[u8]) -> Result<Const, String> {
        let n = numel(&shape)?;
        if b.len() != n * dtype.size() {
            return Err(format!("{} bytes for {n} {} values", b.len(), dtype.name()));
        }
        let le = |c: &[u8]| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            a
        };
        let data: Vec<f64> = b
            .chunks_exact(dtype.size())
            .map(|c| match dtype {
                RawDtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                RawDtype::F64 => f64::from_le_bytes(le(c)),
                RawDtype::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
                RawDtype::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
                RawDtype::I64 => i64::from_le_bytes(le(c)) as f64,
                RawDtype::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                RawDtype::I16 => i16::from_le_bytes([c[0], c[1]]) as f64,
                RawDtype::I8 => c[0] as i8 as f64,
                RawDtype::U8 => c[0] as f64,
                RawDtype::Bool => f64::from(u8::from(c[0] != 0)),
            })
            .collect();
        let kind = match dtype {
            RawDtype::F32 | RawDtype::F64 | RawDtype::F16 | RawDtype::BF16 => Dtype::Float,
            RawDtype::Bool => Dtype::Bool,
            _ => Dtype::Int,
        };
        Const::new(kind, shape, data)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The values as i64 (saturating), for shapes, axes and indices.
    pub fn to_i64s(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }

    pub fn to_f32s(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Const, String> {
        if numel(&shape)? != self.len() {
            return Err(format!("cannot reshape {:?} to {shape:?}", self.shape));
        }
        Ok(Const { dtype: self.dtype, shape, data: Rc::clone(&self.data) })
    }

    pub fn cast(&self, dtype: Dtype) -> Const {
        let data = self.data.iter().copied().collect();
        Const::new(dtype, self.shape.clone(), data).expect("same element count")
    }
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// NumPy broadcasting of any number of shapes.
pub(crate) fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// For each element of `out_shape`, the index of the broadcast source
/// element of `shape` (which broadcasts to `out_shape`).
pub(crate) fn broadcast_index(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let n: usize = out_shape.iter().product();
    let rank = out_shape.len();
    let src_strides = strides(shape);
    let mut idx = vec![0usize; rank];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut off = 0;
        for (k, &i) in idx.iter().enumerate() {
            if let Some(sk) = (k + shape.len()).checked_sub(rank) {
                if shape[sk] != 1 {
                    off += i * src_strides[sk];
                }
            }
        }
        out.push(off);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// Elementwise n-ary `f` with broadcasting; the result has `dtype`.
pub(crate) fn elementwise(
    inputs: &[&Const],
    dtype: Dtype,
    f: impl Fn(&[f64]) -> f64,
) -> Result<Const, String> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|c| c.shape.as_slice()).collect();
    let out_shape = broadcast(&shapes)?;
    grown(&out_shape, inputs.iter().map(|c| c.len()).max().unwrap_or(0))?;
    let maps: Vec<Vec<usize>> =
        inputs.iter().map(|c| broadcast_index(&c.shape, &out_shape)).collect();
    let n: usize = out_shape.iter().product();
    let mut args = vec![0.0; inputs.len()];
    let data = (0..n)
        .map(|i| {
            for (k, c) in inputs.iter().enumerate() {
                args[k] = c.data[maps[k][i]];
            }
            f(&args)
        })
        .collect();
    Const::new(dtype, out_shape, data)
}

/// Transposes by `perm`.
pub(crate) fn transpose(c: &Const, perm: &[usize]) -> Result<Const, String> {
    let rank = c.shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("perm {perm:?} is not a permutation of rank {rank}"));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| c.shape[p]).collect();
    let in_strides = strides(&c.shape);
    let n = c.len();
    let mut idx = vec![0usize; rank];
    let mut data = Vec::with_capacity(n);
    for _ in 0..n {
        data.push(c.data[idx.iter().zip(perm).map(|(&i, &p)| i * in_strides[p]).sum::<usize>()]);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(Const { dtype: c.dtype, shape: out_shape, data: Rc::new(data) })
}

/// Gathers with per-axis index lists: element `i` of the output takes, on
/// every axis `k`, index `picks[k][i_k]` of the input.
pub(crate) fn pick(c: &Const, picks: &[Vec<usize>]) -> Result<Const, String> {
    let out_shape: Vec<usize> = picks.iter().map(Vec::len).collect();
    let n = grown(&out_shape, c.len())?;
    let in_strides = strides(&c.shape);
    let rank = out_shape.len();
    let mut idx = vec![0usize; rank];
    let mut data = Vec::with_capacity(n);
    for _ in 0..n {
        let off: usize = (0..rank).map(|k| picks[k][idx[k]] * in_strides[k]).sum();
        data.push(*c.data.get(off).ok_or("index out of range")?);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(Const { dtype: c.dtype, shape: out_shape, data: Rc::new(data) })
}

/// Concatenates along `axis`.
pub(crate) fn concat(parts: &[&Const], axis: usize) -> Result<Const, String> {
    let first = parts.first().ok_or("Concat of nothing")?;
    let rank = first.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let mut out_shape = first.shape.clone();
    out_shape[axis] = 0;
    for p in parts {
        let same =
            p.shape.len() == rank && (0..rank).all(|k| k == axis || p.shape[k] == first.shape[k]);
        if !same {
            return Err(format!("cannot concatenate {:?} with {:?}", first.shape, p.shape));
        }
        out_shape[axis] += p.shape[axis];
    }
    let outer: usize = first.shape[..axis].iter().product();
    let mut data = Vec::with_capacity(numel(&out_shape)?);
    for o in 0..outer {
        for p in parts {
            let inner: usize = p.shape[axis..].iter().product();
            data.extend_from_slice(&p.data[o * inner..(o + 1) * inner]);
        }
    }
    let dtype =
        if parts.iter().any(|p| p.dtype == Dtype::Float) { Dtype::Float } else { first.dtype };
    Const::new(dtype, out_shape, data)
}

/// Reduces over `axes` (sorted, unique) with `f` over each run of values.
pub(crate) fn reduce(
    c: &Const,
    axes: &[usize],
    keepdims: bool,
    f: impl Fn(&[f64]) -> f64,
) -> Result<Const, String> {
    let rank = c.shape.len();
    let kept: Vec<usize> = (0..rank).filter(|k| !axes.contains(k)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let t = transpose(c, &perm)?;
    let run: usize = axes.iter().map(|&a| c.shape[a]).product();
    let groups: usize = kept.iter().map(|&k| c.shape[k]).product();
    let data: Vec<f64> = (0..groups).map(|g| f(&t.data[g * run..(g + 1) * run])).collect();
    let shape = if keepdims {
        (0..rank).map(|k| if axes.contains(&k) { 1 } else { c.shape[k] }).collect()
    } else {
        kept.iter().map(|&k| c.shape[k]).collect()
    };
    Const::new(c.dtype, shape, data)
}
