//! Reading the current state of traced goroutines straight from the target's
//! `runtime.g` structures: status, wait reason, and whether it is still the same
//! goroutine. Costs no probe hit; the runtime already keeps this state.

use crate::{layout::gstatus, layout::RuntimeLayout, procmem::ProcessMemory};

/// What memory says about one goroutine right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GState {
    /// `_G*` status without the scan bit.
    pub status: u32,
    pub wait_reason: u8,
    /// `g.waitsince` (CLOCK_MONOTONIC ns); set by the GC for goroutines it finds blocked, else 0.
    pub wait_since_ns: i64,
}

/// The result for one goroutine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    Alive(GState),
    /// Dead, or the `g` now belongs to another goroutine: its exit event was lost.
    Gone,
    /// Memory could not be read (process exiting).
    Unknown,
}

/// Reads `(goid, g address)` pairs in one batch.
pub fn observe(
    mem: &ProcessMemory,
    layout: &RuntimeLayout,
    goroutines: &[(u64, u64)],
) -> Vec<Observed> {
    let fields = [
        layout.g_status,
        layout.g_goid,
        layout.g_waitsince,
        layout.g_waitreason,
    ];
    let lo = *fields.iter().min().unwrap();
    let hi = *fields.iter().max().unwrap() + 8;
    let len = (hi - lo) as usize;
    let addrs: Vec<u64> = goroutines.iter().map(|&(_, g)| g + lo as u64).collect();
    let (buf, ok) = mem.read_many(&addrs, len);
    goroutines
        .iter()
        .enumerate()
        .map(|(i, &(goid, _))| {
            if !ok[i] {
                return Observed::Unknown;
            }
            let chunk = &buf[i * len..(i + 1) * len];
            let at = |off: u32| (off - lo) as usize;
            let u64_at =
                |off: u32| u64::from_le_bytes(chunk[at(off)..at(off) + 8].try_into().unwrap());
            let status = u32::from_le_bytes(
                chunk[at(layout.g_status)..at(layout.g_status) + 4]
                    .try_into()
                    .unwrap(),
            ) & !gstatus::SCAN;
            let mem_goid = u64_at(layout.g_goid);
            if mem_goid != goid || matches!(status, gstatus::DEAD | gstatus::DEAD_EXTRA) {
                return Observed::Gone;
            }
            Observed::Alive(GState {
                status,
                wait_reason: chunk[at(layout.g_waitreason)],
                wait_since_ns: u64_at(layout.g_waitsince) as i64,
            })
        })
        .collect()
}
