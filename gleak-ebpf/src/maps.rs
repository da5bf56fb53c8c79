//! Maps shared by every probe, and the helpers that fill an event.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::map,
    maps::{PerCpuArray, RingBuf, StackTrace},
};
use gleak_common::{counter, BatchHeader, CreateBatch, EventKind, ExitBatch, GoroutineEvent, BATCH};

/// Lifecycle events to user space. 8 MiB holds ~100k events: at a million events a
/// second, five times what arrives between two polls of the intake thread.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

const RING_BYTES: u32 = 8 << 20;

/// Bytes waiting in the ring that wake the reader: a quarter of it. Set by the
/// loader, which may give the ring another size.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = (RING_BYTES / 4) as u64;

/// Creation stacks, deduplicated by the kernel.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// See `gleak_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn bump(index: u32) {
    bump_by(index, 1);
}

#[inline(always)]
pub fn bump_by(index: u32, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer.
        unsafe { *slot += n };
    }
}

/// Reads a `u64` the event cannot do without (a goid): a failure drops the event
/// and is counted as such.
#[inline(always)]
pub fn read_u64(base: u64, offset: u32) -> Option<u64> {
    let v = read(base, offset);
    if v.is_none() {
        bump(counter::READ_FAILED);
    }
    v
}

/// Reads a `u64` the event can go without (0 is sent instead): counted apart, as
/// nothing is lost.
#[inline(always)]
pub fn read_optional(base: u64, offset: u32) -> Option<u64> {
    let v = read(base, offset);
    if v.is_none() {
        bump(counter::FIELD_READ_FAILED);
    }
    v
}

#[inline(always)]
fn read(base: u64, offset: u32) -> Option<u64> {
    unsafe { bpf_probe_read_user((base + offset as u64) as *const u64) }.ok()
}

/// Reserves a ring-buffer slot, writes a park or process-exit event, submits.
/// A full buffer is counted, never silent. Returns whether the event was sent.
///
/// Field by field, volatile: LLVM merges plain stores of zeros into a call of
/// `memset`, a global BPF function, which 5.10's verifier refuses ("arg#0 type is
/// not a struct").
#[inline(always)]
pub fn emit(kind: EventKind, pid: u32, goid: u64, g_addr: u64, wait_reason: u32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<GoroutineEvent>(0) else {
        bump(counter::RINGBUF_FULL);
        return false;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved record, 8-aligned and as large as the type.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile as put};
        put(addr_of_mut!((*event).kind), kind as u32);
        put(addr_of_mut!((*event).pid), pid);
        put(addr_of_mut!((*event).ts_ns), bpf_ktime_get_ns());
        put(addr_of_mut!((*event).goid), goid);
        put(addr_of_mut!((*event).g_addr), g_addr);
        put(addr_of_mut!((*event).parent_goid), 0);
        put(addr_of_mut!((*event).gopc), 0);
        put(addr_of_mut!((*event).startpc), 0);
        put(addr_of_mut!((*event).stack_id), -1);
        put(addr_of_mut!((*event).wait_reason), wait_reason);
        put(addr_of_mut!((*event)._pad), 0);
        put(addr_of_mut!((*event).captured), 0);
    }
    entry.submit(wakeup_flags(matches!(kind, EventKind::ProcessExit)));
    true
}

/// Waking the reader per event would cost the target a cross-CPU wakeup each time:
/// the intake thread polls every 20 ms instead, and is woken only once the buffer
/// fills past a quarter (a burst faster than the polls), or when `urgent` (a
/// process exit: gleak run holds the process until it is read).
#[inline(always)]
pub fn wakeup_flags(urgent: bool) -> u64 {
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let flags = if urgent || EVENTS.query(BPF_RB_AVAIL_DATA as u64) > threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

/// A per-CPU batch of events (see `gleak_common::BatchHeader`).
pub trait Batched {
    const KIND: EventKind;
    fn header(&mut self) -> &mut BatchHeader;
}

impl Batched for ExitBatch {
    const KIND: EventKind = EventKind::ExitBatch;
    fn header(&mut self) -> &mut BatchHeader {
        &mut self.header
    }
}

impl Batched for CreateBatch {
    const KIND: EventKind = EventKind::CreateBatch;
    fn header(&mut self) -> &mut BatchHeader {
        &mut self.header
    }
}

/// Counts record `slot` of `batch`, just written, as filled; sends the batch
/// once full. A full ring drops the batch, counted per event (and in `lost` too).
///
/// Volatile stores keep their order: the record before its count, the count reset
/// before the next `seq`, as user space reads the batch while it is filled.
#[inline(always)]
pub fn batch_filled<T: Batched>(batch: &mut T, slot: usize, lost: Option<u32>) {
    if slot + 1 < BATCH {
        unsafe { core::ptr::write_volatile(&mut batch.header().count, (slot + 1) as u32) };
        return;
    }
    let header = batch.header();
    header.kind = T::KIND as u32;
    header.cpu = unsafe { bpf_get_smp_processor_id() };
    unsafe { core::ptr::write_volatile(&mut header.count, BATCH as u32) };
    if EVENTS.output::<T>(&*batch, wakeup_flags(false)).is_err() {
        bump_by(counter::RINGBUF_FULL, BATCH as u64);
        if let Some(lost) = lost {
            bump_by(lost, BATCH as u64);
        }
    }
    let header = batch.header();
    let next = header.seq.wrapping_add(1);
    unsafe {
        core::ptr::write_volatile(&mut header.count, 0);
        core::ptr::write_volatile(&mut header.seq, next);
    }
}
