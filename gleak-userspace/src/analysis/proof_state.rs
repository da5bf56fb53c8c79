//! What the proof has settled about one target, kept between reports: which
//! blocked goroutines are proven unable to run again (as long as they stay where
//! and on what they were), which the last proof could not settle, and which a
//! goroutine serving the network held. Refreshed from each look at the target;
//! reports only read it, so verdicts do not depend on how often reports are made.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::{
    analysis::{
        proof::ProofOutcome,
        reach::{Chain, Retained},
    },
    process::snapshot::GRecord,
    process::unwind::Sched,
    process::waits::{WaitPlace, Waits},
};

/// How long a goroutine a proof could not settle waits before the proof runs
/// again for it alone (blocked goroutines that move, or new ones, run it at once).
pub const PROOF_RETRY: Duration = Duration::from_secs(30);

/// Per live goroutine (by goid): its `g` as read from memory, `None` if unreadable.
pub type Records = HashMap<u64, Option<GRecord>>;

/// The last proof run, in numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProofRun {
    /// Blocked goroutines whose wait objects were known: what it judged.
    pub candidates: u64,
    /// Goroutines proven so far (this run's and earlier ones' still holding).
    pub proven: u64,
    /// Why no proof could be made, if none could.
    pub inconclusive: Option<String>,
    pub heap_bytes: u64,
    pub bytes_read: u64,
    pub elapsed: Duration,
}

/// The proof's state for one target.
#[derive(Default)]
pub struct ProofState {
    /// Run the proof at all (`--no-prove` turns it off).
    pub enabled: bool,
    /// Goroutines proven unable to run again, with where they were blocked and on
    /// what: the proof holds as long as both stay the same.
    proven: HashMap<u64, WaitPlace>,
    /// Blocked goroutines the last proof looked at and could not prove, where
    /// they were then: not a reason to run it again until they move or
    /// [`PROOF_RETRY`] passes (what holds their objects may let go).
    unproven: HashMap<u64, Sched>,
    last_run_at: Option<Instant>,
    /// Goroutines whose wait objects a goroutine waiting on the network held at a
    /// proof, with those objects: a live connection's other goroutines whenever
    /// they wait on one of them again. (A proof sees each reader at one instant,
    /// and a busy reader is often off the network; its writer runs after each
    /// request.)
    network_held: HashMap<u64, Vec<u64>>,
    last_run: Option<ProofRun>,
    /// What each group (leak site) retained at each conclusive run, oldest first,
    /// with when (CLOCK_MONOTONIC ns): the last one is reported, the others give
    /// its growth.
    retained: VecDeque<(u64, HashMap<u64, Retained>)>,
    /// By wait object: what held it at the last conclusive run.
    held: HashMap<u64, Chain>,
}

/// Measurements of retained memory kept (a proof runs at most once per report).
const RETAINED_HISTORY: usize = 64;

impl ProofState {
    pub fn new(enabled: bool) -> Self {
        Self { enabled, ..Self::default() }
    }

    /// Keeps the proofs that still hold (same goroutine, blocked at the same place
    /// on the same objects) and what the network held of goroutines still alive
    /// and, if some blocked goroutine `worth_proving` is not proven yet, runs the
    /// proof again (`prove`: [`proof::prove`] on the target).
    pub fn refresh(
        &mut self,
        records: &Records,
        waits: &Waits,
        mut worth_proving: impl FnMut(u64) -> bool,
        prove: impl FnOnce() -> ProofOutcome,
        now_ns: u64,
    ) {
        self.proven
            .retain(|goid, at| records.get(goid).copied().flatten().is_some_and(|r| waits.blocked_at(*goid, &r, at)));
        // Kept while it runs too: a connection's writer runs after each request
        // and blocks again on the same channels (counted only then).
        self.network_held.retain(|goid, _| records.contains_key(goid));
        if !self.enabled {
            return;
        }
        let retry = self.last_run_at.is_none_or(|at| at.elapsed() >= PROOF_RETRY);
        let seen_unproven = |goid: &u64| {
            let now = records.get(goid).copied().flatten().map(|r| r.sched());
            !retry && now.is_some() && self.unproven.get(goid) == now.as_ref()
        };
        let open = waits
            .by_goid
            .keys()
            .filter(|goid| !self.proven.contains_key(goid) && !seen_unproven(goid))
            .any(|&goid| worth_proving(goid));
        if !open {
            return;
        }
        self.last_run_at = Some(Instant::now());
        let outcome = prove();
        self.settle(&outcome, records, waits);
        if outcome.inconclusive.is_none() {
            if self.retained.len() == RETAINED_HISTORY {
                self.retained.pop_front();
            }
            self.retained.push_back((now_ns, outcome.retained));
            self.held = outcome.held;
        }
    }

    /// What held the wait object at `addr` at the last conclusive proof.
    pub fn held(&self, addr: u64) -> Option<&Chain> {
        self.held.get(&addr)
    }

    /// What `group` retained at each conclusive proof of the last `window_ns`
    /// (bytes, oldest first), for a chart.
    pub fn retained_series(&self, group: u64, window_ns: u64) -> Vec<u64> {
        let Some((last_ns, _)) = self.retained.back() else { return Vec::new() };
        let since = last_ns.saturating_sub(window_ns);
        self.retained
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, by_group)| by_group.get(&group).map_or(0, |r| r.bytes))
            .collect()
    }

    /// What `group`'s proven goroutines retained at the last conclusive proof,
    /// when, and its growth in bytes per second since the oldest measurement at
    /// least `window_ns` old (or the oldest there is), if two measurements apart
    /// in time have it.
    pub fn retained(&self, group: u64, window_ns: u64) -> Option<(Retained, u64, Option<f64>)> {
        let (last_ns, last) = self.retained.back()?;
        let now = *last.get(&group)?;
        let since = last_ns.saturating_sub(window_ns);
        // The earliest in the window, else the latest before it.
        let earlier = self
            .retained
            .iter()
            .take(self.retained.len() - 1)
            .find(|(t, _)| *t >= since)
            .or_else(|| self.retained.iter().rev().nth(1));
        let growth = earlier.and_then(|(t, by_group)| {
            let dt = last_ns.saturating_sub(*t) as f64 / 1e9;
            let before = by_group.get(&group).map_or(0, |r| r.bytes);
            (dt > 0.0).then(|| (now.bytes as f64 - before as f64) / dt)
        });
        Some((now, *last_ns, growth))
    }

    /// Takes in what a proof found.
    fn settle(&mut self, outcome: &ProofOutcome, records: &Records, waits: &Waits) {
        for goid in &outcome.network_held {
            if let Some(objects) = waits.by_goid.get(goid) {
                self.network_held.insert(*goid, objects.iter().map(|w| w.addr).collect());
            }
        }
        for (goid, objects) in &outcome.proven {
            if let Some(Some(rec)) = records.get(goid) {
                self.proven.insert(*goid, (rec.sched(), objects.clone()));
            }
        }
        self.unproven = if outcome.inconclusive.is_none() {
            waits
                .by_goid
                .keys()
                .filter(|goid| !self.proven.contains_key(goid))
                .filter_map(|goid| Some((*goid, records.get(goid).copied().flatten()?.sched())))
                .collect()
        } else {
            HashMap::new()
        };
        self.last_run = Some(ProofRun {
            candidates: outcome.candidates as u64,
            proven: self.proven.len() as u64,
            inconclusive: outcome.inconclusive.clone(),
            heap_bytes: outcome.heap_bytes,
            bytes_read: outcome.bytes_read,
            elapsed: outcome.elapsed,
        });
    }

    /// Whether `goid` is proven unable to run again.
    pub fn is_proven(&self, goid: u64) -> bool {
        self.proven.contains_key(&goid)
    }

    /// Whether a goroutine serving the network held what `goid` waits on now.
    pub fn network_held(&self, goid: u64, waits: &Waits) -> bool {
        self.network_held.get(&goid).is_some_and(|held| waits.on_any_of(goid, held))
    }

    /// Whether a proof ran and came to a conclusion.
    pub fn concluded(&self) -> bool {
        self.enabled && self.last_run.as_ref().is_some_and(|p| p.inconclusive.is_none())
    }

    pub fn last_run(&self) -> Option<&ProofRun> {
        self.last_run.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::waits::{WaitKind, WaitObject};

    fn blocked(goid: u64, sp: u64) -> GRecord {
        GRecord {
            goid,
            status: crate::runtime::layout::gstatus::WAITING,
            sched_sp: sp,
            sched_pc: 0x40_1000,
            stack_hi: 0xc000_8000,
            ..GRecord::default()
        }
    }

    fn chan(addr: u64) -> WaitObject {
        WaitObject { kind: WaitKind::Channel, addr }
    }

    /// A proof holds while its goroutine stays blocked at the same place on the
    /// same objects; one that moved, woke or died is no longer proven.
    #[test]
    fn a_proof_holds_only_while_its_goroutine_stays_put() {
        let mut state = ProofState::new(true);
        let records: Records = [(1, Some(blocked(1, 0xc000_7000))), (2, Some(blocked(2, 0xc000_6000)))].into();
        let waits = Waits { by_goid: [(1, vec![chan(0x10)]), (2, vec![chan(0x20)])].into(), ..Waits::default() };
        let outcome = ProofOutcome {
            proven: [(1, vec![0x10]), (2, vec![0x20])].into(),
            candidates: 2,
            network_held: [2].into(),
            ..ProofOutcome::default()
        };
        state.settle(&outcome, &records, &waits);
        assert!(state.is_proven(1) && state.is_proven(2) && state.concluded());
        assert!(state.network_held(2, &waits) && !state.network_held(1, &waits));
        assert_eq!(state.last_run().map(|r| (r.candidates, r.proven)), Some((2, 2)));

        // Goroutine 1 moved (another sp), 2 waits on another channel: neither is
        // proven any more, and the proof is off so nothing runs again.
        state.enabled = false;
        let moved: Records = [(1, Some(blocked(1, 0xc000_7100))), (2, Some(blocked(2, 0xc000_6000)))].into();
        let rewaits = Waits { by_goid: [(1, vec![chan(0x10)]), (2, vec![chan(0x30)])].into(), ..Waits::default() };
        state.refresh(&moved, &rewaits, |_| true, || panic!("the proof is off"), 0);
        assert!(!state.is_proven(1) && !state.is_proven(2));
        // A goroutine gone from the records loses what the network held of it.
        state.refresh(&Records::new(), &rewaits, |_| true, || panic!("the proof is off"), 0);
        assert!(!state.network_held(2, &waits));
    }

    /// Retained memory is the last conclusive proof's, and grows at the rate
    /// between it and the earliest measurement in the window.
    #[test]
    fn retained_memory_and_its_growth() {
        let mut state = ProofState::new(true);
        let waits = Waits { by_goid: [(1, vec![chan(0x10)])].into(), ..Waits::default() };
        let site = 0x40_2000;
        let measured = |bytes: u64| ProofOutcome {
            retained: [(site, Retained { goroutines: 1, bytes, objects: 1, ..Retained::default() })].into(),
            ..ProofOutcome::default()
        };
        // Each run sees goroutine 1 at a new place, so the proof runs every time.
        for (i, (t_s, bytes)) in [(0u64, 1_000_000u64), (10, 3_000_000), (20, 5_000_000)].into_iter().enumerate() {
            let records: Records = [(1, Some(blocked(1, 0xc000_7000 - 0x100 * i as u64)))].into();
            state.refresh(&records, &waits, |_| true, || measured(bytes), t_s * 1_000_000_000);
        }
        let (now, at, growth) = state.retained(site, 30_000_000_000).expect("measured");
        assert_eq!((now.bytes, at), (5_000_000, 20_000_000_000));
        assert_eq!(growth, Some(200_000.0), "4 MB over 20 s");
        // A window of 10 s: from the measurement at 10 s.
        assert_eq!(state.retained(site, 10_000_000_000).unwrap().2, Some(200_000.0));
        assert_eq!(state.retained(0x99, 10_000_000_000), None, "a site never measured");
        // An inconclusive run keeps the last measurement.
        let records: Records = [(1, Some(blocked(1, 0xc000_6000)))].into();
        let inconclusive = || ProofOutcome { inconclusive: Some("budget".into()), ..ProofOutcome::default() };
        state.refresh(&records, &waits, |_| true, inconclusive, 30_000_000_000);
        assert_eq!(state.retained(site, 10_000_000_000).unwrap().0.bytes, 5_000_000);
    }

    /// The proof runs again only for a blocked goroutine worth proving that is
    /// neither proven nor, unmoved, left unsettled by the last run.
    #[test]
    fn the_proof_runs_again_only_for_something_new() {
        let mut state = ProofState::new(true);
        let records: Records = [(1, Some(blocked(1, 0xc000_7000))), (3, Some(blocked(3, 0xc000_5000)))].into();
        let waits = Waits { by_goid: [(1, vec![chan(0x10)]), (3, vec![chan(0x30)])].into(), ..Waits::default() };
        let mut runs = 0;
        let outcome = ProofOutcome { proven: [(1, vec![0x10])].into(), candidates: 2, ..ProofOutcome::default() };
        state.refresh(
            &records,
            &waits,
            |_| true,
            || {
                runs += 1;
                outcome.clone()
            },
            0,
        );
        assert_eq!(runs, 1);
        assert!(state.is_proven(1) && !state.is_proven(3));
        // Nothing moved: 1 is proven, 3 unsettled and unmoved (retry not due).
        state.refresh(&records, &waits, |_| true, || panic!("nothing new to prove"), 0);
        // Goroutine 3 moved: the proof runs again, unless it is not worth proving.
        let moved: Records = [(1, Some(blocked(1, 0xc000_7000))), (3, Some(blocked(3, 0xc000_5100)))].into();
        state.refresh(&moved, &waits, |goid| goid != 3, || panic!("3 is not worth proving"), 0);
        let mut reran = false;
        state.refresh(
            &moved,
            &waits,
            |_| true,
            || {
                reran = true;
                ProofOutcome { inconclusive: Some("budget".into()), ..ProofOutcome::default() }
            },
            0,
        );
        assert!(reran);
        assert!(!state.concluded(), "the last run was inconclusive");
    }
}
