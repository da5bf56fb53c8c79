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
    blocked_line, fixture_source, fixtures_dir, go_command, marker_line, marker_line_in, parse_json_lines, sites,
    verdict, GoToolchain, Value, Variant,
};
use object::{Object, ObjectSegment, ObjectSymbol};

use super::{
    arch::GuestArch,
    guest::{sh_quote, CheckOutput},
};
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
    /// Plain, stripped or PIE.
    pub variant: Variant,
    pub ready: Option<&'static str>,
}

impl Fixture {
    pub fn guest_path(&self) -> String {
        format!("/vmtest/go{}/{}{}", self.go.version, self.name, self.variant.suffix())
    }

    fn pid_arg(&self) -> String {
        format!("\"$PID_{}\"", self.id)
    }

    /// Builds it for `arch` without cgo, with its toolchain, under `out_dir`: a
    /// program with `go build`, a test package (a directory of fixtures) with
    /// `go test -c`.
    pub fn build(&self, out_dir: &Path, arch: GuestArch) -> Result<PathBuf> {
        let out = out_dir.join(&self.go.version).join(format!("{}{}", self.name, self.variant.suffix()));
        std::fs::create_dir_all(out.parent().unwrap())?;
        let package = fixtures_dir().join(self.name);
        let mut go = go_command(&self.go);
        go.env("CGO_ENABLED", "0").env("GOARCH", arch.goarch());
        if package.is_dir() {
            go.args(["test", "-c", "-vet=off"]).args(self.variant.go_build_flags()).arg("-o").arg(&out);
            go.current_dir(&package);
        } else {
            go.arg("build").args(self.variant.go_build_flags()).arg("-o").arg(&out).arg(fixture_source(self.name));
        }
        let output = go.stdin(Stdio::null()).output().with_context(|| format!("running {}", self.go.go.display()))?;
        if !output.status.success() {
            bail!("building {} with Go {}: {}", self.name, self.go.version, String::from_utf8_lossy(&output.stderr));
        }
        // The guest has no C library; a Go PIE needs the dynamic loader alone,
        // which the guest then has (GuestArch::pie_loader).
        match linkage(&out)? {
            Linkage::Dynamic { needed: 0 } if self.variant == Variant::Pie => {}
            Linkage::Dynamic { .. } => {
                bail!("{} is dynamically linked despite CGO_ENABLED=0: the guest could not run it", out.display())
            }
            Linkage::Static | Linkage::StaticPie => {}
        }
        Ok(out)
    }
}

/// The file offset of `symbol`'s code in the ELF executable `path` (what a
/// tracefs uprobe takes), from its symbol table and program headers.
pub fn symbol_file_offset(path: &Path, symbol: &str) -> Result<u64> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = object::File::parse(&*data).with_context(|| format!("{}: not an ELF file", path.display()))?;
    let addr = elf
        .symbols()
        .find(|s| s.name() == Ok(symbol))
        .map(|s| s.address())
        .with_context(|| format!("{}: no symbol {symbol}", path.display()))?;
    elf.segments()
        .find_map(|seg| {
            let (offset, size) = seg.file_range();
            let within = addr.checked_sub(seg.address()).filter(|&d| d < size)?;
            offset.checked_add(within)
        })
        .with_context(|| format!("{}: {symbol} at {addr:#x} is in no loaded segment", path.display()))
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
    /// The uprobe the `uprobes` check places through tracefs: a fixture and a
    /// function of it, whose file offset the script gets as `UPROBE_OFFSET`.
    uprobe: Option<(String, &'static str)>,
}

/// What a plan is for.
pub struct PlanOptions {
    pub arch: GuestArch,
    /// Run gleak's checks; without, only the ones proving the guest can host them.
    pub with_gleak: bool,
}

impl Plan {
    /// `old` and `new`: the two Go toolchains the fixtures are built with.
    /// `capabilities`: the DaemonSet's set, for the least-privilege checks.
    ///
    /// x86-64 runs every check. arm64 runs the end-to-end subset (file:line and
    /// counts with both Go releases, stripped and PIE builds, the proof, the gate,
    /// the audit), not the capability checks (setpriv is the host's, an x86-64
    /// program), after two checks that need no gleak: the fixtures run, and a
    /// tracefs uprobe on one of them fires. Those two also run alone without gleak.
    pub fn new(old: &GoToolchain, new: &GoToolchain, capabilities: Vec<String>, options: &PlanOptions) -> Plan {
        let arch = options.arch;
        let fixture = |name: &'static str, go: &GoToolchain, variant: Variant, ready: Option<&'static str>| Fixture {
            id: format!("{name}{}_{}", variant.suffix().replace('-', "_"), go.version.replace('.', "_")),
            name,
            go: go.clone(),
            variant,
            ready,
        };
        let leaky_old = fixture("chan_send", old, Variant::Plain, Some("ready chan_send"));
        let leaky_new = fixture("chan_send", new, Variant::Plain, Some("ready chan_send"));
        let stuck = fixture("stuck", new, Variant::Plain, Some("ready stuck"));
        let gate_leaky = fixture("gate_leaky", old, Variant::Plain, None);
        let gate_clean = fixture("gate_clean", new, Variant::Plain, None);
        let tests_old = fixture("testblame", old, Variant::Plain, None);
        let tests_new = fixture("testblame", new, Variant::Plain, None);
        let mut fixtures = vec![leaky_old, leaky_new, stuck, gate_leaky, gate_clean, tests_old, tests_new];
        // Builds as shipped: where the arm64 port reads pclntab alone, and where it
        // relocates.
        if arch != GuestArch::X86_64 {
            fixtures.push(fixture("chan_send", old, Variant::Stripped, Some("ready chan_send")));
            fixtures.push(fixture("chan_send", new, Variant::Pie, Some("ready chan_send")));
        }

        let mut checks = Vec::new();
        let mut uprobe = None;
        if arch != GuestArch::X86_64 || !options.with_gleak {
            checks.push(Check::new("fixtures", 0, fixtures_up(&fixtures), fixtures_judge(&fixtures)));
            let target = &fixtures[1];
            uprobe = Some((target.guest_path(), UPROBE_FUNCTION));
            checks.push(Check::new("uprobes", UPROBE_S, uprobe_command(&target.guest_path()), move |out| {
                uprobe_fires(out, arch)
            }));
        }
        if options.with_gleak {
            let [leaky_old, leaky_new, stuck, gate_leaky, gate_clean, tests_old, tests_new, variants @ ..] =
                &fixtures[..]
            else {
                unreachable!("the plan's fixtures are listed above")
            };
            checks.extend(gleak_checks(old, new, [leaky_old, leaky_new, stuck, gate_leaky, gate_clean]));
            for tests in [tests_old, tests_new] {
                checks.push(Check::new(&format!("tests-go{}", tests.go.version), RUN_S, gleak_run(tests), blamed));
            }
            for variant in variants {
                checks.push(Check::new(
                    &format!("attach-{}-go{}", variant.variant.suffix().trim_start_matches('-'), variant.go.version),
                    ATTACH_S,
                    attach(variant, "1s", ""),
                    judge_at(&Site::of("chan_send", "LEAK:chan_send"), leak_in_reports),
                ));
            }
            if arch.runs_capability_checks() {
                checks.extend(capability_checks(&capabilities, &fixtures[1], &fixtures[3]));
            }
        }
        Plan { fixtures, checks, capabilities, uprobe }
    }

    /// `/vmtest/plan.sh` for the runner (tests/vm/init.sh). `built`: the
    /// fixtures' guest paths and host copies (the uprobe's offset is read there).
    pub fn script(&self, built: &[(String, PathBuf)]) -> Result<String> {
        let mut script = String::from("# Written by cargo xtask vmtest (xtask/src/vmtest/checks.rs).\n");
        if let Some((guest, function)) = &self.uprobe {
            let host = built.iter().find(|(g, _)| g == guest).map(|(_, h)| h).context("the uprobe's fixture")?;
            script.push_str(&format!("UPROBE_OFFSET={:#x}\n", symbol_file_offset(host, function)?));
        }
        for fx in &self.fixtures {
            if let Some(ready) = fx.ready {
                script.push_str(&format!("start_fixture {} {} {}\n", fx.id, fx.guest_path(), sh_quote(ready)));
            }
        }
        for c in &self.checks {
            script.push_str(&format!("check {} {} {}\n", c.id, c.timeout_s, c.command));
        }
        Ok(script)
    }

    /// How long the plan may run after boot: every check at its limit, plus the fixtures' starts.
    pub fn budget(&self) -> Duration {
        let checks: u32 = self.checks.iter().map(|c| c.timeout_s).sum();
        let started = self.fixtures.iter().filter(|f| f.ready.is_some()).count() as u64;
        Duration::from_secs(u64::from(checks) + FIXTURE_READY_S * started + 30)
    }
}

/// gleak's end-to-end checks on `[chan_send (old Go), chan_send (new Go), stuck,
/// gate_leaky, gate_clean]`.
fn gleak_checks(old: &GoToolchain, new: &GoToolchain, fixtures: [&Fixture; 5]) -> Vec<Check> {
    let [leaky_old, leaky_new, stuck, gate_leaky, gate_clean] = fixtures;
    let chan_send = Site::of("chan_send", "LEAK:chan_send");
    let leak_at_chan_send = || judge_at(&chan_send, leak_in_reports);
    let go_minor = minor_version(new);
    vec![
        Check::new(&format!("attach-go{}", old.version), ATTACH_S, attach(leaky_old, "1s", ""), leak_at_chan_send()),
        Check::new(&format!("attach-go{}", new.version), ATTACH_S, attach(leaky_new, "1s", ""), leak_at_chan_send()),
        Check::new("proof", 2 * ATTACH_S, twice(&attach(stuck, "1h", "")), move |out| proof(out, go_minor)),
        Check::new(
            "trace-parks",
            ATTACH_S,
            attach(leaky_new, "1s", "--trace-parks"),
            judge_at(&chan_send, trace_parks),
        ),
        Check::new(
            "no-exit-probe",
            ATTACH_S,
            attach(leaky_old, "1s", "--no-exit-probe"),
            judge_at(&chan_send, no_exit_probe),
        ),
        Check::new("run-leaky", RUN_S, gleak_run(gate_leaky), |out| {
            gate(out, Some(&Site::of("gate_leaky", "LEAK:gate")))
        }),
        Check::new("run-clean", RUN_S, gleak_run(gate_clean), |out| gate(out, None)),
        Check::new("audit", AUDIT_S, audit_command(leaky_new), judge_at(&chan_send, audit)),
    ]
}

fn audit_command(fx: &Fixture) -> String {
    format!("{} audit --pid {} --interval 2s --duration {AUDIT_S}s --listen off", sh_quote(GLEAK), fx.pid_arg())
}

/// gleak with exactly the DaemonSet's `capabilities`, as root and as a non-root
/// user, then without each of them in turn, on `leaky` (a started chan_send)
/// and `gate_leaky`.
fn capability_checks(capabilities: &[String], leaky: &Fixture, gate_leaky: &Fixture) -> Vec<Check> {
    let chan_send = Site::of("chan_send", "LEAK:chan_send");
    let with_caps = |who: Privilege, command: String| least_privilege(who, capabilities, &command);
    let granted = |who: Privilege| {
        let capabilities = capabilities.to_vec();
        move |out: &CheckOutput| holds(out, who, &capabilities)
    };
    let (attach_caps, run_caps, audit_caps) =
        (granted(Privilege::Root), granted(Privilege::Root), granted(Privilege::Root));
    let ambient_caps = granted(Privilege::Ambient);
    let mut checks = vec![
        Check::new("caps-attach", ATTACH_S, with_caps(Privilege::Root, attach(leaky, "1s", "")), {
            let site = chan_send.clone();
            move |out| attach_caps(out).and_then(|_| leak_in_reports(out, &site))
        }),
        Check::new("caps-run", RUN_S, with_caps(Privilege::Root, gleak_run(gate_leaky)), move |out| {
            run_caps(out).and_then(|_| gate(out, Some(&Site::of("gate_leaky", "LEAK:gate"))))
        }),
        Check::new("caps-audit", AUDIT_S, with_caps(Privilege::Root, audit_command(leaky)), {
            let site = chan_send.clone();
            move |out| audit_caps(out).and_then(|_| audit(out, &site))
        }),
        Check::new("caps-nonroot", ATTACH_S, with_caps(Privilege::Ambient, attach(leaky, "1s", "")), {
            let site = chan_send.clone();
            move |out| ambient_caps(out).and_then(|_| leak_in_reports(out, &site))
        }),
    ];
    // Each capability taken away in turn, for a command that reads another
    // process (attach) and for one that reads only its child (run): where this
    // kernel needs it (what gleak's own privilege rules say, checked against
    // what the kernel does), gleak must refuse and name it.
    for cap in capabilities {
        let fewer: Vec<String> = capabilities.iter().filter(|c| *c != cap).cloned().collect();
        let without = |command: String| least_privilege(Privilege::Root, &fewer, &command);
        let (site, gate_site) = (chan_send.clone(), Site::of("gate_leaky", "LEAK:gate"));
        let (cap_attach, cap_run) = (cap.clone(), cap.clone());
        checks.push(Check::new(
            &format!("attach-no-{}", cap.to_lowercase()),
            ATTACH_S,
            without(attach(leaky, "1s", "")),
            move |out| without_capability(out, &cap_attach, true, |out| leak_in_reports(out, &site)),
        ));
        checks.push(Check::new(
            &format!("run-no-{}", cap.to_lowercase()),
            RUN_S,
            without(gleak_run(gate_leaky)),
            move |out| without_capability(out, &cap_run, false, |out| gate(out, Some(&gate_site))),
        ));
    }
    checks
}

/// The function of chan_send the `uprobes` check probes: called once a tick.
const UPROBE_FUNCTION: &str = "main.handleRequest";
/// How long the `uprobes` check counts the probe's hits.
const UPROBE_S: u32 = 2;
const UPROBE_EVENT: &str = "vmtest/handle_request";

/// Whether each started fixture still runs and printed its ready line.
fn fixtures_up(fixtures: &[Fixture]) -> String {
    let script = "while [ $# -gt 0 ]; do \
                  if kill -0 \"$2\" 2>/dev/null && grep -qx \"$3\" \"/tmp/$1.out\"; then echo \"up $1\"; \
                  else echo \"down $1: $(tail -c 200 \"/tmp/$1.err\" | tr '\\n' ' ')\"; fi; shift 3; done";
    let mut command = format!("/bin/sh -c {} sh", sh_quote(script));
    for fx in fixtures {
        if let Some(ready) = fx.ready {
            command.push_str(&format!(" {} {} {}", fx.id, fx.pid_arg(), sh_quote(ready)));
        }
    }
    command
}

fn fixtures_judge(fixtures: &[Fixture]) -> impl Fn(&CheckOutput) -> Outcome + 'static {
    let started: Vec<String> = fixtures.iter().filter(|f| f.ready.is_some()).map(|f| f.id.clone()).collect();
    move |out| {
        let down: Vec<&str> = started
            .iter()
            .filter(|id| !out.stdout.lines().any(|l| l == format!("up {id}")))
            .map(|id| out.stdout.lines().find(|l| l.starts_with(&format!("down {id}:"))).unwrap_or(id.as_str()))
            .collect();
        ensure(out.rc == 0 && down.is_empty(), || format!("fixtures not running: {}", down.join("; ")))?;
        Ok(format!("{} fixtures running", started.len()))
    }
}

/// Places a tracefs uprobe at `UPROBE_OFFSET` in the running `fixture`, counts
/// its hits for [`UPROBE_S`] and removes it; prints the machine and whether the
/// kernel has BTF first.
fn uprobe_command(fixture: &str) -> String {
    let script = format!(
        "uname -m; [ -r /sys/kernel/btf/vmlinux ] && echo btf; cd /sys/kernel/tracing || exit 1; \
         echo \"p:{UPROBE_EVENT} $0:$1\" >> uprobe_events || exit 1; \
         echo 1 > events/{UPROBE_EVENT}/enable || exit 1; sleep {UPROBE_S}; \
         echo 0 > events/{UPROBE_EVENT}/enable; cat uprobe_profile; echo \"-:{UPROBE_EVENT}\" >> uprobe_events"
    );
    format!("/bin/sh -c {} {} \"$UPROBE_OFFSET\"", sh_quote(&script), sh_quote(fixture))
}

/// The guest is `arch` with BTF, and the uprobe hit `main.handleRequest` once a
/// tick (20 ms; at least 10 times in [`UPROBE_S`] even under emulation).
fn uprobe_fires(out: &CheckOutput, arch: GuestArch) -> Outcome {
    let mut lines = out.stdout.lines();
    let machine = lines.next().unwrap_or_default();
    ensure(out.rc == 0, || format!("exited {}: {}", out.rc, out.stderr.trim()))?;
    ensure(machine == arch.name(), || format!("the guest is {machine:?}, not {}", arch.name()))?;
    ensure(out.stdout.lines().any(|l| l == "btf"), || "no /sys/kernel/btf/vmlinux".to_string())?;
    // `FILE EVENT HITS [MISSES]`; the event with its group or, as in 6.1, without.
    let event_name = UPROBE_EVENT.rsplit('/').next().unwrap_or(UPROBE_EVENT);
    let hits = out
        .stdout
        .lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let named = words.get(1).is_some_and(|&w| w == UPROBE_EVENT || w == event_name);
            named.then(|| words.get(2)?.parse::<u64>().ok()).flatten()
        })
        .ok_or_else(|| format!("no {UPROBE_EVENT} in uprobe_profile: {}", out.stdout.trim()))?;
    ensure(hits >= 10, || format!("the uprobe at {UPROBE_FUNCTION} hit {hits} times in {UPROBE_S}s, want ≥ 10"))?;
    Ok(format!("{machine}, BTF, uprobe at {UPROBE_FUNCTION} hit {hits} times in {UPROBE_S}s"))
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
/// growing since the first report, blocked in `chan send`, its creation stack
/// (the probe's frame-pointer walk) reaching `main.main` (attach.rs's assert_leaks).
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
    let stack: Vec<&str> = s["stack"].as_array().into_iter().flatten().filter_map(|f| f["function"].as_str()).collect();
    ensure(stack.contains(&"main.main"), || format!("{}: creation stack {stack:?} misses main.main", site.at()))?;
    Ok(format!("leak at {}: {live} live, chan send, created from main.main", site.at()))
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

/// `gleak run` on the test binary of tests/fixtures/testblame: every leak blamed
/// on exactly its test, at its `go` statement, and the test that outlives its
/// goroutine said so (test_blame.rs).
fn blamed(out: &CheckOutput) -> Outcome {
    if out.rc != 1 {
        return Err(format!("gleak exited {} (want 1): {}", out.rc, gleak_error(&out.stderr)));
    }
    // The test binary's own lines (`PASS`) share stdout with gleak's reports.
    let reports: Vec<Value> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("a report is not JSON ({e}): {l}")))
        .collect::<Result<_, _>>()?;
    let last = reports.last().ok_or_else(|| format!("no report: {}", gleak_error(&out.stderr)))?;
    let source = fixtures_dir().join("testblame/blame_test.go");
    let want = [
        ("TestParallelLeakA", "LEAK:A", 3),
        ("TestParallelLeakB", "LEAK:B", 2),
        ("TestSubtests/leaky", "LEAK:sub", 1),
        ("TestFailsAndLeaks", "LEAK:fails", 1),
    ];
    let failed: Vec<&str> =
        last["gate"]["failed_tests"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
    let mut want_failed: Vec<&str> = want.iter().map(|w| w.0).collect();
    want_failed.sort_unstable();
    let mut sorted = failed.clone();
    sorted.sort_unstable();
    ensure(sorted == want_failed, || format!("the gate blamed {failed:?}, want {want_failed:?}"))?;
    let tests = last["tests"].as_array().cloned().unwrap_or_default();
    let test = |name: &str| tests.iter().find(|t| t["name"] == name).cloned();
    for (name, marker, goroutines) in want {
        let t = test(name).ok_or_else(|| format!("no test {name} in the report"))?;
        let line = u64::from(marker_line_in(&source, marker));
        let leaked: Vec<(u64, u64)> = t["live"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["leaked"] == true)
            .map(|s| (num(s, "line"), num(s, "goroutines")))
            .collect();
        ensure(leaked == [(line, goroutines)], || {
            format!("{name}: leaked {leaked:?}, want {goroutines} at line {line}")
        })?;
    }
    let outlives = test("TestOutlives").ok_or("no test TestOutlives in the report")?;
    ensure(outlives["status"] == "outlived", || format!("TestOutlives is {}", outlives["status"]))?;
    Ok(format!("exit 1, {} tests seen, the 4 leaking ones blamed exactly, 1 outlived", tests.len()))
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

    fn toolchain(version: &str) -> GoToolchain {
        GoToolchain { version: version.into(), go: PathBuf::from(format!("/go/{version}/bin/go")) }
    }

    fn check_ids(arch: GuestArch, with_gleak: bool) -> Vec<String> {
        let caps = vec!["BPF".to_string(), "SYS_PTRACE".to_string()];
        let plan = Plan::new(&toolchain("1.19"), &toolchain("1.27.3"), caps, &PlanOptions { arch, with_gleak });
        plan.checks.iter().map(|c| c.id.clone()).collect()
    }

    #[test]
    fn plans_per_architecture() {
        let gleak_subset = [
            "attach-go1.19",
            "attach-go1.27.3",
            "proof",
            "trace-parks",
            "no-exit-probe",
            "run-leaky",
            "run-clean",
            "audit",
            "tests-go1.19",
            "tests-go1.27.3",
        ];
        let mut x86 = gleak_subset.to_vec();
        x86.extend(["caps-attach", "caps-run", "caps-audit", "caps-nonroot"]);
        x86.extend(["attach-no-bpf", "run-no-bpf", "attach-no-sys_ptrace", "run-no-sys_ptrace"]);
        assert_eq!(check_ids(GuestArch::X86_64, true), x86);
        let mut arm64 = vec!["fixtures", "uprobes"];
        arm64.extend(gleak_subset);
        arm64.extend(["attach-sw-go1.19", "attach-pie-go1.27.3"]);
        assert_eq!(check_ids(GuestArch::Aarch64, true), arm64);
        assert_eq!(check_ids(GuestArch::Aarch64, false), ["fixtures", "uprobes"]);
        assert_eq!(check_ids(GuestArch::X86_64, false), ["fixtures", "uprobes"]);
    }

    #[test]
    fn uprobe_hits_from_either_profile_format() {
        let out = |stdout: &str| CheckOutput { stdout: stdout.into(), ..CheckOutput::default() };
        let six_one = "aarch64\nbtf\n  /vmtest/go1.27.3/chan_send handle_request     101\n";
        assert!(uprobe_fires(&out(six_one), GuestArch::Aarch64).unwrap().contains("hit 101 times"));
        let grouped = "x86_64\nbtf\n  /vmtest/go1.27.3/chan_send vmtest/handle_request   55  0\n";
        assert!(uprobe_fires(&out(grouped), GuestArch::X86_64).is_ok());
        assert!(uprobe_fires(&out(grouped), GuestArch::Aarch64).is_err(), "wrong machine");
        assert!(uprobe_fires(&out("aarch64\nbtf\n /x handle_request 3\n"), GuestArch::Aarch64).is_err());
        assert!(uprobe_fires(&out("aarch64\n /x handle_request 300\n"), GuestArch::Aarch64).is_err(), "no BTF");
        assert!(uprobe_fires(&out("aarch64\nbtf\n"), GuestArch::Aarch64).is_err());
    }

    #[test]
    fn fixtures_judged_by_name() {
        let caps = vec!["BPF".to_string()];
        let options = PlanOptions { arch: GuestArch::Aarch64, with_gleak: false };
        let plan = Plan::new(&toolchain("1.19"), &toolchain("1.27.3"), caps, &options);
        let started: Vec<&str> = plan.fixtures.iter().filter(|f| f.ready.is_some()).map(|f| f.id.as_str()).collect();
        assert_eq!(
            started,
            ["chan_send_1_19", "chan_send_1_27_3", "stuck_1_27_3", "chan_send_sw_1_19", "chan_send_pie_1_27_3"]
        );
        let all_up: String = started.iter().map(|id| format!("up {id}\n")).collect();
        let judge = fixtures_judge(&plan.fixtures);
        let out = |stdout: String| CheckOutput { stdout, ..CheckOutput::default() };
        assert!(judge(&out(all_up.clone())).is_ok());
        let one_down = all_up.replace("up stuck_1_27_3", "down stuck_1_27_3: exec format error");
        assert!(judge(&out(one_down)).unwrap_err().contains("exec format error"));
        assert!(plan.fixtures[4].guest_path().ends_with("/vmtest/go1.27.3/gate_clean"));
        assert_eq!(plan.fixtures[6].guest_path(), "/vmtest/go1.27.3/testblame");
        assert_eq!(plan.fixtures[8].guest_path(), "/vmtest/go1.27.3/chan_send-pie");
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
