//! Loading the eBPF object and attaching its uprobes to targets.
//!
//! One loaded object serves every target: probes are attached per process
//! (`UProbeScope::OneProcess`), each process's runtime layout sits in a slot of
//! the `TARGETS` array, and the probes' cookie names the process and its slot.
//! On kernels without attach cookies (before 5.15) each probe's twin finds that
//! cookie by the process's thread group id instead ([`TargetLookup`]).

use std::{collections::HashMap, num::NonZeroU32};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        ProgramType, UProbe,
    },
    sys::{is_helper_supported, BpfHelper},
    Ebpf, EbpfLoader,
};
use gleak_common::{counter, probe_cookie, TargetConfig, MAX_TARGETS};

use crate::{
    error::{Error, Result},
    process::target::Target,
    tracing::events::EventMaps,
    tracing::placement::{
        self, AttachOptions, ProbeSite, PROBE_CREATE_ARG2, PROBE_CREATE_RESULT, PROBE_EXIT, PROBE_PARK,
        PROBE_PARK_MCALL, PROBE_PROCESS_EXIT,
    },
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

/// How the probes learn which traced process they fired in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetLookup {
    /// `bpf_get_attach_cookie` (kernel 5.15+): no lookup per hit.
    AttachCookie,
    /// A hash lookup by thread group id, for kernels without attach cookies.
    ThreadGroupId,
}

impl TargetLookup {
    /// What the kernel supports, unless `GLEAK_PROBE_LOOKUP` (`cookie` or `tgid`)
    /// says otherwise (the benchmark and tests measure both paths on one kernel).
    fn choose() -> Result<Self> {
        let supported = || {
            // aya attaches a cookie through a perf link: both came in 5.15.
            let helper = is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_get_attach_cookie);
            if matches!(helper, Ok(true)) && aya::features().bpf_perf_link() {
                Self::AttachCookie
            } else {
                Self::ThreadGroupId
            }
        };
        match std::env::var("GLEAK_PROBE_LOOKUP").as_deref() {
            Err(_) => Ok(supported()),
            Ok("cookie") => Ok(Self::AttachCookie),
            Ok("tgid") => Ok(Self::ThreadGroupId),
            Ok(other) => Err(Error::Load(format!("GLEAK_PROBE_LOOKUP={other}: expected `cookie` or `tgid`"))),
        }
    }

    /// The eBPF program of probe `program` (a `PROBE_*` name) for this lookup.
    pub fn program(self, program: &'static str) -> &'static str {
        match self {
            Self::AttachCookie => program,
            Self::ThreadGroupId => {
                PROGRAM_TWINS.iter().find(|(cookie, _)| *cookie == program).map_or(program, |&(_, tgid)| tgid)
            }
        }
    }

    /// For the banner.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AttachCookie => "target found by attach cookie",
            Self::ThreadGroupId => "target found by PID: no BPF attach cookies before kernel 5.15",
        }
    }
}

/// Each probe program and its twin that finds its target by thread group id
/// (`uprobe_per_cookie_source!` in `gleak-ebpf/src/target.rs`).
const PROGRAM_TWINS: [(&str, &str); 6] = [
    (PROBE_CREATE_RESULT, "goroutine_create_result_tgid"),
    (PROBE_CREATE_ARG2, "goroutine_create_arg2_tgid"),
    (PROBE_EXIT, "goroutine_exit_tgid"),
    (PROBE_PARK, "goroutine_park_tgid"),
    (PROBE_PARK_MCALL, "goroutine_park_mcall_tgid"),
    (PROBE_PROCESS_EXIT, "process_exit_tgid"),
];

pub struct Probes {
    ebpf: Ebpf,
    lookup: TargetLookup,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Each traced process's slot in the probes' `TARGETS` array.
    slots: HashMap<u32, u32>,
    /// Under [`TargetLookup::ThreadGroupId`], each traced process's thread group
    /// id as the kernel knows it (its key in `COOKIE_BY_TGID`).
    tgids: HashMap<u32, u32>,
}

impl Probes {
    pub fn load() -> Result<Self> {
        let object = ebpf_object()?;
        crate::tracing::privilege::check_probes()?;
        let mut loader = EbpfLoader::new();
        let ring_bytes = ring_buffer_bytes_override()?;
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries("EVENTS", bytes);
        }
        // The probes wake the event source's ring thread once the ring is a quarter full.
        let wakeup_bytes = u64::from(ring_bytes.unwrap_or(DEFAULT_RING_BYTES)) / 4;
        let mut ebpf = loader
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .load(object)
            .map_err(|e| Error::Load(e.to_string()))?;
        // The probes log only on paths that should never run; keep the logger alive
        // so its map stays valid, and drop its output into `log`.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        let lookup = TargetLookup::choose()?;
        for (name, _) in PROGRAM_TWINS {
            let name = lookup.program(name);
            let prog: &mut UProbe = program(&mut ebpf, name)?;
            prog.load().map_err(|e| Error::Load(format!("{name}: {}", error_chain(&e))))?;
        }
        Ok(Self { ebpf, lookup, logger, links: HashMap::new(), slots: HashMap::new(), tgids: HashMap::new() })
    }

    /// How the loaded probes find their target.
    pub fn target_lookup(&self) -> TargetLookup {
        self.lookup
    }

    /// Forwards what the probes logged to the `log` crate.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// The maps the probes send events through; call once.
    pub fn take_event_maps(&mut self) -> Result<EventMaps> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| Error::Load(format!("no {name} map")));
        let ring = RingBuf::try_from(take("EVENTS")?).map_err(|e| Error::Load(format!("EVENTS: {e}")))?;
        let pending_exits =
            PerCpuArray::try_from(take("PENDING_EXITS")?).map_err(|e| Error::Load(format!("PENDING_EXITS: {e}")))?;
        let pending_creates = PerCpuArray::try_from(take("PENDING_CREATES")?)
            .map_err(|e| Error::Load(format!("PENDING_CREATES: {e}")))?;
        Ok(EventMaps { ring, pending_exits, pending_creates })
    }

    /// Registers the target's layout, then attaches exit (and park) probes before the
    /// creation probe, so that every goroutine seen born is also seen die.
    pub fn attach(&mut self, target: &Target, config: TargetConfig, opts: AttachOptions) -> Result<Vec<AttachedProbe>> {
        let pid = target.pid;
        let bin = &target.binary;
        // The probes were compiled for this machine's registers (`bpf_target_arch`).
        if bin.arch.name() != std::env::consts::ARCH {
            return Err(Error::ForeignArch {
                path: target.exe.clone(),
                target: bin.arch.name(),
                host: std::env::consts::ARCH,
            });
        }
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
        let kernel_tgid = match self.lookup {
            TargetLookup::AttachCookie => None,
            TargetLookup::ThreadGroupId => Some(kernel_tgid(pid)?),
        };
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
        if let Some(tgid) = kernel_tgid {
            if let Err(e) = self.cookie_by_tgid().and_then(|mut map| {
                map.insert(tgid, cookie, 0).map_err(|e| Error::Load(format!("COOKIE_BY_TGID: {e}")))
            }) {
                self.detach(pid);
                return Err(e);
            }
            self.tgids.insert(pid, tgid);
        }
        let attach_cookie = kernel_tgid.is_none().then_some(cookie);
        let mut attached = Vec::new();
        for (site, offset) in plan {
            let program_name = self.lookup.program(site.program);
            let link = program(&mut self.ebpf, program_name).and_then(|prog| {
                let point =
                    UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: attach_cookie };
                prog.attach(point, &target.attach_path, scope).map_err(|e| attach_error(&site, error_chain(&e)))
            });
            match link {
                Ok(link) => {
                    self.links.entry(pid).or_default().push((program_name, link));
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
        if let Some(tgid) = self.tgids.remove(&pid) {
            let _ = self.cookie_by_tgid().map(|mut map| map.remove(&tgid));
        }
    }

    fn cookie_by_tgid(&mut self) -> Result<BpfHashMap<&mut MapData, u32, u64>> {
        let map = self.ebpf.map_mut("COOKIE_BY_TGID").ok_or_else(|| Error::Load("no COOKIE_BY_TGID map".into()))?;
        BpfHashMap::try_from(map).map_err(|e| Error::Load(e.to_string()))
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

    /// The user stack recorded under `stack_id` (innermost first, runtime addresses).
    #[cfg(not(target_arch = "aarch64"))]
    pub fn stack(&self, stack_id: i64) -> Option<Vec<u64>> {
        let id = u32::try_from(stack_id).ok()?;
        let stacks = aya::maps::StackTraceMap::try_from(self.ebpf.map("STACKS")?).ok()?;
        let trace = stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// The user stack recorded under `stack_id`, as the arm64 probe walked it
    /// (return addresses, innermost first; see `gleak-ebpf/src/create.rs`).
    #[cfg(target_arch = "aarch64")]
    pub fn stack(&self, stack_id: i64) -> Option<Vec<u64>> {
        use gleak_common::WALKED_FRAMES;
        let id = u32::try_from(stack_id).ok()?;
        let stacks: aya::maps::HashMap<_, u32, [u64; WALKED_FRAMES]> =
            aya::maps::HashMap::try_from(self.ebpf.map("WALKED_STACKS")?).ok()?;
        let frames = stacks.get(&id, 0).ok()?;
        Some(frames.into_iter().take_while(|&pc| pc != 0).collect())
    }
}

/// The PID by which the kernel's root PID namespace knows `pid`, which is what
/// `bpf_get_current_pid_tgid` returns: the same PID when gleak runs in that
/// namespace. From inside another one (a container without the host's PID
/// namespace) the root one's PIDs cannot be seen, so the lookup cannot work.
fn kernel_tgid(pid: u32) -> Result<u32> {
    // The root PID namespace's inode number is fixed (PROC_PID_INIT_INO).
    const ROOT_PID_NAMESPACE: u64 = 0xEFFF_FFFC;
    let own = std::fs::metadata("/proc/self/ns/pid").map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    match own {
        Ok(ROOT_PID_NAMESPACE) => Ok(pid),
        Ok(_) => Err(Error::Load(
            "this kernel has no BPF attach cookies (5.15+), so the probes know processes by their PIDs in the \
             host's PID namespace, which gleak cannot see from this one: run gleak in the host's PID namespace \
             (Kubernetes `hostPID: true`, Docker `--pid=host`)"
                .into(),
        )),
        Err(e) => Err(Error::Load(format!("reading /proc/self/ns/pid: {e}"))),
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
