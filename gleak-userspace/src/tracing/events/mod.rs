//! The event source: everything between the probes' maps and the tracer. It owns
//! the ring buffer (drained by a thread of its own, [`ring`]), the per-CPU batches
//! the probes are still filling (read from their maps so that nothing waits for a
//! batch to fill), their deduplication ([`ledger`]: a record seen in its map and
//! then in the ring is applied once), and time order. The tracer gets
//! [`OrderedEvents`] and nothing else; the records' layout and decoding are in
//! `gleak-common`, beside the types the probes write.
//!
//! May use: `gleak-common`, aya's maps.

pub mod ledger;
pub mod ring;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use gleak_common::{CreateBatch, EventKind, ExitBatch, GoroutineEvent};

use self::{
    ledger::{unbatch, BatchLedger, Delivered, Source},
    ring::{Batch, RingThread},
};
use crate::error::{Error, Result};

pub use ring::POLL_INTERVAL;

/// The probes' maps the events come through, taken from the loaded object.
pub struct EventMaps {
    /// `EVENTS`: every record the probes send.
    pub ring: RingBuf<MapData>,
    /// `PENDING_EXITS`: each CPU's batch of deaths being filled.
    pub pending_exits: PerCpuArray<MapData, ExitBatch>,
    /// `PENDING_CREATES`: each CPU's batch of creations being filled.
    pub pending_creates: PerCpuArray<MapData, CreateBatch>,
}

/// Events in the order they happened, each once.
#[derive(Debug, Default)]
pub struct OrderedEvents {
    events: Vec<GoroutineEvent>,
    /// (time, index into `events`), sorted. Sorting 16-byte keys instead of the
    /// events themselves: the sort was a quarter of the user side's time.
    order: Vec<(u64, u32)>,
}

impl OrderedEvents {
    /// Orders `events` by time, ties in arrival order. Each CPU's events arrive
    /// in order, but one CPU's batch can arrive before another's older one, so a
    /// death can arrive before its goroutine's creation.
    pub fn new(events: Vec<GoroutineEvent>) -> Self {
        let mut order: Vec<(u64, u32)> = events.iter().enumerate().map(|(i, e)| (e.ts_ns, i as u32)).collect();
        // The keys are unique (the index breaks ties): unstable is as good as stable.
        order.sort_unstable();
        Self { events, order }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &GoroutineEvent> {
        self.order.iter().map(|&(_, i)| &self.events[i as usize])
    }
}

/// The one way events reach the tracer.
pub struct EventSource {
    ring: RingThread,
    pending_exits: PerCpuArray<MapData, ExitBatch>,
    pending_creates: PerCpuArray<MapData, CreateBatch>,
    ledger: BatchLedger,
}

impl EventSource {
    /// Starts draining the ring on its own thread.
    pub fn start(maps: EventMaps) -> Result<Self> {
        let ring =
            RingThread::start(maps.ring).map_err(|e| Error::Load(format!("starting the event intake thread: {e}")))?;
        Ok(Self {
            ring,
            pending_exits: maps.pending_exits,
            pending_creates: maps.pending_creates,
            ledger: BatchLedger::default(),
        })
    }

    /// Waits until the ring has events, then returns everything produced so far
    /// (see [`EventSource::drain_now`]). Cancel-safe.
    pub async fn next(&mut self) -> OrderedEvents {
        let handed = self.ring.next().await;
        self.drain_with(vec![handed])
    }

    /// Every event produced so far and not returned before: the ones the probes
    /// are still gathering per CPU, and the ones in the ring.
    pub fn drain_now(&mut self) -> OrderedEvents {
        self.drain_with(Vec::new())
    }

    fn drain_with(&mut self, mut handed: Vec<Batch>) -> OrderedEvents {
        // The maps before the ring: a batch sent meanwhile is then in the ring.
        let pending = self.pending();
        handed.extend(self.ring.flush());
        let mut events = Vec::with_capacity(pending.len() + handed.iter().map(Vec::len).sum::<usize>());
        self.ledger.admit(pending, &mut events);
        for batch in handed {
            self.ledger.admit(batch, &mut events);
        }
        OrderedEvents::new(events)
    }

    /// The batches the probes are still filling, per CPU (see
    /// `gleak_common::BatchHeader`): the deaths' read first, then the creations',
    /// so that every death seen has its goroutine's creation seen too (there, or in
    /// the ring drained after).
    fn pending(&self) -> Vec<Delivered> {
        let exits = self.pending_exits.get(&0, 0).map(|v| v.to_vec()).unwrap_or_default();
        let creates = self.pending_creates.get(&0, 0).map(|v| v.to_vec()).unwrap_or_default();
        pending_events(&exits, &creates)
    }
}

/// The batches still being filled, indexed by CPU, as delivered events.
fn pending_events(exits: &[ExitBatch], creates: &[CreateBatch]) -> Vec<Delivered> {
    let mut out = Vec::new();
    for (cpu, b) in exits.iter().enumerate() {
        out.extend(unbatch(EventKind::ExitBatch, &b.header, cpu as u32, Source::Map, b.events()));
    }
    for (cpu, b) in creates.iter().enumerate() {
        out.extend(unbatch(EventKind::CreateBatch, &b.header, cpu as u32, Source::Map, b.events()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        ledger::{BatchKind, BatchSlot},
        ring::push_record,
        *,
    };
    use gleak_common::{BatchHeader, ExitRecord};

    fn at(ts_ns: u64, goid: u64) -> GoroutineEvent {
        GoroutineEvent { ts_ns, goid, ..Default::default() }
    }

    #[test]
    fn events_come_in_time_order_ties_in_arrival_order() {
        // CPU 1's batch arrived before CPU 0's older one; 5 and 6 share a time.
        let events = OrderedEvents::new(vec![at(30, 1), at(40, 2), at(10, 3), at(20, 4), at(25, 5), at(25, 6)]);
        let order: Vec<u64> = events.iter().map(|e| e.goid).collect();
        assert_eq!(order, [3, 4, 5, 6, 1, 2]);
        assert_eq!(events.len(), 6);
    }

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: plain `#[repr(C)]` integers.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn ring_records_are_unpacked_with_their_batch_slots() {
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
        let ring_slot = |kind, cpu, seq, index| Some(BatchSlot { kind, cpu, seq, index, source: Source::Ring });
        assert_eq!(batch[1].from, ring_slot(BatchKind::Exits, 1, 9, 0));
        assert_eq!((batch[2].event.pid, batch[2].event.g_addr), (8, 0xd000));
        assert_eq!(batch[2].from.map(|s| s.index), Some(1));
        assert_eq!(batch[3].event, create);
        assert_eq!(batch[3].from, ring_slot(BatchKind::Creates, 0, 3, 0));
    }

    #[test]
    fn pending_batches_are_read_per_cpu_deaths_first() {
        // Batches being filled carry no kind or CPU in their headers: both come
        // from the map they are in and their index in it.
        let mut exits = [ExitBatch::default(); 2];
        exits[1].header = BatchHeader { seq: 4, count: 1, ..BatchHeader::default() };
        exits[1].exits[0] = ExitRecord { g_addr: 0xa0, ts_ns: 5, pid: 3, _pad: 0 };
        let mut creates = [CreateBatch::default(); 2];
        creates[0].header = BatchHeader { seq: 2, count: 1, ..BatchHeader::default() };
        creates[0].creates[0] = GoroutineEvent { goid: 42, ts_ns: 1, ..Default::default() };
        let pending = pending_events(&exits, &creates);
        let slots: Vec<_> = pending.iter().map(|d| d.from.map(|s| (s.kind, s.cpu, s.seq, s.source))).collect();
        assert_eq!(slots, [Some((BatchKind::Exits, 1, 4, Source::Map)), Some((BatchKind::Creates, 0, 2, Source::Map))]);
        assert_eq!((pending[0].event.g_addr, pending[1].event.goid), (0xa0, 42));
    }
}
