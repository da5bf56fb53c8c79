//! gleak's kernel side: plain uprobes on the Go runtime's goroutine lifecycle.
//!
//! No uretprobe anywhere: Go moves goroutine stacks, and a uretprobe's hijacked
//! return address crashes the target. "Return" probes are plain uprobes placed on
//! each RET instruction, found by the user side.
//!
//! One file per probe family:
//! - [`create`]: where a new g is complete (the `CALL runtime.runqput` in
//!   `runtime.newproc.func1`, else the RETs of `runtime.newproc1`);
//! - [`exit`]: `runtime.gdestroy` (Go ≥ 1.22) or `runtime.goexit0` (exiting g
//!   their first argument);
//! - [`park`]: `runtime.gopark` (the parking g the current one, wait reason its
//!   third argument), opt-in;
//! - [`process`]: `runtime.exit`, under `gleak run` only: stops the process so its
//!   goroutines can be read before it is gone;
//! - [`floor`]: none of gleak's: the overhead benchmark's counting-only program.
//!
//! [`target`] says which traced process a probe fired in: each probe exists twice,
//! finding it by attach cookie (5.15+) or by thread group id (older kernels).
//! [`arch`] reads registers by their role in Go's calling convention: no probe
//! names a register.
#![no_std]
#![no_main]

mod arch;
mod create;
mod exit;
mod floor;
mod maps;
mod park;
mod process;
mod target;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
