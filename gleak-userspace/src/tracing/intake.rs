//! Ring-buffer intake: a thread of its own empties the kernel's event ring into
//! batches, so the ring keeps draining while reports are built, symbolized and
//! written (the moments a busy target would otherwise overflow it).
//!
//! Events keep their ring order: the thread hands a batch over while it still holds
//! the ring, and [`Intake::flush`] drains the ring itself under the same lock after
//! taking every batch already handed over.

use std::{
    collections::VecDeque,
    os::fd::{AsFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use gleak_common::{BatchHeader, CreateBatch, EventKind, ExitBatch, GoroutineEvent};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How often the intake thread empties the ring when no wakeup came. The probes
/// wake it only once the ring is a quarter full (or at a process exit): a wakeup
/// per event would cost the target more than the probe itself.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Events handed over in ring order, a batch at a time.
pub type Batch = Vec<Delivered>;

/// An event, and where it came from when the probe sent it in a per-CPU batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub event: GoroutineEvent,
    pub from: Option<BatchSlot>,
}

/// A record's place in the per-CPU batches (see `gleak_common::BatchHeader`):
/// the same record read from its map and then from the ring has the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSlot {
    /// [`EventKind::ExitBatch`] or [`EventKind::CreateBatch`] as `u32`.
    pub kind: u32,
    pub cpu: u32,
    pub seq: u64,
    pub index: u32,
    /// Read from the batch's map while it was being filled (else from the ring).
    pub in_map: bool,
}

/// The records of a batch of `kind` with `header`, from CPU `cpu`, as delivered
/// events. (The kind is given: a batch still being filled has none in its header.)
pub fn unbatch(
    kind: EventKind,
    header: &BatchHeader,
    cpu: u32,
    in_map: bool,
    events: impl Iterator<Item = GoroutineEvent>,
) -> impl Iterator<Item = Delivered> {
    let (kind, seq) = (kind as u32, header.seq);
    events.enumerate().map(move |(index, event)| Delivered {
        event,
        from: Some(BatchSlot { kind, cpu, seq, index: index as u32, in_map }),
    })
}

struct Shared {
    ring: Mutex<RingBuf<MapData>>,
    /// The ring's descriptor (a duplicate), polled without holding the lock.
    fd: OwnedFd,
    stop: AtomicBool,
}

/// The thread that drains the ring, and the batches it produced.
pub struct Intake {
    shared: Arc<Shared>,
    /// Keeps the channel open even once the thread has ended, so that [`Intake::next`]
    /// waits rather than returning at once.
    _sender: UnboundedSender<Batch>,
    batches: UnboundedReceiver<Batch>,
    thread: Option<JoinHandle<()>>,
}

impl Intake {
    /// Starts draining `ring` on a thread named `gleak-intake`.
    pub fn start(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        let fd = ring.as_fd().try_clone_to_owned()?;
        let shared = Arc::new(Shared { ring: Mutex::new(ring), fd, stop: AtomicBool::new(false) });
        let (sender, batches) = unbounded_channel();
        let thread = {
            let (shared, sender) = (Arc::clone(&shared), sender.clone());
            std::thread::Builder::new().name("gleak-intake".into()).spawn(move || run(&shared, &sender))?
        };
        Ok(Self { shared, _sender: sender, batches, thread: Some(thread) })
    }

    /// Waits for the next batch. Cancel-safe.
    pub async fn next(&mut self) -> Batch {
        // `_sender` keeps the channel open: `None` cannot happen.
        self.batches.recv().await.unwrap_or_default()
    }

    /// Every event produced so far, in ring order: the batches already handed over,
    /// then what is still in the ring.
    pub fn flush(&mut self) -> Vec<Batch> {
        let mut ring = lock(&self.shared.ring);
        let mut out = Vec::new();
        while let Ok(batch) = self.batches.try_recv() {
            out.push(batch);
        }
        let rest = drain(&mut ring);
        if !rest.is_empty() {
            out.push(rest);
        }
        out
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, sender: &UnboundedSender<Batch>) {
    let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::MAX);
    while !shared.stop.load(Ordering::Relaxed) {
        // Woken or timed out, the ring is drained either way; EINTR is a wakeup too.
        let _ = poll(&mut [PollFd::new(shared.fd.as_fd(), PollFlags::POLLIN)], timeout);
        let mut ring = lock(&shared.ring);
        let batch = drain(&mut ring);
        if !batch.is_empty() && sender.send(batch).is_err() {
            return; // the tracer is gone
        }
    }
}

/// Copies every record now in the ring into a batch.
fn drain(ring: &mut RingBuf<MapData>) -> Batch {
    let mut batch = Batch::new();
    while let Some(item) = ring.next() {
        push_record(&mut batch, &item);
    }
    batch
}

/// The batches still being filled, indexed by CPU, as delivered events.
pub fn pending_events(exits: &[ExitBatch], creates: &[CreateBatch]) -> Vec<Delivered> {
    let mut out = Vec::new();
    for (cpu, b) in exits.iter().enumerate() {
        out.extend(unbatch(EventKind::ExitBatch, &b.header, cpu as u32, true, b.events()));
    }
    for (cpu, b) in creates.iter().enumerate() {
        out.extend(unbatch(EventKind::CreateBatch, &b.header, cpu as u32, true, b.events()));
    }
    out
}

/// Appends one ring record: a `GoroutineEvent`, or a batch unpacked into one event
/// per record. Anything too short for its kind is not a record.
fn push_record(batch: &mut Batch, record: &[u8]) {
    let Some(kind) = record.get(..4).map(|k| u32::from_ne_bytes([k[0], k[1], k[2], k[3]])) else { return };
    if kind == EventKind::ExitBatch as u32 {
        if record.len() >= ExitBatch::SIZE {
            // SAFETY: the kernel wrote an `ExitBatch` (plain integers) into this slot.
            let exits: ExitBatch = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
            batch.extend(unbatch(EventKind::ExitBatch, &exits.header, exits.header.cpu, false, exits.events()));
        }
    } else if kind == EventKind::CreateBatch as u32 {
        if record.len() >= CreateBatch::SIZE {
            // SAFETY: the kernel wrote a `CreateBatch` (plain integers) into this slot.
            let creates: CreateBatch = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
            batch.extend(unbatch(EventKind::CreateBatch, &creates.header, creates.header.cpu, false, creates.events()));
        }
    } else if record.len() >= GoroutineEvent::SIZE {
        // SAFETY: the kernel wrote a `GoroutineEvent` (plain integers) into this slot.
        let event = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        batch.push(Delivered { event, from: None });
    }
}

/// What was applied of each CPU's batches while they were being filled, so that
/// their records, read from the map and then again from the ring, are applied once.
#[derive(Default)]
pub struct BatchLedger {
    /// Per CPU, per batch kind (deaths, births): batches read from the map whose
    /// ring copy may still come, oldest first, with how many of their records were
    /// applied. Indexed, not hashed: it is looked at for every event.
    from_map: Vec<[VecDeque<(u64, u32)>; 2]>,
}

/// Map reads remembered per CPU at most: more means the ring dropped the batches.
const LEDGER_DEPTH: usize = 64;

/// CPUs the ledger keeps track of; a batch claiming a higher one is applied as is.
const LEDGER_CPUS: usize = 4096;

impl BatchLedger {
    /// Keeps the events not applied before; call in delivery order (a map read
    /// before the ring drained after it).
    pub fn admit(&mut self, delivered: impl IntoIterator<Item = Delivered>, out: &mut Vec<GoroutineEvent>) {
        for d in delivered {
            if let Some(slot) = d.from {
                if let Some(reads) = self.reads(slot) {
                    if already_applied(reads, &slot) {
                        continue;
                    }
                }
            }
            out.push(d.event);
        }
    }

    fn reads(&mut self, slot: BatchSlot) -> Option<&mut VecDeque<(u64, u32)>> {
        let cpu = slot.cpu as usize;
        if cpu >= LEDGER_CPUS {
            return None;
        }
        if self.from_map.len() <= cpu {
            self.from_map.resize_with(cpu + 1, Default::default);
        }
        Some(&mut self.from_map[cpu][usize::from(slot.kind == EventKind::CreateBatch as u32)])
    }
}

/// Whether the record at `slot` was applied from its map already; notes what is
/// applied now.
fn already_applied(reads: &mut VecDeque<(u64, u32)>, slot: &BatchSlot) -> bool {
    if slot.in_map {
        match reads.iter_mut().find(|(seq, _)| *seq == slot.seq) {
            Some((_, applied)) if slot.index < *applied => return true,
            Some((_, applied)) => *applied = slot.index + 1,
            None => {
                if reads.len() == LEDGER_DEPTH {
                    reads.pop_front();
                }
                reads.push_back((slot.seq, slot.index + 1));
            }
        }
        return false;
    }
    // One CPU's batches reach the ring in order: reads of older ones are settled
    // (their copies came, or were dropped).
    while reads.front().is_some_and(|&(seq, _)| seq < slot.seq) {
        reads.pop_front();
    }
    reads.front().is_some_and(|&(seq, applied)| seq == slot.seq && slot.index < applied)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleak_common::ExitRecord;

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: plain `#[repr(C)]` integers.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn unpacks_batches_and_skips_short_records() {
        let header = BatchHeader { kind: EventKind::ExitBatch as u32, cpu: 1, seq: 9, count: 2, _pad: 0 };
        let mut exits = ExitBatch { header, ..ExitBatch::default() };
        exits.exits[0] = ExitRecord { g_addr: 0xc000, ts_ns: 10, pid: 7, _pad: 0 };
        exits.exits[1] = ExitRecord { g_addr: 0xd000, ts_ns: 11, pid: 8, _pad: 0 };
        exits.exits[2] = ExitRecord { g_addr: 0xe000, ts_ns: 12, pid: 9, _pad: 0 }; // past the count
        let create = GoroutineEvent { kind: EventKind::Create as u32, pid: 7, goid: 5, ..GoroutineEvent::default() };
        let header = BatchHeader { kind: EventKind::CreateBatch as u32, cpu: 0, seq: 3, count: 1, _pad: 0 };
        let mut creates = CreateBatch { header, ..CreateBatch::default() };
        creates.creates[0] = create;
        let park = GoroutineEvent { kind: EventKind::Park as u32, pid: 7, goid: 5, ..GoroutineEvent::default() };
        let mut batch = Batch::new();
        push_record(&mut batch, &bytes(&park));
        push_record(&mut batch, &bytes(&exits));
        push_record(&mut batch, &bytes(&exits)[..100]); // truncated: not a batch
        push_record(&mut batch, &bytes(&creates));
        push_record(&mut batch, &[1, 0]);
        assert_eq!(batch.len(), 4);
        assert_eq!(batch[0], Delivered { event: park, from: None });
        let exit = batch[1].event;
        assert_eq!((exit.kind, exit.pid, exit.g_addr, exit.ts_ns), (EventKind::Exit as u32, 7, 0xc000, 10));
        assert_eq!(
            batch[1].from,
            Some(BatchSlot { kind: EventKind::ExitBatch as u32, cpu: 1, seq: 9, index: 0, in_map: false })
        );
        assert_eq!((batch[2].event.pid, batch[2].event.g_addr), (8, 0xd000));
        assert_eq!(batch[2].from.map(|s| s.index), Some(1));
        assert_eq!(batch[3].event, create);
        assert_eq!(
            batch[3].from,
            Some(BatchSlot { kind: EventKind::CreateBatch as u32, cpu: 0, seq: 3, index: 0, in_map: false })
        );
        // A count beyond the array (a torn read) is bounded.
        exits.header.count = u32::MAX;
        assert_eq!(exits.events().count(), gleak_common::BATCH);
    }

    fn from(kind: EventKind, cpu: u32, seq: u64, index: u32, in_map: bool, goid: u64) -> Delivered {
        let event = GoroutineEvent { goid, ..GoroutineEvent::default() };
        Delivered { event, from: Some(BatchSlot { kind: kind as u32, cpu, seq, index, in_map }) }
    }

    #[test]
    fn a_batch_read_while_filled_and_then_from_the_ring_is_applied_once() {
        let (create, exit) = (EventKind::CreateBatch, EventKind::ExitBatch);
        let mut ledger = BatchLedger::default();
        let mut out = Vec::new();
        let ring = |seq, range: std::ops::Range<u32>| {
            range.map(move |i| from(create, 1, seq, i, false, seq * 100 + u64::from(i)))
        };
        let map = |seq, range: std::ops::Range<u32>| {
            range.map(move |i| from(create, 1, seq, i, true, seq * 100 + u64::from(i)))
        };
        // Batch 7 of CPU 1 read from the map with 2 records, then with 3; CPU 0 has an exit.
        ledger.admit(map(7, 0..2).chain([from(exit, 0, 7, 0, true, 9)]), &mut out);
        ledger.admit(map(7, 0..3), &mut out);
        // Batch 7 is sent, 8 started: the map read comes before the ring is drained.
        ledger.admit(map(8, 0..1), &mut out);
        ledger.admit(ring(6, 0..2).chain(ring(7, 0..4)), &mut out);
        // Batch 8 in the ring: its first record was applied from the map.
        ledger.admit(ring(8, 0..2), &mut out);
        // An unbatched event always passes; the exit batch of CPU 0 is its own.
        ledger.admit([Delivered { event: GoroutineEvent::default(), from: None }], &mut out);
        ledger.admit([from(exit, 0, 7, 0, false, 9), from(exit, 0, 7, 1, false, 10)], &mut out);
        let goids: Vec<u64> = out.iter().map(|e| e.goid).collect();
        assert_eq!(goids, [700, 701, 9, 702, 800, 600, 601, 703, 801, 0, 10]);
    }
}
