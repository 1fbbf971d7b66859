//! The `--trace` writer over a long run without a kernel: 100,000 mount generations, each with a
//! copy-up, a lookup and a process start whose cgroup never touches an overlay. Its memory must
//! stop growing once its tables are full, and the starts it had to leave out are said. Its own
//! test binary, so the process's RSS is this run's alone.

mod common;
use common::vm_rss_kib;

use overlay_trace::stream::event::{Dev, Event, Origin, raw};
use overlay_trace::stream::record::MountKey;
use overlay_trace::views::chrome_trace::TraceFile;
use overlay_trace_common::LOOKUP_LOWER;

fn origin_mut(e: &mut Event) -> &mut Origin {
    match e {
        Event::CopyUp(c) => &mut c.origin,
        Event::Lookup(l) => &mut l.origin,
        Event::Mount(m) => &mut m.origin,
        Event::Rename(r) => &mut r.origin,
    }
}

#[test]
fn a_hundred_thousand_mount_generations_keep_the_trace_writer_flat() {
    const GENERATIONS: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    let mut t = TraceFile::create(&path).unwrap();
    let mut at_10k = 0;
    for g in 0..GENERATIONS {
        let dev = 100 + g % 64;
        let key = MountKey {
            dev: Dev::from_kernel(dev),
            generation: g,
        };
        let ns = 1_000_000 * u64::from(g);
        for rec in [
            raw::copy_up(dev, "usr/lib/libc.so", 4096, 4096, 10_000),
            raw::lookup(dev, "bin", LOOKUP_LOWER, 1, 1_000),
        ] {
            let mut e = Event::try_from(&rec[..]).unwrap();
            origin_mut(&mut e).start_ns = ns;
            origin_mut(&mut e).cgroup_id = u64::from(g);
            t.write(&e, key);
        }
        t.name(key, format!("/var/lib/docker/overlay2/{g:x}/merged"), false);
        // A process start in a cgroup that never touches an overlay: held, then dropped.
        let mut start = Event::try_from(&raw::mount(dev, 1)[..])
            .unwrap()
            .origin()
            .clone();
        start.cgroup_id = 1 << 40 | u64::from(g);
        t.exec(&start);
        if g + 1 == 10_000 {
            at_10k = vm_rss_kib();
        }
    }
    let at_end = vm_rss_kib();
    println!("trace writer: RSS {at_10k} KiB after 10,000 generations, {at_end} KiB after 100,000");
    assert!(
        at_end <= at_10k + 2 * 1024,
        "RSS grew from {at_10k} to {at_end} KiB"
    );
    let said = t.finish().expect("the starts left out are said");
    assert!(said.contains("process starts left out"), "{said}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // A slice per copy-up (lookups are counters).
    assert!(v.as_array().unwrap().len() as u32 >= GENERATIONS);
}
