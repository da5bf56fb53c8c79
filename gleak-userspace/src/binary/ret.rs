//! Finding the RET instructions of a function, to put plain uprobes on them.
//!
//! A uretprobe rewrites the return address on the stack; Go copies goroutine stacks
//! and the target then crashes. A uprobe on every RET sees the same registers as a
//! return probe would, without touching the stack.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// Offsets (from the function start) of every RET in `code`, decoded linearly from
/// the first byte. Go emits no data inside functions, so a linear sweep is exact;
/// bytes that do not decode (outside trailing INT3 padding) mean the sweep cannot be
/// trusted, and a breakpoint placed mid-instruction would crash the target:
/// `Err(offset)` of the first one.
pub fn ret_offsets(code: &[u8], func_addr: u64) -> Result<Vec<u64>, u64> {
    let mut decoder = Decoder::with_ip(64, code, func_addr, DecoderOptions::NONE);
    let mut found = Vec::new();
    for insn in &mut decoder {
        if insn.is_invalid() {
            return Err(insn.ip() - func_addr);
        }
        if matches!(insn.mnemonic(), Mnemonic::Ret | Mnemonic::Retf) {
            found.push(insn.ip() - func_addr);
        }
    }
    Ok(found)
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

    #[test]
    fn refuses_code_that_does_not_decode() {
        // push rbp; then 0x06 (`push es`, invalid in 64-bit mode); ret
        let code = [0x55, 0x06, 0xc3];
        assert_eq!(ret_offsets(&code, 0), Err(1));
    }
}
