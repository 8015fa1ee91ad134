//! CPU-specific kernels behind one entry point.
//!
//! As in memchr: one module per architecture, a portable path that always
//! builds ([`generic`], also the reference of every test), and a choice made
//! once per process and cached in an `AtomicU8`. With `std` the choice is
//! made at run time (`is_x86_feature_detected!`: AVX2 and FMA, and AVX-512
//! F, BW, VL, VBMI and VNNI for the AVX-512 table);
//! without `std`, from the compile-time target features. With `std`, the
//! environment variable `LSQR_FORCE_SCALAR` (non-empty and not `"0"`, read
//! once) forces the portable path, so the whole test suite can run on it.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::kernels::Kernels;

pub mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// The portable kernel table.
pub(crate) static SCALAR: Kernels = Kernels {
    name: "scalar",
    relu: generic::relu,
    relu6: generic::relu6,
    leaky_relu: generic::leaky_relu,
    sigmoid: generic::sigmoid,
    tanh: generic::tanh,
    gelu: generic::gelu,
    gelu_tanh: generic::gelu_tanh,
    silu: generic::silu,
    hardsigmoid: generic::hardsigmoid,
    hardswish: generic::hardswish,
    add: generic::add,
    mul: generic::mul,
    add_scalar: generic::add_scalar,
    mul_scalar: generic::mul_scalar,
    affine: generic::affine,
    softmax: generic::softmax,
    layer_norm: generic::layer_norm,
    matmul: generic::matmul,
    gemv_packed: generic::gemv_packed,
    gemv_int: generic::gemv_int,
    decode_packed: generic::decode_packed,
    gemm_tile: crate::gemm::tile_portable,
    gemm_rows16: 6,
    gemm_rows32: 0,
    depthwise_plane: crate::conv::depthwise_portable,
    binary_same: generic::binary_same,
    binary_scalar_right: generic::binary_scalar_right,
    binary_scalar_left: generic::binary_scalar_left,
    unary: generic::unary,
    reduce_row: generic::reduce_row,
    reduce_acc: generic::reduce_acc,
};

const UNKNOWN: u8 = 0;
const PORTABLE: u8 = 1;
const AVX2_FMA: u8 = 2;
const AVX512: u8 = 3;

static PATH: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The AVX2+FMA table if this CPU (or, without `std`, this build) supports it.
pub(crate) fn avx2() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    if x86_64::avx2_fma_detected() {
        return Some(&x86_64::AVX2);
    }
    None
}

/// The AVX-512 table (AVX2+FMA plus AVX-512 F, BW, VL, VBMI and VNNI) if
/// this CPU (or, without `std`, this build) supports it.
pub(crate) fn avx512() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    if x86_64::avx512_detected() {
        return Some(&x86_64::AVX512);
    }
    None
}

/// The table this process uses, chosen on first call and cached.
#[inline]
pub(crate) fn active() -> &'static Kernels {
    match PATH.load(Ordering::Relaxed) {
        PORTABLE => &SCALAR,
        AVX2_FMA => cached(false),
        AVX512 => cached(true),
        _ => {
            let (best, code) = if force_scalar() {
                (None, PORTABLE)
            } else if let Some(k) = avx512() {
                (Some(k), AVX512)
            } else if let Some(k) = avx2() {
                (Some(k), AVX2_FMA)
            } else {
                (None, PORTABLE)
            };
            PATH.store(code, Ordering::Relaxed);
            best.unwrap_or(&SCALAR)
        }
    }
}

/// The AVX2 (or AVX-512) table, once `active` has detected it.
#[cfg(target_arch = "x86_64")]
#[inline]
fn cached(avx512: bool) -> &'static Kernels {
    if avx512 {
        &x86_64::AVX512
    } else {
        &x86_64::AVX2
    }
}

/// Unreachable off x86-64 (`PATH` is never a SIMD path there).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn cached(_avx512: bool) -> &'static Kernels {
    &SCALAR
}

/// Whether the portable path has been forced by `LSQR_FORCE_SCALAR`.
#[cfg(feature = "std")]
fn force_scalar() -> bool {
    std::env::var_os("LSQR_FORCE_SCALAR").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Without `std` there is no environment: never forced.
#[cfg(not(feature = "std"))]
fn force_scalar() -> bool {
    false
}
