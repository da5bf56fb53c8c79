//! Least privilege: which capabilities gleak needs on the running kernel, for
//! what, and what to say when one is missing.
//!
//! Each row was found by running gleak with every other capability dropped (uid 0
//! with a reduced bounding set, and a non-root uid with ambient capabilities) and
//! reading the kernel's check that refused it:
//!
//! | capability | what gleak does with it | kernels that ask for it |
//! |---|---|---|
//! | `CAP_SYS_ADMIN` | uprobes: `perf_event_open` on the `uprobe` PMU. `perf_uprobe_event_init()` (kernel/events/core.c) has `if (!capable(CAP_SYS_ADMIN)) return -EACCES;` | before 5.8, and again since ba677dbe77af "perf: Revert to requiring CAP_SYS_ADMIN for uprobes" (CVE-2025-38466): 6.16+, and 5.10.240, 5.15.189, 6.1.146, 6.6.99, 6.12.39, 6.15.7 and later in each of those series. Where it is needed it also stands in for `CAP_BPF` and `CAP_PERFMON` (`bpf_capable()`, `perfmon_capable()`) |
//! | `CAP_PERFMON` | the same uprobes (`perfmon_capable()`) | 5.8+ kernels without that fix |
//! | `CAP_BPF` | `bpf()`: loading the programs, creating the maps | 5.8+ (before 5.8, `CAP_SYS_ADMIN`) |
//! | `CAP_SYS_PTRACE` | `/proc/PID/exe`, `/proc/PID/maps` and `process_vm_readv` of a process of another user, or one holding capabilities gleak lacks (`ptrace_may_access()`) | every kernel; `gleak run` does without, its command being gleak's own child |
//! | `CAP_SYS_RESOURCE` | raising `RLIMIT_MEMLOCK`, which kernels before 5.11 charge BPF maps to (the event ring alone is 8 MiB) | before 5.11, unless gleak starts with an unlimited limit (`ulimit -l unlimited`, systemd `LimitMEMLOCK=infinity`) |
//!
//! [`preflight`] checks this up front, from the effective set (`CapEff` in
//! `/proc/self/status`) and one `perf_event_open` that the kernel refuses before
//! it creates anything; when a system call fails anyway, [`explain_load_failure`],
//! [`explain_attach_failure`] and [`explain_process_denied`] read its errno and say
//! which capability it wanted. Messages never tell a process that has uid 0 to be
//! root: they say which capability its set leaves out and where to add it.

use std::{
    fmt::{self, Display},
    io,
    sync::OnceLock,
};

use aya::util::KernelVersion;

use crate::error::{Error, Result};

/// The capabilities gleak may need, as `include/uapi/linux/capability.h` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    SysPtrace = 19,
    SysAdmin = 21,
    SysResource = 24,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    /// Every capability gleak may need.
    pub const ALL: [Capability; 5] =
        [Capability::SysAdmin, Capability::Bpf, Capability::Perfmon, Capability::SysPtrace, Capability::SysResource];

    /// `CAP_SYS_ADMIN`, as the kernel and systemd spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::SysPtrace => "CAP_SYS_PTRACE",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::SysResource => "CAP_SYS_RESOURCE",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    fn bit(self) -> u64 {
        1 << self as u32
    }
}

impl Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability set as `/proc/PID/status` shows one (`CapEff:`, `CapBnd:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn of(caps: &[Capability]) -> CapSet {
        CapSet(caps.iter().fold(0, |set, c| set | c.bit()))
    }

    pub fn has(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }
}

/// What this process holds.
#[derive(Clone, Copy, Debug)]
pub struct Privileges {
    pub euid: u32,
    pub effective: CapSet,
    pub bounding: CapSet,
}

impl Privileges {
    /// This process's, from `/proc/self/status`; `None` if it cannot be read (then
    /// nothing is checked up front and the system calls speak for themselves).
    pub fn current() -> Option<Privileges> {
        static CURRENT: OnceLock<Option<Privileges>> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let status = procfs::process::Process::myself().and_then(|p| p.status()).ok()?;
            Some(Privileges {
                euid: status.euid,
                effective: CapSet(status.capeff),
                bounding: CapSet(status.capbnd.unwrap_or(u64::MAX)),
            })
        })
    }

    fn is_uid_0(&self) -> bool {
        self.euid == 0
    }
}

// ---------------------------------------------------------------------------
// What each kernel asks for
// ---------------------------------------------------------------------------

/// `CAP_BPF` and `CAP_PERFMON` exist since 5.8; before, `CAP_SYS_ADMIN` did both jobs.
const SPLIT_CAPABILITIES_SINCE: KernelVersion = KernelVersion::new(5, 8, 0);
/// Since 5.11 BPF maps are charged to the memory cgroup, no longer to `RLIMIT_MEMLOCK`.
const MEMCG_ACCOUNTING_SINCE: KernelVersion = KernelVersion::new(5, 11, 0);
/// ba677dbe77af ("perf: Revert to requiring CAP_SYS_ADMIN for uprobes") is in 6.16 ...
const UPROBES_SYS_ADMIN_AGAIN_SINCE: KernelVersion = KernelVersion::new(6, 16, 0);
/// ... and in these stable releases of older series (CVE-2025-38466).
const UPROBES_SYS_ADMIN_BACKPORTED_IN: [(u8, u8, u16); 6] =
    [(5, 10, 240), (5, 15, 189), (6, 1, 146), (6, 6, 99), (6, 12, 39), (6, 15, 7)];

/// Whether `kernel` refuses uprobes to `CAP_PERFMON` alone. Distribution kernels
/// may carry the fix under an older version: [`uprobes_refused`] asks the kernel.
pub fn uprobes_need_sys_admin(kernel: KernelVersion) -> bool {
    kernel < SPLIT_CAPABILITIES_SINCE
        || kernel >= UPROBES_SYS_ADMIN_AGAIN_SINCE
        || UPROBES_SYS_ADMIN_BACKPORTED_IN.iter().any(|&(major, minor, patch)| {
            kernel >= KernelVersion::new(major, minor, patch) && kernel < KernelVersion::new(major, minor + 1, 0)
        })
}

/// Whether `kernel` charges BPF maps to `RLIMIT_MEMLOCK`.
pub fn maps_charged_to_memlock(kernel: KernelVersion) -> bool {
    kernel < MEMCG_ACCOUNTING_SINCE
}

/// Whether `caps` let gleak load eBPF programs and create maps on `kernel`
/// (the kernel's `bpf_capable()`).
pub fn can_load_programs(caps: CapSet, kernel: KernelVersion) -> bool {
    caps.has(Capability::SysAdmin) || (kernel >= SPLIT_CAPABILITIES_SINCE && caps.has(Capability::Bpf))
}

/// Whether `caps` let gleak open uprobes on `kernel`, going by its version.
pub fn can_open_uprobes(caps: CapSet, kernel: KernelVersion) -> bool {
    caps.has(Capability::SysAdmin) || (!uprobes_need_sys_admin(kernel) && caps.has(Capability::Perfmon))
}

/// The capabilities gleak needs on `kernel`, for a command that reads processes of
/// other users (`attach`, `audit`: `reads_others`) or only its own child (`run`),
/// with `memlock_unlimited` when RLIMIT_MEMLOCK is unlimited already.
pub fn minimal_set(kernel: KernelVersion, reads_others: bool, memlock_unlimited: bool) -> Vec<Capability> {
    let mut set = if uprobes_need_sys_admin(kernel) {
        // It stands in for CAP_BPF and CAP_PERFMON: adding those would grant nothing.
        vec![Capability::SysAdmin]
    } else {
        vec![Capability::Bpf, Capability::Perfmon]
    };
    if reads_others {
        set.push(Capability::SysPtrace);
    }
    if maps_charged_to_memlock(kernel) && !memlock_unlimited {
        set.push(Capability::SysResource);
    }
    set
}

/// The running kernel's version (the real one on Debian and Ubuntu, whose
/// `uname -r` hides it), `None` if it cannot be read.
pub fn kernel_version() -> Option<KernelVersion> {
    KernelVersion::current().ok()
}

// ---------------------------------------------------------------------------
// Asking the kernel
// ---------------------------------------------------------------------------

/// What the kernel answered a uprobe `perf_event_open` that names no file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UprobeAnswer {
    /// It got past the capability checks and complained about the missing path.
    Allowed,
    /// EACCES/EPERM: a capability check refused it.
    Refused,
    /// No uprobe PMU, or an answer that says nothing about capabilities.
    Unknown,
}

/// `struct perf_event_attr` up to `config2` (`PERF_ATTR_SIZE_VER1`); the kernel
/// zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    /// `uprobe_path`.
    config1: u64,
    /// `probe_offset`.
    config2: u64,
}

/// Asks the kernel whether this process may open uprobes, without creating one:
/// a uprobe `perf_event_open` with no file passes every capability check first
/// (`perf_allow_kernel()` for a probe that does not exclude the kernel, as aya's
/// do not, then `perf_uprobe_event_init()`) and only then fails with EINVAL in
/// `perf_uprobe_init()`, for the missing path.
pub fn uprobes_refused() -> UprobeAnswer {
    static ANSWER: OnceLock<UprobeAnswer> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let Some(pmu) = std::fs::read_to_string(UPROBE_PMU_TYPE).ok().and_then(|t| t.trim().parse::<u32>().ok()) else {
            return UprobeAnswer::Unknown;
        };
        let attr = PerfEventAttr { kind: pmu, size: std::mem::size_of::<PerfEventAttr>() as u32, ..Default::default() };
        const PERF_FLAG_FD_CLOEXEC: nix::libc::c_ulong = 1 << 3;
        // SAFETY: `attr` is a valid perf_event_attr of the size it declares and
        // outlives the call; pid 0 and cpu -1 are this process on any CPU.
        let fd = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned to us and nothing else holds it.
            unsafe { nix::libc::close(fd as i32) };
            return UprobeAnswer::Allowed;
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::EINVAL => UprobeAnswer::Allowed,
            nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => UprobeAnswer::Refused,
            _ => UprobeAnswer::Unknown,
        }
    })
}

const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";
const UPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/uprobe/type";

/// Whether this kernel wants `CAP_SYS_ADMIN` for uprobes: the kernel's own answer
/// when it is telling (refused while holding `CAP_PERFMON`, allowed without
/// `CAP_SYS_ADMIN`), else its version (an unknown one: yes, which works everywhere).
fn uprobes_want_sys_admin_here(privileges: &Privileges, kernel: Option<KernelVersion>) -> bool {
    let caps = privileges.effective;
    match uprobes_refused() {
        UprobeAnswer::Refused if caps.has(Capability::Perfmon) && !caps.has(Capability::SysAdmin) => true,
        UprobeAnswer::Allowed if !caps.has(Capability::SysAdmin) => false,
        _ => kernel.is_none_or(uprobes_need_sys_admin),
    }
}

// ---------------------------------------------------------------------------
// What is missing
// ---------------------------------------------------------------------------

/// A capability gleak lacks, and what it is needed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub capability: Capability,
    /// "for uprobes on this kernel (…)", "to read the memory of PID 42 (…)".
    pub needed_for: String,
}

/// Every capability gleak lacks, and where to add them: the message of
/// [`Error::MissingCapabilities`].
#[derive(Clone, Debug)]
pub struct Shortfalls {
    pub missing: Vec<Shortfall>,
    privileges: Privileges,
}

impl Shortfalls {
    fn new(privileges: Privileges) -> Shortfalls {
        Shortfalls { missing: Vec::new(), privileges }
    }

    /// Adds a need; a capability needed twice is named once, with both purposes.
    fn add(&mut self, capability: Capability, needed_for: String) {
        match self.missing.iter_mut().find(|s| s.capability == capability) {
            Some(s) => {
                s.needed_for.push_str(" and ");
                s.needed_for.push_str(&needed_for);
            }
            None => self.missing.push(Shortfall { capability, needed_for }),
        }
    }

    pub fn capabilities(&self) -> Vec<Capability> {
        self.missing.iter().map(|s| s.capability).collect()
    }
}

impl Display for Shortfalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.missing.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{} is needed {}", s.capability, s.needed_for)?;
        }
        write!(f, ". {}", Advice { privileges: &self.privileges, missing: &self.capabilities() })
    }
}

/// Where to add the missing capabilities, for who gleak runs as. Never "be root"
/// to a process that has uid 0: what it lacks is in its capability sets.
struct Advice<'a> {
    privileges: &'a Privileges,
    missing: &'a [Capability],
}

impl Display for Advice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = list(self.missing.iter().map(|c| c.name()));
        let lower = |prefix: &str| {
            self.missing.iter().map(|c| format!("{prefix}{}", c.name()[4..].to_ascii_lowercase())).collect::<Vec<_>>()
        };
        let p = self.privileges;
        if p.is_uid_0() {
            let excluded = self.missing.iter().all(|&c| !p.bounding.has(c));
            let which = if excluded { "capability bounding set" } else { "effective capabilities" };
            return write!(
                f,
                "gleak has uid 0, but its {which} leave{} out {names}: add {} where gleak is started \
                 (Kubernetes: securityContext.capabilities.add; docker run --cap-add; systemd: \
                 CapabilityBoundingSet=; deploy/ declares the whole set)",
                if excluded { "s" } else { "" },
                if self.missing.len() == 1 { "it" } else { "them" },
            );
        }
        let gleaks = Capability::ALL.iter().any(|&c| p.effective.has(c));
        let how = format!(
            "systemd: AmbientCapabilities=; a shell: setpriv --inh-caps={caps} --ambient-caps={caps} gleak …; \
             or setcap {files}+ep on the gleak binary; deploy/ declares the whole set",
            caps = lower("+").join(","),
            files = lower("cap_").join(","),
        );
        if gleaks {
            // Someone chose gleak's capabilities: name the ones to add, nothing broader.
            write!(f, "Add {names} to the capabilities gleak runs with ({how})")
        } else {
            write!(f, "Run gleak as root (sudo), or grant it {names} ({how})")
        }
    }
}

/// "A", "A and B", "A, B and C".
fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn kernel_label(kernel: Option<KernelVersion>) -> String {
    kernel.map_or_else(|| "this kernel".to_string(), |k| format!("Linux {k}"))
}

/// The capability that lets gleak load its programs here, and why that one.
fn loading_capability(privileges: &Privileges, kernel: Option<KernelVersion>) -> (Capability, &'static str) {
    if uprobes_want_sys_admin_here(privileges, kernel) {
        (Capability::SysAdmin, "to load gleak's eBPF programs (it stands in for CAP_BPF)")
    } else if kernel.is_some_and(|k| k < SPLIT_CAPABILITIES_SINCE) {
        (Capability::SysAdmin, "to load gleak's eBPF programs (kernels before 5.8 have no CAP_BPF)")
    } else {
        (Capability::Bpf, "to load gleak's eBPF programs and create its maps (bpf())")
    }
}

/// The capability that lets gleak open uprobes here, and why that one.
fn uprobe_capability(privileges: &Privileges, kernel: Option<KernelVersion>) -> (Capability, String) {
    let on = kernel_label(kernel);
    if kernel.is_some_and(|k| k < SPLIT_CAPABILITIES_SINCE) {
        (Capability::SysAdmin, format!("for uprobes on this kernel ({on}: CAP_PERFMON came in 5.8)"))
    } else if uprobes_want_sys_admin_here(privileges, kernel) {
        (
            Capability::SysAdmin,
            format!(
                "for uprobes on this kernel ({on} refuses them to CAP_PERFMON, as 6.16+ and the stable \
                 kernels fixed for CVE-2025-38466 do: perf_uprobe_event_init() wants CAP_SYS_ADMIN)"
            ),
        )
    } else {
        (Capability::Perfmon, format!("for uprobes (perf_event_open) on {on}"))
    }
}

/// Why gleak lacks `CAP_SYS_PTRACE` for `pid`, from its owner.
fn read_process_purpose(pid: u32) -> String {
    let owner = procfs::process::Process::new(pid as i32).and_then(|p| p.status()).ok().map(|s| s.euid);
    let mine = Privileges::current().map(|p| p.euid);
    // Yama's ptrace_scope 1 and up restricts even a process of gleak's own user.
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok();
    let why = match owner {
        Some(uid) if Some(uid) != mine => format!("it belongs to uid {uid}"),
        _ if yama.is_some_and(|scope| scope.trim() != "0") => {
            "Yama's ptrace_scope lets gleak read only its own descendants".to_string()
        }
        _ => "it holds capabilities gleak lacks".to_string(),
    };
    format!("to read the executable and memory of PID {pid} ({why})")
}

/// Which processes a command reads: the one thing that decides whether it needs
/// `CAP_SYS_PTRACE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// `gleak run`: the command it starts, its own child.
    OwnChild,
    /// `gleak attach -p PID`.
    Process(u32),
    /// `gleak audit`: every Go process of the host.
    EveryProcess,
}

/// Set `GLEAK_NO_PREFLIGHT=1` to skip the up-front checks and let the system calls
/// fail (the tests check that their errors name the same capabilities).
fn preflight_disabled() -> bool {
    std::env::var_os("GLEAK_NO_PREFLIGHT").is_some_and(|v| v == "1")
}

/// What loading and attaching the probes need: the kernel's uprobe PMU, then the
/// capabilities, and the locked-memory limit raised on kernels that charge maps
/// to it. [`crate::tracing::probes::Probes::load`] runs it.
pub fn check_probes() -> Result<()> {
    check(None)
}

/// Says up front what a command lacks, every missing capability at once, before
/// anything fails obscurely half-way.
pub fn preflight(reads: Reads) -> Result<()> {
    check(Some(reads))
}

fn check(reads: Option<Reads>) -> Result<()> {
    if !std::path::Path::new(UPROBE_PMU).exists() {
        return Err(Error::NoUprobes { what: UPROBE_PMU.into() });
    }
    let kernel = kernel_version();
    let memlock = raise_memlock_limit();
    let Some(privileges) = Privileges::current() else { return Ok(()) };
    if preflight_disabled() {
        return Ok(());
    }
    let caps = privileges.effective;
    let mut shortfalls = Shortfalls::new(privileges);
    let uprobes_allowed = match uprobes_refused() {
        UprobeAnswer::Allowed => true,
        // Refused to a holder of CAP_SYS_ADMIN: no capability would help (a
        // security module, lockdown, seccomp); the attach itself says so.
        UprobeAnswer::Refused => caps.has(Capability::SysAdmin),
        UprobeAnswer::Unknown => kernel.map_or(caps.has(Capability::SysAdmin), |k| can_open_uprobes(caps, k)),
    };
    if !uprobes_allowed {
        let (cap, why) = uprobe_capability(&privileges, kernel);
        shortfalls.add(cap, why);
    }
    if let Some((cap, why)) = loading_shortfall() {
        shortfalls.add(cap, why.to_string());
    }
    match reads {
        None | Some(Reads::OwnChild) => {}
        Some(Reads::EveryProcess) if !caps.has(Capability::SysPtrace) => shortfalls.add(
            Capability::SysPtrace,
            "to read the executables and memory of every process of the host (those of other users, \
             and those holding capabilities gleak lacks)"
                .into(),
        ),
        Some(Reads::EveryProcess) => {}
        Some(Reads::Process(pid)) => {
            if let Err(Denied) = may_read_process(pid) {
                if !caps.has(Capability::SysPtrace) {
                    shortfalls.add(Capability::SysPtrace, read_process_purpose(pid));
                }
                // With CAP_SYS_PTRACE, reading the target says why it was refused.
            }
        }
    }
    if let Err(limit) = memlock {
        shortfalls.add(Capability::SysResource, memlock_purpose(kernel, limit));
    }
    if shortfalls.missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingCapabilities(shortfalls))
    }
}

/// A read of another process that the kernel refused (EACCES/EPERM).
struct Denied;

/// Whether this process may read `pid` as gleak does: its executable and maps
/// (`ptrace_may_access(PTRACE_MODE_READ_FSCREDS)`), then its memory
/// (`process_vm_readv`: `PTRACE_MODE_ATTACH_REALCREDS`, which Yama can make
/// stricter). Any other failure (no such process) is left to the attach to report.
fn may_read_process(pid: u32) -> Result<(), Denied> {
    let denied = |e: &io::Error| matches!(e.raw_os_error(), Some(nix::libc::EACCES | nix::libc::EPERM));
    if let Err(e) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        return if denied(&e) { Err(Denied) } else { Ok(()) };
    }
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(maps) => maps,
        Err(e) if denied(&e) => return Err(Denied),
        Err(_) => return Ok(()),
    };
    let first = maps.split('-').next().and_then(|a| usize::from_str_radix(a, 16).ok());
    let Some(addr) = first else { return Ok(()) };
    let mut byte = [0u8; 1];
    let local = &mut [io::IoSliceMut::new(&mut byte)];
    let remote = &[nix::sys::uio::RemoteIoVec { base: addr, len: 1 }];
    match nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid as i32), local, remote) {
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EACCES) => Err(Denied),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Locked memory (kernels before 5.11)
// ---------------------------------------------------------------------------

/// Below this, kernels that charge maps to RLIMIT_MEMLOCK fail gleak's: the
/// 8 MiB event ring, the 16 MiB stack map, and the rest with room to spare.
const MEMLOCK_ENOUGH: u64 = 64 << 20;

/// Raises RLIMIT_MEMLOCK to unlimited (raising the hard limit needs
/// `CAP_SYS_RESOURCE`). Only kernels before 5.11 care: there, a limit left too low
/// is `Err` with the soft limit in bytes.
fn raise_memlock_limit() -> Result<(), u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok() {
        return Ok(());
    }
    if !kernel_version().is_some_and(maps_charged_to_memlock) {
        return Ok(());
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft != RLIM_INFINITY && soft < MEMLOCK_ENOUGH => Err(soft),
        _ => Ok(()),
    }
}

fn memlock_purpose(kernel: Option<KernelVersion>, soft_limit: u64) -> String {
    format!(
        "to raise the locked-memory limit (RLIMIT_MEMLOCK, {} KiB now), which {} charges BPF maps to, as \
         every kernel before 5.11 does; or start gleak with an unlimited limit instead (ulimit -l unlimited, \
         systemd LimitMEMLOCK=infinity, docker run --ulimit memlock=-1)",
        soft_limit / 1024,
        kernel_label(kernel),
    )
}

fn memlock_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK).ok().map(|(soft, _)| soft)
}

// ---------------------------------------------------------------------------
// A system call failed: which capability did it want?
// ---------------------------------------------------------------------------

/// The errno at the end of a message such as "`perf_event_open` failed:
/// Permission denied (os error 13)".
fn errno_in(reason: &str) -> Option<i32> {
    let at = reason.rfind("(os error ")?;
    reason[at + "(os error ".len()..].split(')').next()?.parse().ok()
}

fn is_permission_errno(reason: &str) -> bool {
    matches!(errno_in(reason), Some(nix::libc::EACCES | nix::libc::EPERM))
}

/// One shortfall, with where to add it.
fn one(capability: Capability, needed_for: String) -> String {
    let Some(privileges) = Privileges::current() else {
        return format!("{capability} is needed {needed_for}");
    };
    let mut s = Shortfalls::new(privileges);
    s.add(capability, needed_for);
    s.to_string()
}

/// What loading needs that gleak lacks, if anything.
pub fn loading_shortfall() -> Option<(Capability, &'static str)> {
    let privileges = Privileges::current()?;
    let kernel = kernel_version();
    let (cap, why) = loading_capability(&privileges, kernel);
    let caps = privileges.effective;
    let able = kernel.map_or(caps.has(cap), |k| can_load_programs(caps, k));
    (!able).then_some((cap, why))
}

/// What to say after "loading the eBPF programs failed: {reason}.": the capability
/// `bpf()` wanted, the locked-memory limit of an old kernel, or the kernel feature.
pub fn explain_load_failure(reason: &str) -> String {
    if let Some((cap, why)) = loading_shortfall() {
        return one(cap, why.to_string());
    }
    let kernel = kernel_version();
    let old_kernel = kernel.is_some_and(maps_charged_to_memlock);
    let limit = memlock_limit().filter(|&l| l != nix::sys::resource::RLIM_INFINITY);
    // Before 5.11 a map over the limit fails with EPERM, and aya does not always
    // pass the errno on ("failed to create map").
    if let (true, Some(limit)) = (old_kernel && (is_permission_errno(reason) || reason.contains("create map")), limit) {
        return one(Capability::SysResource, memlock_purpose(kernel, limit));
    }
    if is_permission_errno(reason) {
        return "The kernel refused although gleak holds the capabilities for bpf(): a security module \
                (SELinux, AppArmor, a BPF LSM), kernel lockdown, or a seccomp filter (a container runtime's \
                default profile) refuses it"
            .to_string();
    }
    "gleak needs a kernel with BPF ring buffers (5.8+)".to_string()
}

/// What to say after "attaching uprobe … failed: {reason}.": the capability
/// `perf_event_open` wanted, or the kernel feature.
pub fn explain_attach_failure(reason: &str) -> String {
    if !is_permission_errno(reason) {
        return "The kernel needs CONFIG_UPROBE_EVENTS".to_string();
    }
    let Some(privileges) = Privileges::current() else {
        return "The kernel refused it: gleak lacks CAP_SYS_ADMIN (or CAP_PERFMON, on kernels that accept it) \
                or CAP_SYS_PTRACE"
            .to_string();
    };
    let caps = privileges.effective;
    let kernel = kernel_version();
    if !caps.has(Capability::SysAdmin) {
        let (cap, why) = uprobe_capability(&privileges, kernel);
        // Holding CAP_PERFMON and refused: this kernel wants CAP_SYS_ADMIN,
        // whatever its version says.
        let (cap, why) = if cap == Capability::Perfmon && caps.has(Capability::Perfmon) {
            (
                Capability::SysAdmin,
                format!(
                    "for uprobes on this kernel ({} refuses them to CAP_PERFMON, as kernels fixed for \
                     CVE-2025-38466 do: perf_uprobe_event_init() wants CAP_SYS_ADMIN)",
                    kernel_label(kernel)
                ),
            )
        } else {
            (cap, why)
        };
        return one(cap, why);
    }
    if !caps.has(Capability::SysPtrace) {
        // The probe names the target's executable through /proc/PID/exe, which the
        // kernel resolves only for a process gleak may ptrace-read.
        return one(
            Capability::SysPtrace,
            "to place uprobes in a process of another user, or one holding capabilities gleak lacks \
             (the kernel resolves its /proc/PID/exe for the probe)"
                .to_string(),
        );
    }
    "The kernel refused it although gleak holds CAP_SYS_ADMIN and CAP_SYS_PTRACE: a security module \
     (SELinux, AppArmor, a BPF LSM), kernel lockdown, or a seccomp filter (a container runtime's default \
     profile) refuses perf_event_open"
        .to_string()
}

/// What to say after "cannot read /proc/PID/…: Permission denied".
pub fn explain_process_denied(pid: u32) -> String {
    match Privileges::current() {
        Some(p) if !p.effective.has(Capability::SysPtrace) => one(Capability::SysPtrace, read_process_purpose(pid)),
        Some(_) => "refused although gleak holds CAP_SYS_PTRACE: is the process in another PID namespace, or \
                    protected by a security module (Yama, SELinux, AppArmor)?"
            .to_string(),
        None => format!("CAP_SYS_PTRACE is needed {}", read_process_purpose(pid)),
    }
}

// ---------------------------------------------------------------------------
// The command under `gleak run`
// ---------------------------------------------------------------------------

/// Lowers gleak's own capabilities from the ambient set, so that a command gleak
/// starts (`gleak run`) does not inherit them: a non-root gleak holds them as
/// ambient capabilities, which survive `execve`. Async-signal-safe (only `prctl`):
/// call it between fork and exec.
pub fn keep_capabilities_from_command() {
    const PR_CAP_AMBIENT: nix::libc::c_int = 47;
    const PR_CAP_AMBIENT_LOWER: nix::libc::c_ulong = 3;
    for cap in Capability::ALL {
        // SAFETY: prctl with integer arguments only. Lowering one that is not in
        // the set succeeds; a kernel without ambient capabilities (before 4.3)
        // has none to pass on, and its EINVAL is fine.
        unsafe { nix::libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap as nix::libc::c_ulong, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(major: u8, minor: u8, patch: u16) -> KernelVersion {
        KernelVersion::new(major, minor, patch)
    }

    #[test]
    fn uprobes_need_sys_admin_before_5_8_and_since_the_cve_fix() {
        for (kernel, want) in [
            (k(5, 4, 300), true),
            (k(5, 7, 19), true),
            (k(5, 8, 0), false),
            (k(5, 10, 239), false),
            (k(5, 10, 240), true),
            (k(5, 11, 22), false),
            (k(5, 15, 188), false),
            (k(5, 15, 189), true),
            (k(6, 1, 145), false),
            (k(6, 1, 146), true),
            (k(6, 6, 99), true),
            (k(6, 12, 38), false),
            (k(6, 12, 39), true),
            (k(6, 14, 11), false),
            (k(6, 15, 6), false),
            (k(6, 15, 7), true),
            (k(6, 16, 0), true),
            (k(6, 18, 44), true),
        ] {
            assert_eq!(uprobes_need_sys_admin(kernel), want, "{kernel}");
        }
    }

    #[test]
    fn minimal_sets_per_kernel_and_command() {
        use Capability::*;
        // Unpatched 5.10 with the default 64 KiB memlock limit: the split capabilities.
        assert_eq!(minimal_set(k(5, 10, 200), true, false), [Bpf, Perfmon, SysPtrace, SysResource]);
        // Patched 5.10: CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON.
        assert_eq!(minimal_set(k(5, 10, 240), true, false), [SysAdmin, SysPtrace, SysResource]);
        assert_eq!(minimal_set(k(5, 10, 240), true, true), [SysAdmin, SysPtrace]);
        assert_eq!(minimal_set(k(6, 1, 100), false, false), [Bpf, Perfmon]);
        assert_eq!(minimal_set(k(6, 18, 44), true, false), [SysAdmin, SysPtrace]);
        assert_eq!(minimal_set(k(6, 18, 44), false, false), [SysAdmin]);
        assert_eq!(minimal_set(k(5, 4, 0), true, false), [SysAdmin, SysPtrace, SysResource]);
    }

    #[test]
    fn what_lets_gleak_load_and_open_uprobes() {
        use Capability::*;
        let caps = |c: &[Capability]| CapSet::of(c);
        assert!(can_load_programs(caps(&[Bpf]), k(5, 8, 0)));
        assert!(!can_load_programs(caps(&[Bpf]), k(5, 7, 0)), "no CAP_BPF before 5.8");
        assert!(can_load_programs(caps(&[SysAdmin]), k(6, 18, 0)));
        assert!(can_open_uprobes(caps(&[Perfmon]), k(6, 12, 38)));
        assert!(!can_open_uprobes(caps(&[Perfmon]), k(6, 12, 39)));
        assert!(can_open_uprobes(caps(&[SysAdmin]), k(6, 12, 39)));
    }

    #[test]
    fn capability_sets_as_proc_shows_them() {
        // CapEff of uid 0 holding CAP_SYS_ADMIN and CAP_SYS_PTRACE only.
        let set = CapSet(0x0000_0000_0028_0000);
        assert!(set.has(Capability::SysAdmin) && set.has(Capability::SysPtrace));
        assert!(!set.has(Capability::Bpf) && !set.has(Capability::Perfmon));
        assert_eq!(CapSet::of(&[Capability::SysAdmin, Capability::SysPtrace]), set);
    }

    #[test]
    fn errno_of_a_system_call_error() {
        assert_eq!(errno_in("`perf_event_open` failed: Permission denied (os error 13)"), Some(13));
        assert_eq!(errno_in("failed to create map `EVENTS`"), None);
        assert!(is_permission_errno("`bpf_prog_load` failed: Operation not permitted (os error 1)"));
        assert!(!is_permission_errno("invalid func unknown#174 (os error 22)"));
    }

    fn shortfalls(euid: u32, effective: &[Capability], bounding: &[Capability], missing: &[Capability]) -> String {
        let privileges = Privileges { euid, effective: CapSet::of(effective), bounding: CapSet::of(bounding) };
        let mut s = Shortfalls::new(privileges);
        for &c in missing {
            s.add(c, "for a test".into());
        }
        s.to_string()
    }

    #[test]
    fn uid_0_is_told_where_the_capability_went_not_to_be_root() {
        use Capability::*;
        let text = shortfalls(0, &[SysPtrace], &[SysPtrace], &[SysAdmin]);
        assert!(text.starts_with("CAP_SYS_ADMIN is needed for a test."), "{text}");
        assert!(text.contains("bounding set"), "{text}");
        assert!(!text.contains("root") && !text.contains("sudo"), "{text}");
    }

    #[test]
    fn a_user_with_some_capabilities_is_told_which_to_add() {
        use Capability::*;
        let text = shortfalls(1000, &[SysAdmin], &Capability::ALL, &[SysPtrace]);
        assert!(text.contains("Add CAP_SYS_PTRACE") && text.contains("--ambient-caps=+sys_ptrace"), "{text}");
        assert!(!text.contains("root") && !text.contains("sudo"), "{text}");
        let text = shortfalls(1000, &[], &Capability::ALL, &[SysAdmin, SysPtrace]);
        assert!(text.contains("sudo") && text.contains("CAP_SYS_ADMIN and CAP_SYS_PTRACE"), "{text}");
    }

    #[test]
    fn a_capability_needed_twice_is_named_once() {
        let privileges = Privileges { euid: 0, effective: CapSet(0), bounding: CapSet(0) };
        let mut s = Shortfalls::new(privileges);
        s.add(Capability::SysAdmin, "for uprobes".into());
        s.add(Capability::SysAdmin, "to load".into());
        assert_eq!(s.capabilities(), [Capability::SysAdmin]);
        assert!(s.to_string().starts_with("CAP_SYS_ADMIN is needed for uprobes and to load."), "{s}");
    }
}
