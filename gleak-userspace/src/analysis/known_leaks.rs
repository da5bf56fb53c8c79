//! Known leaks: rules that keep leaks a team already knows about from failing
//! `gleak run`'s gate, without hiding them from the report.
//!
//! - `--ignore FILE`: a TOML file kept in the repository, one `[[leak]]` table per
//!   rule. A rule matches a leaking site by its fingerprint (`function | go_func |
//!   blocking functions`: no line numbers, so edits elsewhere in a file do not break
//!   it) or by globs on `function`, `go_func`, `blocked_in`, `file`; it must say why
//!   (`reason`), and may stop hiding anything after a date (`expires`), which then
//!   fails the gate until the leak is fixed or the date moved.
//! - `--baseline REPORT.json`: an earlier `--json` report; its leaking sites'
//!   fingerprints are known.
//! - `--write-ignore FILE`: a rule file for today's leaks, reasons to fill in.
//!
//! Everything read here (the file, the baseline, a site's names from the target)
//! is untrusted: sizes are bounded and errors name the file and line.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::{self, Write as _},
    path::Path,
};

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

use crate::output::{
    format::short_path,
    report::{BlockedAt, Ignored, KnownLeakEntry, KnownLeaksReport, SiteReport},
};

/// The reason `--write-ignore` writes, for a person to replace. Accepted by
/// `--ignore`, with a warning.
pub const PLACEHOLDER_REASON: &str = "TODO: why this leak is known";

/// Separates a fingerprint's three parts; never in a Go symbol name.
const PART_SEPARATOR: &str = " | ";
/// Separates the blocking functions of a site that blocks in several.
const BLOCKED_SEPARATOR: &str = " & ";
/// Largest `--ignore` file read.
const MAX_IGNORE_BYTES: u64 = 4 << 20;
/// Largest `--baseline` report read.
const MAX_BASELINE_BYTES: u64 = 1 << 30;

/// A known-leak file that cannot be used: `at` is `FILE:LINE:COLUMN`, `FILE:LINE`
/// or `FILE`.
#[derive(Debug, thiserror::Error)]
pub enum KnownLeaksError {
    #[error("{path}: cannot read it: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> KnownLeaksError {
    KnownLeaksError::Invalid { at: at.into(), message: message.into() }
}

/// A site's fingerprint: the function with the `go` statement, the function the
/// goroutines run, and the functions they block in (sorted, `-` when none is
/// blocked). Unsymbolized frames (`0x…`, addresses that move with every build)
/// count as `?`.
pub fn fingerprint(function: &str, go_func: &str, blocked_at: &[BlockedAt]) -> String {
    let blocked: Vec<&str> = blocked_at.iter().map(|b| b.at.function.as_str()).collect();
    fingerprint_of(function, go_func, &blocked)
}

fn fingerprint_of(function: &str, go_func: &str, blocked_in: &[&str]) -> String {
    let stable = |f: &str| if f.starts_with("0x") || f.is_empty() { "?".to_string() } else { f.to_string() };
    let mut blocked: Vec<String> = blocked_in.iter().map(|f| stable(f)).collect();
    blocked.sort();
    blocked.dedup();
    let blocked = if blocked.is_empty() { "-".to_string() } else { blocked.join(BLOCKED_SEPARATOR) };
    [stable(function), stable(go_func), blocked].join(PART_SEPARATOR)
}

/// A fingerprint as a person may write it (any spacing around `|` and `&`, the
/// blocking functions in any order), in the form reports print; `None` unless it
/// has three non-empty parts.
fn normalize_fingerprint(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split('|').map(str::trim).collect();
    let [function, go_func, blocked] = parts[..] else { return None };
    if function.is_empty() || go_func.is_empty() || blocked.is_empty() {
        return None;
    }
    let blocked: Vec<&str> = if blocked == "-" { Vec::new() } else { blocked.split('&').map(str::trim).collect() };
    if blocked.iter().any(|b| b.is_empty()) {
        return None;
    }
    Some(fingerprint_of(function, go_func, &blocked))
}

/// A calendar day (UTC), for `expires`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

impl Date {
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=9999).contains(&year).then_some(())?;
        (1..=days).contains(&day).then_some(Date { year, month, day })
    }

    /// `YYYY-MM-DD`, exactly.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
            return None;
        }
        Date::new(text[0..4].parse().ok()?, text[5..7].parse().ok()?, text[8..10].parse().ok()?)
    }

    /// Today, in UTC.
    pub fn today() -> Date {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Date::from_unix_days((secs / 86_400) as i64)
    }

    /// The day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    pub fn from_unix_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// What a rule looks at in a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// The function with the `go` statement.
    Function,
    /// The function the goroutines run.
    GoFunc,
    /// Every function the site's goroutines block in.
    BlockedIn,
    /// The file of the `go` statement.
    File,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Function => "function",
            Field::GoFunc => "go_func",
            Field::BlockedIn => "blocked_in",
            Field::File => "file",
        }
    }
}

#[derive(Debug)]
struct Pattern {
    field: Field,
    text: String,
    glob: GlobMatcher,
}

#[derive(Debug)]
enum Rule {
    Fingerprint(String),
    /// Every pattern must match.
    Patterns(Vec<Pattern>),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Fingerprint(fp) => write!(f, "fingerprint = {}", toml_string(fp)),
            Rule::Patterns(patterns) => {
                let shown: Vec<String> =
                    patterns.iter().map(|p| format!("{} = {}", p.field.key(), toml_string(&p.text))).collect();
                f.write_str(&shown.join(", "))
            }
        }
    }
}

/// The names of a site that rules match.
#[derive(Debug)]
pub struct SiteKeys<'a> {
    pub function: &'a str,
    pub go_func: &'a str,
    pub file: &'a str,
    pub blocked_in: Vec<&'a str>,
    pub fingerprint: &'a str,
}

impl<'a> SiteKeys<'a> {
    pub fn of(site: &'a SiteReport) -> SiteKeys<'a> {
        SiteKeys {
            function: &site.function,
            go_func: &site.go_func,
            file: &site.file,
            blocked_in: site.blocked_at.iter().map(|b| b.at.function.as_str()).collect(),
            fingerprint: &site.fingerprint,
        }
    }
}

impl Rule {
    fn matches(&self, site: &SiteKeys) -> bool {
        match self {
            Rule::Fingerprint(fp) => site.fingerprint == fp,
            Rule::Patterns(patterns) => patterns.iter().all(|p| match p.field {
                Field::Function => p.glob.is_match(site.function),
                Field::GoFunc => p.glob.is_match(site.go_func),
                Field::File => p.glob.is_match(site.file),
                // All of them: a rule for one blocking place must not hide goroutines stuck elsewhere.
                Field::BlockedIn => !site.blocked_in.is_empty() && site.blocked_in.iter().all(|f| p.glob.is_match(f)),
            }),
        }
    }
}

/// One `[[leak]]` entry of an `--ignore` file.
#[derive(Debug)]
struct Entry {
    line: usize,
    rule: Rule,
    reason: String,
    expires: Option<Date>,
    expired: bool,
    /// Leaking sites it matched this run.
    sites: u64,
}

/// An `--ignore` file, parsed and checked.
#[derive(Debug)]
pub struct IgnoreFile {
    path: String,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    leak: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    fingerprint: Option<Spanned<String>>,
    function: Option<Spanned<String>>,
    go_func: Option<Spanned<String>>,
    blocked_in: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    expires: Option<Spanned<toml::Value>>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Reads at most `limit` bytes of `path`, as text.
fn read_bounded(path: &Path, limit: u64) -> Result<String, KnownLeaksError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let read_err = |cause| KnownLeaksError::Read { path: shown.clone(), cause };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(&shown, format!("larger than {} MiB; not a file gleak wrote", limit >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        invalid(format!("{shown}:{line}"), "not UTF-8 text")
    })
}

impl IgnoreFile {
    pub fn load(path: &Path, today: Date) -> Result<IgnoreFile, KnownLeaksError> {
        let text = read_bounded(path, MAX_IGNORE_BYTES)?;
        IgnoreFile::parse(&text, &path.display().to_string(), today)
    }

    /// `text` as the file `path` (for messages); entries whose `expires` is
    /// before `today` are expired.
    pub fn parse(text: &str, path: &str, today: Date) -> Result<IgnoreFile, KnownLeaksError> {
        let at = |offset: usize| {
            let (line, _) = line_col(text, offset);
            format!("{path}:{line}")
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let at = match e.span() {
                Some(span) => {
                    let (line, column) = line_col(text, span.start);
                    format!("{path}:{line}:{column}")
                }
                None => path.to_string(),
            };
            invalid(at, e.message().trim().to_string())
        })?;
        let mut entries = Vec::with_capacity(raw.leak.len());
        for spanned in raw.leak {
            let start = spanned.span().start;
            let line = line_col(text, start).0;
            let raw = spanned.into_inner();
            let reason = match raw.reason {
                None => {
                    return Err(invalid(at(start), "this [[leak]] entry has no `reason`: say why the leak is known"));
                }
                Some(r) if r.get_ref().trim().is_empty() => {
                    return Err(invalid(at(r.span().start), "`reason` is empty: say why the leak is known"));
                }
                Some(r) => r.into_inner().trim().to_string(),
            };
            let expires = match raw.expires {
                None => None,
                Some(e) => Some(expiry_date(e.get_ref()).ok_or_else(|| {
                    invalid(at(e.span().start), "`expires` must be a date, \"YYYY-MM-DD\" (a real day)")
                })?),
            };
            let patterns = [
                (Field::Function, raw.function),
                (Field::GoFunc, raw.go_func),
                (Field::BlockedIn, raw.blocked_in),
                (Field::File, raw.file),
            ];
            let rule = match raw.fingerprint {
                Some(fp) if patterns.iter().any(|(_, p)| p.is_some()) => {
                    return Err(invalid(
                        at(fp.span().start),
                        "an entry matches by `fingerprint` or by patterns (function, go_func, blocked_in, file), \
                         not both",
                    ));
                }
                Some(fp) => Rule::Fingerprint(normalize_fingerprint(fp.get_ref()).ok_or_else(|| {
                    invalid(
                        at(fp.span().start),
                        "`fingerprint` must be \"function | go_func | blocking functions\", as a report's \
                         `fingerprint` shows it",
                    )
                })?),
                None => {
                    let mut compiled = Vec::new();
                    for (field, pattern) in patterns {
                        let Some(pattern) = pattern else { continue };
                        let text = pattern.get_ref().trim();
                        let bad = |why: String| invalid(at(pattern.span().start), why);
                        if text.is_empty() {
                            return Err(bad(format!("`{}` is empty", field.key())));
                        }
                        let glob = Glob::new(text).map_err(|e| bad(format!("`{}`: {}", field.key(), e.kind())))?;
                        compiled.push(Pattern { field, text: text.to_string(), glob: glob.compile_matcher() });
                    }
                    if compiled.is_empty() {
                        return Err(invalid(
                            at(start),
                            "this [[leak]] entry matches nothing: give `fingerprint`, or at least one of \
                             `function`, `go_func`, `blocked_in`, `file`",
                        ));
                    }
                    Rule::Patterns(compiled)
                }
            };
            let expired = expires.is_some_and(|day| day < today);
            entries.push(Entry { line, rule, reason, expires, expired, sites: 0 });
        }
        Ok(IgnoreFile { path: path.to_string(), entries })
    }

    fn entry_report(&self, e: &Entry) -> KnownLeakEntry {
        KnownLeakEntry {
            at: format!("{}:{}", self.path, e.line),
            rule: e.rule.to_string(),
            reason: e.reason.clone(),
            expires: e.expires.map(|d| d.to_string()),
            sites: e.sites,
        }
    }
}

/// `expires` as a quoted string or a TOML date (no time).
fn expiry_date(value: &toml::Value) -> Option<Date> {
    match value {
        toml::Value::String(s) => Date::parse(s.trim()),
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            let d = dt.date?;
            Date::new(i32::from(d.year), d.month, d.day)
        }
        _ => None,
    }
}

/// The leaking sites of an earlier report.
#[derive(Debug)]
pub struct Baseline {
    path: String,
    fingerprints: HashSet<String>,
}

#[derive(Deserialize)]
struct BaselineReport {
    sites: Vec<BaselineSite>,
    #[serde(rename = "final", default)]
    is_final: bool,
}

#[derive(Deserialize)]
struct BaselineSite {
    function: String,
    go_func: String,
    verdict: String,
    live: u64,
    #[serde(default)]
    blocked_at: Vec<BaselineBlocked>,
    /// Absent in reports of gleak before fingerprints: computed then.
    fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct BaselineBlocked {
    at: BaselineFrame,
}

#[derive(Deserialize)]
struct BaselineFrame {
    function: String,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline, KnownLeaksError> {
        let text = read_bounded(path, MAX_BASELINE_BYTES)?;
        Baseline::parse(&text, &path.display().to_string())
    }

    /// The last final report of `text` (`--json` output: one report per line;
    /// other lines, a test binary's own output, are skipped), else its last
    /// report. Its sites still alive and judged `leak` or `suspect` are known.
    pub fn parse(text: &str, path: &str) -> Result<Baseline, KnownLeaksError> {
        let mut chosen: Option<BaselineReport> = None;
        for (i, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with('{') {
                continue;
            }
            let report: BaselineReport = serde_json::from_str(line.trim()).map_err(|e| {
                invalid(format!("{path}:{}", i + 1), format!("not a gleak JSON report (`gleak run --json`): {e}"))
            })?;
            if report.is_final || chosen.as_ref().is_none_or(|c| !c.is_final) {
                chosen = Some(report);
            }
        }
        let report =
            chosen.ok_or_else(|| invalid(path, "no gleak JSON report in it (`gleak run --json` writes one)"))?;
        let fingerprints = report
            .sites
            .into_iter()
            .filter(|s| s.live > 0 && matches!(s.verdict.as_str(), "leak" | "suspect"))
            .map(|s| {
                s.fingerprint.as_deref().and_then(normalize_fingerprint).unwrap_or_else(|| {
                    let blocked: Vec<&str> = s.blocked_at.iter().map(|b| b.at.function.as_str()).collect();
                    fingerprint_of(&s.function, &s.go_func, &blocked)
                })
            })
            .collect();
        Ok(Baseline { path: path.to_string(), fingerprints })
    }
}

/// A leaking site the gate counted.
#[derive(Clone, Debug)]
pub struct CountedSite {
    pub fingerprint: String,
    /// `function (file:line) running go_func`.
    pub label: String,
    pub goroutines: u64,
    /// `file:line in function` where most of them block.
    pub blocked: Option<String>,
}

/// The known leaks of one `gleak run`, and what they hid.
#[derive(Debug, Default)]
pub struct KnownLeaks {
    ignore: Option<IgnoreFile>,
    baseline: Option<Baseline>,
    ignored_sites: u64,
    ignored_goroutines: u64,
    counted: Vec<CountedSite>,
}

impl KnownLeaks {
    pub fn new(ignore: Option<IgnoreFile>, baseline: Option<Baseline>) -> KnownLeaks {
        KnownLeaks { ignore, baseline, ..KnownLeaks::default() }
    }

    /// The gate would count `goroutines` of the leaking `site`: how many it still
    /// counts, 0 when a known leak covers it (then marked `ignored`).
    pub fn gate(&mut self, site: &mut SiteReport, goroutines: u64) -> u64 {
        if let Some(ignored) = self.cover(&SiteKeys::of(site)) {
            site.ignored = Some(ignored);
            self.ignored_sites += 1;
            self.ignored_goroutines += goroutines;
            return 0;
        }
        self.counted.push(CountedSite {
            fingerprint: site.fingerprint.clone(),
            label: format!("{} ({}:{}) running {}", site.function, short_path(&site.file), site.line, site.go_func),
            goroutines,
            blocked: site
                .blocked_at
                .first()
                .map(|b| format!("{}:{} in {}", short_path(&b.at.file), b.at.line, b.at.function)),
        });
        goroutines
    }

    /// The first rule that hides `site`: the `--ignore` file's entries in order
    /// (expired ones only note the match), then the baseline.
    fn cover(&mut self, site: &SiteKeys) -> Option<Ignored> {
        if let Some(file) = &mut self.ignore {
            let mut hidden_by = None;
            for e in file.entries.iter_mut().filter(|e| e.rule.matches(site)) {
                e.sites += 1;
                if !e.expired {
                    hidden_by = Some(Ignored { by: format!("{}:{}", file.path, e.line), reason: e.reason.clone() });
                    break;
                }
            }
            if hidden_by.is_some() {
                return hidden_by;
            }
        }
        let baseline = self.baseline.as_ref()?;
        baseline.fingerprints.contains(site.fingerprint).then(|| Ignored {
            by: baseline.path.clone(),
            reason: format!("leaking already in the baseline {}", baseline.path),
        })
    }

    /// Whether an entry has expired: that fails the gate.
    pub fn any_expired(&self) -> bool {
        self.ignore.as_ref().is_some_and(|f| f.entries.iter().any(|e| e.expired))
    }

    /// The leaking sites the gate counted, in report order.
    pub fn counted(&self) -> &[CountedSite] {
        &self.counted
    }

    /// What goes in the report; `None` without `--ignore` or `--baseline`.
    pub fn report(&self) -> Option<KnownLeaksReport> {
        if self.ignore.is_none() && self.baseline.is_none() {
            return None;
        }
        let mut report = KnownLeaksReport {
            ignore_file: self.ignore.as_ref().map(|f| f.path.clone()),
            baseline: self.baseline.as_ref().map(|b| b.path.clone()),
            ignored_sites: self.ignored_sites,
            ignored_goroutines: self.ignored_goroutines,
            ..KnownLeaksReport::default()
        };
        if let Some(file) = &self.ignore {
            for e in &file.entries {
                if e.expired {
                    report.expired.push(file.entry_report(e));
                } else if e.sites == 0 {
                    report.unmatched.push(file.entry_report(e));
                }
                if e.reason == PLACEHOLDER_REASON {
                    report.placeholders.push(file.entry_report(e));
                }
            }
        }
        Some(report)
    }
}

/// One line per thing a person should act on: expired entries (which fail the
/// gate), entries that matched nothing, placeholder reasons.
pub fn warnings(report: &KnownLeaksReport) -> Vec<String> {
    let mut lines = Vec::new();
    for e in &report.expired {
        lines.push(format!(
            "{}: known-leak entry expired on {} ({}; reason: {}): it hides nothing any more and fails the gate{}; \
             fix the leak, or move `expires` to a later day",
            e.at,
            e.expires.as_deref().unwrap_or("?"),
            e.rule,
            e.reason,
            if e.sites > 0 { format!(" (it matched {} leaking site(s) this run)", e.sites) } else { String::new() }
        ));
    }
    for e in &report.unmatched {
        lines.push(format!(
            "{}: known-leak entry matched no leak this run ({}; reason: {}); if the leak is fixed, delete it",
            e.at, e.rule, e.reason
        ));
    }
    for e in &report.placeholders {
        lines.push(format!(
            "{}: known-leak entry still has the placeholder reason {:?} ({}): say why this leak is known",
            e.at, e.reason, e.rule
        ));
    }
    lines
}

/// `s` as a TOML basic string (quoted, escaped).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Anything shown in a TOML comment on one line: control characters (from the
/// target's names) become spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// An `--ignore` file with one entry per distinct fingerprint of `sites`, each
/// with `PLACEHOLDER_REASON`, and a comment saying where and how many.
pub fn ignore_file_text(sites: &[CountedSite], today: Date) -> String {
    let mut by_fingerprint: BTreeMap<&str, Vec<&CountedSite>> = BTreeMap::new();
    for s in sites {
        by_fingerprint.entry(&s.fingerprint).or_default().push(s);
    }
    let mut out = format!(
        "# Known goroutine leaks, for `gleak run --ignore FILE`. Written by `gleak run --write-ignore` on {today}.\n\
         # Each [[leak]] hides the leaking sites whose `fingerprint` (function | go_func | blocking functions,\n\
         # as a --json report shows it) matches; patterns (function, go_func, blocked_in, file: globs) can\n\
         # match instead. Replace each reason with why the leak is known; `expires = \"YYYY-MM-DD\"` makes the\n\
         # gate fail after that day.\n"
    );
    for (fp, sites) in by_fingerprint {
        out.push_str("\n[[leak]]\n");
        for s in sites {
            let _ = write!(out, "# {}: {} goroutine(s)", one_line(&s.label), s.goroutines);
            if let Some(b) = &s.blocked {
                let _ = write!(out, ", blocked at {}", one_line(b));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "fingerprint = {}", toml_string(fp));
        let _ = writeln!(out, "reason = {}", toml_string(PLACEHOLDER_REASON));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    const TODAY: &str = "2026-06-15";

    fn parse(text: &str) -> Result<IgnoreFile, String> {
        IgnoreFile::parse(text, "known.toml", day(TODAY)).map_err(|e| e.to_string())
    }

    fn keys<'a>(function: &'a str, go_func: &'a str, blocked: &[&'a str], fp: &'a mut String) -> SiteKeys<'a> {
        *fp = fingerprint_of(function, go_func, blocked);
        SiteKeys { function, go_func, file: "/src/app/cache/refresh.go", blocked_in: blocked.to_vec(), fingerprint: fp }
    }

    #[test]
    fn dates() {
        assert_eq!(Date::from_unix_days(0).to_string(), "1970-01-01");
        assert_eq!(Date::from_unix_days(20_794).to_string(), "2026-12-07");
        assert_eq!(Date::from_unix_days(11_016).to_string(), "2000-02-29");
        assert_eq!(Date::from_unix_days(-1).to_string(), "1969-12-31");
        assert_eq!(day("2024-02-29").to_string(), "2024-02-29");
        for bad in ["2023-02-29", "2026-13-01", "2026-00-10", "2026-04-31", "26-01-01", "2026-1-01", "2026/01/01", ""] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert!(day("2026-06-14") < day("2026-06-15") && day("2025-12-31") < day("2026-01-01"));
    }

    #[test]
    fn fingerprints_are_normalized() {
        assert_eq!(
            fingerprint_of("main.a", "main.b", &["main.d", "main.c", "main.d"]),
            "main.a | main.b | main.c & main.d"
        );
        assert_eq!(fingerprint_of("main.a", "main.b", &[]), "main.a | main.b | -");
        assert_eq!(fingerprint_of("main.a", "main.b", &["0x4a1f20"]), "main.a | main.b | ?");
        assert_eq!(
            normalize_fingerprint(" main.a|main.b |main.d&  main.c").as_deref(),
            Some("main.a | main.b | main.c & main.d")
        );
        assert_eq!(normalize_fingerprint("main.a | main.b | -").as_deref(), Some("main.a | main.b | -"));
        for bad in ["main.a | main.b", "main.a | | main.c", "a | b | c | d", "a | b | c &", ""] {
            assert_eq!(normalize_fingerprint(bad), None, "{bad}");
        }
    }

    #[test]
    fn fingerprint_entry_matches_its_site_only() {
        let mut f = parse(
            "[[leak]]\nfingerprint = \"cache.(*C).Start | cache.(*C).refresh | cache.(*C).refresh\"\nreason = \"upstream bug #12\"\n",
        )
        .unwrap();
        let (mut a, mut b) = (String::new(), String::new());
        let hit = keys("cache.(*C).Start", "cache.(*C).refresh", &["cache.(*C).refresh"], &mut a);
        let other = keys("cache.(*C).Start", "cache.(*C).refresh", &["cache.wait"], &mut b);
        assert!(f.entries[0].rule.matches(&hit));
        assert!(!f.entries[0].rule.matches(&other));
        let mut known = KnownLeaks::new(Some(f), None);
        let ignored = known.cover(&hit).expect("covered");
        assert_eq!((ignored.by.as_str(), ignored.reason.as_str()), ("known.toml:1", "upstream bug #12"));
        assert!(known.cover(&other).is_none());
        let report = known.report().unwrap();
        assert!(report.unmatched.is_empty() && report.expired.is_empty() && report.placeholders.is_empty());
        f = parse("[[leak]]\nfingerprint = \"x | y | z\"\nreason = \"r\"\n").unwrap();
        let report = KnownLeaks::new(Some(f), None).report().unwrap();
        assert_eq!(report.unmatched.len(), 1, "an entry that matched nothing is listed");
        assert_eq!(report.unmatched[0].rule, "fingerprint = \"x | y | z\"");
        assert_eq!(report.unmatched[0].at, "known.toml:1");
    }

    #[test]
    fn patterns_all_must_match() {
        let f = parse(
            r#"
[[leak]]
function = "cache.*"
blocked_in = "cache.(*C).refresh"
reason = "known"

[[leak]]
file = "*/vendor/*"
reason = "vendored code"
"#,
        )
        .unwrap();
        let (rule, vendored) = (&f.entries[0].rule, &f.entries[1].rule);
        assert_eq!(f.entries[0].line, 2);
        assert_eq!(f.entries[1].line, 7);
        let mut fp = String::new();
        assert!(rule.matches(&keys("cache.(*C).Start", "cache.(*C).refresh", &["cache.(*C).refresh"], &mut fp)));
        // One of the blocking places is elsewhere: not hidden.
        assert!(!rule.matches(&keys("cache.(*C).Start", "g", &["cache.(*C).refresh", "net.wait"], &mut fp)));
        // Nothing blocked: a blocked_in rule does not apply.
        assert!(!rule.matches(&keys("cache.(*C).Start", "g", &[], &mut fp)));
        assert!(!rule.matches(&keys("main.main", "g", &["cache.(*C).refresh"], &mut fp)));
        let site = SiteKeys {
            function: "x.y",
            go_func: "x.z",
            file: "/src/app/vendor/x/y.go",
            blocked_in: vec![],
            fingerprint: "x.y | x.z | -",
        };
        assert!(vendored.matches(&site));
        assert!(!vendored.matches(&SiteKeys { file: "/src/app/x/y.go", ..site }));
        assert_eq!(f.entries[0].rule.to_string(), "function = \"cache.*\", blocked_in = \"cache.(*C).refresh\"");
    }

    #[test]
    fn expired_entries_hide_nothing() {
        let text = format!(
            "[[leak]]\nfunction = \"main.*\"\nreason = \"old\"\nexpires = \"2026-06-14\"\n\n\
             [[leak]]\nfunction = \"main.a\"\nreason = \"still valid today\"\nexpires = {TODAY}\n"
        );
        let f = parse(&text).unwrap();
        assert!(f.entries[0].expired && !f.entries[1].expired, "valid through its day, expired the day after");
        let mut known = KnownLeaks::new(Some(f), None);
        assert!(known.any_expired());
        let mut fp = String::new();
        assert!(known.cover(&keys("main.b", "main.b.func1", &["main.b.func1"], &mut fp)).is_none());
        let by = known.cover(&keys("main.a", "main.a.func1", &["main.a.func1"], &mut fp)).unwrap().by;
        assert_eq!(by, "known.toml:6");
        let report = known.report().unwrap();
        assert_eq!(report.expired.len(), 1);
        assert_eq!((report.expired[0].sites, report.expired[0].expires.as_deref()), (2, Some("2026-06-14")));
        let w = warnings(&report);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("known.toml:1: known-leak entry expired on 2026-06-14"), "{}", w[0]);
        assert!(w[0].contains("reason: old") && w[0].contains("fails the gate"), "{}", w[0]);
    }

    #[test]
    fn bad_files_say_where() {
        let err = |text: &str| parse(text).unwrap_err();
        assert_eq!(
            err("[[leak]]\nfunction = \"main.*\"\n"),
            "known.toml:1: this [[leak]] entry has no `reason`: say why the leak is known"
        );
        assert!(err("[[leak]]\nfunction = \"a\"\nreason = \"  \"\n").starts_with("known.toml:3: `reason` is empty"));
        assert!(err("[[leak]]\nreason = \"r\"\n").starts_with("known.toml:1: this [[leak]] entry matches nothing"));
        assert!(err("[[leak]]\nfunction = \"a\"\nreason = \"r\"\nexpires = \"2026-02-30\"\n")
            .starts_with("known.toml:4: `expires` must be a date"));
        assert!(err("[[leak]]\nfunction = \"a\"\nreason = \"r\"\nexpires = 2026-02-01T10:00:00\n")
            .starts_with("known.toml:4: `expires` must be a date"));
        let unknown = err("[[leak]]\nfunction = \"a\"\nreasn = \"r\"\n");
        assert!(unknown.starts_with("known.toml:3:1: unknown field `reasn`"), "{unknown}");
        let top = err("[[leaks]]\nfunction = \"a\"\n");
        assert!(top.starts_with("known.toml:1:") && top.contains("unknown field `leaks`"), "{top}");
        let syntax = err("[[leak]]\nfunction = \"a\nreason = \"r\"\n");
        assert!(syntax.starts_with("known.toml:2:"), "{syntax}");
        assert!(err("[[leak]]\nfingerprint = \"a | b\"\nreason = \"r\"\n")
            .starts_with("known.toml:2: `fingerprint` must be"));
        assert!(err("[[leak]]\nfingerprint = \"a | b | c\"\nfile = \"x\"\nreason = \"r\"\n").contains("not both"));
        assert!(err("[[leak]]\nfunction = \"a[\"\nreason = \"r\"\n").starts_with("known.toml:2: `function`:"));
        assert!(err("[[leak]]\nfunction = 3\nreason = \"r\"\n").starts_with("known.toml:2:"));
        assert!(parse("").unwrap().entries.is_empty());
        assert!(parse("# nothing known yet\n").unwrap().entries.is_empty());
    }

    #[test]
    fn baseline_knows_its_leaking_sites() {
        let text = concat!(
            "PASS\n",
            r#"{"final":false,"sites":[{"function":"main.early","go_func":"main.w","verdict":"leak","live":1,"fingerprint":"main.early | main.w | main.w"}]}"#,
            "\n",
            r#"{"final":true,"sites":[
"#
        );
        // One report per line: the broken one is the error, at its line.
        let e = Baseline::parse(text, "base.json").unwrap_err().to_string();
        assert!(e.starts_with("base.json:3: not a gleak JSON report"), "{e}");
        let text = concat!(
            r#"{"final":false,"sites":[{"function":"main.early","go_func":"main.w","verdict":"leak","live":1,"fingerprint":"main.early | main.w | main.w"}]}"#,
            "\n",
            r#"{"final":true,"sites":[{"function":"main.a","go_func":"main.a.func1","verdict":"leak","live":3,"fingerprint":"main.a | main.a.func1 | main.a.func1"},"#,
            r#"{"function":"main.old","go_func":"main.w","verdict":"leak","live":2,"blocked_at":[{"at":{"function":"main.w"}}]},"#,
            r#"{"function":"main.ok","go_func":"main.w","verdict":"ok","live":0,"fingerprint":"main.ok | main.w | -"}]}"#,
            "\nok  \tpkg\t0.1s\n"
        );
        let b = Baseline::parse(text, "base.json").unwrap();
        let mut want: Vec<&str> = vec!["main.a | main.a.func1 | main.a.func1", "main.old | main.w | main.w"];
        let mut got: Vec<&str> = b.fingerprints.iter().map(String::as_str).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "the final report's leaking sites, fingerprints computed for old reports");
        let mut known = KnownLeaks::new(None, Some(b));
        let mut fp = String::new();
        let by = known.cover(&keys("main.old", "main.w", &["main.w"], &mut fp)).unwrap();
        assert_eq!(by.by, "base.json");
        assert!(known.cover(&keys("main.ok", "main.w", &[], &mut fp)).is_none(), "not leaking in the baseline");
        assert!(known.cover(&keys("main.early", "main.w", &["main.w"], &mut fp)).is_none(), "not in the final one");
        assert!(Baseline::parse("PASS\n", "base.json").unwrap_err().to_string().contains("no gleak JSON report"));
        assert!(Baseline::parse("{\"pid\":1}\n", "base.json").unwrap_err().to_string().starts_with("base.json:1:"));
    }

    #[test]
    fn written_file_reads_back_and_hides_the_same_sites() {
        let sites = vec![
            CountedSite {
                fingerprint: "main.a | main.a.func1 | main.a.func1".into(),
                label: "main.a (app/main.go:20) running main.a.func1".into(),
                goroutines: 3,
                blocked: Some("app/main.go:21 in main.a.func1".into()),
            },
            CountedSite {
                fingerprint: "main.\"q\" | main.w | -".into(),
                label: "main.\"q\" (app/main.go:30) running main.w\nforged = 1".into(),
                goroutines: 2,
                blocked: None,
            },
        ];
        let text = ignore_file_text(&sites, day(TODAY));
        assert!(
            text.contains("# main.a (app/main.go:20) running main.a.func1: 3 goroutine(s), blocked at app/main.go:21")
        );
        let f = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(f.entries.len(), 2);
        let mut known = KnownLeaks::new(Some(f), None);
        let mut fp = String::new();
        let hidden = known.cover(&keys("main.a", "main.a.func1", &["main.a.func1"], &mut fp)).unwrap();
        assert_eq!(hidden.reason, PLACEHOLDER_REASON);
        assert!(known.cover(&keys("main.\"q\"", "main.w", &[], &mut fp)).is_some());
        let report = known.report().unwrap();
        assert_eq!(report.placeholders.len(), 2, "placeholders are accepted, and listed");
        assert!(report.unmatched.is_empty());
        assert!(warnings(&report).iter().all(|w| w.contains("placeholder reason")));
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_col("ab\ncd\n", 0), (1, 1));
        assert_eq!(line_col("ab\ncd\n", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
