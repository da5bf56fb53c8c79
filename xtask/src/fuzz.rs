//! `cargo xtask fuzz`: the fuzz harness of `tests/tests/fuzz.rs` (mutated real Go
//! binaries through gleak's ELF, buildinfo, pclntab, module data, DWARF and
//! machine-code readers), run for longer than the test suite's 30 seconds.
//!
//! It builds the harness in release mode with overflow checks on, in a target
//! directory of its own (`target/fuzz`): an arithmetic overflow on a value read
//! from the file is then a failure too, as it is in a debug build, and the
//! ordinary release build is left alone.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{cache_dir, cargo, root, step};

pub fn run(seconds: u64, seed: Option<&str>) -> Result<()> {
    let started = Instant::now();
    step(&format!("fuzzing the binary readers for {seconds} s (release build with overflow checks, in target/fuzz)"));
    let mut cmd = cargo();
    cmd.args(["test", "--release", "-p", "gleak-tests", "--test", "fuzz", "--", "--nocapture"])
        .env("CARGO_TARGET_DIR", root().join("target/fuzz"))
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true")
        .env("GLEAK_FUZZ_SECONDS", seconds.to_string())
        // By time alone.
        .env("GLEAK_FUZZ_ITERATIONS", u64::MAX.to_string())
        .env("GLEAK_CACHE", cache_dir())
        .stdout(Stdio::piped());
    if let Some(seed) = seed {
        cmd.env("GLEAK_FUZZ_SEED", seed);
    }
    let mut child = cmd.spawn().context("running cargo test --test fuzz")?;
    let mut summary = None;
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(s) = line.strip_prefix("fuzz summary: ") {
            summary = Some(s.to_string());
        }
    }
    let status = child.wait()?;
    match summary {
        Some(s) => step(&format!("fuzz: {s} (total {:.0} s with the build)", started.elapsed().as_secs_f64())),
        None => step("fuzz: no summary (the harness did not finish; see above)"),
    }
    if !status.success() {
        bail!(
            "the fuzz run failed: {status}; failing inputs are under {}",
            cache_dir().join("fuzz-failures").display()
        );
    }
    Ok(())
}
