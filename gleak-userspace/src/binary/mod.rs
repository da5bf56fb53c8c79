//! Reading a Go executable: ELF symbols, sections and segments, the Go version,
//! `.gopclntab`, code bytes, and pointers in its data as the loader relocates them.
//!
//! Everything here works on the file alone; nothing touches the running process.
//! The file is mapped, not read whole, and every offset or length taken from it
//! is bounded before use: the binary may be hostile.
//!
//! May use: [`crate::arch`], chosen here per binary from its ELF machine, for
//! everything that depends on the instruction set.

pub mod buildinfo;
pub mod dwarf;
pub mod globals;
pub mod moduledata;
pub mod pclntab;
pub mod symbolize;
#[cfg(test)]
mod testelf;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

pub use buildinfo::GoVersion;
use pclntab::{Image, Pclntab};

use crate::{
    arch::{self, Arch},
    error::{Error, Result},
};

/// Oldest Go release whose runtime layout gleak knows.
pub const MIN_GO: (u32, u32) = (1, 19);

/// `p_flags` bit of a writable segment.
const PF_W: u32 = 2;
/// Writable segments searched for the buildinfo header when there are no section headers.
const MAX_SCANNED_SEGMENTS: usize = 8;
/// Header matches checked against a module data when `.gopclntab` is found by its
/// header (real binaries have exactly one).
const MAX_PCLNTAB_CANDIDATES: usize = 16;

/// A function or data symbol of the binary (virtual address as linked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
}

/// A `PT_LOAD` segment: where file bytes land in memory.
#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
}

/// A section header, as far as gleak needs it.
#[derive(Clone, Debug)]
pub struct Section {
    pub name: String,
    pub vaddr: u64,
    /// `None` for sections without file bytes (`.bss`).
    pub file_range: Option<(u64, u64)>,
    /// Bytes in memory.
    pub size: u64,
    /// Allocated and writable: the program's data and bss.
    pub writable: bool,
}

/// Where a function's address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolSource {
    /// The ELF `.symtab`.
    Elf,
    /// The Go runtime's own function table, kept by `-ldflags=-s`.
    Pclntab,
}

/// A parsed Go executable: a memory map of the file and indexes into it.
pub struct GoBinary {
    pub path: PathBuf,
    /// Its instruction set: how its code decodes, its frames, its calling convention.
    pub arch: &'static dyn Arch,
    image: Image,
    pub go_version: GoVersion,
    /// The main package's import path, from `.go.buildinfo`.
    pub main_path: Option<String>,
    /// Position-independent: runtime addresses = link addresses + load bias.
    pub is_pie: bool,
    /// Linked by an external linker (gcc: cgo or `-linkmode=external`).
    pub externally_linked: bool,
    pub has_dwarf: bool,
    /// `runtime.*` symbols (and `go:func.*`) of `.symtab`; empty when stripped.
    elf_symbols: HashMap<String, Symbol>,
    /// Every sized data symbol of `.symtab` (a global variable), by address:
    /// (address, size, name). Empty in a stripped binary.
    variables: Vec<(u64, u64, String)>,
    segments: Vec<Segment>,
    sections: Vec<Section>,
    /// Relative relocations: address → addend (what the loader stores there).
    relative_relocs: HashMap<u64, u64>,
    pclntab: Option<Arc<Pclntab>>,
    /// Why `.gopclntab` could not be used, if it could not.
    pub pclntab_problem: Option<String>,
    /// Link address of `runtime.firstmoduledata`, when found.
    pub moduledata: Option<u64>,
}

impl GoBinary {
    /// Maps and checks `path`. `display` is the name used in messages (e.g. the
    /// target's executable path when `path` is `/proc/PID/exe`).
    pub fn open(path: &Path, display: &Path) -> Result<Self> {
        let io_err = |source| Error::Binary { path: display.to_path_buf(), cause: source };
        let file = std::fs::File::open(path).map_err(io_err)?;
        // SAFETY: a private read-only mapping. Should another process truncate the
        // file while gleak runs, reading past the new end faults (SIGBUS); binaries
        // of running processes are not truncated in place (ETXTBSY), only replaced.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        Self::from_image(Arc::new(map), display)
    }

    pub fn from_bytes(data: Vec<u8>, display: &Path) -> Result<Self> {
        Self::from_image(Arc::new(data), display)
    }

    fn from_image(image: Image, display: &Path) -> Result<Self> {
        let path = display.to_path_buf();
        let data: &[u8] = (*image).as_ref();
        let file =
            object::File::parse(data).map_err(|e| Error::NotElf { path: path.clone(), reason: e.to_string() })?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(Error::NotElf { path, reason: format!("{:?} format", file.format()) });
        }
        let Some(arch) = arch::of_elf(file.architecture()) else {
            return Err(Error::UnsupportedArch { path, arch: format!("{:?}", file.architecture()) });
        };
        let sections: Vec<Section> = file
            .sections()
            .filter_map(|s| {
                let name = s.name().ok()?.to_string();
                let writable = matches!(s.flags(), object::SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_ALLOC | object::elf::SHF_WRITE)
                        == u64::from(object::elf::SHF_ALLOC | object::elf::SHF_WRITE));
                Some(Section { name, vaddr: s.address(), file_range: s.file_range(), size: s.size(), writable })
            })
            .collect();
        let section_bytes = |name: &str| -> Option<&[u8]> {
            let (off, len) = sections.iter().find(|s| s.name == name)?.file_range?;
            data.get(usize::try_from(off).ok()?..usize::try_from(off.checked_add(len)?).ok()?)
        };
        // The version first: it says whether this is Go at all.
        let buildinfo_bytes = match section_bytes(".go.buildinfo") {
            Some(bytes) => Some(bytes),
            // Section headers stripped: the header sits 16-byte aligned in writable data.
            // Real binaries have one or two writable segments; a hostile one could
            // list thousands, each over the whole file.
            None => file
                .segments()
                .filter(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & PF_W != 0))
                .take(MAX_SCANNED_SEGMENTS)
                .filter_map(|s| s.data().ok())
                .find(|d| buildinfo::version_from_buildinfo(d).is_some()),
        };
        let raw_version = buildinfo_bytes.and_then(buildinfo::version_from_buildinfo);
        let main_path = buildinfo_bytes.and_then(buildinfo::main_path_from_buildinfo);
        let go_version = match raw_version {
            Some(v) => {
                GoVersion::parse(&v).ok_or_else(|| Error::UnsupportedGoVersion { path: path.clone(), version: v })?
            }
            None => return Err(Error::NotGo { path }),
        };
        if !go_version.at_least(MIN_GO.0, MIN_GO.1) {
            return Err(Error::UnsupportedGoVersion { path, version: go_version.raw });
        }

        let mut elf_symbols = HashMap::new();
        let mut variables = Vec::new();
        for sym in file.symbols() {
            if let Ok(name) = sym.name() {
                if name.starts_with("runtime.") || name.starts_with("go:func.") || name == "go.func.*" {
                    elf_symbols.insert(name.to_string(), Symbol { addr: sym.address(), size: sym.size() });
                }
                if sym.kind() == object::SymbolKind::Data && sym.size() > 0 {
                    variables.push((sym.address(), sym.size(), name.to_string()));
                }
            }
        }
        variables.sort_unstable();
        let segments = file
            .segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                Segment { vaddr: s.address(), file_offset, file_size }
            })
            .collect();
        let relative_relocs = file
            .dynamic_relocations()
            .into_iter()
            .flatten()
            .filter(|(_, r)| {
                matches!(r.flags(), object::RelocationFlags::Elf { r_type } if r_type == arch.relative_relocation())
            })
            .map(|(at, r)| (at, r.addend() as u64))
            .collect();
        let is_pie = matches!(file.kind(), object::ObjectKind::Dynamic);
        // The Go linker never emits `.interp` for a static binary and names its
        // own sections; gcc adds crt sections such as `.init`.
        let externally_linked = sections.iter().any(|s| s.name == ".init" || s.name == ".plt.got");
        let has_dwarf = sections.iter().any(|s| s.name == ".debug_info" || s.name == ".zdebug_info");
        drop(file);

        let mut bin = Self {
            path,
            arch,
            image,
            go_version,
            main_path,
            is_pie,
            externally_linked,
            has_dwarf,
            elf_symbols,
            variables,
            segments,
            sections,
            relative_relocs,
            pclntab: None,
            pclntab_problem: None,
            moduledata: None,
        };
        bin.load_pclntab();
        if bin.elf_symbols.is_empty() && bin.pclntab.is_none() {
            // Likely why: where the module data keeps the text start is release-specific.
            if crate::runtime::gotables::for_release(bin.go_version.minor).is_none() && !bin.has_dwarf {
                return Err(Error::UnknownRelease {
                    path: bin.path,
                    version: bin.go_version.raw,
                    newest: crate::runtime::gotables::NEWEST_KNOWN_MINOR,
                });
            }
            let why = bin.pclntab_problem.clone().unwrap_or_else(|| "no .gopclntab".into());
            return Err(Error::NoFunctionTable { path: bin.path, reason: why });
        }
        Ok(bin)
    }

    /// Finds `.gopclntab`, the module data and the text start, and parses the table.
    fn load_pclntab(&mut self) {
        let Some((vaddr, range)) = self.find_pclntab() else {
            self.pclntab_problem = Some("no .gopclntab section, and no table found by its header".into());
            return;
        };
        self.moduledata = moduledata::locate(self, vaddr);
        let header_bytes = self.file_bytes(range.0, range.1.min(128));
        let text_start = match header_bytes.and_then(Pclntab::header_text_start) {
            Some(t) => Some(t),
            None => self
                .elf_symbols
                .get("runtime.text")
                .map(|s| s.addr)
                .or_else(|| self.moduledata.and_then(|md| moduledata::text(self, md))),
        };
        let gofunc = self
            .elf_symbols
            .get("go:func.*")
            .or_else(|| self.elf_symbols.get("go.func.*"))
            .map(|s| s.addr)
            .or_else(|| self.moduledata.and_then(|md| moduledata::gofunc(self, md)))
            .and_then(|vaddr| {
                let seg = self.segment_of(vaddr)?;
                let off = self.file_offset(vaddr)?;
                Some((off, seg.file_offset.checked_add(seg.file_size)? - off))
            });
        match Pclntab::parse(self.image.clone(), range, text_start, gofunc) {
            Ok(table) => self.pclntab = Some(Arc::new(table)),
            Err(e) => self.pclntab_problem = Some(e.to_string()),
        }
    }

    /// `.gopclntab`'s link address and file range. An external linker building a
    /// PIE (Go ≤ 1.25) folds it into `.data.rel.ro`: then it is found by its header
    /// (magic, the architecture's pc quantum, pointer size 8, at 8-byte alignment),
    /// and must be the one a module data points to.
    fn find_pclntab(&self) -> Option<(u64, (u64, u64))> {
        // `.gopclntab`, or `.data.rel.ro.gopclntab` in a PIE the Go linker built.
        if let Some(section) = self.sections.iter().find(|s| s.name.ends_with(".gopclntab")) {
            return Some((section.vaddr, section.file_range?));
        }
        let data = self.data();
        let header_tail = [0, 0, self.arch.pc_quantum(), 8];
        // Sections may overlap (a hostile file can list thousands over the whole
        // file): scan at most twice the file's bytes, check a few candidates.
        let mut budget = data.len().saturating_mul(2);
        let mut candidates = 0;
        for section in &self.sections {
            let Some((off, len)) = section.file_range else { continue };
            if section.name == ".text" || section.name.starts_with(".debug") {
                continue;
            }
            let Some(bytes) = self.file_bytes(off, len) else { continue };
            let left = budget.checked_sub(bytes.len())?;
            budget = left;
            for at in (0..bytes.len().saturating_sub(8)).step_by(8) {
                let word = &bytes[at..at + 8];
                let magic = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                if !matches!(magic, pclntab::MAGIC_GO118 | pclntab::MAGIC_GO120) || word[4..8] != header_tail {
                    continue;
                }
                candidates += 1;
                if candidates > MAX_PCLNTAB_CANDIDATES {
                    return None;
                }
                let Some(vaddr) = section.vaddr.checked_add(at as u64) else { continue };
                let range = (off + at as u64, len - at as u64);
                if moduledata::locate(self, vaddr).is_some() {
                    return Some((vaddr, range));
                }
            }
        }
        None
    }

    pub fn data(&self) -> &[u8] {
        (*self.image).as_ref()
    }

    /// Whether `.symtab` names the runtime's functions.
    pub fn has_symtab(&self) -> bool {
        !self.elf_symbols.is_empty()
    }

    pub fn pclntab(&self) -> Option<&Arc<Pclntab>> {
        self.pclntab.as_ref()
    }

    /// The function a goroutine starting at `entry` (a link address) runs, as
    /// Go's tracebacks name it: when `entry` is a wrapper the compiler generated
    /// for a `go` statement (`go f(x)` starts `main.main.gowrap1`, which calls
    /// `main.f`), the function the wrapper calls, inlined into it or called
    /// directly. `None` when `entry` is no wrapper, or when what it calls cannot be
    /// told from its code (a call through a func value).
    pub fn started_function(&self, entry: u64) -> Option<String> {
        use symbolize::{package_of, Symbolizer};
        // Wrappers around wrappers (a method value's `-fm`) are followed this deep.
        const MAX_WRAPPERS: usize = 3;
        // Wrappers are a few instructions; a longer one is not read whole.
        const MAX_WRAPPER_BYTES: u64 = 4096;
        let pcln = self.pclntab()?;
        let mut pc = entry;
        let mut through_wrapper = false;
        for _ in 0..MAX_WRAPPERS {
            if !pcln.is_wrapper(pc) {
                return through_wrapper.then(|| pcln.function_name_at(pc).map(str::to_string)).flatten();
            }
            through_wrapper = true;
            let (_, range) = pcln.function_containing(pc)?;
            let len = (range.end - range.entry).min(MAX_WRAPPER_BYTES);
            // Inlined: the frames at some pc of the wrapper show what it called.
            let quantum = u64::from(self.arch.pc_quantum()).max(1);
            let inlined = (0..len).step_by(quantum as usize).find_map(|off| {
                let frames = pcln.frames(range.entry + off);
                (frames.len() >= 2).then(|| frames[frames.len() - 2].function.clone())
            });
            if inlined.is_some() {
                return inlined;
            }
            // Called: the first direct call out of the runtime (the prologue's
            // morestack is the runtime's).
            let code = self.bytes_at(range.entry, len)?;
            let calls = self.arch.direct_calls(code, range.entry).ok()?;
            pc = calls
                .into_iter()
                .map(|(_, target)| target)
                .find(|&target| pcln.function_name_at(target).is_some_and(|name| package_of(name) != "runtime"))?;
        }
        None
    }

    /// Where goroutines of `t.Run` start (a link address): the closure the compiler
    /// made of `go tRunner(t, f)` in `testing.(*T).Run` (`…Run.func1` before Go
    /// 1.22, `…Run.gowrap1` after). `None` in a program that runs no tests.
    pub fn test_runner_entry(&self) -> Option<u64> {
        let pcln = self.pclntab()?;
        pcln.functions()
            .filter(|(name, _)| name.starts_with("testing.(*T).Run."))
            .map(|(_, range)| range.entry)
            .find(|&entry| self.started_function(entry).as_deref() == Some("testing.tRunner"))
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A function by its Go name (`runtime.newproc1`; assembly entry points carry
    /// `.abi0`, as in the symbol table), from `.symtab` or else `.gopclntab`.
    pub fn function(&self, name: &str) -> Option<Symbol> {
        self.function_with_source(name).map(|(s, _)| s)
    }

    pub fn function_with_source(&self, name: &str) -> Option<(Symbol, SymbolSource)> {
        if let Some(&sym) = self.elf_symbols.get(name).filter(|s| s.size > 0) {
            return Some((sym, SymbolSource::Elf));
        }
        let f = self.pclntab.as_ref()?.function(name)?;
        Some((Symbol { addr: f.entry, size: f.end.saturating_sub(f.entry) }, SymbolSource::Pclntab))
    }

    pub fn require_function(&self, name: &str) -> Result<Symbol> {
        self.function(name).ok_or_else(|| Error::MissingSymbol { path: self.path.clone(), symbol: name.to_string() })
    }

    /// A data symbol of `.symtab` (`runtime.allgs`); none in a stripped binary.
    pub fn data_symbol(&self, name: &str) -> Option<Symbol> {
        self.elf_symbols.get(name).copied()
    }

    /// The program's own variables (not the runtime's, nor its support packages'),
    /// as link-address ranges from `.symtab`: none in a stripped binary.
    pub fn program_variables(&self) -> Vec<std::ops::Range<u64>> {
        use crate::runtime::package_roles::PackageRole;
        self.variables
            .iter()
            .filter(|(addr, _, name)| {
                self.is_writable_data(*addr)
                    && !name.starts_with("type:")
                    && !name.starts_with("go:")
                    && !PackageRole::of_function(name).is_infrastructure()
            })
            .map(|&(addr, size, _)| addr..addr.saturating_add(size))
            .collect()
    }

    /// The variable at link address `vaddr`: its `.symtab` name and the offset
    /// into it, else the section and the offset into that (a stripped binary).
    pub fn variable_at(&self, vaddr: u64) -> Option<String> {
        // The last variable starting at or before it, if it spans it.
        let at = self.variables.partition_point(|&(addr, _, _)| addr <= vaddr);
        if let Some((addr, size, name)) = at.checked_sub(1).map(|i| &self.variables[i]) {
            if vaddr - addr < *size {
                return Some(if vaddr == *addr { name.clone() } else { format!("{name}+{:#x}", vaddr - addr) });
            }
        }
        let section = self.variable_sections().find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.size)?;
        Some(format!("{}+{:#x}", section.name, vaddr - section.vaddr))
    }

    fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size)
    }

    /// File offset of a link-time virtual address (what uprobes attach to).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segment_of(vaddr).and_then(|s| (vaddr - s.vaddr).checked_add(s.file_offset))
    }

    /// Link address of the segment mapped at file offset 0 (for the load bias).
    pub fn first_segment_vaddr(&self) -> u64 {
        self.segments.iter().find(|s| s.file_offset == 0).map(|s| s.vaddr).unwrap_or(0)
    }

    fn file_bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = usize::try_from(offset.checked_add(len)?).ok()?;
        self.data().get(start..end)
    }

    /// `len` bytes of the file image at link address `vaddr`, all within one segment.
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let seg = self.segment_of(vaddr)?;
        // The range must not wrap either: callers add offsets inside it to `vaddr`.
        if len > seg.file_size - (vaddr - seg.vaddr) || vaddr.checked_add(len).is_none() {
            return None;
        }
        self.file_bytes((vaddr - seg.vaddr).checked_add(seg.file_offset)?, len)
    }

    /// The pointer-sized value the loader leaves at `vaddr` (before the program
    /// runs): the relocation's addend where one applies (a PIE or externally linked
    /// binary may hold 0 in the file there), else the file's bytes. `None` if
    /// `vaddr` has no file bytes.
    pub fn pointer_at(&self, vaddr: u64) -> Option<u64> {
        if let Some(&addend) = self.relative_relocs.get(&vaddr) {
            return Some(addend);
        }
        let b = self.bytes_at(vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// An 8-byte integer (not a pointer: no relocation) at `vaddr`.
    pub fn u64_at(&self, vaddr: u64) -> Option<u64> {
        let b = self.bytes_at(vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Addresses that a relative relocation sets to `value` (how a pointer to
    /// `value` is found in data whose file bytes are left for the loader to fill).
    pub fn relocations_to(&self, value: u64) -> impl Iterator<Item = u64> + '_ {
        self.relative_relocs.iter().filter(move |(_, &v)| v == value).map(|(&at, _)| at)
    }

    /// Whether `vaddr` (as linked) lies in the program's variables: Go's data and
    /// bss sections (not the relocated read-only data of a PIE, `.data.rel.ro`).
    pub fn is_writable_data(&self, vaddr: u64) -> bool {
        self.variable_sections().any(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.size)
    }

    /// The sections holding the program's variables: `.data`, `.bss` and their
    /// pointer-free twins `.noptrdata`, `.noptrbss` (with external linking, C's too).
    pub fn variable_sections(&self) -> impl Iterator<Item = &Section> + '_ {
        const VARIABLES: [&str; 4] = [".noptrdata", ".data", ".bss", ".noptrbss"];
        self.sections.iter().filter(|s| s.writable && VARIABLES.contains(&s.name.as_str()))
    }

    /// Sections with file bytes that hold writable data, as (vaddr, bytes).
    pub fn data_sections(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        const DATA: [&str; 5] = [".go.module", ".noptrdata", ".data", ".data.rel.ro", ".go.buildinfo"];
        self.sections.iter().filter(|s| DATA.contains(&s.name.as_str())).filter_map(|s| {
            let (off, len) = s.file_range?;
            Some((s.vaddr, self.file_bytes(off, len)?))
        })
    }

    /// The bytes of a function's code.
    pub fn function_code(&self, name: &str) -> Result<(Symbol, &[u8])> {
        let sym = self.require_function(name)?;
        let code = self
            .bytes_at(sym.addr, sym.size)
            .ok_or_else(|| Error::MissingSymbol { path: self.path.clone(), symbol: format!("{name} (code)") })?;
        Ok((sym, code))
    }

    /// `runtime.waitReasonStrings`: the names Go itself prints (`chan send`, `select`…),
    /// indexed by `waitReason` value, read from the binary's own data. `None` when
    /// the symbol is gone or the table is not readable from the file as the loader
    /// would leave it (an unrelocated pointer is a missing table, not empty names).
    pub fn wait_reason_strings(&self) -> Option<Vec<String>> {
        let sym = self.data_symbol("runtime.waitReasonStrings")?;
        // Far more than Go's ~50 reasons; bounds a corrupt size.
        let entries = (sym.size / 16).min(256);
        (0..entries)
            .map(|i| {
                let entry = sym.addr.checked_add(i * 16)?;
                let (ptr, len) = (self.pointer_at(entry)?, self.u64_at(entry.checked_add(8)?)?);
                if len == 0 {
                    return Some(String::new());
                }
                let bytes = self.bytes_at(ptr, len.min(256))?;
                Some(String::from_utf8_lossy(bytes).into_owned())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::testelf::{buildinfo, TestElf, BASE, SHF_ALLOC, SHF_WRITE};
    use super::*;

    /// Generous: the shapes below took minutes to hours before they were bounded,
    /// and take milliseconds now.
    const QUICK: Duration = Duration::from_secs(10);

    /// Without section headers naming `.go.buildinfo`, the version is searched in
    /// writable segments: a file listing 60 000 of them over the whole file was
    /// scanned 20 000 times.
    #[test]
    fn buildinfo_search_over_many_segments_is_bounded() {
        let mut elf = TestElf::default();
        elf.symbol("runtime.main", BASE, 1).extra_segments(60_000);
        let started = Instant::now();
        assert!(matches!(elf.binary(), Err(Error::NotGo { .. })));
        assert!(started.elapsed() < QUICK, "{:?}", started.elapsed());
        // The search itself still works.
        elf.section(".noptrdata", SHF_ALLOC | SHF_WRITE, buildinfo("go1.23.1"));
        assert_eq!(elf.binary().unwrap().go_version.minor, 23);
    }

    /// `.gopclntab` found by its header: a data section full of header-looking
    /// words, listed 2 000 times, made every candidate scan every copy for a
    /// module data (quadratic twice over).
    #[test]
    fn pclntab_search_over_overlapping_sections_is_bounded() {
        let word = [0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        let mut elf = TestElf::go("go1.22.4");
        elf.section(".data", SHF_ALLOC | SHF_WRITE, word.repeat(8192)).extra_section_copies(2000);
        let started = Instant::now();
        let bin = elf.binary().unwrap();
        assert!(started.elapsed() < QUICK, "{:?}", started.elapsed());
        assert!(bin.pclntab().is_none());
    }

    /// An architecture gleak has no seam for is refused by name, before anything
    /// of it is decoded.
    #[test]
    fn other_architectures_are_refused() {
        let with_machine = |machine: u16| {
            let mut data = TestElf::go("go1.22.4").build();
            data[18..20].copy_from_slice(&machine.to_le_bytes());
            GoBinary::from_bytes(data, Path::new("other.bin"))
        };
        let refused = with_machine(object::elf::EM_RISCV).err().expect("refused");
        assert!(matches!(refused, Error::UnsupportedArch { .. }), "{refused:?}");
        assert_eq!(refused.to_string(), "only x86_64, aarch64 targets are supported for now (other.bin is Riscv64)");
        assert_eq!(TestElf::go("go1.22.4").binary().unwrap().arch.name(), "x86_64");
        assert_eq!(with_machine(object::elf::EM_AARCH64).unwrap().arch.name(), "aarch64");
    }

    /// A segment whose file offset is near u64::MAX: offsets of addresses in it
    /// overflowed (a panic in debug builds, a wrapped offset in release).
    #[test]
    fn segment_file_offsets_do_not_wrap() {
        let mut data = TestElf::go("go1.22.4").build();
        data[64 + 8..64 + 16].copy_from_slice(&(u64::MAX - 0x10).to_le_bytes()); // p_offset
        let bin = GoBinary::from_bytes(data, Path::new("test")).unwrap();
        assert_eq!(bin.file_offset(BASE + 0x100), None);
        assert_eq!(bin.u64_at(BASE + 0x100), None);
        assert!(bin.function_code("runtime.main").is_err());
    }

    /// A segment and a function at the top of the address space: addresses of
    /// instructions in it wrapped (placement adds offsets to the function's address).
    #[test]
    fn code_ranges_do_not_wrap() {
        let top = u64::MAX - 0xfff;
        let mut elf = TestElf::go("go1.22.4");
        elf.section(".filler", 0, vec![0xcc; 0x2000]);
        elf.symbol("runtime.newproc1", u64::MAX - 0x10, 0x20).symbol("runtime.gopark", u64::MAX - 0x30, 0x30);
        let mut data = elf.build();
        data[64 + 16..64 + 24].copy_from_slice(&top.to_le_bytes()); // p_vaddr
        let bin = GoBinary::from_bytes(data, Path::new("test")).unwrap();
        assert!(bin.function_code("runtime.newproc1").is_err());
        assert_eq!(bin.function_code("runtime.gopark").unwrap().1.len(), 0x30, "ends at the last address");
    }
}
