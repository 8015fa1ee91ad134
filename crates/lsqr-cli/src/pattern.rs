//! Tensor-name patterns for `--keep` and `--bits-for`: `*` matches any run
//! of characters (dots included), everything else matches itself.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Self {
        Self {
            parts: text.split('*').map(str::to_string).collect(),
            anchored_start: !text.starts_with('*'),
            anchored_end: !text.ends_with('*'),
        }
    }

    /// A pattern that matches `name` only (even if it contains `*`).
    pub fn exact(name: &str) -> Self {
        Self { parts: vec![name.to_string()], anchored_start: true, anchored_end: true }
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = self.parts.iter().map(String::as_str).collect();
        if parts.len() == 1 {
            return name == parts[0];
        }
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        if (self.anchored_start && !name.starts_with(first))
            || (self.anchored_end && !name.ends_with(last))
        {
            return false;
        }
        let mut rest = &name[first.len()..];
        let end_limit = if self.anchored_end { last.len() } else { 0 };
        for part in &parts[1..parts.len() - 1] {
            match rest.find(part) {
                Some(i) if i + part.len() + end_limit <= rest.len() => {
                    rest = &rest[i + part.len()..]
                }
                _ => return false,
            }
        }
        rest.len() >= end_limit
    }
}

/// Parses `PATTERN=C` for `--bits-for`.
pub fn parse_bits_for(s: &str) -> Result<(Pattern, u32), String> {
    let (pattern, bits) = s.rsplit_once('=').ok_or_else(|| format!("'{s}' is not PATTERN=C"))?;
    let bits: u32 = bits.parse().map_err(|_| format!("'{bits}' in '{s}' is not a bit width"))?;
    if !(2..=16).contains(&bits) {
        return Err(format!("bit width {bits} in '{s}' is not in 2..=16"));
    }
    Ok((Pattern::new(pattern), bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = Pattern::new("encoder.*.weight");
        assert!(p.matches("encoder.layer.0.attention.weight"));
        assert!(!p.matches("decoder.layer.0.weight"));
        assert!(!p.matches("encoder.layer.0.bias"));
        assert!(Pattern::new("*embeddings*").matches("embeddings.word_embeddings.weight"));
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("exact").matches("exact"));
        assert!(!Pattern::new("exact").matches("exact.not"));
        assert!(!Pattern::new("a*a").matches("a"));
        assert!(Pattern::new("a*a").matches("aa"));
        assert!(Pattern::new("*.bias").matches("fc.bias"));
        assert!(!Pattern::new("*.bias").matches("fc.bias.x"));
    }

    #[test]
    fn bits_for() {
        let (p, c) = parse_bits_for("encoder.*=8").unwrap();
        assert!(p.matches("encoder.x") && c == 8);
        assert!(parse_bits_for("x=17").is_err());
        assert!(parse_bits_for("x").is_err());
    }
}
