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
    /// Super-blocks along a row, each with a stored scale, cut into
    /// sub-blocks whose scales are that scale times a k-bit integer (the
    /// layout of ggml's K and IQ formats).
    TwoLevel(TwoLevel),
}

/// The shape of two-level scales: a super-block of `super_len` elements of a
/// row carries one scale `d` (in the scale dtype); each of its sub-blocks of
/// `sub_len` elements carries an unsigned `sub_bits`-bit integer `q`, and its
/// elements decode with the scale `d * q`.
///
/// Why two levels: one f16 scale per 32 elements costs 0.5 bits per weight;
/// a 6-bit integer per 32 plus an f16 per 256 costs 0.25, and keeps most of
/// the gain of small groups, since neighbouring sub-blocks share magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TwoLevel {
    super_len: usize,
    sub_len: usize,
    sub_bits: u32,
}

impl TwoLevel {
    /// ggml's choice: super-blocks of 256, sub-blocks of 32, 6-bit sub-scales
    /// (0.25 bits per weight of scales).
    pub const DEFAULT: TwoLevel = TwoLevel { super_len: 256, sub_len: 32, sub_bits: 6 };

    /// Checks the shape: `super_len` a power of two in 32..=4096, `sub_len`
    /// a power of two in 8..=`super_len / 2`, `sub_bits` in 2..=8.
    pub fn new(super_len: usize, sub_len: usize, sub_bits: u32) -> Result<Self, CodecError> {
        let ok = super_len.is_power_of_two()
            && (32..=4096).contains(&super_len)
            && sub_len.is_power_of_two()
            && sub_len >= 8
            && sub_len <= super_len / 2
            && (2..=8).contains(&sub_bits);
        if ok {
            Ok(Self { super_len, sub_len, sub_bits })
        } else {
            Err(CodecError::InvalidTwoLevel { super_len, sub_len, sub_bits })
        }
    }

    /// Elements per super-block.
    pub fn super_len(self) -> usize {
        self.super_len
    }

    /// Elements per sub-block.
    pub fn sub_len(self) -> usize {
        self.sub_len
    }

    /// Bits per sub-scale.
    pub fn sub_bits(self) -> u32 {
        self.sub_bits
    }

    /// The largest sub-scale, `2^k - 1`.
    pub fn sub_max(self) -> u32 {
        (1 << self.sub_bits) - 1
    }

    /// Sub-blocks per full super-block.
    pub fn subs_per_super(self) -> usize {
        self.super_len / self.sub_len
    }
}

impl Scaling {
    /// Validates the group size.
    pub fn validate(self) -> Result<Self, CodecError> {
        match self {
            Scaling::Group(g) if !(g.is_power_of_two() && (16..=1024).contains(&g)) => {
                Err(CodecError::InvalidGroupSize { group: g })
            }
            Scaling::TwoLevel(t) => TwoLevel::new(t.super_len, t.sub_len, t.sub_bits).map(|_| self),
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

impl ScaleDtype {
    /// The stored value nearest to a non-negative `scale` (ties to even), for
    /// scales fitted to the error, where codes are re-chosen after rounding
    /// and nothing needs rounding up. Scales beyond f16's range are an error.
    /// Like [`ScaleDtype::round`], scales below f32's smallest normal become 0.
    pub(crate) fn round_nearest(self, group: usize, scale: f32) -> Result<f32, CodecError> {
        if scale < f32::MIN_POSITIVE {
            return Ok(0.0);
        }
        match self {
            ScaleDtype::F32 => Ok(scale),
            ScaleDtype::F16 => {
                let rounded = f16::from_f32(scale).to_f32();
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

/// For a codebook without an exact zero level (`lut` and `uniform` at some
/// widths), sets to 0 the scale of every group that its nearest codes
/// would decode worse than zeros would: a group of one spike among values
/// near zero puts each of those on the smallest level, ± a fraction of the
/// spike, and the squared error can pass the group's own energy. With a
/// zero level the nearest code of each value is at most as far as 0, so
/// no group can be worse than zeros and nothing is checked.
pub(crate) fn zero_groups_worse_than_zeros(
    data: &[f32],
    layout: &GroupLayout,
    codebook: &crate::codebook::Codebook,
    scales: &mut [f32],
) {
    let table = codebook.decode_table();
    if table.contains(&0.0) {
        return;
    }
    let mut codes = Vec::new();
    for (range, scale) in layout.groups().zip(scales.iter_mut()) {
        if *scale == 0.0 {
            continue;
        }
        let xs = &data[range];
        codes.clear();
        codes.resize(xs.len(), 0u16);
        codebook.encode_scaled(xs, 1.0 / *scale, &mut codes);
        let (mut zeros, mut coded) = (0.0f64, 0.0f64);
        for (&x, &c) in xs.iter().zip(&codes) {
            let x = f64::from(x);
            let e = x - f64::from(table[usize::from(c)] * *scale);
            zeros += x * x;
            coded += e * e;
        }
        if coded > zeros {
            *scale = 0.0;
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
    /// With two-level scales, groups are the sub-blocks.
    two_level: Option<TwoLevel>,
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
            Scaling::TwoLevel(t) => (rows, row_len, t.sub_len),
        };
        let two_level = match scaling {
            Scaling::TwoLevel(t) => Some(t),
            _ => None,
        };
        Ok(Self { rows, row_len, group_len, two_level })
    }

    /// Bytes of the scales section for this layout (FORMAT.md §5.2): one
    /// `dtype` scale per group, or with two-level scales one per
    /// super-block and then the k-bit sub-scales, packed. `None` on
    /// overflow. (Unit scaling has no scales: the caller knows.)
    pub fn stored_scale_bytes(&self, dtype: ScaleDtype) -> Option<u64> {
        let size = dtype.size() as u64;
        match self.two_level {
            None => (self.group_count() as u64).checked_mul(size),
            Some(t) => {
                let supers = (self.super_count() as u64).checked_mul(size)?;
                let sub_bits = (self.group_count() as u64).checked_mul(u64::from(t.sub_bits))?;
                supers.checked_add(sub_bits.div_ceil(8))
            }
        }
    }

    /// The two-level shape, if groups are sub-blocks of super-blocks.
    pub fn two_level(&self) -> Option<TwoLevel> {
        self.two_level
    }

    /// Super-blocks per row (0 without two-level scales).
    pub fn supers_per_row(&self) -> usize {
        self.two_level.map_or(0, |t| self.row_len.div_ceil(t.super_len))
    }

    /// Total super-blocks (0 without two-level scales).
    pub fn super_count(&self) -> usize {
        self.rows * self.supers_per_row()
    }

    /// The super-block that group (sub-block) `g` belongs to; `g` itself
    /// without two-level scales.
    pub fn super_of(&self, g: usize) -> usize {
        match self.two_level {
            None => g,
            Some(t) => {
                let per_row = self.groups_per_row().max(1);
                (g / per_row) * self.supers_per_row() + (g % per_row) / t.subs_per_super()
            }
        }
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
    /// The scale of every group (sub-block), as the decoder multiplies by it.
    values: Vec<f32>,
    /// With two-level scales, what is stored: `values[g] = supers[super_of(g)] * subs[g]`.
    two_level: Option<TwoLevelScales>,
}

/// The stored parts of two-level scales.
#[derive(Debug, Clone, PartialEq)]
struct TwoLevelScales {
    shape: TwoLevel,
    /// One per super-block, representable in the dtype.
    supers: Vec<f32>,
    /// One per sub-block, at most `shape.sub_max()`.
    subs: Vec<u8>,
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
        Ok(Self { dtype, values, two_level: None })
    }

    /// Two-level scales of `layout` (which must have them): one super-scale
    /// per super-block, representable in `dtype`, and one sub-scale per
    /// sub-block. Each group's scale is the f32 product `super * sub`, exact
    /// for f16 super-scales (11 + 8 significant bits).
    pub fn two_level(
        dtype: ScaleDtype,
        layout: &GroupLayout,
        supers: Vec<f32>,
        subs: Vec<u8>,
    ) -> Result<Self, CodecError> {
        let Some(shape) = layout.two_level() else {
            return Err(CodecError::LengthMismatch {
                what: "super-scales",
                expected: 0,
                got: supers.len(),
            });
        };
        check_count("super-scales", layout.super_count(), supers.len())?;
        check_count("sub-scales", layout.group_count(), subs.len())?;
        for (group, &v) in supers.iter().enumerate() {
            if !v.is_finite() || v < 0.0 || dtype.round_nearest(group, v).ok() != Some(v) {
                return Err(CodecError::ScaleOutOfRange { group, scale: v });
            }
        }
        if let Some(group) = subs.iter().position(|&q| u32::from(q) > shape.sub_max()) {
            return Err(CodecError::SubScaleOutOfRange {
                group,
                sub_scale: subs[group],
                bits: shape.sub_bits(),
            });
        }
        let values = subs
            .iter()
            .enumerate()
            .map(|(g, &q)| supers[layout.super_of(g)] * f32::from(q))
            .collect();
        Ok(Self { dtype, values, two_level: Some(TwoLevelScales { shape, supers, subs }) })
    }

    /// The super-scales of two-level scales.
    pub fn super_scales(&self) -> Option<&[f32]> {
        self.two_level.as_ref().map(|t| &t.supers[..])
    }

    /// The sub-scales of two-level scales, one per group.
    pub fn sub_scales(&self) -> Option<&[u8]> {
        self.two_level.as_ref().map(|t| &t.subs[..])
    }

    /// Scales as f32.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Storage dtype.
    pub fn dtype(&self) -> ScaleDtype {
        self.dtype
    }

    /// The bytes as stored (FORMAT.md §5.2): f16 or f32 per group, little
    /// endian; for two-level scales, the super-scales so, then the sub-scales
    /// packed LSB-first at k bits each, as codes are.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let Some(t) = &self.two_level else { return dtype_bytes(self.dtype, &self.values) };
        let mut out = dtype_bytes(self.dtype, &t.supers);
        let subs: Vec<u16> = t.subs.iter().map(|&q| u16::from(q)).collect();
        let bits = t.shape.sub_bits();
        let packed_len = lsqr_pack::packed_len(subs.len(), bits).expect("sub-scales fit memory");
        let at = out.len();
        out.resize(at + packed_len, 0);
        lsqr_pack::pack_into(&subs, bits, &mut out[at..]).expect("sub-scales fit their bits");
        out
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

fn dtype_bytes(dtype: ScaleDtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        ScaleDtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        ScaleDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn check_count(what: &'static str, expected: usize, got: usize) -> Result<(), CodecError> {
    if expected == got {
        Ok(())
    } else {
        Err(CodecError::LengthMismatch { what, expected, got })
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
