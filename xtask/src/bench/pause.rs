//! The longest stall a target with 100 000 goroutines sees while gleak attaches
//! and reports, against the machine's noise and against pprof's `debug=2`
//! goroutine dump (what the usual leak hunt takes, and a stop of the world).

use std::{fmt::Write as _, time::Instant};

use anyhow::Result;

use super::{median, Driven, Env, Gleak};

/// Rounds of gleak and noise, in turn: one longest stall is mostly the VM's luck
/// (with 5 rounds, the median of either moved by up to 2 ms from run to run).
const ROUNDS: usize = 9;

pub fn run(env: &Env) -> Result<String> {
    let bin = env.build("pausemeter")?;
    let mut target = Driven::start(&bin, &["-n", "100000"])?;
    let pid = target.pid().to_string();
    let (mut noise, mut gleak) = (Vec::new(), Vec::new());
    let mut windows = Vec::new();
    for _ in 0..ROUNDS {
        // gleak: attach (goroutine table read), three reports, the final one.
        target.ask("reset")?;
        let started = Instant::now();
        let g = Gleak::start(
            env,
            &["attach", "-p", &pid, "--json", "--interval", "1s", "--duration", "3s"],
            "tracing PID",
        )?;
        g.wait()?;
        let window = started.elapsed();
        gleak.push(target.ask_f64("max")?);
        // The machine's noise: the longest gap with nothing attached, over as long
        // a window (the longest of more time is longer by chance alone).
        target.ask("reset")?;
        std::thread::sleep(window);
        noise.push(target.ask_f64("max")?);
        windows.push(window.as_secs_f64());
    }
    // pprof's goroutine dump, debug=2.
    let answer = target.ask("pprof")?;
    let mut words = answer.split_whitespace().map(|w| w.parse::<f64>().unwrap_or(f64::NAN));
    let (took, pprof) = (words.next().unwrap_or(f64::NAN), words.next().unwrap_or(f64::NAN));
    let mut s = String::new();
    let _ = writeln!(s, "## Pause of the target\n");
    let _ = writeln!(
        s,
        "A target with 100 000 blocked goroutines measures its own longest stall (a goroutine sleeping \
         200 µs in a loop, the longest gap beyond that) while nothing is attached, while gleak attaches \
         and writes 4 reports (the goroutine table, every `g`, every blocked goroutine's stack and wait \
         object, the reachability proof), and while `runtime/pprof` writes the goroutine profile with \
         `debug=2` (`/debug/pprof/goroutine?debug=2`). {ROUNDS} rounds of the first two, in turn, each \
         noise window as long as the gleak run before it ({:.1} s on average): the median, and every \
         round's.\n",
        windows.iter().sum::<f64>() / windows.len().max(1) as f64
    );
    let _ = writeln!(s, "| | longest stall | rounds |");
    let _ = writeln!(s, "|---|---|---|");
    let row = |v: &[f64]| {
        let all: Vec<String> = v.iter().map(|us| format!("{:.1}", us / 1e3)).collect();
        format!("{:.1} ms | {} ms", median(v.to_vec()) / 1e3, all.join(", "))
    };
    let _ = writeln!(s, "| gleak attached, 4 reports | {} |", row(&gleak));
    let _ = writeln!(s, "| nothing attached (noise) | {} |", row(&noise));
    let _ = writeln!(s, "| pprof `debug=2` dump ({:.0} ms) | {:.1} ms | once |", took / 1e3, pprof / 1e3);
    Ok(s)
}
