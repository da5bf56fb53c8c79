//! The reachability proof's cost: gleak's time and memory per GiB of target
//! heap, on heaps of pointer-holding objects with 1 000 leaked goroutines to find.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::{reports, Driven, Env, Gleak};

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
        let pid = target.pid().to_string();
        let args = ["attach", "-p", &pid, "--json", "--duration", "1s", "--interval", "1h"];
        let (stdout, peak) = Gleak::start(env, &args, "tracing PID")?.wait_watching_memory()?;
        let last = reports(&stdout).pop().context("no report")?;
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
