//! Where each blocked goroutine is stuck: its current stack, read from memory
//! without stopping the target and unwound as Go's own traceback does, from
//! `g.sched` (pc, sp) through the `pcsp` tables of `.gopclntab`, each frame laid
//! out as its architecture lays it out ([`crate::arch::Frame`]). Frame pointers
//! are not used: how `mcall` saves them changed between releases (1.21 stores the
//! caller's), while every binary, stripped or not, has `pcsp`.
//!
//! A goroutine can wake while its stack is read. Each unwound stack is kept only if
//! the goroutine's status and `g.sched` read again afterwards are unchanged; a
//! goroutine still parked at the same pc and sp has the same frames above them.
//! The answer is cached per goroutine until its `g.sched` changes, so a population
//! blocked for hours costs one read.

use std::collections::HashMap;

use crate::{arch::Arch, binary::pclntab::Pclntab, process::memory::ReadMemory};

/// Deepest stack unwound; deeper ones are cut (the innermost frames are what matter).
pub const MAX_FRAMES: usize = 64;
/// Most bytes of one goroutine's stack read (from its sp up).
pub const MAX_STACK_BYTES: u64 = 64 << 10;
/// Most bytes of stacks read in one refresh; goroutines past it stay unknown until
/// the next one (each refresh starts where the cache has nothing).
pub const MAX_BYTES_PER_REFRESH: u64 = 256 << 20;

/// Most frames whose stack maps are followed; deeper stacks are scanned whole.
pub const MAX_SCANNED_FRAMES: usize = 1024;

/// The program whose stacks are walked: its function table, where it is loaded,
/// and how its architecture lays out a frame.
#[derive(Clone, Copy, Debug)]
pub struct Program<'a> {
    pub pcln: &'a Pclntab,
    /// Runtime address − link address.
    pub bias: u64,
    pub arch: &'a dyn Arch,
}

/// One frame met walking a descheduled goroutine's stack.
#[derive(Clone, Copy, Debug)]
pub struct StackFrame<'p> {
    /// A runtime address (load bias included): the saved pc, then return addresses.
    pub pc: u64,
    /// The frame's stack pointer.
    pub sp: u64,
    /// `pc` at link addresses.
    pub link_pc: u64,
    /// The function holding `pc` (or the call just before it, for a return address
    /// past its function's last instruction), as Go's traceback looks it up; `None`
    /// when no function does: the walk ends there.
    pub function: Option<&'p str>,
}

/// How a [`FrameWalk`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// At the bottom of the stack: `runtime.goexit` (or `mstart`), or a zero return
    /// address.
    Bottom,
    /// Lost the chain: a pc no function holds, no frame size, or a return address
    /// outside the bytes read.
    Lost,
}

/// The frames of a descheduled goroutine's stack, innermost first: from its saved
/// pc and sp, each frame's size from the `pcsp` table says where its return
/// address lies. `stack` holds the bytes from `sp` up. The last frame yielded is
/// the one the walk ended at ([`FrameWalk::end`] says how).
pub struct FrameWalk<'a> {
    stack: &'a [u8],
    /// The address of `stack[0]`.
    base: u64,
    program: Program<'a>,
    /// (pc, sp) of the frame to yield next.
    next: Option<(u64, u64)>,
    /// The saved context's link register, while the innermost frame is next
    /// (0: none saved).
    link_register: u64,
    end: Option<WalkEnd>,
}

impl<'a> FrameWalk<'a> {
    /// From a context saved with no link register (a parked goroutine's
    /// `g.sched`: `mcall` stores `gobuf.lr = 0` on link-register machines).
    pub fn new(stack: &'a [u8], sp: u64, pc: u64, program: Program<'a>) -> Self {
        Self::with_link_register(stack, sp, pc, 0, program)
    }

    /// From a saved context whose link register is `lr` (`gobuf.lr`; 0 if
    /// none): the innermost frame's return address when it has no frame yet.
    pub fn with_link_register(stack: &'a [u8], sp: u64, pc: u64, lr: u64, program: Program<'a>) -> Self {
        Self { stack, base: sp, program, next: Some((pc, sp)), link_register: lr, end: None }
    }

    /// How the walk ended, once it has.
    pub fn end(&self) -> Option<WalkEnd> {
        self.end
    }

    /// The caller of the frame at `sp` whose function holds `lookup`.
    fn caller(&mut self, lookup: u64, sp: u64) -> Result<(u64, u64), WalkEnd> {
        // Only the innermost frame (the first asked) may take the saved LR.
        let link_register = std::mem::take(&mut self.link_register);
        let delta = self.program.pcln.sp_delta(lookup).and_then(|d| u64::try_from(d).ok()).ok_or(WalkEnd::Lost)?;
        let frame = self.program.arch.frame(delta);
        // As the runtime's unwinder: the saved LR only for the innermost frame,
        // and only if the context saved one; else the stack slot.
        let ret = if frame.return_address_in_link_register && link_register != 0 {
            link_register
        } else {
            let at =
                sp.checked_add(frame.return_address).and_then(|a| a.checked_sub(self.base)).ok_or(WalkEnd::Lost)?;
            let word =
                usize::try_from(at).ok().and_then(|at| self.stack.get(at..at.checked_add(8)?)).ok_or(WalkEnd::Lost)?;
            u64::from_le_bytes(word.try_into().expect("8 bytes"))
        };
        match ret {
            0 => Err(WalkEnd::Bottom),
            ret => Ok((ret, sp.checked_add(frame.caller_sp).ok_or(WalkEnd::Lost)?)),
        }
    }
}

impl<'a> Iterator for FrameWalk<'a> {
    type Item = StackFrame<'a>;

    fn next(&mut self) -> Option<StackFrame<'a>> {
        let (pc, sp) = self.next.take()?;
        // A return address may sit just past its function's last instruction (a
        // call that never returns): look it up by the call, as Go's traceback does.
        let pcln = self.program.pcln;
        let link_pc = pc.wrapping_sub(self.program.bias);
        let lookup = if pcln.function_containing(link_pc).is_some() { link_pc } else { link_pc.wrapping_sub(1) };
        let function = pcln.function_containing(lookup).map(|(name, _)| name);
        match function {
            None => self.end = Some(WalkEnd::Lost),
            Some("runtime.goexit" | "runtime.goexit.abi0" | "runtime.mstart") => self.end = Some(WalkEnd::Bottom),
            Some(_) => match self.caller(lookup, sp) {
                Ok(caller) => self.next = Some(caller),
                Err(end) => self.end = Some(end),
            },
        }
        Some(StackFrame { pc, sp, link_pc, function })
    }
}

/// The parts of a descheduled goroutine's stack that Go's own collector scans,
/// as `(address, length)` ranges: in each frame the words its stack maps mark as
/// live pointers at its pc, and its address-taken objects whole. A frame's other
/// words may hold stale values (slots not yet written, dead variables) that would
/// keep unrelated objects reachable. A frame with `_defer` records is scanned
/// whole (the runtime scans those records apart from the maps). From the first
/// frame whose maps are unknown
/// (assembly, an asynchronous preemption, a torn read) up to the end of `stack`,
/// everything is scanned: never less than the collector would.
///
/// `stack` holds the bytes from `sp` up; `pc` is the goroutine's saved pc.
pub fn pointer_ranges(stack: &[u8], sp: u64, pc: u64, program: Program) -> Vec<(u64, u64)> {
    let end = sp + stack.len() as u64;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut add = |addr: u64, len: u64| match out.last_mut() {
        Some(last) if last.0 + last.1 == addr => last.1 += len,
        _ => out.push((addr, len)),
    };
    let mut walk = FrameWalk::new(stack, sp, pc, program);
    // Where the frames not scanned by their maps begin.
    let mut frame_sp = sp;
    let reached_bottom = 'frames: {
        for frame in walk.by_ref().take(MAX_SCANNED_FRAMES) {
            frame_sp = frame.sp;
            match frame.function {
                Some("runtime.goexit" | "runtime.goexit.abi0" | "runtime.mstart") => break 'frames true,
                Some(name) if !name.starts_with("runtime.asyncPreempt") && !name.starts_with("runtime.debugCall") => {}
                _ => break 'frames false,
            }
            let Some(map) = program.pcln.frame_map(frame.link_pc, program.arch) else { break 'frames false };
            let layout = program.arch.frame(map.sp_delta);
            let fp = frame.sp.saturating_add(layout.caller_sp);
            if fp > end {
                break 'frames false;
            }
            // As the runtime's unwinder: locals below varp, arguments from argp up.
            let varp = frame.sp + layout.locals_top;
            let argp = frame.sp + layout.args;
            let locals_base = varp - 8 * map.locals.len() as u64;
            if map.defers {
                add(frame.sp, fp - frame.sp);
            } else {
                for (k, _) in map.locals.iter().enumerate().filter(|(_, &live)| live) {
                    add(locals_base + 8 * k as u64, 8);
                }
            }
            for (k, _) in map.args.iter().enumerate().filter(|(_, &live)| live) {
                let at = argp + 8 * k as u64;
                if at + 8 <= end {
                    add(at, 8);
                }
            }
            for &(off, size) in &map.stack_objects {
                let base = if off < 0 { varp } else { argp };
                let Some(at) = base.checked_add_signed(off) else { continue };
                if at >= frame.sp && at.saturating_add(size) <= end {
                    add(at, size);
                }
            }
            frame_sp = fp;
        }
        // Every frame scanned by its maps, down to a zero return address.
        walk.end() == Some(WalkEnd::Bottom)
    };
    if !reached_bottom {
        add(frame_sp, end.saturating_sub(frame_sp));
    }
    out
}

/// Index of an interned stack in a [`BlockingStacks`].
pub type StackId = u32;

/// Unwinds a parked goroutine's stack held in `stack` (the bytes from `sp` up),
/// starting at `pc`. Returns return addresses as found in memory (runtime
/// addresses, load bias included), innermost first, `pc` itself first. Stops at
/// `runtime.goexit`, at an address no function contains, at a return address
/// outside `stack`, or after [`MAX_FRAMES`].
pub fn unwind(stack: &[u8], sp: u64, pc: u64, program: Program) -> Vec<u64> {
    FrameWalk::new(stack, sp, pc, program).take(MAX_FRAMES).map(|frame| frame.pc).collect()
}

/// `g.sched` of a parked goroutine, as read with its other fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sched {
    pub sp: u64,
    pub pc: u64,
    pub stack_hi: u64,
}

/// One goroutine to look at: its `g`'s address and what was read of it.
#[derive(Clone, Copy, Debug)]
pub struct Parked {
    pub goid: u64,
    pub g_addr: u64,
    pub sched: Sched,
}

/// The blocking stacks of one target's goroutines, cached per goroutine.
#[derive(Default)]
pub struct BlockingStacks {
    /// goid → (the `g.sched` it was unwound at, its stack).
    by_goid: HashMap<u64, (Sched, StackId)>,
    interned: HashMap<Vec<u64>, StackId>,
    stacks: Vec<Vec<u64>>,
    /// Goroutines whose stack changed while it was read, in the last refresh.
    pub torn: u64,
    /// Goroutines left for a later refresh: the byte budget ran out.
    pub deferred: u64,
}

impl BlockingStacks {
    /// The stack of `goid` if it is known at `sched`.
    pub fn get(&self, goid: u64, sched: &Sched) -> Option<StackId> {
        self.by_goid.get(&goid).filter(|(at, _)| at == sched).map(|&(_, id)| id)
    }

    /// The return addresses of an interned stack (runtime addresses, innermost first).
    pub fn pcs(&self, id: StackId) -> &[u64] {
        self.stacks.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Unwinds every goroutine of `parked` not already known at its current
    /// `g.sched`, and forgets goroutines not in `parked` (gone, or running again).
    /// `reread` reads the `g.sched` (and the status) of goroutines again after their
    /// stacks were read; a goroutine is kept only if it is still parked there.
    pub fn refresh(
        &mut self,
        mem: &dyn ReadMemory,
        program: Program,
        parked: &[Parked],
        reread: impl FnOnce(&[u64]) -> Vec<Option<Sched>>,
    ) {
        let live: HashMap<u64, Sched> = parked.iter().map(|p| (p.goid, p.sched)).collect();
        self.by_goid.retain(|goid, (at, _)| live.get(goid) == Some(at));
        self.torn = 0;
        self.deferred = 0;
        let mut budget = MAX_BYTES_PER_REFRESH;
        let mut todo: Vec<(&Parked, u64)> = Vec::new();
        for p in parked.iter().filter(|p| !self.by_goid.contains_key(&p.goid)) {
            let s = p.sched;
            // A sane parked stack: sp below hi, within the most Go lets a stack grow.
            let Some(len) = s.stack_hi.checked_sub(s.sp).filter(|&l| l > 0 && l <= 1 << 30 && s.pc != 0) else {
                continue;
            };
            let len = len.min(MAX_STACK_BYTES);
            if len > budget {
                self.deferred += 1;
                continue;
            }
            budget -= len;
            todo.push((p, len));
        }
        if todo.is_empty() {
            return;
        }
        let ranges: Vec<(u64, usize)> = todo.iter().map(|(p, len)| (p.sched.sp, *len as usize)).collect();
        let (buf, spans) = mem.read_ranges(&ranges);
        let after = reread(&todo.iter().map(|(p, _)| p.g_addr).collect::<Vec<_>>());
        for (((p, _), span), now) in todo.iter().zip(spans).zip(after) {
            let Some(span) = span else { continue };
            if now != Some(p.sched) {
                self.torn += 1;
                continue;
            }
            let pcs = unwind(&buf[span], p.sched.sp, p.sched.pc, program);
            let id = self.intern(pcs);
            self.by_goid.insert(p.goid, (p.sched, id));
        }
    }

    fn intern(&mut self, pcs: Vec<u64>) -> StackId {
        if let Some(&id) = self.interned.get(&pcs) {
            return id;
        }
        let id = self.stacks.len() as StackId;
        self.stacks.push(pcs.clone());
        self.interned.insert(pcs, id);
        id
    }
}
