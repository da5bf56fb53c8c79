//! The DWARF backend: struct layouts (`runtime.g`/`runtime.m` field offsets and any
//! other runtime struct), wait-reason constants, and PC → function, file:line
//! through the line tables (inlining included).

use std::{collections::HashMap, sync::Arc};

use gimli::{EndianArcSlice, LittleEndian};
use object::{Object, ObjectSection};

use super::GoBinary;
use crate::{
    error::{Error, Result},
    layout::RuntimeLayout,
    symbolize::{Frame, Symbolizer},
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

/// DWARF sections of a binary, decompressed once.
pub struct DwarfInfo {
    dwarf: Arc<gimli::Dwarf<Reader>>,
}

impl DwarfInfo {
    pub fn load(binary: &GoBinary) -> Result<Self> {
        let path = &binary.path;
        let file = object::File::parse(binary.data())
            .map_err(|e| Error::NotElf { path: path.clone(), reason: e.to_string() })?;
        if file.section_by_name(".debug_info").is_none() {
            return Err(Error::NoDwarf { path: path.clone() });
        }
        let load = |id: gimli::SectionId| -> Result<Reader> {
            let bytes: Arc<[u8]> = match file.section_by_name(id.name()) {
                Some(section) => section
                    .uncompressed_data()
                    .map_err(|e| Error::Dwarf { path: path.clone(), reason: format!("{}: {e}", id.name()) })?
                    .into_owned()
                    .into(),
                None => Arc::from(&[][..]),
            };
            Ok(EndianArcSlice::new(bytes, LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(load)?;
        Ok(Self { dwarf: Arc::new(dwarf) })
    }

    fn dwarf_err(&self, binary: &GoBinary, e: gimli::Error) -> Error {
        Error::Dwarf { path: binary.path.clone(), reason: e.to_string() }
    }

    /// Member offsets and byte size of the named struct types, e.g. `runtime.g`,
    /// `runtime.hchan`, `internal/runtime/atomic.Uint32` (full Go names as DWARF
    /// spells them). Names the binary does not define are absent from the result:
    /// which structs exist depends on the Go release.
    pub fn struct_layouts(&self, binary: &GoBinary, names: &[&str]) -> Result<HashMap<String, StructLayout>> {
        let mut structs = HashMap::new();
        self.visit_runtime_unit(binary, |unit, entry| {
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
        binary: &GoBinary,
        mut visit: impl FnMut(&gimli::Unit<Reader>, &gimli::DebuggingInformationEntry<Reader>) -> gimli::Result<()>,
    ) -> Result<()> {
        let mut units = self.dwarf.units();
        while let Some(header) = units.next().map_err(|e| self.dwarf_err(binary, e))? {
            let unit = self.dwarf.unit(header).map_err(|e| self.dwarf_err(binary, e))?;
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
            while let Some((_, entry)) = entries.next_dfs().map_err(|e| self.dwarf_err(binary, e))? {
                visit(&unit, entry).map_err(|e| self.dwarf_err(binary, e))?;
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

    /// Reads the runtime structures and `runtime.waitReason*` constants.
    pub fn runtime_layout(&self, binary: &GoBinary) -> Result<(RuntimeLayout, HashMap<u8, String>)> {
        let wanted = ["runtime.g", "runtime.m", "runtime.stack"];
        let mut layouts: HashMap<String, StructLayout> = HashMap::new();
        let mut wait_consts = HashMap::new();
        // One pass for both structs and constants: the runtime unit holds every type.
        self.visit_runtime_unit(binary, |unit, entry| {
            match entry.tag() {
                gimli::DW_TAG_structure_type => self.collect_struct(unit, entry, &wanted, &mut layouts)?,
                gimli::DW_TAG_constant => {
                    let Some(name) = self.name_of(unit, entry) else {
                        return Ok(());
                    };
                    if let Some(short) = name.strip_prefix("runtime.waitReason") {
                        if let Ok(Some(value)) = entry.attr_value(gimli::DW_AT_const_value) {
                            if let Some(v) = value.udata_value().or_else(|| value.sdata_value().map(|v| v as u64)) {
                                wait_consts.insert(v as u8, short.to_string());
                            }
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        // As before: a struct without members counts as missing.
        let structs: HashMap<String, HashMap<String, u64>> =
            layouts.into_iter().filter(|(_, s)| !s.members.is_empty()).map(|(name, s)| (name, s.members)).collect();
        let missing = |what: &str| Error::MissingDwarf { path: binary.path.clone(), what: what.to_string() };
        let g = structs.get("runtime.g").ok_or_else(|| missing("struct runtime.g"))?;
        let m = structs.get("runtime.m").ok_or_else(|| missing("struct runtime.m"))?;
        let stack = structs.get("runtime.stack").ok_or_else(|| missing("struct runtime.stack"))?;
        let field = |s: &HashMap<String, u64>, owner: &str, name: &str| -> Result<u32> {
            s.get(name).map(|&v| v as u32).ok_or_else(|| missing(&format!("field {owner}.{name}")))
        };
        let stack_off = field(g, "runtime.g", "stack")?;
        let layout = RuntimeLayout {
            g_stack_lo: stack_off + field(stack, "runtime.stack", "lo")?,
            g_stack_hi: stack_off + field(stack, "runtime.stack", "hi")?,
            g_m: field(g, "runtime.g", "m")?,
            g_status: field(g, "runtime.g", "atomicstatus")?,
            g_goid: field(g, "runtime.g", "goid")?,
            g_waitsince: field(g, "runtime.g", "waitsince")?,
            g_waitreason: field(g, "runtime.g", "waitreason")?,
            g_parent_goid: g.get("parentGoid").map(|&v| v as u32),
            g_gopc: field(g, "runtime.g", "gopc")?,
            g_startpc: field(g, "runtime.g", "startpc")?,
            m_curg: field(m, "runtime.m", "curg")?,
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
        let ctx = addr2line::Context::from_arc_dwarf(self.dwarf.clone()).map_err(|e| self.dwarf_err(binary, e))?;
        Ok(DwarfSymbolizer { ctx })
    }
}

/// PC → frames through DWARF line tables and inlined-subroutine records.
pub struct DwarfSymbolizer {
    ctx: addr2line::Context<Reader>,
}

impl Symbolizer for DwarfSymbolizer {
    fn frames(&self, pc: u64) -> Vec<Frame> {
        let mut out = Vec::new();
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
