//! Process exit, for `gleak run`'s leak gate: a uprobe on `runtime.exit` (the
//! assembly wrapper that `main` returning, `os.Exit` and a fatal panic go through)
//! and, in `-race` builds, on `runtime.racefini` (which exits through C). It stops
//! the whole process with SIGSTOP before it exits, so user space can read which
//! goroutines were still alive, then resumes it. Attached only to a child gleak
//! itself started.

use aya_ebpf::{helpers::generated::bpf_send_signal, programs::ProbeContext};
use gleak_common::EventKind;

use crate::{
    arch,
    maps::{emit, read_optional},
    target::{target_config, uprobe_per_cookie_source, CookieSource},
};

const SIGSTOP: u32 = 19;

uprobe_per_cookie_source! { process_exit, process_exit_tgid => stop_at_exit }

#[inline(always)]
fn stop_at_exit<S: CookieSource>(ctx: &ProbeContext) -> u32 {
    let Some((pid, cfg)) = target_config::<S>(ctx) else {
        return 0;
    };
    // The goroutine calling exit (the current g; on g0 during a fatal panic, its
    // m.curg): goleak does not count the current goroutine, nor does gleak.
    let g = arch::current_g(ctx);
    let curg = read_optional(g, cfg.g_m)
        .filter(|&m| m != 0)
        .and_then(|m| read_optional(m, cfg.m_curg))
        .filter(|&c| c != 0)
        .unwrap_or(g);
    let goid = read_optional(curg, cfg.g_goid).unwrap_or(0);
    // Only stop the process if user space will hear of it: a stop nobody knows
    // about would hang the command.
    if emit(EventKind::ProcessExit, pid, goid, curg, 0) {
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}
