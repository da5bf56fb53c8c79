//! The soak: gleak attaches to and detaches from one target again and again, every
//! tenth time killed with SIGKILL instead of detaching, while the target checks its
//! own results (deep recursion that grows and moves its stacks, channel traffic).
//! At the end the target must be alive with every result right, and gleak's memory
//! must not grow from cycle to cycle.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{peak_rss_kib, signal, Driven, Env};

/// One cycle: gleak attached for 100 ms (or killed once attached). Its peak RSS in KiB.
fn cycle(env: &Env, pid: &str, kill: bool) -> Result<u64> {
    let mut child = Command::new(&env.gleak)
        .args(["attach", "-p", pid, "--json", "--duration", "100ms", "--interval", "1h"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let gpid = child.id();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("tracing PID") {
                let _ = tx.send(());
            }
        }
    });
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    if kill {
        rx.recv_timeout(Duration::from_secs(60))?;
        peak = peak_rss_kib(gpid).unwrap_or(0);
        signal(gpid, nix::sys::signal::Signal::SIGKILL);
    }
    loop {
        if let Some(kib) = peak_rss_kib(gpid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            if !kill && !status.success() {
                bail!("gleak ended with {status}");
            }
            return Ok(peak);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("a gleak cycle did not end in 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(env: &Env) -> Result<String> {
    let bin = env.build("selfcheck")?;
    let mut target = Driven::start(&bin, &[])?;
    let pid = target.pid().to_string();
    let cycles = env.args.soak_cycles.max(20);
    let started = Instant::now();
    let mut peaks = Vec::with_capacity(cycles as usize);
    for i in 0..cycles {
        let kill = i % 10 == 9;
        peaks.push(cycle(env, &pid, kill)?);
        if let Some(status) = target.child.try_wait()? {
            bail!("the target died during cycle {i}: {status}");
        }
    }
    let elapsed = started.elapsed();
    let report = target.ask("report")?;
    let mut words = report.split_whitespace();
    let (rounds, errors): (u64, u64) = (
        words.nth(1).and_then(|v| v.parse().ok()).unwrap_or(0),
        words.nth(1).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX),
    );
    if errors != 0 || rounds == 0 {
        bail!("the target's own check failed: {report}");
    }
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
    let (first, last) = (avg(&peaks[..10]), avg(&peaks[peaks.len() - 10..]));
    let mut s = String::new();
    let _ = writeln!(s, "## Soak: attach and detach, again and again\n");
    let _ = writeln!(
        s,
        "{cycles} cycles in {:.0} s on one target (`selfcheck`: workers summing through 3 000-deep recursion, \
         results over channels, each checked): gleak attaches, traces 100 ms, reports and detaches; every \
         tenth cycle it is killed with SIGKILL once attached instead. At the end the target is alive, \
         {rounds} rounds done, {errors} wrong results. gleak's peak memory per cycle: {first:.1} MiB over \
         the first ten, {last:.1} MiB over the last ten.\n",
        elapsed.as_secs_f64()
    );
    Ok(s)
}
