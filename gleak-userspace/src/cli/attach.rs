//! `gleak attach`: trace a running process until told to stop, reporting as it goes.

use anyhow::{Context, Result};
use gleak::{analysis::runflow::LoopEnd, Tracer};
use std::time::Duration;

use super::{
    session::{trace_loop, Signals},
    Common,
};

pub fn banner(tracer: &Tracer, pid: u32, what: &str) {
    let Some(t) = tracer.target(pid) else { return };
    let mut probes: Vec<&str> = Vec::new();
    for p in &t.probes {
        if !probes.contains(&p.location.as_str()) {
            probes.push(&p.location);
        }
    }
    say!(
        "gleak: tracing PID {pid}{} {} ({}) · probes: {} ({}) · {} goroutines already running · {what}",
        t.target.ns_pid.map(|p| format!(" (PID {p} in its namespace)")).unwrap_or_default(),
        t.target.exe.display(),
        t.target.binary.go_version,
        probes.join(", "),
        tracer.target_lookup().describe(),
        t.agg.live.len(),
    );
    say!("gleak: {}", t.info.sources);
}

pub async fn attach(pid: u32, common: Common, signals: &mut Signals) -> Result<()> {
    let mut tracer = Tracer::new()?;
    tracer.attach(pid, common.options(false)).with_context(|| format!("cannot trace PID {pid}"))?;
    let interval = common.interval.unwrap_or(Duration::from_secs(10));
    banner(
        &tracer,
        pid,
        &format!(
            "report every {}{}",
            gleak::analysis::verdict::secs(interval.as_secs_f64()),
            match common.duration {
                Some(d) => format!(" for {}", gleak::analysis::verdict::secs(d.as_secs_f64())),
                None => " until Ctrl-C".to_string(),
            }
        ),
    );
    let periodic = |tracer: &mut Tracer| {
        common.print_periodic(tracer, pid);
        if common.stdout_closed() {
            // Nobody reads the reports any more (`--json | head -1`): detach and
            // end quietly, as a filter does on a closed pipe.
            tracer.detach(pid);
            std::process::exit(gleak::error::exit_code::OK);
        }
    };
    match trace_loop(&mut tracer, pid, common.duration, Some(interval), None, signals, periodic).await? {
        LoopEnd::ImageChanged => say!("gleak: PID {pid} exec'd a new program; stopped tracing it"),
        LoopEnd::TargetExited(_) => say!("gleak: PID {pid} is gone (exited or killed)"),
        LoopEnd::Interrupted(sig) => say!("gleak: {}: detaching from PID {pid}", sig),
        LoopEnd::Deadline | LoopEnd::ExitStop => {}
    }
    let report = common.report(&mut tracer, pid, true).context("target vanished")?;
    tracer.detach(pid);
    common.write_final(&report)
}
