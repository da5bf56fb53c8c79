//! How many events a second the user side takes without loss, and its CPU per
//! million events: a workload spawning goroutines as fast as the machine lets it
//! (two spawners), traced with `--no-stacks` (the cheapest probes, the most events
//! a second), with the default ring buffer and with smaller ones (where loss
//! starts).

use std::{fmt::Write as _, process::Command, time::Instant};

use anyhow::{Context, Result};

use super::{cpu_time, reports, Driven, Env};

pub fn run(env: &Env) -> Result<String> {
    let bin = env.build("workload")?;
    let n = env.args.goroutines * 4;
    let mut s = String::new();
    let _ = writeln!(s, "## Event intake\n");
    let _ = writeln!(
        s,
        "{n} goroutines spawned by 2 spawners at once, traced with `--no-stacks`: two events per goroutine. \
         *gleak CPU* is the user side's (intake thread and all), from /proc. *capacity* is what one core \
         would take at that CPU cost per event. Smaller ring buffers (`GLEAK_RING_BUFFER_BYTES`) show \
         where loss starts: the intake thread empties the ring every 20 ms or when a quarter full.\n"
    );
    let _ = writeln!(
        s,
        "| ring buffer | events | events/s delivered | lost | gleak CPU per million events | capacity (one core) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for ring in [None, Some(1u32 << 20), Some(256 << 10), Some(64 << 10)] {
        let mut wl = Driven::start(&bin, &[])?;
        let pid = wl.pid().to_string();
        let mut cmd = Command::new(&env.gleak);
        cmd.args(["attach", "-p", &pid, "--json", "--interval", "1h", "--no-stacks", "--no-proof"]);
        if let Some(bytes) = ring {
            cmd.env("GLEAK_RING_BUFFER_BYTES", bytes.to_string());
        }
        let g = super::Gleak::start_command(cmd, "tracing PID")?;
        let cpu_before = cpu_time(g.pid());
        let started = Instant::now();
        wl.ask_f64(&format!("spawnpar {n} 2"))?;
        let elapsed = started.elapsed();
        let cpu = cpu_time(g.pid()).saturating_sub(cpu_before);
        let out = g.stop()?;
        let last = reports(&out).pop().context("no report")?;
        let events = last["totals"]["created"].as_u64().unwrap_or(0) + last["totals"]["exited"].as_u64().unwrap_or(0);
        let lost = last["lost_events"].as_u64().unwrap_or(0);
        let per_event = cpu.as_secs_f64() / events.max(1) as f64;
        let _ = writeln!(
            s,
            "| {} | {events} | {:.0} | {lost} | {:.2} s | {:.1} M/s |",
            ring.map_or("8 MiB (default)".to_string(), |b| format!("{} KiB", b >> 10)),
            events as f64 / elapsed.as_secs_f64(),
            per_event * 1e6,
            1e-6 / per_event.max(1e-12),
        );
    }
    Ok(s)
}
