//! The ring buffer's own thread: it empties the kernel's event ring into batches,
//! so the ring keeps draining while reports are built, symbolized and written
//! (the moments a busy target would otherwise overflow it).
//!
//! Events keep their ring order: the thread hands a batch over while it still holds
//! the ring, and [`RingThread::flush`] drains the ring itself under the same lock
//! after taking every batch already handed over.

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
use gleak_common::{EventKind, RingRecord};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::ledger::{unbatch, Delivered, Source};

/// How often the thread empties the ring when no wakeup came. The probes wake it
/// only once the ring is a quarter full (or at a process exit): a wakeup per event
/// would cost the target more than the probe itself.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Events handed over in ring order, a batch at a time.
pub type Batch = Vec<Delivered>;

struct Shared {
    ring: Mutex<RingBuf<MapData>>,
    /// The ring's descriptor (a duplicate), polled without holding the lock.
    fd: OwnedFd,
    stop: AtomicBool,
}

/// The thread that drains the ring, and the batches it produced.
pub struct RingThread {
    shared: Arc<Shared>,
    /// Keeps the channel open even once the thread has ended, so that
    /// [`RingThread::next`] waits rather than returning at once.
    _sender: UnboundedSender<Batch>,
    batches: UnboundedReceiver<Batch>,
    thread: Option<JoinHandle<()>>,
}

impl RingThread {
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

impl Drop for RingThread {
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

/// Appends one ring record: an event, or a batch unpacked into one event per
/// record. What does not decode is not a record.
pub(super) fn push_record(batch: &mut Batch, record: &[u8]) {
    match RingRecord::decode(record) {
        Some(RingRecord::Event(event)) => batch.push(Delivered { event, from: None }),
        Some(RingRecord::Exits(exits)) => {
            batch.extend(unbatch(EventKind::ExitBatch, &exits.header, exits.header.cpu, Source::Ring, exits.events()))
        }
        Some(RingRecord::Creates(creates)) => batch.extend(unbatch(
            EventKind::CreateBatch,
            &creates.header,
            creates.header.cpu,
            Source::Ring,
            creates.events(),
        )),
        None => {}
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
