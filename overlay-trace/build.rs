//! Builds the eBPF programs (overlay-trace-ebpf) for the bpf target and leaves the object in
//! OUT_DIR, where src/probes.rs embeds it.
//!
//! The eBPF crate needs a compiler with the `core` sources (`-Z build-std=core`). We look, in
//! order, for: $OVERLAY_TRACE_EBPF_TOOLCHAIN; rustup's `nightly` with rust-src (the usual route on
//! a user's machine); a rustup toolchain named `debian-web` (Debian's rustc-web + rust-web-src,
//! linked by scripts/install-deps), which needs RUSTC_BOOTSTRAP=1 to accept `-Z`.
use std::{env, path::Path, process::Command};

use anyhow::{Context as _, anyhow};

const EBPF_PACKAGE: &str = "overlay-trace-ebpf";

fn sysroot_has_rust_src(toolchain: &str) -> bool {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        }
        _ => false,
    }
}

fn pick_toolchain() -> anyhow::Result<(String, bool)> {
    println!("cargo:rerun-if-env-changed=OVERLAY_TRACE_EBPF_TOOLCHAIN");
    if let Ok(tc) = env::var("OVERLAY_TRACE_EBPF_TOOLCHAIN") {
        return Ok((tc, true));
    }
    if sysroot_has_rust_src("nightly") {
        return Ok(("nightly".into(), false));
    }
    if sysroot_has_rust_src("debian-web") {
        return Ok(("debian-web".into(), true));
    }
    Err(anyhow!(
        "no toolchain can build the eBPF programs: install rustup nightly with rust-src, or run \
         scripts/install-deps (Debian rustc-web + rust-web-src), or set AYA_BUILD_SKIP=1 to build \
         the userspace alone"
    ))
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(EBPF_PACKAGE);
    let root = root.to_str().context("non-UTF-8 path")?.to_owned();
    // The eBPF object depends on the shared types too.
    println!("cargo:rerun-if-changed=../overlay-trace-common/src");
    if env::var_os("AYA_BUILD_SKIP").is_some() {
        // aya-build prints the warning; probes.rs then embeds an empty object.
        println!("cargo:rustc-cfg=ebpf_skipped");
    }
    println!("cargo::rustc-check-cfg=cfg(ebpf_skipped)");
    let (toolchain, bootstrap) = pick_toolchain()?;
    if bootstrap && env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single-threaded here; aya-build reads it and passes it on
        // to the cargo it spawns.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
