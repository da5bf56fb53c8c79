//! A release's facts read from a binary that release's toolchain built: struct
//! layouts and the `runtime._G*` constants from its DWARF, the wait-reason names
//! from its `runtime.waitReasonStrings`. What `cargo xtask gotables` writes into
//! the data files, and what `tests/tests/gotables.rs` compares them with. Member
//! paths, the blocked goroutines' structures and the heap's are read as the DWARF
//! backend reads them for the probes ([`RuntimeStructs`]): the same code, once.

use super::{GOffsets, GcControllerOffsets, MOffsets, ModuledataOffsets, Origin, ReleaseFacts, TestingOffsets};
use crate::{
    binary::{
        dwarf::{DwarfInfo, RuntimeStructs},
        GoBinary,
    },
    runtime::layout::GobufOffsets,
};

/// Reads the facts of the release that built `binary` (which must have DWARF and
/// symbols: a plain `go build`). Errors name the binary's release and what is missing.
pub fn read_release_facts(binary: &GoBinary) -> Result<ReleaseFacts, String> {
    let release = &binary.go_version.raw;
    read(binary).map_err(|e| format!("{release} ({}): {e}", binary.path.display()))
}

fn read(binary: &GoBinary) -> Result<ReleaseFacts, String> {
    let info = DwarfInfo::load(binary).map_err(|e| e.to_string())?;
    let structs = RuntimeStructs::read(&info, binary).map_err(|e| e.to_string())?;
    let at = |struct_name: &str, path: &[&str]| structs.offset32(struct_name, path);
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
    let blocked = structs.blocked_layout()?;
    let heap = structs.heap_layout()?;
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
        waiting: blocked.g_waiting,
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
            ctxt: at("runtime.gobuf", &["ctxt"])?,
            bp: at("runtime.gobuf", &["bp"])?,
        },
        sudog: blocked.sudog,
        hchan: blocked.hchan,
        waitq: blocked.waitq,
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
        testing: Some(TestingOffsets { name: structs.test_name()? }),
        gc_controller: Some(GcControllerOffsets { memory_limit: structs.gc_memory_limit()? }),
        dead_statuses,
        leaked_status: status("_Gleaked").transpose()?,
        wait_reasons,
    };
    // What gleak would refuse to load, it does not write.
    facts.check()?;
    Ok(facts)
}
