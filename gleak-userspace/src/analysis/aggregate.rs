//! Per-target bookkeeping of goroutine lifecycles, grouped by creation site.
//!
//! Fed one event at a time from the ring buffer; no allocation per event beyond
//! amortised hash-map growth. Goroutines that existed before attach are adopted
//! from a memory snapshot of the goroutine table.

use std::collections::{hash_map::Entry, VecDeque};

// Several lookups per event on integer keys the target chose: a fast hash, still
// seeded per process, so that no target can pick colliding keys ahead of time.
use foldhash::HashMap;

use gleak_common::{EventKind, GoroutineEvent};
use hdrhistogram::Histogram;

use super::test_blame::{TestId, TestLedger};
use crate::process::snapshot::GRecord;

/// A creation site is the `go` statement: the return address of its call to
/// `runtime.newproc` (`g.gopc`), as a runtime address.
pub type SiteKey = u64;

/// Per-site samples kept (one a second): a little more than the trend window.
const HISTORY: usize = 40;

/// Two `gopark` hits of one goroutine closer than this are one park seen twice.
const PARK_REPEAT_NS: u64 = 100_000;

/// A goroutine believed alive.
#[derive(Clone, Copy, Debug)]
pub struct LiveGoroutine {
    pub site: SiteKey,
    pub g_addr: u64,
    /// `None` for a goroutine that existed before attach: its age is unknown.
    pub created_ns: Option<u64>,
    pub parent_goid: u64,
    pub stack_id: i64,
    /// Last `gopark` seen (reason, time), with park tracing on.
    pub parked: Option<(u8, u64)>,
    /// `g.waitsince` at the last observation, to notice that it ran in between.
    pub seen_wait_since: u64,
    /// Seen running, runnable or woken since attach.
    pub ran: bool,
    /// Found in the goroutine table, its creation event lost: `created_ns` is when
    /// it was found (its age a lower bound).
    pub recovered: bool,
    /// Since when it is known to own its `g`: its creation, or the end of the table
    /// read that found it. An exit on that `g` from before is its predecessor's.
    pub owns_g_since_ns: u64,
    /// The test it belongs to (0: none, or unknown).
    pub test: TestId,
    /// It is its test's `tRunner` goroutine: its exit ends the test.
    pub runs_test: bool,
}

/// Counts of one site at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t_ns: u64,
    pub live: u64,
    pub created: u64,
    pub exited: u64,
}

pub struct SiteStats {
    pub startpc: u64,
    pub created: u64,
    pub exited: u64,
    pub live: u64,
    /// Goroutines found already running at attach (born before it): their exits
    /// count in `exited`, their births are not in `created`.
    pub adopted: u64,
    /// Lifetimes of the site's goroutines that exited, in microseconds.
    pub lifetimes_us: Histogram<u64>,
    /// Creation stacks seen for this site and how many goroutines each created.
    pub stacks: HashMap<i64, u64>,
    /// Creation sites of the goroutines that ran this `go` statement.
    pub parents: HashMap<SiteKey, u64>,
    pub history: VecDeque<Sample>,
}

impl SiteStats {
    fn new(startpc: u64) -> Self {
        Self {
            startpc,
            created: 0,
            exited: 0,
            live: 0,
            adopted: 0,
            lifetimes_us: Histogram::new(3).expect("3 significant figures is valid"),
            stacks: HashMap::default(),
            parents: HashMap::default(),
            history: VecDeque::new(),
        }
    }

    /// The sample closest to `window_ns` ago (the oldest one if the history is shorter).
    pub fn sample_at_or_after(&self, t_ns: u64) -> Option<&Sample> {
        self.history.iter().find(|s| s.t_ns >= t_ns).or(self.history.back())
    }
}

#[derive(Default)]
pub struct Aggregator {
    pub live: HashMap<u64, LiveGoroutine>,
    pub sites: HashMap<SiteKey, SiteStats>,
    /// Goroutines found dead in memory whose exit event never arrived.
    pub reconciled_exits: u64,
    /// Goroutines found alive in the goroutine table whose creation event never arrived.
    pub reconciled_creations: u64,
    /// Set when the process reached its exit and was stopped (`gleak run`): the goid
    /// of the goroutine calling exit.
    pub exit_stop: Option<u64>,
    /// The live goroutine on each `g` (Go reuses a dead goroutine's `g` for a new one).
    by_g: HashMap<u64, u64>,
    /// Exits on a `g` with no known owner then, kept for the creation that may come
    /// late: a CPU's creation can miss the drain that delivers its exit from another
    /// CPU (written to its batch just after the batches were read). This drain's and
    /// the one before's, `g` → time of the exit.
    orphan_exits: TwoDrains<u64>,
    /// Late creations counted dead because a newer goroutine owns their `g`, whose
    /// exit may still come (the same drain or the next): `g` → (site, creation
    /// time, when the newer owner took the `g`), to give them a lifetime then.
    /// This drain's and the one before's.
    late_deaths: TwoDrains<LateDeath>,
    /// The tests of a test binary, and which goroutines outlived theirs.
    pub tests: TestLedger,
}

/// Entries by `g` kept for this drain and the one after (at most
/// [`MAX_ORPHAN_EXITS`] per drain): what a creation or exit delivered a drain
/// late pairs with.
struct TwoDrains<V> {
    /// This drain's, then the one before's.
    gens: [HashMap<u64, V>; 2],
}

impl<V> Default for TwoDrains<V> {
    fn default() -> Self {
        Self { gens: [HashMap::default(), HashMap::default()] }
    }
}

impl<V> TwoDrains<V> {
    fn is_empty(&self) -> bool {
        self.gens.iter().all(HashMap::is_empty)
    }

    /// Keeps the first value for `g_addr` in this drain (`g_addr` 0 is unknown).
    fn keep(&mut self, g_addr: u64, value: V) {
        let current = &mut self.gens[0];
        if g_addr != 0 && current.len() < MAX_ORPHAN_EXITS {
            current.entry(g_addr).or_insert(value);
        }
    }

    /// Removes the value for `g_addr` that `fits`, the earliest drain's first.
    fn take(&mut self, g_addr: u64, fits: impl Fn(&V) -> bool) -> Option<V> {
        if g_addr == 0 || self.is_empty() {
            return None;
        }
        self.gens.iter_mut().rev().find_map(|gen| match gen.entry(g_addr) {
            Entry::Occupied(e) if fits(e.get()) => Some(e.remove()),
            _ => None,
        })
    }

    /// Drops the drain before's and starts a new one.
    fn end_of_drain(&mut self) {
        if !self.is_empty() {
            self.gens.swap(0, 1);
            self.gens[0].clear();
        }
    }
}

/// A late creation counted dead, waiting for its exit's time (see `late_deaths`).
#[derive(Clone, Copy, Debug)]
struct LateDeath {
    site: SiteKey,
    created_ns: u64,
    /// It died before this: when a newer goroutine took its `g`.
    before_ns: u64,
}

/// Orphan exits kept per drain, at most: past it (a flood of exits of goroutines
/// never tracked) they are dropped, and memory finds the late ones dead instead.
const MAX_ORPHAN_EXITS: usize = 1 << 16;

impl Aggregator {
    fn insert_live(&mut self, goid: u64, g: LiveGoroutine) {
        if g.g_addr != 0 {
            self.by_g.insert(g.g_addr, goid);
        }
        self.live.insert(goid, g);
    }

    fn remove_live(&mut self, goid: u64) -> Option<LiveGoroutine> {
        let g = self.live.remove(&goid)?;
        if self.by_g.get(&g.g_addr) == Some(&goid) {
            self.by_g.remove(&g.g_addr);
        }
        Some(g)
    }

    pub fn on_event(&mut self, ev: &GoroutineEvent) {
        match EventKind::from_u32(ev.kind) {
            Some(EventKind::Create) => self.on_create(ev),
            Some(EventKind::Exit) => {
                self.on_exit_of_g(ev.g_addr, ev.ts_ns);
            }
            Some(EventKind::Park) => {
                if let Some(g) = self.live.get_mut(&ev.goid) {
                    let reason = ev.wait_reason as u8;
                    // gopark's entry fires twice when its prologue grows the stack:
                    // the same park, microseconds apart, is not a wakeup.
                    let repeat =
                        g.parked.is_some_and(|(r, ts)| r == reason && ev.ts_ns.saturating_sub(ts) < PARK_REPEAT_NS);
                    if repeat {
                        return;
                    }
                    g.ran |= g.parked.is_some(); // it woke up since its last park
                    g.parked = Some((reason, ev.ts_ns));
                }
            }
            Some(EventKind::ProcessExit) => self.exit_stop = Some(ev.goid),
            // Unpacked by the intake into `Exit`s and `Create`s.
            Some(EventKind::ExitBatch | EventKind::CreateBatch) | None => {}
        }
    }

    fn on_create(&mut self, ev: &GoroutineEvent) {
        // Known already: seen in the attach snapshot and then reported by the probe,
        // or found by reconciliation just before its event was drained (keep one);
        // or the same creation again, sent twice by a preempted probe.
        if let Some(old) = self.remove_live(ev.goid) {
            if old.created_ns == Some(ev.ts_ns) && old.g_addr == ev.g_addr {
                self.insert_live(ev.goid, old);
                return;
            }
            if let Some(site) = self.sites.get_mut(&old.site) {
                site.live -= 1;
                if old.recovered {
                    site.created -= 1;
                    self.reconciled_creations -= 1;
                } else if old.created_ns.is_none() {
                    // Adopted at attach, born after all: counted as created below.
                    site.adopted -= 1;
                }
            }
        }
        // The creator is running the `go` statement, so if tracked it is live now.
        let parent = self.live.get(&ev.parent_goid);
        let parent_site = parent.map(|p| p.site);
        let parent_test = parent.map_or(0, |p| p.test);
        let (test, runs_test) = match ev.captured {
            0 => (parent_test, false),
            t_addr => {
                let test = self.tests.start(t_addr, ev.goid, ev.ts_ns, parent_test);
                (test, test != parent_test)
            }
        };
        let exited_ns = self.take_orphan_exit(ev.g_addr, ev.ts_ns);
        // A new goroutine on the `g` of a live one: that one died first (its exit
        // not traced, or its event lost). Go reuses dead `g`s at once, so the
        // creation's time bounds the death closely. (The new owner is recorded
        // first, so that the death leaves it in place.) Unless that one was created
        // after this one: then this creation is delivered late, and it is dead.
        let mut newer_owner_since = None;
        if ev.g_addr != 0 {
            if let Some(previous) = self.by_g.insert(ev.g_addr, ev.goid) {
                if previous != ev.goid {
                    if self.owner_since_after(previous, ev.ts_ns, exited_ns.is_some()) {
                        newer_owner_since = self.live.get(&previous).map(|g| g.owns_g_since_ns);
                        self.by_g.insert(ev.g_addr, previous);
                    } else {
                        self.on_exit(previous, ev.ts_ns);
                    }
                }
            }
        }
        let g = LiveGoroutine {
            site: ev.gopc,
            g_addr: ev.g_addr,
            created_ns: Some(ev.ts_ns),
            parent_goid: ev.parent_goid,
            stack_id: ev.stack_id,
            parked: None,
            seen_wait_since: 0,
            ran: false,
            recovered: false,
            owns_g_since_ns: ev.ts_ns,
            test,
            runs_test,
        };
        self.count_creation(ev, parent_site);
        if exited_ns.is_some() || newer_owner_since.is_some() {
            // Delivered late (another CPU's batch with its exit came first): its
            // whole life is counted now.
            if newer_owner_since.is_none() && ev.g_addr != 0 {
                self.by_g.remove(&ev.g_addr);
            }
            match exited_ns {
                Some(t) => self.count_exit(&g, t),
                None => {
                    // Its `g` taken by a newer goroutine proves it dead, as memory
                    // would, not when: its exit is lost, or still to come.
                    self.count_exit(&LiveGoroutine { created_ns: None, ..g }, ev.ts_ns);
                    self.reconciled_exits += 1;
                    if let Some(before_ns) = newer_owner_since {
                        let death = LateDeath { site: ev.gopc, created_ns: ev.ts_ns, before_ns };
                        self.late_deaths.keep(ev.g_addr, death);
                    }
                }
            }
            return;
        }
        // `by_g` holds it already.
        self.live.insert(ev.goid, g);
    }

    fn count_creation(&mut self, ev: &GoroutineEvent, parent_site: Option<SiteKey>) {
        let site = self.sites.entry(ev.gopc).or_insert_with(|| SiteStats::new(ev.startpc));
        site.created += 1;
        site.live += 1;
        if ev.stack_id >= 0 {
            *site.stacks.entry(ev.stack_id).or_default() += 1;
        }
        if let Some(p) = parent_site {
            *site.parents.entry(p).or_default() += 1;
        }
    }

    /// Whether live goroutine `goid` took its `g` after `ts_ns`: by its creation
    /// event; or, when the goroutine created at `ts_ns` is known to have died
    /// (`died`), also when memory found it there later. (Without that death the
    /// table read that found it may have read its `g` before the owner changed.)
    fn owner_since_after(&self, goid: u64, ts_ns: u64, died: bool) -> bool {
        self.live.get(&goid).is_some_and(|g| {
            let from_memory = g.recovered || g.created_ns.is_none();
            g.owns_g_since_ns > ts_ns && (died || !from_memory)
        })
    }

    /// The time of an orphan exit on `g_addr` after `created_ns`: the death of the
    /// goroutine created then, whose creation is delivered after its exit.
    fn take_orphan_exit(&mut self, g_addr: u64, created_ns: u64) -> Option<u64> {
        self.orphan_exits.take(g_addr, |&exited_ns| exited_ns >= created_ns)
    }

    /// Call after each drain: orphan exits older than the drain before are dropped
    /// (a creation is at most one drain late).
    pub fn end_of_drain(&mut self) {
        self.orphan_exits.end_of_drain();
        self.late_deaths.end_of_drain();
    }

    /// Reconciles with the goroutine table read from memory (drain the ring buffer
    /// first): a live goroutine gleak does not know was born while tracing and its
    /// creation event was lost. It is counted as created at its `go` statement
    /// (`gopc`), marked as recovered; its creation stack is unknown. `read_ns`: when
    /// the table read ended.
    pub fn reconcile_creations(&mut self, table: &[(u64, GRecord)], read_ns: u64) {
        for (g_addr, rec) in table {
            // Known; or the goroutine calling exit, which `gleak run` counts as gone.
            if self.live.contains_key(&rec.goid) || self.exit_stop == Some(rec.goid) {
                continue;
            }
            let site = self.sites.entry(rec.gopc).or_insert_with(|| SiteStats::new(rec.startpc));
            site.created += 1;
            site.live += 1;
            self.reconciled_creations += 1;
            let test = self.test_of(rec.parent_goid);
            self.insert_live(
                rec.goid,
                LiveGoroutine {
                    site: rec.gopc,
                    g_addr: *g_addr,
                    created_ns: Some(read_ns),
                    parent_goid: rec.parent_goid,
                    stack_id: -1,
                    parked: None,
                    seen_wait_since: rec.wait_since_ns,
                    ran: false,
                    recovered: true,
                    owns_g_since_ns: read_ns,
                    test,
                    runs_test: false,
                },
            );
        }
    }

    /// Adopts a goroutine found in the target's goroutine table at attach, a read
    /// that ended at `read_ns`.
    pub fn adopt(&mut self, g_addr: u64, rec: &GRecord, read_ns: u64) {
        if self.live.contains_key(&rec.goid) {
            return;
        }
        let site = self.sites.entry(rec.gopc).or_insert_with(|| SiteStats::new(rec.startpc));
        site.live += 1;
        site.adopted += 1;
        let test = self.test_of(rec.parent_goid);
        self.insert_live(
            rec.goid,
            LiveGoroutine {
                site: rec.gopc,
                g_addr,
                created_ns: None,
                parent_goid: rec.parent_goid,
                stack_id: -1,
                parked: None,
                seen_wait_since: rec.wait_since_ns,
                ran: false,
                recovered: false,
                owns_g_since_ns: read_ns,
                test,
                runs_test: false,
            },
        );
    }

    /// Links adopted goroutines to their creators' sites (Go ≥ 1.21 records `parentGoid`).
    pub fn link_adopted_parents(&mut self) {
        let links: Vec<(SiteKey, SiteKey)> = self
            .live
            .values()
            .filter(|g| g.created_ns.is_none() && g.parent_goid != 0)
            .filter_map(|g| self.live.get(&g.parent_goid).map(|p| (g.site, p.site)))
            .collect();
        for (site, parent) in links {
            if let Some(s) = self.sites.get_mut(&site) {
                *s.parents.entry(parent).or_default() += 1;
            }
        }
    }

    /// Records the death of the goroutine on `g_addr` (the exit probe sends the
    /// dying `g`, not its goid: one read less per goroutine); `false` if none is
    /// tracked there. The probes are attached before the goroutine table is read,
    /// so an exit still in the ring may be of the `g`'s previous owner: one found
    /// in memory after that exit happened is not the one that died.
    pub fn on_exit_of_g(&mut self, g_addr: u64, ts_ns: u64) -> bool {
        // One lookup per map on this path, which runs for every death.
        let owner = match self.by_g.entry(g_addr) {
            Entry::Occupied(by_g) => match self.live.entry(*by_g.get()) {
                Entry::Occupied(owner) if ts_ns >= owner.get().owns_g_since_ns => Some((by_g, owner)),
                _ => None,
            },
            Entry::Vacant(_) => None,
        };
        let Some((by_g, owner)) = owner else {
            if !self.time_late_death(g_addr, ts_ns) {
                self.keep_orphan_exit(g_addr, ts_ns);
            }
            return false;
        };
        let g = owner.remove();
        by_g.remove();
        self.count_exit(&g, ts_ns);
        true
    }

    /// The exit of a late creation already counted dead (see `late_deaths`): its
    /// death is no longer a reconciled one, and its lifetime is known.
    fn time_late_death(&mut self, g_addr: u64, ts_ns: u64) -> bool {
        let Some(death) = self.late_deaths.take(g_addr, |d| (d.created_ns..d.before_ns).contains(&ts_ns)) else {
            return false;
        };
        self.reconciled_exits -= 1;
        if let Some(site) = self.sites.get_mut(&death.site) {
            site.lifetimes_us.record((ts_ns.saturating_sub(death.created_ns) / 1000).max(1)).ok();
        }
        true
    }

    fn keep_orphan_exit(&mut self, g_addr: u64, ts_ns: u64) {
        // Applied in time order: the first is the earliest, the one a late
        // creation before it pairs with.
        self.orphan_exits.keep(g_addr, ts_ns);
    }

    /// Records an exit; `false` if the goroutine was not being tracked.
    pub fn on_exit(&mut self, goid: u64, ts_ns: u64) -> bool {
        let Some(g) = self.remove_live(goid) else {
            return false; // born before attach and never adopted
        };
        self.count_exit(&g, ts_ns);
        true
    }

    /// The test of live goroutine `goid` (0 if none, or not tracked).
    fn test_of(&self, goid: u64) -> TestId {
        self.live.get(&goid).map_or(0, |g| g.test)
    }

    fn count_exit(&mut self, g: &LiveGoroutine, ts_ns: u64) {
        if g.runs_test {
            self.tests.end(g.test, ts_ns);
        } else if g.test != 0 {
            self.tests.goroutine_exited(g.test, g.site, ts_ns);
        }
        if let Some(site) = self.sites.get_mut(&g.site) {
            site.exited += 1;
            site.live -= 1;
            if let Some(created) = g.created_ns {
                let us = ts_ns.saturating_sub(created) / 1000;
                site.lifetimes_us.record(us.max(1)).ok();
            }
        }
    }

    /// Applies what memory says about a live goroutine: it died unseen (lost exit
    /// event, or its `g` was reused), or whether it ran since the last look.
    /// Returns `false` if it is gone.
    pub fn observe(&mut self, goid: u64, rec: Option<&GRecord>, now_ns: u64) -> bool {
        let Some(rec) = rec else { return true };
        if rec.goid != goid || rec.is_dead() {
            if self.on_exit(goid, now_ns) {
                self.reconciled_exits += 1;
            }
            return false;
        }
        if let Some(g) = self.live.get_mut(&goid) {
            let woke = !rec.is_blocked() || (g.seen_wait_since != 0 && rec.wait_since_ns != g.seen_wait_since);
            g.ran |= woke;
            g.seen_wait_since = rec.wait_since_ns;
        }
        true
    }

    /// Appends one sample per site (call about once a second).
    pub fn sample(&mut self, now_ns: u64) {
        for site in self.sites.values_mut() {
            if site.history.len() == HISTORY {
                site.history.pop_front();
            }
            site.history.push_back(Sample {
                t_ns: now_ns,
                live: site.live,
                created: site.created,
                exited: site.exited,
            });
        }
    }

    /// Goroutines (created, exited) while tracing, over all sites.
    pub fn totals(&self) -> (u64, u64) {
        self.sites.values().fold((0, 0), |(c, e), s| (c + s.created, e + s.exited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::layout::gstatus;

    fn create(goid: u64, gopc: u64, ts: u64) -> GoroutineEvent {
        GoroutineEvent {
            kind: EventKind::Create as u32,
            goid,
            gopc,
            startpc: 0x1000,
            ts_ns: ts,
            stack_id: 7,
            parent_goid: 1,
            g_addr: 0xc000_0000 + goid * 0x1c0,
            ..Default::default()
        }
    }

    /// The exit probe's event: the dying `g`, no goid.
    fn exit(goid: u64, ts: u64) -> GoroutineEvent {
        GoroutineEvent {
            kind: EventKind::Exit as u32,
            g_addr: create(goid, 0, 0).g_addr,
            ts_ns: ts,
            ..Default::default()
        }
    }

    fn record(goid: u64, gopc: u64, status: u32) -> GRecord {
        GRecord {
            goid,
            status,
            wait_reason: 0,
            wait_since_ns: 0,
            gopc,
            startpc: 0x2000,
            parent_goid: 0,
            stack_bytes: 8192,
            ..GRecord::default()
        }
    }

    #[test]
    fn reconciliation_recovers_lost_creations_once() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 1_000));
        // 11 and 12 were created while traced, their events lost; 10 is known.
        let table = [(0x100, record(10, 0xa, 4)), (0x200, record(11, 0xa, 4)), (0x300, record(12, 0xb, 4))];
        agg.reconcile_creations(&table, 5_000);
        agg.reconcile_creations(&table, 6_000); // seen again: not counted twice
        assert_eq!(agg.reconciled_creations, 2);
        assert_eq!((agg.sites[&0xa].created, agg.sites[&0xa].live), (2, 2));
        assert!(agg.live[&11].recovered && !agg.live[&10].recovered);
        // 12's creation event was only late: it replaces the recovered entry.
        agg.on_event(&create(12, 0xb, 4_000));
        assert_eq!(agg.reconciled_creations, 1);
        assert_eq!((agg.sites[&0xb].created, agg.sites[&0xb].live), (1, 1));
        assert!(!agg.live[&12].recovered);
    }

    #[test]
    fn counts_live_and_exited_per_site() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 1_000));
        agg.on_event(&create(11, 0xa, 2_000));
        agg.on_event(&create(12, 0xb, 3_000));
        agg.on_event(&exit(11, 5_000_000));
        agg.on_event(&exit(99, 6_000)); // existed before tracing
        let a = &agg.sites[&0xa];
        assert_eq!((a.created, a.exited, a.live), (2, 1, 1));
        assert_eq!(a.lifetimes_us.len(), 1);
        assert_eq!(a.stacks[&7], 2);
        assert_eq!(agg.live.len(), 2);
        assert_eq!(agg.totals(), (3, 1));
    }

    #[test]
    fn an_exit_applies_to_the_goroutine_that_owned_its_g_then() {
        let mut agg = Aggregator::default();
        // g 0x100's owner died at 900 (its exit still in the ring) and a new one
        // took the g before the table read that ended at 1_000 found it.
        agg.adopt(0x100, &record(7, 0xa, gstatus::WAITING), 1_000);
        assert!(!agg.on_exit_of_g(0x100, 900), "the predecessor's exit");
        assert!(agg.live.contains_key(&7));
        assert!(agg.on_exit_of_g(0x100, 1_100), "its own exit");
        assert!(!agg.live.contains_key(&7));
        // The same for goroutines recovered by reconciliation.
        agg.reconcile_creations(&[(0x200, record(8, 0xa, gstatus::WAITING))], 2_000);
        assert!(!agg.on_exit_of_g(0x200, 1_500));
        assert!(agg.on_exit_of_g(0x200, 2_500));
        // Created and exited on the same g, in turn: each exit is its owner's.
        let mut a = create(30, 0xb, 3_000);
        a.g_addr = 0x300;
        agg.on_event(&a);
        let mut died = exit(0, 3_500);
        died.g_addr = 0x300;
        agg.on_event(&died);
        let mut b = create(31, 0xb, 4_000);
        b.g_addr = 0x300;
        agg.on_event(&b);
        assert_eq!((agg.sites[&0xb].created, agg.sites[&0xb].exited, agg.sites[&0xb].live), (2, 1, 1));
        assert!(agg.live.contains_key(&31));
        // An exit on a g nobody tracked (born before attach, never adopted).
        assert!(!agg.on_exit_of_g(0x999, 5_000));
        assert_eq!(agg.sites[&0xa].exited, 2);
    }

    /// `create` and `exit` on a given `g`.
    fn on_g(mut ev: GoroutineEvent, g_addr: u64) -> GoroutineEvent {
        ev.g_addr = g_addr;
        ev
    }

    #[test]
    fn a_creation_delivered_after_its_exit_counts_its_life() {
        let mut agg = Aggregator::default();
        // Drain 1 brings 10's exit; its creation was still in its CPU's batch.
        agg.on_event(&exit(10, 5_000_000));
        agg.end_of_drain();
        agg.on_event(&create(10, 0xa, 1_000_000));
        agg.end_of_drain();
        let a = &agg.sites[&0xa];
        assert_eq!((a.created, a.exited, a.live), (1, 1, 0));
        assert!((3_990..=4_010).contains(&a.lifetimes_us.max()), "lived 4 ms: {}", a.lifetimes_us.max());
        assert!(agg.live.is_empty() && agg.by_g.is_empty());
        assert_eq!(agg.reconciled_exits, 0);
        assert_balanced(&agg);
    }

    #[test]
    fn a_late_creation_leaves_its_gs_newer_owner_alone() {
        const G: u64 = 0x500;
        let mut agg = Aggregator::default();
        // 10 exits and 11 takes its g; 10's creation comes a drain late.
        agg.on_event(&on_g(exit(0, 2_000), G));
        agg.on_event(&on_g(create(11, 0xa, 3_000), G));
        agg.end_of_drain();
        agg.on_event(&on_g(create(10, 0xa, 1_000), G));
        let a = &agg.sites[&0xa];
        assert_eq!((a.created, a.exited, a.live), (2, 1, 1));
        assert!(agg.live.contains_key(&11) && !agg.live.contains_key(&10));
        assert!(agg.on_exit_of_g(G, 4_000), "11's own exit");
        // The same with 12's exit lost: 13 owning the g since bounds 12's life.
        agg.on_event(&on_g(create(13, 0xb, 6_000), G));
        agg.end_of_drain();
        agg.on_event(&on_g(create(12, 0xb, 5_000), G));
        let b = &agg.sites[&0xb];
        assert_eq!((b.created, b.exited, b.live), (2, 1, 1));
        assert!(agg.live.contains_key(&13));
        assert_eq!(agg.reconciled_exits, 1);
        assert_balanced(&agg);
    }

    #[test]
    fn a_late_creation_whose_exit_comes_after_it_gets_its_lifetime() {
        const G: u64 = 0x900;
        let mut agg = Aggregator::default();
        // 11 takes the g at 3 ms; 10's creation (1 ms) and exit (2 ms) come a
        // drain late, in time order: creation first.
        agg.on_event(&on_g(create(11, 0xa, 3_000_000), G));
        agg.end_of_drain();
        agg.on_event(&on_g(create(10, 0xa, 1_000_000), G));
        assert_eq!(agg.reconciled_exits, 1, "dead, its time unknown yet");
        // An exit after 11 took the g is not 10's.
        assert!(agg.on_exit_of_g(G, 4_000_000), "11's own exit");
        assert_eq!(agg.reconciled_exits, 1);
        agg.on_event(&on_g(exit(0, 2_000_000), G));
        let a = &agg.sites[&0xa];
        assert_eq!((a.created, a.exited, a.live, agg.reconciled_exits), (2, 2, 0, 0));
        assert_eq!(a.lifetimes_us.len(), 2);
        assert!((990..=1_010).contains(&a.lifetimes_us.min()), "10 lived 1 ms: {}", a.lifetimes_us.min());
        assert!(agg.orphan_exits.is_empty(), "its exit is not left for another creation");
        // Not past the drain after: by then memory has counted it.
        agg.on_event(&on_g(create(13, 0xb, 7_000_000), G));
        agg.end_of_drain();
        agg.on_event(&on_g(create(12, 0xb, 5_000_000), G));
        agg.end_of_drain();
        agg.end_of_drain();
        agg.on_event(&on_g(exit(0, 6_000_000), G));
        assert_eq!(agg.reconciled_exits, 1);
        assert_eq!(agg.sites[&0xb].lifetimes_us.len(), 0);
        assert_balanced(&agg);
    }

    /// Every site: created + adopted = exited + live.
    fn assert_balanced(agg: &Aggregator) {
        for (key, s) in &agg.sites {
            assert_eq!(s.created + s.adopted, s.exited + s.live, "site {key:#x}");
        }
        assert_eq!(agg.sites.values().map(|s| s.live).sum::<u64>(), agg.live.len() as u64);
    }

    #[test]
    fn a_late_creation_that_died_leaves_a_goroutine_memory_found_on_its_g_alone() {
        const G: u64 = 0x600;
        let mut agg = Aggregator::default();
        // 10 was created (late) and died; 11 took its g and was found by the
        // goroutine table read (ending at 3_000) before its creation arrived.
        agg.on_event(&on_g(exit(0, 2_000), G));
        agg.reconcile_creations(&[(G, record(11, 0xa, gstatus::WAITING))], 3_000);
        agg.end_of_drain();
        agg.on_event(&on_g(create(10, 0xa, 1_000), G));
        assert!(agg.live.contains_key(&11) && !agg.live.contains_key(&10));
        agg.on_event(&on_g(create(11, 0xa, 2_500), G));
        let a = &agg.sites[&0xa];
        assert_eq!((a.created, a.exited, a.live, agg.reconciled_creations), (2, 1, 1, 0));
        assert!(!agg.live[&11].recovered, "its creation event replaced the recovered entry");
        assert_balanced(&agg);
    }

    #[test]
    fn two_late_creations_on_one_g_pair_with_their_own_exits() {
        const G: u64 = 0x800;
        let mut agg = Aggregator::default();
        agg.on_event(&on_g(exit(0, 2_000_000), G));
        agg.on_event(&on_g(exit(0, 9_000_000), G));
        agg.end_of_drain();
        agg.on_event(&on_g(create(10, 0xa, 1_000_000), G));
        let a = &agg.sites[&0xa];
        assert_eq!((a.created, a.exited), (1, 1));
        assert!((990..=1_010).contains(&a.lifetimes_us.max()), "lived 1 ms: {}", a.lifetimes_us.max());
        assert_balanced(&agg);
    }

    #[test]
    fn orphan_exits_are_kept_one_drain_only() {
        let mut agg = Aggregator::default();
        agg.on_event(&exit(10, 5_000));
        agg.end_of_drain();
        agg.end_of_drain();
        agg.on_event(&create(10, 0xa, 1_000));
        // Too late to pair: live until memory finds it dead.
        assert!(agg.live.contains_key(&10));
        assert_eq!(agg.sites[&0xa].exited, 0);
        // An exit from before a creation on its g is not that goroutine's.
        agg.on_event(&on_g(exit(0, 500), 0x700));
        agg.on_event(&on_g(create(20, 0xa, 1_000), 0x700));
        assert!(agg.live.contains_key(&20));
    }

    #[test]
    fn adopted_goroutines_count_as_preexisting_and_link_parents() {
        let mut agg = Aggregator::default();
        agg.adopt(0x100, &record(1, 0x1, gstatus::WAITING), 1);
        let mut child = record(5, 0xc, gstatus::WAITING);
        child.parent_goid = 1;
        agg.adopt(0x200, &child, 1);
        agg.link_adopted_parents();
        assert_eq!(agg.sites[&0xc].parents[&0x1], 1);
        // A creation under goid 1 records goid 1's site as the parent site.
        agg.on_event(&create(20, 0xd, 5));
        assert_eq!(agg.sites[&0xd].parents[&0x1], 1);
        // The probe reporting an adopted goroutine again does not double count.
        agg.on_event(&create(5, 0xc, 6));
        assert_eq!(agg.sites[&0xc].live, 1);
        assert_eq!(agg.totals(), (2, 0));
        // Every site: created + adopted = exited + live, also once adopted ones exit.
        assert!(agg.on_exit(1, 30));
        for (key, s) in &agg.sites {
            assert_eq!(s.created + s.adopted, s.exited + s.live, "site {key:#x}");
        }
        assert_eq!((agg.sites[&0x1].adopted, agg.sites[&0x1].exited), (1, 1));
        assert_eq!(agg.sites[&0xc].adopted, 0, "born after attach after all");
    }

    #[test]
    fn observing_retires_dead_and_notices_running() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 1_000));
        agg.on_event(&create(11, 0xa, 1_000));
        let mut rec = record(10, 0xa, gstatus::WAITING);
        rec.wait_since_ns = 50;
        assert!(agg.observe(10, Some(&rec), 100));
        assert!(!agg.live[&10].ran);
        rec.wait_since_ns = 70; // woke and blocked again
        agg.observe(10, Some(&rec), 200);
        assert!(agg.live[&10].ran);
        // g reused by another goroutine: the exit was lost.
        assert!(!agg.observe(11, Some(&record(42, 0xa, gstatus::WAITING)), 300));
        assert_eq!(agg.reconciled_exits, 1);
        assert_eq!(agg.sites[&0xa].live, 1);
    }

    #[test]
    fn a_creation_on_a_live_goroutines_g_retires_it() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 1_000));
        let mut reused = create(11, 0xb, 9_000);
        reused.g_addr = create(10, 0xa, 0).g_addr;
        agg.on_event(&reused);
        assert!(!agg.live.contains_key(&10), "goroutine 10 died before its g was reused");
        assert_eq!(agg.sites[&0xa].live, 0);
        assert_eq!(agg.sites[&0xa].exited, 1);
        assert_eq!(agg.sites[&0xb].live, 1);
        // Its exit event arriving late changes nothing.
        assert!(!agg.on_exit(10, 9_500));
        // Unknown g addresses (0) never retire anything.
        let mut a = create(20, 0xc, 10_000);
        a.g_addr = 0;
        let mut b = create(21, 0xc, 11_000);
        b.g_addr = 0;
        agg.on_event(&a);
        agg.on_event(&b);
        assert_eq!(agg.sites[&0xc].live, 2);
    }

    #[test]
    fn a_creation_sent_twice_counts_once() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 1_000));
        agg.on_event(&create(10, 0xa, 1_000));
        assert_eq!((agg.sites[&0xa].created, agg.sites[&0xa].live), (1, 1));
        assert_eq!(agg.sites[&0xa].stacks[&7], 1);
        // Its `g` still names it: the death is applied.
        agg.on_event(&exit(10, 5_000));
        assert_eq!((agg.sites[&0xa].exited, agg.sites[&0xa].live), (1, 0));
        assert!(agg.live.is_empty());
    }

    #[test]
    fn a_park_seen_twice_is_not_a_wakeup() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 0));
        let park = |ts| GoroutineEvent {
            kind: EventKind::Park as u32,
            goid: 10,
            wait_reason: 14,
            ts_ns: ts,
            ..Default::default()
        };
        agg.on_event(&park(1_000));
        agg.on_event(&park(3_000)); // prologue re-run
        assert!(!agg.live[&10].ran);
        agg.on_event(&park(5_000_000));
        assert!(agg.live[&10].ran);
    }

    #[test]
    fn history_windows() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 0));
        agg.sample(1_000_000_000);
        agg.on_event(&create(11, 0xa, 0));
        agg.sample(2_000_000_000);
        let s = &agg.sites[&0xa];
        assert_eq!(s.sample_at_or_after(1_500_000_000).unwrap().live, 2);
        assert_eq!(s.sample_at_or_after(0).unwrap().live, 1);
    }
}
