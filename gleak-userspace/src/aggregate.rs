//! Per-target bookkeeping of goroutine lifecycles, grouped by creation site.
//!
//! Fed one event at a time from the ring buffer; no allocation per event beyond
//! amortised hash-map growth.

use std::collections::HashMap;

use gleak_common::{EventKind, GoroutineEvent};
use hdrhistogram::Histogram;

/// A creation site is the `go` statement: the return address of its call to
/// `runtime.newproc` (`g.gopc`).
pub type SiteKey = u64;

/// A goroutine created while tracing and not yet seen to exit.
#[derive(Clone, Copy, Debug)]
pub struct LiveGoroutine {
    pub site: SiteKey,
    pub g_addr: u64,
    pub created_ns: u64,
    pub parent_goid: u64,
    pub stack_id: i64,
    /// Last `gopark` seen (reason, time), with park tracing on.
    pub parked: Option<(u8, u64)>,
}

pub struct SiteStats {
    pub startpc: u64,
    pub created: u64,
    pub exited: u64,
    /// Lifetimes of the site's goroutines that exited, in microseconds.
    pub lifetimes_us: Histogram<u64>,
    /// Creation stacks seen for this site and how often.
    pub stacks: HashMap<i64, u64>,
}

impl SiteStats {
    fn new(startpc: u64) -> Self {
        Self {
            startpc,
            created: 0,
            exited: 0,
            lifetimes_us: Histogram::new(3).expect("3 significant figures is valid"),
            stacks: HashMap::new(),
        }
    }
}

#[derive(Default)]
pub struct Aggregator {
    pub live: HashMap<u64, LiveGoroutine>,
    pub sites: HashMap<SiteKey, SiteStats>,
    /// Exits of goroutines that existed before tracing began.
    pub exits_of_untracked: u64,
    /// Goroutines found dead in memory whose exit event never arrived.
    pub reconciled_exits: u64,
    pub events: u64,
}

impl Aggregator {
    pub fn on_event(&mut self, ev: &GoroutineEvent) {
        self.events += 1;
        match EventKind::from_u32(ev.kind) {
            Some(EventKind::Create) => self.on_create(ev),
            Some(EventKind::Exit) => {
                self.on_exit(ev.goid, ev.ts_ns);
            }
            Some(EventKind::Park) => {
                if let Some(g) = self.live.get_mut(&ev.goid) {
                    g.parked = Some((ev.wait_reason as u8, ev.ts_ns));
                }
            }
            None => {}
        }
    }

    fn on_create(&mut self, ev: &GoroutineEvent) {
        let site = self
            .sites
            .entry(ev.gopc)
            .or_insert_with(|| SiteStats::new(ev.startpc));
        site.created += 1;
        if ev.stack_id >= 0 {
            *site.stacks.entry(ev.stack_id).or_default() += 1;
        }
        self.live.insert(
            ev.goid,
            LiveGoroutine {
                site: ev.gopc,
                g_addr: ev.g_addr,
                created_ns: ev.ts_ns,
                parent_goid: ev.parent_goid,
                stack_id: ev.stack_id,
                parked: None,
            },
        );
    }

    /// Records an exit; `false` if the goroutine was not being tracked.
    pub fn on_exit(&mut self, goid: u64, ts_ns: u64) -> bool {
        let Some(g) = self.live.remove(&goid) else {
            self.exits_of_untracked += 1;
            return false;
        };
        if let Some(site) = self.sites.get_mut(&g.site) {
            site.exited += 1;
            let us = ts_ns.saturating_sub(g.created_ns) / 1000;
            site.lifetimes_us.saturating_record(us.max(1));
        }
        true
    }

    /// Marks goroutines that memory shows dead (their exit event was lost) as exited.
    pub fn reconcile_dead(&mut self, dead: &[u64], now_ns: u64) {
        for &goid in dead {
            if self.on_exit(goid, now_ns) {
                self.reconciled_exits += 1;
            }
        }
    }

    pub fn totals(&self) -> (u64, u64) {
        self.sites
            .values()
            .fold((0, 0), |(c, e), s| (c + s.created, e + s.exited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(goid: u64, gopc: u64, ts: u64) -> GoroutineEvent {
        GoroutineEvent {
            kind: EventKind::Create as u32,
            goid,
            gopc,
            startpc: 0x1000,
            ts_ns: ts,
            stack_id: 7,
            ..Default::default()
        }
    }

    fn exit(goid: u64, ts: u64) -> GoroutineEvent {
        GoroutineEvent {
            kind: EventKind::Exit as u32,
            goid,
            ts_ns: ts,
            ..Default::default()
        }
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
        assert_eq!((a.created, a.exited), (2, 1));
        assert_eq!(a.lifetimes_us.len(), 1);
        assert_eq!(a.stacks[&7], 2);
        assert_eq!(agg.live.len(), 2);
        assert_eq!(agg.exits_of_untracked, 1);
        assert_eq!(agg.totals(), (3, 1));
    }

    #[test]
    fn reconciling_counts_only_tracked_goroutines() {
        let mut agg = Aggregator::default();
        agg.on_event(&create(10, 0xa, 1_000));
        agg.reconcile_dead(&[10, 77], 9_000);
        assert_eq!(agg.reconciled_exits, 1);
        assert!(agg.live.is_empty());
        assert_eq!(agg.sites[&0xa].exited, 1);
    }
}
