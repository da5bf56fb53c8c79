//! Tracing: where each probe goes in a binary ([`placement`]), the capabilities
//! that takes ([`privilege`]), loading and attaching the eBPF programs
//! ([`probes`]), the event source that turns their ring buffer and per-CPU
//! batches into ordered events, each once ([`events`]), and the tracer that turns
//! those into per-target state and reports ([`tracer`], with creation sites
//! symbolized once in [`sitecache`]).
//!
//! May use: everything below it ([`crate::arch`], [`crate::binary`],
//! [`crate::runtime`], [`crate::process`]) and [`crate::analysis`] to judge what
//! it traced.

pub mod events;
pub mod placement;
pub mod privilege;
pub mod probes;
pub mod sitecache;
pub mod tracer;
