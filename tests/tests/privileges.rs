//! Least privilege, tested: the capabilities the deployment files declare
//! (`deploy/kubernetes/gleak-audit.yaml`, `deploy/systemd/gleak-audit.service`,
//! `deploy/Dockerfile`), read from the files themselves, are the ones gleak needs.
//! With exactly that set gleak attaches, gates (`gleak run`) and audits real Go
//! programs, both as uid 0 with a reduced bounding set (the DaemonSet, the image)
//! and as a user that is not root holding the set as ambient capabilities (the
//! systemd unit). With any one of them taken away, every command that needs it
//! fails and names it, without telling anyone to be root; the commands that do not
//! need it still work.
//!
//! A declared capability this sandbox cannot grant (its own bounding set lacks it)
//! is printed, and the runs go on with the rest; one this kernel needs fails the
//! test, loudly.
//!
//! Needs root (to hand capabilities out), `setpriv` (util-linux) and a release
//! build of gleak.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gleak_tests::*;

/// The unprivileged user of the ambient-capability runs.
const NOBODY: u32 = 65534;

/// The kernel's capability numbers (`include/uapi/linux/capability.h`), by name.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability, by its kernel number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cap(u32);

impl Cap {
    /// `CAP_SYS_ADMIN`, `SYS_ADMIN` or `cap_sys_admin`.
    fn parse(name: &str) -> Cap {
        let upper = name.trim().trim_matches(['"', '\'']).to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        let bit = CAPABILITIES.iter().position(|c| *c == bare).unwrap_or_else(|| panic!("no capability {name:?}"));
        Cap(bit as u32)
    }

    /// `CAP_SYS_ADMIN`.
    fn name(self) -> String {
        format!("CAP_{}", CAPABILITIES[self.0 as usize])
    }

    /// `sys_admin`, as setpriv takes it.
    fn setpriv_name(self) -> String {
        CAPABILITIES[self.0 as usize].to_ascii_lowercase()
    }
}

impl std::fmt::Display for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

fn mask(caps: &[Cap]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << c.0)
}

fn names(caps: &[Cap]) -> String {
    if caps.is_empty() {
        return "none".into();
    }
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------
// The deployment files: three tiny readers, one per format
// ---------------------------------------------------------------------------

/// A list under `capabilities:` in a Kubernetes manifest: `key: ["A", "B"]`, or
/// `key:` followed by `- A` lines (comments and blank lines between).
fn yaml_capability_list(yaml: &str, key: &str) -> Vec<String> {
    let mut lines = yaml.lines().map(str::trim).skip_while(|l| *l != "capabilities:").skip(1);
    let prefix = format!("{key}:");
    let Some(rest) = lines.find_map(|l| l.strip_prefix(prefix.as_str())) else { return Vec::new() };
    if let Some(flow) = rest.trim().strip_prefix('[') {
        return flow.trim_end_matches(']').split(',').map(|s| s.trim().trim_matches('"').to_string()).collect();
    }
    lines
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map_while(|l| l.strip_prefix("- ").map(|name| name.trim().trim_matches('"').to_string()))
        .collect()
}

/// The words of every `key=` line of a systemd unit.
fn systemd_list(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// The values of every `--flag=VALUE` in a Dockerfile (its `docker run` line).
fn docker_flag_values(dockerfile: &str, flag: &str) -> Vec<String> {
    let prefix = format!("{flag}=");
    dockerfile.split_whitespace().filter_map(|w| w.strip_prefix(prefix.as_str())).map(str::to_string).collect()
}

/// The set each deployment file grants gleak, by where it says so.
struct Declared {
    kubernetes_add: Vec<String>,
    kubernetes_drop: Vec<String>,
    systemd_bounding: Vec<String>,
    systemd_ambient: Vec<String>,
    docker_add: Vec<String>,
    docker_drop: Vec<String>,
}

impl Declared {
    fn read() -> Declared {
        let deploy = workspace_root().join("deploy");
        let read = |rel: &str| {
            let path = deploy.join(rel);
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let (yaml, unit, dockerfile) =
            (read("kubernetes/gleak-audit.yaml"), read("systemd/gleak-audit.service"), read("Dockerfile"));
        Declared {
            kubernetes_add: yaml_capability_list(&yaml, "add"),
            kubernetes_drop: yaml_capability_list(&yaml, "drop"),
            systemd_bounding: systemd_list(&unit, "CapabilityBoundingSet"),
            systemd_ambient: systemd_list(&unit, "AmbientCapabilities"),
            docker_add: docker_flag_values(&dockerfile, "--cap-add"),
            docker_drop: docker_flag_values(&dockerfile, "--cap-drop"),
        }
    }

    /// The one set the three files agree on; panics, naming each file's, if they do not.
    fn set(&self) -> Vec<Cap> {
        let as_set = |names: &[String]| names.iter().map(|n| Cap::parse(n)).collect::<BTreeSet<Cap>>();
        let sets = [
            ("deploy/kubernetes/gleak-audit.yaml capabilities.add", &self.kubernetes_add),
            ("deploy/systemd/gleak-audit.service CapabilityBoundingSet=", &self.systemd_bounding),
            ("deploy/systemd/gleak-audit.service AmbientCapabilities=", &self.systemd_ambient),
            ("deploy/Dockerfile --cap-add=", &self.docker_add),
        ];
        let all: String = sets.iter().map(|(what, names)| format!("\n  {what}: {names:?}")).collect();
        let first = as_set(sets[0].1);
        assert!(!first.is_empty(), "no capabilities found in the deployment files:{all}");
        for (what, names) in &sets {
            assert_eq!(as_set(names), first, "{what} disagrees with the others:{all}");
            assert_eq!(as_set(names).len(), names.len(), "{what} names a capability twice:{all}");
        }
        first.into_iter().collect()
    }
}

#[test]
fn deployment_files_declare_one_capability_set() {
    let declared = Declared::read();
    let set = declared.set();
    assert_eq!(declared.kubernetes_drop, ["ALL"], "the DaemonSet must drop every capability it does not add");
    assert_eq!(declared.docker_drop, ["ALL"], "the Dockerfile's docker run must drop every capability it does not add");
    eprintln!("privileges: the deployment files grant gleak {}", names(&set));
}

#[test]
fn manifest_readers_read_each_style() {
    let block = "securityContext:\n  capabilities:\n    drop: [\"ALL\"]\n    add:\n      # why\n      - SYS_ADMIN\n\n      - \"SYS_PTRACE\"\n    seccompProfile:\n      type: Unconfined\n";
    assert_eq!(yaml_capability_list(block, "add"), ["SYS_ADMIN", "SYS_PTRACE"]);
    assert_eq!(yaml_capability_list(block, "drop"), ["ALL"]);
    let flow = "capabilities:\n  add: [\"BPF\", \"PERFMON\"]\n";
    assert_eq!(yaml_capability_list(flow, "add"), ["BPF", "PERFMON"]);
    assert!(yaml_capability_list("spec:\n  add: [\"BPF\"]\n", "add").is_empty(), "add: outside capabilities");
    let unit = "[Service]\n# CapabilityBoundingSet=CAP_NONE\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_BPF\n";
    assert_eq!(systemd_list(unit, "CapabilityBoundingSet"), ["CAP_SYS_ADMIN", "CAP_BPF"]);
    assert_eq!(
        docker_flag_values("#   docker run --cap-drop=ALL --cap-add=SYS_ADMIN \\\n", "--cap-add"),
        ["SYS_ADMIN"]
    );
    assert_eq!(Cap::parse("cap_sys_admin"), Cap(21));
    assert_eq!(Cap::parse("\"BPF\"").name(), "CAP_BPF");
}

// ---------------------------------------------------------------------------
// What each declared capability is for, on the running kernel
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gleak {
    Attach,
    Run,
    Audit,
}

/// The running kernel's (major, minor), from `uname -r`.
fn kernel() -> (u32, u32) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether `command` must fail without `cap` (holding the rest of the deployment
/// files' set) on a kernel of version `kernel`: this test's own account of what
/// each capability is for.
fn needs(command: Gleak, cap: Cap, kernel: (u32, u32)) -> bool {
    match CAPABILITIES[cap.0 as usize] {
        // Uprobes (perf_uprobe_event_init() wants it on 6.16+, the kernels fixed
        // for CVE-2025-38466 and those before 5.8), and loading the programs:
        // nothing else in the set stands in for it.
        "SYS_ADMIN" => true,
        // Reading a process gleak did not start: the test starts its targets as
        // uid 0 with every capability. `gleak run` reads only its own child.
        "SYS_PTRACE" => command != Gleak::Run,
        // RLIMIT_MEMLOCK: only kernels before 5.11 charge BPF maps to it.
        "SYS_RESOURCE" => kernel < (5, 11),
        other => panic!(
            "the deployment files grant CAP_{other}, which this test knows no job for: say here what it is for \
             (or take it out of deploy/)"
        ),
    }
}

// ---------------------------------------------------------------------------
// Running gleak with a given set
// ---------------------------------------------------------------------------

/// How gleak holds its capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// uid 0 whose bounding set is cut down to the set: the DaemonSet, the image.
    Uid0BoundingSet,
    /// A user that is not root, holding the set as ambient capabilities: the
    /// systemd unit (`DynamicUser=`, `AmbientCapabilities=`).
    UserAmbient,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Uid0BoundingSet => "uid 0 with a reduced bounding set",
            Mode::UserAmbient => "uid 65534 with ambient capabilities",
        })
    }
}

/// The capabilities this test process may hand out: its own bounding set.
fn sandbox_bounding_set() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status_mask(&status, "CapBnd")
}

fn status_mask(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
}

/// Says `what` on the test's stderr even when the test passes (libtest keeps
/// what `eprintln!` prints to itself unless a test fails): what this sandbox could
/// not try must never pass unseen.
fn notice(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "privileges: NOTE: {what}");
}

/// The part of `set` this sandbox can grant. What it cannot is printed; if this
/// kernel needs it for any command, the test fails: the set cannot be tried here.
fn grantable(set: &[Cap], mode: Mode) -> Vec<Cap> {
    let bounding = sandbox_bounding_set();
    let (can, cannot): (Vec<Cap>, Vec<Cap>) = set.iter().partition(|c| bounding & (1 << c.0) != 0);
    for &cap in &cannot {
        let needed_by: Vec<Gleak> =
            [Gleak::Attach, Gleak::Run, Gleak::Audit].into_iter().filter(|&g| needs(g, cap, kernel())).collect();
        assert!(
            needed_by.is_empty(),
            "{cap} is declared by the deployment files and needed by {needed_by:?} on this kernel {:?}, but this \
             sandbox's bounding set lacks it: the declared set cannot be tried here",
            kernel()
        );
        notice(&format!(
            "{mode}: this sandbox cannot grant {cap} (not in its bounding set), which this kernel does not need; \
             gleak runs with the rest: {}",
            names(&can)
        ));
    }
    can
}

/// The `setpriv … --` that gives a command exactly `caps` in `mode`, checked on
/// `/proc/self/status` before it is used: the harness grants what it says.
fn grant(mode: Mode, caps: &[Cap]) -> Vec<String> {
    let plus: String = caps.iter().map(|c| format!(",+{}", c.setpriv_name())).collect();
    let mut argv = vec![format!("--bounding-set=-all{plus}")];
    if mode == Mode::UserAmbient {
        argv.extend([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            format!("--inh-caps=-all{plus}"),
            format!("--ambient-caps=-all{plus}"),
        ]);
    }
    argv.push("--".into());
    let out = Command::new("setpriv")
        .args(&argv)
        .args(["cat", "/proc/self/status"])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}"));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "setpriv {argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status_mask(&status, "CapEff"), mask(caps), "{mode}: setpriv {argv:?} gave\n{status}");
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
    let want_uid = if mode == Mode::UserAmbient { NOBODY } else { 0 };
    assert!(uid.split_whitespace().all(|u| u == want_uid.to_string()), "{mode}: uid {uid}");
    if mode == Mode::UserAmbient {
        assert_eq!(status_mask(&status, "CapAmb"), mask(caps), "{mode}: setpriv {argv:?} gave\n{status}");
    }
    argv
}

/// Whether the test can hand out capabilities here: root and setpriv. In strict
/// mode (CI, `cargo xtask test`) missing either fails.
fn can_run() -> bool {
    if !require_root() {
        return false;
    }
    let setpriv = Command::new("setpriv").arg("--version").stdout(Stdio::null()).status();
    if setpriv.is_ok_and(|s| s.success()) {
        return true;
    }
    assert!(!is_strict(), "setpriv (util-linux) is missing: cannot hand gleak capabilities (not skipping)");
    eprintln!("skipping: setpriv (util-linux) is missing");
    false
}

/// A directory every user can read, holding a copy of gleak and of the fixtures,
/// so that the user of the ambient runs reaches them wherever the build and the
/// cache are; removed when dropped.
struct Stage {
    dir: PathBuf,
    gleak: PathBuf,
}

impl Stage {
    fn new(what: &str) -> Stage {
        let dir = std::env::temp_dir().join(format!("gleak-privileges-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod the stage");
        let mut stage = Stage { dir, gleak: PathBuf::new() };
        stage.gleak = stage.install(&gleak_bin(), "gleak");
        stage
    }

    /// Copies an executable in, mode 0755 (by `install`, a process of its own: a
    /// file this test had open for writing, inherited by a child forked meanwhile,
    /// would fail to exec with ETXTBSY).
    fn install(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.dir.join(name);
        let ok = Command::new("install").args(["-m", "0755"]).arg(src).arg(&dst).status();
        assert!(ok.is_ok_and(|s| s.success()), "install {} {}", src.display(), dst.display());
        dst
    }

    /// `tests/fixtures/<name>.go` built with the newest toolchain, copied in.
    fn fixture(&self, name: &str) -> Fixture {
        let tc = go_toolchains().pop().expect("a Go toolchain");
        let mut fx = Fixture::build(&tc, name);
        fx.binary = self.install(&fx.binary, name);
        fx
    }

    /// Runs `gleak <args>` with exactly `caps` in `mode`, to completion.
    fn gleak(&self, mode: Mode, caps: &[Cap], preflight: bool, args: &[&str], timeout: Duration) -> GleakRun {
        self.spawn(mode, caps, preflight, args).wait(timeout)
    }

    fn spawn(&self, mode: Mode, caps: &[Cap], preflight: bool, args: &[&str]) -> GleakChild {
        let mut argv = grant(mode, caps);
        argv.push(self.gleak.display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        GleakChild::spawn(Path::new("setpriv"), &argv, |cmd| {
            cmd.current_dir("/").env("RUST_BACKTRACE", "1");
            if !preflight {
                // Let the system calls fail, and their errors name the capability.
                cmd.env("GLEAK_NO_PREFLIGHT", "1");
            }
        })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// With exactly the declared set: everything works
// ---------------------------------------------------------------------------

/// The fixtures of these tests, built once per test.
struct Programs {
    chan_send: Fixture,
    gate_leaky: Fixture,
    gate_clean: Fixture,
}

impl Programs {
    fn build(stage: &Stage) -> Programs {
        Programs {
            chan_send: stage.fixture("chan_send"),
            gate_leaky: stage.fixture("gate_leaky"),
            gate_clean: stage.fixture("gate_clean"),
        }
    }
}

const ATTACH_ARGS: &[&str] = &["--duration", "5s", "--interval", "1s", "--top", "100", "--json"];
const AUDIT_ARGS: &[&str] = &["audit", "--interval", "2s", "--duration", "10s", "--listen", "off"];
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// `gleak attach` on the leaking `chan_send`: the leak site, as `attach.rs` checks it.
fn attach_finds_the_leak(stage: &Stage, mode: Mode, caps: &[Cap], fx: &Fixture) {
    let _serial = serial_guard();
    let mut target = fx.start();
    let pid = target.pid().to_string();
    let mut args = vec!["attach", "-p", &pid];
    args.extend_from_slice(ATTACH_ARGS);
    let run = stage.gleak(mode, caps, true, &args, RUN_TIMEOUT);
    let ctx = format!("{mode}, {}: gleak attach", names(caps));
    assert!(run.status.success(), "{ctx} failed\n{run}");
    target.assert_running("after gleak detached");
    let reports = parse_json_lines(&run.stdout).unwrap_or_else(|e| panic!("{ctx}: {e}\n{run}"));
    check_report_stream(&reports, target.pid());
    check_reports_target(&reports, fx);
    assert!(reports.len() >= 2, "{ctx}: interval reports and a final one, got {}\n{run}", reports.len());
    let (first, last) = (&reports[0], &reports[reports.len() - 1]);
    let (suffix, line) = (fx.file_suffix(), fx.marker_line("LEAK:chan_send"));
    let site = find_site(last, &suffix, line)
        .unwrap_or_else(|| panic!("{ctx}: no site {suffix}:{line}\n{}", describe_sites(last, 10)));
    let (live, created, exited) = (count(site, "live"), count(site, "created"), count(site, "exited"));
    assert!(live > 20, "{ctx}: live={live}, want > 20\n{site}");
    assert!(live > site_live(first, &suffix, line), "{ctx}: live did not grow\n{site}");
    assert!(created + count(site, "preexisting") >= live, "{ctx}: {site}");
    assert!((exited as f64) < created as f64 * 0.5, "{ctx}: exited={exited} of created={created}\n{site}");
    assert_eq!(site["top_wait_reason"], "chan send", "{ctx}: {site}");
    assert_eq!(verdict(site), "leak", "{ctx}: {site}");
}

/// `gleak run` fails the leaky job with the gate's exit code, naming its leak,
/// and passes the clean one, as `run_gate.rs` checks them.
fn run_gates(stage: &Stage, mode: Mode, caps: &[Cap], leaky: &Fixture, clean: &Fixture) {
    let _serial = serial_guard();
    let ctx = format!("{mode}, {}: gleak run", names(caps));
    let gate = |fx: &Fixture| {
        let run =
            stage.gleak(mode, caps, true, &["run", "--json", "--", &fx.binary.display().to_string()], RUN_TIMEOUT);
        let reports = json_reports(&run);
        assert!(!reports.is_empty(), "{ctx} {fx}: no report\n{run}");
        check_run_reports(&reports, &run);
        (run, reports)
    };
    let (run, reports) = gate(leaky);
    assert_eq!(run.code(), Some(1), "{ctx} {leaky}: the gate's exit code\n{run}");
    let last = &reports[reports.len() - 1];
    let site = marker_site(last, leaky, "LEAK:gate")
        .unwrap_or_else(|| panic!("{ctx} {leaky}: no site at // LEAK:gate\n{}\n{run}", describe_sites(last, 10)));
    assert_eq!(verdict(site), "leak", "{ctx} {leaky}: {site}");
    assert_eq!(count(site, "live"), 10, "{ctx} {leaky}: {site}");
    assert_eq!(last["gate"]["failed"], true, "{ctx} {leaky}: {}", last["gate"]);

    let (run, reports) = gate(clean);
    assert_eq!(run.code(), Some(0), "{ctx} {clean}: a clean job passes\n{run}");
    let last = &reports[reports.len() - 1];
    assert_eq!(last["gate"]["failed"], false, "{ctx} {clean}: {}", last["gate"]);
    assert_eq!(last["gate"]["leaked_goroutines"], 0, "{ctx} {clean}: {}", last["gate"]);
}

/// `gleak audit` finds the leaking process, as `audit.rs` checks it.
fn audit_finds_the_leak(stage: &Stage, mode: Mode, caps: &[Cap], fx: &Fixture) {
    let _serial = serial_guard();
    let target = fx.start();
    let exe = fx.binary.display().to_string();
    let mut args = AUDIT_ARGS.to_vec();
    args.extend(["--exe", &exe]);
    let run = stage.gleak(mode, caps, true, &args, RUN_TIMEOUT);
    let ctx = format!("{mode}, {}: gleak audit", names(caps));
    assert!(run.status.success(), "{ctx} failed\n{run}");
    let findings: Vec<Value> = run.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let line = fx.marker_line("LEAK:chan_send");
    let found = findings.iter().any(|f| {
        matches!(f["kind"].as_str(), Some("verdict" | "final"))
            && f["process"]["pid"] == target.pid()
            && f["site"]["verdict"] == "leak"
            && f["site"]["line"] == line
            && f["site"]["file"].as_str().is_some_and(|p| p.ends_with(&fx.file_suffix()))
    });
    assert!(found, "{ctx}: no leak finding for PID {} at line {line}\n{run}", target.pid());
}

fn everything_works_with_the_declared_set(mode: Mode) {
    if !can_run() {
        return;
    }
    let caps = grantable(&Declared::read().set(), mode);
    eprintln!("privileges: {mode}: gleak holds exactly {}", names(&caps));
    let stage = Stage::new(if mode == Mode::UserAmbient { "user" } else { "uid0" });
    let programs = Programs::build(&stage);
    attach_finds_the_leak(&stage, mode, &caps, &programs.chan_send);
    run_gates(&stage, mode, &caps, &programs.gate_leaky, &programs.gate_clean);
    audit_finds_the_leak(&stage, mode, &caps, &programs.chan_send);
}

#[test]
fn uid_0_with_only_the_declared_capabilities_attaches_runs_and_audits() {
    everything_works_with_the_declared_set(Mode::Uid0BoundingSet);
}

#[test]
fn a_user_holding_the_declared_capabilities_as_ambient_ones_attaches_runs_and_audits() {
    everything_works_with_the_declared_set(Mode::UserAmbient);
}

// ---------------------------------------------------------------------------
// One capability short: the commands that need it fail and name it
// ---------------------------------------------------------------------------

/// What a clean error never prints.
const PANIC_MARKERS: &[&str] = &["panicked", "RUST_BACKTRACE", "stack backtrace"];

/// gleak refused for want of `missing`: exit code 5, the capability named with
/// what to do, no panic, and no advice to be root (the word does not appear).
fn assert_names(run: &GleakRun, missing: Cap, ctx: &str) {
    assert_eq!(run.code(), Some(5), "{ctx}: want exit code 5 (not permitted)\n{run}");
    assert!(run.stderr.contains(&missing.name()), "{ctx}: the message does not name {missing}\n{run}");
    let lower = run.stderr.to_lowercase();
    assert!(lower.contains("add"), "{ctx}: the message does not say where to add {missing}\n{run}");
    for word in ["root", "sudo"] {
        assert!(!lower.contains(word), "{ctx}: the message tells to be root ({word:?})\n{run}");
    }
    for marker in PANIC_MARKERS {
        assert!(!lower.contains(&marker.to_lowercase()), "{ctx}: {marker}\n{run}");
    }
}

/// Runs `command` with `caps` and returns how it ended; the target of `attach`
/// and `audit` is `chan_send`, started here.
fn one_command(stage: &Stage, mode: Mode, caps: &[Cap], preflight: bool, command: Gleak, p: &Programs) -> GleakRun {
    let _serial = serial_guard();
    let exe = p.chan_send.binary.display().to_string();
    let leaky = p.gate_leaky.binary.display().to_string();
    match command {
        Gleak::Attach => {
            let target = p.chan_send.start();
            let pid = target.pid().to_string();
            stage.gleak(mode, caps, preflight, &["attach", "-p", &pid, "--duration", "2s", "--json"], RUN_TIMEOUT)
        }
        Gleak::Run => stage.gleak(mode, caps, preflight, &["run", "--json", "--", &leaky], RUN_TIMEOUT),
        Gleak::Audit => {
            let _target = p.chan_send.start();
            let mut args = AUDIT_ARGS.to_vec();
            args.extend(["--exe", &exe]);
            stage.gleak(mode, caps, preflight, &args, RUN_TIMEOUT)
        }
    }
}

/// A command that does not need the capability taken away: it still does its job.
fn assert_still_works(run: &GleakRun, command: Gleak, p: &Programs, ctx: &str) {
    match command {
        Gleak::Run => {
            assert_eq!(run.code(), Some(1), "{ctx}: the gate's exit code on a leaky job\n{run}");
            let reports = json_reports(run);
            let last = reports.last().unwrap_or_else(|| panic!("{ctx}: no report\n{run}"));
            let site = marker_site(last, &p.gate_leaky, "LEAK:gate");
            assert!(site.is_some_and(|s| verdict(s) == "leak"), "{ctx}: no leak at // LEAK:gate\n{run}");
        }
        Gleak::Attach | Gleak::Audit => assert!(run.status.success(), "{ctx}\n{run}"),
    }
}

fn each_capability_is_needed_and_named(mode: Mode) {
    if !can_run() {
        return;
    }
    let declared = Declared::read().set();
    let caps = grantable(&declared, mode);
    let stage = Stage::new(if mode == Mode::UserAmbient { "user-short" } else { "uid0-short" });
    let programs = Programs::build(&stage);
    let kernel = kernel();
    for &missing in &declared {
        let rest: Vec<Cap> = caps.iter().copied().filter(|&c| c != missing).collect();
        if !caps.contains(&missing) {
            notice(&format!(
                "{mode}: {missing} cannot be granted here; every run of this test went without it, and this \
                 kernel {kernel:?} does not need it"
            ));
            continue;
        }
        for command in [Gleak::Attach, Gleak::Run, Gleak::Audit] {
            let needed = needs(command, missing, kernel);
            // Up front (the preflight), then from the failing system call itself.
            // Without the preflight, an audit short of CAP_SYS_PTRACE would see
            // no process at all rather than fail: the preflight is what refuses it.
            for preflight in [true, false] {
                if !needed && !preflight {
                    continue;
                }
                if command == Gleak::Audit && !preflight && CAPABILITIES[missing.0 as usize] == "SYS_PTRACE" {
                    continue;
                }
                let ctx = format!(
                    "{mode}, gleak {command:?} without {missing} (holding {}{})",
                    names(&rest),
                    if preflight { "" } else { ", GLEAK_NO_PREFLIGHT=1" }
                );
                let run = one_command(&stage, mode, &rest, preflight, command, &programs);
                if needed {
                    assert_names(&run, missing, &ctx);
                    eprintln!("privileges: {ctx}: {}", run.stderr.lines().last().unwrap_or_default());
                } else {
                    assert_still_works(&run, command, &programs, &ctx);
                    eprintln!("privileges: {ctx}: works, as it should");
                }
            }
        }
    }
}

#[test]
fn uid_0_short_of_any_declared_capability_is_told_which_one() {
    each_capability_is_needed_and_named(Mode::Uid0BoundingSet);
}

#[test]
fn a_user_short_of_any_declared_capability_is_told_which_one() {
    each_capability_is_needed_and_named(Mode::UserAmbient);
}

/// The DaemonSet's old set (issue 19): `CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_PTRACE`.
/// A kernel that refuses uprobes to `CAP_PERFMON` (6.16+, and the stable kernels
/// fixed for CVE-2025-38466) makes gleak name `CAP_SYS_ADMIN` for uprobes, both up
/// front and from the `perf_event_open` that fails with EACCES; an older kernel
/// lets it attach.
#[test]
fn uid_0_with_bpf_perfmon_and_sys_ptrace_is_told_whether_uprobes_want_sys_admin() {
    if !can_run() {
        return;
    }
    let caps: Vec<Cap> = ["BPF", "PERFMON", "SYS_PTRACE"].into_iter().map(Cap::parse).collect();
    let mode = Mode::Uid0BoundingSet;
    let stage = Stage::new("perfmon");
    let programs = Programs::build(&stage);
    let sys_admin = Cap::parse("SYS_ADMIN");
    for preflight in [true, false] {
        let ctx = format!("{mode}, gleak attach with {}, preflight {preflight}", names(&caps));
        let run = one_command(&stage, mode, &caps, preflight, Gleak::Attach, &programs);
        if run.status.success() {
            assert!(
                kernel() < (6, 16),
                "{ctx}: Linux {:?} refuses uprobes to CAP_PERFMON, yet gleak attached",
                kernel()
            );
            eprintln!("privileges: {ctx}: attached (this kernel lets CAP_PERFMON open uprobes)");
            continue;
        }
        assert_names(&run, sys_admin, &ctx);
        assert!(run.stderr.contains("for uprobes"), "{ctx}: the message does not say what CAP_SYS_ADMIN is for\n{run}");
        if !preflight {
            assert!(
                run.stderr.contains("`perf_event_open` failed: Permission denied"),
                "{ctx}: the refusal should come from perf_event_open itself\n{run}"
            );
        }
        eprintln!("privileges: {ctx}: {}", run.stderr.lines().last().unwrap_or_default());
    }
}

// ---------------------------------------------------------------------------
// What `gleak run` passes on
// ---------------------------------------------------------------------------

/// A user's gleak holds its capabilities as ambient ones, which survive `exec`:
/// the command it starts must not get them.
#[test]
fn the_command_under_gleak_run_does_not_get_gleaks_capabilities() {
    if !can_run() {
        return;
    }
    let caps = grantable(&Declared::read().set(), Mode::UserAmbient);
    let stage = Stage::new("command");
    let fx = stage.fixture("gate_forever_clean");
    let _serial = serial_guard();
    let mut gleak = stage.spawn(
        Mode::UserAmbient,
        &caps,
        true,
        &["run", "--duration", "4s", "--", &fx.binary.display().to_string()],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let command = loop {
        let child = procfs::process::all_processes()
            .expect("/proc")
            .flatten()
            .find(|p| p.stat().is_ok_and(|s| s.ppid == gleak.pid() as i32 && s.state != 'Z'));
        if let Some(status) = child.and_then(|p| p.status().ok()).filter(|s| s.name.starts_with("gate_forever")) {
            break status;
        }
        assert!(gleak.try_wait().is_none(), "gleak ended before its command showed\n{}", gleak.stderr_text());
        assert!(std::time::Instant::now() < deadline, "no command under gleak run\n{}", gleak.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = gleak.wait(RUN_TIMEOUT);
    assert_eq!(run.code(), Some(0), "{run}");
    let held = |set: u64| caps.iter().filter(|c| set & (1 << c.0) != 0).map(|c| c.name()).collect::<Vec<_>>();
    let (ambient, effective) = (command.capamb.unwrap_or(0), command.capeff);
    assert!(
        held(ambient).is_empty() && held(effective).is_empty(),
        "the command under gleak run got gleak's capabilities: ambient {:?}, effective {:?}",
        held(ambient),
        held(effective)
    );
    assert_eq!(command.euid, NOBODY, "the command runs as gleak's user");
}
