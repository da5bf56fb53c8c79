//! Observation: one look at a traced target, with every side effect a look has.
//! It reads the live goroutines (retiring the ones that died unseen), where the
//! blocked ones are stuck and on what, the target's connections, lets the proof
//! refresh what it has settled, and symbolizes what the report will show, all
//! through the memory-reader interface. What it returns is plain data; report
//! assembly ([`super::assemble`]) is a function of it.

use std::collections::HashMap;

use crate::{
    analysis::memory_outlook::MemoryFacts,
    analysis::proof::{self, ProofBudget},
    analysis::proof_state::Records,
    binary::symbolize::Frame,
    process::memory_limit,
    process::netconn,
    process::snapshot::{all_goroutines, read_records, GRecord},
    process::threads,
    process::unwind::{Parked, Program, Sched},
    process::waits::{self, WaitKind, WaitObject, Waits},
    runtime::package_roles::PackageRole,
    tracing::probes::Probes,
};

use super::{monotonic_ns, TracedTarget};

/// What one look at a target found.
pub(super) struct Observation {
    /// Per live goroutine, its `g` as read (`None`: unreadable or the target exited).
    pub records: Records,
    /// What the blocked ones wait on.
    pub waits: Waits,
    /// The target's live network connections, if they could be read.
    pub live_connections: Option<u64>,
    /// CLOCK_MONOTONIC when read.
    pub at: u64,
    /// Its memory limit and use; `None` once it exited.
    pub memory: Option<MemoryFacts>,
}

/// How long a thread of a process held at its exit may take to stop.
const THREAD_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl TracedTarget {
    /// Looks at the target now (see the module's docs).
    pub(super) fn observe(&mut self, probes: &Probes, pid: u32, target_exited: bool) -> Observation {
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
        let live_connections = if target_exited { None } else { netconn::live_connections(pid).ok() };
        let memory = (!target_exited).then(|| self.observe_memory(pid));
        self.symbolize(probes, &records);
        Observation { records, waits, live_connections, at: now, memory }
    }

    /// The target's memory limits and use: its cgroup's, GOMEMLIMIT from its
    /// runtime, its resident set, the host's memory. What cannot be read is
    /// unknown (said once in the log), never a guess.
    fn observe_memory(&self, pid: u32) -> MemoryFacts {
        let known = |what: &str, read: Result<Option<u64>, String>| match read {
            Ok(value) => value,
            Err(why) => {
                log::debug!("PID {pid}: {what} unknown: {why}");
                None
            }
        };
        let cgroup = memory_limit::cgroup_limit(pid).unwrap_or_else(|why| {
            log::debug!("PID {pid}: cgroup memory limit unknown: {why}");
            None
        });
        let go_memory_limit = match &self.info.go_memory_limit {
            Ok(addr) => {
                known("GOMEMLIMIT", memory_limit::go_memory_limit(&self.mem, addr.wrapping_add(self.target.load_bias)))
            }
            Err(_) => None,
        };
        MemoryFacts {
            cgroup,
            go_memory_limit,
            rss_bytes: known("RSS", memory_limit::resident_bytes(pid).map(Some)),
            host_bytes: known("host memory", memory_limit::host_memory_bytes().map(Some)),
        }
    }

    /// Lets the proof keep what still holds and run again if something new is
    /// blocked in the program's own code.
    fn refresh_proof(&mut self, records: &Records, waits: &Waits) {
        let (bias, info, labels, agg, binary, mem) =
            (self.target.load_bias, &self.info, &mut self.labels, &self.agg, &self.target.binary, &self.mem);
        let worth_proving = |goid: u64| {
            agg.live.get(&goid).is_some_and(|g| {
                let startpc = agg.sites.get(&g.site).map_or(0, |s| s.startpc);
                !PackageRole::of_function(&labels.get(g.site, startpc, bias, info, binary).at.function).is_runtime()
            })
        };
        // Retained memory is measured per creation site.
        let groups: HashMap<u64, u64> = agg.live.iter().map(|(&goid, g)| (goid, g.site)).collect();
        let pid = self.target.pid;
        // Held at its exit (`gleak run`), every thread is stopping: wait for each.
        let wait = if agg.exit_stop.is_some() { THREAD_STOP_WAIT } else { std::time::Duration::ZERO };
        let threads = move |tid: u64| threads::stopped_thread_registers(pid, tid, wait);
        let prove = || proof::prove(mem, binary, info, bias, ProofBudget::default(), &groups, &threads);
        self.proof.refresh(records, waits, worth_proving, prove, monotonic_ns());
    }

    /// Symbolizes, once each, what a report shows: every site's `go` statement
    /// and creation stacks, and where blocked goroutines are stuck.
    fn symbolize(&mut self, probes: &Probes, records: &Records) {
        let (bias, info, binary) = (self.target.load_bias, &self.info, &self.target.binary);
        for (&key, stats) in &self.agg.sites {
            self.labels.get(key, stats.startpc, bias, info, binary);
            for &stack_id in stats.stacks.keys() {
                self.stacks.get(probes, stack_id, key, bias, info);
            }
        }
        let sym = &self.info.symbolizer;
        for (goid, rec) in records {
            let Some(rec) = rec.filter(GRecord::is_blocked) else { continue };
            let Some(id) = self.blocking.get(*goid, &rec.sched()) else { continue };
            let blocking = &self.blocking;
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
            });
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
                Some(Parked { goid, g_addr, sched: rec.sched() })
            })
            .collect();
        let (mem, layout) = (&self.mem, &self.info.layout);
        let reread = |addrs: &[u64]| -> Vec<Option<Sched>> {
            read_records(mem, layout, addrs)
                .into_iter()
                .map(|r| r.filter(GRecord::is_blocked).map(|r| r.sched()))
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
}
