//! The command of `run -- CMD`: started once the probes are attached, traced until it exits, and
//! stopped the way shells and `timeout(1)` stop a job when the tracer is told to end first.

use std::{os::unix::process::ExitStatusExt as _, process::ExitStatus, time::Duration};

use anyhow::{Context as _, Result};

/// How long CMD has to exit after SIGTERM before it gets SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

pub struct TracedCommand {
    child: tokio::process::Child,
    status: Option<ExitStatus>,
}

/// The exit code a shell would report: the code, or 128 + the signal that killed it.
pub fn shell_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl TracedCommand {
    pub fn spawn(argv: &[String]) -> Result<Self> {
        let (prog, rest) = argv.split_first().context("empty command")?;
        let child = tokio::process::Command::new(prog)
            .args(rest)
            // Never left behind, whatever ends the tracer.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {prog}"))?;
        Ok(Self {
            child,
            status: None,
        })
    }

    /// Waits for CMD to exit by itself. Cancel-safe: call it again after a cancelled wait.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self.child.wait().await.context("waiting for the command")?;
        self.status = Some(s);
        Ok(s)
    }

    pub fn exited(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Ends CMD if it still runs: SIGTERM, then SIGKILL after `GRACE`; waits for it either way.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        if let Ok(Some(s)) = self.child.try_wait() {
            self.status = Some(s);
            return Ok(s);
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match tokio::time::timeout(GRACE, self.child.wait()).await {
            Ok(s) => {
                let s = s.context("waiting for the command")?;
                self.status = Some(s);
                Ok(s)
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let s = self.child.wait().await.context("waiting for the command")?;
                self.status = Some(s);
                Ok(s)
            }
        }
    }
}
