//! `top`'s full-screen view (ratatui): the tracer's losses on top, the table, the selected
//! row's slowest copy-ups, the keys. Drawing and key handling only: the terminal itself is
//! `cmd::top::terminal`'s.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style, Stylize as _},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table, TableState, Wrap},
};

use super::{COLUMNS, Column, Snapshot, WIDE, losses, marker, name, short_bytes, short_ns, sorted};
use crate::{
    base::escape::escape,
    model::window::{Row, RowId},
};

/// What the person at the terminal chose.
#[derive(Clone, Debug)]
pub struct Ui {
    pub sort: Column,
    pub reverse: bool,
    /// Kept by identity, so the selection follows its row when the order changes.
    pub selected: Option<RowId>,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
    Nothing,
}

/// A key, as the terminal reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    CtrlC,
    Up,
    Down,
    Esc,
    /// The terminal changed size.
    Resize,
}

impl Ui {
    pub fn new(sort: Column) -> Self {
        Self {
            sort,
            reverse: false,
            selected: None,
        }
    }

    pub fn key(&mut self, k: Key, s: &Snapshot) -> Action {
        match k {
            Key::Char('q') | Key::CtrlC | Key::Esc => return Action::Quit,
            Key::Char('r') => self.reverse = !self.reverse,
            Key::Resize => {}
            Key::Up | Key::Char('k') => self.step(s, -1),
            Key::Down | Key::Char('j') => self.step(s, 1),
            Key::Char(c) => match Column::of_key(c) {
                Some(col) => {
                    self.sort = col;
                    self.reverse = false;
                }
                None => return Action::Nothing,
            },
        }
        Action::Redraw
    }

    fn step(&mut self, s: &Snapshot, by: isize) {
        let rows = sorted(&s.rows, self.sort, self.reverse, s.interval_secs);
        if rows.is_empty() {
            return;
        }
        let at = self.index(&rows).map_or(0, |i| {
            (i as isize + by).clamp(0, rows.len() as isize - 1) as usize
        });
        self.selected = Some(rows[at].id.clone());
    }

    /// The selected row's place in `rows`; the first row when none is selected yet.
    fn index(&self, rows: &[&Row]) -> Option<usize> {
        match &self.selected {
            Some(id) => rows.iter().position(|r| &r.id == id),
            None => (!rows.is_empty()).then_some(0),
        }
    }
}

/// The keys, in the footer.
fn footer() -> String {
    let sorts: Vec<String> = super::COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.key(), c.header().split(' ').next().unwrap_or("")))
        .collect();
    format!("sort: {}  r reverse  ↑↓ select  q quit", sorts.join("  "))
}

pub fn draw(f: &mut Frame, s: &Snapshot, ui: &Ui) {
    let area = f.area();
    let detail_height = 10.min(area.height.saturating_sub(8) / 2);
    let [head, table, detail, keys] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(detail_height),
        Constraint::Length(2),
    ])
    .areas(area);

    let lost = losses(&s.counts);
    let lost_style = if s.counts.lost() > 0 {
        Style::new().red().bold()
    } else {
        Style::new()
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "overlay-trace top: {:.0} s traced, {} rows, every {:.1} s",
                s.traced_secs,
                s.rows.len(),
                s.interval_secs
            ))
            .bold(),
            Line::styled(lost, lost_style),
            Line::styled(
                s.warnings
                    .last()
                    .map(|w| format!("warning: {}", escape(w)))
                    .unwrap_or_default(),
                Style::new().yellow(),
            ),
        ]),
        head,
    );

    let rows = sorted(&s.rows, ui.sort, ui.reverse, s.interval_secs);
    let columns: Vec<Column> = COLUMNS
        .into_iter()
        .filter(|c| area.width >= WIDE || !c.optional())
        .collect();
    let header = TableRow::new(columns.iter().map(|c| {
        let mut h = c.header().to_string();
        if *c == ui.sort {
            h.push(if ui.reverse { '▲' } else { '▼' });
        }
        Cell::from(h)
    }))
    .style(Style::new().add_modifier(Modifier::REVERSED));
    // What is left for the names: they are cut in their middle to fit.
    let name_width = columns
        .iter()
        .filter(|c| **c != Column::Name)
        .fold(table.width, |w, c| w.saturating_sub(c.width() + 1));
    let body = rows.iter().map(|r| {
        TableRow::new(columns.iter().map(|c| {
            let v = c.cell(r, s.interval_secs);
            match c {
                // The marker whole: only the name is cut.
                Column::Name => Cell::from(
                    fit(
                        &escape(&r.name),
                        name_width.saturating_sub(marker(r).len() as u16),
                    ) + marker(r),
                ),
                _ => Cell::from(Line::from(v).right_aligned()),
            }
        }))
    });
    let widths = columns.iter().map(|c| match c {
        Column::Name => Constraint::Min(c.width()),
        _ => Constraint::Length(c.width()),
    });
    let selected = ui.index(&rows);
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(
        Table::new(body, widths)
            .header(header)
            .column_spacing(1)
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        table,
        &mut state,
    );

    if let Some(r) = selected.map(|i| rows[i]) {
        f.render_widget(Paragraph::new(detail_lines(r, detail.width)), detail);
    }
    f.render_widget(
        Paragraph::new(footer())
            .style(Style::new().dim())
            .wrap(Wrap { trim: true }),
        keys,
    );
}

/// A Dockerfile line shown in the detail at most this long (an image's history is anyone's),
/// and at least this much room left for the path.
const CREATED_BY_SHOWN: usize = 40;
const PATH_ROOM: usize = 24;

/// The selected row: its slowest copy-ups, one line each, the fixed fields first and the path
/// last, so that no name can pass for another field or another line.
fn detail_lines(r: &Row, width: u16) -> Vec<Line<'static>> {
    let mut out = vec![
        Line::from(fit(
            &format!(
                "{}: {} copy-ups ({} failed), {} copied; slowest:",
                name(r),
                r.total.copy_ups,
                r.total.failed,
                short_bytes(r.total.data_bytes)
            ),
            width,
        ))
        .bold(),
    ];
    if r.slowest.is_empty() {
        out.push(Line::from("  (none kept in detail)"));
    }
    // Time, bytes, process: 34 columns; the layer's number and two spaces: 6.
    let by_room = (width as usize)
        .saturating_sub(34 + 6 + PATH_ROOM)
        .min(CREATED_BY_SHOWN) as u16;
    for c in &r.slowest {
        let layer = match (c.layer, &c.created_by) {
            (Some(l), Some(by)) if by_room > 0 => format!("L{l} {}", fit(&escape(by), by_room)),
            (Some(l), _) => format!("L{l}"),
            _ => "L?".into(),
        };
        let fields = format!(
            "{:>9} {:>7} {:<15} {layer}  ",
            short_ns(c.total_ns),
            c.data_bytes.map_or("-".into(), short_bytes),
            fit(&escape(&c.comm), 15),
        );
        let room = (width as usize).saturating_sub(fields.chars().count());
        out.push(Line::from(fields + &fit(&escape(&c.path), room as u16)));
    }
    out
}

/// `s` cut to `width` columns in its middle ("/var/lib/do…c3b/merged"): both ends of a name
/// or path tell more than its middle.
pub fn fit(s: &str, width: u16) -> String {
    let width = width as usize;
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= width {
        return s.to_string();
    }
    if width < 5 {
        return chars[..width].iter().collect();
    }
    let head = (width - 1) / 3;
    let tail = width - 1 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}
