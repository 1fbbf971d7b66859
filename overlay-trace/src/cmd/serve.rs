//! `overlay-trace serve`: `run`'s probes, filters and naming, running until SIGTERM, with the
//! numbers on `/metrics` for Prometheus and `/healthz` for whatever keeps the tracer alive.
//!
//! The listening socket is bound first, so a second `serve` on the same port fails at once,
//! before it loads anything. The HTTP server (axum) runs on the drain loop's runtime; a scrape
//! copies the numbers under their lock and encodes them on a blocking thread, at most
//! `SCRAPES_MAX` at once.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;

use crate::cli::ServeArgs;

use crate::cmd::{
    session::{Options, Session},
    signals::Signals,
};

use crate::views::report::Report;

use crate::model::fold::lock;
use crate::model::series::{Metrics, Shared};

/// `/healthz` fails when the drain loop's 1 s tick is older than this.
const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Scrapes encoded or being sent at once; a further one gets 503 at once rather than queueing
/// (each holds a body of up to tens of MiB until its client has read it; see `scrape_limits`).
pub const SCRAPES_MAX: usize = 2;

#[derive(Clone)]
struct AppState {
    metrics: Shared,
    registry: Arc<Registry>,
    scrapes: Arc<tokio::sync::Semaphore>,
    /// Bytes a body may have (`--max-body-mib`).
    body_max: usize,
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    // Before anything is made: every ending signal ends serve cleanly, whenever it comes.
    let mut signals = Signals::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The port bound (`--listen 127.0.0.1:0` asks for any free one).
    let bound = listener.local_addr().unwrap_or(args.listen);
    let shared: Shared = Arc::new(Mutex::new(Metrics::new(
        args.forget_after,
        args.max_series as usize,
    )));
    let app = app(shared.clone(), (args.max_body_mib << 20) as usize);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        endpoint(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    eprintln!("overlay-trace: serving http://{bound}/metrics (and /healthz)");
    let traced = trace(&args, shared, &mut signals).await;
    let _ = stop_tx.send(());
    // Scrapes in progress get a moment to finish; the process ends either way.
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    let Some(report) = traced? else {
        eprintln!("overlay-trace: stopped before tracing began");
        return Ok(());
    };
    let c = &report.events;
    eprintln!(
        "overlay-trace: stopped; {} copy-ups, {} lookups, {} mounts traced",
        c.copy_up, c.lookup, c.mount
    );
    Ok(())
}

/// The endpoint's routes over `metrics`: `/metrics` (bodies of at most `body_max` bytes) and
/// `/healthz`.
pub fn app(metrics: Shared, body_max: usize) -> Router {
    let state = AppState {
        metrics: metrics.clone(),
        registry: Arc::new(crate::views::prometheus::registry(metrics)),
        scrapes: Arc::new(tokio::sync::Semaphore::new(SCRAPES_MAX)),
        body_max,
    };
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// `app` served on `listener`, its clients bounded (see `scrape_limits`).
pub fn endpoint(
    listener: tokio::net::TcpListener,
    app: Router,
) -> axum::serve::Serve<crate::cmd::scrape_limits::Guarded, Router, Router> {
    axum::serve(crate::cmd::scrape_limits::Guarded(listener), app)
}

/// The session behind the endpoint, until a signal ends it; no last naming pass (no report
/// waits for names). None when the signal came before tracing began.
async fn trace(args: &ServeArgs, metrics: Shared, signals: &mut Signals) -> Result<Option<Report>> {
    let start = Session::start_unless_signalled(
        Options {
            tracing: args.tracing.clone(),
            metrics: Some(metrics),
            ..Default::default()
        },
        signals,
    );
    let Ok(mut session) = start.await? else {
        return Ok(None);
    };
    loop {
        tokio::select! {
            r = session.step() => r?,
            _ = signals.recv() => break,
        }
    }
    session.finish(Duration::ZERO).await.map(Some)
}

/// OpenMetrics when the scraper accepts it (Prometheus asks for it first), the Prometheus text
/// format otherwise. Encoded on a blocking thread from a snapshot (see `exposition`): never on
/// the runtime thread the drain loop uses.
async fn scrape(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Ok(permit) = s.scrapes.clone().try_acquire_owned() else {
        lock(&s.metrics).health.scrapes_refused += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{SCRAPES_MAX} scrapes in progress; try again\n"),
        )
            .into_response();
    };
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // Counting this one: what a scraper sees says whether others held places meanwhile.
    lock(&s.metrics).health.scrapes_in_progress = SCRAPES_MAX - s.scrapes.available_permits();
    let (registry, metrics, body_max) = (s.registry.clone(), s.metrics.clone(), s.body_max);
    let body = tokio::task::spawn_blocking(move || {
        let mut body = crate::views::prometheus::openmetrics(&registry);
        if let Some((cut, left_out)) = crate::views::prometheus::cut::cut_to(&body, body_max) {
            body = cut;
            lock(&metrics).health.series_cut += left_out;
        }
        if wants_openmetrics {
            body
        } else {
            crate::views::prometheus::prometheus_text(&body)
        }
    })
    .await;
    let Ok(body) = body else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response();
    };
    let kind = if wants_openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    // The place is kept until the body is sent (or its client goes; see `scrape_limits`).
    (
        [(header::CONTENT_TYPE, kind)],
        crate::cmd::scrape_limits::held_body(body, permit),
    )
        .into_response()
}

/// 200 while the probes are attached and the drain loop ticks; 503 otherwise (starting,
/// stopping, or stalled).
async fn healthz(State(s): State<AppState>) -> Response {
    let m = lock(&s.metrics);
    let ticking = m
        .health
        .last_tick
        .is_some_and(|t| t.elapsed() < STALLED_AFTER);
    if m.health.attached && ticking {
        (StatusCode::OK, "ok\n").into_response()
    } else if !m.health.attached {
        (StatusCode::SERVICE_UNAVAILABLE, "probes not attached\n").into_response()
    } else {
        let since = m
            .health
            .last_tick
            .map_or(0, |t| Instant::now().duration_since(t).as_secs());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the drain loop has not ticked for {since} s\n"),
        )
            .into_response()
    }
}
