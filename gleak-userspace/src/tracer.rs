//! The tracing core: one loaded set of probes, any number of target processes, one
//! event stream. The CLI is a thin shell over this; `gleak audit` will hold many
//! targets in one long-running process.

use std::{collections::HashMap, io, time::Instant};

use aya::maps::{MapData, RingBuf};
use gleak_common::{counter, GoroutineEvent, CONFIG_CAPTURE_STACKS};
use tokio::io::unix::AsyncFd;

use crate::{
    aggregate::{Aggregator, SiteKey},
    debuginfo::RuntimeInfo,
    error::Result,
    layout::gstatus,
    probes::{AttachOptions, AttachedProbe, Probes},
    procmem::ProcessMemory,
    report::{Report, SiteReport, Totals},
    snapshot::{observe, Observed},
    symbolize::Frame,
    target::Target,
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
    attached_at: Instant,
    sites: HashMap<SiteKey, SiteLabel>,
    stacks: HashMap<i64, Vec<Frame>>,
}

/// A creation site, symbolized once.
#[derive(Clone)]
struct SiteLabel {
    at: Frame,
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
        let events =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    crate::error::Error::Load(format!("ring buffer: {}", e.into_parts().1))
                })?;
        Ok(Self {
            probes,
            events,
            targets: HashMap::new(),
        })
    }

    /// Reads the target's binary and starts tracing it.
    pub fn attach(&mut self, pid: u32, opts: AttachOptions) -> Result<&TracedTarget> {
        let target = Target::from_pid(pid)?;
        let info = RuntimeInfo::load(&target.binary)?;
        let flags = if opts.capture_stacks {
            CONFIG_CAPTURE_STACKS
        } else {
            0
        };
        let probes = self
            .probes
            .attach(&target, info.layout.target_config(flags), opts)?;
        let traced = TracedTarget {
            mem: ProcessMemory::new(pid),
            target,
            info,
            probes,
            agg: Aggregator::default(),
            attached_at: Instant::now(),
            sites: HashMap::new(),
            stacks: HashMap::new(),
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

    /// Events lost in the kernel (full ring buffer, unreadable memory), all targets.
    pub fn lost_events(&self) -> u64 {
        let c = self.probes.counters();
        c[counter::RINGBUF_FULL as usize] + c[counter::READ_FAILED as usize]
    }

    /// Builds a report for `pid`: reads the live goroutines' state from memory,
    /// retires the ones that died unseen, and groups by creation site.
    pub fn report(&mut self, pid: u32, is_final: bool) -> Option<Report> {
        self.drain_now();
        let lost_events = self.lost_events();
        let t = self.targets.get_mut(&pid)?;
        let target_exited = !t.target.is_alive();
        let now = monotonic_ns();

        let live: Vec<(u64, u64)> = t
            .agg
            .live
            .iter()
            .map(|(&goid, g)| (goid, g.g_addr))
            .collect();
        let observed = if target_exited {
            vec![Observed::Unknown; live.len()]
        } else {
            observe(&t.mem, &t.info.layout, &live)
        };
        let dead: Vec<u64> = live
            .iter()
            .zip(&observed)
            .filter(|(_, o)| **o == Observed::Gone)
            .map(|((goid, _), _)| *goid)
            .collect();
        t.agg.reconcile_dead(&dead, now);

        let mut per_site: HashMap<SiteKey, SiteReport> = HashMap::new();
        for ((goid, _), obs) in live.iter().zip(&observed) {
            let Some(g) = t.agg.live.get(goid) else {
                continue;
            };
            let site = per_site.entry(g.site).or_default();
            site.live += 1;
            let age = now.saturating_sub(g.created_ns) as f64 / 1e9;
            site.oldest_age_s = Some(site.oldest_age_s.map_or(age, |a: f64| a.max(age)));
            if let Observed::Alive(state) = obs {
                *site
                    .states
                    .entry(gstatus::name(state.status).to_string())
                    .or_default() += 1;
                if state.status == gstatus::WAITING {
                    let reason = t.info.wait_reasons.name(state.wait_reason);
                    *site.wait_reasons.entry(reason).or_default() += 1;
                }
            }
        }

        let bias = t.target.load_bias;
        let mut sites = Vec::with_capacity(t.agg.sites.len());
        for (&key, stats) in &t.agg.sites {
            let label = t
                .sites
                .entry(key)
                .or_insert_with(|| {
                    let sym = &t.info.symbolizer;
                    let at = sym
                        .call_site(key.wrapping_sub(bias))
                        .unwrap_or_else(|| unknown_frame(key));
                    let go_func = sym
                        .function_at(stats.startpc.wrapping_sub(bias))
                        .unwrap_or_else(|| format!("{:#x}", stats.startpc));
                    SiteLabel { at, go_func }
                })
                .clone();
            let mut s = per_site.remove(&key).unwrap_or_default();
            s.function = label.at.function;
            s.file = label.at.file;
            s.line = label.at.line;
            s.go_func = label.go_func;
            s.pc = format!("{:#x}", key.wrapping_sub(bias));
            s.created = stats.created;
            s.exited = stats.exited;
            s.top_wait_reason = s
                .wait_reasons
                .iter()
                .max_by_key(|(name, n)| (**n, std::cmp::Reverse(name.to_string())))
                .map(|(r, _)| r.clone());
            s.lifetime_p50_ms = (!stats.lifetimes_us.is_empty())
                .then(|| stats.lifetimes_us.value_at_quantile(0.5) as f64 / 1000.0);
            if let Some((&stack_id, _)) = stats
                .stacks
                .iter()
                .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            {
                s.stack = match t.stacks.get(&stack_id) {
                    Some(frames) => frames.clone(),
                    None => {
                        let frames = self
                            .probes
                            .stack(stack_id)
                            .map(|ips| creation_stack(&ips, key, bias, t.info.symbolizer.as_ref()))
                            .unwrap_or_default();
                        t.stacks.insert(stack_id, frames.clone());
                        frames
                    }
                };
            }
            sites.push(s);
        }
        sites.sort_by(|a, b| {
            b.live
                .cmp(&a.live)
                .then(b.created.cmp(&a.created))
                .then(a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });

        let (created, exited) = t.agg.totals();
        Some(Report {
            pid,
            binary: t.target.exe.display().to_string(),
            go_version: t.target.binary.go_version.raw.clone(),
            elapsed_s: t.attached_at.elapsed().as_secs_f64(),
            is_final,
            target_exited,
            totals: Totals {
                created,
                exited,
                live: t.agg.live.len() as u64,
            },
            lost_events,
            reconciled_exits: t.agg.reconciled_exits,
            sites,
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

/// Symbolizes a creation stack captured at `newproc1`'s RET: drops the runtime
/// frames above the `go` statement (newproc1, systemstack, newproc) and `goexit`.
pub fn creation_stack(
    ips: &[u64],
    gopc: u64,
    bias: u64,
    sym: &(dyn crate::symbolize::Symbolizer + Send),
) -> Vec<Frame> {
    let start = ips.iter().position(|&ip| ip == gopc).unwrap_or(0);
    let mut frames = Vec::new();
    for &ip in &ips[start..] {
        for f in sym.frames(ip.wrapping_sub(bias).saturating_sub(1)) {
            if f.function == "runtime.goexit" {
                continue;
            }
            frames.push(f);
        }
    }
    frames
}

fn unknown_frame(pc: u64) -> Frame {
    Frame {
        function: format!("{pc:#x}"),
        file: "?".into(),
        line: 0,
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns` and of Go's `nanotime`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
