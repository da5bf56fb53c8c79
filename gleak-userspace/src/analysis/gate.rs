//! `gleak run`'s leak gate: at the command's exit, the goroutines the program
//! created (not the runtime, not the testing framework) that are still alive are
//! leaks, as goleak counts them.

use std::collections::HashSet;

use nix::sys::signal::Signal;

use crate::{
    analysis::{known_leaks::KnownLeaks, verdict::Verdict},
    binary::symbolize::package_of,
    output::report::{Gate, Report, SiteReport, TestReport, TestStatus},
    runtime::package_roles::PackageRole,
};

/// Goroutines that are infrastructure, not the program's (the runtime, the
/// testing framework, signal delivery: see [`PackageRole::is_infrastructure`]),
/// and the main goroutine, the one calling exit.
pub fn is_infrastructure(function: &str) -> bool {
    function == crate::tracing::sitecache::MAIN_GOROUTINE || PackageRole::of_function(function).is_infrastructure()
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself with this status (exit code, or 128 + signal).
    /// `states_known`: it was held at `runtime.exit` while its goroutines were read;
    /// false when it ended some other way (killed by a signal).
    Exited { status: i32, states_known: bool },
    /// gleak froze it and judged it while it still ran: at the deadline (`signal`
    /// `None`), or because gleak received `signal` (SIGINT, SIGTERM or SIGHUP).
    Stopped { signal: Option<Signal> },
    /// It exec'd another program (no longer traced), which then exited with `status`.
    Exec { status: i32 },
}

/// Decides the gate. At an exit, every site is re-judged as goleak would: the
/// program's goroutines still alive are leaks. When gleak stops a command that was
/// still running, live goroutines are expected (a server's workers): the tracing
/// verdicts stand, so only sites that were leaking fail it. In a test binary the
/// leaks are blamed on the tests they descend from; with `fail_on_outlived`,
/// goroutines that outlived their test fail it too.
pub fn decide(report: &mut Report, fail_on: Verdict, fail_on_outlived: bool, ending: Ending) {
    decide_with_known_leaks(report, fail_on, fail_on_outlived, ending, &mut KnownLeaks::default());
}

/// [`decide`], not counting the leaks `known` covers (`--ignore`, `--baseline`):
/// they stay in the report, marked `ignored`, and blame no test. An expired
/// `--ignore` entry fails it.
pub fn decide_with_known_leaks(
    report: &mut Report,
    fail_on: Verdict,
    fail_on_outlived: bool,
    ending: Ending,
    known: &mut KnownLeaks,
) {
    report.mode = "run";
    report.target_exited = matches!(ending, Ending::Exited { .. });
    let mut leaked = 0;
    // The sites whose live goroutines count, by `pc`.
    let mut counted: HashSet<String> = HashSet::new();
    for site in &mut report.sites {
        if let (Ending::Exited { .. }, Some(hung)) = (ending, hung_test(site)) {
            (site.verdict, site.verdict_reason) = (Verdict::Leak, hung.reason);
            if site.verdict <= fail_on {
                let counts = known.gate(site, hung.goroutines);
                if counts > 0 {
                    leaked += counts;
                    counted.insert(site.pc.clone());
                }
            }
            continue;
        }
        if is_infrastructure(&site.function) {
            if site.live > 0 && site.verdict <= fail_on {
                site.verdict = Verdict::Ok;
                site.verdict_reason =
                    format!("created by {}: infrastructure, ignored as goleak does", package_of(&site.function));
            }
            continue;
        }
        if let Ending::Exited { states_known, .. } = ending {
            if let Some(judged) = judge_at_exit(site, states_known) {
                (site.verdict, site.verdict_reason) = judged;
            }
        }
        if site.live > 0 && site.verdict <= fail_on {
            let counts = known.gate(site, site.live);
            if counts > 0 {
                leaked += counts;
                counted.insert(site.pc.clone());
            }
        }
    }
    for test in &mut report.tests {
        test.settle(|pc| counted.contains(pc));
    }
    let outlived: u64 = report.tests.iter().map(TestReport::outlived_goroutines).sum();
    let failed_tests = report
        .tests
        .iter()
        .filter(|t| t.status == TestStatus::Leaked || (fail_on_outlived && !t.outlived.is_empty()))
        .map(|t| t.name.clone())
        .collect();
    let failed = leaked > 0 || (fail_on_outlived && outlived > 0) || known.any_expired();
    report.known_leaks = known.report();
    use crate::error::exit_code::{LEAK, OK};
    let (command_status, exit_code) = match ending {
        Ending::Exited { status, .. } | Ending::Exec { status } => (Some(status), if failed { LEAK } else { status }),
        Ending::Stopped { signal } => (
            None,
            match signal {
                _ if failed => LEAK,
                Some(signal) => exit_code_for_signal(signal),
                None => OK,
            },
        ),
    };
    report.gate = Some(Gate {
        fail_on,
        failed,
        leaked_goroutines: leaked,
        command_status,
        exit_code,
        stopped_at_deadline: ending == Ending::Stopped { signal: None },
        interrupted: matches!(ending, Ending::Stopped { signal: Some(_) }),
        fail_on_outlived,
        outlived_goroutines: outlived,
        failed_tests,
    });
}

/// `gleak run`'s exit code when `signal` stopped it and no leak was found: 128 +
/// the signal, as a shell reports a command the signal killed.
pub fn exit_code_for_signal(signal: Signal) -> i32 {
    use crate::error::exit_code::{HANGUP, INTERRUPTED, TERMINATED};
    match signal {
        Signal::SIGHUP => HANGUP,
        Signal::SIGINT => INTERRUPTED,
        Signal::SIGTERM => TERMINATED,
        other => 128 + other as i32,
    }
}

/// Test goroutines of package `testing` blocked in the test's own code when the
/// program ended: a test that hung (and usually died by `-test.timeout`).
struct HungTest {
    goroutines: u64,
    reason: String,
}

/// The test goroutines (`tRunner`, created in package `testing`) of `site` stuck
/// in code outside `testing` and the runtime's machinery, if any: the framework's
/// own bookkeeping goroutines block inside `testing` and stay ignored.
fn hung_test(site: &SiteReport) -> Option<HungTest> {
    if !PackageRole::of_function(&site.function).is_test_runner() || site.live == 0 {
        return None;
    }
    let stuck: Vec<_> = site
        .blocked_at
        .iter()
        .filter(|b| {
            let role = PackageRole::of_function(&b.at.function);
            !role.is_test_runner() && !role.is_blocking_machinery()
        })
        .collect();
    let first = stuck.first()?;
    let goroutines = stuck.iter().map(|b| b.goroutines).sum();
    Some(HungTest {
        goroutines,
        reason: format!(
            "a test hung: {goroutines} test goroutine(s) still blocked in {} at {}:{} ({}) when the program ended",
            first.at.function, first.at.file, first.at.line, first.wait_reason
        ),
    })
}

/// A site's verdict as of the program's exit; `None` if nothing of it is left.
fn judge_at_exit(site: &SiteReport, states_known: bool) -> Option<(Verdict, String)> {
    if site.live == 0 {
        return None;
    }
    let n = site.live;
    if !states_known {
        return Some((
            Verdict::Leak,
            format!(
                "{n} goroutines still alive when the program ended (it did not exit through runtime.exit, so their states are unknown)"
            ),
        ));
    }
    // Blocked in the scheduler or in a system call: neither would have finished.
    let in_syscall = site.states.get("syscall").copied().unwrap_or(0);
    let stuck = site.blocked + in_syscall;
    let reason = site.top_wait_reason.as_deref().unwrap_or(if in_syscall > 0 { "a system call" } else { "?" });
    Some(if stuck >= n {
        (Verdict::Leak, format!("{n} goroutines still alive, blocked on {reason}, when the program exited"))
    } else if stuck > 0 {
        (
            Verdict::Leak,
            format!(
                "{n} goroutines still alive when the program exited: {stuck} blocked on {reason}, the rest running"
            ),
        )
    } else {
        (
            Verdict::Suspect,
            format!("{n} goroutines still running when the program exited (finishing, or busy forever?)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages() {
        assert_eq!(package_of("net/http.(*Server).Serve"), "net/http");
        assert_eq!(package_of("main.main.func1"), "main");
        assert_eq!(package_of("testing.(*T).Run"), "testing");
        assert_eq!(package_of("github.com/a/b.c.D"), "github.com/a/b");
        assert!(is_infrastructure("runtime.gcBgMarkWorker"));
        assert!(is_infrastructure("testing.tRunner"));
        assert!(is_infrastructure("os/signal.Notify.func1"));
        assert!(is_infrastructure("runtime/trace.Start.func1"));
        assert!(!is_infrastructure("main.leak"));
        assert!(is_infrastructure("main goroutine"));
        assert!(!is_infrastructure("runtimex.foo"));
    }

    #[test]
    fn signal_exit_codes() {
        use crate::error::exit_code::{HANGUP, INTERRUPTED, TERMINATED};
        assert_eq!(exit_code_for_signal(Signal::SIGINT), INTERRUPTED);
        assert_eq!(exit_code_for_signal(Signal::SIGTERM), TERMINATED);
        assert_eq!(exit_code_for_signal(Signal::SIGHUP), HANGUP);
        assert_eq!((HANGUP, INTERRUPTED, TERMINATED), (129, 130, 143));
    }
}
