//! The target process: finding it and its binary ([`target`]), starting one to
//! trace from its first goroutine ([`launch`]), and reading it without stopping
//! it: memory, live or recorded ([`memory`]), goroutines ([`snapshot`]), where blocked ones are
//! stuck ([`unwind`]) and on what ([`waits`]), its network connections
//! ([`netconn`]), its memory limit and use ([`memory_limit`]).
//!
//! May use: [`crate::arch`], [`crate::binary`], [`crate::runtime`]. Knows
//! nothing of probes or verdicts.

pub mod launch;
pub mod memory;
pub mod memory_limit;
pub mod netconn;
pub mod snapshot;
pub mod target;
pub mod testname;
pub mod threads;
pub mod unwind;
pub mod waits;
