//! Direct access to each implementation, bypassing run-time dispatch.
//!
//! Intended for tests and benchmarks: every function here has exactly the
//! semantics (validation, errors, output) of its counterpart at the crate
//! root, but always runs the named implementation. Not part of the stable
//! API.

use crate::arch::{self, Kernel};
use crate::PackError;

/// Name of the implementation the crate-root functions use on this machine
/// (`"scalar"` or `"avx2"`). Triggers (and caches) detection if it has not
/// happened yet.
pub fn selected() -> &'static str {
    arch::selected().name()
}

/// The portable scalar implementation.
pub mod scalar {
    use super::{Kernel, PackError};

    /// [`crate::pack_into`] using the portable kernel.
    ///
    /// # Errors
    ///
    /// As [`crate::pack_into`].
    pub fn pack_into(codes: &[u16], width: u32, out: &mut [u8]) -> Result<usize, PackError> {
        crate::pack_with(Kernel::Scalar, codes, width, out)
    }

    /// [`crate::unpack_from`] using the portable kernel.
    ///
    /// # Errors
    ///
    /// As [`crate::unpack_from`].
    pub fn unpack_from(
        packed: &[u8],
        width: u32,
        first: usize,
        out: &mut [u16],
    ) -> Result<(), PackError> {
        crate::unpack_with(Kernel::Scalar, packed, width, first, out)
    }
}

/// The x86_64 AVX2 implementation.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{Kernel, PackError};

    /// Proof that the AVX2 kernels may run on this CPU.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2 {
        _private: (),
    }

    impl Avx2 {
        /// Returns `Some` if the running CPU supports AVX2 (with the `std`
        /// feature: detected at run time, ignoring `LSQR_FORCE_SCALAR`;
        /// without it: only if compiled with the `avx2` target feature).
        pub fn new() -> Option<Self> {
            if crate::arch::avx2_available() {
                Some(Avx2 { _private: () })
            } else {
                None
            }
        }

        /// [`crate::pack_into`] using the AVX2 kernel.
        ///
        /// # Errors
        ///
        /// As [`crate::pack_into`].
        pub fn pack_into(
            self,
            codes: &[u16],
            width: u32,
            out: &mut [u8],
        ) -> Result<usize, PackError> {
            // `self` proves AVX2 support, upholding `Kernel::Avx2`'s invariant.
            crate::pack_with(Kernel::Avx2, codes, width, out)
        }

        /// [`crate::unpack_from`] using the AVX2 kernel.
        ///
        /// # Errors
        ///
        /// As [`crate::unpack_from`].
        pub fn unpack_from(
            self,
            packed: &[u8],
            width: u32,
            first: usize,
            out: &mut [u16],
        ) -> Result<(), PackError> {
            // `self` proves AVX2 support, upholding `Kernel::Avx2`'s invariant.
            crate::unpack_with(Kernel::Avx2, packed, width, first, out)
        }
    }
}
