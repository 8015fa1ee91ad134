//! The main job for now: quantize synthetic weight matrices at C = 3..=8
//! with every codec and print the SNR table (markdown).
//!
//! `cargo run --release --example snr_table [-- ROWS COLS]` (default 1024 x 1024).
//!
//! Weights: zero-mean Gaussian and Laplacian with std 0.02, groups of 64
//! elements along each row, f16 absmax scales (16 bits per 64 weights, i.e.
//! +0.25 bit per weight). `seed (ref)` is the reference codec exactly as the
//! reference applies it, without a scale; every other row uses the scales.

use std::time::Instant;

use lsqr::codec::{quantize, CodecKind, CodecSpec, ErrorMetrics, QuantizeOptions};
use lsqr::synthetic::{weights, Distribution};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (rows, cols) = match args[..] {
        [] => (1024, 1024),
        [r, c] => (r, c),
        _ => return Err("usage: snr_table [ROWS COLS]".into()),
    };
    let bits: Vec<u32> = (3..=8).collect();
    let started = Instant::now();
    for dist in [Distribution::Gaussian, Distribution::Laplacian] {
        let data = weights(dist, rows * cols, 0.02, 42);
        println!(
            "\nSNR (dB), {} weights {rows}x{cols}, std 0.02, groups of 64, f16 scales\n",
            dist.name()
        );
        let header: Vec<String> = bits.iter().map(|c| format!("C={c}")).collect();
        println!("| codec | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(bits.len()));
        let mut rows_out: Vec<(String, QuantizeOptions)> =
            vec![("seed (ref, no scale)".into(), QuantizeOptions::seed_reference(0))];
        for kind in CodecKind::ALL {
            rows_out
                .push((kind.name().into(), QuantizeOptions::new(CodecSpec::default_for(kind), 0)));
        }
        let mut mus = Vec::new();
        for (name, template) in rows_out {
            let mut cells = Vec::new();
            for &c in &bits {
                let options = QuantizeOptions { bits: c, ..template.clone() };
                let q = quantize(&data, &[rows, cols], &options)?;
                let snr = ErrorMetrics::between(&data, &q.dequantize())?.snr_db();
                cells.push(format!("{snr:.2}"));
                if let lsqr::codec::CodebookParams::Log { mu } = q.codebook().params() {
                    mus.push(format!("C={c}: {mu:.1}"));
                }
            }
            println!("| {name} | {} |", cells.join(" | "));
        }
        println!("\nlog: mu chosen per C: {}", mus.join(", "));
    }
    eprintln!("\n(done in {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
