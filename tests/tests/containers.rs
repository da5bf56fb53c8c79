//! Targets as containers run them: in a PID and mount namespace of their own, from
//! a binary gleak's namespace cannot see or that was deleted, gleak itself inside
//! a PID namespace, and several processes of one binary traced at once.

use std::{path::Path, time::Duration};

use gleak_tests::*;

const LEAK_MARKER: &str = "LEAK:chan_send";
const TRACE: &[&str] = &["--duration", "3s", "--interval", "1s", "--top", "50"];

fn newest() -> GoToolchain {
    go_toolchains().pop().expect("a Go toolchain")
}

/// The leak site of `chan_send` in `report`, with the checks every test here makes.
fn leak_site<'a>(report: &'a Value, what: &str) -> &'a Value {
    let line = marker_line("chan_send", LEAK_MARKER);
    let site = find_site(report, "fixtures/chan_send.go", line)
        .unwrap_or_else(|| panic!("{what}: leak site missing\n{}", describe_sites(report, 10)));
    assert_eq!(site["verdict"], "leak", "{what}: {site}");
    assert_eq!(site["top_wait_reason"], "chan send", "{what}: {site}");
    site
}

/// The only child of `pid` (what `unshare --fork` started).
fn only_child(pid: u32) -> u32 {
    for _ in 0..100 {
        let children = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.task_main_thread())
            .and_then(|t| t.children())
            .unwrap_or_default();
        if let Some(&child) = children.first() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("PID {pid} started no child");
}

/// A target in its own PID and mount namespace, run from a tmpfs mounted only
/// there: gleak opens the binary through /proc/PID/exe and shows both PIDs.
#[test]
fn target_in_its_own_namespaces() {
    if !require_root() {
        return;
    }
    let tc = newest();
    let bin = build_fixture_variant(&tc, "chan_send", Variant::Stripped);
    let script = format!("mount -t tmpfs gleak-test /mnt && cp {} /mnt/svc && exec /mnt/svc", bin.display());
    let _serial = serial_guard();
    let proc = RunningGo::spawn(
        Path::new("/usr/bin/unshare"),
        &["--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private", "sh", "-c", &script],
        "ready",
    );
    let target = only_child(proc.pid());
    let exe = std::fs::read_link(format!("/proc/{target}/exe")).unwrap();
    assert_eq!(exe, Path::new("/mnt/svc"));
    assert!(!Path::new("/mnt/svc").exists(), "the binary must not be visible from gleak's mount namespace");
    let reports = run_gleak_attach(target, TRACE);
    let last = reports.last().unwrap();
    assert_eq!(last["pid"], target, "{last}");
    assert_eq!(last["ns_pid"], 1, "the PID inside the namespace: {last}");
    assert_eq!(last["binary"], "/mnt/svc");
    leak_site(last, "in its own namespaces");
}

/// The binary was deleted (an upgrade replaced it) after the process started.
#[test]
fn deleted_binary() {
    if !require_root() {
        return;
    }
    let tc = newest();
    let built = build_fixture_variant(&tc, "chan_send", Variant::CgoExternal);
    let dir = std::env::temp_dir().join(format!("gleak-deleted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("svc");
    std::fs::copy(&built, &copy).unwrap();
    let _serial = serial_guard();
    let proc = RunningGo::spawn(&copy, &[], "ready");
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    let reports = run_gleak_attach(proc.pid(), TRACE);
    let last = reports.last().unwrap();
    assert!(last["binary"].as_str().unwrap().ends_with("(deleted)"), "{last}");
    leak_site(last, "deleted binary");
}

/// gleak itself in a PID namespace (a container without hostPID) with its target:
/// the probes see kernel PIDs, gleak its own; events must still reach the target.
#[test]
fn gleak_inside_a_pid_namespace() {
    if !require_root() {
        return;
    }
    let tc = newest();
    let bin = build_fixture_variant(&tc, "chan_send", Variant::Pie);
    let script = format!(
        "{} & sleep 0.5; exec {} attach -p $! --json {}",
        bin.display(),
        gleak_bin().display(),
        TRACE.join(" ")
    );
    let _serial = serial_guard();
    let run = GleakChild::spawn(
        Path::new("/usr/bin/unshare"),
        &["--pid", "--fork", "--mount-proc", "sh", "-c", &script],
        |_| {},
    )
    .wait(Duration::from_secs(30));
    assert!(run.status.success(), "{run}");
    let reports = json_reports(&run);
    let last = reports.last().unwrap_or_else(|| panic!("no report\n{run}"));
    // In the namespace the shell is PID 1 and the target its first child.
    assert_eq!(last["pid"], 2, "{last}");
    let site = leak_site(last, "gleak in a PID namespace");
    assert!(count(site, "created") >= 50, "creation events did not arrive: {site}");
    assert_eq!(last["kernel"]["no_config"], 0, "probe hits keyed by the wrong PID: {last}");
}

/// Two processes of one binary, traced at the same time by two gleaks: each
/// report counts only its own process's goroutines.
#[test]
fn two_processes_of_one_binary() {
    if !require_root() {
        return;
    }
    let tc = newest();
    let bin = build_fixture_variant(&tc, "chan_send", Variant::Stripped);
    let _serial = serial_guard();
    // Leak 100 and 200 goroutines (for 1 s and 2 s, mostly while traced), then stop.
    let a = RunningGo::spawn(&bin, &["-max", "100", "-tick", "10ms"], "ready");
    let b = RunningGo::spawn(&bin, &["-max", "200", "-tick", "10ms"], "ready");
    let args: Vec<String> = TRACE.iter().map(|s| s.to_string()).collect();
    let spawn = |pid: u32| {
        let mut full = vec!["attach".to_string(), "-p".into(), pid.to_string(), "--json".into()];
        full.extend(args.iter().cloned());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        spawn_gleak(&refs)
    };
    let (ga, gb) = (spawn(a.pid()), spawn(b.pid()));
    let (ra, rb) = (ga.wait(Duration::from_secs(30)), gb.wait(Duration::from_secs(30)));
    for (run, pid, want) in [(&ra, a.pid(), 100), (&rb, b.pid(), 200)] {
        assert!(run.status.success(), "{run}");
        let reports = json_reports(run);
        let last = reports.last().unwrap();
        assert_eq!(last["pid"], pid);
        let site = leak_site(last, &format!("PID {pid}"));
        assert_eq!(count(site, "live"), want, "PID {pid} must count only its own leaks: {site}");
    }
}
