//! Decoding a function's machine code to place probes on instructions: its RETs
//! (a uretprobe rewrites the return address on the stack; Go copies goroutine
//! stacks and the target then crashes, so "return" probes are plain uprobes on each
//! RET), and its CALLs to a given function (the kernel emulates a CALL instead of
//! single-stepping it: one trap per hit instead of two).

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, Register};

/// Decodes all of `code`; `Err(offset)` of the first byte sequence that does not decode.
fn decode(code: &[u8], func_addr: u64) -> Result<Vec<Instruction>, u64> {
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

/// Offsets of the direct CALLs to `target` in `code`, in order.
pub fn call_offsets(code: &[u8], func_addr: u64, target: u64) -> Result<Vec<u64>, u64> {
    Ok(decode(code, func_addr)?
        .iter()
        .filter(|i| i.flow_control() == FlowControl::Call && i.near_branch_target() == target)
        .map(|i| i.ip().wrapping_sub(func_addr))
        .collect())
}

/// The offset of the first CALL to `target` that comes after a CALL to `after` with
/// a `mov rbx, rax` in between: `target(…, after(…), …)` passing `after`'s result as
/// its second argument. This is how `newproc.func1` hands the new g to `runqput`.
pub fn call_taking_result(code: &[u8], func_addr: u64, after: u64, target: u64) -> Result<Option<u64>, u64> {
    let insns = decode(code, func_addr)?;
    let Some(first) =
        insns.iter().position(|i| i.flow_control() == FlowControl::Call && i.near_branch_target() == after)
    else {
        return Ok(None);
    };
    // Follow the result from RAX to RBX through straight-line code.
    let mut holder = Some(Register::RAX);
    for i in &insns[first + 1..] {
        if i.flow_control() == FlowControl::Call {
            let ok = holder == Some(Register::RBX) && i.near_branch_target() == target;
            return Ok(ok.then(|| i.ip().wrapping_sub(func_addr)));
        }
        if i.flow_control() != FlowControl::Next {
            return Ok(None); // a branch in between: not the straight-line shape we know
        }
        let written = (i.op_count() > 0).then(|| i.op0_register().full_register()).filter(|r| *r != Register::None);
        if holder == Some(Register::RAX)
            && i.mnemonic() == Mnemonic::Mov
            && i.op0_register() == Register::RBX
            && i.op1_register() == Register::RAX
        {
            holder = Some(Register::RBX);
        } else if written.is_some() && written == holder {
            holder = None;
        }
    }
    Ok(None)
}

/// The offset of the instruction right after the first CALL to `target`.
pub fn after_first_call(code: &[u8], func_addr: u64, target: u64) -> Result<Option<u64>, u64> {
    let insns = decode(code, func_addr)?;
    Ok(insns
        .iter()
        .position(|i| i.flow_control() == FlowControl::Call && i.near_branch_target() == target)
        .and_then(|p| insns.get(p + 1))
        .map(|i| i.ip().wrapping_sub(func_addr)))
}

/// Offsets (from the function start) of every RET in `code`, decoded linearly from
/// the first byte. Go emits no data inside functions, so a linear sweep is exact;
/// bytes that do not decode mean the sweep cannot be trusted, and a breakpoint placed
/// mid-instruction would crash the target: `Err(offset)` of the first one.
pub fn ret_offsets(code: &[u8], func_addr: u64) -> Result<Vec<u64>, u64> {
    Ok(decode(code, func_addr)?
        .iter()
        .filter(|i| matches!(i.mnemonic(), Mnemonic::Ret | Mnemonic::Retf))
        .map(|i| i.ip().wrapping_sub(func_addr))
        .collect())
}

/// The data address loaded into RAX (Go's first argument) by a RIP-relative `LEA`
/// and passed to the first call of `target`: `LEAQ runtime.mheap_(SB), AX; CALL
/// runtime.(*mheap).init(SB)`. `None` if the call's RAX came from anything else.
pub fn address_argument(code: &[u8], func_addr: u64, target: u64) -> Result<Option<u64>, u64> {
    let mut rax = None;
    for i in decode(code, func_addr)? {
        if i.flow_control() == FlowControl::Call {
            if i.near_branch_target() == target {
                return Ok(rax);
            }
            rax = None;
            continue;
        }
        let writes_rax = i.op_count() > 0
            && i.op0_kind() == iced_x86::OpKind::Register
            && i.op0_register().full_register() == Register::RAX;
        if writes_rax {
            rax = (i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand()).then(|| i.ip_rel_memory_address());
        }
    }
    Ok(None)
}

/// What an instruction does with a RIP-relative (or LEA-loaded) data address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataAccess {
    /// Read or written by an ordinary instruction (`MOV`, `CMP`…).
    Plain,
    /// Its address taken (`LEA`), e.g. to index into it.
    Address,
    /// The destination of an atomic exchange (`XCHG`: Go's atomic stores), with the
    /// data address the stored register was loaded from, if it was.
    AtomicStore { value_from: Option<u64> },
}

/// Every data address `code` reaches RIP-relatively, in order: directly, or through
/// a register a `LEA` filled. Register tracking is straight-line and forgets a
/// register at any write to it, which is exact for the short runtime functions it
/// is used on and errs towards "unknown" elsewhere.
pub fn data_accesses(code: &[u8], func_addr: u64) -> Result<Vec<(u64, DataAccess)>, u64> {
    use std::collections::HashMap;
    let mut lea: HashMap<Register, u64> = HashMap::new();
    let mut loaded: HashMap<Register, u64> = HashMap::new();
    let mut out = Vec::new();
    for i in decode(code, func_addr)? {
        let mem_target = if i.is_ip_rel_memory_operand() {
            Some(i.ip_rel_memory_address())
        } else if i.memory_base() != Register::None
            && i.memory_index() == Register::None
            && i.memory_displacement64() == 0
            && (0..i.op_count()).any(|n| i.op_kind(n) == iced_x86::OpKind::Memory)
        {
            lea.get(&i.memory_base().full_register()).copied()
        } else {
            None
        };
        let dest =
            (i.op_count() > 0 && i.op0_kind() == iced_x86::OpKind::Register).then(|| i.op0_register().full_register());
        match (i.mnemonic(), mem_target) {
            (Mnemonic::Lea, Some(addr)) if i.is_ip_rel_memory_operand() => {
                if let Some(r) = dest {
                    loaded.remove(&r);
                    lea.insert(r, addr);
                }
                out.push((addr, DataAccess::Address));
                continue;
            }
            (Mnemonic::Xchg, Some(addr)) => {
                let value = (0..i.op_count())
                    .find(|&n| i.op_kind(n) == iced_x86::OpKind::Register)
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
        assert_eq!(ret_offsets(&code, 0x401000), Ok(vec![13, 15]));
    }

    #[test]
    fn no_ret_in_a_tail_jump() {
        let code = [0xe9, 0x00, 0x00, 0x00, 0x00]; // jmp rel32
        assert_eq!(ret_offsets(&code, 0), Ok(vec![]));
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
        let at = call_taking_result(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1, RUNQPUT).unwrap();
        assert_eq!(at, Some(0x40)); // 0x453160: CALL runtime.runqput, with BX = newg
        assert_eq!(call_offsets(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1), Ok(vec![0x20]));
        assert_eq!(after_first_call(&NEWPROC_FUNC1, FUNC1_ADDR, NEWPROC1), Ok(Some(0x25)));
        assert_eq!(ret_offsets(&NEWPROC_FUNC1, FUNC1_ADDR), Ok(vec![0x58]));
        // Not the shape (result not moved to RBX before the call): no site.
        assert_eq!(call_taking_result(&NEWPROC_FUNC1, FUNC1_ADDR, RUNQPUT, NEWPROC1).unwrap(), None);
    }

    #[test]
    fn refuses_code_that_does_not_decode() {
        // push rbp; then 0x06 (`push es`, invalid in 64-bit mode); ret
        let code = [0x55, 0x06, 0xc3];
        assert_eq!(ret_offsets(&code, 0), Err(1));
    }
}
