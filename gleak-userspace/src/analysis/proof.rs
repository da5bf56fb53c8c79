//! Running the reachability proof ([`crate::analysis::reach`]) on a live target: reads the
//! goroutine table, what each blocked goroutine waits on, the heap's in-use spans
//! and their special records, marks, and does it all a second time; a goroutine is
//! proven unable to run again only if both passes find it unreachable, blocked at
//! the same place on the same objects.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::{
    analysis::reach::{
        self, Budget, Chain, Goroutine, HeapIndex, Marking, Retained, Roots, Span, StackMaps, WholeStacks,
    },
    binary::GoBinary,
    process::memory::ReadMemory,
    process::snapshot::{all_goroutines, GRecord},
    process::unwind::Program,
    process::waits::{self, Blocked},
    runtime::debuginfo::RuntimeInfo,
    runtime::layout::{gstatus, HeapLayout, MSPAN_IN_USE},
    runtime::waitreason::WaitClass,
};

/// Most spans read (a 1 TiB heap of 8 KiB spans).
const MAX_SPANS: u64 = 1 << 27;
/// Bytes of a special record scanned (a finalizer's is 48 with its header).
const SPECIAL_BYTES: u64 = 64;
/// Most special records followed in all.
/// Objects in one span, at most (8-byte objects in a 64 KiB span, with room).
const MAX_SPAN_OBJECTS: u64 = 1 << 16;
const MAX_SPECIALS: usize = 1 << 22;
/// Wait objects whose holders one proof explains at most.
const MAX_EXPLAINED: usize = 64;
/// Time between the two passes.
const PASS_GAP: Duration = Duration::from_millis(100);

/// How much a proof may cost gleak, per pass.
#[derive(Clone, Copy, Debug)]
pub struct ProofBudget {
    pub bytes: u64,
    pub time: Duration,
}

impl Default for ProofBudget {
    fn default() -> Self {
        Self { bytes: 2 << 30, time: Duration::from_secs(20) }
    }
}

/// What a proof found.
#[derive(Clone, Debug, Default)]
pub struct ProofOutcome {
    /// goid → the objects it waits on: goroutines that can never run again.
    pub proven: HashMap<u64, Vec<u64>>,
    /// Blocked goroutines whose wait objects were known: what the proof judged.
    pub candidates: usize,
    /// Blocked goroutines whose wait objects a goroutine waiting on the network
    /// holds, in either pass: a live connection's goroutines. Either, because a
    /// connection's reader is off the network for a moment after each response.
    pub network_held: HashSet<u64>,
    /// Why no proof could be made (budget, unreadable memory, unknown layout).
    pub inconclusive: Option<String>,
    /// By group (the `groups` of [`prove`]): the heap its unreachable goroutines
    /// alone keep alive, as the last pass measured it.
    pub retained: HashMap<u64, Retained>,
    /// By wait object of a blocked goroutine that marking reached: the shortest
    /// chain of references from a root to it (what keeps a suspect alive).
    pub held: HashMap<u64, Chain>,
    pub heap_bytes: u64,
    pub bytes_read: u64,
    pub elapsed: Duration,
}

/// `(sp, pc)` of a stopped thread of the target by its thread id, if known (see
/// [`crate::process::threads`]).
pub type ThreadRegisters<'a> = &'a dyn Fn(u64) -> Option<(u64, u64)>;

/// Runs the proof on the process behind `mem`; `groups` (goid → group, a leak
/// site) says whose retained memory to measure; `threads` where a running
/// goroutine's stopped thread is, to scan its live frames only (the goroutine
/// calling exit under `gleak run`, every running one of a frozen process).
pub fn prove(
    mem: &dyn ReadMemory,
    binary: &GoBinary,
    info: &RuntimeInfo,
    bias: u64,
    budget: ProofBudget,
    groups: &HashMap<u64, u64>,
    threads: ThreadRegisters,
) -> ProofOutcome {
    let started = Instant::now();
    let mut outcome = ProofOutcome::default();
    let mut passes: Vec<HashMap<u64, (Vec<u64>, u64)>> = Vec::new();
    for pass in 0..2 {
        if pass > 0 {
            std::thread::sleep(PASS_GAP);
        }
        match one_pass(mem, binary, info, bias, budget, (groups, threads), &mut outcome) {
            Ok(found) => passes.push(found),
            Err(why) => {
                outcome.inconclusive = Some(why);
                outcome.elapsed = started.elapsed();
                return outcome;
            }
        }
    }
    let (first, second) = (&passes[0], &passes[1]);
    outcome.proven = first
        .iter()
        .filter(|(goid, found)| second.get(goid) == Some(found))
        .map(|(&goid, (objects, _))| (goid, objects.clone()))
        .collect();
    outcome.elapsed = started.elapsed();
    outcome
}

/// One marking pass: goid → (wait objects, `g.sched.sp`) of the unreachable.
fn one_pass(
    mem: &dyn ReadMemory,
    binary: &GoBinary,
    info: &RuntimeInfo,
    bias: u64,
    budget: ProofBudget,
    (groups, threads): (&HashMap<u64, u64>, ThreadRegisters),
    outcome: &mut ProofOutcome,
) -> Result<HashMap<u64, (Vec<u64>, u64)>, String> {
    let layout = &info.layout;
    let heap_layout = layout.heap.ok_or("the heap's layout is not known for this release")?;
    let blocked_layout = layout.blocked.ok_or("blocked goroutines' structures are not known for this release")?;
    let table = info.goroutine_table.as_ref().map_err(|why| format!("no goroutine table: {why}"))?;
    let mheap = info.mheap.as_ref().map_err(|why| format!("no runtime.mheap_: {why}"))?.wrapping_add(bias);
    let deadline = Instant::now() + budget.time;

    let goroutines =
        all_goroutines(mem, table, layout, bias).map_err(|e| format!("goroutine table unreadable: {e}"))?;
    let blocked: Vec<Blocked> = goroutines
        .iter()
        .filter(|(_, r)| r.is_blocked())
        .filter_map(|&(g_addr, r)| {
            let kind = waits::kind_for(info.wait_reasons.get(r.wait_reason).class)?;
            Some(Blocked { goid: r.goid, g_addr, waiting: r.waiting, kind })
        })
        .collect();
    let semtable = info.semtable.as_ref().ok().map(|t| t.wrapping_add(bias));
    let waits = waits::read(mem, &blocked_layout, semtable, &blocked);
    outcome.candidates = waits.by_goid.len();

    let (heap, specials) = read_heap(mem, &heap_layout, mheap)?;
    outcome.heap_bytes = heap.bytes();
    let syscall_sps = read_syscall_sps(mem, &heap_layout, &goroutines);

    let mut roots = Roots {
        data: binary
            .variable_sections()
            .filter(|s| !s.name.starts_with(".noptr"))
            .map(|s| s.vaddr.wrapping_add(bias)..s.vaddr.wrapping_add(bias).saturating_add(s.size))
            .collect(),
        g_size: u64::from(heap_layout.g_size),
        opaque: waits.sudogs.clone(),
        extra: specials,
        goroutines: Vec::with_capacity(goroutines.len()),
        groups: groups.clone(),
    };
    for &(g_addr, r) in &goroutines {
        roots.opaque.insert(g_addr);
        let lo = r.stack_hi.saturating_sub(r.stack_bytes);
        // A running goroutine whose thread is stopped on its stack: from there.
        let stopped = (r.status == gstatus::RUNNING)
            .then(|| running_thread(mem, (binary, bias), layout, g_addr, threads))
            .flatten()
            .filter(|(sp, _)| (lo..r.stack_hi).contains(sp));
        let sp = match r.status {
            gstatus::SYSCALL => syscall_sps.get(&g_addr).copied().unwrap_or(lo),
            gstatus::RUNNING => stopped.map_or(lo, |(sp, _)| sp),
            _ => r.sched_sp,
        };
        let waits_on = if never_wakes(info, &r) {
            Vec::new()
        } else {
            waits.by_goid.get(&r.goid).map(|o| o.iter().map(|w| w.addr).collect()).unwrap_or_default()
        };
        roots.goroutines.push(Goroutine {
            goid: r.goid,
            g_addr,
            stack: lo..r.stack_hi,
            sp,
            pc: match r.status {
                gstatus::SYSCALL => 0,
                gstatus::RUNNING => stopped.map_or(0, |(_, pc)| pc),
                _ => r.sched_pc,
            },
            never_wakes: never_wakes(info, &r),
            on_network: r.is_blocked() && info.wait_reasons.get(r.wait_reason).class == WaitClass::Network,
            waits_on,
        });
    }
    let sched_sp: HashMap<u64, u64> = goroutines.iter().map(|(_, r)| (r.goid, r.sched_sp)).collect();
    let stack_maps: Box<dyn StackMaps> = match binary.pclntab() {
        Some(pcln) => Box::new(GoStackMaps { program: Program { pcln, bias, arch: binary.arch } }),
        None => Box::new(WholeStacks),
    };
    let (marking, stats) =
        reach::mark(mem, &heap, &roots, stack_maps.as_ref(), Budget { bytes: budget.bytes, deadline });
    outcome.bytes_read += stats.bytes_read;
    match marking {
        Marking::Inconclusive(why) => Err(why),
        Marking::Done { unreachable, network_held, retained } => {
            outcome.network_held.extend(network_held);
            outcome.retained = retained;
            // What holds the objects that blocked goroutines of the program's
            // sites wait on, when marking reached them (a suspect's): once, on
            // the last pass.
            if outcome.held.is_empty() {
                let mut targets: Vec<u64> = roots
                    .goroutines
                    .iter()
                    .filter(|g| !unreachable.contains(&g.goid) && groups.contains_key(&g.goid))
                    .flat_map(|g| g.waits_on.iter().copied())
                    .collect();
                targets.sort_unstable();
                targets.dedup();
                targets.truncate(MAX_EXPLAINED);
                if !targets.is_empty() {
                    let budget = Budget { bytes: budget.bytes, deadline };
                    let program: Vec<std::ops::Range<u64>> = binary
                        .program_variables()
                        .into_iter()
                        .map(|r| r.start.wrapping_add(bias)..r.end.wrapping_add(bias))
                        .collect();
                    outcome.held = reach::explain(mem, &heap, &roots, stack_maps.as_ref(), &targets, &program, budget);
                }
            }
            Ok(roots
                .goroutines
                .iter()
                .filter(|g| unreachable.contains(&g.goid))
                .map(|g| (g.goid, (g.waits_on.clone(), sched_sp.get(&g.goid).copied().unwrap_or(0))))
                .collect())
        }
    }
}

/// `(sp, pc)` of the thread running the goroutine at `g_addr`, if it is stopped:
/// `g.m.procid` names the thread.
fn running_thread(
    mem: &dyn ReadMemory,
    (binary, bias): (&GoBinary, u64),
    layout: &crate::runtime::layout::RuntimeLayout,
    g_addr: u64,
    threads: ThreadRegisters,
) -> Option<(u64, u64)> {
    let m = mem.read_u64(g_addr.checked_add(u64::from(layout.g_m))?).ok().filter(|&m| m != 0)?;
    let tid = mem.read_u64(m.checked_add(u64::from(layout.m_procid?))?).ok().filter(|&t| t != 0)?;
    let (sp, pc) = threads(tid)?;
    // Stopped at a signal handler's first instruction (Go's `runtime.sigtramp`,
    // on the signal stack): the goroutine's registers are in the kernel's frame.
    let in_sigtramp = binary
        .pclntab()
        .and_then(|p| p.function_containing(pc.wrapping_sub(bias)))
        .is_some_and(|(name, range)| name == "runtime.sigtramp" && range.entry == pc.wrapping_sub(bias));
    if in_sigtramp {
        let (sp_at, pc_at) = binary.arch.signal_frame_sp_pc();
        let read = |off: u64| mem.read_u64(sp.checked_add(off)?).ok();
        return Some((read(sp_at)?, read(pc_at)?));
    }
    Some((sp, pc))
}

fn never_wakes(info: &RuntimeInfo, r: &GRecord) -> bool {
    r.is_blocked() && info.wait_reasons.get(r.wait_reason).class.never_wakes()
}

/// The in-use spans (from `mheap_.allspans`) and the special records hung off
/// them: (record, its size) and (the object it is about, 0), as extra roots.
fn read_heap(mem: &dyn ReadMemory, h: &HeapLayout, mheap: u64) -> Result<(HeapIndex, Vec<(u64, u64)>), String> {
    let header = mheap + u64::from(h.mheap_allspans);
    let ptr = mem.read_u64(header).map_err(|e| format!("mheap_.allspans unreadable: {e}"))?;
    let len = mem.read_u64(header + 8).map_err(|e| format!("mheap_.allspans unreadable: {e}"))?;
    if len > MAX_SPANS {
        return Err(format!("mheap_.allspans claims {len} spans"));
    }
    let mut raw = vec![0u8; len as usize * 8];
    mem.read(ptr, &mut raw).map_err(|e| format!("mheap_.allspans' array unreadable: {e}"))?;
    let addrs: Vec<u64> =
        raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).filter(|&a| a != 0).collect();
    let fields = [
        h.mspan_start,
        h.mspan_limit,
        h.mspan_elemsize,
        h.mspan_spanclass,
        h.mspan_state,
        h.mspan_specials,
        h.mspan_freeindex,
        h.mspan_alloc_bits,
    ];
    let span_len = fields.iter().max().copied().unwrap_or(0) as usize + 8;
    let (buf, ok) = mem.read_many(&addrs, span_len);
    let mut spans = Vec::new();
    let mut specials = Vec::new();
    let mut alloc_bits = Vec::new();
    for i in (0..addrs.len()).filter(|&i| ok[i]) {
        let chunk = &buf[i * span_len..(i + 1) * span_len];
        let word = |off: u32| u64::from_le_bytes(chunk[off as usize..off as usize + 8].try_into().expect("8 bytes"));
        if chunk[h.mspan_state as usize] != MSPAN_IN_USE {
            continue;
        }
        let span = Span::new(
            word(h.mspan_start),
            word(h.mspan_limit),
            word(h.mspan_elemsize),
            chunk[h.mspan_spanclass as usize] & 1 != 0,
        );
        let head = word(h.mspan_specials);
        if head != 0 {
            specials.push((span.start, head));
        }
        let freeindex = match h.mspan_freeindex_bytes {
            2 => u64::from(u16::from_le_bytes([
                chunk[h.mspan_freeindex as usize],
                chunk[h.mspan_freeindex as usize + 1],
            ])),
            _ => word(h.mspan_freeindex),
        };
        alloc_bits.push((word(h.mspan_alloc_bits), freeindex));
        spans.push(span);
    }
    read_allocated(mem, &mut spans, &alloc_bits);
    let mut extra = Vec::new();
    let mut seen = HashSet::new();
    for (start, mut special) in specials {
        while special != 0 && seen.len() < MAX_SPECIALS && seen.insert(special) {
            let mut rec = [0u8; 24];
            if mem.read(special, &mut rec).is_err() {
                break;
            }
            let at = h.special_offset as usize;
            let offset = match h.special_offset_bytes {
                2 => u64::from(u16::from_le_bytes([rec[at], rec[at + 1]])),
                _ => u64::from_le_bytes(rec[at..at + 8].try_into().expect("8 bytes")),
            };
            extra.push((special, SPECIAL_BYTES));
            extra.push((start.saturating_add(offset), 0));
            special = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        }
    }
    Ok((HeapIndex::new(spans), extra))
}

/// Which objects of each span are allocated: its `allocBits` (allocated at the
/// last sweep) plus every object below `freeindex` (allocated since). A span
/// whose bits are implausible or unreadable keeps `None`: every slot counts.
fn read_allocated(mem: &dyn ReadMemory, spans: &mut [Span], alloc_bits: &[(u64, u64)]) {
    let mut reads = Vec::new();
    let mut which = Vec::new();
    for (i, (span, &(bits, freeindex))) in spans.iter().zip(alloc_bits).enumerate() {
        let Some(objects) = (span.limit.checked_sub(span.start)).and_then(|b| b.checked_div(span.elem_size)) else {
            continue;
        };
        if bits == 0 || objects == 0 || objects > MAX_SPAN_OBJECTS || freeindex > objects {
            continue;
        }
        reads.push((bits, objects.div_ceil(8) as usize));
        which.push((i, objects, freeindex));
    }
    let (buf, landed) = mem.read_ranges(&reads);
    let read = landed.iter().filter(|r| r.is_some()).count();
    log::debug!("allocation bits of {read} of {} heap spans", spans.len());
    for (&(i, objects, freeindex), range) in which.iter().zip(landed) {
        let Some(range) = range else { continue };
        let mut words = vec![0u64; objects.div_ceil(64) as usize];
        for (byte, &b) in buf[range].iter().enumerate() {
            words[byte / 8] |= u64::from(b) << ((byte % 8) * 8);
        }
        for index in 0..freeindex {
            words[(index / 64) as usize] |= 1 << (index % 64);
        }
        spans[i].allocated = Some(words);
    }
}

/// A descheduled goroutine's stack as Go's collector sees it: the pointer words
/// its frames' stack maps name (see [`crate::process::unwind::pointer_ranges`]).
struct GoStackMaps<'a> {
    program: Program<'a>,
}

impl StackMaps for GoStackMaps<'_> {
    fn pointer_ranges(&self, mem: &dyn ReadMemory, g: &Goroutine) -> Option<Vec<(u64, u64)>> {
        if g.pc == 0 || !g.stack.contains(&g.sp) {
            return None;
        }
        let len = (g.stack.end - g.sp).min(crate::process::unwind::MAX_STACK_BYTES);
        let (buf, landed) = mem.read_ranges(&[(g.sp, len as usize)]);
        let bytes = &buf[landed.first()?.clone()?];
        let mut ranges = crate::process::unwind::pointer_ranges(bytes, g.sp, g.pc, self.program);
        // A stack deeper than what was read: the rest whole.
        if g.sp + len < g.stack.end {
            ranges.push((g.sp + len, g.stack.end - (g.sp + len)));
        }
        Some(ranges)
    }
}

/// `g.syscallsp` of the goroutines in a system call.
fn read_syscall_sps(mem: &dyn ReadMemory, h: &HeapLayout, goroutines: &[(u64, GRecord)]) -> HashMap<u64, u64> {
    goroutines
        .iter()
        .filter(|(_, r)| r.status == gstatus::SYSCALL)
        .filter_map(|&(g, _)| Some((g, mem.read_u64(g + u64::from(h.g_syscallsp)).ok()?)))
        .collect()
}
