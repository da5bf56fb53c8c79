//! What `gleak audit` costs: gleak's CPU per process per scan in each tier, the
//! slowdown of a process audited in tier 1, and gleak's memory while hundreds of
//! short-lived Go processes come and go.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{median, ns, rss_kib, Driven, Env, Gleak};

/// Processes per tier measurement.
const PROCESSES: usize = 10;
/// Scans per tier measurement.
const SCANS: u32 = 10;

fn audit_args<'a>(exes: &'a [String], duration: &'a str) -> Vec<&'a str> {
    let mut args = vec!["audit", "--interval", "1s", "--duration", duration, "--listen", "off"];
    for e in exes {
        args.extend(["--exe", e.as_str()]);
    }
    args
}

/// gleak's CPU per process per scan while auditing `PROCESSES` of `bin args`.
fn tier_cost(env: &Env, bin: &std::path::Path, args: &[&str]) -> Result<(Duration, f64)> {
    let targets: Vec<Driven> = (0..PROCESSES).map(|_| Driven::start(bin, args)).collect::<Result<_>>()?;
    let exes = vec![bin.display().to_string()];
    let duration = format!("{}s", SCANS + 1);
    let g = Gleak::start(env, &audit_args(&exes, &duration), "auditing")?;
    let cpu_before = g.cpu();
    std::thread::sleep(Duration::from_secs(u64::from(SCANS)));
    let cpu = g.cpu().saturating_sub(cpu_before);
    let rss = g.peak_rss_mib();
    g.wait()?;
    drop(targets);
    Ok((cpu / (PROCESSES as u32 * SCANS), rss))
}

pub fn run(env: &Env) -> Result<String> {
    let pool = env.fixture("pool")?;
    let leaky = env.fixture("chan_send")?;
    let workload = env.build("workload")?;
    let brief = env.fixture("gate_clean")?;
    let mut s = String::new();
    let _ = writeln!(s, "## `gleak audit`\n");

    // Tier 1: healthy processes, read from memory only.
    let (tier1, rss1) = tier_cost(env, &pool, &["-workers", "2000"])?;
    // Tier 2: leaking processes, with the uprobes and the proof.
    let (tier2, rss2) = tier_cost(env, &leaky, &[])?;
    let _ = writeln!(
        s,
        "gleak's CPU per process per scan, {PROCESSES} processes scanned every second for {SCANS} s: tier 1 on \
         healthy ones (`pool -workers 2000`: 2 000 idle goroutines each, read from memory), tier 2 on leaking \
         ones (`chan_send`: the uprobes, creation stacks and the reachability proof).\n"
    );
    let _ = writeln!(s, "| tier | gleak CPU per process per scan | gleak peak RSS |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(s, "| 1: memory reads | {:.2} ms | {rss1:.0} MiB |", tier1.as_secs_f64() * 1e3);
    let _ = writeln!(s, "| 2: uprobes + proof | {:.2} ms | {rss2:.0} MiB |", tier2.as_secs_f64() * 1e3);
    let _ = writeln!(s);

    // The target's slowdown in tier 1: the same workload, audited and not.
    let mut wl = Driven::start(&workload, &[])?;
    let n = env.args.goroutines;
    let sample = |wl: &mut Driven| -> Result<(f64, f64)> {
        let mut spawn = Vec::new();
        let mut chan = Vec::new();
        for _ in 0..5 {
            spawn.push(wl.ask_f64(&format!("spawn {n}"))?);
            chan.push(wl.ask_f64(&format!("chan {n}"))?);
        }
        Ok((median(spawn), median(chan)))
    };
    let (spawn0, chan0) = sample(&mut wl)?;
    let exes = vec![workload.display().to_string()];
    let g = Gleak::start(env, &audit_args(&exes, "1h"), "auditing")?;
    let (spawn1, chan1) = sample(&mut wl)?;
    g.stop()?;
    let _ = writeln!(
        s,
        "The target's slowdown in tier 1 (the overhead workload, median of 5, audited every second):\n\n\
         | | spawn+exit | chan round trip |\n|---|---|---|\n| not audited | {} | {} |\n| audited, tier 1 | {} ({:.2}×) | {} ({:.2}×) |\n",
        ns(spawn0),
        ns(chan0),
        ns(spawn1),
        spawn1 / spawn0,
        ns(chan1),
        chan1 / chan0
    );
    drop(wl);

    // Memory over a churn of short-lived processes.
    let long: Vec<Driven> = (0..3).map(|_| Driven::start(&pool, &[])).collect::<Result<_>>()?;
    let exes = vec![pool.display().to_string(), brief.display().to_string()];
    let g = Gleak::start(env, &audit_args(&exes, "1h"), "auditing")?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_start = rss_kib(g.pid()).context("gleak's RSS")?;
    let started = Instant::now();
    let mut ran = 0;
    let mut rss_mid = 0;
    while ran < 300 {
        // Two at a time, each living about 250 ms.
        let a = Command::new(&brief).stdout(Stdio::null()).spawn()?;
        let b = Command::new(&brief).stdout(Stdio::null()).spawn()?;
        for mut c in [a, b] {
            c.wait()?;
        }
        ran += 2;
        if ran == 150 {
            rss_mid = rss_kib(g.pid()).unwrap_or(0);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss_end = rss_kib(g.pid()).unwrap_or(0);
    g.stop()?;
    drop(long);
    let _ = writeln!(
        s,
        "gleak's memory while {ran} short-lived Go processes (`gate_clean`, about 250 ms each, two at a time) come \
         and go over {:.0} s, next to 3 long-lived ones, audited every second: resident memory {:.1} MiB after \
         the first scans, {:.1} MiB halfway, {:.1} MiB at the end.\n",
        started.elapsed().as_secs_f64(),
        rss_start as f64 / 1024.0,
        rss_mid as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    Ok(s)
}
