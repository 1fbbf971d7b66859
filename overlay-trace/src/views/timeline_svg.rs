//! `report events.ndjson --timeline out.svg`: the start timeline as a static picture for CI
//! artifacts (the same slices `run --trace` writes for Perfetto): one row per overlay mount,
//! named after its container, time across; copy-ups, calls that only waited, and the mount
//! itself as bars. Bounded: beyond `SLICES_MAX` slices or `ROWS_MAX` rows the rest is counted
//! and said in the caption, not drawn.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::stream::record::MountKey;

use crate::stream::event::Event;

const SLICES_MAX: usize = 50_000;
const ROWS_MAX: usize = 40;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    CopyUp,
    Wait,
    Mount,
}

const KINDS: [(Kind, &str, RGBColor); 3] = [
    (
        Kind::Mount,
        "mount (ovl_fill_super)",
        RGBColor(150, 150, 150),
    ),
    (Kind::CopyUp, "copy-up", RGBColor(31, 119, 180)),
    (Kind::Wait, "waited for a copy-up", RGBColor(255, 127, 14)),
];

#[derive(Default)]
pub struct Timeline {
    rows: HashMap<MountKey, usize>,
    names: Vec<String>,
    slices: Vec<(usize, u64, u64, Kind)>,
    /// Slices not drawn (over the caps).
    left_out: u64,
}

impl Timeline {
    fn row(&mut self, key: MountKey) -> Option<usize> {
        if let Some(r) = self.rows.get(&key) {
            return Some(*r);
        }
        if self.names.len() >= ROWS_MAX {
            return None;
        }
        let r = self.names.len();
        self.rows.insert(key, r);
        self.names
            .push(format!("overlay {} (mount {})", key.dev, key.generation));
        Some(r)
    }

    pub fn add(&mut self, e: &Event, key: MountKey) {
        let (kind, dur) = match e {
            Event::CopyUp(c) if c.is_wait() => (Kind::Wait, c.duration_ns),
            Event::CopyUp(c) => (Kind::CopyUp, c.duration_ns),
            Event::Mount(m) => (Kind::Mount, m.duration_ns),
            Event::Lookup(_) | Event::Rename(_) => return,
        };
        match self.row(key) {
            Some(r) if self.slices.len() < SLICES_MAX => {
                self.slices.push((r, e.origin().start_ns, dur, kind))
            }
            _ => self.left_out += 1,
        }
    }

    /// Names a row: a container's name replaces a mount point, not the other way round.
    pub fn name(&mut self, key: MountKey, name: String, container: bool) {
        if let Some(r) = self.row(key) {
            if container || self.names[r].starts_with("overlay ") {
                self.names[r] = name;
            }
        }
    }

    pub fn svg(&self) -> Result<String> {
        let t0 = self.slices.iter().map(|s| s.1).min().unwrap_or(0);
        let end = self
            .slices
            .iter()
            .map(|s| s.1 + s.2)
            .max()
            .unwrap_or(t0 + 1_000_000);
        let span = ((end - t0) as f64 / 1e9).max(1e-3);
        let rows = self.names.len().max(1);
        let height = 200 + 28 * rows as u32;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (1200, height)).into_drawing_area();
            let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the timeline: {e:?}");
            root.fill(&WHITE).map_err(err)?;
            let caption = if self.left_out > 0 {
                format!(
                    "overlay timeline ({} more copy-ups and mounts not drawn)",
                    self.left_out
                )
            } else {
                "overlay timeline".to_string()
            };
            let names = self.names.clone();
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(300)
                // A band above the rows keeps the legend off the bars.
                .build_cartesian_2d(0f64..span * 1.02, -0.5f64..rows as f64 + 1.5)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels((rows + 2) * 2)
                .y_label_formatter(&move |y| {
                    let i = y.round();
                    if (y - i).abs() > 0.01 || i < 0.0 {
                        return String::new();
                    }
                    let n = names.get(i as usize).cloned().unwrap_or_default();
                    let n = crate::base::escape::escape(&n);
                    if n.chars().count() > 45 {
                        format!(
                            "...{}",
                            n.chars()
                                .rev()
                                .take(42)
                                .collect::<Vec<_>>()
                                .into_iter()
                                .rev()
                                .collect::<String>()
                        )
                    } else {
                        n
                    }
                })
                .x_desc("seconds since the first event")
                .draw()
                .map_err(err)?;
            // A bar stays visible however short the call.
            let min_w = span / 1000.0;
            for (kind, label, color) in KINDS {
                let bars: Vec<Rectangle<(f64, f64)>> = self
                    .slices
                    .iter()
                    .filter(|s| s.3 == kind)
                    .map(|&(row, start, dur, _)| {
                        let x0 = (start - t0) as f64 / 1e9;
                        let x1 = x0 + (dur as f64 / 1e9).max(min_w);
                        let (y0, y1) = match kind {
                            Kind::Mount => (row as f64 - 0.4, row as f64 + 0.4),
                            _ => (row as f64 - 0.3, row as f64 + 0.3),
                        };
                        Rectangle::new([(x0, y0), (x1, y1)], color.mix(0.85).filled())
                    })
                    .collect();
                chart
                    .draw_series(bars)
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
            root.present().map_err(err)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::event::{Dev, raw};

    fn key(minor: u32) -> MountKey {
        MountKey {
            dev: Dev { major: 0, minor },
            generation: 1,
        }
    }

    #[test]
    fn one_row_per_mount_named_and_one_bar_per_copy_up() {
        let mut t = Timeline::default();
        for (m, n) in [(1u32, 3usize), (2, 5)] {
            t.add(
                &Event::try_from(&raw::mount(m, 2_000_000)[..]).unwrap(),
                key(m),
            );
            for i in 0..n {
                let rec = raw::copy_up(m, &format!("f{i}"), 10, 10, 1_000_000);
                t.add(&Event::try_from(&rec[..]).unwrap(), key(m));
            }
        }
        t.name(key(1), "/var/lib/x/merged".into(), false);
        t.name(key(1), "web (docker)".into(), true);
        t.name(key(1), "/late/mount/point".into(), false);
        let s = t.svg().unwrap();
        let texts: Vec<&str> = s
            .split("</text>")
            .filter_map(|x| x.rsplit_once('>').map(|(_, v)| v.trim()))
            .collect();
        assert!(texts.contains(&"web (docker)"), "{texts:?}");
        assert!(texts.contains(&"overlay 0:2 (mount 1)"), "{texts:?}");
        assert!(texts.contains(&"copy-up"), "legend");
        // 8 copy-up bars and the legend's swatch in the copy-up colour; 2 mounts and a swatch.
        let filled = |c: &str| {
            s.split("<rect")
                .filter(|r| r.split('>').next().is_some_and(|a| a.contains(c)))
                .count()
        };
        assert_eq!(filled("fill=\"#1F77B4\""), 8 + 1, "copy-up bars");
        assert_eq!(filled("fill=\"#969696\""), 2 + 1, "mount bars");
    }
}
