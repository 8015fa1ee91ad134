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

/// A code path of this crate and the CPU features it needs.
///
/// [`SIMD_PATHS`] lists every path compiled for this target, the portable
/// one first. Tests that compare the SIMD paths with the portable one
/// iterate over it (see [`for_each_simd_path`]), so a path added to the
/// list (an AVX-512 one, say) is checked wherever the CPU has its features,
/// and reported as skipped, naming the missing feature, elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimdPath {
    /// The path's name in reports: `portable`, `avx2`.
    pub name: &'static str,
    /// The CPU features the path needs, spelled as
    /// `is_x86_feature_detected!` (and `/proc/cpuinfo`, up to `_` and `.`)
    /// spell them; empty for the portable path.
    pub features: &'static [&'static str],
    kernel: Kernel,
}

/// Every code path of this crate on this target, the portable one first.
pub static SIMD_PATHS: &[SimdPath] = &[
    SimdPath { name: "portable", features: &[], kernel: Kernel::Scalar },
    #[cfg(target_arch = "x86_64")]
    SimdPath { name: "avx2", features: &["avx2"], kernel: Kernel::Avx2 },
];

impl SimdPath {
    /// The first of [`SimdPath::features`] this CPU lacks (with `std`:
    /// detected at run time; without: this build's target features), or
    /// `None` when the path can run here. Ignores `LSQR_FORCE_SCALAR`.
    pub fn missing_feature(&self) -> Option<&'static str> {
        self.features.iter().copied().find(|f| !cpu_has(f))
    }

    /// Whether the path can run on this CPU.
    pub fn is_available(&self) -> bool {
        self.missing_feature().is_none()
    }

    /// The kernel, checked to be runnable here.
    fn kernel(&self) -> Kernel {
        assert!(self.is_available(), "path {} needs CPU features this CPU lacks", self.name);
        self.kernel
    }

    /// [`crate::pack_into`] on this path.
    ///
    /// # Errors
    ///
    /// As [`crate::pack_into`].
    ///
    /// # Panics
    ///
    /// If the path is not available on this CPU.
    pub fn pack_into(&self, codes: &[u16], width: u32, out: &mut [u8]) -> Result<usize, PackError> {
        // `kernel()` checked the CPU features, upholding `Kernel::Avx2`'s
        // invariant.
        crate::pack_with(self.kernel(), codes, width, out)
    }

    /// [`crate::unpack_from`] on this path.
    ///
    /// # Errors
    ///
    /// As [`crate::unpack_from`].
    ///
    /// # Panics
    ///
    /// If the path is not available on this CPU.
    pub fn unpack_from(
        &self,
        packed: &[u8],
        width: u32,
        first: usize,
        out: &mut [u16],
    ) -> Result<(), PackError> {
        crate::unpack_with(self.kernel(), packed, width, first, out)
    }
}

/// The paths of [`SIMD_PATHS`] this CPU can run.
pub fn available_simd_paths() -> impl Iterator<Item = &'static SimdPath> {
    SIMD_PATHS.iter().filter(|p| p.is_available())
}

/// Whether this CPU has `feature` (a name as `is_x86_feature_detected!`
/// spells it). With `std`, detected at run time; without, this build's
/// target features. Names this function does not know are absent.
pub fn cpu_has(feature: &str) -> bool {
    macro_rules! known {
        ($($name:tt)*) => {
            match feature {
                $($name => detected!($name),)*
                _ => false,
            }
        };
    }
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    macro_rules! detected {
        ($name:tt) => {
            std::is_x86_feature_detected!($name)
        };
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    macro_rules! detected {
        ($name:tt) => {
            cfg!(target_feature = $name)
        };
    }
    known!("avx2" "fma" "avx512f" "avx512bw" "avx512vl" "avx512vbmi" "avx512vnni")
}

/// Runs `check` on every available path of [`SIMD_PATHS`] (the portable
/// one included), then, once per process, writes the report line
///
/// `lsqr-simd: lsqr-pack (SUITE): checked NAME[FEATURES] ...; skipped: none`
///
/// (a skipped path reads `NAME[FEATURES](missing FEATURE)`) straight to
/// the process's stderr, which the test harness does not capture.
/// `scripts/check-simd-coverage.sh` reads these lines. A path is skipped
/// only for a CPU feature it lacks.
#[cfg(feature = "std")]
pub fn for_each_simd_path(suite: &str, mut check: impl FnMut(&'static SimdPath)) {
    for path in available_simd_paths() {
        check(path);
    }
    static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    write_simd_report_once(
        &DONE,
        "lsqr-pack",
        suite,
        SIMD_PATHS.iter().map(|p| (p.name, p.features, p.missing_feature())),
    );
}

/// One path's entry in a report line: name, features, and the first
/// feature this CPU lacks (`None`: the path was checked).
pub type SimdReportEntry = (&'static str, &'static [&'static str], Option<&'static str>);

/// Writes the `lsqr-simd:` report line of `krate`'s test `suite` straight
/// to the process's stderr, unless `done` says it was written already.
/// Shared with `lsqr-kernels`, whose reports `scripts/check-simd-coverage.sh`
/// reads in the same format.
#[cfg(feature = "std")]
#[doc(hidden)]
pub fn write_simd_report_once(
    done: &core::sync::atomic::AtomicBool,
    krate: &str,
    suite: &str,
    paths: impl Iterator<Item = SimdReportEntry>,
) {
    use std::io::Write;
    use std::string::String;
    if done.swap(true, core::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let (mut checked, mut skipped) = (String::new(), String::new());
    for (name, features, missing) in paths {
        let entry = std::format!("{name}[{}]", features.join(","));
        match missing {
            None => checked = std::format!("{checked} {entry}"),
            Some(f) => skipped = std::format!("{skipped} {entry}(missing {f})"),
        }
    }
    let skipped = if skipped.is_empty() { " none" } else { &skipped };
    let line =
        std::format!("\nlsqr-simd: {krate} ({suite}): checked{checked}; skipped:{skipped}\n");
    // One write of the whole line, after a newline (the harness may have
    // written half a line), so that concurrent output does not split it; a
    // failed write to stderr is not the test's failure.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
