//! Goroutine death: a uprobe in `runtime.gdestroy` (Go ≥ 1.22; it also sees
//! coroutine exits) or `runtime.goexit0` (older Go), on its first
//! `CALL runtime.casgstatus(gp, _Grunning, _Gdead)` (emulated by the kernel: one
//! trap) or else on its entry. Both run on g0 with the dying g as their first
//! argument (and `casgstatus`'s).
//!
//! A death is the dying `g`'s address alone: the user side knows which goroutine
//! owns each `g`, so this probe needs neither the target's layout nor a read of
//! its memory. Deaths are gathered per CPU and sent [`BATCH`] at a time (see
//! `gleak_common::BatchHeader`). The probe is attached per process, so it runs in traced ones only.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray, programs::ProbeContext};
use gleak_common::{counter, ExitBatch, ExitRecord, BATCH};

use crate::{
    arch,
    maps::batch_filled,
    target::{target_pid, uprobe_per_cookie_source, CookieSource},
};

const _: () = assert!(BATCH.is_power_of_two());

/// Per CPU, the batch being filled; user space reads it too (see
/// `gleak_common::BatchHeader`).
#[map]
static PENDING_EXITS: PerCpuArray<ExitBatch> = PerCpuArray::with_max_entries(1, 0);

uprobe_per_cookie_source! { goroutine_exit, goroutine_exit_tgid => on_exit }

#[inline(always)]
fn on_exit<S: CookieSource>(ctx: &ProbeContext) -> u32 {
    let Some(pid) = target_pid::<S, _>(ctx) else { return 0 };
    let Some(batch) = PENDING_EXITS.get_ptr_mut(0) else { return 0 };
    // Per-CPU: no other writer unless the kernel preempts this program (a
    // preemptible kernel), when a death can be lost or sent twice. Twice is
    // harmless (user space applies a death to a g's owner once), and a lost one
    // is found in memory, as with a full ring buffer.
    let batch = unsafe { &mut *batch };
    let slot = batch.header.count as usize & (BATCH - 1);
    batch.exits[slot] =
        ExitRecord { g_addr: arch::first_argument(ctx), ts_ns: unsafe { bpf_ktime_get_ns() }, pid, _pad: 0 };
    batch_filled(batch, slot, Some(counter::EXITS_LOST));
    0
}
