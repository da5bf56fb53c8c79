//! Starting a command so that it can be traced from its very first goroutine:
//! the child stops right after `exec` (ptrace), gleak attaches its probes to the
//! new image, then lets it run and stops ptracing it.
//!
//! The command gets a process group of its own, so that a terminal's Ctrl-C (sent
//! to the foreground group) reaches gleak alone: gleak freezes and judges the
//! command, then passes the signal on. And it does not outlive gleak: the kernel
//! kills it if gleak dies, even by SIGKILL (`PR_SET_PDEATHSIG`), unless it was
//! started with [`IfGleakDies::Continue`].

use std::{
    ffi::OsString,
    io,
    os::unix::process::CommandExt,
    process::{Child, Command},
};

use nix::{
    errno::Errno,
    sys::{
        prctl, ptrace,
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{getpid, getppid, gettid, Pid},
};

/// What becomes of the command if gleak dies before it (killed, crashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfGleakDies {
    /// The kernel kills it (SIGKILL).
    Kill,
    /// It runs on (SIGCONT, in case gleak had it stopped), untraced.
    Continue,
}

/// Starts `program args…`, stopped at its first instruction, in a process group
/// of its own.
///
/// Call it from the main thread: the parent-death signal fires when the *thread*
/// that forked exits, and only the main thread lives as long as gleak.
pub fn spawn_stopped(program: &OsString, args: &[OsString], if_gleak_dies: IfGleakDies) -> io::Result<Child> {
    let pid = getpid();
    if pid != gettid() {
        // The command would be killed as soon as this thread ends.
        return Err(io::Error::other("internal error: spawn_stopped called off the main thread"));
    }
    let death_signal = match if_gleak_dies {
        IfGleakDies::Kill => Signal::SIGKILL,
        IfGleakDies::Continue => Signal::SIGCONT,
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    // SAFETY: only async-signal-safe system calls between fork and exec, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            prctl::set_pdeathsig(death_signal)?;
            // gleak died before the prctl: nobody would deliver the signal.
            if getppid() != pid {
                return Err(Errno::ESRCH.into());
            }
            ptrace::traceme()?;
            // The command runs with its own privileges, not the tracing ones a
            // non-root gleak holds as ambient capabilities.
            crate::tracing::privilege::keep_capabilities_from_command();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The exec raises SIGTRAP for a PTRACE_TRACEME child: wait for that stop.
    match waitpid(pid_of(&child), None)? {
        WaitStatus::Stopped(..) => Ok(child),
        status => Err(io::Error::other(format!("{} did not stop after exec ({status:?})", program.to_string_lossy()))),
    }
}

/// Lets a child started by [`spawn_stopped`] run, no longer traced.
pub fn release(child: &Child) -> io::Result<()> {
    ptrace::detach(pid_of(child), None)?;
    Ok(())
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// Sends `signal` to `pid` (an unreaped child of ours: the PID cannot be reused).
pub fn signal(pid: u32, signal: Signal) {
    // Fails only if the child is gone, which its reaper learns anyway.
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Whether every thread of `pid` is stopped (`T`/`t` in /proc/PID/task/*/stat).
pub fn is_stopped(pid: u32) -> bool {
    let Ok(tasks) = procfs::process::Process::new(pid as i32).and_then(|p| p.tasks()) else { return false };
    let mut any = false;
    for task in tasks {
        let state = task.and_then(|t| t.stat()).map(|s| s.state);
        if !matches!(state, Ok('T' | 't')) {
            return false;
        }
        any = true;
    }
    any
}
