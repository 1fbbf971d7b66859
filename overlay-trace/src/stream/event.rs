//! Decoding of the raw ring buffer records into owned, validated events. No transmute: each
//! record is length-checked and read with `read_unaligned` into its `#[repr(C)]` type.

use std::mem::size_of;

use overlay_trace_common::{
    COMM_LEN, COPY_UP_WAITED, CopyUpEvent, EVENT_COPY_UP, EVENT_EXEC, EVENT_LOOKUP, EVENT_MOUNT,
    EVENT_RENAME, EventHeader, LOOKUP_ERROR, LOOKUP_LOWER, LOOKUP_NAME_LEN, LOOKUP_NEGATIVE,
    LOOKUP_POSITIVE_UNKNOWN_LAYER, LOOKUP_UPPER, LookupEvent, MountEvent, NO_DATA_COPY,
    PATH_BUF_LEN, PATH_INCOMPLETE, PATH_TRUNCATED, RenameEvent,
};
use serde::{Deserialize, Serialize};

/// Who and where, common to all events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// Overlay superblock device as userspace writes it (major:minor in `st_dev` encoding).
    pub dev: Dev,
    pub start_ns: u64,
}

/// A device number split as mountinfo prints it; serialized as "major:minor".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

impl Dev {
    /// The kernel's internal `dev_t` is `major << 20 | minor`.
    pub fn from_kernel(dev: u32) -> Self {
        Self {
            major: dev >> 20,
            minor: dev & ((1 << 20) - 1),
        }
    }
}

impl Dev {
    pub fn to_kernel(self) -> u32 {
        (self.major << 20) | self.minor
    }
}

impl std::str::FromStr for Dev {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("device {s:?} is not major:minor"))?;
        let num = |x: &str| {
            x.parse::<u32>()
                .map_err(|_| format!("device {s:?} is not major:minor"))
        };
        Ok(Self {
            major: num(a)?,
            minor: num(b)?,
        })
    }
}

impl Serialize for Dev {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dev {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyUp {
    #[serde(flatten)]
    pub origin: Origin,
    pub duration_ns: u64,
    /// Bytes the data copy was asked for and the time it took; `None` when no data was copied
    /// (directories, empty files, O_TRUNC opens, metadata-only copy-ups).
    pub data: Option<DataCopy>,
    pub size: i64,
    pub open_flags: u32,
    pub mode: u32,
    pub ret: i32,
    /// Time spent syncing the copied file (inside the data copy's time), when measured.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sync_ns: u64,
    /// The system call that asked for it (`openat`, `fchownat`...), when the kernel side could
    /// read it (see `stream::trigger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// Path inside the overlay, starting with '/'.
    pub path: String,
    /// The path's exact bytes in hex, when it is not valid UTF-8 (`path` then shows U+FFFD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// The path is cut short: its start is missing (too deep, too long, or a failed read).
    pub path_truncated: bool,
    /// This call copied nothing: it waited for another thread's copy-up of the same object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waited: bool,
    /// The lower layer the object came from: 1 for the mount's topmost lowerdir (found in
    /// userspace once the mount's layers are known; see `layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What one `ovl_copy_up_one` call did. The one definition every number uses (the report, the
/// replay, /metrics, the timelines): a copy-up is a call that was not a wait, whether it
/// succeeded or failed; a call that returned an error is a failure even if it never reached
/// `ovl_copy_up_end` (it failed before it could copy, e.g. -EOVERFLOW for an unmapped owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyUpKind {
    Copied,
    Failed,
    /// Returned 0 without copying: another thread copied the object meanwhile.
    Waited,
}

impl CopyUp {
    pub fn kind(&self) -> CopyUpKind {
        if self.ret != 0 {
            CopyUpKind::Failed
        } else if self.waited {
            CopyUpKind::Waited
        } else {
            CopyUpKind::Copied
        }
    }

    /// What asked for it, when known.
    pub fn trigger(&self) -> Option<crate::stream::trigger::Trigger> {
        self.syscall
            .as_deref()
            .map(crate::stream::trigger::Trigger::of_syscall)
    }

    /// A wait copied nothing and is not a copy-up.
    pub fn is_wait(&self) -> bool {
        self.kind() == CopyUpKind::Waited
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCopy {
    pub bytes: u64,
    pub ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupOutcome {
    Negative,
    Upper,
    LowerOnly,
    /// Positive, but the layer is unknown (no `ovl_inode` in the kernel's BTF).
    Positive,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    #[serde(flatten)]
    pub origin: Origin,
    pub duration_ns: u64,
    pub outcome: LookupOutcome,
    pub layers: u32,
    pub name: String,
    /// The name's exact bytes in hex, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
}

/// An overlay mounted (`ovl_fill_super`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(flatten)]
    pub origin: Origin,
    pub duration_ns: u64,
    pub ret: i32,
}

/// A rename overlayfs refused with -EXDEV (a directory in a lower layer, no `redirect_dir`):
/// the caller copies the tree itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    #[serde(flatten)]
    pub origin: Origin,
    pub ret: i32,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    pub path_truncated: bool,
}

/// One line of `--events FILE.ndjson`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    CopyUp(CopyUp),
    Lookup(Lookup),
    Mount(Mount),
    Rename(Rename),
}

impl Event {
    pub fn origin(&self) -> &Origin {
        match self {
            Event::CopyUp(c) => &c.origin,
            Event::Lookup(l) => &l.origin,
            Event::Mount(m) => &m.origin,
            Event::Rename(r) => &r.origin,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { kind: u32, len: usize, need: usize },
    UnknownKind(u32),
    BadOutcome(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort { kind, len, need } => {
                write!(f, "event kind {kind}: {len} bytes, need {need}")
            }
            Self::UnknownKind(k) => write!(f, "unknown event kind {k}"),
            Self::BadOutcome(o) => write!(f, "unknown lookup outcome {o}"),
        }
    }
}

fn read<T: Copy>(buf: &[u8], kind: u32) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::TooShort {
            kind,
            len: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: length checked; T is a repr(C) type of plain integers, valid for any bits.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The bytes of a name that is not valid UTF-8, as lowercase hex: JSON strings are UTF-8, so such
/// a name is shown with U+FFFD in its string field and carried exactly in a `*_hex` field beside.
pub fn hex_if_not_utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .is_err()
        .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn c_bytes(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())]
}

fn origin(h: &EventHeader) -> Origin {
    Origin {
        pid: h.pid,
        tgid: h.tgid,
        comm: c_string(&h.comm[..COMM_LEN]),
        cgroup_id: h.cgroup_id,
        dev: Dev::from_kernel(h.dev),
        start_ns: h.start_ns,
    }
}

/// Turns the leaf-first, NUL-separated components into "/a/b/c" (as bytes).
fn path_bytes(buf: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = buf.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    parts.reverse();
    let mut path = Vec::new();
    for p in parts {
        path.push(b'/');
        path.extend_from_slice(p);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

#[cfg(test)]
fn path_from_components(buf: &[u8]) -> String {
    String::from_utf8_lossy(&path_bytes(buf)).into_owned()
}

/// A process start (`sched_process_exec`, for the timeline): who, when, and the program's name
/// (`comm`). None when `buf` is another kind of record.
pub fn decode_exec(buf: &[u8]) -> Option<Origin> {
    if read::<u32>(buf, 0).ok()? != EVENT_EXEC {
        return None;
    }
    let h: EventHeader = read(buf, EVENT_EXEC).ok()?;
    Some(origin(&h))
}

impl TryFrom<&[u8]> for Event {
    type Error = DecodeError;

    fn try_from(buf: &[u8]) -> Result<Self, Self::Error> {
        let kind = read::<u32>(buf, 0)?;
        match kind {
            EVENT_COPY_UP => {
                let e: CopyUpEvent = read(buf, kind)?;
                let used = (e.path_len as usize).min(PATH_BUF_LEN);
                Ok(Event::CopyUp(CopyUp {
                    origin: origin(&e.header),
                    duration_ns: e.duration_ns,
                    data: (e.data_bytes != NO_DATA_COPY).then(|| DataCopy {
                        bytes: e.data_bytes.max(0) as u64,
                        ns: e.data_ns,
                    }),
                    size: e.size,
                    open_flags: e.flags,
                    mode: e.mode,
                    ret: e.ret,
                    sync_ns: e.sync_ns,
                    syscall: crate::stream::trigger::syscall_name(e.syscall),
                    path: String::from_utf8_lossy(&path_bytes(&e.path[..used])).into_owned(),
                    path_hex: hex_if_not_utf8(&path_bytes(&e.path[..used])),
                    path_truncated: e.path_flags & (PATH_TRUNCATED | PATH_INCOMPLETE) != 0,
                    // A call that failed is a failure, wherever it stopped (see `CopyUpKind`).
                    waited: e.outcome == COPY_UP_WAITED && e.ret == 0,
                    layer: None,
                }))
            }
            EVENT_LOOKUP => {
                let e: LookupEvent = read(buf, kind)?;
                let outcome = match e.outcome {
                    LOOKUP_NEGATIVE => LookupOutcome::Negative,
                    LOOKUP_UPPER => LookupOutcome::Upper,
                    LOOKUP_LOWER => LookupOutcome::LowerOnly,
                    LOOKUP_POSITIVE_UNKNOWN_LAYER => LookupOutcome::Positive,
                    LOOKUP_ERROR => LookupOutcome::Error,
                    other => return Err(DecodeError::BadOutcome(other)),
                };
                let used = (e.name_len as usize).min(LOOKUP_NAME_LEN);
                Ok(Event::Lookup(Lookup {
                    origin: origin(&e.header),
                    duration_ns: e.duration_ns,
                    outcome,
                    layers: e.layers,
                    name: c_string(&e.name[..used]),
                    name_hex: hex_if_not_utf8(c_bytes(&e.name[..used])),
                }))
            }
            EVENT_MOUNT => {
                let e: MountEvent = read(buf, kind)?;
                Ok(Event::Mount(Mount {
                    origin: origin(&e.header),
                    duration_ns: e.duration_ns,
                    ret: e.ret,
                }))
            }
            EVENT_RENAME => {
                let e: RenameEvent = read(buf, kind)?;
                let used = (e.path_len as usize).min(PATH_BUF_LEN);
                Ok(Event::Rename(Rename {
                    origin: origin(&e.header),
                    ret: e.ret,
                    path: String::from_utf8_lossy(&path_bytes(&e.path[..used])).into_owned(),
                    path_hex: hex_if_not_utf8(&path_bytes(&e.path[..used])),
                    path_truncated: e.path_flags & (PATH_TRUNCATED | PATH_INCOMPLETE) != 0,
                }))
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

pub mod raw;

#[cfg(test)]
mod tests;
