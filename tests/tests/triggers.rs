//! What asked for each copy-up: one operation per file of a real overlay, each a different
//! system call, and the system call each copy-up names. The oracle is the operation the test
//! did to that path (the names a libc may use for it are listed).

use std::{collections::BTreeMap, path::PathBuf};

use overlay_trace_tests::{Overlay, out_dir, read_events, read_json, stderr, stdout, tracer};

/// Path -> (what was done, system calls that do it, whether the copy-up copies its data).
const DONE: &[(&str, &str, &[&str], bool)] = &[
    (
        "/m/chmod.txt",
        "chmod 600",
        &["chmod", "fchmodat", "fchmodat2"],
        true,
    ),
    (
        "/m/chown.txt",
        "chown 1:1",
        &["chown", "fchownat", "lchown"],
        true,
    ),
    (
        "/m/touch.txt",
        "python utime",
        &["utimensat", "utimes", "utime"],
        true,
    ),
    // touch(1) opens the file for writing before it sets the times.
    ("/m/touched.txt", "touch", &["open", "openat"], true),
    ("/m/truncate.txt", "python truncate", &["truncate"], true),
    (
        "/m/xattr.txt",
        "python setxattr",
        &["setxattr", "lsetxattr"],
        true,
    ),
    ("/m/link.txt", "ln", &["link", "linkat"], true),
    (
        "/m/mv.txt",
        "mv",
        &["rename", "renameat", "renameat2"],
        true,
    ),
    ("/m/append.txt", "echo >>", &["open", "openat"], true),
    ("/d_mkdir", "mkdir in it", &["mkdir", "mkdirat"], false),
    ("/d_rm", "rm in it", &["unlink", "unlinkat"], false),
];

/// `run` of `script` on overlay `o` alone: its output, events file and JSON report.
fn traced(o: &Overlay, script: &str, name: &str) -> (std::process::Output, PathBuf, PathBuf) {
    let dir = out_dir();
    let (events, report) = (
        dir.join(format!("{name}.ndjson")),
        dir.join(format!("{name}.json")),
    );
    let out = tracer()
        .run()
        .events(&events)
        .json(&report)
        .with(&["--only-dev", &o.dev()])
        .sh(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    println!("{}", stdout(&out));
    (out, events, report)
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn each_copy_up_names_the_system_call_that_asked_for_it() {
    let o = Overlay::build(1, "", |o| {
        for (path, _, _, data) in DONE {
            if *data {
                o.put(0, path.trim_start_matches('/'), 4096);
            }
        }
        o.put(0, "d_mkdir/keep", 1);
        o.put(0, "d_rm/x", 1);
    });
    // /m is copied up by the first operation in it: chmod.
    let script = format!(
        "set -e; cd {m}; chmod 600 m/chmod.txt; chown 1:1 m/chown.txt; touch m/touched.txt; \
         /usr/bin/python3 -c 'import os; os.utime(\"m/touch.txt\", (0, 0)); os.truncate(\"m/truncate.txt\", 10); \
         os.setxattr(\"m/xattr.txt\", \"trusted.ot\", b\"v\")'; \
         ln m/link.txt m/link2.txt; mv m/mv.txt m/mv2.txt; echo x >> m/append.txt; \
         mkdir d_mkdir/new; rm d_rm/x",
        m = o.merged().display()
    );
    let (out, events, report) = traced(&o, &script, "triggers");

    // Path -> (system call, data bytes copied) of each copy-up.
    let mut seen: BTreeMap<String, Vec<(String, Option<u64>)>> = BTreeMap::new();
    for e in read_events(&events)
        .iter()
        .filter(|e| e["type"] == "copy_up" && e["dev"] == o.dev())
    {
        seen.entry(e["path"].as_str().unwrap().to_string())
            .or_default()
            .push((
                e["syscall"].as_str().unwrap_or("(none)").to_string(),
                e["data"]["bytes"].as_u64(),
            ));
    }
    for (path, what, calls, data) in DONE {
        let got = seen
            .get(*path)
            .unwrap_or_else(|| panic!("{path} ({what}) not copied up: {seen:?}"));
        assert_eq!(got.len(), 1, "{path}: {got:?}");
        assert!(
            calls.contains(&got[0].0.as_str()),
            "{path} ({what}) named {got:?}, not one of {calls:?}"
        );
        // Files are copied whole (the lower file's 4096 bytes); directories copy no data.
        assert_eq!(got[0].1, data.then_some(4096), "{path} ({what})");
    }
    assert!(
        ["chmod", "fchmodat", "fchmodat2"].contains(&seen["/m"][0].0.as_str()),
        "the directory was copied up by the first change in it: {:?}",
        seen["/m"]
    );
    // The report's slowest table and JSON say it too.
    let r = read_json(&report);
    let slowest: Vec<&str> = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["dev"] == o.dev())
        .flat_map(|m| m["copy_up"]["slowest"].as_array().unwrap())
        .filter_map(|s| s["syscall"].as_str())
        .collect();
    assert!(!slowest.is_empty(), "{r}");
    assert!(stdout(&out).contains("asked by"), "{}", stdout(&out));
    // 9 files of 4 KiB copied, 6 of them for metadata alone: 24 KiB, below the finding's 1 MiB.
    assert_eq!(r["findings"], serde_json::json!([]), "{r}");
}

/// A directory from a lower layer renamed: overlayfs refuses (-EXDEV, no `redirect_dir`) and
/// `mv` copies the tree itself. The oracle is the rename(2) the test makes first (Python raises
/// EXDEV); the same with `redirect_dir=on` is the control (the rename succeeds: nothing to find).
#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_refused_directory_rename_is_a_finding() {
    let build = |opts: &str| {
        Overlay::build(1, opts, |o| {
            o.put(0, "old/a", 100);
            o.put(0, "old/sub/b", 100);
        })
    };
    for (opts, refused) in [("", true), (",redirect_dir=on", false)] {
        let o = build(opts);
        let script = format!(
            "cd {m} && /usr/bin/python3 -c 'import os, errno\n\
             try:\n    os.rename(\"old\", \"py\")\n    print(\"renamed\")\n\
             except OSError as e:\n    print(errno.errorcode[e.errno])' && \
             if [ -e old ]; then mv old new; else mv py new; fi",
            m = o.merged().display()
        );
        let (out, events, report) = traced(&o, &script, "rename");
        // The oracle: what rename(2) said.
        let said = if refused { "EXDEV" } else { "renamed" };
        assert!(stdout(&out).starts_with(said), "{}", stdout(&out));
        let renames: Vec<String> = read_events(&events)
            .iter()
            .filter(|e| e["type"] == "rename")
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect();
        let r = read_json(&report);
        let found: Vec<&serde_json::Value> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["id"] == "lower-dir-rename")
            .collect();
        if refused {
            // Python's rename, then mv's: both of /old.
            assert_eq!(renames, ["/old", "/old"], "{r}");
            assert_eq!(found.len(), 1, "{r}");
            assert_eq!(found[0]["count"], 2);
            assert!(o.upper().join("new/sub/b").exists(), "mv copied the tree");
        } else {
            assert_eq!(renames, Vec::<String>::new());
            assert!(found.is_empty(), "{r}");
        }
    }
}
