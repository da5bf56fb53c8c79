//! End-to-end: the probes' two ways of knowing which traced process they fired
//! in. On kernels with BPF attach cookies (5.15+) the cookie says it; on older
//! ones (the 5.10 LTS of Amazon Linux 2 and Debian 11) each probe's twin looks it
//! up by PID. `GLEAK_PROBE_LOOKUP=tgid` forces the PID path on this kernel, so
//! both are checked here with exact counts; `cargo xtask vmtest` runs the PID
//! path where it is the only one, on a real 5.10 kernel.
//!
//! Needs root and a release build of gleak (`cargo build --release`, or set GLEAK_BIN).

use std::time::Duration;

use gleak_tests::*;

const BY_COOKIE: &str = "target found by attach cookie";
const BY_PID: &str = "target found by PID";

/// `gleak <args>` with the probes' lookup forced to `lookup` (`cookie`, `tgid`).
fn gleak_with_lookup(lookup: &str, args: &[&str], timeout: Duration) -> GleakRun {
    GleakChild::spawn(&gleak_bin(), args, |cmd| {
        cmd.env("GLEAK_PROBE_LOOKUP", lookup);
    })
    .wait(timeout)
}

/// The banner names the lookup the probes use.
fn assert_banner_says(run: &GleakRun, what: &str) {
    let banner = run.stderr.lines().find(|l| l.contains("tracing PID")).unwrap_or_else(|| panic!("no banner\n{run}"));
    assert!(banner.contains(what), "the banner does not say {what:?}: {banner}\n{run}");
}

/// The gate's exact-count fixture under `gleak run`, every probe of the default
/// mode (creation, exit, process exit) finding its target by PID: 40 000
/// short-lived goroutines created and exited, 37 leaked, nothing lost.
#[test]
fn pid_lookup_counts_every_goroutine_exactly() {
    if !require_root() {
        return;
    }
    for_each_toolchain("gate_counted", |tc| {
        let fx = Fixture::build(tc, "gate_counted");
        let _serial = serial_guard();
        let binary = fx.binary.to_string_lossy();
        let run = gleak_with_lookup("tgid", &["run", "--json", "--", &binary], Duration::from_secs(120));
        assert_eq!(run.code(), Some(1), "{fx}: a leaky command fails the gate\n{run}");
        assert_banner_says(&run, BY_PID);
        let reports = json_reports(&run);
        check_run_reports(&reports, &run);
        let last = reports.last().unwrap();
        assert_eq!(last["lost_events"], 0, "{fx}: nothing may be lost for exact counts\n{run}");
        assert_eq!(last["target_exited"], true, "{fx}: the process-exit probe stopped the command\n{run}");
        let site =
            |marker: &str| marker_site(last, &fx, marker).unwrap_or_else(|| panic!("{fx}: no site // {marker}\n{run}"));
        let churn = site("OK:counted");
        assert_eq!((count(churn, "created"), count(churn, "exited")), (40_000, 40_000), "{fx}: {churn}");
        let leak = site("LEAK:counted");
        assert_eq!((count(leak, "created"), count(leak, "live")), (37, 37), "{fx}: {leak}");
        assert_eq!(verdict(leak), "leak", "{fx}: {leak}");
    });
}

/// `attach` with park tracing on, by PID: the leak is found at its `go`
/// statement, growing, blocked on `chan send`, proven.
#[test]
fn pid_lookup_attaches_with_every_probe() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let fx = Fixture::build(&tc, "chan_send");
    let _serial = serial_guard();
    let proc = fx.start();
    let pid = proc.pid().to_string();
    let run = gleak_with_lookup(
        "tgid",
        &["attach", "-p", &pid, "--json", "--trace-parks", "--duration", "4s", "--interval", "1h"],
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{fx}\n{run}");
    assert_banner_says(&run, BY_PID);
    let reports = parse_json_lines(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    let last = reports.last().expect("a final report");
    let site = marker_site(last, &fx, "LEAK:chan_send")
        .unwrap_or_else(|| panic!("{fx}: leak site missing\n{}", describe_sites(last, 10)));
    assert_eq!(verdict(site), "leak", "{fx}: {site}");
    assert_eq!(site["top_wait_reason"], "chan send", "{fx}: {site}");
    assert!(count(site, "created") > 20, "{fx}: creations seen by PID lookup: {site}");
    assert_eq!(last["lost_events"], 0, "{fx}\n{run}");
}

/// Without the override, gleak takes the attach cookie wherever the kernel has
/// it (5.15+), and the PID path only below.
#[test]
fn default_lookup_follows_the_kernel() {
    if !require_root() {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading the kernel release");
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let want = if version >= (5, 15) { BY_COOKIE } else { BY_PID };
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let fx = Fixture::build(&tc, "chan_send");
    let _serial = serial_guard();
    let proc = fx.start();
    let pid = proc.pid().to_string();
    let run = run_gleak(&["attach", "-p", &pid, "--duration", "1s", "--interval", "1h"], Duration::from_secs(60));
    assert!(run.status.success(), "{fx}\n{run}");
    assert_banner_says(&run, want);

    let bad = gleak_with_lookup("fast", &["attach", "-p", &pid, "--duration", "1s"], Duration::from_secs(60));
    assert!(!bad.status.success(), "an unknown GLEAK_PROBE_LOOKUP is refused\n{bad}");
    assert!(bad.stderr.contains("GLEAK_PROBE_LOOKUP=fast"), "{bad}");
    assert!(!bad.stderr.contains("panicked"), "{bad}");
}
