//! Deduplication of per-CPU batches: the probes gather events per CPU and send a
//! batch when it is full, and the user side reads the batches still being filled
//! straight from their maps (so nothing waits for a batch to fill). A record can
//! so be seen twice, in its map and then in the ring: the ledger applies it once.

use std::collections::VecDeque;

use gleak_common::{BatchHeader, EventKind, GoroutineEvent};

/// An event, and where it came from when the probe sent it in a per-CPU batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub event: GoroutineEvent,
    pub from: Option<BatchSlot>,
}

/// Where a batched record was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// From its batch's map, while the batch was being filled.
    Map,
    /// From the ring, once the batch was sent.
    Ring,
}

/// A record's place in the per-CPU batches (see `gleak_common::BatchHeader`):
/// the same record read from its map and then from the ring has the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSlot {
    pub kind: BatchKind,
    pub cpu: u32,
    pub seq: u64,
    pub index: u32,
    pub source: Source,
}

/// The two kinds of per-CPU batch, each with its own sequence per CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    Exits,
    Creates,
}

/// The records of a batch of `kind` with `header`, from CPU `cpu`, as delivered
/// events. (The kind is given: a batch still being filled has none in its header.)
pub fn unbatch(
    kind: EventKind,
    header: &BatchHeader,
    cpu: u32,
    source: Source,
    events: impl Iterator<Item = GoroutineEvent>,
) -> impl Iterator<Item = Delivered> {
    let kind = if kind == EventKind::CreateBatch { BatchKind::Creates } else { BatchKind::Exits };
    let seq = header.seq;
    events.enumerate().map(move |(index, event)| Delivered {
        event,
        from: Some(BatchSlot { kind, cpu, seq, index: index as u32, source }),
    })
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
        Some(&mut self.from_map[cpu][usize::from(slot.kind == BatchKind::Creates)])
    }
}

/// Whether the record at `slot` was applied from its map already; notes what is
/// applied now.
fn already_applied(reads: &mut VecDeque<(u64, u32)>, slot: &BatchSlot) -> bool {
    if slot.source == Source::Map {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(kind: BatchKind, cpu: u32, seq: u64, index: u32, source: Source, goid: u64) -> Delivered {
        let event = GoroutineEvent { goid, ..GoroutineEvent::default() };
        Delivered { event, from: Some(BatchSlot { kind, cpu, seq, index, source }) }
    }

    #[test]
    fn a_batch_read_while_filled_and_then_from_the_ring_is_applied_once() {
        let (create, exit) = (BatchKind::Creates, BatchKind::Exits);
        let mut ledger = BatchLedger::default();
        let mut out = Vec::new();
        let ring = |seq, range: std::ops::Range<u32>| {
            range.map(move |i| from(create, 1, seq, i, Source::Ring, seq * 100 + u64::from(i)))
        };
        let map = |seq, range: std::ops::Range<u32>| {
            range.map(move |i| from(create, 1, seq, i, Source::Map, seq * 100 + u64::from(i)))
        };
        // Batch 7 of CPU 1 read from the map with 2 records, then with 3; CPU 0 has an exit.
        ledger.admit(map(7, 0..2).chain([from(exit, 0, 7, 0, Source::Map, 9)]), &mut out);
        ledger.admit(map(7, 0..3), &mut out);
        // Batch 7 is sent, 8 started: the map read comes before the ring is drained.
        ledger.admit(map(8, 0..1), &mut out);
        ledger.admit(ring(6, 0..2).chain(ring(7, 0..4)), &mut out);
        // Batch 8 in the ring: its first record was applied from the map.
        ledger.admit(ring(8, 0..2), &mut out);
        // An unbatched event always passes; the exit batch of CPU 0 is its own.
        ledger.admit([Delivered { event: GoroutineEvent::default(), from: None }], &mut out);
        ledger.admit([from(exit, 0, 7, 0, Source::Ring, 9), from(exit, 0, 7, 1, Source::Ring, 10)], &mut out);
        let goids: Vec<u64> = out.iter().map(|e| e.goid).collect();
        assert_eq!(goids, [700, 701, 9, 702, 800, 600, 601, 703, 801, 0, 10]);
    }

    #[test]
    fn a_cpu_beyond_the_ledger_is_applied_as_is() {
        let mut ledger = BatchLedger::default();
        let mut out = Vec::new();
        let far = LEDGER_CPUS as u32;
        ledger.admit([from(BatchKind::Exits, far, 1, 0, Source::Map, 1)], &mut out);
        ledger.admit([from(BatchKind::Exits, far, 1, 0, Source::Ring, 1)], &mut out);
        assert_eq!(out.len(), 2, "no state is kept for it, so both copies pass");
    }
}
