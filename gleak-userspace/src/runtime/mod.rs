//! Runtime knowledge: what gleak knows of the Go runtime itself, per release and
//! per binary. Release facts ([`gotables`]), where the fields of `runtime.g` and
//! friends lie ([`layout`]), the names of wait reasons ([`waitreason`]), and one
//! interface over whatever a binary says of its runtime ([`debuginfo`]).
//!
//! May use: [`crate::binary`] (to read those facts from a binary). Nothing here
//! reads a live process.

pub mod debuginfo;
pub mod gotables;
pub mod layout;
pub mod waitreason;
