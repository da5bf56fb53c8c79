//! What runs in each VM and how the host judges it. The guest only runs the
//! commands; every assertion is here, on gleak's JSON, the same ones the
//! end-to-end tests make (tests/tests/attach.rs, proof.rs, verdicts.rs,
//! event_loss.rs, run_gate.rs, audit.rs), kept short because TCG runs Go slowly.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use gleak_tests::{
    blocked_line, fixture_source, go_command, marker_line, parse_json_lines, sites, verdict, GoToolchain, Value,
};

use super::guest::{sh_quote, CheckOutput};
use crate::dist::{linkage, Linkage};

/// gleak's path in the guest.
const GLEAK: &str = "/vmtest/gleak";
/// The host's setpriv (util-linux), copied with its libraries: busybox has no way
/// to shrink the capability bounding set.
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// Time the guest gives a check on top of its `--duration`, for gleak's start
/// (reading the binary, loading the probes) under emulation.
const CHECK_SLACK_S: u32 = 60;

/// How long the runner waits for a fixture's ready line (tests/vm/init.sh).
const FIXTURE_READY_S: u64 = 60;
/// How long each attach traces: a few reports, short because TCG runs Go slowly.
const ATTACH_S: u32 = 3;
/// How long a `gleak run` fixture runs (`gate_leaky` sleeps 1 s).
const RUN_S: u32 = 2;
/// How long the audit check audits: two intervals and the final findings.
const AUDIT_S: u32 = 5;

/// PASS with a one-line summary, or FAIL with the reason.
pub type Outcome = Result<String, String>;

/// A Go program built for the guest, started at boot when it has a ready line.
pub struct Fixture {
    /// Shell-variable-safe name: `PID_<id>` holds a started fixture's PID.
    pub id: String,
    pub name: &'static str,
    pub go: GoToolchain,
    pub ready: Option<&'static str>,
}

impl Fixture {
    pub fn guest_path(&self) -> String {
        format!("/vmtest/go{}/{}", self.go.version, self.name)
    }

    fn pid_arg(&self) -> String {
        format!("\"$PID_{}\"", self.id)
    }

    /// Builds it static (no cgo) with its toolchain under `out_dir`.
    pub fn build(&self, out_dir: &Path) -> Result<PathBuf> {
        let out = out_dir.join(&self.go.version).join(self.name);
        std::fs::create_dir_all(out.parent().unwrap())?;
        let output = go_command(&self.go)
            .env("CGO_ENABLED", "0")
            .arg("build")
            .arg("-o")
            .arg(&out)
            .arg(fixture_source(self.name))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.go.go.display()))?;
        if !output.status.success() {
            bail!("building {} with Go {}: {}", self.name, self.go.version, String::from_utf8_lossy(&output.stderr));
        }
        // The guest has no C library.
        if let Linkage::Dynamic { .. } = linkage(&out)? {
            bail!("{} is dynamically linked despite CGO_ENABLED=0: the guest could not run it", out.display());
        }
        Ok(out)
    }
}

/// One column of the table: a command in the guest and its judgment on the host.
pub struct Check {
    /// Column header, and the frame's name in the guest (no spaces).
    pub id: String,
    pub timeout_s: u32,
    /// Shell words for the runner's `check` function.
    command: String,
    verify: Box<dyn Fn(&CheckOutput) -> Outcome>,
}

impl Check {
    fn new(id: &str, duration_s: u32, command: String, verify: impl Fn(&CheckOutput) -> Outcome + 'static) -> Check {
        Check { id: id.to_string(), timeout_s: duration_s + CHECK_SLACK_S, command, verify: Box::new(verify) }
    }

    pub fn judge(&self, output: &CheckOutput) -> Outcome {
        (self.verify)(output)
    }
}

/// Every fixture and check of one VM run.
pub struct Plan {
    pub fixtures: Vec<Fixture>,
    pub checks: Vec<Check>,
    pub capabilities: Vec<String>,
}

impl Plan {
    /// `old` and `new`: the two Go toolchains the fixtures are built with.
    /// `capabilities`: the DaemonSet's set, for the least-privilege check.
    pub fn new(old: &GoToolchain, new: &GoToolchain, capabilities: Vec<String>) -> Plan {
        let fixture = |name: &'static str, go: &GoToolchain, ready: Option<&'static str>| Fixture {
            id: format!("{name}_{}", go.version.replace('.', "_")),
            name,
            go: go.clone(),
            ready,
        };
        let leaky_old = fixture("chan_send", old, Some("ready chan_send"));
        let leaky_new = fixture("chan_send", new, Some("ready chan_send"));
        let stuck = fixture("stuck", new, Some("ready stuck"));
        let gate_leaky = fixture("gate_leaky", old, None);
        let gate_clean = fixture("gate_clean", new, None);

        let chan_send = Site::of("chan_send", "LEAK:chan_send");
        let leak_at_chan_send = || judge_at(&chan_send, leak_in_reports);
        let go_minor = minor_version(new);
        let audit_command = format!(
            "{} audit --pid {} --interval 2s --duration {AUDIT_S}s --listen off",
            sh_quote(GLEAK),
            leaky_new.pid_arg()
        );
        let with_caps = |who: Privilege, command: String| least_privilege(who, &capabilities, &command);
        let granted = |who: Privilege| {
            let capabilities = capabilities.clone();
            move |out: &CheckOutput| holds(out, who, &capabilities)
        };
        let (attach_caps, run_caps, audit_caps) =
            (granted(Privilege::Root), granted(Privilege::Root), granted(Privilege::Root));
        let ambient_caps = granted(Privilege::Ambient);
        let mut checks = vec![
            Check::new(
                &format!("attach-go{}", old.version),
                ATTACH_S,
                attach(&leaky_old, "1s", ""),
                leak_at_chan_send(),
            ),
            Check::new(
                &format!("attach-go{}", new.version),
                ATTACH_S,
                attach(&leaky_new, "1s", ""),
                leak_at_chan_send(),
            ),
            Check::new("proof", 2 * ATTACH_S, twice(&attach(&stuck, "1h", "")), move |out| proof(out, go_minor)),
            Check::new(
                "trace-parks",
                ATTACH_S,
                attach(&leaky_new, "1s", "--trace-parks"),
                judge_at(&chan_send, trace_parks),
            ),
            Check::new(
                "no-exit-probe",
                ATTACH_S,
                attach(&leaky_old, "1s", "--no-exit-probe"),
                judge_at(&chan_send, no_exit_probe),
            ),
            Check::new("run-leaky", RUN_S, gleak_run(&gate_leaky), |out| {
                gate(out, Some(&Site::of("gate_leaky", "LEAK:gate")))
            }),
            Check::new("run-clean", RUN_S, gleak_run(&gate_clean), |out| gate(out, None)),
            Check::new("audit", AUDIT_S, audit_command.clone(), judge_at(&chan_send, audit)),
            Check::new("caps-attach", ATTACH_S, with_caps(Privilege::Root, attach(&leaky_new, "1s", "")), {
                let site = chan_send.clone();
                move |out| attach_caps(out).and_then(|_| leak_in_reports(out, &site))
            }),
            Check::new("caps-run", RUN_S, with_caps(Privilege::Root, gleak_run(&gate_leaky)), move |out| {
                run_caps(out).and_then(|_| gate(out, Some(&Site::of("gate_leaky", "LEAK:gate"))))
            }),
            Check::new("caps-audit", AUDIT_S, with_caps(Privilege::Root, audit_command), {
                let site = chan_send.clone();
                move |out| audit_caps(out).and_then(|_| audit(out, &site))
            }),
            Check::new("caps-nonroot", ATTACH_S, with_caps(Privilege::Ambient, attach(&leaky_new, "1s", "")), {
                let site = chan_send.clone();
                move |out| ambient_caps(out).and_then(|_| leak_in_reports(out, &site))
            }),
        ];
        // Each capability taken away in turn, for a command that reads another
        // process (attach) and for one that reads only its child (run): where this
        // kernel needs it (what gleak's own privilege rules say, checked against
        // what the kernel does), gleak must refuse and name it.
        for cap in &capabilities {
            let fewer: Vec<String> = capabilities.iter().filter(|c| *c != cap).cloned().collect();
            let without = |command: String| least_privilege(Privilege::Root, &fewer, &command);
            let (site, gate_site) = (chan_send.clone(), Site::of("gate_leaky", "LEAK:gate"));
            let (cap_attach, cap_run) = (cap.clone(), cap.clone());
            checks.push(Check::new(
                &format!("attach-no-{}", cap.to_lowercase()),
                ATTACH_S,
                without(attach(&leaky_new, "1s", "")),
                move |out| without_capability(out, &cap_attach, true, |out| leak_in_reports(out, &site)),
            ));
            checks.push(Check::new(
                &format!("run-no-{}", cap.to_lowercase()),
                RUN_S,
                without(gleak_run(&gate_leaky)),
                move |out| without_capability(out, &cap_run, false, |out| gate(out, Some(&gate_site))),
            ));
        }
        Plan { fixtures: vec![leaky_old, leaky_new, stuck, gate_leaky, gate_clean], checks, capabilities }
    }

    /// `/vmtest/plan.sh` for the runner (tests/vm/init.sh).
    pub fn script(&self) -> String {
        let mut script = String::from("# Written by cargo xtask vmtest (xtask/src/vmtest/checks.rs).\n");
        for fx in &self.fixtures {
            if let Some(ready) = fx.ready {
                script.push_str(&format!("start_fixture {} {} {}\n", fx.id, fx.guest_path(), sh_quote(ready)));
            }
        }
        for c in &self.checks {
            script.push_str(&format!("check {} {} {}\n", c.id, c.timeout_s, c.command));
        }
        script
    }

    /// How long the plan may run after boot: every check at its limit, plus the fixtures' starts.
    pub fn budget(&self) -> Duration {
        let checks: u32 = self.checks.iter().map(|c| c.timeout_s).sum();
        let started = self.fixtures.iter().filter(|f| f.ready.is_some()).count() as u64;
        Duration::from_secs(u64::from(checks) + FIXTURE_READY_S * started + 30)
    }
}

/// `gleak attach` on a started fixture for [`ATTACH_S`], reporting every `interval`, in JSON.
fn attach(fx: &Fixture, interval: &str, extra: &str) -> String {
    let pid = fx.pid_arg();
    format!("{} attach -p {pid} --json --duration {ATTACH_S}s --interval {interval} --top 100 {extra}", sh_quote(GLEAK))
}

/// A judgment about `site`, as a check's verify function.
fn judge_at(site: &Site, judge: fn(&CheckOutput, &Site) -> Outcome) -> impl Fn(&CheckOutput) -> Outcome + 'static {
    let site = site.clone();
    move |out| judge(out, &site)
}

/// `gleak run --json -- FIXTURE`.
fn gleak_run(fx: &Fixture) -> String {
    format!("{} run --json -- {}", sh_quote(GLEAK), sh_quote(&fx.guest_path()))
}

/// Who gleak runs as in a least-privilege check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Privilege {
    /// uid 0 whose bounding set is exactly the manifest's capabilities.
    Root,
    /// uid 65534 holding exactly those as ambient capabilities (systemd's way).
    Ambient,
}

/// Unprivileged processes' usual locked-memory limit: kernels before 5.11 charge
/// BPF maps to it, so gleak must raise it (CAP_SYS_RESOURCE) rather than rely on
/// the runner's `ulimit -l unlimited`.
const DEFAULT_MEMLOCK_KIB: u32 = 64;

/// `command` under setpriv with exactly `capabilities`, as `who`, starting from
/// the default locked-memory limit. The shell in between has setpriv show the set
/// gleak then runs with.
fn least_privilege(who: Privilege, capabilities: &[String], command: &str) -> String {
    let set = std::iter::once("-all".to_string())
        .chain(capabilities.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let identity = match who {
        Privilege::Root => format!("--bounding-set {}", sh_quote(&set)),
        Privilege::Ambient => format!(
            "--reuid 65534 --regid 65534 --clear-groups --inh-caps {set} --ambient-caps {set} --bounding-set {set}",
            set = sh_quote(&set)
        ),
    };
    let show_then_run = sh_quote(&format!("cat /proc/version >&2; {SETPRIV} --dump >&2; exec \"$0\" \"$@\""));
    // The command stays outside every quote: the runner's shell expands its `$PID_…`.
    let lowered_memlock = sh_quote(&format!("ulimit -l {DEFAULT_MEMLOCK_KIB}; exec \"$@\""));
    format!("/bin/sh -c {lowered_memlock} sh {} {identity} -- /bin/sh -c {show_then_run} {command}", sh_quote(SETPRIV))
}

/// setpriv's dump shows gleak ran with exactly `capabilities` as `who`: that
/// bounding set, and as a non-root user those ambient capabilities too.
fn holds(out: &CheckOutput, who: Privilege, capabilities: &[String]) -> Outcome {
    let dumped = |label: &str| {
        let line = out.stderr.lines().find_map(|l| l.strip_prefix(label)).unwrap_or_default();
        let mut set: Vec<String> = line.split(',').filter(|c| !c.is_empty()).map(str::to_uppercase).collect();
        set.sort();
        set
    };
    let mut want = capabilities.to_vec();
    want.sort();
    let bounding = dumped("Capability bounding set: ");
    ensure(bounding == want, || format!("gleak ran with bounding set {bounding:?}, not {want:?}"))?;
    if who == Privilege::Ambient {
        let ambient = dumped("Ambient capabilities: ");
        ensure(ambient == want, || format!("gleak ran with ambient capabilities {ambient:?}, not {want:?}"))?;
        let uid = out.stderr.lines().find_map(|l| l.strip_prefix("uid: ")).unwrap_or_default();
        ensure(uid == "65534", || format!("gleak ran as uid {uid:?}, not 65534"))?;
    }
    Ok(String::new())
}

fn minor_version(go: &GoToolchain) -> u32 {
    go.version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0)
}

/// A fixture's `go` statement (or blocking line) by its marker comment.
#[derive(Clone)]
struct Site {
    suffix: String,
    marker: &'static str,
    line: u32,
}

impl Site {
    fn of(fixture: &str, marker: &'static str) -> Site {
        Site { suffix: format!("fixtures/{fixture}.go"), marker, line: marker_line(fixture, marker) }
    }

    fn at(&self) -> String {
        format!("{}:{}", self.suffix.trim_start_matches("fixtures/"), self.line)
    }

    /// Whether a report's site is this one.
    fn is(&self, site: &Value) -> bool {
        site["line"] == self.line && site["file"].as_str().is_some_and(|f| f.ends_with(&self.suffix))
    }

    fn find<'a>(&self, report: &'a Value) -> Result<&'a Value, String> {
        sites(report).iter().find(|s| self.is(s)).ok_or_else(|| {
            let top: Vec<String> = sites(report).iter().take(3).map(brief).collect();
            format!("no site at {} (// {}) in the report; top sites: {}", self.at(), self.marker, top.join("; "))
        })
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `file:line verdict live=N reason` of a site, for failure messages.
fn brief(site: &Value) -> String {
    format!(
        "{}:{} {} live={} {}",
        site["file"].as_str().unwrap_or("?").rsplit('/').next().unwrap_or("?"),
        site["line"],
        verdict(site),
        site["live"],
        site["top_wait_reason"].as_str().unwrap_or("-")
    )
}

/// What gleak said when it failed: its error line and causes, or the stderr's end.
fn gleak_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let error_at = lines.iter().rposition(|l| l.starts_with("gleak: ") && !l.starts_with("gleak: tracing"));
    let picked = match error_at {
        Some(at) => &lines[at..],
        None => &lines[lines.len().saturating_sub(2)..],
    };
    let causes = picked.iter().map(|l| l.strip_prefix("because: ").map_or(l.to_string(), |c| format!("← {c}")));
    let text = causes.collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(nothing on stderr)".into()
    } else {
        super::shortened(&text, 400)
    }
}

/// gleak's JSON documents on stdout, after checking its exit status.
fn documents(out: &CheckOutput, want_rc: i32) -> Result<Vec<Value>, String> {
    if out.rc != want_rc {
        let how = if out.rc == 137 { "was killed at its time limit".to_string() } else { format!("exited {}", out.rc) };
        return Err(format!("gleak {how} (want {want_rc}): {}", gleak_error(&out.stderr)));
    }
    let docs = parse_json_lines(&out.stdout)?;
    ensure(!docs.is_empty(), || format!("no JSON on stdout: {}", gleak_error(&out.stderr)))?;
    Ok(docs)
}

/// The leak at `site` in an attach's last report: `leak`, more than 20 live,
/// growing since the first report, blocked in `chan send` (attach.rs's assert_leaks).
fn leak_in_reports(out: &CheckOutput, site: &Site) -> Outcome {
    let reports = documents(out, 0)?;
    let (first, last) = (&reports[0], &reports[reports.len() - 1]);
    let s = site.find(last)?;
    let live = num(s, "live");
    let first_live = site.find(first).map_or(0, |f| num(f, "live"));
    ensure(verdict(s) == "leak", || format!("{}: verdict is not leak: {}", site.at(), s["verdict_reason"]))?;
    ensure(live > 20, || format!("{}: {live} live, want > 20", site.at()))?;
    ensure(reports.len() < 2 || live > first_live, || {
        format!("{}: live did not grow ({first_live} → {live})", site.at())
    })?;
    ensure(s["top_wait_reason"] == "chan send", || {
        format!("{}: waits on {}, not chan send", site.at(), s["top_wait_reason"])
    })?;
    Ok(format!("leak at {}: {live} live, chan send", site.at()))
}

/// `--trace-parks`: every traced goroutine has an exact blocked time no longer
/// than its age (verdicts.rs).
fn trace_parks(out: &CheckOutput, site: &Site) -> Outcome {
    let summary = leak_in_reports(out, site)?;
    let reports = documents(out, 0)?;
    let s = site.find(reports.last().unwrap())?;
    let blocked = &s["blocked_s"];
    let (p50, max) = (blocked["p50"].as_f64().unwrap_or(0.0), blocked["max"].as_f64().unwrap_or(0.0));
    ensure(p50 > 0.0 && max > 0.5, || format!("blocked_s {blocked}: want p50 > 0 and max > 0.5"))?;
    for g in s["goroutines"].as_array().into_iter().flatten().filter(|g| !g["age_s"].is_null()) {
        let (age, block) = (g["age_s"].as_f64().unwrap_or(0.0), g["blocked_s"].as_f64());
        ensure(block.is_some_and(|b| b <= age + 0.01), || {
            format!("goroutine {g}: blocked time missing or over its age")
        })?;
        ensure(g["wait_reason"] == "chan send", || format!("goroutine {g}: wait reason"))?;
    }
    Ok(format!("{summary}; blocked p50 {p50:.1}s"))
}

/// `--no-exit-probe`: no probe on the exit path, and the leak still found (event_loss.rs).
fn no_exit_probe(out: &CheckOutput, site: &Site) -> Outcome {
    ensure(!out.stderr.contains("runtime.gdestroy") && !out.stderr.contains("runtime.goexit0"), || {
        "an exit probe was placed".to_string()
    })?;
    leak_in_reports(out, site)
}

/// A command run without `capability` (name as the manifest spells it): refused
/// with it named, never with "sudo" advice, where the guest's kernel needs it by
/// gleak's own rules (`privilege::minimal_set`); otherwise it works (`works`).
/// `reads_others`: the command reads a process that is not its child.
fn without_capability(
    out: &CheckOutput,
    capability: &str,
    reads_others: bool,
    works: impl Fn(&CheckOutput) -> Outcome,
) -> Outcome {
    use gleak::tracing::privilege::{minimal_set, Capability};
    let kernel = kernel_of(&out.stderr).ok_or_else(|| "no kernel version in /proc/version".to_string())?;
    let name = format!("CAP_{capability}");
    let needed = minimal_set(kernel, reads_others, false).iter().any(|c: &Capability| c.name() == name);
    if !needed {
        return works(out).map(|done| format!("not needed on this kernel: {done}"));
    }
    let message = gleak_error(&out.stderr);
    ensure(out.rc == 5, || format!("gleak exited {} without {name} (want 5): {message}", out.rc))?;
    ensure(out.stderr.contains(&name), || format!("the refusal does not name {name}: {message}"))?;
    ensure(!out.stderr.contains("sudo"), || format!("uid 0 told to use sudo: {message}"))?;
    Ok(format!("refused, naming {name}"))
}

/// The kernel's version from `/proc/version`: Debian's own (`Debian 5.10.262-1`),
/// which `uname -r` does not show, else the one after `Linux version`.
fn kernel_of(stderr: &str) -> Option<aya::util::KernelVersion> {
    let line = stderr.lines().find(|l| l.starts_with("Linux version "))?;
    // The last "Debian": the compiler's version says it too, earlier on the line.
    let version = line.rsplit_once("Debian ").map(|(_, v)| v).or_else(|| line.strip_prefix("Linux version "))?;
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let mut next = || parts.next().and_then(|p| p.parse::<u16>().ok());
    let (major, minor, patch) = (next()?, next()?, next().unwrap_or(0));
    Some(aya::util::KernelVersion::new(u8::try_from(major).ok()?, u8::try_from(minor).ok()?, patch))
}

/// `command` run twice in a row, both outputs kept.
fn twice(command: &str) -> String {
    format!("/bin/sh -c {} {command}", sh_quote("\"$0\" \"$@\" && exec \"$0\" \"$@\""))
}

/// The proof on `stuck`'s leaks made before attach (proof.rs), from two attaches:
/// either report must prove them all. Under emulation `main` is often runnable when
/// the proof marks, and its frame still holds the locked mutex in a slot it no
/// longer uses; the proof reads whole frames, not stack maps (issue 23, item 5),
/// so that mutex then looks reachable. The host's proof test asserts one attach.
fn proof(out: &CheckOutput, go_minor: u32) -> Outcome {
    let reports = documents(out, 0)?;
    ensure(reports.len() == 2, || format!("{} reports from two attaches", reports.len()))?;
    proof_report(&reports[0], go_minor).or_else(|first| {
        proof_report(&reports[1], go_minor).map(|done| format!("{done} (second attach; the first: {first})"))
    })
}

/// One attach's report proves `stuck`'s leaks made before attach.
fn proof_report(r: &Value, go_minor: u32) -> Outcome {
    ensure(r["proof"]["inconclusive"].is_null(), || format!("the proof was inconclusive: {}", r["proof"]))?;
    let mutex_reason = if go_minor >= 20 { "sync.Mutex.Lock" } else { "semacquire" };
    for (leak, block, live, min_proven, reason) in [
        ("LEAK:private_chan", "BLOCK:private_chan", 300, 290, "chan send"),
        ("LEAK:locked_mutex", "BLOCK:locked_mutex", 200, 190, mutex_reason),
    ] {
        let site = Site::of("stuck", leak);
        let s = site.find(r)?;
        let proven = num(s, "proven");
        ensure(verdict(s) == "leak", || format!("{}: {}", site.at(), s["verdict_reason"]))?;
        ensure(num(s, "live") == live, || format!("{}: {} live, want {live}", site.at(), s["live"]))?;
        ensure((min_proven..=live).contains(&proven), || {
            format!("{}: {proven} proven, want ≥ {min_proven}", site.at())
        })?;
        let want = Site::of("stuck", block);
        let stuck_at = blocked_line(s);
        ensure(
            stuck_at
                .as_ref()
                .is_some_and(|(file, line, why)| file.ends_with(&want.suffix) && *line == want.line && why == reason),
            || format!("{}: blocked at {stuck_at:?}, want {} on {reason}", site.at(), want.at()),
        )?;
    }
    Ok(format!("{} candidates, 300 + 200 leaks proven at their lines", num(&r["proof"], "candidates")))
}

/// `gleak run`: exit 1 with the leak named, or 0 with nothing left (run_gate.rs).
fn gate(out: &CheckOutput, leak: Option<&Site>) -> Outcome {
    let reports = documents(out, if leak.is_some() { 1 } else { 0 })?;
    let last = reports.last().unwrap();
    let g = &last["gate"];
    let leaked = if leak.is_some() { 10 } else { 0 };
    ensure(g["failed"] == leak.is_some() && num(g, "leaked_goroutines") == leaked && g["command_status"] == 0, || {
        format!("gate {g}")
    })?;
    let others: Vec<String> =
        sites(last).iter().filter(|s| verdict(s) == "leak" && leak.is_none_or(|l| !l.is(s))).map(brief).collect();
    ensure(others.is_empty(), || format!("unexpected leak sites: {}", others.join("; ")))?;
    let Some(site) = leak else { return Ok("exit 0, nothing leaked".into()) };
    let s = site.find(last)?;
    ensure(verdict(s) == "leak" && num(s, "live") == 10, || format!("{}: {}", site.at(), brief(s)))?;
    Ok(format!("exit 1, 10 leaked at {}", site.at()))
}

/// `gleak audit`: a `verdict` or `final` finding of `leak` at the site (audit.rs).
fn audit(out: &CheckOutput, site: &Site) -> Outcome {
    let findings = documents(out, 0)?;
    let found = findings.iter().any(|f| {
        matches!(f["kind"].as_str(), Some("verdict" | "final")) && f["site"]["verdict"] == "leak" && site.is(&f["site"])
    });
    let kinds: Vec<&str> = findings.iter().filter_map(|f| f["kind"].as_str()).collect();
    ensure(found, || format!("no leak finding at {}; findings: {}", site.at(), kinds.join(", ")))?;
    Ok(format!("leak finding at {}", site.at()))
}

/// The capabilities the DaemonSet's container adds
/// (`securityContext.capabilities.add`), in flow (`add: ["BPF", …]`) or block
/// (`add:` then `- BPF` lines) style, without `CAP_` prefixes.
pub fn manifest_capabilities(yaml: &str) -> Result<Vec<String>> {
    // Comments become blank lines, which the block style may have between items.
    fn without_comment(line: &str) -> &str {
        match line.trim_start().starts_with('#') {
            true => "",
            false => line.split(" #").next().unwrap_or_default().trim_end(),
        }
    }
    let lines: Vec<&str> = yaml.lines().map(without_comment).collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let caps_at =
        lines.iter().position(|l| l.trim() == "capabilities:").context("no `capabilities:` in the manifest")?;
    let add_at = (caps_at + 1..lines.len())
        .take_while(|&i| lines[i].trim().is_empty() || indent(lines[i]) > indent(lines[caps_at]))
        .find(|&i| lines[i].trim_start().starts_with("add:"))
        .context("no `add:` under the manifest's `capabilities:`")?;
    let inline = lines[add_at].trim_start().trim_start_matches("add:").trim();
    let items: Vec<String> = if let Some(flow) = inline.strip_prefix('[') {
        flow.trim_end_matches(']').split(',').map(str::to_string).collect()
    } else {
        lines[add_at + 1..]
            .iter()
            .filter(|l| !l.is_empty())
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| l.trim_start()[2..].to_string())
            .collect()
    };
    let mut caps = Vec::new();
    for item in items {
        let name = item.trim().trim_matches(|c| c == '"' || c == '\'');
        let name = name.strip_prefix("CAP_").unwrap_or(name);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            bail!("`{item}` in the manifest's capabilities.add is not a capability name");
        }
        caps.push(name.to_string());
    }
    if caps.is_empty() {
        bail!("the manifest's capabilities.add is empty");
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_a_manifest() {
        let flow = "spec:\n  securityContext:\n    capabilities:\n      drop: [\"ALL\"]\n      # why\n      \
                    add: [\"BPF\", \"PERFMON\", 'CAP_SYS_PTRACE']  # comment\n    seccompProfile: {}\n";
        assert_eq!(manifest_capabilities(flow).unwrap(), ["BPF", "PERFMON", "SYS_PTRACE"]);
        let block = "capabilities:\n  add:\n    # why\n\n    - BPF\n    - \"SYS_ADMIN\"  # why\n  drop:\n    - ALL\n";
        assert_eq!(manifest_capabilities(block).unwrap(), ["BPF", "SYS_ADMIN"]);
        assert!(manifest_capabilities("capabilities:\n  drop: [ALL]\nadd: [BPF]\n").is_err());
        assert!(manifest_capabilities("capabilities:\n  add: [\"BPF; rm -rf\"]\n").is_err());
    }

    #[test]
    fn kernel_versions_from_proc_version() {
        let debian = "Linux version 5.10.0-46-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian \
                      10.2.1-6) 10.2.1 20210110, GNU ld (GNU Binutils for Debian) 2.35.2) #1 SMP Debian 5.10.262-1";
        assert_eq!(kernel_of(debian), Some(aya::util::KernelVersion::new(5, 10, 262)));
        let plain = "Linux version 6.18.44-fc-v1147 (root@host) #1 SMP";
        assert_eq!(kernel_of(&format!("x\n{plain}\n")), Some(aya::util::KernelVersion::new(6, 18, 44)));
        assert_eq!(kernel_of("no version here"), None);
    }

    #[test]
    fn least_privilege_commands_keep_the_pid_for_the_runner_to_expand() {
        let caps = ["BPF".to_string(), "SYS_PTRACE".to_string()];
        let root = least_privilege(Privilege::Root, &caps, "/vmtest/gleak attach -p $PID_x");
        assert!(
            root.starts_with("/bin/sh -c 'ulimit -l 64; exec \"$@\"' sh '/usr/bin/setpriv' --bounding-set"),
            "{root}"
        );
        assert!(
            root.contains("'-all,+bpf,+sys_ptrace'") && root.ends_with(" /vmtest/gleak attach -p $PID_x"),
            "{root}"
        );
        assert!(!root.contains("--reuid"), "{root}");
        let user = least_privilege(Privilege::Ambient, &caps, "true");
        let set = "'-all,+bpf,+sys_ptrace'";
        let identity = format!(
            "--reuid 65534 --regid 65534 --clear-groups --inh-caps {set} --ambient-caps {set} --bounding-set {set}"
        );
        assert!(user.contains(&identity), "{user}");
    }

    #[test]
    fn gleak_errors_in_one_line() {
        let stderr =
            "gleak: tracing PID 1\ngleak: loading the eBPF programs failed: x\n  because: invalid func unknown#174\n";
        assert_eq!(gleak_error(stderr), "gleak: loading the eBPF programs failed: x ← invalid func unknown#174");
    }

    #[test]
    fn the_real_manifest_declares_capabilities() {
        let path = gleak_tests::workspace_root().join("deploy/kubernetes/gleak-audit.yaml");
        // Whatever the set is, vmtest must be able to read it.
        manifest_capabilities(&std::fs::read_to_string(path).unwrap()).unwrap();
    }
}
