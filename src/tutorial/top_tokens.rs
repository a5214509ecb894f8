//! Chapter 3's figure: the ten most likely next tokens as a bar chart.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::next_token::{format_prob, TokenProb};
use crate::plot::plot_err;
use crate::{Error, Result};

/// The bars' colour; tests count bars by it.
pub const BAR_COLOR: RGBColor = RGBColor(0x46, 0x82, 0xb4);
const SIZE: (u32, u32) = (760, 440);

/// How a token is labelled: its text quoted and escaped (so a leading space or a newline
/// shows), then its id.
pub fn token_label(t: &TokenProb) -> String {
    format!("{:?} ({})", t.text, t.id)
}

// ANCHOR: top_tokens_chart
/// A horizontal bar chart of next-token probabilities, the most likely at the top, as SVG text.
pub fn top_tokens_chart(title: &str, tokens: &[TokenProb]) -> Result<String> {
    if tokens.is_empty() {
        return Err(Error::InvalidArgument(
            "a chart needs at least one token".into(),
        ));
    }
    let labels: Vec<String> = tokens.iter().map(token_label).collect();
    let n = tokens.len();
    let max = tokens.iter().map(|t| t.prob).fold(0f32, f32::max) as f64;
    // Room to the right of the longest bar for its value.
    let x_max = (max * 1.2).max(1e-6);
    // Row 0 of the chart is at the bottom, so the most likely token goes in row n - 1.
    let row = |rank: usize| n - 1 - rank;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d(0f64..x_max, (0..n - 1).into_segmented()) // rows 0..=n-1
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(6)
            .x_label_formatter(&|x| {
                if x_max < 0.01 {
                    format!("{x:.1e}")
                } else {
                    format!("{x:.2}")
                }
            })
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(r) if *r < n => labels[n - 1 - r].clone(),
                _ => String::new(),
            })
            .x_desc("probability of coming next")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(tokens.iter().enumerate().map(|(rank, t)| {
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row(rank))),
                        (t.prob as f64, SegmentValue::Exact(row(rank) + 1)),
                    ],
                    BAR_COLOR.filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(plot_err)?;
        let value_style = ("sans-serif", 14)
            .into_text_style(&root)
            .pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(tokens.iter().enumerate().map(|(rank, t)| {
                Text::new(
                    format!(" {}", format_prob(t.prob)),
                    (t.prob as f64, SegmentValue::CenterOf(row(rank))),
                    value_style.clone(),
                )
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
// ANCHOR_END: top_tokens_chart
