//! Goroutine creation, where the new g is first complete: by preference the
//! `CALL runtime.runqput` in `runtime.newproc.func1` (new g in RBX; the kernel
//! emulates a CALL, so one trap instead of the two a single-stepped instruction
//! costs), else each RET of `runtime.newproc1` (new g in RAX), plus the instruction
//! after `CALL runtime.newproc1` in `runtime.newcoro` for coroutines (RAX).
//!
//! At these points `goid`, `gopc` and `startpc` are set, and we are still on g0
//! (R14), whose `m.curg` is the goroutine running the `go` statement. The user stack
//! taken here crosses `systemstack` into the creator's frames, so one hit gives the
//! whole creation path.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    macros::uprobe,
    programs::{tracing::StackIdContext, ProbeContext},
};
use gleak_common::{counter, EventKind, CONFIG_CAPTURE_STACKS};

use crate::maps::{bump, current_pid, emit, read_optional, read_u64, target_config, STACKS};

/// The new g in RAX (RET of newproc1, after CALL newproc1 in newcoro).
#[uprobe]
pub fn goroutine_create(ctx: ProbeContext) -> u32 {
    let newg = unsafe { (*ctx.regs).rax };
    on_create(&ctx, newg)
}

/// The new g in RBX (`runqput(pp, newg, true)` in newproc.func1).
#[uprobe]
pub fn goroutine_create_rbx(ctx: ProbeContext) -> u32 {
    let newg = unsafe { (*ctx.regs).rbx };
    on_create(&ctx, newg)
}

#[inline(always)]
fn on_create(ctx: &ProbeContext, newg: u64) -> u32 {
    let pid = current_pid();
    let Some(cfg) = target_config(ctx, pid) else {
        return 0;
    };
    let Some(goid) = read_u64(newg, cfg.g_goid) else {
        return 0;
    };
    let gopc = read_optional(newg, cfg.g_gopc).unwrap_or(0);
    let startpc = read_optional(newg, cfg.g_startpc).unwrap_or(0);
    let g0 = unsafe { (*ctx.regs).r14 };
    let parent_goid = creator_goid(g0, &cfg).unwrap_or(0);
    let stack_id = if cfg.flags & CONFIG_CAPTURE_STACKS != 0 {
        match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
            Ok(id) => id,
            Err(_) => {
                bump(counter::STACK_FAILED);
                -1
            }
        }
    } else {
        -1
    };
    emit(EventKind::Create, pid, goid, newg, |e| {
        e.parent_goid = parent_goid;
        e.gopc = gopc;
        e.startpc = startpc;
        e.stack_id = stack_id;
    });
    0
}

/// `g0.m.curg.goid`; `None` when no user goroutine runs (the main goroutine's birth).
#[inline(always)]
fn creator_goid(g0: u64, cfg: &gleak_common::TargetConfig) -> Option<u64> {
    let m = read_optional(g0, cfg.g_m)?;
    if m == 0 {
        return None;
    }
    let curg = read_optional(m, cfg.m_curg)?;
    if curg == 0 {
        return None;
    }
    read_optional(curg, cfg.g_goid)
}
