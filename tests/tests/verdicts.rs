//! End-to-end: the v2 report (docs/report.schema.json) and its verdicts on
//! fixtures built to tell leaks from long-lived goroutines that are fine.
//!
//! Each test builds its fixture with every Go toolchain, starts it, attaches
//! `gleak attach -p PID --json` for 6 s and checks every report against the
//! schema, then the fixture's own facts. Positive verdicts (`leak`) are asked
//! of the final report, whose window is the longest; negative ones ("not
//! `leak`") of every report, since a false alarm is never acceptable.
//!
//! Needs root and a release build of gleak (`cargo build --release`, or set
//! GLEAK_BIN).

use gleak_tests::*;

/// 6 s of tracing, reports every 2 s, every site (the pool fixture has few
/// goroutines per site, slowleak has one big and one small site).
const ATTACH_ARGS: &[&str] = &["--duration", "6s", "--interval", "2s", "--top", "200"];

/// Starts `fx`, traces it and returns the reports, checked against the schema
/// and the v1 invariants (pid, `final`, sort order, `top_wait_reason`).
fn trace(fx: &Fixture) -> Vec<Value> {
    let _serial = serial_guard();
    let mut proc = fx.start();
    let pid = proc.pid();
    let reports = run_gleak_attach(pid, ATTACH_ARGS);
    proc.assert_running("after gleak detached");
    check_reports_schema(&reports);
    check_report_stream(&reports, pid);
    check_reports_target(&reports, fx);
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r["mode"], "attach", "{fx}: report {i}: `mode`");
    }
    assert!(reports.len() >= 2, "{fx}: expected interval reports plus a final one, got {} report(s)", reports.len());
    reports
}

fn last(reports: &[Value]) -> &Value {
    &reports[reports.len() - 1]
}

/// The site of `// <marker>` in `report`; panics with the report's sites when
/// it is missing. `which` names the report in the message ("first", "final").
fn site_at<'a>(fx: &Fixture, report: &'a Value, marker: &str, which: &str) -> &'a Value {
    marker_site(report, fx, marker).unwrap_or_else(|| {
        panic!(
            "{fx}: site {}:{} (// {marker}) missing from the {which} report\n{}",
            fx.file_suffix(),
            fx.marker_line(marker),
            describe_sites(report, 15)
        )
    })
}

/// The site of `// <marker>` has verdict `want` in the final report.
fn assert_verdict(fx: &Fixture, reports: &[Value], marker: &str, want: &str) {
    let r = last(reports);
    let site = site_at(fx, r, marker, "final");
    assert_eq!(
        verdict(site),
        want,
        "{fx}: // {marker}: verdict {:?} ({}), want {want:?}\n{site}\n{}",
        verdict(site),
        site["verdict_reason"],
        describe_sites(r, 15)
    );
}

/// The site of `// <marker>`, where present, is never `leak` (nor any of
/// `forbidden`) in any report.
fn assert_never(fx: &Fixture, reports: &[Value], marker: &str, forbidden: &[&str]) {
    for (i, r) in reports.iter().enumerate() {
        if let Some(site) = marker_site(r, fx, marker) {
            let v = verdict(site);
            assert!(
                !forbidden.contains(&v),
                "{fx}: // {marker}: verdict {v:?} ({}) in report {i} of {}; must not be one of {forbidden:?}\n{site}\n{}",
                site["verdict_reason"],
                reports.len(),
                describe_sites(r, 15)
            );
        }
    }
}

fn for_fixture(name: &str, check: impl Fn(&Fixture, &[Value])) {
    if !require_root() {
        return;
    }
    for_each_toolchain(name, |tc| {
        let fx = Fixture::build(tc, name);
        let reports = trace(&fx);
        check(&fx, &reports);
    });
}

/// 500 goroutines leaked and parked before gleak attached are in the first
/// report already, read from the goroutine table: counted as pre-existing,
/// with their wait reason and (set by the fixture's GCs) how long they have
/// been blocked.
#[test]
fn preattach() {
    for_fixture("preattach", |fx, reports| {
        let first = &reports[0];
        let totals_pre = first["totals"]["preexisting"].as_u64().unwrap_or(0);
        assert!(
            totals_pre >= 500,
            "{fx}: totals.preexisting={totals_pre} in the first report, want >= 500\n{}",
            describe_sites(first, 10)
        );
        let site = site_at(fx, first, "LEAK:preattach", "first");
        let ctx = || format!("{fx}: // LEAK:preattach in the first report: {site}");
        let (pre, live, blocked) = (count(site, "preexisting"), count(site, "live"), count(site, "blocked"));
        assert!(pre >= 500, "preexisting={pre}, want >= 500\n{}", ctx());
        assert!(live >= 500, "live={live}, want >= 500\n{}", ctx());
        assert!(blocked >= 500, "blocked={blocked}, want >= 500\n{}", ctx());
        assert_eq!(site["top_wait_reason"].as_str(), Some("chan send"), "top_wait_reason\n{}", ctx());
        assert!(
            site["wait_reasons"]["chan send"].as_u64() >= Some(500),
            "wait_reasons[\"chan send\"] < 500\n{}",
            ctx()
        );
        let blocked_max = site["blocked_s"]["max"].as_f64();
        assert!(
            blocked_max.is_some_and(|m| m > 0.0),
            "blocked_s.max={blocked_max:?}, want > 0 (g.waitsince is set by the fixture's GCs)\n{}",
            ctx()
        );
        // Nothing is created after ready: the site stays the same size.
        let end = site_at(fx, last(reports), "LEAK:preattach", "final");
        assert_eq!(
            count(end, "live"),
            live,
            "{fx}: live changed while the fixture was idle\nfirst {site}\nfinal {end}"
        );
    });
}

/// A fixed worker pool and two background loops, all created while traced:
/// long-lived but constant, so never `leak`; the pool is `stable`.
#[test]
fn pool() {
    for_fixture("pool", |fx, reports| {
        for (i, r) in reports.iter().enumerate() {
            if let Some(s) = sites(r).iter().find(|s| verdict(s) == "leak") {
                panic!(
                    "{fx}: report {i} of {} has a `leak` site, the pool fixture leaks nothing: {s}\n{}",
                    reports.len(),
                    describe_sites(r, 15)
                );
            }
        }
        for marker in ["STABLE:ticker", "STABLE:select_loop"] {
            assert_never(fx, reports, marker, &["leak", "suspect"]);
        }
        if let Some(site) = marker_site(last(reports), fx, "STABLE:pool") {
            assert_eq!(
                verdict(site),
                "stable",
                "{fx}: // STABLE:pool: verdict {:?} ({}), want \"stable\"\n{site}",
                verdict(site),
                site["verdict_reason"]
            );
            assert_eq!(count(site, "live"), 8, "{fx}: the pool has 8 workers\n{site}");
        }
    });
}

/// A slow leak (5/s) next to 2000 idle pre-existing goroutines: the small
/// growing site is the `leak`, the big constant one is not.
#[test]
fn slowleak() {
    for_fixture("slowleak", |fx, reports| {
        assert_verdict(fx, reports, "LEAK:slow", "leak");
        let slow = site_at(fx, last(reports), "LEAK:slow", "final");
        assert_eq!(slow["top_wait_reason"].as_str(), Some("chan send"), "{fx}: // LEAK:slow\n{slow}");
        let pop = site_at(fx, last(reports), "STABLE:population", "final");
        assert!(
            count(pop, "preexisting") >= 2000 && count(pop, "live") >= 2000,
            "{fx}: // STABLE:population: want preexisting and live >= 2000\n{pop}"
        );
        assert_never(fx, reports, "STABLE:population", &["leak"]);
    });
}

/// One leaking `go` statement reached through pathA and pathB -> helperB:
/// the site lists both creation paths, each starting at the `go` statement.
#[test]
fn twopaths() {
    for_fixture("twopaths", |fx, reports| {
        let r = last(reports);
        let site = site_at(fx, r, "LEAK:twopaths", "final");
        let line = fx.marker_line("LEAK:twopaths");
        let paths = site["paths"].as_array().map_or(&[][..], Vec::as_slice);
        let stacks: Vec<Vec<&str>> = paths.iter().map(|p| stack_functions(&p["stack"])).collect();
        let ctx = || format!("{fx}: // LEAK:twopaths: paths {stacks:?}\n{site}");
        assert!(paths.len() >= 2, "want >= 2 paths\n{}", ctx());
        let mut distinct = stacks.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), stacks.len(), "paths with equal stacks\n{}", ctx());
        for p in paths {
            let top = &p["stack"][0];
            assert!(
                top["function"] == "main.startWorker" && top["line"].as_u64() == Some(line.into()),
                "a path does not start at the go statement main.startWorker:{line}: {p}\n{}",
                ctx()
            );
        }
        assert!(stacks.iter().any(|s| s.contains(&"main.helperB")), "no path through main.helperB\n{}", ctx());
        assert!(
            stacks.iter().any(|s| s.contains(&"main.pathA") && !s.contains(&"main.helperB")),
            "no path through main.pathA alone\n{}",
            ctx()
        );
        assert_verdict(fx, reports, "LEAK:twopaths", "leak");
    });
}

/// Goroutines blocked on a nil channel or in `select {}` can never wake up:
/// `leak`, with the target runtime's own names for those waits (numbered
/// 3/10 on Go 1.19, 15/17 on Go 1.26).
#[test]
fn nilchan() {
    for_fixture("nilchan", |fx, reports| {
        for (marker, reason) in [("LEAK:nilchan", "chan receive (nil chan)"), ("LEAK:selectnone", "select (no cases)")]
        {
            assert_verdict(fx, reports, marker, "leak");
            let site = site_at(fx, last(reports), marker, "final");
            assert_eq!(site["top_wait_reason"].as_str(), Some(reason), "{fx}: // {marker}\n{site}");
        }
    });
}

/// The classic leak: `leak`, and where it comes from is visible (the
/// creation stack reaches main.main, or the parent chain is known).
#[test]
fn chan_send() {
    for_fixture("chan_send", |fx, reports| {
        assert_verdict(fx, reports, "LEAK:chan_send", "leak");
        let site = site_at(fx, last(reports), "LEAK:chan_send", "final");
        let stack = stack_functions(&site["stack"]);
        let chain = site["parent_chain"].as_array().map_or(0, Vec::len);
        assert!(
            chain > 0 || stack.contains(&"main.main"),
            "{fx}: // LEAK:chan_send: empty parent_chain and no main.main in the stack {stack:?}\n{site}"
        );
    });
}

/// With `--trace-parks` (a probe on gopark's `CALL runtime.mcall`), every blocked
/// goroutine created during the trace has an exact blocked time, at most its age,
/// and the wait reason the probe read from `g.waitreason` names the right wait.
#[test]
fn trace_parks_times_every_block() {
    if !require_root() {
        return;
    }
    for_each_toolchain("trace_parks", |tc| {
        let fx = Fixture::build(tc, "chan_send");
        let _serial = serial_guard();
        let proc = fx.start();
        let reports = run_gleak_attach(proc.pid(), &["--duration", "3s", "--interval", "10s", "--trace-parks"]);
        check_reports_schema(&reports);
        let site = site_at(&fx, last(&reports), "LEAK:chan_send", "final");
        assert_eq!(site["verdict"], "leak", "{fx}: {site}");
        let blocked = &site["blocked_s"];
        let (p50, max) = (blocked["p50"].as_f64(), blocked["max"].as_f64());
        assert!(p50.is_some_and(|v| v > 0.0) && max.is_some_and(|v| v > 0.5), "{fx}: blocked_s={blocked}\n{site}");
        let oldest_traced = site["goroutines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| !g["age_s"].is_null())
            .map(|g| (g["blocked_s"].as_f64(), g["age_s"].as_f64().unwrap(), g["wait_reason"].clone()))
            .collect::<Vec<_>>();
        for (blocked, age, reason) in &oldest_traced {
            let blocked = blocked.unwrap_or_else(|| panic!("{fx}: a traced goroutine with no blocked time\n{site}"));
            assert!(blocked <= age + 0.01, "{fx}: blocked {blocked}s > age {age}s\n{site}");
            assert_eq!(reason, "chan send", "{fx}: {site}");
        }
    });
}
