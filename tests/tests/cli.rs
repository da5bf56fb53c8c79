//! End-to-end: the gleak binary on bad input and on interruption. Every error
//! exits with its documented code (`gleak --help`) and a message that names the
//! problem and what to do, and nothing
//! ever panics or prints a backtrace; Ctrl-C and a target that exits by itself
//! end `gleak attach` cleanly with a final report.
//!
//! The argument errors run as any user; everything else needs root (and a
//! release build of gleak, `cargo build --release`, or GLEAK_BIN).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use gleak_tests::*;

/// Upper bound for gleak to fail on bad input: it has nothing to wait for.
const ERROR_TIMEOUT: Duration = Duration::from_secs(30);

/// How long gleak may take to attach (print its "tracing PID" banner).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a clean error never prints.
const PANIC_MARKERS: &[&str] = &["panicked", "RUST_BACKTRACE", "stack backtrace"];

/// `gleak`'s stderr shows no panic and no backtrace.
fn assert_no_panic(run: &GleakRun) {
    let lower = run.stderr.to_lowercase();
    for marker in PANIC_MARKERS {
        assert!(!lower.contains(&marker.to_lowercase()), "gleak's stderr contains {marker:?}\n{run}");
    }
}

/// gleak exited with `code`, its stderr mentions every one of `words`
/// (case-insensitive), and it did not panic.
fn assert_fails(run: &GleakRun, code: i32, words: &[&str]) {
    assert_eq!(run.code(), Some(code), "exit code\n{run}");
    let lower = run.stderr.to_lowercase();
    for w in words {
        assert!(lower.contains(&w.to_lowercase()), "gleak's stderr does not mention {w:?}\n{run}");
    }
    assert_no_panic(run);
}

/// Runs gleak with `RUST_BACKTRACE=1`, so that a panic, or an error printed
/// with its backtrace, would show one.
fn gleak_with_backtrace(args: &[&str]) -> GleakRun {
    let run = GleakChild::spawn(&gleak_bin(), args, |cmd| {
        cmd.env("RUST_BACKTRACE", "1").env("RUST_LIB_BACKTRACE", "1");
    });
    run.wait(ERROR_TIMEOUT)
}

/// PIDs of every process (zombies included) whose command name is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter(|p| p.stat().is_ok_and(|stat| stat.comm == comm))
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect()
}

/// A directory of its own under the temp dir, mode 0755 (traversable by
/// every user), removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gleak-cli-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// Copies the executable `src` into the directory as `name`, mode 0755.
    /// By `install`, a process of its own: a file this (multi-threaded) test
    /// process had open for writing could be inherited by a child another
    /// test thread forks at that moment, and exec'ing it would then fail
    /// with ETXTBSY.
    fn install(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.0.join(name);
        let status = Command::new("install")
            .arg("-m")
            .arg("0755")
            .arg(src)
            .arg(&dst)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run install: {e}"));
        assert!(status.success(), "install {} {}: {status}", src.display(), dst.display());
        dst
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Bad targets
// ---------------------------------------------------------------------------

#[test]
fn attach_missing_pid() {
    if !require_root() {
        return;
    }
    // A PID that just existed and is gone (reaped) now.
    let mut child = Command::new("true").stdin(Stdio::null()).spawn().expect("run `true`");
    let pid = child.id();
    child.wait().expect("wait for `true`");
    assert_eq!(proc_state(pid), None, "PID {pid} of `true` still exists");
    let pid = pid.to_string();
    let run = gleak_with_backtrace(&["attach", "-p", &pid]);
    assert_fails(&run, 3, &["no process", &pid]);
}

#[test]
fn attach_not_go() {
    if !require_root() {
        return;
    }
    let mut sleep = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().expect("run `sleep 30`");
    let pid = sleep.id().to_string();
    let run = gleak_with_backtrace(&["attach", "-p", &pid]);
    let alive = matches!(sleep.try_wait(), Ok(None));
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_fails(&run, 4, &["not a Go program", "sleep"]);
    assert!(alive, "`sleep 30` did not survive gleak's attempt\n{run}");
}

/// A copy of a fixture binary with every `from` replaced by `to` (same length) in its
/// bytes, started; gleak refuses it with `code` and a message naming `words`, and
/// the program keeps running.
fn attach_refused(variant: Variant, from: &[u8], to: &[u8], code: i32, words: &[&str]) {
    assert_eq!(from.len(), to.len());
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let mut bytes = fs::read(build_fixture_variant(&tc, "chan_send", variant)).unwrap();
    // Every occurrence: the version is in `.go.buildinfo` and in `runtime.buildVersion`.
    let hits: Vec<usize> = bytes.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(i, _)| i).collect();
    assert!(!hits.is_empty(), "{from:?} is not in the binary");
    for at in hits {
        bytes[at..at + to.len()].copy_from_slice(to);
    }
    let dir = TempDir::new(&format!("refused{code}"));
    let src = dir.0.join("patched.tmp");
    fs::write(&src, &bytes).unwrap();
    let bin = dir.install(&src, "patched");
    let mut proc = RunningGo::spawn(&bin, &[], "ready");
    let pid = proc.pid().to_string();
    let run = gleak_with_backtrace(&["attach", "-p", &pid]);
    let mut all = vec!["patched"];
    all.extend_from_slice(words);
    assert_fails(&run, code, &all);
    proc.assert_running("after gleak refused it");
}

/// The version in `.go.buildinfo` is what gleak goes by.
#[test]
fn attach_go_too_old() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let version = format!("go{}", tc.version);
    let older = format!("go1.17{}", &version["go1.17".len()..]);
    attach_refused(Variant::Stripped, version.as_bytes(), older.as_bytes(), 4, &["go1.17", "Go 1.19 and later"]);
}

/// A release newer than gleak's tables, without DWARF to read the layout from.
#[test]
fn attach_unknown_release_without_dwarf() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let version = format!("go{}", tc.version);
    let newer = format!("go1.99{}", &version["go1.99".len()..]);
    attach_refused(Variant::Stripped, version.as_bytes(), newer.as_bytes(), 4, &["go1.99", "newer", "DWARF"]);
}

/// The function a probe needs is not in the binary (its name in `.gopclntab` is
/// corrupted): refused before any probe is placed.
#[test]
fn attach_probe_point_missing() {
    if !require_root() {
        return;
    }
    attach_refused(
        Variant::Stripped,
        b"runtime.newproc1\0",
        b"runtime.newprocX\0",
        7,
        &["runtime.newproc1", "not found"],
    );
}

#[test]
fn not_root() {
    if !require_root() {
        return; // Only root can become `nobody`.
    }
    // A copy the user nobody can reach and execute, wherever the build is.
    let dir = TempDir::new("nobody");
    let bin = dir.install(&gleak_bin(), "gleak");
    let me = std::process::id().to_string();
    let run = GleakChild::spawn(&bin, &["attach", "-p", &me], |cmd| {
        cmd.uid(65534).gid(65534).current_dir("/").env("RUST_BACKTRACE", "1");
        // std drops the supplementary groups itself (setgroups(0)) when
        // root sets a uid.
    })
    .wait(ERROR_TIMEOUT);
    assert_fails(&run, 5, &["root", "sudo", "CAP_BPF"]);
    assert!(run.stdout.is_empty(), "stdout is not empty\n{run}");
}

// ---------------------------------------------------------------------------
// Bad arguments (parsed before anything else: any user)
// ---------------------------------------------------------------------------

#[test]
fn bad_arguments() {
    let run = gleak_with_backtrace(&["attach"]);
    assert_fails(&run, 2, &["--pid", "required"]);

    let run = gleak_with_backtrace(&["attach", "-p", "1", "--duration", "5parsecs"]);
    assert_fails(&run, 2, &["5parsecs", "unit", "--duration"]);

    let run = gleak_with_backtrace(&["attach", "-p", "1", "--duration", "5y"]);
    assert_fails(&run, 2, &["5y", "too long", "--duration"]);

    let run = gleak_with_backtrace(&["attach", "-p", "not-a-pid"]);
    assert_fails(&run, 2, &["not-a-pid", "--pid"]);

    for args in [&["run"][..], &["run", "--"][..], &["run", "--json"][..]] {
        let run = gleak_with_backtrace(args);
        assert_fails(&run, 2, &["required", "COMMAND"]);
    }

    for run in [gleak_with_backtrace(&[]), gleak_with_backtrace(&["watch"])] {
        assert_eq!(run.code(), Some(2), "{run}");
        assert_no_panic(&run);
    }
}

// ---------------------------------------------------------------------------
// gleak run: commands that cannot be traced
// ---------------------------------------------------------------------------

#[test]
fn run_missing_program() {
    if !require_root() {
        return;
    }
    let run = gleak_with_backtrace(&["run", "--", "/nonexistent/program", "arg"]);
    assert_fails(&run, 2, &["/nonexistent/program", "cannot start"]);
}

#[test]
fn run_not_go() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let run = gleak_with_backtrace(&["run", "--", "/bin/true"]);
    assert_fails(&run, 4, &["not a Go program", "true"]);
    // A child left stopped under ptrace would hold gleak (or its pipes) up.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gleak took {:?} to refuse /bin/true\n{run}",
        started.elapsed()
    );

    // The same with a copy of `true` under a name of our own, to see whether
    // gleak left the started command behind (stopped, orphaned or a zombie).
    let dir = TempDir::new("notgo");
    let name = format!("notgo{}", std::process::id());
    let prog = dir.install(Path::new("/bin/true"), &name);
    let prog_arg = prog.to_string_lossy().into_owned();
    let run = gleak_with_backtrace(&["run", "--", &prog_arg]);
    assert_fails(&run, 4, &["not a Go program", &name]);
    let mut left = pids_named(&name);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !left.is_empty() && Instant::now() < deadline {
        // An orphan that init has not reaped yet: give it a moment.
        thread::sleep(Duration::from_millis(50));
        left = pids_named(&name);
    }
    assert!(
        left.is_empty(),
        "gleak left {prog_arg} behind: {:?}\n{run}",
        left.iter().map(|p| (p, proc_state(*p))).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Interruption
// ---------------------------------------------------------------------------

/// Ctrl-C ends `gleak attach` (no `--duration`) with exit 0 and one final
/// report; the target keeps running.
#[test]
fn attach_ctrl_c() {
    if !require_root() {
        return;
    }
    for_each_toolchain("attach_ctrl_c", |tc| {
        let fx = Fixture::build(tc, "chan_send");
        let _serial = serial_guard();
        let mut proc = fx.start();
        let pid = proc.pid();
        let pid_s = pid.to_string();
        let mut gleak = spawn_gleak(&["attach", "-p", &pid_s, "--json", "--interval", "1h"]);
        let banner = format!("tracing PID {pid}");
        assert!(
            gleak.wait_for_stderr(&banner, ATTACH_TIMEOUT),
            "{fx}: no {banner:?} on gleak's stderr within {ATTACH_TIMEOUT:?}:\n{}",
            gleak.stderr_text()
        );
        thread::sleep(Duration::from_secs(2));
        gleak.signal(Signal::SIGINT);
        let run = gleak.wait(Duration::from_secs(5));
        assert_eq!(run.code(), Some(0), "{fx}: exit code after SIGINT\n{run}");
        assert_no_panic(&run);
        proc.assert_running("after gleak was interrupted");

        let reports = only_final_report(&run, pid, &fx);
        let report = &reports[0];
        assert_eq!(report["target_exited"], false, "{fx}: `target_exited` of a running target\n{report}");
        let site = marker_site(report, &fx, "LEAK:chan_send").unwrap_or_else(|| {
            panic!("{fx}: the leak site is missing from the final report\n{}", describe_sites(report, 10))
        });
        assert!(count(site, "live") > 0, "{fx}: live is 0\n{site}");
    });
}

/// The target exits by itself while traced: `gleak attach` (no `--duration`)
/// notices, prints its final report with `target_exited` and exits 0.
#[test]
fn attach_target_exits() {
    if !require_root() {
        return;
    }
    for_each_toolchain("attach_target_exits", |tc| {
        let fx = Fixture::build(tc, "short_lived");
        let _serial = serial_guard();
        let proc = fx.start();
        let pid = proc.pid();
        let pid_s = pid.to_string();
        let mut gleak = spawn_gleak(&["attach", "-p", &pid_s, "--json", "--interval", "1h"]);
        let banner = format!("tracing PID {pid}");
        assert!(
            gleak.wait_for_stderr(&banner, ATTACH_TIMEOUT),
            "{fx}: no {banner:?} on gleak's stderr within {ATTACH_TIMEOUT:?}:\n{}",
            gleak.stderr_text()
        );
        // The fixture stays a zombie (never reaped here) until `proc` drops,
        // so its PID cannot be reused meanwhile.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut target_gone: Option<Instant> = None;
        while gleak.try_wait().is_none() && Instant::now() < deadline {
            if target_gone.is_none() && matches!(proc_state(pid), Some('Z') | None) {
                target_gone = Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let gleak_done = Instant::now();
        let target_gone = target_gone.or_else(|| matches!(proc_state(pid), Some('Z') | None).then_some(gleak_done));
        let run = gleak.wait(Duration::from_secs(5));
        let target_gone = target_gone.unwrap_or_else(|| {
            panic!("{fx}: gleak exited but the target is still running\n{run}\n{}", proc.diagnostics())
        });
        assert!(
            gleak_done.duration_since(target_gone) < Duration::from_secs(3),
            "{fx}: gleak took {:?} to notice that the target exited\n{run}",
            gleak_done.duration_since(target_gone)
        );
        assert_eq!(run.code(), Some(0), "{fx}: exit code\n{run}");
        assert_no_panic(&run);

        let reports = only_final_report(&run, pid, &fx);
        let report = &reports[0];
        assert_eq!(report["target_exited"], true, "{fx}: `target_exited`\n{report}");
        let site = marker_site(report, &fx, "LEAK:short_lived").unwrap_or_else(|| {
            panic!("{fx}: the leak site is missing from the final report\n{}", describe_sites(report, 10))
        });
        assert!(count(site, "created") > 0, "{fx}: nothing created\n{site}");
    });
}

/// The single report gleak printed (interval 1h: just the final one), checked
/// against the schema and the stream invariants.
fn only_final_report(run: &GleakRun, pid: u32, fx: &Fixture) -> Vec<Value> {
    let reports = parse_json_lines(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(reports.len(), 1, "{fx}: want only the final report\n{run}");
    check_report_stream(&reports, pid);
    check_reports_schema(&reports);
    check_reports_target(&reports, fx);
    assert_eq!(reports[0]["final"], true, "{fx}: `final`\n{}", reports[0]);
    reports
}

/// `gleak attach --json | head -1`: the reader takes one report and closes the
/// pipe; gleak detaches and ends quietly with 0, as a filter does, instead of
/// panicking on the closed pipe. The target runs on.
#[test]
fn attach_into_a_closed_pipe_ends_quietly() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let fx = Fixture::build(&tc, "chan_send");
    let _serial = serial_guard();
    let mut proc = fx.start();
    let pid = proc.pid().to_string();
    let mut gleak = Command::new(gleak_bin())
        .args(["attach", "-p", &pid, "--json", "--interval", "1s"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gleak");
    let mut first = String::new();
    {
        let mut stdout = std::io::BufReader::new(gleak.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut first).expect("reading the first report");
        // Dropped here: the pipe's only reader is gone.
    }
    let report: Value = serde_json::from_str(first.trim()).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(report["pid"].to_string(), pid, "{fx}: {report}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = gleak.try_wait().expect("waiting for gleak") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = gleak.kill();
            panic!("{fx}: gleak still runs 20 s after its stdout was closed");
        }
        thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut gleak.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{fx}: exit status on a closed stdout\n{stderr}");
    for marker in PANIC_MARKERS {
        assert!(!stderr.to_lowercase().contains(&marker.to_lowercase()), "{fx}: {marker:?} on stderr\n{stderr}");
    }
    proc.assert_running("after gleak's stdout was closed");
}
