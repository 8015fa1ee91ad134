//! Trains a small MNIST classifier, writes it as `.lsq` files (f32, and
//! every codec at C = 2..=8), and measures each file's accuracy through the
//! micro runtime (`lsqr::runtime`), the way a device would run it.
//!
//! ```text
//! bash scripts/fetch-models.sh          # once: mnist/mnist_5k.csv.gz
//! cargo run --release --example mnist_train [-- OUT_DIR]   # default target/mnist
//! ```
//!
//! The experiment itself (data, model, training, files) is
//! `examples/support/mnist.rs`, which README's test
//! (`crates/lsqr-cli/tests/readme_figures.rs`) runs too.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "support/mnist.rs"]
mod mnist;

fn run() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/mnist".into()));
    let started = Instant::now();
    let e = mnist::run_experiment(&out_dir, true)?;
    eprintln!(
        "trained in {:.2?}; test accuracy in training code {:.1}%",
        e.train_time,
        100.0 * e.direct_accuracy
    );
    let widths: Vec<u32> = mnist::WIDTHS.collect();
    println!("\nMNIST test accuracy (%), {} held-out images, through lsqr::runtime\n", e.f32.total);
    println!(
        "| codec | {} |",
        widths.iter().map(|c| format!("C={c}")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(widths.len()));
    println!("| f32 | {} |", vec![format!("{:.1}", e.f32.percent()); widths.len()].join(" | "));
    let mut notes = Vec::new();
    let mut latencies = Vec::new();
    for (kind, cells) in &e.rows {
        let mut out = Vec::new();
        for (cell, c) in cells.iter().zip(&widths) {
            match cell {
                Ok(r) if r.all_levels_zero => {
                    out.push(format!("{:.1}*", r.percent()));
                    notes.push(format!(
                        "*{kind} at C={c}: every level of the codebook decodes to 0, so \
                         all weights are 0 and the prediction is a constant class"
                    ));
                }
                Ok(r) => out.push(format!("{:.1}", r.percent())),
                Err(why) => {
                    out.push("n/a".into());
                    notes.push(format!("n/a: {kind} rejects C={c}: {why}"));
                }
            }
            if let Ok(r) = cell {
                latencies.push(r.latency);
            }
        }
        println!("| {} | {} |", kind.name(), out.join(" | "));
    }
    if notes.is_empty() {
        println!("\nEvery codec accepted every C in 2..=8.");
    }
    for note in notes {
        println!("\n{note}");
    }
    println!(
        "\nweights: groups of 64 along rows, f16 scales; biases f32. Files in {}.",
        out_dir.display()
    );
    let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
    println!(
        "runtime, one image (set_input + run, one thread): f32 weights {:.2?}, \
         quantized weights {mean:.2?} on average",
        e.f32.latency
    );
    println!(
        "wall time: {:.2?} total (training {:.2?}; writing + evaluating {} files {:.2?})",
        started.elapsed(),
        e.train_time,
        1 + latencies.len(),
        e.quantize_time
    );
    if (e.f32.percent() / 100.0 - e.direct_accuracy).abs() > 0.002 {
        return Err(format!(
            "runtime f32 accuracy {} differs from training code {}",
            e.f32.percent(),
            e.direct_accuracy
        )
        .into());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mnist_train: {e}");
            ExitCode::FAILURE
        }
    }
}
