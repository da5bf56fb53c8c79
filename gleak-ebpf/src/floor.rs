//! Not one of gleak's probes: the overhead benchmark's BPF floor (`cargo xtask
//! bench`). A program that only counts its runs, which the benchmark attaches at
//! gleak's own probe instructions, to measure what every BPF uprobe tracer pays
//! there beyond the bare trap: the dispatch to a program and a program's run.

use aya_ebpf::{
    macros::{map, uprobe},
    maps::PerCpuArray,
    programs::ProbeContext,
};

/// Runs of [`floor_count`], per CPU.
#[map]
static FLOOR_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[uprobe]
pub fn floor_count(_ctx: ProbeContext) -> u32 {
    if let Some(hits) = FLOOR_HITS.get_ptr_mut(0) {
        // Per-CPU slot: no other writer.
        unsafe { *hits += 1 };
    }
    0
}
