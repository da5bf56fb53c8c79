//! End-to-end: build each Go fixture with every Go toolchain, run it, attach
//! `gleak attach -p PID --json` for a few seconds and check what it reports.
//!
//! Needs root and a release build of gleak (`cargo build --release`, or set
//! GLEAK_BIN). One test per fixture; toolchains run sequentially inside it.

use gleak_tests::*;

/// Arguments for every attach: ~5 interval reports plus the final one.
/// `--top 100` so low-`live` sites (the churn ones) are not cut from the list.
const ATTACH_ARGS: &[&str] = &["--duration", "5s", "--interval", "1s", "--top", "100"];

/// A leaking `go` statement and the wait reasons its goroutines may report.
struct Leak {
    marker: &'static str,
    reasons: &'static [&'static str],
    /// Upper bound for exited / created at the site (exclusive).
    max_exited_ratio: f64,
}

const CHAN_SEND: Leak = Leak { marker: "LEAK:chan_send", reasons: &["chan send"], max_exited_ratio: 0.5 };
/// "semacquire" on Go 1.19 and 1.23, "sync.WaitGroup.Wait" on Go 1.26.
const WG_WAIT: Leak =
    Leak { marker: "LEAK:wg_wait", reasons: &["semacquire", "sync.WaitGroup.Wait"], max_exited_ratio: 0.5 };
const CTX_NEVER_CANCELLED: Leak =
    Leak { marker: "LEAK:ctx_never_cancelled", reasons: &["select"], max_exited_ratio: 0.5 };
/// Only requests that time out (about half) leak their pricing goroutine;
/// the others' pricing goroutines deliver and exit.
const DEMO_PRICING: Leak = Leak { marker: "LEAK:pricing", reasons: &["chan send"], max_exited_ratio: 0.75 };

/// Starts `fx`, traces it with gleak and returns the schema-checked reports.
fn trace(fx: &Fixture) -> Vec<Value> {
    let _serial = serial_guard();
    let mut proc = fx.start();
    let pid = proc.pid();
    let reports = run_gleak_attach(pid, ATTACH_ARGS);
    proc.assert_running("after gleak detached");
    check_report_stream(&reports, pid);
    check_reports_target(&reports, fx);
    assert!(reports.len() >= 2, "{fx}: expected interval reports plus a final one, got {} report(s)", reports.len());
    reports
}

/// The site of `leak` exists in the last report, grows, barely exits and is
/// blocked for one of the expected reasons.
fn assert_leaks(fx: &Fixture, reports: &[Value], leak: &Leak) {
    let line = fx.marker_line(leak.marker);
    let suffix = fx.file_suffix();
    let (first, last) = (&reports[0], &reports[reports.len() - 1]);
    let at = format!("{fx}: site {suffix}:{line} (// {})", leak.marker);
    let site = find_site(last, &suffix, line)
        .unwrap_or_else(|| panic!("{at}: missing from the last report\n{}", describe_sites(last, 10)));
    let (live, created, exited) = (count(site, "live"), count(site, "created"), count(site, "exited"));
    let first_live = site_live(first, &suffix, line);
    let ctx = || format!("{at}: {site}\nfirst {}\nlast {}", describe_sites(first, 5), describe_sites(last, 10));

    assert!(live > 20, "live={live}, want > 20\n{}", ctx());
    assert!(live > first_live, "live did not grow: first={first_live} last={live}\n{}", ctx());
    // Goroutines already running at attach are live without having been seen created.
    let preexisting = count(site, "preexisting");
    assert!(created + preexisting >= live, "created={created} + preexisting={preexisting} < live={live}\n{}", ctx());
    assert!(
        (exited as f64) < created as f64 * leak.max_exited_ratio,
        "exited={exited} is not small relative to created={created} (want < {}x)\n{}",
        leak.max_exited_ratio,
        ctx()
    );
    let reason = site["top_wait_reason"].as_str();
    assert!(
        reason.is_some_and(|r| leak.reasons.contains(&r)),
        "top_wait_reason={reason:?}, want one of {:?}\n{}",
        leak.reasons,
        ctx()
    );
}

/// Short-lived goroutines of the site at `marker`: many created, ~none live.
fn assert_churns(fx: &Fixture, reports: &[Value], marker: &str, min_created: u64) {
    let line = fx.marker_line(marker);
    let suffix = fx.file_suffix();
    let last = &reports[reports.len() - 1];
    let site = find_site(last, &suffix, line).unwrap_or_else(|| {
        panic!(
            "{fx}: churn site {suffix}:{line} (// {marker}) missing from the last report\n{}",
            describe_sites(last, 10)
        )
    });
    let (live, created) = (count(site, "live"), count(site, "created"));
    assert!(created > min_created, "{fx}: // {marker}: created={created}, want > {min_created}\n{site}");
    assert!(live * 20 <= created, "{fx}: // {marker}: live={live} is more than 5% of created={created}\n{site}");
}

/// A fixed pool started before "ready": usually absent (created before
/// attach); if gleak does report it, its live count must not change.
fn assert_not_growing(fx: &Fixture, reports: &[Value], marker: &str) {
    let line = fx.marker_line(marker);
    let suffix = fx.file_suffix();
    let (first, last) = (&reports[0], &reports[reports.len() - 1]);
    if let (Some(a), Some(b)) = (find_site(first, &suffix, line), find_site(last, &suffix, line)) {
        assert_eq!(
            count(a, "live"),
            count(b, "live"),
            "{fx}: pool site {suffix}:{line} (// {marker}) changed size\nfirst {a}\nlast {b}"
        );
    }
}

/// The leak is the site with the most live goroutines.
fn assert_top_site(fx: &Fixture, reports: &[Value], leak: &Leak) {
    let line = fx.marker_line(leak.marker);
    let last = &reports[reports.len() - 1];
    let top = sites(last).first();
    let is_leak = top.is_some_and(|s| {
        s["line"].as_u64() == Some(u64::from(line))
            && s["file"].as_str().is_some_and(|f| f.ends_with(&fx.file_suffix()))
    });
    assert!(
        is_leak,
        "{fx}: the top site is not the leak at line {line} (// {})\n{}",
        leak.marker,
        describe_sites(last, 5)
    );
}

/// One fixture with one leaking `go` statement.
fn single_leak(name: &str, leak: &Leak) {
    if !require_root() {
        return;
    }
    for_each_toolchain(name, |tc| {
        let fx = Fixture::build(tc, name);
        let reports = trace(&fx);
        assert_leaks(&fx, &reports, leak);
        assert_top_site(&fx, &reports, leak);
    });
}

#[test]
fn chan_send() {
    single_leak("chan_send", &CHAN_SEND);
}

#[test]
fn waitgroup() {
    if !require_root() {
        return;
    }
    for_each_toolchain("waitgroup", |tc| {
        let fx = Fixture::build(tc, "waitgroup");
        let reports = trace(&fx);
        assert_leaks(&fx, &reports, &WG_WAIT);
        assert_top_site(&fx, &reports, &WG_WAIT);
        // The one worker that does call Done exits: ~50/s.
        assert_churns(&fx, &reports, "OK:wg_worker", 100);
    });
}

#[test]
fn context_leak() {
    single_leak("context_leak", &CTX_NEVER_CANCELLED);
}

#[test]
fn churn() {
    if !require_root() {
        return;
    }
    for_each_toolchain("churn", |tc| {
        let fx = Fixture::build(tc, "churn");
        let reports = trace(&fx);
        assert_churns(&fx, &reports, "OK:churn", 100);
        assert_not_growing(&fx, &reports, "OK:pool");
    });
}

#[test]
fn mixed() {
    if !require_root() {
        return;
    }
    for_each_toolchain("mixed", |tc| {
        let fx = Fixture::build(tc, "mixed");
        let reports = trace(&fx);
        for leak in [&CHAN_SEND, &WG_WAIT, &CTX_NEVER_CANCELLED] {
            assert_leaks(&fx, &reports, leak);
        }
        assert_churns(&fx, &reports, "OK:churn", 100);
        assert_churns(&fx, &reports, "OK:wg_worker", 100);
        assert_not_growing(&fx, &reports, "OK:pool");
    });
}

#[test]
fn demo() {
    if !require_root() {
        return;
    }
    for_each_toolchain("demo", |tc| {
        let fx = Fixture::demo(tc);
        let reports = trace(&fx);
        // ~100 req/s, about half time out and leak their pricing goroutine.
        assert_leaks(&fx, &reports, &DEMO_PRICING);
        assert_top_site(&fx, &reports, &DEMO_PRICING);
        assert_churns(&fx, &reports, "OK:log_writer", 100);
        assert_churns(&fx, &reports, "OK:request", 100);
        assert_not_growing(&fx, &reports, "OK:cache_pool");
    });
}

/// Position-independent executables (`-buildmode=pie`, the default on some
/// distributions): the load bias comes from /proc/PID/maps, and the leak is still
/// reported at its `go` statement.
#[test]
fn pie_binary() {
    if !require_root() {
        return;
    }
    for_each_toolchain("pie", |tc| {
        let src = fixture_source("chan_send");
        let bin = build_go_program_with_flags(tc, &src, "chan_send_pie", &["-buildmode=pie"]);
        let _serial = serial_guard();
        let proc = RunningGo::spawn(&bin, &[], "ready");
        let reports = run_gleak_attach(proc.pid(), &["--duration", "3s", "--interval", "10s", "--top", "100"]);
        let last = reports.last().expect("a final report");
        let line = marker_line("chan_send", "LEAK:chan_send");
        let site = find_site(last, "fixtures/chan_send.go", line)
            .unwrap_or_else(|| panic!("{tc}: PIE leak site missing\n{}", describe_sites(last, 10)));
        assert_eq!(site["verdict"], "leak", "{tc}: {site}");
        assert_eq!(site["top_wait_reason"], "chan send", "{tc}: {site}");
        let stack = site["stack"].as_array().unwrap();
        assert!(stack.iter().any(|f| f["function"] == "main.main"), "{tc}: {site}");
    });
}

/// The human table on a pipe: plain ASCII, a TREND sparkline per site. The
/// growing leak's line rises from its lowest level to its highest (`_` … `#`);
/// `--color always` draws it with Unicode blocks.
#[test]
fn human_table_shows_the_trend() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let fx = Fixture::build(&tc, "chan_send");
    let _serial = serial_guard();
    let proc = fx.start();
    let pid = proc.pid().to_string();
    let line_of = |run: &GleakRun, what: &str| -> (String, String) {
        assert!(run.status.success(), "{fx}: {what}\n{run}");
        let header =
            run.stdout.lines().find(|l| l.contains("VERDICT")).unwrap_or_else(|| panic!("{fx}: no table\n{run}"));
        let at = format!("{}:{}", fx.source.file_name().unwrap().to_string_lossy(), fx.marker_line("LEAK:chan_send"));
        let row =
            run.stdout.lines().find(|l| l.contains(&at)).unwrap_or_else(|| panic!("{fx}: no row for {at}\n{run}"));
        (header.to_string(), row.to_string())
    };
    let run =
        run_gleak(&["attach", "-p", &pid, "--duration", "4s", "--interval", "1h"], std::time::Duration::from_secs(60));
    let (header, row) = line_of(&run, "plain");
    assert!(header.contains("TREND"), "{fx}: {header}");
    assert!(row.is_ascii(), "{fx}: not plain ASCII on a pipe: {row}");
    let spark = row.split_whitespace().nth(3).unwrap_or_default();
    assert!(
        spark.len() >= 3 && spark.starts_with('_') && spark.ends_with('#'),
        "{fx}: the leak's trend does not rise: {row}"
    );

    let run = run_gleak(
        &["attach", "-p", &pid, "--duration", "3s", "--interval", "1h", "--color", "always"],
        std::time::Duration::from_secs(60),
    );
    let (_, row) = line_of(&run, "--color always");
    assert!(row.contains('▁') && row.contains('█'), "{fx}: no Unicode sparkline with --color always: {row}");
}
