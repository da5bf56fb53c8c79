//! Cross-building gleak for another architecture on this one, with Debian's
//! compiler only: the host's `rustc-web` (`/usr/bin/rustc`) accepts the target's
//! precompiled standard library from Debian's `libstd-rust-web-dev` of exactly
//! the same version (any other version is refused by rustc, E0514), unpacked
//! under `$GLEAK_CACHE/cross/` and passed as `--sysroot`; the target's gcc links.
//!
//! scripts/bootstrap.sh installs the apt packages (rustc-web, the cross gcc and
//! C library, qemu-user-static, rust-web-clippy); the standard library is fetched
//! here, from the Debian archive's signed index for the target's architecture
//! (`crate::debian`), because apt here is set up for the host's architecture only.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{cache_dir, debian, step};

/// Debian's compiler; cargo's own `rustc` may be another (rustup's).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's clippy for that compiler (`rust-web-clippy`), used as cargo's
/// workspace wrapper the way `cargo clippy` does.
pub const DEBIAN_CLIPPY_DRIVER: &str = "/usr/bin/clippy-driver";
/// The Debian package of the compiler and of the target's standard library.
const RUSTC_PACKAGE: &str = "rustc-web";
const STD_PACKAGE: &str = "libstd-rust-web-dev";

/// What building for a foreign architecture takes.
pub struct CrossTarget {
    /// Rust's target triple.
    pub triple: &'static str,
    /// Debian's name of the architecture (the index the standard library is in).
    pub debian_arch: &'static str,
    /// The C compiler that links for it (Debian's `gcc-<triple>` package).
    pub linker: &'static str,
    /// The user-mode emulator that runs its programs here.
    pub emulator: &'static str,
}

pub const AARCH64: CrossTarget = CrossTarget {
    triple: "aarch64-unknown-linux-gnu",
    debian_arch: "arm64",
    linker: "aarch64-linux-gnu-gcc",
    emulator: "qemu-aarch64-static",
};

impl CrossTarget {
    /// Cargo's environment variable naming the target's linker.
    fn linker_variable(&self) -> String {
        format!("CARGO_TARGET_{}_LINKER", self.triple.to_uppercase().replace('-', "_"))
    }

    /// Sets up `cargo` (a build, check or clippy with `--target <triple>`) to compile
    /// with Debian's rustc against the target's standard library and link with the
    /// target's gcc, adding `extra_rustflags`. Through the environment, not a
    /// committed `.cargo/config`, so that plain host builds stay as they are.
    /// `RUSTFLAGS` applies to the `--target` build only, not to build scripts and
    /// proc-macros (host programs, built with the host's std).
    pub fn configure(&self, cargo: &mut Command, extra_rustflags: &str) -> Result<()> {
        for tool in [self.linker, DEBIAN_RUSTC] {
            if !on_path(tool) {
                bail!("{tool} is missing: run `sudo scripts/bootstrap.sh --no-go` (the arm64 cross toolchain)");
            }
        }
        let sysroot = self.std_sysroot()?;
        cargo
            .env("RUSTC", DEBIAN_RUSTC)
            .env(self.linker_variable(), self.linker)
            .env("RUSTFLAGS", format!("--sysroot={} {extra_rustflags}", sysroot.display()).trim_end())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTC_WRAPPER");
        Ok(())
    }

    /// The unpacked `libstd-rust-web-dev` for this architecture of exactly the
    /// host `rustc-web`'s version, fetched once (its `usr/`, the `--sysroot`).
    pub fn std_sysroot(&self) -> Result<PathBuf> {
        let version = installed_version(RUSTC_PACKAGE)?
            .ok_or_else(|| anyhow!("{RUSTC_PACKAGE} is not installed: run `sudo scripts/bootstrap.sh --no-go`"))?;
        let dir = cache_dir().join("cross").join(self.debian_arch).join(format!("{STD_PACKAGE}_{version}"));
        let sysroot = dir.join("usr");
        if self.holds_std(&sysroot) {
            return Ok(sysroot);
        }
        step(&format!(
            "fetching Debian's {STD_PACKAGE} {version} for {} (the standard library the {} build links)",
            self.debian_arch, self.triple
        ));
        let archive = debian::Archive::from_apt_sources(&cache_dir(), false)?;
        let suites = host_suites()?;
        let mut seen = Vec::new();
        for suite in &suites {
            let (mirror, packages) = match archive.index(suite, self.debian_arch, |name| name == STD_PACKAGE) {
                Ok(found) => found,
                Err(e) => {
                    seen.push(format!("{suite}: {e:#}"));
                    continue;
                }
            };
            let Some(package) = packages.iter().find(|p| p.version == version) else {
                let newest = debian::newest(&packages, STD_PACKAGE).map_or("none", |p| p.version.as_str());
                seen.push(format!("{suite}: newest {newest}"));
                continue;
            };
            let fetch_dir = PathBuf::from(format!("{}.fetching", dir.display()));
            let unpacked = debian::fetch_package(&mirror, package, &fetch_dir)?;
            let _ = fs::remove_dir_all(&dir);
            fs::rename(&unpacked, &dir)
                .with_context(|| format!("moving {} to {}", unpacked.display(), dir.display()))?;
            fs::remove_dir_all(&fetch_dir)?;
            if !self.holds_std(&sysroot) {
                bail!("{STD_PACKAGE} {version} ({}) holds no standard library for {}", self.debian_arch, self.triple);
            }
            step(&format!("{STD_PACKAGE} {version} ({}) unpacked in {}", self.debian_arch, dir.display()));
            return Ok(sysroot);
        }
        bail!(
            "no {STD_PACKAGE} {version} (the version of the host's {RUSTC_PACKAGE}, which rustc requires exactly) \
             in Debian's {} index of {} ({}); if {RUSTC_PACKAGE} was updated, the archive may not have the other \
             architecture's build yet, or {RUSTC_PACKAGE} is older than the archive's: `apt-get install {RUSTC_PACKAGE}`",
            self.debian_arch,
            suites.join(", "),
            seen.join("; ")
        )
    }

    fn holds_std(&self, sysroot: &Path) -> bool {
        fs::read_dir(sysroot.join("lib/rustlib").join(self.triple).join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    }
}

/// The installed version of a Debian package, if installed.
fn installed_version(package: &str) -> Result<Option<String>> {
    let out = Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status} ${Version}", package])
        .output()
        .context("running dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.strip_prefix("installed ").map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
}

/// The suites the host's packages come from, most recent updates first:
/// `<codename>-security`, `<codename>-updates`, `<codename>`.
fn host_suites() -> Result<Vec<String>> {
    let os_release = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let codename = codename(&os_release).ok_or_else(|| anyhow!("/etc/os-release names no VERSION_CODENAME"))?;
    Ok(vec![format!("{codename}-security"), format!("{codename}-updates"), codename])
}

fn codename(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linker_variable_and_codename() {
        assert_eq!(AARCH64.linker_variable(), "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER");
        assert_eq!(codename("NAME=\"Debian\"\nVERSION_CODENAME=bookworm\n").as_deref(), Some("bookworm"));
        assert_eq!(codename("VERSION_CODENAME=\"trixie\"\n").as_deref(), Some("trixie"));
        assert_eq!(codename("VERSION_CODENAME=../x\n"), None);
        assert_eq!(codename("ID=debian\n"), None);
    }
}
