//! Sync time inside copy-ups: an overlay whose upper directory is on ext4 (a loop device), where
//! overlayfs fsyncs each file it copies up, and the same with `volatile`, where it never does.
//! The oracle is the kernel's own switch: with `volatile` no copy-up may show a sync.

use std::{fs, path::PathBuf, process::Command};

use overlay_trace_tests::disks::Disk;
use overlay_trace_tests::{out_dir, read_events, read_json, sh, stderr, stdout, tracer};

const FILES: usize = 20;

/// A tmpfs with the lower layer, an ext4 disk image on it holding upper and work, and the
/// overlay.
struct ExtOverlay {
    root: PathBuf,
    disk: Option<Disk>,
}

impl ExtOverlay {
    fn build(extra: &str) -> Self {
        // A path without commas: it goes into the mount options.
        let kind = if extra.is_empty() { "sync" } else { "volatile" };
        let root = PathBuf::from(format!("/run/ot-sync-{}-{kind}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        sh(&format!("mount -t tmpfs tmpfs {}", root.display()));
        let lower = root.join("lower");
        fs::create_dir_all(&lower).unwrap();
        for i in 0..FILES {
            fs::write(lower.join(format!("f{i}")), vec![b'x'; 256 << 10]).unwrap();
        }
        let mut disk = Disk::new(&root.join("ext4.img"), 128);
        let ext = root.join("ext4");
        disk.mount(&ext);
        sh(&format!(
            "mkdir {ext}/upper {ext}/work {root}/merged && mount -t overlay overlay -o \
             lowerdir={lower},upperdir={ext}/upper,workdir={ext}/work{extra} {root}/merged",
            ext = ext.display(),
            lower = lower.display(),
            root = root.display(),
        ));
        ExtOverlay {
            root,
            disk: Some(disk),
        }
    }

    fn merged(&self) -> PathBuf {
        self.root.join("merged")
    }

    fn dev(&self) -> String {
        use std::os::unix::fs::MetadataExt as _;
        let d = fs::metadata(self.merged()).unwrap().dev();
        format!("{}:{}", libc::major(d), libc::minor(d))
    }
}

impl Drop for ExtOverlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.merged()).status();
        // The disk (unmounted by its drop) has its image on the tmpfs: it goes first.
        drop(self.disk.take());
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = fs::remove_dir(&self.root);
    }
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn copy_ups_that_sync_are_timed_and_volatile_is_the_fix() {
    for (extra, syncs) in [("", true), (",volatile", false)] {
        let o = ExtOverlay::build(extra);
        let name = if syncs { "sync" } else { "volatile" };
        let (events, report) = (
            out_dir().join(format!("{name}.ndjson")),
            out_dir().join(format!("{name}.json")),
        );
        let out = tracer()
            .run()
            .events(&events)
            .json(&report)
            .with(&["--only-dev", &o.dev()])
            .sh(&format!(
                "cd {} && for f in f*; do echo x >> $f; done",
                o.merged().display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        println!("{}", stdout(&out));
        let copy_ups: Vec<_> = read_events(&events)
            .into_iter()
            .filter(|e| e["type"] == "copy_up" && e["dev"] == o.dev())
            .collect();
        assert_eq!(copy_ups.len(), FILES, "one copy-up per file appended to");
        let synced = copy_ups
            .iter()
            .filter(|e| e["sync_ns"].as_u64().unwrap_or(0) > 0)
            .count();
        let r = read_json(&report);
        let found = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "copy-up-sync");
        if syncs {
            // Each file synced, inside its data copy.
            assert_eq!(synced, FILES, "{copy_ups:?}");
            for e in &copy_ups {
                assert!(e["sync_ns"].as_u64() <= e["data"]["ns"].as_u64(), "{e}");
            }
            assert!(found, "{}", r["findings"]);
        } else {
            assert_eq!(synced, 0, "volatile: no sync");
            assert!(!found, "{}", r["findings"]);
        }
    }
}
