//! x86-64 (Go's `amd64`): decoding with iced-x86, Go's internal register ABI,
//! and frames whose return address the CALL pushed above them.
//!
//! Go's internal ABI (`abi-internal.md`, amd64 since Go 1.17): integer arguments
//! and results in RAX, RBX, RCX, RDI, RSI, R8–R11; the current g in R14; no
//! callee-saved registers. The probes read the same roles from the same registers
//! (`gleak-ebpf/src/arch/x86_64.rs`).

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

use super::{Arch, DataAccess, Decoded, Frame};

/// x86-64.
#[derive(Debug)]
pub struct X86_64;

/// Integer arguments in order; the first is also the first result.
const INTEGER_ARGUMENTS: [Register; 9] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDI,
    Register::RSI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];
const RESULT: Register = INTEGER_ARGUMENTS[0];
const WORD: u64 = 8;

impl Arch for X86_64 {
    fn name(&self) -> &'static str {
        "x86_64"
    }

    fn elf_machine(&self) -> object::Architecture {
        object::Architecture::X86_64
    }

    fn relative_relocation(&self) -> u32 {
        object::elf::R_X86_64_RELATIVE
    }

    fn pc_quantum(&self) -> u8 {
        1
    }

    fn signal_frame_sp_pc(&self) -> (u64, u64) {
        // rt_sigframe: the restorer's address (8), then the ucontext: uc_flags,
        // uc_link, uc_stack (40 bytes), then sigcontext: r8–r15, rdi, rsi, rbp,
        // rbx, rdx, rax, rcx, rsp (+120), rip (+128).
        (8 + 40 + 120, 8 + 40 + 128)
    }

    fn frame(&self, sp_delta: u64) -> Frame {
        // The CALL pushed the return address just above the callee's frame;
        // arguments on the stack start right above it.
        let caller_sp = sp_delta + WORD;
        // Below the return address, in a frame that has one, the caller's frame
        // pointer (the prologue's PUSHQ BP); an empty frame has neither.
        let locals_top = sp_delta.saturating_sub(WORD);
        Frame {
            return_address: sp_delta,
            return_address_in_link_register: false,
            caller_sp,
            locals_bottom: 0,
            locals_top,
            args: caller_sp,
        }
    }

    fn ret_offsets(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<u64>> {
        Ok(decode(code, func_addr)?
            .iter()
            .filter(|i| matches!(i.mnemonic(), Mnemonic::Ret | Mnemonic::Retf))
            .map(|i| i.ip().wrapping_sub(func_addr))
            .collect())
    }

    fn call_offsets(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Vec<u64>> {
        Ok(decode(code, func_addr)?
            .iter()
            .filter(|i| is_call_to(i, target))
            .map(|i| i.ip().wrapping_sub(func_addr))
            .collect())
    }

    fn direct_calls(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<(u64, u64)>> {
        Ok(decode(code, func_addr)?
            .iter()
            .filter(|i| i.flow_control() == FlowControl::Call && i.op0_kind() == OpKind::NearBranch64)
            .map(|i| (i.ip().wrapping_sub(func_addr), i.near_branch_target()))
            .collect())
    }

    fn after_first_call(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Option<u64>> {
        let insns = decode(code, func_addr)?;
        Ok(insns
            .iter()
            .position(|i| is_call_to(i, target))
            .and_then(|p| insns.get(p + 1))
            .map(|i| i.ip().wrapping_sub(func_addr)))
    }

    fn call_passing_result(
        &self,
        code: &[u8],
        func_addr: u64,
        producer: u64,
        consumer: u64,
        argument: usize,
    ) -> Decoded<Option<u64>> {
        let Some(&wanted) = INTEGER_ARGUMENTS.get(argument) else { return Ok(None) };
        let insns = decode(code, func_addr)?;
        let Some(first) = insns.iter().position(|i| is_call_to(i, producer)) else {
            return Ok(None);
        };
        // Follow the result from the result register into the argument.
        let mut holder = Some(RESULT);
        for i in &insns[first + 1..] {
            if i.flow_control() == FlowControl::Call {
                let ok = holder == Some(wanted) && i.near_branch_target() == consumer;
                return Ok(ok.then(|| i.ip().wrapping_sub(func_addr)));
            }
            if i.flow_control() != FlowControl::Next {
                return Ok(None); // a branch in between: not the straight-line shape we know
            }
            let written = (i.op_count() > 0).then(|| i.op0_register().full_register()).filter(|r| *r != Register::None);
            if holder == Some(RESULT)
                && i.mnemonic() == Mnemonic::Mov
                && i.op0_register() == wanted
                && i.op1_register() == RESULT
            {
                holder = Some(wanted);
            } else if written.is_some() && written == holder {
                holder = None;
            }
        }
        Ok(None)
    }

    fn address_argument(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Option<u64>> {
        let first_argument = INTEGER_ARGUMENTS[0];
        let mut loaded = None;
        for i in decode(code, func_addr)? {
            if i.flow_control() == FlowControl::Call {
                if i.near_branch_target() == target {
                    return Ok(loaded);
                }
                loaded = None;
                continue;
            }
            if destination(&i) == Some(first_argument) {
                loaded =
                    (i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand()).then(|| i.ip_rel_memory_address());
            }
        }
        Ok(None)
    }

    fn data_accesses(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<(u64, DataAccess)>> {
        // Registers holding a data address (a RIP-relative LEA), and registers
        // holding a value loaded from one (a RIP-relative MOV).
        let mut lea: HashMap<Register, u64> = HashMap::new();
        let mut loaded: HashMap<Register, u64> = HashMap::new();
        let mut out = Vec::new();
        for i in decode(code, func_addr)? {
            let mem_target = if i.is_ip_rel_memory_operand() {
                Some(i.ip_rel_memory_address())
            } else if i.memory_base() != Register::None
                && i.memory_index() == Register::None
                && i.memory_displacement64() == 0
                && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
            {
                lea.get(&i.memory_base().full_register()).copied()
            } else {
                None
            };
            let dest = destination(&i);
            match (i.mnemonic(), mem_target) {
                (Mnemonic::Lea, Some(addr)) if i.is_ip_rel_memory_operand() => {
                    if let Some(r) = dest {
                        loaded.remove(&r);
                        lea.insert(r, addr);
                    }
                    out.push((addr, DataAccess::Address));
                    continue;
                }
                // Go's atomic stores are XCHGs.
                (Mnemonic::Xchg, Some(addr)) => {
                    let value = (0..i.op_count())
                        .find(|&n| i.op_kind(n) == OpKind::Register)
                        .map(|n| i.op_register(n).full_register());
                    let value_from = value.and_then(|r| loaded.get(&r).copied());
                    out.push((addr, DataAccess::AtomicStore { value_from }));
                    if let Some(r) = value {
                        lea.remove(&r);
                        loaded.remove(&r);
                    }
                    continue;
                }
                (_, Some(addr)) => out.push((addr, DataAccess::Plain)),
                _ => {}
            }
            if i.flow_control() == FlowControl::Call {
                // A call clobbers every register (Go's ABI has no callee-saved ones).
                lea.clear();
                loaded.clear();
                continue;
            }
            if let Some(r) = dest {
                lea.remove(&r);
                loaded.remove(&r);
                if i.mnemonic() == Mnemonic::Mov && i.is_ip_rel_memory_operand() {
                    loaded.insert(r, i.ip_rel_memory_address());
                }
            }
        }
        Ok(out)
    }

    /// gleak's x86-64 sites are function entries, CALLs, RETs and the
    /// instruction after a CALL, none of which x86 uprobes refuse (they refuse
    /// prefixed or privileged forms Go does not emit there); not checked.
    fn unprobeable(&self, _code: &[u8], _offset: u64) -> Option<&'static str> {
        None
    }
}

/// Decodes all of `code`; `Err(offset)` of the first byte sequence that does not decode.
fn decode(code: &[u8], func_addr: u64) -> Decoded<Vec<Instruction>> {
    let mut decoder = Decoder::with_ip(64, code, func_addr, DecoderOptions::NONE);
    let mut out = Vec::new();
    for insn in &mut decoder {
        if insn.is_invalid() {
            return Err(insn.ip().wrapping_sub(func_addr));
        }
        out.push(insn);
    }
    Ok(out)
}

fn is_call_to(i: &Instruction, target: u64) -> bool {
    i.flow_control() == FlowControl::Call && i.near_branch_target() == target
}

/// The full register an instruction writes as its first operand, if it does.
fn destination(i: &Instruction) -> Option<Register> {
    (i.op_count() > 0 && i.op0_kind() == OpKind::Register).then(|| i.op0_register().full_register())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_ret_and_ignores_c3_inside_instructions() {
        // push rbp; mov rbp,rsp; mov eax,0xc3 (a C3 byte inside an immediate);
        // test eax,eax; je +1; ret; pop rbp; ret; int3 padding
        let code = [
            0x55, // push rbp
            0x48, 0x89, 0xe5, // mov rbp, rsp
            0xb8, 0xc3, 0x00, 0x00, 0x00, // mov eax, 0xc3
            0x85, 0xc0, // test eax, eax
            0x74, 0x01, // je +1
            0xc3, // ret            (offset 13)
            0x5d, // pop rbp
            0xc3, // ret            (offset 15)
            0xcc, 0xcc,
        ];
        assert_eq!(X86_64.ret_offsets(&code, 0x401000), Ok(vec![13, 15]));
    }

    #[test]
    fn no_ret_in_a_tail_jump() {
        let code = [0xe9, 0x00, 0x00, 0x00, 0x00]; // jmp rel32
        assert_eq!(X86_64.ret_offsets(&code, 0), Ok(vec![]));
    }

    /// `runtime.newproc.func1` of Go 1.26 (amd64), as `go tool objdump` shows it.
    const NEWPROC_FUNC1: [u8; 0x62] = [
        0x49, 0x3b, 0x66, 0x10, 0x76, 0x53, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x20, 0x48, 0x8b, 0x5a, 0x10,
        0x48, 0x8b, 0x4a, 0x18, 0x48, 0x8b, 0x42, 0x08, 0x31, 0xff, 0x31, 0xf6, 0x66, 0x90, 0xe8, 0x5b, 0x00, 0x00,
        0x00, 0x49, 0x8b, 0x56, 0x30, 0x48, 0x8b, 0x92, 0xd0, 0x00, 0x00, 0x00, 0x48, 0x89, 0xc3, 0xb9, 0x01, 0x00,
        0x00, 0x00, 0x48, 0x89, 0xd0, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xe8, 0x9b, 0x50, 0x00, 0x00, 0x80, 0x3d, 0x8d,
        0x1d, 0x15, 0x00, 0x00, 0x74, 0x05, 0xe8, 0x4d, 0x66, 0x02, 0x00, 0x48, 0x83, 0xc4, 0x20, 0x5d, 0xc3, 0xe8,
        0xa2, 0xa9, 0x02, 0x00, 0x66, 0x90, 0xeb, 0x9e,
    ];
    const FUNC1_ADDR: u64 = 0x453120;
    const NEWPROC1: u64 = 0x4531a0;
    const RUNQPUT: u64 = 0x458200;

    #[test]
    fn finds_the_call_that_receives_newproc1s_result() {
        let second = 1;
        let at = X86_64.call_passing_result(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1, RUNQPUT, second).unwrap();
        assert_eq!(at, Some(0x40)); // 0x453160: CALL runtime.runqput, with BX = newg
        assert_eq!(X86_64.call_offsets(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1), Ok(vec![0x20]));
        assert_eq!(X86_64.after_first_call(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1), Ok(Some(0x25)));
        assert_eq!(X86_64.ret_offsets(&NEWPROC_FUNC1, FUNC1_ADDR), Ok(vec![0x58]));
        // Not the shape (result not moved to RBX before the call): no site.
        assert_eq!(X86_64.call_passing_result(&NEWPROC_FUNC1, FUNC1_ADDR, RUNQPUT, NEWPROC1, second).unwrap(), None);
        // runqput's first argument (pp, in RAX) is not newproc1's result: RAX is
        // overwritten (`mov rax, rdx`) before the call.
        assert_eq!(X86_64.call_passing_result(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1, RUNQPUT, 0).unwrap(), None);
    }

    #[test]
    fn refuses_code_that_does_not_decode() {
        // push rbp; then 0x06 (`push es`, invalid in 64-bit mode); ret
        let code = [0x55, 0x06, 0xc3];
        assert_eq!(X86_64.ret_offsets(&code, 0), Err(1));
    }

    /// `runtime.mallocinit`'s `LEAQ runtime.mheap_(SB), AX; CALL runtime.(*mheap).init(SB)`,
    /// after a call whose argument was another address.
    #[test]
    fn address_passed_as_first_argument() {
        let code = [
            0x48, 0x8d, 0x05, 0x00, 0x10, 0x00, 0x00, // lea rax, [rip+0x1000]   → 0x1007
            0xe8, 0x00, 0x00, 0x00, 0x00, // call 0xc (not the target)
            0x48, 0x8d, 0x05, 0x00, 0x20, 0x00, 0x00, // lea rax, [rip+0x2000]   → 0x2013
            0xe8, 0x00, 0x01, 0x00, 0x00, // call 0x118 (the target)
        ];
        assert_eq!(X86_64.address_argument(&code, 0, 0x118), Ok(Some(0x2013)));
        assert_eq!(X86_64.address_argument(&code, 0, 0xc), Ok(Some(0x1007)));
        // The address is in RBX, not the first argument: nothing.
        let in_rbx = [0x48, 0x8d, 0x1d, 0x00, 0x10, 0x00, 0x00, 0xe8, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(X86_64.address_argument(&in_rbx, 0, 0xc), Ok(None));
    }

    /// `allglen` stored atomically from `allgs+8`: `MOVQ runtime.allgs+8(SB), CX;
    /// XCHGQ CX, runtime.allglen(SB)`, then a store through a LEA-loaded register.
    #[test]
    fn atomic_store_says_where_its_value_came_from() {
        let code = [
            0x48, 0x8b, 0x0d, 0xf9, 0x0f, 0x00, 0x00, // mov rcx, [rip+0xff9]   ← 0x1000
            0x48, 0x87, 0x0d, 0xf2, 0x1f, 0x00, 0x00, // xchg [rip+0x1ff2], rcx → 0x2000
            0x48, 0x8d, 0x15, 0xeb, 0x2f, 0x00, 0x00, // lea rdx, [rip+0x2feb]  → 0x3000
            0x48, 0x89, 0x02, // mov [rdx], rax           → 0x3000
        ];
        assert_eq!(
            X86_64.data_accesses(&code, 0),
            Ok(vec![
                (0x1000, DataAccess::Plain),
                (0x2000, DataAccess::AtomicStore { value_from: Some(0x1000) }),
                (0x3000, DataAccess::Address),
                (0x3000, DataAccess::Plain),
            ])
        );
    }

    /// As `runtime/traceback.go` derives it on amd64: `fp = sp + spdelta + 8`,
    /// the return address at `fp - 8`, `varp = fp - 8`, less the saved frame
    /// pointer in a non-empty frame, `argp = fp`.
    #[test]
    fn frames_as_the_runtime_unwinds_them() {
        let frame = X86_64.frame(0x28);
        assert_eq!(
            frame,
            Frame {
                return_address: 0x28,
                return_address_in_link_register: false,
                caller_sp: 0x30,
                locals_bottom: 0,
                locals_top: 0x20,
                args: 0x30
            }
        );
        assert_eq!(frame.locals_len(), 0x20);
        // A leaf with no frame (`NOFRAME`): the return address at sp, no frame pointer.
        let leaf = X86_64.frame(0);
        assert_eq!(
            leaf,
            Frame {
                return_address: 0,
                return_address_in_link_register: false,
                caller_sp: 8,
                locals_bottom: 0,
                locals_top: 0,
                args: 8
            }
        );
        assert_eq!(leaf.locals_len(), 0);
    }
}
