//! Runs the kernel skipped: a tracing program (fentry/fexit) is not run when its per-CPU
//! recursion guard is held, e.g. when a run of it was preempted on a `preempt=full` or RT kernel
//! and the same CPU hits the function again. The kernel counts each in the program's
//! `recursion_misses` (`bpf_prog_info`, kernel 5.12+; older kernels leave it 0). aya 0.14's
//! `ProgramInfo` does not carry it: it is read with `BPF_OBJ_GET_INFO_BY_FD` directly.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use aya_obj::generated::bpf_prog_info;

use crate::stream::record::ProbeReport;

/// `BPF_OBJ_GET_INFO_BY_FD` (include/uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The program's `recursion_misses`.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: all-zero is a valid `bpf_prog_info` (plain integers); the kernel requires the
    // bytes it does not know (a newer struct than its own) to be zero.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: `attr` and `info` outlive the call; the kernel writes at most `info_len` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The kernel says how much of the struct it knows: before 5.12, not this field (unknown,
    // not 0).
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + size_of::<u64>();
    if (attr.info_len as usize) < end {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    Ok(info.recursion_misses)
}

/// The functions whose entry makes a call reported: a skipped entry loses the call (its return
/// then finds no frame). A skipped return leaves a frame that is found stale later and counted
/// as a missed return; a skipped entry of the others (a data copy, `ovl_copy_up_end`, a layer)
/// leaves a reported call without that detail.
const CALLS: [&str; 3] = ["ovl_copy_up_one", "ovl_lookup", "ovl_fill_super"];

/// What the kernel's skips cost, from the probes' `missed` counts (fentry and fexit only:
/// a kprobe's `missed` is its own count, from tracefs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Calls never recorded (their entry skipped): lost.
    pub calls: u64,
    /// Other runs skipped: returns (also counted as missed returns) and details.
    pub other: u64,
}

pub fn skipped(probes: &[ProbeReport]) -> Skipped {
    let mut s = Skipped::default();
    for p in probes
        .iter()
        .filter(|p| p.kind == "fentry" || p.kind == "fexit")
    {
        let n = p.missed.unwrap_or(0);
        if p.kind == "fentry" && CALLS.contains(&p.function.as_str()) {
            s.calls += n;
        } else {
            s.other += n;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(function: &str, kind: &str, missed: Option<u64>) -> ProbeReport {
        ProbeReport {
            program: format!("{function}_{kind}"),
            function: function.into(),
            kind: kind.into(),
            maxactive: None,
            hits: None,
            missed,
            fallback: None,
        }
    }

    #[test]
    fn a_skipped_entry_of_a_call_is_lost_the_rest_is_detail() {
        let probes = [
            probe("ovl_copy_up_one", "fentry", Some(3)),
            probe("ovl_copy_up_one", "fexit", Some(2)),
            probe("ovl_lookup", "fentry", Some(5)),
            probe("ovl_lookup_layer", "fentry", Some(7)),
            probe("ovl_copy_up_end", "fentry", Some(1)),
            // A kprobe's miss count is tracefs's, accounted elsewhere.
            probe("ovl_lookup", "kprobe", Some(100)),
            probe("ovl_fill_super", "fentry", None),
        ];
        assert_eq!(
            skipped(&probes),
            Skipped {
                calls: 8,
                other: 10
            }
        );
        assert_eq!(skipped(&[]), Skipped::default());
    }

    #[test]
    fn a_file_that_is_no_program_is_refused() {
        // Never read as zero misses. (A real program's count: the VM tests.)
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd as _;
        assert!(recursion_misses(f.as_fd()).is_err());
    }
}
