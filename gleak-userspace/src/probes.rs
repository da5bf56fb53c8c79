//! Loading the eBPF object and attaching its uprobes to targets.
//!
//! One loaded object serves every target: probes are attached per process
//! (`UProbeScope::OneProcess`), each process's runtime layout sits in a slot of
//! the `TARGETS` array, and the probes' cookie names the process and its slot.

use std::{collections::HashMap, num::NonZeroU32};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf, EbpfLoader,
};
use gleak_common::{counter, probe_cookie, CreateBatch, ExitBatch, TargetConfig, MAX_TARGETS};

use crate::{
    error::{Error, Result},
    placement::{
        self, AttachOptions, ProbeSite, PROBE_CREATE, PROBE_CREATE_RBX, PROBE_EXIT, PROBE_PARK, PROBE_PARK_MCALL,
        PROBE_PROCESS_EXIT,
    },
    target::Target,
};

#[cfg(not(gleak_no_ebpf))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gleak-ebpf.o"));
#[cfg(gleak_no_ebpf)]
static OBJECT: &[u8] = &[];

/// The eBPF object gleak loads (the overhead benchmark loads it too, for its
/// counting-only floor program).
pub fn ebpf_object() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        return Err(Error::NoEbpfObject);
    }
    Ok(OBJECT)
}

/// One attached uprobe, for the banner.
#[derive(Clone, Debug)]
pub struct AttachedProbe {
    pub program: &'static str,
    /// e.g. `runtime.newproc1+0x1f3 (RET)`.
    pub location: String,
}

pub struct Probes {
    ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Each traced process's slot in the probes' `TARGETS` array.
    slots: HashMap<u32, u32>,
}

impl Probes {
    pub fn load() -> Result<Self> {
        let object = ebpf_object()?;
        preflight()?;
        bump_memlock_rlimit();
        let mut loader = EbpfLoader::new();
        let ring_bytes = ring_buffer_bytes_override()?;
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        // The probes wake the intake thread once the ring is a quarter full.
        let wakeup_bytes = u64::from(ring_bytes.unwrap_or(DEFAULT_RING_BYTES)) / 4;
        let mut ebpf = loader
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .load(object)
            .map_err(|e| Error::Load(e.to_string()))?;
        // The probes log only on paths that should never run; keep the logger alive
        // so its map stays valid, and drop its output into `log`.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        for name in [PROBE_CREATE, PROBE_CREATE_RBX, PROBE_EXIT, PROBE_PARK, PROBE_PARK_MCALL, PROBE_PROCESS_EXIT] {
            let prog: &mut UProbe = program(&mut ebpf, name)?;
            prog.load().map_err(|e| Error::Load(format!("{name}: {e}")))?;
        }
        Ok(Self { ebpf, logger, links: HashMap::new(), slots: HashMap::new() })
    }

    /// Forwards what the probes logged to the `log` crate.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// The ring buffer of events; call once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").ok_or_else(|| Error::Load("no EVENTS map".into()))?;
        RingBuf::try_from(map).map_err(|e| Error::Load(e.to_string()))
    }

    /// Registers the target's layout, then attaches exit (and park) probes before the
    /// creation probe, so that every goroutine seen born is also seen die.
    pub fn attach(&mut self, target: &Target, config: TargetConfig, opts: AttachOptions) -> Result<Vec<AttachedProbe>> {
        let pid = target.pid;
        let bin = &target.binary;
        let attach_error = |site: &ProbeSite, reason: String| Error::Attach {
            probe: site.label.clone(),
            path: target.exe.clone(),
            reason,
        };
        let mut plan = Vec::new();
        for site in placement::plan(bin, opts)? {
            let offset = bin
                .file_offset(site.vaddr)
                .ok_or_else(|| attach_error(&site, format!("{:#x} is not in a file-backed segment", site.vaddr)))?;
            plan.push((site, offset));
        }

        // Everything is resolved: register the layout in a free slot, then attach
        // in plan order, each probe with a cookie naming the process and its slot
        // (so that in a PID namespace of its own, as in a container without
        // hostPID, the probes report gleak's PIDs, not the kernel's). Any failure
        // undoes it all.
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(Error::NoSuchProcess(pid))?);
        // A process attached again keeps its slot.
        let slot = match self.slots.get(&pid) {
            Some(&slot) => slot,
            None => (0..MAX_TARGETS)
                .find(|s| !self.slots.values().any(|used| used == s))
                .ok_or_else(|| Error::Load(format!("{MAX_TARGETS} processes are traced already: detach some first")))?,
        };
        self.set_config(slot, config)?;
        self.slots.insert(pid, slot);
        let cookie = probe_cookie(pid, slot);
        let mut attached = Vec::new();
        for (site, offset) in plan {
            let link = program(&mut self.ebpf, site.program).and_then(|prog| {
                let point =
                    UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: Some(cookie) };
                prog.attach(point, &target.attach_path, scope).map_err(|e| attach_error(&site, error_chain(&e)))
            });
            match link {
                Ok(link) => {
                    self.links.entry(pid).or_default().push((site.program, link));
                    attached.push(AttachedProbe { program: site.program, location: site.label });
                }
                Err(e) => {
                    self.detach(pid);
                    return Err(e);
                }
            }
        }
        Ok(attached)
    }

    /// Removes every probe of `pid` and forgets its layout.
    pub fn detach(&mut self, pid: u32) {
        for (program_name, link) in self.links.remove(&pid).unwrap_or_default() {
            if let Ok(prog) = program(&mut self.ebpf, program_name) {
                let _ = prog.detach(link);
            }
        }
        if let Some(slot) = self.slots.remove(&pid) {
            let _ = self.set_config(slot, TargetConfig::default());
        }
    }

    /// Writes slot `slot` of the probes' `TARGETS` (all zeros: free).
    fn set_config(&mut self, slot: u32, config: TargetConfig) -> Result<()> {
        let map = self.ebpf.map_mut("TARGETS").ok_or_else(|| Error::Load("no TARGETS map".into()))?;
        let mut targets: Array<_, TargetConfig> = Array::try_from(map).map_err(|e| Error::Load(e.to_string()))?;
        targets.set(slot, config, 0).map_err(|e| Error::Load(format!("TARGETS: {e}")))
    }

    /// The kernel-side counters (`gleak_common::counter`), summed over CPUs.
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        if let Some(map) = self.ebpf.map("COUNTERS") {
            if let Ok(array) = PerCpuArray::<_, u64>::try_from(map) {
                for (i, slot) in out.iter_mut().enumerate() {
                    if let Ok(values) = array.get(&(i as u32), 0) {
                        *slot = values.iter().sum();
                    }
                }
            }
        }
        out
    }

    /// The batches the probes are still filling, per CPU (see
    /// `gleak_common::BatchHeader`): the deaths' read first, then the creations',
    /// so that every death seen has its goroutine's creation seen too (there, or in
    /// the ring drained after).
    pub fn pending(&self) -> (Vec<ExitBatch>, Vec<CreateBatch>) {
        let exits = self.per_cpu::<ExitBatch>("PENDING_EXITS");
        let creates = self.per_cpu::<CreateBatch>("PENDING_CREATES");
        (exits.map(|v| v.to_vec()).unwrap_or_default(), creates.map(|v| v.to_vec()).unwrap_or_default())
    }

    /// The one value of per-CPU array `name`, per CPU.
    fn per_cpu<T: aya::Pod>(&self, name: &str) -> Option<aya::maps::PerCpuValues<T>> {
        PerCpuArray::<_, T>::try_from(self.ebpf.map(name)?).ok()?.get(&0, 0).ok()
    }

    /// The user stack recorded under `stack_id` (innermost first, runtime addresses).
    pub fn stack(&self, stack_id: i64) -> Option<Vec<u64>> {
        let id = u32::try_from(stack_id).ok()?;
        let stacks = StackTraceMap::try_from(self.ebpf.map("STACKS")?).ok()?;
        let trace = stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Load(format!("program {name} missing from the eBPF object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| Error::Load(format!("{name}: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Says what is missing before anything fails obscurely: the capabilities
/// (root has them all) and the kernel's uprobe PMU.
pub fn preflight() -> Result<()> {
    const NEEDED: [(u32, &str); 3] = [(39, "CAP_BPF"), (38, "CAP_PERFMON"), (19, "CAP_SYS_PTRACE")];
    let effective = procfs::process::Process::myself().and_then(|p| p.status()).ok().map(|s| s.capeff);
    if let Some(caps) = effective {
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON on every kernel.
        let admin = caps & (1 << 21) != 0;
        let missing: Vec<&str> = NEEDED
            .iter()
            .filter(|&&(bit, name)| caps & (1u64 << bit) == 0 && !(admin && name != "CAP_SYS_PTRACE"))
            .map(|&(_, name)| name)
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingCapabilities { missing: missing.join(", ") });
        }
    }
    let uprobe_pmu = "/sys/bus/event_source/devices/uprobe";
    if !std::path::Path::new(uprobe_pmu).exists() {
        return Err(Error::NoUprobes { what: uprobe_pmu.into() });
    }
    Ok(())
}

/// The ring buffer's size in the eBPF object (`gleak-ebpf/src/maps.rs`).
const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// `GLEAK_RING_BUFFER_BYTES`: a smaller event ring buffer than the built-in
/// 8 MiB, to force event loss in tests (a power of two, at least 4096).
fn ring_buffer_bytes_override() -> Result<Option<u32>> {
    let Some(raw) = std::env::var_os("GLEAK_RING_BUFFER_BYTES") else { return Ok(None) };
    match raw.to_str().and_then(|s| s.parse::<u32>().ok()) {
        Some(n) if n >= 4096 && n.is_power_of_two() => Ok(Some(n)),
        _ => Err(Error::Load(format!(
            "GLEAK_RING_BUFFER_BYTES={} must be a power of two of at least 4096",
            raw.to_string_lossy()
        ))),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn bump_memlock_rlimit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    // Without the privilege to raise it, loading says what failed.
    let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
}
