//! Golden bytes of the quantizer: every codec at C = 3, 4 and 8, and the
//! scale options, on fixed inputs, through `quantize` and the `.lsq` writer
//! (`lsqr::save_lsq_model`). Any change to a codebook, a parameter search,
//! the scale rounding, the encoder, the bit packing or the container shows
//! up here as a changed hash.
//!
//! `tests/data/quantizer_golden.txt` holds one line per case:
//! `name bytes file codes scales table`, where `bytes` is the length of the
//! `.lsq` file and the rest are CRC-32s: of the whole file, and of the
//! three parts `quantize` produced (the codes as u16 LE, the scales as
//! stored, the decode table as f32 LE followed by the codebook parameters).
//! On a mismatch the failure names every changed case and which of the
//! parts changed, so a writer change (file only) is told apart from an
//! encoder change (codes), a scale change, or a search that moved (table).
//!
//! The inputs are made with integer arithmetic only (a splitmix64 stream,
//! Irwin-Hall sums of 20-bit uniforms, exact conversions to f32, exact
//! power-of-two scalings, and one correctly rounded f32 addition for the
//! bimodal row), so they are bit-identical on every machine; no libm or std
//! transcendental is involved. The outputs must then be too:
//! the test passes unchanged with `LSQR_FORCE_SCALAR=1` (portable paths)
//! and on AVX2.
//!
//! To regenerate after a deliberate change (say why in the commit):
//! `LSQR_BLESS=1 cargo test --test quantizer_golden` rewrites the file and
//! fails on purpose; rerun without `LSQR_BLESS`, also with
//! `LSQR_FORCE_SCALAR=1`, and review the diff of the data file.

use std::fmt::Write as _;
use std::path::PathBuf;

use lsqr::codec::{
    quantize, CodebookParams, CodecSpec, FpLayout, QuantizeOptions, QuantizedTensor, ScaleDtype,
    ScaleMethod, Scaling,
};
use ndarray::{ArrayViewD, IxDyn};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/quantizer_golden.txt")
}

/// splitmix64: integer only, the same stream everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Irwin-Hall: the sum of 12 uniform 20-bit integers, centred. Its
    /// standard deviation is 2^20 and |value| < 6 * 2^20 < 2^24, so the
    /// conversion to f32 is exact; `unit` (a power of two) scales it
    /// exactly too.
    fn irwin_hall(&mut self, unit: f32) -> f32 {
        let sum: i64 = (0..12).map(|_| (self.next_u64() >> 44) as i64).sum();
        (sum - 6 * (1 << 20)) as f32 * unit
    }

    /// Uniform integer in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// 2^k as f32, exactly, without `powi`.
fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k) as u32) << 23)
}

/// The main input, `rows x cols`: near-Gaussian weights of standard
/// deviation 2^-6, with
/// - every 37th element an exact zero,
/// - row 5 dead (all zeros), so its groups get scale 0,
/// - row 9 2^11 times quieter (std 2^-17 ~ 7.6e-6: its f16 scales are
///   subnormal),
/// - row 13 bimodal (clusters at +-3/32 with small spread),
/// - hand-placed outliers (+-0.5, +-0.25, one 2^-3 spike) at fixed places.
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix(seed);
    let mut w = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let v = match r {
                5 => 0.0,
                9 => rng.irwin_hall(pow2(-37)),
                13 => {
                    let centre = if rng.below(2) == 0 { 3.0 / 32.0 } else { -3.0 / 32.0 };
                    centre + rng.irwin_hall(pow2(-29))
                }
                _ => rng.irwin_hall(pow2(-26)),
            };
            w.push(if (r * cols + c).is_multiple_of(37) { 0.0 } else { v });
        }
    }
    let n = w.len();
    for (at, v) in [(3, 0.5), (n / 3, -0.5), (n / 2 + 1, 0.25), (n - 2, -0.25), (2 * n / 3, 0.125)]
    {
        if at < n && at / cols != 5 {
            w[at] = v;
        }
    }
    w
}

/// One golden case: which input, and the options.
struct Case {
    name: String,
    shape: Vec<usize>,
    options: QuantizeOptions,
}

fn case(name: &str, shape: &[usize], options: QuantizeOptions) -> Case {
    Case { name: name.to_string(), shape: shape.to_vec(), options }
}

fn with(
    codec: CodecSpec,
    bits: u32,
    scaling: Scaling,
    dtype: ScaleDtype,
    method: ScaleMethod,
) -> QuantizeOptions {
    QuantizeOptions {
        scaling,
        scale_dtype: dtype,
        scale_method: method,
        ..QuantizeOptions::new(codec, bits)
    }
}

fn cases() -> Vec<Case> {
    use ScaleDtype::{F16, F32};
    use ScaleMethod::{AbsMax, MseSearch};
    let main = [24, 256];
    let mut v = Vec::new();
    let codecs = [
        ("seed", CodecSpec::Seed),
        ("log", CodecSpec::Log { mu: None }),
        ("uniform", CodecSpec::Uniform),
        ("nf", CodecSpec::Nf),
        ("fp", CodecSpec::Fp(None)),
        ("lut", CodecSpec::Lut),
    ];
    // Every codec at C = 3, 4, 8 with the defaults: groups of 64, f16 absmax.
    for (name, spec) in &codecs {
        for bits in [3, 4, 8] {
            v.push(case(
                &format!("{name}.c{bits}"),
                &main,
                QuantizeOptions::new(spec.clone(), bits),
            ));
        }
    }
    // Scale options. Rows of 200 leave a partial last group of 8 (G = 32, 64)
    // or one short group per row (G = 1024).
    let short = [16, 200];
    let g = Scaling::Group;
    v.extend([
        case(
            "log.c4.g32.partial",
            &short,
            with(CodecSpec::Log { mu: None }, 4, g(32), F16, AbsMax),
        ),
        case("uniform.c3.g64.partial", &short, with(CodecSpec::Uniform, 3, g(64), F16, AbsMax)),
        case("nf.c4.g1024.partial", &short, with(CodecSpec::Nf, 4, g(1024), F16, AbsMax)),
        case("fp.c4.g16", &main, with(CodecSpec::Fp(None), 4, g(16), F16, AbsMax)),
        case("uniform.c4.row", &main, with(CodecSpec::Uniform, 4, Scaling::Row, F16, AbsMax)),
        case("lut.c4.row.3d", &[24, 8, 32], with(CodecSpec::Lut, 4, Scaling::Row, F16, AbsMax)),
        case("nf.c4.tensor", &main, with(CodecSpec::Nf, 4, Scaling::Tensor, F16, AbsMax)),
        case(
            "log.c3.tensor",
            &main,
            with(CodecSpec::Log { mu: None }, 3, Scaling::Tensor, F16, AbsMax),
        ),
        case("fp.c8.f32", &main, with(CodecSpec::Fp(None), 8, g(64), F32, AbsMax)),
        case("lut.c3.f32.partial", &short, with(CodecSpec::Lut, 3, g(64), F32, AbsMax)),
        case("log.c4.mse", &main, with(CodecSpec::Log { mu: None }, 4, g(64), F16, MseSearch)),
        case("uniform.c3.mse", &main, with(CodecSpec::Uniform, 3, g(64), F16, MseSearch)),
        case("lut.c4.mse.row", &main, with(CodecSpec::Lut, 4, Scaling::Row, F16, MseSearch)),
        case("nf.c3.mse.f32.partial", &short, with(CodecSpec::Nf, 3, g(32), F32, MseSearch)),
        case(
            "log.c8.mse.row.f32",
            &main,
            with(CodecSpec::Log { mu: None }, 8, Scaling::Row, F32, MseSearch),
        ),
        case("log.c4.mu16", &main, with(CodecSpec::Log { mu: Some(16.0) }, 4, g(64), F16, AbsMax)),
        case(
            "fp.c8.e5m2",
            &main,
            QuantizeOptions::new(CodecSpec::Fp(Some(FpLayout::new(5, 2).unwrap())), 8),
        ),
        case("seed.c6.unit", &main, QuantizeOptions::seed_reference(6)),
    ]);
    // Two-level scales (.lsq 1.2): rows of 200 end in a short super-block
    // and a short sub-block.
    let two = |s, b, k| Scaling::TwoLevel(lsqr::codec::TwoLevel::new(s, b, k).unwrap());
    v.extend([
        case(
            "lut.c4.two-level.mse",
            &main,
            with(CodecSpec::Lut, 4, two(256, 32, 6), F16, MseSearch),
        ),
        case(
            "nf.c3.two-level.partial",
            &short,
            with(CodecSpec::Nf, 3, two(64, 16, 4), F16, AbsMax),
        ),
        case(
            "log.c5.two-level.mse.f32.partial",
            &short,
            with(CodecSpec::Log { mu: None }, 5, two(128, 8, 3), F32, MseSearch),
        ),
    ]);
    v
}

/// The fingerprint of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    bytes: usize,
    file: u32,
    codes: u32,
    scales: u32,
    table: u32,
}

impl Fingerprint {
    fn line(&self, name: &str) -> String {
        format!(
            "{name} {} {:08x} {:08x} {:08x} {:08x}",
            self.bytes, self.file, self.codes, self.scales, self.table
        )
    }

    fn parse(line: &str) -> Option<(String, Self)> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, bytes, file, codes, scales, table] = f[..] else { return None };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let fp = Self {
            bytes: bytes.parse().ok()?,
            file: hex(file)?,
            codes: hex(codes)?,
            scales: hex(scales)?,
            table: hex(table)?,
        };
        Some((name.to_string(), fp))
    }

    /// Which parts differ from `golden`, in words.
    fn changes(&self, golden: &Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.codes != golden.codes {
            out.push("codes (the encoder, or the codebook or scales it was given)");
        }
        if self.scales != golden.scales {
            out.push("scales (absmax, rounding or the MSE search)");
        }
        if self.table != golden.table {
            out.push("decode table / codebook parameters (a codebook, the mu search or Lloyd-Max)");
        }
        if out.is_empty() && (self.file != golden.file || self.bytes != golden.bytes) {
            out.push("only the container bytes (the writer, the packing or the format)");
        }
        out
    }
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn part_hashes(q: &QuantizedTensor) -> (u32, u32, u32) {
    let codes: Vec<u8> = q.codes().iter().flat_map(|c| c.to_le_bytes()).collect();
    let mut table: Vec<u8> =
        q.codebook().decode_table().iter().flat_map(|v| v.to_le_bytes()).collect();
    match q.codebook().params() {
        CodebookParams::Log { mu } => table.extend(mu.to_le_bytes()),
        CodebookParams::Fp(l) => table.extend([l.exp_bits() as u8, l.man_bits() as u8]),
        _ => {}
    }
    (crc(&codes), crc(&q.scales().to_le_bytes()), crc(&table))
}

/// Quantizes and writes one case; returns its fingerprint and, for the
/// failure message, the codebook parameters.
fn run(case: &Case, data: &[f32], dir: &std::path::Path) -> (Fingerprint, String) {
    let view = ArrayViewD::from_shape(IxDyn(&case.shape), data).unwrap();
    let path = dir.join(format!("{}.lsq", case.name));
    lsqr::save_lsq_model([("w", view)], &case.options, &path).unwrap();
    let file = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let q = quantize(data, &case.shape, &case.options).unwrap();
    let (codes, scales, table) = part_hashes(&q);
    let params = match q.codebook().params() {
        CodebookParams::Lut(_) => "Lut([..])".to_string(),
        p => format!("{p:?}"),
    };
    (Fingerprint { bytes: file.len(), file: crc(&file), codes, scales, table }, params)
}

#[test]
fn quantizer_output_matches_the_golden_fingerprints() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantizer_golden");
    std::fs::create_dir_all(&dir).unwrap();
    let main = weights(24, 256, 0x5eed_0001);
    let short = weights(16, 200, 0x5eed_0002);
    let results: Vec<(String, Fingerprint, String)> = cases()
        .iter()
        .map(|c| {
            let data = if c.shape == [16, 200] { &short } else { &main };
            let (fp, params) = run(c, data, &dir);
            (c.name.clone(), fp, params)
        })
        .collect();

    if std::env::var_os("LSQR_BLESS").is_some() {
        let mut text = String::from(
            "# name bytes crc32(file) crc32(codes) crc32(scales) crc32(table+params)\n\
             # written by LSQR_BLESS=1 cargo test --test quantizer_golden\n",
        );
        for (name, fp, _) in &results {
            writeln!(text, "{}", fp.line(name)).unwrap();
        }
        std::fs::write(golden_path(), text).unwrap();
        panic!("wrote {}; rerun without LSQR_BLESS", golden_path().display());
    }

    let text = std::fs::read_to_string(golden_path()).unwrap();
    let golden: Vec<(String, Fingerprint)> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| Fingerprint::parse(l).unwrap_or_else(|| panic!("bad golden line: {l}")))
        .collect();
    let mut failures = Vec::new();
    for (name, fp, params) in &results {
        match golden.iter().find(|(n, _)| n == name) {
            None => failures.push(format!("{name}: no golden line (new case? bless it)")),
            Some((_, want)) if want != fp => failures.push(format!(
                "{name}: changed: {}\n    got  {}\n    want {}\n    codebook now {params}",
                fp.changes(want).join("; "),
                fp.line(name),
                want.line(name),
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &golden {
        if !results.iter().any(|(n, _, _)| n == name) {
            failures.push(format!("{name}: golden line without a case"));
        }
    }
    let path = if std::env::var_os("LSQR_FORCE_SCALAR").is_some() { "portable" } else { "default" };
    assert!(
        failures.is_empty(),
        "{} of {} quantizer golden cases differ ({path} paths):\n{}\n\
         If the change is deliberate: LSQR_BLESS=1 cargo test --test quantizer_golden",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// The inputs themselves are pinned, so a change in the generator cannot
/// pass for a change in the quantizer.
#[test]
fn golden_inputs_are_pinned() {
    let bytes = |w: Vec<f32>| -> Vec<u8> { w.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let main = weights(24, 256, 0x5eed_0001);
    assert_eq!(main[5 * 256..6 * 256].iter().filter(|v| **v != 0.0).count(), 0, "dead row");
    assert_eq!(main[3], 0.5);
    // The edge cases the inputs are meant to reach: zero scales for the dead
    // row, subnormal f16 scales for the quiet one.
    let q = quantize(&main, &[24, 256], &QuantizeOptions::new(CodecSpec::Uniform, 4)).unwrap();
    let scales = q.scales().values();
    assert!(scales[5 * 4..6 * 4].iter().all(|&s| s == 0.0), "dead row");
    assert!(scales[9 * 4..10 * 4].iter().all(|&s| s > 0.0 && s < 6.1e-5), "quiet row");
    let got = (crc(&bytes(main)), crc(&bytes(weights(16, 200, 0x5eed_0002))));
    assert_eq!(got, INPUT_CRC32, "the golden inputs changed: {got:#010x?}");
}

/// CRC-32 of the two inputs as f32 LE (pinned measurement).
const INPUT_CRC32: (u32, u32) = (0x4cd2_e878, 0x4406_3ccb);
