//! `gleak run`: start a command, trace it from its first goroutine, and judge it
//! at its end. The order of the ending's steps is [`gleak::analysis::runflow`]'s; this file
//! carries them out.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use gleak::{
    analysis::gate,
    analysis::known_leaks::{self, Baseline, Date, IgnoreFile, KnownLeaks},
    analysis::runflow::{LoopEnd, Observed, RunEnding, Step},
    analysis::verdict::Verdict,
    output::report::Report,
    process::launch::{self, IfGleakDies},
    Tracer,
};
use nix::sys::signal::Signal;

use super::{
    attach::banner,
    session::{describe_status, exit_code, trace_loop, Launched, Signals},
    Common, FailOn, KnownLeakArgs,
};

/// How the gate judges and what it writes besides the report.
pub struct GateOptions {
    pub fail_on: FailOn,
    /// `--junit FILE`.
    pub junit: Option<PathBuf>,
    /// `--ignore`, `--baseline`, `--write-ignore`.
    pub known_leaks: KnownLeakArgs,
}

pub async fn run(
    gate_options: GateOptions,
    leave_running: bool,
    common: Common,
    command: Vec<OsString>,
    signals: &mut Signals,
) -> Result<i32> {
    let (program, args) = command.split_first().context("no command given")?;
    // Before the command starts: a bad file is a usage error, not a failed run.
    let today = Date::today();
    let mut known_leaks = gate_options.known_leaks.load(today)?;
    let mut tracer = Tracer::new()?;
    let if_gleak_dies = if leave_running { IfGleakDies::Continue } else { IfGleakDies::Kill };
    let child = launch::spawn_stopped(program, args, if_gleak_dies)
        .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    let mut child = Launched::new(child, leave_running);
    let pid = child.pid();
    if let Err(e) = tracer.attach(pid, common.options(true)) {
        child.leave_running = false; // never traced: nothing to leave running
        drop(child);
        return Err(anyhow::Error::new(e).context(format!("cannot trace {}", program.to_string_lossy())));
    }
    banner(&tracer, pid, "running it");
    launch::release(&child.child).context("releasing the command")?;

    let periodic = |tracer: &mut Tracer| common.print_periodic(tracer, pid);
    let end =
        trace_loop(&mut tracer, pid, common.duration, common.interval, Some(&mut child), signals, periodic).await?;
    if end == LoopEnd::ImageChanged {
        say!("gleak: the command exec'd another program; judging what was traced, then waiting for it");
    }

    let (fail_on, fail_on_outlived) = match gate_options.fail_on {
        FailOn::Leak => (Verdict::Leak, false),
        FailOn::Suspect => (Verdict::Suspect, false),
        FailOn::Outlived => (Verdict::Leak, true),
    };
    let mut ending = RunEnding::new(end, leave_running);
    let mut step = ending.start();
    let mut report: Option<Report> = None;
    let mut code = 0;
    loop {
        let observed = match step {
            Step::Finish => return Ok(code),
            Step::Freeze => {
                // Frozen to read what is alive; it may have reached its exit meanwhile.
                launch::signal(pid, Signal::SIGSTOP);
                wait_stopped(pid).await;
                tracer.drain_now();
                Observed::Frozen { at_exit: tracer.target(pid).is_some_and(|t| t.agg.exit_stop.is_some()) }
            }
            Step::RetireExiting => {
                wait_stopped(pid).await;
                if let Some(goid) = tracer.target(pid).and_then(|t| t.agg.exit_stop) {
                    tracer.retire(pid, goid);
                }
                Observed::Done
            }
            Step::Report => {
                report = Some(common.report(&mut tracer, pid, true).context("command vanished")?);
                tracer.detach(pid);
                Observed::Done
            }
            Step::Resume => {
                launch::signal(pid, Signal::SIGCONT);
                Observed::Done
            }
            Step::Wait { forwarded } => {
                let status = child.wait(signals, forwarded).await?;
                if forwarded.is_some() {
                    say!("gleak: PID {pid} {}", describe_status(status));
                }
                Observed::Exited(exit_code(status))
            }
            Step::Judge(how) => {
                let mut report = report.take().context("internal error: judged before a report")?;
                gate::decide_with_known_leaks(&mut report, fail_on, fail_on_outlived, how, &mut known_leaks);
                common.write_final(&report)?;
                gate_options.known_leaks.finish(&report, &known_leaks, today)?;
                if let Some(path) = &gate_options.junit {
                    write_junit(&report, path)?;
                }
                code = report.gate.map_or(0, |g| g.exit_code);
                Observed::Done
            }
            Step::Forward(sig) => {
                // Still our unreaped child: the PID cannot have been reused.
                say!("gleak: passing {sig} on to PID {pid}");
                launch::signal(pid, sig);
                launch::signal(pid, Signal::SIGCONT);
                Observed::Done
            }
            Step::Kill => {
                child.kill();
                Observed::Done
            }
            Step::LeaveRunning => {
                child.leave_running();
                say!("gleak: left PID {pid} running, untraced (--leave-running)");
                Observed::Done
            }
        };
        step = ending.next(observed);
    }
}

/// Waits (briefly) until SIGSTOP has stopped every thread of `pid`.
async fn wait_stopped(pid: u32) {
    for _ in 0..200 {
        if launch::is_stopped(pid) || !gleak::process::target::process_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log::warn!("PID {pid} did not stop; reading its goroutines while it runs");
}

/// Writes `--junit FILE`; says so when the command ran no tests gleak could name.
fn write_junit(report: &Report, path: &Path) -> Result<()> {
    gleak::output::junit::write(report, path).with_context(|| format!("writing --junit {}", path.display()))?;
    let tests = report.tests.iter().filter(|t| !t.is_outside_tests()).count();
    if tests == 0 {
        say!(
            "gleak: wrote {} with no testcase: {} ran no Go test that gleak could name (a `go test -c` binary \
             needs package testing's layout: DWARF, or Go 1.19 or 1.21–1.27)",
            path.display(),
            report.binary
        );
    } else {
        say!("gleak: wrote {} ({tests} tests)", path.display());
    }
    Ok(())
}

impl KnownLeakArgs {
    /// The `--ignore` file and the `--baseline` report, checked.
    fn load(&self, today: Date) -> Result<KnownLeaks> {
        if let (Some(read), Some(written)) = (&self.ignore, &self.write_ignore) {
            let same_file = match (std::fs::canonicalize(read), std::fs::canonicalize(written)) {
                (Ok(a), Ok(b)) => a == b,
                _ => read == written,
            };
            if same_file {
                anyhow::bail!(
                    "--write-ignore {} would overwrite the --ignore file: write to another file and merge",
                    written.display()
                );
            }
        }
        let ignore = self
            .ignore
            .as_deref()
            .map(|p| IgnoreFile::load(p, today))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--ignore: {e}"))?;
        let baseline =
            self.baseline.as_deref().map(Baseline::load).transpose().map_err(|e| anyhow::anyhow!("--baseline: {e}"))?;
        Ok(KnownLeaks::new(ignore, baseline))
    }

    /// After the gate: a warning per entry to act on, and the `--write-ignore` file.
    fn finish(&self, report: &Report, known: &KnownLeaks, today: Date) -> Result<()> {
        if let Some(k) = &report.known_leaks {
            for line in known_leaks::warnings(k) {
                say!("gleak: {line}");
            }
        }
        let Some(path) = &self.write_ignore else { return Ok(()) };
        let counted = known.counted();
        std::fs::write(path, known_leaks::ignore_file_text(counted, today))
            .with_context(|| format!("writing --write-ignore {}", path.display()))?;
        let entries = counted.iter().map(|c| &c.fingerprint).collect::<std::collections::HashSet<_>>().len();
        say!(
            "gleak: wrote {entries} known-leak entries for {} leaking site(s) to {}: replace each reason with why the \
             leak is known, then pass it to --ignore",
            counted.len(),
            path.display()
        );
        Ok(())
    }
}
