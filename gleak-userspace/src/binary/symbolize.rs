//! Program counters to source locations, independent of the backend.

use serde::Serialize;

/// One source-level frame (inlined calls produce several frames for one PC).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.function, self.file, self.line)
    }
}

/// Resolves link-time addresses (load bias already removed).
pub trait Symbolizer {
    /// Frames at `pc`, innermost (most inlined) first; empty if unknown.
    fn frames(&self, pc: u64) -> Vec<Frame>;

    /// The function that starts at `entry` (a goroutine's start PC).
    fn function_at(&self, entry: u64) -> Option<String> {
        self.frames(entry).into_iter().last().map(|f| f.function)
    }
}

/// The import path of a Go function's package: `net/http` of
/// `net/http.(*conn).serve`, `main` of `main.main.func1`.
pub fn package_of(function: &str) -> &str {
    let slash = function.rfind('/').map_or(0, |i| i + 1);
    match function[slash..].find('.') {
        Some(dot) => &function[..slash + dot],
        None => function,
    }
}
