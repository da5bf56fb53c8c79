//! The tracing core: one loaded set of probes, any number of target processes, one
//! event stream, and each target's state. `gleak attach`/`run` hold one target,
//! `gleak audit` many. Events come in, ordered, from [`crate::tracing::events`];
//! a report is one look at the target ([`observe`], every side effect of looking)
//! and then its assembly from what was seen ([`assemble`], none).

use std::collections::HashMap;

use gleak_common::{counter, CONFIG_CAPTURE_STACKS};

use crate::{
    analysis::aggregate::Aggregator,
    analysis::proof_state::ProofState,
    error::Result,
    output::report::{KernelCounters, Report},
    process::memory::ProcessMemory,
    process::snapshot::all_goroutines,
    process::target::Target,
    process::testname::read_test_name,
    process::unwind::{BlockingStacks, StackId},
    runtime::debuginfo::RuntimeInfo,
    tracing::events::{EventSource, OrderedEvents},
    tracing::placement::AttachOptions,
    tracing::probes::{AttachedProbe, Probes},
    tracing::sitecache::{Location, SiteLabels, StackCache},
};

mod assemble;
mod observe;

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
    /// Where each blocked goroutine is stuck, cached per goroutine.
    blocking: BlockingStacks,
    /// What the proof has settled, kept between reports.
    proof: ProofState,
    /// Exits come from the probe (else from memory, see [`AttachOptions::exit_probe`]).
    exit_probe: bool,
    /// Blocking stacks symbolized, once per stack.
    blocking_frames: HashMap<StackId, Vec<Location>>,
    /// What cannot be seen in this target (said in every report).
    gaps: Vec<String>,
    /// A test binary whose tests' names can be read: reports blame goroutines on tests.
    tests_traced: bool,
}

pub struct Tracer {
    probes: Probes,
    events: EventSource,
    /// Looked up once per event: a fast hasher (the default SipHash showed in profiles).
    targets: foldhash::HashMap<u32, TracedTarget>,
}

impl Tracer {
    /// Loads the probes and starts draining their events.
    pub fn new() -> Result<Self> {
        let mut probes = Probes::load()?;
        let events = EventSource::start(probes.take_event_maps()?)?;
        Ok(Self { probes, events, targets: Default::default() })
    }

    /// How the probes find the process they fired in (kernel-dependent).
    pub fn target_lookup(&self) -> crate::tracing::probes::TargetLookup {
        self.probes.target_lookup()
    }

    /// Reads the target's binary and starts tracing it.
    pub fn attach(&mut self, pid: u32, opts: AttachOptions) -> Result<&TracedTarget> {
        let target = Target::from_pid(pid)?;
        let info = RuntimeInfo::load(&target.binary)?;
        let probes = if opts.probes { attach_probes(&mut self.probes, &target, &info, opts)? } else { Vec::new() };
        let tests_traced = opts.probes && test_runner_pc(&target, &info).is_some();
        let mem = ProcessMemory::new(pid);
        let mut agg = Aggregator::default();
        let mut gaps = info.gaps.clone();
        // Probes first, then the goroutine table: a goroutine born in between shows
        // up in both and is kept once; none falls between the two.
        let table = info.goroutine_table.as_ref().map_err(|why| std::io::Error::other(why.clone()));
        match table.and_then(|table| all_goroutines(&mem, table, &info.layout, target.load_bias)) {
            Ok(existing) => {
                let read_ns = monotonic_ns();
                for (g_addr, rec) in &existing {
                    agg.adopt(*g_addr, rec, read_ns);
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
            blocking: BlockingStacks::default(),
            blocking_frames: HashMap::new(),
            proof: ProofState::new(opts.prove),
            exit_probe: opts.exit_probe,
            gaps,
            tests_traced,
        };
        self.targets.insert(pid, traced);
        Ok(&self.targets[&pid])
    }

    /// Adds the uprobes to a target watched from memory only (see
    /// [`AttachOptions::probes`]): from now on its creations and exits are exact.
    /// Goroutines born meanwhile were or will be picked up by reconciliation.
    pub fn add_probes(&mut self, pid: u32, opts: AttachOptions) -> Result<()> {
        let Tracer { probes, targets, .. } = self;
        let Some(t) = targets.get_mut(&pid) else { return Ok(()) };
        if t.probes.is_empty() {
            t.probes = attach_probes(probes, &t.target, &t.info, opts)?;
        }
        t.proof.enabled = opts.prove;
        t.exit_probe = opts.exit_probe;
        Ok(())
    }

    /// Takes the uprobes off a target but keeps watching it from memory.
    pub fn remove_probes(&mut self, pid: u32) {
        self.probes.detach(pid);
        if let Some(t) = self.targets.get_mut(&pid) {
            t.probes.clear();
            t.proof.enabled = false;
        }
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

    /// Waits for the next events, then applies everything produced so far (see
    /// [`Tracer::drain_now`]). Cancel-safe.
    pub async fn pump(&mut self) -> usize {
        let events = self.events.next().await;
        apply(&events, &mut self.targets)
    }

    /// Applies every event produced so far, in time order.
    pub fn drain_now(&mut self) -> usize {
        let events = self.events.drain_now();
        apply(&events, &mut self.targets)
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
            exits_lost: c[counter::EXITS_LOST as usize],
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
            // Without an exit probe, exits are read from memory here.
            if !t.exit_probe && !t.probes.is_empty() && t.target.is_alive() {
                t.observe_live(false, now);
            }
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
            self.targets.get_mut(&pid)?.reconcile_creations();
            self.drain_now();
        }
        let kernel = self.kernel_counters();
        let Tracer { probes, targets, .. } = self;
        let traced = targets.get_mut(&pid)?;
        let observed = traced.observe(probes, pid, target_exited);
        Some(traced.assemble(&observed, pid, target_exited, kernel, is_final))
    }
}

fn attach_probes(
    probes: &mut Probes,
    target: &Target,
    info: &RuntimeInfo,
    opts: AttachOptions,
) -> Result<Vec<AttachedProbe>> {
    if !info.layout.fits_create_span() {
        return Err(crate::error::Error::Load(format!(
            "{}: runtime.g's gopc/startpc/parentGoid lie too far from goid for the creation probe",
            target.exe.display()
        )));
    }
    let flags = if opts.capture_stacks { CONFIG_CAPTURE_STACKS } else { 0 };
    let mut config = info.layout.target_config(flags);
    config.test_runner_pc = test_runner_pc(target, info).unwrap_or(0);
    probes.attach(target, config, opts)
}

/// Where the goroutines of `t.Run` start in the target (a run-time address), when
/// it runs Go tests whose names gleak can read: the test's closure (in
/// `g.sched.ctxt`) and `testing.T.name` must both be known.
fn test_runner_pc(target: &Target, info: &RuntimeInfo) -> Option<u64> {
    let ctxt_known = info.layout.blocked.is_some_and(|b| b.g_sched_ctxt != 0);
    if !ctxt_known || info.layout.test_name.is_none() {
        return None;
    }
    target.binary.test_runner_entry().map(|entry| entry.wrapping_add(target.load_bias))
}

fn apply(events: &OrderedEvents, targets: &mut foldhash::HashMap<u32, TracedTarget>) -> usize {
    for ev in events.iter() {
        if let Some(t) = targets.get_mut(&ev.pid) {
            t.agg.on_event(ev);
        }
    }
    for t in targets.values_mut() {
        t.agg.end_of_drain();
        t.name_new_tests();
    }
    events.len()
}

impl TracedTarget {
    /// Reads the names of the tests that started since the last drain, at once: a
    /// test's `testing.T` may be freed soon after the test ends.
    fn name_new_tests(&mut self) {
        let Some(offset) = self.info.layout.test_name else { return };
        for (id, t_addr) in self.agg.tests.take_unnamed() {
            if let Some(name) = read_test_name(&self.mem, t_addr, offset) {
                self.agg.tests.set_name(id, name);
            }
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns` and of Go's `nanotime`.
pub fn monotonic_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    // CLOCK_MONOTONIC cannot fail on Linux.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}
