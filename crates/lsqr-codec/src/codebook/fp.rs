//! ExMy minifloat magnitudes.

use alloc::vec::Vec;

use super::CodeWidth;
use crate::CodecError;

/// A minifloat layout: 1 sign bit, E exponent bits, M mantissa bits, with
/// subnormals and no Inf/NaN patterns (every code is a finite value, as in
/// OCP's E2M1/E2M3/E3M2; for E4M3 this differs from OCP only in its top code,
/// which OCP reserves for NaN). Exponent bias is `2^(E-1) - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FpLayout {
    exp_bits: u8,
    man_bits: u8,
}

impl FpLayout {
    /// A layout with E >= 1 and 1 + E + M in 2..=16.
    pub fn new(exp_bits: u32, man_bits: u32) -> Result<Self, CodecError> {
        // Bounded before adding, so no sum can overflow.
        if exp_bits == 0
            || exp_bits > 8
            || man_bits > 14
            || !(2..=16).contains(&(1 + exp_bits + man_bits))
        {
            return Err(CodecError::InvalidFpLayout { exp_bits, man_bits });
        }
        Ok(Self { exp_bits: exp_bits as u8, man_bits: man_bits as u8 })
    }

    /// The default layout for a width: the OCP MX element types where they
    /// exist (E2M1 at 4 bits, E2M3 at 6, E4M3 at 8), five exponent bits from
    /// 10 bits up (E5M10 at 16 bits is IEEE half's layout, its top exponent finite), and in between
    /// one more exponent bit every other width.
    pub fn for_width(width: CodeWidth) -> Self {
        let exp_bits = match width.bits() {
            2 => 1,
            3..=6 => 2,
            7 => 3,
            8 | 9 => 4,
            _ => 5,
        };
        Self { exp_bits, man_bits: (width.bits() - 1 - exp_bits as u32) as u8 }
    }

    /// Exponent bits E.
    pub fn exp_bits(self) -> u32 {
        u32::from(self.exp_bits)
    }

    /// Mantissa bits M.
    pub fn man_bits(self) -> u32 {
        u32::from(self.man_bits)
    }

    /// C = 1 + E + M.
    pub fn width(self) -> CodeWidth {
        CodeWidth::new(1 + self.exp_bits() + self.man_bits()).expect("validated in new")
    }
}

impl core::fmt::Display for FpLayout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "E{}M{}", self.exp_bits, self.man_bits)
    }
}

/// The 2^(E+M) non-negative values in code order (which is ascending),
/// divided by the largest so the top code is exactly 1.
pub(super) fn magnitudes(layout: FpLayout) -> Vec<f32> {
    let (e_bits, m_bits) = (layout.exp_bits(), layout.man_bits());
    let bias = (1i32 << (e_bits - 1)) - 1;
    let value = |code: u32| -> f64 {
        let e = (code >> m_bits) as i32;
        let m = f64::from(code & ((1 << m_bits) - 1));
        let implicit = if e == 0 { 0.0 } else { f64::from(1u32 << m_bits) };
        let exponent = e.max(1) - bias - m_bits as i32;
        (implicit + m) * libm::exp2(f64::from(exponent))
    };
    let count = 1u32 << (e_bits + m_bits);
    let max = value(count - 1);
    (0..count).map(|c| (value(c) / max) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn e2m1_is_ocp_fp4() {
        let m = magnitudes(FpLayout::new(2, 1).unwrap());
        let want = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0].map(|v: f64| (v / 6.0) as f32);
        assert_eq!(m, want);
    }

    #[test]
    fn e4m3_and_e5m10_ranges() {
        let m = magnitudes(FpLayout::new(4, 3).unwrap());
        // Largest finite with every pattern finite: 1.875 * 2^8 = 480;
        // smallest subnormal 2^-9.
        assert_eq!(m[1], (2f64.powi(-9) / 480.0) as f32);
        let h = magnitudes(FpLayout::for_width(CodeWidth::new(16).unwrap()));
        // IEEE half's patterns, with the Inf/NaN exponent finite: the
        // largest is 1.999 * 2^16 = 131008, the smallest subnormal 2^-24.
        assert_eq!(h[1], (2f64.powi(-24) / 131008.0) as f32);
        assert_eq!(h[0x3c00], (1.0 / 131008.0) as f32);
        assert_eq!(h[0x7bff], (65504.0 / 131008.0) as f32);
    }

    #[test]
    fn layouts() {
        for bits in 2..=16 {
            let w = CodeWidth::new(bits).unwrap();
            let l = FpLayout::for_width(w);
            assert_eq!(l.width(), w);
            let m = magnitudes(l);
            assert!(m.windows(2).all(|p| p[0] < p[1]), "{l}");
        }
        assert_eq!(FpLayout::for_width(CodeWidth::new(8).unwrap()).to_string(), "E4M3");
        assert!(FpLayout::new(0, 3).is_err());
        assert!(FpLayout::new(5, 11).is_err());
    }
}
