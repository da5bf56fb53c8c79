//! QEMU for the matrix: the tools (installed with apt when missing), the
//! accelerator (KVM when it really boots a guest, TCG otherwise) and one
//! running VM whose second serial port the host reads.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{
    arch::{GuestArch, GuestPackage},
    kernels::Archive,
};
use crate::{
    debian::{compare_debian_versions, fetch_package},
    dist::{linkage, Linkage},
    step, KillOnDrop,
};

/// The host tools a VM run needs.
pub struct Tools {
    pub arch: GuestArch,
    pub qemu: PathBuf,
    /// A statically linked busybox of the guest's architecture: its only userland.
    pub busybox: PathBuf,
}

/// Finds QEMU for `arch` and a static busybox, installing QEMU's package and
/// `busybox-static` with apt when either is missing; a foreign architecture's
/// busybox comes from Debian's archive instead (apt here installs the host's).
pub fn ensure_tools(arch: GuestArch, archive: &Archive) -> Result<Tools> {
    let (qemu_name, qemu_package) = arch.qemu();
    let foreign_busybox = arch.foreign_busybox();
    let mut missing = Vec::new();
    if find_on_path(qemu_name).is_none() {
        missing.push(qemu_package);
    }
    if foreign_busybox.is_none() && static_busybox().is_none() {
        missing.push("busybox-static");
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let qemu = find_on_path(qemu_name)
        .with_context(|| format!("{qemu_name} is still missing after installing {qemu_package}"))?;
    let busybox = match foreign_busybox {
        Some(p) => {
            let busybox = package_file(archive, arch, &p)?;
            if !matches!(linkage(&busybox)?, Linkage::Static | Linkage::StaticPie) {
                bail!("{} of Debian's {} is not statically linked", p.path, p.name);
            }
            busybox
        }
        None => static_busybox().context("no statically linked busybox after installing busybox-static")?,
    };
    Ok(Tools { arch, qemu, busybox })
}

/// The file `wanted.path` of the newest `wanted.name` for `arch` in Debian's
/// archive (checked along its chain of trust), downloaded once and cached under
/// `$GLEAK_CACHE/vm/packages/`.
fn package_file(archive: &Archive, arch: GuestArch, wanted: &GuestPackage) -> Result<PathBuf> {
    let (mirror, packages) = archive.index(wanted.suite, arch.debian(), |name| name == wanted.name)?;
    let package = packages
        .iter()
        .max_by(|a, b| compare_debian_versions(&a.version, &b.version))
        .with_context(|| format!("no package {} for {} in Debian's {}", wanted.name, arch.debian(), wanted.suite))?;
    let dir =
        crate::cache_dir().join("vm/packages").join(format!("{}_{}_{}", package.name, package.version, arch.debian()));
    let file_name = Path::new(wanted.path).file_name().context("a package file's path names a file")?;
    let cached = dir.join(file_name);
    if cached.is_file() {
        return Ok(cached);
    }
    let unpacked = fetch_package(&mirror, package, &dir)?;
    let found = unpacked.join(wanted.path.trim_start_matches('/'));
    if !found.is_file() {
        bail!("{} {} holds no {}", package.name, package.version, wanted.path);
    }
    fs::rename(&found, &cached)?;
    fs::remove_dir_all(&unpacked)?;
    Ok(cached)
}

/// The host file at `path`, installing `package` with apt when it is missing.
pub fn ensure_host_file(path: &Path, package: &str) -> Result<PathBuf> {
    if !path.is_file() {
        apt_install(&[package])?;
    }
    match path.is_file() {
        true => Ok(path.to_path_buf()),
        false => bail!("{} is still missing after installing {package}", path.display()),
    }
}

fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| matches!(linkage(p), Ok(Linkage::Static | Linkage::StaticPie)))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if !nix::unistd::geteuid().is_root() {
        bail!("vmtest needs {list}: install them (`sudo apt-get install {list}`) or run as root");
    }
    step(&format!("installing {list} with apt-get (QEMU boots the kernels, busybox is the guest's userland)"));
    // Short network timeouts: no network must fail, not hang.
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-q", "-o", "Acquire::http::Timeout=30", "-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let install: Vec<&str> =
        ["install", "-y", "--no-install-recommends"].iter().copied().chain(packages.iter().copied()).collect();
    if apt(&install) {
        return Ok(());
    }
    step("apt-get install failed: apt-get update, then once more");
    if apt(&["update"]) && apt(&install) {
        return Ok(());
    }
    bail!("could not install {list} with apt-get (its output is above): install them by hand, then run vmtest again")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }
}

/// Why `/dev/kvm` cannot be used, if it cannot even be opened.
pub fn kvm_device_problem() -> Option<String> {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm: {e}")),
    }
}

/// One VM: QEMU with the console and the runner's results port in files (one
/// file when the machine has a single serial port for both).
pub struct RunningVm {
    child: KillOnDrop,
    results_path: PathBuf,
    results: Option<File>,
    read: u64,
    console: PathBuf,
    qemu_log: PathBuf,
}

impl RunningVm {
    pub fn start(tools: &Tools, kernel: &Path, initrd: &Path, accel: Accel, logs: &Path) -> Result<RunningVm> {
        let (qemu, arch) = (&tools.qemu, tools.arch);
        fs::create_dir_all(logs)?;
        let results_path = logs.join("results.log");
        let console = match arch.separate_results_port() {
            true => logs.join("console.log"),
            false => results_path.clone(),
        };
        let qemu_log = logs.join("qemu.log");
        for path in [&console, &results_path] {
            // QEMU's option syntax splits at commas.
            if path.to_string_lossy().contains(',') {
                bail!("{}: QEMU cannot take a path with a comma; set GLEAK_CACHE elsewhere", path.display());
            }
            let _ = fs::remove_file(path);
        }
        let mut cmd = Command::new(qemu);
        match accel {
            Accel::Kvm => cmd.args(arch.kvm_args()),
            Accel::Tcg => cmd.args(arch.tcg_args()),
        };
        cmd.args(["-m", "2048", "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", arch.kernel_command_line()])
            .arg("-serial")
            .arg(format!("file:{}", console.display()));
        if arch.separate_results_port() {
            cmd.arg("-serial").arg(format!("file:{}", results_path.display()));
        }
        cmd.stdin(Stdio::null());
        let log = File::create(&qemu_log)?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {}", qemu.display()))?;
        Ok(RunningVm { child: KillOnDrop(child), results_path, results: None, read: 0, console, qemu_log })
    }

    /// What the guest wrote on its results port since the last call.
    pub fn read_results(&mut self) -> Result<Vec<u8>> {
        if self.results.is_none() {
            self.results = File::open(&self.results_path).ok();
        }
        let mut new = Vec::new();
        if let Some(file) = &mut self.results {
            file.seek(SeekFrom::Start(self.read))?;
            file.read_to_end(&mut new)?;
            self.read += new.len() as u64;
        }
        Ok(new)
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.0.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the guest's console and of QEMU's own output.
    pub fn tail(&self, lines: usize) -> String {
        let tail_of = |path: &Path| {
            let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            let all: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!("{}\n{}", tail_of(&self.console), tail_of(&self.qemu_log)).trim().to_string()
    }

    /// One line on why a VM ended: the kernel's oops or panic, else QEMU's last
    /// error, else the console's last line.
    pub fn last_words(&self) -> String {
        let read = |path: &Path| fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let console = read(&self.console);
        let trouble: Vec<&str> = console
            .lines()
            .map(str::trim)
            .filter(|l| {
                ["BUG:", "Oops:", "RIP:", "Kernel panic", "Unable to handle kernel"].iter().any(|w| l.contains(w))
            })
            .take(3)
            .collect();
        if !trouble.is_empty() {
            return trouble.join(" | ");
        }
        let last_line = |text: &str| text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string);
        last_line(&read(&self.qemu_log)).or_else(|| last_line(&console)).unwrap_or_else(|| "no output at all".into())
    }

    /// QEMU stopped the guest on a KVM failure (it then waits, paused, forever).
    pub fn kvm_failed(&self) -> bool {
        fs::read(&self.qemu_log).is_ok_and(|b| String::from_utf8_lossy(&b).contains("KVM internal error"))
    }
}
