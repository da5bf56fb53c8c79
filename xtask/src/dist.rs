//! `cargo xtask dist`: release artifacts under `target/dist/`, one fully static
//! gleak per target (what a production host, a container image or a test VM
//! needs: one file, no shared libraries) and `SHA256SUMS` beside them. The arm64
//! gleak is cross-built here (`crate::cross`) and run under `qemu-aarch64-static`.

use std::{
    fmt,
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use object::{
    elf::{FileHeader64, DT_NEEDED, EM_AARCH64, EM_BPF, EM_X86_64, ET_DYN, PT_INTERP},
    read::elf::{Dyn, FileHeader, ProgramHeader},
    Endianness,
};
use sha2::{Digest, Sha256};

use crate::{bootstrap, cargo, cross::CrossTarget, run, step, target_dir};

/// One platform gleak is released for.
pub struct DistTarget {
    /// Rust target triple: an explicit `--target` keeps `+crt-static` away from
    /// build scripts and proc-macros, which must stay dynamic host programs.
    pub triple: &'static str,
    /// File name of the artifact under `target/dist/`.
    pub artifact: &'static str,
    /// The ELF machine the artifact must be built for.
    pub machine: u16,
    /// How to build it from this x86-64 host; `None`: the host's own platform.
    pub cross: Option<&'static CrossTarget>,
}

/// The targets `cargo xtask dist` builds, in this order.
pub const TARGETS: &[DistTarget] = &[X86_64, AARCH64];

/// The host's own platform: what `cargo xtask vmtest` boots.
pub const X86_64: DistTarget =
    DistTarget { triple: "x86_64-unknown-linux-gnu", artifact: "gleak-x86_64-linux", machine: EM_X86_64, cross: None };

/// linux/arm64 (Graviton, Ampere, Cobalt nodes), cross-built with Debian's compiler.
pub const AARCH64: DistTarget = DistTarget {
    triple: "aarch64-unknown-linux-gnu",
    artifact: "gleak-aarch64-linux",
    machine: EM_AARCH64,
    cross: Some(&crate::cross::AARCH64),
};

pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// Builds every target's artifact and writes `SHA256SUMS`.
pub fn run_dist() -> Result<()> {
    // The eBPF object is built by gleak-userspace's build script: without the
    // toolchain the binary would build, but without its probes.
    bootstrap(&["--no-go"])?;
    let mut sums = String::new();
    for target in TARGETS {
        let artifact = build(target)?;
        let name = artifact.file_name().unwrap().to_string_lossy();
        sums.push_str(&format!("{}  {name}\n", sha256_file(&artifact)?));
    }
    let sums_path = dist_dir().join("SHA256SUMS");
    fs::write(&sums_path, sums).with_context(|| format!("writing {}", sums_path.display()))?;
    step(&format!("wrote {}", sums_path.display()));
    Ok(())
}

/// Builds the static gleak for `target`, checks it (machine, static, probes, that it
/// runs) and copies it to `target/dist/`; returns its path.
/// The caller has run scripts/bootstrap.sh (the eBPF toolchain, the cross toolchain).
pub fn build(target: &DistTarget) -> Result<PathBuf> {
    step(&format!("building a static gleak for {} (release, +crt-static)", target.triple));
    let started = std::time::Instant::now();
    let mut command = cargo();
    command.args(["build", "--release", "-p", "gleak-userspace", "--bin", "gleak", "--target", target.triple]);
    // RUSTFLAGS applies to the --target build only, not to build scripts; the
    // nested eBPF build of build.rs clears it and sets its own flags (its
    // bpf_target_arch follows the target).
    const STATIC: &str = "-C target-feature=+crt-static";
    match target.cross {
        Some(cross) => cross.configure(&mut command, STATIC)?,
        None => {
            command.env("RUSTFLAGS", STATIC).env_remove("CARGO_ENCODED_RUSTFLAGS");
        }
    }
    run(&mut command)?;
    step(&format!("built for {} in {:.0}s", target.triple, started.elapsed().as_secs_f64()));
    let built = target_dir().join(target.triple).join("release/gleak");
    let linkage = check_artifact(&built, target)?;
    check_runs(&built, target)?;
    let dest = dist_dir().join(target.artifact);
    fs::create_dir_all(dist_dir())?;
    // Copy beside, then rename: a VM test or a reader never sees half a file.
    let tmp = dest.with_extension("tmp");
    fs::copy(&built, &tmp).with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    fs::rename(&tmp, &dest)?;
    step(&format!("{} ({linkage}, {:.1} MiB)", dest.display(), fs::metadata(&dest)?.len() as f64 / 1048576.0));
    Ok(dest)
}

/// A release artifact must be for its target's machine, run anywhere (static)
/// and carry its probes.
fn check_artifact(path: &Path, target: &DistTarget) -> Result<Linkage> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let found = machine(&data).with_context(|| format!("{}: not a 64-bit ELF", path.display()))?;
    if found != target.machine {
        bail!(
            "{} is for ELF machine {} ({}), not {} ({}) as {} needs",
            path.display(),
            found,
            machine_name(found),
            target.machine,
            machine_name(target.machine),
            target.triple
        );
    }
    let linkage = linkage(path)?;
    if let Linkage::Dynamic { needed } = linkage {
        bail!(
            "{} is dynamically linked ({needed} shared libraries, see `ldd {}`): the static build did not take",
            path.display(),
            path.display()
        );
    }
    if !embeds_bpf_object(&data) {
        bail!(
            "{} holds no eBPF object: it was built without its probes (no eBPF toolchain). \
             Run scripts/bootstrap.sh, then `cargo xtask dist` again",
            path.display()
        );
    }
    Ok(linkage)
}

/// The artifact starts and answers `--version` (its name and the workspace's
/// version) and `--help` (its subcommands): on this host, or under the target's
/// user-mode emulator (no kernel features needed).
fn check_runs(path: &Path, target: &DistTarget) -> Result<()> {
    let version = format!("gleak {}", env!("CARGO_PKG_VERSION"));
    let checks: [(&str, &[&str]); 2] =
        [("--version", &[version.as_str()]), ("--help", &["\n  attach ", "\n  run ", "\n  audit "])];
    for (flag, wanted) in checks {
        let mut command = match target.cross {
            Some(cross) => {
                let mut c = Command::new(cross.emulator);
                c.arg(path);
                c
            }
            None => Command::new(path),
        };
        command.arg(flag);
        let out = command.output().with_context(|| {
            format!("running {command:?} (qemu-user-static runs foreign binaries: run scripts/bootstrap.sh --no-go)")
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || wanted.iter().any(|w| !stdout.contains(w)) {
            bail!(
                "{command:?} ({}) printed no {wanted:?}: stdout {:?}, stderr {:?}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    step(&format!(
        "{} runs{}: --version and --help answer",
        path.display(),
        target.cross.map(|c| format!(" under {}", c.emulator)).unwrap_or_default()
    ));
    Ok(())
}

/// The ELF machine (`e_machine`) of a 64-bit ELF.
fn machine(data: &[u8]) -> Result<u16> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    Ok(header.e_machine(header.endian()?))
}

fn machine_name(machine: u16) -> &'static str {
    match machine {
        EM_X86_64 => "x86-64",
        EM_AARCH64 => "AArch64",
        EM_BPF => "BPF",
        _ => "another",
    }
}

/// How an ELF executable gets its libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    Static,
    StaticPie,
    Dynamic { needed: usize },
}

impl fmt::Display for Linkage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Linkage::Static => f.write_str("statically linked"),
            Linkage::StaticPie => f.write_str("static-pie linked"),
            Linkage::Dynamic { needed } => write!(f, "dynamically linked, {needed} libraries"),
        }
    }
}

/// Reads the linkage from the ELF headers: an interpreter (`PT_INTERP`) or a
/// `DT_NEEDED` entry means shared libraries are loaded at run time.
pub fn linkage(path: &Path) -> Result<Linkage> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let data = data.as_slice();
    let header =
        FileHeader64::<Endianness>::parse(data).with_context(|| format!("{}: not a 64-bit ELF", path.display()))?;
    let endian = header.endian()?;
    let segments = header.program_headers(endian, data)?;
    let mut needed = 0;
    for segment in segments {
        if let Some(entries) = segment.dynamic(endian, data)? {
            needed += entries.iter().filter(|d| d.d_tag(endian) == u64::from(DT_NEEDED)).count();
        }
    }
    let interpreted = segments.iter().any(|s| s.p_type(endian) == PT_INTERP);
    Ok(match (interpreted || needed > 0, header.e_type(endian) == ET_DYN) {
        (true, _) => Linkage::Dynamic { needed },
        (false, true) => Linkage::StaticPie,
        (false, false) => Linkage::Static,
    })
}

/// Whether an ELF header for the BPF machine (the probes' object, embedded by
/// `include_bytes!`) appears in `binary`.
fn embeds_bpf_object(binary: &[u8]) -> bool {
    const ELF64_LE: &[u8] = b"\x7fELF\x02\x01\x01";
    const E_MACHINE_OFFSET: usize = 18;
    binary.windows(ELF64_LE.len()).enumerate().skip(1).any(|(at, w)| {
        w == ELF64_LE && binary.get(at + E_MACHINE_OFFSET..at + E_MACHINE_OFFSET + 2) == Some(&EM_BPF.to_le_bytes()[..])
    })
}

/// Lowercase hex SHA-256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_embedded_bpf_object() {
        let mut object = b"\x7fELF\x02\x01\x01".to_vec();
        object.resize(18, 0);
        object.extend_from_slice(&EM_BPF.to_le_bytes());
        let mut binary = vec![0u8; 100];
        assert!(!embeds_bpf_object(&binary));
        binary.extend_from_slice(&object);
        assert!(embeds_bpf_object(&binary));
        // The host binary's own header (offset 0) does not count.
        assert!(!embeds_bpf_object(&object));
    }

    #[test]
    fn reads_the_elf_machine() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(machine(&me).unwrap(), if cfg!(target_arch = "x86_64") { EM_X86_64 } else { EM_AARCH64 });
        let mut header = me[..64].to_vec();
        header[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(machine(&header).unwrap(), EM_AARCH64);
        assert!(machine(b"\x7fELF").is_err());
        assert!(TARGETS.iter().any(|t| t.machine == EM_AARCH64 && t.artifact == "gleak-aarch64-linux"));
    }

    #[test]
    fn the_running_test_binary_is_dynamic() {
        let me = std::env::current_exe().unwrap();
        assert!(matches!(linkage(&me).unwrap(), Linkage::Dynamic { .. }));
    }
}
