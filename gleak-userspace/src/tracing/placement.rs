//! Where each probe goes in a given binary: the cheapest instruction that sees what
//! the probe needs, found by decoding the code, with a safe fallback.
//!
//! A uprobe on most instructions costs two traps (the breakpoint, then a single
//! step of the displaced instruction); on a CALL the kernel emulates the call
//! instead, one trap. So the default sites are CALLs whose arguments carry the g.
//!
//! Code is decoded through the binary's [`crate::arch`]; a site's program is
//! chosen by where, in Go's calling convention, the g is there, and each
//! architecture's probes read that role from its own register. Labels name
//! instructions as Go's assembler does on every architecture (`CALL`, `RET`).
//!
//! A uretprobe rewrites the return address on the stack; Go copies goroutine
//! stacks and the target then crashes, so "return" probes are plain uprobes on
//! each RET.

use crate::{
    binary::{GoBinary, Symbol},
    error::{Error, Result},
};

// The eBPF programs, by the name of their function in `gleak-ebpf`; what each
// reads is a role in Go's calling convention, never a register.

/// A creation: the new g is the result of the call that just returned (or that
/// a RET is returning).
pub const PROBE_CREATE_RESULT: &str = "goroutine_create_result";
/// A creation: the new g is the second argument of the call about to be made.
pub const PROBE_CREATE_ARG2: &str = "goroutine_create_arg2";
/// A death: the dying g is the first argument (at a function's entry or a call).
pub const PROBE_EXIT: &str = "goroutine_exit";
/// A park at `gopark`'s entry: the current g, and the wait reason as its third argument.
pub const PROBE_PARK: &str = "goroutine_park";
/// A park at `gopark`'s call of `mcall`: the current g, whose wait reason is stored.
pub const PROBE_PARK_MCALL: &str = "goroutine_park_mcall";
/// The process exiting: the current g.
pub const PROBE_PROCESS_EXIT: &str = "process_exit";

/// What to attach to a target.
#[derive(Clone, Copy, Debug)]
pub struct AttachOptions {
    /// Record the user stack at each creation (one `bpf_get_stackid` per `go`).
    pub capture_stacks: bool,
    /// Probe `runtime.gopark` too: exact block times, one more hit per blocking op.
    pub trace_parks: bool,
    /// Stop the process (SIGSTOP) when it calls `runtime.exit`, so its goroutines can
    /// be read before it is gone. Only for a child gleak started (`gleak run`).
    pub stop_at_exit: bool,
    /// Probe function entries and RETs only, not the cheaper CALL sites (for
    /// comparison, or should a future Go change the code shape the CALL search expects).
    pub classic_sites: bool,
    /// Prove, at each report, which blocked goroutines can never run again (reads
    /// the target's heap; see [`crate::analysis::proof`]).
    pub prove: bool,
    /// Probe goroutine exits. Without it (one probe hit per goroutine instead of
    /// two) exits are read from memory: a new goroutine on a dead one's `g` (Go
    /// reuses them at once) and, every second, the statuses of the live ones.
    pub exit_probe: bool,
    /// Attach the uprobes. Without them (`gleak audit`'s first tier) the target
    /// is only read from memory at each report: nothing on its hot path.
    pub probes: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            capture_stacks: true,
            trace_parks: false,
            stop_at_exit: false,
            classic_sites: false,
            prove: true,
            exit_probe: true,
            probes: true,
        }
    }
}

/// One uprobe to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// The eBPF program (`gleak_ebpf` function name).
    pub program: &'static str,
    /// Human-readable place, e.g. `runtime.newproc.func1+0x40 (CALL runtime.runqput)`.
    pub label: String,
    /// Link-time virtual address.
    pub vaddr: u64,
}

/// How far into the exit function its `casgstatus` call may be (it is the first
/// statement): further means an unknown shape, so use the entry.
const MAX_PROLOGUE: u64 = 0x80;

/// `runqput(pp, newg, next)`: the new g is its second argument (numbered from 0),
/// which [`PROBE_CREATE_ARG2`] reads.
const RUNQPUT_NEWG: usize = 1;

/// The sites to probe in `bin`, in attach order: exit (and park, and process exit)
/// before creation, so that every goroutine seen born is also seen die.
pub fn plan(bin: &GoBinary, opts: AttachOptions) -> Result<Vec<ProbeSite>> {
    let mut sites = Vec::new();
    if opts.exit_probe {
        sites.push(exit_site(bin, opts.classic_sites)?);
    }
    if opts.trace_parks {
        sites.push(park_site(bin, opts.classic_sites)?);
    }
    if opts.stop_at_exit {
        let exit = bin.require_function("runtime.exit.abi0")?;
        sites.push(site(PROBE_PROCESS_EXIT, "runtime.exit".into(), exit.addr));
        // -race builds leave through the race runtime's C exit instead.
        if let Some(racefini) = bin.function("runtime.racefini") {
            sites.push(site(PROBE_PROCESS_EXIT, "runtime.racefini".into(), racefini.addr));
        }
    }
    sites.extend(create_sites(bin, opts.classic_sites)?);
    // Every site chosen is one the kernel accepts (on arm64 it refuses e.g.
    // exclusive loads/stores): refuse rather than fail at attach, or worse.
    for s in &sites {
        // One instruction's bytes, or fewer at the very end of the code.
        let why = match (1..=4).rev().find_map(|len| bin.bytes_at(s.vaddr, len)) {
            Some(bytes) => bin.arch.unprobeable(bytes, 0),
            None => Some("not in the binary's code"),
        };
        if let Some(why) = why {
            return Err(Error::Unprobeable { path: bin.path.clone(), site: s.label.clone(), why });
        }
    }
    Ok(sites)
}

fn site(program: &'static str, label: String, vaddr: u64) -> ProbeSite {
    ProbeSite { program, label, vaddr }
}

fn undecodable(bin: &GoBinary, func: &str, at: u64) -> Error {
    Error::Undecodable { path: bin.path.clone(), symbol: format!("{func}+{at:#x}") }
}

fn code<'a>(bin: &'a GoBinary, func: &str) -> Result<(Symbol, &'a [u8])> {
    bin.function_code(func)
}

/// gopark's `CALL runtime.mcall(park_m)` (g.waitreason stored by then), else its entry.
fn park_site(bin: &GoBinary, classic: bool) -> Result<ProbeSite> {
    let (sym, bytes) = code(bin, "runtime.gopark")?;
    if let Some(mcall) = bin.function("runtime.mcall").filter(|_| !classic) {
        let calls =
            bin.arch.call_offsets(bytes, sym.addr, mcall.addr).map_err(|at| undecodable(bin, "runtime.gopark", at))?;
        if let [off] = calls[..] {
            return Ok(site(PROBE_PARK_MCALL, format!("runtime.gopark+{off:#x} (CALL runtime.mcall)"), sym.addr + off));
        }
    }
    Ok(site(PROBE_PARK, "runtime.gopark".into(), sym.addr))
}

/// `gdestroy` (Go ≥ 1.22) or `goexit0`: its first `casgstatus` call, else its entry.
fn exit_site(bin: &GoBinary, classic: bool) -> Result<ProbeSite> {
    let func = if bin.function("runtime.gdestroy").is_some() { "runtime.gdestroy" } else { "runtime.goexit0" };
    let (sym, bytes) = code(bin, func)?;
    if let Some(casgstatus) = bin.function("runtime.casgstatus").filter(|_| !classic) {
        let calls = bin.arch.call_offsets(bytes, sym.addr, casgstatus.addr).map_err(|at| undecodable(bin, func, at))?;
        if let Some(&off) = calls.first().filter(|&&off| off <= MAX_PROLOGUE) {
            return Ok(site(PROBE_EXIT, format!("{func}+{off:#x} (CALL runtime.casgstatus)"), sym.addr + off));
        }
    }
    // casgstatus inlined (PGO) or an unknown shape: the entry (g still the first argument).
    Ok(site(PROBE_EXIT, func.to_string(), sym.addr))
}

/// The `runqput` call in `newproc.func1` (+ coroutine creation in `newcoro`), else
/// every RET of `newproc1`.
fn create_sites(bin: &GoBinary, classic: bool) -> Result<Vec<ProbeSite>> {
    let (newproc1, newproc1_code) = code(bin, "runtime.newproc1")?;
    let fast = match (code(bin, "runtime.newproc.func1"), bin.function("runtime.runqput").filter(|_| !classic)) {
        (Ok((func1, bytes)), Some(runqput)) => bin
            .arch
            .call_passing_result(bytes, func1.addr, newproc1.addr, runqput.addr, RUNQPUT_NEWG)
            .map_err(|at| undecodable(bin, "runtime.newproc.func1", at))?
            .map(|off| (func1.addr, off)),
        _ => None,
    };
    // Coroutines (iter.Pull) call newproc1 from newcoro, or from its systemstack
    // closure (Go ≥ 1.26).
    let mut coro = None;
    for func in ["runtime.newcoro", "runtime.newcoro.func1"] {
        if let Ok((sym, bytes)) = code(bin, func) {
            let after =
                bin.arch.after_first_call(bytes, sym.addr, newproc1.addr).map_err(|at| undecodable(bin, func, at))?;
            // The instruction after the call is whatever the compiler put there.
            if let Some(off) = after.filter(|&off| bin.arch.unprobeable(bytes, off).is_none()) {
                coro = Some((func, sym.addr, off));
                break;
            }
        }
    }
    let newcoro_linked = bin.function("runtime.newcoro").is_some();
    if let Some((func1, off)) = fast {
        if coro.is_some() || !newcoro_linked {
            let mut sites = vec![site(
                PROBE_CREATE_ARG2,
                format!("runtime.newproc.func1+{off:#x} (CALL runtime.runqput)"),
                func1 + off,
            )];
            if let Some((func, addr, off)) = coro {
                sites.push(site(
                    PROBE_CREATE_RESULT,
                    format!("{func}+{off:#x} (after CALL runtime.newproc1)"),
                    addr + off,
                ));
            }
            return Ok(sites);
        }
    }
    // Fallback, for every caller of newproc1 at once.
    let rets =
        bin.arch.ret_offsets(newproc1_code, newproc1.addr).map_err(|at| undecodable(bin, "runtime.newproc1", at))?;
    if rets.is_empty() {
        return Err(Error::NoReturn { path: bin.path.clone(), symbol: "runtime.newproc1".into() });
    }
    Ok(rets
        .into_iter()
        .map(|off| site(PROBE_CREATE_RESULT, format!("runtime.newproc1+{off:#x} (RET)"), newproc1.addr + off))
        .collect())
}
