//! The tracing core: one loaded set of probes, any number of target processes, one
//! event stream. The CLI is a thin shell over this; `gleak audit` will hold many
//! targets in one long-running process.

use std::{
    collections::{BTreeMap, HashMap},
    io,
};

use aya::maps::{MapData, RingBuf};
use gleak_common::{counter, GoroutineEvent, CONFIG_CAPTURE_STACKS};
use hdrhistogram::Histogram;
use tokio::io::unix::AsyncFd;

use crate::{
    aggregate::{Aggregator, LiveGoroutine, Sample, SiteKey},
    debuginfo::RuntimeInfo,
    error::Result,
    layout::gstatus,
    probes::{AttachOptions, AttachedProbe, Probes},
    procmem::ProcessMemory,
    report::{GoroutineSample, KernelCounters, PathReport, Percentiles, Rates, Report, SiteReport, Totals, Trend},
    snapshot::{all_goroutines, read_records, GRecord},
    symbolize::Frame,
    target::Target,
    verdict::{judge, never_wakes, SiteFacts},
};

/// How often the ring buffer is drained when no wakeup came.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// A process being traced.
pub struct TracedTarget {
    pub target: Target,
    pub info: RuntimeInfo,
    pub probes: Vec<AttachedProbe>,
    pub agg: Aggregator,
    mem: ProcessMemory,
    /// CLOCK_MONOTONIC at attach.
    attached_ns: u64,
    labels: SiteLabels,
    stacks: StackCache,
    /// What cannot be seen in this target (said in every report).
    gaps: Vec<String>,
}

/// A creation site, symbolized once.
#[derive(Clone)]
struct SiteLabel {
    /// The `go` statement (innermost frame at its PC).
    at: Frame,
    /// Every frame at the `go` statement's PC, innermost first (inlining expanded).
    inlined: Vec<Frame>,
    go_func: String,
}

pub struct Tracer {
    probes: Probes,
    events: AsyncFd<RingBuf<MapData>>,
    targets: HashMap<u32, TracedTarget>,
}

impl Tracer {
    /// Loads the probes. Must run inside a tokio runtime.
    pub fn new() -> Result<Self> {
        let mut probes = Probes::load()?;
        let ring = probes.take_events()?;
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd
        // stays open for as long as it is registered.
        let events = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| crate::error::Error::Load(format!("ring buffer: {}", e.into_parts().1)))?;
        Ok(Self { probes, events, targets: HashMap::new() })
    }

    /// Reads the target's binary and starts tracing it.
    pub fn attach(&mut self, pid: u32, opts: AttachOptions) -> Result<&TracedTarget> {
        let target = Target::from_pid(pid)?;
        let info = RuntimeInfo::load(&target.binary)?;
        let flags = if opts.capture_stacks { CONFIG_CAPTURE_STACKS } else { 0 };
        let probes = self.probes.attach(&target, info.layout.target_config(flags), opts)?;
        let mem = ProcessMemory::new(pid);
        let mut agg = Aggregator::default();
        let mut gaps = info.gaps.clone();
        // Probes first, then the goroutine table: a goroutine born in between shows
        // up in both and is kept once; none falls between the two.
        let table = info.goroutine_table.as_ref().map_err(|why| std::io::Error::other(why.clone()));
        match table.and_then(|table| all_goroutines(&mem, table, &info.layout, target.load_bias)) {
            Ok(existing) => {
                for (g_addr, rec) in &existing {
                    agg.adopt(*g_addr, rec);
                }
                agg.link_adopted_parents();
            }
            Err(e) => gaps.push(format!("goroutines from before attach are not visible ({e})")),
        }
        let attached_ns = monotonic_ns();
        agg.sample(attached_ns);
        let traced = TracedTarget {
            mem,
            target,
            info,
            probes,
            agg,
            attached_ns,
            labels: SiteLabels::default(),
            stacks: StackCache::default(),
            gaps,
        };
        self.targets.insert(pid, traced);
        Ok(&self.targets[&pid])
    }

    pub fn detach(&mut self, pid: u32) -> Option<TracedTarget> {
        self.probes.detach(pid);
        self.targets.remove(&pid)
    }

    pub fn target(&self, pid: u32) -> Option<&TracedTarget> {
        self.targets.get(&pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.targets.keys().copied().collect()
    }

    /// Waits for events and applies every one available. Cancel-safe.
    ///
    /// The probes wake the reader only when the ring buffer is a quarter full (a
    /// wakeup per event would cost the target more than the probe itself), so this
    /// also polls every [`POLL_INTERVAL`].
    pub async fn pump(&mut self) -> io::Result<usize> {
        tokio::select! {
            guard = self.events.readable_mut() => {
                let mut guard = guard?;
                let n = drain(guard.get_inner_mut(), &mut self.targets);
                guard.clear_ready();
                Ok(n)
            }
            _ = tokio::time::sleep(POLL_INTERVAL) => Ok(self.drain_now()),
        }
    }

    /// Applies the events already in the ring buffer without waiting.
    pub fn drain_now(&mut self) -> usize {
        drain(self.events.get_mut(), &mut self.targets)
    }

    /// Forwards the probes' log records; call now and then.
    pub fn flush_logs(&mut self) {
        self.probes.flush_logs();
    }

    /// What went wrong in the probes so far, all targets together.
    pub fn kernel_counters(&self) -> KernelCounters {
        let c = self.probes.counters();
        KernelCounters {
            ringbuf_full: c[counter::RINGBUF_FULL as usize],
            read_failed: c[counter::READ_FAILED as usize],
            field_read_failed: c[counter::FIELD_READ_FAILED as usize],
            no_config: c[counter::NO_CONFIG as usize],
            stack_failed: c[counter::STACK_FAILED as usize],
        }
    }

    /// Counts a goroutine as gone without its exit event (the one calling exit
    /// when the process is held at `runtime.exit`).
    pub fn retire(&mut self, pid: u32, goid: u64) {
        if let Some(t) = self.targets.get_mut(&pid) {
            t.agg.on_exit(goid, monotonic_ns());
        }
    }

    /// Takes a per-site sample of every target (call about once a second).
    pub fn sample(&mut self) {
        self.drain_now();
        let now = monotonic_ns();
        for t in self.targets.values_mut() {
            t.agg.sample(now);
        }
    }

    /// Builds a report for `pid`: reads the live goroutines' state from memory,
    /// retires the ones that died unseen, groups by creation site and judges each.
    pub fn report(&mut self, pid: u32, is_final: bool) -> Option<Report> {
        self.drain_now();
        let target_exited = !self.targets.get(&pid)?.target.is_alive();
        if !target_exited {
            // The table read takes a while with many goroutines: drain what the
            // target produced meanwhile before reading the live ones.
            let now = monotonic_ns();
            self.targets.get_mut(&pid)?.reconcile_creations(now);
            self.drain_now();
        }
        let kernel = self.kernel_counters();
        let Tracer { probes, targets, .. } = self;
        let t = targets.get_mut(&pid)?;
        let now = monotonic_ns();
        let records = t.observe_live(target_exited, now);
        let mut summaries = LiveSummary::per_site(&t.agg, &records, now);
        let keys: Vec<SiteKey> = t.agg.sites.keys().copied().collect();
        let mut sites: Vec<SiteReport> = keys
            .into_iter()
            .map(|key| t.site_report(probes, key, summaries.remove(&key).unwrap_or_default(), &records, now))
            .collect();
        sites.sort_by(|a, b| {
            b.live
                .cmp(&a.live)
                .then(a.verdict.cmp(&b.verdict))
                .then(b.created.cmp(&a.created))
                .then(a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });

        let (created, exited) = t.agg.totals();
        Some(Report {
            pid,
            ns_pid: t.target.ns_pid,
            binary: t.target.exe.display().to_string(),
            go_version: t.target.binary.go_version.raw.clone(),
            runtime_facts: t.info.sources.clone(),
            gaps: t.gaps.clone(),
            mode: "attach",
            elapsed_s: now.saturating_sub(t.attached_ns) as f64 / 1e9,
            is_final,
            target_exited,
            totals: Totals {
                created,
                exited,
                live: t.agg.live.len() as u64,
                preexisting: t.agg.live.values().filter(|g| g.created_ns.is_none()).count() as u64,
            },
            lost_events: kernel.lost_events(),
            kernel,
            reconciled_exits: t.agg.reconciled_exits,
            reconciled_creations: t.agg.reconciled_creations,
            sites,
            gate: None,
        })
    }
}

impl TracedTarget {
    /// Picks up live goroutines whose creation event was lost, from the goroutine
    /// table in memory (no stop; skipped where the table is not known).
    fn reconcile_creations(&mut self, now: u64) {
        let Ok(table) = &self.info.goroutine_table else { return };
        match all_goroutines(&self.mem, table, &self.info.layout, self.target.load_bias) {
            Ok(existing) => self.agg.reconcile_creations(&existing, now),
            Err(e) => log::debug!("PID {}: goroutine table unreadable for reconciliation: {e}", self.target.pid),
        }
    }

    /// What memory says about every goroutine believed alive; retires the ones
    /// that died unseen. `None` where memory could not be read.
    fn observe_live(&mut self, target_exited: bool, now: u64) -> Records {
        let live: Vec<(u64, u64)> = self.agg.live.iter().map(|(&goid, g)| (goid, g.g_addr)).collect();
        let records = if target_exited {
            vec![None; live.len()]
        } else {
            let addrs: Vec<u64> = live.iter().map(|&(_, g)| g).collect();
            read_records(&self.mem, &self.info.layout, &addrs)
        };
        let mut by_goid = HashMap::with_capacity(live.len());
        for ((goid, _), rec) in live.iter().zip(records) {
            if self.agg.observe(*goid, rec.as_ref(), now) {
                by_goid.insert(*goid, rec);
            }
        }
        by_goid
    }

    /// One report row: the site's counts, trend, live goroutines, paths, verdict.
    fn site_report(
        &mut self,
        probes: &Probes,
        key: SiteKey,
        a: LiveSummary,
        records: &Records,
        now: u64,
    ) -> SiteReport {
        let t = self;
        let traced_s = now.saturating_sub(t.attached_ns) as f64 / 1e9;
        let bias = t.target.load_bias;
        let stats = &t.agg.sites[&key];
        let label = t.labels.get(key, stats.startpc, bias, &t.info).clone();
        let start = stats.sample_at_or_after(now.saturating_sub(TREND_WINDOW_NS)).copied().unwrap_or(Sample {
            t_ns: t.attached_ns,
            live: 0,
            created: 0,
            exited: 0,
        });
        let window_s = (now.saturating_sub(start.t_ns) as f64 / 1e9).max(1e-3);
        let wait_reasons: BTreeMap<String, u64> =
            a.reasons.iter().map(|(&r, &n)| (t.info.wait_reasons.name(r), n)).collect();
        let never_wake = wait_reasons.iter().filter(|(r, _)| never_wakes(r)).map(|(_, n)| n).sum();
        let top_wait_reason =
            wait_reasons.iter().max_by_key(|(name, n)| (**n, std::cmp::Reverse(*name))).map(|(r, _)| r.clone());
        let blocked = wait_reasons.values().sum();
        let goroutines = a.oldest.iter().filter_map(|&(_, goid)| t.goroutine_sample(goid, records, now)).collect();
        let lifetime =
            |q: f64| (!stats.lifetimes_us.is_empty()).then(|| stats.lifetimes_us.value_at_quantile(q) as f64 / 1e6);
        let facts = SiteFacts {
            live: stats.live,
            created: stats.created,
            window_s,
            live_start: start.live,
            created_in_window: stats.created - start.created,
            exited_in_window: stats.exited - start.exited,
            blocked,
            top_reason: top_wait_reason.clone(),
            never_wake,
            age_p50_s: quantile_s(&a.ages_us, 0.5),
            oldest_s: (!a.ages_us.is_empty()).then(|| a.ages_us.max() as f64 / 1e6),
            lifetime_p99_s: lifetime(0.99),
            lifetime_p50_s: lifetime(0.5),
            preexisting: a.preexisting,
            ran: a.ran,
            blocked_p50_s: quantile_s(&a.blocked_us, 0.5),
            traced_s,
            is_main: label.at.function == MAIN_GOROUTINE,
        };
        let (verdict, verdict_reason) = judge(&facts);
        let (created, exited, live) = (stats.created, stats.exited, stats.live);
        let paths = t.paths(probes, key, &a, &label);
        let stack = paths.first().map(|p| p.stack.clone()).unwrap_or_else(|| label.inlined.clone());

        SiteReport {
            verdict,
            verdict_reason,
            function: label.at.function,
            file: label.at.file,
            line: label.at.line,
            go_func: label.go_func,
            pc: format!("{:#x}", key.wrapping_sub(bias)),
            live,
            created,
            exited,
            preexisting: a.preexisting,
            trend: Trend {
                window_s,
                live_start: start.live,
                live_end: live,
                live_per_s: (live as f64 - start.live as f64) / window_s,
            },
            rates: Rates {
                created_per_s: (created - start.created) as f64 / window_s,
                exited_per_s: (exited - start.exited) as f64 / window_s,
            },
            oldest_age_s: facts.oldest_s,
            age_s: percentiles(&a.ages_us),
            blocked,
            blocked_s: percentiles(&a.blocked_us),
            top_wait_reason,
            wait_reasons,
            goroutines,
            states: a.states.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            stack_bytes: a.stack_bytes,
            lifetime_p50_ms: facts.lifetime_p50_s.map(|s| s * 1e3),
            stack,
            paths,
            parent_chain: parent_chain(&t.agg, key, &mut t.labels, bias, &t.info),
        }
    }

    /// One live goroutine as memory shows it now.
    fn goroutine_sample(&self, goid: u64, records: &Records, now: u64) -> Option<GoroutineSample> {
        let g = self.agg.live.get(&goid)?;
        let rec = records.get(&goid).copied().flatten();
        let waiting = rec.filter(|r| r.status == gstatus::WAITING);
        Some(GoroutineSample {
            goid,
            state: rec.map_or("unknown", |r| gstatus::name(r.status)),
            wait_reason: waiting.map(|r| self.info.wait_reasons.name(r.wait_reason)),
            blocked_s: waiting.and_then(|r| blocked_since(g, &r)).map(|since| now.saturating_sub(since) as f64 / 1e9),
            age_s: g.created_ns.map(|c| now.saturating_sub(c) as f64 / 1e9),
            g_addr: format!("{:#x}", g.g_addr),
        })
    }

    /// The site's distinct creation paths, busiest first; goroutines from before
    /// attach have no recorded stack, so their `go` statement stands in.
    fn paths(&mut self, probes: &Probes, key: SiteKey, a: &LiveSummary, label: &SiteLabel) -> Vec<PathReport> {
        let bias = self.target.load_bias;
        let stats = &self.agg.sites[&key];
        let mut paths: Vec<PathReport> = stats
            .stacks
            .iter()
            .map(|(&id, &created)| {
                let locations = self.stacks.get(probes, id, key, bias, &self.info).to_vec();
                PathReport {
                    live: a.per_stack.get(&id).copied().unwrap_or(0),
                    created,
                    stack: locations.iter().flat_map(|(_, f)| f.iter().cloned()).collect(),
                    locations,
                }
            })
            .filter(|p| !p.stack.is_empty())
            .collect();
        paths.sort_by(|x, y| (y.live, y.created).cmp(&(x.live, x.created)).then(x.stack.len().cmp(&y.stack.len())));
        let unrecorded = a.per_stack.get(&-1).copied().unwrap_or(0);
        if unrecorded > 0 && !label.inlined.is_empty() {
            paths.push(PathReport {
                live: unrecorded,
                created: 0,
                stack: label.inlined.clone(),
                locations: vec![(key.wrapping_sub(bias), label.inlined.clone())],
            });
        }
        paths
    }
}

/// Per live goroutine (by goid): its `g` as read from memory, `None` if unreadable.
type Records = HashMap<u64, Option<GRecord>>;

fn quantile_s(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e6)
}

/// How the main goroutine's creation site is labelled.
pub const MAIN_GOROUTINE: &str = "main goroutine";

/// The trend window: the seed's "diff two snapshots 30 s apart", built in.
pub const TREND_WINDOW_NS: u64 = 30_000_000_000;

/// Live goroutines of one site, summarised at report time.
struct LiveSummary {
    live: u64,
    preexisting: u64,
    ran: u64,
    stack_bytes: u64,
    ages_us: Histogram<u64>,
    blocked_us: Histogram<u64>,
    states: BTreeMap<&'static str, u64>,
    reasons: BTreeMap<u8, u64>,
    per_stack: HashMap<i64, u64>,
    /// (creation time, 0 if before attach; goid) of the oldest few.
    oldest: Vec<(u64, u64)>,
}

/// How many goroutines of each site a report details.
const EXAMPLES: usize = 5;

impl LiveSummary {
    /// Summarises the live goroutines of every site.
    fn per_site(agg: &Aggregator, records: &Records, now: u64) -> HashMap<SiteKey, LiveSummary> {
        let mut acc: HashMap<SiteKey, LiveSummary> = HashMap::new();
        for (goid, g) in &agg.live {
            let a = acc.entry(g.site).or_default();
            a.live += 1;
            match g.created_ns {
                Some(created) => {
                    a.ages_us.record((now.saturating_sub(created) / 1000).max(1)).ok();
                }
                None => a.preexisting += 1,
            }
            a.ran += g.ran as u64;
            *a.per_stack.entry(g.stack_id).or_default() += 1;
            a.keep_oldest(g.created_ns.unwrap_or(0), *goid);
            let Some(Some(rec)) = records.get(goid) else {
                continue;
            };
            a.stack_bytes += rec.stack_bytes;
            *a.states.entry(gstatus::name(rec.status)).or_default() += 1;
            if rec.status == gstatus::WAITING {
                *a.reasons.entry(rec.wait_reason).or_default() += 1;
                if let Some(since) = blocked_since(g, rec) {
                    a.blocked_us.record((now.saturating_sub(since) / 1000).max(1)).ok();
                }
            }
        }
        acc
    }

    fn keep_oldest(&mut self, created_ns: u64, goid: u64) {
        if self.oldest.len() < EXAMPLES {
            self.oldest.push((created_ns, goid));
            self.oldest.sort_unstable();
        } else if (created_ns, goid) < self.oldest[EXAMPLES - 1] {
            self.oldest[EXAMPLES - 1] = (created_ns, goid);
            self.oldest.sort_unstable();
        }
    }
}

/// Since when a waiting goroutine has been blocked, if known: its last `gopark`
/// (with park tracing), else the runtime's own `waitsince` (a lower bound).
fn blocked_since(g: &LiveGoroutine, rec: &GRecord) -> Option<u64> {
    match g.parked {
        Some((_, ts)) => Some(ts),
        None => (rec.wait_since_ns != 0).then_some(rec.wait_since_ns),
    }
}

impl Default for LiveSummary {
    fn default() -> Self {
        Self {
            live: 0,
            preexisting: 0,
            ran: 0,
            stack_bytes: 0,
            ages_us: Histogram::new(3).expect("valid precision"),
            blocked_us: Histogram::new(3).expect("valid precision"),
            states: BTreeMap::new(),
            reasons: BTreeMap::new(),
            per_stack: HashMap::new(),
            oldest: Vec::new(),
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        p50: h.value_at_quantile(0.5) as f64 / 1e6,
        p90: h.value_at_quantile(0.9) as f64 / 1e6,
        p99: h.value_at_quantile(0.99) as f64 / 1e6,
        max: h.max() as f64 / 1e6,
    })
}

/// The creation site of each site's most common creator, then of its creator… (cycles cut).
fn parent_chain(agg: &Aggregator, site: SiteKey, labels: &mut SiteLabels, bias: u64, info: &RuntimeInfo) -> Vec<Frame> {
    let mut chain = Vec::new();
    let mut seen = vec![site];
    let mut key = site;
    while let Some(stats) = agg.sites.get(&key) {
        let Some((&parent, _)) = stats.parents.iter().max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k))) else {
            break;
        };
        if seen.contains(&parent) || chain.len() >= 16 {
            break;
        }
        let startpc = agg.sites.get(&parent).map_or(0, |s| s.startpc);
        chain.push(labels.get(parent, startpc, bias, info).at.clone());
        seen.push(parent);
        key = parent;
    }
    chain
}

/// Symbolized creation sites, computed once.
#[derive(Default)]
struct SiteLabels(HashMap<SiteKey, SiteLabel>);

impl SiteLabels {
    fn get(&mut self, key: SiteKey, startpc: u64, bias: u64, info: &RuntimeInfo) -> &SiteLabel {
        self.0.entry(key).or_insert_with(|| {
            let sym = &info.symbolizer;
            let inlined = sym.frames(key.wrapping_sub(bias).saturating_sub(1));
            let mut at = inlined.first().cloned().unwrap_or_else(|| unknown_frame(key));
            // The main goroutine is started by the runtime's assembly through the
            // `runtime.newproc` ABI wrapper: name it for what it is.
            if at.function == "runtime.newproc" && at.file.contains("autogenerated") {
                at = Frame { function: MAIN_GOROUTINE.into(), file: "(started by the runtime)".into(), line: 0 };
            }
            let go_func = sym.function_at(startpc.wrapping_sub(bias)).unwrap_or_else(|| format!("{startpc:#x}"));
            SiteLabel { at, go_func, inlined }
        })
    }
}

/// Symbolized creation stacks, computed once per stack id.
#[derive(Default)]
struct StackCache(HashMap<i64, Vec<Location>>);

impl StackCache {
    fn get(&mut self, probes: &Probes, stack_id: i64, gopc: u64, bias: u64, info: &RuntimeInfo) -> &[Location] {
        self.0.entry(stack_id).or_insert_with(|| {
            probes
                .stack(stack_id)
                .map(|ips| creation_stack(&ips, gopc, bias, info.symbolizer.as_ref()))
                .unwrap_or_default()
        })
    }
}

fn drain(ring: &mut RingBuf<MapData>, targets: &mut HashMap<u32, TracedTarget>) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if item.len() < GoroutineEvent::SIZE {
            continue;
        }
        // SAFETY: the kernel wrote a `GoroutineEvent` (plain integers) into this slot.
        let ev: GoroutineEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        if let Some(t) = targets.get_mut(&ev.pid) {
            t.agg.on_event(&ev);
        }
        n += 1;
    }
    n
}

/// One return address of a creation stack with its source frames (inlining expanded).
pub type Location = (u64, Vec<Frame>);

/// Symbolizes a creation stack captured at `newproc1`'s RET: drops the runtime
/// frames above the `go` statement (newproc1, systemstack, newproc) and `goexit`.
/// Addresses are returned as linked (load bias removed).
pub fn creation_stack(
    ips: &[u64],
    gopc: u64,
    bias: u64,
    sym: &(dyn crate::symbolize::Symbolizer + Send),
) -> Vec<Location> {
    let start = ips.iter().position(|&ip| ip == gopc).unwrap_or(0);
    ips[start..]
        .iter()
        .map(|&ip| {
            let pc = ip.wrapping_sub(bias);
            let frames: Vec<Frame> =
                sym.frames(pc.saturating_sub(1)).into_iter().filter(|f| f.function != "runtime.goexit").collect();
            (pc, frames)
        })
        .filter(|(_, frames)| !frames.is_empty())
        .collect()
}

fn unknown_frame(pc: u64) -> Frame {
    Frame { function: format!("{pc:#x}"), file: "?".into(), line: 0 }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns` and of Go's `nanotime`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
