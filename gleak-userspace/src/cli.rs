//! Argument parsing and the `attach` session loop.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gleak::{AttachOptions, Report, Tracer};

const EXAMPLES: &str = "\
EXAMPLES:
    gleak attach -p 4242                    # trace until Ctrl-C, report every 10s
    gleak attach -p 4242 --duration 30s     # trace 30 seconds, then the final report
    gleak attach -p 4242 --json -i 5s       # one JSON report per line, every 5s
    gleak attach -p 4242 --trace-parks      # exact blocked times (probes runtime.gopark)";

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
    Attach(AttachArgs),
}

#[derive(Parser, Debug)]
struct AttachArgs {
    /// PID of the Go process.
    #[arg(short, long)]
    pid: u32,
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C or the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print a report this often.
    #[arg(short, long, value_parser = parse_duration, default_value = "10s")]
    interval: Duration,
    /// One JSON document per report, one per line, on stdout.
    #[arg(long)]
    json: bool,
    /// Show at most this many creation sites.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Print the creation stacks of this many leading sites.
    #[arg(long, default_value_t = 3)]
    stacks: usize,
    /// Do not record creation stacks (saves one stack walk per `go` statement).
    #[arg(long)]
    no_stacks: bool,
    /// Also probe runtime.gopark: exact time each goroutine blocked, at one more
    /// probe hit per blocking operation.
    #[arg(long)]
    trace_parks: bool,
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli.command {
        Command::Attach(args) => attach(args),
    }
}

fn attach(args: AttachArgs) -> Result<()> {
    check_root()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(attach_session(args))
}

async fn attach_session(args: AttachArgs) -> Result<()> {
    let mut tracer = Tracer::new()?;
    let opts = AttachOptions {
        capture_stacks: !args.no_stacks,
        trace_parks: args.trace_parks,
    };
    let pid = args.pid;
    let traced = tracer
        .attach(pid, opts)
        .with_context(|| format!("cannot trace PID {pid}"))?;
    let mut probes: Vec<String> = Vec::new();
    for p in &traced.probes {
        if !probes.contains(&p.location) {
            probes.push(p.location.clone());
        }
    }
    eprintln!(
        "gleak: tracing PID {pid} {} ({}) · probes: {} · report every {}s{}",
        traced.target.exe.display(),
        traced.target.binary.go_version,
        probes.join(", "),
        args.interval.as_secs_f64(),
        match args.duration {
            Some(d) => format!(" for {}s", d.as_secs_f64()),
            None => " until Ctrl-C".to_string(),
        }
    );

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut report_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    let mut liveness = tokio::time::interval(Duration::from_millis(250));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = tracer.pump() => { r.context("reading events")?; }
            _ = report_tick.tick() => {
                tracer.flush_logs();
                if let Some(report) = tracer.report(pid, false) {
                    print_report(&report, &args);
                }
            }
            _ = liveness.tick() => {
                if !gleak::target::process_alive(pid) { break; }
            }
            _ = &mut ctrl_c => break,
            _ = sleep_until(deadline) => break,
        }
    }
    let report = tracer.report(pid, true).context("target vanished")?;
    tracer.detach(pid);
    print_report(&report, &args);
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn print_report(report: &Report, args: &AttachArgs) {
    if args.json {
        println!("{}", report.to_json_line());
    } else {
        print!("{}", report.render(args.top, args.stacks));
    }
}

fn check_root() -> Result<()> {
    // SAFETY: no arguments, no side effects.
    if unsafe { libc::geteuid() } != 0 {
        bail!("gleak needs root to load eBPF programs and read another process's memory; run it with sudo");
    }
    Ok(())
}

/// `500ms`, `30s`, `5m`, `1h`, or bare seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 30s, 5m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be positive"));
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
    }
}
