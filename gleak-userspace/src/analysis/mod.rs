//! Analysis: per-site statistics from lifecycle events ([`aggregate`]), the
//! proof that blocked goroutines can never run again ([`reach`], [`proof`]) and
//! what it has settled between reports ([`proof_state`]), the verdict on each
//! site ([`verdict`]), `gleak run`'s gate ([`gate`]), the known leaks it does not
//! count ([`known_leaks`]), which test each goroutine descends from
//! ([`test_blame`]), how a `gleak run` session ends ([`runflow`]) and when the
//! leaks reach the memory limit ([`memory_outlook`]).
//!
//! May use: [`crate::binary`], [`crate::runtime`], [`crate::process`]; no probes.

pub mod aggregate;
pub mod gate;
pub mod known_leaks;
pub mod memory_outlook;
pub mod proof;
pub mod proof_state;
pub mod reach;
pub mod runflow;
pub mod test_blame;
pub mod verdict;
