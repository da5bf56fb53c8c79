//! Addresses of the runtime globals gleak reads from a live process
//! (`runtime.allgs`, `runtime.allglen`, `runtime.semtable`, `runtime.mheap_`,
//! `runtime.gcController`), with or without a symbol table.
//!
//! Without symbols they are read off the machine code of `runtime.allgadd`, the
//! one function that appends to the goroutine table:
//! `allgs = append(allgs, gp); …; atomic.Storeuintptr(&allglen, uintptr(len(allgs)))`.
//! The slice is the address whose +8 and +16 (len, cap) are touched too; `allglen`
//! is the destination of the atomic store whose value was loaded from `allgs+8`.
//! Where the symbols exist, both ways must agree. The machine code is read
//! through the binary's [`crate::arch`].

use std::collections::HashSet;

use super::GoBinary;
use crate::arch::DataAccess;

/// Where the goroutine table is, or why it is not known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoroutineTable {
    /// `runtime.allgs`: the slice header `{ptr, len, cap}`.
    pub allgs: u64,
    /// `runtime.allglen`: the length readers without the lock must use.
    pub allglen: u64,
}

/// How the table was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundBy {
    Symbols,
    MachineCode,
}

/// Finds the goroutine table: by the symbols when present (cross-checked with
/// the machine code), else by the machine code alone.
pub fn goroutine_table(bin: &GoBinary) -> Result<(GoroutineTable, FoundBy), String> {
    let decoded = from_allgadd(bin);
    let symbols = match (bin.data_symbol("runtime.allgs"), bin.data_symbol("runtime.allglen")) {
        (Some(allgs), Some(allglen)) => Some(GoroutineTable { allgs: allgs.addr, allglen: allglen.addr }),
        _ => None,
    };
    match (symbols, decoded) {
        (Some(sym), Ok(code)) if sym != code => {
            // The symbols are the truth; the decoder has met a new code shape.
            log::warn!(
                "{}: runtime.allgadd decodes to {code:x?}, the symbols say {sym:x?}; using the symbols",
                bin.path.display()
            );
            Ok((sym, FoundBy::Symbols))
        }
        (Some(sym), _) => Ok((sym, FoundBy::Symbols)),
        (None, Ok(code)) => Ok((code, FoundBy::MachineCode)),
        (None, Err(why)) => Err(why),
    }
}

/// Finds `runtime.semtable` (the semaphore table, where goroutines blocked on a
/// `sync.Mutex`, `RWMutex` or `WaitGroup` wait before Go 1.26): by the symbol
/// when present (cross-checked with the machine code), else by the machine code.
pub fn semtable(bin: &GoBinary) -> Result<(u64, FoundBy), String> {
    let decoded = from_semacquire1(bin);
    match (bin.data_symbol("runtime.semtable").map(|s| s.addr), decoded) {
        (Some(sym), Ok(code)) if sym != code => {
            log::warn!(
                "{}: runtime.semacquire1 decodes to {code:#x}, the symbol says {sym:#x}; using the symbol",
                bin.path.display()
            );
            Ok((sym, FoundBy::Symbols))
        }
        (Some(sym), _) => Ok((sym, FoundBy::Symbols)),
        (None, Ok(code)) => Ok((code, FoundBy::MachineCode)),
        (None, Err(why)) => Err(why),
    }
}

/// Decodes `runtime.semacquire1`: `semtable.rootFor(addr)` is inlined as the
/// table's address taken (`LEAQ runtime.semtable(SB), R`), then indexed, at every
/// use. The only writable data whose address the function takes is the table (the
/// other addresses it takes are of read-only function values and types).
pub fn from_semacquire1(bin: &GoBinary) -> Result<u64, String> {
    let (sym, code) = bin.function_code("runtime.semacquire1").map_err(|e| e.to_string())?;
    let accesses =
        bin.arch.data_accesses(code, sym.addr).map_err(|at| format!("runtime.semacquire1+{at:#x} does not decode"))?;
    let mut targets: Vec<u64> = accesses
        .iter()
        .filter(|&&(addr, access)| access == DataAccess::Address && bin.is_writable_data(addr))
        .map(|&(addr, _)| addr)
        .collect();
    targets.sort_unstable();
    targets.dedup();
    match targets[..] {
        [table] => Ok(table),
        [] => Err("runtime.semacquire1 takes the address of no writable data (runtime.semtable)".into()),
        _ => Err(format!("runtime.semacquire1 takes the address of several writable globals: {targets:#x?}")),
    }
}

/// Finds `runtime.mheap_` (the heap, whose `allspans` the reachability proof
/// reads): by the symbol when present (cross-checked with the machine code), else
/// from `runtime.mallocinit`, which passes `&mheap_` to `runtime.(*mheap).init`.
pub fn mheap(bin: &GoBinary) -> Result<(u64, FoundBy), String> {
    let decoded = from_mallocinit(bin);
    match (bin.data_symbol("runtime.mheap_").map(|s| s.addr), decoded) {
        (Some(sym), Ok(code)) if sym != code => {
            log::warn!(
                "{}: runtime.mallocinit decodes to {code:#x}, the symbol says {sym:#x}; using the symbol",
                bin.path.display()
            );
            Ok((sym, FoundBy::Symbols))
        }
        (Some(sym), _) => Ok((sym, FoundBy::Symbols)),
        (None, Ok(code)) => Ok((code, FoundBy::MachineCode)),
        (None, Err(why)) => Err(why),
    }
}

/// Decodes `runtime.mallocinit` (see [`mheap`]).
pub fn from_mallocinit(bin: &GoBinary) -> Result<u64, String> {
    address_passed(bin, "runtime.mallocinit", "runtime.(*mheap).init")
}

/// Finds `runtime.gcController` (the GC pacer, which holds GOMEMLIMIT as
/// `memoryLimit`): by the symbol when present (cross-checked with the machine
/// code), else from `runtime.gcinit`, which passes `&gcController` to
/// `runtime.(*gcControllerState).init` (Go 1.19–1.27 alike).
pub fn gc_controller(bin: &GoBinary) -> Result<(u64, FoundBy), String> {
    let decoded = from_gcinit(bin);
    match (bin.data_symbol("runtime.gcController").map(|s| s.addr), decoded) {
        (Some(sym), Ok(code)) if sym != code => {
            log::warn!(
                "{}: runtime.gcinit decodes to {code:#x}, the symbol says {sym:#x}; using the symbol",
                bin.path.display()
            );
            Ok((sym, FoundBy::Symbols))
        }
        (Some(sym), _) => Ok((sym, FoundBy::Symbols)),
        (None, Ok(code)) => Ok((code, FoundBy::MachineCode)),
        (None, Err(why)) => Err(why),
    }
}

/// Decodes `runtime.gcinit` (see [`gc_controller`]).
pub fn from_gcinit(bin: &GoBinary) -> Result<u64, String> {
    address_passed(bin, "runtime.gcinit", "runtime.(*gcControllerState).init")
}

/// The writable data whose address `caller` passes as the first argument of its
/// call to `callee` (a method's receiver: a global).
fn address_passed(bin: &GoBinary, caller: &str, callee: &str) -> Result<u64, String> {
    let init = bin.function(callee).ok_or_else(|| format!("no function {callee}"))?;
    let (sym, code) = bin.function_code(caller).map_err(|e| e.to_string())?;
    let addr = bin
        .arch
        .address_argument(code, sym.addr, init.addr)
        .map_err(|at| format!("{caller}+{at:#x} does not decode"))?
        .ok_or_else(|| format!("{caller} passes no data address to {callee}"))?;
    if !bin.is_writable_data(addr) {
        return Err(format!("{caller} passes {addr:#x}, not writable data, to {callee}"));
    }
    Ok(addr)
}

/// Decodes `runtime.allgadd`.
pub fn from_allgadd(bin: &GoBinary) -> Result<GoroutineTable, String> {
    let (sym, code) = bin.function_code("runtime.allgadd").map_err(|e| e.to_string())?;
    let accesses =
        bin.arch.data_accesses(code, sym.addr).map_err(|at| format!("runtime.allgadd+{at:#x} does not decode"))?;
    let touched: HashSet<u64> = accesses.iter().map(|&(a, _)| a).collect();
    let allgs = touched
        .iter()
        .copied()
        .filter(|a| {
            // Addresses come from the code: near u64::MAX in a hostile binary.
            let field = |off: u64| a.checked_add(off).is_some_and(|f| touched.contains(&f));
            field(8) && field(16)
        })
        .min()
        .ok_or("runtime.allgadd touches no slice header (runtime.allgs)")?;
    let allglen = accesses
        .iter()
        .find_map(|&(addr, access)| match access {
            DataAccess::AtomicStore { value_from: Some(from) } if Some(from) == allgs.checked_add(8) => Some(addr),
            _ => None,
        })
        .ok_or("runtime.allgadd stores len(allgs) nowhere (runtime.allglen)")?;
    Ok(GoroutineTable { allgs, allglen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::testelf::{TestElf, SHF_ALLOC, SHF_EXECINSTR};

    /// `runtime.allgadd` reading RIP-relatively from the last word of the address
    /// space (a displacement that wraps): its "slice header" fields at +8 and +16
    /// overflowed.
    #[test]
    fn accesses_at_the_top_of_the_address_space() {
        let mut elf = TestElf::go("go1.22.4");
        elf.section(".text", SHF_ALLOC | SHF_EXECINSTR, vec![0; 16]);
        let text = elf.addr_of(".text");
        let target = u64::MAX - 7;
        let disp = target.wrapping_sub(text + 7) as i64 as i32; // after `mov rax, [rip+disp32]`
        let mut code = vec![0x48, 0x8b, 0x05];
        code.extend(disp.to_le_bytes());
        code.push(0xc3);
        let mut elf = TestElf::go("go1.22.4");
        elf.section(".text", SHF_ALLOC | SHF_EXECINSTR, code).symbol("runtime.allgadd", text, 8);
        let bin = elf.binary().unwrap();
        let accesses = bin.arch.data_accesses(bin.function_code("runtime.allgadd").unwrap().1, text).unwrap();
        assert_eq!(accesses, [(target, DataAccess::Plain)]);
        assert!(from_allgadd(&bin).unwrap_err().contains("no slice header"));
    }
}
