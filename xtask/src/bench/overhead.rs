//! Overhead per goroutine life (spawn + exit) and per park (an unbuffered channel
//! round trip), on one process, side by side: untraced; the floor, i.e. bare
//! uprobes with no BPF program at exactly gleak's probe instructions (created
//! through tracefs `uprobe_events`); and each gleak mode. The ratio that matters
//! is gleak's extra cost over the floor's extra cost at the same sites.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use gleak::{
    binary::GoBinary,
    tracing::placement::{plan, ProbeSite},
    AttachOptions,
};

use nix::sys::signal::Signal;

use super::{median, ns, reports, signal, Driven, Env, Gleak};

/// Repetitions per measurement; the median is kept.
const REPEAT: usize = 5;

struct Row {
    mode: String,
    /// gleak's programs: name, runs per goroutine life, mean in-kernel ns per run.
    programs: Vec<(String, f64, f64)>,
    spawn_ns: f64,
    chan_ns: f64,
    /// Probe hits per spawn plus round trip: tracefs counts (floor), program runs (gleak).
    per_life: Option<f64>,
    lost: Option<u64>,
}

/// Whether a probe site's program is a creation probe's.
fn is_creation(program: &str) -> bool {
    program.starts_with("goroutine_create")
}

/// What runs beside the workload while it is measured.
enum Setup {
    Untraced,
    /// Bare uprobes at these file offsets.
    Floor(Vec<u64>),
    /// A counting-only BPF program at these file offsets.
    BpfFloor(Vec<u64>),
    /// gleak with these extra arguments; `stopped`: its user side stopped (SIGSTOP)
    /// while timed, for what its probes cost alone, without its CPU competing;
    /// `by_pid`: its probes find their target by PID, as on kernels without attach
    /// cookies (`GLEAK_PROBE_LOOKUP=tgid`).
    Gleak {
        extra: &'static [&'static str],
        stopped: bool,
        by_pid: bool,
    },
}

pub fn run(env: &Env) -> Result<String> {
    let bin = env.build("workload")?;
    let n = env.args.goroutines;
    let mut wl = Driven::start(&bin, &[])?;

    // The floor: the same instructions gleak probes, bare.
    let binary = GoBinary::open(&bin, &bin).context("reading the workload binary")?;
    let offsets = |sites: &[ProbeSite], keep: fn(&str) -> bool| -> Result<Vec<u64>> {
        let offsets: Vec<u64> = sites
            .iter()
            .filter(|s| keep(s.program))
            .map(|s| binary.file_offset(s.vaddr).context("probe site outside the file"))
            .collect::<Result<_>>()?;
        // A floor without a probe would pass for untraced.
        anyhow::ensure!(!offsets.is_empty(), "no probe site for a floor row: were gleak's programs renamed?");
        Ok(offsets)
    };
    let default_sites = plan(&binary, AttachOptions::default())?;
    let park_sites = plan(&binary, AttachOptions { trace_parks: true, ..AttachOptions::default() })?;
    let configs: Vec<(&str, Setup)> = vec![
        ("untraced", Setup::Untraced),
        ("floor: bare uprobes at gleak's creation + exit sites", Setup::Floor(offsets(&default_sites, |_| true)?)),
        // Each site alone: where the cost of two lies (they overlap on two CPUs).
        ("floor: a bare uprobe at gleak's creation site alone", Setup::Floor(offsets(&default_sites, is_creation)?)),
        (
            "floor: a bare uprobe at gleak's exit site alone",
            Setup::Floor(offsets(&default_sites, |p| !is_creation(p))?),
        ),
        (
            "BPF floor: a counting-only program at gleak's creation + exit sites",
            Setup::BpfFloor(offsets(&default_sites, |_| true)?),
        ),
        ("floor: bare uprobes at gleak's creation + exit + park sites", Setup::Floor(offsets(&park_sites, |_| true)?)),
        ("gleak default (creation + exit, stacks)", Setup::Gleak { extra: &[], stopped: false, by_pid: false }),
        (
            "gleak default, target found by PID (the path of kernels before 5.15)",
            Setup::Gleak { extra: &[], stopped: false, by_pid: true },
        ),
        (
            "gleak default, its user side stopped while timed: the probes alone",
            Setup::Gleak { extra: &[], stopped: true, by_pid: false },
        ),
        ("gleak --no-stacks", Setup::Gleak { extra: &["--no-stacks"], stopped: false, by_pid: false }),
        (
            "gleak --no-exit-probe (exits read from memory)",
            Setup::Gleak { extra: &["--no-exit-probe"], stopped: false, by_pid: false },
        ),
        (
            "gleak --no-exit-probe --no-stacks",
            Setup::Gleak { extra: &["--no-exit-probe", "--no-stacks"], stopped: false, by_pid: false },
        ),
        ("gleak --trace-parks", Setup::Gleak { extra: &["--trace-parks"], stopped: false, by_pid: false }),
        (
            "gleak --classic-probes (entry/RET sites)",
            Setup::Gleak { extra: &["--classic-probes"], stopped: false, by_pid: false },
        ),
    ];
    let mut rows: Vec<Row> = configs
        .iter()
        .map(|(mode, _)| Row {
            mode: mode.to_string(),
            programs: Vec::new(),
            spawn_ns: 0.0,
            chan_ns: 0.0,
            per_life: None,
            lost: None,
        })
        .collect();
    let mut spawns = vec![Vec::new(); configs.len()];
    let mut chans = vec![Vec::new(); configs.len()];
    // The floor's probe hits and goroutine lives, per config.
    let mut counted = vec![(0u64, 0u64); configs.len()];
    let pid = wl.pid().to_string();
    // Round-robin, one sample of every configuration per round: a VM's slow and
    // fast spells then weigh on every row alike instead of on whichever ran in them.
    for round in 0..REPEAT {
        for (i, (_, setup)) in configs.iter().enumerate() {
            let mut sample = |wl: &mut Driven| -> Result<()> {
                spawns[i].push(wl.ask_f64(&format!("spawn {n}"))?);
                chans[i].push(wl.ask_f64(&format!("chan {n}"))?);
                Ok(())
            };
            match setup {
                Setup::Untraced => sample(&mut wl)?,
                Setup::Floor(sites) | Setup::BpfFloor(sites) => {
                    let floor: Box<dyn Hits> = match setup {
                        Setup::Floor(_) => Box::new(tracefs::Uprobes::create(&bin, sites)?),
                        _ => Box::new(bpf_floor::CountingProbes::attach(&bin, wl.pid(), sites)?),
                    };
                    let before = floor.hits()?;
                    sample(&mut wl)?;
                    // Per spawn and round trip, as the programs' runs below.
                    counted[i].0 += floor.hits()?.saturating_sub(before);
                    counted[i].1 += n;
                    rows[i].per_life = Some(counted[i].0 as f64 / counted[i].1 as f64);
                    if round == 0 && matches!(setup, Setup::BpfFloor(_)) {
                        rows[i].programs = program_times(&mut wl, n)?;
                    }
                }
                Setup::Gleak { extra, stopped, by_pid } => {
                    let mut cmd = std::process::Command::new(&env.gleak);
                    cmd.args(["attach", "-p", pid.as_str(), "--json", "--interval", "1h", "--no-proof"]).args(*extra);
                    if *by_pid {
                        cmd.env("GLEAK_PROBE_LOOKUP", "tgid");
                    }
                    let g = Gleak::start_command(cmd, "tracing PID")?;
                    if *stopped {
                        signal(g.pid(), Signal::SIGSTOP);
                        let timed = sample(&mut wl);
                        signal(g.pid(), Signal::SIGCONT);
                        timed?;
                    } else {
                        sample(&mut wl)?;
                        if round == 0 {
                            rows[i].programs = program_times(&mut wl, n)?;
                        }
                    }
                    let out = g.stop()?;
                    let last = reports(&out).pop().context("gleak printed no report")?;
                    // Probe hits: its programs' runs (exits read from memory cost none).
                    let programs = &rows[i].programs;
                    rows[i].per_life = (!programs.is_empty()).then(|| programs.iter().map(|(_, runs, _)| runs).sum());
                    // Stopped, the probes drop events past the ring's capacity: counted, not hidden.
                    let lost = last["lost_events"].as_u64().unwrap_or(0);
                    rows[i].lost = Some(rows[i].lost.unwrap_or(0) + lost);
                }
            }
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.spawn_ns = median(std::mem::take(&mut spawns[i]));
        row.chan_ns = median(std::mem::take(&mut chans[i]));
    }
    Ok(render(env, &bin, &rows))
}

/// The probes' in-kernel time per program, over one more `spawn` and `chan`,
/// apart from the timed runs: the kernel's run-time accounting costs a clock read
/// per program run.
fn program_times(wl: &mut Driven, n: u64) -> Result<Vec<(String, f64, f64)>> {
    progstats::measure(n, || {
        wl.ask_f64(&format!("spawn {n}"))?;
        wl.ask_f64(&format!("chan {n}"))?;
        Ok(())
    })
}

/// A floor's probe hits so far.
trait Hits {
    fn hits(&self) -> Result<u64>;
}

impl Hits for tracefs::Uprobes {
    fn hits(&self) -> Result<u64> {
        tracefs::Uprobes::hits(self)
    }
}

impl Hits for bpf_floor::CountingProbes {
    fn hits(&self) -> Result<u64> {
        bpf_floor::CountingProbes::hits(self)
    }
}

fn render(env: &Env, bin: &Path, rows: &[Row]) -> String {
    let base = &rows[0];
    let extra_of = |prefix: &str, value: fn(&Row) -> f64| {
        rows.iter().find(|r| r.mode.starts_with(prefix)).map_or(0.0, |r| value(r) - value(base))
    };
    let floor_spawn = extra_of("floor: bare uprobes at gleak's creation + exit sites", |r| r.spawn_ns);
    let bpf_floor_spawn = extra_of("BPF floor", |r| r.spawn_ns);
    let floor_chan = extra_of("floor: bare uprobes at gleak's creation + exit + park", |r| r.chan_ns);
    let mut s = String::new();
    let _ = writeln!(s, "## Overhead per goroutine and per park\n");
    let _ = writeln!(
        s,
        "One process ({}), {} goroutines spawned and joined (`spawn`) and as many unbuffered channel round \
         trips (`chan`, each a park), median of {REPEAT} rounds, each round measuring every row once, in turn. The floor is bare uprobes created through tracefs \
         `uprobe_events` with no BPF program, at gleak's own probe instructions: what any uprobe-based \
         tracer pays there. *extra/floor* is gleak's cost above untraced over the floor's (creation + exit \
         floor for `spawn`, + park floor for `chan`). The BPF floor is a program that only counts its runs \
         (`gleak-ebpf/src/floor.rs`) at the creation and exit sites: the trap, the dispatch to a BPF program \
         and the least a program can do, which any BPF tracer pays there; *extra/BPF floor* compares with it. \
         The floor of each site alone shows where the cost of the two lies: the creation site's trap is on \
         the spawning goroutine's path, while an exit often runs beside it on the other CPU, so the two alone \
         add up to more than both together; the creation site alone is also the floor of the modes without \
         the exit probe. \
         The row whose probes find their target by PID is the path gleak takes on kernels without BPF attach \
         cookies (before 5.15): a hash lookup per probe hit instead of none. \
         The row with gleak's user side stopped (SIGSTOP during the timed runs) shows what its probes cost \
         the target alone: on this 2-vCPU machine the rest is gleak's own CPU competing with the target's \
         (while it is stopped, events past the ring's capacity are dropped and counted as lost).\n",
        bin.file_name().unwrap_or_default().to_string_lossy(),
        env.args.goroutines
    );
    let _ = writeln!(
        s,
        "| mode | spawn+exit | extra/floor | extra/BPF floor | chan round trip | extra/floor | probe hits per spawn + round trip | lost |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let ratio = |v: f64, b: f64, f: f64| {
            if r.mode == "untraced" || f <= 0.0 {
                "-".to_string()
            } else {
                format!("{:.2}×", (v - b) / f)
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            ns(r.spawn_ns),
            ratio(r.spawn_ns, base.spawn_ns, floor_spawn),
            ratio(r.spawn_ns, base.spawn_ns, bpf_floor_spawn),
            ns(r.chan_ns),
            ratio(r.chan_ns, base.chan_ns, floor_chan),
            r.per_life.map_or("-".into(), |v| format!("{v:.2}")),
            r.lost.map_or("-".into(), |v| v.to_string()),
        );
    }
    let _ = writeln!(
        s,
        "\nWhere gleak's time goes: the mean in-kernel run time of each of its BPF programs per run \
         (`kernel.bpf_stats_enabled`, over one more `spawn` and `chan` of {} each, apart from the timed runs), \
         and its runs per goroutine spawned plus round trip. It excludes the trap and the dispatch to the program. The BPF floor's `floor_count` \
         is the least a program costs here.\n",
        env.args.goroutines
    );
    let _ = writeln!(s, "| mode | program | runs per spawn + round trip | ns per run |");
    let _ = writeln!(s, "|---|---|---|---|");
    for r in rows.iter().filter(|r| !r.programs.is_empty()) {
        for (name, per_life, ns_per_run) in &r.programs {
            let _ = writeln!(s, "| {} | `{name}` | {per_life:.2} | {ns_per_run:.0} |", r.mode);
        }
    }
    s
}

/// The in-kernel run time of gleak's BPF programs (`kernel.bpf_stats_enabled`).
mod progstats {
    use std::collections::HashMap;

    use anyhow::{Context, Result};
    use aya::{
        programs::loaded_programs,
        sys::{enable_stats, Stats},
    };

    /// gleak's programs' names begin so (the kernel keeps 15 characters of a name).
    const PREFIXES: [&str; 3] = ["goroutine_", "process_exit", "floor_count"];

    /// Program id → (name, runs, run time in ns).
    fn snapshot() -> HashMap<u32, (String, u64, u64)> {
        loaded_programs()
            .flatten()
            .filter_map(|p| {
                let name = p.name_as_str()?.to_string();
                PREFIXES
                    .iter()
                    .any(|pre| name.starts_with(pre))
                    .then(|| (p.id(), (name, p.run_count(), p.run_time().as_nanos() as u64)))
            })
            .collect()
    }

    /// Runs `work` (which lives through `lives` goroutines) with run-time stats on:
    /// per program, runs per goroutine life and mean ns per run.
    pub fn measure(lives: u64, work: impl FnOnce() -> Result<()>) -> Result<Vec<(String, f64, f64)>> {
        let stats = enable_stats(Stats::RunTime).context("enabling BPF run-time stats")?;
        let before = snapshot();
        work()?;
        let after = snapshot();
        drop(stats);
        let mut out: Vec<(String, f64, f64)> = after
            .into_iter()
            .filter_map(|(id, (name, runs, ns))| {
                let (_, runs0, ns0) = before.get(&id).cloned().unwrap_or_default();
                let runs = runs.checked_sub(runs0).filter(|&r| r > 0)?;
                Some((name, runs as f64 / lives.max(1) as f64, ns.saturating_sub(ns0) as f64 / runs as f64))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// gleak's counting-only program (`gleak-ebpf/src/floor.rs`) at the floor's
/// sites: the trap, the dispatch to a BPF program and the least a program does.
mod bpf_floor {
    use std::{num::NonZeroU32, path::Path};

    use anyhow::{Context, Result};
    use aya::{
        maps::PerCpuArray,
        programs::{
            uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
            UProbe,
        },
        Ebpf,
    };

    const PROGRAM: &str = "floor_count";

    /// Detached when dropped.
    pub struct CountingProbes {
        ebpf: Ebpf,
    }

    impl CountingProbes {
        pub fn attach(bin: &Path, pid: u32, offsets: &[u64]) -> Result<CountingProbes> {
            let mut ebpf = Ebpf::load(gleak::tracing::probes::ebpf_object()?).context("loading gleak's eBPF object")?;
            let prog: &mut UProbe =
                ebpf.program_mut(PROGRAM).context("no floor_count program in the eBPF object")?.try_into()?;
            prog.load().context("loading floor_count")?;
            let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("PID 0")?);
            for &offset in offsets {
                let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie: None };
                prog.attach(point, bin, scope).with_context(|| format!("attaching floor_count at {offset:#x}"))?;
            }
            Ok(CountingProbes { ebpf })
        }

        /// The program's runs so far, all CPUs.
        pub fn hits(&self) -> Result<u64> {
            let map = self.ebpf.map("FLOOR_HITS").context("no FLOOR_HITS map")?;
            let hits = PerCpuArray::<_, u64>::try_from(map)?;
            Ok(hits.get(&0, 0)?.iter().sum())
        }
    }
}

/// Bare uprobes through tracefs, with no program attached: the floor.
mod tracefs {
    use std::{fs, path::Path};

    use anyhow::{bail, Context, Result};

    const ROOT: &str = "/sys/kernel/tracing";
    const GROUP: &str = "gleakbench";

    pub struct Uprobes {
        names: Vec<String>,
        tracing_was: String,
    }

    impl Uprobes {
        /// Bare uprobes at the file offsets of `bin`, enabled, with tracing off
        /// (the probes fire, nothing is recorded).
        pub fn create(bin: &Path, offsets: &[u64]) -> Result<Uprobes> {
            if !Path::new(ROOT).join("uprobe_events").exists() {
                let status = std::process::Command::new("mount").args(["-t", "tracefs", "nodev", ROOT]).status()?;
                if !status.success() {
                    bail!("cannot mount tracefs at {ROOT}");
                }
            }
            let tracing_was = fs::read_to_string(format!("{ROOT}/tracing_on")).unwrap_or_else(|_| "1".into());
            fs::write(format!("{ROOT}/tracing_on"), "0")?;
            let mut u = Uprobes { names: Vec::new(), tracing_was };
            for (i, off) in offsets.iter().enumerate() {
                let name = format!("p{i}");
                append(&format!("p:{GROUP}/{name} {}:{off:#x}", bin.display()))
                    .with_context(|| format!("creating uprobe {GROUP}/{name}"))?;
                u.names.push(name);
            }
            fs::write(format!("{ROOT}/events/{GROUP}/enable"), "1")?;
            Ok(u)
        }

        /// Hits of every probe so far (uprobe_profile).
        pub fn hits(&self) -> Result<u64> {
            let profile = fs::read_to_string(format!("{ROOT}/uprobe_profile"))?;
            Ok(profile
                .lines()
                .filter(|l| self.names.iter().any(|n| l.split_whitespace().nth(1) == Some(n.as_str())))
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .sum())
        }
    }

    fn append(line: &str) -> Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(format!("{ROOT}/uprobe_events"))?;
        writeln!(f, "{line}")?;
        Ok(())
    }

    impl Drop for Uprobes {
        fn drop(&mut self) {
            let _ = fs::write(format!("{ROOT}/events/{GROUP}/enable"), "0");
            for n in &self.names {
                let _ = append(&format!("-:{GROUP}/{n}"));
            }
            let _ = fs::write(format!("{ROOT}/tracing_on"), self.tracing_was.trim());
        }
    }
}
