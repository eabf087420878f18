//! The bench as a picture (`--plot FILE.svg`): the completion rate over the
//! measured window and the latency percentile curve, one series per
//! frontend run (both frontends on one chart with `--compare`).
//!
//! The percentile curve is drawn like HdrHistogram's plotter: latency
//! against `1/(1-percentile)` on a logarithmic axis, labelled with the
//! percentile (10 is 90 %, 100 is 99 %, ...), so the tail gets as much room
//! as the median, and latency on a logarithmic axis too (a tail a thousand
//! times the median stays on the chart without flattening the rest). Its
//! points are the rows of the `--histogram` file.
//!
//! Only plotters' SVG backend is used, without its font features: text is
//! written as SVG `<text>` elements that the viewer renders, so neither
//! building nor drawing needs a system font library.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::histogram_file::{NS_PER_UNIT, TICKS_PER_HALF_DISTANCE};
use crate::trace::RunTrace;

/// Width and height of the picture, in SVG pixels.
pub const SIZE: (u32, u32) = (1000, 900);

/// Series colours, one per trace in order.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the plot: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// Draws `traces` as an SVG document; `title` heads the picture (e.g.
/// the workload).
pub fn svg(traces: &[RunTrace], title: &str) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(err)?
            .margin(5, 5, 10, 20);
        let (top, bottom) = root.split_vertically(SIZE.1 as i32 / 2 - 20);
        iops_chart(&top, traces)?;
        percentile_chart(&bottom, traces)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

fn iops_chart(area: &DrawingArea<SVGBackend, Shift>, traces: &[RunTrace]) -> Result<(), PlotError> {
    let end = traces
        .iter()
        .flat_map(|t| t.iops.last())
        .map(|s| s.at.as_secs_f64())
        .fold(0.0, f64::max)
        .max(1e-3);
    let top = traces
        .iter()
        .flat_map(|t| &t.iops)
        .map(|s| s.iops)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Completions per second over the measured window",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .x_desc("seconds")
        .y_desc("IOPS")
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    let lines = traces.iter().map(|t| {
        let points: Vec<(f64, f64)> = t
            .iops
            .iter()
            .map(|s| (s.at.as_secs_f64(), s.iops))
            .collect();
        (t.frontend.clone(), points)
    });
    draw_lines(&mut chart, lines, SeriesLabelPosition::LowerRight)
}

/// Draws one line per trace (its label, its points), each in its colour,
/// and the legend at `position`.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    lines: impl Iterator<Item = (String, Vec<(f64, f64)>)>,
    position: SeriesLabelPosition,
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, points)) in lines.enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// A trace's percentile curve: (1/(1-percentile), latency in µs), without
/// the 100 % point (its x is infinite).
fn curve(t: &RunTrace) -> Vec<(f64, f64)> {
    let h = t.latencies.histogram();
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, ns)| (1.0 / (1.0 - q), ns as f64 / NS_PER_UNIT))
        .collect()
}

fn percentile_chart(
    area: &DrawingArea<SVGBackend, Shift>,
    traces: &[RunTrace],
) -> Result<(), PlotError> {
    let curves: Vec<Vec<(f64, f64)>> = traces.iter().map(curve).collect();
    let right = curves.iter().flatten().map(|p| p.0).fold(10.0, f64::max);
    // Whole decades, so every label is a round percentile.
    let right = 10f64.powf(right.log10().ceil());
    let values = || curves.iter().flatten().map(|p| p.1);
    // Whole decades on the log latency axis too.
    let decade_below = |v: f64| 10f64.powf(v.log10().floor());
    let bottom = decade_below(values().fold(f64::INFINITY, f64::min).clamp(0.001, 1e9));
    let top = 10f64.powf(
        values()
            .fold(0.0, f64::max)
            .max(bottom * 10.0)
            .log10()
            .ceil(),
    );
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..right).log_scale(), (bottom..top).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .x_desc("percentile (axis: 1/(1-percentile), log scale)")
        .y_desc("latency (us, log scale)")
        .x_label_formatter(&|v| percentile_label(*v))
        .y_label_formatter(&|v| microseconds(*v))
        .draw()
        .map_err(err)?;
    let lines = traces.iter().map(|t| t.frontend.clone()).zip(curves);
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperLeft)
}

/// The percentile at `x` = 1/(1-percentile), as a label: 1 → "0%",
/// 10 → "90%", 1000 → "99.9%".
fn percentile_label(x: f64) -> String {
    let p = (1.0 - 1.0 / x) * 100.0;
    let mut s = format!("{p:.6}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    format!("{s}%")
}

/// Microseconds as a label: three significant digits, no exponent.
fn microseconds(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A count with an SI suffix: 1500000 → "1.5M".
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dataplane::latency::Latencies;

    use super::*;
    use crate::trace::IopsSample;

    fn trace(name: &str, scale: u64) -> RunTrace {
        let mut latencies = Latencies::new();
        for ns in 1..=5000u64 {
            latencies.record(ns * scale);
        }
        RunTrace {
            frontend: name.into(),
            latencies,
            iops: (1..=20)
                .map(|i| IopsSample {
                    at: Duration::from_millis(50 * i),
                    iops: 1e6 + (i * scale) as f64,
                })
                .collect(),
        }
    }

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(si(1_500_000.0), "1.50M");
        assert_eq!(si(25_000.0), "25k");
        assert_eq!(microseconds(1234.6), "1235");
        assert_eq!(microseconds(12.34), "12.3");
        assert_eq!(microseconds(0.1), "0.100");
        assert_eq!(microseconds(10.0), "10");
    }

    #[test]
    fn draws_every_series() {
        let s = svg(&[trace("tcmu", 100), trace("scst", 130)], "a title").unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..80]);
        assert!(s.trim_end().ends_with("</svg>"));
        for word in ["tcmu", "scst", "a title", "99.9%", "IOPS"] {
            assert!(s.contains(word), "{word} missing");
        }
        // Each colour: a series and a legend line in each of the two panels.
        for colour in ["#1F77B4", "#D62728"] {
            let lines = format!("<polyline fill=\"none\" opacity=\"1\" stroke=\"{colour}\"");
            assert_eq!(s.matches(&lines).count(), 4, "{colour}");
        }
    }

    #[test]
    fn empty_traces_still_draw() {
        let t = RunTrace {
            frontend: "tcmu".into(),
            latencies: Latencies::new(),
            iops: Vec::new(),
        };
        assert!(svg(&[t], "nothing ran").unwrap().starts_with("<svg"));
    }
}
