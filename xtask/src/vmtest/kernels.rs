//! The kernels of the matrix: Debian's own packages, found by name in the
//! archive's `Packages.xz` indexes of several suites (apt's sources here name only
//! the host's suite, so the indexes are fetched directly from the mirrors those
//! sources name), checked along the archive's chain of trust (the signed
//! `InRelease` → the index's SHA-256 → the package's SHA-256), and cached under
//! `$GLEAK_CACHE/vm/`.

use std::{
    cell::RefCell,
    cmp::Ordering,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, bail, Context, Result};

use super::arch::GuestArch;
use crate::{dist::sha256_file, step};

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
}

impl KernelSpec {
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
    },
    KernelSpec {
        key: "6.1",
        stands_for: "Debian 12, Amazon Linux 2023",
        suite: "bookworm-security",
        name_prefix: "linux-image-6.1.0-",
        flavour: "-cloud-",
    },
    KernelSpec {
        key: "6.12",
        stands_for: "Debian 13, RHEL 10 line",
        suite: "trixie-security",
        name_prefix: "linux-image-6.12.",
        flavour: "-cloud-",
    },
    KernelSpec {
        key: "newest",
        stands_for: "the newest kernel Debian ships",
        suite: "trixie-backports",
        name_prefix: "linux-image-",
        flavour: "-cloud-",
    },
];

/// The index of one suite is fetched again after this long.
const INDEX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Bounds on what the archive sends (all far above today's sizes).
const MAX_INRELEASE: u64 = 4 << 20;
const MAX_PACKAGES_XZ: u64 = 64 << 20;
const MAX_PACKAGES: usize = 512 << 20;
const MAX_DEB: u64 = 512 << 20;
/// The archive key apt uses when a source names no `Signed-By` file.
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

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

/// Downloads `package` from `mirror` into `dir`, checks its SHA-256 and size
/// against the signed index and unpacks it; returns the unpacked tree's path.
pub fn fetch_package(mirror: &str, package: &PackageEntry, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let deb = dir.join("package.deb");
    let url = format!("{mirror}/{}", package.filename);
    step(&format!("downloading {} {} ({:.1} MiB)", package.name, package.version, package.size as f64 / 1048576.0));
    download(&url, &deb, package.size)?.require(&url).context("the cached index may be stale (it is kept a day)")?;
    let got = sha256_file(&deb)?;
    if got != package.sha256 || fs::metadata(&deb)?.len() != package.size {
        let _ = fs::remove_file(&deb);
        bail!("{url}: SHA-256 {got} or size differs from the signed index ({}): refusing it", package.sha256);
    }
    let unpacked = dir.join("unpacked");
    let _ = fs::remove_dir_all(&unpacked);
    let out = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).output().context("running dpkg-deb")?;
    if !out.status.success() {
        bail!("dpkg-deb -x {}: {}", deb.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    fs::remove_file(&deb)?;
    Ok(unpacked)
}

fn index_path(arch: &str) -> String {
    format!("main/binary-{arch}/Packages.xz")
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

/// One paragraph of a `Packages` index (the fields used here).
#[derive(Clone, Debug, Default)]
pub struct PackageEntry {
    pub name: String,
    pub version: String,
    /// Path under the mirror's root.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub depends: String,
}

/// Where apt fetches from: the `deb` sources of `/etc/apt`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AptSource {
    uri: String,
    keyring: Option<PathBuf>,
}

/// The Debian archive as apt's sources reach it, with a cache of its indexes.
pub struct Archive {
    sources: Vec<AptSource>,
    cache: PathBuf,
    refresh: bool,
    /// Hosts that could not be reached in this run.
    unreachable: RefCell<Vec<String>>,
}

impl Archive {
    /// Reads apt's sources (`sources.list`, `sources.list.d/*.list` and `*.sources`).
    pub fn from_apt_sources(cache: &Path, refresh: bool) -> Result<Archive> {
        let etc = Path::new("/etc/apt");
        let mut files = vec![etc.join("sources.list")];
        let mut listed: Vec<PathBuf> =
            fs::read_dir(etc.join("sources.list.d")).into_iter().flatten().flatten().map(|e| e.path()).collect();
        listed.sort();
        files.extend(listed);
        let mut sources = Vec::new();
        for file in files {
            let Ok(text) = fs::read_to_string(&file) else { continue };
            let parsed = match file.extension().and_then(|e| e.to_str()) {
                Some("sources") => parse_deb822_sources(&text),
                Some("list") => parse_one_line_sources(&text),
                _ => continue,
            };
            for s in parsed {
                if !sources.contains(&s) {
                    sources.push(s);
                }
            }
        }
        if sources.is_empty() {
            bail!("apt's sources in /etc/apt name no http(s) mirror: vmtest fetches Debian's kernels from it");
        }
        Ok(Archive { sources, cache: cache.to_path_buf(), refresh, unreachable: RefCell::default() })
    }

    /// Picks the row's kernel for `arch`: the newest matching package of its suite.
    pub fn resolve(&self, spec: &KernelSpec, arch: GuestArch) -> Result<KernelPackage> {
        let (mirror, packages) = self.index(spec.suite, arch.debian(), |name| {
            name.starts_with("linux-image-") || name.starts_with("linux-binary-")
        })?;
        let name_suffix = spec.name_suffix(arch);
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
                    spec.suite
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

    /// The packages of `suite`'s main index for `arch` (Debian's name: amd64,
    /// arm64) that `keep` accepts by name, and the mirror the index came from.
    /// The index is cached for a day under `<cache>/debian/<suite>/binary-<arch>/`.
    pub fn index(&self, suite: &str, arch: &str, keep: impl Fn(&str) -> bool) -> Result<(String, Vec<PackageEntry>)> {
        let dir = self.cache.join("debian").join(suite).join(format!("binary-{arch}"));
        let fresh = fs::metadata(dir.join("InRelease"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() < INDEX_MAX_AGE);
        if self.refresh || !fresh || !dir.join("mirror").is_file() {
            if let Err(e) = self.fetch_index(suite, arch, &dir) {
                if !dir.join("mirror").is_file() {
                    return Err(e);
                }
                step(&format!("warning: {e:#}; using the index cached in {}", dir.display()));
            }
        }
        let mirror = fs::read_to_string(dir.join("mirror"))?.trim().to_string();
        let xz = fs::read(dir.join("Packages.xz"))?;
        let text =
            xz_decompress(&xz, MAX_PACKAGES).with_context(|| format!("decompressing {suite}'s {arch} Packages.xz"))?;
        Ok((mirror, parse_packages(&text, keep)))
    }

    /// Fetches `InRelease` (verified with gpgv) and `Packages.xz` (verified against
    /// it) from the first of apt's mirrors that has the suite.
    fn fetch_index(&self, suite: &str, arch: &str, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        let index_path = index_path(arch);
        let index_path = index_path.as_str();
        let mut tried = Vec::new();
        for source in &self.sources {
            let base = source.uri.trim_end_matches('/');
            let url = format!("{base}/dists/{suite}/InRelease");
            let host = base.split('/').nth(2).unwrap_or(base).to_string();
            if self.unreachable.borrow().contains(&host) {
                continue;
            }
            let inrelease = dir.join("InRelease.new");
            match download(&url, &inrelease, MAX_INRELEASE)? {
                Fetched::Done => {}
                Fetched::NotFound => {
                    tried.push(format!("{url}: 404"));
                    continue;
                }
                Fetched::Unreachable(why) => {
                    // Every suite would wait for it again: once is enough.
                    tried.push(format!("{url}: {why}"));
                    self.unreachable.borrow_mut().push(host);
                    continue;
                }
            }
            let keyring = source.keyring.clone().unwrap_or_else(|| DEFAULT_KEYRING.into());
            let signed = verify_signature(&inrelease, &keyring).with_context(|| url.clone())?;
            let (sha256, size) = release_checksum(&signed, index_path)
                .ok_or_else(|| anyhow!("{url} lists no SHA-256 for {index_path}"))?;
            if size > MAX_PACKAGES_XZ {
                bail!("{url}: {index_path} is {size} bytes, over the {MAX_PACKAGES_XZ}-byte bound");
            }
            let index_url = format!("{base}/dists/{suite}/{index_path}");
            let index = dir.join("Packages.xz.new");
            download(&index_url, &index, size)?.require(&index_url)?;
            let got = sha256_file(&index)?;
            if got != sha256 {
                bail!("{index_url}: SHA-256 {got} differs from the signed InRelease ({sha256}): refusing it");
            }
            fs::rename(&index, dir.join("Packages.xz"))?;
            fs::rename(&inrelease, dir.join("InRelease"))?;
            fs::write(dir.join("mirror"), base)?;
            return Ok(());
        }
        if tried.is_empty() {
            tried.push("every mirror of apt's sources was unreachable earlier in this run".into());
        }
        bail!(
            "cannot fetch Debian's {suite} index from apt's sources ({}); vmtest needs the network to the Debian \
             archive once, later runs use the cache",
            tried.join("; ")
        )
    }
}

/// Sources in deb822 form (`*.sources`): paragraphs of `Types`, `URIs`, `Signed-By`, `Enabled`.
fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |name: &str| {
            paragraph.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
            })
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if !is_deb || field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let keyring = field("Signed-By").map(PathBuf::from).filter(|p| p.is_absolute());
        for uri in field("URIs").unwrap_or_default().split_whitespace() {
            out.extend(http_source(uri, keyring.clone()));
        }
    }
    out
}

/// Sources in one-line form (`*.list`): `deb [options] URI suite components…`.
fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines().map(|l| l.split('#').next().unwrap_or_default().trim()) {
        let Some(rest) = line.strip_prefix("deb ") else { continue };
        let (options, rest) = match rest.trim_start().strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']').unwrap_or(("", "")),
            None => ("", rest),
        };
        let keyring = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="))
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        if let Some(uri) = rest.split_whitespace().next() {
            out.extend(http_source(uri, keyring));
        }
    }
    out
}

fn http_source(uri: &str, keyring: Option<PathBuf>) -> Option<AptSource> {
    (uri.starts_with("http://") || uri.starts_with("https://"))
        .then(|| AptSource { uri: uri.trim_end_matches('/').to_string(), keyring })
}

/// Checks the archive's signature with gpgv; returns the signed text.
fn verify_signature(inrelease: &Path, keyring: &Path) -> Result<String> {
    let clear = inrelease.with_extension("verified");
    let _ = fs::remove_file(&clear);
    let out = Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg("--output")
        .arg(&clear)
        .arg(inrelease)
        .output()
        .context("running gpgv (Debian's package gpgv) to check the archive's signature")?;
    if !out.status.success() {
        bail!(
            "the signature does not verify with {} (gpgv: {}); a newer debian-archive-keyring may be needed",
            keyring.display(),
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', " | ")
        );
    }
    let text = fs::read_to_string(&clear)?;
    fs::remove_file(&clear)?;
    Ok(text)
}

/// The SHA-256 and size a `Release` file gives for `path`.
fn release_checksum(release: &str, path: &str) -> Option<(String, u64)> {
    let section = release.split("\nSHA256:").nth(1)?;
    section.lines().skip(1).take_while(|l| l.starts_with(' ')).find_map(|l| {
        let mut words = l.split_whitespace();
        let (sha, size, name) = (words.next()?, words.next()?, words.next()?);
        if name != path || !is_sha256(sha) {
            return None;
        }
        Some((sha.to_string(), size.parse().ok()?))
    })
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The paragraphs of a `Packages` index whose name `keep` accepts and whose
/// fields are sane (a relative pool path, a hex SHA-256, a bounded size).
fn parse_packages(text: &str, keep: impl Fn(&str) -> bool) -> Vec<PackageEntry> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut p = PackageEntry::default();
        for line in paragraph.lines().filter(|l| !l.starts_with(' ')) {
            let Some((key, value)) = line.split_once(": ") else { continue };
            let value = value.trim().to_string();
            match key {
                "Package" => p.name = value,
                "Version" => p.version = value,
                "Filename" => p.filename = value,
                "Size" => p.size = value.parse().unwrap_or(u64::MAX),
                "SHA256" => p.sha256 = value,
                "Depends" => p.depends = value,
                _ => {}
            }
        }
        let safe_path = !p.filename.starts_with('/')
            && !p.filename.split('/').any(|part| part == ".." || part.is_empty())
            && p.filename.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+~/-".contains(&b));
        if keep(&p.name) && !p.version.is_empty() && safe_path && is_sha256(&p.sha256) && p.size <= MAX_DEB {
            out.push(p);
        }
    }
    out
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

/// Debian's version ordering (dpkg's `verrevcmp` on epoch, upstream version, revision).
pub fn compare_debian_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) => (e.parse().unwrap_or(0), rest),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream, revision),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| verrevcmp(ua, ub)).then_with(|| verrevcmp(ra, rb))
}

/// dpkg's comparison of one version part: runs of non-digits compare by
/// [`char_order`] (`~` before everything, even the end), runs of digits numerically.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ca, cb) = (char_order(at(a, i)), char_order(at(b, j)));
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
        while at(a, i) == b'0' {
            i += 1;
        }
        while at(b, j) == b'0' {
            j += 1;
        }
        let mut first_difference = Ordering::Equal;
        while at(a, i).is_ascii_digit() && at(b, j).is_ascii_digit() {
            first_difference = first_difference.then(at(a, i).cmp(&at(b, j)));
            i += 1;
            j += 1;
        }
        if at(a, i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if at(b, j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}

fn char_order(c: u8) -> i32 {
    match c {
        0 => 0,
        b'~' => -1,
        c if c.is_ascii_digit() => 0,
        c if c.is_ascii_alphabetic() => i32::from(c),
        c => i32::from(c) + 256,
    }
}

/// xz data decompressed, refusing more than `limit` bytes of output.
fn xz_decompress(data: &[u8], limit: usize) -> Result<String> {
    struct Bounded(Vec<u8>, usize);
    impl Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0.len() + buf.len() > self.1 {
                return Err(io::Error::other(format!("more than {} bytes decompressed", self.1)));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = Bounded(Vec::new(), limit);
    lzma_rs::xz_decompress(&mut io::BufReader::new(data), &mut out).map_err(|e| anyhow!("{e:?}"))?;
    String::from_utf8(out.0).context("the index is not UTF-8")
}

#[derive(Debug, PartialEq, Eq)]
enum Fetched {
    Done,
    NotFound,
    /// No connection (name resolution, connect or timeout): curl's message.
    Unreachable(String),
}

impl Fetched {
    /// Done, or an error saying what went wrong with `url`.
    fn require(self, url: &str) -> Result<()> {
        match self {
            Fetched::Done => Ok(()),
            Fetched::NotFound => bail!("{url}: 404"),
            Fetched::Unreachable(why) => bail!("{url}: {why} (no network to the Debian archive?)"),
        }
    }
}

/// Downloads `url` to `dest` with curl, with timeouts so that a dead network
/// fails in seconds rather than hangs, and at most `max_bytes`.
fn download(url: &str, dest: &Path, max_bytes: u64) -> Result<Fetched> {
    let tmp = dest.with_extension("part");
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--location", "--proto", "=http,https"])
        .args(["--connect-timeout", "15", "--max-time", "900", "--speed-limit", "10000", "--speed-time", "30"])
        .args(["--max-filesize", &max_bytes.to_string(), "--write-out", "%{http_code}", "--output"])
        .arg(&tmp)
        .arg(url)
        .output()
        .context("running curl (Debian's package curl)")?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // curl's exit codes for: could not resolve host, could not connect, timed out.
        if matches!(out.status.code(), Some(6 | 7 | 28)) {
            return Ok(Fetched::Unreachable(why));
        }
        bail!("{url}: {why}");
    }
    match code.as_str() {
        "200" => {}
        "404" | "410" => {
            let _ = fs::remove_file(&tmp);
            return Ok(Fetched::NotFound);
        }
        _ => {
            let _ = fs::remove_file(&tmp);
            bail!("{url}: HTTP {code}");
        }
    }
    if fs::metadata(&tmp)?.len() > max_bytes {
        let _ = fs::remove_file(&tmp);
        bail!("{url}: more than {max_bytes} bytes");
    }
    fs::rename(&tmp, dest)?;
    Ok(Fetched::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_version_order() {
        let less = [
            ("5.10.237-1", "5.10.244-1"),
            ("7.2.12-1~bpo13+1", "7.3.4-1~bpo13+1"),
            ("6.12.115-1", "6.12.115+deb13.1-1"),
            ("1.0~rc1", "1.0"),
            ("2.0", "1:0.1"),
            ("1.0-1", "1.0-1+b1"),
            ("1.0a", "1.0+"),
            ("6.9", "6.10"),
        ];
        for (a, b) in less {
            assert_eq!(compare_debian_versions(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare_debian_versions(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare_debian_versions("1.01", "1.1"), Ordering::Equal);
        assert_eq!(upstream_version("1:7.3.4-1~bpo13+1"), "7.3.4");
    }

    #[test]
    fn apt_sources_in_both_forms() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\
                      Signed-By: /usr/share/keyrings/k.gpg\n\nTypes: deb-src\nURIs: http://src.example/debian\n\n\
                      Types: deb\nURIs: http://off.example/debian\nEnabled: no\n";
        assert_eq!(
            parse_deb822_sources(deb822),
            vec![AptSource {
                uri: "http://mirror.example/debian".into(),
                keyring: Some("/usr/share/keyrings/k.gpg".into())
            }]
        );
        let list = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] https://a.example/debian/ bookworm main\n\
                    deb-src http://b.example/debian bookworm main\ndeb cdrom:/media bookworm main\n\
                    deb http://c.example/debian bookworm main # trailing\n";
        assert_eq!(
            parse_one_line_sources(list),
            vec![
                AptSource { uri: "https://a.example/debian".into(), keyring: Some("/k.gpg".into()) },
                AptSource { uri: "http://c.example/debian".into(), keyring: None },
            ]
        );
    }

    #[test]
    fn packages_and_release_fields() {
        let sha = "a".repeat(64);
        let index = format!(
            "Package: linux-image-7.3.4+deb13-cloud-amd64\nVersion: 7.3.4-1~bpo13+1\nDepends: dracut | \
             initramfs-tools (>= 0.120), linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)\n\
             Filename: pool/main/l/x.deb\nSize: 1928\nSHA256: {sha}\n\n\
             Package: linux-image-evil\nVersion: 1\nFilename: ../../etc/passwd\nSize: 1\nSHA256: {sha}\n"
        );
        let found = parse_packages(&index, |n| n.starts_with("linux-image-"));
        assert_eq!(found.len(), 1, "a path escaping the mirror is dropped");
        assert_eq!(binary_dependency(&found[0].depends), Some("linux-binary-7.3.4+deb13-cloud-amd64"));
        let (amd64, arm64) = (index_path("amd64"), index_path("arm64"));
        let release =
            format!("Suite: x\nSHA256:\n {sha} 12 main/binary-amd64/Packages\n {sha} 34 {amd64}\n {sha} 56 {arm64}\n");
        assert_eq!(release_checksum(&release, &amd64), Some((sha.clone(), 34)));
        assert_eq!(release_checksum(&release, &arm64), Some((sha, 56)));
    }
}
