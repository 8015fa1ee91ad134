//! all-MiniLM-L6-v2's side of the embedding comparison, shared by
//! `examples/minilm.rs` and `crates/lsqr-cli/tests/minilm_embeddings.rs`:
//! the fixed sentences, the model's own tokenizer, and the cosine that
//! scores a quantized file's embeddings against the float file's.
//!
//! The sentences (`minilm-sentences.txt`, one a line) are varied English on
//! purpose: short and long, questions, numbers, punctuation, accents,
//! code-like text, a few paraphrase pairs. A quantization that hurts some
//! kinds of input more than others shows up in the minimum, not only in the
//! mean. `scripts/minilm-reference.py` reads the same file.

#![allow(dead_code)] // each includer uses a part

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

/// The sentences, one a line (blank lines skipped).
pub fn sentences() -> Vec<&'static str> {
    include_str!("minilm-sentences.txt").lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Other sentences, for calibration (importance weights): none of them is
/// among [`sentences`], so measuring on those is not measuring on what the
/// quantizer was fitted to.
pub fn calibration_sentences() -> Vec<&'static str> {
    include_str!("minilm-calibration.txt").lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Writes 1-D f32 arrays as a `.safetensors` file (what `lsqr quantize
/// --importance` reads).
pub fn write_f32_safetensors(path: &Path, arrays: &[(String, Vec<f32>)]) -> std::io::Result<()> {
    let mut header = String::from("{");
    let mut offset = 0usize;
    for (i, (name, values)) in arrays.iter().enumerate() {
        let end = offset + 4 * values.len();
        let sep = if i > 0 { "," } else { "" };
        header += &format!(
            "{sep}\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            values.len()
        );
        offset = end;
    }
    header += "}";
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for (_, values) in arrays {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(path, out)
}

/// sentence-transformers' `max_seq_length` for this model
/// (sentence_bert_config.json), special tokens included.
pub const MAX_TOKENS: usize = 256;

/// Where `scripts/fetch-models.sh` caches the model files (`$LSQR_MODELS`,
/// else `~/.cache/lsqr-models`).
pub fn models_dir() -> PathBuf {
    match std::env::var_os("LSQR_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lsqr-models")
        }
    }
}

/// The model's tokenizer.json, set up as sentence-transformers encodes one
/// sentence. The file itself pads every input to 128 tokens and truncates
/// at 128: padding is turned off (the forward pass runs one unpadded
/// sentence, so it needs no attention mask) and truncation moved to
/// sentence-transformers' 256.
pub fn tokenizer(path: &Path) -> Result<Tokenizer, String> {
    let mut t = Tokenizer::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    t.with_padding(None);
    t.with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
        .map_err(|e| format!("truncation: {e}"))?;
    Ok(t)
}

/// `[CLS] sentence [SEP]` as token ids.
pub fn token_ids(tokenizer: &Tokenizer, sentence: &str) -> Result<Vec<u32>, String> {
    let enc = tokenizer.encode(sentence, true).map_err(|e| format!("{sentence:?}: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

/// Cosine similarity, accumulated in f64 so that the figure's own rounding
/// stays far below the 1e-6 of the float-vs-float check.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
}

/// Mean and minimum cosine between paired embeddings, and the index of the
/// minimum.
pub fn mean_min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64, usize) {
    assert_eq!(a.len(), b.len(), "embedding lists of different lengths");
    let cos: Vec<f64> = a.iter().zip(b).map(|(x, y)| cosine(x, y)).collect();
    let (argmin, min) =
        cos.iter()
            .copied()
            .enumerate()
            .fold((0, f64::INFINITY), |m, c| if c.1 < m.1 { c } else { m });
    (cos.iter().sum::<f64>() / cos.len().max(1) as f64, min, argmin)
}
