//! arm64: Go's internal ABI keeps integer arguments and results in R0–R15, the
//! current g in R28, the frame pointer in R29 (`abi-internal.md`, "arm64
//! architecture"). The kernel hands a uprobe `user_pt_regs`: `regs[0..31]` are
//! X0–X30, then `sp`, `pc`, `pstate`.

use aya_ebpf::{bindings::pt_regs, programs::ProbeContext};

/// Go's arm64 register of the current g.
const G_REGISTER: usize = 28;
/// Go's arm64 frame pointer register.
const FRAME_POINTER_REGISTER: usize = 29;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: a uprobe's context points at the probed thread's saved registers.
    unsafe { &*ctx.regs }
}

/// The result of the call that just returned (or that a RET is returning).
#[inline(always)]
pub fn result(ctx: &ProbeContext) -> u64 {
    regs(ctx).regs[0]
}

/// The first integer argument, at a function's entry or at a call.
#[inline(always)]
pub fn first_argument(ctx: &ProbeContext) -> u64 {
    regs(ctx).regs[0]
}

/// The second integer argument, at a function's entry or at a call.
#[inline(always)]
pub fn second_argument(ctx: &ProbeContext) -> u64 {
    regs(ctx).regs[1]
}

/// The third integer argument, at a function's entry or at a call.
#[inline(always)]
pub fn third_argument(ctx: &ProbeContext) -> u64 {
    regs(ctx).regs[2]
}

/// The g of the goroutine running (g0 on the system stack).
#[inline(always)]
pub fn current_g(ctx: &ProbeContext) -> u64 {
    regs(ctx).regs[G_REGISTER]
}

/// The frame pointer: where the current frame's record is.
#[inline(always)]
pub fn frame_pointer(ctx: &ProbeContext) -> u64 {
    regs(ctx).regs[FRAME_POINTER_REGISTER]
}

/// A frame record, as word indexes. Go's arm64 prologue (cmd/internal/obj/arm64,
/// obj7.go) is `MOVD.W R30, -framesize(RSP); MOVD R29, -8(RSP); SUB $8, RSP, R29`
/// (or the same with STP for large frames): the caller's frame pointer at [R29],
/// the saved link register (the return address) at [R29+8], the layout of x86-64
/// (runtime/traceback.go says so; runtime.fpTracebackPCs relies on it).
pub const SAVED_FRAME_POINTER: usize = 0;
pub const RETURN_ADDRESS: usize = 1;
