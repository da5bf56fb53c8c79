//! Ring-buffer intake: a thread of its own empties the kernel's event ring into
//! batches, so the ring keeps draining while reports are built, symbolized and
//! written (the moments a busy target would otherwise overflow it).
//!
//! Events keep their ring order: the thread hands a batch over while it still holds
//! the ring, and [`Intake::flush`] drains the ring itself under the same lock after
//! taking every batch already handed over.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use gleak_common::{EventKind, ExitBatch, ExitRecord, GoroutineEvent};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How often the intake thread empties the ring when no wakeup came. The probes
/// wake it only once the ring is a quarter full (or at a process exit): a wakeup
/// per event would cost the target more than the probe itself.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Events handed over in ring order, a batch at a time.
pub type Batch = Vec<GoroutineEvent>;

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

/// Appends one ring record: a `GoroutineEvent`, or an `ExitBatch` unpacked into
/// one exit event per death. Anything too short for its kind is not a record.
fn push_record(batch: &mut Batch, record: &[u8]) {
    let Some(kind) = record.get(..4).map(|k| u32::from_ne_bytes([k[0], k[1], k[2], k[3]])) else { return };
    if kind == EventKind::ExitBatch as u32 {
        if record.len() >= ExitBatch::SIZE {
            // SAFETY: the kernel wrote an `ExitBatch` (plain integers) into this slot.
            let exits: ExitBatch = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
            batch.extend(exits.filled().iter().map(ExitRecord::event));
        }
    } else if record.len() >= GoroutineEvent::SIZE {
        // SAFETY: the kernel wrote a `GoroutineEvent` (plain integers) into this slot.
        batch.push(unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: plain `#[repr(C)]` integers.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn unpacks_exit_batches_and_skips_short_records() {
        let mut exits = ExitBatch { kind: EventKind::ExitBatch as u32, count: 2, ..ExitBatch::default() };
        exits.exits[0] = ExitRecord { g_addr: 0xc000, ts_ns: 10, pid: 7, _pad: 0 };
        exits.exits[1] = ExitRecord { g_addr: 0xd000, ts_ns: 11, pid: 8, _pad: 0 };
        exits.exits[2] = ExitRecord { g_addr: 0xe000, ts_ns: 12, pid: 9, _pad: 0 }; // past the count
        let create = GoroutineEvent { kind: EventKind::Create as u32, pid: 7, goid: 5, ..GoroutineEvent::default() };
        let mut batch = Batch::new();
        push_record(&mut batch, &bytes(&create));
        push_record(&mut batch, &bytes(&exits));
        push_record(&mut batch, &bytes(&exits)[..100]); // truncated: not a batch
        push_record(&mut batch, &[1, 0]);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0], create);
        assert_eq!(
            (batch[1].kind, batch[1].pid, batch[1].g_addr, batch[1].ts_ns),
            (EventKind::Exit as u32, 7, 0xc000, 10)
        );
        assert_eq!((batch[2].pid, batch[2].g_addr), (8, 0xd000));
        // A count beyond the array (a torn read) is bounded.
        exits.count = u32::MAX;
        assert_eq!(exits.filled().len(), gleak_common::EXIT_BATCH);
    }
}
