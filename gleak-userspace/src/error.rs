//! Errors of the tracing library. Each says what went wrong and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with PID {0} (it may have exited)")]
    NoSuchProcess(u32),

    /// `hint` says what to do: for a refusal, the capability it wanted
    /// ([`crate::tracing::privilege::explain_process_denied`]).
    #[error("cannot read {path}: {cause}; {hint}")]
    ProcAccess { path: PathBuf, cause: std::io::Error, hint: String },

    #[error("PID {pid}: {path} is position-independent but its mapping is not in /proc/{pid}/maps")]
    NoMapping { pid: u32, path: PathBuf },

    #[error("PID {0} has no executable (a kernel thread?)")]
    NoExecutable(u32),

    #[error("cannot read the binary {path}: {cause}")]
    Binary { path: PathBuf, cause: std::io::Error },

    #[error("{path} is not an ELF executable: {reason}")]
    NotElf { path: PathBuf, reason: String },

    #[error("{path} is not a Go program (no .go.buildinfo section and no Go runtime symbols)")]
    NotGo { path: PathBuf },

    #[error("{path} was built with {version}; gleak supports Go 1.19 and later")]
    UnsupportedGoVersion { path: PathBuf, version: String },

    #[error("{path} has no usable function table ({reason}) and no symbol table; gleak cannot place its probes")]
    NoFunctionTable { path: PathBuf, reason: String },

    #[error("{path} has no DWARF debug info")]
    NoDwarf { path: PathBuf },

    #[error(
        "{path} was built with {version}, newer than the runtime tables of this gleak (up to Go 1.{newest}), \
         and has no DWARF to read the layout from; upgrade gleak, or build the target without -ldflags=-w"
    )]
    UnknownRelease { path: PathBuf, version: String, newest: u32 },

    #[error("{path}: Go runtime symbol {symbol} not found")]
    MissingSymbol { path: PathBuf, symbol: String },

    #[error("{path}: DWARF has no {what}")]
    MissingDwarf { path: PathBuf, what: String },

    #[error("{path}: cannot read DWARF: {reason}")]
    Dwarf { path: PathBuf, reason: String },

    #[error("{path}: cannot decode the machine code at {symbol}; refusing to place a breakpoint there")]
    Undecodable { path: PathBuf, symbol: String },

    #[error("{path}: no RET instruction found in {symbol}")]
    NoReturn { path: PathBuf, symbol: String },

    #[error("{path}: a uprobe cannot sit at {site}: {why}")]
    Unprobeable { path: PathBuf, site: String, why: &'static str },

    #[error("only {supported} targets are supported for now ({path} is {arch})", supported = crate::arch::supported())]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error(
        "{path} is an {target} program and this gleak is built for {host}: its probes read {host} registers. \
         Run gleak-{target}-linux on an {target} host (a program emulated on another architecture cannot be traced)"
    )]
    ForeignArch { path: PathBuf, target: &'static str, host: &'static str },

    #[error(
        "gleak was built without its eBPF programs (no eBPF toolchain at build time). \
         Run scripts/bootstrap.sh to install rustc-web, libstd-rust-web-dev-bpf and bpf-linker, then rebuild"
    )]
    NoEbpfObject,

    /// The advice after the reason names the capability a refused `bpf()` wanted,
    /// or the kernel feature ([`crate::tracing::privilege::explain_load_failure`]).
    #[error("loading the eBPF programs failed: {0}. {advice}", advice = crate::tracing::privilege::explain_load_failure(.0))]
    Load(String),

    /// The advice after the reason names the capability a refused
    /// `perf_event_open` wanted, or the kernel feature
    /// ([`crate::tracing::privilege::explain_attach_failure`]).
    #[error(
        "attaching uprobe {probe} to {path} failed: {reason}. {advice}",
        advice = crate::tracing::privilege::explain_attach_failure(.reason)
    )]
    Attach { probe: String, path: PathBuf, reason: String },

    /// Found up front ([`crate::tracing::privilege::preflight`]): each capability gleak
    /// lacks, what for, and where to add it.
    #[error("{0}")]
    MissingCapabilities(crate::tracing::privilege::Shortfalls),

    #[error(
        "this kernel has no uprobe support ({what} is missing); gleak needs CONFIG_UPROBE_EVENTS=y and BPF ring \
         buffers (Linux 5.8+)"
    )]
    NoUprobes { what: String },

    #[error("reading memory of PID {pid} failed: {cause}")]
    ReadMemory { pid: u32, cause: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// gleak's exit codes, as `gleak --help` and the README list them.
pub mod exit_code {
    /// No leak (or, under `gleak run`, the command's own status).
    pub const OK: i32 = 0;
    /// `gleak run`: a site reached `--fail-on`.
    pub const LEAK: i32 = 1;
    /// Bad usage, or an error of no class below.
    pub const USAGE: i32 = 2;
    /// No such process (or it exited before gleak could attach).
    pub const NO_PROCESS: i32 = 3;
    /// The target is not a Go program gleak can trace (not ELF, not Go, Go < 1.19,
    /// unknown release without DWARF, unreadable binary, neither x86_64 nor aarch64).
    pub const NOT_TRACEABLE: i32 = 4;
    /// Not permitted: a capability is missing (CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON
    /// on kernels that accept them for uprobes; CAP_SYS_PTRACE; CAP_SYS_RESOURCE before 5.11).
    pub const PERMISSION: i32 = 5;
    /// The kernel or this build of gleak lacks what tracing needs (uprobes, BPF ring
    /// buffers, the eBPF object).
    pub const UNSUPPORTED_SYSTEM: i32 = 6;
    /// The probe points cannot be found or placed safely in this binary.
    pub const NO_PROBE_POINT: i32 = 7;
    /// A bug in gleak (an unexpected panic), said in one line (EX_SOFTWARE).
    pub const INTERNAL: i32 = 70;
    /// `gleak run` stopped by SIGHUP with no leak found (128 + SIGHUP).
    pub const HANGUP: i32 = 129;
    /// `gleak run` stopped by Ctrl-C (SIGINT) with no leak found (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
    /// `gleak run` stopped by SIGTERM with no leak found (128 + SIGTERM).
    pub const TERMINATED: i32 = 143;
}

impl Error {
    /// The exit code this error ends gleak with.
    pub fn exit_code(&self) -> i32 {
        use exit_code::*;
        match self {
            Error::NoSuchProcess(_) | Error::NoExecutable(_) => NO_PROCESS,
            Error::ProcAccess { cause, .. } if cause.kind() == std::io::ErrorKind::PermissionDenied => PERMISSION,
            Error::ProcAccess { .. } | Error::NoMapping { .. } | Error::ReadMemory { .. } => NO_PROCESS,
            Error::Binary { .. }
            | Error::NotElf { .. }
            | Error::NotGo { .. }
            | Error::UnsupportedGoVersion { .. }
            | Error::UnknownRelease { .. }
            | Error::UnsupportedArch { .. }
            | Error::ForeignArch { .. }
            | Error::NoFunctionTable { .. }
            | Error::NoDwarf { .. }
            | Error::MissingDwarf { .. }
            | Error::Dwarf { .. } => NOT_TRACEABLE,
            Error::MissingCapabilities(_) => PERMISSION,
            Error::NoUprobes { .. } => UNSUPPORTED_SYSTEM,
            Error::MissingSymbol { .. }
            | Error::Undecodable { .. }
            | Error::NoReturn { .. }
            | Error::Unprobeable { .. } => NO_PROBE_POINT,
            Error::Load(reason) | Error::Attach { reason, .. } if is_permission(reason) => PERMISSION,
            // aya does not always pass the errno on ("failed to create map").
            Error::Load(_) if crate::tracing::privilege::loading_shortfall().is_some() => PERMISSION,
            Error::NoEbpfObject | Error::Load(_) | Error::Attach { .. } => UNSUPPORTED_SYSTEM,
        }
    }
}

fn is_permission(reason: &str) -> bool {
    reason.contains("Operation not permitted") || reason.contains("Permission denied") || reason.contains("EPERM")
}
