//! The JUnit XML report of a test binary run under `gleak run --junit`: one
//! `testcase` per test gleak saw run (names read from the target, not parsed from
//! output), a `failure` for each test whose goroutines fail the gate, with the
//! report of its leak. The layout CI systems read (Jenkins, GitLab, GitHub
//! actions' reporters): `testsuites` › `testsuite` › `testcase` › `failure`.

use std::{fmt::Write as _, path::Path};

use crate::output::{
    format::{escape_markup as escape, short_path, write_atomically},
    report::{Report, SiteReport, TestReport, TestSite, TestStatus},
};

/// Frames of a creation path and of a blocking stack a failure shows.
const FRAMES_SHOWN: usize = 8;

/// Writes the JUnit file of `report` to `path` (atomically).
pub fn write(report: &Report, path: &Path) -> std::io::Result<()> {
    write_atomically(path, &render(report))
}

/// The suite's name: the test binary's file name (`pkg.test`).
fn suite_name(report: &Report) -> &str {
    report.binary.rsplit('/').next().unwrap_or(&report.binary)
}

/// Whether `test` fails the gate (or, without a gate, leaked).
fn fails(report: &Report, test: &TestReport) -> bool {
    match &report.gate {
        Some(gate) => gate.failed_tests.contains(&test.name),
        None => test.status == TestStatus::Leaked,
    }
}

/// The JUnit document of `report`: every test, and the groups outside tests
/// only when their goroutines fail the gate.
pub fn render(report: &Report) -> String {
    let suite = suite_name(report);
    let cases: Vec<&TestReport> = report.tests.iter().filter(|t| !t.is_outside_tests() || fails(report, t)).collect();
    let failures = cases.iter().filter(|t| fails(report, t)).count();
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"gleak\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
        cases.len(),
        report.elapsed_s
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\">",
        escape(suite),
        cases.len(),
        report.elapsed_s
    );
    for test in cases {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&test.name),
            escape(suite),
            test.duration_s.unwrap_or(0.0)
        );
        let failed = fails(report, test);
        if !failed && test.outlived.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        if failed {
            let leaked = test.leaked_goroutines();
            let outlived = test.outlived_goroutines();
            let message = match (leaked, outlived) {
                (0, n) => format!("{n} goroutine(s) outlived the test"),
                (n, 0) => format!("leaked {n} goroutine(s)"),
                (n, m) => format!("leaked {n} goroutine(s); {m} outlived the test"),
            };
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"goroutine-leak\">{}</failure>",
                escape(&message),
                escape(&describe(report, test))
            );
        } else {
            let _ = writeln!(out, "      <system-out>{}</system-out>", escape(&describe(report, test)));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// What a test left behind, in words: each `go` statement with its count, where
/// the goroutines block and the path that created them.
fn describe(report: &Report, test: &TestReport) -> String {
    let mut text = String::new();
    let site_of = |s: &TestSite| report.sites.iter().find(|site| site.pc == s.site_pc);
    for s in test.live.iter().filter(|s| s.leaked) {
        let _ = writeln!(text, "{} leaked goroutine(s) of `go {}` at {}:{}", s.goroutines, s.go_func, s.file, s.line);
        if let Some(site) = site_of(s) {
            explain_site(&mut text, site);
        }
    }
    for s in &test.outlived {
        let _ = writeln!(
            text,
            "{} goroutine(s) of `go {}` at {}:{} outlived the test, by up to {:.3}s",
            s.goroutines,
            s.go_func,
            s.file,
            s.line,
            s.longest_s.unwrap_or(0.0)
        );
    }
    text
}

fn explain_site(text: &mut String, site: &SiteReport) {
    let _ = writeln!(text, "  verdict: {} ({})", site.verdict.as_str(), site.verdict_reason);
    if let Some(b) = site.blocked_at.first() {
        let _ = writeln!(
            text,
            "  blocked at {}:{} in {} ({})",
            short_path(&b.at.file),
            b.at.line,
            b.at.function,
            b.wait_reason
        );
        for f in b.stack.iter().take(FRAMES_SHOWN) {
            let _ = writeln!(text, "    {} ({}:{})", f.function, f.file, f.line);
        }
    }
    if let Some(path) = site.paths.first() {
        let _ = writeln!(text, "  created at:");
        for f in path.stack.iter().take(FRAMES_SHOWN) {
            let _ = writeln!(text, "    {} ({}:{})", f.function, f.file, f.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{
        report::TestStatus,
        sample::{leaky_report, report},
    };

    fn test_site(site: &SiteReport, goroutines: u64, leaked: bool, longest_s: Option<f64>) -> TestSite {
        TestSite { leaked, ..TestSite::of(site, goroutines, longest_s) }
    }

    fn test(name: &str, status: TestStatus, live: Vec<TestSite>, outlived: Vec<TestSite>) -> TestReport {
        TestReport { name: name.into(), status, duration_s: Some(0.25), live, outlived }
    }

    #[test]
    fn one_testcase_per_test_and_a_failure_for_each_that_failed_the_gate() {
        let mut r = leaky_report();
        let leak = r.sites[0].clone();
        r.binary = "/tmp/go-build1/b001/orders.test".into();
        r.tests = vec![
            test("TestOrders", TestStatus::Leaked, vec![test_site(&leak, 3, true, None)], Vec::new()),
            test("TestOrders/<empty & \"quoted\">", TestStatus::Clean, Vec::new(), Vec::new()),
            test("TestSlow", TestStatus::Outlived, Vec::new(), vec![test_site(&leak, 1, false, Some(0.3))]),
            test("init", TestStatus::Clean, Vec::new(), Vec::new()),
        ];
        r.gate.as_mut().unwrap().failed_tests = vec!["TestOrders".into()];
        let xml = render(&r);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "), "{xml}");
        assert!(xml.contains("<testsuite name=\"orders.test\" tests=\"3\" failures=\"1\""), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 3, "init, clean and not failing, is no testcase:\n{xml}");
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
        assert!(xml.contains("<testcase name=\"TestOrders\" classname=\"orders.test\" time=\"0.250\">"), "{xml}");
        assert!(xml.contains("<failure message=\"leaked 3 goroutine(s)\" type=\"goroutine-leak\">"), "{xml}");
        assert!(xml.contains("3 leaked goroutine(s) of `go main.handleRequest.func1` at /src/orders/handler.go:42"));
        assert!(xml.contains("name=\"TestOrders/&lt;empty &amp; &quot;quoted&quot;&gt;\""), "{xml}");
        // Outlived, not failing: said in its output, not as a failure.
        assert!(xml.contains("<system-out>1 goroutine(s) of `go main.handleRequest.func1`"), "{xml}");
        assert!(xml.ends_with("  </testsuite>\n</testsuites>\n"), "{xml}");
    }

    #[test]
    fn a_group_outside_tests_is_a_testcase_when_it_fails_the_gate() {
        let mut r = leaky_report();
        let leak = r.sites[0].clone();
        r.tests = vec![test("init", TestStatus::Leaked, vec![test_site(&leak, 1, true, None)], Vec::new())];
        r.gate.as_mut().unwrap().failed_tests = vec!["init".into()];
        let xml = render(&r);
        assert!(xml.contains("<testcase name=\"init\""), "{xml}");
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
        // No tests at all: an empty suite, still a valid document.
        let empty = render(&report(Vec::new()));
        assert!(empty.contains("tests=\"0\" failures=\"0\""), "{empty}");
    }
}
