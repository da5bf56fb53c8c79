//! Lost events. On purpose: a 4 KiB ring buffer (50-odd events) drained every
//! 20 ms cannot keep up with `mixed`'s bursts of short goroutines. The report must
//! say so, count the loss, and still come out right: reconciliation with the
//! goroutine table in memory finds the leaked goroutines whose creation was lost
//! and retires the ones whose exit was. And not by accident: the intake drains the
//! ring while reports are built.

use std::time::Duration;

use gleak_tests::*;

#[test]
fn report_is_right_despite_lost_events() {
    if !require_root() {
        return;
    }
    for_each_toolchain("event_loss", |tc| {
        let fx = Fixture::build(tc, "mixed");
        let _serial = serial_guard();
        // 100 ticks: each leaks one goroutine at each of three sites, then stops.
        // Bursts of 200 fill the ring (it holds 3 batches of 16 creations), and
        // the leaks are made halfway through each, without a pause: batches with
        // their creations, not only deaths, are lost. (A batch still being filled
        // when gleak drains is read from its map, so only full batches are lost.)
        let proc = fx.start_with_args(&["-max", "100", "-fanout", "200", "-midway"]);
        let pid = proc.pid().to_string();
        let args = ["attach", "-p", &pid, "--json", "--duration", "4s", "--interval", "1s", "--top", "100"];
        let run = GleakChild::spawn(&gleak_bin(), &args, |cmd| {
            cmd.env("GLEAK_RING_BUFFER_BYTES", "4096");
        })
        .wait(Duration::from_secs(60));
        assert!(run.status.success(), "{run}");
        let reports = json_reports(&run);
        check_report_stream(&reports, proc.pid());
        let last = reports.last().unwrap();
        let ringbuf_full = count(&last["kernel"], "ringbuf_full");
        assert!(ringbuf_full > 0, "{fx}: no event was lost with a 4 KiB ring buffer: {}", last["kernel"]);
        assert_eq!(count(last, "lost_events"), ringbuf_full + count(&last["kernel"], "read_failed"));
        let creations_lost = ringbuf_full - count(&last["kernel"], "exits_lost");
        assert!(creations_lost > 0, "{fx}: only deaths were lost: {}", last["kernel"]);
        assert!(
            count(last, "reconciled_creations") > 0,
            "{fx}: no lost creation recovered from memory: {}\n{}",
            last["kernel"],
            describe_sites(last, 10)
        );
        for (marker, reason) in
            [("LEAK:chan_send", "chan send"), ("LEAK:wg_wait", ""), ("LEAK:ctx_never_cancelled", "select")]
        {
            let line = fx.marker_line(marker);
            let site = find_site(last, &fx.file_suffix(), line)
                .unwrap_or_else(|| panic!("{fx}: // {marker} missing\n{}", describe_sites(last, 10)));
            assert_eq!(
                count(site, "live"),
                100,
                "{fx}: // {marker}: every leaked goroutine, lost events or not\n{site}"
            );
            assert_eq!(site["verdict"], "leak", "{fx}: // {marker}\n{site}");
            if !reason.is_empty() {
                assert_eq!(site["top_wait_reason"], reason, "{fx}: // {marker}\n{site}");
            }
        }
        // The short-lived goroutines are all gone, whatever events were lost.
        let churn = find_site(last, &fx.file_suffix(), fx.marker_line("OK:churn"));
        if let Some(site) = churn {
            assert!(count(site, "live") <= 210, "{fx}: churn goroutines left live: {site}");
        }
    });
}

/// The intake keeps draining while a report is built: with 100 000 goroutines to
/// read at every report (most of a second each) and 8 000 events a second from
/// short-lived goroutines, a 128 KiB ring (1 600 events, 0.2 s) overflows at every
/// report unless something empties it meanwhile. Nothing may be lost, and every
/// short-lived goroutine is seen born and seen exit.
#[test]
fn intake_keeps_up_while_reports_are_built() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let fx = Fixture::build(&tc, "preattach");
    let _serial = serial_guard();
    let proc = fx.start_with_args(&["-n", "100000", "-churn", "40"]);
    let pid = proc.pid().to_string();
    let args = ["attach", "-p", &pid, "--json", "--duration", "5s", "--interval", "1s"];
    let run = GleakChild::spawn(&gleak_bin(), &args, |cmd| {
        cmd.env("GLEAK_RING_BUFFER_BYTES", "131072");
    })
    .wait(Duration::from_secs(120));
    assert!(run.status.success(), "{run}");
    let reports = json_reports(&run);
    check_report_stream(&reports, proc.pid());
    // Reports while tracing, not only the final one: the intake was tested while
    // they were built. (How many fit in 5 s depends on the machine's load: a
    // report of 100 000 goroutines takes most of a second, the first one more.)
    assert!(reports.len() >= 3, "{fx}: reports every second for 5 s: only {} reports\n{run}", reports.len());
    let last = reports.last().unwrap();
    assert_eq!(count(last, "lost_events"), 0, "{fx}: events lost while reports were built: {}", last["kernel"]);
    assert!(count(&last["totals"], "preexisting") >= 100_000, "{fx}: {}", last["totals"]);
    let churn = marker_site(last, &fx, "OK:preattach_churn")
        .unwrap_or_else(|| panic!("{fx}: no churn site\n{}", describe_sites(last, 10)));
    // 4 000 a second for about 5 s; the 40 of the last tick may still be alive.
    let created = count(churn, "created");
    assert!(created >= 10_000, "{fx}: only {created} short-lived goroutines seen born\n{churn}");
    assert!(count(churn, "live") <= 40, "{fx}: short-lived goroutines left live\n{churn}");
    // Churn goroutines running at attach were born before it: their exits count,
    // their births are the site's `adopted`.
    let adopted = count(churn, "adopted");
    assert_eq!(count(churn, "exited") + count(churn, "live"), created + adopted, "{fx}\n{churn}");
    assert_eq!(verdict(churn), "ok", "{fx}\n{churn}");
}

/// `--no-exit-probe`: one probe hit per goroutine life. Exits come from memory
/// (a `g` reused by a new goroutine, the goroutine table read every second), so
/// short-lived goroutines are still all seen to exit, and the leaked ones stay.
#[test]
fn exits_are_derived_without_the_exit_probe() {
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain");
    let fx = Fixture::build(&tc, "preattach");
    let _serial = serial_guard();
    let proc = fx.start_with_args(&["-n", "500", "-churn", "40"]);
    let pid = proc.pid().to_string();
    let args = ["attach", "-p", &pid, "--json", "--duration", "4s", "--interval", "1h", "--no-exit-probe"];
    let run = GleakChild::spawn(&gleak_bin(), &args, |_| {}).wait(Duration::from_secs(60));
    assert!(run.status.success(), "{run}");
    assert!(
        !run.stderr.contains("runtime.gdestroy") && !run.stderr.contains("runtime.goexit0"),
        "{fx}: an exit probe was placed\n{run}"
    );
    let reports = json_reports(&run);
    check_report_stream(&reports, proc.pid());
    let last = reports.last().unwrap();
    let churn = marker_site(last, &fx, "OK:preattach_churn")
        .unwrap_or_else(|| panic!("{fx}: no churn site\n{}", describe_sites(last, 10)));
    let created = count(churn, "created");
    assert!(
        created >= 8_000,
        "{fx}: only {created} short-lived goroutines seen born (4 000 a second for 4 s)\n{churn}"
    );
    // Churn goroutines running at attach were born before it: their exits count,
    // their births are the site's `adopted`.
    let adopted = count(churn, "adopted");
    assert_eq!(count(churn, "exited") + count(churn, "live"), created + adopted, "{fx}\n{churn}");
    // The last second's goroutines may not be read as gone yet: 100 ticks of 40.
    assert!(count(churn, "live") <= 4_000, "{fx}: short-lived goroutines left live\n{churn}");
    assert!(count(churn, "exited") >= created - 4_000, "{fx}\n{churn}");
    assert_eq!(verdict(churn), "ok", "{fx}\n{churn}");
    let leak = marker_site(last, &fx, "LEAK:preattach")
        .unwrap_or_else(|| panic!("{fx}: no leak site\n{}", describe_sites(last, 10)));
    assert_eq!(count(leak, "live"), 500, "{fx}\n{leak}");
    assert_eq!(verdict(leak), "leak", "{fx}\n{leak}");
}
