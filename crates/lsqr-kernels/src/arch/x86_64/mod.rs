//! x86-64 paths: the AVX2+FMA kernel table.

pub(crate) mod avx2;

use crate::kernels::Kernels;

/// Whether this CPU runs the AVX2+FMA kernels (ignores `LSQR_FORCE_SCALAR`).
#[cfg(feature = "std")]
pub(crate) fn avx2_fma_detected() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether this build targets AVX2+FMA (no run-time detection without `std`).
#[cfg(not(feature = "std"))]
pub(crate) fn avx2_fma_detected() -> bool {
    cfg!(target_feature = "avx2") && cfg!(target_feature = "fma")
}

/// Safe wrappers over the `unsafe` AVX2 kernels. They are only reachable
/// through [`AVX2`], which `crate::arch` hands out only after
/// [`avx2_fma_detected`] returned `true`.
mod safe {
    use super::avx2;

    macro_rules! wrap {
        ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
            pub(super) fn $name($($arg: $ty),*) {
                // SAFETY: this wrapper is reachable only through the AVX2
                // table, handed out only once AVX2 and FMA were detected.
                unsafe { avx2::$name($($arg),*) }
            }
        )*};
    }

    wrap! {
        relu(x: &mut [f32]);
        relu6(x: &mut [f32]);
        leaky_relu(x: &mut [f32], alpha: f32);
        sigmoid(x: &mut [f32]);
        tanh(x: &mut [f32]);
        gelu(x: &mut [f32]);
        gelu_tanh(x: &mut [f32]);
        silu(x: &mut [f32]);
        hardsigmoid(x: &mut [f32]);
        hardswish(x: &mut [f32]);
        add(a: &[f32], b: &[f32], out: &mut [f32]);
        mul(a: &[f32], b: &[f32], out: &mut [f32]);
        add_scalar(a: &[f32], s: f32, out: &mut [f32]);
        mul_scalar(a: &[f32], s: f32, out: &mut [f32]);
        affine(x: &mut [f32], scale: f32, shift: f32);
        softmax(x: &mut [f32], axis_len: usize);
        layer_norm(x: &mut [f32], axis_len: usize, gamma: &[f32], beta: &[f32], eps: f32);
    }

    pub(super) fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
        // The kernel works on raw pointers: check the extents (cheap, once
        // per call) so that no caller can make it read out of bounds.
        let fits = |len: usize, r: usize, s: usize| r.checked_mul(s).is_some_and(|e| e <= len);
        assert!(
            fits(a.len(), m, k) && fits(b.len(), k, n) && fits(c.len(), m, n),
            "matmul: buffers smaller than their shapes"
        );
        // SAFETY: the table is handed out only once AVX2 and FMA were
        // detected; the lengths were checked just above.
        unsafe { avx2::matmul(a, b, c, m, k, n) }
    }
}

/// The AVX2+FMA kernel table. Only `crate::arch` may hand it out, after
/// detection.
pub(crate) static AVX2: Kernels = Kernels {
    name: "avx2+fma",
    relu: safe::relu,
    relu6: safe::relu6,
    leaky_relu: safe::leaky_relu,
    sigmoid: safe::sigmoid,
    tanh: safe::tanh,
    gelu: safe::gelu,
    gelu_tanh: safe::gelu_tanh,
    silu: safe::silu,
    hardsigmoid: safe::hardsigmoid,
    hardswish: safe::hardswish,
    add: safe::add,
    mul: safe::mul,
    add_scalar: safe::add_scalar,
    mul_scalar: safe::mul_scalar,
    affine: safe::affine,
    softmax: safe::softmax,
    layer_norm: safe::layer_norm,
    matmul: safe::matmul,
};
