//! `--max-body-mib`: through the real HTTP layer on loopback, 1,000 synthetic series whose body
//! is larger than the cap come out as a smaller body that is still a whole exposition (every
//! family, `# EOF`), whole series left out (each container's samples all there or all gone),
//! and the number left out counted on /metrics.

mod common;
use common::serve_synthetic;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
};

/// The body of a GET /metrics (HTTP/1.0, so not chunked), OpenMetrics asked for.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let all = String::from_utf8(all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    // HTTP/1.0: the body is not chunked, it ends with the connection.
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.to_string()
}

/// The containers with samples in `body`, and how many sample lines each has.
fn containers(body: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        if let Some(rest) = l.split_once("pod=\"").map(|(_, r)| r) {
            let pod = rest.split('"').next().unwrap().to_string();
            *out.entry(pod).or_default() += 1;
        }
    }
    out
}

#[test]
fn a_body_over_the_cap_leaves_whole_series_out_and_counts_them() {
    // The whole body, uncapped: its size sets the cap at about half.
    let whole = scrape(serve_synthetic(1_000, 1 << 30));
    let all = containers(&whole);
    assert_eq!(all.len(), 1_000);
    let lines_each: BTreeSet<usize> = all.values().copied().collect();
    assert_eq!(lines_each.len(), 1, "every container has as many samples");
    let cap = whole.len() / 2;

    let addr = serve_synthetic(1_000, cap);
    let cut = scrape(addr);
    assert!(
        cut.len() <= cap,
        "{} bytes over the cap of {cap}",
        cut.len()
    );
    assert!(cut.ends_with("# EOF\n"));
    let families = |b: &str| -> BTreeSet<String> {
        b.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(families(&cut), families(&whole), "every family is kept");
    let kept = containers(&cut);
    assert!(
        kept.len() > 100 && kept.len() < 1_000,
        "{} kept",
        kept.len()
    );
    assert!(
        kept.values().all(|n| lines_each.contains(n)),
        "a series cut in part"
    );
    // The next scrape says how many were left out of the one before.
    let next = scrape(addr);
    let counted = next
        .lines()
        .find_map(|l| l.strip_prefix("overlay_trace_scrape_series_cut_total "))
        .expect("the counter")
        .parse::<u64>()
        .unwrap();
    assert_eq!(counted, (1_000 - kept.len()) as u64);
}
