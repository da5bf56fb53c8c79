//! End-to-end: gleak under faults of its own and of its target. SIGTERM, SIGHUP
//! and SIGINT end `gleak attach` and `gleak run` with their final report and a
//! documented exit code (attach 0; run 1 on a leak, else 128 + the signal); `gleak
//! run` judges its command frozen, then passes the signal on; the command never
//! outlives gleak (even a SIGKILLed one) unless `--leave-running`; a terminal's
//! Ctrl-C to the whole foreground group does not kill the command before gleak
//! judges it; a target that is killed, panics or execs ends the trace within a
//! second or two; a PID reused by another process is never taken for the
//! target; a child the target starts is not confused with it.
//!
//! The target is `faults.go` below, written under `$GLEAK_CACHE/faults/` and built
//! with the newest Go toolchain (signal handling does not depend on the release).
//! Needs root and a release build of gleak (`cargo build --release`, or GLEAK_BIN).

use std::fs;
use std::os::unix::process::CommandExt;
use std::thread;
use std::time::{Duration, Instant};

use gleak_tests::*;
use nix::{
    sys::{
        signal::{self, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

/// The Go program under test. Markers as in `tests/fixtures/` (`// LEAK:…` on the
/// `go` statement's line).
const FAULTS_GO: &str = r#"// faults: a small service for gleak's fault tests (tests/tests/faults.rs writes
// this file and builds it).
//
// Every -tick (20ms) a request runs a short-lived goroutine (OK:faults_churn) and,
// while fewer than -leaks have leaked, leaves one blocked forever in "chan send"
// (LEAK:faults). Prints "ready faults" once the loop has started.
//
//	-notify  on SIGINT, SIGTERM or SIGHUP print "faults: got <signal>" on stderr
//	         and exit 0 (without it Go's default handling kills the program)
//	SIGUSR1  exec -exec with argument 3600 (default: this binary again, -leaks 0)
//	SIGUSR2  panic: a fatal, unrecovered panic (exit status 2)
//	-fork    first start a copy of this program with -child, print "child <pid>"
//	-child   be that copy: leak -child-leaks goroutines at LEAK:faults_child, one
//	         per tick, and nothing else; print "ready child"
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

var (
	tick       = flag.Duration("tick", 20*time.Millisecond, "time between requests")
	leaks      = flag.Int("leaks", 0, "leak this many goroutines, one per request")
	notify     = flag.Bool("notify", false, "exit 0 on SIGINT/SIGTERM/SIGHUP, saying so on stderr")
	execTo     = flag.String("exec", "", "program to exec on SIGUSR1 (default: this binary, -leaks 0)")
	fork       = flag.Bool("fork", false, "start a copy of this program with -child first")
	child      = flag.Bool("child", false, "be the copy: leak at the child's site")
	childLeaks = flag.Int("child-leaks", 100000, "goroutines the -child copy leaks")
)

func work() int {
	s := 0
	for i := 0; i < 1000; i++ {
		s += i % 7
	}
	return s
}

func request(leak bool) {
	done := make(chan int)
	go func() { done <- work() }() // OK:faults_churn
	<-done
	if leak {
		stuck := make(chan int)
		go func() { stuck <- work() }() // LEAK:faults
	}
}

func childRequest() {
	stuck := make(chan int)
	go func() { stuck <- work() }() // LEAK:faults_child
}

func reexec() {
	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	argv := []string{self, "-leaks", "0"}
	if *execTo != "" {
		argv = []string{*execTo, "3600"}
	}
	err = syscall.Exec(argv[0], argv, os.Environ())
	fmt.Fprintf(os.Stderr, "faults: exec %v: %v\n", argv, err)
	os.Exit(3)
}

func startChild() {
	cmd := exec.Command(os.Args[0], "-child", "-child-leaks", strconv.Itoa(*childLeaks))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults: cannot start the child: %v\n", err)
		os.Exit(3)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready child\n" {
		fmt.Fprintf(os.Stderr, "faults: the child said %q (%v)\n", line, err)
		os.Exit(3)
	}
	fmt.Printf("child %d\n", cmd.Process.Pid)
}

func main() {
	flag.Parse()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	if *notify {
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	}
	go func() {
		for s := range sigs {
			switch s {
			case syscall.SIGUSR1:
				reexec()
			case syscall.SIGUSR2:
				panic("faults: SIGUSR2")
			default:
				fmt.Fprintf(os.Stderr, "faults: got %v\n", s)
				os.Exit(0)
			}
		}
	}()
	if *fork {
		startChild()
	}
	if *child {
		fmt.Println("ready child")
	} else {
		fmt.Println("ready faults")
	}
	t := time.NewTicker(*tick)
	for n := 0; ; n++ {
		if *child {
			if n < *childLeaks {
				childRequest()
			}
		} else {
			request(n < *leaks)
		}
		<-t.C
	}
}
"#;

/// How long gleak may take to attach (print its "tracing PID" banner).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long gleak may take, once its target is gone or it got a signal, to print
/// its final report and exit.
const WRAP_UP: Duration = Duration::from_secs(2);

/// `faults.go`, written (when its text changed) and built with the newest toolchain.
fn faults() -> Fixture {
    let tc = go_toolchains().pop().expect("a Go toolchain (scripts/bootstrap.sh installs them)");
    let dir = gleak_cache().join("faults");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let src = dir.join("faults.go");
    // Rewritten only when it differs: its mtime decides whether to rebuild.
    if fs::read_to_string(&src).ok().as_deref() != Some(FAULTS_GO) {
        // Tests run on several threads of one process: the name is per thread.
        let tmp = dir.join(format!(".faults.go.{}", unique_suffix()));
        fs::write(&tmp, FAULTS_GO).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &src).unwrap_or_else(|e| panic!("rename to {}: {e}", src.display()));
    }
    let binary = build_go_program(&tc, &src, "faults");
    Fixture { name: "faults".into(), toolchain: tc, source: src, binary, ready_prefix: "ready faults".into() }
}

fn bin_arg(fx: &Fixture) -> String {
    fx.binary.to_string_lossy().into_owned()
}

fn kill(pid: u32, signal: Signal) {
    if let Err(e) = signal::kill(Pid::from_raw(pid as i32), signal) {
        panic!("kill({pid}, {signal}): {e}");
    }
}

/// Waits for gleak's banner and returns the PID it traces.
fn traced_pid(gleak: &mut GleakChild, what: &str) -> u32 {
    const BANNER: &str = "tracing PID ";
    let Some(line) = gleak.wait_for_stderr_line(BANNER, ATTACH_TIMEOUT) else {
        panic!("{what}: no {BANNER:?} line on gleak's stderr within {ATTACH_TIMEOUT:?}:\n{}", gleak.stderr_text());
    };
    let at = line.find(BANNER).unwrap() + BANNER.len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("{what}: no PID after {BANNER:?}: {line}"))
}

/// Waits until gleak exits, at most `limit`; how long that took.
fn time_to_exit(gleak: &mut GleakChild, limit: Duration) -> Duration {
    let start = Instant::now();
    while gleak.try_wait().is_none() && start.elapsed() < limit {
        thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Makes this test process the reaper of its orphaned descendants: a command that
/// outlives gleak becomes our child, so its fate can be read with waitpid.
fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        panic!("PR_SET_CHILD_SUBREAPER: {e}");
    }
}

/// Reaps `pid` (a child of ours, see [`become_subreaper`]) if it ends within
/// `timeout`: how it ended, `None` if it is still running.
fn reap_within(pid: u32, timeout: Duration) -> Option<WaitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Some(status),
            Err(e) => panic!("waitpid({pid}): {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills and reaps a process we ended up the parent of.
fn kill_and_reap(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    let _ = signal::kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// The single report gleak printed (interval 1h or `gleak run`: just the final
/// one), checked against the schema; panics otherwise.
fn only_report(run: &GleakRun, what: &str) -> Value {
    let reports = json_reports(run);
    assert_eq!(reports.len(), 1, "{what}: want exactly the final report\n{run}");
    check_reports_schema(&reports);
    let r = reports.into_iter().next().unwrap();
    assert_eq!(r["final"], true, "{what}: `final`\n{r}");
    r
}

/// The gate of a `gleak run` report stopped by a signal: judged while the command
/// still ran (not after it died), with the exit code gleak exited with.
fn assert_judged_running(report: &Value, run: &GleakRun, what: &str) {
    let g = &report["gate"];
    assert_eq!(report["target_exited"], false, "{what}: the command must be judged before it dies\n{g}\n{run}");
    assert_eq!(g["interrupted"], true, "{what}: `gate.interrupted`\n{g}\n{run}");
    assert_eq!(g["stopped_at_deadline"], false, "{what}: {g}\n{run}");
    assert!(g["command_status"].is_null(), "{what}: the command had no status when judged\n{g}\n{run}");
    assert_eq!(g["exit_code"].as_i64(), run.code().map(i64::from), "{what}: `gate.exit_code`\n{g}\n{run}");
}

/// `needle` is on gleak's stderr, after `after` if given.
fn assert_stderr_order(run: &GleakRun, after: Option<&str>, needle: &str, what: &str) {
    let at = run.stderr.find(needle).unwrap_or_else(|| panic!("{what}: no {needle:?} on gleak's stderr\n{run}"));
    if let Some(before) = after {
        let b = run.stderr.find(before).unwrap_or_else(|| panic!("{what}: no {before:?} on gleak's stderr\n{run}"));
        assert!(b < at, "{what}: {needle:?} came before {before:?}\n{run}");
    }
}

// ---------------------------------------------------------------------------
// gleak attach
// ---------------------------------------------------------------------------

/// SIGTERM and SIGHUP end `gleak attach` as Ctrl-C does: the final report, exit 0,
/// and the target keeps running.
#[test]
fn attach_sigterm_sighup_final_report() {
    if !require_root() {
        return;
    }
    let fx = faults();
    for (sig, name) in [(Signal::SIGTERM, "SIGTERM"), (Signal::SIGHUP, "SIGHUP")] {
        let what = format!("{fx}, {name} to gleak attach");
        let _serial = serial_guard();
        let mut proc = fx.start_with_args(&["-leaks", "100000"]);
        let pid = proc.pid().to_string();
        let mut gleak = spawn_gleak(&["attach", "-p", &pid, "--json", "--interval", "1h"]);
        traced_pid(&mut gleak, &what);
        thread::sleep(Duration::from_millis(1500));
        gleak.signal(sig);
        let took = time_to_exit(&mut gleak, Duration::from_secs(10));
        let run = gleak.wait(Duration::from_secs(1));
        assert_eq!(run.code(), Some(0), "{what}: exit code\n{run}");
        assert!(took < WRAP_UP, "{what}: gleak took {took:?} to end\n{run}");
        let report = only_report(&run, &what);
        check_reports_target(std::slice::from_ref(&report), &fx);
        assert_eq!(report["target_exited"], false, "{what}\n{report}");
        let site = marker_site(&report, &fx, "LEAK:faults")
            .unwrap_or_else(|| panic!("{what}: no leak site\n{}", describe_sites(&report, 10)));
        assert!(count(site, "live") > 20, "{what}: ~50 leaks/s for 1.5s\n{site}");
        assert_stderr_order(&run, None, &format!("{name}: detaching from PID {pid}"), &what);
        proc.assert_running(&format!("after {name} to gleak"));
    }
}

/// The target dies mid-trace, by SIGKILL or by a fatal panic: gleak notices
/// within [`WRAP_UP`], prints the final report (target exited) and exits 0.
#[test]
fn attach_target_killed_or_panics() {
    if !require_root() {
        return;
    }
    let fx = faults();
    for (sig, how) in [(Signal::SIGKILL, "SIGKILL"), (Signal::SIGUSR2, "a fatal panic")] {
        let what = format!("{fx}, target ended by {how}");
        let _serial = serial_guard();
        let proc = fx.start_with_args(&["-leaks", "100000"]);
        let pid = proc.pid();
        let pid_s = pid.to_string();
        let mut gleak = spawn_gleak(&["attach", "-p", &pid_s, "--json", "--interval", "1h"]);
        traced_pid(&mut gleak, &what);
        thread::sleep(Duration::from_secs(1));
        kill(pid, sig);
        // Left a zombie (not reaped until `proc` drops): its PID stays taken.
        let took = time_to_exit(&mut gleak, Duration::from_secs(10));
        let run = gleak.wait(Duration::from_secs(1));
        assert!(matches!(proc_state(pid), Some('Z')), "{what}: the target did not die\n{}", proc.diagnostics());
        if sig == Signal::SIGUSR2 {
            assert!(proc.stderr_text().contains("panic: faults: SIGUSR2"), "{what}\n{}", proc.diagnostics());
        }
        assert_eq!(run.code(), Some(0), "{what}: exit code\n{run}");
        assert!(took < WRAP_UP, "{what}: gleak took {took:?} to notice\n{run}");
        let report = only_report(&run, &what);
        assert_eq!(report["target_exited"], true, "{what}\n{report}");
        let site = marker_site(&report, &fx, "LEAK:faults")
            .unwrap_or_else(|| panic!("{what}: no leak site\n{}", describe_sites(&report, 10)));
        assert!(count(site, "created") > 10, "{what}\n{site}");
        assert_stderr_order(&run, None, &format!("PID {pid} is gone"), &what);
    }
}

/// The target execs, another program or its own binary again (same file, same
/// PID): what gleak traced is gone; it says so, prints the final report within
/// [`WRAP_UP`] and exits 0, and the process runs on.
#[test]
fn attach_target_execs() {
    if !require_root() {
        return;
    }
    let fx = faults();
    for (args, into) in [(&["-exec", "/bin/sleep"][..], "/bin/sleep"), (&[][..], "itself")] {
        let what = format!("{fx}, target execs {into}");
        let _serial = serial_guard();
        let mut all = vec!["-leaks", "100000"];
        all.extend_from_slice(args);
        let mut proc = fx.start_with_args(&all);
        let pid = proc.pid();
        let pid_s = pid.to_string();
        let mut gleak = spawn_gleak(&["attach", "-p", &pid_s, "--json", "--interval", "1h"]);
        traced_pid(&mut gleak, &what);
        thread::sleep(Duration::from_secs(1));
        kill(pid, Signal::SIGUSR1);
        let took = time_to_exit(&mut gleak, Duration::from_secs(10));
        let run = gleak.wait(Duration::from_secs(1));
        assert_eq!(run.code(), Some(0), "{what}: exit code\n{run}");
        assert!(took < WRAP_UP, "{what}: gleak took {took:?} to notice the exec\n{run}");
        assert_stderr_order(&run, None, &format!("PID {pid} exec'd a new program"), &what);
        let report = only_report(&run, &what);
        assert!(marker_site(&report, &fx, "LEAK:faults").is_some(), "{what}\n{}", describe_sites(&report, 10));
        proc.assert_running("after its exec");
        if into == "itself" {
            let lines = proc.stdout_lines();
            assert_eq!(lines.iter().filter(|l| l.starts_with("ready faults")).count(), 2, "{what}: {lines:?}");
        }
    }
}

/// The target dies and its PID goes to another process, a second copy of the
/// same binary, while gleak is not looking (stopped): gleak must see that its
/// target is gone, not trace or read the newcomer.
#[test]
fn attach_pid_reused() {
    if !require_root() {
        return;
    }
    const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
    if fs::metadata(NS_LAST_PID).is_err() {
        assert!(!is_strict(), "{NS_LAST_PID} is missing (CI or cargo xtask test: not skipping)");
        eprintln!("skipping: {NS_LAST_PID} is missing, cannot make a PID be reused");
        return;
    }
    let fx = faults();
    let what = format!("{fx}, PID reused");
    let _serial = serial_guard();
    let proc = fx.start_with_args(&["-leaks", "100000"]);
    let pid = proc.pid();
    let pid_s = pid.to_string();
    let mut gleak = spawn_gleak(&["attach", "-p", &pid_s, "--json", "--interval", "1h"]);
    traced_pid(&mut gleak, &what);
    thread::sleep(Duration::from_secs(1));

    gleak.signal(Signal::SIGSTOP);
    drop(proc); // killed and reaped: PID free
                // The next PID the kernel hands out follows ns_last_pid; others may fork in
                // between and take it, so try a few times.
    let mut impostor = None;
    for _ in 0..50 {
        fs::write(NS_LAST_PID, (pid - 1).to_string()).unwrap_or_else(|e| panic!("write {NS_LAST_PID}: {e}"));
        let p = fx.start_with_args(&["-leaks", "100000"]);
        if p.pid() == pid {
            impostor = Some(p);
            break;
        }
    }
    gleak.signal(Signal::SIGCONT);
    let Some(mut impostor) = impostor else {
        let _ = gleak.wait(Duration::from_secs(10));
        panic!("{what}: could not get PID {pid} again in 50 tries");
    };
    let took = time_to_exit(&mut gleak, Duration::from_secs(10));
    let run = gleak.wait(Duration::from_secs(1));
    assert_eq!(run.code(), Some(0), "{what}: exit code\n{run}");
    assert!(took < WRAP_UP, "{what}: gleak took {took:?} (or forever) to see its target gone\n{run}");
    let report = only_report(&run, &what);
    assert_eq!(report["target_exited"], true, "{what}: the process with PID {pid} now is not the target\n{report}");
    assert_stderr_order(&run, None, &format!("PID {pid} is gone"), &what);
    impostor.assert_running("after gleak ended");
}

/// The target starts a copy of itself (same binary, a process of its own, leaking
/// at its own site): tracing the parent never shows the child's goroutines.
#[test]
fn attach_child_is_not_the_parent() {
    if !require_root() {
        return;
    }
    let fx = faults();
    let what = format!("{fx}, with a child");
    let _serial = serial_guard();
    let proc = fx.start_with_args(&["-fork", "-leaks", "100000"]);
    let child: u32 = proc
        .stdout_lines()
        .iter()
        .find_map(|l| l.strip_prefix("child ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no child PID\n{}", proc.diagnostics()));
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // The child of our child, which it does not reap.
            let _ = signal::kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
    let _child = KillOnDrop(child);
    let pid = proc.pid().to_string();
    let run = run_gleak(&["attach", "-p", &pid, "--json", "--duration", "2s", "--interval", "1h"], GLEAK_GRACE);
    assert_eq!(run.code(), Some(0), "{what}: exit code\n{run}");
    let report = only_report(&run, &what);
    check_reports_target(std::slice::from_ref(&report), &fx);
    let parent = marker_site(&report, &fx, "LEAK:faults")
        .unwrap_or_else(|| panic!("{what}: no parent leak site\n{}", describe_sites(&report, 10)));
    assert!(count(parent, "created") > 20, "{what}: the parent's leaks during the trace\n{parent}");
    assert!(
        marker_site(&report, &fx, "LEAK:faults_child").is_none(),
        "{what}: the child's site is in the parent's report\n{}",
        describe_sites(&report, 10)
    );
    assert!(proc_state(child).is_some_and(|s| s != 'Z'), "{what}: the child {child} died");
}

// ---------------------------------------------------------------------------
// gleak run
// ---------------------------------------------------------------------------

/// SIGTERM or SIGHUP to `gleak run`: the command is judged while it runs, the
/// report printed, then the command receives the signal (it says so, after gleak
/// said it passed it on) and is gone (reaped) when gleak exits: 128 + the signal
/// with no leak, 1 with one.
#[test]
fn run_signal_judges_then_forwards() {
    if !require_root() {
        return;
    }
    let fx = faults();
    for (sig, name, go_name, leaks, code) in [
        (Signal::SIGTERM, "SIGTERM", "terminated", "0", 143),
        (Signal::SIGHUP, "SIGHUP", "hangup", "0", 129),
        (Signal::SIGTERM, "SIGTERM", "terminated", "100000", 1),
    ] {
        let what = format!("{fx}, {name} to gleak run, -leaks {leaks}");
        let _serial = serial_guard();
        let bin = bin_arg(&fx);
        let mut gleak = spawn_gleak(&["run", "--json", "--", &bin, "-notify", "-leaks", leaks]);
        let pid = traced_pid(&mut gleak, &what);
        thread::sleep(Duration::from_secs(2));
        gleak.signal(sig);
        let run = gleak.wait(Duration::from_secs(20));
        assert_eq!(run.code(), Some(code), "{what}: exit code\n{run}");
        let report = only_report(&run, &what);
        assert_judged_running(&report, &run, &what);
        let passing = format!("passing {name} on to PID {pid}");
        assert_stderr_order(&run, None, &passing, &what);
        assert_stderr_order(&run, Some(&passing), &format!("faults: got {go_name}"), &what);
        assert_stderr_order(&run, Some(&passing), &format!("PID {pid} exited with status 0"), &what);
        assert_eq!(proc_state(pid), None, "{what}: the command is still there after gleak exited");
        let site = marker_site(&report, &fx, "LEAK:faults");
        if code == 1 {
            let site = site.unwrap_or_else(|| panic!("{what}: no leak site\n{}", describe_sites(&report, 10)));
            assert_eq!(verdict(site), "leak", "{what}\n{site}");
        } else {
            assert!(site.is_none(), "{what}: -leaks 0 leaked\n{}", describe_sites(&report, 10));
            assert_eq!(report["gate"]["failed"], false, "{what}: {}", report["gate"]);
        }
    }
}

/// A terminal's Ctrl-C goes to the whole foreground process group: with the
/// command in a group of its own, only gleak gets it, freezes and judges the
/// command (which has not died first), then passes SIGINT on: exit 130.
#[test]
fn run_ctrl_c_to_the_process_group() {
    if !require_root() {
        return;
    }
    let fx = faults();
    let what = format!("{fx}, SIGINT to gleak run's process group");
    let _serial = serial_guard();
    let bin = bin_arg(&fx);
    let mut gleak = GleakChild::spawn(&gleak_bin(), &["run", "--json", "--", &bin], |cmd| {
        cmd.process_group(0); // gleak leads a group, as a shell's foreground job
    });
    let pid = traced_pid(&mut gleak, &what);
    thread::sleep(Duration::from_secs(2));
    kill_group(gleak.pid(), Signal::SIGINT);
    let run = gleak.wait(Duration::from_secs(20));
    assert_eq!(run.code(), Some(130), "{what}: exit code\n{run}");
    let report = only_report(&run, &what);
    assert_judged_running(&report, &run, &what);
    let passing = format!("passing SIGINT on to PID {pid}");
    assert_stderr_order(&run, Some(&passing), &format!("PID {pid} killed by SIGINT"), &what);
    assert_eq!(proc_state(pid), None, "{what}: the command is still there after gleak exited");
}

fn kill_group(pgid: u32, signal: Signal) {
    if let Err(e) = signal::killpg(Pid::from_raw(pgid as i32), signal) {
        panic!("kill(-{pgid}, {signal}): {e}");
    }
}

/// `gleak run` killed by SIGKILL (no chance to clean up): the kernel kills the
/// command within a second or two. With `--leave-running` it runs on, and is not
/// left stopped.
#[test]
fn run_sigkill_takes_the_command_along() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let fx = faults();
    for leave in [false, true] {
        let what = format!("{fx}, gleak run{} killed", if leave { " --leave-running" } else { "" });
        let _serial = serial_guard();
        let bin = bin_arg(&fx);
        let mut args = vec!["run"];
        if leave {
            args.push("--leave-running");
        }
        args.extend(["--json", "--", &bin]);
        let mut gleak = spawn_gleak(&args);
        let pid = traced_pid(&mut gleak, &what);
        thread::sleep(Duration::from_secs(1));
        gleak.signal(Signal::SIGKILL);
        let run = gleak.wait(Duration::from_secs(5));
        assert_eq!(run.status.code(), None, "{what}: gleak was not killed\n{run}");
        // Orphaned, the command is ours now (subreaper): its end is ours to see.
        let ended = reap_within(pid, Duration::from_secs(2));
        if leave {
            let state = proc_state(pid);
            assert!(ended.is_none(), "{what}: the command ended (wait status {ended:?})\n{run}");
            assert!(matches!(state, Some('R' | 'S')), "{what}: the command is not running: {state:?}\n{run}");
            kill_and_reap(pid);
        } else {
            let status = ended.unwrap_or_else(|| {
                let state = proc_state(pid);
                kill_and_reap(pid);
                panic!("{what}: the command outlived gleak by 2s (state {state:?})\n{run}")
            });
            assert!(
                matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
                "{what}: the command ended with wait status {status:?}, not by SIGKILL\n{run}"
            );
        }
    }
}

/// The command killed mid-trace: `gleak run` notices at once, judges what was left
/// (states unknown: live goroutines count as leaks) and exits 1, the command's
/// status (137) in the gate.
#[test]
fn run_command_killed() {
    if !require_root() {
        return;
    }
    let fx = faults();
    let what = format!("{fx}, command killed under gleak run");
    let _serial = serial_guard();
    let bin = bin_arg(&fx);
    let mut gleak = spawn_gleak(&["run", "--json", "--", &bin, "-leaks", "100000"]);
    let pid = traced_pid(&mut gleak, &what);
    thread::sleep(Duration::from_secs(1));
    kill(pid, Signal::SIGKILL);
    let took = time_to_exit(&mut gleak, Duration::from_secs(10));
    let run = gleak.wait(Duration::from_secs(1));
    assert!(took < WRAP_UP, "{what}: gleak took {took:?}\n{run}");
    assert_eq!(run.code(), Some(1), "{what}: exit code\n{run}");
    let report = only_report(&run, &what);
    let g = &report["gate"];
    assert_eq!(report["target_exited"], true, "{what}\n{g}");
    assert_eq!(g["command_status"], 128 + Signal::SIGKILL as i32, "{what}: {g}");
    assert_eq!(g["interrupted"], false, "{what}: {g}");
    let site = marker_site(&report, &fx, "LEAK:faults")
        .unwrap_or_else(|| panic!("{what}: no leak site\n{}", describe_sites(&report, 10)));
    assert_eq!(verdict(site), "leak", "{what}\n{site}");
}
