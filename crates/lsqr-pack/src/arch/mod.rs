//! Kernel selection.
//!
//! A [`Kernel`] names one implementation of the pack/unpack inner loops.
//! [`selected`] picks the best one for the running CPU:
//!
//! * with the `std` feature on x86_64, AVX2 is detected at run time with
//!   `std::is_x86_feature_detected!` the first time it is needed, and the
//!   choice is cached in an atomic. Setting the environment variable
//!   `LSQR_FORCE_SCALAR` to a non-empty value other than `0` at that moment
//!   forces the portable kernel;
//! * without `std`, AVX2 is used only if the crate is compiled with the
//!   `avx2` target feature enabled (e.g. `-C target-cpu=native` on an AVX2
//!   machine).

pub(crate) mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::PackError;

/// One implementation of the inner loops.
///
/// Invariant: a `Kernel::Avx2` value only exists when the running CPU
/// supports AVX2 (it is created only by [`selected`] after detection and by
/// [`crate::paths::avx2::Avx2::new`], which also detects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Portable scalar code.
    Scalar,
    /// x86_64 AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
        }
    }

    /// Packs range-unchecked `codes`; `out` must be exactly
    /// `packed_len(codes.len(), width)` bytes and `width` valid.
    #[inline]
    pub(crate) fn pack(self, codes: &[u16], width: u32, out: &mut [u8]) -> Result<(), PackError> {
        match self {
            Kernel::Scalar => {
                generic::check_codes(codes, width)?;
                generic::pack_kernel(codes, width, out);
                Ok(())
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernel::Avx2` only exists when the CPU supports AVX2
            // (see the type's invariant); the avx2 kernel has no other
            // preconditions beyond those of this method, which it checks or
            // tolerates.
            Kernel::Avx2 => unsafe { x86_64::avx2::pack(codes, width, out) },
        }
    }

    /// Decodes `out.len()` codes from the start of `packed`; `width` must be
    /// valid and `packed` at least `packed_len(out.len(), width)` bytes.
    #[inline]
    pub(crate) fn unpack(self, packed: &[u8], width: u32, out: &mut [u16]) {
        match self {
            Kernel::Scalar => generic::unpack_kernel(packed, width, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernel::Avx2` only exists when the CPU supports AVX2
            // (see the type's invariant); the kernel bounds-checks all its
            // memory accesses against the slice lengths.
            Kernel::Avx2 => unsafe { x86_64::avx2::unpack(packed, width, out) },
        }
    }
}

/// Whether the running CPU supports AVX2 (and this build can use it).
#[inline]
pub(crate) fn avx2_available() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
    {
        cfg!(target_feature = "avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(feature = "std")]
mod cache {
    use core::sync::atomic::{AtomicU8, Ordering};

    use super::Kernel;

    const UNINIT: u8 = 0;
    const SCALAR: u8 = 1;
    #[cfg(target_arch = "x86_64")]
    const AVX2: u8 = 2;

    static SELECTED: AtomicU8 = AtomicU8::new(UNINIT);

    fn force_scalar() -> bool {
        match std::env::var_os("LSQR_FORCE_SCALAR") {
            Some(v) => !v.is_empty() && v != "0",
            None => false,
        }
    }

    #[cold]
    #[inline(never)]
    fn detect() -> Kernel {
        let kernel = if force_scalar() {
            Kernel::Scalar
        } else if super::avx2_available() {
            #[cfg(target_arch = "x86_64")]
            {
                Kernel::Avx2
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                Kernel::Scalar
            }
        } else {
            Kernel::Scalar
        };
        let code = match kernel {
            Kernel::Scalar => SCALAR,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => AVX2,
        };
        // Racing initialisations all compute the same value; any of them may
        // win.
        SELECTED.store(code, Ordering::Relaxed);
        kernel
    }

    #[inline]
    pub(crate) fn selected() -> Kernel {
        match SELECTED.load(Ordering::Relaxed) {
            SCALAR => Kernel::Scalar,
            #[cfg(target_arch = "x86_64")]
            AVX2 => Kernel::Avx2,
            _ => detect(),
        }
    }
}

/// The kernel used by the public API.
#[inline]
pub(crate) fn selected() -> Kernel {
    #[cfg(feature = "std")]
    {
        cache::selected()
    }
    #[cfg(all(not(feature = "std"), target_arch = "x86_64", target_feature = "avx2"))]
    {
        Kernel::Avx2
    }
    #[cfg(all(not(feature = "std"), not(all(target_arch = "x86_64", target_feature = "avx2"))))]
    {
        Kernel::Scalar
    }
}
