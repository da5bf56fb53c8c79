//! arm64 (`GOARCH=arm64`) Go binaries, cross-built and read on this x86-64 host
//! as gleak reads them before attaching: the probe sites, the runtime's globals,
//! and stack walks over the binary's own frame tables. Checked against the Go
//! toolchain's own view of the same binary (`go tool objdump`, `go tool nm`), for
//! the oldest and the newest toolchain, plain, stripped and PIE. One test runs
//! a fixture under qemu-user and reads its live goroutines; the probes
//! themselves need an arm64 kernel (`cargo xtask vmtest --arch aarch64`).

use std::{collections::HashMap, path::Path};

use gleak::{
    binary::{
        globals::{self, FoundBy, GoroutineTable},
        GoBinary,
    },
    process::unwind::{pointer_ranges, FrameWalk, Program, WalkEnd},
    tracing::placement::{plan, ProbeSite, PROBE_CREATE_ARG2, PROBE_CREATE_RESULT, PROBE_EXIT, PROBE_PARK_MCALL},
    AttachOptions,
};
use gleak_tests::{
    build_fixture_for_arch, build_go_program_for_arch, fixtures_dir, go_command, go_toolchains, GoToolchain, Variant,
};

/// The oldest and the newest toolchain present; every one with
/// `GLEAK_ARM64_ALL=1` (each first build cross-compiles the standard library).
fn toolchains() -> Vec<GoToolchain> {
    let all = go_toolchains();
    if std::env::var_os("GLEAK_ARM64_ALL").is_some() {
        return all;
    }
    let mut chosen: Vec<GoToolchain> = all.first().into_iter().chain(all.last()).cloned().collect();
    chosen.dedup();
    chosen
}

fn minor(tc: &GoToolchain) -> u32 {
    tc.version.split('.').nth(1).unwrap().parse().unwrap()
}

fn build(tc: &GoToolchain, variant: Variant) -> (std::path::PathBuf, GoBinary) {
    let path = build_fixture_for_arch(tc, "chan_send", variant, "arm64");
    let binary = GoBinary::open(&path, &path).unwrap_or_else(|e| panic!("{tc} {variant}: {e}"));
    assert_eq!(binary.arch.name(), "aarch64", "{tc} {variant}");
    (path, binary)
}

fn go_tool(tc: &GoToolchain, args: &[&str]) -> String {
    let out = go_command(tc).arg("tool").args(args).output().expect("go tool runs");
    assert!(out.status.success(), "go tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `go tool objdump` of one function: (address, instruction text) per line.
fn objdump(tc: &GoToolchain, bin: &Path, func: &str) -> Vec<(u64, String)> {
    let pattern = format!("^{}$", func.replace('.', "\\.").replace('(', "\\(").replace(')', "\\)").replace('*', "\\*"));
    let text = go_tool(tc, &["objdump", "-s", &pattern, bin.to_str().unwrap()]);
    text.lines()
        .filter(|l| !l.starts_with("TEXT"))
        .filter_map(|l| {
            let mut fields = l.split('\t').map(str::trim).filter(|f| !f.is_empty());
            let _line = fields.next()?;
            let addr = u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
            let _word = fields.next()?;
            Some((addr, fields.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// The addresses of `func`'s instructions whose text is `insn`.
fn addresses_of(tc: &GoToolchain, bin: &Path, func: &str, insn: &str) -> Vec<u64> {
    let lines = objdump(tc, bin, func);
    assert!(!lines.is_empty(), "{tc}: objdump shows no {func}");
    lines.into_iter().filter(|(_, text)| text == insn).map(|(addr, _)| addr).collect()
}

/// `go tool nm`: symbol → address.
fn nm(tc: &GoToolchain, bin: &Path) -> HashMap<String, u64> {
    go_tool(tc, &["nm", bin.to_str().unwrap()])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let _kind = f.next()?;
            Some((f.next()?.to_string(), addr))
        })
        .collect()
}

fn exit_function(tc: &GoToolchain) -> &'static str {
    if minor(tc) >= 22 {
        "runtime.gdestroy"
    } else {
        "runtime.goexit0"
    }
}

fn sites(binary: &GoBinary) -> Vec<ProbeSite> {
    plan(binary, AttachOptions { trace_parks: true, ..AttachOptions::default() }).expect("sites")
}

/// Each probe sits on the very BL `go tool objdump` shows, with the program that
/// reads the g from the role it has there; the classic sites are newproc1's RETs.
#[test]
fn probe_sites_are_the_calls_go_tool_objdump_shows() {
    for tc in toolchains() {
        for variant in [Variant::Plain, Variant::Pie] {
            let (path, binary) = build(&tc, variant);
            let exit_fn = exit_function(&tc);
            let at = |func: &str, insn: &str| {
                let found = addresses_of(&tc, &path, func, insn);
                assert!(!found.is_empty(), "{tc} {variant}: no {insn} in {func}");
                found
            };
            let exit_call = at(exit_fn, "CALL runtime.casgstatus(SB)")[0];
            let runqput_call = at("runtime.newproc.func1", "CALL runtime.runqput(SB)");
            let mcall_call = at("runtime.gopark", "CALL runtime.mcall(SB)");
            let got: Vec<(&str, u64)> = sites(&binary).iter().map(|s| (s.program, s.vaddr)).collect();
            assert_eq!(
                got,
                [(PROBE_EXIT, exit_call), (PROBE_PARK_MCALL, mcall_call[0]), (PROBE_CREATE_ARG2, runqput_call[0])],
                "{tc} {variant}"
            );
            let labels: Vec<String> = sites(&binary).into_iter().map(|s| s.label).collect();
            let func1 = binary.function("runtime.newproc.func1").unwrap().addr;
            assert!(
                labels[2] == format!("runtime.newproc.func1+{:#x} (CALL runtime.runqput)", runqput_call[0] - func1),
                "{tc} {variant}: {labels:?}"
            );

            let classic = AttachOptions { classic_sites: true, ..AttachOptions::default() };
            let rets: Vec<u64> =
                plan(&binary, classic).unwrap().into_iter().skip(1).map(|s| s.vaddr).collect::<Vec<_>>();
            assert_eq!(rets, at("runtime.newproc1", "RET"), "{tc} {variant}: newproc1's RETs");
        }
    }
}

/// With coroutines linked (Go 1.23+), creations through `newcoro` are seen at
/// the instruction right after its BL of `newproc1` (which the kernel accepts:
/// it is checked), as `go tool objdump` places that call.
#[test]
fn coroutine_creation_site_follows_the_call_of_newproc1() {
    let src = fixtures_dir().join("arm64/coro_pull.go");
    for tc in toolchains().into_iter().filter(|tc| minor(tc) >= 23) {
        let path = build_go_program_for_arch(&tc, &src, "coro_pull", Variant::Plain, "arm64");
        let binary = GoBinary::open(&path, &path).unwrap();
        // In newcoro, or its systemstack closure (Go 1.26+).
        let call = ["runtime.newcoro", "runtime.newcoro.func1"]
            .iter()
            .filter(|f| binary.function(f).is_some())
            .find_map(|f| addresses_of(&tc, &path, f, "CALL runtime.newproc1(SB)").first().copied())
            .unwrap_or_else(|| panic!("{tc}: no call of newproc1 in newcoro"));
        let coro: Vec<u64> = sites(&binary)
            .into_iter()
            .filter(|s| s.program == PROBE_CREATE_RESULT && s.label.contains("(after CALL runtime.newproc1)"))
            .map(|s| s.vaddr)
            .collect();
        assert_eq!(coro, [call + 4], "{tc}");
    }
}

/// A stripped binary has the same code: the same sites, found without symbols
/// (from `.gopclntab`).
#[test]
fn stripped_binaries_get_the_same_sites() {
    for tc in toolchains() {
        let (_, plain) = build(&tc, Variant::Plain);
        let (_, stripped) = build(&tc, Variant::Stripped);
        assert!(!stripped.has_symtab(), "{tc}: -s -w leaves no symbol table");
        assert_eq!(sites(&stripped), sites(&plain), "{tc}");
    }
}

/// `runtime.allgs`, `allglen`, `mheap_`, `semtable` and `gcController`, decoded from the
/// functions that use them (ADRP+ADD, ADRP+LDR, LDP, STLR; through REGTMP or,
/// in a PIE, any register), are where `go tool nm` says; in a stripped binary the
/// decoder alone finds them.
#[test]
fn globals_decoded_from_machine_code_are_where_nm_says() {
    for tc in toolchains() {
        // -w: the stripped binary's layout (DWARF moves data), with its symbols.
        for variant in [Variant::Plain, Variant::Pie, Variant::NoDwarf] {
            let (path, binary) = build(&tc, variant);
            let symbols = nm(&tc, &path);
            let sym = |name: &str| *symbols.get(name).unwrap_or_else(|| panic!("{tc}: nm lists no {name}"));
            let want = GoroutineTable { allgs: sym("runtime.allgs"), allglen: sym("runtime.allglen") };
            assert_eq!(globals::from_allgadd(&binary), Ok(want.clone()), "{tc} {variant}");
            assert_eq!(globals::from_mallocinit(&binary), Ok(sym("runtime.mheap_")), "{tc} {variant}");
            assert_eq!(globals::from_semacquire1(&binary), Ok(sym("runtime.semtable")), "{tc} {variant}");
            assert_eq!(globals::from_gcinit(&binary), Ok(sym("runtime.gcController")), "{tc} {variant}");
            if variant == Variant::Pie {
                // The module data's first word points at the function table: in a
                // PIE a relative relocation (R_AARCH64_RELATIVE) the loader fills.
                let pointers: Vec<u64> = binary.relocations_to(sym("runtime.pclntab")).collect();
                assert!(pointers.contains(&sym("runtime.firstmoduledata")), "{tc}: relocations {pointers:x?}");
                assert_eq!(binary.pointer_at(sym("runtime.firstmoduledata")), Some(sym("runtime.pclntab")), "{tc}");
            }
            if variant != Variant::NoDwarf {
                continue;
            }
            let (_, stripped) = build(&tc, Variant::Stripped);
            for section in [".data", ".bss", ".noptrbss"] {
                let at = |b: &GoBinary| b.section(section).map(|s| s.vaddr);
                assert_eq!(at(&stripped), at(&binary), "{tc}: -s -w and -w lay out {section} alike");
            }
            assert_eq!(globals::goroutine_table(&stripped), Ok((want, FoundBy::MachineCode)), "{tc}");
            assert_eq!(globals::mheap(&stripped), Ok((sym("runtime.mheap_"), FoundBy::MachineCode)), "{tc}");
            assert_eq!(globals::semtable(&stripped), Ok((sym("runtime.semtable"), FoundBy::MachineCode)), "{tc}");
            let gc_controller = Ok((sym("runtime.gcController"), FoundBy::MachineCode));
            assert_eq!(globals::gc_controller(&stripped), gc_controller, "{tc}");
        }
    }
}

/// The frame size a function's prologue allocates, read from its first
/// instructions as `go tool objdump` prints them (`MOVD.W R30, -N(RSP)`, or
/// `SUB $N, RSP, R20` for a large frame).
fn frame_size(tc: &GoToolchain, bin: &Path, func: &str) -> u64 {
    objdump(tc, bin, func)
        .into_iter()
        .take(8)
        .find_map(|(_, text)| {
            let n = text
                .strip_prefix("MOVD.W R30, -")
                .and_then(|t| t.strip_suffix("(RSP)"))
                .or_else(|| text.strip_prefix("SUB $").and_then(|t| t.strip_suffix(", RSP, R20")))?;
            n.parse().ok()
        })
        .unwrap_or_else(|| panic!("{tc}: no prologue in {func}"))
}

/// The return address of `func`'s first call of `callee`.
fn return_address(tc: &GoToolchain, bin: &Path, func: &str, callee: &str) -> u64 {
    addresses_of(tc, bin, func, &format!("CALL {callee}(SB)"))[0] + 4
}

/// A goroutine blocked in `result <- compute()`, laid out as the arm64 runtime
/// lays out its stack: each frame's return address at its sp, the caller's
/// frame right above (no return address pushed between, unlike x86-64). The
/// walk must find each caller from the binary's `pcsp` tables.
#[test]
fn walks_an_arm64_stack_laid_out_as_the_runtime_does() {
    for tc in toolchains() {
        let (path, binary) = build(&tc, Variant::Plain);
        let pcln = binary.pclntab().expect("pclntab").clone();
        let program = Program { pcln: &pcln, bias: 0, arch: binary.arch };
        let goexit = binary.function("runtime.goexit.abi0").or_else(|| binary.function("runtime.goexit")).unwrap();
        // Innermost first: (function, its pc, its frame size).
        let chain = [
            ("runtime.gopark", return_address(&tc, &path, "runtime.gopark", "runtime.mcall")),
            ("runtime.chansend", return_address(&tc, &path, "runtime.chansend", "runtime.gopark")),
            ("runtime.chansend1", return_address(&tc, &path, "runtime.chansend1", "runtime.chansend")),
            ("main.handleRequest.func1", return_address(&tc, &path, "main.handleRequest.func1", "runtime.chansend1")),
        ];
        let sp = 0xc000_100000u64;
        let mut stack = vec![0u8; 4096];
        let mut at = 0usize;
        let mut expected = Vec::new();
        for (i, (func, pc)) in chain.iter().enumerate() {
            expected.push((*pc, sp + at as u64));
            let caller_pc = chain.get(i + 1).map_or(goexit.addr + 4, |c| c.1);
            stack[at..at + 8].copy_from_slice(&caller_pc.to_le_bytes());
            at += frame_size(&tc, &path, func) as usize;
        }
        expected.push((goexit.addr + 4, sp + at as u64));
        let mut walk = FrameWalk::new(&stack, sp, chain[0].1, program);
        let got: Vec<(u64, u64)> = walk.by_ref().map(|f| (f.pc, f.sp)).collect();
        assert_eq!(got, expected, "{tc}");
        assert_eq!(walk.end(), Some(WalkEnd::Bottom), "{tc}");
        // The proof scans what the frames' stack maps mark, never a saved LR
        // (each frame's word at its sp) and nothing past the bottom frame.
        let ranges = pointer_ranges(&stack[..at], sp, chain[0].1, program);
        assert!(!ranges.is_empty(), "{tc}: chansend's frame holds live pointers at its gopark call");
        for (start, len) in &ranges {
            assert!(*start >= sp && start + len <= sp + at as u64, "{tc}: {ranges:x?} outside the stack");
            for (_, frame_sp) in &expected {
                assert!(!(*start..start + len).contains(frame_sp), "{tc}: {ranges:x?} covers the LR at {frame_sp:#x}");
            }
        }

        // A goroutine not yet run: at its function's entry, no frame, its return
        // address (goexit) still in the saved LR, and 0 at sp (newproc1 puts it there).
        let entry = binary.function("main.handleRequest.func1").unwrap().addr;
        let fresh = [0u8; 64];
        let got: Vec<(u64, u64)> =
            FrameWalk::with_link_register(&fresh, sp, entry, goexit.addr + 4, program).map(|f| (f.pc, f.sp)).collect();
        assert_eq!(got, [(entry, sp), (goexit.addr + 4, sp)], "{tc}: from the saved LR");
        // With no LR saved the runtime reads the slot at sp: the zero ends the walk.
        let mut walk = FrameWalk::new(&fresh, sp, entry, program);
        assert_eq!(walk.by_ref().map(|f| f.pc).collect::<Vec<_>>(), [entry], "{tc}");
        assert_eq!(walk.end(), Some(WalkEnd::Bottom), "{tc}");
    }
}

/// `qemu-aarch64-static` (Debian's qemu-user-static) runs arm64 programs on
/// this host with the guest's memory at the guest's own addresses inside its
/// process (guest base 0 for a static binary), so reading that process's memory
/// reads the Go program's: its real goroutines, stacks and `g.sched`.
const QEMU_USER: &str = "/usr/bin/qemu-aarch64-static";

/// The leaked workers of a live arm64 chan_send, run under qemu-user: found
/// through the `allgs` the decoder located, their `g` read with the offsets of
/// the arm64 binary's DWARF, and their real stacks unwound from `g.sched` to
/// `runtime.goexit` frame by frame as the arm64 runtime lays them out; the
/// proof's scan of each (its frames' stack maps) holds the channel it waits on.
#[test]
fn unwinds_live_arm64_goroutines_under_qemu_user() {
    use gleak::{
        process::{
            memory::{ProcessMemory, ReadMemory},
            snapshot::all_goroutines,
        },
        runtime::debuginfo::RuntimeInfo,
    };
    use gleak_tests::{is_strict, require_root, RunningGo};
    if !require_root() {
        return;
    }
    if !Path::new(QEMU_USER).exists() {
        assert!(!is_strict(), "{QEMU_USER} missing: apt-get install qemu-user-static");
        eprintln!("skipping: {QEMU_USER} missing (apt-get install qemu-user-static)");
        return;
    }
    const LEAKS: usize = 5;
    for tc in toolchains() {
        let (path, binary) = build(&tc, Variant::Plain);
        let info = RuntimeInfo::load(&binary).expect("arm64 DWARF");
        let table = info.goroutine_table.clone().expect("goroutine table");
        let pcln = binary.pclntab().expect("pclntab").clone();
        let program = Program { pcln: &pcln, bias: 0, arch: binary.arch };
        let max = LEAKS.to_string();
        let target = RunningGo::spawn(Path::new(QEMU_USER), &[path.to_str().unwrap(), "-max", &max], "ready chan_send");
        let mem = ProcessMemory::new(target.pid());
        let sudog = info.layout.blocked.expect("blocked layout from DWARF").sudog;
        let want =
            ["runtime.gopark", "runtime.chansend", "runtime.chansend1", "main.handleRequest.func1", "runtime.goexit"];
        let mut last = Vec::new();
        // Until every leak has happened (the program stops leaking at -max).
        for _ in 0..600 {
            let goroutines = all_goroutines(&mem, &table, &info.layout, 0).expect("allgs readable");
            last.clear();
            for (_, rec) in goroutines.iter().filter(|(_, r)| r.is_blocked() && r.sched_pc != 0) {
                let Some(len) = rec.stack_hi.checked_sub(rec.sched_sp).filter(|&l| l > 0 && l <= 1 << 20) else {
                    continue;
                };
                let mut stack = vec![0u8; len as usize];
                if mem.read(rec.sched_sp, &mut stack).is_err() {
                    continue;
                }
                let mut walk = FrameWalk::new(&stack, rec.sched_sp, rec.sched_pc, program);
                let mut frame_sps = Vec::new();
                // goexit is an assembly function: `runtime.goexit.abi0` from Go 1.21 on.
                let names: Vec<&str> = walk
                    .by_ref()
                    .inspect(|f| frame_sps.push(f.sp))
                    .map(|f| f.function.unwrap_or("?").trim_end_matches(".abi0"))
                    .collect();
                // The proof's scan of this stack (what the frames' maps mark live)
                // must hold the channel a sender waits on: chansend uses it after
                // gopark returns.
                let holds_channel = || {
                    let hchan = mem.read_u64(rec.waiting + u64::from(sudog.c)).ok().filter(|&c| c != 0)?;
                    let ranges = pointer_ranges(&stack, rec.sched_sp, rec.sched_pc, program);
                    // Never a saved LR (each frame's word at its sp, but the bottom's).
                    let covers_lr = ranges.iter().any(|&(start, len)| {
                        frame_sps[..frame_sps.len() - 1].iter().any(|sp| (start..start + len).contains(sp))
                    });
                    assert!(!covers_lr, "{tc}: {ranges:x?} covers a saved LR of frames at {frame_sps:x?}");
                    Some(ranges.iter().any(|&(start, len)| {
                        (start..start + len).step_by(8).any(|at| {
                            let off = (at - rec.sched_sp) as usize;
                            stack.get(off..off + 8).is_some_and(|w| u64::from_le_bytes(w.try_into().unwrap()) == hchan)
                        })
                    }))
                };
                let end = walk.end();
                let scanned = if names.contains(&"runtime.chansend") { holds_channel() } else { Some(true) };
                last.push((names.join(" < "), end.filter(|_| scanned == Some(true))));
            }
            if last.iter().filter(|(names, end)| *names == want.join(" < ") && *end == Some(WalkEnd::Bottom)).count()
                >= LEAKS
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let leaked = last.iter().filter(|(names, end)| *names == want.join(" < ") && *end == Some(WalkEnd::Bottom));
        assert_eq!(leaked.count(), LEAKS, "{tc}: blocked stacks {last:#?}");
        // main, blocked in its ticker's select, unwinds to the bottom too.
        assert!(
            last.iter().any(|(names, end)| names.contains("main.main") && *end == Some(WalkEnd::Bottom)),
            "{tc}: {last:#?}"
        );
        drop(target);
    }
}

/// A target built for another architecture than gleak's probes is refused before
/// any probe is attached (uprobes reading the wrong registers would never fire,
/// or fire with garbage), naming both architectures, with its exit code. The
/// process is a real x86-64 Go program whose binary, as gleak read it, is
/// swapped for the arm64 build of the same source (this host cannot run an
/// arm64 process natively). Needs root: the probes are loaded for real.
#[test]
fn a_target_of_another_architecture_is_refused() {
    if !gleak_tests::require_root() {
        return;
    }
    let tc = toolchains().pop().expect("a Go toolchain");
    let fx = gleak_tests::Fixture::build(&tc, "chan_send");
    let mut p = fx.start();
    let mut target = gleak::process::target::Target::from_pid(p.pid()).expect("the x86-64 target");
    let (arm64, binary) = build(&tc, Variant::Plain);
    target.binary = binary;
    let mut probes = gleak::tracing::probes::Probes::load().expect("probes load");
    let layout = gleak::runtime::debuginfo::RuntimeInfo::load(&target.binary).expect("arm64 runtime facts").layout;
    let err = match probes.attach(&target, layout.target_config(0), AttachOptions::default()) {
        Ok(_) => panic!("{}: probes attached for an arm64 binary", arm64.display()),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, gleak::error::Error::ForeignArch { .. }), "{text}");
    assert!(text.contains("aarch64 program") && text.contains("built for x86_64"), "{text}");
    assert_eq!(err.exit_code(), gleak::error::exit_code::NOT_TRACEABLE, "{text}");
    p.assert_running("after the refusal");
}
