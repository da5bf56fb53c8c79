//! Process exit, for `gleak run`'s leak gate: a uprobe on `runtime.exit` (the
//! assembly wrapper every exit path goes through: `main` returning, `os.Exit`, a
//! fatal panic). It stops the whole process with SIGSTOP before the `exit_group`
//! syscall runs, so user space can read which goroutines were still alive, then
//! resumes it. Attached only to a child gleak itself started.

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_send_signal},
    macros::uprobe,
    programs::ProbeContext,
};
use gleak_common::EventKind;

use crate::maps::{current_pid, emit, target_config};

const SIGSTOP: u32 = 19;

#[uprobe]
pub fn process_exit(ctx: ProbeContext) -> u32 {
    let pid = current_pid();
    if target_config(pid).is_none() {
        return 0;
    }
    // ABI0: the int32 exit code is the first stack argument, above the return address.
    let rsp = unsafe { (*ctx.regs).rsp };
    let code = unsafe { bpf_probe_read_user((rsp + 8) as *const u32) }.unwrap_or(0);
    unsafe { bpf_send_signal(SIGSTOP) };
    emit(EventKind::ProcessExit, pid, 0, 0, |e| e.wait_reason = code);
    0
}
