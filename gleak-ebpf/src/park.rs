//! Goroutine blocking, opt-in (`--trace-parks`: it fires on every blocking channel
//! or lock operation). On the parking goroutine's own stack (the current g is
//! the parking one), either
//! - at gopark's `CALL runtime.mcall(park_m)`, where `g.waitreason` is already
//!   stored (one trap: the kernel emulates the CALL), or
//! - at its entry, the wait reason (a `uint8`) its third argument. The entry may
//!   fire twice when the stack grows in the prologue; the user side ignores the
//!   repeat.

use aya_ebpf::programs::ProbeContext;
use gleak_common::EventKind;

use crate::{
    arch,
    maps::{emit, read_u64},
    target::{target_config, uprobe_per_cookie_source, CookieSource},
};

uprobe_per_cookie_source! { goroutine_park, goroutine_park_tgid => park_at_entry }
uprobe_per_cookie_source! { goroutine_park_mcall, goroutine_park_mcall_tgid => park_at_mcall }

#[inline(always)]
fn park_at_entry<S: CookieSource>(ctx: &ProbeContext) -> u32 {
    let Some((pid, cfg)) = target_config::<S>(ctx) else {
        return 0;
    };
    let g = arch::current_g(ctx);
    let reason = (arch::third_argument(ctx) & 0xff) as u32;
    if let Some(goid) = read_u64(g, cfg.g_goid) {
        emit(EventKind::Park, pid, goid, g, reason);
    }
    0
}

#[inline(always)]
fn park_at_mcall<S: CookieSource>(ctx: &ProbeContext) -> u32 {
    let Some((pid, cfg)) = target_config::<S>(ctx) else {
        return 0;
    };
    let g = arch::current_g(ctx);
    // One read after the other, each returning on failure: evaluated together,
    // LLVM kept the first value in a stack slot that the second's failure path
    // leaves unwritten, a read 5.10's verifier refuses ("invalid read from stack").
    let Some(goid) = read_u64(g, cfg.g_goid) else { return 0 };
    let Some(reason) = read_u64(g, cfg.g_waitreason) else { return 0 };
    emit(EventKind::Park, pid, goid, g, (reason & 0xff) as u32);
    0
}
