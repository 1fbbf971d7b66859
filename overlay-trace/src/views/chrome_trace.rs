//! `run --trace FILE.json`: a start timeline in the Chrome Trace Event format (JSON array), which
//! Perfetto's UI and chrome://tracing open. One track (`pid`) per overlay mount, named after its
//! container at the end; one row (`tid`) per thread; a slice per copy-up (name = path) and per
//! mount (`ovl_fill_super`); lookups as counters per 10 ms per track, since they are too many
//! for slices; process starts (`sched_process_exec`) as instants on the track their cgroup
//! works on. Written as events arrive (memory stays bounded), named at the end.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Result;
use serde_json::{Value, json};

use crate::stream::record::MountKey;

use crate::stream::event::Event;

use crate::stream::output::PendingFile;

/// Lookup counters are summed over this many ns.
const COUNTER_NS: u64 = 10_000_000;
/// A counter bucket is written once events this much later have arrived (events reach us
/// slightly out of order across CPUs).
const COUNTER_SETTLE_NS: u64 = 1_000_000_000;
/// Tracks (mounts) named in the file; beyond, mounts share the last track.
const TRACKS_MAX: u32 = 10_000;
/// Thread names kept for the end.
const THREADS_MAX: usize = 100_000;
/// cgroups remembered with their track, and process starts held until their cgroup shows one.
const CGROUPS_MAX: usize = 10_000;
const EXECS_HELD_MAX: usize = 10_000;

pub struct TraceFile {
    file: Option<PendingFile>,
    path: PathBuf,
    pub error: Option<String>,
    tracks: HashMap<MountKey, u32>,
    names: HashMap<u32, String>,
    threads: HashMap<(u32, u32), String>,
    /// track -> bucket start -> (lookups, negative).
    counters: HashMap<u32, BTreeMap<u64, (u64, u64)>>,
    latest_ns: u64,
    /// The `latest_ns` bucket when counters were last flushed.
    flushed_bucket: u64,
    written: u64,
    /// cgroup -> the track its processes last worked on.
    cgroups: HashMap<u64, u32>,
    /// Process starts of cgroups not seen on a track yet (the oldest dropped when full).
    held: std::collections::VecDeque<crate::stream::event::Origin>,
    /// Process starts dropped from `held` unplaced: counted, and said at the end.
    starts_lost: u64,
    /// Mounts beyond `TRACKS_MAX` - 1, which share the last track (not remembered one by one).
    shared: u64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl TraceFile {
    pub fn create(path: &Path) -> Result<Self> {
        // Written by a thread of its own: the drain never waits on the file's filesystem.
        let mut file = PendingFile::create_background(path, "the trace")?;
        let r = file.writer().write_all(b"[\n");
        let mut t = Self {
            file: Some(file),
            path: path.to_path_buf(),
            error: None,
            tracks: HashMap::new(),
            names: HashMap::new(),
            threads: HashMap::new(),
            counters: HashMap::new(),
            latest_ns: 0,
            flushed_bucket: 0,
            written: 0,
            cgroups: HashMap::new(),
            held: std::collections::VecDeque::new(),
            starts_lost: 0,
            shared: 0,
        };
        if let Err(e) = r {
            t.stop(e);
        }
        Ok(t)
    }

    /// The track of `key`: its own up to `TRACKS_MAX` - 1 mounts, the last one shared by all
    /// later mounts, which are not remembered (a tracer that runs for weeks stays bounded).
    fn track(&mut self, key: MountKey) -> u32 {
        if let Some(t) = self.tracks.get(&key) {
            return *t;
        }
        if self.tracks.len() as u32 >= TRACKS_MAX - 1 {
            self.shared += 1;
            return TRACKS_MAX;
        }
        let next = self.tracks.len() as u32 + 1;
        self.tracks.insert(key, next);
        next
    }

    /// Names the track of `key`: its container, or its mount point (which does not replace a
    /// container's name).
    pub fn name(&mut self, key: MountKey, name: String, container: bool) {
        let t = self.track(key);
        if container || !self.names.contains_key(&t) {
            self.names.insert(t, name);
        }
    }

    pub fn write(&mut self, e: &Event, key: MountKey) {
        if self.file.is_none() {
            return;
        }
        let track = self.track(key);
        let o = e.origin();
        if self.threads.len() < THREADS_MAX {
            self.threads
                .entry((track, o.pid))
                .or_insert_with(|| format!("{}[{}]", o.comm, o.pid));
        }
        self.latest_ns = self.latest_ns.max(o.start_ns);
        let room = self.cgroups.len() < CGROUPS_MAX;
        match self.cgroups.get_mut(&o.cgroup_id) {
            Some(t) => *t = track,
            None if room => {
                self.cgroups.insert(o.cgroup_id, track);
                // Process starts that came before their cgroup touched an overlay (only
                // then: once seen, a cgroup's starts are placed as they come).
                if self.held.iter().any(|h| h.cgroup_id == o.cgroup_id) {
                    let (now, later): (std::collections::VecDeque<_>, _) =
                        std::mem::take(&mut self.held)
                            .into_iter()
                            .partition(|h| h.cgroup_id == o.cgroup_id);
                    self.held = later;
                    for h in now {
                        self.exec(&h);
                    }
                }
            }
            None => {}
        }
        let slice = match e {
            Event::CopyUp(c) => Some(json!({
                "name": c.path, "cat": if c.is_wait() { "copy_up_wait" } else { "copy_up" },
                "ph": "X", "ts": us(o.start_ns), "dur": us(c.duration_ns),
                "pid": track, "tid": o.pid,
                "args": {
                    "bytes": c.data.map(|d| d.bytes),
                    "data_copy_us": c.data.map(|d| us(d.ns)),
                    "size": c.size, "ret": c.ret, "waited": c.is_wait(), "layer": c.layer,
                },
            })),
            Event::Rename(r) => Some(json!({
                "name": format!("rename refused (EXDEV): {}", r.path), "cat": "rename_exdev",
                "ph": "i", "s": "t", "ts": us(o.start_ns), "pid": track, "tid": o.pid,
            })),
            Event::Mount(m) => Some(json!({
                "name": "mount (ovl_fill_super)", "cat": "mount",
                "ph": "X", "ts": us(o.start_ns), "dur": us(m.duration_ns),
                "pid": track, "tid": o.pid, "args": { "ret": m.ret },
            })),
            Event::Lookup(l) => {
                let b = self
                    .counters
                    .entry(track)
                    .or_default()
                    .entry(o.start_ns / COUNTER_NS * COUNTER_NS)
                    .or_default();
                b.0 += 1;
                if l.outcome == crate::stream::event::LookupOutcome::Negative {
                    b.1 += 1;
                }
                None
            }
        };
        if let Some(s) = slice {
            self.emit(&s);
        }
        // Buckets can only have become old enough when time reached a new bucket.
        if self.latest_ns / COUNTER_NS != self.flushed_bucket {
            self.flushed_bucket = self.latest_ns / COUNTER_NS;
            self.flush_counters(false);
        }
    }

    /// A process start: an instant on the track its cgroup works on, or held until it does.
    pub fn exec(&mut self, o: &crate::stream::event::Origin) {
        let Some(&track) = self.cgroups.get(&o.cgroup_id) else {
            if self.held.len() >= EXECS_HELD_MAX {
                self.held.pop_front();
                self.starts_lost += 1;
            }
            self.held.push_back(o.clone());
            return;
        };
        if self.threads.len() < THREADS_MAX {
            self.threads
                .entry((track, o.pid))
                .or_insert_with(|| format!("{}[{}]", o.comm, o.pid));
        }
        self.emit(&json!({
            "name": format!("exec {}", o.comm), "cat": "exec", "ph": "i", "s": "t",
            "ts": us(o.start_ns), "pid": track, "tid": o.pid, "args": { "tgid": o.tgid },
        }));
    }

    /// Writes the counter buckets old enough not to change any more (all of them at the end).
    fn flush_counters(&mut self, all: bool) {
        let before = self.latest_ns.saturating_sub(COUNTER_SETTLE_NS);
        let mut out = Vec::new();
        for (track, buckets) in self.counters.iter_mut() {
            while let Some((&start, _)) = buckets.first_key_value() {
                if !all && start >= before {
                    break;
                }
                let (_, (n, neg)) = buckets.pop_first().expect("a first bucket");
                out.push(json!({
                    "name": "lookups per 10 ms", "ph": "C", "ts": us(start),
                    "pid": *track, "tid": 0, "args": { "lookups": n, "negative": neg },
                }));
            }
        }
        self.counters.retain(|_, b| !b.is_empty());
        for v in out {
            self.emit(&v);
        }
    }

    fn emit(&mut self, v: &Value) {
        let Some(f) = self.file.as_mut() else { return };
        let w = f.writer();
        let r = (|| {
            if self.written > 0 {
                w.write_all(b",\n")?;
            }
            serde_json::to_writer(&mut *w, v).map_err(std::io::Error::from)
        })();
        match r {
            Ok(()) => self.written += 1,
            Err(e) => self.stop(e),
        }
    }

    fn stop(&mut self, e: std::io::Error) {
        self.error.get_or_insert(format!(
            "writing {} failed: {e}; the timeline after that point is missing",
            self.path.display()
        ));
        self.file = None;
    }

    /// Writes the last counters and the track and thread names, and puts the file in place.
    /// Returns why it is incomplete, if it is.
    pub fn finish(mut self) -> Option<String> {
        self.flush_counters(true);
        let mut names: Vec<(u32, String)> = self.names.drain().collect();
        let named: std::collections::HashSet<u32> = names.iter().map(|(t, _)| *t).collect();
        for (key, t) in &self.tracks {
            if !named.contains(t) {
                names.push((
                    *t,
                    format!("overlay {} (mount {})", key.dev, key.generation),
                ));
            }
        }
        if self.shared > 0 {
            names.push((TRACKS_MAX, "later mounts".into()));
        }
        names.sort();
        names.dedup_by_key(|(t, _)| *t);
        for (t, n) in names {
            let n = if t == TRACKS_MAX {
                format!("{n} and later mounts")
            } else {
                n
            };
            self.emit(&json!({
                "name": "process_name", "ph": "M", "ts": 0, "pid": t, "tid": 0,
                "args": { "name": n },
            }));
        }
        let threads: Vec<((u32, u32), String)> = self.threads.drain().collect();
        for ((t, tid), n) in threads {
            self.emit(&json!({
                "name": "thread_name", "ph": "M", "ts": 0, "pid": t, "tid": tid,
                "args": { "name": n },
            }));
        }
        if self.starts_lost > 0 {
            self.error.get_or_insert(format!(
                "{} process starts left out of {} (more than {EXECS_HELD_MAX} waited for their \
                 cgroup to touch an overlay)",
                self.starts_lost,
                self.path.display()
            ));
        }
        if let Some(mut f) = self.file.take() {
            let r = f.writer().write_all(b"\n]\n");
            match r.map_err(anyhow::Error::from).and_then(|()| f.commit()) {
                Ok(()) => {}
                Err(e) => {
                    self.error.get_or_insert(format!("{e:#}"));
                }
            }
        }
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::event::{Dev, raw};

    #[test]
    fn copy_ups_are_slices_lookups_counters_and_tracks_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut t = TraceFile::create(&path).unwrap();
        let key = MountKey {
            dev: Dev { major: 0, minor: 7 },
            generation: 1,
        };
        for rec in [
            raw::mount(7, 3_000_000),
            raw::copy_up(7, "etc/a", 10, 10, 2_000_000),
            raw::lookup(7, "x", overlay_trace_common::LOOKUP_NEGATIVE, 1, 500),
            raw::lookup(7, "y", overlay_trace_common::LOOKUP_LOWER, 1, 500),
        ] {
            t.write(&Event::try_from(&rec[..]).unwrap(), key);
        }
        // A process start before its cgroup touched the overlay is held, then placed.
        let mut o = Event::try_from(&raw::mount(7, 1)[..])
            .unwrap()
            .origin()
            .clone();
        o.comm = "entrypoint".into();
        t.exec(&o);
        t.write(&Event::try_from(&raw::mount(7, 1)[..]).unwrap(), key);
        t.name(key, "web (docker)".into(), true);
        t.name(key, "/var/lib/docker/overlay2/x/merged".into(), false);
        assert!(t.finish().is_none());
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let evs = v.as_array().unwrap();
        for e in evs {
            for k in ["ph", "ts", "pid", "tid"] {
                assert!(!e[k].is_null(), "{k} in {e}");
            }
        }
        let copy = evs.iter().find(|e| e["cat"] == "copy_up").unwrap();
        assert_eq!(copy["name"], "/etc/a");
        assert_eq!(copy["dur"], 2000.0);
        assert_eq!(copy["args"]["bytes"], 10);
        let c = evs.iter().find(|e| e["ph"] == "C").unwrap();
        assert_eq!(c["args"]["lookups"], 2);
        assert_eq!(c["args"]["negative"], 1);
        assert!(
            evs.iter()
                .any(|e| e["name"] == "process_name" && e["args"]["name"] == "web (docker)")
        );
        assert!(evs.iter().any(|e| e["name"] == "thread_name"));
        assert!(
            evs.iter().any(|e| e["ph"] == "i"
                && e["name"] == "exec entrypoint"
                && e["pid"] == copy["pid"])
        );
    }
}
