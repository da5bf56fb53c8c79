//! End-to-end: `gleak run` as a CI gate. gleak starts the command, traces it
//! from its first goroutine and, when it ends (by itself, or at `--duration`),
//! fails with exit code 1 if goroutines of the program's own are left leaking
//! (goleak semantics); otherwise it exits with the command's status (0 when it
//! stopped the command itself).
//!
//! Needs root and a release build of gleak (`cargo build --release`, or set
//! GLEAK_BIN).

use gleak_tests::*;

/// Runs `gleak run <opts> -- <fx> <args>` and, with `--json` in `opts`,
/// returns its checked reports (empty otherwise).
fn gate(fx: &Fixture, opts: &[&str], args: &[&str]) -> (GleakRun, Vec<Value>) {
    let _serial = serial_guard();
    let run = run_gleak_run(opts, &fx.binary, args);
    let reports = if opts.contains(&"--json") {
        let reports = json_reports(&run);
        check_run_reports(&reports, &run);
        for (i, r) in reports.iter().enumerate() {
            let bin = r["binary"].as_str().unwrap_or_default();
            assert!(
                std::fs::canonicalize(bin).ok() == std::fs::canonicalize(&fx.binary).ok(),
                "{fx}: report {i}: `binary` {bin:?} is not the command\n{run}"
            );
            let gv = r["go_version"].as_str().unwrap_or_default();
            assert!(fx.toolchain.matches_go_version(gv), "{fx}: report {i}: `go_version` {gv:?}\n{run}");
        }
        reports
    } else {
        Vec::new()
    };
    (run, reports)
}

fn assert_code(fx: &Fixture, run: &GleakRun, want: i32) {
    assert_eq!(run.code(), Some(want), "{fx}: gleak run exit code, want {want}\n{run}");
}

fn last(reports: &[Value]) -> &Value {
    &reports[reports.len() - 1]
}

/// The command ended by itself: the final report says the target exited and
/// the gate was not stopped by the deadline.
fn assert_exited_by_itself(fx: &Fixture, reports: &[Value], run: &GleakRun) {
    let r = last(reports);
    assert_eq!(
        r["target_exited"], true,
        "{fx}: the command exited by itself, the final report must say `target_exited: true`\n{run}"
    );
    assert_eq!(r["gate"]["stopped_at_deadline"], false, "{fx}: {}", r["gate"]);
}

/// The site of `// <marker>` in the final report; panics if missing.
fn final_site<'a>(fx: &Fixture, reports: &'a [Value], marker: &str, run: &GleakRun) -> &'a Value {
    marker_site(last(reports), fx, marker).unwrap_or_else(|| {
        panic!(
            "{fx}: site {}:{} (// {marker}) missing from the final report\n{}\n{run}",
            fx.file_suffix(),
            fx.marker_line(marker),
            describe_sites(last(reports), 15)
        )
    })
}

/// No site of the final report is `leak`, except those at `allowed` markers.
fn assert_no_other_leak(fx: &Fixture, reports: &[Value], allowed: &[&str], run: &GleakRun) {
    let allowed: Vec<u32> = allowed.iter().map(|m| fx.marker_line(m)).collect();
    let suffix = fx.file_suffix();
    for s in sites(last(reports)) {
        let ours = s["file"].as_str().is_some_and(|f| f.ends_with(&suffix))
            && s["line"].as_u64().is_some_and(|l| allowed.iter().any(|&a| u64::from(a) == l));
        assert!(
            ours || verdict(s) != "leak",
            "{fx}: unexpected `leak` site {}:{} {} ({})\n{}\n{run}",
            s["file"],
            s["line"],
            s["function"],
            s["verdict_reason"],
            describe_sites(last(reports), 15)
        );
    }
}

fn each_fixture(name: &str, check: impl Fn(&Fixture)) {
    if !require_root() {
        return;
    }
    for_each_toolchain(name, |tc| check(&Fixture::build(tc, name)));
}

/// Returns from main with 10 goroutines blocked forever: exit 1, and the
/// report names them.
#[test]
fn leaky_job_fails() {
    each_fixture("gate_leaky", |fx| {
        let (run, reports) = gate(fx, &["--json"], &[]);
        assert_code(fx, &run, 1);
        let r = last(&reports);
        let site = final_site(fx, &reports, "LEAK:gate", &run);
        assert_eq!(verdict(site), "leak", "{fx}: // LEAK:gate\n{site}\n{run}");
        assert_eq!(count(site, "live"), 10, "{fx}: // LEAK:gate\n{site}\n{run}");
        assert_no_other_leak(fx, &reports, &["LEAK:gate"], &run);
        assert_exited_by_itself(fx, &reports, &run);
        let g = &r["gate"];
        assert_eq!(g["fail_on"], "leak", "{fx}: default --fail-on\n{g}");
        assert_eq!(g["failed"], true, "{fx}: {g}");
        assert_eq!(g["leaked_goroutines"], 10, "{fx}: {g}");
        assert_eq!(g["command_status"], 0, "{fx}: {g}");
        assert_eq!(g["exit_code"], 1, "{fx}: {g}");
    });
}

/// 40 000 goroutines started and joined from 4 goroutines at once, then 37 left
/// blocked: each creation and death counted exactly once, though the probes
/// gather them per CPU and gleak reads those batches both while they fill and
/// from the ring.
#[test]
fn counts_are_exact_under_churn() {
    each_fixture("gate_counted", |fx| {
        let (run, reports) = gate(fx, &["--json"], &[]);
        assert_code(fx, &run, 1);
        assert_eq!(last(&reports)["lost_events"], 0, "{fx}: nothing may be lost for exact counts\n{run}");
        let churn = final_site(fx, &reports, "OK:counted", &run);
        for field in ["created", "exited"] {
            assert_eq!(count(churn, field), 40_000, "{fx}: // OK:counted {field}\n{churn}\n{run}");
        }
        assert_eq!(count(churn, "live"), 0, "{fx}: // OK:counted\n{churn}\n{run}");
        let spawners = final_site(fx, &reports, "OK:spawner", &run);
        assert_eq!((count(spawners, "created"), count(spawners, "exited")), (4, 4), "{fx}: // OK:spawner\n{spawners}");
        let leak = final_site(fx, &reports, "LEAK:counted", &run);
        assert_eq!((count(leak, "created"), count(leak, "live")), (37, 37), "{fx}: // LEAK:counted\n{leak}\n{run}");
        assert_eq!(verdict(leak), "leak", "{fx}: // LEAK:counted\n{leak}\n{run}");
        assert_no_other_leak(fx, &reports, &["LEAK:counted"], &run);
    });
}

/// Every goroutine waited for: the command's 0 passes through, with the
/// human report and with `--json`.
#[test]
fn clean_job_passes() {
    each_fixture("gate_clean", |fx| {
        let (run, _) = gate(fx, &[], &[]);
        assert_code(fx, &run, 0);

        let (run, reports) = gate(fx, &["--json"], &[]);
        assert_code(fx, &run, 0);
        assert_no_other_leak(fx, &reports, &[], &run);
        assert_exited_by_itself(fx, &reports, &run);
        let g = &last(&reports)["gate"];
        assert_eq!(g["failed"], false, "{fx}: {g}");
        assert_eq!(g["leaked_goroutines"], 0, "{fx}: {g}");
        assert_eq!(g["command_status"], 0, "{fx}: {g}");
        assert_eq!(g["exit_code"], 0, "{fx}: {g}");
    });
}

/// A clean job that exits 3 by itself: gleak exits 3 too.
#[test]
fn exit_status_passes_through() {
    each_fixture("gate_exit3", |fx| {
        let (run, reports) = gate(fx, &["--json"], &[]);
        assert_code(fx, &run, 3);
        assert_no_other_leak(fx, &reports, &[], &run);
        assert_exited_by_itself(fx, &reports, &run);
        let g = &last(&reports)["gate"];
        assert_eq!(g["failed"], false, "{fx}: {g}");
        assert_eq!(g["command_status"], 3, "{fx}: {g}");
        assert_eq!(g["exit_code"], 3, "{fx}: {g}");
    });
}

/// `--fail-on suspect` is reported in the gate and still fails on a leak
/// (a leak is worse than a suspect) and passes a clean job.
#[test]
fn fail_on_suspect() {
    if !require_root() {
        return;
    }
    for_each_toolchain("fail_on_suspect", |tc| {
        let fx = Fixture::build(tc, "gate_leaky");
        let (run, reports) = gate(&fx, &["--fail-on", "suspect", "--json"], &[]);
        assert_code(&fx, &run, 1);
        assert_eq!(last(&reports)["gate"]["fail_on"], "suspect", "{fx}\n{run}");

        let fx = Fixture::build(tc, "gate_clean");
        let (run, reports) = gate(&fx, &["--fail-on", "suspect", "--json"], &[]);
        assert_code(&fx, &run, 0);
        assert_eq!(last(&reports)["gate"]["fail_on"], "suspect", "{fx}\n{run}");
    });
}

/// A server that never ends and leaks 10/s: stopped at the deadline, and the
/// leak fails the run.
#[test]
fn deadline_with_leak_fails() {
    each_fixture("gate_forever", |fx| {
        let started = std::time::Instant::now();
        let (run, reports) = gate(fx, &["--duration", "3s", "--json"], &[]);
        let took = started.elapsed();
        assert_code(fx, &run, 1);
        assert!(took.as_secs_f64() >= 2.9, "{fx}: gleak returned after {took:?}, before the 3s deadline\n{run}");
        let site = final_site(fx, &reports, "LEAK:forever", &run);
        assert_eq!(verdict(site), "leak", "{fx}: // LEAK:forever\n{site}\n{run}");
        assert!(count(site, "live") >= 15, "{fx}: // LEAK:forever: ~10 leaks/s for 3s\n{site}\n{run}");
        assert_no_other_leak(fx, &reports, &["LEAK:forever"], &run);
        let g = &last(&reports)["gate"];
        assert_eq!(g["stopped_at_deadline"], true, "{fx}: {g}");
        assert_eq!(g["failed"], true, "{fx}: {g}");
        assert_eq!(g["exit_code"], 1, "{fx}: {g}");
        assert!(
            g["leaked_goroutines"].as_u64() >= Some(count(site, "live")),
            "{fx}: leaked_goroutines < live of the leak site\n{g}\n{site}"
        );
    });
}

/// A healthy server that never ends: gleak's own stop at the deadline is not
/// a failure.
#[test]
fn deadline_without_leak_passes() {
    each_fixture("gate_forever_clean", |fx| {
        let started = std::time::Instant::now();
        let (run, _) = gate(fx, &["--duration", "2s"], &[]);
        let took = started.elapsed();
        assert_code(fx, &run, 0);
        assert!(took.as_secs_f64() >= 1.9, "{fx}: gleak returned after {took:?}, before the 2s deadline\n{run}");
    });
}

/// A `go test -c` binary whose test leaks 3 goroutines and passes: exit 1,
/// the test's site is the leak, and the testing package's own goroutines
/// (tRunner, the alarm) are never blamed.
#[test]
fn go_test_binary() {
    if !require_root() {
        return;
    }
    for_each_toolchain("go_test_binary", |tc| {
        let fx = Fixture::go_test(tc, "gotest", "leaky_test.go");
        let (run, reports) = gate(&fx, &["--json"], &["-test.run", "."]);
        assert_code(&fx, &run, 1);
        let site = final_site(&fx, &reports, "LEAK:gotest", &run);
        assert_eq!(verdict(site), "leak", "{fx}: // LEAK:gotest\n{site}\n{run}");
        assert_eq!(count(site, "live"), 3, "{fx}: // LEAK:gotest\n{site}\n{run}");
        for s in sites(last(&reports)) {
            let f = s["function"].as_str().unwrap_or_default();
            assert!(
                !(f.starts_with("testing.") && verdict(s) == "leak"),
                "{fx}: a testing.* site is a `leak`: {s}\n{run}"
            );
        }
        assert_no_other_leak(&fx, &reports, &["LEAK:gotest"], &run);
        assert_exited_by_itself(&fx, &reports, &run);
        let g = &last(&reports)["gate"];
        assert_eq!(g["command_status"], 0, "{fx}: the tests pass\n{g}");
        assert_eq!(g["leaked_goroutines"], 3, "{fx}: {g}");
        assert_eq!(g["exit_code"], 1, "{fx}: {g}");
    });
}
