//! Safe to run as root on a shared host: inputs an unprivileged user or an edited scenario
//! controls never reach outside what was asked. Each test feeds the hostile input and checks that
//! nothing outside happened. Scenario checks run natively (they refuse before anything runs);
//! the rest needs the probes and runs in the VM.

use std::{
    fs,
    os::unix::fs::FileTypeExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use overlay_trace_tests::tracer;
use overlay_trace_tests::{Overlay, out_dir, overlay_trace, read_events, stderr, stdout};

/// A directory with a canary file, for checking that nothing outside the sandbox changed.
fn canary(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let c = d.path().join("canary");
    fs::write(&c, "untouched").unwrap();
    (d, c)
}

#[test]
fn hostile_scenarios_are_refused_before_anything_runs() {
    let (d, canary) = canary("ot-scenario");
    let pwned = d.path().join("pwned");
    let depth = "../".repeat(16);
    let cases = [
        (
            format!(
                "[[files]]\nlayer = 0\npath = \"{depth}{}\"\nsize = 1\n[[steps]]\nop = \"stat\"\npath = \"x\"",
                canary.display()
            ),
            "files[0].path",
        ),
        (
            format!(
                "[[steps]]\nop = \"append\"\npath = \"{}\"",
                canary.display()
            ),
            "steps[0].path",
        ),
        (
            format!(
                "[[steps]]\nop = \"rename\"\npath = \"a\"\nto = \"{depth}{}\"",
                canary.display()
            ),
            "steps[0].to",
        ),
        (
            format!(
                "mount_options = \"metacopy=on; touch {}\"\n[[steps]]\nop = \"stat\"\npath = \"x\"",
                pwned.display()
            ),
            "mount_options",
        ),
        (
            // A count that would need 240 GB of paths: refused, nothing allocated or mounted.
            "[[files]]\nlayer = 0\npath = \"f{i}\"\ncount = 10000000000\n[[steps]]\nop = \"stat\"\npath = \"x\"".to_string(),
            "10000000000 files",
        ),
    ];
    for (body, key) in cases {
        let file = d.path().join("s.toml");
        fs::write(&file, format!("name = \"evil\"\nlayers = 1\n{body}\n")).unwrap();
        let o = overlay_trace(&["bench", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{key}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(key), "the bad key is named: {err}");
        assert_eq!(fs::read_to_string(&canary).unwrap(), "untouched");
        assert!(!pwned.exists(), "no command ran");
    }
    let o = overlay_trace(&["bench", "log-append", "--mount-options", "x;reboot"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--mount-options"), "{}", stderr(&o));
}

#[test]
fn a_docker_host_that_is_not_a_unix_socket_is_refused() {
    let o = tracer()
        .env("DOCKER_HOST", "tcp://10.0.0.1:2375")
        .args(["run", "--duration", "1s"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("DOCKER_HOST=\"tcp://10.0.0.1:2375\" is not supported"),
        "{err}"
    );
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_refused_run_keeps_the_earlier_report_and_a_symlink_is_replaced_not_followed() {
    let dir = out_dir().join("outputs");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    fs::write(&report, "earlier report").unwrap();
    let o = overlay_trace(&[
        "run",
        "--json",
        report.to_str().unwrap(),
        "--container",
        "no-such-container",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no running container matches"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_to_string(&report).unwrap(), "earlier report");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left behind"
    );

    let victim = dir.join("victim");
    fs::write(&victim, "precious").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = overlay_trace(&[
        "run",
        "-q",
        "--json",
        link.to_str().unwrap(),
        "--duration",
        "1s",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "precious",
        "the symlink's target is untouched"
    );
    assert!(
        fs::symlink_metadata(&link).unwrap().file_type().is_file(),
        "the symlink was replaced"
    );
    assert!(
        fs::read_to_string(&link)
            .unwrap()
            .contains("schema_version")
    );
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_file_name_with_control_characters_never_reaches_the_terminal_raw() {
    let name = "evil\x1b[2J\x1b]0;owned\x07\nLOST: nothing, all fine";
    let ov = Overlay::build(1, "", |o| o.put(0, name, 10));
    let events = out_dir().join("evil_names.ndjson");
    let target = ov.merged().join(name);
    let o = tracer()
        .args([
            "run",
            "-q",
            "--events",
            events.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo x >> \"$1\"",
            "sh",
        ])
        .arg(&target)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        !o.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control bytes in the report: {out:?}"
    );
    assert!(
        out.contains("/evil\\033[2J\\033]0;owned\\007\\nLOST: nothing, all fine"),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("LOST: nothing")),
        "a forged line: {out}"
    );
    let dev = ov.dev();
    let paths: Vec<String> = read_events(&events)
        .iter()
        .filter(|e| e["dev"] == dev.as_str() && e["type"] == "copy_up")
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        vec![format!("/{name}")],
        "the exact name in the NDJSON"
    );
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn an_unprivileged_fake_dockerd_cannot_steer_root() {
    // Any local user can start a program called dockerd with --data-root of their choosing: here
    // `nobody`, with a data root whose metadata would rename our overlay's container, plus a FIFO
    // and a huge file where Docker's metadata lives.
    let evil = Path::new("/run/ot-evil-root");
    let _ = fs::remove_dir_all(evil);
    let id = "f".repeat(64);
    fs::create_dir_all(evil.join(format!("containers/{id}"))).unwrap();
    fs::create_dir_all(evil.join(format!("image/overlay2/layerdb/mounts/{id}"))).unwrap();
    fs::write(
        evil.join(format!("containers/{id}/config.v2.json")),
        r#"{"Name":"/forged","Config":{"Image":"evil"}}"#,
    )
    .unwrap();
    fs::write(
        evil.join(format!("image/overlay2/layerdb/mounts/{id}/mount-id")),
        "victimlayer",
    )
    .unwrap();
    let fifo_id = "e".repeat(64);
    fs::create_dir_all(evil.join(format!("containers/{fifo_id}"))).unwrap();
    nix_mkfifo(&evil.join(format!("containers/{fifo_id}/config.v2.json")));
    let huge_id = "d".repeat(64);
    fs::create_dir_all(evil.join(format!("containers/{huge_id}"))).unwrap();
    fs::File::create(evil.join(format!("containers/{huge_id}/config.v2.json")))
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(evil)
        .status()
        .unwrap();
    let fake = Path::new("/run/ot-fake-bin");
    // A process named .../dockerd with --data-root, run by nobody.
    let mut dockerd = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
        ])
        .arg(format!(
            "exec -a {}/dockerd sleep 1000 --data-root={}",
            fake.display(),
            evil.display()
        ))
        .spawn()
        .unwrap();
    // An overlay whose upper dir looks like the forged container's layer.
    let root = Path::new("/run/ot-victim");
    fs::create_dir_all(root).unwrap();
    let sh = |c: &str| {
        assert!(
            Command::new("sh")
                .arg("-c")
                .arg(c)
                .status()
                .unwrap()
                .success(),
            "{c}"
        )
    };
    sh(&format!(
        "mount -t tmpfs tmpfs {r} && mkdir -p {r}/l {r}/overlay2/victimlayer/diff {r}/w {r}/m && echo x > {r}/l/f && \
         mount -t overlay overlay -o lowerdir={r}/l,upperdir={r}/overlay2/victimlayer/diff,workdir={r}/w {r}/m",
        r = root.display()
    ));
    let json = out_dir().join("fake_dockerd.json");
    let started = Instant::now();
    let o = tracer()
        .env("DOCKER_HOST", "unix:///run/ot-no-such.sock")
        .args([
            "run",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--",
            "sh",
            "-c",
        ])
        .arg(format!("echo y >> {}/m/f", root.display()))
        .output()
        .unwrap();
    let took = started.elapsed();
    let _ = dockerd.kill();
    let _ = dockerd.wait();
    sh(&format!("umount {r}/m; umount {r}", r = root.display()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(took < Duration::from_secs(60), "the tracer hung: {took:?}");
    let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let m = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount"]["mount_point"] == format!("{}/m", root.display()));
    let m = m.expect("the overlay is in the report");
    assert!(
        m["container"].is_null(),
        "named after the forged metadata: {m}"
    );
    assert!(!stdout(&o).contains("forged"));
}

fn nix_mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
    assert!(fs::metadata(p).unwrap().file_type().is_fifo());
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_bench_interrupted_while_populating_leaves_nothing_behind() {
    let d = out_dir().join("interrupt-scenario");
    fs::create_dir_all(&d).unwrap();
    let scenario = d.join("big.toml");
    fs::write(
        &scenario,
        "name = \"big\"\nlayers = 1\n[[files]]\nlayer = 0\npath = \"big{i}\"\ncount = 8\nsize = 100000000\n[[steps]]\nop = \"stat\"\npath = \"big0\"\n",
    )
    .unwrap();
    let mut bench = tracer()
        .args(["bench", scenario.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sandbox = Path::new("/run").join(format!("overlay-trace-bench-{}", bench.id()));
    let started = Instant::now();
    while !sandbox.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the bench never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(bench.id() as i32, libc::SIGINT) };
    let st = bench.wait().unwrap();
    let mut err = String::new();
    use std::io::Read as _;
    bench
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!st.success(), "{err}");
    assert!(err.contains("interrupted while populating"), "{err}");
    assert!(!sandbox.exists(), "the sandbox directory is gone");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("overlay-trace-bench"), "{mounts}");
}
