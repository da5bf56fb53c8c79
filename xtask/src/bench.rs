//! `cargo xtask bench`: what tracing costs the target, measured side by side in one
//! run on one process: the same workload untraced and under each gleak mode.

use std::{
    io::{BufRead, BufReader, Write},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{build_gleak, cache_dir, go_build, newest_go, root, KillOnDrop};

/// gleak modes compared; `None` = untraced.
const MODES: &[(&str, Option<&[&str]>)] = &[
    ("untraced", None),
    ("default (create+exit, stacks)", Some(&[])),
    ("--classic-probes (entry/RET sites)", Some(&["--classic-probes"])),
    ("--no-stacks", Some(&["--no-stacks"])),
    ("--trace-parks", Some(&["--trace-parks"])),
];

struct Workload {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    fn measure(&mut self, kind: &str, n: u64) -> Result<f64> {
        // Best of three: the VM is noisy.
        let mut best = f64::MAX;
        for _ in 0..3 {
            writeln!(self.stdin, "{kind} {n}")?;
            let mut line = String::new();
            self.stdout.read_line(&mut line)?;
            best = best.min(line.trim().parse::<f64>().with_context(|| format!("workload said {line:?}"))?);
        }
        Ok(best)
    }
}

pub fn run(goroutines: u64) -> Result<()> {
    let gleak = build_gleak()?;
    let go = newest_go()?;
    let bin = cache_dir().join("bench-workload");
    go_build(&go, &root().join("xtask/bench/workload.go"), &bin)?;
    let mut child = KillOnDrop(Command::new(&bin).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?);
    let mut wl =
        Workload { stdin: child.0.stdin.take().unwrap(), stdout: BufReader::new(child.0.stdout.take().unwrap()) };
    let mut ready = String::new();
    wl.stdout.read_line(&mut ready)?;
    let pid = child.0.id();
    let chan_ops = goroutines;

    println!(
        "gleak overhead, {} ({}), {goroutines} goroutines / {chan_ops} channel round trips, best of 3",
        go.display(),
        bin.display()
    );
    println!(
        "{:<32} {:>14} {:>8} {:>16} {:>8} {:>6}",
        "mode", "spawn+exit ns", "ratio", "chan rtt ns", "ratio", "lost"
    );
    let mut base = (0.0, 0.0);
    for (name, args) in MODES {
        let mut tracer = None;
        if let Some(args) = args {
            let mut cmd = Command::new(&gleak);
            cmd.args(["attach", "-p", &pid.to_string(), "--json", "--interval", "1h"]).args(*args);
            let mut t = KillOnDrop(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?);
            // Attached once the banner is out.
            let mut err = BufReader::new(t.0.stderr.take().unwrap());
            let mut banner = String::new();
            err.read_line(&mut banner)?;
            if !banner.contains("tracing PID") {
                bail!("gleak did not attach: {banner}");
            }
            tracer = Some(t);
        }
        let spawn = wl.measure("spawn", goroutines)?;
        let chan = wl.measure("chan", chan_ops)?;
        let mut lost = String::from("-");
        if let Some(mut t) = tracer {
            // SIGINT: final report, clean detach.
            unsafe { libc_kill(t.0.id() as i32, 2) };
            let mut out = String::new();
            std::io::Read::read_to_string(t.0.stdout.as_mut().unwrap(), &mut out)?;
            let _ = t.0.wait();
            lost = out
                .lines()
                .last()
                .and_then(|l| l.split("\"lost_events\":").nth(1))
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .unwrap_or("?")
                .to_string();
            std::thread::sleep(Duration::from_millis(200));
        } else {
            base = (spawn, chan);
        }
        println!(
            "{:<32} {:>14.0} {:>7.1}x {:>16.0} {:>7.1}x {:>6}",
            name,
            spawn,
            spawn / base.0,
            chan,
            chan / base.1,
            lost
        );
    }
    Ok(())
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
