//! End-to-end: verdicts with proof. Leaks made before gleak attaches are `leak`
//! at the first report, each goroutine proven unable to run again (its wait
//! object reachable from nothing that can run) and shown where it is stuck (the
//! `ch <-`, `mu.Lock()`, `wg.Wait()` line) and on what; an idle pool sharing one
//! reachable channel is `stable`; a leak through a package-level map (reachable,
//! so no proof) is still found by growth; a retry loop that never ends is at least
//! `suspect`. A connection pool that grows under a load ramp is not a leak. Go ≥
//! 1.27's own leak profile (status `_Gleaked`) does not hide a leak, and a test
//! that hangs fails `gleak run` at its blocking line.
//!
//! Needs root and a release build of gleak (`cargo build --release`, or GLEAK_BIN).

use gleak_tests::*;

/// The first report is the final one: 3 s after attach, one report.
const FIRST_REPORT: &[&str] = &["--duration", "3s", "--interval", "1h", "--top", "200"];

fn site<'a>(fx: &Fixture, report: &'a Value, marker: &str) -> &'a Value {
    marker_site(report, fx, marker)
        .unwrap_or_else(|| panic!("{fx}: // {marker} missing from the report\n{}", describe_sites(report, 20)))
}

/// The site's goroutines are stuck at `// BLOCK:<name>` with `reason`.
fn assert_blocked_at(fx: &Fixture, site: &Value, block: &str, reason: &str) {
    let (file, line, why) =
        blocked_line(site).unwrap_or_else(|| panic!("{fx}: no blocking stack for // {block}\n{site}"));
    assert!(file.ends_with(&fx.file_suffix()), "{fx}: // {block} stuck in {file}, not the fixture\n{site}");
    assert_eq!(line, fx.marker_line(block), "{fx}: // {block}: stuck at the wrong line\n{site}");
    assert_eq!(why, reason, "{fx}: // {block}: wait reason\n{site}");
    let stack = stack_functions(&site["blocked_at"][0]["stack"]);
    assert_eq!(stack.first(), Some(&"runtime.gopark"), "{fx}: // {block}: the stack starts at gopark\n{site}");
}

/// `leak` with at least `min_proven` goroutines proven, `live` of them.
fn assert_proven_leak(fx: &Fixture, site: &Value, live: u64, min_proven: u64) {
    assert_eq!(verdict(site), "leak", "{fx}: {}\n{site}", site["verdict_reason"]);
    assert_eq!(count(site, "live"), live, "{fx}\n{site}");
    assert_eq!(count(site, "preexisting"), live, "{fx}: leaked before attach\n{site}");
    let proven = count(site, "proven");
    assert!(proven >= min_proven && proven <= live, "{fx}: {proven} proven, want {min_proven}..={live}\n{site}");
    let reason = site["verdict_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("can never run again"), "{fx}: the reason states the proof: {reason}");
}

/// Wait reasons renamed across releases: (Go ≤ 1.19 name, later name, first release with it).
fn reason_for(fx: &Fixture, old: &str, new: &str, since_minor: u32) -> String {
    let minor: u32 = fx.toolchain.version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
    if minor >= since_minor { new } else { old }.to_string()
}

#[test]
fn leaks_before_attach_are_proven_at_the_first_report() {
    if !require_root() {
        return;
    }
    for_each_toolchain("stuck", |tc| {
        let fx = Fixture::build(tc, "stuck");
        let _serial = serial_guard();
        let proc = fx.start();
        let reports = run_gleak_attach(proc.pid(), FIRST_REPORT);
        check_reports_schema(&reports);
        assert_eq!(reports.len(), 1, "{fx}: one report");
        let r = &reports[0];
        let proof = &r["proof"];
        assert!(proof["inconclusive"].is_null(), "{fx}: the proof was inconclusive: {proof}");
        assert!(count(proof, "candidates") >= 650, "{fx}: {proof}");
        assert!(count(proof, "heap_bytes") > 0 && count(proof, "bytes_read") > 0, "{fx}: {proof}");

        // 300 goroutines sending on channels of their own.
        let s = site(&fx, r, "LEAK:private_chan");
        assert_proven_leak(&fx, s, 300, 290);
        assert_blocked_at(&fx, s, "BLOCK:private_chan", "chan send");
        let w = &s["wait_objects"];
        assert_eq!(count(w, "goroutines"), 300, "{fx}: {w}");
        assert_eq!(count(w, "objects"), 300, "{fx}: 300 distinct channels: {w}");
        assert_eq!(count(w, "shared"), 0, "{fx}: {w}");
        assert_eq!(w["busiest"][0]["kind"], "channel", "{fx}: {w}");
        assert_eq!(w["busiest"][0]["channel"]["cap"], 0, "{fx}: unbuffered: {w}");
        assert_eq!(w["busiest"][0]["channel"]["closed"], false, "{fx}: {w}");

        // 200 goroutines on one mutex a finished function left locked.
        let s = site(&fx, r, "LEAK:locked_mutex");
        assert_proven_leak(&fx, s, 200, 190);
        assert_blocked_at(&fx, s, "BLOCK:locked_mutex", &reason_for(&fx, "semacquire", "sync.Mutex.Lock", 20));
        let w = &s["wait_objects"];
        assert_eq!((count(w, "objects"), count(w, "most_on_one")), (1, 200), "{fx}: one mutex: {w}");
        assert_eq!(w["busiest"][0]["kind"], "semaphore", "{fx}: {w}");

        // 150 waiters of 30 WaitGroups that never reach zero.
        let s = site(&fx, r, "LEAK:wg_never_zero");
        assert_proven_leak(&fx, s, 150, 140);
        assert_blocked_at(&fx, s, "BLOCK:wg_never_zero", &reason_for(&fx, "semacquire", "sync.WaitGroup.Wait", 24));
        let w = &s["wait_objects"];
        assert_eq!((count(w, "objects"), count(w, "most_on_one")), (30, 5), "{fx}: 30 WaitGroups: {w}");

        // An idle pool on one reachable channel: stable, nothing proven.
        let s = site(&fx, r, "STABLE:idle_pool");
        assert_eq!(verdict(s), "stable", "{fx}: {}\n{s}", s["verdict_reason"]);
        assert_eq!(count(s, "live"), 100, "{fx}\n{s}");
        assert_eq!(count(s, "proven"), 0, "{fx}: the jobs channel is reachable\n{s}");
        assert_eq!(count(&s["wait_objects"], "objects"), 1, "{fx}: one jobs channel\n{s}");

        // Leaks through a package-level map: reachable, found by growth.
        let s = site(&fx, r, "LEAK:global_map");
        assert_eq!(verdict(s), "leak", "{fx}: {}\n{s}", s["verdict_reason"]);
        assert_eq!(count(s, "proven"), 0, "{fx}: the map keeps the channels reachable\n{s}");
        assert!(count(&s["trend"], "live_end") > count(&s["trend"], "live_start"), "{fx}: growing\n{s}");
        assert_blocked_at(&fx, s, "BLOCK:global_map", "chan receive");
        // What holds them: the map, by the global's name, down to their channel.
        let held = &s["held_by"];
        assert_eq!(held["root"], "main.registry", "{fx}: what holds the channels\n{held}");
        let wait_object = held["wait_object"].as_str().unwrap_or_default();
        assert!(wait_object.starts_with("channel 0x"), "{fx}: {held}");
        assert!(!held["hops"].as_array().is_none_or(Vec::is_empty), "{fx}: the map's objects\n{held}");

        // A retry loop on time.After that never ends: at least suspect, with a reason.
        let s = site(&fx, r, "SUSPECT:retry_loop");
        assert!(matches!(verdict(s), "leak" | "suspect"), "{fx}: {}\n{s}", s["verdict_reason"]);
        assert_eq!(count(s, "proven"), 0, "{fx}: timers keep waking them\n{s}");
        assert!(!s["verdict_reason"].as_str().unwrap_or_default().is_empty(), "{fx}\n{s}");
    });
}

#[test]
fn connection_pool_growing_under_load_is_not_a_leak() {
    if !require_root() {
        return;
    }
    for_each_toolchain("httpramp", |tc| {
        let fx = Fixture::build(tc, "httpramp");
        let _serial = serial_guard();
        let proc = fx.start();
        let reports = run_gleak_attach(proc.pid(), &["--duration", "6s", "--interval", "2s", "--top", "200"]);
        check_reports_schema(&reports);
        for (i, r) in reports.iter().enumerate() {
            for s in sites(r) {
                assert!(
                    !matches!(verdict(s), "leak" | "suspect"),
                    "{fx}: report {i}: {} is {}: {}\n{}",
                    s["function"],
                    verdict(s),
                    s["verdict_reason"],
                    describe_sites(r, 20)
                );
            }
        }
        // The pool did grow: net/http's connection goroutines, more at the end.
        let last = reports.last().unwrap();
        let conns: u64 = sites(last)
            .iter()
            .filter(|s| s["function"].as_str().is_some_and(|f| f.starts_with("net/http.")))
            .map(|s| count(&s["trend"], "live_end").saturating_sub(count(&s["trend"], "live_start")))
            .sum();
        assert!(conns >= 30, "{fx}: the connection pool grew by {conns} goroutines only\n{}", describe_sites(last, 20));
    });
}

/// Go ≥ 1.27 always has the runtime's goroutine leak profile (1.26 behind
/// GOEXPERIMENT); taking it leaves the leaked goroutines `_Gleaked`: still `leak`,
/// with their wait reason, whether the program keeps running or exits.
#[test]
fn the_runtimes_own_leak_profile_does_not_hide_leaks() {
    if !require_root() {
        return;
    }
    let Some(tc) = go_toolchains().into_iter().rev().find(|t| minor_of(t) >= 27) else {
        assert!(!is_strict(), "no Go 1.27+ toolchain (CI or cargo xtask test: not skipping)");
        return;
    };
    let fx = Fixture::build(&tc, "leakprofile");
    let _serial = serial_guard();
    let proc = fx.start();
    let reports = run_gleak_attach(proc.pid(), FIRST_REPORT);
    check_reports_schema(&reports);
    let s = site(&fx, &reports[0], "LEAK:profiled");
    assert_eq!(verdict(s), "leak", "{fx}: {}\n{s}", s["verdict_reason"]);
    assert_eq!(count(s, "live"), 50, "{fx}\n{s}");
    assert_eq!(s["states"]["leaked"], 50, "{fx}: the runtime marked them _Gleaked\n{s}");
    assert_eq!(s["top_wait_reason"], "chan receive", "{fx}\n{s}");
    assert_blocked_at(&fx, s, "BLOCK:profiled", "chan receive");
    drop(proc);

    let run = run_gleak_run(&["--json"], &fx.binary, &["-exit"]);
    assert_eq!(run.code(), Some(1), "{fx}: gleak run must fail\n{run}");
    let reports = json_reports(&run);
    let s = site(&fx, reports.last().unwrap(), "LEAK:profiled");
    assert_eq!((verdict(s), count(s, "live")), ("leak", 50), "{fx}\n{s}\n{run}");
}

/// A test that deadlocks dies by -test.timeout; the leaked goroutine is the
/// test's own (created by package testing): the gate fails and names the test's
/// blocking line.
#[test]
fn a_hung_test_fails_the_gate_at_its_blocking_line() {
    if !require_root() {
        return;
    }
    for_each_toolchain("hung test", |tc| {
        let fx = Fixture::go_test(tc, "gohang", "hang_test.go");
        let _serial = serial_guard();
        let run = run_gleak_run(&["--json"], &fx.binary, &["-test.timeout", "2s"]);
        assert_eq!(run.code(), Some(1), "{fx}: gleak run must fail\n{run}");
        let reports = json_reports(&run);
        let last = reports.last().unwrap();
        let gate = &last["gate"];
        assert_eq!(gate["failed"], true, "{fx}: {gate}\n{run}");
        assert_eq!(gate["command_status"], 2, "{fx}: the test binary died by its timeout: {gate}");
        assert_eq!(gate["leaked_goroutines"], 1, "{fx}: {gate}\n{}", describe_sites(last, 10));
        let hung = sites(last)
            .iter()
            .find(|s| verdict(s) == "leak")
            .unwrap_or_else(|| panic!("{fx}: no leak site\n{}", describe_sites(last, 10)));
        assert!(hung["function"].as_str().unwrap_or_default().starts_with("testing."), "{fx}: {hung}");
        let (file, line, reason) = blocked_line(hung).unwrap_or_else(|| panic!("{fx}: no blocking stack\n{hung}"));
        assert!(file.ends_with("gohang/hang_test.go"), "{fx}: {file}\n{hung}");
        assert_eq!(line, fx.marker_line("BLOCK:hang"), "{fx}: {hung}");
        assert_eq!(reason, "chan receive", "{fx}: {hung}");
        assert!(hung["verdict_reason"].as_str().unwrap_or_default().contains("a test hung"), "{fx}: {hung}");
    });
}

fn minor_of(tc: &GoToolchain) -> u32 {
    tc.version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0)
}

/// Under `gleak run`, the goroutine calling exit is scanned from its stopped
/// thread's stack pointer, with its stack maps: a goroutine blocked on a channel
/// only a returned frame of main pointed to is proven (`gate_returned_frame`;
/// scanning that goroutine's whole stack found the dead slot on Go 1.19). Go
/// 1.19 and the newest, plain and stripped.
#[test]
fn a_channel_only_a_returned_frame_held_is_proven_at_exit() {
    if !require_root() {
        return;
    }
    let all = go_toolchains();
    let mut toolchains: Vec<GoToolchain> = all.first().into_iter().chain(all.last()).cloned().collect();
    toolchains.dedup();
    for_each_of("a_channel_only_a_returned_frame_held_is_proven_at_exit", &toolchains, |tc| {
        for fx in [
            Fixture::build(tc, "gate_returned_frame"),
            Fixture::build_variant(tc, "gate_returned_frame", Variant::Stripped),
        ] {
            let _serial = serial_guard();
            let run = run_gleak_run(&["--json"], &fx.binary, &[]);
            assert_eq!(run.code(), Some(1), "{fx}: a leak\n{run}");
            let reports = json_reports(&run);
            check_run_reports(&reports, &run);
            let last = reports.last().expect("a report");
            let s = site(&fx, last, "LEAK:returned_frame");
            assert_eq!(verdict(s), "leak", "{fx}\n{s}");
            assert_eq!((count(s, "live"), count(s, "proven")), (1, 1), "{fx}: proven\n{s}\n{}", last["proof"]);
        }
    });
}

/// In a stripped binary, what holds a suspect's channels is named by section and
/// offset (`.bss+0x…`: no symbol names), on Go 1.19 and the newest.
#[test]
fn a_stripped_global_holding_a_suspect_is_named_by_its_section() {
    if !require_root() {
        return;
    }
    let all = go_toolchains();
    let mut toolchains: Vec<GoToolchain> = all.first().into_iter().chain(all.last()).cloned().collect();
    toolchains.dedup();
    for_each_of("a_stripped_global_holding_a_suspect_is_named_by_its_section", &toolchains, |tc| {
        let fx = Fixture::build_variant(tc, "stuck", Variant::Stripped);
        let _serial = serial_guard();
        let proc = fx.start();
        let reports = run_gleak_attach(proc.pid(), FIRST_REPORT);
        let s = site(&fx, &reports[0], "LEAK:global_map");
        let root = s["held_by"]["root"].as_str().unwrap_or_default();
        assert!(root.starts_with(".bss+0x") || root.starts_with(".data+0x"), "{fx}: {}", s["held_by"]);
    });
}
