//! End-to-end: known leaks under `gleak run`'s gate. `--ignore FILE` hides the
//! leaking sites its entries match (by fingerprint or by patterns, each with a
//! reason) from the gate but not from the report; an expired entry fails the
//! gate; `--write-ignore` writes a file that turns today's run green;
//! `--baseline REPORT.json` fails only on leaks absent from an earlier report.
//! Bad files are usage errors (exit 2) before the command starts.
//!
//! Fixture `gate_known.go`: 3 goroutines leak at `LEAK:known_refresh` (blocked in
//! `main.refresh`), 2 at `LEAK:known_notify` (in `main.notify`), and with `-new`
//! 4 more at `LEAK:known_new` (in `main.watch`).
//!
//! Needs root and a release build of gleak (`cargo build --release`, or set GLEAK_BIN).

use std::path::{Path, PathBuf};

use gleak_tests::*;

const REFRESH: &str = "LEAK:known_refresh";
const NOTIFY: &str = "LEAK:known_notify";
const NEW: &str = "LEAK:known_new";

/// The fingerprints of the three sites: no line numbers in them.
const REFRESH_FP: &str = "main.startRefresher | main.refresh | main.refresh";
const NOTIFY_FP: &str = "main.notifyAll | main.notify | main.notify";
const NEW_FP: &str = "main.watchAll | main.watch | main.watch";

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("gleak-known-{what}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `gleak run --json <opts> -- <fixture> <args>`: the run and its final report,
/// the reports checked against the schema.
fn gate(fx: &Fixture, opts: &[&str], args: &[&str]) -> (GleakRun, Value) {
    let _serial = serial_guard();
    let mut all = vec!["--json"];
    all.extend_from_slice(opts);
    let run = run_gleak_run(&all, &fx.binary, args);
    let reports = json_reports(&run);
    check_run_reports(&reports, &run);
    let last = reports.last().cloned().expect("checked: at least one report");
    (run, last)
}

fn site<'a>(fx: &Fixture, report: &'a Value, marker: &str, run: &GleakRun) -> &'a Value {
    marker_site(report, fx, marker).unwrap_or_else(|| {
        panic!("{fx}: site // {marker} missing from the final report\n{}\n{run}", describe_sites(report, 15))
    })
}

fn assert_code(fx: &Fixture, run: &GleakRun, want: i32) {
    assert_eq!(run.code(), Some(want), "{fx}: gleak run exit code, want {want}\n{run}");
}

/// The site at `marker` leaks `live` goroutines, is `ignored` by `by` (or not), and
/// has the fingerprint `fp`.
fn assert_site(fx: &Fixture, r: &Value, marker: &str, live: u64, fp: &str, ignored_by: Option<&str>, run: &GleakRun) {
    let s = site(fx, r, marker, run);
    assert_eq!(verdict(s), "leak", "{fx}: // {marker}: ignored sites keep their verdict\n{s}\n{run}");
    assert_eq!(count(s, "live"), live, "{fx}: // {marker}\n{s}\n{run}");
    assert_eq!(s["fingerprint"], fp, "{fx}: // {marker} fingerprint\n{s}");
    match ignored_by {
        Some(by) => assert_eq!(s["ignored"]["by"], by, "{fx}: // {marker} must be ignored by {by}\n{s}\n{run}"),
        None => assert!(s.get("ignored").is_none(), "{fx}: // {marker} must not be ignored\n{s}\n{run}"),
    }
}

/// The gate's verdict: failed or not, how many goroutines it counted.
fn assert_gate(fx: &Fixture, r: &Value, failed: bool, leaked: u64, run: &GleakRun) {
    let g = &r["gate"];
    assert_eq!(
        (g["failed"].as_bool(), g["leaked_goroutines"].as_u64()),
        (Some(failed), Some(leaked)),
        "{fx}: {g}\n{run}"
    );
}

fn each_toolchain(what: &str, check: impl Fn(&Fixture)) {
    if !require_root() {
        return;
    }
    for_each_toolchain(what, |tc| check(&Fixture::build(tc, "gate_known")));
}

/// One entry with a reason hides one site: the gate still fails on the other,
/// named in the report; entries for both (a fingerprint and patterns) turn it
/// green with both shown as ignored, and an entry that matched nothing is listed.
#[test]
fn ignore_file_hides_only_what_it_names() {
    each_toolchain("ignore_file_hides_only_what_it_names", |fx| {
        let dir = Scratch::new("ignore");
        let one = dir.write(
            "one.toml",
            &format!(
                "# the refresher's goroutines live for the whole process\n\
                 [[leak]]\nfingerprint = \"{REFRESH_FP}\"\nreason = \"refresher lives as long as the process (#12)\"\n"
            ),
        );
        let (run, r) = gate(fx, &["--ignore", arg(&one)], &[]);
        assert_code(fx, &run, 1);
        let by = format!("{}:2", one.display());
        assert_site(fx, &r, REFRESH, 3, REFRESH_FP, Some(&by), &run);
        let refresh = site(fx, &r, REFRESH, &run);
        assert_eq!(refresh["ignored"]["reason"], "refresher lives as long as the process (#12)", "{refresh}");
        assert_site(fx, &r, NOTIFY, 2, NOTIFY_FP, None, &run);
        assert_gate(fx, &r, true, 2, &run);
        let k = &r["known_leaks"];
        assert_eq!((count(k, "ignored_sites"), count(k, "ignored_goroutines")), (1, 3), "{fx}: {k}");
        assert!(!run.stderr.contains("matched no leak"), "{fx}: the entry matched\n{run}");

        // The same run as text: the table says `ignored`, the gate names only the other site.
        let _serial = serial_guard();
        let text = run_gleak_run(&["--ignore", arg(&one)], &fx.binary, &[]);
        assert_code(fx, &text, 1);
        let notify_line = fx.marker_line(NOTIFY);
        let named: Vec<&str> = text.stdout.lines().filter(|l| l.contains("not known:")).collect();
        assert_eq!(named.len(), 1, "{fx}: one site fails the gate\n{text}");
        assert!(
            named[0].contains(&format!(
                "main.notifyAll (tests/fixtures/gate_known.go:{notify_line}) running main.notify: 2 goroutines"
            )),
            "{fx}: {}\n{text}",
            named[0]
        );
        let ignored_row = "ignored        3";
        assert!(text.stdout.contains(ignored_row), "{fx}: the table marks the known site `ignored`\n{text}");
        assert!(text.stdout.contains(&format!("by {by}: refresher lives")), "{fx}\n{text}");
        assert!(text.stdout.contains("LEAK GATE FAILED: 2 leaked goroutines"), "{fx}\n{text}");
        drop(_serial);

        let both = dir.write(
            "both.toml",
            &format!(
                "[[leak]]\nfingerprint = \"{REFRESH_FP}\"\nreason = \"refresher lives as long as the process\"\n\n\
                 [[leak]]\nfunction = \"main.notify*\"\nblocked_in = \"main.notify\"\nreason = \"notifications \
                 are best effort\"\nexpires = \"2999-12-31\"\n\n\
                 [[leak]]\nfingerprint = \"main.gone | main.gone | main.gone\"\nreason = \"fixed long ago\"\n"
            ),
        );
        let (run, r) = gate(fx, &["--ignore", arg(&both)], &[]);
        assert_code(fx, &run, 0);
        assert_site(fx, &r, REFRESH, 3, REFRESH_FP, Some(&format!("{}:1", both.display())), &run);
        assert_site(fx, &r, NOTIFY, 2, NOTIFY_FP, Some(&format!("{}:5", both.display())), &run);
        assert_gate(fx, &r, false, 0, &run);
        let k = &r["known_leaks"];
        assert_eq!((count(k, "ignored_sites"), count(k, "ignored_goroutines")), (2, 5), "{fx}: {k}");
        let unmatched = k["unmatched"].as_array().expect("unmatched is a list");
        assert_eq!(unmatched.len(), 1, "{fx}: {k}");
        assert_eq!(unmatched[0]["at"], format!("{}:11", both.display()), "{fx}: {k}");
        assert!(
            run.stderr.contains(&format!("{}:11: known-leak entry matched no leak this run", both.display())),
            "{fx}: a warning on stderr names the unmatched entry\n{run}"
        );
        assert_eq!(r["gate"]["exit_code"], 0, "{fx}: {}", r["gate"]);
    });
}

/// An expired entry hides nothing and fails the gate, saying so.
#[test]
fn expired_entry_fails_the_gate() {
    each_toolchain("expired_entry_fails_the_gate", |fx| {
        let dir = Scratch::new("expired");
        let file = dir.write(
            "expired.toml",
            &format!(
                "[[leak]]\nfingerprint = \"{NOTIFY_FP}\"\nreason = \"best effort\"\n\n\
                 [[leak]]\nfingerprint = \"{REFRESH_FP}\"\nreason = \"until the cache rewrite\"\nexpires = \"2020-01-31\"\n"
            ),
        );
        let (run, r) = gate(fx, &["--ignore", arg(&file)], &[]);
        assert_code(fx, &run, 1);
        assert_site(fx, &r, REFRESH, 3, REFRESH_FP, None, &run);
        assert_site(fx, &r, NOTIFY, 2, NOTIFY_FP, Some(&format!("{}:1", file.display())), &run);
        assert_gate(fx, &r, true, 3, &run);
        let expired = r["known_leaks"]["expired"].as_array().expect("expired is a list");
        assert_eq!(expired.len(), 1, "{fx}: {}", r["known_leaks"]);
        assert_eq!(expired[0]["expires"], "2020-01-31");
        assert_eq!(expired[0]["sites"], 1, "{fx}: it matched the refresher");
        let want = format!(
            "gleak: {}:5: known-leak entry expired on 2020-01-31 (fingerprint = \"{REFRESH_FP}\"; reason: until the \
             cache rewrite): it hides nothing any more and fails the gate",
            file.display()
        );
        assert!(run.stderr.contains(&want), "{fx}: want on stderr: {want}\n{run}");

        // Every leak covered, but an expired entry (matching nothing) still fails the gate.
        let file = dir.write(
            "stale.toml",
            &format!(
                "[[leak]]\nfingerprint = \"{NOTIFY_FP}\"\nreason = \"best effort\"\n\n\
                 [[leak]]\nfingerprint = \"{REFRESH_FP}\"\nreason = \"lives with the process\"\n\n\
                 [[leak]]\nfunction = \"main.legacy*\"\nreason = \"legacy poller\"\nexpires = 2021-06-30\n"
            ),
        );
        let (run, r) = gate(fx, &["--ignore", arg(&file)], &[]);
        assert_code(fx, &run, 1);
        assert_site(fx, &r, REFRESH, 3, REFRESH_FP, Some(&format!("{}:5", file.display())), &run);
        assert_site(fx, &r, NOTIFY, 2, NOTIFY_FP, Some(&format!("{}:1", file.display())), &run);
        assert_gate(fx, &r, true, 0, &run);
        let expired = &r["known_leaks"]["expired"];
        assert_eq!(expired[0]["at"], format!("{}:9", file.display()), "{fx}: {expired}");
        assert_eq!(expired[0]["sites"], 0, "{fx}: {expired}");
        let want = format!("gleak: {}:9: known-leak entry expired on 2021-06-30", file.display());
        assert!(run.stderr.contains(&want), "{fx}: want on stderr: {want}\n{run}");
    });
}

/// `--write-ignore` lists today's leaks; fed back to `--ignore` the gate passes
/// (placeholder reasons accepted, with a warning), and a new leak still fails it.
#[test]
fn written_ignore_file_turns_the_gate_green() {
    each_toolchain("written_ignore_file_turns_the_gate_green", |fx| {
        let dir = Scratch::new("write");
        let path = dir.0.join("known-leaks.toml");
        let (run, r) = gate(fx, &["--write-ignore", arg(&path)], &[]);
        assert_code(fx, &run, 1);
        assert_gate(fx, &r, true, 5, &run);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{fx}: no --write-ignore file: {e}\n{run}"));
        assert_eq!(text.lines().filter(|l| *l == "[[leak]]").count(), 2, "{fx}: one entry per leaking site\n{text}");
        for (marker, fp, n) in [(REFRESH, REFRESH_FP, 3), (NOTIFY, NOTIFY_FP, 2)] {
            assert!(text.contains(&format!("fingerprint = \"{fp}\"")), "{fx}: {fp}\n{text}");
            let comment = format!("fixtures/gate_known.go:{}) running ", fx.marker_line(marker));
            let line = text.lines().find(|l| l.starts_with('#') && l.contains(&comment));
            assert!(
                line.is_some_and(|l| l.contains(&format!(": {n} goroutine(s)"))),
                "{fx}: a comment with {comment} and {n} goroutines\n{text}"
            );
        }
        assert_eq!(text.matches("reason = \"TODO: why this leak is known\"").count(), 2, "{text}");

        let (run, r) = gate(fx, &["--ignore", arg(&path)], &[]);
        assert_code(fx, &run, 0);
        assert_gate(fx, &r, false, 0, &run);
        assert_eq!(r["known_leaks"]["placeholders"].as_array().map(Vec::len), Some(2), "{fx}: {}", r["known_leaks"]);
        assert_eq!(run.stderr.matches("still has the placeholder reason").count(), 2, "{fx}\n{run}");

        let (run, r) = gate(fx, &["--ignore", arg(&path)], &["-new"]);
        assert_code(fx, &run, 1);
        assert_site(fx, &r, NEW, 4, NEW_FP, None, &run);
        assert_gate(fx, &r, true, 4, &run);
    });
}

/// `--baseline` with a first run's report: green; with a new leak, the gate
/// fails on that one only.
#[test]
fn baseline_fails_only_on_new_leaks() {
    each_toolchain("baseline_fails_only_on_new_leaks", |fx| {
        let dir = Scratch::new("baseline");
        let (first, _) = gate(fx, &[], &[]);
        assert_code(fx, &first, 1);
        let base = dir.write("base.json", &first.stdout);

        let (run, r) = gate(fx, &["--baseline", arg(&base)], &[]);
        assert_code(fx, &run, 0);
        let by = base.display().to_string();
        assert_site(fx, &r, REFRESH, 3, REFRESH_FP, Some(&by), &run);
        assert_site(fx, &r, NOTIFY, 2, NOTIFY_FP, Some(&by), &run);
        assert_gate(fx, &r, false, 0, &run);

        let (run, r) = gate(fx, &["--baseline", arg(&base)], &["-new"]);
        assert_code(fx, &run, 1);
        assert_site(fx, &r, REFRESH, 3, REFRESH_FP, Some(&by), &run);
        assert_site(fx, &r, NOTIFY, 2, NOTIFY_FP, Some(&by), &run);
        assert_site(fx, &r, NEW, 4, NEW_FP, None, &run);
        assert_gate(fx, &r, true, 4, &run);
    });
}

/// Unusable files: exit 2 (usage) with `file:line` and what is wrong, one
/// message and no backtrace, before the command runs (no report).
#[test]
fn bad_known_leak_files_are_usage_errors() {
    if !require_root() {
        return;
    }
    let Some(tc) = go_toolchains().into_iter().last() else { return };
    let fx = Fixture::build(&tc, "gate_known");
    let dir = Scratch::new("bad");
    let cases: Vec<(&str, PathBuf, String)> = vec![
        (
            "--ignore",
            dir.write("noreason.toml", "\n[[leak]]\nfunction = \"main.*\"\n"),
            ":2: this [[leak]] entry has no `reason`".into(),
        ),
        (
            "--ignore",
            dir.write("empty.toml", "[[leak]]\nfunction = \"main.*\"\nreason = \"\"\n"),
            ":3: `reason` is empty".into(),
        ),
        (
            "--ignore",
            dir.write("date.toml", "[[leak]]\nfunction = \"main.*\"\nreason = \"r\"\nexpires = \"2026-02-30\"\n"),
            ":4: `expires` must be a date".into(),
        ),
        (
            "--ignore",
            dir.write("key.toml", "[[leak]]\nfunction = \"main.*\"\nreson = \"r\"\n"),
            ":3:1: unknown field `reson`".into(),
        ),
        ("--ignore", dir.write("syntax.toml", "[[leak]\nfunction = \"main.*\"\n"), ":1:".into()),
        ("--ignore", dir.0.join("missing.toml"), ": cannot read".into()),
        ("--baseline", dir.write("base.json", "PASS\n{\"pid\": 1}\n"), ":2: not a gleak JSON report".into()),
    ];
    for (flag, path, want) in cases {
        let run = run_gleak_run(&[flag, arg(&path)], &fx.binary, &[]);
        assert_eq!(run.code(), Some(2), "{fx}: {flag} {}: usage error\n{run}", path.display());
        let want = format!("gleak: {flag}: {}{want}", path.display());
        assert!(run.stderr.starts_with(&want), "{fx}: want stderr to start with {want:?}\n{run}");
        assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"), "{run}");
        assert!(run.stdout.is_empty(), "{fx}: the command must not have run\n{run}");
    }
}
