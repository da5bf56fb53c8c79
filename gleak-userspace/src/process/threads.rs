//! Where a stopped thread of the target is: its stack pointer and program
//! counter, from `/proc/PID/task/TID/syscall` (no ptrace needed). A thread
//! blocked in a system call shows `NR args… sp pc`; one blocked otherwise (stopped
//! by SIGSTOP, as `gleak run` holds the process at its exit) `-1 sp pc`; a thread
//! running shows `running`, and then nothing is known.

use std::{
    io::Read,
    time::{Duration, Instant},
};

/// The bytes of a `syscall` file read at most (it is one short line).
const MAX_SYSCALL_FILE: u64 = 512;

/// `(sp, pc)` of thread `tid` of process `pid`, if it is not running. `wait`:
/// how long a thread still running may take to stop (a process being stopped:
/// each of its threads stops on its way back to user space), checked every
/// millisecond; zero for a process that runs on.
pub fn stopped_thread_registers(pid: u32, tid: u64, wait: Duration) -> Option<(u64, u64)> {
    let path = format!("/proc/{pid}/task/{tid}/syscall");
    let deadline = Instant::now() + wait;
    loop {
        let mut text = String::new();
        std::fs::File::open(&path).ok()?.take(MAX_SYSCALL_FILE).read_to_string(&mut text).ok()?;
        match parse_syscall_file(&text) {
            Some(found) => return Some(found),
            None if text.starts_with("running") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            None => return None,
        }
    }
}

/// `(sp, pc)` from a `syscall` file's text: its last two fields, in hex.
fn parse_syscall_file(text: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() < 3 || fields[0] == "running" {
        return None;
    }
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    let (sp, pc) = (hex(fields[fields.len() - 2])?, hex(fields[fields.len() - 1])?);
    (sp != 0 && pc != 0).then_some((sp, pc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopped_and_syscall_threads_give_sp_and_pc() {
        assert_eq!(parse_syscall_file("-1 0x7ffd1234 0x468f20\n"), Some((0x7ffd1234, 0x468f20)));
        let in_syscall = "202 0xc000080148 0x80 0x0 0x0 0x0 0x0 0xc00004f6f0 0x46c2e3\n";
        assert_eq!(parse_syscall_file(in_syscall), Some((0xc00004f6f0, 0x46c2e3)));
        assert_eq!(parse_syscall_file("running\n"), None);
        assert_eq!(parse_syscall_file(""), None);
        assert_eq!(parse_syscall_file("-1 0xzz 0x1"), None);
    }

    #[test]
    fn this_process_has_a_stopped_thread_or_none() {
        // Our own main thread is running (reading this) or blocked: either way, no panic.
        let _ = stopped_thread_registers(std::process::id(), u64::from(std::process::id()), Duration::ZERO);
        assert_eq!(stopped_thread_registers(u32::MAX, 1, Duration::from_millis(5)), None);
    }
}
