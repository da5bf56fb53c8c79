//! The per-release runtime table (`gleak::runtime::gotables`, what gleak uses for stripped
//! binaries) against real binaries: for every Go toolchain on the machine, the facts
//! `cargo xtask gotables` would write for its release (read from the DWARF and
//! symbols of `release_facts` built by that toolchain) equal the committed data file,
//! field by field; and, with a list of its own of which DWARF member each fact is
//! (a second opinion on the generator's), every offset of the entry equals what
//! the DWARF says, the wait-reason names equal the binary's own
//! `runtime.waitReasonStrings` element by element, and the `_G*` statuses agree
//! with the toolchain's `runtime2.go`.
//!
//! The same table serves arm64: every offset it holds also equals the DWARF of
//! each toolchain's `GOARCH=arm64` build (Go lays the runtime's structs out alike
//! on both 64-bit architectures; a release where they differed would need the
//! table to gain an architecture dimension, and this test would say which field).

use std::collections::HashMap;
use std::fs;

use gleak::binary::{
    dwarf::{DwarfInfo, RuntimeStructs},
    GoBinary,
};
use gleak::runtime::gotables::{self, from_dwarf, ReleaseFacts, NEWEST_KNOWN_MINOR, OLDEST_KNOWN_MINOR};
use gleak::runtime::waitreason::WaitReasons;
use gleak_tests::{build_fixture, build_fixture_for_arch, go_toolchains, GoToolchain, Variant};

/// Collects every disagreement of one binary, so one run names them all.
struct Check {
    label: String,
    mismatches: Vec<String>,
}

impl Check {
    fn field(&mut self, what: &str, table: u32, dwarf: Result<u64, String>) {
        match dwarf {
            Ok(offset) if offset == u64::from(table) => {}
            Ok(offset) => self.mismatches.push(format!("{}: {what} table {table:#x}, DWARF {offset:#x}", self.label)),
            Err(e) => self.mismatches.push(format!("{}: {what} table {table:#x}, DWARF: {e}", self.label)),
        }
    }

    /// A field only some releases have: present in the table exactly when in DWARF.
    fn optional_field(&mut self, what: &str, table: Option<u32>, dwarf: Result<u64, String>) {
        match (table, dwarf) {
            (Some(table), dwarf) => self.field(what, table, dwarf),
            (None, Ok(offset)) => self.mismatches.push(format!("{}: {what} table none, DWARF {offset:#x}", self.label)),
            (None, Err(_)) => {}
        }
    }

    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.mismatches.push(format!("{}: {}", self.label, what()));
        }
    }
}

fn minor(tc: &GoToolchain) -> u32 {
    tc.version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("{tc}: no minor version"))
}

fn check_offsets(check: &mut Check, facts: &ReleaseFacts, dwarf: &RuntimeStructs) {
    let g = &facts.g;
    check.field("g.size", g.size, dwarf.layout("runtime.g").map(|s| s.size));
    check.field("g.stack.lo", g.stack_lo, dwarf.offset("runtime.g", &["stack", "lo"]));
    check.field("g.stack.hi", g.stack_hi, dwarf.offset("runtime.g", &["stack", "hi"]));
    check.field("g.m", g.m, dwarf.offset("runtime.g", &["m"]));
    check.field("g.sched", g.sched, dwarf.offset("runtime.g", &["sched"]));
    check.field("g.atomicstatus", g.atomicstatus, dwarf.offset("runtime.g", &["atomicstatus"]));
    check.field("g.goid", g.goid, dwarf.offset("runtime.g", &["goid"]));
    check.field("g.waitsince", g.waitsince, dwarf.offset("runtime.g", &["waitsince"]));
    check.field("g.waitreason", g.waitreason, dwarf.offset("runtime.g", &["waitreason"]));
    check.optional_field("g.parentGoid", g.parent_goid, dwarf.offset("runtime.g", &["parentGoid"]));
    check.field("g.gopc", g.gopc, dwarf.offset("runtime.g", &["gopc"]));
    check.field("g.startpc", g.startpc, dwarf.offset("runtime.g", &["startpc"]));
    check.field("g.waiting", g.waiting, dwarf.offset("runtime.g", &["waiting"]));

    check.field("m.curg", facts.m.curg, dwarf.offset("runtime.m", &["curg"]));
    check.field("m.procid", facts.m.procid, dwarf.offset("runtime.m", &["procid"]));

    // The gobuf and waitq offsets are relative: they apply only if g.sched is a
    // gobuf and hchan's queues are waitqs.
    let sched_type = dwarf.member_type("runtime.g", "sched");
    check.expect(sched_type == Some("runtime.gobuf"), || format!("g.sched is a {sched_type:?}, not runtime.gobuf"));
    check.field("gobuf.sp", facts.gobuf.sp, dwarf.offset("runtime.gobuf", &["sp"]));
    check.field("gobuf.pc", facts.gobuf.pc, dwarf.offset("runtime.gobuf", &["pc"]));
    check.field("gobuf.ctxt", facts.gobuf.ctxt, dwarf.offset("runtime.gobuf", &["ctxt"]));
    check.field("gobuf.bp", facts.gobuf.bp, dwarf.offset("runtime.gobuf", &["bp"]));
    match &facts.testing {
        Some(testing) => {
            let common = dwarf.member_type("testing.T", "common");
            check.expect(common == Some("testing.common"), || format!("testing.T.common is a {common:?}"));
            check.field("testing.T.name", testing.name, dwarf.offset("testing.T", &["common", "name"]));
        }
        None => check.expect(false, || "no testing.T layout in the table".to_string()),
    }

    match &facts.heap {
        Some(h) => {
            check.field("mheap.allspans", h.mheap_allspans, dwarf.offset("runtime.mheap", &["allspans"]));
            check.field("mspan.startAddr", h.mspan_start, dwarf.offset("runtime.mspan", &["startAddr"]));
            check.field("mspan.limit", h.mspan_limit, dwarf.offset("runtime.mspan", &["limit"]));
            check.field("mspan.elemsize", h.mspan_elemsize, dwarf.offset("runtime.mspan", &["elemsize"]));
            check.field("mspan.spanclass", h.mspan_spanclass, dwarf.offset("runtime.mspan", &["spanclass"]));
            check.field("mspan.state", h.mspan_state, dwarf.offset("runtime.mspan", &["state"]));
            check.field("mspan.specials", h.mspan_specials, dwarf.offset("runtime.mspan", &["specials"]));
            check.field("mspan.freeindex", h.mspan_freeindex, dwarf.offset("runtime.mspan", &["freeindex"]));
            let width = match dwarf.member_type("runtime.mspan", "freeindex") {
                Some("uint16") => Ok(2),
                Some("uintptr") => Ok(8),
                other => Err(format!("mspan.freeindex of type {other:?}")),
            };
            check.field("mspan.freeindex width", h.mspan_freeindex_bytes, width);
            check.field("mspan.allocBits", h.mspan_alloc_bits, dwarf.offset("runtime.mspan", &["allocBits"]));
            check.field("special.offset", h.special_offset, dwarf.offset("runtime.special", &["offset"]));
            let width = match dwarf.member_type("runtime.special", "offset") {
                Some("uint16") => Ok(2),
                Some("uintptr") => Ok(8),
                other => Err(format!("special.offset of type {other:?}")),
            };
            check.field("special.offset width", h.special_offset_bytes, width);
            check.field("g.size (heap)", h.g_size, dwarf.layout("runtime.g").map(|s| s.size));
            check.field("g.syscallsp", h.g_syscallsp, dwarf.offset("runtime.g", &["syscallsp"]));
        }
        None => check.expect(false, || "no heap layout in the table".to_string()),
    }
    let s = &facts.sudog;
    check.field("sudog.g", s.g, dwarf.offset("runtime.sudog", &["g"]));
    check.field("sudog.next", s.next, dwarf.offset("runtime.sudog", &["next"]));
    check.field("sudog.prev", s.prev, dwarf.offset("runtime.sudog", &["prev"]));
    check.field("sudog.elem", s.elem, dwarf.offset("runtime.sudog", &["elem"]));
    check.field("sudog.c", s.c, dwarf.offset("runtime.sudog", &["c"]));
    check.field("sudog.waitlink", s.waitlink, dwarf.offset("runtime.sudog", &["waitlink"]));
    check.field("sudog.isSelect", s.isselect, dwarf.offset("runtime.sudog", &["isSelect"]));

    let h = &facts.hchan;
    check.field("hchan.qcount", h.qcount, dwarf.offset("runtime.hchan", &["qcount"]));
    check.field("hchan.dataqsiz", h.dataqsiz, dwarf.offset("runtime.hchan", &["dataqsiz"]));
    check.field("hchan.elemsize", h.elemsize, dwarf.offset("runtime.hchan", &["elemsize"]));
    check.field("hchan.closed", h.closed, dwarf.offset("runtime.hchan", &["closed"]));
    check.field("hchan.recvq", h.recvq, dwarf.offset("runtime.hchan", &["recvq"]));
    check.field("hchan.sendq", h.sendq, dwarf.offset("runtime.hchan", &["sendq"]));
    for queue in ["recvq", "sendq"] {
        let queue_type = dwarf.member_type("runtime.hchan", queue);
        check.expect(queue_type == Some("runtime.waitq"), || {
            format!("hchan.{queue} is a {queue_type:?}, not runtime.waitq")
        });
    }
    check.field("waitq.first", facts.waitq.first, dwarf.offset("runtime.waitq", &["first"]));
    check.field("waitq.last", facts.waitq.last, dwarf.offset("runtime.waitq", &["last"]));

    let md = &facts.moduledata;
    check.field("moduledata.pcHeader", md.pc_header, dwarf.offset("runtime.moduledata", &["pcHeader"]));
    check.field("moduledata.ftab", md.ftab, dwarf.offset("runtime.moduledata", &["ftab"]));
    check.field("moduledata.minpc", md.minpc, dwarf.offset("runtime.moduledata", &["minpc"]));
    check.field("moduledata.text", md.text, dwarf.offset("runtime.moduledata", &["text"]));
    check.field("moduledata.etext", md.etext, dwarf.offset("runtime.moduledata", &["etext"]));
    check.field("moduledata.noptrdata", md.noptrdata, dwarf.offset("runtime.moduledata", &["noptrdata"]));
    check.field("moduledata.data", md.data, dwarf.offset("runtime.moduledata", &["data"]));
    check.field("moduledata.gofunc", md.gofunc, dwarf.offset("runtime.moduledata", &["gofunc"]));
}

fn check_wait_reasons(check: &mut Check, facts: &ReleaseFacts, binary: &GoBinary) {
    let Some(own) = binary.wait_reason_strings() else {
        check.expect(false, || "no runtime.waitReasonStrings in the binary".to_string());
        return;
    };
    for (value, (table, binary)) in facts.wait_reasons.iter().zip(&own).enumerate() {
        check.expect(table == binary, || format!("waitReason {value} table {table:?}, binary {binary:?}"));
    }
    check.expect(facts.wait_reasons.len() == own.len(), || {
        format!("{} wait reasons in the table, {} in the binary", facts.wait_reasons.len(), own.len())
    });
}

/// The DWARF fallback (the `runtime.waitReason*` constants, used when a binary's
/// string table cannot be read) resolves every code to the same reason (name and
/// class) as the binary's own `runtime.waitReasonStrings`, and every one of them
/// is a reason gleak knows.
fn check_wait_reason_constants(check: &mut Check, constants: &HashMap<u8, String>, binary: &GoBinary) {
    let Some(own) = binary.wait_reason_strings() else {
        return; // check_wait_reasons names it
    };
    check.expect(constants.len() == own.len(), || {
        format!("{} waitReason constants in DWARF, {} strings in the binary", constants.len(), own.len())
    });
    let from_strings = WaitReasons::from_strings(own);
    let from_constants = WaitReasons::from_constants(constants, binary.go_version.minor);
    for code in 0..=u8::MAX {
        let (by_name, by_constant) = (from_strings.get(code), from_constants.get(code));
        check.expect(by_name == by_constant, || {
            format!("waitReason {code}: strings give {by_name:?}, DWARF constants {by_constant:?}")
        });
        if usize::from(code) < constants.len() {
            check.expect(by_name.known.is_some(), || {
                format!("waitReason {code} {:?} is unknown to gleak", by_name.name)
            });
        }
    }
}

/// `_Gname // N` lines of the toolchain's `runtime2.go` status block.
fn source_statuses(tc: &GoToolchain) -> HashMap<String, u32> {
    let path = tc.goroot().join("src/runtime/runtime2.go");
    let source = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut statuses = HashMap::new();
    for line in source.lines() {
        let Some((decl, comment)) = line.trim().split_once("//") else {
            continue;
        };
        let name = decl.trim().trim_end_matches("= iota").trim();
        if name.starts_with("_G") && !name.contains(' ') {
            if let Ok(value) = comment.trim().parse() {
                statuses.insert(name.to_string(), value);
            }
        }
    }
    statuses
}

fn check_statuses(check: &mut Check, facts: &ReleaseFacts, tc: &GoToolchain) {
    let statuses = source_statuses(tc);
    let mut dead: Vec<u32> = ["_Gdead", "_Gdeadextra"].iter().filter_map(|name| statuses.get(*name).copied()).collect();
    dead.sort_unstable();
    let mut table_dead = facts.dead_statuses.to_vec();
    table_dead.sort_unstable();
    check.expect(dead == table_dead, || format!("dead statuses table {table_dead:?}, runtime2.go {dead:?}"));
    let leaked = statuses.get("_Gleaked").copied();
    check.expect(leaked == facts.leaked_status, || {
        format!("_Gleaked table {:?}, runtime2.go {leaked:?}", facts.leaked_status)
    });
}

/// What `cargo xtask gotables` would write for this release against the committed
/// entry: one mismatch per fact, naming the file and the field.
fn check_regenerated(check: &mut Check, facts: &ReleaseFacts, regenerated: &Result<ReleaseFacts, String>) {
    match regenerated {
        Ok(regenerated) => {
            for difference in facts.differences(regenerated) {
                check.expect(false, || format!("{}: {difference} (committed → regenerated)", facts.file_name()));
            }
        }
        Err(e) => check.expect(false, || format!("the generator cannot read this release: {e}")),
    }
}

/// Checks the table entry of `tc`'s release against a binary built by `tc`;
/// returns the mismatches and the facts the generator reads from it.
fn check_toolchain(tc: &GoToolchain) -> (Vec<String>, Result<ReleaseFacts, String>) {
    let path = build_fixture(tc, "release_facts");
    let binary = GoBinary::open(&path, &path).expect("fixture is a Go binary");
    let minor = minor(tc);
    assert_eq!(binary.go_version.minor, minor, "{tc}: binary says {}", binary.go_version);
    let regenerated = from_dwarf::read_release_facts(&binary);
    let Some(facts) = gotables::for_release(minor) else {
        return (vec![format!("{}: no table entry for Go 1.{minor}", binary.go_version.raw)], regenerated);
    };

    let info = DwarfInfo::load(&binary).expect("DWARF readable");
    let dwarf = RuntimeStructs::read(&info, &binary).expect("struct layouts readable");

    let mut check = Check { label: binary.go_version.raw.clone(), mismatches: Vec::new() };
    check_regenerated(&mut check, facts, &regenerated);
    check_offsets(&mut check, facts, &dwarf);
    check_wait_reasons(&mut check, facts, &binary);
    check_statuses(&mut check, facts, tc);
    // What the probes use, as the DWARF backend reads it for unstripped binaries.
    let (from_dwarf, wait_constants) = info.runtime_layout(&binary).expect("runtime layout readable");
    check_wait_reason_constants(&mut check, &wait_constants, &binary);
    let from_table = facts.runtime_layout();
    check.expect(from_table == from_dwarf, || format!("runtime layout table {from_table:?}, DWARF {from_dwarf:?}"));
    if check.mismatches.is_empty() {
        eprintln!(
            "  {}: {} matches what the generator reads, DWARF ({} structs read) and {} wait reasons",
            check.label,
            facts.file_name(),
            dwarf.len(),
            facts.wait_reasons.len()
        );
    }
    (check.mismatches, regenerated)
}

/// Neighbouring releases with the same facts share one file, as the generator
/// writes them: two toolchains' releases in different files must differ.
fn check_families(regenerated: &[(u32, ReleaseFacts)]) -> Vec<String> {
    let mut mismatches = Vec::new();
    for pair in regenerated.windows(2) {
        let ((older, older_facts), (newer, newer_facts)) = (&pair[0], &pair[1]);
        let same_entry = gotables::for_release(*older).map(ReleaseFacts::file_name)
            == gotables::for_release(*newer).map(ReleaseFacts::file_name);
        if older + 1 == *newer && !same_entry && older_facts.differences(newer_facts).is_empty() {
            mismatches
                .push(format!("Go 1.{older} and 1.{newer} have the same facts: the generator would share one file"));
        }
    }
    mismatches
}

/// The table entry of every toolchain's release equals that toolchain's DWARF,
/// field by field, and its `runtime.waitReasonStrings`, string by string. Every
/// toolchain on the machine, not the leak-pattern subset.
#[test]
fn table_matches_each_toolchain() {
    let toolchains = go_toolchains();
    assert!(!toolchains.is_empty(), "no Go toolchain found: nothing to check the table against");
    let mut mismatches = Vec::new();
    let mut regenerated = Vec::new();
    for tc in &toolchains {
        eprintln!("gotables vs DWARF: {tc}");
        let (found, facts) = check_toolchain(tc);
        mismatches.extend(found);
        regenerated.extend(facts.ok().map(|facts| (minor(tc), facts)));
    }
    regenerated.dedup_by_key(|(minor, _)| *minor);
    mismatches.extend(check_families(&regenerated));
    let tested: Vec<&str> = toolchains.iter().map(|tc| tc.version.as_str()).collect();
    let unchecked: Vec<u32> = (OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR)
        .filter(|minor| !toolchains.iter().any(|tc| tc.version.split('.').nth(1) == Some(&minor.to_string())))
        .collect();
    eprintln!("checked against {tested:?}; releases without a toolchain here: {unchecked:?}");
    assert!(
        mismatches.is_empty(),
        "{} mismatch(es):\n{}\n(`cargo xtask gotables` rewrites the data files from these toolchains: \
         run it and review the diff)",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// ELF machine number of AArch64 (`EM_AARCH64`).
const EM_AARCH64: u16 = 183;

/// Every offset of each toolchain's table entry equals the DWARF of that
/// toolchain's `GOARCH=arm64` build, field by field (the same list as for x86-64,
/// [`check_offsets`]): gleak's one table is right for arm64 too.
#[test]
fn table_matches_each_toolchain_on_arm64() {
    let toolchains = go_toolchains();
    assert!(!toolchains.is_empty(), "no Go toolchain found: nothing to check the table against");
    let mut mismatches = Vec::new();
    for tc in &toolchains {
        eprintln!("gotables vs arm64 DWARF: {tc}");
        let bin = build_fixture_for_arch(tc, "release_facts", Variant::Plain, "arm64");
        let data = fs::read(&bin).unwrap_or_else(|e| panic!("reading {}: {e}", bin.display()));
        let machine = data.get(18..20).map(|m| u16::from_le_bytes([m[0], m[1]]));
        assert_eq!(machine, Some(EM_AARCH64), "{tc}: GOARCH=arm64 built no AArch64 ELF");
        let label = format!("Go {} (arm64)", tc.version);
        let Some(facts) = gotables::for_release(minor(tc)) else {
            mismatches.push(format!("{label}: no table entry for Go 1.{}", minor(tc)));
            continue;
        };
        let path = std::path::Path::new(&label);
        let info = DwarfInfo::from_elf(&data, path).unwrap_or_else(|e| panic!("{label}: DWARF: {e}"));
        let dwarf = RuntimeStructs::read_in(&info, path).unwrap_or_else(|e| panic!("{label}: struct layouts: {e}"));
        let mut check = Check { label, mismatches: Vec::new() };
        check_offsets(&mut check, facts, &dwarf);
        if check.mismatches.is_empty() {
            eprintln!(
                "  {}: {} matches the arm64 DWARF ({} structs read)",
                check.label,
                facts.file_name(),
                dwarf.len()
            );
        }
        mismatches.extend(check.mismatches);
    }
    assert!(
        mismatches.is_empty(),
        "{} arm64 mismatch(es):\n{}\n(the table is shared by x86-64 and arm64: a release whose arm64 layout \
         differs needs the table to gain an architecture dimension)",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn unknown_releases_have_no_entry() {
    assert!(gotables::for_release(18).is_none());
    assert!(gotables::for_release(NEWEST_KNOWN_MINOR + 1).is_none());
    for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
        assert!(gotables::for_release(minor).is_some(), "Go 1.{minor}");
    }
}
