//! gleak: find goroutine leaks in running, unmodified Go programs with eBPF.
//!
//! Folders by pipeline stage, bottom up; each says in its module doc what it
//! owns and what it may use. Data flows one way: probe → ring buffer → event
//! source → aggregate → observe → judge → report.
//! - [`arch`]: the architecture seam: instruction decoding, calling convention
//!   and frame layout of each instruction set gleak traces;
//! - [`binary`]: reading a Go binary: ELF, build info, `.gopclntab`, DWARF,
//!   symbols, machine code;
//! - [`runtime`]: what gleak knows of the Go runtime, per release and per binary;
//! - [`process`]: the target process: memory, goroutines, stacks, waits,
//!   connections, starting a command;
//! - [`tracing`]: probe placement, privileges, the eBPF probes, the event source
//!   (ring, per-CPU batches, deduplication, time order), the tracer;
//! - [`analysis`]: aggregation, the reachability proof, verdicts, the gate;
//! - [`output`]: the table, JSON, pprof and HTML forms of a report;
//! - [`audit`]: every Go process of a host, continuously.
//!
//! The command line (`src/cli`) sits on top of these.

pub mod analysis;
pub mod arch;
pub mod audit;
pub mod binary;
pub mod error;
pub mod output;
pub mod process;
pub mod runtime;
pub mod tracing;

pub use error::{Error, Result};
pub use output::report::Report;
pub use tracing::{placement::AttachOptions, tracer::Tracer};
