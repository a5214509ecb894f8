//! Figures for the book, drawn with plotters straight to SVG.
//!
//! plotters is built with its SVG backend only (no font-kit, no system fonts): the SVG holds
//! `<text>` elements and the browser that shows the book picks the font, so the file is the
//! same on every machine and a test can compare it byte for byte.

use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

/// A plotters error as ours.
pub(crate) fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Writes an SVG, creating its directory if needed.
pub fn write_svg(path: &Path, svg: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, svg).map_err(|e| Error::io(path, e))
}

/// The loss curve's colour (tests find the series by it).
pub const LOSS_COLOR: RGBColor = RGBColor(0x46, 0x82, 0xb4);
/// The learning rate's colour.
pub const LR_COLOR: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
/// The eval loss's colour in [`train_eval_chart`].
pub const EVAL_LOSS_COLOR: RGBColor = RGBColor(0x75, 0x70, 0xb3);
/// The eval accuracy's colour in [`train_eval_chart`].
pub const ACCURACY_COLOR: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
/// Epoch ends and chance: marks to read the curves against, not curves.
const GUIDE_COLOR: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// The fine grid: faint, so that it does not compete with the curves.
const FINE_GRID: RGBColor = RGBColor(0xf2, 0xf2, 0xf2);

/// Two panels stacked: room for each to keep its own axis labels readable.
const STACKED_SIZE: (u32, u32) = (760, 680);
/// Two panels side by side.
const SIDE_BY_SIDE_SIZE: (u32, u32) = (920, 420);
/// The height of a legend row above a panel.
const LEGEND_ROW: u32 = 26;

/// One optimizer step of a training run, as the charts and the history files record it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepPoint {
    /// 1-based optimizer step.
    pub step: usize,
    /// The loss of the step (the tutorial records its last sequence's).
    pub loss: f64,
    /// The learning rate the step used.
    pub lr: f64,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A legend as a row of its own above a panel, right-aligned: a legend drawn inside the plot
/// lands on the curves wherever they happen to run, one outside never does.
fn legend_row(area: &Area<'_>, entries: &[(&str, RGBColor)]) -> Result<()> {
    let (width, height) = area.dim_in_pixel();
    let y = height as i32 / 2;
    // Roughly 7 px per character at 14 px: enough to place the entries from the right edge.
    let widths: Vec<i32> = entries
        .iter()
        .map(|(label, _)| 34 + 7 * label.len() as i32)
        .collect();
    let mut x = width as i32 - 20 - widths.iter().sum::<i32>();
    for ((label, color), w) in entries.iter().zip(widths) {
        area.draw(&PathElement::new(
            [(x, y), (x + 22, y)],
            color.stroke_width(2),
        ))
        .map_err(plot_err)?;
        area.draw(&Text::new(
            label.to_string(),
            (x + 28, y - 7),
            ("sans-serif", 14),
        ))
        .map_err(plot_err)?;
        x += w;
    }
    Ok(())
}

/// The lowest and highest finite value of `values`, or an error naming what the chart needs.
fn range(values: impl Iterator<Item = f64>, what: &str) -> Result<(f64, f64)> {
    let mut finite = values.filter(|v| v.is_finite());
    let first = finite.next().ok_or_else(|| {
        Error::InvalidArgument(format!("a training chart needs at least one {what}"))
    })?;
    Ok(finite.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// A linear range around `lo..hi` with a margin, so a flat curve is not drawn on the frame.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 1e-3).max(1e-3);
    lo - pad..hi + pad
}

/// Chapter 6's figure. On top, the loss of every optimizer step on a linear axis of its own,
/// where a fall from 10.8 to 10.6 is visible (on a log axis shared with the learning rate it is
/// a flat line). Below, the tutorial's own chart: loss and learning rate against the step on one
/// logarithmic axis (they differ by six orders of magnitude). A dashed line marks each epoch's
/// end in both. Points that a log axis cannot show (an lr of 0) are left out of the lower panel.
pub fn loss_lr_chart(title: &str, points: &[StepPoint], epoch_ends: &[usize]) -> Result<String> {
    let positive = |v: f64| v > 0.0 && v.is_finite();
    let (loss_lo, loss_hi) = range(points.iter().map(|p| p.loss), "step with a finite loss")?;
    let (lo, hi) = range(
        points
            .iter()
            .flat_map(|p| [p.loss, p.lr])
            .filter(|v| positive(*v)),
        "step with a positive loss or lr",
    )?;
    let last = points.iter().map(|p| p.step).max().unwrap_or(1).max(1);
    let ends: Vec<usize> = epoch_ends
        .iter()
        .copied()
        .filter(|&e| e > 0 && e <= last)
        .collect();
    let epoch_line = GUIDE_COLOR.stroke_width(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, STACKED_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 / 2);

        let losses = loss_lo..loss_hi;
        let y = padded(losses.start, losses.end);
        let mut chart = ChartBuilder::on(&upper)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0usize..last, y.clone())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(FINE_GRID)
            .x_desc("optimizer step")
            .y_desc("loss")
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(plot_err)?;
        for &end in &ends {
            chart
                .draw_series(DashedLineSeries::new(
                    [(end, y.start), (end, y.end)],
                    4,
                    4,
                    epoch_line,
                ))
                .map_err(plot_err)?;
        }
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.step, p.loss))
                    .filter(|(_, v)| v.is_finite()),
                LOSS_COLOR.stroke_width(2),
            ))
            .map_err(plot_err)?;

        let (legend, lower) = lower.split_vertically(LEGEND_ROW);
        legend
            .draw(&Text::new(
                "The tutorial's chart: both on one log axis",
                (82, LEGEND_ROW as i32 / 2 - 7),
                ("sans-serif", 14),
            ))
            .map_err(plot_err)?;
        legend_row(
            &legend,
            &[("loss", LOSS_COLOR), ("learning rate", LR_COLOR)],
        )?;
        let mut chart = ChartBuilder::on(&lower)
            .margin(12)
            .margin_top(4)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0usize..last, (lo / 2.0..hi * 2.0).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(FINE_GRID)
            .x_desc("optimizer step")
            .y_desc("loss, learning rate (log scale)")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(plot_err)?;
        for &end in &ends {
            chart
                .draw_series(DashedLineSeries::new(
                    [(end, lo / 2.0), (end, hi * 2.0)],
                    4,
                    4,
                    epoch_line,
                ))
                .map_err(plot_err)?;
        }
        for (pick, color) in [
            (
                (|p: &StepPoint| p.loss) as fn(&StepPoint) -> f64,
                LOSS_COLOR,
            ),
            (|p: &StepPoint| p.lr, LR_COLOR),
        ] {
            chart
                .draw_series(LineSeries::new(
                    points
                        .iter()
                        .map(|p| (p.step, pick(p)))
                        .filter(|(_, v)| positive(*v)),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Chapter 7's figure. Left, the losses: the training loss of every logged step `(step, loss)`
/// as a line, and the eval loss after each evaluation `(step, eval_loss)` as points on the same
/// axis, so that a model learning its training rows by heart shows as the two parting. Right,
/// the eval accuracy after each evaluation `(step, accuracy)`, 0 to 1, with chance for two
/// classes dashed at 0.5.
pub fn train_eval_chart(
    title: &str,
    losses: &[(usize, f64)],
    eval_losses: &[(usize, f64)],
    accuracy: &[(usize, f64)],
) -> Result<String> {
    let (lo, hi) = range(
        losses.iter().chain(eval_losses).map(|l| l.1),
        "step with a finite loss",
    )?;
    let last = losses
        .iter()
        .chain(eval_losses)
        .chain(accuracy)
        .map(|l| l.0)
        .max()
        .unwrap_or(1)
        .max(1);
    let y = padded(lo, hi);
    let y = y.start.max(0.0)..y.end;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIDE_BY_SIDE_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);

        let (legend, left) = left.split_vertically(LEGEND_ROW);
        legend_row(
            &legend,
            &[
                ("training loss", LOSS_COLOR),
                ("eval loss", EVAL_LOSS_COLOR),
            ],
        )?;
        let mut chart = ChartBuilder::on(&left)
            .margin(12)
            .margin_top(4)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0usize..last, y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(FINE_GRID)
            .x_desc("optimizer step")
            .y_desc("loss")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                losses.iter().copied().filter(|l| l.1.is_finite()),
                LOSS_COLOR.stroke_width(2),
            ))
            .map_err(plot_err)?;
        let evals = || eval_losses.iter().copied().filter(|l| l.1.is_finite());
        chart
            .draw_series(LineSeries::new(evals(), EVAL_LOSS_COLOR.stroke_width(2)))
            .map_err(plot_err)?;
        chart
            .draw_series(evals().map(|p| Circle::new(p, 4, EVAL_LOSS_COLOR.filled())))
            .map_err(plot_err)?;

        let (legend, right) = right.split_vertically(LEGEND_ROW);
        legend_row(
            &legend,
            &[("eval accuracy", ACCURACY_COLOR), ("chance", GUIDE_COLOR)],
        )?;
        let mut chart = ChartBuilder::on(&right)
            .margin(12)
            .margin_top(4)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0usize..last, 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(FINE_GRID)
            .x_desc("optimizer step")
            .y_desc("eval accuracy")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0, 0.5), (last, 0.5)],
                4,
                4,
                GUIDE_COLOR.stroke_width(1),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                accuracy.iter().copied(),
                ACCURACY_COLOR.stroke_width(2),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(
                accuracy
                    .iter()
                    .map(|&p| Circle::new(p, 4, ACCURACY_COLOR.filled())),
            )
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
