//! What gleak knows about the Go runtime of each release, as data.
//!
//! With DWARF, gleak reads `runtime.g`/`runtime.m` offsets and wait-reason names
//! from the binary itself. Stripped binaries (`-ldflags=-s -w`) have neither, so
//! the same facts are kept here, one entry per family of Go releases with the same
//! layout (as Delve's `pkg/proc` does). Offsets are identical on amd64 and arm64
//! (both 64-bit; checked for 1.19–1.27 in the project's reference notes).
//!
//! Every entry except Go 1.20 is checked against the DWARF and the
//! `runtime.waitReasonStrings` of a binary built by that toolchain
//! (`tests/tests/gotables.rs`). Go 1.20 has no toolchain on the build machine: its
//! entry comes from the project's reference notes (`go_runtime.md` §2/§4 and
//! `go_waitreasons.json`, which read it from the go1.20.6 source).

use std::ops::RangeInclusive;

use crate::runtime::layout::{
    gstatus, BlockedLayout, GobufOffsets, HchanOffsets, HeapLayout, RuntimeLayout, SudogOffsets, WaitqOffsets,
};

/// What gleak knows about one family of Go releases (a contiguous range of minor
/// versions with the same layout).
#[derive(Debug)]
pub struct ReleaseFacts {
    /// Go 1.x for every x in this range. Today each family is a single release:
    /// every two neighbours differ in some offset, size or wait reason.
    pub minors: RangeInclusive<u32>,
    pub g: GOffsets,
    pub m: MOffsets,
    pub gobuf: GobufOffsets,
    pub sudog: SudogOffsets,
    pub hchan: HchanOffsets,
    pub waitq: WaitqOffsets,
    pub moduledata: ModuledataOffsets,
    /// `runtime.waitReasonStrings`, indexed by waitReason value (exactly the strings Go prints).
    pub wait_reasons: &'static [&'static str],
    /// `g.atomicstatus` values (without the `_Gscan` bit) of a g that is not a goroutine:
    /// `_Gdead`, and from 1.26 `_Gdeadextra` (extra-M gs parked for cgo callbacks).
    pub dead_statuses: &'static [u32],
    /// `_Gleaked` (1.26+): a goroutine the GC's leak detector found unreachable-blocked.
    pub leaked_status: Option<u32>,
    /// The heap's span metadata (see [`HeapLayout`]); `None` where only the source was read.
    pub heap: Option<HeapLayout>,
}

/// `runtime.g`. `stack_lo`/`stack_hi` are `g.stack.lo`/`g.stack.hi`; `atomicstatus`
/// is the `uint32` itself (an `atomic.Uint32` from 1.20, whose value is at +0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GOffsets {
    /// `sizeof(runtime.g)`.
    pub size: u32,
    pub stack_lo: u32,
    pub stack_hi: u32,
    pub m: u32,
    /// The `gobuf` of a descheduled goroutine (see [`GobufOffsets`]).
    pub sched: u32,
    pub atomicstatus: u32,
    /// `int64` in 1.19, `uint64` from 1.20: read 8 bytes either way.
    pub goid: u32,
    pub waitsince: u32,
    /// `uint8`.
    pub waitreason: u32,
    /// `parentGoid`, Go 1.21+.
    pub parent_goid: Option<u32>,
    pub gopc: u32,
    pub startpc: u32,
    /// `*sudog`: the channel operation(s) a goroutine blocked in chan send/receive/select waits on.
    pub waiting: u32,
}

/// `runtime.m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MOffsets {
    pub curg: u32,
    /// The Linux thread id.
    pub procid: u32,
}

/// `runtime.moduledata` (`runtime.firstmoduledata`): where pclntab and the sections are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuledataOffsets {
    /// `*pcHeader`.
    pub pc_header: u32,
    /// `[]functab` slice header.
    pub ftab: u32,
    pub minpc: u32,
    pub text: u32,
    pub etext: u32,
    pub noptrdata: u32,
    pub data: u32,
    /// Base of `funcdata` offsets (inline trees).
    pub gofunc: u32,
}

impl ReleaseFacts {
    /// The subset the probes and the snapshot reader use, as the DWARF backend gives it.
    pub fn runtime_layout(&self) -> RuntimeLayout {
        RuntimeLayout {
            g_stack_lo: self.g.stack_lo,
            g_stack_hi: self.g.stack_hi,
            g_m: self.g.m,
            g_status: self.g.atomicstatus,
            g_goid: self.g.goid,
            g_waitsince: self.g.waitsince,
            g_waitreason: self.g.waitreason,
            g_parent_goid: self.g.parent_goid,
            g_gopc: self.g.gopc,
            g_startpc: self.g.startpc,
            m_curg: self.m.curg,
            blocked: Some(self.blocked_layout()),
            heap: self.heap,
        }
    }

    /// Where blocked goroutines are stuck and on what.
    pub fn blocked_layout(&self) -> BlockedLayout {
        BlockedLayout {
            g_sched_sp: self.g.sched + self.gobuf.sp,
            g_sched_pc: self.g.sched + self.gobuf.pc,
            g_waiting: self.g.waiting,
            sudog: self.sudog,
            hchan: self.hchan,
            waitq: self.waitq,
        }
    }

    /// Whether `status` (with or without the `_Gscan` bit) marks a g that is no goroutine.
    pub fn is_dead(&self, status: u32) -> bool {
        self.dead_statuses.contains(&(status & !gstatus::SCAN))
    }
}

/// The newest release the table knows.
pub const NEWEST_KNOWN_MINOR: u32 = 27;
/// The oldest release the table knows.
pub const OLDEST_KNOWN_MINOR: u32 = 19;

/// The facts for Go 1.`minor`, or None if gleak does not know that release (older
/// than 1.19 or newer than the newest entry: a new release may move anything).
pub fn for_release(minor: u32) -> Option<&'static ReleaseFacts> {
    RELEASES.iter().find(|facts| facts.minors.contains(&minor))
}

/// The `_Gdead`-like statuses of Go 1.`minor`. Unlike offsets these are stable
/// (`_Gdead` = 6 since Go 1.0), so releases outside the table get their nearest
/// neighbour's: older ones `_Gdead` only, newer ones the newest entry's.
pub fn dead_statuses(minor: u32) -> &'static [u32] {
    match for_release(minor.clamp(OLDEST_KNOWN_MINOR, NEWEST_KNOWN_MINOR)) {
        Some(facts) => facts.dead_statuses,
        None => &[gstatus::DEAD],
    }
}

const DEAD_UNTIL_1_25: &[u32] = &[gstatus::DEAD];
const DEAD_FROM_1_26: &[u32] = &[gstatus::DEAD, gstatus::DEAD_EXTRA];

// ---------------------------------------------------------------------------
// Struct layouts, each named after the first release that has it.
// ---------------------------------------------------------------------------

/// 1.19 (DWARF, go1.19.8 Debian); 1.20 the same (source: only goid became uint64
/// and atomicstatus atomic.Uint32, same offsets; labels at 360 as in OTel's table).
const G_1_19: GOffsets = GOffsets {
    size: 392,
    stack_lo: 0x0,
    stack_hi: 0x8,
    m: 0x30,
    sched: 0x38,
    atomicstatus: 0x90,
    goid: 0x98,
    waitsince: 0xa8,
    waitreason: 0xb0,
    parent_goid: None,
    gopc: 0x128,
    startpc: 0x138,
    waiting: 0x148,
};
/// 1.21: parentGoid added; trace fields moved into `g.trace` at the end, so
/// gopc/startpc/waiting −0x10 (DWARF, go1.21.13).
const G_1_21: GOffsets =
    GOffsets { size: 408, parent_goid: Some(0x110), gopc: 0x118, startpc: 0x128, waiting: 0x138, ..G_1_19 };
/// 1.22: coroarg appended (and bools in padding): size only (DWARF, go1.22.10).
const G_1_22: GOffsets = GOffsets { size: 424, ..G_1_21 };
/// 1.23: `syscallbp` after `syscallpc`: everything from atomicstatus +8 (DWARF, go1.23.9).
const G_1_23: GOffsets = GOffsets {
    size: 432,
    atomicstatus: 0x98,
    goid: 0xa0,
    waitsince: 0xb0,
    waitreason: 0xb8,
    parent_goid: Some(0x118),
    gopc: 0x120,
    startpc: 0x130,
    waiting: 0x140,
    ..G_1_22
};
/// 1.24: fipsIndicator and syncGroup appended: size only (DWARF, go1.24.11).
const G_1_24: GOffsets = GOffsets { size: 440, ..G_1_23 };
/// 1.25: `gobuf.ret` removed, so everything after `sched` −8; valgrindStackID
/// appended keeps the size (DWARF, go1.25.5).
const G_1_25: GOffsets = GOffsets {
    size: 440,
    atomicstatus: 0x90,
    goid: 0x98,
    waitsince: 0xa8,
    waitreason: 0xb0,
    parent_goid: Some(0x110),
    gopc: 0x118,
    startpc: 0x128,
    waiting: 0x138,
    ..G_1_24
};
/// 1.26: fipsOnlyBypass/ditWanted/secret after `sig`: parentGoid onwards +8,
/// xRegs appended (DWARF, go1.26.6; 1.27.3 identical).
const G_1_26: GOffsets =
    GOffsets { size: 456, parent_goid: Some(0x118), gopc: 0x120, startpc: 0x130, waiting: 0x140, ..G_1_25 };

/// 1.19–1.24 (DWARF of each but 1.20).
const M_1_19: MOffsets = MOffsets { curg: 0xc0, procid: 0x48 };
/// 1.25: `m.morebuf` is a gobuf, which lost `ret`: everything after it −8 (DWARF, go1.25.5).
const M_1_25: MOffsets = MOffsets { curg: 0xb8, procid: 0x40 };

/// 1.19–1.24: sp, pc, g, ctxt, ret, lr, bp (DWARF of each but 1.20).
const GOBUF_1_19: GobufOffsets = GobufOffsets { sp: 0x0, pc: 0x8, bp: 0x30 };
/// 1.25: `ret` removed (DWARF, go1.25.5).
const GOBUF_1_25: GobufOffsets = GobufOffsets { bp: 0x28, ..GOBUF_1_19 };

/// 1.19–1.25 (1.22 added `waiters uint16` in padding: no move) (DWARF of each but 1.20).
const SUDOG_1_19: SudogOffsets =
    SudogOffsets { g: 0x0, next: 0x8, prev: 0x10, elem: 0x18, c: 0x50, waitlink: 0x40, isselect: 0x34 };
/// 1.26: `elem` and `c` became 16-byte `maybeTraceablePtr`s; offsets are of their
/// `vu` word (elem 0x18+8, c 0x58+8) (DWARF, go1.26.6 and go1.27.3).
const SUDOG_1_26: SudogOffsets =
    SudogOffsets { g: 0x0, next: 0x8, prev: 0x10, elem: 0x20, c: 0x60, waitlink: 0x48, isselect: 0x3c };

/// 1.19–1.22 (DWARF of each but 1.20).
const HCHAN_1_19: HchanOffsets =
    HchanOffsets { qcount: 0x0, dataqsiz: 0x8, elemsize: 0x18, closed: 0x1c, recvq: 0x38, sendq: 0x48 };
/// 1.23: `timer *timer` after `closed` moves the queues +8 (DWARF, go1.23.9; 1.24's
/// `synctest bool` and 1.25's `bubble` after sendq move nothing we read).
const HCHAN_1_23: HchanOffsets = HchanOffsets { recvq: 0x40, sendq: 0x50, ..HCHAN_1_19 };

/// Every release 1.19–1.27 (DWARF of each but 1.20).
const WAITQ: WaitqOffsets = WaitqOffsets { first: 0x0, last: 0x8 };

/// 1.19 (DWARF, go1.19.8).
const MODULEDATA_1_19: ModuledataOffsets = ModuledataOffsets {
    pc_header: 0x0,
    ftab: 0x80,
    minpc: 0xa0,
    text: 0xb0,
    etext: 0xb8,
    noptrdata: 0xc0,
    data: 0xd0,
    gofunc: 0x130,
};
/// 1.20: covctrs/ecovctrs after enoptrbss move gofunc +0x10 (source for 1.20;
/// DWARF go1.21.13 … go1.26.6: 1.26's `epclntab` comes after gofunc).
const MODULEDATA_1_20: ModuledataOffsets = ModuledataOffsets { gofunc: 0x140, ..MODULEDATA_1_19 };
/// 1.27: typedesclen/itaboffset/itabsize inserted before rodata (DWARF, go1.27.3).
const MODULEDATA_1_27: ModuledataOffsets = ModuledataOffsets { gofunc: 0x158, ..MODULEDATA_1_19 };

/// 1.19 (DWARF, go1.19.8).
const HEAP_1_19: HeapLayout = HeapLayout {
    mheap_allspans: 0x10140,
    mspan_start: 0x18,
    mspan_limit: 0x70,
    mspan_elemsize: 0x68,
    mspan_spanclass: 0x62,
    mspan_state: 0x63,
    mspan_specials: 0x80,
    mspan_freeindex: 0x30,
    mspan_freeindex_bytes: 8,
    mspan_alloc_bits: 0x48,
    special_offset: 0x8,
    special_offset_bytes: 2,
    g_size: 392,
    g_syscallsp: 0x70,
};
/// 1.21: user arena fields move mspan's tail +8, mheap +8 (DWARF, go1.21.13).
const HEAP_1_21: HeapLayout = HeapLayout {
    mheap_allspans: 0x10148,
    mspan_limit: 0x78,
    mspan_elemsize: 0x70,
    mspan_spanclass: 0x6a,
    mspan_state: 0x6b,
    mspan_specials: 0x88,
    g_size: 408,
    ..HEAP_1_19
};
/// 1.22: mspan.freeindex and nelems became uint16 (back to 1.19's tail offsets)
/// (DWARF, go1.22.10).
const HEAP_1_22: HeapLayout = HeapLayout {
    mspan_limit: 0x70,
    mspan_elemsize: 0x68,
    mspan_spanclass: 0x62,
    mspan_state: 0x63,
    mspan_specials: 0x80,
    mspan_freeindex_bytes: 2,
    mspan_alloc_bits: 0x40,
    g_size: 424,
    ..HEAP_1_21
};
/// 1.23: sizeof(g) 432 (DWARF, go1.23.9).
const HEAP_1_23: HeapLayout = HeapLayout { g_size: 432, ..HEAP_1_22 };
/// 1.24: special.offset widened to uintptr (DWARF, go1.24.11).
const HEAP_1_24: HeapLayout = HeapLayout { special_offset_bytes: 8, g_size: 440, ..HEAP_1_23 };
/// 1.25: g.syscallsp −8 with gobuf.ret gone (DWARF, go1.25.5).
const HEAP_1_25: HeapLayout = HeapLayout { g_syscallsp: 0x68, ..HEAP_1_24 };
/// 1.26 and 1.27 (DWARF, go1.26.6 and go1.27.3).
const HEAP_1_26: HeapLayout = HeapLayout { g_size: 456, ..HEAP_1_25 };

// ---------------------------------------------------------------------------
// The table: one entry per family, oldest first, no gaps.
// ---------------------------------------------------------------------------

static RELEASES: &[ReleaseFacts] = &[
    // Go 1.19: the oldest known (DWARF + waitReasonStrings of go1.19.8).
    ReleaseFacts {
        minors: 19..=19,
        g: G_1_19,
        m: M_1_19,
        gobuf: GOBUF_1_19,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_19,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_19,
        wait_reasons: WAIT_REASONS_1_19,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: Some(HEAP_1_19),
    },
    // Go 1.20: moduledata.covctrs, new wait reasons. SOURCE ONLY: reference notes, no 1.20 toolchain here.
    ReleaseFacts {
        minors: 20..=20,
        g: G_1_19,
        m: M_1_19,
        gobuf: GOBUF_1_19,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_19,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_20,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: None,
    },
    // Go 1.21: g.parentGoid, trace fields moved; wait reasons as 1.20 (DWARF + waitReasonStrings of go1.21.13).
    ReleaseFacts {
        minors: 21..=21,
        g: G_1_21,
        m: M_1_19,
        gobuf: GOBUF_1_19,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_19,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_20,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: Some(HEAP_1_21),
    },
    // Go 1.22: sizeof(g) 424; wait reasons up to "coroutine" (DWARF + waitReasonStrings of go1.22.10).
    ReleaseFacts {
        minors: 22..=22,
        g: G_1_22,
        m: M_1_19,
        gobuf: GOBUF_1_19,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_19,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_22,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: Some(HEAP_1_22),
    },
    // Go 1.23: g +8 from atomicstatus (syscallbp), hchan.timer, a wait reason (DWARF + strings of go1.23.9).
    ReleaseFacts {
        minors: 23..=23,
        g: G_1_23,
        m: M_1_19,
        gobuf: GOBUF_1_19,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_23,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_23,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: Some(HEAP_1_23),
    },
    // Go 1.24: sizeof(g) 440; WaitGroup and "(synctest)" wait reasons (DWARF + strings of go1.24.11).
    ReleaseFacts {
        minors: 24..=24,
        g: G_1_24,
        m: M_1_19,
        gobuf: GOBUF_1_19,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_23,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_24,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: Some(HEAP_1_24),
    },
    // Go 1.25: gobuf.ret gone (g −8 after sched, m −8); "(durable)" reasons (DWARF + strings of go1.25.5).
    ReleaseFacts {
        minors: 25..=25,
        g: G_1_25,
        m: M_1_25,
        gobuf: GOBUF_1_25,
        sudog: SUDOG_1_19,
        hchan: HCHAN_1_23,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_25,
        dead_statuses: DEAD_UNTIL_1_25,
        leaked_status: None,
        heap: Some(HEAP_1_25),
    },
    // Go 1.26: g +8 from parentGoid, sudog.elem/c wrapped, reasons reordered, 2 statuses (DWARF + strings of go1.26.6).
    ReleaseFacts {
        minors: 26..=26,
        g: G_1_26,
        m: M_1_25,
        gobuf: GOBUF_1_25,
        sudog: SUDOG_1_26,
        hchan: HCHAN_1_23,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_20,
        wait_reasons: WAIT_REASONS_1_26,
        dead_statuses: DEAD_FROM_1_26,
        leaked_status: Some(gstatus::LEAKED),
        heap: Some(HEAP_1_26),
    },
    // Go 1.27: only moduledata.gofunc moved (DWARF + waitReasonStrings of go1.27.3).
    ReleaseFacts {
        minors: 27..=27,
        g: G_1_26,
        m: M_1_25,
        gobuf: GOBUF_1_25,
        sudog: SUDOG_1_26,
        hchan: HCHAN_1_23,
        waitq: WAITQ,
        moduledata: MODULEDATA_1_27,
        wait_reasons: WAIT_REASONS_1_26,
        dead_statuses: DEAD_FROM_1_26,
        leaked_status: Some(gstatus::LEAKED),
        heap: Some(HEAP_1_26),
    },
];

// ---------------------------------------------------------------------------
// runtime.waitReasonStrings per release, index = waitReason value. Verified
// element by element against the binaries (1.20: reference notes only).
// ---------------------------------------------------------------------------

/// 1.19 (go1.19.8).
static WAIT_REASONS_1_19: &[&str] = &[
    "",                        // 0
    "GC assist marking",       // 1
    "IO wait",                 // 2
    "chan receive (nil chan)", // 3
    "chan send (nil chan)",    // 4
    "dumping heap",            // 5
    "garbage collection",      // 6
    "garbage collection scan", // 7
    "panicwait",               // 8
    "select",                  // 9
    "select (no cases)",       // 10
    "GC assist wait",          // 11
    "GC sweep wait",           // 12
    "GC scavenge wait",        // 13
    "chan receive",            // 14
    "chan send",               // 15
    "finalizer wait",          // 16
    "force gc (idle)",         // 17
    "semacquire",              // 18
    "sleep",                   // 19
    "sync.Cond.Wait",          // 20
    "timer goroutine (idle)",  // 21
    "trace reader (blocked)",  // 22
    "wait for GC cycle",       // 23
    "GC worker (idle)",        // 24
    "preempted",               // 25
    "debug call",              // 26
];

/// 1.20 (reference notes) and 1.21 (go1.21.13): sync.Mutex.Lock… inserted,
/// "timer goroutine (idle)" gone, GC worker (active), GC mark termination and
/// stopping the world added.
static WAIT_REASONS_1_20: &[&str] = &[
    "",                        // 0
    "GC assist marking",       // 1
    "IO wait",                 // 2
    "chan receive (nil chan)", // 3
    "chan send (nil chan)",    // 4
    "dumping heap",            // 5
    "garbage collection",      // 6
    "garbage collection scan", // 7
    "panicwait",               // 8
    "select",                  // 9
    "select (no cases)",       // 10
    "GC assist wait",          // 11
    "GC sweep wait",           // 12
    "GC scavenge wait",        // 13
    "chan receive",            // 14
    "chan send",               // 15
    "finalizer wait",          // 16
    "force gc (idle)",         // 17
    "semacquire",              // 18
    "sleep",                   // 19
    "sync.Cond.Wait",          // 20
    "sync.Mutex.Lock",         // 21
    "sync.RWMutex.RLock",      // 22
    "sync.RWMutex.Lock",       // 23
    "trace reader (blocked)",  // 24
    "wait for GC cycle",       // 25
    "GC worker (idle)",        // 26
    "GC worker (active)",      // 27
    "preempted",               // 28
    "debug call",              // 29
    "GC mark termination",     // 30
    "stopping the world",      // 31
];

/// 1.22 (go1.22.10): flushing proc caches … coroutine appended.
static WAIT_REASONS_1_22: &[&str] = &[
    "",                        // 0
    "GC assist marking",       // 1
    "IO wait",                 // 2
    "chan receive (nil chan)", // 3
    "chan send (nil chan)",    // 4
    "dumping heap",            // 5
    "garbage collection",      // 6
    "garbage collection scan", // 7
    "panicwait",               // 8
    "select",                  // 9
    "select (no cases)",       // 10
    "GC assist wait",          // 11
    "GC sweep wait",           // 12
    "GC scavenge wait",        // 13
    "chan receive",            // 14
    "chan send",               // 15
    "finalizer wait",          // 16
    "force gc (idle)",         // 17
    "semacquire",              // 18
    "sleep",                   // 19
    "sync.Cond.Wait",          // 20
    "sync.Mutex.Lock",         // 21
    "sync.RWMutex.RLock",      // 22
    "sync.RWMutex.Lock",       // 23
    "trace reader (blocked)",  // 24
    "wait for GC cycle",       // 25
    "GC worker (idle)",        // 26
    "GC worker (active)",      // 27
    "preempted",               // 28
    "debug call",              // 29
    "GC mark termination",     // 30
    "stopping the world",      // 31
    "flushing proc caches",    // 32
    "trace goroutine status",  // 33
    "trace proc status",       // 34
    "page trace flush",        // 35
    "coroutine",               // 36
];

/// 1.23 (go1.23.9): "GC weak to strong wait" appended.
static WAIT_REASONS_1_23: &[&str] = &[
    "",                        // 0
    "GC assist marking",       // 1
    "IO wait",                 // 2
    "chan receive (nil chan)", // 3
    "chan send (nil chan)",    // 4
    "dumping heap",            // 5
    "garbage collection",      // 6
    "garbage collection scan", // 7
    "panicwait",               // 8
    "select",                  // 9
    "select (no cases)",       // 10
    "GC assist wait",          // 11
    "GC sweep wait",           // 12
    "GC scavenge wait",        // 13
    "chan receive",            // 14
    "chan send",               // 15
    "finalizer wait",          // 16
    "force gc (idle)",         // 17
    "semacquire",              // 18
    "sleep",                   // 19
    "sync.Cond.Wait",          // 20
    "sync.Mutex.Lock",         // 21
    "sync.RWMutex.RLock",      // 22
    "sync.RWMutex.Lock",       // 23
    "trace reader (blocked)",  // 24
    "wait for GC cycle",       // 25
    "GC worker (idle)",        // 26
    "GC worker (active)",      // 27
    "preempted",               // 28
    "debug call",              // 29
    "GC mark termination",     // 30
    "stopping the world",      // 31
    "flushing proc caches",    // 32
    "trace goroutine status",  // 33
    "trace proc status",       // 34
    "page trace flush",        // 35
    "coroutine",               // 36
    "GC weak to strong wait",  // 37
];

/// 1.24 (go1.24.11): sync.WaitGroup.Wait inserted, synctest reasons appended.
static WAIT_REASONS_1_24: &[&str] = &[
    "",                        // 0
    "GC assist marking",       // 1
    "IO wait",                 // 2
    "chan receive (nil chan)", // 3
    "chan send (nil chan)",    // 4
    "dumping heap",            // 5
    "garbage collection",      // 6
    "garbage collection scan", // 7
    "panicwait",               // 8
    "select",                  // 9
    "select (no cases)",       // 10
    "GC assist wait",          // 11
    "GC sweep wait",           // 12
    "GC scavenge wait",        // 13
    "chan receive",            // 14
    "chan send",               // 15
    "finalizer wait",          // 16
    "force gc (idle)",         // 17
    "semacquire",              // 18
    "sleep",                   // 19
    "sync.Cond.Wait",          // 20
    "sync.Mutex.Lock",         // 21
    "sync.RWMutex.RLock",      // 22
    "sync.RWMutex.Lock",       // 23
    "sync.WaitGroup.Wait",     // 24
    "trace reader (blocked)",  // 25
    "wait for GC cycle",       // 26
    "GC worker (idle)",        // 27
    "GC worker (active)",      // 28
    "preempted",               // 29
    "debug call",              // 30
    "GC mark termination",     // 31
    "stopping the world",      // 32
    "flushing proc caches",    // 33
    "trace goroutine status",  // 34
    "trace proc status",       // 35
    "page trace flush",        // 36
    "coroutine",               // 37
    "GC weak to strong wait",  // 38
    "synctest.Run",            // 39
    "synctest.Wait",           // 40
    "chan receive (synctest)", // 41
    "chan send (synctest)",    // 42
    "select (synctest)",       // 43
];

/// 1.25 (go1.25.5): GOMAXPROCS updater inserted, synctest reasons renamed "(durable)".
static WAIT_REASONS_1_25: &[&str] = &[
    "",                              // 0
    "GC assist marking",             // 1
    "IO wait",                       // 2
    "chan receive (nil chan)",       // 3
    "chan send (nil chan)",          // 4
    "dumping heap",                  // 5
    "garbage collection",            // 6
    "garbage collection scan",       // 7
    "panicwait",                     // 8
    "select",                        // 9
    "select (no cases)",             // 10
    "GC assist wait",                // 11
    "GC sweep wait",                 // 12
    "GC scavenge wait",              // 13
    "chan receive",                  // 14
    "chan send",                     // 15
    "finalizer wait",                // 16
    "force gc (idle)",               // 17
    "GOMAXPROCS updater (idle)",     // 18
    "semacquire",                    // 19
    "sleep",                         // 20
    "sync.Cond.Wait",                // 21
    "sync.Mutex.Lock",               // 22
    "sync.RWMutex.RLock",            // 23
    "sync.RWMutex.Lock",             // 24
    "sync.WaitGroup.Wait",           // 25
    "trace reader (blocked)",        // 26
    "wait for GC cycle",             // 27
    "GC worker (idle)",              // 28
    "GC worker (active)",            // 29
    "preempted",                     // 30
    "debug call",                    // 31
    "GC mark termination",           // 32
    "stopping the world",            // 33
    "flushing proc caches",          // 34
    "trace goroutine status",        // 35
    "trace proc status",             // 36
    "page trace flush",              // 37
    "coroutine",                     // 38
    "GC weak to strong wait",        // 39
    "synctest.Run",                  // 40
    "synctest.Wait",                 // 41
    "chan receive (durable)",        // 42
    "chan send (durable)",           // 43
    "select (durable)",              // 44
    "sync.WaitGroup.Wait (durable)", // 45
    "cleanup wait",                  // 46
];

/// 1.26 (go1.26.6) and 1.27 (go1.27.3): reordered so that the reasons a leaked
/// goroutine can block in (chan receive (nil chan) … sync.WaitGroup.Wait) are contiguous.
static WAIT_REASONS_1_26: &[&str] = &[
    "",                              // 0
    "GC assist marking",             // 1
    "IO wait",                       // 2
    "dumping heap",                  // 3
    "garbage collection",            // 4
    "garbage collection scan",       // 5
    "panicwait",                     // 6
    "GC assist wait",                // 7
    "GC sweep wait",                 // 8
    "GC scavenge wait",              // 9
    "finalizer wait",                // 10
    "force gc (idle)",               // 11
    "GOMAXPROCS updater (idle)",     // 12
    "semacquire",                    // 13
    "sleep",                         // 14
    "chan receive (nil chan)",       // 15
    "chan send (nil chan)",          // 16
    "select (no cases)",             // 17
    "select",                        // 18
    "chan receive",                  // 19
    "chan send",                     // 20
    "sync.Cond.Wait",                // 21
    "sync.Mutex.Lock",               // 22
    "sync.RWMutex.RLock",            // 23
    "sync.RWMutex.Lock",             // 24
    "sync.WaitGroup.Wait",           // 25
    "trace reader (blocked)",        // 26
    "wait for GC cycle",             // 27
    "GC worker (idle)",              // 28
    "GC worker (active)",            // 29
    "preempted",                     // 30
    "debug call",                    // 31
    "GC mark termination",           // 32
    "stopping the world",            // 33
    "flushing proc caches",          // 34
    "trace goroutine status",        // 35
    "trace proc status",             // 36
    "page trace flush",              // 37
    "coroutine",                     // 38
    "GC weak to strong wait",        // 39
    "synctest.Run",                  // 40
    "synctest.Wait",                 // 41
    "chan receive (durable)",        // 42
    "chan send (durable)",           // 43
    "select (durable)",              // 44
    "sync.WaitGroup.Wait (durable)", // 45
    "cleanup wait",                  // 46
];

#[cfg(test)]
mod tests {
    use super::*;

    fn label(facts: &ReleaseFacts) -> String {
        let (first, last) = (facts.minors.start(), facts.minors.end());
        if first == last {
            format!("Go 1.{first}")
        } else {
            format!("Go 1.{first}–1.{last}")
        }
    }

    /// The creation probe reads one span from `g.goid`: every release's fields fit.
    #[test]
    fn creation_fields_fit_the_probe_span() {
        for facts in RELEASES {
            assert!(facts.runtime_layout().fits_create_span(), "Go 1.{:?}", facts.minors);
        }
    }

    #[test]
    fn families_cover_19_to_27_without_gaps_or_overlaps() {
        let mut next = OLDEST_KNOWN_MINOR;
        for facts in RELEASES {
            assert_eq!(*facts.minors.start(), next, "gap or overlap before {:?}", facts.minors);
            assert!(facts.minors.start() <= facts.minors.end(), "empty family {:?}", facts.minors);
            next = facts.minors.end() + 1;
        }
        assert_eq!(next, NEWEST_KNOWN_MINOR + 1, "the last family must end at NEWEST_KNOWN_MINOR");
        for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
            let facts = for_release(minor).unwrap_or_else(|| panic!("no entry for 1.{minor}"));
            assert!(facts.minors.contains(&minor));
        }
    }

    #[test]
    fn unknown_releases() {
        assert!(for_release(18).is_none());
        assert!(for_release(0).is_none());
        assert!(for_release(NEWEST_KNOWN_MINOR + 1).is_none());
        assert_eq!(dead_statuses(18), [gstatus::DEAD]);
        assert_eq!(dead_statuses(NEWEST_KNOWN_MINOR + 1), [gstatus::DEAD, gstatus::DEAD_EXTRA]);
    }

    /// Catches typos, above all in the 1.20 entry no binary checks: fields are in
    /// struct order and fit in the struct.
    #[test]
    fn offsets_are_in_field_order() {
        for facts in RELEASES {
            let g = &facts.g;
            let mut order =
                vec![g.stack_lo, g.stack_hi, g.m, g.sched, g.atomicstatus, g.goid, g.waitsince, g.waitreason];
            order.extend(g.parent_goid);
            order.extend([g.gopc, g.startpc, g.waiting, g.size]);
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{}: g offsets out of order: {order:x?}", label(facts));
            assert!(g.sched + facts.gobuf.bp < g.atomicstatus, "{}: gobuf does not fit", label(facts));
            let s = &facts.sudog;
            assert!(
                s.g < s.next && s.next < s.elem && s.elem < s.isselect && s.isselect < s.waitlink && s.waitlink < s.c
            );
            let h = &facts.hchan;
            assert!(h.qcount < h.dataqsiz && h.dataqsiz < h.elemsize && h.elemsize < h.closed && h.closed < h.recvq);
            assert_eq!(h.sendq, h.recvq + 16, "{}: a waitq is two pointers", label(facts));
            let md = &facts.moduledata;
            assert!(md.pc_header < md.ftab && md.ftab < md.minpc && md.minpc < md.text && md.text < md.etext);
            assert!(md.etext < md.noptrdata && md.noptrdata < md.data && md.data < md.gofunc);
        }
    }

    #[test]
    fn wait_reasons_look_like_go_s() {
        for facts in RELEASES {
            let reasons = facts.wait_reasons;
            assert_eq!(reasons.first(), Some(&""), "waitReasonZero prints nothing");
            assert!(reasons[1..].iter().all(|r| !r.is_empty()));
            for wanted in ["chan send", "chan receive", "select", "semacquire", "sleep", "sync.Cond.Wait"] {
                assert!(reasons.contains(&wanted), "{} lacks {wanted:?}", label(facts));
            }
            let mut sorted = reasons.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), reasons.len(), "{}: duplicate wait reason", label(facts));
        }
        // Values the reference notes checked by disassembly of gopark call sites.
        assert_eq!(for_release(19).map(|f| f.wait_reasons[14]), Some("chan receive"));
        assert_eq!(for_release(27).map(|f| f.wait_reasons[15]), Some("chan receive (nil chan)"));
        assert_eq!(for_release(27).map(|f| f.wait_reasons[19]), Some("chan receive"));
        assert_eq!(for_release(24).map(|f| f.wait_reasons[41]), Some("chan receive (synctest)"));
        assert_eq!(for_release(25).map(|f| f.wait_reasons[42]), Some("chan receive (durable)"));
    }

    /// Consistent with `layout::gstatus`, which names the statuses for the report.
    #[test]
    fn statuses_match_layout_gstatus() {
        for facts in RELEASES {
            assert!(facts.dead_statuses.contains(&gstatus::DEAD));
            assert!(facts.dead_statuses.iter().all(|&s| gstatus::name(s) == "dead"));
            assert!(facts.is_dead(gstatus::DEAD | gstatus::SCAN));
            assert!(!facts.is_dead(gstatus::WAITING));
            let new_statuses = *facts.minors.start() >= 26;
            assert_eq!(facts.dead_statuses.contains(&gstatus::DEAD_EXTRA), new_statuses);
            assert_eq!(facts.leaked_status, new_statuses.then_some(gstatus::LEAKED));
            if let Some(leaked) = facts.leaked_status {
                assert_eq!(gstatus::name(leaked), "leaked");
            }
        }
        assert_eq!(dead_statuses(25), [gstatus::DEAD]);
        assert_eq!(dead_statuses(26), [gstatus::DEAD, gstatus::DEAD_EXTRA]);
    }

    #[test]
    fn runtime_layout_is_the_g_and_m_facts() {
        let facts = for_release(23).expect("1.23 is known");
        let layout = facts.runtime_layout();
        assert_eq!((layout.g_goid, layout.g_status, layout.g_waitreason, layout.m_curg), (0xa0, 0x98, 0xb8, 0xc0));
        assert_eq!(layout.g_parent_goid, Some(0x118));
        assert_eq!(for_release(19).and_then(|f| f.runtime_layout().g_parent_goid), None);
    }
}
