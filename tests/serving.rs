//! `serve` and a real Prometheus scraping it (Debian's package, 1 s scrapes), for the fleet
//! tests: each started for a test and stopped when dropped.

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{out_dir, runtimes::host, tracer};

pub const PROM: &str = "127.0.0.1:9090";

pub fn curl(args: &[&str]) -> (bool, String) {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

pub struct Serve {
    pub child: Child,
    pub addr: String,
}

impl Serve {
    pub fn start(addr: &str, extra: &[&str]) -> Self {
        let log = fs::File::create(out_dir().join(format!("serve-{}.log", addr.replace(':', "_"))))
            .unwrap();
        let child = tracer()
            .env("DOCKER_HOST", host())
            .args(["serve", "--listen", addr])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Serve {
            child,
            addr: addr.to_string(),
        };
        let started = Instant::now();
        loop {
            let (ok, body) = curl(&["-f", &format!("http://{addr}/healthz")]);
            if ok && body.trim() == "ok" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "serve did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        s
    }

    /// A scrape's body (asked again while every place is held, as by a slow reader going away).
    pub fn metrics(&self) -> String {
        let started = Instant::now();
        loop {
            let body = curl(&[&format!("http://{}/metrics", self.addr)]).1;
            if !body.contains("scrapes in progress") || started.elapsed() > Duration::from_secs(20)
            {
                return body;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// SIGTERM; returns the exit status and how long it took.
    pub fn stop(mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        (st, t.elapsed())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Prometheus {
    child: Child,
}

impl Prometheus {
    pub fn start(target: &str) -> Self {
        let dir = PathBuf::from("/run/ot-prometheus");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: overlay-trace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = fs::File::create(out_dir().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROM}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package)");
        let p = Prometheus { child };
        let started = Instant::now();
        // Ready, and the target scraped successfully at least once.
        while p.query_scalar("up{job=\"overlay-trace\"}") != Some(1.0) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "prometheus did not scrape overlay-trace"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        p
    }

    pub fn query(&self, q: &str) -> Vec<Value> {
        let (ok, body) = curl(&[
            "-G",
            &format!("http://{PROM}/api/v1/query"),
            "--data-urlencode",
            &format!("query={q}"),
        ]);
        if !ok {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn query_scalar(&self, q: &str) -> Option<f64> {
        self.query(q)
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|s| s.parse().ok())
    }

    /// label value -> number, for a query that keeps one label.
    pub fn by(&self, q: &str, label: &str) -> BTreeMap<String, f64> {
        self.query(q)
            .iter()
            .filter_map(|r| {
                Some((
                    r["metric"][label].as_str()?.to_string(),
                    r["value"][1].as_str()?.parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
