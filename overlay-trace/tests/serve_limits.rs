//! `serve`'s endpoint against clients that read slowly or not at all, through the real HTTP
//! layer on loopback with 1,000 synthetic series: at most `SCRAPES_MAX` bodies are ever held, a
//! further scrape gets 503 at once, /healthz answers throughout, and a client that stops reading
//! is cut off so its place comes back. Its own test binary, so its RSS is its own.

mod common;
use common::{serve_synthetic, vm_hwm_kib};

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use overlay_trace::cmd::scrape_limits::STALL_MAX;
use overlay_trace::cmd::serve::SCRAPES_MAX;

/// A GET on its own connection; the status line and how long it took (the body is not read).
fn status(addr: std::net::SocketAddr, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    (
        String::from_utf8_lossy(&head).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn slow_scrapers_hold_little_and_lock_no_one_out() {
    let addr = serve_synthetic(1_000, 32 << 20);

    // SCRAPES_MAX clients ask and never read past the status line: each holds a place.
    let stuck: Vec<TcpStream> = (0..SCRAPES_MAX)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    let held = vm_hwm_kib();
    let (line, took) = status(addr, "/metrics");
    assert_eq!(line, "HTTP/1.1 503", "a scrape beyond {SCRAPES_MAX}");
    assert!(took < Duration::from_millis(100), "503 after {took:?}");
    let (line, took) = status(addr, "/healthz");
    assert!(line.starts_with("HTTP/1.1 "), "{line}");
    assert!(took < Duration::from_secs(1), "/healthz after {took:?}");
    // More slow scrapers only get 503s: nothing more is held.
    for _ in 0..20 {
        assert_eq!(status(addr, "/metrics").0, "HTTP/1.1 503");
    }
    let hwm = vm_hwm_kib();
    println!("peak RSS {held} KiB with {SCRAPES_MAX} bodies held, {hwm} KiB after 20 more asks");
    assert!(
        hwm <= 128 * 1024,
        "peak RSS {hwm} KiB over the DaemonSet's 128 MiB"
    );
    assert!(hwm <= held + 8 * 1024, "RSS grew from {held} to {hwm} KiB");

    // The clients that stopped reading are cut off after STALL_MAX: a scrape succeeds again.
    std::thread::sleep(STALL_MAX + Duration::from_secs(2));
    let (line, _) = status(addr, "/metrics");
    assert_eq!(
        line, "HTTP/1.1 200",
        "after the stalled clients were cut off"
    );
    drop(stuck);
}
