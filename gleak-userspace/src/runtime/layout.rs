//! Where the tracer finds things in the Go runtime's structures, whatever backend
//! (DWARF today, `.gopclntab` + per-version tables for stripped binaries) produced it.
//! The offset types are also sections of the per-release data files
//! ([`crate::runtime::gotables`]), hence their serde derives.

use gleak_common::TargetConfig;
use serde::{Deserialize, Serialize};

/// Byte offsets into `runtime.g` and `runtime.m` of one binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeLayout {
    pub g_stack_lo: u32,
    pub g_stack_hi: u32,
    pub g_m: u32,
    pub g_status: u32,
    pub g_goid: u32,
    pub g_waitsince: u32,
    pub g_waitreason: u32,
    /// Go ≥ 1.21 only.
    pub g_parent_goid: Option<u32>,
    pub g_gopc: u32,
    pub g_startpc: u32,
    pub m_curg: u32,
    /// `m.procid`: the thread id of the M (to read a stopped thread's registers).
    pub m_procid: Option<u32>,
    /// Where blocked goroutines are stuck and on what; `None` when no backend
    /// knows these structures (reports then lack blocking stacks and wait objects).
    pub blocked: Option<BlockedLayout>,
    /// The heap's span metadata, for the reachability proof; `None` when no backend
    /// knows it (Go 1.20 without DWARF: its table entry is from source only).
    pub heap: Option<HeapLayout>,
    /// `testing.T.common.name` (the test's full name, a Go string) relative to a
    /// `*testing.T`; `None` when no backend knows package testing's layout.
    pub test_name: Option<u32>,
    /// `runtime.gcControllerState.memoryLimit` (GOMEMLIMIT as the runtime holds
    /// it, an `atomic.Int64`: the offset of its word) relative to
    /// `runtime.gcController`; `None` when no backend knows it.
    pub gc_memory_limit: Option<u32>,
}

/// Where the heap's spans are described: `runtime.mheap_.allspans`, each
/// `runtime.mspan`, and the special records (finalizers, cleanups) hung off spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapLayout {
    /// `mheap.allspans`: a `[]*mspan` slice header.
    pub mheap_allspans: u32,
    pub mspan_start: u32,
    /// `mspan.limit`: the end of the span's objects.
    pub mspan_limit: u32,
    pub mspan_elemsize: u32,
    /// `mspan.spanclass` (`uint8`): bit 0 set for noscan spans.
    pub mspan_spanclass: u32,
    /// `mspan.state` (`uint8`): `mSpanInUse` = 1 for heap spans.
    pub mspan_state: u32,
    /// `mspan.freeindex`: every object below it is allocated; 8 bytes until Go
    /// 1.21, 2 from 1.22.
    pub mspan_freeindex: u32,
    pub mspan_freeindex_bytes: u32,
    /// `mspan.allocBits`: a bit per object, set for those allocated at the last sweep.
    pub mspan_alloc_bits: u32,
    /// `mspan.specials`: a list of `runtime.special`.
    pub mspan_specials: u32,
    /// `special.offset`: the object's offset in its span; 2 bytes until Go 1.23, 8 from 1.24.
    pub special_offset: u32,
    pub special_offset_bytes: u32,
    /// `sizeof(runtime.g)`: a runnable goroutine's `g` is scanned whole.
    pub g_size: u32,
    /// `g.syscallsp`: where the live frames of a goroutine in a system call start.
    pub g_syscallsp: u32,
}

/// `mSpanInUse`: a span of heap objects (`runtime.mSpanState`, stable since Go 1.14).
pub const MSPAN_IN_USE: u8 = 1;

/// The structures that say where a blocked goroutine is stuck and on what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedLayout {
    /// `g.sched.sp` and `g.sched.pc`: where a descheduled goroutine stopped.
    pub g_sched_sp: u32,
    pub g_sched_pc: u32,
    /// `g.sched.bp`: the frame pointer a goroutine left when it switched to the
    /// system stack (`systemstack` saves it), where its frames go on.
    pub g_sched_bp: u32,
    /// `g.sched.ctxt`: a new goroutine's closure until it first runs.
    pub g_sched_ctxt: u32,
    /// `g.waiting`: the sudogs of a goroutine blocked in a channel operation.
    pub g_waiting: u32,
    pub sudog: SudogOffsets,
    pub hchan: HchanOffsets,
    pub waitq: WaitqOffsets,
}

impl RuntimeLayout {
    /// Whether the fields the creation probe reads lie in the
    /// [`gleak_common::CREATE_SPAN`] bytes it reads from `g.goid` on.
    pub fn fits_create_span(&self) -> bool {
        let last = gleak_common::CREATE_SPAN - 8;
        [Some(self.g_gopc), Some(self.g_startpc), self.g_parent_goid]
            .into_iter()
            .flatten()
            .all(|off| off >= self.g_goid && off - self.g_goid <= last)
    }

    /// The subset the probes need, as handed to the kernel.
    pub fn target_config(&self, flags: u32) -> TargetConfig {
        TargetConfig {
            g_goid: self.g_goid,
            g_gopc: self.g_gopc,
            g_startpc: self.g_startpc,
            g_m: self.g_m,
            m_curg: self.m_curg,
            g_waitreason: self.g_waitreason,
            flags,
            g_parent_goid: self.g_parent_goid.unwrap_or(0),
            g_sched_bp: self.blocked.map_or(0, |b| b.g_sched_bp),
            g_sched_ctxt: self.blocked.map_or(0, |b| b.g_sched_ctxt),
            test_runner_pc: 0,
        }
    }
}

/// `runtime.gobuf`, relative to the gobuf (`g.sched`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GobufOffsets {
    pub sp: u32,
    pub pc: u32,
    /// The closure context (`*funcval`) a new goroutine starts with.
    pub ctxt: u32,
    pub bp: u32,
}

/// `runtime.sudog`: one goroutine waiting on one channel (or semaphore). A goroutine
/// in a channel operation has `g.waiting` → sudog → `waitlink` → … (one per select case).
/// From 1.26 `elem` and `c` are `maybeTraceablePtr`s `{vp, vu}` whose `vp` the leak-
/// detecting GC may clear: the offsets here are those of `vu`, the "source of truth".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SudogOffsets {
    /// `*g`: the waiting goroutine.
    pub g: u32,
    /// Next waiter in the channel's (or semaphore's) queue; in the semaphore
    /// table's treap, the right child.
    pub next: u32,
    /// Previous waiter; in the semaphore table's treap, the left child.
    pub prev: u32,
    /// Data element (may point to the waiter's stack); for semaphores the semaphore's address.
    pub elem: u32,
    /// `*hchan` waited on.
    pub c: u32,
    /// Next sudog of the same goroutine (`g.waiting` list, select cases).
    pub waitlink: u32,
    /// `isSelect bool`.
    pub isselect: u32,
}

/// `runtime.hchan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HchanOffsets {
    /// `uint`: elements queued.
    pub qcount: u32,
    /// `uint`: capacity.
    pub dataqsiz: u32,
    /// `uint16`.
    pub elemsize: u32,
    /// `uint32`.
    pub closed: u32,
    /// `waitq` of blocked receivers (see [`WaitqOffsets`]).
    pub recvq: u32,
    /// `waitq` of blocked senders.
    pub sendq: u32,
}

/// `runtime.waitq`, relative to the waitq (`hchan.recvq`/`hchan.sendq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitqOffsets {
    pub first: u32,
    pub last: u32,
}

/// Go's goroutine status values (`runtime._G*`), stable since Go 1.0 except the two
/// 1.26 additions.
pub mod gstatus {
    pub const IDLE: u32 = 0;
    pub const RUNNABLE: u32 = 1;
    pub const RUNNING: u32 = 2;
    pub const SYSCALL: u32 = 3;
    pub const WAITING: u32 = 4;
    pub const DEAD: u32 = 6;
    pub const COPYSTACK: u32 = 8;
    pub const PREEMPTED: u32 = 9;
    pub const LEAKED: u32 = 10;
    pub const DEAD_EXTRA: u32 = 11;
    pub const SCAN: u32 = 0x1000;

    pub fn name(status: u32) -> &'static str {
        match status & !SCAN {
            IDLE => "idle",
            RUNNABLE => "runnable",
            RUNNING => "running",
            SYSCALL => "syscall",
            WAITING => "waiting",
            DEAD | DEAD_EXTRA => "dead",
            COPYSTACK => "copystack",
            PREEMPTED => "preempted",
            LEAKED => "leaked",
            _ => "unknown",
        }
    }
}
