//! Argument parsing and the session loops of `gleak attach` and `gleak run`.

use std::{
    ffi::OsString,
    io::IsTerminal,
    path::PathBuf,
    process::{Child, ExitStatus},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gleak::{
    gate::{self, Ending},
    launch,
    pprof::{write_goroutine_profile, ProfileSample},
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
    0    no leak (gleak run: the command's own status when it did not leak)
    1    gleak run: a site reached --fail-on
    2    bad usage, or an error of no class below
    3    no such process, or it exited before gleak could attach
    4    not a Go program gleak can trace (not ELF/x86_64, not Go, Go < 1.19, no function table)
    5    not permitted: not root, or missing CAP_BPF / CAP_PERFMON / CAP_SYS_PTRACE
    6    the kernel or this build lacks what tracing needs (uprobes, BPF ring buffers, eBPF object)
    7    the probe points cannot be found or placed safely in this binary
    130  gleak run interrupted (Ctrl-C) and no leak found";

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
        #[command(flatten)]
        common: Common,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<OsString>,
    },
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
    /// Also write the leak and suspect goroutines of the final report as a goroutine
    /// profile that `go tool pprof` reads.
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
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::Attach { pid, common } => runtime.block_on(attach(pid, common)).map(|()| 0),
        Command::Run { fail_on, common, command } => runtime.block_on(run(fail_on, common, command)),
    }
}

impl Common {
    fn options(&self, stop_at_exit: bool) -> AttachOptions {
        AttachOptions {
            capture_stacks: !self.no_stacks,
            trace_parks: self.trace_parks,
            stop_at_exit,
            classic_sites: self.classic_probes,
        }
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
        let samples: Vec<ProfileSample> = report
            .sites
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Leak | Verdict::Suspect))
            .flat_map(|s| {
                s.paths.iter().filter(|p| p.live > 0).map(move |p| ProfileSample {
                    locations: p.locations.clone(),
                    count: p.live,
                    labels: vec![
                        ("verdict".into(), s.verdict.as_str().into()),
                        ("wait_reason".into(), s.top_wait_reason.clone().unwrap_or_default()),
                        ("go_func".into(), s.go_func.clone()),
                    ],
                })
            })
            .collect();
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

async fn attach(pid: u32, common: Common) -> Result<()> {
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
    if let LoopEnd::ImageChanged = trace_loop(&mut tracer, pid, &common, Some(interval), None).await? {
        eprintln!("gleak: PID {pid} exec'd another program; stopped tracing it");
    }
    let report = tracer.report(pid, true).context("target vanished")?;
    tracer.detach(pid);
    common.print(&report);
    common.write_pprof(&report)?;
    Ok(())
}

/// Why a trace loop ended.
#[derive(Debug)]
enum LoopEnd {
    Deadline,
    Interrupted,
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
    mut child: Option<&mut Child>,
) -> Result<LoopEnd> {
    let deadline = common.duration.map(|d| tokio::time::Instant::now() + d);
    let period = interval.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut report_tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut sample_tick = tokio::time::interval(Duration::from_secs(1));
    let mut liveness = tokio::time::interval(Duration::from_millis(100));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = tracer.pump() => { r.context("reading events")?; }
            _ = sample_tick.tick() => tracer.sample(),
            _ = report_tick.tick(), if interval.is_some() => {
                tracer.flush_logs();
                if let Some(report) = tracer.report(pid, false) {
                    common.print(&report);
                }
            }
            _ = liveness.tick() => {
                let Some(t) = tracer.target(pid) else { return Ok(LoopEnd::TargetExited(None)) };
                if t.agg.exit_stop.is_some() {
                    return Ok(LoopEnd::ExitStop);
                }
                if !t.target.same_image() {
                    return Ok(LoopEnd::ImageChanged);
                }
                match child.as_deref_mut() {
                    Some(c) => {
                        if let Some(status) = c.try_wait().context("waiting for the command")? {
                            return Ok(LoopEnd::TargetExited(Some(status)));
                        }
                    }
                    None if !t.target.is_alive() => return Ok(LoopEnd::TargetExited(None)),
                    None => {}
                }
            }
            _ = &mut ctrl_c => return Ok(LoopEnd::Interrupted),
            _ = sleep_until(deadline) => return Ok(LoopEnd::Deadline),
        }
    }
}

async fn run(fail_on: FailOn, common: Common, command: Vec<OsString>) -> Result<i32> {
    let (program, args) = command.split_first().context("no command given")?;
    let mut tracer = Tracer::new()?;
    let mut child =
        launch::spawn_stopped(program, args).with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    let pid = child.id();
    if let Err(e) = tracer.attach(pid, common.options(true)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(anyhow::Error::new(e).context(format!("cannot trace {}", program.to_string_lossy())));
    }
    banner(&tracer, pid, "running it");
    launch::release(&child).context("releasing the command")?;

    let mut end = trace_loop(&mut tracer, pid, &common, common.interval, Some(&mut child)).await?;
    if let LoopEnd::Deadline | LoopEnd::Interrupted = end {
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
            let report = tracer.report(pid, true).context("command vanished")?;
            tracer.detach(pid);
            launch::signal(pid, libc::SIGCONT);
            let status = exit_code(child.wait().context("waiting for the command")?);
            return finish(report, fail_on, &common, Ending::Exited { status, states_known: true });
        }
        LoopEnd::TargetExited(status) => {
            let status = match status {
                Some(s) => s,
                None => child.wait().context("waiting for the command")?,
            };
            Ending::Exited { status: exit_code(status), states_known: false }
        }
        LoopEnd::ImageChanged => {
            eprintln!("gleak: the command exec'd another program; judging what was traced, then waiting for it");
            let report = tracer.report(pid, true).context("command vanished")?;
            tracer.detach(pid);
            let status = exit_code(child.wait().context("waiting for the command")?);
            return finish(report, fail_on, &common, Ending::Exec { status });
        }
        LoopEnd::Deadline => Ending::Stopped { interrupted: false },
        LoopEnd::Interrupted => Ending::Stopped { interrupted: true },
    };
    let report = tracer.report(pid, true).context("command vanished")?;
    tracer.detach(pid);
    if let Ending::Stopped { .. } = ending {
        // Still our unreaped child: the PID cannot have been reused.
        launch::signal(pid, libc::SIGKILL);
        launch::signal(pid, libc::SIGCONT);
        let _ = child.wait();
    }
    finish(report, fail_on, &common, ending)
}

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
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (try 30s, 5m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be positive"));
    }
    if secs > MAX_DURATION_S {
        return Err(format!("`{s}` is too long (at most a year)"));
    }
    Ok(Duration::from_secs_f64(secs))
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
