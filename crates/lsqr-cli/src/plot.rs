//! `lsqr eval --plot`: SNR against bits per weight, one curve per codec.

use std::path::Path;

use plotters::prelude::*;

use crate::pipeline::EvalCell;

const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Draws the SVG at `path`.
pub fn snr_vs_bits(cells: &[EvalCell], title: &str, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: cannot draw plot: {e}", path.display());
    let finite: Vec<&EvalCell> = cells.iter().filter(|c| c.weighted_snr_db.is_finite()).collect();
    let (x_min, x_max, y_min, y_max) =
        finite.iter().fold((f64::INFINITY, 1.0f64, 0.0f64, 10.0f64), |(a, x, lo, hi), c| {
            (
                a.min(c.bits_per_weight),
                x.max(c.bits_per_weight),
                lo.min(c.weighted_snr_db),
                hi.max(c.weighted_snr_db),
            )
        });
    let x_min = if x_min.is_finite() { (x_min - 0.5).max(0.0).floor() } else { 0.0 };
    // Drawn into memory and written atomically: no half-written SVG.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("SNR vs bits per weight: {title}"), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(x_min..(x_max + 0.5), (y_min - 2.0)..(y_max + 3.0))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("bits per weight (codes + scales + tables)")
            .y_desc("weighted SNR (dB)")
            .draw()
            .map_err(|e| err(&e))?;
        let mut codecs: Vec<&str> = Vec::new();
        for c in &finite {
            if !codecs.contains(&c.codec.as_str()) {
                codecs.push(&c.codec);
            }
        }
        for (i, codec) in codecs.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = finite
                .iter()
                .filter(|c| c.codec == *codec)
                .map(|c| (c.bits_per_weight, c.weighted_snr_db))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(codec.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    crate::commands::write_atomically(path, |temp| std::fs::write(temp, svg.as_bytes()))
}
