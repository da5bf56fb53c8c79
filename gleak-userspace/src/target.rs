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
    /// The executable's path as the process sees it (for messages).
    pub exe: PathBuf,
    /// `/proc/PID/exe`: opens the very inode the process runs, even inside another
    /// mount namespace or after the file was replaced on disk.
    pub attach_path: PathBuf,
    pub binary: GoBinary,
    /// Runtime address − link address (0 unless PIE).
    pub load_bias: u64,
}

impl Target {
    pub fn from_pid(pid: u32) -> Result<Self> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(Error::NoSuchProcess(pid));
        }
        let attach_path = proc_dir.join("exe");
        let exe = std::fs::read_link(&attach_path)
            .map_err(|source| proc_error(pid, &attach_path, source))?;
        let binary = GoBinary::open(&attach_path, &exe)?;
        let load_bias = load_bias(pid, &attach_path, &binary)?;
        Ok(Self {
            pid,
            exe,
            attach_path,
            binary,
            load_bias,
        })
    }

    pub fn is_alive(&self) -> bool {
        process_alive(self.pid)
    }
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; check its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn proc_error(pid: u32, path: &Path, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::NotFound {
        Error::NoSuchProcess(pid)
    } else {
        Error::ProcAccess {
            path: path.to_path_buf(),
            cause: source,
        }
    }
}

/// Finds the executable's first mapping (matched by device and inode) in
/// `/proc/PID/maps` and compares it with the link address of that segment.
fn load_bias(pid: u32, exe: &Path, binary: &GoBinary) -> Result<u64> {
    if !binary.is_pie {
        return Ok(0);
    }
    let meta = std::fs::metadata(exe).map_err(|source| proc_error(pid, exe, source))?;
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let maps = std::fs::read_to_string(&maps_path)
        .map_err(|source| proc_error(pid, &maps_path, source))?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(meta.ino())
            || u64::from_str_radix(offset, 16).ok() != Some(0)
        {
            continue;
        }
        let start = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .unwrap_or(0);
        return Ok(start.wrapping_sub(binary.first_segment_vaddr() & !0xfff));
    }
    Ok(0)
}
