//! The reachability proof's cost: gleak's time and memory per GiB of target
//! heap, on heaps of pointer-holding objects with 1 000 leaked goroutines to find.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{peak_rss_kib, reports, Driven, Env};

pub fn run(env: &Env) -> Result<String> {
    let bin = env.build("bigheap")?;
    let mut s = String::new();
    let _ = writeln!(s, "## Reachability proof\n");
    let _ = writeln!(
        s,
        "A target whose heap is a linked list of 64-byte nodes with payloads (every word a pointer to \
         follow), reachable from a global, with 1 000 goroutines leaked on private channels. One report \
         (`gleak attach --duration 1s`): the proof reads the spans, marks from the roots, twice. Time and \
         gleak's peak memory (all of gleak, probes and symbols included) per GiB of in-use heap spans.\n"
    );
    let _ = writeln!(
        s,
        "| heap (in-use spans) | proven | read, both passes | proof time | per GiB of heap | gleak peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for mb in [256, 1024] {
        let target = Driven::start(&bin, &["-mb", &mb.to_string()])?;
        let mut child = Command::new(&env.gleak)
            .args(["attach", "-p", &target.pid().to_string(), "--json", "--duration", "1s", "--interval", "1h"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let gpid = child.id();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut { out }, &mut s);
            s
        });
        let mut peak = 0;
        while child.try_wait()?.is_none() {
            peak = peak.max(peak_rss_kib(gpid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        let last = reports(&reader.join().unwrap_or_default()).pop().context("no report")?;
        let p = &last["proof"];
        let heap = p["heap_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64;
        let ms = p["elapsed_ms"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| {:.2} GiB | {} | {:.2} GiB | {:.0} ms | {:.0} ms | {:.0} MiB |",
            heap,
            p["proven"],
            p["bytes_read"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64,
            ms,
            ms / heap.max(1e-9),
            peak as f64 / 1024.0
        );
    }
    Ok(s)
}
