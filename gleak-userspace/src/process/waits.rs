//! What each blocked goroutine waits on, read from memory without stopping the
//! target: the channels of its `g.waiting` sudogs (one per case of a `select`),
//! or the semaphore of a `sync.Mutex`/`RWMutex`/`WaitGroup` (the sudog's `elem`;
//! Go ≥ 1.26 links it from `g.waiting`, older releases only from the runtime's
//! semaphore table, `runtime.semtable`), or the notify list of a `sync.Cond`
//! (Go ≥ 1.26). And the state of each channel: buffer length and capacity, closed.

use std::collections::{HashMap, HashSet};

use crate::{
    process::memory::ReadMemory,
    runtime::{layout::BlockedLayout, waitreason::WaitClass},
};

/// What the blocked goroutines of one look at the target wait on.
#[derive(Debug, Default)]
pub struct Waits {
    /// Per goroutine, the objects it waits on.
    pub by_goid: HashMap<u64, Vec<WaitObject>>,
    /// Per object, the goroutines (of every site) waiting on it.
    pub waiters: HashMap<WaitObject, u64>,
    /// The state of each channel waited on.
    pub channels: HashMap<u64, ChanState>,
}

/// Where a blocked goroutine waits, and on which objects.
pub type WaitPlace = (crate::process::unwind::Sched, Vec<u64>);

impl Waits {
    /// Whether `goid` (its record `rec`) is blocked at `place`: the same place, on
    /// the same objects.
    pub fn blocked_at(&self, goid: u64, rec: &crate::process::snapshot::GRecord, (sched, objects): &WaitPlace) -> bool {
        rec.is_blocked()
            && rec.sched() == *sched
            && self.by_goid.get(&goid).is_some_and(|o| o.iter().map(|w| w.addr).eq(objects.iter().copied()))
    }

    /// Whether `goid` waits on one of `objects` now. (A goroutine that wakes
    /// often can be read mid-park, one of its select's channels not linked yet;
    /// and its stack may have moved since: neither changes what it waits on.)
    pub fn on_any_of(&self, goid: u64, objects: &[u64]) -> bool {
        self.by_goid.get(&goid).is_some_and(|now| now.iter().any(|w| objects.contains(&w.addr)))
    }
}

/// Most sudogs followed from one goroutine (a `select` has one per case; Go
/// allows 65 536 cases, real code a handful).
pub const MAX_SUDOGS: usize = 128;
/// Most sudogs visited in the semaphore table.
pub const MAX_SEMA_WAITERS: usize = 1 << 20;
/// `runtime.semTabSize`.
pub const SEM_TAB_SIZE: u64 = 251;
/// Bytes per `runtime.semtable` entry: a `semaRoot` padded to a cache line.
pub const SEM_TAB_ENTRY: u64 = 64;
/// `semaRoot.treap`: after the 8-byte `lock mutex`.
pub const SEMA_ROOT_TREAP: u64 = 8;

/// The kind of object a goroutine waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    Channel,
    /// A semaphore: the `sema` word of a `sync.Mutex`, `RWMutex` or `WaitGroup`.
    Semaphore,
    /// A `sync.Cond`'s notify list.
    Cond,
}

/// One object a goroutine waits on, by address in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitObject {
    pub kind: WaitKind,
    pub addr: u64,
}

/// A channel's state as memory shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ChanState {
    /// Elements in its buffer.
    pub len: u64,
    /// Its buffer's capacity (0: unbuffered).
    pub cap: u64,
    pub closed: bool,
}

impl ChanState {
    /// `unbuffered, open`, `buffer 3/8, closed`.
    pub fn describe(&self) -> String {
        let buffer = if self.cap == 0 { "unbuffered".to_string() } else { format!("buffer {}/{}", self.len, self.cap) };
        format!("{buffer}, {}", if self.closed { "closed" } else { "open" })
    }
}

/// The kind of object a goroutine blocked in a wait of this class waits on, if
/// any (`select {}` and nil-channel operations wait on nothing).
pub fn kind_for(class: WaitClass) -> Option<WaitKind> {
    match class {
        WaitClass::Channel => Some(WaitKind::Channel),
        WaitClass::Lock | WaitClass::WaitGroup => Some(WaitKind::Semaphore),
        WaitClass::Cond => Some(WaitKind::Cond),
        _ => None,
    }
}

/// A blocked goroutine whose wait object is to be read.
#[derive(Clone, Copy, Debug)]
pub struct Blocked {
    pub goid: u64,
    pub g_addr: u64,
    /// `g.waiting`.
    pub waiting: u64,
    /// What its wait reason says it waits on.
    pub kind: WaitKind,
}

/// What blocked goroutines wait on, and the sudogs that say so.
#[derive(Clone, Debug, Default)]
pub struct WaitRead {
    pub by_goid: HashMap<u64, Vec<WaitObject>>,
    /// Every sudog read (the reachability proof must not scan them).
    pub sudogs: HashSet<u64>,
}

/// Reads what each of `blocked` waits on: its `g.waiting` list, and for semaphore
/// waiters not linked there (Go ≤ 1.25) the semaphore table at `semtable`
/// (runtime address), if known.
pub fn read(mem: &dyn ReadMemory, layout: &BlockedLayout, semtable: Option<u64>, blocked: &[Blocked]) -> WaitRead {
    let mut found = from_waiting_lists(mem, layout, blocked);
    let unlinked: Vec<&Blocked> =
        blocked.iter().filter(|b| b.kind == WaitKind::Semaphore && !found.by_goid.contains_key(&b.goid)).collect();
    if let (false, Some(semtable)) = (unlinked.is_empty(), semtable) {
        let (by_g, sudogs) = from_semtable(mem, layout, semtable);
        found.sudogs.extend(sudogs);
        for b in unlinked {
            if let Some(&addr) = by_g.get(&b.g_addr) {
                found.by_goid.insert(b.goid, vec![WaitObject { kind: b.kind, addr }]);
            }
        }
    }
    found
}

/// Reads the wait objects on each goroutine's `g.waiting` list. A sudog belongs
/// to the goroutine only while its `g` field points back at it; anything else
/// (the goroutine woke meanwhile) is dropped.
fn from_waiting_lists(mem: &dyn ReadMemory, layout: &BlockedLayout, blocked: &[Blocked]) -> WaitRead {
    let s = &layout.sudog;
    let span = [s.g, s.elem, s.c, s.waitlink].into_iter().max().unwrap_or(0) as usize + 8;
    let mut out = WaitRead::default();
    // Breadth-first over the lists: one batched read per depth.
    let mut frontier: Vec<(u64, u64, u64, WaitKind)> =
        blocked.iter().filter(|b| b.waiting != 0).map(|b| (b.goid, b.g_addr, b.waiting, b.kind)).collect();
    for _ in 0..MAX_SUDOGS {
        if frontier.is_empty() {
            break;
        }
        let addrs: Vec<u64> = frontier.iter().map(|&(_, _, sudog, _)| sudog).collect();
        let (buf, ok) = mem.read_many(&addrs, span);
        let mut next = Vec::new();
        for (i, &(goid, g_addr, _, kind)) in frontier.iter().enumerate() {
            if !ok[i] {
                continue;
            }
            let chunk = &buf[i * span..(i + 1) * span];
            let word =
                |off: u32| u64::from_le_bytes(chunk[off as usize..off as usize + 8].try_into().expect("8 bytes"));
            if word(s.g) != g_addr {
                continue;
            }
            out.sudogs.insert(addrs[i]);
            let addr = match kind {
                WaitKind::Channel => word(s.c),
                WaitKind::Semaphore | WaitKind::Cond => word(s.elem),
            };
            if addr != 0 {
                out.by_goid.entry(goid).or_default().push(WaitObject { kind, addr });
            }
            let link = word(s.waitlink);
            if link != 0 && kind == WaitKind::Channel {
                next.push((goid, g_addr, link, kind));
            }
        }
        frontier = next;
    }
    for objects in out.by_goid.values_mut() {
        objects.sort();
        objects.dedup();
    }
    out
}

/// Reads the semaphore waiters of Go ≤ 1.25 from `runtime.semtable` at
/// `semtable`: each entry's treap of sudogs (`prev`/`next` children), each with
/// the chain of further waiters on its address (`waitlink`). Returns `g` address →
/// semaphore address, and the sudogs visited.
fn from_semtable(mem: &dyn ReadMemory, layout: &BlockedLayout, semtable: u64) -> (HashMap<u64, u64>, HashSet<u64>) {
    let s = &layout.sudog;
    let mut out = HashMap::new();
    let mut roots = Vec::new();
    for i in 0..SEM_TAB_SIZE {
        let at = semtable + i * SEM_TAB_ENTRY + SEMA_ROOT_TREAP;
        if let Ok(p) = mem.read_u64(at) {
            if p != 0 {
                roots.push(p);
            }
        }
    }
    let span = [s.g, s.next, s.prev, s.elem, s.waitlink].into_iter().max().unwrap_or(0) as usize + 8;
    let mut seen = HashSet::new();
    let mut frontier = roots;
    while !frontier.is_empty() && seen.len() < MAX_SEMA_WAITERS {
        frontier.retain(|&p| seen.insert(p));
        let (buf, ok) = mem.read_many(&frontier, span);
        let mut next = Vec::new();
        for (i, _) in frontier.iter().enumerate().filter(|&(i, _)| ok[i]) {
            let chunk = &buf[i * span..(i + 1) * span];
            let word =
                |off: u32| u64::from_le_bytes(chunk[off as usize..off as usize + 8].try_into().expect("8 bytes"));
            let (g, elem) = (word(s.g), word(s.elem));
            if g != 0 && elem != 0 {
                out.insert(g, elem);
            }
            next.extend([word(s.prev), word(s.next), word(s.waitlink)].into_iter().filter(|&p| p != 0));
        }
        frontier = next;
    }
    (out, seen)
}

/// The state of each channel at `addrs`; absent where unreadable.
pub fn channel_states(mem: &dyn ReadMemory, layout: &BlockedLayout, addrs: &[u64]) -> HashMap<u64, ChanState> {
    let h = &layout.hchan;
    let span = [h.qcount, h.dataqsiz, h.closed].into_iter().max().unwrap_or(0) as usize + 8;
    let (buf, ok) = mem.read_many(addrs, span);
    addrs
        .iter()
        .enumerate()
        .filter(|&(i, _)| ok[i])
        .map(|(i, &addr)| {
            let chunk = &buf[i * span..(i + 1) * span];
            let word =
                |off: u32| u64::from_le_bytes(chunk[off as usize..off as usize + 8].try_into().expect("8 bytes"));
            let closed = u32::from_le_bytes(chunk[h.closed as usize..h.closed as usize + 4].try_into().expect("4"));
            (addr, ChanState { len: word(h.qcount), cap: word(h.dataqsiz), closed: closed != 0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connections_goroutine_is_known_by_any_channel_it_waited_on() {
        let chan = |addr| WaitObject { kind: WaitKind::Channel, addr };
        let waits = Waits { by_goid: HashMap::from([(7, vec![chan(0x10), chan(0x20)])]), ..Default::default() };
        // Read mid-park once: only one of its select's two channels was linked.
        assert!(waits.on_any_of(7, &[0x20]));
        assert!(waits.on_any_of(7, &[0x10, 0x20]));
        assert!(!waits.on_any_of(7, &[0x30]), "another connection's channel");
        assert!(!waits.on_any_of(8, &[0x10]), "not waiting now");
    }
}
