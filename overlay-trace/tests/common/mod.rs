//! Shared by the long-run tests, each its own binary so its RSS is its own.

/// A size line of this process's /proc/self/status (`VmHWM`, `VmRSS`...), in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// This process's peak resident set (VmHWM), in KiB.
#[allow(dead_code)] // not every test binary that includes this module uses each function
pub fn vm_hwm_kib() -> u64 {
    status_kib("VmHWM")
}

/// This process's resident set now (VmRSS), in KiB.
#[allow(dead_code)]
pub fn vm_rss_kib() -> u64 {
    status_kib("VmRSS")
}
