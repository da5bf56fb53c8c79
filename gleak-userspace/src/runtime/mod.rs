//! Runtime knowledge: what gleak knows of the Go runtime itself, per release and
//! per binary. Release facts ([`gotables`]), where the fields of `runtime.g` and
//! friends lie ([`layout`]), the runtime's vocabulary the rules match on: wait
//! reasons resolved once per binary to a name and a class ([`waitreason`]) and
//! which packages are the runtime, the blocking machinery, the testing framework
//! or the program ([`package_roles`]); and one interface over whatever a binary
//! says of its runtime ([`debuginfo`]).
//!
//! May use: [`crate::binary`] (to read those facts from a binary). Nothing here
//! reads a live process.

pub mod debuginfo;
pub mod gotables;
pub mod layout;
pub mod package_roles;
pub mod waitreason;
