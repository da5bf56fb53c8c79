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
    // SAFETY: no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    if pid != tid {
        // The command would be killed as soon as this thread ends.
        return Err(io::Error::other("internal error: spawn_stopped called off the main thread"));
    }
    let death_signal = match if_gleak_dies {
        IfGleakDies::Kill => libc::SIGKILL,
        IfGleakDies::Continue => libc::SIGCONT,
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // gleak died before the prctl: nobody would deliver the signal.
            if libc::getppid() != pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
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

/// The name of a signal gleak handles or sends (`SIGTERM`), else `signal N`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGSTOP => "SIGSTOP".into(),
        libc::SIGCONT => "SIGCONT".into(),
        other => format!("signal {other}"),
    }
}

/// Sends `signal` to `pid` (an unreaped child of ours: the PID cannot be reused).
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
