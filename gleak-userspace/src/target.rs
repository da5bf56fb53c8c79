//! Target discovery: from a PID to the Go binary it runs and where it is loaded.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

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
    /// (device, inode) of the executable at attach, to notice an exec.
    image: Option<(u64, u64)>,
}

impl Target {
    pub fn from_pid(pid: u32) -> Result<Self> {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Error::NoSuchProcess(pid));
        }
        // A thread id names its process: probes and layouts are per process.
        let pid = thread_group(pid).unwrap_or(pid);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let attach_path = proc_dir.join("exe");
        let exe = std::fs::read_link(&attach_path).map_err(|source| proc_error(pid, &attach_path, source))?;
        let binary = GoBinary::open(&attach_path, &exe)?;
        let load_bias = load_bias(pid, &attach_path, &binary)?;
        let image = std::fs::metadata(&attach_path).ok().map(|m| (m.dev(), m.ino()));
        let ns_pid = namespaced_pid(pid).filter(|&p| p != pid);
        Ok(Self { pid, ns_pid, exe, attach_path, binary, load_bias, image })
    }

    pub fn is_alive(&self) -> bool {
        process_alive(self.pid)
    }

    /// Whether the process still runs the image gleak attached to (not after an exec).
    /// A process that is gone counts as unchanged: liveness is checked elsewhere.
    pub fn same_image(&self) -> bool {
        let now = std::fs::metadata(&self.attach_path).ok().map(|m| (m.dev(), m.ino()));
        now.is_none() || now == self.image
    }
}

/// The innermost of the PIDs in `NSpid:` (/proc/PID/status): the PID the process
/// has inside its own namespace.
fn namespaced_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|v| v.split_whitespace().last()?.parse().ok())
}

/// The process a thread id belongs to (`Tgid:` in /proc/TID/status).
fn thread_group(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; check its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn proc_error(pid: u32, path: &Path, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::NotFound {
        // /proc/PID exists but has no exe link: a kernel thread, or it just exited.
        if Path::new(&format!("/proc/{pid}")).exists() {
            return Error::NoExecutable(pid);
        }
        return Error::NoSuchProcess(pid);
    }
    // SAFETY: no arguments, no side effects.
    let hint = if unsafe { libc::geteuid() } == 0 {
        "refused even to root: is the process in another PID namespace or protected by a security module?"
    } else {
        "gleak must run as root to trace another process"
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
    let maps = std::fs::read_to_string(&maps_path).map_err(|source| proc_error(pid, &maps_path, source))?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(meta.ino()) || u64::from_str_radix(offset, 16).ok() != Some(0) {
            continue;
        }
        let start = range.split('-').next().and_then(|s| u64::from_str_radix(s, 16).ok()).unwrap_or(0);
        return Ok(start.wrapping_sub(binary.first_segment_vaddr() & !0xfff));
    }
    // Guessing 0 would make every address wrong, silently.
    Err(Error::NoMapping { pid, path: binary.path.clone() })
}
