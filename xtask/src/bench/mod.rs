//! `cargo xtask bench`: what gleak costs, measured side by side in one run and
//! written to BENCHMARKS.md (machine, kernel, Go version, how to reproduce).
//!
//! Sections (`--only a,b`): `overhead` (per goroutine and per park: untraced, the
//! bare-uprobe floor at gleak's own probe sites, each gleak mode), `intake`
//! (events a second the user side sustains, its CPU per million events), `attach`
//! (attach and first-report time, peak RSS on large real binaries and with 100k
//! goroutines), `pause` (the longest stall of a target with 100k goroutines while
//! gleak attaches and reports, against pprof's debug=2 dump), `proof` (its time
//! and memory per GiB of heap), `audit` (each tier's cost per process per scan, the
//! target's slowdown, memory over a churn of short-lived processes), `soak`
//! (attach/detach cycles, some ended by SIGKILL, on a target that checks itself),
//! `arm64` (the overhead workload in an arm64 VM under QEMU's TCG, untraced and
//! under gleak side by side: ratios only, emulated timings are not a real core's).
//!
//! A full run writes the whole file; `--only` replaces its sections in place
//! (each from its `## ` heading to the next) and keeps the rest as it was.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{build_gleak, cache_dir, go_build, newest_go, root, step};

mod arm64;
mod attach;
mod audit;
mod intake;
mod overhead;
mod pause;
mod proof;
mod soak;

/// What to measure and how much.
pub struct BenchArgs {
    pub goroutines: u64,
    pub soak_cycles: u32,
    pub only: Vec<String>,
}

/// What every section needs.
pub struct Env {
    pub gleak: PathBuf,
    pub go: PathBuf,
    pub go_version: String,
    pub args: BenchArgs,
}

impl Env {
    /// Builds `xtask/bench/<name>.go` with the newest toolchain.
    pub fn build(&self, name: &str) -> Result<PathBuf> {
        let bin = cache_dir().join("bench").join(name);
        std::fs::create_dir_all(bin.parent().unwrap())?;
        go_build(&self.go, &root().join("xtask/bench").join(format!("{name}.go")), &bin)?;
        Ok(bin)
    }

    /// Builds `tests/fixtures/<name>.go` with the newest toolchain.
    pub fn fixture(&self, name: &str) -> Result<PathBuf> {
        let bin = cache_dir().join("bench").join(name);
        std::fs::create_dir_all(bin.parent().unwrap())?;
        go_build(&self.go, &root().join("tests/fixtures").join(format!("{name}.go")), &bin)?;
        Ok(bin)
    }
}

/// One section of BENCHMARKS.md: measures and returns its markdown.
type Section = fn(&Env) -> Result<String>;

pub fn run(args: BenchArgs) -> Result<()> {
    let gleak = build_gleak()?;
    let go = newest_go()?;
    let go_version = Command::new(&go)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let env = Env { gleak, go, go_version, args };
    let wanted = |name: &str| env.args.only.is_empty() || env.args.only.iter().any(|o| o == name);
    let mut doc = header(&env);
    let sections: [(&str, Section); 8] = [
        ("overhead", overhead::run),
        ("intake", intake::run),
        ("attach", attach::run),
        ("pause", pause::run),
        ("proof", proof::run),
        ("audit", audit::run),
        ("soak", soak::run),
        ("arm64", arm64::run),
    ];
    if let Some(unknown) = env.args.only.iter().find(|o| !sections.iter().any(|(name, _)| name == o)) {
        let names: Vec<&str> = sections.iter().map(|(name, _)| *name).collect();
        bail!("--only {unknown}: no such section (there are {})", names.join(", "));
    }
    let out = root().join("BENCHMARKS.md");
    // `--only`: the other sections stay as the last run wrote them.
    let mut previous = match env.args.only.is_empty() {
        true => None,
        false => std::fs::read_to_string(&out).ok(),
    };
    for (name, section) in sections {
        if !wanted(name) {
            continue;
        }
        step(&format!("bench: {name}"));
        let text = section(&env).with_context(|| format!("bench section {name}"))?;
        println!("{text}");
        match &mut previous {
            Some(file) => *file = splice_section(file, &text),
            None => {
                doc.push_str(&text);
                doc.push('\n');
            }
        }
    }
    std::fs::write(&out, previous.unwrap_or(doc))?;
    step(&format!("wrote {}", out.display()));
    Ok(())
}

/// `file` with `section` (markdown starting with its `## ` heading) in place of
/// the section of the same heading, up to the next `## ` heading; appended when
/// the file has none.
fn splice_section(file: &str, section: &str) -> String {
    let heading = section.lines().next().unwrap_or_default();
    let section = format!("{}\n\n", section.trim_end());
    let starts: Vec<usize> = std::iter::once(0)
        .chain(file.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| file[i..].starts_with("## "))
        .collect();
    let Some(&start) = starts.iter().find(|&&i| file[i..].lines().next() == Some(heading)) else {
        return format!("{}\n\n{section}", file.trim_end()).trim_end().to_string() + "\n";
    };
    let end = starts.iter().copied().find(|&i| i > start).unwrap_or(file.len());
    let spliced = format!("{}{section}{}", &file[..start], &file[end..]);
    spliced.trim_end().to_string() + "\n"
}

fn header(env: &Env) -> String {
    use procfs::Current;
    let cpu = procfs::CpuInfo::current()
        .ok()
        .and_then(|info| info.model_name(0).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = procfs::Meminfo::current().map_or(0.0, |m| m.mem_total as f64 / (1u64 << 30) as f64);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "# gleak benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench{}` (run it as root; every number below comes from one run, side by side). \
         Virtual machines are noisy: read the ratios.\n",
        if env.args.only.is_empty() { String::new() } else { format!(" --only {}", env.args.only.join(",")) }
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| machine | {cores} × {cpu}, {mem_gib:.0} GiB |");
    let _ = writeln!(s, "| kernel | {kernel} |");
    let _ = writeln!(s, "| Go | {} |", env.go_version);
    let _ = writeln!(s, "| date | {} |", humantime_date());
    let _ = writeln!(s);
    s
}

fn humantime_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A Go program driven by lines on stdin, answering one line each.
pub struct Driven {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driven {
    /// Starts `bin args` and waits for its "ready" line.
    pub fn start(bin: &Path, args: &[&str]) -> Result<Driven> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready)?;
        if !ready.starts_with("ready") {
            bail!("{} said {ready:?} instead of ready", bin.display());
        }
        Ok(Driven { child, stdin, stdout })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command, returns the answer line.
    pub fn ask(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}")?;
        let mut answer = String::new();
        self.stdout.read_line(&mut answer)?;
        Ok(answer.trim().to_string())
    }

    pub fn ask_f64(&mut self, line: &str) -> Result<f64> {
        let a = self.ask(line)?;
        a.split_whitespace().next().and_then(|v| v.parse().ok()).with_context(|| format!("{line:?} answered {a:?}"))
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gleak process started by a section.
pub struct Gleak {
    pub child: Child,
    pub started: Instant,
    /// When its banner ("tracing PID" / "auditing") came.
    pub attached: Option<Duration>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// How long gleak may take to print its banner.
const BANNER_TIMEOUT: Duration = Duration::from_secs(120);

impl Gleak {
    /// Starts `gleak args` and waits for the banner line containing `banner`.
    pub fn start(env: &Env, args: &[&str], banner: &str) -> Result<Gleak> {
        let mut cmd = Command::new(&env.gleak);
        cmd.args(args);
        Self::start_command(cmd, banner)
    }

    /// Starts a prepared gleak command (arguments, environment) and waits for the
    /// banner line containing `banner`.
    pub fn start_command(mut cmd: Command, banner: &str) -> Result<Gleak> {
        let started = Instant::now();
        let what = format!("{cmd:?}");
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting gleak")?;
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        // stderr drained on a thread of its own, its lines passed on.
        let (lines, banner_seen) = std::sync::mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut g = Gleak { child, started, attached: None, stdout: Some(stdout) };
        loop {
            match banner_seen.recv_timeout(BANNER_TIMEOUT) {
                Ok(line) if line.contains(banner) => break,
                Ok(_) => {}
                Err(_) => bail!("{what} printed no banner ({banner})"),
            }
        }
        g.attached = Some(g.started.elapsed());
        Ok(g)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_kib(self.pid()).map_or(0.0, |kib| kib as f64 / 1024.0)
    }

    /// CPU time (user + system) so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// Sends SIGINT and returns everything it printed on stdout.
    pub fn stop(self) -> Result<String> {
        signal(self.pid(), Signal::SIGINT);
        self.wait()
    }

    /// Waits for it to end by itself, watching its memory: its stdout and its peak
    /// resident memory in KiB (read while it runs: gone with the process).
    pub fn wait_watching_memory(mut self) -> Result<(String, u64)> {
        let mut peak = 0;
        while self.child.try_wait()?.is_none() {
            peak = peak.max(peak_rss_kib(self.pid()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((self.stdout.take().unwrap().join().unwrap_or_default(), peak))
    }

    /// Waits for it to end by itself; its stdout.
    pub fn wait(mut self) -> Result<String> {
        let _ = self.child.wait();
        Ok(self.stdout.take().unwrap().join().unwrap_or_default())
    }
}

impl Drop for Gleak {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON reports gleak printed, one per line.
pub fn reports(stdout: &str) -> Vec<Value> {
    stdout.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Sends `sig` to a child of ours (gone already: nothing to do).
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn status(pid: u32) -> Option<procfs::process::Status> {
    procfs::process::Process::new(pid as i32).and_then(|p| p.status()).ok()
}

/// A process's resident memory now, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status(pid)?.vmrss
}

/// A process's peak resident memory, in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status(pid)?.vmhwm
}

/// User + system CPU time of a process (utime + stime, /proc/PID/stat).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) else { return Duration::ZERO };
    Duration::from_secs_f64((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// The median of some samples.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `1.23 µs`, `456 ns`.
pub fn ns(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} µs", v / 1000.0)
    } else {
        format!("{v:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::splice_section;

    #[test]
    fn only_replaces_its_own_section() {
        let file = "# gleak benchmarks\n\nheader\n\n## A\n\nold a\n\n## B\n\nold b\n\n## C\n\nold c\n";
        assert_eq!(
            splice_section(file, "## B\n\nnew b\n| x |\n"),
            "# gleak benchmarks\n\nheader\n\n## A\n\nold a\n\n## B\n\nnew b\n| x |\n\n## C\n\nold c\n"
        );
        let last = splice_section(file, "## C\n\nnew c\n");
        assert!(last.ends_with("## B\n\nold b\n\n## C\n\nnew c\n"), "{last}");
        let appended = splice_section(file, "## D\n\nd\n");
        assert!(appended.starts_with(file.trim_end()) && appended.ends_with("old c\n\n## D\n\nd\n"), "{appended}");
        // A heading that merely begins like another is another section.
        let similar = splice_section("## A2\n\nx\n", "## A\n\ny\n");
        assert_eq!(similar, "## A2\n\nx\n\n## A\n\ny\n");
    }
}
