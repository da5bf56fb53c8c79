//! `cargo xtask vmtest`: boots real Debian kernels in QEMU, one after another,
//! runs an end-to-end subset of gleak inside each (checks.rs) and prints a
//! table: kernel, what it stands for, one column per check. Exits non-zero on
//! any failure.
//!
//! `--arch aarch64` boots the same kernels built for arm64 under QEMU's TCG,
//! with arm64 Go fixtures and the arm64 gleak (`target/dist/gleak-aarch64-linux`).
//!
//! Layout: `arch` (what differs per guest architecture), `kernels` (Debian's
//! packages, found in the archive's indexes, cached), `initramfs` (the newc
//! writer), `qemu` (tools, accelerator, one VM), `guest` (the initramfs's
//! contents and the runner's frames), `checks` (what runs and how it is
//! judged). Everything cached lives under `$GLEAK_CACHE/vm/`.

mod arch;
mod checks;
mod guest;
mod initramfs;
mod kernels;
mod qemu;

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use gleak_tests::GoToolchain;

pub use self::{
    arch::GuestArch,
    guest::{sh_quote, CheckOutput},
};
use self::{
    checks::{manifest_capabilities, Plan, PlanOptions},
    guest::{write_initramfs, Event, GuestFiles, ResultsParser},
    kernels::{Archive, KernelPackage, KernelSpec, MATRIX},
    qemu::{Accel, RunningVm, Tools},
};
use crate::{bootstrap, cache_dir, dist, root, step};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccelChoice {
    /// KVM if it boots a guest here, else TCG.
    Auto,
    Kvm,
    Tcg,
}

pub struct VmtestArgs {
    pub arch: GuestArch,
    /// Only the checks that need no gleak (the guest runs the fixtures, uprobes fire).
    pub without_gleak: bool,
    pub kernels: Vec<String>,
    pub list: bool,
    pub accel: AccelChoice,
    pub refresh: bool,
}

/// The manifest whose capability set the least-privilege check runs with.
const MANIFEST: &str = "deploy/kubernetes/gleak-audit.yaml";
/// Time for a kernel to reach `/init` (2–3 s under TCG when it works).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

pub fn run(args: VmtestArgs) -> Result<()> {
    let started = Instant::now();
    let cache = cache_dir().join("vm");
    let archive = Archive::from_apt_sources(&cache, args.refresh)?;
    step("finding the kernels in the Debian archive's indexes");
    let arch = args.arch;
    let resolved: Vec<(&KernelSpec, Result<KernelPackage>)> =
        MATRIX.iter().map(|s| (s, archive.resolve(s, arch))).collect();
    let wanted: Vec<String> = match args.kernels.is_empty() {
        true => arch.default_kernels().iter().map(|k| k.to_string()).collect(),
        false => args.kernels.clone(),
    };
    let selected = select(&resolved, &wanted)?;
    if args.list {
        print_list(&selected, &cache, arch);
        return Ok(());
    }
    // Nothing to boot: say why before building anything.
    if selected.iter().all(|(_, package)| package.is_err()) {
        if let Some(why) = selected.iter().find_map(|(_, package)| package.as_ref().err()) {
            bail!("no kernel of the selection is available: {why:#}");
        }
    }

    bootstrap(&[])?;
    let tools = qemu::ensure_tools(arch, &archive)?;
    let options = PlanOptions { arch, with_gleak: !args.without_gleak };
    let (plan, initrd) = prepare_guest(&tools, &cache, &options)?;
    // Kernels first: a missing one is a row of its own, the others still run.
    let kernels: Vec<(&KernelSpec, Result<(KernelPackage, PathBuf)>)> = selected
        .into_iter()
        .map(|(spec, package)| {
            let fetched = match package {
                Ok(p) => p.fetch_vmlinuz(&cache).map(|vmlinuz| (p.clone(), vmlinuz)),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            };
            (*spec, fetched)
        })
        .collect();
    let probe_kernel = kernels.iter().find_map(|(_, k)| k.as_ref().ok()).map(|(_, vmlinuz)| vmlinuz.clone());
    let accel = match probe_kernel {
        Some(vmlinuz) if arch.kvm_possible() => choose_accel(args.accel, &tools, &vmlinuz, &cache)?,
        Some(_) if matches!(args.accel, AccelChoice::Kvm) => {
            bail!("--accel kvm: KVM cannot run an {} guest on this host", arch.name())
        }
        _ => Accel::Tcg,
    };

    let mut rows = Vec::new();
    for (i, (spec, kernel)) in kernels.iter().enumerate() {
        let label = match kernel {
            Ok((package, _)) => format!("{} ({})", spec.key, package.upstream()),
            Err(_) => spec.key.to_string(),
        };
        step(&format!("[{}/{}] {label}: {}", i + 1, kernels.len(), spec.stands_for));
        let row = match kernel {
            Ok((package, vmlinuz)) => {
                eprintln!("  {} {} under {}", package.image, package.version, accel.name());
                run_kernel(&tools, vmlinuz, &initrd, accel, &plan, &runs_dir(&cache, arch).join(spec.key))
            }
            Err(e) => RowResult::unavailable(&plan, &format!("{e:#}")),
        };
        rows.push((label, spec.stands_for, row));
    }

    print_table(&plan, &rows);
    let caps = match plan.checks.iter().any(|c| c.id.starts_with("caps-")) {
        true => format!("; caps = {} (from {MANIFEST})", plan.capabilities.join(", ")),
        false => String::new(),
    };
    println!(
        "\n{} {} kernel(s) under {} in {:.0}s{caps}; logs in {}",
        rows.len(),
        arch.name(),
        accel.name(),
        started.elapsed().as_secs_f64(),
        runs_dir(&cache, arch).display()
    );
    let failed: usize = rows.iter().map(|(_, _, r)| r.cells.iter().filter(|c| c.is_err()).count()).sum();
    let total = rows.len() * plan.checks.len();
    // The plain closing line CI systems read, as test runners end theirs.
    println!("vmtest: {} passed, {failed} failed", total - failed);
    if failed > 0 {
        bail!("{failed} of {total} checks failed");
    }
    Ok(())
}

/// Where each kernel's logs go: `runs/<kernel>` for x86-64, `runs/<arch>/<kernel>` for others.
fn runs_dir(cache: &Path, arch: GuestArch) -> PathBuf {
    match arch {
        GuestArch::X86_64 => cache.join("runs"),
        _ => cache.join("runs").join(arch.name()),
    }
}

/// The rows `--kernels` asks for, by key (`5.10`, `newest`) or version prefix (`7`, `7.3`).
fn select<'a>(
    resolved: &'a [(&'a KernelSpec, Result<KernelPackage>)],
    wanted: &[String],
) -> Result<Vec<&'a (&'a KernelSpec, Result<KernelPackage>)>> {
    if wanted.is_empty() {
        return Ok(resolved.iter().collect());
    }
    let matches = |w: &str, (spec, package): &(&KernelSpec, Result<KernelPackage>)| {
        spec.key == w || package.as_ref().is_ok_and(|p| p.upstream() == w || p.upstream().starts_with(&format!("{w}.")))
    };
    for w in wanted {
        if !resolved.iter().any(|row| matches(w, row)) {
            let keys: Vec<&str> = resolved.iter().map(|(s, _)| s.key).collect();
            bail!("--kernels {w}: no kernel of the matrix matches (it has {}); `--list` shows them", keys.join(", "));
        }
    }
    Ok(resolved.iter().filter(|row| wanted.iter().any(|w| matches(w, row))).collect())
}

fn print_list(rows: &[&(&KernelSpec, Result<KernelPackage>)], cache: &Path, arch: GuestArch) {
    for (spec, package) in rows {
        let what = match package {
            Ok(p) => format!(
                "{} {} ({}){}",
                p.image,
                p.version,
                spec.suite_for(arch),
                if p.is_cached(cache) { ", cached" } else { "" }
            ),
            Err(e) => format!("unavailable: {e:#}"),
        };
        println!("{:<8} {:<52} {what}", spec.key, spec.stands_for);
    }
}

/// The plan (fixtures, checks, the manifest's capabilities) and the initramfs
/// that carries it: the static gleak, the fixtures, busybox, setpriv.
fn prepare_guest(tools: &Tools, cache: &Path, options: &PlanOptions) -> Result<(Plan, PathBuf)> {
    let gleak = match options.with_gleak {
        true => Some(gleak_artifact(options.arch)?),
        false => None,
    };
    let (old_go, new_go) = two_toolchains()?;
    let manifest = root().join(MANIFEST);
    let capabilities = manifest_capabilities(
        &std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?,
    )
    .with_context(|| format!("reading the capability set of {MANIFEST}"))?;
    let plan = Plan::new(&old_go, &new_go, capabilities, options);
    let initrd = match options.arch {
        GuestArch::X86_64 => cache.join("initramfs.cpio.gz"),
        arch => cache.join(format!("initramfs-{}.cpio.gz", arch.name())),
    };
    step(&format!(
        "building the Go fixtures (Go {} and {}, GOARCH={}) and the initramfs",
        old_go.version,
        new_go.version,
        options.arch.goarch()
    ));
    let files = guest_files(tools, gleak.as_deref(), &plan, cache)?;
    write_initramfs(&initrd, &files, &plan.script(&files.files)?)?;
    Ok((plan, initrd))
}

/// The static gleak for `arch`, built by `cargo xtask dist`'s code for the dist
/// target of its triple.
fn gleak_artifact(arch: GuestArch) -> Result<PathBuf> {
    let Some(target) = dist::TARGETS.iter().find(|t| t.triple == arch.rust_triple()) else {
        bail!("`cargo xtask dist` builds no gleak for {} ({})", arch.name(), arch.rust_triple());
    };
    dist::build(target)
}

/// Debian's Go 1.19 (the oldest) and the newest toolchain under `$GLEAK_CACHE/go`.
fn two_toolchains() -> Result<(GoToolchain, GoToolchain)> {
    let all = gleak_tests::go_toolchains();
    match (all.first(), all.last()) {
        (Some(old), Some(new)) if all.len() >= 2 => Ok((old.clone(), new.clone())),
        _ => bail!("vmtest builds its fixtures with two Go toolchains; found {}: run `cargo xtask setup`", all.len()),
    }
}

/// gleak, the fixtures (and the dynamic loader a PIE one asks for), and setpriv
/// with its libraries where the capability checks run, at their guest paths.
fn guest_files(tools: &Tools, gleak: Option<&Path>, plan: &Plan, cache: &Path) -> Result<GuestFiles> {
    let arch = tools.arch;
    let mut files: Vec<(String, PathBuf)> =
        gleak.map(|g| ("/vmtest/gleak".to_string(), g.to_path_buf())).into_iter().collect();
    let fixtures_dir = match arch {
        GuestArch::X86_64 => cache.join("fixtures"),
        _ => cache.join("fixtures").join(arch.goarch()),
    };
    for fx in &plan.fixtures {
        files.push((fx.guest_path(), fx.build(&fixtures_dir, arch)?));
    }
    if plan.fixtures.iter().any(|fx| fx.variant == gleak_tests::Variant::Pie) {
        let (guest, host, package) = arch.pie_loader();
        files.push((guest.to_string(), qemu::ensure_host_file(host, package)?));
    }
    if arch.runs_capability_checks() && plan.checks.iter().any(|c| c.id.starts_with("caps-")) {
        files.extend(guest::with_libraries(Path::new(checks::SETPRIV))?);
    }
    Ok(GuestFiles { busybox: tools.busybox.clone(), files })
}

/// KVM when asked for or when it works; TCG otherwise, said in one line. KVM
/// is tried with a real boot: here /dev/kvm opens but nested KVM fails on the
/// guest kernel's first instructions.
fn choose_accel(choice: AccelChoice, tools: &Tools, vmlinuz: &Path, cache: &Path) -> Result<Accel> {
    if let AccelChoice::Tcg = choice {
        return Ok(Accel::Tcg);
    }
    let problem = qemu::kvm_device_problem().or_else(|| {
        let probe = cache.join("kvm-probe.cpio.gz");
        let files = GuestFiles { busybox: tools.busybox.clone(), files: Vec::new() };
        if let Err(e) = write_initramfs(&probe, &files, "") {
            return Some(format!("{e:#}"));
        }
        let end =
            boot(tools, vmlinuz, &probe, Accel::Kvm, &cache.join("runs/kvm-probe"), Duration::from_secs(10), |_| {});
        (!end.done).then(|| end.why_stopped.unwrap_or_else(|| "the probe VM did not finish".into()))
    });
    match (problem, choice) {
        (None, _) => {
            step("KVM boots a guest: using it");
            Ok(Accel::Kvm)
        }
        (Some(why), AccelChoice::Kvm) => bail!("--accel kvm: KVM does not work here: {why}"),
        (Some(why), _) => {
            step(&format!("KVM unusable ({}): using TCG, slower", why.lines().next().unwrap_or_default()));
            Ok(Accel::Tcg)
        }
    }
}

/// How one boot ended.
struct BootEnd {
    reached_init: bool,
    /// The plan ran to its end.
    done: bool,
    why_stopped: Option<String>,
}

/// Boots `vmlinuz` with `initrd` and feeds the runner's events to `on_event`
/// until the guest powers off, the kernel never reaches `/init` within
/// [`BOOT_TIMEOUT`], or the plan overruns `budget` after boot.
fn boot(
    tools: &Tools,
    vmlinuz: &Path,
    initrd: &Path,
    accel: Accel,
    logs: &Path,
    budget: Duration,
    mut on_event: impl FnMut(Event),
) -> BootEnd {
    let mut end = BootEnd { reached_init: false, done: false, why_stopped: None };
    let mut vm = match RunningVm::start(tools, vmlinuz, initrd, accel, logs) {
        Ok(vm) => vm,
        Err(e) => {
            end.why_stopped = Some(format!("{e:#}"));
            return end;
        }
    };
    let mut parser = ResultsParser::default();
    let started = Instant::now();
    let mut deadline = started + BOOT_TIMEOUT;
    loop {
        // Read after checking for exit, so that nothing written before it is missed.
        let exited = vm.exited().is_some();
        for event in parser.feed(&vm.read_results().unwrap_or_default()) {
            match &event {
                Event::Init { release } => {
                    end.reached_init = true;
                    deadline = Instant::now() + budget;
                    eprintln!("  {release} reached /init in {:.1}s", started.elapsed().as_secs_f64());
                }
                Event::Done => end.done = true,
                _ => {}
            }
            on_event(event);
        }
        if exited {
            if !end.done {
                end.why_stopped = Some(format!("the VM stopped early: {}\n{}", vm.last_words(), vm.tail(8)));
            }
            return end;
        }
        let failure = if accel == Accel::Kvm && vm.kvm_failed() {
            Some(format!("KVM internal error: {}\n{}", vm.last_words(), vm.tail(4)))
        } else if Instant::now() > deadline {
            let what = match end.reached_init {
                true => format!("the VM overran its {}s budget", budget.as_secs()),
                false => format!("no /init within {}s", BOOT_TIMEOUT.as_secs()),
            };
            Some(format!("{what}: {}\n{}", vm.last_words(), vm.tail(8)))
        } else {
            None
        };
        if let Some(why) = failure {
            end.why_stopped = Some(why);
            return end;
        }
        thread::sleep(POLL);
    }
}

/// One kernel's results: a cell per check, in the plan's order.
struct RowResult {
    cells: Vec<checks::Outcome>,
    banner: Option<String>,
    notes: Vec<String>,
    secs: f64,
}

impl RowResult {
    fn unavailable(plan: &Plan, why: &str) -> RowResult {
        RowResult {
            cells: plan.checks.iter().map(|_| Err(why.to_string())).collect(),
            banner: None,
            notes: vec![],
            secs: 0.0,
        }
    }
}

/// Boots one kernel (retrying once a boot that never reached `/init`: a TCG boot
/// of 6.12 oopses now and then) and judges each check as it finishes.
fn run_kernel(tools: &Tools, vmlinuz: &Path, initrd: &Path, accel: Accel, plan: &Plan, logs: &Path) -> RowResult {
    let started = Instant::now();
    let mut cells: Vec<Option<checks::Outcome>> = plan.checks.iter().map(|_| None).collect();
    let (mut banner, mut notes) = (None, Vec::new());
    let mut end = BootEnd { reached_init: false, done: false, why_stopped: None };
    for attempt in 1..=2 {
        end = boot(tools, vmlinuz, initrd, accel, logs, plan.budget(), |event| match event {
            Event::Note(note) => {
                eprintln!("  {note}");
                notes.push(note);
            }
            Event::Ready(fixture) => eprintln!("  fixture {fixture} ready"),
            Event::Finished { id, output } => {
                let Some(at) = plan.checks.iter().position(|c| c.id == id) else { return };
                let outcome = plan.checks[at].judge(&output);
                match &outcome {
                    Ok(summary) => eprintln!("  {id}: PASS in {}s: {summary}", output.secs),
                    Err(why) => eprintln!("  {id}: FAIL in {}s: {}", output.secs, shortened(why, 160)),
                }
                if banner.is_none() {
                    banner = output.stderr.lines().find(|l| l.starts_with("gleak: tracing")).map(str::to_string);
                }
                cells[at] = Some(outcome);
            }
            _ => {}
        });
        if end.reached_init || attempt == 2 {
            break;
        }
        eprintln!("  the kernel never reached /init ({}); retrying once", first_line(&end.why_stopped));
    }
    let missing = end.why_stopped.as_deref().map_or("the check did not run", first_line_str);
    let cells = cells.into_iter().map(|c| c.unwrap_or_else(|| Err(missing.to_string()))).collect();
    // The cells have the first line; the VM's last output is the context.
    if let Some((_, last_output)) = end.why_stopped.as_deref().and_then(|why| why.split_once('\n')) {
        notes.push(format!("the VM's last output:\n    {}", last_output.replace('\n', "\n    ")));
    }
    RowResult { cells, banner, notes, secs: started.elapsed().as_secs_f64() }
}

/// `text` cut to `max` characters: progress lines stay on one terminal line.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn first_line(text: &Option<String>) -> &str {
    text.as_deref().map_or("", first_line_str)
}

fn first_line_str(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The table on stdout, then per kernel: gleak's banner and every failure's reason.
fn print_table(plan: &Plan, rows: &[(String, &str, RowResult)]) {
    let mut header = vec!["kernel".to_string(), "stands for".to_string()];
    header.extend(plan.checks.iter().map(|c| c.id.clone()));
    header.push("time".into());
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, stands_for, row)| {
            let mut line = vec![label.clone(), stands_for.to_string()];
            line.extend(row.cells.iter().map(|c| if c.is_ok() { "PASS" } else { "FAIL" }.to_string()));
            line.push(format!("{:.0}s", row.secs));
            line
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().map(|l| l[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let render = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!();
    println!("{}", render(&header));
    for line in &lines {
        println!("{}", render(line));
    }
    for (label, _, row) in rows {
        println!("\n{label}:");
        if let Some(banner) = &row.banner {
            println!("  banner: {banner}");
        }
        for note in &row.notes {
            println!("  note: {note}");
        }
        // One line per distinct reason: a kernel gleak cannot load on fails every check alike.
        let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
        for (check, cell) in plan.checks.iter().zip(&row.cells) {
            let Err(why) = cell else { continue };
            match reasons.iter_mut().find(|(r, _)| r == why) {
                Some((_, ids)) => ids.push(&check.id),
                None => reasons.push((why, vec![&check.id])),
            }
        }
        for (why, ids) in reasons {
            println!("  {} FAIL: {why}", ids.join(", "));
        }
    }
}

/// A command for [`run_commands`]: run by the guest's runner as a check is, its
/// output handed back unjudged.
pub struct GuestCommand {
    /// The frame's name (no spaces).
    pub id: String,
    pub timeout_s: u32,
    /// Shell words for the runner's `check` function.
    pub command: String,
}

/// What one boot gave: the kernel and how it ran, and each command's output.
pub struct GuestRun {
    /// Debian's package and version, e.g. `linux-image-6.1.0-40-cloud-arm64 6.1.153-1`.
    pub kernel: String,
    pub accel: &'static str,
    /// QEMU's machine, CPU and vCPU arguments.
    pub machine: String,
    pub outputs: Vec<(String, CheckOutput)>,
    /// From QEMU's start to the guest's power-off.
    pub secs: f64,
}

/// Boots `arch`'s default kernel (`GuestArch::default_kernels`) once, under TCG
/// unless KVM runs this architecture, with its gleak at `/vmtest/gleak` and
/// `files` at their guest paths, and runs `commands` in turn: for work that is not
/// a check, such as `cargo xtask bench`'s arm64 section.
pub fn run_commands(arch: GuestArch, files: Vec<(String, PathBuf)>, commands: &[GuestCommand]) -> Result<GuestRun> {
    let cache = cache_dir().join("vm");
    let archive = Archive::from_apt_sources(&cache, false)?;
    let key = arch.default_kernels().first().context("no default kernel for this architecture")?;
    let spec = MATRIX.iter().find(|s| s.key == *key).context("the default kernel is not in the matrix")?;
    let package = archive.resolve(spec, arch)?;
    let vmlinuz = package.fetch_vmlinuz(&cache)?;
    bootstrap(&[])?;
    let tools = qemu::ensure_tools(arch, &archive)?;
    let mut guest = GuestFiles { busybox: tools.busybox.clone(), files };
    guest.files.push(("/vmtest/gleak".to_string(), gleak_artifact(arch)?));
    let mut script = String::from("# Written by cargo xtask (xtask/src/vmtest/mod.rs, run_commands).\n");
    for c in commands {
        script.push_str(&format!("check {} {} {}\n", c.id, c.timeout_s, c.command));
    }
    let initrd = cache.join(format!("initramfs-commands-{}.cpio.gz", arch.name()));
    write_initramfs(&initrd, &guest, &script)?;
    let accel = match arch.kvm_possible() {
        true => choose_accel(AccelChoice::Auto, &tools, &vmlinuz, &cache)?,
        false => Accel::Tcg,
    };
    let machine = match accel {
        Accel::Tcg => arch.tcg_args().join(" "),
        Accel::Kvm => arch.kvm_args().join(" "),
    };
    let budget = Duration::from_secs(commands.iter().map(|c| u64::from(c.timeout_s)).sum::<u64>() + 30);
    let mut outputs = Vec::new();
    let logs = runs_dir(&cache, arch).join("commands");
    let started = Instant::now();
    let end = boot(&tools, &vmlinuz, &initrd, accel, &logs, budget, |event| match event {
        Event::Note(note) => eprintln!("  {note}"),
        Event::Finished { id, output } => {
            eprintln!("  {id}: exited {} after {}s", output.rc, output.secs);
            outputs.push((id, output));
        }
        _ => {}
    });
    if !end.done {
        bail!(
            "{} {} under {}: {}; logs in {}",
            package.image,
            package.version,
            accel.name(),
            end.why_stopped.unwrap_or_else(|| "the plan did not finish".into()),
            logs.display()
        );
    }
    Ok(GuestRun {
        kernel: format!("{} {}", package.image, package.version),
        accel: accel.name(),
        machine,
        outputs,
        secs: started.elapsed().as_secs_f64(),
    })
}
