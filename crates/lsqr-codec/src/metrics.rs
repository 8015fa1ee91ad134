//! Error metrics between an original tensor and its reconstruction.
//!
//! Sums run in f64 so that a 100 M-element tensor's SNR is not limited by
//! the accumulator.

use crate::CodecError;

/// How far a reconstruction is from the original.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ErrorMetrics {
    /// Number of elements compared.
    pub count: usize,
    /// Σ x², the signal energy.
    pub signal_energy: f64,
    /// Σ (x - y)², the error energy.
    pub error_energy: f64,
    /// Σ y², the reconstruction's energy (for the cosine).
    pub reconstruction_energy: f64,
    /// Σ x·y (for the cosine).
    pub dot: f64,
    /// max |x - y|.
    pub max_abs_error: f64,
}

impl ErrorMetrics {
    /// Compares `original` with `reconstructed`, element by element.
    pub fn between(original: &[f32], reconstructed: &[f32]) -> Result<Self, CodecError> {
        if original.len() != reconstructed.len() {
            return Err(CodecError::LengthMismatch {
                what: "reconstruction",
                expected: original.len(),
                got: reconstructed.len(),
            });
        }
        let mut m = Self::default();
        m.accumulate(original, reconstructed);
        Ok(m)
    }

    /// Adds the pairs of `original` and `reconstructed` (zipped; the caller
    /// keeps them the same length), so a tensor can be measured in pieces.
    pub fn accumulate(&mut self, original: &[f32], reconstructed: &[f32]) {
        self.count += original.len().min(reconstructed.len());
        for (&x, &y) in original.iter().zip(reconstructed) {
            let (x, y) = (f64::from(x), f64::from(y));
            let e = x - y;
            self.signal_energy += x * x;
            self.error_energy += e * e;
            self.reconstruction_energy += y * y;
            self.dot += x * y;
            self.max_abs_error = self.max_abs_error.max(e.abs());
        }
    }

    /// Pools two measurements, as if over the concatenated tensors. SNR of a
    /// pooled measurement is the energy-weighted SNR of a whole model.
    pub fn merge(self, other: Self) -> Self {
        Self {
            count: self.count.saturating_add(other.count),
            signal_energy: self.signal_energy + other.signal_energy,
            error_energy: self.error_energy + other.error_energy,
            reconstruction_energy: self.reconstruction_energy + other.reconstruction_energy,
            dot: self.dot + other.dot,
            max_abs_error: self.max_abs_error.max(other.max_abs_error),
        }
    }

    /// Mean squared error (0 for no elements).
    pub fn mse(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.error_energy / self.count as f64
        }
    }

    /// Signal-to-noise ratio in dB, `10 log10(Σx² / Σ(x-y)²)`: +inf for an
    /// exact reconstruction, and NaN when both energies are zero.
    pub fn snr_db(&self) -> f64 {
        10.0 * libm::log10(self.signal_energy / self.error_energy)
    }

    /// Cosine similarity (1 when both are all zeros).
    pub fn cosine(&self) -> f64 {
        let norms = libm::sqrt(self.signal_energy) * libm::sqrt(self.reconstruction_energy);
        if norms == 0.0 {
            if self.signal_energy == self.reconstruction_energy {
                1.0
            } else {
                0.0
            }
        } else {
            self.dot / norms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let m = ErrorMetrics::between(&[1.0, -2.0, 2.0], &[1.0, -1.0, 2.0]).unwrap();
        assert_eq!(m.mse(), 1.0 / 3.0);
        assert!((m.snr_db() - 10.0 * 9f64.log10()).abs() < 1e-12);
        assert_eq!(m.max_abs_error, 1.0);
        assert!((m.cosine() - 7.0 / (3.0 * 6f64.sqrt())).abs() < 1e-12);
        assert_eq!(ErrorMetrics::between(&[1.0], &[1.0]).unwrap().snr_db(), f64::INFINITY);
        assert!(ErrorMetrics::between(&[1.0], &[]).is_err());
    }

    #[test]
    fn merge_pools_energies() {
        let a = ErrorMetrics::between(&[1.0, 2.0], &[1.0, 1.0]).unwrap();
        let b = ErrorMetrics::between(&[3.0], &[2.0]).unwrap();
        let ab = ErrorMetrics::between(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]).unwrap();
        assert_eq!(a.merge(b), ab);
    }
}
