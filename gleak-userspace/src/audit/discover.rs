//! Finding the Go processes of a host: every process in `/proc` whose executable
//! has a `.go.buildinfo` (by content, not by name), filtered as the user asked,
//! with who it is: its PID inside its namespace, its cgroup, container and
//! Kubernetes pod.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use globset::GlobSet;
use procfs::process::Process;
use serde::Serialize;

use crate::binary::GoBinary;

/// Which processes to audit.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these PIDs (empty: all).
    pub pids: Vec<u32>,
    /// Only executables whose path matches.
    pub exe: Option<GlobSet>,
    /// Never executables whose path matches.
    pub exclude: Option<GlobSet>,
    /// Only processes whose cgroup path contains this (a container id, a pod uid, a unit).
    pub cgroup: Option<String>,
}

/// A process as discovery finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pid: u32,
    /// Start time (clock ticks after boot, `/proc/PID/stat` field 22): with the PID,
    /// what tells this process from a later one that reuses its PID.
    pub start_time: u64,
    pub exe: PathBuf,
    pub go_version: String,
}

/// Who a process is, for findings and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// As the host sees it.
    pub pid: u32,
    /// Inside its own PID namespace, when that differs.
    pub ns_pid: Option<u32>,
    pub exe: String,
    pub go_version: String,
    /// The main package's import path, from `.go.buildinfo`.
    pub build_path: Option<String>,
    /// Its cgroup (v2 path, or the v1 `pids`/`cpu` one).
    pub cgroup: Option<String>,
    /// The container id the cgroup path names (Docker, containerd, CRI-O).
    pub container_id: Option<String>,
    /// The Kubernetes pod UID the cgroup path names.
    pub pod_uid: Option<String>,
}

/// Remembers which executables are Go, by (device, inode): most processes of a
/// host share a few binaries, and opening one is the expensive part.
#[derive(Default)]
pub struct Discovery {
    known: HashMap<(u64, u64), Option<String>>,
}

/// Executables remembered at most (then the memory starts over).
const MAX_KNOWN_BINARIES: usize = 4096;

impl Discovery {
    /// Every Go process of the host that passes `filter`, but `skip` (gleak itself).
    pub fn scan(&mut self, filter: &Filter, skip: u32) -> Vec<Candidate> {
        let mut found = Vec::new();
        let Ok(processes) = procfs::process::all_processes() else { return found };
        for process in processes.flatten() {
            let Ok(pid) = u32::try_from(process.pid()) else { continue };
            if pid == skip || (!filter.pids.is_empty() && !filter.pids.contains(&pid)) {
                continue;
            }
            if let Some(c) = self.candidate(&process, filter) {
                found.push(c);
            }
        }
        found.sort_by_key(|c| c.pid);
        found
    }

    fn candidate(&mut self, process: &Process, filter: &Filter) -> Option<Candidate> {
        let pid = process.pid() as u32;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        // Kernel threads and processes gone meanwhile have no executable.
        let exe = process.exe().ok()?;
        if filter.exe.as_ref().is_some_and(|g| !g.is_match(&exe))
            || filter.exclude.as_ref().is_some_and(|g| g.is_match(&exe))
        {
            return None;
        }
        if let Some(want) = &filter.cgroup {
            if !cgroup_of(process).is_some_and(|c| c.contains(want.as_str())) {
                return None;
            }
        }
        let meta = fs::metadata(proc.join("exe")).ok()?;
        let key = (meta.dev(), meta.ino());
        if self.known.len() >= MAX_KNOWN_BINARIES && !self.known.contains_key(&key) {
            self.known.clear();
        }
        let version = self
            .known
            .entry(key)
            .or_insert_with(|| GoBinary::open(&proc.join("exe"), &exe).ok().map(|b| b.go_version.raw))
            .clone()?;
        Some(Candidate { pid, start_time: process.stat().ok()?.starttime, exe, go_version: version })
    }
}

/// The process's cgroup: the v2 path (`0::/…`), else the first v1 hierarchy's.
pub fn cgroup_path(pid: u32) -> Option<String> {
    cgroup_of(&Process::new(pid as i32).ok()?)
}

fn cgroup_of(process: &Process) -> Option<String> {
    let groups = process.cgroups().ok()?.0;
    let v2 = groups.iter().find(|g| g.hierarchy == 0);
    v2.or(groups.first()).map(|g| g.pathname.clone())
}

/// The container id and pod UID a cgroup path names:
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b_2c3d.slice/cri-containerd-<64 hex>.scope`,
/// `/kubepods/burstable/pod0a1b-2c3d/<64 hex>`, `/system.slice/docker-<64 hex>.scope`, `/docker/<64 hex>`.
pub fn container_of(cgroup: &str) -> (Option<String>, Option<String>) {
    let mut container = None;
    let mut pod = None;
    for part in cgroup.split('/') {
        let part = part.trim_end_matches(".scope").trim_end_matches(".slice");
        // The container: a 64-hex-digit id, possibly after a runtime prefix.
        let id = part.rsplit(['-', ':']).next().unwrap_or(part);
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            container = Some(id.to_string());
        }
        // The pod: `pod<uid>`, the whole part (cgroupfs) or the last dash-separated
        // word of a systemd slice (whose uid has `_` for `-`).
        let word = if part.starts_with("pod") { part } else { part.rsplit('-').next().unwrap_or(part) };
        if let Some(uid) = word.strip_prefix("pod") {
            if uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_' || b == b'-') {
                pod = Some(uid.replace('_', "-"));
            }
        }
    }
    (container, pod)
}

/// Who process `pid` is; `ns_pid` and the rest as the target reader found them.
pub fn identity(pid: u32, ns_pid: Option<u32>, exe: &Path, binary: &GoBinary) -> Identity {
    let cgroup = cgroup_path(pid);
    let (container_id, pod_uid) = cgroup.as_deref().map(container_of).unwrap_or_default();
    Identity {
        pid,
        ns_pid,
        exe: exe.display().to_string(),
        go_version: binary.go_version.raw.clone(),
        build_path: binary.main_path.clone(),
        cgroup,
        container_id,
        pod_uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_pods_from_cgroup_paths() {
        let id = "a".repeat(64);
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6a7b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-{id}.scope"
        );
        assert_eq!(
            container_of(&systemd),
            (Some(id.clone()), Some("0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d".to_string()))
        );
        let cgroupfs = format!("/kubepods/burstable/pod0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d/{id}");
        assert_eq!(
            container_of(&cgroupfs),
            (Some(id.clone()), Some("0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d".to_string()))
        );
        assert_eq!(container_of(&format!("/system.slice/docker-{id}.scope")), (Some(id.clone()), None));
        assert_eq!(container_of(&format!("/docker/{id}")), (Some(id), None));
        assert_eq!(container_of("/user.slice/user-0.slice/session-1.scope"), (None, None));
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        assert!(cgroup_path(me).is_some());
    }
}
