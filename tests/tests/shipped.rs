//! The binaries people ship: every Go toolchain on the machine × every way of
//! building that changes what gleak can read (stripped, no DWARF, PIE, cgo with
//! gcc as the linker). Each traced end to end: the leak's `go` statement at its
//! file:line, its counts, its wait reason by name, the goroutines from before
//! attach, and a creation stack in the program's own sources.

use gleak::{
    binary::{globals, GoBinary},
    runtime::debuginfo::RuntimeInfo,
    tracing::placement::plan,
    AttachOptions,
};
use gleak_tests::*;

const LEAK_MARKER: &str = "LEAK:chan_send";

/// What a variant's runtime facts must come from.
fn expected_sources(variant: Variant) -> (&'static str, &'static str) {
    // (lines, goroutine table)
    match variant {
        Variant::Plain | Variant::Pie | Variant::CgoExternal => ("DWARF", "from symbols"),
        Variant::NoDwarf => (".gopclntab", "from symbols"),
        Variant::Stripped | Variant::CgoPieStripped => (".gopclntab", "from runtime.allgadd's code"),
    }
}

/// Without running anything: every variant yields the same runtime layout, the
/// same probe sites (as offsets into the same functions) and the same goroutine
/// table as the plain build's symbols and DWARF say.
#[test]
fn every_variant_reads_like_the_plain_build() {
    for_each_of("variants (static)", &go_toolchains(), |tc| {
        let plain_path = build_fixture_variant(tc, "chan_send", Variant::Plain);
        let plain = GoBinary::open(&plain_path, &plain_path).unwrap();
        let plain_info = RuntimeInfo::load(&plain).unwrap();
        let plain_sites: Vec<String> =
            plan(&plain, AttachOptions::default()).unwrap().into_iter().map(|s| s.label).collect();
        for variant in Variant::ALL {
            let path = build_fixture_variant(tc, "chan_send", variant);
            let bin = GoBinary::open(&path, &path).unwrap_or_else(|e| panic!("{tc} {variant}: {e}"));
            let info = RuntimeInfo::load(&bin).unwrap_or_else(|e| panic!("{tc} {variant}: {e}"));
            assert_eq!(info.layout, plain_info.layout, "{tc} {variant}: layout ({})", info.sources);
            let (lines, table) = expected_sources(variant);
            assert_eq!(info.sources.lines, lines, "{tc} {variant}: {}", info.sources);
            assert_eq!(info.sources.goroutine_table, table, "{tc} {variant}: {}", info.sources);
            assert!(info.goroutine_table.is_ok(), "{tc} {variant}: {}", info.sources);
            // The semaphore table, from the machine code, where the symbol is too.
            let semtable = info.semtable.clone().unwrap_or_else(|e| panic!("{tc} {variant}: semtable: {e}"));
            let decoded = globals::from_semacquire1(&bin).unwrap_or_else(|e| panic!("{tc} {variant}: {e}"));
            assert_eq!(decoded, semtable, "{tc} {variant}: semtable");
            if let Some(sym) = bin.data_symbol("runtime.semtable") {
                assert_eq!(decoded, sym.addr, "{tc} {variant}: runtime.semacquire1's code vs the symbol");
            }
            // The heap, likewise.
            let mheap = info.mheap.clone().unwrap_or_else(|e| panic!("{tc} {variant}: mheap_: {e}"));
            let decoded = globals::from_mallocinit(&bin).unwrap_or_else(|e| panic!("{tc} {variant}: {e}"));
            assert_eq!(decoded, mheap, "{tc} {variant}: mheap_");
            if let Some(sym) = bin.data_symbol("runtime.mheap_") {
                assert_eq!(decoded, sym.addr, "{tc} {variant}: runtime.mallocinit's code vs the symbol");
            }
            // GOMEMLIMIT as the runtime holds it: gcController.memoryLimit.
            let memory_limit =
                info.go_memory_limit.clone().unwrap_or_else(|e| panic!("{tc} {variant}: GOMEMLIMIT: {e}"));
            let decoded = globals::from_gcinit(&bin).unwrap_or_else(|e| panic!("{tc} {variant}: {e}"));
            let offset = info.layout.gc_memory_limit.expect("memoryLimit's offset");
            assert_eq!(decoded + u64::from(offset), memory_limit, "{tc} {variant}: gcController.memoryLimit");
            if let Some(sym) = bin.data_symbol("runtime.gcController") {
                assert_eq!(decoded, sym.addr, "{tc} {variant}: runtime.gcinit's code vs the symbol");
            }
            let sites: Vec<String> = plan(&bin, AttachOptions::default())
                .unwrap_or_else(|e| panic!("{tc} {variant}: {e}"))
                .into_iter()
                .map(|s| s.label)
                .collect();
            assert_eq!(sites, plain_sites, "{tc} {variant}: probe sites");
            for name in ["chan send", "select", "semacquire", "sleep"] {
                assert!(
                    (0..=255u8).any(|r| info.wait_reasons.name(r) == name),
                    "{tc} {variant}: no wait reason named {name:?} ({})",
                    info.sources
                );
            }
            if variant.is_cgo() {
                assert!(bin.externally_linked, "{tc} {variant}: not seen as externally linked");
            }
        }
    });
}

/// Traces the leak in every variant of every toolchain.
#[test]
fn traces_every_variant_on_every_toolchain() {
    if !require_root() {
        return;
    }
    for_each_of("variants (traced)", &go_toolchains(), |tc| {
        for variant in Variant::ALL {
            let fx = Fixture::build_variant(tc, "chan_send", variant);
            check_traced(&fx, variant);
        }
    });
}

fn check_traced(fx: &Fixture, variant: Variant) {
    let _serial = serial_guard();
    let mut proc = fx.start();
    // Let some goroutines leak before gleak arrives: they can only be found in
    // the goroutine table, which a stripped binary does not name.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let reports = run_gleak_attach(proc.pid(), &["--duration", "3s", "--interval", "1s", "--top", "50"]);
    proc.assert_running("after gleak detached");
    check_report_stream(&reports, proc.pid());
    let last = reports.last().expect("a final report");
    let line = fx.marker_line(LEAK_MARKER);
    let suffix = fx.file_suffix();
    let at = format!("{fx} [{variant}]: {suffix}:{line}");
    let site = find_site(last, &suffix, line)
        .unwrap_or_else(|| panic!("{at}: leak site missing\n{}", describe_sites(last, 10)));
    assert_eq!(site["verdict"], "leak", "{at}: {site}");
    assert_eq!(site["function"], "main.handleRequest", "{at}: {site}");
    assert_eq!(site["top_wait_reason"], "chan send", "{at}: {site}");
    let (live, created, exited, pre) =
        (count(site, "live"), count(site, "created"), count(site, "exited"), count(site, "preexisting"));
    assert!(live > 50, "{at}: live={live}\n{site}");
    assert!(pre >= 5, "{at}: preexisting={pre}: the goroutine table was not read\n{site}");
    assert!(created >= 50 && exited * 10 < created, "{at}: created={created} exited={exited}\n{site}");
    assert!(created + pre >= live, "{at}: created={created} + preexisting={pre} < live={live}");
    let stack: Vec<&str> = site["stack"].as_array().unwrap().iter().filter_map(|f| f["function"].as_str()).collect();
    assert!(stack.contains(&"main.main"), "{at}: creation stack {stack:?}");
    let (lines, _) = expected_sources(variant);
    assert_eq!(last["runtime_facts"]["lines"], lines, "{at}: {}", last["runtime_facts"]);
}
