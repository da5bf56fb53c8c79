//! Report assembly: from a traced target's event counts, what was just observed
//! of it (live goroutines, where they block, on what) and what the proof has
//! settled, to one judged report, with the per-site aggregation done at report
//! time. Reads, never changes, the tracer's state.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;

use crate::{
    analysis::aggregate::{Aggregator, LiveGoroutine, Sample, SiteKey, SiteStats},
    analysis::memory_outlook,
    analysis::proof_state::{ProofState, Records},
    analysis::reach::ChainRoot,
    analysis::test_blame::{Outlived, TestId},
    analysis::verdict::{judge_site, SiteFacts, Verdict},
    binary::symbolize::Frame,
    output::report::{
        BlockedAt, GoroutineSample, HeldBy, HeldHop, KernelCounters, PathReport, Percentiles, ProofReport, Rates,
        Report, RetainedReport, SiteReport, TestReport, TestSite, TestStatus, Totals, Trend, WaitObjectReport,
        WaitSummary, OUTSIDE_TESTS,
    },
    process::snapshot::GRecord,
    process::unwind::{BlockingStacks, StackId},
    process::waits::{WaitKind, WaitObject, Waits},
    runtime::layout::gstatus,
    runtime::package_roles::PackageRole,
    runtime::waitreason::{WaitClass, WaitReason, WaitReasons},
    tracing::sitecache::{parent_chain, unknown_frame, Location, SiteLabel, MAIN_GOROUTINE},
};

use super::{observe::Observation, TracedTarget};

impl TracedTarget {
    /// The report of this target from what was just observed of it: a function of
    /// the observation, the aggregator's state and the proof's, changing none of
    /// them (symbols come from caches [`TracedTarget::observe`] filled).
    pub(super) fn assemble(
        &self,
        observed: &Observation,
        pid: u32,
        target_exited: bool,
        kernel: KernelCounters,
        is_final: bool,
    ) -> Report {
        let now = observed.at;
        let mut summaries =
            LiveSummary::per_site(&self.agg, &observed.records, &self.blocking, &observed.waits, &self.proof, now);
        let keys: Vec<SiteKey> = self.agg.sites.keys().copied().collect();
        let mut sites: Vec<SiteReport> = keys
            .into_iter()
            .map(|key| {
                let summary = summaries.remove(&key).unwrap_or_default();
                self.site_report(key, summary, observed)
            })
            .collect();
        sites.sort_by(|a, b| {
            b.live
                .cmp(&a.live)
                .then(a.verdict.cmp(&b.verdict))
                .then(b.created.cmp(&a.created))
                .then(a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });

        let (created, exited) = self.agg.totals();
        let tests = if self.tests_traced { self.test_reports(&sites) } else { Vec::new() };
        let memory = observed.memory.as_ref().and_then(|facts| memory_outlook::outlook(facts, &sites));
        Report {
            pid,
            ns_pid: self.target.ns_pid,
            binary: self.target.exe.display().to_string(),
            go_version: self.target.binary.go_version.raw.clone(),
            runtime_facts: self.info.sources.clone(),
            gaps: self.gaps.clone(),
            mode: "attach",
            elapsed_s: now.saturating_sub(self.attached_ns) as f64 / 1e9,
            is_final,
            target_exited,
            totals: Totals {
                created,
                exited,
                live: self.agg.live.len() as u64,
                preexisting: self.agg.live.values().filter(|g| g.created_ns.is_none()).count() as u64,
            },
            lost_events: kernel.lost_events(),
            kernel,
            reconciled_exits: self.agg.reconciled_exits,
            reconciled_creations: self.agg.reconciled_creations,
            sites,
            proof: self.proof.last_run().map(|run| ProofReport {
                candidates: run.candidates,
                proven: run.proven,
                inconclusive: run.inconclusive.clone(),
                heap_bytes: run.heap_bytes,
                bytes_read: run.bytes_read,
                elapsed_ms: run.elapsed.as_secs_f64() * 1e3,
            }),
            gate: None,
            tests,
            known_leaks: None,
            memory,
        }
    }

    /// Each test and the goroutines descending from it, alive now or outlived;
    /// then the goroutines no test created, grouped by what created them.
    fn test_reports(&self, sites: &[SiteReport]) -> Vec<TestReport> {
        let bias = self.target.load_bias;
        let by_pc: HashMap<&str, &SiteReport> = sites.iter().map(|s| (s.pc.as_str(), s)).collect();
        let test_site = |key: SiteKey, goroutines: u64, longest_s: Option<f64>| -> Option<TestSite> {
            let site = by_pc.get(format!("{:#x}", key.wrapping_sub(bias)).as_str())?;
            Some(TestSite::of(site, goroutines, longest_s))
        };
        let mut live: BTreeMap<(TestId, SiteKey), u64> = BTreeMap::new();
        for g in self.agg.live.values() {
            *live.entry((g.test, g.site)).or_default() += 1;
        }
        let mut outlived: BTreeMap<(TestId, SiteKey), Outlived> = BTreeMap::new();
        for (test, site, o) in self.agg.tests.outlived() {
            outlived.insert((test, site), o);
        }
        let mut reports: Vec<TestReport> = self
            .agg
            .tests
            .runs()
            .map(|(id, run)| TestReport {
                name: self.agg.tests.name(id),
                status: TestStatus::Clean,
                duration_s: run.ended_ns.map(|end| end.saturating_sub(run.started_ns) as f64 / 1e9),
                live: live
                    .range((id, 0)..=(id, SiteKey::MAX))
                    .filter_map(|(&(_, k), &n)| test_site(k, n, None))
                    .collect(),
                outlived: outlived
                    .range((id, 0)..=(id, SiteKey::MAX))
                    .filter_map(|(&(_, k), o)| test_site(k, o.goroutines, Some(o.longest_ns as f64 / 1e9)))
                    .collect(),
            })
            .collect();
        // Outside tests: the program's own goroutines only, named by what created them.
        let mut outside: BTreeMap<&'static str, Vec<TestSite>> = BTreeMap::new();
        for (&(_, key), &n) in live.range((0, 0)..=(0, SiteKey::MAX)) {
            let Some(site) = test_site(key, n, None) else { continue };
            let Some(report) = by_pc.get(site.site_pc.as_str()) else { continue };
            if !crate::analysis::gate::is_infrastructure(&report.function) {
                outside.entry(outside_tests_group(report)).or_default().push(site);
            }
        }
        for name in OUTSIDE_TESTS {
            if let Some(live) = outside.remove(name) {
                reports.push(TestReport {
                    name: name.to_string(),
                    status: TestStatus::Clean,
                    duration_s: None,
                    live,
                    outlived: Vec::new(),
                });
            }
        }
        for report in &mut reports {
            report.settle(|pc| by_pc.get(pc).is_some_and(|s| s.verdict == Verdict::Leak));
        }
        reports
    }
}

/// Which group of [`OUTSIDE_TESTS`] a site no test created belongs to: `TestMain`
/// or `init` when its creation path (or its creator's) runs through them.
fn outside_tests_group(site: &SiteReport) -> &'static str {
    let frames = || site.stack.iter().chain(site.paths.iter().flat_map(|p| &p.stack)).chain(&site.parent_chain);
    if frames().any(|f| f.function.ends_with(".TestMain")) {
        "TestMain"
    } else if frames().any(|f| is_init_function(&f.function)) {
        "init"
    } else {
        "(outside tests)"
    }
}

/// A package initializer: `pkg.init`, `pkg.init.0`, a package-level closure
/// (`pkg.init.func1`), or the runtime running them.
fn is_init_function(function: &str) -> bool {
    let after_package = function.rsplit('/').next().unwrap_or(function);
    let mut parts = after_package.split('.');
    parts.next();
    parts.next() == Some("init") || function == "runtime.doInit" || function == "runtime.doInit1"
}

impl TracedTarget {
    /// The site's wait objects, summarised.
    fn wait_summary(&self, objects: &HashMap<WaitObject, u64>, goroutines: u64, waits: &Waits) -> Option<WaitSummary> {
        if objects.is_empty() {
            return None;
        }
        let shared = objects.iter().filter(|(o, &n)| waits.waiters.get(o).copied().unwrap_or(0) > n).count() as u64;
        let most = objects.values().copied().max().unwrap_or(0);
        let mut busiest: Vec<(&WaitObject, &u64)> = objects.iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let busiest: Vec<WaitObjectReport> = busiest
            .into_iter()
            .take(BUSIEST_OBJECTS)
            .map(|(o, &of_site)| WaitObjectReport {
                kind: o.kind,
                addr: format!("{:#x}", o.addr),
                of_site,
                waiters: waits.waiters.get(o).copied().unwrap_or(of_site),
                channel: waits.channels.get(&o.addr).copied().filter(|_| o.kind == WaitKind::Channel),
            })
            .collect();
        let mut kinds: Vec<WaitKind> = objects.keys().map(|o| o.kind).collect();
        kinds.sort();
        kinds.dedup();
        let summary = describe_waits(goroutines, objects.len() as u64, shared, most, &kinds, busiest.first());
        Some(WaitSummary { goroutines, objects: objects.len() as u64, shared, most_on_one: most, summary, busiest })
    }

    /// What holds the busiest of a site's wait objects that the last proof
    /// explained, in words.
    fn held_by(&self, objects: &HashMap<WaitObject, u64>) -> Option<HeldBy> {
        let mut busiest: Vec<(&WaitObject, &u64)> = objects.iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let (object, chain, goroutines) =
            busiest.into_iter().find_map(|(o, &n)| Some((o, self.proof.held(o.addr)?, n)))?;
        let bias = self.target.load_bias;
        let root = match chain.root {
            ChainRoot::Global(addr) => self
                .target
                .binary
                .variable_at(addr.wrapping_sub(bias))
                .unwrap_or_else(|| format!("the global at {addr:#x}")),
            ChainRoot::Stack { goid, .. } => match self.agg.live.get(&goid).and_then(|g| self.labels.peek(g.site)) {
                Some(label) => format!(
                    "goroutine {goid}, created at {}:{}",
                    crate::output::short_path(&label.at.file),
                    label.at.line
                ),
                None => format!("goroutine {goid}'s stack"),
            },
            ChainRoot::Special(_) => "a finalizer's or cleanup's record".into(),
        };
        let hops: Vec<HeldHop> = chain
            .hops
            .iter()
            .map(|h| HeldHop { object: format!("{:#x}", h.object), size: h.size, offset: h.offset })
            .collect();
        let kind = match object.kind {
            WaitKind::Channel => "channel",
            WaitKind::Semaphore => "semaphore",
            WaitKind::Cond => "sync.Cond",
        };
        let wait_object = format!("{kind} {:#x}", object.addr);
        let mut summary = root.clone();
        for h in &hops {
            summary.push_str(&format!(" → {} ({} B, at +{:#x})", h.object, h.size, h.offset));
        }
        summary.push_str(&format!(" → {wait_object}"));
        Some(HeldBy { root, hops, wait_object, goroutines, summary })
    }

    /// A blocking stack symbolized (by [`TracedTarget::observe`]).
    fn blocking_stack(&self, id: StackId) -> &[Location] {
        self.blocking_frames.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The site's blocked goroutines grouped by where they are stuck, busiest first.
    fn blocked_at(&self, groups: &HashMap<(StackId, u8), u64>) -> Vec<BlockedAt> {
        let mut groups: Vec<(&(StackId, u8), &u64)> = groups.iter().collect();
        groups.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        groups
            .into_iter()
            .take(BLOCKED_AT_GROUPS)
            .map(|(&(id, reason), &goroutines)| {
                let wait_reason = self.info.wait_reasons.name(reason).to_string();
                let locations = self.blocking_stack(id).to_vec();
                let stack: Vec<Frame> = locations.iter().flat_map(|(_, f)| f.iter().cloned()).collect();
                let at = stack
                    .iter()
                    .find(|f| !PackageRole::of_function(&f.function).is_blocking_machinery())
                    .or_else(|| stack.iter().find(|f| !PackageRole::of_function(&f.function).is_runtime()))
                    .or(stack.first())
                    .cloned()
                    .unwrap_or_else(|| unknown_frame(self.blocking.pcs(id).first().copied().unwrap_or(0)));
                BlockedAt { goroutines, wait_reason, at, stack, locations }
            })
            .collect()
    }

    /// One report row: the site's counts, trend, live goroutines, paths, verdict.
    fn site_report(&self, key: SiteKey, a: LiveSummary, observed: &Observation) -> SiteReport {
        let Observation { records, waits, live_connections, at: now, .. } = observed;
        let (live_connections, now) = (*live_connections, *now);
        let t = self;
        let bias = t.target.load_bias;
        let stats = &t.agg.sites[&key];
        let label = t.labels.peek(key).cloned().unwrap_or_else(|| SiteLabel::unknown(key, stats.startpc));
        let is_main = label.at.function == MAIN_GOROUTINE;
        let context = SiteContext {
            wait_reasons: &t.info.wait_reasons,
            is_main,
            proof_concluded: t.proof.concluded(),
            live_connections,
            now,
            attached_ns: t.attached_ns,
        };
        let SiteView { start, window_s, live_series, wait_reasons, top_wait_reason, blocked, facts } =
            view_site(stats, &a, &context);
        let goroutines = a.oldest.iter().filter_map(|&(_, goid)| t.goroutine_sample(goid, records, now)).collect();
        let (verdict, verdict_reason) = judge_site(&facts);
        let (created, exited, live, adopted) = (stats.created, stats.exited, stats.live, stats.adopted);
        let paths = t.paths(key, &a, &label);
        let blocked_at = t.blocked_at(&a.blocking);
        let wait_objects = t.wait_summary(&a.objects, a.with_objects, waits);
        let stack = paths.first().map(|p| p.stack.clone()).unwrap_or_else(|| label.inlined.clone());
        let retained =
            t.proof.retained(key, TREND_WINDOW_NS).filter(|_| a.proven > 0).map(|(r, at, growth)| RetainedReport {
                bytes: r.bytes + a.proven_stack_bytes,
                heap_bytes: r.bytes,
                objects: r.objects,
                stack_bytes: a.proven_stack_bytes,
                goroutines: a.proven,
                shared_bytes: r.shared_bytes,
                shared_objects: r.shared_objects,
                bytes_per_s: growth,
                measured_s_ago: now.saturating_sub(at) as f64 / 1e9,
                heap_series: t.proof.retained_series(key, TREND_WINDOW_NS),
            });
        let fingerprint = crate::analysis::known_leaks::fingerprint(&label.at.function, &label.go_func, &blocked_at);

        let held_by = (a.with_objects > a.proven).then(|| t.held_by(&a.objects)).flatten();
        SiteReport {
            held_by,
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
            adopted,
            trend: Trend {
                window_s,
                live_start: start.live,
                live_end: live,
                live_per_s: (live as f64 - start.live as f64) / window_s,
                live_series,
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
            blocked_at,
            wait_objects,
            proven: a.proven,
            retained,
            parent_chain: parent_chain(&t.agg, key, &t.labels),
            fingerprint,
            ignored: None,
        }
    }

    /// One live goroutine as memory shows it now.
    fn goroutine_sample(&self, goid: u64, records: &Records, now: u64) -> Option<GoroutineSample> {
        let g = self.agg.live.get(&goid)?;
        let rec = records.get(&goid).copied().flatten();
        let waiting = rec.filter(GRecord::is_blocked);
        Some(GoroutineSample {
            goid,
            state: rec.map_or("unknown", |r| gstatus::name(r.status)),
            wait_reason: waiting.map(|r| self.info.wait_reasons.name(r.wait_reason).to_string()),
            blocked_s: waiting.and_then(|r| blocked_since(g, &r)).map(|since| now.saturating_sub(since) as f64 / 1e9),
            age_s: g.created_ns.map(|c| now.saturating_sub(c) as f64 / 1e9),
            g_addr: format!("{:#x}", g.g_addr),
        })
    }

    /// The site's distinct creation paths, busiest first; goroutines from before
    /// attach have no recorded stack, so their `go` statement stands in.
    fn paths(&self, key: SiteKey, a: &LiveSummary, label: &SiteLabel) -> Vec<PathReport> {
        let bias = self.target.load_bias;
        let stats = &self.agg.sites[&key];
        let mut paths: Vec<PathReport> = stats
            .stacks
            .iter()
            .map(|(&id, &created)| {
                let locations = self.stacks.peek(id).to_vec();
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

/// What a site's facts are judged against, besides its own counts.
struct SiteContext<'a> {
    wait_reasons: &'a WaitReasons,
    /// The site is the main goroutine's.
    is_main: bool,
    /// A proof ran and came to a conclusion.
    proof_concluded: bool,
    live_connections: Option<u64>,
    /// CLOCK_MONOTONIC now, and at attach.
    now: u64,
    attached_ns: u64,
}

/// One site's numbers at report time and the facts its verdict is judged on.
struct SiteView {
    /// Where its trend window starts.
    start: Sample,
    window_s: f64,
    live_series: Vec<u64>,
    /// Blocked goroutines by wait reason, as Go names them.
    wait_reasons: BTreeMap<String, u64>,
    top_wait_reason: Option<String>,
    blocked: u64,
    facts: SiteFacts,
}

/// The site's view, a function of its counts and of its live goroutines as
/// observed (`a`).
fn view_site(stats: &SiteStats, a: &LiveSummary, context: &SiteContext) -> SiteView {
    let (now, attached_ns) = (context.now, context.attached_ns);
    let traced_s = now.saturating_sub(attached_ns) as f64 / 1e9;
    let start = stats.sample_at_or_after(now.saturating_sub(TREND_WINDOW_NS)).copied().unwrap_or(Sample {
        t_ns: attached_ns,
        live: 0,
        created: 0,
        exited: 0,
    });
    let window_s = (now.saturating_sub(start.t_ns) as f64 / 1e9).max(1e-3);
    let live_series: Vec<u64> = stats
        .history
        .iter()
        .filter(|h| h.t_ns >= start.t_ns)
        .map(|h| h.live)
        .chain(std::iter::once(stats.live))
        .collect();
    // Each code's reason, resolved once for the binary: the rules count by
    // class, the report shows the names.
    let reasons: Vec<(&WaitReason, u64)> = a.reasons.iter().map(|(&r, &n)| (context.wait_reasons.get(r), n)).collect();
    let count = |of_class: fn(WaitClass) -> bool| -> u64 {
        reasons.iter().filter(|(r, _)| of_class(r.class)).map(|(_, n)| n).sum()
    };
    let mut wait_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (reason, n) in &reasons {
        *wait_reasons.entry(reason.name.clone()).or_default() += n;
    }
    let never_wake = count(WaitClass::never_wakes);
    let top_wait_reason =
        wait_reasons.iter().max_by_key(|(name, n)| (**n, std::cmp::Reverse(*name))).map(|(r, _)| r.clone());
    let top_reason = top_wait_reason
        .as_ref()
        .and_then(|top| reasons.iter().find(|(r, _)| &r.name == top))
        .map(|(r, _)| (*r).clone());
    let blocked = wait_reasons.values().sum();
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
        top_reason,
        never_wake,
        age_p50_s: quantile_s(&a.ages_us, 0.5),
        oldest_s: (!a.ages_us.is_empty()).then(|| a.ages_us.max() as f64 / 1e6),
        lifetime_p99_s: lifetime(0.99),
        lifetime_p50_s: lifetime(0.5),
        preexisting: a.preexisting,
        ran: a.ran,
        blocked_p50_s: quantile_s(&a.blocked_us, 0.5),
        traced_s,
        is_main: context.is_main,
        proven: a.proven,
        proof_ran: context.proof_concluded,
        waiting_on_known: a.with_objects,
        distinct_objects: a.objects.len() as u64,
        object_noun: object_noun(&a.objects),
        network_held: a.network_held,
        io_waiting: count(|class| class == WaitClass::Network),
        on_a_lock: count(WaitClass::passes_through_a_lock),
        paused: count(WaitClass::paused_by_runtime),
        live_connections: context.live_connections,
    };
    SiteView { start, window_s, live_series, wait_reasons, top_wait_reason, blocked, facts }
}

fn quantile_s(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e6)
}

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
    /// Blocked goroutines by (current stack, wait reason).
    blocking: HashMap<(StackId, u8), u64>,
    /// Goroutines per object they wait on (a `select` counts once per channel).
    objects: HashMap<WaitObject, u64>,
    /// Blocked goroutines whose wait objects are known.
    with_objects: u64,
    /// Live goroutines proven unable to run again, and their stacks' bytes.
    proven: u64,
    proven_stack_bytes: u64,
    /// Blocked goroutines whose wait objects a goroutine serving the network holds.
    network_held: u64,
    /// (creation time, 0 if before attach; goid) of the oldest few.
    oldest: Vec<(u64, u64)>,
}

/// How many goroutines of each site a report details.
const EXAMPLES: usize = 5;

/// How many distinct blocking places of each site a report keeps (the human table
/// shows fewer).
const BLOCKED_AT_GROUPS: usize = 32;

/// How many of a site's wait objects a report details.
const BUSIEST_OBJECTS: usize = 3;

/// "500 goroutines wait on 500 distinct channels, none shared", "300 goroutines
/// wait on one channel (unbuffered, open)".
fn describe_waits(
    goroutines: u64,
    distinct: u64,
    shared: u64,
    most: u64,
    kinds: &[WaitKind],
    busiest: Option<&WaitObjectReport>,
) -> String {
    let noun = match kinds {
        [WaitKind::Channel] => ("channel", "channels"),
        [WaitKind::Semaphore] => ("semaphore (mutex or WaitGroup)", "semaphores (mutexes or WaitGroups)"),
        [WaitKind::Cond] => ("sync.Cond", "sync.Conds"),
        _ => ("object", "objects"),
    };
    let who = if goroutines == 1 { "1 goroutine waits".to_string() } else { format!("{goroutines} goroutines wait") };
    let on = if distinct == 1 {
        let state = busiest.and_then(|b| b.channel).map(|c| format!(" ({})", c.describe())).unwrap_or_default();
        format!("on one {}{state}", noun.0)
    } else if most == 1 {
        format!("on {distinct} distinct {}, one each", noun.1)
    } else {
        format!("on {distinct} distinct {}, up to {most} on one", noun.1)
    };
    let shared = match shared {
        0 => ", none shared with other sites".to_string(),
        n if n == distinct && distinct == 1 => ", shared with other sites".to_string(),
        n => format!(", {n} shared with other sites"),
    };
    format!("{who} {on}{shared}")
}

/// What a site's goroutines wait on, as one word.
fn object_noun(objects: &HashMap<WaitObject, u64>) -> &'static str {
    let mut kinds = objects.keys().map(|o| o.kind);
    match (kinds.next(), kinds.all(|k| Some(k) == objects.keys().next().map(|o| o.kind))) {
        (Some(WaitKind::Channel), true) => "channel",
        (Some(WaitKind::Semaphore), true) => "semaphore",
        (Some(WaitKind::Cond), true) => "sync.Cond",
        _ => "object",
    }
}

impl LiveSummary {
    /// Summarises the live goroutines of every site.
    fn per_site(
        agg: &Aggregator,
        records: &Records,
        blocking: &BlockingStacks,
        waits: &Waits,
        proof: &ProofState,
        now: u64,
    ) -> HashMap<SiteKey, LiveSummary> {
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
            if rec.is_blocked() {
                *a.reasons.entry(rec.wait_reason).or_default() += 1;
                if let Some(id) = blocking.get(*goid, &rec.sched()) {
                    *a.blocking.entry((id, rec.wait_reason)).or_default() += 1;
                }
                if let Some(objects) = waits.by_goid.get(goid) {
                    a.with_objects += 1;
                    for o in objects {
                        *a.objects.entry(*o).or_default() += 1;
                    }
                }
                if proof.is_proven(*goid) {
                    a.proven += 1;
                    a.proven_stack_bytes += rec.stack_bytes;
                }
                a.network_held += proof.network_held(*goid, waits) as u64;
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
            blocking: HashMap::new(),
            objects: HashMap::new(),
            with_objects: 0,
            proven: 0,
            proven_stack_bytes: 0,
            network_held: 0,
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

/// Site facts and verdicts from recorded memory: goroutines created through the
/// aggregator as the probes would report them, their `g`s laid out in memory as
/// Go 1.27 lays them out, read back by the same code that reads a live target.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::verdict::Verdict,
        process::{memory::RecordedMemory, snapshot::read_records},
        runtime::{gotables, layout::gstatus},
    };
    use gleak_common::{EventKind, GoroutineEvent};

    const SECOND: u64 = 1_000_000_000;
    /// CLOCK_MONOTONIC at attach.
    const ATTACHED: u64 = 1_000 * SECOND;
    /// The `go` statement's return address: the site's key.
    const SITE: u64 = 0x4b_00bf;
    const FIRST_G: u64 = 0xc0_0010_0000;
    const G_SIZE: u64 = 0x200;

    struct Scenario {
        /// Goroutines the site creates, evenly over `over_s` seconds after attach.
        created: u64,
        over_s: u64,
        /// How many of them exited at once.
        exited: u64,
        /// The status and wait reason memory shows for the live ones.
        status: u32,
        reason: &'static str,
    }

    /// The site's view and verdict at `ATTACHED + over_s`.
    fn judge(s: &Scenario) -> (SiteView, (Verdict, String)) {
        let release = gotables::for_release(27).expect("Go 1.27 facts");
        let layout = release.runtime_layout();
        let wait_reasons = WaitReasons::from_strings(release.wait_reasons.clone());
        let code = release.wait_reasons.iter().position(|r| r == s.reason).expect("a Go 1.27 wait reason") as u8;
        let mut agg = Aggregator::default();
        agg.sample(ATTACHED);
        let mut mem = RecordedMemory::default();
        let step = s.over_s * SECOND / s.created.max(1);
        // Sampled once a second, as the tracer does.
        let mut next_sample = ATTACHED + SECOND;
        for i in 0..s.created {
            let (goid, g_addr, ts_ns) = (100 + i, FIRST_G + i * G_SIZE, ATTACHED + (i + 1) * step);
            while next_sample <= ts_ns {
                agg.sample(next_sample);
                next_sample += SECOND;
            }
            agg.on_event(&GoroutineEvent {
                kind: EventKind::Create as u32,
                pid: 1,
                ts_ns,
                goid,
                g_addr,
                parent_goid: 1,
                gopc: SITE,
                startpc: 0x4b_0000,
                stack_id: -1,
                ..GoroutineEvent::default()
            });
            if i < s.exited {
                agg.on_exit(goid, ts_ns + 1000);
                continue;
            }
            // The g as the runtime leaves it: a stack, a status, a wait reason,
            // the creation site, blocked since its creation.
            mem.insert(g_addr, &[0; G_SIZE as usize]);
            let put = |mem: &mut RecordedMemory, off: u32, bytes: &[u8]| mem.insert(g_addr + u64::from(off), bytes);
            put(&mut mem, layout.g_stack_lo, &(0xc1_0000_0000 + i * 0x2000).to_le_bytes());
            put(&mut mem, layout.g_stack_hi, &(0xc1_0000_2000 + i * 0x2000).to_le_bytes());
            put(&mut mem, layout.g_status, &s.status.to_le_bytes());
            put(&mut mem, layout.g_goid, &goid.to_le_bytes());
            put(&mut mem, layout.g_waitreason, &[code]);
            put(&mut mem, layout.g_waitsince, &ts_ns.to_le_bytes());
            put(&mut mem, layout.g_gopc, &SITE.to_le_bytes());
        }
        agg.end_of_drain();
        let now = ATTACHED + s.over_s * SECOND;
        agg.sample(now);
        let live: Vec<(u64, u64)> = agg.live.iter().map(|(&goid, g)| (goid, g.g_addr)).collect();
        let addrs: Vec<u64> = live.iter().map(|&(_, g)| g).collect();
        let mut records = Records::new();
        for ((goid, _), rec) in live.iter().zip(read_records(&mem, &layout, &addrs)) {
            assert!(rec.is_some(), "g of goroutine {goid} unreadable from the recording");
            if agg.observe(*goid, rec.as_ref(), now) {
                records.insert(*goid, rec);
            }
        }
        let mut summaries = LiveSummary::per_site(
            &agg,
            &records,
            &BlockingStacks::default(),
            &Waits::default(),
            &ProofState::default(),
            now,
        );
        let summary = summaries.remove(&SITE).unwrap_or_default();
        let context = SiteContext {
            wait_reasons: &wait_reasons,
            is_main: false,
            proof_concluded: false,
            live_connections: None,
            now,
            attached_ns: ATTACHED,
        };
        let view = view_site(&agg.sites[&SITE], &summary, &context);
        let verdict = judge_site(&view.facts);
        (view, verdict)
    }

    #[test]
    fn a_growing_site_of_goroutines_blocked_in_chan_send_is_a_leak() {
        let (view, (verdict, why)) =
            judge(&Scenario { created: 40, over_s: 20, exited: 0, status: gstatus::WAITING, reason: "chan send" });
        assert_eq!(view.blocked, 40);
        assert_eq!(view.top_wait_reason.as_deref(), Some("chan send"));
        assert_eq!(view.wait_reasons, BTreeMap::from([("chan send".to_string(), 40)]));
        assert_eq!((view.facts.live, view.facts.created, view.facts.never_wake), (40, 40, 0));
        assert!(view.live_series.windows(2).all(|w| w[0] <= w[1]), "{:?}", view.live_series);
        assert_eq!(view.live_series.last(), Some(&40));
        assert_eq!(verdict, Verdict::Leak, "{why}");
    }

    #[test]
    fn goroutines_nothing_can_wake_are_a_leak_however_few() {
        let (view, (verdict, why)) = judge(&Scenario {
            created: 3,
            over_s: 2,
            exited: 0,
            status: gstatus::WAITING,
            reason: "select (no cases)",
        });
        assert_eq!(view.facts.never_wake, 3);
        assert_eq!(verdict, Verdict::Leak);
        assert!(why.contains("nothing can ever wake them"), "{why}");
    }

    #[test]
    fn a_site_whose_goroutines_all_exited_is_ok() {
        let (view, (verdict, why)) =
            judge(&Scenario { created: 50, over_s: 10, exited: 50, status: gstatus::WAITING, reason: "chan send" });
        assert_eq!((view.facts.live, view.blocked), (0, 0));
        assert_eq!(verdict, Verdict::Ok, "{why}");
    }

    #[test]
    fn running_goroutines_are_not_blocked_and_not_a_leak() {
        let (view, (verdict, why)) =
            judge(&Scenario { created: 8, over_s: 20, exited: 0, status: gstatus::RUNNING, reason: "chan send" });
        assert_eq!((view.facts.live, view.blocked), (8, 0));
        assert!(view.top_wait_reason.is_none());
        assert_ne!(verdict, Verdict::Leak, "{why}");
    }
}
