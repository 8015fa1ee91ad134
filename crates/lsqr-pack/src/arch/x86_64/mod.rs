//! x86_64 SIMD kernels.

pub(crate) mod avx2;
