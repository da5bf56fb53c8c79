//! The architecture seam of the probes: the registers each probe reads, by their
//! role in Go's internal calling convention (`abi-internal.md`), and the frame
//! record the creation probe walks. The probes name roles, never registers.
//!
//! One file per architecture, chosen by the `bpf_target_arch` cfg (which
//! `gleak-userspace/build.rs` sets to the architecture gleak is built for); the
//! user side's twin is `gleak-userspace/src/arch/`. Another architecture is a
//! new file with the same items, its `mod` and `use` below, and its name in the
//! `compile_error!`'s list.

#[cfg(bpf_target_arch = "x86_64")]
mod x86_64;
#[cfg(bpf_target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(bpf_target_arch = "aarch64")]
mod aarch64;
#[cfg(bpf_target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!(
    "gleak's probes know the registers of x86_64 and aarch64 only: this bpf_target_arch needs a file of its own in src/arch/"
);
