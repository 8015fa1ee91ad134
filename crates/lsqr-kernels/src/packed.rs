//! Operators on packed low-bit weights: decode and multiply without ever
//! expanding the whole weight to f32.
//!
//! This is the portable reference path. A weight is used in its row view
//! `[dim0, product of the other dims]` (so a linear weight is `[out, in]`);
//! each row is decoded from its packed codes into a row-sized buffer, a
//! group at a time, and used there. SIMD paths will be tested against
//! these functions.

use alloc::vec;
use alloc::vec::Vec;

use lsqr_codec::Scaling;
use lsqr_format::QuantizedView;

use crate::OpError;

/// How the scales of a weight map onto its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScaleMode {
    /// One scale (1 for `Scaling::Unit`) for the whole weight.
    One,
    /// One scale per row.
    PerRow,
    /// `ceil(cols / G)` scales per row.
    PerGroup(usize),
}

/// A quantized weight ready for the kernels: packed codes borrowed from the
/// file, the codebook's decode table, and the scales decoded to f32 once
/// (4 bytes per group: for groups of 64, half a bit per weight of extra
/// memory, the documented cost of not converting f16 in the inner loop).
#[derive(Debug, Clone)]
pub struct PackedWeight<'a> {
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
    bits: u32,
    packed: &'a [u8],
    table: Vec<f32>,
    mode: ScaleMode,
    scales: Vec<f32>,
}

const OP: &str = "packed weight";

impl<'a> PackedWeight<'a> {
    /// The weight of a `.lsq` tensor view.
    pub fn from_view(view: &QuantizedView<'a>) -> Result<Self, OpError> {
        let shape = view.info().shape_usize();
        let scales = if view.spec().scale_dtype.is_some() { view.scales_f32() } else { vec![1.0] };
        Self::new(
            view.packed(),
            view.spec().width.bits(),
            &shape,
            view.spec().scaling,
            scales,
            view.decode_table().to_vec(),
        )
    }

    /// A weight from its parts: `packed` holds one C-bit code per element
    /// of `shape` (LSB-first), `table` has `2^C` entries, and `scales` one
    /// per group of `scaling` (one value, 1.0, for `Scaling::Unit`).
    pub fn new(
        packed: &'a [u8],
        bits: u32,
        shape: &[usize],
        scaling: Scaling,
        scales: Vec<f32>,
        table: Vec<f32>,
    ) -> Result<Self, OpError> {
        let bad = |reason| OpError::BadParameter { op: OP, reason };
        if !(1..=16).contains(&bits) || table.len() != 1usize << bits {
            return Err(bad("the decode table must have 2^C entries, C in 1..=16"));
        }
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(bad("element count overflows"))?;
        let (rows, cols) = match shape {
            [] | [_] => (1, count),
            [d0, ..] => (*d0, if *d0 == 0 { 0 } else { count / d0 }),
        };
        let needed =
            lsqr_pack::packed_len(count, bits).map_err(|_| bad("packed length overflows"))?;
        if packed.len() < needed {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "packed",
                expected: needed,
                actual: packed.len(),
            });
        }
        let (mode, expected_scales) = match scaling {
            Scaling::Unit | Scaling::Tensor => (ScaleMode::One, 1),
            Scaling::Row => (ScaleMode::PerRow, rows),
            Scaling::Group(g) if g > 0 => (ScaleMode::PerGroup(g), rows * cols.div_ceil(g)),
            Scaling::Group(_) => return Err(bad("group size 0")),
        };
        // An empty weight has no scales at all.
        let expected_scales =
            if count == 0 { scales.len().min(expected_scales) } else { expected_scales };
        if scales.len() != expected_scales {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "scales",
                expected: expected_scales,
                actual: scales.len(),
            });
        }
        Ok(Self { shape: shape.to_vec(), rows, cols, bits, packed, table, mode, scales })
    }

    /// The weight's full shape (`[out, in]` for linear, `[out, in / groups,
    /// kh, kw]` for conv2d).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Rows of the row view (output features of a linear weight).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the row view (input features of a linear weight).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The kernels' view of this weight's rows.
    fn rows_job(&self, packed_len: usize) -> crate::kernels::PackedRows<'_> {
        let (scale_stride, group) = match self.mode {
            ScaleMode::One => (0, self.cols.max(1)),
            ScaleMode::PerRow => (1, self.cols.max(1)),
            ScaleMode::PerGroup(g) => (self.cols.div_ceil(g), g),
        };
        crate::kernels::PackedRows {
            packed: &self.packed[..packed_len],
            bits: self.bits,
            cols: self.cols,
            table: &self.table,
            scales: &self.scales,
            scale_stride,
            group,
        }
    }

    /// Decodes row `r` into `out` (`cols` values).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) -> Result<(), OpError> {
        if r >= self.rows || out.len() != self.cols {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "row",
                expected: self.cols,
                actual: out.len(),
            });
        }
        self.decode_range(r * self.cols, out)
    }

    /// Decodes elements `start..start + out.len()` (row-major), which the
    /// caller has checked lie inside the weight.
    fn decode_range(&self, start: usize, out: &mut [f32]) -> Result<(), OpError> {
        let needed = lsqr_pack::packed_len(self.rows * self.cols, self.bits)
            .map_err(|_| OpError::BadParameter { op: OP, reason: "packed length overflows" })?;
        (crate::Kernels::active().decode_packed)(&self.rows_job(needed), start, out);
        Ok(())
    }
}

/// Checks that `out` holds the whole weight.
fn check_dequantize_len(w: &PackedWeight<'_>, actual: usize) -> Result<(), OpError> {
    let expected = w.rows * w.cols;
    if actual == expected {
        Ok(())
    } else {
        Err(OpError::LengthMismatch { op: "dequantize", what: "out", expected, actual })
    }
}

/// Decodes the whole weight into `out` (row-major, `rows * cols` values).
pub fn dequantize_into(w: &PackedWeight<'_>, out: &mut [f32]) -> Result<(), OpError> {
    check_dequantize_len(w, out.len())?;
    w.decode_range(0, out)
}

/// Decodes the whole weight into IEEE half floats (round to nearest even;
/// values beyond ±65504 become ±inf, as any f32 to f16 cast does).
pub fn dequantize_into_f16(w: &PackedWeight<'_>, out: &mut [half::f16]) -> Result<(), OpError> {
    check_dequantize_len(w, out.len())?;
    decode_converted(w, out, |src, dst| {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src)
    })
}

/// Decodes the whole weight into bfloat16 (round to nearest even).
pub fn dequantize_into_bf16(w: &PackedWeight<'_>, out: &mut [half::bf16]) -> Result<(), OpError> {
    check_dequantize_len(w, out.len())?;
    decode_converted(w, out, |src, dst| {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src)
    })
}

/// Decodes through an f32 stack buffer, converting each chunk, so that no
/// f32 copy of the weight is made.
fn decode_converted<T>(
    w: &PackedWeight<'_>,
    out: &mut [T],
    convert: impl Fn(&[f32], &mut [T]),
) -> Result<(), OpError> {
    let mut buf = [0.0f32; 1024];
    for (k, dst) in out.chunks_mut(buf.len()).enumerate() {
        let src = &mut buf[..dst.len()];
        w.decode_range(k * 1024, src)?;
        convert(src, dst);
    }
    Ok(())
}

/// `y = x · Wᵀ + b` for `batch` rows of `x` (`[batch, in]`), with `W` the
/// packed `[out, in]` weight, into `y` (`[batch, out]`). Each weight row is
/// decoded once and used for every row of `x`.
pub fn linear(
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
) -> Result<(), OpError> {
    let (out_features, in_features) = (w.rows, w.cols);
    let check = |what, expected: Option<usize>, actual| match expected {
        Some(e) if e == actual => Ok(()),
        Some(e) => Err(OpError::LengthMismatch { op: "linear", what, expected: e, actual }),
        None => Err(OpError::BadParameter { op: "linear", reason: "batch size overflows" }),
    };
    check("x", batch.checked_mul(in_features), x.len())?;
    check("y", batch.checked_mul(out_features), y.len())?;
    if let Some(b) = bias {
        check("bias", Some(out_features), b.len())?;
    }
    if batch == 1 {
        return gemv(w, bias, x, y);
    }
    let mut row = vec![0.0f32; in_features];
    for r in 0..out_features {
        w.decode_row(r, &mut row)?;
        let b = bias.map_or(0.0, |b| b[r]);
        for n in 0..batch {
            y[n * out_features + r] = dot(&row, &x[n * in_features..(n + 1) * in_features]) + b;
        }
    }
    Ok(())
}

/// Batch 1: the rows' codes are decoded and multiplied in registers,
/// a group's scale at a time (`Kernels::gemv_packed`); no weight is written
/// as f32 and nothing is allocated.
fn gemv(
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), OpError> {
    let needed = lsqr_pack::packed_len(w.rows * w.cols, w.bits)
        .map_err(|_| OpError::BadParameter { op: OP, reason: "packed length overflows" })?;
    gemv_rows(&w.rows_job(needed), x, y);
    if let Some(b) = bias {
        y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
    Ok(())
}

/// Runs the batch-1 kernel over all rows of `job`, on this thread.
#[cfg(not(feature = "parallel"))]
fn gemv_rows(job: &crate::kernels::PackedRows<'_>, x: &[f32], y: &mut [f32]) {
    (crate::Kernels::active().gemv_packed)(job, x, y)
}

/// Runs the batch-1 kernel over all rows of `job`; with more than a
/// million weights, row blocks go to rayon's pool (rows are independent,
/// so the result is the same as on one thread).
#[cfg(feature = "parallel")]
fn gemv_rows(job: &crate::kernels::PackedRows<'_>, x: &[f32], y: &mut [f32]) {
    use rayon::prelude::*;
    let kernel = crate::Kernels::active().gemv_packed;
    let threads = rayon::current_num_threads();
    if threads < 2 || y.len().saturating_mul(job.cols) < 1 << 20 {
        return kernel(job, x, y);
    }
    // Blocks of a multiple of 8 rows start on a byte whatever C is; four
    // blocks per thread even out uneven progress.
    let block = y.len().div_ceil(threads * 4).next_multiple_of(8);
    y.par_chunks_mut(block).enumerate().for_each(|(k, out)| {
        let first = k * block;
        let byte = first * job.cols / 8 * job.bits as usize;
        let sub = crate::kernels::PackedRows {
            packed: job.packed.get(byte..).unwrap_or_default(),
            scales: job.scales.get(first * job.scale_stride..).unwrap_or_default(),
            ..*job
        };
        kernel(&sub, x, out)
    });
}

/// Dot product with eight independent partial sums (the order the SIMD
/// paths will use), so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}
