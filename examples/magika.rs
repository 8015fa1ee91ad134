//! Classifies files with a quantized Magika model through the runtime, as
//! `ffi-examples/c/magika.c` does through the C API (their outputs must be
//! equal):
//!
//! ```text
//! lsqr quantize ~/.cache/lsqr-models/magika/model.onnx -o magika.lsq \
//!     --codec lut --bits 8 --input-shape bytes=1,2048
//! cargo run --release --example magika -- magika.lsq config.min.json FILE...
//! ```

#[path = "support/magika.rs"]
mod magika;

use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: magika MODEL.lsq CONFIG.json FILE...".into());
    }
    let file = LsqFile::open(&args[0])?;
    let labels = magika::labels(&std::fs::read_to_string(&args[1])?)?;
    let plan = Plan::new(&file)?;
    if plan.inputs().len() != 1 || plan.inputs()[0].shape != [1, 2048] {
        return Err("the model must take one input of shape [1, 2048]".into());
    }
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena)?;
    for path in &args[2..] {
        let content = match std::fs::read(path) {
            Ok(c) => c,
            Err(e) => {
                println!("{path}: error: {e}");
                continue;
            }
        };
        if content.len() < magika::MIN_FILE_SIZE {
            println!("{path}: too small ({} bytes)", content.len());
            continue;
        }
        let x: Vec<f32> = magika::features(&content).iter().map(|&v| v as f32).collect();
        runner.set_input(0, &x)?;
        runner.run()?;
        let scores = runner.output(0)?;
        if scores.len() != labels.len() {
            return Err(format!("{} scores for {} labels", scores.len(), labels.len()).into());
        }
        let (best, score) = magika::top1(scores);
        println!("{path}: {} {score:.4}", labels[best]);
    }
    Ok(())
}
