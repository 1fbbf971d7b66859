//! A recording's copy-ups turned into a scenario: one object per copy-up, in its layer, with the
//! step its trigger calls for; the scenario parses as the bench reads it.

use super::*;
use crate::stream::event::raw;

const OPENAT: u32 = 257;
const FCHOWNAT: u32 = 260;
const RENAMEAT2: u32 = 316;
const UNLINKAT: u32 = 263;
const MKDIR: u32 = 83;

fn copy_up(path: &str, size: i64, data: i64, nr: u32, flags: u32, mode: u32) -> CopyUp {
    let mut rec = raw::asked_by(raw::copy_up(1, path, size, data, 10), nr, flags);
    let at = std::mem::offset_of!(overlay_trace_common::CopyUpEvent, mode);
    rec[at..at + 4].copy_from_slice(&mode.to_ne_bytes());
    match Event::try_from(rec.as_slice()).unwrap() {
        Event::CopyUp(c) => c,
        _ => unreachable!(),
    }
}

#[test]
fn each_copy_up_becomes_an_object_and_a_step() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let file = 0o100644;
    let dir = 0o040755;
    let r = Recorded {
        mount: None,
        container: None,
        left_out: 0,
        copy_ups: vec![
            (copy_up("app", 0, -1, FCHOWNAT, 0, dir), Some(2)),
            (copy_up("app/f", 300, 300, FCHOWNAT, 0, file), Some(2)),
            (
                copy_up("var/log/big.log", 9 << 20, 9 << 20, OPENAT, 0o2001, file),
                Some(1),
            ),
            (copy_up("etc/conf", 7, -1, OPENAT, 0o1001, file), None),
            (copy_up("srv/a", 5, 5, RENAMEAT2, 0, file), Some(70)),
            (copy_up("tmp", 0, -1, UNLINKAT, 0, dir), Some(1)),
            // mv's fallback: /opt for a new name in it, then /opt/old to remove its files.
            (copy_up("opt", 0, -1, MKDIR, 0, dir), Some(1)),
            (copy_up("opt/old", 0, -1, UNLINKAT, 0, dir), Some(1)),
        ],
    };
    let (s, folded) = derive(&r, "test");
    assert_eq!((s.layers, folded), (64, 6));
    let text = toml::to_string(&s).unwrap();
    let back = Scenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(back, s);
    let ops: Vec<(Op, &str)> = s.steps.iter().map(|st| (st.op, st.path.as_str())).collect();
    assert_eq!(
        ops,
        [
            // /app is copied up by the chown of /app/f: no step of its own.
            (Op::Chown, "app/f"),
            (Op::Append, "var/log/big.log"),
            (Op::Truncate, "etc/conf"),
            (Op::Rename, "srv/a"),
            (Op::Remove, "tmp/.ot-gone"),
            // /opt's next copy-up is beneath it but asked for by another call: its own step.
            (Op::Mkdir, "opt/.ot-new"),
            (Op::Remove, "opt/old/.ot-gone"),
        ]
    );
    let file_of = |p: &str| s.files.iter().find(|f| f.path == p).unwrap();
    assert_eq!((file_of("app").kind, file_of("app").layer), (Kind::Dir, 1));
    assert_eq!((file_of("app/f").size, file_of("app/f").layer), (300, 1));
    assert_eq!(file_of("var/log/big.log").size, 9 << 20);
    // No data copied (O_TRUNC): the recorded size; unknown layer: the bottom one.
    assert_eq!(
        (file_of("etc/conf").size, file_of("etc/conf").layer),
        (7, 63)
    );
    // Layer 70 of a deeper mount: folded into the last.
    assert_eq!(file_of("srv/a").layer, 63);
    assert_eq!(s.steps[3].to.as_deref(), Some("srv/.ot-moved-4"));
}
