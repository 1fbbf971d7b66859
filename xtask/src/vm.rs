//! The VM: virtme-ng + qemu on a Debian kernel (KVM where it works, else emulation), running a
//! shell script with the repo shared read-write; its exit code comes back through a marker line.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow};

use crate::workspace;

/// The newest Debian kernel image in /boot (`linux-image-amd64`), or $OVERLAY_TRACE_VM_KERNEL.
fn vm_kernel() -> Result<PathBuf> {
    if let Some(k) = std::env::var_os("OVERLAY_TRACE_VM_KERNEL") {
        return Ok(PathBuf::from(k));
    }
    let mut images: Vec<PathBuf> = fs::read_dir("/boot")
        .context("/boot")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    images.sort();
    images.pop().ok_or_else(|| {
        anyhow!("no /boot/vmlinuz-*: run scripts/install-deps (installs linux-image-amd64)")
    })
}

/// The line the guest prints last: its script's exit code. Read from the VM's console output,
/// which reaches the host wherever the checkout is (a file the guest writes under /tmp would stay
/// in the guest's own overlay there).
const EXIT_MARKER: &str = "OVERLAY_TRACE_VM_EXIT=";

/// Runs `script` (bash) as root inside the VM; returns its exit code.
pub fn in_vm(script: &str) -> Result<i32> {
    in_vm_on(&vm_kernel()?, script, "")
}

/// Runs `script` (bash) as root inside the VM booted with `kernel`; returns its exit code. Each
/// line the VM prints is printed with `label` before it (VMs that run at once keep apart), and
/// the script file is the label's own.
pub fn in_vm_on(kernel: &Path, script: &str, label: &str) -> Result<i32> {
    let out = workspace().join("target/vm");
    fs::create_dir_all(&out)?;
    let own: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let body = out.join(format!("script{own}.sh"));
    fs::write(
        &body,
        format!(
            "#!/bin/bash\ncd {ws}\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n({script})\necho {EXIT_MARKER}$?\n",
            ws = workspace().display(),
        ),
    )?;
    let kvm = kvm_works(kernel);
    println!(
        "{label}xtask: booting {} in qemu ({})",
        kernel.display(),
        if kvm {
            "with KVM"
        } else {
            "no KVM: software emulation, about 30 s to boot"
        }
    );
    let booted = std::time::Instant::now();
    // vng re-opens the terminal it was given, writing from offset 0 when that is a file: pass
    // its output through a pipe so a log file keeps everything before it.
    let mut vng = Command::new("vng");
    vng.args(["--run"]).arg(kernel);
    if !kvm {
        vng.arg("--disable-kvm");
    }
    let mut child = vng
        .args(["--memory", "2G", "--cpus", "2", "--rw"])
        // Debian's kernel enables AppArmor, and dockerd then wants apparmor_parser for every
        // container; the tests do not need it.
        .args(["--append", "apparmor=0", "--exec"])
        .arg(format!("bash {}", body.display()))
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start vng: run scripts/install-deps (installs virtme-ng and qemu)")?;
    let mut code = None;
    if let Some(out) = child.stdout.take() {
        use std::io::{BufRead as _, Write as _};
        let mut reader = std::io::BufReader::new(out);
        let mut line = Vec::new();
        let stdout = std::io::stdout();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).context("VM output")? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if let Some(rest) = text
                .trim_end()
                .rsplit(EXIT_MARKER)
                .next()
                .filter(|_| text.contains(EXIT_MARKER))
            {
                code = rest.trim().parse::<i32>().ok();
            }
            let mut o = stdout.lock();
            o.write_all(label.as_bytes())?;
            o.write_all(&line)?;
            o.flush()?;
        }
    }
    let st = child.wait()?;
    println!(
        "{label}xtask: the VM ran for {:.0} s",
        booted.elapsed().as_secs_f64()
    );
    code.ok_or_else(|| anyhow!(VmDied(format!("vng: {st}"))))
}

/// The VM ended without running its script to the end (qemu or the guest died: vng's 255).
#[derive(Debug)]
pub struct VmDied(String);

impl std::fmt::Display for VmDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the VM ended without running the script to the end ({})",
            self.0
        )
    }
}

impl std::error::Error for VmDied {}

/// Whether the VM can use KVM here: `/dev/kvm` usable and a quick probe boot that reaches its
/// command within a minute (on some hosts qemu aborts on an MSR, or nested virtualisation hangs
/// the guest at boot). `OVERLAY_TRACE_KVM=0|1` decides instead. The answer is kept in
/// target/vm/kvm-probe.
fn kvm_works(kernel: &Path) -> bool {
    match std::env::var("OVERLAY_TRACE_KVM").as_deref() {
        Ok("0") => return false,
        Ok("1") => return true,
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let cache = workspace().join("target/vm/kvm-probe");
    // One answer per machine: whether qemu can use KVM here does not depend on the guest kernel.
    let key = "kvm";
    if let Some(answer) = fs::read_to_string(&cache)
        .ok()
        .and_then(|t| t.strip_prefix(&format!("{key} ")).map(str::to_string))
    {
        return answer.trim() == "yes";
    }
    println!(
        "xtask: probing KVM with a short boot (once; the answer is kept in {})",
        cache.display()
    );
    let marker = "OVERLAY_TRACE_KVM_OK";
    let _ = fs::create_dir_all(workspace().join("target/vm"));
    let out_file = workspace().join("target/vm/kvm-probe.out");
    let ok = match fs::File::create(&out_file).and_then(|out| {
        use std::os::unix::process::CommandExt as _;
        Command::new("vng")
            .args(["--run"])
            .arg(kernel)
            .args([
                "--memory",
                "512M",
                "--cpus",
                "1",
                "--exec",
                &format!("echo {marker}"),
            ])
            .current_dir(workspace())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(std::process::Stdio::null())
            // Its own process group: a hung guest is killed with qemu and all.
            .process_group(0)
            .spawn()
    }) {
        Err(_) => false,
        Ok(mut c) => {
            let start = std::time::Instant::now();
            while matches!(c.try_wait(), Ok(None))
                && start.elapsed() < std::time::Duration::from_secs(60)
            {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .status();
                let _ = c.wait();
            }
            fs::read_to_string(&out_file).is_ok_and(|o| o.contains(marker))
        }
    };
    let _ = fs::create_dir_all(workspace().join("target/vm"));
    let _ = fs::write(&cache, format!("{key} {}\n", if ok { "yes" } else { "no" }));
    ok
}
