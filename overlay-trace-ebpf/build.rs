use which::which;

/// Rebuild when bpf-linker changes (it is the linker of the bpf target).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
