//! gleak's own `.gopclntab` reader (`gleak::binary::pclntab`, the backend for
//! stripped binaries) against what the same binary's ELF symbol table and DWARF
//! say, for every Go toolchain on the machine:
//!
//! - every function symbol of `.text` has the same entry and size in the pclntab,
//!   under its ELF name (`.abi0` twins included), and every pclntab function
//!   has its ELF symbol;
//! - thousands of PCs (every function entry, and a stride through all code, which
//!   hits inlined code) give the same frames (function, file, line, inline depth)
//!   as the DWARF symbolizer; the few classes that cannot agree are each checked
//!   to be exactly what the comment says, and counted;
//! - a `-ldflags=-s -w` build of the same source gives the same frames;
//! - mutated copies of real tables never make it panic.
//!
//! The ELF reading is a minimal reader of its own (this crate has no `object`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use gleak::binary::symbolize::{Frame, Symbolizer};
use gleak::binary::{
    dwarf::DwarfInfo,
    pclntab::{FuncRange, Image, Pclntab, MAGIC_GO118, MAGIC_GO120},
    GoBinary,
};
use gleak_tests::{build_fixture, build_go_program_with_flags, fixture_source, go_toolchains, GoToolchain};

// ---------------------------------------------------------------------------
// A minimal ELF64 little-endian reader: sections and the symbol table.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Section {
    name: String,
    addr: u64,
    offset: u64,
    size: u64,
    kind: u32,
    link: u32,
}

#[derive(Clone, Debug)]
struct ElfSymbol {
    name: String,
    addr: u64,
    size: u64,
    is_func: bool,
    section: usize,
}

struct Elf {
    data: Arc<Vec<u8>>,
    sections: Vec<Section>,
    symbols: Vec<ElfSymbol>,
}

const SHT_NOBITS: u32 = 8;
const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(d[at..at + 2].try_into().unwrap())
}
fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}
fn cstr_at(d: &[u8], at: usize) -> String {
    let end = d[at..].iter().position(|&b| b == 0).map_or(d.len(), |n| at + n);
    String::from_utf8_lossy(&d[at..end]).into_owned()
}

impl Elf {
    fn read(path: &Path) -> Elf {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert_eq!(&data[..4], b"\x7fELF", "{}", path.display());
        assert_eq!((data[4], data[5]), (2, 1), "{}: not ELF64 little-endian", path.display());
        let shoff = u64_at(&data, 0x28) as usize;
        let (shentsize, shnum, shstrndx) =
            (u16_at(&data, 0x3a) as usize, u16_at(&data, 0x3c) as usize, u16_at(&data, 0x3e) as usize);
        let mut sections: Vec<(u32, Section)> = (0..shnum)
            .map(|i| {
                let h = shoff + i * shentsize;
                let section = Section {
                    name: String::new(),
                    kind: u32_at(&data, h + 4),
                    addr: u64_at(&data, h + 0x10),
                    offset: u64_at(&data, h + 0x18),
                    size: u64_at(&data, h + 0x20),
                    link: u32_at(&data, h + 0x28),
                };
                (u32_at(&data, h), section)
            })
            .collect();
        let names_at = sections[shstrndx].1.offset as usize;
        for (name, s) in &mut sections {
            s.name = cstr_at(&data, names_at + *name as usize);
        }
        let sections: Vec<Section> = sections.into_iter().map(|(_, s)| s).collect();
        let mut symbols = Vec::new();
        if let Some(symtab) = sections.iter().find(|s| s.kind == SHT_SYMTAB) {
            let strtab = sections[symtab.link as usize].offset as usize;
            for i in 1..symtab.size as usize / 24 {
                let e = symtab.offset as usize + i * 24;
                symbols.push(ElfSymbol {
                    name: cstr_at(&data, strtab + u32_at(&data, e) as usize),
                    is_func: data[e + 4] & 0xf == STT_FUNC,
                    section: u16_at(&data, e + 6) as usize,
                    addr: u64_at(&data, e + 8),
                    size: u64_at(&data, e + 16),
                });
            }
        }
        Elf { data: Arc::new(data), sections, symbols }
    }

    fn section(&self, name: &str) -> Option<(usize, &Section)> {
        self.sections.iter().enumerate().find(|(_, s)| s.name == name)
    }

    fn symbol(&self, name: &str) -> Option<&ElfSymbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    fn image(&self) -> Image {
        self.data.clone()
    }

    /// (file offset, length) of a section's bytes.
    fn file_range(&self, name: &str) -> (u64, u64) {
        let (_, s) = self.section(name).unwrap_or_else(|| panic!("no section {name}"));
        (s.offset, s.size)
    }

    /// `go:func.*` (Go 1.20+; `go.func.*` in 1.19): (section index, offset in it).
    fn gofunc_in_section(&self) -> (usize, u64) {
        let sym = self.symbol("go:func.*").or_else(|| self.symbol("go.func.*")).expect("go:func.* symbol");
        let section = &self.sections[sym.section];
        assert!(section.kind != SHT_NOBITS && sym.addr >= section.addr, "go:func.* not in a file-backed section");
        (sym.section, sym.addr - section.addr)
    }

    /// (file offset, bytes to the end of its section) of `offset` in section `index`.
    fn file_region(&self, index: usize, offset: u64) -> (u64, u64) {
        let s = &self.sections[index];
        (s.offset + offset, s.size - offset)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `f` for every toolchain (not only the pattern subset); one panic at the
/// end names each failing toolchain.
fn each_toolchain(what: &str, mut f: impl FnMut(&GoToolchain)) {
    let toolchains = go_toolchains();
    assert!(!toolchains.is_empty() || !gleak_tests::is_strict(), "{what}: no Go toolchain (CI or cargo xtask test)");
    let mut failures = Vec::new();
    for tc in &toolchains {
        eprintln!("{what}: {tc}");
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tc))) {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("--- {tc} ---\n{msg}"));
        }
    }
    assert!(failures.is_empty(), "{what} failed for {} toolchain(s):\n{}", failures.len(), failures.join("\n"));
}

fn minor(tc: &GoToolchain) -> u32 {
    tc.version.split('.').nth(1).and_then(|m| m.parse().ok()).expect("version 1.N")
}

/// The pclntab of an unstripped build, text start and go:func.* from its symbols.
fn parse_unstripped(elf: &Elf) -> Pclntab {
    let text = elf.symbol("runtime.text").expect("runtime.text").addr;
    let (index, offset) = elf.gofunc_in_section();
    Pclntab::parse(elf.image(), elf.file_range(".gopclntab"), Some(text), Some(elf.file_region(index, offset)))
        .expect("pclntab parses")
}

/// What Go 1.18–1.19 write in the pclntab for a name: everything inside the
/// outermost brackets becomes `[...]` (cmd/link `nameParts`, gone in 1.20).
fn go118_name(name: &str) -> String {
    match (name.find('['), name.rfind(']')) {
        (Some(i), Some(j)) if j > i => format!("{}[...]{}", &name[..i], &name[j + 1..]),
        _ => name.to_string(),
    }
}

/// An ELF symbol's name as the pclntab API spells it.
fn pclntab_spelling(table: &Pclntab, elf_name: &str) -> String {
    if table.magic() == MAGIC_GO118 {
        go118_name(elf_name)
    } else {
        elf_name.to_string()
    }
}

/// Whether the ELF name `elf` (in [`pclntab_spelling`]) is what `functions()` or
/// `function_containing` call `ours`. A unique assembly function's ELF name may
/// carry `.abi0` (an ABIInternal twin was referenced but not linked): the table
/// cannot know that, so it gives the plain name (and `function` takes both).
fn elf_names_match(elf: &str, ours: &str) -> bool {
    elf == ours || elf.strip_suffix(".abi0") == Some(ours)
}

/// Function symbols of `.text` with a size (not `runtime.text`/`runtime.etext`).
fn text_functions(elf: &Elf) -> Vec<&ElfSymbol> {
    let (text, _) = elf.section(".text").expect(".text");
    elf.symbols.iter().filter(|s| s.is_func && s.section == text && s.size > 0).collect()
}

const FIXTURES: [&str; 2] = ["chan_send", "mixed"];

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn header_magic_and_text_start_per_release() {
    each_toolchain("pclntab header", |tc| {
        let elf = Elf::read(&build_fixture(tc, "chan_send"));
        let (off, len) = elf.file_range(".gopclntab");
        let raw = &elf.data[off as usize..(off + len) as usize];
        let text = elf.symbol("runtime.text").expect("runtime.text").addr;
        assert_eq!(text, elf.section(".text").unwrap().1.addr, "runtime.text is the .text start");
        let table = parse_unstripped(&elf);
        let m = minor(tc);
        assert_eq!(table.magic(), if m < 20 { MAGIC_GO118 } else { MAGIC_GO120 });
        // 1.18–1.25 store textStart (internal linking); 1.26+ write 0.
        assert_eq!(Pclntab::header_text_start(raw), (m < 26).then_some(text));
        let header_only = Pclntab::parse(elf.image(), (off, len), None, None);
        if m < 26 {
            assert_eq!(header_only.expect("header text start suffices").text_start(), text);
        } else {
            let err = header_only.expect_err("1.26+ needs the caller's text start").to_string();
            assert!(err.contains("text start unknown"), "{err}");
        }
        assert!(table.func_count() > 1000, "{}", table.func_count());
    });
}

/// (a) Entries and sizes equal the ELF symbol table's, in both directions.
#[test]
fn functions_match_the_elf_symbol_table() {
    each_toolchain("pclntab functions vs ELF", |tc| {
        for fixture in FIXTURES {
            let elf = Elf::read(&build_fixture(tc, fixture));
            let table = parse_unstripped(&elf);
            let symbols = text_functions(&elf);
            let mut problems = Vec::new();
            let mut markers = Vec::new();
            // How many ELF symbols share each pclntab spelling (Go 1.19 `[...]`).
            let mut spellings: HashMap<String, usize> = HashMap::new();
            for s in &symbols {
                *spellings.entry(pclntab_spelling(&table, &s.name)).or_default() += 1;
            }
            for s in &symbols {
                let want = FuncRange { entry: s.addr, end: s.addr + s.size };
                let name = pclntab_spelling(&table, &s.name);
                if s.name.starts_with("go:textfips") {
                    // 1-byte linker markers (cmd/link fips140.go) without pc tables:
                    // the table knows the entry, not the size, and says "up to the
                    // next function"; they hold no code.
                    let got = table.function(&name).expect("marker in pclntab");
                    assert_eq!(got.entry, s.addr, "{}", s.name);
                    assert!(table.frames(s.addr).is_empty(), "{}", s.name);
                    markers.push(s.name.clone());
                    continue;
                }
                match table.function_containing(s.addr) {
                    Some((got_name, got)) if got == want && elf_names_match(&name, got_name) => {}
                    other => problems.push(format!("{} {want:x?}: function_containing gives {other:x?}", s.name)),
                }
                if spellings[&name] == 1 {
                    let got = table.function(&name);
                    if got != Some(want) {
                        problems.push(format!("{} {want:x?}: function({name:?}) gives {got:x?}", s.name));
                    }
                }
            }
            let by_addr: HashMap<u64, Vec<String>> = symbols.iter().fold(HashMap::new(), |mut m, s| {
                m.entry(s.addr).or_default().push(pclntab_spelling(&table, &s.name));
                m
            });
            for (name, range) in table.functions() {
                if !by_addr.get(&range.entry).is_some_and(|names| names.iter().any(|n| elf_names_match(n, name))) {
                    problems.push(format!("pclntab {name} at {:#x} has no ELF symbol of that name", range.entry));
                }
            }
            eprintln!(
                "  {fixture}: {} ELF functions, {} pclntab functions, {} mismatches, markers {markers:?}",
                symbols.len(),
                table.func_count(),
                problems.len()
            );
            assert!(problems.is_empty(), "{fixture}: {} mismatches:\n{}", problems.len(), problems.join("\n"));
            assert_eq!(markers.len(), if minor(tc) >= 24 { 2 } else { 0 }, "{markers:?}");
        }
    });
}

/// The runtime functions gleak probes or reads, under their ELF names: present in
/// the pclntab exactly when in the ELF symbol table, with the same range.
#[test]
fn runtime_functions_gleak_needs() {
    const NEEDED: &[&str] = &[
        "runtime.newproc1",
        "runtime.newproc",
        "runtime.newproc.abi0",
        "runtime.newproc.func1",
        "runtime.runqput",
        "runtime.gdestroy",
        "runtime.goexit0",
        "runtime.goexit1",
        "runtime.goexit1.abi0",
        "runtime.goexit.abi0",
        "runtime.casgstatus",
        "runtime.gopark",
        "runtime.mcall",
        "runtime.exit.abi0",
        "runtime.racefini",
        "runtime.newcoro",
        "runtime.newcoro.func1",
        "runtime.allgadd",
        "runtime.forEachG",
        "runtime.forEachGRace",
        "runtime.main",
    ];
    each_toolchain("pclntab runtime functions", |tc| {
        let elf = Elf::read(&build_fixture(tc, "chan_send"));
        let table = parse_unstripped(&elf);
        let mut present = Vec::new();
        for &name in NEEDED {
            let want =
                elf.symbol(name).filter(|s| s.is_func).map(|s| FuncRange { entry: s.addr, end: s.addr + s.size });
            assert_eq!(table.function(name), want, "{name}");
            if want.is_some() {
                present.push(name);
            }
        }
        for always in
            ["runtime.newproc1", "runtime.goexit1", "runtime.goexit1.abi0", "runtime.exit.abi0", "runtime.mcall"]
        {
            assert!(present.contains(&always), "{always} missing from the ELF symbols");
        }
        // The twins are distinct functions.
        assert_ne!(table.function("runtime.goexit1"), table.function("runtime.goexit1.abi0"));
        eprintln!("  present: {}", present.len());
    });
}

/// Why a pclntab frame list may differ from DWARF's for one PC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Disagreement {
    /// Go 1.22+: DWARF line programs of `<autogenerated>` functions (pointer
    /// receiver wrappers, ABI wrappers, type:.eq) start after the prologue, so the
    /// DWARF symbolizer knows the function but has no row ("?":0) for its first
    /// bytes (the entry and the stack check, checked to be within 32 bytes of the
    /// entry); the pclntab, which the runtime's own tracebacks use, says
    /// `<autogenerated>:1`.
    DwarfHasNoRowInGeneratedCode,
    /// Go 1.18–1.19: the pclntab stores generic (and `type..eq.[5]T`) names with
    /// the outermost brackets' contents replaced by `[...]`; DWARF has the full
    /// name. Nothing in the table has the original.
    Go118ElidedName,
    /// Go 1.19: DWARF has no inlined-subroutine record for calls inlined into
    /// `<autogenerated>` wrappers; it names the wrapper with the inlined body's
    /// file:line, the pclntab has the inlined frame and the wrapper's frame.
    Go119DwarfMissesInliningIntoWrapper,
    /// Go 1.19: a NOP the assembler inserted for loop alignment. The pclntab gives
    /// it the line of the instruction after it, DWARF that of the row before.
    Go119AlignmentNop,
}

/// The class of a disagreement, if it is one of the understood ones.
fn classify(bin: &GoBinary, table: &Pclntab, pc: u64, ours: &[Frame], dwarf: &[Frame]) -> Option<Disagreement> {
    let generated = |f: &Frame| f.file == "./<autogenerated>" && f.line == 1;
    if ours.len() == dwarf.len() {
        let pairs: Vec<(&Frame, &Frame)> = ours.iter().zip(dwarf).filter(|(a, b)| a != b).collect();
        let in_prologue = table.function_containing(pc).is_some_and(|(_, r)| pc - r.entry < 32);
        if in_prologue
            && pairs.iter().all(|(a, b)| a.function == b.function && generated(a) && b.file == "?" && b.line == 0)
        {
            return Some(Disagreement::DwarfHasNoRowInGeneratedCode);
        }
        if table.magic() == MAGIC_GO118
            && pairs
                .iter()
                .all(|(a, b)| a.function == go118_name(&b.function) && (&a.file, a.line) == (&b.file, b.line))
        {
            return Some(Disagreement::Go118ElidedName);
        }
        if table.magic() == MAGIC_GO118
            && pairs.len() == 1
            && ours.len() == 1
            && (&pairs[0].0.function, &pairs[0].0.file) == (&pairs[0].1.function, &pairs[0].1.file)
        {
            // Start of our line's run: walk back while the frames stay the same.
            let mut start = pc;
            while start > 0 && table.frames(start - 1) == ours {
                start -= 1;
            }
            if bin.bytes_at(start, 4).is_some_and(is_nop) {
                return Some(Disagreement::Go119AlignmentNop);
            }
        }
    }
    if table.magic() == MAGIC_GO118 && dwarf.len() == 1 && ours.len() > 1 {
        let (inner, outer) = (&ours[0], &ours[ours.len() - 1]);
        let d = &dwarf[0];
        if d.function == outer.function && (&d.file, d.line) == (&inner.file, inner.line) && generated(outer) {
            return Some(Disagreement::Go119DwarfMissesInliningIntoWrapper);
        }
    }
    None
}

/// x86-64 NOP encodings: `90`, `66 90`, `0f 1f /0`, `66 0f 1f /0` (and `66 2e 0f 1f`).
fn is_nop(code: &[u8]) -> bool {
    let code = match code {
        [0x66, 0x2e, rest @ ..] => rest,
        [0x66, rest @ ..] => rest,
        _ => code,
    };
    matches!(code, [0x90, ..] | [0x0f, 0x1f, ..])
}

/// PCs to compare: every function entry and a stride through all code (odd, so it
/// lands at all offsets within instructions).
fn sample_pcs(table: &Pclntab) -> Vec<u64> {
    let mut pcs: Vec<u64> = table.functions().map(|(_, r)| r.entry).collect();
    let (first, last) = (pcs[0], table.functions().last().expect("functions").1.end);
    pcs.extend((first + 7..last).step_by(97));
    pcs
}

/// (b) Frames equal the DWARF symbolizer's, but for the explained classes.
#[test]
fn frames_match_dwarf() {
    let mut summary = String::new();
    each_toolchain("pclntab frames vs DWARF", |tc| {
        for fixture in FIXTURES {
            let path = build_fixture(tc, fixture);
            let elf = Elf::read(&path);
            let table = parse_unstripped(&elf);
            let bin = GoBinary::open(&path, &path).expect("Go binary");
            let dwarf = DwarfInfo::load(&bin).and_then(|d| d.symbolizer(&bin)).expect("DWARF symbolizer");
            let pcs = sample_pcs(&table);
            let (mut agree, mut inlined) = (0, 0);
            let mut classes: BTreeMap<Disagreement, usize> = BTreeMap::new();
            let mut unexplained = Vec::new();
            for &pc in &pcs {
                let ours = table.frames(pc);
                let theirs = dwarf.frames(pc);
                if ours.len() > 1 {
                    inlined += 1;
                }
                if ours == theirs {
                    agree += 1;
                    continue;
                }
                match classify(&bin, &table, pc, &ours, &theirs) {
                    Some(class) => *classes.entry(class).or_default() += 1,
                    None => unexplained.push(format!("{pc:#x}\n  pclntab {ours:?}\n  DWARF   {theirs:?}")),
                }
            }
            let line = format!(
                "Go {} {fixture}: {agree}/{} PCs agree ({:.2}%), {inlined} with inlined frames; explained: {classes:?}; unexplained: {}",
                tc.version,
                pcs.len(),
                100.0 * agree as f64 / pcs.len() as f64,
                unexplained.len()
            );
            eprintln!("  {line}");
            writeln!(summary, "{line}").unwrap();
            assert!(
                unexplained.is_empty(),
                "{fixture}: {} unexplained:\n{}",
                unexplained.len(),
                unexplained.join("\n")
            );
            assert!(inlined > 500, "{fixture}: only {inlined} sampled PCs are in inlined code");
            // The classes only occur where the comments say.
            let m = minor(tc);
            for class in classes.keys() {
                let expected = match class {
                    Disagreement::DwarfHasNoRowInGeneratedCode => m >= 22,
                    _ => m == 19,
                };
                assert!(expected, "{class:?} on Go 1.{m}");
            }
        }
    });
    eprintln!("{summary}");
}

/// (c) A `-s -w` build of the same source: same code layout and the same table
/// bytes, so with the text start (the `.text` address, still in the section
/// headers; equal to `runtime.text` only with Go's internal linker, asserted here)
/// and the unstripped build's go:func.* position (same section, same offset; the
/// section itself may move) it gives the same functions and frames as the
/// unstripped build.
#[test]
fn stripped_build_gives_the_same_frames() {
    each_toolchain("pclntab stripped build", |tc| {
        let plain = Elf::read(&build_fixture(tc, "chan_send"));
        let stripped_path =
            build_go_program_with_flags(tc, &fixture_source("chan_send"), "chan_send-sw", &["-ldflags=-s -w"]);
        let stripped = Elf::read(&stripped_path);
        assert!(stripped.symbols.is_empty() && stripped.section(".debug_info").is_none(), "-s -w leaves symbols/DWARF");
        let (_, plain_text) = plain.section(".text").unwrap();
        let (_, text) = stripped.section(".text").expect(".text section");
        assert_eq!((text.addr, text.size), (plain_text.addr, plain_text.size), ".text moved");
        assert_eq!(Some(text.addr), plain.symbol("runtime.text").map(|s| s.addr), ".text is not runtime.text");
        let section_bytes = |elf: &Elf, name: &str| {
            let (off, len) = elf.file_range(name);
            elf.data[off as usize..(off + len) as usize].to_vec()
        };
        assert!(section_bytes(&plain, ".gopclntab") == section_bytes(&stripped, ".gopclntab"), "pclntab differs");

        let (index, offset) = plain.gofunc_in_section();
        let section_name = &plain.sections[index].name;
        let (stripped_index, _) = stripped.section(section_name).expect("go:func.* section");
        let gofunc = stripped.file_region(stripped_index, offset);
        let (plain_gofunc_at, _) = plain.file_region(index, offset);
        let funcdata_len = 4096.min(gofunc.1) as usize;
        assert_eq!(
            plain.data[plain_gofunc_at as usize..][..funcdata_len],
            stripped.data[gofunc.0 as usize..][..funcdata_len],
            "go:func.* moved within {section_name}"
        );
        let ours = Pclntab::parse(stripped.image(), stripped.file_range(".gopclntab"), Some(text.addr), Some(gofunc))
            .expect("stripped pclntab parses");
        let reference = parse_unstripped(&plain);
        let names = |t: &Pclntab| t.functions().map(|(n, r)| (n.to_string(), r)).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&reference));
        let pcs = sample_pcs(&reference);
        let same = pcs.iter().filter(|&&pc| ours.frames(pc) == reference.frames(pc)).count();
        eprintln!("  {same}/{} PCs give the same frames", pcs.len());
        assert_eq!(same, pcs.len());
    });
}

/// Deterministic mutations of real tables (byte flips, random runs, truncations,
/// header words), then parse and every query: no panic, no hang. One pre-1.20 and
/// the newest table format.
#[test]
fn mutated_real_tables_never_panic() {
    let toolchains = go_toolchains();
    let picked: Vec<&GoToolchain> = toolchains.first().into_iter().chain(toolchains.last()).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for tc in picked {
        let elf = Elf::read(&build_fixture(tc, "chan_send"));
        let text = elf.symbol("runtime.text").unwrap().addr;
        let (table_off, table_len) = elf.file_range(".gopclntab");
        let (index, offset) = elf.gofunc_in_section();
        let (gofunc_off, gofunc_len) = elf.file_region(index, offset);
        // A compact image: the table, then go:func.* (at most 256 KiB of it).
        let gofunc_len = gofunc_len.min(256 << 10);
        let mut pristine = elf.data[table_off as usize..(table_off + table_len) as usize].to_vec();
        pristine.extend_from_slice(&elf.data[gofunc_off as usize..(gofunc_off + gofunc_len) as usize]);
        let reference =
            Pclntab::parse(Arc::new(pristine.clone()), (0, table_len), Some(text), Some((table_len, gofunc_len)))
                .expect("compact image parses");
        let pcs: Vec<u64> = sample_pcs(&reference).into_iter().step_by(40).collect();
        // The header, name, file and pc tables come first.
        let early = table_len / 4;
        let started = std::time::Instant::now();
        let mut image = Arc::new(pristine.clone());
        let (mut parsed, iterations) = (0, 1500);
        for _ in 0..iterations {
            let mut len = table_len;
            let mut changed = Vec::new();
            {
                let bytes = Arc::get_mut(&mut image).expect("no other owner");
                let mut poke = |at: usize, value: u8, changed: &mut Vec<usize>| {
                    changed.push(at);
                    bytes[at] = value;
                };
                match rand() % 6 {
                    0 => len = rand() % (table_len + 1),
                    1 => {
                        // A header word.
                        let at = 8 + (rand() % 8 * 8) as usize;
                        for i in 0..8 {
                            poke(at + i, rand() as u8, &mut changed);
                        }
                    }
                    2 => {
                        let at = (rand() % (pristine.len() as u64 - 16)) as usize;
                        for i in 0..1 + (rand() % 16) as usize {
                            poke(at + i, rand() as u8, &mut changed);
                        }
                    }
                    3 => {
                        // Somewhere early in the table.
                        for _ in 0..1 + rand() % 8 {
                            let at = (rand() % early) as usize;
                            poke(at, pristine[at] ^ (1 << (rand() % 8)), &mut changed);
                        }
                    }
                    _ => {
                        for _ in 0..1 + rand() % 8 {
                            let at = (rand() % pristine.len() as u64) as usize;
                            poke(at, pristine[at] ^ (1 << (rand() % 8)), &mut changed);
                        }
                    }
                }
            }
            let as_image: Image = image.clone();
            if let Ok(t) = Pclntab::parse(as_image, (0, len), Some(text), Some((table_len, gofunc_len))) {
                parsed += 1;
                let mut n = 0;
                for (name, range) in t.functions() {
                    n += name.len() as u64 + (range.end - range.entry).min(1);
                }
                assert!(n > 0 || t.func_count() == 0);
                let _ = t.function("runtime.goexit1.abi0");
                let _ = t.function("runtime.exit.abi0");
                for &pc in &pcs {
                    let _ = t.frames(pc);
                    let _ = t.function_containing(pc);
                }
            }
            let bytes = Arc::get_mut(&mut image).expect("the parsed table is gone");
            for at in changed {
                bytes[at] = pristine[at];
            }
        }
        eprintln!("Go {}: {iterations} mutations, {parsed} parsed, {:?}", tc.version, started.elapsed());
        assert!(parsed > iterations / 4, "mutations too destructive to exercise the queries: {parsed}");
    }
}
