//! SVG plots with plotters: the completion CDF (several runs on one chart, for
//! side-by-side comparisons) and each host's download rate over time.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::RunReport;

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Fraction of downloads finished against time, one step line per run, with
/// the Kumar–Ross bound as a vertical line when the first run has one.
pub fn completion_cdf(runs: &[&RunReport], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let t_max = runs
        .iter()
        .flat_map(|r| r.completion_cdf().into_iter().map(|p| p.0))
        .chain(runs.iter().filter_map(|r| r.bound.map(|b| b.seconds)))
        .fold(1.0f64, f64::max)
        * 1.1;
    let title = format!(
        "{}: downloads finished",
        runs.first().map_or("", |r| r.scenario.as_str())
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..1.05)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the downloads started")
        .y_desc("fraction finished")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (k, r) in runs.iter().enumerate() {
        let mut pts = vec![(0.0, 0.0)];
        let mut last = 0.0;
        for (t, f) in r.completion_cdf() {
            pts.push((t, last));
            pts.push((t, f));
            last = f;
        }
        let color = palette(k);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(r.tool.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if let Some(b) = runs.first().and_then(|r| r.bound) {
        chart
            .draw_series(LineSeries::new(
                vec![(b.seconds, 0.0), (b.seconds, 1.05)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label("Kumar–Ross bound")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Each downloading host's receive rate (Mbit/s on its veth) over time.
pub fn throughput(run: &RunReport, path: &Path) -> Result<()> {
    let series = run.throughput();
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let t_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let r_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} ({}): download rate per host", run.scenario, run.tool),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..r_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the scenario started")
        .y_desc("Mbit/s received")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (k, (host, pts)) in series.into_iter().enumerate() {
        let color = palette(k);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(1)))
            .map_err(|e| anyhow!("{e}"))?
            .label(run.hosts[host].name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
