//! Argument parsing and the session loops of `gleak attach` and `gleak run`.

use std::{
    ffi::OsString,
    io::IsTerminal,
    path::PathBuf,
    process::{Child, ExitStatus},
    time::Duration,
};

use tokio::signal::unix::{signal, Signal, SignalKind};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gleak::{
    audit,
    gate::{self, Ending},
    launch::{self, signal_name, IfGleakDies},
    pprof::{goroutine_samples, write_goroutine_profile},
    verdict::Verdict,
    AttachOptions, Report, Tracer,
};

const EXAMPLES: &str = "\
EXAMPLES:
    gleak attach -p 4242                    # trace until Ctrl-C, report every 10s
    gleak attach -p 4242 --duration 30s     # trace 30 seconds, then the final report
    gleak attach -p 4242 --json -i 5s       # one JSON report per line, every 5s
    gleak attach -p 4242 --pprof leaks.pb.gz  # also a goroutine profile for `go tool pprof`
    gleak run -- ./server.test -test.run TestAPI   # CI gate: exit 1 if the tests leak goroutines
    gleak run --duration 60s -- ./server    # bound a command that does not end by itself

EXIT CODES:
    0    no leak (gleak run: the command's own status when it did not leak); gleak attach
         ends with 0 on Ctrl-C, SIGTERM or SIGHUP, and when the target exits or is killed
    1    gleak run: a site reached --fail-on
    2    bad usage, or an error of no class below
    3    no such process, or it exited before gleak could attach
    4    not a Go program gleak can trace (not ELF/x86_64, not Go, Go < 1.19, no function table)
    5    not permitted: not root, or missing CAP_BPF / CAP_PERFMON / CAP_SYS_PTRACE
    6    the kernel or this build lacks what tracing needs (uprobes, BPF ring buffers, eBPF object)
    7    the probe points cannot be found or placed safely in this binary
    129  gleak run stopped by SIGHUP and no leak found
    130  gleak run interrupted (Ctrl-C, SIGINT) and no leak found
    143  gleak run stopped by SIGTERM and no leak found

SIGNALS:
    SIGINT, SIGTERM and SIGHUP end both commands the same way: probes detached, final
    report printed. gleak run starts the command in a process group of its own (a
    terminal's Ctrl-C reaches gleak only), judges it frozen, then passes the signal on
    and waits for it (SIGKILL after 5s or on a second signal). The command never
    outlives gleak, even if gleak is killed with SIGKILL, unless --leave-running.";

/// Find goroutine leaks in a running Go program, from the kernel side with eBPF.
#[derive(Parser, Debug)]
#[command(name = "gleak", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to a running Go process and report the `go` statements whose goroutines never exit.
    #[command(after_help = EXAMPLES)]
    Attach {
        /// PID of the Go process.
        #[arg(short, long)]
        pid: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Start a command, trace it from its first goroutine, and fail if goroutines it
    /// created are still alive when it exits (the CI leak gate).
    #[command(after_help = EXAMPLES)]
    Run {
        /// Which verdict fails the gate.
        #[arg(long, value_enum, default_value_t = FailOn::Leak)]
        fail_on: FailOn,
        /// When gleak ends before the command (--duration, a signal, gleak itself
        /// killed), leave the command running, untraced, instead of stopping it.
        #[arg(long)]
        leave_running: bool,
        #[command(flatten)]
        common: Common,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<OsString>,
    },
    /// Audit every Go process of this host, continuously: findings as JSON lines,
    /// metrics for Prometheus. Reads goroutine tables from memory; a process with a
    /// leak or suspect site gets the uprobes and the proof until its verdicts settle.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
}

const AUDIT_EXAMPLES: &str = "EXAMPLES:
    gleak audit                                   # every Go process; metrics on 127.0.0.1:9781/metrics
    gleak audit --exe '/usr/bin/*' --log /var/log/gleak.jsonl
    gleak audit --cgroup kubepods --listen 0.0.0.0:9781   # every pod's Go processes, for a fleet
    gleak audit --pid 4242 --interval 5s --duration 10m

FINDINGS (one JSON object per line): kind `process` (audited from now on), `verdict`
(a site's verdict changed; `site.previous` says from what), `gone`, `skipped` (with
the reason), `final` (at the end, every leak or suspect site once more).";

#[derive(Parser, Debug)]
struct AuditArgs {
    /// How often every process is read.
    #[arg(short, long, value_parser = parse_duration, default_value = "10s")]
    interval: Duration,
    /// Stop after this long (default: until SIGINT, SIGTERM or SIGHUP).
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics; `off` for none. Another
    /// address than loopback exposes them to the network: an explicit choice.
    #[arg(long, default_value = "127.0.0.1:9781")]
    listen: String,
    /// Append findings to this file instead of printing them.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Only these processes (repeatable).
    #[arg(long)]
    pid: Vec<u32>,
    /// Only executables whose path matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exe: Vec<String>,
    /// Never executables whose path matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Only processes whose cgroup path contains this (a container id, `kubepods`, a unit).
    #[arg(long, value_name = "TEXT")]
    cgroup: Option<String>,
    /// Most processes audited at once (the rest are counted in the metrics).
    #[arg(long, default_value_t = 256)]
    max_processes: usize,
    /// Leave out processes with more live goroutines than this (looked at again later).
    #[arg(long, default_value_t = 1_000_000)]
    max_goroutines: u64,
    /// Sites per process with metric series of their own; the rest are folded.
    #[arg(long, default_value_t = 10)]
    top_sites: usize,
    /// No creation stacks while a process has the uprobes.
    #[arg(long)]
    no_stacks: bool,
}

#[derive(Parser, Debug)]
struct Common {
    /// Stop after this long (e.g. 30s, 5m); `run` stops the command then.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print a report this often (`attach`; `run` prints only the final one unless given).
    #[arg(short, long, value_parser = parse_duration)]
    interval: Option<Duration>,
    /// One JSON document per report, one per line, on stdout (schema: docs/report.schema.json).
    #[arg(long)]
    json: bool,
    /// Also write the final report's goroutines as a goroutine profile that `go tool
    /// pprof` reads: blocked ones by their current stack, the others by their
    /// creation stack; labels verdict, created_at, wait_reason.
    #[arg(long, value_name = "FILE")]
    pprof: Option<PathBuf>,
    /// Show at most this many creation sites.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Explain (creation stacks, reasons) this many leak or suspect sites.
    #[arg(long, default_value_t = 3)]
    stacks: usize,
    /// Do not record creation stacks (saves one stack walk per `go` statement).
    #[arg(long)]
    no_stacks: bool,
    /// Also probe runtime.gopark: exact time each goroutine blocked, at one more
    /// probe hit per blocking operation.
    #[arg(long)]
    trace_parks: bool,
    /// Place probes on function entries and RETs rather than on the CALLs the
    /// kernel emulates (two traps per hit instead of one; for comparison).
    #[arg(long, hide_short_help = true)]
    classic_probes: bool,
    /// Do not probe goroutine exits (one probe hit per goroutine instead of two):
    /// exits are read from memory, from reused `g`s and a status read every second,
    /// so lifetimes are less exact.
    #[arg(long)]
    no_exit_probe: bool,
    /// Do not prove which blocked goroutines can never run again (the proof reads
    /// the target's heap at each report, without stopping it).
    #[arg(long)]
    no_proof: bool,
    /// List the runtime's own goroutines (GC workers, finalizer, sweeper…) site by
    /// site instead of folding them into one `runtime` row.
    #[arg(long)]
    all: bool,
    /// Colour: auto (when stdout is a terminal), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailOn {
    Leak,
    Suspect,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

pub fn main() -> Result<i32> {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    gleak::probes::preflight()?;
    // Current-thread: `gleak run` forks its command from the main thread, which the
    // command's parent-death signal is tied to (see `launch::spawn_stopped`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // First: from here on these signals end gleak with its final report.
        let mut signals = Signals::install()?;
        match cli.command {
            Command::Attach { pid, common } => attach(pid, common, &mut signals).await.map(|()| 0),
            Command::Run { fail_on, leave_running, common, command } => {
                run(fail_on, leave_running, common, command, &mut signals).await
            }
            Command::Audit(args) => audit(args, &mut signals).await.map(|()| 0),
        }
    })
}

/// The signals that end a session: SIGINT (Ctrl-C), SIGTERM (what `kill`, a CI
/// runner's timeout and a container stop send), SIGHUP (a closed terminal).
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        let on = |kind: SignalKind| signal(kind).context("installing a signal handler");
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// The next of them to arrive. Cancel-safe.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

impl Common {
    fn options(&self, stop_at_exit: bool) -> AttachOptions {
        AttachOptions {
            capture_stacks: !self.no_stacks,
            trace_parks: self.trace_parks,
            stop_at_exit,
            classic_sites: self.classic_probes,
            prove: !self.no_proof,
            exit_probe: !self.no_exit_probe,
            probes: true,
        }
    }

    /// A report of `pid`, the runtime's own goroutines folded into one row unless `--all`.
    fn report(&self, tracer: &mut Tracer, pid: u32, is_final: bool) -> Option<Report> {
        let mut report = tracer.report(pid, is_final)?;
        if !self.all {
            report.fold_runtime_sites();
        }
        Some(report)
    }

    fn print(&self, report: &Report) {
        if self.json {
            println!("{}", report.to_json_line());
        } else {
            let color = match self.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            print!("{}", report.render(self.top, self.stacks, color));
        }
    }

    fn write_pprof(&self, report: &Report) -> Result<()> {
        let Some(path) = &self.pprof else {
            return Ok(());
        };
        let samples = goroutine_samples(report);
        write_goroutine_profile(path, &samples).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "gleak: wrote {} goroutines in {} stacks to {} (go tool pprof -traces {})",
            samples.iter().map(|s| s.count).sum::<u64>(),
            samples.len(),
            path.display(),
            path.display()
        );
        Ok(())
    }
}

fn banner(tracer: &Tracer, pid: u32, what: &str) {
    let Some(t) = tracer.target(pid) else { return };
    let mut probes: Vec<&str> = Vec::new();
    for p in &t.probes {
        if !probes.contains(&p.location.as_str()) {
            probes.push(&p.location);
        }
    }
    eprintln!(
        "gleak: tracing PID {pid}{} {} ({}) · probes: {} · {} goroutines already running · {what}",
        t.target.ns_pid.map(|p| format!(" (PID {p} in its namespace)")).unwrap_or_default(),
        t.target.exe.display(),
        t.target.binary.go_version,
        probes.join(", "),
        t.agg.live.len(),
    );
    eprintln!("gleak: {}", t.info.sources);
}

async fn attach(pid: u32, common: Common, signals: &mut Signals) -> Result<()> {
    let mut tracer = Tracer::new()?;
    tracer.attach(pid, common.options(false)).with_context(|| format!("cannot trace PID {pid}"))?;
    let interval = common.interval.unwrap_or(Duration::from_secs(10));
    banner(
        &tracer,
        pid,
        &format!(
            "report every {}{}",
            gleak::verdict::secs(interval.as_secs_f64()),
            match common.duration {
                Some(d) => format!(" for {}", gleak::verdict::secs(d.as_secs_f64())),
                None => " until Ctrl-C".to_string(),
            }
        ),
    );
    match trace_loop(&mut tracer, pid, &common, Some(interval), None, signals).await? {
        LoopEnd::ImageChanged => eprintln!("gleak: PID {pid} exec'd a new program; stopped tracing it"),
        LoopEnd::TargetExited(_) => eprintln!("gleak: PID {pid} is gone (exited or killed)"),
        LoopEnd::Interrupted(sig) => eprintln!("gleak: {}: detaching from PID {pid}", signal_name(sig)),
        LoopEnd::Deadline | LoopEnd::ExitStop => {}
    }
    let report = common.report(&mut tracer, pid, true).context("target vanished")?;
    tracer.detach(pid);
    common.print(&report);
    common.write_pprof(&report)?;
    Ok(())
}

/// Why a trace loop ended.
#[derive(Debug)]
enum LoopEnd {
    Deadline,
    /// gleak received this signal.
    Interrupted(i32),
    /// The target is gone; for a child of ours, with its status (already reaped).
    TargetExited(Option<ExitStatus>),
    /// The target exec'd another program: what gleak attached to is gone.
    ImageChanged,
    /// `gleak run`: the process reached its exit and is held stopped.
    ExitStop,
}

async fn trace_loop(
    tracer: &mut Tracer,
    pid: u32,
    common: &Common,
    interval: Option<Duration>,
    mut child: Option<&mut Launched>,
    signals: &mut Signals,
) -> Result<LoopEnd> {
    let deadline = common.duration.map(|d| tokio::time::Instant::now() + d);
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
                if let Some(report) = common.report(tracer, pid, false) {
                    common.print(&report);
                }
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
                            return Ok(LoopEnd::TargetExited(Some(status)));
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
struct Launched {
    child: Child,
    leave_running: bool,
    /// Reaped, or deliberately left running: nothing to do on drop.
    settled: bool,
}

impl Launched {
    fn pid(&self) -> u32 {
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
    async fn wait(&mut self, signals: &mut Signals, mut forwarded: Option<i32>) -> Result<ExitStatus> {
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
                        eprintln!("gleak: {}: passing it on to PID {pid} and waiting for it", signal_name(sig));
                        launch::signal(pid, sig);
                        forwarded = Some(sig);
                        grace_end = Some(tokio::time::Instant::now() + FORWARD_GRACE);
                    }
                    Some(_) => {
                        eprintln!("gleak: {} again: killing PID {pid}", signal_name(sig));
                        self.kill();
                        grace_end = None;
                    }
                },
                _ = sleep_until(grace_end) => {
                    eprintln!(
                        "gleak: PID {pid} still running {}s after {}; killing it",
                        FORWARD_GRACE.as_secs(),
                        signal_name(forwarded.unwrap_or(libc::SIGTERM))
                    );
                    self.kill();
                    grace_end = None;
                }
            }
        }
    }

    /// SIGKILL, which also ends a stopped process.
    fn kill(&self) {
        launch::signal(self.pid(), libc::SIGKILL);
    }

    /// Lets a command gleak stopped run on, untraced, and forgets it.
    fn leave_running(&mut self) {
        launch::signal(self.pid(), libc::SIGCONT);
        self.settled = true;
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if self.leave_running {
            launch::signal(self.pid(), libc::SIGCONT);
        } else {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

async fn run(
    fail_on: FailOn,
    leave_running: bool,
    common: Common,
    command: Vec<OsString>,
    signals: &mut Signals,
) -> Result<i32> {
    let (program, args) = command.split_first().context("no command given")?;
    let mut tracer = Tracer::new()?;
    let if_gleak_dies = if leave_running { IfGleakDies::Continue } else { IfGleakDies::Kill };
    let child = launch::spawn_stopped(program, args, if_gleak_dies)
        .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    let mut child = Launched { child, leave_running, settled: false };
    let pid = child.pid();
    if let Err(e) = tracer.attach(pid, common.options(true)) {
        child.leave_running = false; // never traced: nothing to leave running
        drop(child);
        return Err(anyhow::Error::new(e).context(format!("cannot trace {}", program.to_string_lossy())));
    }
    banner(&tracer, pid, "running it");
    launch::release(&child.child).context("releasing the command")?;

    let mut end = trace_loop(&mut tracer, pid, &common, common.interval, Some(&mut child), signals).await?;
    if let LoopEnd::Deadline | LoopEnd::Interrupted(_) = end {
        // Freeze it to read what is alive; it may have reached its exit meanwhile.
        launch::signal(pid, libc::SIGSTOP);
        wait_stopped(pid).await;
        tracer.drain_now();
        if tracer.target(pid).is_some_and(|t| t.agg.exit_stop.is_some()) {
            end = LoopEnd::ExitStop;
        }
    }
    let ending = match end {
        LoopEnd::ExitStop => {
            wait_stopped(pid).await;
            let exiting = tracer.target(pid).and_then(|t| t.agg.exit_stop);
            if let Some(goid) = exiting {
                tracer.retire(pid, goid); // goleak does not count the goroutine calling exit
            }
            let report = common.report(&mut tracer, pid, true).context("command vanished")?;
            tracer.detach(pid);
            launch::signal(pid, libc::SIGCONT);
            let status = exit_code(child.wait(signals, None).await?);
            return finish(report, fail_on, &common, Ending::Exited { status, states_known: true });
        }
        LoopEnd::TargetExited(status) => {
            let status = match status {
                Some(s) => s,
                None => child.wait(signals, None).await?,
            };
            Ending::Exited { status: exit_code(status), states_known: false }
        }
        LoopEnd::ImageChanged => {
            eprintln!("gleak: the command exec'd another program; judging what was traced, then waiting for it");
            let report = common.report(&mut tracer, pid, true).context("command vanished")?;
            tracer.detach(pid);
            let status = exit_code(child.wait(signals, None).await?);
            return finish(report, fail_on, &common, Ending::Exec { status });
        }
        LoopEnd::Deadline => Ending::Stopped { signal: None },
        LoopEnd::Interrupted(sig) => Ending::Stopped { signal: Some(sig) },
    };
    let report = common.report(&mut tracer, pid, true).context("command vanished")?;
    tracer.detach(pid);
    // Judged and printed first: what follows may take the command a while.
    let code = finish(report, fail_on, &common, ending)?;
    if let Ending::Stopped { signal } = ending {
        // Still our unreaped child: the PID cannot have been reused.
        if leave_running {
            child.leave_running();
            eprintln!("gleak: left PID {pid} running, untraced (--leave-running)");
        } else if let Some(sig) = signal {
            eprintln!("gleak: passing {} on to PID {pid}", signal_name(sig));
            launch::signal(pid, sig);
            launch::signal(pid, libc::SIGCONT);
            let status = child.wait(signals, Some(sig)).await?;
            eprintln!("gleak: PID {pid} {}", describe_status(status));
        } else {
            child.kill();
            child.wait(signals, None).await?;
        }
    }
    Ok(code)
}

/// `exited with status 0`, `killed by SIGTERM`.
fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
        _ => format!("ended ({status})"),
    }
}

/// Judges the report, prints it (and the profile), and returns gleak's exit code.
fn finish(mut report: Report, fail_on: FailOn, common: &Common, ending: Ending) -> Result<i32> {
    let fail_on = match fail_on {
        FailOn::Leak => Verdict::Leak,
        FailOn::Suspect => Verdict::Suspect,
    };
    gate::judge(&mut report, fail_on, ending);
    common.print(&report);
    common.write_pprof(&report)?;
    Ok(report.gate.map_or(0, |g| g.exit_code))
}

/// Waits (briefly) until SIGSTOP has stopped every thread of `pid`.
async fn wait_stopped(pid: u32) {
    for _ in 0..200 {
        if launch::is_stopped(pid) || !gleak::target::process_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log::warn!("PID {pid} did not stop; reading its goroutines while it runs");
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Longest `--duration`/`--interval`: timers beyond it would overflow `Instant`.
const MAX_DURATION_S: f64 = 365.0 * 24.0 * 3600.0;

/// `500ms`, `30s`, `5m`, `1h`, or bare seconds.
async fn audit(args: AuditArgs, signals: &mut Signals) -> Result<()> {
    let globs = |patterns: &[String], what: &str| -> Result<Option<globset::GlobSet>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut set = globset::GlobSetBuilder::new();
        for p in patterns {
            set.add(globset::Glob::new(p).with_context(|| format!("--{what} {p}: not a glob"))?);
        }
        Ok(Some(set.build().with_context(|| format!("--{what}"))?))
    };
    let filter = audit::discover::Filter {
        pids: args.pid.clone(),
        exe: globs(&args.exe, "exe")?,
        exclude: globs(&args.exclude, "exclude")?,
        cgroup: args.cgroup.clone(),
    };
    let opts = audit::AuditOptions {
        filter,
        max_processes: args.max_processes,
        max_goroutines: args.max_goroutines,
        top_sites: args.top_sites,
        capture_stacks: !args.no_stacks,
        ..audit::AuditOptions::default()
    };
    let out: Box<dyn std::io::Write + Send> = match &args.log {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening --log {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let registry = prometheus::Registry::new();
    let metrics = audit::metrics::Metrics::new(&registry).context("setting up the metrics")?;
    let _server = match args.listen.as_str() {
        "off" => None,
        addr => {
            let addr: std::net::SocketAddr =
                addr.parse().with_context(|| format!("--listen {addr}: not an address like 127.0.0.1:9781"))?;
            let server =
                audit::metrics::Server::start(addr, registry).with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!("gleak: metrics at http://{}/metrics", server.addr);
            Some(server)
        }
    };
    let mut auditor = audit::Auditor::new(opts, out, Some(metrics))?;
    auditor.discover();
    eprintln!(
        "gleak: auditing {} Go processes · every {} · {}",
        auditor.watched(),
        humantime::format_duration(args.interval),
        args.duration.map_or("until Ctrl-C".to_string(), |d| format!("for {}", humantime::format_duration(d)))
    );
    auditor.review();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut scan = tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = auditor.pump() => {}
            _ = sample.tick() => auditor.tracer_mut().sample(),
            _ = scan.tick() => {
                auditor.discover();
                auditor.review();
            }
            sig = signals.recv() => {
                eprintln!("gleak: {}: detaching from every process", signal_name(sig));
                break;
            }
            _ = sleep_until(deadline) => break,
        }
    }
    auditor.finish();
    Ok(())
}

/// A duration as `humantime` writes them (`30s`, `500ms`, `5m`, `1h 30m`), or a
/// bare number of seconds (`1.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let parsed = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= MAX_DURATION_S => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("`{s}` must be positive and at most a year")),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}; try 30s, 5m, 500ms)"))?
        }
    };
    if parsed.is_zero() {
        return Err(format!("`{s}` must be positive"));
    }
    if parsed.as_secs_f64() > MAX_DURATION_S {
        return Err(format!("`{s}` is too long (at most a year)"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("10000000000000000000s").is_err());
        assert!(parse_duration("8760h").is_ok());
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn cli_parses() {
        Cli::command_for_test();
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
