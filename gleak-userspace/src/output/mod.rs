//! Output: the report's types and its text and JSON forms ([`report`]), the
//! goroutine profile `go tool pprof` reads ([`pprof`]) and the self-contained
//! HTML page ([`html`]), the JUnit XML of a test binary's tests ([`junit`]): printers that share one formatting module (`format`).
//!
//! May use: [`crate::analysis`] for verdict types, [`crate::runtime`] for package
//! roles; nothing reads the target here.

pub(crate) mod format;
pub(crate) use format::short_path;
pub mod html;
pub mod junit;
pub mod pprof;
pub mod report;
#[cfg(test)]
pub(crate) mod sample;
