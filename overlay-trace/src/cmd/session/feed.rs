//! What the drain's thread does with each record and each naming answer: the fold, the
//! timeline, and what the fold asks of the naming side. Nothing here waits.

use crate::{
    enrich::{answer::Named, naming::Naming},
    model::fold::Collector,
    stream::event::decode_exec,
    views::chrome_trace::TraceFile,
};

/// An answer of the naming side: the timeline's track names, then the fold. A warning for the
/// person, if the answer was one.
pub(super) fn answer(
    fold: &mut Collector,
    trace: &mut Option<TraceFile>,
    n: Named,
) -> Option<String> {
    if let Some(t) = trace.as_mut() {
        match &n {
            Named::Container { key, container } => t.name(*key, container.track_name(), true),
            Named::Mount { key, mount } => t.name(*key, mount.mount_point.clone(), false),
            _ => {}
        }
    }
    fold.apply(n)
}

/// What the fold asks of the naming side after an event or an answer.
pub(super) fn hand_over(fold: &mut Collector, naming: &Naming) {
    for (key, path, tgid) in fold.copied_unnamed.drain(..) {
        naming.copied_up(key, path, tgid);
    }
    for ask in fold.layer_asks.drain(..) {
        naming.layers.ask(ask);
    }
}

/// One record through the fold, the timeline and to the naming side.
pub(super) fn take(
    fold: &mut Collector,
    naming: &Naming,
    trace: &mut Option<TraceFile>,
    record: &[u8],
) {
    if let Some(o) = decode_exec(record) {
        if let Some(t) = trace.as_mut() {
            t.exec(&o);
        }
        return;
    }
    let Some(taken) = fold.take_and(record, |event, key| {
        if let Some(t) = trace.as_mut() {
            t.write(event, key);
        }
    }) else {
        return;
    };
    if let Some(m) = taken.new_mount {
        naming.name(m);
    }
    hand_over(fold, naming);
}
