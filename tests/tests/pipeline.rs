//! The pipeline in the VM: nothing a filesystem does stalls the drain, paths of another mount
//! namespace are resolved there, a killed run keeps its events, and a copy-up that fails before
//! it copies is a failure (not a wait).

use std::{
    fs,
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use overlay_trace_tests::{Overlay, out_dir, read_events, read_json, stderr};
use overlay_trace_tests::{sh, tracer};
use serde_json::Value;

/// A tracer `run` whose traced command only marks that the probes are attached, then waits.
struct Run {
    child: Child,
    ready: PathBuf,
}

impl Run {
    fn start(name: &str, args: &[&str]) -> Self {
        let ready = out_dir().join(format!("{name}.ready"));
        let _ = fs::remove_file(&ready);
        let child = tracer()
            .arg("run")
            .args(args)
            .args(["--", "sh", "-c"])
            .arg(format!("touch {}; exec sleep 600", ready.display()))
            .stdout(fs::File::create(out_dir().join(format!("{name}.out"))).unwrap())
            .stderr(fs::File::create(out_dir().join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !ready.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "the tracer never attached"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, ready }
    }
}

/// GET `path` from `addr` in-process (no process to start: only the server's answer is timed),
/// with a 1 s limit on every step. Whether it answered 200, how long it took, and the body.
fn get_timed(addr: &str, path: &str) -> (bool, Duration, String) {
    use std::io::Read as _;
    let t = Instant::now();
    let limit = Some(Duration::from_secs(1));
    let answer = (|| -> std::io::Result<String> {
        let mut s =
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1))?;
        s.set_read_timeout(limit)?;
        s.set_write_timeout(limit)?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    let took = t.elapsed();
    match answer {
        Ok(a) => (
            a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200"),
            took,
            a.split_once("\r\n\r\n")
                .map_or(String::new(), |(_, b)| b.to_string()),
        ),
        Err(_) => (false, took, String::new()),
    }
}

/// Paths under `dir` ("/a/b"), as `find` lists them: the copy-ups an upper dir holds.
fn listed(text: &str, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(dir))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The mount of `dev` in a report; of those, the one whose mount point ends in `point`.
fn mount_at<'a>(report: &'a Value, dev: &str, point: &str) -> &'a Value {
    report["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["dev"] == dev
                && (point.is_empty()
                    || m["mount"]["mount_point"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(point)))
        })
        .unwrap_or_else(|| panic!("no mount {dev} at {point:?} in {report:#}"))
}

fn mount_of<'a>(report: &'a Value, dev: &str) -> &'a Value {
    mount_at(report, dev, "")
}

/// A process in a private mount namespace mounts overlays whose paths do not answer from here:
/// A's lowerdir and upperdir, seen from our namespace, lie on a FUSE filesystem whose daemon
/// never answers (in its own namespace a tmpfs shadows it, so the kernel's copy-ups never touch
/// FUSE); B's lowerdir path is covered, in its own namespace, by such a FUSE filesystem after the
/// overlay was mounted (the kernel keeps the real layer; any lookup by path hangs). Then an
/// ordinary overlay C. A `run` and a `serve` trace it all at once: every copy-up is counted
/// (against the upper dirs), A's and C's source layers are found (A's in its own namespace), B's
/// lookups are abandoned and counted, the run ends on time with its report, and /healthz and
/// /metrics answer within a second throughout; SIGTERM ends serve within 2 s.
#[test]
#[ignore = "needs kprobes or fentry on overlayfs (runs in the VM)"]
fn a_filesystem_that_never_answers_stalls_nothing() {
    let r = PathBuf::from(format!("/run/ot-pipeline-{}", std::process::id()));
    fs::create_dir_all(r.join("fz")).unwrap();
    fs::create_dir_all(r.join("b")).unwrap();
    // The daemon that never answers: opens /dev/fuse, mounts with fd=, never reads it.
    let mut daemon = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/fuse && mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 \
             otfuse {fz} && echo mounted && exec sleep 600",
            fz = r.join("fz").display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "mounted");
    }

    let port = 19_480;
    let serve_log = out_dir().join("pipeline-serve.err");
    let mut serve = tracer()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(fs::File::create(&serve_log).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (health, metrics) = ("/healthz", "/metrics");
    let t = Instant::now();
    while !get_timed(&addr, health).0 {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "serve never healthy"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (json, events) = (
        out_dir().join("pipeline.json"),
        out_dir().join("pipeline.ndjson"),
    );
    let duration = 40;
    let run = Run::start(
        "pipeline",
        &[
            "--duration",
            &format!("{duration}s"),
            "--json",
            json.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
    );
    let attached = Instant::now();

    // The tenant: its own mount namespace; prints each overlay's device and upper dir's content.
    let script = format!(
        r#"set -e
R={r}
mount -c -t tmpfs tmpfs $R/fz
mkdir -p $R/fz/lower/etc $R/fz/upper $R/fz/work $R/fz/merged
for i in $(seq 1 8); do echo a$i > $R/fz/lower/etc/a$i; done
mount -t overlay overlay -o lowerdir=$R/fz/lower,upperdir=$R/fz/upper,workdir=$R/fz/work $R/fz/merged
for i in $(seq 1 8); do echo more >> $R/fz/merged/etc/a$i; done
mount -t tmpfs tmpfs $R/b
mkdir -p $R/b/lower/etc $R/b/upper $R/b/work $R/b/merged
for i in $(seq 1 6); do echo b$i > $R/b/lower/etc/b$i; done
mount -t overlay overlay -o lowerdir=$R/b/lower,upperdir=$R/b/upper,workdir=$R/b/work $R/b/merged
exec 3<>/dev/fuse
mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 otfuse2 $R/b/lower
for i in $(seq 1 6); do echo more >> $R/b/merged/etc/b$i; done
echo "A $(grep " $R/fz/merged " /proc/self/mountinfo | cut -d' ' -f3)"
echo "B $(grep " $R/b/merged " /proc/self/mountinfo | cut -d' ' -f3)"
find $R/fz/upper $R/b/upper | sed 's/^/U /'
# The namespace lives on a while, so its paths can be resolved in it.
sleep 8
"#,
        r = r.display()
    );
    let tenant = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    assert!(tenant.status.success(), "{}", stderr(&tenant));
    let out = String::from_utf8_lossy(&tenant.stdout).into_owned();
    let dev = |which: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{which} ")))
            .unwrap()
            .to_string()
    };
    let (dev_a, dev_b) = (dev("A"), dev("B"));
    let uppers: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("U ")).collect();
    let upper_a = listed(&uppers.join("\n"), &format!("{}/fz/upper", r.display()));
    let upper_b = listed(&uppers.join("\n"), &format!("{}/b/upper", r.display()));
    assert_eq!(upper_a.len(), 9, "{out}");
    assert_eq!(upper_b.len(), 7, "{out}");

    // Mounts made after the stuck ones are named and explained as usual.
    let c = Overlay::build(1, "", |o| {
        for i in 0..5 {
            o.put(0, &format!("etc/c{i}"), 100);
        }
    });
    for i in 0..5 {
        sh(&format!("echo more >> {}/etc/c{i}", c.merged().display()));
    }
    let upper_c = c.upper_paths();

    // The service answers while the stuck work is pending.
    for _ in 0..5 {
        for url in [health, metrics] {
            let (ok, took, _) = get_timed(&addr, url);
            assert!(
                ok && took < Duration::from_secs(1),
                "{url}: {ok} in {took:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut run = run;
    let st = run.child.wait().unwrap();
    let took = attached.elapsed();
    let _ = fs::remove_file(&run.ready);
    assert_eq!(
        st.code(),
        Some(124),
        "ended by --duration (the traced command still ran)"
    );
    assert!(
        took < Duration::from_secs(duration + 8),
        "the run ended {took:?} after attaching (duration {duration} s)"
    );

    let (ok, _, body) = get_timed(&addr, metrics);
    assert!(ok);
    let abandoned: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("overlay_trace_enrichment_abandoned_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the abandoned lookups are on /metrics");
    assert!(abandoned >= 1.0, "{body}");
    let t = Instant::now();
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let st = serve.wait().unwrap();
    assert!(st.success(), "{}", fs::read_to_string(&serve_log).unwrap());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "serve took {:?} to stop",
        t.elapsed()
    );

    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let lines = read_events(&events);
    // Device numbers are reused (C may get A's): a mount is its device and generation.
    let gen_of = |dev: &str, point: &str| -> u64 {
        report["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["dev"] == dev
                    && m["mount"]["mount_point"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(point))
            })
            .and_then(|m| m["mount_gen"].as_u64())
            .unwrap_or_else(|| panic!("no mount {dev} at {point}: {report:#}"))
    };
    let copied = |dev: &str, point: &str| -> Vec<String> {
        let generation = gen_of(dev, point);
        let mut v: Vec<String> = lines
            .iter()
            .filter(|e| e["type"] == "copy_up" && e["dev"] == dev && e["mount_gen"] == generation)
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let point_c = c.merged().display().to_string();
    assert_eq!(copied(&dev_a, "/fz/merged"), upper_a);
    assert_eq!(copied(&dev_b, "/b/merged"), upper_b);
    assert_eq!(copied(&c.dev(), &point_c), upper_c);
    let ev = &report["events"];
    assert_eq!(ev["dropped_copy_up"], 0);
    assert_eq!(ev["missed_return_copy_up"], 0);
    assert!(
        ev["enrich_abandoned"].as_u64().unwrap_or(0) >= 1,
        "B's lookups abandoned: {ev}"
    );

    // A: found in its own namespace (a host-path lookup would have hung on FUSE).
    let a = mount_at(&report, &dev_a, "/fz/merged");
    assert_eq!(a["copy_up"]["count"], 9);
    let by_layer = a["copy_up"]["by_layer"].as_array().unwrap();
    assert_eq!(by_layer.len(), 1, "{a:#}");
    assert_eq!(
        (by_layer[0]["layer"].as_u64(), by_layer[0]["count"].as_u64()),
        (Some(1), Some(9))
    );
    // B: counted exactly, its layers unknown.
    let b = mount_at(&report, &dev_b, "/b/merged");
    assert_eq!(b["copy_up"]["count"], 7);
    assert!(
        b["copy_up"]["by_layer"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["layer"] == 0)
    );
    // C: named after its mount point, its source layer found.
    let cm = mount_at(&report, &c.dev(), &point_c);
    assert_eq!(
        cm["mount"]["mount_point"].as_str(),
        Some(c.merged().to_str().unwrap())
    );
    assert_eq!(cm["copy_up"]["by_layer"][0]["layer"], 1);
    overlay_trace_tests::assert_replay_equals_live(&events, &json);

    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = Command::new("umount")
        .args(["-l", "-c"])
        .arg(r.join("fz"))
        .status();
    let _ = fs::remove_dir_all(&r);
}

/// A run killed with SIGKILL keeps what it recorded: the file at the `--events` path replays
/// everything up to the cut, with a warning.
#[test]
#[ignore = "needs kprobes or fentry on overlayfs (runs in the VM)"]
fn a_killed_run_keeps_its_events() {
    let ov = Overlay::build(1, "", |o| {
        for i in 0..6 {
            o.put(0, &format!("d/f{i}"), 4096);
        }
    });
    let events = out_dir().join("killed.ndjson");
    let _ = fs::remove_file(&events);
    let mut run = Run::start("killed", &["--events", events.to_str().unwrap()]);
    for i in 0..6 {
        sh(&format!("echo x >> {}/d/f{i}", ov.merged().display()));
    }
    // Flushed at least once a second.
    std::thread::sleep(Duration::from_millis(2500));
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let _ = Command::new("pkill")
        .args(["-f", &run.ready.display().to_string()])
        .status();
    // Cut the last line in the middle too, as a kill mid-write would.
    let mut f = fs::OpenOptions::new().append(true).open(&events).unwrap();
    f.write_all(b"{\"type\":\"copy_up\",\"pid\":1,\"tg")
        .unwrap();
    drop(f);
    let json = out_dir().join("killed.json");
    let o = tracer()
        .arg("report")
        .arg(&events)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the last line was cut short"),
        "{}",
        stderr(&o)
    );
    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let m = mount_of(&report, &ov.dev());
    assert_eq!(
        m["copy_up"]["count"].as_u64(),
        Some(ov.upper_paths().len() as u64)
    );
}

/// A copy-up that fails before it can copy (an unprivileged user in its own user namespace
/// appends to a world-writable lower file whose owner is not mapped there: the kernel refuses
/// with EOVERFLOW) is a failure with its errno, not a wait, in the report, the events and
/// /metrics.
#[test]
#[ignore = "needs kprobes or fentry on overlayfs (runs in the VM)"]
fn a_copy_up_that_fails_before_copying_is_a_failure() {
    let r = PathBuf::from(format!("/run/ot-eoverflow-{}", std::process::id()));
    fs::create_dir_all(r.join("lower")).unwrap();
    fs::create_dir_all(r.join("rw")).unwrap();
    sh(&format!(
        "chmod 755 {r} {r}/lower && echo data > {r}/lower/f && chown 1234:1234 {r}/lower/f && \
         chmod 666 {r}/lower/f && chmod 777 {r}/rw",
        r = r.display()
    ));
    let (json, events) = (
        out_dir().join("eoverflow.json"),
        out_dir().join("eoverflow.ndjson"),
    );
    let mut run = Run::start(
        "eoverflow",
        &[
            "--json",
            json.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
    );
    let script = format!(
        "mount -t tmpfs t {r}/rw && mkdir {r}/rw/u {r}/rw/w {r}/rw/m && \
         mount -t overlay overlay -o lowerdir={r}/lower,upperdir={r}/rw/u,workdir={r}/rw/w {r}/rw/m && \
         grep \" {r}/rw/m \" /proc/self/mountinfo | cut -d' ' -f3 && \
         (echo more >> {r}/rw/m/f; true)",
        r = r.display()
    );
    let tenant = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-Urm",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .unwrap();
    assert!(tenant.status.success(), "{}", stderr(&tenant));
    assert!(
        stderr(&tenant).contains("Value too large"),
        "the kernel refused the write with EOVERFLOW: {}",
        stderr(&tenant)
    );
    let dev = String::from_utf8_lossy(&tenant.stdout).trim().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    assert!(run.child.wait().unwrap().code().is_some());
    let lines = read_events(&events);
    let ups: Vec<&Value> = lines
        .iter()
        .filter(|e| e["type"] == "copy_up" && e["dev"] == dev)
        .collect();
    assert_eq!(ups.len(), 1, "{lines:?}");
    assert_eq!(ups[0]["ret"], -75);
    assert_ne!(ups[0]["waited"], true);
    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let m = mount_of(&report, &dev);
    assert_eq!(
        (
            m["copy_up"]["count"].as_u64(),
            m["copy_up"]["failed"].as_u64(),
            m["copy_up"]["waited"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    let _ = fs::remove_dir_all(&r);
}

/// Without tracefs (kprobes made through the perf PMU), stopping the tracer while lookups keep
/// coming adds no missed return: every entry probe goes first, and calls still in flight get to
/// return before their return probes go.
#[test]
#[ignore = "needs kprobes on overlayfs (runs in the VM)"]
fn stopping_without_tracefs_misses_no_return() {
    let ov = Overlay::build(1, "", |o| o.put(0, "etc/f", 10));
    let json = out_dir().join("perf-stop.json");
    let _ = fs::remove_file(&json);
    let m = ov.merged().display().to_string();
    // In a mount namespace of its own, tracefs is unmounted for the tracer alone.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; \
         if [ -e /sys/kernel/tracing/kprobe_events ] || [ -e /sys/kernel/debug/tracing/kprobe_events ]; \
         then echo 'tracefs still mounted' >&2; exit 9; fi; \
         exec {bin} run -q --probes kprobe --json {json} -- sh -c \
         '(i=0; while :; do i=$((i+1)); ls {m}/nope-stop-$i; done) >/dev/null 2>&1 & sleep 4'",
        bin = overlay_trace_tests::bin().display(),
        json = json.display(),
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = Command::new("pkill").args(["-f", "nope-stop-"]).status();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = read_json(&json);
    let probes = r["probes"].as_array().unwrap();
    assert!(
        probes
            .iter()
            .all(|p| p["hits"].is_null() && p["kind"].as_str().unwrap().contains("probe")),
        "perf-PMU kprobes (no tracefs counts): {probes:?}"
    );
    let lookups = mount_of(&r, &ov.dev())["lookup"]["count"].as_u64().unwrap();
    assert!(lookups > 10, "the storm ran under the tracer: {lookups}");
    assert_eq!(r["events"]["missed_return_lookup"], 0, "{}", r["events"]);
    assert_eq!(r["events"]["missed_return_copy_up"], 0, "{}", r["events"]);
}
