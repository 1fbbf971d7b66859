//! Latency distributions as a picture (plotters, SVG): copy-up and lookup latency against
//! percentile, one curve per report (labelled with its file) so reports can be compared at a
//! glance. Both axes are logarithmic; the percentile axis as HdrHistogram plots it, by 1/(1-p),
//! so 90%, 99%, 99.9% and 99.99% are evenly spaced: the tail is what a regression hunt reads.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::Report;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The curve of the report's busiest mount for one operation. Reports written before the
/// curve was recorded still have their percentiles.
fn curve(r: &Report, copy_up: bool) -> Vec<(f64, u64)> {
    let count = |m: &super::report::MountReport| {
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

/// Where percentile `p` (0..=100) sits on the axis: log10(1/(1-p)), 90% at 1, 99% at 2, ...
/// The maximum (100%) is drawn at `X_MAX`.
fn x_of(p: f64) -> f64 {
    if p >= 100.0 {
        return X_MAX;
    }
    (1.0 / (1.0 - p / 100.0)).log10().min(X_MAX - 0.25)
}

const X_MAX: f64 = 4.5;

/// The tick label of axis position `x`: the percentiles at whole decades, "max" at the end.
fn x_label(x: f64) -> String {
    if (x - X_MAX).abs() < 0.01 {
        return "max".into();
    }
    let k = x.round();
    if (x - k).abs() > 0.01 || k < 0.0 {
        return String::new();
    }
    match k as i32 {
        0 => "0%".into(),
        k => {
            let nines = 100.0 - 100.0 / 10f64.powi(k);
            format!("{}%", nines)
        }
    }
}

/// Each report's label: its file name, with the kernel and the scenario when they differ
/// between the reports.
pub fn labels(reports: &[(String, Report)]) -> Vec<String> {
    let differ = |f: &dyn Fn(&Report) -> Option<String>| {
        let first = reports.first().map(|(_, r)| f(r));
        reports.iter().any(|(_, r)| Some(f(r)) != first)
    };
    let kernel = differ(&|r| Some(r.kernel.clone()));
    let scenario = differ(&|r| r.bench.as_ref().map(|b| b.scenario.clone()));
    reports
        .iter()
        .map(|(name, r)| {
            let mut extra = Vec::new();
            if scenario {
                if let Some(b) = &r.bench {
                    extra.push(b.scenario.clone());
                }
            }
            if kernel {
                extra.push(format!("kernel {}", r.kernel));
            }
            if extra.is_empty() {
                name.clone()
            } else {
                format!("{name} ({})", extra.join(", "))
            }
        })
        .collect()
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
            0f64..X_MAX + 0.1,
            ((min as f64) * 0.8..(max as f64) * 1.25).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(20)
        .x_label_formatter(&|x| x_label(*x))
        .x_desc("percentile (1/(1-p) scale)")
        .y_desc("latency (log scale)")
        .y_label_formatter(&|v| super::text::ns(*v as u64))
        .draw()
        .map_err(err)?;
    if curves.is_empty() {
        return Ok(());
    }
    for (i, (l, c)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = c
            .iter()
            .map(|(p, v)| (x_of(*p), (*v).max(1) as f64))
            .collect();
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
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// An SVG document with both panels; `reports` (file name, report) are overlaid.
pub fn svg(reports: &[(String, Report)]) -> Result<String> {
    let labelled: Vec<(String, &Report)> = labels(reports)
        .into_iter()
        .zip(reports.iter().map(|(_, r)| r))
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
pub fn html(reports: &[(String, Report)]) -> Result<String> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut page = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>overlay-trace</title></head><body>\n",
    );
    page.push_str(&svg(reports)?);
    for (_, r) in reports {
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
    fn svg_overlays_two_reports_labelled_by_file_on_a_tail_axis() {
        let a = super::super::json::from_str(REPORT).unwrap();
        let mut b = a.clone();
        b.kernel = "6.12.0".into();
        let s = svg(&[("base.json".into(), a), ("new.json".into(), b)]).unwrap();
        assert!(
            s.starts_with("<svg") && s.contains("copy-up latency") && s.contains("lookup latency")
        );
        // The kernels differ, the scenario does not: the labels say what tells them apart.
        assert!(s.contains("base.json (kernel "), "legend names the files");
        assert!(s.contains("new.json (kernel 6.12.0)"));
        assert!(!s.contains("report 1"));
        let texts: Vec<&str> = s
            .split("</text>")
            .filter_map(|t| t.rsplit_once('>').map(|(_, v)| v.trim()))
            .collect();
        for tick in ["90%", "99%", "99.9%", "99.99%", "max"] {
            assert!(texts.contains(&tick), "tick {tick}: {texts:?}");
        }
        // Five percentile points per curve, two reports, two panels.
        assert!(
            s.matches("<circle").count() >= 20,
            "points drawn: {}",
            s.matches("<circle").count()
        );
    }

    #[test]
    fn the_percentile_axis_spreads_the_tail() {
        assert_eq!(x_of(0.0), 0.0);
        assert!((x_of(90.0) - 1.0).abs() < 1e-9);
        assert!((x_of(99.0) - 2.0).abs() < 1e-9);
        assert!((x_of(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(x_of(100.0), X_MAX);
        assert!(x_of(99.999) < X_MAX, "below the max");
        assert_eq!(x_label(3.0), "99.9%");
        assert_eq!(x_label(1.5), "");
    }

    #[test]
    fn html_embeds_picture_and_text() {
        let a = super::super::json::from_str(REPORT).unwrap();
        let h = html(&[("a.json".into(), a)]).unwrap();
        assert!(h.contains("<svg") && h.contains("<pre>overlay-trace"));
    }
}
