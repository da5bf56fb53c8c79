//! What a report says, and how it is printed: a `top`-like table for people and
//! one JSON document per line for machines (schema: docs/report.schema.json).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    debuginfo::FactSources,
    symbolize::Frame,
    verdict::{secs, Verdict},
};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pid: u32,
    /// The PID inside the target's own PID namespace, when it differs.
    pub ns_pid: Option<u32>,
    pub binary: String,
    pub go_version: String,
    /// Where each fact about the target's runtime came from.
    pub runtime_facts: FactSources,
    /// What gleak cannot see in this target, in words; empty when nothing is missing.
    pub gaps: Vec<String>,
    /// `attach` or `run`.
    pub mode: &'static str,
    pub elapsed_s: f64,
    /// The last report of the session.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub target_exited: bool,
    pub totals: Totals,
    /// Events the kernel could not deliver (ring buffer full, or the target's
    /// memory unreadable in the probe): `kernel.ringbuf_full + kernel.read_failed`.
    pub lost_events: u64,
    pub kernel: KernelCounters,
    /// Goroutines found dead in memory whose exit event was lost (counted as exited).
    pub reconciled_exits: u64,
    /// Live goroutines found in the goroutine table whose creation event was lost
    /// (counted as created at their `go` statement).
    pub reconciled_creations: u64,
    pub sites: Vec<SiteReport>,
    /// `gleak run` only: the CI gate's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

/// The probes' own failure counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct KernelCounters {
    pub ringbuf_full: u64,
    /// Events dropped: the goroutine's memory was unreadable in the probe.
    pub read_failed: u64,
    /// Optional fields (creation site, creator) unreadable; the events were delivered.
    pub field_read_failed: u64,
    /// Probe hits in a process gleak has no layout for.
    pub no_config: u64,
    /// Creation stacks not recorded (stack map full or hash collision).
    pub stack_failed: u64,
}

impl KernelCounters {
    pub fn lost_events(&self) -> u64 {
        self.ringbuf_full + self.read_failed
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    pub created: u64,
    pub exited: u64,
    pub live: u64,
    /// Live goroutines that existed before attach.
    pub preexisting: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub fail_on: Verdict,
    pub failed: bool,
    pub leaked_goroutines: u64,
    /// The command's exit code, if it exited by itself.
    pub command_status: Option<i32>,
    /// What gleak exits with.
    pub exit_code: i32,
    pub stopped_at_deadline: bool,
    /// Stopped by Ctrl-C / SIGINT rather than the deadline.
    pub interrupted: bool,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Trend {
    pub window_s: f64,
    pub live_start: u64,
    pub live_end: u64,
    pub live_per_s: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rates {
    pub created_per_s: f64,
    pub exited_per_s: f64,
}

/// One live goroutine, as memory shows it now.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineSample {
    pub goid: u64,
    pub state: &'static str,
    pub wait_reason: Option<String>,
    pub blocked_s: Option<f64>,
    /// `None` if it existed before attach.
    pub age_s: Option<f64>,
    /// Address of its `runtime.g`.
    pub g_addr: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PathReport {
    pub live: u64,
    pub created: u64,
    pub stack: Vec<Frame>,
    /// The same stack by return address (as linked), for profiles.
    #[serde(skip)]
    pub locations: Vec<(u64, Vec<Frame>)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SiteReport {
    pub verdict: Verdict,
    pub verdict_reason: String,
    /// The function containing the `go` statement.
    pub function: String,
    pub file: String,
    pub line: u32,
    /// The function the goroutines run.
    pub go_func: String,
    /// Address of the `go` statement (its call's return address), as linked.
    pub pc: String,
    pub live: u64,
    pub created: u64,
    pub exited: u64,
    pub preexisting: u64,
    pub trend: Trend,
    pub rates: Rates,
    pub oldest_age_s: Option<f64>,
    /// Ages of live goroutines created while tracing.
    pub age_s: Option<Percentiles>,
    /// Live goroutines blocked (`_Gwaiting`) now.
    pub blocked: u64,
    /// How long they have been blocked (lower bounds unless parks are traced).
    pub blocked_s: Option<Percentiles>,
    pub top_wait_reason: Option<String>,
    pub wait_reasons: BTreeMap<String, u64>,
    /// The oldest few live goroutines, one by one.
    pub goroutines: Vec<GoroutineSample>,
    /// Live goroutines by runtime status (`waiting`, `runnable`, `running`, `syscall`…).
    pub states: BTreeMap<String, u64>,
    /// Stack memory held by the live goroutines.
    pub stack_bytes: u64,
    /// Median lifetime of the site's goroutines that exited.
    pub lifetime_p50_ms: Option<f64>,
    /// The creation stack seen most often, innermost (`go` statement) first.
    pub stack: Vec<Frame>,
    /// Every distinct creation path.
    pub paths: Vec<PathReport>,
    /// Where the creating goroutine was created, and so on up.
    pub parent_chain: Vec<Frame>,
}

impl Report {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    /// The human table with at most `top` sites, then the stacks of the first
    /// `stacks` leak or suspect sites. `color`: ANSI colours (for a tty).
    pub fn render(&self, top: usize, stacks: usize, color: bool) -> String {
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let t = &self.totals;
        let _ = writeln!(
            out,
            "\n{} pid {}{} {} ({}) · {} · goroutines: {} live ({} from before attach) · {} created · {} exited{}{}",
            paint("1", if self.is_final { "== final ==" } else { "--" }),
            self.pid,
            self.ns_pid.map(|p| format!(" (pid {p} in its namespace)")).unwrap_or_default(),
            self.binary,
            self.go_version,
            secs(self.elapsed_s),
            t.live,
            t.preexisting,
            t.created,
            t.exited,
            if self.lost_events > 0 {
                paint(
                    "31",
                    &format!(
                        " · LOST EVENTS {} (recovered from memory: {} creations, {} exits)",
                        self.lost_events, self.reconciled_creations, self.reconciled_exits
                    ),
                )
            } else {
                String::new()
            } + &if self.kernel.stack_failed > 0 {
                format!(" · {} creation stacks not recorded", self.kernel.stack_failed)
            } else {
                String::new()
            },
            if self.target_exited { " · target exited" } else { "" },
        );
        for gap in &self.gaps {
            let _ = writeln!(out, "{}", paint("33", &format!("note: {gap}")));
        }
        if self.sites.is_empty() {
            let _ = writeln!(out, "no goroutines");
            return out;
        }
        let _ = writeln!(
            out,
            "{}",
            paint(
                "7",
                &format!(
                    "{:<8} {:>7} {:>8} {:>8} {:>8} {:>7} {:>8} {:<22} {:>7}  GO STATEMENT",
                    "VERDICT", "LIVE", "Δ LIVE", "CREATED", "EXITED", "OLDEST", "BLOCKED", "WAITING ON", "STACKS"
                )
            )
        );
        for s in self.sites.iter().take(top) {
            let wait = match &s.top_wait_reason {
                Some(r) => format!("{} ({})", r, s.wait_reasons.get(r).copied().unwrap_or(0)),
                None => "-".to_string(),
            };
            let verdict = format!("{:<8}", s.verdict.as_str());
            let verdict = match s.verdict {
                Verdict::Leak => paint("1;31", &verdict),
                Verdict::Suspect => paint("33", &verdict),
                Verdict::Stable => paint("36", &verdict),
                Verdict::Ok => paint("32", &verdict),
            };
            let delta = s.trend.live_end as i64 - s.trend.live_start as i64;
            let _ = writeln!(
                out,
                "{} {:>7} {:>8} {:>8} {:>8} {:>7} {:>8} {:<22} {:>7}  {}",
                verdict,
                s.live,
                if delta == 0 { "0".to_string() } else { format!("{delta:+}") },
                s.created,
                s.exited,
                if s.preexisting > 0 {
                    "<attach".to_string() // older than the trace
                } else {
                    s.oldest_age_s.map(secs).unwrap_or_else(|| "-".into())
                },
                s.blocked_s.map(|b| secs(b.p50)).unwrap_or_else(|| "-".into()),
                truncate(&wait, 22),
                bytes(s.stack_bytes),
                site_label(s)
            );
        }
        if self.sites.len() > top {
            let _ = writeln!(out, "… {} more sites (--top)", self.sites.len() - top);
        }
        let explained =
            self.sites.iter().filter(|s| matches!(s.verdict, Verdict::Leak | Verdict::Suspect)).take(stacks);
        for s in explained {
            let _ = writeln!(
                out,
                "\n{} {} ({}:{}) running {}",
                paint(if s.verdict == Verdict::Leak { "1;31" } else { "33" }, s.verdict.as_str()),
                s.function,
                s.file,
                s.line,
                s.go_func
            );
            let _ = writeln!(out, "  why: {}", s.verdict_reason);
            if !s.goroutines.is_empty() {
                let shown: Vec<String> = s
                    .goroutines
                    .iter()
                    .map(|g| {
                        let what = g.wait_reason.as_deref().unwrap_or(g.state);
                        match (g.blocked_s, g.age_s) {
                            (Some(b), _) => format!("goroutine {} [{what}, {}]", g.goid, secs(b)),
                            (None, Some(age)) => format!("goroutine {} [{what}] age {}", g.goid, secs(age)),
                            (None, None) => format!("goroutine {} [{what}]", g.goid),
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  oldest: {}", shown.join(", "));
            }
            let paths: Vec<&PathReport> = s.paths.iter().take(4).collect();
            if paths.is_empty() && !s.stack.is_empty() {
                let _ = writeln!(out, "  created at:");
                write_frames(&mut out, &s.stack);
            }
            for (i, p) in paths.iter().enumerate() {
                let _ = writeln!(out, "  path {} of {}: {} live, {} created", i + 1, s.paths.len(), p.live, p.created);
                write_frames(&mut out, &p.stack);
            }
            if !s.parent_chain.is_empty() {
                let _ = writeln!(out, "  creator was created at:");
                write_frames(&mut out, &s.parent_chain);
            }
        }
        if let Some(g) = &self.gate {
            let _ = writeln!(
                out,
                "\n{}: {} leaked goroutines (fail on {}){}; exit code {}",
                if g.failed { paint("1;31", "LEAK GATE FAILED") } else { paint("32", "leak gate passed") },
                g.leaked_goroutines,
                g.fail_on.as_str(),
                if g.stopped_at_deadline {
                    ", command stopped at the deadline"
                } else if g.interrupted {
                    ", command interrupted"
                } else {
                    ""
                },
                g.exit_code
            );
        }
        out
    }
}

/// `function (dir/file.go:line)`, or just the name for sites with no source line.
fn site_label(s: &SiteReport) -> String {
    if s.line == 0 {
        s.function.clone()
    } else {
        format!("{} ({}:{})", s.function, short_path(&s.file), s.line)
    }
}

fn write_frames(out: &mut String, frames: &[Frame]) {
    for f in frames {
        if f.line == 0 {
            let _ = writeln!(out, "    {} {}", f.function, f.file);
        } else {
            let _ = writeln!(out, "    {} ({}:{})", f.function, f.file, f.line);
        }
    }
}

fn bytes(b: u64) -> String {
    match b {
        0 => "-".into(),
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b => format!("{}K", b.div_ceil(1024)),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// The last three path components: enough to recognise a file.
fn short_path(path: &str) -> &str {
    let mut idx = path.len();
    for _ in 0..3 {
        match path[..idx].rfind('/') {
            Some(i) => idx = i,
            None => return path,
        }
    }
    &path[idx + 1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(short_path("/a/b/c/d/e.go"), "c/d/e.go");
        assert_eq!(short_path("e.go"), "e.go");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(bytes(8192), "8K");
        assert_eq!(bytes(3 << 20), "3.0M");
    }
}
