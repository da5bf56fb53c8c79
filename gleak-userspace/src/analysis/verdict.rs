//! Telling a leak from a healthy long-lived goroutine, with the reason in words.
//!
//! A leak is a population that grows while its goroutines sit blocked and outlive
//! their siblings; a worker pool is long-lived too, but constant in number.

use serde::Serialize;

use crate::runtime::waitreason::{KnownReason, WaitReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Leak,
    Suspect,
    Stable,
    Ok,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::Suspect => "suspect",
            Verdict::Stable => "stable",
            Verdict::Ok => "ok",
        }
    }
}

/// What is known about one creation site at report time.
#[derive(Clone, Debug, Default)]
pub struct SiteFacts {
    pub live: u64,
    pub created: u64,
    /// Length of the trend window and the live count at its start.
    pub window_s: f64,
    pub live_start: u64,
    pub created_in_window: u64,
    pub exited_in_window: u64,
    /// Live goroutines in `_Gwaiting` now.
    pub blocked: u64,
    /// The wait reason most of its blocked goroutines are in.
    pub top_reason: Option<WaitReason>,
    /// Blocked on something that can never wake them.
    pub never_wake: u64,
    /// Median and maximum age of live goroutines created while tracing.
    pub age_p50_s: Option<f64>,
    pub oldest_s: Option<f64>,
    /// 99th percentile lifetime of the site's goroutines that exited.
    pub lifetime_p99_s: Option<f64>,
    pub lifetime_p50_s: Option<f64>,
    /// Live goroutines that existed before attach (age unknown: older than the trace).
    pub preexisting: u64,
    /// Live goroutines seen running or woken since attach.
    pub ran: u64,
    pub blocked_p50_s: Option<f64>,
    /// How long the target has been traced.
    pub traced_s: f64,
    /// The site is the main goroutine (`select {}` at the end of `main` is an idiom).
    pub is_main: bool,
    /// Live goroutines proven unable to run again: blocked on objects nothing that
    /// can run reaches (see `crate::analysis::proof`).
    pub proven: u64,
    /// A conclusive proof judged this site's blocked goroutines: those not proven
    /// wait on objects running code can reach.
    pub proof_ran: bool,
    /// Blocked goroutines whose wait objects are known, and how many distinct
    /// objects they wait on.
    pub waiting_on_known: u64,
    pub distinct_objects: u64,
    /// What they wait on, in words ("channel", "semaphore").
    pub object_noun: &'static str,
    /// Blocked goroutines whose wait objects a goroutine waiting on the network
    /// holds on its stack: a connection's writer next to its reader.
    pub network_held: u64,
    /// Live goroutines waiting on the network (`IO wait`).
    pub io_waiting: u64,
    /// Blocked goroutines passing through a lock (`WaitClass::passes_through_a_lock`).
    pub on_a_lock: u64,
    /// Blocked goroutines the runtime paused mid-work (`WaitClass::paused_by_runtime`).
    pub paused: u64,
    /// The process's established TCP and connected Unix stream sockets.
    pub live_connections: Option<u64>,
}

/// Minimum growth, in goroutines, that counts as a trend.
const MIN_GROWTH: u64 = 3;

/// A site's verdict from its facts, with the reason in words.
pub fn judge_site(f: &SiteFacts) -> (Verdict, String) {
    let reason = f.top_reason.as_ref().map_or("?", |r| r.name.as_str());
    let ends_by_itself = f.top_reason.as_ref().is_some_and(|r| r.class.ends_by_itself());
    if f.live == 0 {
        let life = f.lifetime_p50_s.map(|s| format!(", median lifetime {}", secs(s))).unwrap_or_default();
        return (Verdict::Ok, format!("no live goroutines: all {} created exited{life}", f.created));
    }
    if f.never_wake > 0 && !f.is_main {
        return (Verdict::Leak, format!("{} goroutines blocked on {reason}: nothing can ever wake them", f.never_wake));
    }
    if f.proven > 0 && !f.is_main {
        let of = if f.proven == f.live { format!("all {}", f.live) } else { format!("{} of {}", f.proven, f.live) };
        return (
            Verdict::Leak,
            format!(
                "{of} goroutines can never run again: blocked on {reason}, on {} that nothing able to run can reach \
                 (proven by marking the heap from the globals and every runnable goroutine's stack, twice)",
                if f.proven == 1 { format!("a {}", f.object_noun) } else { format!("{}s", f.object_noun) }
            ),
        );
    }
    // Goroutines serving live connections: waiting on the network, no more of them
    // than the process has connections (at least half waiting, or all the others
    // running: busy handling requests); or waiting on what such a goroutine holds.
    if let Some(connections) = f.live_connections.filter(|&c| c > 0) {
        let mostly_waiting = f.io_waiting * 2 >= f.live && f.io_waiting <= connections;
        // Busy: the rest run (or the runtime paused them mid-work), or pass
        // through a lock on the way (fewer of those than wait on the network);
        // none waits on anything a request can hang on.
        let busy = f.io_waiting > 0
            && f.on_a_lock <= f.io_waiting
            && f.blocked == f.io_waiting + f.on_a_lock + f.paused
            && f.live <= connections;
        if mostly_waiting || busy {
            let running = f.live.saturating_sub(f.blocked);
            let mut others = String::new();
            if busy && running > 0 {
                others.push_str(&format!(", {running} running"));
            }
            if busy && f.paused > 0 {
                others.push_str(&format!(", {} paused by the runtime (GC assist, preemption)", f.paused));
            }
            if busy && f.on_a_lock > 0 {
                others.push_str(&format!(", {} briefly on a lock", f.on_a_lock));
            }
            if !others.is_empty() {
                others.push(',');
            }
            return (
                Verdict::Stable,
                format!(
                    "{} goroutines wait on the network{others} and the process holds {connections} live connections: serving connections, not stuck",
                    f.io_waiting
                ),
            );
        }
        // No more of them than there are connections: one per connection at most.
        if f.network_held > 0
            && f.network_held * 10 >= f.blocked * 9
            && f.blocked * 2 >= f.live
            && f.blocked <= connections
        {
            return (
                Verdict::Stable,
                format!(
                    "{} goroutines wait on {}s that goroutines serving live connections hold: a connection's goroutines",
                    f.network_held, f.object_noun
                ),
            );
        }
    }
    let growth = f.live.saturating_sub(f.live_start);
    let growing =
        f.window_s >= 1.0 && growth >= MIN_GROWTH.max(f.live_start / 20) && f.created_in_window > f.exited_in_window;
    let blocked_pct = 100 * f.blocked / f.live;
    // Old: the live ones outlive what this site's goroutines normally live.
    let normal_life = f.lifetime_p99_s.map_or(0.5, |p99| (3.0 * p99).max(0.5));
    let all_preexisting = f.preexisting == f.live;
    let old = all_preexisting || f.age_p50_s.is_some_and(|a| a > normal_life);
    let exited_note = match f.lifetime_p99_s {
        Some(p99) => format!("; the ones that exited lived ≤ {}", secs(p99)),
        None => "; none exited".to_string(),
    };
    let age = f.age_p50_s.map(|a| format!("median age {}", secs(a))).unwrap_or_else(|| "older than the trace".into());
    let trend = format!(
        "live grew {}→{} in {} (+{:.1}/s)",
        f.live_start,
        f.live,
        secs(f.window_s),
        growth as f64 / f.window_s.max(1e-9)
    );

    if growing {
        if blocked_pct >= 50 && old && ends_by_itself && f.lifetime_p99_s.is_none() {
            return (
                Verdict::Suspect,
                format!(
                    "{trend}; {blocked_pct}% blocked on {reason}, which ends by itself, {age}; none exited yet to compare with"
                ),
            );
        }
        if blocked_pct >= 50 && old {
            // Woken again and again (timers) yet never exiting: a loop without an end.
            let looping = if f.ran * 2 >= f.live {
                format!("; {} of them woke during the trace and blocked again: a loop that never ends", f.ran)
            } else {
                String::new()
            };
            return (
                Verdict::Leak,
                format!("{trend}; {blocked_pct}% blocked on {reason}, {age}{exited_note}{looping}"),
            );
        }
        if blocked_pct < 50 {
            return (
                Verdict::Suspect,
                format!("{trend} but only {blocked_pct}% are blocked: busy or slow rather than stuck, so far"),
            );
        }
        return (
            Verdict::Suspect,
            format!("{trend}, {blocked_pct}% blocked on {reason}, but young ({age}): they may still finish"),
        );
    }

    let young = f.preexisting == 0 && f.oldest_s.is_some_and(|o| o < normal_life.max(1.0));
    if young {
        return (Verdict::Ok, format!("short-lived: the oldest live goroutine is {}", secs(f.oldest_s.unwrap_or(0.0))));
    }
    let steady = format!("count steady ({}→{} over {})", f.live_start, f.live, secs(f.window_s));
    // An idle pool: blocked on a few objects running code can still reach (the jobs channel).
    let shared = f.distinct_objects > 0 && f.distinct_objects * 2 <= f.waiting_on_known;
    if f.proof_ran && blocked_pct >= 50 && shared && f.waiting_on_known * 2 >= f.blocked {
        return (
            Verdict::Stable,
            format!(
                "an idle pool: {} goroutines wait on {} {}{} that running code can reach, {steady}",
                f.waiting_on_known,
                f.distinct_objects,
                f.object_noun,
                if f.distinct_objects == 1 { "" } else { "s" }
            ),
        );
    }
    let stuck = blocked_pct >= 90 && f.ran == 0 && f.traced_s >= 2.0 && old;
    if stuck && f.live >= 10 && f.top_reason.as_ref().is_some_and(|r| r.is(KnownReason::ChanSend)) {
        return (
            Verdict::Suspect,
            format!(
                "{} goroutines blocked on chan send, none ran during the {} trace, {steady}: a send nobody receives (leaked before the trace?)",
                f.live,
                secs(f.traced_s)
            ),
        );
    }
    if stuck && f.live >= 100 {
        return (
            Verdict::Suspect,
            format!(
                "{} goroutines blocked on {reason}, none ran during the {} trace, {steady}: leaked earlier, or an oversized idle pool",
                f.live,
                secs(f.traced_s)
            ),
        );
    }
    let ran = if f.ran > 0 { format!(", {} ran during the trace", f.ran) } else { String::new() };
    (Verdict::Stable, format!("{} long-lived goroutines, {steady}{ran}: a worker pool or background loop", f.live))
}

pub fn secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.1}s")
    } else {
        format!("{:.0}ms", s * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> Option<WaitReason> {
        Some(WaitReason::from_name(name))
    }

    fn base() -> SiteFacts {
        SiteFacts { window_s: 10.0, traced_s: 10.0, ..Default::default() }
    }

    #[test]
    fn growing_blocked_old_is_a_leak() {
        let f = SiteFacts {
            live: 500,
            created: 500,
            live_start: 0,
            created_in_window: 500,
            blocked: 500,
            top_reason: reason("chan send"),
            age_p50_s: Some(5.0),
            oldest_s: Some(10.0),
            ..base()
        };
        let (v, why) = judge_site(&f);
        assert_eq!(v, Verdict::Leak, "{why}");
        assert!(why.contains("chan send") && why.contains("0→500"), "{why}");
    }

    /// Connection goroutines under load: most running, the rest waiting on the
    /// network, growing with the connections: stable. The same with one of them
    /// blocked on a channel is not judged by the connection rule.
    #[test]
    fn busy_connection_goroutines_are_stable() {
        let f = SiteFacts {
            live: 32,
            created: 32,
            live_start: 8,
            created_in_window: 24,
            blocked: 5,
            io_waiting: 5,
            live_connections: Some(64),
            top_reason: reason("IO wait"),
            age_p50_s: Some(1.5),
            oldest_s: Some(3.0),
            ..base()
        };
        let (v, why) = judge_site(&f);
        assert_eq!(v, Verdict::Stable, "{why}");
        assert!(why.contains("serving connections"), "{why}");
        let (v, why) = judge_site(&SiteFacts { blocked: 6, ..f.clone() });
        assert_ne!(v, Verdict::Stable, "{why}");
        let (v, why) = judge_site(&SiteFacts { live_connections: Some(16), ..f.clone() });
        assert_ne!(v, Verdict::Stable, "{why}");
        // One of them on a lock is still busy (seen in CI: net/http's conn.serve
        // in "sync.Cond.Wait" and "semacquire" under load)...
        let (v, why) = judge_site(&SiteFacts { blocked: 6, on_a_lock: 1, ..f.clone() });
        assert_eq!(v, Verdict::Stable, "{why}");
        assert!(why.contains("26 running, 1 briefly on a lock"), "{why}");
        // ...but not when more of them wait on locks than on the network.
        let (v, why) = judge_site(&SiteFacts { blocked: 11, on_a_lock: 6, ..f.clone() });
        assert_ne!(v, Verdict::Stable, "{why}");
        // Caught in a GC cycle, most of them made to assist it: running, however
        // many (seen in CI: 26 of 48 readLoops in "GC assist wait", 20 on the
        // network, 2 on a lock).
        let gc = SiteFacts { live: 48, blocked: 48, io_waiting: 20, paused: 26, on_a_lock: 2, ..f.clone() };
        let (v, why) = judge_site(&gc);
        assert_eq!(v, Verdict::Stable, "{why}");
        assert!(why.contains("20 goroutines wait on the network, 26 paused by the runtime"), "{why}");
        let (v, why) = judge_site(&SiteFacts { on_a_lock: 21, paused: 7, ..gc });
        assert_ne!(v, Verdict::Stable, "{why}");
    }

    /// A connection's writer next to its reader: blocked on channels the reader,
    /// waiting on the network, holds; growing with the connections: stable. Not
    /// when more of them than connections, nor when too few are held.
    #[test]
    fn goroutines_a_connection_holds_are_stable() {
        let f = SiteFacts {
            live: 32,
            created: 32,
            live_start: 6,
            created_in_window: 26,
            blocked: 32,
            network_held: 32,
            live_connections: Some(64),
            top_reason: reason("select"),
            object_noun: "channel",
            age_p50_s: Some(1.6),
            oldest_s: Some(3.0),
            ..base()
        };
        let (v, why) = judge_site(&f);
        assert_eq!(v, Verdict::Stable, "{why}");
        assert!(why.contains("32 goroutines wait on channels that goroutines serving live connections hold"), "{why}");
        let (v, why) = judge_site(&SiteFacts { network_held: 29, ..f.clone() });
        assert_eq!(v, Verdict::Stable, "{why}");
        let (v, why) = judge_site(&SiteFacts { network_held: 28, ..f.clone() });
        assert_eq!(v, Verdict::Leak, "{why}");
        let (v, why) = judge_site(&SiteFacts { live_connections: Some(31), ..f });
        assert_eq!(v, Verdict::Leak, "{why}");
    }

    #[test]
    fn a_fixed_pool_is_stable() {
        let f = SiteFacts {
            live: 8,
            created: 8,
            live_start: 8,
            blocked: 8,
            top_reason: reason("chan receive"),
            age_p50_s: Some(10.0),
            oldest_s: Some(10.0),
            ran: 8,
            ..base()
        };
        assert_eq!(judge_site(&f).0, Verdict::Stable);
        // Even an idle one that never ran during the trace.
        assert_eq!(judge_site(&SiteFacts { ran: 0, ..f }).0, Verdict::Stable);
    }

    #[test]
    fn short_lived_churn_is_ok() {
        let f = SiteFacts {
            live: 2,
            created: 5000,
            live_start: 3,
            created_in_window: 5000,
            exited_in_window: 5001,
            oldest_s: Some(0.001),
            age_p50_s: Some(0.0005),
            lifetime_p99_s: Some(0.002),
            ..base()
        };
        assert_eq!(judge_site(&f).0, Verdict::Ok);
        assert_eq!(judge_site(&SiteFacts { live: 0, ..f }).0, Verdict::Ok);
    }

    #[test]
    fn nil_channel_waits_are_leaks_even_when_flat() {
        let f = SiteFacts {
            live: 1,
            live_start: 1,
            blocked: 1,
            never_wake: 1,
            top_reason: reason("select (no cases)"),
            ..base()
        };
        assert_eq!(judge_site(&f).0, Verdict::Leak);
        // `select {}` at the end of main is how servers wait forever.
        assert_eq!(judge_site(&SiteFacts { is_main: true, ..f }).0, Verdict::Stable);
    }

    #[test]
    fn flat_preexisting_send_blocked_population_is_suspect() {
        let f = SiteFacts {
            live: 500,
            live_start: 500,
            blocked: 500,
            preexisting: 500,
            top_reason: reason("chan send"),
            ..base()
        };
        assert_eq!(judge_site(&f).0, Verdict::Suspect);
    }

    #[test]
    fn growing_sleepers_without_a_baseline_are_suspect() {
        // Delayed jobs: each sleeps 20 s, ten a second, all finish eventually.
        let f = SiteFacts {
            live: 103,
            created: 100,
            live_start: 4,
            created_in_window: 100,
            blocked: 103,
            top_reason: reason("sleep"),
            age_p50_s: Some(5.0),
            oldest_s: Some(10.0),
            ..base()
        };
        assert_eq!(judge_site(&f).0, Verdict::Suspect);
        // Once some have exited, sleepers far older than their siblings are a leak.
        let with_baseline = SiteFacts { lifetime_p99_s: Some(0.1), exited_in_window: 5, ..f.clone() };
        assert_eq!(judge_site(&with_baseline).0, Verdict::Leak);
        // The same for the runtime's own idle workers; not for a channel.
        let idle = SiteFacts { top_reason: reason("GC worker (idle)"), ..f.clone() };
        assert_eq!(judge_site(&idle).0, Verdict::Suspect);
        let channel = SiteFacts { top_reason: reason("chan send"), ..f };
        assert_eq!(judge_site(&channel).0, Verdict::Leak);
    }

    #[test]
    fn growing_but_running_is_suspect() {
        let f = SiteFacts {
            live: 50,
            live_start: 10,
            created_in_window: 60,
            exited_in_window: 20,
            blocked: 5,
            age_p50_s: Some(3.0),
            oldest_s: Some(9.0),
            ..base()
        };
        assert_eq!(judge_site(&f).0, Verdict::Suspect);
    }
}
