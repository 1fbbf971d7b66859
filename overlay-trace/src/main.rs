//! Parses arguments, dispatches, and turns errors into one line and an exit code:
//! 0 success, 1 failure, 2 bad usage (clap), or the traced command's own status.

use std::process::ExitCode;

use clap::Parser as _;
use overlay_trace::cli::{Cli, Command};
use overlay_trace::cmd::{bench, check, report, run, serve, top};

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
        } => {
            return report::report(
                &files,
                report::Outputs {
                    json: json.as_deref(),
                    timeline: timeline.as_deref(),
                    svg: svg.as_deref(),
                    html: html.as_deref(),
                },
            );
        }
        Command::Diff {
            base,
            new,
            max_regression,
        } => return report::diff(&base, &new, &max_regression),
        Command::Bench(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(bench::bench(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::BenchWorkload { scenario, merged } => {
            bench::workload(&scenario, &merged).map(|()| ExitCode::SUCCESS)
        }
        Command::Check => check::check().map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        Command::Serve(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve::serve(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Top(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(top::top(args)))
            .map(|code| ExitCode::from(code.clamp(0, 255) as u8)),
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run::run(args)))
            .map(|code| ExitCode::from(code.clamp(0, 255) as u8)),
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
