//! μ-law companded magnitudes.

use alloc::vec::Vec;

use super::CodeWidth;

/// `level(j) = ((1+μ)^(j/J) - 1) / μ` for j in 0..=J, J = 2^B - 1, computed
/// as `expm1(j/J * ln1p(μ)) / μ` so small μ keeps full precision; μ = 0 is
/// the uniform grid j/J exactly. Level 0 is 0 and level J is 1 exactly.
pub(super) fn magnitudes(width: CodeWidth, mu: f32) -> Vec<f32> {
    let j_max = (width.code_count() / 2 - 1) as u32;
    let mu = f64::from(mu);
    let log1p_mu = libm::log1p(mu);
    (0..=j_max)
        .map(|j| {
            if j == j_max {
                return 1.0;
            }
            let t = f64::from(j) / f64::from(j_max);
            let level = if mu == 0.0 { t } else { libm::expm1(t * log1p_mu) / mu };
            level as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_monotone() {
        for bits in 2..=16 {
            let w = CodeWidth::new(bits).unwrap();
            for mu in [0.0f32, 1e-6, 0.5, 10.0, 255.0, 1e4] {
                let m = magnitudes(w, mu);
                assert_eq!(m[0], 0.0);
                assert_eq!(*m.last().unwrap(), 1.0);
                assert!(m.windows(2).all(|p| p[0] <= p[1]), "C={bits} mu={mu}");
            }
        }
    }

    #[test]
    fn mu_zero_is_uniform_and_mu_moves_precision_to_zero() {
        let w = CodeWidth::new(4).unwrap();
        let u = magnitudes(w, 0.0);
        assert_eq!(u[1], (1.0f64 / 7.0) as f32);
        let l = magnitudes(w, 255.0);
        assert!(l[1] < u[1] / 10.0);
        // mu = 255, J = 7: ((256)^(1/7) - 1) / 255
        let expected = (256f64.powf(1.0 / 7.0) - 1.0) / 255.0;
        assert!((f64::from(l[1]) - expected).abs() < 1e-7);
    }
}
