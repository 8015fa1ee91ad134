//! Codebooks: what a C-bit code means at unit scale.
//!
//! Every codebook, whatever its family, is materialised as two tables:
//! - a **decode table** of `2^C` f32 values indexed by code, so decoding is a
//!   single look-up times the group's scale (the kernels depend on exactly this);
//! - a **threshold table** for encoding, searched without branches.
//!
//! Families:
//! - [`seed`](Codebook::seed): the reference LSQR codec, bit-exact;
//! - [`log`](Codebook::log): μ-law signed logarithmic levels, the default;
//! - [`uniform`](Codebook::uniform): the symmetric integer grid;
//! - [`nf`](Codebook::nf): NormalFloat-C (NF4 at C = 4);
//! - [`fp`](Codebook::fp): ExMy minifloats with subnormals;
//! - [`lut`](Codebook::lut): an explicit table, trained per tensor.

mod fp;
mod log;
mod nf;
mod seed;
pub(crate) mod threshold;

use alloc::vec::Vec;

pub use fp::FpLayout;
pub use seed::seed_reference_encode;

use crate::CodecError;
use threshold::{Layout, ThresholdTable};

/// The code width C = B + 1 (sign bit plus B magnitude bits), 2..=16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeWidth(u8);

impl CodeWidth {
    /// Smallest supported width.
    pub const MIN: u32 = 2;
    /// Largest supported width.
    pub const MAX: u32 = 16;

    /// Validates a width.
    pub fn new(bits: u32) -> Result<Self, CodecError> {
        if (Self::MIN..=Self::MAX).contains(&bits) {
            Ok(Self(bits as u8))
        } else {
            Err(CodecError::InvalidBits { bits })
        }
    }

    /// C, the bits per code.
    pub fn bits(self) -> u32 {
        u32::from(self.0)
    }

    /// B = C - 1, the bits of the magnitude field in sign-magnitude codebooks.
    pub fn magnitude_bits(self) -> u32 {
        self.bits() - 1
    }

    /// Number of distinct codes, 2^C.
    pub fn code_count(self) -> usize {
        1usize << self.bits()
    }

    /// The largest code, 2^C - 1.
    pub fn max_code(self) -> u16 {
        ((1u32 << self.bits()) - 1) as u16
    }
}

/// The codebook families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// The reference LSQR codec, `(-1)^n * log2(k) / B`.
    Seed,
    /// μ-law signed logarithmic levels (the default).
    Log,
    /// Symmetric integer grid `(-J..=J) / J`.
    Uniform,
    /// NormalFloat-C.
    Nf,
    /// ExMy minifloat.
    Fp,
    /// Explicit per-tensor table.
    Lut,
}

impl CodecKind {
    /// All families, in a fixed order.
    pub const ALL: [CodecKind; 6] =
        [Self::Seed, Self::Log, Self::Uniform, Self::Nf, Self::Fp, Self::Lut];

    /// Lower-case name as used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Log => "log",
            Self::Uniform => "uniform",
            Self::Nf => "nf",
            Self::Fp => "fp",
            Self::Lut => "lut",
        }
    }

    /// Parses [`CodecKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl core::fmt::Display for CodecKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The parameters that, with the width, fully determine a codebook. This is
/// what a container stores per tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum CodebookParams {
    /// No parameters.
    Seed,
    /// The μ of the companding curve (0 is the uniform limit).
    Log {
        /// μ >= 0.
        mu: f32,
    },
    /// No parameters.
    Uniform,
    /// No parameters.
    Nf,
    /// The minifloat layout.
    Fp(FpLayout),
    /// The explicit table of `2^C` values, indexed by code, non-decreasing.
    Lut(Vec<f32>),
}

/// A codebook of width C: decode table plus encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    width: CodeWidth,
    params: CodebookParams,
    decode_table: Vec<f32>,
    encoder: ThresholdTable,
}

impl Codebook {
    /// The reference LSQR codec: code `(n << B) | k` decodes to
    /// `(-1)^n * log2(k) / B`. Its encoder reproduces the reference
    /// `float_to_logsigned` bit for bit. Its levels are dense near ±1 and
    /// coarse near 0 (the first non-zero level is 1/B), which is why it is
    /// kept for compatibility only.
    pub fn seed(width: CodeWidth) -> Self {
        let (decode_table, encoder) = seed::tables(width);
        Self { width, params: CodebookParams::Seed, decode_table, encoder }
    }

    /// μ-law signed logarithmic levels: sign plus magnitude index j in
    /// 0..=J (J = 2^B - 1) with `level(j) = ((1+μ)^(j/J) - 1) / μ`.
    /// j = 0 is exactly zero, j = J is 1, and μ → 0 tends to uniform, so
    /// μ sets how much precision moves toward zero.
    pub fn log(width: CodeWidth, mu: f32) -> Result<Self, CodecError> {
        if !mu.is_finite() || mu < 0.0 {
            return Err(CodecError::InvalidMu { mu });
        }
        let magnitudes = log::magnitudes(width, mu);
        Ok(Self::sign_magnitude(width, CodebookParams::Log { mu }, &magnitudes))
    }

    /// The symmetric integer grid `(-J..=J) / J`, J = 2^B - 1, in
    /// sign-magnitude (the code for -0 decodes to 0 and is never produced):
    /// the int-C baseline.
    pub fn uniform(width: CodeWidth) -> Self {
        Self::sign_magnitude(width, CodebookParams::Uniform, &uniform_magnitudes(width))
    }

    /// NormalFloat-C: levels at quantiles of the standard normal, normalised
    /// to ±1, with an exact zero; 2^(C-1) positive and 2^(C-1) - 1 negative
    /// levels. At C = 4 these are bitsandbytes' NF4 values.
    pub fn nf(width: CodeWidth) -> Self {
        let levels = nf::levels(width);
        Self::sorted(width, CodebookParams::Nf, levels)
    }

    /// An ExMy minifloat with subnormals, every pattern finite, normalised so
    /// that the largest magnitude is 1.
    pub fn fp(layout: FpLayout) -> Self {
        let width = layout.width();
        let magnitudes = fp::magnitudes(layout);
        Self::sign_magnitude(width, CodebookParams::Fp(layout), &magnitudes)
    }

    /// An explicit table of `2^C` finite values in non-decreasing order, indexed
    /// by code (the `lut` codec stores it with the tensor).
    pub fn lut(width: CodeWidth, table: Vec<f32>) -> Result<Self, CodecError> {
        check_lut(width, &table)?;
        Ok(Self::sorted(width, CodebookParams::Lut(table.clone()), table))
    }

    /// Rebuilds a codebook from stored parameters.
    pub fn from_params(width: CodeWidth, params: CodebookParams) -> Result<Self, CodecError> {
        match params {
            CodebookParams::Seed => Ok(Self::seed(width)),
            CodebookParams::Log { mu } => Self::log(width, mu),
            CodebookParams::Uniform => Ok(Self::uniform(width)),
            CodebookParams::Nf => Ok(Self::nf(width)),
            CodebookParams::Fp(layout) if layout.width() == width => Ok(Self::fp(layout)),
            CodebookParams::Fp(layout) => Err(CodecError::InvalidFpLayout {
                exp_bits: layout.exp_bits(),
                man_bits: layout.man_bits(),
            }),
            CodebookParams::Lut(table) => Self::lut(width, table),
        }
    }

    /// Only the decode table of the codebook `params` describe: what a
    /// reader needs to decode, without building the encoder (whose `seed`
    /// thresholds cost far more than the table at C = 16). Equal to
    /// `Codebook::from_params(width, params)?.decode_table()`.
    pub fn decode_table_for(
        width: CodeWidth,
        params: &CodebookParams,
    ) -> Result<Vec<f32>, CodecError> {
        Ok(match params {
            CodebookParams::Seed => seed::decode_table(width),
            CodebookParams::Log { mu } => {
                if !mu.is_finite() || *mu < 0.0 {
                    return Err(CodecError::InvalidMu { mu: *mu });
                }
                mirrored(&log::magnitudes(width, *mu))
            }
            CodebookParams::Uniform => mirrored(&uniform_magnitudes(width)),
            CodebookParams::Nf => nf::levels(width),
            CodebookParams::Fp(layout) if layout.width() == width => {
                mirrored(&fp::magnitudes(*layout))
            }
            CodebookParams::Fp(layout) => {
                return Err(CodecError::InvalidFpLayout {
                    exp_bits: layout.exp_bits(),
                    man_bits: layout.man_bits(),
                })
            }
            CodebookParams::Lut(table) => {
                check_lut(width, table)?;
                table.clone()
            }
        })
    }

    /// Sign-magnitude codebook from ascending magnitudes (`2^B` of them, the
    /// first 0): code `(n << B) | j` decodes to `(-1)^n * magnitudes[j]`.
    fn sign_magnitude(width: CodeWidth, params: CodebookParams, magnitudes: &[f32]) -> Self {
        debug_assert_eq!(magnitudes.len(), width.code_count() / 2);
        let decode_table = mirrored(magnitudes);
        let layout =
            Layout::SignMagnitude { sign_shift: width.magnitude_bits(), zero_keeps_sign: false };
        let encoder = ThresholdTable::nearest(layout, magnitudes, 0);
        Self { width, params, decode_table, encoder }
    }

    /// Codebook whose codes index ascending levels directly.
    fn sorted(width: CodeWidth, params: CodebookParams, levels: Vec<f32>) -> Self {
        let encoder = ThresholdTable::nearest(Layout::Sorted, &levels, 0);
        Self { width, params, decode_table: levels, encoder }
    }

    /// The family.
    pub fn kind(&self) -> CodecKind {
        match self.params {
            CodebookParams::Seed => CodecKind::Seed,
            CodebookParams::Log { .. } => CodecKind::Log,
            CodebookParams::Uniform => CodecKind::Uniform,
            CodebookParams::Nf => CodecKind::Nf,
            CodebookParams::Fp(_) => CodecKind::Fp,
            CodebookParams::Lut(_) => CodecKind::Lut,
        }
    }

    /// The width C.
    pub fn width(&self) -> CodeWidth {
        self.width
    }

    /// The parameters to store with a tensor.
    pub fn params(&self) -> &CodebookParams {
        &self.params
    }

    /// `2^C` values indexed by code, at unit scale.
    pub fn decode_table(&self) -> &[f32] {
        &self.decode_table
    }

    /// The code of one value at unit scale (no scale applied).
    #[inline]
    pub fn encode_one(&self, x: f32) -> u16 {
        self.encoder.encode(x)
    }

    /// The value of one code at unit scale, or `None` if it does not fit C bits.
    #[inline]
    pub fn decode_one(&self, code: u16) -> Option<f32> {
        self.decode_table.get(usize::from(code)).copied()
    }

    /// The encoder, for `crate::paths`.
    pub(crate) fn encoder(&self) -> &ThresholdTable {
        &self.encoder
    }

    /// Encodes `xs[i] * inv_scale` into `out[i]`; the caller has checked that
    /// every input is finite (a NaN would encode as slot 0).
    pub(crate) fn encode_scaled(&self, xs: &[f32], inv_scale: f32, out: &mut [u16]) {
        self.encoder.encode_scaled(xs, inv_scale, out);
    }
}

/// Sign-magnitude decode table: the magnitudes, then their negations.
fn mirrored(magnitudes: &[f32]) -> Vec<f32> {
    magnitudes.iter().copied().chain(magnitudes.iter().map(|&m| -m)).collect()
}

/// `j / J` for j in 0..=J, J = 2^B - 1.
fn uniform_magnitudes(width: CodeWidth) -> Vec<f32> {
    let j = width.code_count() / 2 - 1;
    (0..=j).map(|i| (i as f64 / j as f64) as f32).collect()
}

/// A `lut` table holds 2^C finite values in non-decreasing order (FORMAT.md
/// §5.3): equal neighbours are allowed, since Lloyd-Max levels distinct in
/// f64 can round to the same f32, and such a table still decodes.
fn check_lut(width: CodeWidth, table: &[f32]) -> Result<(), CodecError> {
    if table.len() != width.code_count() {
        return Err(CodecError::InvalidTable { reason: "length is not 2^C", at: table.len() });
    }
    if let Some(i) = table.iter().position(|v| !v.is_finite()) {
        return Err(CodecError::InvalidTable { reason: "entry is not finite", at: i });
    }
    if let Some(i) = table.windows(2).position(|w| w[0] > w[1]) {
        return Err(CodecError::InvalidTable {
            reason: "entry is less than the one before",
            at: i + 1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_table_for_equals_the_codebook_table() {
        for bits in 2..=12 {
            let w = CodeWidth::new(bits).unwrap();
            let lut: Vec<f32> = (0..w.code_count()).map(|i| i as f32 / 7.0 - 1.0).collect();
            for params in [
                CodebookParams::Seed,
                CodebookParams::Log { mu: 7.5 },
                CodebookParams::Uniform,
                CodebookParams::Nf,
                CodebookParams::Fp(FpLayout::for_width(w)),
                CodebookParams::Lut(lut),
            ] {
                let full = Codebook::from_params(w, params.clone()).unwrap();
                let table = Codebook::decode_table_for(w, &params).unwrap();
                let bits_of = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits_of(&table), bits_of(full.decode_table()), "{params:?} C={bits}");
            }
        }
        let w = CodeWidth::new(4).unwrap();
        assert!(Codebook::decode_table_for(w, &CodebookParams::Log { mu: -1.0 }).is_err());
        assert!(Codebook::decode_table_for(w, &CodebookParams::Lut(alloc::vec![0.0; 3])).is_err());
    }

    #[test]
    fn width_bounds() {
        assert!(CodeWidth::new(1).is_err());
        assert!(CodeWidth::new(17).is_err());
        assert_eq!(CodeWidth::new(16).unwrap().max_code(), u16::MAX);
        assert_eq!(CodeWidth::new(2).unwrap().code_count(), 4);
    }

    #[test]
    fn uniform_c3_levels() {
        let cb = Codebook::uniform(CodeWidth::new(3).unwrap());
        let third = (1.0f64 / 3.0) as f32;
        let two_thirds = (2.0f64 / 3.0) as f32;
        assert_eq!(
            cb.decode_table(),
            &[0.0, third, two_thirds, 1.0, -0.0, -third, -two_thirds, -1.0]
        );
        assert_eq!(cb.encode_one(-1.0), 7);
        assert_eq!(cb.encode_one(-0.1), 0);
        assert_eq!(cb.encode_one(0.9), 3);
    }

    #[test]
    fn lut_rejects_bad_tables() {
        let w = CodeWidth::new(2).unwrap();
        assert!(matches!(
            Codebook::lut(w, alloc::vec![0.0; 3]),
            Err(CodecError::InvalidTable { at: 3, .. })
        ));
        assert!(matches!(
            Codebook::lut(w, alloc::vec![0.0, 1.0, f32::NAN, 2.0]),
            Err(CodecError::InvalidTable { at: 2, .. })
        ));
        assert!(matches!(
            Codebook::lut(w, alloc::vec![0.0, 1.0, 0.5, 2.0]),
            Err(CodecError::InvalidTable { at: 2, .. })
        ));
    }

    #[test]
    fn log_rejects_bad_mu() {
        let w = CodeWidth::new(4).unwrap();
        assert!(Codebook::log(w, -1.0).is_err());
        assert!(Codebook::log(w, f32::NAN).is_err());
        assert!(Codebook::log(w, f32::INFINITY).is_err());
    }
}
