//! Error-compensating rounding: codes chosen column by column, each
//! column's rounding error fed forward to the columns not yet rounded
//! (GPTQ, Frantar et al. 2022, "Accurate Post-Training Quantization for
//! Generative Pre-trained Transformers").
//!
//! Nearest rounding minimises each weight's own error. What a layer's user
//! sees is the error of its outputs, `Σ_rows e H eᵀ` with `e` a row's
//! weight error and `H` the covariance of the layer's inputs (mean of
//! `x xᵀ` over calibration samples). Where inputs are correlated, a column
//! rounded up can be offset by moving the columns that share its signal,
//! before they are rounded. With `H⁻¹ = Uᵀ U` (`U` upper triangular), the
//! optimal correction after rounding column `j` is
//! `w[k] -= (w[j] - q[j]) / U[j][j] * U[j][k]` for every `k > j`; every
//! row is done independently with the same `U`.
//!
//! Scales and codebook are chosen beforehand (from the original weights);
//! only the codes change, so the result is a valid tensor of any codec and
//! layout, and decodes like any other.

use alloc::vec;
use alloc::vec::Vec;

use crate::codebook::Codebook;
use crate::quantize::{inverse, scale_of};
use crate::scale::GroupLayout;
use crate::CodecError;

/// Damping added to the covariance's diagonal before it is factored, as a
/// fraction of the diagonal's mean (GPTQ's default): it keeps `H`
/// invertible when inputs are collinear or never excited, and limits how
/// far errors are pushed onto weakly observed columns.
const DAMPING: f64 = 0.01;

/// How many times the damping is raised tenfold if `H` is still not
/// numerically positive definite.
const DAMPING_RETRIES: usize = 4;

/// The input covariance of a layer, factored for error-compensating
/// rounding. Built once per tensor; any number of quantizations of that
/// tensor (with any codec, width or layout) can use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFeedback {
    columns: usize,
    /// `H`, damped, row-major `columns²`: the output error metric.
    covariance: Vec<f64>,
    /// The order columns are rounded in: largest input energy first
    /// (GPTQ's "act order"), so that the columns that matter most are
    /// rounded while the most columns remain to absorb their error.
    order: Vec<usize>,
    /// `U` with `P H⁻¹ Pᵀ = Uᵀ U` for `P` the permutation to `order`,
    /// upper triangular, row-major `columns²`.
    upper: Vec<f64>,
}

impl ErrorFeedback {
    /// Factors `covariance` (`columns × columns`, row-major, symmetric: the
    /// mean of `x xᵀ` over inputs `x` of a row's length). An error if it is
    /// not square, not finite, or has no positive diagonal.
    pub fn from_covariance(covariance: &[f32], columns: usize) -> Result<Self, CodecError> {
        let bad = || CodecError::InvalidCovariance { columns, got: covariance.len() };
        if columns == 0 || columns.checked_mul(columns) != Some(covariance.len()) {
            return Err(bad());
        }
        if covariance.iter().any(|v| !v.is_finite()) {
            return Err(bad());
        }
        let diag_mean = (0..columns).map(|i| f64::from(covariance[i * columns + i])).sum::<f64>()
            / columns as f64;
        if diag_mean.is_nan() || diag_mean <= 0.0 || diag_mean.is_infinite() {
            return Err(bad());
        }
        let n = columns;
        let mut order: Vec<usize> = (0..n).collect();
        // Stable: equal energies keep their column order.
        order.sort_by(|&a, &b| covariance[b * n + b].total_cmp(&covariance[a * n + a]));
        let mut damping = DAMPING * diag_mean;
        for _ in 0..=DAMPING_RETRIES {
            let mut h: Vec<f64> = covariance.iter().map(|&v| f64::from(v)).collect();
            for i in 0..n {
                h[i * n + i] += damping;
            }
            let permuted: Vec<f64> =
                (0..n * n).map(|k| h[order[k / n] * n + order[k % n]]).collect();
            if let Some(m) = reverse_cholesky(&permuted, n) {
                let upper = upper_inverse(&m, n);
                return Ok(Self { columns, covariance: h, order, upper });
            }
            damping *= 10.0;
        }
        Err(bad())
    }

    /// Columns (the row length of the tensors this applies to).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// `Σ_rows (x - y) H (x - y)ᵀ` over rows of [`Self::columns`]: the
    /// output error energy (per input sample) of weights `y` standing in
    /// for `x`.
    pub fn output_error(&self, x: &[f32], y: &[f32]) -> f64 {
        let n = self.columns;
        let mut e = vec![0.0f64; n];
        let mut total = 0.0;
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact(n)) {
            for ((e, &a), &b) in e.iter_mut().zip(xr).zip(yr) {
                *e = f64::from(a) - f64::from(b);
            }
            for (i, &ei) in e.iter().enumerate() {
                let row = &self.covariance[i * n..(i + 1) * n];
                total += ei * row.iter().zip(&e).map(|(h, ej)| h * ej).sum::<f64>();
            }
        }
        total
    }

    /// Encodes `data` (rows of `columns`, which must be [`Self::columns`])
    /// into `codes` with the fixed `codebook` and per-group `scales` of
    /// `layout`.
    pub(crate) fn encode(
        &self,
        data: &[f32],
        columns: usize,
        layout: &GroupLayout,
        scales: &[f32],
        codebook: &Codebook,
        codes: &mut [u16],
    ) -> Result<(), CodecError> {
        let n = self.columns;
        if data.is_empty() {
            return Ok(());
        }
        if columns != n {
            return Err(CodecError::InvalidCovariance { columns, got: n * n });
        }
        let table = codebook.decode_table();
        let mut w = vec![0.0f64; n];
        for (r, (row, out)) in data.chunks_exact(n).zip(codes.chunks_exact_mut(n)).enumerate() {
            for (w, &c) in w.iter_mut().zip(&self.order) {
                *w = f64::from(row[c]);
            }
            for (j, &col) in self.order.iter().enumerate() {
                // Groups index the flat tensor (a `tensor` group spans rows).
                let s = scale_of(scales, layout.group_of(r * n + col));
                let code = codebook.encode_one((w[j] as f32) * inverse(s));
                out[col] = code;
                let u = &self.upper[j * n..(j + 1) * n];
                let err = (w[j] - f64::from(table[usize::from(code)] * s)) / u[j];
                for (wk, &ujk) in w[j + 1..].iter_mut().zip(&u[j + 1..]) {
                    *wk -= err * ujk;
                }
            }
        }
        Ok(())
    }
}

/// `M` upper triangular with `h = M Mᵀ` (a Cholesky factorisation taken
/// from the last column backwards), or `None` if a pivot is not positive.
fn reverse_cholesky(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut m = vec![0.0f64; n * n];
    for j in (0..n).rev() {
        // Column j of row i depends on the columns after j, all done.
        let (head, rest) = m.split_at_mut(j * n);
        let row_j = &mut rest[..n];
        let pivot = h[j * n + j] - row_j[j + 1..].iter().map(|v| v * v).sum::<f64>();
        if pivot.is_nan() || pivot <= 0.0 {
            return None;
        }
        let d = libm::sqrt(pivot);
        row_j[j] = d;
        let tail_j = &row_j[j + 1..];
        for (i, row_i) in head.chunks_exact_mut(n).enumerate() {
            let dot: f64 = row_i[j + 1..].iter().zip(tail_j).map(|(a, b)| a * b).sum();
            row_i[j] = (h[i * n + j] - dot) / d;
        }
    }
    Some(m)
}

/// The inverse of the upper-triangular `m` (positive diagonal), itself
/// upper triangular: with `h = M Mᵀ`, `h⁻¹ = Uᵀ U` for `U = M⁻¹`.
fn upper_inverse(m: &[f64], n: usize) -> Vec<f64> {
    // Row by row from the bottom: U[i][j] = -(Σ_{i<k<=j} M[i][k] U[k][j]) / M[i][i].
    let mut u = vec![0.0f64; n * n];
    for i in (0..n).rev() {
        let d = m[i * n + i];
        u[i * n + i] = 1.0 / d;
        let (above, below) = u.split_at_mut((i + 1) * n);
        let row = &mut above[i * n..];
        // Σ_k M[i][k] U[k][·] over the rows k > i already done.
        for k in i + 1..n {
            let mik = m[i * n + k];
            if mik == 0.0 {
                continue;
            }
            let uk = &below[(k - i - 1) * n..(k - i) * n];
            for (r, &v) in row[k..].iter_mut().zip(&uk[k..]) {
                *r -= mik * v;
            }
        }
        for r in &mut row[i + 1..] {
            *r /= d;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul_t(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        // a * bᵀ
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                out[i * n + j] = (0..n).map(|k| a[i * n + k] * b[j * n + k]).sum();
            }
        }
        out
    }

    fn spd(n: usize) -> Vec<f64> {
        let a: Vec<f64> = (0..n * n).map(|i| ((i * 7919 % 101) as f64 / 50.0) - 1.0).collect();
        let mut h = matmul_t(&a, &a, n);
        for i in 0..n {
            h[i * n + i] += 0.5;
        }
        h
    }

    #[test]
    fn factors_reproduce_the_covariance_and_its_inverse() {
        let n = 9;
        let h = spd(n);
        let m = reverse_cholesky(&h, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(m[i * n + j], 0.0);
            }
        }
        let back = matmul_t(&m, &m, n);
        for (a, b) in back.iter().zip(&h) {
            assert!((a - b).abs() < 1e-9, "{a} {b}");
        }
        let u = upper_inverse(&m, n);
        // M U = I.
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| m[i * n + k] * u[k * n + j]).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-9, "{i} {j} {v}");
            }
        }
    }

    #[test]
    fn a_matrix_that_is_not_positive_definite_is_refused() {
        let h = [1.0, 2.0, 2.0, 1.0];
        assert!(reverse_cholesky(&h, 2).is_none());
        assert!(ErrorFeedback::from_covariance(&[0.0; 4], 2).is_err());
        assert!(ErrorFeedback::from_covariance(&[1.0; 3], 2).is_err());
        assert!(ErrorFeedback::from_covariance(&[1.0, f32::NAN, f32::NAN, 1.0], 2).is_err());
    }
}
