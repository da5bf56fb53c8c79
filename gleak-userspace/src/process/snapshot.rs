//! Reading goroutines straight from the target's `runtime.g` structures, without
//! stopping it: status, wait reason, creation site, stack size. Costs no probe
//! hit; the runtime already keeps this state.

use crate::{
    binary::globals::GoroutineTable,
    process::memory::ReadMemory,
    runtime::layout::{gstatus, RuntimeLayout},
};

/// What memory says about one goroutine right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GRecord {
    pub goid: u64,
    /// `_G*` status without the scan bit.
    pub status: u32,
    pub wait_reason: u8,
    /// `g.waitsince` (CLOCK_MONOTONIC ns). `execute` clears it whenever the goroutine
    /// runs and the GC sets it for goroutines it finds blocked, so a non-zero value
    /// means "blocked continuously since at least then".
    pub wait_since_ns: u64,
    pub gopc: u64,
    pub startpc: u64,
    pub parent_goid: u64,
    /// `stack.hi - stack.lo`: what the goroutine's stack costs.
    pub stack_bytes: u64,
    /// `stack.hi`: where its stack ends.
    pub stack_hi: u64,
    /// `g.sched.sp`/`g.sched.pc` (where it stopped, if descheduled) and `g.waiting`
    /// (its sudogs, in a channel operation); 0 when the layout lacks them.
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub waiting: u64,
}

impl GRecord {
    /// Blocked: parked in `gopark` (`_Gwaiting`), or found leaked by Go's own leak
    /// detector (`_Gleaked`, 1.26+), which leaves its wait reason in place.
    pub fn is_blocked(&self) -> bool {
        matches!(self.status, gstatus::WAITING | gstatus::LEAKED)
    }

    /// Where it stopped, if descheduled: what its blocking stack is unwound from.
    pub fn sched(&self) -> crate::process::unwind::Sched {
        crate::process::unwind::Sched { sp: self.sched_sp, pc: self.sched_pc, stack_hi: self.stack_hi }
    }

    pub fn is_dead(&self) -> bool {
        matches!(self.status, gstatus::DEAD | gstatus::DEAD_EXTRA | gstatus::IDLE)
    }
}

/// Reads the records of the `g`s at `addrs`; `None` where memory was unreadable.
pub fn read_records(mem: &dyn ReadMemory, layout: &RuntimeLayout, addrs: &[u64]) -> Vec<Option<GRecord>> {
    let mut fields = vec![
        layout.g_stack_lo,
        layout.g_stack_hi,
        layout.g_status,
        layout.g_goid,
        layout.g_waitsince,
        layout.g_waitreason,
        layout.g_gopc,
        layout.g_startpc,
    ];
    fields.extend(layout.g_parent_goid);
    if let Some(b) = &layout.blocked {
        fields.extend([b.g_sched_sp, b.g_sched_pc, b.g_waiting]);
    }
    let lo = *fields.iter().min().unwrap();
    let len = (*fields.iter().max().unwrap() + 8 - lo) as usize;
    let starts: Vec<u64> = addrs.iter().map(|&g| g + lo as u64).collect();
    let (buf, ok) = mem.read_many(&starts, len);
    (0..addrs.len())
        .map(|i| {
            if !ok[i] {
                return None;
            }
            let chunk = &buf[i * len..(i + 1) * len];
            let at = |off: u32| (off - lo) as usize;
            let u64_at = |off: u32| u64::from_le_bytes(chunk[at(off)..at(off) + 8].try_into().unwrap());
            let status = u32::from_le_bytes(chunk[at(layout.g_status)..at(layout.g_status) + 4].try_into().unwrap());
            Some(GRecord {
                goid: u64_at(layout.g_goid),
                status: status & !gstatus::SCAN,
                wait_reason: chunk[at(layout.g_waitreason)],
                wait_since_ns: u64_at(layout.g_waitsince),
                gopc: u64_at(layout.g_gopc),
                startpc: u64_at(layout.g_startpc),
                parent_goid: layout.g_parent_goid.map(u64_at).unwrap_or(0),
                stack_bytes: u64_at(layout.g_stack_hi).saturating_sub(u64_at(layout.g_stack_lo)),
                stack_hi: u64_at(layout.g_stack_hi),
                sched_sp: layout.blocked.map_or(0, |b| u64_at(b.g_sched_sp)),
                sched_pc: layout.blocked.map_or(0, |b| u64_at(b.g_sched_pc)),
                waiting: layout.blocked.map_or(0, |b| u64_at(b.g_waiting)),
            })
        })
        .collect()
}

/// Every goroutine in the target's `runtime.allgs` (dead ones filtered out), with
/// its `g` address. `allgs` is append-only, so reading its length first and then
/// its array (as the runtime's own readers do) is safe while the process runs.
pub fn all_goroutines(
    mem: &dyn ReadMemory,
    table: &GoroutineTable,
    layout: &RuntimeLayout,
    bias: u64,
) -> std::io::Result<Vec<(u64, GRecord)>> {
    let len = mem.read_u64(table.allglen.wrapping_add(bias))?;
    let ptr = mem.read_u64(table.allgs.wrapping_add(bias))?;
    if len == 0 || ptr == 0 {
        return Ok(Vec::new());
    }
    // A sanity bound: a corrupt read must not make us allocate gigabytes.
    let len = len.min(16 << 20) as usize;
    let mut raw = vec![0u8; len * 8];
    mem.read(ptr, &mut raw)?;
    let addrs: Vec<u64> =
        raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).filter(|&a| a != 0).collect();
    let records = read_records(mem, layout, &addrs);
    Ok(addrs
        .into_iter()
        .zip(records)
        .filter_map(|(addr, rec)| rec.filter(|r| !r.is_dead()).map(|r| (addr, r)))
        .collect())
}
