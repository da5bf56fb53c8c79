//! The DWARF backend: struct layouts (`runtime.g`/`runtime.m` field offsets and any
//! other runtime struct), wait-reason constants, and PC → function, file:line
//! through the line tables (inlining included).

use std::{collections::HashMap, path::Path, sync::Arc};

use gimli::{EndianArcSlice, LittleEndian};
use object::{Object, ObjectSection};

use super::GoBinary;
use crate::{
    binary::symbolize::{Frame, Symbolizer},
    error::{Error, Result},
    runtime::layout::{BlockedLayout, HchanOffsets, HeapLayout, RuntimeLayout, SudogOffsets, WaitqOffsets},
};

type Reader = EndianArcSlice<LittleEndian>;

/// One struct type as DWARF describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StructLayout {
    /// `DW_AT_byte_size`.
    pub size: u64,
    /// Member name → byte offset in the struct (embedded fields under their type's
    /// short name, as Go spells them, e.g. `maybeTraceablePtr`).
    pub members: HashMap<String, u64>,
    /// Member name → its type's DWARF name (`*runtime.g`, `runtime.waitq`,
    /// `internal/runtime/atomic.Uint32`), to follow members into nested structs.
    pub member_types: HashMap<String, String>,
}

/// The runtime structs gleak reads facts from (the probes' offsets, the blocked
/// goroutines' structures, the heap, and for the release tables `moduledata`).
pub const RUNTIME_STRUCTS: &[&str] = &[
    "runtime.g",
    "runtime.m",
    "runtime.stack",
    "runtime.gobuf",
    "runtime.sudog",
    "runtime.hchan",
    "runtime.waitq",
    "runtime.moduledata",
    "runtime.mheap",
    "runtime.mspan",
    "runtime.special",
    // A test's name, for blaming leaks on tests (in test binaries only).
    "testing.T",
    "testing.common",
    // GOMEMLIMIT as the runtime holds it, for the time to the memory limit.
    "runtime.gcControllerState",
];

/// Structs Go wraps a single word in. Offsets are of the word, so a path ending
/// in a member of one of these types is followed into it: (type, member holding the word).
pub const WRAPPERS: &[(&str, &str)] = &[
    // g.atomicstatus from 1.20 (package renamed in 1.23).
    ("runtime/internal/atomic.Uint32", "value"),
    ("internal/runtime/atomic.Uint32", "value"),
    // sudog.elem / sudog.c from 1.26: `vu` is the source of truth, `vp` may be nil.
    ("runtime.maybeTraceablePtr", "vu"),
    ("runtime.maybeTraceableChan", "maybeTraceablePtr"),
    // gcControllerState.memoryLimit (package renamed in 1.23).
    ("runtime/internal/atomic.Int64", "value"),
    ("internal/runtime/atomic.Int64", "value"),
];

/// The layouts of [`RUNTIME_STRUCTS`] and [`WRAPPERS`] in one binary, and the one
/// reading of member paths through them: what the DWARF backend gives the probes
/// and what `cargo xtask gotables` writes into the release tables.
pub struct RuntimeStructs {
    layouts: HashMap<String, StructLayout>,
}

impl RuntimeStructs {
    /// From the layouts read; a struct without members counts as missing.
    pub fn new(layouts: HashMap<String, StructLayout>) -> Self {
        Self { layouts: layouts.into_iter().filter(|(_, s)| !s.members.is_empty()).collect() }
    }

    /// The names of the structs to read.
    fn names() -> Vec<&'static str> {
        RUNTIME_STRUCTS.iter().copied().chain(WRAPPERS.iter().map(|(name, _)| *name)).collect()
    }

    pub fn read(info: &DwarfInfo, binary: &GoBinary) -> Result<Self> {
        Ok(Self::new(info.struct_layouts(binary, &Self::names())?))
    }

    /// [`Self::read`] for DWARF loaded with [`DwarfInfo::from_elf`]: any ELF file,
    /// e.g. an arm64 build checked on x86-64. `path` is for messages.
    pub fn read_in(info: &DwarfInfo, path: &Path) -> Result<Self> {
        Ok(Self::new(info.struct_layouts_in(path, &Self::names())?))
    }

    /// How many of the structs the binary defines.
    pub fn len(&self) -> usize {
        self.layouts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layouts.is_empty()
    }

    pub fn layout(&self, name: &str) -> std::result::Result<&StructLayout, String> {
        self.layouts.get(name).ok_or_else(|| format!("no struct {name}"))
    }

    /// The DWARF name of a member's type (`runtime.gobuf`, `uint16`).
    pub fn member_type(&self, struct_name: &str, member: &str) -> Option<&str> {
        self.layouts.get(struct_name)?.member_types.get(member).map(String::as_str)
    }

    /// Offset of `path[0]` in `struct_name`, plus that of `path[1]` in its type, and
    /// so on, each member inside its struct; then into any [`WRAPPERS`] type the
    /// last member has (`sudog.c` is the `vu` word of its `maybeTraceableChan`).
    pub fn offset(&self, struct_name: &str, path: &[&str]) -> std::result::Result<u64, String> {
        let mut owner = struct_name.to_string();
        let mut offset = 0u64;
        let mut steps: Vec<String> = path.iter().rev().map(|s| s.to_string()).collect();
        while let Some(member) = steps.pop() {
            let layout = self.layout(&owner)?;
            let member_offset = layout
                .members
                .get(&member)
                .copied()
                .filter(|&at| at < if layout.size > 0 { layout.size } else { MAX_STRUCT_SIZE })
                .ok_or_else(|| format!("no member {owner}.{member} inside the struct"))?;
            offset = offset.checked_add(member_offset).ok_or_else(|| format!("{owner}.{member}: offset overflows"))?;
            let member_type = layout.member_types.get(&member).cloned().unwrap_or_default();
            if steps.is_empty() {
                if let Some((_, inner)) = WRAPPERS.iter().find(|(wrapper, _)| *wrapper == member_type) {
                    steps.push(inner.to_string());
                }
            }
            owner = member_type;
        }
        Ok(offset)
    }

    /// [`Self::offset`] as a `u32`, the width gleak keeps offsets in.
    pub fn offset32(&self, struct_name: &str, path: &[&str]) -> std::result::Result<u32, String> {
        let offset = self.offset(struct_name, path)?;
        u32::try_from(offset).map_err(|_| format!("{struct_name}.{} at {offset:#x}", path.join(".")))
    }

    /// Where blocked goroutines are stuck and on what: `g.sched`, `g.waiting`,
    /// `runtime.sudog`, `runtime.hchan`, `runtime.waitq`.
    pub fn blocked_layout(&self) -> std::result::Result<BlockedLayout, String> {
        let at = |owner: &str, path: &[&str]| self.offset32(owner, path);
        Ok(BlockedLayout {
            g_sched_sp: at("runtime.g", &["sched", "sp"])?,
            g_sched_pc: at("runtime.g", &["sched", "pc"])?,
            g_sched_bp: at("runtime.g", &["sched", "bp"])?,
            g_sched_ctxt: at("runtime.g", &["sched", "ctxt"])?,
            g_waiting: at("runtime.g", &["waiting"])?,
            sudog: SudogOffsets {
                g: at("runtime.sudog", &["g"])?,
                next: at("runtime.sudog", &["next"])?,
                prev: at("runtime.sudog", &["prev"])?,
                elem: at("runtime.sudog", &["elem"])?,
                c: at("runtime.sudog", &["c"])?,
                waitlink: at("runtime.sudog", &["waitlink"])?,
                isselect: at("runtime.sudog", &["isSelect"])?,
            },
            hchan: HchanOffsets {
                qcount: at("runtime.hchan", &["qcount"])?,
                dataqsiz: at("runtime.hchan", &["dataqsiz"])?,
                elemsize: at("runtime.hchan", &["elemsize"])?,
                closed: at("runtime.hchan", &["closed"])?,
                recvq: at("runtime.hchan", &["recvq"])?,
                sendq: at("runtime.hchan", &["sendq"])?,
            },
            waitq: WaitqOffsets { first: at("runtime.waitq", &["first"])?, last: at("runtime.waitq", &["last"])? },
        })
    }

    /// `testing.T.common.name`, relative to a `testing.T` (test binaries only).
    pub fn test_name(&self) -> std::result::Result<u32, String> {
        match self.member_type("testing.T", "common") {
            Some("testing.common") => self.offset32("testing.T", &["common", "name"]),
            other => Err(format!("testing.T.common is a {other:?}, not testing.common")),
        }
    }

    /// `runtime.gcControllerState.memoryLimit`'s word, relative to the struct
    /// (`runtime.gcController`): an `atomic.Int64` since Go 1.19.
    pub fn gc_memory_limit(&self) -> std::result::Result<u32, String> {
        match self.member_type("runtime.gcControllerState", "memoryLimit") {
            Some(t) if t.ends_with("/atomic.Int64") => self.offset32("runtime.gcControllerState", &["memoryLimit"]),
            other => Err(format!("runtime.gcControllerState.memoryLimit is a {other:?}, not an atomic.Int64")),
        }
    }

    /// The heap's span metadata the reachability proof reads.
    pub fn heap_layout(&self) -> std::result::Result<HeapLayout, String> {
        let at = |owner: &str, path: &[&str]| self.offset32(owner, path);
        // A field gleak reads as either width, by its type.
        let width = |owner: &str, member: &str| match self.member_type(owner, member) {
            Some("uint16") => Ok(2),
            Some("uintptr" | "uint64") => Ok(8),
            other => Err(format!("{owner}.{member} of type {other:?}, not of a width gleak reads")),
        };
        let g_size = self.layout("runtime.g")?.size;
        Ok(HeapLayout {
            mheap_allspans: at("runtime.mheap", &["allspans"])?,
            mspan_start: at("runtime.mspan", &["startAddr"])?,
            mspan_limit: at("runtime.mspan", &["limit"])?,
            mspan_elemsize: at("runtime.mspan", &["elemsize"])?,
            mspan_spanclass: at("runtime.mspan", &["spanclass"])?,
            mspan_state: at("runtime.mspan", &["state"])?,
            mspan_specials: at("runtime.mspan", &["specials"])?,
            mspan_freeindex: at("runtime.mspan", &["freeindex"])?,
            mspan_freeindex_bytes: width("runtime.mspan", "freeindex")?,
            mspan_alloc_bits: at("runtime.mspan", &["allocBits"])?,
            special_offset: at("runtime.special", &["offset"])?,
            special_offset_bytes: width("runtime.special", "offset")?,
            g_size: u32::try_from(g_size)
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| format!("runtime.g of {g_size} bytes"))?,
            g_syscallsp: at("runtime.g", &["syscallsp"])?,
        })
    }
}

/// How many times the file's size its DWARF sections may take decompressed, in
/// total. Go's zlib-compressed DWARF inflates 3–5×, and the file holds far more
/// than DWARF: real binaries stay under 2×.
const MAX_DWARF_EXPANSION: u64 = 16;
/// The most the DWARF sections may take decompressed, whatever the file's size.
const MAX_DWARF_BYTES: u64 = 4 << 30;

/// The bytes DWARF sections of a `file_len`-byte file may take decompressed.
fn dwarf_budget(file_len: usize) -> u64 {
    (file_len as u64).saturating_mul(MAX_DWARF_EXPANSION).min(MAX_DWARF_BYTES)
}

/// Bound on member offsets of a struct whose DWARF gives no size (Go's always do).
const MAX_STRUCT_SIZE: u64 = 1 << 16;
/// Deepest DIE nesting accepted. Go's DWARF nests a handful deep (unit,
/// function, inlined calls, lexical blocks); addr2line follows inlined calls by
/// recursion, so a hostile chain would overflow the stack, and a deep chain of
/// same-named structs makes the struct search quadratic.
const MAX_DIE_DEPTH: isize = 256;

/// A `DW_TAG_constant`'s value, as Go writes it (signed or unsigned data).
fn constant_value(entry: &gimli::DebuggingInformationEntry<Reader>) -> Option<u64> {
    let value = entry.attr_value(gimli::DW_AT_const_value).ok()??;
    value.udata_value().or_else(|| value.sdata_value().map(|v| v as u64))
}

/// DWARF sections of a binary, decompressed once.
pub struct DwarfInfo {
    dwarf: Arc<gimli::Dwarf<Reader>>,
}

impl DwarfInfo {
    pub fn load(binary: &GoBinary) -> Result<Self> {
        Self::from_elf(binary.data(), &binary.path)
    }

    /// The DWARF of any ELF file, whatever its machine: struct layouts do not need
    /// the binary's architecture to be one gleak traces (tests/tests/gotables.rs
    /// checks arm64 builds this way). `path` is for messages.
    pub fn from_elf(image: &[u8], path: &Path) -> Result<Self> {
        let path = &path.to_path_buf();
        let file =
            object::File::parse(image).map_err(|e| Error::NotElf { path: path.clone(), reason: e.to_string() })?;
        if file.section_by_name(".debug_info").is_none() {
            return Err(Error::NoDwarf { path: path.clone() });
        }
        // What the sections may take decompressed, all together, checked against the
        // sizes their compression headers claim before anything is allocated.
        let mut budget = dwarf_budget(image.len());
        let mut load = |id: gimli::SectionId| -> Result<Reader> {
            let bytes: Arc<[u8]> = match file.section_by_name(id.name()) {
                Some(section) => {
                    let bad = |reason: String| Error::Dwarf {
                        path: path.clone(),
                        reason: format!("{}: {reason}", id.name()),
                    };
                    let data = section.compressed_data().map_err(|e| bad(e.to_string()))?;
                    let size = match data.format {
                        object::CompressionFormat::None => data.data.len() as u64,
                        _ => data.uncompressed_size,
                    };
                    budget = budget.checked_sub(size).ok_or_else(|| {
                        bad(format!(
                            "{size} bytes decompressed is more than the DWARF of a {}-byte file can hold",
                            image.len()
                        ))
                    })?;
                    data.decompress().map_err(|e| bad(e.to_string()))?.into_owned().into()
                }
                None => Arc::from(&[][..]),
            };
            Ok(EndianArcSlice::new(bytes, LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(&mut load)?;
        if let Some(depth) = too_deep(&dwarf) {
            let reason = format!("entries nest {depth} deep (more than {MAX_DIE_DEPTH})");
            return Err(Error::Dwarf { path: path.clone(), reason });
        }
        Ok(Self { dwarf: Arc::new(dwarf) })
    }

    fn dwarf_err(&self, path: &Path, e: gimli::Error) -> Error {
        Error::Dwarf { path: path.to_path_buf(), reason: e.to_string() }
    }

    /// Member offsets and byte size of the named struct types, e.g. `runtime.g`,
    /// `runtime.hchan`, `internal/runtime/atomic.Uint32` (full Go names as DWARF
    /// spells them). Names the binary does not define are absent from the result:
    /// which structs exist depends on the Go release.
    pub fn struct_layouts(&self, binary: &GoBinary, names: &[&str]) -> Result<HashMap<String, StructLayout>> {
        self.struct_layouts_in(&binary.path, names)
    }

    /// [`Self::struct_layouts`] of a file that need not be a [`GoBinary`] (see
    /// [`Self::from_elf`]); `path` is for messages.
    pub fn struct_layouts_in(&self, path: &Path, names: &[&str]) -> Result<HashMap<String, StructLayout>> {
        let mut structs = HashMap::new();
        self.visit_runtime_unit(path, |unit, entry| {
            if entry.tag() == gimli::DW_TAG_structure_type {
                self.collect_struct(unit, entry, names, &mut structs)?;
            }
            Ok(())
        })?;
        Ok(structs)
    }

    /// Calls `visit` on every entry of the runtime package's unit, where the Go
    /// linker puts every type (of all packages) and the runtime's constants.
    fn visit_runtime_unit(
        &self,
        path: &Path,
        mut visit: impl FnMut(&gimli::Unit<Reader>, &gimli::DebuggingInformationEntry<Reader>) -> gimli::Result<()>,
    ) -> Result<()> {
        let mut units = self.dwarf.units();
        while let Some(header) = units.next().map_err(|e| self.dwarf_err(path, e))? {
            let unit = self.dwarf.unit(header).map_err(|e| self.dwarf_err(path, e))?;
            let is_runtime = {
                let mut entries = unit.entries();
                match entries.next_dfs() {
                    Ok(Some((_, root))) => self.name_of(&unit, root).as_deref() == Some("runtime"),
                    _ => false,
                }
            };
            if !is_runtime {
                continue;
            }
            let mut entries = unit.entries();
            while let Some((_, entry)) = entries.next_dfs().map_err(|e| self.dwarf_err(path, e))? {
                visit(&unit, entry).map_err(|e| self.dwarf_err(path, e))?;
            }
        }
        Ok(())
    }

    /// Adds the struct `entry` to `structs` if it is one of `wanted`. The first
    /// definition with members wins (a name can also appear as an empty declaration).
    fn collect_struct(
        &self,
        unit: &gimli::Unit<Reader>,
        entry: &gimli::DebuggingInformationEntry<Reader>,
        wanted: &[&str],
        structs: &mut HashMap<String, StructLayout>,
    ) -> gimli::Result<()> {
        let Some(name) = self.name_of(unit, entry) else {
            return Ok(());
        };
        if !wanted.contains(&name.as_str()) || structs.get(&name).is_some_and(|s| !s.members.is_empty()) {
            return Ok(());
        }
        let size = entry.attr_value(gimli::DW_AT_byte_size).ok().flatten().and_then(|v| v.udata_value()).unwrap_or(0);
        let (members, member_types) = self.members(unit, entry.offset())?;
        structs.insert(name, StructLayout { size, members, member_types });
        Ok(())
    }

    /// The runtime package's integer constants named `prefix…` (`runtime._G` gives
    /// `runtime._Gdead` = 6 and the other goroutine statuses), by full name.
    pub fn constants(&self, binary: &GoBinary, prefix: &str) -> Result<HashMap<String, u64>> {
        let mut constants = HashMap::new();
        self.visit_runtime_unit(&binary.path, |unit, entry| {
            if entry.tag() == gimli::DW_TAG_constant {
                if let Some(name) = self.name_of(unit, entry).filter(|name| name.starts_with(prefix)) {
                    if let Some(value) = constant_value(entry) {
                        constants.insert(name, value);
                    }
                }
            }
            Ok(())
        })?;
        Ok(constants)
    }

    /// Reads the runtime structures and `runtime.waitReason*` constants.
    pub fn runtime_layout(&self, binary: &GoBinary) -> Result<(RuntimeLayout, HashMap<u8, String>)> {
        let wanted = RuntimeStructs::names();
        let mut layouts: HashMap<String, StructLayout> = HashMap::new();
        let mut wait_consts = HashMap::new();
        // One pass for both structs and constants: the runtime unit holds every type.
        self.visit_runtime_unit(&binary.path, |unit, entry| {
            match entry.tag() {
                gimli::DW_TAG_structure_type => self.collect_struct(unit, entry, &wanted, &mut layouts)?,
                gimli::DW_TAG_constant => {
                    let Some(name) = self.name_of(unit, entry) else {
                        return Ok(());
                    };
                    if let Some(short) = name.strip_prefix("runtime.waitReason") {
                        // Wait reasons are a uint8: a larger value is not one
                        // (truncated, it would rename another).
                        if let Some(v) = constant_value(entry).and_then(|v| u8::try_from(v).ok()) {
                            wait_consts.insert(v, short.to_string());
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        let runtime_structs = RuntimeStructs::new(layouts);
        let structs = &runtime_structs.layouts;
        let missing = |what: &str| Error::MissingDwarf { path: binary.path.clone(), what: what.to_string() };
        let g = structs.get("runtime.g").ok_or_else(|| missing("struct runtime.g"))?;
        let m = structs.get("runtime.m").ok_or_else(|| missing("struct runtime.m"))?;
        let stack = structs.get("runtime.stack").ok_or_else(|| missing("struct runtime.stack"))?;
        // Offsets address the target's memory: each must lie inside its struct.
        let inside = |s: &StructLayout, off: u64| off < if s.size > 0 { s.size } else { MAX_STRUCT_SIZE };
        let offset = |s: &StructLayout, name: &str| -> Option<u32> {
            s.members.get(name).copied().filter(|&v| inside(s, v)).and_then(|v| u32::try_from(v).ok())
        };
        let field = |s: &StructLayout, owner: &str, name: &str| -> Result<u32> {
            offset(s, name).ok_or_else(|| missing(&format!("field {owner}.{name} (at an offset inside the struct)")))
        };
        let stack_off = field(g, "runtime.g", "stack")?;
        let stack_field = |name: &str| -> Result<u32> {
            let off = field(stack, "runtime.stack", name)?;
            stack_off
                .checked_add(off)
                .filter(|&v| inside(g, u64::from(v)))
                .ok_or_else(|| missing(&format!("field runtime.g.stack.{name} (inside runtime.g)")))
        };
        let blocked = match runtime_structs.blocked_layout() {
            Ok(b) => Some(b),
            Err(e) => {
                log::debug!(
                    "{}: {e}: blocked goroutines' structures from gleak's tables instead",
                    binary.path.display()
                );
                None
            }
        };
        let heap = match runtime_structs.heap_layout() {
            Ok(h) => Some(h),
            Err(e) => {
                log::debug!("{}: {e}: heap spans from gleak's tables instead", binary.path.display());
                None
            }
        };
        let layout = RuntimeLayout {
            heap,
            blocked,
            g_stack_lo: stack_field("lo")?,
            g_stack_hi: stack_field("hi")?,
            g_m: field(g, "runtime.g", "m")?,
            g_status: field(g, "runtime.g", "atomicstatus")?,
            g_goid: field(g, "runtime.g", "goid")?,
            g_waitsince: field(g, "runtime.g", "waitsince")?,
            g_waitreason: field(g, "runtime.g", "waitreason")?,
            g_parent_goid: offset(g, "parentGoid"),
            g_gopc: field(g, "runtime.g", "gopc")?,
            g_startpc: field(g, "runtime.g", "startpc")?,
            m_curg: field(m, "runtime.m", "curg")?,
            m_procid: offset(m, "procid"),
            test_name: runtime_structs.test_name().ok(),
            gc_memory_limit: runtime_structs.gc_memory_limit().ok(),
        };
        Ok((layout, wait_consts))
    }

    fn name_of(&self, unit: &gimli::Unit<Reader>, entry: &gimli::DebuggingInformationEntry<Reader>) -> Option<String> {
        let value = entry.attr_value(gimli::DW_AT_name).ok()??;
        let s = self.dwarf.attr_string(unit, value).ok()?;
        use gimli::Reader as _;
        Some(s.to_string_lossy().ok()?.into_owned())
    }

    /// Offsets and type names of a struct's members.
    fn members(
        &self,
        unit: &gimli::Unit<Reader>,
        offset: gimli::UnitOffset,
    ) -> gimli::Result<(HashMap<String, u64>, HashMap<String, String>)> {
        let mut offsets = HashMap::new();
        let mut types = HashMap::new();
        let mut tree = unit.entries_tree(Some(offset))?;
        let root = tree.root()?;
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != gimli::DW_TAG_member {
                continue;
            }
            let Some(name) = self.name_of(unit, entry) else {
                continue;
            };
            if let Some(loc) = entry.attr_value(gimli::DW_AT_data_member_location)? {
                if let Some(off) = loc.udata_value() {
                    offsets.insert(name.clone(), off);
                }
            }
            if let Some(type_name) = self.type_name_of(unit, entry) {
                types.insert(name, type_name);
            }
        }
        Ok((offsets, types))
    }

    /// The name of the type `entry`'s `DW_AT_type` refers to, if it is in this unit
    /// (Go refers to types with `DW_FORM_ref_addr`, the runtime unit holds them all).
    fn type_name_of(
        &self,
        unit: &gimli::Unit<Reader>,
        entry: &gimli::DebuggingInformationEntry<Reader>,
    ) -> Option<String> {
        let offset = match entry.attr_value(gimli::DW_AT_type).ok()?? {
            gimli::AttributeValue::UnitRef(offset) => offset,
            gimli::AttributeValue::DebugInfoRef(offset) => offset.to_unit_offset(&unit.header)?,
            _ => return None,
        };
        let type_entry = unit.entry(offset).ok()?;
        self.name_of(unit, &type_entry)
    }

    /// A line-table symbolizer sharing these sections.
    pub fn symbolizer(&self, binary: &GoBinary) -> Result<DwarfSymbolizer> {
        let ctx =
            addr2line::Context::from_arc_dwarf(self.dwarf.clone()).map_err(|e| self.dwarf_err(&binary.path, e))?;
        Ok(DwarfSymbolizer { ctx })
    }
}

/// The depth of the first entry nested deeper than [`MAX_DIE_DEPTH`], if any. A
/// unit that does not parse stops its own walk (its readers report it, as before).
fn too_deep(dwarf: &gimli::Dwarf<Reader>) -> Option<isize> {
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(abbrevs) = dwarf.abbreviations(&header) else { continue };
        let Ok(mut entries) = header.entries_raw(&abbrevs, None) else { continue };
        while !entries.is_empty() {
            let depth = entries.next_depth();
            if depth > MAX_DIE_DEPTH {
                return Some(depth);
            }
            match entries.read_abbreviation() {
                Ok(Some(abbrev)) => {
                    if entries.skip_attributes(abbrev.attributes()).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
    None
}

/// PC → frames through DWARF line tables and inlined-subroutine records.
pub struct DwarfSymbolizer {
    ctx: addr2line::Context<Reader>,
}

impl Symbolizer for DwarfSymbolizer {
    fn frames(&self, pc: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        // addr2line looks up [pc, pc + 1): the last address would overflow (a panic
        // in debug builds). No code is there.
        if pc == u64::MAX {
            return out;
        }
        let Ok(mut iter) = self.ctx.find_frames(pc).skip_all_loads() else {
            return out;
        };
        while let Ok(Some(frame)) = iter.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok().map(|n| n.into_owned()))
                .unwrap_or_else(|| "?".to_string());
            let (file, line) = frame
                .location
                .as_ref()
                .map(|l| (l.file.unwrap_or("?").to_string(), l.line.unwrap_or(0)))
                .unwrap_or_else(|| ("?".to_string(), 0));
            out.push(Frame { function, file, line });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::testelf::{zlib_section, DieWriter, TestElf, BASE, SHF_COMPRESSED};

    /// A runtime unit with `runtime.g`, `runtime.m` and `runtime.stack` (`stack` at
    /// `stack_at` in a 0x200-byte g), then whatever `more` writes.
    fn runtime_unit(stack_at: u64, more: impl FnOnce(&mut DieWriter)) -> DieWriter {
        let mut w = DieWriter::default();
        w.unit("runtime", BASE, 0x1000);
        w.structure("runtime.stack", 16).member("lo", 0).member("hi", 8).end();
        w.structure("runtime.g", 0x200).member("stack", stack_at).member("m", 0x30).member("atomicstatus", 0x90);
        w.member("goid", 0x98).member("waitsince", 0xa0).member("waitreason", 0xb0);
        w.member("gopc", 0x118).member("startpc", 0x128).end();
        w.structure("runtime.m", 0x100).member("curg", 0xc0).end();
        more(&mut w);
        w.end();
        w
    }

    fn load(dies: &mut DieWriter) -> (GoBinary, Result<DwarfInfo>) {
        let bin = TestElf::go("go1.22.4").dwarf(dies).binary().unwrap();
        let dwarf = DwarfInfo::load(&bin);
        (bin, dwarf)
    }

    #[test]
    fn layout_and_wait_reasons_of_a_minimal_unit() {
        let (bin, dwarf) = load(&mut runtime_unit(0, |w| {
            w.constant("runtime.waitReasonChanSend", 20);
            // Not a uint8: it used to be truncated to 44 and rename that reason.
            w.constant("runtime.waitReasonTooBig", 300);
        }));
        let (layout, consts) = dwarf.unwrap().runtime_layout(&bin).unwrap();
        assert_eq!((layout.g_goid, layout.g_stack_hi, layout.m_curg, layout.g_parent_goid), (0x98, 8, 0xc0, None));
        assert_eq!(consts, HashMap::from([(20, "ChanSend".to_string())]));
    }

    /// Member offsets index the target's memory: past the struct, or past u32 (once
    /// truncated), or `g.stack + stack.hi` past u32 (once an overflow), they are
    /// missing, not wrapped.
    #[test]
    fn offsets_outside_their_struct_are_missing() {
        for stack_at in [0x200, 0xffff_fff8, (1 << 32) + 8] {
            let (bin, dwarf) = load(&mut runtime_unit(stack_at, |_| {}));
            let err = dwarf.unwrap().runtime_layout(&bin).unwrap_err();
            assert!(matches!(err, Error::MissingDwarf { ref what, .. } if what.contains("runtime.g.stack")), "{err}");
        }
        let (bin, dwarf) = load(&mut runtime_unit(0x1f8, |_| {}));
        let err = dwarf.unwrap().runtime_layout(&bin).unwrap_err();
        assert!(err.to_string().contains("runtime.g.stack.hi"), "{err}");
    }

    /// A compression header may claim any size: past the budget (16× the file),
    /// the section is refused before anything is allocated (object would reserve
    /// the claimed size first).
    #[test]
    fn compressed_sections_claiming_too_much_are_refused() {
        let (abbrev, info) = runtime_unit(0, |_| {}).finish();
        let with_claim = |claim: u64| {
            let mut elf = TestElf::go("go1.22.4");
            elf.section(".debug_abbrev", 0, abbrev.clone());
            elf.section(".debug_info", SHF_COMPRESSED, zlib_section(&info, claim));
            let bin = elf.binary().unwrap();
            assert!(bin.has_dwarf);
            DwarfInfo::load(&bin).map(|d| d.runtime_layout(&bin).map(|(l, _)| l.g_goid))
        };
        assert_eq!(with_claim(info.len() as u64).unwrap().unwrap(), 0x98);
        for claim in [1 << 40, u64::MAX, 64 << 20] {
            let err = with_claim(claim).err().unwrap();
            assert!(matches!(err, Error::Dwarf { ref reason, .. } if reason.contains("more than")), "{claim}: {err}");
        }
        // Within the budget but not what the stream holds: refused by the inflater.
        assert!(matches!(with_claim(info.len() as u64 + 1), Err(Error::Dwarf { .. })));
    }

    /// addr2line follows inlined calls by recursion: a chain 100 000 deep used to
    /// overflow the stack at the first symbolized PC. Such DWARF is refused (the
    /// tables take over); real nesting is a few levels.
    #[test]
    fn deep_nesting_is_refused() {
        let chain = |depth: usize| {
            let mut w = runtime_unit(0, |w| {
                w.subprogram("main.f", BASE, 0x100);
                for _ in 0..depth {
                    w.inlined(BASE, 0x10);
                }
                for _ in 0..depth + 1 {
                    w.end();
                }
            });
            load(&mut w)
        };
        let (bin, dwarf) = chain(10);
        let dwarf_symbolizer = |bin: &GoBinary| DwarfInfo::load(bin).unwrap().symbolizer(bin).unwrap();
        let frames = dwarf.unwrap().symbolizer(&bin).unwrap().frames(BASE + 1);
        assert_eq!(frames.len(), 11, "the shallow chain reaches addr2line's inline parsing");
        // addr2line computes pc + 1.
        assert!(dwarf_symbolizer(&bin).frames(u64::MAX).is_empty());
        let (bin, dwarf) = chain(100_000);
        let err = dwarf.err().unwrap();
        assert!(err.to_string().contains("nest"), "{err}");
        let info = crate::runtime::debuginfo::RuntimeInfo::load(&bin).unwrap();
        assert_eq!(info.sources.layout, "gleak's Go 1.22 table");
        assert!(info.symbolizer.frames(BASE + 1).is_empty());

        // Same-named structs nested in each other: each one's member search walked
        // all the deeper ones (quadratic).
        let mut w = runtime_unit(0, |w| {
            for _ in 0..50_000 {
                w.structure("runtime.hchan", 8);
            }
            for _ in 0..50_000 {
                w.end();
            }
        });
        assert!(load(&mut w).1.is_err());
    }
}
