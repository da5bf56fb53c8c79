//! Tracing: where each probe goes in a binary ([`placement`]), the capabilities
//! that takes ([`privilege`]), loading and attaching the eBPF programs
//! ([`probes`]), the thread draining their ring buffer ([`intake`]), and the
//! tracer that turns their events into per-target state and reports
//! ([`tracer`], with creation sites symbolized once in [`sitecache`]).
//!
//! May use: everything below it ([`crate::arch`], [`crate::binary`],
//! [`crate::runtime`], [`crate::process`]) and [`crate::analysis`] to judge what
//! it traced.

pub mod intake;
pub mod placement;
pub mod privilege;
pub mod probes;
pub mod sitecache;
pub mod tracer;
