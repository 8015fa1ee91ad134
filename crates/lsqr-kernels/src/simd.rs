//! The list of this crate's code paths and the CPU features each needs,
//! re-exported from [`crate::paths`] for the tests that compare them.

use crate::Kernels;

/// Which kernel table a [`SimdPath`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
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
    /// The path's name in reports: `portable`, `avx2+fma`, `avx512`.
    pub name: &'static str,
    /// The CPU features the path needs, spelled as
    /// `is_x86_feature_detected!` (and `/proc/cpuinfo`, up to `_` and `.`)
    /// spell them; empty for the portable path.
    pub features: &'static [&'static str],
    table: Table,
}

/// Every code path of this crate on this target, the portable one first.
pub static SIMD_PATHS: &[SimdPath] = &[
    SimdPath { name: "portable", features: &[], table: Table::Portable },
    #[cfg(target_arch = "x86_64")]
    SimdPath { name: "avx2+fma", features: &["avx2", "fma"], table: Table::Avx2Fma },
    #[cfg(target_arch = "x86_64")]
    SimdPath {
        name: "avx512",
        features: &["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512vnni"],
        table: Table::Avx512,
    },
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

    /// The path's kernel table, to run any operator on it directly
    /// (whatever `LSQR_FORCE_SCALAR` says).
    ///
    /// # Panics
    ///
    /// If the path is not available on this CPU.
    pub fn kernels(&self) -> &'static Kernels {
        let table = match self.table {
            Table::Portable => Some(Kernels::portable()),
            #[cfg(target_arch = "x86_64")]
            Table::Avx2Fma => Kernels::avx2(),
            #[cfg(target_arch = "x86_64")]
            Table::Avx512 => Kernels::avx512(),
        };
        match table {
            Some(k) if self.is_available() => k,
            _ => panic!("path {} needs CPU features this CPU lacks", self.name),
        }
    }
}

/// The paths of [`SIMD_PATHS`] this CPU can run.
pub fn available_simd_paths() -> impl Iterator<Item = &'static SimdPath> {
    SIMD_PATHS.iter().filter(|p| p.is_available())
}

/// Whether this CPU has `feature`: `lsqr-pack`'s detection, shared.
pub use lsqr_pack::paths::cpu_has;

/// Runs `check` on every available path of [`SIMD_PATHS`] (the portable
/// one included), then, once per process, writes the report line
///
/// `lsqr-simd: lsqr-kernels (SUITE): checked NAME[FEATURES] ...; skipped: none`
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
    lsqr_pack::paths::write_simd_report_once(
        &DONE,
        "lsqr-kernels",
        suite,
        SIMD_PATHS.iter().map(|p| (p.name, p.features, p.missing_feature())),
    );
}

/// The batch-1 packed kernel and the decoder of every path against the
/// portable ones, on random and on extreme inputs, from exact heap
/// allocations (AddressSanitizer sees a read one byte past the codes).
#[cfg(all(test, feature = "std"))]
mod tests {
    use alloc::boxed::Box;
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::for_each_simd_path;
    use crate::arch::generic;
    use crate::kernels::PackedRows;

    const SUITE: &str = "lsqr_kernels";

    /// Extremes of f32 for tables, inputs and scales: ±MAX, ±inf, NaN, ±0,
    /// the smallest normal and subnormals.
    const EXTREMES: [f32; 12] = [
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        1.0,
    ];

    /// Large but summable: products of two of these, summed over a few
    /// hundred columns, stay below f32::MAX in any order, so sums that
    /// differ only in order stay comparable.
    const LARGE: [f32; 12] =
        [1e17, -1e17, 3e16, -3e16, 1e-40, -1e-40, 0.0, -0.0, 1.2e-38, -1.2e-38, 1.0, -1.0];

    /// Random inputs of the code-kernel tests: a table of 2^bits values (in
    /// [-1, 1), or drawn from `special` when given), its top half the
    /// bottom half negated when `sign_magnitude` (the xor-sign path),
    /// `count` codes, and more values on demand.
    struct Case {
        table: Vec<f32>,
        codes: Vec<u16>,
        state: u64,
        special: Option<&'static [f32]>,
    }

    impl Case {
        fn new(
            bits: u32,
            count: usize,
            sign_magnitude: bool,
            seed: u64,
            special: Option<&'static [f32]>,
        ) -> Self {
            let len = 1usize << bits;
            let mut case = Case { table: Vec::new(), codes: Vec::new(), state: seed | 1, special };
            case.table = case.values(len).iter().map(|v| v * 2.0).collect();
            if sign_magnitude && len >= 2 {
                for i in 0..len / 2 {
                    case.table[i + len / 2] = -case.table[i];
                }
            }
            case.codes = (0..count).map(|_| (case.next() as usize % len) as u16).collect();
            case
        }

        fn next(&mut self) -> u64 {
            let s = &mut self.state;
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s
        }

        /// `n` values in [-0.5, 0.5), one in three drawn from `special`.
        fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let r = self.next();
                    match self.special {
                        Some(s) if r.is_multiple_of(3) => s[(r >> 8) as usize % s.len()] / 2.0,
                        _ => (r >> 40) as f32 / (1u64 << 24) as f32 - 0.5,
                    }
                })
                .collect()
        }

        /// The codes packed LSB-first, in an allocation exactly as long as
        /// they need.
        fn packed(&self) -> Box<[u8]> {
            let bits = self.table.len().trailing_zeros();
            let mut packed = vec![0u8; lsqr_pack::packed_len(self.codes.len(), bits).unwrap()];
            lsqr_pack::pack_into(&self.codes, bits, &mut packed).unwrap();
            packed.into_boxed_slice()
        }
    }

    /// `v` at the end of an exact allocation, `offset` elements in.
    fn exact_at(v: &[f32], offset: usize) -> Box<[f32]> {
        let mut buf = vec![0.0f32; offset];
        buf.extend_from_slice(v);
        buf.into_boxed_slice()
    }

    /// `n` group scales, 0.5 to 2.0, every third one from `special` when
    /// given.
    fn scales(n: usize, special: Option<&[f32]>) -> Vec<f32> {
        (0..n)
            .map(|g| match special {
                Some(s) if g % 3 == 1 => s[g / 3 % s.len()],
                _ => 0.5 + (g % 7) as f32 * 0.25,
            })
            .collect()
    }

    /// A [`Case`] as the row kernels see it: `rows` rows of `cols` codes,
    /// packed into an exact allocation ([`Case::packed`]), and the scales of
    /// the layout `(scale_stride, group)` ([`scales`], every third one from
    /// `special_scales` when given).
    struct RowsCase {
        case: Case,
        packed: Box<[u8]>,
        scales: Vec<f32>,
        cols: usize,
        scale_stride: usize,
        group: usize,
    }

    impl RowsCase {
        fn new(
            case: Case,
            rows: usize,
            cols: usize,
            (scale_stride, group): (usize, usize),
            special_scales: Option<&[f32]>,
        ) -> Self {
            let packed = case.packed();
            let scales = scales(rows * scale_stride.max(1), special_scales);
            Self { case, packed, scales, cols, scale_stride, group }
        }

        /// The kernels' view of the rows.
        fn job(&self) -> PackedRows<'_> {
            PackedRows {
                packed: &self.packed,
                bits: self.case.table.len().trailing_zeros(),
                cols: self.cols,
                table: &self.case.table,
                scales: &self.scales,
                scale_stride: self.scale_stride,
                group: self.group,
                sub_scales: None,
            }
        }
    }

    /// Scales for the GEMV: 0, subnormal, tiny (a large one would overflow
    /// each lane's partial sum on AVX2 but not the portable whole sum).
    const GEMV_SCALES: [f32; 4] = [0.0, 1e-40, f32::MIN_POSITIVE, 1e-3];

    /// Scales for the decoder: as above, and large ones up to MAX.
    const DECODE_SCALES: [f32; 6] = [0.0, 1e-40, f32::MIN_POSITIVE, 1e10, f32::MAX, 1e-3];

    /// `|got - want| <= tol`, NaN matching NaN and infinities exactly.
    fn close(got: f32, want: f32, tol: f32) -> bool {
        if want.is_nan() || got.is_nan() {
            return want.is_nan() && got.is_nan();
        }
        if want.is_infinite() || got.is_infinite() {
            return got == want;
        }
        (got - want).abs() <= tol
    }

    /// Equal bits, or both NaN.
    fn same(got: f32, want: f32) -> bool {
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        /// The AVX2 `dot_codes_grouped` (the unpack-then-dot fallback of
        /// the AVX2 GEMV, not a table entry of its own) equals the portable
        /// one up to summation order, for register (<= 16 entries) and
        /// gathered tables, any length and group (tails included).
        #[test]
        fn dot_codes_grouped_matches_portable(log_len in prop::sample::select(vec![1u32, 2, 3, 4, 5, 8, 12, 16]), n in 0usize..150, sign_magnitude in prop::bool::ANY, large in prop::bool::ANY, seed in any::<u64>()) {
            let special = if large { Some(&LARGE[..]) } else { None };
            let mut case = Case::new(log_len, n, sign_magnitude, seed, special);
            let x = exact_at(&case.values(n), 0);
            let (table, codes) = (&case.table, &case.codes[..]);
            let codes: Box<[u16]> = Box::from(codes);
            for_each_simd_path(SUITE, |path| {
                if path.name != "avx2+fma" {
                    return;
                }
                for group in [1usize, 16, 64, 7, n.max(1)] {
                    let scales: Vec<f32> = (0..n.div_ceil(group)).map(|g| 0.5 + g as f32 * 0.25).collect();
                    let simd = crate::arch::x86_64::safe::dot_codes_grouped(table, &codes, &x, &scales, group);
                    let scalar = generic::dot_codes_grouped(table, &codes, &x, &scales, group);
                    let size: f32 = codes.iter().zip(x.iter()).enumerate().map(|(i, (&c, &v))| (scales[i / group] * table[usize::from(c)] * v).abs()).sum();
                    assert!(close(simd, scalar, 1e-5 * size + 1e-30), "group {group}: {simd} vs {scalar}");
                }
            });
        }
    }

    proptest! {
        /// The batch-1 packed kernel of every path (AVX2: fused for C <= 8
        /// with whole 8-code chunks, unpack-then-dot otherwise) equals the
        /// portable one up to summation order: every C, odd and aligned
        /// widths, every scale layout, random or large-and-tiny values
        /// (tables, inputs and scales; sums stay finite), the input at an
        /// odd offset, and the packed codes in an exact allocation (so the
        /// last rows' wide loads must be avoided).
        #[test]
        fn gemv_packed_matches_portable(
            bits in 1u32..=16,
            rows in 1usize..10,
            cols8 in 0usize..40,
            odd in prop::bool::ANY,
            layout in 0usize..5,
            sign_magnitude in prop::bool::ANY,
            large in prop::bool::ANY,
            x_offset in 0usize..8,
            seed in any::<u64>(),
        ) {
            let cols = cols8 * 8 + usize::from(odd) * 3;
            let special = if large { Some(&LARGE[..]) } else { None };
            gemv_case(bits, rows, cols, layout, sign_magnitude, special, x_offset, seed);
        }

        /// As above with ±MAX, ±inf, NaN, ±0 and subnormals in the table and
        /// the input: only the non-finite outcomes, which do not depend on
        /// the summation order (a NaN or opposite infinities give NaN, one
        /// infinity gives it; finite parts stay below MAX), must agree
        /// exactly; finite rows within the usual tolerance.
        #[test]
        fn gemv_packed_extremes_match_portable(
            bits in 1u32..=8,
            rows in 1usize..10,
            cols8 in 0usize..12,
            odd in prop::bool::ANY,
            layout in 0usize..5,
            x_offset in 0usize..8,
            seed in any::<u64>(),
        ) {
            let cols = cols8 * 8 + usize::from(odd) * 5;
            gemv_case(bits, rows, cols, layout, false, Some(&EXTREMES_NO_MAX[..]), x_offset, seed);
        }
    }

    /// `EXTREMES` without ±MAX, whose products would overflow depending on
    /// the order of the sum.
    const EXTREMES_NO_MAX: [f32; 10] = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        1.0,
    ];

    fn layout_of(layout: usize, cols: usize) -> (usize, usize) {
        match layout {
            0 => (0, cols.max(1)),
            1 => (1, cols.max(1)),
            2 => (cols.div_ceil(16), 16),
            3 => (cols.div_ceil(32), 32),
            _ => (cols.div_ceil(24).max(1), 24),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn gemv_case(
        bits: u32,
        rows: usize,
        cols: usize,
        layout: usize,
        sign_magnitude: bool,
        special: Option<&'static [f32]>,
        x_offset: usize,
        seed: u64,
    ) {
        let case = Case::new(bits, rows * cols, sign_magnitude, seed, special);
        let layout = layout_of(layout, cols);
        let mut w = RowsCase::new(case, rows, cols, layout, special.map(|_| &GEMV_SCALES[..]));
        let xs = w.case.values(cols);
        let x = exact_at(&xs, x_offset);
        let x = &x[x_offset..];
        let job = w.job();
        let (table, codes, scales) = (job.table, &w.case.codes, job.scales);
        let (scale_stride, group) = (job.scale_stride, job.group);
        let mut want = vec![f32::NAN; rows];
        generic::gemv_packed(&job, x, &mut want);
        for_each_simd_path(SUITE, |path| {
            let mut got = vec![f32::NAN; rows].into_boxed_slice();
            (path.kernels().gemv_packed)(&job, x, &mut got);
            for r in 0..rows {
                let size: f32 = (0..cols)
                    .map(|c| {
                        let s = scales[r * scale_stride + c / group];
                        (s * table[usize::from(codes[r * cols + c])] * x[c]).abs()
                    })
                    .filter(|v| v.is_finite())
                    .sum();
                assert!(
                    close(got[r], want[r], 1e-5 * size + 1e-30),
                    "{} C={bits} row {r}: {} vs {}",
                    path.name,
                    got[r],
                    want[r]
                );
            }
        });
    }

    proptest! {
        /// The integer kernel of every path equals the portable integer
        /// reference bit for bit (exact integer block sums, the same f32
        /// steps): C = 1..=8, int8 and int16 tables (C = 5..=8: 32 to 256
        /// entries, sign-magnitude or not; C = 7 and 8 also levels made of
        /// nibble factors, any in range), blocks of 32 and 64,
        /// every scale layout (two-level scales as stored or as f32), 1 to
        /// 6 activation vectors (each vector's results those of a batch of
        /// it alone), the codes in an exact allocation (the last rows'
        /// 16-byte loads must be avoided).
        #[test]
        fn gemv_int_matches_portable(
            bits in 1u32..=8,
            rows in 1usize..11,
            blocks in 1usize..6,
            block64 in prop::bool::ANY,
            layout in 0usize..6,
            wide in prop::bool::ANY,
            table_form in 0u8..3,
            batch in 1usize..7,
            tail in 0usize..4,
            two_level in prop::bool::ANY,
            seed in any::<u64>(),
        ) {
            gemv_int_case(bits, rows, (blocks, block64, layout, tail), wide, table_form, batch, two_level, seed);
        }

        /// As above, for the layout `--bpw` picks most: C = 4, int16,
        /// two-level scales as stored with sub-blocks of 8 to 64, rows in
        /// groups of four (expanded to f32 four rows at a time) and alone.
        #[test]
        fn gemv_int_stored_two_level_scales(
            rows in 1usize..14,
            blocks in 1usize..20,
            layout in 2usize..6,
            batch in 1usize..3,
            seed in any::<u64>(),
        ) {
            gemv_int_case(4, rows, (blocks, true, layout, 0), true, 0, batch, true, seed);
        }

        /// As above, for C = 7 and 8 levels made of nibble factors (the
        /// `log` and `uniform` codecs' form there), every scale layout.
        #[test]
        fn gemv_int_nibble_levels(
            bits in 7u32..=8,
            rows in 1usize..11,
            blocks in 1usize..8,
            block64 in prop::bool::ANY,
            layout in 0usize..3,
            batch in 1usize..4,
            tail in 0usize..4,
            seed in any::<u64>(),
        ) {
            gemv_int_case(bits, rows, (blocks, block64, layout, tail), true, 2, batch, false, seed);
        }
    }

    /// The GEMM micro-kernel of every SIMD path equals, bit for bit, the
    /// FMA chain over the depth for each output (the AVX2 `6 x 16` and
    /// `12 x 8` tiles and AVX-512's `12 x 16` and `12 x 32` alike), for every tile
    /// height the path takes; the portable tile (a multiply, then an
    /// add) is within rounding of it.
    #[test]
    fn gemm_tile_is_the_fma_chain() {
        use crate::gemm::{tile_portable, TILE};
        let mut case = Case::new(1, 1, false, 41, None);
        // Under Miri (the portable tile only) shallow tiles suffice.
        let depths: &[usize] = if cfg!(miri) { &[1, 5] } else { &[1, 5, 64, 257] };
        for nr in [8usize, 16, 32] {
            for &kc in depths {
                let lda = kc + 3;
                let a = case.values(11 * lda + kc);
                let b = case.values(kc * nr);
                for mr in 1..=12 {
                    let want: Vec<f32> = (0..mr * nr)
                        .map(|e| {
                            let (i, j) = (e / nr, e % nr);
                            (0..kc)
                                .fold(0.0f32, |acc, p| a[i * lda + p].mul_add(b[p * nr + j], acc))
                        })
                        .collect();
                    let mut portable = [f32::NAN; TILE];
                    tile_portable(&a, lda, &b, kc, mr, nr, &mut portable);
                    for (e, (&g, &w)) in portable.iter().zip(&want).enumerate() {
                        let scale = (0..kc)
                            .map(|p| (a[(e / nr) * lda + p] * b[p * nr + e % nr]).abs())
                            .sum::<f32>();
                        assert!(
                            (g - w).abs() <= 1e-5 * scale.max(1e-30),
                            "portable {mr}x{nr} kc {kc}"
                        );
                    }
                    for_each_simd_path(SUITE, |path| {
                        let k = path.kernels();
                        let rows = match nr {
                            16 => k.gemm_rows16,
                            32 => k.gemm_rows32,
                            _ => 12,
                        };
                        if path.name == "portable" || mr > rows {
                            return;
                        }
                        let mut got = [f32::NAN; TILE];
                        (k.gemm_tile)(&a, lda, &b, kc, mr, nr, &mut got);
                        for (e, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                same(g, w),
                                "{} {mr}x{nr} kc {kc} element {e}: {g} vs {w}",
                                path.name
                            );
                        }
                    });
                }
            }
        }
    }

    proptest! {
        /// The depthwise plane kernel of every path equals the portable one
        /// bit for bit (each output: the bias, then its taps in `(ky, kx)`
        /// order, a multiply then an add, padding skipped), on random and
        /// extreme values, for planes
        /// narrower and wider than a register, kernels up to 7 wide,
        /// padding, dilation and both strides.
        #[test]
        fn depthwise_plane_matches_portable(
            // Under Miri (the portable path only), small planes.
            h in 1usize..if cfg!(miri) { 6 } else { 24 },
            w in 1usize..if cfg!(miri) { 18 } else { 40 },
            kh in 1usize..=7,
            kw in 1usize..=7,
            ph in 0usize..=3,
            pw in 0usize..=3,
            dh in 1usize..=2,
            dw in 1usize..=2,
            sh in 1usize..=2,
            sw in 1usize..=2,
            extreme in prop::bool::ANY,
            seed in any::<u64>(),
        ) {
            let out_len = |len: usize, pad: usize, d: usize, k: usize, s: usize| {
                (len + 2 * pad).checked_sub(d * (k - 1) + 1).map(|x| x / s + 1)
            };
            let (Some(oh), Some(ow)) = (out_len(h, ph, dh, kh, sh), out_len(w, pw, dw, kw, sw)) else {
                return Ok(());
            };
            // With ±inf, NaN, ±0 and subnormals among the values: a tap
            // in the padding must be skipped, not added as `t * 0`.
            let special = if extreme { Some(&EXTREMES[..]) } else { None };
            let mut case = Case::new(1, 1, false, seed, special);
            let input = case.values(h * w);
            let filter = case.values(kh * kw);
            let plane = crate::conv::DwPlane {
                input: &input,
                h,
                w,
                filter: &filter,
                kh,
                kw,
                stride: [sh, sw],
                padding: [ph, pw],
                dilation: [dh, dw],
                oh,
                ow,
                bias: case.values(1)[0],
            };
            let mut want = vec![f32::NAN; oh * ow];
            crate::conv::depthwise_portable(&plane, &mut want);
            for_each_simd_path(SUITE, |path| {
                let mut got = vec![f32::NAN; oh * ow];
                (path.kernels().depthwise_plane)(&plane, &mut got);
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    assert!(same(g, e), "{} output {i}: {g} vs {e}", path.name);
                }
            });
        }
    }

    /// One case of [`gemv_int_matches_portable`]: `(blocks, block64, layout,
    /// tail)` say the columns and scale layout (0: one scale, 1: per row,
    /// 2: per block, 3-5: groups of 32, 16 or 8 at C = 4 with int16 and
    /// blocks of 64); `table_form` (C = 5..=8): 0 any levels, 1
    /// sign-magnitude, 2 (C = 7, 8) nibble factors.
    #[allow(clippy::too_many_arguments)]
    fn gemv_int_case(
        bits: u32,
        rows: usize,
        (blocks, block64, layout, tail): (usize, bool, usize, usize),
        wide: bool,
        table_form: u8,
        batch: usize,
        two_level: bool,
        seed: u64,
    ) {
        use crate::kernels::{
            int_act_column, int_act_span, IntRows, IntTable, NibbleFactors, SubScales,
        };
        let block = if block64 { 64 } else { 32 };
        // Layouts 3-5: groups of 32, 16 or 8 (C = 4, int16, blocks of
        // 64 only), in rows of whole blocks; otherwise the last block
        // may lack up to 24 columns (`tail`).
        let small = layout >= 3 && bits == 4 && block64 && wide;
        let padded = blocks * block;
        let cols = if small { padded } else { padded - 8 * tail };
        let small_group = [32, 16, 8][layout.saturating_sub(3).min(2)];
        let groups_per_block = if small { 64 / small_group } else { 1 };
        let layout = match layout {
            0 => (0, cols),
            1 => (1, cols),
            _ if small => (cols / small_group, small_group),
            _ => (blocks, block),
        };
        let case = Case::new(bits, rows * cols, false, seed, None);
        let mut w = RowsCase::new(case, rows, cols, layout, None);
        let case = &mut w.case;
        let mut t8 = [0i8; 16];
        let mut t16 = [0i16; 16];
        let mut large = [0i16; 256];
        for k in 0..16 {
            t8[k] = ((case.next() % 255) as i32 - 127) as i8;
            t16[k] = ((case.next() % 16383) as i32 - 8191) as i16;
        }
        for v in &mut large {
            *v = ((case.next() % 65535) as i32 - 32767) as i16;
        }
        let half = 1usize << (bits - 1);
        if table_form == 1 && bits >= 5 {
            for m in 0..half {
                large[half + m] = -large[m];
            }
        }
        // Offsets and spans below 2^14: every level is in ±32767.
        let mut factor = |bound: u64| -> [i16; 16] {
            core::array::from_fn(|_| ((case.next() % (2 * bound + 1)) as i64 - bound as i64) as i16)
        };
        let nibbles = (table_form == 2 && bits >= 7).then(|| NibbleFactors {
            offset: factor(16383),
            span: factor(16383),
            shape: factor(32767),
        });
        if let Some(f) = nibbles {
            large = f.levels();
        }
        // C = 5..=8 take the large int16 form and its finer activations.
        let wide = wide || bits >= 5;
        let act_q = if bits >= 5 { 8191 } else { 4095 };
        let n = batch * padded;
        // The padding past `cols` holds zeros, as `crate::packed`
        // stores it (the kernels may read codes there).
        let span = int_act_span(bits, block);
        let in_row = |i: usize| {
            let s = i % padded;
            s / span * span + int_act_column(bits, wide, span, s % span) < cols
        };
        let act8: Vec<i8> = (0..n)
            .map(|i| ((case.next() % 255) as i32 - 127) as i8 * i8::from(in_row(i)))
            .collect();
        let act16: Vec<i16> = (0..n)
            .map(|i| {
                ((case.next() % (2 * act_q + 1)) as i32 - act_q as i32) as i16
                    * i16::from(in_row(i))
            })
            .collect();
        let act_scales: Vec<f32> = case.values(batch * blocks).iter().map(|v| v * 1e-3).collect();
        // Two-level scales as stored, for the layouts with groups: the
        // kernels read these, the reference the f32 scales made from
        // them (super-blocks of 64 columns or more, as many as four
        // times that, sub-scales 0..=255).
        let (scale_stride, group) = layout;
        let two_level = two_level && scale_stride > 1;
        let shift = (1..8).find(|k| group << k >= 64).unwrap_or(1) + (case.next() % 3) as u32;
        let sup_stride = scale_stride.div_ceil(1 << shift);
        let sup: Vec<f32> = (0..rows * sup_stride)
            .map(|i| [0.0, 1e-3, 0.02, 1.5][(case.next() % 4) as usize] * (1.0 + i as f32 / 64.0))
            .collect();
        let sub: Vec<u8> = (0..rows * scale_stride).map(|_| (case.next() % 256) as u8).collect();
        if two_level {
            for (i, s) in w.scales.iter_mut().enumerate() {
                let (r, g) = (i / scale_stride, i % scale_stride);
                *s = sup[r * sup_stride + (g >> shift)] * f32::from(sub[i]);
            }
        }
        let mut rows_job = w.job();
        if two_level {
            rows_job.sub_scales =
                Some(SubScales { sup: &sup, sup_stride, sub: &sub, subs_per_super_log2: shift });
        }
        // The f32 table is not read: the integer table stands for it.
        let job = IntRows {
            rows: rows_job,
            table: match (bits >= 5, wide) {
                (true, _) => IntTable::I16Large(large, nibbles),
                (false, true) => IntTable::I16(t16),
                (false, false) => IntTable::I8(t8),
            },
            block,
            groups_per_block,
            act8: &act8,
            act16: &act16,
            act_scales: &act_scales,
            batch,
        };
        let mut want = vec![f32::NAN; rows * batch];
        // The reference reads the f32 scales only.
        let f32_job = IntRows { rows: PackedRows { sub_scales: None, ..job.rows }, ..job };
        generic::gemv_int(&f32_job, &mut want);
        for v in 0..batch {
            let alone = IntRows {
                act8: act8.get(v * padded..(v + 1) * padded).unwrap_or_default(),
                act16: act16.get(v * padded..(v + 1) * padded).unwrap_or_default(),
                act_scales: &act_scales[v * blocks..(v + 1) * blocks],
                batch: 1,
                ..job
            };
            let mut one = vec![f32::NAN; rows];
            generic::gemv_int(&alone, &mut one);
            for r in 0..rows {
                assert!(same(one[r], want[r * batch + v]), "vector {v} row {r} alone");
            }
        }
        for_each_simd_path(SUITE, |path| {
            let mut got = vec![f32::NAN; rows * batch].into_boxed_slice();
            (path.kernels().gemv_int)(&job, &mut got);
            for (k, (&g, &e)) in got.iter().zip(&want).enumerate() {
                let (r, v) = (k / batch, k % batch);
                assert!(same(g, e), "{} C={bits} row {r} vector {v}: {g} vs {e}", path.name);
            }
        });
    }

    proptest! {
        /// The decoder of every path equals the portable one bit for bit
        /// (one multiply per element on both paths), from any start
        /// (multiples of 8 or not), for every C and scale layout, up to the
        /// exact end of the packed data, on random tables and on tables and
        /// scales holding ±MAX, ±inf, NaN, ±0 and subnormals.
        #[test]
        fn decode_packed_matches_portable(
            bits in 1u32..=16,
            rows in 1usize..6,
            cols8 in 1usize..20,
            odd in prop::bool::ANY,
            layout in 0usize..4,
            start in 0usize..70,
            sign_magnitude in prop::bool::ANY,
            extreme in prop::bool::ANY,
            seed in any::<u64>(),
        ) {
            let cols = cols8 * 8 + usize::from(odd) * 5;
            let special = if extreme { Some(&EXTREMES[..]) } else { None };
            let case = Case::new(bits, rows * cols, sign_magnitude, seed, special);
            let layout = match layout {
                0 => (0, cols),
                1 => (1, cols),
                2 => (cols.div_ceil(16), 16),
                _ => (cols.div_ceil(40), 40),
            };
            let w = RowsCase::new(case, rows, cols, layout, special.map(|_| &DECODE_SCALES[..]));
            let job = w.job();
            let (table, codes, scales) = (job.table, &w.case.codes, job.scales);
            let (scale_stride, group) = (job.scale_stride, job.group);
            let start = start.min(codes.len());
            // The whole rest, and a piece ending before the end.
            for n in [codes.len() - start, (codes.len() - start) / 2] {
                let mut want = vec![f32::NAN; n];
                generic::decode_packed(&job, start, &mut want);
                for (k, &b) in want.iter().enumerate() {
                    let e = start + k;
                    let expected = table[usize::from(codes[e])] * scales[(e / cols) * scale_stride + (e % cols) / group];
                    assert!(same(b, expected), "portable element {e}");
                }
                for_each_simd_path(SUITE, |path| {
                    let mut got = vec![f32::NAN; n].into_boxed_slice();
                    (path.kernels().decode_packed)(&job, start, &mut got);
                    for (k, (&a, &b)) in got.iter().zip(&want).enumerate() {
                        assert!(same(a, b), "{} C={bits} element {}: {a:e} vs {b:e}", path.name, start + k);
                    }
                });
            }
        }
    }
}
