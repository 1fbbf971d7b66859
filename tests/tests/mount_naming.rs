//! Naming mounts from mountinfo: an overlay whose layers the test knows, as the kernel lists
//! it, and device numbers reused within a millisecond (Docker's pattern).

use std::{fs, process::Command};

use overlay_trace_tests::tracer;
use overlay_trace_tests::{Overlay, out_dir, read_events, stderr};
use serde_json::Value;

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn mountinfo_names_an_overlay_mounted_for_the_test() {
    // The parser against the kernel's own mountinfo, with an overlay whose layers we know
    // (including a space in a path, which mountinfo escapes).
    let ov = Overlay::build(2, "", |_| {});
    let spaced = ov.root.join("with space");
    fs::create_dir_all(spaced.join("l")).unwrap();
    fs::create_dir_all(spaced.join("u")).unwrap();
    fs::create_dir_all(spaced.join("w")).unwrap();
    fs::create_dir_all(spaced.join("m")).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={s}/l:{l0},upperdir={s}/u,workdir={s}/w",
            s = spaced.display(),
            l0 = ov.lower(0).display()
        ))
        .arg(spaced.join("m"))
        .status()
        .unwrap();
    assert!(st.success());
    let mounts = overlay_trace::enrich::mountinfo::read_overlay_mounts().unwrap();
    let _ = Command::new("umount").arg(spaced.join("m")).status();
    let find = |dir: &std::path::Path| {
        use std::os::unix::fs::MetadataExt as _;
        let d = fs::metadata(dir).ok().map(|m| m.dev());
        mounts
            .values()
            .find(|m| m.mount_point == dir.to_str().unwrap())
            .cloned()
            .map(|m| (m, d))
    };
    let (m, _) = find(&ov.merged()).expect("the test overlay is in mountinfo");
    assert_eq!(m.dev.to_string(), ov.dev());
    assert_eq!(
        m.lowerdirs,
        vec![
            ov.lower(0).display().to_string(),
            ov.lower(1).display().to_string()
        ]
    );
    assert_eq!(m.upperdir.as_deref(), Some(ov.upper().to_str().unwrap()));
    let spaced_mount = mounts
        .values()
        .find(|m| m.mount_point.ends_with("with space/m"))
        .expect("escaped mount point decoded");
    assert_eq!(
        spaced_mount.upperdir.as_deref(),
        Some(spaced.join("u").to_str().unwrap())
    );
    assert_eq!(spaced_mount.lowerdirs.len(), 2);
}

/// Docker's pattern, sharpened: an overlay mounted, copied up on and unmounted, and another
/// mounted on the same device number (the kernel hands out the lowest free one) within the same
/// millisecond, so mountinfo, however soon it is read, shows the second for the first's number.
/// The second's upper dir also holds the file copied up on the first, so that this evidence
/// alone cannot tell them apart; every other round gives paths relative to the mounter's
/// directory, as Docker does for long layer lists. No mount is named after the other: a named
/// mount's upper dir is its own.
#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_reused_device_number_never_names_a_mount_after_the_next() {
    const ROUNDS: usize = 16;
    let root = std::path::Path::new("/run/ot-reuse");
    let (ready, done) = (root.join("ready"), root.join("done"));
    /// Leaves nothing behind when an assertion fails midway: the traced command ends, the
    /// mounts go, the directory is left.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::env::set_current_dir("/");
            let _ = fs::write(self.0.join("done"), "");
            let _ = Command::new("umount").arg(self.0.join("m")).status();
            std::thread::sleep(std::time::Duration::from_millis(500));
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    fs::create_dir_all(root).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mount -t tmpfs tmpfs {r} && cd {r} && mkdir l m && \
             for i in $(seq 1 {ROUNDS}); do echo a > l/a$i; echo b > l/b$i; \
             mkdir -p a$i/u a$i/w b$i/u b$i/w; echo old > b$i/u/a$i; done",
            r = root.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let _cleanup = Cleanup(root.to_path_buf());
    let dir = out_dir();
    let (events, report) = (dir.join("reuse.ndjson"), dir.join("reuse.json"));
    // The traced command only waits: it starts once the probes are attached.
    let tracer = tracer()
        .args(["run", "-q", "--events", events.to_str().unwrap()])
        .args(["--json", report.to_str().unwrap(), "--", "sh", "-c"])
        .arg(format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.1; done",
            ready.display(),
            done.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while !ready.exists() {
        assert!(waited.elapsed().as_secs() < 120, "the tracer never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::env::set_current_dir(root).unwrap();
    // The upper dir as round i's mount options give it.
    let upper = |side: &str, i: usize| {
        let rel = format!("{side}{i}/u");
        if i.is_multiple_of(2) {
            rel
        } else {
            root.join(rel).display().to_string()
        }
    };
    let mount = |side: &str, i: usize| {
        let work = upper(side, i).replace("/u", "/w");
        let opts = format!("lowerdir=l,upperdir={},workdir={work}", upper(side, i));
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        // SAFETY: valid C strings.
        let r = unsafe {
            libc::mount(
                c("overlay").as_ptr(),
                c("m").as_ptr(),
                c("overlay").as_ptr(),
                0,
                c(&opts).as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount {opts}: {}", std::io::Error::last_os_error());
    };
    let umount = || {
        // SAFETY: valid C string.
        let r = unsafe { libc::umount(c"m".as_ptr()) };
        assert_eq!(r, 0, "umount: {}", std::io::Error::last_os_error());
    };
    let append = |name: String| {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(format!("m/{name}"))
            .unwrap();
        f.write_all(b"1\n").unwrap();
    };
    for i in 1..=ROUNDS {
        mount("a", i);
        append(format!("a{i}"));
        umount();
        mount("b", i);
        append(format!("b{i}"));
        // Long enough to be named on a loaded host under emulation (0.3 s was not, once).
        std::thread::sleep(std::time::Duration::from_millis(1000));
        umount();
    }
    std::env::set_current_dir("/").unwrap();
    fs::write(&done, "").unwrap();
    let o = tracer.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let mounts: Vec<Value> = read_events(&events)
        .into_iter()
        .filter(|e| e["type"] == "mount")
        .collect();
    assert_eq!(mounts.len(), 2 * ROUNDS, "one event per mount");
    let reused = (0..ROUNDS)
        .filter(|i| mounts[2 * i]["dev"] == mounts[2 * i + 1]["dev"])
        .count();
    println!("device number reused in {reused} of {ROUNDS} rounds");
    assert!(
        reused > 0,
        "the test needs the kernel to reuse device numbers"
    );

    // Every mount that copied up a file: named after its own upper dir, or not named at all.
    let r: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let (mut named, mut unnamed) = (0, 0);
    for m in r["mounts"].as_array().unwrap() {
        let Some(path) = m["copy_up"]["slowest"][0]["path"].as_str() else {
            continue;
        };
        let Some((side, i)) = path.strip_prefix('/').map(|f| f.split_at(1)) else {
            continue;
        };
        let Ok(i) = i.parse::<usize>() else {
            continue;
        };
        if !(side == "a" || side == "b") {
            continue;
        }
        match m["mount"]["upperdir"].as_str() {
            Some(u) => {
                assert_eq!(u, upper(side, i), "{path} named wrong: {m}");
                named += 1;
            }
            None => unnamed += 1,
        }
        if side == "b" {
            assert!(m["mount"].is_object(), "a mount alive 1 s is named: {m}");
        }
    }
    println!("mounts named {named}, unnamed {unnamed}");
    assert_eq!(
        named + unnamed,
        2 * ROUNDS,
        "every mount's copy-up reported"
    );
}
