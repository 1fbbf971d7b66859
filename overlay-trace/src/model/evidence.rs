//! What the findings (`views::findings`) are made of, gathered per mount as events arrive: the
//! copy-ups that copied data for a change of metadata alone, the big files copied up to be
//! written, and the negative lookups that consulted many layers. Kept for mounts in detail only,
//! like the by-layer table (a layer means nothing across folded mounts).

use crate::stream::event::{CopyUp, Lookup, LookupOutcome, Rename};

/// A copy-up that copied at least this much data to be written is a big file (`big-file-copy`).
pub const BIG_FILE_BYTES: u64 = 8 << 20;
/// A negative lookup that consulted at least this many layers is a deep one (`deep-layers`).
pub const DEEP_LOOKUP_LAYERS: u32 = 10;
/// Items kept per tally, most bytes (then most time) first.
pub const ITEMS_MAX: usize = 5;

/// One copy-up named in a finding's evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub path: String,
    pub bytes: u64,
    pub total_ns: u64,
    pub comm: String,
    pub tgid: u32,
    pub syscall: Option<String>,
    /// Source layer (1: topmost lowerdir), once known.
    pub layer: Option<u32>,
    /// What made that layer (a Dockerfile line), written in when its mount is folded into a
    /// group (which keeps no layers).
    pub created_by: Option<String>,
}

/// Copy-ups of one kind: how many, what they cost, the biggest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
    pub total_ns: u64,
    pub data_ns: u64,
    pub items: Vec<Item>,
}

impl Tally {
    fn add(&mut self, c: &CopyUp, seq: u64) {
        let (bytes, data_ns) = c.data.map_or((0, 0), |d| (d.bytes, d.ns));
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.total_ns = self.total_ns.saturating_add(c.duration_ns);
        self.data_ns = self.data_ns.saturating_add(data_ns);
        let item = Item {
            seq,
            path: c.path.clone(),
            bytes,
            total_ns: c.duration_ns,
            comm: c.origin.comm.clone(),
            tgid: c.origin.tgid,
            syscall: c.syscall.clone(),
            layer: c.layer,
            created_by: None,
        };
        self.keep(item);
    }

    /// Keeps `item` if it is among the `ITEMS_MAX` heaviest.
    fn keep(&mut self, item: Item) {
        let rank = |i: &Item| {
            (
                std::cmp::Reverse(i.bytes),
                std::cmp::Reverse(i.total_ns),
                i.seq,
            )
        };
        let at = self.items.partition_point(|i| rank(i) < rank(&item));
        if at < ITEMS_MAX {
            self.items.insert(at, item);
            self.items.truncate(ITEMS_MAX);
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.count += o.count;
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
        self.data_ns = self.data_ns.saturating_add(o.data_ns);
        for i in &o.items {
            self.keep(i.clone());
        }
    }
}

/// Negative lookups that consulted `DEEP_LOOKUP_LAYERS` layers or more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeepLookups {
    pub count: u64,
    pub total_ns: u64,
    /// Layers consulted, summed over them.
    pub layers: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Files whose data was copied for a change of metadata alone (chmod, chown, utimes, an
    /// xattr, a rename or a link): `metacopy=on` would copy none of it.
    pub metadata_copy: Tally,
    /// Files of `BIG_FILE_BYTES` or more copied up to be written.
    pub big_files: Tally,
    pub deep_lookups: DeepLookups,
    /// Directory renames overlayfs refused (-EXDEV): the caller copied each tree itself.
    pub refused_renames: Tally,
    /// Copy-ups that synced the copied file, and the syncs' time.
    pub synced: Tally,
    pub sync_ns: u64,
}

impl Evidence {
    pub(super) fn add_copy_up(&mut self, c: &CopyUp, seq: u64) {
        if c.is_wait() || c.ret != 0 {
            return;
        }
        if c.sync_ns > 0 {
            self.synced.add(c, seq);
            self.sync_ns = self.sync_ns.saturating_add(c.sync_ns);
        }
        let bytes = c.data.map_or(0, |d| d.bytes);
        if bytes == 0 {
            return;
        }
        // Only copy-ups whose cause is known: a big file chowned is not a big file written.
        match c.trigger() {
            Some(t) if t.metadata_only() => self.metadata_copy.add(c, seq),
            Some(_) if bytes >= BIG_FILE_BYTES => self.big_files.add(c, seq),
            _ => {}
        }
    }

    pub(super) fn add_lookup(&mut self, l: &Lookup) {
        if l.outcome == LookupOutcome::Negative && l.layers >= DEEP_LOOKUP_LAYERS {
            let d = &mut self.deep_lookups;
            d.count += 1;
            d.total_ns = d.total_ns.saturating_add(l.duration_ns);
            d.layers = d.layers.saturating_add(u64::from(l.layers));
        }
    }

    pub(super) fn add_rename(&mut self, r: &Rename, seq: u64) {
        let t = &mut self.refused_renames;
        t.count += 1;
        let item = Item {
            seq,
            path: r.path.clone(),
            bytes: 0,
            total_ns: 0,
            comm: r.origin.comm.clone(),
            tgid: r.origin.tgid,
            syscall: None,
            layer: None,
            created_by: None,
        };
        if t.items.len() < ITEMS_MAX {
            t.items.push(item);
        }
    }

    /// `o` (a mount being folded into a group; `created_by` names its layers) added to these.
    pub(super) fn merge(&mut self, o: &Evidence, created_by: impl Fn(u32) -> Option<String>) {
        let named = |t: &Tally| {
            let mut t = t.clone();
            for i in &mut t.items {
                i.created_by = i
                    .created_by
                    .take()
                    .or_else(|| i.layer.and_then(&created_by));
            }
            t
        };
        self.metadata_copy.merge(&named(&o.metadata_copy));
        self.big_files.merge(&named(&o.big_files));
        self.refused_renames.merge(&named(&o.refused_renames));
        self.synced.merge(&named(&o.synced));
        self.sync_ns = self.sync_ns.saturating_add(o.sync_ns);
        let (d, od) = (&mut self.deep_lookups, &o.deep_lookups);
        d.count += od.count;
        d.total_ns = d.total_ns.saturating_add(od.total_ns);
        d.layers = d.layers.saturating_add(od.layers);
    }

    /// Copy-up or refused rename `seq` came from lower layer `layer` (learned after it was
    /// added; arrival numbers are unique across kinds of event).
    pub(super) fn set_layer(&mut self, seq: u64, layer: u32) {
        for t in [
            &mut self.metadata_copy,
            &mut self.big_files,
            &mut self.synced,
            &mut self.refused_renames,
        ] {
            for i in t.items.iter_mut().filter(|i| i.seq == seq) {
                i.layer = Some(layer);
            }
        }
    }
}
