//! Group scales: how a tensor is cut into groups that share one scale.
//!
//! A weight of shape `[d0, d1, ...]` is viewed as rows `[d0, d1 * d2 * ...]`
//! (rank 0 and rank 1 tensors are a single row). A group is a run of
//! consecutive elements within one row; groups never cross rows, and the last
//! group of a row may be short. Groups are numbered row by row.

use alloc::vec::Vec;

use half::f16;

use crate::CodecError;

/// How scales are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scaling {
    /// No scale at all: values are taken at unit scale and clipped to the
    /// codebook's range. This is what the reference LSQR codec does.
    Unit,
    /// One scale for the tensor.
    Tensor,
    /// One scale per row (output channel).
    Row,
    /// One scale per `G` consecutive elements of a row; G is a power of two
    /// in 16..=1024.
    Group(usize),
}

impl Scaling {
    /// Validates the group size.
    pub fn validate(self) -> Result<Self, CodecError> {
        match self {
            Scaling::Group(g) if !(g.is_power_of_two() && (16..=1024).contains(&g)) => {
                Err(CodecError::InvalidGroupSize { group: g })
            }
            s => Ok(s),
        }
    }
}

/// The storage type of scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleDtype {
    /// IEEE binary16 (default): 2 bytes per group.
    #[default]
    F16,
    /// IEEE binary32.
    F32,
}

impl ScaleDtype {
    /// Bytes per stored scale.
    pub fn size(self) -> usize {
        match self {
            ScaleDtype::F16 => 2,
            ScaleDtype::F32 => 4,
        }
    }

    /// The smallest positive scale this dtype stores and [`ScaleDtype::round`]
    /// returns: f16's smallest subnormal (2^-24), f32's smallest normal
    /// (so that `1 / scale` stays finite).
    pub(crate) fn smallest(self) -> f32 {
        match self {
            ScaleDtype::F16 => f16::from_bits(1).to_f32(),
            ScaleDtype::F32 => f32::MIN_POSITIVE,
        }
    }

    /// Rounds a non-negative scale up to what this dtype will store, so that
    /// no element of an absmax-scaled group lands outside the codebook's
    /// range. Scales too small for the dtype (below the smallest normal f32,
    /// or below half of f16's smallest subnormal, where f16 rounds to 0)
    /// become 0: the group then decodes to zeros, unless
    /// [`settle_tiny_groups`] finds that [`ScaleDtype::smallest`] gives it
    /// less squared error. Such groups are dead channels of real models
    /// (magnitudes down to 1e-40), and must not fail the tensor. Scales
    /// above f16's largest finite value are an error.
    pub(crate) fn round(self, group: usize, scale: f32) -> Result<f32, CodecError> {
        if scale < f32::MIN_POSITIVE {
            return Ok(0.0);
        }
        match self {
            ScaleDtype::F32 => Ok(scale),
            ScaleDtype::F16 => {
                let mut half = f16::from_f32(scale);
                if half.to_f32() == 0.0 {
                    return Ok(0.0);
                }
                if half.to_f32() < scale {
                    half = f16::from_bits(half.to_bits() + 1);
                }
                let rounded = half.to_f32();
                if rounded.is_infinite() {
                    Err(CodecError::ScaleOutOfRange { group, scale })
                } else {
                    Ok(rounded)
                }
            }
        }
    }
}

/// For every group whose scale is 0 although it holds non-zero values (too
/// small for the scale dtype, see [`ScaleDtype::round`]), the scale among 0
/// and `dtype.smallest()` with the least squared error under `codebook`:
/// the smallest scale keeps what the codebook can still resolve, 0 is
/// exact zeros. Never worse than zeros for the group.
pub(crate) fn settle_tiny_groups(
    data: &[f32],
    layout: &GroupLayout,
    codebook: &crate::codebook::Codebook,
    dtype: ScaleDtype,
    scales: &mut [f32],
) {
    let table = codebook.decode_table();
    let candidate = dtype.smallest();
    let mut codes = Vec::new();
    for (range, scale) in layout.groups().zip(scales.iter_mut()) {
        let xs = &data[range];
        if *scale != 0.0 || xs.iter().all(|&x| x == 0.0) {
            continue;
        }
        codes.clear();
        codes.resize(xs.len(), 0u16);
        codebook.encode_scaled(xs, 1.0 / candidate, &mut codes);
        let (mut zeros, mut coded) = (0.0f64, 0.0f64);
        for (&x, &c) in xs.iter().zip(&codes) {
            let x = f64::from(x);
            let e = x - f64::from(table[usize::from(c)] * candidate);
            zeros += x * x;
            coded += e * e;
        }
        if coded < zeros {
            *scale = candidate;
        }
    }
}

/// Where the groups of one tensor lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupLayout {
    rows: usize,
    row_len: usize,
    /// Elements per group (the last group of a row may be shorter); at least 1.
    group_len: usize,
}

impl GroupLayout {
    /// The layout of a tensor of `shape` under `scaling`.
    pub fn new(shape: &[usize], scaling: Scaling) -> Result<Self, CodecError> {
        let scaling = scaling.validate()?;
        let total = element_count(shape).ok_or(CodecError::ShapeOverflow)?;
        let (rows, row_len) = match shape {
            [] | [_] => (1, total),
            [d0, ..] => (*d0, if *d0 == 0 { 0 } else { total / d0 }),
        };
        let (rows, row_len, group_len) = match scaling {
            Scaling::Unit | Scaling::Tensor => (1, total, total.max(1)),
            Scaling::Row => (rows, row_len, row_len.max(1)),
            Scaling::Group(g) => (rows, row_len, g),
        };
        Ok(Self { rows, row_len, group_len })
    }

    /// Number of rows in the row view.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Elements per full group.
    pub fn group_len(&self) -> usize {
        self.group_len
    }

    /// Groups per row, `ceil(row_len / group_len)`.
    pub fn groups_per_row(&self) -> usize {
        self.row_len.div_ceil(self.group_len)
    }

    /// Total number of groups (and of scales, unless the scaling is `Unit`).
    pub fn group_count(&self) -> usize {
        self.rows * self.groups_per_row()
    }

    /// Total elements.
    pub fn element_count(&self) -> usize {
        self.rows * self.row_len
    }

    /// The element range of every group, in group order.
    pub fn groups(&self) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
        (0..self.rows).flat_map(move |r| {
            let row_start = r * self.row_len;
            (0..self.groups_per_row()).map(move |g| {
                let start = row_start + g * self.group_len;
                start..(start + self.group_len).min(row_start + self.row_len)
            })
        })
    }

    /// The group that element `index` belongs to.
    pub fn group_of(&self, index: usize) -> usize {
        let (row, col) = (index / self.row_len.max(1), index % self.row_len.max(1));
        row * self.groups_per_row() + col / self.group_len
    }
}

/// Product of dimensions, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The scales of one tensor, already rounded to their storage dtype (so the
/// encoder divides by exactly what the decoder will multiply by).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScales {
    dtype: ScaleDtype,
    values: Vec<f32>,
}

impl GroupScales {
    /// Scales from values that are exactly representable in `dtype`.
    pub fn new(dtype: ScaleDtype, values: Vec<f32>) -> Result<Self, CodecError> {
        for (group, &v) in values.iter().enumerate() {
            let bad = !v.is_finite() || v < 0.0 || dtype.round(group, v).ok() != Some(v);
            if bad {
                return Err(CodecError::ScaleOutOfRange { group, scale: v });
            }
        }
        Ok(Self { dtype, values })
    }

    /// Scales as f32.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Storage dtype.
    pub fn dtype(&self) -> ScaleDtype {
        self.dtype
    }

    /// Little-endian bytes as stored: f16 or f32 per group.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self.dtype {
            ScaleDtype::F16 => {
                self.values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
            }
            ScaleDtype::F32 => self.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Parses [`GroupScales::to_le_bytes`]; an error if the length is not a
    /// multiple of the dtype size or a value is negative or not finite.
    pub fn from_le_bytes(dtype: ScaleDtype, bytes: &[u8]) -> Result<Self, CodecError> {
        if !bytes.len().is_multiple_of(dtype.size()) {
            return Err(CodecError::LengthMismatch {
                what: "scale bytes",
                expected: bytes.len() / dtype.size() * dtype.size(),
                got: bytes.len(),
            });
        }
        let values = match dtype {
            ScaleDtype::F16 => {
                bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            ScaleDtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        };
        Self::new(dtype, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn group_layout_rows_and_partial_groups() {
        let l = GroupLayout::new(&[3, 2, 50], Scaling::Group(64)).unwrap();
        assert_eq!((l.rows(), l.row_len(), l.groups_per_row()), (3, 100, 2));
        let groups: Vec<_> = l.groups().collect();
        assert_eq!(groups, vec![0..64, 64..100, 100..164, 164..200, 200..264, 264..300]);
        assert_eq!(l.group_of(99), 1);
        assert_eq!(l.group_of(100), 2);
        assert_eq!(l.group_of(299), 5);
    }

    #[test]
    fn group_layout_modes() {
        assert_eq!(GroupLayout::new(&[4, 5], Scaling::Row).unwrap().group_count(), 4);
        assert_eq!(GroupLayout::new(&[4, 5], Scaling::Tensor).unwrap().group_count(), 1);
        assert_eq!(GroupLayout::new(&[100], Scaling::Group(16)).unwrap().group_count(), 7);
        assert_eq!(GroupLayout::new(&[], Scaling::Row).unwrap().group_count(), 1);
        assert_eq!(GroupLayout::new(&[0, 5], Scaling::Group(16)).unwrap().group_count(), 0);
        assert_eq!(GroupLayout::new(&[5, 0], Scaling::Row).unwrap().group_count(), 0);
        assert_eq!(GroupLayout::new(&[0], Scaling::Tensor).unwrap().group_count(), 0);
        for bad in [0, 8, 48, 2048] {
            assert_eq!(
                GroupLayout::new(&[4, 64], Scaling::Group(bad)),
                Err(CodecError::InvalidGroupSize { group: bad })
            );
        }
    }

    #[test]
    fn f16_scales_round_and_reject_overflow() {
        assert_eq!(ScaleDtype::F16.round(0, 1.0).unwrap(), 1.0);
        assert_eq!(ScaleDtype::F16.round(0, 0.0).unwrap(), 0.0);
        assert_eq!(
            ScaleDtype::F16.round(7, 1e6),
            Err(CodecError::ScaleOutOfRange { group: 7, scale: 1e6 })
        );
        // Too small for f16 (below half its smallest subnormal): 0, for
        // `settle_tiny_groups` to weigh against the smallest subnormal.
        assert_eq!(ScaleDtype::F16.round(0, 1e-9).unwrap(), 0.0);
        assert_eq!(ScaleDtype::F16.round(0, 1e-40).unwrap(), 0.0);
        // Above half the smallest subnormal (half of it is a tie, to even:
        // 0), rounded up to it.
        let smallest = ScaleDtype::F16.smallest();
        assert_eq!(smallest, 2f32.powi(-24));
        assert_eq!(ScaleDtype::F16.round(0, 2f32.powi(-25)).unwrap(), 0.0);
        assert_eq!(ScaleDtype::F16.round(0, 2f32.powi(-25) * 1.01).unwrap(), smallest);
        assert_eq!(ScaleDtype::F16.round(0, 4e-8).unwrap(), smallest);
        assert!(ScaleDtype::F16.round(0, 65504.5).is_err());
        assert_eq!(ScaleDtype::F16.round(0, 65504.0).unwrap(), 65504.0);
        assert_eq!(ScaleDtype::F16.round(0, 1.0001).unwrap(), 1.0 + 1.0 / 1024.0);
        assert_eq!(ScaleDtype::F32.round(0, 1e-9).unwrap(), 1e-9);
    }

    #[test]
    fn scale_bytes_round_trip() {
        for dtype in [ScaleDtype::F16, ScaleDtype::F32] {
            let s = GroupScales::new(dtype, vec![0.0, 0.5, 3.0, 1024.0]).unwrap();
            let back = GroupScales::from_le_bytes(dtype, &s.to_le_bytes()).unwrap();
            assert_eq!(back, s);
        }
        assert!(GroupScales::from_le_bytes(ScaleDtype::F16, &[0, 0, 0]).is_err());
        assert!(GroupScales::new(ScaleDtype::F16, vec![0.1]).is_err());
        assert!(GroupScales::new(ScaleDtype::F32, vec![-1.0]).is_err());
    }
}
