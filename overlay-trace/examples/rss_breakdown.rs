//! Where the tracer's memory goes before any event: `cargo run --example rss_breakdown` (as root).
fn rss() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
            .to_string()
    };
    format!("RSS {} KiB (peak {} KiB)", get("VmRSS:"), get("VmHWM:"))
}

fn main() -> anyhow::Result<()> {
    println!("start:                       {}", rss());
    let btf = overlay_trace::kernel::btf_offsets::KernelBtf::load()?;
    println!("kernel BTF parsed (btf-rs):  {}", rss());
    let config = btf.config(0)?;
    drop(btf);
    println!("BTF dropped:                 {}", rss());
    overlay_trace::kernel::session::release_freed_memory();
    println!("freed memory returned:       {}", rss());
    let ebpf = overlay_trace::kernel::probes::open(config)?;
    println!("eBPF object loaded (aya):    {}", rss());
    overlay_trace::kernel::session::release_freed_memory();
    println!("freed memory returned:       {}", rss());
    drop(ebpf);
    Ok(())
}
