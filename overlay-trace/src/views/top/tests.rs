use ratatui::{Terminal, backend::TestBackend};

use super::{
    screen::{Key, Ui, draw},
    *,
};
use crate::model::window::{RowId, Slow, Totals};

fn row(name: &str, copy_ups: u64, bytes: u64, delta_bytes: u64) -> Row {
    Row {
        id: RowId::Container {
            id: name.into(),
            role: None,
        },
        name: name.into(),
        layers: Some(3),
        total: Totals {
            copy_ups,
            failed: 0,
            data_bytes: bytes,
            lookups: 10,
            negative: 2,
        },
        delta: Totals {
            copy_ups: 1,
            failed: 0,
            data_bytes: delta_bytes,
            lookups: 4,
            negative: 1,
        },
        p99_ns: Some(1_500_000),
        state: crate::model::window::RowState::Live,
        slowest: vec![Slow {
            path: format!("/{name}/big.log"),
            size: 64 << 20,
            data_bytes: Some(64 << 20),
            total_ns: 90_000_000,
            comm: "sh".into(),
            layer: Some(2),
            created_by: Some("RUN dd if=/dev/zero of=/big.log".into()),
        }],
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        traced_secs: 12.0,
        interval_secs: 1.0,
        rows: vec![
            row("many", 40, 1 << 20, 0),
            row("heavy", 2, 64 << 20, 64 << 20),
            row("idle", 1, 0, 0),
        ],
        ..Default::default()
    }
}

fn screen(s: &Snapshot, ui: &Ui, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, s, ui)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect())
        .collect()
}

/// The line of the table holding `name`.
fn line_of(lines: &[String], name: &str) -> usize {
    lines
        .iter()
        .position(|l| l.trim_end().ends_with(name))
        .unwrap_or_else(|| panic!("no row {name}:\n{}", lines.join("\n")))
}

#[test]
fn rows_are_sorted_by_the_chosen_column_and_keys_change_it() {
    let s = snapshot();
    let mut ui = Ui::new(Column::CopyUps);
    let lines = screen(&s, &ui, 100, 30);
    assert!(line_of(&lines, "many") < line_of(&lines, "heavy"));
    assert!(lines.iter().any(|l| l.contains("COPY-UPS▼")), "{lines:?}");
    ui.key(Key::Char('B'), &s);
    let lines = screen(&s, &ui, 100, 30);
    assert!(line_of(&lines, "heavy") < line_of(&lines, "many"));
    assert!(line_of(&lines, "many") < line_of(&lines, "idle"));
    ui.key(Key::Char('r'), &s);
    let lines = screen(&s, &ui, 100, 30);
    assert!(
        line_of(&lines, "idle") < line_of(&lines, "heavy"),
        "reversed"
    );
    assert_eq!(ui.key(Key::Char('q'), &s), screen::Action::Quit);
    assert_eq!(ui.key(Key::CtrlC, &s), screen::Action::Quit);
    assert_eq!(ui.key(Key::Char('x'), &s), screen::Action::Nothing);
}

#[test]
fn the_detail_pane_shows_the_selected_rows_slowest_copy_ups() {
    let s = snapshot();
    let mut ui = Ui::new(Column::Bytes);
    let text = screen(&s, &ui, 100, 30).join("\n");
    assert!(
        text.contains("/heavy/big.log"),
        "the first row is selected:\n{text}"
    );
    assert!(
        text.contains("L2 RUN dd if=/dev/zero of=/big.log  /heavy/big.log"),
        "{text}"
    );
    ui.key(Key::Down, &s);
    let text = screen(&s, &ui, 100, 30).join("\n");
    assert!(
        text.contains("/many/big.log") && !text.contains("/heavy/big.log"),
        "{text}"
    );
    // The selection follows its row when the order changes.
    ui.key(Key::Char('C'), &s);
    let lines = screen(&s, &ui, 100, 30);
    assert!(lines.join("\n").contains("/many/big.log"));
}

#[test]
fn an_80_by_24_terminal_shows_the_main_columns_names_and_the_keys() {
    let mut s = snapshot();
    s.rows[0].name = "some-service (docker)".into();
    let ui = Ui::new(Column::CopyUps);
    let lines = screen(&s, &ui, 80, 24);
    let text = lines.join("\n");
    for c in COLUMNS
        .into_iter()
        .filter(|c| !c.optional() && *c != Column::Name)
    {
        assert!(text.contains(c.header()), "{} missing:\n{text}", c.header());
    }
    assert!(text.contains("CONTAINER"), "{text}");
    for c in COLUMNS {
        assert!(
            text.contains(&format!(
                "{} {}",
                c.key(),
                c.header().split(' ').next().unwrap()
            )),
            "the key of {c:?}:\n{text}"
        );
    }
    assert!(
        text.contains("some-service (docker)"),
        "names keep room:\n{text}"
    );
    for name in ["some-service (docker)", "heavy", "idle"] {
        line_of(&lines, name);
    }
    assert!(text.contains("q quit"), "{text}");
    assert!(text.contains("lost 0"), "{text}");
    // Smaller still: nothing panics.
    screen(&s, &ui, 40, 10);
    screen(&Snapshot::default(), &ui, 80, 24);
}

#[test]
fn names_from_the_traced_system_cannot_drive_the_terminal() {
    let mut s = snapshot();
    s.rows[0].name = "evil\x1b[2J\nname\u{202e}".into();
    let text = lines::block(&s, Column::CopyUps);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("evil\\033[2J\\nname\\u{202e}"), "{text}");
    s.warnings = vec!["docker said \x1b]0;owned\x07".into()];
    let screen = screen(&s, &Ui::new(Column::CopyUps), 100, 30).join("\n");
    assert!(screen.contains("evil\\033[2J\\nname"), "{screen}");
    assert!(
        screen.contains("warning: docker said \\033]0;owned\\007"),
        "{screen}"
    );
}

#[test]
fn piped_blocks_carry_exact_totals_and_losses() {
    let mut s = snapshot();
    s.counts.dropped_copy_up = 3;
    s.last = true;
    let text = lines::block(&s, Column::Bytes);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("--- end: 12.0 s traced; lost 3"),
        "{text}"
    );
    assert!(lines[1].trim_start().starts_with("CU/s"), "{text}");
    let heavy: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(heavy.last(), Some(&"heavy"));
    assert_eq!(heavy[7], (64u64 << 20).to_string(), "{text}");
    assert_eq!(heavy[6], "2");
}

#[test]
fn long_names_and_lines_are_cut_in_their_middle_to_one_line_each() {
    assert_eq!(
        screen::fit("/var/lib/docker/overlay2/abcdef/merged", 16),
        "/var/…def/merged"
    );
    assert_eq!(screen::fit("short", 16), "short");
    assert_eq!(screen::fit("abcdef", 3), "abc");
    let mut s = snapshot();
    s.rows[2].name = format!(
        "/var/lib/docker/overlay2/{}/merged [0:38 #2]",
        "f".repeat(64)
    );
    s.rows[2].state = crate::model::window::RowState::Gone;
    let text = screen(&s, &Ui::new(Column::Bytes), 80, 24).join("\n");
    assert!(
        text.contains("… [0:38 #2] [gone]"),
        "the marker whole:\n{text}"
    );
    s.rows[1].slowest[0].path = format!("/{}/end", "x".repeat(300));
    s.rows[1].slowest[0].created_by = Some(format!("RUN {}", "y".repeat(1000)));
    let lines = screen(&s, &Ui::new(Column::Bytes), 80, 24);
    let entry = lines
        .iter()
        .find(|l| l.contains("90.00ms"))
        .unwrap_or_else(|| panic!("{}", lines.join("\n")));
    assert!(entry.trim_end().ends_with("/end"), "{entry}");
    assert!(entry.contains("L2 RUN y…y"), "{entry}");
    assert!(
        entry.contains("/xxxxxxx…x"),
        "the path keeps its room: {entry}"
    );
}
