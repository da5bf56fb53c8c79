//! `runtime.firstmoduledata`: where the runtime keeps the start of Go's text and
//! of `go:func.*`, which `.gopclntab` needs but (Go ≥ 1.26) no longer records,
//! and which an external linker moves (gcc puts its own code before Go's).
//!
//! Found without symbols by its first field, a pointer to `.gopclntab`, checked
//! against its second (a pointer to the function-name table inside it). Pointers
//! are read as the loader leaves them: a PIE or externally linked binary holds
//! them as relocations, not as file bytes.

use super::GoBinary;
use crate::runtime::gotables;

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
    // Data sections may overlap (a hostile file can list thousands over the whole
    // file): scan at most twice the file's bytes.
    let mut budget = bin.data().len().saturating_mul(2);
    let by_value = bin.data_sections().find_map(|(vaddr, bytes)| {
        budget = budget.checked_sub(bytes.len())?;
        (0..bytes.len().saturating_sub(8) as u64)
            .step_by(8)
            .filter(|&i| bytes.get(i as usize..i as usize + 8) == Some(&pclntab.to_le_bytes()[..]))
            .filter_map(|i| vaddr.checked_add(i))
            .find(|&at| valid(at))
    });
    by_value.or_else(|| {
        let mut candidates: Vec<u64> = bin.relocations_to(pclntab).collect();
        candidates.sort_unstable();
        candidates.into_iter().find(|&at| valid(at))
    })
}

fn is_moduledata(bin: &GoBinary, at: u64, pclntab: u64) -> bool {
    let Some(funcname_off) = pclntab.checked_add(HEADER_FUNCNAME_OFFSET).and_then(|a| bin.u64_at(a)) else {
        return false;
    };
    let second = at.checked_add(8).and_then(|a| bin.pointer_at(a));
    bin.pointer_at(at) == Some(pclntab) && second.is_some() && second == pclntab.checked_add(funcname_off)
}

fn field(bin: &GoBinary, md: u64, offset: impl Fn(&gotables::ModuledataOffsets) -> u32) -> Option<u64> {
    let facts = gotables::for_release(bin.go_version.minor)?;
    bin.pointer_at(md.checked_add(u64::from(offset(&facts.moduledata)))?).filter(|&v| v != 0)
}

/// `moduledata.text`: the link address of the first Go function.
pub fn text(bin: &GoBinary, md: u64) -> Option<u64> {
    field(bin, md, |o| o.text)
}

/// `moduledata.gofunc`: the base of the function metadata (inline trees).
pub fn gofunc(bin: &GoBinary, md: u64) -> Option<u64> {
    field(bin, md, |o| o.gofunc)
}

#[cfg(test)]
mod tests {
    use crate::binary::testelf::{TestElf, SHF_ALLOC, SHF_WRITE};

    /// A `.gopclntab` header claiming an address at the top of the address space,
    /// and a data word pointing there: checking that word as a module data read
    /// the header at address + 32, which overflowed.
    #[test]
    fn pclntab_at_the_top_of_the_address_space() {
        let top = u64::MAX - 16;
        let mut elf = TestElf::go("go1.22.4");
        elf.section_at(".gopclntab", SHF_ALLOC, top, vec![0; 128]);
        elf.section(".data", SHF_ALLOC | SHF_WRITE, top.to_le_bytes().repeat(4));
        let bin = elf.binary().unwrap();
        assert_eq!(super::locate(&bin, top), None);
        assert!(bin.moduledata.is_none() && bin.pclntab().is_none());
    }
}
