//! `gleak run`'s leak gate: at the command's exit, the goroutines the program
//! created (not the runtime, not the testing framework) that are still alive are
//! leaks, as goleak counts them.

use crate::{
    report::{Gate, Report},
    verdict::Verdict,
};

/// Packages whose goroutines are infrastructure, not the program's: the runtime,
/// the testing framework, signal delivery.
const IGNORED_PACKAGES: &[&str] = &["runtime", "testing", "os/signal"];

/// The import path of a Go function name: `net/http.(*Server).Serve` → `net/http`.
pub fn package_of(function: &str) -> &str {
    let slash = function.rfind('/').map_or(0, |i| i + 1);
    match function[slash..].find('.') {
        Some(dot) => &function[..slash + dot],
        None => function,
    }
}

pub fn is_infrastructure(function: &str) -> bool {
    if function == "main goroutine" {
        return true; // the one calling exit
    }
    let pkg = package_of(function);
    IGNORED_PACKAGES
        .iter()
        .any(|p| pkg == *p || pkg.starts_with(&format!("{p}/")))
}

/// How the command ended.
#[derive(Clone, Copy, Debug)]
pub struct Ending {
    /// Exit code (or 128 + signal) if it ended by itself.
    pub command_status: Option<i32>,
    pub stopped_at_deadline: bool,
}

/// Re-judges every site as of the program's exit and decides the gate.
pub fn judge_at_exit(report: &mut Report, fail_on: Verdict, ending: Ending) {
    report.mode = "run";
    // The report is taken while the exiting process is held stopped; it is gone right after.
    report.target_exited = ending.command_status.is_some();
    let mut leaked = 0;
    for site in &mut report.sites {
        if is_infrastructure(&site.function) {
            if site.live > 0 {
                site.verdict = Verdict::Ok;
                site.verdict_reason = format!(
                    "created by {}: infrastructure, ignored as goleak does",
                    package_of(&site.function)
                );
            }
            continue;
        }
        if site.live == 0 {
            continue;
        }
        let reason = site.top_wait_reason.as_deref().unwrap_or("?");
        let when = if ending.stopped_at_deadline {
            "when gleak stopped it"
        } else {
            "when the program exited"
        };
        (site.verdict, site.verdict_reason) = if site.blocked == site.live {
            (
                Verdict::Leak,
                format!(
                    "{} goroutines still alive, blocked on {reason}, {when}",
                    site.live
                ),
            )
        } else if site.blocked > 0 {
            (
                Verdict::Leak,
                format!(
                    "{} goroutines still alive {when}: {} blocked on {reason}, the rest running",
                    site.live, site.blocked
                ),
            )
        } else {
            (
                Verdict::Suspect,
                format!("{} goroutines still running {when}", site.live),
            )
        };
        if site.verdict <= fail_on {
            leaked += site.live;
        }
    }
    let failed = leaked > 0;
    let exit_code = if failed {
        1
    } else {
        ending.command_status.unwrap_or(0)
    };
    report.gate = Some(Gate {
        fail_on,
        failed,
        leaked_goroutines: leaked,
        command_status: ending.command_status,
        exit_code,
        stopped_at_deadline: ending.stopped_at_deadline,
    });
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
}
