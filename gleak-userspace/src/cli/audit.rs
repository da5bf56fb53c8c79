//! `gleak audit`: every Go process of the host, continuously.

use std::time::Duration;

use anyhow::{Context, Result};
use gleak::audit;

use super::{
    session::{sleep_until, Signals},
    AuditArgs,
};

pub async fn audit(args: AuditArgs, signals: &mut Signals) -> Result<()> {
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
            say!("gleak: metrics at http://{}/metrics", server.addr);
            Some(server)
        }
    };
    let mut auditor = audit::Auditor::new(opts, out, Some(metrics))?;
    auditor.discover();
    say!(
        "gleak: auditing {} Go processes · every {} · {} · probes: {}",
        auditor.watched(),
        humantime::format_duration(args.interval),
        args.duration.map_or("until Ctrl-C".to_string(), |d| format!("for {}", humantime::format_duration(d))),
        auditor.tracer_mut().target_lookup().describe(),
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
                say!("gleak: {}: detaching from every process", sig);
                break;
            }
            _ = sleep_until(deadline) => break,
        }
    }
    auditor.finish();
    Ok(())
}
