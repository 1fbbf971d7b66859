//! Latency distributions as a picture (plotters, SVG): copy-up and lookup latency against
//! percentile, log scale, one curve per report so two reports can be compared at a glance.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::Report;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The curve of the report's busiest mount for one operation. Reports written before the
/// curve was recorded still have their percentiles.
fn curve(r: &Report, copy_up: bool) -> Vec<(f64, u64)> {
    let count = |m: &super::MountReport| {
        if copy_up {
            m.copy_up.count
        } else {
            m.lookup.count
        }
    };
    let Some(m) = r
        .mounts
        .iter()
        .filter(|m| count(m) > 0)
        .max_by_key(|m| count(m))
    else {
        return Vec::new();
    };
    let l = if copy_up {
        &m.copy_up.latency
    } else {
        &m.lookup.latency
    };
    if !l.curve.is_empty() {
        return l.curve.clone();
    }
    vec![
        (50.0, l.p50_ns),
        (90.0, l.p90_ns),
        (99.0, l.p99_ns),
        (99.9, l.p99_9_ns),
        (100.0, l.max_ns),
    ]
}

fn label(r: &Report, i: usize) -> String {
    match &r.bench {
        Some(b) => format!("{} ({} run(s))", b.scenario, b.repeat),
        None => format!("report {}", i + 1),
    }
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    reports: &[(String, &Report)],
    copy_up: bool,
) -> Result<()> {
    let curves: Vec<(String, Vec<(f64, u64)>)> = reports
        .iter()
        .map(|(l, r)| (l.clone(), curve(r, copy_up)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let title = if copy_up {
        "copy-up latency"
    } else {
        "lookup latency"
    };
    let max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(2);
    let min = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .min()
        .unwrap_or(1)
        .max(1);
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {title}: {e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0f64..100f64,
            ((min as f64) * 0.8..(max as f64) * 1.25).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ns (log)")
        .y_label_formatter(&|v| super::text::ns(*v as u64))
        .draw()
        .map_err(err)?;
    if curves.is_empty() {
        return Ok(());
    }
    for (i, (l, c)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = c.iter().map(|(p, v)| (*p, (*v).max(1) as f64)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(l.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// An SVG document with both panels; `reports` are overlaid.
pub fn svg(reports: &[Report]) -> Result<String> {
    let labelled: Vec<(String, &Report)> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| (label(r, i), r))
        .collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1100, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing: {e:?}"))?;
        let (left, right) = root.split_horizontally(550);
        panel(&left, &labelled, true)?;
        panel(&right, &labelled, false)?;
        root.present().map_err(|e| anyhow!("drawing: {e:?}"))?;
    }
    Ok(out)
}

/// A standalone HTML page: the picture and the text reports.
pub fn html(reports: &[Report]) -> Result<String> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut page = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>overlay-trace</title></head><body>\n",
    );
    page.push_str(&svg(reports)?);
    for r in reports {
        page.push_str("\n<pre>");
        page.push_str(&esc(&super::text::render(r)));
        page.push_str("</pre>");
    }
    page.push_str("\n</body></html>\n");
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real report written by `overlay-trace bench` in the VM (copy-ups of a log file).
    const REPORT: &str = include_str!("../../tests/fixtures/bench-report.json");

    #[test]
    fn svg_overlays_two_reports() {
        let a = super::super::json::from_str(REPORT).unwrap();
        let mut b = a.clone();
        if let Some(bi) = b.bench.as_mut() {
            bi.scenario = "second".into();
        }
        let s = svg(&[a, b]).unwrap();
        assert!(
            s.starts_with("<svg") && s.contains("copy-up latency") && s.contains("lookup latency")
        );
        assert!(
            s.contains("log-append-8388608") && s.contains("second"),
            "legend names both reports"
        );
        // Five percentile points per curve, two reports, two panels.
        assert!(
            s.matches("<circle").count() >= 20,
            "points drawn: {}",
            s.matches("<circle").count()
        );
    }

    #[test]
    fn html_embeds_picture_and_text() {
        let a = super::super::json::from_str(REPORT).unwrap();
        let h = html(&[a]).unwrap();
        assert!(h.contains("<svg") && h.contains("<pre>overlay-trace"));
    }
}
