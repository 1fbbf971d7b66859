//! What this machine offers, checked before any work: privileges, kernel, BTF, kprobes, overlay
//! and its symbols. `run` turns the first missing piece into one clear error.

use std::{collections::HashSet, fs, path::Path, process::Command};

use anyhow::{Result, bail};

use crate::kernel::{btf_offsets, probes};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KprobeSupport {
    /// The perf kprobe PMU (what aya uses first).
    Pmu,
    /// Only tracefs kprobe_events.
    Tracefs,
    None,
}

#[derive(Debug)]
pub struct Capabilities {
    pub kernel: String,
    /// root, or CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN.
    pub privileged: bool,
    pub btf: bool,
    pub kprobes: KprobeSupport,
    /// "overlay" listed in /proc/filesystems.
    pub overlay_loaded: bool,
    /// Names in /proc/kallsyms (without module suffix).
    pub symbols: HashSet<String>,
    /// The BPF ring buffer map (Linux 5.8+), which carries every event.
    pub ringbuf: bool,
}

/// (major, minor) of a kernel release such as "6.1.0-56-amd64".
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Whether the kernel has the BPF ring buffer: the release is 5.8 or later, or its helper is in
/// kallsyms (distribution kernels backport it to older releases).
fn has_ringbuf(release: &str, symbols: &HashSet<String>) -> bool {
    symbols.contains("bpf_ringbuf_reserve") || release_version(release).is_some_and(|v| v >= (5, 8))
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Effective capabilities from /proc/self/status.
fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn privileged() -> bool {
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let caps = effective_caps();
    let has = |c: u64| caps & (1 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

fn kprobe_support() -> KprobeSupport {
    if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        KprobeSupport::Pmu
    } else if [
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
    {
        KprobeSupport::Tracefs
    } else {
        KprobeSupport::None
    }
}

fn overlay_in_filesystems() -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    })
}

/// Function names from kallsyms text; `ovl_x [overlay]` becomes `ovl_x`. Compiler clones such as
/// `ovl_x.isra.0` keep their suffix: their arguments may differ, so they never match a probe.
pub fn parse_kallsyms(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (_addr, kind, name) = (it.next()?, it.next()?, it.next()?);
            matches!(kind, "t" | "T").then(|| name.to_string())
        })
        .collect()
}

fn kallsyms() -> HashSet<String> {
    fs::read_to_string("/proc/kallsyms")
        .map(|t| parse_kallsyms(&t))
        .unwrap_or_default()
}

pub fn inspect() -> Capabilities {
    // Only whether BTF exists: parsing it (megabytes) is left to the one caller that needs it.
    let btf = Path::new(btf_offsets::VMLINUX_BTF).exists();
    let kernel = kernel_release();
    let symbols = kallsyms();
    Capabilities {
        ringbuf: has_ringbuf(&kernel, &symbols),
        kernel,
        privileged: privileged(),
        btf,
        kprobes: kprobe_support(),
        overlay_loaded: overlay_in_filesystems(),
        symbols,
    }
}

/// Loads overlay if it is a module that is not loaded yet: its functions only exist once loaded.
pub fn ensure_overlay_loaded(caps: &mut Capabilities) {
    if caps.overlay_loaded || !caps.privileged {
        return;
    }
    let ok = Command::new("modprobe")
        .arg("overlay")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        *caps = inspect();
    }
}

/// The first reason `run` cannot work here, as one line.
pub fn require_for_run(caps: &Capabilities) -> Result<()> {
    if !caps.privileged {
        bail!(
            "overlay-trace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
        );
    }
    if !caps.btf {
        bail!(
            "kernel {} has no BTF ({} is missing): overlay-trace reads struct offsets from it; \
             use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            caps.kernel,
            btf_offsets::VMLINUX_BTF
        );
    }
    if caps.kprobes == KprobeSupport::None {
        bail!(
            "kernel {} cannot attach kprobes (CONFIG_KPROBES is off: no kprobe PMU, no kprobe_events); \
             overlay-trace needs them on the overlayfs functions",
            caps.kernel
        );
    }
    if !caps.ringbuf {
        bail!(
            "kernel {} has no BPF ring buffer (added in Linux 5.8): overlay-trace hands its events to \
             userspace through one; use a 5.8 or later kernel",
            caps.kernel
        );
    }
    if !caps.overlay_loaded {
        bail!(
            "overlayfs is not available: \"overlay\" is not in /proc/filesystems and `modprobe overlay` did not load it"
        );
    }
    for p in probes::PROBES.iter().filter(|p| p.required) {
        if probes::target_for(p, &caps.symbols).is_none() {
            bail!(
                "kernel {} has no {} in /proc/kallsyms (inlined or renamed in this version): cannot trace {}",
                caps.kernel,
                p.targets.join(" or "),
                p.purpose
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_module_and_clone_symbols() {
        let s = parse_kallsyms(
            "ffffffffc05cc010 t ovl_copy_up_one\t[overlay]\n\
             ffffffffc05cea61 t ovl_fill_super.cold\t[overlay]\n\
             ffffffff81000000 T _stext\n\
             ffffffff82000000 D some_data\n",
        );
        assert!(s.contains("ovl_copy_up_one"));
        assert!(s.contains("ovl_fill_super.cold"));
        assert!(!s.contains("ovl_fill_super"));
        assert!(!s.contains("some_data"));
    }

    fn caps() -> Capabilities {
        let mut symbols = HashSet::new();
        for p in probes::PROBES {
            symbols.insert(p.targets[0].to_string());
        }
        Capabilities {
            kernel: "6.1.0".into(),
            privileged: true,
            btf: true,
            kprobes: KprobeSupport::Pmu,
            overlay_loaded: true,
            symbols,
            ringbuf: true,
        }
    }

    #[test]
    fn ring_buffer_from_kallsyms_or_the_release() {
        let with: HashSet<String> = ["bpf_ringbuf_reserve".to_string()].into();
        let without: HashSet<String> = ["ovl_lookup".to_string()].into();
        assert!(has_ringbuf("5.4.0", &with));
        assert!(has_ringbuf("6.1.0", &without));
        assert!(!has_ringbuf("5.4.0", &without));
        assert!(has_ringbuf("5.8.0-1-amd64", &HashSet::new()));
        assert!(!has_ringbuf("5.4.0-150-generic", &HashSet::new()));
        assert_eq!(release_version("6.12.9+bpo-amd64"), Some((6, 12)));
    }

    #[test]
    fn each_missing_piece_has_its_own_message() {
        assert!(require_for_run(&caps()).is_ok());
        let msg = |f: fn(&mut Capabilities)| {
            let mut c = caps();
            f(&mut c);
            require_for_run(&c).unwrap_err().to_string()
        };
        assert!(msg(|c| c.privileged = false).contains("needs root"));
        assert!(msg(|c| c.btf = false).contains("has no BTF"));
        assert!(msg(|c| c.kprobes = KprobeSupport::None).contains("cannot attach kprobes"));
        assert!(msg(|c| c.overlay_loaded = false).contains("overlayfs is not available"));
        assert!(msg(|c| c.ringbuf = false).contains("no BPF ring buffer (added in Linux 5.8)"));
        assert!(
            msg(|c| {
                c.symbols.remove("ovl_copy_up_one");
            })
            .contains("no ovl_copy_up_one in /proc/kallsyms")
        );
        // Optional probes may be missing.
        let mut c = caps();
        c.symbols.remove("ovl_lookup_layer");
        assert!(require_for_run(&c).is_ok());
    }
}
