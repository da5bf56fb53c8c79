//! Goroutine creation, where the new g is first complete: by preference the
//! `CALL runtime.runqput` in `runtime.newproc.func1` (new g its second argument;
//! the kernel emulates a CALL, so one trap instead of the two a single-stepped
//! instruction costs), else each RET of `runtime.newproc1` (new g its result),
//! plus the instruction after `CALL runtime.newproc1` in `runtime.newcoro` for
//! coroutines (the result again).
//!
//! At these points `goid`, `gopc` and `startpc` are set, and we are still on g0
//! (the current g), whose `m.curg` is the goroutine running the `go` statement.
//! The user stack taken here crosses `systemstack` into the creator's frames, so
//! one hit gives the whole creation path.

// The creation-path cache serves the kernel's unwinder, which arm64 does not use.
#![cfg_attr(bpf_target_arch = "aarch64", allow(dead_code))]

#[cfg(not(bpf_target_arch = "aarch64"))]
use aya_ebpf::{bindings::BPF_F_USER_STACK, programs::tracing::StackIdContext};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::map,
    maps::PerCpuArray,
    programs::ProbeContext,
};
use gleak_common::{counter, CreateBatch, EventKind, GoroutineEvent, BATCH, CONFIG_CAPTURE_STACKS, CREATE_SPAN};

#[cfg(not(bpf_target_arch = "aarch64"))]
use crate::maps::STACKS;
use crate::{
    arch::{self, RETURN_ADDRESS, SAVED_FRAME_POINTER},
    maps::{batch_filled, bump, read_optional},
    target::{target_config, uprobe_per_cookie_source, CookieSource},
};

/// Per CPU, the creations not sent yet; user space reads them too (see
/// `gleak_common::BatchHeader`).
#[map]
static PENDING_CREATES: PerCpuArray<CreateBatch> = PerCpuArray::with_max_entries(1, 0);

/// The scratch buffer: a power of two at least the span, so that masking an
/// offset with [`SPAN_MASK`] keeps it 8-aligned and 8 bytes inside.
const SCRATCH: usize = 256;
const SPAN_MASK: u32 = SCRATCH as u32 - 8;
const _: () = assert!(CREATE_SPAN as usize <= SCRATCH && SCRATCH.is_power_of_two());

/// Per CPU, where the creation probe reads the new g's fields.
#[map]
static SPAN: PerCpuArray<[u8; SCRATCH]> = PerCpuArray::with_max_entries(1, 0);

/// Return addresses that key a creation path: the runtime's (systemstack) and
/// the innermost frames of the code with the `go` statement.
const KEY_FRAMES: usize = 8;
/// One keyed creation in this many walks its whole stack anyway.
const RESAMPLE_EVERY: u32 = 64;

/// Bytes of stack read at once while following frame pointers: most creating
/// functions' frames, and their callers', fit in one read, where a read per frame
/// would cost a helper call each. A read costs about 40 ns whatever its size up
/// to here: the benchmark's spawner needed two 512-byte reads, one of 1 KiB
/// (25 ns less in all), and 2 KiB was no faster.
const STACK_WINDOW: usize = 1024;
const _: () = assert!(STACK_WINDOW.is_power_of_two() && STACK_WINDOW >= 64);

/// Per CPU, the window of stack being walked; 16 bytes of slack past it, so that
/// a frame record at any 8-aligned offset the mask lets through is in bounds.
#[map]
static WINDOW: PerCpuArray<[u8; STACK_WINDOW + 16]> = PerCpuArray::with_max_entries(1, 0);

/// Frames of a creation stack walked by the probe (arm64): the kernel's own
/// unwinder keeps up to 127; the creating code's innermost frames matter most.
#[cfg(bpf_target_arch = "aarch64")]
pub const WALKED_FRAMES: usize = gleak_common::WALKED_FRAMES;

/// Per CPU, the stack being walked (arm64).
#[cfg(bpf_target_arch = "aarch64")]
#[map]
static WALKED: PerCpuArray<[u64; WALKED_FRAMES]> = PerCpuArray::with_max_entries(1, 0);

/// Creation stacks walked by the probe, by id (arm64; see `user_stack_id`).
#[cfg(bpf_target_arch = "aarch64")]
#[map]
pub static WALKED_STACKS: aya_ebpf::maps::HashMap<u32, [u64; WALKED_FRAMES]> =
    aya_ebpf::maps::HashMap::with_max_entries(16384, 0);

/// A creation path key and the stack id it was last walked to.
#[derive(Clone, Copy)]
#[repr(C)]
struct KeyedStack {
    key: [u64; KEY_FRAMES],
    stack_id: i64,
}

/// Slots of the per-CPU creation path cache (a power of two).
const KEY_SLOTS: u32 = 1024;

/// Per CPU, a direct-mapped cache of creation path → stack id: an array indexed by
/// the key's hash, cheaper than a hash map's lookup; a collision only costs a walk.
#[map]
static STACK_KEYS: PerCpuArray<KeyedStack> = PerCpuArray::with_max_entries(KEY_SLOTS, 0);

/// Creations seen, per CPU, to resample.
#[map]
static WALK_TICKS: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

uprobe_per_cookie_source! {
    /// The new g as the result (RET of newproc1, after CALL newproc1 in newcoro).
    goroutine_create_result, goroutine_create_result_tgid => create_from_result
}

uprobe_per_cookie_source! {
    /// The new g as the second argument (`runqput(pp, newg, true)` in newproc.func1).
    goroutine_create_arg2, goroutine_create_arg2_tgid => create_from_second_argument
}

#[inline(always)]
fn create_from_result<S: CookieSource>(ctx: &ProbeContext) -> u32 {
    on_create::<S>(ctx, arch::result(ctx))
}

#[inline(always)]
fn create_from_second_argument<S: CookieSource>(ctx: &ProbeContext) -> u32 {
    on_create::<S>(ctx, arch::second_argument(ctx))
}

#[inline(always)]
fn on_create<S: CookieSource>(ctx: &ProbeContext, newg: u64) -> u32 {
    let Some((pid, cfg)) = target_config::<S>(ctx) else {
        return 0;
    };
    // One read for every field: helper calls are most of a probe's cost. Into a
    // per-CPU scratch buffer (the stack is too small for it), so that a field's
    // offset, masked to the buffer, needs no other bounds check.
    let Some(scratch) = SPAN.get_ptr_mut(0) else { return 0 };
    let scratch = unsafe { &mut *scratch };
    let src = (newg + u64::from(cfg.g_goid)) as *const u8;
    if unsafe { bpf_probe_read_user_buf(src, &mut scratch[..CREATE_SPAN as usize]) }.is_err() {
        bump(counter::READ_FAILED);
        return 0;
    }
    let field = |off: u32| {
        let at = (off.wrapping_sub(cfg.g_goid) & SPAN_MASK) as usize;
        // SAFETY: at + 8 <= SPAN_MASK + 8 == the scratch buffer's length.
        unsafe { core::ptr::read_unaligned(scratch.as_ptr().add(at).cast::<u64>()) }
    };
    let goid = field(cfg.g_goid);
    let gopc = field(cfg.g_gopc);
    let startpc = field(cfg.g_startpc);
    let parent_goid = if cfg.g_parent_goid != 0 {
        field(cfg.g_parent_goid)
    } else {
        creator_goid(arch::current_g(ctx), &cfg).unwrap_or(0)
    };
    // Only the test runner's closure: two reads more per creation would cost
    // every program what only tests need.
    let captured = if cfg.test_runner_pc != 0 && startpc == cfg.test_runner_pc {
        first_captured_word(newg, &cfg).unwrap_or(0)
    } else {
        0
    };
    let stack_id = if cfg.flags & CONFIG_CAPTURE_STACKS != 0 { creation_stack(ctx, &cfg) } else { -1 };
    let Some(batch) = PENDING_CREATES.get_ptr_mut(0) else { return 0 };
    // Per-CPU: no other writer unless the kernel preempts this program (a
    // preemptible kernel), when a creation can be lost or sent twice. User space
    // drops a creation it already holds, and finds a lost one in memory, as with
    // a full ring buffer.
    let batch = unsafe { &mut *batch };
    let slot = batch.header.count as usize & (BATCH - 1);
    batch.creates[slot] = GoroutineEvent {
        kind: EventKind::Create as u32,
        pid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        goid,
        g_addr: newg,
        parent_goid,
        gopc,
        startpc,
        stack_id,
        wait_reason: 0,
        _pad: 0,
        captured,
    };
    batch_filled(batch, slot, None);
    0
}

/// The creation stack's id (see `user_stack_id`). Walking the whole user stack is most of a
/// creation probe's cost, and most creations come from a few call paths: the
/// innermost return addresses (followed through frame pointers, which Go keeps)
/// key the path in a per-CPU cache, and only a new key (or one hit in
/// [`RESAMPLE_EVERY`], so that paths that differ deeper are found too) walks it.
#[cfg(not(bpf_target_arch = "aarch64"))]
#[inline(always)]
fn creation_stack(ctx: &ProbeContext, _cfg: &gleak_common::TargetConfig) -> i64 {
    let key = path_key(arch::frame_pointer(ctx));
    let resample = match WALK_TICKS.get_ptr_mut(0) {
        // Per-CPU counter: no other writer.
        Some(ticks) => unsafe {
            *ticks = (*ticks).wrapping_add(1);
            *ticks % RESAMPLE_EVERY == 0
        },
        None => true,
    };
    let slot = STACK_KEYS.get_ptr_mut(key_hash(&key) & (KEY_SLOTS - 1));
    if !resample {
        if let Some(cached) = slot {
            // Per-CPU slot: no other writer.
            let cached = unsafe { &*cached };
            if same_key(&cached.key, &key) {
                return cached.stack_id;
            }
        }
    }
    match user_stack_id(ctx) {
        Ok(stack_id) => {
            if let Some(slot) = slot {
                unsafe { *slot = KeyedStack { key, stack_id } };
            }
            stack_id
        }
        Err(_) => {
            bump(counter::STACK_FAILED);
            -1
        }
    }
}

/// The creation stack's id. The probe walks arm64 stacks itself (see
/// `user_stack_id`), so keying the walk by its first frames, to skip it, would
/// cost most of what it saves; and the key's stack space is what the verifier's
/// 512 bytes lack here.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
fn creation_stack(ctx: &ProbeContext, cfg: &gleak_common::TargetConfig) -> i64 {
    user_stack_id(ctx, cfg).unwrap_or_else(|()| {
        bump(counter::STACK_FAILED);
        -1
    })
}

/// The first [`KEY_FRAMES`] return addresses from frame pointer `bp` on.
#[inline(always)]
fn path_key(bp: u64) -> [u64; KEY_FRAMES] {
    let mut key = [0u64; KEY_FRAMES];
    return_addresses(bp, &mut key);
    key
}

/// Fills `out` with the return addresses from frame pointer `bp` on; what lies
/// past the outermost frame is left as it was. Frame records ({saved frame pointer, return address})
/// are taken from a window of stack read in one helper call; only a frame outside
/// it costs another read (of a new window).
///
/// The first record, `runtime.newproc.func1`'s, is read alone: it is on g0's
/// stack, which for the main thread is the top of its mapping, where a window
/// would run past the end (a fault, then a retry). Its saved frame pointer leads
/// on to the goroutine's stack, through `systemstack` (which on arm64 keeps a
/// frame record of its own).
#[inline(always)]
fn return_addresses<const N: usize>(bp: u64, out: &mut [u64; N]) {
    if bp == 0 {
        return;
    }
    let Ok(first) = (unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }) else { return };
    out[0] = first[RETURN_ADDRESS];
    let mut bp = first[SAVED_FRAME_POINTER];
    let Some(window) = WINDOW.get_ptr_mut(0) else { return };
    // Per-CPU buffer: no other writer while this program runs.
    let window = unsafe { &mut *window };
    // The window covers [base, base + STACK_WINDOW); none is read yet.
    let mut base = u64::MAX;
    for slot in out.iter_mut().skip(1) {
        if bp == 0 {
            break;
        }
        let mut offset = bp.wrapping_sub(base);
        if offset > (STACK_WINDOW - 16) as u64 {
            if unsafe { bpf_probe_read_user_buf(bp as *const u8, &mut window[..STACK_WINDOW]) }.is_err() {
                // The window ran past the end of the mapping (the top of a thread's
                // stack): this frame alone.
                let Ok(frame) = (unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }) else { break };
                *slot = frame[RETURN_ADDRESS];
                bp = frame[SAVED_FRAME_POINTER];
                base = u64::MAX;
                continue;
            }
            base = bp;
            offset = 0;
        }
        // offset + 16 <= STACK_WINDOW; the mask keeps the verifier sure of it (and
        // frame pointers are 8-aligned).
        let at = (offset as usize) & (STACK_WINDOW - 8);
        let read = |i: usize| unsafe { core::ptr::read_unaligned(window.as_ptr().add(at + 8 * i).cast::<u64>()) };
        *slot = read(RETURN_ADDRESS);
        bp = read(SAVED_FRAME_POINTER);
    }
}

/// The user stack at a creation, kept in `STACKS`: the kernel's unwinder follows
/// the same frame records from the probed instruction.
#[cfg(not(bpf_target_arch = "aarch64"))]
#[inline(always)]
fn user_stack_id(ctx: &ProbeContext) -> Result<i64, ()> {
    ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64).map_err(|_| ())
}

/// The user stack at a creation, walked here and kept in `WALKED_STACKS` under a
/// hash of its return addresses. arm64's kernel unwinder stops where a frame
/// pointer does not move up the stack, which is where `systemstack` switched from
/// the goroutine's stack to g0's (they lie anywhere in memory): it would keep
/// the runtime's frames and none of the creator's.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
fn user_stack_id(ctx: &ProbeContext, cfg: &gleak_common::TargetConfig) -> Result<i64, ()> {
    let walked = WALKED.get_ptr_mut(0).ok_or(())?;
    // Per-CPU buffer: no other writer while this program runs.
    let walked = unsafe { &mut *walked };
    // An element at a time (at once would be a call to memset): the buffer holds
    // the last walk, and frames past this one's end must read as none.
    for slot in walked.iter_mut() {
        unsafe { core::ptr::write_volatile(slot, 0) };
    }
    // From the creator's frame pointer as `systemstack` saved it in
    // `g0.m.curg.sched.bp`: before Go 1.21, systemstack leaves R29 at g0's own
    // chain, which does not lead back to the goroutine's stack.
    let creator_bp = (cfg.g_sched_bp != 0)
        .then(|| creator(arch::current_g(ctx), cfg))
        .flatten()
        .and_then(|curg| read_optional(curg, cfg.g_sched_bp))
        .filter(|&bp| bp != 0);
    return_addresses(creator_bp.unwrap_or_else(|| arch::frame_pointer(ctx)), walked);
    // FNV-1a over the words: the stack's id (a collision replaces the older stack).
    let mut hash: u32 = 0x811c_9dc5;
    for &word in walked.iter() {
        hash = (hash ^ (word as u32) ^ ((word >> 32) as u32)).wrapping_mul(0x0100_0193);
    }
    let id = hash & 0x7fff_ffff;
    WALKED_STACKS.insert(id, walked, 0).map_err(|_| ())?;
    Ok(i64::from(id))
}

/// Word by word, inline: `==` on the arrays compiles to a call of a `memcmp`
/// subprogram, a call per creation.
#[inline(always)]
fn same_key(a: &[u64; KEY_FRAMES], b: &[u64; KEY_FRAMES]) -> bool {
    let mut diff = 0;
    for i in 0..KEY_FRAMES {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// Mixes a path key into a cache slot number (a multiply-xorshift per word).
#[inline(always)]
fn key_hash(key: &[u64; KEY_FRAMES]) -> u32 {
    let mut h: u64 = 0;
    for &word in key {
        h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    (h >> 32) as u32
}

/// The first variable captured by the new goroutine's closure: `g.sched.ctxt` is
/// its `*funcval` until the goroutine first runs, and the captured variables
/// follow the function pointer.
#[inline(always)]
fn first_captured_word(newg: u64, cfg: &gleak_common::TargetConfig) -> Option<u64> {
    let closure = read_optional(newg, cfg.g_sched_ctxt)?;
    if closure == 0 {
        return None;
    }
    read_optional(closure, 8)
}

/// `g0.m.curg.goid`; `None` when no user goroutine runs (the main goroutine's birth).
#[inline(always)]
fn creator_goid(g0: u64, cfg: &gleak_common::TargetConfig) -> Option<u64> {
    read_optional(creator(g0, cfg)?, cfg.g_goid)
}

/// `g0.m.curg`: the goroutine running the `go` statement; `None` when none runs.
#[inline(always)]
fn creator(g0: u64, cfg: &gleak_common::TargetConfig) -> Option<u64> {
    let m = read_optional(g0, cfg.g_m)?;
    if m == 0 {
        return None;
    }
    let curg = read_optional(m, cfg.m_curg)?;
    (curg != 0).then_some(curg)
}
