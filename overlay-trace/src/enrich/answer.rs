//! What the naming side answers the drain, and what it is asked about: the vocabulary between
//! `naming` (and `source_layers`) and the fold.

use std::sync::Arc;

use crate::stream::{
    names::{Container, LayerInfo, OverlayMount},
    record::{CopyUpRef, MountKey},
};

/// A mount seen for the first time: the naming thread's `Request::Name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMount {
    pub key: MountKey,
    /// The process that touched it.
    pub tgid: u32,
    /// A moment it was alive (`MountStats::alive_ns`).
    pub alive_ns: u64,
}

pub enum Named {
    Mount {
        key: MountKey,
        mount: OverlayMount,
    },
    Container {
        key: MountKey,
        container: Container,
    },
    /// The mount's lower layers named after image layers (Docker).
    Layers {
        key: MountKey,
        layers: Vec<LayerInfo>,
    },
    /// No runtime claims this mount, or it was never found in any mountinfo (asked again only
    /// in the final pass of a run).
    Unclaimed {
        key: MountKey,
    },
    /// No longer mounted (or its device number now belongs to another mount).
    Gone {
        key: MountKey,
    },
    /// The source layer (1 = topmost lowerdir) of a copy-up.
    SourceLayer {
        key: MountKey,
        copy_up: CopyUpRef,
        layer: u32,
    },
    /// The source layer of a refused rename's directory (`seq`: the rename's arrival number).
    RenameLayer {
        key: MountKey,
        seq: u64,
        layer: u32,
    },
    Warning(String),
    Done,
}

/// The root a mount's paths are resolved from, held open: ours, or that of the process in whose
/// mountinfo it was found (opened now, while that process lives; the mounter is often gone a
/// moment later, its namespace kept by others).
pub type MountRoot = Arc<std::os::fd::OwnedFd>;
