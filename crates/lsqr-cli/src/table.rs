//! Plain-text tables for the terminal.

use lsqr::codec::CodecKind;

use crate::pipeline::{EvalCell, TensorResult, Totals, SEED_REFERENCE};

/// Renders rows under a header, columns padded; `right[i]` right-aligns column i.
pub fn render<const N: usize>(
    header: &[&str; N],
    rows: &[[String; N]],
    right: &[bool; N],
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((c, &w), &r)| if r { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(&header.map(str::to_string));
    out += &line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in rows {
        out += &line(row);
    }
    out
}

/// The per-tensor table of `lsqr quantize`.
pub fn tensor_table(results: &[TensorResult]) -> String {
    let rows: Vec<[String; 7]> = results
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                format!("{:?}", r.shape),
                r.codec.clone().unwrap_or_else(|| format!("raw {}", r.dtype)),
                r.bits.map_or("-".into(), |b| b.to_string()),
                r.scaling.clone().unwrap_or_else(|| "-".into()),
                r.snr_db.map_or("-".into(), |s| format!("{s:.2}")),
                r.stored_bytes.to_string(),
            ]
        })
        .collect();
    render(
        &["tensor", "shape", "codec", "C", "scales", "SNR dB", "bytes"],
        &rows,
        &[false, false, false, true, false, true, true],
    )
}

/// The totals lines.
pub fn totals(t: &Totals) -> String {
    let snr = t.weighted_snr_db.map_or("-".into(), |s| format!("{s:.2} dB"));
    format!(
        "{} tensors ({} quantized), {} parameters\noriginal {} bytes, .lsq {} bytes, compression {:.2}x, weighted SNR {}\n",
        t.tensors, t.quantized, t.parameters, t.source_bytes, t.output_bytes, t.compression_ratio, snr
    )
}

/// The codec x width table of `lsqr eval`: SNR, and bits per weight below.
pub fn eval_table(cells: &[EvalCell], codecs: &[CodecKind], widths: &[u32]) -> String {
    let find = |label: &str, c: u32| cells.iter().find(|e| e.codec == label && e.bits == c);
    let mut labels: Vec<&str> = Vec::new();
    if cells.iter().any(|e| e.codec == SEED_REFERENCE) {
        labels.push(SEED_REFERENCE);
    }
    labels.extend(codecs.iter().map(|k| k.name()));
    let header: Vec<String> = widths.iter().map(|c| format!("C={c}")).collect();
    let mut out =
        format!("| codec | {} |\n|---|{}\n", header.join(" | "), "---:|".repeat(widths.len()));
    for label in &labels {
        let row: Vec<String> = widths
            .iter()
            .map(|&c| find(label, c).map_or("-".into(), |e| format!("{:.2}", e.weighted_snr_db)))
            .collect();
        out += &format!("| {label} | {} |\n", row.join(" | "));
    }
    let scaled = labels.iter().find(|l| **l != SEED_REFERENCE);
    if let Some(label) = scaled {
        let bpw: Vec<String> = widths
            .iter()
            .map(|&c| find(label, c).map_or("-".into(), |e| format!("{:.2}", e.bits_per_weight)))
            .collect();
        out += &format!("\nbits per weight, scales included ({label}): {}\n", bpw.join(", "));
    }
    if labels.first() == Some(&SEED_REFERENCE) {
        out += "seed-ref: the reference codec as the reference applies it, without scales (values clipped to [-1, 1])\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(
            &["a", "bb"],
            &[["xyz".into(), "1".into()], ["q".into(), "100".into()]],
            &[false, true],
        );
        assert_eq!(t, "a     bb\n---  ---\nxyz    1\nq    100\n");
    }
}
