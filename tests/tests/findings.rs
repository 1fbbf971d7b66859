//! Findings on real Docker starts: an image built offline with one case per finding (files made
//! by one RUN line and chowned at start, a 64 MiB log appended to at start, 12 COPY layers adding
//! to one directory searched like PATH for missing names, a directory renamed at start), started
//! under `run`; then a clean
//! start of the same image. Oracles: the upper dir (bytes copied), the Dockerfile (which line
//! made what), the number of names searched. The recorded start then becomes a scenario, run
//! by `bench` and by `report --verify`.

use std::{fs, path::PathBuf};

use overlay_trace_tests::{out_dir, overlay_trace, read_json, stderr, stdout};
use serde_json::Value;

use overlay_trace_tests::runtimes::{Dockerd, ROOT, docker_ok, host, sh};

const DATA_FILES: u64 = 4;
const DATA_FILE_KIB: u64 = 300;
const LOG_MIB: u64 = 64;
const BIN_LAYERS: usize = 12;
const MISSING_NAMES: u64 = 150;

fn build_image() {
    let rootfs = PathBuf::from(ROOT).join("findings-rootfs");
    overlay_trace_tests::runtimes::busybox_rootfs(&rootfs);
    sh(&format!(
        "tar -C {} -c . | docker import - ot-fbase:1 >/dev/null",
        rootfs.display()
    ));
    let ctx = PathBuf::from(ROOT).join("findings-ctx");
    fs::create_dir_all(&ctx).unwrap();
    let mut dockerfile = format!(
        "FROM ot-fbase:1\n\
         RUN mkdir -p /app/data /srv/old && echo x > /srv/old/f && for i in $(busybox seq {DATA_FILES}); do busybox dd if=/dev/zero of=/app/data/f$i bs=1024 count={DATA_FILE_KIB} 2>/dev/null; done\n\
         RUN mkdir -p /var/log/app && busybox dd if=/dev/zero of=/var/log/app/big.log bs=1048576 count={LOG_MIB} 2>/dev/null\n"
    );
    // COPY layers: made without running a container (a RUN costs ~20 s under emulation).
    for i in 0..BIN_LAYERS {
        fs::write(ctx.join(format!("tool{i}")), format!("{i}\n")).unwrap();
        dockerfile.push_str(&format!("COPY tool{i} /usr/local/bin/\n"));
    }
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    sh(&format!(
        "DOCKER_BUILDKIT=0 docker build -q -t ot-find:1 {} >/dev/null",
        ctx.display()
    ));
}

/// `run` of one `docker run` of ot-find:1 as `name` doing `script`: (exit code, JSON report).
fn traced_start(name: &str, script: &str, fail_on: &str) -> (Option<i32>, Value, PathBuf) {
    let dir = out_dir();
    let (events, report) = (
        dir.join(format!("{name}.ndjson")),
        dir.join(format!("{name}.json")),
    );
    let o = overlay_trace_tests::tracer()
        .env("DOCKER_HOST", host())
        .args(["run", "-q", "--fail-on", fail_on])
        .args(["--events", events.to_str().unwrap()])
        .args(["--json", report.to_str().unwrap(), "--"])
        .args(["docker", "run", "--network", "none", "--name", name])
        .args(["ot-find:1", "sh", "-c", script])
        .output()
        .unwrap();
    println!("{}\n{}", stdout(&o), stderr(&o));
    (o.status.code(), read_json(&report), events)
}

/// The findings about container `name`'s root.
fn about<'a>(r: &'a Value, name: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["container"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{name} (")))
        })
        .collect()
}

#[test]
#[ignore = "needs kprobes on overlayfs and dockerd: runs in the VM via `cargo xtask test`"]
fn a_slow_start_has_one_finding_per_cause_and_a_clean_one_none() {
    let _d = Dockerd::start();
    build_image();
    let script = format!(
        "busybox chown -R 1000:1000 /app/data && echo line >> /var/log/app/big.log && \
         busybox mv /srv/old /srv/new && \
         for i in $(busybox seq {MISSING_NAMES}); do command -v nosuch$i >/dev/null || true; done"
    );
    let (code, r, events) = traced_start("slow", &script, "metadata-copy");
    assert_eq!(
        code,
        Some(3),
        "--fail-on metadata-copy with the finding: exit 3"
    );
    let found = about(&r, "slow");
    let ids: Vec<&str> = found.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(
        {
            let mut s = ids.clone();
            s.sort();
            s
        },
        [
            "big-file-copy",
            "deep-layers",
            "lower-dir-rename",
            "metadata-copy"
        ],
        "{found:#?}"
    );
    let get = |id: &str| *found.iter().find(|f| f["id"] == id).unwrap();
    let upper = PathBuf::from(
        docker_ok(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "slow"]).trim(),
    );

    // Metadata: every file of /app/data, copied whole, made by the first RUN line.
    let meta = get("metadata-copy");
    let in_upper: u64 = (1..=DATA_FILES)
        .map(|i| {
            fs::metadata(upper.join(format!("app/data/f{i}")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(meta["bytes"], in_upper, "{meta:#}");
    assert_eq!(in_upper, DATA_FILES * DATA_FILE_KIB * 1024);
    assert_eq!(meta["count"], DATA_FILES);
    for e in meta["top"].as_array().unwrap() {
        let made = e["created_by"].as_str().unwrap_or("");
        assert!(made.contains("of=/app/data/f"), "{e:#}");
        assert!(e["syscall"].as_str().unwrap().contains("chown"), "{e:#}");
    }

    // The log: its image size (the upper copy less the line appended), from its RUN line.
    let big = get("big-file-copy");
    let log = fs::metadata(upper.join("var/log/app/big.log"))
        .unwrap()
        .len();
    assert_eq!(big["bytes"], log - "line\n".len() as u64, "{big:#}");
    assert_eq!(big["bytes"], LOG_MIB << 20);
    assert!(
        big["top"][0]["created_by"]
            .as_str()
            .unwrap_or("")
            .contains("big.log"),
        "{big:#}"
    );

    // Each missing name looked up once in /usr/local/bin, which all 12 layers hold (and the
    // base's other PATH directories are shallow).
    let deep = get("deep-layers");
    let n = deep["count"].as_u64().unwrap();
    assert!((MISSING_NAMES..MISSING_NAMES + 10).contains(&n), "{deep:#}");

    // The directory from the image renamed: refused, and mv copied it (the upper dir has it).
    let renamed = get("lower-dir-rename");
    assert_eq!(renamed["count"], 1, "{renamed:#}");
    assert_eq!(renamed["top"][0]["path"], "/srv/old", "{renamed:#}");
    assert!(
        renamed["top"][0]["process"]
            .as_str()
            .unwrap()
            .starts_with("busybox[")
    );
    assert!(upper.join("srv/new/f").exists());
    // /srv/old was made by the first RUN line: the finding says so.
    assert!(
        renamed["top"][0]["created_by"]
            .as_str()
            .unwrap_or("")
            .contains("/srv/old"),
        "{renamed:#}"
    );

    // The replay finds the same.
    let replayed = out_dir().join("slow.replayed.json");
    let o = overlay_trace(&[
        "report",
        events.to_str().unwrap(),
        "--json",
        replayed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(&replayed)["findings"], r["findings"]);

    // The recorded start as a scenario, replayed by the bench: the same copy-ups, the same bytes,
    // asked for the same way.
    let toml = out_dir().join("slow.toml");
    let o = overlay_trace(&["scenario", events.to_str().unwrap(), "--mount", "slow"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fs::write(&toml, &o.stdout).unwrap();
    println!("{}", stdout(&o));
    let bench = out_dir().join("slow.bench.json");
    let o = overlay_trace(&[
        "bench",
        toml.to_str().unwrap(),
        "--json",
        bench.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    println!("{}", stdout(&o));
    let live = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["container"]["name"] == "slow" && m["container"]["role"].is_null())
        .unwrap();
    let b = read_json(&bench);
    let replayed = &b["mounts"][0]["copy_up"];
    for k in ["count", "data_bytes"] {
        assert_eq!(replayed[k], live["copy_up"][k], "{k}: {replayed:#}");
    }
    let asked = |c: &Value| -> Vec<(String, Value, Value)> {
        c["by_trigger"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t["count"].clone(), t["data_bytes"].clone()))
            .collect()
    };
    assert_eq!(asked(replayed), asked(&live["copy_up"]));

    // The fix tried: with metacopy=on the chowned files' data is not copied (the log's is).
    let verified = out_dir().join("slow.verified.json");
    let o = overlay_trace(&[
        "report",
        events.to_str().unwrap(),
        "--verify",
        "--json",
        verified.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    println!("{}", stdout(&o));
    let v = read_json(&verified);
    let meta = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "metadata-copy")
        .unwrap();
    let (without, with) = (&meta["verified"]["without"], &meta["verified"]["with"]);
    assert_eq!(meta["verified"]["mount_option"], "metacopy=on");
    // The chowns' copy-ups (the files and their two directories), their data: all, then none.
    assert_eq!(without["copy_ups"], DATA_FILES + 2, "{meta:#}");
    assert_eq!(with["copy_ups"], DATA_FILES + 2, "{meta:#}");
    assert_eq!(without["data_bytes"], in_upper, "{meta:#}");
    assert_eq!(with["data_bytes"], 0, "{meta:#}");
    assert!(stdout(&o).contains("verified on the bench: with metacopy=on"));

    // The same image started without those writes: nothing to find, and --fail-on passes.
    let (code, r, _) = traced_start(
        "clean",
        "cat /app/data/f1 /var/log/app/big.log >/dev/null",
        "any",
    );
    assert_eq!(
        about(&r, "clean"),
        Vec::<&Value>::new(),
        "{:#}",
        r["findings"]
    );
    assert_eq!(code, Some(0));
}
