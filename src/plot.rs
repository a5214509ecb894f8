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

/// A white canvas with `title` on top and room for the x axis' labels: how every training chart
/// starts.
fn titled_chart<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, plotters::coord::Shift>,
    title: &'b str,
) -> Result<ChartBuilder<'a, 'b, DB>> {
    root.fill(&WHITE).map_err(plot_err)?;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40);
    Ok(builder)
}

/// A legend entry's sample: a short line in the series' colour.
fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
}

/// The legend, top right, over a faint white box.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)
}

/// The loss curve's colour (tests find the series by it).
pub const LOSS_COLOR: RGBColor = RGBColor(0x46, 0x82, 0xb4);
/// The learning rate's colour.
pub const LR_COLOR: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const CURVES_SIZE: (u32, u32) = (760, 440);

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

// ANCHOR: loss_lr_chart
/// The tutorial's training figure: loss and learning rate against the optimizer step on one
/// logarithmic y axis (they differ by six orders of magnitude), a dashed line at each epoch's
/// end. Points that a log axis cannot show (an lr of 0 on the first step) are left out.
pub fn loss_lr_chart(title: &str, points: &[StepPoint], epoch_ends: &[usize]) -> Result<String> {
    let positive = |v: f64| v > 0.0 && v.is_finite();
    let values = || {
        points
            .iter()
            .flat_map(|p| [p.loss, p.lr])
            .filter(|v| positive(*v))
    };
    let (Some(lo), Some(hi)) = (values().reduce(f64::min), values().reduce(f64::max)) else {
        return Err(Error::InvalidArgument(
            "a training chart needs at least one step with a positive loss or lr".into(),
        ));
    };
    let last = points.iter().map(|p| p.step).max().unwrap_or(1).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CURVES_SIZE).into_drawing_area();
        let mut chart = titled_chart(&root, title)?
            .y_label_area_size(70)
            .build_cartesian_2d(0usize..last, (lo / 2.0..hi * 2.0).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("loss, learning rate (log scale)")
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(plot_err)?;
        for &end in epoch_ends.iter().filter(|&&e| e > 0 && e <= last) {
            chart
                .draw_series(DashedLineSeries::new(
                    [(end, lo / 2.0), (end, hi * 2.0)],
                    4,
                    4,
                    BLACK.mix(0.4).stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        let series = |pick: fn(&StepPoint) -> f64| {
            points
                .iter()
                .map(move |p| (p.step, pick(p)))
                .filter(|(_, v)| positive(*v))
        };
        chart
            .draw_series(LineSeries::new(
                series(|p| p.loss),
                LOSS_COLOR.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("loss")
            .legend(legend_line(LOSS_COLOR));
        chart
            .draw_series(LineSeries::new(series(|p| p.lr), LR_COLOR.stroke_width(2)))
            .map_err(plot_err)?
            .label("learning rate")
            .legend(legend_line(LR_COLOR));
        draw_legend(&mut chart)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
// ANCHOR_END: loss_lr_chart

/// The eval accuracy's colour in [`loss_accuracy_chart`].
pub const ACCURACY_COLOR: RGBColor = RGBColor(0x1b, 0x9e, 0x77);

// ANCHOR: loss_accuracy_chart
/// Chapter 7's figure: the training loss of every optimizer step `(step, loss)` on the left
/// axis, and the eval accuracy after each evaluation `(step, accuracy)` as points on the right
/// axis (0 to 1), with chance for two classes dashed at 0.5.
pub fn loss_accuracy_chart(
    title: &str,
    losses: &[(usize, f64)],
    accuracy: &[(usize, f64)],
) -> Result<String> {
    let finite = || losses.iter().map(|l| l.1).filter(|v| v.is_finite());
    let (Some(lo), Some(hi)) = (finite().reduce(f64::min), finite().reduce(f64::max)) else {
        return Err(Error::InvalidArgument(
            "a loss chart needs at least one step with a finite loss".into(),
        ));
    };
    let last = losses.iter().map(|l| l.0).max().unwrap_or(1).max(1);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CURVES_SIZE).into_drawing_area();
        let mut chart = titled_chart(&root, title)?
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0usize..last, (lo - pad).max(0.0)..hi + pad)
            .map_err(plot_err)?
            .set_secondary_coord(0usize..last, 0f64..1f64);
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("training loss")
            .draw()
            .map_err(plot_err)?;
        chart
            .configure_secondary_axes()
            .y_desc("eval accuracy")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_secondary_series(DashedLineSeries::new(
                [(0, 0.5), (last, 0.5)],
                4,
                4,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                losses.iter().copied().filter(|l| l.1.is_finite()),
                LOSS_COLOR.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("training loss")
            .legend(legend_line(LOSS_COLOR));
        chart
            .draw_secondary_series(LineSeries::new(
                accuracy.iter().copied(),
                ACCURACY_COLOR.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("eval accuracy")
            .legend(legend_line(ACCURACY_COLOR));
        chart
            .draw_secondary_series(
                accuracy
                    .iter()
                    .map(|&p| Circle::new(p, 4, ACCURACY_COLOR.filled())),
            )
            .map_err(plot_err)?;
        draw_legend(&mut chart)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
// ANCHOR_END: loss_accuracy_chart
