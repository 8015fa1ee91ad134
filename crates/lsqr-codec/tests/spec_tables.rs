//! The decode tables of docs/FORMAT.md §5.3, computed here from the spec's
//! text alone (f64 arithmetic, rounded to f32 once; the nf quantile as the
//! spec's procedure) and compared bit for bit with what the codec builds,
//! for every codec with a formula and every C in 2..=16. This is the check
//! an independent reader makes; `lut` has no formula (its table is stored).

use lsqr_codec::{CodeWidth, Codebook, CodebookParams, FpLayout};

fn codec_table(c: u32, params: CodebookParams) -> Vec<f32> {
    Codebook::decode_table_for(CodeWidth::new(c).unwrap(), &params).unwrap()
}

/// Compares bit patterns, so that the sign of zero counts.
fn assert_same(what: &str, c: u32, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what} C={c}: length");
    let bad: Vec<usize> =
        (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
    assert!(
        bad.is_empty(),
        "{what} C={c}: {} entries differ from the spec, first code {} (codec {:e}, spec {:e})",
        bad.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

/// "Sign-magnitude": code (n << B) | j is m[j] for n = 0 and -m[j] (sign
/// bit flipped) for n = 1.
fn sign_magnitude(m: &[f32]) -> Vec<f32> {
    m.iter().copied().chain(m.iter().map(|&v| -v)).collect()
}

#[test]
fn seed() {
    for c in 2..=16u32 {
        let b = c - 1;
        let mut want = Vec::new();
        for n in 0..2u32 {
            for k in 0..1u32 << b {
                let v = if k == 0 {
                    0.0f32 // +0.0 for both signs
                } else {
                    let m = (libm::log2(f64::from(k)) / f64::from(b)) as f32;
                    if n == 1 {
                        -m
                    } else {
                        m
                    }
                };
                want.push(v);
            }
        }
        assert_same("seed", c, &codec_table(c, CodebookParams::Seed), &want);
        assert_eq!(want[1 << b].to_bits(), 0, "seed code (1 << B) | 0 is +0.0");
    }
}

#[test]
fn log() {
    for c in 2..=16u32 {
        let j_max = (1u32 << (c - 1)) - 1;
        for mu in [0.0f32, -0.0, 1e-6, 0.5, 3.0, 10.0, 255.0, 1e4] {
            let mu64 = f64::from(mu);
            let m: Vec<f32> = (0..=j_max)
                .map(|j| {
                    let t = f64::from(j) / f64::from(j_max);
                    if j == j_max {
                        1.0
                    } else if mu == 0.0 {
                        t as f32
                    } else {
                        (libm::expm1(t * libm::log1p(mu64)) / mu64) as f32
                    }
                })
                .collect();
            let want = sign_magnitude(&m);
            let what = format!("log mu={mu:?}");
            assert_same(&what, c, &codec_table(c, CodebookParams::Log { mu }), &want);
            assert_eq!(want[1 << (c - 1)].to_bits(), (-0.0f32).to_bits(), "code 1 << B is -0.0");
        }
    }
}

#[test]
fn uniform() {
    for c in 2..=16u32 {
        let j_max = (1u32 << (c - 1)) - 1;
        let m: Vec<f32> = (0..=j_max).map(|j| (f64::from(j) / f64::from(j_max)) as f32).collect();
        assert_same("uniform", c, &codec_table(c, CodebookParams::Uniform), &sign_magnitude(&m));
    }
}

#[test]
fn fp_every_layout() {
    for c in 2..=16u32 {
        for e in 1..=8u32.min(c - 1) {
            let m_bits = c - 1 - e;
            let bias = f64::from((1u32 << (e - 1)) - 1);
            let raw = |j: u32| -> f64 {
                let (ex, f) = (j >> m_bits, f64::from(j & ((1 << m_bits) - 1)));
                if ex == 0 {
                    f * 2f64.powf(1.0 - bias - f64::from(m_bits))
                } else {
                    (2f64.powi(m_bits as i32) + f)
                        * 2f64.powf(f64::from(ex) - bias - f64::from(m_bits))
                }
            };
            let top = raw((1 << (e + m_bits)) - 1);
            let m: Vec<f32> = (0..1u32 << (e + m_bits)).map(|j| (raw(j) / top) as f32).collect();
            let layout = FpLayout::new(e, m_bits).unwrap();
            let what = format!("fp E{e}M{m_bits}");
            assert_same(&what, c, &codec_table(c, CodebookParams::Fp(layout)), &sign_magnitude(&m));
        }
        // E > 8 is refused (FORMAT.md §5.3).
        if c >= 10 {
            assert!(FpLayout::new(9, c - 10).is_err());
        }
    }
}

/// Q(p) exactly as docs/FORMAT.md §5.3 sets it out.
fn spec_quantile(p: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p > 0.5 {
        return -spec_quantile(1.0 - p);
    }
    let t = libm::sqrt(-2.0 * libm::log(p));
    let mut x = -(t
        - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t));
    for _ in 0..200 {
        let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let pdf = libm::exp(-0.5 * x * x) / libm::sqrt(2.0 * std::f64::consts::PI);
        let step = (cdf - p) / pdf;
        x -= step;
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    x
}

#[test]
fn nf() {
    for c in 2..=16u32 {
        let n = f64::from(1u32 << c);
        let half = f64::from(1u32 << (c - 1));
        let offset = ((1.0 - 1.0 / (2.0 * (n - 1.0))) + (1.0 - 1.0 / (2.0 * n))) / 2.0;
        let top = spec_quantile(offset);
        let mut levels: Vec<f32> = Vec::new();
        for i in 0..1u32 << (c - 1) {
            let p = offset + (0.5 - offset) * f64::from(i) / half;
            levels.push((spec_quantile(p) / top) as f32);
        }
        for i in 0..(1u32 << (c - 1)) - 1 {
            let p = offset + (0.5 - offset) * f64::from(i) / (half - 1.0);
            levels.push((-(spec_quantile(p) / top)) as f32);
        }
        levels.push(0.0);
        levels.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert!(levels.windows(2).all(|w| w[0] < w[1]), "C={c}: levels are distinct");
        assert_eq!((levels[0], levels[levels.len() - 1]), (-1.0, 1.0));
        assert_same("nf", c, &codec_table(c, CodebookParams::Nf), &levels);
    }
}
