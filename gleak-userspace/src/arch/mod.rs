//! The architecture seam: everything gleak knows of one instruction set, behind
//! [`Arch`], chosen once per binary from its ELF machine ([`of_elf`]).
//!
//! - Instruction decoding: the RETs and CALLs probes are placed on, and the data
//!   addresses the runtime's code reaches (how globals are found in a stripped
//!   binary).
//! - The calling convention, by role: the decoder follows a call's result into an
//!   argument, and the probe programs are named by what they read (the call's
//!   result, its second argument, the current g), so placement never names a
//!   register. The kernel side reads each role from this architecture's registers
//!   in `gleak-ebpf/src/arch/`.
//! - The frame layout that unwinding and stack scanning follow ([`Frame`]),
//!   including where a link-register machine keeps a return address not yet saved.
//! - Which instructions the kernel's uprobes refuse ([`Arch::unprobeable`]).
//! - ELF and `.gopclntab` facts: the relative relocation type, the pc quantum.
//!
//! Consumers call the seam, never a decoder or a register name. Another
//! architecture is a new file implementing [`Arch`] and one entry in
//! [`ARCHITECTURES`], beside its twin in `gleak-ebpf/src/arch/`.
//!
//! May use: nothing else of gleak's.

pub mod aarch64;
pub mod x86_64;

/// Every architecture gleak traces.
pub const ARCHITECTURES: [&dyn Arch; 2] = [&x86_64::X86_64, &aarch64::Aarch64];

/// The architecture of an ELF machine, if gleak knows it.
pub fn of_elf(machine: object::Architecture) -> Option<&'static dyn Arch> {
    ARCHITECTURES.into_iter().find(|arch| arch.elf_machine() == machine)
}

/// The names of [`ARCHITECTURES`], for messages.
pub fn supported() -> String {
    ARCHITECTURES.map(|arch| arch.name()).join(", ")
}

/// A decoding answer, or the offset (from the function's start) of the first
/// bytes that do not decode: a linear sweep past them cannot be trusted, and a
/// breakpoint placed mid-instruction would crash the target.
pub type Decoded<T> = Result<T, u64>;

/// One instruction set, as gleak needs it. Code is a whole function's bytes;
/// `func_addr` is its link address; offsets answered are from its start.
pub trait Arch: Send + Sync + std::fmt::Debug {
    /// As Rust and ELF tools spell it (`x86_64`), for messages.
    fn name(&self) -> &'static str;

    /// The ELF machine of binaries built for it.
    fn elf_machine(&self) -> object::Architecture;

    /// The ELF relocation by which the loader writes load base + addend (what a
    /// PIE's pointers in data hold in the file).
    fn relative_relocation(&self) -> u32;

    /// The unit of pcs in `.gopclntab`'s pc-value tables (its header's `minLC`):
    /// the size of the shortest instruction.
    fn pc_quantum(&self) -> u8;

    /// The layout of a frame whose function's `pcsp` table says `sp_delta` at its pc.
    fn frame(&self, sp_delta: u64) -> Frame;

    /// Where the kernel saved the interrupted `(sp, pc)` when it delivered a signal,
    /// as offsets from the stack pointer at the handler's first instruction (which
    /// points at the kernel's `rt_sigframe`): a thread stopped there was running
    /// the goroutine those registers belong to.
    fn signal_frame_sp_pc(&self) -> (u64, u64);

    /// Every return instruction, decoded linearly from the first byte (Go emits no
    /// data inside functions, so a linear sweep is exact).
    fn ret_offsets(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<u64>>;

    /// The direct calls to `target`, in order.
    fn call_offsets(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Vec<u64>>;

    /// Every direct call, in order: the call's offset and its target's address.
    fn direct_calls(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<(u64, u64)>>;

    /// The instruction right after the first direct call to `target`, where the
    /// call's result is in the result register.
    fn after_first_call(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Option<u64>>;

    /// The first call to `consumer` after a call to `producer`, when straight-line
    /// code in between moves `producer`'s result into `consumer`'s integer argument
    /// number `argument` (0 = the first): `consumer(…, producer(…), …)`. This is how
    /// `newproc.func1` hands the new g to `runqput`.
    fn call_passing_result(
        &self,
        code: &[u8],
        func_addr: u64,
        producer: u64,
        consumer: u64,
        argument: usize,
    ) -> Decoded<Option<u64>>;

    /// The data address put into the first integer argument, pc-relatively, and
    /// passed to the first call of `target`: `runtime.mallocinit`'s
    /// `mheap_.init()`. `None` if that argument came from anything else.
    fn address_argument(&self, code: &[u8], func_addr: u64, target: u64) -> Decoded<Option<u64>>;

    /// Every data address the code reaches pc-relatively, in order: directly, or
    /// through a register that was loaded with such an address. Register tracking
    /// is straight-line and forgets a register at any write to it, which is exact
    /// for the short runtime functions it is used on and errs towards "unknown"
    /// elsewhere.
    fn data_accesses(&self, code: &[u8], func_addr: u64) -> Decoded<Vec<(u64, DataAccess)>>;

    /// Why a uprobe cannot sit on the instruction at `offset` (the kernel refuses
    /// it, or would execute it wrongly), or `None` if it can.
    fn unprobeable(&self, code: &[u8], offset: u64) -> Option<&'static str>;
}

/// What an instruction does with a data address it reaches pc-relatively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataAccess {
    /// Read or written by an ordinary instruction.
    Plain,
    /// Its address taken, e.g. to index into it.
    Address,
    /// The destination of an atomic store (how Go's `atomic.Store` compiles),
    /// with the data address the stored register was loaded from, if it was.
    AtomicStore { value_from: Option<u64> },
}

/// Where the parts of one frame lie, as offsets from its stack pointer: what the
/// runtime's own unwinder derives from the same `pcsp` value
/// (`runtime/traceback.go`, `resolveInternal`), and what its stack maps are
/// relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Where the return address into the caller is saved.
    pub return_address: u64,
    /// At this pc the return address may still be in the link register (a
    /// link-register machine's function with no frame: a leaf, or its entry).
    /// The runtime's unwinder then takes it from the saved context's LR when
    /// this is the innermost frame and that LR is set, and from
    /// `return_address` otherwise.
    pub return_address_in_link_register: bool,
    /// The caller's stack pointer: the top of this frame (the runtime's `fp`).
    pub caller_sp: u64,
    /// The locals lie in `[locals_bottom, locals_top)`; stack objects at negative
    /// offsets are relative to `locals_top` (the runtime's `varp`).
    pub locals_bottom: u64,
    pub locals_top: u64,
    /// Where the arguments on the stack begin (the runtime's `argp`); stack
    /// objects at positive offsets are relative to it.
    pub args: u64,
}

impl Frame {
    /// Bytes the locals' stack map may cover.
    pub fn locals_len(&self) -> u64 {
        self.locals_top.saturating_sub(self.locals_bottom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_by_elf_machine() {
        assert_eq!(of_elf(object::Architecture::X86_64).map(|a| a.name()), Some("x86_64"));
        assert_eq!(of_elf(object::Architecture::Aarch64).map(|a| a.name()), Some("aarch64"));
        assert!(of_elf(object::Architecture::I386).is_none());
        assert!(of_elf(object::Architecture::Arm).is_none(), "32-bit arm is not arm64");
        assert_eq!(supported(), "x86_64, aarch64");
        let quanta: Vec<u8> = ARCHITECTURES.iter().map(|a| a.pc_quantum()).collect();
        assert_eq!(quanta, [1, 4]);
        let relocations: Vec<u32> = ARCHITECTURES.iter().map(|a| a.relative_relocation()).collect();
        assert_eq!(relocations, [8, 1027]);
    }
}
