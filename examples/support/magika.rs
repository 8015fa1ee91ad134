//! Magika's features and labels, as the `magika` package (1.0.3, model
//! standard_v3_3) computes them: shared by `examples/magika.rs` and the
//! tests, and mirrored line for line by `ffi-examples/c/magika.c`.

#![allow(dead_code)] // each user takes a part

/// Bytes read from each end of a file.
pub const BLOCK_SIZE: usize = 4096;
/// Features from the start, then from the end.
pub const BEG_SIZE: usize = 1024;
pub const END_SIZE: usize = 1024;
/// Fills the features a short file does not have.
pub const PADDING_TOKEN: i32 = 256;
/// Smaller files are not given to the model.
pub const MIN_FILE_SIZE: usize = 8;

/// Python's `bytes.strip()` whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The model input for a file's `content`: the first `BEG_SIZE` bytes of
/// its first block with leading whitespace stripped (padded after), then
/// the last `END_SIZE` bytes of its last block with trailing whitespace
/// stripped (padded before).
pub fn features(content: &[u8]) -> Vec<i32> {
    let n = content.len().min(BLOCK_SIZE);
    let beg = &content[..n];
    let beg = &beg[beg.iter().position(|&b| !is_space(b)).unwrap_or(beg.len())..];
    let end = &content[content.len() - n..];
    let end = &end[..end.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1)];
    let mut out = vec![PADDING_TOKEN; BEG_SIZE + END_SIZE];
    for (o, &b) in out[..BEG_SIZE].iter_mut().zip(beg) {
        *o = i32::from(b);
    }
    let tail = &end[end.len().saturating_sub(END_SIZE)..];
    let start = BEG_SIZE + END_SIZE - tail.len();
    for (o, &b) in out[start..].iter_mut().zip(tail) {
        *o = i32::from(b);
    }
    out
}

/// The labels of the model's outputs: `target_labels_space` of the
/// package's `config.min.json`.
pub fn labels(config_json: &str) -> Result<Vec<String>, String> {
    let key = "\"target_labels_space\"";
    let at = config_json.find(key).ok_or("config has no target_labels_space")?;
    let rest = &config_json[at + key.len()..];
    let open = rest.find('[').ok_or("target_labels_space is not a list")?;
    let close = rest.find(']').ok_or("target_labels_space is not closed")?;
    let labels: Vec<String> = rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if labels.is_empty() {
        return Err("target_labels_space is empty".into());
    }
    Ok(labels)
}

/// The index and value of the largest score (the first on ties).
pub fn top1(scores: &[f32]) -> (usize, f32) {
    scores.iter().enumerate().fold(
        (0, f32::NEG_INFINITY),
        |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        },
    )
}
