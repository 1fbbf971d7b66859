//! Parses arguments, dispatches, and turns errors into one line and an exit code:
//! 0 success, 1 failure, 2 bad usage (clap), or the traced command's own status.

use std::process::ExitCode;

use clap::Parser as _;
use overlay_trace::cli::{Cli, Command};
use overlay_trace::cmd::{bench, check, report, run, scenario, serve, top};

/// The commands that trace run on one thread: the drain's (see `cmd::session`).
fn on_runtime<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// A shell-style status as the process's exit code.
fn status(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early: end quietly like other command-line tools
    // instead of panicking on the failed print.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report {
            files,
            json,
            timeline,
            svg,
            html,
            fail_on,
            verify,
        } => {
            return report::report(
                &files,
                report::Outputs {
                    json: json.as_deref(),
                    timeline: timeline.as_deref(),
                    svg: svg.as_deref(),
                    html: html.as_deref(),
                    fail_on: &fail_on,
                    verify,
                },
            );
        }
        Command::Diff {
            base,
            new,
            max_regression,
        } => return report::diff(&base, &new, &max_regression),
        Command::Bench(args) => on_runtime(bench::bench(args)).map(|()| ExitCode::SUCCESS),
        Command::BenchWorkload { scenario, merged } => {
            bench::workload(&scenario, &merged).map(|()| ExitCode::SUCCESS)
        }
        Command::Scenario { events, mount } => {
            scenario::scenario(&events, mount.as_deref()).map(|toml| {
                print!("{toml}");
                ExitCode::SUCCESS
            })
        }
        Command::Check => check::check().map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        Command::Serve(args) => on_runtime(serve::serve(args)).map(|()| ExitCode::SUCCESS),
        Command::Top(args) => {
            // `top | head` closes its stdout while tracing: the write fails (EPIPE) and `top`
            // ends the clean way, probes detached, instead of being killed by SIGPIPE.
            // SAFETY: setting a signal disposition before the runtime's threads start.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            on_runtime(top::top(args)).map(status)
        }
        Command::Run(args) => on_runtime(run::run(args)).map(status),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("overlay-trace: error: {e:#}");
            // Bad input (a scenario, an option) is a usage error, as clap's own.
            if e.chain().any(|c| c.is::<overlay_trace::base::BadInput>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
