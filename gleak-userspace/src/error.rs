//! Errors of the tracing library. Each says what went wrong and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with PID {0} (it may have exited)")]
    NoSuchProcess(u32),

    #[error("cannot read {path}: {cause}; {hint}")]
    ProcAccess { path: PathBuf, cause: std::io::Error, hint: &'static str },

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

    #[error("{path} has no symbol table (built with -ldflags=-s?); gleak needs symbols to place its probes for now")]
    Stripped { path: PathBuf },

    #[error("{path} has no DWARF debug info (built with -ldflags=-w?); gleak needs it for runtime.g offsets for now")]
    NoDwarf { path: PathBuf },

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

    #[error("only x86_64 targets are supported for now ({path} is {arch})")]
    UnsupportedArch { path: PathBuf, arch: String },

    #[error(
        "gleak was built without its eBPF programs (no eBPF toolchain at build time). \
         Run scripts/bootstrap.sh to install rustc-web, libstd-rust-web-dev-bpf and bpf-linker, then rebuild"
    )]
    NoEbpfObject,

    #[error("loading the eBPF programs failed: {0}. gleak needs root (CAP_BPF, CAP_PERFMON) and a kernel with BPF ring buffers (5.8+)")]
    Load(String),

    #[error(
        "attaching uprobe {probe} to {path} failed: {reason}. The kernel needs CONFIG_UPROBE_EVENTS and gleak needs root"
    )]
    Attach { probe: String, path: PathBuf, reason: String },

    #[error("reading memory of PID {pid} failed: {cause}")]
    ReadMemory { pid: u32, cause: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
