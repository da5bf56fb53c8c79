//! Reachability proof, from outside the process: which blocked goroutines can
//! never run again.
//!
//! The idea of the Go runtime's own leak detector (Go 1.26's goroutine leak
//! profile), done by reading memory while the target runs. Marking starts from the
//! roots: the binary's data and bss, and the stacks (and `g`s) of every goroutine
//! that can run by itself (running, runnable, in a system call, sleeping, waiting
//! on the network or a timer…); a stack's pointer slots come from [`StackMaps`]
//! where the binary's stack maps say which they are. It follows every word that
//! points into an allocated object of an in-use heap span (objects scanned whole,
//! so it can only over-estimate what is reachable; free slots, whose stale words
//! name dead objects' targets, are skipped; objects of `noscan` spans hold no
//! pointers and are not scanned). The `g`s and sudogs are never scanned as heap objects: through them
//! every blocked goroutine would reach its own wait object. A goroutine blocked on
//! a channel, semaphore or `sync.Cond` whose object gets marked could be woken:
//! its stack and `g` become roots too, until nothing changes (a fixpoint). The
//! goroutines left blocked on objects nothing runnable can reach can never run
//! again.
//!
//! Go's heap does not move, so memory read while the target runs describes real
//! objects; what the target changes meanwhile can make a pass wrong, which is why
//! the caller counts a proof only when a second pass agrees.

use std::{
    collections::{HashMap, HashSet},
    ops::Range,
    time::Instant,
};

use crate::process::memory::ReadMemory;

/// One in-use heap span: `[start, limit)` holds objects of `elem_size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub limit: u64,
    pub elem_size: u64,
    /// Its objects hold no pointers.
    pub noscan: bool,
    /// A bit per object, set for allocated ones (`allocBits`, and all below
    /// `freeindex`); `None`: unknown, every slot counts as allocated. A free
    /// slot keeps the stale words of the object it held, which must not be
    /// followed: they would reach what that dead object once pointed to.
    pub allocated: Option<Vec<u64>>,
}

impl Span {
    pub fn new(start: u64, limit: u64, elem_size: u64, noscan: bool) -> Self {
        Self { start, limit, elem_size, noscan, allocated: None }
    }

    fn is_allocated(&self, index: u64) -> bool {
        match &self.allocated {
            None => true,
            Some(bits) => bits.get((index / 64) as usize).is_some_and(|w| w & (1u64 << (index % 64)) != 0),
        }
    }
}

/// The in-use spans of a heap, sorted, for pointer → object lookups.
#[derive(Debug, Default)]
pub struct HeapIndex {
    spans: Vec<Span>,
}

impl HeapIndex {
    /// Drops spans that are empty, overlap a previous one or have no object size.
    pub fn new(mut spans: Vec<Span>) -> Self {
        spans.retain(|s| s.elem_size > 0 && s.limit > s.start);
        spans.sort_by_key(|s| s.start);
        let mut kept: Vec<Span> = Vec::with_capacity(spans.len());
        for s in spans {
            if kept.last().is_none_or(|last| s.start >= last.limit) {
                kept.push(s);
            }
        }
        Self { spans: kept }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes the spans' objects cover.
    pub fn bytes(&self) -> u64 {
        self.spans.iter().map(|s| s.limit - s.start).sum()
    }

    /// The span and object (its index in the span) holding `addr`.
    pub fn find(&self, addr: u64) -> Option<(usize, u64)> {
        let i = self.spans.partition_point(|s| s.start <= addr).checked_sub(1)?;
        let s = &self.spans[i];
        (addr < s.limit).then(|| (i, (addr - s.start) / s.elem_size))
    }

    fn object(&self, span: usize, index: u64) -> (u64, u64) {
        let s = &self.spans[span];
        let base = s.start + index * s.elem_size;
        (base, s.elem_size.min(s.limit - base))
    }
}

/// A goroutine as the marker sees it.
#[derive(Clone, Debug)]
pub struct Goroutine {
    pub goid: u64,
    /// Its `g`, scanned (`g_size` bytes) once it is a root.
    pub g_addr: u64,
    /// Its stack: `[lo, hi)`.
    pub stack: Range<u64>,
    /// Where its live frames start (its `sp` when descheduled); `stack.start` when
    /// unknown (a running goroutine).
    pub sp: u64,
    /// Its saved pc when descheduled (`g.sched.pc`), 0 when unknown: with it,
    /// [`StackMaps`] can tell which stack words hold pointers.
    pub pc: u64,
    /// What it waits on, if it is blocked in a way only another goroutine can end
    /// (channel, semaphore, `sync.Cond`); empty: it can run by itself, a root
    /// (unless it never wakes).
    pub waits_on: Vec<u64>,
    /// Blocked on nothing that can ever wake it (a nil channel, `select {}`).
    pub never_wakes: bool,
    /// Waiting on the network (`IO wait`): serving a connection.
    pub on_network: bool,
}

/// What marking needs besides the heap.
#[derive(Clone, Debug, Default)]
pub struct Roots {
    /// The binary's data and bss (runtime addresses).
    pub data: Vec<Range<u64>>,
    pub goroutines: Vec<Goroutine>,
    /// `sizeof(runtime.g)`.
    pub g_size: u64,
    /// Objects never scanned as heap objects: every `g` and the sudogs of blocked
    /// goroutines (through them each blocked goroutine would reach its own wait object).
    pub opaque: HashSet<u64>,
    /// Extra conservative roots: finalizer and cleanup records, and the objects
    /// they will be called with.
    pub extra: Vec<(u64, u64)>,
    /// Goroutines (by goid) whose retained memory is wanted, by group (a leak
    /// site): what the unreachable ones among them alone keep alive (see [`Retained`]).
    pub groups: HashMap<u64, u64>,
}

/// Heap memory that a group's unreachable goroutines keep alive and nothing able
/// to run does: the objects reachable from their stacks and not from any root.
/// An object several groups reach is counted once, as shared, in none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// The group's unreachable goroutines.
    pub goroutines: u64,
    pub bytes: u64,
    pub objects: u64,
    /// Of what the group reaches, what other groups reach too.
    pub shared_bytes: u64,
    pub shared_objects: u64,
}

/// Which parts of a goroutine's stack hold pointers, where that can be known
/// (Go's stack maps, from the binary).
pub trait StackMaps {
    /// `(address, length)` ranges of `g`'s stack to scan; `None`: all of `[sp, hi)`.
    fn pointer_ranges(&self, mem: &dyn ReadMemory, g: &Goroutine) -> Option<Vec<(u64, u64)>>;
}

/// Every stack scanned whole, from its `sp` up.
pub struct WholeStacks;

impl StackMaps for WholeStacks {
    fn pointer_ranges(&self, _: &dyn ReadMemory, _: &Goroutine) -> Option<Vec<(u64, u64)>> {
        None
    }
}

/// When to give up.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Most bytes of target memory read.
    pub bytes: u64,
    pub deadline: Instant,
}

/// The result of one marking pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marking {
    Done {
        /// goids of the blocked goroutines nothing runnable can reach.
        unreachable: HashSet<u64>,
        /// goids of blocked goroutines whose wait object a goroutine waiting on
        /// the network reaches from its stack (a connection's other goroutine).
        network_held: HashSet<u64>,
        /// By group ([`Roots::groups`]): what its unreachable goroutines retain.
        retained: HashMap<u64, Retained>,
    },
    /// The budget ran out (or the memory was unreadable); in words.
    Inconclusive(String),
}

/// Stats of a pass, for the report and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    pub bytes_read: u64,
    pub objects_marked: u64,
    pub goroutines_woken: u64,
}

/// Large objects are scanned in chunks of this many bytes.
const CHUNK: u64 = 1 << 20;

/// Marks from `roots` through `heap`, then answers which blocked goroutines stay
/// unreachable.
pub fn mark(
    mem: &dyn ReadMemory,
    heap: &HeapIndex,
    roots: &Roots,
    stacks: &dyn StackMaps,
    budget: Budget,
) -> (Marking, PassStats) {
    let mut m = Marker::new(heap, roots, stacks);
    let mut stats = PassStats::default();
    let mut woken: HashSet<usize> = HashSet::new();
    // First what goroutines serving the network hold, through their stacks alone…
    for (i, g) in roots.goroutines.iter().enumerate() {
        if g.waits_on.is_empty() && !g.never_wakes && g.on_network {
            m.wake(mem, g);
            woken.insert(i);
        }
    }
    if let Err(why) = m.fixpoint(mem, budget, &mut stats, &mut woken) {
        return (Marking::Inconclusive(why), stats);
    }
    let network_held: HashSet<u64> = roots
        .goroutines
        .iter()
        .enumerate()
        .filter(|(i, g)| woken.contains(i) && !g.waits_on.is_empty())
        .map(|(_, g)| g.goid)
        .collect();
    // …then everything: globals, finalizers, every goroutine that can run.
    for r in &roots.data {
        m.push(r.start, r.end - r.start);
    }
    for &(addr, len) in &roots.extra {
        m.mark_pointer(addr);
        m.push(addr, len);
    }
    for (i, g) in roots.goroutines.iter().enumerate() {
        if g.waits_on.is_empty() && !g.never_wakes && !woken.contains(&i) {
            m.wake(mem, g);
            woken.insert(i);
        }
    }
    if let Err(why) = m.fixpoint(mem, budget, &mut stats, &mut woken) {
        return (Marking::Inconclusive(why), stats);
    }
    stats.objects_marked = m.marked_count;
    let unreachable: HashSet<u64> =
        roots.goroutines.iter().enumerate().filter(|(i, _)| !woken.contains(i)).map(|(_, g)| g.goid).collect();
    let retained = match m.retain(mem, budget, &mut stats, &woken) {
        Ok(retained) => retained,
        Err(why) => return (Marking::Inconclusive(why), stats),
    };
    (Marking::Done { unreachable, network_held, retained }, stats)
}

/// [`Marker::owners`]' mark of an object two groups reach.
const SHARED: u64 = u64::MAX;

struct Marker<'a> {
    heap: &'a HeapIndex,
    roots: &'a Roots,
    stacks: &'a dyn StackMaps,
    /// Per span, a bit per object.
    marks: Vec<Vec<u64>>,
    marked_count: u64,
    queue: Vec<(u64, u64)>,
    /// Stacks of goroutines that are roots: objects on them are reachable.
    live_stacks: Vec<Range<u64>>,
    /// Small spans read whole, by span index: following a chain of objects (a
    /// list, a tree) one read per object would be one system call per object.
    span_cache: HashMap<usize, Vec<u8>>,
    cached_bytes: usize,
    /// While retained memory is measured (after marking), the group whose
    /// goroutines' stacks are being followed.
    retaining: Option<u64>,
    /// Objects no root reaches, by base address: the group that reached them
    /// first, or [`SHARED`].
    owners: HashMap<u64, u64>,
    retained: HashMap<u64, Retained>,
}

/// Spans up to this size are read whole and kept.
const CACHED_SPAN_MAX: u64 = 64 << 10;
/// The span cache starts over past this many bytes.
const SPAN_CACHE_MAX: usize = 64 << 20;
/// Queue entries handled per round of reads.
const BATCH_ITEMS: usize = 4096;

impl<'a> Marker<'a> {
    fn new(heap: &'a HeapIndex, roots: &'a Roots, stacks: &'a dyn StackMaps) -> Self {
        let marks = heap
            .spans
            .iter()
            .map(|s| vec![0u64; ((s.limit - s.start) / s.elem_size).div_ceil(64) as usize + 1])
            .collect();
        Self {
            heap,
            roots,
            stacks,
            marks,
            marked_count: 0,
            queue: Vec::new(),
            live_stacks: Vec::new(),
            span_cache: HashMap::new(),
            cached_bytes: 0,
            retaining: None,
            owners: HashMap::new(),
            retained: HashMap::new(),
        }
    }

    /// After marking: what each group's unreachable goroutines retain, following
    /// their stacks (their live frames, by the stack maps) through objects that no
    /// root reached, group after group.
    fn retain(
        &mut self,
        mem: &dyn ReadMemory,
        budget: Budget,
        stats: &mut PassStats,
        woken: &HashSet<usize>,
    ) -> Result<HashMap<u64, Retained>, String> {
        let roots = self.roots;
        let mut by_group: Vec<(u64, usize)> = roots
            .goroutines
            .iter()
            .enumerate()
            .filter(|(i, _)| !woken.contains(i))
            .filter_map(|(i, g)| roots.groups.get(&g.goid).map(|&group| (group, i)))
            .collect();
        by_group.sort_unstable();
        for (group, i) in by_group {
            self.retaining = Some(group);
            self.retained.entry(group).or_default().goroutines += 1;
            let g = &roots.goroutines[i];
            let sp = if g.stack.contains(&g.sp) { g.sp } else { g.stack.start };
            match self.stacks.pointer_ranges(mem, g) {
                Some(ranges) => ranges.into_iter().for_each(|(addr, len)| self.push(addr, len)),
                None => self.push(sp, g.stack.end.saturating_sub(sp)),
            }
            self.drain(mem, budget, stats)?;
        }
        self.retaining = None;
        Ok(std::mem::take(&mut self.retained))
    }

    /// Retention's marking of the object at `base` (`size` bytes), reached by
    /// `group`: whether to scan it.
    fn retain_object(&mut self, group: u64, base: u64, size: u64) -> bool {
        match self.owners.get(&base).copied() {
            None => {
                self.owners.insert(base, group);
                let r = self.retained.entry(group).or_default();
                r.bytes += size;
                r.objects += 1;
                true
            }
            Some(SHARED) => false,
            Some(owner) if owner == group => false,
            Some(owner) => {
                // Reached from two groups: shared, and so is all it reaches: scanned
                // again so that its descendants move too.
                self.owners.insert(base, SHARED);
                for g in [owner, group] {
                    let r = self.retained.entry(g).or_default();
                    r.shared_bytes += size;
                    r.shared_objects += 1;
                }
                let first = self.retained.entry(owner).or_default();
                first.bytes -= size;
                first.objects -= 1;
                true
            }
        }
    }

    /// Scans what is queued, wakes the blocked goroutines whose wait objects are
    /// now marked (their stacks become roots), and repeats until nothing changes.
    fn fixpoint(
        &mut self,
        mem: &dyn ReadMemory,
        budget: Budget,
        stats: &mut PassStats,
        woken: &mut HashSet<usize>,
    ) -> Result<(), String> {
        let roots = self.roots;
        loop {
            self.drain(mem, budget, stats)?;
            let newly: Vec<usize> = roots
                .goroutines
                .iter()
                .enumerate()
                .filter(|(i, g)| !woken.contains(i) && g.waits_on.iter().any(|&o| self.reachable(o)))
                .map(|(i, _)| i)
                .collect();
            if newly.is_empty() {
                return Ok(());
            }
            for i in newly {
                self.wake(mem, &roots.goroutines[i]);
                woken.insert(i);
                stats.goroutines_woken += 1;
            }
        }
    }

    fn push(&mut self, addr: u64, len: u64) {
        let mut at = addr;
        let end = addr.saturating_add(len);
        while at < end {
            let n = (end - at).min(CHUNK);
            self.queue.push((at, n));
            at += n;
        }
    }

    /// A goroutine that can run: its live frames and its `g` are roots.
    fn wake(&mut self, mem: &dyn ReadMemory, g: &Goroutine) {
        let sp = if g.stack.contains(&g.sp) { g.sp } else { g.stack.start };
        match self.stacks.pointer_ranges(mem, g) {
            Some(ranges) => {
                for (addr, len) in ranges {
                    self.push(addr, len);
                }
            }
            None => self.push(sp, g.stack.end.saturating_sub(sp)),
        }
        self.push(g.g_addr, self.roots.g_size);
        self.live_stacks.push(g.stack.clone());
    }

    /// Marks the object `word` points into, if it is a heap object not yet marked,
    /// and queues it for scanning unless its span is noscan or it is opaque.
    fn mark_pointer(&mut self, word: u64) {
        let Some((span, index)) = self.heap.find(word) else { return };
        if !self.heap.spans[span].is_allocated(index) {
            return;
        }
        let bits = &mut self.marks[span];
        let (slot, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if bits[slot] & bit != 0 {
            return;
        }
        if let Some(group) = self.retaining {
            let (base, size) = self.heap.object(span, index);
            if self.retain_object(group, base, size)
                && !self.heap.spans[span].noscan
                && !self.roots.opaque.contains(&base)
            {
                self.push(base, size);
            }
            return;
        }
        bits[slot] |= bit;
        self.marked_count += 1;
        let (base, size) = self.heap.object(span, index);
        if !self.heap.spans[span].noscan && !self.roots.opaque.contains(&base) {
            self.push(base, size);
        }
    }

    fn is_marked(&self, addr: u64) -> bool {
        match self.heap.find(addr) {
            Some((span, index)) => self.marks[span][(index / 64) as usize] & (1u64 << (index % 64)) != 0,
            None => false,
        }
    }

    /// Whether a wait object at `addr` can be reached by code that can run: a
    /// marked heap object, a global, or on the stack of a goroutine that can run.
    /// Memory that is none of these (unknown to the marker) counts as reachable.
    fn reachable(&self, addr: u64) -> bool {
        if self.heap.find(addr).is_some() {
            return self.is_marked(addr);
        }
        if self.roots.data.iter().any(|r| r.contains(&addr)) {
            return true;
        }
        if self.roots.goroutines.iter().any(|g| g.stack.contains(&addr)) {
            return self.live_stacks.iter().any(|s| s.contains(&addr));
        }
        true
    }

    /// Scans everything queued, batch by batch: objects of small spans from whole
    /// spans read once (and kept a while), the rest (roots, large objects) read as
    /// they are, neighbours together.
    fn drain(&mut self, mem: &dyn ReadMemory, budget: Budget, stats: &mut PassStats) -> Result<(), String> {
        while !self.queue.is_empty() {
            if Instant::now() > budget.deadline {
                return Err(format!("out of time after reading {} MiB", stats.bytes_read >> 20));
            }
            // Objects of spans already read are scanned at once, without a batch.
            let mut batch = Vec::new();
            while batch.len() < BATCH_ITEMS {
                let Some((addr, len)) = self.queue.pop() else { break };
                if !self.scan_cached(addr, len) {
                    batch.push((addr, len));
                }
            }
            if batch.is_empty() {
                continue;
            }
            // Which items come from small spans, and which of those spans to read.
            let mut direct = Vec::new();
            let mut from_spans = Vec::new();
            let mut wanted = Vec::new();
            for (addr, len) in batch {
                match self.heap.find(addr) {
                    Some((span, _)) if self.heap.spans[span].limit - self.heap.spans[span].start <= CACHED_SPAN_MAX => {
                        if !self.span_cache.contains_key(&span) && !wanted.contains(&span) {
                            wanted.push(span);
                        }
                        from_spans.push((span, addr, len));
                    }
                    _ => direct.push((addr, len as usize)),
                }
            }
            if self.cached_bytes > SPAN_CACHE_MAX {
                self.span_cache.clear();
                self.cached_bytes = 0;
                wanted = from_spans.iter().map(|&(span, _, _)| span).collect();
                wanted.sort_unstable();
                wanted.dedup();
            }
            let reads: Vec<(u64, usize)> = wanted
                .iter()
                .map(|&i| (self.heap.spans[i].start, (self.heap.spans[i].limit - self.heap.spans[i].start) as usize))
                .collect();
            let (merged, parts) = merge_ranges(direct);
            stats.bytes_read += reads.iter().chain(&merged).map(|&(_, len)| len as u64).sum::<u64>();
            if stats.bytes_read > budget.bytes {
                return Err(format!("read budget of {} MiB exhausted", budget.bytes >> 20));
            }
            let (buf, spans) = mem.read_ranges(&reads);
            for (&span, range) in wanted.iter().zip(spans) {
                if let Some(range) = range {
                    self.cached_bytes += range.len();
                    self.span_cache.insert(span, buf[range].to_vec());
                }
            }
            let mut words = Vec::new();
            for (span, addr, len) in from_spans {
                let Some(bytes) = self.span_cache.get(&span) else { continue };
                let off = (addr - self.heap.spans[span].start) as usize;
                let end = (off + len as usize).min(bytes.len());
                words.extend(candidate_words(addr, &bytes[off.min(end)..end]));
            }
            let (buf, spans) = mem.read_ranges(&merged);
            for (read, offset, len) in parts {
                let Some(range) = &spans[read] else { continue };
                let start = range.start + offset;
                words.extend(candidate_words(merged[read].0 + offset as u64, &buf[start..start + len]));
            }
            for w in words {
                if w >= 4096 {
                    self.mark_pointer(w);
                }
            }
        }
        Ok(())
    }
}

impl Marker<'_> {
    /// Scans `[addr, addr + len)` from the span cache; `false` if its span is not there.
    fn scan_cached(&mut self, addr: u64, len: u64) -> bool {
        let Some((span, _)) = self.heap.find(addr) else { return false };
        // Out of the cache while its words are marked (marking needs `self`).
        let Some(bytes) = self.span_cache.remove(&span) else { return false };
        let off = (addr - self.heap.spans[span].start) as usize;
        let end = (off + len as usize).min(bytes.len());
        for w in candidate_words(addr, &bytes[off.min(end)..end]) {
            if w >= 4096 {
                self.mark_pointer(w);
            }
        }
        self.span_cache.insert(span, bytes);
        true
    }
}

/// Where a reference chain starts: what can run holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainRoot {
    /// A word of the binary's data or bss, at this (run-time) address.
    Global(u64),
    /// A word on the stack of a goroutine that can run, at this address.
    Stack { goid: u64, addr: u64 },
    /// A finalizer's or cleanup's record.
    Special(u64),
}

/// One object of a reference chain: where it is, how big, and at which offset
/// it holds the pointer to the next one (for the last, to the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub object: u64,
    pub size: u64,
    pub offset: u64,
}

/// The shortest chain of references from a root to a target object: the root's
/// word points to `hops[0]`, each hop's word at `offset` to the next, the last
/// one's to the target (empty `hops`: the root points to the target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub root: ChainRoot,
    /// The root word's pointer is into the target (or the first hop) at this offset.
    pub hops: Vec<Hop>,
    /// The target's object (its base) and size; the target may lie inside it.
    pub target: Hop,
}

/// Objects a search for reference chains visits at most (its memory is a few
/// words per object).
const EXPLAIN_MAX_OBJECTS: usize = 1 << 22;

/// Who first reached an object, breadth first: the shortest chain's last step.
#[derive(Clone, Copy, Debug)]
enum Reached {
    Root(ChainRoot),
    /// From the object at this base, at this offset in it.
    Object(u64, u64),
}

/// For each target address (a channel, a semaphore's address: what blocked
/// goroutines wait on), the shortest chain of references that reaches it from
/// the roots (globals, stacks of goroutines that can run by themselves,
/// finalizer records), breadth first, layer by layer (each layer's objects read
/// in one vectored read per batch). A target in the data sections is its own
/// root. Targets no root reaches, or not found within the budget, are absent.
///
/// The program's own variables (`program`, run-time ranges) and the stacks come
/// first: a chain from them says what in the program holds the object; only the
/// targets they do not reach are searched from every root (the runtime's own
/// structures, which keep stale words, included).
pub fn explain(
    mem: &dyn ReadMemory,
    heap: &HeapIndex,
    roots: &Roots,
    stacks: &dyn StackMaps,
    targets: &[u64],
    program: &[Range<u64>],
    budget: Budget,
) -> HashMap<u64, Chain> {
    if program.is_empty() {
        return explain_from(mem, heap, roots, stacks, targets, None, budget);
    }
    let mut found = explain_from(mem, heap, roots, stacks, targets, Some(program), budget);
    let rest: Vec<u64> = targets.iter().copied().filter(|t| !found.contains_key(t)).collect();
    if !rest.is_empty() {
        found.extend(explain_from(mem, heap, roots, stacks, &rest, None, budget));
    }
    found
}

/// [`explain`] from the roots, the data sections limited to `program` if given.
fn explain_from(
    mem: &dyn ReadMemory,
    heap: &HeapIndex,
    roots: &Roots,
    stacks: &dyn StackMaps,
    targets: &[u64],
    program: Option<&[Range<u64>]>,
    budget: Budget,
) -> HashMap<u64, Chain> {
    let mut found: HashMap<u64, Chain> = HashMap::new();
    // Target address → the object holding it (its base); data targets are done.
    let mut wanted: HashMap<u64, Vec<u64>> = HashMap::new();
    for &t in targets {
        match heap.find(t) {
            Some((span, index)) => wanted.entry(heap.object(span, index).0).or_default().push(t),
            None if roots.data.iter().any(|r| r.contains(&t)) => {
                let target = Hop { object: t, size: 8, offset: 0 };
                found.insert(t, Chain { root: ChainRoot::Global(t), hops: Vec::new(), target });
            }
            None => {}
        }
    }
    if wanted.is_empty() {
        return found;
    }
    let mut reached: HashMap<u64, Reached> = HashMap::new();
    // Ranges to scan, each with who holds it: a root's, or an object's (base).
    let mut layer: Vec<(u64, u64, Option<ChainRoot>)> = Vec::new();
    let data: &[Range<u64>] = program.unwrap_or(&roots.data);
    for r in data {
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(CHUNK);
            layer.push((at, n, Some(ChainRoot::Global(0))));
            at += n;
        }
    }
    for g in roots.goroutines.iter().filter(|g| g.waits_on.is_empty() && !g.never_wakes) {
        let sp = if g.stack.contains(&g.sp) { g.sp } else { g.stack.start };
        let ranges = stacks.pointer_ranges(mem, g).unwrap_or_else(|| vec![(sp, g.stack.end.saturating_sub(sp))]);
        for (addr, len) in ranges {
            layer.push((addr, len, Some(ChainRoot::Stack { goid: g.goid, addr: 0 })));
        }
    }
    for &(addr, len) in &roots.extra {
        layer.push((addr, len, Some(ChainRoot::Special(addr))));
    }
    let mut bytes_read = 0u64;
    while !layer.is_empty() && !wanted.is_empty() {
        if Instant::now() > budget.deadline || bytes_read > budget.bytes || reached.len() > EXPLAIN_MAX_OBJECTS {
            break;
        }
        let mut next: Vec<(u64, u64, Option<ChainRoot>)> = Vec::new();
        for batch in layer.chunks(BATCH_ITEMS) {
            let reads: Vec<(u64, usize)> = batch.iter().map(|&(a, n, _)| (a, n as usize)).collect();
            bytes_read += reads.iter().map(|&(_, n)| n as u64).sum::<u64>();
            let (buf, spans) = mem.read_ranges(&reads);
            for (&(addr, _, holder), range) in batch.iter().zip(spans) {
                let Some(range) = range else { continue };
                for (k, w) in candidate_words(addr, &buf[range]).enumerate() {
                    let Some((span, index)) = heap.find(w).filter(|&(s, i)| heap.spans[s].is_allocated(i)) else {
                        continue;
                    };
                    let (base, size) = heap.object(span, index);
                    if reached.contains_key(&base) {
                        continue;
                    }
                    let word_at = addr + 8 * k as u64;
                    let how = match holder {
                        Some(ChainRoot::Global(_)) => Reached::Root(ChainRoot::Global(word_at)),
                        Some(ChainRoot::Stack { goid, .. }) => Reached::Root(ChainRoot::Stack { goid, addr: word_at }),
                        Some(special) => Reached::Root(special),
                        None => {
                            // An object's word: the object is the one containing `addr`.
                            let owner = heap.find(addr).map_or(addr, |(s, i)| heap.object(s, i).0);
                            Reached::Object(owner, word_at - owner)
                        }
                    };
                    reached.insert(base, how);
                    if let Some(addresses) = wanted.remove(&base) {
                        for t in addresses {
                            found.insert(t, chain_to(&reached, heap, base, size));
                        }
                    }
                    if !heap.spans[span].noscan && !roots.opaque.contains(&base) {
                        let mut at = base;
                        while at < base + size {
                            let n = (base + size - at).min(CHUNK);
                            next.push((at, n, None));
                            at += n;
                        }
                    }
                }
            }
        }
        layer = next;
    }
    found
}

/// The chain to the object at `base` (`size` bytes), back through who reached whom.
fn chain_to(reached: &HashMap<u64, Reached>, heap: &HeapIndex, base: u64, size: u64) -> Chain {
    let mut hops = Vec::new();
    let mut at = base;
    // A chain is at most as long as the objects reached (no cycles: each object
    // is reached once, from one reached before it).
    for _ in 0..=reached.len() {
        match reached.get(&at) {
            Some(Reached::Object(from, offset)) => {
                let from_size = heap.find(*from).map_or(0, |(s, i)| heap.object(s, i).1);
                hops.push(Hop { object: *from, size: from_size, offset: *offset });
                at = *from;
            }
            Some(Reached::Root(root)) => {
                hops.reverse();
                return Chain { root: *root, hops, target: Hop { object: base, size, offset: 0 } };
            }
            None => break,
        }
    }
    hops.reverse();
    Chain { root: ChainRoot::Special(0), hops, target: Hop { object: base, size, offset: 0 } }
}

/// Words of a write barrier buffer (`runtime.wbBuf`, in every `p`): 512 of them
/// after its `next` and `end`, on every release 1.19–1.27.
const WB_BUF_WORDS: usize = 512;

/// The words of `bytes` (read at `addr`) that may be pointers: all of them but
/// the contents of write barrier buffers. Those are `uintptr`s the collector
/// never scans, and they keep, long after being flushed, every pointer some
/// write stored during a GC cycle. A buffer is known by itself: `end` is the
/// address just past its 512 words, and `next` lies between them and `end`.
fn candidate_words(addr: u64, bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let count = bytes.len() / 8;
    let at = move |k: usize| word(&bytes[8 * k..8 * k + 8]);
    let mut skip_until = 0usize;
    (0..count).filter_map(move |k| {
        if k < skip_until {
            return None;
        }
        let w = at(k);
        let buf = addr + 8 * k as u64 + 16;
        if k + 1 < count && at(k + 1) == buf + 8 * WB_BUF_WORDS as u64 && (buf..=at(k + 1)).contains(&w) {
            skip_until = k + 2 + WB_BUF_WORDS;
            return None;
        }
        Some(w)
    })
}

fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Ranges closer than this are read as one.
const MERGE_GAP: u64 = 512;
/// The most one merged read covers.
const MERGE_MAX: usize = 1 << 20;

/// Where a range lies in the merged reads: (read index, offset, length).
type Part = (usize, usize, usize);

/// Sorts and merges `ranges` whose gaps are under [`MERGE_GAP`]: the reads to make,
/// and where each range lies in them (read index, offset, length).
fn merge_ranges(mut ranges: Vec<(u64, usize)>) -> (Vec<(u64, usize)>, Vec<Part>) {
    ranges.sort_unstable_by_key(|&(addr, _)| addr);
    let mut reads: Vec<(u64, usize)> = Vec::new();
    let mut parts = Vec::with_capacity(ranges.len());
    for (addr, len) in ranges {
        let index = reads.len().wrapping_sub(1);
        if let Some(last) = reads.last_mut() {
            let end = last.0 + last.1 as u64;
            let new_end = end.max(addr + len as u64);
            if addr >= last.0 && addr <= end + MERGE_GAP && (new_end - last.0) as usize <= MERGE_MAX {
                last.1 = (new_end - last.0) as usize;
                parts.push((index, (addr - last.0) as usize, len));
                continue;
            }
        }
        reads.push((addr, len));
        parts.push((reads.len() - 1, 0, len));
    }
    (reads, parts)
}

#[cfg(test)]
// One data range is what these synthetic programs have.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::process::memory::RecordedMemory;
    use std::time::Duration;

    const HEAP: u64 = 0xc000_000000;
    const DATA: u64 = 0x50_0000;
    const STACKS: u64 = 0xc100_000000;

    fn budget() -> Budget {
        Budget { bytes: 1 << 30, deadline: Instant::now() + Duration::from_secs(10) }
    }

    /// A heap of 32-byte objects in one span (pointers allowed) and 16-byte ones in
    /// a noscan span.
    fn heap() -> HeapIndex {
        HeapIndex::new(vec![
            Span::new(HEAP, HEAP + 32 * 64, 32, false),
            Span::new(HEAP + 0x10000, HEAP + 0x10000 + 16 * 64, 16, true),
        ])
    }

    fn obj(i: u64) -> u64 {
        HEAP + 32 * i
    }

    fn noscan(i: u64) -> u64 {
        HEAP + 0x10000 + 16 * i
    }

    fn blocked(goid: u64, stack: u64, on: u64) -> Goroutine {
        Goroutine {
            goid,
            g_addr: 0,
            stack: stack..stack + 64,
            sp: stack,
            pc: 0,
            waits_on: vec![on],
            never_wakes: false,
            on_network: false,
        }
    }

    fn runnable(goid: u64, stack: u64) -> Goroutine {
        Goroutine {
            goid,
            g_addr: 0,
            stack: stack..stack + 64,
            sp: stack,
            pc: 0,
            waits_on: vec![],
            never_wakes: false,
            on_network: false,
        }
    }

    fn run(mem: &RecordedMemory, roots: &Roots) -> HashSet<u64> {
        match mark(mem, &heap(), roots, &WholeStacks, budget()).0 {
            Marking::Done { unreachable, .. } => unreachable,
            other => panic!("{other:?}"),
        }
    }

    /// The shortest chains: a global → object 0 (its word at +8) → object 1, the
    /// target; a runnable goroutine's stack → object 4; object 6 nothing reaches.
    /// Object 2 also reaches object 1, but from farther away.
    #[test]
    fn explains_what_holds_an_object_by_the_shortest_chain() {
        let mut mem = RecordedMemory::default();
        mem.insert_words(DATA, &[obj(0), obj(2)]);
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[1] = obj(1) + 16; // object 0, offset 8: an interior pointer
        heap_words[(32 * 2) / 8] = obj(3);
        heap_words[(32 * 3) / 8] = obj(1);
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(STACKS, &[0, 0, obj(4), 0, 0, 0, 0, 0]);
        let roots = Roots {
            data: vec![DATA..DATA + 16],
            goroutines: vec![runnable(9, STACKS), blocked(1, STACKS + 0x100, obj(1))],
            ..Roots::default()
        };
        mem.insert_words(STACKS + 0x100, &[0; 8]);
        let targets = [obj(1) + 16, obj(4), obj(6)];
        let chains = explain(&mem, &heap(), &roots, &WholeStacks, &targets, &[], budget());
        let to_1 = &chains[&(obj(1) + 16)];
        assert_eq!(to_1.root, ChainRoot::Global(DATA));
        assert_eq!(to_1.hops, [Hop { object: obj(0), size: 32, offset: 8 }]);
        assert_eq!(to_1.target, Hop { object: obj(1), size: 32, offset: 0 });
        let to_4 = &chains[&obj(4)];
        assert_eq!(to_4.root, ChainRoot::Stack { goid: 9, addr: STACKS + 16 });
        assert!(to_4.hops.is_empty());
        assert!(!chains.contains_key(&obj(6)), "nothing reaches object 6");
        // A target in the data sections holds itself.
        let in_data = explain(&mem, &heap(), &roots, &WholeStacks, &[DATA + 8], &[], budget());
        assert_eq!(in_data[&(DATA + 8)].root, ChainRoot::Global(DATA + 8));
        // The program's variables first: object 1 through the second global's
        // longer chain (2 → 3 → 1), as the first global is the runtime's here.
        let program = [DATA + 8..DATA + 16];
        let preferred = explain(&mem, &heap(), &roots, &WholeStacks, &[obj(1)], &program, budget());
        assert_eq!(preferred[&obj(1)].root, ChainRoot::Global(DATA + 8));
        assert_eq!(preferred[&obj(1)].hops.len(), 2);
    }

    /// Retained memory, by group: what only a group's unreachable goroutines reach.
    /// Goroutines 1 and 2 (group A) wait on channels 10 and 11 nothing else holds;
    /// 1's stack holds object 2 → 3 (a chain of its own), 2's holds object 4, which
    /// goroutine 3 (group B, waiting on 12) holds too, and object 5, which a global
    /// holds. A: objects 2, 3 and the two channels; shared with B: 4; 5 is no one's.
    #[test]
    fn retained_memory_is_what_only_a_group_reaches() {
        let mut mem = RecordedMemory::default();
        mem.insert_words(DATA, &[obj(5)]);
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[(32 * 2) / 8] = obj(3);
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(STACKS, &[obj(2), obj(10), 0, 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x100, &[obj(4), obj(5), obj(11), 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x200, &[obj(4), obj(12), 0, 0, 0, 0, 0, 0]);
        let (group_a, group_b) = (0x4000_1000, 0x4000_2000);
        let roots = Roots {
            data: vec![DATA..DATA + 8],
            goroutines: vec![
                blocked(1, STACKS, obj(10)),
                blocked(2, STACKS + 0x100, obj(11)),
                blocked(3, STACKS + 0x200, obj(12)),
                runnable(4, STACKS + 0x300),
            ],
            groups: [(1, group_a), (2, group_a), (3, group_b), (4, group_b)].into(),
            ..Roots::default()
        };
        mem.insert_words(STACKS + 0x300, &[0; 8]);
        let (Marking::Done { unreachable, retained, .. }, _) = mark(&mem, &heap(), &roots, &WholeStacks, budget())
        else {
            panic!("inconclusive")
        };
        assert_eq!(unreachable, [1, 2, 3].into());
        let a = retained[&group_a];
        assert_eq!((a.goroutines, a.objects, a.bytes), (2, 4, 4 * 32), "objects 2, 3, 10, 11: {a:?}");
        assert_eq!((a.shared_objects, a.shared_bytes), (1, 32), "{a:?}");
        let b = retained[&group_b];
        assert_eq!((b.goroutines, b.objects, b.bytes), (1, 1, 32), "its channel 12 only, not the runnable's: {b:?}");
        assert_eq!((b.shared_objects, b.shared_bytes), (1, 32), "{b:?}");
    }

    /// A global points to object 0, which points to 1 (a channel goroutine 1 waits
    /// on); object 2 (goroutine 2's channel) is referenced only by 3, which only 2's
    /// own stack references: 2 can never run, 1 can.
    #[test]
    fn globals_reach_through_objects_but_a_blocked_stack_does_not() {
        let mut mem = RecordedMemory::default();
        mem.insert_words(DATA, &[obj(0)]);
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[0] = obj(1) + 8; // interior pointer into object 1
        heap_words[(32 * 3) / 8] = obj(2);
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(STACKS, &[obj(3), 0, 0, 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x100, &[0; 8]);
        let roots = Roots {
            data: vec![DATA..DATA + 8],
            goroutines: vec![blocked(1, STACKS + 0x100, obj(1)), blocked(2, STACKS, obj(2))],
            ..Roots::default()
        };
        assert_eq!(run(&mem, &roots), HashSet::from([2]));
    }

    /// A global points to object 5, a free slot (not in allocBits, at or above
    /// freeindex) whose stale words still point to object 2, goroutine 1's
    /// channel: stale words are not followed, so 1 can never run. With the
    /// allocation bits unknown, the same slot counts as allocated and 1 is
    /// (conservatively) reachable.
    #[test]
    fn free_slots_are_not_followed() {
        let mut mem = RecordedMemory::default();
        mem.insert_words(DATA, &[obj(5)]);
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[(32 * 5) / 8] = obj(2);
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(STACKS, &[0; 8]);
        let roots =
            Roots { data: vec![DATA..DATA + 8], goroutines: vec![blocked(1, STACKS, obj(2))], ..Roots::default() };
        let mut span = Span::new(HEAP, HEAP + 32 * 64, 32, false);
        span.allocated = Some(vec![0b0000_0111]); // objects 0, 1 and 2
        let index = HeapIndex::new(vec![span]);
        match mark(&mem, &index, &roots, &WholeStacks, budget()).0 {
            Marking::Done { unreachable, .. } => assert_eq!(unreachable, HashSet::from([1])),
            other => panic!("{other:?}"),
        }
        assert_eq!(run(&mem, &roots), HashSet::new());
    }

    /// A write barrier buffer (next, end, 512 words) inside a root keeps stale
    /// copies of pointers: they are not followed; a word after it is.
    #[test]
    fn write_barrier_buffers_are_not_followed() {
        let mut mem = RecordedMemory::default();
        let mut data = vec![0u64; 2 + WB_BUF_WORDS + 1];
        let buf = DATA + 16;
        data[0] = buf + 8 * 10; // next: 10 entries recorded
        data[1] = buf + 8 * WB_BUF_WORDS as u64; // end
        data[2 + 3] = obj(2); // a stale entry: goroutine 2's channel
        data[2 + WB_BUF_WORDS] = obj(1); // a real pointer after the buffer
        mem.insert_words(DATA, &data);
        mem.insert_words(HEAP, &[0u64; 32 * 64 / 8]);
        mem.insert_words(STACKS, &[0; 8]);
        mem.insert_words(STACKS + 0x100, &[0; 8]);
        let roots = Roots {
            data: vec![DATA..DATA + 8 * data.len() as u64],
            goroutines: vec![blocked(1, STACKS, obj(1)), blocked(2, STACKS + 0x100, obj(2))],
            ..Roots::default()
        };
        assert_eq!(run(&mem, &roots), HashSet::from([2]));
    }

    /// Goroutine 1 waits on object 0; a runnable goroutine's stack holds a pointer
    /// to object 1, which holds one to object 0: 1 can be woken. Goroutine 2 waits
    /// on object 4, which only goroutine 1's stack references: once 1 is reachable,
    /// 2 is too (the fixpoint).
    #[test]
    fn woken_goroutines_become_roots() {
        let mut mem = RecordedMemory::default();
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[32 / 8] = obj(0);
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(STACKS, &[obj(1), 0, 0, 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x100, &[obj(4), 0, 0, 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x200, &[0; 8]);
        let roots = Roots {
            goroutines: vec![
                runnable(9, STACKS),
                blocked(1, STACKS + 0x100, obj(0)),
                blocked(2, STACKS + 0x200, obj(4)),
            ],
            ..Roots::default()
        };
        assert_eq!(run(&mem, &roots), HashSet::new());
    }

    /// A cycle of objects (0 → 1 → 0) that nothing else references: goroutines
    /// waiting on either can never run; marking terminates.
    #[test]
    fn cycles_unreferenced_from_roots_stay_unreachable() {
        let mut mem = RecordedMemory::default();
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[0] = obj(1);
        heap_words[32 / 8] = obj(0);
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(STACKS, &[obj(0), 0, 0, 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x100, &[obj(1), 0, 0, 0, 0, 0, 0, 0]);
        let roots = Roots {
            goroutines: vec![blocked(1, STACKS, obj(0)), blocked(2, STACKS + 0x100, obj(1))],
            ..Roots::default()
        };
        assert_eq!(run(&mem, &roots), HashSet::from([1, 2]));
        // Referenced from a global: both reachable.
        mem.insert_words(DATA, &[obj(1)]);
        let roots = Roots { data: vec![DATA..DATA + 8], ..roots };
        assert_eq!(run(&mem, &roots), HashSet::new());
    }

    /// A noscan object is marked but not scanned: what its bytes "point to" is not
    /// reached. An opaque object (a g or sudog) is not scanned either.
    #[test]
    fn noscan_and_opaque_objects_are_not_scanned() {
        let mut mem = RecordedMemory::default();
        let mut noscan_words = vec![0u64; 16 * 64 / 8];
        noscan_words[0] = obj(5);
        mem.insert_words(HEAP + 0x10000, &noscan_words);
        let mut heap_words = vec![0u64; 32 * 64 / 8];
        heap_words[(32 * 6) / 8] = obj(7); // object 6 (opaque) → 7
        mem.insert_words(HEAP, &heap_words);
        mem.insert_words(DATA, &[noscan(0), obj(6)]);
        mem.insert_words(STACKS, &[0; 8]);
        mem.insert_words(STACKS + 0x100, &[0; 8]);
        let roots = Roots {
            data: vec![DATA..DATA + 16],
            goroutines: vec![blocked(1, STACKS, obj(5)), blocked(2, STACKS + 0x100, obj(7))],
            opaque: HashSet::from([obj(6)]),
            ..Roots::default()
        };
        assert_eq!(run(&mem, &roots), HashSet::from([1, 2]));
        // Without the opaque mark, 6 is scanned and 7 reached.
        let roots = Roots { opaque: HashSet::new(), ..roots };
        assert_eq!(run(&mem, &roots), HashSet::from([1]));
    }

    /// A semaphore on the waiter's own stack (a local WaitGroup nothing else can
    /// see) is unreachable; one on a runnable goroutine's stack, or in a global, is
    /// reachable; an address the marker knows nothing of counts as reachable.
    #[test]
    fn wait_objects_outside_the_heap() {
        let mut mem = RecordedMemory::default();
        for i in 0..4 {
            mem.insert_words(STACKS + 0x100 * i, &[0; 8]);
        }
        let roots = Roots {
            data: vec![DATA..DATA + 64],
            goroutines: vec![
                blocked(1, STACKS, STACKS + 8),
                blocked(2, STACKS + 0x100, STACKS + 0x208),
                runnable(3, STACKS + 0x200),
                blocked(4, STACKS + 0x300, DATA + 16),
                blocked(5, STACKS + 0x400, 0x7fff_0000),
            ],
            ..Roots::default()
        };
        mem.insert_words(STACKS + 0x400, &[0; 8]);
        assert_eq!(run(&mem, &roots), HashSet::from([1]));
    }

    /// A goroutine waiting on the network holds object 2 on its stack: goroutine 1,
    /// waiting on it, is held by the network. Goroutine 3 waits on object 4, reached
    /// only from a global: reachable, but not held by the network. Goroutine 5 never
    /// wakes (a nil channel): its stack is no root, so goroutine 6, waiting on what
    /// only that stack references, can never run either.
    #[test]
    fn network_held_and_never_waking() {
        let mut mem = RecordedMemory::default();
        mem.insert_words(DATA, &[obj(4)]);
        mem.insert_words(STACKS, &[obj(2), 0, 0, 0, 0, 0, 0, 0]);
        mem.insert_words(STACKS + 0x500, &[obj(9), 0, 0, 0, 0, 0, 0, 0]);
        for i in 1..5 {
            mem.insert_words(STACKS + 0x100 * i, &[0; 8]);
        }
        mem.insert_words(STACKS + 0x600, &[0; 8]);
        let mut reader = runnable(10, STACKS);
        reader.on_network = true;
        let mut nil_chan = runnable(5, STACKS + 0x500);
        nil_chan.never_wakes = true;
        let roots = Roots {
            data: vec![DATA..DATA + 8],
            goroutines: vec![
                reader,
                blocked(1, STACKS + 0x100, obj(2)),
                blocked(3, STACKS + 0x200, obj(4)),
                nil_chan,
                blocked(6, STACKS + 0x600, obj(9)),
            ],
            ..Roots::default()
        };
        match mark(&mem, &heap(), &roots, &WholeStacks, budget()).0 {
            Marking::Done { unreachable, network_held, .. } => {
                assert_eq!(unreachable, HashSet::from([5, 6]));
                assert_eq!(network_held, HashSet::from([1]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_budget_makes_it_inconclusive() {
        let mut mem = RecordedMemory::default();
        mem.insert_words(DATA, &[0; 64]);
        let roots = Roots { data: vec![DATA..DATA + 512], ..Roots::default() };
        let tight = Budget { bytes: 100, deadline: Instant::now() + Duration::from_secs(10) };
        assert!(
            matches!(mark(&mem, &heap(), &roots, &WholeStacks, tight).0, Marking::Inconclusive(why) if why.contains("budget"))
        );
    }

    #[test]
    fn lookups() {
        let h = heap();
        assert_eq!(h.find(HEAP + 33), Some((0, 1)));
        assert_eq!(h.find(HEAP + 32 * 64), None);
        assert_eq!(h.find(HEAP - 1), None);
        assert_eq!(h.find(HEAP + 0x10000 + 17), Some((1, 1)));
        // Overlapping and empty spans are dropped.
        let h = HeapIndex::new(vec![
            Span::new(0x1000, 0x2000, 16, false),
            Span::new(0x1800, 0x2800, 16, false),
            Span::new(0x3000, 0x3000, 16, false),
            Span::new(0x4000, 0x5000, 0, false),
        ]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn neighbours_are_read_together() {
        // 0x1040 is 32 bytes past 0x1000's end: merged; 0x1300 is 640 past: not.
        let (reads, parts) = merge_ranges(vec![(0x2000, 64), (0x1000, 32), (0x1040, 64), (0x1300, 16), (0x9000, 8)]);
        assert_eq!(reads, [(0x1000, 0x80), (0x1300, 16), (0x2000, 64), (0x9000, 8)]);
        assert_eq!(parts, [(0, 0, 32), (0, 0x40, 64), (1, 0, 16), (2, 0, 64), (3, 0, 8)]);
        // Overlapping and nested ranges fold into one read.
        let (reads, _) = merge_ranges(vec![(0x1000, 0x100), (0x1010, 8), (0x10f8, 0x20)]);
        assert_eq!(reads, [(0x1000, 0x118)]);
    }
}
