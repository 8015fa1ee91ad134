//! How close a quantized all-MiniLM-L6-v2 stays to the float model: the
//! mean and minimum cosine similarity between their sentence embeddings
//! over the built-in sentences (`examples/support/minilm-sentences.txt`).
//!
//! ```text
//! scripts/fetch-models.sh        # model.safetensors and tokenizer.json
//! m=~/.cache/lsqr-models/minilm
//! lsqr quantize $m/model.safetensors -o minilm-f32.lsq --keep '*'
//! lsqr quantize $m/model.safetensors -o minilm-lut-c4.lsq --bits 4 --codec lut
//! cargo run --release --example minilm -- minilm-f32.lsq minilm-lut-c4.lsq [tokenizer.json]
//! ```
//!
//! `minilm importance FLOAT.lsq OUT.safetensors [tokenizer.json]` runs the
//! float model over the calibration sentences
//! (`examples/support/minilm-calibration.txt`, none of them among the
//! measured ones) and writes each linear weight's importance (the mean
//! square of each input feature) for `lsqr quantize --importance`:
//!
//! ```text
//! cargo run --release --example minilm -- importance minilm-f32.lsq minilm-imp.safetensors
//! lsqr quantize $m/model.safetensors -o minilm-4.5.lsq --codec lut --scale-method mse \
//!     --bpw 4.5 --importance minilm-imp.safetensors
//! ```
//!
//! Both files are `.lsq`: the float reference is the model with every
//! tensor kept raw (`--keep '*'`), so that both run through the same code
//! (examples/support/bert.rs) and differ only by their weights. The
//! tokenizer defaults to the cached `minilm/tokenizer.json`.

#[path = "support/bert.rs"]
mod bert;
#[path = "support/minilm.rs"]
mod minilm;

use std::path::PathBuf;
use std::time::Instant;

use lsqr::format::LsqFile;

fn embed_all(path: &str, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error>> {
    let file = LsqFile::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut model =
        bert::Bert::new(&file, &bert::MINILM_L6_V2).map_err(|e| format!("{path}: {e}"))?;
    let start = Instant::now();
    let out = ids.iter().map(|s| model.embed(s)).collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "{path}: {} layers, {} sentences in {:.2} s",
        model.layers(),
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// `minilm importance FLOAT.lsq OUT.safetensors [tokenizer.json]`.
fn importance(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    if !(2..=3).contains(&args.len()) {
        return Err("usage: minilm importance FLOAT.lsq OUT.safetensors [tokenizer.json]".into());
    }
    let tokenizer_path = args
        .get(2)
        .map_or_else(|| minilm::models_dir().join("minilm/tokenizer.json"), PathBuf::from);
    let tokenizer = minilm::tokenizer(&tokenizer_path)?;
    let file = LsqFile::open(&args[0]).map_err(|e| format!("{}: {e}", args[0]))?;
    let mut model = bert::Bert::new(&file, &bert::MINILM_L6_V2)?;
    model.record_inputs();
    for s in minilm::calibration_sentences() {
        model.embed(&minilm::token_ids(&tokenizer, s)?)?;
    }
    let weights = model.importance();
    minilm::write_f32_safetensors(std::path::Path::new(&args[1]), &weights)?;
    println!("{}: importance of {} weights", args[1], weights.len());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("importance") {
        return importance(&args[1..]);
    }
    if !(2..=3).contains(&args.len()) {
        return Err("usage: minilm FLOAT.lsq QUANTIZED.lsq [tokenizer.json]".into());
    }
    for path in &args[..2] {
        if path.ends_with(".safetensors") {
            return Err(format!(
                "{path}: give a .lsq file; for the float model: lsqr quantize {path} -o minilm-f32.lsq --keep '*'"
            )
            .into());
        }
    }
    let tokenizer_path = args
        .get(2)
        .map_or_else(|| minilm::models_dir().join("minilm/tokenizer.json"), PathBuf::from);
    let tokenizer = minilm::tokenizer(&tokenizer_path)?;
    let sentences = minilm::sentences();
    let ids = sentences
        .iter()
        .map(|s| minilm::token_ids(&tokenizer, s))
        .collect::<Result<Vec<_>, _>>()?;
    let float = embed_all(&args[0], &ids)?;
    let quant = embed_all(&args[1], &ids)?;
    let (mean, min, worst) = minilm::mean_min_cosine(&float, &quant);
    println!("sentences: {}", sentences.len());
    println!("mean cosine: {mean:.6}");
    println!("min cosine:  {min:.6} ({:?})", sentences[worst]);
    Ok(())
}
