//! x86-64: Go's internal ABI keeps integer arguments and results in RAX, RBX,
//! RCX, RDI, RSI, R8–R11, the current g in R14, the frame pointer in RBP.

use aya_ebpf::{bindings::pt_regs, programs::ProbeContext};

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: a uprobe's context points at the probed thread's saved registers.
    unsafe { &*ctx.regs }
}

/// The result of the call that just returned (or that a RET is returning).
#[inline(always)]
pub fn result(ctx: &ProbeContext) -> u64 {
    regs(ctx).rax
}

/// The first integer argument, at a function's entry or at a call.
#[inline(always)]
pub fn first_argument(ctx: &ProbeContext) -> u64 {
    regs(ctx).rax
}

/// The second integer argument, at a function's entry or at a call.
#[inline(always)]
pub fn second_argument(ctx: &ProbeContext) -> u64 {
    regs(ctx).rbx
}

/// The third integer argument, at a function's entry or at a call.
#[inline(always)]
pub fn third_argument(ctx: &ProbeContext) -> u64 {
    regs(ctx).rcx
}

/// The g of the goroutine running (g0 on the system stack).
#[inline(always)]
pub fn current_g(ctx: &ProbeContext) -> u64 {
    regs(ctx).r14
}

/// The frame pointer: where the current frame's record is.
#[inline(always)]
pub fn frame_pointer(ctx: &ProbeContext) -> u64 {
    regs(ctx).rbp
}

/// A frame record, as word indexes: the caller's frame pointer (the prologue's
/// PUSHQ BP), then the return address the CALL pushed.
pub const SAVED_FRAME_POINTER: usize = 0;
pub const RETURN_ADDRESS: usize = 1;
