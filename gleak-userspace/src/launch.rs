//! Starting a command so that it can be traced from its very first goroutine:
//! the child stops right after `exec` (ptrace), gleak attaches its probes to the
//! new image, then lets it run and stops ptracing it.

use std::{
    ffi::OsString,
    io,
    os::unix::process::CommandExt,
    process::{Child, Command},
};

/// Starts `program args…`, stopped at its first instruction.
pub fn spawn_stopped(program: &OsString, args: &[OsString]) -> io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // If gleak dies while the command is held at its exit, let it finish.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGCONT);
            if libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The exec raises SIGTRAP for a PTRACE_TRACEME child: wait for that stop.
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(child.id() as libc::pid_t, &mut status, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if !libc::WIFSTOPPED(status) {
        return Err(io::Error::other(format!(
            "{} did not stop after exec (status {status:#x})",
            program.to_string_lossy()
        )));
    }
    Ok(child)
}

/// Lets a child started by [`spawn_stopped`] run, no longer traced.
pub fn release(child: &Child) -> io::Result<()> {
    // SAFETY: detaching from our own stopped tracee.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            child.id() as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Whether every thread of `pid` is stopped (`T`/`t` in /proc/PID/task/*/stat).
pub fn is_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    let mut any = false;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
        if !matches!(state, Some("T" | "t")) {
            return false;
        }
        any = true;
    }
    any
}
