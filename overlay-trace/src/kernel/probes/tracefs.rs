//! Probes made through tracefs `kprobe_events` rather than aya's perf kprobe PMU, for two things
//! the PMU cannot give: a kretprobe `maxactive` of our choosing (the PMU always takes the
//! kernel's default, max(10, 2 x CPUs), and a function that sleeps with more calls in flight than
//! that loses returns), and the kernel's own count of missed hits (`kprobe_profile`).
//!
//! Each probe is a trace event `overlay_trace/ot<token>_<program>`; the program is attached to
//! a perf event on it (`PERF_EVENT_IOC_SET_BPF`), which is how libbpf attaches "legacy" kprobes.
//! tracefs is one for the whole machine while pids are per namespace (two tracers in two
//! containers are both pid 1), so the token is random, drawn once per process. The event is
//! removed on drop; events left by a tracer that was killed are removed at start: the kernel
//! refuses (EBUSY) to remove an event a perf event still holds, which is what tells a live
//! tracer's events from a dead one's, in any namespace. A live tracer's event is removable only
//! between its creation and its perf event's opening; one removed then is made again.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};

const GROUP: &str = "overlay_trace";

/// The kernel's ceiling for a kretprobe's `maxactive` (KRETPROBE_MAXACTIVE_MAX).
pub const MAXACTIVE_MAX: u32 = 4096;

/// The tracefs mount point, if one is mounted.
pub fn root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("kprobe_events").exists())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Entry,
    Return { maxactive: u32 },
}

/// One attached probe; detached and removed on drop.
pub struct ProbeEvent {
    tracefs: PathBuf,
    name: String,
    /// Taken on drop: the event can only be removed once no perf event holds it.
    perf: Option<OwnedFd>,
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes); the libc crate has no
/// definition. Only type, size, config and sample_period are set.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 112);

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

fn append(file: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(file)?
        .write_all(line.as_bytes())
}

/// This process's token in event names: random (tracers in other pid namespaces share tracefs
/// and may have the same pid), 12 hex digits.
fn token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut b = [0u8; 6];
        // SAFETY: writes at most b.len() bytes into b.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            // No entropy source: time and pid still tell concurrent tracers apart.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            b.copy_from_slice(&(t ^ u64::from(std::process::id()) << 32).to_le_bytes()[..6]);
        }
        b.iter().map(|x| format!("{x:02x}")).collect()
    })
}

/// The `overlay_trace` events in `kprobe_events` text ("r4096:overlay_trace/ot1a2b_x ovl_lookup"
/// gives "overlay_trace/ot1a2b_x").
pub fn our_events(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.split_once(':'))
        .map(|(_, e)| e)
        .filter(|e| e.strip_prefix(GROUP).is_some_and(|r| r.starts_with('/')))
        .collect()
}

/// Removes the `overlay_trace` events no perf event holds: those of tracers that were killed
/// before they could clean up (the kernel refuses to remove the others: EBUSY).
pub fn remove_leftovers(tracefs: &Path) {
    let Ok(text) = fs::read_to_string(tracefs.join("kprobe_events")) else {
        return;
    };
    for event in our_events(&text) {
        if event.contains(&format!("/ot{}_", token())) {
            continue;
        }
        let _ = append(&tracefs.join("kprobe_events"), &format!("-:{event}\n"));
    }
}

impl ProbeEvent {
    /// Creates the probe event on `function` and attaches the loaded program `prog` to it. An
    /// event removed before its perf event was open (another tracer starting, taking it for a
    /// dead one's) is made again.
    pub fn attach(
        tracefs: &Path,
        prog: BorrowedFd<'_>,
        program: &str,
        function: &str,
        kind: Kind,
    ) -> Result<Self> {
        let mut tries = 0;
        loop {
            match Self::try_attach(tracefs, prog, program, function, kind) {
                Err(Attempt::Vanished(_)) if tries < 3 => tries += 1,
                Err(Attempt::Vanished(e) | Attempt::Failed(e)) => return Err(e),
                Ok(ev) => return Ok(ev),
            }
        }
    }

    fn try_attach(
        tracefs: &Path,
        prog: BorrowedFd<'_>,
        program: &str,
        function: &str,
        kind: Kind,
    ) -> Result<Self, Attempt> {
        let name = format!("ot{}_{program}", token());
        let spec = match kind {
            Kind::Entry => format!("p:{GROUP}/{name} {function}\n"),
            Kind::Return { maxactive } => format!("r{maxactive}:{GROUP}/{name} {function}\n"),
        };
        let events = tracefs.join("kprobe_events");
        append(&events, &spec).with_context(|| {
            format!(
                "cannot create a probe on {function} in {}",
                events.display()
            )
        })?;
        // From here on, the event exists: a failure below must remove it.
        let remove = |e: anyhow::Error| {
            let _ = append(&events, &format!("-:{GROUP}/{name}\n"));
            e
        };
        let id_file = tracefs.join("events").join(GROUP).join(&name).join("id");
        let id: u64 = match fs::read_to_string(&id_file) {
            Ok(t) => t
                .trim()
                .parse()
                .map_err(|e| remove(anyhow!("{}: {e}", id_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Attempt::Vanished(anyhow!("{}: {e}", id_file.display())));
            }
            Err(e) => return Err(remove(anyhow!("{}: {e}", id_file.display())).into()),
        };
        let attr = PerfEventAttr {
            type_: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: id,
            sample_period: 1,
            wakeup_events: 1,
            ..Default::default()
        };
        // SAFETY: perf_event_open with a valid attr; pid -1 + cpu 0: the probe fires on every CPU,
        // the event only anchors the program.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1,
                0,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        // Is the id still our event's? Removed meanwhile (another tracer starting took it for a
        // dead one's), its id may already be another event's: then the perf event, if any,
        // anchors the wrong probe and goes, and ours is made again.
        let still_ours = || {
            fs::read_to_string(&id_file)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                == Some(id)
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) && !still_ours() {
                return Err(Attempt::Vanished(anyhow!(
                    "perf_event_open on {function}: {e}"
                )));
            }
            // Debian's and Ubuntu's kernels refuse perf events to anyone without CAP_SYS_ADMIN
            // when kernel.perf_event_paranoid is above 2 (their default is 3 or 4), whatever
            // CAP_PERFMON says.
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .ok()
                .and_then(|v| v.trim().parse::<i32>().ok())
                .filter(|p| *p > 2 && e.raw_os_error() == Some(libc::EACCES));
            return Err(Attempt::Failed(remove(match paranoid {
                Some(p) => anyhow!(
                    "perf_event_open on {function}: {e} (kernel.perf_event_paranoid is {p}: this \
                     kernel wants CAP_SYS_ADMIN for kprobes, or the sysctl at 2 or below)"
                ),
                None => anyhow!("perf_event_open on {function}: {e}"),
            })));
        }
        // SAFETY: a fresh fd we own.
        let perf = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !still_ours() {
            drop(perf);
            return Err(Attempt::Vanished(anyhow!(
                "the probe event on {function} was removed while it was made"
            )));
        }
        let raw = perf.as_raw_fd();
        // Dropped on error: closes the fd, then removes the event.
        let ev = ProbeEvent {
            tracefs: tracefs.to_path_buf(),
            name,
            perf: Some(perf),
        };
        // SAFETY: ioctls on our own perf fd with the documented arguments.
        unsafe {
            if libc::ioctl(raw, PERF_EVENT_IOC_SET_BPF as _, prog.as_raw_fd()) != 0 {
                return Err(Attempt::Failed(anyhow!(
                    "cannot attach {program} to {function}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            if libc::ioctl(raw, PERF_EVENT_IOC_ENABLE as _, 0) != 0 {
                return Err(Attempt::Failed(anyhow!(
                    "cannot enable the probe on {function}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(ev)
    }

    /// The kernel's hit and miss counts for this probe (`kprobe_profile`). A miss is a call the
    /// probe could not handle: for a kretprobe, a return beyond `maxactive`.
    pub fn profile(&self) -> Option<(u64, u64)> {
        let text = fs::read_to_string(self.tracefs.join("kprobe_profile")).ok()?;
        parse_profile(&text, &self.name)
    }
}

/// Why an attempt to attach failed: its event was removed under it (made again), or otherwise.
enum Attempt {
    Vanished(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Attempt {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// Finds `name`'s "hits missed" in kprobe_profile text (`  name  hits  missed` per line).
pub fn parse_profile(text: &str, name: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let n = it.next()?;
        if n != name && n.rsplit('/').next() != Some(name) {
            return None;
        }
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    })
}

impl Drop for ProbeEvent {
    fn drop(&mut self) {
        if let Some(perf) = self.perf.take() {
            // SAFETY: our own fd. Disabled first so nothing runs while the event is torn down.
            unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_DISABLE as _, 0) };
        }
        // The perf event is closed above; should the kernel still count it as a user of the
        // probe for a moment (EBUSY), the removal is tried again for up to 200 ms (per probe:
        // a few seconds at worst for all) rather than leaving the probe behind until the next
        // tracer starts.
        let events = self.tracefs.join("kprobe_events");
        let line = format!("-:{GROUP}/{}\n", self.name);
        for _ in 0..10 {
            match append(&events, &line) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_group_s_events_are_listed() {
        let text = "p:overlay_trace/ot1a2b3c4d5e6f_lookup_entry ovl_lookup\n\
                    r4096:overlay_trace/ot12_lookup_return ovl_lookup\n\
                    p:kprobes/mine vfs_read\n\
                    p:overlay_trace_other/x vfs_read\n";
        assert_eq!(
            our_events(text),
            [
                "overlay_trace/ot1a2b3c4d5e6f_lookup_entry",
                "overlay_trace/ot12_lookup_return"
            ]
        );
    }

    #[test]
    fn the_token_is_the_same_for_the_process_and_hex() {
        assert_eq!(token(), token());
        assert_eq!(token().len(), 12);
        assert!(token().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn profile_lines_are_found_by_event_name() {
        let text = "  ot12_copy_up_one_return                      97               3\n  \
                    ot12_lookup_entry                           5000               0\n";
        assert_eq!(
            parse_profile(text, "ot12_copy_up_one_return"),
            Some((97, 3))
        );
        assert_eq!(parse_profile(text, "ot12_lookup_entry"), Some((5000, 0)));
        assert_eq!(parse_profile(text, "ot13_lookup_entry"), None);
    }
}
