//! Goroutine death: a uprobe in `runtime.gdestroy` (Go ≥ 1.22; it also sees
//! coroutine exits) or `runtime.goexit0` (older Go), on its first
//! `CALL runtime.casgstatus(gp, _Grunning, _Gdead)` (emulated by the kernel: one
//! trap) or else on its entry. Both run on g0 with the dying g in RAX, whose `goid`
//! is still intact.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use gleak_common::EventKind;

use crate::maps::{current_pid, emit, read_u64, target_config};

#[uprobe]
pub fn goroutine_exit(ctx: ProbeContext) -> u32 {
    let pid = current_pid();
    let Some(cfg) = target_config(&ctx, pid) else {
        return 0;
    };
    let gp = unsafe { (*ctx.regs).rax };
    if let Some(goid) = read_u64(gp, cfg.g_goid) {
        emit(EventKind::Exit, pid, goid, gp, |_| {});
    }
    0
}
