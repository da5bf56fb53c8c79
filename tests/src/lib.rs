//! Harness for gleak's end-to-end tests: builds the Go fixtures in
//! `tests/fixtures/` (and the demo in `examples/demo/`, and the `go test -c`
//! package `tests/fixtures/gotest/`) with every Go toolchain on the machine,
//! runs them, attaches the real `gleak` binary (or has `gleak run` start them)
//! and parses its newline-delimited JSON reports, which it can validate
//! against `docs/report.schema.json` ([`validate_report`]).
//!
//! Environment:
//! - `GLEAK_CACHE`: cache root (default `$HOME/.cache/gleak`). Go toolchains are
//!   looked up in `$GLEAK_CACHE/go/<version>/bin/go`, fixtures are built into
//!   `$GLEAK_CACHE/fixtures/<version>/<name>`, with `GOCACHE=$GLEAK_CACHE/gocache-<version>`.
//! - `GLEAK_BIN`: the gleak binary to test (default `<target>/release/gleak`).
//! - `CI=true`, or `GLEAK_STRICT=1` (what `cargo xtask test` sets): missing
//!   prerequisites (root, a second Go toolchain) fail loudly instead of being
//!   skipped. Only a bare `cargo test` run by hand may skip.
//! - `GLEAK_TEST_PARALLEL=1`: let tests trace their fixtures concurrently
//!   (default: one traced fixture at a time, see [`serial_guard`]).

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    unistd::Pid,
};
pub use serde_json::Value;

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z`, ...), `None` once
/// the process is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    procfs::process::Process::new(pid as i32).and_then(|p| p.stat()).ok().map(|s| s.state)
}

/// Has the kernel SIGKILL `cmd`'s process when the test process dies, so that no
/// Go program outlives a test that panicked or was killed.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
}

/// How long a started program gets to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Grace period on top of `--duration` before a gleak run is considered hung.
pub const GLEAK_GRACE: Duration = Duration::from_secs(60);

/// Debian's Go 1.19 (package golang-1.19-go).
const DEBIAN_GO_119: &str = "/usr/lib/go-1.19/bin/go";

/// Ready-line prefix printed by the demo service.
pub const DEMO_READY: &str = "demo order service running";

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// True on CI (`CI=true` or `CI=1`) and under `cargo xtask test`
/// (`GLEAK_STRICT=1`): prerequisites are then mandatory and missing ones make
/// tests fail instead of skip.
pub fn is_strict() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    set("CI") || set("GLEAK_STRICT")
}

/// The cargo workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate has a parent directory").to_path_buf()
}

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `tests/fixtures/<name>.go`.
pub fn fixture_source(name: &str) -> PathBuf {
    fixtures_dir().join(format!("{name}.go"))
}

/// `examples/demo/main.go`.
pub fn demo_source() -> PathBuf {
    workspace_root().join("examples/demo/main.go")
}

/// `$GLEAK_CACHE`, defaulting to `$HOME/.cache/gleak`.
pub fn gleak_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("GLEAK_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache/gleak"),
        None => panic!("neither GLEAK_CACHE nor HOME is set: cannot locate the gleak cache"),
    }
}

/// Whether the tests run as root (needed to load eBPF programs).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns true when the test may proceed. Not root: panics on CI, otherwise
/// prints a skip note and returns false.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    if is_strict() {
        panic!("gleak end-to-end tests need root (CI or cargo xtask test: not skipping): run them with sudo");
    }
    eprintln!("skipping: gleak end-to-end tests need root to load eBPF programs (run with sudo)");
    false
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the traced part of the tests (start fixture, attach gleak, stop)
/// so concurrent test threads do not compete for CPU while their fixtures are
/// measured. Hold the returned guard while tracing. `GLEAK_TEST_PARALLEL=1`
/// disables it (returns `None`).
pub fn serial_guard() -> Option<MutexGuard<'static, ()>> {
    if std::env::var("GLEAK_TEST_PARALLEL").is_ok_and(|v| v == "1" || v == "true") {
        return None;
    }
    Some(lock(&SERIAL))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Go toolchains
// ---------------------------------------------------------------------------

/// One Go toolchain to build fixtures with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoToolchain {
    /// Version label: "1.19" for Debian's package, the directory name
    /// (e.g. "1.23.9") for toolchains under `$GLEAK_CACHE/go/`.
    pub version: String,
    /// Path to the `go` command.
    pub go: PathBuf,
}

impl GoToolchain {
    /// The toolchain's GOROOT (`<goroot>/bin/go`).
    pub fn goroot(&self) -> PathBuf {
        self.go.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
    }

    /// Whether `runtime.Version()` of a binary built by this toolchain, e.g.
    /// "go1.19.8", matches the label (label "1.19" matches "go1.19.8").
    pub fn matches_go_version(&self, go_version: &str) -> bool {
        let want = format!("go{}", self.version);
        go_version == want || go_version.starts_with(&format!("{want}."))
    }

    fn sort_key(&self) -> Vec<u64> {
        self.version.split('.').map(|p| p.parse().unwrap_or(u64::MAX)).collect()
    }
}

impl fmt::Display for GoToolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Go {}", self.version)
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Go toolchains present: Debian's `/usr/lib/go-1.19/bin/go` and every
/// `$GLEAK_CACHE/go/*/bin/go`, oldest first. In strict mode ([`is_strict`]) fewer than two is a
/// panic; otherwise a note is printed (once) and the tests use what exists.
pub fn go_toolchains() -> Vec<GoToolchain> {
    static FOUND: OnceLock<Vec<GoToolchain>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut found = Vec::new();
            if is_executable(Path::new(DEBIAN_GO_119)) {
                found.push(GoToolchain { version: "1.19".into(), go: DEBIAN_GO_119.into() });
            }
            let dir = gleak_cache().join("go");
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let go = e.path().join("bin/go");
                    if is_executable(&go) {
                        found.push(GoToolchain { version: e.file_name().to_string_lossy().into_owned(), go });
                    }
                }
            }
            found.sort_by_key(GoToolchain::sort_key);
            found.dedup_by(|a, b| a.version == b.version);
            if found.len() < 2 {
                let msg = format!(
                    "found {} Go toolchain(s) ({}); the end-to-end tests want Debian's Go 1.19 at {} \
                     and at least one more under {}/<version>/bin/go (scripts/bootstrap.sh installs them)",
                    found.len(),
                    found.iter().map(|t| t.version.as_str()).collect::<Vec<_>>().join(", "),
                    DEBIAN_GO_119,
                    dir.display()
                );
                if is_strict() {
                    panic!("{msg} (CI or cargo xtask test: not skipping)");
                }
                eprintln!("note: {msg}; continuing with what exists");
            }
            found
        })
        .clone()
}

/// Runs `f` once per toolchain, sequentially. A panic for one toolchain does
/// not stop the others; at the end, one panic names every failing toolchain
/// with its message (so "fails only on Go 1.26.6" is visible in one run).
pub fn for_each_toolchain(what: &str, f: impl FnMut(&GoToolchain)) {
    for_each_of(what, &pattern_toolchains(), f)
}

/// The toolchains the leak-pattern tests run on: the oldest, Go 1.23 (its
/// `runtime.g` layout is the odd one out) and the newest, unless
/// `GLEAK_ALL_TOOLCHAINS=1` asks for every one. The shipped-binaries matrix and the
/// binary-reader tests always use every toolchain ([`go_toolchains`]).
pub fn pattern_toolchains() -> Vec<GoToolchain> {
    let all = go_toolchains();
    if std::env::var("GLEAK_ALL_TOOLCHAINS").is_ok_and(|v| v == "1") || all.len() <= 3 {
        return all;
    }
    let mut picked = vec![all[0].clone()];
    picked.extend(all.iter().find(|t| t.version.starts_with("1.23")).cloned());
    picked.push(all[all.len() - 1].clone());
    picked.dedup();
    picked
}

/// [`for_each_toolchain`] over a given list.
pub fn for_each_of(what: &str, toolchains: &[GoToolchain], mut f: impl FnMut(&GoToolchain)) {
    if toolchains.is_empty() {
        eprintln!("{what}: no Go toolchain found, nothing tested");
        return;
    }
    let mut failures = Vec::new();
    for tc in toolchains {
        eprintln!("{what}: {tc}");
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(tc))) {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".into());
            failures.push(format!("--- {tc} ---\n{msg}"));
        }
    }
    if !failures.is_empty() {
        panic!("{what} failed with {} of {} toolchain(s):\n{}", failures.len(), toolchains.len(), failures.join("\n"));
    }
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

/// An exclusive `flock` on a lock file, released when dropped.
struct FileLock {
    _lock: Flock<fs::File>,
}

impl FileLock {
    fn acquire(path: &Path) -> FileLock {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
        let mut file = file;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return FileLock { _lock: lock },
                Err((again, Errno::EINTR)) => file = again,
                Err((_, e)) => panic!("flock {}: {e}", path.display()),
            }
        }
    }
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A `go` command with a controlled environment: GOPATH mode, no network,
/// caches under `$GLEAK_CACHE`, nothing inherited that would change the build.
pub fn go_command(tc: &GoToolchain) -> Command {
    let cache = gleak_cache();
    let mut cmd = Command::new(&tc.go);
    for var in ["GOROOT", "GOFLAGS", "GOOS", "GOARCH", "GOAMD64", "GOEXPERIMENT", "GODEBUG", "CGO_ENABLED", "GOWORK"] {
        cmd.env_remove(var);
    }
    cmd.env("GOCACHE", cache.join(format!("gocache-{}", tc.version)))
        .env("GOPATH", cache.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOENV", "off");
    cmd
}

/// Builds the single-file Go program `src` with `tc` into
/// `$GLEAK_CACHE/fixtures/<version>/<name>` (plain `go build`: symbols, DWARF,
/// no PIE) and returns the binary's path. Rebuilds only when the binary is
/// missing or older than the source or the toolchain, or was built from
/// different source text. Safe to call from parallel threads and processes.
pub fn build_go_program(tc: &GoToolchain, src: &Path, name: &str) -> PathBuf {
    build_go_program_with_flags(tc, src, name, &[])
}

/// [`build_go_program`] with extra `go build` flags, e.g.
/// `&["-ldflags=-s -w"]` for a stripped binary. Use a `name` of its own per
/// set of flags (the flags are part of the cache stamp, so reusing a name
/// rebuilds instead of returning a binary built with other flags).
pub fn build_go_program_with_flags(tc: &GoToolchain, src: &Path, name: &str, flags: &[&str]) -> PathBuf {
    assert!(src.is_file(), "Go source {} does not exist", src.display());
    let out_dir = gleak_cache().join("fixtures").join(&tc.version);
    build_cached(tc, &[src.to_path_buf()], flags, name, |cmd, tmp| {
        cmd.arg("build").args(flags).arg("-o").arg(tmp).arg(src).current_dir(&out_dir);
    })
}

/// Builds the Go test package in directory `dir` (its `*.go` files, GOPATH
/// mode, no go.mod needed) with `go test -c` into
/// `$GLEAK_CACHE/fixtures/<version>/<name>` and returns the test binary's path.
/// Same caching and locking as [`build_go_program`]; vet is off (the fixtures
/// leak on purpose).
pub fn build_go_test_binary(tc: &GoToolchain, dir: &Path, name: &str) -> PathBuf {
    assert!(dir.is_dir(), "Go package {} does not exist", dir.display());
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "go"))
        .collect();
    sources.sort();
    assert!(
        sources.iter().any(|p| p.to_string_lossy().ends_with("_test.go")),
        "{} holds no *_test.go file",
        dir.display()
    );
    build_cached(tc, &sources, &[], name, |cmd, tmp| {
        cmd.arg("test").arg("-c").arg("-vet=off").arg("-o").arg(tmp).current_dir(dir);
    })
}

/// Builds `name` into `$GLEAK_CACHE/fixtures/<version>/<name>` unless an
/// up-to-date binary built from the same `sources` with the same `flags` by
/// the same toolchain is already there. `args(cmd, tmp)` makes the `go`
/// command `cmd` write the binary to `tmp`.
fn build_cached(
    tc: &GoToolchain,
    sources: &[PathBuf],
    flags: &[&str],
    name: &str,
    args: impl FnOnce(&mut Command, &Path),
) -> PathBuf {
    let out_dir = gleak_cache().join("fixtures").join(&tc.version);
    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));
    let out = out_dir.join(name);
    let _lock = FileLock::acquire(&out_dir.join(format!(".{name}.lock")));

    // The stamp is the source text (file names too when there are several),
    // the toolchain and the extra flags: a change of any rebuilds.
    let mut stamp = Vec::new();
    for src in sources {
        if sources.len() > 1 {
            stamp.extend_from_slice(format!("// file {}\n", src.display()).as_bytes());
        }
        stamp.extend(fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())));
    }
    stamp.extend_from_slice(format!("\n// built by {}\n", tc.go.display()).as_bytes());
    if !flags.is_empty() {
        stamp.extend_from_slice(format!("// with flags {flags:?}\n").as_bytes());
    }
    let stamp_path = out_dir.join(format!(".{name}.stamp"));
    let fresh = match (mtime(&out), mtime(&tc.go)) {
        (Some(bin), Some(go)) => bin >= go && sources.iter().all(|s| mtime(s).is_some_and(|s| bin >= s)),
        _ => false,
    };
    if fresh && fs::read(&stamp_path).is_ok_and(|old| old == stamp) {
        return out;
    }

    // Build next to the target and rename over it: atomic for other readers,
    // and works while an older copy of the binary is still running.
    let tmp = out_dir.join(format!(".{name}.tmp.{}", unique_suffix()));
    let mut cmd = go_command(tc);
    args(&mut cmd, &tmp);
    let output = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", tc.go.display()));
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        panic!(
            "`{cmd:?}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), out.display()));
    fs::write(&stamp_path, &stamp).unwrap_or_else(|e| panic!("write {}: {e}", stamp_path.display()));
    out
}

/// A name part no other test thread, here or in another process, uses at once:
/// the process id and the thread's.
pub fn unique_suffix() -> String {
    let thread = format!("{:?}", std::thread::current().id());
    format!("{}.{}", std::process::id(), thread.trim_start_matches("ThreadId(").trim_end_matches(')'))
}

/// How a Go program is built: the ways shipped binaries differ from `go build`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `go build`: symbols, DWARF, static, not PIE.
    Plain,
    /// `-ldflags=-s -w`: no symbol table, no DWARF (release builds, most images).
    Stripped,
    /// `-ldflags=-w`: symbols, no DWARF (the Go toolchain's own binaries).
    NoDwarf,
    /// `-buildmode=pie`.
    Pie,
    /// cgo, linked by gcc (`-linkmode=external`): dynamically linked.
    CgoExternal,
    /// cgo, linked by gcc, PIE and stripped: a distribution package.
    CgoPieStripped,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Plain,
        Variant::Stripped,
        Variant::NoDwarf,
        Variant::Pie,
        Variant::CgoExternal,
        Variant::CgoPieStripped,
    ];

    /// Name suffix of the binary (`chan_send-sw`).
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Plain => "",
            Variant::Stripped => "-sw",
            Variant::NoDwarf => "-w",
            Variant::Pie => "-pie",
            Variant::CgoExternal => "-cgo",
            Variant::CgoPieStripped => "-cgo-pie-sw",
        }
    }

    pub fn go_build_flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::NoDwarf => &["-ldflags=-w"],
            Variant::Pie => &["-buildmode=pie"],
            Variant::CgoExternal => &["-ldflags=-linkmode=external"],
            Variant::CgoPieStripped => &["-buildmode=pie", "-ldflags=-linkmode=external -s -w"],
        }
    }

    pub fn is_cgo(self) -> bool {
        matches!(self, Variant::CgoExternal | Variant::CgoPieStripped)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Variant::Plain => "plain",
            Variant::Stripped => "stripped (-s -w)",
            Variant::NoDwarf => "no DWARF (-w)",
            Variant::Pie => "PIE",
            Variant::CgoExternal => "cgo, external linker",
            Variant::CgoPieStripped => "cgo, external linker, PIE, stripped",
        };
        f.write_str(name)
    }
}

/// Builds `tests/fixtures/<name>.go` with `tc` as `variant` into
/// `$GLEAK_CACHE/fixtures/<version>/<name><suffix>`, cached like [`build_go_program`].
pub fn build_fixture_variant(tc: &GoToolchain, name: &str, variant: Variant) -> PathBuf {
    let src = fixture_source(name);
    let out_name = format!("{name}{}", variant.suffix());
    let out_dir = gleak_cache().join("fixtures").join(&tc.version);
    let flags = variant.go_build_flags();
    build_cached(tc, std::slice::from_ref(&src), flags, &out_name, |cmd, tmp| {
        if variant.is_cgo() {
            cmd.env("CGO_ENABLED", "1");
        }
        cmd.arg("build").args(flags).arg("-o").arg(tmp).arg(&src).current_dir(&out_dir);
    })
}

/// Builds `tests/fixtures/<name>.go` with `tc` as `variant` for another
/// architecture; see [`build_go_program_for_arch`].
pub fn build_fixture_for_arch(tc: &GoToolchain, name: &str, variant: Variant, goarch: &str) -> PathBuf {
    build_go_program_for_arch(tc, &fixture_source(name), name, variant, goarch)
}

/// Builds the single-file Go program `src` with `tc` as `variant` for another
/// architecture (`GOARCH=goarch`, no cgo: Go cross-compiles with its own
/// linker) into `$GLEAK_CACHE/fixtures/<version>/<name>-<goarch><suffix>`,
/// cached like [`build_go_program`]. For reading on this host, not running.
pub fn build_go_program_for_arch(tc: &GoToolchain, src: &Path, name: &str, variant: Variant, goarch: &str) -> PathBuf {
    assert!(!variant.is_cgo(), "cgo fixtures need a cross C toolchain");
    assert!(src.is_file(), "Go source {} does not exist", src.display());
    let out_name = format!("{name}-{goarch}{}", variant.suffix());
    let out_dir = gleak_cache().join("fixtures").join(&tc.version);
    let mut flags: Vec<&str> = variant.go_build_flags().to_vec();
    let goarch_flag = format!("GOARCH={goarch}");
    // Part of the cache stamp only: the name says the architecture too.
    let stamp_flags: Vec<&str> = flags.iter().copied().chain([goarch_flag.as_str()]).collect();
    build_cached(tc, &[src.to_path_buf()], &stamp_flags, &out_name, |cmd, tmp| {
        cmd.env("GOARCH", goarch).env("CGO_ENABLED", "0");
        cmd.arg("build").args(flags.drain(..)).arg("-o").arg(tmp).arg(src).current_dir(&out_dir);
    })
}

/// Builds `tests/fixtures/<name>.go` with `tc`; see [`build_go_program`].
pub fn build_fixture(tc: &GoToolchain, name: &str) -> PathBuf {
    build_go_program(tc, &fixture_source(name), name)
}

/// Builds `examples/demo/main.go` with `tc` (binary name `demo`).
pub fn build_demo(tc: &GoToolchain) -> PathBuf {
    build_go_program(tc, &demo_source(), "demo")
}

// ---------------------------------------------------------------------------
// Markers
// ---------------------------------------------------------------------------

/// 1-based line of the `go` statement in `tests/fixtures/<fixture_name>.go`
/// carrying the trailing comment `// <marker>` (e.g. `LEAK:chan_send`).
pub fn marker_line(fixture_name: &str, marker: &str) -> u32 {
    marker_line_in(&fixture_source(fixture_name), marker)
}

/// Like [`marker_line`] for any Go file. The marker must end its line, appear
/// exactly once, and sit on a line starting with `go ` (the goroutine's
/// creation site, which is what gleak reports).
pub fn marker_line_in(path: &Path, marker: &str) -> u32 {
    let marker = marker.trim_start_matches("//").trim();
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let needle = format!("// {marker}");
    let hits: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| l.trim_end().ends_with(&needle)).collect();
    match hits.as_slice() {
        [(idx, l)] => {
            // `BLOCK:` marks the line a goroutine blocks at, not its `go` statement.
            assert!(
                marker.starts_with("BLOCK:") || l.trim_start().starts_with("go "),
                "{}:{}: marker `{needle}` is not on a `go` statement line: {l:?}",
                path.display(),
                idx + 1
            );
            u32::try_from(idx + 1).expect("line number fits u32")
        }
        [] => panic!("marker `{needle}` not found in {}", path.display()),
        many => panic!(
            "marker `{needle}` found {} times in {} (lines {:?}); markers must be unique",
            many.len(),
            path.display(),
            many.iter().map(|(i, _)| i + 1).collect::<Vec<_>>()
        ),
    }
}

// ---------------------------------------------------------------------------
// Running Go programs
// ---------------------------------------------------------------------------

/// A running Go program, started by [`RunningGo::spawn`]. Killed (SIGKILL)
/// and reaped when dropped; also killed by the kernel if the spawning thread
/// dies (PR_SET_PDEATHSIG), so an aborted test run leaves nothing behind.
pub struct RunningGo {
    child: Child,
    label: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl RunningGo {
    /// Starts `bin args...` and waits up to [`READY_TIMEOUT`] for a stdout line
    /// starting with `ready_prefix`. Panics (with the program's output) if it
    /// exits or stays silent instead.
    pub fn spawn(bin: &Path, args: &[&str], ready_prefix: &str) -> RunningGo {
        Self::spawn_with_timeout(bin, args, ready_prefix, READY_TIMEOUT)
    }

    /// [`RunningGo::spawn`] with an explicit ready timeout.
    pub fn spawn_with_timeout(bin: &Path, args: &[&str], ready_prefix: &str, timeout: Duration) -> RunningGo {
        let label = bin.display().to_string();
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let stdout = Arc::clone(&stdout);
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    lock(&stdout).push(line.clone());
                    let _ = tx.send(line); // receiver is gone once ready: fine
                }
            });
        }
        let (stderr, stderr_reader) = collect_in_background(err);
        let mut me = RunningGo { child, label, stdout, stderr, stderr_reader: Some(stderr_reader) };

        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(ready_prefix) => return me,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{}: no stdout line starting with {ready_prefix:?} within {timeout:?}\n{}",
                    me.label,
                    me.diagnostics()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = me.child.wait();
                    if let Some(h) = me.stderr_reader.take() {
                        let _ = h.join();
                    }
                    panic!("{} exited ({status:?}) before printing {ready_prefix:?}\n{}", me.label, me.diagnostics());
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The program's path, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Stdout lines printed so far (including the ready line).
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    /// Stderr printed so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics unless the process is still running; `when` says at which point
    /// of the test (e.g. "after gleak detached").
    pub fn assert_running(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            if let Some(h) = self.stderr_reader.take() {
                let _ = h.join();
            }
            panic!("{} (pid {}) is no longer running {when}: {status}\n{}", self.label, self.pid(), self.diagnostics());
        }
    }

    /// Stdout and the tail of stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        let err = self.stderr_text();
        let tail: String = {
            let lines: Vec<&str> = err.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        format!("--- stdout ---\n{}\n--- stderr (tail) ---\n{}", self.stdout_lines().join("\n"), tail)
    }
}

impl Drop for RunningGo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Go program built for one toolchain, ready to be started.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Fixture name (`chan_send`, ..., or `demo`).
    pub name: String,
    /// Toolchain it was built with.
    pub toolchain: GoToolchain,
    /// Go source file.
    pub source: PathBuf,
    /// Built binary.
    pub binary: PathBuf,
    /// Prefix of the stdout line that says the program is ready.
    pub ready_prefix: String,
}

impl Fixture {
    /// Builds `tests/fixtures/<name>.go` with `tc`.
    pub fn build(tc: &GoToolchain, name: &str) -> Fixture {
        Fixture {
            name: name.into(),
            toolchain: tc.clone(),
            source: fixture_source(name),
            binary: build_fixture(tc, name),
            ready_prefix: "ready".into(),
        }
    }

    /// Builds `tests/fixtures/<name>.go` with `tc` as `variant`.
    pub fn build_variant(tc: &GoToolchain, name: &str, variant: Variant) -> Fixture {
        Fixture {
            name: format!("{name}{}", variant.suffix()),
            toolchain: tc.clone(),
            source: fixture_source(name),
            binary: build_fixture_variant(tc, name, variant),
            ready_prefix: "ready".into(),
        }
    }

    /// Builds the demo service `examples/demo/main.go` with `tc`.
    pub fn demo(tc: &GoToolchain) -> Fixture {
        Fixture {
            name: "demo".into(),
            toolchain: tc.clone(),
            source: demo_source(),
            binary: build_demo(tc),
            ready_prefix: DEMO_READY.into(),
        }
    }

    /// Builds the Go test package `tests/fixtures/<dir>/` with `go test -c`
    /// (binary `<dir>.test`); `test_file` is the file whose markers the test
    /// looks up. Test binaries print no ready line: run them under
    /// `gleak run` ([`run_gleak_run`]), not with [`Fixture::start`].
    pub fn go_test(tc: &GoToolchain, dir: &str, test_file: &str) -> Fixture {
        let pkg = fixtures_dir().join(dir);
        Fixture {
            name: format!("{dir}.test"),
            toolchain: tc.clone(),
            source: pkg.join(test_file),
            binary: build_go_test_binary(tc, &pkg, &format!("{dir}.test")),
            ready_prefix: String::new(),
        }
    }

    /// Starts the program and waits for its ready line.
    pub fn start(&self) -> RunningGo {
        self.start_with_args(&[])
    }

    /// Starts the program with extra arguments and waits for its ready line.
    pub fn start_with_args(&self, args: &[&str]) -> RunningGo {
        RunningGo::spawn(&self.binary, args, &self.ready_prefix)
    }

    /// Line of `// <marker>` in this program's source (see [`marker_line_in`]).
    pub fn marker_line(&self, marker: &str) -> u32 {
        marker_line_in(&self.source, marker)
    }

    /// What a report's `file` ends with for this program's sites:
    /// `fixtures/<name>.go` or `examples/demo/main.go`.
    pub fn file_suffix(&self) -> String {
        if let Ok(rel) = self.source.strip_prefix(fixtures_dir()) {
            return Path::new("fixtures").join(rel).to_string_lossy().into_owned();
        }
        self.source.strip_prefix(workspace_root()).unwrap_or(&self.source).to_string_lossy().into_owned()
    }
}

impl fmt::Display for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.toolchain)
    }
}

// ---------------------------------------------------------------------------
// Running gleak
// ---------------------------------------------------------------------------

/// The gleak binary: `$GLEAK_BIN` (a relative path from the workspace root), else
/// `<target>/release/gleak` where `<target>` is `$CARGO_TARGET_DIR` or
/// `<workspace>/target`.
pub fn gleak_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GLEAK_BIN").filter(|v| !v.is_empty()) {
        // Relative to the workspace, where cargo is run (tests run in their crate's directory).
        let bin = workspace_root().join(bin);
        assert!(bin.is_file(), "GLEAK_BIN={} does not exist", bin.display());
        return bin;
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(|t| root.join(t)) // join keeps absolute paths as they are
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/gleak");
    assert!(
        bin.is_file(),
        "gleak binary not found at {}: run `cargo build --release` first (or set GLEAK_BIN)",
        bin.display()
    );
    bin
}

/// Result of one gleak invocation.
#[derive(Debug)]
pub struct GleakRun {
    /// Arguments after the binary name.
    pub args: Vec<String>,
    /// Exit status.
    pub status: ExitStatus,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

impl GleakRun {
    /// gleak's exit code (`None` if a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl fmt::Display for GleakRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`gleak {}` exited with {}\n--- gleak stderr ---\n{}\n--- gleak stdout ---\n{}",
            self.args.join(" "),
            self.status,
            self.stderr,
            self.stdout
        )
    }
}

/// Reads `source` to its end on a thread, into a shared buffer readable meanwhile.
fn collect_in_background(mut source: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let reader = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match source.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => lock(&sink).extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, reader)
}

/// Runs `gleak <args>` to completion, killing it (and panicking) after
/// `timeout`. Does not look at the exit status.
pub fn run_gleak(args: &[&str], timeout: Duration) -> GleakRun {
    spawn_gleak(args).wait(timeout)
}

/// Starts `gleak <args>` in the background (stdin null, stdout and stderr
/// captured): for tests that interact with a running gleak (wait for its
/// banner, send it a signal). See [`GleakChild`].
pub fn spawn_gleak(args: &[&str]) -> GleakChild {
    GleakChild::spawn(&gleak_bin(), args, |_| {})
}

/// How long the pipes of a gleak that exited may stay silent before its output
/// counts as complete (see [`GleakChild::wait`]).
const PIPE_QUIET: Duration = Duration::from_millis(500);

/// A gleak process started by [`spawn_gleak`] or [`GleakChild::spawn`].
/// Killed (SIGKILL) and reaped when dropped before [`GleakChild::wait`].
pub struct GleakChild {
    child: Child,
    args: Vec<String>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl GleakChild {
    /// Starts `bin <args>` (a gleak binary, possibly a copy of
    /// [`gleak_bin`]); `configure` may adjust the command before it is
    /// spawned (environment, `uid`/`gid`, working directory).
    pub fn spawn(bin: &Path, args: &[&str], configure: impl FnOnce(&mut Command)) -> GleakChild {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (stdout, stdout_reader) = collect_in_background(child.stdout.take().expect("stdout is piped"));
        let (stderr, stderr_reader) = collect_in_background(child.stderr.take().expect("stderr is piped"));
        GleakChild {
            child,
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout,
            stdout_reader: Some(stdout_reader),
            stderr,
            stderr_reader: Some(stderr_reader),
            status: None,
        }
    }

    /// gleak's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stderr printed so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Waits up to `timeout` until a whole line of stderr contains `needle` (e.g.
    /// gleak's banner "tracing PID"). False if none did, or gleak exited first.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_stderr_line(needle, timeout).is_some()
    }

    /// Waits up to `timeout` for a whole line of stderr (ended by its newline) that
    /// contains `needle`, and returns it. gleak writes each line at once, but the
    /// reader thread may take a line in two reads, and a traced command's output
    /// shares the pipe: the text after `needle` may not have arrived yet.
    pub fn wait_for_stderr_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let whole_line = |text: &str| {
            let at = text.find(needle)?;
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = at + text[at..].find('\n')?;
            Some(text[start..end].to_string())
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = whole_line(&self.stderr_text()) {
                return Some(line);
            }
            if self.try_wait().is_some() {
                // Exited: whatever it printed is (nearly) all in; look once more.
                if let Some(h) = self.stderr_reader.take() {
                    let _ = h.join();
                }
                return whole_line(&self.stderr_text());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `Signal::SIGINT`) to gleak, our own not yet reaped child.
    pub fn signal(&self, signal: Signal) {
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(self.pid() as i32), signal) {
            panic!("kill({}, {signal}): {e}", self.pid());
        }
    }

    /// gleak's exit status if it has exited (reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waiting for gleak");
        }
        self.status
    }

    /// Waits for gleak to exit and returns what it printed. After `timeout`,
    /// kills it and panics with its output.
    pub fn wait(mut self, timeout: Duration) -> GleakRun {
        let deadline = Instant::now() + timeout;
        let (status, timed_out) = loop {
            match self.try_wait() {
                Some(status) => break (status, false),
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    break (self.child.wait().expect("wait for gleak"), true);
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        };
        self.status = Some(status);
        // A command gleak left running (`gleak run --leave-running`) still holds
        // the pipes: everything gleak wrote is in them, but no end of file comes.
        // Read until the readers go quiet instead of waiting for it.
        let readers = [self.stdout_reader.take(), self.stderr_reader.take()];
        let total = || lock(&self.stdout).len() + lock(&self.stderr).len();
        let (mut seen, mut quiet_since) = (total(), Instant::now());
        while readers.iter().flatten().any(|h| !h.is_finished()) && quiet_since.elapsed() < PIPE_QUIET {
            thread::sleep(Duration::from_millis(10));
            if total() != seen {
                (seen, quiet_since) = (total(), Instant::now());
            }
        }
        let run = GleakRun {
            args: std::mem::take(&mut self.args),
            status,
            stdout: String::from_utf8_lossy(&lock(&self.stdout)).into_owned(),
            stderr: self.stderr_text(),
        };
        if timed_out {
            panic!("gleak still running after {timeout:?}, killed it\n{run}");
        }
        run
    }
}

impl Drop for GleakChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses a duration as gleak takes them: `humantime`'s syntax (`5s`, `500ms`,
/// `2m`, `1h 30m`) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).ok(),
        Err(_) => humantime::parse_duration(s).ok(),
    }
}

/// The value of `--duration` in `args` (`--duration 5s` or `--duration=5s`).
fn duration_arg(args: &[&str]) -> Option<Duration> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--duration" || *a == "-d" {
            return it.next().and_then(|v| parse_duration(v));
        }
        if let Some(v) = a.strip_prefix("--duration=") {
            return parse_duration(v);
        }
    }
    None
}

/// Parses newline-delimited JSON: one document per non-empty line.
pub fn parse_json_lines(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l.trim()).map_err(|e| {
                format!(
                    "stdout line {} is not one JSON document ({e}); reports must be newline-delimited JSON: {l}",
                    i + 1
                )
            })
        })
        .collect()
}

/// Runs `gleak attach -p <pid> --json <args>` and returns its reports, one per
/// stdout line. Panics, with gleak's stderr, if gleak exits non-zero, prints
/// something that is not newline-delimited JSON, or overruns `--duration` by
/// more than [`GLEAK_GRACE`] (120 s without `--duration`).
pub fn run_gleak_attach(pid: u32, args: &[&str]) -> Vec<Value> {
    let pid = pid.to_string();
    let mut full = vec!["attach", "-p", pid.as_str(), "--json"];
    full.extend_from_slice(args);
    let timeout = duration_arg(args).map_or(Duration::from_secs(120), |d| d + GLEAK_GRACE);
    let run = run_gleak(&full, timeout);
    if !run.status.success() {
        panic!("gleak failed\n{run}");
    }
    parse_json_lines(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
}

/// Runs `gleak run <opts> -- <program> <program_args>` to completion and
/// returns what it printed and its exit status, whatever that is (the tests
/// check it). Panics if gleak overruns `--duration` in `opts` by more than
/// [`GLEAK_GRACE`] (120 s without `--duration`).
pub fn run_gleak_run(opts: &[&str], program: &Path, program_args: &[&str]) -> GleakRun {
    let program = program.to_string_lossy();
    let mut full = vec!["run"];
    full.extend_from_slice(opts);
    full.push("--");
    full.push(&program);
    full.extend_from_slice(program_args);
    let timeout = duration_arg(opts).map_or(Duration::from_secs(120), |d| d + GLEAK_GRACE);
    run_gleak(&full, timeout)
}

/// The JSON reports on gleak's stdout: every line starting with `{`, each of
/// which must be one JSON document. Other lines are ignored: under `gleak run`
/// they may be the command's own output (a Go test binary prints `PASS`).
pub fn json_reports(run: &GleakRun) -> Vec<Value> {
    run.stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| {
            serde_json::from_str(l.trim())
                .unwrap_or_else(|e| panic!("stdout line is not one JSON document ({e}): {l}\n{run}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Report schema (docs/report.schema.json)
// ---------------------------------------------------------------------------

/// `docs/report.schema.json`: the JSON Schema (draft 2020-12) of a report.
pub fn report_schema_path() -> PathBuf {
    workspace_root().join("docs/report.schema.json")
}

fn report_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = report_schema_path();
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let schema: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
    })
}

/// Validates one report against `docs/report.schema.json`. The error lists
/// every violation (instance path: message), at most 20.
pub fn validate_report(report: &Value) -> Result<(), String> {
    let errors: Vec<String> = report_validator()
        .iter_errors(report)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let n = errors.len();
    let mut msg = errors.into_iter().take(20).collect::<Vec<_>>().join("\n  ");
    if n > 20 {
        msg.push_str(&format!("\n  ... {} more", n - 20));
    }
    Err(format!("{n} schema violation(s):\n  {msg}"))
}

/// Panics unless every report validates against `docs/report.schema.json`.
pub fn check_reports_schema(reports: &[Value]) {
    for (i, r) in reports.iter().enumerate() {
        if let Err(e) = validate_report(r) {
            panic!("report {i} of {} does not match {}: {e}\n{r}", reports.len(), report_schema_path().display());
        }
    }
}

/// Checks the reports of one `gleak run --json`: at least one, each valid
/// against the schema with `mode` "run", one `pid` throughout, `elapsed_s`
/// non-decreasing, `final` on exactly the last, which carries the `gate`.
pub fn check_run_reports(reports: &[Value], run: &GleakRun) {
    assert!(!reports.is_empty(), "gleak run --json printed no report\n{run}");
    check_reports_schema(reports);
    let pid = &reports[0]["pid"];
    let mut prev = 0.0;
    for (i, r) in reports.iter().enumerate() {
        let is_last = i + 1 == reports.len();
        assert_eq!(r["mode"], "run", "report {i}: `mode`\n{r}");
        assert_eq!(&r["pid"], pid, "report {i}: `pid` changed\n{r}");
        assert_eq!(r["final"].as_bool(), Some(is_last), "report {i}: `final`\n{r}");
        let elapsed = r["elapsed_s"].as_f64().unwrap_or(-1.0);
        assert!(elapsed >= prev, "report {i}: `elapsed_s` went backwards\n{r}");
        prev = elapsed;
    }
    let last = &reports[reports.len() - 1];
    assert!(last["gate"].is_object(), "the final report has no `gate`\n{last}");
}

// ---------------------------------------------------------------------------
// Reading reports
// ---------------------------------------------------------------------------

/// `report["sites"]` as a slice (empty if missing).
pub fn sites(report: &Value) -> &[Value] {
    report["sites"].as_array().map_or(&[], Vec::as_slice)
}

/// The site in `report["sites"]` whose `file` ends with `file_suffix` and
/// whose `line` equals `line`.
pub fn find_site<'a>(report: &'a Value, file_suffix: &str, line: u32) -> Option<&'a Value> {
    sites(report).iter().find(|s| {
        s["file"].as_str().is_some_and(|f| f.ends_with(file_suffix)) && s["line"].as_u64() == Some(u64::from(line))
    })
}

/// `v[key]` as an unsigned integer; panics naming the key otherwise.
pub fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("`{key}` is not an unsigned integer in {v}"))
}

/// `live` of the site at `file_suffix:line`, 0 when the report has no such site.
pub fn site_live(report: &Value, file_suffix: &str, line: u32) -> u64 {
    find_site(report, file_suffix, line).map_or(0, |s| count(s, "live"))
}

/// The site of `fx`'s `// <marker>` in `report`, if reported.
pub fn marker_site<'a>(report: &'a Value, fx: &Fixture, marker: &str) -> Option<&'a Value> {
    find_site(report, &fx.file_suffix(), fx.marker_line(marker))
}

/// The line a site's blocked goroutines are stuck at, by its busiest blocking
/// stack (`blocked_at[0].at`): (file, line, wait reason).
pub fn blocked_line(site: &Value) -> Option<(String, u32, String)> {
    let b = site["blocked_at"].get(0)?;
    Some((
        b["at"]["file"].as_str()?.to_string(),
        u32::try_from(b["at"]["line"].as_u64()?).ok()?,
        b["wait_reason"].as_str()?.to_string(),
    ))
}

/// A site's `verdict` ("" when missing).
pub fn verdict(site: &Value) -> &str {
    site["verdict"].as_str().unwrap_or_default()
}

/// The functions of a stack (`[Frame]`), innermost first.
pub fn stack_functions(stack: &Value) -> Vec<&str> {
    stack
        .as_array()
        .map(|frames| frames.iter().map(|f| f["function"].as_str().unwrap_or("?")).collect())
        .unwrap_or_default()
}

/// One line per site (the first `max`), for failure messages.
pub fn describe_sites(report: &Value, max: usize) -> String {
    let all = sites(report);
    let mut out: Vec<String> = all
        .iter()
        .take(max)
        .map(|s| {
            let mut line = format!(
                "  {}:{} {} live={} created={} exited={} wait_reasons={}",
                s["file"].as_str().unwrap_or("?"),
                s["line"],
                s["function"].as_str().unwrap_or("?"),
                s["live"],
                s["created"],
                s["exited"],
                s["wait_reasons"]
            );
            if !s["verdict"].is_null() {
                line.push_str(&format!(
                    " preexisting={} blocked={} trend={} verdict={} ({})",
                    s["preexisting"],
                    s["blocked"],
                    s["trend"],
                    s["verdict"],
                    s["verdict_reason"].as_str().unwrap_or("?")
                ));
            }
            line
        })
        .collect();
    if all.len() > max {
        out.push(format!("  ... {} more", all.len() - max));
    }
    if out.is_empty() {
        out.push("  (no sites)".into());
    }
    format!(
        "report elapsed_s={} totals={} lost_events={} proof={}:\n{}",
        report["elapsed_s"],
        report["totals"],
        report["lost_events"],
        report["proof"],
        out.join("\n")
    )
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn check_site(s: &Value) -> Result<(), String> {
    check(s.is_object(), || "site is not an object".into())?;
    for k in ["function", "file"] {
        check(s[k].is_string(), || format!("site `{k}` is not a string"))?;
    }
    for k in ["line", "live", "created", "exited"] {
        check(s[k].is_u64(), || format!("site `{k}` is not an unsigned integer"))?;
    }
    check(s["go_func"].is_string() || s["go_func"].is_null(), || "site `go_func` is neither a string nor null".into())?;
    check(s["oldest_age_s"].is_number() || s["oldest_age_s"].is_null(), || {
        "site `oldest_age_s` is neither a number nor null".into()
    })?;
    let reasons = s["wait_reasons"].as_object().ok_or("site `wait_reasons` is not an object")?;
    check(reasons.values().all(Value::is_u64), || "site `wait_reasons` has a non-integer count".into())?;
    match &s["top_wait_reason"] {
        Value::Null => {}
        Value::String(top) => {
            let top_n = reasons
                .get(top)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("site `top_wait_reason` {top:?} is not a key of `wait_reasons`"))?;
            check(reasons.values().all(|n| n.as_u64().unwrap_or(0) <= top_n), || {
                format!("site `top_wait_reason` {top:?} is not the most frequent reason")
            })?;
        }
        _ => return Err("site `top_wait_reason` is neither a string nor null".into()),
    }
    let stack = s["stack"].as_array().ok_or("site `stack` is not an array")?;
    for frame in stack {
        check(frame["function"].is_string() && frame["file"].is_string() && frame["line"].is_u64(), || {
            format!("stack frame {frame} lacks function/file/line")
        })?;
    }
    Ok(())
}

fn check_report(r: &Value, pid: u32, is_last: bool, prev_elapsed: f64) -> Result<f64, String> {
    check(r.is_object(), || "report is not a JSON object".into())?;
    check(r["pid"].as_u64() == Some(u64::from(pid)), || format!("`pid` is {} instead of {pid}", r["pid"]))?;
    check(r["binary"].is_string(), || "`binary` is not a string".into())?;
    check(r["go_version"].as_str().is_some_and(|v| v.starts_with("go")), || {
        "`go_version` is not a string starting with \"go\"".into()
    })?;
    let elapsed = r["elapsed_s"].as_f64().ok_or("`elapsed_s` is not a number")?;
    check(elapsed >= prev_elapsed, || format!("`elapsed_s` went backwards ({prev_elapsed} -> {elapsed})"))?;
    check(r["final"].as_bool() == Some(is_last), || {
        format!("`final` is {} but this is {} report", r["final"], if is_last { "the last" } else { "not the last" })
    })?;
    for k in ["created", "exited", "live"] {
        check(r["totals"][k].is_u64(), || format!("`totals.{k}` is not an unsigned integer"))?;
    }
    check(r["lost_events"].is_u64(), || "`lost_events` is not an unsigned integer".into())?;
    let sites = r["sites"].as_array().ok_or("`sites` is not an array")?;
    for (i, s) in sites.iter().enumerate() {
        check_site(s).map_err(|e| format!("sites[{i}]: {e}"))?;
    }
    check(sites.windows(2).all(|w| w[0]["live"].as_u64() >= w[1]["live"].as_u64()), || {
        "`sites` is not sorted by `live` descending".into()
    })?;
    Ok(elapsed)
}

/// Checks every report against the JSON schema: field types, `pid`, `final`
/// set on exactly the last report, `elapsed_s` non-decreasing, sites sorted
/// by `live` descending, `top_wait_reason` consistent with `wait_reasons`.
pub fn check_report_stream(reports: &[Value], pid: u32) {
    assert!(!reports.is_empty(), "gleak printed no report");
    let mut prev = 0.0;
    for (i, r) in reports.iter().enumerate() {
        match check_report(r, pid, i + 1 == reports.len(), prev) {
            Ok(e) => prev = e,
            Err(e) => panic!("report {i} of {} violates the schema: {e}\n{r}", reports.len()),
        }
    }
}

/// Checks that the reports describe `fixture`'s process: `binary` is its
/// binary, `go_version` its toolchain's, and no site points into another
/// fixture's source (which would mean gleak mixed up processes).
pub fn check_reports_target(reports: &[Value], fixture: &Fixture) {
    let want_bin = fs::canonicalize(&fixture.binary).unwrap_or_else(|_| fixture.binary.clone());
    let own = fixture.file_suffix();
    for (i, r) in reports.iter().enumerate() {
        let bin = r["binary"].as_str().unwrap_or_default();
        let got_bin = fs::canonicalize(bin).unwrap_or_else(|_| PathBuf::from(bin));
        assert_eq!(got_bin, want_bin, "report {i}: `binary` is not the traced fixture");
        let gv = r["go_version"].as_str().unwrap_or_default();
        assert!(
            fixture.toolchain.matches_go_version(gv),
            "report {i}: `go_version` {gv:?} does not match {}",
            fixture.toolchain
        );
        for s in sites(r) {
            let file = s["file"].as_str().unwrap_or_default();
            let foreign =
                (file.contains("/tests/fixtures/") || file.contains("/examples/demo/")) && !file.ends_with(&own);
            assert!(!foreign, "report {i}: site {file}:{} belongs to another program than {fixture}", s["line"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s 500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(duration_arg(&["--interval", "1s", "--duration", "4s"]), Some(Duration::from_secs(4)));
        assert_eq!(duration_arg(&["--duration=2s"]), Some(Duration::from_secs(2)));
        assert_eq!(duration_arg(&["--interval", "1s"]), None);
    }

    #[test]
    fn ndjson() {
        let v = parse_json_lines("{\"a\":1}\n\n{\"a\":2}\n").unwrap();
        assert_eq!(v.len(), 2);
        assert!(parse_json_lines("{\"a\":\n1}\n").is_err());
    }

    #[test]
    fn markers_are_unique_and_on_go_lines() {
        for (name, markers) in [
            ("chan_send", &["LEAK:chan_send"][..]),
            ("waitgroup", &["LEAK:wg_wait", "OK:wg_worker"][..]),
            ("context_leak", &["LEAK:ctx_never_cancelled"][..]),
            ("churn", &["OK:churn", "OK:pool"][..]),
            (
                "mixed",
                &["LEAK:chan_send", "LEAK:wg_wait", "OK:wg_worker", "LEAK:ctx_never_cancelled", "OK:churn", "OK:pool"]
                    [..],
            ),
        ] {
            for m in markers {
                assert!(marker_line(name, m) > 1, "{name} {m}");
            }
        }
        for (name, markers) in [
            ("preattach", &["LEAK:preattach"][..]),
            ("pool", &["STABLE:pool", "STABLE:ticker", "STABLE:select_loop"][..]),
            ("slowleak", &["STABLE:population", "LEAK:slow"][..]),
            ("twopaths", &["LEAK:twopaths"][..]),
            ("nilchan", &["LEAK:nilchan", "LEAK:selectnone"][..]),
            ("gate_leaky", &["LEAK:gate"][..]),
            ("gate_clean", &["OK:gate_clean"][..]),
            ("gate_exit3", &["OK:gate_exit3"][..]),
            ("gate_forever", &["LEAK:forever", "OK:forever_churn"][..]),
            ("gate_forever_clean", &["OK:forever_clean"][..]),
            ("short_lived", &["LEAK:short_lived"][..]),
        ] {
            for m in markers {
                assert!(marker_line(name, m) > 1, "{name} {m}");
            }
        }
        let gotest = fixtures_dir().join("gotest/leaky_test.go");
        for m in ["LEAK:gotest", "OK:gotest_clean"] {
            assert!(marker_line_in(&gotest, m) > 1, "gotest {m}");
        }
        for m in ["LEAK:pricing", "OK:cache_pool", "OK:log_writer", "OK:request"] {
            assert!(marker_line_in(&demo_source(), m) > 1);
        }
        // "// LEAK:chan_send" must not match a longer marker or a doc comment.
        assert_eq!(marker_line("mixed", "// LEAK:chan_send"), marker_line("mixed", "LEAK:chan_send"));
    }

    #[test]
    fn site_lookup_and_schema() {
        let r: Value = serde_json::from_str(
            r#"{"pid": 7, "binary": "/x", "go_version": "go1.23.9", "elapsed_s": 1.0, "final": true,
                "totals": {"created": 3, "exited": 1, "live": 2}, "lost_events": 0,
                "sites": [{"function": "main.f", "file": "/a/tests/fixtures/chan_send.go", "line": 34,
                           "go_func": "main.f.func1", "live": 2, "created": 3, "exited": 1,
                           "oldest_age_s": 0.9, "top_wait_reason": "chan send",
                           "wait_reasons": {"chan send": 2},
                           "stack": [{"function": "main.f", "file": "/a/x.go", "line": 1}]}]}"#,
        )
        .unwrap();
        check_report_stream(std::slice::from_ref(&r), 7);
        assert!(find_site(&r, "fixtures/chan_send.go", 34).is_some());
        assert!(find_site(&r, "fixtures/chan_send.go", 35).is_none());
        assert_eq!(site_live(&r, "fixtures/chan_send.go", 34), 2);
        let tc = GoToolchain { version: "1.19".into(), go: "/usr/lib/go-1.19/bin/go".into() };
        assert!(tc.matches_go_version("go1.19.8"));
        assert!(tc.matches_go_version("go1.19"));
        assert!(!tc.matches_go_version("go1.190"));
    }

    fn frame(function: &str, line: u64) -> Value {
        serde_json::json!({"function": function, "file": "/a/tests/fixtures/x.go", "line": line})
    }

    /// A complete v2 site, every field present.
    fn v2_site() -> Value {
        serde_json::json!({
            "verdict": "leak", "verdict_reason": "growing 10/s, blocked in chan send for 5s",
            "function": "main.f", "file": "/a/tests/fixtures/x.go", "line": 34,
            "go_func": "main.f.func1", "pc": "0x4b5e9e", "fingerprint": "main.f | main.f.func1 | main.f.func1",
            "live": 2, "created": 3, "exited": 1, "preexisting": 0, "adopted": 0,
            "trend": {"window_s": 6.0, "live_start": 0, "live_end": 2, "live_per_s": 0.33, "live_series": [0, 1, 2, 2]},
            "rates": {"created_per_s": 0.5, "exited_per_s": 0.16},
            "oldest_age_s": 5.5,
            "age_s": {"p50": 3.0, "p90": 5.0, "p99": 5.5, "max": 5.5},
            "blocked": 2,
            "blocked_s": {"p50": 2.9, "p90": 4.9, "p99": 5.4, "max": 5.4},
            "top_wait_reason": "chan send", "wait_reasons": {"chan send": 2},
            "states": {"waiting": 2}, "stack_bytes": 16384, "lifetime_p50_ms": 1.5,
            "stack": [frame("main.f", 34), frame("main.main", 50)],
            "paths": [{"live": 2, "created": 3, "stack": [frame("main.f", 34), frame("main.main", 50)]}],
            "parent_chain": [frame("runtime.main", 250)],
            "blocked_at": [{"goroutines": 2, "wait_reason": "chan send", "at": frame("main.f.func1", 35),
                            "stack": [frame("runtime.gopark", 424), frame("main.f.func1", 35)]}],
            "wait_objects": null, "proven": 0,
            "goroutines": [{"goid": 7, "state": "waiting", "wait_reason": "chan send",
                            "blocked_s": null, "age_s": 1.5, "g_addr": "0xc000007340"}]
        })
    }

    fn v2_report(mode: &str) -> Value {
        let mut r = serde_json::json!({
            "pid": 7, "binary": "/x", "go_version": "go1.26.6", "mode": mode,
            "elapsed_s": 6.0, "final": true, "target_exited": false,
            "totals": {"created": 3, "exited": 1, "live": 2, "preexisting": 0},
            "lost_events": 0, "reconciled_exits": 0, "reconciled_creations": 0,
            "kernel": {"ringbuf_full": 0, "read_failed": 0, "field_read_failed": 0, "no_config": 0, "stack_failed": 0, "exits_lost": 0},
            "runtime_facts": {"functions": ".gopclntab", "layout": "gleak's Go 1.26 table",
                              "wait_reasons": "gleak's Go 1.26 table", "lines": ".gopclntab",
                              "goroutine_table": "from runtime.allgadd's code",
                              "semaphore_table": "from runtime.semacquire1's code", "heap": "from mallocinit's code",
                              "memory_limit": "gleak's Go 1.26 table"},
            "gaps": [], "ns_pid": null,
            "sites": [v2_site()],
            "some_future_field": {"ignored": true}
        });
        if mode == "run" {
            r["gate"] = serde_json::json!({
                "fail_on": "leak", "failed": true, "leaked_goroutines": 2,
                "command_status": 0, "exit_code": 1, "stopped_at_deadline": false,
                "interrupted": false, "fail_on_outlived": false, "outlived_goroutines": 0,
                "failed_tests": []
            });
        }
        r
    }

    #[test]
    fn report_schema_accepts_v2() {
        for mode in ["attach", "run"] {
            let r = v2_report(mode);
            validate_report(&r).unwrap_or_else(|e| panic!("{mode}: {e}"));
            check_report_stream(std::slice::from_ref(&r), 7);
        }
        // Nullable fields.
        let mut r = v2_report("run");
        let site = &mut r["sites"][0];
        for k in ["oldest_age_s", "age_s", "blocked_s", "top_wait_reason", "lifetime_p50_ms"] {
            site[k] = Value::Null;
        }
        site["wait_reasons"] = serde_json::json!({});
        site["parent_chain"] = serde_json::json!([]);
        r["gate"]["command_status"] = Value::Null;
        validate_report(&r).unwrap();
        // A non-final run report need not carry the gate yet.
        let mut r = v2_report("run");
        r["final"] = Value::Bool(false);
        r.as_object_mut().unwrap().remove("gate");
        validate_report(&r).unwrap();
    }

    #[test]
    fn report_schema_rejects() {
        let bad = |what: &str, f: &dyn Fn(&mut Value)| {
            let mut r = v2_report("run");
            f(&mut r);
            assert!(validate_report(&r).is_err(), "accepted: {what}\n{r}");
        };
        bad("unknown verdict", &|r| r["sites"][0]["verdict"] = "maybe".into());
        bad("empty verdict_reason", &|r| r["sites"][0]["verdict_reason"] = "".into());
        bad("missing preexisting", &|r| {
            r["sites"][0].as_object_mut().unwrap().remove("preexisting");
        });
        bad("negative live", &|r| r["sites"][0]["live"] = (-1).into());
        bad("pc not hex", &|r| r["sites"][0]["pc"] = "4b5e9e".into());
        bad("unknown mode", &|r| r["mode"] = "watch".into());
        bad("frame without line", &|r| {
            r["sites"][0]["paths"][0]["stack"][0].as_object_mut().unwrap().remove("line");
        });
        bad("incomplete percentiles", &|r| r["sites"][0]["blocked_s"] = serde_json::json!({"max": 1.0}));
        bad("final run report without gate", &|r| {
            r.as_object_mut().unwrap().remove("gate");
        });
        bad("fail_on ok", &|r| r["gate"]["fail_on"] = "ok".into());
        bad("totals without preexisting", &|r| {
            r["totals"].as_object_mut().unwrap().remove("preexisting");
        });
        // A v1 report (gleak before verdicts) is not a v2 report.
        let v1: Value = serde_json::from_str(
            r#"{"pid": 7, "binary": "/x", "go_version": "go1.23.9", "elapsed_s": 1.0, "final": true,
                "totals": {"created": 3, "exited": 1, "live": 2}, "lost_events": 0, "sites": []}"#,
        )
        .unwrap();
        let err = validate_report(&v1).unwrap_err();
        assert!(err.contains("mode"), "{err}");
    }

    #[test]
    fn reports_among_program_output() {
        let run = GleakRun {
            args: vec![],
            status: ExitStatus::from_raw(1 << 8),
            stdout: format!("PASS\n{}\n", v2_report("run")),
            stderr: String::new(),
        };
        assert_eq!(run.code(), Some(1));
        let reports = json_reports(&run);
        assert_eq!(reports.len(), 1);
        check_run_reports(&reports, &run);
        assert_eq!(verdict(&sites(&reports[0])[0]), "leak");
        assert_eq!(stack_functions(&sites(&reports[0])[0]["stack"]), ["main.f", "main.main"]);
    }
}
