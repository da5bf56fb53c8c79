//! Reading a live process's memory without stopping it (`process_vm_readv`).

use std::io::{self, IoSliceMut};

use nix::{
    sys::uio::{process_vm_readv, RemoteIoVec},
    unistd::Pid,
};

/// Iovecs per `process_vm_readv` call (the kernel's `UIO_MAXIOV` is 1024).
const BATCH: usize = 512;

pub struct ProcessMemory {
    pid: Pid,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid: Pid::from_raw(pid as i32) }
    }

    /// One `process_vm_readv`: bytes read, stopping at the first unreadable remote range.
    fn readv(&self, locals: &mut [IoSliceMut<'_>], remotes: &[RemoteIoVec]) -> io::Result<usize> {
        Ok(process_vm_readv(self.pid, locals, remotes)?)
    }

    /// Fills `buf` from `addr`; a short read is an error.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let remote = RemoteIoVec { base: addr as usize, len: buf.len() };
        let want = buf.len();
        let n = self.readv(&mut [IoSliceMut::new(buf)], &[remote])?;
        if n != want {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }

    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `len` bytes at each address into consecutive chunks of the returned buffer,
    /// in as few system calls as possible. `ok[i]` says whether chunk `i` was read.
    pub fn read_many(&self, addrs: &[u64], len: usize) -> (Vec<u8>, Vec<bool>) {
        let mut out = vec![0u8; addrs.len() * len];
        let mut ok = vec![false; addrs.len()];
        for (batch_idx, batch) in addrs.chunks(BATCH).enumerate() {
            let base = batch_idx * BATCH;
            let chunk = &mut out[base * len..(base + batch.len()) * len];
            let mut locals: Vec<IoSliceMut<'_>> = chunk.chunks_mut(len).map(IoSliceMut::new).collect();
            let remotes: Vec<RemoteIoVec> = batch.iter().map(|&a| RemoteIoVec { base: a as usize, len }).collect();
            let full = self.readv(&mut locals, &remotes).unwrap_or(0) / len.max(1);
            for flag in &mut ok[base..base + full] {
                *flag = true;
            }
            // The kernel stops at the first unreadable remote range: retry the rest one by one.
            for i in full..batch.len() {
                let dst = &mut out[(base + i) * len..(base + i + 1) * len];
                ok[base + i] = self.read(batch[i], dst).is_ok();
            }
        }
        (out, ok)
    }

    /// Reads each `(address, length)` range into one buffer: the range of the buffer
    /// holding each, `None` where the target's memory was unreadable.
    pub fn read_ranges(&self, ranges: &[(u64, usize)]) -> (Vec<u8>, Vec<Option<std::ops::Range<usize>>>) {
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
            let mut left = self.readv(&mut locals, &remotes).unwrap_or(0);
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
