//! gleak's goroutine profiles are read by the real `go tool pprof` (newest Go
//! toolchain on the machine): the counts, function names, file:line and labels
//! come out as written, and pprof prints no warnings (in particular not "Main
//! binary filename not available.", which it prints for unsymbolized mappings).
//!
//! No root needed: only a Go toolchain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gleak::binary::symbolize::Frame;
use gleak::output::pprof::{write_goroutine_profile, ProfileSample};
use gleak_tests::{
    count, find_site, go_toolchains, is_strict, require_root, run_gleak_attach, serial_guard, Fixture, GoToolchain,
};

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame { function: function.into(), file: file.into(), line }
}

fn labels(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// 300 goroutines at main.leak (/src/a.go:10) <- main.main (/src/a.go:20),
/// 2 at main.worker (/src/a.go:31) <- main.main (same location as above).
fn samples() -> Vec<ProfileSample> {
    vec![
        ProfileSample {
            locations: vec![
                (0x4a1000, vec![frame("main.leak", "/src/a.go", 10)]),
                (0x4a2000, vec![frame("main.main", "/src/a.go", 20)]),
            ],
            count: 300,
            held_bytes: 300 * 8192,
            labels: labels(&[("verdict", "leak"), ("wait_reason", "chan send"), ("created_by", "main.main")]),
        },
        ProfileSample {
            locations: vec![
                (0x4a3000, vec![frame("main.worker", "/src/a.go", 31)]),
                (0x4a2000, vec![frame("main.main", "/src/a.go", 20)]),
            ],
            count: 2,
            held_bytes: 2 * 4096,
            labels: labels(&[("verdict", "ok"), ("wait_reason", "select")]),
        },
    ]
}

fn newest_toolchain() -> Option<GoToolchain> {
    let tc = go_toolchains().into_iter().last();
    if tc.is_none() {
        if is_strict() {
            panic!("no Go toolchain found (CI or cargo xtask test: not skipping)");
        }
        eprintln!("skipping: no Go toolchain found to run `go tool pprof`");
    }
    tc
}

/// Runs `go tool pprof <args> <profile>` offline with a private HOME/GOCACHE;
/// returns stdout, asserting success and an empty stderr.
fn pprof(tc: &GoToolchain, args: &[&str], profile: &Path) -> String {
    let scratch: PathBuf = std::env::temp_dir().join("gleak-tests-pprof");
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(&tc.go);
    for var in
        ["GOROOT", "GOFLAGS", "GOOS", "GOARCH", "GOENV", "GOWORK", "PPROF_TMPDIR", "PPROF_BINARY_PATH", "PPROF_TOOLS"]
    {
        cmd.env_remove(var);
    }
    let output = cmd
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("HOME", &home)
        // Per toolchain: Go 1.24+ builds `pprof` on demand into the cache.
        .env("GOCACHE", scratch.join(format!("gocache-{}", tc.version)))
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(profile)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tc.go.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{tc}: `go tool pprof {}` failed ({}):\n{stdout}{stderr}",
        args.join(" "),
        output.status
    );
    assert!(stderr.trim().is_empty(), "{tc}: `go tool pprof {}` warned:\n{stderr}", args.join(" "));
    stdout
}

/// A temporary profile file, removed when dropped.
struct TempProfile(PathBuf);

impl Drop for TempProfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn go_tool_pprof_reads_goroutine_profile() {
    let Some(tc) = newest_toolchain() else {
        return;
    };
    let file = TempProfile(std::env::temp_dir().join(format!("gleak-pprof-{}.pb.gz", std::process::id())));
    write_goroutine_profile(&file.0, &samples()).unwrap();

    // -raw: the decoded profile, sample by sample.
    let raw = pprof(&tc, &["-raw"], &file.0);
    eprintln!("{tc}: go tool pprof -raw:\n{raw}");
    assert!(raw.contains("PeriodType: goroutine count"), "{raw}");
    assert!(raw.contains("goroutine/count") && raw.contains("held/bytes"), "{raw}");
    // Sample lines look like "        300    2457600: 1 2 ": goroutines, bytes held.
    let mut values: Vec<(u64, u64)> = raw
        .lines()
        .skip_while(|l| !l.starts_with("Samples:"))
        .take_while(|l| !l.starts_with("Locations"))
        .filter_map(|l| l.trim().split_once(':'))
        .filter_map(|(v, _)| {
            let mut n = v.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((n.next()??, n.next()??))
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, [(2, 2 * 4096), (300, 300 * 8192)], "{raw}");
    for needle in [
        "main.leak",
        "main.main",
        "main.worker",
        "/src/a.go:10",
        "/src/a.go:20",
        "/src/a.go:31",
        "verdict:[leak]",
        "wait_reason:[chan send]",
        "created_by:[main.main]",
        "verdict:[ok]",
    ] {
        assert!(raw.contains(needle), "{tc}: {needle:?} not in -raw output:\n{raw}");
    }
    // main.main's location is shared: 3 locations, not 4.
    let locations = raw
        .lines()
        .skip_while(|l| !l.starts_with("Locations"))
        .take_while(|l| !l.starts_with("Mappings"))
        .filter(|l| l.contains(" M="))
        .count();
    assert_eq!(locations, 3, "{raw}");

    // -top: flat and cum per function.
    let top = pprof(&tc, &["-top", "-nodecount=10"], &file.0);
    eprintln!("{tc}: go tool pprof -top:\n{top}");
    assert!(top.contains("Type: goroutine"), "{top}");
    assert!(top.contains("Showing nodes accounting for 302, 100% of 302 total"), "{top}");
    // Rows: flat flat% sum% cum cum% name.
    let row = |name: &str| -> (String, String) {
        let cols: Vec<&str> = top
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.len() == 6 && c[5] == name)
            .unwrap_or_else(|| panic!("{tc}: no -top row for {name}:\n{top}"))
            .clone();
        (cols[0].to_string(), cols[3].to_string())
    };
    assert_eq!(row("main.leak"), ("300".into(), "300".into()), "{top}");
    assert_eq!(row("main.worker"), ("2".into(), "2".into()), "{top}");
    assert_eq!(row("main.main"), ("0".into(), "302".into()), "{top}");

    // -top -lines: file:line granularity.
    let lines = pprof(&tc, &["-top", "-lines", "-nodecount=10"], &file.0);
    assert!(lines.contains("a.go:10"), "{tc}: a.go:10 not in -top -lines:\n{lines}");
}

/// End to end: `gleak attach --pprof` on a leaking fixture writes a profile that
/// `go tool pprof` reads back: every live goroutine, the leak's blocked ones under
/// their current stack (`runtime.gopark` ← the send), labelled with their site.
#[test]
fn gleak_attach_writes_a_profile_pprof_reads() {
    if !require_root() {
        return;
    }
    let Some(tc) = newest_toolchain() else { return };
    let fx = Fixture::build(&tc, "chan_send");
    let profile = TempProfile(std::env::temp_dir().join(format!("gleak-e2e-{}.pb.gz", std::process::id())));
    let _serial = serial_guard();
    let proc = fx.start();
    let path = profile.0.to_str().unwrap();
    let reports = run_gleak_attach(proc.pid(), &["--duration", "3s", "--interval", "10s", "--pprof", path]);
    let last = reports.last().expect("a final report");
    let line = fx.marker_line("LEAK:chan_send");
    let site = find_site(last, &fx.file_suffix(), line).expect("the leak site");
    assert_eq!(site["verdict"], "leak", "{site}");
    let live = count(site, "live");

    let raw = pprof(&tc, &["-raw"], &profile.0);
    assert!(raw.contains("main.handleRequest"), "{raw}");
    assert!(raw.contains(&format!("chan_send.go:{line}")), "{raw}");
    assert!(raw.contains("verdict:[leak]"), "{raw}");
    // Blocked goroutines by where they are stuck: the send in the leaking goroutine,
    // under gopark, labelled with their creation site.
    assert!(raw.contains("runtime.gopark"), "no blocking stack in the profile:\n{raw}");
    assert!(raw.contains("runtime.chansend"), "{raw}");
    assert!(raw.contains("state:[waiting]"), "{raw}");
    assert!(raw.contains(&format!("chan_send.go:{line}]")), "no created_at label:\n{raw}");
    // A goroutine profile: every live goroutine of the final report, whatever its verdict.
    let top = pprof(&tc, &["-top", "-nodecount=5"], &profile.0);
    let all: u64 = last["sites"].as_array().unwrap().iter().map(|s| count(s, "live")).sum();
    assert_eq!(all, count(&last["totals"], "live"), "sites and totals disagree:\n{last}");
    assert!(live > 20 && all > live, "live={live} all={all}");
    assert!(top.contains(&format!("{all} total")), "want {all} total:\n{top}");
    // The memory they hold, by the second sample type: the stacks at least.
    let held = pprof(&tc, &["-top", "-nodecount=5", "-sample_index=held"], &profile.0);
    assert!(held.contains("Type: held") && held.contains("B total"), "{held}");
    let focused = pprof(&tc, &["-top", "-nodecount=5", "-tagfocus=verdict=leak"], &profile.0);
    let leaked: u64 =
        last["sites"].as_array().unwrap().iter().filter(|s| s["verdict"] == "leak").map(|s| count(s, "live")).sum();
    assert!(
        focused.contains(&format!("{leaked} ({:.2}%) of {all} total", 100.0 * leaked as f64 / all as f64))
            || focused.contains(&format!("{leaked}, ")),
        "want {leaked} leaked of {all}:\n{focused}"
    );
}
