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

use crate::{
    dist::{linkage, Linkage},
    step, KillOnDrop,
};

pub const QEMU: &str = "qemu-system-x86_64";

/// The host tools a VM run needs.
pub struct Tools {
    pub qemu: PathBuf,
    /// A statically linked busybox: the guest's only userland.
    pub busybox: PathBuf,
}

/// Finds QEMU and a static busybox, installing `qemu-system-x86` and
/// `busybox-static` with apt when either is missing.
pub fn ensure_tools() -> Result<Tools> {
    let mut missing = Vec::new();
    if find_on_path(QEMU).is_none() {
        missing.push("qemu-system-x86");
    }
    if static_busybox().is_none() {
        missing.push("busybox-static");
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let qemu =
        find_on_path(QEMU).with_context(|| format!("{QEMU} is still missing after installing qemu-system-x86"))?;
    let busybox = static_busybox().context("no statically linked busybox after installing busybox-static")?;
    Ok(Tools { qemu, busybox })
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

/// One VM: QEMU with the console (ttyS0) and the results port (ttyS1) in files.
pub struct RunningVm {
    child: KillOnDrop,
    results_path: PathBuf,
    results: Option<File>,
    read: u64,
    console: PathBuf,
    qemu_log: PathBuf,
}

impl RunningVm {
    pub fn start(qemu: &Path, kernel: &Path, initrd: &Path, accel: Accel, logs: &Path) -> Result<RunningVm> {
        fs::create_dir_all(logs)?;
        let (console, results_path, qemu_log) =
            (logs.join("console.log"), logs.join("results.log"), logs.join("qemu.log"));
        for path in [&console, &results_path] {
            // QEMU's option syntax splits at commas.
            if path.to_string_lossy().contains(',') {
                bail!("{}: QEMU cannot take a path with a comma; set GLEAK_CACHE elsewhere", path.display());
            }
            let _ = fs::remove_file(path);
        }
        let mut cmd = Command::new(qemu);
        match accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            // One host thread for both vCPUs: with a thread per vCPU, the kernel's
            // live code patching (int3 over a jump label) raced and oopsed a 6.12
            // guest in __schedule one run in three; one thread is no slower here.
            Accel::Tcg => cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"]),
        };
        cmd.args(["-m", "2048", "-smp", "2", "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 rdinit=/init panic=-1 quiet"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", results_path.display()))
            .stdin(Stdio::null());
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
            .filter(|l| ["BUG:", "Oops:", "RIP:", "Kernel panic"].iter().any(|w| l.contains(w)))
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
