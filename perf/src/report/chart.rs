//! The chart: throughput ratio to untraced per configuration, HTTPS 1 KiB and
//! 64 KiB side by side.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::summary;
use crate::overhead::{Config, Results, Workload};

/// Chart size, pixels.
const SIZE: (u32, u32) = (1100, 600);
/// The two series.
const SERIES: [(Workload, RGBColor); 2] = [
    (Workload::Https1K, RGBColor(66, 133, 244)),
    (Workload::Https64K, RGBColor(244, 160, 0)),
];

/// Draws the chart into `path` (PNG).
pub fn draw(path: &Path, results: &Results, title: &str, tck: f64) -> Result<()> {
    let configs: Vec<Config> = Config::ALL
        .into_iter()
        .filter(|&c| c != Config::Untraced)
        .collect();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = configs.len() as f64;
    // Room above the tallest bar (noisy runs can exceed 1).
    let top = configs
        .iter()
        .flat_map(|&c| SERIES.map(|(w, _)| summary::cell(results, c, w, tck).and_then(|x| x.ratio)))
        .flatten()
        .fold(1.2f64, f64::max)
        + 0.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(configs.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && i < configs.len() {
                configs[i].short().to_owned()
            } else {
                String::new()
            }
        })
        .y_desc("requests/s ÷ untraced, same round (median)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (k, (workload, color)) in SERIES.iter().enumerate() {
        let bars: Vec<_> = configs
            .iter()
            .enumerate()
            .filter_map(|(i, &c)| {
                let ratio = summary::cell(results, c, *workload, tck)?.ratio?;
                let x0 = i as f64 + 0.12 + 0.38 * k as f64;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.36, ratio.min(1.2))],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| anyhow!("{e}"))?
            .label(workload.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (n, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
