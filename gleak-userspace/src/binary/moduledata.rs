//! `runtime.firstmoduledata`: where the runtime keeps the start of Go's text and
//! of `go:func.*`, which `.gopclntab` needs but (Go ≥ 1.26) no longer records,
//! and which an external linker moves (gcc puts its own code before Go's).
//!
//! Found without symbols by its first field, a pointer to `.gopclntab`, checked
//! against its second (a pointer to the function-name table inside it). Pointers
//! are read as the loader leaves them: a PIE or externally linked binary holds
//! them as relocations, not as file bytes.

use super::GoBinary;
use crate::gotables;

/// `pcHeader.funcnameOffset`: where the function-name table starts, from the header.
const HEADER_FUNCNAME_OFFSET: u64 = 32;

/// The link address of the module data whose `pcHeader` is `pclntab`.
pub fn locate(bin: &GoBinary, pclntab: u64) -> Option<u64> {
    let valid = |at: u64| is_moduledata(bin, at, pclntab);
    if let Some(sym) = bin.data_symbol("runtime.firstmoduledata") {
        if valid(sym.addr) {
            return Some(sym.addr);
        }
    }
    // Go ≥ 1.26 gives it a section of its own.
    if let Some(at) = bin.section(".go.module").map(|s| s.vaddr).filter(|&at| valid(at)) {
        return Some(at);
    }
    let by_value = bin.data_sections().find_map(|(vaddr, bytes)| {
        (0..bytes.len().saturating_sub(8) as u64)
            .step_by(8)
            .filter(|&i| bytes.get(i as usize..i as usize + 8) == Some(&pclntab.to_le_bytes()[..]))
            .map(|i| vaddr + i)
            .find(|&at| valid(at))
    });
    by_value.or_else(|| {
        let mut candidates: Vec<u64> = bin.relocations_to(pclntab).collect();
        candidates.sort_unstable();
        candidates.into_iter().find(|&at| valid(at))
    })
}

fn is_moduledata(bin: &GoBinary, at: u64, pclntab: u64) -> bool {
    let Some(funcname_off) = bin.u64_at(pclntab + HEADER_FUNCNAME_OFFSET) else {
        return false;
    };
    bin.pointer_at(at) == Some(pclntab) && bin.pointer_at(at + 8) == pclntab.checked_add(funcname_off)
}

fn field(bin: &GoBinary, md: u64, offset: impl Fn(&gotables::ModuledataOffsets) -> u32) -> Option<u64> {
    let facts = gotables::for_release(bin.go_version.minor)?;
    bin.pointer_at(md + u64::from(offset(&facts.moduledata))).filter(|&v| v != 0)
}

/// `moduledata.text`: the link address of the first Go function.
pub fn text(bin: &GoBinary, md: u64) -> Option<u64> {
    field(bin, md, |o| o.text)
}

/// `moduledata.gofunc`: the base of the function metadata (inline trees).
pub fn gofunc(bin: &GoBinary, md: u64) -> Option<u64> {
    field(bin, md, |o| o.gofunc)
}
