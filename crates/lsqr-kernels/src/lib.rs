//! CPU operators for the LSQR runtime: the plain `f32` operators an MLP, a
//! CNN or a transformer block needs around its (quantized) weight layers.
//!
//! - activations, in place: [`relu`], [`relu6`], [`leaky_relu`],
//!   [`sigmoid`], [`tanh`], [`gelu`], [`gelu_tanh`], [`silu`],
//!   [`hardsigmoid`], [`hardswish`];
//! - normalisation: [`softmax`] and [`layer_norm`] over the last axis,
//!   inference [`batch_norm`] over `[n, c, ...]`;
//! - pooling on NCHW: [`max_pool2d`], [`avg_pool2d`] (with
//!   `count_include_pad = false`), [`global_avg_pool2d`];
//! - NumPy-broadcasting [`add`] and [`mul`];
//! - allocation-free `_into` forms of the operators that return a new
//!   buffer ([`add_into`], [`mul_into`], [`max_pool2d_into`],
//!   [`avg_pool2d_into`], [`global_avg_pool2d_into`]), for a runtime that
//!   plans every buffer up front;
//! - [`matmul`] / [`matmul_into`] of two row-major activations;
//!   [`batched_matmul_into`] (`numpy.matmul`: 1-D operands, broadcast batch
//!   dims; each product through `matmul_into`) and its planning helper
//!   [`batched_matmul_shape`];
//! - the ONNX elementwise operators of the runtime: all allocation-free,
//!   ranks up to 8: [`elementwise::binary_into`] (the [`elementwise::BinaryOp`]s:
//!   arithmetic, `pow`, `max`/`min`, comparisons, `mod`/`fmod`, with NumPy
//!   broadcasting and a scalar on either side), [`elementwise::unary_inplace`]
//!   (the [`elementwise::UnaryOp`]s, the activations above included) and
//!   [`elementwise::expand_into`];
//! - reductions: [`reduce::reduce_into`] (the [`reduce::ReduceOp`]s over any
//!   axes), [`reduce::softmax_axis_inplace`] and
//!   [`reduce::log_softmax_axis_inplace`] along any axis;
//! - on packed (or plain f32) weights: [`packed::dequantize_into`] (also
//!   [`packed::dequantize_into_f16`] and [`packed::dequantize_into_bf16`]),
//!   [`packed::linear`] / [`packed::linear_into`] (a GEMV that decodes the
//!   codes in registers at batch 1, a blocked GEMM on decoded weight
//!   blocks above), [`conv::conv2d`] and [`conv::conv1d`] (im2col into the
//!   same GEMM; a direct path for depthwise), each with an allocation-free
//!   `_into` form. Every codec and every C in 1..=16 runs; C <= 8 with rows
//!   of whole 8-code chunks takes the fused AVX2 decoder (codes shifted out
//!   of one load, looked up with `vpermps` up to C = 5, by scalar loads
//!   above), anything else a chunked unpack-then-look-up path;
//! - ONNX transposed convolution on packed (or plain f32) weights:
//!   [`conv_transpose::conv_transpose2d_into`] (with
//!   [`conv_transpose::conv_transpose2d_output_shape`] and
//!   [`conv_transpose::conv_transpose2d_scratch_len`]), a per-group GEMM
//!   of the decoded weight then a col2im scatter-add;
//! - ONNX pooling with asymmetric pads, dilation, `ceil_mode` and
//!   `count_include_pad`: [`pool::max_pool2d_ext_into`],
//!   [`pool::avg_pool2d_ext_into`] (sized by
//!   [`pool::Pool2dParams::output_shape`]), [`pool::global_max_pool2d_into`]
//!   and [`pool::global_max_pool_into`];
//! - ONNX Resize on the last two axes: [`resize::resize_into`] (nearest,
//!   linear, cubic; the reference implementation's coordinate formulas);
//! - data movement, in [`layout`]: [`layout::transpose_into`] (coalesced
//!   axes, blocked 2-D tiles), [`layout::slice_into`] (with
//!   [`layout::onnx_slice_params`] for ONNX's clamping),
//!   [`layout::concat_into`], [`layout::pad_into`] (constant, reflect,
//!   edge) and [`layout::gather_into`].
//!
//! The operators added for the ONNX graphs (the last four items) are
//! allocation-free `_into` forms only, portable code, with ranks up to
//! [`layout::MAX_RANK`] = 8, because the runtime plans every buffer.
//!
//! ```
//! let mut x = vec![-1.0f32, 0.5, 2.0];
//! lsqr_kernels::relu(&mut x);
//! assert_eq!(x, [0.0, 0.5, 2.0]);
//! let (y, shape) = lsqr_kernels::add(&[1.0, 2.0, 3.0, 4.0], &[2, 2], &[10.0, 20.0], &[2])?;
//! assert_eq!((y, shape), (vec![11.0, 22.0, 13.0, 24.0], vec![2, 2]));
//! # Ok::<(), lsqr_kernels::OpError>(())
//! ```
//!
//! Operators never panic on bad shapes, lengths or parameters: they return
//! an [`OpError`].
//!
//! # Code paths
//!
//! As in memchr, each operator has a portable scalar implementation (the
//! reference: one element at a time, left-to-right `f32` sums, `libm`
//! transcendentals) and, on x86-64, an AVX2+FMA one. The crate-level
//! functions run [`Kernels::active`], chosen once per process: with `std`
//! by run-time detection of AVX2 and FMA, overridden by the environment
//! variable `LSQR_FORCE_SCALAR` (non-empty and not `"0"`: portable path);
//! without `std`, by the compile-time target features. Pooling has only the
//! portable implementation for now; so have `pow`, `mod`, `fmod`, the
//! unary transcendentals without an activation kernel (`log`, `erf`,
//! `sin`, ...), `prod` and `log_sum_exp` folds, log-softmax and softmax
//! along an axis other than the last (one strided loop on every path).
//!
//! # Accuracy of the AVX2 path against the portable one
//!
//! Tested with `|simd - scalar| <= rel * |scalar| + abs`, inputs in
//! `[-20, 20]` (and NaN/±inf where noted in the tests):
//!
//! | operator | rel | abs | why |
//! |---|---|---|---|
//! | relu, relu6, leaky_relu, hardsigmoid, hardswish, add, mul, batch_norm, max/avg pool | 0 | 0 | same IEEE operations: bit-identical |
//! | sigmoid, silu, gelu_tanh | 2e-6 | 1e-30 | Cephes vector `exp` (a few ulp) |
//! | tanh | 2e-6 | 1e-30 | Cephes vector `tanh` |
//! | gelu (erf form) | 2e-6 | 2e-6 | rational vector `erf` (a few ulp, ~4e-7 absolute); `1 + erf` cancels in the left tail `-5.6 < x < -3` (where the reference uses `erfc` and \|gelu\| < 4e-3); exactly 0 below |
//! | softmax | 2e-6 | 1e-30 | vector `exp`, 8-lane sum |
//! | binary add, sub, mul, div, max, min, comparisons (equal lengths, scalar on either side); unary neg, abs, sqrt, reciprocal, clip, hard sigmoid (`alpha`, `beta`), floor, ceil, round, trunc, not | 0 | 0 | same IEEE operations (max/min: the same NaN-propagating selection, signed zeros included): bit-identical |
//! | unary exp | 2e-6 | 1e-30 | vector `exp`; outside its domain the square of `exp(x / 2)`, so it overflows where libm does and gives subnormals (within `1e-30`) below `-87.3` |
//! | reduce sum, mean, l1, l2, sum_square (innermost axis reduced) | `n * f32::EPSILON` relative to the sum of `abs(x)` (of `x^2` for squares) | | 8-lane summation order |
//! | reduce max, min (innermost axis reduced) | 0 | 0 | up to the sign of a zero result (lanes fold in another order) |
//! | reduce with the innermost axis kept (any op); prod, log_sum_exp | 0 | 0 | the same per-element operations in the same order: bit-identical |
//! | log_softmax, softmax along an axis other than the last | 0 | 0 | one portable loop |
//! | batched_matmul | as matmul | | each product is a `matmul_into` |
//! | layer_norm | 1e-5 | 1e-5 | summation order of mean and variance only |
//! | matmul | `k * f32::EPSILON` relative to `sum_p abs(a[i,p] b[p,j])` | | FMA and blocked summation order (standard `γ_k` bound) |
//! | packed dequantize | 0 | 0 | `table[code] * scale`, one multiply: bit-identical |
//! | packed linear (batch 1), exact path | `1e-5` relative to `sum abs(scale w x)` | | summation order (8 lanes, 4 rows, per-group partial sums) |
//! | packed linear (batch 1 to 64), integer path (C <= 8, the default) | 0 | 0 | exact integer lane sums, the same f32 steps per lane and block, one fixed final order: bit-identical to the portable integer reference, and a vector's outputs the same at any batch up to 64 |
//!
//! The integer path is not the exact one: the input is rounded once per
//! call to int8 (C = 2) or int16 (C = 3, 4) per block of 32 or 64 columns,
//! and the table to a grid of 127 or 8191 steps of its largest level (each
//! level within 1/16 of its distance to the nearest other level, or the
//! weight keeps the exact path). The bound it is held to: its output SNR
//! against the exact path is at least 20 dB above the exact path's against
//! the float weights (the codec's own error), measured on random weights
//! for every codec and on MiniLM's layers with real activations (worst
//! margins 25 dB at C = 2, 43 dB at C = 3 and 4). `LSQR_EXACT=1` or
//! `PackedWeight::set_exact(true)` selects the exact path.
//! | packed linear (batch > 1), conv2d/conv1d | `(k + 2) f32::EPSILON` relative to `sum abs(w x) + abs(b)`, `k` the dot length (twice that against the f32 direct conv) | | as matmul; both paths tested against f64 / direct-convolution oracles. Decoding is exact (`table[code] * scale`, one multiply, on both paths) |
//!
//! The `abs` terms of `1e-30` cover the underflow region, where the vector
//! `exp` flushes to zero below `exp(-87.3)` instead of returning a
//! subnormal.
//!
//! # Features
//!
//! - `std` (default): run-time CPU detection, `LSQR_FORCE_SCALAR`,
//!   `std::error::Error` for [`OpError`]. Without it the crate is `no_std` +
//!   `alloc`.
//! - `parallel`: large matmuls split their rows over rayon's pool; the
//!   batch-1 packed linear splits blocks of weight rows (above a million
//!   weights), the allocating [`packed::linear`] (large batches: rows of `x`) and
//!   [`conv::conv2d`] / [`conv::conv1d`] (output channels) split too. The
//!   `_into` forms stay on the caller's thread (one caller scratch).
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arch;
pub mod conv;
pub mod conv_transpose;
pub mod elementwise;
mod error;
mod gemm;
mod kernels;
pub mod layout;
mod matmul;
pub mod packed;
pub mod pool;
pub mod reduce;
pub mod resize;
mod shape;
mod simd;

use alloc::vec::Vec;

pub use error::OpError;
pub use kernels::{BatchNorm, Kernels};
pub use matmul::{batched_matmul_into, batched_matmul_shape};
pub use shape::{broadcast_shape, Pool2d};

/// Each code path on its own, for tests and benchmarks that compare them.
/// Not part of the stable API.
#[doc(hidden)]
pub mod paths {
    use crate::Kernels;

    #[cfg(feature = "std")]
    pub use crate::simd::for_each_simd_path;
    pub use crate::simd::{available_simd_paths, cpu_has, SimdPath, SIMD_PATHS};

    /// The portable scalar path.
    pub fn scalar() -> &'static Kernels {
        Kernels::portable()
    }

    /// The AVX2+FMA path, if this CPU supports it.
    pub fn avx2() -> Option<&'static Kernels> {
        Kernels::avx2()
    }

    /// The AVX-512 path, if this CPU supports it.
    pub fn avx512() -> Option<&'static Kernels> {
        Kernels::avx512()
    }

    /// The path the crate-level functions use.
    pub fn active() -> &'static Kernels {
        Kernels::active()
    }

    /// [`crate::packed::linear`] on the given path (`batch > 1` runs the
    /// blocked GEMM with that path's micro-kernel and decoder; split over
    /// threads as `linear` with the `parallel` feature).
    pub fn linear_with(
        kern: &Kernels,
        w: &crate::packed::PackedWeight<'_>,
        bias: Option<&[f32]>,
        x: &[f32],
        batch: usize,
        y: &mut [f32],
    ) -> Result<(), crate::OpError> {
        crate::packed::linear_alloc(kern, w, bias, x, batch, y)
    }

    /// [`crate::packed::linear_into`] on the given path (the caller's
    /// scratch, [`crate::packed::linear_scratch_len`]).
    pub fn linear_into_with(
        kern: &Kernels,
        w: &crate::packed::PackedWeight<'_>,
        bias: Option<&[f32]>,
        x: &[f32],
        batch: usize,
        y: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), crate::OpError> {
        crate::packed::linear_with(kern, w, bias, x, batch, y, scratch)
    }

    /// [`crate::conv::conv2d`] on the given path.
    pub fn conv2d_with(
        kern: &Kernels,
        w: &crate::packed::PackedWeight<'_>,
        bias: Option<&[f32]>,
        input: &[f32],
        input_shape: [usize; 4],
        params: &crate::conv::Conv2dParams,
    ) -> Result<(alloc::vec::Vec<f32>, [usize; 4]), crate::OpError> {
        crate::conv::conv2d_with(kern, w, bias, input, input_shape, params)
    }

    /// [`crate::packed::dequantize_into`] with `kern`'s decoder.
    pub fn dequantize_into_with(
        kern: &Kernels,
        w: &crate::packed::PackedWeight<'_>,
        out: &mut [f32],
    ) -> Result<(), crate::OpError> {
        crate::packed::dequantize_with(kern, w, out)
    }

    /// [`crate::packed::dequantize_into_f16`] with `kern`'s decoder.
    pub fn dequantize_into_f16_with(
        kern: &Kernels,
        w: &crate::packed::PackedWeight<'_>,
        out: &mut [half::f16],
    ) -> Result<(), crate::OpError> {
        crate::packed::dequantize_half_with(kern, w, out)
    }

    /// [`crate::packed::dequantize_into_bf16`] with `kern`'s decoder.
    pub fn dequantize_into_bf16_with(
        kern: &Kernels,
        w: &crate::packed::PackedWeight<'_>,
        out: &mut [half::bf16],
    ) -> Result<(), crate::OpError> {
        crate::packed::dequantize_half_with(kern, w, out)
    }

    /// The direct (naive) conv2d: the oracle of the fast paths.
    pub fn conv2d_reference(
        w: &crate::packed::PackedWeight<'_>,
        bias: Option<&[f32]>,
        input: &[f32],
        input_shape: [usize; 4],
        params: &crate::conv::Conv2dParams,
    ) -> Result<(alloc::vec::Vec<f32>, [usize; 4]), crate::OpError> {
        crate::conv::reference_conv2d(w, bias, input, input_shape, params)
    }

    /// The raw portable kernels (no validation; they stop at the shortest
    /// buffer).
    pub mod generic {
        pub use crate::arch::generic::{
            add, add_scalar, affine, gelu, gelu_tanh, hardsigmoid, hardswish, layer_norm,
            leaky_relu, matmul, mul, mul_scalar, relu, relu6, sigmoid, silu, softmax, tanh,
        };
    }
}

macro_rules! unary_fns {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// Runs on [`Kernels::active`].
        #[inline]
        pub fn $name(x: &mut [f32]) {
            Kernels::active().$name(x)
        }
    )*};
}

unary_fns! {
    /// `max(x, 0)` in place (NaN and `-0.0` pass through).
    relu;
    /// `min(max(x, 0), 6)` in place.
    relu6;
    /// `1 / (1 + exp(-x))` in place.
    sigmoid;
    /// `tanh(x)` in place.
    tanh;
    /// GELU, erf form: `0.5 x (1 + erf(x / sqrt 2))`, in place.
    gelu;
    /// GELU, tanh approximation:
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, in place.
    gelu_tanh;
    /// SiLU / swish: `x sigmoid(x)`, in place.
    silu;
    /// Hard sigmoid (PyTorch's): `relu6(x + 3) / 6`, in place.
    hardsigmoid;
    /// Hard swish (PyTorch's): `x relu6(x + 3) / 6`, in place.
    hardswish;
}

/// `x` where `x >= 0`, `alpha x` where `x < 0`, in place.
#[inline]
pub fn leaky_relu(x: &mut [f32], alpha: f32) {
    Kernels::active().leaky_relu(x, alpha)
}

/// Numerically stable softmax over the last axis (rows of `axis_len`).
/// See [`Kernels::softmax`].
pub fn softmax(x: &mut [f32], axis_len: usize) -> Result<(), OpError> {
    Kernels::active().softmax(x, axis_len)
}

/// Layer norm over the last axis. See [`Kernels::layer_norm`].
pub fn layer_norm(
    x: &mut [f32],
    axis_len: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), OpError> {
    Kernels::active().layer_norm(x, axis_len, gamma, beta, eps)
}

/// Inference batch norm on `[n, c, ...]`. See [`Kernels::batch_norm`].
pub fn batch_norm(x: &mut [f32], shape: &[usize], params: &BatchNorm<'_>) -> Result<(), OpError> {
    Kernels::active().batch_norm(x, shape, params)
}

/// Per-channel `x * scale + shift` in place over `[n, c, plane]`. See
/// [`Kernels::channel_affine`].
pub fn channel_affine(
    x: &mut [f32],
    plane: usize,
    scale: &[f32],
    shift: &[f32],
) -> Result<(), OpError> {
    Kernels::active().channel_affine(x, plane, scale, shift)
}

/// `a + b` with NumPy broadcasting. See [`Kernels::add`].
pub fn add(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>), OpError> {
    Kernels::active().add(a, a_shape, b, b_shape)
}

/// `a + b` with NumPy broadcasting into `out`. See [`Kernels::add_into`].
pub fn add_into(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    Kernels::active().add_into(a, a_shape, b, b_shape, out)
}

/// `a * b` with NumPy broadcasting into `out`. See [`Kernels::mul_into`].
pub fn mul_into(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    Kernels::active().mul_into(a, a_shape, b, b_shape, out)
}

/// `a * b` with NumPy broadcasting. See [`Kernels::mul`].
pub fn mul(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>), OpError> {
    Kernels::active().mul(a, a_shape, b, b_shape)
}

/// `[m, k] x [k, n] -> [m, n]`, row-major. See [`Kernels::matmul`].
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>, OpError> {
    Kernels::active().matmul(a, b, m, k, n)
}

/// `[m, k] x [k, n]` into `out`. See [`Kernels::matmul_into`].
pub fn matmul_into(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), OpError> {
    Kernels::active().matmul_into(a, b, out, m, k, n)
}

/// 2-D max pooling of NCHW. See [`Kernels::max_pool2d`].
pub fn max_pool2d(
    input: &[f32],
    shape: [usize; 4],
    pool: &Pool2d,
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    Kernels::active().max_pool2d(input, shape, pool)
}

/// 2-D average pooling of NCHW, `count_include_pad = false`. See
/// [`Kernels::avg_pool2d`].
pub fn avg_pool2d(
    input: &[f32],
    shape: [usize; 4],
    pool: &Pool2d,
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    Kernels::active().avg_pool2d(input, shape, pool)
}

/// Mean of each `[h, w]` plane of NCHW, output `[n, c, 1, 1]`.
pub fn global_avg_pool2d(
    input: &[f32],
    shape: [usize; 4],
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    Kernels::active().global_avg_pool2d(input, shape)
}

/// [`max_pool2d`] into `out`. See [`Kernels::max_pool2d_into`].
pub fn max_pool2d_into(
    input: &[f32],
    shape: [usize; 4],
    pool: &Pool2d,
    out: &mut [f32],
) -> Result<[usize; 4], OpError> {
    Kernels::active().max_pool2d_into(input, shape, pool, out)
}

/// [`avg_pool2d`] into `out`. See [`Kernels::avg_pool2d_into`].
pub fn avg_pool2d_into(
    input: &[f32],
    shape: [usize; 4],
    pool: &Pool2d,
    out: &mut [f32],
) -> Result<[usize; 4], OpError> {
    Kernels::active().avg_pool2d_into(input, shape, pool, out)
}

/// [`global_avg_pool2d`] into `out`. See [`Kernels::global_avg_pool2d_into`].
pub fn global_avg_pool2d_into(
    input: &[f32],
    shape: [usize; 4],
    out: &mut [f32],
) -> Result<[usize; 4], OpError> {
    Kernels::active().global_avg_pool2d_into(input, shape, out)
}
