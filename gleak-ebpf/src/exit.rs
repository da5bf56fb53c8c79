//! Goroutine death: a uprobe in `runtime.gdestroy` (Go ≥ 1.22; it also sees
//! coroutine exits) or `runtime.goexit0` (older Go), on its first
//! `CALL runtime.casgstatus(gp, _Grunning, _Gdead)` (emulated by the kernel: one
//! trap) or else on its entry. Both run on g0 with the dying g in RAX.
//!
//! The event carries that `g`'s address alone: the user side knows which goroutine
//! owns each `g`, so this probe needs neither the target's layout nor a read of
//! the target's memory (each a helper call, on every goroutine's death). The
//! probe is attached per process, so it only runs in traced ones.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use gleak_common::EventKind;

use crate::maps::{current_pid, emit};

#[uprobe]
pub fn goroutine_exit(ctx: ProbeContext) -> u32 {
    let gp = unsafe { (*ctx.regs).rax };
    emit(EventKind::Exit, current_pid(), 0, gp, |_| {});
    0
}
