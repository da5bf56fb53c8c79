//! A release's facts read from a binary that release's toolchain built: struct
//! layouts and the `runtime._G*` constants from its DWARF, the wait-reason names
//! from its `runtime.waitReasonStrings`. What `cargo xtask gotables` writes into
//! the data files, and what `tests/tests/gotables.rs` compares them with.

use std::{collections::HashMap, path::Path};

use super::{GOffsets, MOffsets, ModuledataOffsets, Origin, ReleaseFacts};
use crate::{
    binary::{
        dwarf::{DwarfInfo, StructLayout},
        GoBinary,
    },
    runtime::layout::{GobufOffsets, HchanOffsets, HeapLayout, SudogOffsets, WaitqOffsets},
};

/// The runtime structs the facts are read from.
pub const STRUCTS: &[&str] = &[
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
];

/// Structs Go wraps a single word in. The tables give the offset of the word, so a
/// member of one of these types is followed into it: (type, member holding the word).
pub const WRAPPERS: &[(&str, &str)] = &[
    // g.atomicstatus from 1.20 (package renamed in 1.23).
    ("runtime/internal/atomic.Uint32", "value"),
    ("internal/runtime/atomic.Uint32", "value"),
    // sudog.elem / sudog.c from 1.26: `vu` is the source of truth, `vp` may be nil.
    ("runtime.maybeTraceablePtr", "vu"),
    ("runtime.maybeTraceableChan", "maybeTraceablePtr"),
];

/// The layouts of [`STRUCTS`] and [`WRAPPERS`] in one binary, with member paths
/// followed through nested structs.
pub struct RuntimeStructs {
    layouts: HashMap<String, StructLayout>,
}

impl RuntimeStructs {
    pub fn read(info: &DwarfInfo, binary: &GoBinary) -> Result<Self, String> {
        Self::read_in(info, &binary.path)
    }

    /// [`Self::read`] for DWARF loaded with [`DwarfInfo::from_elf`]: any ELF file,
    /// e.g. an arm64 build checked on x86-64. `path` is for messages.
    pub fn read_in(info: &DwarfInfo, path: &Path) -> Result<Self, String> {
        let names: Vec<&str> = STRUCTS.iter().copied().chain(WRAPPERS.iter().map(|(name, _)| *name)).collect();
        let layouts = info.struct_layouts_in(path, &names).map_err(|e| e.to_string())?;
        Ok(Self { layouts })
    }

    /// How many of the structs the binary defines.
    pub fn len(&self) -> usize {
        self.layouts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layouts.is_empty()
    }

    pub fn layout(&self, name: &str) -> Result<&StructLayout, String> {
        self.layouts.get(name).ok_or_else(|| format!("no struct {name}"))
    }

    /// Offset of `path[0]` in `struct_name`, plus that of `path[1]` in its type, and
    /// so on; then into any [`WRAPPERS`] type the last member has.
    pub fn offset(&self, struct_name: &str, path: &[&str]) -> Result<u64, String> {
        let mut owner = struct_name.to_string();
        let mut offset = 0u64;
        let mut steps: Vec<String> = path.iter().rev().map(|s| s.to_string()).collect();
        while let Some(member) = steps.pop() {
            let layout = self.layout(&owner)?;
            let member_offset = layout.members.get(&member).ok_or_else(|| format!("no member {owner}.{member}"))?;
            offset = offset.checked_add(*member_offset).ok_or_else(|| format!("{owner}.{member}: offset overflows"))?;
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

    /// The DWARF name of a member's type (`runtime.gobuf`, `uint16`).
    pub fn member_type(&self, struct_name: &str, member: &str) -> Option<&str> {
        self.layouts.get(struct_name)?.member_types.get(member).map(String::as_str)
    }
}

/// Reads the facts of the release that built `binary` (which must have DWARF and
/// symbols: a plain `go build`). Errors name the binary's release and what is missing.
pub fn read_release_facts(binary: &GoBinary) -> Result<ReleaseFacts, String> {
    let release = &binary.go_version.raw;
    read(binary).map_err(|e| format!("{release} ({}): {e}", binary.path.display()))
}

fn read(binary: &GoBinary) -> Result<ReleaseFacts, String> {
    let info = DwarfInfo::load(binary).map_err(|e| e.to_string())?;
    let structs = RuntimeStructs::read(&info, binary)?;
    let at = |struct_name: &str, path: &[&str]| -> Result<u32, String> {
        let offset = structs.offset(struct_name, path)?;
        u32::try_from(offset).map_err(|_| format!("{struct_name}.{} at {offset:#x}", path.join(".")))
    };
    // The gobuf and waitq offsets are relative: they apply only if g.sched is a
    // gobuf and hchan's queues are waitqs.
    for (owner, member, wanted) in [
        ("runtime.g", "sched", "runtime.gobuf"),
        ("runtime.hchan", "recvq", "runtime.waitq"),
        ("runtime.hchan", "sendq", "runtime.waitq"),
    ] {
        let found = structs.member_type(owner, member);
        if found != Some(wanted) {
            return Err(format!("{owner}.{member} is a {found:?}, not {wanted}"));
        }
    }
    let g_size = structs.layout("runtime.g").map(|g| g.size)?;
    let g_size = u32::try_from(g_size).map_err(|_| format!("runtime.g of {g_size} bytes"))?;
    let parent_goid = match structs.layout("runtime.g")?.members.contains_key("parentGoid") {
        true => Some(at("runtime.g", &["parentGoid"])?),
        false => None,
    };
    let g = GOffsets {
        size: g_size,
        stack_lo: at("runtime.g", &["stack", "lo"])?,
        stack_hi: at("runtime.g", &["stack", "hi"])?,
        m: at("runtime.g", &["m"])?,
        sched: at("runtime.g", &["sched"])?,
        atomicstatus: at("runtime.g", &["atomicstatus"])?,
        goid: at("runtime.g", &["goid"])?,
        waitsince: at("runtime.g", &["waitsince"])?,
        waitreason: at("runtime.g", &["waitreason"])?,
        parent_goid,
        gopc: at("runtime.g", &["gopc"])?,
        startpc: at("runtime.g", &["startpc"])?,
        waiting: at("runtime.g", &["waiting"])?,
    };
    // A field gleak reads as either width, by its type.
    let width = |owner: &str, member: &str| match structs.member_type(owner, member) {
        Some("uint16") => Ok(2),
        Some("uintptr" | "uint64") => Ok(8),
        other => Err(format!("{owner}.{member} of type {other:?}")),
    };
    let heap = HeapLayout {
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
        g_size,
        g_syscallsp: at("runtime.g", &["syscallsp"])?,
    };
    let statuses = info.constants(binary, "runtime._G").map_err(|e| e.to_string())?;
    let status = |name: &str| {
        statuses
            .get(&format!("runtime.{name}"))
            .map(|&value| u32::try_from(value).map_err(|_| format!("{name} = {value}")))
    };
    let mut dead_statuses = vec![status("_Gdead").ok_or("no constant runtime._Gdead")??];
    dead_statuses.extend(status("_Gdeadextra").transpose()?);
    dead_statuses.sort_unstable();
    let wait_reasons = binary
        .wait_reason_strings()
        .filter(|reasons| !reasons.is_empty())
        .ok_or("no runtime.waitReasonStrings in the binary")?;
    let minor = binary.go_version.minor;
    let facts = ReleaseFacts {
        minors: minor..=minor,
        origin: Origin::GeneratedFrom(vec![binary.go_version.raw.clone()]),
        g,
        m: MOffsets { curg: at("runtime.m", &["curg"])?, procid: at("runtime.m", &["procid"])? },
        gobuf: GobufOffsets {
            sp: at("runtime.gobuf", &["sp"])?,
            pc: at("runtime.gobuf", &["pc"])?,
            bp: at("runtime.gobuf", &["bp"])?,
        },
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
        moduledata: ModuledataOffsets {
            pc_header: at("runtime.moduledata", &["pcHeader"])?,
            ftab: at("runtime.moduledata", &["ftab"])?,
            minpc: at("runtime.moduledata", &["minpc"])?,
            text: at("runtime.moduledata", &["text"])?,
            etext: at("runtime.moduledata", &["etext"])?,
            noptrdata: at("runtime.moduledata", &["noptrdata"])?,
            data: at("runtime.moduledata", &["data"])?,
            gofunc: at("runtime.moduledata", &["gofunc"])?,
        },
        heap: Some(heap),
        dead_statuses,
        leaked_status: status("_Gleaked").transpose()?,
        wait_reasons,
    };
    // What gleak would refuse to load, it does not write.
    facts.check()?;
    Ok(facts)
}
