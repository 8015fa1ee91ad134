//! AVX2+FMA kernels: eight `f32` lanes per step, the ragged tail done by the
//! same vector code through masked loads and stores (so a row's last
//! elements see the same approximation as its first).
//!
//! # Transcendentals
//!
//! `exp`, `tanh` and `erf` are vector approximations, not libm:
//! - `exp8`: Cephes `expf` (range reduction by `ln 2` split in two, degree-5
//!   polynomial), a few ulp on `[-87.33, 88.37]`. Below `-87.33` it returns
//!   `0` (libm returns a subnormal there, `< 1.2e-38`); above `88.37` it
//!   returns `+inf` (libm overflows only above `88.72`: callers use it where
//!   that is harmless, in `1 + exp(-x)` denominators, `exp(2|x|)` of tanh and
//!   `exp(x - max)` of softmax, where the results differ by `< 1e-36`); NaN
//!   propagates.
//! - `tanh8`: Cephes `tanhf` (odd polynomial for `|x| < 0.625`, otherwise
//!   `1 - 2 / (exp(2|x|) + 1)`).
//! - `erf8`: the rational `x P(x^2) / Q(x^2)` of Eigen/XLA on `x` clamped to
//!   `[-4, 4]`, exactly `+-1` beyond `|x| = 3.97` (where erf rounds to `+-1`).
//!
//! The bounds each operator is tested to against the libm reference are in
//! the crate documentation.

// The polynomial coefficients are kept as published (Cephes, Eigen), digits
// beyond f32 precision included.
#![allow(clippy::excessive_precision)]

use core::arch::x86_64::*;

use crate::arch::generic::{GELU_TANH_CUBIC, SQRT_2_OVER_PI};

/// 8 ones then 8 zeros: `loadu(MASKS[8 - r..])` is the mask of the first `r` lanes.
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The mask selecting the first `rem` lanes (`rem` in `0..=8`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tail_mask(rem: usize) -> __m256i {
    let rem = rem.min(8);
    // SAFETY: 8 - rem + 8 <= 16: the 8 i32s read are inside MASKS.
    unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(8 - rem).cast()) }
}

/// Sum of the eight lanes (pairwise: lanes 0+4, 1+5, ... then halves).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Maximum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmax(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

// ---------------------------------------------------------------- math

const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_54;

/// `exp(x)`, see the module docs for the domain.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    // min/max return their second operand on NaN: NaN propagates.
    let xc = _mm256_max_ps(_mm256_set1_ps(EXP_LO), _mm256_min_ps(_mm256_set1_ps(EXP_HI), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
    ));
    // r = x - n ln2, ln2 = 0.693359375 - 2.12194440e-4 (the first part exact in few bits).
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.000_000_1e-1));
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    // 2^n from the exponent bits; n is in [-126, 127], a normal power of two.
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    let y = _mm256_mul_ps(y, pow2n);
    // Underflow to 0 below EXP_LO (NaN: "not less than" is true, kept).
    let y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_NLT_UQ>(x, _mm256_set1_ps(EXP_LO)));
    // Overflow to +inf above EXP_HI.
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI));
    _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over)
}

/// `tanh(x)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tanh8(x: __m256) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let ax = _mm256_andnot_ps(sign, x);
    // |x| < 0.625: x + x^3 P(x^2).
    let z = _mm256_mul_ps(x, x);
    let mut p = _mm256_set1_ps(-5.704_988_7e-3);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.063_908_9e-2));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.373_971_6e-2));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.333_144_2e-1));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.333_328_2e-1));
    let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
    // Otherwise: sign(x) (1 - 2 / (exp(2|x|) + 1)).
    let e = exp8(_mm256_add_ps(ax, ax));
    let one = _mm256_set1_ps(1.0);
    let large = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)));
    let large = _mm256_or_ps(large, _mm256_and_ps(x, sign));
    _mm256_blendv_ps(large, small, _mm256_cmp_ps::<_CMP_LT_OQ>(ax, _mm256_set1_ps(0.625)))
}

/// `erf(x)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn erf8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_set1_ps(-4.0), _mm256_min_ps(_mm256_set1_ps(4.0), x));
    let x2 = _mm256_mul_ps(x, x);
    let mut p = _mm256_set1_ps(-2.726_142_3e-10);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.770_681_4e-8));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.101_024e-6));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.692_506_4e-5));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-7.349_906_3e-4));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.954_6e-3));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.609_603_3e-2));
    let p = _mm256_mul_ps(p, x);
    let mut q = _mm256_set1_ps(-1.456_607_2e-5);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-2.133_740_6e-4));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.682_827e-3));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-7.373_329e-3));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.426_473_9e-2));
    // Beyond |x| = 3.97, erf(x) rounds to +-1 in f32: return it exactly, so
    // that `1 + erf` is 0 in GELU's left tail rather than the rational's
    // last-ulp residue.
    let sign = _mm256_set1_ps(-0.0);
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(x, sign));
    let saturated = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_andnot_ps(sign, x), _mm256_set1_ps(3.97));
    _mm256_blendv_ps(_mm256_div_ps(p, q), one, saturated)
}

/// `x / (1 + exp(-y))`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn div_one_plus_exp_neg(x: __m256, y: __m256) -> __m256 {
    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), y));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// `min(max(x, 0), 6)`, NaN propagating (as the scalar `relu6_1`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn relu6_8(x: __m256) -> __m256 {
    _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(_mm256_setzero_ps(), x))
}

// ------------------------------------------------------- elementwise

/// Applies `f` to every element of `x` in place.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_in_place(x: &mut [f32], f: impl Fn(__m256) -> __m256) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n: eight elements in bounds.
        unsafe { _mm256_storeu_ps(p.add(i), f(_mm256_loadu_ps(p.add(i)))) };
        i += 8;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: i < n, and the mask covers exactly the n - i elements left;
        // masked-off lanes are neither read nor written.
        unsafe { _mm256_maskstore_ps(p.add(i), m, f(_mm256_maskload_ps(p.add(i), m))) };
    }
}

macro_rules! unary {
    ($(#[$doc:meta] $name:ident = |$v:ident| $body:expr;)*) => {$(
        #[$doc]
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn $name(x: &mut [f32]) {
            // SAFETY: AVX2 and FMA are available (this function's contract).
            unsafe { map_in_place(x, |$v| $body) }
        }
    )*};
}

unary! {
    /// `max(x, 0)`.
    relu = |v| _mm256_max_ps(_mm256_setzero_ps(), v);
    /// `min(max(x, 0), 6)`.
    relu6 = |v| relu6_8(v);
    /// `1 / (1 + exp(-x))`.
    sigmoid = |v| div_one_plus_exp_neg(_mm256_set1_ps(1.0), v);
    /// `tanh(x)`.
    tanh = |v| tanh8(v);
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    gelu = |v| {
        let e = erf8(_mm256_mul_ps(v, _mm256_set1_ps(core::f32::consts::FRAC_1_SQRT_2)));
        _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), v), _mm256_add_ps(_mm256_set1_ps(1.0), e))
    };
    /// `x / (1 + exp(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
    gelu_tanh = |v| {
        // Same operation order as the scalar reference.
        let cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(GELU_TANH_CUBIC), v), v), v);
        let u = _mm256_mul_ps(_mm256_set1_ps(SQRT_2_OVER_PI), _mm256_add_ps(v, cube));
        div_one_plus_exp_neg(v, _mm256_add_ps(u, u))
    };
    /// `x / (1 + exp(-x))`.
    silu = |v| div_one_plus_exp_neg(v, v);
    /// `relu6(x + 3) / 6`.
    hardsigmoid = |v| _mm256_div_ps(relu6_8(_mm256_add_ps(v, _mm256_set1_ps(3.0))), _mm256_set1_ps(6.0));
    /// `(x relu6(x + 3)) / 6`.
    hardswish = |v| _mm256_div_ps(
        _mm256_mul_ps(v, relu6_8(_mm256_add_ps(v, _mm256_set1_ps(3.0)))),
        _mm256_set1_ps(6.0),
    );
}

/// `alpha x` where `x < 0`, else `x`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn leaky_relu(x: &mut [f32], alpha: f32) {
    let a = _mm256_set1_ps(alpha);
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe {
        map_in_place(x, |v| {
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
            _mm256_blendv_ps(v, _mm256_mul_ps(v, a), neg)
        })
    }
}

/// `x = x * scale + shift` (multiply then add, as the scalar reference).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn affine(x: &mut [f32], scale: f32, shift: f32) {
    let (s, t) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe { map_in_place(x, |v| _mm256_add_ps(_mm256_mul_ps(v, s), t)) }
}

/// `out[i] = f(a[i], b[i])` over the shortest of the three.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_map(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(__m256, __m256) -> __m256) {
    let n = out.len().min(a.len()).min(b.len());
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= every length.
        unsafe {
            _mm256_storeu_ps(po.add(i), f(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))))
        };
        i += 8;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask covers the n - i < 8 elements left in every buffer.
        unsafe {
            let v = f(_mm256_maskload_ps(pa.add(i), m), _mm256_maskload_ps(pb.add(i), m));
            _mm256_maskstore_ps(po.add(i), m, v);
        }
    }
}

/// `out[i] = f(a[i])` over the shorter of the two.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_into(a: &[f32], out: &mut [f32], f: impl Fn(__m256) -> __m256) {
    let n = out.len().min(a.len());
    let (pa, po) = (a.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= both lengths.
        unsafe { _mm256_storeu_ps(po.add(i), f(_mm256_loadu_ps(pa.add(i)))) };
        i += 8;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask covers the n - i < 8 elements left in both buffers.
        unsafe { _mm256_maskstore_ps(po.add(i), m, f(_mm256_maskload_ps(pa.add(i), m))) };
    }
}

/// `out = a + b`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe { zip_map(a, b, out, |x, y| _mm256_add_ps(x, y)) }
}

/// `out = a * b`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe { zip_map(a, b, out, |x, y| _mm256_mul_ps(x, y)) }
}

/// `out = a + s`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn add_scalar(a: &[f32], s: f32, out: &mut [f32]) {
    let s = _mm256_set1_ps(s);
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe { map_into(a, out, |x| _mm256_add_ps(x, s)) }
}

/// `out = a * s`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn mul_scalar(a: &[f32], s: f32, out: &mut [f32]) {
    let s = _mm256_set1_ps(s);
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe { map_into(a, out, |x| _mm256_mul_ps(x, s)) }
}

// ------------------------------------------------------- row reductions

/// Sum of `row` (eight partial sums, then `hsum`), masked tail.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_sum(row: &[f32], f: impl Fn(__m256) -> __m256) -> f32 {
    let n = row.len();
    let p = row.as_ptr();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        acc = _mm256_add_ps(acc, f(unsafe { _mm256_loadu_ps(p.add(i)) }));
        i += 8;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask covers the n - i elements left.
        let v = f(unsafe { _mm256_maskload_ps(p.add(i), m) });
        acc = _mm256_add_ps(acc, _mm256_and_ps(v, _mm256_castsi256_ps(m)));
    }
    hsum(acc)
}

/// Row-wise softmax: `exp(x - max) / sum`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn softmax(x: &mut [f32], axis_len: usize) {
    if axis_len == 0 {
        return;
    }
    for row in x.chunks_exact_mut(axis_len) {
        let n = row.len();
        let p = row.as_mut_ptr();
        // Pass 1: the maximum (the tail's missing lanes read as -inf).
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n.
            mv = _mm256_max_ps(mv, unsafe { _mm256_loadu_ps(p.add(i)) });
            i += 8;
        }
        if i < n {
            let m = tail_mask(n - i);
            // SAFETY: the mask covers the n - i elements left.
            let v = unsafe { _mm256_maskload_ps(p.add(i), m) };
            let v = _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), v, _mm256_castsi256_ps(m));
            mv = _mm256_max_ps(mv, v);
        }
        let max = _mm256_set1_ps(hmax(mv));
        // Pass 2: exponentials, stored, and their sum, compensated (Kahan)
        // per lane: in a peaked row the lane holding the maximum would
        // otherwise round away every term below half its ulp (5e-5 of a
        // recognizer's 18,710-class sum, `a_long_rows_softmax_keeps_its_sum`).
        let (mut acc, mut lost) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut add = |e: __m256| {
            let term = _mm256_sub_ps(e, lost);
            let next = _mm256_add_ps(acc, term);
            lost = _mm256_sub_ps(_mm256_sub_ps(next, acc), term);
            acc = next;
        };
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), max));
                _mm256_storeu_ps(p.add(i), e);
                add(e);
            }
            i += 8;
        }
        if i < n {
            let m = tail_mask(n - i);
            // SAFETY: the mask covers the n - i elements left.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_maskload_ps(p.add(i), m), max));
                _mm256_maskstore_ps(p.add(i), m, e);
                add(_mm256_and_ps(e, _mm256_castsi256_ps(m)));
            }
        }
        let sum = _mm256_set1_ps(hsum(acc) - hsum(lost));
        // Pass 3: normalise (a division, as the scalar reference).
        // SAFETY: AVX2 and FMA are available (this function's contract).
        unsafe { map_in_place(row, |v| _mm256_div_ps(v, sum)) };
    }
}

/// Row-wise layer norm, same formula and operation order as the scalar
/// reference; only the summation order of mean and variance differs.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn layer_norm(
    x: &mut [f32],
    axis_len: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    if axis_len == 0 || gamma.len() < axis_len || beta.len() < axis_len {
        return;
    }
    for row in x.chunks_exact_mut(axis_len) {
        let nf = axis_len as f32;
        // SAFETY: AVX2 and FMA are available (this function's contract).
        let mean = unsafe { row_sum(row, |v| v) } / nf;
        let mv = _mm256_set1_ps(mean);
        // SAFETY: as above.
        let var = unsafe {
            row_sum(row, |v| {
                let d = _mm256_sub_ps(v, mv);
                _mm256_mul_ps(d, d)
            })
        } / nf;
        let inv = _mm256_set1_ps(1.0 / libm::sqrtf(var + eps));
        let (p, pg, pb) = (row.as_mut_ptr(), gamma.as_ptr(), beta.as_ptr());
        let f = |v: __m256, g: __m256, b: __m256| {
            _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(v, mv), inv), g), b)
        };
        let mut i = 0;
        while i + 8 <= axis_len {
            // SAFETY: i + 8 <= axis_len <= row, gamma and beta lengths.
            unsafe {
                let y = f(
                    _mm256_loadu_ps(p.add(i)),
                    _mm256_loadu_ps(pg.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                );
                _mm256_storeu_ps(p.add(i), y);
            }
            i += 8;
        }
        if i < axis_len {
            let m = tail_mask(axis_len - i);
            // SAFETY: the mask covers the axis_len - i elements left in all three.
            unsafe {
                let y = f(
                    _mm256_maskload_ps(p.add(i), m),
                    _mm256_maskload_ps(pg.add(i), m),
                    _mm256_maskload_ps(pb.add(i), m),
                );
                _mm256_maskstore_ps(p.add(i), m, y);
            }
        }
    }
}

// ---------------------------------------------------------------- matmul

/// Rows of the register tile.
const MR: usize = 6;
/// Depth of one pass over a `KC x 16` panel of `b` (16 KiB: stays in L1
/// while every row block of `a` streams past it).
const KC: usize = 256;

/// `c[m, n] = a[m, k] b[k, n]`, row-major, overwriting `c`.
///
/// Blocked: for each `KC`-deep slice of `k`, for each 16-column (then 8, then
/// masked `< 8`) panel of `b`, a `6 x 16` register tile of `c` accumulates
/// with FMAs (12 accumulators, 2 `b` vectors, 1 broadcast `a`), then is
/// added into `c`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a.len() >= m k`, `b.len() >= k n`,
/// `c.len() >= m n`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    c[..m * n].fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut p0 = 0;
    while p0 < k {
        let kc = KC.min(k - p0);
        let mut j = 0;
        while j < n {
            let width = (n - j).min(16);
            let width = if width >= 16 {
                16
            } else if width >= 8 {
                8
            } else {
                width
            };
            let mut i = 0;
            while i < m {
                let mr = MR.min(m - i);
                // SAFETY: the tile reads a[i..i + mr, p0..p0 + kc],
                // b[p0..p0 + kc, j..j + width] and c[i..i + mr, j..j + width],
                // all inside the matrices (caller's contract on lengths).
                unsafe {
                    tile(
                        mr,
                        width,
                        Tile {
                            a: pa.add(i * k + p0),
                            lda: k,
                            b: pb.add(p0 * n + j),
                            ldb: n,
                            c: pc.add(i * n + j),
                            ldc: n,
                            kc,
                        },
                    )
                };
                i += mr;
            }
            j += width;
        }
        p0 += kc;
    }
}

/// One register tile's operands.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    kc: usize,
}

/// Dispatches an `mr x width` tile (`mr` in 1..=6, `width` 16, 8 or < 8)
/// to its monomorphised kernel.
///
/// # Safety
/// AVX2 and FMA; `t` addresses an `mr x kc` block of `a`, a `kc x width`
/// block of `b` and an `mr x width` block of `c`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile(mr: usize, width: usize, t: Tile) {
    macro_rules! rows {
        ($nv:literal, $masked:literal) => {
            // SAFETY: forwarded contract; the kernel touches mr rows.
            unsafe {
                match mr {
                    1 => kernel::<1, $nv, $masked>(t, width),
                    2 => kernel::<2, $nv, $masked>(t, width),
                    3 => kernel::<3, $nv, $masked>(t, width),
                    4 => kernel::<4, $nv, $masked>(t, width),
                    5 => kernel::<5, $nv, $masked>(t, width),
                    _ => kernel::<6, $nv, $masked>(t, width),
                }
            }
        };
    }
    match width {
        16 => rows!(2, false),
        8 => rows!(1, false),
        _ => rows!(1, true),
    }
}

/// The `R x (8 NV)` register tile: `c += a b` over `kc`.
///
/// # Safety
/// As `tile`, with `R == mr`, `8 NV == width` (or `MASKED` and `width < 8`).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const NV: usize, const MASKED: bool>(t: Tile, width: usize) {
    let mask = tail_mask(if MASKED { width } else { 8 });
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    for p in 0..t.kc {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: row p of the b block, columns 8v..8v + 8 (masked to
            // `width` when MASKED) are inside b.
            *slot = unsafe {
                let src = t.b.add(p * t.ldb + 8 * v);
                if MASKED {
                    _mm256_maskload_ps(src, mask)
                } else {
                    _mm256_loadu_ps(src)
                }
            };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: a[r, p] is inside the a block.
            let av = _mm256_set1_ps(unsafe { *t.a.add(r * t.lda + p) });
            for (acc_rv, &b) in acc_r.iter_mut().zip(&bv) {
                *acc_rv = _mm256_fmadd_ps(av, b, *acc_rv);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (v, &sum) in acc_r.iter().enumerate() {
            // SAFETY: c[r, 8v..8v + 8] (masked to `width`) is inside the c block.
            unsafe {
                let dst = t.c.add(r * t.ldc + 8 * v);
                if MASKED {
                    _mm256_maskstore_ps(
                        dst,
                        mask,
                        _mm256_add_ps(_mm256_maskload_ps(dst, mask), sum),
                    );
                } else {
                    _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), sum));
                }
            }
        }
    }
}

/// `Σ_g scales[g] · Σ_{i in group g} table[codes[i] & (len - 1)] * x[i]`.
/// One call per weight row: the table registers are set up once, each
/// group's partial sums are scaled into a running vector total, and only
/// the row's end is reduced horizontally.
///
/// # Safety
/// AVX2 and FMA must be available, `table.len()` a power of two and
/// `group > 0`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_codes_grouped(
    table: &[f32],
    codes: &[u16],
    x: &[f32],
    scales: &[f32],
    group: usize,
) -> f32 {
    let n = codes.len().min(x.len()).min(scales.len().saturating_mul(group));
    let mask = _mm256_set1_epi32((table.len() - 1) as i32);
    let mut lanes = [[0.0f32; 8]; 2];
    for (i, &v) in table.iter().take(16).enumerate() {
        lanes[i / 8][i % 8] = v;
    }
    // SAFETY: `lanes` rows are 8 readable f32s each.
    let (lo, hi) =
        unsafe { (_mm256_loadu_ps(lanes[0].as_ptr()), _mm256_loadu_ps(lanes[1].as_ptr())) };
    let small = table.len() <= 16;
    let lookup = |idx: __m256i| -> __m256 {
        if small {
            let a = _mm256_permutevar8x32_ps(lo, idx);
            let b = _mm256_permutevar8x32_ps(hi, idx);
            _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
        } else {
            // SAFETY: idx is masked to table.len() - 1.
            unsafe { _mm256_i32gather_ps::<4>(table.as_ptr(), idx) }
        }
    };
    let (c, xs) = (codes.as_ptr(), x.as_ptr());
    let len_mask = table.len() - 1;
    let mut total = _mm256_setzero_ps();
    let mut tail_total = 0.0f32;
    let mut start = 0;
    let mut g = 0;
    while start < n {
        let end = (start + group).min(n);
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = start;
        while i + 16 <= end {
            // SAFETY: i + 16 <= end <= n <= codes.len(), x.len().
            unsafe {
                let i0 =
                    _mm256_and_si256(_mm256_cvtepu16_epi32(_mm_loadu_si128(c.add(i).cast())), mask);
                let i1 = _mm256_and_si256(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(c.add(i + 8).cast())),
                    mask,
                );
                acc0 = _mm256_fmadd_ps(lookup(i0), _mm256_loadu_ps(xs.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(lookup(i1), _mm256_loadu_ps(xs.add(i + 8)), acc1);
            }
            i += 16;
        }
        let s = scales[g];
        total = _mm256_fmadd_ps(_mm256_add_ps(acc0, acc1), _mm256_set1_ps(s), total);
        let rest: f32 = (i..end).map(|k| table[usize::from(codes[k]) & len_mask] * x[k]).sum();
        tail_total += s * rest;
        start = end;
        g += 1;
    }
    let mut sum = [0.0f32; 8];
    // SAFETY: `sum` is 8 writable f32s.
    unsafe { _mm256_storeu_ps(sum.as_mut_ptr(), total) };
    sum.iter().sum::<f32>() + tail_total
}

// ------------------------------------------- ONNX elementwise operators

use crate::elementwise::{BinaryOp, UnaryOp};
use crate::reduce::RowReduce;

/// The scalar `max_nan` (`a >= b ? a : b`, NaN from either side) on
/// lanes: `maxps(b, a)` is `b > a ? b : a`, which is already `a` when `a`
/// is NaN or the two are equal; `b` is put back where it is NaN. The same
/// selection, so bit-identical (signed zeros too).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn max_nan8(a: __m256, b: __m256) -> __m256 {
    _mm256_blendv_ps(_mm256_max_ps(b, a), b, _mm256_cmp_ps::<_CMP_UNORD_Q>(b, b))
}

/// The scalar `min_nan` (`a <= b ? a : b`, NaN from either side), as
/// `max_nan8`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn min_nan8(a: __m256, b: __m256) -> __m256 {
    _mm256_blendv_ps(_mm256_min_ps(b, a), b, _mm256_cmp_ps::<_CMP_UNORD_Q>(b, b))
}

/// A comparison mask as 1.0 / 0.0.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn flag8(mask: __m256) -> __m256 {
    _mm256_and_ps(mask, _mm256_set1_ps(1.0))
}

/// `min(max(x, lo), hi)` selected as the scalar `clip1`: NaN `x` kept, a
/// NaN bound ignored.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn clip8(x: __m256, lo: __m256, hi: __m256) -> __m256 {
    _mm256_min_ps(hi, _mm256_max_ps(lo, x))
}

/// `exp(x)` over the whole f32 range: `exp8` inside its domain, the square
/// of `exp8(x / 2)` outside it, so that `exp(88.5)` is finite and
/// `exp(-100)` subnormal, as in libm.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_full8(x: __m256) -> __m256 {
    let half = exp8(_mm256_mul_ps(x, _mm256_set1_ps(0.5)));
    let outside = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI)),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO)),
    );
    _mm256_blendv_ps(exp8(x), _mm256_mul_ps(half, half), outside)
}

/// The binary operators with a vector form, each applied by `$apply!`
/// to its lane function; `false` for the others.
macro_rules! simd_binary {
    ($op:expr, $apply:ident) => {
        match $op {
            BinaryOp::Add => $apply!(|x, y| _mm256_add_ps(x, y)),
            BinaryOp::Sub => $apply!(|x, y| _mm256_sub_ps(x, y)),
            BinaryOp::Mul => $apply!(|x, y| _mm256_mul_ps(x, y)),
            BinaryOp::Div => $apply!(|x, y| _mm256_div_ps(x, y)),
            BinaryOp::Max => $apply!(|x, y| max_nan8(x, y)),
            BinaryOp::Min => $apply!(|x, y| min_nan8(x, y)),
            BinaryOp::Equal => $apply!(|x, y| flag8(_mm256_cmp_ps::<_CMP_EQ_OQ>(x, y))),
            BinaryOp::Less => $apply!(|x, y| flag8(_mm256_cmp_ps::<_CMP_LT_OQ>(x, y))),
            BinaryOp::Greater => $apply!(|x, y| flag8(_mm256_cmp_ps::<_CMP_GT_OQ>(x, y))),
            BinaryOp::LessOrEqual => $apply!(|x, y| flag8(_mm256_cmp_ps::<_CMP_LE_OQ>(x, y))),
            BinaryOp::GreaterOrEqual => $apply!(|x, y| flag8(_mm256_cmp_ps::<_CMP_GE_OQ>(x, y))),
            BinaryOp::Pow | BinaryOp::Mod | BinaryOp::FMod => false,
        }
    };
}

/// `out = a (op) b` over the shortest; `false` (nothing written) when
/// `op` has no vector form.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn binary_same(op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) -> bool {
    macro_rules! apply {
        ($f:expr) => {{
            // SAFETY: AVX2 and FMA are available (this function's contract).
            unsafe { zip_map(a, b, out, $f) };
            true
        }};
    }
    simd_binary!(op, apply)
}

/// `out = a (op) s`; `false` when `op` has no vector form.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn binary_scalar_right(op: BinaryOp, a: &[f32], s: f32, out: &mut [f32]) -> bool {
    let s = _mm256_set1_ps(s);
    macro_rules! apply {
        ($f:expr) => {{
            let f = $f;
            // SAFETY: AVX2 and FMA are available (this function's contract).
            unsafe { map_into(a, out, |x| f(x, s)) };
            true
        }};
    }
    simd_binary!(op, apply)
}

/// `out = s (op) b`; `false` when `op` has no vector form.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn binary_scalar_left(op: BinaryOp, s: f32, b: &[f32], out: &mut [f32]) -> bool {
    let s = _mm256_set1_ps(s);
    macro_rules! apply {
        ($f:expr) => {{
            let f = $f;
            // SAFETY: AVX2 and FMA are available (this function's contract).
            unsafe { map_into(b, out, |y| f(s, y)) };
            true
        }};
    }
    simd_binary!(op, apply)
}

/// The unary operators without a kernel of their own in the table that
/// have a vector form; `false` (nothing written) for the others.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn unary(op: UnaryOp, x: &mut [f32]) -> bool {
    let sign = _mm256_set1_ps(-0.0);
    macro_rules! apply {
        ($f:expr) => {{
            // SAFETY: AVX2 and FMA are available (this function's contract).
            unsafe { map_in_place(x, $f) };
            true
        }};
    }
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const DOWN: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    const UP: i32 = _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC;
    const ZERO: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
    match op {
        UnaryOp::Neg => apply!(|v| _mm256_xor_ps(v, sign)),
        UnaryOp::Abs => apply!(|v| _mm256_andnot_ps(sign, v)),
        UnaryOp::Sqrt => apply!(|v| _mm256_sqrt_ps(v)),
        UnaryOp::Reciprocal => apply!(|v| _mm256_div_ps(_mm256_set1_ps(1.0), v)),
        UnaryOp::Exp => apply!(|v| exp_full8(v)),
        UnaryOp::Clip { min, max } => {
            let (lo, hi) = (_mm256_set1_ps(min), _mm256_set1_ps(max));
            apply!(|v| clip8(v, lo, hi))
        }
        UnaryOp::HardSigmoid { alpha, beta } => {
            let (a, b) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
            let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(1.0));
            // Multiply, then add (not fused), as the scalar reference.
            apply!(|v| clip8(_mm256_add_ps(_mm256_mul_ps(a, v), b), lo, hi))
        }
        UnaryOp::Floor => apply!(|v| _mm256_round_ps::<DOWN>(v)),
        UnaryOp::Ceil => apply!(|v| _mm256_round_ps::<UP>(v)),
        UnaryOp::Round => apply!(|v| _mm256_round_ps::<NEAREST>(v)),
        UnaryOp::Trunc => apply!(|v| _mm256_round_ps::<ZERO>(v)),
        UnaryOp::Not => apply!(|v| flag8(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, _mm256_setzero_ps()))),
        _ => false,
    }
}

/// The maximum (`MAX`) or minimum of `row`, NaN propagating; the lanes are
/// folded with the scalar `max_nan` / `min_nan` (so only the sign of a
/// zero result can differ from the left-to-right reference).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn row_extreme<const MAX: bool>(row: &[f32]) -> f32 {
    let init = if MAX { f32::NEG_INFINITY } else { f32::INFINITY };
    let fold = |v: __m256, acc: __m256| if MAX { max_nan8(v, acc) } else { min_nan8(v, acc) };
    let (n, p) = (row.len(), row.as_ptr());
    let mut acc = _mm256_set1_ps(init);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        acc = fold(unsafe { _mm256_loadu_ps(p.add(i)) }, acc);
        i += 8;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask covers the n - i elements left.
        let v = unsafe { _mm256_maskload_ps(p.add(i), m) };
        acc = fold(_mm256_blendv_ps(_mm256_set1_ps(init), v, _mm256_castsi256_ps(m)), acc);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` is 8 writable f32s.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    let scalar = if MAX { crate::arch::generic::max_nan } else { crate::arch::generic::min_nan };
    lanes.iter().fold(init, |a, &v| scalar(v, a))
}

/// `row` folded by `op`; `None` when `op` has no vector form.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn reduce_row(op: RowReduce, row: &[f32]) -> Option<f32> {
    let sign = _mm256_set1_ps(-0.0);
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe {
        Some(match op {
            RowReduce::Sum => row_sum(row, |v| v),
            RowReduce::SumAbs => row_sum(row, |v| _mm256_andnot_ps(sign, v)),
            RowReduce::SumSquare => row_sum(row, |v| _mm256_mul_ps(v, v)),
            RowReduce::Max => row_extreme::<true>(row),
            RowReduce::Min => row_extreme::<false>(row),
            _ => return None,
        })
    }
}

/// `acc[i] = f(acc[i], x[i])` over the shorter of the two.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_acc(acc: &mut [f32], x: &[f32], f: impl Fn(__m256, __m256) -> __m256) {
    let n = acc.len().min(x.len());
    let (pa, px) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= both lengths.
        unsafe {
            _mm256_storeu_ps(pa.add(i), f(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(px.add(i))))
        };
        i += 8;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask covers the n - i < 8 elements left in both.
        unsafe {
            let v = f(_mm256_maskload_ps(pa.add(i), m), _mm256_maskload_ps(px.add(i), m));
            _mm256_maskstore_ps(pa.add(i), m, v);
        }
    }
}

/// `acc[i] = fold(acc[i], x[i])`, the same IEEE operation per element as
/// the scalar `fold1` (bit-identical); `false` when `op` has no vector form.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn reduce_acc(op: RowReduce, acc: &mut [f32], x: &[f32]) -> bool {
    let sign = _mm256_set1_ps(-0.0);
    // SAFETY: AVX2 and FMA are available (this function's contract).
    unsafe {
        match op {
            RowReduce::Sum => zip_acc(acc, x, |a, v| _mm256_add_ps(a, v)),
            RowReduce::SumAbs => {
                zip_acc(acc, x, |a, v| _mm256_add_ps(a, _mm256_andnot_ps(sign, v)))
            }
            RowReduce::SumSquare => zip_acc(acc, x, |a, v| _mm256_add_ps(a, _mm256_mul_ps(v, v))),
            RowReduce::Prod => zip_acc(acc, x, |a, v| _mm256_mul_ps(a, v)),
            RowReduce::Max => zip_acc(acc, x, |a, v| max_nan8(v, a)),
            RowReduce::Min => zip_acc(acc, x, |a, v| min_nan8(v, a)),
            _ => return false,
        }
    }
    true
}
