//! Target discovery: from a PID to the Go binary it runs and where it is loaded,
//! and the process pinned by descriptor so that a PID reused by another process is
//! never taken for it.

use std::{
    io::{self, Read},
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use nix::errno::Errno;
use procfs::{process::Process, ProcError};

use crate::{
    binary::GoBinary,
    error::{Error, Result},
};

/// A running Go process.
pub struct Target {
    pub pid: u32,
    /// The PID inside the target's own PID namespace (a container), if it differs.
    pub ns_pid: Option<u32>,
    /// The executable's path as the process sees it (for messages).
    pub exe: PathBuf,
    /// `/proc/PID/exe`: opens the very inode the process runs, even inside another
    /// mount namespace or after the file was replaced on disk.
    pub attach_path: PathBuf,
    pub binary: GoBinary,
    /// Runtime address − link address (0 unless PIE).
    pub load_bias: u64,
    /// The process itself, by descriptor: answers for the process gleak attached to
    /// even once its PID belongs to another.
    process: ProcessHandle,
    /// What identifies the image at attach, to notice an exec.
    image: Image,
}

impl Target {
    pub fn from_pid(pid: u32) -> Result<Self> {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Error::NoSuchProcess(pid));
        }
        // A thread id names its process: probes and layouts are per process.
        let pid = thread_group(pid).unwrap_or(pid);
        // Pinned first: everything below is read by PID, and checked against the
        // pinned process at the end, so none of it can come from a successor.
        let process = ProcessHandle::open(pid).map_err(|source| {
            let path = PathBuf::from(format!("/proc/{pid}"));
            match source.raw_os_error() {
                Some(code) if code == Errno::ESRCH as i32 || code == Errno::ENOENT as i32 => Error::NoSuchProcess(pid),
                _ => proc_error(pid, &path, source),
            }
        })?;
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let attach_path = proc_dir.join("exe");
        let exe = std::fs::read_link(&attach_path).map_err(|source| proc_error(pid, &attach_path, source))?;
        let binary = GoBinary::open(&attach_path, &exe)?;
        let load_bias = load_bias(pid, &attach_path, &binary)?;
        let image = Image::of(&process);
        let ns_pid = namespaced_pid(pid).filter(|&p| p != pid);
        if !process.is_alive() {
            return Err(Error::NoSuchProcess(pid));
        }
        Ok(Self { pid, ns_pid, exe, attach_path, binary, load_bias, process, image })
    }

    /// Whether the program gleak attached to still runs: the very process (not
    /// another that got its PID since), not a zombie, and still the same image
    /// (after an exec, what gleak traced is gone even though the process is not).
    pub fn is_alive(&self) -> bool {
        self.process.is_alive() && self.same_image()
    }

    /// Whether the process still runs the image gleak attached to (not after an exec,
    /// even of the same file: the exec maps a new stack). A process that is gone
    /// counts as unchanged: liveness is [`Target::process_alive`]'s.
    pub fn same_image(&self) -> bool {
        let now = Image::of(&self.process);
        // Read after the facts: if the process is gone they may be anyone's.
        if !self.process.is_alive() || now.exe.is_none() {
            return true;
        }
        now.exe == self.image.exe && (now.start_stack == 0 || now.start_stack == self.image.start_stack)
    }

    /// Whether the process gleak attached to exists and has not exited (whatever
    /// it runs now).
    pub fn process_alive(&self) -> bool {
        self.process.is_alive()
    }
}

/// What tells one exec of a process from the next: the executable's (device,
/// inode), and where the exec put the initial stack (`startstack` in
/// /proc/PID/stat: randomized per exec, so a re-exec of the same file shows too;
/// 0 when unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Image {
    exe: Option<(u64, u64)>,
    start_stack: u64,
}

impl Image {
    fn of(process: &ProcessHandle) -> Image {
        let exe = process.exe_id();
        let start_stack = process.start_stack().unwrap_or(0);
        Image { exe, start_stack }
    }
}

/// A process held by descriptor rather than by PID number: a pidfd (Linux 5.3+)
/// and an open `/proc/PID` directory (procfs's [`Process`] holds one). Both keep naming the process they were opened
/// on: once it has exited, the pidfd polls readable and lookups in the directory
/// fail, even if the PID number now belongs to another process.
pub struct ProcessHandle {
    pid: u32,
    /// `None` on kernels without `pidfd_open`; the directory then decides alone.
    pidfd: Option<OwnedFd>,
    proc_dir: Process,
}

impl ProcessHandle {
    /// Pins process `pid`. Fails with ESRCH if there is none, or only a zombie.
    pub fn open(pid: u32) -> io::Result<Self> {
        let raw = i32::try_from(pid).map_err(|_| Errno::ESRCH)?;
        let pidfd = match rustix::process::Pid::from_raw(raw)
            .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        {
            Some(Ok(fd)) => Some(fd),
            Some(Err(rustix::io::Errno::NOSYS)) => None,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Errno::ESRCH.into()),
        };
        // Opened after the pidfd: if that process is still alive below, this
        // directory is its own.
        let proc_dir = Process::new(raw).map_err(proc_io_error)?;
        let handle = Self { pid, pidfd, proc_dir };
        if !handle.is_alive() {
            return Err(Errno::ESRCH.into());
        }
        Ok(handle)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the pinned process has not exited (a zombie has).
    pub fn is_alive(&self) -> bool {
        if let Some(fd) = &self.pidfd {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            if let Ok(n) = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], PollTimeout::ZERO) {
                // Readable once every thread has exited.
                return n == 0;
            }
        }
        // No pidfd: the directory, which stops answering once the process is reaped.
        matches!(self.proc_dir.stat(), Ok(stat) if stat.state != 'Z' && stat.state != 'X')
    }

    /// Reads `/proc/PID/<name>` of the pinned process; fails once it is reaped.
    pub fn read(&self, name: &str) -> io::Result<String> {
        let mut text = String::new();
        self.proc_dir.open_relative(name).map_err(proc_io_error)?.read_to_string(&mut text)?;
        Ok(text)
    }

    /// Where the exec put the initial stack (`startstack`), if the process still answers.
    fn start_stack(&self) -> Option<u64> {
        self.proc_dir.stat().ok().map(|s| s.startstack)
    }

    /// (device, inode) of the executable the pinned process runs now.
    fn exe_id(&self) -> Option<(u64, u64)> {
        let meta = self.proc_dir.open_relative("exe").ok()?.metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    }
}

/// procfs's error as the `io::Error` it wraps.
pub(crate) fn proc_io_error(e: ProcError) -> io::Error {
    match e {
        ProcError::Io(e, _) => e,
        ProcError::NotFound(_) => Errno::ENOENT.into(),
        ProcError::PermissionDenied(_) => Errno::EACCES.into(),
        other => io::Error::other(other.to_string()),
    }
}

/// The innermost of the PIDs in `NSpid:` (/proc/PID/status): the PID the process
/// has inside its own namespace.
fn namespaced_pid(pid: u32) -> Option<u32> {
    let status = Process::new(pid as i32).ok()?.status().ok()?;
    status.nspid?.last().and_then(|&p| u32::try_from(p).ok())
}

/// The process a thread id belongs to (`Tgid:` in /proc/TID/status).
fn thread_group(tid: u32) -> Option<u32> {
    u32::try_from(Process::new(tid as i32).ok()?.status().ok()?.tgid).ok()
}

/// Whether some process, not a zombie, has PID `pid` now. Only for a PID that
/// cannot have been reused (an unreaped child of ours); otherwise hold a
/// [`ProcessHandle`].
pub fn process_alive(pid: u32) -> bool {
    Process::new(pid as i32).is_ok_and(|p| p.is_alive())
}

fn proc_error(pid: u32, path: &Path, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::NotFound {
        // /proc/PID exists but has no exe link: a kernel thread, or it just exited.
        if Path::new(&format!("/proc/{pid}")).exists() {
            return Error::NoExecutable(pid);
        }
        return Error::NoSuchProcess(pid);
    }
    let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
        crate::tracing::privilege::explain_process_denied(pid)
    } else {
        "it may have exited, or be in another PID namespace".to_string()
    };
    Error::ProcAccess { path: path.to_path_buf(), cause: source, hint }
}

/// Finds the executable's first mapping (matched by device and inode) in
/// `/proc/PID/maps` and compares it with the link address of that segment.
fn load_bias(pid: u32, exe: &Path, binary: &GoBinary) -> Result<u64> {
    if !binary.is_pie {
        return Ok(0);
    }
    let meta = std::fs::metadata(exe).map_err(|source| proc_error(pid, exe, source))?;
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let maps = Process::new(pid as i32)
        .and_then(|p| p.maps())
        .map_err(|source| proc_error(pid, &maps_path, proc_io_error(source)))?;
    if let Some(first) = maps.iter().find(|m| m.inode == meta.ino() && m.offset == 0) {
        return Ok(first.address.0.wrapping_sub(binary.first_segment_vaddr() & !0xfff));
    }
    // Guessing 0 would make every address wrong, silently.
    Err(Error::NoMapping { pid, path: binary.path.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sleeper() -> std::process::Child {
        Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().expect("run `sleep 30`")
    }

    #[test]
    fn handle_follows_the_process_not_the_pid() {
        let mut child = sleeper();
        let handle = ProcessHandle::open(child.id()).unwrap();
        assert!(handle.is_alive());
        assert!(handle.read("stat").unwrap().contains("(sleep)"));
        let exe = handle.exe_id().expect("exe of a running process");
        assert_eq!(Some(exe), std::fs::metadata(format!("/proc/{}/exe", child.id())).ok().map(|m| (m.dev(), m.ino())));
        assert!(handle.start_stack().is_some(), "startstack");

        child.kill().unwrap();
        // A zombie (not yet reaped) has exited.
        for _ in 0..200 {
            if !handle.is_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!handle.is_alive(), "a killed, unreaped child counts as alive");
        child.wait().unwrap();
        assert!(!handle.is_alive());
        // Reaped: the directory no longer answers, whoever has the PID now.
        assert!(handle.read("stat").is_err());
        assert!(handle.exe_id().is_none());
    }

    #[test]
    fn no_handle_on_a_zombie_or_nothing() {
        let mut child = sleeper();
        let pid = child.id();
        child.kill().unwrap();
        while process_alive(pid) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(ProcessHandle::open(pid).err().and_then(|e| e.raw_os_error()), Some(Errno::ESRCH as i32));
        child.wait().unwrap();
        let err = ProcessHandle::open(pid).err().and_then(|e| e.raw_os_error());
        assert!([Some(Errno::ESRCH as i32), Some(Errno::ENOENT as i32)].contains(&err), "{err:?}");
    }
}
