//! gleak: find goroutine leaks in running, unmodified Go programs with eBPF.
//!
//! Layers, bottom up:
//! - [`target`]: from a PID to the Go binary it runs;
//! - [`binary`]: ELF symbols, Go version, RET finding, DWARF;
//! - [`debuginfo`], [`layout`], [`symbolize`], [`waitreason`]: one interface over what
//!   a binary says about its runtime, whatever backend read it;
//! - [`placement`]: which probes, and where each goes; [`probes`]: loading them;
//!   [`privilege`]: the capabilities that takes on this kernel, checked up front;
//! - [`intake`]: the thread draining the ring buffer; [`tracer`]: per-target state
//!   and report assembly; [`sitecache`]: creation sites symbolized once;
//!   [`aggregate`]: per-site stats; [`snapshot`]: live goroutine state from memory;
//! - [`unwind`], [`waits`], [`reach`], [`proof`]: where blocked goroutines are
//!   stuck, on what, and whether anything can ever wake them;
//! - [`verdict`], [`gate`]: judging sites; [`runflow`]: how a `gleak run` ends;
//! - [`report`], [`pprof`], [`html`]: the table, JSON, profile and page outputs;
//! - [`audit`]: every Go process of a host, continuously.

pub mod aggregate;
pub mod audit;
pub mod binary;
pub mod debuginfo;
pub mod error;
pub mod gate;
pub mod gotables;
pub mod html;
pub mod intake;
pub mod launch;
pub mod layout;
pub mod netconn;
pub mod placement;
pub mod pprof;
pub mod privilege;
pub mod probes;
pub mod procmem;
pub mod proof;
pub mod reach;
pub mod report;
pub mod runflow;
pub mod sitecache;
pub mod snapshot;
pub mod symbolize;
pub mod target;
pub mod tracer;
pub mod unwind;
pub mod verdict;
pub mod waitreason;
pub mod waits;

pub use error::{Error, Result};
pub use placement::AttachOptions;
pub use report::Report;
pub use tracer::Tracer;
