//! A real block device for tests that need one: an ext4 image on a loop device, through a
//! dm-delay device whose read delay can be changed while it is mounted (a slow disk, or one
//! that takes 30 s to answer). Writes are never delayed, so populating it stays fast.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use super::stderr;

pub struct Disk {
    name: String,
    loop_dev: String,
    sectors: String,
    /// Where `mount` mounted it in our namespace: unmounted first on drop.
    mounted: Option<PathBuf>,
    image: PathBuf,
}

impl Disk {
    /// `size_mib` of ext4 in the file `image`, at `dev()`, reads not delayed yet.
    pub fn new(image: &Path, size_mib: u32) -> Self {
        let run = |args: &[&str]| -> String {
            let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let img = image.to_str().unwrap();
        run(&["truncate", "-s", &format!("{size_mib}M"), img]);
        run(&["mkfs.ext4", "-q", "-F", img]);
        // Modules in Debian's kernels (already there if built in). The loop device is made by
        // hand: `mount -o loop` is refused in the guest.
        let _ = Command::new("modprobe")
            .args(["-a", "loop", "dm-delay"])
            .status();
        let loop_dev = run(&["losetup", "-f", "--show", img]);
        let sectors = run(&["blockdev", "--getsz", &loop_dev]);
        // Unique per process and disk: a removal deferred while a lookup still waits must not
        // meet the next disk's name.
        static DISKS: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ot-disk-{}-{}",
            std::process::id(),
            DISKS.fetch_add(1, Ordering::Relaxed)
        );
        let table = format!("0 {sectors} delay {loop_dev} 0 0");
        run(&[
            "dmsetup",
            "create",
            "--noudevsync",
            &name,
            "--table",
            &table,
        ]);
        run(&["dmsetup", "mknodes", &name]);
        Self {
            name,
            loop_dev,
            sectors,
            mounted: None,
            image: image.to_path_buf(),
        }
    }

    /// Mounts it (ext4) on `dir`, made if missing, in our namespace.
    pub fn mount(&mut self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        super::sh(&format!("mount -t ext4 {} {}", self.dev(), dir.display()));
        self.mounted = Some(dir.to_path_buf());
    }

    /// The device to mount.
    pub fn dev(&self) -> String {
        format!("/dev/mapper/{}", self.name)
    }

    /// Shell lines that make every read wait `ms` (writes stay fast) and drop what the kernel
    /// has cached, so the next lookup by path reads the disk: for a script that must do it at
    /// a given moment (in its own mount namespace, say).
    pub fn delay_reads_script(&self, ms: u32) -> String {
        let (n, l, s) = (&self.name, &self.loop_dev, &self.sectors);
        format!(
            "sync\n\
             dmsetup suspend --noudevsync {n}\n\
             dmsetup reload --noudevsync {n} --table '0 {s} delay {l} 0 {ms} {l} 0 0'\n\
             dmsetup resume --noudevsync {n}\n\
             echo 3 > /proc/sys/vm/drop_caches"
        )
    }

    /// `delay_reads_script`, now.
    pub fn delay_reads(&self, ms: u32) {
        super::sh(&self.delay_reads_script(ms));
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(dir) = &self.mounted {
            // Lazily if it is busy (an overlay may still have it as a layer).
            let now = Command::new("umount").arg(dir).status();
            if !now.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(dir).status();
            }
        }
        // Still mounted while a lookup waits on it: removed once the last user is gone.
        let _ = Command::new("dmsetup")
            .args(["remove", "--deferred", "--noudevsync", &self.name])
            .status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .status();
        // Its space comes back once the loop device lets go.
        let _ = std::fs::remove_file(&self.image);
    }
}
