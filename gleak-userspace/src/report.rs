//! What a report says, and how it is printed: a `top`-like table for people and
//! one JSON document per line for machines.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::symbolize::Frame;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pid: u32,
    pub binary: String,
    pub go_version: String,
    pub elapsed_s: f64,
    /// The last report of the session.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub target_exited: bool,
    pub totals: Totals,
    /// Events the kernel could not deliver (ring buffer full) plus failed reads.
    pub lost_events: u64,
    /// Goroutines found dead in memory whose exit event was lost (already counted as exited).
    pub reconciled_exits: u64,
    pub sites: Vec<SiteReport>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    pub created: u64,
    pub exited: u64,
    pub live: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteReport {
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
    pub oldest_age_s: Option<f64>,
    /// Most common wait reason among the site's blocked live goroutines.
    pub top_wait_reason: Option<String>,
    pub wait_reasons: BTreeMap<String, u64>,
    /// Live goroutines by runtime status (`waiting`, `runnable`, `running`, `syscall`…).
    pub states: BTreeMap<String, u64>,
    /// Median lifetime of the site's goroutines that exited.
    pub lifetime_p50_ms: Option<f64>,
    /// The creation stack seen most often, innermost (`go` statement) first.
    pub stack: Vec<Frame>,
}

impl Report {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    /// The human table, with at most `top` sites.
    pub fn render(&self, top: usize, stacks: usize) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let _ = writeln!(
            out,
            "\n{} pid {} {} ({}) · {:.1}s · goroutines created {} · exited {} · live {}{}{}",
            if self.is_final { "== final ==" } else { "--" },
            self.pid,
            self.binary,
            self.go_version,
            self.elapsed_s,
            t.created,
            t.exited,
            t.live,
            if self.lost_events > 0 {
                format!(" · LOST EVENTS {}", self.lost_events)
            } else {
                String::new()
            },
            if self.target_exited {
                " · target exited"
            } else {
                ""
            },
        );
        if self.sites.is_empty() {
            let _ = writeln!(out, "no goroutine created since attach");
            return out;
        }
        let _ = writeln!(
            out,
            "{:>7} {:>8} {:>8} {:>8}  {:<24} GO STATEMENT",
            "LIVE", "CREATED", "EXITED", "OLDEST", "WAITING ON"
        );
        for s in self.sites.iter().take(top) {
            let wait = match &s.top_wait_reason {
                Some(r) => format!("{} ({})", r, s.wait_reasons.get(r).copied().unwrap_or(0)),
                None => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:>7} {:>8} {:>8} {:>8}  {:<24} {} ({}:{})",
                s.live,
                s.created,
                s.exited,
                s.oldest_age_s.map(fmt_secs).unwrap_or_else(|| "-".into()),
                truncate(&wait, 24),
                s.function,
                short_path(&s.file),
                s.line
            );
        }
        if self.sites.len() > top {
            let _ = writeln!(out, "… {} more sites (--top)", self.sites.len() - top);
        }
        for s in self
            .sites
            .iter()
            .filter(|s| s.live > 0 && !s.stack.is_empty())
            .take(stacks)
        {
            let _ = writeln!(
                out,
                "\n{} live goroutines running {}, created by:",
                s.live, s.go_func
            );
            for f in &s.stack {
                let _ = writeln!(out, "    {} ({}:{})", f.function, f.file, f.line);
            }
        }
        out
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.1}s")
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
        assert_eq!(fmt_secs(5.0), "5.0s");
        assert_eq!(fmt_secs(120.0), "2.0m");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
