//! Each code path of the encoder on its own, for tests and benchmarks that
//! compare them. Not part of the stable API.
//!
//! The encoder (`quantize`'s threshold search, [`Codebook::encode_one`] on
//! a whole group) has a portable path and, on x86-64, an AVX2 one; decoding
//! (`dequantize_codes`) is a table look-up with a single portable path (the
//! SIMD decoders are `lsqr-kernels`').

use crate::Codebook;

/// An encoder implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoder {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
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
    encoder: Encoder,
}

/// Every code path of this crate on this target, the portable one first.
pub static SIMD_PATHS: &[SimdPath] = &[
    SimdPath { name: "portable", features: &[], encoder: Encoder::Portable },
    #[cfg(target_arch = "x86_64")]
    SimdPath { name: "avx2", features: &["avx2"], encoder: Encoder::Avx2 },
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

    /// Encodes `xs[i] * inv_scale` with `codebook` into `out[i]` on this
    /// path: what `quantize` does for each group, `inv_scale` being the
    /// inverse of the group's scale. The portable path is
    /// `codebook.encode_one(x * inv_scale)` for each element. Any f32 is
    /// accepted (`quantize` rejects NaN and ±inf before encoding; here a NaN
    /// takes slot 0 on every path).
    ///
    /// # Panics
    ///
    /// If the path is not available on this CPU, or if `xs` and `out`
    /// differ in length.
    pub fn encode_scaled(&self, codebook: &Codebook, xs: &[f32], inv_scale: f32, out: &mut [u16]) {
        assert!(self.is_available(), "path {} needs CPU features this CPU lacks", self.name);
        assert_eq!(xs.len(), out.len(), "encode_scaled: input and output lengths differ");
        let table = codebook.encoder();
        match self.encoder {
            Encoder::Portable => table.encode_scaled_generic(xs, inv_scale, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `is_available` checked that this CPU has AVX2 (with
            // `std`; without, that the build targets it).
            Encoder::Avx2 => unsafe {
                crate::arch::x86_64::avx2::encode_scaled(table, xs, inv_scale, out)
            },
        }
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
/// `lsqr-simd: lsqr-codec (SUITE): checked NAME[FEATURES] ...; skipped: none`
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
    report::once(
        "lsqr-codec",
        suite,
        SIMD_PATHS.iter().map(|p| (p.name, p.features, p.missing_feature())),
    );
}

#[cfg(feature = "std")]
mod report {
    use std::io::Write;
    use std::string::String;
    use std::sync::atomic::{AtomicBool, Ordering};

    static DONE: AtomicBool = AtomicBool::new(false);

    type Entry = (&'static str, &'static [&'static str], Option<&'static str>);

    /// Writes the report line unless it was written already.
    pub(super) fn once(krate: &str, suite: &str, paths: impl Iterator<Item = Entry>) {
        if DONE.swap(true, Ordering::Relaxed) {
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
        // written half a line), so that concurrent output does not split
        // it; a failed write to stderr is not the test's failure.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Every path against the portable one, bit for bit, from the report's
/// list: tests of the threshold search (`quantize`'s encoder).
#[cfg(all(test, feature = "std"))]
mod tests {
    use alloc::boxed::Box;
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::{for_each_simd_path, SIMD_PATHS};
    use crate::codebook::{CodeWidth, Codebook, FpLayout};

    fn books(bits: u32) -> Vec<Codebook> {
        let w = CodeWidth::new(bits).unwrap();
        let lut: Vec<f32> =
            (0..w.code_count()).map(|i| ((i as f32).powf(1.3) / 40.0) - 0.9).collect();
        vec![
            Codebook::seed(w),
            Codebook::log(w, 0.0).unwrap(),
            Codebook::log(w, 300.0).unwrap(),
            Codebook::uniform(w),
            Codebook::nf(w),
            Codebook::fp(FpLayout::for_width(w)),
            Codebook::lut(w, lut).unwrap(),
        ]
    }

    /// `xs` at the end of an exact heap allocation, `offset` elements past
    /// its (aligned) start: AddressSanitizer sees a read past the end, and
    /// the vector loads start off their alignment.
    fn exact_at(xs: &[f32], offset: usize) -> Box<[f32]> {
        let mut buf = vec![0.0f32; offset];
        buf.extend_from_slice(xs);
        buf.into_boxed_slice()
    }

    /// Every path encodes `xs * inv_scale` as the portable path does, bit
    /// for bit, from an exact allocation, its input starting `offset`
    /// elements into it; the portable path is `encode_one` per element.
    fn paths_agree(cb: &Codebook, xs: &[f32], inv_scale: f32, offset: usize) {
        let portable = &SIMD_PATHS[0];
        assert_eq!(portable.name, "portable");
        let mut want = vec![0u16; xs.len()].into_boxed_slice();
        portable.encode_scaled(cb, xs, inv_scale, &mut want);
        for (i, (&x, &w)) in xs.iter().zip(want.iter()).enumerate() {
            assert_eq!(w, cb.encode_one(x * inv_scale), "portable [{i}] x = {x:e}");
        }
        let buf = exact_at(xs, offset);
        for_each_simd_path("lsqr_codec", |path| {
            let mut got = vec![0xFFFFu16; xs.len()].into_boxed_slice();
            path.encode_scaled(cb, &buf[offset..], inv_scale, &mut got);
            for i in 0..xs.len() {
                assert_eq!(
                    got[i],
                    want[i],
                    "{} {} C={} inv_scale={inv_scale:e} [{i}] x = {:e} (offset {offset}, n {})",
                    path.name,
                    cb.kind(),
                    cb.width().bits(),
                    xs[i],
                    xs.len()
                );
            }
        });
    }

    /// The extremes of f32: ±MAX, ±inf, ±0, the smallest normals and
    /// subnormals, NaN of both signs, and values around the unit range.
    fn extremes() -> Vec<f32> {
        let mut xs = vec![
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            -f32::from_bits(0x007f_ffff),
            1e-40,
            -1e-40,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_1234),
            1.0,
            -1.0,
            0.5,
            -0.5,
            f32::EPSILON,
            1e30,
            -1e30,
            3.0e38,
            -3.0e38,
        ];
        // Twice over in a shuffled order, so each lands in every lane.
        let twice: Vec<f32> =
            xs.iter().rev().step_by(3).chain(xs.iter().step_by(2)).copied().collect();
        xs.extend(twice);
        xs
    }

    /// inv_scale values: 0 (an all-zero group), 1, large enough that MAX
    /// overflows to inf, small enough to make subnormals, and a subnormal.
    const INV_SCALES: [f32; 7] = [1.0, 0.0, 2.0, f32::MAX, 1e-38, 1e-44, 7.3e5];

    /// Every extreme value, at every start offset 0..8 and every length
    /// up to the whole list (so the 16- and 8-lane loops and every tail
    /// length run), for every family and width.
    #[test]
    fn paths_agree_on_extremes_at_every_offset() {
        let xs = extremes();
        for bits in 2..=16 {
            for cb in books(bits) {
                for inv_scale in INV_SCALES {
                    for offset in 0..8 {
                        paths_agree(&cb, &xs, inv_scale, offset);
                        paths_agree(&cb, &xs[offset..], inv_scale, offset);
                        paths_agree(&cb, &xs[..xs.len() - 1 - offset], inv_scale, 7 - offset);
                    }
                    for n in 0..=33 {
                        paths_agree(&cb, &xs[..n], inv_scale, n % 8);
                    }
                }
            }
        }
    }

    /// Every threshold and its f32 neighbours, for every family and width.
    #[test]
    fn paths_agree_at_every_threshold() {
        for bits in 2..=16 {
            for cb in books(bits) {
                let mut xs: Vec<f32> = cb
                    .encoder()
                    .thresholds
                    .iter()
                    .filter(|t| t.is_finite())
                    .flat_map(|&t| {
                        [t, -t, f32::from_bits(t.to_bits() + 1), -f32::from_bits(t.to_bits() + 1)]
                    })
                    .collect();
                xs.extend([0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 1e-30, -1e-30]);
                paths_agree(&cb, &xs, 1.0, 0);
                paths_agree(&cb, &xs[1..], 1.0, 3);
            }
        }
    }

    proptest! {
        #[test]
        fn paths_agree_on_random_input(
            bits in 2u32..=16,
            xs in prop::collection::vec(-2.0f32..2.0, 0..77),
            inv_scale in prop_oneof![Just(1.0f32), Just(0.0f32), 0.01f32..100.0],
            offset in 0usize..8,
        ) {
            for cb in books(bits) {
                paths_agree(&cb, &xs, inv_scale, offset);
            }
        }
    }
}
