//! Reading real Go binaries, one per toolchain: RET finding, DWARF offsets,
//! wait-reason tables and symbolization, checked against the Go sources of that
//! toolchain and the runtime facts in the project's reference notes.

use std::path::Path;

use gleak::{binary::GoBinary, runtime::debuginfo::RuntimeInfo};
use gleak_tests::{build_fixture, go_toolchains, GoToolchain};

fn load(tc: &GoToolchain) -> (GoBinary, RuntimeInfo) {
    let bin = build_fixture(tc, "chan_send");
    let binary = GoBinary::open(&bin, &bin).expect("fixture is a Go binary");
    let info = RuntimeInfo::load(&binary).expect("DWARF readable");
    (binary, info)
}

fn minor(tc: &GoToolchain) -> u32 {
    tc.version.split('.').nth(1).unwrap().parse().unwrap()
}

#[test]
fn go_version_from_buildinfo() {
    for tc in go_toolchains() {
        let (binary, _) = load(&tc);
        assert!(tc.matches_go_version(&binary.go_version.raw), "{tc}: read {}", binary.go_version);
        assert_eq!(binary.go_version.minor, minor(&tc));
    }
}

/// `runtime.newproc1` has exactly one RET in every release 1.19–1.27, and it must
/// be a real C3 at an instruction boundary (these fixtures are x86-64).
#[test]
fn finds_the_ret_of_newproc1() {
    for tc in go_toolchains() {
        let (binary, _) = load(&tc);
        let (sym, code) = binary.function_code("runtime.newproc1").unwrap();
        let rets = binary.arch.ret_offsets(code, sym.addr).expect("decodes");
        assert_eq!(rets.len(), 1, "{tc}: RETs at {rets:x?}");
        assert_eq!(code[rets[0] as usize], 0xc3, "{tc}");
        assert!(rets[0] > 16, "{tc}: RET too close to the entry");
    }
}

/// Offsets read from DWARF agree with the per-version layout table of the
/// reference notes (go_runtime.md §4), which was established independently.
#[test]
fn runtime_g_offsets_from_dwarf() {
    for tc in go_toolchains() {
        let (_, info) = load(&tc);
        let l = info.layout;
        let (goid, gopc, startpc, waitreason, status, curg, parent) = match minor(&tc) {
            19 | 20 => (0x98, 0x128, 0x138, 0xb0, 0x90, 0xc0, None),
            21 | 22 => (0x98, 0x118, 0x128, 0xb0, 0x90, 0xc0, Some(0x110)),
            23 | 24 => (0xa0, 0x120, 0x130, 0xb8, 0x98, 0xc0, Some(0x118)),
            25 => (0x98, 0x118, 0x128, 0xb0, 0x90, 0xb8, Some(0x110)),
            _ => (0x98, 0x120, 0x130, 0xb0, 0x90, 0xb8, Some(0x118)),
        };
        assert_eq!(
            (l.g_goid, l.g_gopc, l.g_startpc, l.g_waitreason, l.g_status, l.m_curg, l.g_parent_goid),
            (goid, gopc, startpc, waitreason, status, curg, parent),
            "{tc}: {l:?}"
        );
        assert_eq!((l.g_stack_lo, l.g_stack_hi, l.g_m), (0, 8, 0x30), "{tc}");
    }
}

/// Wait-reason names come from the binary; Go 1.26 renumbered them.
#[test]
fn wait_reason_names_from_the_binary() {
    for tc in go_toolchains() {
        let (binary, info) = load(&tc);
        let strings = binary.wait_reason_strings().expect("runtime.waitReasonStrings");
        let (chan_send, select, semacquire) = match minor(&tc) {
            m if m >= 26 => (20, 18, 13),
            25 => (15, 9, 19),
            _ => (15, 9, 18),
        };
        assert_eq!(strings[chan_send], "chan send", "{tc}");
        assert_eq!(info.wait_reasons.name(chan_send as u8), "chan send", "{tc}");
        assert_eq!(info.wait_reasons.name(select as u8), "select", "{tc}");
        assert_eq!(info.wait_reasons.name(semacquire as u8), "semacquire", "{tc}");
    }
}

/// The entry of `runtime.newproc1` symbolizes to its declaration line in the
/// toolchain's own `runtime/proc.go`.
#[test]
fn symbolizes_through_dwarf_line_tables() {
    for tc in go_toolchains() {
        let (binary, info) = load(&tc);
        let sym = binary.require_function("runtime.newproc1").unwrap();
        let frames = info.symbolizer.frames(sym.addr);
        let frame = frames.first().unwrap_or_else(|| panic!("{tc}: no frame"));
        assert_eq!(frame.function, "runtime.newproc1", "{tc}");
        assert!(frame.file.ends_with("runtime/proc.go"), "{tc}: {}", frame.file);
        let proc_go = std::fs::read_to_string(tc.goroot().join("src/runtime/proc.go")).unwrap();
        let decl = proc_go.lines().position(|l| l.starts_with("func newproc1(")).unwrap() as u32 + 1;
        assert_eq!(frame.line, decl, "{tc}");
        assert!(Path::new(&frame.file).is_absolute(), "{tc}");
    }
}

/// On every toolchain, probes land on the cheap CALL sites (one trap a hit), and
/// the classic sites (entry, RETs) remain available.
#[test]
fn probes_sit_on_calls_the_kernel_emulates() {
    use gleak::{tracing::placement::plan, AttachOptions};
    for tc in go_toolchains() {
        let (binary, _) = load(&tc);
        let opts = AttachOptions { trace_parks: true, ..AttachOptions::default() };
        let labels: Vec<String> = plan(&binary, opts).unwrap().into_iter().map(|s| s.label).collect();
        let exit_fn = if minor(&tc) >= 22 { "runtime.gdestroy+" } else { "runtime.goexit0+" };
        for want in [
            exit_fn,
            "(CALL runtime.casgstatus)",
            "runtime.newproc.func1+",
            "(CALL runtime.runqput)",
            "(CALL runtime.mcall)",
        ] {
            assert!(labels.iter().any(|l| l.contains(want)), "{tc}: no site with {want:?} in {labels:?}");
        }
        let classic = AttachOptions { classic_sites: true, ..opts };
        let labels: Vec<String> = plan(&binary, classic).unwrap().into_iter().map(|s| s.label).collect();
        assert!(labels.iter().any(|l| l.starts_with("runtime.newproc1+") && l.ends_with("(RET)")), "{tc}: {labels:?}");
        assert!(labels.contains(&"runtime.gopark".to_string()), "{tc}: {labels:?}");
    }
}

/// A goroutine is named by the function its `go` statement runs, as Go's
/// tracebacks name it: through the wrapper the compiler generates for `go f(x)`,
/// whether `f` is called or inlined there, in every release and without symbols
/// or DWARF, on x86-64 and (oldest and newest toolchain) arm64. Through a func
/// value the wrapper's code cannot tell, and a closure started as is needs no
/// seeing through.
#[test]
fn goroutines_are_named_through_go_statement_wrappers() {
    use gleak::binary::symbolize::Symbolizer;
    use gleak_tests::{build_fixture_for_arch, build_fixture_variant, fixture_source, marker_line_in, Variant};
    let source = fixture_source("go_statements");
    let expected = [
        ("GO:direct_call", Some("main.work")),
        ("GO:inlined", Some("main.small")),
        ("GO:method", Some("main.(*server).serve")),
        ("GO:func_value", None),
    ];
    let toolchains = go_toolchains();
    let arm64_on = [toolchains.first().cloned(), toolchains.last().cloned()];
    for tc in &toolchains {
        let arches: &[&str] = if arm64_on.contains(&Some(tc.clone())) { &["amd64", "arm64"] } else { &["amd64"] };
        for (&goarch, variant) in arches.iter().flat_map(|a| [(a, Variant::Plain), (a, Variant::Stripped)]) {
            let bin = match goarch {
                "amd64" => build_fixture_variant(tc, "go_statements", variant),
                _ => build_fixture_for_arch(tc, "go_statements", variant, goarch),
            };
            let binary = GoBinary::open(&bin, &bin).expect("fixture is a Go binary");
            let tc = format!("{tc} {goarch}");
            let pcln = binary.pclntab().expect(".gopclntab").clone();
            // Each wrapper of main.main, by the line of the `go` statement it serves.
            let mut wrappers = std::collections::BTreeMap::new();
            for (name, range) in pcln.functions() {
                if name.starts_with("main.main.") && pcln.is_wrapper(range.entry) {
                    let line = pcln.frames(range.entry).last().map_or(0, |f| f.line);
                    wrappers.insert(line, (name.to_string(), binary.started_function(range.entry)));
                }
            }
            for (marker, want) in expected {
                let line = marker_line_in(&source, marker);
                let Some((wrapper, started)) = wrappers.get(&line) else {
                    panic!("{tc} {variant}: no wrapper for {marker} (line {line}); wrappers: {wrappers:?}")
                };
                assert_eq!(started.as_deref(), want, "{tc} {variant}: {marker} starts {wrapper}");
            }
            // The closure is started as is: not a wrapper, nothing to see through.
            let closure_line = marker_line_in(&source, "GO:closure");
            assert!(!wrappers.contains_key(&closure_line), "{tc} {variant}: {wrappers:?}");
            let work = pcln.function("main.work").expect("main.work");
            assert!(!pcln.is_wrapper(work.entry), "{tc} {variant}");
            assert_eq!(binary.started_function(work.entry), None, "{tc} {variant}: not a wrapper");
        }
    }
}
