//! Types shared by gleak's eBPF probes (`gleak-ebpf`) and its user side.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes it into maps and the
//! ring buffer, the user side reads the same bytes back.
#![no_std]

/// What a [`GoroutineEvent`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `runtime.newproc1` made a new goroutine (sent in [`CreateBatch`]es).
    Create = 1,
    /// A goroutine died (`runtime.gdestroy`, or `runtime.goexit0` before Go 1.22).
    /// The probe sends deaths in [`ExitBatch`]es; the user side unpacks each into
    /// one of these, with `pid`, `ts_ns` and `g_addr` set.
    Exit = 2,
    /// A goroutine is about to block (`runtime.gopark`); only with park tracing on.
    Park = 3,
    /// The process called `runtime.exit` and was stopped (SIGSTOP) so that its
    /// goroutines can be read; only under `gleak run`. `wait_reason` = exit code.
    ProcessExit = 4,
    /// An [`ExitBatch`] (its own record layout): deaths, as the exit probe sends them.
    ExitBatch = 5,
    /// A [`CreateBatch`]: creations, as the creation probe sends them.
    CreateBatch = 6,
}

impl EventKind {
    pub fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Create),
            2 => Some(Self::Exit),
            3 => Some(Self::Park),
            4 => Some(Self::ProcessExit),
            5 => Some(Self::ExitBatch),
            6 => Some(Self::CreateBatch),
            _ => None,
        }
    }
}

/// One goroutine lifecycle event, as streamed through the ring buffer.
///
/// A single fixed layout for every kind keeps the probes branch-free and the
/// user side allocation-free: unused fields are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineEvent {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Thread-group id (the process id) the event came from.
    pub pid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, the clock Go's `nanotime` reads too.
    pub ts_ns: u64,
    /// 0 for Exit: the user side knows the goroutine by its `g`.
    pub goid: u64,
    /// Address of the goroutine's `runtime.g`.
    pub g_addr: u64,
    /// Create: goid of the goroutine that ran the `go` statement (0 if none).
    pub parent_goid: u64,
    /// Create: return address of the `go` statement's call to `runtime.newproc`.
    pub gopc: u64,
    /// Create: entry PC of the goroutine's function.
    pub startpc: u64,
    /// Create: id in the `STACKS` map of the user stack at creation, or negative.
    pub stack_id: i64,
    /// Park: the `waitReason` byte passed to `gopark`; ProcessExit: the exit code.
    pub wait_reason: u32,
    pub _pad: u32,
    /// Create: the first variable the `go` statement's closure captured, read only
    /// for goroutines that start at [`TargetConfig::test_runner_pc`] (`go tRunner(t, f)`:
    /// the test's `*testing.T`); 0 otherwise. The closure is gone once the goroutine
    /// runs, so only the probe can read it.
    pub captured: u64,
}

impl GoroutineEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// One goroutine's death.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// The dying goroutine's `runtime.g`: the user side knows whose it is.
    pub g_addr: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub _pad: u32,
}

impl ExitRecord {
    /// This death as the one event shape the user side aggregates.
    pub fn event(&self) -> GoroutineEvent {
        GoroutineEvent {
            kind: EventKind::Exit as u32,
            pid: self.pid,
            ts_ns: self.ts_ns,
            g_addr: self.g_addr,
            stack_id: -1,
            ..GoroutineEvent::default()
        }
    }
}

/// Records per ring-buffer record, in either kind of batch.
pub const BATCH: usize = 16;

/// The head of a per-CPU batch of events. The ring buffer's lock and cache lines
/// are shared by every CPU, and one record for many events keeps the probes on
/// different CPUs from contending there. User space also reads the batch still
/// being filled, straight from its map, when it drains (so nothing waits for a
/// batch to fill): `seq` lets it apply each record once, though it may see it
/// twice, in the map and then in the ring.
///
/// `seq` lies before `count` and the probe resets `count` before it advances
/// `seq`: a reader going up through memory that sees a new `seq` sees the new count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchHeader {
    /// [`EventKind::ExitBatch`] or [`EventKind::CreateBatch`] as `u32`: the first
    /// field, as in [`GoroutineEvent`].
    pub kind: u32,
    /// The CPU whose batch it is (set when sent).
    pub cpu: u32,
    /// Batches this CPU sent before this one.
    pub seq: u64,
    /// Records filled, at most [`BATCH`].
    pub count: u32,
    pub _pad: u32,
}

impl BatchHeader {
    /// Records filled, bounded: the count comes from another address space.
    pub fn filled(&self) -> usize {
        (self.count as usize).min(BATCH)
    }
}

/// Goroutine deaths gathered per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitBatch {
    pub header: BatchHeader,
    pub exits: [ExitRecord; BATCH],
}

/// Goroutine creations gathered per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateBatch {
    pub header: BatchHeader,
    pub creates: [GoroutineEvent; BATCH],
}

impl ExitBatch {
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// The records filled, as exit events.
    pub fn events(&self) -> impl Iterator<Item = GoroutineEvent> + '_ {
        self.exits[..self.header.filled()].iter().map(ExitRecord::event)
    }
}

impl CreateBatch {
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// The records filled.
    pub fn events(&self) -> impl Iterator<Item = GoroutineEvent> + '_ {
        self.creates[..self.header.filled()].iter().copied()
    }
}

/// One record of the ring buffer, decoded: what the probes send, read back.
// Decoded one record at a time and unpacked at once, never stored in bulk; the
// probes' side is `no_std`, without `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingRecord {
    /// A single event (a park, a process exit).
    Event(GoroutineEvent),
    /// Deaths gathered on one CPU.
    Exits(ExitBatch),
    /// Creations gathered on one CPU.
    Creates(CreateBatch),
}

impl RingRecord {
    /// Decodes the bytes of one ring record by its leading kind. `None` for a
    /// record too short for its kind (nothing the probes write): the bytes come
    /// from a buffer another program writes, and are checked before being read.
    pub fn decode(record: &[u8]) -> Option<Self> {
        let kind = u32::from_ne_bytes(record.get(..4)?.try_into().ok()?);
        if kind == EventKind::ExitBatch as u32 {
            // SAFETY: long enough for an `ExitBatch`, which is plain integers
            // (any bit pattern is a value); read unaligned.
            (record.len() >= ExitBatch::SIZE)
                .then(|| Self::Exits(unsafe { core::ptr::read_unaligned(record.as_ptr().cast()) }))
        } else if kind == EventKind::CreateBatch as u32 {
            // SAFETY: as above, for a `CreateBatch`.
            (record.len() >= CreateBatch::SIZE)
                .then(|| Self::Creates(unsafe { core::ptr::read_unaligned(record.as_ptr().cast()) }))
        } else {
            // SAFETY: as above, for a `GoroutineEvent`.
            (record.len() >= GoroutineEvent::SIZE)
                .then(|| Self::Event(unsafe { core::ptr::read_unaligned(record.as_ptr().cast()) }))
        }
    }
}

/// Where to find things in one target's `runtime.g` and `runtime.m`, in bytes.
/// Filled per process by the user side from the binary's DWARF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetConfig {
    pub g_goid: u32,
    pub g_gopc: u32,
    pub g_startpc: u32,
    /// `g.m`: pointer to the `runtime.m` running the goroutine.
    pub g_m: u32,
    /// `m.curg`: the user goroutine an M runs (the creator while on g0 in newproc1).
    pub m_curg: u32,
    /// `g.waitreason` (u8), read by the park probe placed on gopark's `CALL runtime.mcall`.
    pub g_waitreason: u32,
    /// [`CONFIG_CAPTURE_STACKS`] and friends.
    pub flags: u32,
    /// `g.parentGoid` (Go ≥ 1.21: the creator's goid, in the new g itself); 0 when
    /// absent, and the creator is found through `g0.m.curg`.
    pub g_parent_goid: u32,
    /// `g.sched.bp`: where the creator's frames go on past `systemstack` (read by
    /// the arm64 probe's own stack walk); 0 when unknown.
    pub g_sched_bp: u32,
    /// `g.sched.ctxt`: a new goroutine's closure (`*funcval`) until it first runs.
    pub g_sched_ctxt: u32,
    /// Entry of the closure testing's `go tRunner(t, f)` starts (run-time address):
    /// goroutines starting there have their closure's first captured word read
    /// into [`GoroutineEvent::captured`]. 0: not a test binary, nothing read.
    pub test_runner_pc: u64,
}

/// Processes traced at once, at most: the slots of the probes' `TARGETS` array.
pub const MAX_TARGETS: u32 = 1024;

/// The cookie a traced process's probes are attached with: its PID as gleak sees
/// it, and its slot in `TARGETS`.
pub const fn probe_cookie(pid: u32, slot: u32) -> u64 {
    ((pid as u64) << 32) | slot as u64
}

/// Bytes of a new `g` the creation probe reads at once, from `g.goid` on: every
/// field it needs lies there (checked by the user side before attaching).
pub const CREATE_SPAN: u32 = 192;

/// Return addresses of a creation stack the probe walks itself (on arm64, where
/// the kernel's unwinder cannot cross from g0's stack to the goroutine's).
pub const WALKED_FRAMES: usize = 32;

/// Take the user stack at each goroutine creation.
pub const CONFIG_CAPTURE_STACKS: u32 = 1;

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events dropped because the ring buffer was full (a batch counts each of
    /// its events: an upper bound, as user space may have read some of them from
    /// the batch's map while it was being filled).
    pub const RINGBUF_FULL: u32 = 0;
    /// Events dropped because the goroutine's memory could not be read (no goid).
    pub const READ_FAILED: u32 = 1;
    /// Probe hits from a process with no `TargetConfig` (should not happen).
    pub const NO_CONFIG: u32 = 2;
    /// Creation stacks that could not be recorded (map full, unwinding failed).
    pub const STACK_FAILED: u32 = 3;
    /// Optional fields (creation site, creator) that could not be read; the event
    /// itself was delivered, with 0 in those fields.
    pub const FIELD_READ_FAILED: u32 = 4;
    /// Of [`RINGBUF_FULL`], the deaths: batches of them that found the ring full.
    pub const EXITS_LOST: u32 = 5;
    pub const COUNT: u32 = 6;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are plain `#[repr(C)]` integers with no padding holes that
    // matter for reading and writing through BPF maps.
    unsafe impl aya::Pod for super::GoroutineEvent {}
    unsafe impl aya::Pod for super::TargetConfig {}
    unsafe impl aya::Pod for super::ExitBatch {}
    unsafe impl aya::Pod for super::CreateBatch {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: plain `#[repr(C)]` integers.
        unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn ring_records_decode_by_kind_and_short_ones_are_refused() {
        let park = GoroutineEvent { kind: EventKind::Park as u32, pid: 7, goid: 5, ..GoroutineEvent::default() };
        assert_eq!(RingRecord::decode(&bytes(&park)), Some(RingRecord::Event(park)));
        let header = BatchHeader { kind: EventKind::ExitBatch as u32, cpu: 1, seq: 9, count: 1, _pad: 0 };
        let mut exits = ExitBatch { header, ..ExitBatch::default() };
        exits.exits[0] = ExitRecord { g_addr: 0xc000, ts_ns: 10, pid: 7, _pad: 0 };
        assert_eq!(RingRecord::decode(&bytes(&exits)), Some(RingRecord::Exits(exits)));
        let header = BatchHeader { kind: EventKind::CreateBatch as u32, cpu: 0, seq: 3, count: 1, _pad: 0 };
        let creates = CreateBatch { header, ..CreateBatch::default() };
        assert_eq!(RingRecord::decode(&bytes(&creates)), Some(RingRecord::Creates(creates)));
        // Truncated records of each kind, and one with no kind at all.
        assert_eq!(RingRecord::decode(&bytes(&exits)[..100]), None);
        assert_eq!(RingRecord::decode(&bytes(&creates)[..CreateBatch::SIZE - 1]), None);
        assert_eq!(RingRecord::decode(&bytes(&park)[..GoroutineEvent::SIZE - 1]), None);
        assert_eq!(RingRecord::decode(&[1, 0]), None);
    }

    #[test]
    fn a_torn_count_is_bounded() {
        let header = BatchHeader { kind: EventKind::ExitBatch as u32, cpu: 1, seq: 9, count: u32::MAX, _pad: 0 };
        let exits = ExitBatch { header, ..ExitBatch::default() };
        assert_eq!(exits.events().count(), BATCH);
        let exit = exits.events().next().unwrap();
        assert_eq!((exit.kind, exit.stack_id), (EventKind::Exit as u32, -1));
    }
}
