//! Deterministic synthetic weights, for examples, benches and tests that
//! need realistic-looking tensors without a model file.
//!
//! Pretrained weights are roughly zero-mean, bell-shaped and heavier-tailed
//! than a Gaussian; a Gaussian and a Laplacian of the same spread bracket
//! them. The generator is a fixed xorshift so every run sees the same data.

/// A small, fast, deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1), never 0 or 1.
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.open01(), self.open01());
        (-2.0 * u.ln()).sqrt() * (2.0 * core::f64::consts::PI * v).cos()
    }

    /// Laplacian with unit variance.
    pub fn laplace(&mut self) -> f64 {
        let u = self.open01() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).ln() / core::f64::consts::SQRT_2
    }
}

/// The weight distributions used by the examples and benches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// N(0, σ²).
    Gaussian,
    /// Laplace with standard deviation σ.
    Laplacian,
}

impl Distribution {
    /// Name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gaussian => "gaussian",
            Self::Laplacian => "laplacian",
        }
    }
}

/// `n` weights with standard deviation `std` (0.02, typical of a
/// transformer's linear layers, in the examples).
pub fn weights(dist: Distribution, n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let z = match dist {
                Distribution::Gaussian => rng.normal(),
                Distribution::Laplacian => rng.laplace(),
            };
            (z * f64::from(std)) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_match() {
        for dist in [Distribution::Gaussian, Distribution::Laplacian] {
            let w = weights(dist, 200_000, 0.02, 7);
            let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / w.len() as f64;
            let var =
                w.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / w.len() as f64;
            assert!(mean.abs() < 2e-4, "{mean}");
            assert!((var.sqrt() - 0.02).abs() < 4e-4, "{}", var.sqrt());
        }
        assert_eq!(
            weights(Distribution::Gaussian, 5, 1.0, 3),
            weights(Distribution::Gaussian, 5, 1.0, 3)
        );
    }
}
