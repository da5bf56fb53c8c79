//! Attach time, first-report time and gleak's peak memory on large real
//! binaries: the Go toolchain's own `go` and `compile` (symbols, no DWARF), `go`
//! rebuilt with DWARF and stripped, and a target with 100 000 live goroutines.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{Env, Gleak};
use crate::{cache_dir, run as run_cmd};

/// A target started in a process group of its own, killed with the whole group
/// when dropped: `go run` leaves the program it built running otherwise.
struct Killed(Child);

impl Killed {
    fn spawn(cmd: &mut Command) -> Result<Killed> {
        use std::os::unix::process::CommandExt;
        Ok(Killed(cmd.process_group(0).spawn()?))
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        use nix::{sys::signal::killpg, unistd::Pid};
        let _ = killpg(Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gleak attached for 1 s: (time to its banner, time to its final report, peak RSS MiB).
fn measure(env: &Env, pid: u32) -> Result<(Duration, Duration, f64)> {
    let pid = pid.to_string();
    let g =
        Gleak::start(env, &["attach", "-p", &pid, "--json", "--duration", "1s", "--interval", "1h"], "tracing PID")?;
    let (started, attached) = (g.started, g.attached.unwrap_or_default());
    let (_, peak) = g.wait_watching_memory()?;
    // The final report comes 1 s (--duration) after the banner.
    let report = started.elapsed().saturating_sub(attached + Duration::from_secs(1));
    Ok((attached, report, peak as f64 / 1024.0))
}

/// A `go` command that stays alive: `go run` of a program that sleeps.
fn start_go(go: &Path, goroot: &Path) -> Result<Killed> {
    let dir = cache_dir().join("bench");
    let src = dir.join("sleeper.go");
    std::fs::write(&src, "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Hour) }\n")?;
    let child = Killed::spawn(
        Command::new(go)
            .args(["run"])
            .arg(&src)
            .env("GOROOT", goroot)
            .env("GO111MODULE", "off")
            .env("GOCACHE", cache_dir().join("gocache-bench"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    // Built and running its child once `go run` waits: give it time.
    std::thread::sleep(Duration::from_secs(5));
    Ok(child)
}

/// The toolchain's `compile`, held at its start: it blocks opening a FIFO.
fn start_compile(compile: &Path) -> Result<Killed> {
    let fifo = cache_dir().join("bench/blocked.go");
    let _ = std::fs::remove_file(&fifo);
    if let Err(e) = nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        bail!("mkfifo {}: {e}", fifo.display());
    }
    let child = Killed::spawn(
        Command::new(compile)
            .args(["-p", "main", "-o", "/dev/null"])
            .arg(&fifo)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(child)
}

pub fn run(env: &Env) -> Result<String> {
    let goroot: PathBuf = env.go.parent().and_then(Path::parent).context("GOROOT of the newest toolchain")?.into();
    let compile = std::fs::read_dir(goroot.join("pkg/tool"))?
        .flatten()
        .map(|d| d.path().join("compile"))
        .find(|p| p.is_file())
        .context("no compile in the toolchain")?;
    // `go` rebuilt from the same sources: with DWARF, and stripped.
    let go_dwarf = cache_dir().join("bench/go-dwarf");
    let go_stripped = cache_dir().join("bench/go-stripped");
    for (out, flags) in [(&go_dwarf, ""), (&go_stripped, "-s -w")] {
        if !out.exists() {
            run_cmd(
                Command::new(&env.go)
                    .args(["build", "-ldflags", flags, "-o"])
                    .arg(out)
                    .arg("cmd/go")
                    .env("GOCACHE", cache_dir().join("gocache-bench"))
                    .env("GOFLAGS", ""),
            )?;
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "## Attach, first report, memory\n");
    let _ = writeln!(
        s,
        "`gleak attach -p PID --duration 1s`: time to the banner (binary read, probes placed and attached, \
         goroutine table read), time from the end of the trace to the final report, and gleak's peak \
         resident memory.\n"
    );
    let _ = writeln!(s, "| target | binary | attach | final report | peak RSS |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    let size = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64);
    let mut row = |what: &str, bin: &Path, pid: u32| -> Result<()> {
        let (attach, report, rss) = measure(env, pid)?;
        let _ = writeln!(
            s,
            "| {what} | {:.0} MiB | {:.0} ms | {:.0} ms | {rss:.0} MiB |",
            size(bin),
            attach.as_secs_f64() * 1e3,
            report.as_secs_f64() * 1e3
        );
        Ok(())
    };
    let go = goroot.join("bin/go");
    for (what, bin) in [
        ("the toolchain's `go` (symbols, no DWARF)", &go),
        ("`go` rebuilt with DWARF", &go_dwarf),
        ("`go` rebuilt stripped (`-s -w`)", &go_stripped),
    ] {
        let p = start_go(bin, &goroot)?;
        row(what, bin, p.0.id())?;
    }
    let p = start_compile(&compile)?;
    row("the toolchain's `compile` (symbols, no DWARF)", &compile, p.0.id())?;
    drop(p);
    let pre = env.fixture("preattach")?;
    let mut target = super::Driven::start(&pre, &["-n", "100000"])?;
    row("100 000 live goroutines (fixture `preattach`)", &pre, target.pid())?;
    let _ = target.child.kill();
    Ok(s)
}
