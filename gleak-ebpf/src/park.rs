//! Goroutine blocking: a uprobe on the entry of `runtime.gopark`, on the parking
//! goroutine's own stack (R14 = g), wait reason in the low byte of RCX.
//!
//! Opt-in (`--trace-parks`): it fires on every blocking channel or lock operation.
//! The entry may fire twice when the stack grows in the prologue; the event is
//! idempotent (same g, same reason), so the user side just overwrites.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use gleak_common::EventKind;

use crate::maps::{current_pid, emit, read_u64, target_config};

#[uprobe]
pub fn goroutine_park(ctx: ProbeContext) -> u32 {
    let pid = current_pid();
    let Some(cfg) = target_config(&ctx, pid) else {
        return 0;
    };
    let regs = unsafe { &*ctx.regs };
    let g = regs.r14;
    let reason = (regs.rcx & 0xff) as u32;
    if let Some(goid) = read_u64(g, cfg.g_goid) {
        emit(EventKind::Park, pid, goid, g, |e| e.wait_reason = reason);
    }
    0
}
