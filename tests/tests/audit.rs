//! End-to-end: `gleak audit` on a "node" of fixture processes of different Go
//! releases and build variants (leaky, a healthy pool, churning, short-lived ones,
//! one started after the audit began, one exiting during it), scraped by a real
//! Prometheus server (Debian's package, started here on a loopback port).
//!
//! The audit must report the leaky processes only, pick up the late one, drop the
//! one that exits, and export metrics that Prometheus stores, `promtool check
//! metrics` accepts and the Grafana dashboard's queries refer to.
//!
//! Needs root, a release build of gleak, and `prometheus`/`promtool`
//! (scripts/bootstrap.sh installs them).

use std::{
    collections::HashSet,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use gleak_tests::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "5"]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Prometheus server scraping `target` every second; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = TempDir(std::env::temp_dir().join(format!("gleak-prometheus-{}", std::process::id())));
        std::fs::create_dir_all(dir.0.join("data")).unwrap();
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gleak\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus ({e}); scripts/bootstrap.sh installs it"));
        let p = Prometheus { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while curl(&[&format!("http://127.0.0.1:{port}/-/ready")]).is_none() {
            assert!(Instant::now() < deadline, "prometheus did not get ready on port {port}");
            thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// The series an instant query returns, as their label sets.
    fn query(&self, promql: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let body = curl(&["--data-urlencode", &format!("query={promql}"), &url]).unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition: its complaints, if any.
fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// The `pid` label of a series Prometheus returned.
fn label_pid(series: &Value) -> Option<u32> {
    series["metric"]["pid"].as_str()?.parse().ok()
}

fn findings(run: &GleakRun) -> Vec<Value> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON finding"))
        .collect()
}

fn of_pid(findings: &[Value], pid: u32, kind: &str) -> Vec<Value> {
    findings.iter().filter(|f| f["kind"] == kind && f["process"]["pid"] == pid).cloned().collect()
}

fn leak_at(findings: &[Value], pid: u32, fx: &Fixture, marker: &str) -> bool {
    let line = fx.marker_line(marker);
    findings.iter().any(|f| {
        matches!(f["kind"].as_str(), Some("verdict" | "final"))
            && f["process"]["pid"] == pid
            && f["site"]["verdict"] == "leak"
            && f["site"]["line"] == line
            && f["site"]["file"].as_str().is_some_and(|p| p.ends_with(&fx.file_suffix()))
    })
}

/// The metric names a Grafana dashboard's queries use.
fn dashboard_metrics(path: &Path) -> HashSet<String> {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("gleak_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn audit_a_node_of_go_processes() {
    if !require_root() {
        return;
    }
    let toolchains = go_toolchains();
    let (old, new) = (&toolchains[0], &toolchains[toolchains.len() - 1]);
    let leaky = Fixture::build_variant(old, "chan_send", Variant::Plain);
    let pool = Fixture::build_variant(new, "pool", Variant::Stripped);
    let churn = Fixture::build_variant(new, "churn", Variant::Pie);
    let exiting = Fixture::build(new, "short_lived");
    let late = Fixture::build_variant(new, "chan_send", Variant::CgoExternal);
    let brief = Fixture::build(new, "gate_clean");
    let all = [&leaky, &pool, &churn, &exiting, &late, &brief];
    let _serial = serial_guard();

    let leaky_p = leaky.start();
    let pool_p = pool.start();
    let churn_p = churn.start();
    let exiting_p = exiting.start_with_args(&["-life", "6s"]);

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> =
        ["audit", "--interval", "2s", "--duration", "26s", "--listen", &addr].iter().map(|s| s.to_string()).collect();
    for fx in all {
        args.extend(["--exe".to_string(), fx.binary.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gleak = spawn_gleak(&args);
    assert!(
        gleak.wait_for_stderr("auditing", Duration::from_secs(30)),
        "gleak audit did not start\n{}",
        gleak.stderr_text()
    );
    let prometheus = Prometheus::start(&addr);

    // Short-lived processes come and go; one more leaky process starts late.
    for _ in 0..3 {
        let mut p = Command::new(&brief.binary).stdout(Stdio::null()).spawn().unwrap();
        p.wait().unwrap();
    }
    thread::sleep(Duration::from_secs(4));
    let late_p = late.start();

    // Metrics: a real scrape, checked by promtool, stored by Prometheus.
    thread::sleep(Duration::from_secs(12));
    let exposition = curl(&[&format!("http://{addr}/metrics")]).expect("gleak serves /metrics");
    promtool_check(&exposition).unwrap_or_else(|e| panic!("promtool check metrics:\n{e}\n{exposition}"));
    for name in dashboard_metrics(&workspace_root().join("deploy/grafana/gleak-dashboard.json")) {
        let base = name.trim_end_matches("_bucket");
        assert!(exposition.contains(base), "the dashboard queries {name}, which gleak does not export\n{exposition}");
    }
    let line = leaky.marker_line("LEAK:chan_send");
    let leaking = prometheus.query(r#"gleak_site_verdict{verdict="leak"} == 1"#);
    for (p, fx) in [(&leaky_p, &leaky), (&late_p, &late)] {
        let found = leaking.iter().any(|s| {
            label_pid(s) == Some(p.pid())
                && s["metric"]["site"].as_str().is_some_and(|site| site.ends_with(&format!("chan_send.go:{line})")))
        });
        assert!(found, "{fx}: Prometheus has no leak series for PID {}: {leaking:?}", p.pid());
    }
    for p in [&pool_p, &churn_p] {
        assert!(
            !leaking.iter().any(|s| label_pid(s) == Some(p.pid())),
            "a healthy process has a leak series in Prometheus: {leaking:?}"
        );
    }
    let live = prometheus.query(&format!(r#"gleak_site_live_goroutines{{pid="{}"}}"#, leaky_p.pid()));
    assert!(!live.is_empty(), "no live-goroutine series for the leaky process");

    let run = gleak.wait(Duration::from_secs(60));
    assert!(run.status.success(), "gleak audit failed\n{run}");
    let f = findings(&run);

    for (p, fx) in [(&leaky_p, &leaky), (&pool_p, &pool), (&churn_p, &churn), (&late_p, &late)] {
        let started = of_pid(&f, p.pid(), "process");
        assert_eq!(started.len(), 1, "{fx}: one `process` finding for PID {}\n{run}", p.pid());
        let who = &started[0]["process"];
        assert!(fx.toolchain.matches_go_version(who["go_version"].as_str().unwrap_or_default()), "{fx}: {who}");
        assert_eq!(who["build_path"], "command-line-arguments", "{fx}: {who}");
        assert!(who["cgroup"].as_str().is_some_and(|c| c.starts_with('/')), "{fx}: {who}");
    }
    assert!(leak_at(&f, leaky_p.pid(), &leaky, "LEAK:chan_send"), "{leaky}: no leak finding\n{run}");
    assert!(leak_at(&f, late_p.pid(), &late, "LEAK:chan_send"), "{late}: the late process's leak was not found\n{run}");
    for (p, fx) in [(&pool_p, &pool), (&churn_p, &churn)] {
        let bad: Vec<_> =
            f.iter().filter(|x| x["process"]["pid"] == p.pid() && x["site"]["verdict"] == "leak").collect();
        assert!(bad.is_empty(), "{fx}: a healthy process reported as leaking: {bad:?}");
    }
    assert_eq!(of_pid(&f, exiting_p.pid(), "gone").len(), 1, "{exiting}: its exit was not noticed\n{run}");
    assert!(!of_pid(&f, leaky_p.pid(), "final").is_empty(), "{leaky}: no final finding\n{run}");
    drop((leaky_p, pool_p, churn_p, exiting_p, late_p));
}

/// The deployment files, offline: the DaemonSet and namespace by
/// kubernetes-validate (PyPI, installed by scripts/bootstrap.sh), the systemd unit
/// by `systemd-analyze verify`, the dashboard as JSON with every panel queried.
#[test]
fn deployment_files_validate() {
    let root = workspace_root();
    let validate = gleak_cache().join("venv/bin/kubernetes-validate");
    if !validate.exists() {
        assert!(!is_strict(), "{} missing (CI or cargo xtask test: not skipping)", validate.display());
        return;
    }
    let manifest = root.join("deploy/kubernetes/gleak-audit.yaml");
    let out = Command::new(&validate).arg("--strict").arg(&manifest).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    assert!(text.contains("daemonset/gleak-audit") && text.contains("passed"), "{text}");
    let manifest_text = std::fs::read_to_string(&manifest).unwrap();
    // The capabilities: tests/tests/privileges.rs reads them and runs gleak with them.
    for needed in ["hostPID: true", "readOnly: true", "prometheus.io/scrape"] {
        assert!(manifest_text.contains(needed), "the DaemonSet lacks {needed}");
    }

    if Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let unit = std::fs::read_to_string(root.join("deploy/systemd/gleak-audit.service")).unwrap();
        // verify wants the executable to exist: point the unit at the gleak under test.
        let unit = unit.replace("/usr/local/bin/gleak", &gleak_bin().display().to_string());
        let dir = std::env::temp_dir().join(format!("gleak-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gleak-audit.service");
        std::fs::write(&path, unit).unwrap();
        let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let names = dashboard_metrics(&root.join("deploy/grafana/gleak-dashboard.json"));
    for want in [
        "gleak_site_verdict",
        "gleak_site_live_goroutines",
        "gleak_site_growth_goroutines_per_second",
        "gleak_site_stack_bytes",
    ] {
        assert!(names.contains(want), "the dashboard does not chart {want}: {names:?}");
    }
}
