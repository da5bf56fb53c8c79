//! The target's memory limit and use, read from outside it: its cgroup's limit
//! and usage (v2 `memory.max`/`memory.current`, v1
//! `memory.limit_in_bytes`/`memory.usage_in_bytes`), its resident set
//! (`/proc/PID/status`), the host's memory (`/proc/meminfo`). Every file is
//! untrusted: read up to a bound, parsed strictly, errors in words, no panics.
//!
//! The cgroup's directory is found through gleak's own view: the target's
//! cgroup path in `/proc/PID/cgroup` is relative to gleak's cgroup namespace,
//! and `/proc/self/mountinfo` says where gleak sees that hierarchy mounted.
//! When gleak runs in a container of its own, that view ends at its own cgroup:
//! the target's mount of its hierarchy (`/proc/PID/mountinfo`, read through
//! `/proc/PID/root`) shows the target's cgroup, or in a cgroup namespace of its
//! own, its namespace's root (its container's).
//! The limit that binds is the one of the cgroup or its ancestors that leaves
//! the least room (a parent's limit counts its children's use too).

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use crate::process::memory::ReadMemory;

/// Which cgroup hierarchy holds the memory controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    /// The file holding the limit.
    pub fn limit_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.limit_in_bytes",
            Self::V2 => "memory.max",
        }
    }

    /// The file holding the usage.
    pub fn usage_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.usage_in_bytes",
            Self::V2 => "memory.current",
        }
    }
}

/// The cgroup limit that binds a process: of its own cgroup or an ancestor's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLimit {
    pub version: CgroupVersion,
    /// The limiting cgroup's path in its hierarchy (`/kubepods/pod…/…`).
    pub cgroup: String,
    pub limit_bytes: u64,
    /// That cgroup's usage now.
    pub usage_bytes: u64,
}

/// The most gleak reads of a `/proc` or cgroup file: far above any real one.
const MAX_PROC_FILE: u64 = 1 << 20;
/// The most of a cgroup's one-number file (`memory.max`: at most 20 digits).
const MAX_NUMBER_FILE: u64 = 64;
/// How many ancestors are walked at most (real hierarchies nest a handful deep).
const MAX_CGROUP_DEPTH: usize = 64;
/// cgroup v1's "no limit" is `PAGE_COUNTER_MAX` pages in bytes
/// (`0x7FFFFFFFFFFFF000` with 4 KiB pages, differing with the page size): any
/// limit from 2^62 bytes (4 EiB) on is none.
const V1_NO_LIMIT_FROM: u64 = 1 << 62;

/// The contents of `path`, at most `max` bytes, as text.
fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{}: longer than {max} bytes", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
}

/// The cgroup limit that binds process `pid`: `Ok(None)` when no cgroup of its
/// memory hierarchy has one (or the memory controller is not in use).
pub fn cgroup_limit(pid: u32) -> Result<Option<CgroupLimit>, String> {
    let proc_cgroup = read_bounded(Path::new(&format!("/proc/{pid}/cgroup")), MAX_PROC_FILE)?;
    let Some((version, cgroup_path)) = memory_cgroup(&proc_cgroup)? else { return Ok(None) };
    let own_mounts = parse_mountinfo(&read_bounded(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO)?)?;
    let dirs = match dirs_in_view(&own_mounts, Path::new("/"), version, &cgroup_path) {
        Ok(dirs) => dirs,
        Err(own) => {
            // gleak in a container sees only its own cgroups: the target's mount
            // of its hierarchy, through its root, shows the target's.
            let target_root = PathBuf::from(format!("/proc/{pid}/root"));
            let target_mounts =
                parse_mountinfo(&read_bounded(Path::new(&format!("/proc/{pid}/mountinfo")), MAX_MOUNTINFO)?)?;
            dirs_in_view(&target_mounts, &target_root, version, &cgroup_path)
                .or_else(|_| namespace_root_dir(&target_mounts, &target_root, version, &cgroup_path))
                .map_err(|theirs| format!("{own}; through the target's mounts: {theirs}"))?
        }
    };
    let mut levels = Vec::with_capacity(dirs.len());
    for (dir, cgroup) in dirs {
        let limit = match read_bounded(&dir.join(version.limit_file()), MAX_NUMBER_FILE) {
            Ok(text) => parse_limit(version, &text)?,
            // v2's root cgroup, and cgroups without the memory controller, have no limit file.
            Err(_) => None,
        };
        let Some(limit) = limit else { continue };
        let usage = parse_number(&read_bounded(&dir.join(version.usage_file()), MAX_NUMBER_FILE)?)
            .map_err(|e| format!("{}: {e}", dir.join(version.usage_file()).display()))?;
        levels.push(CgroupLimit { version, cgroup, limit_bytes: limit, usage_bytes: usage });
    }
    Ok(binding_level(levels))
}

/// The most of a `mountinfo` file gleak reads (hosts with many containers have thousands of mounts).
const MAX_MOUNTINFO: u64 = 4 * MAX_PROC_FILE;

/// The directories of `cgroup_path` and its ancestors in one mount namespace's
/// view (`mounts`, seen under `root`): where its memory hierarchy is mounted,
/// if the path lies under what that mount shows.
pub fn dirs_in_view(
    mounts: &[Mount],
    root: &Path,
    version: CgroupVersion,
    cgroup_path: &str,
) -> Result<Vec<(PathBuf, String)>, String> {
    let mount = memory_mount(mounts, version)
        .ok_or_else(|| format!("no {version:?} memory cgroup hierarchy mounted in {}", root.display()))?;
    cgroup_dirs(&under(root, &mount.mount_point), &mount.root, cgroup_path)
}

/// A target in a cgroup namespace of its own, seen from gleak in another one
/// (`/../../kubepods/…`): its mount shows its namespace's root cgroup, its
/// container's (the target's own cgroup or an ancestor), the one level readable.
pub fn namespace_root_dir(
    mounts: &[Mount],
    root: &Path,
    version: CgroupVersion,
    cgroup_path: &str,
) -> Result<Vec<(PathBuf, String)>, String> {
    let mount = memory_mount(mounts, version)
        .ok_or_else(|| format!("no {version:?} memory cgroup hierarchy mounted in {}", root.display()))?;
    if mount.root != "/" || !cgroup_path.starts_with("/..") {
        return Err(format!("cgroup {cgroup_path:?} is not in a namespace of its own"));
    }
    Ok(vec![(under(root, &mount.mount_point), cgroup_path.to_string())])
}

/// `path` (absolute, in a mount namespace) as seen through `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Of the limited levels, leaf first, the one with the least room left (the
/// nearest on a tie): it is reached first whatever the process grows by.
pub fn binding_level(levels: Vec<CgroupLimit>) -> Option<CgroupLimit> {
    levels.into_iter().min_by_key(|l| l.limit_bytes.saturating_sub(l.usage_bytes))
}

/// Where the process's memory is accounted, from `/proc/PID/cgroup`: the v1
/// hierarchy with the `memory` controller if there is one (hybrid systems), else
/// the v2 one (`0::/path`). `None`: neither (no cgroups).
pub fn memory_cgroup(text: &str) -> Result<Option<(CgroupVersion, String)>, String> {
    let mut v2 = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        // `hierarchy-ID:controller-list:cgroup-path`; the path may hold ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("/proc/PID/cgroup: malformed line {line:?}"));
        };
        id.parse::<u32>().map_err(|_| format!("/proc/PID/cgroup: malformed hierarchy id in {line:?}"))?;
        if !path.starts_with('/') {
            return Err(format!("/proc/PID/cgroup: path {path:?} is not absolute"));
        }
        if controllers.split(',').any(|c| c == "memory") {
            return Ok(Some((CgroupVersion::V1, path.to_string())));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some((CgroupVersion::V2, path.to_string()));
        }
    }
    Ok(v2)
}

/// One line of `/proc/self/mountinfo`, the fields gleak uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the mounted filesystem shown at the mount point.
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: String,
}

/// `/proc/self/mountinfo`: `id parent major:minor root mount-point options
/// [optional fields…] - fstype source super-options`, octal escapes (`\040`) in paths.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let malformed = || format!("/proc/self/mountinfo: malformed line {line:?}");
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-").ok_or_else(malformed)?;
        if dash < 6 || fields.len() < dash + 4 {
            return Err(malformed());
        }
        mounts.push(Mount {
            root: unescape_octal(fields[3]).ok_or_else(malformed)?,
            mount_point: PathBuf::from(unescape_octal(fields[4]).ok_or_else(malformed)?),
            fstype: fields[dash + 1].to_string(),
            super_options: fields[dash + 3].to_string(),
        });
    }
    Ok(mounts)
}

/// `\NNN` octal escapes (space, tab, newline, backslash) decoded.
fn unescape_octal(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4)?;
            let text = std::str::from_utf8(digits).ok()?;
            out.push(u8::from_str_radix(text, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the memory hierarchy of `version` is mounted: `cgroup2`, or a v1
/// `cgroup` mount with the `memory` controller among its options.
pub fn memory_mount(mounts: &[Mount], version: CgroupVersion) -> Option<&Mount> {
    mounts.iter().find(|m| match version {
        CgroupVersion::V2 => m.fstype == "cgroup2",
        CgroupVersion::V1 => m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"),
    })
}

/// The directories of `cgroup_path` and of each ancestor up to the mount's root,
/// leaf first, each with its cgroup path. The path must lie under the mount's
/// root and have no `.`/`..` steps (it names a directory gleak opens).
pub fn cgroup_dirs(mount_point: &Path, mount_root: &str, cgroup_path: &str) -> Result<Vec<(PathBuf, String)>, String> {
    let outside = || format!("cgroup {cgroup_path:?} is not under the mounted hierarchy's root {mount_root:?}");
    let root_steps: Vec<&str> = mount_root.split('/').filter(|s| !s.is_empty()).collect();
    let steps: Vec<&str> = cgroup_path.split('/').filter(|s| !s.is_empty()).collect();
    if steps.iter().chain(&root_steps).any(|s| *s == "." || *s == "..") {
        return Err(format!("cgroup {cgroup_path:?} has relative steps"));
    }
    if steps.len() > MAX_CGROUP_DEPTH {
        return Err(format!("cgroup {cgroup_path:?} nests more than {MAX_CGROUP_DEPTH} deep"));
    }
    let below = steps.strip_prefix(root_steps.as_slice()).ok_or_else(outside)?;
    let mut dirs = Vec::with_capacity(below.len() + 1);
    for depth in (0..=below.len()).rev() {
        let dir = below[..depth].iter().fold(mount_point.to_path_buf(), |dir, step| dir.join(step));
        let path = format!("/{}", steps[..root_steps.len() + depth].join("/"));
        dirs.push((dir, path));
    }
    Ok(dirs)
}

/// A cgroup limit file: v2 `max` or bytes; v1 bytes, its "no limit" value as none.
pub fn parse_limit(version: CgroupVersion, text: &str) -> Result<Option<u64>, String> {
    if version == CgroupVersion::V2 && text.trim_end_matches('\n') == "max" {
        return Ok(None);
    }
    let bytes = parse_number(text).map_err(|e| format!("{}: {e}", version.limit_file()))?;
    Ok(match version {
        CgroupVersion::V1 if bytes >= V1_NO_LIMIT_FROM => None,
        _ => Some(bytes),
    })
}

/// A file holding one decimal number and a newline.
pub fn parse_number(text: &str) -> Result<u64, String> {
    let digits = text.strip_suffix('\n').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{:?} is not a number", truncated(text)));
    }
    digits.parse::<u64>().map_err(|_| format!("{digits:?} is out of range"))
}

fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The `Key:   N kB` line of `/proc/PID/status` or `/proc/meminfo`, in bytes.
pub fn parse_kb_field(text: &str, key: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
        .ok_or_else(|| format!("no {key} line"))?;
    let value = line.trim().strip_suffix(" kB").ok_or_else(|| format!("{key}: {:?} is not in kB", truncated(line)))?;
    let kb = parse_number(value.trim()).map_err(|e| format!("{key}: {e}"))?;
    kb.checked_mul(1024).ok_or_else(|| format!("{key}: {kb} kB is out of range"))
}

/// Process `pid`'s resident set (`VmRSS`), in bytes.
pub fn resident_bytes(pid: u32) -> Result<u64, String> {
    let status = read_bounded(Path::new(&format!("/proc/{pid}/status")), MAX_PROC_FILE)?;
    parse_kb_field(&status, "VmRSS")
}

/// `GOMEMLIMIT` as the Go runtime holds it now (`runtime.gcController.memoryLimit`,
/// an `atomic.Int64` at run-time address `addr`, set from the environment at start
/// or by `debug.SetMemoryLimit`): `None` for `math.MaxInt64`, the runtime's "no limit".
pub fn go_memory_limit(mem: &dyn ReadMemory, addr: u64) -> Result<Option<u64>, String> {
    let raw = mem.read_u64(addr).map_err(|e| format!("runtime.gcController.memoryLimit at {addr:#x}: {e}"))?;
    match i64::from_le_bytes(raw.to_le_bytes()) {
        i64::MAX => Ok(None),
        // The runtime refuses negative limits: this is not the field.
        limit if limit < 0 => Err(format!("runtime.gcController.memoryLimit reads {limit}, not a limit")),
        limit => Ok(Some(limit as u64)),
    }
}

/// The host's memory (`MemTotal`), in bytes.
pub fn host_memory_bytes() -> Result<u64, String> {
    parse_kb_field(&read_bounded(Path::new("/proc/meminfo"), MAX_PROC_FILE)?, "MemTotal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v2_only() {
        let found = memory_cgroup("0::/kubepods.slice/pod1/cri-containerd-ab.scope\n").unwrap();
        assert_eq!(found, Some((CgroupVersion::V2, "/kubepods.slice/pod1/cri-containerd-ab.scope".into())));
    }

    #[test]
    fn proc_cgroup_hybrid_prefers_the_v1_memory_hierarchy() {
        // This machine's shape: v1 controllers and an empty v2 hierarchy.
        let text = "9:name=systemd:/\n4:memory:/process_api/9045c5\n3:cpuset:/\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(memory_cgroup(text).unwrap(), Some((CgroupVersion::V1, "/process_api/9045c5".into())));
        // Memory among several controllers of one hierarchy.
        assert_eq!(
            memory_cgroup("5:cpu,memory:/a\n").unwrap(),
            Some((CgroupVersion::V1, "/a".into())),
            "memory co-mounted with cpu"
        );
        // A path holding ':'.
        assert_eq!(memory_cgroup("0::/a:b\n").unwrap(), Some((CgroupVersion::V2, "/a:b".into())));
    }

    #[test]
    fn proc_cgroup_without_memory_and_malformed() {
        assert_eq!(memory_cgroup("3:cpuset:/\n").unwrap(), None);
        assert_eq!(memory_cgroup("").unwrap(), None);
        for bad in ["garbage\n", "x::/a\n", "0::relative\n", "4:memory\n"] {
            assert!(memory_cgroup(bad).is_err(), "{bad:?}");
        }
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
41 31 0:38 /inner /sys/fs/cgroup/unified\\040dir rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_each_memory_hierarchy() {
        let mounts = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(mounts.len(), 4);
        let v1 = memory_mount(&mounts, CgroupVersion::V1).unwrap();
        assert_eq!((v1.root.as_str(), v1.mount_point.as_path()), ("/", Path::new("/sys/fs/cgroup/memory")));
        let v2 = memory_mount(&mounts, CgroupVersion::V2).unwrap();
        assert_eq!((v2.root.as_str(), v2.mount_point.as_path()), ("/inner", Path::new("/sys/fs/cgroup/unified dir")));
        assert!(memory_mount(&mounts[..2], CgroupVersion::V1).is_none(), "cpu is not memory");
        for bad in ["31 23 0:28 / /x rw\n", "1 2 - cgroup2 c rw\n", "31 23 0:28 / /x\\09 rw - cgroup2 c rw\n"] {
            assert!(parse_mountinfo(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cgroup_dirs_walk_up_to_the_mount_root() {
        let dirs = cgroup_dirs(Path::new("/sys/fs/cgroup"), "/", "/kubepods/pod1/ctr").unwrap();
        let expected = [
            ("/sys/fs/cgroup/kubepods/pod1/ctr", "/kubepods/pod1/ctr"),
            ("/sys/fs/cgroup/kubepods/pod1", "/kubepods/pod1"),
            ("/sys/fs/cgroup/kubepods", "/kubepods"),
            ("/sys/fs/cgroup", "/"),
        ];
        let got: Vec<(String, &str)> = dirs.iter().map(|(d, p)| (d.display().to_string(), p.as_str())).collect();
        assert_eq!(got, expected.map(|(d, p)| (d.to_string(), p)));
        // A hierarchy mounted from a subtree (inside a container): paths below it only.
        let inner = cgroup_dirs(Path::new("/sys/fs/cgroup"), "/kubepods/pod1", "/kubepods/pod1/ctr").unwrap();
        assert_eq!(inner[0], (PathBuf::from("/sys/fs/cgroup/ctr"), "/kubepods/pod1/ctr".into()));
        assert_eq!(inner[1], (PathBuf::from("/sys/fs/cgroup"), "/kubepods/pod1".into()));
        assert_eq!(inner.len(), 2);
        assert_eq!(cgroup_dirs(Path::new("/m"), "/", "/").unwrap(), [(PathBuf::from("/m"), "/".to_string())]);
        assert!(cgroup_dirs(Path::new("/m"), "/other", "/kubepods/x").unwrap_err().contains("not under"));
        assert!(cgroup_dirs(Path::new("/m"), "/", "/a/../../etc").unwrap_err().contains("relative"));
        let deep = "/a".repeat(MAX_CGROUP_DEPTH + 1);
        assert!(cgroup_dirs(Path::new("/m"), "/", &deep).unwrap_err().contains("nests"));
    }

    /// gleak on the host, in a container of its own (v1: its own cgroup mounted;
    /// v2: a cgroup namespace of its own), and where nothing resolves.
    #[test]
    fn views_of_the_target_s_cgroup() {
        let v2_host = parse_mountinfo("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n").unwrap();
        let dirs = dirs_in_view(&v2_host, Path::new("/"), CgroupVersion::V2, "/kubepods/pod1/ctr").unwrap();
        assert_eq!(dirs[0], (PathBuf::from("/sys/fs/cgroup/kubepods/pod1/ctr"), "/kubepods/pod1/ctr".into()));
        assert_eq!(dirs.len(), 4);

        // Docker on v1: gleak's container sees its own memory cgroup only; the
        // target's mount (through /proc/PID/root) shows the target's.
        let gleak_v1 =
            parse_mountinfo("35 31 0:32 /docker/gleak /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n").unwrap();
        let target_v1 =
            parse_mountinfo("35 31 0:32 /docker/svc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n").unwrap();
        let own = dirs_in_view(&gleak_v1, Path::new("/"), CgroupVersion::V1, "/docker/svc").unwrap_err();
        assert!(own.contains("not under"), "{own}");
        let root = Path::new("/proc/77/root");
        let dirs = dirs_in_view(&target_v1, root, CgroupVersion::V1, "/docker/svc").unwrap();
        assert_eq!(dirs, [(PathBuf::from("/proc/77/root/sys/fs/cgroup/memory"), "/docker/svc".to_string())]);

        // v2 with cgroup namespaces: the target's path is relative to gleak's
        // namespace; its own mount shows its namespace's root, its container's.
        let target_v2 = parse_mountinfo("50 40 0:38 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n").unwrap();
        let path = "/../../kubepods-pod2/ctr";
        assert!(dirs_in_view(&v2_host, Path::new("/"), CgroupVersion::V2, path).unwrap_err().contains("relative"));
        assert!(dirs_in_view(&target_v2, root, CgroupVersion::V2, path).is_err());
        let dirs = namespace_root_dir(&target_v2, root, CgroupVersion::V2, path).unwrap();
        assert_eq!(dirs, [(PathBuf::from("/proc/77/root/sys/fs/cgroup"), path.to_string())]);
        // Not a namespace root: nothing to guess.
        assert!(namespace_root_dir(&target_v2, root, CgroupVersion::V2, "/kubepods/x").is_err());
        assert!(namespace_root_dir(&target_v1, root, CgroupVersion::V2, path).unwrap_err().contains("no V2"));
    }

    #[test]
    fn limits_v2_and_v1() {
        assert_eq!(parse_limit(CgroupVersion::V2, "max\n").unwrap(), None);
        assert_eq!(parse_limit(CgroupVersion::V2, "100663296\n").unwrap(), Some(96 << 20));
        assert_eq!(parse_limit(CgroupVersion::V1, "9223372036854771712\n").unwrap(), None);
        // 64 KiB pages give another "no limit".
        assert_eq!(parse_limit(CgroupVersion::V1, "9223372036854710272\n").unwrap(), None);
        assert_eq!(parse_limit(CgroupVersion::V1, "536870912\n").unwrap(), Some(512 << 20));
        for bad in ["", "\n", "max\n", "-1\n", "12 34\n", "0x100\n", "99999999999999999999999\n", "1e9\n"] {
            assert!(parse_limit(CgroupVersion::V1, bad).is_err(), "{bad:?}");
        }
        assert!(parse_limit(CgroupVersion::V2, "maximum\n").is_err());
        assert_eq!(parse_number("0\n"), Ok(0));
    }

    #[test]
    fn the_binding_level_leaves_the_least_room() {
        let level = |cgroup: &str, limit_mib: u64, usage_mib: u64| CgroupLimit {
            version: CgroupVersion::V2,
            cgroup: cgroup.into(),
            limit_bytes: limit_mib << 20,
            usage_bytes: usage_mib << 20,
        };
        // The pod's limit is larger, but its other containers use most of it.
        let leaf = level("/pod/ctr", 512, 100);
        let pod = level("/pod", 1024, 900);
        assert_eq!(binding_level(vec![leaf.clone(), pod.clone()]), Some(pod));
        let roomy_pod = level("/pod", 1024, 200);
        assert_eq!(binding_level(vec![leaf.clone(), roomy_pod]), Some(leaf.clone()));
        // A tie: the nearest.
        assert_eq!(binding_level(vec![leaf.clone(), level("/pod", 612, 200)]), Some(leaf));
        assert_eq!(binding_level(Vec::new()), None);
    }

    #[test]
    fn status_and_meminfo_fields() {
        let status = "Name:\tserver\nVmPeak:\t  900 kB\nVmRSS:\t   40960 kB\nThreads:\t7\n";
        assert_eq!(parse_kb_field(status, "VmRSS"), Ok(40 << 20));
        assert_eq!(parse_kb_field("MemTotal:       24684544 kB\nMemFree: 1 kB\n", "MemTotal"), Ok(24684544 * 1024));
        assert!(parse_kb_field(status, "VmSwap").unwrap_err().contains("no VmSwap"));
        assert!(parse_kb_field("VmRSS:\t12 MB\n", "VmRSS").is_err());
        assert!(parse_kb_field("VmRSS:\t-5 kB\n", "VmRSS").is_err());
        assert!(parse_kb_field("VmRSS:\t18446744073709551615 kB\n", "VmRSS").unwrap_err().contains("range"));
    }

    /// This process, read for real: a resident set, the host's memory, and a
    /// cgroup answer that is either a limit with usage or none.
    #[test]
    fn this_process() {
        let rss = resident_bytes(std::process::id()).unwrap();
        let host = host_memory_bytes().unwrap();
        assert!(rss > 0 && rss < host, "RSS {rss}, host {host}");
        match cgroup_limit(std::process::id()) {
            Ok(Some(limit)) => assert!(limit.limit_bytes > 0 && limit.usage_bytes > 0, "{limit:?}"),
            Ok(None) => {}
            // A sandbox listing a memory cgroup it does not mount: said, not a panic.
            Err(e) => assert!(e.contains("memory cgroup hierarchy mounted"), "{e}"),
        }
    }

    #[test]
    fn gomemlimit_as_the_runtime_holds_it() {
        use crate::process::memory::RecordedMemory;
        let mut mem = RecordedMemory::default();
        mem.insert(0x1000, &(64i64 << 20).to_le_bytes());
        mem.insert(0x2000, &i64::MAX.to_le_bytes());
        mem.insert(0x3000, &(-1i64).to_le_bytes());
        assert_eq!(go_memory_limit(&mem, 0x1000), Ok(Some(64 << 20)));
        assert_eq!(go_memory_limit(&mem, 0x2000), Ok(None), "math.MaxInt64: no limit");
        assert!(go_memory_limit(&mem, 0x3000).unwrap_err().contains("not a limit"));
        assert!(go_memory_limit(&mem, 0x4000).is_err(), "unreadable");
    }

    #[test]
    fn bounded_reads() {
        let dir = std::env::temp_dir().join(format!("gleak-memory-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("memory.max");
        std::fs::write(&file, "1".repeat(100)).unwrap();
        assert!(read_bounded(&file, MAX_NUMBER_FILE).unwrap_err().contains("longer than"));
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(read_bounded(&file, MAX_NUMBER_FILE).unwrap_err().contains("UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
