//! The plumbing every session shares: the signals that end it, the trace loop,
//! and the command `gleak run` started (never left behind by accident).

use std::{
    process::{Child, ExitStatus},
    time::Duration,
};

use anyhow::{Context, Result};
use gleak::{analysis::runflow::LoopEnd, process::launch, Tracer};
use nix::sys::signal::Signal;
use tokio::signal::unix::{self, SignalKind};

/// The signals that end a session: SIGINT (Ctrl-C), SIGTERM (what `kill`, a CI
/// runner's timeout and a container stop send), SIGHUP (a closed terminal).
pub struct Signals {
    int: unix::Signal,
    term: unix::Signal,
    hup: unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        let on = |kind: SignalKind| unix::signal(kind).context("installing a signal handler");
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// The next of them to arrive. Cancel-safe.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.hup.recv() => Signal::SIGHUP,
        }
    }
}

/// Traces `pid` until `duration` runs out, a signal arrives or the target ends,
/// calling `on_report` every `interval`. `child`: the target is our command, reaped here.
pub async fn trace_loop(
    tracer: &mut Tracer,
    pid: u32,
    duration: Option<Duration>,
    interval: Option<Duration>,
    mut child: Option<&mut Launched>,
    signals: &mut Signals,
    mut on_report: impl FnMut(&mut Tracer),
) -> Result<LoopEnd> {
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let period = interval.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut report_tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut sample_tick = tokio::time::interval(Duration::from_secs(1));
    let mut liveness = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tracer.pump() => {}
            _ = sample_tick.tick() => tracer.sample(),
            _ = report_tick.tick(), if interval.is_some() => {
                tracer.flush_logs();
                on_report(tracer);
            }
            _ = liveness.tick() => {
                let Some(t) = tracer.target(pid) else { return Ok(LoopEnd::TargetExited(None)) };
                if t.agg.exit_stop.is_some() {
                    return Ok(LoopEnd::ExitStop);
                }
                // Gone first: the process, not the PID (which another may hold now).
                match child.as_deref_mut() {
                    Some(c) => {
                        if let Some(status) = c.try_wait().context("waiting for the command")? {
                            return Ok(LoopEnd::TargetExited(Some(exit_code(status))));
                        }
                    }
                    None if !t.target.process_alive() => return Ok(LoopEnd::TargetExited(None)),
                    None => {}
                }
                if !t.target.same_image() {
                    return Ok(LoopEnd::ImageChanged);
                }
            }
            sig = signals.recv() => return Ok(LoopEnd::Interrupted(sig)),
            _ = sleep_until(deadline) => return Ok(LoopEnd::Deadline),
        }
    }
}

/// How long a command gets to end after gleak passed it a signal, before SIGKILL.
const FORWARD_GRACE: Duration = Duration::from_secs(5);

/// The command of `gleak run`, our child. On every way out of `run` that does not
/// reap it (an error included), it is stopped: killed and reaped, or with
/// `--leave-running` resumed and left to run.
pub struct Launched {
    pub child: Child,
    pub leave_running: bool,
    /// Reaped, or deliberately left running: nothing to do on drop.
    settled: bool,
}

impl Launched {
    /// `child`, started by [`launch::spawn_stopped`].
    pub fn new(child: Child, leave_running: bool) -> Self {
        Self { child, leave_running, settled: false }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.settled |= status.is_some();
        Ok(status)
    }

    /// Waits for the command to end. A signal gleak receives meanwhile is passed on
    /// (the command is in its own process group: a terminal's did not reach it);
    /// once one was (`forwarded`), the command is killed after [`FORWARD_GRACE`] or
    /// at the next signal.
    pub async fn wait(&mut self, signals: &mut Signals, mut forwarded: Option<Signal>) -> Result<ExitStatus> {
        let pid = self.pid();
        let mut grace_end = forwarded.map(|_| tokio::time::Instant::now() + FORWARD_GRACE);
        loop {
            if let Some(status) = self.try_wait().context("waiting for the command")? {
                return Ok(status);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                sig = signals.recv() => match forwarded {
                    None => {
                        say!("gleak: {}: passing it on to PID {pid} and waiting for it", sig);
                        launch::signal(pid, sig);
                        forwarded = Some(sig);
                        grace_end = Some(tokio::time::Instant::now() + FORWARD_GRACE);
                    }
                    Some(_) => {
                        say!("gleak: {} again: killing PID {pid}", sig);
                        self.kill();
                        grace_end = None;
                    }
                },
                _ = sleep_until(grace_end) => {
                    say!(
                        "gleak: PID {pid} still running {}s after {}; killing it",
                        FORWARD_GRACE.as_secs(),
                        forwarded.unwrap_or(Signal::SIGTERM)
                    );
                    self.kill();
                    grace_end = None;
                }
            }
        }
    }

    /// SIGKILL, which also ends a stopped process.
    pub fn kill(&self) {
        launch::signal(self.pid(), Signal::SIGKILL);
    }

    /// Lets a command gleak stopped run on, untraced, and forgets it.
    pub fn leave_running(&mut self) {
        launch::signal(self.pid(), Signal::SIGCONT);
        self.settled = true;
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if self.leave_running {
            launch::signal(self.pid(), Signal::SIGCONT);
        } else {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A command's exit code as a shell reports it: its status, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// `exited with status 0`, `killed by SIGTERM`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal().and_then(|s| Signal::try_from(s).ok())) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by {sig}"),
        _ => format!("ended ({status})"),
    }
}
