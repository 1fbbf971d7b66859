//! `report events.ndjson --verify`: each finding whose fix is a mount option is tried. The
//! finding's mount is turned into a scenario (`cmd::scenario`) and run by the bench on its own
//! overlay, without the option and with it; the finding keeps both measures beside its estimate.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::{
    base::BadInput,
    cmd::{
        bench::{measure, private_mount_namespace, scenario::Scenario},
        scenario,
    },
    kernel::probes::ProbesArg,
    stream::record::MountKey,
    stream::trigger::Trigger,
    views::{
        findings::{Measured, Verified, mount_option_fix},
        report::Report,
    },
};

/// The copy-ups of `r` the finding is about: those asked for by a change of metadata alone
/// (`metadata-copy`, the one finding verified so far).
/// Bytes of filler a verified scenario may ask the bench to write (its tmpfs is in memory).
const VERIFY_BYTES_MAX: u64 = 8 << 30;

fn measured(r: &Report) -> Measured {
    let mut m = Measured {
        copy_ups: 0,
        data_bytes: 0,
        total_ns: 0,
    };
    for mount in &r.mounts {
        for (name, t) in &mount.copy_up.by_trigger {
            if Trigger::from_name(name).is_some_and(Trigger::metadata_only) {
                m.copy_ups += t.count;
                m.data_bytes += t.data_bytes;
                m.total_ns += t.total_ns;
            }
        }
    }
    m
}

/// Tries the fixes of `report`'s findings (the report rebuilt from `events`). Needs root and a
/// kernel `run` can trace; runs before any other thread exists (it makes a private mount
/// namespace for the bench's overlays).
pub fn verify(events: &Path, report: &mut Report) -> Result<()> {
    if !report
        .findings
        .iter()
        .any(|f| mount_option_fix(&f.id).is_some())
    {
        return Ok(());
    }
    let mut caps = crate::kernel::preflight::inspect();
    crate::kernel::preflight::ensure_overlay_loaded(&mut caps);
    crate::kernel::preflight::require_for_run(&caps)?;
    private_mount_namespace()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mounts = scenario::read(events)?;
    for f in &mut report.findings {
        let Some(option) = mount_option_fix(&f.id) else {
            continue;
        };
        let key = f.dev.parse().ok().map(|dev| MountKey {
            dev,
            generation: f.mount_gen,
        });
        let Some((key, recorded)) = key.and_then(|k| mounts.get_key_value(&k)) else {
            bail!(BadInput(format!(
                "--verify: the mount of finding {} ({}) is not in {}",
                f.id,
                f.mount,
                events.display()
            )));
        };
        let (s, _) = scenario::derive(recorded, &recorded.label(key));
        let bytes: u64 = s.files.iter().map(|f| f.size).fold(0, u64::saturating_add);
        if bytes > VERIFY_BYTES_MAX {
            bail!(BadInput(format!(
                "--verify {}: the recorded mount's files hold {bytes} bytes; at most \
                 {VERIFY_BYTES_MAX} are written for a bench run",
                f.id
            )));
        }
        let source = toml::to_string(&s).context("cannot write the scenario")?;
        // The bench's own checks (confined paths, bounded counts) before anything is made.
        Scenario::parse(&source)?;
        let run = |opts: &str| {
            eprintln!(
                "verify {}: the recorded start on the bench{}",
                f.id,
                if opts.is_empty() {
                    String::new()
                } else {
                    format!(", {opts}")
                }
            );
            let (r, _) = rt
                .block_on(measure(&s, &source, "", opts, ProbesArg::Auto))
                .with_context(|| format!("--verify {}", f.id))?;
            // A bench that cannot tell what asked for its copy-ups measures nothing here.
            if r.mounts
                .iter()
                .any(|m| m.copy_up.by_trigger.contains_key("unknown"))
            {
                bail!(
                    "--verify {}: this kernel does not tell what asked for each copy-up \
                     (x86_64 with BTF's pt_regs needed)",
                    f.id
                );
            }
            Ok::<_, anyhow::Error>(measured(&r))
        };
        let without = run("")?;
        let with = run(option)?;
        f.verified = Some(Verified {
            mount_option: option.into(),
            without,
            with,
        });
    }
    Ok(())
}
