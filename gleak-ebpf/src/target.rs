//! Which traced process a probe fired in, and the layout of its runtime.
//!
//! User space attaches each probe per process, with a cookie naming the process
//! (its PID as gleak sees it) and its slot in [`TARGETS`] (see
//! `gleak_common::probe_cookie`). Two ways to get that cookie back, one program
//! of each probe per way; user space loads the set the kernel supports:
//! - [`ByAttachCookie`]: `bpf_get_attach_cookie`, no lookup at all (5.15+);
//! - [`ByTgid`]: the same cookie from [`COOKIE_BY_TGID`], keyed by the thread
//!   group id the kernel knows the process by (kernels before 5.15: 5.10 LTS).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_attach_cookie},
    macros::map,
    maps::{Array, HashMap},
    programs::ProbeContext,
    EbpfContext,
};
use aya_log_ebpf::warn;
use gleak_common::{counter, TargetConfig};

use crate::maps::bump;

/// Per traced process, in the slot its probes' cookie names: where the fields of
/// `runtime.g` are. An array, not a hash map keyed by PID: its lookup is an
/// address computation, where a hash map's costs a hash and a bucket walk.
#[map]
pub static TARGETS: Array<TargetConfig> = Array::with_max_entries(gleak_common::MAX_TARGETS, 0);

/// Kernels without attach cookies: each traced process's cookie, by the thread
/// group id of the root PID namespace (`bpf_get_current_pid_tgid`).
#[map]
pub static COOKIE_BY_TGID: HashMap<u32, u64> = HashMap::with_max_entries(gleak_common::MAX_TARGETS, 0);

/// How a probe finds the cookie it was attached with.
pub trait CookieSource {
    fn cookie<C: EbpfContext>(ctx: &C) -> Option<u64>;
}

/// The attach cookie itself (`bpf_get_attach_cookie`, kernel 5.15+).
pub struct ByAttachCookie;

impl CookieSource for ByAttachCookie {
    #[inline(always)]
    fn cookie<C: EbpfContext>(ctx: &C) -> Option<u64> {
        Some(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) })
    }
}

/// A hash lookup by the current thread group id, for kernels before 5.15.
pub struct ByTgid;

impl CookieSource for ByTgid {
    #[inline(always)]
    fn cookie<C: EbpfContext>(_ctx: &C) -> Option<u64> {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: the value is a plain u64, copied out at once.
        unsafe { COOKIE_BY_TGID.get(tgid) }.copied()
    }
}

/// The process a probe fired in, as gleak knows it (its PID in gleak's own PID
/// namespace, which a container's is not). Missing only if user space is
/// mid-detach: counted.
#[inline(always)]
pub fn target_pid<S: CookieSource, C: EbpfContext>(ctx: &C) -> Option<u32> {
    let cookie = S::cookie(ctx);
    if cookie.is_none() {
        bump(counter::NO_CONFIG);
    }
    cookie.map(|c| (c >> 32) as u32)
}

/// The traced process a probe fired in and the layout of its runtime. Missing
/// only if user space is mid-detach: counted and logged.
#[inline(always)]
pub fn target_config<S: CookieSource>(ctx: &ProbeContext) -> Option<(u32, TargetConfig)> {
    let cookie = S::cookie(ctx).unwrap_or(0);
    let pid = (cookie >> 32) as u32;
    match TARGETS.get(cookie as u32) {
        // A cleared slot is all zeros, and `g.goid` is never at offset 0.
        Some(cfg) if cookie != 0 && cfg.g_goid != 0 => Some((pid, *cfg)),
        _ => {
            bump(counter::NO_CONFIG);
            warn!(ctx, "gleak: probe hit in PID {} with no runtime layout", pid);
            None
        }
    }
}

/// Defines a probe twice, once per [`CookieSource`]: `$name` finds its target by
/// attach cookie, `$by_tgid` by thread group id. `$body` is generic over the source.
macro_rules! uprobe_per_cookie_source {
    ($(#[$doc:meta])* $name:ident, $by_tgid:ident => $body:ident) => {
        $(#[$doc])*
        #[aya_ebpf::macros::uprobe]
        pub fn $name(ctx: aya_ebpf::programs::ProbeContext) -> u32 {
            $body::<$crate::target::ByAttachCookie>(&ctx)
        }

        $(#[$doc])*
        /// (Kernels before 5.15: the target found by thread group id.)
        #[aya_ebpf::macros::uprobe]
        pub fn $by_tgid(ctx: aya_ebpf::programs::ProbeContext) -> u32 {
            $body::<$crate::target::ByTgid>(&ctx)
        }
    };
}
pub(crate) use uprobe_per_cookie_source;
