//! Report assembly: from a traced target's event counts and what its memory
//! shows now (live goroutines, where they block, on what, what the proof settles)
//! to one judged report, with the per-site aggregation done at report time.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use hdrhistogram::Histogram;

use crate::{
    analysis::aggregate::{Aggregator, LiveGoroutine, Sample, SiteKey},
    analysis::proof::{self, ProofBudget},
    analysis::verdict::{judge_site, SiteFacts},
    binary::symbolize::Frame,
    output::report::{
        BlockedAt, GoroutineSample, KernelCounters, PathReport, Percentiles, ProofReport, Rates, Report, SiteReport,
        Totals, Trend, WaitObjectReport, WaitSummary,
    },
    process::netconn,
    process::snapshot::{all_goroutines, read_records, GRecord},
    process::unwind::{BlockingStacks, Parked, Program, Sched, StackId},
    process::waits::{self, ChanState, WaitKind, WaitObject},
    runtime::layout::gstatus,
    runtime::package_roles::PackageRole,
    runtime::waitreason::{WaitClass, WaitReason},
    tracing::probes::Probes,
    tracing::sitecache::{parent_chain, unknown_frame, Location, SiteLabel, MAIN_GOROUTINE},
};

use super::{monotonic_ns, TracedTarget, WaitPlace, PROOF_RETRY};

impl TracedTarget {
    /// The report of this target now: reads its live goroutines from memory,
    /// retires the ones that died unseen, groups by creation site, judges each.
    pub(super) fn assemble(
        &mut self,
        probes: &Probes,
        pid: u32,
        target_exited: bool,
        kernel: KernelCounters,
        is_final: bool,
    ) -> Report {
        let now = monotonic_ns();
        let records = self.observe_live(target_exited, now);
        let waits = if target_exited {
            Waits::default()
        } else {
            self.unwind_blocked(&records);
            let waits = self.observe_waits(&records);
            self.refresh_proof(&records, &waits);
            waits
        };
        let mut summaries =
            LiveSummary::per_site(&self.agg, &records, &self.blocking, &waits, &self.proven, &self.network_held, now);
        let live_connections = if target_exited { None } else { netconn::live_connections(pid).ok() };
        let observed = Observed { records, waits, live_connections, at: now };
        let keys: Vec<SiteKey> = self.agg.sites.keys().copied().collect();
        let mut sites: Vec<SiteReport> = keys
            .into_iter()
            .map(|key| {
                let summary = summaries.remove(&key).unwrap_or_default();
                self.site_report(probes, key, summary, &observed)
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
            proof: self.last_proof.clone(),
            gate: None,
        }
    }
}

impl TracedTarget {
    /// Picks up live goroutines whose creation event was lost, from the goroutine
    /// table in memory (no stop; skipped where the table is not known).
    pub(super) fn reconcile_creations(&mut self) {
        let Ok(table) = &self.info.goroutine_table else { return };
        match all_goroutines(&self.mem, table, &self.info.layout, self.target.load_bias) {
            Ok(existing) => self.agg.reconcile_creations(&existing, super::monotonic_ns()),
            Err(e) => log::debug!("PID {}: goroutine table unreadable for reconciliation: {e}", self.target.pid),
        }
    }

    /// What memory says about every goroutine believed alive; retires the ones
    /// that died unseen. `None` where memory could not be read.
    pub(super) fn observe_live(&mut self, target_exited: bool, now: u64) -> Records {
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

    /// Reads the current stack of every blocked goroutine not already known where
    /// it is (see [`BlockingStacks`]).
    fn unwind_blocked(&mut self, records: &Records) {
        if self.info.layout.blocked.is_none() {
            return;
        }
        let Some(pcln) = self.target.binary.pclntab().cloned() else { return };
        let parked: Vec<Parked> = records
            .iter()
            .filter_map(|(&goid, rec)| {
                let rec = rec.as_ref().filter(|r| r.is_blocked() && r.sched_pc != 0)?;
                let g_addr = self.agg.live.get(&goid)?.g_addr;
                Some(Parked { goid, g_addr, sched: sched_of(rec) })
            })
            .collect();
        let (mem, layout) = (&self.mem, &self.info.layout);
        let reread = |addrs: &[u64]| -> Vec<Option<Sched>> {
            read_records(mem, layout, addrs)
                .into_iter()
                .map(|r| r.filter(GRecord::is_blocked).map(|r| sched_of(&r)))
                .collect()
        };
        let program = Program { pcln: &pcln, bias: self.target.load_bias, arch: self.target.binary.arch };
        self.blocking.refresh(mem, program, &parked, reread);
    }

    /// What each blocked goroutine waits on: the channels of its sudogs, or its
    /// semaphore (from `g.waiting` on Go ≥ 1.26, else from `runtime.semtable`).
    fn observe_waits(&self, records: &Records) -> Waits {
        let Some(layout) = self.info.layout.blocked else { return Waits::default() };
        let mut blocked = Vec::new();
        for (&goid, rec) in records {
            let Some(rec) = rec.as_ref().filter(|r| r.is_blocked()) else { continue };
            let Some(kind) = waits::kind_for(self.info.wait_reasons.get(rec.wait_reason).class) else { continue };
            let Some(g) = self.agg.live.get(&goid) else { continue };
            blocked.push(waits::Blocked { goid, g_addr: g.g_addr, waiting: rec.waiting, kind });
        }
        let semtable = self.info.semtable.as_ref().ok().map(|t| t.wrapping_add(self.target.load_bias));
        let by_goid = waits::read(&self.mem, &layout, semtable, &blocked).by_goid;
        let mut waiters: HashMap<WaitObject, u64> = HashMap::new();
        for objects in by_goid.values() {
            for o in objects {
                *waiters.entry(*o).or_default() += 1;
            }
        }
        let channels: Vec<u64> = waiters.keys().filter(|o| o.kind == WaitKind::Channel).map(|o| o.addr).collect();
        let channels = waits::channel_states(&self.mem, &layout, &channels);
        Waits { by_goid, waiters, channels }
    }

    /// Keeps the proofs that still hold (same goroutine, blocked at the same place
    /// on the same objects) and what the network held of goroutines still alive
    /// and, if some blocked goroutine of the program's own code is not proven
    /// yet, runs the proof again.
    fn refresh_proof(&mut self, records: &Records, waits: &Waits) {
        self.proven
            .retain(|goid, at| records.get(goid).copied().flatten().is_some_and(|r| waits.blocked_at(*goid, &r, at)));
        // Kept while it runs too: a connection's writer runs after each request
        // and blocks again on the same channels (counted only then).
        self.network_held.retain(|goid, _| records.contains_key(goid));
        if !self.prove {
            return;
        }
        let (bias, info, labels, agg, binary) =
            (self.target.load_bias, &self.info, &mut self.labels, &self.agg, &self.target.binary);
        let retry = self.last_proof_at.is_none_or(|at| at.elapsed() >= PROOF_RETRY);
        let unproven = &self.unproven;
        let seen_unproven = |goid: &u64| {
            let now = records.get(goid).copied().flatten().map(|r| sched_of(&r));
            !retry && now.is_some() && unproven.get(goid) == now.as_ref()
        };
        let open =
            waits.by_goid.keys().filter(|goid| !self.proven.contains_key(goid) && !seen_unproven(goid)).any(|goid| {
                agg.live.get(goid).is_some_and(|g| {
                    let startpc = agg.sites.get(&g.site).map_or(0, |s| s.startpc);
                    !PackageRole::of_function(&labels.get(g.site, startpc, bias, info, binary).at.function).is_runtime()
                })
            });
        if !open {
            return;
        }
        self.last_proof_at = Some(Instant::now());
        let outcome = proof::prove(&self.mem, &self.target.binary, &self.info, bias, ProofBudget::default());
        for goid in &outcome.network_held {
            if let Some(objects) = waits.by_goid.get(goid) {
                self.network_held.insert(*goid, objects.iter().map(|w| w.addr).collect());
            }
        }
        for (goid, objects) in &outcome.proven {
            if let Some(Some(rec)) = records.get(goid) {
                self.proven.insert(*goid, (sched_of(rec), objects.clone()));
            }
        }
        self.unproven = if outcome.inconclusive.is_none() {
            waits
                .by_goid
                .keys()
                .filter(|goid| !self.proven.contains_key(goid))
                .filter_map(|goid| Some((*goid, sched_of(&records.get(goid).copied().flatten()?))))
                .collect()
        } else {
            HashMap::new()
        };
        self.last_proof = Some(ProofReport {
            candidates: outcome.candidates as u64,
            proven: self.proven.len() as u64,
            inconclusive: outcome.inconclusive,
            heap_bytes: outcome.heap_bytes,
            bytes_read: outcome.bytes_read,
            elapsed_ms: outcome.elapsed.as_secs_f64() * 1e3,
        });
    }

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

    /// A blocking stack symbolized: each return address (as linked) with its frames
    /// (inlined ones expanded), `runtime.goexit` dropped.
    fn blocking_stack(&mut self, id: StackId) -> &[Location] {
        let (sym, bias, blocking) = (&self.info.symbolizer, self.target.load_bias, &self.blocking);
        self.blocking_frames.entry(id).or_insert_with(|| {
            blocking
                .pcs(id)
                .iter()
                .map(|&pc| {
                    let pc = pc.wrapping_sub(bias);
                    let frames: Vec<Frame> = sym
                        .frames(pc.saturating_sub(1))
                        .into_iter()
                        .filter(|f| f.function != "runtime.goexit")
                        .collect();
                    (pc, frames)
                })
                .filter(|(_, frames)| !frames.is_empty())
                .collect()
        })
    }

    /// The site's blocked goroutines grouped by where they are stuck, busiest first.
    fn blocked_at(&mut self, groups: &HashMap<(StackId, u8), u64>) -> Vec<BlockedAt> {
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
    fn site_report(&mut self, probes: &Probes, key: SiteKey, a: LiveSummary, observed: &Observed) -> SiteReport {
        let Observed { records, waits, live_connections, at: now } = observed;
        let (live_connections, now) = (*live_connections, *now);
        let t = self;
        let traced_s = now.saturating_sub(t.attached_ns) as f64 / 1e9;
        let bias = t.target.load_bias;
        let stats = &t.agg.sites[&key];
        let label = t.labels.get(key, stats.startpc, bias, &t.info, &t.target.binary).clone();
        let start = stats.sample_at_or_after(now.saturating_sub(TREND_WINDOW_NS)).copied().unwrap_or(Sample {
            t_ns: t.attached_ns,
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
        let reasons: Vec<(&WaitReason, u64)> =
            a.reasons.iter().map(|(&r, &n)| (t.info.wait_reasons.get(r), n)).collect();
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
            is_main: label.at.function == MAIN_GOROUTINE,
            proven: a.proven,
            proof_ran: t.prove && t.last_proof.as_ref().is_some_and(|p| p.inconclusive.is_none()),
            waiting_on_known: a.with_objects,
            distinct_objects: a.objects.len() as u64,
            object_noun: object_noun(&a.objects),
            network_held: a.network_held,
            io_waiting: count(|class| class == WaitClass::Network),
            on_a_lock: count(WaitClass::passes_through_a_lock),
            paused: count(WaitClass::paused_by_runtime),
            live_connections,
        };
        let (verdict, verdict_reason) = judge_site(&facts);
        let (created, exited, live, adopted) = (stats.created, stats.exited, stats.live, stats.adopted);
        let paths = t.paths(probes, key, &a, &label);
        let blocked_at = t.blocked_at(&a.blocking);
        let wait_objects = t.wait_summary(&a.objects, a.with_objects, waits);
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
            parent_chain: parent_chain(&t.agg, key, &mut t.labels, bias, &t.info, &t.target.binary),
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
    /// Live goroutines proven unable to run again.
    proven: u64,
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

/// What one report read of the target, for every site's row.
struct Observed {
    records: Records,
    waits: Waits,
    live_connections: Option<u64>,
    /// CLOCK_MONOTONIC when read.
    at: u64,
}

/// What the blocked goroutines of one report wait on.
#[derive(Default)]
struct Waits {
    /// Per goroutine, the objects it waits on.
    by_goid: HashMap<u64, Vec<WaitObject>>,
    /// Per object, the goroutines (of every site) waiting on it.
    waiters: HashMap<WaitObject, u64>,
    /// The state of each channel waited on.
    channels: HashMap<u64, ChanState>,
}

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

impl Waits {
    /// Whether `goid` (its record `rec`) is blocked at `at`: the same place, on
    /// the same objects.
    fn blocked_at(&self, goid: u64, rec: &GRecord, (sched, objects): &WaitPlace) -> bool {
        rec.is_blocked()
            && sched_of(rec) == *sched
            && self.by_goid.get(&goid).is_some_and(|o| o.iter().map(|w| w.addr).eq(objects.iter().copied()))
    }

    /// Whether `goid` waits on one of `objects` now. (A goroutine that wakes
    /// often can be read mid-park, one of its select's channels not linked yet;
    /// and its stack may have moved since: neither changes what it waits on.)
    fn on_any_of(&self, goid: u64, objects: &[u64]) -> bool {
        self.by_goid.get(&goid).is_some_and(|now| now.iter().any(|w| objects.contains(&w.addr)))
    }
}

fn sched_of(rec: &GRecord) -> Sched {
    Sched { sp: rec.sched_sp, pc: rec.sched_pc, stack_hi: rec.stack_hi }
}

impl LiveSummary {
    /// Summarises the live goroutines of every site.
    fn per_site(
        agg: &Aggregator,
        records: &Records,
        blocking: &BlockingStacks,
        waits: &Waits,
        proven: &HashMap<u64, WaitPlace>,
        network_held: &HashMap<u64, Vec<u64>>,
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
                if let Some(id) = blocking.get(*goid, &sched_of(rec)) {
                    *a.blocking.entry((id, rec.wait_reason)).or_default() += 1;
                }
                if let Some(objects) = waits.by_goid.get(goid) {
                    a.with_objects += 1;
                    for o in objects {
                        *a.objects.entry(*o).or_default() += 1;
                    }
                }
                a.proven += proven.contains_key(goid) as u64;
                a.network_held += network_held.get(goid).is_some_and(|held| waits.on_any_of(*goid, held)) as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connections_goroutine_is_known_by_any_channel_it_waited_on() {
        let chan = |addr| WaitObject { kind: WaitKind::Channel, addr };
        let waits = Waits { by_goid: HashMap::from([(7, vec![chan(0x10), chan(0x20)])]), ..Default::default() };
        // Read mid-park once: only one of its select's two channels was linked.
        assert!(waits.on_any_of(7, &[0x20]));
        assert!(waits.on_any_of(7, &[0x10, 0x20]));
        assert!(!waits.on_any_of(7, &[0x30]), "another connection's channel");
        assert!(!waits.on_any_of(8, &[0x10]), "not waiting now");
    }
}
