//! bpftrace as an independent counter: start it, wait until its probes are attached, stop it and
//! read its maps.
//!
//! bpftrace detaches its probes before its END probe runs and before it prints its maps at exit,
//! and under emulation a detach can take minutes (the kernel waits for every task to pass a
//! quiescent point; on 5.10 CI saw one never end). So the helper adds a probe of its own that
//! prints every map and then a marker while the probes are still attached: on the `kill` syscall,
//! when this process sends signal 0 to a process number of the helper's choosing, or, where
//! bpftrace refuses syscall tracepoints (0.17 on 5.10, whose BTF it cannot read), every second.
//! `stop` takes the first set printed after it was asked, then kills bpftrace and waits (a
//! bounded time) for its detach to end before the next test attaches.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
    process::{Child, Command},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
    time::{Duration, Instant},
};

/// The line the print probe prints after the maps.
const PRINTED: &str = "overlay-trace-tests: maps printed";

/// Process numbers unlikely to exist (signal 0 would do nothing to one anyway; positive, as the
/// syscall tracepoint holds the argument as an unsigned long): each bpftrace of this process its
/// own.
static NEXT_TRIGGER: AtomicI32 = AtomicI32::new(4_190_000);

/// Set once bpftrace refused the `kill` print probe in this process: not tried again.
static KILL_PROBE_REFUSED: AtomicBool = AtomicBool::new(false);

/// How bpftrace is made to print its maps.
enum Printing {
    /// `kill(pid, 0)` makes it print them.
    OnKill(i32),
    /// It prints them every second.
    EachSecond,
    /// Only as it exits after SIGINT (bpftrace refused both print probes).
    AtExit,
}

/// bpftrace running a program; `stop` returns what it printed (map dumps).
pub struct Bpftrace {
    child: Child,
    out: PathBuf,
    printing: Printing,
}

impl Bpftrace {
    /// Starts bpftrace and waits until its BEGIN probe printed "ready" (probes attached).
    pub fn start(program: &str, out: PathBuf) -> Self {
        Self::try_start(program, out).expect("bpftrace refused the program")
    }

    /// As `start`, but None when bpftrace refuses the program (e.g. it cannot resolve a kernel
    /// struct on this kernel) instead of a failed test.
    pub fn try_start(program: &str, out: PathBuf) -> Option<Self> {
        let trigger =
            NEXT_TRIGGER.fetch_add(1, Ordering::SeqCst) + (std::process::id() as i32 % 1000);
        let prints: String = map_names(program)
            .iter()
            .map(|m| format!("print(@{m}); "))
            .collect();
        let body = format!("{{ {prints}printf(\"{PRINTED}\\n\"); }}");
        let tries = [
            (
                format!(
                    "tracepoint:syscalls:sys_enter_kill /args->sig == 0 && args->pid == {trigger}/ {body}"
                ),
                Printing::OnKill(trigger),
            ),
            (format!("interval:s:1 {body}"), Printing::EachSecond),
            (String::new(), Printing::AtExit),
        ];
        for (probe, printing) in tries {
            if matches!(printing, Printing::OnKill(_)) && KILL_PROBE_REFUSED.load(Ordering::SeqCst)
            {
                continue;
            }
            match Self::spawn(&format!("{program}\n{probe}"), &out) {
                Ok(child) => {
                    return Some(Bpftrace {
                        child,
                        out: out.clone(),
                        printing,
                    });
                }
                // The program itself is refused: no print probe makes it pass (each try costs
                // bpftrace's start, up to a minute under emulation).
                Err(why)
                    if why.contains("Unknown struct") || why.contains("Unknown identifier") =>
                {
                    return None;
                }
                // The tracepoint's argument header (bpftrace 0.17 on 5.10): never again here.
                Err(why)
                    if matches!(printing, Printing::OnKill(_)) && why.contains("definitions.h") =>
                {
                    KILL_PROBE_REFUSED.store(true, Ordering::SeqCst);
                }
                Err(_) => {}
            }
        }
        None
    }

    /// bpftrace running `program` once its BEGIN probe printed "ready"; what it printed on
    /// stderr (also passed on to ours) if it ended first.
    fn spawn(program: &str, out: &PathBuf) -> Result<Child, String> {
        let file = fs::File::create(out).unwrap();
        let err_path = out.with_extension("stderr");
        let mut child = Command::new("bpftrace")
            .arg("-e")
            .arg(format!("BEGIN {{ printf(\"ready\\n\"); }} {program}"))
            .stdout(file)
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("bpftrace");
        let started = Instant::now();
        while !printed(out).contains("ready") {
            if child.try_wait().ok().flatten().is_some() {
                let why = printed(&err_path);
                eprint!("{why}");
                return Err(why);
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "bpftrace did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(child)
    }

    /// Has bpftrace print its maps while its probes are still attached and returns the last set;
    /// one that has not printed them within 120 s fails the test saying so (never a hang). It is
    /// then killed and reaped (`kill_and_reap`).
    pub fn stop(mut self) -> String {
        // Sets whose marker is out when asked may have been taken before the workload ended.
        let before = printed(&self.out).matches(PRINTED).count();
        let wanted = match self.printing {
            Printing::AtExit => return self.interrupt(),
            Printing::OnKill(_) => before + 1,
            // A set counted as new may have been taken a moment before it was asked, the next
            // one a second after it.
            Printing::EachSecond => before + 2,
        };
        let asked = Instant::now();
        loop {
            if let Printing::OnKill(trigger) = self.printing {
                // Asked again each half second until the marker is out (a repeat prints after it).
                unsafe { libc::kill(trigger, 0) };
            }
            let text = printed(&self.out);
            if text.matches(PRINTED).count() >= wanted {
                // The last whole set of maps.
                let (before, _) = text.rsplit_once(PRINTED).unwrap();
                let maps = before.rsplit_once(PRINTED).map_or(before, |(_, m)| m);
                let maps = maps.to_string();
                self.kill_and_reap();
                return maps;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("bpftrace ended ({st}) before printing its maps (it printed: {text:?})");
            }
            if asked.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                panic!("bpftrace did not print its maps within 120 s (it printed: {text:?})");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Kills bpftrace and waits up to 60 s for it to be gone, so that its probes' detach is
    /// over before the next test attaches to the same functions (a 5.10 guest died once just
    /// after such a kill, cause unknown); past that, it is reaped in the background, saying so.
    fn kill_and_reap(mut self) {
        let _ = self.child.kill();
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(60) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bpftrace still detaching 60 s after SIGKILL; left to finish in the background");
        std::thread::spawn(move || self.child.wait());
    }

    /// Without a print probe: SIGINT, and the maps bpftrace prints as it exits (after its
    /// detach, so given 300 s).
    fn interrupt(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let asked = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if asked.elapsed() > Duration::from_secs(300) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "bpftrace did not exit within 300 s of SIGINT (it printed: {:?})",
                    printed(&self.out)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        printed(&self.out)
    }
}

fn printed(out: &PathBuf) -> String {
    fs::read_to_string(out).unwrap_or_default()
}

/// The names of the maps a program writes (`@name`), so the print probe can print each.
fn map_names(program: &str) -> BTreeSet<String> {
    program
        .split('@')
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Parses bpftrace map lines such as `@copyups[54]: 7` into key -> value.
pub fn bpftrace_map(output: &str, map: &str) -> BTreeMap<String, u64> {
    let prefix = format!("@{map}[");
    let mut out = BTreeMap::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            if let Some((k, v)) = rest.split_once("]: ") {
                out.insert(k.to_string(), v.trim().parse().unwrap());
            }
        } else if let Some(v) = line.strip_prefix(&format!("@{map}: ")) {
            out.insert(String::new(), v.trim().parse().unwrap());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::map_names;

    #[test]
    fn every_map_a_program_names_is_found_once() {
        let names = map_names("kprobe:f { @a[tid] = count(); @b_2 = sum(@a[tid]); } k { @a = 1; }");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a", "b_2"]);
    }
}
