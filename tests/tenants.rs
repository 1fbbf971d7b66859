//! What hostile neighbours of `serve` do in the VM tests: clients that read slowly, and a tenant
//! that forges runtimes' paths in namespaces of its own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// What a tenant runs in its own user and mount namespace: overlays at 30 containerd task paths
/// (a tmpfs over /run/containerd, a CRI `config.json` beside each) and one whose upper dir ends in
/// a real container's (`victim`: `.../overlay2/<id>/diff`) layer id, one copy-up each; then it
/// stays a moment so that its namespace can be read.
pub fn tenant_forging(victim: &str) -> String {
    let id = victim
        .trim_end_matches("/diff")
        .rsplit('/')
        .next()
        .unwrap_or_default();
    format!(
        r#"set -e
mount -t tmpfs forged /run/containerd
r=/run/containerd
for i in $(seq 1 30); do
  task=$r/io.containerd.runtime.v2.task/kube-system/etcd-$i
  mkdir -p $task/rootfs $r/l$i $r/u$i $r/w$i
  echo '{{"annotations": {{"io.kubernetes.cri.container-name": "etcd",
    "io.kubernetes.cri.sandbox-name": "etcd-'$i'", "io.kubernetes.cri.sandbox-namespace": "kube-system",
    "io.kubernetes.cri.image-name": "registry.k8s.io/etcd:3.5"}}}}' > $task/config.json
  echo a > $r/l$i/f
  mount -t overlay overlay -o lowerdir=$r/l$i,upperdir=$r/u$i,workdir=$r/w$i $task/rootfs
  echo x >> $task/rootfs/f
done
mkdir -p $r/v/{id}/diff $r/vl $r/vw $r/vm
echo a > $r/vl/f
mount -t overlay overlay -o lowerdir=$r/vl,upperdir=$r/v/{id}/diff,workdir=$r/vw $r/vm
echo x >> $r/vm/f
sleep 8
"#
    )
}

/// Clients that ask for /metrics and then read one byte a second through a small receive
/// buffer (a body too big for the socket buffers waits on the tracer's side, holding its
/// place), asking again whenever they are cut off, until stopped.
pub struct SlowReaders {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u32>>,
    started: Instant,
}

impl SlowReaders {
    pub fn start(addr: &str, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (stop, addr) = (stop.clone(), addr.to_string());
                std::thread::spawn(move || slow_reader(&addr, &stop))
            })
            .collect();
        SlowReaders {
            stop,
            threads,
            started: Instant::now(),
        }
    }

    /// How many times each was served (a 200), and the whole seconds they ran.
    pub fn stop(self) -> (Vec<u32>, u64) {
        let window = self.started.elapsed().as_secs();
        self.stop.store(true, Ordering::SeqCst);
        let served = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        (served, window)
    }
}

fn slow_reader(addr: &str, stop: &AtomicBool) -> u32 {
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let mut served = 0;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let small: libc::c_int = 2048;
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            continue;
        }
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200" {
            served += 1;
        }
        while !stop.load(Ordering::SeqCst) {
            let mut byte = [0u8; 1];
            match s.read(&mut byte) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                _ => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }
    served
}
