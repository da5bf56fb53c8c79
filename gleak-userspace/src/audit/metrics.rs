//! `gleak audit`'s Prometheus metrics (the `prometheus` crate, text exposition
//! format), served on `--listen`. Per process and site: live goroutines, creations
//! and exits, verdict, growth, stack memory; per process: goroutines, tier, and
//! its memory limit, use and the time until the leaks reach the limit;
//! gleak's own health. Label cardinality is bounded: the `top` busiest sites of a
//! process have their own series, the rest are folded into `site="other"`; a
//! process's series go away with it.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    thread::JoinHandle,
};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{analysis::verdict::Verdict, output::report::Report};

/// The folded row of sites past the top ones.
pub const OTHER_SITE: &str = "other";

const SITE: &[&str] = &["pid", "exe", "site"];
const VERDICT: &[&str] = &["pid", "exe", "site", "verdict"];
const PROCESS: &[&str] = &["pid", "exe"];
/// What `errors_total` counts: attaching to a process, adding its probes.
pub const ERROR_KINDS: [&str; 2] = ["attach", "probes"];
const INFO: &[&str] = &["pid", "exe", "go_version", "build_path", "container_id", "pod_uid"];

/// The identity labels of a process's info series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InfoLabels {
    pub pid: String,
    pub exe: String,
    pub go_version: String,
    pub build_path: String,
    pub container_id: String,
    pub pod_uid: String,
}

impl InfoLabels {
    fn values(&self) -> [&str; 6] {
        [&self.pid, &self.exe, &self.go_version, &self.build_path, &self.container_id, &self.pod_uid]
    }
}

/// One site's numbers as exported (or the folded rest's).
struct SiteRow {
    site: String,
    live: u64,
    created: u64,
    exited: u64,
    stack_bytes: u64,
    growth: f64,
    verdict: Verdict,
    /// What its proven goroutines retain, once measured.
    retained: Option<u64>,
}

/// Every series gleak exports.
#[derive(Clone)]
pub struct Metrics {
    site_live: IntGaugeVec,
    site_created: IntCounterVec,
    site_exited: IntCounterVec,
    site_stack_bytes: IntGaugeVec,
    site_retained_bytes: IntGaugeVec,
    site_growth: GaugeVec,
    site_verdict: IntGaugeVec,
    process_goroutines: IntGaugeVec,
    process_tier: IntGaugeVec,
    process_info: IntGaugeVec,
    process_memory_limit: IntGaugeVec,
    process_memory_used: IntGaugeVec,
    process_memory_limit_seconds: GaugeVec,
    pub events: IntCounter,
    pub lost_events: IntCounter,
    pub scan_seconds: Histogram,
    pub tracked: IntGauge,
    pub untracked: IntGauge,
    pub errors: IntCounterVec,
}

/// What one process exports now, to take back when it changes or goes away.
#[derive(Default)]
pub struct Exported {
    /// Site labels with series.
    sites: HashSet<String>,
    /// (site, verdict) with a verdict series.
    verdicts: HashSet<(String, String)>,
    info: Option<InfoLabels>,
    /// Creations and exits already counted, per site label.
    counted: HashMap<String, (u64, u64)>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("gleak")
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            site_live: IntGaugeVec::new(
                opts("site_live_goroutines", "Live goroutines created by one go statement"),
                SITE,
            )?,
            site_created: IntCounterVec::new(
                opts("site_created_goroutines_total", "Goroutines created by one go statement"),
                SITE,
            )?,
            site_exited: IntCounterVec::new(
                opts("site_exited_goroutines_total", "Goroutines of one go statement that exited"),
                SITE,
            )?,
            site_stack_bytes: IntGaugeVec::new(
                opts("site_stack_bytes", "Stack memory held by a site's live goroutines"),
                SITE,
            )?,
            site_retained_bytes: IntGaugeVec::new(
                opts(
                    "site_retained_bytes",
                    "Memory a site's proven-leaked goroutines keep alive and nothing able to run does: heap \
                     only their stacks reach, plus those stacks (absent until a proof measured it)",
                ),
                SITE,
            )?,
            site_growth: GaugeVec::new(
                opts(
                    "site_growth_goroutines_per_second",
                    "Change of a site's live goroutines per second over the trend window",
                ),
                SITE,
            )?,
            site_verdict: IntGaugeVec::new(
                opts("site_verdict", "1 for a site's current verdict (leak, suspect, stable, ok)"),
                VERDICT,
            )?,
            process_goroutines: IntGaugeVec::new(opts("process_goroutines", "Live goroutines of a process"), PROCESS)?,
            process_tier: IntGaugeVec::new(
                opts("process_tier", "How a process is watched: 1 memory reads only, 2 with uprobes"),
                PROCESS,
            )?,
            process_info: IntGaugeVec::new(opts("process_info", "A Go process being audited (value 1)"), INFO)?,
            process_memory_limit: IntGaugeVec::new(
                opts(
                    "process_memory_limit_bytes",
                    "The memory limit that binds a process first: its cgroup's, GOMEMLIMIT, or the host's memory",
                ),
                PROCESS,
            )?,
            process_memory_used: IntGaugeVec::new(
                opts(
                    "process_memory_used_bytes",
                    "A process's memory use as its limit counts it (cgroup usage, else resident set)",
                ),
                PROCESS,
            )?,
            process_memory_limit_seconds: GaugeVec::new(
                opts(
                    "process_memory_limit_reached_in_seconds",
                    "When the leak sites' growth reaches the memory limit; absent until measurable",
                ),
                PROCESS,
            )?,
            events: IntCounter::with_opts(opts("events_total", "Lifecycle events received from the probes"))?,
            lost_events: IntCounter::with_opts(opts("lost_events_total", "Events the kernel could not deliver"))?,
            scan_seconds: Histogram::with_opts(
                HistogramOpts::new("scan_duration_seconds", "Time to read one process")
                    .namespace("gleak")
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
            )?,
            tracked: IntGauge::with_opts(opts("tracked_processes", "Go processes being audited"))?,
            untracked: IntGauge::with_opts(opts(
                "untracked_processes",
                "Go processes left out by --max-processes or --max-goroutines",
            ))?,
            errors: IntCounterVec::new(opts("errors_total", "Errors by kind"), &["kind"])?,
        };
        registry.register(Box::new(m.site_live.clone()))?;
        registry.register(Box::new(m.site_created.clone()))?;
        registry.register(Box::new(m.site_exited.clone()))?;
        registry.register(Box::new(m.site_stack_bytes.clone()))?;
        registry.register(Box::new(m.site_retained_bytes.clone()))?;
        registry.register(Box::new(m.site_growth.clone()))?;
        registry.register(Box::new(m.site_verdict.clone()))?;
        registry.register(Box::new(m.process_goroutines.clone()))?;
        registry.register(Box::new(m.process_tier.clone()))?;
        registry.register(Box::new(m.process_info.clone()))?;
        registry.register(Box::new(m.process_memory_limit.clone()))?;
        registry.register(Box::new(m.process_memory_used.clone()))?;
        registry.register(Box::new(m.process_memory_limit_seconds.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.lost_events.clone()))?;
        registry.register(Box::new(m.scan_seconds.clone()))?;
        registry.register(Box::new(m.tracked.clone()))?;
        registry.register(Box::new(m.untracked.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        // Every kind exported from the start, at 0: a rate needs the series before the first error.
        for kind in ERROR_KINDS {
            m.errors.with_label_values(&[kind]);
        }
        Ok(m)
    }

    /// Exports a process's report: its top sites on their own, the rest folded.
    pub fn export(&self, report: &Report, tier: i64, top: usize, exported: &mut Exported, info: InfoLabels) {
        let pid = report.pid.to_string();
        let exe = report.binary.as_str();
        self.process_goroutines.with_label_values(&[pid.as_str(), exe]).set(report.totals.live as i64);
        self.process_tier.with_label_values(&[pid.as_str(), exe]).set(tier);
        if exported.info.as_ref() != Some(&info) {
            if let Some(old) = exported.info.take() {
                let _ = self.process_info.remove_label_values(&old.values());
            }
            self.process_info.with_label_values(&info.values()).set(1);
            exported.info = Some(info);
        }
        self.export_memory(report, &pid, exe);

        // Busiest first; the rest folded into one row.
        let mut rows: Vec<SiteRow> = Vec::new();
        let mut other = SiteRow {
            site: OTHER_SITE.into(),
            live: 0,
            created: 0,
            exited: 0,
            stack_bytes: 0,
            growth: 0.0,
            verdict: Verdict::Ok,
            retained: None,
        };
        for (i, s) in report.sites.iter().enumerate() {
            let growth = s.trend.live_per_s;
            if i < top {
                let site =
                    if s.line == 0 { s.function.clone() } else { format!("{} ({}:{})", s.function, s.file, s.line) };
                rows.push(SiteRow {
                    site,
                    live: s.live,
                    created: s.created,
                    exited: s.exited,
                    stack_bytes: s.stack_bytes,
                    growth,
                    verdict: s.verdict,
                    retained: s.retained.as_ref().map(|r| r.bytes),
                });
            } else {
                other.live += s.live;
                other.created += s.created;
                other.exited += s.exited;
                other.stack_bytes += s.stack_bytes;
                other.growth += growth;
            }
        }
        if report.sites.len() > top {
            rows.push(other);
        }

        let mut sites = HashSet::new();
        let mut verdicts = HashSet::new();
        let mut counted = HashMap::new();
        for SiteRow { site, live, created, exited, stack_bytes, growth, verdict, retained } in rows {
            let l = [pid.as_str(), exe, site.as_str()];
            self.site_live.with_label_values(&l).set(live as i64);
            self.site_stack_bytes.with_label_values(&l).set(stack_bytes as i64);
            match retained {
                Some(bytes) => self.site_retained_bytes.with_label_values(&l).set(bytes as i64),
                None => {
                    let _ = self.site_retained_bytes.remove_label_values(&l);
                }
            }
            self.site_growth.with_label_values(&l).set(growth);
            // Counters only go up: add what happened since the last export (a site
            // that moved into the folded row starts again from what it has).
            let (was_created, was_exited) = exported.counted.get(&site).copied().unwrap_or((0, 0));
            self.site_created.with_label_values(&l).inc_by(created.saturating_sub(was_created));
            self.site_exited.with_label_values(&l).inc_by(exited.saturating_sub(was_exited));
            counted.insert(site.clone(), (created.max(was_created), exited.max(was_exited)));
            if site != OTHER_SITE {
                self.site_verdict.with_label_values(&[pid.as_str(), exe, site.as_str(), verdict.as_str()]).set(1);
                verdicts.insert((site.clone(), verdict.as_str().to_string()));
            }
            sites.insert(site);
        }
        for gone in exported.sites.difference(&sites) {
            self.forget_site(&pid, exe, gone);
        }
        for (site, verdict) in exported.verdicts.difference(&verdicts) {
            let _ = self.site_verdict.remove_label_values(&[pid.as_str(), exe, site.as_str(), verdict.as_str()]);
        }
        exported.sites = sites;
        exported.verdicts = verdicts;
        exported.counted = counted;
    }

    /// The process's memory limit, use and time to the limit; a series is
    /// absent while its value is unknown (the time: until measurable).
    fn export_memory(&self, report: &Report, pid: &str, exe: &str) {
        let l = [pid, exe];
        let memory = report.memory.as_ref();
        let as_gauge = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        match memory {
            Some(m) => {
                self.process_memory_limit.with_label_values(&l).set(as_gauge(m.limit_bytes));
                self.process_memory_used.with_label_values(&l).set(as_gauge(m.current_bytes));
            }
            None => {
                let _ = self.process_memory_limit.remove_label_values(&l);
                let _ = self.process_memory_used.remove_label_values(&l);
            }
        }
        match memory.and_then(|m| m.time_to_limit_s) {
            Some(s) => self.process_memory_limit_seconds.with_label_values(&l).set(s),
            None => {
                let _ = self.process_memory_limit_seconds.remove_label_values(&l);
            }
        }
    }

    fn forget_site(&self, pid: &str, exe: &str, site: &str) {
        let l = [pid, exe, site];
        let _ = self.site_live.remove_label_values(&l);
        let _ = self.site_created.remove_label_values(&l);
        let _ = self.site_exited.remove_label_values(&l);
        let _ = self.site_stack_bytes.remove_label_values(&l);
        let _ = self.site_retained_bytes.remove_label_values(&l);
        let _ = self.site_growth.remove_label_values(&l);
    }

    /// Takes every series of a process away (it exited or was dropped).
    pub fn forget(&self, pid: u32, exe: &str, exported: Exported) {
        let pid = pid.to_string();
        for site in &exported.sites {
            self.forget_site(&pid, exe, site);
        }
        for (site, verdict) in &exported.verdicts {
            let _ = self.site_verdict.remove_label_values(&[pid.as_str(), exe, site.as_str(), verdict.as_str()]);
        }
        if let Some(info) = &exported.info {
            let _ = self.process_info.remove_label_values(&info.values());
        }
        let _ = self.process_goroutines.remove_label_values(&[pid.as_str(), exe]);
        let _ = self.process_tier.remove_label_values(&[pid.as_str(), exe]);
        let _ = self.process_memory_limit.remove_label_values(&[pid.as_str(), exe]);
        let _ = self.process_memory_used.remove_label_values(&[pid.as_str(), exe]);
        let _ = self.process_memory_limit_seconds.remove_label_values(&[pid.as_str(), exe]);
    }

    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }
}

/// Serves `registry` at `http://ADDR/metrics` on a thread of its own.
pub struct Server {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(addr: SocketAddr, registry: Registry) -> std::io::Result<Self> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(std::io::Error::other)?);
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new().name("gleak-metrics".into()).spawn(move || {
            let encoder = TextEncoder::new();
            for request in serving.incoming_requests() {
                let response = match request.url() {
                    "/metrics" => {
                        let mut body = Vec::new();
                        match encoder.encode(&registry.gather(), &mut body) {
                            Ok(()) => tiny_http::Response::from_data(body)
                                .with_header(header("Content-Type", encoder.format_type())),
                            Err(_) => tiny_http::Response::from_data(b"encoding failed".to_vec()).with_status_code(500),
                        }
                    }
                    "/" => tiny_http::Response::from_data(b"gleak audit: metrics at /metrics\n".to_vec())
                        .with_header(header("Content-Type", "text/plain; charset=utf-8")),
                    _ => tiny_http::Response::from_data(b"not found\n".to_vec()).with_status_code(404),
                };
                let _ = request.respond(response);
            }
        })?;
        Ok(Self { server, thread: Some(thread), addr })
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{report::MemoryReport, sample};

    fn exposition(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).expect("text exposition");
        String::from_utf8(out).expect("UTF-8")
    }

    /// The value of the series `name{pid="4242",…}`, if exported.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("pid=\"4242\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn memory_limit_gauges_follow_the_report() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics register");
        let mut report = sample::leaky_report();
        report.memory = Some(MemoryReport {
            limit_bytes: 512 << 20,
            limit_source: "the cgroup's memory.max",
            limit_cgroup: Some("/pod/ctr".into()),
            current_bytes: 391 << 20,
            current_source: "cgroup memory.current",
            growth_bytes_per_s: 55_000.0,
            window_s: 30.0,
            time_to_limit_s: Some(2307.0),
            note: String::new(),
        });
        let mut exported = Exported::default();
        metrics.export(&report, 2, 10, &mut exported, InfoLabels::default());
        let text = exposition(&registry);
        assert_eq!(value(&text, "gleak_process_memory_limit_bytes"), Some((512u64 << 20) as f64), "{text}");
        assert_eq!(value(&text, "gleak_process_memory_used_bytes"), Some((391u64 << 20) as f64), "{text}");
        assert_eq!(value(&text, "gleak_process_memory_limit_reached_in_seconds"), Some(2307.0), "{text}");

        // Not yet measurable: the time goes away, the limit and use stay.
        if let Some(m) = report.memory.as_mut() {
            m.time_to_limit_s = None;
        }
        metrics.export(&report, 2, 10, &mut exported, InfoLabels::default());
        let text = exposition(&registry);
        assert_eq!(value(&text, "gleak_process_memory_limit_reached_in_seconds"), None, "{text}");
        assert!(value(&text, "gleak_process_memory_limit_bytes").is_some(), "{text}");

        // Memory unknown (the target exited), then the process forgotten: nothing left.
        report.memory = None;
        metrics.export(&report, 2, 10, &mut exported, InfoLabels::default());
        let text = exposition(&registry);
        assert_eq!(value(&text, "gleak_process_memory_limit_bytes"), None, "{text}");
        metrics.forget(report.pid, &report.binary, exported);
        assert!(!exposition(&registry).contains("pid=\"4242\""), "{}", exposition(&registry));
    }
}
