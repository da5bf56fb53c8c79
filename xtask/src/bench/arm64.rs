//! gleak's overhead on arm64, as ratios only: one boot of Debian's arm64 kernel
//! under QEMU's TCG (vmtest's machinery), the overhead section's workload built
//! for arm64, timed untraced and under `gleak attach` (default mode) in turn, a
//! few rounds. Emulated timings are not a real core's: the ratio of two
//! measured side by side in one guest is all that is kept.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{median, ns, Env};
use crate::{
    cache_dir, go_build_for, root,
    vmtest::{run_commands, sh_quote, CheckOutput, GuestArch, GuestCommand},
};

/// Goroutines per `spawn` and round trips per `chan`: TCG runs arm64 Go some
/// tens of times slower than the host, and each uprobe trap more slowly still.
const OPERATIONS: u64 = 100_000;
/// Rounds, each timing untraced then traced; the medians are kept.
const ROUNDS: usize = 7;
/// The workload's path in the guest.
const WORKLOAD: &str = "/vmtest/bench/workload";
/// The guest's limit for the whole measurement.
const TIMEOUT_S: u32 = 900;
const ARCH: GuestArch = GuestArch::Aarch64;
/// The workload prints nanoseconds per operation to 0.1 ns: each sample may
/// overstate its operation by this much.
const SAMPLE_ROUNDING_NS: f64 = 0.05;

/// Drives the workload through two FIFOs. Each round: `spawn` and `chan`
/// untraced, then gleak attached (default mode, as the overhead section runs it),
/// its banner awaited, the same two timed, gleak ended with SIGTERM (a normal end:
/// its last report) and that report printed. Lines: `sample MODE OP NS`,
/// `gleak-exit RC`, `report JSON`.
///
/// Each round's gleak writes files of its own: the shell truncates a redirect's
/// file in the forked child, and a poll that ran before that (one vCPU schedules
/// them either way) found the last round's banner and timed the workload while
/// the new gleak was still starting.
const DRIVER: &str = r#"W=$1 N=$2 ROUNDS=$3 D=/tmp/bench
mkdir -p $D && mkfifo $D/in $D/out || exit 1
"$W" <$D/in >$D/out 2>$D/err &
WPID=$!
exec 7>$D/in 8<$D/out
read -r ready <&8
[ "$ready" = ready ] || { echo "the workload said '$ready': $(cat $D/err)"; exit 1; }
ask() { echo "$2 $N" >&7; read -r ns <&8 || exit 1; echo "sample $1 $2 $ns"; }
r=0
while [ $r -lt $ROUNDS ]; do
  ask untraced spawn; ask untraced chan
  G=$D/gleak-$r
  /vmtest/gleak attach -p $WPID --json --interval 1h --no-proof >$G.out 2>$G.err &
  GPID=$!
  t=0
  until grep -q 'tracing PID' $G.err 2>/dev/null; do
    if ! kill -0 $GPID 2>/dev/null || [ $t -ge 1200 ]; then echo "gleak did not start: $(cat $G.err)"; exit 1; fi
    sleep 0.1; t=$((t + 1))
  done
  ask traced spawn; ask traced chan
  kill -TERM $GPID; wait $GPID; echo "gleak-exit $?"
  grep '^{' $G.out | tail -n 1 | sed 's/^/report /'
  r=$((r + 1))
done
kill $WPID"#;

pub fn run(env: &Env) -> Result<String> {
    let bin = cache_dir().join("bench").join(ARCH.goarch()).join("workload");
    std::fs::create_dir_all(bin.parent().unwrap())?;
    go_build_for(&env.go, &root().join("xtask/bench/workload.go"), &bin, Some(ARCH.goarch()))?;
    let command = GuestCommand {
        id: "overhead".into(),
        timeout_s: TIMEOUT_S,
        command: format!("/bin/sh -c {} sh {WORKLOAD} {OPERATIONS} {ROUNDS}", sh_quote(DRIVER)),
    };
    let vm = run_commands(ARCH, vec![(WORKLOAD.to_string(), bin)], &[command])?;
    let (_, output) = vm.outputs.first().context("the guest ran no measurement")?;
    let measured = Measured::parse(output, OPERATIONS, ROUNDS)?;
    Ok(render(env, &vm.kernel, vm.accel, &vm.machine, vm.secs, &measured))
}

/// The samples of one run, by mode (`untraced`, `traced`) and operation.
#[derive(Debug)]
struct Measured {
    samples: BTreeMap<(String, String), Vec<f64>>,
    /// Per traced round: goroutines gleak saw created, events lost.
    rounds: Vec<(u64, u64)>,
}

impl Measured {
    /// Reads the driver's lines; every round must have traced for real: gleak
    /// ended normally, was attached while its round's traced `spawn` and `chan`
    /// ran, and saw at least the `spawn`'s goroutines created.
    fn parse(out: &CheckOutput, operations: u64, rounds: usize) -> Result<Measured> {
        ensure!(out.rc == 0, "the guest's driver exited {}: {}{}", out.rc, out.stdout.trim(), out.stderr.trim());
        let mut samples: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        let mut traced = Vec::new();
        let mut attached_s = Vec::new();
        for line in out.stdout.lines() {
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            match word {
                "sample" => {
                    let parts: Vec<&str> = rest.split_whitespace().collect();
                    let [mode, op, value] = parts[..] else { bail!("malformed sample line {line:?}") };
                    let ns: f64 = value.parse().with_context(|| format!("{op} answered {value:?}"))?;
                    ensure!(ns.is_finite() && ns > 0.0, "{op} answered {value:?}");
                    samples.entry((mode.to_string(), op.to_string())).or_default().push(ns);
                }
                "gleak-exit" => ensure!(rest == "0", "gleak exited {rest} on SIGTERM: {}", out.stdout.trim()),
                "report" => {
                    let report: Value = serde_json::from_str(rest).context("gleak's last report is not JSON")?;
                    let created = report["totals"]["created"].as_u64().context("no totals.created in the report")?;
                    let lost = report["lost_events"].as_u64().context("no lost_events in the report")?;
                    let elapsed = report["elapsed_s"].as_f64().context("no elapsed_s in the report")?;
                    traced.push((created, lost));
                    attached_s.push(elapsed);
                }
                _ => {}
            }
        }
        for mode in ["untraced", "traced"] {
            for op in ["spawn", "chan"] {
                let n = samples.get(&(mode.to_string(), op.to_string())).map_or(0, Vec::len);
                ensure!(n == rounds, "{n} {mode} {op} samples, want {rounds}");
            }
        }
        ensure!(traced.len() == rounds, "{} reports from gleak, want {rounds}", traced.len());
        let traced_ns = |op: &str| samples.get(&("traced".to_string(), op.to_string())).cloned().unwrap_or_default();
        let timed_s = traced_ns("spawn")
            .into_iter()
            .zip(traced_ns("chan"))
            .map(|(spawn, chan)| (spawn + chan - 2.0 * SAMPLE_ROUNDING_NS) * operations as f64 / 1e9);
        for (round, (attached, timed)) in attached_s.iter().zip(timed_s).enumerate() {
            // gleak's clock starts once its probes are in, before its banner; the
            // samples were taken after the banner, on the same clock. Less time
            // attached than they took: the driver did not wait for this gleak.
            ensure!(
                *attached >= timed,
                "round {}: gleak was attached {attached:.3} s, less than the {timed:.3} s its traced spawn and chan \
                 took: they ran before it had attached",
                round + 1
            );
        }
        if let Some((created, _)) = traced.iter().find(|(created, _)| *created < operations) {
            bail!("gleak saw {created} goroutines created while {operations} were spawned: its probes did not fire");
        }
        Ok(Measured { samples, rounds: traced })
    }

    fn median(&self, mode: &str, op: &str) -> f64 {
        median(self.samples.get(&(mode.to_string(), op.to_string())).cloned().unwrap_or_default())
    }

    /// traced/untraced of each round, in order.
    fn round_ratios(&self, op: &str) -> Vec<f64> {
        let get = |mode: &str| self.samples.get(&(mode.to_string(), op.to_string())).cloned().unwrap_or_default();
        get("traced").iter().zip(get("untraced")).map(|(t, u)| t / u).collect()
    }
}

fn render(env: &Env, kernel: &str, accel: &str, machine: &str, secs: f64, m: &Measured) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## arm64 (QEMU {accel}, emulated)\n");
    let _ = writeln!(
        s,
        "**Emulated timings are not a real core's.** QEMU's TCG translates every arm64 instruction on the \
         x86-64 host, and a uprobe's trap into the kernel costs it differently from plain code than a real \
         core's does: neither the times below nor how they compare with the x86-64 rows above say what a \
         Graviton or Ampere core would measure. Only the ratio of the two runs side by side in one guest means \
         anything, and it says how gleak weighs on the workload in this guest, not on hardware.\n"
    );
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench --only arm64` on {}: one boot of Debian's `{kernel}` under QEMU {accel} \
         (`{machine}`; one vCPU, which gleak's user side shares with the target) on the x86-64 host above, \
         {secs:.0} s from QEMU's start to the guest's power-off. The workload is the overhead section's (`xtask/bench/workload.go`, \
         `GOARCH=arm64`, {}); in one process, {OPERATIONS} goroutines spawned and joined (`spawn`) and as many \
         unbuffered channel round trips (`chan`), {ROUNDS} rounds, each timing both untraced and then under \
         `gleak attach --no-proof` (default mode: creation and exit probes, creation stacks), attached anew \
         each round; medians. *extra/untraced* is gleak's cost above untraced over the untraced cost.\n",
        super::humantime_date(),
        env.go_version.split_whitespace().nth(2).unwrap_or("Go")
    );
    let _ = writeln!(
        s,
        "| operation | untraced | gleak default | traced/untraced | extra/untraced | traced/untraced per round |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (op, label) in [("spawn", "spawn+exit"), ("chan", "chan round trip (no probe on its path in this mode)")] {
        let (untraced, traced) = (m.median("untraced", op), m.median("traced", op));
        let per_round: Vec<String> = m.round_ratios(op).iter().map(|r| format!("{r:.2}")).collect();
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {:.2}× | {:.2}× | {} |",
            ns(untraced),
            ns(traced),
            traced / untraced,
            (traced - untraced) / untraced,
            per_round.join(", ")
        );
    }
    let created: Vec<String> = m.rounds.iter().map(|(c, _)| c.to_string()).collect();
    let lost: u64 = m.rounds.iter().map(|(_, l)| l).sum();
    let _ = writeln!(
        s,
        "\ngleak's last report of each round: {} goroutines seen created (each round's `spawn` makes {OPERATIONS}, \
         `chan` one), {lost} events lost in all.",
        created.join(", ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str) -> CheckOutput {
        CheckOutput { stdout: stdout.into(), ..CheckOutput::default() }
    }

    const REPORT: &str = r#"report {"elapsed_s":1.0,"totals":{"created":101,"exited":100},"lost_events":0}"#;

    fn round(spawn: (f64, f64), chan: (f64, f64), report: &str) -> String {
        format!(
            "sample untraced spawn {}\nsample untraced chan {}\nsample traced spawn {}\nsample traced chan {}\n\
             gleak-exit 0\n{report}\n",
            spawn.0, chan.0, spawn.1, chan.1
        )
    }

    #[test]
    fn medians_and_ratios_from_the_guest() {
        let stdout = [
            round((1000.0, 3000.0), (500.0, 510.0), REPORT),
            round((1100.0, 3100.0), (520.0, 500.0), REPORT),
            round((900.0, 2000.0), (480.0, 490.0), REPORT),
        ]
        .concat();
        let m = Measured::parse(&output(&stdout), 100, 3).unwrap();
        assert_eq!((m.median("untraced", "spawn"), m.median("traced", "spawn")), (1000.0, 3000.0));
        assert_eq!(m.round_ratios("spawn"), [3.0, 3100.0 / 1100.0, 2000.0 / 900.0]);
        assert_eq!(m.rounds, [(101, 0); 3]);
    }

    #[test]
    fn a_round_gleak_did_not_trace_is_refused() {
        let quiet = r#"report {"elapsed_s":1.0,"totals":{"created":1,"exited":0},"lost_events":0}"#;
        let stdout = [round((1.0, 2.0), (1.0, 1.0), REPORT), round((1.0, 2.0), (1.0, 1.0), quiet)].concat();
        let err = Measured::parse(&output(&stdout), 100, 2).unwrap_err().to_string();
        assert!(err.contains("did not fire"), "{err}");
        let missing = round((1.0, 2.0), (1.0, 1.0), "");
        assert!(Measured::parse(&output(&missing), 100, 1).unwrap_err().to_string().contains("0 reports"));
        let failed = round((1.0, 2.0), (1.0, 1.0), REPORT).replace("gleak-exit 0", "gleak-exit 1");
        assert!(Measured::parse(&output(&failed), 100, 1).is_err());
        let short = "sample untraced spawn 1\n";
        assert!(Measured::parse(&output(short), 100, 1).unwrap_err().to_string().contains("samples"));
        let dead = CheckOutput { rc: 137, ..output(&round((1.0, 2.0), (1.0, 1.0), REPORT)) };
        assert!(Measured::parse(&dead, 100, 1).is_err());
        let untimed = REPORT.replace(r#""elapsed_s":1.0,"#, "");
        let no_elapsed = round((1.0, 2.0), (1.0, 1.0), &untimed);
        assert!(Measured::parse(&output(&no_elapsed), 100, 1).unwrap_err().to_string().contains("elapsed_s"));
    }

    /// Rounds 1 and 2 of a run whose driver found round 1's banner in round 2:
    /// round 2's traced samples ran while its gleak was still starting (slowed
    /// by it, on the one vCPU), which attached 0.27 s before the end of 1.22 s of them.
    #[test]
    fn a_round_timed_before_its_gleak_attached_is_refused() {
        let attached =
            r#"report {"elapsed_s":3.092708144,"totals":{"created":100002,"exited":100001},"lost_events":0}"#;
        let late = r#"report {"elapsed_s":0.26808224,"totals":{"created":0,"exited":1},"lost_events":0}"#;
        let stdout =
            [round((3003.4, 25597.1), (3668.5, 3858.2), attached), round((2819.5, 6800.3), (3735.9, 5436.4), late)]
                .concat();
        let err = Measured::parse(&output(&stdout), 100_000, 2).unwrap_err().to_string();
        assert!(err.contains("round 2: gleak was attached 0.268 s, less than the 1.224 s"), "{err}");
        // Attached for exactly as long as the samples say: accepted, whatever their rounding.
        let exact = r#"report {"elapsed_s":1.22367,"totals":{"created":100001,"exited":100000},"lost_events":0}"#;
        let stdout = round((2819.5, 6800.3), (3735.9, 5436.4), exact);
        assert!(Measured::parse(&output(&stdout), 100_000, 1).is_ok());
    }
}
