//! `overlay-trace top` on a real dockerd: full screen inside tmux (rows, sorting by a key, `q`
//! giving the terminal back as it was), and piped (one block per interval), both beside a `run`
//! of the same workload. Oracles: `docker diff` and `run`'s report. Rates are not asserted
//! (emulation).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use overlay_trace_tests::{
    attached::{AttachedRun, bpf_programs},
    bin, out_dir, read_json,
    runtimes::{Dockerd, ROOT, busybox_rootfs, docker_ok, host, sh},
    tracer,
};

/// tmux on a server of its own, so nothing of the person's (or another test's) is touched.
fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(["-u", "-L", "overlay-trace-test", "-f", "/dev/null"])
        .env("LANG", "C.UTF-8")
        .args(args)
        .output()
        .expect("tmux");
    assert!(o.status.success(), "tmux {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pane() -> String {
    tmux(&["capture-pane", "-p", "-t", "top"])
}

/// Waits (3 minutes at most) until `f` of the pane holds.
fn pane_until(what: &str, f: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let p = pane();
        if f(&p) {
            return p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "{what}; the pane:\n{p}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether a line of the table is the row named exactly `name` (the name column is last; a
/// row whose mounts are gone says so after it).
fn is_row(line: &str, name: &str) -> bool {
    let l = line.trim_end();
    let l = l.strip_suffix(" [gone]").unwrap_or(l);
    l.ends_with(&format!(" {name}"))
}

/// The screen's COPY-UPS cell of the row named `name`.
fn screen_copy_ups(pane: &str, name: &str) -> Option<u64> {
    let header = pane.lines().find(|l| l.contains("COPY-UPS"))?;
    let col = header
        .split_whitespace()
        .position(|h| h.starts_with("COPY-UPS"))?;
    pane.lines()
        .find(|l| is_row(l, name))
        .and_then(|l| l.split_whitespace().nth(col)?.parse().ok())
}

/// Where the row of `name` is on the screen.
fn line_of(pane: &str, name: &str) -> usize {
    pane.lines()
        .position(|l| is_row(l, name))
        .unwrap_or_else(|| panic!("no row {name}:\n{pane}"))
}

/// The rows of the last block `top` printed: name -> (copy-ups, bytes).
fn last_block(text: &str) -> BTreeMap<String, (u64, u64)> {
    let block = text.rsplit("--- end: ").next().unwrap_or("");
    assert!(text.contains("--- end: "), "no last block:\n{text}");
    block
        .lines()
        .skip(2)
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells.len() > 9).then(|| {
                let n = |i: usize| cells[i].parse().unwrap_or_else(|_| panic!("{l}"));
                (cells[9..].join(" "), (n(6), n(7)))
            })
        })
        .collect()
}

/// An image with a 4 MiB file and two small ones (busybox).
fn image() {
    let rootfs = PathBuf::from(ROOT).join("top-rootfs");
    busybox_rootfs(&rootfs);
    fs::create_dir_all(rootfs.join("data")).unwrap();
    fs::write(rootfs.join("data/big.bin"), vec![b'x'; 4 << 20]).unwrap();
    sh(&format!(
        "tar -C {} -c . | docker import - ot-top:1 >/dev/null",
        rootfs.display()
    ));
}

fn copied_by_docker_diff(name: &str) -> u64 {
    docker_ok(&["diff", name])
        .lines()
        .filter(|l| l.starts_with("C "))
        .count() as u64
}

fn wait_for_file(p: &Path, what: &str) {
    let t = Instant::now();
    while !fs::read_to_string(p).is_ok_and(|s| !s.is_empty()) {
        assert!(t.elapsed() < Duration::from_secs(180), "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs kprobes on overlayfs, dockerd and tmux: runs in the VM via `cargo xtask test`"]
fn top_shows_each_container_as_docker_diff_and_run_do() {
    let _d = Dockerd::start();
    image();
    let dir = out_dir();
    let (piped, report) = (dir.join("top-piped.txt"), dir.join("top-run.json"));
    let (before, after) = (dir.join("top-stty-before"), dir.join("top-stty-after"));
    let _ = fs::remove_file(&after);

    // The full screen, in a tmux pane of 100x30; its shell records the terminal's settings
    // before and after.
    let _ = Command::new("tmux")
        .args(["-L", "overlay-trace-test", "kill-server"])
        .stderr(Stdio::null())
        .status();
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "100",
        "-y",
        "30",
        &format!(
            "stty -a > {b}; DOCKER_HOST={h} {bin} top --interval 1s; stty -a > {a}; exec sleep 600",
            b = before.display(),
            a = after.display(),
            h = host(),
            bin = bin().display(),
        ),
    ]);
    // Piped, and `run`, beside it: the three attach at once.
    let mut top = tracer()
        .args(["top", "--interval", "1s"])
        .env("DOCKER_HOST", host())
        .stdout(fs::File::create(&piped).unwrap())
        .stderr(fs::File::create(dir.join("top-piped.err")).unwrap())
        .spawn()
        .unwrap();
    let run = AttachedRun::start("top-run", &["-q", "--json", report.to_str().unwrap()]);
    wait_for_file(&piped, "piped top printed nothing");
    pane_until("top never drew its screen", |p| {
        p.contains("overlay-trace top:")
    });

    // More copy-ups in one, more bytes in the other.
    docker_ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "light",
        "ot-top:1",
        "sh",
        "-c",
        "touch /etc/greeting /etc/app.conf /etc/untouched",
    ]);
    docker_ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "heavy",
        "ot-top:1",
        "sh",
        "-c",
        "echo y >> /data/big.bin",
    ]);
    let expected: BTreeMap<&str, u64> = ["light", "heavy"]
        .into_iter()
        .map(|n| (n, copied_by_docker_diff(n)))
        .collect();
    assert!(expected.values().all(|n| *n >= 2), "{expected:?}");

    // Each container's row, with docker diff's count.
    let shown = pane_until("the rows never matched docker diff", |p| {
        expected
            .iter()
            .all(|(n, c)| screen_copy_ups(p, &format!("{n} (docker)")) == Some(*c))
    });
    println!("{shown}");
    // Sorted by copy-ups at first, then by bytes (B): the heavy one first.
    assert!(
        line_of(&shown, "light (docker)") < line_of(&shown, "heavy (docker)"),
        "{shown}"
    );
    tmux(&["send-keys", "-t", "top", "B"]);
    let sorted = pane_until("B never sorted by bytes", |p| p.contains("BYTES▼"));
    assert!(
        line_of(&sorted, "heavy (docker)") < line_of(&sorted, "light (docker)"),
        "{sorted}"
    );
    // The first row is selected: its slowest copy-up, the 4 MiB file, in the pane below.
    assert!(
        sorted.contains("4.0M") && sorted.contains("/data/big.bin"),
        "{sorted}"
    );
    // q: the terminal as it was.
    tmux(&["send-keys", "-t", "top", "q"]);
    wait_for_file(&after, "top did not end on q");
    assert_eq!(
        fs::read_to_string(&before).unwrap(),
        fs::read_to_string(&after).unwrap(),
        "the terminal's settings after q"
    );
    assert_eq!(
        tmux(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(),
        "0"
    );
    tmux(&["kill-server"]);

    // Piped: its last block's totals are the report's.
    unsafe { libc::kill(top.id() as i32, libc::SIGINT) };
    assert!(top.wait().unwrap().success());
    let text = fs::read_to_string(&piped).unwrap();
    let rows = last_block(&text);
    let mut run = run;
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    run.child.wait().unwrap();
    let report = read_json(&report);
    for (name, copies) in &expected {
        let m = report["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["container"]["name"] == *name && m["container"]["role"].is_null())
            .unwrap_or_else(|| panic!("{name} not in run's report"));
        let row = rows
            .get(&format!("{name} (docker) [gone]"))
            .or_else(|| rows.get(&format!("{name} (docker)")))
            .unwrap_or_else(|| panic!("{name} not in top's last block:\n{text}"));
        assert_eq!(row.0, *copies, "{name}: copy-ups vs docker diff");
        assert_eq!(
            row.0,
            m["copy_up"]["count"].as_u64().unwrap(),
            "{name} vs run"
        );
        assert_eq!(
            row.1,
            m["copy_up"]["data_bytes"].as_u64().unwrap(),
            "{name} vs run"
        );
        if *name == "heavy" {
            assert!(row.1 >= 4 << 20, "the 4 MiB file was copied: {text}");
        }
    }

    // Piped into `head`: the closed pipe ends `top` the clean way, every program unloaded.
    let programs = bpf_programs();
    let t = Instant::now();
    let o = Command::new("timeout")
        .args(["120", "bash", "-o", "pipefail", "-c"])
        .arg(format!(
            "{} top --interval 250ms | head -n 3",
            bin().display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "top | head: {o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    println!("top | head ended in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(bpf_programs(), programs, "programs left by top | head");
}
