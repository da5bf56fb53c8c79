//! Where the tracer finds things in the Go runtime's structures, whatever backend
//! (DWARF today, `.gopclntab` + per-version tables for stripped binaries) produced it.

use gleak_common::TargetConfig;

/// Byte offsets into `runtime.g` and `runtime.m` of one binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeLayout {
    pub g_stack_lo: u32,
    pub g_stack_hi: u32,
    pub g_m: u32,
    pub g_status: u32,
    pub g_goid: u32,
    pub g_waitsince: u32,
    pub g_waitreason: u32,
    /// Go ≥ 1.21 only.
    pub g_parent_goid: Option<u32>,
    pub g_gopc: u32,
    pub g_startpc: u32,
    pub m_curg: u32,
}

impl RuntimeLayout {
    /// The subset the probes need, as handed to the kernel.
    pub fn target_config(&self, flags: u32) -> TargetConfig {
        TargetConfig {
            g_goid: self.g_goid,
            g_gopc: self.g_gopc,
            g_startpc: self.g_startpc,
            g_m: self.g_m,
            m_curg: self.m_curg,
            g_waitreason: self.g_waitreason,
            flags,
            _reserved: 0,
        }
    }
}

/// Go's goroutine status values (`runtime._G*`), stable since Go 1.0 except the two
/// 1.26 additions.
pub mod gstatus {
    pub const IDLE: u32 = 0;
    pub const RUNNABLE: u32 = 1;
    pub const RUNNING: u32 = 2;
    pub const SYSCALL: u32 = 3;
    pub const WAITING: u32 = 4;
    pub const DEAD: u32 = 6;
    pub const COPYSTACK: u32 = 8;
    pub const PREEMPTED: u32 = 9;
    pub const LEAKED: u32 = 10;
    pub const DEAD_EXTRA: u32 = 11;
    pub const SCAN: u32 = 0x1000;

    pub fn name(status: u32) -> &'static str {
        match status & !SCAN {
            IDLE => "idle",
            RUNNABLE => "runnable",
            RUNNING => "running",
            SYSCALL => "syscall",
            WAITING => "waiting",
            DEAD | DEAD_EXTRA => "dead",
            COPYSTACK => "copystack",
            PREEMPTED => "preempted",
            LEAKED => "leaked",
            _ => "unknown",
        }
    }
}
