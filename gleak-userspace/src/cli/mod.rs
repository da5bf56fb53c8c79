//! The command line: arguments, and what each report is written to. Each
//! subcommand's session lives in a module of its own.

mod attach;
mod audit;
mod run;
mod session;

use std::{
    cell::Cell,
    ffi::OsString,
    io::{IsTerminal, Write as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gleak::{
    output::pprof::{goroutine_samples, write_goroutine_profile},
    tracing::privilege::Reads,
    AttachOptions, Report, Tracer,
};
use session::Signals;

const EXAMPLES: &str = "\
EXAMPLES:
    gleak attach -p 4242                    # trace until Ctrl-C, report every 10s
    gleak attach -p 4242 --duration 30s     # trace 30 seconds, then the final report
    gleak attach -p 4242 --json -i 5s       # one JSON report per line, every 5s
    gleak attach -p 4242 --pprof leaks.pb.gz  # also a goroutine profile for `go tool pprof`
    gleak attach -p 4242 --html leaks.html  # also a page with charts and flame graphs
    gleak run -- ./server.test -test.run TestAPI   # CI gate: exit 1 if the tests leak goroutines
    gleak run --duration 60s -- ./server    # bound a command that does not end by itself
    gleak run --ignore known-leaks.toml -- ./pkg.test   # CI gate minus the leaks known and explained
    gleak run --write-ignore known-leaks.toml -- ./pkg.test   # adopt: list today's leaks, reasons to fill in

EXIT CODES:
    0    no leak (gleak run: the command's own status when it did not leak); gleak attach
         ends with 0 on Ctrl-C, SIGTERM or SIGHUP, and when the target exits or is killed
    1    gleak run: a site reached --fail-on
    2    bad usage (an unreadable or invalid --ignore or --baseline file included), or an
         error of no class below
    3    no such process, or it exited before gleak could attach
    4    not a Go program gleak can trace (not ELF x86_64/aarch64, not Go, Go < 1.19, no function table)
    5    not permitted: a capability is missing (CAP_SYS_ADMIN for uprobes on kernels 6.16+ and
         those fixed for CVE-2025-38466, else CAP_BPF and CAP_PERFMON; CAP_SYS_PTRACE to read
         another user's process; CAP_SYS_RESOURCE before 5.11); the message names it
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
        /// Also write a JUnit XML file of the test binary's tests: one testcase per
        /// test gleak saw run, a failure for each whose goroutines fail the gate.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[command(flatten)]
        known_leaks: KnownLeakArgs,
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
    /// Also write each report as one self-contained HTML page (no network): live
    /// goroutines per site over time, wait reasons, creation stacks as a flame
    /// graph, verdicts and their reasons. Rewritten at every report.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
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
    /// Whoever read stdout closed it (`gleak attach --json | head -1`): no more
    /// reports are printed there.
    #[arg(skip)]
    stdout_closed: Cell<bool>,
}

/// `gleak run`'s known leaks: leaks the gate does not count (they stay in the report).
#[derive(Parser, Debug)]
struct KnownLeakArgs {
    /// Known leaks (TOML): `[[leak]]` entries, each with a `fingerprint` (as the
    /// --json report prints it) or globs on `function`, `go_func`, `blocked_in`,
    /// `file`, a `reason`, and optionally `expires = "YYYY-MM-DD"`, after which it
    /// fails the gate. Leaks it matches are reported as ignored, not counted.
    #[arg(long, value_name = "FILE")]
    ignore: Option<PathBuf>,
    /// An earlier `gleak run --json` report: fail only on leaks whose fingerprint
    /// is not among its leaking sites.
    #[arg(long, value_name = "REPORT.json")]
    baseline: Option<PathBuf>,
    /// Write an --ignore file for the leaks this run counts (one entry per
    /// fingerprint, reason "TODO: why this leak is known" to replace), to adopt the
    /// gate in a code base that already leaks.
    #[arg(long, value_name = "FILE")]
    write_ignore: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailOn {
    /// Goroutines judged leaks (at the command's exit: the program's goroutines still alive).
    Leak,
    /// Leaks, and goroutines still alive that may be.
    Suspect,
    /// Leaks, and goroutines that outlived the test that created them (a test binary's).
    Outlived,
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
    let reads = match &cli.command {
        Command::Attach { pid, .. } => Reads::Process(*pid),
        Command::Run { .. } => Reads::OwnChild,
        Command::Audit(_) => Reads::EveryProcess,
    };
    gleak::tracing::privilege::preflight(reads)?;
    // Current-thread: `gleak run` forks its command from the main thread, which the
    // command's parent-death signal is tied to (see `launch::spawn_stopped`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // First: from here on these signals end gleak with its final report.
        let mut signals = Signals::install()?;
        match cli.command {
            Command::Attach { pid, common } => attach::attach(pid, common, &mut signals).await.map(|()| 0),
            Command::Run { fail_on, leave_running, junit, known_leaks, common, command } => {
                let gate = run::GateOptions { fail_on, junit, known_leaks };
                run::run(gate, leave_running, common, command, &mut signals).await
            }
            Command::Audit(args) => audit::audit(args, &mut signals).await.map(|()| 0),
        }
    })
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

    /// A report while tracing goes on (`--interval`).
    fn print_periodic(&self, tracer: &mut Tracer, pid: u32) {
        if let Some(report) = self.report(tracer, pid, false) {
            self.print(&report);
            // The page follows the reports; a failure to write it must not end tracing.
            if let Err(e) = self.write_html(&report, false) {
                say!("gleak: {e:#}");
            }
        }
    }

    /// The final report, to stdout and to every file asked for.
    fn write_final(&self, report: &Report) -> Result<()> {
        self.print(report);
        self.write_pprof(report)?;
        self.write_html(report, true)
    }

    fn write_html(&self, report: &Report, is_final: bool) -> Result<()> {
        let Some(path) = &self.html else {
            return Ok(());
        };
        gleak::output::html::write(report, path).with_context(|| format!("writing --html {}", path.display()))?;
        if is_final {
            say!("gleak: wrote {} (open it in a browser)", path.display());
        }
        Ok(())
    }

    /// Prints a report on stdout, unless its reader has gone: then quietly
    /// nothing, now and from then on (see [`Common::stdout_closed`]).
    fn print(&self, report: &Report) {
        if self.stdout_closed.get() {
            return;
        }
        let text = if self.json {
            let mut line = report.to_json_line();
            line.push('\n');
            line
        } else {
            let color = match self.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            report.render(self.top, self.stacks, color)
        };
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.stdout_closed.set(true),
            Err(e) => say!("gleak: writing a report to stdout: {e}"),
        }
    }

    /// Whether stdout's reader has gone.
    fn stdout_closed(&self) -> bool {
        self.stdout_closed.get()
    }

    fn write_pprof(&self, report: &Report) -> Result<()> {
        let Some(path) = &self.pprof else {
            return Ok(());
        };
        let samples = goroutine_samples(report);
        write_goroutine_profile(path, &samples).with_context(|| format!("writing {}", path.display()))?;
        say!(
            "gleak: wrote {} goroutines in {} stacks to {} (go tool pprof -traces {})",
            samples.iter().map(|s| s.count).sum::<u64>(),
            samples.len(),
            path.display(),
            path.display()
        );
        Ok(())
    }
}

/// Longest `--duration`/`--interval`: timers beyond it would overflow `Instant`.
const MAX_DURATION_S: f64 = 365.0 * 24.0 * 3600.0;

/// `500ms`, `30s`, `5m`, `1h`, or bare seconds.
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
