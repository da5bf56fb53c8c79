//! AArch64 (Go's `arm64`): fixed-width decoding of the few instruction forms
//! gleak reads, Go's internal register ABI, and frames of a link-register machine.
//!
//! Go's internal ABI (`abi-internal.md`, arm64 since Go 1.18): integer arguments
//! and results in R0–R15; the current g in R28. The
//! probes read the same roles from the same registers (`gleak-ebpf/src/arch/`).
//!
//! Decoding is by hand, from the Arm ARM's encoding tables: every instruction is
//! one little-endian word, and the forms needed (BL, RET, ADRP, ADD immediate,
//! MOV, loads and stores with an immediate offset, STLR) are each a mask and a
//! few fields. Every other word only matters for the registers it may write,
//! which are forgotten, erring towards "unknown". No crate in the build decodes
//! A64, and a general disassembler would add a build for these dozen masks.
//!
//! A uprobe on arm64 single-steps the probed instruction out of line or
//! simulates it; the kernel refuses what it can do neither with
//! (`arch/arm64/kernel/probes/decode-insn.c`): exclusive loads and stores,
//! exception-generating and MSR instructions, most hints, branches it does not
//! simulate. [`Aarch64`] names those sites ([`Arch::unprobeable`]).

use std::collections::HashSet;

use super::{Arch, DataAccess, Decoded, Frame};

/// AArch64.
#[derive(Debug)]
pub struct Aarch64;

/// The first integer argument, also the first result (R0); arguments follow in
/// R1–R15.
const RESULT: u8 = 0;
/// Integer argument registers of Go's ABI.
const INTEGER_ARGUMENTS: usize = 16;
const WORD: u64 = 8;
const INSN: u64 = 4;
/// `sys.StackAlign`: the runtime reads a frame's locals map only if its locals
/// area (`varp - sp`) is larger than this (`runtime/stack.go`, `getStackMap`).
const STACK_ALIGN: u64 = 16;

impl Arch for Aarch64 {
    fn name(&self) -> &'static str {
        "aarch64"
    }

    fn elf_machine(&self) -> object::Architecture {
        object::Architecture::Aarch64
    }

    fn relative_relocation(&self) -> u32 {
        object::elf::R_AARCH64_RELATIVE
    }

    fn pc_quantum(&self) -> u8 {
        INSN as u8
    }

    fn signal_frame_sp_pc(&self) -> (u64, u64) {
        // rt_sigframe: siginfo (128), then the ucontext: uc_flags, uc_link,
        // uc_stack, uc_sigmask and its padding to 1024 bits (168 bytes), then
        // sigcontext aligned to 16 (+176): fault_address, regs[31], sp (+256), pc
        // (+264). From the kernel's uapi headers; exercised on x86-64 only.
        (128 + 176 + 256, 128 + 176 + 264)
    }

    fn frame(&self, sp_delta: u64) -> Frame {
        // BL leaves the return address in LR; the prologue stores it at the new
        // sp (`MOVD.W R30, -size(RSP)`) and the caller's frame pointer just below
        // the caller's sp, i.e. in this frame's top word (`MOVD R29, -8(RSP)`).
        // The caller's sp is the top of this frame: no +8 as on x86.
        if sp_delta == 0 {
            // No frame (a leaf, or the entry): the return address is still in LR.
            return Frame {
                return_address: 0,
                return_address_in_link_register: true,
                caller_sp: 0,
                locals_bottom: 0,
                locals_top: 0,
                args: WORD,
            };
        }
        let locals_top = sp_delta.saturating_sub(WORD);
        // Above the saved LR; nothing at all in a frame too small for the runtime
        // to read its locals map.
        let locals_bottom = if locals_top > STACK_ALIGN { WORD } else { locals_top };
        Frame {
            return_address: 0,
            return_address_in_link_register: false,
            caller_sp: sp_delta,
            locals_bottom,
            locals_top,
            // argp = fp + sys.MinFrameSize: the caller's saved-LR slot comes first.
            args: sp_delta + WORD,
        }
    }

    fn ret_offsets(&self, code: &[u8], _func_addr: u64) -> Decoded<Vec<u64>> {
        Ok(words(code)?.filter(|&(_, w)| is_ret(w)).map(|(off, _)| off).collect())
    }

    fn call_offsets(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Vec<u64>> {
        Ok(words(code)?
            .filter(|&(off, w)| bl_target(w, func_addr.wrapping_add(off)) == Some(target))
            .map(|(off, _)| off)
            .collect())
    }

    fn direct_calls(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<(u64, u64)>> {
        Ok(words(code)?.filter_map(|(off, w)| Some((off, bl_target(w, func_addr.wrapping_add(off))?))).collect())
    }

    fn after_first_call(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Option<u64>> {
        let len = code.len() as u64;
        Ok(words(code)?
            .find(|&(off, w)| bl_target(w, func_addr.wrapping_add(off)) == Some(target))
            .map(|(off, _)| off + INSN)
            .filter(|&next| next < len))
    }

    fn call_passing_result(
        &self,
        code: &[u8],
        func_addr: u64,
        producer: u64,
        consumer: u64,
        argument: usize,
    ) -> Decoded<Option<u64>> {
        if argument >= INTEGER_ARGUMENTS {
            return Ok(None);
        }
        let wanted = argument as u8;
        let mut insns = words(code)?;
        if !insns.any(|(off, w)| bl_target(w, func_addr.wrapping_add(off)) == Some(producer)) {
            return Ok(None);
        }
        // Follow the result from R0 into the argument register.
        let mut holder = Some(RESULT);
        for (off, w) in insns {
            if is_call(w) {
                let ok = holder == Some(wanted) && bl_target(w, func_addr.wrapping_add(off)) == Some(consumer);
                return Ok(ok.then_some(off));
            }
            if is_branch_or_exception(w) {
                return Ok(None); // a branch in between: not the straight-line shape we know
            }
            if holder == Some(RESULT) && mov_register(w) == Some((wanted, RESULT)) {
                holder = Some(wanted);
            } else if holder.is_some_and(|h| writes(w).contains(&Some(h))) {
                holder = None;
            }
        }
        Ok(None)
    }

    fn address_argument(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Option<u64>> {
        let mut regs = Registers::default();
        for (off, w) in words(code)? {
            let pc = func_addr.wrapping_add(off);
            if is_call(w) {
                if bl_target(w, pc) == Some(target) {
                    return Ok(regs.address[RESULT as usize]);
                }
                regs = Registers::default();
                continue;
            }
            regs.step(w, pc, &mut Accesses::default());
        }
        Ok(None)
    }

    fn data_accesses(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<(u64, DataAccess)>> {
        let mut regs = Registers::default();
        let mut out = Accesses::default();
        for (off, w) in words(code)? {
            if is_call(w) {
                // A call clobbers every register (Go's ABI has no callee-saved ones).
                regs = Registers::default();
                continue;
            }
            regs.step(w, func_addr.wrapping_add(off), &mut out);
        }
        // An address the code uses as a memory operand's base is how arm64
        // spells a plain access to a global (`ADRP sym, R27; ADD $off, R27,
        // R27; MOVD (R27), Rt` through the assembler's REGTMP, or through any
        // register in position-independent code), not its address taken. Judged
        // over the whole function: the use may follow a branch. An address used
        // both ways is then missed, which errs towards "unknown".
        let Accesses { list, based } = out;
        Ok(list.into_iter().filter(|(addr, access)| *access != DataAccess::Address || !based.contains(addr)).collect())
    }

    fn unprobeable(&self, code: &[u8], offset: u64) -> Option<&'static str> {
        let word = usize::try_from(offset).ok().and_then(|at| code.get(at..at.checked_add(INSN as usize)?));
        let Some(bytes) = word else {
            return Some("not an instruction of the function");
        };
        if !offset.is_multiple_of(INSN) {
            return Some("not at an instruction boundary");
        }
        refusal(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }
}

/// Every instruction word with its offset; `Err` at a trailing partial word.
fn words(code: &[u8]) -> Decoded<impl Iterator<Item = (u64, u32)> + '_> {
    let whole = code.len() - code.len() % INSN as usize;
    if whole != code.len() {
        return Err(whole as u64);
    }
    Ok(code
        .chunks_exact(INSN as usize)
        .enumerate()
        .map(|(i, w)| (i as u64 * INSN, u32::from_le_bytes(w.try_into().expect("4 bytes")))))
}

fn sign_extend(value: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((u64::from(value) << shift) as i64) >> shift
}

fn field(w: u32, low: u32, bits: u32) -> u32 {
    (w >> low) & ((1 << bits) - 1)
}

fn rd(w: u32) -> u8 {
    field(w, 0, 5) as u8
}

fn rn(w: u32) -> u8 {
    field(w, 5, 5) as u8
}

/// `RET Xn` (not the pointer-authenticating forms, which Go does not emit).
fn is_ret(w: u32) -> bool {
    w & 0xffff_fc1f == 0xd65f_0000
}

fn is_bl(w: u32) -> bool {
    w & 0xfc00_0000 == 0x9400_0000
}

/// BL or BLR: a call.
fn is_call(w: u32) -> bool {
    is_bl(w) || w & 0xffff_fc1f == 0xd63f_0000
}

/// The target of a `BL imm26`.
fn bl_target(w: u32, pc: u64) -> Option<u64> {
    is_bl(w).then(|| pc.wrapping_add_signed(sign_extend(w & 0x03ff_ffff, 26) * 4))
}

/// Anything that may not fall through to the next instruction: the branch,
/// exception and system class (bits 28:26 = 101) except its plain system
/// instructions (barriers, hints, MRS), which do.
fn is_branch_or_exception(w: u32) -> bool {
    field(w, 26, 3) == 0b101 && w & 0xffc0_0000 != 0xd500_0000
}

/// `MOV Xd, Xm` (`ORR Xd, XZR, Xm`): `(d, m)`.
fn mov_register(w: u32) -> Option<(u8, u8)> {
    (w & 0xffe0_ffe0 == 0xaa00_03e0).then(|| (rd(w), field(w, 16, 5) as u8))
}

/// The general registers an instruction may write (at most three; R31 is the
/// zero register or sp, never tracked). Errs towards more, but for CASP's
/// second register pair member, which Go does not emit.
fn writes(w: u32) -> [Option<u8>; 3] {
    let reg = |r: u8| (r != 31).then_some(r);
    let is_load_store = field(w, 27, 1) == 1 && field(w, 25, 1) == 0;
    if is_load_store {
        let rt = reg(rd(w));
        if w & 0x3f00_0000 == 0x0800_0000 {
            // Exclusive and ordered: loads write Rt (and Rt2), store-exclusives
            // their status Rs, compare-and-swaps Rs. STLR writes nothing.
            if w & 0x3fdf_fc00 == 0x089f_fc00 {
                return [None; 3];
            }
            return [rt, reg(field(w, 10, 5) as u8), reg(field(w, 16, 5) as u8)];
        }
        match decode_memory(w) {
            Some(m) => [m.loads.then_some(rt).flatten(), m.loads_second, m.writeback.then(|| reg(rn(w))).flatten()],
            // Register-offset forms, SIMD structures: whatever they may write.
            None => [rt, reg(rn(w)), None],
        }
    } else if field(w, 26, 3) == 0b101 {
        // Branches write nothing but BL/BLR's LR (calls are handled apart);
        // MRS and SYSL write Rt.
        [(w & 0xffe0_0000 == 0xd520_0000).then(|| reg(rd(w))).flatten(), None, None]
    } else {
        // Data processing (immediate, register), SIMD and FP: at most Rd.
        [reg(rd(w)), None, None]
    }
}

/// A load or store with an immediate offset from a base register, or a literal load.
#[derive(Clone, Copy, Debug)]
struct Memory {
    /// Offset from the base register at which the access happens.
    offset: i64,
    /// Bytes each register transfers (the second register of a pair follows).
    size: u64,
    pair: bool,
    /// Loads into a general register (Rt; with `loads_second`, Rt2 of a pair).
    loads: bool,
    loads_second: Option<u8>,
    /// Pre- or post-indexed: the base register is written.
    writeback: bool,
    /// `Some(pc-relative address)` for a literal load (no base register).
    literal: Option<i64>,
}

fn decode_memory(w: u32) -> Option<Memory> {
    let size_bits = field(w, 30, 2);
    let simd = field(w, 26, 1) == 1;
    let opc = field(w, 22, 2);
    let base = Memory {
        offset: 0,
        size: 1 << size_bits,
        pair: false,
        loads: false,
        loads_second: None,
        writeback: false,
        literal: None,
    };
    if w & 0x3b00_0000 == 0x3900_0000 {
        // LDR/STR (unsigned immediate), scaled by the access size.
        let scale = if simd && opc & 2 != 0 { 4 } else { size_bits };
        let loads = !simd && opc != 0 && !(size_bits == 3 && opc >= 2);
        return Some(Memory { offset: i64::from(field(w, 10, 12) << scale), size: 1 << scale, loads, ..base });
    }
    if w & 0x3b20_0000 == 0x3800_0000 {
        // Unscaled, post-indexed, unprivileged, pre-indexed: a signed imm9.
        let mode = field(w, 10, 2);
        let loads = !simd && opc != 0 && !(size_bits == 3 && opc >= 2);
        let offset = if mode == 0b01 { 0 } else { sign_extend(field(w, 12, 9), 9) };
        return Some(Memory { offset, loads, writeback: mode & 1 == 1, ..base });
    }
    if w & 0x3a00_0000 == 0x2800_0000 {
        // LDP/STP: a signed imm7 scaled by the register size.
        let l = field(w, 22, 1) == 1;
        let scale = if simd { 2 + field(w, 30, 2) } else { 2 + (field(w, 31, 1)) };
        let mode = field(w, 23, 2);
        let offset = if mode == 0b01 { 0 } else { sign_extend(field(w, 15, 7), 7) << scale };
        let rt2 = field(w, 10, 5) as u8;
        return Some(Memory {
            offset,
            size: 1 << scale,
            pair: true,
            loads: l && !simd,
            loads_second: (l && !simd && rt2 != 31).then_some(rt2),
            writeback: mode & 1 == 1,
            ..base
        });
    }
    if w & 0x3b00_0000 == 0x1800_0000 {
        // LDR (literal): pc + imm19 * 4. PRFM (opc 11) loads nothing.
        let loads = !simd && size_bits != 3;
        let size = if simd {
            4 << size_bits
        } else if size_bits == 0 {
            4
        } else {
            8
        };
        return Some(Memory { size, loads, literal: Some(sign_extend(field(w, 5, 19), 19) * 4), ..base });
    }
    None
}

/// Data accesses in order, and the addresses used as a memory operand's base.
#[derive(Default)]
struct Accesses {
    list: Vec<(u64, DataAccess)>,
    based: HashSet<u64>,
}

/// What straight-line code has put in each general register.
#[derive(Clone, Debug, Default)]
struct Registers {
    /// A data address computed pc-relatively (ADRP, ADRP+ADD, ADR).
    address: [Option<u64>; 31],
    /// A value loaded from such an address.
    loaded: [Option<u64>; 31],
}

impl Registers {
    fn forget(&mut self, r: u8) {
        if let Some(i) = Some(usize::from(r)).filter(|&i| i < 31) {
            self.address[i] = None;
            self.loaded[i] = None;
        }
    }

    fn used_as_base(&self, r: u8, out: &mut Accesses) {
        if let Some(addr) = self.address_in(r) {
            out.based.insert(addr);
        }
    }

    fn take_address(&mut self, r: u8, addr: u64, out: &mut Accesses) {
        self.address[usize::from(r)] = Some(addr);
        out.list.push((addr, DataAccess::Address));
    }

    fn address_in(&self, r: u8) -> Option<u64> {
        self.address.get(r as usize).copied().flatten()
    }

    /// Executes `w` at `pc` on what is known, appending the data it touches.
    fn step(&mut self, w: u32, pc: u64, out: &mut Accesses) {
        let d = rd(w);
        // ADRP: the 4 KiB page of a global; the low bits come in its use.
        if w & 0x9f00_0000 == 0x9000_0000 {
            let imm = sign_extend((field(w, 5, 19) << 2) | field(w, 29, 2), 21) << 12;
            self.forget(d);
            if d != 31 {
                self.address[d as usize] = Some((pc & !0xfff).wrapping_add_signed(imm));
            }
            return;
        }
        // ADR: an address, whole.
        if w & 0x9f00_0000 == 0x1000_0000 {
            let addr = pc.wrapping_add_signed(sign_extend((field(w, 5, 19) << 2) | field(w, 29, 2), 21));
            self.forget(d);
            if d != 31 {
                self.take_address(d, addr, out);
            }
            return;
        }
        // ADD Xd, Xn, #imm{, LSL #12} on a page: the global's address.
        if w & 0xff80_0000 == 0x9100_0000 {
            let shift = field(w, 22, 1) * 12;
            let base = self.address_in(rn(w));
            self.forget(d);
            if let (Some(base), true) = (base, d != 31) {
                let addr = base.wrapping_add(u64::from(field(w, 10, 12)) << shift);
                self.take_address(d, addr, out);
            }
            return;
        }
        // STLR (Go's atomic stores): a store-release of Rt to [Rn].
        if w & 0x3fdf_fc00 == 0x089f_fc00 {
            if let Some(addr) = self.address_in(rn(w)) {
                self.used_as_base(rn(w), out);
                let value_from = self.loaded.get(d as usize).copied().flatten();
                out.list.push((addr, DataAccess::AtomicStore { value_from }));
            }
            return;
        }
        // LDAR: a load-acquire of [Rn] into Rt.
        if w & 0x3fdf_fc00 == 0x08df_fc00 {
            let addr = self.address_in(rn(w));
            if addr.is_some() {
                self.used_as_base(rn(w), out);
            }
            self.forget(d);
            if let (Some(addr), true) = (addr, d != 31) {
                out.list.push((addr, DataAccess::Plain));
                self.loaded[d as usize] = Some(addr);
            }
            return;
        }
        let memory = decode_memory(w);
        let target = memory.and_then(|m| match m.literal {
            Some(rel) => Some(pc.wrapping_add_signed(rel)),
            None if field(w, 27, 1) == 1 && field(w, 25, 1) == 0 => {
                self.address_in(rn(w)).map(|base| base.wrapping_add_signed(m.offset))
            }
            None => None,
        });
        if let (Some(m), Some(addr)) = (memory, target) {
            if m.literal.is_none() {
                self.used_as_base(rn(w), out);
            }
            out.list.push((addr, DataAccess::Plain));
            if m.pair {
                out.list.push((addr.wrapping_add(m.size), DataAccess::Plain));
            }
        }
        for r in writes(w).into_iter().flatten() {
            self.forget(r);
        }
        if let (Some(m), Some(addr)) = (memory, target) {
            if m.loads && d != 31 {
                self.loaded[d as usize] = Some(addr);
            }
            if let Some(second) = m.loads_second {
                self.loaded[second as usize] = Some(addr.wrapping_add(m.size));
            }
        }
    }
}

/// Why the kernel's arm64 uprobes refuse `w` (`arm_probe_decode_insn`), or
/// would step it wrongly out of line; `None` where a uprobe works.
fn refusal(w: u32) -> Option<&'static str> {
    // Load/store exclusive (LDXR, STXR, LDAXR, STLXR, pairs): a single step
    // between the exclusive load and store clears the monitor; the kernel refuses.
    if w & 0x3f80_0000 == 0x0800_0000 {
        return Some("an exclusive load/store (the kernel refuses to probe it)");
    }
    // FEAT_MOPS memory copy/set sequences.
    if w & 0x3b20_0c00 == 0x1900_0400 {
        return Some("a memory copy/set instruction (the kernel refuses to probe it)");
    }
    // Literal loads the kernel does not simulate: PRFM (literal), and SIMD/FP
    // literal loads, which it would step from the out-of-line slot's pc.
    if w & 0xff00_0000 == 0xd800_0000 || w & 0x3f00_0000 == 0x1c00_0000 {
        return Some("a pc-relative load the kernel does not simulate");
    }
    if field(w, 26, 3) != 0b101 {
        return None;
    }
    // Branches, exceptions and system instructions.
    let simulated_branch = w & 0xfc00_0000 == 0x1400_0000 // B
        || is_bl(w)
        || w & 0xff00_0010 == 0x5400_0000 // B.cond
        || w & 0x7e00_0000 == 0x3400_0000 // CBZ, CBNZ
        || w & 0x7e00_0000 == 0x3600_0000 // TBZ, TBNZ
        || w & 0xff9f_fc1f == 0xd61f_0000 // BR, BLR
        || is_ret(w);
    if simulated_branch {
        return None;
    }
    if w & 0xffc0_0000 != 0xd500_0000 {
        // Exception generation (SVC, BRK, …), ERET, authenticated branches.
        return Some("a branch or exception the kernel does not simulate");
    }
    // Hints: only NOP and the pointer-authentication and BTI hints step safely.
    if w & 0xffff_f01f == 0xd503_201f {
        const STEPPABLE_HINTS: [u32; 12] =
            [0x000, 0x0e0, 0x100, 0x140, 0x300, 0x320, 0x340, 0x360, 0x400, 0x440, 0x480, 0x4c0];
        return (!STEPPABLE_HINTS.contains(&(w & 0xfe0))).then_some("a hint the kernel refuses to step");
    }
    // MSR (immediate, register): state changes a single step cannot undo.
    if w & 0xfff8_f01f == 0xd500_401f || w & 0xfff0_0000 == 0xd510_0000 {
        return Some("an MSR (the kernel refuses to probe it)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// `runtime.newproc.func1` of Go 1.27.3 (arm64), as `go tool objdump` shows it.
    const NEWPROC_FUNC1: [u32; 28] = [
        0xf9400b90, // MOVD 16(R28), R16
        0xeb3063ff, // CMP R16, RSP
        0x540002c9, // BLS 22(PC)
        0xf81d0ffe, // MOVD.W R30, -48(RSP)
        0xf81f83fd, // MOVD R29, -8(RSP)
        0xd10023fd, // SUB $8, RSP, R29
        0xf9400f42, // MOVD 24(R26), R2
        0xa9408740, // LDP 8(R26), (R0, R1)
        0xaa1f03e3, // MOVD ZR, R3
        0xaa1f03e4, // MOVD ZR, R4
        0x97ff70da, // CALL runtime.newproc1(SB)          0x81668
        0xf9401b85, // MOVD 48(R28), R5
        0xf94068a5, // MOVD 208(R5), R5
        0xaa0003e1, // MOVD R0, R1
        0xb24003e2, // ORR $1, ZR, R2
        0xaa0503e0, // MOVD R5, R0
        0x97ff8420, // CALL runtime.runqput(SB)           0x81680
        0xf0000a7b, // ADRP 1372160(PC), R27
        0x39715365, // MOVBU 3156(R27), R5
        0x36000045, // TBZ $0, R5, 2(PC)
        0x94001394, // CALL runtime.wakep(SB)
        0xf85f83fd, // MOVD -8(RSP), R29
        0xf84307fe, // MOVD.P 48(RSP), R30
        0xd65f03c0, // RET                                0x8169c
        0xaa1e03e3, // MOVD R30, R3
        0x9400230f, // CALL runtime.morestack.abi0(SB)
        0x17ffffe6, // JMP runtime.newproc.func1(SB)
        0x00000000, // padding
    ];
    const FUNC1_ADDR: u64 = 0x81640;

    #[test]
    fn finds_the_call_that_receives_newproc1s_result() {
        let code = code(&NEWPROC_FUNC1);
        // As `go tool nm` lists them.
        let (newproc1, runqput) = (0x5d9d0, 0x62700);
        let second = 1;
        assert_eq!(Aarch64.call_passing_result(&code, FUNC1_ADDR, newproc1, runqput, second), Ok(Some(0x40)));
        assert_eq!(Aarch64.call_offsets(&code, FUNC1_ADDR, newproc1), Ok(vec![0x28]));
        assert_eq!(Aarch64.after_first_call(&code, FUNC1_ADDR, newproc1), Ok(Some(0x2c)));
        assert_eq!(Aarch64.ret_offsets(&code, FUNC1_ADDR), Ok(vec![0x5c]));
        // runqput's first argument (pp, R0) is not newproc1's result: R0 is
        // overwritten (`MOVD R5, R0`) before the call.
        assert_eq!(Aarch64.call_passing_result(&code, FUNC1_ADDR, newproc1, runqput, 0), Ok(None));
        // Producer and consumer swapped: no site.
        assert_eq!(Aarch64.call_passing_result(&code, FUNC1_ADDR, runqput, newproc1, second), Ok(None));
    }

    /// A hostile symbol at the top of the address space: pcs and targets wrap.
    #[test]
    fn addresses_wrap_instead_of_overflowing() {
        let bytes = code(&[
            0x97ffffff, // BL -4
            0x90000000, // ADRP +0, R0 (at a pc wrapped to 0)
            0xf9400000, // MOVD (R0), R0
        ]);
        let top = u64::MAX - 3;
        assert_eq!(Aarch64.call_offsets(&bytes, top, top - 4), Ok(vec![0]));
        assert_eq!(Aarch64.after_first_call(&bytes, top, top - 4), Ok(Some(4)));
        assert_eq!(Aarch64.data_accesses(&bytes, top), Ok(vec![(0, DataAccess::Plain)]));
        assert_eq!(Aarch64.call_passing_result(&bytes, top, top - 4, 0, 99), Ok(None));
    }

    #[test]
    fn a_partial_word_does_not_decode() {
        let mut bytes = code(&[0xd65f03c0]);
        bytes.extend([0x1f, 0x20]);
        assert_eq!(Aarch64.ret_offsets(&bytes, 0), Err(4));
    }

    /// `runtime.allgadd` of Go 1.27.3: the slice read by LDP through REGTMP, its
    /// length stored with STLR from a register loaded from `allgs+8`.
    #[test]
    fn atomic_store_says_where_its_value_came_from() {
        let pc = 0x54c80;
        let code = code(&[
            0xd0000abb, // ADRP 1400832(PC), R27       page 0x1aa000
            0x9110037b, // ADD $1024, R27, R27          0x1aa400 (allgs)
            0xa9400760, // LDP (R27), (R0, R1)
            0x91000421, // ADD $1, R1, R1
            0xd0000abb, // ADRP 1400832(PC), R27
            0xf9420b62, // MOVD 1040(R27), R2           allgs+16
            0xd0000abb, // ADRP 1400832(PC), R27
            0xf9420761, // MOVD 1032(R27), R1           allgs+8
            0x90000be2, // ADRP 1556480(PC), R2        page 0x1d0000
            0x91376042, // ADD $3544, R2, R2            0x1d0dd8 (allglen)
            0xc89ffc41, // STLR R1, (R2)
        ]);
        // As `go tool nm` lists them (all these pcs lie in one 4 KiB page, as in the binary).
        let allgs = 0x1aa400;
        let allglen = 0x1d0dd8;
        assert_eq!(
            Aarch64.data_accesses(&code, pc),
            Ok(vec![
                (allgs, DataAccess::Plain),
                (allgs + 8, DataAccess::Plain),
                (allgs + 16, DataAccess::Plain),
                (allgs + 8, DataAccess::Plain),
                (allglen, DataAccess::AtomicStore { value_from: Some(allgs + 8) }),
            ])
        );
    }

    /// `runtime.mallocinit`'s `MOVD $runtime.mheap_(SB), R0; CALL runtime.(*mheap).init(SB)`
    /// after a call whose argument was another address; then an address in R1.
    #[test]
    fn address_passed_as_first_argument() {
        let code = code(&[
            0x90000000, // ADRP +0, R0          page 0
            0x91100000, // ADD $0x400, R0, R0   0x400
            0x94000010, // BL +0x40             0x48
            0xb0000000, // ADRP +0x1000, R0     page 0x1000
            0x91004000, // ADD $0x10, R0, R0    0x1010
            0x94000100, // BL +0x400            0x414
            0x90000001, // ADRP +0, R1
            0x91100021, // ADD $0x400, R1, R1
            0x94000100, // BL +0x400            0x420
        ]);
        assert_eq!(Aarch64.address_argument(&code, 0, 0x414), Ok(Some(0x1010)));
        assert_eq!(Aarch64.address_argument(&code, 0, 0x48), Ok(Some(0x400)));
        // The address is in R1, not the first argument: nothing.
        assert_eq!(Aarch64.address_argument(&code, 0, 0x420), Ok(None));
    }

    /// A plain access through an address register, REGTMP (R27) or another
    /// (PIE), is not the global's address taken; an address computed on is (how
    /// `semacquire1` indexes `semtable`).
    #[test]
    fn regtmp_accesses_are_plain() {
        let code = code(&[
            0x9000001b, // ADRP +0, R27
            0x9111b77b, // ADD $1133, R27, R27    0x46d
            0x39400363, // MOVBU (R27), R3
            0x90000004, // ADRP +0, R4
            0x91180084, // ADD $1536, R4, R4      0x600
            0xf9400084, // MOVD (R4), R4
            0x90000003, // ADRP +0, R3
            0x912a8063, // ADD $2720, R3, R3      0xaa0
            0x8b011861, // ADD R1<<6, R3, R1
            0xf9400021, // MOVD (R1), R1: R1 unknown now
        ]);
        assert_eq!(
            Aarch64.data_accesses(&code, 0),
            Ok(vec![(0x46d, DataAccess::Plain), (0x600, DataAccess::Plain), (0xaa0, DataAccess::Address)])
        );
    }

    /// As `runtime/traceback.go` derives it on arm64 (`usesLR`): `fp = sp +
    /// spdelta`, the return address at `sp` (or in LR with no frame), `varp =
    /// fp - 8` (the caller's frame pointer) in a frame, `argp = fp + 8`.
    #[test]
    fn frames_as_the_runtime_unwinds_them() {
        let frame = Aarch64.frame(0x30);
        assert_eq!(
            frame,
            Frame {
                return_address: 0,
                return_address_in_link_register: false,
                caller_sp: 0x30,
                locals_bottom: 8,
                locals_top: 0x28,
                args: 0x38
            }
        );
        assert_eq!(frame.locals_len(), 0x20);
        // Too small for the runtime to read its locals map.
        assert_eq!(Aarch64.frame(0x10).locals_len(), 0);
        let leaf = Aarch64.frame(0);
        assert!(leaf.return_address_in_link_register);
        assert_eq!((leaf.caller_sp, leaf.locals_len(), leaf.args), (0, 0, 8));
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        for (w, what) in [
            (0xc85ffc64, "LDAXR (R3), R4"),
            (0xc81bfc64, "STLXR R4, (R3), R27"),
            (0x885f7c22, "LDXRW (R1), R2"),
            (0xd4200000, "BRK"),
            (0xd503203f, "YIELD"),
            (0xd51b4220, "MSR NZCV"),
        ] {
            assert!(refusal(w).is_some(), "{what} ({w:#x}) must be refused");
        }
        for (w, what) in [
            (0x97ff8420, "BL"),
            (0xd65f03c0, "RET"),
            (0xf9401b85, "MOVD 48(R28), R5"),
            (0xc89ffc41, "STLR R1, (R2)"),
            (0x88dffce7, "LDARW (R7), R7"),
            (0xf8e20064, "LDADDAL"),
            (0xd503201f, "NOP"),
            (0x90000bbb, "ADRP"),
            (0x36000045, "TBZ"),
            (0xd53bd040, "MRS TPIDR_EL0"),
        ] {
            assert_eq!(refusal(w), None, "{what} ({w:#x}) can be probed");
        }
        let bytes = code(&[0xaa0003e1, 0xc85ffc64]);
        assert_eq!(Aarch64.unprobeable(&bytes, 0), None);
        assert!(Aarch64.unprobeable(&bytes, 4).is_some());
        assert!(Aarch64.unprobeable(&bytes, 2).is_some());
        assert!(Aarch64.unprobeable(&bytes, 8).is_some());
        assert!(Aarch64.unprobeable(&bytes, u64::MAX).is_some());
    }
}
