//! NormalFloat-C levels.

use alloc::vec::Vec;

use super::CodeWidth;

/// The NF-C levels in ascending order, normalised to [-1, 1].
///
/// This generalises bitsandbytes' `create_normal_map(offset, use_extra_value=True)`:
/// 2^(C-1) positive levels at the normal quantiles of
/// `linspace(offset, 0.5, 2^(C-1) + 1)` (last point dropped), 2^(C-1) - 1
/// negative levels mirrored from `linspace(offset, 0.5, 2^(C-1))`, and zero.
/// NF4's offset 0.9677083 is the mean of `1 - 1/(2*15)` and `1 - 1/(2*16)`;
/// with 2^C in place of 16 that gives the offset for every C.
pub(super) fn levels(width: CodeWidth) -> Vec<f32> {
    let n = width.code_count() as f64;
    let offset = ((1.0 - 1.0 / (2.0 * (n - 1.0))) + (1.0 - 1.0 / (2.0 * n))) / 2.0;
    let half = width.code_count() / 2;
    let top = normal_quantile(offset);
    let quantiles = |count: usize| {
        // linspace(offset, 0.5, count + 1) without its last point.
        (0..count).map(move |i| {
            let p = offset + (0.5 - offset) * i as f64 / count as f64;
            normal_quantile(p) / top
        })
    };
    let mut levels: Vec<f64> = quantiles(half).collect();
    levels.push(0.0);
    levels.extend(quantiles(half - 1).map(|q| -q));
    let mut levels: Vec<f32> = levels.into_iter().map(|v| v as f32).collect();
    levels.sort_by(f32::total_cmp);
    levels
}

/// The standard normal quantile Φ⁻¹(p) for p in (0, 1).
///
/// Lower tail by Newton's method on `Φ(x) = erfc(-x/√2)/2`, which keeps full
/// relative precision for tiny p, started from Abramowitz & Stegun 26.2.23
/// (error < 4.5e-4) so that two or three steps reach f64 precision; Φ is
/// convex there, so after the first step the iterates approach the root
/// monotonically. The upper tail reflects, using that `1 - p` is exact for
/// p in [0.5, 1).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p > 0.5 {
        return -normal_quantile(1.0 - p);
    }
    let cdf = |x: f64| 0.5 * libm::erfc(-x / core::f64::consts::SQRT_2);
    let pdf = |x: f64| libm::exp(-0.5 * x * x) / libm::sqrt(2.0 * core::f64::consts::PI);
    let t = libm::sqrt(-2.0 * libm::log(p));
    let mut x = -(t
        - (2.515_517 + 0.802_853 * t + 0.010_328 * t * t)
            / (1.0 + 1.432_788 * t + 0.189_269 * t * t + 0.001_308 * t * t * t));
    for _ in 0..200 {
        let step = (cdf(x) - p) / pdf(x);
        x -= step;
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bitsandbytes' NF4 table (functional.py), as f32.
    const NF4: [f64; 16] = [
        -1.0,
        -0.696_192_800_998_687_7,
        -0.525_073_051_452_636_7,
        -0.394_917_488_098_144_53,
        -0.284_441_381_692_886_35,
        -0.184_773_430_228_233_34,
        -0.091_050_036_251_544_95,
        0.0,
        0.079_580_299_556_255_34,
        0.160_930_201_411_247_25,
        0.246_112_301_945_686_34,
        0.337_915_241_718_292_24,
        0.440_709_829_330_444_34,
        0.562_617_003_917_694_1,
        0.722_956_836_223_602_3,
        1.0,
    ];

    #[test]
    fn c4_is_nf4() {
        let lv = levels(CodeWidth::new(4).unwrap());
        for (got, want) in lv.iter().zip(NF4) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn quantile_known_values() {
        assert_eq!(normal_quantile(0.5), 0.0);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
        assert!((normal_quantile(0.025) + 1.959_963_984_540_054).abs() < 1e-12);
        assert!((normal_quantile(1e-10) + 6.361_340_902_404_056).abs() < 1e-9);
    }

    #[test]
    fn every_width_has_zero_and_unit_ends() {
        for bits in 2..=16 {
            let lv = levels(CodeWidth::new(bits).unwrap());
            assert_eq!(lv.len(), 1 << bits);
            assert_eq!(lv[0], -1.0);
            assert_eq!(*lv.last().unwrap(), 1.0);
            assert!(lv.contains(&0.0));
            assert!(lv.windows(2).all(|w| w[0] < w[1]), "C={bits}");
        }
    }
}
