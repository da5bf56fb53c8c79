//! `gleak audit`: every Go process of a host, continuously, cheap by default.
//!
//! Tier 1, for every process: its goroutine table read from memory at each scan
//! (no probe on its hot path, no stop): per-site counts from `gopc`, states, wait
//! reasons, blocking stacks, growth. A process with a site that turns `leak` or
//! `suspect` moves to tier 2: the uprobes and the reachability proof, for exact
//! lifetimes, rates, creation stacks and proofs, until its verdicts settle; then
//! back to tier 1. Findings are JSON lines, one per verdict change; metrics are
//! served for Prometheus.

pub mod discover;
pub mod metrics;

use std::{
    collections::HashMap,
    io::Write,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    analysis::verdict::Verdict,
    error::Result,
    output::report::{Report, SiteReport},
    runtime::package_roles::PackageRole,
    AttachOptions, Tracer,
};
use discover::{Candidate, Discovery, Filter, Identity};
use metrics::{Exported, InfoLabels, Metrics};

/// How an audit runs.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub filter: Filter,
    /// Most processes audited at once; the others are counted, not read.
    pub max_processes: usize,
    /// Processes with more live goroutines are left out (read again later).
    pub max_goroutines: u64,
    /// Sites per process with series of their own in the metrics.
    pub top_sites: usize,
    /// Reports in a row with unchanged verdicts before a process leaves tier 2.
    pub settle_reports: u32,
    /// Longest a process stays in tier 2.
    pub max_tier2: Duration,
    /// Create stacks at tier 2 (one stack walk per `go` statement).
    pub capture_stacks: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            max_processes: 256,
            max_goroutines: 1_000_000,
            top_sites: 10,
            settle_reports: 3,
            max_tier2: Duration::from_secs(120),
            capture_stacks: true,
        }
    }
}

/// How a process is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    /// Memory reads only.
    Memory,
    /// Uprobes and proofs, since `since`; `settled` reports in a row unchanged.
    Probes { since: Instant, settled: u32 },
}

impl Tier {
    fn number(self) -> i64 {
        match self {
            Tier::Memory => 1,
            Tier::Probes { .. } => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Probes { .. } => "probes",
        }
    }
}

struct Watched {
    start_time: u64,
    identity: Identity,
    tier: Tier,
    /// Last verdict per site label.
    verdicts: HashMap<String, Verdict>,
    exported: Exported,
}

/// One line of `gleak audit`'s findings.
#[derive(Debug, Serialize)]
pub struct Finding<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    /// `verdict` (a site's verdict changed), `process` (audited from now on),
    /// `gone` (exited), `skipped` (cannot or may not be audited), `final` (the audit
    /// ended: each leaking or suspect site once more).
    pub kind: &'static str,
    pub process: &'a Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteFinding>,
    /// `memory` or `probes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A site in a finding.
#[derive(Debug, Serialize)]
pub struct SiteFinding {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub verdict: Verdict,
    /// The verdict before, if the site was known.
    pub previous: Option<Verdict>,
    pub reason: String,
    pub live: u64,
    /// Live goroutines gained per second over the trend window.
    pub growth_per_s: f64,
    /// Goroutines proven unable to run again.
    pub proven: u64,
    /// Where most of them are stuck, `file:line`.
    pub blocked_at: Option<String>,
}

/// The audit's state: the tracer, the processes, what was said of them.
pub struct Auditor {
    tracer: Tracer,
    opts: AuditOptions,
    discovery: Discovery,
    watched: HashMap<u32, Watched>,
    /// Processes that could not be traced (pid, start time): not tried again.
    refused: HashMap<(u32, u64), ()>,
    /// Processes left out by the goroutine cap, with when to look again.
    over_cap: HashMap<(u32, u64), Instant>,
    metrics: Option<Metrics>,
    out: Box<dyn Write + Send>,
    last_lost: u64,
}

/// How long a process over the goroutine cap is left alone.
const OVER_CAP_RETRY: Duration = Duration::from_secs(300);

impl Auditor {
    pub fn new(opts: AuditOptions, out: Box<dyn Write + Send>, metrics: Option<Metrics>) -> Result<Self> {
        Ok(Self {
            tracer: Tracer::new()?,
            opts,
            discovery: Discovery::default(),
            watched: HashMap::new(),
            refused: HashMap::new(),
            over_cap: HashMap::new(),
            metrics,
            out,
            last_lost: 0,
        })
    }

    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    /// Processes audited now.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Finds new Go processes and starts reading them; forgets the ones gone.
    pub fn discover(&mut self) {
        let found = self.discovery.scan(&self.opts.filter, std::process::id());
        let alive: HashMap<u32, &Candidate> = found.iter().map(|c| (c.pid, c)).collect();
        let gone: Vec<u32> = self
            .watched
            .iter()
            .filter(|(pid, w)| alive.get(pid).is_none_or(|c| c.start_time != w.start_time))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in gone {
            self.drop_process(pid, "gone", None);
        }
        self.refused.retain(|(pid, start), _| alive.get(pid).is_some_and(|c| c.start_time == *start));
        self.over_cap.retain(|(pid, start), _| alive.get(pid).is_some_and(|c| c.start_time == *start));
        let mut untracked = 0;
        for c in &found {
            let key = (c.pid, c.start_time);
            if self.watched.contains_key(&c.pid) || self.refused.contains_key(&key) {
                continue;
            }
            if self.over_cap.get(&key).is_some_and(|until| Instant::now() < *until) {
                untracked += 1;
                continue;
            }
            if self.watched.len() >= self.opts.max_processes {
                untracked += 1;
                continue;
            }
            self.start(c);
        }
        if let Some(m) = &self.metrics {
            m.tracked.set(self.watched.len() as i64);
            m.untracked.set(untracked);
        }
    }

    fn start(&mut self, c: &Candidate) {
        let opts = AttachOptions { probes: false, prove: false, ..AttachOptions::default() };
        let key = (c.pid, c.start_time);
        match self.tracer.attach(c.pid, opts) {
            Ok(t) => {
                let identity = discover::identity(c.pid, t.target.ns_pid, &t.target.exe, &t.target.binary);
                let live = t.agg.live.len() as u64;
                if live > self.opts.max_goroutines {
                    self.tracer.detach(c.pid);
                    self.over_cap.insert(key, Instant::now() + OVER_CAP_RETRY);
                    let reason = format!(
                        "{live} goroutines, more than --max-goroutines {}: looked at again in {}s",
                        self.opts.max_goroutines,
                        OVER_CAP_RETRY.as_secs()
                    );
                    self.emit(Finding {
                        kind: "skipped",
                        process: &identity,
                        site: None,
                        tier: None,
                        reason: Some(reason),
                        time: now(),
                    });
                    return;
                }
                self.emit(Finding {
                    kind: "process",
                    process: &identity,
                    site: None,
                    tier: Some(Tier::Memory.name()),
                    reason: None,
                    time: now(),
                });
                let w = Watched {
                    start_time: c.start_time,
                    identity,
                    tier: Tier::Memory,
                    verdicts: HashMap::new(),
                    exported: Exported::default(),
                };
                self.watched.insert(c.pid, w);
            }
            Err(e) => {
                self.refused.insert(key, ());
                if let Some(m) = &self.metrics {
                    m.error("attach");
                }
                let identity = Identity {
                    pid: c.pid,
                    exe: c.exe.display().to_string(),
                    go_version: c.go_version.clone(),
                    ..Identity::default()
                };
                self.emit(Finding {
                    kind: "skipped",
                    process: &identity,
                    site: None,
                    tier: None,
                    reason: Some(e.to_string()),
                    time: now(),
                });
            }
        }
    }

    fn drop_process(&mut self, pid: u32, kind: &'static str, reason: Option<String>) {
        self.tracer.detach(pid);
        if let Some(w) = self.watched.remove(&pid) {
            if let Some(m) = &self.metrics {
                m.forget(pid, &w.identity.exe, w.exported);
            }
            self.emit(Finding { kind, process: &w.identity, site: None, tier: None, reason, time: now() });
        }
    }

    /// Reads every process once: findings for verdict changes, metrics, tiers.
    pub fn review(&mut self) {
        let pids: Vec<u32> = self.watched.keys().copied().collect();
        for pid in pids {
            let started = Instant::now();
            let Some(mut report) = self.tracer.report(pid, false) else { continue };
            report.fold_runtime_sites();
            if let Some(m) = &self.metrics {
                m.scan_seconds.observe(started.elapsed().as_secs_f64());
            }
            if report.target_exited {
                self.drop_process(pid, "gone", None);
                continue;
            }
            self.record_findings(pid, &report);
        }
        if let Some(m) = &self.metrics {
            let lost = self.tracer.kernel_counters().lost_events();
            m.lost_events.inc_by(lost.saturating_sub(self.last_lost));
            self.last_lost = lost;
        }
    }

    fn record_findings(&mut self, pid: u32, report: &Report) {
        let Some(w) = self.watched.get_mut(&pid) else { return };
        let tier = w.tier;
        let mut changed = false;
        let mut findings = Vec::new();
        for s in &report.sites {
            let key = label(s);
            if s.live == 0 && !w.verdicts.contains_key(&key) {
                continue;
            }
            let previous = w.verdicts.insert(key, s.verdict);
            // A new site is news only if it is not fine.
            let news = match previous {
                Some(p) => p != s.verdict,
                None => matches!(s.verdict, Verdict::Leak | Verdict::Suspect),
            };
            if news {
                changed = true;
                findings.push(site_finding(s, previous));
            }
        }
        let suspicious = report.sites.iter().any(|s| {
            !PackageRole::of_function(&s.function).is_runtime() && matches!(s.verdict, Verdict::Leak | Verdict::Suspect)
        });
        if let Some(m) = &self.metrics {
            let info = InfoLabels {
                pid: pid.to_string(),
                exe: w.identity.exe.clone(),
                go_version: w.identity.go_version.clone(),
                build_path: w.identity.build_path.clone().unwrap_or_default(),
                container_id: w.identity.container_id.clone().unwrap_or_default(),
                pod_uid: w.identity.pod_uid.clone().unwrap_or_default(),
            };
            m.export(report, tier.number(), self.opts.top_sites, &mut w.exported, info);
        }
        let identity = w.identity.clone();
        for f in findings {
            self.emit(Finding {
                kind: "verdict",
                process: &identity,
                site: Some(f),
                tier: Some(tier.name()),
                reason: None,
                time: now(),
            });
        }
        self.move_tier(pid, suspicious, changed);
    }

    /// Tier 1 → 2 on a leak or suspect site; 2 → 1 once verdicts settle (or after
    /// `max_tier2`).
    fn move_tier(&mut self, pid: u32, suspicious: bool, changed: bool) {
        let Some(w) = self.watched.get_mut(&pid) else { return };
        let next = match w.tier {
            Tier::Memory if suspicious => {
                let opts = AttachOptions {
                    probes: true,
                    prove: true,
                    capture_stacks: self.opts.capture_stacks,
                    ..AttachOptions::default()
                };
                match self.tracer.add_probes(pid, opts) {
                    Ok(()) => Tier::Probes { since: Instant::now(), settled: 0 },
                    Err(e) => {
                        log::warn!("PID {pid}: cannot attach the probes ({e}); staying on memory reads");
                        if let Some(m) = &self.metrics {
                            m.error("probes");
                        }
                        Tier::Memory
                    }
                }
            }
            Tier::Probes { since, settled } => {
                let settled = if changed { 0 } else { settled + 1 };
                if settled >= self.opts.settle_reports || since.elapsed() >= self.opts.max_tier2 {
                    self.tracer.remove_probes(pid);
                    Tier::Memory
                } else {
                    Tier::Probes { since, settled }
                }
            }
            t => t,
        };
        if let Some(w) = self.watched.get_mut(&pid) {
            w.tier = next;
        }
    }

    /// The end: every leaking or suspect site once more, then everything detached.
    pub fn finish(&mut self) {
        let pids: Vec<u32> = self.watched.keys().copied().collect();
        for pid in pids {
            if let Some(mut report) = self.tracer.report(pid, true) {
                report.fold_runtime_sites();
                if let Some(w) = self.watched.get(&pid) {
                    for s in report.sites.iter().filter(|s| matches!(s.verdict, Verdict::Leak | Verdict::Suspect)) {
                        let f = site_finding(s, w.verdicts.get(&label(s)).copied());
                        let tier = Some(w.tier.name());
                        write_finding(
                            &mut self.out,
                            Finding {
                                kind: "final",
                                process: &w.identity,
                                site: Some(f),
                                tier,
                                reason: None,
                                time: now(),
                            },
                        );
                    }
                }
            }
            self.tracer.detach(pid);
        }
        let _ = self.out.flush();
    }

    /// Applies the events the probes produced (tier 2). Cancel-safe.
    pub async fn pump(&mut self) {
        let n = self.tracer.pump().await;
        if let Some(m) = &self.metrics {
            m.events.inc_by(n as u64);
        }
    }

    fn emit(&mut self, finding: Finding) {
        write_finding(&mut self.out, finding);
    }
}

fn write_finding(out: &mut dyn Write, finding: Finding) {
    if let Ok(line) = serde_json::to_string(&finding) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A site's name in findings and metrics: `function (file:line)`.
fn label(s: &SiteReport) -> String {
    if s.line == 0 {
        s.function.clone()
    } else {
        format!("{} ({}:{})", s.function, s.file, s.line)
    }
}

fn site_finding(s: &SiteReport, previous: Option<Verdict>) -> SiteFinding {
    SiteFinding {
        function: s.function.clone(),
        file: s.file.clone(),
        line: s.line,
        verdict: s.verdict,
        previous,
        reason: s.verdict_reason.clone(),
        live: s.live,
        growth_per_s: s.trend.live_per_s,
        proven: s.proven,
        blocked_at: s.blocked_at.first().map(|b| format!("{}:{}", b.at.file, b.at.line)),
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
