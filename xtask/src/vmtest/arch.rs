//! The guest's architecture: everything vmtest does differently for it, in
//! one place (Debian's architecture name, QEMU's binary and machine, the
//! serial console, how the guest's busybox is found, the fixtures' `GOARCH`,
//! which gleak artifact goes in, which checks make sense there).

use std::path::Path;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestArch {
    /// The host's own architecture: KVM when it works, TCG otherwise.
    #[value(name = "x86_64")]
    X86_64,
    /// arm64 (Graviton, Ampere, Cobalt), emulated by QEMU's TCG on this x86-64 host.
    #[value(name = "aarch64")]
    Aarch64,
}

/// A Debian package of the guest's architecture and the file vmtest takes from it.
pub struct GuestPackage {
    pub suite: &'static str,
    pub name: &'static str,
    /// The file's path inside the package.
    pub path: &'static str,
}

impl GuestArch {
    pub fn name(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name: the archive's `binary-<arch>` indexes and `-cloud-<arch>` kernels.
    pub fn debian(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "amd64",
            GuestArch::Aarch64 => "arm64",
        }
    }

    /// The Rust target gleak's static artifact is built for (`dist::TARGETS`).
    pub fn rust_triple(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64-unknown-linux-gnu",
            GuestArch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    pub fn goarch(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "amd64",
            GuestArch::Aarch64 => "arm64",
        }
    }

    /// QEMU's system emulator, and the Debian package holding it.
    pub fn qemu(self) -> (&'static str, &'static str) {
        match self {
            GuestArch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            GuestArch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// KVM runs only guests of the host's own architecture.
    pub fn kvm_possible(self) -> bool {
        self == GuestArch::X86_64 && cfg!(target_arch = "x86_64")
    }

    /// QEMU's machine, CPU and vCPU arguments under TCG.
    pub fn tcg_args(self) -> &'static [&'static str] {
        match self {
            // One host thread for both vCPUs: with a thread per vCPU, the kernel's
            // live code patching (int3 over a jump label) raced and oopsed a 6.12
            // guest in __schedule one run in three; one thread is no slower here.
            GuestArch::X86_64 => &["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2"],
            // pauth-impdef: QEMU's own pointer-authentication hash instead of the
            // architected QARMA, whose emulation made boots 9–11 s instead of 2 s.
            // One vCPU: the host's two cores are shared, and TCG runs it faster alone.
            GuestArch::Aarch64 => &["-M", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on", "-smp", "1"],
        }
    }

    /// QEMU's machine, CPU and vCPU arguments under KVM (the host's architecture only).
    pub fn kvm_args(self) -> &'static [&'static str] {
        &["-accel", "kvm", "-cpu", "host", "-smp", "2"]
    }

    /// The kernel's command line. Where the machine has a single serial port
    /// (arm64's `virt`), the runner's frames share it with the console:
    /// `VMTEST_RESULTS` (passed to `/init`'s environment) names it, and the
    /// runner then silences all but the kernel's emergencies.
    pub fn kernel_command_line(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "console=ttyS0 rdinit=/init panic=-1 quiet",
            GuestArch::Aarch64 => "console=ttyAMA0 rdinit=/init panic=-1 quiet VMTEST_RESULTS=ttyAMA0",
        }
    }

    /// Whether the machine has a second serial port for the runner's frames.
    pub fn separate_results_port(self) -> bool {
        self == GuestArch::X86_64
    }

    /// Where the guest's static busybox comes from: the host's own, or Debian's
    /// `busybox-static` of the guest's architecture from the host's suite.
    pub fn foreign_busybox(self) -> Option<GuestPackage> {
        match self {
            GuestArch::X86_64 => None,
            GuestArch::Aarch64 => Some(GuestPackage { suite: "bookworm", name: "busybox-static", path: "bin/busybox" }),
        }
    }

    /// The dynamic loader a Go PIE asks for (`PT_INTERP`; Go's PIEs need no
    /// library, only the loader): its guest path and the host's copy
    /// (Debian's `libc6-<arch>-cross`, there for cross-building gleak).
    pub fn pie_loader(self) -> (&'static str, &'static Path, &'static str) {
        match self {
            GuestArch::X86_64 => ("/lib64/ld-linux-x86-64.so.2", Path::new("/lib64/ld-linux-x86-64.so.2"), "libc6"),
            GuestArch::Aarch64 => (
                "/lib/ld-linux-aarch64.so.1",
                Path::new("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1"),
                "libc6-arm64-cross",
            ),
        }
    }

    /// Kernels of the matrix this architecture boots by default (all when empty).
    pub fn default_kernels(self) -> &'static [&'static str] {
        match self {
            GuestArch::X86_64 => &[],
            // Debian 12's kernel, the one the arm64 recipe was proven on.
            GuestArch::Aarch64 => &["6.1"],
        }
    }

    /// Whether the capability-removal checks run: they need the host's setpriv
    /// and its libraries, which only an x86-64 guest can run.
    pub fn runs_capability_checks(self) -> bool {
        self == GuestArch::X86_64
    }
}
