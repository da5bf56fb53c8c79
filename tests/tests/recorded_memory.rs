//! gleak's reading of a target runs on recorded memory exactly as on the live
//! process: the goroutine table of a real Go program, read through a recording,
//! replays from the recording's bytes to the same goroutines, with the wait
//! reasons and creation lines the program's source says. (No eBPF: reading a
//! child's memory needs no privilege.)

use std::collections::BTreeMap;

use gleak::{
    process::{
        memory::{ProcessMemory, ReadMemory, RecordedMemory, Recording},
        snapshot::all_goroutines,
        target::Target,
    },
    runtime::debuginfo::RuntimeInfo,
};
use gleak_tests::*;

/// `mixed` leaks 3 goroutines per tick: one blocked in a chan send, one in
/// WaitGroup.Wait, one in a select; 8 ticks.
const TICKS: usize = 8;

#[test]
fn goroutines_read_through_a_recording_replay_the_same_from_its_bytes() {
    let toolchains = go_toolchains();
    let (oldest, newest) = (toolchains.first().cloned(), toolchains.last().cloned());
    let picked: Vec<GoToolchain> = oldest.into_iter().chain(newest).collect();
    for_each_of("recorded memory", &picked, |tc| {
        let fx = Fixture::build(tc, "mixed");
        let max = TICKS.to_string();
        let mut proc = fx.start_with_args(&["-max", &max, "-tick", "10ms"]);
        // The ticks take 80 ms; their short-lived goroutines are gone well before 2 s.
        std::thread::sleep(std::time::Duration::from_secs(2));
        proc.assert_running("before reading it");

        let target = Target::from_pid(proc.pid()).unwrap_or_else(|e| panic!("{fx}: {e}"));
        let info = RuntimeInfo::load(&target.binary).unwrap_or_else(|e| panic!("{fx}: {e}"));
        let table = info.goroutine_table.as_ref().unwrap_or_else(|e| panic!("{fx}: no goroutine table: {e}"));
        let live = ProcessMemory::new(proc.pid());
        let recording = Recording::new(&live);
        let seen = all_goroutines(&recording, table, &info.layout, target.load_bias).expect("goroutine table");
        let recorded = recording.into_recorded();
        // Only what was read is kept: the table, and one span of each g.
        assert!(recorded.len() < 64 * 1024, "{fx}: recorded {} bytes", recorded.len());

        let replay = RecordedMemory::from_bytes(&recorded.to_bytes()).expect("a recording reads back");
        let replayed = all_goroutines(&replay, table, &info.layout, target.load_bias).expect("replayed table");
        assert_eq!(replayed, seen, "{fx}: the replay differs from the live read");
        // The target is still running, recorded memory is not: reading past what
        // was recorded fails rather than inventing bytes.
        assert!(replay.read_u64(table.allgs.wrapping_add(target.load_bias) + 4096 * 1024).is_err());

        // What the replay says, against the source: the leaked goroutines by
        // wait reason and the line of the `go` statement that made them.
        let mut leaked: BTreeMap<(String, u32), usize> = BTreeMap::new();
        for (_, g) in &replayed {
            if !g.is_blocked() || g.gopc == 0 {
                continue;
            }
            let at = info.symbolizer.frames(g.gopc.wrapping_sub(target.load_bias) - 1);
            let Some(frame) = at.first() else { continue };
            if frame.file.ends_with("mixed.go") {
                *leaked.entry((info.wait_reasons.name(g.wait_reason).to_string(), frame.line)).or_default() += 1;
            }
        }
        let line = |marker| fx.marker_line(marker);
        // Go 1.24 gave WaitGroup.Wait a wait reason of its own.
        let wg_wait = if go_minor(tc) >= 24 { "sync.WaitGroup.Wait" } else { "semacquire" };
        let want: BTreeMap<(String, u32), usize> = [
            (("chan send".to_string(), line("LEAK:chan_send")), TICKS),
            ((wg_wait.to_string(), line("LEAK:wg_wait")), TICKS),
            (("select".to_string(), line("LEAK:ctx_never_cancelled")), TICKS),
        ]
        .into_iter()
        .collect();
        let mine: BTreeMap<(String, u32), usize> =
            leaked.into_iter().filter(|((_, l), _)| want.keys().any(|(_, w)| w == l)).collect();
        assert_eq!(mine, want, "{fx}: leaked goroutines by (wait reason, go statement line)");
    });
}

fn go_minor(tc: &GoToolchain) -> u32 {
    tc.version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0)
}
