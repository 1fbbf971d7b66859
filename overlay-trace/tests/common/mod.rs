//! Shared by the long-run tests, each its own binary so its RSS is its own.

/// A size line of this process's /proc/self/status (`VmHWM`, `VmRSS`...), in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// This process's peak resident set (VmHWM), in KiB.
#[allow(dead_code)] // not every test binary that includes this module uses each function
pub fn vm_hwm_kib() -> u64 {
    status_kib("VmHWM")
}

/// This process's resident set now (VmRSS), in KiB.
#[allow(dead_code)]
pub fn vm_rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// `serve`'s endpoint on a loopback port of its own, over `series` synthetic containers (a
/// mount and a copy-up each), its bodies at most `body_max` bytes.
#[allow(dead_code)]
pub fn serve_synthetic(series: u32, body_max: usize) -> std::net::SocketAddr {
    use overlay_trace::cmd::serve::{app, endpoint};
    use overlay_trace::model::{fold::Collector, series::Metrics};
    use overlay_trace::stream::event::raw;
    use std::sync::{Arc, Mutex};

    let shared = Arc::new(Mutex::new(Metrics::new(
        std::time::Duration::from_secs(86_400),
        // Room for each container and `other`.
        series as usize + 1,
    )));
    let mut c = Collector {
        metrics: Some(shared.clone()),
        ..Default::default()
    };
    for g in 0..series {
        let dev = 100 + g;
        ci_job_mounted(&mut c, dev, 1_000, g, &format!("ci/image:{g}"));
        c.take(&raw::copy_up(dev, "usr/lib/libc.so", 4096, 4096, 10_000));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            endpoint(listener, app(shared, body_max)).await
        })
    });
    addr
}

/// Mounts `dev` (at `start_ns`) and names it as CI job `g`'s container (containerd, namespace
/// `ci`, pod `job-{g}`) running `image`; the mount's key.
#[allow(dead_code)]
pub fn ci_job_mounted(
    c: &mut overlay_trace::model::fold::Collector,
    dev: u32,
    start_ns: u64,
    g: u32,
    image: &str,
) -> overlay_trace::stream::record::MountKey {
    use overlay_trace::enrich::answer::Named;
    use overlay_trace::stream::{
        event::{Dev, raw},
        names::Container,
    };
    c.take(&raw::mount(dev, start_ns));
    let key = c.agg.current(Dev::from_kernel(dev));
    c.apply(Named::Container {
        key,
        container: Container {
            runtime: "containerd".into(),
            id: format!("{g:064x}"),
            name: format!("job-{g}/app"),
            image: image.to_string(),
            namespace: Some("ci".into()),
            pod: Some(format!("job-{g}")),
            ..Default::default()
        },
    });
    key
}
