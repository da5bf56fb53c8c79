//! The kernels of the matrix: Debian's own packages, found by name in the
//! archive's `Packages.xz` indexes of several suites (read and checked by
//! `crate::debian`), and cached under `$GLEAK_CACHE/vm/`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};

pub use crate::debian::Archive;
use crate::debian::{compare_debian_versions, fetch_package, PackageEntry};

use super::arch::GuestArch;

/// One row of the matrix: which kernel, and what it stands for in fleets.
pub struct KernelSpec {
    /// What `--kernels` selects it by, and the table's first column.
    pub key: &'static str,
    pub stands_for: &'static str,
    /// The Debian suite whose index lists it.
    pub suite: &'static str,
    /// Binary package names `<prefix><version…><flavour><Debian's arch>`; the newest version wins.
    pub name_prefix: &'static str,
    pub flavour: &'static str,
    /// Where arm64's package comes from when not from `suite`.
    pub arm64_suite: Option<&'static str>,
}

impl KernelSpec {
    /// The suite whose index names the kernel for `arch`.
    pub fn suite_for(&self, arch: GuestArch) -> &'static str {
        match (arch, self.arm64_suite) {
            (GuestArch::Aarch64, Some(suite)) => suite,
            _ => self.suite,
        }
    }

    /// The end of the row's package names for `arch`: `-cloud-arm64`.
    fn name_suffix(&self, arch: GuestArch) -> String {
        format!("{}{}", self.flavour, arch.debian())
    }
}

/// Cloud flavours: they boot from an initramfs without modules, and all have BTF.
pub const MATRIX: &[KernelSpec] = &[
    KernelSpec {
        key: "5.10",
        stands_for: "Amazon Linux 2, Debian 11, many EKS/GKE node images",
        suite: "bullseye-security",
        name_prefix: "linux-image-5.10.0-",
        flavour: "-cloud-",
        // bullseye-security's index lists signed arm64 kernels its pool does not
        // have (404 for every 5.10.0-4x, 2026-12-07): bullseye's last point release.
        arm64_suite: Some("bullseye"),
    },
    KernelSpec {
        key: "6.1",
        stands_for: "Debian 12, Amazon Linux 2023",
        suite: "bookworm-security",
        name_prefix: "linux-image-6.1.0-",
        flavour: "-cloud-",
        arm64_suite: None,
    },
    KernelSpec {
        key: "6.12",
        stands_for: "Debian 13, RHEL 10 line",
        suite: "trixie-security",
        name_prefix: "linux-image-6.12.",
        flavour: "-cloud-",
        arm64_suite: None,
    },
    KernelSpec {
        key: "newest",
        stands_for: "the newest kernel Debian ships",
        suite: "trixie-backports",
        name_prefix: "linux-image-",
        flavour: "-cloud-",
        arm64_suite: None,
    },
];

/// A kernel package chosen for a row.
#[derive(Clone, Debug)]
pub struct KernelPackage {
    /// The `linux-image-*` package the row matched.
    pub image: String,
    pub version: String,
    /// The package holding `/boot/vmlinuz-*`: the image itself, or the
    /// `linux-binary-*` it depends on (newer packaging, e.g. trixie-backports).
    vmlinuz_in: PackageEntry,
    mirror: String,
}

impl KernelPackage {
    /// The upstream kernel version: `7.3.4` of `7.3.4-1~bpo13+1`.
    pub fn upstream(&self) -> &str {
        upstream_version(&self.version)
    }

    fn cache_dir(&self, cache: &Path) -> PathBuf {
        cache.join("kernels").join(format!("{}_{}", self.vmlinuz_in.name, self.version))
    }

    pub fn is_cached(&self, cache: &Path) -> bool {
        self.cache_dir(cache).join("vmlinuz").is_file()
    }

    /// Downloads the package (once), checks its SHA-256 against the index and
    /// extracts its vmlinuz; returns the vmlinuz's path.
    pub fn fetch_vmlinuz(&self, cache: &Path) -> Result<PathBuf> {
        let dir = self.cache_dir(cache);
        let vmlinuz = dir.join("vmlinuz");
        if vmlinuz.is_file() {
            return Ok(vmlinuz);
        }
        let pkg = &self.vmlinuz_in;
        let unpacked =
            fetch_package(&self.mirror, pkg, &dir).context("run again with --refresh to fetch the index again")?;
        let found = find_vmlinuz(&unpacked, 0).ok_or_else(|| {
            anyhow!("{} {} holds no vmlinuz (looked for vmlinuz and vmlinuz-*)", pkg.name, pkg.version)
        })?;
        fs::rename(found, &vmlinuz)?;
        fs::remove_dir_all(&unpacked)?;
        Ok(vmlinuz)
    }
}

/// The kernel image in an unpacked package: `/boot/vmlinuz-<release>`, or
/// `/usr/lib/modules/<release>/vmlinuz` in the newer `linux-binary-*` packages.
fn find_vmlinuz(dir: &Path, depth: usize) -> Option<PathBuf> {
    const MAX_DEPTH: usize = 5;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let (path, kind) = (entry.path(), entry.file_type().ok()?);
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_file() && (name == "vmlinuz" || name.starts_with("vmlinuz-")) {
            return Some(path);
        }
        if kind.is_dir() && depth < MAX_DEPTH {
            if let Some(found) = find_vmlinuz(&path, depth + 1) {
                return Some(found);
            }
        }
    }
    None
}

impl Archive {
    /// Picks the row's kernel: the newest matching package of its suite.
    pub fn resolve(&self, spec: &KernelSpec, arch: GuestArch) -> Result<KernelPackage> {
        let name_suffix = spec.name_suffix(arch);
        let suite = spec.suite_for(arch);
        let (mirror, packages) = self.index(suite, arch.debian(), |name| {
            name.starts_with("linux-image-") || name.starts_with("linux-binary-")
        })?;
        let matches = |p: &&PackageEntry| {
            p.name.strip_prefix(spec.name_prefix).and_then(|rest| rest.strip_suffix(&name_suffix)).is_some_and(
                // A version, not the `linux-image-cloud-amd64` metapackage.
                |middle| middle.starts_with(|c: char| c.is_ascii_digit()),
            )
        };
        let image =
            packages.iter().filter(matches).max_by(|a, b| compare_debian_versions(&a.version, &b.version)).ok_or_else(
                || {
                    anyhow!(
                    "no package {}*{} in Debian's {} (index from {mirror}): the archive no longer has this kernel; \
                     pick another with --kernels",
                    spec.name_prefix,
                    name_suffix,
                    suite
                )
                },
            )?;
        let binary = binary_dependency(&image.depends)
            .and_then(|name| packages.iter().find(|p| p.name == name && p.version == image.version));
        Ok(KernelPackage {
            image: image.name.clone(),
            version: image.version.clone(),
            vmlinuz_in: binary.unwrap_or(image).clone(),
            mirror,
        })
    }
}

/// The `linux-binary-*` package among a `Depends` field's alternatives.
fn binary_dependency(depends: &str) -> Option<&str> {
    depends.split([',', '|']).filter_map(|d| d.split_whitespace().next()).find(|name| name.starts_with("linux-binary-"))
}

/// `7.3.4` of `1:7.3.4-1~bpo13+1`.
fn upstream_version(version: &str) -> &str {
    let no_epoch = version.split_once(':').map_or(version, |(_, v)| v);
    no_epoch.split('-').next().unwrap_or(no_epoch)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_fields() {
        assert_eq!(upstream_version("1:7.3.4-1~bpo13+1"), "7.3.4");
        let depends = "dracut | initramfs-tools (>= 0.120), linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(binary_dependency(depends), Some("linux-binary-7.3.4+deb13-cloud-amd64"));
        assert_eq!(binary_dependency("initramfs-tools"), None);
    }
}
