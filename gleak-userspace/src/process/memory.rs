//! Reading the target's memory, behind one interface ([`ReadMemory`]) so that
//! everything reading goroutines, stacks, waits and the heap runs the same on a
//! live process ([`ProcessMemory`], `process_vm_readv`, never stopping it) and on
//! memory recorded from one ([`RecordedMemory`], what unit tests replay).

use std::{
    io::{self, IoSliceMut},
    ops::Range,
    sync::Mutex,
};

use nix::{
    sys::uio::{process_vm_readv, RemoteIoVec},
    unistd::Pid,
};

/// Iovecs per vectored read (the kernel's `UIO_MAXIOV` is 1024).
const BATCH: usize = 512;

/// A target's address space, read. One primitive, with the semantics of
/// `process_vm_readv`; everything else is built on it.
pub trait ReadMemory {
    /// Reads `remotes[i]` into `locals[i]` in order and returns the bytes read,
    /// stopping at the first range that cannot be read whole (so the count
    /// covers whole ranges, then possibly part of one).
    fn read_vectored(&self, locals: &mut [IoSliceMut<'_>], remotes: &[RemoteIoVec]) -> io::Result<usize>;

    /// Fills `buf` from `addr`; a short read is an error.
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let remote = RemoteIoVec { base: addr as usize, len: buf.len() };
        let want = buf.len();
        let n = self.read_vectored(&mut [IoSliceMut::new(buf)], &[remote])?;
        if n != want {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }

    fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `len` bytes at each address into consecutive chunks of the returned buffer,
    /// in as few system calls as possible. `ok[i]` says whether chunk `i` was read.
    fn read_many(&self, addrs: &[u64], len: usize) -> (Vec<u8>, Vec<bool>) {
        let mut out = vec![0u8; addrs.len() * len];
        let mut ok = vec![false; addrs.len()];
        for (batch_idx, batch) in addrs.chunks(BATCH).enumerate() {
            let base = batch_idx * BATCH;
            let chunk = &mut out[base * len..(base + batch.len()) * len];
            let mut locals: Vec<IoSliceMut<'_>> = chunk.chunks_mut(len).map(IoSliceMut::new).collect();
            let remotes: Vec<RemoteIoVec> = batch.iter().map(|&a| RemoteIoVec { base: a as usize, len }).collect();
            let full = self.read_vectored(&mut locals, &remotes).unwrap_or(0) / len.max(1);
            for flag in &mut ok[base..base + full] {
                *flag = true;
            }
            // The read stops at the first unreadable range: retry the rest one by one.
            for i in full..batch.len() {
                let dst = &mut out[(base + i) * len..(base + i + 1) * len];
                ok[base + i] = self.read(batch[i], dst).is_ok();
            }
        }
        (out, ok)
    }

    /// Reads each `(address, length)` range into one buffer: the range of the buffer
    /// holding each, `None` where the target's memory was unreadable.
    fn read_ranges(&self, ranges: &[(u64, usize)]) -> (Vec<u8>, Vec<Option<Range<usize>>>) {
        let total = ranges.iter().map(|&(_, len)| len).sum();
        let mut out = vec![0u8; total];
        let mut spans = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for &(_, len) in ranges {
            spans.push(at..at + len);
            at += len;
        }
        let mut ok = vec![false; ranges.len()];
        let mut first = 0;
        while first < ranges.len() {
            let batch = &ranges[first..(first + BATCH).min(ranges.len())];
            let start = spans[first].start;
            let end = spans[first + batch.len() - 1].end;
            let mut rest = &mut out[start..end];
            let mut locals = Vec::with_capacity(batch.len());
            for &(_, len) in batch {
                let (head, tail) = rest.split_at_mut(len);
                locals.push(IoSliceMut::new(head));
                rest = tail;
            }
            let remotes: Vec<RemoteIoVec> =
                batch.iter().map(|&(a, len)| RemoteIoVec { base: a as usize, len }).collect();
            // Whole ranges read before the first unreadable one; retry the rest one by one.
            let mut left = self.read_vectored(&mut locals, &remotes).unwrap_or(0);
            let mut i = 0;
            while i < batch.len() && left >= batch[i].1 {
                left -= batch[i].1;
                ok[first + i] = true;
                i += 1;
            }
            for j in i..batch.len() {
                let span = spans[first + j].clone();
                ok[first + j] = self.read(batch[j].0, &mut out[span]).is_ok();
            }
            first += batch.len();
        }
        let spans = spans.into_iter().zip(ok).map(|(span, ok)| ok.then_some(span)).collect();
        (out, spans)
    }
}

/// A live process's memory, read without stopping it.
pub struct ProcessMemory {
    pid: Pid,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid: Pid::from_raw(pid as i32) }
    }
}

impl ReadMemory for ProcessMemory {
    fn read_vectored(&self, locals: &mut [IoSliceMut<'_>], remotes: &[RemoteIoVec]) -> io::Result<usize> {
        Ok(process_vm_readv(self.pid, locals, remotes)?)
    }
}

/// Memory recorded from a target: disjoint segments of bytes at their addresses.
/// Reads outside them fail as an unmapped page would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedMemory {
    /// Sorted by address, non-overlapping.
    segments: Vec<(u64, Vec<u8>)>,
}

/// Why bytes are not a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("not a gleak memory recording (no GLEAKMEM header)")]
    NotARecording,
    #[error("the recording is cut short at byte {0}")]
    Truncated(usize),
    #[error("segment at {0:#x} overlaps the one before it")]
    Overlap(u64),
}

const RECORDING_MAGIC: &[u8; 8] = b"GLEAKMEM";

impl RecordedMemory {
    /// Adds `bytes` at `addr`, merged with what is recorded already (the newer
    /// bytes win where they overlap).
    pub fn insert(&mut self, addr: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = addr.saturating_add(bytes.len() as u64);
        // Every segment touching [addr, end) is merged into one.
        let first = self.segments.partition_point(|(a, b)| a.saturating_add(b.len() as u64) < addr);
        let last = self.segments.partition_point(|(a, _)| *a <= end);
        let mut start = addr;
        let mut merged_end = end;
        for (a, b) in &self.segments[first..last] {
            start = start.min(*a);
            merged_end = merged_end.max(a.saturating_add(b.len() as u64));
        }
        let mut merged = vec![0u8; (merged_end - start) as usize];
        for (a, b) in &self.segments[first..last] {
            let off = (a - start) as usize;
            merged[off..off + b.len()].copy_from_slice(b);
        }
        let off = (addr - start) as usize;
        merged[off..off + bytes.len()].copy_from_slice(bytes);
        self.segments.splice(first..last, [(start, merged)]);
    }

    /// Adds little-endian words at `addr` (for building memory by hand).
    pub fn insert_words(&mut self, addr: u64, words: &[u64]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.insert(addr, &bytes);
    }

    /// Bytes recorded, all segments together.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|(_, b)| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self.segments.partition_point(|(a, _)| *a <= addr).checked_sub(1)?;
        let (base, bytes) = &self.segments[i];
        let off = usize::try_from(addr - base).ok()?;
        bytes.get(off..off.checked_add(len)?)
    }

    /// The recording as bytes: a header, then each segment's address, length and bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.len() + 16 * self.segments.len());
        out.extend_from_slice(RECORDING_MAGIC);
        out.extend_from_slice(&(self.segments.len() as u64).to_le_bytes());
        for (addr, bytes) in &self.segments {
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Reads a recording written by [`RecordedMemory::to_bytes`]; every length is
    /// checked against the bytes there are before anything is allocated.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, RecordingError> {
        if raw.get(..8) != Some(RECORDING_MAGIC) {
            return Err(RecordingError::NotARecording);
        }
        let word = |at: usize| -> Result<u64, RecordingError> {
            let b = raw.get(at..at + 8).ok_or(RecordingError::Truncated(at))?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let count = word(8)?;
        let mut at = 16;
        let mut segments: Vec<(u64, Vec<u8>)> = Vec::new();
        for _ in 0..count {
            let (addr, len) = (word(at)?, word(at + 8)?);
            at += 16;
            let len = usize::try_from(len).map_err(|_| RecordingError::Truncated(at))?;
            let bytes = raw.get(at..at.saturating_add(len)).ok_or(RecordingError::Truncated(at))?;
            at += len;
            if let Some((prev, prev_bytes)) = segments.last() {
                if addr < prev.saturating_add(prev_bytes.len() as u64) {
                    return Err(RecordingError::Overlap(addr));
                }
            }
            segments.push((addr, bytes.to_vec()));
        }
        Ok(Self { segments })
    }
}

impl ReadMemory for RecordedMemory {
    fn read_vectored(&self, locals: &mut [IoSliceMut<'_>], remotes: &[RemoteIoVec]) -> io::Result<usize> {
        let mut read = 0;
        for (local, remote) in locals.iter_mut().zip(remotes) {
            let len = remote.len.min(local.len());
            match self.get(remote.base as u64, len) {
                Some(bytes) => {
                    local[..len].copy_from_slice(bytes);
                    read += len;
                }
                // As process_vm_readv: an error only if nothing at all was read.
                None if read == 0 => return Err(io::Error::from_raw_os_error(nix::libc::EFAULT)),
                None => break,
            }
        }
        Ok(read)
    }
}

/// Reads through to another reader and records every range that was read, to
/// replay the same reads later from a [`RecordedMemory`].
pub struct Recording<'a> {
    inner: &'a dyn ReadMemory,
    recorded: Mutex<RecordedMemory>,
}

impl<'a> Recording<'a> {
    pub fn new(inner: &'a dyn ReadMemory) -> Self {
        Self { inner, recorded: Mutex::new(RecordedMemory::default()) }
    }

    /// Everything read so far.
    pub fn into_recorded(self) -> RecordedMemory {
        self.recorded.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ReadMemory for Recording<'_> {
    fn read_vectored(&self, locals: &mut [IoSliceMut<'_>], remotes: &[RemoteIoVec]) -> io::Result<usize> {
        let read = self.inner.read_vectored(locals, remotes)?;
        let mut recorded = self.recorded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut left = read;
        for (local, remote) in locals.iter().zip(remotes) {
            let len = remote.len.min(local.len()).min(left);
            if len == 0 {
                break;
            }
            recorded.insert(remote.base as u64, &local[..len]);
            left -= len;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> RecordedMemory {
        let mut mem = RecordedMemory::default();
        mem.insert_words(0x1000, &[1, 2, 3]);
        mem.insert_words(0x2000, &[7]);
        mem
    }

    #[test]
    fn recorded_reads_stop_at_the_first_unmapped_range_like_process_vm_readv() {
        let mem = memory();
        assert_eq!(mem.read_u64(0x1008).unwrap(), 2);
        assert!(mem.read_u64(0x1014).is_err(), "runs past the segment's end");
        assert!(mem.read_u64(0x0ff8).is_err());
        let (buf, ok) = mem.read_many(&[0x1000, 0x3000, 0x2000], 8);
        assert_eq!(ok, [true, false, true], "the unreadable middle one is retried past");
        assert_eq!(&buf[16..24], &7u64.to_le_bytes());
        let (buf, spans) = mem.read_ranges(&[(0x1010, 8), (0x1fff, 2), (0x2000, 8)]);
        assert_eq!(spans, [Some(0..8), None, Some(10..18)]);
        assert_eq!(&buf[..8], &3u64.to_le_bytes());
    }

    #[test]
    fn inserts_merge_touching_and_overlapping_segments() {
        let mut mem = memory();
        mem.insert_words(0x1018, &[4]); // touches the end of the first
        mem.insert(0x1004, &[9, 9, 9, 9, 9, 9, 9, 9]); // overlaps, newer wins
        assert_eq!(mem.segments.len(), 2);
        assert_eq!(mem.read_u64(0x1018).unwrap(), 4);
        assert_eq!(mem.read_u64(0x1000).unwrap(), 0x0909_0909_0000_0001);
        mem.insert(0x0ff0, &[0; 0x1020]); // swallows both
        assert_eq!(mem.segments.len(), 1);
        assert_eq!(mem.read_u64(0x2000).unwrap(), 0);
    }

    #[test]
    fn a_recording_round_trips_and_bad_bytes_are_refused() {
        let mem = memory();
        assert_eq!(RecordedMemory::from_bytes(&mem.to_bytes()).unwrap(), mem);
        let bytes = mem.to_bytes();
        assert!(matches!(RecordedMemory::from_bytes(b"ELF"), Err(RecordingError::NotARecording)));
        assert!(matches!(RecordedMemory::from_bytes(&bytes[..bytes.len() - 1]), Err(RecordingError::Truncated(_))));
        // A length claiming more bytes than there are.
        let mut huge = bytes.clone();
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(RecordedMemory::from_bytes(&huge).is_err());
    }

    #[test]
    fn a_recording_replays_the_reads_it_saw() {
        let live = memory();
        let recording = Recording::new(&live);
        assert_eq!(recording.read_u64(0x2000).unwrap(), 7);
        let (_, ok) = recording.read_many(&[0x1000, 0x5000], 16);
        assert_eq!(ok, [true, false]);
        let replay = recording.into_recorded();
        assert_eq!(replay.len(), 8 + 16, "only what was read");
        assert_eq!(replay.read_u64(0x1008).unwrap(), 2);
        assert!(replay.read_u64(0x1010).is_err(), "never read, so not recorded");
    }
}
