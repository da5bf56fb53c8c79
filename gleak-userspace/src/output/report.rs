//! What a report says, and how it is printed: a `top`-like table for people and
//! one JSON document per line for machines (schema: docs/report.schema.json).

use std::{collections::BTreeMap, fmt::Write as _};

use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    analysis::verdict::{secs, Verdict},
    binary::symbolize::Frame,
    output::format::{bytes_in_column, bytes_in_words, short_path, site_label, truncate, BLOCKED_AT_SHOWN},
    process::waits::{ChanState, WaitKind},
    runtime::debuginfo::FactSources,
    runtime::package_roles::PackageRole,
};

/// One report of `gleak attach` or `gleak run`: what `--json` prints, one per
/// line. Generated from these types: `cargo xtask schema` writes
/// docs/report.schema.json.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[schemars(transform = final_run_report_has_gate)]
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
    #[schemars(extend("enum" = ["attach", "run"]))]
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
    /// The last reachability proof: which blocked goroutines can never run again.
    /// Absent when none was needed (or `--no-proof`).
    pub proof: Option<ProofReport>,
    /// `gleak run` only: the CI gate's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// A Go test binary's tests, each with the goroutines it left behind; absent
    /// for other programs (and where gleak cannot read test names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestReport>,
    /// `gleak run --ignore`/`--baseline` only: what the known leaks hid from the gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_leaks: Option<KnownLeaksReport>,
    /// The target's memory limit, its use, and when the leak sites' growth
    /// reaches the limit; null when the target's memory could not be read (it exited).
    pub memory: Option<MemoryReport>,
}

/// What `--ignore FILE` and `--baseline REPORT.json` did to the gate.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct KnownLeaksReport {
    /// The `--ignore` file.
    pub ignore_file: Option<String>,
    /// The `--baseline` report.
    pub baseline: Option<String>,
    /// Leaking sites the gate did not count (each marked `ignored`).
    pub ignored_sites: u64,
    pub ignored_goroutines: u64,
    /// Entries that hid nothing this run (a warning, not a failure: the leak may be fixed).
    pub unmatched: Vec<KnownLeakEntry>,
    /// Entries past their `expires` date: they hide nothing and fail the gate.
    pub expired: Vec<KnownLeakEntry>,
    /// Entries whose reason is still `--write-ignore`'s placeholder (accepted, with a warning).
    pub placeholders: Vec<KnownLeakEntry>,
}

/// One entry of an `--ignore` file.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct KnownLeakEntry {
    /// `FILE:LINE` of the entry.
    pub at: String,
    /// What it matches, as written: `fingerprint = "…"`, or its patterns.
    pub rule: String,
    pub reason: String,
    /// `YYYY-MM-DD`: the last day it hides leaks.
    pub expires: Option<String>,
    /// Leaking sites it matched this run (hid, unless expired).
    pub sites: u64,
}

/// Why the gate did not count a leaking site: a known leak.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Ignored {
    /// `FILE:LINE` of the `--ignore` entry, or the `--baseline` report's path.
    pub by: String,
    #[schemars(length(min = 1))]
    pub reason: String,
}

/// One test (`TestX`, `TestX/sub`) and the goroutines that descend from it, by
/// `go` statement: created by its goroutine, or by theirs, any generations down.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TestReport {
    /// As `go test` names it, read from the target's `testing.T`. Goroutines no
    /// test created are grouped as `TestMain`, `init` or `(outside tests)`.
    pub name: String,
    pub status: TestStatus,
    /// How long it ran (until its goroutine returned, subtests included); absent
    /// while it runs, and for the groups outside tests.
    pub duration_s: Option<f64>,
    /// Its goroutines alive now (a running test's own goroutine among them).
    pub live: Vec<TestSite>,
    /// Its goroutines that were alive when it ended and exited later.
    pub outlived: Vec<TestSite>,
}

/// The target's memory limit and use, and at the leak sites' measured growth,
/// when the limit is reached.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MemoryReport {
    /// The limit that binds first: the one leaving the least room.
    pub limit_bytes: u64,
    /// What sets it, in words.
    #[schemars(extend("enum" = [
        "the cgroup's memory.max", "the cgroup's memory.limit_in_bytes", "GOMEMLIMIT", "the host's memory"
    ]))]
    pub limit_source: &'static str,
    /// For a cgroup's limit: that cgroup (the process's own or an ancestor), as
    /// its hierarchy names it.
    pub limit_cgroup: Option<String>,
    /// The use the limit is compared with.
    pub current_bytes: u64,
    #[schemars(extend("enum" = ["cgroup memory.current", "cgroup memory.usage_in_bytes", "RSS"]))]
    pub current_source: &'static str,
    /// What the leak sites add per second: over the sites judged `leak`, their
    /// live goroutines' growth times the bytes each holds.
    pub growth_bytes_per_s: f64,
    /// The trend window the growth is measured over.
    pub window_s: f64,
    /// Seconds until the limit is reached at that growth (0: reached); null when
    /// not yet measurable (see `note`).
    pub time_to_limit_s: Option<f64>,
    /// Why the time is not yet measurable, or what the figure rests on.
    pub note: String,
}

/// How a test left the goroutines it created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Some of its goroutines are leaks (under `gleak run`: they count in the gate).
    Leaked,
    /// Still running.
    Running,
    /// Ended with goroutines still alive that exited later.
    Outlived,
    /// Every goroutine it created ended before it did.
    Clean,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leaked => "leaked",
            Self::Running => "running",
            Self::Outlived => "outlived",
            Self::Clean => "clean",
        }
    }
}

/// A test's goroutines of one `go` statement.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TestSite {
    /// The site's `pc`, as in `sites`.
    pub site_pc: String,
    pub function: String,
    pub file: String,
    pub line: u32,
    pub go_func: String,
    pub goroutines: u64,
    /// Live ones: they are leaks (their site's verdict, or under `gleak run` the gate's).
    pub leaked: bool,
    /// Outlived ones: the longest any lived past the test's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_s: Option<f64>,
}

impl TestSite {
    /// `goroutines` of `site`'s, not yet judged leaked.
    pub fn of(site: &SiteReport, goroutines: u64, longest_s: Option<f64>) -> Self {
        Self {
            site_pc: site.pc.clone(),
            function: site.function.clone(),
            file: site.file.clone(),
            line: site.line,
            go_func: site.go_func.clone(),
            goroutines,
            leaked: false,
            longest_s,
        }
    }
}

impl TestReport {
    /// Marks the live goroutines of sites that `leaks` says are leaking, and the
    /// status that follows.
    pub fn settle(&mut self, leaks: impl Fn(&str) -> bool) {
        for site in &mut self.live {
            site.leaked = leaks(&site.site_pc);
        }
        let running = self.duration_s.is_none() && !self.is_outside_tests();
        self.status = if self.live.iter().any(|s| s.leaked) {
            TestStatus::Leaked
        } else if running {
            TestStatus::Running
        } else if !self.outlived.is_empty() {
            TestStatus::Outlived
        } else {
            TestStatus::Clean
        };
    }

    /// A group of goroutines no test created, not a test.
    pub fn is_outside_tests(&self) -> bool {
        OUTSIDE_TESTS.contains(&self.name.as_str())
    }

    pub fn leaked_goroutines(&self) -> u64 {
        self.live.iter().filter(|s| s.leaked).map(|s| s.goroutines).sum()
    }

    pub fn outlived_goroutines(&self) -> u64 {
        self.outlived.iter().map(|s| s.goroutines).sum()
    }
}

/// The names of the groups of goroutines no test created.
pub const OUTSIDE_TESTS: [&str; 3] = ["TestMain", "init", "(outside tests)"];

/// The reachability proof: marking the target's heap from its roots (data, bss,
/// the stacks of goroutines that can run), twice.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ProofReport {
    /// Blocked goroutines whose wait objects were known: what the proof judged.
    pub candidates: u64,
    /// Goroutines proven unable to run again, in all.
    pub proven: u64,
    /// Why the last run proved nothing (its budget ran out, memory unreadable…).
    pub inconclusive: Option<String>,
    /// Bytes of in-use heap spans.
    pub heap_bytes: u64,
    /// Bytes of target memory read, both passes.
    pub bytes_read: u64,
    pub elapsed_ms: f64,
}

/// The probes' own failure counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, JsonSchema)]
pub struct KernelCounters {
    /// Events dropped: the ring buffer was full (each death of a dropped batch counts).
    pub ringbuf_full: u64,
    /// Of `ringbuf_full`, the deaths (the rest are creations, parks, exits of processes).
    pub exits_lost: u64,
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

#[derive(Clone, Copy, Debug, Default, Serialize, JsonSchema)]
pub struct Totals {
    pub created: u64,
    pub exited: u64,
    pub live: u64,
    /// Live goroutines that existed before attach.
    pub preexisting: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Gate {
    #[schemars(extend("enum" = ["leak", "suspect"]))]
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
    /// `--fail-on outlived`: goroutines that outlived their test fail it too.
    pub fail_on_outlived: bool,
    /// Goroutines that outlived their test (a test binary's).
    pub outlived_goroutines: u64,
    /// The tests whose goroutines fail the gate, in the order they started.
    pub failed_tests: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, JsonSchema)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Trend {
    pub window_s: f64,
    pub live_start: u64,
    pub live_end: u64,
    pub live_per_s: f64,
    /// The live count about once a second over the window, oldest first, ending
    /// with `live_end`.
    pub live_series: Vec<u64>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, JsonSchema)]
pub struct Rates {
    pub created_per_s: f64,
    pub exited_per_s: f64,
}

/// One live goroutine, as memory shows it now.
#[derive(Clone, Debug, Serialize, JsonSchema)]
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

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PathReport {
    pub live: u64,
    pub created: u64,
    pub stack: Vec<Frame>,
    /// The same stack by return address (as linked), for profiles.
    #[serde(skip)]
    pub locations: Vec<(u64, Vec<Frame>)>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SiteReport {
    pub verdict: Verdict,
    #[schemars(length(min = 1))]
    pub verdict_reason: String,
    /// The function containing the `go` statement.
    pub function: String,
    pub file: String,
    pub line: u32,
    /// The function the goroutines run.
    pub go_func: String,
    /// Address of the `go` statement (its call's return address), as linked.
    #[schemars(regex(pattern = r"^0x[0-9a-f]+$"))]
    pub pc: String,
    pub live: u64,
    /// Goroutines created while tracing.
    pub created: u64,
    /// Goroutines that exited while tracing, those born before it included.
    pub exited: u64,
    /// Live goroutines born before gleak attached.
    pub preexisting: u64,
    /// Goroutines born before gleak attached, found running then: `created +
    /// adopted = exited + live`.
    pub adopted: u64,
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
    /// Where the blocked goroutines are stuck, by their current stacks, busiest first.
    pub blocked_at: Vec<BlockedAt>,
    /// What the blocked goroutines wait on; absent when none has a known wait object.
    pub wait_objects: Option<WaitSummary>,
    /// Live goroutines proven unable to run again (see the report's `proof`).
    pub proven: u64,
    /// Memory the site's proven goroutines keep alive and nothing able to run
    /// does: heap objects only their stacks reach, plus those stacks. Absent
    /// until a proof has proven some of them.
    pub retained: Option<RetainedReport>,
    /// For blocked goroutines no proof settled (reachable: a suspect's), what
    /// keeps the object most of them wait on reachable: the shortest chain of
    /// references from a root. Absent when all are proven, or none was found.
    pub held_by: Option<HeldBy>,
    /// Where the creating goroutine was created, and so on up.
    pub parent_chain: Vec<Frame>,
    /// `function | go_func | blocking functions` (no lines: stable across edits);
    /// what `--ignore` entries and `--baseline` match.
    #[schemars(length(min = 1))]
    pub fingerprint: String,
    /// `gleak run` only: a known leak the gate did not count, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<Ignored>,
}

/// What a site's blocked goroutines wait on.
/// Why a blocked population is still reachable (see [`SiteReport::held_by`]).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HeldBy {
    /// What holds it: a global by its symbol (`main.registry`; in a stripped
    /// binary its section and offset, `.bss+0x1a0`), a goroutine that can run
    /// (`goroutine 7, created at main.go:20`), or a finalizer's record.
    pub root: String,
    /// The objects from the root to the wait object, each with the offset at
    /// which it points to the next.
    pub hops: Vec<HeldHop>,
    /// The wait object: `channel 0xc000123000` (or the semaphore's address).
    pub wait_object: String,
    /// The site's goroutines waiting on it.
    pub goroutines: u64,
    /// The chain in one line: `main.registry → 0xc0001a0000 (208 B, at +0x10) → channel 0xc000123000`.
    pub summary: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HeldHop {
    #[schemars(regex(pattern = r"^0x[0-9a-f]+$"))]
    pub object: String,
    pub size: u64,
    /// Where in it the pointer to the next lies.
    pub offset: u64,
}

/// What a site's leaked goroutines cost in memory (see [`SiteReport::retained`]).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RetainedReport {
    /// `heap_bytes + stack_bytes`.
    pub bytes: u64,
    /// Heap objects reachable from these goroutines' stacks and from no root
    /// (nor from another site's leaked goroutines: those are `shared_*`).
    pub heap_bytes: u64,
    pub objects: u64,
    /// Their stacks.
    pub stack_bytes: u64,
    /// The proven goroutines measured.
    pub goroutines: u64,
    /// Heap that this site's and another site's leaked goroutines both reach:
    /// counted in neither's `heap_bytes`.
    pub shared_bytes: u64,
    pub shared_objects: u64,
    /// Growth of `heap_bytes` over the trend window, between proofs; absent
    /// until two proofs measured it.
    pub bytes_per_s: Option<f64>,
    /// How long ago the proof measured it.
    pub measured_s_ago: f64,
    /// `heap_bytes` at each proof over the trend window, oldest first.
    pub heap_series: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct WaitSummary {
    /// Blocked goroutines whose wait objects are known.
    pub goroutines: u64,
    /// Distinct objects they wait on.
    pub objects: u64,
    /// Of those, objects goroutines of other sites wait on too.
    pub shared: u64,
    /// The most of this site's goroutines waiting on one object.
    pub most_on_one: u64,
    /// In words: "500 goroutines wait on 500 distinct channels, one each, none shared with other sites".
    pub summary: String,
    /// The objects most waited on.
    pub busiest: Vec<WaitObjectReport>,
}

/// One object blocked goroutines wait on.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct WaitObjectReport {
    pub kind: WaitKind,
    /// Its address in the target.
    pub addr: String,
    /// This site's goroutines waiting on it.
    pub of_site: u64,
    /// Goroutines of every site waiting on it.
    pub waiters: u64,
    /// A channel's buffer and whether it is closed.
    pub channel: Option<ChanState>,
}

/// Goroutines of one site blocked at one place: same current stack, same wait reason.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct BlockedAt {
    pub goroutines: u64,
    pub wait_reason: String,
    /// The first frame outside the runtime's and `sync`'s machinery: the line that blocks.
    pub at: Frame,
    /// The whole current stack, innermost (`runtime.gopark`) first.
    pub stack: Vec<Frame>,
    /// The same stack by return address (as linked), for profiles.
    #[serde(skip)]
    pub locations: Vec<(u64, Vec<Frame>)>,
}

impl MemoryReport {
    /// One line: `memory: at +2.1 MiB/s, the cgroup's 512.0 MiB limit (memory.max
    /// of /pod/ctr) is reached in ~38 min (now 391.0 MiB)`.
    pub fn line(&self) -> String {
        let limit = match (self.limit_source, &self.limit_cgroup) {
            ("GOMEMLIMIT", _) => format!("the {} GOMEMLIMIT", bytes_in_words(self.limit_bytes)),
            ("the host's memory", _) => format!("the host's {} of memory", bytes_in_words(self.limit_bytes)),
            (source, cgroup) => format!(
                "the cgroup's {} limit ({}{})",
                bytes_in_words(self.limit_bytes),
                source.trim_start_matches("the cgroup's "),
                cgroup.as_ref().map(|c| format!(" of {c}")).unwrap_or_default()
            ),
        };
        let now = format!("{} by {}", bytes_in_words(self.current_bytes), self.current_source);
        match self.time_to_limit_s {
            Some(s) if s <= 0.0 => format!("memory: {limit} is reached (now {now})"),
            Some(s) => format!(
                "memory: at +{}/s, {limit} is reached in ~{} (now {now})",
                bytes_in_words(self.growth_bytes_per_s.max(0.0) as u64),
                approx_duration(s)
            ),
            None => format!("memory: now {now}, {limit}; time to the limit {}", self.note),
        }
    }
}

/// A duration as a person says it: `~45 s`, `~38 min`, `~2.5 h`, `~3 days`.
pub fn approx_duration(s: f64) -> String {
    if !s.is_finite() || s >= 86400.0 * 365.0 {
        "more than a year".into()
    } else if s >= 2.0 * 86400.0 {
        format!("{:.0} days", s / 86400.0)
    } else if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.0} s", s.max(1.0))
    }
}

/// How the row folding the runtime's own goroutines is named.
pub const RUNTIME_ROW: &str = "runtime";

impl Report {
    /// Folds the runtime's own goroutines into one `runtime` row (`--all` keeps them
    /// apart), as goleak ignores them: they are never a leak.
    pub fn fold_runtime_sites(&mut self) {
        let (runtime, rest): (Vec<SiteReport>, Vec<SiteReport>) = std::mem::take(&mut self.sites)
            .into_iter()
            .partition(|s| PackageRole::of_function(&s.function).is_runtime());
        self.sites = rest;
        let n = runtime.len();
        let mut rows = runtime.into_iter();
        let Some(mut row) = rows.next() else { return };
        let mut go_funcs = vec![row.go_func.clone()];
        for s in rows {
            row.live += s.live;
            row.created += s.created;
            row.exited += s.exited;
            row.preexisting += s.preexisting;
            row.adopted += s.adopted;
            row.blocked += s.blocked;
            row.stack_bytes += s.stack_bytes;
            row.trend.live_start += s.trend.live_start;
            row.trend.live_end += s.trend.live_end;
            row.trend.live_per_s += s.trend.live_per_s;
            row.trend.live_series = add_series(&row.trend.live_series, &s.trend.live_series);
            row.rates.created_per_s += s.rates.created_per_s;
            row.rates.exited_per_s += s.rates.exited_per_s;
            for (k, v) in s.wait_reasons {
                *row.wait_reasons.entry(k).or_default() += v;
            }
            for (k, v) in s.states {
                *row.states.entry(k).or_default() += v;
            }
            row.oldest_age_s = match (row.oldest_age_s, s.oldest_age_s) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            go_funcs.push(s.go_func);
        }
        go_funcs.sort();
        go_funcs.dedup();
        row.top_wait_reason =
            row.wait_reasons.iter().max_by_key(|(name, n)| (**n, std::cmp::Reverse(*name))).map(|(r, _)| r.clone());
        row.verdict = if row.live > 0 { Verdict::Stable } else { Verdict::Ok };
        row.verdict_reason = format!(
            "the runtime's own goroutines ({n} sites: {}): never a leak; --all lists them one by one",
            go_funcs.join(", ")
        );
        row.function = RUNTIME_ROW.into();
        row.file = String::new();
        row.line = 0;
        row.go_func = go_funcs.join(", ");
        row.age_s = None;
        row.blocked_s = None;
        row.goroutines.clear();
        row.lifetime_p50_ms = None;
        row.stack.clear();
        row.paths.clear();
        row.blocked_at.clear();
        row.wait_objects = None;
        row.proven = 0;
        row.parent_chain.clear();
        row.fingerprint = crate::analysis::known_leaks::fingerprint(&row.function, &row.go_func, &[]);
        let at = self.sites.iter().position(|s| s.live < row.live).unwrap_or(self.sites.len());
        self.sites.insert(at, row);
    }

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
        if let Some(memory) = &self.memory {
            let _ = writeln!(out, "{}", memory.line());
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
                    "{:<8} {:>7} {:>8} {:<SPARK_WIDTH$} {:>8} {:>8} {:>7} {:>8} {:<22} {:>7}  GO STATEMENT",
                    "VERDICT",
                    "LIVE",
                    "Δ LIVE",
                    "TREND",
                    "CREATED",
                    "EXITED",
                    "OLDEST",
                    "BLOCKED",
                    "WAITING ON",
                    "MEMORY"
                )
            )
        );
        for s in self.sites.iter().take(top) {
            let wait = match &s.top_wait_reason {
                Some(r) => format!("{} ({})", r, s.wait_reasons.get(r).copied().unwrap_or(0)),
                None => "-".to_string(),
            };
            let verdict = format!("{:<8}", if s.ignored.is_some() { "ignored" } else { s.verdict.as_str() });
            let verdict = match s.verdict {
                _ if s.ignored.is_some() => paint("2", &verdict),
                Verdict::Leak => paint("1;31", &verdict),
                Verdict::Suspect => paint("33", &verdict),
                Verdict::Stable => paint("36", &verdict),
                Verdict::Ok => paint("32", &verdict),
            };
            let delta = s.trend.live_end as i64 - s.trend.live_start as i64;
            let _ = writeln!(
                out,
                "{} {:>7} {:>8} {:<SPARK_WIDTH$} {:>8} {:>8} {:>7} {:>8} {:<22} {:>7}  {}",
                verdict,
                s.live,
                if delta == 0 { "0".to_string() } else { format!("{delta:+}") },
                sparkline(&s.trend.live_series, SPARK_WIDTH, color),
                s.created,
                s.exited,
                if s.preexisting > 0 {
                    "<attach".to_string() // older than the trace
                } else {
                    s.oldest_age_s.map(secs).unwrap_or_else(|| "-".into())
                },
                s.blocked_s.map(|b| secs(b.p50)).unwrap_or_else(|| "-".into()),
                truncate(&wait, 22),
                // What its proven goroutines retain, once measured; else its stacks.
                bytes_in_column(s.retained.as_ref().map_or(s.stack_bytes, |r| r.bytes.max(s.stack_bytes))),
                site_label(s)
            );
        }
        if self.sites.len() > top {
            let _ = writeln!(out, "… {} more sites (--top)", self.sites.len() - top);
        }
        let explained = self
            .sites
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Leak | Verdict::Suspect) && s.ignored.is_none())
            .take(stacks);
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
            if let Some(r) = &s.retained {
                let _ = writeln!(out, "  memory: {}", describe_retained(r));
            }
            if let Some(h) = &s.held_by {
                let _ = writeln!(out, "  held by: {} ({} goroutines wait on it)", h.summary, h.goroutines);
            }
            for b in s.blocked_at.iter().take(BLOCKED_AT_SHOWN) {
                let _ = writeln!(
                    out,
                    "  blocked: {} at {}:{} in {} ← {}",
                    b.goroutines,
                    short_path(&b.at.file),
                    b.at.line,
                    b.at.function,
                    b.wait_reason
                );
            }
            if let Some(w) = &s.wait_objects {
                let _ = writeln!(out, "  waits: {}", w.summary);
            }
            if let Some(b) = s.blocked_at.first() {
                let _ = writeln!(out, "  stuck in:");
                write_frames(&mut out, &b.stack[..b.stack.len().min(STUCK_FRAMES)]);
            }
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
        self.render_tests(&mut out, &paint);
        if let Some(g) = &self.gate {
            let outlived = if g.fail_on_outlived || g.outlived_goroutines > 0 {
                format!(", {} outlived their test", g.outlived_goroutines)
            } else {
                String::new()
            };
            let blamed = match g.failed_tests.len() {
                0 => String::new(),
                n if n <= TESTS_NAMED => format!("; failed by {}", g.failed_tests.join(", ")),
                n => format!(
                    "; failed by {} and {} more tests",
                    g.failed_tests[..TESTS_NAMED].join(", "),
                    n - TESTS_NAMED
                ),
            };
            let _ = writeln!(
                out,
                "\n{}: {} leaked goroutines{outlived} (fail on {}){}{blamed}; exit code {}",
                if g.failed { paint("1;31", "LEAK GATE FAILED") } else { paint("32", "leak gate passed") },
                g.leaked_goroutines,
                if g.fail_on_outlived { "outlived" } else { g.fail_on.as_str() },
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
        self.render_known_leaks(&mut out, &paint);
        out
    }

    /// Under `--ignore`/`--baseline`: the leaks not counted and why, the entries to
    /// look at, and what still fails the gate.
    fn render_known_leaks(&self, out: &mut String, paint: &dyn Fn(&str, &str) -> String) {
        let Some(k) = &self.known_leaks else { return };
        let from: Vec<String> = [("--ignore", &k.ignore_file), ("--baseline", &k.baseline)]
            .iter()
            .filter_map(|(flag, path)| path.as_ref().map(|p| format!("{flag} {p}")))
            .collect();
        let _ = writeln!(
            out,
            "known leaks ({}): {} sites, {} goroutines not counted",
            from.join(", "),
            k.ignored_sites,
            k.ignored_goroutines
        );
        for s in self.sites.iter() {
            if let Some(i) = &s.ignored {
                let _ = writeln!(out, "  ignored: {} ({} live) by {}: {}", site_label(s), s.live, i.by, i.reason);
            }
        }
        for e in &k.expired {
            let _ = writeln!(
                out,
                "  {} {} ({}; reason: {}): expired on {}, hides nothing and fails the gate",
                paint("1;31", "EXPIRED"),
                e.at,
                e.rule,
                e.reason,
                e.expires.as_deref().unwrap_or("?")
            );
        }
        for e in &k.unmatched {
            let _ = writeln!(out, "  unmatched: {} ({}; reason: {}): no leak matched it", e.at, e.rule, e.reason);
        }
        let Some(g) = &self.gate else { return };
        for s in self.sites.iter().filter(|s| s.live > 0 && s.verdict <= g.fail_on && s.ignored.is_none()) {
            let _ = writeln!(
                out,
                "  {}: {} running {}: {} goroutines [fingerprint {}]",
                paint("1;31", "not known"),
                site_label(s),
                s.go_func,
                s.live,
                s.fingerprint
            );
        }
    }
}

/// "holds 12.0 MiB (11.9 MiB of heap in 3000 objects only they reach, 96.0 KiB of
/// stacks) in 12 proven goroutines, +1.2 MiB/s; 2.0 MiB more shared with other leak sites".
pub fn describe_retained(r: &RetainedReport) -> String {
    let mut text = format!(
        "holds {} ({} of heap in {} objects only they reach, {} of stacks) in {} proven goroutine{}",
        bytes_in_words(r.bytes),
        bytes_in_words(r.heap_bytes),
        r.objects,
        bytes_in_words(r.stack_bytes),
        r.goroutines,
        if r.goroutines == 1 { "" } else { "s" }
    );
    if let Some(rate) = r.bytes_per_s.filter(|rate| rate.is_finite()) {
        let sign = if rate < 0.0 { "-" } else { "+" };
        let _ = write!(text, ", {sign}{}/s", bytes_in_words(rate.abs() as u64));
    }
    if r.shared_bytes > 0 {
        let _ = write!(text, "; {} more shared with other leak sites", bytes_in_words(r.shared_bytes));
    }
    text
}

/// Tests named in the gate's line at most.
const TESTS_NAMED: usize = 8;

impl Report {
    /// The tests that left goroutines behind: leaked, outlived, or still running
    /// with goroutines of their own; one line per test and `go` statement.
    fn render_tests(&self, out: &mut String, paint: &dyn Fn(&str, &str) -> String) {
        let real = self.tests.iter().filter(|t| !t.is_outside_tests()).count();
        let shown: Vec<&TestReport> =
            self.tests.iter().filter(|t| matches!(t.status, TestStatus::Leaked | TestStatus::Outlived)).collect();
        if self.tests.is_empty() {
            return;
        }
        let count = |status| self.tests.iter().filter(|t| t.status == status).count();
        let _ = writeln!(
            out,
            "\ntests: {real} seen · {} leaked · {} outlived their goroutines{}",
            count(TestStatus::Leaked),
            count(TestStatus::Outlived),
            match count(TestStatus::Running) {
                0 => String::new(),
                n => format!(" · {n} running"),
            }
        );
        for t in shown {
            let status = format!("{:<8}", t.status.as_str().to_uppercase());
            let status = if t.status == TestStatus::Leaked { paint("1;31", &status) } else { paint("33", &status) };
            for s in t.live.iter().filter(|s| s.leaked) {
                let blocked = self
                    .sites
                    .iter()
                    .find(|site| site.pc == s.site_pc)
                    .and_then(|site| site.blocked_at.first())
                    .map(|b| format!(", blocked at {}:{} ({})", short_path(&b.at.file), b.at.line, b.wait_reason))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {status} {}: {} goroutine{} of `go {}` at {}:{}{blocked}",
                    t.name,
                    s.goroutines,
                    if s.goroutines == 1 { "" } else { "s" },
                    s.go_func,
                    short_path(&s.file),
                    s.line
                );
            }
            for s in &t.outlived {
                let _ = writeln!(
                    out,
                    "  {} {}: {} goroutine{} of `go {}` at {}:{} outlived it, by up to {}",
                    paint("33", "OUTLIVED"),
                    t.name,
                    s.goroutines,
                    if s.goroutines == 1 { "" } else { "s" },
                    s.go_func,
                    short_path(&s.file),
                    s.line,
                    secs(s.longest_s.unwrap_or(0.0))
                );
            }
        }
    }
}

/// How many frames of the busiest blocking stack the table explains.
const STUCK_FRAMES: usize = 10;

fn write_frames(out: &mut String, frames: &[Frame]) {
    for f in frames {
        if f.line == 0 {
            let _ = writeln!(out, "    {} {}", f.function, f.file);
        } else {
            let _ = writeln!(out, "    {} ({}:{})", f.function, f.file, f.line);
        }
    }
}

/// Columns of the trend sparkline.
const SPARK_WIDTH: usize = 10;

/// `series` as a sparkline of at most `width` columns (the newest values; each
/// column the largest of the values it stands for), scaled between the smallest
/// and largest: Unicode blocks, or plain ASCII for a file or a pipe.
fn sparkline(series: &[u64], width: usize, unicode: bool) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    const ASCII: [char; 8] = ['_', '.', ',', '-', '=', '+', '*', '#'];
    let levels = if unicode { &BLOCKS } else { &ASCII };
    if series.is_empty() || width == 0 {
        return String::new();
    }
    let per_column = series.len().div_ceil(width);
    let columns: Vec<u64> = series.chunks(per_column).map(|c| c.iter().copied().max().unwrap_or(0)).collect();
    let (lo, hi) = (columns.iter().min().copied().unwrap_or(0), columns.iter().max().copied().unwrap_or(0));
    columns
        .iter()
        .map(|&v| {
            let level = if hi == lo { 0 } else { ((v - lo) * 7 / (hi - lo)) as usize };
            levels[level.min(7)]
        })
        .collect()
}

/// Two series added point by point, aligned at their newest values.
fn add_series(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let offset = long.len() - short.len();
    long.iter().enumerate().map(|(i, &v)| v + if i >= offset { short[i - offset] } else { 0 }).collect()
}

/// The final report of `gleak run` carries the gate's decision.
fn final_run_report_has_gate(schema: &mut schemars::Schema) {
    schema.insert(
        "if".into(),
        serde_json::json!({
            "properties": {"mode": {"const": "run"}, "final": {"const": true}},
            "required": ["mode", "final"]
        }),
    );
    schema.insert("then".into(), serde_json::json!({"required": ["gate"]}));
}

/// The JSON Schema of [`Report`], as committed in docs/report.schema.json.
pub fn report_schema() -> String {
    let schema = schemars::schema_for!(Report);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/report.schema.json is what the types say (`cargo xtask schema`).
    #[test]
    fn committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(committed == report_schema(), "{path} is stale: run `cargo xtask schema`");
    }

    #[test]
    fn memory_lines() {
        let mut m = MemoryReport {
            limit_bytes: 512 << 20,
            limit_source: "the cgroup's memory.max",
            limit_cgroup: Some("/pod/ctr".into()),
            current_bytes: 391 << 20,
            current_source: "cgroup memory.current",
            growth_bytes_per_s: 2.1 * (1 << 20) as f64,
            window_s: 30.0,
            time_to_limit_s: Some(38.0 * 60.0),
            note: String::new(),
        };
        assert_eq!(
            m.line(),
            "memory: at +2.1 MiB/s, the cgroup's 512.0 MiB limit (memory.max of /pod/ctr) is reached in ~38 min \
             (now 391.0 MiB by cgroup memory.current)"
        );
        m.time_to_limit_s = None;
        m.note = "not yet measurable: no site is judged a leak".into();
        assert_eq!(
            m.line(),
            "memory: now 391.0 MiB by cgroup memory.current, the cgroup's 512.0 MiB limit (memory.max of /pod/ctr); \
             time to the limit not yet measurable: no site is judged a leak"
        );
        m.limit_source = "GOMEMLIMIT";
        m.limit_bytes = 64 << 20;
        assert!(m.line().contains("the 64.0 MiB GOMEMLIMIT"), "{}", m.line());
        m.time_to_limit_s = Some(0.0);
        assert!(m.line().contains("GOMEMLIMIT is reached (now"), "{}", m.line());
        assert_eq!(approx_duration(44.6), "45 s");
        assert_eq!(approx_duration(9000.0), "2.5 h");
        assert_eq!(approx_duration(3.0 * 86400.0), "3 days");
        assert_eq!(approx_duration(f64::INFINITY), "more than a year");
    }

    #[test]
    fn sparklines() {
        assert_eq!(sparkline(&[1, 2, 3, 4, 5, 6, 7, 8], 10, true), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[1, 2, 3, 4, 5, 6, 7, 8], 10, false), "_.,-=+*#");
        // Flat: the lowest level throughout.
        assert_eq!(sparkline(&[300, 300, 300], 10, false), "___");
        // Longer than the width: columns of two, each its larger value.
        assert_eq!(
            sparkline(&[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100], 10, false),
            "-________#"
        );
        assert_eq!(sparkline(&[], 10, true), "");
        assert_eq!(add_series(&[1, 2, 3], &[10, 20]), vec![1, 12, 23]);
    }
}
