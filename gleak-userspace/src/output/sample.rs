//! Reports made up for the printers' unit tests.

use std::collections::BTreeMap;

use crate::{
    analysis::verdict::Verdict,
    binary::symbolize::Frame,
    output::report::{
        BlockedAt, Gate, KernelCounters, PathReport, Percentiles, ProofReport, Rates, Report, SiteReport, Totals, Trend,
    },
    runtime::debuginfo::FactSources,
};

pub(crate) fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame { function: function.into(), file: file.into(), line }
}

pub(crate) fn report(sites: Vec<SiteReport>) -> Report {
    let live = sites.iter().fold(0u64, |sum, s| sum.saturating_add(s.live));
    Report {
        pid: 4242,
        ns_pid: None,
        binary: "/srv/bin/orders".into(),
        go_version: "go1.23.4".into(),
        runtime_facts: FactSources::default(),
        gaps: Vec::new(),
        mode: "run",
        elapsed_s: 12.5,
        is_final: true,
        target_exited: false,
        totals: Totals { created: 900, exited: 600, live, preexisting: 2 },
        lost_events: 0,
        kernel: KernelCounters::default(),
        reconciled_exits: 0,
        reconciled_creations: 0,
        sites,
        proof: None,
        gate: None,
        tests: Vec::new(),
        known_leaks: None,
        memory: None,
    }
}

/// A site at `function` (`file`:`line`) whose live count went through `series`.
pub(crate) fn site(verdict: Verdict, function: &str, file: &str, line: u32, series: Vec<u64>) -> SiteReport {
    let live = series.last().copied().unwrap_or(0);
    let created = live.saturating_add(10);
    let go_frame = frame(function, file, line);
    let root = frame("main.main", "/src/orders/main.go", 88);
    SiteReport {
        verdict,
        verdict_reason: format!("{} for the test", verdict.as_str()),
        function: function.into(),
        file: file.into(),
        line,
        go_func: format!("{function}.func1"),
        pc: "0x4a1000".into(),
        live,
        created,
        exited: 10,
        preexisting: 0,
        adopted: 0,
        trend: Trend {
            window_s: 10.0,
            live_start: series.first().copied().unwrap_or(0),
            live_end: live,
            live_per_s: 1.0,
            live_series: series,
        },
        rates: Rates { created_per_s: 2.0, exited_per_s: 1.0 },
        oldest_age_s: Some(9.0),
        age_s: None,
        blocked: live,
        blocked_s: Some(Percentiles { p50: 4.0, p90: 8.0, p99: 9.0, max: 9.5 }),
        top_wait_reason: Some("chan send".into()),
        wait_reasons: BTreeMap::from([("chan send".into(), live), ("select".into(), 1)]),
        goroutines: Vec::new(),
        states: BTreeMap::new(),
        stack_bytes: 8192,
        lifetime_p50_ms: None,
        stack: vec![go_frame.clone(), root.clone()],
        paths: vec![PathReport { live, created, stack: vec![go_frame.clone(), root], locations: Vec::new() }],
        blocked_at: vec![BlockedAt {
            goroutines: live,
            wait_reason: "chan send".into(),
            at: frame(&format!("{function}.func1"), file, line + 1),
            stack: Vec::new(),
            locations: Vec::new(),
        }],
        wait_objects: None,
        proven: 0,
        retained: None,
        held_by: None,
        parent_chain: Vec::new(),
        fingerprint: format!("{function} | {function}.func1 | {function}.func1"),
        ignored: None,
    }
}

pub(crate) fn leaky_report() -> Report {
    let leak =
        site(Verdict::Leak, "main.handleRequest", "/src/orders/handler.go", 42, (0..=25).map(|i| i * 2).collect());
    let pool = site(Verdict::Stable, "main.startWorkers", "/src/orders/pool.go", 17, vec![8; 26]);
    // Connections come and go; created through a deeper stack sharing main.main.
    let busy = [3, 5, 2, 4, 6, 3, 1, 4, 5, 2, 3, 6, 4, 2, 5, 3, 4, 1, 3, 5, 2, 4, 6, 3, 5, 4];
    let mut conns =
        site(Verdict::Ok, "net/http.(*Server).Serve", "/usr/lib/go/src/net/http/server.go", 3285, busy.into());
    conns.paths[0].stack = vec![
        frame("net/http.(*Server).Serve", "/usr/lib/go/src/net/http/server.go", 3285),
        frame("net/http.(*Server).ListenAndServe", "/usr/lib/go/src/net/http/server.go", 3210),
        frame("main.main", "/src/orders/main.go", 88),
    ];
    let mut r = report(vec![leak, pool, conns]);
    r.proof = Some(ProofReport {
        candidates: 50,
        proven: 50,
        inconclusive: None,
        heap_bytes: 4 << 20,
        bytes_read: 1 << 20,
        elapsed_ms: 3.2,
    });
    r.gate = Some(Gate {
        fail_on: Verdict::Leak,
        failed: true,
        leaked_goroutines: 50,
        command_status: Some(0),
        exit_code: 1,
        stopped_at_deadline: true,
        interrupted: false,
        fail_on_outlived: false,
        outlived_goroutines: 0,
        failed_tests: Vec::new(),
    });
    r
}
